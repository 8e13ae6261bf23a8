//! Key Vault keys: versions, soft delete / recover / purge, backup and restore, rotation with
//! its policy, and the cryptographic operations. Private keys exist in plain form only in
//! memory, for the duration of one operation; at rest they are sealed under the platform root
//! key with their vault, name and version as associated data.

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;
use std::sync::{Arc, Mutex, MutexGuard};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use keyvault::material::{
    Curve, EncryptionAlgorithm, Jwk, KeyMaterial, KeyOperation, SignatureAlgorithm,
};
use keyvault::seal;
use serde::Deserialize;
use serde_json::{Value, json};
use zeroize::Zeroizing;

use crate::store::{Generation, KeyVersionRecord};
use crate::{ControlError, ControlPlane};

const DAY: i64 = 24 * 3600;
const MIN_POLICY_EXPIRY_DAYS: i64 = 28;

/// Most versions kept loaded at once; past it the cache starts over.
const KEY_CACHE_CAPACITY: usize = 4096;
/// Most store reads remembered at once; past it the memo starts over.
const READS_CAPACITY: usize = 4096;

/// What the data plane keeps in memory between requests: loaded private keys, and the store
/// reads every key operation (and every authorization) repeats.
#[derive(Default)]
pub(crate) struct KeyCache {
    /// Loaded private keys by sealing context (`sealdisk/key/VAULT/NAME/VERSION`). The keys
    /// live in AWS-LC and zeroizing memory and never leave the process. A version's key never
    /// changes, so an entry stays valid until the key is purged.
    loaded: Mutex<HashMap<Vec<u8>, Arc<KeyMaterial>>>,
    reads: Mutex<Reads>,
}

/// Store reads remembered for one store generation. Any change to the store moves the
/// generation on and starts the memo over, so a remembered read is never older than the
/// generation its caller observed before asking.
#[derive(Default)]
pub(crate) struct Reads {
    generation: Option<Generation>,
    /// Live vault documents by lower-case name.
    pub(crate) vaults: HashMap<String, Option<Value>>,
    /// Key versions by lower-case vault, name and version (empty: the latest).
    versions: HashMap<(String, String, String), Option<Arc<KeyVersionRecord>>>,
    /// Deleted-key records by lower-case vault and name.
    deleted: HashMap<(String, String), Option<Value>>,
    /// Every role assignment (one entry at most).
    pub(crate) role_assignments: HashMap<(), Arc<Vec<crate::RoleAssignment>>>,
}

impl Reads {
    fn len(&self) -> usize {
        self.vaults.len() + self.versions.len() + self.deleted.len() + self.role_assignments.len()
    }

    fn start_over(&mut self, generation: Generation) {
        *self = Reads {
            generation: Some(generation),
            ..Reads::default()
        };
    }
}

impl std::fmt::Debug for KeyCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyCache(<redacted>)")
    }
}

impl KeyCache {
    fn loaded(&self) -> MutexGuard<'_, HashMap<Vec<u8>, Arc<KeyMaterial>>> {
        // The map holds no invariant a panic could break.
        self.loaded.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn reads(&self) -> MutexGuard<'_, Reads> {
        // Every entry is a complete read: a panic cannot leave one half written.
        self.reads.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn get(&self, id: &[u8]) -> Option<Arc<KeyMaterial>> {
        self.loaded().get(id).cloned()
    }

    fn insert(&self, id: Vec<u8>, material: Arc<KeyMaterial>) {
        let mut map = self.loaded();
        if map.len() >= KEY_CACHE_CAPACITY {
            map.clear();
        }
        map.insert(id, material);
    }

    /// Drops every version whose id starts with `prefix` (a key, when purged).
    fn forget(&self, prefix: &[u8]) {
        self.loaded().retain(|id, _| !id.starts_with(prefix));
    }

    /// The result of `load` for `key` in the memo `table`, remembered while the store stays at
    /// `generation`, which the caller observed before asking. A read made after a generation
    /// was observed is at least as new as it, so it may answer anyone who observed the same.
    pub(crate) fn read<K, V>(
        &self,
        generation: Generation,
        table: fn(&mut Reads) -> &mut HashMap<K, V>,
        key: K,
        load: impl FnOnce() -> Result<V, ControlError>,
    ) -> Result<V, ControlError>
    where
        K: Eq + Hash,
        V: Clone,
    {
        {
            let mut reads = self.reads();
            if reads.generation != Some(generation) {
                reads.start_over(generation);
            }
            if let Some(value) = table(&mut reads).get(&key) {
                return Ok(value.clone());
            }
        }
        let value = load()?;
        let mut reads = self.reads();
        // Someone saw another generation meanwhile: this read may belong to neither.
        if reads.generation == Some(generation) {
            if reads.len() >= READS_CAPACITY {
                reads.start_over(generation);
            }
            table(&mut reads).insert(key, value.clone());
        }
        Ok(value)
    }
}

/// The vault a data-plane request addresses.
#[derive(Debug, Clone)]
pub struct VaultRef {
    /// The vault's name as created.
    pub name: String,
    /// The vault's ARM document.
    pub doc: Value,
    /// `https://NAME.vault.DOMAIN:PORT`, without a trailing slash.
    pub url: String,
}

impl VaultRef {
    fn id(&self) -> String {
        self.name.to_ascii_lowercase()
    }

    fn retention_days(&self) -> i64 {
        self.doc["properties"]["softDeleteRetentionInDays"]
            .as_i64()
            .unwrap_or(90)
    }

    fn purge_protected(&self) -> bool {
        self.doc["properties"]["enablePurgeProtection"].as_bool() == Some(true)
    }

    fn recovery_level(&self) -> &'static str {
        match (self.purge_protected(), self.retention_days() < 90) {
            (true, false) => "Recoverable",
            (true, true) => "CustomizedRecoverable",
            (false, false) => "Recoverable+Purgeable",
            (false, true) => "CustomizedRecoverable+Purgeable",
        }
    }
}

/// `attributes` of create, import and update requests.
#[derive(Debug, Default, Deserialize)]
pub struct KeyAttributesInput {
    pub enabled: Option<bool>,
    pub nbf: Option<i64>,
    pub exp: Option<i64>,
}

/// Body of `POST /keys/{name}/create`.
#[derive(Debug, Deserialize)]
pub struct CreateKeyInput {
    pub kty: String,
    pub key_size: Option<u32>,
    pub crv: Option<String>,
    pub public_exponent: Option<u32>,
    pub key_ops: Option<Vec<String>>,
    pub attributes: Option<KeyAttributesInput>,
    pub tags: Option<BTreeMap<String, String>>,
}

/// Body of `PUT /keys/{name}` (import).
#[derive(Debug, Deserialize)]
pub struct ImportKeyInput {
    pub key: Jwk,
    #[serde(rename = "Hsm")]
    pub hsm: Option<bool>,
    pub attributes: Option<KeyAttributesInput>,
    pub tags: Option<BTreeMap<String, String>>,
}

/// Body of `PATCH /keys/{name}/{version}`.
#[derive(Debug, Default, Deserialize)]
pub struct UpdateKeyInput {
    pub key_ops: Option<Vec<String>>,
    pub attributes: Option<KeyAttributesInput>,
    pub tags: Option<BTreeMap<String, String>>,
}

/// The parts of a create or import request that become the first version's metadata.
#[derive(Debug)]
struct NewKey<'a> {
    kty: &'a str,
    key_ops: Option<&'a [String]>,
    attributes: Option<&'a KeyAttributesInput>,
    tags: Option<BTreeMap<String, String>>,
}

/// What a new key version records besides its key material.
#[derive(Debug)]
struct VersionMeta {
    kty: String,
    key_ops: Vec<String>,
    attributes: Value,
    tags: Value,
}

/// A cryptographic operation request: `value` is the input (for verify, the digest) and
/// `signature` the signature to verify.
#[derive(Debug, Clone, Copy)]
pub struct CryptoRequest<'a> {
    pub op: CryptoOp,
    pub alg: &'a str,
    pub value: &'a [u8],
    pub signature: Option<&'a [u8]>,
}

/// A cryptographic operation on a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CryptoOp {
    Encrypt,
    Decrypt,
    WrapKey,
    UnwrapKey,
    Sign,
    Verify,
}

impl CryptoOp {
    /// The `key_ops` entry and access-policy permission the operation needs.
    pub fn name(self) -> &'static str {
        match self {
            Self::Encrypt => "encrypt",
            Self::Decrypt => "decrypt",
            Self::WrapKey => "wrapKey",
            Self::UnwrapKey => "unwrapKey",
            Self::Sign => "sign",
            Self::Verify => "verify",
        }
    }
}

/// The result of a cryptographic operation.
#[derive(Debug)]
pub enum CryptoResult {
    /// Output bytes (ciphertext, plaintext, wrapped or unwrapped key, signature).
    Bytes {
        kid: String,
        value: Zeroizing<Vec<u8>>,
    },
    /// A verification outcome.
    Verified(bool),
}

fn bad(message: impl Into<String>) -> ControlError {
    ControlError::KeyBadParameter(message.into())
}

fn random_version() -> Result<String, ControlError> {
    Ok(crypto::random::hex::<16>()?)
}

fn seal_context(vault: &str, name: &str, version: &str) -> Vec<u8> {
    format!(
        "sealdisk/key/{}/{}/{version}",
        vault.to_ascii_lowercase(),
        name.to_ascii_lowercase()
    )
    .into_bytes()
}

fn canonical_ops(ops: &[String]) -> Result<Vec<String>, ControlError> {
    ops.iter()
        .map(|o| {
            KeyOperation::ALL
                .iter()
                .find(|k| k.as_str().eq_ignore_ascii_case(o))
                .map(|k| k.as_str().to_string())
                .ok_or_else(|| {
                    let valid: Vec<&str> = KeyOperation::ALL.iter().map(|k| k.as_str()).collect();
                    bad(format!(
                        "Invalid key operation '{o}'. Valid operations: {}.",
                        valid.join(", ")
                    ))
                })
        })
        .collect()
}

fn default_ops(kty: &str) -> Vec<String> {
    let ops: &[&str] = if kty == "EC" {
        &["sign", "verify"]
    } else {
        &[
            "encrypt",
            "decrypt",
            "sign",
            "verify",
            "wrapKey",
            "unwrapKey",
        ]
    };
    ops.iter().map(|s| s.to_string()).collect()
}

/// Parses an ISO 8601 duration (`P90D`, `P1Y10D`, `PT48H`, `P3M`) to seconds; months are 30
/// days and years 365, as Key Vault counts them.
pub fn parse_duration(s: &str) -> Option<i64> {
    let rest = s.strip_prefix('P').or_else(|| s.strip_prefix('p'))?;
    let (date, time) = match rest.split_once(['T', 't']) {
        Some((d, t)) => (d, Some(t)),
        None => (rest, None),
    };
    let mut total = 0i64;
    let mut any = false;
    let mut take = |part: &str, units: &[(char, i64)]| -> Option<()> {
        let mut number = String::new();
        for c in part.chars() {
            if c.is_ascii_digit() {
                number.push(c);
            } else {
                let unit = units.iter().find(|(u, _)| u.eq_ignore_ascii_case(&c))?.1;
                total = total.checked_add(number.parse::<i64>().ok()?.checked_mul(unit)?)?;
                number.clear();
                any = true;
            }
        }
        number.is_empty().then_some(())
    };
    take(
        date,
        &[
            ('Y', 365 * DAY),
            ('M', 30 * DAY),
            ('W', 7 * DAY),
            ('D', DAY),
        ],
    )?;
    if let Some(time) = time {
        take(time, &[('H', 3600), ('M', 60), ('S', 1)])?;
    }
    any.then_some(total)
}

impl ControlPlane {
    fn key_attributes(
        &self,
        input: Option<&KeyAttributesInput>,
        old: Option<&Value>,
        now: i64,
    ) -> Value {
        let old = old
            .cloned()
            .unwrap_or_else(|| json!({"enabled": true, "created": now}));
        let mut attrs = old;
        if let Some(input) = input {
            if let Some(e) = input.enabled {
                attrs["enabled"] = json!(e);
            }
            if let Some(nbf) = input.nbf {
                attrs["nbf"] = json!(nbf);
            }
            if let Some(exp) = input.exp {
                attrs["exp"] = json!(exp);
            }
        }
        attrs["updated"] = json!(now);
        attrs
    }

    /// The KeyBundle of a stored version, as the data plane returns it.
    pub fn key_bundle(&self, vault: &VaultRef, rec: &KeyVersionRecord) -> Value {
        let name = rec.body["name"].as_str().unwrap_or(&rec.name);
        let mut key = rec.body["key"].clone();
        key["kid"] = json!(format!("{}/keys/{name}/{}", vault.url, rec.version));
        key["kty"] = rec.body["kty"].clone();
        key["key_ops"] = rec.body["key_ops"].clone();
        let mut bundle = json!({"key": key, "attributes": self.presented_attributes(vault, &rec.body["attributes"])});
        if let Some(tags) = rec.body["tags"].as_object().filter(|t| !t.is_empty()) {
            bundle["tags"] = json!(tags);
        }
        bundle
    }

    fn presented_attributes(&self, vault: &VaultRef, attrs: &Value) -> Value {
        let mut attrs = attrs.clone();
        attrs["recoveryLevel"] = json!(vault.recovery_level());
        attrs["recoverableDays"] = json!(vault.retention_days());
        attrs["exportable"] = json!(false);
        attrs
    }

    /// A KeyItem (list entry); `with_version` for the versions listing.
    pub fn key_item(&self, vault: &VaultRef, rec: &KeyVersionRecord, with_version: bool) -> Value {
        let name = rec.body["name"].as_str().unwrap_or(&rec.name);
        let kid = if with_version {
            format!("{}/keys/{name}/{}", vault.url, rec.version)
        } else {
            format!("{}/keys/{name}", vault.url)
        };
        let mut item = json!({"kid": kid, "attributes": self.presented_attributes(vault, &rec.body["attributes"])});
        if let Some(tags) = rec.body["tags"].as_object().filter(|t| !t.is_empty()) {
            item["tags"] = json!(tags);
        }
        item
    }

    /// The live deleted-key record of `name`, purging it when its retention has ended.
    fn live_deleted_key(
        &self,
        vault: &VaultRef,
        name: &str,
    ) -> Result<Option<Value>, ControlError> {
        self.live_deleted_key_at(self.store.generation()?, vault, name)
    }

    /// `live_deleted_key`, with the store's generation already observed.
    fn live_deleted_key_at(
        &self,
        generation: Generation,
        vault: &VaultRef,
        name: &str,
    ) -> Result<Option<Value>, ControlError> {
        let vault_id = vault.id();
        let deleted = self.key_cache.read(
            generation,
            |r| &mut r.deleted,
            (vault_id.clone(), name.to_ascii_lowercase()),
            || Ok(self.store.deleted_key(&vault_id, name)?),
        )?;
        let Some(deleted) = deleted else {
            return Ok(None);
        };
        if deleted["purgeAt"].as_i64().is_some_and(|t| t <= self.now()) {
            self.purge(&vault.id(), name)?;
            return Ok(None);
        }
        Ok(Some(deleted))
    }

    fn ensure_name_free(&self, vault: &VaultRef, name: &str) -> Result<(), ControlError> {
        let valid = (1..=127).contains(&name.len())
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
        if !valid {
            return Err(bad(format!(
                "The request URI contains an invalid name: {name}. Key names are 1-127 characters of letters, digits and '-'."
            )));
        }
        if self.live_deleted_key(vault, name)?.is_some() {
            return Err(ControlError::KeyDeletedButRecoverable(name.to_string()));
        }
        Ok(())
    }

    fn store_new_version(
        &self,
        vault: &VaultRef,
        name: &str,
        material: &KeyMaterial,
        meta: VersionMeta,
    ) -> Result<KeyVersionRecord, ControlError> {
        let VersionMeta {
            kty,
            key_ops,
            attributes,
            tags,
        } = meta;
        let version = random_version()?;
        let mut public =
            serde_json::to_value(material.public_jwk()).map_err(|e| bad(e.to_string()))?;
        if let Some(o) = public.as_object_mut() {
            for field in [
                "kid", "kty", "key_ops", "d", "dp", "dq", "qi", "p", "q", "k",
            ] {
                o.remove(field);
            }
        }
        let body = json!({
            "name": name,
            "kty": kty,
            "key_ops": key_ops,
            "key": public,
            "attributes": attributes,
            "tags": tags,
        });
        let sealed = seal::seal(
            &self.root,
            &seal_context(&vault.id(), name, &version),
            material.pkcs8(),
        )?;
        let rec = KeyVersionRecord {
            vault: vault.id(),
            name: name.to_ascii_lowercase(),
            version,
            body,
            sealed,
        };
        self.store.insert_key_version(&rec)?;
        Ok(rec)
    }

    /// Creates a key (or a new version of an existing one).
    pub fn create_key(
        &self,
        vault: &VaultRef,
        name: &str,
        input: CreateKeyInput,
    ) -> Result<Value, ControlError> {
        self.ensure_name_free(vault, name)?;
        let (kty, material) = generate(
            &input.kty,
            input.key_size,
            input.crv.as_deref(),
            input.public_exponent,
        )?;
        let request = NewKey {
            kty,
            key_ops: input.key_ops.as_deref(),
            attributes: input.attributes.as_ref(),
            tags: input.tags,
        };
        self.new_key(vault, name, &material, request)
    }

    /// Stores the first or a further version of a key from a create or import request.
    fn new_key(
        &self,
        vault: &VaultRef,
        name: &str,
        material: &KeyMaterial,
        request: NewKey<'_>,
    ) -> Result<Value, ControlError> {
        let key_ops = match request.key_ops {
            Some(ops) => canonical_ops(ops)?,
            None => default_ops(request.kty),
        };
        let meta = VersionMeta {
            kty: request.kty.to_string(),
            key_ops,
            attributes: self.key_attributes(request.attributes, None, self.now()),
            tags: json!(request.tags.unwrap_or_default()),
        };
        let rec = self.store_new_version(vault, name, material, meta)?;
        Ok(self.key_bundle(vault, &rec))
    }

    /// Imports a key from a JWK with its private parts.
    pub fn import_key(
        &self,
        vault: &VaultRef,
        name: &str,
        input: ImportKeyInput,
    ) -> Result<Value, ControlError> {
        self.ensure_name_free(vault, name)?;
        let kty = input.key.kty.clone().unwrap_or_default();
        let kty = match kty.as_str() {
            "RSA" | "EC" => kty,
            "RSA-HSM" | "EC-HSM" => return Err(hsm_unavailable()),
            other => {
                return Err(bad(format!(
                    "Key type '{other}' cannot be imported; use RSA or EC."
                )));
            }
        };
        if input.hsm == Some(true) {
            return Err(hsm_unavailable());
        }
        let material = KeyMaterial::from_jwk(&input.key)?;
        let request = NewKey {
            kty: &kty,
            key_ops: input.key.key_ops.as_deref(),
            attributes: input.attributes.as_ref(),
            tags: input.tags,
        };
        self.new_key(vault, name, &material, request)
    }

    /// A stored version (the latest when `version` is empty), refusing deleted keys.
    pub fn key_record(
        &self,
        vault: &VaultRef,
        name: &str,
        version: Option<&str>,
    ) -> Result<KeyVersionRecord, ControlError> {
        let rec = self.shared_key_record(vault, name, version)?;
        Ok(KeyVersionRecord::clone(&rec))
    }

    /// `key_record`, shared with the memo of store reads.
    fn shared_key_record(
        &self,
        vault: &VaultRef,
        name: &str,
        version: Option<&str>,
    ) -> Result<Arc<KeyVersionRecord>, ControlError> {
        let generation = self.store.generation()?;
        if self.live_deleted_key_at(generation, vault, name)?.is_some() {
            return Err(ControlError::KeyNotFound(name.to_string()));
        }
        let vault_id = vault.id();
        let wanted = version
            .filter(|v| !v.is_empty())
            .map(str::to_ascii_lowercase);
        let rec = self.key_cache.read(
            generation,
            |r| &mut r.versions,
            (
                vault_id.clone(),
                name.to_ascii_lowercase(),
                wanted.clone().unwrap_or_default(),
            ),
            || {
                let rec = match &wanted {
                    Some(v) => self.store.key_version(&vault_id, name, v)?,
                    None => self.store.latest_key_version(&vault_id, name)?,
                };
                Ok(rec.map(Arc::new))
            },
        )?;
        rec.ok_or_else(|| {
            ControlError::KeyNotFound(match version.filter(|v| !v.is_empty()) {
                Some(v) => format!("{name}/{v}"),
                None => name.to_string(),
            })
        })
    }

    pub fn get_key(
        &self,
        vault: &VaultRef,
        name: &str,
        version: Option<&str>,
    ) -> Result<Value, ControlError> {
        Ok(self.key_bundle(vault, &self.key_record(vault, name, version)?))
    }

    /// KeyItems of every key that is not deleted.
    pub fn list_keys(&self, vault: &VaultRef) -> Result<Vec<Value>, ControlError> {
        let deleted: Vec<String> = self
            .deleted_key_records(vault)?
            .iter()
            .filter_map(|d| d["name"].as_str().map(str::to_ascii_lowercase))
            .collect();
        Ok(self
            .store
            .latest_key_versions(&vault.id())?
            .iter()
            .filter(|r| !deleted.contains(&r.name))
            .map(|r| self.key_item(vault, r, false))
            .collect())
    }

    pub fn key_versions(&self, vault: &VaultRef, name: &str) -> Result<Vec<Value>, ControlError> {
        self.key_record(vault, name, None)?;
        Ok(self
            .store
            .key_versions(&vault.id(), name)?
            .iter()
            .map(|r| self.key_item(vault, r, true))
            .collect())
    }

    /// Updates attributes, tags or key_ops of one version (the latest when `version` is empty).
    pub fn update_key(
        &self,
        vault: &VaultRef,
        name: &str,
        version: Option<&str>,
        input: UpdateKeyInput,
    ) -> Result<Value, ControlError> {
        let mut rec = self.key_record(vault, name, version)?;
        if let Some(ops) = &input.key_ops {
            rec.body["key_ops"] = json!(canonical_ops(ops)?);
        }
        if let Some(tags) = input.tags {
            rec.body["tags"] = json!(tags);
        }
        rec.body["attributes"] = self.key_attributes(
            input.attributes.as_ref(),
            Some(&rec.body["attributes"]),
            self.now(),
        );
        self.store
            .update_key_version(&vault.id(), name, &rec.version, &rec.body)?;
        Ok(self.key_bundle(vault, &rec))
    }

    fn deleted_bundle(&self, vault: &VaultRef, rec: &KeyVersionRecord, deleted: &Value) -> Value {
        let mut bundle = self.key_bundle(vault, rec);
        let name = rec.body["name"].as_str().unwrap_or(&rec.name);
        bundle["recoveryId"] = json!(format!("{}/deletedkeys/{name}", vault.url));
        bundle["deletedDate"] = deleted["deletedDate"].clone();
        bundle["scheduledPurgeDate"] = deleted["purgeAt"].clone();
        bundle
    }

    /// Soft-deletes a key (all its versions); returns the DeletedKeyBundle.
    pub fn delete_key(&self, vault: &VaultRef, name: &str) -> Result<Value, ControlError> {
        let rec = self.key_record(vault, name, None)?;
        let now = self.now();
        let deleted = json!({
            "name": rec.body["name"],
            "deletedDate": now,
            "purgeAt": now + vault.retention_days() * DAY,
        });
        self.store.put_deleted_key(&vault.id(), name, &deleted)?;
        Ok(self.deleted_bundle(vault, &rec, &deleted))
    }

    fn deleted_key_records(&self, vault: &VaultRef) -> Result<Vec<Value>, ControlError> {
        let mut out = Vec::new();
        for d in self.store.deleted_keys(&vault.id())? {
            let name = d["name"].as_str().unwrap_or_default().to_string();
            if let Some(live) = self.live_deleted_key(vault, &name)? {
                out.push(live);
            }
        }
        Ok(out)
    }

    /// DeletedKeyItems of the vault.
    pub fn deleted_keys(&self, vault: &VaultRef) -> Result<Vec<Value>, ControlError> {
        let mut out = Vec::new();
        for d in self.deleted_key_records(vault)? {
            let name = d["name"].as_str().unwrap_or_default();
            if let Some(rec) = self.store.latest_key_version(&vault.id(), name)? {
                let mut item = self.key_item(vault, &rec, false);
                item["recoveryId"] = json!(format!("{}/deletedkeys/{name}", vault.url));
                item["deletedDate"] = d["deletedDate"].clone();
                item["scheduledPurgeDate"] = d["purgeAt"].clone();
                out.push(item);
            }
        }
        Ok(out)
    }

    fn deleted_record(
        &self,
        vault: &VaultRef,
        name: &str,
    ) -> Result<(Value, KeyVersionRecord), ControlError> {
        let deleted = self
            .live_deleted_key(vault, name)?
            .ok_or_else(|| ControlError::DeletedKeyNotFound(name.to_string()))?;
        let rec = self
            .store
            .latest_key_version(&vault.id(), name)?
            .ok_or_else(|| ControlError::DeletedKeyNotFound(name.to_string()))?;
        Ok((deleted, rec))
    }

    pub fn deleted_key(&self, vault: &VaultRef, name: &str) -> Result<Value, ControlError> {
        let (deleted, rec) = self.deleted_record(vault, name)?;
        Ok(self.deleted_bundle(vault, &rec, &deleted))
    }

    /// Recovers a soft-deleted key with all its versions.
    pub fn recover_key(&self, vault: &VaultRef, name: &str) -> Result<Value, ControlError> {
        let (_, rec) = self.deleted_record(vault, name)?;
        self.store.remove_deleted_key(&vault.id(), name)?;
        Ok(self.key_bundle(vault, &rec))
    }

    /// Permanently deletes a soft-deleted key. Irreversible; refused under purge protection.
    pub fn purge_deleted_key(&self, vault: &VaultRef, name: &str) -> Result<(), ControlError> {
        self.deleted_record(vault, name)?;
        if vault.purge_protected() {
            return Err(ControlError::KeyPurgeProtected(name.to_string()));
        }
        self.purge(&vault.id(), name)?;
        Ok(())
    }

    fn backup_context(&self) -> Vec<u8> {
        format!("sealdisk/key-backup/v1/{}", self.tenant()).into_bytes()
    }

    /// An opaque backup of every version of a key, sealed with the deployment root key.
    pub fn backup_key(&self, vault: &VaultRef, name: &str) -> Result<String, ControlError> {
        let latest = self.key_record(vault, name, None)?;
        let mut versions = Vec::new();
        for rec in self.store.key_versions(&vault.id(), name)? {
            let pkcs8 = seal::open(
                &self.root,
                &seal_context(&vault.id(), name, &rec.version),
                &rec.sealed,
            )?;
            versions.push(json!({"version": rec.version, "body": rec.body, "pkcs8": B64URL.encode(pkcs8.as_slice())}));
        }
        let doc = Zeroizing::new(
            serde_json::to_vec(&json!({
                "format": "sealdisk-key-backup",
                "version": 1,
                "name": latest.body["name"],
                "versions": versions,
            }))
            .map_err(|e| bad(e.to_string()))?,
        );
        let sealed = seal::seal(&self.root, &self.backup_context(), &doc)?;
        Ok(B64URL.encode(sealed))
    }

    /// Restores a backup into `vault`; the key's name must be free.
    pub fn restore_key(&self, vault: &VaultRef, blob: &str) -> Result<Value, ControlError> {
        let sealed = B64URL
            .decode(blob.trim_end_matches('='))
            .map_err(|_| ControlError::InvalidBackup)?;
        let doc = seal::open(&self.root, &self.backup_context(), &sealed)
            .map_err(|_| ControlError::InvalidBackup)?;
        let doc: Value = serde_json::from_slice(&doc).map_err(|_| ControlError::InvalidBackup)?;
        if doc["format"] != "sealdisk-key-backup" || doc["version"] != 1 {
            return Err(ControlError::InvalidBackup);
        }
        let name = doc["name"]
            .as_str()
            .ok_or(ControlError::InvalidBackup)?
            .to_string();
        self.ensure_name_free(vault, &name)?;
        if self.store.latest_key_version(&vault.id(), &name)?.is_some() {
            return Err(ControlError::KeyAlreadyExists(name));
        }
        let mut last = None;
        for v in doc["versions"]
            .as_array()
            .ok_or(ControlError::InvalidBackup)?
        {
            let version = v["version"]
                .as_str()
                .ok_or(ControlError::InvalidBackup)?
                .to_string();
            let pkcs8 = Zeroizing::new(
                B64URL
                    .decode(v["pkcs8"].as_str().unwrap_or_default())
                    .map_err(|_| ControlError::InvalidBackup)?,
            );
            KeyMaterial::from_pkcs8(&pkcs8)?;
            let sealed = seal::seal(
                &self.root,
                &seal_context(&vault.id(), &name, &version),
                &pkcs8,
            )?;
            let rec = KeyVersionRecord {
                vault: vault.id(),
                name: name.to_ascii_lowercase(),
                version,
                body: v["body"].clone(),
                sealed,
            };
            self.store.insert_key_version(&rec)?;
            last = Some(rec);
        }
        let last = last.ok_or(ControlError::InvalidBackup)?;
        Ok(self.key_bundle(vault, &last))
    }

    /// Creates a new version of a key with the same type, size, operations and tags; its
    /// expiry follows the rotation policy's `expiryTime`.
    pub fn rotate_key(&self, vault: &VaultRef, name: &str) -> Result<Value, ControlError> {
        let rec = self.rotate_record(vault, name)?;
        Ok(self.key_bundle(vault, &rec))
    }

    fn rotate_record(
        &self,
        vault: &VaultRef,
        name: &str,
    ) -> Result<KeyVersionRecord, ControlError> {
        let latest = self.key_record(vault, name, None)?;
        let kty = latest.body["kty"].as_str().unwrap_or("RSA").to_string();
        let material = match kty.as_str() {
            "EC" => generate("EC", None, latest.body["key"]["crv"].as_str(), None)?.1,
            _ => {
                let n = B64URL
                    .decode(latest.body["key"]["n"].as_str().unwrap_or_default())
                    .unwrap_or_default();
                generate("RSA", Some((n.len() * 8) as u32), None, None)?.1
            }
        };
        let now = self.now();
        let mut attrs = json!({"enabled": true, "created": now, "updated": now});
        if let Some(expiry) = self.rotation_policy_doc(vault, name)?["attributes"]["expiryTime"]
            .as_str()
            .and_then(parse_duration)
        {
            attrs["exp"] = json!(now + expiry);
        }
        let ops: Vec<String> = serde_json::from_value(latest.body["key_ops"].clone())
            .unwrap_or_else(|_| default_ops(&kty));
        let display = latest.body["name"].as_str().unwrap_or(name).to_string();
        let meta = VersionMeta {
            kty,
            key_ops: ops,
            attributes: attrs,
            tags: latest.body["tags"].clone(),
        };
        self.store_new_version(vault, &display, &material, meta)
    }

    fn rotation_policy_doc(&self, vault: &VaultRef, name: &str) -> Result<Value, ControlError> {
        Ok(self.store.rotation_policy(&vault.id(), name)?.unwrap_or_else(|| {
            json!({
                "lifetimeActions": [{"trigger": {"timeBeforeExpiry": "P30D"}, "action": {"type": "Notify"}}],
                "attributes": {"expiryTime": null}
            })
        }))
    }

    pub fn get_rotation_policy(&self, vault: &VaultRef, name: &str) -> Result<Value, ControlError> {
        let rec = self.key_record(vault, name, None)?;
        let display = rec.body["name"].as_str().unwrap_or(name);
        let mut policy = self.rotation_policy_doc(vault, name)?;
        policy["id"] = json!(format!("{}/keys/{display}/rotationpolicy", vault.url));
        Ok(policy)
    }

    /// Validates and stores a rotation policy.
    pub fn set_rotation_policy(
        &self,
        vault: &VaultRef,
        name: &str,
        policy: Value,
    ) -> Result<Value, ControlError> {
        self.key_record(vault, name, None)?;
        let expiry = match &policy["attributes"]["expiryTime"] {
            Value::Null => None,
            Value::String(s) => {
                let secs = parse_duration(s).ok_or_else(|| {
                    bad(format!(
                        "expiryTime '{s}' is not an ISO 8601 duration such as P90D."
                    ))
                })?;
                if secs < MIN_POLICY_EXPIRY_DAYS * DAY {
                    return Err(bad(format!(
                        "expiryTime '{s}' is too short: it must be at least 28 days (P28D)."
                    )));
                }
                Some(s.clone())
            }
            other => return Err(bad(format!("expiryTime must be a string, not {other}"))),
        };
        let mut actions = Vec::new();
        for action in policy["lifetimeActions"]
            .as_array()
            .cloned()
            .unwrap_or_default()
        {
            let kind = action["action"]["type"].as_str().unwrap_or_default();
            let kind = if kind.eq_ignore_ascii_case("rotate") {
                "Rotate"
            } else if kind.eq_ignore_ascii_case("notify") {
                "Notify"
            } else {
                return Err(bad(format!(
                    "Lifetime action type '{kind}' is not supported; use Rotate or Notify."
                )));
            };
            let trigger = &action["trigger"];
            let after = trigger["timeAfterCreate"].as_str();
            let before = trigger["timeBeforeExpiry"].as_str();
            let mut t = json!({});
            match (after, before) {
                (Some(a), None) if kind == "Rotate" => {
                    parse_duration(a).ok_or_else(|| {
                        bad(format!(
                            "timeAfterCreate '{a}' is not an ISO 8601 duration."
                        ))
                    })?;
                    t["timeAfterCreate"] = json!(a);
                }
                (None, Some(b)) => {
                    parse_duration(b).ok_or_else(|| {
                        bad(format!(
                            "timeBeforeExpiry '{b}' is not an ISO 8601 duration."
                        ))
                    })?;
                    if kind == "Rotate" && expiry.is_none() {
                        return Err(bad(
                            "A Rotate action with timeBeforeExpiry needs attributes.expiryTime.",
                        ));
                    }
                    t["timeBeforeExpiry"] = json!(b);
                }
                _ => {
                    return Err(bad(
                        "Each lifetime action needs exactly one trigger: timeAfterCreate (Rotate only) or timeBeforeExpiry.",
                    ));
                }
            }
            actions.push(json!({"trigger": t, "action": {"type": kind}}));
        }
        let now = self.now();
        let created = self
            .store
            .rotation_policy(&vault.id(), name)?
            .and_then(|p| p["attributes"]["created"].as_i64())
            .unwrap_or(now);
        let stored = json!({"lifetimeActions": actions, "attributes": {"expiryTime": expiry, "created": created, "updated": now}});
        self.store.put_rotation_policy(&vault.id(), name, &stored)?;
        self.get_rotation_policy(vault, name)
    }

    /// Performs every rotation whose policy trigger is due; returns `(vault, key, new version)`
    /// of each. `vault_url` gives a vault's data-plane URL from its name.
    pub fn run_due_rotations(
        &self,
        vault_url: impl Fn(&str) -> String,
    ) -> Result<Vec<(String, String, String)>, ControlError> {
        let now = self.now();
        let mut done = Vec::new();
        for (vault_id, name, policy) in self.store.rotation_policies()? {
            let Some(doc) = self.vault_by_name(&vault_id)? else {
                continue;
            };
            let vault = VaultRef {
                name: doc["name"].as_str().unwrap_or(&vault_id).to_string(),
                url: vault_url(&vault_id),
                doc,
            };
            let Ok(latest) = self.key_record(&vault, &name, None) else {
                continue;
            };
            let created = latest.body["attributes"]["created"].as_i64().unwrap_or(now);
            let exp = latest.body["attributes"]["exp"].as_i64();
            let due = policy["lifetimeActions"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|a| {
                    if a["action"]["type"] != "Rotate" {
                        return false;
                    }
                    let after = a["trigger"]["timeAfterCreate"]
                        .as_str()
                        .and_then(parse_duration);
                    let before = a["trigger"]["timeBeforeExpiry"]
                        .as_str()
                        .and_then(parse_duration);
                    after.is_some_and(|d| created + d <= now)
                        || before.zip(exp).is_some_and(|(d, e)| e - d <= now)
                });
            if due {
                let rec = self.rotate_record(&vault, &name)?;
                done.push((vault_id.clone(), name.clone(), rec.version));
            }
        }
        Ok(done)
    }

    /// Runs a cryptographic operation on a key version (the latest when `version` is empty).
    pub fn key_operation(
        &self,
        vault: &VaultRef,
        name: &str,
        version: Option<&str>,
        request: CryptoRequest<'_>,
    ) -> Result<CryptoResult, ControlError> {
        let CryptoRequest {
            op,
            alg,
            value,
            signature,
        } = request;
        let rec = self.shared_key_record(vault, name, version)?;
        let attrs = &rec.body["attributes"];
        let now = self.now();
        let usable = attrs["enabled"].as_bool() != Some(false)
            && attrs["exp"].as_i64().is_none_or(|e| now < e)
            && attrs["nbf"].as_i64().is_none_or(|n| n <= now);
        if !usable {
            return Err(ControlError::KeyDisabled {
                key: name.to_string(),
                operation: op.name().to_string(),
            });
        }
        let ops = Vec::<String>::deserialize(&rec.body["key_ops"]).unwrap_or_default();
        if !ops.iter().any(|o| o.eq_ignore_ascii_case(op.name())) {
            return Err(ControlError::KeyOperationNotPermitted {
                operation: op.name().to_string(),
                allowed: ops.join(", "),
            });
        }
        let material = self.loaded_key(vault, name, &rec)?;
        let display = rec.body["name"].as_str().unwrap_or(name);
        let kid = format!("{}/keys/{display}/{}", vault.url, rec.version);
        let enc_alg = || alg.parse::<EncryptionAlgorithm>();
        let sig_alg = || alg.parse::<SignatureAlgorithm>();
        let bytes = match op {
            CryptoOp::Encrypt => Zeroizing::new(material.encrypt(enc_alg()?, value)?),
            CryptoOp::WrapKey => Zeroizing::new(material.wrap_key(enc_alg()?, value)?),
            CryptoOp::Decrypt => material.decrypt(enc_alg()?, value)?,
            CryptoOp::UnwrapKey => material.unwrap_key(enc_alg()?, value)?,
            CryptoOp::Sign => Zeroizing::new(material.sign(sig_alg()?, value)?),
            CryptoOp::Verify => {
                let ok = material.verify(sig_alg()?, value, signature.unwrap_or_default())?;
                return Ok(CryptoResult::Verified(ok));
            }
        };
        Ok(CryptoResult::Bytes { kid, value: bytes })
    }

    /// The private key of a version, unsealed and parsed once and then kept in memory: versions
    /// never change, and parsing an RSA key costs more than using it. Purging drops it.
    fn loaded_key(
        &self,
        vault: &VaultRef,
        name: &str,
        rec: &KeyVersionRecord,
    ) -> Result<Arc<KeyMaterial>, ControlError> {
        let id = seal_context(&vault.id(), name, &rec.version);
        if let Some(material) = self.key_cache.get(&id) {
            return Ok(material);
        }
        let pkcs8 = seal::open(&self.root, &id, &rec.sealed)?;
        let material = Arc::new(KeyMaterial::from_pkcs8(&pkcs8)?);
        self.key_cache.insert(id, material.clone());
        Ok(material)
    }

    fn purge(&self, vault: &str, name: &str) -> Result<(), ControlError> {
        self.store.purge_key(vault, name)?;
        self.key_cache.forget(&seal_context(vault, name, ""));
        Ok(())
    }

    /// Removes every key of a vault (when the vault is purged).
    pub(crate) fn purge_vault_keys(&self, vault: &str) -> Result<(), ControlError> {
        let vault = vault.to_ascii_lowercase();
        let mut names: Vec<String> = self
            .store
            .latest_key_versions(&vault)?
            .into_iter()
            .map(|r| r.name)
            .collect();
        names.extend(
            self.store
                .deleted_keys(&vault)?
                .iter()
                .filter_map(|d| d["name"].as_str().map(str::to_ascii_lowercase)),
        );
        for name in names {
            self.purge(&vault, &name)?;
        }
        Ok(())
    }
}

fn hsm_unavailable() -> ControlError {
    bad(
        "HSM-protected keys (RSA-HSM, EC-HSM, --protection hsm) need a PKCS#11 HSM, and this sealdisk deployment has none configured. sealdisk never stores an HSM key in software; create a software key (kty RSA or EC) instead.",
    )
}

/// Generates key material for a create request; returns the canonical `kty` and the material.
fn generate(
    kty: &str,
    size: Option<u32>,
    crv: Option<&str>,
    exponent: Option<u32>,
) -> Result<(&'static str, KeyMaterial), ControlError> {
    match kty {
        "RSA" => {
            if exponent.is_some_and(|e| e != 65537) {
                return Err(bad("Only the public exponent 65537 is supported."));
            }
            Ok((
                "RSA",
                KeyMaterial::generate_rsa(size.unwrap_or(2048) as usize)?,
            ))
        }
        "EC" => {
            let crv = crv.unwrap_or("P-256");
            let curve: Curve = crv.parse()?;
            Ok(("EC", KeyMaterial::generate_ec(curve)?))
        }
        "RSA-HSM" | "EC-HSM" => Err(hsm_unavailable()),
        "oct" | "oct-HSM" => Err(bad(
            "Symmetric (oct) keys are only available in Managed HSM; create an RSA or EC key.",
        )),
        other => Err(bad(format!(
            "Key type '{other}' is not supported; use RSA or EC."
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::Fixture;
    use crate::vaults::VaultInput;

    impl Fixture {
        fn vault(&self, name: &str, props: Value) -> VaultRef {
            let input: VaultInput =
                serde_json::from_value(json!({"location": "eastus", "properties": props})).unwrap();
            let (doc, _) = self.plane.put_vault(&self.sub, "g", name, input).unwrap();
            VaultRef {
                name: name.into(),
                doc,
                url: format!("https://{name}.vault.localhost:1"),
            }
        }
    }

    fn create(kty: &str, size: Option<u32>) -> CreateKeyInput {
        CreateKeyInput {
            kty: kty.into(),
            key_size: size,
            crv: None,
            public_exponent: None,
            key_ops: None,
            attributes: None,
            tags: None,
        }
    }

    fn op<'a>(op: CryptoOp, alg: &'a str, value: &'a [u8]) -> CryptoRequest<'a> {
        CryptoRequest {
            op,
            alg,
            value,
            signature: None,
        }
    }

    fn bytes(r: CryptoResult) -> Vec<u8> {
        match r {
            CryptoResult::Bytes { value, .. } => value.to_vec(),
            CryptoResult::Verified(_) => panic!("expected bytes"),
        }
    }

    /// Key operations remember their store reads; a change to the store, by whatever path,
    /// is seen by the next operation.
    #[test]
    fn remembered_reads_follow_every_store_change() {
        let f = Fixture::new();
        let v = f.vault("kv1", json!({}));
        let kid = f
            .plane
            .create_key(&v, "k", create("RSA", Some(2048)))
            .unwrap()["key"]["kid"]
            .as_str()
            .unwrap()
            .to_string();
        let version = kid.rsplit('/').next().unwrap();
        let wrap = || {
            f.plane
                .key_operation(&v, "k", None, op(CryptoOp::WrapKey, "RSA-OAEP", b"d"))
        };
        assert!(wrap().is_ok());
        assert!(wrap().is_ok());
        // Straight to the store, around every method of the control plane.
        let mut body = f.plane.key_record(&v, "k", None).unwrap().body;
        body["attributes"]["enabled"] = json!(false);
        f.plane
            .store
            .update_key_version("kv1", "k", version, &body)
            .unwrap();
        assert!(matches!(wrap(), Err(ControlError::KeyDisabled { .. })));
        f.plane
            .store
            .put_deleted_key("kv1", "k", &json!({"name": "k"}))
            .unwrap();
        assert!(matches!(wrap(), Err(ControlError::KeyNotFound(_))));
        assert!(f.plane.store.remove_deleted_key("kv1", "k").unwrap());
        assert!(matches!(wrap(), Err(ControlError::KeyDisabled { .. })));
        assert!(f.plane.vault_by_name("KV1").unwrap().is_some());
        f.plane
            .store
            .delete_resource(v.doc["id"].as_str().unwrap())
            .unwrap();
        assert!(f.plane.vault_by_name("kv1").unwrap().is_none());
    }

    #[test]
    fn wrap_unwrap_disable_expire_and_key_ops() {
        let f = Fixture::new();
        let v = f.vault("kv1", json!({}));
        let bundle = f
            .plane
            .create_key(&v, "k", create("RSA", Some(2048)))
            .unwrap();
        let kid = bundle["key"]["kid"].as_str().unwrap();
        assert!(kid.starts_with("https://kv1.vault.localhost:1/keys/k/"));
        assert_eq!(kid.rsplit('/').next().unwrap().len(), 32);
        assert!(bundle["key"].get("d").is_none());
        assert_eq!(
            bundle["attributes"]["recoveryLevel"],
            "Recoverable+Purgeable"
        );
        let wrapped = bytes(
            f.plane
                .key_operation(&v, "k", None, op(CryptoOp::WrapKey, "RSA-OAEP-256", b"dek"))
                .unwrap(),
        );
        let plain = bytes(
            f.plane
                .key_operation(
                    &v,
                    "K",
                    None,
                    op(CryptoOp::UnwrapKey, "RSA-OAEP-256", &wrapped),
                )
                .unwrap(),
        );
        assert_eq!(plain, b"dek");

        let disable = UpdateKeyInput {
            attributes: Some(KeyAttributesInput {
                enabled: Some(false),
                ..Default::default()
            }),
            ..Default::default()
        };
        f.plane.update_key(&v, "k", None, disable).unwrap();
        assert!(matches!(
            f.plane.key_operation(
                &v,
                "k",
                None,
                op(CryptoOp::UnwrapKey, "RSA-OAEP-256", &wrapped)
            ),
            Err(ControlError::KeyDisabled { .. })
        ));
        let expire = UpdateKeyInput {
            attributes: Some(KeyAttributesInput {
                enabled: Some(true),
                exp: Some(f.plane.now() + 10),
                nbf: None,
            }),
            ..Default::default()
        };
        f.plane.update_key(&v, "k", None, expire).unwrap();
        f.plane
            .key_operation(
                &v,
                "k",
                None,
                op(CryptoOp::UnwrapKey, "RSA-OAEP-256", &wrapped),
            )
            .unwrap();
        f.advance(11);
        assert!(matches!(
            f.plane.key_operation(
                &v,
                "k",
                None,
                op(CryptoOp::UnwrapKey, "RSA-OAEP-256", &wrapped)
            ),
            Err(ControlError::KeyDisabled { .. })
        ));

        let mut only_wrap = create("RSA", None);
        only_wrap.key_ops = Some(vec!["wrapkey".into()]);
        f.plane.create_key(&v, "w", only_wrap).unwrap();
        let wrapped = bytes(
            f.plane
                .key_operation(&v, "w", None, op(CryptoOp::WrapKey, "RSA-OAEP", b"x"))
                .unwrap(),
        );
        assert!(matches!(
            f.plane
                .key_operation(&v, "w", None, op(CryptoOp::UnwrapKey, "RSA-OAEP", &wrapped)),
            Err(ControlError::KeyOperationNotPermitted { .. })
        ));
        assert!(
            matches!(f.plane.create_key(&v, "h", create("RSA-HSM", None)), Err(ControlError::KeyBadParameter(m)) if m.contains("HSM"))
        );
        assert!(matches!(
            f.plane.create_key(&v, "s", create("RSA", Some(1024))),
            Err(ControlError::Material(_))
        ));
    }

    #[test]
    fn soft_delete_recover_purge_and_retention() {
        let f = Fixture::new();
        let plain = f.vault("plain", json!({"softDeleteRetentionInDays": 7}));
        let protected = f.vault("prot", json!({"enablePurgeProtection": true}));
        for v in [&plain, &protected] {
            f.plane.create_key(v, "k", create("EC", None)).unwrap();
            let deleted = f.plane.delete_key(v, "k").unwrap();
            assert!(
                deleted["recoveryId"]
                    .as_str()
                    .unwrap()
                    .ends_with("/deletedkeys/k")
            );
            assert!(matches!(
                f.plane.get_key(v, "k", None),
                Err(ControlError::KeyNotFound(_))
            ));
            assert!(f.plane.list_keys(v).unwrap().is_empty());
            assert!(matches!(
                f.plane.create_key(v, "k", create("EC", None)),
                Err(ControlError::KeyDeletedButRecoverable(_))
            ));
            assert_eq!(f.plane.deleted_keys(v).unwrap().len(), 1);
        }
        f.plane.recover_key(&plain, "k").unwrap();
        f.plane.get_key(&plain, "k", None).unwrap();
        assert!(matches!(
            f.plane.purge_deleted_key(&protected, "k"),
            Err(ControlError::KeyPurgeProtected(_))
        ));
        f.plane.delete_key(&plain, "k").unwrap();
        f.plane.purge_deleted_key(&plain, "k").unwrap();
        assert!(matches!(
            f.plane.deleted_key(&plain, "k"),
            Err(ControlError::DeletedKeyNotFound(_))
        ));
        f.plane.create_key(&plain, "k", create("EC", None)).unwrap();
        f.plane.delete_key(&plain, "k").unwrap();
        f.advance(7 * DAY - 1);
        assert!(
            f.plane.deleted_key(&plain, "k").is_ok(),
            "recoverable until scheduledPurgeDate"
        );
        f.advance(1);
        assert!(
            f.plane.deleted_keys(&plain).unwrap().is_empty(),
            "purged at scheduledPurgeDate"
        );
        f.plane.create_key(&plain, "k", create("EC", None)).unwrap();
        assert!(
            f.plane.deleted_key(&protected, "k").is_ok(),
            "90-day retention still running"
        );
        f.advance(83 * DAY);
        assert!(
            f.plane.deleted_keys(&protected).unwrap().is_empty(),
            "purged after its 90 days even under purge protection"
        );
    }

    #[test]
    fn backup_restore_and_sealed_at_rest() {
        let f = Fixture::new();
        let a = f.vault("a-vault", json!({}));
        let b = f.vault("b-vault", json!({}));
        let original = f
            .plane
            .create_key(&a, "k", create("RSA", Some(2048)))
            .unwrap();
        let wrapped = bytes(
            f.plane
                .key_operation(
                    &a,
                    "k",
                    None,
                    op(CryptoOp::WrapKey, "RSA-OAEP-256", b"secret"),
                )
                .unwrap(),
        );
        let blob = f.plane.backup_key(&a, "k").unwrap();
        let restored = f.plane.restore_key(&b, &blob).unwrap();
        assert_eq!(restored["key"]["n"], original["key"]["n"]);
        assert_eq!(
            bytes(
                f.plane
                    .key_operation(
                        &b,
                        "k",
                        None,
                        op(CryptoOp::UnwrapKey, "RSA-OAEP-256", &wrapped)
                    )
                    .unwrap()
            ),
            b"secret"
        );
        assert!(matches!(
            f.plane.restore_key(&b, &blob),
            Err(ControlError::KeyAlreadyExists(_))
        ));
        let mut damaged = blob.clone().into_bytes();
        damaged[40] = if damaged[40] == b'A' { b'B' } else { b'A' };
        let c = f.vault("c-vault", json!({}));
        assert!(matches!(
            f.plane
                .restore_key(&c, &String::from_utf8(damaged).unwrap()),
            Err(ControlError::InvalidBackup)
        ));
        let other = Fixture::new();
        let d = other.vault("d-vault", json!({}));
        assert!(
            matches!(
                other.plane.restore_key(&d, &blob),
                Err(ControlError::InvalidBackup)
            ),
            "another deployment's root key"
        );
        let rec = f
            .plane
            .store
            .latest_key_version("a-vault", "k")
            .unwrap()
            .unwrap();
        assert!(
            KeyMaterial::from_pkcs8(&rec.sealed).is_err(),
            "stored sealed, not as PKCS#8"
        );
    }

    #[test]
    fn rotation_policy_drives_scheduled_rotation() {
        let f = Fixture::new();
        let v = f.vault("rot", json!({}));
        f.plane
            .create_key(&v, "k", create("RSA", Some(2048)))
            .unwrap();
        let short = json!({"lifetimeActions": [], "attributes": {"expiryTime": "P27D"}});
        assert!(matches!(
            f.plane.set_rotation_policy(&v, "k", short),
            Err(ControlError::KeyBadParameter(_))
        ));
        let policy = json!({
            "lifetimeActions": [{"trigger": {"timeAfterCreate": "P30D"}, "action": {"type": "rotate"}}],
            "attributes": {"expiryTime": "P90D"}
        });
        let stored = f.plane.set_rotation_policy(&v, "k", policy).unwrap();
        assert_eq!(stored["lifetimeActions"][0]["action"]["type"], "Rotate");
        let url = |name: &str| format!("https://{name}.vault.localhost:1");
        assert!(f.plane.run_due_rotations(url).unwrap().is_empty());
        f.advance(30 * DAY);
        let done = f.plane.run_due_rotations(url).unwrap();
        assert_eq!(done.len(), 1);
        let versions = f.plane.key_versions(&v, "k").unwrap();
        assert_eq!(versions.len(), 2);
        let latest = f.plane.get_key(&v, "k", None).unwrap();
        assert_eq!(latest["attributes"]["exp"], json!(f.plane.now() + 90 * DAY));
        assert!(
            f.plane.run_due_rotations(url).unwrap().is_empty(),
            "the new version is not due yet"
        );
        let manual = f.plane.rotate_key(&v, "k").unwrap();
        assert_eq!(
            manual["key"]["n"].as_str().unwrap().len(),
            latest["key"]["n"].as_str().unwrap().len()
        );
    }

    #[test]
    fn iso_durations() {
        assert_eq!(parse_duration("P90D"), Some(90 * DAY));
        assert_eq!(parse_duration("P1Y10D"), Some(375 * DAY));
        assert_eq!(parse_duration("PT48H"), Some(48 * 3600));
        assert_eq!(parse_duration("P3M"), Some(90 * DAY));
        assert_eq!(parse_duration("P1DT1M"), Some(DAY + 60));
        assert_eq!(parse_duration("P"), None);
        assert_eq!(parse_duration("90D"), None);
        assert_eq!(parse_duration("P9X"), None);
    }
}
