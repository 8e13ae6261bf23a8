//! The az-style command line: talks HTTPS to a running sealdisk.
//!
//! Code map:
//! - `mod.rs`: clap types, dispatch, `--query`/`-o` and exit codes.
//! - `commands/`: one module per command group (`login`/`account`, `group`, `role`, `ad`,
//!   `keyvault`).
//! - `session.rs`: the logged-in session (tokens, ARM/Graph requests, paging, LRO driver).
//! - `lro.rs`: sans-I/O long-running-operation decisions.
//! - `http.rs`: the reqwest client (CA-only trust, `*.localhost` resolution, `--debug`).
//! - `profile.rs`: `~/.sealdisk/profile.json`.
//! - `output.rs`, `query.rs`: az's output formats and `--query`.
//! - `error.rs`: errors, their az wording and exit codes.
//!
//! Invariant: only this module tree reads the profile directory and talks to the server as a
//! client; the server crates know nothing of it.

mod commands;
mod error;
mod http;
mod lro;
mod output;
mod profile;
mod query;
mod session;
#[cfg(test)]
mod test_support;

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{ArgAction, Args, Subcommand};

use self::error::{CliError, CliResult};
use self::output::{Outcome, OutputFormat};
use self::query::Query;
use self::session::Session;

/// Help heading of the options every command accepts.
const GLOBAL: &str = "Global Arguments";

/// Options every command accepts (`--query`, `-o`, `--debug`, `--only-show-errors`).
#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// JMESPath query string applied to the result. See http://jmespath.org/ for examples.
    #[arg(long, global = true, value_name = "JMESPATH", help_heading = GLOBAL)]
    query: Option<String>,
    /// Output format.
    #[arg(
        short = 'o',
        long,
        global = true,
        value_enum,
        ignore_case = true,
        default_value = "json",
        env = "SEALDISK_OUTPUT",
        help_heading = GLOBAL
    )]
    output: OutputFormat,
    /// Print every HTTP request (method, URL, status) to stderr.
    #[arg(long, global = true, help_heading = GLOBAL)]
    debug: bool,
    /// Only show errors, suppressing warnings.
    #[arg(long, global = true, help_heading = GLOBAL)]
    only_show_errors: bool,
}

/// Client commands (az syntax).
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Log in to a sealdisk deployment with a service principal.
    Login(commands::login::LoginArgs),
    /// Log out: forget the stored profile and tokens.
    Logout,
    /// Manage the subscriptions of the logged-in account.
    #[command(subcommand)]
    Account(commands::account::AccountCommand),
    /// Manage resource groups.
    #[command(subcommand)]
    Group(commands::group::GroupCommand),
    /// Manage role assignments and definitions (Azure RBAC).
    #[command(subcommand)]
    Role(commands::role::RoleCommand),
    /// Manage service principals (Microsoft Graph).
    #[command(subcommand)]
    Ad(commands::ad::AdCommand),
    /// Manage Key Vaults and their keys.
    #[command(subcommand)]
    Keyvault(commands::keyvault::KeyvaultCommand),
    /// Manage managed disks.
    #[command(subcommand)]
    Disk(commands::disk::DiskCommand),
    /// Manage disk encryption sets (customer-managed keys for disks).
    #[command(subcommand)]
    DiskEncryptionSet(commands::encryption_set::EncryptionSetCommand),
    /// Manage virtual machines and their disks.
    #[command(subcommand)]
    Vm(commands::vm::VmCommand),
    /// Manage virtual machine scale sets.
    #[command(subcommand)]
    Vmss(commands::vmss::VmssCommand),
    /// Manage snapshots of managed disks.
    #[command(subcommand)]
    Snapshot(commands::snapshot::SnapshotCommand),
    /// Manage images made from disks and snapshots.
    #[command(subcommand)]
    Image(commands::snapshot::ImageCommand),
}

/// `--subscription`, on commands that work inside one subscription.
#[derive(Debug, Clone, Args)]
pub(crate) struct SubscriptionArg {
    /// Name or ID of subscription. Defaults to the one chosen with `account set`.
    #[arg(long = "subscription", value_name = "NAME_OR_ID")]
    pub subscription: Option<String>,
}

/// `--yes`.
#[derive(Debug, Clone, Args)]
pub(crate) struct YesArg {
    /// Do not prompt for confirmation.
    #[arg(short = 'y', long = "yes", action = ArgAction::SetTrue)]
    pub yes: bool,
}

/// What every command handler gets.
#[derive(Debug)]
pub(crate) struct Ctx {
    /// `--debug`.
    pub debug: bool,
    /// `--only-show-errors`.
    pub quiet: bool,
    /// Path of `profile.json`.
    pub profile_path: PathBuf,
}

impl Ctx {
    /// Prints an az-style warning to stderr.
    pub fn warn(&self, message: &str) {
        if !self.quiet {
            eprintln!("WARNING: {message}");
        }
    }

    /// Opens the logged-in session.
    pub fn session(&self) -> CliResult<Session> {
        Session::open(&self.profile_path, self.debug)
    }

    /// Asks a yes/no question on the terminal; `NoTty` when there is none.
    pub fn confirm(&self, question: &str) -> CliResult<bool> {
        use std::io::IsTerminal as _;
        if !std::io::stdin().is_terminal() {
            return Err(CliError::NoTty);
        }
        eprint!("{question} (y/n): ");
        let _ = std::io::stderr().flush();
        let mut answer = String::new();
        std::io::stdin()
            .read_line(&mut answer)
            .map_err(|source| CliError::File {
                path: PathBuf::from("<stdin>"),
                source,
            })?;
        Ok(matches!(
            answer.trim().to_ascii_lowercase().as_str(),
            "y" | "yes"
        ))
    }
}

/// Runs one client command and returns az's exit code.
pub fn main(global: GlobalArgs, command: Command) -> ExitCode {
    // az validates --query before running anything, as a usage error.
    let query = match global.query.as_deref().map(Query::parse).transpose() {
        Ok(q) => q,
        Err(msg) => {
            eprintln!("ERROR: argument --query: invalid jmespath_type value: {msg}");
            return ExitCode::from(2);
        }
    };
    let result = profile::config_dir().and_then(|dir| {
        let ctx = Ctx {
            debug: global.debug,
            quiet: global.only_show_errors,
            profile_path: profile::profile_path(&dir),
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|source| CliError::File {
                path: PathBuf::from("<tokio runtime>"),
                source,
            })?;
        runtime.block_on(commands::run(&ctx, command))
    });
    let printed = result.and_then(|outcome| print(outcome, query.as_ref(), global.output));
    match printed {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ERROR: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

/// Applies `--query` and the output format, and writes the result to stdout.
fn print(outcome: Outcome, query: Option<&Query>, format: OutputFormat) -> CliResult<()> {
    let Some(value) = outcome.value else {
        return Ok(());
    };
    let value = match query {
        Some(q) => q.apply(&value).map_err(CliError::Query)?,
        None => value,
    };
    // az prints nothing for a null result, also when --query produced it.
    if value.is_null() {
        return Ok(());
    }
    let text =
        output::render(&value, format, outcome.table, query.is_some()).map_err(CliError::Output)?;
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        // A closed pipe (`| head`) is not an error, as in az.
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(CliError::File {
            path: PathBuf::from("<stdout>"),
            source: e,
        }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, Parser};

    /// Mirrors how main.rs embeds the CLI.
    #[derive(Debug, Parser)]
    #[command(name = "sealdisk")]
    struct TestArgs {
        #[command(flatten)]
        global: GlobalArgs,
        #[command(subcommand)]
        command: Command,
    }

    fn parse(args: &[&str]) -> Result<TestArgs, clap::Error> {
        TestArgs::try_parse_from(std::iter::once("sealdisk").chain(args.iter().copied()))
    }

    #[test]
    fn clap_definition_is_consistent() {
        TestArgs::command().debug_assert();
    }

    #[test]
    fn global_options_anywhere() {
        let a = parse(&[
            "group", "list", "-o", "TABLE", "--query", "[].name", "--debug",
        ])
        .unwrap();
        assert_eq!(a.global.output, OutputFormat::Table);
        assert_eq!(a.global.query.as_deref(), Some("[].name"));
        assert!(a.global.debug);
        let a = parse(&["-o", "tsv", "account", "show"]).unwrap();
        assert_eq!(a.global.output, OutputFormat::Tsv);
    }

    #[test]
    fn usage_errors_exit_2() {
        let err = parse(&["group", "create", "-n", "rg"]).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        let err = parse(&["-o", "xml", "account", "show"]).unwrap_err();
        assert_eq!(err.exit_code(), 2);
    }

    #[test]
    fn az_spellings_parse() {
        for args in [
            &[
                "login",
                "--service-principal",
                "-u",
                "c",
                "-p",
                "s",
                "--tenant",
                "t",
                "--endpoint",
                "https://localhost:1/",
                "--ca-file",
                "/x",
            ][..],
            &["login", "--connection-file", "/tmp/x/connection.json"],
            &["account", "set", "--subscription", "sub"],
            &["account", "set", "-s", "sub"],
            &[
                "account",
                "get-access-token",
                "--resource",
                "https://localhost:1/graph/",
            ],
            &[
                "group", "create", "-n", "rg", "-l", "eastus", "--tags", "a=b", "c=d",
            ],
            &[
                "group",
                "create",
                "--resource-group",
                "rg",
                "--location",
                "eastus",
            ],
            &["group", "show", "-g", "rg"],
            &["group", "delete", "-n", "rg", "--yes", "--no-wait"],
            &["group", "exists", "-n", "rg"],
            &[
                "role",
                "assignment",
                "create",
                "--assignee",
                "a",
                "--role",
                "Owner",
                "--scope",
                "/subscriptions/s",
            ],
            &[
                "role",
                "assignment",
                "create",
                "--assignee-object-id",
                "o",
                "--assignee-principal-type",
                "ServicePrincipal",
                "--role",
                "Owner",
                "-g",
                "rg",
            ],
            &["role", "assignment", "list", "--all", "--assignee", "a"],
            &["role", "assignment", "delete", "--ids", "/x", "/y"],
            &["role", "definition", "list", "--name", "Owner"],
            &[
                "ad",
                "sp",
                "create-for-rbac",
                "-n",
                "app",
                "--role",
                "Owner",
                "--scopes",
                "/a",
                "/b",
            ],
            &["ad", "sp", "list", "--display-name", "app"],
            &["ad", "sp", "show", "--id", "x"],
            &["ad", "sp", "delete", "--id", "x"],
        ] {
            if let Err(e) = parse(args) {
                panic!("{args:?}: {e}");
            }
        }
    }

    #[test]
    fn login_needs_a_mode() {
        assert!(parse(&["login"]).is_err());
        assert!(parse(&["login", "--service-principal", "-u", "c"]).is_err());
        assert!(
            parse(&[
                "login",
                "--connection-file",
                "x",
                "--service-principal",
                "-u",
                "c",
                "-p",
                "s",
                "--tenant",
                "t",
                "--endpoint",
                "https://h/"
            ])
            .is_err()
        );
    }
}
