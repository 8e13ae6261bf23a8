//! The encrypted block store.
//!
//! So far only its sector cipher, [`xts`]: AES-256-XTS over 4096-byte data units.

pub mod xts;
