//! `cargo xtask bench`: what fragtrace costs. Its parts, each selectable with `--only`:
//! - the workload matrix (bench_matrix.rs): page faults, getppid(), netns churn, fork+exit and
//!   loopback TCP under no tracer, the floor program, fragtrace's modes, the daemon, bpftrace
//!   and perf, interleaved round by round, with each program's kernel time from bpf_stats;
//! - the failure path (here): memory-cgroup charge failures live, and a recording replayed;
//! - storms (bench_storm.rs): BPF_PROG_TEST_RUN drives the failure program; counts and costs;
//! - the daemon on its own (bench_daemon.rs).
//!
//! Tracers run on CPU 0 and workloads on CPU 1 where the machine has both. Needs root.
use std::{
    io::{BufRead, BufReader},
    os::unix::process::CommandExt,
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
    /// getppid() calls per round of the syscall benchmark.
    #[arg(long, default_value_t = 5_000_000)]
    pub syscall_calls: u64,
    /// Network namespaces created per round (unshare(CLONE_NEWNET)).
    #[arg(long, default_value_t = 250)]
    pub netns_ops: u64,
    /// Processes forked and reaped per round.
    #[arg(long, default_value_t = 3000)]
    pub fork_ops: u64,
    /// 64 KiB loopback TCP writes per round.
    #[arg(long, default_value_t = 20_000)]
    pub tcp_ops: u64,
    /// Milliseconds every configuration (the baseline too) waits between the tracer's attach and
    /// the workload, so that start-up and the previous tracer's teardown stay out of the timing.
    #[arg(long, default_value_t = 1000)]
    pub settle_ms: u64,
    /// Rounds with kernel.bpf_stats_enabled=1, after the timed ones, for each program's kernel
    /// time per run (their timings are not used: the accounting costs every run).
    #[arg(long, default_value_t = 3)]
    pub stats_rounds: usize,
    /// Seconds of failing allocations recorded for the replay (`fragtrace report`) benchmark.
    #[arg(long, default_value_t = 5.0)]
    pub record_secs: f64,
    /// Seconds per rate step of the storm benchmark (BPF_PROG_TEST_RUN producer).
    #[arg(long, default_value_t = 3.0)]
    pub storm_secs: f64,
    /// Run only these parts (default: all of them, in this order).
    #[arg(long, value_enum, value_delimiter = ',')]
    pub only: Vec<Part>,
}

/// The parts of `cargo xtask bench`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    /// The workload matrix under every tracer configuration, and per-program kernel time.
    Matrix,
    /// The failure path: live, and replayed from a recording.
    Failure,
    /// Storm mode driven by BPF_PROG_TEST_RUN: rates, exact counts, in-kernel cost.
    Storm,
    /// The daemon on its own: start to attached, idle and storm CPU, memory.
    Daemon,
}

impl Options {
    fn runs(&self, part: Part) -> bool {
        self.only.is_empty() || self.only.contains(&part)
    }
}

/// Where the tracer and the workloads run, when the machine has both CPUs: apart, so that the
/// tracer's user space does not take the workload's CPU and the figures are the kernel side's.
pub(crate) const TRACER_CPU: usize = 0;
pub(crate) const WORKLOAD_CPU: usize = 1;

/// Whether this process may run on both CPUs (then children are pinned).
pub(crate) fn pinning() -> bool {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; sched_getaffinity fills it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) == 0
            && libc::CPU_ISSET(TRACER_CPU, &set)
            && libc::CPU_ISSET(WORKLOAD_CPU, &set)
    }
}

/// Runs the command on `cpu` alone (its threads inherit it), when [`pinning`] holds.
pub(crate) fn pin(cmd: &mut Command, cpu: usize) -> &mut Command {
    if !pinning() {
        return cmd;
    }
    // SAFETY: sched_setaffinity is async-signal-safe; the set lives on the child's stack.
    unsafe {
        cmd.pre_exec(move || {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(cpu, &mut set);
            if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        })
    }
}

/// The CPU placement, as the output states it.
pub(crate) fn placement() -> String {
    if pinning() {
        format!(
            "fragtrace pinned to CPU {TRACER_CPU}, the workload to CPU {WORKLOAD_CPU} (sched_setaffinity); other tasks on the machine are not pinned"
        )
    } else {
        "not pinned (this process cannot run on both CPU 0 and CPU 1)".into()
    }
}

/// `kernel.bpf_stats_enabled` on while the bench runs, its old value back after.
pub(crate) struct BpfStats {
    pub(crate) old: Option<String>,
}

const BPF_STATS: &str = "/proc/sys/kernel/bpf_stats_enabled";

impl BpfStats {
    pub(crate) fn enable() -> BpfStats {
        let old = std::fs::read_to_string(BPF_STATS).ok();
        if old.is_some() && std::fs::write(BPF_STATS, "1").is_err() {
            eprintln!("xtask bench: cannot enable {BPF_STATS}: no per-program figures");
            return BpfStats { old: None };
        }
        BpfStats { old }
    }
}

impl Drop for BpfStats {
    fn drop(&mut self) {
        if let Some(old) = &self.old {
            let _ = std::fs::write(BPF_STATS, old.trim());
        }
    }
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
        "--bin",
        "syscall-bench",
        "--bin",
        "storm-producer",
        "--bin",
        "ops-bench",
        "--bin",
        "bench-floor",
    ]))?;
    if opts.runs(Part::Matrix) {
        crate::bench_matrix::run(opts)?;
    }
    if opts.runs(Part::Failure) {
        failure_path(opts)?;
    }
    if opts.runs(Part::Storm) {
        crate::bench_storm::run(opts)?;
    }
    if opts.runs(Part::Daemon) {
        crate::bench_daemon::run(opts)?;
    }
    Ok(())
}

/// `fragtrace --json --no-status ARGS` (or `fragtrace daemon|record ...` as given), on the
/// tracer CPU, returned once its hooks are attached.
pub(crate) fn start_tracer(args: &[&str], stdout: Stdio) -> Result<Child> {
    let tracer_flags: &[&str] = if matches!(args.first(), Some(&"daemon" | &"record")) {
        &[]
    } else {
        &["--json", "--no-status"]
    };
    let mut cmd = Command::new(root_dir().join("target/release/fragtrace"));
    cmd.args(tracer_flags).args(args);
    start_attached(cmd, stdout)
}

/// Starts `cmd` on the tracer CPU and returns once it says on stderr that its hooks are
/// attached (fragtrace, bench-floor).
pub(crate) fn start_attached(mut cmd: Command, stdout: Stdio) -> Result<Child> {
    let mut child = pin(&mut cmd, TRACER_CPU)
        .stdout(stdout)
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("start {cmd:?}"))?;
    let mut stderr = BufReader::new(child.stderr.take().expect("piped"));
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut line = String::new();
        if stderr.read_line(&mut line)? == 0 || Instant::now() > deadline {
            bail!("{cmd:?} did not attach (run as root)");
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
    .and_then(|_| failure_rounds(&cgroup, opts))
    .map(|rounds| (rounds, replay(&cgroup, opts)));
    let _ = std::fs::write(pipe_max, old_pipe_max.trim());
    for _ in 0..50 {
        if std::fs::remove_dir(&cgroup).is_ok() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let (rounds, replay) = result?;
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
        "failure path: fail-bench, {} s of order-6 memcg charge failures per round, {} interleaved rounds; {}",
        opts.fail_secs,
        opts.rounds,
        placement()
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
    print_replay(replay, opts);
    Ok(())
}

/// A failure storm recorded, then replayed by `fragtrace report`.
struct Replay {
    bytes: u64,
    failures: u64,
    alloc_fail: u64,
    lines: u64,
    /// Per timed `report` run: user and system CPU, wall time, in seconds.
    runs: Vec<(f64, f64, f64)>,
}

const REPLAY_RUNS: usize = 5;

/// The user-space failure path alone: `fragtrace record --storm-threshold 0` while fail-bench
/// runs (every failure a record), then `fragtrace report FILE --json > /dev/null` timed from
/// wait4's rusage: decoding, analysis, attribution and JSON of each recorded event.
fn replay(cgroup: &Path, opts: &Options) -> Result<Replay> {
    let bin = root_dir().join("target/release");
    let recording = root_dir().join("target/bench-failure-path.rec");
    let path = recording.to_str().context("path")?;
    let recorder = start_tracer(
        &[
            "record",
            "-o",
            path,
            "--json",
            "--no-status",
            "--storm-threshold",
            "0",
        ],
        Stdio::null(),
    )?;
    let out = output(
        pin(&mut Command::new(bin.join("fail-bench")), WORKLOAD_CPU)
            .arg(cgroup)
            .arg(opts.record_secs.to_string()),
    )?;
    std::thread::sleep(Duration::from_millis(500));
    stop_tracer(recorder)?;
    let v: serde_json::Value = serde_json::from_str(out.trim()).context("fail-bench output")?;
    let report = || {
        let mut cmd = Command::new(bin.join("fragtrace"));
        cmd.args(["report", path, "--json"]);
        cmd
    };
    let json = output(&mut report())?;
    let mut replay = Replay {
        bytes: std::fs::metadata(&recording)?.len(),
        failures: v["failures"].as_u64().unwrap_or(0) + 1,
        alloc_fail: json
            .lines()
            .filter(|l| l.contains(r#""type":"alloc_fail""#))
            .count() as u64,
        lines: json.lines().count() as u64,
        runs: Vec::new(),
    };
    for _ in 0..REPLAY_RUNS {
        let started = Instant::now();
        let child = pin(&mut report(), WORKLOAD_CPU)
            .stdout(Stdio::from(std::fs::File::create("/dev/null")?))
            .spawn()
            .context("start fragtrace report")?;
        let (mut status, mut usage) = (0, std::mem::MaybeUninit::<libc::rusage>::zeroed());
        // SAFETY: waiting for our own child, into valid out-pointers.
        let (pid, usage) = unsafe {
            let pid = libc::wait4(child.id() as i32, &mut status, 0, usage.as_mut_ptr());
            (pid, usage.assume_init())
        };
        if pid <= 0 || !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
            bail!("fragtrace report failed (wait status {status})");
        }
        let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
        replay.runs.push((
            secs(usage.ru_utime),
            secs(usage.ru_stime),
            started.elapsed().as_secs_f64(),
        ));
    }
    let _ = std::fs::remove_file(&recording);
    Ok(replay)
}

fn print_replay(replay: Result<Replay>, opts: &Options) {
    println!();
    let r = match replay {
        Ok(r) => r,
        Err(e) => {
            println!("failure path replayed: skipped: {e:#}");
            return;
        }
    };
    println!(
        "failure path replayed: `fragtrace record --storm-threshold 0` for {} s of fail-bench, then `fragtrace report FILE --json > /dev/null` {REPLAY_RUNS} times (on CPU {WORKLOAD_CPU} when pinned), CPU from wait4",
        opts.record_secs
    );
    println!();
    let cpu: Vec<f64> = r.runs.iter().map(|(u, s, _)| u + s).collect();
    let user: Vec<f64> = r.runs.iter().map(|(u, _, _)| *u).collect();
    let sys: Vec<f64> = r.runs.iter().map(|(_, s, _)| *s).collect();
    let wall: Vec<f64> = r.runs.iter().map(|(_, _, w)| *w).collect();
    let per_event = median(&cpu) * 1e6 / r.alloc_fail.max(1) as f64;
    println!("| figure | measured |");
    println!("|---|---:|");
    println!(
        "| recording | {} bytes, {} failures, {} alloc_fail events, {} JSON lines in all |",
        r.bytes, r.failures, r.alloc_fail, r.lines
    );
    println!(
        "| report CPU, user + sys (median of {REPLAY_RUNS}; min-max) | {:.3} s = {:.3} + {:.3} ({:.3}-{:.3}) |",
        median(&cpu),
        median(&user),
        median(&sys),
        quantile(&cpu, 0.0),
        quantile(&cpu, 1.0)
    );
    println!("| report wall time (median) | {:.3} s |", median(&wall));
    println!(
        "| user-space CPU per alloc_fail event | {per_event:.2} us (target 5 us), {:.2} us per JSON line |",
        median(&cpu) * 1e6 / r.lines.max(1) as f64
    );
    println!(
        "| events per second per core | {:.0} |",
        1e6 / per_event.max(f64::MIN_POSITIVE)
    );
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
        let mut child = pin(&mut Command::new(bin.join("fail-bench")), WORKLOAD_CPU)
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
    cpu_split_ms(pid).map(|(user, sys)| user + sys)
}

/// utime and stime of a process, in milliseconds.
pub(crate) fn cpu_split_ms(pid: u32) -> Option<(f64, f64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the `(comm)`: state is field 3; utime and stime are fields 14 and 15.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    let (user, sys): (f64, f64) = (fields.get(11)?.parse().ok()?, fields.get(12)?.parse().ok()?);
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Some((user * 1000.0 / hz, sys * 1000.0 / hz))
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

/// The machine, the load and the placement, above the tables.
pub(crate) fn print_machine() -> Result<()> {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")?
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .map(|m| m.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")?;
    let load = std::fs::read_to_string("/proc/loadavg")?;
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!("machine: {cpu}, {cores} cores, kernel {}", kernel.trim());
    println!(
        "load average at the end of the interleaved rounds: {}",
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    println!("placement: {}", placement());
    Ok(())
}

/// Quantile `q` (0..=1) of `v`, nearest rank.
pub(crate) fn quantile(v: &[f64], q: f64) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    s[((s.len() - 1) as f64 * q).round() as usize]
}

/// `min / p25-p75 / max` of `v`, formatted with `prec` decimals.
pub(crate) fn spread(v: &[f64], prec: usize) -> String {
    format!(
        "{:.prec$} / {:.prec$}-{:.prec$} / {:.prec$}",
        quantile(v, 0.0),
        quantile(v, 0.25),
        quantile(v, 0.75),
        quantile(v, 1.0)
    )
}
