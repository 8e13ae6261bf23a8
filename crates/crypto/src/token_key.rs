//! The RSA key that signs access tokens (RS256), with its public JWK parts.

use std::fmt;
use std::path::Path;

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rsa::{KeyPair, KeySize};
use aws_lc_rs::signature::KeyPair as _;
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use zeroize::Zeroizing;

use crate::{CryptoError, files};

/// An RSA-2048 token signing key. `Debug` shows only the key id.
pub struct TokenSigningKey {
    pkcs8_pem: Zeroizing<String>,
    /// Key id: the first 16 bytes of SHA-256 over the modulus, URL-safe base64.
    pub kid: String,
    /// Modulus, URL-safe base64 without padding (JWK `n`).
    pub n: String,
    /// Public exponent, URL-safe base64 without padding (JWK `e`).
    pub e: String,
}

impl fmt::Debug for TokenSigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenSigningKey")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl TokenSigningKey {
    /// Reads the PKCS#8 key at `path`, creating one (mode 0600) on first start.
    pub fn load_or_create(path: &Path) -> Result<Self, CryptoError> {
        let der = match files::read_optional(path)? {
            Some(der) => Zeroizing::new(der),
            None => {
                let pair =
                    KeyPair::generate(KeySize::Rsa2048).map_err(|_| CryptoError::KeyGeneration)?;
                let der = pair.as_der().map_err(|_| CryptoError::KeyGeneration)?;
                let der = Zeroizing::new(der.as_ref().to_vec());
                files::write_atomic(path, &der, true)?;
                der
            }
        };
        let pair = KeyPair::from_pkcs8(&der).map_err(|e| CryptoError::InvalidKeyFile {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        let public = pair.public_key();
        let n_bytes = public.modulus().big_endian_without_leading_zero().to_vec();
        let e_bytes = public.exponent().big_endian_without_leading_zero().to_vec();
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &n_bytes);
        let pkcs8_pem = Zeroizing::new(pem("PRIVATE KEY", &der));
        Ok(Self {
            pkcs8_pem,
            kid: URL_SAFE_NO_PAD.encode(&digest.as_ref()[..16]),
            n: URL_SAFE_NO_PAD.encode(n_bytes),
            e: URL_SAFE_NO_PAD.encode(e_bytes),
        })
    }

    /// The private key as PKCS#8 PEM, for the JWT encoder.
    pub fn pkcs8_pem(&self) -> &str {
        &self.pkcs8_pem
    }
}

/// PEM-encodes `der` under `label`, 64 characters a line.
pub fn pem(label: &str, der: &[u8]) -> String {
    let b64 = STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}
