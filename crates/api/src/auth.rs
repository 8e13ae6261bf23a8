//! Bearer token authentication of API requests.

use axum::http::{HeaderMap, header};
use control::identity::{Claims, Surface};

use crate::AppState;
use crate::error::ApiError;

/// Who is calling: the validated claims of the request's token.
#[derive(Debug, Clone)]
pub struct Caller {
    pub claims: Claims,
}

/// Validates the request's bearer token for `surface`.
pub fn authenticate(
    state: &AppState,
    headers: &HeaderMap,
    surface: Surface,
) -> Result<Caller, ApiError> {
    let value = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .ok_or(ApiError::MissingAuthorization)?;
    let (scheme, token) = value
        .split_once(' ')
        .ok_or(ApiError::MissingAuthorization)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(ApiError::MissingAuthorization);
    }
    let claims = state.tokens.validate(token.trim(), surface)?;
    Ok(Caller { claims })
}
