//! The encrypted disk: a [`Header`] and AES-256-XTS data units over a [`Backend`].
//!
//! # Layout and layers
//!
//! Virtual byte `x` lives at `data_offset + x` of the backend; unit `n` covers virtual bytes
//! `4096 n .. 4096 (n + 1)` and is encrypted with tweak `n` under every layer's DEK in turn
//! (layer 0 first on write, last on read).
//!
//! # Thin provisioning
//!
//! A unit whose stored bytes are all zero reads as plaintext zeros and is not decrypted: that
//! is what a never-written or punched unit holds. A real ciphertext unit is all zero with
//! probability 2^-32768. Trims and zeroing punch whole units and rewrite partial ones.
//!
//! # Concurrency
//!
//! Every call takes `&self`. Writes that touch a unit hold that unit's stripe lock (one of
//! [`STRIPES`] mutexes, by unit index) while they store it, and a partial-unit write holds it
//! from its read to its write, so no write is lost to a concurrent read-modify-write.
//!
//! Reads take no lock. XTS encrypts each 16-byte block on its own, so a read racing a
//! read-modify-write of *other* bytes of the same unit decrypts its bytes right even from a
//! half-stored unit, except when the unit was a hole: half-stored ciphertext next to zeros is
//! not all zero, and the zero part would decrypt to noise. So each stripe also has a sequence
//! counter that a read-modify-write makes odd while it stores the unit; a read retries if a
//! counter it covers was odd or moved, and after a few tries takes the locks. Reads and writes
//! of the *same* bytes at the same time get no guarantee beyond whole 16-byte blocks, as on
//! any disk.
//!
//! # Durability
//!
//! [`Disk::flush`] and FUA writes call [`Backend::sync_data`]; header updates write the slot
//! that is not current and sync it before they return.

use std::cell::RefCell;
use std::fmt;
use std::io;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crate::backend::Backend;
use crate::format::{
    self, DATA_OFFSET, DiskId, FormatError, HEADER_REGION_LEN, Header, KeyCheck, MAX_LAYERS,
    MAX_SIZE, Slot, WrapLayer,
};
use crate::xts::{DATA_UNIT_LEN, SectorCipher, UnitIndex, XtsError, XtsKey};

/// Number of stripe locks; unit `n` uses stripe `n % STRIPES`.
pub const STRIPES: usize = 1024;

const UNIT: u64 = DATA_UNIT_LEN as u64;
/// Whole units encrypted and stored per backend write (1 MiB): requests up to 1 MiB are one
/// write each, so concurrent writers take the file's lock once per request, while the
/// per-thread write buffer stays bounded.
const CHUNK_UNITS: u64 = 256;
/// Whole units punched per backend call (256 MiB), so huge trims do not hold every stripe
/// lock for long.
const PUNCH_UNITS: u64 = 65_536;
/// Lock-free attempts of a read before it takes the stripe locks.
const OPTIMISTIC_READS: usize = 8;

/// Errors of the encrypted disk.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A request reaches past the end of the disk (or overflows).
    #[error("{len} bytes at offset {offset} are outside the disk of {size} bytes")]
    OutOfRange {
        /// Requested offset.
        offset: u64,
        /// Requested length.
        len: u64,
        /// The disk's size.
        size: u64,
    },
    /// A size is not a multiple of 512 or too large.
    #[error("disk size {size} must be a multiple of 512 and at most {MAX_SIZE}")]
    InvalidSize {
        /// The size asked for.
        size: u64,
    },
    /// A resize asked for a smaller size.
    #[error("disks only grow: {requested} is smaller than the current {size} bytes")]
    Shrink {
        /// The current size.
        size: u64,
        /// The size asked for.
        requested: u64,
    },
    /// The number of layers is not 1 or 2 (create) or differs from the disk's (rewrap).
    #[error("{count} layers given; expected {expected}")]
    LayerCount {
        /// Layers given.
        count: usize,
        /// Layers expected (for create: the maximum).
        expected: usize,
    },
    /// The number of keys given to open differs from the number of layers.
    #[error("{got} keys given for a disk with {expected} layers")]
    KeyCount {
        /// Layers of the disk.
        expected: usize,
        /// Keys given.
        got: usize,
    },
    /// Two layers were given the same DEK.
    #[error("every layer needs its own DEK")]
    DuplicateKey,
    /// A key does not match its layer's key check value.
    #[error("the key for layer {layer} is not this disk's DEK for that layer")]
    WrongKey {
        /// The layer.
        layer: usize,
    },
    /// `create` was given a backend that already holds bytes.
    #[error("refusing to create a disk over {len} existing bytes")]
    NotEmpty {
        /// The backend's length.
        len: u64,
    },
    /// The header on the backend is missing, damaged or of an unknown format.
    #[error("the disk header cannot be used")]
    InvalidHeader(#[source] FormatError),
    /// A new header could not be encoded (e.g. wrap records too large).
    #[error("the new disk header cannot be encoded")]
    EncodeHeader(#[source] FormatError),
    /// The header generation counter would overflow.
    #[error("the header generation counter is exhausted")]
    GenerationExhausted,
    /// The XTS cipher failed.
    #[error("the XTS cipher failed")]
    Cipher(#[source] XtsError),
    /// Reading the header region failed.
    #[error("reading the disk header failed")]
    ReadHeader(#[source] io::Error),
    /// Writing or syncing a header slot failed.
    #[error("writing header slot {slot} failed")]
    WriteHeader {
        /// The slot being written.
        slot: Slot,
        /// The backend error.
        #[source]
        source: io::Error,
    },
    /// Reading data failed.
    #[error("reading data at backend offset {offset} failed")]
    ReadData {
        /// Backend offset.
        offset: u64,
        /// The backend error.
        #[source]
        source: io::Error,
    },
    /// Writing data failed.
    #[error("writing data at backend offset {offset} failed")]
    WriteData {
        /// Backend offset.
        offset: u64,
        /// The backend error.
        #[source]
        source: io::Error,
    },
    /// Punching a hole failed.
    #[error("punching a hole at backend offset {offset} failed")]
    PunchHole {
        /// Backend offset.
        offset: u64,
        /// The backend error.
        #[source]
        source: io::Error,
    },
    /// `sync_data` failed: completed writes may not be on stable storage.
    #[error("syncing the disk to stable storage failed")]
    Sync(#[source] io::Error),
    /// Reading or setting the backend's length failed.
    #[error("reading or setting the backend length failed")]
    Length(#[source] io::Error),
    /// Querying allocation failed.
    #[error("querying allocation at backend offset {offset} failed")]
    Allocation {
        /// Backend offset.
        offset: u64,
        /// The backend error.
        #[source]
        source: io::Error,
    },
}

impl StoreError {
    /// The `io::ErrorKind` that describes this error: the caller's mistakes are
    /// `InvalidInput`, a bad header `InvalidData`, backend failures keep their own kind.
    pub fn io_kind(&self) -> io::ErrorKind {
        match self {
            Self::OutOfRange { .. }
            | Self::InvalidSize { .. }
            | Self::Shrink { .. }
            | Self::LayerCount { .. }
            | Self::KeyCount { .. }
            | Self::DuplicateKey
            | Self::WrongKey { .. }
            | Self::EncodeHeader(_) => io::ErrorKind::InvalidInput,
            Self::NotEmpty { .. } => io::ErrorKind::AlreadyExists,
            Self::InvalidHeader(_) => io::ErrorKind::InvalidData,
            Self::GenerationExhausted | Self::Cipher(_) => io::ErrorKind::Other,
            Self::ReadHeader(source)
            | Self::WriteHeader { source, .. }
            | Self::ReadData { source, .. }
            | Self::WriteData { source, .. }
            | Self::PunchHole { source, .. }
            | Self::Sync(source)
            | Self::Length(source)
            | Self::Allocation { source, .. } => source.kind(),
        }
    }
}

impl From<StoreError> for io::Error {
    fn from(err: StoreError) -> Self {
        io::Error::new(err.io_kind(), err)
    }
}

/// One extent of a [`Disk::block_status`] answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Extent {
    /// Length in bytes.
    pub len: u64,
    /// The range occupies no storage.
    pub hole: bool,
    /// The range reads as zeros.
    pub zero: bool,
}

/// A stripe: the lock that writers of its units hold, and the counter that tells readers a
/// read-modify-write stored a unit meanwhile. 16 bytes, packed: all 1024 fit in 16 KiB, which
/// stays in the L1 cache on the 4 KiB path (measured faster than one stripe per cache line).
#[derive(Default)]
struct Stripe {
    lock: Mutex<()>,
    seq: AtomicU64,
}

/// Locks held on stripes, released on drop; only held, never read. A single stripe needs no
/// allocation (`Vec::new` does not allocate).
struct Held<'a> {
    _first: MutexGuard<'a, ()>,
    _rest: Vec<MutexGuard<'a, ()>>,
}

/// A part of a request inside one unit.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Partial {
    unit: u64,
    /// Bytes of the unit.
    within: Range<usize>,
    /// Offset of the part in the request.
    at: u64,
}

/// The whole units of a request.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Whole {
    first: u64,
    units: u64,
    /// Offset of the first unit in the request.
    at: u64,
}

impl Whole {
    fn len(&self) -> u64 {
        self.units * UNIT
    }
}

/// A request cut at unit boundaries: a partial head unit, whole units, a partial tail unit.
#[derive(Debug, PartialEq, Eq)]
struct Pieces {
    head: Option<Partial>,
    whole: Option<Whole>,
    tail: Option<Partial>,
}

/// Cuts `offset..offset + len` (already checked not to overflow) at unit boundaries.
fn split(offset: u64, len: u64) -> Pieces {
    let end = offset + len;
    let mut pos = offset;
    let mut head = None;
    if len > 0 && (!pos.is_multiple_of(UNIT) || len < UNIT) {
        let unit = pos / UNIT;
        let start = pos % UNIT;
        let stop = (end - unit * UNIT).min(UNIT);
        // Both below 4096, so the casts are lossless.
        head = Some(Partial {
            unit,
            within: start as usize..stop as usize,
            at: 0,
        });
        pos = unit * UNIT + stop;
    }
    let units = (end - pos) / UNIT;
    let whole = (units > 0).then(|| Whole {
        first: pos / UNIT,
        units,
        at: pos - offset,
    });
    pos += units * UNIT;
    let tail = (pos < end).then(|| Partial {
        unit: pos / UNIT,
        within: 0..(end - pos) as usize,
        at: pos - offset,
    });
    Pieces { head, whole, tail }
}

/// Whether every byte is zero; exits at the first non-zero 64-byte block.
fn is_zero(bytes: &[u8]) -> bool {
    bytes
        .chunks(64)
        .all(|block| block.iter().fold(0u8, |acc, &b| acc | b) == 0)
}

/// Converts a request offset that indexes a buffer of known length.
fn idx(at: u64) -> usize {
    // Only called with offsets below a slice's length, which fits in `usize`.
    usize::try_from(at).unwrap_or(usize::MAX)
}

thread_local! {
    /// Per-thread buffer that whole units are encrypted in before they are stored.
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` on a buffer of `len` bytes (at most `CHUNK_UNITS` units), reusing the
/// thread's buffer (a fresh one if it is in use further up the stack).
fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [u8]) -> R) -> R {
    SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut buf) => {
            if buf.len() < len {
                buf.resize(len, 0);
            }
            f(&mut buf[..len])
        }
        Err(_) => f(&mut vec![0u8; len]),
    })
}

/// The header as last committed, and the slot it is in.
struct Committed {
    header: Header,
    slot: Slot,
}

/// An open encrypted disk. `Send + Sync`; see the module docs for concurrency.
pub struct Disk {
    backend: Arc<dyn Backend>,
    /// One cipher per layer, layer 0 first.
    ciphers: Vec<SectorCipher>,
    disk_id: DiskId,
    data_offset: u64,
    size: AtomicU64,
    committed: Mutex<Committed>,
    stripes: Box<[Stripe]>,
}

impl fmt::Debug for Disk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Disk")
            .field("disk_id", &self.disk_id)
            .field("size", &self.size())
            .field("layers", &self.ciphers.len())
            .field("backend", &self.backend)
            .finish_non_exhaustive()
    }
}

fn check_size(size: u64) -> Result<(), StoreError> {
    if size.is_multiple_of(512) && size <= MAX_SIZE {
        Ok(())
    } else {
        Err(StoreError::InvalidSize { size })
    }
}

impl Disk {
    /// Writes a new header (generation 1, slot A) for an empty disk of `size` bytes (a multiple
    /// of 512) with one XTS layer per `(DEK, wrap record)`, 1 or 2 layers, layer 0 applied first
    /// on write. The backend must be empty. Returns the open disk.
    pub fn create(
        backend: Arc<dyn Backend>,
        disk_id: DiskId,
        size: u64,
        layers: Vec<(XtsKey, WrapLayer)>,
    ) -> Result<Disk, StoreError> {
        if layers.is_empty() || layers.len() > MAX_LAYERS {
            return Err(StoreError::LayerCount {
                count: layers.len(),
                expected: MAX_LAYERS,
            });
        }
        check_size(size)?;
        for (i, (a, _)) in layers.iter().enumerate() {
            if layers[i + 1..]
                .iter()
                .any(|(b, _)| a.expose_bytes() == b.expose_bytes())
            {
                return Err(StoreError::DuplicateKey);
            }
        }
        let len = backend.len().map_err(StoreError::Length)?;
        if len != 0 {
            return Err(StoreError::NotEmpty { len });
        }
        let key_checks = layers
            .iter()
            .enumerate()
            .map(|(layer, (key, _))| KeyCheck::compute(key, disk_id, layer))
            .collect();
        let (keys, wraps): (Vec<XtsKey>, Vec<WrapLayer>) = layers.into_iter().unzip();
        let header = Header {
            disk_id,
            size,
            layers: wraps,
            generation: 1,
            data_offset: DATA_OFFSET,
            key_checks,
        };
        let slot = format::encode_slot(&header).map_err(StoreError::EncodeHeader)?;
        let ciphers = Self::ciphers(keys)?;
        backend
            .set_len(Self::backend_len(DATA_OFFSET, size)?)
            .map_err(StoreError::Length)?;
        let write_header = |source| StoreError::WriteHeader {
            slot: Slot::A,
            source,
        };
        backend
            .write_at(&slot, Slot::A.offset())
            .map_err(write_header)?;
        backend.sync_data().map_err(write_header)?;
        Ok(Self::assemble(backend, header, Slot::A, ciphers))
    }

    /// Reads and validates the current header, so the caller can unwrap the DEKs.
    pub fn read_header(backend: &dyn Backend) -> Result<Header, StoreError> {
        Self::read_committed(backend).map(|c| c.header)
    }

    fn read_committed(backend: &dyn Backend) -> Result<Committed, StoreError> {
        let mut region = [0u8; HEADER_REGION_LEN];
        backend
            .read_at(&mut region, 0)
            .map_err(StoreError::ReadHeader)?;
        let (header, slot) = format::decode_region(&region).map_err(StoreError::InvalidHeader)?;
        Ok(Committed { header, slot })
    }

    /// Opens the disk with its unwrapped DEKs in the header's layer order. Each key is checked
    /// against its layer's key check value.
    pub fn open(backend: Arc<dyn Backend>, keys: Vec<XtsKey>) -> Result<Disk, StoreError> {
        let Committed { header, slot } = Self::read_committed(backend.as_ref())?;
        if keys.len() != header.layers.len() {
            return Err(StoreError::KeyCount {
                expected: header.layers.len(),
                got: keys.len(),
            });
        }
        for (layer, (key, check)) in keys.iter().zip(&header.key_checks).enumerate() {
            if !check.matches(key, header.disk_id, layer) {
                return Err(StoreError::WrongKey { layer });
            }
        }
        let ciphers = Self::ciphers(keys)?;
        Ok(Self::assemble(backend, header, slot, ciphers))
    }

    /// The backend length for a disk of `size` bytes: whole units, so that no unit straddles
    /// the end (a crash could otherwise keep part of a unit's ciphertext and not the rest).
    fn backend_len(data_offset: u64, size: u64) -> Result<u64, StoreError> {
        size.div_ceil(UNIT)
            .checked_mul(UNIT)
            .and_then(|len| len.checked_add(data_offset))
            .ok_or(StoreError::InvalidSize { size })
    }

    fn ciphers(keys: Vec<XtsKey>) -> Result<Vec<SectorCipher>, StoreError> {
        keys.into_iter()
            .map(|key| SectorCipher::new(key).map_err(StoreError::Cipher))
            .collect()
    }

    fn assemble(
        backend: Arc<dyn Backend>,
        header: Header,
        slot: Slot,
        ciphers: Vec<SectorCipher>,
    ) -> Disk {
        Disk {
            backend,
            ciphers,
            disk_id: header.disk_id,
            data_offset: header.data_offset,
            size: AtomicU64::new(header.size),
            committed: Mutex::new(Committed { header, slot }),
            stripes: (0..STRIPES).map(|_| Stripe::default()).collect(),
        }
    }

    /// The current header.
    pub fn header(&self) -> Header {
        self.committed().header.clone()
    }

    /// The disk's identity.
    pub fn disk_id(&self) -> DiskId {
        self.disk_id
    }

    /// Virtual size in bytes.
    pub fn size(&self) -> u64 {
        self.size.load(Ordering::Acquire)
    }

    /// Number of XTS layers (2 = double encryption).
    pub fn layer_count(&self) -> usize {
        self.ciphers.len()
    }

    fn committed(&self) -> MutexGuard<'_, Committed> {
        self.committed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    // ---- request plumbing ----

    fn check_range(&self, offset: u64, len: u64) -> Result<(), StoreError> {
        let size = self.size();
        match offset.checked_add(len) {
            Some(end) if end <= size => Ok(()),
            _ => Err(StoreError::OutOfRange { offset, len, size }),
        }
    }

    /// Backend offset of unit `unit`.
    fn unit_pos(&self, unit: u64) -> Result<u64, StoreError> {
        unit.checked_mul(UNIT)
            .and_then(|at| at.checked_add(self.data_offset))
            .ok_or(StoreError::OutOfRange {
                offset: unit.saturating_mul(UNIT),
                len: UNIT,
                size: self.size(),
            })
    }

    fn stripe(&self, unit: u64) -> &Stripe {
        // The remainder is below `STRIPES`, so the cast is lossless.
        &self.stripes[(unit % STRIPES as u64) as usize]
    }

    /// Locks the stripes of `count` units from `first`, in ascending stripe order (the one
    /// order every multi-stripe locker uses, so lockers cannot deadlock).
    fn lock_units(&self, first: u64, count: u64) -> Held<'_> {
        let lock = |i: usize| {
            self.stripes[i]
                .lock
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
        };
        // Both below `STRIPES`, so the casts are lossless.
        let n = count.min(STRIPES as u64) as usize;
        let start = (first % STRIPES as u64) as usize;
        if n <= 1 {
            // The 4 KiB path: no allocation, no iterator.
            return Held {
                _first: lock(start),
                _rest: Vec::new(),
            };
        }
        // Ascending: the wrapped part (from stripe 0) first, then the rest up to the end.
        let (low, high) = if start + n <= STRIPES {
            (start..start + n, 0..0)
        } else {
            (0..start + n - STRIPES, start..STRIPES)
        };
        let first_stripe = low.start;
        let first_guard = lock(first_stripe);
        let mut rest = Vec::with_capacity(n - 1);
        for i in (low.start + 1..low.end).chain(high) {
            rest.push(lock(i));
        }
        Held {
            _first: first_guard,
            _rest: rest,
        }
    }

    /// Sum of the sequence counters of the stripes of `count` units from `first`, or `None`
    /// if a read-modify-write is storing one of them right now.
    fn seq_sum(&self, first: u64, count: u64) -> Option<u64> {
        let mut sum = 0u64;
        for i in 0..count.min(STRIPES as u64) {
            let seq = self
                .stripe(first.wrapping_add(i))
                .seq
                .load(Ordering::SeqCst);
            if seq & 1 == 1 {
                return None;
            }
            sum = sum.wrapping_add(seq);
        }
        Some(sum)
    }

    /// Runs the backend reads `f` so that no read-modify-write stores one of the `count`
    /// units from `first` meanwhile: optimistically, then under the stripe locks.
    fn stable_read(
        &self,
        first: u64,
        count: u64,
        f: &mut dyn FnMut() -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        for _ in 0..OPTIMISTIC_READS {
            let Some(before) = self.seq_sum(first, count) else {
                std::thread::yield_now();
                continue;
            };
            f()?;
            // Counters only grow, so an equal sum means none moved.
            if self.seq_sum(first, count) == Some(before) {
                return Ok(());
            }
        }
        let _held = self.lock_units(first, count);
        f()
    }

    /// Encrypts plaintext units from `first` in place: layer 0 first.
    fn encrypt_run(&self, first: u64, buf: &mut [u8]) -> Result<(), StoreError> {
        for cipher in &self.ciphers {
            cipher
                .encrypt_units(UnitIndex(first), buf)
                .map_err(StoreError::Cipher)?;
        }
        Ok(())
    }

    /// Decrypts stored units from `first` in place, last layer first; all-zero units are
    /// holes and read as zeros, so they are left as they are.
    fn decrypt_run(&self, first: u64, buf: &mut [u8]) -> Result<(), StoreError> {
        let units = buf.len() / DATA_UNIT_LEN;
        let is_hole = |buf: &[u8], i: usize| is_zero(&buf[i * DATA_UNIT_LEN..][..DATA_UNIT_LEN]);
        let mut i = 0;
        while i < units {
            if is_hole(buf, i) {
                i += 1;
                continue;
            }
            let start = i;
            while i < units && !is_hole(buf, i) {
                i += 1;
            }
            let run = &mut buf[start * DATA_UNIT_LEN..i * DATA_UNIT_LEN];
            let unit = UnitIndex(first + start as u64);
            for cipher in self.ciphers.iter().rev() {
                cipher
                    .decrypt_units(unit, run)
                    .map_err(StoreError::Cipher)?;
            }
        }
        Ok(())
    }

    // ---- reads ----

    /// Fills `buf` with the plaintext at `offset`.
    pub fn read(&self, offset: u64, buf: &mut [u8]) -> Result<(), StoreError> {
        let len = buf.len() as u64;
        self.check_range(offset, len)?;
        if len == 0 {
            return Ok(());
        }
        let pieces = split(offset, len);
        match pieces {
            Pieces {
                head: None,
                whole: Some(whole),
                tail: None,
            } => self.read_whole(&whole, buf),
            pieces => self.read_pieces(offset, len, &pieces, buf),
        }
    }

    /// The aligned path: one backend read and one decryption per run of non-zero units.
    fn read_whole(&self, whole: &Whole, buf: &mut [u8]) -> Result<(), StoreError> {
        let pos = self.unit_pos(whole.first)?;
        self.stable_read(whole.first, whole.units, &mut || {
            self.backend
                .read_at(buf, pos)
                .map_err(|source| StoreError::ReadData {
                    offset: pos,
                    source,
                })
        })?;
        self.decrypt_run(whole.first, buf)
    }

    fn read_pieces(
        &self,
        offset: u64,
        len: u64,
        pieces: &Pieces,
        buf: &mut [u8],
    ) -> Result<(), StoreError> {
        let first = offset / UNIT;
        let count = (offset + len).div_ceil(UNIT) - first;
        let mut head = [0u8; DATA_UNIT_LEN];
        let mut tail = [0u8; DATA_UNIT_LEN];
        let head_pos = pieces
            .head
            .as_ref()
            .map(|p| self.unit_pos(p.unit))
            .transpose()?;
        let tail_pos = pieces
            .tail
            .as_ref()
            .map(|p| self.unit_pos(p.unit))
            .transpose()?;
        let whole_pos = pieces
            .whole
            .as_ref()
            .map(|w| self.unit_pos(w.first))
            .transpose()?;
        let read = |dst: &mut [u8], pos: u64| {
            self.backend
                .read_at(dst, pos)
                .map_err(|source| StoreError::ReadData {
                    offset: pos,
                    source,
                })
        };
        self.stable_read(first, count, &mut || {
            if let Some(pos) = head_pos {
                read(&mut head, pos)?;
            }
            if let (Some(w), Some(pos)) = (&pieces.whole, whole_pos) {
                read(&mut buf[idx(w.at)..idx(w.at + w.len())], pos)?;
            }
            if let Some(pos) = tail_pos {
                read(&mut tail, pos)?;
            }
            Ok(())
        })?;
        for (part, unit_buf) in [(&pieces.head, &mut head), (&pieces.tail, &mut tail)] {
            if let Some(p) = part {
                self.decrypt_run(p.unit, unit_buf)?;
                let at = idx(p.at);
                buf[at..at + p.within.len()].copy_from_slice(&unit_buf[p.within.clone()]);
            }
        }
        if let Some(w) = &pieces.whole {
            self.decrypt_run(w.first, &mut buf[idx(w.at)..idx(w.at + w.len())])?;
        }
        Ok(())
    }

    // ---- writes ----

    /// Writes `data` at `offset`; with `fua`, returns only once it is on stable storage.
    pub fn write(&self, offset: u64, data: &[u8], fua: bool) -> Result<(), StoreError> {
        if let Some(w) = self.write_partial_units(offset, data)? {
            let src = &data[idx(w.at)..idx(w.at + w.len())];
            self.store_whole(w.first, w.units, Some(src))?;
        }
        if fua {
            self.flush()?;
        }
        Ok(())
    }

    /// Like [`Disk::write`], but whole units are encrypted in `data` itself, which holds
    /// ciphertext afterwards: no copy and no second buffer, so less memory traffic for large
    /// writes.
    pub fn write_in_place(
        &self,
        offset: u64,
        data: &mut [u8],
        fua: bool,
    ) -> Result<(), StoreError> {
        if let Some(w) = self.write_partial_units(offset, data)? {
            for (i, chunk) in data[idx(w.at)..idx(w.at + w.len())]
                .chunks_mut(idx(CHUNK_UNITS * UNIT))
                .enumerate()
            {
                let unit = w.first + i as u64 * CHUNK_UNITS;
                self.encrypt_run(unit, chunk)?;
                self.put_units(unit, chunk)?;
            }
        }
        if fua {
            self.flush()?;
        }
        Ok(())
    }

    /// Checks the range of a write of `data` at `offset` and writes its partial head and tail
    /// units by read-modify-write; returns its whole units, which are the caller's to store.
    fn write_partial_units(&self, offset: u64, data: &[u8]) -> Result<Option<Whole>, StoreError> {
        let len = data.len() as u64;
        self.check_range(offset, len)?;
        let pieces = split(offset, len);
        if let Some(p) = &pieces.head {
            let src = &data[..p.within.len()];
            self.modify_unit(p.unit, false, |unit| {
                unit[p.within.clone()].copy_from_slice(src)
            })?;
        }
        if let Some(p) = &pieces.tail {
            let src = &data[idx(p.at)..];
            self.modify_unit(p.unit, false, |unit| {
                unit[p.within.clone()].copy_from_slice(src)
            })?;
        }
        Ok(pieces.whole)
    }

    /// Stores the ciphertext of whole units from `unit` in one backend write, under their
    /// stripe locks.
    fn put_units(&self, unit: u64, ciphertext: &[u8]) -> Result<(), StoreError> {
        let pos = self.unit_pos(unit)?;
        let _held = self.lock_units(unit, ciphertext.len() as u64 / UNIT);
        self.backend
            .write_at(ciphertext, pos)
            .map_err(|source| StoreError::WriteData {
                offset: pos,
                source,
            })
    }

    /// Encrypts and stores `units` whole units from `first` holding `plain` (`None`: zeros),
    /// chunk by chunk through the thread's buffer.
    fn store_whole(&self, first: u64, units: u64, plain: Option<&[u8]>) -> Result<(), StoreError> {
        let chunk_len = idx(units.min(CHUNK_UNITS) * UNIT);
        with_scratch(chunk_len, |scratch| {
            let mut done = 0u64;
            while done < units {
                let n = (units - done).min(CHUNK_UNITS);
                let unit = first + done;
                let buf = &mut scratch[..idx(n * UNIT)];
                match plain {
                    Some(plain) => {
                        // Layer 0 encrypts straight from the caller's buffer, saving a copy.
                        let src = &plain[idx(done * UNIT)..][..buf.len()];
                        let (layer0, rest) =
                            self.ciphers.split_first().ok_or(StoreError::LayerCount {
                                count: 0,
                                expected: 1,
                            })?;
                        layer0
                            .encrypt_units_into(UnitIndex(unit), src, buf)
                            .map_err(StoreError::Cipher)?;
                        for cipher in rest {
                            cipher
                                .encrypt_units(UnitIndex(unit), buf)
                                .map_err(StoreError::Cipher)?;
                        }
                    }
                    None => {
                        buf.fill(0);
                        self.encrypt_run(unit, buf)?;
                    }
                }
                self.put_units(unit, buf)?;
                done += n;
            }
            Ok(())
        })
    }

    /// Read-modify-write of one unit under its stripe lock. With `to_hole`, a unit whose
    /// plaintext ends up all zero is punched instead of stored.
    fn modify_unit(
        &self,
        unit: u64,
        to_hole: bool,
        modify: impl FnOnce(&mut [u8]),
    ) -> Result<(), StoreError> {
        let pos = self.unit_pos(unit)?;
        let stripe = self.stripe(unit);
        let _held = stripe.lock.lock().unwrap_or_else(PoisonError::into_inner);
        let mut buf = [0u8; DATA_UNIT_LEN];
        self.backend
            .read_at(&mut buf, pos)
            .map_err(|source| StoreError::ReadData {
                offset: pos,
                source,
            })?;
        let was_hole = is_zero(&buf);
        if !was_hole {
            for cipher in self.ciphers.iter().rev() {
                cipher
                    .decrypt_unit(UnitIndex(unit), &mut buf)
                    .map_err(StoreError::Cipher)?;
            }
        }
        modify(&mut buf);
        let punch = to_hole && is_zero(&buf);
        if punch && was_hole {
            return Ok(());
        }
        if !punch {
            self.encrypt_run(unit, &mut buf)?;
        }
        // Odd while the unit is being stored: lock-free readers of this stripe retry.
        stripe.seq.fetch_add(1, Ordering::SeqCst);
        let stored = if punch {
            self.backend
                .punch_hole(pos, UNIT)
                .map_err(|source| StoreError::PunchHole {
                    offset: pos,
                    source,
                })
        } else {
            self.backend
                .write_at(&buf, pos)
                .map_err(|source| StoreError::WriteData {
                    offset: pos,
                    source,
                })
        };
        stripe.seq.fetch_add(1, Ordering::SeqCst);
        stored
    }

    /// Returns once every completed write is on stable storage.
    pub fn flush(&self) -> Result<(), StoreError> {
        self.backend.sync_data().map_err(StoreError::Sync)
    }

    /// Discards `offset..offset + len`: whole units become holes, partial units are zeroed.
    /// Afterwards the range reads as zeros.
    pub fn trim(&self, offset: u64, len: u64) -> Result<(), StoreError> {
        self.zero_range(offset, len, true)
    }

    /// Makes `offset..offset + len` read as zeros: like [`Self::trim`], or with `no_hole` by
    /// storing encrypted zeros. With `fua`, returns only once that is on stable storage.
    pub fn write_zeroes(
        &self,
        offset: u64,
        len: u64,
        no_hole: bool,
        fua: bool,
    ) -> Result<(), StoreError> {
        self.zero_range(offset, len, !no_hole)?;
        if fua {
            self.flush()?;
        }
        Ok(())
    }

    fn zero_range(&self, offset: u64, len: u64, punch: bool) -> Result<(), StoreError> {
        self.check_range(offset, len)?;
        let pieces = split(offset, len);
        for p in [&pieces.head, &pieces.tail].into_iter().flatten() {
            self.modify_unit(p.unit, punch, |unit| unit[p.within.clone()].fill(0))?;
        }
        let Some(w) = &pieces.whole else {
            return Ok(());
        };
        if !punch {
            return self.store_whole(w.first, w.units, None);
        }
        let mut done = 0u64;
        while done < w.units {
            let n = (w.units - done).min(PUNCH_UNITS);
            let unit = w.first + done;
            let pos = self.unit_pos(unit)?;
            let _held = self.lock_units(unit, n);
            self.backend
                .punch_hole(pos, n * UNIT)
                .map_err(|source| StoreError::PunchHole {
                    offset: pos,
                    source,
                })?;
            done += n;
        }
        Ok(())
    }

    /// The allocation of `offset..offset + len` at unit granularity: extents that exactly
    /// cover the range, holes (which read as zeros) and data. Empty for `len == 0`.
    pub fn block_status(&self, offset: u64, len: u64) -> Result<Vec<Extent>, StoreError> {
        self.check_range(offset, len)?;
        let mut extents: Vec<Extent> = Vec::new();
        if len == 0 {
            return Ok(extents);
        }
        let end = offset + len;
        let first = offset / UNIT;
        let span = (end.div_ceil(UNIT) - first) * UNIT;
        let pos = self.unit_pos(first)?;
        let runs = self
            .backend
            .allocated(pos, span)
            .map_err(|source| StoreError::Allocation {
                offset: pos,
                source,
            })?;
        let mut push = |len: u64, data: bool| {
            if len == 0 {
                return;
            }
            match extents.last_mut() {
                Some(last) if last.hole != data => last.len += len,
                _ => extents.push(Extent {
                    len,
                    hole: !data,
                    zero: !data,
                }),
            }
        };
        // Virtual bytes up to `done` are reported. A unit with any data is data.
        let mut done = offset;
        for (run_pos, run_len, is_data) in runs {
            if !is_data {
                continue;
            }
            let Some(start) = run_pos.checked_sub(self.data_offset) else {
                continue;
            };
            let stop = start.saturating_add(run_len);
            let start = (start / UNIT * UNIT).max(done);
            let stop = stop.div_ceil(UNIT).saturating_mul(UNIT).min(end);
            if start >= stop {
                continue;
            }
            push(start - done, false);
            push(stop - start, true);
            done = stop;
        }
        push(end - done, false);
        Ok(extents)
    }

    // ---- header updates ----

    /// Grows the disk to `new_size` bytes (a multiple of 512); the new space reads as zeros.
    /// Crash-safe: the new size is committed by a synced header update.
    pub fn resize(&self, new_size: u64) -> Result<(), StoreError> {
        check_size(new_size)?;
        let mut committed = self.committed();
        let size = committed.header.size;
        if new_size < size {
            return Err(StoreError::Shrink {
                size,
                requested: new_size,
            });
        }
        if new_size == size {
            return Ok(());
        }
        let file_len = Self::backend_len(self.data_offset, new_size)?;
        if self.backend.len().map_err(StoreError::Length)? < file_len {
            self.backend.set_len(file_len).map_err(StoreError::Length)?;
        }
        let mut header = committed.header.clone();
        header.size = new_size;
        self.commit(&mut committed, header)?;
        self.size.store(new_size, Ordering::Release);
        Ok(())
    }

    /// Replaces the wrap records (the same DEKs, re-wrapped by the caller) with a crash-safe
    /// header update; no data is touched.
    pub fn rewrap(&self, layers: Vec<WrapLayer>) -> Result<(), StoreError> {
        if layers.len() != self.ciphers.len() {
            return Err(StoreError::LayerCount {
                count: layers.len(),
                expected: self.ciphers.len(),
            });
        }
        let mut committed = self.committed();
        let mut header = committed.header.clone();
        header.layers = layers;
        self.commit(&mut committed, header)
    }

    /// Replaces the wrap records of a disk that is not open (no DEKs needed): the same
    /// crash-safe header update as [`Disk::rewrap`]. The caller makes sure nobody opens the
    /// disk meanwhile (an open disk must be re-wrapped through its `Disk`).
    pub fn rewrap_closed(backend: &dyn Backend, layers: Vec<WrapLayer>) -> Result<(), StoreError> {
        let mut committed = Self::read_committed(backend)?;
        if layers.len() != committed.header.layers.len() {
            return Err(StoreError::LayerCount {
                count: layers.len(),
                expected: committed.header.layers.len(),
            });
        }
        let mut header = committed.header.clone();
        header.layers = layers;
        commit_to(backend, &mut committed, header)
    }

    fn commit(&self, committed: &mut Committed, header: Header) -> Result<(), StoreError> {
        commit_to(self.backend.as_ref(), committed, header)
    }
}

/// Writes `header` with the next generation into the slot that is not current, syncs it, and
/// makes it current. On error the committed header stays as it was in memory; on disk the
/// other slot may or may not hold the new header.
fn commit_to(
    backend: &dyn Backend,
    committed: &mut Committed,
    mut header: Header,
) -> Result<(), StoreError> {
    header.generation = committed
        .header
        .generation
        .checked_add(1)
        .ok_or(StoreError::GenerationExhausted)?;
    let bytes = format::encode_slot(&header).map_err(StoreError::EncodeHeader)?;
    let slot = committed.slot.other();
    let failed = |source| StoreError::WriteHeader { slot, source };
    backend.write_at(&bytes, slot.offset()).map_err(failed)?;
    backend.sync_data().map_err(failed)?;
    *committed = Committed { header, slot };
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn partial(unit: u64, within: Range<usize>, at: u64) -> Option<Partial> {
        Some(Partial { unit, within, at })
    }

    #[test]
    fn split_cuts_at_unit_boundaries() {
        assert_eq!(
            split(0, 4096),
            Pieces {
                head: None,
                whole: Some(Whole {
                    first: 0,
                    units: 1,
                    at: 0
                }),
                tail: None
            }
        );
        assert_eq!(
            split(512, 512),
            Pieces {
                head: partial(0, 512..1024, 0),
                whole: None,
                tail: None
            }
        );
        assert_eq!(
            split(4096, 100),
            Pieces {
                head: partial(1, 0..100, 0),
                whole: None,
                tail: None
            }
        );
        assert_eq!(
            split(4000, 2 * 4096 + 200),
            Pieces {
                head: partial(0, 4000..4096, 0),
                whole: Some(Whole {
                    first: 1,
                    units: 2,
                    at: 96
                }),
                tail: partial(3, 0..104, 96 + 8192),
            }
        );
        assert_eq!(
            split(4000, 200),
            Pieces {
                head: partial(0, 4000..4096, 0),
                whole: None,
                tail: partial(1, 0..104, 96),
            }
        );
        assert_eq!(
            split(0, 0),
            Pieces {
                head: None,
                whole: None,
                tail: None
            }
        );
    }

    #[test]
    fn zero_detection() {
        let mut unit = [0u8; DATA_UNIT_LEN];
        assert!(is_zero(&unit));
        unit[DATA_UNIT_LEN - 1] = 1;
        assert!(!is_zero(&unit));
    }

    #[test]
    fn disk_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<Disk>();
    }

    #[test]
    fn lock_units_orders_stripes_across_the_wrap() {
        let backend: Arc<dyn Backend> = Arc::new(crate::backend::MemoryBackend::new());
        let wrap = WrapLayer {
            key_id: "k".into(),
            algorithm: "test".into(),
            wrapped_key: vec![1],
        };
        let disk = Disk::create(
            backend,
            DiskId([0; 16]),
            8192,
            vec![(XtsKey::generate().expect("key"), wrap)],
        )
        .expect("create");
        for (first, count) in [(1020, 10), (0, 5000), (5, 1), (1023, 2)] {
            let held = disk.lock_units(first, count);
            assert_eq!(1 + held._rest.len() as u64, count.min(STRIPES as u64));
            // While held, every stripe covered is locked.
            for i in 0..count.min(STRIPES as u64) {
                assert!(disk.stripe(first + i).lock.try_lock().is_err());
            }
        }
    }
}
