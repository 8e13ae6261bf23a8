//! The metadata store interface. [`SqliteStore`] is the embedded default; a PostgreSQL backend
//! implements the same trait later. Every method is one atomic, durable change or one read.

mod sqlite;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

pub use sqlite::SqliteStore;

use crate::ids::{AppId, ObjectId};

/// What a store failed on.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("metadata database error: {0}")]
    Database(#[from] rusqlite::Error),
    #[error("stored record is corrupt: {0}")]
    Corrupt(String),
    #[error("metadata schema version {found} is newer than this sealdisk understands ({known})")]
    SchemaTooNew { found: i64, known: i64 },
    #[error("{0} already exists")]
    Duplicate(String),
    #[error("cannot create the metadata database: {0}")]
    Create(#[source] std::io::Error),
}

/// An application registration (Microsoft Graph `application`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApplicationRecord {
    pub object_id: ObjectId,
    pub app_id: AppId,
    pub display_name: String,
    /// Unix seconds.
    pub created: i64,
}

/// What kind of security principal a directory object is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind")]
pub enum PrincipalKind {
    /// The principal of an application; authenticates with the application's secrets.
    ServicePrincipal,
    /// A system-assigned managed identity owned by the resource `resource_id`; never logs in
    /// from outside, sealdisk acts as it internally.
    ManagedIdentity { resource_id: String },
}

/// A service principal or managed identity (Microsoft Graph `servicePrincipal`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrincipalRecord {
    pub object_id: ObjectId,
    pub app_id: AppId,
    pub display_name: String,
    pub kind: PrincipalKind,
    pub created: i64,
}

/// A client secret of an application, stored only hashed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CredentialRecord {
    pub key_id: Uuid,
    pub app_object_id: ObjectId,
    pub secret_hash: String,
    pub display_name: Option<String>,
    pub start: i64,
    pub end: i64,
}

/// An ARM resource document. `id` keeps the case it was created with; lookups ignore case.
#[derive(Debug, Clone, PartialEq)]
pub struct ResourceRecord {
    pub id: String,
    /// `Namespace/type[/subtype]`, e.g. `Microsoft.Resources/resourceGroups`.
    pub resource_type: String,
    pub body: Value,
}

/// Which resources a listing returns.
#[derive(Debug, Clone, Default)]
pub struct ResourceQuery<'a> {
    /// Only resources of this type (case-insensitive).
    pub resource_type: Option<&'a str>,
    /// Only resources at or below this scope.
    pub scope: Option<&'a str>,
}

/// A long-running operation's status document.
#[derive(Debug, Clone, PartialEq)]
pub struct OperationRecord {
    pub id: String,
    pub body: Value,
}

/// One version of a Key Vault key: its public document and its private key sealed under the
/// platform root key. `vault` and `name` are stored lower-cased for lookups; `body.name` keeps
/// the name's case.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyVersionRecord {
    pub vault: String,
    pub name: String,
    pub version: String,
    pub body: Value,
    pub sealed: Vec<u8>,
}

/// The stored data as of one moment. Two calls of `Store::generation` return equal values
/// only if nothing was changed in between, so a read made after observing a generation may
/// be reused for as long as the store still reports that generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Generation {
    /// Rows changed through this store's own connection.
    pub(crate) own_changes: u64,
    /// Changes committed by anyone else (SQLite's `data_version`).
    pub(crate) others: i64,
}

/// Durable metadata. Implementations are internally synchronised.
pub trait Store: Send + Sync + std::fmt::Debug {
    /// The data's current generation: it changes with every change committed through this
    /// store or by any other writer of the same database.
    fn generation(&self) -> Result<Generation, StoreError>;

    fn setting(&self, key: &str) -> Result<Option<String>, StoreError>;
    fn set_setting(&self, key: &str, value: &str) -> Result<(), StoreError>;

    fn insert_application(&self, app: &ApplicationRecord) -> Result<(), StoreError>;
    fn application(&self, object_id: ObjectId) -> Result<Option<ApplicationRecord>, StoreError>;
    fn application_by_app_id(&self, app_id: AppId)
    -> Result<Option<ApplicationRecord>, StoreError>;
    fn applications(&self) -> Result<Vec<ApplicationRecord>, StoreError>;
    /// Deletes the application and its credentials.
    fn delete_application(&self, object_id: ObjectId) -> Result<bool, StoreError>;

    fn insert_principal(&self, principal: &PrincipalRecord) -> Result<(), StoreError>;
    fn principal(&self, object_id: ObjectId) -> Result<Option<PrincipalRecord>, StoreError>;
    fn principal_by_app_id(&self, app_id: AppId) -> Result<Option<PrincipalRecord>, StoreError>;
    fn principals(&self) -> Result<Vec<PrincipalRecord>, StoreError>;
    fn delete_principal(&self, object_id: ObjectId) -> Result<bool, StoreError>;

    fn insert_credential(&self, credential: &CredentialRecord) -> Result<(), StoreError>;
    fn credentials(&self, app_object_id: ObjectId) -> Result<Vec<CredentialRecord>, StoreError>;
    fn delete_credential(&self, key_id: Uuid) -> Result<bool, StoreError>;

    fn put_resource(&self, resource: &ResourceRecord) -> Result<(), StoreError>;
    fn resource(&self, id: &str) -> Result<Option<ResourceRecord>, StoreError>;
    fn resources(&self, query: &ResourceQuery<'_>) -> Result<Vec<ResourceRecord>, StoreError>;
    fn delete_resource(&self, id: &str) -> Result<bool, StoreError>;
    /// Deletes `scope` and everything below it in one transaction; returns how many.
    fn delete_resources_under(&self, scope: &str) -> Result<usize, StoreError>;

    fn put_operation(&self, operation: &OperationRecord) -> Result<(), StoreError>;
    fn operation(&self, id: &str) -> Result<Option<OperationRecord>, StoreError>;

    fn insert_key_version(&self, key: &KeyVersionRecord) -> Result<(), StoreError>;
    fn update_key_version(
        &self,
        vault: &str,
        name: &str,
        version: &str,
        body: &Value,
    ) -> Result<bool, StoreError>;
    fn key_version(
        &self,
        vault: &str,
        name: &str,
        version: &str,
    ) -> Result<Option<KeyVersionRecord>, StoreError>;
    /// The newest version of a key (the last inserted).
    fn latest_key_version(
        &self,
        vault: &str,
        name: &str,
    ) -> Result<Option<KeyVersionRecord>, StoreError>;
    /// Every version of a key, oldest first.
    fn key_versions(&self, vault: &str, name: &str) -> Result<Vec<KeyVersionRecord>, StoreError>;
    /// The newest version of every key in a vault, by name.
    fn latest_key_versions(&self, vault: &str) -> Result<Vec<KeyVersionRecord>, StoreError>;
    /// Marks a key deleted (its versions stay until purged) with its deletion document.
    fn put_deleted_key(&self, vault: &str, name: &str, body: &Value) -> Result<(), StoreError>;
    fn deleted_key(&self, vault: &str, name: &str) -> Result<Option<Value>, StoreError>;
    fn deleted_keys(&self, vault: &str) -> Result<Vec<Value>, StoreError>;
    /// Clears the deleted mark (recovery).
    fn remove_deleted_key(&self, vault: &str, name: &str) -> Result<bool, StoreError>;
    /// Removes every trace of a key: versions, deleted mark, rotation policy. Irreversible.
    fn purge_key(&self, vault: &str, name: &str) -> Result<(), StoreError>;
    fn put_rotation_policy(&self, vault: &str, name: &str, body: &Value) -> Result<(), StoreError>;
    fn rotation_policy(&self, vault: &str, name: &str) -> Result<Option<Value>, StoreError>;
    /// Every rotation policy, as (vault, key name, policy), for the rotation scheduler.
    fn rotation_policies(&self) -> Result<Vec<(String, String, Value)>, StoreError>;
}
