//! The deployment: one tenant, its default subscription, the locations, the bootstrap service
//! principal, and the [`ControlPlane`] handle every request goes through.

use std::sync::Arc;

use serde_json::{Value, json};
use uuid::Uuid;
use zeroize::Zeroizing;

use crate::ids::{AppId, ObjectId, SubscriptionId, TenantId};
use crate::store::{ApplicationRecord, CredentialRecord, PrincipalKind, PrincipalRecord, Store};
use crate::{ControlError, RoleAssignment, authz};

/// A location (region) the deployment offers.
#[derive(Debug, Clone, Copy)]
pub struct Location {
    pub name: &'static str,
    pub display_name: &'static str,
}

/// The locations every deployment offers.
pub const LOCATIONS: &[Location] = &[
    Location {
        name: "eastus",
        display_name: "East US",
    },
    Location {
        name: "eastus2",
        display_name: "East US 2",
    },
    Location {
        name: "westus",
        display_name: "West US",
    },
    Location {
        name: "westus2",
        display_name: "West US 2",
    },
    Location {
        name: "westus3",
        display_name: "West US 3",
    },
    Location {
        name: "centralus",
        display_name: "Central US",
    },
    Location {
        name: "westcentralus",
        display_name: "West Central US",
    },
    Location {
        name: "southcentralus",
        display_name: "South Central US",
    },
    Location {
        name: "northcentralus",
        display_name: "North Central US",
    },
    Location {
        name: "canadacentral",
        display_name: "Canada Central",
    },
    Location {
        name: "northeurope",
        display_name: "North Europe",
    },
    Location {
        name: "westeurope",
        display_name: "West Europe",
    },
    Location {
        name: "uksouth",
        display_name: "UK South",
    },
    Location {
        name: "francecentral",
        display_name: "France Central",
    },
    Location {
        name: "germanywestcentral",
        display_name: "Germany West Central",
    },
    Location {
        name: "swedencentral",
        display_name: "Sweden Central",
    },
    Location {
        name: "switzerlandnorth",
        display_name: "Switzerland North",
    },
    Location {
        name: "eastasia",
        display_name: "East Asia",
    },
    Location {
        name: "southeastasia",
        display_name: "Southeast Asia",
    },
    Location {
        name: "japaneast",
        display_name: "Japan East",
    },
    Location {
        name: "australiaeast",
        display_name: "Australia East",
    },
    Location {
        name: "centralindia",
        display_name: "Central India",
    },
    Location {
        name: "brazilsouth",
        display_name: "Brazil South",
    },
];

const OWNER_ROLE: &str = "8e3af657-a8ff-443c-a75c-2fe8c4bcb635";
/// Client secrets last two years, as `az ad sp create-for-rbac`'s default... of one year;
/// the bootstrap secret is rotated by rewriting the connection file, so one year is enough.
const SECRET_LIFETIME_SECS: i64 = 365 * 24 * 3600;

/// The bootstrap principal's credentials, for the connection file.
#[derive(Debug)]
pub struct Bootstrap {
    pub client_id: AppId,
    pub client_secret: Zeroizing<String>,
}

/// The time source, in unix seconds; injectable so that retention periods can be tested.
#[derive(Clone)]
pub struct Clock(Arc<dyn Fn() -> i64 + Send + Sync>);

impl Clock {
    pub fn system() -> Self {
        Self(Arc::new(now))
    }

    pub fn new(f: impl Fn() -> i64 + Send + Sync + 'static) -> Self {
        Self(Arc::new(f))
    }

    pub fn now(&self) -> i64 {
        (self.0)()
    }
}

impl std::fmt::Debug for Clock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Clock")
    }
}

/// The control plane of one deployment.
#[derive(Debug, Clone)]
pub struct ControlPlane {
    pub(crate) store: Arc<dyn Store>,
    tenant: TenantId,
    subscription: SubscriptionId,
    bootstrap_app: AppId,
    pub(crate) clock: Clock,
    /// The platform root key: seals private keys at rest.
    pub(crate) root: Arc<crypto::RootKey>,
    /// Private keys loaded for cryptographic operations.
    pub(crate) key_cache: Arc<crate::keys::KeyCache>,
    /// Volumes, the NBD endpoint and live disk access grants; `None` until attached.
    pub(crate) data: Option<Arc<crate::disks::DataPlane>>,
}

pub(crate) fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

pub(crate) fn rfc3339(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

fn setting<T: std::str::FromStr>(store: &dyn Store, key: &str) -> Result<Option<T>, ControlError> {
    Ok(store.setting(key)?.and_then(|v| v.parse().ok()))
}

impl ControlPlane {
    /// Opens the deployment in `store`, creating the tenant, default subscription, bootstrap
    /// principal (Owner of the subscription) and its first secret on first start.
    ///
    /// `known_secret` is the bootstrap secret from the previous connection file: it is kept if
    /// it still verifies, otherwise a new secret is added (the plain secret is never stored).
    pub fn open(
        store: Arc<dyn Store>,
        root: Arc<crypto::RootKey>,
        known_secret: Option<&str>,
    ) -> Result<(Self, Bootstrap), ControlError> {
        let existing = (
            setting::<TenantId>(&*store, "tenant_id")?,
            setting::<SubscriptionId>(&*store, "subscription_id")?,
            setting::<AppId>(&*store, "bootstrap_app_id")?,
        );
        let plane = match existing {
            (Some(tenant), Some(subscription), Some(bootstrap_app)) => Self {
                store,
                tenant,
                subscription,
                bootstrap_app,
                clock: Clock::system(),
                root,
                key_cache: Arc::default(),
                data: None,
            },
            _ => Self::initialize(store, root)?,
        };
        let secret = plane.bootstrap_secret(known_secret)?;
        Ok((
            plane.clone(),
            Bootstrap {
                client_id: plane.bootstrap_app,
                client_secret: secret,
            },
        ))
    }

    fn initialize(store: Arc<dyn Store>, root: Arc<crypto::RootKey>) -> Result<Self, ControlError> {
        let plane = Self {
            store,
            tenant: TenantId::new_random(),
            subscription: SubscriptionId::new_random(),
            bootstrap_app: AppId::new_random(),
            clock: Clock::system(),
            root,
            key_cache: Arc::default(),
            data: None,
        };
        let (_, principal) =
            plane.create_application("sealdisk-bootstrap", Some(plane.bootstrap_app))?;
        plane.create_role_assignment_record(
            &plane.subscription_scope(),
            &Uuid::new_v4().to_string(),
            OWNER_ROLE,
            &principal,
        )?;
        // Written last: a start that crashed before this point starts over.
        plane
            .store
            .set_setting("subscription_id", &plane.subscription.to_string())?;
        plane
            .store
            .set_setting("bootstrap_app_id", &plane.bootstrap_app.to_string())?;
        plane
            .store
            .set_setting("tenant_id", &plane.tenant.to_string())?;
        Ok(plane)
    }

    fn bootstrap_secret(&self, known: Option<&str>) -> Result<Zeroizing<String>, ControlError> {
        let app = self
            .store
            .application_by_app_id(self.bootstrap_app)?
            .ok_or_else(|| ControlError::DirectoryObjectNotFound(self.bootstrap_app.to_string()))?;
        if let Some(known) = known
            && self.verify_secret(&app, known)?
        {
            return Ok(Zeroizing::new(known.to_string()));
        }
        let (secret, _) = self.add_password(app.object_id, Some("sealdisk connection file"))?;
        Ok(secret)
    }

    /// The same control plane reading time from `clock`.
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    pub fn now(&self) -> i64 {
        self.clock.now()
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    pub fn tenant(&self) -> TenantId {
        self.tenant
    }

    pub fn subscription(&self) -> SubscriptionId {
        self.subscription
    }

    pub fn subscription_scope(&self) -> String {
        format!("/subscriptions/{}", self.subscription)
    }

    /// Checks that `id` names this deployment's subscription (case-insensitive).
    pub fn check_subscription(&self, id: &str) -> Result<(), ControlError> {
        if id.eq_ignore_ascii_case(&self.subscription.to_string()) {
            Ok(())
        } else {
            Err(ControlError::SubscriptionNotFound(id.to_string()))
        }
    }

    /// The subscription document, as `GET /subscriptions/{id}` returns it.
    pub fn subscription_json(&self) -> Value {
        json!({
            "id": self.subscription_scope(),
            "authorizationSource": "RoleBased",
            "managedByTenants": [],
            "subscriptionId": self.subscription.to_string(),
            "tenantId": self.tenant.to_string(),
            "displayName": "sealdisk",
            "state": "Enabled",
            "subscriptionPolicies": {
                "locationPlacementId": "Public_2014-09-01",
                "quotaId": "sealdisk",
                "spendingLimit": "Off"
            }
        })
    }

    pub fn tenant_json(&self) -> Value {
        json!({
            "id": format!("/tenants/{}", self.tenant),
            "tenantId": self.tenant.to_string(),
            "tenantCategory": "Home",
            "displayName": "sealdisk",
            "defaultDomain": "sealdisk.localhost",
            "domains": ["sealdisk.localhost"]
        })
    }

    pub fn locations_json(&self) -> Vec<Value> {
        LOCATIONS
            .iter()
            .map(|l| {
                json!({
                    "id": format!("{}/locations/{}", self.subscription_scope(), l.name),
                    "name": l.name,
                    "displayName": l.display_name,
                    "regionalDisplayName": format!("(sealdisk) {}", l.display_name),
                    "type": "Region",
                    "metadata": {"regionType": "Physical", "regionCategory": "Recommended"}
                })
            })
            .collect()
    }

    /// Normalises a location (`"East US"` → `eastus`), refusing unknown ones.
    pub fn location(&self, name: &str) -> Result<&'static str, ControlError> {
        let key: String = name
            .chars()
            .filter(|c| !c.is_whitespace())
            .collect::<String>()
            .to_ascii_lowercase();
        LOCATIONS
            .iter()
            .find(|l| l.name == key)
            .map(|l| l.name)
            .ok_or_else(|| ControlError::LocationNotAvailable(name.to_string()))
    }

    // ---- directory ----

    /// Registers an application and its service principal.
    pub fn create_application(
        &self,
        display_name: &str,
        app_id: Option<AppId>,
    ) -> Result<(ApplicationRecord, PrincipalRecord), ControlError> {
        let app = ApplicationRecord {
            object_id: ObjectId::new_random(),
            app_id: app_id.unwrap_or_else(AppId::new_random),
            display_name: display_name.to_string(),
            created: now(),
        };
        self.store.insert_application(&app)?;
        let principal = self.create_service_principal(app.app_id, display_name)?;
        Ok((app, principal))
    }

    /// Creates the service principal of an application.
    pub fn create_service_principal(
        &self,
        app_id: AppId,
        display_name: &str,
    ) -> Result<PrincipalRecord, ControlError> {
        let principal = PrincipalRecord {
            object_id: ObjectId::new_random(),
            app_id,
            display_name: display_name.to_string(),
            kind: PrincipalKind::ServicePrincipal,
            created: now(),
        };
        self.store.insert_principal(&principal)?;
        Ok(principal)
    }

    /// Creates the system-assigned managed identity of `resource_id`.
    pub fn create_managed_identity(
        &self,
        resource_id: &str,
    ) -> Result<PrincipalRecord, ControlError> {
        let name = resource_id.rsplit('/').next().unwrap_or(resource_id);
        let principal = PrincipalRecord {
            object_id: ObjectId::new_random(),
            app_id: AppId::new_random(),
            display_name: name.to_string(),
            kind: PrincipalKind::ManagedIdentity {
                resource_id: resource_id.to_string(),
            },
            created: now(),
        };
        self.store.insert_principal(&principal)?;
        Ok(principal)
    }

    /// Adds a client secret to an application; returns the plain secret (shown once) and its
    /// record.
    pub fn add_password(
        &self,
        app_object_id: ObjectId,
        display_name: Option<&str>,
    ) -> Result<(Zeroizing<String>, CredentialRecord), ControlError> {
        let secret = crypto::secret::generate()?;
        let start = now();
        let record = CredentialRecord {
            key_id: Uuid::new_v4(),
            app_object_id,
            secret_hash: crypto::secret::hash(&secret)?,
            display_name: display_name.map(str::to_string),
            start,
            end: start + SECRET_LIFETIME_SECS,
        };
        self.store.insert_credential(&record)?;
        Ok((secret, record))
    }

    fn verify_secret(&self, app: &ApplicationRecord, secret: &str) -> Result<bool, ControlError> {
        let now = now();
        Ok(self.store.credentials(app.object_id)?.iter().any(|c| {
            c.start <= now && now < c.end && crypto::secret::verify(secret, &c.secret_hash)
        }))
    }

    /// Authenticates a client (`client_credentials` grant): the service principal of `app_id`
    /// if `secret` is one of its application's live secrets.
    pub fn authenticate_client(
        &self,
        app_id: AppId,
        secret: &str,
    ) -> Result<Option<PrincipalRecord>, ControlError> {
        let Some(app) = self.store.application_by_app_id(app_id)? else {
            return Ok(None);
        };
        if !self.verify_secret(&app, secret)? {
            return Ok(None);
        }
        Ok(self.store.principal_by_app_id(app_id)?)
    }

    /// Deletes a service principal and everything that grants it access.
    pub fn delete_principal(&self, object_id: ObjectId) -> Result<(), ControlError> {
        let principal = self
            .store
            .principal(object_id)?
            .ok_or_else(|| ControlError::DirectoryObjectNotFound(object_id.to_string()))?;
        if matches!(principal.kind, PrincipalKind::ManagedIdentity { .. }) {
            return Err(ControlError::PrincipalNotEditable("ManagedIdentity"));
        }
        for a in self.role_assignment_records()? {
            if a.1.principal_id == object_id {
                self.store.delete_resource(&a.0)?;
            }
        }
        self.store.delete_principal(object_id)?;
        Ok(())
    }

    // ---- authorization ----

    pub(crate) fn role_assignment_records(
        &self,
    ) -> Result<Vec<(String, RoleAssignment)>, ControlError> {
        Ok(crate::resources::role_assignments(&*self.store)?)
    }

    /// Whether `principal` may perform `action` on `scope` (a data action when `data`).
    pub fn is_authorized(
        &self,
        principal: ObjectId,
        action: &str,
        scope: &str,
        data: bool,
    ) -> Result<bool, ControlError> {
        let generation = self.store.generation()?;
        let assignments = self.key_cache.read(
            generation,
            |r| &mut r.role_assignments,
            (),
            || {
                let records = self.role_assignment_records()?;
                Ok(Arc::new(records.into_iter().map(|(_, a)| a).collect()))
            },
        )?;
        Ok(authz::permits(&assignments, principal, action, scope, data))
    }

    /// [`Self::is_authorized`] as ARM's `AuthorizationFailed` error.
    pub fn authorize(
        &self,
        principal: ObjectId,
        action: &str,
        scope: &str,
    ) -> Result<(), ControlError> {
        if self.is_authorized(principal, action, scope, false)? {
            Ok(())
        } else {
            Err(ControlError::AuthorizationFailed {
                principal: principal.to_string(),
                action: action.to_string(),
                scope: scope.to_string(),
            })
        }
    }
}
