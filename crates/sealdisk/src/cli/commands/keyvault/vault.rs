//! The ARM side of `keyvault`: vaults, soft-deleted vaults and access policies
//! (`Microsoft.KeyVault`), with az's look-ups (resource group from the vault name, location
//! of a deleted vault, the caller's object id).

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use clap::{ArgGroup, Args};
use reqwest::{Method, Url};
use serde_json::{Map, Value, json};

use super::super::ad;
use super::super::group::{group_location, parse_tags, path_segment};
use super::{KeyvaultCommand, parse_flag, refused, shape};
use crate::cli::SubscriptionArg;
use crate::cli::error::{CliError, CliResult, ServiceKind};
use crate::cli::lro::LroMethod;
use crate::cli::output::Outcome;
use crate::cli::session::{Session, odata_quote};

/// api-version of Microsoft.KeyVault (any recent one is accepted by the server).
pub const API: &str = "2023-07-01";
/// api-version az uses for the generic resource list that finds a vault's group.
const RESOURCES_API: &str = "2015-11-01";
const VAULT_TYPE: &str = "Microsoft.KeyVault/vaults";
/// Retention az asks for when `--retention-days` is not given.
const DEFAULT_RETENTION_DAYS: i64 = 90;

/// `-n/--name` and an optional `-g/--resource-group` of an existing vault.
#[derive(Debug, Clone, Args)]
pub struct VaultArgs {
    /// Name of the Key Vault.
    #[arg(short = 'n', long = "name", value_name = "NAME")]
    pub name: String,
    /// Resource group of the vault. Found from the vault name when not given.
    #[arg(short = 'g', long = "resource-group")]
    pub resource_group: Option<String>,
    /// Do not wait for the long-running operation to finish.
    #[arg(long)]
    pub no_wait: bool,
    #[command(flatten)]
    pub sub: SubscriptionArg,
}

/// `keyvault list`.
#[derive(Debug, Clone, Args)]
pub struct VaultListArgs {
    /// List only the vaults of this resource group.
    #[arg(short = 'g', long = "resource-group")]
    pub resource_group: Option<String>,
    #[command(flatten)]
    pub sub: SubscriptionArg,
}

/// `keyvault list-deleted`.
#[derive(Debug, Clone, Args)]
pub struct ListDeletedArgs {
    #[command(flatten)]
    pub sub: SubscriptionArg,
}

/// A soft-deleted vault: `-n` with optional `-g` and `-l` (found from the deleted vault).
#[derive(Debug, Clone, Args)]
pub struct LocatedVaultArgs {
    /// Name of the deleted Key Vault.
    #[arg(short = 'n', long = "name", value_name = "NAME")]
    pub name: String,
    /// Resource group the vault was deleted from (recover only). Found when not given.
    #[arg(short = 'g', long = "resource-group")]
    pub resource_group: Option<String>,
    /// Location of the deleted vault. Found when not given.
    #[arg(short = 'l', long)]
    pub location: Option<String>,
    /// Do not wait for the long-running operation to finish.
    #[arg(long)]
    pub no_wait: bool,
    #[command(flatten)]
    pub sub: SubscriptionArg,
}

/// Vault SKUs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Sku {
    /// Software-protected keys.
    Standard,
    /// Software- and HSM-protected keys.
    Premium,
}

impl Sku {
    fn as_str(self) -> &'static str {
        match self {
            Sku::Standard => "standard",
            Sku::Premium => "premium",
        }
    }
}

/// `--public-network-access`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum NetworkAccess {
    /// Reachable from any network.
    #[value(name = "Enabled")]
    Enabled,
    /// Only through private endpoints.
    #[value(name = "Disabled")]
    Disabled,
}

impl NetworkAccess {
    fn as_str(self) -> &'static str {
        match self {
            NetworkAccess::Enabled => "Enabled",
            NetworkAccess::Disabled => "Disabled",
        }
    }
}

/// Vault properties both `create` and `update` set.
#[derive(Debug, Clone, Default, Args)]
pub struct VaultSettings {
    /// Protect deleted vaults and keys from purging until their retention ends. Irreversible
    /// once on.
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_parser = parse_flag, value_name = "BOOL")]
    pub enable_purge_protection: Option<bool>,
    /// Days a deleted vault or key stays recoverable (7-90; 90 when a vault is created).
    #[arg(long, value_parser = clap::value_parser!(i64).range(7..=90))]
    pub retention_days: Option<i64>,
    /// Authorize data-plane requests with Azure RBAC instead of access policies. Defaults to
    /// false on create (access policies, as az did before 2.61).
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_parser = parse_flag, value_name = "BOOL")]
    pub enable_rbac_authorization: Option<bool>,
    /// Allow Azure Disk Encryption to use the vault.
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_parser = parse_flag, value_name = "BOOL")]
    pub enabled_for_disk_encryption: Option<bool>,
    /// Allow virtual machines to retrieve certificates stored as secrets.
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_parser = parse_flag, value_name = "BOOL")]
    pub enabled_for_deployment: Option<bool>,
    /// Allow Resource Manager templates to retrieve secrets.
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_parser = parse_flag, value_name = "BOOL")]
    pub enabled_for_template_deployment: Option<bool>,
    /// Soft delete is always on; accepted as `true` for scripts written for az.
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_parser = parse_flag, value_name = "BOOL")]
    pub enable_soft_delete: Option<bool>,
    /// Whether the vault accepts traffic from public networks.
    #[arg(long, value_enum, ignore_case = true)]
    pub public_network_access: Option<NetworkAccess>,
}

/// `keyvault create`.
#[derive(Debug, Clone, Args)]
pub struct CreateArgs {
    /// Name of the Key Vault (3-24 letters, digits and dashes).
    #[arg(short = 'n', long = "name", value_name = "NAME")]
    pub name: String,
    /// Resource group to create the vault in.
    #[arg(short = 'g', long = "resource-group")]
    pub resource_group: String,
    /// Location. Defaults to the resource group's location.
    #[arg(short = 'l', long)]
    pub location: Option<String>,
    /// Pricing tier.
    #[arg(long, value_enum, ignore_case = true)]
    pub sku: Option<Sku>,
    #[command(flatten)]
    pub settings: VaultSettings,
    /// Do not give the creator an access policy.
    #[arg(long)]
    pub no_self_perms: bool,
    /// Space-separated tags: key[=value] [key[=value] ...].
    #[arg(long, num_args = 0.., value_name = "KEY=VALUE")]
    pub tags: Option<Vec<String>>,
    /// Do not wait for the long-running operation to finish.
    #[arg(long)]
    pub no_wait: bool,
    #[command(flatten)]
    pub sub: SubscriptionArg,
}

/// `keyvault update`.
#[derive(Debug, Clone, Args)]
pub struct UpdateArgs {
    #[command(flatten)]
    pub vault: VaultArgs,
    #[command(flatten)]
    pub settings: VaultSettings,
    /// Space-separated tags: key[=value] [key[=value] ...]. Use "" to clear existing tags.
    #[arg(long, num_args = 0.., value_name = "KEY=VALUE")]
    pub tags: Option<Vec<String>>,
}

/// The principal an access policy is for: `--object-id` or `--spn`.
#[derive(Debug, Clone, Args)]
#[command(group(ArgGroup::new("principal").required(true).args(["object_id", "spn"])))]
pub struct PrincipalArgs {
    /// Object id of the user, group or service principal.
    #[arg(long)]
    pub object_id: Option<String>,
    /// Name (e.g. appId) of a service principal; looked up in Microsoft Graph.
    #[arg(long)]
    pub spn: Option<String>,
    /// Application id of a compound identity (the policy applies to the principal using it).
    #[arg(long)]
    pub application_id: Option<String>,
}

/// `keyvault set-policy`.
#[derive(Debug, Clone, Args)]
pub struct SetPolicyArgs {
    #[command(flatten)]
    pub vault: VaultArgs,
    #[command(flatten)]
    pub principal: PrincipalArgs,
    /// Space-separated key permissions (get list create update import delete recover backup
    /// restore purge encrypt decrypt wrapKey unwrapKey sign verify rotate getrotationpolicy
    /// setrotationpolicy release all). Replaces the principal's key permissions.
    #[arg(long, num_args = 0.., value_name = "PERMISSION")]
    pub key_permissions: Option<Vec<String>>,
    /// Space-separated secret permissions.
    #[arg(long, num_args = 0.., value_name = "PERMISSION")]
    pub secret_permissions: Option<Vec<String>>,
    /// Space-separated certificate permissions.
    #[arg(long, num_args = 0.., value_name = "PERMISSION")]
    pub certificate_permissions: Option<Vec<String>>,
    /// Space-separated storage permissions.
    #[arg(long, num_args = 0.., value_name = "PERMISSION")]
    pub storage_permissions: Option<Vec<String>>,
}

/// `keyvault delete-policy`.
#[derive(Debug, Clone, Args)]
pub struct DeletePolicyArgs {
    #[command(flatten)]
    pub vault: VaultArgs,
    #[command(flatten)]
    pub principal: PrincipalArgs,
}

/// Runs the ARM subcommands of `keyvault`.
pub async fn run(session: &mut Session, cmd: KeyvaultCommand) -> CliResult<Outcome> {
    Ok(match cmd {
        KeyvaultCommand::Create(args) => create(session, *args).await?,
        KeyvaultCommand::Show(args) => {
            let url = existing_vault_url(session, &args).await?;
            let vault = session.arm(Method::GET, url, None).await?;
            Outcome {
                value: vault.map(shape::vault),
                table: None,
            }
        }
        KeyvaultCommand::List(args) => {
            let sub = session.subscription_id(args.sub.subscription.as_deref())?;
            // Like az: whole vaults for a group, generic resources for the subscription.
            let items = match &args.resource_group {
                Some(g) => {
                    let path = format!(
                        "subscriptions/{sub}/resourceGroups/{}/providers/{VAULT_TYPE}",
                        path_segment(g)?
                    );
                    let url = session.arm_url(&path, API, &[])?;
                    let (items, _) = session.list(ServiceKind::Arm, url, false).await?;
                    items.into_iter().map(shape::vault).collect()
                }
                None => {
                    let filter = format!("resourceType eq '{VAULT_TYPE}'");
                    let url = session.arm_url(
                        &format!("subscriptions/{sub}/resources"),
                        RESOURCES_API,
                        &[("$filter", filter.as_str())],
                    )?;
                    let (items, _) = session.list(ServiceKind::Arm, url, false).await?;
                    items.into_iter().map(shape::resource).collect()
                }
            };
            Outcome::value(Value::Array(items))
        }
        KeyvaultCommand::Update(args) => {
            let UpdateArgs {
                vault,
                settings,
                tags,
            } = *args;
            let body = update_body(&settings, tags.as_deref())?;
            let url = existing_vault_url(session, &vault).await?;
            let updated = session.arm(Method::PATCH, url, Some(&body)).await?;
            Outcome {
                value: updated.map(shape::vault),
                table: None,
            }
        }
        KeyvaultCommand::Delete(args) => {
            let url = existing_vault_url(session, &args).await?;
            session
                .arm_lro(LroMethod::Delete, url, None, args.no_wait)
                .await?;
            Outcome::nothing()
        }
        KeyvaultCommand::ListDeleted(args) => {
            let items = list_deleted(session, &args.sub).await?;
            Outcome::value(Value::Array(
                items.into_iter().map(shape::deleted_vault).collect(),
            ))
        }
        KeyvaultCommand::ShowDeleted(args) => {
            let (location, _) = locate_deleted(session, &args).await?;
            let url = deleted_vault_url(session, &args.sub, &location, &args.name, "")?;
            let deleted = session.arm(Method::GET, url, None).await?;
            Outcome {
                value: deleted.map(shape::deleted_vault),
                table: None,
            }
        }
        KeyvaultCommand::Purge(args) => {
            let (location, _) = locate_deleted(session, &args).await?;
            let url = deleted_vault_url(session, &args.sub, &location, &args.name, "purge")?;
            session
                .arm_lro(LroMethod::Post, url, None, args.no_wait)
                .await?;
            Outcome::nothing()
        }
        KeyvaultCommand::Recover(args) => {
            let (location, group) = locate_deleted(session, &args).await?;
            let group = match args.resource_group.clone().or(group) {
                Some(g) => g,
                None => {
                    return Err(CliError::Usage(
                        "--resource-group is required: the deleted vault does not tell its group"
                            .to_owned(),
                    ));
                }
            };
            let url = vault_url(session, &args.sub, &group, &args.name)?;
            let tenant = session.profile.tenant_id.clone();
            let body = recover_body(&location, &tenant);
            let vault = session
                .arm_lro(LroMethod::Put, url, Some(&body), args.no_wait)
                .await?;
            Outcome {
                value: vault.map(shape::vault),
                table: None,
            }
        }
        KeyvaultCommand::SetPolicy(args) => {
            let SetPolicyArgs {
                vault,
                principal,
                key_permissions,
                secret_permissions,
                certificate_permissions,
                storage_permissions,
            } = *args;
            let object_id = principal_object_id(session, &principal).await?;
            let permissions = PolicyPermissions {
                keys: key_permissions,
                secrets: secret_permissions,
                certificates: certificate_permissions,
                storage: storage_permissions,
            };
            let change = |v: &mut Value| {
                set_policy_in(
                    v,
                    &object_id,
                    principal.application_id.as_deref(),
                    &permissions,
                )
            };
            edit_policies(session, &vault, change).await?
        }
        KeyvaultCommand::DeletePolicy(args) => {
            let object_id = principal_object_id(session, &args.principal).await?;
            let app = args.principal.application_id.as_deref();
            let change = |v: &mut Value| delete_policy_in(v, &object_id, app);
            edit_policies(session, &args.vault, change).await?
        }
        KeyvaultCommand::Key(_) | KeyvaultCommand::Audit(_) => {
            unreachable!("data-plane commands are dispatched in keyvault::run")
        }
    })
}

/// `keyvault create`, like az in access-policy mode.
async fn create(session: &mut Session, args: CreateArgs) -> CliResult<Outcome> {
    check_soft_delete(args.settings.enable_soft_delete)?;
    let url = vault_url(session, &args.sub, &args.resource_group, &args.name)?;
    // az refuses to overwrite: a PUT on an existing vault would silently update it.
    if session
        .arm(Method::GET, url.clone(), None)
        .await
        .is_ok_and(|v| v.is_some())
    {
        return Err(refused(format!(
            "The specified vault: {} already exists",
            args.name
        )));
    }
    let location = match args.location {
        Some(l) => l,
        None => group_location(session, &args.sub, &args.resource_group).await?,
    };
    let rbac = args.settings.enable_rbac_authorization.unwrap_or(false);
    let tenant = session.profile.tenant_id.clone();
    let policies = if rbac || args.no_self_perms {
        Vec::new()
    } else {
        let oid = caller_object_id(session).await?;
        vec![creator_policy(&tenant, &oid)]
    };
    let tags = args.tags.as_deref().map(parse_tags).transpose()?;
    let body = create_body(
        &location,
        tags,
        &tenant,
        args.sku.unwrap_or(Sku::Standard),
        &args.settings,
        policies,
    );
    let vault = session
        .arm_lro(LroMethod::Put, url, Some(&body), args.no_wait)
        .await?;
    Ok(Outcome {
        value: vault.map(shape::vault),
        table: None,
    })
}

/// `--enable-soft-delete false` cannot be honoured.
fn check_soft_delete(flag: Option<bool>) -> CliResult<()> {
    if flag == Some(false) {
        return Err(CliError::Usage(
            "--enable-soft-delete false is not supported: soft delete is always on for sealdisk \
             vaults (deleted vaults and keys stay recoverable for --retention-days)"
                .to_owned(),
        ));
    }
    Ok(())
}

/// The access policy az gives the creator of a vault: every permission.
fn creator_policy(tenant: &str, object_id: &str) -> Value {
    json!({
        "tenantId": tenant,
        "objectId": object_id,
        "permissions": {
            "keys": ["all"],
            "secrets": ["all"],
            "certificates": ["all"],
            "storage": ["all"],
        }
    })
}

/// The PUT body of `keyvault create`.
fn create_body(
    location: &str,
    tags: Option<Value>,
    tenant: &str,
    sku: Sku,
    s: &VaultSettings,
    access_policies: Vec<Value>,
) -> Value {
    let mut props = json!({
        "tenantId": tenant,
        "sku": {"family": "A", "name": sku.as_str()},
        "accessPolicies": access_policies,
        "enableRbacAuthorization": s.enable_rbac_authorization.unwrap_or(false),
        "enableSoftDelete": true,
        "softDeleteRetentionInDays": s.retention_days.unwrap_or(DEFAULT_RETENTION_DAYS),
        // az's default network rule set (`_create_network_rule_set`).
        "networkAcls": {"bypass": "AzureServices", "defaultAction": "Allow"},
    });
    // Like az, purge protection is sent only to turn it on.
    if s.enable_purge_protection == Some(true) {
        props["enablePurgeProtection"] = json!(true);
    }
    add_optional_settings(&mut props, s);
    let mut body = json!({ "location": location, "properties": props });
    if let Some(t) = tags {
        body["tags"] = t;
    }
    body
}

fn add_optional_settings(props: &mut Value, s: &VaultSettings) {
    for (key, value) in [
        ("enabledForDiskEncryption", s.enabled_for_disk_encryption),
        ("enabledForDeployment", s.enabled_for_deployment),
        (
            "enabledForTemplateDeployment",
            s.enabled_for_template_deployment,
        ),
    ] {
        if let Some(v) = value {
            props[key] = json!(v);
        }
    }
    if let Some(a) = s.public_network_access {
        props["publicNetworkAccess"] = json!(a.as_str());
    }
}

/// The PATCH body of `keyvault update`: only what was given.
fn update_body(s: &VaultSettings, tags: Option<&[String]>) -> CliResult<Value> {
    check_soft_delete(s.enable_soft_delete)?;
    let mut props = json!({});
    if let Some(v) = s.enable_purge_protection {
        props["enablePurgeProtection"] = json!(v);
    }
    if let Some(d) = s.retention_days {
        props["softDeleteRetentionInDays"] = json!(d);
    }
    if let Some(r) = s.enable_rbac_authorization {
        props["enableRbacAuthorization"] = json!(r);
    }
    if s.enable_soft_delete.is_some() {
        props["enableSoftDelete"] = json!(true);
    }
    add_optional_settings(&mut props, s);
    let mut body = json!({ "properties": props });
    if let Some(t) = tags {
        body["tags"] = parse_tags(t)?;
    }
    Ok(body)
}

/// The PUT body that recovers a soft-deleted vault (az's `recover_vault`).
fn recover_body(location: &str, tenant: &str) -> Value {
    json!({
        "location": location,
        "properties": {
            "tenantId": tenant,
            "sku": {"family": "A", "name": "standard"},
            "createMode": "recover",
        }
    })
}

/// The URL of a vault in a known group.
fn vault_url(session: &Session, sub: &SubscriptionArg, group: &str, name: &str) -> CliResult<Url> {
    let sub = session.subscription_id(sub.subscription.as_deref())?;
    session.arm_url(
        &format!(
            "subscriptions/{sub}/resourceGroups/{}/providers/{VAULT_TYPE}/{}",
            path_segment(group)?,
            path_segment(name)?
        ),
        API,
        &[],
    )
}

/// The URL of an existing vault, finding its group when `-g` is absent.
async fn existing_vault_url(session: &mut Session, args: &VaultArgs) -> CliResult<Url> {
    let group = match &args.resource_group {
        Some(g) => g.clone(),
        None => find_group(session, &args.sub, &args.name).await?,
    };
    vault_url(session, &args.sub, &group, &args.name)
}

/// az's `_get_resource_group_from_vault_name`, through the generic resource list.
async fn find_group(session: &mut Session, sub: &SubscriptionArg, name: &str) -> CliResult<String> {
    let sub_id = session.subscription_id(sub.subscription.as_deref())?;
    let filter = format!(
        "resourceType eq '{VAULT_TYPE}' and name eq {}",
        odata_quote(name)
    );
    let url = session.arm_url(
        &format!("subscriptions/{sub_id}/resources"),
        RESOURCES_API,
        &[("$filter", filter.as_str())],
    )?;
    let (items, _) = session.list(ServiceKind::Arm, url, false).await?;
    pick_group(&items, name)
        .ok_or_else(|| refused(format!("The Vault '{name}' not found within subscription.")))
}

/// The group of the vault called `name` among generic resources.
fn pick_group(resources: &[Value], name: &str) -> Option<String> {
    resources
        .iter()
        .filter(|r| {
            r["type"]
                .as_str()
                .is_some_and(|t| t.eq_ignore_ascii_case(VAULT_TYPE))
        })
        .filter(|r| {
            r["name"]
                .as_str()
                .is_some_and(|n| n.eq_ignore_ascii_case(name))
        })
        .find_map(|r| r["id"].as_str().and_then(shape::resource_group_of))
}

/// The signed-in principal's object id: the `oid` claim of its ARM token, else its service
/// principal in Microsoft Graph.
async fn caller_object_id(session: &mut Session) -> CliResult<String> {
    let arm = session.profile.cloud.arm_resource.clone();
    let token = session.token(&arm, false).await?;
    if let Some(oid) = token_object_id(token.access_token.expose()) {
        return Ok(oid);
    }
    let app = session.profile.client_id.clone();
    match ad::sp_by_name(session, &app).await? {
        Some(sp) => ad::object_id(&sp),
        None => Err(refused(
            "Cannot create vault.\nUnable to query active directory for information about the \
             current user.\nYou may try the --no-self-perms flag to create a vault without \
             permissions."
                .to_owned(),
        )),
    }
}

/// The `oid` claim of a JWT, read without checking the signature (the token is our own, from
/// the token endpoint; the claim only picks whom to grant, and the server checks the grant).
fn token_object_id(jwt: &str) -> Option<String> {
    let payload = jwt.split('.').nth(1)?;
    let bytes = URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).ok()?;
    let claims: Value = serde_json::from_slice(&bytes).ok()?;
    claims["oid"]
        .as_str()
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

/// `--object-id`, or the object id of the service principal named by `--spn`.
async fn principal_object_id(session: &mut Session, p: &PrincipalArgs) -> CliResult<String> {
    match (&p.object_id, &p.spn) {
        (Some(oid), _) => Ok(oid.clone()),
        (None, Some(spn)) => match ad::sp_by_name(session, spn).await? {
            Some(sp) => ad::object_id(&sp),
            None => Err(refused(
                "Unable to get object id from principal name.".to_owned(),
            )),
        },
        (None, None) => Err(CliError::Usage(
            "--object-id or --spn is required".to_owned(),
        )),
    }
}

/// The soft-deleted vaults of the subscription.
async fn list_deleted(session: &mut Session, sub: &SubscriptionArg) -> CliResult<Vec<Value>> {
    let sub_id = session.subscription_id(sub.subscription.as_deref())?;
    let url = session.arm_url(
        &format!("subscriptions/{sub_id}/providers/Microsoft.KeyVault/deletedVaults"),
        API,
        &[],
    )?;
    Ok(session.list(ServiceKind::Arm, url, false).await?.0)
}

/// The location of a deleted vault (`-l`, else from the list of deleted vaults) and, when the
/// list was read, the group it was deleted from.
async fn locate_deleted(
    session: &mut Session,
    args: &LocatedVaultArgs,
) -> CliResult<(String, Option<String>)> {
    if let Some(l) = &args.location
        && args.resource_group.is_some()
    {
        return Ok((l.clone(), None));
    }
    let deleted = list_deleted(session, &args.sub).await?;
    let found = find_deleted(&deleted, &args.name, args.location.as_deref()).ok_or_else(|| {
        refused(format!(
            "No deleted vault named '{}' was found in the subscription.",
            args.name
        ))
    })?;
    let location = args
        .location
        .clone()
        .or_else(|| found["properties"]["location"].as_str().map(str::to_owned))
        .ok_or_else(|| CliError::BadResponse {
            url: "deletedVaults".to_owned(),
            detail: format!("deleted vault '{}' has no location", args.name),
        })?;
    let group = found["properties"]["vaultId"]
        .as_str()
        .and_then(shape::resource_group_of);
    Ok((location, group))
}

/// The deleted vault called `name` (in `location`, when given).
fn find_deleted<'a>(deleted: &'a [Value], name: &str, location: Option<&str>) -> Option<&'a Value> {
    deleted.iter().find(|d| {
        d["name"]
            .as_str()
            .is_some_and(|n| n.eq_ignore_ascii_case(name))
            && location.is_none_or(|l| {
                d["properties"]["location"]
                    .as_str()
                    .is_some_and(|dl| dl.eq_ignore_ascii_case(l))
            })
    })
}

/// `.../locations/{l}/deletedVaults/{name}[/{action}]`.
fn deleted_vault_url(
    session: &Session,
    sub: &SubscriptionArg,
    location: &str,
    name: &str,
    action: &str,
) -> CliResult<Url> {
    let sub_id = session.subscription_id(sub.subscription.as_deref())?;
    session.arm_url(
        &format!(
            "subscriptions/{sub_id}/providers/Microsoft.KeyVault/locations/{}/deletedVaults/{}/{action}",
            path_segment(location)?,
            path_segment(name)?
        ),
        API,
        &[],
    )
}

/// Permissions given to `set-policy`; `None` keeps what the policy had.
#[derive(Debug, Clone, Default)]
struct PolicyPermissions {
    keys: Option<Vec<String>>,
    secrets: Option<Vec<String>>,
    certificates: Option<Vec<String>>,
    storage: Option<Vec<String>>,
}

/// GETs the vault, applies `change` to it, PUTs it back (az's `set_policy`/`delete_policy`)
/// and prints the result.
async fn edit_policies(
    session: &mut Session,
    args: &VaultArgs,
    change: impl FnOnce(&mut Value) -> CliResult<()>,
) -> CliResult<Outcome> {
    let url = existing_vault_url(session, args).await?;
    let mut vault = session
        .arm(Method::GET, url.clone(), None)
        .await?
        .ok_or_else(|| CliError::BadResponse {
            url: url.to_string(),
            detail: "empty answer".to_owned(),
        })?;
    change(&mut vault)?;
    let body = json!({
        "location": vault["location"],
        "tags": vault["tags"],
        "properties": vault["properties"],
    });
    let updated = session
        .arm_lro(LroMethod::Put, url, Some(&body), args.no_wait)
        .await?;
    Ok(Outcome {
        value: updated.map(shape::vault),
        table: None,
    })
}

fn refuse_rbac(vault: &Value, verb: &str) -> CliResult<()> {
    if vault["properties"]["enableRbacAuthorization"].as_bool() == Some(true) {
        return Err(refused(format!(
            "Cannot {verb} policies to a vault with '--enable-rbac-authorization' specified"
        )));
    }
    Ok(())
}

/// True when `policy` is the one of (`tenant`, `object_id`, `app`), compared like az.
fn same_principal(policy: &Value, tenant: &str, object_id: &str, app: Option<&str>) -> bool {
    let text = |k: &str| policy[k].as_str().unwrap_or_default().to_ascii_lowercase();
    text("objectId") == object_id.to_ascii_lowercase()
        && text("tenantId") == tenant.to_ascii_lowercase()
        && text("applicationId") == app.unwrap_or_default().to_ascii_lowercase()
}

/// Permissions without repeats, in the order given.
fn distinct(list: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for p in list {
        if !out.iter().any(|o| o.eq_ignore_ascii_case(p)) {
            out.push(p.clone());
        }
    }
    out
}

/// az's `set_policy` on a vault document: replaces the given permission lists of the
/// principal's policy, or adds a policy for it.
fn set_policy_in(
    vault: &mut Value,
    object_id: &str,
    app: Option<&str>,
    perms: &PolicyPermissions,
) -> CliResult<()> {
    refuse_rbac(vault, "set")?;
    let tenant = vault["properties"]["tenantId"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let props = &mut vault["properties"];
    if !props["accessPolicies"].is_array() {
        props["accessPolicies"] = json!([]);
    }
    let Some(policies) = props["accessPolicies"].as_array_mut() else {
        unreachable!("just made an array")
    };
    let lists = [
        ("keys", &perms.keys),
        ("secrets", &perms.secrets),
        ("certificates", &perms.certificates),
        ("storage", &perms.storage),
    ];
    match policies
        .iter_mut()
        .find(|p| same_principal(p, &tenant, object_id, app))
    {
        Some(policy) => {
            if !policy["permissions"].is_object() {
                policy["permissions"] = json!({});
            }
            for (k, list) in lists {
                if let Some(list) = list {
                    policy["permissions"][k] = json!(distinct(list));
                }
            }
        }
        None => {
            let mut permissions = Map::new();
            for (k, list) in lists {
                if let Some(list) = list {
                    permissions.insert(k.to_owned(), json!(distinct(list)));
                }
            }
            let mut policy = json!({
                "tenantId": tenant,
                "objectId": object_id,
                "permissions": permissions,
            });
            if let Some(a) = app {
                policy["applicationId"] = json!(a);
            }
            policies.push(policy);
        }
    }
    Ok(())
}

/// az's `delete_policy` on a vault document: removes the principal's policy.
fn delete_policy_in(vault: &mut Value, object_id: &str, app: Option<&str>) -> CliResult<()> {
    refuse_rbac(vault, "delete")?;
    let tenant = vault["properties"]["tenantId"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let policies = vault["properties"]["accessPolicies"].as_array_mut();
    let removed = policies.is_some_and(|list| {
        let before = list.len();
        list.retain(|p| !same_principal(p, &tenant, object_id, app));
        list.len() != before
    });
    if !removed {
        return Err(refused("No matching policies found".to_owned()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::tests::parse;
    use super::*;

    fn create_args(args: &[&str]) -> CreateArgs {
        let mut full = vec!["create", "-n", "kv1", "-g", "rg", "-l", "eastus"];
        full.extend_from_slice(args);
        match parse(&full).unwrap() {
            KeyvaultCommand::Create(a) => *a,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn create_body_defaults_like_the_brief() {
        let a = create_args(&[]);
        let policy = creator_policy("t1", "o1");
        let body = create_body(
            "eastus",
            None,
            "t1",
            a.sku.unwrap_or(Sku::Standard),
            &a.settings,
            vec![policy.clone()],
        );
        assert_eq!(
            body,
            json!({
                "location": "eastus",
                "properties": {
                    "tenantId": "t1",
                    "sku": {"family": "A", "name": "standard"},
                    "accessPolicies": [policy],
                    "enableRbacAuthorization": false,
                    "enableSoftDelete": true,
                    "softDeleteRetentionInDays": 90,
                    "networkAcls": {"bypass": "AzureServices", "defaultAction": "Allow"},
                }
            })
        );
        assert_eq!(policy["permissions"]["keys"], json!(["all"]));
        assert_eq!(policy["permissions"]["storage"], json!(["all"]));
    }

    #[test]
    fn create_body_with_every_setting() {
        let a = create_args(&[
            "--sku",
            "PREMIUM",
            "--enable-purge-protection",
            "--retention-days",
            "7",
            "--enable-rbac-authorization",
            "true",
            "--enabled-for-disk-encryption",
            "true",
            "--enable-soft-delete",
            "true",
            "--public-network-access",
            "disabled",
            "--tags",
            "env=test",
        ]);
        let tags = a.tags.as_deref().map(parse_tags).transpose().unwrap();
        let body = create_body("eastus", tags, "t1", a.sku.unwrap(), &a.settings, vec![]);
        let p = &body["properties"];
        assert_eq!(p["sku"]["name"], "premium");
        assert_eq!(p["enablePurgeProtection"], true);
        assert_eq!(p["softDeleteRetentionInDays"], 7);
        assert_eq!(p["enableRbacAuthorization"], true);
        assert_eq!(p["enabledForDiskEncryption"], true);
        assert_eq!(p["publicNetworkAccess"], "Disabled");
        assert_eq!(p["accessPolicies"], json!([]));
        assert_eq!(body["tags"], json!({"env": "test"}));
        assert!(p.get("enabledForDeployment").is_none());
    }

    #[test]
    fn purge_protection_false_is_omitted() {
        let a = create_args(&["--enable-purge-protection", "false"]);
        let body = create_body("l", None, "t", Sku::Standard, &a.settings, vec![]);
        assert!(body["properties"].get("enablePurgeProtection").is_none());
    }

    #[test]
    fn soft_delete_cannot_be_turned_off() {
        assert!(check_soft_delete(Some(true)).is_ok());
        assert!(check_soft_delete(None).is_ok());
        let err = check_soft_delete(Some(false)).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!(err.to_string().contains("soft delete is always on"));
        let s = VaultSettings {
            enable_soft_delete: Some(false),
            ..Default::default()
        };
        assert!(update_body(&s, None).is_err());
    }

    #[test]
    fn update_body_has_only_what_was_given() {
        let s = VaultSettings {
            enable_purge_protection: Some(true),
            retention_days: Some(30),
            ..Default::default()
        };
        assert_eq!(
            update_body(&s, None).unwrap(),
            json!({"properties":{"enablePurgeProtection":true,"softDeleteRetentionInDays":30}})
        );
        assert_eq!(
            update_body(&VaultSettings::default(), Some(&["".to_owned()])).unwrap(),
            json!({"properties":{},"tags":{}})
        );
    }

    #[test]
    fn recover_body_like_az() {
        assert_eq!(
            recover_body("eastus", "t1"),
            json!({"location":"eastus","properties":{"tenantId":"t1","sku":{"family":"A","name":"standard"},"createMode":"recover"}})
        );
    }

    #[test]
    fn groups_are_found_by_vault_name() {
        let resources = vec![
            json!({"id":"/subscriptions/s/resourceGroups/other/providers/Microsoft.Compute/disks/kv1","name":"kv1","type":"Microsoft.Compute/disks"}),
            json!({"id":"/subscriptions/s/resourceGroups/rg1/providers/Microsoft.KeyVault/vaults/KV1","name":"KV1","type":"Microsoft.KeyVault/vaults"}),
        ];
        assert_eq!(pick_group(&resources, "kv1").as_deref(), Some("rg1"));
        assert_eq!(pick_group(&resources, "kv2"), None);
    }

    #[test]
    fn deleted_vaults_are_found_by_name_and_location() {
        let deleted = vec![
            json!({"name":"kv1","properties":{"location":"westus","vaultId":"/subscriptions/s/resourceGroups/a/providers/Microsoft.KeyVault/vaults/kv1"}}),
            json!({"name":"kv1","properties":{"location":"eastus","vaultId":"/subscriptions/s/resourceGroups/b/providers/Microsoft.KeyVault/vaults/kv1"}}),
        ];
        assert_eq!(
            find_deleted(&deleted, "KV1", None).unwrap()["properties"]["location"],
            "westus"
        );
        assert_eq!(
            find_deleted(&deleted, "kv1", Some("EastUS")).unwrap()["properties"]["location"],
            "eastus"
        );
        assert!(find_deleted(&deleted, "kv2", None).is_none());
    }

    #[test]
    fn oid_claim_is_read_from_the_token() {
        let payload =
            URL_SAFE_NO_PAD.encode(br#"{"aud":"x","oid":"11111111-2222-3333-4444-555555555555"}"#);
        let jwt = format!("eyJhbGciOiJSUzI1NiJ9.{payload}.sig");
        assert_eq!(
            token_object_id(&jwt).as_deref(),
            Some("11111111-2222-3333-4444-555555555555")
        );
        let no_oid = format!("h.{}.s", URL_SAFE_NO_PAD.encode(br#"{"sub":"x"}"#));
        assert_eq!(token_object_id(&no_oid), None);
        assert_eq!(token_object_id("opaque"), None);
    }

    fn vault_doc() -> Value {
        json!({
            "location": "eastus",
            "tags": {"a": "b"},
            "properties": {
                "tenantId": "T1",
                "accessPolicies": [
                    {"tenantId": "t1", "objectId": "O1", "permissions": {"keys": ["all"], "secrets": ["get"]}}
                ]
            }
        })
    }

    #[test]
    fn set_policy_replaces_the_given_lists_only() {
        let mut v = vault_doc();
        let perms = PolicyPermissions {
            keys: Some(vec!["get".into(), "wrapKey".into(), "get".into()]),
            ..Default::default()
        };
        set_policy_in(&mut v, "o1", None, &perms).unwrap();
        assert_eq!(
            v["properties"]["accessPolicies"],
            json!([{"tenantId": "t1", "objectId": "O1", "permissions": {"keys": ["get", "wrapKey"], "secrets": ["get"]}}])
        );
    }

    #[test]
    fn set_policy_adds_a_policy_for_a_new_principal() {
        let mut v = vault_doc();
        let perms = PolicyPermissions {
            keys: Some(vec!["unwrapKey".into()]),
            ..Default::default()
        };
        set_policy_in(&mut v, "o2", Some("app"), &perms).unwrap();
        let list = v["properties"]["accessPolicies"].as_array().unwrap();
        assert_eq!(list.len(), 2);
        assert_eq!(
            list[1],
            json!({"tenantId": "T1", "objectId": "o2", "applicationId": "app", "permissions": {"keys": ["unwrapKey"]}})
        );
        // A vault without policies yet.
        let mut empty = json!({"properties": {"tenantId": "t"}});
        set_policy_in(&mut empty, "o", None, &perms).unwrap();
        assert_eq!(empty["properties"]["accessPolicies"][0]["objectId"], "o");
    }

    #[test]
    fn delete_policy_removes_or_says_none_matched() {
        let mut v = vault_doc();
        let err = delete_policy_in(&mut v, "o1", Some("app")).unwrap_err();
        assert_eq!(err.to_string(), "No matching policies found");
        delete_policy_in(&mut v, "o1", None).unwrap();
        assert_eq!(v["properties"]["accessPolicies"], json!([]));
    }

    #[test]
    fn rbac_vaults_have_no_policies_to_edit() {
        let mut v = vault_doc();
        v["properties"]["enableRbacAuthorization"] = json!(true);
        let err = set_policy_in(&mut v, "o1", None, &PolicyPermissions::default()).unwrap_err();
        assert!(err.to_string().contains("--enable-rbac-authorization"));
        assert!(delete_policy_in(&mut v, "o1", None).is_err());
    }
}
