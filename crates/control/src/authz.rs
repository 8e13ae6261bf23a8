//! Azure RBAC: built-in role definitions, role assignments and the one authorization decision
//! every resource provider asks for. The decision is a pure function of its inputs.

use std::sync::OnceLock;

use serde::{Deserialize, Serialize};

use crate::ids::{ObjectId, scope_contains};

/// One permission block of a role definition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RolePermission {
    pub actions: Vec<String>,
    pub not_actions: Vec<String>,
    pub data_actions: Vec<String>,
    pub not_data_actions: Vec<String>,
}

/// A role definition (built-in roles only for now).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RoleDefinition {
    /// The definition's GUID, as in Azure.
    pub name: String,
    pub role_name: String,
    pub description: String,
    pub permissions: Vec<RolePermission>,
}

/// The built-in role definitions, with Azure's GUIDs.
pub fn builtin_roles() -> &'static [RoleDefinition] {
    static ROLES: OnceLock<Vec<RoleDefinition>> = OnceLock::new();
    ROLES.get_or_init(|| {
        serde_json::from_str(include_str!("builtin_roles.json"))
            .expect("builtin_roles.json is valid (checked by a unit test)")
    })
}

/// What authorization needs of a role assignment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleAssignment {
    pub scope: String,
    pub principal_id: ObjectId,
    /// GUID of the role definition.
    pub role_definition: String,
}

/// Whether `action` matches `pattern` (`*` matches any run of characters), ignoring case.
fn matches(pattern: &str, action: &str) -> bool {
    let pattern = pattern.to_ascii_lowercase();
    let action = action.to_ascii_lowercase();
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or_default();
    let Some(mut rest) = action.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else {
        return rest.is_empty();
    };
    for part in middle {
        match rest.find(part) {
            Some(i) => rest = &rest[i + part.len()..],
            None => return false,
        }
    }
    rest.ends_with(last)
}

fn role_permits(role: &RoleDefinition, action: &str, data: bool) -> bool {
    role.permissions.iter().any(|p| {
        let (allow, deny) = if data {
            (&p.data_actions, &p.not_data_actions)
        } else {
            (&p.actions, &p.not_actions)
        };
        allow.iter().any(|a| matches(a, action)) && !deny.iter().any(|d| matches(d, action))
    })
}

/// Whether `principal` may perform `action` (a data action when `data`) on `scope`, given
/// every role assignment that exists: some assignment to the principal at `scope` or a parent
/// scope grants a role whose permissions allow the action.
pub fn permits(
    assignments: &[RoleAssignment],
    principal: ObjectId,
    action: &str,
    scope: &str,
    data: bool,
) -> bool {
    assignments
        .iter()
        .filter(|a| a.principal_id == principal && scope_contains(&a.scope, scope))
        .any(|a| {
            builtin_roles()
                .iter()
                .filter(|r| r.name.eq_ignore_ascii_case(&a.role_definition))
                .any(|r| role_permits(r, action, data))
        })
}

#[cfg(test)]
mod tests {
    use uuid::Uuid;

    use super::*;

    const OWNER: &str = "8e3af657-a8ff-443c-a75c-2fe8c4bcb635";
    const READER: &str = "acdd72a7-3385-48ef-bd42-f606fba81ae7";
    const CONTRIBUTOR: &str = "b24988ac-6180-42a0-ab88-20f7382dd24c";
    const KV_CSE_USER: &str = "e147488a-f6f5-4113-8e2d-b22465e65bf6";

    fn assignment(scope: &str, principal: ObjectId, role: &str) -> RoleAssignment {
        RoleAssignment {
            scope: scope.into(),
            principal_id: principal,
            role_definition: role.into(),
        }
    }

    #[test]
    fn builtin_roles_parse_with_unique_names() {
        let roles = builtin_roles();
        assert!(roles.len() >= 9);
        let mut names: Vec<_> = roles.iter().map(|r| r.name.as_str()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), roles.len());
    }

    #[test]
    fn wildcards() {
        assert!(matches(
            "*",
            "Microsoft.Resources/subscriptions/resourceGroups/write"
        ));
        assert!(matches(
            "*/read",
            "microsoft.resources/subscriptions/resourcegroups/READ"
        ));
        assert!(!matches(
            "*/read",
            "Microsoft.Resources/subscriptions/resourceGroups/write"
        ));
        assert!(matches(
            "Microsoft.Authorization/*/Write",
            "Microsoft.Authorization/roleAssignments/write"
        ));
        assert!(matches(
            "Microsoft.KeyVault/vaults/*/read",
            "Microsoft.KeyVault/vaults/keys/read"
        ));
        assert!(!matches(
            "Microsoft.KeyVault/vaults/*/read",
            "Microsoft.KeyVault/vaults/keys/wrap/action"
        ));
        assert!(matches("a*b*c", "a-b-b-c"));
        assert!(!matches("a*b*c", "a-c"));
    }

    #[test]
    fn scope_inheritance_and_roles() {
        let p = ObjectId(Uuid::new_v4());
        let other = ObjectId(Uuid::new_v4());
        let sub = "/subscriptions/s";
        let rg = "/subscriptions/s/resourceGroups/g";
        let all = vec![
            assignment(rg, p, READER),
            assignment(sub, other, CONTRIBUTOR),
        ];
        let write = "Microsoft.Resources/subscriptions/resourceGroups/write";
        let read = "Microsoft.Resources/subscriptions/resourceGroups/read";
        assert!(permits(&all, p, read, rg, false));
        assert!(permits(
            &all,
            p,
            read,
            &format!("{rg}/providers/Microsoft.KeyVault/vaults/v"),
            false
        ));
        assert!(!permits(&all, p, write, rg, false));
        assert!(!permits(
            &all,
            p,
            read,
            "/subscriptions/s/resourceGroups/g2",
            false
        ));
        assert!(!permits(&all, p, read, sub, false));
        assert!(permits(&all, other, write, rg, false));
        assert!(!permits(
            &all,
            other,
            "Microsoft.Authorization/roleAssignments/write",
            rg,
            false
        ));
        assert!(
            !permits(&all, other, "Microsoft.KeyVault/vaults/keys/read", rg, true),
            "actions grant no data actions"
        );
    }

    #[test]
    fn crypto_service_encryption_user_grants_wrap_unwrap_only() {
        let p = ObjectId(Uuid::new_v4());
        let vault = "/subscriptions/s/resourceGroups/g/providers/Microsoft.KeyVault/vaults/v";
        let all = vec![
            assignment(vault, p, KV_CSE_USER),
            assignment("/", ObjectId(Uuid::new_v4()), OWNER),
        ];
        for action in ["keys/read", "keys/wrap/action", "keys/unwrap/action"] {
            assert!(permits(
                &all,
                p,
                &format!("Microsoft.KeyVault/vaults/{action}"),
                vault,
                true
            ));
        }
        assert!(!permits(
            &all,
            p,
            "Microsoft.KeyVault/vaults/keys/decrypt/action",
            vault,
            true
        ));
        assert!(!permits(
            &all,
            p,
            "Microsoft.KeyVault/vaults/keys/wrap/action",
            "/subscriptions/s",
            true
        ));
    }
}
