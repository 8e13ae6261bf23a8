//! `ad sp create-for-rbac|list|show|delete`, and the Microsoft Graph look-ups `role` shares.

use reqwest::Method;
use serde_json::{Value, json};
use time::macros::format_description;

use super::role;
use crate::cli::Ctx;
use crate::cli::error::{CliError, CliResult, ServiceKind};
use crate::cli::output::Outcome;
use crate::cli::session::{Session, odata_quote};

/// What az prints after creating credentials.
const CREDENTIAL_WARNING: &str = "The output includes credentials that you must protect. Be sure \
    that you do not include these credentials in your code or check the credentials into your \
    source control.";

/// `ad` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum AdCommand {
    /// Manage service principals.
    #[command(subcommand)]
    Sp(SpCommand),
}

/// `ad sp` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum SpCommand {
    /// Create an application with a service principal and a secret, optionally with role
    /// assignments.
    CreateForRbac {
        /// Display name of the application; default `sealdisk-<date>-<time>`.
        #[arg(short = 'n', long = "name", visible_alias = "display-name")]
        name: Option<String>,
        /// Role of the service principal (needs --scopes).
        #[arg(long, requires = "scopes")]
        role: Option<String>,
        /// Space-separated scopes the role assignment applies to (needs --role).
        #[arg(long, num_args = 1.., requires = "role")]
        scopes: Vec<String>,
    },
    /// List service principals.
    List {
        /// Object's display name or its prefix.
        #[arg(long)]
        display_name: Option<String>,
        /// Service principal name (appId or other registered name).
        #[arg(long)]
        spn: Option<String>,
        /// OData filter, e.g. --filter "displayname eq 'test'".
        #[arg(long)]
        filter: Option<String>,
        /// List all entities; expect long delays on a large directory.
        #[arg(long)]
        all: bool,
    },
    /// Get the details of a service principal.
    Show {
        /// Service principal name (appId) or object id.
        #[arg(long)]
        id: String,
    },
    /// Delete a service principal.
    Delete {
        /// Service principal name (appId) or object id.
        #[arg(long)]
        id: String,
    },
}

/// Runs an `ad` subcommand.
pub async fn run(ctx: &Ctx, cmd: AdCommand) -> CliResult<Outcome> {
    let mut session = ctx.session()?;
    let AdCommand::Sp(cmd) = cmd;
    let outcome = match cmd {
        SpCommand::CreateForRbac { name, role, scopes } => {
            create_for_rbac(ctx, &mut session, name, role, scopes).await?
        }
        SpCommand::List {
            display_name,
            spn,
            filter,
            all,
        } => {
            let mut filters = Vec::new();
            if let Some(f) = filter {
                filters.push(f);
            }
            if let Some(d) = display_name {
                // What az sends: a prefix match, not equality.
                filters.push(format!("startswith(displayName,{})", odata_quote(&d)));
            }
            if let Some(s) = spn {
                filters.push(spn_filter(&s));
            }
            let first_page_only = filters.is_empty() && !all;
            let query: Vec<(&str, String)> = if filters.is_empty() {
                Vec::new()
            } else {
                vec![("$filter", filters.join(" and "))]
            };
            let query: Vec<(&str, &str)> = query.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let url = session.graph_url("servicePrincipals", &query)?;
            let (items, more) = session
                .list(ServiceKind::Graph, url, first_page_only)
                .await?;
            if more {
                ctx.warn(
                    "The result is not complete. You can still use '--all' to get all of them \
                     with long latency expected, or provide a filter through command arguments",
                );
            }
            Outcome::value(Value::Array(items))
        }
        SpCommand::Show { id } => Outcome::value(show_sp(&mut session, &id).await?),
        SpCommand::Delete { id } => {
            let sp = show_sp(&mut session, &id).await?;
            let oid = object_id(&sp)?;
            let url = session.graph_url(&format!("servicePrincipals/{oid}"), &[])?;
            session.graph(Method::DELETE, url, None).await?;
            Outcome::nothing()
        }
    };
    session.save()?;
    Ok(outcome)
}

async fn create_for_rbac(
    ctx: &Ctx,
    session: &mut Session,
    name: Option<String>,
    role: Option<String>,
    scopes: Vec<String>,
) -> CliResult<Outcome> {
    if role.is_some() == scopes.is_empty() {
        return Err(CliError::Usage(
            "To create role assignments, specify both --role and --scopes.".to_owned(),
        ));
    }
    let display_name = match name {
        Some(n) => n,
        None => default_display_name()?,
    };
    let app = session
        .graph(
            Method::POST,
            session.graph_url("applications", &[])?,
            Some(&json!({ "displayName": display_name })),
        )
        .await?
        .unwrap_or(Value::Null);
    let app_object_id = object_id(&app)?;
    let app_id = text_field(&app, "appId", "applications")?;
    let password = session
        .graph(
            Method::POST,
            session.graph_url(&format!("applications/{app_object_id}/addPassword"), &[])?,
            Some(&json!({ "passwordCredential": { "displayName": "rbac" } })),
        )
        .await?
        .unwrap_or(Value::Null);
    let secret = text_field(&password, "secretText", "addPassword")?;
    let sp = session
        .graph(
            Method::POST,
            session.graph_url("servicePrincipals", &[])?,
            Some(&json!({ "appId": app_id })),
        )
        .await?
        .unwrap_or(Value::Null);
    let sp_object_id = object_id(&sp)?;
    if let Some(role) = role {
        for scope in &scopes {
            ctx.warn(&format!(
                "Creating '{role}' role assignment under scope '{scope}'"
            ));
            role::create_assignment_with_retry(
                session,
                &role,
                &sp_object_id,
                Some("ServicePrincipal"),
                scope,
            )
            .await?;
        }
    }
    ctx.warn(CREDENTIAL_WARNING);
    Ok(Outcome::value(json!({
        "appId": app_id,
        "displayName": display_name,
        "password": secret,
        "tenant": session.profile.tenant_id,
    })))
}

fn default_display_name() -> CliResult<String> {
    let format = format_description!("[year]-[month]-[day]-[hour]-[minute]-[second]");
    let now = time::OffsetDateTime::now_utc()
        .format(&format)
        .map_err(|e| CliError::Output(e.to_string()))?;
    Ok(format!("sealdisk-{now}"))
}

fn text_field(obj: &Value, key: &str, what: &str) -> CliResult<String> {
    obj.get(key)
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| CliError::BadResponse {
            url: what.to_owned(),
            detail: format!("the answer has no '{key}'"),
        })
}

/// The `id` of a directory object.
pub fn object_id(obj: &Value) -> CliResult<String> {
    text_field(obj, "id", "directory object")
}

fn spn_filter(name: &str) -> String {
    format!("servicePrincipalNames/any(c:c eq {})", odata_quote(name))
}

/// Finds a service principal by one of its names (appId is one).
pub async fn sp_by_name(session: &mut Session, name: &str) -> CliResult<Option<Value>> {
    let filter = spn_filter(name);
    let url = session.graph_url("servicePrincipals", &[("$filter", filter.as_str())])?;
    let (items, _) = session.list(ServiceKind::Graph, url, true).await?;
    Ok(items.into_iter().next())
}

/// az's `_resolve_service_principal` + GET: by name first, then as an object id.
async fn show_sp(session: &mut Session, id: &str) -> CliResult<Value> {
    if let Some(sp) = sp_by_name(session, id).await? {
        return Ok(sp);
    }
    if !is_guid(id) {
        return Err(CliError::ServicePrincipalNotFound(id.to_owned()));
    }
    let url = session.graph_url(&format!("servicePrincipals/{id}"), &[])?;
    session
        .graph(Method::GET, url, None)
        .await?
        .ok_or_else(|| CliError::ServicePrincipalNotFound(id.to_owned()))
}

/// `POST directoryObjects/getByIds`.
pub async fn get_by_ids(session: &mut Session, ids: &[String]) -> CliResult<Vec<Value>> {
    let mut found = Vec::new();
    // Graph takes at most 1000 ids per call.
    for chunk in ids.chunks(1000) {
        let body = json!({
            "ids": chunk,
            "types": ["user", "group", "servicePrincipal", "directoryObjectPartnerReference"],
        });
        let url = session.graph_url("directoryObjects/getByIds", &[])?;
        let answer = session.graph(Method::POST, url, Some(&body)).await?;
        if let Some(values) = answer
            .as_ref()
            .and_then(|a| a.get("value"))
            .and_then(Value::as_array)
        {
            found.extend(values.iter().cloned());
        }
    }
    Ok(found)
}

/// The ARM `principalType` of a Graph object, from its `@odata.type`.
pub fn principal_type(obj: &Value) -> Option<&'static str> {
    let t = obj.get("@odata.type").and_then(Value::as_str)?;
    match t.trim_start_matches("#microsoft.graph.") {
        "servicePrincipal" => Some("ServicePrincipal"),
        "user" => Some("User"),
        "group" => Some("Group"),
        "device" => Some("Device"),
        _ => None,
    }
}

/// az's `_get_displayable_name`: UPN, else first service principal name, else display name.
pub fn displayable_name(obj: &Value) -> String {
    let text = |k: &str| obj.get(k).and_then(Value::as_str).filter(|s| !s.is_empty());
    text("userPrincipalName")
        .or_else(|| {
            obj.get("servicePrincipalNames")
                .and_then(|n| n.get(0))
                .and_then(Value::as_str)
        })
        .or_else(|| text("displayName"))
        .unwrap_or_default()
        .to_owned()
}

/// az's `_resolve_object_id`: an assignee (service principal name, appId or object id) to its
/// object id and principal type. With `fallback_to_guid`, a GUID that Graph does not know is
/// taken as an object id as is.
pub async fn resolve_principal(
    session: &mut Session,
    assignee: &str,
    fallback_to_guid: bool,
) -> CliResult<(String, Option<&'static str>)> {
    if let Some(sp) = sp_by_name(session, assignee).await? {
        return Ok((object_id(&sp)?, Some("ServicePrincipal")));
    }
    let stubs = get_by_ids(session, &[assignee.to_owned()]).await;
    match stubs {
        Ok(objs) if !objs.is_empty() => Ok((object_id(&objs[0])?, principal_type(&objs[0]))),
        _ if fallback_to_guid && is_guid(assignee) => Ok((assignee.to_owned(), None)),
        Ok(_) => Err(CliError::PrincipalNotFound(assignee.to_owned())),
        Err(e) => Err(e),
    }
}

/// True for a GUID in its usual 8-4-4-4-12 form (braces tolerated).
pub fn is_guid(text: &str) -> bool {
    uuid::Uuid::parse_str(text.trim_matches(|c| c == '{' || c == '}')).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn principal_types() {
        assert_eq!(
            principal_type(&json!({"@odata.type":"#microsoft.graph.servicePrincipal"})),
            Some("ServicePrincipal")
        );
        assert_eq!(
            principal_type(&json!({"@odata.type":"#microsoft.graph.user"})),
            Some("User")
        );
        assert_eq!(principal_type(&json!({})), None);
    }

    #[test]
    fn displayable_names_like_az() {
        assert_eq!(
            displayable_name(&json!({"userPrincipalName":"a@b","displayName":"A"})),
            "a@b"
        );
        assert_eq!(
            displayable_name(&json!({"servicePrincipalNames":["app-id"],"displayName":"A"})),
            "app-id"
        );
        assert_eq!(
            displayable_name(&json!({"servicePrincipalNames":[],"displayName":"A"})),
            "A"
        );
        assert_eq!(displayable_name(&json!({})), "");
    }

    #[test]
    fn guids() {
        assert!(is_guid("00000000-0000-0000-0000-000000000001"));
        assert!(!is_guid("my-app"));
    }

    #[test]
    fn spn_filter_quotes() {
        assert_eq!(
            spn_filter("it's"),
            "servicePrincipalNames/any(c:c eq 'it''s')"
        );
    }

    #[test]
    fn default_name_has_prefix() {
        assert!(default_display_name().unwrap().starts_with("sealdisk-"));
    }
}
