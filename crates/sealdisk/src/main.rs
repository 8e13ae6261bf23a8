//! `sealdisk`: the server (`sealdisk serve`) and the az-style command line in one binary.

mod cli;
mod exports;
mod serve;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Self-hosted encrypted managed disks with customer-managed keys.
#[derive(Debug, Parser)]
#[command(name = "sealdisk", version, about)]
struct Args {
    #[command(flatten)]
    global: cli::GlobalArgs,
    #[command(subcommand)]
    command: Top,
}

#[derive(Debug, Subcommand)]
enum Top {
    /// Run the sealdisk server (ARM, identity, Key Vault and NBD endpoints).
    Serve(serve::ServeArgs),
    #[command(flatten)]
    Cli(cli::Command),
}

fn main() -> ExitCode {
    let args = Args::parse();
    match args.command {
        Top::Serve(serve_args) => serve::main(serve_args),
        Top::Cli(command) => cli::main(args.global, command),
    }
}
