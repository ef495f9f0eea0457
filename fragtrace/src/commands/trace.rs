use std::process::ExitCode;

use anyhow::Result;

use crate::cli::TraceArgs;

pub fn run(_args: TraceArgs) -> Result<ExitCode> {
    anyhow::bail!("not yet")
}
