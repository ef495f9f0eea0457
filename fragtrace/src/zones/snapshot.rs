//! `fragtrace snapshot`. (Being written: issue #5.)
use std::process::ExitCode;

use anyhow::Result;

#[derive(clap::Args, Debug)]
pub struct SnapshotArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

pub fn run(_args: SnapshotArgs) -> Result<ExitCode> {
    anyhow::bail!("snapshot is not implemented yet")
}
