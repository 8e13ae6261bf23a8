//! `keyvault ...`: vaults through ARM (`vault.rs`), keys on the vault's own endpoint
//! (`key.rs`; private keys to import are read from PEM by `pem.rs` with the DER reader
//! `der.rs`), the audit trail (`audit.rs`), and the shapes az prints (`shape.rs`).
//!
//! Data-plane requests authenticate with the challenge flow of the Azure SDK
//! ([`crate::cli::session::Session::send_challenged`]): the vault names its token audience in
//! a 401 answer, so nothing here needs to know it.

mod audit;
mod der;
mod key;
mod pem;
mod shape;
mod vault;

use clap::Subcommand;

use crate::cli::Ctx;
use crate::cli::error::{CliError, CliResult, ServiceError, ServiceKind};
use crate::cli::output::Outcome;

pub use audit::AuditCommand;
pub use key::KeyCommand;
pub use vault::{
    CreateArgs, DeletePolicyArgs, ListDeletedArgs, LocatedVaultArgs, SetPolicyArgs, UpdateArgs,
    VaultArgs, VaultListArgs,
};

/// `keyvault` subcommands.
#[derive(Debug, Subcommand)]
pub enum KeyvaultCommand {
    /// Create a Key Vault (access-policy mode unless --enable-rbac-authorization true; the
    /// creator gets every permission).
    Create(Box<CreateArgs>),
    /// Show details of a Key Vault.
    Show(VaultArgs),
    /// List Key Vaults (in the subscription, or in one resource group).
    List(VaultListArgs),
    /// Update the properties of a Key Vault.
    Update(Box<UpdateArgs>),
    /// Delete a Key Vault. It stays recoverable until its retention period ends.
    Delete(VaultArgs),
    /// List soft-deleted Key Vaults.
    ListDeleted(ListDeletedArgs),
    /// Show a soft-deleted Key Vault.
    ShowDeleted(LocatedVaultArgs),
    /// Permanently delete a soft-deleted Key Vault and all its keys. Irreversible.
    Purge(LocatedVaultArgs),
    /// Recover a soft-deleted Key Vault.
    Recover(LocatedVaultArgs),
    /// Update the access policy of a principal on a Key Vault.
    SetPolicy(Box<SetPolicyArgs>),
    /// Delete the access policy of a principal from a Key Vault.
    DeletePolicy(DeletePolicyArgs),
    /// Manage keys.
    #[command(subcommand)]
    Key(KeyCommand),
    /// The Key Vault audit trail (a sealdisk extension).
    #[command(subcommand)]
    Audit(AuditCommand),
}

/// Runs a `keyvault` subcommand.
pub async fn run(ctx: &Ctx, cmd: KeyvaultCommand) -> CliResult<Outcome> {
    // Offline: no session, no login needed.
    if let KeyvaultCommand::Audit(AuditCommand::Verify(args)) = &cmd {
        return audit::verify(args);
    }
    let mut session = ctx.session()?;
    let outcome = match cmd {
        KeyvaultCommand::Key(cmd) => key::run(&mut session, cmd).await?,
        KeyvaultCommand::Audit(cmd) => audit::run(&mut session, cmd).await?,
        other => vault::run(&mut session, other).await?,
    };
    session.save()?;
    Ok(outcome)
}

/// az's three-state flags (`--enable-purge-protection [true|false]`): the flag alone means
/// true.
pub fn parse_flag(text: &str) -> Result<bool, String> {
    match text.to_ascii_lowercase().as_str() {
        "true" | "t" | "yes" | "y" | "on" | "1" | "enable" | "enabled" => Ok(true),
        "false" | "f" | "no" | "n" | "off" | "0" | "disable" | "disabled" => Ok(false),
        _ => Err(format!(
            "'{text}' is not a boolean; use true or false (yes/no, on/off, 1/0 also work)"
        )),
    }
}

/// An error az raises itself (a `CLIError`) rather than the server: printed as its message
/// alone, exit code 1.
fn refused(message: String) -> CliError {
    CliError::Service(ServiceError {
        kind: ServiceKind::Arm,
        status: 400,
        code: None,
        message,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    /// `sealdisk keyvault ...` as main.rs embeds it.
    #[derive(Debug, Parser)]
    struct TestArgs {
        #[command(subcommand)]
        command: crate::cli::Command,
    }

    pub fn parse(args: &[&str]) -> Result<KeyvaultCommand, clap::Error> {
        let a = TestArgs::try_parse_from(
            ["sealdisk", "keyvault"]
                .into_iter()
                .chain(args.iter().copied()),
        )?;
        match a.command {
            crate::cli::Command::Keyvault(cmd) => Ok(cmd),
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn flags_like_az() {
        assert_eq!(parse_flag("True"), Ok(true));
        assert_eq!(parse_flag("no"), Ok(false));
        assert!(parse_flag("maybe").is_err());
    }

    #[test]
    fn az_spellings_parse() {
        for args in [
            &[
                "create",
                "--name",
                "kv1",
                "--resource-group",
                "rg",
                "--location",
                "eastus",
                "--enable-purge-protection",
                "true",
                "--retention-days",
                "7",
                "--enable-rbac-authorization",
                "false",
                "--enabled-for-disk-encryption",
                "true",
                "--enable-soft-delete",
                "true",
                "--tags",
                "a=b",
                "c=d",
            ][..],
            &[
                "create",
                "-n",
                "kv1",
                "-g",
                "rg",
                "-l",
                "eastus",
                "--sku",
                "Premium",
                "--enable-purge-protection",
            ],
            &["show", "--name", "kv1"],
            &["show", "-n", "kv1", "-g", "rg"],
            &["list"],
            &["list", "-g", "rg"],
            &[
                "update",
                "-n",
                "kv1",
                "--enable-purge-protection",
                "true",
                "--retention-days",
                "30",
            ],
            &["delete", "--name", "kv1"],
            &["list-deleted"],
            &["show-deleted", "-n", "kv1", "-l", "eastus"],
            &["purge", "--name", "kv1"],
            &["purge", "--name", "kv1", "--location", "eastus"],
            &["recover", "--name", "kv1", "-g", "rg"],
            &[
                "set-policy",
                "--name",
                "kv1",
                "--object-id",
                "00000000-0000-0000-0000-000000000001",
                "--key-permissions",
                "get",
                "wrapKey",
                "unwrapKey",
            ],
            &[
                "set-policy",
                "-n",
                "kv1",
                "--spn",
                "app",
                "--key-permissions",
            ],
            &["delete-policy", "-n", "kv1", "--object-id", "o"],
            &[
                "key",
                "create",
                "--vault-name",
                "kv1",
                "--name",
                "k1",
                "--kty",
                "RSA",
                "--size",
                "3072",
                "--ops",
                "encrypt",
                "decrypt",
                "wrapkey",
                "--disabled",
                "true",
                "--expires",
                "2030-01-01T00:00:00Z",
                "--not-before",
                "2020-01-01",
                "--tags",
                "a=b",
            ],
            &[
                "key",
                "create",
                "--vault-name",
                "kv1",
                "-n",
                "k2",
                "--kty",
                "EC",
                "--curve",
                "P-256",
            ],
            &[
                "key",
                "create",
                "--vault-name",
                "kv1",
                "-n",
                "k3",
                "--protection",
                "hsm",
            ],
            &[
                "key",
                "import",
                "--vault-name",
                "kv1",
                "--name",
                "k1",
                "--pem-file",
                "/tmp/k.pem",
                "--pem-password",
                "pw",
                "--kty",
                "RSA",
                "--protection",
                "software",
                "--ops",
                "encrypt",
                "decrypt",
                "--disabled",
                "false",
                "--expires",
                "2030-01-01T00:00:00Z",
                "--not-before",
                "2020-01-01",
                "--tags",
                "a=b",
            ],
            &[
                "key",
                "import",
                "--vault-name",
                "kv1",
                "-n",
                "k2",
                "--pem-string",
                "-----BEGIN PRIVATE KEY-----",
                "--kty",
                "EC",
                "--curve",
                "P-256",
            ],
            &[
                "key",
                "import",
                "--vault-name",
                "kv1",
                "-n",
                "k3",
                "--byok-file",
                "/tmp/k.byok",
                "--kty",
                "RSA-HSM",
                "-p",
                "hsm",
            ],
            &["key", "show", "--vault-name", "kv1", "--name", "k1"],
            &[
                "key",
                "show",
                "--vault-name",
                "kv1",
                "--name",
                "k1",
                "--version",
                "abc",
            ],
            &[
                "key",
                "show",
                "--id",
                "https://kv1.vault.localhost:8443/keys/k1/abc",
            ],
            &["key", "list", "--vault-name", "kv1", "--maxresults", "3"],
            &["key", "list-versions", "--vault-name", "kv1", "-n", "k1"],
            &[
                "key",
                "set-attributes",
                "--vault-name",
                "kv1",
                "-n",
                "k1",
                "--enabled",
                "false",
                "--expires",
                "2031-01-01T00:00Z",
                "--ops",
                "sign",
                "verify",
                "--tags",
                "x=y",
            ],
            &["key", "delete", "--vault-name", "kv1", "-n", "k1"],
            &["key", "list-deleted", "--vault-name", "kv1"],
            &["key", "show-deleted", "--vault-name", "kv1", "--name", "k1"],
            &["key", "recover", "--vault-name", "kv1", "--name", "k1"],
            &["key", "purge", "--vault-name", "kv1", "--name", "k1"],
            &[
                "key",
                "backup",
                "--vault-name",
                "kv1",
                "--name",
                "k1",
                "--file",
                "/tmp/k1.bak",
            ],
            &["key", "restore", "--vault-name", "kv1", "-f", "/tmp/k1.bak"],
            &["key", "rotate", "--vault-name", "kv1", "--name", "k1"],
            &[
                "key",
                "rotation-policy",
                "show",
                "--vault-name",
                "kv1",
                "--name",
                "k1",
            ],
            &[
                "key",
                "rotation-policy",
                "update",
                "--vault-name",
                "kv1",
                "--name",
                "k1",
                "--value",
                "@policy.json",
            ],
            &[
                "key",
                "encrypt",
                "--vault-name",
                "kv1",
                "--name",
                "k1",
                "--algorithm",
                "RSA-OAEP-256",
                "--value",
                "hello",
                "--data-type",
                "plaintext",
            ],
            &[
                "key",
                "decrypt",
                "--vault-name",
                "kv1",
                "-n",
                "k1",
                "-a",
                "RSA-OAEP-256",
                "--value",
                "aGk=",
            ],
            &["audit", "list", "--vault-name", "kv1"],
            &["audit", "verify", "--data-dir", "/var/lib/sealdisk"],
        ] {
            if let Err(e) = parse(args) {
                panic!("{args:?}: {e}");
            }
        }
    }

    #[test]
    fn usage_errors() {
        for args in [
            &["create", "-n", "kv1", "-g", "rg", "--retention-days", "3"][..],
            &["create", "-n", "kv1", "-g", "rg", "--sku", "gold"],
            &["key", "show", "--vault-name", "kv1"],
            &[
                "key",
                "show",
                "--id",
                "https://kv1.vault.localhost/keys/k",
                "--name",
                "k",
            ],
            &[
                "key",
                "create",
                "--vault-name",
                "kv1",
                "-n",
                "k",
                "--kty",
                "DSA",
            ],
            &[
                "key",
                "create",
                "--vault-name",
                "kv1",
                "-n",
                "k",
                "--expires",
                "tomorrow",
            ],
            &["set-policy", "-n", "kv1", "--key-permissions", "get"],
            // key import: exactly one source, and --pem-password only with a PEM.
            &["key", "import", "--vault-name", "kv1", "-n", "k"],
            &[
                "key",
                "import",
                "--vault-name",
                "kv1",
                "-n",
                "k",
                "--pem-file",
                "a.pem",
                "--pem-string",
                "x",
            ],
            &[
                "key",
                "import",
                "--vault-name",
                "kv1",
                "-n",
                "k",
                "--pem-file",
                "a.pem",
                "--byok-file",
                "a.byok",
            ],
            &[
                "key",
                "import",
                "--vault-name",
                "kv1",
                "-n",
                "k",
                "--byok-file",
                "a.byok",
                "--pem-password",
                "pw",
            ],
            &[
                "key",
                "import",
                "--vault-name",
                "kv1",
                "-n",
                "k",
                "--pem-file",
                "a.pem",
                "--kty",
                "DSA",
            ],
        ] {
            let err = parse(args).expect_err(&format!("{args:?} should not parse"));
            assert_eq!(err.exit_code(), 2, "{args:?}");
        }
    }
}
