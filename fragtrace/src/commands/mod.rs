//! One module per subcommand.
mod probes;
mod trace;

use std::process::ExitCode;

use anyhow::Result;

use crate::cli::{Cli, Command};

pub fn dispatch(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        None => trace::run(cli.trace),
        Some(Command::Trace(args)) => trace::run(args),
        Some(Command::Probes(args)) => probes::run(args),
        Some(Command::Snapshot(args)) => crate::zones::snapshot::run(args),
        Some(Command::AnalyzeLog(args)) => crate::offline::run(args),
    }
}
