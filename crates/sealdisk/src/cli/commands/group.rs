//! `group create|show|list|delete|exists`.

use reqwest::Method;
use serde_json::{Map, Value, json};

use super::with_model_keys;
use crate::cli::error::{CliError, CliResult, ServiceError, ServiceKind};
use crate::cli::lro::LroMethod;
use crate::cli::output::Outcome;
use crate::cli::session::{Session, api_version, odata_quote};
use crate::cli::{Ctx, SubscriptionArg, YesArg};

/// Keys az's ResourceGroup model always prints.
const GROUP_KEYS: [&str; 7] = [
    "id",
    "location",
    "managedBy",
    "name",
    "properties",
    "tags",
    "type",
];

/// `-n/--name`, also spelled `-g/--resource-group`.
#[derive(Debug, Clone, clap::Args)]
pub struct GroupName {
    /// Name of the resource group.
    #[arg(
        short = 'n',
        long = "name",
        visible_alias = "resource-group",
        visible_short_alias = 'g',
        value_name = "NAME"
    )]
    pub name: String,
}

/// `group` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum GroupCommand {
    /// Create a new resource group (or update its tags).
    Create {
        #[command(flatten)]
        name: GroupName,
        /// Location, e.g. `eastus`.
        #[arg(short = 'l', long)]
        location: String,
        /// Space-separated tags: key[=value] [key[=value] ...]. Use "" to clear existing tags.
        #[arg(long, num_args = 0.., value_name = "KEY=VALUE")]
        tags: Option<Vec<String>>,
        /// The ID of the resource that manages this resource group.
        #[arg(long)]
        managed_by: Option<String>,
        #[command(flatten)]
        sub: SubscriptionArg,
    },
    /// Get a resource group.
    Show {
        #[command(flatten)]
        name: GroupName,
        #[command(flatten)]
        sub: SubscriptionArg,
    },
    /// List resource groups.
    List {
        /// A single tag in 'key[=value]' format, to filter by.
        #[arg(long)]
        tag: Option<String>,
        #[command(flatten)]
        sub: SubscriptionArg,
    },
    /// Delete a resource group and everything in it.
    Delete {
        #[command(flatten)]
        name: GroupName,
        #[command(flatten)]
        yes: YesArg,
        /// Do not wait for the long-running operation to finish.
        #[arg(long)]
        no_wait: bool,
        #[command(flatten)]
        sub: SubscriptionArg,
    },
    /// Check whether a resource group exists (prints true or false).
    Exists {
        #[command(flatten)]
        name: GroupName,
        #[command(flatten)]
        sub: SubscriptionArg,
    },
}

/// Runs a `group` subcommand.
pub async fn run(ctx: &Ctx, cmd: GroupCommand) -> CliResult<Outcome> {
    let mut session = ctx.session()?;
    let outcome = match cmd {
        GroupCommand::Create {
            name,
            location,
            tags,
            managed_by,
            sub,
        } => {
            let url = group_url(&session, &sub, &name.name)?;
            let mut body = json!({ "location": location });
            if let Some(tags) = tags {
                body["tags"] = parse_tags(&tags)?;
            }
            if let Some(m) = managed_by {
                body["managedBy"] = Value::String(m);
            }
            let result = session
                .arm_lro(LroMethod::Put, url, Some(&body), false)
                .await?;
            Outcome {
                value: result.map(|g| with_model_keys(g, &GROUP_KEYS)),
                table: None,
            }
        }
        GroupCommand::Show { name, sub } => {
            let url = group_url(&session, &sub, &name.name)?;
            let group = session.arm(Method::GET, url, None).await?;
            Outcome {
                value: group.map(|g| with_model_keys(g, &GROUP_KEYS)),
                table: None,
            }
        }
        GroupCommand::List { tag, sub } => {
            let sub_id = session.subscription_id(sub.subscription.as_deref())?;
            let filter = tag.as_deref().map(tag_filter);
            let query: Vec<(&str, &str)> = filter.iter().map(|f| ("$filter", f.as_str())).collect();
            let url = session.arm_url(
                &format!("subscriptions/{sub_id}/resourcegroups"),
                api_version::RESOURCE_GROUPS,
                &query,
            )?;
            let (items, _) = session.list(ServiceKind::Arm, url, false).await?;
            let items = items
                .into_iter()
                .map(|g| with_model_keys(g, &GROUP_KEYS))
                .collect();
            Outcome::with_table(Value::Array(items), group_list_table)
        }
        GroupCommand::Delete {
            name,
            yes,
            no_wait,
            sub,
        } => {
            if !yes.yes && !ctx.confirm("Are you sure you want to perform this operation?")? {
                return Ok(Outcome::nothing());
            }
            let url = group_url(&session, &sub, &name.name)?;
            session
                .arm_lro(LroMethod::Delete, url, None, no_wait)
                .await?;
            Outcome::nothing()
        }
        GroupCommand::Exists { name, sub } => {
            let url = group_url(&session, &sub, &name.name)?;
            let resp = session
                .send(ServiceKind::Arm, Method::HEAD, url, None)
                .await?;
            let exists = match resp.status {
                200..=299 => true,
                404 => false,
                status => {
                    return Err(ServiceError::from_response(
                        ServiceKind::Arm,
                        status,
                        resp.reason,
                        &resp.body,
                    )
                    .into());
                }
            };
            Outcome::value(Value::Bool(exists))
        }
    };
    session.save()?;
    Ok(outcome)
}

fn group_url(session: &Session, sub: &SubscriptionArg, name: &str) -> CliResult<reqwest::Url> {
    let sub_id = session.subscription_id(sub.subscription.as_deref())?;
    session.arm_url(
        &format!(
            "subscriptions/{sub_id}/resourcegroups/{}",
            path_segment(name)?
        ),
        api_version::RESOURCE_GROUPS,
        &[],
    )
}

/// The location of a resource group (az's default location for new resources).
pub async fn group_location(
    session: &mut Session,
    sub: &SubscriptionArg,
    group: &str,
) -> CliResult<String> {
    let sub_id = session.subscription_id(sub.subscription.as_deref())?;
    let url = session.arm_url(
        &format!(
            "subscriptions/{sub_id}/resourcegroups/{}",
            path_segment(group)?
        ),
        api_version::RESOURCE_GROUPS,
        &[],
    )?;
    let g = session.arm(Method::GET, url.clone(), None).await?;
    g.as_ref()
        .and_then(|g| g["location"].as_str())
        .map(str::to_owned)
        .ok_or_else(|| CliError::BadResponse {
            url: url.to_string(),
            detail: "the resource group has no location".to_owned(),
        })
}

/// A user-given name that must stay one path segment.
pub fn path_segment(name: &str) -> CliResult<&str> {
    if name.is_empty() || name.contains('/') {
        return Err(CliError::Usage(format!("'{name}' is not a valid name")));
    }
    Ok(name)
}

/// az's `--tags` syntax: `key=value`, `key` (empty value), `""` (no tags).
pub fn parse_tags(items: &[String]) -> CliResult<Value> {
    let mut tags = Map::new();
    for item in items.iter().filter(|i| !i.is_empty()) {
        let (k, v) = item.split_once('=').unwrap_or((item, ""));
        if k.is_empty() {
            return Err(CliError::Usage(format!("invalid tag '{item}'")));
        }
        tags.insert(k.to_owned(), Value::String(v.to_owned()));
    }
    Ok(Value::Object(tags))
}

/// `--tag key[=value]` as ARM's `$filter`.
fn tag_filter(tag: &str) -> String {
    match tag.split_once('=') {
        Some((k, v)) => format!(
            "tagName eq {} and tagValue eq {}",
            odata_quote(k),
            odata_quote(v)
        ),
        None => format!("tagName eq {}", odata_quote(tag)),
    }
}

/// az's `transform_resource_group_list`.
fn group_list_table(result: &Value) -> Value {
    let rows = result.as_array().map(Vec::as_slice).unwrap_or_default();
    Value::Array(
        rows.iter()
            .map(|r| {
                json!({
                    "Name": r["name"],
                    "Location": r["location"],
                    "Status": r["properties"]["provisioningState"],
                })
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_like_az() {
        let t = parse_tags(&["a=b".into(), "c".into(), "d=e=f".into()]).unwrap();
        assert_eq!(t, json!({"a":"b","c":"","d":"e=f"}));
        assert_eq!(parse_tags(&["".into()]).unwrap(), json!({}));
        assert_eq!(parse_tags(&[]).unwrap(), json!({}));
        assert!(parse_tags(&["=x".into()]).is_err());
    }

    #[test]
    fn tag_filters() {
        assert_eq!(tag_filter("env"), "tagName eq 'env'");
        assert_eq!(
            tag_filter("env=prod"),
            "tagName eq 'env' and tagValue eq 'prod'"
        );
    }

    #[test]
    fn names_stay_one_segment() {
        assert!(path_segment("rg-1").is_ok());
        assert!(path_segment("a/b").is_err());
        assert!(path_segment("").is_err());
    }
}
