//! `keyvault audit list|verify` (a sealdisk extension): the audit trail of a vault as the
//! server serves it, and an offline check of the whole hash chain in a data directory.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use serde_json::{Value, json};

use super::key::{self, VaultTarget};
use crate::cli::error::{CliError, CliResult};
use crate::cli::output::Outcome;
use crate::cli::session::Session;

/// Where `sealdisk serve` keeps the audit log, relative to the data directory.
const AUDIT_LOG: &str = "audit/keyvault.log";
/// The platform root key, relative to the data directory (the audit key derives from it).
const ROOT_KEY: &str = "keys/platform-root.key";

/// `keyvault audit` subcommands.
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// List the audit entries of a vault, oldest first (GET {vault}/audit).
    List(ListArgs),
    /// Verify the audit log of a data directory offline: every entry's MAC, the chain and the
    /// head file. Needs read access to the platform root key.
    Verify(VerifyArgs),
}

/// `keyvault audit list`.
#[derive(Debug, Clone, Args)]
pub struct ListArgs {
    #[command(flatten)]
    pub vault: VaultTarget,
    /// Only entries about this key.
    #[arg(long)]
    pub key: Option<String>,
    /// Only the last N entries.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub limit: Option<u32>,
}

/// `keyvault audit verify`.
#[derive(Debug, Clone, Args)]
pub struct VerifyArgs {
    /// The server's data directory (holds keys/platform-root.key and the audit log).
    #[arg(long, value_name = "DIR")]
    pub data_dir: PathBuf,
    /// The audit log file, when not in its usual place under --data-dir.
    #[arg(long, value_name = "FILE")]
    pub log: Option<PathBuf>,
}

/// Runs `keyvault audit list`.
pub async fn run(session: &mut Session, cmd: AuditCommand) -> CliResult<Outcome> {
    match cmd {
        AuditCommand::List(args) => {
            let vault = key::resolve_vault(&session.profile.cloud, &args.vault)?;
            let limit = args.limit.map(|l| l.to_string());
            let mut query: Vec<(&str, &str)> = Vec::new();
            if let Some(k) = &args.key {
                query.push(("key", k));
            }
            if let Some(l) = &limit {
                query.push(("limit", l));
            }
            let url = key::data_url(&vault, "audit", &query)?;
            let entries = key::list_all(session, url, None).await?;
            Ok(Outcome::value(Value::Array(entries)))
        }
        AuditCommand::Verify(args) => verify(&args),
    }
}

/// `keyvault audit verify`: `keyvault::audit::verify` in this process.
pub fn verify(args: &VerifyArgs) -> CliResult<Outcome> {
    let root_path = args.data_dir.join(ROOT_KEY);
    // `load_or_create` would make a new key; a verifier must only read one.
    if !root_path.is_file() {
        return Err(CliError::File {
            path: root_path,
            source: std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "no platform root key here: --data-dir must be a sealdisk data directory",
            ),
        });
    }
    let root = crypto::RootKey::load_or_create(&root_path).map_err(|e| CliError::File {
        path: root_path.clone(),
        source: std::io::Error::other(e),
    })?;
    let log = args
        .log
        .clone()
        .unwrap_or_else(|| args.data_dir.join(AUDIT_LOG));
    let report = keyvault::audit::verify(&log, &root).map_err(|e| CliError::File {
        path: log.clone(),
        source: std::io::Error::other(e),
    })?;
    Ok(Outcome::value(json!({
        "log": log.display().to_string(),
        "verified": true,
        "entries": report.entries,
        "lastHash": report.last_hash.to_string(),
        "pending": {
            "tornBytes": report.pending.torn_bytes,
            "unacknowledgedSeq": report.pending.unacknowledged_seq,
        },
    })))
}

#[cfg(test)]
mod tests {
    use super::*;
    use keyvault::audit::{AuditLog, AuditRecord};

    fn record(op: &str) -> AuditRecord {
        AuditRecord {
            caller_object_id: "00000000-0000-0000-0000-000000000001".into(),
            vault: "kv1".into(),
            key: Some("k1".into()),
            version: None,
            operation: op.into(),
            result: "Success".into(),
            detail: None,
        }
    }

    /// A data directory with a root key and a log of two entries.
    fn data_dir() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let root = crypto::RootKey::load_or_create(&dir.path().join(ROOT_KEY)).unwrap();
        let log_path = dir.path().join(AUDIT_LOG);
        let log = AuditLog::open(&log_path, &root).unwrap();
        log.append(record("KeyCreate")).unwrap();
        log.append(record("KeyGet")).unwrap();
        (dir, log_path)
    }

    #[test]
    fn a_clean_log_verifies() {
        let (dir, log) = data_dir();
        let out = verify(&VerifyArgs {
            data_dir: dir.path().to_owned(),
            log: None,
        })
        .unwrap();
        let v = out.value.unwrap();
        assert_eq!(v["verified"], true);
        assert_eq!(v["entries"], 2);
        assert_eq!(v["log"], log.display().to_string());
        assert_eq!(v["lastHash"].as_str().unwrap().len(), 64);
        assert_eq!(v["pending"]["unacknowledgedSeq"], Value::Null);
    }

    #[test]
    fn a_tampered_log_is_an_error() {
        let (dir, log) = data_dir();
        let text = std::fs::read_to_string(&log).unwrap();
        std::fs::write(&log, text.replace("KeyGet", "KeyPut")).unwrap();
        let err = verify(&VerifyArgs {
            data_dir: dir.path().to_owned(),
            log: Some(log),
        })
        .unwrap_err();
        assert_eq!(err.exit_code(), 1);
        assert!(err.to_string().contains("failed verification"), "{err}");
    }

    #[test]
    fn no_root_key_no_verification_and_no_new_key() {
        let dir = tempfile::tempdir().unwrap();
        let err = verify(&VerifyArgs {
            data_dir: dir.path().to_owned(),
            log: None,
        })
        .unwrap_err();
        assert!(err.to_string().contains("platform root key"), "{err}");
        assert!(!dir.path().join(ROOT_KEY).exists());
    }
}
