//! Key material and its cryptographic operations, with Key Vault's semantics. Sans-I/O: values
//! in, values out; no files, no HTTP, no clock.
//!
//! - [`KeyMaterial`]: a private key (RSA 2048/3072/4096 or EC P-256/P-384/P-521) that can
//!   decrypt, unwrap and sign. It is created by generation, by JWK import or by reloading the
//!   PKCS#8 bytes that [`crate::seal`] keeps at rest.
//! - [`PublicKey`]: what anyone may do with the public half (encrypt, wrap, verify) and the
//!   public [`Jwk`].
//! - [`KeyType`], [`Curve`], [`KeyOperation`], [`EncryptionAlgorithm`],
//!   [`SignatureAlgorithm`]: the contract's names; parsing an unsupported one fails with a
//!   [`MaterialError`] that lists the supported ones.
//!
//! Every private-key operation is AWS-LC's (through `aws-lc-rs`), which is constant-time;
//! sealdisk has no big-number code of its own. Key Vault semantics worth knowing:
//!
//! - `sign` and `verify` take the *digest* of the message, and its length must match the
//!   algorithm ([`SignatureAlgorithm::digest_len`]). ECDSA signatures are JOSE's fixed-length
//!   `r || s` (RFC 7518 §3.4), not DER. PSS uses MGF1 with the message hash and a salt as long
//!   as the digest.
//! - `wrap_key`/`unwrap_key` are the same RSA operations as `encrypt`/`decrypt`.
//! - All decryption failures are one opaque [`MaterialError::DecryptionFailed`].
//! - `RSA-HSM`/`EC-HSM` fail with [`MaterialError::HsmUnavailable`]: sealdisk has no PKCS#11
//!   HSM yet and never silently keeps such a key in software.
//!
//! JWK import hands the components to AWS-LC (`rsa::KeyPair::from_components`,
//! `EcdsaKeyPair::from_private_key_and_public_key`), which checks that they form one key
//! (n = p·q, d, dp, dq, qi consistent; the EC point is d·G); no DER is written by hand here.
//!
//! Private keys live in two places only: the canonical PKCS#8 v1 DER in a
//! [`Zeroizing`] buffer (for sealing), and AWS-LC's own key objects, whose memory AWS-LC
//! cleanses when it frees them.

mod error;
mod jwk;
mod names;
mod public;

use std::fmt;

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rsa::{
    KeyPairComponents as RsaKeyPairComponents, KeySize, OaepPrivateDecryptingKey,
    Pkcs1PrivateDecryptingKey, PrivateDecryptingKey,
};
use aws_lc_rs::signature::{EcdsaKeyPair, KeyPair as _, RsaKeyPair, RsaPublicKeyComponents};
use zeroize::{Zeroize, Zeroizing};

pub use error::MaterialError;
pub use jwk::{Jwk, JwkSecret};
pub use names::{Curve, EncryptionAlgorithm, KeyOperation, KeyType, SignatureAlgorithm};
pub use public::PublicKey;

use public::Scheme;

const RSA_IMPORT_NEEDS: &str = "importing an RSA key needs n, e, d, p, q, dp, dq and qi";
const EC_IMPORT_NEEDS: &str = "importing an EC key needs crv, x, y and d";

/// A private key with its public key. `Debug` shows only the type and size.
pub struct KeyMaterial {
    /// Canonical PKCS#8 v1 DER of the private key, as AWS-LC writes it.
    pkcs8: Zeroizing<Vec<u8>>,
    private: Private,
    public: PublicKey,
}

enum Private {
    Rsa {
        signing: RsaKeyPair,
        decrypting: PrivateDecryptingKey,
    },
    Ec {
        signing: EcdsaKeyPair,
    },
}

impl fmt::Debug for KeyMaterial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyMaterial")
            .field("public", &self.public)
            .field("private", &format_args!("<redacted>"))
            .finish()
    }
}

impl KeyMaterial {
    /// Generates an RSA key of `bits` (2048, 3072 or 4096) with public exponent 65537.
    pub fn generate_rsa(bits: usize) -> Result<Self, MaterialError> {
        let size = match bits {
            2048 => KeySize::Rsa2048,
            3072 => KeySize::Rsa3072,
            4096 => KeySize::Rsa4096,
            _ => return Err(MaterialError::UnsupportedRsaKeySize { bits }),
        };
        let generation_failed = |source| MaterialError::KeyGeneration {
            kind: format!("RSA-{bits}"),
            source,
        };
        let pair = RsaKeyPair::generate(size).map_err(generation_failed)?;
        let der = pair.as_der().map_err(generation_failed)?;
        Self::from_pkcs8(der.as_ref())
    }

    /// Generates an EC key on `curve`.
    pub fn generate_ec(curve: Curve) -> Result<Self, MaterialError> {
        let generation_failed = |source| MaterialError::KeyGeneration {
            kind: format!("EC {curve}"),
            source,
        };
        let pair = EcdsaKeyPair::generate(curve.signing()).map_err(generation_failed)?;
        let der = pair.to_pkcs8v1().map_err(generation_failed)?;
        Self::from_pkcs8(der.as_ref())
    }

    /// Loads a PKCS#8 v1 private key: RSA (2048, 3072 or 4096 bits) or EC (P-256, P-384,
    /// P-521). Used to reload a key after [`crate::seal::open`]. The key is re-encoded, so
    /// [`KeyMaterial::pkcs8`] is canonical whatever encoding came in.
    pub fn from_pkcs8(der: &[u8]) -> Result<Self, MaterialError> {
        let rsa_error = match RsaKeyPair::from_pkcs8(der) {
            Ok(signing) => return Self::from_rsa(signing),
            Err(e) => e,
        };
        for curve in Curve::ALL {
            if let Ok(signing) = EcdsaKeyPair::from_pkcs8(curve.signing(), der) {
                return Self::from_ec(*curve, signing);
            }
        }
        Err(MaterialError::InvalidPkcs8 { source: rsa_error })
    }

    /// Imports a JWK with its private members: RSA `n, e, d, p, q, dp, dq, qi` (all of them;
    /// AWS-LC checks that they belong together) or EC `crv, x, y, d`. The loaded key's public
    /// key is compared with the JWK's. `kid` and `key_ops` are ignored here.
    pub fn from_jwk(key: &Jwk) -> Result<Self, MaterialError> {
        match public::jwk_key_type(key)? {
            KeyType::Rsa => Self::from_rsa_jwk(key),
            KeyType::Ec => Self::from_ec_jwk(key),
        }
    }

    fn from_rsa_jwk(key: &Jwk) -> Result<Self, MaterialError> {
        let public = PublicKey::from_jwk(key)?;
        let d = jwk::private_field(key.d.as_ref(), "d", RSA_IMPORT_NEEDS)?;
        let p = jwk::private_field(key.p.as_ref(), "p", RSA_IMPORT_NEEDS)?;
        let q = jwk::private_field(key.q.as_ref(), "q", RSA_IMPORT_NEEDS)?;
        let dp = jwk::private_field(key.dp.as_ref(), "dp", RSA_IMPORT_NEEDS)?;
        let dq = jwk::private_field(key.dq.as_ref(), "dq", RSA_IMPORT_NEEDS)?;
        let qi = jwk::private_field(key.qi.as_ref(), "qi", RSA_IMPORT_NEEDS)?;
        let (n, e) = public
            .rsa_components()
            .ok_or(MaterialError::JwkPublicKeyMismatch)?;
        let components = RsaKeyPairComponents {
            public_key: RsaPublicKeyComponents { n, e },
            d: &d[..],
            p: &p[..],
            q: &q[..],
            dP: &dp[..],
            dQ: &dq[..],
            qInv: &qi[..],
        };
        let pair = RsaKeyPair::from_components(&components).map_err(|source| {
            MaterialError::InvalidJwkKey {
                kty: KeyType::Rsa,
                source,
            }
        })?;
        let der = pair
            .as_der()
            .map_err(|source| MaterialError::KeyEncoding { source })?;
        let material = Self::from_pkcs8(der.as_ref())?;
        if material.public.rsa_components() != Some((n, e)) {
            return Err(MaterialError::JwkPublicKeyMismatch);
        }
        Ok(material)
    }

    fn from_ec_jwk(key: &Jwk) -> Result<Self, MaterialError> {
        let public = PublicKey::from_jwk(key)?;
        let Some(curve) = public.curve() else {
            return Err(MaterialError::JwkPublicKeyMismatch);
        };
        let d = jwk::private_field(key.d.as_ref(), "d", EC_IMPORT_NEEDS)?;
        let len = curve.coordinate_len();
        if d.len() > len {
            return Err(MaterialError::JwkFieldLength {
                field: "d",
                curve,
                len: d.len(),
                max: len,
            });
        }
        let mut scalar = Zeroizing::new(vec![0u8; len]);
        scalar[len - d.len()..].copy_from_slice(&d);
        let point = public
            .ec_point()
            .ok_or(MaterialError::JwkPublicKeyMismatch)?;
        let pair = EcdsaKeyPair::from_private_key_and_public_key(curve.signing(), &scalar, point)
            .map_err(|source| MaterialError::InvalidJwkKey {
            kty: KeyType::Ec,
            source,
        })?;
        let der = pair
            .to_pkcs8v1()
            .map_err(|source| MaterialError::KeyEncoding { source })?;
        let material = Self::from_pkcs8(der.as_ref())?;
        if material.public.ec_point() != Some(point) {
            return Err(MaterialError::JwkPublicKeyMismatch);
        }
        Ok(material)
    }

    fn from_rsa(signing: RsaKeyPair) -> Result<Self, MaterialError> {
        let der = signing
            .as_der()
            .map_err(|source| MaterialError::KeyEncoding { source })?;
        let pkcs8 = Zeroizing::new(der.as_ref().to_vec());
        let decrypting = PrivateDecryptingKey::from_pkcs8(&pkcs8)
            .map_err(|source| MaterialError::InvalidPkcs8 { source })?;
        let key = signing.public_key();
        let public = PublicKey::rsa(
            key.modulus().big_endian_without_leading_zero(),
            key.exponent().big_endian_without_leading_zero(),
        )?;
        Ok(Self {
            pkcs8,
            private: Private::Rsa {
                signing,
                decrypting,
            },
            public,
        })
    }

    fn from_ec(curve: Curve, signing: EcdsaKeyPair) -> Result<Self, MaterialError> {
        let der = signing
            .to_pkcs8v1()
            .map_err(|source| MaterialError::KeyEncoding { source })?;
        let pkcs8 = Zeroizing::new(der.as_ref().to_vec());
        let public = PublicKey::ec(curve, signing.public_key().as_ref())?;
        Ok(Self {
            pkcs8,
            private: Private::Ec { signing },
            public,
        })
    }

    /// The private key as canonical PKCS#8 v1 DER, to be sealed with [`crate::seal::seal`].
    pub fn pkcs8(&self) -> &[u8] {
        &self.pkcs8
    }

    /// The public key.
    pub fn public_key(&self) -> &PublicKey {
        &self.public
    }

    /// The public JWK (see [`PublicKey::jwk`]); never contains a private member.
    pub fn public_jwk(&self) -> Jwk {
        self.public.jwk()
    }

    /// `RSA` or `EC`.
    pub fn key_type(&self) -> KeyType {
        self.public.key_type()
    }

    /// The curve of an EC key.
    pub fn curve(&self) -> Option<Curve> {
        self.public.curve()
    }

    /// The modulus size of an RSA key, in bits.
    pub fn rsa_bits(&self) -> Option<usize> {
        self.public.rsa_bits()
    }

    /// Encrypts with the public key (RSA only).
    pub fn encrypt(
        &self,
        alg: EncryptionAlgorithm,
        plaintext: &[u8],
    ) -> Result<Vec<u8>, MaterialError> {
        self.public.encrypt(alg, plaintext)
    }

    /// Wraps a key with the public key: the same operation as [`KeyMaterial::encrypt`].
    pub fn wrap_key(&self, alg: EncryptionAlgorithm, key: &[u8]) -> Result<Vec<u8>, MaterialError> {
        self.public.encrypt(alg, key)
    }

    /// Decrypts with the private key (RSA only). The ciphertext must be exactly as long as
    /// the modulus. Every failure is [`MaterialError::DecryptionFailed`].
    pub fn decrypt(
        &self,
        alg: EncryptionAlgorithm,
        ciphertext: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, MaterialError> {
        let Private::Rsa { decrypting, .. } = &self.private else {
            return Err(MaterialError::WrongKeyType {
                alg: alg.as_str(),
                needs: KeyType::Rsa,
                actual: self.key_type(),
            });
        };
        let size = decrypting.key_size_bytes();
        if ciphertext.len() != size {
            return Err(MaterialError::DecryptionFailed);
        }
        let mut out = Zeroizing::new(vec![0u8; size]);
        let len = match public::oaep(alg) {
            Some(oaep) => OaepPrivateDecryptingKey::new(decrypting.clone()).and_then(|key| {
                key.decrypt(oaep, ciphertext, &mut out, None)
                    .map(|p| p.len())
            }),
            None => Pkcs1PrivateDecryptingKey::new(decrypting.clone())
                .and_then(|key| key.decrypt(ciphertext, &mut out).map(|p| p.len())),
        }
        .map_err(|_| MaterialError::DecryptionFailed)?;
        out[len..].zeroize();
        out.truncate(len);
        Ok(out)
    }

    /// Unwraps a key with the private key: the same operation as [`KeyMaterial::decrypt`].
    pub fn unwrap_key(
        &self,
        alg: EncryptionAlgorithm,
        wrapped: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, MaterialError> {
        self.decrypt(alg, wrapped)
    }

    /// Signs `digest`, the caller's hash of the message (Key Vault semantics; its length must
    /// be [`SignatureAlgorithm::digest_len`]). RSA signatures are as long as the modulus;
    /// ECDSA signatures are JOSE `r || s`, each the curve's coordinate length.
    pub fn sign(&self, alg: SignatureAlgorithm, digest: &[u8]) -> Result<Vec<u8>, MaterialError> {
        let scheme = self.public.scheme(alg)?;
        let digest = public::import_digest(alg, digest)?;
        let failed = |source| MaterialError::SigningFailed { source };
        match (&self.private, scheme) {
            (
                Private::Rsa { signing, .. },
                Scheme::Rsa {
                    signing: encoding, ..
                },
            ) => {
                let mut signature = vec![0u8; signing.public_modulus_len()];
                signing
                    .sign_digest(encoding, &digest, &mut signature)
                    .map_err(failed)?;
                Ok(signature)
            }
            (Private::Ec { signing }, Scheme::Ec(_)) => Ok(signing
                .sign_digest(&digest)
                .map_err(failed)?
                .as_ref()
                .to_vec()),
            _ => Err(MaterialError::WrongKeyType {
                alg: alg.as_str(),
                needs: alg.key_type(),
                actual: self.key_type(),
            }),
        }
    }

    /// Verifies a signature of `digest` with the public key (see [`PublicKey::verify`]).
    pub fn verify(
        &self,
        alg: SignatureAlgorithm,
        digest: &[u8],
        signature: &[u8],
    ) -> Result<bool, MaterialError> {
        self.public.verify(alg, digest, signature)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p256() -> KeyMaterial {
        KeyMaterial::generate_ec(Curve::P256).unwrap()
    }

    #[test]
    fn names_round_trip_through_json_exactly_as_in_the_contract() {
        fn check<T>(all: &[T], names: &[&str])
        where
            T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + fmt::Debug + Copy,
        {
            assert_eq!(all.len(), names.len());
            for (value, name) in all.iter().zip(names) {
                assert_eq!(serde_json::to_value(value).unwrap(), *name);
                let parsed: T = serde_json::from_value(serde_json::json!(name)).unwrap();
                assert_eq!(parsed, *value);
            }
        }
        check(KeyType::ALL, &["RSA", "EC"]);
        check(Curve::ALL, &["P-256", "P-384", "P-521"]);
        check(
            KeyOperation::ALL,
            &[
                "encrypt",
                "decrypt",
                "sign",
                "verify",
                "wrapKey",
                "unwrapKey",
                "import",
                "export",
            ],
        );
        check(
            EncryptionAlgorithm::ALL,
            &["RSA-OAEP", "RSA-OAEP-256", "RSA1_5"],
        );
        check(
            SignatureAlgorithm::ALL,
            &[
                "PS256", "PS384", "PS512", "RS256", "RS384", "RS512", "ES256", "ES384", "ES512",
            ],
        );
    }

    #[test]
    fn unsupported_names_fail_with_errors_that_name_the_alternatives() {
        assert!(matches!(
            "RSA-HSM".parse::<KeyType>(),
            Err(MaterialError::HsmUnavailable { kty }) if kty == "RSA-HSM"
        ));
        assert!(matches!(
            "EC-HSM".parse::<KeyType>(),
            Err(MaterialError::HsmUnavailable { .. })
        ));
        assert!(matches!(
            "oct".parse::<KeyType>(),
            Err(MaterialError::UnsupportedKeyType { .. })
        ));
        assert!(matches!(
            "rsa".parse::<KeyType>(),
            Err(MaterialError::UnsupportedKeyType { .. })
        ));
        let err = "P-256K".parse::<Curve>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "Curve 'P-256K' is not supported; use P-256, P-384 or P-521."
        );
        let err = "A256GCM".parse::<EncryptionAlgorithm>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "Encryption algorithm 'A256GCM' is not supported; use RSA-OAEP-256, RSA-OAEP or RSA1_5."
        );
        for name in ["ES256K", "HS256", "RSNULL", "es256"] {
            assert!(matches!(
                name.parse::<SignatureAlgorithm>(),
                Err(MaterialError::UnsupportedSignatureAlgorithm { .. })
            ));
        }
        assert!(matches!(
            "wrapkey".parse::<KeyOperation>(),
            Err(MaterialError::UnsupportedKeyOperation { .. })
        ));
        // Through serde, the same message.
        let err = serde_json::from_str::<KeyType>("\"RSA-HSM\"").unwrap_err();
        assert!(err.to_string().contains("needs a PKCS#11 HSM"), "{err}");
    }

    #[test]
    fn signature_algorithms_know_their_digest_key_type_and_curve() {
        use SignatureAlgorithm as A;
        let expected = [
            (A::Ps256, 32, KeyType::Rsa, None),
            (A::Ps384, 48, KeyType::Rsa, None),
            (A::Ps512, 64, KeyType::Rsa, None),
            (A::Rs256, 32, KeyType::Rsa, None),
            (A::Rs384, 48, KeyType::Rsa, None),
            (A::Rs512, 64, KeyType::Rsa, None),
            (A::Es256, 32, KeyType::Ec, Some(Curve::P256)),
            (A::Es384, 48, KeyType::Ec, Some(Curve::P384)),
            (A::Es512, 64, KeyType::Ec, Some(Curve::P521)),
        ];
        for (alg, len, kty, curve) in expected {
            assert_eq!(alg.digest_len(), len, "{alg}");
            assert_eq!(alg.digest_algorithm().output_len(), len, "{alg}");
            assert_eq!(alg.key_type(), kty, "{alg}");
            assert_eq!(alg.curve(), curve, "{alg}");
            if let Some(curve) = curve {
                assert_eq!(curve.signature_algorithm(), alg);
            }
        }
    }

    #[test]
    fn rsa_sizes_other_than_2048_3072_4096_are_refused() {
        for bits in [0, 1024, 2047, 2049, 8192] {
            let err = KeyMaterial::generate_rsa(bits).unwrap_err();
            assert_eq!(
                err.to_string(),
                format!("RSA key size {bits} is not supported; use 2048, 3072 or 4096.")
            );
        }
    }

    #[test]
    fn rsa_public_keys_of_other_sizes_are_refused_with_their_size() {
        for (n, bits) in [
            (vec![0xff; 128], 1024),
            (vec![0x7f; 256], 2047),
            (vec![0x01; 257], 2049),
        ] {
            let jwk = Jwk {
                kty: Some("RSA".into()),
                n: Some(jwk::encode(&n)),
                e: Some("AQAB".into()),
                ..Jwk::default()
            };
            assert!(matches!(
                PublicKey::from_jwk(&jwk),
                Err(MaterialError::UnsupportedRsaKeySize { bits: b }) if b == bits
            ));
        }
    }

    #[test]
    fn debug_never_shows_private_parts() {
        let key = p256();
        let shown = format!("{key:?}");
        assert_eq!(
            shown,
            "KeyMaterial { public: PublicKey(EC P-256), private: <redacted> }"
        );
        let jwk = Jwk {
            kty: Some("RSA".into()),
            d: Some("c2VjcmV0LWQ".into()),
            p: Some("c2VjcmV0LXA".into()),
            ..Jwk::default()
        };
        let shown = format!("{jwk:?}");
        assert!(!shown.contains("c2VjcmV0"), "{shown}");
        assert!(shown.contains("<redacted>"), "{shown}");
    }

    #[test]
    fn jwk_serializes_only_present_members_with_key_vault_names() {
        let jwk = Jwk {
            kid: Some("https://v.vault.localhost/keys/k/1".into()),
            kty: Some("RSA".into()),
            key_ops: Some(vec!["wrapKey".into()]),
            n: Some("AQAB".into()),
            e: Some("AQAB".into()),
            key_hsm: Some("aHNt".into()),
            ..Jwk::default()
        };
        let value = serde_json::to_value(&jwk).unwrap();
        let mut keys: Vec<_> = value.as_object().unwrap().keys().cloned().collect();
        keys.sort();
        assert_eq!(keys, ["e", "key_hsm", "key_ops", "kid", "kty", "n"]);
        let back: Jwk = serde_json::from_value(value).unwrap();
        assert_eq!(back, jwk);
        assert!(back.has_private());
        let public = back.without_private();
        assert!(!public.has_private());
        assert_eq!(public.n, jwk.n);
        let mut stripped = back.clone();
        stripped.strip_private();
        assert_eq!(stripped, public);
    }

    #[test]
    fn signing_checks_key_type_curve_and_digest_length() {
        let ec = p256();
        let digest = [7u8; 32];
        assert!(matches!(
            ec.sign(SignatureAlgorithm::Rs256, &digest),
            Err(MaterialError::WrongKeyType {
                needs: KeyType::Rsa,
                actual: KeyType::Ec,
                ..
            })
        ));
        let err = ec.sign(SignatureAlgorithm::Es384, &[7u8; 48]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "Algorithm ES384 needs a P-384 key, and this key is P-256; use ES256."
        );
        let err = ec.sign(SignatureAlgorithm::Es256, &[7u8; 20]).unwrap_err();
        assert!(matches!(
            err,
            MaterialError::DigestLength {
                expected: 32,
                actual: 20,
                ..
            }
        ));
        assert!(matches!(
            ec.verify(SignatureAlgorithm::Es256, &[7u8; 31], &[0u8; 64]),
            Err(MaterialError::DigestLength { .. })
        ));
        assert!(matches!(
            ec.encrypt(EncryptionAlgorithm::RsaOaep256, b"x"),
            Err(MaterialError::WrongKeyType { .. })
        ));
        assert!(matches!(
            ec.unwrap_key(EncryptionAlgorithm::RsaOaep256, &[0u8; 256]),
            Err(MaterialError::WrongKeyType { .. })
        ));
        let signature = ec.sign(SignatureAlgorithm::Es256, &digest).unwrap();
        assert_eq!(signature.len(), 64);
        assert!(
            ec.verify(SignatureAlgorithm::Es256, &digest, &signature)
                .unwrap()
        );
        assert!(
            !ec.verify(SignatureAlgorithm::Es256, &[8u8; 32], &signature)
                .unwrap()
        );
        assert!(
            !ec.verify(SignatureAlgorithm::Es256, &digest, &signature[..63])
                .unwrap()
        );
    }

    #[test]
    fn reloading_pkcs8_keeps_the_key() {
        let key = p256();
        let again = KeyMaterial::from_pkcs8(key.pkcs8()).unwrap();
        assert_eq!(again.public_jwk(), key.public_jwk());
        assert_eq!(again.pkcs8(), key.pkcs8());
        assert!(matches!(
            KeyMaterial::from_pkcs8(b"not a key"),
            Err(MaterialError::InvalidPkcs8 { .. })
        ));
    }

    #[test]
    fn jwk_import_reports_what_is_missing() {
        let mut jwk = p256().public_jwk();
        let err = KeyMaterial::from_jwk(&jwk).unwrap_err();
        assert_eq!(
            err.to_string(),
            "The JWK has no 'd'; importing an EC key needs crv, x, y and d."
        );
        jwk.kty = None;
        assert!(matches!(
            KeyMaterial::from_jwk(&jwk),
            Err(MaterialError::MissingJwkField { field: "kty", .. })
        ));
        jwk.kty = Some("EC-HSM".into());
        assert!(matches!(
            KeyMaterial::from_jwk(&jwk),
            Err(MaterialError::HsmUnavailable { .. })
        ));
        jwk.kty = Some("EC".into());
        jwk.crv = Some("P-256K".into());
        assert!(matches!(
            KeyMaterial::from_jwk(&jwk),
            Err(MaterialError::UnsupportedCurve { .. })
        ));
        jwk.crv = Some("P-256".into());
        jwk.d = Some("!!".into());
        assert!(matches!(
            KeyMaterial::from_jwk(&jwk),
            Err(MaterialError::InvalidJwkEncoding { field: "d", .. })
        ));
    }
}
