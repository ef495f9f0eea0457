//! The guest's initramfs: an uncompressed newc cpio archive written here (no host cpio needed)
//! with busybox-static, the init script, the fragtrace binary with the shared libraries `ldd`
//! lists, and the static frag-scenario program.
use std::{
    collections::BTreeSet,
    fs,
    io::Write,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, bail};

/// A cpio newc archive being built in memory.
#[derive(Default)]
pub struct Cpio {
    buf: Vec<u8>,
    ino: u32,
    dirs: BTreeSet<String>,
}

impl Cpio {
    fn entry(&mut self, name: &str, mode: u32, data: &[u8]) {
        self.ino += 1;
        let namesize = name.len() + 1;
        let header = format!(
            "070701{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}",
            self.ino,
            mode,
            0,
            0,
            1,
            0,
            data.len(),
            0,
            0,
            0,
            0,
            namesize,
            0
        );
        self.buf.extend_from_slice(header.as_bytes());
        self.buf.extend_from_slice(name.as_bytes());
        self.buf.push(0);
        self.pad();
        self.buf.extend_from_slice(data);
        self.pad();
    }

    fn pad(&mut self) {
        while !self.buf.len().is_multiple_of(4) {
            self.buf.push(0);
        }
    }

    /// A directory and its parents, once each. `path` has no leading slash.
    pub fn dir(&mut self, path: &str) {
        let mut acc = String::new();
        for part in path.split('/').filter(|p| !p.is_empty()) {
            if !acc.is_empty() {
                acc.push('/');
            }
            acc.push_str(part);
            if self.dirs.insert(acc.clone()) {
                let name = acc.clone();
                self.entry(&name, 0o040755, &[]);
            }
        }
    }

    /// A regular file at `path` (absolute or not), with its parent directories.
    pub fn file(&mut self, path: &str, mode: u32, data: &[u8]) {
        let path = path.trim_start_matches('/');
        if let Some((parent, _)) = path.rsplit_once('/') {
            self.dir(parent);
        }
        self.entry(path, 0o100000 | mode, data);
    }

    /// A host file copied in (symlinks followed) at `path`.
    pub fn copy(&mut self, host: &Path, path: &str) -> Result<()> {
        let data = fs::read(host).with_context(|| format!("reading {}", host.display()))?;
        self.file(path, 0o755, &data);
        Ok(())
    }

    pub fn finish(mut self) -> Vec<u8> {
        self.entry("TRAILER!!!", 0, &[]);
        while !self.buf.len().is_multiple_of(512) {
            self.buf.push(0);
        }
        self.buf
    }
}

/// The shared libraries and the loader a dynamically linked binary needs, from `ldd`.
/// Empty for a static binary.
pub fn shared_libs(bin: &Path) -> Result<Vec<PathBuf>> {
    let out = Command::new("ldd").arg(bin).output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let err = String::from_utf8_lossy(&out.stderr);
    if [&text, &err]
        .iter()
        .any(|t| t.contains("not a dynamic executable") || t.contains("statically linked"))
    {
        return Ok(Vec::new());
    }
    if !out.status.success() {
        bail!("ldd {} failed: {err}", bin.display());
    }
    let mut libs = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" or "/lib64/ld-linux-x86-64.so.2 (0x...)"
        let path = match line.split_once("=>") {
            Some((_, rest)) => rest.split_whitespace().next(),
            None => line.split_whitespace().next(),
        };
        match path {
            Some(p) if p.starts_with('/') => libs.push(PathBuf::from(p)),
            Some("not") => bail!("ldd {}: {line}", bin.display()),
            _ => {} // linux-vdso.so.1
        }
    }
    Ok(libs)
}

/// What goes into the guest.
pub struct Contents<'a> {
    pub busybox: &'a Path,
    pub fragtrace: Option<&'a Path>,
    pub scenario: &'a Path,
    pub init: &'a str,
    /// Test modules, each under /lib/modules/RELEASE/ for the kernel release it was built for.
    pub modules: Vec<(String, PathBuf)>,
}

pub fn build(c: &Contents, out: &Path) -> Result<u64> {
    let mut cpio = Cpio::default();
    for d in [
        "bin", "sbin", "dev", "proc", "sys", "tmp", "run", "etc", "root", "usr/bin", "usr/sbin",
    ] {
        cpio.dir(d);
    }
    cpio.file("init", 0o755, c.init.as_bytes());
    cpio.copy(c.busybox, "bin/busybox")?;
    cpio.copy(c.scenario, "bin/frag-scenario")?;
    let mut libs = shared_libs(c.scenario)?;
    if let Some(ft) = c.fragtrace {
        cpio.copy(ft, "bin/fragtrace")?;
        libs.extend(shared_libs(ft)?);
    }
    for (release, module) in &c.modules {
        let dir = format!("lib/modules/{release}");
        cpio.dir(&dir);
        let name = module
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("test.ko");
        cpio.copy(module, &format!("{dir}/{name}"))?;
    }
    libs.sort();
    libs.dedup();
    for lib in &libs {
        cpio.copy(lib, &lib.display().to_string())?;
    }
    // /etc/passwd and group keep tools that look users up quiet.
    cpio.file("etc/passwd", 0o644, b"root:x:0:0:root:/root:/bin/sh\n");
    cpio.file("etc/group", 0o644, b"root:x:0:\n");
    let bytes = cpio.finish();
    let tmp = out.with_extension("tmp");
    fs::File::create(&tmp)?.write_all(&bytes)?;
    fs::rename(&tmp, out)?;
    Ok(bytes.len() as u64)
}

/// Checks busybox is the static one (the guest has no libc for a dynamic busybox).
pub fn static_busybox() -> Result<PathBuf> {
    for p in ["/bin/busybox", "/usr/bin/busybox"] {
        let p = PathBuf::from(p);
        if p.exists() && shared_libs(&p)?.is_empty() {
            return Ok(p);
        }
    }
    bail!("no static busybox: install busybox-static (cargo xtask setup does)")
}
