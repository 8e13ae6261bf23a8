use std::path::PathBuf;

/// What failed in a cryptographic operation or in loading key material.
#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    #[error("the system random generator failed")]
    Random,
    #[error("key file {path} is not valid: {reason}")]
    InvalidKeyFile { path: PathBuf, reason: String },
    #[error("key generation failed")]
    KeyGeneration,
    #[error("signing failed")]
    Signing,
    #[error("certificate generation failed: {0}")]
    Certificate(#[from] rcgen::Error),
    #[error("cannot access {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}
