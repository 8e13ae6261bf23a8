//! Microsoft.Compute/diskEncryptionSets: the bridge between a Key Vault key and the disks it
//! protects, and the customer-key wrap layers of disk volumes.
//!
//! A set has a system-assigned managed identity (a principal created with the set). Every wrap
//! and unwrap of a disk's DEK under the set's key goes through the vault's key operation **as
//! that identity**: its access policy or RBAC role is checked exactly as for a client, and the
//! operation is appended to the vault's audit log with the identity as caller.

use std::collections::BTreeMap;

use keyvault::audit::AuditRecord;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::deployment::rfc3339;
use crate::disks::DISK_TYPE;
use crate::ids::ObjectId;
use crate::keys::{CryptoOp, CryptoRequest, CryptoResult, VaultRef};
use crate::snapshots::{IMAGE_TYPE, SNAPSHOT_TYPE, image_volumes};
use crate::store::{ResourceQuery, ResourceRecord};
use crate::vaults::KeyAccess;
use crate::{ControlError, ControlPlane};

pub const DES_TYPE: &str = "Microsoft.Compute/diskEncryptionSets";
pub const CUSTOMER_KEY: &str = "EncryptionAtRestWithCustomerKey";
pub const PLATFORM_AND_CUSTOMER_KEYS: &str = "EncryptionAtRestWithPlatformAndCustomerKeys";
const SET_TYPES: &[&str] = &[CUSTOMER_KEY, PLATFORM_AND_CUSTOMER_KEYS];
/// The algorithm of customer-key wrap layers.
pub const CUSTOMER_WRAP_ALGORITHM: &str = "RSA-OAEP-256";
const RSA_SIZES: &[u64] = &[2048, 3072, 4096];
/// The setting that lets sets use vaults without purge protection.
pub const ALLOW_UNPROTECTED_VAULTS: &str =
    "disk_encryption_sets.allow_vaults_without_purge_protection";

/// A set PUT or PATCH body.
#[derive(Debug, Default, Deserialize)]
pub struct EncryptionSetInput {
    #[serde(default)]
    pub location: Option<String>,
    #[serde(default)]
    pub tags: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub identity: Option<IdentityInput>,
    #[serde(default)]
    pub properties: EncryptionSetProperties,
}

#[derive(Debug, Deserialize)]
pub struct IdentityInput {
    #[serde(rename = "type")]
    pub kind: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EncryptionSetProperties {
    pub encryption_type: Option<String>,
    pub active_key: Option<ActiveKeyInput>,
    pub rotation_to_latest_key_version_enabled: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ActiveKeyInput {
    pub source_vault: Option<SourceVault>,
    pub key_url: String,
}

#[derive(Debug, Deserialize)]
pub struct SourceVault {
    pub id: Option<String>,
}

/// A key URL split into its parts: `https://VAULT.vault.DOMAIN:PORT/keys/NAME[/VERSION]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyUrl {
    pub vault: String,
    /// `https://VAULT.vault.DOMAIN:PORT`.
    pub vault_url: String,
    pub key: String,
    pub version: Option<String>,
}

impl KeyUrl {
    pub fn parse(url: &str) -> Option<Self> {
        let rest = url.strip_prefix("https://")?;
        let (host, path) = rest.split_once('/')?;
        let vault = host.split('.').next()?.to_string();
        if vault.is_empty() || !host.contains(".vault.") {
            return None;
        }
        let mut parts = path.split('/').filter(|p| !p.is_empty());
        if !parts.next()?.eq_ignore_ascii_case("keys") {
            return None;
        }
        let key = parts.next()?.to_string();
        let version = parts.next().map(str::to_ascii_lowercase);
        if parts.next().is_some() {
            return None;
        }
        Some(Self {
            vault,
            vault_url: format!("https://{host}"),
            key,
            version,
        })
    }

    /// Whether two key URLs name the same key version (host names and ports aside: the vault
    /// name, key name and version decide).
    pub fn same_key(a: &str, b: &str) -> bool {
        match (Self::parse(a), Self::parse(b)) {
            (Some(a), Some(b)) => {
                a.vault.eq_ignore_ascii_case(&b.vault)
                    && a.key.eq_ignore_ascii_case(&b.key)
                    && a.version == b.version
            }
            _ => a == b,
        }
    }

    pub fn versioned(&self, version: &str) -> String {
        format!("{}/keys/{}/{version}", self.vault_url, self.key)
    }
}

fn invalid(name: &str, reason: impl Into<String>) -> ControlError {
    ControlError::InvalidParameter {
        name: name.into(),
        reason: reason.into(),
    }
}

impl ControlPlane {
    fn des_id(&self, group: &str, name: &str) -> String {
        format!(
            "{}/resourceGroups/{group}/providers/{DES_TYPE}/{name}",
            self.subscription_scope()
        )
    }

    fn des_record(
        &self,
        subscription: &str,
        group: &str,
        name: &str,
    ) -> Result<ResourceRecord, ControlError> {
        self.typed_record(
            subscription,
            group,
            self.des_id(group, name),
            DES_TYPE,
            name,
        )
    }

    /// The set with ARM id `id` (as a disk names it).
    pub(crate) fn des_by_id(&self, id: &str) -> Result<Value, ControlError> {
        self.store
            .resource(id)?
            .filter(|r| r.resource_type.eq_ignore_ascii_case(DES_TYPE))
            .map(|r| r.body)
            .ok_or_else(|| ControlError::ResourceNotFound {
                resource_type: DES_TYPE.into(),
                name: id.rsplit('/').next().unwrap_or(id).into(),
                resource_group: crate::ids::ArmId::parse(id)
                    .and_then(|p| p.resource_group)
                    .unwrap_or_default(),
            })
    }

    pub fn disk_encryption_set(
        &self,
        subscription: &str,
        group: &str,
        name: &str,
    ) -> Result<Value, ControlError> {
        Ok(self.des_record(subscription, group, name)?.body)
    }

    pub fn disk_encryption_sets(
        &self,
        subscription: &str,
        group: Option<&str>,
    ) -> Result<Vec<Value>, ControlError> {
        self.typed_list(subscription, group, DES_TYPE)
    }

    /// Checks a set's key: an enabled RSA 2048/3072/4096 key in a soft-delete vault (with purge
    /// protection unless the deployment relaxes it) in the set's region. Returns the versioned
    /// key URL and the vault's id.
    fn check_set_key(
        &self,
        location: &str,
        key: &ActiveKeyInput,
        rotate_to_latest: bool,
    ) -> Result<(String, String), ControlError> {
        let url = KeyUrl::parse(&key.key_url).ok_or_else(|| {
            invalid(
                "activeKey.keyUrl",
                format!(
                    "'{}' is not a Key Vault key URL (https://VAULT.vault.DOMAIN/keys/NAME/VERSION)",
                    key.key_url
                ),
            )
        })?;
        if url.version.is_none() && !rotate_to_latest {
            return Err(invalid(
                "activeKey.keyUrl",
                format!(
                    "'{}' has no key version; give the versioned key URL (key show --query key.kid), or enable rotationToLatestKeyVersionEnabled",
                    key.key_url
                ),
            ));
        }
        let vault_doc = self.vault_by_name(&url.vault)?.ok_or_else(|| {
            invalid(
                "activeKey.keyUrl",
                format!("the key vault '{}' does not exist", url.vault),
            )
        })?;
        let vault_id = vault_doc["id"].as_str().unwrap_or_default().to_string();
        if let Some(given) = key.source_vault.as_ref().and_then(|v| v.id.as_deref())
            && !given.eq_ignore_ascii_case(&vault_id)
        {
            return Err(invalid(
                "activeKey.sourceVault.id",
                format!("'{given}' is not the vault of the key URL ({vault_id})"),
            ));
        }
        let vault_location = vault_doc["location"].as_str().unwrap_or_default();
        if !vault_location.eq_ignore_ascii_case(location) {
            return Err(invalid(
                "activeKey.sourceVault.id",
                format!(
                    "the key vault is in '{vault_location}'; a disk encryption set in '{location}' needs a vault in the same region"
                ),
            ));
        }
        let protected = vault_doc["properties"]["enablePurgeProtection"].as_bool() == Some(true);
        let relaxed = self
            .store
            .setting(ALLOW_UNPROTECTED_VAULTS)?
            .is_some_and(|v| v == "true");
        if !protected && !relaxed {
            return Err(invalid(
                "activeKey.sourceVault.id",
                format!(
                    "the key vault '{}' does not have purge protection enabled; enable it (keyvault update --enable-purge-protection true) so a deleted key cannot make disks unreadable for good",
                    url.vault
                ),
            ));
        }
        let vault = VaultRef {
            name: vault_doc["name"].as_str().unwrap_or(&url.vault).to_string(),
            url: url.vault_url.clone(),
            doc: vault_doc,
        };
        let rec = self
            .key_record(&vault, &url.key, url.version.as_deref())
            .map_err(|e| match e {
                ControlError::KeyNotFound(k) => invalid(
                    "activeKey.keyUrl",
                    format!("the key '{k}' does not exist in vault '{}'", url.vault),
                ),
                other => other,
            })?;
        let bundle = self.key_bundle(&vault, &rec);
        let kty = bundle["key"]["kty"].as_str().unwrap_or_default();
        let bits = bundle["key"]["n"]
            .as_str()
            .and_then(|n| {
                base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, n).ok()
            })
            .map(|n| n.len() as u64 * 8);
        if !kty.starts_with("RSA") || !bits.is_some_and(|b| RSA_SIZES.contains(&b)) {
            return Err(invalid(
                "activeKey.keyUrl",
                format!(
                    "the key must be RSA 2048, 3072 or 4096 bits; '{}' is {kty}",
                    url.key
                ),
            ));
        }
        let attrs = &bundle["attributes"];
        let now = self.now();
        if attrs["enabled"].as_bool() == Some(false)
            || attrs["exp"].as_i64().is_some_and(|e| e <= now)
        {
            return Err(invalid(
                "activeKey.keyUrl",
                format!("the key '{}' is disabled or expired", url.key),
            ));
        }
        Ok((url.versioned(&rec.version), vault_id))
    }

    /// Creates or updates a disk encryption set; returns the document and whether it was
    /// created.
    pub fn put_disk_encryption_set(
        &self,
        subscription: &str,
        group: &str,
        name: &str,
        input: EncryptionSetInput,
    ) -> Result<(Value, bool), ControlError> {
        self.check_subscription(subscription)?;
        self.resource_group(subscription, group)?;
        if !crate::disks::valid_disk_name(name) {
            return Err(invalid(
                "diskEncryptionSetName",
                format!("'{name}' is not a valid name: 1-80 letters, digits, '_', '-' or '.'"),
            ));
        }
        let id = self.des_id(group, name);
        let existing = self.store.resource(&id)?.map(|r| r.body);
        let location = match (&input.location, &existing) {
            (Some(l), _) => self.location(l)?.to_string(),
            (None, Some(e)) => e["location"].as_str().unwrap_or_default().to_string(),
            (None, None) => return Err(invalid("location", "is required")),
        };
        if let Some(e) = &existing
            && e["location"].as_str() != Some(location.as_str())
        {
            return Err(invalid(
                "location",
                "a disk encryption set cannot change region",
            ));
        }
        if let Some(kind) = input.identity.as_ref().and_then(|i| i.kind.as_deref())
            && !kind.eq_ignore_ascii_case("SystemAssigned")
        {
            return Err(invalid(
                "identity.type",
                format!("'{kind}' is not supported; use SystemAssigned"),
            ));
        }
        let old = existing.as_ref().map(|e| &e["properties"]);
        let encryption_type = match &input.properties.encryption_type {
            Some(t) => SET_TYPES
                .iter()
                .find(|s| s.eq_ignore_ascii_case(t))
                .copied()
                .ok_or_else(|| {
                    invalid(
                        "encryptionType",
                        format!("'{t}' must be one of {}", SET_TYPES.join(", ")),
                    )
                })?
                .to_string(),
            None => old
                .and_then(|o| o["encryptionType"].as_str())
                .unwrap_or(CUSTOMER_KEY)
                .to_string(),
        };
        if let Some(o) = old
            && o["encryptionType"].as_str() != Some(encryption_type.as_str())
            && self.des_in_use(&id)?
        {
            return Err(ControlError::OperationNotAllowed(format!(
                "Disk encryption set '{name}' is used by disks, snapshots or images; its encryptionType cannot change."
            )));
        }
        let rotate = input
            .properties
            .rotation_to_latest_key_version_enabled
            .or_else(|| old.and_then(|o| o["rotationToLatestKeyVersionEnabled"].as_bool()))
            .unwrap_or(false);
        let (key_url, vault_id) = match (&input.properties.active_key, old) {
            (Some(key), _) => self.check_set_key(&location, key, rotate)?,
            (None, Some(o)) => (
                o["activeKey"]["keyUrl"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                o["activeKey"]["sourceVault"]["id"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            ),
            (None, None) => {
                return Err(invalid(
                    "activeKey",
                    "is required: give keyUrl (and sourceVault.id)",
                ));
            }
        };
        let now = rfc3339(self.now());
        let old_key = old.and_then(|o| o["activeKey"]["keyUrl"].as_str());
        let key_changed = old_key.is_some_and(|k| !KeyUrl::same_key(k, &key_url));
        let (principal_id, created) = match existing
            .as_ref()
            .and_then(|e| e["identity"]["principalId"].as_str())
        {
            Some(p) => (p.to_string(), false),
            None => (
                self.create_managed_identity(&id)?.object_id.to_string(),
                true,
            ),
        };
        let mut properties = json!({
            "encryptionType": encryption_type,
            "activeKey": {"sourceVault": {"id": vault_id}, "keyUrl": key_url},
            "previousKeys": [],
            "rotationToLatestKeyVersionEnabled": rotate,
            "provisioningState": "Succeeded",
        });
        match (
            key_changed,
            old.and_then(|o| o.get("lastKeyRotationTimestamp")),
        ) {
            (true, _) => properties["lastKeyRotationTimestamp"] = json!(now),
            (false, Some(t)) => properties["lastKeyRotationTimestamp"] = t.clone(),
            (false, None) => {}
        }
        let tags = input
            .tags
            .map(|t| json!(t))
            .or_else(|| existing.as_ref().map(|e| e["tags"].clone()))
            .unwrap_or_else(|| json!({}));
        let body = json!({
            "id": id,
            "name": name,
            "type": DES_TYPE,
            "location": location,
            "tags": tags,
            "identity": {
                "type": "SystemAssigned",
                "principalId": principal_id,
                "tenantId": self.tenant().to_string(),
            },
            "properties": properties,
        });
        self.store.put_resource(&ResourceRecord {
            id: id.clone(),
            resource_type: DES_TYPE.into(),
            body: body.clone(),
        })?;
        if key_changed {
            self.rewrap_des_volumes(&id)?;
        }
        Ok((body, created))
    }

    /// Whether any disk, snapshot or image uses the set.
    fn des_in_use(&self, des_id: &str) -> Result<bool, ControlError> {
        Ok(!self.des_associated_resources(des_id)?.is_empty())
    }

    /// The ids of the disks, snapshots and images that use set `des_id` (an image once, however
    /// many of its volumes use the set).
    pub fn des_associated_resources(&self, des_id: &str) -> Result<Vec<String>, ControlError> {
        let mut out: Vec<String> = Vec::new();
        for (id, _) in self.des_volumes(des_id)? {
            if out.last() != Some(&id) {
                out.push(id);
            }
        }
        Ok(out)
    }

    /// Every volume under set `des_id`, as `(resource id, volume document)`: a disk's or
    /// snapshot's own document, and for an image each of its volumes that uses the set (the
    /// documents `properties.uniqueId` and `properties.encryption` are read from). The volumes
    /// of one resource are adjacent.
    pub(crate) fn des_volumes(&self, des_id: &str) -> Result<Vec<(String, Value)>, ControlError> {
        let uses_set = |doc: &Value| {
            doc["properties"]["encryption"]["diskEncryptionSetId"]
                .as_str()
                .is_some_and(|s| s.eq_ignore_ascii_case(des_id))
        };
        let mut out = Vec::new();
        for kind in [DISK_TYPE, SNAPSHOT_TYPE, IMAGE_TYPE] {
            let records = self.store.resources(&ResourceQuery {
                resource_type: Some(kind),
                scope: Some(&self.subscription_scope()),
            })?;
            for record in records {
                if kind == IMAGE_TYPE {
                    let volumes: Vec<Value> = image_volumes(&record.body)
                        .filter(|v| uses_set(v))
                        .cloned()
                        .collect();
                    out.extend(volumes.into_iter().map(|v| (record.id.clone(), v)));
                } else if uses_set(&record.body) {
                    out.push((record.id, record.body));
                }
            }
        }
        Ok(out)
    }

    /// `associatedResources` of a set.
    pub fn disk_encryption_set_resources(
        &self,
        subscription: &str,
        group: &str,
        name: &str,
    ) -> Result<Vec<String>, ControlError> {
        let record = self.des_record(subscription, group, name)?;
        self.des_associated_resources(&record.id)
    }

    /// Deletes a set that no disk, snapshot or image uses; its identity goes with it. `false`
    /// if there was none.
    pub fn delete_disk_encryption_set(
        &self,
        subscription: &str,
        group: &str,
        name: &str,
    ) -> Result<bool, ControlError> {
        let record = match self.des_record(subscription, group, name) {
            Ok(r) => r,
            Err(ControlError::ResourceNotFound { .. }) => return Ok(false),
            Err(e) => return Err(e),
        };
        let users = self.des_associated_resources(&record.id)?;
        if !users.is_empty() {
            return Err(ControlError::OperationNotAllowed(format!(
                "Disk encryption set '{name}' is in use by {} resource(s) ({}); move them to another set or delete them first.",
                users.len(),
                users.join(", ")
            )));
        }
        if let Some(p) = record.body["identity"]["principalId"]
            .as_str()
            .and_then(|p| p.parse::<ObjectId>().ok())
        {
            self.store.delete_principal(p)?;
        }
        self.store.delete_resource(&record.id)?;
        Ok(true)
    }

    /// Runs `op` on the set's active key version as the set's identity, checking its vault
    /// permission and appending the operation to the audit log.
    pub(crate) fn des_key_operation(
        &self,
        des: &Value,
        key_url: &str,
        op: CryptoOp,
        value: &[u8],
    ) -> Result<zeroize::Zeroizing<Vec<u8>>, ControlError> {
        let set_name = des["name"].as_str().unwrap_or_default().to_string();
        let identity: ObjectId = des["identity"]["principalId"]
            .as_str()
            .and_then(|p| p.parse().ok())
            .ok_or_else(|| ControlError::DiskEncryptionSetKeyUnusable {
                set: set_name.clone(),
                reason: "it has no identity".into(),
            })?;
        let url =
            KeyUrl::parse(key_url).ok_or_else(|| ControlError::DiskEncryptionSetKeyUnusable {
                set: set_name.clone(),
                reason: format!("'{key_url}' is not a key URL"),
            })?;
        let vault_doc = self.vault_by_name(&url.vault)?.ok_or_else(|| {
            ControlError::DiskEncryptionSetKeyUnusable {
                set: set_name.clone(),
                reason: format!("the key vault '{}' no longer exists", url.vault),
            }
        })?;
        let permission = match op {
            CryptoOp::WrapKey => "wrapKey",
            _ => "unwrapKey",
        };
        let vault = VaultRef {
            name: vault_doc["name"].as_str().unwrap_or(&url.vault).to_string(),
            url: url.vault_url.clone(),
            doc: vault_doc,
        };
        let access = self.key_access(&vault.doc, identity, permission)?;
        let result = match access {
            KeyAccess::Allowed => self.key_operation(
                &vault,
                &url.key,
                url.version.as_deref(),
                CryptoRequest {
                    op,
                    alg: CUSTOMER_WRAP_ALGORITHM,
                    value,
                    signature: None,
                },
            ),
            KeyAccess::DeniedByPolicy => Err(ControlError::DiskEncryptionSetKeyUnusable {
                set: set_name.clone(),
                reason: format!(
                    "its identity {identity} has no '{permission}' key permission in the access policies of vault '{}' (keyvault set-policy --object-id {identity} --key-permissions get wrapKey unwrapKey)",
                    vault.name
                ),
            }),
            KeyAccess::DeniedByRbac { action } => Err(ControlError::DiskEncryptionSetKeyUnusable {
                set: set_name.clone(),
                reason: format!(
                    "its identity {identity} has no role granting '{action}' on vault '{}' (assign 'Key Vault Crypto Service Encryption User')",
                    vault.name
                ),
            }),
        };
        self.audit_internal(AuditRecord {
            caller_object_id: identity.to_string(),
            vault: vault.name.clone(),
            key: Some(url.key.clone()),
            version: url.version.clone(),
            operation: match op {
                CryptoOp::WrapKey => "KeyWrap".into(),
                _ => "KeyUnwrap".into(),
            },
            result: match &result {
                Ok(_) => "Success".into(),
                Err(ControlError::KeyDisabled { .. }) => "KeyDisabled".into(),
                Err(ControlError::KeyNotFound(_)) => "KeyNotFound".into(),
                Err(ControlError::KeyOperationNotPermitted { .. }) => {
                    "KeyOperationNotPermitted".into()
                }
                Err(_) => "Forbidden".into(),
            },
            detail: Some(match &result {
                Ok(_) => format!("disk encryption set {set_name}"),
                Err(e) => format!("disk encryption set {set_name}: {e}"),
            }),
        })?;
        match result? {
            CryptoResult::Bytes { value, .. } => Ok(value),
            CryptoResult::Verified(_) => Err(ControlError::DiskEncryptionSetKeyUnusable {
                set: set_name,
                reason: "the key operation returned no bytes".into(),
            }),
        }
    }
}

impl ControlPlane {
    /// Why set `des` cannot unwrap with `key_url` now, `None` if it can: the key version is
    /// deleted, disabled, expired or not yet valid, or the set's identity lost its permission.
    pub(crate) fn des_key_problem(
        &self,
        des: &Value,
        key_url: &str,
    ) -> Result<Option<String>, ControlError> {
        let Some(url) = KeyUrl::parse(key_url) else {
            return Ok(Some(format!("'{key_url}' is not a key URL")));
        };
        let Some(vault_doc) = self.vault_by_name(&url.vault)? else {
            return Ok(Some(format!("the key vault '{}' was deleted", url.vault)));
        };
        let identity: Option<ObjectId> = des["identity"]["principalId"]
            .as_str()
            .and_then(|p| p.parse().ok());
        let Some(identity) = identity else {
            return Ok(Some("the set has no identity".into()));
        };
        if self.key_access(&vault_doc, identity, "unwrapKey")? != KeyAccess::Allowed {
            return Ok(Some(format!(
                "the identity {identity} of the set may no longer unwrap with keys of vault '{}'",
                url.vault
            )));
        }
        let vault = VaultRef {
            name: vault_doc["name"].as_str().unwrap_or(&url.vault).to_string(),
            url: url.vault_url.clone(),
            doc: vault_doc,
        };
        let rec = match self.key_record(&vault, &url.key, url.version.as_deref()) {
            Ok(rec) => rec,
            Err(ControlError::KeyNotFound(_)) => {
                return Ok(Some(format!("the key '{}' was deleted", url.key)));
            }
            Err(e) => return Err(e),
        };
        let attrs = &rec.body["attributes"];
        let now = self.now();
        Ok(if attrs["enabled"].as_bool() == Some(false) {
            Some(format!("the key '{}' is disabled", url.key))
        } else if attrs["exp"].as_i64().is_some_and(|e| e <= now) {
            Some(format!("the key '{}' has expired", url.key))
        } else if attrs["nbf"].as_i64().is_some_and(|n| n > now) {
            Some(format!("the key '{}' is not valid yet", url.key))
        } else {
            None
        })
    }

    /// Moves sets with `rotationToLatestKeyVersionEnabled` to their key's newest version and
    /// re-wraps their disks. Returns the ids of the sets moved.
    pub fn rotate_sets_to_latest_keys(&self) -> Result<Vec<String>, ControlError> {
        let sets = self.store.resources(&ResourceQuery {
            resource_type: Some(DES_TYPE),
            ..Default::default()
        })?;
        let mut moved = Vec::new();
        for record in sets {
            let props = &record.body["properties"];
            if props["rotationToLatestKeyVersionEnabled"].as_bool() != Some(true) {
                continue;
            }
            let Some(url) = props["activeKey"]["keyUrl"]
                .as_str()
                .and_then(KeyUrl::parse)
            else {
                continue;
            };
            let Some(vault_doc) = self.vault_by_name(&url.vault)? else {
                continue;
            };
            let vault = VaultRef {
                name: vault_doc["name"].as_str().unwrap_or(&url.vault).to_string(),
                url: url.vault_url.clone(),
                doc: vault_doc,
            };
            let Ok(latest) = self.key_record(&vault, &url.key, None) else {
                continue;
            };
            if url.version.as_deref() == Some(latest.version.as_str()) {
                continue;
            }
            let mut body = record.body.clone();
            let old = body["properties"]["activeKey"].clone();
            body["properties"]["activeKey"]["keyUrl"] = json!(url.versioned(&latest.version));
            body["properties"]["previousKeys"] = json!([old]);
            body["properties"]["lastKeyRotationTimestamp"] = json!(rfc3339(self.now()));
            self.store.put_resource(&ResourceRecord {
                id: record.id.clone(),
                resource_type: DES_TYPE.into(),
                body: body.clone(),
            })?;
            let result = self.rewrap_des_volumes(&record.id);
            body["properties"]["previousKeys"] = json!([]);
            match result {
                Ok(_) => {
                    if let Some(props) = body["properties"].as_object_mut() {
                        props.remove("autoKeyRotationError");
                    }
                }
                Err(e) => {
                    body["properties"]["previousKeys"] = json!([old]);
                    body["properties"]["autoKeyRotationError"] =
                        json!({"code": "KeyRotationFailed", "message": e.to_string()});
                }
            }
            self.store.put_resource(&ResourceRecord {
                id: record.id.clone(),
                resource_type: DES_TYPE.into(),
                body,
            })?;
            moved.push(record.id);
        }
        Ok(moved)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::disks::{DiskInput, DiskPatch, volume_of};
    use crate::snapshots::{ImageInput, SnapshotInput};
    use crate::testing::Fixture;
    use crate::vaults::{AccessPolicy, AccessPolicyUpdate, VaultInput};
    use blockstore::Header;

    /// A vault `kv-SUFFIX` with RSA key `k`, and set `set-SUFFIX` of `kind` on it whose
    /// identity may get, wrap and unwrap with the vault's keys. Returns the vault and the set.
    fn customer_key_set(f: &Fixture, suffix: &str, kind: &str, latest: bool) -> (VaultRef, Value) {
        let name = format!("kv-{suffix}");
        let input: VaultInput = serde_json::from_value(
            json!({"location": "eastus", "properties": {"enablePurgeProtection": true}}),
        )
        .unwrap();
        let (doc, _) = f.plane.put_vault(&f.sub, "g", &name, input).unwrap();
        let vault = VaultRef {
            url: format!("https://{name}.vault.localhost:1"),
            name: name.clone(),
            doc,
        };
        let key = serde_json::from_value(json!({"kty": "RSA", "key_size": 2048})).unwrap();
        let kid = f.plane.create_key(&vault, "k", key).unwrap()["key"]["kid"]
            .as_str()
            .unwrap()
            .to_string();
        let key_url = if latest {
            format!("{}/keys/k", vault.url)
        } else {
            kid
        };
        let input: EncryptionSetInput = serde_json::from_value(json!({
            "location": "eastus",
            "identity": {"type": "SystemAssigned"},
            "properties": {
                "encryptionType": kind,
                "activeKey": {"keyUrl": key_url},
                "rotationToLatestKeyVersionEnabled": latest,
            },
        }))
        .unwrap();
        let (set, _) = f
            .plane
            .put_disk_encryption_set(&f.sub, "g", &format!("set-{suffix}"), input)
            .unwrap();
        set_policy(f, &vault, &set, AccessPolicyUpdate::Add);
        (vault, set)
    }

    /// Adds or removes the set identity's get/wrapKey/unwrapKey access policy.
    fn set_policy(f: &Fixture, vault: &VaultRef, set: &Value, kind: AccessPolicyUpdate) {
        let policy: AccessPolicy = serde_json::from_value(json!({
            "tenantId": f.plane.tenant().to_string(),
            "objectId": set["identity"]["principalId"],
            "permissions": {"keys": ["get", "wrapKey", "unwrapKey"]},
        }))
        .unwrap();
        f.plane
            .update_access_policies(&f.sub, "g", &vault.name, kind, vec![policy])
            .unwrap();
    }

    /// A 1 GiB disk of `set`'s type holding `data` at offset 0.
    fn written_disk(f: &Fixture, name: &str, set: &Value, data: &[u8]) -> Value {
        let encryption = json!({
            "type": set["properties"]["encryptionType"],
            "diskEncryptionSetId": set["id"],
        });
        disk_holding(f, name, encryption, data)
    }

    /// A 1 GiB platform-key disk holding `data` at offset 0.
    fn platform_disk(f: &Fixture, name: &str, data: &[u8]) -> Value {
        disk_holding(
            f,
            name,
            json!({"type": "EncryptionAtRestWithPlatformKey"}),
            data,
        )
    }

    fn disk_holding(f: &Fixture, name: &str, encryption: Value, data: &[u8]) -> Value {
        let input: DiskInput = serde_json::from_value(json!({
            "location": "eastus",
            "properties": {
                "creationData": {"createOption": "Empty"},
                "diskSizeGB": 1,
                "encryption": encryption,
            },
        }))
        .unwrap();
        let (disk, _) = f.plane.put_disk(&f.sub, "g", name, input).unwrap();
        let volume = f.plane.open_volume(&disk).unwrap();
        volume.write(0, data, false).unwrap();
        volume.flush().unwrap();
        disk
    }

    fn snapshot(f: &Fixture, name: &str, source: &Value) -> Value {
        let input: SnapshotInput = serde_json::from_value(json!({
            "location": "eastus",
            "properties": {"creationData": {"createOption": "Copy", "sourceResourceId": source["id"]}},
        }))
        .unwrap();
        f.plane.put_snapshot(&f.sub, "g", name, input).unwrap().0
    }

    /// An image of `os` (and `data` at lun 0), its disks under `set` when given.
    fn image(f: &Fixture, name: &str, os: &Value, data: &Value, set: Option<&Value>) -> Value {
        let mut os_disk = json!({"osType": "Linux", "managedDisk": {"id": os["id"]}});
        let mut data_disk = json!({"lun": 0, "snapshot": {"id": data["id"]}});
        if let Some(set) = set {
            os_disk["diskEncryptionSet"] = json!({"id": set["id"]});
            data_disk["diskEncryptionSet"] = json!({"id": set["id"]});
        }
        let input: ImageInput = serde_json::from_value(json!({
            "location": "eastus",
            "properties": {"storageProfile": {"osDisk": os_disk, "dataDisks": [data_disk]}},
        }))
        .unwrap();
        f.plane.put_image(&f.sub, "g", name, input).unwrap();
        f.plane
            .store
            .resource(&image_id(f, name))
            .unwrap()
            .unwrap()
            .body
    }

    fn image_id(f: &Fixture, name: &str) -> String {
        format!(
            "/subscriptions/{}/resourceGroups/g/providers/{IMAGE_TYPE}/{name}",
            f.sub
        )
    }

    fn from_image(
        f: &Fixture,
        name: &str,
        image: &str,
        lun: Option<u64>,
    ) -> Result<Value, ControlError> {
        let mut reference = json!({"id": image_id(f, image)});
        if let Some(lun) = lun {
            reference["lun"] = json!(lun);
        }
        let input: DiskInput = serde_json::from_value(json!({
            "location": "eastus",
            "properties": {"creationData": {"createOption": "FromImage", "imageReference": reference}},
        }))
        .unwrap();
        f.plane.put_disk(&f.sub, "g", name, input).map(|(d, _)| d)
    }

    fn read(f: &Fixture, doc: &Value, len: usize) -> Vec<u8> {
        let mut buf = vec![0u8; len];
        f.plane.open_volume(doc).unwrap().read(0, &mut buf).unwrap();
        buf
    }

    fn header(f: &Fixture, doc: &Value) -> Header {
        f.plane
            .data_plane()
            .unwrap()
            .volumes()
            .header(volume_of(doc).unwrap())
            .unwrap()
    }

    /// The headers of every volume of an image record, `os` first.
    fn image_headers(f: &Fixture, image: &Value) -> Vec<Header> {
        ["os", "0"]
            .iter()
            .map(|k| header(f, &image["internal"]["volumes"][k]))
            .collect()
    }

    fn customer_key_ids(h: &Header) -> Vec<&str> {
        h.layers
            .iter()
            .filter(|l| l.key_id != crate::volumes::PLATFORM_KEY_ID)
            .map(|l| l.key_id.as_str())
            .collect()
    }

    fn set_key_url(set: &Value) -> String {
        set["properties"]["activeKey"]["keyUrl"]
            .as_str()
            .unwrap()
            .to_string()
    }

    fn disable(f: &Fixture, vault: &VaultRef, version: Option<&str>) {
        let input = serde_json::from_value(json!({"attributes": {"enabled": false}})).unwrap();
        f.plane.update_key(vault, "k", version, input).unwrap();
    }

    #[test]
    fn a_new_set_key_rewraps_image_volumes_like_disks_and_snapshots() {
        for kind in [CUSTOMER_KEY, PLATFORM_AND_CUSTOMER_KEYS] {
            let f = Fixture::with_data_plane();
            let (vault, set) = customer_key_set(&f, "a", kind, false);
            let old_url = set_key_url(&set);
            let disk = written_disk(&f, "d", &set, &[0x5a; 8192]);
            let snap = snapshot(&f, "s", &disk);
            // One image names the set; the other inherits it from its sources.
            let named = image(&f, "named", &disk, &snap, Some(&set));
            let inherited = image(&f, "inherited", &disk, &snap, None);
            let mut associated = f
                .plane
                .disk_encryption_set_resources(&f.sub, "g", "set-a")
                .unwrap();
            associated.sort();
            let mut expected = vec![
                disk["id"].as_str().unwrap().to_string(),
                snap["id"].as_str().unwrap().to_string(),
                image_id(&f, "named"),
                image_id(&f, "inherited"),
            ];
            expected.sort();
            assert_eq!(associated, expected, "an image counts once");
            let before: Vec<Header> = [&named, &inherited]
                .iter()
                .flat_map(|i| image_headers(&f, i))
                .collect();
            for h in &before {
                assert_eq!(customer_key_ids(h), [old_url.as_str()]);
                assert_eq!(h.layers.len(), kind_layers(kind));
            }

            let new_kid = f.plane.rotate_key(&vault, "k").unwrap()["key"]["kid"]
                .as_str()
                .unwrap()
                .to_string();
            let input: EncryptionSetInput =
                serde_json::from_value(json!({"properties": {"activeKey": {"keyUrl": new_kid}}}))
                    .unwrap();
            f.plane
                .put_disk_encryption_set(&f.sub, "g", "set-a", input)
                .unwrap();
            let after: Vec<Header> = [&named, &inherited]
                .iter()
                .flat_map(|i| image_headers(&f, i))
                .chain([header(&f, &disk), header(&f, &snap)])
                .collect();
            for h in &after {
                assert_eq!(customer_key_ids(h), [new_kid.as_str()], "{kind}");
            }
            for (old, new) in before.iter().zip(&after) {
                for (o, n) in old.layers.iter().zip(&new.layers) {
                    if o.key_id == crate::volumes::PLATFORM_KEY_ID {
                        assert_eq!(o.wrapped_key, n.wrapped_key, "platform layer untouched");
                    } else {
                        assert_ne!(o.wrapped_key, n.wrapped_key);
                    }
                }
            }

            // The old version can go: the images no longer need it.
            let old_version = KeyUrl::parse(&old_url).unwrap().version;
            disable(&f, &vault, old_version.as_deref());
            for (image, lun) in [("named", None), ("inherited", Some(0))] {
                let copy = from_image(&f, &format!("from-{image}"), image, lun).unwrap();
                assert_eq!(read(&f, &copy, 8192), vec![0x5a; 8192], "{kind} {image}");
            }

            // Images alone keep the set in use: it cannot be deleted under them.
            for d in ["d", "from-named", "from-inherited"] {
                assert!(f.plane.delete_disk(&f.sub, "g", d).unwrap());
            }
            assert!(f.plane.delete_snapshot(&f.sub, "g", "s").unwrap());
            assert!(matches!(
                f.plane.delete_disk_encryption_set(&f.sub, "g", "set-a"),
                Err(ControlError::OperationNotAllowed(m)) if m.contains("named")
            ));
            for i in ["named", "inherited"] {
                assert!(f.plane.delete_image(&f.sub, "g", i).unwrap());
            }
            assert!(
                f.plane
                    .delete_disk_encryption_set(&f.sub, "g", "set-a")
                    .unwrap()
            );
        }
    }

    fn kind_layers(kind: &str) -> usize {
        if kind == CUSTOMER_KEY { 1 } else { 2 }
    }

    #[test]
    fn automatic_rotation_and_an_interrupted_one_reach_image_volumes() {
        let f = Fixture::with_data_plane();
        let (vault, set) = customer_key_set(&f, "auto", CUSTOMER_KEY, true);
        let disk = written_disk(&f, "d", &set, &[0xc3; 4096]);
        let snap = snapshot(&f, "s", &disk);
        let img = image(&f, "img", &disk, &snap, None);

        let v2 = f.plane.rotate_key(&vault, "k").unwrap()["key"]["kid"]
            .as_str()
            .unwrap()
            .to_string();
        let moved = f.plane.rotate_sets_to_latest_keys().unwrap();
        assert_eq!(moved, [set["id"].as_str().unwrap()]);
        let shown = f
            .plane
            .disk_encryption_set(&f.sub, "g", "set-auto")
            .unwrap();
        assert_eq!(set_key_url(&shown), v2);
        assert!(shown["properties"].get("autoKeyRotationError").is_none());
        for h in image_headers(&f, &img) {
            assert_eq!(customer_key_ids(&h), [v2.as_str()]);
        }

        // A stop between recording the new version and re-wrapping: the start-up pass
        // (finish_rotations) re-wraps what was left, images included, and only that.
        let v3 = f.plane.rotate_key(&vault, "k").unwrap()["key"]["kid"]
            .as_str()
            .unwrap()
            .to_string();
        let mut record = f
            .plane
            .store
            .resource(set["id"].as_str().unwrap())
            .unwrap()
            .unwrap();
        record.body["properties"]["activeKey"]["keyUrl"] = json!(v3);
        f.plane.store.put_resource(&record).unwrap();
        assert_eq!(
            f.plane.finish_rotations().unwrap(),
            4,
            "the disk, the snapshot and both image volumes"
        );
        assert_eq!(f.plane.finish_rotations().unwrap(), 0);
        for h in image_headers(&f, &img) {
            assert_eq!(customer_key_ids(&h), [v3.as_str()]);
        }
        disable(&f, &vault, KeyUrl::parse(&v2).unwrap().version.as_deref());
        let copy = from_image(&f, "copy", "img", None).unwrap();
        assert_eq!(read(&f, &copy, 4096), vec![0xc3; 4096]);
    }

    #[test]
    fn a_disk_from_an_image_whose_key_is_revoked_is_refused_and_nothing_is_made() {
        let f = Fixture::with_data_plane();
        let (vault, set) = customer_key_set(&f, "rev", PLATFORM_AND_CUSTOMER_KEYS, false);
        let disk = written_disk(&f, "d", &set, &[0x77; 4096]);
        let snap = snapshot(&f, "s", &disk);
        image(&f, "img", &disk, &snap, Some(&set));

        disable(&f, &vault, None);
        let err = from_image(&f, "no1", "img", None).unwrap_err();
        assert!(
            matches!(&err, ControlError::DiskEncryptionSetKeyUnusable { reason, .. } if reason.contains("disabled")),
            "{err}"
        );
        let input = serde_json::from_value(json!({"attributes": {"enabled": true}})).unwrap();
        f.plane.update_key(&vault, "k", None, input).unwrap();

        set_policy(&f, &vault, &set, AccessPolicyUpdate::Remove);
        let err = from_image(&f, "no2", "img", Some(0)).unwrap_err();
        assert!(
            matches!(&err, ControlError::DiskEncryptionSetKeyUnusable { reason, .. } if reason.contains("kv-rev")),
            "{err}"
        );
        for name in ["no1", "no2"] {
            assert!(matches!(
                f.plane.disk(&f.sub, "g", name),
                Err(ControlError::ResourceNotFound { .. })
            ));
        }

        set_policy(&f, &vault, &set, AccessPolicyUpdate::Add);
        let copy = from_image(&f, "yes", "img", Some(0)).unwrap();
        assert_eq!(read(&f, &copy, 4096), vec![0x77; 4096]);
    }

    #[test]
    fn key_urls_split_into_vault_key_and_version() {
        let u = KeyUrl::parse("https://kv1.vault.localhost:8443/keys/k1/0123abcd").unwrap();
        assert_eq!(u.vault, "kv1");
        assert_eq!(u.vault_url, "https://kv1.vault.localhost:8443");
        assert_eq!(u.key, "k1");
        assert_eq!(u.version.as_deref(), Some("0123abcd"));
        assert_eq!(
            u.versioned("ff"),
            "https://kv1.vault.localhost:8443/keys/k1/ff"
        );
        let u = KeyUrl::parse("https://kv1.vault.localhost:8443/keys/k1/").unwrap();
        assert_eq!(u.version, None);
        assert!(KeyUrl::parse("https://kv1.vault.localhost/secrets/k1/v").is_none());
        assert!(KeyUrl::parse("http://kv1.vault.localhost/keys/k1/v").is_none());
        assert!(KeyUrl::parse("https://localhost/keys/k1/v").is_none());
        assert!(KeyUrl::parse("https://kv.vault.x/keys/k/v/extra").is_none());
        assert!(KeyUrl::same_key(
            "https://KV1.vault.localhost:1/keys/k1/ab",
            "https://kv1.vault.localhost:2/keys/K1/ab"
        ));
        assert!(!KeyUrl::same_key(
            "https://kv1.vault.localhost:1/keys/k1/ab",
            "https://kv1.vault.localhost:1/keys/k1/cd"
        ));
    }

    /// The stored record of disk `name`.
    fn disk_record(f: &Fixture, name: &str) -> crate::store::ResourceRecord {
        let id = format!(
            "/subscriptions/{}/resourceGroups/g/providers/{DISK_TYPE}/{name}",
            f.sub
        );
        f.plane.store.resource(&id).unwrap().unwrap()
    }

    #[test]
    fn a_move_to_another_encryption_interrupted_by_a_crash_is_settled_at_start() {
        let f = Fixture::with_data_plane();
        let (_vault, set) = customer_key_set(&f, "m", CUSTOMER_KEY, false);
        let wanted = json!({"type": CUSTOMER_KEY, "diskEncryptionSetId": set["id"]});
        let data = [0x3c; 8192];

        // Crashed after the header was re-wrapped, before the document was updated: the
        // document still says platform key, with the change recorded.
        platform_disk(&f, "moved", &data);
        let before = disk_record(&f, "moved");
        let patch: DiskPatch =
            serde_json::from_value(json!({"properties": {"encryption": wanted}})).unwrap();
        f.plane.patch_disk(&f.sub, "g", "moved", patch).unwrap();
        let mut crashed = before.clone();
        crashed.body["internal"]["encryptionChange"] = wanted.clone();
        f.plane.store.put_resource(&crashed).unwrap();

        // Crashed before the header moved: only the mark.
        platform_disk(&f, "stayed", &data);
        let mut marked = disk_record(&f, "stayed");
        marked.body["internal"]["encryptionChange"] = wanted.clone();
        f.plane.store.put_resource(&marked).unwrap();

        f.plane.finish_rotations().unwrap();
        let moved = disk_record(&f, "moved").body;
        assert_eq!(moved["properties"]["encryption"], wanted);
        assert!(moved["internal"].get("encryptionChange").is_none());
        assert_eq!(customer_key_ids(&header(&f, &moved)), [set_key_url(&set)]);
        let stayed = disk_record(&f, "stayed").body;
        assert_eq!(
            stayed["properties"]["encryption"],
            json!({"type": "EncryptionAtRestWithPlatformKey"})
        );
        assert!(stayed["internal"].get("encryptionChange").is_none());
        // Both read their data through the encryption their document names (nothing holds
        // them open, so each opens anew).
        for doc in [&moved, &stayed] {
            assert_eq!(read(&f, doc, data.len()), data);
        }
    }
}
