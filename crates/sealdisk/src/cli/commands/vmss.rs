//! `vmss create|show|list|list-instances|delete` (Microsoft.Compute scale sets: each instance
//! is a VM with its own OS and data disks).

use reqwest::{Method, Url};
use serde_json::{Value, json};

use super::group::{group_location, parse_tags, path_segment};
use super::vm::{VmName, image_reference, managed_disk, resource_id};
use super::{capitalized, flattened as shape};
use crate::cli::error::{CliError, CliResult, ServiceKind};
use crate::cli::lro::LroMethod;
use crate::cli::output::Outcome;
use crate::cli::session::{Session, api_version};
use crate::cli::{Ctx, SubscriptionArg, YesArg};

/// `vmss` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum VmssCommand {
    /// Create a scale set: its instances are VMs with their own disks.
    Create(Box<CreateArgs>),
    /// Get the details of a scale set.
    Show {
        #[command(flatten)]
        vmss: VmName,
    },
    /// List scale sets.
    List {
        /// Name of resource group.
        #[arg(short = 'g', long = "resource-group")]
        resource_group: Option<String>,
        #[command(flatten)]
        sub: SubscriptionArg,
    },
    /// List the instances of a scale set.
    ListInstances {
        #[command(flatten)]
        vmss: VmName,
    },
    /// Delete a scale set with its instances and their disks.
    Delete {
        #[command(flatten)]
        vmss: VmName,
        #[command(flatten)]
        yes: YesArg,
        /// Do not wait for the long-running operation to finish.
        #[arg(long)]
        no_wait: bool,
    },
}

/// `vmss create` options (az's names).
#[derive(Debug, clap::Args)]
pub struct CreateArgs {
    #[command(flatten)]
    vmss: VmName,
    /// Image alias (e.g. UbuntuLTS) or URN publisher:offer:sku:version.
    #[arg(long)]
    image: String,
    /// Number of instances.
    #[arg(long, default_value_t = 2)]
    instance_count: u64,
    /// Upgrade policy: Automatic, Manual or Rolling.
    #[arg(long, default_value = "manual", ignore_case = true)]
    upgrade_policy: String,
    /// Name or ID of the disk encryption set for the OS disks.
    #[arg(long)]
    os_disk_encryption_set: Option<String>,
    /// Sizes in GiB of each instance's empty data disks.
    #[arg(long, num_args = 1..)]
    data_disk_sizes_gb: Vec<u64>,
    /// Names or IDs of disk encryption sets for the data disks, one per disk.
    #[arg(long, num_args = 1..)]
    data_disk_encryption_sets: Vec<String>,
    /// The SKU of the disks.
    #[arg(long)]
    storage_sku: Option<String>,
    /// The VM size of the instances.
    #[arg(long, default_value = "Standard_DS1_v2")]
    vm_sku: String,
    /// Location. Defaults to the resource group's location.
    #[arg(short = 'l', long)]
    location: Option<String>,
    /// Username for the instances.
    #[arg(long, default_value = "azureuser")]
    admin_username: String,
    /// Accepted for az compatibility: no SSH keys are needed.
    #[arg(long)]
    generate_ssh_keys: bool,
    /// Space-separated tags: key[=value] [key[=value] ...].
    #[arg(long, num_args = 0.., value_name = "KEY=VALUE")]
    tags: Option<Vec<String>>,
    /// Do not wait for the long-running operation to finish.
    #[arg(long)]
    no_wait: bool,
}

fn vmss_url(session: &Session, vmss: &VmName, action: &str) -> CliResult<Url> {
    let sub_id = session.subscription_id(vmss.sub.subscription.as_deref())?;
    session.arm_url(
        &format!(
            "subscriptions/{sub_id}/resourceGroups/{}/providers/Microsoft.Compute/virtualMachineScaleSets/{}{action}",
            path_segment(&vmss.resource_group)?,
            path_segment(&vmss.name)?
        ),
        api_version::VIRTUAL_MACHINES,
        &[],
    )
}

/// Runs a `vmss` subcommand.
pub async fn run(ctx: &Ctx, cmd: VmssCommand) -> CliResult<Outcome> {
    let mut session = ctx.session()?;
    let outcome = match cmd {
        VmssCommand::Create(a) => {
            let vmss = &a.vmss;
            let location = match &a.location {
                Some(l) => l.clone(),
                None => group_location(&mut session, &vmss.sub, &vmss.resource_group).await?,
            };
            if !a.data_disk_encryption_sets.is_empty()
                && a.data_disk_encryption_sets.len() != a.data_disk_sizes_gb.len()
            {
                return Err(CliError::Usage(
                    "--data-disk-encryption-sets needs one set per --data-disk-sizes-gb entry"
                        .into(),
                ));
            }
            let sku = a.storage_sku.as_deref();
            let os_set = a
                .os_disk_encryption_set
                .as_deref()
                .map(|s| resource_id(&session, vmss, "diskEncryptionSets", s))
                .transpose()?;
            let mut data = Vec::new();
            for (lun, gb) in a.data_disk_sizes_gb.iter().enumerate() {
                let set = a
                    .data_disk_encryption_sets
                    .get(lun)
                    .map(|s| resource_id(&session, vmss, "diskEncryptionSets", s))
                    .transpose()?;
                data.push(json!({
                    "lun": lun,
                    "createOption": "Empty",
                    "diskSizeGB": gb,
                    "managedDisk": managed_disk(sku, set),
                }));
            }
            let mut body = json!({
                "location": location,
                "sku": {"name": a.vm_sku, "capacity": a.instance_count},
                "properties": {
                    "upgradePolicy": {"mode": capitalized(&a.upgrade_policy)},
                    "virtualMachineProfile": {
                        "storageProfile": {
                            "imageReference": image_reference(&a.image),
                            "osDisk": {
                                "createOption": "FromImage",
                                "caching": "ReadWrite",
                                "managedDisk": managed_disk(sku, os_set),
                            },
                            "dataDisks": data,
                        },
                        "osProfile": {
                            "computerNamePrefix": vmss.name.chars().take(9).collect::<String>(),
                            "adminUsername": a.admin_username,
                        },
                    },
                },
            });
            if let Some(tags) = &a.tags {
                body["tags"] = parse_tags(tags)?;
            }
            let url = vmss_url(&session, vmss, "")?;
            let result = session
                .arm_lro(LroMethod::Put, url, Some(&body), a.no_wait)
                .await?;
            Outcome::value(json!({"vmss": result.map(shape)}))
        }
        VmssCommand::Show { vmss } => {
            let url = vmss_url(&session, &vmss, "")?;
            Outcome {
                value: session.arm(Method::GET, url, None).await?.map(shape),
                table: None,
            }
        }
        VmssCommand::List {
            resource_group,
            sub,
        } => {
            let sub_id = session.subscription_id(sub.subscription.as_deref())?;
            let path = match &resource_group {
                Some(g) => format!(
                    "subscriptions/{sub_id}/resourceGroups/{}/providers/Microsoft.Compute/virtualMachineScaleSets",
                    path_segment(g)?
                ),
                None => format!(
                    "subscriptions/{sub_id}/providers/Microsoft.Compute/virtualMachineScaleSets"
                ),
            };
            let url = session.arm_url(&path, api_version::VIRTUAL_MACHINES, &[])?;
            let (items, _) = session.list(ServiceKind::Arm, url, false).await?;
            Outcome::value(Value::Array(items.into_iter().map(shape).collect()))
        }
        VmssCommand::ListInstances { vmss } => {
            let url = vmss_url(&session, &vmss, "/virtualMachines")?;
            let (items, _) = session.list(ServiceKind::Arm, url, false).await?;
            Outcome::value(Value::Array(items.into_iter().map(shape).collect()))
        }
        VmssCommand::Delete { vmss, yes, no_wait } => {
            if !yes.yes && !ctx.confirm("Are you sure you want to perform this operation?")? {
                return Ok(Outcome::nothing());
            }
            let url = vmss_url(&session, &vmss, "")?;
            session
                .arm_lro(LroMethod::Delete, url, None, no_wait)
                .await?;
            Outcome::nothing()
        }
    };
    session.save()?;
    Ok(outcome)
}
