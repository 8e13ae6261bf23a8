//! `role assignment create|list|delete` and `role definition list`, with az's look-ups: role
//! names to definition ids, assignees to object ids, and `principalName`/`roleDefinitionName`
//! filled into listed assignments.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use reqwest::Method;
use serde_json::{Map, Value, json};

use super::ad;
use super::group::path_segment;
use crate::cli::error::{CliError, CliResult, ServiceKind};
use crate::cli::output::Outcome;
use crate::cli::session::{Session, api_version, odata_quote};
use crate::cli::{Ctx, SubscriptionArg, YesArg};

const ASSIGNMENTS: &str = "providers/Microsoft.Authorization/roleAssignments";
const DEFINITIONS: &str = "providers/Microsoft.Authorization/roleDefinitions";

/// Keys az's RoleAssignment model always prints (null when unset).
const ASSIGNMENT_KEYS: [&str; 15] = [
    "condition",
    "conditionVersion",
    "createdBy",
    "createdOn",
    "delegatedManagedIdentityResourceId",
    "description",
    "id",
    "name",
    "principalId",
    "principalType",
    "roleDefinitionId",
    "scope",
    "type",
    "updatedBy",
    "updatedOn",
];

/// Keys az's RoleDefinition model always prints (null when unset).
const DEFINITION_KEYS: [&str; 12] = [
    "assignableScopes",
    "createdBy",
    "createdOn",
    "description",
    "id",
    "name",
    "permissions",
    "roleName",
    "roleType",
    "type",
    "updatedBy",
    "updatedOn",
];

/// How often `create-for-rbac` retries an assignment whose principal is not replicated yet.
const PRINCIPAL_RETRIES: u32 = 36;
const PRINCIPAL_RETRY_DELAY: Duration = Duration::from_secs(5);

/// `role` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum RoleCommand {
    /// Manage role assignments.
    #[command(subcommand)]
    Assignment(AssignmentCommand),
    /// Manage role definitions.
    #[command(subcommand)]
    Definition(DefinitionCommand),
}

/// Where a command applies: `--scope`, or `-g` within the subscription.
#[derive(Debug, Clone, clap::Args)]
pub struct ScopeArgs {
    /// Scope, e.g. /subscriptions/0b1f6471-1bf0-4dda-aec3-111122223333/resourceGroups/myGroup.
    #[arg(long)]
    scope: Option<String>,
    /// Use the resource group as scope.
    #[arg(short = 'g', long = "resource-group", conflicts_with = "scope")]
    resource_group: Option<String>,
    #[command(flatten)]
    sub: SubscriptionArg,
}

/// The kinds of principal ARM knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PrincipalType {
    /// A user.
    #[value(name = "User")]
    User,
    /// A group.
    #[value(name = "Group")]
    Group,
    /// A service principal.
    #[value(name = "ServicePrincipal")]
    ServicePrincipal,
    /// A group from another tenant.
    #[value(name = "ForeignGroup")]
    ForeignGroup,
    /// A device.
    #[value(name = "Device")]
    Device,
}

impl PrincipalType {
    fn as_str(self) -> &'static str {
        match self {
            PrincipalType::User => "User",
            PrincipalType::Group => "Group",
            PrincipalType::ServicePrincipal => "ServicePrincipal",
            PrincipalType::ForeignGroup => "ForeignGroup",
            PrincipalType::Device => "Device",
        }
    }
}

/// `role assignment` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum AssignmentCommand {
    /// Create a new role assignment for a user, group, or service principal.
    Create {
        /// Service principal name (appId) or object id of the assignee.
        #[arg(long, required_unless_present = "assignee_object_id")]
        assignee: Option<String>,
        /// The assignee's object id; skips the Graph look-up.
        #[arg(long, conflicts_with = "assignee")]
        assignee_object_id: Option<String>,
        /// The assignee's principal type.
        #[arg(long, ignore_case = true)]
        assignee_principal_type: Option<PrincipalType>,
        /// Role name or id.
        #[arg(long)]
        role: String,
        /// Description of the role assignment.
        #[arg(long)]
        description: Option<String>,
        #[command(flatten)]
        scope: ScopeArgs,
    },
    /// List role assignments (at the subscription unless --scope, -g or --all).
    List {
        /// Service principal name (appId) or object id.
        #[arg(long)]
        assignee: Option<String>,
        /// Role name or id.
        #[arg(long)]
        role: Option<String>,
        /// Show all assignments under the subscription, whatever their scope.
        #[arg(long, conflicts_with_all = ["scope", "resource_group"])]
        all: bool,
        /// Include assignments applied on parent scopes.
        #[arg(long)]
        include_inherited: bool,
        #[command(flatten)]
        scope: ScopeArgs,
    },
    /// Delete role assignments, by id or by assignee/role/scope.
    Delete {
        /// Space-separated role assignment ids.
        #[arg(long, num_args = 1.., conflicts_with_all = ["assignee", "role", "scope", "resource_group", "include_inherited"])]
        ids: Vec<String>,
        /// Service principal name (appId) or object id.
        #[arg(long)]
        assignee: Option<String>,
        /// Role name or id.
        #[arg(long)]
        role: Option<String>,
        /// Include assignments applied on parent scopes.
        #[arg(long)]
        include_inherited: bool,
        #[command(flatten)]
        yes: YesArg,
        #[command(flatten)]
        scope: ScopeArgs,
    },
}

/// `role definition` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum DefinitionCommand {
    /// List role definitions.
    List {
        /// Role name or id.
        #[arg(short = 'n', long = "name", visible_alias = "role-name")]
        name: Option<String>,
        /// Show only custom role definitions.
        #[arg(long)]
        custom_role_only: bool,
        #[command(flatten)]
        scope: ScopeArgs,
    },
}

/// Runs a `role` subcommand.
pub async fn run(ctx: &Ctx, cmd: RoleCommand) -> CliResult<Outcome> {
    let mut session = ctx.session()?;
    let outcome = match cmd {
        RoleCommand::Assignment(AssignmentCommand::Create {
            assignee,
            assignee_object_id,
            assignee_principal_type,
            role,
            description,
            scope,
        }) => {
            let Some(scope_path) = build_scope(&session, &scope, false)? else {
                return Err(CliError::Usage(
                    "--scope or --resource-group is required".to_owned(),
                ));
            };
            let (principal, mut ptype) = match (assignee_object_id, assignee) {
                (Some(oid), _) => (oid, None),
                (None, Some(a)) => ad::resolve_principal(&mut session, &a, false).await?,
                (None, None) => {
                    return Err(CliError::Usage(
                        "--assignee or --assignee-object-id is required".to_owned(),
                    ));
                }
            };
            if let Some(t) = assignee_principal_type {
                ptype = Some(t.as_str());
            }
            let created = create_assignment(
                &mut session,
                &role,
                &principal,
                ptype,
                &scope_path,
                description.as_deref(),
            )
            .await?;
            Outcome::value(created)
        }
        RoleCommand::Assignment(AssignmentCommand::List {
            assignee,
            role,
            all,
            include_inherited,
            scope,
        }) => {
            let scope_path = build_scope(&session, &scope, !all)?;
            let mut found = search_assignments(
                &mut session,
                scope_path.as_deref(),
                &scope.sub,
                assignee.as_deref(),
                role.as_deref(),
                include_inherited,
            )
            .await?;
            fill_names(&mut session, &scope.sub, scope_path.as_deref(), &mut found).await?;
            Outcome::with_table(Value::Array(found), assignment_list_table)
        }
        RoleCommand::Assignment(AssignmentCommand::Delete {
            ids,
            assignee,
            role,
            include_inherited,
            yes,
            scope,
        }) => {
            let ids = if !ids.is_empty() {
                ids
            } else {
                let nothing_given = assignee.is_none()
                    && role.is_none()
                    && scope.scope.is_none()
                    && scope.resource_group.is_none();
                if nothing_given
                    && !yes.yes
                    && !ctx.confirm(
                        "This will delete all role assignments under the subscription. Are you \
                         sure?",
                    )?
                {
                    return Ok(Outcome::nothing());
                }
                let scope_path = build_scope(&session, &scope, true)?;
                let found = search_assignments(
                    &mut session,
                    scope_path.as_deref(),
                    &scope.sub,
                    assignee.as_deref(),
                    role.as_deref(),
                    include_inherited,
                )
                .await?;
                if found.is_empty() {
                    ctx.warn("No matched assignments were found to delete");
                }
                found
                    .iter()
                    .filter_map(|a| a.get("id").and_then(Value::as_str).map(str::to_owned))
                    .collect()
            };
            for id in ids {
                let url = session.arm_url(&id, api_version::ROLE_ASSIGNMENTS, &[])?;
                session.arm(Method::DELETE, url, None).await?;
            }
            Outcome::nothing()
        }
        RoleCommand::Definition(DefinitionCommand::List {
            name,
            custom_role_only,
            scope,
        }) => {
            let scope_path = build_scope(&session, &scope, true)?.unwrap_or_default();
            let mut defs = list_definitions(&mut session, &scope_path, None).await?;
            if let Some(name) = &name {
                defs.retain(|d| d["name"] == name.as_str() || d["roleName"] == name.as_str());
            }
            if custom_role_only {
                defs.retain(|d| d["roleType"] == "CustomRole");
            }
            Outcome::with_table(Value::Array(defs), definition_list_table)
        }
    };
    session.save()?;
    Ok(outcome)
}

/// az's `_build_role_scope`: `--scope`, else the resource group, else (when `default_to_sub`)
/// the subscription.
fn build_scope(
    session: &Session,
    args: &ScopeArgs,
    default_to_sub: bool,
) -> CliResult<Option<String>> {
    if let Some(scope) = &args.scope {
        return Ok(Some(normalize_scope(scope)));
    }
    let sub = session.subscription_id(args.sub.subscription.as_deref())?;
    if let Some(rg) = &args.resource_group {
        return Ok(Some(format!(
            "/subscriptions/{sub}/resourceGroups/{}",
            path_segment(rg)?
        )));
    }
    Ok(default_to_sub.then(|| format!("/subscriptions/{sub}")))
}

/// A scope with one leading slash and no trailing one.
fn normalize_scope(scope: &str) -> String {
    format!("/{}", scope.trim_matches('/'))
}

/// The last path segment of an id (the GUID of a role definition id).
fn last_segment(id: &str) -> &str {
    id.trim_end_matches('/').rsplit('/').next().unwrap_or(id)
}

/// Moves `properties.*` to the top level like the Python SDK models az prints, naming
/// `properties.type` `roleType`, and adds the model's other keys as null.
fn flatten(resource: &Value, keys: &[&str]) -> Value {
    let mut out = Map::new();
    if let Some(top) = resource.as_object() {
        for (k, v) in top {
            if k != "properties" {
                out.insert(k.clone(), v.clone());
            }
        }
    }
    if let Some(props) = resource.get("properties").and_then(Value::as_object) {
        for (k, v) in props {
            let key = if k == "type" { "roleType" } else { k.as_str() };
            out.entry(key.to_owned()).or_insert_with(|| v.clone());
        }
    }
    super::with_model_keys(Value::Object(out), keys)
}

/// Role definitions at a scope, flattened; `role_name` filters on the server.
async fn list_definitions(
    session: &mut Session,
    scope: &str,
    role_name: Option<&str>,
) -> CliResult<Vec<Value>> {
    let filter = role_name.map(|n| format!("roleName eq {}", odata_quote(n)));
    let query: Vec<(&str, &str)> = filter.iter().map(|f| ("$filter", f.as_str())).collect();
    let url = session.arm_url(
        &format!("{scope}/{DEFINITIONS}"),
        api_version::ROLE_DEFINITIONS,
        &query,
    )?;
    let (items, _) = session.list(ServiceKind::Arm, url, false).await?;
    Ok(items.iter().map(|d| flatten(d, &DEFINITION_KEYS)).collect())
}

/// az's `_resolve_role_id`: a full definition id, a GUID, or a role name looked up at `scope`.
async fn resolve_role_id(session: &mut Session, role: &str, scope: &str) -> CliResult<String> {
    if role.starts_with('/') && role.to_ascii_lowercase().contains("/roledefinitions/") {
        return Ok(role.to_owned());
    }
    if ad::is_guid(role) {
        let sub = session.subscription_id(None)?;
        return Ok(format!("/subscriptions/{sub}/{DEFINITIONS}/{role}"));
    }
    let defs = list_definitions(session, scope, Some(role)).await?;
    let ids: Vec<String> = defs
        .iter()
        .filter(|d| {
            d["roleName"]
                .as_str()
                .is_none_or(|n| n.eq_ignore_ascii_case(role))
        })
        .filter_map(|d| d["id"].as_str().map(str::to_owned))
        .collect();
    match ids.as_slice() {
        [] => Err(CliError::RoleNotFound(role.to_owned())),
        [one] => Ok(one.clone()),
        _ => Err(CliError::RoleAmbiguous {
            role: role.to_owned(),
            ids,
        }),
    }
}

/// PUTs a new role assignment and returns it as az prints it.
async fn create_assignment(
    session: &mut Session,
    role: &str,
    principal_id: &str,
    principal_type: Option<&str>,
    scope: &str,
    description: Option<&str>,
) -> CliResult<Value> {
    let scope = normalize_scope(scope);
    let role_id = resolve_role_id(session, role, &scope).await?;
    let mut props = json!({
        "roleDefinitionId": role_id,
        "principalId": principal_id,
    });
    if let Some(t) = principal_type {
        props["principalType"] = json!(t);
    }
    if let Some(d) = description {
        props["description"] = json!(d);
    }
    let name = uuid::Uuid::new_v4();
    let url = session.arm_url(
        &format!("{scope}/{ASSIGNMENTS}/{name}"),
        api_version::ROLE_ASSIGNMENTS,
        &[],
    )?;
    let created = session
        .arm(Method::PUT, url, Some(&json!({ "properties": props })))
        .await?
        .unwrap_or(Value::Null);
    Ok(flatten(&created, &ASSIGNMENT_KEYS))
}

/// [`create_assignment`] for a principal just created: retries while ARM does not know it yet
/// (az does the same in `create-for-rbac`).
pub async fn create_assignment_with_retry(
    session: &mut Session,
    role: &str,
    principal_id: &str,
    principal_type: Option<&str>,
    scope: &str,
) -> CliResult<Value> {
    let mut attempt = 0;
    loop {
        match create_assignment(session, role, principal_id, principal_type, scope, None).await {
            Err(CliError::Service(e))
                if attempt < PRINCIPAL_RETRIES
                    && (e.code.as_deref() == Some("PrincipalNotFound")
                        || e.message.contains(" does not exist ")
                        || e.message.contains(" does not reference ")) =>
            {
                attempt += 1;
                tokio::time::sleep(PRINCIPAL_RETRY_DELAY).await;
            }
            other => return other,
        }
    }
}

/// az's `_search_role_assignments`.
async fn search_assignments(
    session: &mut Session,
    scope: Option<&str>,
    sub: &SubscriptionArg,
    assignee: Option<&str>,
    role: Option<&str>,
    include_inherited: bool,
) -> CliResult<Vec<Value>> {
    let principal = match assignee {
        Some(a) => Some(ad::resolve_principal(session, a, true).await?.0),
        None => None,
    };
    let sub_id = session.subscription_id(sub.subscription.as_deref())?;
    let (path, filter) = match (scope, &principal) {
        (Some(scope), _) => (scope.to_owned(), Some("atScope()".to_owned())),
        (None, Some(p)) => (
            format!("/subscriptions/{sub_id}"),
            Some(format!("principalId eq {}", odata_quote(p))),
        ),
        (None, None) => (format!("/subscriptions/{sub_id}"), None),
    };
    let query: Vec<(&str, &str)> = filter.iter().map(|f| ("$filter", f.as_str())).collect();
    let url = session.arm_url(
        &format!("{path}/{ASSIGNMENTS}"),
        api_version::ROLE_ASSIGNMENTS,
        &query,
    )?;
    let (items, _) = session.list(ServiceKind::Arm, url, false).await?;
    let mut found: Vec<Value> = items.iter().map(|a| flatten(a, &ASSIGNMENT_KEYS)).collect();
    if let Some(scope) = scope {
        found.retain(|a| {
            let a_scope = a["scope"].as_str().unwrap_or_default();
            scope_matches(a_scope, scope, include_inherited)
        });
    }
    if let Some(role) = role {
        let default_scope = format!("/subscriptions/{sub_id}");
        let role_id = resolve_role_id(session, role, scope.unwrap_or(&default_scope)).await?;
        let want = last_segment(&role_id).to_ascii_lowercase();
        found.retain(|a| {
            a["roleDefinitionId"]
                .as_str()
                .is_some_and(|id| last_segment(id).eq_ignore_ascii_case(&want))
        });
    }
    if let Some(p) = &principal {
        found.retain(|a| a["principalId"].as_str() == Some(p.as_str()));
    }
    Ok(found)
}

/// An assignment at `assignment_scope` applies at `scope` exactly, or (with `inherited`) from a
/// parent of it.
fn scope_matches(assignment_scope: &str, scope: &str, inherited: bool) -> bool {
    let a = assignment_scope.trim_end_matches('/').to_ascii_lowercase();
    let s = scope.trim_end_matches('/').to_ascii_lowercase();
    a == s || (inherited && (a.is_empty() || s.starts_with(&format!("{a}/"))))
}

/// Adds `principalName` and `roleDefinitionName` to listed assignments, like az.
async fn fill_names(
    session: &mut Session,
    sub: &SubscriptionArg,
    scope: Option<&str>,
    assignments: &mut [Value],
) -> CliResult<()> {
    if assignments.is_empty() {
        return Ok(());
    }
    let sub_id = session.subscription_id(sub.subscription.as_deref())?;
    let def_scope = scope.map_or_else(|| format!("/subscriptions/{sub_id}"), str::to_owned);
    let role_names: BTreeMap<String, String> = list_definitions(session, &def_scope, None)
        .await?
        .iter()
        .filter_map(|d| {
            let id = d["id"].as_str()?;
            let name = d["roleName"].as_str()?;
            Some((last_segment(id).to_ascii_lowercase(), name.to_owned()))
        })
        .collect();
    let ids: BTreeSet<String> = assignments
        .iter()
        .filter_map(|a| a["principalId"].as_str().map(str::to_owned))
        .collect();
    let ids: Vec<String> = ids.into_iter().collect();
    // A Graph failure must not fail the listing (az logs it and goes on).
    let principals: BTreeMap<String, String> = match ad::get_by_ids(session, &ids).await {
        Ok(objs) => objs
            .iter()
            .filter_map(|o| Some((ad::object_id(o).ok()?, ad::displayable_name(o))))
            .collect(),
        Err(_) => BTreeMap::new(),
    };
    for a in assignments.iter_mut() {
        let pname = a["principalId"]
            .as_str()
            .and_then(|p| principals.get(p))
            .cloned()
            .unwrap_or_default();
        let rname = a["roleDefinitionId"]
            .as_str()
            .and_then(|id| role_names.get(&last_segment(id).to_ascii_lowercase()))
            .cloned();
        if let Some(obj) = a.as_object_mut() {
            obj.insert("principalName".into(), Value::String(pname));
            if let Some(r) = rname {
                obj.insert("roleDefinitionName".into(), Value::String(r));
            }
        }
    }
    Ok(())
}

/// az's `transform_assignment_list`.
fn assignment_list_table(result: &Value) -> Value {
    let rows = result.as_array().map(Vec::as_slice).unwrap_or_default();
    Value::Array(
        rows.iter()
            .map(|r| {
                json!({
                    "Principal": r["principalName"],
                    "Role": r["roleDefinitionName"],
                    "Scope": r["scope"],
                })
            })
            .collect(),
    )
}

/// az's `transform_definition_list`.
fn definition_list_table(result: &Value) -> Value {
    let rows = result.as_array().map(Vec::as_slice).unwrap_or_default();
    Value::Array(
        rows.iter()
            .map(|r| {
                json!({
                    "Name": r["roleName"],
                    "Type": r["type"],
                    "Description": r["description"],
                })
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flatten_like_the_sdk_models() {
        let def = json!({
            "id": "/subscriptions/s/providers/Microsoft.Authorization/roleDefinitions/g",
            "name": "g",
            "type": "Microsoft.Authorization/roleDefinitions",
            "properties": {"roleName": "Owner", "type": "BuiltInRole", "permissions": []}
        });
        let f = flatten(&def, &DEFINITION_KEYS);
        assert_eq!(f["roleName"], "Owner");
        assert_eq!(f["roleType"], "BuiltInRole");
        assert_eq!(f["type"], "Microsoft.Authorization/roleDefinitions");
        assert_eq!(f["createdOn"], Value::Null);
        assert!(f.get("properties").is_none());
        assert_eq!(f.as_object().unwrap().len(), DEFINITION_KEYS.len());

        let asg =
            json!({"id":"x","name":"n","type":"t","properties":{"scope":"/s","principalId":"p"}});
        let f = flatten(&asg, &ASSIGNMENT_KEYS);
        assert_eq!(f["scope"], "/s");
        assert_eq!(f["condition"], Value::Null);
    }

    #[test]
    fn scope_matching() {
        assert!(scope_matches("/subscriptions/S", "/subscriptions/s", false));
        assert!(!scope_matches(
            "/subscriptions/s",
            "/subscriptions/s/resourceGroups/rg",
            false
        ));
        assert!(scope_matches(
            "/subscriptions/s",
            "/subscriptions/s/resourceGroups/rg",
            true
        ));
        assert!(!scope_matches(
            "/subscriptions/s/resourceGroups/rg2",
            "/subscriptions/s/resourceGroups/rg",
            true
        ));
        assert!(!scope_matches(
            "/subscriptions/s/resourceGroups/r",
            "/subscriptions/s/resourceGroups/rg",
            true
        ));
    }

    #[test]
    fn scopes_and_ids() {
        assert_eq!(normalize_scope("subscriptions/s/"), "/subscriptions/s");
        assert_eq!(last_segment("/a/roleDefinitions/GUID"), "GUID");
    }

    #[test]
    fn assignment_table_columns() {
        let rows = assignment_list_table(
            &json!([{"principalName":"app","roleDefinitionName":"Owner","scope":"/s"}]),
        );
        assert_eq!(
            rows,
            json!([{"Principal":"app","Role":"Owner","Scope":"/s"}])
        );
    }
}
