//! `cargo xtask setup`: installs what is missing, and only that. Idempotent: on a machine that has
//! everything it runs a few quick checks and returns.
use std::process::Command;

use anyhow::{Context, Result};

use crate::util::{output, run as run_cmd, succeeds};

/// Debian packages: LLVM 22 for bpf-linker, qemu and busybox for the VM matrix.
const APT_PACKAGES: &[&str] = &[
    "llvm-22-dev",
    "libpolly-22-dev",
    "libzstd-dev",
    "zlib1g-dev",
    "qemu-system-x86",
    "busybox-static",
    "cpio",
    // The daemon's tests: a real Prometheus and promtool, and podman/buildah/runc for the image.
    "prometheus",
    "podman",
    "buildah",
    "runc",
    // Real consumers and peers in the tests: bpftool lists what is loaded, bpftrace runs
    // beside fragtrace on the same tracepoints.
    "bpftool",
    "bpftrace",
    // cargo xtask bench compares fragtrace with `perf record` and `perf kmem record`.
    "linux-perf",
    // setcap: the daemon's test as a non-root user with file capabilities.
    "libcap2-bin",
    // The VM matrix's test module, built against each guest kernel's headers.
    "make",
    "gcc",
];
/// From PyPI: the daemon's Kubernetes manifests are validated against the API's schemas.
const PIP_PACKAGES: &[&str] = &["kubernetes-validate"];
const BPF_LINKER_VERSION: &str = "0.13";

pub fn run() -> Result<()> {
    let started = std::time::Instant::now();
    ensure_nightly()?;
    ensure_rust_src()?;
    ensure_cargo_fuzz()?;
    ensure_cargo_deny()?;
    ensure_apt_packages()?;
    ensure_pip_packages()?;
    ensure_bpf_linker()?;
    ensure_inferno()?;
    crate::vmtest::ensure_kernels()?;
    eprintln!("xtask setup: ready in {:.1?}", started.elapsed());
    Ok(())
}

/// The nightly toolchain builds the eBPF crate (with rust-src) and runs cargo-fuzz.
fn ensure_nightly() -> Result<()> {
    if succeeds(Command::new("rustup").args(["run", "nightly", "rustc", "--version"])) {
        return Ok(());
    }
    eprintln!("xtask setup: installing the nightly toolchain");
    run_cmd(Command::new("rustup").args([
        "toolchain",
        "install",
        "nightly",
        "--profile",
        "minimal",
    ]))
}

fn ensure_rust_src() -> Result<()> {
    let installed = output(Command::new("rustup").args([
        "component",
        "list",
        "--installed",
        "--toolchain",
        "nightly",
    ]))
    .unwrap_or_default();
    if installed.lines().any(|l| l.starts_with("rust-src")) {
        return Ok(());
    }
    eprintln!("xtask setup: installing nightly rust-src");
    run_cmd(Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", "nightly"]))
}

fn ensure_cargo_fuzz() -> Result<()> {
    if succeeds(crate::fuzz::nightly_cargo().args(["fuzz", "--version"])) {
        return Ok(());
    }
    eprintln!("xtask setup: installing cargo-fuzz");
    run_cmd(Command::new("cargo").args(["install", "cargo-fuzz", "--locked"]))
        .context("cannot install cargo-fuzz")
}

/// `cargo deny`, for `cargo xtask lint` (licenses, bans, sources).
pub fn ensure_cargo_deny() -> Result<()> {
    if succeeds(Command::new("cargo").args(["deny", "--version"])) {
        return Ok(());
    }
    eprintln!("xtask setup: installing cargo-deny");
    run_cmd(Command::new("cargo").args(["install", "cargo-deny", "--locked"]))
        .context("cannot install cargo-deny")
}

fn ensure_apt_packages() -> Result<()> {
    let missing: Vec<&str> = APT_PACKAGES
        .iter()
        .copied()
        .filter(|pkg| !dpkg_installed(pkg))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("xtask setup: installing {}", missing.join(" "));
    run_cmd(Command::new("apt-get").arg("update").arg("-qq"))?;
    run_cmd(
        Command::new("apt-get")
            .args(["install", "-y", "-qq", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
    .context("apt-get install (setup must run as root)")
}

fn dpkg_installed(pkg: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", pkg])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
}

fn ensure_bpf_linker() -> Result<()> {
    let version = Command::new("bpf-linker").arg("--version").output();
    if let Ok(v) = &version {
        let v = String::from_utf8_lossy(&v.stdout);
        if v.contains(&format!("bpf-linker {BPF_LINKER_VERSION}")) {
            return Ok(());
        }
    }
    eprintln!(
        "xtask setup: building bpf-linker {BPF_LINKER_VERSION} against LLVM 22 (about two minutes)"
    );
    run_cmd(
        Command::new("cargo")
            .args([
                "install",
                "bpf-linker",
                "--version",
                &format!("~{BPF_LINKER_VERSION}"),
                "--no-default-features",
                "--features",
                "llvm-22",
            ])
            .env("LLVM_PREFIX", "/usr/lib/llvm-22"),
    )?;
    anyhow::ensure!(
        succeeds(Command::new("bpf-linker").arg("--version")),
        "bpf-linker installed but not on PATH: add ~/.cargo/bin to PATH"
    );
    Ok(())
}

fn ensure_pip_packages() -> Result<()> {
    let missing: Vec<&str> = PIP_PACKAGES
        .iter()
        .copied()
        .filter(|pkg| !succeeds(Command::new("python3").args(["-m", "pip", "show", pkg])))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("xtask setup: installing {} from PyPI", missing.join(" "));
    run_cmd(
        Command::new("python3")
            .args(["-m", "pip", "install", "--quiet"])
            .args(&missing),
    )
    .context("pip install")
}

/// inferno's `inferno-flamegraph`, the real consumer the flamegraph tests feed.
fn ensure_inferno() -> Result<()> {
    // It has no --version: --help is the cheap probe.
    if succeeds(Command::new("inferno-flamegraph").arg("--help")) {
        return Ok(());
    }
    eprintln!("xtask setup: installing inferno (flamegraph tools)");
    run_cmd(Command::new("cargo").args(["install", "inferno", "--locked"]))
        .context("cannot install inferno")
}
