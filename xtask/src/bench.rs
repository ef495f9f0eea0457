//! `cargo xtask bench`: what fragtrace costs on the hottest path it hooks. A page-fault workload
//! (one order-0 allocation per fault) runs without fragtrace and with it, per attach method,
//! interleaved round by round so machine noise hits every configuration alike; results are
//! medians and ratios against the baseline of the same run, plus fragtrace's own CPU time and
//! peak memory. Needs root.
use std::{
    io::{BufRead, BufReader},
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use crate::util::{cargo, output, root_dir, run};

#[derive(clap::Args, Debug, Clone)]
pub struct Options {
    /// Interleaved rounds per configuration.
    #[arg(long, default_value_t = 7)]
    pub rounds: usize,
    /// MiB mapped and touched per workload pass.
    #[arg(long, default_value_t = 256)]
    pub mib: u64,
    /// Passes per round.
    #[arg(long, default_value_t = 12)]
    pub passes: u64,
    /// Seconds of failing allocations per round of the failure-path benchmark.
    #[arg(long, default_value_t = 2.0)]
    pub fail_secs: f64,
}

/// A configuration: no tracer, or fragtrace with these extra arguments.
struct Config {
    name: &'static str,
    tracer_args: Option<&'static [&'static str]>,
    rates: Vec<f64>,
    cpu_ms: Vec<f64>,
    peak_rss_kib: Vec<u64>,
    rss_kib: Vec<u64>,
}

pub fn run_bench(opts: &Options) -> Result<()> {
    run(cargo().args([
        "build",
        "--release",
        "--package",
        "fragtrace",
        "--package",
        "fragtrace-tests",
        "--bin",
        "fragtrace",
        "--bin",
        "fault-bench",
        "--bin",
        "fail-bench",
    ]))?;
    let mut configs = vec![
        config("baseline (no tracer)", None),
        config("fragtrace (tp_btf, all hooks)", Some(&[])),
        config(
            "fragtrace --force-method raw_tp",
            Some(&["--force-method", "raw_tp"]),
        ),
        config(
            "fragtrace --force-method tracepoint",
            Some(&["--force-method", "tracepoint"]),
        ),
        config(
            "fragtrace daemon (tp_btf, all hooks)",
            Some(&["daemon", "--listen", "127.0.0.1:0"]),
        ),
    ];
    for round in 0..opts.rounds {
        for c in configs.iter_mut() {
            let (rate, usage) = measure(c.tracer_args, opts)
                .with_context(|| format!("round {round}, {}", c.name))?;
            c.rates.push(rate);
            if let Some(u) = usage {
                c.cpu_ms.push(u.cpu_ms);
                c.peak_rss_kib.push(u.peak_rss_kib);
                c.rss_kib.push(u.rss_kib);
            }
        }
        eprintln!("xtask bench: round {} of {} done", round + 1, opts.rounds);
    }
    print_report(&configs, opts)?;
    failure_path(opts)?;
    crate::bench_daemon::run(opts)
}

fn config(name: &'static str, tracer_args: Option<&'static [&'static str]>) -> Config {
    Config {
        name,
        tracer_args,
        rates: Vec::new(),
        cpu_ms: Vec::new(),
        peak_rss_kib: Vec::new(),
        rss_kib: Vec::new(),
    }
}

/// fragtrace's own cost during one round.
struct Usage {
    cpu_ms: f64,
    peak_rss_kib: u64,
    rss_kib: u64,
}

/// One workload run; with a tracer, also what the tracer used.
fn measure(tracer_args: Option<&[&str]>, opts: &Options) -> Result<(f64, Option<Usage>)> {
    let bin = root_dir().join("target/release");
    let mut tracer = match tracer_args {
        None => None,
        Some(args) => Some(start_tracer(args, Stdio::null())?),
    };
    let out = output(
        Command::new(bin.join("fault-bench"))
            .arg(opts.mib.to_string())
            .arg(opts.passes.to_string()),
    )?;
    let rate = out
        .split("\"pages_per_sec\":")
        .nth(1)
        .and_then(|r| r.trim().trim_end_matches('}').parse::<f64>().ok())
        .context("fault-bench output")?;
    let usage = match tracer.take() {
        None => None,
        Some(child) => {
            let pid = child.id();
            let usage = match (
                cpu_ms(pid),
                status_kib(pid, "VmHWM:"),
                status_kib(pid, "VmRSS:"),
            ) {
                (Some(cpu_ms), Some(peak_rss_kib), Some(rss_kib)) => Some(Usage {
                    cpu_ms,
                    peak_rss_kib,
                    rss_kib,
                }),
                _ => None,
            };
            stop_tracer(child)?;
            usage
        }
    };
    Ok((rate, usage))
}

/// `fragtrace --json --no-status ARGS` (or `fragtrace daemon ...` as given), returned once its
/// hooks are attached.
pub(crate) fn start_tracer(args: &[&str], stdout: Stdio) -> Result<Child> {
    let tracer_flags: &[&str] = if args.first() == Some(&"daemon") {
        &[]
    } else {
        &["--json", "--no-status"]
    };
    let mut child = Command::new(root_dir().join("target/release/fragtrace"))
        .args(tracer_flags)
        .args(args)
        .stdout(stdout)
        .stderr(Stdio::piped())
        .spawn()
        .context("start fragtrace")?;
    let mut stderr = BufReader::new(child.stderr.take().expect("piped"));
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut line = String::new();
        if stderr.read_line(&mut line)? == 0 || Instant::now() > deadline {
            bail!("fragtrace did not attach (run as root)");
        }
        if line.contains("hooks attached") {
            break;
        }
    }
    std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));
    Ok(child)
}

pub(crate) fn stop_tracer(mut child: Child) -> Result<()> {
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let status = child.wait()?;
    if !status.success() {
        bail!("fragtrace exited with {status}");
    }
    Ok(())
}

/// The failure path: order-6 allocations refused by a v1 memory cgroup's charge, as fast as one
/// thread can make them, without fragtrace and with it (interleaved). Each failure costs
/// fragtrace a ring-buffer record with a 127-frame stack, the memory-cgroup walk in the kernel,
/// then decoding, symbolization, attribution and a JSON line in user space.
fn failure_path(opts: &Options) -> Result<()> {
    let root = Path::new("/sys/fs/cgroup/memory");
    if !root.join("memory.limit_in_bytes").exists() {
        println!(
            "\nfailure path: skipped, no cgroup v1 memory controller at {}",
            root.display()
        );
        return Ok(());
    }
    let cgroup = root.join(format!("fragtrace-bench-{}", std::process::id()));
    let pipe_max = "/proc/sys/fs/pipe-max-size";
    let old_pipe_max = std::fs::read_to_string(pipe_max)?;
    std::fs::create_dir(&cgroup).with_context(|| format!("mkdir {}", cgroup.display()))?;
    let result = std::fs::write(
        cgroup.join("memory.limit_in_bytes"),
        (64u64 << 20).to_string(),
    )
    .and_then(|_| std::fs::write(pipe_max, (16u32 << 20).to_string()))
    .context("set up the memory cgroup")
    .and_then(|_| failure_rounds(&cgroup, opts));
    let _ = std::fs::write(pipe_max, old_pipe_max.trim());
    for _ in 0..50 {
        if std::fs::remove_dir(&cgroup).is_ok() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let rounds = result?;
    let base: Vec<f64> = rounds.iter().map(|r| r.baseline).collect();
    let traced: Vec<f64> = rounds.iter().map(|r| r.traced).collect();
    let events: u64 = rounds.iter().map(|r| r.events).sum();
    let failures: u64 = rounds.iter().map(|r| r.failures).sum();
    let dropped: u64 = rounds.iter().map(|r| r.dropped).sum();
    let us: Vec<f64> = rounds
        .iter()
        .filter(|r| r.events > 0)
        .map(|r| r.cpu_ms * 1000.0 / r.events as f64)
        .collect();
    println!();
    println!(
        "failure path: fail-bench, {} s of order-6 memcg charge failures per round, {} interleaved rounds",
        opts.fail_secs, opts.rounds
    );
    println!();
    println!(
        "| configuration | median failures/s | ratio to baseline | alloc_fail events / failures (dropped) | fragtrace CPU per event |"
    );
    println!("|---|---:|---:|---:|---:|");
    println!(
        "| baseline (no tracer) | {:.0} | 1.000 | - | - |",
        median(&base)
    );
    println!(
        "| fragtrace (tp_btf, all hooks) | {:.0} | {:.3} | {events} / {failures} ({dropped}) | {:.0} us |",
        median(&traced),
        median(&traced) / median(&base),
        median(&us)
    );
    Ok(())
}

struct FailureRound {
    baseline: f64,
    traced: f64,
    /// With fragtrace: failures the workload saw, events printed for it, drops reported, and
    /// fragtrace's CPU time from attach to the end of the workload.
    failures: u64,
    events: u64,
    dropped: u64,
    cpu_ms: f64,
}

fn failure_rounds(cgroup: &Path, opts: &Options) -> Result<Vec<FailureRound>> {
    let bin = root_dir().join("target/release");
    let json = root_dir().join("target/bench-failure-path.jsonl");
    let workload = || -> Result<(f64, u64, u32)> {
        let mut child = Command::new(bin.join("fail-bench"))
            .arg(cgroup)
            .arg(opts.fail_secs.to_string())
            .stdout(Stdio::piped())
            .spawn()
            .context("start fail-bench")?;
        let pid = child.id();
        let mut out = String::new();
        std::io::Read::read_to_string(&mut child.stdout.take().expect("piped"), &mut out)?;
        if !child.wait()?.success() {
            bail!("fail-bench failed: {out}");
        }
        let v: serde_json::Value = serde_json::from_str(&out).context("fail-bench output")?;
        Ok((
            v["failures_per_sec"].as_f64().unwrap_or(0.0),
            v["failures"].as_u64().unwrap_or(0),
            pid,
        ))
    };
    let mut rounds = Vec::new();
    for round in 0..opts.rounds {
        let (baseline, _, _) = workload()?;
        let tracer = start_tracer(&[], Stdio::from(std::fs::File::create(&json)?))?;
        let cpu_before = cpu_ms(tracer.id()).unwrap_or(0.0);
        let (traced, failures, pid) = workload()?;
        // Let fragtrace drain what the workload left in the ring buffer.
        std::thread::sleep(Duration::from_millis(300));
        let cpu_ms = cpu_ms(tracer.id()).unwrap_or(0.0) - cpu_before;
        stop_tracer(tracer)?;
        let (mut events, mut dropped) = (0, 0);
        for line in std::fs::read_to_string(&json)?.lines() {
            let v: serde_json::Value = serde_json::from_str(line).context("fragtrace output")?;
            if v["type"] == "alloc_fail" && v["pid"] == pid {
                events += 1;
            } else if v["type"] == "summary" {
                dropped = v["dropped"].as_u64().unwrap_or(0);
            }
        }
        rounds.push(FailureRound {
            baseline,
            traced,
            // The failure that ended the set-up loop counts too.
            failures: failures + 1,
            events,
            dropped,
            cpu_ms,
        });
        eprintln!(
            "xtask bench: failure path round {} of {} done",
            round + 1,
            opts.rounds
        );
    }
    Ok(rounds)
}

/// utime + stime of a process, in milliseconds.
pub(crate) fn cpu_ms(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the `(comm)`: state is field 3; utime and stime are fields 14 and 15.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Some(ticks * 1000.0 / hz)
}

/// A `kB` line of /proc/PID/status.
pub(crate) fn status_kib(pid: u32, key: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

pub(crate) fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    s[s.len() / 2]
}

fn print_report(configs: &[Config], opts: &Options) -> Result<()> {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")?
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .map(|m| m.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")?;
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!("machine: {cpu}, {cores} cores, kernel {}", kernel.trim());
    println!(
        "workload: fault-bench {} MiB x {} passes per round (one order-0 page allocation per fault, THP off), {} interleaved rounds",
        opts.mib, opts.passes, opts.rounds
    );
    println!();
    println!(
        "| configuration | median faults/s | ratio to baseline | fragtrace CPU per round | fragtrace RSS (steady / peak at load) |"
    );
    println!("|---|---:|---:|---:|---:|");
    let base = median(&configs[0].rates);
    for c in configs {
        let m = median(&c.rates);
        let (cpu, rss) = if c.cpu_ms.is_empty() {
            ("-".to_string(), "-".to_string())
        } else {
            let mib = |v: &[u64]| *v.iter().max().unwrap_or(&0) as f64 / 1024.0;
            (
                format!("{:.0} ms", median(&c.cpu_ms)),
                format!("{:.1} / {:.1} MiB", mib(&c.rss_kib), mib(&c.peak_rss_kib)),
            )
        };
        println!(
            "| {} | {:.0} | {:.3} | {cpu} | {rss} |",
            c.name,
            m,
            m / base
        );
    }
    Ok(())
}
