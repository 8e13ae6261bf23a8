//! The Entra-compatible token service (`/{tenant}/oauth2/v2.0/token`, OIDC discovery, JWKS)
//! and the cloud metadata document `az cloud register` reads.

use std::collections::HashMap;

use axum::http::{Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use control::ids::AppId;
use serde_json::json;

use super::{Req, ok};
use crate::AppState;
use crate::error::{ApiError, ApiResult};

/// `GET /metadata/endpoints`: both the 2015-01-01 and the 2022-09-01 shapes in one document.
pub fn metadata_endpoints(state: &AppState) -> Response {
    let e = &state.endpoints;
    let arm = e.arm();
    let graph = e.graph();
    let portal = format!("{arm}portal");
    ok(json!({
        "name": "sealdisk",
        "resourceManager": arm,
        "portal": portal,
        "portalEndpoint": portal,
        "authentication": {
            "loginEndpoint": arm,
            "audiences": [arm],
            "tenant": state.control.tenant().to_string(),
            "identityProvider": "AAD"
        },
        "graph": graph,
        "graphEndpoint": graph,
        "graphAudience": graph,
        "microsoftGraphResourceId": graph,
        "gallery": format!("{arm}gallery"),
        "galleryEndpoint": format!("{arm}gallery"),
        "suffixes": {
            "keyVaultDns": e.vault_suffix(),
            "storage": format!("storage.{}", e.domain),
            "acrLoginServer": format!("acr.{}", e.domain),
            "sqlServerHostname": format!("sql.{}", e.domain)
        }
    }))
}

/// Routes `/{tenant}/...` identity endpoints.
pub fn route(state: &AppState, req: &Req) -> ApiResult<Response> {
    let s = |i| req.seg(i).to_ascii_lowercase();
    let rest: Vec<String> = (1..req.segments.len()).map(s).collect();
    let rest: Vec<&str> = rest.iter().map(String::as_str).collect();
    let tenant = req.seg(0);
    let known = tenant.eq_ignore_ascii_case(&state.control.tenant().to_string());
    let reply = match (&req.method, rest.as_slice()) {
        (
            &Method::GET,
            ["v2.0", ".well-known", "openid-configuration"]
            | [".well-known", "openid-configuration"],
        ) => {
            if !known {
                return Ok(aad_error(tenant_not_found(tenant)));
            }
            openid_configuration(state)
        }
        (&Method::GET, ["discovery", "v2.0", "keys"] | ["discovery", "keys"]) => {
            ok(state.tokens.jwks())
        }
        (&Method::POST, ["oauth2", "v2.0", "token"]) => token(state, req, known, tenant, false),
        (&Method::POST, ["oauth2", "token"]) => token(state, req, known, tenant, true),
        _ => return Err(ApiError::NoRoute(format!("/{}", req.segments.join("/")))),
    };
    Ok(reply)
}

fn openid_configuration(state: &AppState) -> Response {
    let base = format!("{}{}", state.endpoints.arm(), state.control.tenant());
    ok(json!({
        "issuer": state.tokens.issuer(),
        "authorization_endpoint": format!("{base}/oauth2/v2.0/authorize"),
        "token_endpoint": format!("{base}/oauth2/v2.0/token"),
        "device_authorization_endpoint": format!("{base}/oauth2/v2.0/devicecode"),
        "jwks_uri": format!("{base}/discovery/v2.0/keys"),
        "response_types_supported": ["token"],
        "grant_types_supported": ["client_credentials"],
        "subject_types_supported": ["pairwise"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "token_endpoint_auth_methods_supported": ["client_secret_post", "client_secret_basic"],
        "scopes_supported": ["openid"],
        "claims_supported": ["aud", "iss", "iat", "nbf", "exp", "tid", "oid", "sub", "appid", "azp", "idtyp", "ver"],
        "tenant_region_scope": null,
        "cloud_instance_name": state.endpoints.domain,
        "cloud_graph_host_name": state.endpoints.domain,
        "msgraph_host": state.endpoints.domain
    }))
}

/// An OAuth error as Entra shapes it.
struct AadError {
    status: StatusCode,
    error: &'static str,
    code: u32,
    description: String,
}

fn aad_error(e: AadError) -> Response {
    let now = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    (
        e.status,
        axum::Json(json!({
            "error": e.error,
            "error_description": format!("AADSTS{}: {}", e.code, e.description),
            "error_codes": [e.code],
            "timestamp": now,
            "trace_id": uuid::Uuid::new_v4().to_string(),
            "correlation_id": uuid::Uuid::new_v4().to_string()
        })),
    )
        .into_response()
}

fn tenant_not_found(tenant: &str) -> AadError {
    AadError {
        status: StatusCode::BAD_REQUEST,
        error: "invalid_request",
        code: 90002,
        description: format!(
            "Tenant '{tenant}' not found. Use the tenantId from the connection file."
        ),
    }
}

fn invalid_client(description: String, code: u32) -> AadError {
    AadError {
        status: StatusCode::UNAUTHORIZED,
        error: "invalid_client",
        code,
        description,
    }
}

fn token(state: &AppState, req: &Req, known_tenant: bool, tenant: &str, v1: bool) -> Response {
    match issue(state, req, known_tenant, tenant, v1) {
        Ok(r) => r,
        Err(Ok(aad)) => aad_error(aad),
        Err(Err(api)) => api.into_response(),
    }
}

type IssueResult = Result<Response, Result<AadError, ApiError>>;

fn issue(state: &AppState, req: &Req, known_tenant: bool, tenant: &str, v1: bool) -> IssueResult {
    if !known_tenant {
        return Err(Ok(tenant_not_found(tenant)));
    }
    let form: HashMap<String, String> = serde_urlencoded::from_bytes(&req.body).unwrap_or_default();
    let missing = |name: &str| AadError {
        status: StatusCode::BAD_REQUEST,
        error: "invalid_request",
        code: 900144,
        description: format!("The request body must contain the following parameter: '{name}'."),
    };
    let grant = form
        .get("grant_type")
        .ok_or_else(|| Ok(missing("grant_type")))?;
    if grant != "client_credentials" {
        return Err(Ok(AadError {
            status: StatusCode::BAD_REQUEST,
            error: "unsupported_grant_type",
            code: 70003,
            description: format!(
                "The app requested an unsupported grant type '{grant}'. sealdisk supports client_credentials."
            ),
        }));
    }
    let (client_id, secret) =
        client_credentials(req, &form).ok_or_else(|| Ok(missing("client_id")))?;
    let resource = if v1 {
        form.get("resource")
            .cloned()
            .ok_or_else(|| Ok(missing("resource")))?
    } else {
        let scope = form.get("scope").ok_or_else(|| Ok(missing("scope")))?;
        scope
            .split_whitespace()
            .find_map(|s| s.strip_suffix("/.default"))
            .map(str::to_string)
            .ok_or_else(|| {
                Ok(AadError {
                    status: StatusCode::BAD_REQUEST,
                    error: "invalid_scope",
                    code: 1002012,
                    description: format!("The provided value for scope {scope} is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier (application ID URI)."),
                })
            })?
    };
    if state.tokens.audiences().surface_of(&resource).is_none() {
        return Err(Ok(AadError {
            status: StatusCode::BAD_REQUEST,
            error: "invalid_resource",
            code: 500011,
            description: format!(
                "The resource principal named {resource} was not found in the tenant. Known resources: {}, {}, {}.",
                state.endpoints.arm(),
                state.endpoints.graph(),
                state.endpoints.vault_resource()
            ),
        }));
    }
    let app_id: AppId = client_id.parse().map_err(|_| {
        Ok(invalid_client(
            format!("Application with identifier '{client_id}' was not found in the directory."),
            700016,
        ))
    })?;
    let principal = state
        .control
        .authenticate_client(app_id, &secret)
        .map_err(|e| Err(ApiError::from(e)))?
        .ok_or_else(|| {
            Ok(invalid_client(
                format!("Invalid client secret provided, or application '{client_id}' does not exist. Ensure the secret being sent in the request is the client secret value, not the client secret ID."),
                7000215,
            ))
        })?;
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let issued = state
        .tokens
        .issue(&principal, &resource, now)
        .map_err(|e| Err(ApiError::from(e)))?;
    let mut body = json!({
        "token_type": "Bearer",
        "expires_in": issued.expires_in,
        "ext_expires_in": issued.expires_in,
        "access_token": issued.access_token,
    });
    if v1 {
        body["expires_on"] = json!(issued.expires_on.to_string());
        body["not_before"] = json!(now.to_string());
        body["resource"] = json!(resource);
    }
    let mut response = ok(body);
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, "no-store".parse().expect("static"));
    Ok(response)
}

/// `client_id` and `client_secret` from the form, or from HTTP Basic authentication.
fn client_credentials(req: &Req, form: &HashMap<String, String>) -> Option<(String, String)> {
    if let (Some(id), Some(secret)) = (form.get("client_id"), form.get("client_secret")) {
        return Some((id.clone(), secret.clone()));
    }
    let basic = req
        .headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(basic.trim())
        .ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (id, secret) = decoded.split_once(':')?;
    let unescape = |s: &str| {
        percent_encoding::percent_decode_str(s)
            .decode_utf8_lossy()
            .into_owned()
    };
    Some((unescape(id), unescape(secret)))
}
