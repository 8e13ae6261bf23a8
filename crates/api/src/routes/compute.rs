//! ARM for Microsoft.Compute: managed disks and their access grants.
//!
//! Creating or updating a disk and granting or ending access answer `202 Accepted` with
//! `Azure-AsyncOperation` and `Location` (the real `az` accepts only 200 or 202 there); the
//! work itself is done before the answer, so the first poll sees the outcome.

use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use control::disks::{DiskInput, DiskPatch, GrantAccessData};
use control::encryption_sets::EncryptionSetInput;
use control::operations::Outcome;
use control::snapshots::{ImageInput, SnapshotInput};
use control::vms::{VmAction, VmInput};
use serde_json::json;

use super::arm::readable;
use super::{Req, list, ok};
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::{AppState, lro};

const NAMESPACE: &str = "Microsoft.Compute";
const DISK_READ: &str = "Microsoft.Compute/disks/read";
const DISK_WRITE: &str = "Microsoft.Compute/disks/write";
const DISK_DELETE: &str = "Microsoft.Compute/disks/delete";
const DISK_GRANT: &str = "Microsoft.Compute/disks/beginGetAccess/action";
const DISK_REVOKE: &str = "Microsoft.Compute/disks/endGetAccess/action";
const VM_READ: &str = "Microsoft.Compute/virtualMachines/read";
const VM_WRITE: &str = "Microsoft.Compute/virtualMachines/write";
const VM_DELETE: &str = "Microsoft.Compute/virtualMachines/delete";
const VM_VIEW: &str = "Microsoft.Compute/virtualMachines/instanceView/read";
const DES_READ: &str = "Microsoft.Compute/diskEncryptionSets/read";
const DES_WRITE: &str = "Microsoft.Compute/diskEncryptionSets/write";
const DES_DELETE: &str = "Microsoft.Compute/diskEncryptionSets/delete";

fn authorize(state: &AppState, caller: &Caller, action: &str, scope: &str) -> ApiResult<()> {
    Ok(state.control.authorize(caller.claims.oid, action, scope)?)
}

/// A finished operation on `resource_id` answered as `202 Accepted`.
fn accepted(
    state: &AppState,
    req: &Req,
    resource_id: &str,
    output: Option<serde_json::Value>,
) -> ApiResult<Response> {
    let op = state.control.start_operation(resource_id)?;
    state
        .control
        .finish_operation_with_output(&op, Outcome::Succeeded, output)?;
    Ok(lro::accepted(state, NAMESPACE, &op, req.api_version()?))
}

/// `.../resourceGroups/{g}/providers/Microsoft.Compute/...`; `rest` starts after the namespace.
pub fn route_group(
    state: &AppState,
    req: &Req,
    caller: &Caller,
    sub: &str,
    group: &str,
    rest: &[String],
) -> ApiResult<Response> {
    let is = |i: usize, w: &str| rest.get(i).is_some_and(|s| s.eq_ignore_ascii_case(w));
    if is(0, "diskEncryptionSets") {
        return encryption_sets(state, req, caller, sub, group, rest);
    }
    if is(0, "virtualMachines") {
        return virtual_machines(state, req, caller, sub, group, rest);
    }
    if is(0, "snapshots") {
        return snapshots(state, req, caller, sub, group, rest);
    }
    if is(0, "virtualMachineScaleSets") {
        return scale_sets(state, req, caller, sub, group, rest);
    }
    if is(0, "images") {
        return images(state, req, caller, sub, group, rest);
    }
    if !is(0, "disks") {
        return Err(ApiError::NoRegisteredProvider(format!(
            "{NAMESPACE}/{}",
            rest.first().cloned().unwrap_or_default()
        )));
    }
    let group_scope = format!(
        "{}/resourceGroups/{group}",
        state.control.subscription_scope()
    );
    let m = &req.method;
    if rest.len() == 1 {
        if m != Method::GET {
            return Err(ApiError::MethodNotAllowed(m.to_string()));
        }
        authorize(state, caller, DISK_READ, &group_scope)?;
        return Ok(list(state.control.disks(sub, Some(group))?));
    }
    let name = &rest[1];
    let scope = format!("{group_scope}/providers/Microsoft.Compute/disks/{name}");
    match (rest.len(), m) {
        (2, &Method::GET) => {
            authorize(state, caller, DISK_READ, &scope)?;
            Ok(ok(state.control.disk(sub, group, name)?))
        }
        (2, &Method::PUT) => {
            authorize(state, caller, DISK_WRITE, &scope)?;
            let input: DiskInput = req.json()?;
            let (disk, _) = state.control.put_disk(sub, group, name, input)?;
            accepted(state, req, disk["id"].as_str().unwrap_or(&scope), None)
        }
        (2, &Method::PATCH) => {
            authorize(state, caller, DISK_WRITE, &scope)?;
            let patch: DiskPatch = req.json()?;
            let disk = state.control.patch_disk(sub, group, name, patch)?;
            accepted(state, req, disk["id"].as_str().unwrap_or(&scope), None)
        }
        (2, &Method::DELETE) => {
            authorize(state, caller, DISK_DELETE, &scope)?;
            Ok(if state.control.delete_disk(sub, group, name)? {
                StatusCode::OK.into_response()
            } else {
                StatusCode::NO_CONTENT.into_response()
            })
        }
        (3, &Method::POST) if is(2, "beginGetAccess") => {
            authorize(state, caller, DISK_GRANT, &scope)?;
            let request: GrantAccessData = req.json()?;
            let sas = state.control.grant_disk_access(sub, group, name, request)?;
            accepted(state, req, &scope, Some(json!({"accessSAS": sas})))
        }
        (3, &Method::POST) if is(2, "endGetAccess") => {
            authorize(state, caller, DISK_REVOKE, &scope)?;
            state.control.revoke_disk_access(sub, group, name)?;
            accepted(state, req, &scope, Some(json!(null)))
        }
        (_, m) => Err(ApiError::MethodNotAllowed(format!(
            "{m} on {NAMESPACE}/{}",
            rest.join("/")
        ))),
    }
}

/// A finished operation answered with `status` and the resource, plus the operation headers.
fn done_with_body(
    state: &AppState,
    req: &Req,
    status: StatusCode,
    body: serde_json::Value,
) -> ApiResult<Response> {
    let id = body["id"].as_str().unwrap_or_default().to_string();
    let mut response = accepted(state, req, &id, None)?;
    *response.status_mut() = status;
    let headers = std::mem::take(response.headers_mut());
    let mut out = super::with_status(status, body);
    out.headers_mut().extend(headers);
    Ok(out)
}

/// `.../virtualMachines[/{name}[/instanceView | /{action}]]`.
fn virtual_machines(
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
    let m = &req.method;
    if rest.len() == 1 {
        if m != Method::GET {
            return Err(ApiError::MethodNotAllowed(m.to_string()));
        }
        authorize(state, caller, VM_READ, &group_scope)?;
        return Ok(list(state.control.vms(sub, Some(group))?));
    }
    let name = &rest[1];
    let scope = format!("{group_scope}/providers/Microsoft.Compute/virtualMachines/{name}");
    let is = |i: usize, w: &str| rest.get(i).is_some_and(|s| s.eq_ignore_ascii_case(w));
    match (rest.len(), m) {
        (2, &Method::GET) => {
            authorize(state, caller, VM_READ, &scope)?;
            let mut vm = state.control.vm(sub, group, name)?;
            if req
                .query("$expand")
                .is_some_and(|e| e.eq_ignore_ascii_case("instanceView"))
            {
                vm["properties"]["instanceView"] =
                    state.control.vm_instance_view(sub, group, name)?;
            }
            Ok(ok(vm))
        }
        (2, &Method::PUT) => {
            authorize(state, caller, VM_WRITE, &scope)?;
            let input: VmInput = req.json()?;
            let (vm, created) = state.control.put_vm(sub, group, name, input)?;
            let status = if created {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            done_with_body(state, req, status, vm)
        }
        (2, &Method::DELETE) => {
            authorize(state, caller, VM_DELETE, &scope)?;
            Ok(if state.control.delete_vm(sub, group, name)? {
                StatusCode::OK.into_response()
            } else {
                StatusCode::NO_CONTENT.into_response()
            })
        }
        (3, &Method::GET) if is(2, "instanceView") => {
            authorize(state, caller, VM_VIEW, &scope)?;
            Ok(ok(state.control.vm_instance_view(sub, group, name)?))
        }
        (3, &Method::POST) => {
            let action: VmAction = rest[2].parse()?;
            let verb = match action {
                VmAction::Start => "start",
                VmAction::PowerOff => "powerOff",
                VmAction::Deallocate => "deallocate",
                VmAction::Restart => "restart",
            };
            authorize(
                state,
                caller,
                &format!("Microsoft.Compute/virtualMachines/{verb}/action"),
                &scope,
            )?;
            state.control.vm_action(sub, group, name, action)?;
            accepted(state, req, &scope, Some(json!(null)))
        }
        (_, m) => Err(ApiError::MethodNotAllowed(format!(
            "{m} on {NAMESPACE}/{}",
            rest.join("/")
        ))),
    }
}

/// `.../snapshots[/{name}[/beginGetAccess | /endGetAccess]]`.
fn snapshots(
    state: &AppState,
    req: &Req,
    caller: &Caller,
    sub: &str,
    group: &str,
    rest: &[String],
) -> ApiResult<Response> {
    let action = |verb: &str| format!("Microsoft.Compute/snapshots/{verb}");
    let group_scope = format!(
        "{}/resourceGroups/{group}",
        state.control.subscription_scope()
    );
    let m = &req.method;
    if rest.len() == 1 {
        if m != Method::GET {
            return Err(ApiError::MethodNotAllowed(m.to_string()));
        }
        authorize(state, caller, &action("read"), &group_scope)?;
        return Ok(list(state.control.snapshots(sub, Some(group))?));
    }
    let name = &rest[1];
    let scope = format!("{group_scope}/providers/Microsoft.Compute/snapshots/{name}");
    let is = |i: usize, w: &str| rest.get(i).is_some_and(|s| s.eq_ignore_ascii_case(w));
    match (rest.len(), m) {
        (2, &Method::GET) => {
            authorize(state, caller, &action("read"), &scope)?;
            Ok(ok(state.control.snapshot(sub, group, name)?))
        }
        (2, &Method::PUT) => {
            authorize(state, caller, &action("write"), &scope)?;
            let input: SnapshotInput = req.json()?;
            let (snap, _) = state.control.put_snapshot(sub, group, name, input)?;
            accepted(state, req, snap["id"].as_str().unwrap_or(&scope), None)
        }
        (2, &Method::DELETE) => {
            authorize(state, caller, &action("delete"), &scope)?;
            Ok(if state.control.delete_snapshot(sub, group, name)? {
                StatusCode::OK.into_response()
            } else {
                StatusCode::NO_CONTENT.into_response()
            })
        }
        (3, &Method::POST) if is(2, "beginGetAccess") => {
            authorize(state, caller, &action("beginGetAccess/action"), &scope)?;
            let request: GrantAccessData = req.json()?;
            let sas = state
                .control
                .grant_snapshot_access(sub, group, name, request)?;
            accepted(state, req, &scope, Some(json!({"accessSAS": sas})))
        }
        (3, &Method::POST) if is(2, "endGetAccess") => {
            authorize(state, caller, &action("endGetAccess/action"), &scope)?;
            state.control.revoke_snapshot_access(sub, group, name)?;
            accepted(state, req, &scope, Some(json!(null)))
        }
        (_, m) => Err(ApiError::MethodNotAllowed(format!(
            "{m} on {NAMESPACE}/{}",
            rest.join("/")
        ))),
    }
}

/// `.../virtualMachineScaleSets[/{name}[/virtualMachines]]`.
fn scale_sets(
    state: &AppState,
    req: &Req,
    caller: &Caller,
    sub: &str,
    group: &str,
    rest: &[String],
) -> ApiResult<Response> {
    let action = |verb: &str| format!("Microsoft.Compute/virtualMachineScaleSets/{verb}");
    let group_scope = format!(
        "{}/resourceGroups/{group}",
        state.control.subscription_scope()
    );
    let m = &req.method;
    if rest.len() == 1 {
        if m != Method::GET {
            return Err(ApiError::MethodNotAllowed(m.to_string()));
        }
        authorize(state, caller, &action("read"), &group_scope)?;
        return Ok(list(state.control.vmss_list(sub, Some(group))?));
    }
    let name = &rest[1];
    let scope = format!("{group_scope}/providers/Microsoft.Compute/virtualMachineScaleSets/{name}");
    let is = |i: usize, w: &str| rest.get(i).is_some_and(|s| s.eq_ignore_ascii_case(w));
    match (rest.len(), m) {
        (2, &Method::GET) => {
            authorize(state, caller, &action("read"), &scope)?;
            Ok(ok(state.control.vmss(sub, group, name)?))
        }
        (2, &Method::PUT) => {
            authorize(state, caller, &action("write"), &scope)?;
            let raw: serde_json::Value = req.json()?;
            let capacity = raw["sku"]["capacity"].as_u64();
            let input: VmInput = serde_json::from_value(raw)
                .map_err(|e| ApiError::InvalidRequestContent(e.to_string()))?;
            let (set, created) = state.control.put_vmss(sub, group, name, input, capacity)?;
            let status = if created {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            done_with_body(state, req, status, set)
        }
        (2, &Method::DELETE) => {
            authorize(state, caller, &action("delete"), &scope)?;
            Ok(if state.control.delete_vmss(sub, group, name)? {
                StatusCode::OK.into_response()
            } else {
                StatusCode::NO_CONTENT.into_response()
            })
        }
        (3, &Method::GET) if is(2, "virtualMachines") => {
            authorize(state, caller, &action("read"), &scope)?;
            Ok(list(state.control.vmss_instances(sub, group, name)?))
        }
        (_, m) => Err(ApiError::MethodNotAllowed(format!(
            "{m} on {NAMESPACE}/{}",
            rest.join("/")
        ))),
    }
}

/// `.../images[/{name}]`.
fn images(
    state: &AppState,
    req: &Req,
    caller: &Caller,
    sub: &str,
    group: &str,
    rest: &[String],
) -> ApiResult<Response> {
    let action = |verb: &str| format!("Microsoft.Compute/images/{verb}");
    let group_scope = format!(
        "{}/resourceGroups/{group}",
        state.control.subscription_scope()
    );
    let m = &req.method;
    if rest.len() == 1 {
        if m != Method::GET {
            return Err(ApiError::MethodNotAllowed(m.to_string()));
        }
        authorize(state, caller, &action("read"), &group_scope)?;
        return Ok(list(state.control.images(sub, Some(group))?));
    }
    let name = &rest[1];
    let scope = format!("{group_scope}/providers/Microsoft.Compute/images/{name}");
    match (rest.len(), m) {
        (2, &Method::GET) => {
            authorize(state, caller, &action("read"), &scope)?;
            Ok(ok(state.control.image(sub, group, name)?))
        }
        (2, &Method::PUT) => {
            authorize(state, caller, &action("write"), &scope)?;
            let input: ImageInput = req.json()?;
            let (image, created) = state.control.put_image(sub, group, name, input)?;
            let status = if created {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            done_with_body(state, req, status, image)
        }
        (2, &Method::DELETE) => {
            authorize(state, caller, &action("delete"), &scope)?;
            Ok(if state.control.delete_image(sub, group, name)? {
                StatusCode::OK.into_response()
            } else {
                StatusCode::NO_CONTENT.into_response()
            })
        }
        (_, m) => Err(ApiError::MethodNotAllowed(format!(
            "{m} on {NAMESPACE}/{}",
            rest.join("/")
        ))),
    }
}

/// `.../diskEncryptionSets[/{name}[/associatedResources]]`.
fn encryption_sets(
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
    let m = &req.method;
    if rest.len() == 1 {
        if m != Method::GET {
            return Err(ApiError::MethodNotAllowed(m.to_string()));
        }
        authorize(state, caller, DES_READ, &group_scope)?;
        return Ok(list(state.control.disk_encryption_sets(sub, Some(group))?));
    }
    let name = &rest[1];
    let scope = format!("{group_scope}/providers/Microsoft.Compute/diskEncryptionSets/{name}");
    let is = |i: usize, w: &str| rest.get(i).is_some_and(|s| s.eq_ignore_ascii_case(w));
    match (rest.len(), m) {
        (2, &Method::GET) => {
            authorize(state, caller, DES_READ, &scope)?;
            Ok(ok(state.control.disk_encryption_set(sub, group, name)?))
        }
        (2, &Method::PUT) | (2, &Method::PATCH) => {
            authorize(state, caller, DES_WRITE, &scope)?;
            let input: EncryptionSetInput = req.json()?;
            if m == Method::PATCH {
                // PATCH keeps what it does not name; the control plane merges with the set.
                state.control.disk_encryption_set(sub, group, name)?;
            }
            let (set, _) = state
                .control
                .put_disk_encryption_set(sub, group, name, input)?;
            accepted(state, req, set["id"].as_str().unwrap_or(&scope), None)
        }
        (2, &Method::DELETE) => {
            authorize(state, caller, DES_DELETE, &scope)?;
            Ok(
                if state.control.delete_disk_encryption_set(sub, group, name)? {
                    StatusCode::OK.into_response()
                } else {
                    StatusCode::NO_CONTENT.into_response()
                },
            )
        }
        (3, &Method::GET) if is(2, "associatedResources") => {
            authorize(state, caller, DES_READ, &scope)?;
            let ids = state
                .control
                .disk_encryption_set_resources(sub, group, name)?;
            Ok(ok(json!({"value": ids})))
        }
        (_, m) => Err(ApiError::MethodNotAllowed(format!(
            "{m} on {NAMESPACE}/{}",
            rest.join("/")
        ))),
    }
}

/// `/subscriptions/{s}/providers/Microsoft.Compute/imageAliases[/{alias}]`: the image catalog.
fn image_aliases(
    state: &AppState,
    req: &Req,
    caller: &Caller,
    rest: &[String],
) -> ApiResult<Response> {
    let sub_scope = state.control.subscription_scope();
    let read = "Microsoft.Compute/imageAliases/read";
    let write = "Microsoft.Compute/imageAliases/write";
    match (rest.len(), &req.method) {
        (1, &Method::GET) => {
            authorize(state, caller, read, &sub_scope)?;
            Ok(list(state.control.image_aliases()?))
        }
        (2, &Method::GET) => {
            authorize(state, caller, read, &sub_scope)?;
            Ok(ok(state.control.image_alias(&rest[1])?))
        }
        (2, &Method::PUT) => {
            authorize(state, caller, write, &sub_scope)?;
            let input: control::catalog::AliasInput = req.json()?;
            Ok(ok(state.control.put_image_alias(&rest[1], input)?))
        }
        (2, &Method::DELETE) => {
            authorize(state, caller, write, &sub_scope)?;
            Ok(if state.control.delete_image_alias(&rest[1])? {
                StatusCode::OK.into_response()
            } else {
                StatusCode::NO_CONTENT.into_response()
            })
        }
        (_, m) => Err(ApiError::MethodNotAllowed(format!(
            "{m} on {NAMESPACE}/{}",
            rest.join("/")
        ))),
    }
}

/// `/subscriptions/{s}/providers/Microsoft.Compute/...`; `rest` starts after the namespace.
pub fn route_subscription(
    state: &AppState,
    req: &Req,
    caller: &Caller,
    sub: &str,
    rest: &[String],
) -> ApiResult<Response> {
    let is = |i: usize, w: &str| rest.get(i).is_some_and(|s| s.eq_ignore_ascii_case(w));
    if is(0, "imageAliases") {
        return image_aliases(state, req, caller, rest);
    }
    match (rest.len(), &req.method) {
        // Subscription-wide lists show what the caller may read, as ARM does.
        (1, &Method::GET) if is(0, "disks") => Ok(list(readable(
            state,
            caller,
            state.control.disks(sub, None)?,
            DISK_READ,
        )?)),
        (1, &Method::GET) if is(0, "snapshots") => Ok(list(readable(
            state,
            caller,
            state.control.snapshots(sub, None)?,
            "Microsoft.Compute/snapshots/read",
        )?)),
        (1, &Method::GET) if is(0, "images") => Ok(list(readable(
            state,
            caller,
            state.control.images(sub, None)?,
            "Microsoft.Compute/images/read",
        )?)),
        (1, &Method::GET) if is(0, "virtualMachines") => Ok(list(readable(
            state,
            caller,
            state.control.vms(sub, None)?,
            VM_READ,
        )?)),
        (1, &Method::GET) if is(0, "diskEncryptionSets") => Ok(list(readable(
            state,
            caller,
            state.control.disk_encryption_sets(sub, None)?,
            DES_READ,
        )?)),
        (_, m) => Err(ApiError::MethodNotAllowed(format!(
            "{m} on {NAMESPACE}/{}",
            rest.join("/")
        ))),
    }
}
