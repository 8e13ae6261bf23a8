//! ARM resources held by the control plane itself: resource groups, role assignments and role
//! definitions, and the generic resource listing.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::deployment::{now, rfc3339};
use crate::ids::{ArmId, ObjectId, scope_contains};
use crate::store::{
    PrincipalKind, PrincipalRecord, ResourceQuery, ResourceRecord, Store, StoreError,
};
use crate::{ControlError, ControlPlane, RoleAssignment, RoleDefinition, builtin_roles};

pub const RESOURCE_GROUP_TYPE: &str = "Microsoft.Resources/resourceGroups";
pub const ROLE_ASSIGNMENT_TYPE: &str = "Microsoft.Authorization/roleAssignments";
pub const ROLE_DEFINITION_TYPE: &str = "Microsoft.Authorization/roleDefinitions";

/// The body of a resource group PUT.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResourceGroupInput {
    pub location: String,
    #[serde(default)]
    pub tags: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub managed_by: Option<String>,
}

/// The body of a resource group PATCH.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResourceGroupPatch {
    #[serde(default)]
    pub tags: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub managed_by: Option<String>,
}

/// The `properties` of a role assignment PUT.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RoleAssignmentInput {
    pub role_definition_id: String,
    pub principal_id: String,
    #[serde(default)]
    pub principal_type: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
}

/// Which role assignments a listing returns (`$filter` of the list calls).
#[derive(Debug, Clone, Default)]
pub struct RoleAssignmentFilter {
    /// `atScope()`: only assignments at the scope or above it.
    pub at_scope: bool,
    /// `principalId eq '...'` / `assignedTo('...')`.
    pub principal_id: Option<String>,
}

fn valid_resource_group_name(name: &str) -> bool {
    (1..=90).contains(&name.len())
        && !name.ends_with('.')
        && name
            .chars()
            .all(|c| c.is_alphanumeric() || "_-.()".contains(c))
}

fn principal_type(p: &PrincipalRecord) -> &'static str {
    match p.kind {
        PrincipalKind::ServicePrincipal | PrincipalKind::ManagedIdentity { .. } => {
            "ServicePrincipal"
        }
    }
}

/// The last segment of an id, or the id itself.
fn last_segment(id: &str) -> &str {
    id.trim_end_matches('/').rsplit('/').next().unwrap_or(id)
}

/// Every role assignment in `store`, with its resource id.
pub(crate) fn role_assignments(
    store: &dyn Store,
) -> Result<Vec<(String, RoleAssignment)>, StoreError> {
    let records = store.resources(&ResourceQuery {
        resource_type: Some(ROLE_ASSIGNMENT_TYPE),
        ..Default::default()
    })?;
    Ok(records
        .into_iter()
        .filter_map(|r| {
            let props = r.body.get("properties")?;
            let assignment = RoleAssignment {
                scope: props.get("scope")?.as_str()?.to_string(),
                principal_id: props.get("principalId")?.as_str()?.parse().ok()?,
                role_definition: last_segment(props.get("roleDefinitionId")?.as_str()?).to_string(),
            };
            Some((r.id, assignment))
        })
        .collect())
}

impl ControlPlane {
    fn resource_group_id(&self, name: &str) -> String {
        format!("{}/resourceGroups/{name}", self.subscription_scope())
    }

    /// Creates or updates a resource group; returns its document and whether it was created.
    pub fn put_resource_group(
        &self,
        subscription: &str,
        name: &str,
        input: ResourceGroupInput,
    ) -> Result<(Value, bool), ControlError> {
        self.check_subscription(subscription)?;
        if !valid_resource_group_name(name) {
            return Err(ControlError::InvalidResourceGroupName(name.to_string()));
        }
        let location = self.location(&input.location)?;
        let existing = self.store.resource(&self.resource_group_id(name))?;
        if let Some(existing) = &existing {
            let old = existing.body["location"].as_str().unwrap_or_default();
            if !old.eq_ignore_ascii_case(location) {
                return Err(ControlError::InvalidParameter {
                    name: "location".into(),
                    reason: format!(
                        "resource group '{name}' already exists in location '{old}'; a resource group cannot change location"
                    ),
                });
            }
        }
        // Keep the name's original case once created, as ARM does.
        let id = existing
            .as_ref()
            .map(|e| e.id.clone())
            .unwrap_or_else(|| self.resource_group_id(name));
        let name = last_segment(&id).to_string();
        let mut body = json!({
            "id": id,
            "name": name,
            "type": RESOURCE_GROUP_TYPE,
            "location": location,
            "properties": {"provisioningState": "Succeeded"},
        });
        if let Some(tags) = input.tags {
            body["tags"] = json!(tags);
        }
        if let Some(managed_by) = input.managed_by {
            body["managedBy"] = json!(managed_by);
        }
        self.store.put_resource(&ResourceRecord {
            id: id.clone(),
            resource_type: RESOURCE_GROUP_TYPE.into(),
            body: body.clone(),
        })?;
        Ok((body, existing.is_none()))
    }

    /// Updates tags / managedBy of an existing resource group.
    pub fn patch_resource_group(
        &self,
        subscription: &str,
        name: &str,
        patch: ResourceGroupPatch,
    ) -> Result<Value, ControlError> {
        let mut record = self.resource_group_record(subscription, name)?;
        if let Some(tags) = patch.tags {
            record.body["tags"] = json!(tags);
        }
        if let Some(managed_by) = patch.managed_by {
            record.body["managedBy"] = json!(managed_by);
        }
        self.store.put_resource(&record)?;
        Ok(record.body)
    }

    fn resource_group_record(
        &self,
        subscription: &str,
        name: &str,
    ) -> Result<ResourceRecord, ControlError> {
        self.check_subscription(subscription)?;
        self.store
            .resource(&self.resource_group_id(name))?
            .ok_or_else(|| ControlError::ResourceGroupNotFound(name.to_string()))
    }

    pub fn resource_group(&self, subscription: &str, name: &str) -> Result<Value, ControlError> {
        Ok(self.resource_group_record(subscription, name)?.body)
    }

    pub fn resource_groups(&self, subscription: &str) -> Result<Vec<Value>, ControlError> {
        self.check_subscription(subscription)?;
        let records = self.store.resources(&ResourceQuery {
            resource_type: Some(RESOURCE_GROUP_TYPE),
            scope: Some(&self.subscription_scope()),
        })?;
        Ok(records.into_iter().map(|r| r.body).collect())
    }

    /// Deletes a resource group with every resource and role assignment below it.
    pub fn delete_resource_group(
        &self,
        subscription: &str,
        name: &str,
    ) -> Result<(), ControlError> {
        let record = self.resource_group_record(subscription, name)?;
        let disks = self.store.resources(&ResourceQuery {
            resource_type: Some(crate::disks::DISK_TYPE),
            scope: Some(&record.id),
        })?;
        for disk in &disks {
            self.destroy_disk(disk)?;
        }
        for kind in [
            crate::snapshots::SNAPSHOT_TYPE,
            crate::snapshots::IMAGE_TYPE,
        ] {
            for record in self.store.resources(&ResourceQuery {
                resource_type: Some(kind),
                scope: Some(&record.id),
            })? {
                self.destroy_copy(&record)?;
            }
        }
        self.store.delete_resources_under(&record.id)?;
        Ok(())
    }

    /// Resources in the subscription other than groups and role assignments, for
    /// `GET /subscriptions/{s}/resources` (filters applied by the caller).
    pub fn generic_resources(&self, subscription: &str) -> Result<Vec<Value>, ControlError> {
        self.check_subscription(subscription)?;
        let records = self.store.resources(&ResourceQuery {
            scope: Some(&self.subscription_scope()),
            ..Default::default()
        })?;
        Ok(records
            .into_iter()
            .filter(|r| {
                !r.resource_type.eq_ignore_ascii_case(RESOURCE_GROUP_TYPE)
                    && !r.resource_type.eq_ignore_ascii_case(ROLE_ASSIGNMENT_TYPE)
            })
            .map(|r| {
                let mut v = json!({
                    "id": r.id,
                    "name": r.body.get("name").cloned().unwrap_or(Value::Null),
                    "type": r.resource_type,
                    "location": r.body.get("location").cloned().unwrap_or(Value::Null),
                });
                if let Some(tags) = r.body.get("tags") {
                    v["tags"] = tags.clone();
                }
                v
            })
            .collect())
    }

    /// Checks that `scope` exists: `/`, the subscription, a resource group or a resource.
    pub fn check_scope(&self, scope: &str) -> Result<(), ControlError> {
        let scope = scope.trim_end_matches('/');
        if scope.is_empty() {
            return Ok(());
        }
        let id = ArmId::parse(scope).ok_or_else(|| ControlError::InvalidParameter {
            name: "scope".into(),
            reason: format!("'{scope}' is not a valid scope"),
        })?;
        self.check_subscription(&id.subscription)?;
        let Some(group) = &id.resource_group else {
            return Ok(());
        };
        let group_id = self.resource_group_id(group);
        if self.store.resource(&group_id)?.is_none() {
            return Err(ControlError::ResourceGroupNotFound(group.clone()));
        }
        if !scope.eq_ignore_ascii_case(&group_id) && self.store.resource(scope)?.is_none() {
            return Err(ControlError::ResourceNotFound {
                resource_type: "resource".into(),
                name: last_segment(scope).to_string(),
                resource_group: group.clone(),
            });
        }
        Ok(())
    }

    // ---- role definitions ----

    fn role_definition_json(&self, role: &RoleDefinition) -> Value {
        json!({
            "id": format!("{}/providers/{ROLE_DEFINITION_TYPE}/{}", self.subscription_scope(), role.name),
            "name": role.name,
            "type": ROLE_DEFINITION_TYPE,
            "properties": {
                "roleName": role.role_name,
                "type": "BuiltInRole",
                "description": role.description,
                "assignableScopes": ["/"],
                "permissions": role.permissions,
                "createdOn": "2015-02-02T21:55:09.8806423Z",
                "updatedOn": "2024-01-01T00:00:00.0000000Z",
                "createdBy": null,
                "updatedBy": null
            }
        })
    }

    /// Role definitions visible at `scope`, optionally only the one named `role_name`.
    pub fn role_definitions(&self, role_name: Option<&str>) -> Vec<Value> {
        builtin_roles()
            .iter()
            .filter(|r| role_name.is_none_or(|n| r.role_name.eq_ignore_ascii_case(n)))
            .map(|r| self.role_definition_json(r))
            .collect()
    }

    /// The role definition with GUID `name` (or a full definition id).
    pub fn role_definition(&self, name: &str) -> Result<Value, ControlError> {
        let guid = last_segment(name);
        builtin_roles()
            .iter()
            .find(|r| r.name.eq_ignore_ascii_case(guid))
            .map(|r| self.role_definition_json(r))
            .ok_or_else(|| ControlError::RoleDefinitionNotFound(guid.to_string()))
    }

    // ---- role assignments ----

    pub(crate) fn create_role_assignment_record(
        &self,
        scope: &str,
        name: &str,
        role: &str,
        principal: &PrincipalRecord,
    ) -> Result<Value, ControlError> {
        let scope = scope.trim_end_matches('/');
        let id = format!("{scope}/providers/{ROLE_ASSIGNMENT_TYPE}/{name}");
        let time = rfc3339(now());
        let body = json!({
            "id": id,
            "name": name,
            "type": ROLE_ASSIGNMENT_TYPE,
            "properties": {
                "roleDefinitionId": format!("{}/providers/{ROLE_DEFINITION_TYPE}/{role}", self.subscription_scope()),
                "principalId": principal.object_id.to_string(),
                "principalType": principal_type(principal),
                "scope": if scope.is_empty() { "/" } else { scope },
                "condition": null,
                "conditionVersion": null,
                "createdOn": time,
                "updatedOn": time,
                "createdBy": null,
                "updatedBy": null,
                "delegatedManagedIdentityResourceId": null,
                "description": null
            }
        });
        self.store.put_resource(&ResourceRecord {
            id,
            resource_type: ROLE_ASSIGNMENT_TYPE.into(),
            body: body.clone(),
        })?;
        Ok(body)
    }

    /// Creates a role assignment named `name` (a GUID) at `scope`; returns it and whether it
    /// was created (`false`: the same assignment already existed under that name).
    pub fn create_role_assignment(
        &self,
        scope: &str,
        name: &str,
        input: RoleAssignmentInput,
    ) -> Result<(Value, bool), ControlError> {
        if Uuid::parse_str(name).is_err() {
            return Err(ControlError::InvalidParameter {
                name: "roleAssignmentName".into(),
                reason: format!("'{name}' must be a GUID"),
            });
        }
        self.check_scope(scope)?;
        let role = last_segment(&input.role_definition_id).to_ascii_lowercase();
        if !builtin_roles().iter().any(|r| r.name == role) {
            return Err(ControlError::RoleDefinitionNotFound(role));
        }
        let principal_id: ObjectId = input
            .principal_id
            .parse()
            .map_err(|_| ControlError::PrincipalNotFound(input.principal_id.clone()))?;
        let principal = self
            .store
            .principal(principal_id)?
            .ok_or_else(|| ControlError::PrincipalNotFound(input.principal_id.clone()))?;
        let id = format!(
            "{}/providers/{ROLE_ASSIGNMENT_TYPE}/{name}",
            scope.trim_end_matches('/')
        );
        let same = |a: &RoleAssignment| {
            a.principal_id == principal_id
                && a.role_definition.eq_ignore_ascii_case(&role)
                && a.scope
                    .trim_end_matches('/')
                    .eq_ignore_ascii_case(scope.trim_end_matches('/'))
        };
        for (existing_id, a) in role_assignments(&*self.store)? {
            let same_name = existing_id.eq_ignore_ascii_case(&id);
            match (same_name, same(&a)) {
                (true, true) => return Ok((self.role_assignment(&existing_id)?, false)),
                (true, false) => {
                    return Err(ControlError::InvalidParameter {
                        name: "roleAssignment".into(),
                        reason:
                            "a role assignment cannot be updated; delete it and create a new one"
                                .into(),
                    });
                }
                (false, true) => return Err(ControlError::RoleAssignmentExists),
                (false, false) => {}
            }
        }
        let mut body = self.create_role_assignment_record(scope, name, &role, &principal)?;
        if let Some(description) = input.description {
            body["properties"]["description"] = json!(description);
            self.store.put_resource(&ResourceRecord {
                id,
                resource_type: ROLE_ASSIGNMENT_TYPE.into(),
                body: body.clone(),
            })?;
        }
        Ok((body, true))
    }

    pub fn role_assignment(&self, id: &str) -> Result<Value, ControlError> {
        self.store
            .resource(id)?
            .filter(|r| r.resource_type.eq_ignore_ascii_case(ROLE_ASSIGNMENT_TYPE))
            .map(|r| r.body)
            .ok_or_else(|| ControlError::RoleAssignmentNotFound(last_segment(id).to_string()))
    }

    /// Deletes a role assignment; returns it, or `None` if there was none (ARM answers 204).
    pub fn delete_role_assignment(&self, id: &str) -> Result<Option<Value>, ControlError> {
        let existing = self
            .store
            .resource(id)?
            .filter(|r| r.resource_type.eq_ignore_ascii_case(ROLE_ASSIGNMENT_TYPE));
        if let Some(r) = &existing {
            self.store.delete_resource(&r.id)?;
        }
        Ok(existing.map(|r| r.body))
    }

    /// Role assignments that apply at `scope`: at it, above it, and (unless `atScope()`)
    /// below it.
    pub fn role_assignments_for(
        &self,
        scope: &str,
        filter: &RoleAssignmentFilter,
    ) -> Result<Vec<Value>, ControlError> {
        let mut out = Vec::new();
        for (id, a) in role_assignments(&*self.store)? {
            let above = scope_contains(&a.scope, scope);
            let below = scope_contains(scope, &a.scope);
            if !(above || (below && !filter.at_scope)) {
                continue;
            }
            if let Some(p) = &filter.principal_id
                && !a.principal_id.to_string().eq_ignore_ascii_case(p)
            {
                continue;
            }
            out.push(self.role_assignment(&id)?);
        }
        Ok(out)
    }
}

impl ControlPlane {
    /// The resource `id` of type `kind` in `group` (ResourceNotFound otherwise).
    pub(crate) fn typed_record(
        &self,
        subscription: &str,
        group: &str,
        id: String,
        kind: &str,
        name: &str,
    ) -> Result<ResourceRecord, ControlError> {
        self.check_subscription(subscription)?;
        self.resource_group(subscription, group)?;
        self.store
            .resource(&id)?
            .filter(|r| r.resource_type.eq_ignore_ascii_case(kind))
            .ok_or_else(|| ControlError::ResourceNotFound {
                resource_type: kind.into(),
                name: name.into(),
                resource_group: group.into(),
            })
    }

    /// Resources of type `kind` in a resource group, or in the subscription; presented.
    pub(crate) fn typed_list(
        &self,
        subscription: &str,
        group: Option<&str>,
        kind: &str,
    ) -> Result<Vec<Value>, ControlError> {
        self.check_subscription(subscription)?;
        let scope = match group {
            Some(g) => {
                self.resource_group(subscription, g)?;
                format!("{}/resourceGroups/{g}", self.subscription_scope())
            }
            None => self.subscription_scope(),
        };
        Ok(self
            .store
            .resources(&ResourceQuery {
                resource_type: Some(kind),
                scope: Some(&scope),
            })?
            .into_iter()
            .map(|r| Self::present(r.body))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::store::SqliteStore;

    fn plane() -> ControlPlane {
        ControlPlane::open(
            Arc::new(SqliteStore::open_in_memory().unwrap()),
            Arc::new(crypto::RootKey::generate().unwrap()),
            None,
        )
        .unwrap()
        .0
    }

    fn rg(location: &str) -> ResourceGroupInput {
        ResourceGroupInput {
            location: location.into(),
            tags: None,
            managed_by: None,
        }
    }

    #[test]
    fn resource_group_lifecycle() {
        let p = plane();
        let sub = p.subscription().to_string();
        let (body, created) = p.put_resource_group(&sub, "Rg1", rg("East US")).unwrap();
        assert!(created);
        assert_eq!(body["location"], "eastus");
        let (_, created) = p.put_resource_group(&sub, "rg1", rg("eastus")).unwrap();
        assert!(!created);
        assert_eq!(p.resource_group(&sub, "RG1").unwrap()["name"], "Rg1");
        assert!(matches!(
            p.put_resource_group(&sub, "rg1", rg("westus2")),
            Err(ControlError::InvalidParameter { .. })
        ));
        assert!(matches!(
            p.put_resource_group(&sub, "bad/name", rg("eastus")),
            Err(ControlError::InvalidResourceGroupName(_))
        ));
        assert!(matches!(
            p.put_resource_group(&sub, "x", rg("mars")),
            Err(ControlError::LocationNotAvailable(_))
        ));
        assert!(matches!(
            p.resource_group("other", "rg1"),
            Err(ControlError::SubscriptionNotFound(_))
        ));
        p.delete_resource_group(&sub, "rg1").unwrap();
        assert!(matches!(
            p.resource_group(&sub, "rg1"),
            Err(ControlError::ResourceGroupNotFound(_))
        ));
    }

    #[test]
    fn role_assignments_grant_and_cascade() {
        let p = plane();
        let sub = p.subscription().to_string();
        p.put_resource_group(&sub, "g", rg("eastus")).unwrap();
        let (_, sp) = p.create_application("app", None).unwrap();
        let scope = format!("/subscriptions/{sub}/resourceGroups/g");
        let read = "Microsoft.Resources/subscriptions/resourceGroups/read";
        assert!(!p.is_authorized(sp.object_id, read, &scope, false).unwrap());
        let input = || {
            RoleAssignmentInput {
            role_definition_id: "/subscriptions/x/providers/Microsoft.Authorization/roleDefinitions/acdd72a7-3385-48ef-bd42-f606fba81ae7".into(),
            principal_id: sp.object_id.to_string(),
            principal_type: None,
            description: None,
        }
        };
        let name = Uuid::new_v4().to_string();
        let (_, created) = p.create_role_assignment(&scope, &name, input()).unwrap();
        assert!(created);
        assert!(!p.create_role_assignment(&scope, &name, input()).unwrap().1);
        assert!(matches!(
            p.create_role_assignment(&scope, &Uuid::new_v4().to_string(), input()),
            Err(ControlError::RoleAssignmentExists)
        ));
        assert!(p.is_authorized(sp.object_id, read, &scope, false).unwrap());
        let listed = p
            .role_assignments_for(&p.subscription_scope(), &RoleAssignmentFilter::default())
            .unwrap();
        assert_eq!(listed.len(), 2, "bootstrap Owner + the new one");
        let at = p
            .role_assignments_for(
                &p.subscription_scope(),
                &RoleAssignmentFilter {
                    at_scope: true,
                    principal_id: None,
                },
            )
            .unwrap();
        assert_eq!(at.len(), 1);
        p.delete_resource_group(&sub, "g").unwrap();
        assert!(!p.is_authorized(sp.object_id, read, &scope, false).unwrap());
    }
}
