//! `cargo xtask vmtest`: the kernel matrix in qemu. (Being written: see issue #3.)
use anyhow::Result;

#[derive(clap::Args, Debug, Clone)]
pub struct Options {
    /// Kernel to boot: 5.10, 6.1, 6.12 or all.
    #[arg(long, default_value = "all")]
    pub kernel: String,
}

impl Options {
    pub fn all() -> Self {
        Self {
            kernel: "all".into(),
        }
    }
}

/// Fetches the test kernels into target/ when missing.
pub fn ensure_kernels() -> Result<()> {
    Ok(())
}

pub fn run(_opts: &Options) -> Result<()> {
    Ok(())
}
