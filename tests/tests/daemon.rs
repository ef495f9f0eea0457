//! `fragtrace daemon` on this machine's kernel, with real workloads: its HTTP surface, its
//! metrics against docs/metrics.md, the event file and SIGHUP, the flight recorder and
//! `report DIR`, SIGTERM within a second. Run one at a time (`--test-threads=1`).
use std::{collections::BTreeSet, os::unix::fs::PermissionsExt, process::Command, time::Duration};

use fragtrace_tests::{daemon::*, *};
use serde_json::Value;

/// The metric names docs/metrics.md documents (backticked `fragtrace_`/`process_` names).
fn documented_metrics() -> BTreeSet<String> {
    let doc = std::fs::read_to_string(repo().join("docs/metrics.md")).unwrap();
    doc.split('`')
        .skip(1)
        .step_by(2)
        .filter(|s| s.starts_with("fragtrace_") || s.starts_with("process_"))
        .map(str::to_string)
        .collect()
}

/// Runs the memcg pipe workload `calls` times (holding its memory `hold` s); its JSON result.
fn pipe_workload(bin: &std::path::Path, pressure: &PipePressure, calls: u32, hold: f64) -> Value {
    let out = Command::new(bin)
        .arg(&pressure.cgroup.dir)
        .arg(calls.to_string())
        .arg(hold.to_string())
        .output()
        .expect("run pipe-pressure");
    assert!(
        out.status.success(),
        "pipe-pressure failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn daemon_serves_metrics_and_health_and_exits_within_a_second() {
    let name = "daemon_serves_metrics_and_health_and_exits_within_a_second";
    if !is_root_or_skip(name) {
        return;
    }
    let daemon = Daemon::start(&[]);
    let health = get(&daemon.url("/healthz")).unwrap();
    assert_eq!(health.status, 200, "{}", health.body);
    assert!(health.body.starts_with("ok: "), "{}", health.body);

    let metrics = get(&daemon.url("/metrics")).unwrap();
    assert_eq!(metrics.status, 200);
    assert_eq!(
        metrics.content_type,
        "text/plain; version=0.0.4; charset=utf-8"
    );
    // Read-only: nothing but GET and HEAD, nothing but the two paths (and an index).
    assert_eq!(get(&daemon.url("/nothing")).unwrap().status, 404);
    assert_eq!(
        request(&daemon.url("/metrics"), "DELETE", &[])
            .unwrap()
            .status,
        405
    );
    assert_eq!(
        request(&daemon.url("/healthz"), "HEAD", &[])
            .unwrap()
            .status,
        200
    );

    let scrape = metrics.body;
    // Every family the daemon exposes is documented, and every documented one exposed here,
    // but for those documented as conditional.
    let documented = documented_metrics();
    let exposed: BTreeSet<String> = families(&scrape).into_iter().collect();
    let undocumented: Vec<&String> = exposed.difference(&documented).collect();
    assert!(
        undocumented.is_empty(),
        "not in docs/metrics.md: {undocumented:?}"
    );
    let conditional = [
        // Series of these appear with the first failure of a task, of a container.
        "fragtrace_alloc_failures_by_comm_total",
        "fragtrace_alloc_failures_by_container_total",
        "fragtrace_netns_creation_seconds",
        "fragtrace_netns_creation_failures_total",
        "fragtrace_oom_score_adj",
        "fragtrace_flight_recorder_bytes",
    ];
    let missing: Vec<&String> = documented
        .difference(&exposed)
        .filter(|m| !conditional.contains(&m.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "documented but not exposed: {missing:?}"
    );

    // The page allocator's hook is attached, by whichever method this kernel allows.
    let page_alloc = scrape
        .lines()
        .find(|l| l.starts_with(r#"fragtrace_probe_attached{probe="kmem:mm_page_alloc","#))
        .expect("the page allocator's probe");
    assert!(
        page_alloc.ends_with(r#"reason=""} 1"#) && !page_alloc.contains(r#"method="none""#),
        "{page_alloc}"
    );
    assert!(
        sample(
            &scrape,
            &format!(
                r#"fragtrace_build_info{{version="{}",arch="x86_64"}}"#,
                env!("CARGO_PKG_VERSION")
            )
        ) == Some(1.0)
    );
    // Netns creation series exist exactly where a creation window is hooked; otherwise a
    // gauge says why they are absent.
    let probes = probes_json();
    let hooked = probes["hooks"].as_array().unwrap().iter().any(|h| {
        h["hook"] == "copy_net_ns" && h["available"].as_array().is_some_and(|a| !a.is_empty())
    });
    let timing = scrape
        .lines()
        .find(|l| l.starts_with("fragtrace_netns_timing_available{"))
        .expect("netns timing gauge");
    if hooked {
        assert!(timing.ends_with(" 1"), "{timing}");
        assert!(scrape.contains("fragtrace_netns_creation_seconds_bucket"));
    } else {
        assert!(
            timing.contains(r#"source="none""#) && timing.ends_with(" 0"),
            "{timing}"
        );
        assert!(timing.contains("copy_net_ns cannot be hooked"), "{timing}");
        assert!(!scrape.contains("fragtrace_netns_creation"), "{scrape}");
    }
    // Zones from /proc: every populated zone has 11 orders of free blocks.
    let zones = scrape
        .lines()
        .filter(|l| l.starts_with("fragtrace_zone_free_blocks{") && l.contains(r#"order="10""#))
        .count();
    assert!(zones > 0, "{scrape}");
    assert_eq!(
        scrape
            .lines()
            .filter(|l| l.starts_with("fragtrace_zone_free_blocks{"))
            .count(),
        zones * 11
    );
    // The kernel's counters move between scrapes: this test's own page faults.
    let allocs = |s: &str| sample(s, r#"fragtrace_page_allocations_total{order="0"}"#).unwrap();
    let before = allocs(&scrape);
    let mut buf = vec![0u8; 16 << 20];
    for i in (0..buf.len()).step_by(4096) {
        // SAFETY: in bounds; volatile so that the stores happen.
        unsafe { std::ptr::write_volatile(&mut buf[i], 1) };
    }
    drop(buf);
    assert!(allocs(&daemon.scrape()) >= before + 4096.0);

    let (status, took, stderr) = daemon.stop();
    assert!(status.success(), "{status}: {stderr}");
    assert!(
        took < Duration::from_secs(1),
        "SIGTERM took {took:?} to end the daemon"
    );
    eprintln!("daemon exited {took:?} after SIGTERM");
}

#[test]
fn daemon_bad_input_gets_one_line_and_a_documented_status() {
    let name = "daemon_bad_input_gets_one_line_and_a_documented_status";
    let run = |args: &[&str]| {
        let out = Command::new(fragtrace_bin())
            .arg("daemon")
            .args(args)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(!stderr.contains("panicked"), "{stderr}");
        (out.status.code(), stderr)
    };
    for bad in [
        &["--listen", "localhost"][..],
        &["--listen", "127.0.0.1:99999"],
        &["--flight-recorder-size", "1KiB"],
        &["--flight-recorder-size", "64 parsecs"],
        &["--duration", "0"],
        &["--events"],
    ] {
        let (code, stderr) = run(bad);
        assert_eq!(code, Some(2), "{bad:?}: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "{bad:?}: {stderr}");
    }
    if !is_root_or_skip(name) {
        return;
    }
    // A port taken: status 1, before any eBPF is loaded.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let (code, stderr) = run(&["--listen", &addr]);
    assert_eq!(code, Some(1), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("cannot listen on"), "{stderr}");
    // A flight recorder that is a file: a usage error, before any eBPF is loaded.
    let dir = Scratch::new("daemon-bad");
    let file = dir.path().join("plain-file");
    std::fs::write(&file, "x").unwrap();
    let port = format!("127.0.0.1:{}", free_port());
    let (code, stderr) = run(&[
        "--listen",
        &port,
        "--flight-recorder",
        file.to_str().unwrap(),
    ]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("is not a directory"), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
}

/// Where no hook can attach (an old or locked-down kernel), the daemon counts the kernel's own
/// reports from /dev/kmsg in the same series, and says so. A real report (seed 002, RHEL 7's
/// netns-creation failure) is written into this kernel's log while the daemon runs.
#[test]
fn daemon_counts_kernel_log_reports_in_the_same_series() {
    const TEST: &str = "daemon_counts_kernel_log_reports_in_the_same_series";
    const SEED_002: &str =
        include_str!("../../fragtrace/tests/fixtures/logs/rhel7-3.10-netns-fragmentation.log");
    let Some((mut kmsg, _devkmsg)) = kmsg_writer(TEST) else {
        return;
    };
    let daemon = Daemon::start(&["--source", "kernel-log"]);
    let first = daemon.scrape();
    assert_eq!(
        sample(
            &first,
            r#"fragtrace_source{source="kernel_log",reason="--source kernel-log"}"#
        ),
        Some(1.0),
        "{first}"
    );
    let failures =
        r#"fragtrace_alloc_failures_total{order="6",verdict="fragmentation",netns="yes"}"#;
    assert_eq!(sample(&first, failures), Some(0.0), "{first}");
    let health = get(&daemon.url("/healthz")).unwrap();
    assert_eq!(health.status, 200, "{}", health.body);

    let comm = format!("ft-kmsg-{}", std::process::id() % 100_000);
    write_kmsg(&mut kmsg, SEED_002, &comm);
    let by_comm = format!(r#"fragtrace_alloc_failures_by_comm_total{{comm="{comm}"}}"#);
    let scrape = wait_for("the report counted", Duration::from_secs(10), || {
        let s = daemon.scrape();
        sample(&s, &by_comm).map(|_| s)
    });
    assert_eq!(sample(&scrape, &by_comm), Some(1.0), "{scrape}");
    assert_eq!(sample(&scrape, failures), Some(1.0), "{scrape}");
    // Every series it serves is documented.
    let documented = documented_metrics();
    for family in families(&scrape) {
        assert!(
            documented.contains(&family),
            "{family} is not in docs/metrics.md"
        );
    }
    let (status, _, stderr) = daemon.stop();
    assert!(status.success(), "{status}: {stderr}");
    assert!(
        stderr.contains("counting failures from the kernel log"),
        "{stderr}"
    );
}

/// The daemon as a non-root user (nobody) with file capabilities instead of root, the way
/// SECURITY.md documents: on a copy of the binary with the grants set by setcap. It attaches
/// its hooks, symbolizes, locks its memory, and keeps no capability it no longer needs.
#[test]
fn daemon_runs_as_nobody_with_file_capabilities() {
    const TEST: &str = "daemon_runs_as_nobody_with_file_capabilities";
    // Capability numbers (linux/capability.h).
    const CAP_IPC_LOCK: u32 = 14;
    const CAP_SYS_RESOURCE: u32 = 24;
    const CAP_BPF: u32 = 39;
    if !is_root_or_skip(TEST) || !has_setpriv(TEST) {
        return;
    }
    if Command::new("setcap").arg("-v").output().is_err() {
        return skip(
            TEST,
            "setcap is not installed (cargo xtask setup installs libcap2-bin)",
        );
    }
    let dir = Scratch::new("file-caps");
    let bin = dir.path().join("fragtrace");
    std::fs::copy(fragtrace_bin(), &bin).unwrap();
    for path in [dir.path(), bin.as_path()] {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    // CAP_SYS_RESOURCE (for oom_score_adj) only where this machine's bounding set holds it:
    // exec refuses a file capability the bounding set lacks.
    let bounding = std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("CapBnd:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap();
    let mut grants = vec![
        "cap_bpf",
        "cap_perfmon",
        "cap_syslog",
        "cap_dac_read_search",
        "cap_ipc_lock",
    ];
    if bounding & (1 << CAP_SYS_RESOURCE) != 0 {
        grants.push("cap_sys_resource");
    }
    let set = Command::new("setcap")
        .arg(format!("{}+ep", grants.join(",")))
        .arg(&bin)
        .output()
        .unwrap();
    assert!(
        set.status.success(),
        "{}",
        String::from_utf8_lossy(&set.stderr)
    );

    let mut nobody = Command::new("setpriv");
    nobody
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(&bin);
    let daemon = Daemon::start_with(nobody, &[]);
    let status = std::fs::read_to_string(format!("/proc/{}/status", daemon.pid())).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .unwrap_or_default()
            .split_whitespace()
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    assert_eq!(field("Uid:"), ["65534"; 4], "{status}");
    // Once attached only CAP_IPC_LOCK (locked memory under a finite memlock limit) and, on
    // kernels that gate every bpf() call, CAP_BPF may stay.
    let may_stay = (1u64 << CAP_IPC_LOCK) | (1u64 << CAP_BPF);
    for set in ["CapEff:", "CapPrm:"] {
        let caps = u64::from_str_radix(&field(set)[0], 16).unwrap();
        assert_eq!(caps & !may_stay, 0, "{set} {caps:#x}");
    }
    let scrape = daemon.scrape();
    assert_eq!(
        sample(&scrape, r#"fragtrace_source{source="ebpf",reason=""}"#),
        Some(1.0),
        "{scrape}"
    );
    assert!(
        scrape.lines().any(|l| l
            .starts_with(r#"fragtrace_probe_attached{probe="kmem:mm_page_alloc","#)
            && l.ends_with(" 1")),
        "{scrape}"
    );
    assert_eq!(
        sample(&scrape, "fragtrace_memory_locked"),
        Some(1.0),
        "{scrape}"
    );
    let (status, _, stderr) = daemon.stop();
    assert!(status.success(), "{status}: {stderr}");
    assert!(!stderr.contains("stacks shown as addresses"), "{stderr}");
}

/// `--events FILE`: one JSON line per failure, mode 0600; after logrotate moves the file,
/// SIGHUP opens a new one and the old one keeps what it had.
#[test]
fn daemon_events_file_reopens_on_sighup() {
    let name = "daemon_events_file_reopens_on_sighup";
    if !is_root_or_skip(name) {
        return;
    }
    let Some(pressure) = PipePressure::prepare("events") else {
        return;
    };
    let dir = Scratch::new("daemon-events");
    let (workload, comm) = renamed_workload(dir.path(), env!("CARGO_BIN_EXE_pipe-pressure"), "fte");
    let events = dir.path().join("events.json");
    let daemon = Daemon::start(&["--events", events.to_str().unwrap(), "--comm", &comm]);
    let lines_of = |path: &std::path::Path, pid: u64| -> usize {
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).expect("a JSON line"))
            .filter(|e| e["type"] == "alloc_fail" && e["pid"] == pid)
            .count()
    };
    let first = pipe_workload(&workload, &pressure, 16, 0.0);
    let (pid1, n1) = (
        first["pid"].as_u64().unwrap(),
        first["enomem"].as_u64().unwrap(),
    );
    assert!(n1 > 0, "{first}");
    wait_for("the first lines", Duration::from_secs(30), || {
        (lines_of(&events, pid1) as u64 == n1).then_some(())
    });
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&events), 0o600);

    let rotated = dir.path().join("events.json.1");
    std::fs::rename(&events, &rotated).unwrap();
    daemon.signal(libc::SIGHUP);
    wait_for("the reopened file", Duration::from_secs(30), || {
        events.exists().then_some(())
    });
    let second = pipe_workload(&workload, &pressure, 16, 0.0);
    let (pid2, n2) = (
        second["pid"].as_u64().unwrap(),
        second["enomem"].as_u64().unwrap(),
    );
    wait_for("the second lines", Duration::from_secs(30), || {
        (lines_of(&events, pid2) as u64 == n2).then_some(())
    });
    assert_eq!(lines_of(&events, pid1), 0);
    assert_eq!(lines_of(&rotated, pid1) as u64, n1);
    assert_eq!(lines_of(&rotated, pid2), 0);
    assert_eq!(mode(&events), 0o600);
    let scrape = daemon.scrape();
    assert_eq!(
        sample(
            &scrape,
            &format!(r#"fragtrace_alloc_failures_by_comm_total{{comm="{comm}"}}"#)
        ),
        Some((n1 + n2) as f64)
    );
    let (status, _, stderr) = daemon.stop();
    assert!(status.success(), "{stderr}");
}

/// The flight recorder closes a segment when it reaches its share of the budget and starts
/// the next; `report DIR` replays the segments, oldest first, as one recording: the same
/// failures the event lines showed, with the same verdicts and stacks.
#[test]
fn flight_recorder_rotates_and_report_replays_the_directory() {
    let name = "flight_recorder_rotates_and_report_replays_the_directory";
    if !is_root_or_skip(name) {
        return;
    }
    let Some(pressure) = PipePressure::prepare("flight") else {
        return;
    };
    let dir = Scratch::new("daemon-flight");
    let (workload, comm) = renamed_workload(dir.path(), env!("CARGO_BIN_EXE_fail-bench"), "ftf");
    let recorder = dir.path().join("recorder");
    let events = dir.path().join("events.json");
    // 1 MiB, the smallest budget: segments of 128 KiB.
    let daemon = Daemon::start(&[
        "--flight-recorder",
        recorder.to_str().unwrap(),
        "--flight-recorder-size",
        "1MiB",
        "--events",
        events.to_str().unwrap(),
        "--comm",
        &comm,
    ]);
    let segments = || {
        std::fs::read_dir(&recorder)
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with(".rec"))
            .count()
    };
    // Failures until a second segment has begun (a hang guard, not a figure: about 20,000
    // failures fill a segment, for their records compress to a few bytes each).
    let mut failures = 0;
    for _ in 0..40 {
        let out = Command::new(&workload)
            .arg(&pressure.cgroup.dir)
            .arg("3")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        failures += v["failures"].as_u64().unwrap();
        std::thread::sleep(Duration::from_millis(1500));
        if segments() >= 2 {
            break;
        }
    }
    assert!(segments() >= 2, "no rotation after {failures} failures");
    let scrape = daemon.scrape();
    let shed = |stage: &str| {
        sample(
            &scrape,
            &format!(r#"fragtrace_events_shed_total{{stage="{stage}"}}"#),
        )
        .unwrap()
    };
    let (status, _, stderr) = daemon.stop();
    assert!(status.success(), "{stderr}");

    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&recorder), 0o700);
    for e in std::fs::read_dir(&recorder).unwrap().flatten() {
        assert_eq!(mode(&e.path()), 0o600, "{}", e.path().display());
    }
    let out = Command::new(fragtrace_bin())
        .args(["report", "--json"])
        .arg(&recorder)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let failures_in = |text: &str| -> Vec<Value> {
        text.lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .filter(|e| e["type"] == "alloc_fail")
            .collect()
    };
    let replayed = failures_in(&String::from_utf8_lossy(&out.stdout));
    let live = failures_in(&std::fs::read_to_string(&events).unwrap());
    // Nothing was shed by either output, so both hold every failure analysed.
    assert_eq!((shed("event_lines"), shed("flight_recorder")), (0.0, 0.0));
    assert!(live.len() > 1000, "{} failures shown", live.len());
    assert_eq!(replayed.len(), live.len());
    for (r, l) in replayed.iter().zip(&live) {
        for field in [
            "time",
            "pid",
            "comm",
            "order",
            "gfp_flags",
            "verdict",
            "reason",
            "stack",
        ] {
            assert_eq!(r[field], l[field], "{field}: replayed {r}\nlive {l}");
        }
    }
    let summary = String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .unwrap();
    assert_eq!(summary["type"], "summary");
    assert_eq!(summary["events"].as_u64().unwrap() as usize, live.len());
    eprintln!(
        "{failures} failures; {} analysed, in {} segments",
        live.len(),
        segments()
    );
}

/// Stops one thread of `pid` (ptrace, so the rest of the process runs on) until the returned
/// sender is dropped or sent to. Returns once the thread is stopped.
fn stop_thread(tid: i32) -> (std::sync::mpsc::Sender<()>, std::thread::JoinHandle<()>) {
    let (stopped_tx, stopped) = std::sync::mpsc::channel::<Result<(), String>>();
    let (resume, resumed) = std::sync::mpsc::channel::<()>();
    // Every ptrace request must come from the thread that attached.
    let tracer = std::thread::spawn(move || {
        // SAFETY: ptrace on a thread of our own child; waitpid on the traced thread.
        unsafe {
            if libc::ptrace(libc::PTRACE_SEIZE, tid, 0, 0) != 0
                || libc::ptrace(libc::PTRACE_INTERRUPT, tid, 0, 0) != 0
            {
                let _ = stopped_tx.send(Err(std::io::Error::last_os_error().to_string()));
                return;
            }
            let mut status = 0;
            libc::waitpid(tid, &mut status, libc::__WALL);
            let _ = stopped_tx.send(Ok(()));
            let _ = resumed.recv();
            libc::ptrace(libc::PTRACE_DETACH, tid, 0, 0);
        }
    });
    stopped
        .recv()
        .unwrap()
        .unwrap_or_else(|e| panic!("cannot stop thread {tid}: {e}"));
    (resume, tracer)
}

/// The thread of `pid` named `comm`.
fn thread_named(pid: u32, comm: &str) -> i32 {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .flatten()
        .find(|t| {
            std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.trim_end() == comm)
        })
        .and_then(|t| t.file_name().to_str()?.parse().ok())
        .unwrap_or_else(|| panic!("daemon {pid} has no thread {comm}"))
}

/// `/healthz` answers 503, with the reason, once the ring buffer's drain thread has not run for
/// 5 s (here it is stopped, as a thread stuck in the kernel would be), and 200 again when it
/// runs; metrics are still served meanwhile.
#[test]
fn healthz_fails_while_the_drain_thread_is_stuck() {
    if !is_root_or_skip("healthz_fails_while_the_drain_thread_is_stuck") {
        return;
    }
    let daemon = Daemon::start(&[]);
    let healthz = daemon.url("/healthz");
    assert_eq!(get(&healthz).unwrap().status, 200);
    let drain = thread_named(daemon.pid(), "fragtrace-drain");
    let (resume, tracer) = stop_thread(drain);
    let stopped_at = std::time::Instant::now();
    let sick = wait_for("/healthz to answer 503", Duration::from_secs(60), || {
        get(&healthz).ok().filter(|a| a.status == 503)
    });
    let after = stopped_at.elapsed();
    assert!(
        sick.body.contains("ring-buffer drain has not run"),
        "{}",
        sick.body
    );
    // Not before the documented 5 s (the drain passes at least every 50 ms).
    assert!(after >= Duration::from_millis(4500), "503 after {after:?}");
    assert_eq!(get(&daemon.url("/metrics")).unwrap().status, 200);
    drop(resume);
    tracer.join().unwrap();
    let well = wait_for(
        "/healthz to answer 200 again",
        Duration::from_secs(60),
        || get(&healthz).ok().filter(|a| a.status == 200),
    );
    assert!(well.body.starts_with("ok: "), "{}", well.body);
    let (status, _, stderr) = daemon.stop();
    assert!(status.success(), "{stderr}");
}
