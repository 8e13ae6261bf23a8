//! Public keys: the operations anyone may do (encrypt, wrap, verify) and the public JWK.

use std::fmt;

use aws_lc_rs::digest::Digest;
use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rsa::{
    OAEP_SHA1_MGF1SHA1, OAEP_SHA256_MGF1SHA256, OaepAlgorithm, OaepPublicEncryptingKey,
    Pkcs1PublicEncryptingKey, PublicEncryptingKey,
};
use aws_lc_rs::signature::{
    self, ParsedPublicKey, RsaEncoding, RsaParameters, RsaPublicKeyComponents,
};

use super::jwk::{self, Jwk};
use super::{Curve, EncryptionAlgorithm, KeyType, MaterialError, SignatureAlgorithm};

/// The RSA sizes sealdisk creates, imports and loads, in bits.
const RSA_SIZES: [usize; 3] = [2048, 3072, 4096];

const RSA_NEEDS: &str = "an RSA public key needs n and e";
const EC_NEEDS: &str = "an EC public key needs crv, x and y";

/// A public key: RSA (n, e) or an EC point. Built from a public JWK or taken from a
/// [`super::KeyMaterial`]; never holds anything secret.
#[derive(Clone)]
pub struct PublicKey {
    inner: Inner,
    /// X.509 `SubjectPublicKeyInfo`, DER.
    spki: Vec<u8>,
}

#[derive(Clone)]
enum Inner {
    Rsa {
        /// Modulus, big-endian without leading zeros.
        n: Vec<u8>,
        /// Public exponent, big-endian without leading zeros.
        e: Vec<u8>,
        bits: usize,
        encrypting: PublicEncryptingKey,
    },
    Ec {
        curve: Curve,
        /// `04 || x || y`, fixed-length coordinates.
        point: Vec<u8>,
        verifying: ParsedPublicKey,
    },
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.inner {
            Inner::Rsa { bits, .. } => write!(f, "PublicKey(RSA-{bits})"),
            Inner::Ec { curve, .. } => write!(f, "PublicKey(EC {curve})"),
        }
    }
}

impl PublicKey {
    /// An RSA public key from its modulus and exponent (big-endian; leading zeros allowed).
    pub fn rsa(n: &[u8], e: &[u8]) -> Result<Self, MaterialError> {
        let n = jwk::strip_leading_zeros(n).to_vec();
        let e = jwk::strip_leading_zeros(e).to_vec();
        let bits = n
            .first()
            .map_or(0, |&top| n.len() * 8 - top.leading_zeros() as usize);
        if !RSA_SIZES.contains(&bits) {
            return Err(MaterialError::UnsupportedRsaKeySize { bits });
        }
        let spki = RsaPublicKeyComponents {
            n: &n[..],
            e: &e[..],
        }
        .as_der()
        .map_err(|source| MaterialError::InvalidRsaPublicKey { source })?
        .as_ref()
        .to_vec();
        let encrypting = PublicEncryptingKey::from_der(&spki).map_err(|source| {
            MaterialError::InvalidJwkKey {
                kty: KeyType::Rsa,
                source,
            }
        })?;
        Ok(Self {
            inner: Inner::Rsa {
                n,
                e,
                bits,
                encrypting,
            },
            spki,
        })
    }

    /// An EC public key from its uncompressed SEC 1 point `04 || x || y`.
    pub fn ec(curve: Curve, point: &[u8]) -> Result<Self, MaterialError> {
        let verifying = ParsedPublicKey::new(curve.verification(), point).map_err(|source| {
            MaterialError::InvalidJwkKey {
                kty: KeyType::Ec,
                source,
            }
        })?;
        let spki = verifying
            .as_der()
            .map_err(|source| MaterialError::KeyEncoding { source })?
            .as_ref()
            .to_vec();
        Ok(Self {
            inner: Inner::Ec {
                curve,
                point: point.to_vec(),
                verifying,
            },
            spki,
        })
    }

    /// The public key of a JWK (`kty` with `n`, `e` or `crv`, `x`, `y`); private members are
    /// ignored.
    pub fn from_jwk(key: &Jwk) -> Result<Self, MaterialError> {
        match jwk_key_type(key)? {
            KeyType::Rsa => {
                let n = jwk::public_field(key.n.as_ref(), "n", RSA_NEEDS)?;
                let e = jwk::public_field(key.e.as_ref(), "e", RSA_NEEDS)?;
                Self::rsa(&n, &e)
            }
            KeyType::Ec => {
                let crv = key.crv.as_deref().ok_or(MaterialError::MissingJwkField {
                    field: "crv",
                    needs: EC_NEEDS,
                })?;
                let curve: Curve = crv.parse()?;
                let x = jwk::public_field(key.x.as_ref(), "x", EC_NEEDS)?;
                let y = jwk::public_field(key.y.as_ref(), "y", EC_NEEDS)?;
                let len = curve.coordinate_len();
                let mut point = Vec::with_capacity(1 + 2 * len);
                point.push(0x04);
                push_fixed(&mut point, &x, "x", curve)?;
                push_fixed(&mut point, &y, "y", curve)?;
                Self::ec(curve, &point)
            }
        }
    }

    /// `RSA` or `EC`.
    pub fn key_type(&self) -> KeyType {
        match self.inner {
            Inner::Rsa { .. } => KeyType::Rsa,
            Inner::Ec { .. } => KeyType::Ec,
        }
    }

    /// The curve of an EC key.
    pub fn curve(&self) -> Option<Curve> {
        match self.inner {
            Inner::Rsa { .. } => None,
            Inner::Ec { curve, .. } => Some(curve),
        }
    }

    /// The modulus size of an RSA key, in bits.
    pub fn rsa_bits(&self) -> Option<usize> {
        match self.inner {
            Inner::Rsa { bits, .. } => Some(bits),
            Inner::Ec { .. } => None,
        }
    }

    /// RSA `(n, e)`, big-endian without leading zeros.
    pub(super) fn rsa_components(&self) -> Option<(&[u8], &[u8])> {
        match &self.inner {
            Inner::Rsa { n, e, .. } => Some((n, e)),
            Inner::Ec { .. } => None,
        }
    }

    /// The uncompressed EC point `04 || x || y`.
    pub(super) fn ec_point(&self) -> Option<&[u8]> {
        match &self.inner {
            Inner::Rsa { .. } => None,
            Inner::Ec { point, .. } => Some(point),
        }
    }

    /// The key as X.509 `SubjectPublicKeyInfo` DER (what `openssl pkey -pubin` reads).
    pub fn spki_der(&self) -> &[u8] {
        &self.spki
    }

    /// The public JWK: `kty` with `n` and `e` (RSA, minimal big-endian) or `crv`, `x`, `y`
    /// (EC, fixed-length coordinates), base64url without padding. No `kid`, no `key_ops`.
    pub fn jwk(&self) -> Jwk {
        let mut out = Jwk {
            kty: Some(self.key_type().to_string()),
            ..Jwk::default()
        };
        match &self.inner {
            Inner::Rsa { n, e, .. } => {
                out.n = Some(jwk::encode(n));
                out.e = Some(jwk::encode(e));
            }
            Inner::Ec { curve, point, .. } => {
                let (x, y) = point[1..].split_at(curve.coordinate_len());
                out.crv = Some(curve.to_string());
                out.x = Some(jwk::encode(x));
                out.y = Some(jwk::encode(y));
            }
        }
        out
    }

    /// Encrypts `plaintext` (RSA only). Randomized: two calls give different ciphertexts.
    pub fn encrypt(
        &self,
        alg: EncryptionAlgorithm,
        plaintext: &[u8],
    ) -> Result<Vec<u8>, MaterialError> {
        let Inner::Rsa {
            bits, encrypting, ..
        } = &self.inner
        else {
            return Err(MaterialError::WrongKeyType {
                alg: alg.as_str(),
                needs: KeyType::Rsa,
                actual: self.key_type(),
            });
        };
        let failed = |source| MaterialError::EncryptionFailed { source };
        let too_long = |max| MaterialError::PlaintextTooLong {
            alg,
            bits: *bits,
            max,
            actual: plaintext.len(),
        };
        let (mut out, len) = match oaep(alg) {
            Some(oaep) => {
                let key = OaepPublicEncryptingKey::new(encrypting.clone()).map_err(failed)?;
                let max = key.max_plaintext_size(oaep);
                if plaintext.len() > max {
                    return Err(too_long(max));
                }
                let mut out = vec![0u8; key.ciphertext_size()];
                let len = key
                    .encrypt(oaep, plaintext, &mut out, None)
                    .map_err(failed)?
                    .len();
                (out, len)
            }
            None => {
                let key = Pkcs1PublicEncryptingKey::new(encrypting.clone()).map_err(failed)?;
                let max = key.max_plaintext_size();
                if plaintext.len() > max {
                    return Err(too_long(max));
                }
                let mut out = vec![0u8; key.ciphertext_size()];
                let len = key.encrypt(plaintext, &mut out).map_err(failed)?.len();
                (out, len)
            }
        };
        out.truncate(len);
        Ok(out)
    }

    /// Wraps (encrypts) a key: the same operation as [`PublicKey::encrypt`].
    pub fn wrap_key(&self, alg: EncryptionAlgorithm, key: &[u8]) -> Result<Vec<u8>, MaterialError> {
        self.encrypt(alg, key)
    }

    /// Whether `signature` is a valid `alg` signature of `digest` under this key. A malformed
    /// signature is `Ok(false)`; a wrong key type, curve or digest length is an error.
    pub fn verify(
        &self,
        alg: SignatureAlgorithm,
        digest: &[u8],
        signature: &[u8],
    ) -> Result<bool, MaterialError> {
        let scheme = self.scheme(alg)?;
        let digest = import_digest(alg, digest)?;
        let ok = match scheme {
            Scheme::Rsa { verifying, .. } => {
                signature::UnparsedPublicKey::new(verifying, &self.spki)
                    .verify_digest(&digest, signature)
                    .is_ok()
            }
            Scheme::Ec(verifying) => verifying.verify_digest_sig(&digest, signature).is_ok(),
        };
        Ok(ok)
    }

    /// Checks that `alg` fits this key; how to verify with it.
    pub(super) fn scheme(&self, alg: SignatureAlgorithm) -> Result<Scheme<'_>, MaterialError> {
        match (&self.inner, rsa_parameters(alg), alg.curve()) {
            (Inner::Rsa { .. }, Some((verifying, signing)), _) => {
                Ok(Scheme::Rsa { verifying, signing })
            }
            (
                Inner::Ec {
                    curve, verifying, ..
                },
                _,
                Some(needs),
            ) => {
                if needs == *curve {
                    Ok(Scheme::Ec(verifying))
                } else {
                    Err(MaterialError::WrongCurve {
                        alg,
                        needs,
                        actual: *curve,
                        suggested: curve.signature_algorithm(),
                    })
                }
            }
            _ => Err(MaterialError::WrongKeyType {
                alg: alg.as_str(),
                needs: alg.key_type(),
                actual: self.key_type(),
            }),
        }
    }
}

/// How a signature algorithm applies to a key that fits it.
pub(super) enum Scheme<'a> {
    /// RSA, with these AWS-LC parameters.
    Rsa {
        verifying: &'static RsaParameters,
        signing: &'static dyn RsaEncoding,
    },
    /// ECDSA with this (curve-bound) public key.
    Ec(&'a ParsedPublicKey),
}

/// The AWS-LC verification parameters and signing encoding of an RSA algorithm; `None` for
/// ECDSA. PSS uses MGF1 with the message hash and a salt as long as the digest, as Key Vault
/// does, and verification accepts only that.
fn rsa_parameters(
    alg: SignatureAlgorithm,
) -> Option<(&'static RsaParameters, &'static dyn RsaEncoding)> {
    use SignatureAlgorithm as A;
    match alg {
        A::Ps256 => Some((
            &signature::RSA_PSS_2048_8192_SHA256,
            &signature::RSA_PSS_SHA256,
        )),
        A::Ps384 => Some((
            &signature::RSA_PSS_2048_8192_SHA384,
            &signature::RSA_PSS_SHA384,
        )),
        A::Ps512 => Some((
            &signature::RSA_PSS_2048_8192_SHA512,
            &signature::RSA_PSS_SHA512,
        )),
        A::Rs256 => Some((
            &signature::RSA_PKCS1_2048_8192_SHA256,
            &signature::RSA_PKCS1_SHA256,
        )),
        A::Rs384 => Some((
            &signature::RSA_PKCS1_2048_8192_SHA384,
            &signature::RSA_PKCS1_SHA384,
        )),
        A::Rs512 => Some((
            &signature::RSA_PKCS1_2048_8192_SHA512,
            &signature::RSA_PKCS1_SHA512,
        )),
        A::Es256 | A::Es384 | A::Es512 => None,
    }
}

/// The OAEP parameters of `alg`, or `None` for RSA1_5.
pub(super) fn oaep(alg: EncryptionAlgorithm) -> Option<&'static OaepAlgorithm> {
    match alg {
        EncryptionAlgorithm::RsaOaep => Some(&OAEP_SHA1_MGF1SHA1),
        EncryptionAlgorithm::RsaOaep256 => Some(&OAEP_SHA256_MGF1SHA256),
        EncryptionAlgorithm::Rsa1_5 => None,
    }
}

/// `digest` as an AWS-LC digest of `alg`'s hash, after checking its length.
pub(super) fn import_digest(
    alg: SignatureAlgorithm,
    digest: &[u8],
) -> Result<Digest, MaterialError> {
    let wrong_length = || MaterialError::DigestLength {
        alg,
        hash: alg.hash_name(),
        expected: alg.digest_len(),
        actual: digest.len(),
    };
    if digest.len() != alg.digest_len() {
        return Err(wrong_length());
    }
    Digest::import_less_safe(digest, alg.digest_algorithm()).map_err(|_| wrong_length())
}

/// The `kty` of a JWK, parsed (`RSA-HSM` and `EC-HSM` fail with `HsmUnavailable`).
pub(super) fn jwk_key_type(key: &Jwk) -> Result<KeyType, MaterialError> {
    key.kty
        .as_deref()
        .ok_or(MaterialError::MissingJwkField {
            field: "kty",
            needs: "a key needs kty RSA or EC",
        })?
        .parse()
}

/// Appends a coordinate left-padded to the curve's field length; longer values are refused.
fn push_fixed(
    out: &mut Vec<u8>,
    value: &[u8],
    field: &'static str,
    curve: Curve,
) -> Result<(), MaterialError> {
    let len = curve.coordinate_len();
    if value.len() > len {
        return Err(MaterialError::JwkFieldLength {
            field,
            curve,
            len: value.len(),
            max: len,
        });
    }
    out.resize(out.len() + len - value.len(), 0);
    out.extend_from_slice(value);
    Ok(())
}
