//! Key Vault's names for key types, curves, key operations and algorithms, spelled exactly as
//! in the keys data-plane contract (`JsonWebKeyType`, `JsonWebKeyCurveName`,
//! `JsonWebKeyOperation`, `JsonWebKeyEncryptionAlgorithm`, `JsonWebKeySignatureAlgorithm`).
//!
//! Every type parses with `FromStr` (and serde) into a [`MaterialError`] that says what is
//! supported instead, and prints (and serializes) as its wire name. Names are case-sensitive,
//! as in the contract.

use std::fmt;
use std::str::FromStr;

use aws_lc_rs::digest;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::MaterialError;

/// Implements the wire-name plumbing of an enum: `ALL`, `as_str`, `Display` and string serde
/// (deserialization goes through the type's `FromStr`, so serde errors carry its message).
macro_rules! wire_names {
    ($ty:ident { $($variant:ident => $name:literal),+ $(,)? }) => {
        impl $ty {
            /// Every supported value, in the contract's order.
            pub const ALL: &'static [Self] = &[$(Self::$variant),+];

            /// The name on the wire.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $name),+
                }
            }

            fn from_wire(name: &str) -> Option<Self> {
                match name {
                    $($name => Some(Self::$variant),)+
                    _ => None,
                }
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let name = String::deserialize(deserializer)?;
                name.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

/// A key type (`kty`) that sealdisk holds in software.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyType {
    /// RSA, 2048, 3072 or 4096 bits.
    Rsa,
    /// Elliptic curve: P-256, P-384 or P-521.
    Ec,
}

wire_names!(KeyType { Rsa => "RSA", Ec => "EC" });

impl FromStr for KeyType {
    type Err = MaterialError;

    /// `RSA-HSM` and `EC-HSM` fail with [`MaterialError::HsmUnavailable`]: sealdisk has no
    /// PKCS#11 HSM yet and never turns an HSM key request into a software key.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "RSA-HSM" | "EC-HSM" => Err(MaterialError::HsmUnavailable { kty: s.into() }),
            _ => Self::from_wire(s)
                .ok_or_else(|| MaterialError::UnsupportedKeyType { kty: s.into() }),
        }
    }
}

/// A named elliptic curve (`crv`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Curve {
    /// NIST P-256 (secp256r1).
    P256,
    /// NIST P-384 (secp384r1).
    P384,
    /// NIST P-521 (secp521r1).
    P521,
}

wire_names!(Curve { P256 => "P-256", P384 => "P-384", P521 => "P-521" });

impl FromStr for Curve {
    type Err = MaterialError;

    /// `P-256K` (secp256k1) is in the contract but not supported.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::from_wire(s).ok_or_else(|| MaterialError::UnsupportedCurve { crv: s.into() })
    }
}

impl Curve {
    /// Bytes of one field element: the length of the JWK's `x`, `y` and `d`.
    pub const fn coordinate_len(self) -> usize {
        match self {
            Self::P256 => 32,
            Self::P384 => 48,
            Self::P521 => 66,
        }
    }

    /// The one signature algorithm Key Vault allows on this curve.
    pub const fn signature_algorithm(self) -> SignatureAlgorithm {
        match self {
            Self::P256 => SignatureAlgorithm::Es256,
            Self::P384 => SignatureAlgorithm::Es384,
            Self::P521 => SignatureAlgorithm::Es512,
        }
    }

    pub(super) fn signing(self) -> &'static aws_lc_rs::signature::EcdsaSigningAlgorithm {
        use aws_lc_rs::signature as sig;
        match self {
            Self::P256 => &sig::ECDSA_P256_SHA256_FIXED_SIGNING,
            Self::P384 => &sig::ECDSA_P384_SHA384_FIXED_SIGNING,
            Self::P521 => &sig::ECDSA_P521_SHA512_FIXED_SIGNING,
        }
    }

    pub(super) fn verification(self) -> &'static aws_lc_rs::signature::EcdsaVerificationAlgorithm {
        use aws_lc_rs::signature as sig;
        match self {
            Self::P256 => &sig::ECDSA_P256_SHA256_FIXED,
            Self::P384 => &sig::ECDSA_P384_SHA384_FIXED,
            Self::P521 => &sig::ECDSA_P521_SHA512_FIXED,
        }
    }
}

/// A permitted operation on a key (`key_ops`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyOperation {
    /// Encrypt with the public key.
    Encrypt,
    /// Decrypt with the private key.
    Decrypt,
    /// Sign a digest with the private key.
    Sign,
    /// Verify a signature with the public key.
    Verify,
    /// Wrap (encrypt) a key with the public key.
    WrapKey,
    /// Unwrap (decrypt) a key with the private key.
    UnwrapKey,
    /// The key may be imported during creation.
    Import,
    /// The private key may be exported.
    Export,
}

wire_names!(KeyOperation {
    Encrypt => "encrypt",
    Decrypt => "decrypt",
    Sign => "sign",
    Verify => "verify",
    WrapKey => "wrapKey",
    UnwrapKey => "unwrapKey",
    Import => "import",
    Export => "export",
});

impl FromStr for KeyOperation {
    type Err = MaterialError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::from_wire(s).ok_or_else(|| MaterialError::UnsupportedKeyOperation { op: s.into() })
    }
}

/// An asymmetric encryption (and key wrapping) algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EncryptionAlgorithm {
    /// RSAES-OAEP with SHA-1 and MGF1-SHA-1 (RFC 8017 defaults). Kept for compatibility.
    RsaOaep,
    /// RSAES-OAEP with SHA-256 and MGF1-SHA-256.
    RsaOaep256,
    /// RSAES-PKCS1-v1_5. Kept for compatibility.
    Rsa1_5,
}

wire_names!(EncryptionAlgorithm {
    RsaOaep => "RSA-OAEP",
    RsaOaep256 => "RSA-OAEP-256",
    Rsa1_5 => "RSA1_5",
});

impl FromStr for EncryptionAlgorithm {
    type Err = MaterialError;

    /// The symmetric algorithms of the contract (`A256GCM`, `A256KW`, ...) need `oct` keys,
    /// which sealdisk does not have; they are refused like unknown names.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::from_wire(s)
            .ok_or_else(|| MaterialError::UnsupportedEncryptionAlgorithm { alg: s.into() })
    }
}

/// A signature algorithm. Key Vault signs and verifies a digest the caller computed, so each
/// algorithm fixes the digest length it accepts ([`SignatureAlgorithm::digest_len`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SignatureAlgorithm {
    /// RSASSA-PSS, SHA-256, MGF1-SHA-256, 32-byte salt.
    Ps256,
    /// RSASSA-PSS, SHA-384, MGF1-SHA-384, 48-byte salt.
    Ps384,
    /// RSASSA-PSS, SHA-512, MGF1-SHA-512, 64-byte salt.
    Ps512,
    /// RSASSA-PKCS1-v1_5 with SHA-256.
    Rs256,
    /// RSASSA-PKCS1-v1_5 with SHA-384.
    Rs384,
    /// RSASSA-PKCS1-v1_5 with SHA-512.
    Rs512,
    /// ECDSA on P-256 with SHA-256; signature `r || s`, 64 bytes.
    Es256,
    /// ECDSA on P-384 with SHA-384; signature `r || s`, 96 bytes.
    Es384,
    /// ECDSA on P-521 with SHA-512; signature `r || s`, 132 bytes.
    Es512,
}

wire_names!(SignatureAlgorithm {
    Ps256 => "PS256",
    Ps384 => "PS384",
    Ps512 => "PS512",
    Rs256 => "RS256",
    Rs384 => "RS384",
    Rs512 => "RS512",
    Es256 => "ES256",
    Es384 => "ES384",
    Es512 => "ES512",
});

impl FromStr for SignatureAlgorithm {
    type Err = MaterialError;

    /// `ES256K` (secp256k1), the HMAC algorithms and `RSNULL` are refused.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::from_wire(s)
            .ok_or_else(|| MaterialError::UnsupportedSignatureAlgorithm { alg: s.into() })
    }
}

impl SignatureAlgorithm {
    /// The key type the algorithm needs.
    pub const fn key_type(self) -> KeyType {
        match self {
            Self::Es256 | Self::Es384 | Self::Es512 => KeyType::Ec,
            _ => KeyType::Rsa,
        }
    }

    /// The curve an ECDSA algorithm needs; `None` for RSA algorithms.
    pub const fn curve(self) -> Option<Curve> {
        match self {
            Self::Es256 => Some(Curve::P256),
            Self::Es384 => Some(Curve::P384),
            Self::Es512 => Some(Curve::P521),
            _ => None,
        }
    }

    /// The length in bytes of the digest this algorithm signs: 32 (SHA-256), 48 (SHA-384) or
    /// 64 (SHA-512).
    pub const fn digest_len(self) -> usize {
        match self {
            Self::Ps256 | Self::Rs256 | Self::Es256 => 32,
            Self::Ps384 | Self::Rs384 | Self::Es384 => 48,
            Self::Ps512 | Self::Rs512 | Self::Es512 => 64,
        }
    }

    /// The name of the hash function whose output this algorithm signs.
    pub const fn hash_name(self) -> &'static str {
        match self.digest_len() {
            32 => "SHA-256",
            48 => "SHA-384",
            _ => "SHA-512",
        }
    }

    pub(super) fn digest_algorithm(self) -> &'static digest::Algorithm {
        match self.digest_len() {
            32 => &digest::SHA256,
            48 => &digest::SHA384,
            _ => &digest::SHA512,
        }
    }
}
