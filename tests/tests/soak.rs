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
#[derive(Clone, Debug)]
struct Look {
    at: Duration,
    rss_kb: u64,
    fds: usize,
    /// What each descriptor is open on (`/proc/PID/fd/N`'s link).
    fd_targets: Vec<String>,
}

fn look(pid: u32, started: Instant) -> Look {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("daemon status");
    let rss_kb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS");
    let fd_targets: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("daemon fds")
        .flatten()
        .map(|fd| match std::fs::read_link(fd.path()) {
            Ok(target) => format!("{}", target.display()),
            Err(e) => format!("({e})"),
        })
        .collect();
    Look {
        at: started.elapsed(),
        rss_kb,
        fds: fd_targets.len(),
        fd_targets,
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
    let (rss_first, rss_last) = (max(&first, |l| l.rss_kb), max(&last, |l| l.rss_kb));
    // A leaked descriptor stays open, so it raises the median count of the looks in a window.
    // A file open or closed at the moment of a look does not: a /proc read under way opens
    // one more, and a flight-recorder segment being rotated (every 15-30 s here) is closed
    // before the next is opened, one fewer.
    let median = |v: &[&Look]| -> Look {
        let mut v = v.to_vec();
        v.sort_by_key(|l| l.fds);
        v[v.len() / 2].clone()
    };
    let (fds_first, fds_last) = (median(&first), median(&last));
    eprintln!(
        "{test}: {} s, {} memcg failures made; RSS max {rss_first} kB in the first window, \
         {rss_last} kB in the last; median fds {} -> {}",
        total.as_secs(),
        made.load(Ordering::Relaxed),
        fds_first.fds,
        fds_last.fds,
    );
    let brief: Vec<(Duration, u64, usize)> =
        looks.iter().map(|l| (l.at, l.rss_kb, l.fds)).collect();
    // Flat: the last window holds no more than the first, give or take the allocator's
    // granularity (1 MiB) and 5 %.
    assert!(
        rss_last <= rss_first + rss_first / 20 + 1024,
        "RSS grew: {rss_first} -> {rss_last} kB; (at, RSS kB, fds) {brief:?}"
    );
    // What the last look had open that the first did not, target by target (sockets, pipes
    // and flight-recorder segments differ in name alone).
    let mut unmatched = fds_first.fd_targets.clone();
    let opened_since: Vec<&String> = fds_last
        .fd_targets
        .iter()
        .filter(|t| match unmatched.iter().position(|u| u == *t) {
            Some(i) => {
                unmatched.swap_remove(i);
                false
            }
            None => true,
        })
        .collect();
    assert!(
        fds_last.fds <= fds_first.fds,
        "fds grew: {} at {:?} -> {} at {:?}; open then, not at the first: {opened_since:?}; \
         (at, RSS kB, fds) {brief:?}",
        fds_first.fds,
        fds_first.at,
        fds_last.fds,
        fds_last.at,
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
