//! Long-running operation responses: `202 Accepted` with `Azure-AsyncOperation` and `Location`
//! headers pointing at the operation's status and result URLs, which `routes::arm` serves.

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::AppState;

/// The status URL of operation `id` under provider `namespace`.
pub fn status_url(state: &AppState, namespace: &str, id: &str, api_version: &str) -> String {
    format!(
        "{}subscriptions/{}/providers/{namespace}/locations/local/operations/{id}?api-version={api_version}",
        state.endpoints.arm(),
        state.control.subscription()
    )
}

/// `202 Accepted` for operation `id`: clients poll `Azure-AsyncOperation` for the status and
/// `Location` for the final result.
pub fn accepted(state: &AppState, namespace: &str, id: &str, api_version: &str) -> Response {
    let status = status_url(state, namespace, id, api_version);
    let result = format!("{status}&monitor=true");
    let mut headers = HeaderMap::new();
    for (name, value) in [("azure-asyncoperation", &status), ("location", &result)] {
        if let Ok(v) = HeaderValue::from_str(value) {
            headers.insert(name, v);
        }
    }
    headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    (StatusCode::ACCEPTED, headers).into_response()
}

/// `202 Accepted` whose only header is `Location` (resource group deletion, as ARM).
pub fn accepted_location_only(state: &AppState, id: &str, api_version: &str) -> Response {
    let location = format!(
        "{}subscriptions/{}/operationresults/{id}?api-version={api_version}",
        state.endpoints.arm(),
        state.control.subscription()
    );
    let mut headers = HeaderMap::new();
    if let Ok(v) = HeaderValue::from_str(&location) {
        headers.insert(header::LOCATION, v);
    }
    headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    (StatusCode::ACCEPTED, headers).into_response()
}
