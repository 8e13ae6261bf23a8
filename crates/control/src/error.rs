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
        "The provided location '{0}' is not available for resource group. List of available regions is 'eastus,westus2,westcentralus,southcentralus,northeurope'."
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
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Crypto(#[from] crypto::CryptoError),
}
