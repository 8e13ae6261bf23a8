//! The Microsoft Graph v1.0 subset that `az` uses: service principals, applications with
//! password credentials, `directoryObjects/getByIds` and `/me`.
//!
//! Reads are open to every principal of the tenant, as in Entra ID. Writes (registering
//! applications, adding secrets, deleting principals) require the right to assign roles on
//! the subscription (Owner or User Access Administrator), sealdisk's stand-in for Entra's
//! `Application.ReadWrite.All`.

use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use control::ControlError;
use control::identity::Surface;
use control::ids::{AppId, ObjectId};
use control::store::{ApplicationRecord, CredentialRecord, PrincipalKind, PrincipalRecord};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{Req, ok, with_status};
use crate::AppState;
use crate::auth::{Caller, authenticate};
use crate::error::{ApiError, ApiResult};

const WRITE_ACTION: &str = "Microsoft.Authorization/roleAssignments/write";

pub fn route(state: &AppState, req: &Req) -> ApiResult<Response> {
    let caller = authenticate(state, &req.headers, Surface::Graph)?;
    if !req.is(1, "v1.0") && !req.is(1, "beta") {
        return Err(ApiError::NoRoute(format!("/{}", req.segments.join("/"))));
    }
    let rest: Vec<&str> = req.segments[2..].iter().map(String::as_str).collect();
    let lower: Vec<String> = rest.iter().map(|s| s.to_ascii_lowercase()).collect();
    let lower: Vec<&str> = lower.iter().map(String::as_str).collect();
    let m = &req.method;
    match (m, lower.as_slice()) {
        (&Method::GET, ["me"]) => Ok(graph_error(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "/me request is only valid with delegated authentication flow.",
        )),
        (&Method::GET, ["serviceprincipals"]) => list_principals(state, req),
        (&Method::POST, ["serviceprincipals"]) => create_principal(state, req, &caller),
        (&Method::GET, ["serviceprincipals", _]) => {
            let p = principal(state, rest[1])?;
            Ok(ok(principal_json(state, &p)))
        }
        (&Method::DELETE, ["serviceprincipals", _]) => {
            require_writer(state, &caller)?;
            let p = principal(state, rest[1])?;
            state.control.delete_principal(p.object_id)?;
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        (&Method::GET, ["applications"]) => list_applications(state, req),
        (&Method::POST, ["applications"]) => create_application(state, req, &caller),
        (&Method::GET, ["applications", _]) => {
            let app = application(state, rest[1])?;
            Ok(ok(application_json(state, &app)?))
        }
        (&Method::DELETE, ["applications", _]) => {
            require_writer(state, &caller)?;
            let app = application(state, rest[1])?;
            if let Some(p) = state
                .control
                .store()
                .principal_by_app_id(app.app_id)
                .map_err(ControlError::from)?
            {
                state.control.delete_principal(p.object_id)?;
            }
            state
                .control
                .store()
                .delete_application(app.object_id)
                .map_err(ControlError::from)?;
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        (&Method::POST, ["applications", _, "addpassword"]) => {
            add_password(state, req, &caller, rest[1])
        }
        (&Method::POST, ["applications", _, "removepassword"]) => {
            remove_password(state, req, &caller, rest[1])
        }
        (&Method::POST, ["directoryobjects", "getbyids"]) => get_by_ids(state, req),
        (&Method::GET, ["users" | "groups"]) => Ok(ok(json!({"value": []}))),
        _ => Ok(graph_error(
            StatusCode::BAD_REQUEST,
            "Request_BadRequest",
            &format!(
                "Unsupported Graph request: {} /graph/{}",
                m,
                req.segments[1..].join("/")
            ),
        )),
    }
}

fn graph_error(status: StatusCode, code: &str, message: &str) -> Response {
    with_status(
        status,
        json!({"error": {"code": code, "message": message, "innerError": {}}}),
    )
}

fn require_writer(state: &AppState, caller: &Caller) -> ApiResult<()> {
    Ok(state.control.authorize(
        caller.claims.oid,
        WRITE_ACTION,
        &state.control.subscription_scope(),
    )?)
}

fn rfc3339(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

fn principal_json(state: &AppState, p: &PrincipalRecord) -> Value {
    let (sp_type, names, alternative) = match &p.kind {
        PrincipalKind::ServicePrincipal => ("Application", vec![p.app_id.to_string()], vec![]),
        PrincipalKind::ManagedIdentity { resource_id } => (
            "ManagedIdentity",
            vec![p.app_id.to_string(), resource_id.clone()],
            vec!["isExplicit=False".to_string(), resource_id.clone()],
        ),
    };
    json!({
        "@odata.type": "#microsoft.graph.servicePrincipal",
        "id": p.object_id.to_string(),
        "appId": p.app_id.to_string(),
        "displayName": p.display_name,
        "appDisplayName": p.display_name,
        "servicePrincipalType": sp_type,
        "servicePrincipalNames": names,
        "alternativeNames": alternative,
        "accountEnabled": true,
        "appOwnerOrganizationId": state.control.tenant().to_string(),
        "createdDateTime": rfc3339(p.created),
        "passwordCredentials": [],
        "keyCredentials": []
    })
}

fn credential_json(c: &CredentialRecord) -> Value {
    json!({
        "customKeyIdentifier": null,
        "displayName": c.display_name,
        "endDateTime": rfc3339(c.end),
        "hint": null,
        "keyId": c.key_id.to_string(),
        "secretText": null,
        "startDateTime": rfc3339(c.start)
    })
}

fn application_json(state: &AppState, a: &ApplicationRecord) -> ApiResult<Value> {
    let creds = state
        .control
        .store()
        .credentials(a.object_id)
        .map_err(ControlError::from)?;
    Ok(json!({
        "@odata.type": "#microsoft.graph.application",
        "id": a.object_id.to_string(),
        "appId": a.app_id.to_string(),
        "displayName": a.display_name,
        "createdDateTime": rfc3339(a.created),
        "signInAudience": "AzureADMyOrg",
        "identifierUris": [],
        "passwordCredentials": creds.iter().map(credential_json).collect::<Vec<_>>(),
        "keyCredentials": []
    }))
}

fn not_found(id: &str) -> ApiError {
    ApiError::Control(ControlError::DirectoryObjectNotFound(id.to_string()))
}

fn principal(state: &AppState, id: &str) -> ApiResult<PrincipalRecord> {
    let object_id: ObjectId = id.parse().map_err(|_| not_found(id))?;
    state
        .control
        .store()
        .principal(object_id)
        .map_err(ControlError::from)?
        .ok_or_else(|| not_found(id))
}

fn application(state: &AppState, id: &str) -> ApiResult<ApplicationRecord> {
    let object_id: ObjectId = id.parse().map_err(|_| not_found(id))?;
    state
        .control
        .store()
        .application(object_id)
        .map_err(ControlError::from)?
        .ok_or_else(|| not_found(id))
}

/// The `$filter` forms az sends: `servicePrincipalNames/any(c:c eq 'X')`, `appId eq 'X'`,
/// `displayName eq 'X'`, `startswith(displayName,'X')`.
#[derive(Debug, PartialEq, Eq)]
enum Filter {
    All,
    Name(String),
    AppId(String),
    DisplayName(String),
    DisplayNamePrefix(String),
}

const FILTERS: &str = "servicePrincipalNames/any(c:c eq '...'), appId eq '...', displayName eq '...', startswith(displayName,'...')";

fn quoted(s: &str) -> Option<String> {
    let s = s.trim();
    let inner = s.strip_prefix('\'')?.strip_suffix('\'')?;
    Some(inner.replace("''", "'"))
}

fn parse_filter(filter: Option<&str>) -> ApiResult<Filter> {
    let Some(f) = filter.map(str::trim).filter(|f| !f.is_empty()) else {
        return Ok(Filter::All);
    };
    let unsupported = || ApiError::UnsupportedFilter(f.to_string(), FILTERS);
    let lower = f.to_ascii_lowercase();
    if lower.starts_with("serviceprincipalnames/any(") {
        let (_, rhs) = f.split_once(" eq ").ok_or_else(unsupported)?;
        let value = quoted(rhs.trim_end().strip_suffix(')').ok_or_else(unsupported)?)
            .ok_or_else(unsupported)?;
        return Ok(Filter::Name(value));
    }
    if let Some(args) = lower.strip_prefix("startswith(displayname,") {
        let _ = args;
        let inner = f[f.find(',').ok_or_else(unsupported)? + 1..]
            .trim_end()
            .strip_suffix(')')
            .ok_or_else(unsupported)?;
        return Ok(Filter::DisplayNamePrefix(
            quoted(inner).ok_or_else(unsupported)?,
        ));
    }
    let (lhs, rhs) = f.split_once(" eq ").ok_or_else(unsupported)?;
    let value = quoted(rhs).ok_or_else(unsupported)?;
    match lhs.trim().to_ascii_lowercase().as_str() {
        "appid" => Ok(Filter::AppId(value)),
        "displayname" => Ok(Filter::DisplayName(value)),
        _ => Err(unsupported()),
    }
}

fn matches(filter: &Filter, names: &[String], app_id: AppId, display_name: &str) -> bool {
    match filter {
        Filter::All => true,
        Filter::Name(n) => names.iter().any(|x| x.eq_ignore_ascii_case(n)),
        Filter::AppId(a) => app_id.to_string().eq_ignore_ascii_case(a),
        Filter::DisplayName(d) => display_name == d,
        Filter::DisplayNamePrefix(p) => display_name.starts_with(p.as_str()),
    }
}

fn list_principals(state: &AppState, req: &Req) -> ApiResult<Response> {
    let filter = parse_filter(req.query("$filter"))?;
    let values: Vec<Value> = state
        .control
        .store()
        .principals()
        .map_err(ControlError::from)?
        .iter()
        .map(|p| principal_json(state, p))
        .filter(|v| {
            let names: Vec<String> = v["servicePrincipalNames"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|n| n.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default();
            let app_id = v["appId"]
                .as_str()
                .and_then(|a| a.parse().ok())
                .unwrap_or(AppId(uuid::Uuid::nil()));
            matches(
                &filter,
                &names,
                app_id,
                v["displayName"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    Ok(ok(
        json!({"@odata.context": format!("{}v1.0/$metadata#servicePrincipals", state.endpoints.graph()), "value": values}),
    ))
}

fn list_applications(state: &AppState, req: &Req) -> ApiResult<Response> {
    let filter = parse_filter(req.query("$filter"))?;
    let mut values = Vec::new();
    for a in state
        .control
        .store()
        .applications()
        .map_err(ControlError::from)?
    {
        if matches(&filter, &[a.app_id.to_string()], a.app_id, &a.display_name) {
            values.push(application_json(state, &a)?);
        }
    }
    Ok(ok(
        json!({"@odata.context": format!("{}v1.0/$metadata#applications", state.endpoints.graph()), "value": values}),
    ))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct NewApplication {
    display_name: String,
}

fn create_application(state: &AppState, req: &Req, caller: &Caller) -> ApiResult<Response> {
    require_writer(state, caller)?;
    let input: NewApplication = req.json()?;
    let app = ApplicationRecord {
        object_id: ObjectId::new_random(),
        app_id: AppId::new_random(),
        display_name: input.display_name,
        created: time::OffsetDateTime::now_utc().unix_timestamp(),
    };
    state
        .control
        .store()
        .insert_application(&app)
        .map_err(ControlError::from)?;
    Ok(with_status(
        StatusCode::CREATED,
        application_json(state, &app)?,
    ))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct NewServicePrincipal {
    app_id: String,
}

fn create_principal(state: &AppState, req: &Req, caller: &Caller) -> ApiResult<Response> {
    require_writer(state, caller)?;
    let input: NewServicePrincipal = req.json()?;
    let app_id: AppId = input.app_id.parse().map_err(|_| not_found(&input.app_id))?;
    let app = state
        .control
        .store()
        .application_by_app_id(app_id)
        .map_err(ControlError::from)?
        .ok_or_else(|| not_found(&input.app_id))?;
    let p = state
        .control
        .create_service_principal(app.app_id, &app.display_name)?;
    Ok(with_status(StatusCode::CREATED, principal_json(state, &p)))
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PasswordRequest {
    #[serde(default)]
    password_credential: Option<PasswordCredentialInput>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PasswordCredentialInput {
    #[serde(default)]
    display_name: Option<String>,
}

fn add_password(state: &AppState, req: &Req, caller: &Caller, id: &str) -> ApiResult<Response> {
    require_writer(state, caller)?;
    let app = application(state, id)?;
    let input: PasswordRequest = if req.body.is_empty() {
        PasswordRequest::default()
    } else {
        req.json()?
    };
    let name = input.password_credential.and_then(|p| p.display_name);
    let (secret, record) = state.control.add_password(app.object_id, name.as_deref())?;
    let mut body = credential_json(&record);
    body["secretText"] = json!(secret.as_str());
    body["hint"] = json!(secret.chars().take(3).collect::<String>());
    Ok(ok(body))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RemovePassword {
    key_id: uuid::Uuid,
}

fn remove_password(state: &AppState, req: &Req, caller: &Caller, id: &str) -> ApiResult<Response> {
    require_writer(state, caller)?;
    application(state, id)?;
    let input: RemovePassword = req.json()?;
    state
        .control
        .store()
        .delete_credential(input.key_id)
        .map_err(ControlError::from)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Debug, Deserialize)]
struct GetByIds {
    ids: Vec<String>,
}

fn get_by_ids(state: &AppState, req: &Req) -> ApiResult<Response> {
    let input: GetByIds = req.json()?;
    let mut values = Vec::new();
    for id in &input.ids {
        let Ok(object_id) = id.parse::<ObjectId>() else {
            continue;
        };
        let store = state.control.store();
        if let Some(p) = store.principal(object_id).map_err(ControlError::from)? {
            values.push(principal_json(state, &p));
        } else if let Some(a) = store.application(object_id).map_err(ControlError::from)? {
            values.push(application_json(state, &a)?);
        }
    }
    Ok(ok(
        json!({"@odata.context": format!("{}v1.0/$metadata#directoryObjects", state.endpoints.graph()), "value": values}),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_az_sends() {
        assert_eq!(
            parse_filter(Some("servicePrincipalNames/any(c:c eq 'abc')")).unwrap(),
            Filter::Name("abc".into())
        );
        assert_eq!(
            parse_filter(Some("displayName eq 'it''s'")).unwrap(),
            Filter::DisplayName("it's".into())
        );
        assert_eq!(
            parse_filter(Some("appId eq 'x'")).unwrap(),
            Filter::AppId("x".into())
        );
        assert_eq!(
            parse_filter(Some("startswith(displayName,'sp-')")).unwrap(),
            Filter::DisplayNamePrefix("sp-".into())
        );
        assert_eq!(parse_filter(None).unwrap(), Filter::All);
        assert!(parse_filter(Some("foo gt 3")).is_err());
    }
}
