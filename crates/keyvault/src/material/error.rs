//! What can fail with key material, in words a caller can act on.

use aws_lc_rs::error::{KeyRejected, Unspecified};

use super::{Curve, EncryptionAlgorithm, KeyType, SignatureAlgorithm};

/// An error from [`super::KeyMaterial`], [`super::PublicKey`] or the name types.
///
/// Decryption failures of every kind (wrong ciphertext length, bad padding, wrong key) are the
/// one variant [`MaterialError::DecryptionFailed`], so that callers cannot turn the error into
/// a padding oracle.
#[derive(Debug, thiserror::Error)]
pub enum MaterialError {
    /// `kty` names a type sealdisk does not hold (`oct`, `oct-HSM`, unknown names).
    #[error("Key type '{kty}' is not supported; use RSA or EC.")]
    UnsupportedKeyType { kty: String },

    /// `kty` is `RSA-HSM` or `EC-HSM`, and there is no HSM to keep the key in.
    #[error(
        "Key type '{kty}' needs a PKCS#11 HSM, and this sealdisk deployment has none configured; \
         sealdisk never keeps an HSM key in software. Use key type RSA or EC instead."
    )]
    HsmUnavailable { kty: String },

    /// `crv` names a curve other than P-256, P-384 and P-521 (including P-256K).
    #[error("Curve '{crv}' is not supported; use P-256, P-384 or P-521.")]
    UnsupportedCurve { crv: String },

    /// A `key_ops` entry is not one of the contract's operations.
    #[error(
        "Key operation '{op}' is not known; use encrypt, decrypt, sign, verify, wrapKey, \
         unwrapKey, import or export."
    )]
    UnsupportedKeyOperation { op: String },

    /// The encryption algorithm is not an RSA one sealdisk implements.
    #[error("Encryption algorithm '{alg}' is not supported; use RSA-OAEP-256, RSA-OAEP or RSA1_5.")]
    UnsupportedEncryptionAlgorithm { alg: String },

    /// The signature algorithm is not one sealdisk implements.
    #[error(
        "Signature algorithm '{alg}' is not supported; use PS256, PS384, PS512, RS256, RS384, \
         RS512, ES256, ES384 or ES512."
    )]
    UnsupportedSignatureAlgorithm { alg: String },

    /// An RSA key (generated, imported or loaded) has a size other than 2048, 3072 or 4096.
    #[error("RSA key size {bits} is not supported; use 2048, 3072 or 4096.")]
    UnsupportedRsaKeySize { bits: usize },

    /// AWS-LC could not generate a key.
    #[error("Generating a {kind} key failed in AWS-LC.")]
    KeyGeneration {
        kind: String,
        #[source]
        source: Unspecified,
    },

    /// A JWK lacks a member the key type needs.
    #[error("The JWK has no '{field}'; {needs}.")]
    MissingJwkField {
        field: &'static str,
        needs: &'static str,
    },

    /// A JWK member is not base64url.
    #[error("The JWK's '{field}' is not valid base64url.")]
    InvalidJwkEncoding {
        field: &'static str,
        #[source]
        source: base64::DecodeError,
    },

    /// An EC JWK member is longer than the curve's field elements.
    #[error("The JWK's '{field}' is {len} bytes; on {curve} it must be {max} bytes.")]
    JwkFieldLength {
        field: &'static str,
        curve: Curve,
        len: usize,
        max: usize,
    },

    /// AWS-LC rejected the key the JWK describes (components inconsistent, point not on the
    /// curve, private key not matching the public key, ...).
    #[error(
        "The JWK's {kty} components do not form one valid key ({source}): for RSA, n must be \
         p·q and d, dp, dq, qi must belong to them; for EC, (x, y) must be the point of d."
    )]
    InvalidJwkKey {
        kty: KeyType,
        #[source]
        source: KeyRejected,
    },

    /// `n` and `e` do not form an RSA public key (empty, even exponent, ...).
    #[error("The JWK's n and e do not form an RSA public key.")]
    InvalidRsaPublicKey {
        #[source]
        source: Unspecified,
    },

    /// The key loaded from a JWK has another public key than the JWK states.
    #[error("The JWK's public key (n, e) does not match its private key.")]
    JwkPublicKeyMismatch,

    /// Stored PKCS#8 bytes are not a supported private key.
    #[error(
        "The private key is not a PKCS#8 RSA key (2048 to 4096 bits) or P-256, P-384 or P-521 \
         key ({source})."
    )]
    InvalidPkcs8 {
        #[source]
        source: KeyRejected,
    },

    /// The algorithm needs another key type.
    #[error("Algorithm {alg} needs an {needs} key, and this key is {actual}.")]
    WrongKeyType {
        alg: &'static str,
        needs: KeyType,
        actual: KeyType,
    },

    /// The ECDSA algorithm needs another curve.
    #[error("Algorithm {alg} needs a {needs} key, and this key is {actual}; use {suggested}.")]
    WrongCurve {
        alg: SignatureAlgorithm,
        needs: Curve,
        actual: Curve,
        suggested: SignatureAlgorithm,
    },

    /// The digest has the wrong length for the algorithm.
    #[error(
        "Algorithm {alg} takes a {expected}-byte {hash} digest, not {actual} bytes; sign and \
         verify the {hash} hash of the message, not the message."
    )]
    DigestLength {
        alg: SignatureAlgorithm,
        hash: &'static str,
        expected: usize,
        actual: usize,
    },

    /// The plaintext does not fit the key and padding.
    #[error("{alg} with a {bits}-bit key encrypts at most {max} bytes, not {actual}.")]
    PlaintextTooLong {
        alg: EncryptionAlgorithm,
        bits: usize,
        max: usize,
        actual: usize,
    },

    /// Decryption or unwrapping failed. Deliberately without detail.
    #[error(
        "Decryption failed: the ciphertext was not made with this key and algorithm, or it was \
         damaged."
    )]
    DecryptionFailed,

    /// AWS-LC failed to encrypt.
    #[error("Encryption failed in AWS-LC.")]
    EncryptionFailed {
        #[source]
        source: Unspecified,
    },

    /// AWS-LC failed to sign.
    #[error("Signing failed in AWS-LC.")]
    SigningFailed {
        #[source]
        source: Unspecified,
    },

    /// AWS-LC could not encode a key it holds.
    #[error("Encoding the key failed in AWS-LC.")]
    KeyEncoding {
        #[source]
        source: Unspecified,
    },
}
