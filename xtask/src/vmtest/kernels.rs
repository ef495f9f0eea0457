//! The test kernels: Debian cloud images fetched with `apt-get download` through a private apt
//! configuration under `target/vmtest/apt/` (its own sources list, lists and cache, so the host's
//! apt state is neither needed nor touched), and their vmlinuz extracted with `dpkg-deb`.
use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, bail};

use crate::util::{output, root_dir, run};

/// One kernel of the matrix.
pub struct Kernel {
    /// What `--kernel` takes: 5.10, 6.1, 6.12.
    pub name: &'static str,
    /// The image package tried first.
    pub pinned: &'static str,
    /// When the pinned package has left the archive: the newest package whose name starts with
    /// this prefix and ends with `suffix`.
    pub prefix: &'static str,
    pub suffix: &'static str,
}

pub const KERNELS: &[Kernel] = &[
    Kernel {
        name: "5.10",
        pinned: "linux-image-5.10.0-32-cloud-amd64",
        prefix: "linux-image-5.10.0-",
        suffix: "-cloud-amd64",
    },
    Kernel {
        name: "6.1",
        pinned: "linux-image-6.1.0-50-cloud-amd64",
        prefix: "linux-image-6.1.0-",
        suffix: "-cloud-amd64",
    },
    Kernel {
        name: "6.12",
        pinned: "linux-image-6.12.117+deb12-cloud-amd64",
        prefix: "linux-image-6.12.",
        suffix: "+deb12-cloud-amd64",
    },
];

const SOURCES: &str = "\
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian bookworm main
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian-security bookworm-security main
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian bullseye main
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian-security bullseye-security main
";

pub fn vmtest_dir() -> PathBuf {
    root_dir().join("target/vmtest")
}

/// Where a kernel's extracted files live.
pub fn kernel_dir(k: &Kernel) -> PathBuf {
    vmtest_dir().join("kernels").join(k.name)
}

pub fn vmlinuz(k: &Kernel) -> PathBuf {
    kernel_dir(k).join("vmlinuz")
}

/// The package a cached kernel came from (written after a complete extraction).
pub fn package_of(k: &Kernel) -> Option<String> {
    fs::read_to_string(kernel_dir(k).join("package"))
        .ok()
        .map(|s| s.trim().to_string())
}

pub fn find(name: &str) -> Result<&'static Kernel> {
    KERNELS.iter().find(|k| k.name == name).with_context(|| {
        let names: Vec<_> = KERNELS.iter().map(|k| k.name).collect();
        format!(
            "unknown kernel {name:?}: expected {} or all",
            names.join(", ")
        )
    })
}

/// The test module built for a kernel (tests/kmod), and the release it was built for.
pub fn test_module(k: &Kernel) -> (PathBuf, Option<String>) {
    let dir = kernel_dir(k);
    let release = fs::read_to_string(dir.join("module-release"))
        .ok()
        .map(|s| s.trim().to_string());
    (dir.join(TEST_MODULE), release)
}

const TEST_MODULE: &str = "fragtrace_slab_fail.ko";
/// The module's source files, under tests/kmod.
const TEST_MODULE_SOURCES: [&str; 2] = ["Kbuild", "fragtrace_slab_fail.c"];

/// Fetches and extracts every kernel that is not cached yet, and builds the test module for
/// each. With all cached it only stats files.
pub fn ensure(kernels: &[&Kernel]) -> Result<()> {
    ensure_images(kernels)?;
    for k in kernels {
        ensure_test_module(k)?;
    }
    Ok(())
}

fn ensure_images(kernels: &[&Kernel]) -> Result<()> {
    let missing: Vec<&&Kernel> = kernels.iter().filter(|k| package_of(k).is_none()).collect();
    if missing.is_empty() {
        return Ok(());
    }
    let apt = Apt::new()?;
    apt.update()?;
    for k in missing {
        let pkg = apt.resolve(k)?;
        eprintln!("xtask vmtest: fetching {pkg} for kernel {}", k.name);
        let debs = vmtest_dir().join("apt/debs");
        fs::create_dir_all(&debs)?;
        run(apt
            .cmd("apt-get")
            .current_dir(&debs)
            .args(["-q", "download", &pkg]))?;
        let deb = fs::read_dir(&debs)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(&format!("{pkg}_")) && n.ends_with(".deb"))
            })
            .with_context(|| {
                format!("apt-get download {pkg} left no .deb in {}", debs.display())
            })?;
        extract(k, &pkg, &deb)?;
    }
    Ok(())
}

/// Builds tests/kmod against the kernel's own Debian headers (fetched once: the headers package
/// of the image, its -common package and its kbuild tools), unless the module on disk was built
/// from the same source.
fn ensure_test_module(k: &Kernel) -> Result<()> {
    let image = package_of(k).context("kernel image not fetched")?;
    let release = image
        .strip_prefix("linux-image-")
        .with_context(|| format!("{image} is not a linux-image package"))?
        .to_string();
    let src = root_dir().join("tests/kmod");
    let mut stamp = format!("{release}\n");
    for name in TEST_MODULE_SOURCES {
        stamp += &fs::read_to_string(src.join(name))
            .with_context(|| format!("cannot read {}", src.join(name).display()))?;
    }
    let dir = kernel_dir(k);
    let (module, _) = test_module(k);
    if module.exists() && fs::read_to_string(dir.join("module-source")).ok() == Some(stamp.clone())
    {
        return Ok(());
    }
    let headers_root = dir.join("headers");
    let headers = headers_root.join(format!("usr/src/linux-headers-{release}"));
    if !headers.join("Makefile").exists() {
        fetch_headers(&release, &headers_root)?;
    }
    let build = dir.join("kmod-build");
    let _ = fs::remove_dir_all(&build);
    fs::create_dir_all(&build)?;
    for name in TEST_MODULE_SOURCES {
        fs::copy(src.join(name), build.join(name))?;
    }
    eprintln!("xtask vmtest: building the test module for {release}");
    run(Command::new("make")
        .arg("-s")
        .arg("-C")
        .arg(&headers)
        .arg(format!("M={}", build.display()))
        // The host's gcc, not the exact one the kernel was built with (Debian's 5.10 wants
        // gcc-10); module BTF needs pahole and the kernel's vmlinux, which nothing here has.
        .args(["CC=gcc", "CONFIG_DEBUG_INFO_BTF_MODULES=", "modules"]))
    .with_context(|| format!("building tests/kmod for {release}"))?;
    fs::copy(build.join(TEST_MODULE), &module)?;
    fs::write(dir.join("module-release"), format!("{release}\n"))?;
    fs::write(dir.join("module-source"), stamp)?;
    let _ = fs::remove_dir_all(&build);
    Ok(())
}

/// Downloads and extracts the headers of `release` and the packages they need to build a
/// module (-common, kbuild) into `root`; points the arch Makefile at the extracted -common.
fn fetch_headers(release: &str, root: &Path) -> Result<()> {
    let apt = Apt::new()?;
    let pkg = format!("linux-headers-{release}");
    let depends = |apt: &Apt| -> Result<Vec<String>> {
        let text = output(apt.cmd("apt-cache").args(["depends", &pkg]))?;
        Ok(text
            .lines()
            .filter_map(|l| l.trim().trim_start_matches('|').strip_prefix("Depends: "))
            .filter(|d| d.starts_with("linux-headers-") || d.starts_with("linux-kbuild-"))
            .map(str::to_string)
            .collect())
    };
    let mut needed = depends(&apt).unwrap_or_default();
    if needed.is_empty() {
        apt.update()?;
        needed = depends(&apt)?;
    }
    needed.push(pkg.clone());
    eprintln!("xtask vmtest: fetching {}", needed.join(" "));
    let debs = vmtest_dir().join("apt/headers-debs");
    let _ = fs::remove_dir_all(&debs);
    fs::create_dir_all(&debs)?;
    run(apt
        .cmd("apt-get")
        .current_dir(&debs)
        .args(["-q", "download"])
        .args(&needed))?;
    let tmp = root.with_extension("tmp");
    let _ = fs::remove_dir_all(&tmp);
    fs::create_dir_all(&tmp)?;
    for e in fs::read_dir(&debs)? {
        run(Command::new("dpkg-deb").arg("-x").arg(e?.path()).arg(&tmp))?;
    }
    // `include /usr/src/linux-headers-...-common/Makefile`: the extracted copy instead.
    let makefile = tmp.join(format!("usr/src/{pkg}/Makefile"));
    let text = fs::read_to_string(&makefile).with_context(|| format!("{} has no Makefile", pkg))?;
    fs::write(
        &makefile,
        text.replace(
            "include /usr/src/",
            &format!("include {}/usr/src/", root.display()),
        ),
    )?;
    let _ = fs::remove_dir_all(root);
    fs::rename(&tmp, root)?;
    fs::remove_dir_all(&debs)?;
    Ok(())
}

/// Extracts /boot (vmlinuz and config) from the package into the kernel's directory.
fn extract(k: &Kernel, pkg: &str, deb: &Path) -> Result<()> {
    let dir = kernel_dir(k);
    let tmp = dir.with_extension("tmp");
    let _ = fs::remove_dir_all(&tmp);
    fs::create_dir_all(&tmp)?;
    run(Command::new("dpkg-deb").arg("-x").arg(deb).arg(&tmp))?;
    let boot = tmp.join("boot");
    let mut vmlinuz = None;
    let mut config = None;
    for e in fs::read_dir(&boot).with_context(|| format!("{} has no /boot", deb.display()))? {
        let p = e?.path();
        let n = p.file_name().unwrap().to_string_lossy().into_owned();
        if n.starts_with("vmlinuz-") {
            vmlinuz = Some(p);
        } else if n.starts_with("config-") {
            config = Some(p);
        }
    }
    let vmlinuz = vmlinuz.with_context(|| format!("no vmlinuz in {}", deb.display()))?;
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir)?;
    fs::copy(&vmlinuz, dir.join("vmlinuz"))?;
    if let Some(c) = config {
        fs::copy(&c, dir.join("config"))?;
    }
    // Written last: its presence means the cache is complete.
    fs::write(dir.join("package"), format!("{pkg}\n"))?;
    fs::remove_dir_all(&tmp)?;
    Ok(())
}

struct Apt {
    opts: Vec<String>,
}

impl Apt {
    fn new() -> Result<Self> {
        let dir = vmtest_dir().join("apt");
        for sub in ["lists/partial", "cache/archives/partial", "sourceparts"] {
            fs::create_dir_all(dir.join(sub))?;
        }
        let sources = dir.join("sources.list");
        fs::write(&sources, SOURCES)?;
        let d = |s: &str| dir.join(s).display().to_string();
        Ok(Self {
            opts: vec![
                format!("Dir::Etc::sourcelist={}", sources.display()),
                format!("Dir::Etc::sourceparts={}", d("sourceparts")),
                format!("Dir::State::Lists={}", d("lists")),
                format!("Dir::Cache={}", d("cache")),
                "Acquire::Languages=none".into(),
                // The downloads go to target/, which the _apt user may not be able to write.
                "APT::Sandbox::User=root".into(),
            ],
        })
    }

    fn cmd(&self, prog: &str) -> Command {
        let mut c = Command::new(prog);
        for o in &self.opts {
            c.arg("-o").arg(o);
        }
        c
    }

    fn update(&self) -> Result<()> {
        run(self.cmd("apt-get").args(["-q", "update"])).context("apt-get update (private lists)")
    }

    /// The pinned package if the archive still has it, else the newest of the same series.
    fn resolve(&self, k: &Kernel) -> Result<String> {
        let names = output(self.cmd("apt-cache").args(["pkgnames", k.prefix]))?;
        let mut cands: Vec<&str> = names
            .lines()
            .map(str::trim)
            .filter(|n| n.ends_with(k.suffix) && !n.contains("-dbg"))
            .collect();
        if cands.contains(&k.pinned) {
            return Ok(k.pinned.to_string());
        }
        cands.sort_by_key(|n| version_key(n));
        match cands.last() {
            Some(n) => {
                eprintln!(
                    "xtask vmtest: {} is no longer in the archive, using {n}",
                    k.pinned
                );
                Ok(n.to_string())
            }
            None => bail!(
                "no package {}*{} in bookworm/bullseye (private apt lists under {})",
                k.prefix,
                k.suffix,
                vmtest_dir().join("apt").display()
            ),
        }
    }
}

/// The numbers in a package name, to order 6.12.9 before 6.12.117.
fn version_key(name: &str) -> Vec<u64> {
    name.split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .filter_map(|s| s.parse().ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newer_abi_sorts_last() {
        let mut v = [
            "linux-image-6.12.117+deb12-cloud-amd64",
            "linux-image-6.12.9+deb12-cloud-amd64",
            "linux-image-6.12.43+deb12-cloud-amd64",
        ];
        v.sort_by_key(|n| version_key(n));
        assert_eq!(v.last().unwrap(), &"linux-image-6.12.117+deb12-cloud-amd64");
    }
}
