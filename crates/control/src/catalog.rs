//! The operator-managed image catalog: image aliases (`UbuntuLTS`, ...) that VM requests name by
//! `imageReference` publisher/offer/sku, each pointing at a `Microsoft.Compute/images` image the
//! operator registered (`sealdisk image alias register` uploads a raw or qcow2 file). An alias
//! the operator has not registered yet still exists: it gives an empty OS disk, and its
//! description says so.

use serde::Deserialize;
use serde_json::{Value, json};

use crate::snapshots::IMAGE_TYPE;
use crate::store::{ResourceQuery, ResourceRecord};
use crate::{ControlError, ControlPlane};

pub const ALIAS_TYPE: &str = "Microsoft.Compute/imageAliases";
/// Tag that marks catalog images: disks are made from them in any region.
pub const CATALOG_TAG: &str = "sealdiskCatalog";

/// Aliases every deployment has: `(alias, publisher, offer, sku, os type)`.
const BUILT_IN: &[(&str, &str, &str, &str, &str)] = &[
    (
        "UbuntuLTS",
        "Canonical",
        "UbuntuServer",
        "18.04-LTS",
        "Linux",
    ),
    (
        "Ubuntu2204",
        "Canonical",
        "0001-com-ubuntu-server-jammy",
        "22_04-lts-gen2",
        "Linux",
    ),
    (
        "Debian11",
        "Debian",
        "debian-11",
        "11-backports-gen2",
        "Linux",
    ),
];

/// An alias PUT body.
#[derive(Debug, Deserialize)]
pub struct AliasInput {
    pub properties: AliasProperties,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AliasProperties {
    pub image_id: String,
    #[serde(default)]
    pub image_reference: Option<Value>,
    #[serde(default)]
    pub os_type: Option<String>,
}

fn built_in_doc(sub_scope: &str, alias: &str) -> Option<Value> {
    let (name, publisher, offer, sku, os) =
        BUILT_IN.iter().find(|b| b.0.eq_ignore_ascii_case(alias))?;
    Some(json!({
        "id": format!("{sub_scope}/providers/{ALIAS_TYPE}/{name}"),
        "name": name,
        "type": ALIAS_TYPE,
        "properties": {
            "imageReference": {"publisher": publisher, "offer": offer, "sku": sku, "version": "latest"},
            "osType": os,
            "registered": false,
            "description": format!(
                "Not registered: VMs get an empty 30 GiB {os} OS disk. Register a real image with `sealdisk image alias register --name {name} --source-file FILE` (raw or qcow2)."
            ),
        },
    }))
}

fn same_reference(a: &Value, b: &Value) -> bool {
    ["publisher", "offer", "sku"]
        .iter()
        .all(|k| match (a[k].as_str(), b[k].as_str()) {
            (Some(x), Some(y)) => x.eq_ignore_ascii_case(y),
            _ => false,
        })
}

impl ControlPlane {
    fn alias_id(&self, name: &str) -> String {
        format!(
            "{}/providers/{ALIAS_TYPE}/{name}",
            self.subscription_scope()
        )
    }

    /// Every alias: the registered ones and the built-in ones not registered yet.
    pub fn image_aliases(&self) -> Result<Vec<Value>, ControlError> {
        let mut out: Vec<Value> = self
            .store
            .resources(&ResourceQuery {
                resource_type: Some(ALIAS_TYPE),
                ..Default::default()
            })?
            .into_iter()
            .map(|r| r.body)
            .collect();
        for (name, ..) in BUILT_IN {
            if !out.iter().any(|a| {
                a["name"]
                    .as_str()
                    .is_some_and(|n| n.eq_ignore_ascii_case(name))
            }) {
                out.extend(built_in_doc(&self.subscription_scope(), name));
            }
        }
        Ok(out)
    }

    pub fn image_alias(&self, name: &str) -> Result<Value, ControlError> {
        if let Some(r) = self.store.resource(&self.alias_id(name))? {
            return Ok(r.body);
        }
        built_in_doc(&self.subscription_scope(), name).ok_or_else(|| {
            ControlError::ResourceNotFound {
                resource_type: ALIAS_TYPE.into(),
                name: name.into(),
                resource_group: String::new(),
            }
        })
    }

    /// Points an alias at an image. A built-in alias keeps its image reference.
    pub fn put_image_alias(&self, name: &str, input: AliasInput) -> Result<Value, ControlError> {
        if !crate::disks::valid_disk_name(name) {
            return Err(ControlError::InvalidParameter {
                name: "alias".into(),
                reason: format!("'{name}' is not a valid alias"),
            });
        }
        let image = self
            .store
            .resource(&input.properties.image_id)?
            .filter(|r| r.resource_type.eq_ignore_ascii_case(IMAGE_TYPE))
            .ok_or_else(|| ControlError::InvalidParameter {
                name: "properties.imageId".into(),
                reason: format!("the image '{}' does not exist", input.properties.image_id),
            })?;
        let builtin = built_in_doc(&self.subscription_scope(), name);
        let reference = builtin
            .as_ref()
            .map(|b| b["properties"]["imageReference"].clone())
            .or(input.properties.image_reference)
            .unwrap_or_else(|| json!({"publisher": "sealdisk", "offer": name, "sku": name, "version": "latest"}));
        let os = input
            .properties
            .os_type
            .or_else(|| {
                image.body["properties"]["storageProfile"]["osDisk"]["osType"]
                    .as_str()
                    .map(str::to_string)
            })
            .unwrap_or_else(|| "Linux".into());
        let display = builtin
            .as_ref()
            .and_then(|b| b["name"].as_str().map(str::to_string))
            .unwrap_or_else(|| name.to_string());
        let body = json!({
            "id": self.alias_id(&display),
            "name": display,
            "type": ALIAS_TYPE,
            "properties": {
                "imageReference": reference,
                "imageId": image.id,
                "osType": os,
                "registered": true,
                "description": format!("Registered: VMs get a copy of image {}.", image.id),
            },
        });
        self.store.put_resource(&ResourceRecord {
            id: self.alias_id(&display),
            resource_type: ALIAS_TYPE.into(),
            body: body.clone(),
        })?;
        Ok(body)
    }

    /// Forgets a registered alias (a built-in one goes back to the empty OS disk). `false`
    /// if it was not registered.
    pub fn delete_image_alias(&self, name: &str) -> Result<bool, ControlError> {
        Ok(self.store.delete_resource(&self.alias_id(name))?)
    }

    /// The image a VM's `imageReference` names: its `id`, or the image of a registered alias
    /// with the same publisher/offer/sku; `None` for an unregistered one (empty OS disk).
    pub(crate) fn resolve_image_reference(
        &self,
        reference: &Value,
    ) -> Result<Option<String>, ControlError> {
        if let Some(id) = reference["id"].as_str() {
            return Ok(Some(id.to_string()));
        }
        Ok(self
            .image_aliases()?
            .into_iter()
            .find(|a| same_reference(&a["properties"]["imageReference"], reference))
            .and_then(|a| a["properties"]["imageId"].as_str().map(str::to_string)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::Fixture;

    #[test]
    fn built_in_aliases_exist_and_say_they_are_empty() {
        let f = Fixture::with_data_plane();
        let ubuntu = f.plane.image_alias("ubuntults").unwrap();
        assert_eq!(ubuntu["name"], "UbuntuLTS");
        assert_eq!(ubuntu["properties"]["registered"], false);
        assert!(
            ubuntu["properties"]["description"]
                .as_str()
                .unwrap()
                .contains("empty")
        );
        let reference = json!({"publisher": "Canonical", "offer": "UbuntuServer", "sku": "18.04-LTS", "version": "latest"});
        assert_eq!(f.plane.resolve_image_reference(&reference).unwrap(), None);
        assert!(f.plane.image_aliases().unwrap().len() >= 3);
        assert!(f.plane.image_alias("NoSuchAlias").is_err());
    }

    #[test]
    fn a_registered_alias_gives_vms_a_copy_of_its_image() {
        let f = Fixture::with_data_plane();
        let disk: crate::disks::DiskInput = serde_json::from_value(json!({
            "location": "westus",
            "properties": {"creationData": {"createOption": "Empty"}, "diskSizeGB": 2},
        }))
        .unwrap();
        let (src, _) = f.plane.put_disk(&f.sub, "g", "golden", disk).unwrap();
        f.plane
            .open_volume(&src)
            .unwrap()
            .write(0, b"bootloader", true)
            .unwrap();
        let image: crate::snapshots::ImageInput = serde_json::from_value(json!({
            "location": "westus",
            "tags": {CATALOG_TAG: "true"},
            "properties": {"storageProfile": {"osDisk": {"osType": "Linux", "managedDisk": {"id": src["id"]}}}},
        }))
        .unwrap();
        let (img, _) = f.plane.put_image(&f.sub, "g", "ubuntu", image).unwrap();
        let alias: AliasInput =
            serde_json::from_value(json!({"properties": {"imageId": img["id"]}})).unwrap();
        let registered = f.plane.put_image_alias("ubuntults", alias).unwrap();
        assert_eq!(registered["name"], "UbuntuLTS");
        assert_eq!(registered["properties"]["registered"], true);

        let vm: crate::vms::VmInput = serde_json::from_value(json!({
            "location": "eastus",
            "properties": {"storageProfile": {
                "imageReference": {"publisher": "Canonical", "offer": "UbuntuServer", "sku": "18.04-LTS", "version": "latest"},
                "osDisk": {"createOption": "FromImage", "name": "os"},
            }},
        }))
        .unwrap();
        f.plane.put_vm(&f.sub, "g", "vm", vm).unwrap();
        let os = f.plane.disk(&f.sub, "g", "os").unwrap();
        assert_eq!(os["properties"]["diskSizeGB"], 2);
        assert_eq!(
            os["properties"]["creationData"]["createOption"],
            "FromImage"
        );
        let mut buf = [0u8; 10];
        f.plane.open_volume(&os).unwrap().read(0, &mut buf).unwrap();
        assert_eq!(&buf, b"bootloader");
        assert!(f.plane.delete_image_alias("UbuntuLTS").unwrap());
        assert_eq!(
            f.plane.image_alias("UbuntuLTS").unwrap()["properties"]["registered"],
            false
        );
    }
}
