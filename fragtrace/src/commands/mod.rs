//! One module per subcommand.
mod daemon;
mod live;
mod probes;
mod report;
mod trace;

use std::process::ExitCode;

use anyhow::Result;

use crate::cli::{Cli, Command};

pub fn dispatch(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        None => trace::run(cli.trace, None),
        Some(Command::Trace(args)) => trace::run(args, None),
        Some(Command::Record(args)) => trace::run(args.trace, Some(&args.output)),
        Some(Command::Report(args)) => report::run(args),
        Some(Command::Probes(args)) => probes::run(args),
        Some(Command::Snapshot(args)) => crate::zones::snapshot::run(args),
        Some(Command::AnalyzeLog(args)) => crate::offline::run(args),
        Some(Command::Daemon(args)) => daemon::run(args),
    }
}
