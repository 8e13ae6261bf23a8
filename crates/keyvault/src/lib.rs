//! Key Vault: key material and its cryptographic operations, sealing of private keys under the
//! platform root key, and the hash-chained audit log. No HTTP, no ARM: `control` and `api`
//! build the vault service on top.

pub mod audit;
pub mod material;
pub mod seal;
