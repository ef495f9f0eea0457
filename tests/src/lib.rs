//! Helpers for fragtrace's root integration tests: run the real binary, provoke real kernel
//! behaviour, and always clean up (guards restore on drop, also when a test panics).
use std::{
    io::{BufRead, BufReader, Read, Write},
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use serde_json::Value;

pub mod daemon;

/// The fragtrace binary under test: $FRAGTRACE_BIN (set by `cargo xtask test`), else the
/// release build in this workspace.
pub fn fragtrace_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("FRAGTRACE_BIN") {
        return p.into();
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    root.join("target/release/fragtrace")
}

/// `fragtrace probes --json`, parsed.
pub fn probes_json() -> Value {
    let out = Command::new(fragtrace_bin())
        .args(["probes", "--json"])
        .output()
        .expect("run fragtrace probes");
    assert!(
        out.status.success(),
        "probes failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("probes --json is JSON")
}

/// Records that `test` is skipped and why: `SKIPPED <test>: <reason>` on stderr, and one line in
/// the file named by `FRAGTRACE_SKIP_LOG` when set. `cargo xtask test` sets it, then lists and
/// counts the skips, since cargo shows a skipped test as passed and hides its output. Call it
/// at most once per test, then return.
pub fn skip(test: &str, reason: &str) {
    let reason = reason.replace('\n', " ");
    eprintln!("SKIPPED {test}: {reason}");
    if let Some(log) = std::env::var_os("FRAGTRACE_SKIP_LOG") {
        let line = format!("{test}: {reason}\n");
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .and_then(|mut f| f.write_all(line.as_bytes()))
            .unwrap_or_else(|e| panic!("FRAGTRACE_SKIP_LOG {}: {e}", log.to_string_lossy()));
    }
}

/// The running test's name: libtest names each test's thread after it. For the guards below,
/// which skip on behalf of the test that made them.
pub fn current_test() -> String {
    std::thread::current()
        .name()
        .unwrap_or("unnamed test")
        .to_string()
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// True when running as root; otherwise skips `test`.
pub fn is_root_or_skip(test: &str) -> bool {
    let root = is_root();
    if !root {
        skip(test, "needs root");
    }
    root
}

/// True when util-linux `setpriv` (to run as nobody) is installed; otherwise skips `test`.
pub fn has_setpriv(test: &str) -> bool {
    let found = Command::new("setpriv").arg("--version").output().is_ok();
    if !found {
        skip(test, "setpriv (util-linux) is not installed");
    }
    found
}

/// The running kernel's (major, minor).
pub fn kernel_version() -> (u32, u32) {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").expect("osrelease");
    let mut it = release
        .trim()
        .split(|c: char| !c.is_ascii_digit())
        .map(|n| n.parse().unwrap_or(0));
    (it.next().unwrap_or(0), it.next().unwrap_or(0))
}

/// Whether tp_btf programs can exist here, judged from the kernel alone (BTF-typed raw
/// tracepoints came in 5.5 and need the kernel's BTF), or why not.
pub fn tp_btf_supported() -> Result<(), String> {
    if !std::path::Path::new("/sys/kernel/btf/vmlinux").exists() {
        return Err("the kernel has no BTF (/sys/kernel/btf/vmlinux)".into());
    }
    let (major, minor) = kernel_version();
    if (major, minor) < (5, 5) {
        return Err(format!("kernel {major}.{minor} predates tp_btf (5.5)"));
    }
    Ok(())
}

/// The mounted tracefs (fragtrace mounts one if needed, so call this after running it).
pub fn tracefs_dir() -> PathBuf {
    ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"]
        .into_iter()
        .map(PathBuf::from)
        .find(|d| d.join("events").is_dir())
        .expect("no tracefs mounted")
}

/// A running `fragtrace --json` whose stdout is collected line by line.
pub struct Tracer {
    child: Child,
    lines: mpsc::Receiver<String>,
    stdout: std::thread::JoinHandle<()>,
    stderr: std::thread::JoinHandle<String>,
    /// Set while nothing reads standard output (a reader that stopped): the pipe fills up.
    hold: Option<mpsc::Sender<()>>,
}

impl Tracer {
    /// Starts fragtrace with `args` (plus --json) and waits until its hooks are attached.
    pub fn start(args: &[&str]) -> Self {
        Self::start_command(&[], args)
    }

    /// Starts `fragtrace SUBCOMMAND... --json ARGS...` (`record -o FILE`, say) and waits until
    /// its hooks are attached.
    pub fn start_command(subcommand: &[&str], args: &[&str]) -> Self {
        Self::spawn(subcommand, args, false)
    }

    /// Like [`Tracer::start`], but nothing reads fragtrace's standard output until it is
    /// stopped: the pipe fills and stays full, as with a reader that hangs.
    pub fn start_unread(args: &[&str]) -> Self {
        Self::spawn(&[], args, true)
    }

    fn spawn(subcommand: &[&str], args: &[&str], unread: bool) -> Self {
        let mut child = Command::new(fragtrace_bin())
            .args(subcommand)
            .arg("--json")
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn fragtrace");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        let (hold, held) = mpsc::channel::<()>();
        let stdout = std::thread::spawn(move || {
            if unread {
                let _ = held.recv();
            }
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        // Attachment is announced on stderr; wait for it before provoking anything.
        let mut stderr = BufReader::new(child.stderr.take().unwrap());
        let mut seen = String::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let mut line = String::new();
            if stderr.read_line(&mut line).unwrap_or(0) == 0 || Instant::now() > deadline {
                let status = child.wait().ok();
                panic!("fragtrace did not attach (status {status:?}); stderr:\n{seen}");
            }
            seen.push_str(&line);
            if line.contains("kmem:mm_page_alloc attached via")
                && let Some(i) = args.iter().position(|a| *a == "--force-method")
            {
                let want = format!("attached via {}", args[i + 1]);
                assert!(line.contains(&want), "wanted {want}: {line}");
            }
            // Printed once everything is set up: attached, locked, privileges dropped.
            if line.starts_with("fragtrace: tracing") {
                break;
            }
        }
        let stderr = std::thread::spawn(move || {
            let mut rest = String::new();
            let _ = stderr.read_to_string(&mut rest);
            seen + &rest
        });
        Self {
            child,
            lines,
            stdout,
            stderr,
            hold: unread.then_some(hold),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `signal`, waits for exit, and returns every JSON object printed, plus stderr.
    pub fn stop_with(mut self, signal: i32) -> (Vec<Value>, String) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, signal) };
        // A held output is read from now on: the summary must still come.
        if let Some(hold) = self.hold.take() {
            let _ = hold.send(());
        }
        let status = wait_timeout(&mut self.child, Duration::from_secs(30));
        let stderr = self.stderr.join().unwrap_or_default();
        // Every line, to the end of its output.
        let _ = self.stdout.join();
        assert!(
            status.success(),
            "fragtrace exited with {status}; stderr:\n{stderr}"
        );
        let events = self
            .lines
            .try_iter()
            .map(|l| serde_json::from_str(&l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
            .collect();
        (events, stderr)
    }

    pub fn stop(self) -> (Vec<Value>, String) {
        self.stop_with(libc::SIGINT)
    }
}

fn wait_timeout(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("fragtrace did not exit within {limit:?} of the signal");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A folded-stacks file's `frames;... count` lines: (stack, count).
pub fn folded(path: &str) -> Vec<(String, u64)> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{path}: {e}"))
        .lines()
        .map(|l| {
            let (stack, n) = l
                .rsplit_once(' ')
                .unwrap_or_else(|| panic!("not folded: {l}"));
            (
                stack.to_string(),
                n.parse().unwrap_or_else(|_| panic!("no count: {l}")),
            )
        })
        .collect()
}

/// The summary object (the last line).
pub fn summary(events: &[Value]) -> &Value {
    let last = events.last().expect("no output at all");
    assert_eq!(
        last["type"], "summary",
        "last line is not the summary: {last}"
    );
    last
}

pub fn of_type<'a>(events: &'a [Value], kind: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["type"] == kind).collect()
}

/// Sets a sysctl-like file and restores its old value on drop.
pub struct FileRestore {
    path: String,
    old: String,
}

impl FileRestore {
    pub fn set(path: &str, value: &str) -> Self {
        Self::try_set(path, value).unwrap_or_else(|e| panic!("{e}"))
    }

    /// The same, or why it could not be set.
    pub fn try_set(path: &str, value: &str) -> Result<Self, String> {
        let old = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
        // Some sysctls (printk_devkmsg) take a whole line: without its newline the write is EINVAL.
        std::fs::write(path, format!("{}\n", value.trim_end()))
            .map_err(|e| format!("write {path}: {e}"))?;
        Ok(Self {
            path: path.into(),
            old: old.trim().into(),
        })
    }

    /// The value it had, restored on drop.
    pub fn old(&self) -> &str {
        &self.old
    }
}

impl Drop for FileRestore {
    fn drop(&mut self) {
        if let Err(e) = std::fs::write(&self.path, format!("{}\n", self.old)) {
            eprintln!(
                "warning: could not restore {} to {}: {e}",
                self.path, self.old
            );
        }
    }
}

/// `kernel.printk_devkmsg`, which lets root write records into the kernel log at any rate.
pub const PRINTK_DEVKMSG: &str = "/proc/sys/kernel/printk_devkmsg";

/// /dev/kmsg opened for writing, with `printk_devkmsg=on` until drop: a test writes real
/// kernel-log records (as root). Skips the test, with why, where that cannot be done.
pub fn kmsg_writer(test: &str) -> Option<(std::fs::File, FileRestore)> {
    if !is_root() {
        skip(test, "needs root to write to /dev/kmsg");
        return None;
    }
    let devkmsg = match FileRestore::try_set(PRINTK_DEVKMSG, "on") {
        Ok(r) => r,
        Err(e) => {
            skip(test, &format!("cannot set {PRINTK_DEVKMSG}: {e}"));
            return None;
        }
    };
    match std::fs::OpenOptions::new().write(true).open("/dev/kmsg") {
        Ok(f) => Some((f, devkmsg)),
        Err(e) => {
            skip(test, &format!("cannot open /dev/kmsg for writing: {e}"));
            None
        }
    }
}

/// Writes a kernel log (syslog or dmesg lines) into /dev/kmsg, one record per line at level
/// warning, with the syslog prefix cut and the task `exe` renamed to `comm`.
pub fn write_kmsg(kmsg: &mut std::fs::File, log: &str, comm: &str) {
    use std::io::Write;
    for line in log.lines() {
        let msg = line
            .split_once(" kernel: ")
            .map_or(line, |(_, m)| m)
            .replace("exe:", &format!("{comm}:"));
        kmsg.write_all(format!("<4>{msg}\n").as_bytes())
            .expect("write a record to /dev/kmsg");
    }
}

/// A memory cgroup limited to `limit_bytes`, on the v1 memory controller where one is mounted,
/// else on cgroup v2 (`memory.max`). Swap is limited too where the kernel offers it, so the limit
/// holds. Its tasks are killed and the cgroup removed on drop, also when a test panics.
///
/// `FRAGTRACE_TEST_CGROUP=v1` or `=v2` forces one hierarchy (a test skips if it is unusable).
pub struct MemCgroup {
    pub dir: PathBuf,
    pub version: CgroupVersion,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CgroupVersion {
    V1,
    V2,
}

impl MemCgroup {
    /// None (the test skipped, with the reason) when no usable memory controller is mounted.
    pub fn create(name: &str, limit_bytes: u64) -> Option<Self> {
        let (version, root) = match memory_hierarchy() {
            Ok(found) => found,
            Err(why) => {
                skip(&current_test(), &why);
                return None;
            }
        };
        if version == CgroupVersion::V2 {
            // Left enabled after the test, as systemd has it: disabling it again would take
            // memory accounting from cgroups others made meanwhile.
            let control = root.join("cgroup.subtree_control");
            let enabled = std::fs::read_to_string(&control)
                .unwrap_or_else(|e| panic!("{}: {e}", control.display()));
            if !enabled.split_whitespace().any(|c| c == "memory") {
                std::fs::write(&control, "+memory")
                    .unwrap_or_else(|e| panic!("enable memory in {}: {e}", control.display()));
            }
        }
        let dir = root.join(name);
        let _ = std::fs::remove_dir(&dir);
        std::fs::create_dir(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
        let cg = Self { dir, version };
        let (limit, swap, swap_value) = match version {
            CgroupVersion::V1 => (
                "memory.limit_in_bytes",
                "memory.memsw.limit_in_bytes",
                limit_bytes,
            ),
            CgroupVersion::V2 => ("memory.max", "memory.swap.max", 0),
        };
        cg.write(limit, limit_bytes);
        // Absent without swap accounting; then there is no swap to escape to either.
        if cg.dir.join(swap).exists() {
            cg.write(swap, swap_value);
        }
        Some(cg)
    }

    fn write(&self, file: &str, value: u64) {
        let path = self.dir.join(file);
        std::fs::write(&path, value.to_string())
            .unwrap_or_else(|e| panic!("write {value} to {}: {e}", path.display()));
    }
}

impl Drop for MemCgroup {
    fn drop(&mut self) {
        if let Ok(procs) = std::fs::read_to_string(self.dir.join("cgroup.procs")) {
            for pid in procs.lines().filter_map(|p| p.parse::<i32>().ok()) {
                // SAFETY: killing leftover test workloads in our own cgroup.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
        for _ in 0..50 {
            if std::fs::remove_dir(&self.dir).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        eprintln!("warning: could not remove {}", self.dir.display());
    }
}

/// The hierarchy to make memory cgroups in, and its mount point; or why there is none.
fn memory_hierarchy() -> Result<(CgroupVersion, PathBuf), String> {
    let mounts = std::fs::read_to_string("/proc/self/mounts").map_err(|e| e.to_string())?;
    let mut v1 = None;
    let mut v2 = None;
    for line in mounts.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        let [_, target, fstype, options, ..] = f[..] else {
            continue;
        };
        match fstype {
            "cgroup" if options.split(',').any(|o| o == "memory") => {
                v1.get_or_insert(PathBuf::from(target));
            }
            "cgroup2" => {
                v2.get_or_insert(PathBuf::from(target));
            }
            _ => {}
        }
    }
    let forced = std::env::var("FRAGTRACE_TEST_CGROUP").unwrap_or_default();
    let use_v1 = match forced.as_str() {
        "v1" => true,
        "v2" => false,
        "" => v1.is_some(),
        other => panic!("FRAGTRACE_TEST_CGROUP={other}: use v1 or v2"),
    };
    if use_v1 {
        return v1
            .map(|dir| (CgroupVersion::V1, dir))
            .ok_or_else(|| "no cgroup v1 memory controller is mounted".into());
    }
    let dir = v2.ok_or("no cgroup v2 hierarchy is mounted")?;
    let controllers = std::fs::read_to_string(dir.join("cgroup.controllers")).unwrap_or_default();
    if !controllers.split_whitespace().any(|c| c == "memory") {
        return Err(format!(
            "the cgroup v2 hierarchy at {} has no memory controller (cgroup.controllers: {:?}); \
             a v1 hierarchy holds it",
            dir.display(),
            controllers.trim()
        ));
    }
    Ok((CgroupVersion::V2, dir))
}

/// What the memcg pipe workload (`pipe-pressure`) needs: pipes may grow to 16 MiB, and a memory
/// cgroup limited to 64 MiB to run in. Both are undone on drop.
pub struct PipePressure {
    pub cgroup: MemCgroup,
    pub pipe_max_size: FileRestore,
}

impl PipePressure {
    /// None (the test skipped, with the reason) without a usable memory controller.
    pub fn prepare(tag: &str) -> Option<Self> {
        let name = format!("fragtrace-{tag}-{}", std::process::id());
        let cgroup = MemCgroup::create(&name, 64 << 20)?;
        let pipe_max_size = FileRestore::set("/proc/sys/fs/pipe-max-size", &(16 << 20).to_string());
        Some(Self {
            cgroup,
            pipe_max_size,
        })
    }

    /// Runs the workload `pipe-pressure` (`exe`: the test's `env!("CARGO_BIN_EXE_pipe-pressure")`)
    /// in the cgroup for `calls` calls; its result, `{"pid","enomem","ok"}`.
    pub fn run(&self, exe: &str, calls: u32) -> Value {
        let out = Command::new(exe)
            .arg(&self.cgroup.dir)
            .arg(calls.to_string())
            .output()
            .expect("run pipe-pressure");
        assert!(
            out.status.success(),
            "pipe-pressure failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("pipe-pressure prints JSON")
    }
}

/// A directory of the test's own under the temp dir, removed on drop.
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("fragtrace-test-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create a scratch directory");
        Self(dir)
    }

    pub fn path(&self) -> &std::path::Path {
        &self.0
    }

    /// The path of `name` in it, as a string for command lines.
    pub fn file(&self, name: &str) -> String {
        self.0
            .join(name)
            .to_str()
            .expect("a UTF-8 temp dir")
            .to_string()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `/sys/kernel/debug`, mounted for the test if it was not, and then unmounted on drop.
pub struct Debugfs {
    mounted_here: bool,
}

impl Debugfs {
    pub const DIR: &str = "/sys/kernel/debug";

    /// None (the test skipped, with the reason) when debugfs is not mounted and cannot be.
    pub fn ensure() -> Option<Self> {
        let test = current_test();
        let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
        let mounted = mounts.lines().any(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.get(1) == Some(&Self::DIR) && f.get(2) == Some(&"debugfs")
        });
        if mounted {
            return Some(Self {
                mounted_here: false,
            });
        }
        if !is_root() {
            skip(&test, "debugfs is not mounted, and mounting it needs root");
            return None;
        }
        let c = |s: &str| std::ffi::CString::new(s).unwrap();
        let (src, dir, fstype) = (c("debugfs"), c(Self::DIR), c("debugfs"));
        // SAFETY: valid NUL-terminated strings; no data argument.
        let rc = unsafe {
            libc::mount(
                src.as_ptr(),
                dir.as_ptr(),
                fstype.as_ptr(),
                0,
                std::ptr::null(),
            )
        };
        if rc != 0 {
            let err = std::io::Error::last_os_error();
            skip(
                &test,
                &format!("cannot mount debugfs at {}: {err}", Self::DIR),
            );
            return None;
        }
        Some(Self { mounted_here: true })
    }
}

impl Drop for Debugfs {
    fn drop(&mut self) {
        if !self.mounted_here {
            return;
        }
        let dir = std::ffi::CString::new(Self::DIR).unwrap();
        // SAFETY: a valid path; MNT_DETACH also takes tracefs, automounted below it if used.
        if unsafe { libc::umount2(dir.as_ptr(), libc::MNT_DETACH) } != 0 {
            eprintln!(
                "warning: could not unmount {}: {}",
                Self::DIR,
                std::io::Error::last_os_error()
            );
        }
    }
}

/// Creates `n` network namespaces, each in a short-lived forked child (unshare(CLONE_NEWNET)).
/// Returns how many succeeded.
pub fn create_netns(n: usize) -> usize {
    let mut ok = 0;
    for _ in 0..n {
        // SAFETY: the child only calls async-signal-safe functions before _exit.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork");
        if pid == 0 {
            let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
            unsafe { libc::_exit(if rc == 0 { 0 } else { 1 }) };
        }
        let mut status = 0;
        // SAFETY: waiting for our child.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        if libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0 {
            ok += 1;
        }
    }
    ok
}

/// The field names documented in docs/json.md under `heading` (its table's first column).
pub fn documented_fields(heading: &str) -> Vec<String> {
    let doc =
        std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/json.md"))
            .expect("docs/json.md");
    let mut lines = doc.lines().skip_while(|l| l.trim() != heading);
    assert!(
        lines.next().is_some(),
        "no heading {heading} in docs/json.md"
    );
    let mut fields = Vec::new();
    for line in lines.take_while(|l| !l.starts_with('#')) {
        let Some(first_cell) = line.strip_prefix("| ").and_then(|r| r.split(" |").next()) else {
            continue;
        };
        // `a`, `b` rows document two fields.
        for name in first_cell.split(", ") {
            if let Some(n) = name.strip_prefix('`').and_then(|n| n.strip_suffix('`')) {
                fields.push(n.to_string());
            }
        }
    }
    assert!(!fields.is_empty(), "no field table under {heading}");
    fields
}

/// Panics unless `object` has every field in `fields`.
pub fn assert_has_fields(object: &Value, fields: &[impl AsRef<str>], what: &str) {
    let missing: Vec<&str> = fields
        .iter()
        .map(AsRef::as_ref)
        .filter(|f| object.get(f).is_none())
        .collect();
    assert!(missing.is_empty(), "{what} lacks {missing:?}: {object}");
}
