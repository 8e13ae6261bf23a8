//! Microsoft.Compute/snapshots and Microsoft.Compute/images, and the sources disks are copied
//! from (`Copy`/`Restore` from a disk or snapshot, `FromImage`).
//!
//! A snapshot or image is a full copy: its own volume(s) with their own DEKs, filled by
//! reading the source through its keys and writing through the copy's. Holes stay holes. A
//! copy keeps the source's encryption unless a compatible one is asked for: the copy of a
//! customer-key disk stays under the same customer key (the same vault key, possibly through
//! another set of the same type), and never goes back to the platform key alone.
//!
//! An image's volumes (one per image disk, in `internal.volumes`) belong to the disk
//! encryption set they were made under: they count among its associated resources and are
//! re-wrapped with its disks and snapshots when its key changes. A source whose customer key
//! cannot be used (revoked) is refused before anything is copied.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::deployment::rfc3339;
use crate::disks::{
    DISK_TYPE, DiskEncryption, EncryptionInput, GrantAccessData, PLATFORM_KEY, SkuInput,
    encryption_of, volume_of,
};
use crate::encryption_sets::KeyUrl;
use crate::store::ResourceRecord;
use crate::volumes::Volumes;
use crate::{ControlError, ControlPlane};

pub const SNAPSHOT_TYPE: &str = "Microsoft.Compute/snapshots";
pub const IMAGE_TYPE: &str = "Microsoft.Compute/images";
const GIB: u64 = 1 << 30;
const SNAPSHOT_SKUS: &[&str] = &["Standard_LRS", "Premium_LRS", "Standard_ZRS"];

/// Where a new disk's bytes come from: a disk, a snapshot or an image disk (as a document
/// with `properties.uniqueId`, `encryption`, `diskSizeGB`, `osType`).
#[derive(Debug)]
pub struct CopySource {
    pub doc: Value,
    /// `sourceResourceId` (disk/snapshot) or the image id.
    pub id: String,
    pub image_lun: Option<Option<u64>>,
}

impl CopySource {
    /// The `creationData` of a disk made from this source.
    pub fn creation_data(&self, option: &str) -> Value {
        match self.image_lun {
            Some(lun) => {
                let mut reference = json!({"id": self.id});
                if let Some(lun) = lun {
                    reference["lun"] = json!(lun);
                }
                json!({"createOption": "FromImage", "imageReference": reference})
            }
            None => json!({
                "createOption": option,
                "sourceResourceId": self.id,
                "sourceUniqueId": self.doc["properties"]["uniqueId"],
            }),
        }
    }
}

/// A snapshot PUT body.
#[derive(Debug, Deserialize)]
pub struct SnapshotInput {
    pub location: String,
    #[serde(default)]
    pub tags: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub sku: Option<SkuInput>,
    #[serde(default)]
    pub properties: SnapshotProperties,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotProperties {
    pub creation_data: Option<SnapshotCreation>,
    pub incremental: Option<bool>,
    pub encryption: Option<EncryptionInput>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotCreation {
    pub create_option: String,
    pub source_resource_id: Option<String>,
}

/// An image PUT body.
#[derive(Debug, Deserialize)]
pub struct ImageInput {
    pub location: String,
    #[serde(default)]
    pub tags: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub properties: Value,
}

fn invalid(name: &str, reason: impl Into<String>) -> ControlError {
    ControlError::InvalidParameter {
        name: name.into(),
        reason: reason.into(),
    }
}

/// The volume documents of an image record (`internal.volumes`: `os` and one per data disk
/// lun), each with `properties.uniqueId` and `properties.encryption`.
pub(crate) fn image_volumes(body: &Value) -> impl Iterator<Item = &Value> {
    body["internal"]["volumes"]
        .as_object()
        .into_iter()
        .flat_map(|m| m.values())
}

/// The vault key (vault and key name) behind a customer-key encryption.
fn customer_key_of(plane: &ControlPlane, enc: &DiskEncryption) -> Option<(String, String)> {
    let set = plane.des_by_id(enc.set.as_deref()?).ok()?;
    let url = KeyUrl::parse(set["properties"]["activeKey"]["keyUrl"].as_str()?)?;
    Some((url.vault.to_ascii_lowercase(), url.key.to_ascii_lowercase()))
}

impl ControlPlane {
    fn copy_record(&self, id: &str) -> Result<ResourceRecord, ControlError> {
        self.store
            .resource(id)?
            .filter(|r| {
                r.resource_type.eq_ignore_ascii_case(DISK_TYPE)
                    || r.resource_type.eq_ignore_ascii_case(SNAPSHOT_TYPE)
            })
            .ok_or_else(|| {
                invalid(
                    "creationData.sourceResourceId",
                    format!("'{id}' is not a disk or snapshot of this subscription"),
                )
            })
    }

    /// A disk or snapshot to copy into a resource in `location`.
    pub(crate) fn copy_source(&self, id: &str, location: &str) -> Result<CopySource, ControlError> {
        let record = self.copy_record(id)?;
        let source_location = record.body["location"].as_str().unwrap_or_default();
        if !source_location.eq_ignore_ascii_case(location) {
            return Err(invalid(
                "creationData.sourceResourceId",
                format!("the source is in '{source_location}'; copies stay in the same region"),
            ));
        }
        // A source whose customer key is revoked is refused before any volume is made.
        self.refuse_unusable_key(&record.body)?;
        Ok(CopySource {
            doc: record.body,
            id: record.id,
            image_lun: None,
        })
    }

    /// One disk of an image (the OS disk, or the data disk at `lun`).
    pub(crate) fn image_source(
        &self,
        id: &str,
        lun: Option<u64>,
        location: &str,
    ) -> Result<CopySource, ControlError> {
        let record = self
            .store
            .resource(id)?
            .filter(|r| r.resource_type.eq_ignore_ascii_case(IMAGE_TYPE))
            .ok_or_else(|| {
                invalid(
                    "creationData.imageReference.id",
                    format!("the image '{id}' does not exist"),
                )
            })?;
        let image_location = record.body["location"].as_str().unwrap_or_default();
        let catalog = record.body["tags"][crate::catalog::CATALOG_TAG] == "true";
        if !catalog && !image_location.eq_ignore_ascii_case(location) {
            return Err(invalid(
                "creationData.imageReference.id",
                format!(
                    "the image is in '{image_location}'; disks made from it stay in the same region"
                ),
            ));
        }
        let key = lun.map_or_else(|| "os".to_string(), |l| l.to_string());
        let doc = record.body["internal"]["volumes"][&key].clone();
        if doc.is_null() {
            return Err(invalid(
                "creationData.imageReference.lun",
                format!("the image has no data disk at lun {key}"),
            ));
        }
        self.refuse_unusable_key(&doc)?;
        Ok(CopySource {
            doc,
            id: record.id,
            image_lun: Some(lun),
        })
    }

    /// A copy of a customer-key source stays under that customer key.
    pub(crate) fn check_copy_encryption(
        &self,
        source: &DiskEncryption,
        copy: &DiskEncryption,
    ) -> Result<(), ControlError> {
        if source.kind == PLATFORM_KEY {
            return Ok(());
        }
        let same_key = source.set == copy.set
            || customer_key_of(self, source)
                .is_some_and(|k| customer_key_of(self, copy) == Some(k));
        if copy.kind == source.kind && same_key {
            return Ok(());
        }
        Err(invalid(
            "encryption",
            format!(
                "the source is encrypted with {} through '{}'; a copy must use the same customer-managed key ({} through a set with the same key)",
                source.kind,
                source.set.as_deref().unwrap_or_default(),
                source.kind
            ),
        ))
    }

    /// Creates a volume for a copy of `source` with `encryption`; returns its document part
    /// (`uniqueId`, `encryption`, `diskSizeGB`, `osType`).
    fn copy_volume(
        &self,
        source: &CopySource,
        encryption: &DiskEncryption,
        location: &str,
    ) -> Result<Value, ControlError> {
        self.check_copy_encryption(&DiskEncryption::of(&source.doc), encryption)?;
        let set = self.check_encryption(encryption, location)?;
        let gb = source.doc["properties"]["diskSizeGB"].as_u64().unwrap_or(1);
        let id = Uuid::new_v4();
        let volumes = self.data_plane()?.volumes();
        let volume = volumes.create(id, gb * GIB, encryption.layers().len(), &|layer, dek| {
            self.wrap_layer(id, encryption, set.as_ref(), layer, dek)
        })?;
        let copied = self
            .open_volume(&source.doc)
            .and_then(|from| Volumes::copy(&from, &volume));
        drop(volume);
        if let Err(e) = copied {
            let _ = volumes.destroy(id);
            return Err(e);
        }
        let mut props = json!({
            "uniqueId": id.to_string(),
            "encryption": encryption.to_json(),
            "diskSizeGB": gb,
            "diskSizeBytes": gb * GIB,
        });
        if let Some(os) = source.doc["properties"]["osType"].as_str() {
            props["osType"] = json!(os);
        }
        Ok(json!({"properties": props}))
    }

    fn snapshot_id(&self, group: &str, name: &str) -> String {
        format!(
            "{}/resourceGroups/{group}/providers/{SNAPSHOT_TYPE}/{name}",
            self.subscription_scope()
        )
    }

    fn snapshot_record(
        &self,
        subscription: &str,
        group: &str,
        name: &str,
    ) -> Result<ResourceRecord, ControlError> {
        self.typed_record(
            subscription,
            group,
            self.snapshot_id(group, name),
            SNAPSHOT_TYPE,
            name,
        )
    }

    pub fn snapshot(
        &self,
        subscription: &str,
        group: &str,
        name: &str,
    ) -> Result<Value, ControlError> {
        Ok(Self::present(
            self.snapshot_record(subscription, group, name)?.body,
        ))
    }

    pub fn snapshots(
        &self,
        subscription: &str,
        group: Option<&str>,
    ) -> Result<Vec<Value>, ControlError> {
        self.typed_list(subscription, group, SNAPSHOT_TYPE)
    }

    /// Creates a snapshot (a full copy) of a disk or snapshot; tags and SKU of an existing one
    /// can be updated. Returns the document and whether it was created.
    pub fn put_snapshot(
        &self,
        subscription: &str,
        group: &str,
        name: &str,
        input: SnapshotInput,
    ) -> Result<(Value, bool), ControlError> {
        self.check_subscription(subscription)?;
        self.resource_group(subscription, group)?;
        if !crate::disks::valid_disk_name(name) {
            return Err(invalid(
                "snapshotName",
                format!("'{name}' is not a valid snapshot name"),
            ));
        }
        let location = self.location(&input.location)?;
        let id = self.snapshot_id(group, name);
        let sku = match input.sku.as_ref().and_then(|s| s.name.as_deref()) {
            None => "Standard_LRS",
            Some(s) => SNAPSHOT_SKUS
                .iter()
                .find(|k| k.eq_ignore_ascii_case(s))
                .copied()
                .ok_or_else(|| {
                    invalid(
                        "sku.name",
                        format!("'{s}' must be one of {}", SNAPSHOT_SKUS.join(", ")),
                    )
                })?,
        };
        if let Some(mut existing) = self.store.resource(&id)? {
            if let Some(tags) = input.tags {
                existing.body["tags"] = json!(tags);
            }
            existing.body["sku"] =
                json!({"name": sku, "tier": sku.split('_').next().unwrap_or("Standard")});
            self.store.put_resource(&existing)?;
            return Ok((Self::present(existing.body), false));
        }
        let creation = input.properties.creation_data.as_ref().ok_or_else(|| {
            invalid(
                "creationData",
                "is required: createOption Copy and sourceResourceId",
            )
        })?;
        if !creation.create_option.eq_ignore_ascii_case("Copy") {
            return Err(invalid(
                "creationData.createOption",
                format!(
                    "'{}' is not supported for snapshots; use Copy",
                    creation.create_option
                ),
            ));
        }
        let source_id = creation
            .source_resource_id
            .as_deref()
            .ok_or_else(|| invalid("creationData.sourceResourceId", "is required"))?;
        let source = self.copy_source(source_id, location)?;
        let encryption = match &input.properties.encryption {
            None => DiskEncryption::of(&source.doc),
            Some(e) => encryption_of(Some(e))?,
        };
        let volume = self.copy_volume(&source, &encryption, location)?;
        let mut properties = volume["properties"].clone();
        properties["creationData"] = source.creation_data("Copy");
        properties["incremental"] = json!(input.properties.incremental.unwrap_or(false));
        properties["timeCreated"] = json!(rfc3339(self.now()));
        properties["provisioningState"] = json!("Succeeded");
        properties["diskState"] = json!("Unattached");
        properties["networkAccessPolicy"] = json!("AllowAll");
        properties["publicNetworkAccess"] = json!("Enabled");
        let body = json!({
            "id": id,
            "name": name,
            "type": SNAPSHOT_TYPE,
            "location": location,
            "tags": input.tags.unwrap_or_default(),
            "sku": {"name": sku, "tier": sku.split('_').next().unwrap_or("Standard")},
            "properties": properties,
        });
        self.store.put_resource(&ResourceRecord {
            id,
            resource_type: SNAPSHOT_TYPE.into(),
            body: body.clone(),
        })?;
        Ok((body, true))
    }

    /// Deletes a snapshot and destroys its volume. `false` if there was none.
    pub fn delete_snapshot(
        &self,
        subscription: &str,
        group: &str,
        name: &str,
    ) -> Result<bool, ControlError> {
        let record = match self.snapshot_record(subscription, group, name) {
            Ok(r) => r,
            Err(ControlError::ResourceNotFound { .. }) => return Ok(false),
            Err(e) => return Err(e),
        };
        if record.body["properties"]["diskState"] == "ActiveSAS" {
            return Err(ControlError::OperationNotAllowed(format!(
                "Snapshot '{name}' has an active access grant. Revoke access before deleting it."
            )));
        }
        self.end_grants(&record.id);
        self.store.delete_resource(&record.id)?;
        self.data_plane()?
            .volumes()
            .destroy(volume_of(&record.body)?)?;
        Ok(true)
    }

    /// Grants read access to a snapshot over NBD; returns the `accessSAS` URI.
    pub fn grant_snapshot_access(
        &self,
        subscription: &str,
        group: &str,
        name: &str,
        request: GrantAccessData,
    ) -> Result<String, ControlError> {
        if !request.access.eq_ignore_ascii_case("Read") {
            return Err(invalid("access", "snapshots can only be read: use Read"));
        }
        let record = self.snapshot_record(subscription, group, name)?;
        self.grant_access(record, request)
    }

    pub fn revoke_snapshot_access(
        &self,
        subscription: &str,
        group: &str,
        name: &str,
    ) -> Result<(), ControlError> {
        let record = self.snapshot_record(subscription, group, name)?;
        self.end_grants(&record.id);
        self.clear_grants(record)
    }

    fn image_id(&self, group: &str, name: &str) -> String {
        format!(
            "{}/resourceGroups/{group}/providers/{IMAGE_TYPE}/{name}",
            self.subscription_scope()
        )
    }

    pub fn image(
        &self,
        subscription: &str,
        group: &str,
        name: &str,
    ) -> Result<Value, ControlError> {
        let id = self.image_id(group, name);
        Ok(Self::present(
            self.typed_record(subscription, group, id, IMAGE_TYPE, name)?
                .body,
        ))
    }

    pub fn images(
        &self,
        subscription: &str,
        group: Option<&str>,
    ) -> Result<Vec<Value>, ControlError> {
        self.typed_list(subscription, group, IMAGE_TYPE)
    }

    /// Copies one image disk entry (`managedDisk.id` or `snapshot.id`, optional
    /// `diskEncryptionSet.id`) into a volume of the image.
    fn image_disk(&self, entry: &mut Value, location: &str) -> Result<Value, ControlError> {
        let source_id = entry["managedDisk"]["id"]
            .as_str()
            .or_else(|| entry["snapshot"]["id"].as_str())
            .ok_or_else(|| {
                invalid(
                    "storageProfile",
                    "every image disk needs managedDisk.id or snapshot.id",
                )
            })?
            .to_string();
        let source = self.copy_source(&source_id, location)?;
        let encryption = match entry["diskEncryptionSet"]["id"].as_str() {
            Some(set) => {
                let set_doc = self.des_by_id(set)?;
                DiskEncryption {
                    kind: if set_doc["properties"]["encryptionType"]
                        == crate::encryption_sets::PLATFORM_AND_CUSTOMER_KEYS
                    {
                        crate::encryption_sets::PLATFORM_AND_CUSTOMER_KEYS
                    } else {
                        crate::encryption_sets::CUSTOMER_KEY
                    },
                    set: Some(set.to_string()),
                }
            }
            None => DiskEncryption::of(&source.doc),
        };
        let volume = self.copy_volume(&source, &encryption, location)?;
        entry["diskSizeGB"] = volume["properties"]["diskSizeGB"].clone();
        Ok(volume)
    }

    /// Creates an image from disks or snapshots (each copied). Images are immutable: a PUT on
    /// an existing image only updates its tags.
    pub fn put_image(
        &self,
        subscription: &str,
        group: &str,
        name: &str,
        input: ImageInput,
    ) -> Result<(Value, bool), ControlError> {
        self.check_subscription(subscription)?;
        self.resource_group(subscription, group)?;
        if !crate::disks::valid_disk_name(name) {
            return Err(invalid(
                "imageName",
                format!("'{name}' is not a valid image name"),
            ));
        }
        let location = self.location(&input.location)?;
        let id = self.image_id(group, name);
        if let Some(mut existing) = self.store.resource(&id)? {
            if let Some(tags) = input.tags {
                existing.body["tags"] = json!(tags);
            }
            self.store.put_resource(&existing)?;
            return Ok((Self::present(existing.body), false));
        }
        let mut properties = input.properties.clone();
        let mut os_disk = properties["storageProfile"]["osDisk"].clone();
        if !os_disk.is_object() {
            return Err(invalid("storageProfile.osDisk", "is required"));
        }
        let mut volumes = serde_json::Map::new();
        let mut created: Vec<Uuid> = Vec::new();
        let result = (|| -> Result<(), ControlError> {
            let mut os = self.image_disk(&mut os_disk, location)?;
            os["properties"]["osType"] = os_disk["osType"].clone();
            created.push(volume_of(&os)?);
            volumes.insert("os".into(), os);
            let mut data = Vec::new();
            for entry in properties["storageProfile"]["dataDisks"]
                .as_array()
                .cloned()
                .unwrap_or_default()
            {
                let mut entry = entry;
                let lun = entry["lun"]
                    .as_u64()
                    .ok_or_else(|| invalid("dataDisks.lun", "is required"))?;
                let v = self.image_disk(&mut entry, location)?;
                created.push(volume_of(&v)?);
                volumes.insert(lun.to_string(), v);
                data.push(entry);
            }
            properties["storageProfile"]["dataDisks"] = json!(data);
            Ok(())
        })();
        if let Err(e) = result {
            for v in created {
                let _ = self.data_plane()?.volumes().destroy(v);
            }
            return Err(e);
        }
        if os_disk["osState"].is_null() {
            os_disk["osState"] = json!("Generalized");
        }
        properties["storageProfile"]["osDisk"] = os_disk;
        properties["provisioningState"] = json!("Succeeded");
        if properties["hyperVGeneration"].is_null() {
            properties["hyperVGeneration"] = json!("V1");
        }
        let body = json!({
            "id": id,
            "name": name,
            "type": IMAGE_TYPE,
            "location": location,
            "tags": input.tags.unwrap_or_default(),
            "properties": properties,
            "internal": {"volumes": volumes},
        });
        self.store.put_resource(&ResourceRecord {
            id,
            resource_type: IMAGE_TYPE.into(),
            body: body.clone(),
        })?;
        Ok((Self::present(body), true))
    }

    /// Removes a snapshot or image record and destroys its volume(s) (resource group deletion).
    pub(crate) fn destroy_copy(&self, record: &ResourceRecord) -> Result<(), ControlError> {
        self.end_grants(&record.id);
        self.store.delete_resource(&record.id)?;
        let Ok(data) = self.data_plane() else {
            return Ok(());
        };
        if let Ok(id) = volume_of(&record.body) {
            data.volumes().destroy(id)?;
        }
        for v in image_volumes(&record.body) {
            if let Ok(id) = volume_of(v) {
                data.volumes().destroy(id)?;
            }
        }
        Ok(())
    }

    /// Deletes an image and destroys its volumes. `false` if there was none.
    pub fn delete_image(
        &self,
        subscription: &str,
        group: &str,
        name: &str,
    ) -> Result<bool, ControlError> {
        let id = self.image_id(group, name);
        let record = match self.typed_record(subscription, group, id, IMAGE_TYPE, name) {
            Ok(r) => r,
            Err(ControlError::ResourceNotFound { .. }) => return Ok(false),
            Err(e) => return Err(e),
        };
        self.store.delete_resource(&record.id)?;
        for v in image_volumes(&record.body) {
            if let Ok(id) = volume_of(v) {
                self.data_plane()?.volumes().destroy(id)?;
            }
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::disks::DiskInput;
    use crate::testing::Fixture;

    fn disk(f: &Fixture, name: &str, creation: Value) -> Value {
        let input: DiskInput = serde_json::from_value(json!({
            "location": "eastus",
            "properties": {"creationData": creation, "diskSizeGB": 1},
        }))
        .unwrap();
        f.plane.put_disk(&f.sub, "g", name, input).unwrap().0
    }

    fn read(f: &Fixture, doc: &Value, offset: u64, len: usize) -> Vec<u8> {
        let mut buf = vec![0u8; len];
        f.plane
            .open_volume(doc)
            .unwrap()
            .read(offset, &mut buf)
            .unwrap();
        buf
    }

    #[test]
    fn snapshots_images_and_disks_copy_data_under_their_own_keys() {
        let f = Fixture::with_data_plane();
        let src = disk(&f, "src", json!({"createOption": "Empty"}));
        let volume = f.plane.open_volume(&src).unwrap();
        volume.write(0, &[0xab; 8192], false).unwrap();
        volume.write(500 << 20, b"far away", false).unwrap();
        drop(volume);

        let input: SnapshotInput = serde_json::from_value(json!({
            "location": "eastus",
            "properties": {"creationData": {"createOption": "Copy", "sourceResourceId": src["id"]}, "incremental": true},
        }))
        .unwrap();
        let (snap, created) = f.plane.put_snapshot(&f.sub, "g", "snap", input).unwrap();
        assert!(created);
        assert_eq!(snap["properties"]["incremental"], true);
        assert_eq!(
            snap["properties"]["creationData"]["sourceUniqueId"],
            src["properties"]["uniqueId"]
        );
        assert_ne!(
            snap["properties"]["uniqueId"],
            src["properties"]["uniqueId"]
        );
        assert_eq!(read(&f, &snap, 0, 8192), vec![0xab; 8192]);

        // The snapshot is a copy: later writes to the disk do not change it.
        f.plane
            .open_volume(&src)
            .unwrap()
            .write(0, &[0x11; 4096], false)
            .unwrap();
        assert_eq!(read(&f, &snap, 0, 4), vec![0xab; 4]);

        let restored = disk(
            &f,
            "restored",
            json!({"createOption": "Restore", "sourceResourceId": snap["id"]}),
        );
        assert_eq!(read(&f, &restored, 0, 8192), vec![0xab; 8192]);
        assert_eq!(read(&f, &restored, 500 << 20, 8), b"far away".to_vec());
        assert_eq!(
            restored["properties"]["creationData"]["createOption"],
            "Restore"
        );
        let header = f
            .plane
            .data_plane()
            .unwrap()
            .volumes()
            .header(volume_of(&restored).unwrap())
            .unwrap();
        assert_eq!(header.layers.len(), 1);

        let image: ImageInput = serde_json::from_value(json!({
            "location": "eastus",
            "properties": {"storageProfile": {"osDisk": {"osType": "Linux", "snapshot": {"id": snap["id"]}}}},
        }))
        .unwrap();
        let (img, _) = f.plane.put_image(&f.sub, "g", "img", image).unwrap();
        assert!(img.get("internal").is_none());
        assert_eq!(
            img["properties"]["storageProfile"]["osDisk"]["osState"],
            "Generalized"
        );
        let from_image = disk(
            &f,
            "from-image",
            json!({"createOption": "FromImage", "imageReference": {"id": img["id"]}}),
        );
        assert_eq!(from_image["properties"]["osType"], "Linux");
        assert_eq!(read(&f, &from_image, 0, 8192), vec![0xab; 8192]);

        assert!(f.plane.delete_image(&f.sub, "g", "img").unwrap());
        assert!(f.plane.delete_snapshot(&f.sub, "g", "snap").unwrap());
        assert!(
            f.plane
                .data_plane()
                .unwrap()
                .volumes()
                .header(volume_of(&snap).unwrap())
                .is_err()
        );
    }

    #[test]
    fn copies_stay_in_their_region_and_snapshot_grants_are_read_only() {
        let f = Fixture::with_data_plane();
        let src = disk(&f, "src", json!({"createOption": "Empty"}));
        let input: SnapshotInput = serde_json::from_value(json!({
            "location": "westus",
            "properties": {"creationData": {"createOption": "Copy", "sourceResourceId": src["id"]}},
        }))
        .unwrap();
        let err = f.plane.put_snapshot(&f.sub, "g", "s", input).unwrap_err();
        assert!(
            matches!(err, ControlError::InvalidParameter { .. }),
            "{err}"
        );
        let input: SnapshotInput = serde_json::from_value(json!({
            "location": "eastus",
            "properties": {"creationData": {"createOption": "Copy", "sourceResourceId": src["id"]}},
        }))
        .unwrap();
        f.plane.put_snapshot(&f.sub, "g", "s", input).unwrap();
        let write = GrantAccessData {
            access: "Write".into(),
            duration_in_seconds: Some(60),
        };
        assert!(
            f.plane
                .grant_snapshot_access(&f.sub, "g", "s", write)
                .is_err()
        );
        let read = GrantAccessData {
            access: "Read".into(),
            duration_in_seconds: Some(60),
        };
        let sas = f
            .plane
            .grant_snapshot_access(&f.sub, "g", "s", read)
            .unwrap();
        let export = f
            .plane
            .open_export(sas.rsplit('/').next().unwrap())
            .unwrap()
            .unwrap();
        assert!(export.read_only);
        assert!(f.plane.delete_snapshot(&f.sub, "g", "s").is_err());
        f.plane.revoke_snapshot_access(&f.sub, "g", "s").unwrap();
        assert!(export.revoked.is_cancelled());
        assert!(f.plane.delete_snapshot(&f.sub, "g", "s").unwrap());
    }
}
