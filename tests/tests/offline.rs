//! `fragtrace analyze-log` as a user runs it: exit statuses, a broken output pipe, and `--follow`
//! on a file and on this machine's /dev/kmsg.
use std::{
    io::{BufRead, BufReader, Write},
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use fragtrace_tests::fragtrace_bin;

const SEED_002: &str =
    include_str!("../../fragtrace/tests/fixtures/logs/rhel7-3.10-netns-fragmentation.log");
const MAIL_5_18: &str =
    include_str!("../../fragtrace/tests/fixtures/logs/5.18-syslog-mail-wrapped-fragmentation.log");

fn temp_file(name: &str, contents: &[u8]) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("fragtrace-offline-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, contents).unwrap();
    path
}

/// A kernel log with no incident is an answer, not bad input: exit 0, a note on stderr, nothing
/// on stdout (so JSON consumers read an empty stream).
#[test]
fn a_log_without_incidents_exits_0() {
    let path = temp_file(
        "quiet.log",
        b"[    0.000000] Linux version 6.1.0 (gcc) #1 SMP\n[    1.234567] e1000e: eth0 NIC Link is Up\n",
    );
    for json in [false, true] {
        let mut cmd = Command::new(fragtrace_bin());
        cmd.arg("analyze-log").arg(&path);
        if json {
            cmd.arg("--json");
        }
        let out = cmd.output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{stderr}");
        assert!(
            out.stdout.is_empty(),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
        assert!(stderr.contains("no page allocation failure"), "{stderr}");
    }
}

/// `| head` closing the pipe early is a normal end: exit 0, no error message.
#[test]
fn a_closed_output_pipe_is_a_normal_end() {
    // Enough incidents that the output outgrows the pipe buffer after the reader has gone.
    let many = SEED_002.repeat(400);
    let path = temp_file("many.log", many.as_bytes());
    let mut child = Command::new(fragtrace_bin())
        .arg("analyze-log")
        .arg(&path)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    stdout.read_line(&mut first).unwrap();
    assert!(first.contains("page allocation failure in exe"), "{first}");
    drop(stdout);
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.trim().is_empty(), "{stderr}");
}

/// A `--follow` run whose JSON lines are collected as they come.
struct Follow {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Follow {
    fn start(target: &str) -> Self {
        let mut child = Command::new(fragtrace_bin())
            .args(["analyze-log", "--follow", "--json", target])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn fragtrace");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        // Let it open the source and seek to its end.
        std::thread::sleep(Duration::from_millis(500));
        Self { child, lines }
    }

    /// The next diagnosis, within `limit`.
    fn next(&self, limit: Duration) -> Option<serde_json::Value> {
        let line = self.lines.recv_timeout(limit).ok()?;
        Some(serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}")))
    }

    /// SIGTERM; it must exit 0 promptly.
    fn stop(mut self) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                let mut stderr = String::new();
                let _ =
                    std::io::Read::read_to_string(self.child.stderr.as_mut().unwrap(), &mut stderr);
                assert!(status.success(), "exit {status}: {stderr}");
                return;
            }
            assert!(Instant::now() < deadline, "no exit within 5 s of SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// A real report appended line by line to a followed file is diagnosed when it is complete,
/// the last report of the file within about a second of its last line.
#[test]
fn follow_file_prints_each_report_once_complete() {
    let path = temp_file("followed.log", b"Jun 18 16:37:00 mr-fox kernel: booted\n");
    let follow = Follow::start(path.to_str().unwrap());
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap();
    for line in SEED_002.lines() {
        writeln!(f, "{line}").unwrap();
        f.flush().unwrap();
        std::thread::sleep(Duration::from_millis(5));
    }
    let written = Instant::now();
    let first = follow
        .next(Duration::from_secs(5))
        .expect("no diagnosis within 5 s of the report");
    assert!(
        written.elapsed() < Duration::from_millis(2500),
        "took {:?}",
        written.elapsed()
    );
    assert_eq!(first["comm"], "exe");
    assert_eq!(first["order"], 6);
    assert_eq!(first["verdict"], "fragmentation");
    assert_eq!(first["netns"], true);
    // A second report, from another kernel and another log format.
    for line in MAIL_5_18.lines() {
        writeln!(f, "{line}").unwrap();
    }
    f.flush().unwrap();
    let second = follow
        .next(Duration::from_secs(5))
        .expect("no diagnosis of the second report");
    assert_eq!(second["comm"], "20.p");
    assert_eq!(second["verdict"], "fragmentation");
    assert!(follow.next(Duration::from_millis(300)).is_none());
    follow.stop();
}

/// Sets `kernel.printk_devkmsg` and restores the previous value on drop, also on panic.
struct PrintkDevkmsg {
    old: String,
}

const PRINTK_DEVKMSG: &str = "/proc/sys/kernel/printk_devkmsg";

impl PrintkDevkmsg {
    fn set(value: &str) -> Option<Self> {
        let old = std::fs::read_to_string(PRINTK_DEVKMSG).ok()?;
        std::fs::write(PRINTK_DEVKMSG, value).ok()?;
        Some(Self {
            old: old.trim().to_string(),
        })
    }
}

impl Drop for PrintkDevkmsg {
    fn drop(&mut self) {
        let _ = std::fs::write(PRINTK_DEVKMSG, &self.old);
    }
}

/// The same on this machine's /dev/kmsg: the report is written into the kernel log record by
/// record (as root, with the rate limit lifted) and read back in the kmsg record format.
#[test]
fn follow_dev_kmsg_prints_the_report() {
    const TEST: &str = "follow_dev_kmsg_prints_the_report";
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIPPED {TEST}: needs root to write to /dev/kmsg");
        return;
    }
    let Some(_devkmsg) = PrintkDevkmsg::set("on") else {
        eprintln!("SKIPPED {TEST}: cannot set {PRINTK_DEVKMSG}");
        return;
    };
    let mut kmsg = match std::fs::OpenOptions::new().write(true).open("/dev/kmsg") {
        Ok(f) => f,
        Err(e) => {
            eprintln!("SKIPPED {TEST}: cannot open /dev/kmsg for writing: {e}");
            return;
        }
    };
    let follow = Follow::start("/dev/kmsg");
    // The report's messages without their syslog prefix, one record each, at level warning.
    let tag = format!("fragtrace-test-{}", std::process::id());
    for line in SEED_002.lines() {
        let msg = line
            .split_once(" kernel: ")
            .map_or(line, |(_, m)| m)
            .replace("exe:", &format!("{tag}:"));
        kmsg.write_all(format!("<4>{msg}\n").as_bytes()).unwrap();
    }
    let got = follow
        .next(Duration::from_secs(5))
        .expect("no diagnosis within 5 s of writing the report to /dev/kmsg");
    assert_eq!(got["comm"], tag.as_str());
    assert_eq!(got["order"], 6);
    assert_eq!(got["verdict"], "fragmentation");
    assert_eq!(got["largest_free_order"], 5);
    assert!(got["timestamp"].is_string(), "{got}");
    follow.stop();
}
