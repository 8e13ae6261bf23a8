//! The on-disk header of an encrypted disk, version 1; `docs/disk-format.md` documents it byte
//! by byte.
//!
//! Sans-I/O: [`encode_slot`] turns a [`Header`] into one slot image and [`decode_region`]
//! picks and decodes the current header from the bytes of the header region.
//!
//! ```text
//! 0 ........ 4096 ........ 8192 ............ DATA_OFFSET (1 MiB) ..........
//! | slot A    | slot B      | zeros           | data units 0, 1, 2, ...
//! ```
//!
//! Each slot: magic, version, body length, generation, body, SHA-256. The valid slot with the
//! highest generation is the header; an update writes the other slot.

use std::fmt;

use aws_lc_rs::{digest, hmac};

use crate::xts::{DATA_UNIT_LEN, XtsKey};

/// First bytes of every slot.
pub const MAGIC: [u8; 8] = *b"SEALDISK";
/// The format version this code reads and writes.
pub const FORMAT_VERSION: u32 = 1;
/// Bytes in one header slot.
pub const SLOT_LEN: usize = 4096;
/// Bytes of the header region: slot A then slot B.
pub const HEADER_REGION_LEN: usize = 2 * SLOT_LEN;
/// Where the data area starts in disks this code creates (1 MiB, aligned for any device).
pub const DATA_OFFSET: u64 = 1 << 20;
/// Most layers a disk may have (2 = double encryption).
pub const MAX_LAYERS: usize = 2;
/// Cipher id of AES-256-XTS with 4096-byte data units and the `plain64` tweak.
pub const CIPHER_AES_256_XTS_PLAIN64: u8 = 1;
/// Largest virtual size: data offset plus size must stay a valid file offset (`i64::MAX`),
/// rounded down to 4096.
pub const MAX_SIZE: u64 = (i64::MAX as u64 - DATA_OFFSET) & !(DATA_UNIT_LEN as u64 - 1);

/// Fixed part of a slot before the body: magic, version, body length, generation.
const PREFIX_LEN: usize = 8 + 4 + 4 + 8;
/// SHA-256 length.
const CHECKSUM_LEN: usize = 32;
/// Largest body that fits in a slot.
pub const MAX_BODY_LEN: usize = SLOT_LEN - PREFIX_LEN - CHECKSUM_LEN;
/// Domain separation of the key check value.
const KEY_CHECK_LABEL: &[u8] = b"sealdisk key check v1";

/// Errors reading or writing the header format.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    /// Neither slot starts with the magic: not a sealdisk disk, or never formatted.
    #[error("no sealdisk header (neither slot starts with the magic)")]
    NotFormatted,
    /// A slot carries a format version this code does not know.
    #[error("slot {slot} has format version {version}; this build reads version {FORMAT_VERSION}")]
    UnsupportedVersion {
        /// The slot.
        slot: Slot,
        /// The version found.
        version: u32,
    },
    /// No slot holds an intact header.
    #[error("no intact header: slot A {a}, slot B {b}")]
    NoIntactSlot {
        /// What is wrong with slot A.
        a: SlotDamage,
        /// What is wrong with slot B.
        b: SlotDamage,
    },
    /// The header's body is cut short.
    #[error("header body ends inside {field}")]
    Truncated {
        /// The field being read.
        field: &'static str,
    },
    /// Bytes are left after the last layer.
    #[error("{len} unexpected bytes after the last layer")]
    TrailingBytes {
        /// How many.
        len: usize,
    },
    /// A layer names a cipher this code does not know.
    #[error("layer {layer} has unknown cipher id {id}")]
    UnknownCipher {
        /// The layer (0 is applied first on write).
        layer: usize,
        /// The cipher id found.
        id: u8,
    },
    /// The data unit length is not the supported 4096.
    #[error("data unit length {len} is not supported (only {DATA_UNIT_LEN})")]
    DataUnitLength {
        /// The length found.
        len: u32,
    },
    /// The data offset is inside the header region or not unit-aligned.
    #[error(
        "data offset {offset} must be a multiple of {DATA_UNIT_LEN} at or after {HEADER_REGION_LEN}"
    )]
    DataOffset {
        /// The offset found.
        offset: u64,
    },
    /// The virtual size is not a multiple of 512 or too large.
    #[error("virtual size {size} must be a multiple of 512 and at most {MAX_SIZE}")]
    Size {
        /// The size found or asked for.
        size: u64,
    },
    /// The layer count is not 1 or 2.
    #[error("layer count {count} is not 1 ..= {MAX_LAYERS}")]
    LayerCount {
        /// The count found or asked for.
        count: usize,
    },
    /// The number of key check values differs from the number of layers.
    #[error("{checks} key check values for {layers} layers")]
    KeyCheckCount {
        /// Key check values.
        checks: usize,
        /// Layers.
        layers: usize,
    },
    /// The generation is 0 (generations start at 1).
    #[error("generation 0 is not valid")]
    ZeroGeneration,
    /// A text field is not UTF-8.
    #[error("{field} of layer {layer} is not UTF-8")]
    NotUtf8 {
        /// The field.
        field: &'static str,
        /// The layer.
        layer: usize,
    },
    /// A field is longer than its 16-bit length prefix allows.
    #[error("{field} of layer {layer} is {len} bytes, more than 65535")]
    FieldTooLong {
        /// The field.
        field: &'static str,
        /// The layer.
        layer: usize,
        /// Its length.
        len: usize,
    },
    /// The encoded body does not fit in a slot.
    #[error("header body of {len} bytes does not fit in a slot (at most {MAX_BODY_LEN})")]
    BodyTooLong {
        /// Its length.
        len: usize,
    },
}

/// Why a slot was not usable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SlotDamage {
    /// The slot does not start with the magic (never written, or overwritten).
    NoMagic,
    /// The body length field is larger than a slot allows.
    BodyLength(u32),
    /// The SHA-256 does not match (torn or corrupted write).
    Checksum,
}

impl fmt::Display for SlotDamage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoMagic => f.write_str("has no magic"),
            Self::BodyLength(len) => write!(f, "has impossible body length {len}"),
            Self::Checksum => f.write_str("fails its checksum"),
        }
    }
}

/// One of the two header slots.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Slot {
    /// Bytes 0..4096.
    A,
    /// Bytes 4096..8192.
    B,
}

impl Slot {
    /// Byte offset of the slot in the disk file.
    pub fn offset(self) -> u64 {
        match self {
            Self::A => 0,
            Self::B => SLOT_LEN as u64,
        }
    }

    /// The other slot: where the next header update goes.
    pub fn other(self) -> Self {
        match self {
            Self::A => Self::B,
            Self::B => Self::A,
        }
    }
}

impl fmt::Display for Slot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::A => "A",
            Self::B => "B",
        })
    }
}

/// The identity of a disk, fixed at creation (e.g. the bytes of a UUID).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DiskId(pub [u8; 16]);

impl fmt::Display for DiskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, b) in self.0.iter().enumerate() {
            if matches!(i, 4 | 6 | 8 | 10) {
                f.write_str("-")?;
            }
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for DiskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DiskId({self})")
    }
}

/// How one XTS layer's DEK is kept: wrapped by the caller under a key-encryption key.
///
/// The block store stores these records and hands them back; it never interprets them.
#[derive(Clone, PartialEq, Eq)]
pub struct WrapLayer {
    /// Which key-encryption key (and version) wrapped the DEK.
    pub key_id: String,
    /// The wrapping algorithm (e.g. `RSA-OAEP-256`).
    pub algorithm: String,
    /// The layer's 64-byte DEK, wrapped.
    pub wrapped_key: Vec<u8>,
}

impl fmt::Debug for WrapLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WrapLayer")
            .field("key_id", &self.key_id)
            .field("algorithm", &self.algorithm)
            .field("wrapped_key_len", &self.wrapped_key.len())
            .finish()
    }
}

/// A key check value: HMAC-SHA256 under a layer's DEK of the label, disk id and layer index.
/// It tells the right DEK from a wrong one without revealing anything about it (like LUKS's
/// master key digest).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct KeyCheck(pub [u8; 32]);

impl fmt::Debug for KeyCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyCheck(")?;
        for b in &self.0[..4] {
            write!(f, "{b:02x}")?;
        }
        write!(f, "..)")
    }
}

fn key_check_message(disk_id: DiskId, layer: usize) -> [u8; KEY_CHECK_LABEL.len() + 17] {
    let mut msg = [0u8; KEY_CHECK_LABEL.len() + 17];
    msg[..KEY_CHECK_LABEL.len()].copy_from_slice(KEY_CHECK_LABEL);
    msg[KEY_CHECK_LABEL.len()..KEY_CHECK_LABEL.len() + 16].copy_from_slice(&disk_id.0);
    // At most `MAX_LAYERS`, so the cast is lossless.
    msg[KEY_CHECK_LABEL.len() + 16] = layer as u8;
    msg
}

impl KeyCheck {
    /// The check value of `key` as layer `layer` of disk `disk_id`.
    pub fn compute(key: &XtsKey, disk_id: DiskId, layer: usize) -> Self {
        let mac_key = hmac::Key::new(hmac::HMAC_SHA256, key.expose_bytes());
        let tag = hmac::sign(&mac_key, &key_check_message(disk_id, layer));
        let mut out = [0u8; 32];
        out.copy_from_slice(tag.as_ref());
        Self(out)
    }

    /// Whether `key` is the DEK of layer `layer` of disk `disk_id` (constant-time compare).
    pub fn matches(&self, key: &XtsKey, disk_id: DiskId, layer: usize) -> bool {
        let mac_key = hmac::Key::new(hmac::HMAC_SHA256, key.expose_bytes());
        hmac::verify(&mac_key, &key_check_message(disk_id, layer), &self.0).is_ok()
    }
}

/// The decoded header of a disk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    /// The disk's identity.
    pub disk_id: DiskId,
    /// Virtual size in bytes, a multiple of 512.
    pub size: u64,
    /// One wrap record per XTS layer; layer 0 is applied first on write.
    pub layers: Vec<WrapLayer>,
    /// Counts header writes, from 1; the slot with the higher one is current.
    pub generation: u64,
    /// Where virtual byte 0 lives in the file (a multiple of 4096, at least 8192).
    pub data_offset: u64,
    /// One key check value per layer, in layer order.
    pub key_checks: Vec<KeyCheck>,
}

impl Header {
    /// Checks the invariants that both encoding and decoding enforce.
    fn validate(&self) -> Result<(), FormatError> {
        if self.layers.is_empty() || self.layers.len() > MAX_LAYERS {
            return Err(FormatError::LayerCount {
                count: self.layers.len(),
            });
        }
        if self.key_checks.len() != self.layers.len() {
            return Err(FormatError::KeyCheckCount {
                checks: self.key_checks.len(),
                layers: self.layers.len(),
            });
        }
        if self.generation == 0 {
            return Err(FormatError::ZeroGeneration);
        }
        if self.data_offset < HEADER_REGION_LEN as u64
            || !self.data_offset.is_multiple_of(DATA_UNIT_LEN as u64)
        {
            return Err(FormatError::DataOffset {
                offset: self.data_offset,
            });
        }
        let fits = self
            .data_offset
            .checked_add(self.size)
            .is_some_and(|end| end <= i64::MAX as u64);
        if !self.size.is_multiple_of(512) || !fits {
            return Err(FormatError::Size { size: self.size });
        }
        Ok(())
    }
}

/// Encodes `header` as one slot image of [`SLOT_LEN`] bytes.
pub fn encode_slot(header: &Header) -> Result<Vec<u8>, FormatError> {
    header.validate()?;
    let mut body = Vec::with_capacity(256);
    body.extend_from_slice(&header.disk_id.0);
    body.extend_from_slice(&header.size.to_le_bytes());
    body.extend_from_slice(&(DATA_UNIT_LEN as u32).to_le_bytes());
    body.extend_from_slice(&header.data_offset.to_le_bytes());
    // At most `MAX_LAYERS` (validated), so the cast is lossless.
    body.push(header.layers.len() as u8);
    for (layer, (wrap, check)) in header.layers.iter().zip(&header.key_checks).enumerate() {
        body.push(CIPHER_AES_256_XTS_PLAIN64);
        body.extend_from_slice(&check.0);
        for (field, bytes) in [
            ("key id", wrap.key_id.as_bytes()),
            ("algorithm", wrap.algorithm.as_bytes()),
            ("wrapped key", wrap.wrapped_key.as_slice()),
        ] {
            let len = u16::try_from(bytes.len()).map_err(|_| FormatError::FieldTooLong {
                field,
                layer,
                len: bytes.len(),
            })?;
            body.extend_from_slice(&len.to_le_bytes());
            body.extend_from_slice(bytes);
        }
    }
    if body.len() > MAX_BODY_LEN {
        return Err(FormatError::BodyTooLong { len: body.len() });
    }
    let mut slot = Vec::with_capacity(SLOT_LEN);
    slot.extend_from_slice(&MAGIC);
    slot.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    // At most `MAX_BODY_LEN`, so the cast is lossless.
    slot.extend_from_slice(&(body.len() as u32).to_le_bytes());
    slot.extend_from_slice(&header.generation.to_le_bytes());
    slot.extend_from_slice(&body);
    let checksum = digest::digest(&digest::SHA256, &slot);
    slot.extend_from_slice(checksum.as_ref());
    slot.resize(SLOT_LEN, 0);
    Ok(slot)
}

/// An intact slot: its generation and body.
struct IntactSlot<'a> {
    generation: u64,
    body: &'a [u8],
}

/// Checks one slot's framing: magic, version, body length, checksum.
fn check_slot(slot: Slot, bytes: &[u8]) -> Result<Result<IntactSlot<'_>, SlotDamage>, FormatError> {
    let field = |at: usize, len: usize| &bytes[at..at + len];
    if field(0, 8) != MAGIC {
        return Ok(Err(SlotDamage::NoMagic));
    }
    let version = u32::from_le_bytes(field(8, 4).try_into().unwrap_or_default());
    if version != FORMAT_VERSION {
        // A different layout: its checksum cannot be judged, and an older header must not be
        // used in place of a newer one, so the whole disk is refused.
        return Err(FormatError::UnsupportedVersion { slot, version });
    }
    let body_len = u32::from_le_bytes(field(12, 4).try_into().unwrap_or_default());
    let Some(len) = usize::try_from(body_len)
        .ok()
        .filter(|&len| len <= MAX_BODY_LEN)
    else {
        return Ok(Err(SlotDamage::BodyLength(body_len)));
    };
    let generation = u64::from_le_bytes(field(16, 8).try_into().unwrap_or_default());
    let covered = PREFIX_LEN + len;
    let expected = digest::digest(&digest::SHA256, &bytes[..covered]);
    if expected.as_ref() != field(covered, CHECKSUM_LEN) {
        return Ok(Err(SlotDamage::Checksum));
    }
    Ok(Ok(IntactSlot {
        generation,
        body: &bytes[PREFIX_LEN..covered],
    }))
}

/// Picks the current header from the header region (at least [`HEADER_REGION_LEN`] bytes):
/// the intact slot with the higher generation. Returns the header and its slot.
pub fn decode_region(region: &[u8]) -> Result<(Header, Slot), FormatError> {
    if region.len() < HEADER_REGION_LEN {
        return Err(FormatError::Truncated {
            field: "header region",
        });
    }
    let a = check_slot(Slot::A, &region[..SLOT_LEN])?;
    let b = check_slot(Slot::B, &region[SLOT_LEN..HEADER_REGION_LEN])?;
    let (slot, intact) = match (a, b) {
        (Ok(a), Ok(b)) if b.generation > a.generation => (Slot::B, b),
        (Ok(a), _) => (Slot::A, a),
        (Err(_), Ok(b)) => (Slot::B, b),
        (Err(SlotDamage::NoMagic), Err(SlotDamage::NoMagic)) => {
            return Err(FormatError::NotFormatted);
        }
        (Err(a), Err(b)) => return Err(FormatError::NoIntactSlot { a, b }),
    };
    let header = decode_body(intact.generation, intact.body)?;
    Ok((header, slot))
}

/// Reads fields off the front of a body.
struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, len: usize, field: &'static str) -> Result<&'a [u8], FormatError> {
        if self.rest.len() < len {
            return Err(FormatError::Truncated { field });
        }
        let (head, rest) = self.rest.split_at(len);
        self.rest = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], FormatError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N, field)?);
        Ok(out)
    }

    fn prefixed(&mut self, field: &'static str) -> Result<&'a [u8], FormatError> {
        let len = u16::from_le_bytes(self.array(field)?);
        self.take(usize::from(len), field)
    }

    fn text(&mut self, field: &'static str, layer: usize) -> Result<String, FormatError> {
        let bytes = self.prefixed(field)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| FormatError::NotUtf8 { field, layer })
    }
}

fn decode_body(generation: u64, body: &[u8]) -> Result<Header, FormatError> {
    let mut r = Reader { rest: body };
    let disk_id = DiskId(r.array("disk id")?);
    let size = u64::from_le_bytes(r.array("virtual size")?);
    let unit_len = u32::from_le_bytes(r.array("data unit length")?);
    if usize::try_from(unit_len).ok() != Some(DATA_UNIT_LEN) {
        return Err(FormatError::DataUnitLength { len: unit_len });
    }
    let data_offset = u64::from_le_bytes(r.array("data offset")?);
    let [count] = r.array("layer count")?;
    let count = usize::from(count);
    if count == 0 || count > MAX_LAYERS {
        return Err(FormatError::LayerCount { count });
    }
    let mut layers = Vec::with_capacity(count);
    let mut key_checks = Vec::with_capacity(count);
    for layer in 0..count {
        let [id] = r.array("cipher id")?;
        if id != CIPHER_AES_256_XTS_PLAIN64 {
            return Err(FormatError::UnknownCipher { layer, id });
        }
        key_checks.push(KeyCheck(r.array("key check")?));
        let key_id = r.text("key id", layer)?;
        let algorithm = r.text("algorithm", layer)?;
        let wrapped_key = r.prefixed("wrapped key")?.to_vec();
        layers.push(WrapLayer {
            key_id,
            algorithm,
            wrapped_key,
        });
    }
    if !r.rest.is_empty() {
        return Err(FormatError::TrailingBytes { len: r.rest.len() });
    }
    let header = Header {
        disk_id,
        size,
        layers,
        generation,
        data_offset,
        key_checks,
    };
    header.validate()?;
    Ok(header)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(generation: u64) -> Header {
        Header {
            disk_id: DiskId([7; 16]),
            size: 1 << 30,
            layers: vec![WrapLayer {
                key_id: "https://v.vault.example/keys/k/1".into(),
                algorithm: "RSA-OAEP-256".into(),
                wrapped_key: vec![0xaa; 256],
            }],
            generation,
            data_offset: DATA_OFFSET,
            key_checks: vec![KeyCheck([1; 32])],
        }
    }

    fn region(a: Option<&Header>, b: Option<&Header>) -> Vec<u8> {
        let mut out = vec![0u8; HEADER_REGION_LEN];
        if let Some(a) = a {
            out[..SLOT_LEN].copy_from_slice(&encode_slot(a).expect("encode"));
        }
        if let Some(b) = b {
            out[SLOT_LEN..].copy_from_slice(&encode_slot(b).expect("encode"));
        }
        out
    }

    #[test]
    fn round_trip_and_slot_choice() {
        let (h, slot) = decode_region(&region(Some(&header(1)), None)).expect("decode");
        assert_eq!((h, slot), (header(1), Slot::A));
        let (h, slot) = decode_region(&region(Some(&header(4)), Some(&header(5)))).expect("decode");
        assert_eq!((h.generation, slot), (5, Slot::B));
        let (h, slot) = decode_region(&region(Some(&header(9)), Some(&header(8)))).expect("decode");
        assert_eq!((h.generation, slot), (9, Slot::A));
    }

    #[test]
    fn empty_region_is_not_formatted() {
        assert!(matches!(
            decode_region(&[0u8; HEADER_REGION_LEN]),
            Err(FormatError::NotFormatted)
        ));
        assert!(matches!(
            decode_region(&[0u8; 100]),
            Err(FormatError::Truncated { .. })
        ));
    }

    #[test]
    fn every_single_byte_flip_in_the_covered_bytes_is_caught() {
        let good = encode_slot(&header(3)).expect("encode");
        let body_len = u32::from_le_bytes(good[12..16].try_into().expect("4 bytes")) as usize;
        for i in 0..PREFIX_LEN + body_len + CHECKSUM_LEN {
            let mut bad = good.clone();
            bad[i] ^= 0x10;
            let mut region = vec![0u8; HEADER_REGION_LEN];
            region[..SLOT_LEN].copy_from_slice(&bad);
            assert!(decode_region(&region).is_err(), "flip at byte {i} accepted");
        }
    }

    #[test]
    fn oversized_fields_are_refused_when_encoding() {
        let mut h = header(1);
        h.layers[0].wrapped_key = vec![0; MAX_BODY_LEN];
        assert!(matches!(
            encode_slot(&h),
            Err(FormatError::BodyTooLong { .. })
        ));
        h.layers[0].wrapped_key = vec![0; 70_000];
        assert!(matches!(
            encode_slot(&h),
            Err(FormatError::FieldTooLong { .. })
        ));
    }

    #[test]
    fn disk_id_displays_as_uuid() {
        let id = DiskId([
            0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0xde, 0xf0, 0x01, 0x23, 0x45, 0x67, 0x89, 0xab,
            0xcd, 0xef,
        ]);
        assert_eq!(id.to_string(), "12345678-9abc-def0-0123-456789abcdef");
    }

    #[test]
    fn key_check_binds_disk_and_layer() {
        let key = XtsKey::generate().expect("key");
        let other = XtsKey::generate().expect("key");
        let check = KeyCheck::compute(&key, DiskId([1; 16]), 0);
        assert!(check.matches(&key, DiskId([1; 16]), 0));
        assert!(!check.matches(&other, DiskId([1; 16]), 0));
        assert!(!check.matches(&key, DiskId([2; 16]), 0));
        assert!(!check.matches(&key, DiskId([1; 16]), 1));
    }
}
