//! The one table from every error to an HTTP status and an Azure error code.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use control::ControlError;
use control::identity::TokenError;
use control::store::StoreError;
use serde_json::json;

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    Control(#[from] ControlError),
    #[error("{0}")]
    Token(#[from] TokenError),
    #[error(
        "Authentication failed. The 'Authorization' header is missing or is not a Bearer token."
    )]
    MissingAuthorization,
    #[error("No HTTP resource was found that matches the request URI '{0}'.")]
    NoRoute(String),
    #[error("The requested resource does not support http method '{0}'.")]
    MethodNotAllowed(String),
    #[error("The api-version query parameter (?api-version=) is required for all requests.")]
    MissingApiVersion,
    #[error(
        "No registered resource provider found for location and API version for type '{0}'. sealdisk serves Microsoft.Resources, Microsoft.Authorization and Microsoft.KeyVault so far."
    )]
    NoRegisteredProvider(String),
    #[error("The request content was invalid and could not be deserialized: {0}")]
    InvalidRequestContent(String),
    #[error("The $filter '{0}' is not supported. Supported: {1}.")]
    UnsupportedFilter(String, &'static str),
    #[error("The operation '{0}' was not found.")]
    OperationNotFound(String),
    #[error("Token signing failed: {0}")]
    TokenSigning(#[from] jsonwebtoken::errors::Error),
    #[error("The request body is larger than {0} bytes.")]
    BodyTooLarge(usize),
    #[error("The Key Vault audit log is unavailable, so the request was refused: {0}")]
    AuditUnavailable(String),
    #[error("The request failed unexpectedly inside sealdisk; the server log has the details.")]
    HandlerPanicked,
}

impl ApiError {
    /// The HTTP status and the stable Azure error code.
    pub fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            Self::Control(e) => control_status_and_code(e),
            Self::Token(TokenError::WrongAudience) => (
                StatusCode::UNAUTHORIZED,
                "InvalidAuthenticationTokenAudience",
            ),
            Self::Token(_) => (StatusCode::UNAUTHORIZED, "InvalidAuthenticationToken"),
            Self::MissingAuthorization => (StatusCode::UNAUTHORIZED, "AuthenticationFailed"),
            Self::NoRoute(_) => (StatusCode::NOT_FOUND, "NotFound"),
            Self::MethodNotAllowed(_) => (StatusCode::METHOD_NOT_ALLOWED, "MethodNotAllowed"),
            Self::MissingApiVersion => (StatusCode::BAD_REQUEST, "MissingApiVersionParameter"),
            Self::NoRegisteredProvider(_) => (StatusCode::BAD_REQUEST, "NoRegisteredProviderFound"),
            Self::InvalidRequestContent(_) => (StatusCode::BAD_REQUEST, "InvalidRequestContent"),
            Self::UnsupportedFilter(..) => (StatusCode::BAD_REQUEST, "InvalidFilterInQueryString"),
            Self::OperationNotFound(_) => (StatusCode::NOT_FOUND, "OperationNotFound"),
            Self::TokenSigning(_) => (StatusCode::INTERNAL_SERVER_ERROR, "InternalServerError"),
            Self::BodyTooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "RequestEntityTooLarge"),
            Self::AuditUnavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "AuditLogUnavailable"),
            Self::HandlerPanicked => (StatusCode::INTERNAL_SERVER_ERROR, "InternalServerError"),
        }
    }

    /// The Key Vault `innererror.code`, where Azure sends one.
    pub fn inner_code(&self) -> Option<&'static str> {
        use ControlError as C;
        match self {
            Self::Control(C::KeyDisabled { .. }) => Some("KeyDisabled"),
            Self::Control(C::KeyDeletedButRecoverable(_)) => Some("ObjectIsDeletedButRecoverable"),
            Self::Control(C::KeyAccessDenied { .. }) => Some("AccessDenied"),
            Self::Control(C::KeyForbiddenByRbac { .. }) => Some("ForbiddenByRbac"),
            Self::Control(C::KeyOperationNotPermitted { .. }) => Some("KeyOperationNotPermitted"),
            Self::Control(C::KeyPurgeProtected(_)) => Some("PurgeProtectionEnabled"),
            _ => None,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        if status.is_server_error() {
            tracing::error!(error = %self, "request failed");
        }
        let mut error = json!({"code": code, "message": self.to_string()});
        if let Some(inner) = self.inner_code() {
            error["innererror"] = json!({"code": inner});
        }
        (status, axum::Json(json!({"error": error}))).into_response()
    }
}

/// The HTTP status and Azure error code of a control-plane error.
pub fn control_status_and_code(e: &ControlError) -> (StatusCode, &'static str) {
    use ControlError as C;
    match e {
        C::SubscriptionNotFound(_) => (StatusCode::NOT_FOUND, "SubscriptionNotFound"),
        C::ResourceGroupNotFound(_) => (StatusCode::NOT_FOUND, "ResourceGroupNotFound"),
        C::ResourceNotFound { .. } => (StatusCode::NOT_FOUND, "ResourceNotFound"),
        C::RoleDefinitionNotFound(_) => (StatusCode::BAD_REQUEST, "RoleDefinitionDoesNotExist"),
        C::RoleAssignmentNotFound(_) => (StatusCode::NOT_FOUND, "RoleAssignmentNotFound"),
        C::RoleAssignmentExists => (StatusCode::CONFLICT, "RoleAssignmentExists"),
        C::PrincipalNotFound(_) => (StatusCode::BAD_REQUEST, "PrincipalNotFound"),
        C::DirectoryObjectNotFound(_) => (StatusCode::NOT_FOUND, "Request_ResourceNotFound"),
        C::LocationNotAvailable(_) => (
            StatusCode::BAD_REQUEST,
            "LocationNotAvailableForResourceGroup",
        ),
        C::InvalidResourceGroupName(_) => (StatusCode::BAD_REQUEST, "InvalidResourceGroup"),
        C::InvalidParameter { .. } => (StatusCode::BAD_REQUEST, "InvalidParameter"),
        C::InvalidRequestContent(_) => (StatusCode::BAD_REQUEST, "InvalidRequestContent"),
        C::AuthorizationFailed { .. } => (StatusCode::FORBIDDEN, "AuthorizationFailed"),
        C::PrincipalNotEditable(_) => (StatusCode::BAD_REQUEST, "Request_BadRequest"),
        C::VaultNameNotValid(_) => (StatusCode::BAD_REQUEST, "VaultNameNotValid"),
        C::VaultAlreadyExists(_) => (StatusCode::CONFLICT, "VaultAlreadyExists"),
        C::VaultInDeletedState(_) => (StatusCode::CONFLICT, "ConflictError"),
        C::VaultNotFound(..) => (StatusCode::NOT_FOUND, "ResourceNotFound"),
        C::DeletedVaultNotFound(..) => (StatusCode::NOT_FOUND, "ResourceNotFound"),
        C::PurgeProtected { .. } => (StatusCode::CONFLICT, "PurgeProtected"),
        C::PropertyImmutable { .. } => (StatusCode::BAD_REQUEST, "BadRequest"),
        C::KeyNotFound(_) | C::DeletedKeyNotFound(_) => (StatusCode::NOT_FOUND, "KeyNotFound"),
        C::KeyDeletedButRecoverable(_) | C::KeyAlreadyExists(_) => {
            (StatusCode::CONFLICT, "Conflict")
        }
        C::KeyDisabled { .. }
        | C::KeyOperationNotPermitted { .. }
        | C::KeyPurgeProtected(_)
        | C::KeyAccessDenied { .. }
        | C::KeyForbiddenByRbac { .. } => (StatusCode::FORBIDDEN, "Forbidden"),
        C::KeyBadParameter(_) | C::InvalidBackup | C::Material(_) => {
            (StatusCode::BAD_REQUEST, "BadParameter")
        }
        C::Seal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "InternalServerError"),
        C::Store(StoreError::Duplicate(_)) => (StatusCode::CONFLICT, "Conflict"),
        C::Store(_) | C::Crypto(_) => (StatusCode::INTERNAL_SERVER_ERROR, "InternalServerError"),
        C::OperationNotAllowed(_) => (StatusCode::CONFLICT, "OperationNotAllowed"),
        C::DiskEncryptionSetKeyUnusable { .. } => {
            (StatusCode::BAD_REQUEST, "KeyVaultAccessForbidden")
        }
        C::AuditUnavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "ServiceUnavailable"),
        C::DataPlaneUnavailable => (StatusCode::CONFLICT, "OperationNotAllowed"),
        C::VolumeKeyUnavailable { .. } => (StatusCode::CONFLICT, "KeyVaultAccessForbidden"),
        C::Volume(_) | C::VolumeFile(_) | C::VolumeCipher(_) => {
            (StatusCode::INTERNAL_SERVER_ERROR, "InternalServerError")
        }
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
