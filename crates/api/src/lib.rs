//! sealdisk's HTTPS front: Azure Resource Manager, the Entra-compatible token service, the
//! Microsoft Graph subset and (later) the Key Vault data plane, over rustls.
//!
//! Only this crate speaks HTTP. Every request is translated once into a call on
//! [`control::ControlPlane`]; every error leaves through the one table in [`error`].

mod auth;
pub mod endpoints;
pub mod error;
pub mod lro;
mod routes;
pub mod server;

use std::sync::Arc;

use control::ControlPlane;
use control::identity::TokenIssuer;

pub use endpoints::Endpoints;

/// Everything a request handler needs.
#[derive(Debug)]
pub struct AppState {
    pub control: ControlPlane,
    pub tokens: TokenIssuer,
    pub endpoints: Endpoints,
    /// The Key Vault audit log; a request whose entry cannot be appended is refused.
    pub audit: std::sync::Arc<keyvault::audit::AuditLog>,
}

/// The request handler as a cloneable axum router.
pub fn router(state: Arc<AppState>) -> axum::Router {
    routes::router(state)
}
