//! What can go wrong in a CLI command, how az words it, and which exit code it gives.
//!
//! Exit codes follow az: 0 success, 1 error, 2 usage error, 3 resource not found.

use std::fmt;
use std::path::PathBuf;

use serde_json::Value;

/// Which service answered: decides how an error body is read and worded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServiceKind {
    /// Azure Resource Manager: `{"error":{"code","message"}}`, worded like azure-core.
    Arm,
    /// Microsoft Graph: same body, az prints only the message.
    Graph,
    /// The token endpoint: `{"error":"invalid_client","error_description":"..."}`.
    Token,
}

/// An error status answered by the server, with the Azure error code and message from its body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceError {
    /// Which service answered.
    pub kind: ServiceKind,
    /// HTTP status code (0 when the error came inside a 200 body, e.g. a failed async operation).
    pub status: u16,
    /// Azure error code, e.g. `ResourceGroupNotFound`; absent when the body had none.
    pub code: Option<String>,
    /// Human-readable message.
    pub message: String,
}

impl ServiceError {
    /// Reads an error response body the way az does; `reason` is the HTTP reason phrase used when
    /// the body says nothing (azure-core: "Operation returned an invalid status 'Not Found'").
    pub fn from_response(kind: ServiceKind, status: u16, reason: &str, body: &[u8]) -> Self {
        let parsed: Option<Value> = serde_json::from_slice(body).ok();
        let (code, message) = parsed
            .as_ref()
            .and_then(error_fields)
            .unwrap_or((None, None));
        let message = message
            .filter(|m| !m.is_empty())
            .or_else(|| {
                // A non-JSON body that is short plain text is still the best message we have.
                let text = String::from_utf8_lossy(body).trim().to_owned();
                (parsed.is_none() && !text.is_empty() && text.len() <= 500).then_some(text)
            })
            .or_else(|| code.clone())
            .unwrap_or_else(|| format!("Operation returned an invalid status '{reason}'"));
        ServiceError {
            kind,
            status,
            code,
            message,
        }
    }

    /// An error object found inside an otherwise successful body (async operation status).
    pub fn from_error_object(kind: ServiceKind, body: &Value) -> Self {
        let (code, message) = error_fields(body).unwrap_or((None, None));
        ServiceError {
            kind,
            status: 0,
            message: message
                .or_else(|| code.clone())
                .unwrap_or_else(|| "The operation failed without an error message.".to_owned()),
            code,
        }
    }

    /// True when az would report this as "resource not found" (exit code 3).
    pub fn is_not_found(&self) -> bool {
        self.status == 404
    }
}

/// Code and message from any of the error shapes Azure services use.
fn error_fields(body: &Value) -> Option<(Option<String>, Option<String>)> {
    let text = |v: Option<&Value>| v.and_then(Value::as_str).map(str::to_owned);
    match body.get("error") {
        // ARM, Graph, Key Vault, async operation status.
        Some(inner @ Value::Object(_)) => Some((
            text(inner.get("code")),
            text(inner.get("message")).or_else(|| text(inner.get("Message"))),
        )),
        // OAuth2 token endpoint.
        Some(Value::String(code)) => {
            Some((Some(code.clone()), text(body.get("error_description"))))
        }
        // Some ARM errors put code and message at the top level.
        _ if body.get("code").is_some() || body.get("message").is_some() => {
            Some((text(body.get("code")), text(body.get("message"))))
        }
        _ => None,
    }
}

impl fmt::Display for ServiceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.kind, &self.code) {
            // azure-core's ODataV4Format, which az prints as is.
            (ServiceKind::Arm, Some(code)) => write!(
                f,
                "({code}) {msg}\nCode: {code}\nMessage: {msg}",
                msg = self.message
            ),
            _ => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for ServiceError {}

/// Everything a CLI command can fail with.
#[derive(Debug)]
pub enum CliError {
    /// The command line was well-formed for clap but not usable (az's usage errors).
    Usage(String),
    /// No profile: nobody logged in.
    NotLoggedIn,
    /// Reading or writing a file (profile, connection file, CA bundle) failed.
    File {
        /// The file concerned.
        path: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
    /// A JSON file did not have the expected shape.
    FileFormat {
        /// The file concerned.
        path: PathBuf,
        /// What the parser said.
        source: serde_json::Error,
    },
    /// The CA bundle could not be used as trust roots.
    CaBundle {
        /// The PEM file.
        path: PathBuf,
        /// What was wrong with it.
        detail: String,
    },
    /// The HTTP client could not be built.
    HttpClient(reqwest::Error),
    /// Sending a request or reading its answer failed below HTTP (connect, TLS, timeout).
    Transport {
        /// Request method.
        method: String,
        /// Request URL.
        url: String,
        /// What failed.
        source: reqwest::Error,
    },
    /// The server answered with an error.
    Service(ServiceError),
    /// The server answered success with a body we cannot use.
    BadResponse {
        /// Request URL.
        url: String,
        /// What was missing or malformed.
        detail: String,
    },
    /// A long-running operation did not finish within the polling limit.
    OperationTimedOut {
        /// The URL being polled.
        url: String,
    },
    /// A long-running operation was cancelled on the server.
    OperationCanceled,
    /// `--subscription` named no known subscription.
    SubscriptionNotFound(String),
    /// Login found no subscription and `--allow-no-subscriptions` was not given.
    NoSubscriptions {
        /// The client id that logged in.
        user: String,
    },
    /// `--role` named no role definition.
    RoleNotFound(String),
    /// `--role` matched several role definitions.
    RoleAmbiguous {
        /// The name given.
        role: String,
        /// Ids of the candidates.
        ids: Vec<String>,
    },
    /// `--assignee` resolved to no principal.
    PrincipalNotFound(String),
    /// `--id` resolved to no service principal (az exit code 3).
    ServicePrincipalNotFound(String),
    /// A confirmation prompt was needed but stdin is not a terminal.
    NoTty,
    /// The result could not be shown in the chosen output format.
    Output(String),
    /// `--query` failed while being applied.
    Query(String),
}

impl CliError {
    /// The process exit code az uses for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Usage(_) => 2,
            CliError::Service(e) if e.is_not_found() => 3,
            CliError::ServicePrincipalNotFound(_) => 3,
            _ => 1,
        }
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CliError::Usage(msg) => write!(f, "usage error: {msg}"),
            CliError::NotLoggedIn => f.write_str("Please run 'sealdisk login' to setup account."),
            CliError::File { path, source } => write!(f, "{}: {source}", path.display()),
            CliError::FileFormat { path, source } => {
                write!(f, "{} is not valid: {source}", path.display())
            }
            CliError::CaBundle { path, detail } => {
                write!(f, "CA file {} cannot be used: {detail}", path.display())
            }
            CliError::HttpClient(e) => write!(f, "cannot set up the HTTP client: {e}"),
            CliError::Transport {
                method,
                url,
                source,
            } => {
                // reqwest's own text only repeats the URL; the causes say what really failed.
                let what = if source.is_timeout() {
                    "timed out"
                } else if source.is_connect() {
                    "could not connect"
                } else if source.is_body() || source.is_decode() {
                    "failed while reading the answer"
                } else {
                    "failed"
                };
                write!(f, "{method} {url} {what}")?;
                let mut cause = std::error::Error::source(source);
                let mut untrusted = false;
                while let Some(c) = cause {
                    let text = c.to_string();
                    untrusted |= text.contains("UnknownIssuer");
                    write!(f, ": {text}")?;
                    cause = c.source();
                }
                if untrusted {
                    f.write_str(" (the server's certificate is not signed by the CA given with --ca-file or in the connection file)")?;
                }
                Ok(())
            }
            CliError::Service(e) => e.fmt(f),
            CliError::BadResponse { url, detail } => {
                write!(f, "unexpected response from {url}: {detail}")
            }
            CliError::OperationTimedOut { url } => {
                write!(
                    f,
                    "the operation did not finish in time (still polling {url})"
                )
            }
            CliError::OperationCanceled => f.write_str("The operation was canceled."),
            CliError::SubscriptionNotFound(s) => {
                write!(
                    f,
                    "The subscription of '{s}' doesn't exist in cloud 'sealdisk'."
                )
            }
            CliError::NoSubscriptions { user } => write!(
                f,
                "No subscriptions found for {user}. Use '--allow-no-subscriptions' to log in \
                 without subscriptions."
            ),
            CliError::RoleNotFound(r) => write!(f, "Role '{r}' doesn't exist."),
            CliError::RoleAmbiguous { role, ids } => write!(
                f,
                "More than one role matches the given name '{role}'. Please pick an id from '{ids:?}'"
            ),
            CliError::PrincipalNotFound(a) => write!(
                f,
                "Cannot find user or service principal in graph database for '{a}'. If the \
                 assignee is an appId, make sure the corresponding service principal is created."
            ),
            CliError::ServicePrincipalNotFound(id) => {
                write!(f, "Service principal '{id}' doesn't exist")
            }
            CliError::NoTty => {
                f.write_str("Unable to prompt for confirmation as no tty available. Use --yes.")
            }
            CliError::Output(msg) => f.write_str(msg),
            CliError::Query(msg) => write!(f, "invalid --query: {msg}"),
        }
    }
}

impl std::error::Error for CliError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            CliError::File { source, .. } => Some(source),
            CliError::FileFormat { source, .. } => Some(source),
            CliError::HttpClient(source) => Some(source),
            CliError::Transport { source, .. } => Some(source),
            CliError::Service(source) => Some(source),
            _ => None,
        }
    }
}

impl From<ServiceError> for CliError {
    fn from(e: ServiceError) -> Self {
        CliError::Service(e)
    }
}

/// Result of CLI operations.
pub type CliResult<T> = Result<T, CliError>;

#[cfg(test)]
mod tests {
    use super::*;

    fn check(kind: ServiceKind, status: u16, body: &str, expect: &str, exit: u8) {
        let e = ServiceError::from_response(kind, status, "Not Found", body.as_bytes());
        assert_eq!(e.to_string(), expect);
        assert_eq!(CliError::Service(e).exit_code(), exit);
    }

    #[test]
    fn arm_error_is_worded_like_azure_core() {
        check(
            ServiceKind::Arm,
            404,
            r#"{"error":{"code":"ResourceGroupNotFound","message":"Resource group 'x' could not be found."}}"#,
            "(ResourceGroupNotFound) Resource group 'x' could not be found.\n\
             Code: ResourceGroupNotFound\nMessage: Resource group 'x' could not be found.",
            3,
        );
    }

    #[test]
    fn arm_error_at_top_level() {
        check(
            ServiceKind::Arm,
            409,
            r#"{"code":"Conflict","message":"busy"}"#,
            "(Conflict) busy\nCode: Conflict\nMessage: busy",
            1,
        );
    }

    #[test]
    fn graph_error_prints_message_only() {
        check(
            ServiceKind::Graph,
            404,
            r#"{"error":{"code":"Request_ResourceNotFound","message":"Resource 'abc' does not exist."}}"#,
            "Resource 'abc' does not exist.",
            3,
        );
    }

    #[test]
    fn token_error_prints_description() {
        check(
            ServiceKind::Token,
            401,
            r#"{"error":"invalid_client","error_description":"AADSTS7000215: Invalid client secret."}"#,
            "AADSTS7000215: Invalid client secret.",
            1,
        );
        check(
            ServiceKind::Token,
            400,
            r#"{"error":"invalid_request"}"#,
            "invalid_request",
            1,
        );
    }

    #[test]
    fn empty_body_uses_reason_phrase() {
        check(
            ServiceKind::Arm,
            404,
            "",
            "Operation returned an invalid status 'Not Found'",
            3,
        );
    }

    #[test]
    fn plain_text_body_is_the_message() {
        check(ServiceKind::Arm, 502, "bad gateway\n", "bad gateway", 1);
    }

    #[test]
    fn failed_operation_error_object() {
        let body =
            serde_json::json!({"status":"Failed","error":{"code":"DiskBusy","message":"in use"}});
        let e = ServiceError::from_error_object(ServiceKind::Arm, &body);
        assert_eq!(e.code.as_deref(), Some("DiskBusy"));
        assert_eq!(e.message, "in use");
    }

    #[test]
    fn usage_errors_exit_2() {
        assert_eq!(CliError::Usage("x".into()).exit_code(), 2);
        assert_eq!(
            CliError::ServicePrincipalNotFound("x".into()).exit_code(),
            3
        );
        assert_eq!(CliError::NotLoggedIn.exit_code(), 1);
    }
}
