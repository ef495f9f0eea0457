//! `cargo xtask fuzz`: the cargo-fuzz targets for a fixed time. (Being written: see issue #5.)
use anyhow::Result;

#[derive(clap::Args, Debug, Clone)]
pub struct Options {
    /// Seconds per target.
    #[arg(long, default_value_t = 60)]
    pub seconds: u64,
}

impl Options {
    pub fn short() -> Self {
        Self { seconds: 20 }
    }
}

pub fn run(_opts: &Options) -> Result<()> {
    Ok(())
}
