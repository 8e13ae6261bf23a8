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
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Crypto(#[from] crypto::CryptoError),
}
