//! The sector cipher of the encrypted block store: AES-256-XTS (IEEE 1619, NIST SP 800-38E).
//!
//! # Data unit and tweak convention
//!
//! The disk is cut into *data units* of [`DATA_UNIT_LEN`] = 4096 bytes, numbered from 0 by
//! [`UnitIndex`]. Each unit is one XTS data unit, encrypted in place (ciphertext length =
//! plaintext length) under a 512-bit [`XtsKey`] (key 1 encrypts the data, key 2 the tweak).
//! The tweak of unit `n` is `n` as a 16-byte little-endian integer: dm-crypt's `plain64` IV
//! (and IEEE 1619's "data unit sequence number") with 4096-byte sectors counted in 4096-byte
//! steps, i.e. `cryptsetup --cipher aes-xts-plain64 --sector-size 4096 --iv-large-sectors`
//! (without `--iv-large-sectors`, dm-crypt counts the IV in 512-byte sectors). Unit `n`
//! covers bytes `4096 * n .. 4096 * (n + 1)` of the virtual disk.
//!
//! The AES work is done by AWS-LC (`EVP_aes_256_xts`) behind the small safe wrapper in `ffi`.

mod ffi;

use std::fmt;
use std::sync::{Mutex, PoisonError};

use zeroize::Zeroizing;

use self::ffi::{Direction, XtsCtx};

/// Bytes in one data unit (one encrypted sector of the block store).
pub const DATA_UNIT_LEN: usize = 4096;

/// Errors of the XTS sector cipher.
#[derive(Debug, thiserror::Error)]
pub enum XtsError {
    /// A key was not exactly 64 bytes (two AES-256 keys).
    #[error("an AES-256-XTS key is 64 bytes, got {len}")]
    KeyLength {
        /// The length supplied.
        len: usize,
    },
    /// The two 256-bit halves of a key were equal (IEEE 1619 / FIPS 140 forbid this).
    #[error("the two halves of an AES-256-XTS key must differ")]
    EqualKeyHalves,
    /// The random number generator failed while generating a key.
    #[error("generating an XTS key failed")]
    Rng(#[source] aws_lc_rs::error::Unspecified),
    /// A buffer passed as a run of units was not a multiple of [`DATA_UNIT_LEN`] bytes, or
    /// a single unit was not exactly [`DATA_UNIT_LEN`] bytes.
    #[error("buffer of {len} bytes is not a whole number of {DATA_UNIT_LEN}-byte data units")]
    BufferLength {
        /// The length supplied.
        len: usize,
    },
    /// A raw-tweak data unit was shorter than one AES block or longer than 2^20 blocks.
    #[error("XTS data unit of {len} bytes is outside 16 ..= 2^24 bytes")]
    DataUnitLength {
        /// The length supplied.
        len: usize,
    },
    /// A run of units would extend past unit index `u64::MAX`.
    #[error("a run of {units} units starting at unit {first} overflows the unit index")]
    UnitIndexOverflow {
        /// The first unit of the run.
        first: u64,
        /// The number of units in the run.
        units: usize,
    },
    /// AWS-LC reported a failure.
    #[error("AWS-LC {operation} failed (error code {code:#x})")]
    Backend {
        /// The AWS-LC call that failed.
        operation: &'static str,
        /// AWS-LC's packed error code (`ERR_get_error`), 0 if none was queued.
        code: u32,
    },
}

/// Index of a 4096-byte data unit on the virtual disk; also its XTS tweak.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct UnitIndex(pub u64);

impl UnitIndex {
    /// The XTS tweak of this unit: the index as 16 bytes little-endian (dm-crypt `plain64`).
    pub fn tweak(self) -> [u8; 16] {
        u128::from(self.0).to_le_bytes()
    }
}

/// A 512-bit AES-256-XTS data encryption key: key 1 (data) || key 2 (tweak).
///
/// The halves are guaranteed to differ. The bytes are zeroed on drop and never printed.
pub struct XtsKey(Zeroizing<[u8; 64]>);

impl XtsKey {
    /// Length of a key in bytes.
    pub const LEN: usize = 64;

    /// Takes a key from its 64 bytes (key 1 || key 2).
    ///
    /// Rejects other lengths and keys whose two 256-bit halves are equal.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, XtsError> {
        let mut key = Zeroizing::new([0u8; 64]);
        if bytes.len() != Self::LEN {
            return Err(XtsError::KeyLength { len: bytes.len() });
        }
        key.copy_from_slice(bytes);
        let key = Self(key);
        if key.halves_equal() {
            return Err(XtsError::EqualKeyHalves);
        }
        Ok(key)
    }

    /// A fresh random key from AWS-LC's CSPRNG.
    pub fn generate() -> Result<Self, XtsError> {
        loop {
            let mut key = Self(Zeroizing::new([0u8; 64]));
            aws_lc_rs::rand::fill(&mut key.0[..]).map_err(XtsError::Rng)?;
            // Equal halves happen with probability 2^-256; draw again rather than fail.
            if !key.halves_equal() {
                return Ok(key);
            }
        }
    }

    /// The key bytes, for wrapping under a key-encryption key. Handle as a secret.
    pub fn expose_bytes(&self) -> &[u8; 64] {
        &self.0
    }

    fn halves_equal(&self) -> bool {
        // Not secret-dependent timing that matters: the outcome is public (accept/reject), but
        // compare without early exit anyway.
        let (k1, k2) = self.0.split_at(32);
        k1.iter().zip(k2).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
    }
}

impl fmt::Debug for XtsKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("XtsKey(<redacted 512-bit AES-256-XTS key>)")
    }
}

/// A pool of keyed contexts for one direction: AWS-LC contexts are not thread-safe, so each
/// call takes one out (keying a new one only when all are in use) and puts it back.
struct CtxPool {
    direction: Direction,
    idle: Mutex<Vec<XtsCtx>>,
}

impl CtxPool {
    fn new(direction: Direction) -> Self {
        Self {
            direction,
            idle: Mutex::new(Vec::new()),
        }
    }

    fn with_ctx<T>(
        &self,
        key: &XtsKey,
        f: impl FnOnce(&mut XtsCtx) -> Result<T, XtsError>,
    ) -> Result<T, XtsError> {
        let taken = self
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        let mut ctx = match taken {
            Some(ctx) => ctx,
            None => XtsCtx::new(key.expose_bytes(), self.direction)?,
        };
        debug_assert_eq!(ctx.direction(), self.direction);
        let result = f(&mut ctx);
        // A context is reusable after a failed call (the next call re-initialises the tweak).
        self.idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(ctx);
        result
    }
}

/// AES-256-XTS over 4096-byte data units, tweak = unit index (see the module docs).
///
/// `Send + Sync`: methods take `&self` and may be called from many threads at once; each call
/// borrows a keyed AWS-LC context from an internal pool, so the key schedule is derived once
/// per context, not per unit.
pub struct SectorCipher {
    key: XtsKey,
    encrypt: CtxPool,
    decrypt: CtxPool,
}

impl fmt::Debug for SectorCipher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SectorCipher")
            .field("key", &self.key)
            .field("data_unit_len", &DATA_UNIT_LEN)
            .finish_non_exhaustive()
    }
}

impl SectorCipher {
    /// A cipher using `key`. Keys one encryption context eagerly, so AWS-LC problems surface here.
    pub fn new(key: XtsKey) -> Result<Self, XtsError> {
        let cipher = Self {
            key,
            encrypt: CtxPool::new(Direction::Encrypt),
            decrypt: CtxPool::new(Direction::Decrypt),
        };
        cipher.encrypt.with_ctx(&cipher.key, |_| Ok(()))?;
        Ok(cipher)
    }

    /// Encrypts one 4096-byte data unit in place.
    pub fn encrypt_unit(&self, unit: UnitIndex, data: &mut [u8]) -> Result<(), XtsError> {
        Self::check_unit(data)?;
        self.encrypt
            .with_ctx(&self.key, |ctx| ctx.crypt(&unit.tweak(), data))
    }

    /// Decrypts one 4096-byte data unit in place.
    pub fn decrypt_unit(&self, unit: UnitIndex, data: &mut [u8]) -> Result<(), XtsError> {
        Self::check_unit(data)?;
        self.decrypt
            .with_ctx(&self.key, |ctx| ctx.crypt(&unit.tweak(), data))
    }

    /// Encrypts consecutive units `first, first + 1, ...` in place; `data.len()` must be a
    /// multiple of 4096 (0 is allowed and does nothing).
    pub fn encrypt_units(&self, first: UnitIndex, data: &mut [u8]) -> Result<(), XtsError> {
        Self::run(&self.encrypt, &self.key, first, data)
    }

    /// Decrypts consecutive units `first, first + 1, ...` in place; see [`Self::encrypt_units`].
    pub fn decrypt_units(&self, first: UnitIndex, data: &mut [u8]) -> Result<(), XtsError> {
        Self::run(&self.decrypt, &self.key, first, data)
    }

    /// Encrypts consecutive units `first, first + 1, ...` of `plaintext` into `ciphertext`,
    /// which must have the same length, a multiple of 4096. Saves the copy that
    /// [`Self::encrypt_units`] needs when the plaintext must stay untouched.
    pub fn encrypt_units_into(
        &self,
        first: UnitIndex,
        plaintext: &[u8],
        ciphertext: &mut [u8],
    ) -> Result<(), XtsError> {
        if plaintext.len() != ciphertext.len() {
            return Err(XtsError::BufferLength {
                len: ciphertext.len(),
            });
        }
        let Some(last) = Self::last_unit(first, plaintext.len())? else {
            return Ok(());
        };
        self.encrypt.with_ctx(&self.key, |ctx| {
            let units = plaintext
                .chunks_exact(DATA_UNIT_LEN)
                .zip(ciphertext.chunks_exact_mut(DATA_UNIT_LEN));
            for (unit, (input, output)) in (first.0..=last).zip(units) {
                ctx.crypt_into(&UnitIndex(unit).tweak(), input, output)?;
            }
            Ok(())
        })
    }

    /// Encrypts one XTS data unit of any length in 16 ..= 2^24 bytes under a raw 128-bit tweak.
    ///
    /// Only for known-answer tests (NIST CAVP vectors use arbitrary tweaks); the block store
    /// uses [`Self::encrypt_unit`].
    #[doc(hidden)]
    pub fn encrypt_with_raw_tweak(
        &self,
        tweak: &[u8; 16],
        data: &mut [u8],
    ) -> Result<(), XtsError> {
        self.encrypt
            .with_ctx(&self.key, |ctx| ctx.crypt(tweak, data))
    }

    /// Inverse of [`Self::encrypt_with_raw_tweak`]; only for known-answer tests.
    #[doc(hidden)]
    pub fn decrypt_with_raw_tweak(
        &self,
        tweak: &[u8; 16],
        data: &mut [u8],
    ) -> Result<(), XtsError> {
        self.decrypt
            .with_ctx(&self.key, |ctx| ctx.crypt(tweak, data))
    }

    fn check_unit(data: &[u8]) -> Result<(), XtsError> {
        if data.len() == DATA_UNIT_LEN {
            Ok(())
        } else {
            Err(XtsError::BufferLength { len: data.len() })
        }
    }

    /// The last unit of a run of `len` bytes from `first`: `None` for an empty run, an error
    /// if `len` is not whole units or the run overflows the unit index.
    fn last_unit(first: UnitIndex, len: usize) -> Result<Option<u64>, XtsError> {
        if !len.is_multiple_of(DATA_UNIT_LEN) {
            return Err(XtsError::BufferLength { len });
        }
        let units = len / DATA_UNIT_LEN;
        if units == 0 {
            return Ok(None);
        }
        u64::try_from(units - 1)
            .ok()
            .and_then(|span| first.0.checked_add(span))
            .map(Some)
            .ok_or(XtsError::UnitIndexOverflow {
                first: first.0,
                units,
            })
    }

    fn run(
        pool: &CtxPool,
        key: &XtsKey,
        first: UnitIndex,
        data: &mut [u8],
    ) -> Result<(), XtsError> {
        let Some(last) = Self::last_unit(first, data.len())? else {
            return Ok(());
        };
        pool.with_ctx(key, |ctx| {
            for (unit, chunk) in (first.0..=last).zip(data.chunks_exact_mut(DATA_UNIT_LEN)) {
                ctx.crypt(&UnitIndex(unit).tweak(), chunk)?;
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(seed: u8) -> XtsKey {
        let bytes: Vec<u8> = (0..64u8)
            .map(|i| i.wrapping_mul(7).wrapping_add(seed))
            .collect();
        XtsKey::from_bytes(&bytes).expect("distinct halves")
    }

    #[test]
    fn tweak_is_plain64_little_endian() {
        let t = UnitIndex(0x0102_0304_0506_0708).tweak();
        assert_eq!(t[..8], [8, 7, 6, 5, 4, 3, 2, 1]);
        assert_eq!(t[8..], [0; 8]);
    }

    #[test]
    fn debug_redacts_key() {
        let k = XtsKey::from_bytes(
            &[0xab; 32]
                .iter()
                .chain(&[0xcd; 32])
                .copied()
                .collect::<Vec<_>>(),
        )
        .expect("valid");
        let key_shown = format!("{k:?}");
        let shown = format!("{key_shown} {:?}", SectorCipher::new(k).expect("cipher"));
        assert!(!shown.to_lowercase().contains("ab"), "{shown}");
        assert!(!shown.contains("171"), "{shown}");
    }

    #[test]
    fn aws_lc_itself_refuses_equal_halves() {
        // Our own check runs first; this pins that AWS-LC would refuse too.
        let err = XtsCtx::new(&[0x42; 64], Direction::Encrypt).expect_err("must refuse");
        assert!(matches!(err, XtsError::Backend { .. }), "{err:?}");
    }

    #[test]
    fn unit_index_overflow_is_an_error() {
        let c = SectorCipher::new(key(1)).expect("cipher");
        let mut buf = vec![0u8; 2 * DATA_UNIT_LEN];
        assert!(matches!(
            c.encrypt_units(UnitIndex(u64::MAX), &mut buf),
            Err(XtsError::UnitIndexOverflow { .. })
        ));
        c.encrypt_units(UnitIndex(u64::MAX), &mut buf[..DATA_UNIT_LEN])
            .expect("last unit is fine");
    }

    #[test]
    fn pool_reuses_contexts_across_threads() {
        let c = SectorCipher::new(key(2)).expect("cipher");
        let mut expect = vec![9u8; DATA_UNIT_LEN];
        c.encrypt_unit(UnitIndex(5), &mut expect).expect("encrypt");
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..50 {
                        let mut buf = vec![9u8; DATA_UNIT_LEN];
                        c.encrypt_unit(UnitIndex(5), &mut buf).expect("encrypt");
                        assert_eq!(buf, expect);
                        c.decrypt_unit(UnitIndex(5), &mut buf).expect("decrypt");
                        assert_eq!(buf, vec![9u8; DATA_UNIT_LEN]);
                    }
                });
            }
        });
        let idle = c
            .encrypt
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len();
        assert!((1..=5).contains(&idle), "{idle}");
    }

    #[test]
    fn encrypt_units_into_matches_in_place() {
        let c = SectorCipher::new(key(4)).expect("cipher");
        let plain: Vec<u8> = (0..3 * DATA_UNIT_LEN).map(|i| (i % 253) as u8).collect();
        let mut in_place = plain.clone();
        c.encrypt_units(UnitIndex(77), &mut in_place)
            .expect("encrypt");
        let mut out = vec![0u8; plain.len()];
        c.encrypt_units_into(UnitIndex(77), &plain, &mut out)
            .expect("encrypt into");
        assert_eq!(out, in_place);
        let mut short = vec![0u8; DATA_UNIT_LEN];
        assert!(matches!(
            c.encrypt_units_into(UnitIndex(0), &plain, &mut short),
            Err(XtsError::BufferLength { .. })
        ));
        c.encrypt_units_into(UnitIndex(0), &[], &mut [])
            .expect("empty run");
    }

    #[test]
    fn raw_tweak_rejects_out_of_range_lengths() {
        let c = SectorCipher::new(key(3)).expect("cipher");
        let mut short = [0u8; 15];
        assert!(matches!(
            c.encrypt_with_raw_tweak(&[0; 16], &mut short),
            Err(XtsError::DataUnitLength { len: 15 })
        ));
        // Ciphertext stealing: a non-multiple of 16 is fine and round-trips.
        let mut odd = [7u8; 17];
        c.encrypt_with_raw_tweak(&[1; 16], &mut odd)
            .expect("encrypt");
        c.decrypt_with_raw_tweak(&[1; 16], &mut odd)
            .expect("decrypt");
        assert_eq!(odd, [7u8; 17]);
    }
}
