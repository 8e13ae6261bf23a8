//! The encrypted block store: one file per disk, AES-256-XTS per 4096-byte data unit under
//! one or two data encryption keys (DEKs), thin-provisioned.
//!
//! - [`xts`]: the sector cipher (AES-256-XTS on AWS-LC, tweak = unit index, dm-crypt
//!   `plain64`).
//! - [`backend`]: where bytes live, behind the small [`Backend`] trait: [`FileBackend`] (a
//!   sparse file) and [`MemoryBackend`] (tests; simulates crashes and I/O faults).
//! - [`format`](mod@format): the versioned on-disk header (two checksummed slots), documented byte by byte
//!   in `docs/disk-format.md`.
//! - [`disk`]: [`Disk`], the encrypted disk: reads, writes, flush, trim, zeroing, block
//!   status, growth and re-wrapping of its keys.
//!
//! The crate receives DEKs and stores the caller's wrapped-key records without interpreting
//! them; it knows nothing about where keys come from.

pub mod backend;
pub mod disk;
pub mod format;
pub mod xts;

pub use backend::{Backend, FileBackend, MemoryBackend};
pub use disk::{Disk, Extent, StoreError};
pub use format::{DiskId, FormatError, Header, WrapLayer};
pub use xts::{DATA_UNIT_LEN, SectorCipher, UnitIndex, XtsKey};
