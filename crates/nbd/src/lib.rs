//! An NBD (network block device) server: fixed newstyle negotiation, structured replies,
//! STARTTLS, `base:allocation` block status.
//!
//! The crate knows only its own [`BlockDevice`] trait and an [`ExportCatalog`] that maps an
//! export name to a device; it knows nothing about keys, encryption or where bytes live.
//!
//! Layout:
//!
//! - [`proto`]: the wire format, sans I/O (constants, frame parsing, reply encoding);
//! - [`handshake`]: option haggling as a state machine, sans I/O;
//! - [`command`]: transmission-phase request checks and block-status descriptors, sans I/O;
//! - [`serve`] / [`serve_connection`]: the tokio server (a thread per connection, plain or
//!   STARTTLS, pipelined requests, revocation);
//! - [`fuzzing`]: harnesses the fuzz targets and property tests call.
//!
//! Every export advertises a minimum block size of 512 bytes, a preferred block size of 4096
//! and a maximum of 32 MiB (`NBD_INFO_BLOCK_SIZE`), and `base:allocation` block status.

pub mod command;
pub mod fuzzing;
pub mod handshake;
pub mod proto;
mod server;

pub use server::{
    ConnectionError, DEFAULT_HANDSHAKE_TIMEOUT, DEFAULT_MAX_BYTES_IN_FLIGHT,
    DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_REQUESTS_IN_FLIGHT, DEFAULT_STOP_GRACE, ServerConfig,
    serve, serve_connection,
};

use std::io;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

/// One extent of a block-status answer (`base:allocation`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    /// Length in bytes.
    pub len: u64,
    /// The range occupies no storage (`NBD_STATE_HOLE`).
    pub hole: bool,
    /// The range reads as zeros (`NBD_STATE_ZERO`).
    pub zero: bool,
}

/// A block device served over NBD. Methods are blocking; the server calls them off the async
/// workers. Offsets and lengths are in bytes and already checked against [`BlockDevice::size`].
///
/// The server also guarantees, for `read`, `write`, `trim`, `write_zeroes` and
/// `block_status`: lengths are non-zero, offsets and lengths are multiples of
/// [`proto::MIN_BLOCK_SIZE`] (512) except that a range may end at an unaligned device end, and
/// reads and writes are at most [`proto::MAX_BLOCK_SIZE`] (32 MiB). Several calls may run
/// concurrently, from several connections.
pub trait BlockDevice: Send + Sync + 'static {
    /// Size in bytes.
    fn size(&self) -> u64;
    /// Fill `buf` with the bytes at `offset`.
    fn read(&self, offset: u64, buf: &mut [u8]) -> io::Result<()>;
    /// Write `data` at `offset`; with `fua`, return only once it is on stable storage. The
    /// device may use `data` as scratch space (to encrypt in place, say): the server does not
    /// read it afterwards.
    fn write(&self, offset: u64, data: &mut [u8], fua: bool) -> io::Result<()>;
    /// Return once every completed write is on stable storage.
    fn flush(&self) -> io::Result<()>;
    /// Discard a range; afterwards it reads as zeros.
    fn trim(&self, offset: u64, len: u64) -> io::Result<()>;
    /// Make a range read as zeros; with `no_hole` keep it allocated.
    fn write_zeroes(&self, offset: u64, len: u64, no_hole: bool, fua: bool) -> io::Result<()>;
    /// The allocation state of `offset..offset + len`, as consecutive extents covering at
    /// least the first byte of the range.
    fn block_status(&self, offset: u64, len: u64) -> io::Result<Vec<Extent>>;
    /// Whether several connections to this device see each other's completed writes and a
    /// flush on one covers writes completed on all (`NBD_FLAG_CAN_MULTI_CONN`).
    fn can_multi_conn(&self) -> bool;
}

/// What an export name opens.
#[derive(Clone)]
pub struct Export {
    /// The device.
    pub device: Arc<dyn BlockDevice>,
    /// Writes, trims and zeroing are refused with `EPERM`.
    pub read_only: bool,
    /// Cancelled when access is revoked: live connections to the export are closed and
    /// requests still in flight get an error.
    pub revoked: CancellationToken,
}

impl std::fmt::Debug for Export {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Export")
            .field("size", &self.device.size())
            .field("read_only", &self.read_only)
            .field("revoked", &self.revoked.is_cancelled())
            .finish()
    }
}

/// Resolves export names (unguessable capabilities) to exports.
pub trait ExportCatalog: Send + Sync + 'static {
    /// The export named `name`, if it exists and has not expired or been revoked.
    fn open(&self, name: &str) -> Option<Export>;
}
