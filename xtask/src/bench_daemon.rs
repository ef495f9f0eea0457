//! The daemon's own figures, after `cargo xtask bench`'s comparisons: start to attached, CPU
//! and resident memory idle and under a failure storm (memory-cgroup charge failures as fast
//! as one thread makes them), and what the flight recorder keeps per failure. Everything is
//! read from /proc/PID/stat and /proc/PID/status of the daemon. The daemon runs on the tracer
//! CPU and the storm's workload on the workload CPU, as in the comparisons.
use std::{
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use crate::{
    bench::{
        Options, WORKLOAD_CPU, cpu_ms, median, pin, placement, start_tracer, status_kib,
        stop_tracer,
    },
    util::root_dir,
};

/// Idle time measured, after the start-up settles, in windows: on a shared machine other
/// tasks' failures wake the daemon now and then, and the quietest window is the idle cost.
const IDLE_WINDOW: Duration = Duration::from_secs(10);
const IDLE_WINDOWS: usize = 6;
/// Seconds of failures in the storm.
const STORM_SECS: f64 = 5.0;

pub fn run(opts: &Options) -> Result<()> {
    let scratch = root_dir().join("target/bench-daemon");
    let _ = std::fs::remove_dir_all(&scratch);
    std::fs::create_dir_all(&scratch)?;
    // The storm's workload under a name of its own: other tasks' failures on a shared machine
    // stay out of the per-event figures.
    let comm = format!("ftbench{}", std::process::id() % 100_000);
    let workload = scratch.join(&comm);
    std::fs::copy(root_dir().join("target/release/fail-bench"), &workload)?;
    let recorder = scratch.join("flight-recorder");
    let events = scratch.join("events.jsonl");
    let daemon_args = [
        "daemon",
        "--listen",
        "127.0.0.1:0",
        "--flight-recorder",
        recorder.to_str().context("path")?,
        "--events",
        events.to_str().context("path")?,
        "--comm",
        &comm,
    ];

    // Start to attached: spawn to the line that announces the hooks.
    let mut starts = Vec::new();
    for _ in 0..opts.rounds.max(3) {
        let t = Instant::now();
        let child = start_tracer(&["daemon", "--listen", "127.0.0.1:0"], Stdio::null())?;
        starts.push(t.elapsed().as_secs_f64() * 1000.0);
        stop_tracer(child)?;
    }

    // Idle, with the flight recorder and an event file.
    let child = start_tracer(&daemon_args, Stdio::null())?;
    let pid = child.id();
    std::thread::sleep(Duration::from_secs(2));
    let mut idle = Vec::new();
    for _ in 0..IDLE_WINDOWS {
        let (cpu0, t0) = (cpu_ms(pid).context("cpu")?, Instant::now());
        std::thread::sleep(IDLE_WINDOW);
        // ms of CPU per s, in % of a core.
        idle.push((cpu_ms(pid).context("cpu")? - cpu0) / t0.elapsed().as_secs_f64() / 10.0);
    }
    let idle_min = idle.iter().copied().fold(f64::INFINITY, f64::min);
    let idle_rss = status_kib(pid, "VmRSS:").context("rss")?;
    let start_peak = status_kib(pid, "VmHWM:").context("hwm")?;

    // The storm.
    let storm = storm(pid, &workload, &events);
    let load_rss = status_kib(pid, "VmRSS:").context("rss")?;
    let load_peak = status_kib(pid, "VmHWM:").context("hwm")?;
    stop_tracer(child)?;
    let recorded: u64 = std::fs::read_dir(&recorder)?
        .flatten()
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .sum();

    let mib = |kib: u64| kib as f64 / 1024.0;
    println!();
    println!(
        "daemon: fragtrace daemon --flight-recorder DIR --events FILE (all hooks, 64 MiB recorder); {}",
        placement()
    );
    println!();
    println!("| figure | measured |");
    println!("|---|---:|");
    println!(
        "| start to attached (median of {}) | {:.0} ms |",
        starts.len(),
        median(&starts)
    );
    println!(
        "| CPU idle ({IDLE_WINDOWS} windows of {} s: quietest / median) | {idle_min:.2} / {:.2} % of a core |",
        IDLE_WINDOW.as_secs(),
        median(&idle)
    );
    println!(
        "| resident idle / peak at start | {:.1} / {:.1} MiB |",
        mib(idle_rss),
        mib(start_peak)
    );
    match storm {
        Ok(s) => {
            println!(
                "| failure storm ({STORM_SECS} s, fail-bench) | {:.0} failures/s, {} events / {} failures |",
                s.failures as f64 / STORM_SECS,
                s.events,
                s.failures
            );
            println!(
                "| CPU in the storm | {:.0} % of a core, {:.0} us per event |",
                s.cpu_ms / 10.0 / STORM_SECS,
                s.cpu_ms * 1000.0 / s.events.max(1) as f64
            );
            println!(
                "| flight recorder | {recorded} bytes, {:.1} bytes per failure |",
                recorded as f64 / s.events.max(1) as f64
            );
        }
        Err(e) => println!("| failure storm | skipped: {e:#} |"),
    }
    println!(
        "| resident after the storm / peak | {:.1} / {:.1} MiB |",
        mib(load_rss),
        mib(load_peak)
    );
    let _ = std::fs::remove_dir_all(&scratch);
    Ok(())
}

struct Storm {
    failures: u64,
    events: u64,
    cpu_ms: f64,
}

/// fail-bench in a fresh 64 MiB v1 memory cgroup while the daemon `pid` runs.
fn storm(pid: u32, workload: &Path, events: &Path) -> Result<Storm> {
    let root = Path::new("/sys/fs/cgroup/memory");
    if !root.join("memory.limit_in_bytes").exists() {
        bail!("no cgroup v1 memory controller");
    }
    let cgroup = root.join(format!("fragtrace-bench-daemon-{}", std::process::id()));
    let pipe_max = "/proc/sys/fs/pipe-max-size";
    let old = std::fs::read_to_string(pipe_max)?;
    std::fs::create_dir(&cgroup)?;
    let result = (|| -> Result<Storm> {
        std::fs::write(
            cgroup.join("memory.limit_in_bytes"),
            (64u64 << 20).to_string(),
        )?;
        std::fs::write(pipe_max, (16u32 << 20).to_string())?;
        let cpu0 = cpu_ms(pid).context("cpu")?;
        let out = pin(&mut Command::new(workload), WORKLOAD_CPU)
            .arg(&cgroup)
            .arg(STORM_SECS.to_string())
            .output()?;
        if !out.status.success() {
            bail!("fail-bench: {}", String::from_utf8_lossy(&out.stderr));
        }
        // Let the daemon drain what the workload left in the ring buffer.
        std::thread::sleep(Duration::from_millis(500));
        let cpu_ms = cpu_ms(pid).context("cpu")? - cpu0;
        let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
        // Only the storm's: the filter keeps the workload's alone.
        let events = std::fs::read_to_string(events)?
            .lines()
            .filter(|l| l.contains(r#""type":"alloc_fail""#))
            .count() as u64;
        Ok(Storm {
            failures: v["failures"].as_u64().unwrap_or(0),
            events,
            cpu_ms,
        })
    })();
    let _ = std::fs::write(pipe_max, old.trim());
    for _ in 0..50 {
        if std::fs::remove_dir(&cgroup).is_ok() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    result
}
