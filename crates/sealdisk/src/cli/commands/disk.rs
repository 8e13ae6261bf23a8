//! `disk create|show|list|update|delete|grant-access|revoke-access|wait` (Microsoft.Compute
//! managed disks), printed as az prints them: `properties` flattened into the disk, plus
//! `resourceGroup`.

use std::time::{Duration, Instant};

use reqwest::{Method, Url};
use serde_json::{Map, Value, json};

use super::group::{group_location, parse_tags, path_segment};
use super::{capitalized, flattened as shape};
use crate::cli::error::{CliError, CliResult, ServiceError, ServiceKind};
use crate::cli::lro::LroMethod;
use crate::cli::output::Outcome;
use crate::cli::session::{Session, api_version};
use crate::cli::{Ctx, SubscriptionArg, YesArg};

/// `-g` and `-n`.
#[derive(Debug, Clone, clap::Args)]
pub struct DiskName {
    /// Name of resource group.
    #[arg(short = 'g', long = "resource-group", value_name = "NAME")]
    pub resource_group: String,
    /// The name of the managed disk.
    #[arg(
        short = 'n',
        long = "name",
        visible_alias = "disk-name",
        value_name = "NAME"
    )]
    pub name: String,
    #[command(flatten)]
    pub sub: SubscriptionArg,
}

/// `disk` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum DiskCommand {
    /// Create a managed disk.
    Create {
        #[command(flatten)]
        disk: DiskName,
        /// Size in GiB (defaults to the source's size with --source or --image-reference).
        #[arg(short = 'z', long = "size-gb")]
        size_gb: Option<u64>,
        /// ID of a disk or snapshot to copy.
        #[arg(long)]
        source: Option<String>,
        /// ID of an image to create the disk from.
        #[arg(long)]
        image_reference: Option<String>,
        /// Underlying storage SKU.
        #[arg(long, default_value = "Premium_LRS")]
        sku: String,
        /// Location. Defaults to the resource group's location.
        #[arg(short = 'l', long)]
        location: Option<String>,
        /// Encryption type: EncryptionAtRestWithPlatformKey (default),
        /// EncryptionAtRestWithCustomerKey or EncryptionAtRestWithPlatformAndCustomerKeys.
        #[arg(long)]
        encryption_type: Option<String>,
        /// Name or ID of the disk encryption set to use for customer-managed keys.
        #[arg(long)]
        disk_encryption_set: Option<String>,
        /// Space-separated tags: key[=value] [key[=value] ...].
        #[arg(long, num_args = 0.., value_name = "KEY=VALUE")]
        tags: Option<Vec<String>>,
        /// Do not wait for the long-running operation to finish.
        #[arg(long)]
        no_wait: bool,
    },
    /// Get information about a disk.
    Show {
        #[command(flatten)]
        disk: DiskName,
    },
    /// List disks in a resource group, or in the subscription.
    List {
        /// Name of resource group.
        #[arg(short = 'g', long = "resource-group")]
        resource_group: Option<String>,
        #[command(flatten)]
        sub: SubscriptionArg,
    },
    /// Update a disk: grow it, change its SKU or encryption.
    Update {
        #[command(flatten)]
        disk: DiskName,
        /// New size in GiB (grow only).
        #[arg(short = 'z', long = "size-gb")]
        size_gb: Option<u64>,
        /// Underlying storage SKU.
        #[arg(long)]
        sku: Option<String>,
        /// Encryption type.
        #[arg(long)]
        encryption_type: Option<String>,
        /// Name or ID of the disk encryption set.
        #[arg(long)]
        disk_encryption_set: Option<String>,
        /// Do not wait for the long-running operation to finish.
        #[arg(long)]
        no_wait: bool,
    },
    /// Delete a managed disk: its data and keys are destroyed.
    Delete {
        #[command(flatten)]
        disk: DiskName,
        #[command(flatten)]
        yes: YesArg,
        /// Do not wait for the long-running operation to finish.
        #[arg(long)]
        no_wait: bool,
    },
    /// Grant time-limited access to a disk: prints the NBD URI (`accessSAS`).
    GrantAccess {
        #[command(flatten)]
        disk: DiskName,
        /// Time duration in seconds until the access expires.
        #[arg(long)]
        duration_in_seconds: i64,
        /// Access level.
        #[arg(long, default_value = "Read", value_parser = ["Read", "Write"], ignore_case = true)]
        access_level: String,
    },
    /// Revoke a disk's access grant: its NBD connections are closed.
    RevokeAccess {
        #[command(flatten)]
        disk: DiskName,
    },
    /// Wait until a condition of a disk is met.
    Wait {
        #[command(flatten)]
        disk: DiskName,
        /// Wait until created with 'provisioningState' at 'Succeeded'.
        #[arg(long)]
        created: bool,
        /// Wait until updated with provisioningState at 'Succeeded'.
        #[arg(long)]
        updated: bool,
        /// Wait until deleted.
        #[arg(long)]
        deleted: bool,
        /// Wait until the disk exists.
        #[arg(long)]
        exists: bool,
        /// Wait until the JMESPath query on the disk is true.
        #[arg(long)]
        custom: Option<String>,
        /// Polling interval in seconds.
        #[arg(long, default_value_t = 30)]
        interval: u64,
        /// Maximum wait in seconds.
        #[arg(long, default_value_t = 3600)]
        timeout: u64,
    },
}

/// Runs a `disk` subcommand.
pub async fn run(ctx: &Ctx, cmd: DiskCommand) -> CliResult<Outcome> {
    let mut session = ctx.session()?;
    let outcome = match cmd {
        DiskCommand::Create {
            disk,
            size_gb,
            source,
            image_reference,
            sku,
            location,
            encryption_type,
            disk_encryption_set,
            tags,
            no_wait,
        } => {
            let location = match location {
                Some(l) => l,
                None => group_location(&mut session, &disk.sub, &disk.resource_group).await?,
            };
            let creation = match (&source, &image_reference) {
                (Some(src), None) => json!({"createOption": "Copy", "sourceResourceId": src}),
                (None, Some(image)) => {
                    json!({"createOption": "FromImage", "imageReference": {"id": image}})
                }
                (None, None) if size_gb.is_some() => json!({"createOption": "Empty"}),
                (None, None) => {
                    return Err(CliError::Usage(
                        "give --size-gb for an empty disk, or --source / --image-reference".into(),
                    ));
                }
                (Some(_), Some(_)) => {
                    return Err(CliError::Usage(
                        "give only one of --source and --image-reference".into(),
                    ));
                }
            };
            let mut body = json!({
                "location": location,
                "sku": {"name": sku},
                "properties": {"creationData": creation},
            });
            if let Some(gb) = size_gb {
                body["properties"]["diskSizeGB"] = json!(gb);
            }
            if let Some(encryption) =
                encryption_body(&session, &disk, encryption_type, disk_encryption_set)?
            {
                body["properties"]["encryption"] = encryption;
            }
            if let Some(tags) = tags {
                body["tags"] = parse_tags(&tags)?;
            }
            let url = disk_url(&session, &disk, "")?;
            let result = session
                .arm_lro(LroMethod::Put, url, Some(&body), no_wait)
                .await?;
            table_outcome(result.map(shape))
        }
        DiskCommand::Show { disk } => {
            let url = disk_url(&session, &disk, "")?;
            table_outcome(session.arm(Method::GET, url, None).await?.map(shape))
        }
        DiskCommand::List {
            resource_group,
            sub,
        } => {
            let sub_id = session.subscription_id(sub.subscription.as_deref())?;
            let path = match &resource_group {
                Some(g) => format!(
                    "subscriptions/{sub_id}/resourceGroups/{}/providers/Microsoft.Compute/disks",
                    path_segment(g)?
                ),
                None => format!("subscriptions/{sub_id}/providers/Microsoft.Compute/disks"),
            };
            let url = session.arm_url(&path, api_version::DISKS, &[])?;
            let (items, _) = session.list(ServiceKind::Arm, url, false).await?;
            Outcome::with_table(
                Value::Array(items.into_iter().map(shape).collect()),
                disk_table,
            )
        }
        DiskCommand::Update {
            disk,
            size_gb,
            sku,
            encryption_type,
            disk_encryption_set,
            no_wait,
        } => {
            let url = disk_url(&session, &disk, "")?;
            let current = session
                .arm(Method::GET, url.clone(), None)
                .await?
                .ok_or_else(|| CliError::BadResponse {
                    url: url.to_string(),
                    detail: "the disk GET returned no body".into(),
                })?;
            let mut body = json!({
                "location": current["location"],
                "tags": current["tags"],
                "sku": current["sku"],
                "properties": current["properties"],
            });
            if let Some(gb) = size_gb {
                body["properties"]["diskSizeGB"] = json!(gb);
            }
            if let Some(sku) = sku {
                body["sku"] = json!({"name": sku});
            }
            if let Some(encryption) =
                encryption_body(&session, &disk, encryption_type, disk_encryption_set)?
            {
                body["properties"]["encryption"] = encryption;
            }
            let mut result = session
                .arm_lro(LroMethod::Put, url.clone(), Some(&body), no_wait)
                .await?;
            let updating = |r: &Option<Value>| {
                r.as_ref()
                    .is_some_and(|d| d["properties"]["provisioningState"] == "Updating")
            };
            if !no_wait && updating(&result) {
                result = follow_reencryption(&mut session, url, ctx.quiet).await?;
            }
            table_outcome(result.map(shape))
        }
        DiskCommand::Delete { disk, yes, no_wait } => {
            if !yes.yes && !ctx.confirm("Are you sure you want to perform this operation?")? {
                return Ok(Outcome::nothing());
            }
            let url = disk_url(&session, &disk, "")?;
            session
                .arm_lro(LroMethod::Delete, url, None, no_wait)
                .await?;
            Outcome::nothing()
        }
        DiskCommand::GrantAccess {
            disk,
            duration_in_seconds,
            access_level,
        } => {
            let url = disk_url(&session, &disk, "/beginGetAccess")?;
            let body = json!({
                "access": capitalized(&access_level),
                "durationInSeconds": duration_in_seconds,
            });
            let result = session
                .arm_lro(LroMethod::Post, url, Some(&body), false)
                .await?;
            let sas = result
                .as_ref()
                .and_then(|r| r["accessSAS"].as_str())
                .map(str::to_owned);
            Outcome::value(json!({"accessSAS": sas}))
        }
        DiskCommand::RevokeAccess { disk } => {
            let url = disk_url(&session, &disk, "/endGetAccess")?;
            session.arm_lro(LroMethod::Post, url, None, false).await?;
            Outcome::nothing()
        }
        DiskCommand::Wait {
            disk,
            created,
            updated,
            deleted,
            exists,
            custom,
            interval,
            timeout,
        } => {
            let condition = match (created || updated, deleted, exists, custom) {
                (true, false, false, None) => Condition::Succeeded,
                (false, true, false, None) => Condition::Deleted,
                (false, false, true, None) => Condition::Exists,
                (false, false, false, Some(q)) => Condition::Custom(q),
                _ => {
                    return Err(CliError::Usage(
                        "give exactly one of --created, --updated, --deleted, --exists, --custom"
                            .into(),
                    ));
                }
            };
            let url = disk_url(&session, &disk, "")?;
            wait(&mut session, url, condition, interval, timeout).await?;
            Outcome::nothing()
        }
    };
    session.save()?;
    Ok(outcome)
}

/// Waits for a background re-encryption (a layer added or removed), drawing a progress bar
/// on stderr from the disk's `completionPercent`; returns the finished disk.
async fn follow_reencryption(
    session: &mut Session,
    url: Url,
    quiet: bool,
) -> CliResult<Option<Value>> {
    use std::io::Write as _;
    let deadline = Instant::now() + Duration::from_secs(24 * 3600);
    loop {
        let disk = session.arm(Method::GET, url.clone(), None).await?;
        let props = disk
            .as_ref()
            .map(|d| d["properties"].clone())
            .unwrap_or_default();
        let percent = props["completionPercent"].as_u64().unwrap_or(0).min(100);
        if !quiet {
            let filled = (percent / 5) as usize;
            eprint!(
                "\rRe-encrypting [{}{}] {percent:3}%",
                "#".repeat(filled),
                ".".repeat(20 - filled)
            );
            let _ = std::io::stderr().flush();
        }
        match props["provisioningState"].as_str() {
            Some("Updating") if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Some("Failed") => {
                if !quiet {
                    eprintln!();
                }
                return Err(CliError::BadResponse {
                    url: url.to_string(),
                    detail: "re-encrypting the disk failed; see the server log".into(),
                });
            }
            _ => {
                if !quiet {
                    eprintln!();
                }
                return Ok(disk);
            }
        }
    }
}

enum Condition {
    Succeeded,
    Deleted,
    Exists,
    Custom(String),
}

async fn wait(
    session: &mut Session,
    url: Url,
    condition: Condition,
    interval: u64,
    timeout: u64,
) -> CliResult<()> {
    let deadline = Instant::now() + Duration::from_secs(timeout);
    loop {
        let resp = session
            .send(ServiceKind::Arm, Method::GET, url.clone(), None)
            .await?;
        let disk: Option<Value> = serde_json::from_slice(&resp.body).ok();
        let met = match (&condition, resp.status) {
            (Condition::Deleted, 404) => true,
            (Condition::Deleted, 200) => false,
            (Condition::Exists, 200) => true,
            (Condition::Exists | Condition::Succeeded | Condition::Custom(_), 404) => false,
            (Condition::Succeeded, 200) => {
                disk.as_ref()
                    .and_then(|d| d["properties"]["provisioningState"].as_str())
                    == Some("Succeeded")
            }
            (Condition::Custom(q), 200) => {
                let value = disk.map(shape).unwrap_or(Value::Null);
                crate::cli::query::Query::parse(q)
                    .and_then(|q| q.apply(&value))
                    .map_err(CliError::Usage)?
                    .as_bool()
                    .unwrap_or(false)
            }
            (_, status) => {
                return Err(ServiceError::from_response(
                    ServiceKind::Arm,
                    status,
                    resp.reason,
                    &resp.body,
                )
                .into());
            }
        };
        if met {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(CliError::OperationTimedOut {
                url: url.to_string(),
            });
        }
        tokio::time::sleep(Duration::from_secs(interval.max(1))).await;
    }
}

/// `encryption` from `--encryption-type` and `--disk-encryption-set` (a name is resolved in
/// the disk's resource group, as az does).
fn encryption_body(
    session: &Session,
    disk: &DiskName,
    kind: Option<String>,
    set: Option<String>,
) -> CliResult<Option<Value>> {
    let set = match set {
        Some(s) if s.starts_with('/') => Some(s),
        Some(name) => {
            let sub_id = session.subscription_id(disk.sub.subscription.as_deref())?;
            Some(format!(
                "/subscriptions/{sub_id}/resourceGroups/{}/providers/Microsoft.Compute/diskEncryptionSets/{}",
                disk.resource_group,
                path_segment(&name)?
            ))
        }
        None => None,
    };
    if kind.is_none() && set.is_none() {
        return Ok(None);
    }
    let mut encryption = Map::new();
    if let Some(kind) = kind {
        encryption.insert("type".into(), Value::String(kind));
    }
    if let Some(set) = set {
        encryption.insert("diskEncryptionSetId".into(), Value::String(set));
    }
    Ok(Some(Value::Object(encryption)))
}

fn disk_url(session: &Session, disk: &DiskName, action: &str) -> CliResult<Url> {
    let sub_id = session.subscription_id(disk.sub.subscription.as_deref())?;
    session.arm_url(
        &format!(
            "subscriptions/{sub_id}/resourceGroups/{}/providers/Microsoft.Compute/disks/{}{action}",
            path_segment(&disk.resource_group)?,
            path_segment(&disk.name)?
        ),
        api_version::DISKS,
        &[],
    )
}

fn table_outcome(value: Option<Value>) -> Outcome {
    match value {
        Some(v) => Outcome::with_table(v, disk_table),
        None => Outcome::nothing(),
    }
}

/// az's disk table columns.
fn disk_table(result: &Value) -> Value {
    let row = |d: &Value| {
        json!({
            "Name": d["name"],
            "ResourceGroup": d["resourceGroup"],
            "Location": d["location"],
            "Zones": d["zones"].as_array().map(|z| z.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(",")).unwrap_or_default(),
            "Sku": d["sku"]["name"],
            "OsType": d["osType"],
            "SizeGb": d["diskSizeGB"],
            "ProvisioningState": d["provisioningState"],
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
    fn disks_print_flattened_with_their_resource_group() {
        let out = shape(json!({
            "id": "/subscriptions/s/resourceGroups/rg1/providers/Microsoft.Compute/disks/d1",
            "name": "d1",
            "sku": {"name": "Premium_LRS", "tier": "Premium"},
            "properties": {"diskSizeGB": 4, "encryption": {"type": "EncryptionAtRestWithPlatformKey"}},
        }));
        assert_eq!(out["encryption"]["type"], "EncryptionAtRestWithPlatformKey");
        assert_eq!(out["diskSizeGB"], 4);
        assert_eq!(out["resourceGroup"], "rg1");
        assert!(out.get("properties").is_none());
        let table = disk_table(&out);
        assert_eq!(table["SizeGb"], 4);
        assert_eq!(table["Sku"], "Premium_LRS");
    }

    #[test]
    fn access_levels_are_capitalized_like_the_enum() {
        assert_eq!(capitalized("read"), "Read");
        assert_eq!(capitalized("WRITE"), "Write");
    }
}
