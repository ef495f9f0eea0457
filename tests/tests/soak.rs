//! Soak: the daemon, with a rotating flight recorder, under mixed load (page faults, netns
//! churn, memory-cgroup failures) for a while. Its resident memory and its file descriptors
//! must stay flat, comparing the first and the last window of the run, and every failure the
//! kernel counted must be accounted for: analysed, counted in storm mode, dropped in the
//! kernel, or shed after the ring buffer.
//!
//! `soak_two_minutes` runs in `cargo xtask test`; `cargo xtask soak` runs `soak_long`
//! (30 minutes, windows of 5; FRAGTRACE_SOAK_MINUTES to change it).
use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use fragtrace_tests::{PipePressure, Scratch, daemon::*, is_root_or_skip};

/// One look at the daemon.
#[derive(Clone, Copy, Debug)]
struct Look {
    at: Duration,
    rss_kb: u64,
    fds: usize,
}

fn look(pid: u32, started: Instant) -> Look {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("daemon status");
    let rss_kb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS");
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("daemon fds")
        .count();
    Look {
        at: started.elapsed(),
        rss_kb,
        fds,
    }
}

/// Runs the load until `stop`; counts the memory-cgroup failures it made.
fn load(pressure: &PipePressure, stop: &AtomicBool, made: &AtomicU64) {
    let bin = |name: &str| {
        std::path::PathBuf::from(env!("CARGO_BIN_EXE_fail-bench"))
            .with_file_name(name)
            .to_string_lossy()
            .into_owned()
    };
    while !stop.load(Ordering::Relaxed) {
        let faults = std::process::Command::new(bin("fault-bench"))
            .args(["64", "2"])
            .output()
            .expect("fault-bench");
        assert!(faults.status.success());
        let netns = std::process::Command::new(bin("netns-maker"))
            .arg("4")
            .output()
            .expect("netns-maker");
        assert!(netns.status.success());
        let out = std::process::Command::new(bin("fail-bench"))
            .arg(&pressure.cgroup.dir)
            .arg("1.0")
            .output()
            .expect("fail-bench");
        assert!(out.status.success());
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        made.fetch_add(v["failures"].as_u64().unwrap(), Ordering::Relaxed);
    }
}

fn soak(test: &str, total: Duration, window: Duration) {
    if !is_root_or_skip(test) {
        return;
    }
    let Some(pressure) = PipePressure::prepare("soak") else {
        return;
    };
    let recorder = Scratch::new("soak");
    let daemon = Daemon::start(&[
        "--flight-recorder",
        &recorder.file("flight"),
        "--flight-recorder-size",
        "1MiB",
    ]);
    let started = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let made = Arc::new(AtomicU64::new(0));
    let worker = {
        let (stop, made) = (stop.clone(), made.clone());
        std::thread::spawn(move || load(&pressure, &stop, &made))
    };
    let mut looks = Vec::new();
    while started.elapsed() < total {
        looks.push(look(daemon.pid(), started));
        std::thread::sleep(Duration::from_secs(2));
    }
    stop.store(true, Ordering::Relaxed);
    worker.join().expect("the load ran");
    // What the kernel still holds reaches the daemon within its drain's wakeups.
    std::thread::sleep(Duration::from_secs(2));
    let scrape = daemon.scrape();
    let (status, _, stderr) = daemon.stop();
    assert!(status.success(), "{stderr}");

    let first: Vec<&Look> = looks.iter().filter(|l| l.at < window).collect();
    let last: Vec<&Look> = looks.iter().filter(|l| l.at >= total - window).collect();
    let max = |v: &[&Look], f: fn(&Look) -> u64| v.iter().map(|l| f(l)).max().unwrap();
    let min = |v: &[&Look], f: fn(&Look) -> u64| v.iter().map(|l| f(l)).min().unwrap();
    let (rss_first, rss_last) = (max(&first, |l| l.rss_kb), max(&last, |l| l.rss_kb));
    // A leaked descriptor stays open, so it raises the fewest a window sees. The most would
    // also count a file open at the moment of a look (a flight-recorder segment being
    // rotated, every half minute here), which is no leak.
    let (fds_first, fds_last) = (min(&first, |l| l.fds as u64), min(&last, |l| l.fds as u64));
    eprintln!(
        "{test}: {} s, {} memcg failures made; RSS max {rss_first} kB in the first window, \
         {rss_last} kB in the last; fewest fds {fds_first} -> {fds_last}",
        total.as_secs(),
        made.load(Ordering::Relaxed)
    );
    // Flat: the last window holds no more than the first, give or take the allocator's
    // granularity (1 MiB) and 5 %.
    assert!(
        rss_last <= rss_first + rss_first / 20 + 1024,
        "RSS grew: {rss_first} -> {rss_last} kB; looks {looks:?}"
    );
    assert!(
        fds_last <= fds_first,
        "fds grew: {fds_first} -> {fds_last}; {looks:?}"
    );

    // Every failure the kernel counted is accounted for.
    let total_of = |family: &str| -> f64 {
        scrape
            .lines()
            .filter(|l| l.starts_with(family) && !l.starts_with('#'))
            .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
            .sum()
    };
    let kernel = total_of("fragtrace_page_allocation_failures_total{");
    let analysed = sample(&scrape, "fragtrace_events_total{kind=\"alloc_fail\"}").unwrap_or(0.0);
    let storm = sample(&scrape, "fragtrace_storm_aggregated_failures_total").unwrap_or(0.0);
    let dropped = sample(&scrape, "fragtrace_ringbuf_drops_total").unwrap_or(0.0);
    let shed = sample(&scrape, "fragtrace_events_shed_total{stage=\"analysis\"}").unwrap_or(0.0);
    assert!(
        made.load(Ordering::Relaxed) as f64 <= kernel,
        "the kernel counted fewer failures than the workload made"
    );
    assert_eq!(
        analysed + storm + dropped + shed,
        kernel,
        "analysed {analysed} + storm {storm} + dropped {dropped} + shed {shed} != kernel {kernel}"
    );
}

#[test]
fn soak_two_minutes() {
    soak(
        "soak_two_minutes",
        Duration::from_secs(120),
        Duration::from_secs(30),
    );
}

#[test]
#[ignore = "30 minutes: run by `cargo xtask soak`"]
fn soak_long() {
    let minutes: u64 = std::env::var("FRAGTRACE_SOAK_MINUTES")
        .ok()
        .and_then(|m| m.parse().ok())
        .unwrap_or(30);
    soak(
        "soak_long",
        Duration::from_secs(minutes * 60),
        Duration::from_secs((minutes * 60 / 6).max(30)),
    );
}
