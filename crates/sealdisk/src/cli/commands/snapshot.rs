//! `snapshot create|show|list|delete|grant-access|revoke-access` and
//! `image create|show|list|delete` (Microsoft.Compute snapshots and images).

use reqwest::{Method, Url};
use serde_json::{Value, json};

use super::flattened as shape;
use super::group::{group_location, parse_tags, path_segment};
use crate::cli::error::{CliResult, ServiceKind};
use crate::cli::lro::LroMethod;
use crate::cli::output::Outcome;
use crate::cli::session::{Session, api_version};
use crate::cli::{Ctx, SubscriptionArg, YesArg};

/// `-g` and `-n`.
#[derive(Debug, Clone, clap::Args)]
pub struct Named {
    /// Name of resource group.
    #[arg(short = 'g', long = "resource-group", value_name = "NAME")]
    pub resource_group: String,
    /// The name of the resource.
    #[arg(short = 'n', long = "name", value_name = "NAME")]
    pub name: String,
    #[command(flatten)]
    pub sub: SubscriptionArg,
}

/// `-g` for lists.
#[derive(Debug, Clone, clap::Args)]
pub struct ListScope {
    /// Name of resource group.
    #[arg(short = 'g', long = "resource-group")]
    pub resource_group: Option<String>,
    #[command(flatten)]
    pub sub: SubscriptionArg,
}

/// `snapshot` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum SnapshotCommand {
    /// Create a snapshot (a full copy) of a disk or snapshot.
    Create {
        #[command(flatten)]
        snapshot: Named,
        /// Name or ID of the source disk or snapshot.
        #[arg(long)]
        source: String,
        /// Accepted as in Azure; sealdisk snapshots are full copies.
        #[arg(long, value_parser = clap::builder::BoolishValueParser::new())]
        incremental: Option<bool>,
        /// Underlying storage SKU.
        #[arg(long)]
        sku: Option<String>,
        /// Encryption type (defaults to the source's).
        #[arg(long)]
        encryption_type: Option<String>,
        /// Name or ID of the disk encryption set (must use the source's customer key).
        #[arg(long)]
        disk_encryption_set: Option<String>,
        /// Location. Defaults to the resource group's location.
        #[arg(short = 'l', long)]
        location: Option<String>,
        /// Space-separated tags: key[=value] [key[=value] ...].
        #[arg(long, num_args = 0.., value_name = "KEY=VALUE")]
        tags: Option<Vec<String>>,
        /// Do not wait for the long-running operation to finish.
        #[arg(long)]
        no_wait: bool,
    },
    /// Get information about a snapshot.
    Show {
        #[command(flatten)]
        snapshot: Named,
    },
    /// List snapshots.
    List {
        #[command(flatten)]
        scope: ListScope,
    },
    /// Delete a snapshot.
    Delete {
        #[command(flatten)]
        snapshot: Named,
        #[command(flatten)]
        yes: YesArg,
    },
    /// Grant read access to a snapshot: prints the NBD URI (`accessSAS`).
    GrantAccess {
        #[command(flatten)]
        snapshot: Named,
        /// Time duration in seconds until the access expires.
        #[arg(long)]
        duration_in_seconds: i64,
        /// Access level (snapshots are read-only).
        #[arg(long, default_value = "Read")]
        access_level: String,
    },
    /// Revoke a snapshot's access grant.
    RevokeAccess {
        #[command(flatten)]
        snapshot: Named,
    },
}

/// `image` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum ImageCommand {
    /// Create an image from a disk or snapshot (copied).
    Create {
        #[command(flatten)]
        image: Named,
        /// Name or ID of the OS disk or snapshot.
        #[arg(long)]
        source: String,
        /// Names or IDs of data disks or snapshots, at luns 0, 1, ...
        #[arg(long, num_args = 1..)]
        data_disk_sources: Vec<String>,
        /// Linux or Windows.
        #[arg(long, default_value = "Linux")]
        os_type: String,
        /// Name or ID of a disk encryption set for the image's disks.
        #[arg(long)]
        disk_encryption_set: Option<String>,
        /// V1 or V2.
        #[arg(long)]
        hyper_v_generation: Option<String>,
        /// Location. Defaults to the resource group's location.
        #[arg(short = 'l', long)]
        location: Option<String>,
        /// Space-separated tags: key[=value] [key[=value] ...].
        #[arg(long, num_args = 0.., value_name = "KEY=VALUE")]
        tags: Option<Vec<String>>,
    },
    /// Get information about an image.
    Show {
        #[command(flatten)]
        image: Named,
    },
    /// List images.
    List {
        #[command(flatten)]
        scope: ListScope,
    },
    /// Delete an image.
    Delete {
        #[command(flatten)]
        image: Named,
        #[command(flatten)]
        yes: YesArg,
    },
    /// Manage the image catalog: aliases such as UbuntuLTS that VMs name with `--image`.
    #[command(subcommand)]
    Alias(AliasCommand),
}

/// `image alias` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum AliasCommand {
    /// List the aliases (registered, and built-in ones not registered yet).
    List {
        #[command(flatten)]
        sub: SubscriptionArg,
    },
    /// Show an alias.
    Show {
        /// The alias, e.g. UbuntuLTS.
        #[arg(short = 'n', long)]
        name: String,
        #[command(flatten)]
        sub: SubscriptionArg,
    },
    /// Register an alias from a raw or qcow2 file: the file is uploaded over NBD (needs
    /// `qemu-img`) into a disk of the catalog resource group, made into an image, and the alias
    /// points at it.
    Register {
        /// The alias, e.g. UbuntuLTS.
        #[arg(short = 'n', long)]
        name: String,
        /// A raw or qcow2 disk image.
        #[arg(long)]
        source_file: std::path::PathBuf,
        /// Linux or Windows.
        #[arg(long, default_value = "Linux")]
        os_type: String,
        /// Resource group holding catalog images (created if missing).
        #[arg(
            short = 'g',
            long = "resource-group",
            default_value = "sealdisk-image-catalog"
        )]
        resource_group: String,
        /// Location of the catalog resource group.
        #[arg(short = 'l', long, default_value = "eastus")]
        location: String,
        #[command(flatten)]
        sub: SubscriptionArg,
    },
    /// Forget a registered alias (a built-in one goes back to an empty OS disk).
    Delete {
        /// The alias.
        #[arg(short = 'n', long)]
        name: String,
        #[command(flatten)]
        sub: SubscriptionArg,
    },
}

fn url(session: &Session, kind: &str, r: &Named, action: &str, api: &str) -> CliResult<Url> {
    let sub_id = session.subscription_id(r.sub.subscription.as_deref())?;
    session.arm_url(
        &format!(
            "subscriptions/{sub_id}/resourceGroups/{}/providers/Microsoft.Compute/{kind}/{}{action}",
            path_segment(&r.resource_group)?,
            path_segment(&r.name)?
        ),
        api,
        &[],
    )
}

/// A resource given by name (in `group`) or id; a bare name is looked up as a snapshot first,
/// then as a disk, as az does for `--source`.
async fn source_id(session: &mut Session, r: &Named, source: &str) -> CliResult<String> {
    if source.starts_with('/') {
        return Ok(source.to_owned());
    }
    for kind in ["snapshots", "disks"] {
        let named = Named {
            resource_group: r.resource_group.clone(),
            name: source.to_owned(),
            sub: r.sub.clone(),
        };
        let u = url(session, kind, &named, "", api_version::DISKS)?;
        let resp = session.send(ServiceKind::Arm, Method::GET, u, None).await?;
        if resp.status == 200
            && let Ok(v) = serde_json::from_slice::<Value>(&resp.body)
            && let Some(id) = v["id"].as_str()
        {
            return Ok(id.to_owned());
        }
    }
    Err(crate::cli::error::CliError::Usage(format!(
        "'{source}' is neither a snapshot nor a disk in resource group '{}'",
        r.resource_group
    )))
}

fn set_id(session: &Session, r: &Named, set: &str) -> CliResult<String> {
    if set.starts_with('/') {
        return Ok(set.to_owned());
    }
    let sub_id = session.subscription_id(r.sub.subscription.as_deref())?;
    Ok(format!(
        "/subscriptions/{sub_id}/resourceGroups/{}/providers/Microsoft.Compute/diskEncryptionSets/{}",
        r.resource_group,
        path_segment(set)?
    ))
}

async fn list(session: &mut Session, kind: &str, scope: &ListScope) -> CliResult<Outcome> {
    let sub_id = session.subscription_id(scope.sub.subscription.as_deref())?;
    let path = match &scope.resource_group {
        Some(g) => format!(
            "subscriptions/{sub_id}/resourceGroups/{}/providers/Microsoft.Compute/{kind}",
            path_segment(g)?
        ),
        None => format!("subscriptions/{sub_id}/providers/Microsoft.Compute/{kind}"),
    };
    let u = session.arm_url(&path, api_version::DISKS, &[])?;
    let (items, _) = session.list(ServiceKind::Arm, u, false).await?;
    Ok(Outcome::value(Value::Array(
        items.into_iter().map(shape).collect(),
    )))
}

/// Runs a `snapshot` subcommand.
pub async fn run_snapshot(ctx: &Ctx, cmd: SnapshotCommand) -> CliResult<Outcome> {
    let mut session = ctx.session()?;
    let api = api_version::DISKS;
    let outcome = match cmd {
        SnapshotCommand::Create {
            snapshot,
            source,
            incremental,
            sku,
            encryption_type,
            disk_encryption_set,
            location,
            tags,
            no_wait,
        } => {
            let location = match location {
                Some(l) => l,
                None => {
                    group_location(&mut session, &snapshot.sub, &snapshot.resource_group).await?
                }
            };
            let source = source_id(&mut session, &snapshot, &source).await?;
            let mut body = json!({
                "location": location,
                "properties": {
                    "creationData": {"createOption": "Copy", "sourceResourceId": source},
                    "incremental": incremental.unwrap_or(false),
                },
            });
            if let Some(sku) = sku {
                body["sku"] = json!({"name": sku});
            }
            if encryption_type.is_some() || disk_encryption_set.is_some() {
                let mut enc = json!({});
                if let Some(t) = encryption_type {
                    enc["type"] = json!(t);
                }
                if let Some(s) = disk_encryption_set {
                    enc["diskEncryptionSetId"] = json!(set_id(&session, &snapshot, &s)?);
                }
                body["properties"]["encryption"] = enc;
            }
            if let Some(tags) = tags {
                body["tags"] = parse_tags(&tags)?;
            }
            let u = url(&session, "snapshots", &snapshot, "", api)?;
            let result = session
                .arm_lro(LroMethod::Put, u, Some(&body), no_wait)
                .await?;
            Outcome {
                value: result.map(shape),
                table: None,
            }
        }
        SnapshotCommand::Show { snapshot } => {
            let u = url(&session, "snapshots", &snapshot, "", api)?;
            Outcome {
                value: session.arm(Method::GET, u, None).await?.map(shape),
                table: None,
            }
        }
        SnapshotCommand::List { scope } => list(&mut session, "snapshots", &scope).await?,
        SnapshotCommand::Delete { snapshot, yes } => {
            if !yes.yes && !ctx.confirm("Are you sure you want to perform this operation?")? {
                return Ok(Outcome::nothing());
            }
            let u = url(&session, "snapshots", &snapshot, "", api)?;
            session.arm_lro(LroMethod::Delete, u, None, false).await?;
            Outcome::nothing()
        }
        SnapshotCommand::GrantAccess {
            snapshot,
            duration_in_seconds,
            access_level,
        } => {
            let u = url(&session, "snapshots", &snapshot, "/beginGetAccess", api)?;
            let body = json!({"access": access_level, "durationInSeconds": duration_in_seconds});
            let result = session
                .arm_lro(LroMethod::Post, u, Some(&body), false)
                .await?;
            let sas = result
                .as_ref()
                .and_then(|r| r["accessSAS"].as_str())
                .map(str::to_owned);
            Outcome::value(json!({"accessSAS": sas}))
        }
        SnapshotCommand::RevokeAccess { snapshot } => {
            let u = url(&session, "snapshots", &snapshot, "/endGetAccess", api)?;
            session.arm_lro(LroMethod::Post, u, None, false).await?;
            Outcome::nothing()
        }
    };
    session.save()?;
    Ok(outcome)
}

/// Runs an `image` subcommand.
pub async fn run_image(ctx: &Ctx, cmd: ImageCommand) -> CliResult<Outcome> {
    let mut session = ctx.session()?;
    let api = api_version::VIRTUAL_MACHINES;
    let outcome = match cmd {
        ImageCommand::Create {
            image,
            source,
            data_disk_sources,
            os_type,
            disk_encryption_set,
            hyper_v_generation,
            location,
            tags,
        } => {
            let location = match location {
                Some(l) => l,
                None => group_location(&mut session, &image.sub, &image.resource_group).await?,
            };
            let set = disk_encryption_set
                .map(|s| set_id(&session, &image, &s))
                .transpose()?;
            let entry = |id: String| {
                let key = if id.to_ascii_lowercase().contains("/snapshots/") {
                    "snapshot"
                } else {
                    "managedDisk"
                };
                let mut e = json!({ key: {"id": id} });
                if let Some(set) = &set {
                    e["diskEncryptionSet"] = json!({"id": set});
                }
                e
            };
            let mut os = entry(source_id(&mut session, &image, &source).await?);
            os["osType"] = json!(os_type);
            os["osState"] = json!("Generalized");
            let mut data = Vec::new();
            for (lun, d) in data_disk_sources.iter().enumerate() {
                let mut e = entry(source_id(&mut session, &image, d).await?);
                e["lun"] = json!(lun);
                data.push(e);
            }
            let mut body = json!({
                "location": location,
                "properties": {"storageProfile": {"osDisk": os, "dataDisks": data}},
            });
            if let Some(g) = hyper_v_generation {
                body["properties"]["hyperVGeneration"] = json!(g);
            }
            if let Some(tags) = tags {
                body["tags"] = parse_tags(&tags)?;
            }
            let u = url(&session, "images", &image, "", api)?;
            let result = session
                .arm_lro(LroMethod::Put, u, Some(&body), false)
                .await?;
            Outcome {
                value: result.map(shape),
                table: None,
            }
        }
        ImageCommand::Show { image } => {
            let u = url(&session, "images", &image, "", api)?;
            Outcome {
                value: session.arm(Method::GET, u, None).await?.map(shape),
                table: None,
            }
        }
        ImageCommand::List { scope } => list(&mut session, "images", &scope).await?,
        ImageCommand::Alias(cmd) => alias(&mut session, cmd).await?,
        ImageCommand::Delete { image, yes } => {
            if !yes.yes && !ctx.confirm("Are you sure you want to perform this operation?")? {
                return Ok(Outcome::nothing());
            }
            let u = url(&session, "images", &image, "", api)?;
            session.arm_lro(LroMethod::Delete, u, None, false).await?;
            Outcome::nothing()
        }
    };
    session.save()?;
    Ok(outcome)
}

fn alias_url(session: &Session, sub: &SubscriptionArg, name: Option<&str>) -> CliResult<Url> {
    let sub_id = session.subscription_id(sub.subscription.as_deref())?;
    let tail = match name {
        Some(n) => format!("/{}", path_segment(n)?),
        None => String::new(),
    };
    session.arm_url(
        &format!("subscriptions/{sub_id}/providers/Microsoft.Compute/imageAliases{tail}"),
        api_version::VIRTUAL_MACHINES,
        &[],
    )
}

async fn alias(session: &mut Session, cmd: AliasCommand) -> CliResult<Outcome> {
    Ok(match cmd {
        AliasCommand::List { sub } => {
            let u = alias_url(session, &sub, None)?;
            let (items, _) = session.list(ServiceKind::Arm, u, false).await?;
            Outcome::value(Value::Array(items.into_iter().map(shape).collect()))
        }
        AliasCommand::Show { name, sub } => {
            let u = alias_url(session, &sub, Some(&name))?;
            Outcome {
                value: session.arm(Method::GET, u, None).await?.map(shape),
                table: None,
            }
        }
        AliasCommand::Delete { name, sub } => {
            let u = alias_url(session, &sub, Some(&name))?;
            session.arm(Method::DELETE, u, None).await?;
            Outcome::nothing()
        }
        AliasCommand::Register {
            name,
            source_file,
            os_type,
            resource_group,
            location,
            sub,
        } => Outcome::value(
            register_alias(
                session,
                &name,
                &source_file,
                &os_type,
                &resource_group,
                &location,
                &sub,
            )
            .await?,
        ),
    })
}

/// `qemu-img info` of a local image: its format and virtual size.
fn image_info(path: &std::path::Path) -> CliResult<(String, u64)> {
    let out = std::process::Command::new("qemu-img")
        .args(["info", "--output=json"])
        .arg(path)
        .output()
        .map_err(|e| {
            crate::cli::error::CliError::Usage(format!(
                "cannot run qemu-img (install qemu-utils): {e}"
            ))
        })?;
    if !out.status.success() {
        return Err(crate::cli::error::CliError::Usage(format!(
            "qemu-img info {}: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    let info: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    let format = info["format"].as_str().unwrap_or("raw").to_owned();
    let size = info["virtual-size"].as_u64().unwrap_or(0);
    if !matches!(format.as_str(), "raw" | "qcow2") {
        return Err(crate::cli::error::CliError::Usage(format!(
            "{} is a {format} image; give a raw or qcow2 file",
            path.display()
        )));
    }
    Ok((format, size))
}

#[allow(clippy::too_many_arguments)]
async fn register_alias(
    session: &mut Session,
    name: &str,
    file: &std::path::Path,
    os_type: &str,
    group: &str,
    location: &str,
    sub: &SubscriptionArg,
) -> CliResult<Value> {
    use crate::cli::error::CliError;
    let (format, size) = image_info(file)?;
    let gb = size.div_ceil(1 << 30).max(1);
    let sub_id = session.subscription_id(sub.subscription.as_deref())?;
    let group_url = session.arm_url(
        &format!(
            "subscriptions/{sub_id}/resourcegroups/{}",
            path_segment(group)?
        ),
        api_version::RESOURCE_GROUPS,
        &[],
    )?;
    session
        .arm(Method::PUT, group_url, Some(&json!({"location": location})))
        .await?;
    let disk = Named {
        resource_group: group.to_owned(),
        name: format!("{name}-upload"),
        sub: sub.clone(),
    };
    let disk_url = url(session, "disks", &disk, "", api_version::DISKS)?;
    let body = json!({
        "location": location,
        "sku": {"name": "Standard_LRS"},
        "properties": {"creationData": {"createOption": "Empty"}, "diskSizeGB": gb, "osType": os_type},
    });
    let created = session
        .arm_lro(LroMethod::Put, disk_url.clone(), Some(&body), false)
        .await?
        .unwrap_or(Value::Null);
    let grant = url(
        session,
        "disks",
        &disk,
        "/beginGetAccess",
        api_version::DISKS,
    )?;
    let sas = session
        .arm_lro(
            LroMethod::Post,
            grant,
            Some(&json!({"access": "Write", "durationInSeconds": 3600})),
            false,
        )
        .await?
        .and_then(|r| r["accessSAS"].as_str().map(str::to_owned))
        .ok_or_else(|| CliError::Usage("the server returned no NBD URI for the upload".into()))?;
    let upload = nbd_copy(file, &format, &sas, session.ca_dir());
    let revoke = url(session, "disks", &disk, "/endGetAccess", api_version::DISKS)?;
    session
        .arm_lro(LroMethod::Post, revoke, None, false)
        .await?;
    upload?;
    let image = Named {
        resource_group: group.to_owned(),
        name: name.to_owned(),
        sub: sub.clone(),
    };
    let image_url = url(session, "images", &image, "", api_version::VIRTUAL_MACHINES)?;
    let image_body = json!({
        "location": location,
        "tags": {"sealdiskCatalog": "true"},
        "properties": {"storageProfile": {"osDisk": {
            "osType": os_type,
            "osState": "Generalized",
            "managedDisk": {"id": created["id"]},
        }}},
    });
    let made = session
        .arm_lro(LroMethod::Put, image_url, Some(&image_body), false)
        .await?
        .unwrap_or(Value::Null);
    session
        .arm_lro(LroMethod::Delete, disk_url, None, false)
        .await?;
    let alias = alias_url(session, sub, Some(name))?;
    let registered = session
        .arm(
            Method::PUT,
            alias,
            Some(&json!({"properties": {"imageId": made["id"], "osType": os_type}})),
        )
        .await?;
    Ok(registered.map(shape).unwrap_or(Value::Null))
}

/// Writes a local image into an NBD export with `qemu-img convert` (TLS with the deployment CA
/// for `nbds://`).
fn nbd_copy(
    file: &std::path::Path,
    format: &str,
    sas: &str,
    ca_dir: Option<std::path::PathBuf>,
) -> CliResult<()> {
    use crate::cli::error::CliError;
    let (scheme, rest) = sas
        .split_once("://")
        .ok_or_else(|| CliError::Usage(format!("'{sas}' is not an NBD URI")))?;
    let (hostport, export) = rest
        .split_once('/')
        .ok_or_else(|| CliError::Usage(format!("'{sas}' has no export name")))?;
    let (host, port) = hostport
        .rsplit_once(':')
        .ok_or_else(|| CliError::Usage(format!("'{sas}' has no port")))?;
    let mut target = format!("driver=nbd,host={host},port={port},export={export}");
    let mut cmd = std::process::Command::new("qemu-img");
    cmd.args(["convert", "-n", "-f", format]);
    if scheme == "nbds" {
        let dir = ca_dir.ok_or_else(|| {
            CliError::Usage("no deployment CA to verify the NBD server with".into())
        })?;
        cmd.arg("--object").arg(format!(
            "tls-creds-x509,id=tls0,endpoint=client,dir={}",
            dir.display()
        ));
        target.push_str(",tls-creds=tls0");
    }
    cmd.arg(file).args(["--target-image-opts", &target]);
    let out = cmd
        .output()
        .map_err(|e| CliError::Usage(format!("cannot run qemu-img (install qemu-utils): {e}")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(CliError::Usage(format!(
            "uploading {} failed: {}",
            file.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}
