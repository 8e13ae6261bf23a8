//! The az-style command line: talks HTTPS to a running sealdisk.

use std::process::ExitCode;

/// Options every command accepts (`--query`, `-o`, `--debug`).
#[derive(Debug, clap::Args)]
pub struct GlobalArgs {}

/// Client commands.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Log in to a sealdisk deployment.
    Login,
}

pub fn main(_global: GlobalArgs, _command: Command) -> ExitCode {
    ExitCode::FAILURE
}
