//! `cargo xtask image`: a minimal OCI image of the daemon, FROM scratch: the release binary and
//! the shared libraries it links (as `ldd` lists them), nothing else, built with buildah from
//! Debian's packages. `cargo xtask test` builds one of fragtrace and one of the memory-cgroup
//! workload for the container tests.
use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, bail};

use crate::util::{output, root_dir, run};

pub const DEFAULT_TAG: &str = "localhost/fragtrace:latest";

#[derive(clap::Args)]
pub struct Options {
    /// The image's name and tag.
    #[arg(long, default_value = DEFAULT_TAG)]
    pub tag: String,
    /// Package this binary instead of fragtrace's release build (a test workload, say).
    #[arg(long, value_name = "PATH")]
    pub binary: Option<PathBuf>,
}

pub fn run_image(opts: &Options) -> Result<()> {
    let (bin, cmd): (PathBuf, &[&str]) = match &opts.binary {
        Some(b) => (b.clone(), &[]),
        None => {
            crate::build()?;
            (root_dir().join("target/release/fragtrace"), &["daemon"])
        }
    };
    build(&bin, &opts.tag, cmd)?;
    eprintln!("xtask image: built {}", opts.tag);
    Ok(())
}

/// The containers.conf that podman and buildah need on these machines: runc (crun refuses
/// the hybrid cgroup layout) and no default ulimits (the sandbox forbids raising them).
pub fn containers_conf() -> PathBuf {
    root_dir().join("tests/fixtures/containers.conf")
}

/// A command of the container tools with that configuration.
pub fn container_tool(tool: &str) -> Command {
    let mut cmd = Command::new(tool);
    cmd.env("CONTAINERS_CONF", containers_conf());
    cmd
}

/// Builds `tag` FROM scratch: `binary` at `/NAME` as the entrypoint, `cmd` its default
/// arguments, and the shared libraries it links at their paths.
pub fn build(binary: &Path, tag: &str, cmd: &[&str]) -> Result<()> {
    let name = binary
        .file_name()
        .and_then(|n| n.to_str())
        .context("binary without a file name")?;
    let rootfs = root_dir().join("target/image").join(name);
    let _ = fs::remove_dir_all(&rootfs);
    fs::create_dir_all(&rootfs)?;
    fs::copy(binary, rootfs.join(name))
        .with_context(|| format!("cannot copy {}", binary.display()))?;
    for lib in linked_libraries(binary)? {
        let dest = rootfs.join(lib.strip_prefix("/").unwrap_or(&lib));
        fs::create_dir_all(dest.parent().expect("a library path has a parent"))?;
        // fs::copy follows symlinks: the image gets the library itself under the linked name.
        fs::copy(&lib, &dest).with_context(|| format!("cannot copy {}", lib.display()))?;
    }
    let container = output(container_tool("buildah").args(["from", "scratch"]))?;
    let container = container.trim();
    let json = |args: &[&str]| serde_json::to_string(args).expect("strings serialize");
    let entrypoint = format!("/{name}");
    let steps: &[Vec<String>] = &[
        vec![
            "copy".into(),
            container.into(),
            format!("{}/", rootfs.display()),
            "/".into(),
        ],
        vec![
            "config".into(),
            "--entrypoint".into(),
            json(&[&entrypoint]),
            "--cmd".into(),
            json(cmd),
            "--label".into(),
            "org.opencontainers.image.title=fragtrace".into(),
            "--label".into(),
            "org.opencontainers.image.licenses=MIT OR Apache-2.0".into(),
            container.into(),
        ],
        vec![
            "commit".into(),
            "--rm".into(),
            "--quiet".into(),
            container.into(),
            tag.into(),
        ],
    ];
    for step in steps {
        if let Err(e) = run(container_tool("buildah").args(step)) {
            let _ = run(container_tool("buildah").args(["rm", container]));
            return Err(e);
        }
    }
    Ok(())
}

/// The shared libraries `binary` loads, dynamic loader included, from `ldd`.
fn linked_libraries(binary: &Path) -> Result<Vec<PathBuf>> {
    let out = Command::new("ldd")
        .arg(binary)
        .output()
        .context("cannot run ldd")?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        // A static binary needs nothing beside it.
        if String::from_utf8_lossy(&out.stderr).contains("not a dynamic executable")
            || text.contains("not a dynamic executable")
        {
            return Ok(Vec::new());
        }
        bail!("ldd {} failed ({})", binary.display(), out.status);
    }
    let mut libs = Vec::new();
    for line in text.lines() {
        // `libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)`, `/lib64/ld-linux-x86-64.so.2
        // (0x...)`; the vDSO has no file.
        let path = match line.split_once("=>") {
            Some((_, right)) => right.split_whitespace().next(),
            None => line.split_whitespace().next(),
        };
        match path {
            Some(p) if p.starts_with('/') => libs.push(PathBuf::from(p)),
            Some("not") => bail!("{}: a library is missing: {line}", binary.display()),
            _ => {}
        }
    }
    Ok(libs)
}
