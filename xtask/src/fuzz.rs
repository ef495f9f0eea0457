//! `cargo xtask fuzz`: every cargo-fuzz target of fuzz/ for a fixed time; a crash fails the task.
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::util::{self, root_dir};

/// The targets in fuzz/Cargo.toml.
const TARGETS: [&str; 4] = ["log_parser", "proc_parsers", "recording", "log_stream"];

#[derive(clap::Args, Debug, Clone)]
pub struct Options {
    /// Seconds per target.
    #[arg(long, default_value_t = 60)]
    pub seconds: u64,
    /// Fuzz only this target (repeatable); all of them by default.
    #[arg(long = "target", value_parser = clap::builder::PossibleValuesParser::new(TARGETS))]
    pub targets: Vec<String>,
}

impl Options {
    pub fn short() -> Self {
        Self {
            seconds: 20,
            targets: Vec::new(),
        }
    }
}

/// rustup's `cargo` proxy, so that `+nightly` selects the toolchain (the `CARGO` cargo gave
/// xtask is a toolchain's own binary, which ignores it).
pub fn nightly_cargo() -> Command {
    let mut cmd = Command::new("cargo");
    cmd.arg("+nightly").env_remove("RUSTUP_TOOLCHAIN");
    cmd
}

pub fn run(opts: &Options) -> Result<()> {
    let fuzz_dir = root_dir().join("fuzz");
    let chosen: Vec<&str> = if opts.targets.is_empty() {
        TARGETS.to_vec()
    } else {
        opts.targets.iter().map(String::as_str).collect()
    };
    for target in chosen {
        let corpus = fuzz_dir.join("corpus").join(target);
        std::fs::create_dir_all(&corpus)
            .with_context(|| format!("cannot create {}", corpus.display()))?;
        let artifacts = fuzz_dir.join("artifacts").join(target);
        let crashes_before = files_in(&artifacts);
        eprintln!("xtask: fuzzing {target} for {} s", opts.seconds);
        let mut cmd = nightly_cargo();
        cmd.current_dir(&fuzz_dir)
            .env("AYA_BUILD_SKIP", "1")
            // Optimized, with debug assertions and so overflow checks: cargo-fuzz's default
            // unless -O is given; stated so that a change of default cannot turn them off.
            .args(["fuzz", "run", "--debug-assertions", target])
            .arg(&corpus);
        // Checked-in seeds, where the target has some; libFuzzer refuses a missing directory.
        let seeds = fuzz_dir.join("seeds").join(target);
        if seeds.is_dir() {
            cmd.arg(&seeds);
        }
        cmd.arg("--")
            .arg(format!("-max_total_time={}", opts.seconds))
            .arg("-max_len=1048576");
        if let Err(err) = util::run(&mut cmd) {
            if files_in(&artifacts) > crashes_before {
                bail!(
                    "fuzz target {target} failed; the crashing input is under \
                     fuzz/artifacts/{target}/ (reproduce: cd fuzz && cargo +nightly fuzz run \
                     {target} <file>)"
                );
            }
            return Err(err.context(format!("fuzz target {target} did not run")));
        }
    }
    Ok(())
}

fn files_in(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir).map_or(0, |d| d.count())
}
