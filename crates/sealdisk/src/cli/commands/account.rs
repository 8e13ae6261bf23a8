//! `account show|list|set|get-access-token`.

use serde_json::{Value, json};
use time::macros::format_description;

use super::login::{fetch_subscriptions, pick_default};
use crate::cli::Ctx;
use crate::cli::error::{CliError, CliResult};
use crate::cli::output::Outcome;
use crate::cli::profile;
use crate::cli::session::{self, Session};

/// `account` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum AccountCommand {
    /// Get the details of a subscription (the default one unless told).
    Show {
        /// Name or ID of subscription.
        #[arg(
            short = 's',
            long = "subscription",
            visible_alias = "name",
            visible_short_alias = 'n'
        )]
        subscription: Option<String>,
    },
    /// Get the subscriptions of the logged-in account.
    List {
        /// List all subscriptions, not only the enabled ones.
        #[arg(long)]
        all: bool,
        /// Ask the server for the current subscriptions.
        #[arg(long)]
        refresh: bool,
    },
    /// Set a subscription to be the current active subscription.
    Set {
        /// Name or ID of subscription.
        #[arg(
            short = 's',
            long = "subscription",
            visible_alias = "name",
            visible_short_alias = 'n'
        )]
        subscription: String,
    },
    /// Get a token for utilities to access sealdisk.
    GetAccessToken {
        /// Resource the token is for; default: Azure Resource Manager of the deployment.
        #[arg(long, conflicts_with = "scope")]
        resource: Option<String>,
        /// OAuth2 scope the token is for, e.g. https://localhost:8443//.default.
        #[arg(long)]
        scope: Option<String>,
        /// Name or ID of subscription.
        #[arg(long)]
        subscription: Option<String>,
    },
}

/// Runs an `account` subcommand.
pub async fn run(ctx: &Ctx, cmd: AccountCommand) -> CliResult<Outcome> {
    let mut session = ctx.session()?;
    let outcome = match cmd {
        AccountCommand::Show { subscription } => {
            let sub = session.profile.find_subscription(subscription.as_deref())?;
            Outcome::value(session.profile.account_view(sub))
        }
        AccountCommand::List { all, refresh } => list(ctx, &mut session, all, refresh).await?,
        AccountCommand::Set { subscription } => {
            let id = session
                .profile
                .find_subscription(Some(&subscription))?
                .id
                .clone();
            session.profile.set_default(&id);
            session.mark_dirty();
            Outcome::nothing()
        }
        AccountCommand::GetAccessToken {
            resource,
            scope,
            subscription,
        } => get_access_token(&mut session, resource, scope, subscription).await?,
    };
    session.save()?;
    Ok(outcome)
}

async fn list(ctx: &Ctx, session: &mut Session, all: bool, refresh: bool) -> CliResult<Outcome> {
    if refresh {
        let previous = session.profile.default_subscription().map(|s| s.id.clone());
        let subs = fetch_subscriptions(session).await?;
        let default = pick_default(&subs, None, previous.as_deref());
        session.profile.subscriptions = subs;
        if let Some(id) = default {
            session.profile.set_default(&id);
        }
        session.mark_dirty();
    }
    let mut view = session.profile.account_list_view();
    if session.profile.subscriptions.is_empty() {
        ctx.warn("Please run \"sealdisk login\" to access your accounts.");
    }
    if !all && let Value::Array(items) = &mut view {
        let before = items.len();
        items.retain(|s| s["state"] == "Enabled");
        if items.len() != before {
            ctx.warn(
                "A few accounts are skipped as they don't have 'Enabled' state. Use '--all' to \
                 display them.",
            );
        }
    }
    Ok(Outcome::with_table(view, account_list_table))
}

/// az's `transform_account_list`.
fn account_list_table(result: &Value) -> Value {
    let rows = result.as_array().map(Vec::as_slice).unwrap_or_default();
    Value::Array(
        rows.iter()
            .map(|r| {
                json!({
                    "Name": r["name"],
                    "CloudName": r["cloudName"],
                    "SubscriptionId": r["id"],
                    "TenantId": r["tenantId"],
                    "State": r["state"],
                    "IsDefault": r["isDefault"],
                })
            })
            .collect(),
    )
}

async fn get_access_token(
    session: &mut Session,
    resource: Option<String>,
    scope: Option<String>,
    subscription: Option<String>,
) -> CliResult<Outcome> {
    let sub = session
        .profile
        .find_subscription(subscription.as_deref())?
        .id
        .clone();
    let scope = match (scope, resource) {
        (Some(scope), _) => scope,
        (None, Some(resource)) => session::scope_for_resource(&resource),
        (None, None) => session::scope_for_resource(&session.profile.cloud.arm_resource),
    };
    let token = session.token_for_scope(&scope, false).await?;
    let tenant = session.profile.tenant_id.clone();
    Ok(Outcome::value(token_view(
        token.access_token.expose(),
        token.expires_on,
        &tenant,
        &sub,
    )?))
}

/// az's shape of `account get-access-token` (`expiresOn` is printed in UTC here; az uses local
/// time).
fn token_view(token: &str, expires_on: i64, tenant: &str, sub: &str) -> CliResult<Value> {
    let format =
        format_description!("[year]-[month]-[day] [hour]:[minute]:[second].[subsecond digits:6]");
    let when = time::OffsetDateTime::from_unix_timestamp(expires_on)
        .ok()
        .and_then(|t| t.format(&format).ok())
        .ok_or_else(|| CliError::BadResponse {
            url: profile::CLOUD_NAME.to_owned(),
            detail: format!("token expiry {expires_on} is not a valid time"),
        })?;
    Ok(json!({
        "accessToken": token,
        "expiresOn": when,
        "expires_on": expires_on,
        "subscription": sub,
        "tenant": tenant,
        "tokenType": "Bearer",
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_view_shape() {
        let v = token_view("tok", 1_700_000_000, "t", "s").unwrap();
        assert_eq!(v["expiresOn"], "2023-11-14 22:13:20.000000");
        assert_eq!(v["expires_on"], 1_700_000_000);
        assert_eq!(v["tokenType"], "Bearer");
        assert_eq!(v["subscription"], "s");
    }

    #[test]
    fn account_table_columns() {
        let rows = account_list_table(&json!([{"name":"n","cloudName":"sealdisk","id":"i",
            "tenantId":"t","state":"Enabled","isDefault":true}]));
        let keys: Vec<&String> = rows[0].as_object().unwrap().keys().collect();
        assert_eq!(
            keys,
            [
                "Name",
                "CloudName",
                "SubscriptionId",
                "TenantId",
                "State",
                "IsDefault"
            ]
        );
    }
}
