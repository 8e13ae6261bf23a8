use crate::store::StoreError;

/// What a control-plane request failed on. `api` maps every variant to an HTTP status and an
/// Azure error code in one table.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("The subscription '{0}' could not be found.")]
    SubscriptionNotFound(String),
    #[error("Resource group '{0}' could not be found.")]
    ResourceGroupNotFound(String),
    #[error(
        "The Resource '{resource_type}/{name}' under resource group '{resource_group}' was not found."
    )]
    ResourceNotFound {
        resource_type: String,
        name: String,
        resource_group: String,
    },
    #[error("The role definition '{0}' could not be found.")]
    RoleDefinitionNotFound(String),
    #[error("The role assignment '{0}' is not found.")]
    RoleAssignmentNotFound(String),
    #[error("The role assignment already exists.")]
    RoleAssignmentExists,
    #[error(
        "Principal {0} does not exist in the directory. Check that you have the correct principal ID."
    )]
    PrincipalNotFound(String),
    #[error(
        "Resource '{0}' does not exist or one of its queried reference-property objects are not present."
    )]
    DirectoryObjectNotFound(String),
    #[error(
        "The provided location '{0}' is not available for resource group. List the available regions with `az account list-locations` (GET /subscriptions/{{id}}/locations)."
    )]
    LocationNotAvailable(String),
    #[error(
        "Resource group name '{0}' is invalid: it must be 1-90 characters of letters, digits, '_', '-', '.', '(' or ')' and must not end in a period."
    )]
    InvalidResourceGroupName(String),
    #[error("The value of parameter {name} is invalid: {reason}")]
    InvalidParameter { name: String, reason: String },
    #[error("The request body is not valid JSON for this resource: {0}")]
    InvalidRequestContent(String),
    #[error(
        "The client with object id '{principal}' does not have authorization to perform action '{action}' over scope '{scope}' or the scope is invalid. If access was recently granted, please refresh your credentials."
    )]
    AuthorizationFailed {
        principal: String,
        action: String,
        scope: String,
    },
    #[error("Principals of kind {0} cannot be changed through this API.")]
    PrincipalNotEditable(&'static str),
    #[error(
        "The vault name '{0}' is invalid. A vault's name must be between 3-24 alphanumeric characters. The name must begin with a letter, end with a letter or digit, and not contain consecutive hyphens."
    )]
    VaultNameNotValid(String),
    #[error(
        "The vault name '{0}' is already in use. Vault names are globally unique in a deployment; choose another name."
    )]
    VaultAlreadyExists(String),
    #[error(
        "A vault with the name '{0}' already exists in deleted state. Either recover it (createMode 'recover') or purge it first."
    )]
    VaultInDeletedState(String),
    #[error(
        "The Resource 'Microsoft.KeyVault/vaults/{0}' under resource group '{1}' was not found."
    )]
    VaultNotFound(String, String),
    #[error("Deleted vault '{0}' was not found in location '{1}'.")]
    DeletedVaultNotFound(String, String),
    #[error(
        "Vault '{name}' has purge protection enabled and cannot be purged before its scheduled purge date {scheduled_purge}."
    )]
    PurgeProtected {
        name: String,
        scheduled_purge: String,
    },
    #[error("The property '{property}' {reason}")]
    PropertyImmutable {
        property: &'static str,
        reason: &'static str,
    },
    #[error(
        "A key with (name/id) {0} was not found in this key vault. If you recently deleted this key you may be able to recover it using the correct recovery command."
    )]
    KeyNotFound(String),
    #[error("Deleted Key not found: {0}")]
    DeletedKeyNotFound(String),
    #[error(
        "Key {0} is currently in a deleted but recoverable state, and its name cannot be reused; in this state, the key can only be recovered or purged."
    )]
    KeyDeletedButRecoverable(String),
    #[error(
        "Key {0} already exists in this vault; restore needs a name that is free (delete and purge the existing key first)."
    )]
    KeyAlreadyExists(String),
    #[error(
        "Operation {operation} is not allowed on a disabled or expired key (key {key}). Enable it or extend its expiry with `key set-attributes`."
    )]
    KeyDisabled { key: String, operation: String },
    #[error("Operation {operation} is not permitted by this key's key_ops ({allowed}).")]
    KeyOperationNotPermitted { operation: String, allowed: String },
    #[error("{0}")]
    KeyBadParameter(String),
    #[error(
        "Operation \"purge\" is not allowed on key {0} because purge protection is enabled for this vault; it is purged automatically at its scheduled purge date."
    )]
    KeyPurgeProtected(String),
    #[error(
        "The user, group or application '{object_id}' does not have keys {permission} permission on key vault '{vault}'. Grant it with `keyvault set-policy --key-permissions {permission}`."
    )]
    KeyAccessDenied {
        object_id: String,
        permission: String,
        vault: String,
    },
    #[error(
        "Caller '{object_id}' is not authorized to perform action on resource: Action: '{action}' on vault '{vault}'. Assign a role that grants it: 'Key Vault Crypto Officer' (every key operation), 'Key Vault Crypto User' (cryptographic operations and reads) or 'Key Vault Crypto Service Encryption User' (get, wrap, unwrap)."
    )]
    KeyForbiddenByRbac {
        object_id: String,
        action: String,
        vault: String,
    },
    #[error(
        "The backup blob is not valid for this deployment: it was damaged or made by another sealdisk deployment."
    )]
    InvalidBackup,
    #[error(transparent)]
    Material(#[from] keyvault::material::MaterialError),
    #[error("sealed key material could not be opened: {0}")]
    Seal(#[from] keyvault::seal::SealError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    OperationNotAllowed(String),
    #[error(
        "This deployment serves no disk data plane (no NBD listener): start `sealdisk serve` with --nbd-listen to create and export disks."
    )]
    DataPlaneUnavailable,
    #[error(
        "the keys of disk volume {volume} are not available: its wrap layer names key '{key_id}', which this deployment cannot unwrap"
    )]
    VolumeKeyUnavailable { volume: String, key_id: String },
    #[error("The key of disk encryption set '{set}' cannot be used: {reason}.")]
    DiskEncryptionSetKeyUnusable { set: String, reason: String },
    #[error("the audit log refused an entry, so the operation was refused: {0}")]
    AuditUnavailable(String),
    #[error("disk volume storage failed: {0}")]
    Volume(#[from] blockstore::StoreError),
    #[error("disk volume file: {0}")]
    VolumeFile(#[source] std::io::Error),
    #[error("disk volume key: {0}")]
    VolumeCipher(#[source] blockstore::xts::XtsError),
    #[error(transparent)]
    Crypto(#[from] crypto::CryptoError),
}
