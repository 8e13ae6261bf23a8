//! `sealdisk serve`.

use std::process::ExitCode;

/// Options of `sealdisk serve`.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {}

pub fn main(_args: ServeArgs) -> ExitCode {
    ExitCode::FAILURE
}
