//! fragtrace under faults and load: signals in the middle of a failure storm, SIGKILL, a full
//! disk, a ring buffer overflowing while fragtrace cannot run, and other tracers on the same
//! hooks. Nothing recorded may be lost silently, and nothing may be left behind.
use std::{
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use fragtrace_tests::{
    PipePressure, Scratch, Tracer, fragtrace_bin, is_root_or_skip, of_type, skip, summary,
};
use serde_json::Value;

/// A tmpfs of `size` mounted on a scratch directory, unmounted on drop.
struct SmallDisk(Scratch);

impl SmallDisk {
    fn mount(tag: &str, size: &str) -> Self {
        let dir = Scratch::new(tag);
        let ok = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(&dir.0)
            .status()
            .unwrap()
            .success();
        assert!(ok, "cannot mount a tmpfs on {:?}", dir.0);
        Self(dir)
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0.0).status();
    }
}

/// `fail-bench` failing order-6 charges in the memory cgroup for `secs`, in the background.
fn storm(pressure: &PipePressure, secs: f64) -> Child {
    Command::new(env!("CARGO_BIN_EXE_fail-bench"))
        .arg(&pressure.cgroup.dir)
        .arg(secs.to_string())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start fail-bench")
}

fn storm_failures(child: Child) -> u64 {
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    serde_json::from_slice::<Value>(&out.stdout).unwrap()["failures"]
        .as_u64()
        .unwrap()
}

/// The failures the kernel counted, by the summary's `fail_by_order`.
fn kernel_failures(summary: &Value) -> u64 {
    summary["fail_by_order"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .sum()
}

fn report(file: &str) -> (Vec<Value>, String) {
    let out = Command::new(fragtrace_bin())
        .args(["report", file, "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let lines = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    (lines, String::from_utf8_lossy(&out.stderr).into_owned())
}

/// SIGINT, SIGTERM and SIGHUP in the middle of a failure storm: a clean exit, the summary
/// last, and every output file complete (the recording has its trailer, the flamegraph is
/// drawn).
#[test]
fn signals_under_load_end_with_complete_outputs() {
    if !is_root_or_skip("signals_under_load_end_with_complete_outputs") {
        return;
    }
    let Some(pressure) = PipePressure::prepare("signals") else {
        return;
    };
    for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        let dir = Scratch::new("signals");
        let (rec, folded, svg) = (dir.file("r.ftrec"), dir.file("f.folded"), dir.file("f.svg"));
        let tracer = Tracer::start_command(
            &["record", "-o", &rec],
            &["--folded", &folded, "--flamegraph", &svg],
        );
        let load = storm(&pressure, 3.0);
        std::thread::sleep(Duration::from_millis(1500));
        let (events, stderr) = tracer.stop_with(signal);
        let s = summary(&events);
        let shown = of_type(&events, "alloc_fail").len() as u64;
        assert!(shown > 0, "signal {signal}: no failure seen\n{stderr}");
        assert_eq!(s["events"].as_u64(), Some(shown));
        let (replayed, report_err) = report(&rec);
        assert_eq!(summary(&replayed)["cut"], Value::Null, "{report_err}");
        assert_eq!(replayed, events, "signal {signal}");
        let folded_total: u64 = fragtrace_tests::folded(&folded)
            .iter()
            .map(|(_, n)| n)
            .sum();
        assert_eq!(
            folded_total,
            shown + s["storm_aggregated"].as_u64().unwrap(),
            "signal {signal}"
        );
        assert!(
            std::fs::read_to_string(&svg)
                .unwrap()
                .trim_end()
                .ends_with("</svg>")
        );
        storm_failures(load);
    }
}

/// The BPF programs of fragtrace, by the names the kernel shows (`bpftool prog show`).
fn fragtrace_programs() -> Option<Vec<String>> {
    let out = Command::new("bpftool")
        .args(["-j", "prog", "show"])
        .output()
        .ok()?;
    let progs: Value = serde_json::from_slice(&out.stdout).ok()?;
    Some(
        progs
            .as_array()?
            .iter()
            .filter_map(|p| p["name"].as_str())
            .filter(|n| {
                n.starts_with("page_alloc_")
                    || n.starts_with("compact_")
                    || n.starts_with("reclaim_")
            })
            .map(str::to_string)
            .collect(),
    )
}

/// After SIGKILL, no program or link of fragtrace's is left in the kernel (bpftool says so),
/// and a new fragtrace starts and traces normally.
#[test]
fn sigkill_leaves_nothing_behind() {
    if !is_root_or_skip("sigkill_leaves_nothing_behind") {
        return;
    }
    let Some(before) = fragtrace_programs() else {
        skip(
            "sigkill_leaves_nothing_behind",
            "bpftool not installed (cargo xtask setup installs it)",
        );
        return;
    };
    let tracer = Tracer::start(&[]);
    let during = fragtrace_programs().unwrap();
    assert!(
        during.len() > before.len(),
        "no program seen while running: {during:?}"
    );
    let pid = tracer.pid() as i32;
    // SAFETY: killing our own child.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    let mut status = 0;
    // SAFETY: reaping our own child.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    // The kernel releases programs when their last fd closes; that is at exit.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let after = fragtrace_programs().unwrap();
        if after.len() == before.len() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "left behind: {after:?} (before: {before:?})"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    std::mem::forget(tracer);
    let (events, _) = Tracer::start(&[]).stop();
    assert_eq!(summary(&events)["type"], "summary");
}

/// A disk that fills: recording stops with a one-line error naming the file, exit status 1,
/// and what was written before stays readable; standard output on a full disk: the same, and
/// the summary goes to stderr.
#[test]
fn a_full_disk_gives_a_clear_error_and_keeps_what_was_written() {
    if !is_root_or_skip("a_full_disk_gives_a_clear_error_and_keeps_what_was_written") {
        return;
    }
    let Some(pressure) = PipePressure::prepare("fulldisk") else {
        return;
    };
    let disk = SmallDisk::mount("fulldisk", "256k");
    let rec = disk.0.file("r.ftrec");
    let out_file = disk.0.file("out.json");
    let mut child = Command::new(fragtrace_bin())
        .args([
            "record",
            "-o",
            &rec,
            "--json",
            "--no-status",
            "--storm-threshold",
            "0",
        ])
        .stdout(std::fs::File::create(&out_file).unwrap())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(3));
    let load = storm(&pressure, 4.0);
    let failures = storm_failures(load);
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            // SAFETY: signalling our own child.
            unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let stderr = std::io::read_to_string(child.stderr.take().unwrap()).unwrap();
    assert!(
        failures > 1000,
        "a storm of {failures} failures is too small to fill 256 KiB"
    );
    assert_eq!(status.code(), Some(1), "{stderr}");
    let last = stderr.lines().last().unwrap_or_default();
    assert!(last.contains("No space left on device"), "{stderr}");
    assert!(
        last.contains("cannot write")
            && (last.contains("r.ftrec") || last.contains("standard output")),
        "{stderr}"
    );
    // The summary still came out, on stderr where stdout could not take it.
    assert!(
        stderr.contains("\"type\":\"summary\"")
            || std::fs::read_to_string(&out_file)
                .unwrap()
                .contains("\"type\":\"summary\""),
        "{stderr}"
    );
    // What reached the disk is readable, up to where it stops.
    let (replayed, note) = report(&rec);
    assert_eq!(summary(&replayed)["type"], "summary", "{note}");
    assert!(!of_type(&replayed, "alloc_fail").is_empty(), "{note}");
}

/// fragtrace stopped (SIGSTOP) during a storm: the ring buffer overflows. Every failure is
/// still accounted for, exactly: records shown + counted in storm mode + dropped in the kernel
/// + shed after the ring buffer = the kernel's count, and the storm producer's own count.
#[test]
fn a_ring_buffer_overflow_is_counted_exactly() {
    if !is_root_or_skip("a_ring_buffer_overflow_is_counted_exactly") {
        return;
    }
    let Some(pressure) = PipePressure::prepare("overflow") else {
        return;
    };
    let tracer = Tracer::start(&["--storm-threshold", "0"]);
    let pid = tracer.pid() as i32;
    // Stopped for the whole storm: the ring buffer (1 MiB on 2 CPUs, 4 MiB on 8) holds
    // about 590 failure records per MiB, and the storm makes several thousand.
    // SAFETY: signalling our own child.
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    let produced = storm_failures(storm(&pressure, 10.0));
    // SAFETY: as above.
    unsafe { libc::kill(pid, libc::SIGCONT) };
    std::thread::sleep(Duration::from_millis(500));
    let (events, stderr) = tracer.stop();
    let s = summary(&events);
    let shown = of_type(&events, "alloc_fail")
        .iter()
        .filter(|e| e["comm"] == "fail-bench")
        .count() as u64;
    let all_shown = s["events"].as_u64().unwrap();
    let dropped = s["dropped"].as_u64().unwrap();
    let shed = s["tracer"]["drain_shed"].as_u64().unwrap();
    let storm = s["storm_aggregated"].as_u64().unwrap();
    let kernel = kernel_failures(s);
    assert!(
        dropped > 0,
        "the ring buffer did not overflow (produced {produced})\n{stderr}"
    );
    assert_eq!(all_shown + storm + dropped + shed, kernel, "{s}");
    // Other tasks may fail allocations meanwhile; the storm's own are all in the kernel count.
    assert!(
        kernel >= produced && shown <= produced,
        "{produced} {kernel} {shown}"
    );
}

/// A reader that stops reading (its pipe full) during a failure storm never holds the drain
/// up: the lines that do not fit are shed and counted in `output_shed`, every failure is still
/// accounted for in the kernel's count, and the output stays whole lines ending with the
/// summary once the reader reads again.
#[test]
fn a_stalled_reader_sheds_lines_and_counts_them() {
    if !is_root_or_skip("a_stalled_reader_sheds_lines_and_counts_them") {
        return;
    }
    let Some(pressure) = PipePressure::prepare("stalled-reader") else {
        return;
    };
    let tracer = Tracer::start_unread(&["--storm-threshold", "0"]);
    let produced = storm_failures(storm(&pressure, 5.0));
    let (events, stderr) = tracer.stop();
    let s = summary(&events);
    let shown = of_type(&events, "alloc_fail").len() as u64;
    let analysed = s["events"].as_u64().unwrap();
    let output_shed = s["tracer"]["output_shed"].as_u64().unwrap();
    let kernel = kernel_failures(s);
    let (dropped, drain_shed, storm) = (
        s["dropped"].as_u64().unwrap(),
        s["tracer"]["drain_shed"].as_u64().unwrap(),
        s["storm_aggregated"].as_u64().unwrap(),
    );
    // The pipe holds 64 KiB and fragtrace's queue 1 MiB of lines, about 1,400 lines of 800
    // bytes together; the storm makes several thousand.
    assert!(
        output_shed > 0 && shown < analysed,
        "nothing shed: {shown} lines of {analysed} failures ({produced} produced)\n{stderr}"
    );
    // Every failure analysed is a line written or one of those counted as shed (which may
    // include a few lines of other kinds).
    assert!(
        shown + output_shed >= analysed,
        "{shown} + {output_shed} < {analysed}: {s}"
    );
    assert_eq!(analysed + storm + dropped + drain_shed, kernel, "{s}");
    assert!(kernel >= produced, "kernel {kernel} < produced {produced}");
    assert!(
        stderr.contains(&format!("{output_shed} lines not written")),
        "the summary on stderr does not say lines were shed:\n{stderr}"
    );
}

/// Two fragtraces at once, and bpftrace on the same tracepoint: each counts every failure.
#[test]
fn other_tracers_on_the_same_hooks_do_not_disturb_the_count() {
    if !is_root_or_skip("other_tracers_on_the_same_hooks_do_not_disturb_the_count") {
        return;
    }
    let Some(pressure) = PipePressure::prepare("others") else {
        return;
    };
    // bpftrace runs BEGIN once its probes are attached.
    let script = "BEGIN { printf(\"ready\\n\"); } \
        tracepoint:kmem:mm_page_alloc /args->pfn == 0xffffffffffffffff && comm == \"pipe-pressure\"/ \
        { @failures = count(); }";
    let mut bpftrace = Command::new("bpftrace")
        .args(["-e", script])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .ok();
    let mut bpftrace_out = None;
    match &mut bpftrace {
        None => skip(
            "other_tracers_on_the_same_hooks_do_not_disturb_the_count (its bpftrace part)",
            "bpftrace not installed (cargo xtask setup installs it)",
        ),
        Some(child) => {
            let mut reader = std::io::BufReader::new(child.stdout.take().unwrap());
            let mut seen = String::new();
            while !seen.contains("ready") {
                let mut line = String::new();
                let n = std::io::BufRead::read_line(&mut reader, &mut line).unwrap();
                assert!(n > 0, "bpftrace ended before attaching: {seen}");
                seen.push_str(&line);
            }
            bpftrace_out = Some(reader);
        }
    }
    let (a, b) = (
        Tracer::start(&["--comm", "pipe-pressure"]),
        Tracer::start(&["--comm", "pipe-pressure"]),
    );
    let out = Command::new(env!("CARGO_BIN_EXE_pipe-pressure"))
        .arg(&pressure.cgroup.dir)
        .arg("16")
        .output()
        .unwrap();
    let enomem = serde_json::from_slice::<Value>(&out.stdout).unwrap()["enomem"]
        .as_u64()
        .unwrap();
    assert!(enomem > 0);
    for (events, stderr) in [a.stop(), b.stop()] {
        assert_eq!(
            of_type(&events, "alloc_fail").len() as u64,
            enomem,
            "{stderr}"
        );
    }
    if let (Some(child), Some(mut reader)) = (bpftrace, bpftrace_out) {
        // SAFETY: signalling our own child; bpftrace prints its maps on SIGINT.
        unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
        let out = child.wait_with_output().unwrap();
        let text = std::io::read_to_string(&mut reader).unwrap();
        assert!(
            text.contains(&format!("@failures: {enomem}")),
            "bpftrace said: {text} {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
