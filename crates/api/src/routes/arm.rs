//! Azure Resource Manager: tenants, subscriptions, locations, providers, resource groups,
//! generic resource listing, Microsoft.Authorization (role definitions and assignments) at any
//! scope, and long-running operation status.

use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use control::identity::Surface;
use control::resources::{
    ResourceGroupInput, ResourceGroupPatch, RoleAssignmentFilter, RoleAssignmentInput,
};
use control::{ControlError, ControlPlane};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{Req, compute, keyvault_arm, list, ok, with_status};
use crate::AppState;
use crate::auth::{Caller, authenticate};
use crate::error::{ApiError, ApiResult};
use crate::lro;

const RG_READ: &str = "Microsoft.Resources/subscriptions/resourceGroups/read";
const RG_WRITE: &str = "Microsoft.Resources/subscriptions/resourceGroups/write";
const RG_DELETE: &str = "Microsoft.Resources/subscriptions/resourceGroups/delete";
const SUB_READ: &str = "Microsoft.Resources/subscriptions/read";
const RA_READ: &str = "Microsoft.Authorization/roleAssignments/read";
const RA_WRITE: &str = "Microsoft.Authorization/roleAssignments/write";
const RA_DELETE: &str = "Microsoft.Authorization/roleAssignments/delete";
const RD_READ: &str = "Microsoft.Authorization/roleDefinitions/read";

/// Resource providers and the types they serve, for `GET /providers`.
const PROVIDERS: &[(&str, &[&str])] = &[
    (
        "Microsoft.Resources",
        &[
            "resourceGroups",
            "subscriptions",
            "resources",
            "operationresults",
        ],
    ),
    (
        "Microsoft.Authorization",
        &["roleAssignments", "roleDefinitions"],
    ),
    (
        "Microsoft.KeyVault",
        &[
            "vaults",
            "deletedVaults",
            "locations/deletedVaults",
            "checkNameAvailability",
        ],
    ),
    (
        "Microsoft.Compute",
        &[
            "disks",
            "diskEncryptionSets",
            "virtualMachines",
            "virtualMachineScaleSets",
            "snapshots",
            "images",
            "locations/operations",
            "locations/diskOperations",
        ],
    ),
];

pub fn route(state: &AppState, req: &Req) -> ApiResult<Response> {
    let caller = authenticate(state, &req.headers, Surface::Arm)?;
    req.api_version()?;
    if let Some(i) = authorization_provider_index(req) {
        return authorization(state, req, &caller, i);
    }
    let n = req.segments.len();
    let m = &req.method;
    if req.is(0, "tenants") && n == 1 {
        return Ok(list(vec![state.control.tenant_json()]));
    }
    if req.is(0, "providers") {
        return providers(state, req, 1);
    }
    if n == 1 {
        return expect_get(m)
            .map(|()| list_subscriptions(state, &caller))
            .and_then(|r| r);
    }
    let sub = req.seg(1);
    state.control.check_subscription(sub)?;
    let sub_scope = state.control.subscription_scope();
    match n {
        2 => {
            expect_get(m)?;
            authorize(state, &caller, SUB_READ, &sub_scope)?;
            Ok(ok(state.control.subscription_json()))
        }
        3 if req.is(2, "locations") => {
            expect_get(m)?;
            Ok(list(state.control.locations_json()))
        }
        3 if req.is(2, "resourcegroups") => {
            expect_get(m)?;
            let groups = filter_by_tag(state.control.resource_groups(sub)?, req.query("$filter"))?;
            Ok(list(readable(state, &caller, groups, RG_READ)?))
        }
        3 if req.is(2, "resources") => {
            expect_get(m)?;
            let resources =
                filter_resources(state.control.generic_resources(sub)?, req.query("$filter"))?;
            Ok(list(readable_resources(state, &caller, resources)?))
        }
        _ if req.is(2, "providers") => {
            if n >= 8 && req.is(4, "locations") && is_operation(req.seg(6)) {
                return operation(state, req, req.seg(7));
            }
            if n >= 5 && req.is(3, "Microsoft.Compute") {
                return compute::route_subscription(state, req, &caller, sub, &req.segments[4..]);
            }
            if n >= 5 && req.is(3, "Microsoft.KeyVault") {
                return keyvault_arm::route_subscription(
                    state,
                    req,
                    &caller,
                    sub,
                    &req.segments[4..],
                );
            }
            providers(state, req, 3)
        }
        4 if req.is(2, "operationresults") => resource_group_delete_result(state, req.seg(3)),
        4 | 5 if req.is(2, "resourcegroups") => {
            let group = req.seg(3);
            if n == 5 {
                if !req.is(4, "resources") {
                    return Err(no_route(req));
                }
                expect_get(m)?;
                let scope = format!("{sub_scope}/resourceGroups/{group}");
                authorize(state, &caller, RG_READ, &scope)?;
                state.control.resource_group(sub, group)?;
                let resources: Vec<Value> = state
                    .control
                    .generic_resources(sub)?
                    .into_iter()
                    .filter(|r| {
                        control::ids::scope_contains(&scope, r["id"].as_str().unwrap_or_default())
                    })
                    .collect();
                let resources = filter_resources(resources, req.query("$filter"))?;
                return Ok(list(readable_resources(state, &caller, resources)?));
            }
            resource_group(state, req, &caller, sub, group)
        }
        _ if n >= 7 && req.is(2, "resourcegroups") && req.is(4, "providers") => {
            if req.is(5, "Microsoft.KeyVault") {
                let rest = &req.segments[6..];
                return keyvault_arm::route_group(state, req, &caller, sub, req.seg(3), rest);
            }
            if req.is(5, "Microsoft.Compute") {
                let rest = &req.segments[6..];
                return compute::route_group(state, req, &caller, sub, req.seg(3), rest);
            }
            Err(ApiError::NoRegisteredProvider(format!(
                "{}/{}",
                req.seg(5),
                req.seg(6)
            )))
        }
        _ => Err(no_route(req)),
    }
}

fn is_operation(segment: &str) -> bool {
    [
        "operations",
        "operationresults",
        "diskoperations",
        "asyncoperations",
        "operationstatuses",
    ]
    .iter()
    .any(|w| segment.eq_ignore_ascii_case(w))
}

fn no_route(req: &Req) -> ApiError {
    ApiError::NoRoute(format!("/{}", req.segments.join("/")))
}

fn expect_get(m: &Method) -> ApiResult<()> {
    if m == Method::GET {
        Ok(())
    } else {
        Err(ApiError::MethodNotAllowed(m.to_string()))
    }
}

fn authorize(state: &AppState, caller: &Caller, action: &str, scope: &str) -> ApiResult<()> {
    Ok(state.control.authorize(caller.claims.oid, action, scope)?)
}

/// The values whose `id` the caller may `action`.
pub(super) fn readable(
    state: &AppState,
    caller: &Caller,
    values: Vec<Value>,
    action: &str,
) -> ApiResult<Vec<Value>> {
    let mut out = Vec::new();
    for v in values {
        let id = v["id"].as_str().unwrap_or_default();
        if state
            .control
            .is_authorized(caller.claims.oid, action, id, false)?
        {
            out.push(v);
        }
    }
    Ok(out)
}

fn readable_resources(
    state: &AppState,
    caller: &Caller,
    values: Vec<Value>,
) -> ApiResult<Vec<Value>> {
    let mut out = Vec::new();
    for v in values {
        let action = format!("{}/read", v["type"].as_str().unwrap_or_default());
        let id = v["id"].as_str().unwrap_or_default();
        if state
            .control
            .is_authorized(caller.claims.oid, &action, id, false)?
        {
            out.push(v);
        }
    }
    Ok(out)
}

fn list_subscriptions(state: &AppState, caller: &Caller) -> ApiResult<Response> {
    let mine = RoleAssignmentFilter {
        at_scope: false,
        principal_id: Some(caller.claims.oid.to_string()),
    };
    let visible = !state
        .control
        .role_assignments_for(&state.control.subscription_scope(), &mine)?
        .is_empty();
    Ok(list(if visible {
        vec![state.control.subscription_json()]
    } else {
        vec![]
    }))
}

const RESOURCE_FILTERS: &str =
    "resourceType eq '...', name eq '...', location eq '...', joined with 'and'";

/// Applies an ARM resources `$filter` (`resourceType eq 'T' and name eq 'N'`).
fn filter_resources(values: Vec<Value>, filter: Option<&str>) -> ApiResult<Vec<Value>> {
    let Some(filter) = filter.map(str::trim).filter(|f| !f.is_empty()) else {
        return Ok(values);
    };
    let unsupported = || ApiError::UnsupportedFilter(filter.to_string(), RESOURCE_FILTERS);
    let mut clauses = Vec::new();
    for clause in split_and(filter) {
        let (field, value) = clause.split_once(" eq ").ok_or_else(unsupported)?;
        let value = value.trim();
        let value = value
            .strip_prefix('\'')
            .and_then(|v| v.strip_suffix('\''))
            .ok_or_else(unsupported)?;
        let field = match field.trim().to_ascii_lowercase().as_str() {
            "resourcetype" => "type",
            "name" => "name",
            "location" => "location",
            _ => return Err(unsupported()),
        };
        clauses.push((field, value.to_string()));
    }
    Ok(values
        .into_iter()
        .filter(|v| {
            clauses.iter().all(|(field, value)| {
                v[*field]
                    .as_str()
                    .is_some_and(|s| s.eq_ignore_ascii_case(value))
            })
        })
        .collect())
}

const TAG_FILTERS: &str = "tagName eq '...' [and tagValue eq '...']";

/// Applies a resource group `$filter` (`tagName eq 'k' and tagValue eq 'v'`).
fn filter_by_tag(values: Vec<Value>, filter: Option<&str>) -> ApiResult<Vec<Value>> {
    let Some(filter) = filter.map(str::trim).filter(|f| !f.is_empty()) else {
        return Ok(values);
    };
    let unsupported = || ApiError::UnsupportedFilter(filter.to_string(), TAG_FILTERS);
    let (mut name, mut value) = (None, None);
    for clause in split_and(filter) {
        let (field, v) = clause.split_once(" eq ").ok_or_else(unsupported)?;
        let v = v
            .trim()
            .strip_prefix('\'')
            .and_then(|v| v.strip_suffix('\''))
            .ok_or_else(unsupported)?;
        match field.trim().to_ascii_lowercase().as_str() {
            "tagname" => name = Some(v.to_string()),
            "tagvalue" => value = Some(v.to_string()),
            _ => return Err(unsupported()),
        }
    }
    let name = name.ok_or_else(unsupported)?;
    Ok(values
        .into_iter()
        .filter(|g| {
            g["tags"].as_object().is_some_and(|tags| {
                tags.iter().any(|(k, v)| {
                    k.eq_ignore_ascii_case(&name)
                        && value.as_ref().is_none_or(|want| v.as_str() == Some(want))
                })
            })
        })
        .collect())
}

/// Splits a filter on ` and ` (any case).
fn split_and(filter: &str) -> Vec<&str> {
    let lower = filter.to_ascii_lowercase();
    let mut out = Vec::new();
    let mut start = 0;
    while let Some(i) = lower[start..].find(" and ") {
        out.push(filter[start..start + i].trim());
        start += i + 5;
    }
    out.push(filter[start..].trim());
    out
}

fn resource_group(
    state: &AppState,
    req: &Req,
    caller: &Caller,
    sub: &str,
    name: &str,
) -> ApiResult<Response> {
    let scope = format!(
        "{}/resourceGroups/{name}",
        state.control.subscription_scope()
    );
    match req.method {
        Method::GET => {
            authorize(state, caller, RG_READ, &scope)?;
            Ok(ok(state.control.resource_group(sub, name)?))
        }
        Method::HEAD => {
            authorize(state, caller, RG_READ, &scope)?;
            match state.control.resource_group(sub, name) {
                Ok(_) => Ok(StatusCode::NO_CONTENT.into_response()),
                Err(ControlError::ResourceGroupNotFound(_)) => {
                    Ok(StatusCode::NOT_FOUND.into_response())
                }
                Err(e) => Err(e.into()),
            }
        }
        Method::PUT => {
            authorize(state, caller, RG_WRITE, &scope)?;
            let input: ResourceGroupInput = req.json()?;
            let (body, created) = state.control.put_resource_group(sub, name, input)?;
            Ok(with_status(
                if created {
                    StatusCode::CREATED
                } else {
                    StatusCode::OK
                },
                body,
            ))
        }
        Method::PATCH => {
            authorize(state, caller, RG_WRITE, &scope)?;
            let patch: ResourceGroupPatch = req.json()?;
            Ok(ok(state.control.patch_resource_group(sub, name, patch)?))
        }
        Method::DELETE => {
            authorize(state, caller, RG_DELETE, &scope)?;
            let group = state.control.resource_group(sub, name)?;
            let id = group["id"].as_str().unwrap_or_default().to_string();
            let op = state.control.start_operation(&id)?;
            let outcome = match state.control.delete_resource_group(sub, name) {
                Ok(()) => control::operations::Outcome::Succeeded,
                Err(e) => {
                    let err = ApiError::from(e);
                    let (_, code) = err.status_and_code();
                    control::operations::Outcome::Failed {
                        code: code.into(),
                        message: err.to_string(),
                    }
                }
            };
            state.control.finish_operation(&op, outcome)?;
            Ok(lro::accepted_location_only(state, &op, req.api_version()?))
        }
        _ => Err(ApiError::MethodNotAllowed(req.method.to_string())),
    }
}

/// `GET /subscriptions/{s}/operationresults/{id}`: 202 while running, then 200 or the error.
fn resource_group_delete_result(state: &AppState, id: &str) -> ApiResult<Response> {
    let op = state
        .control
        .operation(id)?
        .ok_or_else(|| ApiError::OperationNotFound(id.into()))?;
    operation_result(op, None)
}

fn operation_result(op: Value, resource: Option<Value>) -> ApiResult<Response> {
    match op["status"].as_str() {
        Some("Succeeded") => Ok(match resource {
            Some(r) => ok(r),
            None => StatusCode::OK.into_response(),
        }),
        Some("Failed" | "Canceled") => {
            let code = op["error"]["code"].as_str().unwrap_or("OperationFailed");
            let status = if code == "InternalServerError" {
                StatusCode::INTERNAL_SERVER_ERROR
            } else {
                StatusCode::BAD_REQUEST
            };
            Ok(with_status(status, json!({"error": op["error"]})))
        }
        _ => Ok(StatusCode::ACCEPTED.into_response()),
    }
}

/// `GET /subscriptions/{s}/providers/{ns}/locations/{l}/{operations|...}/{id}`: the status
/// document, or with `monitor=true` the operation's result (the resource it produced).
fn operation(state: &AppState, req: &Req, id: &str) -> ApiResult<Response> {
    expect_get(&req.method)?;
    let op = state
        .control
        .operation(id)?
        .ok_or_else(|| ApiError::OperationNotFound(id.into()))?;
    let result_url = req.is(6, "operationresults")
        || req
            .query("monitor")
            .is_some_and(|v| v.eq_ignore_ascii_case("true"));
    if result_url {
        let succeeded = op["status"] == "Succeeded";
        let resource = match (op["properties"].get("output"), op["resourceId"].as_str()) {
            (Some(Value::Null), _) => None,
            (Some(output), _) => Some(output.clone()),
            (None, Some(rid)) if succeeded => state
                .control
                .store()
                .resource(rid)
                .map_err(ControlError::from)?
                .map(|r| ControlPlane::present(r.body)),
            _ => None,
        };
        return operation_result(op, resource);
    }
    Ok(ok(op))
}

fn provider_json(state: &AppState, namespace: &str, types: &[&str]) -> Value {
    let locations: Vec<&str> = control::LOCATIONS.iter().map(|l| l.display_name).collect();
    json!({
        "id": format!("{}/providers/{namespace}", state.control.subscription_scope()),
        "namespace": namespace,
        "registrationState": "Registered",
        "registrationPolicy": "RegistrationRequired",
        "resourceTypes": types.iter().map(|t| json!({
            "resourceType": t,
            "locations": locations,
            "apiVersions": ["2024-11-01", "2022-09-01", "2022-04-01", "2021-04-01"],
            "capabilities": "None"
        })).collect::<Vec<_>>()
    })
}

/// `GET [/subscriptions/{s}]/providers[/{ns}]` and `POST .../providers/{ns}/register`.
fn providers(state: &AppState, req: &Req, at: usize) -> ApiResult<Response> {
    let rest = &req.segments[at..];
    match (rest.len(), &req.method) {
        (0, &Method::GET) => Ok(list(
            PROVIDERS
                .iter()
                .map(|(ns, t)| provider_json(state, ns, t))
                .collect(),
        )),
        (1, &Method::GET) | (2, &Method::POST) => {
            if rest.len() == 2 && !rest[1].eq_ignore_ascii_case("register") {
                return Err(no_route(req));
            }
            let (ns, types) = PROVIDERS
                .iter()
                .find(|(ns, _)| ns.eq_ignore_ascii_case(&rest[0]))
                .ok_or_else(|| ApiError::NoRegisteredProvider(rest[0].clone()))?;
            Ok(ok(provider_json(state, ns, types)))
        }
        _ => Err(no_route(req)),
    }
}

/// Index of the `providers` segment of the last `/providers/Microsoft.Authorization` in the path.
fn authorization_provider_index(req: &Req) -> Option<usize> {
    (0..req.segments.len().saturating_sub(1))
        .rev()
        .find(|&i| req.is(i, "providers") && req.is(i + 1, "Microsoft.Authorization"))
}

#[derive(Debug, Deserialize)]
struct RoleAssignmentBody {
    properties: RoleAssignmentInput,
}

fn authorization(state: &AppState, req: &Req, caller: &Caller, i: usize) -> ApiResult<Response> {
    let scope = if i == 0 {
        "/".to_string()
    } else {
        format!("/{}", req.segments[..i].join("/"))
    };
    let rest = &req.segments[i + 2..];
    let kind = rest
        .first()
        .map(|s| s.to_ascii_lowercase())
        .unwrap_or_default();
    match (kind.as_str(), rest.len(), &req.method) {
        ("roleassignments", 1, &Method::GET) => {
            authorize(state, caller, RA_READ, &scope)?;
            let filter = role_assignment_filter(req.query("$filter"))?;
            let values = state.control.role_assignments_for(&scope, &filter)?;
            Ok(list(values))
        }
        ("roleassignments", 2, m) => {
            let id = format!(
                "{}/providers/Microsoft.Authorization/roleAssignments/{}",
                scope.trim_end_matches('/'),
                rest[1]
            );
            match *m {
                Method::GET => {
                    authorize(state, caller, RA_READ, &scope)?;
                    Ok(ok(state.control.role_assignment(&id)?))
                }
                Method::PUT => {
                    authorize(state, caller, RA_WRITE, &scope)?;
                    let body: RoleAssignmentBody = req.json()?;
                    let (value, created) =
                        state
                            .control
                            .create_role_assignment(&scope, &rest[1], body.properties)?;
                    Ok(with_status(
                        if created {
                            StatusCode::CREATED
                        } else {
                            StatusCode::OK
                        },
                        value,
                    ))
                }
                Method::DELETE => {
                    authorize(state, caller, RA_DELETE, &scope)?;
                    Ok(match state.control.delete_role_assignment(&id)? {
                        Some(v) => ok(v),
                        None => StatusCode::NO_CONTENT.into_response(),
                    })
                }
                _ => Err(ApiError::MethodNotAllowed(m.to_string())),
            }
        }
        ("roledefinitions", 1, &Method::GET) => {
            authorize(state, caller, RD_READ, &scope)?;
            let name = role_name_filter(req.query("$filter"))?;
            Ok(list(state.control.role_definitions(name.as_deref())))
        }
        ("roledefinitions", 2, &Method::GET) => {
            authorize(state, caller, RD_READ, &scope)?;
            Ok(ok(state.control.role_definition(&rest[1])?))
        }
        ("roleassignments" | "roledefinitions", _, m) => {
            Err(ApiError::MethodNotAllowed(m.to_string()))
        }
        _ => Err(ApiError::NoRegisteredProvider(format!(
            "Microsoft.Authorization/{}",
            rest.first().cloned().unwrap_or_default()
        ))),
    }
}

const RA_FILTERS: &str = "atScope(), principalId eq '...', assignedTo('...'), joined with 'and'";

fn role_assignment_filter(filter: Option<&str>) -> ApiResult<RoleAssignmentFilter> {
    let mut out = RoleAssignmentFilter::default();
    let Some(filter) = filter.map(str::trim).filter(|f| !f.is_empty()) else {
        return Ok(out);
    };
    let unsupported = || ApiError::UnsupportedFilter(filter.to_string(), RA_FILTERS);
    for clause in split_and(filter) {
        let lower = clause.to_ascii_lowercase();
        if lower == "atscope()" {
            out.at_scope = true;
        } else if let Some((field, value)) = clause.split_once(" eq ") {
            if !field.trim().eq_ignore_ascii_case("principalId") {
                return Err(unsupported());
            }
            out.principal_id = Some(value.trim().trim_matches('\'').to_string());
        } else if lower.starts_with("assignedto(") {
            let inner = clause[11..].trim_end_matches(')').trim().trim_matches('\'');
            out.principal_id = Some(inner.to_string());
        } else {
            return Err(unsupported());
        }
    }
    Ok(out)
}

fn role_name_filter(filter: Option<&str>) -> ApiResult<Option<String>> {
    let Some(filter) = filter.map(str::trim).filter(|f| !f.is_empty()) else {
        return Ok(None);
    };
    let unsupported = || {
        ApiError::UnsupportedFilter(
            filter.to_string(),
            "roleName eq '...', type eq 'BuiltInRole'",
        )
    };
    let mut name = None;
    for clause in split_and(filter) {
        let (field, value) = clause.split_once(" eq ").ok_or_else(unsupported)?;
        let value = value.trim().trim_matches('\'').to_string();
        match field.trim().to_ascii_lowercase().as_str() {
            "rolename" => name = Some(value),
            "type" => {}
            _ => return Err(unsupported()),
        }
    }
    Ok(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_filters() {
        let values = vec![
            json!({"id": "/a", "name": "kv", "type": "Microsoft.KeyVault/vaults", "location": "eastus"}),
            json!({"id": "/b", "name": "kv", "type": "Microsoft.Compute/disks", "location": "eastus"}),
        ];
        let got = filter_resources(
            values.clone(),
            Some("resourceType eq 'Microsoft.KeyVault/vaults' and name eq 'KV'"),
        )
        .unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0]["id"], "/a");
        assert_eq!(filter_resources(values.clone(), None).unwrap().len(), 2);
        assert!(filter_resources(values, Some("tagName eq 'x'")).is_err());
    }

    #[test]
    fn tag_filters() {
        let groups = vec![
            json!({"id": "/a", "tags": {"env": "prod"}}),
            json!({"id": "/b", "tags": {"env": "dev"}}),
            json!({"id": "/c"}),
        ];
        let got = filter_by_tag(
            groups.clone(),
            Some("tagName eq 'Env' and tagValue eq 'prod'"),
        )
        .unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(
            filter_by_tag(groups.clone(), Some("tagName eq 'env'"))
                .unwrap()
                .len(),
            2
        );
        assert!(filter_by_tag(groups, Some("tagValue eq 'x'")).is_err());
    }

    #[test]
    fn role_assignment_filters() {
        let f = role_assignment_filter(Some("atScope() and principalId eq 'abc'")).unwrap();
        assert!(f.at_scope);
        assert_eq!(f.principal_id.as_deref(), Some("abc"));
        let f = role_assignment_filter(Some("assignedTo('xyz')")).unwrap();
        assert_eq!(f.principal_id.as_deref(), Some("xyz"));
        assert_eq!(
            role_name_filter(Some(
                "roleName eq 'Key Vault Crypto Service Encryption User'"
            ))
            .unwrap()
            .as_deref(),
            Some("Key Vault Crypto Service Encryption User")
        );
    }
}
