//! The only unsafe code of the crate: one AWS-LC `EVP_CIPHER_CTX` set up for AES-256-XTS.
//!
//! A [`XtsCtx`] owns its context, is keyed once (the AES key schedules are derived in
//! [`XtsCtx::new`]) and then processes one data unit per [`XtsCtx::crypt`], re-initialising
//! only the tweak (`EVP_CipherInit_ex(ctx, NULL, NULL, NULL, iv, -1)`), which AWS-LC accepts
//! for XTS and which resets its "one data unit per key/IV" guard.
#![allow(unsafe_code)]

use std::ffi::c_int;
use std::ptr;

use aws_lc_sys::{
    ERR_get_error, EVP_CIPHER_CTX, EVP_CIPHER_CTX_free, EVP_CIPHER_CTX_new, EVP_CipherInit_ex,
    EVP_CipherUpdate, EVP_aes_256_xts,
};

use super::XtsError;

/// Largest data unit AWS-LC accepts (IEEE 1619-2018 / SP 800-38E: 2^20 blocks).
pub(super) const MAX_DATA_UNIT_LEN: usize = (1 << 20) * 16;
/// Smallest data unit XTS defines: one AES block.
pub(super) const MIN_DATA_UNIT_LEN: usize = 16;

/// Direction a context was keyed for (the AES key schedule of key 1 differs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Direction {
    Encrypt,
    Decrypt,
}

/// An owned, keyed AWS-LC AES-256-XTS cipher context.
#[derive(Debug)]
pub(super) struct XtsCtx {
    ctx: *mut EVP_CIPHER_CTX,
    direction: Direction,
}

// SAFETY: the context is exclusively owned by this value (no aliases are handed out) and AWS-LC
// contexts hold no thread-affine state, so moving it to another thread is sound. It is not
// `Sync`: `crypt` takes `&mut self`, so no two threads use one context at once.
unsafe impl Send for XtsCtx {}

/// Pops the thread's most recent AWS-LC error code (0 if none) after a failed call.
fn last_error() -> u32 {
    // SAFETY: `ERR_get_error` only reads and pops this thread's error queue; no arguments.
    unsafe { ERR_get_error() }
}

impl XtsCtx {
    /// A context keyed with `key` (key 1 || key 2) for `direction`.
    ///
    /// AWS-LC itself rejects a key whose halves are equal; the caller checks that first.
    pub(super) fn new(key: &[u8; 64], direction: Direction) -> Result<Self, XtsError> {
        // SAFETY: no preconditions; a null return is handled below.
        let ctx = unsafe { EVP_CIPHER_CTX_new() };
        if ctx.is_null() {
            return Err(XtsError::Backend {
                operation: "EVP_CIPHER_CTX_new",
                code: last_error(),
            });
        }
        // Owned from here on, so it is freed on every error path below.
        let this = Self { ctx, direction };
        let enc: c_int = match direction {
            Direction::Encrypt => 1,
            Direction::Decrypt => 0,
        };
        // SAFETY: `this.ctx` is a valid, exclusively owned context; `EVP_aes_256_xts()` returns
        // a static cipher; `key` points at 64 readable bytes, the key length of that cipher;
        // a null engine and a null IV are allowed (the IV is set per data unit in `crypt`).
        let ok = unsafe {
            EVP_CipherInit_ex(
                this.ctx,
                EVP_aes_256_xts(),
                ptr::null_mut(),
                key.as_ptr(),
                ptr::null(),
                enc,
            )
        };
        if ok != 1 {
            return Err(XtsError::Backend {
                operation: "EVP_CipherInit_ex(key)",
                code: last_error(),
            });
        }
        Ok(this)
    }

    pub(super) fn direction(&self) -> Direction {
        self.direction
    }

    /// Encrypts or decrypts (per the context's direction) one data unit in place under `tweak`.
    pub(super) fn crypt(&mut self, tweak: &[u8; 16], data: &mut [u8]) -> Result<(), XtsError> {
        let len = Self::check_len(data.len())?;
        let buf = data.as_mut_ptr();
        // SAFETY: `buf` is valid for reads and writes of `len` bytes for the whole call (it
        // comes from the exclusive borrow `data`); input and output alias exactly, which the
        // XTS cipher supports (it works block by block, reading each block before writing it).
        unsafe { self.update(tweak, buf, buf, len) }
    }

    /// Like [`Self::crypt`], but reads `input` and writes the result to `output` (same length).
    pub(super) fn crypt_into(
        &mut self,
        tweak: &[u8; 16],
        input: &[u8],
        output: &mut [u8],
    ) -> Result<(), XtsError> {
        if input.len() != output.len() {
            return Err(XtsError::BufferLength { len: output.len() });
        }
        let len = Self::check_len(input.len())?;
        // SAFETY: `input` is valid for reads and `output` for writes of `len` bytes for the whole
        // call (a shared and an exclusive borrow, so they do not overlap).
        unsafe { self.update(tweak, output.as_mut_ptr(), input.as_ptr(), len) }
    }

    fn check_len(len: usize) -> Result<c_int, XtsError> {
        if !(MIN_DATA_UNIT_LEN..=MAX_DATA_UNIT_LEN).contains(&len) {
            return Err(XtsError::DataUnitLength { len });
        }
        c_int::try_from(len).map_err(|_| XtsError::DataUnitLength { len })
    }

    /// Sets the tweak and runs the cipher over one data unit of `len` bytes.
    ///
    /// # Safety
    ///
    /// `input` must be valid for reads and `output` for writes of `len` bytes for the whole
    /// call, and they must either not overlap or be the same pointer.
    unsafe fn update(
        &mut self,
        tweak: &[u8; 16],
        output: *mut u8,
        input: *const u8,
        len: c_int,
    ) -> Result<(), XtsError> {
        // SAFETY: `self.ctx` is a valid context keyed in `new` (cipher set, so a null cipher
        // keeps it); `tweak` points at 16 readable bytes, the IV length of AES-XTS; a null key
        // keeps the key schedules; `-1` keeps the direction.
        let ok = unsafe {
            EVP_CipherInit_ex(
                self.ctx,
                ptr::null(),
                ptr::null_mut(),
                ptr::null(),
                tweak.as_ptr(),
                -1,
            )
        };
        if ok != 1 {
            return Err(XtsError::Backend {
                operation: "EVP_CipherInit_ex(tweak)",
                code: last_error(),
            });
        }
        let mut out_len: c_int = 0;
        // SAFETY: the caller guarantees `input`/`output` are valid for `len` bytes and either
        // disjoint or identical (XTS processes block by block, reading each block before
        // writing it, so exact aliasing is fine); the cipher has block size 1, so at most `len`
        // bytes are written; `out_len` is a valid `c_int` to write.
        let ok = unsafe { EVP_CipherUpdate(self.ctx, output, &mut out_len, input, len) };
        if ok != 1 {
            return Err(XtsError::Backend {
                operation: "EVP_CipherUpdate",
                code: last_error(),
            });
        }
        if out_len != len {
            return Err(XtsError::Backend {
                operation: "EVP_CipherUpdate(length)",
                code: 0,
            });
        }
        Ok(())
    }
}

impl Drop for XtsCtx {
    fn drop(&mut self) {
        // SAFETY: `self.ctx` was returned by `EVP_CIPHER_CTX_new`, is owned only by `self` and is
        // freed exactly once, here. AWS-LC cleanses the cipher data (the key schedules) on free.
        unsafe { EVP_CIPHER_CTX_free(self.ctx) }
    }
}
