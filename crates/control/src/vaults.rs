//! Microsoft.KeyVault/vaults: the vault resources, their soft-deleted form, access policies
//! and the data-plane permission decision (access policies or Azure RBAC).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::deployment::rfc3339;
use crate::ids::ObjectId;
use crate::store::{ResourceQuery, ResourceRecord};
use crate::{ControlError, ControlPlane};

pub const VAULT_TYPE: &str = "Microsoft.KeyVault/vaults";
pub const DELETED_VAULT_TYPE: &str = "Microsoft.KeyVault/deletedVaults";
const DAY: i64 = 24 * 3600;

/// Key permissions an access policy can grant, with their canonical spelling.
pub const KEY_PERMISSIONS: &[&str] = &[
    "get",
    "list",
    "create",
    "update",
    "import",
    "delete",
    "recover",
    "backup",
    "restore",
    "purge",
    "encrypt",
    "decrypt",
    "wrapKey",
    "unwrapKey",
    "sign",
    "verify",
    "rotate",
    "getrotationpolicy",
    "setrotationpolicy",
    "release",
];

/// The `properties` of a vault PUT (the fields sealdisk acts on; others are kept as given).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VaultProperties {
    pub tenant_id: Option<String>,
    pub sku: Option<Sku>,
    pub access_policies: Option<Vec<AccessPolicy>>,
    pub enabled_for_deployment: Option<bool>,
    pub enabled_for_disk_encryption: Option<bool>,
    pub enabled_for_template_deployment: Option<bool>,
    pub enable_soft_delete: Option<bool>,
    pub soft_delete_retention_in_days: Option<i64>,
    pub enable_rbac_authorization: Option<bool>,
    pub create_mode: Option<String>,
    pub enable_purge_protection: Option<bool>,
    pub network_acls: Option<Value>,
    pub public_network_access: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Sku {
    pub family: Option<String>,
    pub name: String,
}

/// One access policy entry.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AccessPolicy {
    pub tenant_id: String,
    pub object_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub application_id: Option<String>,
    pub permissions: Permissions,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
pub struct Permissions {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keys: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secrets: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificates: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage: Option<Vec<String>>,
}

/// A vault PUT body.
#[derive(Debug, Deserialize)]
pub struct VaultInput {
    pub location: String,
    #[serde(default)]
    pub tags: Option<BTreeMap<String, String>>,
    pub properties: VaultProperties,
}

/// A vault PATCH body.
#[derive(Debug, Deserialize)]
pub struct VaultPatch {
    #[serde(default)]
    pub tags: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub properties: Option<VaultProperties>,
}

/// How an access policy update combines with the existing policies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessPolicyUpdate {
    Add,
    Replace,
    Remove,
}

impl std::str::FromStr for AccessPolicyUpdate {
    type Err = ControlError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "add" => Ok(Self::Add),
            "replace" => Ok(Self::Replace),
            "remove" => Ok(Self::Remove),
            _ => Err(ControlError::InvalidParameter {
                name: "operationKind".into(),
                reason: format!("'{s}' must be add, replace or remove"),
            }),
        }
    }
}

/// Whether `name` is a valid vault name.
pub fn valid_vault_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    (3..=24).contains(&bytes.len())
        && bytes[0].is_ascii_alphabetic()
        && bytes[bytes.len() - 1].is_ascii_alphanumeric()
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'-')
        && !name.contains("--")
}

fn normalize_permissions(list: &mut Option<Vec<String>>, field: &str) -> Result<(), ControlError> {
    let Some(list) = list else { return Ok(()) };
    if field != "keys" {
        return Ok(());
    }
    let mut out: Vec<String> = Vec::new();
    for p in list.iter() {
        let canonical = if p.eq_ignore_ascii_case("all") {
            "all"
        } else {
            KEY_PERMISSIONS
                .iter()
                .find(|k| k.eq_ignore_ascii_case(p))
                .copied()
                .ok_or_else(|| ControlError::InvalidParameter {
                    name: "accessPolicies.permissions.keys".into(),
                    reason: format!(
                        "'{p}' is not a key permission; valid: all, {}",
                        KEY_PERMISSIONS.join(", ")
                    ),
                })?
        };
        if !out.iter().any(|o| o == canonical) {
            out.push(canonical.to_string());
        }
    }
    *list = out;
    Ok(())
}

fn normalize_policy(policy: &mut AccessPolicy) -> Result<(), ControlError> {
    normalize_permissions(&mut policy.permissions.keys, "keys")?;
    if policy.object_id.parse::<ObjectId>().is_err() {
        return Err(ControlError::InvalidParameter {
            name: "accessPolicies.objectId".into(),
            reason: format!("'{}' is not an object id (GUID)", policy.object_id),
        });
    }
    Ok(())
}

fn merge(into: &mut Option<Vec<String>>, from: &Option<Vec<String>>) {
    if let Some(from) = from {
        let list = into.get_or_insert_with(Vec::new);
        for p in from {
            if !list.iter().any(|x| x.eq_ignore_ascii_case(p)) {
                list.push(p.clone());
            }
        }
    }
}

fn subtract(into: &mut Option<Vec<String>>, from: &Option<Vec<String>>) {
    if let (Some(list), Some(from)) = (into.as_mut(), from) {
        list.retain(|p| !from.iter().any(|x| x.eq_ignore_ascii_case(p)));
    }
}

/// The data action RBAC checks for a key permission.
pub fn key_data_action(permission: &str) -> String {
    let action = match permission.to_ascii_lowercase().as_str() {
        "get" | "list" => "keys/read",
        "create" => "keys/create/action",
        "update" => "keys/update/action",
        "import" => "keys/import/action",
        "delete" => "keys/delete",
        "recover" => "keys/recover/action",
        "backup" => "keys/backup/action",
        "restore" => "keys/restore/action",
        "purge" => "keys/purge/action",
        "encrypt" => "keys/encrypt/action",
        "decrypt" => "keys/decrypt/action",
        "wrapkey" => "keys/wrap/action",
        "unwrapkey" => "keys/unwrap/action",
        "sign" => "keys/sign/action",
        "verify" => "keys/verify/action",
        "rotate" => "keys/rotate/action",
        "release" => "keys/release/action",
        "getrotationpolicy" => "keyrotationpolicies/read",
        "setrotationpolicy" => "keyrotationpolicies/write",
        other => return format!("Microsoft.KeyVault/vaults/keys/{other}/action"),
    };
    format!("Microsoft.KeyVault/vaults/{action}")
}

/// The outcome of a data-plane permission check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyAccess {
    Allowed,
    /// Access-policy vault without the permission for the caller (inner code `AccessDenied`).
    DeniedByPolicy,
    /// RBAC vault without a role granting the data action (inner code `ForbiddenByRbac`).
    DeniedByRbac {
        action: String,
    },
}

impl ControlPlane {
    fn vault_id(&self, group: &str, name: &str) -> String {
        format!(
            "{}/resourceGroups/{group}/providers/{VAULT_TYPE}/{name}",
            self.subscription_scope()
        )
    }

    fn deleted_vault_id(&self, location: &str, name: &str) -> String {
        format!(
            "{}/providers/Microsoft.KeyVault/locations/{location}/deletedVaults/{name}",
            self.subscription_scope()
        )
    }

    /// The vault named `name` anywhere in the deployment (names are global).
    pub fn vault_by_name(&self, name: &str) -> Result<Option<Value>, ControlError> {
        let generation = self.store.generation()?;
        self.key_cache.read(
            generation,
            |r| &mut r.vaults,
            name.to_ascii_lowercase(),
            || self.load_vault_by_name(name),
        )
    }

    fn load_vault_by_name(&self, name: &str) -> Result<Option<Value>, ControlError> {
        let vaults = self.store.resources(&ResourceQuery {
            resource_type: Some(VAULT_TYPE),
            ..Default::default()
        })?;
        Ok(vaults.into_iter().map(|r| r.body).find(|v| {
            v["name"]
                .as_str()
                .is_some_and(|n| n.eq_ignore_ascii_case(name))
        }))
    }

    /// Soft-deleted vaults, purging those whose retention has ended.
    pub fn deleted_vaults(&self) -> Result<Vec<Value>, ControlError> {
        let records = self.store.resources(&ResourceQuery {
            resource_type: Some(DELETED_VAULT_TYPE),
            ..Default::default()
        })?;
        let now = self.now();
        let mut out = Vec::new();
        for r in records {
            if r.body["internal"]["purgeAt"]
                .as_i64()
                .is_some_and(|t| t <= now)
            {
                self.purge_vault_record(&r)?;
            } else {
                out.push(r.body);
            }
        }
        Ok(out)
    }

    fn deleted_vault_by_name(&self, name: &str) -> Result<Option<Value>, ControlError> {
        Ok(self.deleted_vaults()?.into_iter().find(|v| {
            v["name"]
                .as_str()
                .is_some_and(|n| n.eq_ignore_ascii_case(name))
        }))
    }

    /// Strips internal fields from a stored (deleted) vault document.
    pub fn present(mut doc: Value) -> Value {
        if let Some(o) = doc.as_object_mut() {
            o.remove("internal");
        }
        doc
    }

    /// Creates, updates or recovers a vault; returns the document and whether it was created.
    pub fn put_vault(
        &self,
        subscription: &str,
        group: &str,
        name: &str,
        input: VaultInput,
    ) -> Result<(Value, bool), ControlError> {
        self.resource_group(subscription, group)?;
        if !valid_vault_name(name) {
            return Err(ControlError::VaultNameNotValid(name.to_string()));
        }
        let location = self.location(&input.location)?;
        let id = self.vault_id(group, name);
        let existing = self.store.resource(&id)?.map(|r| r.body);
        if existing.is_none() {
            if self.vault_by_name(name)?.is_some() {
                return Err(ControlError::VaultAlreadyExists(name.to_string()));
            }
            if let Some(deleted) = self.deleted_vault_by_name(name)? {
                if input
                    .properties
                    .create_mode
                    .as_deref()
                    .is_some_and(|m| m.eq_ignore_ascii_case("recover"))
                {
                    return self.recover_vault(&deleted, group, name, input);
                }
                return Err(ControlError::VaultInDeletedState(name.to_string()));
            }
            if input
                .properties
                .create_mode
                .as_deref()
                .is_some_and(|m| m.eq_ignore_ascii_case("recover"))
            {
                return Err(ControlError::DeletedVaultNotFound(
                    name.to_string(),
                    location.to_string(),
                ));
            }
        }
        let body = self.vault_document(
            &id,
            name,
            location,
            input.tags,
            input.properties,
            existing.as_ref(),
        )?;
        self.store.put_resource(&ResourceRecord {
            id,
            resource_type: VAULT_TYPE.into(),
            body: body.clone(),
        })?;
        Ok((body, existing.is_none()))
    }

    fn recover_vault(
        &self,
        deleted: &Value,
        group: &str,
        name: &str,
        input: VaultInput,
    ) -> Result<(Value, bool), ControlError> {
        let mut original = deleted["internal"]["vault"].clone();
        let original_id = original["id"].as_str().unwrap_or_default().to_string();
        let id = self.vault_id(group, name);
        if !original_id.eq_ignore_ascii_case(&id) {
            return Err(ControlError::InvalidParameter {
                name: "resourceGroupName".into(),
                reason: format!(
                    "vault '{name}' was deleted from '{original_id}'; recover it into the same resource group"
                ),
            });
        }
        if let Some(tags) = input.tags {
            original["tags"] = json!(tags);
        }
        self.store.put_resource(&ResourceRecord {
            id: original_id,
            resource_type: VAULT_TYPE.into(),
            body: original.clone(),
        })?;
        self.store
            .delete_resource(deleted["id"].as_str().unwrap_or_default())?;
        Ok((original, true))
    }

    fn vault_document(
        &self,
        id: &str,
        name: &str,
        location: &str,
        tags: Option<BTreeMap<String, String>>,
        p: VaultProperties,
        existing: Option<&Value>,
    ) -> Result<Value, ControlError> {
        let old = existing.map(|e| &e["properties"]);
        if p.enable_soft_delete == Some(false) {
            return Err(ControlError::PropertyImmutable {
                property: "enableSoftDelete",
                reason: "cannot be set to false: soft delete is always on for sealdisk vaults.",
            });
        }
        let old_protection = old
            .and_then(|o| o["enablePurgeProtection"].as_bool())
            .unwrap_or(false);
        if old_protection && p.enable_purge_protection == Some(false) {
            return Err(ControlError::PropertyImmutable {
                property: "enablePurgeProtection",
                reason: "cannot be set to false: enabling purge protection for a vault is irreversible.",
            });
        }
        let retention = match p.soft_delete_retention_in_days {
            Some(days) if !(7..=90).contains(&days) => {
                return Err(ControlError::InvalidParameter {
                    name: "softDeleteRetentionInDays".into(),
                    reason: format!("{days} is out of range; it must be between 7 and 90"),
                });
            }
            Some(days) => days,
            None => old
                .and_then(|o| o["softDeleteRetentionInDays"].as_i64())
                .unwrap_or(90),
        };
        if let Some(tenant) = &p.tenant_id
            && !tenant.eq_ignore_ascii_case(&self.tenant().to_string())
        {
            return Err(ControlError::InvalidParameter {
                name: "tenantId".into(),
                reason: format!(
                    "'{tenant}' is not this deployment's tenant ({})",
                    self.tenant()
                ),
            });
        }
        let sku = match &p.sku {
            Some(s)
                if s.name.eq_ignore_ascii_case("standard")
                    || s.name.eq_ignore_ascii_case("premium") =>
            {
                json!({"family": "A", "name": s.name.to_ascii_lowercase()})
            }
            Some(s) => {
                return Err(ControlError::InvalidParameter {
                    name: "sku.name".into(),
                    reason: format!("'{}' must be standard or premium", s.name),
                });
            }
            None => old
                .map(|o| o["sku"].clone())
                .unwrap_or_else(|| json!({"family": "A", "name": "standard"})),
        };
        let mut policies = match p.access_policies {
            Some(list) => list,
            None => old
                .and_then(|o| {
                    serde_json::from_value::<Vec<AccessPolicy>>(o["accessPolicies"].clone()).ok()
                })
                .unwrap_or_default(),
        };
        for policy in &mut policies {
            normalize_policy(policy)?;
        }
        let flag = |new: Option<bool>, field: &str, default: bool| {
            new.or_else(|| old.and_then(|o| o[field].as_bool()))
                .unwrap_or(default)
        };
        let protection = old_protection || p.enable_purge_protection == Some(true);
        let now = rfc3339(self.now());
        let created = existing
            .and_then(|e| e["systemData"]["createdAt"].as_str())
            .unwrap_or(&now)
            .to_string();
        let mut properties = json!({
            "tenantId": self.tenant().to_string(),
            "sku": sku,
            "accessPolicies": policies,
            "enabledForDeployment": flag(p.enabled_for_deployment, "enabledForDeployment", false),
            "enabledForDiskEncryption": flag(p.enabled_for_disk_encryption, "enabledForDiskEncryption", false),
            "enabledForTemplateDeployment": flag(p.enabled_for_template_deployment, "enabledForTemplateDeployment", false),
            "enableSoftDelete": true,
            "softDeleteRetentionInDays": retention,
            "enableRbacAuthorization": flag(p.enable_rbac_authorization, "enableRbacAuthorization", false),
            "provisioningState": "Succeeded",
            "publicNetworkAccess": p.public_network_access.or_else(|| old.and_then(|o| o["publicNetworkAccess"].as_str().map(str::to_string))).unwrap_or_else(|| "Enabled".into()),
        });
        if protection {
            properties["enablePurgeProtection"] = json!(true);
        }
        if let Some(acls) = p.network_acls.or_else(|| {
            old.map(|o| o["networkAcls"].clone())
                .filter(|v| !v.is_null())
        }) {
            properties["networkAcls"] = acls;
        }
        let tags = tags
            .map(|t| json!(t))
            .or_else(|| existing.map(|e| e["tags"].clone()))
            .unwrap_or_else(|| json!({}));
        Ok(json!({
            "id": id,
            "name": name,
            "type": VAULT_TYPE,
            "location": location,
            "tags": tags,
            "systemData": {"createdAt": created, "lastModifiedAt": now},
            "properties": properties,
        }))
    }

    fn vault_record(
        &self,
        subscription: &str,
        group: &str,
        name: &str,
    ) -> Result<ResourceRecord, ControlError> {
        self.resource_group(subscription, group)?;
        self.store
            .resource(&self.vault_id(group, name))?
            .filter(|r| r.resource_type.eq_ignore_ascii_case(VAULT_TYPE))
            .ok_or_else(|| ControlError::VaultNotFound(name.to_string(), group.to_string()))
    }

    pub fn vault(
        &self,
        subscription: &str,
        group: &str,
        name: &str,
    ) -> Result<Value, ControlError> {
        Ok(self.vault_record(subscription, group, name)?.body)
    }

    /// Updates the given properties and tags of a vault.
    pub fn patch_vault(
        &self,
        subscription: &str,
        group: &str,
        name: &str,
        patch: VaultPatch,
    ) -> Result<Value, ControlError> {
        let record = self.vault_record(subscription, group, name)?;
        let location = record.body["location"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let body = self.vault_document(
            &record.id,
            name,
            &location,
            patch.tags,
            patch.properties.unwrap_or_default(),
            Some(&record.body),
        )?;
        self.store.put_resource(&ResourceRecord {
            id: record.id,
            resource_type: VAULT_TYPE.into(),
            body: body.clone(),
        })?;
        Ok(body)
    }

    /// Vaults in the subscription, or in one resource group.
    pub fn vaults(
        &self,
        subscription: &str,
        group: Option<&str>,
    ) -> Result<Vec<Value>, ControlError> {
        self.check_subscription(subscription)?;
        let scope = match group {
            Some(g) => {
                self.resource_group(subscription, g)?;
                format!("{}/resourceGroups/{g}", self.subscription_scope())
            }
            None => self.subscription_scope(),
        };
        let records = self.store.resources(&ResourceQuery {
            resource_type: Some(VAULT_TYPE),
            scope: Some(&scope),
        })?;
        Ok(records.into_iter().map(|r| r.body).collect())
    }

    /// Soft-deletes a vault: it keeps its keys and can be recovered until its retention ends.
    /// Returns `false` if there was no such vault (ARM answers 204).
    pub fn delete_vault(
        &self,
        subscription: &str,
        group: &str,
        name: &str,
    ) -> Result<bool, ControlError> {
        let record = match self.vault_record(subscription, group, name) {
            Ok(r) => r,
            Err(ControlError::VaultNotFound(..)) => return Ok(false),
            Err(e) => return Err(e),
        };
        let now = self.now();
        let retention = record.body["properties"]["softDeleteRetentionInDays"]
            .as_i64()
            .unwrap_or(90);
        let purge_at = now + retention * DAY;
        let location = record.body["location"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let name = record.body["name"].as_str().unwrap_or(name).to_string();
        let deleted_id = self.deleted_vault_id(&location, &name);
        let deleted = json!({
            "id": deleted_id,
            "name": name,
            "type": DELETED_VAULT_TYPE,
            "properties": {
                "vaultId": record.id,
                "location": location,
                "deletionDate": rfc3339(now),
                "scheduledPurgeDate": rfc3339(purge_at),
                "tags": record.body["tags"],
                "purgeProtectionEnabled": record.body["properties"]["enablePurgeProtection"].as_bool().unwrap_or(false)
            },
            "internal": {"vault": record.body, "purgeAt": purge_at}
        });
        self.store.put_resource(&ResourceRecord {
            id: deleted_id,
            resource_type: DELETED_VAULT_TYPE.into(),
            body: deleted,
        })?;
        self.store.delete_resource(&record.id)?;
        Ok(true)
    }

    pub fn deleted_vault(
        &self,
        subscription: &str,
        location: &str,
        name: &str,
    ) -> Result<Value, ControlError> {
        self.check_subscription(subscription)?;
        self.deleted_vault_by_name(name)?
            .filter(|v| {
                v["properties"]["location"]
                    .as_str()
                    .is_some_and(|l| l.eq_ignore_ascii_case(location))
            })
            .ok_or_else(|| {
                ControlError::DeletedVaultNotFound(name.to_string(), location.to_string())
            })
    }

    /// Permanently deletes a soft-deleted vault and everything in it. Irreversible.
    pub fn purge_deleted_vault(
        &self,
        subscription: &str,
        location: &str,
        name: &str,
    ) -> Result<(), ControlError> {
        let deleted = self.deleted_vault(subscription, location, name)?;
        if deleted["properties"]["purgeProtectionEnabled"].as_bool() == Some(true) {
            return Err(ControlError::PurgeProtected {
                name: name.to_string(),
                scheduled_purge: deleted["properties"]["scheduledPurgeDate"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            });
        }
        let id = deleted["id"].as_str().unwrap_or_default().to_string();
        let record = self.store.resource(&id)?.ok_or_else(|| {
            ControlError::DeletedVaultNotFound(name.to_string(), location.to_string())
        })?;
        self.purge_vault_record(&record)
    }

    fn purge_vault_record(&self, record: &ResourceRecord) -> Result<(), ControlError> {
        if let Some(name) = record.body["name"].as_str() {
            self.purge_vault_keys(name)?;
        }
        self.store.delete_resource(&record.id)?;
        Ok(())
    }

    /// Applies an access policy update (`add` merges, `replace` overwrites, `remove` subtracts
    /// permissions) and returns the policies as the operation's result.
    pub fn update_access_policies(
        &self,
        subscription: &str,
        group: &str,
        name: &str,
        kind: AccessPolicyUpdate,
        mut changes: Vec<AccessPolicy>,
    ) -> Result<Value, ControlError> {
        let mut record = self.vault_record(subscription, group, name)?;
        for c in &mut changes {
            normalize_policy(c)?;
        }
        let mut policies: Vec<AccessPolicy> =
            serde_json::from_value(record.body["properties"]["accessPolicies"].clone())
                .unwrap_or_default();
        for change in &changes {
            let position = policies
                .iter()
                .position(|p| p.object_id.eq_ignore_ascii_case(&change.object_id));
            match (kind, position) {
                (AccessPolicyUpdate::Add, Some(i)) => {
                    let p = &mut policies[i].permissions;
                    merge(&mut p.keys, &change.permissions.keys);
                    merge(&mut p.secrets, &change.permissions.secrets);
                    merge(&mut p.certificates, &change.permissions.certificates);
                    merge(&mut p.storage, &change.permissions.storage);
                }
                (AccessPolicyUpdate::Add | AccessPolicyUpdate::Replace, None) => {
                    policies.push(change.clone())
                }
                (AccessPolicyUpdate::Replace, Some(i)) => policies[i] = change.clone(),
                (AccessPolicyUpdate::Remove, Some(i)) => {
                    let p = &mut policies[i].permissions;
                    subtract(&mut p.keys, &change.permissions.keys);
                    subtract(&mut p.secrets, &change.permissions.secrets);
                    subtract(&mut p.certificates, &change.permissions.certificates);
                    subtract(&mut p.storage, &change.permissions.storage);
                    let empty = |l: &Option<Vec<String>>| l.as_ref().is_none_or(Vec::is_empty);
                    if empty(&p.keys)
                        && empty(&p.secrets)
                        && empty(&p.certificates)
                        && empty(&p.storage)
                    {
                        policies.remove(i);
                    }
                }
                (AccessPolicyUpdate::Remove, None) => {}
            }
        }
        record.body["properties"]["accessPolicies"] = json!(policies);
        record.body["systemData"]["lastModifiedAt"] = json!(rfc3339(self.now()));
        let location = record.body["location"].clone();
        let kind_name = match kind {
            AccessPolicyUpdate::Add => "add",
            AccessPolicyUpdate::Replace => "replace",
            AccessPolicyUpdate::Remove => "remove",
        };
        let result = json!({
            "id": format!("{}/accessPolicies/{kind_name}", record.id),
            "name": kind_name,
            "type": "Microsoft.KeyVault/vaults/accessPolicies",
            "location": location,
            "properties": {"accessPolicies": changes},
        });
        self.store.put_resource(&record)?;
        Ok(result)
    }

    /// Whether `principal` holds key `permission` on `vault` (a vault document): through its
    /// access policies, or through RBAC data actions when the vault uses RBAC.
    pub fn key_access(
        &self,
        vault: &Value,
        principal: ObjectId,
        permission: &str,
    ) -> Result<KeyAccess, ControlError> {
        let properties = &vault["properties"];
        if properties["enableRbacAuthorization"].as_bool() == Some(true) {
            let action = key_data_action(permission);
            let scope = vault["id"].as_str().unwrap_or_default();
            return Ok(if self.is_authorized(principal, &action, scope, true)? {
                KeyAccess::Allowed
            } else {
                KeyAccess::DeniedByRbac { action }
            });
        }
        let policies =
            Vec::<AccessPolicy>::deserialize(&properties["accessPolicies"]).unwrap_or_default();
        let principal = principal.to_string();
        let granted = policies
            .iter()
            .filter(|p| p.object_id.eq_ignore_ascii_case(&principal))
            .any(|p| {
                p.permissions.keys.as_ref().is_some_and(|keys| {
                    keys.iter().any(|k| {
                        k.eq_ignore_ascii_case("all") || k.eq_ignore_ascii_case(permission)
                    })
                })
            });
        Ok(if granted {
            KeyAccess::Allowed
        } else {
            KeyAccess::DeniedByPolicy
        })
    }

    /// `checkNameAvailability` for vault names.
    pub fn vault_name_availability(&self, name: &str) -> Result<Value, ControlError> {
        if !valid_vault_name(name) {
            return Ok(
                json!({"nameAvailable": false, "reason": "AccountNameInvalid", "message": ControlError::VaultNameNotValid(name.into()).to_string()}),
            );
        }
        if self.vault_by_name(name)?.is_some() || self.deleted_vault_by_name(name)?.is_some() {
            return Ok(
                json!({"nameAvailable": false, "reason": "AlreadyExists", "message": ControlError::VaultAlreadyExists(name.into()).to_string()}),
            );
        }
        Ok(json!({"nameAvailable": true}))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::Fixture;

    fn setup() -> (ControlPlane, String, Fixture) {
        let f = Fixture::new();
        (f.plane.clone(), f.sub.clone(), f)
    }

    fn input(props: Value) -> VaultInput {
        serde_json::from_value(json!({"location": "eastus", "properties": props})).unwrap()
    }

    #[test]
    fn names() {
        for good in ["abc", "my-disk-encryption-kv", "a1-b2-c3"] {
            assert!(valid_vault_name(good), "{good}");
        }
        for bad in [
            "ab",
            "1abc",
            "abc-",
            "a--b",
            "abc_d",
            "abcdefghijabcdefghijabcde",
        ] {
            assert!(!valid_vault_name(bad), "{bad}");
        }
    }

    #[test]
    fn create_defaults_and_immutable_protection() {
        let (p, sub, _) = setup();
        let (v, created) = p.put_vault(&sub, "g", "kv1", input(json!({"sku": {"name": "standard", "family": "A"}, "enablePurgeProtection": true}))).unwrap();
        assert!(created);
        assert_eq!(v["properties"]["enableSoftDelete"], true);
        assert_eq!(v["properties"]["softDeleteRetentionInDays"], 90);
        assert_eq!(v["properties"]["enableRbacAuthorization"], false);
        assert!(matches!(
            p.put_vault(
                &sub,
                "g",
                "kv1",
                input(json!({"enablePurgeProtection": false}))
            ),
            Err(ControlError::PropertyImmutable { .. })
        ));
        assert!(matches!(
            p.put_vault(&sub, "g", "kv2", input(json!({"enableSoftDelete": false}))),
            Err(ControlError::PropertyImmutable { .. })
        ));
        assert!(matches!(
            p.put_vault(
                &sub,
                "g",
                "kv3",
                input(json!({"softDeleteRetentionInDays": 5}))
            ),
            Err(ControlError::InvalidParameter { .. })
        ));
        let (_, created) = p.put_vault(&sub, "g", "kv1", input(json!({}))).unwrap();
        assert!(!created);
        assert_eq!(
            p.vault(&sub, "g", "kv1").unwrap()["properties"]["enablePurgeProtection"],
            true
        );
    }

    #[test]
    fn soft_delete_recover_and_purge() {
        let (p, sub, time) = setup();
        p.put_vault(
            &sub,
            "g",
            "kvp",
            input(json!({"enablePurgeProtection": true, "softDeleteRetentionInDays": 7})),
        )
        .unwrap();
        p.put_vault(&sub, "g", "kvn", input(json!({}))).unwrap();
        assert!(p.delete_vault(&sub, "g", "kvp").unwrap());
        assert!(p.delete_vault(&sub, "g", "kvn").unwrap());
        assert!(!p.delete_vault(&sub, "g", "kvn").unwrap());
        assert!(matches!(
            p.put_vault(&sub, "g", "kvp", input(json!({}))),
            Err(ControlError::VaultInDeletedState(_))
        ));
        assert!(matches!(
            p.purge_deleted_vault(&sub, "eastus", "kvp"),
            Err(ControlError::PurgeProtected { .. })
        ));
        p.purge_deleted_vault(&sub, "eastus", "kvn").unwrap();
        assert!(p.put_vault(&sub, "g", "kvn", input(json!({}))).unwrap().1);
        let (v, _) = p
            .put_vault(&sub, "g", "kvp", input(json!({"createMode": "recover"})))
            .unwrap();
        assert_eq!(v["properties"]["softDeleteRetentionInDays"], 7);
        p.delete_vault(&sub, "g", "kvp").unwrap();
        time.advance(8 * DAY);
        assert!(
            p.deleted_vaults().unwrap().is_empty(),
            "retention over: purged"
        );
        assert!(p.put_vault(&sub, "g", "kvp", input(json!({}))).unwrap().1);
    }

    #[test]
    fn access_policies_and_rbac() {
        let (p, sub, _) = setup();
        let (_, sp) = p.create_application("a", None).unwrap();
        let oid = sp.object_id.to_string();
        let tenant = p.tenant().to_string();
        let (v, _) = p.put_vault(&sub, "g", "kva", input(json!({"accessPolicies": [
            {"tenantId": tenant, "objectId": oid, "permissions": {"keys": ["Get", "wrapkey"]}}
        ]}))).unwrap();
        assert_eq!(
            v["properties"]["accessPolicies"][0]["permissions"]["keys"],
            json!(["get", "wrapKey"])
        );
        assert_eq!(
            p.key_access(&v, sp.object_id, "wrapKey").unwrap(),
            KeyAccess::Allowed
        );
        assert_eq!(
            p.key_access(&v, sp.object_id, "unwrapKey").unwrap(),
            KeyAccess::DeniedByPolicy
        );
        let change: Vec<AccessPolicy> = serde_json::from_value(
            json!([{"tenantId": tenant, "objectId": oid, "permissions": {"keys": ["unwrapKey"]}}]),
        )
        .unwrap();
        p.update_access_policies(&sub, "g", "kva", AccessPolicyUpdate::Add, change.clone())
            .unwrap();
        let v = p.vault(&sub, "g", "kva").unwrap();
        assert_eq!(
            p.key_access(&v, sp.object_id, "unwrapKey").unwrap(),
            KeyAccess::Allowed
        );
        p.update_access_policies(&sub, "g", "kva", AccessPolicyUpdate::Remove, change)
            .unwrap();
        let v = p.vault(&sub, "g", "kva").unwrap();
        assert_eq!(
            p.key_access(&v, sp.object_id, "unwrapKey").unwrap(),
            KeyAccess::DeniedByPolicy
        );
        assert_eq!(
            p.key_access(&v, sp.object_id, "get").unwrap(),
            KeyAccess::Allowed
        );

        let (v, _) = p
            .put_vault(
                &sub,
                "g",
                "kva",
                input(json!({"enableRbacAuthorization": true})),
            )
            .unwrap();
        assert!(matches!(
            p.key_access(&v, sp.object_id, "get").unwrap(),
            KeyAccess::DeniedByRbac { .. }
        ));
        let vault_id = v["id"].as_str().unwrap().to_string();
        p.create_role_assignment(
            &vault_id,
            &uuid::Uuid::new_v4().to_string(),
            crate::resources::RoleAssignmentInput {
                role_definition_id: "e147488a-f6f5-4113-8e2d-b22465e65bf6".into(),
                principal_id: oid.clone(),
                principal_type: None,
                description: None,
            },
        )
        .unwrap();
        for perm in ["get", "wrapKey", "unwrapKey"] {
            assert_eq!(
                p.key_access(&v, sp.object_id, perm).unwrap(),
                KeyAccess::Allowed,
                "{perm}"
            );
        }
        assert!(matches!(
            p.key_access(&v, sp.object_id, "decrypt").unwrap(),
            KeyAccess::DeniedByRbac { .. }
        ));
    }
}
