//! `disk-encryption-set create|show|list|update|delete|list-associated-resources|identity show`,
//! printed as az prints them (`properties` flattened, plus `resourceGroup`).

use reqwest::{Method, Url};
use serde_json::{Value, json};

use super::flattened as shape;
use super::group::{group_location, parse_tags, path_segment};
use crate::cli::error::{CliError, CliResult, ServiceKind};
use crate::cli::lro::LroMethod;
use crate::cli::output::Outcome;
use crate::cli::session::{Session, api_version};
use crate::cli::{Ctx, SubscriptionArg, YesArg};

/// `-g` and `-n`.
#[derive(Debug, Clone, clap::Args)]
pub struct SetName {
    /// Name of resource group.
    #[arg(short = 'g', long = "resource-group", value_name = "NAME")]
    pub resource_group: String,
    /// Name of the disk encryption set.
    #[arg(
        short = 'n',
        long = "name",
        visible_alias = "disk-encryption-set-name",
        value_name = "NAME"
    )]
    pub name: String,
    #[command(flatten)]
    pub sub: SubscriptionArg,
}

/// `disk-encryption-set` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum EncryptionSetCommand {
    /// Create a disk encryption set.
    Create {
        #[command(flatten)]
        set: SetName,
        /// URL pointing to a key in Key Vault (the versioned `kid`).
        #[arg(long)]
        key_url: String,
        /// Name or ID of the Key Vault holding the key.
        #[arg(long)]
        source_vault: Option<String>,
        /// EncryptionAtRestWithCustomerKey (default) or EncryptionAtRestWithPlatformAndCustomerKeys.
        #[arg(long)]
        encryption_type: Option<String>,
        /// Pick up new versions of the key automatically.
        #[arg(long, value_parser = clap::builder::BoolishValueParser::new())]
        enable_auto_key_rotation: Option<bool>,
        /// Location. Defaults to the resource group's location.
        #[arg(short = 'l', long)]
        location: Option<String>,
        /// Space-separated tags: key[=value] [key[=value] ...].
        #[arg(long, num_args = 0.., value_name = "KEY=VALUE")]
        tags: Option<Vec<String>>,
        /// Use a system-assigned identity (the default and only kind).
        #[arg(long)]
        mi_system_assigned: bool,
        /// Do not wait for the long-running operation to finish.
        #[arg(long)]
        no_wait: bool,
    },
    /// Get information about a disk encryption set.
    Show {
        #[command(flatten)]
        set: SetName,
    },
    /// List disk encryption sets.
    List {
        /// Name of resource group.
        #[arg(short = 'g', long = "resource-group")]
        resource_group: Option<String>,
        #[command(flatten)]
        sub: SubscriptionArg,
    },
    /// Update a disk encryption set (e.g. rotate to a new key version).
    Update {
        #[command(flatten)]
        set: SetName,
        /// URL pointing to a key in Key Vault.
        #[arg(long)]
        key_url: Option<String>,
        /// Name or ID of the Key Vault holding the key.
        #[arg(long)]
        source_vault: Option<String>,
        /// Pick up new versions of the key automatically.
        #[arg(long, value_parser = clap::builder::BoolishValueParser::new())]
        enable_auto_key_rotation: Option<bool>,
        /// Do not wait for the long-running operation to finish.
        #[arg(long)]
        no_wait: bool,
    },
    /// Delete a disk encryption set that no disk uses.
    Delete {
        #[command(flatten)]
        set: SetName,
        #[command(flatten)]
        yes: YesArg,
        /// Do not wait for the long-running operation to finish.
        #[arg(long)]
        no_wait: bool,
    },
    /// List the resources encrypted by a disk encryption set.
    ListAssociatedResources {
        #[command(flatten)]
        set: SetName,
    },
    /// Manage the set's managed identity.
    #[command(subcommand)]
    Identity(IdentityCommand),
}

/// `disk-encryption-set identity` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum IdentityCommand {
    /// Show the set's managed identity.
    Show {
        #[command(flatten)]
        set: SetName,
    },
}

/// Runs a `disk-encryption-set` subcommand.
pub async fn run(ctx: &Ctx, cmd: EncryptionSetCommand) -> CliResult<Outcome> {
    let mut session = ctx.session()?;
    let outcome = match cmd {
        EncryptionSetCommand::Create {
            set,
            key_url,
            source_vault,
            encryption_type,
            enable_auto_key_rotation,
            location,
            tags,
            mi_system_assigned: _,
            no_wait,
        } => {
            let location = match location {
                Some(l) => l,
                None => group_location(&mut session, &set.sub, &set.resource_group).await?,
            };
            let mut active_key = json!({"keyUrl": key_url});
            if let Some(vault) = source_vault {
                active_key["sourceVault"] = json!({"id": vault_id(&session, &set, &vault)?});
            }
            let mut properties = json!({"activeKey": active_key});
            properties["encryptionType"] =
                json!(encryption_type.unwrap_or_else(|| "EncryptionAtRestWithCustomerKey".into()));
            if let Some(rotate) = enable_auto_key_rotation {
                properties["rotationToLatestKeyVersionEnabled"] = json!(rotate);
            }
            let mut body = json!({
                "location": location,
                "identity": {"type": "SystemAssigned"},
                "properties": properties,
            });
            if let Some(tags) = tags {
                body["tags"] = parse_tags(&tags)?;
            }
            let url = set_url(&session, &set, "")?;
            let result = session
                .arm_lro(LroMethod::Put, url, Some(&body), no_wait)
                .await?;
            table_outcome(result.map(shape))
        }
        EncryptionSetCommand::Show { set } => {
            let url = set_url(&session, &set, "")?;
            table_outcome(session.arm(Method::GET, url, None).await?.map(shape))
        }
        EncryptionSetCommand::List {
            resource_group,
            sub,
        } => {
            let sub_id = session.subscription_id(sub.subscription.as_deref())?;
            let path = match &resource_group {
                Some(g) => format!(
                    "subscriptions/{sub_id}/resourceGroups/{}/providers/Microsoft.Compute/diskEncryptionSets",
                    path_segment(g)?
                ),
                None => {
                    format!("subscriptions/{sub_id}/providers/Microsoft.Compute/diskEncryptionSets")
                }
            };
            let url = session.arm_url(&path, api_version::DISK_ENCRYPTION_SETS, &[])?;
            let (items, _) = session.list(ServiceKind::Arm, url, false).await?;
            Outcome::with_table(
                Value::Array(items.into_iter().map(shape).collect()),
                set_table,
            )
        }
        EncryptionSetCommand::Update {
            set,
            key_url,
            source_vault,
            enable_auto_key_rotation,
            no_wait,
        } => {
            let url = set_url(&session, &set, "")?;
            let current = session
                .arm(Method::GET, url.clone(), None)
                .await?
                .ok_or_else(|| CliError::BadResponse {
                    url: url.to_string(),
                    detail: "the disk encryption set GET returned no body".into(),
                })?;
            let mut body = json!({
                "location": current["location"],
                "tags": current["tags"],
                "identity": {"type": "SystemAssigned"},
                "properties": {
                    "encryptionType": current["properties"]["encryptionType"],
                    "activeKey": current["properties"]["activeKey"],
                    "rotationToLatestKeyVersionEnabled": current["properties"]["rotationToLatestKeyVersionEnabled"],
                },
            });
            if let Some(key_url) = key_url {
                body["properties"]["activeKey"] = json!({"keyUrl": key_url});
            }
            if let Some(vault) = source_vault {
                body["properties"]["activeKey"]["sourceVault"] =
                    json!({"id": vault_id(&session, &set, &vault)?});
            }
            if let Some(rotate) = enable_auto_key_rotation {
                body["properties"]["rotationToLatestKeyVersionEnabled"] = json!(rotate);
            }
            let result = session
                .arm_lro(LroMethod::Put, url, Some(&body), no_wait)
                .await?;
            table_outcome(result.map(shape))
        }
        EncryptionSetCommand::Delete { set, yes, no_wait } => {
            if !yes.yes && !ctx.confirm("Are you sure you want to perform this operation?")? {
                return Ok(Outcome::nothing());
            }
            let url = set_url(&session, &set, "")?;
            session
                .arm_lro(LroMethod::Delete, url, None, no_wait)
                .await?;
            Outcome::nothing()
        }
        EncryptionSetCommand::ListAssociatedResources { set } => {
            let url = set_url(&session, &set, "/associatedResources")?;
            let (items, _) = session.list(ServiceKind::Arm, url, false).await?;
            Outcome::value(Value::Array(items))
        }
        EncryptionSetCommand::Identity(IdentityCommand::Show { set }) => {
            let url = set_url(&session, &set, "")?;
            let des = session.arm(Method::GET, url, None).await?;
            Outcome::value(des.map(|d| d["identity"].clone()).unwrap_or(Value::Null))
        }
    };
    session.save()?;
    Ok(outcome)
}

/// A vault given by name (in the set's resource group, as az resolves it) or by id.
fn vault_id(session: &Session, set: &SetName, vault: &str) -> CliResult<String> {
    if vault.starts_with('/') {
        return Ok(vault.to_owned());
    }
    let sub_id = session.subscription_id(set.sub.subscription.as_deref())?;
    Ok(format!(
        "/subscriptions/{sub_id}/resourceGroups/{}/providers/Microsoft.KeyVault/vaults/{}",
        set.resource_group,
        path_segment(vault)?
    ))
}

fn set_url(session: &Session, set: &SetName, action: &str) -> CliResult<Url> {
    let sub_id = session.subscription_id(set.sub.subscription.as_deref())?;
    session.arm_url(
        &format!(
            "subscriptions/{sub_id}/resourceGroups/{}/providers/Microsoft.Compute/diskEncryptionSets/{}{action}",
            path_segment(&set.resource_group)?,
            path_segment(&set.name)?
        ),
        api_version::DISK_ENCRYPTION_SETS,
        &[],
    )
}

fn table_outcome(value: Option<Value>) -> Outcome {
    match value {
        Some(v) => Outcome::with_table(v, set_table),
        None => Outcome::nothing(),
    }
}

/// Table columns for sets.
fn set_table(result: &Value) -> Value {
    let row = |d: &Value| {
        json!({
            "Name": d["name"],
            "ResourceGroup": d["resourceGroup"],
            "Location": d["location"],
            "EncryptionType": d["encryptionType"],
            "KeyUrl": d["activeKey"]["keyUrl"],
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
    fn sets_print_flattened_with_identity_on_top() {
        let out = shape(json!({
            "id": "/subscriptions/s/resourceGroups/rg1/providers/Microsoft.Compute/diskEncryptionSets/des",
            "identity": {"type": "SystemAssigned", "principalId": "p"},
            "properties": {"encryptionType": "EncryptionAtRestWithCustomerKey", "activeKey": {"keyUrl": "u"}},
        }));
        assert_eq!(out["identity"]["principalId"], "p");
        assert_eq!(out["activeKey"]["keyUrl"], "u");
        assert_eq!(out["resourceGroup"], "rg1");
        assert_eq!(set_table(&out)["KeyUrl"], "u");
    }
}
