//! The login profile: `profile.json` in `~/.sealdisk/` (or `$SEALDISK_CONFIG_DIR`).
//!
//! One file holds what az spreads over `azureProfile.json` and its MSAL cache: the deployment's
//! endpoints, the service principal's credentials, the subscriptions found at login and cached
//! access tokens. It is written with mode 0600 (directory 0700) because it holds a secret.
//!
//! Format (version 1), JSON object with camelCase keys:
//! `version` (1), `endpoint`, `tenantId`, `clientId`, `clientSecret`, `caCertFile` (optional),
//! `cloud` {`resourceManager`, `loginEndpoint`, `armResource`, `graphResource`,
//! `keyVaultDnsSuffix`?}, `nbdEndpoint`?, `subscriptions` [{`id`, `name`, `state`, `tenantId`,
//! `homeTenantId`, `isDefault`}], `tokens` {OAuth2 scope: {`accessToken`, `expiresOn` (Unix
//! seconds)}}. Unknown keys are rejected; a later version bumps `version`.

use std::collections::BTreeMap;
use std::fmt;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::error::{CliError, CliResult};

/// The only profile format version this build reads and writes.
pub const PROFILE_VERSION: u32 = 1;

/// Name az shows as `cloudName` / `environmentName`.
pub const CLOUD_NAME: &str = "sealdisk";

const PROFILE_FILE: &str = "profile.json";

/// A secret string (client secret, access token): never printed by `Debug`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(value: String) -> Self {
        Secret(value)
    }

    /// The secret itself, for the one place that must send or print it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl FromStr for Secret {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Secret(s.to_owned()))
    }
}

/// Where the deployment's services live, from `GET /metadata/endpoints`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CloudEndpoints {
    /// ARM base URL, e.g. `https://localhost:8443/`.
    pub resource_manager: String,
    /// Token service base URL; the token URL is `{loginEndpoint}{tenant}/oauth2/v2.0/token`.
    pub login_endpoint: String,
    /// Token audience for ARM (az's `activeDirectoryResourceId`).
    pub arm_resource: String,
    /// Microsoft Graph base URL and token audience, e.g. `https://localhost:8443/graph/`.
    pub graph_resource: String,
    /// DNS suffix of vaults, e.g. `vault.localhost:8443`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_vault_dns_suffix: Option<String>,
}

impl CloudEndpoints {
    /// Endpoints derived from the base URL alone, when the server has no metadata document.
    pub fn derived(endpoint: &str) -> Self {
        let base = with_slash(endpoint);
        CloudEndpoints {
            resource_manager: base.clone(),
            login_endpoint: base.clone(),
            arm_resource: base.clone(),
            graph_resource: format!("{base}graph/"),
            key_vault_dns_suffix: None,
        }
    }

    /// Reads az's cloud metadata document (`metadata/endpoints?api-version=2022-09-01`).
    pub fn from_metadata(endpoint: &str, doc: &Value) -> Self {
        let derived = CloudEndpoints::derived(endpoint);
        let text = |v: &Value| v.as_str().filter(|s| !s.is_empty()).map(str::to_owned);
        let auth = &doc["authentication"];
        let resource_manager = text(&doc["resourceManager"])
            .map(|s| with_slash(&s))
            .unwrap_or(derived.resource_manager);
        CloudEndpoints {
            login_endpoint: text(&auth["loginEndpoint"])
                .map(|s| with_slash(&s))
                .unwrap_or(derived.login_endpoint),
            arm_resource: text(&auth["audiences"][0]).unwrap_or_else(|| resource_manager.clone()),
            graph_resource: text(&doc["microsoftGraphResourceId"])
                .map(|s| with_slash(&s))
                .unwrap_or(derived.graph_resource),
            key_vault_dns_suffix: text(&doc["suffixes"]["keyVaultDns"])
                .map(|s| s.trim_start_matches('.').to_owned()),
            resource_manager,
        }
    }
}

/// A subscription found at login.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Subscription {
    /// Subscription id (a GUID, without `/subscriptions/`).
    pub id: String,
    /// Display name.
    pub name: String,
    /// `Enabled`, `Disabled`, ...
    pub state: String,
    /// Tenant the login used.
    pub tenant_id: String,
    /// Tenant the subscription belongs to.
    pub home_tenant_id: String,
    /// The subscription commands use unless told otherwise.
    pub is_default: bool,
}

/// A cached access token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CachedToken {
    /// The bearer token.
    pub access_token: Secret,
    /// Expiry, Unix seconds.
    pub expires_on: i64,
}

/// Everything `sealdisk login` stores.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Profile {
    /// Format version, [`PROFILE_VERSION`].
    pub version: u32,
    /// Base URL given at login, with a trailing slash.
    pub endpoint: String,
    /// Tenant of the service principal.
    pub tenant_id: String,
    /// Service principal application (client) id.
    pub client_id: String,
    /// Service principal secret.
    pub client_secret: Secret,
    /// PEM file with the only CA trusted for this deployment; system roots when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_cert_file: Option<PathBuf>,
    /// Service endpoints.
    pub cloud: CloudEndpoints,
    /// NBD server address, from the connection file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbd_endpoint: Option<String>,
    /// Subscriptions found at login.
    pub subscriptions: Vec<Subscription>,
    /// Cached access tokens by OAuth2 scope (`{resource}/.default`).
    #[serde(default)]
    pub tokens: BTreeMap<String, CachedToken>,
}

impl Profile {
    /// The default subscription, if any.
    pub fn default_subscription(&self) -> Option<&Subscription> {
        self.subscriptions
            .iter()
            .find(|s| s.is_default)
            .or(self.subscriptions.first())
    }

    /// Finds a subscription by id or (case-insensitive) name; `None` means the default.
    pub fn find_subscription(&self, wanted: Option<&str>) -> CliResult<&Subscription> {
        match wanted {
            None => self.default_subscription().ok_or(CliError::NotLoggedIn),
            Some(w) => {
                let w = w.trim().trim_start_matches("/subscriptions/");
                self.subscriptions
                    .iter()
                    .find(|s| s.id.eq_ignore_ascii_case(w))
                    .or_else(|| {
                        self.subscriptions
                            .iter()
                            .find(|s| s.name.eq_ignore_ascii_case(w))
                    })
                    .ok_or_else(|| CliError::SubscriptionNotFound(w.to_owned()))
            }
        }
    }

    /// Makes `id` the only default subscription.
    pub fn set_default(&mut self, id: &str) {
        for s in &mut self.subscriptions {
            s.is_default = s.id == id;
        }
    }

    /// A subscription as `account show` prints it.
    pub fn account_view(&self, sub: &Subscription) -> Value {
        json!({
            "environmentName": CLOUD_NAME,
            "homeTenantId": sub.home_tenant_id,
            "id": sub.id,
            "isDefault": sub.is_default,
            "managedByTenants": [],
            "name": sub.name,
            "state": sub.state,
            "tenantId": sub.tenant_id,
            "user": {"name": self.client_id, "type": "servicePrincipal"},
        })
    }

    /// The subscriptions as `account list` and `login` print them.
    pub fn account_list_view(&self) -> Value {
        Value::Array(
            self.subscriptions
                .iter()
                .map(|s| {
                    let mut v = self.account_view(s);
                    if let Some(o) = v.as_object_mut() {
                        o.remove("environmentName");
                        o.insert("cloudName".into(), json!(CLOUD_NAME));
                    }
                    v
                })
                .collect(),
        )
    }
}

/// `endpoint` with exactly one trailing slash.
pub fn with_slash(endpoint: &str) -> String {
    format!("{}/", endpoint.trim_end_matches('/'))
}

/// The profile directory: `$SEALDISK_CONFIG_DIR`, else `~/.sealdisk`.
pub fn config_dir() -> CliResult<PathBuf> {
    if let Some(dir) = std::env::var_os("SEALDISK_CONFIG_DIR").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(dir));
    }
    match std::env::var_os("HOME").filter(|h| !h.is_empty()) {
        Some(home) => Ok(PathBuf::from(home).join(".sealdisk")),
        None => Err(CliError::Usage(
            "cannot find the profile directory: set HOME or SEALDISK_CONFIG_DIR".to_owned(),
        )),
    }
}

/// Path of the profile file inside `dir`.
pub fn profile_path(dir: &Path) -> PathBuf {
    dir.join(PROFILE_FILE)
}

/// Reads the profile; `Ok(None)` when nobody is logged in.
pub fn load(path: &Path) -> CliResult<Option<Profile>> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(CliError::File {
                path: path.to_owned(),
                source,
            });
        }
    };
    let profile: Profile =
        serde_json::from_slice(&bytes).map_err(|source| CliError::FileFormat {
            path: path.to_owned(),
            source,
        })?;
    if profile.version != PROFILE_VERSION {
        return Err(CliError::Usage(format!(
            "{} has format version {}, this sealdisk reads version {PROFILE_VERSION}; run \
             'sealdisk login' again",
            path.display(),
            profile.version
        )));
    }
    Ok(Some(profile))
}

/// Writes the profile atomically with mode 0600 (directory 0700).
pub fn save(path: &Path, profile: &Profile) -> CliResult<()> {
    let file_err = |path: &Path| {
        let path = path.to_owned();
        move |source| CliError::File { path, source }
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    create_private_dir(dir).map_err(file_err(dir))?;
    let mut bytes = serde_json::to_vec_pretty(profile).expect("profile serializes");
    bytes.push(b'\n');
    let tmp = dir.join(format!(".{PROFILE_FILE}.{}.tmp", std::process::id()));
    let write = || -> std::io::Result<()> {
        let mut file = open_private(&tmp)?;
        file.write_all(&bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        CliError::File {
            path: path.to_owned(),
            source: e,
        }
    })
}

/// Removes the profile; `Ok(false)` when there was none.
pub fn remove(path: &Path) -> CliResult<bool> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(source) => Err(CliError::File {
            path: path.to_owned(),
            source,
        }),
    }
}

#[cfg(unix)]
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

#[cfg(not(unix))]
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)
}

#[cfg(unix)]
fn open_private(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
}

#[cfg(not(unix))]
fn open_private(path: &Path) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Profile {
        let mut tokens = BTreeMap::new();
        tokens.insert(
            "https://localhost:8443/".to_owned(),
            CachedToken {
                access_token: Secret::new("eyJ.token".into()),
                expires_on: 1_900_000_000,
            },
        );
        Profile {
            version: PROFILE_VERSION,
            endpoint: "https://localhost:8443/".into(),
            tenant_id: "t1".into(),
            client_id: "c1".into(),
            client_secret: Secret::new("s3cret".into()),
            ca_cert_file: Some("/tmp/ca.pem".into()),
            cloud: CloudEndpoints::derived("https://localhost:8443"),
            nbd_endpoint: Some("127.0.0.1:10809".into()),
            subscriptions: vec![
                Subscription {
                    id: "00000000-0000-0000-0000-000000000001".into(),
                    name: "first".into(),
                    state: "Enabled".into(),
                    tenant_id: "t1".into(),
                    home_tenant_id: "t1".into(),
                    is_default: true,
                },
                Subscription {
                    id: "00000000-0000-0000-0000-000000000002".into(),
                    name: "Second".into(),
                    state: "Enabled".into(),
                    tenant_id: "t1".into(),
                    home_tenant_id: "t1".into(),
                    is_default: false,
                },
            ],
            tokens,
        }
    }

    #[test]
    fn round_trip_and_private_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = profile_path(&dir.path().join("nested"));
        assert_eq!(load(&path).unwrap(), None);
        save(&path, &sample()).unwrap();
        assert_eq!(load(&path).unwrap(), Some(sample()));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
            let dmode = std::fs::metadata(path.parent().unwrap())
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(dmode & 0o777, 0o700);
        }
        assert!(remove(&path).unwrap());
        assert!(!remove(&path).unwrap());
    }

    #[test]
    fn file_uses_camel_case_keys() {
        let text = serde_json::to_string(&sample()).unwrap();
        for key in [
            "\"tenantId\"",
            "\"clientSecret\"",
            "\"caCertFile\"",
            "\"isDefault\"",
            "\"expiresOn\"",
        ] {
            assert!(text.contains(key), "{key} missing in {text}");
        }
    }

    #[test]
    fn unknown_version_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = profile_path(dir.path());
        let mut p = sample();
        p.version = 99;
        save(&path, &p).unwrap();
        assert!(matches!(load(&path), Err(CliError::Usage(_))));
    }

    #[test]
    fn debug_redacts_secrets() {
        let text = format!("{:?}", sample());
        assert!(!text.contains("s3cret"));
        assert!(!text.contains("eyJ.token"));
    }

    #[test]
    fn find_subscription_by_id_or_name() {
        let p = sample();
        assert_eq!(p.find_subscription(None).unwrap().name, "first");
        assert_eq!(p.find_subscription(Some("second")).unwrap().name, "Second");
        assert_eq!(
            p.find_subscription(Some("/subscriptions/00000000-0000-0000-0000-000000000002"))
                .unwrap()
                .name,
            "Second"
        );
        assert!(matches!(
            p.find_subscription(Some("nope")),
            Err(CliError::SubscriptionNotFound(_))
        ));
    }

    #[test]
    fn account_views_have_az_shape() {
        let p = sample();
        let show = p.account_view(&p.subscriptions[0]);
        assert_eq!(show["environmentName"], "sealdisk");
        assert_eq!(show["user"]["type"], "servicePrincipal");
        let list = p.account_list_view();
        assert_eq!(list[0]["cloudName"], "sealdisk");
        assert!(list[0].get("environmentName").is_none());
        assert_eq!(list[1]["isDefault"], false);
    }

    #[test]
    fn metadata_document_is_read() {
        let doc = serde_json::json!({
            "resourceManager": "https://localhost:9/",
            "microsoftGraphResourceId": "https://localhost:9/graph/",
            "authentication": {"loginEndpoint": "https://localhost:9", "audiences": ["https://localhost:9/"]},
            "suffixes": {"keyVaultDns": ".vault.localhost:9"}
        });
        let c = CloudEndpoints::from_metadata("https://localhost:9/", &doc);
        assert_eq!(c.login_endpoint, "https://localhost:9/");
        assert_eq!(c.arm_resource, "https://localhost:9/");
        assert_eq!(c.graph_resource, "https://localhost:9/graph/");
        assert_eq!(c.key_vault_dns_suffix.as_deref(), Some("vault.localhost:9"));
        let bare = CloudEndpoints::from_metadata("https://localhost:9", &serde_json::json!({}));
        assert_eq!(bare, CloudEndpoints::derived("https://localhost:9/"));
    }
}
