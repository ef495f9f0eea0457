//! Project tasks: `cargo xtask setup | build | run | test | vmtest | fuzz | bench | lint`.
mod bench;
mod bench_daemon;
mod bench_matrix;
mod bench_storm;
mod fuzz;
mod image;
mod setup;
mod util;
mod vmtest;

use std::{path::Path, process::ExitCode};

use anyhow::Result;
use clap::{Parser, Subcommand};

use crate::util::{TestCounts, cargo, root_dir, run, run_tests};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "fragtrace project tasks")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install what is missing: nightly rust-src, cargo-fuzz, cargo-deny, LLVM 22, bpf-linker,
    /// qemu, busybox, test kernels.
    Setup,
    /// Build fragtrace (release) with its embedded eBPF object.
    Build,
    /// Set up, build, then run fragtrace as root with ARGS.
    Run {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Set up, then run the whole suite: lint, unit, root integration, short fuzz, VM matrix.
    /// Ends with every skipped test and its reason, and the pass and skip counts.
    Test {
        /// Skip the VM kernel matrix.
        #[arg(long)]
        no_vm: bool,
        /// Skip the short fuzz run.
        #[arg(long)]
        no_fuzz: bool,
    },
    /// Boot test kernels in qemu and run the in-guest scenarios.
    Vmtest(vmtest::Options),
    /// Run the fuzz targets for a fixed time.
    Fuzz(fuzz::Options),
    /// Measure fragtrace's overhead on page faults, system calls and the failure path against
    /// no tracer, with per-program kernel time from bpf_stats (root).
    Bench(bench::Options),
    /// cargo fmt --check, clippy for user space and, on its own, the eBPF crate, and
    /// cargo deny (licenses, bans, sources).
    Lint,
    /// Build the daemon's OCI image FROM scratch with buildah (the binary and its libraries).
    Image(image::Options),
    /// The daemon under mixed load for MINUTES (30): memory and file descriptors must stay
    /// flat and every failure be accounted for (root). `cargo xtask test` runs 2 minutes of it.
    Soak {
        #[arg(long, default_value_t = 30)]
        minutes: u64,
    },
}

fn main() -> ExitCode {
    match try_main() {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("xtask: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn try_main() -> Result<()> {
    match Cli::parse().task {
        Task::Setup => setup::run(),
        Task::Build => build(),
        Task::Run { args } => {
            setup::run()?;
            build()?;
            let bin = root_dir().join("target/release/fragtrace");
            let mut cmd = std::process::Command::new(bin);
            cmd.args(args);
            // fragtrace's exit status is the task's.
            let status = cmd.status()?;
            std::process::exit(status.code().unwrap_or(1));
        }
        Task::Test { no_vm, no_fuzz } => test(no_vm, no_fuzz),
        Task::Vmtest(opts) => {
            setup::run()?;
            build()?;
            vmtest::run(&opts)
        }
        Task::Fuzz(opts) => {
            setup::run()?;
            fuzz::run(&opts)
        }
        Task::Bench(opts) => {
            setup::run()?;
            bench::run_bench(&opts)
        }
        Task::Lint => lint(),
        Task::Image(opts) => {
            setup::run()?;
            image::run_image(&opts)
        }
        Task::Soak { minutes } => {
            setup::run()?;
            build()?;
            run(cargo()
                .args([
                    "test",
                    "--release",
                    "--package",
                    "fragtrace-tests",
                    "--test",
                    "soak",
                    "--",
                    "--ignored",
                    "--nocapture",
                    "soak_long",
                ])
                .env("FRAGTRACE_SOAK_MINUTES", minutes.to_string())
                .env("FRAGTRACE_BIN", root_dir().join("target/release/fragtrace")))
        }
    }
}

fn build() -> Result<()> {
    run(cargo().args(["build", "--release", "--package", "fragtrace"]))
}

fn test(no_vm: bool, no_fuzz: bool) -> Result<()> {
    let started = std::time::Instant::now();
    // Tests that skip append `test: reason` here (fragtrace_tests::skip); cargo would count them
    // as passed and hide why.
    let skip_log = root_dir().join("target/xtask-test-skips.log");
    let _ = std::fs::remove_file(&skip_log);
    let mut counts = TestCounts::default();
    let result = test_stages(no_vm, no_fuzz, &skip_log, &mut counts);
    let skips: Vec<String> = std::fs::read_to_string(&skip_log)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect();
    for skip in &skips {
        eprintln!("xtask test: SKIPPED {skip}");
    }
    let skipped = skips.len() as u64;
    eprintln!(
        "xtask test: {} tests passed, {skipped} skipped, {} ignored (#[ignore]: run by hand)",
        counts.passed.saturating_sub(skipped),
        counts.ignored
    );
    result?;
    eprintln!("xtask test: all stages passed in {:.0?}", started.elapsed());
    Ok(())
}

/// Every stage in order; `counts` sums what libtest reported (skipped tests count as passed).
fn test_stages(no_vm: bool, no_fuzz: bool, skip_log: &Path, counts: &mut TestCounts) -> Result<()> {
    setup::run()?;
    lint()?;
    build()?;
    // Unit tests of every crate, with overflow checks on (profile `checked` in Cargo.toml); they
    // do not need the eBPF object.
    run_tests(
        cargo()
            .args([
                "test",
                "--profile",
                "checked",
                "--workspace",
                "--exclude",
                "fragtrace-tests",
                "--exclude",
                "fragtrace-ebpf",
            ])
            .env("AYA_BUILD_SKIP", "1")
            .env("FRAGTRACE_SKIP_LOG", skip_log),
        counts,
    )?;
    // Root integration tests: real programs on this kernel, one at a time. The container
    // tests run the images built here.
    let images = test_images()?;
    run_tests(
        cargo()
            .args([
                "test",
                "--release",
                "--package",
                "fragtrace-tests",
                "--",
                "--test-threads=1",
            ])
            .env("FRAGTRACE_BIN", root_dir().join("target/release/fragtrace"))
            .env("FRAGTRACE_SKIP_LOG", skip_log)
            .envs(images),
        counts,
    )?;
    if !no_fuzz {
        fuzz::run(&fuzz::Options::short())?;
    }
    if !no_vm {
        vmtest::run(&vmtest::Options::all())?;
    }
    Ok(())
}

/// The daemon's image and the memory-cgroup workload's, for the container tests, as the
/// environment that names them.
fn test_images() -> Result<Vec<(&'static str, String)>> {
    run(cargo().args([
        "build",
        "--release",
        "--package",
        "fragtrace-tests",
        "--bins",
    ]))?;
    let release = root_dir().join("target/release");
    let daemon = "localhost/fragtrace:test";
    let workload = "localhost/fragtrace-pipe-pressure:test";
    image::build(&release.join("fragtrace"), daemon, &["daemon"])?;
    image::build(&release.join("pipe-pressure"), workload, &[])?;
    Ok(vec![
        ("FRAGTRACE_IMAGE", daemon.into()),
        ("FRAGTRACE_WORKLOAD_IMAGE", workload.into()),
    ])
}

/// Formatting, clippy (user space, then the eBPF crate on its own), and cargo deny.
fn lint() -> Result<()> {
    setup::ensure_cargo_deny()?;
    run(cargo().args(["fmt", "--all", "--", "--check"]))?;
    // User space; the eBPF crate builds only for the BPF target and is linted on its own below.
    // Clippy needs no eBPF object.
    run(cargo()
        .args([
            "clippy",
            "--workspace",
            "--exclude",
            "fragtrace-ebpf",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ])
        .env("AYA_BUILD_SKIP", "1"))?;
    let ebpf = root_dir().join("fragtrace-ebpf");
    run(std::process::Command::new("cargo").current_dir(ebpf).args([
        "+nightly",
        "clippy",
        "--release",
        "--target",
        "bpfel-unknown-none",
        "-Z",
        "build-std=core",
        "--",
        "-D",
        "warnings",
    ]))?;
    // deny.toml: licenses, banned crates and sources. Not advisories: their database cannot be
    // fetched from these machines.
    run(cargo().args([
        "deny",
        "check",
        "--hide-inclusion-graph",
        "licenses",
        "bans",
        "sources",
    ]))
}
