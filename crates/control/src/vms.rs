//! Microsoft.Compute/virtualMachines: a VM here is its disks and their power state. A running
//! VM's disks are exported over NBD for the VM host (the instance view names each export);
//! stopping or deallocating it closes the exports and drops the DEKs from memory. When a
//! customer key of one of its disks becomes unusable, the VM is stopped with a status message
//! naming the key.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::deployment::rfc3339;
use crate::disks::{DISK_TYPE, DiskInput};
use crate::store::{ResourceQuery, ResourceRecord};
use crate::{ControlError, ControlPlane};

pub const VM_TYPE: &str = "Microsoft.Compute/virtualMachines";
/// Size of an OS disk made from an image, when the request gives none.
const DEFAULT_OS_DISK_GB: u64 = 30;

/// A VM PUT body (the parts sealdisk acts on; the rest is kept as given).
#[derive(Debug, Deserialize)]
pub struct VmInput {
    pub location: Option<String>,
    #[serde(default)]
    pub tags: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub properties: Value,
}

/// Power states, as the instance view's `PowerState/*` codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Power {
    Running,
    Stopped,
    Deallocated,
}

impl Power {
    fn code(self) -> &'static str {
        match self {
            Power::Running => "running",
            Power::Stopped => "stopped",
            Power::Deallocated => "deallocated",
        }
    }

    fn display(self) -> &'static str {
        match self {
            Power::Running => "VM running",
            Power::Stopped => "VM stopped",
            Power::Deallocated => "VM deallocated",
        }
    }

    fn of(doc: &Value) -> Self {
        match doc["internal"]["power"].as_str() {
            Some("stopped") => Power::Stopped,
            Some("deallocated") => Power::Deallocated,
            _ => Power::Running,
        }
    }
}

/// A VM power action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VmAction {
    Start,
    PowerOff,
    Deallocate,
    Restart,
}

impl std::str::FromStr for VmAction {
    type Err = ControlError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "start" => Ok(Self::Start),
            "poweroff" => Ok(Self::PowerOff),
            "deallocate" => Ok(Self::Deallocate),
            "restart" => Ok(Self::Restart),
            _ => Err(ControlError::InvalidParameter {
                name: "action".into(),
                reason: format!("'{s}' is not a VM action"),
            }),
        }
    }
}

fn invalid(name: &str, reason: impl Into<String>) -> ControlError {
    ControlError::InvalidParameter {
        name: name.into(),
        reason: reason.into(),
    }
}

/// The disks of a VM document: `(lun or None for the OS disk, managed disk id)`.
fn vm_disks(doc: &Value) -> Vec<(Option<u64>, String)> {
    let storage = &doc["properties"]["storageProfile"];
    let mut out = Vec::new();
    if let Some(id) = storage["osDisk"]["managedDisk"]["id"].as_str() {
        out.push((None, id.to_string()));
    }
    for d in storage["dataDisks"].as_array().into_iter().flatten() {
        if let Some(id) = d["managedDisk"]["id"].as_str() {
            out.push((d["lun"].as_u64(), id.to_string()));
        }
    }
    out
}

/// Where a VM's disks are made.
#[derive(Debug, Clone, Copy)]
struct VmPlace<'a> {
    subscription: &'a str,
    group: &'a str,
    location: &'a str,
    name: &'a str,
}

fn hex_suffix() -> String {
    Uuid::new_v4().simple().to_string()
}

impl ControlPlane {
    fn vm_id(&self, group: &str, name: &str) -> String {
        format!(
            "{}/resourceGroups/{group}/providers/{VM_TYPE}/{name}",
            self.subscription_scope()
        )
    }

    fn vm_record(
        &self,
        subscription: &str,
        group: &str,
        name: &str,
    ) -> Result<ResourceRecord, ControlError> {
        self.typed_record(subscription, group, self.vm_id(group, name), VM_TYPE, name)
    }

    pub fn vm(&self, subscription: &str, group: &str, name: &str) -> Result<Value, ControlError> {
        self.present_vm(self.vm_record(subscription, group, name)?.body)
    }

    /// A VM as clients see it: each disk's `managedDisk` shows the disk's current encryption
    /// set and SKU (a disk may have been attached, or moved to another set, after creation).
    fn present_vm(&self, mut vm: Value) -> Result<Value, ControlError> {
        let storage = &mut vm["properties"]["storageProfile"];
        if storage["osDisk"].is_object() {
            self.refresh_managed_disk(&mut storage["osDisk"])?;
        }
        if let Some(data) = storage["dataDisks"].as_array_mut() {
            for entry in data {
                self.refresh_managed_disk(entry)?;
            }
        }
        Ok(Self::present(vm))
    }

    fn refresh_managed_disk(&self, entry: &mut Value) -> Result<(), ControlError> {
        let Some(id) = entry["managedDisk"]["id"].as_str() else {
            return Ok(());
        };
        let Some(disk) = self.store.resource(id)? else {
            return Ok(());
        };
        let managed = &mut entry["managedDisk"];
        managed["storageAccountType"] = disk.body["sku"]["name"].clone();
        match disk.body["properties"]["encryption"]["diskEncryptionSetId"].as_str() {
            Some(set) => managed["diskEncryptionSet"] = json!({"id": set}),
            None => {
                if let Some(m) = managed.as_object_mut() {
                    m.remove("diskEncryptionSet");
                }
            }
        }
        Ok(())
    }

    pub fn vms(&self, subscription: &str, group: Option<&str>) -> Result<Vec<Value>, ControlError> {
        self.typed_list(subscription, group, VM_TYPE)?
            .into_iter()
            .map(|vm| self.present_vm(vm))
            .collect()
    }

    /// Creates the managed disk a VM's disk entry asks for (`FromImage` / `Empty`), or checks
    /// the one it attaches; returns the entry with its `managedDisk.id` and name filled in.
    fn provision_vm_disk(
        &self,
        vm: &VmPlace<'_>,
        entry: &Value,
        lun: Option<u64>,
        image: Option<&Value>,
    ) -> Result<Value, ControlError> {
        let VmPlace {
            subscription,
            group,
            location,
            name: vm_name,
        } = *vm;
        let mut entry = entry.clone();
        let option = entry["createOption"]
            .as_str()
            .unwrap_or("Empty")
            .to_string();
        if option.eq_ignore_ascii_case("Attach") {
            let id = entry["managedDisk"]["id"]
                .as_str()
                .ok_or_else(|| invalid("managedDisk.id", "an attached disk needs its id"))?
                .to_string();
            let disk = self
                .store
                .resource(&id)?
                .filter(|r| r.resource_type.eq_ignore_ascii_case(DISK_TYPE))
                .ok_or_else(|| {
                    invalid("managedDisk.id", format!("the disk '{id}' does not exist"))
                })?;
            if let Some(owner) = disk.body["managedBy"].as_str()
                && !owner.eq_ignore_ascii_case(&self.vm_id(group, vm_name))
            {
                return Err(ControlError::OperationNotAllowed(format!(
                    "Disk '{id}' is already attached to VM '{owner}'."
                )));
            }
            if disk.body["properties"]["diskState"] == "ActiveSAS" {
                return Err(ControlError::OperationNotAllowed(format!(
                    "Disk '{id}' has an active access grant; revoke it before attaching the disk."
                )));
            }
            entry["name"] = disk.body["name"].clone();
            entry["diskSizeGB"] = disk.body["properties"]["diskSizeGB"].clone();
            entry["managedDisk"]["storageAccountType"] = disk.body["sku"]["name"].clone();
            return Ok(entry);
        }
        let from_image = option.eq_ignore_ascii_case("FromImage");
        if !from_image && !option.eq_ignore_ascii_case("Empty") {
            return Err(invalid(
                "createOption",
                format!("'{option}' must be FromImage, Empty or Attach"),
            ));
        }
        let gb = entry["diskSizeGB"]
            .as_u64()
            .or(from_image.then_some(DEFAULT_OS_DISK_GB));
        let gb =
            gb.ok_or_else(|| invalid("dataDisks.diskSizeGB", "an empty data disk needs a size"))?;
        let name = match entry["name"].as_str() {
            Some(n) => n.to_string(),
            None => match lun {
                None => format!("{vm_name}_OsDisk_1_{}", hex_suffix()),
                Some(l) => format!("{vm_name}_disk{}_{}", l + 2, hex_suffix()),
            },
        };
        let sku = entry["managedDisk"]["storageAccountType"]
            .as_str()
            .unwrap_or("Premium_LRS")
            .to_string();
        let source_image = match (from_image, image) {
            (true, Some(reference)) => self.resolve_image_reference(reference)?,
            _ => None,
        };
        let mut disk = match &source_image {
            // A registered image: a copy of it, at least as large as it is.
            Some(id) => json!({
                "location": location,
                "sku": {"name": sku},
                "properties": {"creationData": {"createOption": "FromImage", "imageReference": {"id": id}}},
            }),
            None => json!({
                "location": location,
                "sku": {"name": sku},
                "properties": {"creationData": {"createOption": "Empty"}, "diskSizeGB": gb},
            }),
        };
        if source_image.is_some()
            && let Some(given) = entry["diskSizeGB"].as_u64()
        {
            disk["properties"]["diskSizeGB"] = json!(given);
        }
        if lun.is_none() {
            disk["properties"]["osType"] = json!(entry["osType"].as_str().unwrap_or("Linux"));
        }
        if let Some(set) = entry["managedDisk"]["diskEncryptionSet"]["id"].as_str() {
            let set_doc = self.des_by_id(set).map_err(|_| {
                invalid(
                    "managedDisk.diskEncryptionSet.id",
                    format!("the disk encryption set '{set}' does not exist"),
                )
            })?;
            disk["properties"]["encryption"] = json!({
                "type": set_doc["properties"]["encryptionType"],
                "diskEncryptionSetId": set,
            });
        }
        let input: DiskInput = serde_json::from_value(disk)
            .map_err(|e| ControlError::InvalidRequestContent(e.to_string()))?;
        let (created, _) = self.put_disk(subscription, group, &name, input)?;
        entry["name"] = json!(name);
        entry["diskSizeGB"] = created["properties"]["diskSizeGB"].clone();
        entry["managedDisk"]["id"] = created["id"].clone();
        entry["managedDisk"]["storageAccountType"] = json!(sku);
        Ok(entry)
    }

    /// Creates or updates a VM: provisions its disks, attaches them and (when it runs)
    /// exports them. Returns the document and whether it was created.
    pub fn put_vm(
        &self,
        subscription: &str,
        group: &str,
        name: &str,
        input: VmInput,
    ) -> Result<(Value, bool), ControlError> {
        self.check_subscription(subscription)?;
        self.resource_group(subscription, group)?;
        if !crate::disks::valid_disk_name(name) {
            return Err(invalid(
                "vmName",
                format!("'{name}' is not a valid VM name"),
            ));
        }
        let id = self.vm_id(group, name);
        let existing = self.store.resource(&id)?.map(|r| r.body);
        let location = match (&input.location, &existing) {
            (Some(l), _) => self.location(l)?.to_string(),
            (None, Some(e)) => e["location"].as_str().unwrap_or_default().to_string(),
            (None, None) => return Err(invalid("location", "is required")),
        };
        let place = VmPlace {
            subscription,
            group,
            location: &location,
            name,
        };
        let storage = &input.properties["storageProfile"];
        let old_disks = existing.as_ref().map(vm_disks).unwrap_or_default();
        let power = existing.as_ref().map(Power::of).unwrap_or(Power::Running);

        let mut os_disk = storage["osDisk"].clone();
        if os_disk.is_null() {
            os_disk = existing
                .as_ref()
                .map(|e| e["properties"]["storageProfile"]["osDisk"].clone())
                .ok_or_else(|| invalid("storageProfile.osDisk", "is required"))?;
        }
        if os_disk["managedDisk"]["id"].is_null() || existing.is_none() {
            os_disk =
                self.provision_vm_disk(&place, &os_disk, None, storage.get("imageReference"))?;
        }
        if os_disk["createOption"].is_null() {
            os_disk["createOption"] = json!("FromImage");
        }
        let mut data_disks = Vec::new();
        let mut luns = std::collections::BTreeSet::new();
        for entry in storage["dataDisks"].as_array().into_iter().flatten() {
            let lun = entry["lun"]
                .as_u64()
                .ok_or_else(|| invalid("dataDisks.lun", "every data disk needs a lun"))?;
            if !luns.insert(lun) {
                return Err(invalid("dataDisks.lun", format!("lun {lun} is used twice")));
            }
            let known = entry["managedDisk"]["id"]
                .as_str()
                .is_some_and(|d| old_disks.iter().any(|(_, o)| o.eq_ignore_ascii_case(d)));
            data_disks.push(if known {
                entry.clone()
            } else {
                self.provision_vm_disk(&place, entry, Some(lun), None)?
            });
        }
        let mut properties = input.properties.clone();
        if !properties.is_object() {
            properties = json!({});
        }
        properties["storageProfile"]["osDisk"] = os_disk;
        properties["storageProfile"]["dataDisks"] = json!(data_disks);
        properties["provisioningState"] = json!("Succeeded");
        properties["vmId"] = existing
            .as_ref()
            .map(|e| e["properties"]["vmId"].clone())
            .unwrap_or_else(|| json!(Uuid::new_v4().to_string()));
        properties["timeCreated"] = existing
            .as_ref()
            .map(|e| e["properties"]["timeCreated"].clone())
            .unwrap_or_else(|| json!(rfc3339(self.now())));
        if let Some(profile) = properties
            .get_mut("osProfile")
            .and_then(Value::as_object_mut)
        {
            // Secrets are write-only, as in Azure.
            profile.remove("adminPassword");
            profile.remove("customData");
        }
        let tags = input
            .tags
            .map(|t| json!(t))
            .or_else(|| existing.as_ref().map(|e| e["tags"].clone()))
            .unwrap_or_else(|| json!({}));
        let mut body = json!({
            "id": id,
            "name": name,
            "type": VM_TYPE,
            "location": location,
            "tags": tags,
            "properties": properties,
            "internal": {"power": power.code()},
        });
        if let Some(e) = &existing {
            body["internal"] = e["internal"].clone();
        }
        let new_disks = vm_disks(&body);
        for (_, old) in &old_disks {
            if !new_disks.iter().any(|(_, n)| n.eq_ignore_ascii_case(old)) {
                self.end_grants(old);
                self.set_disk_attachment(old, None, "Unattached")?;
            }
        }
        let state = if power == Power::Deallocated {
            "Reserved"
        } else {
            "Attached"
        };
        for (_, disk) in &new_disks {
            let record = self.set_disk_attachment(disk, Some(&id), state)?;
            let exported = self
                .vm_exports(&id)
                .iter()
                .any(|(d, _)| d.eq_ignore_ascii_case(disk));
            if power == Power::Running && !exported {
                self.export_for_vm(&record, &id)?;
            }
        }
        self.store.put_resource(&ResourceRecord {
            id,
            resource_type: VM_TYPE.into(),
            body: body.clone(),
        })?;
        Ok((self.present_vm(body)?, existing.is_none()))
    }

    /// Runs a power action on a VM.
    pub fn vm_action(
        &self,
        subscription: &str,
        group: &str,
        name: &str,
        action: VmAction,
    ) -> Result<(), ControlError> {
        let mut record = self.vm_record(subscription, group, name)?;
        let id = record.id.clone();
        let disks = vm_disks(&record.body);
        let power = match action {
            VmAction::Start | VmAction::Restart => {
                self.end_vm_exports(&id);
                // Every disk's keys must be usable before any export starts.
                for (_, disk) in &disks {
                    let doc = self.store.resource(disk)?.ok_or_else(|| {
                        invalid(
                            "storageProfile",
                            format!("the disk '{disk}' no longer exists"),
                        )
                    })?;
                    self.refuse_unusable_key(&doc.body)?;
                }
                for (_, disk) in &disks {
                    let doc = self.set_disk_attachment(disk, Some(&id), "Attached")?;
                    if let Err(e) = self.export_for_vm(&doc, &id) {
                        self.end_vm_exports(&id);
                        return Err(e);
                    }
                }
                Power::Running
            }
            VmAction::PowerOff => {
                self.end_vm_exports(&id);
                Power::Stopped
            }
            VmAction::Deallocate => {
                self.end_vm_exports(&id);
                for (_, disk) in &disks {
                    self.set_disk_attachment(disk, Some(&id), "Reserved")?;
                }
                Power::Deallocated
            }
        };
        record.body["internal"] = json!({"power": power.code()});
        self.store.put_resource(&record)?;
        Ok(())
    }

    /// Stops a running VM because the key of one of its disks cannot be used.
    pub(crate) fn stop_vm_for_key(
        &self,
        vm_id: &str,
        disk_id: &str,
        reason: &str,
    ) -> Result<(), ControlError> {
        let Some(mut record) = self.store.resource(vm_id)? else {
            return Ok(());
        };
        self.end_vm_exports(vm_id);
        if Power::of(&record.body) == Power::Running {
            let disk = disk_id.rsplit('/').next().unwrap_or(disk_id);
            record.body["internal"] = json!({
                "power": Power::Stopped.code(),
                "statusMessage": format!("The VM was stopped because the key of disk '{disk}' cannot be used: {reason}."),
            });
            self.store.put_resource(&record)?;
        }
        Ok(())
    }

    /// Deletes a VM; its disks stay, detached (`deleteOption: Detach`).
    pub fn delete_vm(
        &self,
        subscription: &str,
        group: &str,
        name: &str,
    ) -> Result<bool, ControlError> {
        let record = match self.vm_record(subscription, group, name) {
            Ok(r) => r,
            Err(ControlError::ResourceNotFound { .. }) => return Ok(false),
            Err(e) => return Err(e),
        };
        self.end_vm_exports(&record.id);
        for (_, disk) in vm_disks(&record.body) {
            if self.store.resource(&disk)?.is_some() {
                self.set_disk_attachment(&disk, None, "Unattached")?;
            }
        }
        self.store.delete_resource(&record.id)?;
        Ok(true)
    }

    /// The instance view: power state, and each disk with its NBD export while running.
    pub fn vm_instance_view(
        &self,
        subscription: &str,
        group: &str,
        name: &str,
    ) -> Result<Value, ControlError> {
        let record = self.vm_record(subscription, group, name)?;
        let power = Power::of(&record.body);
        let exports = self.vm_exports(&record.id);
        let mut disks = Vec::new();
        for (_, disk_id) in vm_disks(&record.body) {
            let disk_name = disk_id.rsplit('/').next().unwrap_or_default();
            let mut statuses = vec![json!({
                "code": "ProvisioningState/succeeded",
                "level": "Info",
                "displayStatus": "Provisioning succeeded",
            })];
            if let Some((_, uri)) = exports
                .iter()
                .find(|(d, _)| d.eq_ignore_ascii_case(&disk_id))
            {
                statuses.push(json!({
                    "code": "NbdExport/ready",
                    "level": "Info",
                    "displayStatus": "Exported over NBD",
                    "message": uri,
                }));
            }
            disks.push(json!({"name": disk_name, "statuses": statuses}));
        }
        let mut power_status = json!({
            "code": format!("PowerState/{}", power.code()),
            "level": "Info",
            "displayStatus": power.display(),
        });
        if let Some(message) = record.body["internal"]["statusMessage"].as_str() {
            power_status["level"] = json!("Warning");
            power_status["message"] = json!(message);
        }
        Ok(json!({
            "computerName": record.body["properties"]["osProfile"]["computerName"].as_str().unwrap_or(name),
            "disks": disks,
            "statuses": [
                {"code": "ProvisioningState/succeeded", "level": "Info", "displayStatus": "Provisioning succeeded"},
                power_status,
            ],
        }))
    }

    /// Re-exports the disks of VMs that were running when the server stopped.
    pub fn resume_running_vms(&self) -> Result<Vec<(String, String)>, ControlError> {
        let vms = self.store.resources(&ResourceQuery {
            resource_type: Some(VM_TYPE),
            ..Default::default()
        })?;
        let mut failed = Vec::new();
        for vm in vms {
            if Power::of(&vm.body) != Power::Running {
                continue;
            }
            for (_, disk) in vm_disks(&vm.body) {
                let result = self
                    .store
                    .resource(&disk)?
                    .ok_or_else(|| invalid("disk", "missing"))
                    .and_then(|d| self.export_for_vm(&d, &vm.id));
                if let Err(e) = result {
                    self.stop_vm_for_key(&vm.id, &disk, &e.to_string())?;
                    failed.push((vm.id.clone(), e.to_string()));
                    break;
                }
            }
        }
        Ok(failed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::Fixture;

    fn vm_input() -> VmInput {
        serde_json::from_value(json!({
            "location": "eastus",
            "properties": {
                "hardwareProfile": {"vmSize": "Standard_DS1_v2"},
                "storageProfile": {
                    "imageReference": {"publisher": "Canonical", "offer": "UbuntuServer", "sku": "18.04-LTS", "version": "latest"},
                    "osDisk": {"createOption": "FromImage", "name": "my-vm-osdisk"},
                    "dataDisks": [{"lun": 0, "createOption": "Empty", "diskSizeGB": 4, "name": "my-vm-datadisk-01"}],
                },
                "osProfile": {"computerName": "my-vm", "adminUsername": "azureuser", "adminPassword": "secret"},
            },
        }))
        .unwrap()
    }

    fn disk_state(f: &Fixture, name: &str) -> (Value, Value) {
        let d = f.plane.disk(&f.sub, "g", name).unwrap();
        (d["properties"]["diskState"].clone(), d["managedBy"].clone())
    }

    #[test]
    fn a_vm_owns_its_disks_and_exports_them_only_while_running() {
        let f = Fixture::with_data_plane();
        let (vm, created) = f.plane.put_vm(&f.sub, "g", "my-vm", vm_input()).unwrap();
        assert!(created);
        assert!(vm["properties"]["osProfile"].get("adminPassword").is_none());
        assert!(vm.get("internal").is_none());
        let id = vm["id"].as_str().unwrap().to_string();
        let (state, owner) = disk_state(&f, "my-vm-osdisk");
        assert_eq!(
            (state, owner.as_str()),
            (json!("Attached"), Some(id.as_str()))
        );
        assert_eq!(
            f.plane.disk(&f.sub, "g", "my-vm-osdisk").unwrap()["properties"]["diskSizeGB"],
            30
        );
        assert_eq!(f.plane.vm_exports(&id).len(), 2);
        let view = f.plane.vm_instance_view(&f.sub, "g", "my-vm").unwrap();
        assert_eq!(view["statuses"][1]["code"], "PowerState/running");
        assert_eq!(view["disks"][1]["statuses"][1]["code"], "NbdExport/ready");

        f.plane
            .vm_action(&f.sub, "g", "my-vm", VmAction::Deallocate)
            .unwrap();
        assert!(f.plane.vm_exports(&id).is_empty());
        assert_eq!(disk_state(&f, "my-vm-datadisk-01").0, "Reserved");
        let view = f.plane.vm_instance_view(&f.sub, "g", "my-vm").unwrap();
        assert_eq!(view["statuses"][1]["code"], "PowerState/deallocated");

        f.plane
            .vm_action(&f.sub, "g", "my-vm", VmAction::Start)
            .unwrap();
        assert_eq!(f.plane.vm_exports(&id).len(), 2);
        assert_eq!(disk_state(&f, "my-vm-datadisk-01").0, "Attached");
        let err = f
            .plane
            .delete_disk(&f.sub, "g", "my-vm-datadisk-01")
            .unwrap_err();
        assert!(matches!(err, ControlError::OperationNotAllowed(_)), "{err}");

        assert!(f.plane.delete_vm(&f.sub, "g", "my-vm").unwrap());
        assert!(f.plane.vm_exports(&id).is_empty());
        let (state, owner) = disk_state(&f, "my-vm-osdisk");
        assert_eq!((state, owner), (json!("Unattached"), Value::Null));
    }

    #[test]
    fn a_vm_shows_its_disks_current_sku() {
        let f = Fixture::with_data_plane();
        f.plane.put_vm(&f.sub, "g", "vm", vm_input()).unwrap();
        let patch = crate::disks::DiskPatch {
            sku: Some(serde_json::from_value(json!({"name": "StandardSSD_LRS"})).unwrap()),
            ..Default::default()
        };
        f.plane
            .patch_disk(&f.sub, "g", "my-vm-datadisk-01", patch)
            .unwrap();
        let vm = f.plane.vm(&f.sub, "g", "vm").unwrap();
        let data = &vm["properties"]["storageProfile"]["dataDisks"][0]["managedDisk"];
        assert_eq!(data["storageAccountType"], "StandardSSD_LRS");
        assert!(data.get("diskEncryptionSet").is_none());
    }

    #[test]
    fn attaching_a_disk_by_id_and_detaching_it_again() {
        let f = Fixture::with_data_plane();
        let (vm, _) = f.plane.put_vm(&f.sub, "g", "vm1", vm_input()).unwrap();
        let extra: DiskInput = serde_json::from_value(json!({
            "location": "eastus",
            "properties": {"creationData": {"createOption": "Empty"}, "diskSizeGB": 1},
        }))
        .unwrap();
        let (disk, _) = f.plane.put_disk(&f.sub, "g", "extra", extra).unwrap();
        let mut props = vm["properties"].clone();
        props["storageProfile"]["dataDisks"]
            .as_array_mut()
            .unwrap()
            .push(json!({"lun": 1, "createOption": "Attach", "managedDisk": {"id": disk["id"]}}));
        let input = VmInput {
            location: Some("eastus".into()),
            tags: None,
            properties: props.clone(),
        };
        f.plane.put_vm(&f.sub, "g", "vm1", input).unwrap();
        assert_eq!(disk_state(&f, "extra").0, "Attached");
        assert_eq!(f.plane.vm_exports(vm["id"].as_str().unwrap()).len(), 3);
        props["storageProfile"]["dataDisks"]
            .as_array_mut()
            .unwrap()
            .pop();
        let input = VmInput {
            location: None,
            tags: None,
            properties: props,
        };
        f.plane.put_vm(&f.sub, "g", "vm1", input).unwrap();
        assert_eq!(disk_state(&f, "extra"), (json!("Unattached"), Value::Null));
        assert_eq!(f.plane.vm_exports(vm["id"].as_str().unwrap()).len(), 2);
    }
}

/// Scale sets: a `Microsoft.Compute/virtualMachineScaleSets` resource whose instances are VMs
/// named `{set}_{n}`, each with the OS and data disks of the set's `virtualMachineProfile`.
pub mod scale_sets {
    use serde_json::{Value, json};

    use super::{VmInput, invalid};
    use crate::store::ResourceRecord;
    use crate::{ControlError, ControlPlane};

    pub const VMSS_TYPE: &str = "Microsoft.Compute/virtualMachineScaleSets";
    /// Instances made when the request gives no capacity (as `az vmss create`).
    const DEFAULT_CAPACITY: u64 = 2;
    const MAX_CAPACITY: u64 = 100;

    impl ControlPlane {
        fn vmss_id(&self, group: &str, name: &str) -> String {
            format!(
                "{}/resourceGroups/{group}/providers/{VMSS_TYPE}/{name}",
                self.subscription_scope()
            )
        }

        fn vmss_record(
            &self,
            subscription: &str,
            group: &str,
            name: &str,
        ) -> Result<ResourceRecord, ControlError> {
            self.typed_record(
                subscription,
                group,
                self.vmss_id(group, name),
                VMSS_TYPE,
                name,
            )
        }

        pub fn vmss(
            &self,
            subscription: &str,
            group: &str,
            name: &str,
        ) -> Result<Value, ControlError> {
            Ok(Self::present(
                self.vmss_record(subscription, group, name)?.body,
            ))
        }

        /// The instance VMs of a scale set.
        pub fn vmss_instances(
            &self,
            subscription: &str,
            group: &str,
            name: &str,
        ) -> Result<Vec<Value>, ControlError> {
            let record = self.vmss_record(subscription, group, name)?;
            let mut out = Vec::new();
            for id in record.body["internal"]["instances"]
                .as_array()
                .into_iter()
                .flatten()
            {
                if let Some(vm) = id
                    .as_str()
                    .map(|id| self.store.resource(id))
                    .transpose()?
                    .flatten()
                {
                    out.push(Self::present(vm.body));
                }
            }
            Ok(out)
        }

        /// Creates a scale set and its instances (each a VM with its own disks). Only creation
        /// is offered: a PUT on an existing set updates its tags.
        pub fn put_vmss(
            &self,
            subscription: &str,
            group: &str,
            name: &str,
            input: VmInput,
            capacity: Option<u64>,
        ) -> Result<(Value, bool), ControlError> {
            self.check_subscription(subscription)?;
            self.resource_group(subscription, group)?;
            if !crate::disks::valid_disk_name(name) {
                return Err(invalid(
                    "vmScaleSetName",
                    format!("'{name}' is not a valid name"),
                ));
            }
            let id = self.vmss_id(group, name);
            if let Some(mut existing) = self.store.resource(&id)? {
                if let Some(tags) = input.tags {
                    existing.body["tags"] = json!(tags);
                }
                self.store.put_resource(&existing)?;
                return Ok((Self::present(existing.body), false));
            }
            let location = self.location(input.location.as_deref().unwrap_or_default())?;
            let capacity = capacity.unwrap_or(DEFAULT_CAPACITY);
            if !(1..=MAX_CAPACITY).contains(&capacity) {
                return Err(invalid(
                    "sku.capacity",
                    format!("{capacity} must be 1 to {MAX_CAPACITY}"),
                ));
            }
            let profile = &input.properties["virtualMachineProfile"];
            if !profile["storageProfile"].is_object() {
                return Err(invalid(
                    "virtualMachineProfile.storageProfile",
                    "is required",
                ));
            }
            let mut instances = Vec::new();
            for n in 0..capacity {
                let vm_name = format!("{name}_{n}");
                let mut properties = profile.clone();
                if let Some(o) = properties["storageProfile"]["osDisk"].as_object_mut() {
                    o.remove("name");
                }
                properties["osProfile"]["computerName"] = json!(format!(
                    "{}{n:06}",
                    profile["osProfile"]["computerNamePrefix"]
                        .as_str()
                        .unwrap_or(name)
                ));
                let vm = VmInput {
                    location: Some(location.to_string()),
                    tags: None,
                    properties,
                };
                match self.put_vm(subscription, group, &vm_name, vm) {
                    Ok((vm, _)) => instances.push(vm["id"].clone()),
                    Err(e) => {
                        for done in instances.iter().filter_map(Value::as_str) {
                            let _ = self.delete_vm_and_disks(done);
                        }
                        return Err(e);
                    }
                }
            }
            let mut properties = input.properties.clone();
            properties["provisioningState"] = json!("Succeeded");
            if let Some(p) = properties["virtualMachineProfile"]["osProfile"].as_object_mut() {
                p.remove("adminPassword");
                p.remove("customData");
            }
            let body = json!({
                "id": id,
                "name": name,
                "type": VMSS_TYPE,
                "location": location,
                "tags": input.tags.unwrap_or_default(),
                "sku": {"name": "Standard_DS1_v2", "tier": "Standard", "capacity": capacity},
                "properties": properties,
                "internal": {"instances": instances},
            });
            self.store.put_resource(&ResourceRecord {
                id,
                resource_type: VMSS_TYPE.into(),
                body: body.clone(),
            })?;
            Ok((Self::present(body), true))
        }

        /// Deletes an instance VM and the disks it was created with.
        fn delete_vm_and_disks(&self, vm_id: &str) -> Result<(), ControlError> {
            let Some(vm) = self.store.resource(vm_id)? else {
                return Ok(());
            };
            let disks = super::vm_disks(&vm.body);
            self.end_vm_exports(vm_id);
            self.store.delete_resource(vm_id)?;
            for (_, disk) in disks {
                if let Some(record) = self.store.resource(&disk)? {
                    self.destroy_disk(&record)?;
                }
            }
            Ok(())
        }

        /// Deletes a scale set with its instances and their disks. `false` if there was none.
        pub fn delete_vmss(
            &self,
            subscription: &str,
            group: &str,
            name: &str,
        ) -> Result<bool, ControlError> {
            let record = match self.vmss_record(subscription, group, name) {
                Ok(r) => r,
                Err(ControlError::ResourceNotFound { .. }) => return Ok(false),
                Err(e) => return Err(e),
            };
            for id in record.body["internal"]["instances"]
                .as_array()
                .into_iter()
                .flatten()
            {
                if let Some(id) = id.as_str() {
                    self.delete_vm_and_disks(id)?;
                }
            }
            self.store.delete_resource(&record.id)?;
            Ok(true)
        }

        pub fn vmss_list(
            &self,
            subscription: &str,
            group: Option<&str>,
        ) -> Result<Vec<Value>, ControlError> {
            self.typed_list(subscription, group, VMSS_TYPE)
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;
        use crate::testing::Fixture;

        #[test]
        fn a_scale_set_makes_instances_with_their_own_disks_and_deletes_them() {
            let f = Fixture::with_data_plane();
            let input: VmInput = serde_json::from_value(json!({
                "location": "eastus",
                "properties": {
                    "upgradePolicy": {"mode": "Automatic"},
                    "virtualMachineProfile": {
                        "storageProfile": {
                            "imageReference": {"publisher": "Canonical", "offer": "UbuntuServer", "sku": "18.04-LTS", "version": "latest"},
                            "osDisk": {"createOption": "FromImage"},
                            "dataDisks": [
                                {"lun": 0, "createOption": "Empty", "diskSizeGB": 64},
                                {"lun": 1, "createOption": "Empty", "diskSizeGB": 128},
                            ],
                        },
                        "osProfile": {"computerNamePrefix": "ss", "adminUsername": "azureuser"},
                    },
                },
            }))
            .unwrap();
            let (set, created) = f.plane.put_vmss(&f.sub, "g", "ss", input, None).unwrap();
            assert!(created);
            assert_eq!(set["sku"]["capacity"], 2);
            let instances = f.plane.vmss_instances(&f.sub, "g", "ss").unwrap();
            assert_eq!(instances.len(), 2);
            assert_eq!(instances[0]["type"], super::super::VM_TYPE);
            assert_eq!(f.plane.disks(&f.sub, Some("g")).unwrap().len(), 6);
            assert!(f.plane.delete_vmss(&f.sub, "g", "ss").unwrap());
            assert!(f.plane.disks(&f.sub, Some("g")).unwrap().is_empty());
            assert!(f.plane.vms(&f.sub, Some("g")).unwrap().is_empty());
        }
    }
}
