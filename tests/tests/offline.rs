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

/// The same on this machine's /dev/kmsg: the report is written into the kernel log record by
/// record (as root, with the rate limit lifted) and read back in the kmsg record format.
#[test]
fn follow_dev_kmsg_prints_the_report() {
    const TEST: &str = "follow_dev_kmsg_prints_the_report";
    let Some((mut kmsg, devkmsg)) = fragtrace_tests::kmsg_writer(TEST) else {
        return;
    };
    let follow = Follow::start("/dev/kmsg");
    // The report's messages without their syslog prefix, one record each, at level warning.
    let tag = format!("fragtrace-test-{}", std::process::id());
    fragtrace_tests::write_kmsg(&mut kmsg, SEED_002, &tag);
    let got = follow
        .next(Duration::from_secs(5))
        .expect("no diagnosis within 5 s of writing the report to /dev/kmsg");
    assert_eq!(got["comm"], tag.as_str());
    assert_eq!(got["order"], 6);
    assert_eq!(got["verdict"], "fragmentation");
    assert_eq!(got["largest_free_order"], 5);
    assert!(got["timestamp"].is_string(), "{got}");
    follow.stop();
    let before = devkmsg.old().to_string();
    drop(devkmsg);
    assert_eq!(
        std::fs::read_to_string(fragtrace_tests::PRINTK_DEVKMSG)
            .unwrap()
            .trim(),
        before,
        "printk_devkmsg restored"
    );
}

/// Real reports with Mem-Info, cycled through a generated log.
const REPORTS: [&str; 5] = [
    SEED_002,
    MAIL_5_18,
    include_str!("../../fragtrace/tests/fixtures/logs/4.12-pagefault-exhaustion.log"),
    include_str!("../../fragtrace/tests/fixtures/logs/5.0-kdump-oom-exhaustion.log"),
    include_str!("../../fragtrace/tests/fixtures/logs/5.0-btrfs-kasan-tab-quoted-exhaustion.log"),
];

/// Everyday kernel lines between the reports.
const FILLER: [&str; 4] = [
    "e1000e 0000:00:19.0 eth0: NIC Link is Up 1000 Mbps Full Duplex, Flow Control: Rx/Tx",
    "audit: type=1400 audit(1700000000.123:4567): apparmor=\"ALLOWED\" operation=\"open\" profile=\"/usr/sbin/cupsd\" name=\"/etc/ssl/openssl.cnf\" pid=1234 comm=\"cupsd\"",
    "IPv6: ADDRCONF(NETDEV_CHANGE): veth1a2b3c4: link becomes ready",
    "docker0: port 3(veth9f8e7d6) entered forwarding state",
];

/// Writes a log of about `bytes` bytes holding `incidents` real reports spread evenly, and
/// returns how many report headers it holds.
fn generate_log(path: &std::path::Path, bytes: usize, incidents: usize) -> usize {
    let mut out = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(path).unwrap());
    let per_chunk = bytes / incidents;
    let mut seconds = 100.0f64;
    let mut headers = 0;
    for i in 0..incidents {
        let report = REPORTS[i % REPORTS.len()];
        headers += report.matches(": page allocation failure").count()
            + report.matches(" invoked oom-killer:").count();
        out.write_all(report.as_bytes()).unwrap();
        let mut written = report.len();
        let mut n = 0;
        while written < per_chunk {
            seconds += 0.000_731;
            let line = format!("[{seconds:12.6}] {}\n", FILLER[n % FILLER.len()]);
            out.write_all(line.as_bytes()).unwrap();
            written += line.len();
            n += 1;
        }
    }
    out.flush().unwrap();
    headers
}

struct Run {
    wall: Duration,
    cpu: Duration,
    max_rss_kb: i64,
    objects: usize,
}

/// `analyze-log --json FILE`, counting its output lines, with the child's CPU time and peak RSS.
#[allow(
    clippy::zombie_processes,
    reason = "reaped with wait4 for its rusage, not Child::wait"
)]
fn run_measured(path: &std::path::Path) -> Run {
    let start = Instant::now();
    let mut child = Command::new(fragtrace_bin())
        .args(["analyze-log", "--json"])
        .arg(path)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let counter = std::thread::spawn(move || BufReader::new(stdout).lines().count());
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value; wait4 fills it for our own child.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let pid = child.id() as i32;
    // SAFETY: waiting for our own child, with valid pointers.
    let rc = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    let wall = start.elapsed();
    assert_eq!(rc, pid, "wait4");
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "status {status}"
    );
    let cpu = Duration::from_secs(usage.ru_utime.tv_sec as u64 + usage.ru_stime.tv_sec as u64)
        + Duration::from_micros(usage.ru_utime.tv_usec as u64 + usage.ru_stime.tv_usec as u64);
    Run {
        wall,
        cpu,
        max_rss_kb: usage.ru_maxrss,
        objects: counter.join().unwrap(),
    }
}

/// BENCHMARKS.md's log throughput: a 1 GiB log with 10,000 real reports, and a 100 MiB one to
/// show memory does not grow with the log. `cargo test --release -p fragtrace-tests --test
/// offline -- --ignored --nocapture`.
#[test]
#[ignore = "writes 1.1 GiB to the temp dir and takes a while: run by hand for BENCHMARKS.md"]
fn throughput_on_a_1gib_log_with_10000_reports() {
    let dir = std::env::temp_dir().join(format!("fragtrace-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let small = dir.join("100m.log");
    let big = dir.join("1g.log");
    generate_log(&small, 100 << 20, 1_000);
    let headers = generate_log(&big, 1 << 30, 10_000);
    let size = std::fs::metadata(&big).unwrap().len() as f64 / 1e6;
    let small_run = run_measured(&small);
    let runs: Vec<Run> = (0..3).map(|_| run_measured(&big)).collect();
    let _ = std::fs::remove_dir_all(&dir);
    let best_wall = runs.iter().map(|r| r.wall).min().unwrap();
    let best_cpu = runs.iter().map(|r| r.cpu).min().unwrap();
    let rss = runs.iter().map(|r| r.max_rss_kb).max().unwrap();
    eprintln!(
        "analyze-log: {size:.0} MB, {} reports: wall {:.2} s ({:.0} MB/s), CPU {:.2} s ({:.0} MB/s); peak RSS {rss} kB (100 MB log: {} kB)",
        runs[0].objects,
        best_wall.as_secs_f64(),
        size / best_wall.as_secs_f64(),
        best_cpu.as_secs_f64(),
        size / best_cpu.as_secs_f64(),
        small_run.max_rss_kb,
    );
    assert_eq!(runs[0].objects, headers, "every report diagnosed once");
    assert!(
        rss < small_run.max_rss_kb * 2,
        "memory grew with the log: {rss} kB vs {} kB",
        small_run.max_rss_kb
    );
    assert!(
        size / best_cpu.as_secs_f64() >= 200.0,
        "{:.0} MB/s of CPU time",
        size / best_cpu.as_secs_f64()
    );
}
