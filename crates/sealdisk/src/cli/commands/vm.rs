//! `vm create|show|list|delete|start|stop|deallocate|restart|get-instance-view` and
//! `vm disk attach|detach` (Microsoft.Compute virtual machines, by direct PUT).

use reqwest::{Method, Url};
use serde_json::{Value, json};

use super::group::{group_location, parse_tags, path_segment};
use super::{flattened as shape, resource_group_of};
use crate::cli::error::{CliError, CliResult, ServiceKind};
use crate::cli::lro::LroMethod;
use crate::cli::output::Outcome;
use crate::cli::session::{Session, api_version};
use crate::cli::{Ctx, SubscriptionArg, YesArg};

/// `-g` and `-n`.
#[derive(Debug, Clone, clap::Args)]
pub struct VmName {
    /// Name of resource group.
    #[arg(short = 'g', long = "resource-group", value_name = "NAME")]
    pub resource_group: String,
    /// The name of the virtual machine.
    #[arg(
        short = 'n',
        long = "name",
        visible_alias = "vm-name",
        value_name = "NAME"
    )]
    pub name: String,
    #[command(flatten)]
    pub sub: SubscriptionArg,
}

/// `vm` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum VmCommand {
    /// Create a virtual machine with an OS disk and data disks.
    Create(Box<CreateArgs>),
    /// Get the details of a virtual machine.
    Show {
        #[command(flatten)]
        vm: VmName,
        /// Show details: power state and each disk's NBD export.
        #[arg(short = 'd', long = "show-details")]
        show_details: bool,
    },
    /// List virtual machines.
    List {
        /// Name of resource group.
        #[arg(short = 'g', long = "resource-group")]
        resource_group: Option<String>,
        #[command(flatten)]
        sub: SubscriptionArg,
    },
    /// Delete a virtual machine (its disks are kept, detached).
    Delete {
        #[command(flatten)]
        vm: VmName,
        #[command(flatten)]
        yes: YesArg,
        /// Do not wait for the long-running operation to finish.
        #[arg(long)]
        no_wait: bool,
    },
    /// Start a stopped or deallocated virtual machine.
    Start {
        #[command(flatten)]
        vm: VmName,
        /// Do not wait for the long-running operation to finish.
        #[arg(long)]
        no_wait: bool,
    },
    /// Power off (stop) a running virtual machine; it stays allocated.
    Stop {
        #[command(flatten)]
        vm: VmName,
        /// Do not wait for the long-running operation to finish.
        #[arg(long)]
        no_wait: bool,
    },
    /// Deallocate a virtual machine: its disks' exports close and their keys leave memory.
    Deallocate {
        #[command(flatten)]
        vm: VmName,
        /// Do not wait for the long-running operation to finish.
        #[arg(long)]
        no_wait: bool,
    },
    /// Restart a virtual machine.
    Restart {
        #[command(flatten)]
        vm: VmName,
        /// Do not wait for the long-running operation to finish.
        #[arg(long)]
        no_wait: bool,
    },
    /// Get the instance view of a virtual machine.
    GetInstanceView {
        #[command(flatten)]
        vm: VmName,
    },
    /// Manage the data disks of a virtual machine.
    #[command(subcommand)]
    Disk(VmDiskCommand),
}

/// `vm create` options (az's names).
#[derive(Debug, clap::Args)]
pub struct CreateArgs {
    #[command(flatten)]
    vm: VmName,
    /// Image alias (e.g. UbuntuLTS) or URN publisher:offer:sku:version.
    #[arg(long)]
    image: Option<String>,
    /// Name or ID of an existing managed disk to attach as the OS disk.
    #[arg(long)]
    attach_os_disk: Option<String>,
    /// Names or IDs of existing managed disks to attach as data disks.
    #[arg(long, num_args = 1..)]
    attach_data_disks: Vec<String>,
    /// Sizes in GiB of new empty data disks.
    #[arg(long, num_args = 1..)]
    data_disk_sizes_gb: Vec<u64>,
    /// Name or ID of the disk encryption set for the OS disk.
    #[arg(long)]
    os_disk_encryption_set: Option<String>,
    /// Names or IDs of disk encryption sets for the new data disks, one per disk.
    #[arg(long, num_args = 1..)]
    data_disk_encryption_sets: Vec<String>,
    /// Name of the new OS disk.
    #[arg(long)]
    os_disk_name: Option<String>,
    /// Size of the new OS disk in GiB.
    #[arg(long)]
    os_disk_size_gb: Option<u64>,
    /// The SKU of the new disks.
    #[arg(long)]
    storage_sku: Option<String>,
    /// The VM size.
    #[arg(long, default_value = "Standard_DS1_v2")]
    size: String,
    /// Location. Defaults to the resource group's location.
    #[arg(short = 'l', long)]
    location: Option<String>,
    /// Username for the VM.
    #[arg(long)]
    admin_username: Option<String>,
    /// Password for the VM (write-only).
    #[arg(long)]
    admin_password: Option<String>,
    /// Accepted for az compatibility: no SSH keys are needed by a sealdisk VM.
    #[arg(long)]
    generate_ssh_keys: bool,
    /// Public SSH keys to install.
    #[arg(long, num_args = 1..)]
    ssh_key_values: Vec<String>,
    /// Linux or Windows (for attached OS disks).
    #[arg(long)]
    os_type: Option<String>,
    /// Space-separated tags: key[=value] [key[=value] ...].
    #[arg(long, num_args = 0.., value_name = "KEY=VALUE")]
    tags: Option<Vec<String>>,
    /// Do not wait for the long-running operation to finish.
    #[arg(long)]
    no_wait: bool,
}

/// `vm disk` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum VmDiskCommand {
    /// Attach a managed disk to a virtual machine.
    Attach {
        /// Name of resource group.
        #[arg(short = 'g', long = "resource-group")]
        resource_group: Option<String>,
        /// The name of the virtual machine.
        #[arg(long)]
        vm_name: String,
        /// The name or ID of the disk.
        #[arg(short = 'n', long = "name", visible_alias = "disk")]
        name: Option<String>,
        /// The ID of the disk (az's `--ids`).
        #[arg(long)]
        ids: Option<String>,
        /// The logical unit number; defaults to the first free one.
        #[arg(long)]
        lun: Option<u64>,
        #[command(flatten)]
        sub: SubscriptionArg,
    },
    /// Detach a managed disk from a virtual machine.
    Detach {
        /// Name of resource group.
        #[arg(short = 'g', long = "resource-group")]
        resource_group: String,
        /// The name of the virtual machine.
        #[arg(long)]
        vm_name: String,
        /// The data disk name.
        #[arg(short = 'n', long = "name")]
        name: String,
        #[command(flatten)]
        sub: SubscriptionArg,
    },
}

/// Runs a `vm` subcommand.
pub async fn run(ctx: &Ctx, cmd: VmCommand) -> CliResult<Outcome> {
    let mut session = ctx.session()?;
    let outcome = match cmd {
        VmCommand::Create(args) => create(&mut session, *args).await?,
        VmCommand::Show { vm, show_details } => {
            let url = vm_url(&session, &vm, "", &[])?;
            let mut out = session.arm(Method::GET, url, None).await?.map(shape);
            if show_details && let Some(v) = out.as_mut() {
                let view = instance_view(&mut session, &vm).await?;
                add_details(v, &view);
            }
            Outcome {
                value: out,
                table: None,
            }
        }
        VmCommand::List {
            resource_group,
            sub,
        } => {
            let sub_id = session.subscription_id(sub.subscription.as_deref())?;
            let path = match &resource_group {
                Some(g) => format!(
                    "subscriptions/{sub_id}/resourceGroups/{}/providers/Microsoft.Compute/virtualMachines",
                    path_segment(g)?
                ),
                None => {
                    format!("subscriptions/{sub_id}/providers/Microsoft.Compute/virtualMachines")
                }
            };
            let url = session.arm_url(&path, api_version::VIRTUAL_MACHINES, &[])?;
            let (items, _) = session.list(ServiceKind::Arm, url, false).await?;
            Outcome::with_table(
                Value::Array(items.into_iter().map(shape).collect()),
                vm_table,
            )
        }
        VmCommand::Delete { vm, yes, no_wait } => {
            if !yes.yes && !ctx.confirm("Are you sure you want to perform this operation?")? {
                return Ok(Outcome::nothing());
            }
            let url = vm_url(&session, &vm, "", &[])?;
            session
                .arm_lro(LroMethod::Delete, url, None, no_wait)
                .await?;
            Outcome::nothing()
        }
        VmCommand::Start { vm, no_wait } => action(&mut session, &vm, "start", no_wait).await?,
        VmCommand::Stop { vm, no_wait } => action(&mut session, &vm, "powerOff", no_wait).await?,
        VmCommand::Deallocate { vm, no_wait } => {
            action(&mut session, &vm, "deallocate", no_wait).await?
        }
        VmCommand::Restart { vm, no_wait } => action(&mut session, &vm, "restart", no_wait).await?,
        VmCommand::GetInstanceView { vm } => {
            let url = vm_url(&session, &vm, "", &[("$expand", "instanceView")])?;
            Outcome::value(
                session
                    .arm(Method::GET, url, None)
                    .await?
                    .map(shape)
                    .unwrap_or(Value::Null),
            )
        }
        VmCommand::Disk(cmd) => disk(&mut session, cmd).await?,
    };
    session.save()?;
    Ok(outcome)
}

async fn action(
    session: &mut Session,
    vm: &VmName,
    verb: &str,
    no_wait: bool,
) -> CliResult<Outcome> {
    let url = vm_url(session, vm, &format!("/{verb}"), &[])?;
    session.arm_lro(LroMethod::Post, url, None, no_wait).await?;
    Ok(Outcome::nothing())
}

async fn instance_view(session: &mut Session, vm: &VmName) -> CliResult<Value> {
    let url = vm_url(session, vm, "/instanceView", &[])?;
    Ok(session
        .arm(Method::GET, url, None)
        .await?
        .unwrap_or(Value::Null))
}

/// `show -d`: the power state (az's `powerState`) and each disk's NBD export.
fn add_details(vm: &mut Value, view: &Value) {
    let power = view["statuses"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|s| {
            s["code"]
                .as_str()
                .is_some_and(|c| c.starts_with("PowerState/"))
        })
        .and_then(|s| s["displayStatus"].as_str())
        .unwrap_or_default()
        .to_owned();
    let mut exports = serde_json::Map::new();
    for d in view["disks"].as_array().into_iter().flatten() {
        let uri = d["statuses"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|s| s["code"] == "NbdExport/ready")
            .and_then(|s| s["message"].as_str());
        if let (Some(name), Some(uri)) = (d["name"].as_str(), uri) {
            exports.insert(name.to_owned(), Value::String(uri.to_owned()));
        }
    }
    if let Some(o) = vm.as_object_mut() {
        o.insert("powerState".into(), Value::String(power));
        o.insert("nbdExports".into(), Value::Object(exports));
        for k in ["fqdns", "privateIps", "publicIps", "macAddresses"] {
            o.entry(k).or_insert(Value::String(String::new()));
        }
    }
}

/// A disk given by name (in the VM's resource group) or by id.
fn disk_id(session: &Session, vm: &VmName, disk: &str) -> CliResult<String> {
    resource_id(session, vm, "disks", disk)
}

pub(super) fn resource_id(
    session: &Session,
    vm: &VmName,
    kind: &str,
    name: &str,
) -> CliResult<String> {
    if name.starts_with('/') {
        return Ok(name.to_owned());
    }
    let sub_id = session.subscription_id(vm.sub.subscription.as_deref())?;
    Ok(format!(
        "/subscriptions/{sub_id}/resourceGroups/{}/providers/Microsoft.Compute/{kind}/{}",
        vm.resource_group,
        path_segment(name)?
    ))
}

pub(super) fn managed_disk(sku: Option<&str>, set: Option<String>) -> Value {
    let mut m = json!({});
    if let Some(sku) = sku {
        m["storageAccountType"] = json!(sku);
    }
    if let Some(set) = set {
        m["diskEncryptionSet"] = json!({"id": set});
    }
    m
}

/// Known image aliases and their image references.
pub(super) fn image_reference(image: &str) -> Value {
    let parts: Vec<&str> = image.split(':').collect();
    if let [publisher, offer, sku, version] = parts.as_slice() {
        return json!({"publisher": publisher, "offer": offer, "sku": sku, "version": version});
    }
    if image.starts_with('/') {
        return json!({"id": image});
    }
    match image.to_ascii_lowercase().as_str() {
        "ubuntults" => {
            json!({"publisher": "Canonical", "offer": "UbuntuServer", "sku": "18.04-LTS", "version": "latest"})
        }
        "ubuntu2204" => {
            json!({"publisher": "Canonical", "offer": "0001-com-ubuntu-server-jammy", "sku": "22_04-lts-gen2", "version": "latest"})
        }
        _ => json!({"publisher": "sealdisk", "offer": image, "sku": image, "version": "latest"}),
    }
}

async fn create(session: &mut Session, a: CreateArgs) -> CliResult<Outcome> {
    let vm = &a.vm;
    let location = match &a.location {
        Some(l) => l.clone(),
        None => group_location(session, &vm.sub, &vm.resource_group).await?,
    };
    let set = |s: &Option<String>| -> CliResult<Option<String>> {
        s.as_deref()
            .map(|s| resource_id(session, vm, "diskEncryptionSets", s))
            .transpose()
    };
    let sku = a.storage_sku.as_deref();
    let mut storage = json!({});
    match (&a.attach_os_disk, &a.image) {
        (Some(disk), _) => {
            storage["osDisk"] = json!({
                "createOption": "Attach",
                "osType": a.os_type.clone().unwrap_or_else(|| "Linux".into()),
                "managedDisk": {"id": disk_id(session, vm, disk)?},
            });
        }
        (None, Some(image)) => {
            storage["imageReference"] = image_reference(image);
            let mut os = json!({
                "createOption": "FromImage",
                "caching": "ReadWrite",
                "osType": a.os_type.clone().unwrap_or_else(|| "Linux".into()),
                "managedDisk": managed_disk(sku, set(&a.os_disk_encryption_set)?),
            });
            if let Some(n) = &a.os_disk_name {
                os["name"] = json!(n);
            }
            if let Some(gb) = a.os_disk_size_gb {
                os["diskSizeGB"] = json!(gb);
            }
            storage["osDisk"] = os;
        }
        (None, None) => {
            return Err(CliError::Usage("give --image or --attach-os-disk".into()));
        }
    }
    if !a.data_disk_encryption_sets.is_empty()
        && a.data_disk_encryption_sets.len() != a.data_disk_sizes_gb.len()
    {
        return Err(CliError::Usage(
            "--data-disk-encryption-sets needs one set per --data-disk-sizes-gb entry".into(),
        ));
    }
    let mut data = Vec::new();
    let mut lun = 0u64;
    for (i, gb) in a.data_disk_sizes_gb.iter().enumerate() {
        let set = a
            .data_disk_encryption_sets
            .get(i)
            .map(|s| resource_id(session, vm, "diskEncryptionSets", s))
            .transpose()?;
        data.push(json!({
            "lun": lun,
            "createOption": "Empty",
            "diskSizeGB": gb,
            "caching": "None",
            "managedDisk": managed_disk(sku, set),
        }));
        lun += 1;
    }
    for disk in &a.attach_data_disks {
        data.push(json!({
            "lun": lun,
            "createOption": "Attach",
            "managedDisk": {"id": disk_id(session, vm, disk)?},
        }));
        lun += 1;
    }
    storage["dataDisks"] = json!(data);
    let mut os_profile = json!({
        "computerName": vm.name,
        "adminUsername": a.admin_username.clone().unwrap_or_else(|| "azureuser".into()),
    });
    if let Some(p) = &a.admin_password {
        os_profile["adminPassword"] = json!(p);
    }
    if !a.ssh_key_values.is_empty() {
        os_profile["linuxConfiguration"] = json!({
            "disablePasswordAuthentication": true,
            "ssh": {"publicKeys": a.ssh_key_values.iter().map(|k| json!({"keyData": k})).collect::<Vec<_>>()},
        });
    }
    let mut body = json!({
        "location": location,
        "properties": {
            "hardwareProfile": {"vmSize": a.size},
            "storageProfile": storage,
            "osProfile": os_profile,
        },
    });
    if a.attach_os_disk.is_some()
        && let Some(p) = body["properties"].as_object_mut()
    {
        p.remove("osProfile");
    }
    if let Some(tags) = &a.tags {
        body["tags"] = parse_tags(tags)?;
    }
    let url = vm_url(session, vm, "", &[])?;
    let created = session
        .arm_lro(LroMethod::Put, url, Some(&body), a.no_wait)
        .await?;
    let Some(created) = created else {
        return Ok(Outcome::nothing());
    };
    let view = instance_view(session, vm).await?;
    let mut details = shape(created);
    add_details(&mut details, &view);
    Ok(Outcome::value(json!({
        "fqdns": "",
        "id": details["id"],
        "location": details["location"],
        "macAddress": "",
        "powerState": details["powerState"],
        "privateIpAddress": "",
        "publicIpAddress": "",
        "resourceGroup": details["resourceGroup"],
        "nbdExports": details["nbdExports"],
    })))
}

/// An edit of a VM's `dataDisks`.
type DataDiskChange = Box<dyn FnOnce(&mut Vec<Value>) -> CliResult<()>>;

async fn disk(session: &mut Session, cmd: VmDiskCommand) -> CliResult<Outcome> {
    let (vm, change): (VmName, DataDiskChange) = match cmd {
        VmDiskCommand::Attach {
            resource_group,
            vm_name,
            name,
            ids,
            lun,
            sub,
        } => {
            let disk = ids
                .or(name)
                .ok_or_else(|| CliError::Usage("give the disk with --ids or --name".into()))?;
            let group = match (&resource_group, disk.starts_with('/')) {
                (Some(g), _) => g.clone(),
                (None, true) => resource_group_of(&disk).unwrap_or_default(),
                (None, false) => {
                    return Err(CliError::Usage(
                        "give --resource-group or the disk's full id".into(),
                    ));
                }
            };
            let vm = VmName {
                resource_group: group,
                name: vm_name,
                sub,
            };
            let id = disk_id(session, &vm, &disk)?;
            (
                vm,
                Box::new(move |disks: &mut Vec<Value>| {
                    let lun = lun.unwrap_or_else(|| {
                        (0..)
                            .find(|l| !disks.iter().any(|d| d["lun"] == json!(l)))
                            .unwrap_or(0)
                    });
                    disks.push(
                        json!({"lun": lun, "createOption": "Attach", "managedDisk": {"id": id}}),
                    );
                    Ok(())
                }),
            )
        }
        VmDiskCommand::Detach {
            resource_group,
            vm_name,
            name,
            sub,
        } => (
            VmName {
                resource_group,
                name: vm_name,
                sub,
            },
            Box::new(move |disks: &mut Vec<Value>| {
                let before = disks.len();
                disks.retain(|d| {
                    !d["name"]
                        .as_str()
                        .is_some_and(|n| n.eq_ignore_ascii_case(&name))
                });
                if disks.len() == before {
                    return Err(CliError::Usage(format!(
                        "no data disk named '{name}' is attached"
                    )));
                }
                Ok(())
            }),
        ),
    };
    let url = vm_url(session, &vm, "", &[])?;
    let current = session
        .arm(Method::GET, url.clone(), None)
        .await?
        .ok_or_else(|| CliError::BadResponse {
            url: url.to_string(),
            detail: "the VM GET returned no body".into(),
        })?;
    let mut disks: Vec<Value> = current["properties"]["storageProfile"]["dataDisks"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    change(&mut disks)?;
    let mut properties = current["properties"].clone();
    properties["storageProfile"]["dataDisks"] = json!(disks);
    let body =
        json!({"location": current["location"], "tags": current["tags"], "properties": properties});
    let result = session
        .arm_lro(LroMethod::Put, url, Some(&body), false)
        .await?;
    Ok(Outcome {
        value: result.map(shape),
        table: None,
    })
}

fn vm_url(session: &Session, vm: &VmName, action: &str, query: &[(&str, &str)]) -> CliResult<Url> {
    let sub_id = session.subscription_id(vm.sub.subscription.as_deref())?;
    session.arm_url(
        &format!(
            "subscriptions/{sub_id}/resourceGroups/{}/providers/Microsoft.Compute/virtualMachines/{}{action}",
            path_segment(&vm.resource_group)?,
            path_segment(&vm.name)?
        ),
        api_version::VIRTUAL_MACHINES,
        query,
    )
}

/// az's `vm list` table columns.
fn vm_table(result: &Value) -> Value {
    let row = |v: &Value| {
        json!({
            "Name": v["name"],
            "ResourceGroup": v["resourceGroup"],
            "Location": v["location"],
            "Zones": "",
        })
    };
    match result {
        Value::Array(rows) => Value::Array(rows.iter().map(row).collect()),
        one => row(one),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_aliases_and_urns() {
        assert_eq!(image_reference("UbuntuLTS")["publisher"], "Canonical");
        let urn = image_reference("Canonical:UbuntuServer:18.04-LTS:latest");
        assert_eq!(urn["sku"], "18.04-LTS");
        assert_eq!(
            image_reference("/subscriptions/s/images/i")["id"],
            "/subscriptions/s/images/i"
        );
    }

    #[test]
    fn details_carry_power_state_and_exports() {
        let mut vm = json!({"name": "vm"});
        add_details(
            &mut vm,
            &json!({
                "statuses": [{"code": "ProvisioningState/succeeded"}, {"code": "PowerState/running", "displayStatus": "VM running"}],
                "disks": [{"name": "os", "statuses": [{"code": "NbdExport/ready", "message": "nbds://h:1/x"}]}],
            }),
        );
        assert_eq!(vm["powerState"], "VM running");
        assert_eq!(vm["nbdExports"]["os"], "nbds://h:1/x");
    }
}
