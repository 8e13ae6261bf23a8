//! The NBD wire format without I/O: constants, parsing of client frames, encoding of server
//! frames.
//!
//! Every parser takes a byte slice (or a fixed-size header array) and returns a value or a typed
//! error; none of them panics or allocates according to a length field. Encoders append to a
//! `Vec<u8>` or fill a fixed array. All integers are big-endian, as the protocol requires.
//!
//! The byte layouts follow `doc/proto.md` of the NBD project:
//!
//! ```text
//! option (client)         IHAVEOPT:u64  option:u32  length:u32  data[length]
//! option reply (server)   0x3e889045565a9:u64  option:u32  type:u32  length:u32  data[length]
//! request (client)        0x25609513:u32  flags:u16  type:u16  cookie:u64  offset:u64  length:u32
//!                         (+ length bytes of data for NBD_CMD_WRITE)
//! simple reply (server)   0x67446698:u32  error:u32  cookie:u64  (+ data for a successful read)
//! structured chunk        0x668e33ef:u32  flags:u16  type:u16  cookie:u64  length:u32  payload
//! ```

use std::io;

/// `NBDMAGIC`, the first eight bytes the server sends.
pub const NBDMAGIC: u64 = 0x4e42_444d_4147_4943;
/// `IHAVEOPT`: the newstyle magic, also the start of every client option.
pub const IHAVEOPT: u64 = 0x4948_4156_454f_5054;
/// Magic of every option reply.
pub const OPTION_REPLY_MAGIC: u64 = 0x0003_e889_0455_65a9;
/// `NBD_REQUEST_MAGIC`.
pub const REQUEST_MAGIC: u32 = 0x2560_9513;
/// `NBD_SIMPLE_REPLY_MAGIC`.
pub const SIMPLE_REPLY_MAGIC: u32 = 0x6744_6698;
/// `NBD_STRUCTURED_REPLY_MAGIC`.
pub const STRUCTURED_REPLY_MAGIC: u32 = 0x668e_33ef;

/// Length of the server greeting: `NBDMAGIC`, `IHAVEOPT`, handshake flags.
pub const GREETING_LEN: usize = 18;
/// Length of an option header: magic, option, data length.
pub const OPTION_HEADER_LEN: usize = 16;
/// Length of a request header.
pub const REQUEST_HEADER_LEN: usize = 28;
/// Length of a simple reply header.
pub const SIMPLE_REPLY_LEN: usize = 16;
/// Length of a structured reply chunk header.
pub const STRUCTURED_HEADER_LEN: usize = 20;
/// Length of a structured `NBD_REPLY_TYPE_OFFSET_DATA` chunk before its data: the chunk header
/// and the 64-bit offset.
pub const OFFSET_DATA_HEADER_LEN: usize = STRUCTURED_HEADER_LEN + 8;

/// The longest string the protocol allows (export names, queries, messages).
pub const MAX_STRING_LEN: usize = 4096;
/// The most option data this server accepts in one option. The largest legitimate option is a
/// `NBD_OPT_GO` or a metadata-context option carrying a few strings of at most 4096 bytes
/// each; a longer option is treated as a denial of service attempt and the connection is
/// dropped without reading its data.
pub const MAX_OPTION_DATA: u32 = 64 * 1024;

/// Minimum block size advertised in `NBD_INFO_BLOCK_SIZE`; requests must be aligned to it.
pub const MIN_BLOCK_SIZE: u32 = 512;
/// Preferred block size advertised in `NBD_INFO_BLOCK_SIZE`.
pub const PREFERRED_BLOCK_SIZE: u32 = 4096;
/// Maximum block size advertised in `NBD_INFO_BLOCK_SIZE`: the largest read or write payload
/// (2^25 bytes, which the protocol says must never be treated as a denial of service).
pub const MAX_BLOCK_SIZE: u32 = 32 * 1024 * 1024;

/// Handshake flags (server, 16 bits).
pub mod handshake_flags {
    /// `NBD_FLAG_FIXED_NEWSTYLE`.
    pub const FIXED_NEWSTYLE: u16 = 1 << 0;
    /// `NBD_FLAG_NO_ZEROES`.
    pub const NO_ZEROES: u16 = 1 << 1;
}

/// Client flags (32 bits), the client's answer to the handshake flags.
pub mod client_flags {
    /// `NBD_FLAG_C_FIXED_NEWSTYLE`.
    pub const FIXED_NEWSTYLE: u32 = 1 << 0;
    /// `NBD_FLAG_C_NO_ZEROES`.
    pub const NO_ZEROES: u32 = 1 << 1;
}

/// Option codes (`NBD_OPT_*`).
pub mod opt {
    /// `NBD_OPT_EXPORT_NAME`.
    pub const EXPORT_NAME: u32 = 1;
    /// `NBD_OPT_ABORT`.
    pub const ABORT: u32 = 2;
    /// `NBD_OPT_LIST`.
    pub const LIST: u32 = 3;
    /// `NBD_OPT_STARTTLS`.
    pub const STARTTLS: u32 = 5;
    /// `NBD_OPT_INFO`.
    pub const INFO: u32 = 6;
    /// `NBD_OPT_GO`.
    pub const GO: u32 = 7;
    /// `NBD_OPT_STRUCTURED_REPLY`.
    pub const STRUCTURED_REPLY: u32 = 8;
    /// `NBD_OPT_LIST_META_CONTEXT`.
    pub const LIST_META_CONTEXT: u32 = 9;
    /// `NBD_OPT_SET_META_CONTEXT`.
    pub const SET_META_CONTEXT: u32 = 10;
}

/// Option reply types (`NBD_REP_*`).
pub mod rep {
    /// `NBD_REP_ACK`.
    pub const ACK: u32 = 1;
    /// `NBD_REP_SERVER`.
    pub const SERVER: u32 = 2;
    /// `NBD_REP_INFO`.
    pub const INFO: u32 = 3;
    /// `NBD_REP_META_CONTEXT`.
    pub const META_CONTEXT: u32 = 4;
    /// `NBD_REP_ERR_UNSUP`.
    pub const ERR_UNSUP: u32 = 0x8000_0001;
    /// `NBD_REP_ERR_POLICY`.
    pub const ERR_POLICY: u32 = 0x8000_0002;
    /// `NBD_REP_ERR_INVALID`.
    pub const ERR_INVALID: u32 = 0x8000_0003;
    /// `NBD_REP_ERR_PLATFORM`.
    pub const ERR_PLATFORM: u32 = 0x8000_0004;
    /// `NBD_REP_ERR_TLS_REQD`.
    pub const ERR_TLS_REQD: u32 = 0x8000_0005;
    /// `NBD_REP_ERR_UNKNOWN`.
    pub const ERR_UNKNOWN: u32 = 0x8000_0006;
    /// `NBD_REP_ERR_SHUTDOWN`.
    pub const ERR_SHUTDOWN: u32 = 0x8000_0007;
    /// `NBD_REP_ERR_BLOCK_SIZE_REQD`.
    pub const ERR_BLOCK_SIZE_REQD: u32 = 0x8000_0008;
    /// `NBD_REP_ERR_TOO_BIG`.
    pub const ERR_TOO_BIG: u32 = 0x8000_0009;
}

/// Information types of `NBD_REP_INFO` (`NBD_INFO_*`).
pub mod info {
    /// `NBD_INFO_EXPORT`: size and transmission flags.
    pub const EXPORT: u16 = 0;
    /// `NBD_INFO_NAME`: canonical export name.
    pub const NAME: u16 = 1;
    /// `NBD_INFO_DESCRIPTION`: human-readable description.
    pub const DESCRIPTION: u16 = 2;
    /// `NBD_INFO_BLOCK_SIZE`: minimum, preferred and maximum block size.
    pub const BLOCK_SIZE: u16 = 3;
}

/// Transmission flags (16 bits, `NBD_FLAG_*`).
pub mod transmission_flags {
    /// `NBD_FLAG_HAS_FLAGS`: always set.
    pub const HAS_FLAGS: u16 = 1 << 0;
    /// `NBD_FLAG_READ_ONLY`.
    pub const READ_ONLY: u16 = 1 << 1;
    /// `NBD_FLAG_SEND_FLUSH`.
    pub const SEND_FLUSH: u16 = 1 << 2;
    /// `NBD_FLAG_SEND_FUA`.
    pub const SEND_FUA: u16 = 1 << 3;
    /// `NBD_FLAG_ROTATIONAL`.
    pub const ROTATIONAL: u16 = 1 << 4;
    /// `NBD_FLAG_SEND_TRIM`.
    pub const SEND_TRIM: u16 = 1 << 5;
    /// `NBD_FLAG_SEND_WRITE_ZEROES`.
    pub const SEND_WRITE_ZEROES: u16 = 1 << 6;
    /// `NBD_FLAG_SEND_DF`.
    pub const SEND_DF: u16 = 1 << 7;
    /// `NBD_FLAG_CAN_MULTI_CONN`.
    pub const CAN_MULTI_CONN: u16 = 1 << 8;
    /// `NBD_FLAG_SEND_RESIZE`.
    pub const SEND_RESIZE: u16 = 1 << 9;
    /// `NBD_FLAG_SEND_CACHE`.
    pub const SEND_CACHE: u16 = 1 << 10;
    /// `NBD_FLAG_SEND_FAST_ZERO`.
    pub const SEND_FAST_ZERO: u16 = 1 << 11;
}

/// Command types (`NBD_CMD_*`).
pub mod cmd {
    /// `NBD_CMD_READ`.
    pub const READ: u16 = 0;
    /// `NBD_CMD_WRITE`.
    pub const WRITE: u16 = 1;
    /// `NBD_CMD_DISC`.
    pub const DISC: u16 = 2;
    /// `NBD_CMD_FLUSH`.
    pub const FLUSH: u16 = 3;
    /// `NBD_CMD_TRIM`.
    pub const TRIM: u16 = 4;
    /// `NBD_CMD_CACHE`.
    pub const CACHE: u16 = 5;
    /// `NBD_CMD_WRITE_ZEROES`.
    pub const WRITE_ZEROES: u16 = 6;
    /// `NBD_CMD_BLOCK_STATUS`.
    pub const BLOCK_STATUS: u16 = 7;
}

/// Command flags (`NBD_CMD_FLAG_*`).
pub mod cmd_flags {
    /// `NBD_CMD_FLAG_FUA`.
    pub const FUA: u16 = 1 << 0;
    /// `NBD_CMD_FLAG_NO_HOLE`.
    pub const NO_HOLE: u16 = 1 << 1;
    /// `NBD_CMD_FLAG_DF`.
    pub const DF: u16 = 1 << 2;
    /// `NBD_CMD_FLAG_REQ_ONE`.
    pub const REQ_ONE: u16 = 1 << 3;
    /// `NBD_CMD_FLAG_FAST_ZERO`.
    pub const FAST_ZERO: u16 = 1 << 4;
}

/// Structured reply chunk flags.
pub mod reply_flags {
    /// `NBD_REPLY_FLAG_DONE`: the last chunk of a reply.
    pub const DONE: u16 = 1 << 0;
}

/// Structured reply chunk types (`NBD_REPLY_TYPE_*`).
pub mod reply_type {
    /// `NBD_REPLY_TYPE_NONE`.
    pub const NONE: u16 = 0;
    /// `NBD_REPLY_TYPE_OFFSET_DATA`.
    pub const OFFSET_DATA: u16 = 1;
    /// `NBD_REPLY_TYPE_OFFSET_HOLE`.
    pub const OFFSET_HOLE: u16 = 2;
    /// `NBD_REPLY_TYPE_BLOCK_STATUS`.
    pub const BLOCK_STATUS: u16 = 5;
    /// `NBD_REPLY_TYPE_ERROR`.
    pub const ERROR: u16 = 0x8001;
    /// `NBD_REPLY_TYPE_ERROR_OFFSET`.
    pub const ERROR_OFFSET: u16 = 0x8002;
}

/// Status flags of the `base:allocation` metadata context (`NBD_STATE_*`).
pub mod state {
    /// `NBD_STATE_HOLE`.
    pub const HOLE: u32 = 1 << 0;
    /// `NBD_STATE_ZERO`.
    pub const ZERO: u32 = 1 << 1;
}

/// Name of the one metadata context this server offers.
pub const BASE_ALLOCATION: &str = "base:allocation";

/// The error values of the transmission phase (`NBD_E*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum Errno {
    /// `NBD_EPERM`: operation not permitted (e.g. a write to a read-only export).
    Perm = 1,
    /// `NBD_EIO`: input/output error.
    Io = 5,
    /// `NBD_ENOMEM`: cannot allocate memory.
    NoMem = 12,
    /// `NBD_EINVAL`: invalid argument.
    Inval = 22,
    /// `NBD_ENOSPC`: no space left on device (e.g. a write past the end).
    NoSpc = 28,
    /// `NBD_EOVERFLOW`: value too large.
    Overflow = 75,
    /// `NBD_ENOTSUP`: operation not supported.
    NotSup = 95,
    /// `NBD_ESHUTDOWN`: the server is shutting down (or access was revoked).
    Shutdown = 108,
}

impl Errno {
    /// The value sent on the wire.
    pub fn code(self) -> u32 {
        self as u32
    }

    /// The NBD error for a device error: permission problems become `EPERM`, lack of space
    /// (including quota and file size limits) `ENOSPC`, invalid input `EINVAL`, anything else
    /// `EIO`.
    pub fn from_io_error(err: &io::Error) -> Self {
        // Linux errno values, for errors that carry an OS code but a generic kind.
        const EPERM: i32 = 1;
        const EACCES: i32 = 13;
        const EROFS: i32 = 30;
        const ENOSPC: i32 = 28;
        const EFBIG: i32 = 27;
        const EDQUOT: i32 = 122;
        const EINVAL: i32 = 22;
        const ESHUTDOWN: i32 = 108;
        match err.raw_os_error() {
            Some(EPERM | EACCES | EROFS) => return Errno::Perm,
            Some(ENOSPC | EFBIG | EDQUOT) => return Errno::NoSpc,
            Some(EINVAL) => return Errno::Inval,
            Some(ESHUTDOWN) => return Errno::Shutdown,
            _ => {}
        }
        match err.kind() {
            io::ErrorKind::PermissionDenied | io::ErrorKind::ReadOnlyFilesystem => Errno::Perm,
            io::ErrorKind::StorageFull
            | io::ErrorKind::QuotaExceeded
            | io::ErrorKind::FileTooLarge => Errno::NoSpc,
            io::ErrorKind::InvalidInput => Errno::Inval,
            _ => Errno::Io,
        }
    }
}

/// The client's opaque request identifier (`cookie`, formerly `handle`), echoed in replies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cookie(pub u64);

/// A client frame that cannot be accepted; the connection must be closed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtoError {
    /// The client flags carry bits this server did not offer.
    #[error("client flags {0:#x} carry unknown bits")]
    UnknownClientFlags(u32),
    /// The client did not set `NBD_FLAG_C_FIXED_NEWSTYLE`; only fixed newstyle is served.
    #[error("client does not speak fixed newstyle negotiation")]
    NotFixedNewstyle,
    /// An option did not start with `IHAVEOPT`.
    #[error("option magic {0:#018x} is not IHAVEOPT")]
    BadOptionMagic(u64),
    /// An option announced more data than [`MAX_OPTION_DATA`].
    #[error("option {option} announces {len} bytes of data, more than the {max}-byte limit")]
    OptionTooLong {
        /// The option code.
        option: u32,
        /// The announced data length.
        len: u32,
        /// The limit.
        max: u32,
    },
    /// A request did not start with `NBD_REQUEST_MAGIC`.
    #[error("request magic {0:#010x} is not NBD_REQUEST_MAGIC")]
    BadRequestMagic(u32),
    /// A buffer ended before the frame it should hold.
    #[error("{0} is truncated")]
    Truncated(&'static str),
}

/// Why the data of an option is invalid (answered with `NBD_REP_ERR_INVALID`, or for
/// `NBD_OPT_EXPORT_NAME`, which cannot fail, by closing the connection).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OptionError {
    /// The option takes no data but some was sent.
    #[error("the option takes no data but {0} bytes were sent")]
    UnexpectedData(usize),
    /// A length field points past the end of the option data.
    #[error("option data is truncated")]
    Truncated,
    /// Bytes are left over after the last field.
    #[error("{0} bytes follow the last field of the option")]
    TrailingBytes(usize),
    /// A string is longer than 4096 bytes.
    #[error("a string of {0} bytes exceeds the 4096-byte limit")]
    StringTooLong(usize),
    /// A string is not valid UTF-8.
    #[error("a string is not valid UTF-8")]
    NotUtf8,
    /// A string contains a NUL character.
    #[error("a string contains NUL")]
    ContainsNul,
}

/// A request header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestHeader {
    /// Command flags (`NBD_CMD_FLAG_*`).
    pub flags: u16,
    /// Command type (`NBD_CMD_*`).
    pub kind: u16,
    /// Echoed in the reply.
    pub cookie: Cookie,
    /// Byte offset into the export.
    pub offset: u64,
    /// Length in bytes; for `NBD_CMD_WRITE` also the length of the payload that follows.
    pub length: u32,
}

impl RequestHeader {
    /// The number of payload bytes that follow this header on the wire.
    pub fn payload_len(&self) -> u32 {
        if self.kind == cmd::WRITE {
            self.length
        } else {
            0
        }
    }

    /// Encodes the header as a client would send it (used by tests and harnesses).
    pub fn encode(&self) -> [u8; REQUEST_HEADER_LEN] {
        let mut b = [0u8; REQUEST_HEADER_LEN];
        b[0..4].copy_from_slice(&REQUEST_MAGIC.to_be_bytes());
        b[4..6].copy_from_slice(&self.flags.to_be_bytes());
        b[6..8].copy_from_slice(&self.kind.to_be_bytes());
        b[8..16].copy_from_slice(&self.cookie.0.to_be_bytes());
        b[16..24].copy_from_slice(&self.offset.to_be_bytes());
        b[24..28].copy_from_slice(&self.length.to_be_bytes());
        b
    }
}

/// An option header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OptionHeader {
    /// The option code (`NBD_OPT_*`).
    pub option: u32,
    /// The length of the data that follows; at most [`MAX_OPTION_DATA`].
    pub len: u32,
}

/// What the client answered to the handshake flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientFlags {
    /// `NBD_FLAG_C_NO_ZEROES`: omit the 124 zero bytes after `NBD_OPT_EXPORT_NAME`.
    pub no_zeroes: bool,
}

/// Reads a big-endian integer from a fixed position; the caller guarantees the length.
fn be_u16(b: &[u8]) -> u16 {
    let mut a = [0u8; 2];
    a.copy_from_slice(b);
    u16::from_be_bytes(a)
}

fn be_u32(b: &[u8]) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(b);
    u32::from_be_bytes(a)
}

fn be_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(b);
    u64::from_be_bytes(a)
}

/// The server greeting: `NBDMAGIC`, `IHAVEOPT`, `NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES`.
pub fn greeting() -> [u8; GREETING_LEN] {
    let mut b = [0u8; GREETING_LEN];
    b[0..8].copy_from_slice(&NBDMAGIC.to_be_bytes());
    b[8..16].copy_from_slice(&IHAVEOPT.to_be_bytes());
    let flags = handshake_flags::FIXED_NEWSTYLE | handshake_flags::NO_ZEROES;
    b[16..18].copy_from_slice(&flags.to_be_bytes());
    b
}

/// Parses the client flags. Unknown bits and the absence of `NBD_FLAG_C_FIXED_NEWSTYLE` are
/// refused: the spec requires dropping the connection on unknown flags, and this server only
/// speaks fixed newstyle.
pub fn parse_client_flags(b: [u8; 4]) -> Result<ClientFlags, ProtoError> {
    let flags = u32::from_be_bytes(b);
    let known = client_flags::FIXED_NEWSTYLE | client_flags::NO_ZEROES;
    if flags & !known != 0 {
        return Err(ProtoError::UnknownClientFlags(flags));
    }
    if flags & client_flags::FIXED_NEWSTYLE == 0 {
        return Err(ProtoError::NotFixedNewstyle);
    }
    Ok(ClientFlags {
        no_zeroes: flags & client_flags::NO_ZEROES != 0,
    })
}

/// Parses an option header, refusing a bad magic and data longer than [`MAX_OPTION_DATA`].
pub fn parse_option_header(b: &[u8; OPTION_HEADER_LEN]) -> Result<OptionHeader, ProtoError> {
    let magic = be_u64(&b[0..8]);
    if magic != IHAVEOPT {
        return Err(ProtoError::BadOptionMagic(magic));
    }
    let option = be_u32(&b[8..12]);
    let len = be_u32(&b[12..16]);
    if len > MAX_OPTION_DATA {
        return Err(ProtoError::OptionTooLong {
            option,
            len,
            max: MAX_OPTION_DATA,
        });
    }
    Ok(OptionHeader { option, len })
}

/// Parses a request header, refusing a bad magic.
pub fn parse_request_header(b: &[u8; REQUEST_HEADER_LEN]) -> Result<RequestHeader, ProtoError> {
    let magic = be_u32(&b[0..4]);
    if magic != REQUEST_MAGIC {
        return Err(ProtoError::BadRequestMagic(magic));
    }
    Ok(RequestHeader {
        flags: be_u16(&b[4..6]),
        kind: be_u16(&b[6..8]),
        cookie: Cookie(be_u64(&b[8..16])),
        offset: be_u64(&b[16..24]),
        length: be_u32(&b[24..28]),
    })
}

/// A parsed client option.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientOption<'a> {
    /// `NBD_OPT_EXPORT_NAME` with the export name.
    ExportName(&'a str),
    /// `NBD_OPT_ABORT` (any data is ignored, as the spec asks).
    Abort,
    /// `NBD_OPT_LIST`.
    List,
    /// `NBD_OPT_STARTTLS`.
    StartTls,
    /// `NBD_OPT_INFO`.
    Info(InfoRequest<'a>),
    /// `NBD_OPT_GO`.
    Go(InfoRequest<'a>),
    /// `NBD_OPT_STRUCTURED_REPLY`.
    StructuredReply,
    /// `NBD_OPT_LIST_META_CONTEXT`.
    ListMetaContext(MetaContextRequest<'a>),
    /// `NBD_OPT_SET_META_CONTEXT`.
    SetMetaContext(MetaContextRequest<'a>),
    /// Any other option code.
    Unsupported(u32),
}

/// The data of `NBD_OPT_INFO` and `NBD_OPT_GO`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InfoRequest<'a> {
    /// The export name.
    pub name: &'a str,
    /// The information requests, two bytes each.
    requests: &'a [u8],
}

impl<'a> InfoRequest<'a> {
    /// The requested information types (`NBD_INFO_*`), in the client's order.
    pub fn requests(&self) -> impl Iterator<Item = u16> + 'a {
        self.requests.chunks_exact(2).map(be_u16)
    }

    /// Whether the client asked for `info`.
    pub fn wants(&self, info: u16) -> bool {
        self.requests().any(|i| i == info)
    }
}

/// The data of `NBD_OPT_LIST_META_CONTEXT` and `NBD_OPT_SET_META_CONTEXT`, fully validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetaContextRequest<'a> {
    /// The export name.
    pub export: &'a str,
    /// The encoded queries (length-prefixed strings), already checked.
    queries: &'a [u8],
    count: u32,
}

impl<'a> MetaContextRequest<'a> {
    /// The number of queries.
    pub fn query_count(&self) -> u32 {
        self.count
    }

    /// The query strings.
    pub fn queries(&self) -> MetaQueries<'a> {
        MetaQueries { rest: self.queries }
    }
}

/// Iterator over the queries of a [`MetaContextRequest`].
#[derive(Debug, Clone)]
pub struct MetaQueries<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for MetaQueries<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        let mut reader = Reader::new(self.rest);
        // The queries were validated when parsed; an error here only ends the iteration.
        let query = reader.string().ok()?;
        self.rest = reader.rest();
        Some(query)
    }
}

/// A cursor over option data that never reads past the end.
struct Reader<'a> {
    data: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(data: &'a [u8]) -> Self {
        Self { data }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], OptionError> {
        if self.data.len() < n {
            return Err(OptionError::Truncated);
        }
        let (head, tail) = self.data.split_at(n);
        self.data = tail;
        Ok(head)
    }

    fn u16(&mut self) -> Result<u16, OptionError> {
        self.take(2).map(be_u16)
    }

    fn u32(&mut self) -> Result<u32, OptionError> {
        self.take(4).map(be_u32)
    }

    /// A 32-bit length followed by that many bytes of string.
    fn string(&mut self) -> Result<&'a str, OptionError> {
        let len = self.u32()? as usize;
        let bytes = self.take(len)?;
        nbd_string(bytes)
    }

    fn rest(&self) -> &'a [u8] {
        self.data
    }

    fn finish(&self) -> Result<(), OptionError> {
        if self.data.is_empty() {
            Ok(())
        } else {
            Err(OptionError::TrailingBytes(self.data.len()))
        }
    }
}

/// Checks the protocol's string rules: at most 4096 bytes, UTF-8, no NUL.
pub fn nbd_string(bytes: &[u8]) -> Result<&str, OptionError> {
    if bytes.len() > MAX_STRING_LEN {
        return Err(OptionError::StringTooLong(bytes.len()));
    }
    let s = std::str::from_utf8(bytes).map_err(|_| OptionError::NotUtf8)?;
    if s.contains('\0') {
        return Err(OptionError::ContainsNul);
    }
    Ok(s)
}

fn no_data(data: &[u8]) -> Result<(), OptionError> {
    if data.is_empty() {
        Ok(())
    } else {
        Err(OptionError::UnexpectedData(data.len()))
    }
}

fn parse_info_request(data: &[u8]) -> Result<InfoRequest<'_>, OptionError> {
    let mut r = Reader::new(data);
    let name = r.string()?;
    let count = r.u16()? as usize;
    let requests = r.take(count * 2)?;
    r.finish()?;
    Ok(InfoRequest { name, requests })
}

fn parse_meta_context_request(data: &[u8]) -> Result<MetaContextRequest<'_>, OptionError> {
    let mut r = Reader::new(data);
    let export = r.string()?;
    let count = r.u32()?;
    let queries = r.rest();
    // Each query takes at least four bytes, so the loop is bounded by the data length, not by
    // the count the client claims.
    for _ in 0..count {
        r.string()?;
    }
    r.finish()?;
    Ok(MetaContextRequest {
        export,
        queries,
        count,
    })
}

/// Parses the data of option `option`. Options this server does not know come back as
/// [`ClientOption::Unsupported`] whatever their data.
pub fn parse_option(option: u32, data: &[u8]) -> Result<ClientOption<'_>, OptionError> {
    Ok(match option {
        opt::EXPORT_NAME => ClientOption::ExportName(nbd_string(data)?),
        opt::ABORT => ClientOption::Abort,
        opt::LIST => {
            no_data(data)?;
            ClientOption::List
        }
        opt::STARTTLS => {
            no_data(data)?;
            ClientOption::StartTls
        }
        opt::INFO => ClientOption::Info(parse_info_request(data)?),
        opt::GO => ClientOption::Go(parse_info_request(data)?),
        opt::STRUCTURED_REPLY => {
            no_data(data)?;
            ClientOption::StructuredReply
        }
        opt::LIST_META_CONTEXT => ClientOption::ListMetaContext(parse_meta_context_request(data)?),
        opt::SET_META_CONTEXT => ClientOption::SetMetaContext(parse_meta_context_request(data)?),
        other => ClientOption::Unsupported(other),
    })
}

// ---------------------------------------------------------------------------------------------
// Encoding: handshake phase

/// Appends an option reply with `data`; data longer than `u32::MAX` bytes is never produced
/// by this server, so the length is saturated rather than checked.
pub fn put_option_reply(out: &mut Vec<u8>, option: u32, reply: u32, data: &[u8]) {
    out.extend_from_slice(&OPTION_REPLY_MAGIC.to_be_bytes());
    out.extend_from_slice(&option.to_be_bytes());
    out.extend_from_slice(&reply.to_be_bytes());
    out.extend_from_slice(&u32::try_from(data.len()).unwrap_or(u32::MAX).to_be_bytes());
    out.extend_from_slice(data);
}

/// Appends an `NBD_REP_INFO` carrying `NBD_INFO_EXPORT`.
pub fn put_info_export(out: &mut Vec<u8>, option: u32, size: u64, flags: u16) {
    let mut d = [0u8; 12];
    d[0..2].copy_from_slice(&info::EXPORT.to_be_bytes());
    d[2..10].copy_from_slice(&size.to_be_bytes());
    d[10..12].copy_from_slice(&flags.to_be_bytes());
    put_option_reply(out, option, rep::INFO, &d);
}

/// Appends an `NBD_REP_INFO` carrying `NBD_INFO_BLOCK_SIZE`.
pub fn put_info_block_size(out: &mut Vec<u8>, option: u32, min: u32, preferred: u32, max: u32) {
    let mut d = [0u8; 14];
    d[0..2].copy_from_slice(&info::BLOCK_SIZE.to_be_bytes());
    d[2..6].copy_from_slice(&min.to_be_bytes());
    d[6..10].copy_from_slice(&preferred.to_be_bytes());
    d[10..14].copy_from_slice(&max.to_be_bytes());
    put_option_reply(out, option, rep::INFO, &d);
}

/// Appends an `NBD_REP_INFO` carrying `NBD_INFO_NAME` or `NBD_INFO_DESCRIPTION`.
pub fn put_info_string(out: &mut Vec<u8>, option: u32, info_type: u16, text: &str) {
    let mut d = Vec::with_capacity(2 + text.len());
    d.extend_from_slice(&info_type.to_be_bytes());
    d.extend_from_slice(text.as_bytes());
    put_option_reply(out, option, rep::INFO, &d);
}

/// Appends an `NBD_REP_META_CONTEXT`.
pub fn put_meta_context(out: &mut Vec<u8>, option: u32, id: u32, name: &str) {
    let mut d = Vec::with_capacity(4 + name.len());
    d.extend_from_slice(&id.to_be_bytes());
    d.extend_from_slice(name.as_bytes());
    put_option_reply(out, option, rep::META_CONTEXT, &d);
}

/// Appends the answer to `NBD_OPT_EXPORT_NAME`: size, transmission flags and, unless the
/// client negotiated `NBD_FLAG_C_NO_ZEROES`, 124 zero bytes.
pub fn put_export_name_reply(out: &mut Vec<u8>, size: u64, flags: u16, no_zeroes: bool) {
    out.extend_from_slice(&size.to_be_bytes());
    out.extend_from_slice(&flags.to_be_bytes());
    if !no_zeroes {
        out.extend_from_slice(&[0u8; 124]);
    }
}

// ---------------------------------------------------------------------------------------------
// Encoding: transmission phase

/// A simple reply header.
pub fn simple_reply(error: Option<Errno>, cookie: Cookie) -> [u8; SIMPLE_REPLY_LEN] {
    let mut b = [0u8; SIMPLE_REPLY_LEN];
    b[0..4].copy_from_slice(&SIMPLE_REPLY_MAGIC.to_be_bytes());
    b[4..8].copy_from_slice(&error.map_or(0, Errno::code).to_be_bytes());
    b[8..16].copy_from_slice(&cookie.0.to_be_bytes());
    b
}

/// A structured reply chunk header.
pub fn structured_header(
    flags: u16,
    chunk_type: u16,
    cookie: Cookie,
    payload_len: u32,
) -> [u8; STRUCTURED_HEADER_LEN] {
    let mut b = [0u8; STRUCTURED_HEADER_LEN];
    b[0..4].copy_from_slice(&STRUCTURED_REPLY_MAGIC.to_be_bytes());
    b[4..6].copy_from_slice(&flags.to_be_bytes());
    b[6..8].copy_from_slice(&chunk_type.to_be_bytes());
    b[8..16].copy_from_slice(&cookie.0.to_be_bytes());
    b[16..20].copy_from_slice(&payload_len.to_be_bytes());
    b
}

/// The header of a final (`NBD_REPLY_FLAG_DONE`) `NBD_REPLY_TYPE_OFFSET_DATA` chunk carrying
/// `data_len` bytes read at `offset`; the data follows it. `None` when `data_len` is zero or
/// too large for one chunk (more than `2^32 - 9` bytes).
pub fn offset_data_header(
    cookie: Cookie,
    offset: u64,
    data_len: u32,
) -> Option<[u8; OFFSET_DATA_HEADER_LEN]> {
    if data_len == 0 {
        return None;
    }
    let payload = data_len.checked_add(8)?;
    let mut b = [0u8; OFFSET_DATA_HEADER_LEN];
    b[..STRUCTURED_HEADER_LEN].copy_from_slice(&structured_header(
        reply_flags::DONE,
        reply_type::OFFSET_DATA,
        cookie,
        payload,
    ));
    b[STRUCTURED_HEADER_LEN..].copy_from_slice(&offset.to_be_bytes());
    Some(b)
}

/// Appends a simple reply without data.
pub fn put_simple_reply(out: &mut Vec<u8>, error: Option<Errno>, cookie: Cookie) {
    out.extend_from_slice(&simple_reply(error, cookie));
}

/// Appends a final `NBD_REPLY_TYPE_NONE` chunk.
pub fn put_structured_done(out: &mut Vec<u8>, cookie: Cookie) {
    out.extend_from_slice(&structured_header(
        reply_flags::DONE,
        reply_type::NONE,
        cookie,
        0,
    ));
}

/// Truncates `message` to the protocol's string limit on a character boundary.
fn bounded_message(message: &str) -> &str {
    if message.len() <= MAX_STRING_LEN {
        return message;
    }
    let mut end = MAX_STRING_LEN;
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    &message[..end]
}

/// Appends a final `NBD_REPLY_TYPE_ERROR` chunk with a human-readable message.
pub fn put_structured_error(out: &mut Vec<u8>, cookie: Cookie, error: Errno, message: &str) {
    let message = bounded_message(message);
    // At most 4096 bytes, so both lengths fit.
    let msg_len = message.len() as u16;
    out.extend_from_slice(&structured_header(
        reply_flags::DONE,
        reply_type::ERROR,
        cookie,
        6 + u32::from(msg_len),
    ));
    out.extend_from_slice(&error.code().to_be_bytes());
    out.extend_from_slice(&msg_len.to_be_bytes());
    out.extend_from_slice(message.as_bytes());
}

/// Appends a final `NBD_REPLY_TYPE_ERROR_OFFSET` chunk.
pub fn put_structured_error_offset(
    out: &mut Vec<u8>,
    cookie: Cookie,
    error: Errno,
    message: &str,
    offset: u64,
) {
    let message = bounded_message(message);
    let msg_len = message.len() as u16;
    out.extend_from_slice(&structured_header(
        reply_flags::DONE,
        reply_type::ERROR_OFFSET,
        cookie,
        14 + u32::from(msg_len),
    ));
    out.extend_from_slice(&error.code().to_be_bytes());
    out.extend_from_slice(&msg_len.to_be_bytes());
    out.extend_from_slice(message.as_bytes());
    out.extend_from_slice(&offset.to_be_bytes());
}

/// One `NBD_REPLY_TYPE_BLOCK_STATUS` descriptor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Descriptor {
    /// Length in bytes, never zero.
    pub len: u32,
    /// Status flags of the metadata context (`NBD_STATE_*` for `base:allocation`).
    pub flags: u32,
}

/// Appends a final `NBD_REPLY_TYPE_BLOCK_STATUS` chunk. The descriptor list must not be empty
/// (the spec requires at least one) and is capped by the caller.
pub fn put_block_status(
    out: &mut Vec<u8>,
    cookie: Cookie,
    context_id: u32,
    descriptors: &[Descriptor],
) {
    let payload = 4usize.saturating_add(descriptors.len().saturating_mul(8));
    out.extend_from_slice(&structured_header(
        reply_flags::DONE,
        reply_type::BLOCK_STATUS,
        cookie,
        u32::try_from(payload).unwrap_or(u32::MAX),
    ));
    out.extend_from_slice(&context_id.to_be_bytes());
    for d in descriptors {
        out.extend_from_slice(&d.len.to_be_bytes());
        out.extend_from_slice(&d.flags.to_be_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn option_frame(option: u32, data: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&IHAVEOPT.to_be_bytes());
        v.extend_from_slice(&option.to_be_bytes());
        v.extend_from_slice(&(data.len() as u32).to_be_bytes());
        v.extend_from_slice(data);
        v
    }

    fn header16(b: &[u8]) -> [u8; 16] {
        b[..16].try_into().unwrap()
    }

    fn info_data(name: &str, requests: &[u16]) -> Vec<u8> {
        let mut d = Vec::new();
        d.extend_from_slice(&(name.len() as u32).to_be_bytes());
        d.extend_from_slice(name.as_bytes());
        d.extend_from_slice(&(requests.len() as u16).to_be_bytes());
        for r in requests {
            d.extend_from_slice(&r.to_be_bytes());
        }
        d
    }

    fn meta_data(export: &str, queries: &[&str]) -> Vec<u8> {
        let mut d = Vec::new();
        d.extend_from_slice(&(export.len() as u32).to_be_bytes());
        d.extend_from_slice(export.as_bytes());
        d.extend_from_slice(&(queries.len() as u32).to_be_bytes());
        for q in queries {
            d.extend_from_slice(&(q.len() as u32).to_be_bytes());
            d.extend_from_slice(q.as_bytes());
        }
        d
    }

    #[test]
    fn greeting_is_nbdmagic_ihaveopt_and_flags() {
        let g = greeting();
        assert_eq!(&g[0..8], b"NBDMAGIC");
        assert_eq!(&g[8..16], b"IHAVEOPT");
        assert_eq!(&g[16..18], &[0, 3]);
    }

    #[test]
    fn client_flags_require_fixed_newstyle_and_no_unknown_bits() {
        assert_eq!(
            parse_client_flags([0, 0, 0, 1]),
            Ok(ClientFlags { no_zeroes: false })
        );
        assert_eq!(
            parse_client_flags([0, 0, 0, 3]),
            Ok(ClientFlags { no_zeroes: true })
        );
        assert_eq!(
            parse_client_flags([0, 0, 0, 0]),
            Err(ProtoError::NotFixedNewstyle)
        );
        assert_eq!(
            parse_client_flags([0, 0, 0, 2]),
            Err(ProtoError::NotFixedNewstyle)
        );
        assert_eq!(
            parse_client_flags([0, 0, 0, 5]),
            Err(ProtoError::UnknownClientFlags(5))
        );
    }

    #[test]
    fn option_header_checks_magic_and_length_cap() {
        let f = option_frame(opt::GO, b"abc");
        assert_eq!(
            parse_option_header(&header16(&f)),
            Ok(OptionHeader {
                option: opt::GO,
                len: 3
            })
        );
        let mut bad = header16(&f);
        bad[0] ^= 1;
        assert!(matches!(
            parse_option_header(&bad),
            Err(ProtoError::BadOptionMagic(_))
        ));
        let mut huge = header16(&f);
        huge[12..16].copy_from_slice(&u32::MAX.to_be_bytes());
        assert_eq!(
            parse_option_header(&huge),
            Err(ProtoError::OptionTooLong {
                option: opt::GO,
                len: u32::MAX,
                max: MAX_OPTION_DATA
            })
        );
        let mut at_cap = header16(&f);
        at_cap[12..16].copy_from_slice(&MAX_OPTION_DATA.to_be_bytes());
        assert!(parse_option_header(&at_cap).is_ok());
    }

    #[test]
    fn go_and_info_parse_name_and_requests() {
        let d = info_data("disk-1", &[info::BLOCK_SIZE, info::NAME]);
        let ClientOption::Go(req) = parse_option(opt::GO, &d).unwrap() else {
            panic!("not GO")
        };
        assert_eq!(req.name, "disk-1");
        assert_eq!(
            req.requests().collect::<Vec<_>>(),
            [info::BLOCK_SIZE, info::NAME]
        );
        assert!(req.wants(info::NAME));
        assert!(!req.wants(info::DESCRIPTION));
        assert!(matches!(
            parse_option(opt::INFO, &info_data("", &[])),
            Ok(ClientOption::Info(InfoRequest { name: "", .. }))
        ));
    }

    #[test]
    fn go_with_inconsistent_lengths_is_invalid() {
        let d = info_data("disk", &[info::BLOCK_SIZE]);
        // Name length pointing past the end.
        let mut long_name = d.clone();
        long_name[0..4].copy_from_slice(&1000u32.to_be_bytes());
        assert_eq!(
            parse_option(opt::GO, &long_name),
            Err(OptionError::Truncated)
        );
        // Request count larger than the data.
        let mut many = d.clone();
        let at = 4 + 4;
        many[at..at + 2].copy_from_slice(&9u16.to_be_bytes());
        assert_eq!(parse_option(opt::GO, &many), Err(OptionError::Truncated));
        // Trailing byte.
        let mut trailing = d.clone();
        trailing.push(0);
        assert_eq!(
            parse_option(opt::GO, &trailing),
            Err(OptionError::TrailingBytes(1))
        );
        // Truncated everywhere.
        for cut in 0..d.len() {
            assert!(parse_option(opt::GO, &d[..cut]).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn strings_follow_the_protocol_rules() {
        assert_eq!(nbd_string(b"ok"), Ok("ok"));
        assert_eq!(nbd_string(b"a\0b"), Err(OptionError::ContainsNul));
        assert_eq!(nbd_string(&[0xff, 0xfe]), Err(OptionError::NotUtf8));
        assert_eq!(
            nbd_string(&[b'a'; 4097]),
            Err(OptionError::StringTooLong(4097))
        );
        assert!(nbd_string(&[b'a'; 4096]).is_ok());
        assert!(matches!(
            parse_option(opt::EXPORT_NAME, b"x\0"),
            Err(OptionError::ContainsNul)
        ));
    }

    #[test]
    fn options_without_data_refuse_data_except_abort() {
        assert_eq!(parse_option(opt::LIST, b""), Ok(ClientOption::List));
        assert_eq!(
            parse_option(opt::LIST, b"x"),
            Err(OptionError::UnexpectedData(1))
        );
        assert_eq!(
            parse_option(opt::STARTTLS, b"xy"),
            Err(OptionError::UnexpectedData(2))
        );
        assert_eq!(
            parse_option(opt::STRUCTURED_REPLY, b"z"),
            Err(OptionError::UnexpectedData(1))
        );
        assert_eq!(
            parse_option(opt::ABORT, b"ignored"),
            Ok(ClientOption::Abort)
        );
        assert_eq!(
            parse_option(4242, b"whatever"),
            Ok(ClientOption::Unsupported(4242))
        );
    }

    #[test]
    fn meta_context_queries_are_validated_up_front() {
        let d = meta_data("e", &["base:allocation", "qemu:dirty-bitmap:x"]);
        let ClientOption::SetMetaContext(req) = parse_option(opt::SET_META_CONTEXT, &d).unwrap()
        else {
            panic!("not SET_META_CONTEXT")
        };
        assert_eq!(req.export, "e");
        assert_eq!(req.query_count(), 2);
        assert_eq!(
            req.queries().collect::<Vec<_>>(),
            ["base:allocation", "qemu:dirty-bitmap:x"]
        );
        // A count far larger than the data is truncated, not a huge loop or allocation.
        let mut lying = meta_data("e", &[]);
        let n = lying.len();
        lying[n - 4..].copy_from_slice(&u32::MAX.to_be_bytes());
        assert_eq!(
            parse_option(opt::LIST_META_CONTEXT, &lying),
            Err(OptionError::Truncated)
        );
        for cut in 0..d.len() {
            assert!(parse_option(opt::SET_META_CONTEXT, &d[..cut]).is_err());
        }
    }

    #[test]
    fn request_header_round_trips_and_checks_magic() {
        let h = RequestHeader {
            flags: cmd_flags::FUA,
            kind: cmd::WRITE,
            cookie: Cookie(0x0102_0304_0506_0708),
            offset: 4096,
            length: 512,
        };
        let b = h.encode();
        assert_eq!(parse_request_header(&b), Ok(h));
        assert_eq!(h.payload_len(), 512);
        let mut bad = b;
        bad[3] ^= 0xff;
        assert!(matches!(
            parse_request_header(&bad),
            Err(ProtoError::BadRequestMagic(_))
        ));
        let read = RequestHeader {
            kind: cmd::READ,
            ..h
        };
        assert_eq!(read.payload_len(), 0);
    }

    #[test]
    fn replies_have_the_documented_layout() {
        let cookie = Cookie(7);
        let s = simple_reply(Some(Errno::Inval), cookie);
        assert_eq!(&s[0..4], &SIMPLE_REPLY_MAGIC.to_be_bytes());
        assert_eq!(&s[4..8], &22u32.to_be_bytes());
        assert_eq!(&s[8..16], &7u64.to_be_bytes());

        let h = offset_data_header(cookie, 1024, 4096).unwrap();
        assert_eq!(&h[0..4], &STRUCTURED_REPLY_MAGIC.to_be_bytes());
        assert_eq!(&h[4..6], &reply_flags::DONE.to_be_bytes());
        assert_eq!(&h[6..8], &reply_type::OFFSET_DATA.to_be_bytes());
        assert_eq!(&h[16..20], &4104u32.to_be_bytes());
        assert_eq!(&h[20..28], &1024u64.to_be_bytes());
        assert!(offset_data_header(cookie, 0, 0).is_none());
        assert!(offset_data_header(cookie, 0, u32::MAX).is_none());

        let mut e = Vec::new();
        put_structured_error(&mut e, cookie, Errno::Perm, "read-only");
        assert_eq!(e.len(), 20 + 6 + 9);
        assert_eq!(&e[6..8], &reply_type::ERROR.to_be_bytes());
        assert_eq!(&e[16..20], &15u32.to_be_bytes());
        assert_eq!(&e[20..24], &1u32.to_be_bytes());
        assert_eq!(&e[24..26], &9u16.to_be_bytes());

        let mut long = Vec::new();
        put_structured_error(&mut long, cookie, Errno::Io, &"é".repeat(3000));
        let msg_len = u16::from_be_bytes([long[24], long[25]]) as usize;
        assert!(msg_len <= MAX_STRING_LEN);
        assert_eq!(long.len(), 26 + msg_len);
        assert!(std::str::from_utf8(&long[26..]).is_ok());

        let mut bs = Vec::new();
        put_block_status(
            &mut bs,
            cookie,
            1,
            &[
                Descriptor {
                    len: 4096,
                    flags: state::HOLE | state::ZERO,
                },
                Descriptor { len: 512, flags: 0 },
            ],
        );
        assert_eq!(bs.len(), 20 + 4 + 16);
        assert_eq!(&bs[16..20], &20u32.to_be_bytes());
        assert_eq!(&bs[24..28], &4096u32.to_be_bytes());
        assert_eq!(&bs[28..32], &3u32.to_be_bytes());

        let mut opt_reply = Vec::new();
        put_info_export(&mut opt_reply, opt::GO, 1 << 20, 0x1234);
        assert_eq!(&opt_reply[0..8], &OPTION_REPLY_MAGIC.to_be_bytes());
        assert_eq!(&opt_reply[8..12], &opt::GO.to_be_bytes());
        assert_eq!(&opt_reply[12..16], &rep::INFO.to_be_bytes());
        assert_eq!(&opt_reply[16..20], &12u32.to_be_bytes());

        let mut export_name = Vec::new();
        put_export_name_reply(&mut export_name, 1, 1, false);
        assert_eq!(export_name.len(), 134);
        export_name.clear();
        put_export_name_reply(&mut export_name, 1, 1, true);
        assert_eq!(export_name.len(), 10);
    }

    #[test]
    fn io_errors_map_to_nbd_errors() {
        let e = |k| Errno::from_io_error(&io::Error::from(k));
        assert_eq!(e(io::ErrorKind::PermissionDenied), Errno::Perm);
        assert_eq!(e(io::ErrorKind::StorageFull), Errno::NoSpc);
        assert_eq!(e(io::ErrorKind::InvalidInput), Errno::Inval);
        assert_eq!(e(io::ErrorKind::Other), Errno::Io);
        assert_eq!(e(io::ErrorKind::UnexpectedEof), Errno::Io);
        assert_eq!(
            Errno::from_io_error(&io::Error::from_raw_os_error(122)),
            Errno::NoSpc
        );
        assert_eq!(
            Errno::from_io_error(&io::Error::from_raw_os_error(30)),
            Errno::Perm
        );
    }
}
