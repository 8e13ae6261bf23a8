//! ARM for Microsoft.KeyVault: vaults, access policy updates, deleted vaults, name checks.

use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use control::ControlPlane;
use control::vaults::{AccessPolicy, AccessPolicyUpdate, VaultInput, VaultPatch};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{Req, list, ok, with_status};
use crate::AppState;
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};

const READ: &str = "Microsoft.KeyVault/vaults/read";
const WRITE: &str = "Microsoft.KeyVault/vaults/write";
const DELETE: &str = "Microsoft.KeyVault/vaults/delete";
const POLICY_WRITE: &str = "Microsoft.KeyVault/vaults/accessPolicies/write";
const DELETED_READ: &str = "Microsoft.KeyVault/deletedVaults/read";
const PURGE: &str = "Microsoft.KeyVault/locations/deletedVaults/purge/action";

fn authorize(state: &AppState, caller: &Caller, action: &str, scope: &str) -> ApiResult<()> {
    Ok(state.control.authorize(caller.claims.oid, action, scope)?)
}

/// Appends a vault policy change to the audit log; refuses the request if that fails.
fn audit<T>(
    state: &AppState,
    caller: &Caller,
    vault: &str,
    operation: &str,
    result: &Result<T, control::ControlError>,
    detail: Option<String>,
) -> ApiResult<()> {
    let result = match result {
        Ok(_) => "Success".to_string(),
        Err(e) => crate::error::control_status_and_code(e).1.to_string(),
    };
    state
        .audit
        .append(keyvault::audit::AuditRecord {
            caller_object_id: caller.claims.oid.to_string(),
            vault: vault.to_string(),
            key: None,
            version: None,
            operation: operation.to_string(),
            result,
            detail,
        })
        .map(|_| ())
        .map_err(|e| ApiError::AuditUnavailable(e.to_string()))
}

/// A vault document as clients see it: with its `vaultUri` for this deployment's endpoint.
fn present(state: &AppState, mut vault: Value) -> Value {
    let name = vault["name"].as_str().unwrap_or_default().to_string();
    vault["properties"]["vaultUri"] = json!(format!(
        "https://{name}.{}/",
        state.endpoints.vault_suffix()
    ));
    vault
}

/// `.../resourceGroups/{g}/providers/Microsoft.KeyVault/...`; `rest` starts after the namespace.
pub fn route_group(
    state: &AppState,
    req: &Req,
    caller: &Caller,
    sub: &str,
    group: &str,
    rest: &[String],
) -> ApiResult<Response> {
    let group_scope = format!(
        "{}/resourceGroups/{group}",
        state.control.subscription_scope()
    );
    let is = |i: usize, w: &str| rest.get(i).is_some_and(|s| s.eq_ignore_ascii_case(w));
    if is(0, "managedHSMs") && rest.len() == 1 && req.method == Method::GET {
        return Ok(list(vec![]));
    }
    if !is(0, "vaults") {
        return Err(ApiError::NoRegisteredProvider(format!(
            "Microsoft.KeyVault/{}",
            rest.first().cloned().unwrap_or_default()
        )));
    }
    match (rest.len(), &req.method) {
        (1, &Method::GET) => {
            authorize(state, caller, READ, &group_scope)?;
            let vaults = state.control.vaults(sub, Some(group))?;
            Ok(list(
                vaults.into_iter().map(|v| present(state, v)).collect(),
            ))
        }
        (2, m) => {
            let name = &rest[1];
            let scope = format!("{group_scope}/providers/Microsoft.KeyVault/vaults/{name}");
            match *m {
                Method::GET => {
                    authorize(state, caller, READ, &scope)?;
                    Ok(ok(present(state, state.control.vault(sub, group, name)?)))
                }
                Method::PUT => {
                    authorize(state, caller, WRITE, &scope)?;
                    let input: VaultInput = req.json()?;
                    let policies = input.properties.access_policies.as_ref().map(Vec::len);
                    let result = state.control.put_vault(sub, group, name, input);
                    let detail = policies.map(|n| format!("{n} access policies"));
                    audit(state, caller, name, "VaultWrite", &result, detail)?;
                    let (vault, created) = result?;
                    let status = if created {
                        StatusCode::CREATED
                    } else {
                        StatusCode::OK
                    };
                    Ok(with_status(status, present(state, vault)))
                }
                Method::PATCH => {
                    authorize(state, caller, WRITE, &scope)?;
                    let patch: VaultPatch = req.json()?;
                    Ok(ok(present(
                        state,
                        state.control.patch_vault(sub, group, name, patch)?,
                    )))
                }
                Method::DELETE => {
                    authorize(state, caller, DELETE, &scope)?;
                    Ok(if state.control.delete_vault(sub, group, name)? {
                        StatusCode::OK.into_response()
                    } else {
                        StatusCode::NO_CONTENT.into_response()
                    })
                }
                _ => Err(ApiError::MethodNotAllowed(m.to_string())),
            }
        }
        (4, &Method::PUT) if is(2, "accessPolicies") => {
            let name = &rest[1];
            let scope = format!("{group_scope}/providers/Microsoft.KeyVault/vaults/{name}");
            authorize(state, caller, POLICY_WRITE, &scope)?;
            let kind: AccessPolicyUpdate = rest[3].parse()?;
            let body: PolicyBody = req.json()?;
            let result = state.control.update_access_policies(
                sub,
                group,
                name,
                kind,
                body.properties.access_policies,
            )?;
            Ok(ok(result))
        }
        (_, m) => Err(ApiError::MethodNotAllowed(m.to_string())),
    }
}

#[derive(Debug, Deserialize)]
struct PolicyBody {
    properties: PolicyProperties,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PolicyProperties {
    access_policies: Vec<AccessPolicy>,
}

#[derive(Debug, Deserialize)]
struct NameCheck {
    name: String,
}

/// `/subscriptions/{s}/providers/Microsoft.KeyVault/...`; `rest` starts after the namespace.
pub fn route_subscription(
    state: &AppState,
    req: &Req,
    caller: &Caller,
    sub: &str,
    rest: &[String],
) -> ApiResult<Response> {
    let sub_scope = state.control.subscription_scope();
    let is = |i: usize, w: &str| rest.get(i).is_some_and(|s| s.eq_ignore_ascii_case(w));
    match (rest.len(), &req.method) {
        (1, &Method::GET) if is(0, "vaults") => {
            let vaults = state.control.vaults(sub, None)?;
            let mut out = Vec::new();
            for v in vaults {
                if state.control.is_authorized(
                    caller.claims.oid,
                    READ,
                    v["id"].as_str().unwrap_or_default(),
                    false,
                )? {
                    out.push(present(state, v));
                }
            }
            Ok(list(out))
        }
        (1, &Method::GET) if is(0, "deletedVaults") => {
            authorize(state, caller, DELETED_READ, &sub_scope)?;
            Ok(list(
                state
                    .control
                    .deleted_vaults()?
                    .into_iter()
                    .map(ControlPlane::present)
                    .collect(),
            ))
        }
        // Managed HSM pools are not offered: listings are empty, as in a subscription without any.
        (1, &Method::GET) if is(0, "managedHSMs") || is(0, "deletedManagedHSMs") => {
            Ok(list(vec![]))
        }
        (1, &Method::POST) if is(0, "checkNameAvailability") => {
            let check: NameCheck = req.json()?;
            Ok(ok(state.control.vault_name_availability(&check.name)?))
        }
        (4, &Method::GET) if is(0, "locations") && is(2, "deletedVaults") => {
            authorize(state, caller, DELETED_READ, &sub_scope)?;
            Ok(ok(ControlPlane::present(
                state.control.deleted_vault(sub, &rest[1], &rest[3])?,
            )))
        }
        (5, &Method::POST) if is(0, "locations") && is(2, "deletedVaults") && is(4, "purge") => {
            authorize(state, caller, PURGE, &sub_scope)?;
            state.control.purge_deleted_vault(sub, &rest[1], &rest[3])?;
            Ok(StatusCode::OK.into_response())
        }
        (_, m) => Err(ApiError::MethodNotAllowed(format!(
            "{m} on Microsoft.KeyVault/{}",
            rest.join("/")
        ))),
    }
}
