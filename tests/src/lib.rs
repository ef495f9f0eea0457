//! Helpers for fragtrace's root integration tests: run the real binary, provoke real kernel
//! behaviour, and always clean up (guards restore on drop, also when a test panics).
use std::{
    io::{BufRead, BufReader, Read},
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

/// True when running as root; otherwise prints why the test is skipped.
pub fn is_root_or_skip(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if !root {
        eprintln!("SKIPPED {test}: needs root (eBPF loading)");
    }
    root
}

/// A running `fragtrace --json` whose stdout is collected line by line.
pub struct Tracer {
    child: Child,
    lines: mpsc::Receiver<String>,
    stdout: std::thread::JoinHandle<()>,
    stderr: std::thread::JoinHandle<String>,
}

impl Tracer {
    /// Starts fragtrace with `args` (plus --json) and waits until its hooks are attached.
    pub fn start(args: &[&str]) -> Self {
        Self::start_command(&[], args)
    }

    /// Starts `fragtrace SUBCOMMAND... --json ARGS...` (`record -o FILE`, say) and waits until
    /// its hooks are attached.
    pub fn start_command(subcommand: &[&str], args: &[&str]) -> Self {
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
        let stdout = std::thread::spawn(move || {
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
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `signal`, waits for exit, and returns every JSON object printed, plus stderr.
    pub fn stop_with(mut self, signal: i32) -> (Vec<Value>, String) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, signal) };
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
        let old = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
        std::fs::write(path, value).unwrap_or_else(|e| panic!("write {path}: {e}"));
        Self {
            path: path.into(),
            old: old.trim().into(),
        }
    }
}

impl Drop for FileRestore {
    fn drop(&mut self) {
        let _ = std::fs::write(&self.path, &self.old);
    }
}

/// A cgroup v1 memory cgroup, removed on drop (its tasks are killed first).
pub struct MemCgroupV1 {
    pub dir: PathBuf,
}

impl MemCgroupV1 {
    /// None (with a printed reason) when the v1 memory controller is not mounted.
    pub fn create(name: &str, limit_bytes: u64) -> Option<Self> {
        let root = PathBuf::from("/sys/fs/cgroup/memory");
        if !root.join("memory.limit_in_bytes").exists() {
            eprintln!(
                "SKIPPED: no cgroup v1 memory controller at {}",
                root.display()
            );
            return None;
        }
        let dir = root.join(name);
        let _ = std::fs::remove_dir(&dir);
        std::fs::create_dir(&dir).expect("create memcg");
        let cg = Self { dir };
        std::fs::write(
            cg.dir.join("memory.limit_in_bytes"),
            limit_bytes.to_string(),
        )
        .expect("set memcg limit");
        Some(cg)
    }
}

impl Drop for MemCgroupV1 {
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

/// What the memcg pipe workload (`pipe-pressure`) needs: pipes may grow to 16 MiB, and a v1
/// memory cgroup limited to 64 MiB to run in. Both are undone on drop.
pub struct PipePressure {
    pub cgroup: MemCgroupV1,
    pub pipe_max_size: FileRestore,
}

impl PipePressure {
    /// None (with a printed reason) without a v1 memory controller.
    pub fn prepare(tag: &str) -> Option<Self> {
        let pipe_max_size = FileRestore::set("/proc/sys/fs/pipe-max-size", &(16 << 20).to_string());
        let name = format!("fragtrace-{tag}-{}", std::process::id());
        let cgroup = MemCgroupV1::create(&name, 64 << 20)?;
        Some(Self {
            cgroup,
            pipe_max_size,
        })
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
