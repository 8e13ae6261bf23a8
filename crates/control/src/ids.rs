//! Identifiers and ARM resource ids.

use std::fmt;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

macro_rules! uuid_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub Uuid);

        impl $name {
            pub fn new_random() -> Self {
                Self(Uuid::new_v4())
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl std::str::FromStr for $name {
            type Err = uuid::Error;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Uuid::parse_str(s).map(Self)
            }
        }
    };
}

uuid_id!(
    /// The directory (tenant) id.
    TenantId
);
uuid_id!(
    /// A subscription id.
    SubscriptionId
);
uuid_id!(
    /// A directory object id: a service principal's or managed identity's `oid`.
    ObjectId
);
uuid_id!(
    /// An application (client) id.
    AppId
);

/// Whether `scope` (an ARM id or `/`) contains `target`: equal, or a parent at a segment
/// boundary, compared case-insensitively as ARM does.
pub fn scope_contains(scope: &str, target: &str) -> bool {
    let scope = scope.trim_end_matches('/').to_ascii_lowercase();
    let target = target.trim_end_matches('/').to_ascii_lowercase();
    scope.is_empty()
        || target == scope
        || (target.starts_with(&scope) && target.as_bytes().get(scope.len()) == Some(&b'/'))
}

/// The parts of an ARM id `/subscriptions/S[/resourceGroups/G[/providers/NS/T/N[/T/N]...]]`
/// that ownership and cascading deletes need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArmId {
    pub subscription: String,
    pub resource_group: Option<String>,
}

impl ArmId {
    /// Parses the subscription and resource group of `id`, `None` if it is not under a
    /// subscription.
    pub fn parse(id: &str) -> Option<Self> {
        let mut segments = id.split('/').filter(|s| !s.is_empty());
        if !segments.next()?.eq_ignore_ascii_case("subscriptions") {
            return None;
        }
        let subscription = segments.next()?.to_string();
        let resource_group = match segments.next() {
            Some(s) if s.eq_ignore_ascii_case("resourceGroups") => {
                Some(segments.next()?.to_string())
            }
            _ => None,
        };
        Some(Self {
            subscription,
            resource_group,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_contain_children_at_segment_boundaries() {
        assert!(scope_contains(
            "/subscriptions/a",
            "/subscriptions/A/resourceGroups/x"
        ));
        assert!(scope_contains("/subscriptions/a/", "/subscriptions/a"));
        assert!(scope_contains("/", "/subscriptions/a"));
        assert!(!scope_contains(
            "/subscriptions/a/resourceGroups/x",
            "/subscriptions/a/resourceGroups/xy"
        ));
        assert!(!scope_contains(
            "/subscriptions/a/resourceGroups/x",
            "/subscriptions/a"
        ));
    }

    #[test]
    fn arm_ids_parse() {
        let id =
            ArmId::parse("/subscriptions/s/resourcegroups/g/providers/Microsoft.KeyVault/vaults/v")
                .unwrap();
        assert_eq!(id.subscription, "s");
        assert_eq!(id.resource_group.as_deref(), Some("g"));
        assert_eq!(
            ArmId::parse("/subscriptions/s").unwrap().resource_group,
            None
        );
        assert_eq!(ArmId::parse("/providers/x"), None);
    }
}
