//! `login` and `logout`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;

use crate::cli::Ctx;
use crate::cli::error::{CliError, CliResult, ServiceKind};
use crate::cli::http::Http;
use crate::cli::output::Outcome;
use crate::cli::profile::{self, PROFILE_VERSION, Profile, Secret, Subscription};
use crate::cli::session::{self, Session, api_version};

/// `login`: either a service principal given on the command line or a server's
/// `connection.json`.
#[derive(Debug, clap::Args)]
#[command(group(
    clap::ArgGroup::new("mode")
        .required(true)
        .args(["service_principal", "connection_file"])
))]
pub struct LoginArgs {
    /// Log in with a service principal (needs -u, -p, --tenant and --endpoint).
    #[arg(long, requires_all = ["username", "password", "tenant", "endpoint"])]
    service_principal: bool,
    /// Service principal application (client) id.
    #[arg(short = 'u', long, value_name = "CLIENT_ID")]
    username: Option<String>,
    /// Service principal secret.
    #[arg(short = 'p', long, value_name = "SECRET")]
    password: Option<Secret>,
    /// Tenant id of the service principal.
    #[arg(short = 't', long, value_name = "TENANT")]
    tenant: Option<String>,
    /// Base URL of the sealdisk server, e.g. https://localhost:8443/.
    #[arg(long, value_name = "URL")]
    endpoint: Option<String>,
    /// PEM file holding the CA to trust (and nothing else).
    #[arg(long, value_name = "PATH")]
    ca_file: Option<PathBuf>,
    /// A server's connection.json: endpoint, credentials and CA in one file.
    #[arg(long, value_name = "PATH", conflicts_with_all = ["service_principal", "username", "password", "tenant", "endpoint"])]
    connection_file: Option<PathBuf>,
    /// Log in even when the service principal sees no subscription.
    #[arg(long)]
    allow_no_subscriptions: bool,
}

/// The file `sealdisk serve` writes next to its data (unknown fields are ignored so that the
/// server may add some).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ConnectionFile {
    endpoint: String,
    tenant_id: String,
    #[serde(default)]
    subscription_id: Option<String>,
    client_id: String,
    client_secret: Secret,
    #[serde(default)]
    ca_cert_file: Option<PathBuf>,
    #[serde(default)]
    key_vault_dns_suffix: Option<String>,
    #[serde(default)]
    nbd_endpoint: Option<String>,
}

/// Everything login needs, whichever way it was given.
#[derive(Debug)]
struct Credentials {
    endpoint: String,
    tenant_id: String,
    client_id: String,
    client_secret: Secret,
    ca_cert_file: Option<PathBuf>,
    preferred_subscription: Option<String>,
    key_vault_dns_suffix: Option<String>,
    nbd_endpoint: Option<String>,
}

fn read_connection_file(path: &Path) -> CliResult<Credentials> {
    let bytes = std::fs::read(path).map_err(|source| CliError::File {
        path: path.to_owned(),
        source,
    })?;
    let conn: ConnectionFile =
        serde_json::from_slice(&bytes).map_err(|source| CliError::FileFormat {
            path: path.to_owned(),
            source,
        })?;
    let dir = path.parent().unwrap_or(Path::new("."));
    Ok(Credentials {
        endpoint: profile::with_slash(&conn.endpoint),
        tenant_id: conn.tenant_id,
        client_id: conn.client_id,
        client_secret: conn.client_secret,
        ca_cert_file: conn.ca_cert_file.map(|p| absolute(dir, &p)),
        preferred_subscription: conn.subscription_id,
        key_vault_dns_suffix: conn.key_vault_dns_suffix,
        nbd_endpoint: conn.nbd_endpoint,
    })
}

/// `path` made absolute against `base` (then against the working directory).
fn absolute(base: &Path, path: &Path) -> PathBuf {
    let joined = base.join(path);
    std::path::absolute(&joined).unwrap_or(joined)
}

fn credentials(args: LoginArgs) -> CliResult<Credentials> {
    if let Some(path) = &args.connection_file {
        return read_connection_file(path);
    }
    let missing = |what: &str| CliError::Usage(format!("login --service-principal needs {what}"));
    let endpoint = args.endpoint.ok_or_else(|| missing("--endpoint"))?;
    session::parse_url(&endpoint)?;
    Ok(Credentials {
        endpoint: profile::with_slash(&endpoint),
        tenant_id: args.tenant.ok_or_else(|| missing("--tenant"))?,
        client_id: args.username.ok_or_else(|| missing("--username"))?,
        client_secret: args.password.ok_or_else(|| missing("--password"))?,
        ca_cert_file: args.ca_file.map(|p| absolute(Path::new("."), &p)),
        preferred_subscription: None,
        key_vault_dns_suffix: None,
        nbd_endpoint: None,
    })
}

/// `login`.
pub async fn login(ctx: &Ctx, args: LoginArgs) -> CliResult<Outcome> {
    let allow_none = args.allow_no_subscriptions;
    let creds = credentials(args)?;
    let http = Http::new(creds.ca_cert_file.as_deref(), ctx.debug)?;
    let mut cloud = session::discover_cloud(&http, &creds.endpoint).await?;
    if cloud.key_vault_dns_suffix.is_none() {
        cloud.key_vault_dns_suffix = creds.key_vault_dns_suffix.clone();
    }
    let profile = Profile {
        version: PROFILE_VERSION,
        endpoint: creds.endpoint.clone(),
        tenant_id: creds.tenant_id.clone(),
        client_id: creds.client_id.clone(),
        client_secret: creds.client_secret.clone(),
        ca_cert_file: creds.ca_cert_file.clone(),
        cloud,
        nbd_endpoint: creds.nbd_endpoint.clone(),
        subscriptions: Vec::new(),
        tokens: BTreeMap::new(),
    };
    let mut session = Session::new(http, profile, &ctx.profile_path);
    let mut subs = fetch_subscriptions(&mut session).await?;
    if subs.is_empty() {
        if !allow_none {
            return Err(CliError::NoSubscriptions {
                user: creds.client_id,
            });
        }
        subs.push(tenant_level_account(&creds.tenant_id));
    }
    let default = pick_default(&subs, creds.preferred_subscription.as_deref(), None);
    session.profile.subscriptions = subs;
    if let Some(id) = default {
        session.profile.set_default(&id);
    }
    session.save()?;
    Ok(Outcome::value(session.profile.account_list_view()))
}

/// The pseudo-subscription az shows after `--allow-no-subscriptions`.
fn tenant_level_account(tenant: &str) -> Subscription {
    Subscription {
        id: tenant.to_owned(),
        name: "N/A(tenant level account)".to_owned(),
        state: "Enabled".to_owned(),
        tenant_id: tenant.to_owned(),
        home_tenant_id: tenant.to_owned(),
        is_default: true,
    }
}

/// `GET /subscriptions`, as profile entries (none marked default).
pub async fn fetch_subscriptions(session: &mut Session) -> CliResult<Vec<Subscription>> {
    let url = session.arm_url("subscriptions", api_version::SUBSCRIPTIONS, &[])?;
    let (items, _) = session.list(ServiceKind::Arm, url, false).await?;
    let tenant = session.profile.tenant_id.clone();
    Ok(items
        .iter()
        .filter_map(|item| subscription_from_arm(item, &tenant))
        .collect())
}

/// One item of `GET /subscriptions` as a profile entry.
fn subscription_from_arm(item: &Value, login_tenant: &str) -> Option<Subscription> {
    let text = |k: &str| item.get(k).and_then(Value::as_str).map(str::to_owned);
    let id = text("subscriptionId")
        .or_else(|| text("id").map(|id| id.trim_start_matches("/subscriptions/").to_owned()))?;
    Some(Subscription {
        name: text("displayName").unwrap_or_else(|| id.clone()),
        state: text("state").unwrap_or_else(|| "Enabled".to_owned()),
        tenant_id: login_tenant.to_owned(),
        home_tenant_id: text("homeTenantId")
            .or_else(|| text("tenantId"))
            .unwrap_or_else(|| login_tenant.to_owned()),
        is_default: false,
        id,
    })
}

/// The default subscription: the preferred one if present, else the previous default if still
/// present, else the first enabled, else the first.
pub fn pick_default(
    subs: &[Subscription],
    preferred: Option<&str>,
    previous: Option<&str>,
) -> Option<String> {
    let present = |id: Option<&str>| {
        id.and_then(|id| subs.iter().find(|s| s.id.eq_ignore_ascii_case(id)))
            .map(|s| s.id.clone())
    };
    present(preferred)
        .or_else(|| present(previous))
        .or_else(|| {
            subs.iter()
                .find(|s| s.state == "Enabled")
                .or(subs.first())
                .map(|s| s.id.clone())
        })
}

/// `logout`.
pub fn logout(ctx: &Ctx) -> CliResult<Outcome> {
    if profile::remove(&ctx.profile_path)? {
        Ok(Outcome::nothing())
    } else {
        Err(CliError::NotLoggedIn)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sub(id: &str, state: &str) -> Subscription {
        Subscription {
            id: id.into(),
            name: id.into(),
            state: state.into(),
            tenant_id: "t".into(),
            home_tenant_id: "t".into(),
            is_default: false,
        }
    }

    #[test]
    fn default_subscription_choice() {
        let subs = [
            sub("a", "Disabled"),
            sub("b", "Enabled"),
            sub("c", "Enabled"),
        ];
        assert_eq!(pick_default(&subs, None, None).as_deref(), Some("b"));
        assert_eq!(pick_default(&subs, Some("C"), None).as_deref(), Some("c"));
        assert_eq!(
            pick_default(&subs, Some("zz"), Some("c")).as_deref(),
            Some("c")
        );
        assert_eq!(pick_default(&[], None, None), None);
    }

    #[test]
    fn arm_subscription_item() {
        let item = json!({"id":"/subscriptions/abc","subscriptionId":"abc","tenantId":"home",
                          "displayName":"Dev","state":"Enabled"});
        let s = subscription_from_arm(&item, "login").unwrap();
        assert_eq!(s.id, "abc");
        assert_eq!(s.name, "Dev");
        assert_eq!(s.tenant_id, "login");
        assert_eq!(s.home_tenant_id, "home");
        let bare = subscription_from_arm(&json!({"id":"/subscriptions/x"}), "t").unwrap();
        assert_eq!(bare.id, "x");
        assert!(subscription_from_arm(&json!({}), "t").is_none());
    }

    #[test]
    fn connection_file_is_read_and_ca_made_absolute() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("connection.json");
        std::fs::write(
            &path,
            r#"{"endpoint":"https://localhost:8443","tenantId":"t","subscriptionId":"s",
                "clientId":"c","clientSecret":"x","caCertFile":"tls/ca-cert.pem",
                "keyVaultDnsSuffix":"vault.localhost:8443","nbdEndpoint":"127.0.0.1:10809",
                "somethingNew":1}"#,
        )
        .unwrap();
        let c = read_connection_file(&path).unwrap();
        assert_eq!(c.endpoint, "https://localhost:8443/");
        assert_eq!(c.ca_cert_file.unwrap(), dir.path().join("tls/ca-cert.pem"));
        assert_eq!(c.preferred_subscription.as_deref(), Some("s"));
        assert_eq!(c.client_secret.expose(), "x");
    }
}
