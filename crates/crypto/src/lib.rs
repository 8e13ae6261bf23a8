//! Cryptographic building blocks of sealdisk, all on AWS-LC (`aws-lc-rs`).
//!
//! Nothing here does network I/O; the few functions that touch files (`load_or_create`) say so
//! in their name. Key material lives only in zeroizing types whose `Debug` is redacted.

mod error;
pub mod files;
pub mod pki;
pub mod random;
pub mod root_key;
pub mod secret;
pub mod token_key;

pub use error::CryptoError;
pub use root_key::RootKey;
pub use token_key::TokenSigningKey;
