//! `cargo xtask bench`: what fragtrace costs on the hottest path it hooks. A page-fault workload
//! (one order-0 allocation per fault) runs without fragtrace and with it, per attach method,
//! interleaved round by round so machine noise hits every configuration alike; results are
//! medians and ratios against the baseline of the same run, plus fragtrace's own CPU time and
//! peak memory. Needs root.
use std::{
    io::{BufRead, BufReader},
    process::{Command, Stdio},
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
    print_report(&configs, opts)
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
        Some(args) => {
            let mut child = Command::new(bin.join("fragtrace"))
                .args(["--json", "--no-status"])
                .args(args)
                .stdout(Stdio::null())
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
            Some(child)
        }
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
    let usage = match tracer.as_mut() {
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
            // SAFETY: signalling our own child.
            unsafe { libc::kill(pid as i32, libc::SIGINT) };
            let status = child.wait()?;
            if !status.success() {
                bail!("fragtrace exited with {status}");
            }
            usage
        }
    };
    Ok((rate, usage))
}

/// utime + stime of a process, in milliseconds.
fn cpu_ms(pid: u32) -> Option<f64> {
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
fn status_kib(pid: u32, key: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

fn median(v: &[f64]) -> f64 {
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
