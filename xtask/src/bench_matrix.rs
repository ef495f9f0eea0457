//! The workload matrix of `cargo xtask bench`: five workloads (page faults, getppid(), netns
//! creation, fork+exit, loopback TCP) under no tracer, the floor (an empty program on
//! `mm_page_alloc`), fragtrace in its modes, the daemon, bpftrace doing fragtrace's
//! page-allocation job, and perf recording the same event. Configurations are interleaved round
//! by round, so machine noise hits each alike; within a round one tracer start serves all its
//! workloads. Figures are ns per operation: medians, spreads, the ns added over the baseline of
//! the same round, and that against the floor's. Then each program's kernel time per run, from
//! `kernel.bpf_stats_enabled`, in rounds of their own.
use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use anyhow::{Context, Result, bail};

use crate::{
    bench::{
        BpfStats, Options, TRACER_CPU, WORKLOAD_CPU, cpu_split_ms, median, pin, placement,
        quantile, spread, start_tracer, status_kib, stop_tracer,
    },
    util::{output, root_dir, succeeds},
};

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Workload {
    /// fault-bench: one order-0 page allocation per fault.
    Faults,
    /// syscall-bench: getppid(), what every system call pays.
    Getppid,
    /// ops-bench netns: unshare(CLONE_NEWNET).
    Netns,
    /// ops-bench fork: fork, _exit, waitpid.
    Fork,
    /// ops-bench tcp: a 64 KiB write and its read on loopback.
    Tcp,
}

const ALL: &[Workload] = &[
    Workload::Faults,
    Workload::Getppid,
    Workload::Netns,
    Workload::Fork,
    Workload::Tcp,
];

impl Workload {
    fn title(self, opts: &Options) -> String {
        match self {
            Workload::Faults => format!(
                "page faults: fault-bench, {} MiB x {} passes (one order-0 allocation per fault, THP off); ns per fault",
                opts.mib, opts.passes
            ),
            Workload::Getppid => format!(
                "getppid: syscall-bench, {} calls in 10 chunks; ns per call",
                opts.syscall_calls
            ),
            Workload::Netns => format!(
                "netns churn: ops-bench netns, {} unshare(CLONE_NEWNET); ns per new namespace",
                opts.netns_ops
            ),
            Workload::Fork => format!(
                "fork+exit: ops-bench fork, {} fork/_exit/waitpid; ns per process",
                opts.fork_ops
            ),
            Workload::Tcp => format!(
                "loopback TCP: ops-bench tcp, {} writes of 64 KiB read by a second thread; ns per 64 KiB",
                opts.tcp_ops
            ),
        }
    }

    /// One run on the workload CPU: ns per operation, and (getppid) the fastest chunk's.
    fn run(self, opts: &Options) -> Result<(f64, Option<f64>)> {
        let bin = root_dir().join("target/release");
        let (name, args, key) = match self {
            Workload::Faults => (
                "fault-bench",
                vec![opts.mib.to_string(), opts.passes.to_string()],
                "pages_per_sec",
            ),
            Workload::Getppid => (
                "syscall-bench",
                vec![opts.syscall_calls.to_string()],
                "ns_per_call",
            ),
            Workload::Netns => (
                "ops-bench",
                vec!["netns".into(), opts.netns_ops.to_string()],
                "ns_per_op",
            ),
            Workload::Fork => (
                "ops-bench",
                vec!["fork".into(), opts.fork_ops.to_string()],
                "ns_per_op",
            ),
            Workload::Tcp => (
                "ops-bench",
                vec!["tcp".into(), opts.tcp_ops.to_string()],
                "ns_per_op",
            ),
        };
        let out = output(pin(&mut Command::new(bin.join(name)), WORKLOAD_CPU).args(&args))?;
        let v: serde_json::Value =
            serde_json::from_str(out.trim()).with_context(|| format!("{name} output"))?;
        let figure = v[key]
            .as_f64()
            .with_context(|| format!("{name} output: {key}"))?;
        Ok(match self {
            Workload::Faults => (1e9 / figure, None),
            Workload::Getppid => (figure, v["best_chunk_ns_per_call"].as_f64()),
            _ => (figure, None),
        })
    }
}

/// What runs beside the workloads.
#[derive(Clone, Copy)]
enum Tracer {
    None,
    /// The empty `bench_floor` program (tests/src/bin/bench-floor.rs).
    Floor,
    /// fragtrace with these arguments (`daemon ...` for the daemon).
    Fragtrace(&'static [&'static str]),
    /// bpftrace doing fragtrace's page-allocation job: per-order counts, failures by stack.
    Bpftrace,
    /// `perf record` of kmem:mm_page_alloc filtered to failures, with call graphs, system-wide.
    PerfRecord,
    /// `perf kmem --page record`: every page allocation and free, system-wide.
    PerfKmem,
}

/// bpftrace's version of fragtrace's job on `mm_page_alloc` (bpftrace 0.17 syntax).
const BPFTRACE_JOB: &str = "tracepoint:kmem:mm_page_alloc { @allocs[args->order] = count(); \
     if (args->pfn == 0xffffffffffffffff) { @failures[kstack, comm, args->order] = count(); } }";

/// Kernel time and runs of one program, summed over rounds.
#[derive(Default, Clone, Copy)]
struct ProgStat {
    run_time_ns: u64,
    run_cnt: u64,
    /// Rounds in which it was attached.
    rounds: u64,
}

struct Config {
    name: &'static str,
    tracer: Tracer,
    workloads: &'static [Workload],
    /// ns per operation, per workload, per round.
    values: BTreeMap<Workload, Vec<f64>>,
    /// getppid's fastest chunk, per round.
    best: Vec<f64>,
    /// The tracer's CPU per round (all workloads), and its memory.
    user_ms: Vec<f64>,
    sys_ms: Vec<f64>,
    peak_rss_kib: Vec<u64>,
    rss_kib: Vec<u64>,
    progs: BTreeMap<String, ProgStat>,
    /// Rounds in which bpftool answered.
    prog_rounds: u64,
}

fn config(name: &'static str, tracer: Tracer, workloads: &'static [Workload]) -> Config {
    Config {
        name,
        tracer,
        workloads,
        values: BTreeMap::new(),
        best: Vec::new(),
        user_ms: Vec::new(),
        sys_ms: Vec::new(),
        peak_rss_kib: Vec::new(),
        rss_kib: Vec::new(),
        progs: BTreeMap::new(),
        prog_rounds: 0,
    }
}

pub fn run(opts: &Options) -> Result<()> {
    let scratch = root_dir().join("target/bench-matrix");
    let _ = std::fs::remove_dir_all(&scratch);
    std::fs::create_dir_all(&scratch)?;
    let daemon: &[&str] = &["daemon", "--listen", "127.0.0.1:0"];
    let mut configs = vec![
        config("no tracer", Tracer::None, ALL),
        config("floor (empty tp_btf program)", Tracer::Floor, ALL),
        config("fragtrace (default: tp_btf)", Tracer::Fragtrace(&[]), ALL),
        config(
            "fragtrace --force-method raw_tp",
            Tracer::Fragtrace(&["--force-method", "raw_tp"]),
            &[Workload::Faults],
        ),
        config(
            "fragtrace --force-method tracepoint",
            Tracer::Fragtrace(&["--force-method", "tracepoint"]),
            &[Workload::Faults],
        ),
        config(
            "fragtrace --netns-syscalls",
            Tracer::Fragtrace(&["--netns-syscalls"]),
            &[Workload::Getppid, Workload::Netns],
        ),
        config("fragtrace daemon", Tracer::Fragtrace(daemon), ALL),
        config("bpftrace, same job", Tracer::Bpftrace, ALL),
        config("perf record (failures, -g)", Tracer::PerfRecord, ALL),
        config("perf kmem --page record", Tracer::PerfKmem, ALL),
    ];
    let missing: Vec<&str> = ["bpftrace", "perf"]
        .into_iter()
        .filter(|tool| !succeeds(Command::new(tool).arg("--version")))
        .collect();
    if !missing.is_empty() {
        eprintln!(
            "xtask bench: {} not found (cargo xtask setup installs them): those configurations are left out",
            missing.join(", ")
        );
        configs.retain(|c| match c.tracer {
            Tracer::Bpftrace => !missing.contains(&"bpftrace"),
            Tracer::PerfRecord | Tracer::PerfKmem => !missing.contains(&"perf"),
            _ => true,
        });
    }
    eprintln!("xtask bench: {}", placement());
    for round in 0..opts.rounds {
        // Each round starts one configuration further on, so that none always follows the
        // same one (perf kmem's large files, a tracer's teardown, the netns workqueue).
        let n = configs.len();
        for i in 0..n {
            let c = &mut configs[(round + i) % n];
            let sample = measure(c, opts, &scratch, false)
                .with_context(|| format!("round {}, {}", round + 1, c.name))?;
            for (w, (ns, best)) in sample.values {
                eprintln!(
                    "xtask bench: round {}, {w:?}, {}: {ns:.1} ns/op",
                    round + 1,
                    c.name
                );
                c.values.entry(w).or_default().push(ns);
                if let Some(b) = best {
                    c.best.push(b);
                }
            }
            if let Some(u) = sample.usage {
                c.user_ms.push(u.user_ms);
                c.sys_ms.push(u.sys_ms);
                c.peak_rss_kib.push(u.peak_rss_kib);
                c.rss_kib.push(u.rss_kib);
            }
        }
        eprintln!("xtask bench: round {} of {} done", round + 1, opts.rounds);
    }
    crate::bench::print_machine()?;
    for &w in ALL {
        print_workload(&configs, w, opts);
    }
    print_tracer_costs(&configs);
    // Per-program figures in rounds of their own: the accounting's clock reads would add to
    // every run of every program in the timed rounds above.
    let stats = BpfStats::enable();
    for round in 0..opts.stats_rounds {
        for c in configs
            .iter_mut()
            .filter(|c| !matches!(c.tracer, Tracer::None))
        {
            let sample = measure(c, opts, &scratch, true)
                .with_context(|| format!("bpf_stats round {}, {}", round + 1, c.name))?;
            if let Some(progs) = sample.progs {
                c.prog_rounds += 1;
                for (name, s) in progs {
                    let t = c.progs.entry(name).or_default();
                    t.run_time_ns += s.run_time_ns;
                    t.run_cnt += s.run_cnt;
                    t.rounds += s.rounds;
                }
            }
        }
        eprintln!(
            "xtask bench: bpf_stats round {} of {} done",
            round + 1,
            opts.stats_rounds
        );
    }
    let stats_on = stats.old.is_some();
    drop(stats);
    print_progs(&configs, stats_on, opts);
    let _ = std::fs::remove_dir_all(&scratch);
    Ok(())
}

/// The tracer's own cost during one round.
struct Usage {
    user_ms: f64,
    sys_ms: f64,
    peak_rss_kib: u64,
    rss_kib: u64,
}

/// One round of one configuration.
struct Sample {
    values: Vec<(Workload, (f64, Option<f64>))>,
    usage: Option<Usage>,
    progs: Option<BTreeMap<String, ProgStat>>,
}

/// Starts the configuration's tracer, waits `--settle-ms` (the baseline too), runs each of its
/// workloads, then reads what the tracer used and stops it.
fn measure(c: &Config, opts: &Options, scratch: &Path, with_progs: bool) -> Result<Sample> {
    let mut tracer = start(c.tracer, scratch)?;
    std::thread::sleep(Duration::from_millis(opts.settle_ms));
    let mut values = Vec::new();
    for &w in c.workloads {
        values.push((w, w.run(opts)?));
    }
    let (usage, progs) = match tracer.take() {
        None => (None, None),
        Some(mut child) => {
            if let Some(status) = child.try_wait()? {
                bail!("the tracer exited during the workloads ({status})");
            }
            let pid = child.id();
            let usage = match (
                cpu_split_ms(pid),
                status_kib(pid, "VmHWM:"),
                status_kib(pid, "VmRSS:"),
            ) {
                (Some((user_ms, sys_ms)), Some(peak_rss_kib), Some(rss_kib)) => Some(Usage {
                    user_ms,
                    sys_ms,
                    peak_rss_kib,
                    rss_kib,
                }),
                _ => None,
            };
            let progs = if with_progs { prog_stats(pid) } else { None };
            match c.tracer {
                Tracer::Fragtrace(_) | Tracer::Floor => stop_tracer(child)?,
                _ => stop_tool(child)?,
            }
            (usage, progs)
        }
    };
    // perf's files are large (perf kmem: every allocation and free); none is kept.
    for f in std::fs::read_dir(scratch)?.flatten() {
        let _ = std::fs::remove_file(f.path());
    }
    Ok(Sample {
        values,
        usage,
        progs,
    })
}

/// The tracer of a configuration on the tracer CPU; fragtrace and the floor are returned once
/// attached, the other tools once started (the settle time covers their attach).
fn start(tracer: Tracer, scratch: &Path) -> Result<Option<Child>> {
    let data = |name: &str| -> PathBuf { scratch.join(name) };
    let tool = |cmd: &mut Command| -> Result<Option<Child>> {
        Ok(Some(
            pin(cmd, TRACER_CPU)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .with_context(|| format!("start {cmd:?}"))?,
        ))
    };
    match tracer {
        Tracer::None => Ok(None),
        Tracer::Fragtrace(args) => Ok(Some(start_tracer(args, Stdio::null())?)),
        Tracer::Floor => Ok(Some(crate::bench::start_attached(
            Command::new(root_dir().join("target/release/bench-floor")),
            Stdio::null(),
        )?)),
        Tracer::Bpftrace => tool(Command::new("bpftrace").args(["-e", BPFTRACE_JOB])),
        Tracer::PerfRecord => tool(
            Command::new("perf")
                .args(["record", "-q", "-a", "-g", "-e", "kmem:mm_page_alloc"])
                .args(["--filter", "pfn == 0xffffffffffffffff", "-o"])
                .arg(data("perf-record.data")),
        ),
        Tracer::PerfKmem => tool(
            Command::new("perf")
                .args(["kmem", "--page", "record", "-o"])
                .arg(data("perf-kmem.data"))
                // perf kmem record wants a command; the record is system-wide (-a) anyway.
                .args(["sleep", "3600"]),
        ),
    }
}

/// Stops bpftrace or perf with SIGINT, as a user would; they must still be running.
fn stop_tool(mut child: Child) -> Result<()> {
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let status = child.wait()?;
    // perf and bpftrace exit 0 on SIGINT, or by the signal itself.
    if !status.success() && status.code().is_some() {
        bail!("the tool exited with {status}");
    }
    Ok(())
}

/// The BPF programs process `pid` holds (from its fds' fdinfo), by name, with their
/// `run_time_ns` and `run_cnt` (bpftool), counted since each was loaded. None without bpftool.
fn prog_stats(pid: u32) -> Option<BTreeMap<String, ProgStat>> {
    let mut ids = BTreeSet::new();
    for fd in std::fs::read_dir(format!("/proc/{pid}/fdinfo"))
        .ok()?
        .flatten()
    {
        if let Ok(info) = std::fs::read_to_string(fd.path()) {
            ids.extend(info.lines().filter_map(|l| {
                l.strip_prefix("prog_id:")
                    .and_then(|v| v.trim().parse::<u64>().ok())
            }));
        }
    }
    let out = Command::new("bpftool")
        .args(["prog", "show", "--json"])
        .stderr(Stdio::null())
        .output()
        .ok()?;
    let progs: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    let mut stats = BTreeMap::new();
    for p in progs.as_array()? {
        if !p["id"].as_u64().is_some_and(|id| ids.contains(&id)) {
            continue;
        }
        let name = format!(
            "{} ({})",
            p["name"].as_str().unwrap_or("?"),
            p["type"].as_str().unwrap_or("?")
        );
        let s: &mut ProgStat = stats.entry(name).or_default();
        s.run_time_ns += p["run_time_ns"].as_u64().unwrap_or(0);
        s.run_cnt += p["run_cnt"].as_u64().unwrap_or(0);
        s.rounds = 1;
    }
    Some(stats)
}

/// Per round: this configuration's ns per op less the baseline's of the same round.
fn added(values: &[f64], base: &[f64]) -> Vec<f64> {
    values.iter().zip(base).map(|(v, b)| v - b).collect()
}

/// One table per workload: every configuration that ran it, against the baseline and the
/// floor of the same rounds.
fn print_workload(configs: &[Config], w: Workload, opts: &Options) {
    let rows: Vec<(&Config, &Vec<f64>)> = configs
        .iter()
        .filter_map(|c| Some((c, c.values.get(&w)?)))
        .collect();
    let Some(&(_, base)) = rows.iter().find(|(c, _)| matches!(c.tracer, Tracer::None)) else {
        return;
    };
    let floor_added = rows
        .iter()
        .find(|(c, _)| matches!(c.tracer, Tracer::Floor))
        .map(|(_, v)| median(&added(v, base)));
    let prec = if median(base) < 1000.0 { 1 } else { 0 };
    println!();
    println!("{}, {} interleaved rounds", w.title(opts), base.len());
    println!();
    println!(
        "| configuration | median ns/op | spread: min / p25-p75 / max | ns added: median of per-round differences (p25-p75) | ratio of medians | per-round ratio: median (min-max) | added ÷ floor's added |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    let base_median = median(base);
    for (c, v) in &rows {
        let m = median(v);
        let add = added(v, base);
        let ratios: Vec<f64> = v.iter().zip(base.iter()).map(|(a, b)| a / b).collect();
        let of_floor = match (c.tracer, floor_added) {
            (Tracer::None, _) => "-".to_string(),
            (_, Some(f)) if f > 0.0 => format!("{:.2}", median(&add) / f),
            (_, Some(_)) => "floor added nothing measurable".to_string(),
            (_, None) => "-".to_string(),
        };
        println!(
            "| {} | {m:.prec$} | {} | {:+.prec$} ({:+.prec$} to {:+.prec$}) | {:.3} | {:.3} ({:.3}-{:.3}) | {of_floor} |",
            c.name,
            spread(v, prec),
            median(&add),
            quantile(&add, 0.25),
            quantile(&add, 0.75),
            m / base_median,
            median(&ratios),
            quantile(&ratios, 0.0),
            quantile(&ratios, 1.0),
        );
    }
    if w == Workload::Getppid {
        let base_best = rows
            .iter()
            .find(|(c, _)| matches!(c.tracer, Tracer::None))
            .map(|(c, _)| median(&c.best));
        if let Some(bb) = base_best {
            let best: Vec<String> = rows
                .iter()
                .filter(|(c, _)| !c.best.is_empty())
                .map(|(c, _)| format!("{} {:.3}", c.name, median(&c.best) / bb))
                .collect();
            println!();
            println!(
                "getppid, fastest of 10 chunks per round, median over rounds, ratio to no tracer: {}",
                best.join("; ")
            );
        }
    }
}

/// Each tracer's own CPU and memory per round (all its workloads).
fn print_tracer_costs(configs: &[Config]) {
    println!();
    println!(
        "the tracers' own cost per round (settle time and all the round's workloads), on the tracer CPU"
    );
    println!();
    println!("| configuration | CPU per round, median (user / sys) | RSS, max (steady / peak) |");
    println!("|---|---:|---:|");
    let mib = |v: &[u64]| *v.iter().max().unwrap_or(&0) as f64 / 1024.0;
    for c in configs.iter().filter(|c| !c.user_ms.is_empty()) {
        println!(
            "| {} | {:.0} / {:.0} ms | {:.1} / {:.1} MiB |",
            c.name,
            median(&c.user_ms),
            median(&c.sys_ms),
            mib(&c.rss_kib),
            mib(&c.peak_rss_kib)
        );
    }
}

/// Kernel time per run of each program that ran, from bpf_stats.
fn print_progs(configs: &[Config], stats_on: bool, opts: &Options) {
    println!();
    if !stats_on {
        println!("per-program kernel cost: skipped, kernel.bpf_stats_enabled could not be set");
        return;
    }
    if configs.iter().all(|c| c.prog_rounds == 0) {
        println!("per-program kernel cost: skipped, bpftool not found (cargo xtask setup)");
        return;
    }
    println!(
        "per-program kernel cost: {} more rounds per configuration with kernel.bpf_stats_enabled=1 (not the timed ones); bpftool prog show, the programs the tracer's fds hold; summed over rounds and the round's workloads, from load to the end of the last workload, all CPUs; includes the accounting's own clock reads",
        opts.stats_rounds
    );
    println!();
    println!(
        "| configuration | program (type) | runs per round | ns per run | attached in rounds |"
    );
    println!("|---|---|---:|---:|---:|");
    for c in configs.iter().filter(|c| c.prog_rounds > 0) {
        let idle = c.progs.values().filter(|s| s.run_cnt == 0).count();
        for (name, s) in c.progs.iter().filter(|(_, s)| s.run_cnt > 0) {
            println!(
                "| {} | {name} | {:.1} | {:.1} | {} |",
                c.name,
                s.run_cnt as f64 / c.prog_rounds as f64,
                s.run_time_ns as f64 / s.run_cnt as f64,
                s.rounds
            );
        }
        if idle > 0 {
            println!("| {} | {idle} more attached, never run | | | |", c.name);
        }
    }
}
