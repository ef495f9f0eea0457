use std::process::ExitCode;

use anyhow::Result;

use crate::cli::ProbesArgs;

pub fn run(_args: ProbesArgs) -> Result<ExitCode> {
    anyhow::bail!("not yet")
}
