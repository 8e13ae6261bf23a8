//! Microsoft.Compute/disks: managed disk resources, their volumes, and time-limited access
//! grants that export a disk over NBD.
//!
//! A grant (`beginGetAccess`) creates an export name of 192 random bits: the capability an NBD
//! client presents. Grants are persisted in the disk document (`internal.grants`) so they
//! survive a restart, and live in memory with a cancellation token that closes every NBD
//! connection to the export when the grant ends (revoked, expired or the disk deleted).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};

use base64::Engine;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use blockstore::{Disk, WrapLayer, XtsKey};

use crate::deployment::rfc3339;
use crate::encryption_sets::{
    CUSTOMER_KEY, CUSTOMER_WRAP_ALGORITHM, KeyUrl, PLATFORM_AND_CUSTOMER_KEYS,
};
use crate::keys::CryptoOp;
use crate::snapshots::SNAPSHOT_TYPE;
use crate::store::{ResourceQuery, ResourceRecord};
use crate::volumes::{PLATFORM_KEY_ID, Volumes};
use crate::{ControlError, ControlPlane};

pub const DISK_TYPE: &str = "Microsoft.Compute/disks";
const GIB: u64 = 1 << 30;
/// Azure's largest managed disk.
const MAX_DISK_GB: u64 = 32_767;
/// Longest access grant: Azure's limit of 5 days... and then some; ten years bounds arithmetic.
const MAX_GRANT_SECS: i64 = 10 * 365 * 24 * 3600;

/// Disk SKUs and the tier Azure reports for each.
const SKUS: &[(&str, &str)] = &[
    ("Standard_LRS", "Standard"),
    ("Premium_LRS", "Premium"),
    ("StandardSSD_LRS", "StandardSSD"),
    ("UltraSSD_LRS", "Ultra"),
    ("Premium_ZRS", "Premium"),
    ("StandardSSD_ZRS", "StandardSSD"),
    ("PremiumV2_LRS", "PremiumV2"),
];

pub const PLATFORM_KEY: &str = "EncryptionAtRestWithPlatformKey";
const ENCRYPTION_TYPES: &[&str] = &[PLATFORM_KEY, CUSTOMER_KEY, PLATFORM_AND_CUSTOMER_KEYS];

/// A disk PUT body (fields sealdisk acts on).
#[derive(Debug, Deserialize)]
pub struct DiskInput {
    pub location: String,
    #[serde(default)]
    pub tags: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub sku: Option<SkuInput>,
    #[serde(default)]
    pub properties: DiskInputProperties,
}

#[derive(Debug, Deserialize)]
pub struct SkuInput {
    pub name: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DiskInputProperties {
    pub creation_data: Option<CreationData>,
    #[serde(rename = "diskSizeGB")]
    pub disk_size_gb: Option<i64>,
    pub encryption: Option<EncryptionInput>,
    pub os_type: Option<String>,
    pub hyper_v_generation: Option<String>,
    pub network_access_policy: Option<String>,
    pub public_network_access: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreationData {
    pub create_option: String,
    #[serde(default)]
    pub source_resource_id: Option<String>,
    #[serde(default)]
    pub image_reference: Option<ImageReference>,
}

#[derive(Debug, Deserialize)]
pub struct ImageReference {
    pub id: Option<String>,
    #[serde(default)]
    pub lun: Option<u64>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EncryptionInput {
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub disk_encryption_set_id: Option<String>,
}

/// A disk PATCH body.
#[derive(Debug, Default, Deserialize)]
pub struct DiskPatch {
    #[serde(default)]
    pub tags: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub sku: Option<SkuInput>,
    #[serde(default)]
    pub properties: DiskInputProperties,
}

/// The body of `beginGetAccess`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GrantAccessData {
    pub access: String,
    pub duration_in_seconds: Option<i64>,
}

/// A live grant: what an NBD export name opens.
#[derive(Debug, Clone)]
struct LiveGrant {
    disk_resource_id: String,
    /// The VM whose running state this export serves; `None` for an access grant.
    vm: Option<String>,
    read_only: bool,
    expires_at: i64,
    revoked: CancellationToken,
}

/// What an export name opens, for the NBD catalog.
#[derive(Debug, Clone)]
pub struct OpenExport {
    pub disk: Arc<blockstore::Disk>,
    pub read_only: bool,
    pub revoked: CancellationToken,
}

/// The data plane attached to a control plane: volumes, the NBD endpoint and live grants.
#[derive(Debug)]
pub struct DataPlane {
    volumes: Volumes,
    /// The Key Vault audit log: wraps and unwraps by disk encryption set identities go here.
    audit: Option<Arc<keyvault::audit::AuditLog>>,
    /// `nbds://HOST:PORT` (or `nbd://` with TLS off); `None` when no NBD listener runs.
    nbd_uri: Option<String>,
    grants: Mutex<HashMap<String, LiveGrant>>,
}

impl DataPlane {
    pub fn new(
        volumes: Volumes,
        nbd_uri: Option<String>,
        audit: Option<Arc<keyvault::audit::AuditLog>>,
    ) -> Self {
        Self {
            volumes,
            audit,
            nbd_uri,
            grants: Mutex::default(),
        }
    }

    pub fn volumes(&self) -> &Volumes {
        &self.volumes
    }

    fn grants(&self) -> std::sync::MutexGuard<'_, HashMap<String, LiveGrant>> {
        self.grants.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn sku_of(name: Option<&str>) -> Result<(&'static str, &'static str), ControlError> {
    let name = name.unwrap_or("Standard_LRS");
    SKUS.iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .copied()
        .ok_or_else(|| ControlError::InvalidParameter {
            name: "sku.name".into(),
            reason: format!(
                "'{name}' is not a disk SKU; valid: {}",
                SKUS.iter().map(|s| s.0).collect::<Vec<_>>().join(", ")
            ),
        })
}

/// Whether `name` is a valid disk name: 1-80 characters of letters, digits, `_`, `-`, `.`,
/// starting with a letter or digit and ending with a letter, digit or `_`.
pub fn valid_disk_name(name: &str) -> bool {
    let b = name.as_bytes();
    (1..=80).contains(&b.len())
        && b[0].is_ascii_alphanumeric()
        && (b[b.len() - 1].is_ascii_alphanumeric() || b[b.len() - 1] == b'_')
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-' | b'.'))
}

fn size_gb(value: Option<i64>) -> Result<Option<u64>, ControlError> {
    match value {
        None => Ok(None),
        Some(gb) if gb >= 1 && (gb as u64) <= MAX_DISK_GB => Ok(Some(gb as u64)),
        Some(gb) => Err(ControlError::InvalidParameter {
            name: "diskSizeGB".into(),
            reason: format!("{gb} is out of range; a disk is 1 to {MAX_DISK_GB} GiB"),
        }),
    }
}

/// A disk's encryption: its type and, for customer keys, its disk encryption set's id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskEncryption {
    pub kind: &'static str,
    pub set: Option<String>,
}

impl DiskEncryption {
    fn platform() -> Self {
        Self {
            kind: PLATFORM_KEY,
            set: None,
        }
    }

    pub(crate) fn of(doc: &Value) -> Self {
        let enc = &doc["properties"]["encryption"];
        Self {
            kind: ENCRYPTION_TYPES
                .iter()
                .find(|t| enc["type"].as_str() == Some(**t))
                .copied()
                .unwrap_or(PLATFORM_KEY),
            set: enc["diskEncryptionSetId"].as_str().map(str::to_string),
        }
    }

    pub(crate) fn to_json(&self) -> Value {
        match &self.set {
            Some(set) => json!({"type": self.kind, "diskEncryptionSetId": set}),
            None => json!({"type": self.kind}),
        }
    }

    /// The volume's layers, innermost first: the customer key's layer is applied to the
    /// plaintext, the platform key's layer (double encryption) to its ciphertext.
    pub(crate) fn layers(&self) -> Vec<LayerKey> {
        match self.kind {
            PLATFORM_KEY => vec![LayerKey::Platform],
            PLATFORM_AND_CUSTOMER_KEYS => vec![LayerKey::Customer, LayerKey::Platform],
            _ => vec![LayerKey::Customer],
        }
    }
}

/// Why a disk's customer key cannot be used: the set (unless it was deleted), the key URL of
/// the layer concerned, and the reason.
type KeyProblem = (Option<Value>, Option<String>, String);

/// How a disk moves to another encryption.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EncryptionChange {
    /// Same layers: the DEKs were re-wrapped, no data touched.
    Rewrapped,
    /// A layer comes or goes: the data is re-encrypted into a new volume.
    Reencrypt,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LayerKey {
    Platform,
    Customer,
}

/// Parses the `encryption` of a request (no request: platform key).
pub(crate) fn encryption_of(
    input: Option<&EncryptionInput>,
) -> Result<DiskEncryption, ControlError> {
    let Some(enc) = input else {
        return Ok(DiskEncryption::platform());
    };
    let kind = match &enc.kind {
        None if enc.disk_encryption_set_id.is_some() => CUSTOMER_KEY,
        None => PLATFORM_KEY,
        Some(k) => ENCRYPTION_TYPES
            .iter()
            .find(|t| t.eq_ignore_ascii_case(k))
            .copied()
            .ok_or_else(|| ControlError::InvalidParameter {
                name: "encryption.type".into(),
                reason: format!("'{k}' must be one of {}", ENCRYPTION_TYPES.join(", ")),
            })?,
    };
    match (kind, &enc.disk_encryption_set_id) {
        (PLATFORM_KEY, Some(_)) => Err(ControlError::InvalidParameter {
            name: "encryption.diskEncryptionSetId".into(),
            reason: "a disk encryption set cannot be given with EncryptionAtRestWithPlatformKey; use EncryptionAtRestWithCustomerKey or EncryptionAtRestWithPlatformAndCustomerKeys".into(),
        }),
        (PLATFORM_KEY, None) => Ok(DiskEncryption::platform()),
        (kind, None) => Err(ControlError::InvalidParameter {
            name: "encryption.diskEncryptionSetId".into(),
            reason: format!("{kind} needs a disk encryption set: give its resource id (--disk-encryption-set)"),
        }),
        (kind, Some(set)) => Ok(DiskEncryption {
            kind,
            set: Some(set.clone()),
        }),
    }
}

fn performance(sku: &str, size_gb: u64) -> (u64, u64) {
    match sku {
        "UltraSSD_LRS" | "PremiumV2_LRS" => (3000, 125),
        "Premium_LRS" | "Premium_ZRS" => match size_gb {
            0..=32 => (120, 25),
            33..=64 => (240, 50),
            65..=128 => (500, 100),
            129..=256 => (1100, 125),
            257..=512 => (2300, 150),
            _ => (5000, 200),
        },
        _ => (500, 60),
    }
}

fn premium_tier(size_gb: u64) -> &'static str {
    match size_gb {
        0..=4 => "P1",
        5..=8 => "P2",
        9..=16 => "P3",
        17..=32 => "P4",
        33..=64 => "P6",
        65..=128 => "P10",
        129..=256 => "P15",
        257..=512 => "P20",
        513..=1024 => "P30",
        1025..=2048 => "P40",
        2049..=4096 => "P50",
        4097..=8192 => "P60",
        8193..=16384 => "P70",
        _ => "P80",
    }
}

fn disk_state(doc: &Value) -> &str {
    doc["properties"]["diskState"]
        .as_str()
        .unwrap_or("Unattached")
}

pub(crate) fn volume_of(doc: &Value) -> Result<Uuid, ControlError> {
    doc["properties"]["uniqueId"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| ControlError::InvalidRequestContent("disk document without uniqueId".into()))
}

impl ControlPlane {
    /// Attaches the data plane (volumes and the NBD endpoint) and loads persisted grants.
    pub fn with_data_plane(mut self, data: DataPlane) -> Result<Self, ControlError> {
        let mut records = self.store.resources(&ResourceQuery {
            resource_type: Some(DISK_TYPE),
            ..Default::default()
        })?;
        records.extend(self.store.resources(&ResourceQuery {
            resource_type: Some(SNAPSHOT_TYPE),
            ..Default::default()
        })?);
        {
            let mut grants = data.grants();
            for r in records {
                for g in r.body["internal"]["grants"]
                    .as_array()
                    .into_iter()
                    .flatten()
                {
                    if let (Some(export), Some(expires_at)) =
                        (g["export"].as_str(), g["expiresAt"].as_i64())
                    {
                        grants.insert(
                            export.to_string(),
                            LiveGrant {
                                disk_resource_id: r.id.clone(),
                                vm: None,
                                read_only: g["access"] == "Read",
                                expires_at,
                                revoked: CancellationToken::new(),
                            },
                        );
                    }
                }
            }
        }
        self.data = Some(Arc::new(data));
        Ok(self)
    }

    /// Appends an operation the deployment did on its own behalf (e.g. a disk encryption set's
    /// wrap) to the audit log; fails closed when the log refuses it.
    pub(crate) fn audit_internal(
        &self,
        record: keyvault::audit::AuditRecord,
    ) -> Result<(), ControlError> {
        match self.data.as_ref().and_then(|d| d.audit.as_ref()) {
            Some(log) => log
                .append(record)
                .map(|_| ())
                .map_err(|e| ControlError::AuditUnavailable(e.to_string())),
            None => Ok(()),
        }
    }

    /// Re-wraps the customer-key layers of every disk, snapshot and image volume of set
    /// `des_id` under the set's active key (rotation): no data is rewritten and no volume
    /// needs opening. Each header update is atomic, and every layer names the key version that
    /// wraps it, so a volume stopped half-way reads with the old or the new wrap; running this
    /// again finishes the job. Volumes are re-wrapped by a few threads at once, so that key
    /// operations, audit appends and header syncs overlap.
    pub(crate) fn rewrap_des_volumes(&self, des_id: &str) -> Result<usize, ControlError> {
        const WORKERS: usize = 8;
        let set = self.des_by_id(des_id)?;
        let key_url = set["properties"]["activeKey"]["keyUrl"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let docs: Vec<Value> = self
            .des_volumes(des_id)?
            .into_iter()
            .map(|(_, doc)| doc)
            .collect();
        let next = std::sync::atomic::AtomicUsize::new(0);
        let done = std::sync::atomic::AtomicUsize::new(0);
        let failure: std::sync::Mutex<Option<ControlError>> = std::sync::Mutex::new(None);
        std::thread::scope(|scope| {
            for _ in 0..WORKERS.min(docs.len()) {
                scope.spawn(|| {
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some(doc) = docs.get(i) else { break };
                        match self.rewrap_volume(doc, &set, &key_url) {
                            Ok(true) => {
                                done.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            }
                            Ok(false) => {}
                            Err(e) => {
                                failure
                                    .lock()
                                    .unwrap_or_else(PoisonError::into_inner)
                                    .get_or_insert(e);
                            }
                        }
                    }
                });
            }
        });
        match failure.into_inner().unwrap_or_else(PoisonError::into_inner) {
            Some(e) => Err(e),
            None => Ok(done.into_inner()),
        }
    }

    /// Re-wraps the stale customer-key layers of one volume; `false` if none was stale.
    fn rewrap_volume(&self, doc: &Value, set: &Value, key_url: &str) -> Result<bool, ControlError> {
        let id = volume_of(doc)?;
        let volumes = &self.data()?.volumes;
        let header = volumes.header(id)?;
        let stale =
            |l: &WrapLayer| l.key_id != PLATFORM_KEY_ID && !KeyUrl::same_key(&l.key_id, key_url);
        if !header.layers.iter().any(stale) {
            return Ok(false);
        }
        let encryption = DiskEncryption::of(doc);
        let mut layers = Vec::with_capacity(header.layers.len());
        for (layer, old) in header.layers.iter().enumerate() {
            if !stale(old) {
                layers.push(old.clone());
                continue;
            }
            let dek = self.unwrap_layer(id, doc, layer, old)?;
            layers.push(self.wrap_layer(id, &encryption, Some(set), layer, &dek)?);
        }
        volumes.rewrap(id, layers)?;
        Ok(true)
    }

    /// Finishes key changes a stop interrupted: disks' moves to another encryption are
    /// settled, then every set's volumes are brought to its active key. Returns how many
    /// volumes were re-wrapped.
    pub fn finish_rotations(&self) -> Result<usize, ControlError> {
        self.finish_encryption_changes()?;
        let sets = self.store.resources(&ResourceQuery {
            resource_type: Some(crate::encryption_sets::DES_TYPE),
            ..Default::default()
        })?;
        let mut done = 0;
        for set in sets {
            done += self.rewrap_des_volumes(&set.id)?;
        }
        Ok(done)
    }

    pub(crate) fn data_plane(&self) -> Result<&DataPlane, ControlError> {
        self.data()
    }

    fn data(&self) -> Result<&DataPlane, ControlError> {
        self.data
            .as_deref()
            .ok_or(ControlError::DataPlaneUnavailable)
    }

    fn disk_id(&self, group: &str, name: &str) -> String {
        format!(
            "{}/resourceGroups/{group}/providers/{DISK_TYPE}/{name}",
            self.subscription_scope()
        )
    }

    fn disk_record(
        &self,
        subscription: &str,
        group: &str,
        name: &str,
    ) -> Result<ResourceRecord, ControlError> {
        self.typed_record(
            subscription,
            group,
            self.disk_id(group, name),
            DISK_TYPE,
            name,
        )
    }

    /// A disk document as clients see it.
    pub fn disk(&self, subscription: &str, group: &str, name: &str) -> Result<Value, ControlError> {
        Ok(Self::present(
            self.disk_record(subscription, group, name)?.body,
        ))
    }

    /// Disks of a resource group, or of the subscription.
    pub fn disks(
        &self,
        subscription: &str,
        group: Option<&str>,
    ) -> Result<Vec<Value>, ControlError> {
        self.typed_list(subscription, group, DISK_TYPE)
    }

    /// Checks that a disk may use `encryption`: its set exists, has the matching type and is
    /// in the disk's region.
    pub(crate) fn check_encryption(
        &self,
        encryption: &DiskEncryption,
        location: &str,
    ) -> Result<Option<Value>, ControlError> {
        let Some(set_id) = &encryption.set else {
            return Ok(None);
        };
        let set = self
            .des_by_id(set_id)
            .map_err(|_| ControlError::InvalidParameter {
                name: "encryption.diskEncryptionSetId".into(),
                reason: format!("the disk encryption set '{set_id}' does not exist"),
            })?;
        let set_type = set["properties"]["encryptionType"]
            .as_str()
            .unwrap_or(CUSTOMER_KEY);
        if set_type != encryption.kind {
            return Err(ControlError::InvalidParameter {
                name: "encryption.type".into(),
                reason: format!(
                    "the disk encryption set '{}' is of type {set_type}; a disk of type {} needs a set of the same type",
                    set["name"].as_str().unwrap_or_default(),
                    encryption.kind
                ),
            });
        }
        let set_location = set["location"].as_str().unwrap_or_default();
        if !set_location.eq_ignore_ascii_case(location) {
            return Err(ControlError::InvalidParameter {
                name: "encryption.diskEncryptionSetId".into(),
                reason: format!(
                    "the disk encryption set is in '{set_location}'; the disk is in '{location}'"
                ),
            });
        }
        Ok(Some(set))
    }

    /// Wraps layer `layer` of volume `id` (a fresh DEK) for `encryption`.
    pub(crate) fn wrap_layer(
        &self,
        id: Uuid,
        encryption: &DiskEncryption,
        set: Option<&Value>,
        layer: usize,
        dek: &XtsKey,
    ) -> Result<WrapLayer, ControlError> {
        match (encryption.layers().get(layer), set) {
            (Some(LayerKey::Customer), Some(set)) => {
                let key_url = set["properties"]["activeKey"]["keyUrl"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                let wrapped =
                    self.des_key_operation(set, &key_url, CryptoOp::WrapKey, dek.expose_bytes())?;
                Ok(WrapLayer {
                    key_id: key_url,
                    algorithm: CUSTOMER_WRAP_ALGORITHM.to_string(),
                    wrapped_key: wrapped.to_vec(),
                })
            }
            _ => self.data()?.volumes.platform_wrap(id, layer, dek),
        }
    }

    /// The DEK of one layer of volume `id`: the platform key's, or the customer key's through
    /// the disk's encryption set and its identity.
    fn unwrap_layer(
        &self,
        id: Uuid,
        disk: &Value,
        layer: usize,
        wrap: &WrapLayer,
    ) -> Result<XtsKey, ControlError> {
        if wrap.key_id == PLATFORM_KEY_ID {
            return self.data()?.volumes.platform_unwrap(id, layer, wrap);
        }
        let encryption = DiskEncryption::of(disk);
        let set = match &encryption.set {
            Some(set_id) => self.des_by_id(set_id)?,
            None => {
                return Err(ControlError::VolumeKeyUnavailable {
                    volume: id.to_string(),
                    key_id: wrap.key_id.clone(),
                });
            }
        };
        let dek =
            self.des_key_operation(&set, &wrap.key_id, CryptoOp::UnwrapKey, &wrap.wrapped_key)?;
        XtsKey::from_bytes(&dek).map_err(ControlError::VolumeCipher)
    }

    /// The open volume of a disk, unwrapping its DEKs if it is not open yet.
    pub(crate) fn open_volume(&self, disk: &Value) -> Result<Arc<Disk>, ControlError> {
        let id = volume_of(disk)?;
        self.data()?
            .volumes
            .open(id, &|layer, wrap| self.unwrap_layer(id, disk, layer, wrap))
    }

    /// Moves a disk to another encryption by re-wrapping its DEKs: no data is rewritten. Only
    /// while the disk is unattached (or its VM deallocated), and only between encryptions with
    /// the same number of layers.
    fn change_encryption(
        &self,
        body: &Value,
        current: &DiskEncryption,
        wanted: &DiskEncryption,
    ) -> Result<EncryptionChange, ControlError> {
        let name = body["name"].as_str().unwrap_or_default();
        let state = disk_state(body);
        if state != "Unattached" && state != "Reserved" {
            return Err(ControlError::OperationNotAllowed(format!(
                "Disk '{name}' is {state}; its encryption can change only while it is unattached or its VM is deallocated."
            )));
        }
        let location = body["location"].as_str().unwrap_or_default();
        let set = self.check_encryption(wanted, location)?;
        if wanted.layers().len() != current.layers().len() {
            // A layer comes or goes: the data is re-encrypted into a new volume in the
            // background. The keys of both sides must work before that starts.
            drop(self.open_volume(body)?);
            if let Some(set) = &set {
                let key_url = set["properties"]["activeKey"]["keyUrl"]
                    .as_str()
                    .unwrap_or_default();
                if let Some(reason) = self.des_key_problem(set, key_url)? {
                    return Err(ControlError::DiskEncryptionSetKeyUnusable {
                        set: set["name"].as_str().unwrap_or_default().to_string(),
                        reason,
                    });
                }
            }
            return Ok(EncryptionChange::Reencrypt);
        }
        let id = volume_of(body)?;
        let disk = self.open_volume(body)?;
        let header = disk.header();
        let mut layers = Vec::with_capacity(header.layers.len());
        for (layer, old) in header.layers.iter().enumerate() {
            let dek = self.unwrap_layer(id, body, layer, old)?;
            layers.push(self.wrap_layer(id, wanted, set.as_ref(), layer, &dek)?);
        }
        // The change is recorded before the header moves: after a crash between the two,
        // `finish_encryption_changes` can tell which encryption the header holds.
        let mut marked = body.clone();
        marked["internal"]["encryptionChange"] = wanted.to_json();
        self.store.put_resource(&ResourceRecord {
            id: body["id"].as_str().unwrap_or_default().to_string(),
            resource_type: DISK_TYPE.into(),
            body: marked,
        })?;
        disk.rewrap(layers).map_err(ControlError::Volume)?;
        Ok(EncryptionChange::Rewrapped)
    }

    /// Settles disks whose move to another encryption a stop interrupted (the mark
    /// `internal.encryptionChange` is still there): the document takes the new encryption if
    /// the volume's header was re-wrapped for it (a header is re-wrapped whole or not at all),
    /// and keeps the old one otherwise. Returns how many disks moved.
    pub fn finish_encryption_changes(&self) -> Result<usize, ControlError> {
        let disks = self.store.resources(&ResourceQuery {
            resource_type: Some(DISK_TYPE),
            ..Default::default()
        })?;
        let mut moved = 0;
        for mut record in disks {
            let Some(change) = record.body["internal"]
                .as_object_mut()
                .and_then(|internal| internal.remove("encryptionChange"))
            else {
                continue;
            };
            let wanted = DiskEncryption::of(&json!({"properties": {"encryption": change}}));
            let header = self.data()?.volumes.header(volume_of(&record.body)?)?;
            let done = self.header_is_for(&header.layers, &wanted)?;
            if done {
                record.body["properties"]["encryption"] = wanted.to_json();
                moved += 1;
            }
            tracing::info!(
                disk = record.id,
                moved = done,
                "settled an interrupted encryption change"
            );
            self.store.put_resource(&record)?;
        }
        Ok(moved)
    }

    /// Whether wrap layers are the ones `encryption` makes: the platform key where it has a
    /// platform layer, its set's active key where it has a customer layer.
    fn header_is_for(
        &self,
        layers: &[WrapLayer],
        encryption: &DiskEncryption,
    ) -> Result<bool, ControlError> {
        let kinds = encryption.layers();
        if kinds.len() != layers.len() {
            return Ok(false);
        }
        let set_key = match &encryption.set {
            Some(set) => Some(
                self.des_by_id(set)?["properties"]["activeKey"]["keyUrl"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            ),
            None => None,
        };
        Ok(kinds.iter().zip(layers).all(|(kind, wrap)| match kind {
            LayerKey::Platform => wrap.key_id == PLATFORM_KEY_ID,
            LayerKey::Customer => {
                wrap.key_id != PLATFORM_KEY_ID
                    && set_key
                        .as_deref()
                        .is_some_and(|k| KeyUrl::same_key(&wrap.key_id, k))
            }
        }))
    }

    /// Re-encrypts a disk into a new volume with the encryption recorded in
    /// `internal.reencrypt`, updating `completionPercent` as it goes; then the disk switches
    /// to the new volume and the old one is destroyed. Runs on its own thread.
    fn spawn_reencrypt(&self, disk_id: String) {
        let plane = self.clone();
        std::thread::spawn(move || {
            if let Err(e) = plane.reencrypt(&disk_id) {
                tracing::error!(disk = disk_id, error = %e, "re-encrypting a disk failed");
                if let Ok(Some(mut record)) = plane.store.resource(&disk_id) {
                    record.body["properties"]["provisioningState"] = json!("Failed");
                    if let Some(internal) = record.body["internal"].as_object_mut() {
                        internal.remove("reencrypt");
                    }
                    let _ = plane.store.put_resource(&record);
                }
            }
        });
    }

    fn reencrypt(&self, disk_id: &str) -> Result<(), ControlError> {
        let data = self.data()?;
        let mut record = self.store.resource(disk_id)?.ok_or_else(|| {
            ControlError::InvalidRequestContent(format!("disk {disk_id} vanished"))
        })?;
        // A volume left by an interrupted attempt is discarded; the source was never written.
        if let Some(stale) = record.body["internal"]["reencrypt"]["volume"]
            .as_str()
            .and_then(|v| v.parse::<Uuid>().ok())
        {
            data.volumes.destroy(stale)?;
        }
        let target = json!({"properties": {"encryption": record.body["internal"]["reencrypt"]["encryption"].clone()}});
        let wanted = DiskEncryption::of(&target);
        let location = record.body["location"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let set = self.check_encryption(&wanted, &location)?;
        let old_id = volume_of(&record.body)?;
        let new_id = Uuid::new_v4();
        record.body["internal"]["reencrypt"]["volume"] = json!(new_id.to_string());
        self.store.put_resource(&record)?;
        let size = record.body["properties"]["diskSizeBytes"]
            .as_u64()
            .unwrap_or(0);
        let from = self.open_volume(&record.body)?;
        let to = data
            .volumes
            .create(new_id, size, wanted.layers().len(), &|layer, dek| {
                self.wrap_layer(new_id, &wanted, set.as_ref(), layer, dek)
            })?;
        let mut last = 0;
        Volumes::copy_with_progress(&from, &to, &mut |done, total| {
            let percent = (done * 100).checked_div(total).unwrap_or(100);
            if percent >= last + 5 && percent < 100 {
                last = percent;
                if let Ok(Some(mut r)) = self.store.resource(disk_id) {
                    r.body["properties"]["completionPercent"] = json!(percent);
                    let _ = self.store.put_resource(&r);
                }
            }
        })?;
        drop((from, to));
        let mut record = self.store.resource(disk_id)?.ok_or_else(|| {
            ControlError::InvalidRequestContent(format!("disk {disk_id} vanished"))
        })?;
        record.body["properties"]["uniqueId"] = json!(new_id.to_string());
        record.body["properties"]["encryption"] = wanted.to_json();
        record.body["properties"]["provisioningState"] = json!("Succeeded");
        record.body["properties"]["completionPercent"] = json!(100);
        if let Some(internal) = record.body["internal"].as_object_mut() {
            internal.remove("reencrypt");
        }
        self.store.put_resource(&record)?;
        data.volumes.destroy(old_id)?;
        tracing::info!(
            disk = disk_id,
            encryption = wanted.kind,
            "disk re-encrypted"
        );
        Ok(())
    }

    /// Restarts re-encryptions a stop interrupted. Returns how many.
    pub fn resume_reencryptions(&self) -> Result<usize, ControlError> {
        let disks = self.store.resources(&ResourceQuery {
            resource_type: Some(DISK_TYPE),
            ..Default::default()
        })?;
        let mut n = 0;
        for d in disks {
            if d.body["internal"]["reencrypt"].is_object() {
                self.spawn_reencrypt(d.id);
                n += 1;
            }
        }
        Ok(n)
    }

    /// Refuses changes to a disk that is being re-encrypted.
    fn refuse_while_updating(&self, body: &Value) -> Result<(), ControlError> {
        if body["properties"]["provisioningState"] == "Updating" {
            return Err(ControlError::OperationNotAllowed(format!(
                "Disk '{}' is being re-encrypted ({}% done); wait until its provisioningState is Succeeded.",
                body["name"].as_str().unwrap_or_default(),
                body["properties"]["completionPercent"]
                    .as_u64()
                    .unwrap_or(0)
            )));
        }
        Ok(())
    }

    /// Creates or updates a disk; returns the document and whether it was created.
    pub fn put_disk(
        &self,
        subscription: &str,
        group: &str,
        name: &str,
        input: DiskInput,
    ) -> Result<(Value, bool), ControlError> {
        self.check_subscription(subscription)?;
        self.resource_group(subscription, group)?;
        if !valid_disk_name(name) {
            return Err(ControlError::InvalidParameter {
                name: "diskName".into(),
                reason: format!(
                    "'{name}' is not a valid disk name: 1-80 letters, digits, '_', '-' or '.', starting with a letter or digit and ending with a letter, digit or '_'"
                ),
            });
        }
        let location = self.location(&input.location)?;
        let id = self.disk_id(group, name);
        if let Some(existing) = self.store.resource(&id)? {
            let existing_location = existing.body["location"].as_str().unwrap_or_default();
            if existing_location != location {
                return Err(ControlError::InvalidParameter {
                    name: "location".into(),
                    reason: format!(
                        "disk '{name}' is in '{existing_location}'; a disk cannot move to '{location}'"
                    ),
                });
            }
            let patch = DiskPatch {
                tags: input.tags,
                sku: input.sku,
                properties: input.properties,
            };
            return Ok((self.update_disk(existing, patch)?, false));
        }
        let data = self.data()?;
        let create_option = input
            .properties
            .creation_data
            .as_ref()
            .map(|c| c.create_option.as_str())
            .ok_or_else(|| ControlError::InvalidParameter {
                name: "creationData.createOption".into(),
                reason: "is required; sealdisk creates disks with createOption Empty".into(),
            })?;
        let creation = input.properties.creation_data.as_ref();
        let source = match create_option.to_ascii_lowercase().as_str() {
            "empty" => None,
            "copy" | "restore" => {
                let id = creation
                    .and_then(|c| c.source_resource_id.as_deref())
                    .ok_or_else(|| ControlError::InvalidParameter {
                        name: "creationData.sourceResourceId".into(),
                        reason: format!("{create_option} needs the id of a disk or snapshot"),
                    })?;
                Some(self.copy_source(id, location)?)
            }
            "fromimage" => {
                let image = creation.and_then(|c| c.image_reference.as_ref());
                let id = image.and_then(|i| i.id.as_deref()).ok_or_else(|| {
                    ControlError::InvalidParameter {
                        name: "creationData.imageReference.id".into(),
                        reason: "FromImage needs the id of an image".into(),
                    }
                })?;
                Some(self.image_source(id, image.and_then(|i| i.lun), location)?)
            }
            _ => {
                return Err(ControlError::InvalidParameter {
                    name: "creationData.createOption".into(),
                    reason: format!(
                        "'{create_option}' is not supported; use Empty, Copy, Restore or FromImage"
                    ),
                });
            }
        };
        let source_gb = source
            .as_ref()
            .map(|s| s.doc["properties"]["diskSizeGB"].as_u64().unwrap_or(0));
        let gb = match (size_gb(input.properties.disk_size_gb)?, source_gb) {
            (Some(gb), Some(min)) if gb < min => {
                return Err(ControlError::InvalidParameter {
                    name: "diskSizeGB".into(),
                    reason: format!("{gb} is smaller than the source's {min} GiB"),
                });
            }
            (Some(gb), _) => gb,
            (None, Some(min)) => min,
            (None, None) => {
                return Err(ControlError::InvalidParameter {
                    name: "diskSizeGB".into(),
                    reason: "is required for an empty disk".into(),
                });
            }
        };
        let (sku, tier) = sku_of(input.sku.as_ref().and_then(|s| s.name.as_deref()))?;
        let encryption = match (&input.properties.encryption, &source) {
            (None, Some(source)) => DiskEncryption::of(&source.doc),
            (given, _) => encryption_of(given.as_ref())?,
        };
        if let Some(source) = &source {
            self.check_copy_encryption(&DiskEncryption::of(&source.doc), &encryption)?;
        }
        let set = self.check_encryption(&encryption, location)?;
        let unique_id = Uuid::new_v4();
        let volume = data.volumes.create(
            unique_id,
            gb * GIB,
            encryption.layers().len(),
            &|layer, dek| self.wrap_layer(unique_id, &encryption, set.as_ref(), layer, dek),
        )?;
        if let Some(source) = &source {
            let copied = self
                .open_volume(&source.doc)
                .and_then(|from| Volumes::copy(&from, &volume));
            if let Err(e) = copied {
                drop(volume);
                let _ = data.volumes.destroy(unique_id);
                return Err(e);
            }
        }
        drop(volume);
        let (iops, mbps) = performance(sku, gb);
        let creation_data = match &source {
            None => json!({"createOption": "Empty"}),
            Some(source) => source.creation_data(create_option),
        };
        let os_type = input.properties.os_type.clone().or_else(|| {
            source
                .as_ref()
                .and_then(|s| s.doc["properties"]["osType"].as_str().map(str::to_string))
        });
        let mut properties = json!({
            "creationData": creation_data,
            "diskSizeGB": gb,
            "diskSizeBytes": gb * GIB,
            "uniqueId": unique_id.to_string(),
            "timeCreated": rfc3339(self.now()),
            "provisioningState": "Succeeded",
            "diskIOPSReadWrite": iops,
            "diskMBpsReadWrite": mbps,
            "encryption": encryption.to_json(),
            "networkAccessPolicy": input.properties.network_access_policy.unwrap_or_else(|| "AllowAll".into()),
            "publicNetworkAccess": input.properties.public_network_access.unwrap_or_else(|| "Enabled".into()),
            "diskState": "Unattached",
        });
        if tier == "Premium" {
            properties["tier"] = json!(premium_tier(gb));
        }
        if let Some(os) = os_type {
            properties["osType"] = json!(os);
        }
        if let Some(generation) = input.properties.hyper_v_generation {
            properties["hyperVGeneration"] = json!(generation);
        }
        let body = json!({
            "id": id,
            "name": name,
            "type": DISK_TYPE,
            "location": location,
            "tags": input.tags.unwrap_or_default(),
            "sku": {"name": sku, "tier": tier},
            "properties": properties,
        });
        if let Err(e) = self.store.put_resource(&ResourceRecord {
            id,
            resource_type: DISK_TYPE.into(),
            body: body.clone(),
        }) {
            // Nothing refers to the new volume: do not leave it behind.
            let _ = data.volumes.destroy(unique_id);
            return Err(e.into());
        }
        Ok((body, true))
    }

    /// Updates tags, SKU and (grow only, while unattached) the size of a disk.
    pub fn patch_disk(
        &self,
        subscription: &str,
        group: &str,
        name: &str,
        patch: DiskPatch,
    ) -> Result<Value, ControlError> {
        let record = self.disk_record(subscription, group, name)?;
        self.update_disk(record, patch)
    }

    fn update_disk(&self, record: ResourceRecord, patch: DiskPatch) -> Result<Value, ControlError> {
        let mut body = record.body;
        let name = body["name"].as_str().unwrap_or_default().to_string();
        let current_gb = body["properties"]["diskSizeGB"].as_u64().unwrap_or(0);
        self.refuse_while_updating(&body)?;
        let new_gb = size_gb(patch.properties.disk_size_gb)?.filter(|gb| *gb != current_gb);
        if let Some(gb) = new_gb
            && gb < current_gb
        {
            return Err(ControlError::OperationNotAllowed(format!(
                "Disk '{name}' is {current_gb} GiB; a disk can only grow, not shrink to {gb} GiB."
            )));
        }
        let mut reencrypt = false;
        if let Some(enc) = &patch.properties.encryption {
            let wanted = encryption_of(Some(enc))?;
            let current = DiskEncryption::of(&body);
            if wanted != current {
                match self.change_encryption(&body, &current, &wanted)? {
                    EncryptionChange::Rewrapped => {
                        // Recorded at once, so the rest of the update cannot leave the
                        // document behind the re-wrapped header.
                        body["properties"]["encryption"] = wanted.to_json();
                        self.store.put_resource(&ResourceRecord {
                            id: record.id.clone(),
                            resource_type: DISK_TYPE.into(),
                            body: body.clone(),
                        })?;
                    }
                    EncryptionChange::Reencrypt => {
                        reencrypt = true;
                        body["properties"]["provisioningState"] = json!("Updating");
                        body["properties"]["completionPercent"] = json!(0);
                        body["internal"]["reencrypt"] = json!({"encryption": wanted.to_json()});
                    }
                }
            }
        }
        if let Some(gb) = new_gb {
            let state = disk_state(&body);
            if state != "Unattached" && state != "Reserved" {
                return Err(ControlError::OperationNotAllowed(format!(
                    "Disk '{name}' is {state}; it can be resized only while unattached or while its VM is deallocated. End its access (revoke-access) first."
                )));
            }
            self.open_volume(&body)?
                .resize(gb * GIB)
                .map_err(ControlError::Volume)?;
            body["properties"]["diskSizeGB"] = json!(gb);
            body["properties"]["diskSizeBytes"] = json!(gb * GIB);
            let sku = body["sku"]["name"].as_str().unwrap_or_default().to_string();
            let (iops, mbps) = performance(&sku, gb);
            body["properties"]["diskIOPSReadWrite"] = json!(iops);
            body["properties"]["diskMBpsReadWrite"] = json!(mbps);
            if body["properties"].get("tier").is_some() {
                body["properties"]["tier"] = json!(premium_tier(gb));
            }
        }
        if let Some(sku) = patch.sku.as_ref().and_then(|s| s.name.as_deref()) {
            let (sku, tier) = sku_of(Some(sku))?;
            body["sku"] = json!({"name": sku, "tier": tier});
            let gb = body["properties"]["diskSizeGB"].as_u64().unwrap_or(0);
            let props = body["properties"].as_object_mut().ok_or_else(|| {
                ControlError::InvalidRequestContent("disk document without properties".into())
            })?;
            if tier == "Premium" {
                props.insert("tier".into(), json!(premium_tier(gb)));
            } else {
                props.remove("tier");
            }
        }
        if let Some(tags) = patch.tags {
            body["tags"] = json!(tags);
        }
        self.store.put_resource(&ResourceRecord {
            id: record.id.clone(),
            resource_type: DISK_TYPE.into(),
            body: body.clone(),
        })?;
        if reencrypt {
            self.spawn_reencrypt(record.id);
        }
        Ok(Self::present(body))
    }

    /// Deletes a disk and destroys its volume (wrapped DEKs and data). Returns `false` if there
    /// was no such disk.
    pub fn delete_disk(
        &self,
        subscription: &str,
        group: &str,
        name: &str,
    ) -> Result<bool, ControlError> {
        let record = match self.disk_record(subscription, group, name) {
            Ok(r) => r,
            Err(ControlError::ResourceNotFound { .. }) => return Ok(false),
            Err(e) => return Err(e),
        };
        self.refuse_while_updating(&record.body)?;
        if let Some(vm) = record.body["managedBy"].as_str() {
            return Err(ControlError::OperationNotAllowed(format!(
                "Disk '{name}' is attached to VM '{vm}'. Detach it before deleting it."
            )));
        }
        if disk_state(&record.body) == "ActiveSAS" {
            return Err(ControlError::OperationNotAllowed(format!(
                "Disk '{name}' has an active access grant (diskState ActiveSAS). Revoke access (endGetAccess / `disk revoke-access`) before deleting it."
            )));
        }
        self.destroy_disk(&record)?;
        Ok(true)
    }

    /// Removes a disk record and destroys its volume, ending any grants (resource group
    /// deletion).
    pub(crate) fn destroy_disk(&self, record: &ResourceRecord) -> Result<(), ControlError> {
        self.end_grants(&record.id);
        self.store.delete_resource(&record.id)?;
        if let (Ok(volume), Ok(data)) = (volume_of(&record.body), self.data()) {
            data.volumes.destroy(volume)?;
        }
        Ok(())
    }

    /// Grants time-limited NBD access to a disk; returns the `accessSAS` URI.
    pub fn grant_disk_access(
        &self,
        subscription: &str,
        group: &str,
        name: &str,
        request: GrantAccessData,
    ) -> Result<String, ControlError> {
        let record = self.disk_record(subscription, group, name)?;
        self.grant_access(record, request)
    }

    /// Grants time-limited NBD access to a disk or snapshot record.
    pub(crate) fn grant_access(
        &self,
        record: ResourceRecord,
        request: GrantAccessData,
    ) -> Result<String, ControlError> {
        let name = record.body["name"].as_str().unwrap_or_default().to_string();
        self.refuse_while_updating(&record.body)?;
        let data = self.data()?;
        let uri = data
            .nbd_uri
            .as_deref()
            .ok_or(ControlError::DataPlaneUnavailable)?;
        let read_only = match request.access.to_ascii_lowercase().as_str() {
            "read" => true,
            "write" => false,
            _ => {
                return Err(ControlError::InvalidParameter {
                    name: "access".into(),
                    reason: format!("'{}' must be Read or Write", request.access),
                });
            }
        };
        let duration = request.duration_in_seconds.unwrap_or(3600);
        if !(1..=MAX_GRANT_SECS).contains(&duration) {
            return Err(ControlError::InvalidParameter {
                name: "durationInSeconds".into(),
                reason: format!("{duration} must be between 1 and {MAX_GRANT_SECS}"),
            });
        }
        if let Some(vm) = record.body["managedBy"].as_str() {
            return Err(ControlError::OperationNotAllowed(format!(
                "Disk '{name}' is attached to VM '{vm}'; access can be granted only to an unattached disk or one whose VM is deallocated."
            )));
        }
        // Check now that the disk's keys are usable, so a grant never hands out a dead export.
        self.refuse_unusable_key(&record.body)?;
        drop(self.open_volume(&record.body)?);
        self.end_grants(&record.id);
        let export =
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(crypto::random::bytes::<24>()?);
        let expires_at = self.now() + duration;
        let access = if read_only { "Read" } else { "Write" };
        let mut body = record.body;
        body["internal"]["grants"] =
            json!([{"export": export, "access": access, "expiresAt": expires_at}]);
        body["properties"]["diskState"] = json!("ActiveSAS");
        self.store.put_resource(&ResourceRecord {
            id: record.id.clone(),
            resource_type: record.resource_type.clone(),
            body,
        })?;
        data.grants().insert(
            export.clone(),
            LiveGrant {
                disk_resource_id: record.id,
                vm: None,
                read_only,
                expires_at,
                revoked: CancellationToken::new(),
            },
        );
        Ok(format!("{uri}/{export}"))
    }

    /// Ends every access grant of a disk: live NBD connections are closed.
    pub fn revoke_disk_access(
        &self,
        subscription: &str,
        group: &str,
        name: &str,
    ) -> Result<(), ControlError> {
        let record = self.disk_record(subscription, group, name)?;
        self.end_grants(&record.id);
        self.clear_grants(record)
    }

    pub(crate) fn clear_grants(&self, record: ResourceRecord) -> Result<(), ControlError> {
        let mut body = record.body;
        if let Some(internal) = body["internal"].as_object_mut() {
            internal.remove("grants");
        }
        if disk_state(&body) == "ActiveSAS" {
            body["properties"]["diskState"] = json!("Unattached");
        }
        self.store.put_resource(&ResourceRecord {
            id: record.id,
            resource_type: record.resource_type,
            body,
        })?;
        Ok(())
    }

    /// Cancels the live grants of the disk `resource_id`.
    pub(crate) fn end_grants(&self, resource_id: &str) {
        let Ok(data) = self.data() else { return };
        data.grants().retain(|_, g| {
            let keep = !g.disk_resource_id.eq_ignore_ascii_case(resource_id);
            if !keep {
                g.revoked.cancel();
            }
            keep
        });
    }

    /// Why a disk's customer key cannot be used now (`None`: it can, or the disk has none).
    fn customer_key_problem(&self, disk: &Value) -> Result<Option<String>, ControlError> {
        Ok(self.customer_key_check(disk)?.map(|(_, _, reason)| reason))
    }

    /// The set, the key URL and the reason when a disk's customer key cannot be used now.
    fn customer_key_check(&self, disk: &Value) -> Result<Option<KeyProblem>, ControlError> {
        let encryption = DiskEncryption::of(disk);
        let Some(set_id) = &encryption.set else {
            return Ok(None);
        };
        let set = match self.des_by_id(set_id) {
            Ok(set) => set,
            Err(_) => {
                let reason = format!("its disk encryption set '{set_id}' was deleted");
                return Ok(Some((None, None, reason)));
            }
        };
        let header = self.data()?.volumes.header(volume_of(disk)?)?;
        for layer in header.layers.iter().filter(|l| l.key_id != PLATFORM_KEY_ID) {
            if let Some(problem) = self.des_key_problem(&set, &layer.key_id)? {
                return Ok(Some((Some(set), Some(layer.key_id.clone()), problem)));
            }
        }
        Ok(None)
    }

    /// Refuses to open a disk whose customer key cannot be used; the refused unwrap is
    /// audited as the set's identity, like a refused data-plane call.
    pub(crate) fn refuse_unusable_key(&self, disk: &Value) -> Result<(), ControlError> {
        let Some((set, key_url, reason)) = self.customer_key_check(disk)? else {
            return Ok(());
        };
        let set_name = DiskEncryption::of(disk)
            .set
            .as_deref()
            .and_then(|s| s.rsplit('/').next())
            .unwrap_or_default()
            .to_string();
        if let (Some(set), Some(url)) = (&set, key_url.as_deref().and_then(KeyUrl::parse)) {
            self.audit_internal(keyvault::audit::AuditRecord {
                caller_object_id: set["identity"]["principalId"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                vault: url.vault.clone(),
                key: Some(url.key.clone()),
                version: url.version.clone(),
                operation: "KeyUnwrap".into(),
                result: "Forbidden".into(),
                detail: Some(format!("disk encryption set {set_name}: {reason}")),
            })?;
        }
        Err(ControlError::DiskEncryptionSetKeyUnusable {
            set: set_name,
            reason,
        })
    }

    /// Exports a disk of a running VM over NBD; returns the export URI. The export lives until
    /// the VM is stopped or deallocated (or its key revoked); it is not persisted.
    pub(crate) fn export_for_vm(
        &self,
        disk: &ResourceRecord,
        vm_id: &str,
    ) -> Result<String, ControlError> {
        let data = self.data()?;
        let uri = data
            .nbd_uri
            .as_deref()
            .ok_or(ControlError::DataPlaneUnavailable)?;
        self.refuse_while_updating(&disk.body)?;
        self.refuse_unusable_key(&disk.body)?;
        drop(self.open_volume(&disk.body)?);
        let export =
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(crypto::random::bytes::<24>()?);
        data.grants().insert(
            export.clone(),
            LiveGrant {
                disk_resource_id: disk.id.clone(),
                vm: Some(vm_id.to_string()),
                read_only: false,
                expires_at: i64::MAX,
                revoked: CancellationToken::new(),
            },
        );
        Ok(format!("{uri}/{export}"))
    }

    /// The NBD URIs of a VM's exports, by disk id.
    pub(crate) fn vm_exports(&self, vm_id: &str) -> Vec<(String, String)> {
        let Ok(data) = self.data() else {
            return Vec::new();
        };
        let uri = data.nbd_uri.clone().unwrap_or_default();
        data.grants()
            .iter()
            .filter(|(_, g)| {
                g.vm.as_deref()
                    .is_some_and(|v| v.eq_ignore_ascii_case(vm_id))
            })
            .map(|(name, g)| (g.disk_resource_id.clone(), format!("{uri}/{name}")))
            .collect()
    }

    /// Ends the exports of a VM (stop, deallocate): connections close, DEKs leave memory.
    pub(crate) fn end_vm_exports(&self, vm_id: &str) {
        let Ok(data) = self.data() else { return };
        data.grants().retain(|_, g| {
            let keep = !g
                .vm
                .as_deref()
                .is_some_and(|v| v.eq_ignore_ascii_case(vm_id));
            if !keep {
                g.revoked.cancel();
            }
            keep
        });
    }

    /// Records that a disk is attached to `vm` (or detached with `None`) in `state`.
    pub(crate) fn set_disk_attachment(
        &self,
        disk_id: &str,
        vm: Option<&str>,
        state: &str,
    ) -> Result<ResourceRecord, ControlError> {
        let mut record = self
            .store
            .resource(disk_id)?
            .filter(|r| r.resource_type.eq_ignore_ascii_case(DISK_TYPE))
            .ok_or_else(|| ControlError::InvalidParameter {
                name: "managedDisk.id".into(),
                reason: format!("the disk '{disk_id}' does not exist"),
            })?;
        match vm {
            Some(vm) => record.body["managedBy"] = json!(vm),
            None => {
                if let Some(o) = record.body.as_object_mut() {
                    o.remove("managedBy");
                }
            }
        }
        record.body["properties"]["diskState"] = json!(state);
        self.store.put_resource(&record)?;
        Ok(record)
    }

    /// Ends the grants of disks whose customer key can no longer be used (disabled, expired or
    /// deleted key, or the set's identity lost its permission): their NBD connections close
    /// and their DEKs leave memory. Returns `(disk id, reason)` for each disk cut off.
    pub fn enforce_key_revocations(&self) -> Result<Vec<(String, String)>, ControlError> {
        let Ok(data) = self.data() else {
            return Ok(Vec::new());
        };
        let mut disks: Vec<String> = data
            .grants()
            .values()
            .map(|g| g.disk_resource_id.clone())
            .collect();
        disks.sort();
        disks.dedup();
        let mut cut = Vec::new();
        for disk_id in disks {
            let Some(record) = self.store.resource(&disk_id)? else {
                continue;
            };
            let problem = self.customer_key_problem(&record.body)?;
            if let Some(reason) = problem {
                let vm = record.body["managedBy"].as_str().map(str::to_string);
                self.end_grants(&disk_id);
                self.clear_grants(record)?;
                if let Some(vm) = vm {
                    self.stop_vm_for_key(&vm, &disk_id, &reason)?;
                }
                cut.push((disk_id, reason));
            }
        }
        Ok(cut)
    }

    /// Ends grants whose time is up (the scheduler calls this every second). Returns how many.
    pub fn expire_disk_grants(&self) -> Result<usize, ControlError> {
        let now = self.now();
        let expired: Vec<String> = {
            let Ok(data) = self.data() else { return Ok(0) };
            data.grants()
                .values()
                .filter(|g| g.expires_at <= now)
                .map(|g| g.disk_resource_id.clone())
                .collect()
        };
        for id in &expired {
            self.end_grants(id);
            if let Some(record) = self.store.resource(id)? {
                self.clear_grants(record)?;
            }
        }
        Ok(expired.len())
    }

    /// What the NBD export `name` opens, if it is a live grant.
    pub fn open_export(&self, name: &str) -> Result<Option<OpenExport>, ControlError> {
        let data = self.data()?;
        let Some(grant) = data.grants().get(name).cloned() else {
            return Ok(None);
        };
        if grant.revoked.is_cancelled() {
            return Ok(None);
        }
        if grant.expires_at <= self.now() {
            // Ended now rather than at the watch's next tick, so whoever sees the export
            // refused also sees the disk without its grant.
            self.expire_disk_grants()?;
            return Ok(None);
        }
        let doc = self
            .store
            .resource(&grant.disk_resource_id)?
            .ok_or_else(|| ControlError::ResourceNotFound {
                resource_type: DISK_TYPE.into(),
                name: grant
                    .disk_resource_id
                    .rsplit('/')
                    .next()
                    .unwrap_or_default()
                    .into(),
                resource_group: String::new(),
            })?;
        self.refuse_unusable_key(&doc.body)?;
        let disk = self.open_volume(&doc.body)?;
        Ok(Some(OpenExport {
            disk,
            read_only: grant.read_only,
            revoked: grant.revoked,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::Fixture;

    fn input(gb: i64) -> DiskInput {
        serde_json::from_value(json!({
            "location": "eastus",
            "sku": {"name": "Premium_LRS"},
            "properties": {"creationData": {"createOption": "Empty"}, "diskSizeGB": gb},
        }))
        .unwrap()
    }

    fn grant(access: &str) -> GrantAccessData {
        GrantAccessData {
            access: access.into(),
            duration_in_seconds: Some(60),
        }
    }

    #[test]
    fn create_shows_platform_key_encryption_and_read_only_properties() {
        let f = Fixture::with_data_plane();
        let (disk, created) = f.plane.put_disk(&f.sub, "g", "d1", input(4)).unwrap();
        assert!(created);
        assert_eq!(disk["properties"]["encryption"]["type"], PLATFORM_KEY);
        assert_eq!(disk["properties"]["diskSizeBytes"], 4 * GIB);
        assert_eq!(disk["properties"]["diskState"], "Unattached");
        assert_eq!(disk["properties"]["tier"], "P1");
        assert_eq!(disk["sku"]["tier"], "Premium");
        assert!(disk.get("internal").is_none());
        let shown = f.plane.disk(&f.sub, "g", "d1").unwrap();
        assert_eq!(
            shown["properties"]["uniqueId"],
            disk["properties"]["uniqueId"]
        );
    }

    #[test]
    fn platform_key_with_a_disk_encryption_set_is_invalid() {
        let f = Fixture::with_data_plane();
        let mut i = input(1);
        i.properties.encryption = Some(EncryptionInput {
            kind: Some(PLATFORM_KEY.into()),
            disk_encryption_set_id: Some("/subscriptions/x/des".into()),
        });
        let err = f.plane.put_disk(&f.sub, "g", "d", i).unwrap_err();
        assert!(
            matches!(err, ControlError::InvalidParameter { .. }),
            "{err}"
        );
    }

    #[test]
    fn grow_only_and_never_while_access_is_granted() {
        let f = Fixture::with_data_plane();
        f.plane.put_disk(&f.sub, "g", "d", input(2)).unwrap();
        let shrink = DiskPatch {
            properties: DiskInputProperties {
                disk_size_gb: Some(1),
                ..Default::default()
            },
            ..Default::default()
        };
        let err = f.plane.patch_disk(&f.sub, "g", "d", shrink).unwrap_err();
        assert!(matches!(err, ControlError::OperationNotAllowed(_)), "{err}");
        f.plane
            .grant_disk_access(&f.sub, "g", "d", grant("Write"))
            .unwrap();
        let grow = || DiskPatch {
            properties: DiskInputProperties {
                disk_size_gb: Some(3),
                ..Default::default()
            },
            ..Default::default()
        };
        let err = f.plane.patch_disk(&f.sub, "g", "d", grow()).unwrap_err();
        assert!(matches!(err, ControlError::OperationNotAllowed(_)), "{err}");
        f.plane.revoke_disk_access(&f.sub, "g", "d").unwrap();
        let disk = f.plane.patch_disk(&f.sub, "g", "d", grow()).unwrap();
        assert_eq!(disk["properties"]["diskSizeGB"], 3);
    }

    #[test]
    fn grant_opens_an_export_until_revoked_or_expired() {
        let f = Fixture::with_data_plane();
        f.plane.put_disk(&f.sub, "g", "d", input(1)).unwrap();
        let sas = f
            .plane
            .grant_disk_access(&f.sub, "g", "d", grant("Read"))
            .unwrap();
        let export = sas.rsplit('/').next().unwrap().to_string();
        assert!(sas.starts_with("nbds://localhost:10809/"), "{sas}");
        assert!(export.len() >= 32);
        assert_eq!(
            f.plane.disk(&f.sub, "g", "d").unwrap()["properties"]["diskState"],
            "ActiveSAS"
        );
        let open = f.plane.open_export(&export).unwrap().unwrap();
        assert!(open.read_only);
        assert!(f.plane.open_export("not-an-export").unwrap().is_none());
        let err = f.plane.delete_disk(&f.sub, "g", "d").unwrap_err();
        assert!(matches!(err, ControlError::OperationNotAllowed(_)), "{err}");

        f.plane.revoke_disk_access(&f.sub, "g", "d").unwrap();
        assert!(open.revoked.is_cancelled());
        assert!(f.plane.open_export(&export).unwrap().is_none());
        assert_eq!(
            f.plane.disk(&f.sub, "g", "d").unwrap()["properties"]["diskState"],
            "Unattached"
        );

        let sas = f
            .plane
            .grant_disk_access(&f.sub, "g", "d", grant("Write"))
            .unwrap();
        let export = sas.rsplit('/').next().unwrap().to_string();
        let open = f.plane.open_export(&export).unwrap().unwrap();
        f.advance(61);
        assert_eq!(f.plane.expire_disk_grants().unwrap(), 1);
        assert!(open.revoked.is_cancelled());
        assert!(f.plane.open_export(&export).unwrap().is_none());
        assert_eq!(
            f.plane.disk(&f.sub, "g", "d").unwrap()["properties"]["diskState"],
            "Unattached"
        );

        // An expired grant that the watch has not ended yet is ended by the refused open.
        let sas = f
            .plane
            .grant_disk_access(&f.sub, "g", "d", grant("Read"))
            .unwrap();
        let export = sas.rsplit('/').next().unwrap().to_string();
        f.advance(61);
        assert!(f.plane.open_export(&export).unwrap().is_none());
        assert_eq!(
            f.plane.disk(&f.sub, "g", "d").unwrap()["properties"]["diskState"],
            "Unattached"
        );
        assert_eq!(f.plane.expire_disk_grants().unwrap(), 0);

        assert!(f.plane.delete_disk(&f.sub, "g", "d").unwrap());
        assert!(!f.plane.delete_disk(&f.sub, "g", "d").unwrap());
    }

    #[test]
    fn delete_destroys_the_volume() {
        let f = Fixture::with_data_plane();
        let (disk, _) = f.plane.put_disk(&f.sub, "g", "d", input(1)).unwrap();
        let volume: Uuid = disk["properties"]["uniqueId"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        drop(f.plane.open_volume(&disk).unwrap());
        assert!(f.plane.delete_disk(&f.sub, "g", "d").unwrap());
        assert!(f.plane.data().unwrap().volumes.header(volume).is_err());
    }
}
