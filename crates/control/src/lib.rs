//! The control plane's domain: the deployment (tenant, subscription, locations), identities and
//! their tokens, authorization (role definitions and assignments), ARM resources and
//! long-running operations, all persisted through the [`store::Store`] interface.
//!
//! Nothing here speaks HTTP: `api` translates requests into calls on [`ControlPlane`].

mod authz;
pub mod catalog;
mod deployment;
pub mod disks;
pub mod encryption_sets;
mod error;
pub mod identity;
pub mod ids;
pub mod keys;
pub mod operations;
pub mod resources;
pub mod snapshots;
pub mod store;
#[cfg(test)]
mod testing;
pub mod vaults;
pub mod vms;
pub mod volumes;

pub use authz::{RoleAssignment, RoleDefinition, RolePermission, builtin_roles, permits};
pub use deployment::{Bootstrap, Clock, ControlPlane, LOCATIONS, Location};
pub use error::ControlError;
