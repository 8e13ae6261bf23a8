//! The deployment's platform root key: 256 random bits in a 0600 file (later sealed by an HSM).

use std::fmt;
use std::path::Path;

use zeroize::Zeroizing;

use crate::{CryptoError, files, random};

/// The platform root key. Wraps other keys; never leaves the process.
pub struct RootKey(Zeroizing<[u8; 32]>);

impl fmt::Debug for RootKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RootKey(<redacted>)")
    }
}

impl RootKey {
    /// Reads the key at `path`, creating a random one (mode 0600) on first start.
    pub fn load_or_create(path: &Path) -> Result<Self, CryptoError> {
        if let Some(bytes) = files::read_optional(path)? {
            let bytes = Zeroizing::new(bytes);
            let key: [u8; 32] =
                bytes
                    .as_slice()
                    .try_into()
                    .map_err(|_| CryptoError::InvalidKeyFile {
                        path: path.to_path_buf(),
                        reason: format!("expected 32 bytes, found {}", bytes.len()),
                    })?;
            return Ok(Self(Zeroizing::new(key)));
        }
        let key = random::secret_bytes::<32>()?;
        files::write_atomic(path, key.as_ref(), true)?;
        Ok(Self(key))
    }

    /// A fresh random key that lives only in memory (tests, ephemeral deployments).
    pub fn generate() -> Result<Self, CryptoError> {
        Ok(Self(random::secret_bytes::<32>()?))
    }

    /// The key bytes, for wrapping operations inside this crate's callers.
    pub fn expose(&self) -> &[u8; 32] {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn created_once_private_and_reloaded() {
        let dir = std::env::temp_dir().join(format!("rootkey-{}", random::hex::<8>().unwrap()));
        let path = dir.join("root.key");
        let first = RootKey::load_or_create(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let again = RootKey::load_or_create(&path).unwrap();
        assert_eq!(first.expose(), again.expose());
        assert_eq!(format!("{first:?}"), "RootKey(<redacted>)");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
