//! Client secrets: generated random, stored only as salted PBKDF2-HMAC-SHA256 hashes.

use std::num::NonZeroU32;

use aws_lc_rs::pbkdf2;
use base64::Engine;
use base64::engine::general_purpose::STANDARD_NO_PAD as B64;
use zeroize::Zeroizing;

use crate::{CryptoError, random};

const ALGORITHM: pbkdf2::Algorithm = pbkdf2::PBKDF2_HMAC_SHA256;
/// Secrets are 256 random bits, so the work factor only has to stop a stolen database from
/// being a list of live credentials; it is kept low enough for every token request.
const ITERATIONS: u32 = 10_000;
const PREFIX: &str = "pbkdf2-sha256";

/// A new client secret: 32 random bytes, URL-safe base64 (43 characters), as Azure's are opaque
/// printable strings.
pub fn generate() -> Result<Zeroizing<String>, CryptoError> {
    let bytes = random::secret_bytes::<32>()?;
    Ok(Zeroizing::new(
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes.as_ref()),
    ))
}

/// The storable hash of `secret`: `pbkdf2-sha256$ITER$SALT$HASH` (base64 without padding).
pub fn hash(secret: &str) -> Result<String, CryptoError> {
    let salt = random::bytes::<16>()?;
    let mut out = [0u8; 32];
    pbkdf2::derive(
        ALGORITHM,
        iterations(ITERATIONS),
        &salt,
        secret.as_bytes(),
        &mut out,
    );
    Ok(format!(
        "{PREFIX}${ITERATIONS}${}${}",
        B64.encode(salt),
        B64.encode(out)
    ))
}

/// Whether `secret` matches `stored` (constant time in the secret).
pub fn verify(secret: &str, stored: &str) -> bool {
    let mut parts = stored.split('$');
    let (Some(PREFIX), Some(iter), Some(salt), Some(hash), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return false;
    };
    let (Ok(iter), Ok(salt), Ok(hash)) = (iter.parse::<u32>(), B64.decode(salt), B64.decode(hash))
    else {
        return false;
    };
    if iter == 0 {
        return false;
    }
    pbkdf2::verify(ALGORITHM, iterations(iter), &salt, secret.as_bytes(), &hash).is_ok()
}

fn iterations(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_verifies_only_the_same_secret() {
        let secret = generate().unwrap();
        let stored = hash(&secret).unwrap();
        assert!(verify(&secret, &stored));
        assert!(!verify("other", &stored));
        assert!(!verify(&secret, "pbkdf2-sha256$0$AAAA$AAAA"));
        assert!(!verify(&secret, "garbage"));
        assert_ne!(stored, hash(&secret).unwrap(), "salted");
    }
}
