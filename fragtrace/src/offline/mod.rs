//! `fragtrace analyze-log`: diagnosis from a kernel log, no eBPF. (Being written: issue #5.)
use std::{path::PathBuf, process::ExitCode};

use anyhow::Result;

#[derive(clap::Args, Debug)]
pub struct AnalyzeLogArgs {
    /// The log file; `-` or nothing reads standard input.
    pub file: Option<PathBuf>,
    /// Print one JSON object per incident.
    #[arg(long)]
    pub json: bool,
}

pub fn run(_args: AnalyzeLogArgs) -> Result<ExitCode> {
    anyhow::bail!("analyze-log is not implemented yet")
}
