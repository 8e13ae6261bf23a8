//! Request dispatch. ARM paths are matched segment by segment, case-insensitively on the fixed
//! words, with empty segments (`//metadata/endpoints`) ignored, as ARM does.

mod arm;
mod compute;
mod graph;
mod identity;
mod keyvault_arm;
mod vault;

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::Semaphore;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Method, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde_json::json;

use crate::AppState;
use crate::error::{ApiError, ApiResult};

/// Largest request body accepted.
const MAX_BODY: usize = 4 << 20;

pub fn router(state: Arc<AppState>) -> axum::Router {
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let shared = Shared {
        app: state,
        handlers: Arc::new(Semaphore::new(HANDLERS_PER_CORE * cores)),
    };
    axum::Router::new().fallback(dispatch).with_state(shared)
}

/// How many synchronous handlers may run at once per core: enough to keep the cores busy while
/// some wait for an fsync, few enough that CPU-bound work (RSA) does not thrash between threads.
/// A Key Vault request's wait for its audit entry does not count: that happens after its
/// handler has returned (see `Answer`).
const HANDLERS_PER_CORE: usize = 8;

/// What a synchronous handler returns: the response, and the audit entry that must be
/// acknowledged before the response may leave. The wait for the entry needs no thread.
pub(crate) struct Answer {
    response: Response,
    audit: Option<keyvault::audit::AuditTicket>,
}

impl Answer {
    /// A response that needs no audit entry.
    pub(crate) fn now(response: Response) -> Self {
        Self {
            response,
            audit: None,
        }
    }

    /// A response that may leave only once `audit` resolves to `Ok`.
    pub(crate) fn after_audit(response: Response, audit: keyvault::audit::AuditTicket) -> Self {
        Self {
            response,
            audit: Some(audit),
        }
    }

    /// The response once its audit entry is acknowledged; if the entry failed, the refusal
    /// in its place (fail-closed).
    async fn into_response(self) -> Response {
        match self.audit {
            Some(ticket) => match ticket.await {
                Ok(_) => self.response,
                Err(e) => {
                    tracing::error!(error = %e, "audit log append failed: refusing the operation");
                    ApiError::AuditUnavailable(e.to_string()).into_response()
                }
            },
            None => self.response,
        }
    }
}

#[derive(Clone)]
struct Shared {
    app: Arc<AppState>,
    handlers: Arc<Semaphore>,
}

/// One request, decoded once.
#[derive(Debug)]
pub(crate) struct Req {
    pub method: Method,
    pub headers: HeaderMap,
    /// Non-empty, percent-decoded path segments.
    pub segments: Vec<String>,
    /// Percent-decoded query pairs.
    pub query: Vec<(String, String)>,
    pub body: Bytes,
}

impl Req {
    /// The query parameter `name` (case-insensitive).
    pub fn query(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// `api-version`, required on every ARM call; any value is accepted.
    pub fn api_version(&self) -> ApiResult<&str> {
        self.query("api-version")
            .filter(|v| !v.is_empty())
            .ok_or(ApiError::MissingApiVersion)
    }

    /// The body as JSON of type `T`.
    pub fn json<T: DeserializeOwned>(&self) -> ApiResult<T> {
        serde_json::from_slice(&self.body)
            .map_err(|e| ApiError::InvalidRequestContent(e.to_string()))
    }

    /// Whether segment `i` is `word` (case-insensitive).
    pub fn is(&self, i: usize, word: &str) -> bool {
        self.segments
            .get(i)
            .is_some_and(|s| s.eq_ignore_ascii_case(word))
    }

    pub fn seg(&self, i: usize) -> &str {
        self.segments.get(i).map(String::as_str).unwrap_or_default()
    }
}

fn decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

async fn dispatch(State(shared): State<Shared>, request: Request<Body>) -> Response {
    let state = shared.app;
    let started = Instant::now();
    let (parts, body) = request.into_parts();
    let host = parts
        .uri
        .host()
        .map(str::to_string)
        .or_else(|| {
            parts
                .headers
                .get("host")
                .and_then(|h| h.to_str().ok())
                .map(str::to_string)
        })
        .unwrap_or_default();
    let path = parts.uri.path().to_string();
    let method = parts.method.clone();
    let response = match axum::body::to_bytes(body, MAX_BODY).await {
        Err(_) => ApiError::BodyTooLarge(MAX_BODY).into_response(),
        Ok(body) => {
            let req = Req {
                method: parts.method,
                headers: parts.headers,
                segments: path
                    .split('/')
                    .filter(|s| !s.is_empty())
                    .map(decode)
                    .collect(),
                query: parts
                    .uri
                    .query()
                    .map(|q| serde_urlencoded::from_str(q).unwrap_or_default())
                    .unwrap_or_default(),
                body,
            };
            // Handlers are synchronous (metadata store, RSA, fsync of the audit log): they run
            // on the blocking pool so that they never stall the async workers.
            let (state, host, path) = (state.clone(), host.clone(), path.clone());
            // Closed never: the semaphore lives as long as the router.
            let permit = shared.handlers.acquire_owned().await;
            let handled =
                tokio::task::spawn_blocking(move || match state.endpoints.vault_name(&host) {
                    Some(vault) => vault::handle(&state, &req, &path, vault),
                    None => {
                        Answer::now(route(&state, &req).unwrap_or_else(IntoResponse::into_response))
                    }
                })
                .await;
            drop(permit);
            match handled {
                Ok(answer) => answer.into_response().await,
                Err(e) => {
                    tracing::error!(error = %e, "request handler panicked");
                    ApiError::HandlerPanicked.into_response()
                }
            }
        }
    };
    let mut response = response;
    if response.status() == StatusCode::UNAUTHORIZED
        && !response
            .headers()
            .contains_key(axum::http::header::WWW_AUTHENTICATE)
    {
        // ARM's challenge names the login authority of the tenant.
        let challenge = format!(
            "Bearer authorization_uri=\"{}{}\", error=\"invalid_token\"",
            state.endpoints.arm(),
            state.control.tenant()
        );
        if let Ok(v) = axum::http::HeaderValue::from_str(&challenge) {
            response
                .headers_mut()
                .insert(axum::http::header::WWW_AUTHENTICATE, v);
        }
    }
    tracing::info!(
        %method, host, path, status = response.status().as_u16(),
        ms = started.elapsed().as_millis() as u64, "request"
    );
    response
}

fn route(state: &AppState, req: &Req) -> ApiResult<Response> {
    let n = req.segments.len();
    if n == 0 {
        return Err(ApiError::NoRoute("/".into()));
    }
    if n == 1 && req.is(0, "healthz") {
        return Ok((StatusCode::OK, "ok").into_response());
    }
    if n == 2 && req.is(0, "metadata") && req.is(1, "endpoints") {
        return Ok(identity::metadata_endpoints(state));
    }
    if req.is(0, "graph") {
        return graph::route(state, req);
    }
    if req.is(0, "subscriptions") || req.is(0, "providers") || req.is(0, "tenants") {
        return arm::route(state, req);
    }
    identity::route(state, req)
}

/// `200 OK` with a JSON body.
pub(crate) fn ok(body: serde_json::Value) -> Response {
    (StatusCode::OK, axum::Json(body)).into_response()
}

/// `status` with a JSON body.
pub(crate) fn with_status(status: StatusCode, body: serde_json::Value) -> Response {
    (status, axum::Json(body)).into_response()
}

/// An ARM list page.
pub(crate) fn list(values: Vec<serde_json::Value>) -> Response {
    ok(json!({"value": values}))
}
