//! The OS-seeded CSPRNG of AWS-LC.

use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use zeroize::Zeroizing;

use crate::CryptoError;

/// Fills a fresh zeroizing buffer of `N` random bytes.
pub fn secret_bytes<const N: usize>() -> Result<Zeroizing<[u8; N]>, CryptoError> {
    let mut bytes = Zeroizing::new([0u8; N]);
    SystemRandom::new()
        .fill(bytes.as_mut())
        .map_err(|_| CryptoError::Random)?;
    Ok(bytes)
}

/// `N` random bytes that are not secret (salts, identifiers).
pub fn bytes<const N: usize>() -> Result<[u8; N], CryptoError> {
    let mut bytes = [0u8; N];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| CryptoError::Random)?;
    Ok(bytes)
}

/// A random lowercase hex string of `2 * N` characters.
pub fn hex<const N: usize>() -> Result<String, CryptoError> {
    Ok(bytes::<N>()?.iter().map(|b| format!("{b:02x}")).collect())
}
