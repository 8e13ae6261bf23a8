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
use crate::ids::ObjectId;
use crate::keys::{CryptoOp, CryptoRequest, CryptoResult, VaultRef};
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
                "Disk encryption set '{name}' is used by disks; its encryptionType cannot change."
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

    /// Whether any disk uses the set.
    fn des_in_use(&self, des_id: &str) -> Result<bool, ControlError> {
        Ok(!self.des_associated_resources(des_id)?.is_empty())
    }

    /// The ids of the disks and snapshots that use set `des_id`.
    pub fn des_associated_resources(&self, des_id: &str) -> Result<Vec<String>, ControlError> {
        let mut out = Vec::new();
        for kind in [crate::disks::DISK_TYPE, crate::snapshots::SNAPSHOT_TYPE] {
            let records = self.store.resources(&ResourceQuery {
                resource_type: Some(kind),
                scope: Some(&self.subscription_scope()),
            })?;
            out.extend(
                records
                    .into_iter()
                    .filter(|d| {
                        d.body["properties"]["encryption"]["diskEncryptionSetId"]
                            .as_str()
                            .is_some_and(|s| s.eq_ignore_ascii_case(des_id))
                    })
                    .map(|d| d.id),
            );
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

    /// Deletes a set that no disk uses; its identity goes with it. `false` if there was none.
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
}
