//! Private keys at rest: AES-256-GCM under a key derived from the platform root key, bound to
//! a caller-chosen context. Sans-I/O: bytes in, bytes out.
//!
//! # Sealing key
//!
//! The root key is never used directly. The sealing key is HKDF-SHA256 (RFC 5869) of the
//! 32-byte platform root key with an empty salt and `info` = the ASCII bytes
//! `sealdisk key sealing v1`, 32 bytes of output:
//!
//! ```text
//! PRK         = HMAC-SHA256(key = 32 zero bytes, message = root key)
//! sealing key = HMAC-SHA256(key = PRK, message = "sealdisk key sealing v1" || 0x01)
//! ```
//!
//! # Sealed format, version 1
//!
//! ```text
//! offset  length  field
//! 0       1       format version, 0x01
//! 1       12      nonce, random for every seal
//! 13      n       AES-256-GCM ciphertext of the n-byte plaintext
//! 13+n    16      AES-256-GCM tag
//! ```
//!
//! The additional authenticated data is the caller's `context`, byte for byte; it is not
//! stored. Callers bind what the plaintext belongs to (vault, key name, version), so a sealed
//! blob copied to another key's record does not open. Any version byte other than 1 is
//! refused before decryption. Sealed data is at least [`OVERHEAD`] = 29 bytes (an empty
//! plaintext).

use std::fmt;

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::hkdf;
use zeroize::Zeroizing;

use crypto::RootKey;

/// The current (and only) format version: the first byte of sealed data.
pub const FORMAT_VERSION: u8 = 1;
/// HKDF `info` of the sealing key.
const SEALING_KEY_INFO: &[u8] = b"sealdisk key sealing v1";
/// Bytes of the AES-GCM tag.
const TAG_LEN: usize = 16;
/// Version byte, nonce and tag: the length of a sealed empty plaintext.
pub const OVERHEAD: usize = 1 + NONCE_LEN + TAG_LEN;

/// Why sealing or opening failed.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    /// The first byte names a format this build does not know.
    #[error("sealed data has format version {version}; this sealdisk reads only version 1")]
    UnsupportedVersion { version: u8 },
    /// Shorter than version, nonce and tag.
    #[error("sealed data is {len} bytes, shorter than the {OVERHEAD} bytes of any sealed value")]
    TooShort { len: usize },
    /// Tag mismatch: another root key, another context, or damaged data.
    #[error(
        "sealed data does not authenticate: it was sealed under another root key or for another \
         key, or it was damaged"
    )]
    Unauthentic,
    /// The nonce could not be drawn.
    #[error("no random nonce for sealing")]
    Random(#[source] crypto::CryptoError),
    /// AWS-LC failed to seal (only for inputs beyond AES-GCM's limits).
    #[error("AES-256-GCM sealing failed in AWS-LC")]
    Encryption(#[source] aws_lc_rs::error::Unspecified),
}

/// The AES-256-GCM key derived from the root key.
struct SealingKey(LessSafeKey);

impl fmt::Debug for SealingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SealingKey(<redacted>)")
    }
}

impl SealingKey {
    fn derive(root: &RootKey) -> Self {
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, &[]).extract(root.expose());
        let okm = prk
            .expand(&[SEALING_KEY_INFO], &AES_256_GCM)
            // Fails only for outputs longer than 255 hash lengths; this is one.
            .expect("a 32-byte HKDF-SHA256 output is always available");
        Self(LessSafeKey::new(UnboundKey::from(okm)))
    }
}

/// Seals `plaintext` under `root`, bound to `context` (format in the module docs).
pub fn seal(root: &RootKey, context: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, SealError> {
    let nonce = crypto::random::bytes::<NONCE_LEN>().map_err(SealError::Random)?;
    seal_with_nonce(&SealingKey::derive(root), nonce, context, plaintext)
}

fn seal_with_nonce(
    key: &SealingKey,
    nonce: [u8; NONCE_LEN],
    context: &[u8],
    plaintext: &[u8],
) -> Result<Vec<u8>, SealError> {
    let mut out = Vec::with_capacity(OVERHEAD + plaintext.len());
    out.push(FORMAT_VERSION);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(plaintext);
    let tag = key
        .0
        .seal_in_place_separate_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(context),
            &mut out[1 + NONCE_LEN..],
        )
        .map_err(SealError::Encryption)?;
    out.extend_from_slice(tag.as_ref());
    Ok(out)
}

/// Opens data made by [`seal`] with the same root key and context. Refuses unknown versions,
/// short input and anything that does not authenticate.
pub fn open(
    root: &RootKey,
    context: &[u8],
    sealed: &[u8],
) -> Result<Zeroizing<Vec<u8>>, SealError> {
    let Some(&version) = sealed.first() else {
        return Err(SealError::TooShort { len: 0 });
    };
    if version != FORMAT_VERSION {
        return Err(SealError::UnsupportedVersion { version });
    }
    if sealed.len() < OVERHEAD {
        return Err(SealError::TooShort { len: sealed.len() });
    }
    let (nonce, body) = sealed[1..].split_at(NONCE_LEN);
    let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| SealError::Unauthentic)?;
    let mut buffer = Zeroizing::new(body.to_vec());
    let len = SealingKey::derive(root)
        .0
        .open_in_place(nonce, Aad::from(context), &mut buffer)
        .map_err(|_| SealError::Unauthentic)?
        .len();
    buffer.truncate(len);
    Ok(buffer)
}

#[cfg(test)]
mod tests {
    use aws_lc_rs::hmac;

    use super::*;

    fn root(byte: u8) -> RootKey {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("root.key");
        std::fs::write(&path, [byte; 32]).unwrap();
        RootKey::load_or_create(&path).unwrap()
    }

    #[test]
    fn round_trip_and_layout() {
        let root = root(7);
        let sealed = seal(&root, b"vault/key/v1", b"private key").unwrap();
        assert_eq!(sealed.len(), OVERHEAD + 11);
        assert_eq!(sealed[0], FORMAT_VERSION);
        assert_ne!(&sealed[13..24], b"private key");
        let opened = open(&root, b"vault/key/v1", &sealed).unwrap();
        assert_eq!(opened.as_slice(), b"private key");

        let empty = seal(&root, b"", b"").unwrap();
        assert_eq!(empty.len(), OVERHEAD);
        assert!(open(&root, b"", &empty).unwrap().is_empty());
    }

    #[test]
    fn nonces_differ_between_seals() {
        let root = root(7);
        let a = seal(&root, b"c", b"same").unwrap();
        let b = seal(&root, b"c", b"same").unwrap();
        assert_ne!(a[1..13], b[1..13]);
        assert_ne!(a, b);
    }

    #[test]
    fn wrong_context_root_or_any_flipped_byte_fails() {
        let root7 = root(7);
        let sealed = seal(&root7, b"vault/key/v1", b"private key").unwrap();
        assert!(matches!(
            open(&root7, b"vault/key/v2", &sealed),
            Err(SealError::Unauthentic)
        ));
        assert!(matches!(
            open(&root(8), b"vault/key/v1", &sealed),
            Err(SealError::Unauthentic)
        ));
        for i in 1..sealed.len() {
            let mut damaged = sealed.clone();
            damaged[i] ^= 0x01;
            assert!(
                matches!(
                    open(&root7, b"vault/key/v1", &damaged),
                    Err(SealError::Unauthentic)
                ),
                "flipped byte {i} was accepted"
            );
        }
        let mut truncated = sealed.clone();
        truncated.pop();
        assert!(matches!(
            open(&root7, b"vault/key/v1", &truncated),
            Err(SealError::Unauthentic)
        ));
    }

    #[test]
    fn unknown_versions_and_short_input_are_refused() {
        let root = root(7);
        let mut sealed = seal(&root, b"c", b"x").unwrap();
        for version in [0u8, 2, 0xff] {
            sealed[0] = version;
            assert!(matches!(
                open(&root, b"c", &sealed),
                Err(SealError::UnsupportedVersion { version: v }) if v == version
            ));
        }
        assert!(matches!(
            open(&root, b"c", &[]),
            Err(SealError::TooShort { len: 0 })
        ));
        let short = [FORMAT_VERSION; OVERHEAD - 1];
        assert!(matches!(
            open(&root, b"c", &short),
            Err(SealError::TooShort { len }) if len == OVERHEAD - 1
        ));
    }

    /// The documented key derivation, spelled out with plain HMAC, so that a reader in another
    /// language can reproduce it.
    #[test]
    fn sealing_key_is_hkdf_sha256_of_the_root_key() {
        let root = root(0x42);
        let salt = hmac::Key::new(hmac::HMAC_SHA256, &[0u8; 32]);
        let prk = hmac::sign(&salt, root.expose());
        let prk = hmac::Key::new(hmac::HMAC_SHA256, prk.as_ref());
        let okm = hmac::sign(&prk, b"sealdisk key sealing v1\x01");
        let manual = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, okm.as_ref()).unwrap());
        let nonce = [9u8; NONCE_LEN];
        let ours = seal_with_nonce(&SealingKey::derive(&root), nonce, b"ctx", b"text").unwrap();
        let mut theirs = b"text".to_vec();
        manual
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(b"ctx"),
                &mut theirs,
            )
            .unwrap();
        assert_eq!(&ours[13..], theirs.as_slice());
        assert_eq!(
            format!("{:?}", SealingKey::derive(&root)),
            "SealingKey(<redacted>)"
        );
    }

    /// A version-1 blob written once and frozen here: later builds must still open it.
    #[test]
    fn frozen_version_1_blob_still_opens() {
        let frozen = hex(FROZEN_V1);
        let context = b"sealdisk/key/vault/name/version";
        let opened = open(&root(0x11), context, &frozen).unwrap();
        assert_eq!(opened.as_slice(), b"sealdisk frozen v1 plaintext");
        let again = seal_with_nonce(
            &SealingKey::derive(&root(0x11)),
            [0x5a; NONCE_LEN],
            context,
            b"sealdisk frozen v1 plaintext",
        )
        .unwrap();
        assert_eq!(again, frozen);
    }

    /// Root key 32 × 0x11, nonce 12 × 0x5a, context `sealdisk/key/vault/name/version`.
    const FROZEN_V1: &str = "015a5a5a5a5a5a5a5a5a5a5a5afbca7f3aa5f56073b82376200d33e10e5d7db33dd17c5d8d04c521461e62a8c9d3c9d0455bfa369992c505a1";

    fn hex(text: &str) -> Vec<u8> {
        (0..text.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
            .collect()
    }
}
