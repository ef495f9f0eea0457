//! Storm mode, driven by BPF_PROG_TEST_RUN: `storm-producer` calls a running fragtrace's own
//! `page_alloc_raw` program (`--force-method raw_tp`) with a NULL page, one call per failure,
//! from one or more threads, at a ladder of rates and then as fast as it can. Each step has a
//! fragtrace of its own; its count of the producer's failures (records analysed plus those
//! counted by stack in storm mode, both for the producer's task name only, from the folded
//! failure stacks) is judged against the producer's own count of successful calls. With
//! kernel.bpf_stats_enabled on, the program's run_time_ns/run_cnt over the step give its kernel
//! time per failure; the program's other runs (the tracepoint on the machine's own page
//! allocations, measured beforehand for a while without calls) are taken out. A last step
//! walks every stack (`--storm-stacks` at its maximum), so that a fit over the steps can tell
//! apart the cost of a record, of storm mode with a stack, and of storm mode past the budget.
use std::{
    process::{Command, Stdio},
    time::Duration,
};

use anyhow::{Context, Result, bail};

use crate::{
    bench::{BpfStats, Options, WORKLOAD_CPU, pin, placement, start_tracer, stop_tracer},
    util::root_dir,
};

/// The producer's task name: fragtrace's per-task counts are matched on it.
const COMM: &str = "storm-producer";
/// fragtrace's default `--storm-threshold`: failure records per second and CPU.
const THRESHOLD: u64 = 2000;
/// fragtrace's default `--storm-stacks`: stacks walked per second and CPU in storm mode.
const STACK_BUDGET: u64 = 1000;
/// Seconds the producer watches the program without calling it, before each step.
const BASELINE_SECS: f64 = 0.5;

/// One rung of the ladder.
struct Step {
    name: &'static str,
    threads: usize,
    /// Calls per second in all; None: as fast as the threads can.
    rate: Option<u64>,
    /// Run the producer on the workload CPU alone.
    pinned: bool,
    /// fragtrace's `--storm-stacks`, if not its default: a stack walked for every failure.
    every_stack: bool,
}

const STEPS: &[Step] = &[
    Step {
        name: "paced 1k/s",
        threads: 2,
        rate: Some(1_000),
        pinned: false,
        every_stack: false,
    },
    Step {
        name: "paced 5k/s",
        threads: 2,
        rate: Some(5_000),
        pinned: false,
        every_stack: false,
    },
    Step {
        name: "paced 20k/s",
        threads: 2,
        rate: Some(20_000),
        pinned: false,
        every_stack: false,
    },
    Step {
        name: "paced 100k/s",
        threads: 2,
        rate: Some(100_000),
        pinned: false,
        every_stack: false,
    },
    Step {
        name: "unpaced, 1 thread",
        threads: 1,
        rate: None,
        pinned: true,
        every_stack: false,
    },
    Step {
        name: "unpaced, 2 threads",
        threads: 2,
        rate: None,
        pinned: false,
        every_stack: false,
    },
    Step {
        name: "unpaced, 2 threads, every stack walked",
        threads: 2,
        rate: None,
        pinned: false,
        every_stack: true,
    },
];

/// What one step measured.
struct Outcome {
    calls: u64,
    errors: u64,
    seconds: f64,
    /// fragtrace's count for COMM: records analysed and counted by stack, from the folded stacks.
    counted: u64,
    /// Failure records analysed (summary `events`, filtered to COMM).
    records: u64,
    /// Failures of COMM counted by stack in the kernel, past the storm threshold or with the
    /// ring buffer full (folded stacks minus records).
    by_stack: u64,
    /// Of `by_stack`: counted without a stack, past the stack budget (`--storm-stacks`).
    stack_not_taken: u64,
    /// The kernel's storm-mode counter, all tasks.
    storm_all: u64,
    /// The kernel's failure count, all tasks.
    kernel: u64,
    dropped: u64,
    drain_shed: u64,
    output_shed: u64,
    /// The program over the producer's calls: runs, ns; and the baseline's (no calls).
    run_cnt: u64,
    run_ns: u64,
    base_cnt: u64,
    base_ns: u64,
}

impl Outcome {
    fn exact(&self) -> bool {
        self.errors == 0 && self.counted == self.calls
    }

    /// Kernel ns per run of the program's other runs (the machine's own allocations).
    fn other_ns_per_run(&self) -> Option<f64> {
        (self.base_cnt > 0).then(|| self.base_ns as f64 / self.base_cnt as f64)
    }

    /// The program's other runs during the step, and their estimated kernel ns.
    fn others(&self) -> (u64, f64) {
        let n = self.run_cnt.saturating_sub(self.calls);
        (n, n as f64 * self.other_ns_per_run().unwrap_or(0.0))
    }

    /// Kernel ns spent on the calls: the program's time over the step, less its other runs at
    /// their baseline cost. None without bpf_stats.
    fn calls_ns(&self) -> Option<f64> {
        if self.run_cnt < self.calls || self.run_ns == 0 || self.calls == 0 {
            return None;
        }
        Some((self.run_ns as f64 - self.others().1).max(0.0))
    }

    /// Kernel ns per failure.
    fn ns_per_failure(&self) -> Option<f64> {
        self.calls_ns().map(|ns| ns / self.calls as f64)
    }
}

pub fn run(opts: &Options) -> Result<()> {
    let scratch = root_dir().join("target/bench-storm");
    let _ = std::fs::remove_dir_all(&scratch);
    std::fs::create_dir_all(&scratch)?;
    let stats = BpfStats::enable();
    let stats_on = stats.old.is_some();
    let mut outcomes = Vec::new();
    for (i, step) in STEPS.iter().enumerate() {
        let outcome = run_step(step, i, opts, &scratch).with_context(|| step.name)?;
        eprintln!(
            "xtask bench: storm step {} of {}, {}: {} calls, fragtrace counted {} ({})",
            i + 1,
            STEPS.len(),
            step.name,
            outcome.calls,
            outcome.counted,
            if outcome.exact() {
                "exact"
            } else {
                "NOT exact"
            }
        );
        outcomes.push(outcome);
    }
    drop(stats);
    print_table(&outcomes, stats_on, opts);
    Ok(())
}

fn run_step(
    step: &Step,
    index: usize,
    opts: &Options,
    scratch: &std::path::Path,
) -> Result<Outcome> {
    let json = scratch.join(format!("step{index}.jsonl"));
    let folded = scratch.join(format!("step{index}.folded"));
    let mut args = vec![
        "--force-method",
        "raw_tp",
        "--comm",
        COMM,
        "--folded",
        folded.to_str().context("path")?,
    ];
    let every = u32::MAX.to_string();
    if step.every_stack {
        args.extend(["--storm-stacks", &every]);
    }
    let tracer = start_tracer(&args, Stdio::from(std::fs::File::create(&json)?))?;
    std::thread::sleep(Duration::from_millis(opts.settle_ms));
    let mut producer = Command::new(root_dir().join("target/release/storm-producer"));
    if step.pinned {
        pin(&mut producer, WORKLOAD_CPU);
    }
    producer.args([
        "--pid",
        &tracer.id().to_string(),
        "--threads",
        &step.threads.to_string(),
        "--seconds",
        &opts.storm_secs.to_string(),
        "--comm",
        COMM,
        "--baseline",
        &BASELINE_SECS.to_string(),
        // Counted for the producer's lifetime even if something turns the sysctl off.
        "--bpf-stats",
    ]);
    if let Some(rate) = step.rate {
        producer.args(["--rate", &rate.to_string()]);
    }
    let out = producer.output().context("run storm-producer")?;
    // Whatever the step left in the ring buffer is drained before the summary.
    std::thread::sleep(Duration::from_millis(500));
    stop_tracer(tracer)?;
    if !out.status.success() {
        bail!(
            "storm-producer failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let p: serde_json::Value =
        serde_json::from_slice(&out.stdout).context("storm-producer output")?;
    let text = std::fs::read_to_string(&json)?;
    let summary: serde_json::Value = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["type"] == "summary")
        .context("fragtrace printed no summary")?;
    // Records and storm-mode counts of COMM, whatever their stacks; the root frame is the task.
    let folded = std::fs::read_to_string(&folded)?;
    let count_of = |keep: &dyn Fn(&str) -> bool| -> u64 {
        folded
            .lines()
            .filter(|l| l.split(';').next() == Some(COMM) && keep(l))
            .filter_map(|l| l.rsplit_once(' ').and_then(|(_, n)| n.parse::<u64>().ok()))
            .sum()
    };
    let counted = count_of(&|_| true);
    let stack_not_taken = count_of(&|l| l.contains(";[stack not taken]"));
    let u = |v: &serde_json::Value| v.as_u64().unwrap_or(0);
    let records = u(&summary["events"]);
    Ok(Outcome {
        calls: u(&p["calls"]),
        errors: u(&p["errors"]),
        seconds: p["seconds"].as_f64().unwrap_or(0.0),
        counted,
        records,
        by_stack: counted.saturating_sub(records),
        stack_not_taken,
        storm_all: u(&summary["storm_aggregated"]),
        kernel: summary["fail_by_order"]
            .as_array()
            .map_or(0, |a| a.iter().map(u).sum()),
        dropped: u(&summary["dropped"]),
        drain_shed: u(&summary["tracer"]["drain_shed"]),
        output_shed: u(&summary["tracer"]["output_shed"]),
        run_cnt: u(&p["prog_run_cnt"]),
        run_ns: u(&p["prog_run_time_ns"]),
        base_cnt: u(&p["baseline_run_cnt"]),
        base_ns: u(&p["baseline_run_time_ns"]),
    })
}

fn print_table(outcomes: &[Outcome], stats_on: bool, opts: &Options) {
    println!();
    println!(
        "storm mode: storm-producer calls fragtrace's page_alloc_raw (--force-method raw_tp) with BPF_PROG_TEST_RUN, page NULL, order 6, one call per failure, {} s per step; storm threshold {THRESHOLD} records/s per CPU and {STACK_BUDGET} stacks walked per second and CPU past it (the defaults; the last step walks every stack: --storm-stacks 4294967295); {}; producer threads pinned round robin to CPUs 0 and 1 (1 thread: CPU {WORKLOAD_CPU})",
        opts.storm_secs,
        placement()
    );
    println!(
        "counted = fragtrace's records analysed + failures of the producer's task ({COMM}) counted by stack in the kernel, from the folded failure stacks; by stack = counted - records: past the storm threshold (storm mode) or with the ring buffer full (dropped, all tasks, counted by stack too); drain_shed = lost at exit"
    );
    println!();
    println!(
        "| step | threads | reached failures/s | producer count | fragtrace count | exact? | records analysed (per s) | counted by stack: {COMM} (of which without a stack) / storm mode, all tasks | dropped / drain_shed | program runs: calls + others (others' est. share of its time) | kernel ns per failure |"
    );
    println!("|---|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|");
    for (step, o) in STEPS.iter().zip(outcomes) {
        let exact = if o.exact() {
            "EXACT".to_string()
        } else if o.errors > 0 {
            format!("{} calls failed", o.errors)
        } else {
            format!("NO: {:+}", o.counted as i64 - o.calls as i64)
        };
        let ns = o
            .ns_per_failure()
            .map_or("-".to_string(), |ns| format!("{ns:.0}"));
        let (others, others_ns) = o.others();
        let runs = if o.run_cnt < o.calls {
            "-".to_string()
        } else {
            format!(
                "{} + {others} ({:.0}%)",
                o.calls,
                100.0 * others_ns / o.run_ns.max(1) as f64
            )
        };
        println!(
            "| {} | {} | {:.0} | {} | {} | {exact} | {} ({:.0}) | {} ({}) / {} | {} / {} | {runs} | {ns} |",
            step.name,
            step.threads,
            o.calls as f64 / o.seconds.max(f64::MIN_POSITIVE),
            o.calls,
            o.counted,
            o.records,
            o.records as f64 / o.seconds.max(f64::MIN_POSITIVE),
            o.by_stack,
            o.stack_not_taken,
            o.storm_all,
            o.dropped,
            o.drain_shed,
        );
    }
    println!();
    let max = outcomes
        .iter()
        .map(|o| o.calls as f64 / o.seconds.max(f64::MIN_POSITIVE))
        .fold(0.0, f64::max);
    println!("highest rate reached: {max:.0} failures/s (stretch goal 1,000,000)");
    let inexact: Vec<&str> = STEPS
        .iter()
        .zip(outcomes)
        .filter(|(_, o)| !o.exact())
        .map(|(s, _)| s.name)
        .collect();
    if inexact.is_empty() {
        println!("counts exact at every step: yes");
    } else {
        println!(
            "counts exact at every step: NO, not at: {}",
            inexact.join(", ")
        );
        for (step, o) in STEPS.iter().zip(outcomes).filter(|(_, o)| !o.exact()) {
            println!(
                "  {}: {} produced, {} counted ({} records + {} by stack); lost at exit {}; storm-mode counter + dropped (all tasks) {} vs {} by stack for the producer (a difference other tasks' storms cannot explain if none stormed); kernel failure count {} (all tasks); {} lines not written",
                step.name,
                o.calls,
                o.counted,
                o.records,
                o.by_stack,
                o.drain_shed,
                o.storm_all + o.dropped,
                o.by_stack,
                o.kernel,
                o.output_shed,
            );
        }
    }
    // Where records stop: the first step with storm-mode counts.
    if let Some((step, o)) = STEPS.iter().zip(outcomes).find(|(_, o)| o.storm_all > 0) {
        println!(
            "aggregation takes over from {} ({:.0} failures/s on {} CPU(s)): records level off at about {THRESHOLD}/s per CPU ({:.0}/s here)",
            step.name,
            o.calls as f64 / o.seconds.max(f64::MIN_POSITIVE),
            step.threads,
            o.records as f64 / o.seconds.max(f64::MIN_POSITIVE)
        );
    }
    if outcomes.iter().all(|o| o.calls_ns().is_none()) {
        println!(
            "kernel time per failure: skipped, no bpf_stats (kernel.bpf_stats_enabled {}, BPF_ENABLE_STATS refused or not counted)",
            if stats_on { "set" } else { "could not be set" }
        );
        return;
    }
    println!(
        "kernel ns per failure: page_alloc_raw's run_time_ns over its runs during the step (bpf_stats), less its other runs (the machine's own page allocations) at their cost measured for {BASELINE_SECS} s before the calls, over the calls; the synthetic failure's stack is the short bpf() syscall path"
    );
    // Each step's time on the calls is records x r + storm-aggregated with a stack x s +
    // without one x n: least squares over the steps. Failures that found the ring buffer full
    // count as records, or as past the budget when their stack was not taken (the folded
    // stacks cannot tell them from storm mode's); at most `dropped` of them, few in practice.
    let points: Vec<([f64; 3], f64)> = outcomes
        .iter()
        .filter_map(|o| {
            let t = o.calls_ns()?;
            let storm = o.storm_all.min(o.calls) as f64;
            let without = (o.stack_not_taken as f64).min(storm);
            Some(([o.calls as f64 - storm, storm - without, without], t))
        })
        .collect();
    match least_squares(&points) {
        Some([r, s, n]) => println!(
            "  fit over the {} steps (time = records x r + storm-aggregated with a stack x s + without one x n): record mode r = {r:.0} ns, storm mode with a stack s = {s:.0} ns, past the stack budget n = {n:.0} ns per failure",
            points.len(),
        ),
        None => println!("  no fit: the steps do not separate the three kinds of failure"),
    }
    let mut other: Vec<f64> = outcomes
        .iter()
        .filter_map(|o| o.other_ns_per_run())
        .collect();
    other.sort_by(f64::total_cmp);
    match other.get(other.len() / 2) {
        Some(ns) => println!(
            "  the program's other runs (the machine's own page allocations, in {} of {} baselines): {ns:.0} ns each (median)",
            other.len(),
            outcomes.len()
        ),
        None => println!("  the program did not run otherwise during the baselines"),
    }
}

/// Least squares for `t = x . c` over the points: the normal equations, by Cramer's rule.
fn least_squares(points: &[([f64; 3], f64)]) -> Option<[f64; 3]> {
    let mut a = [[0.0; 3]; 3];
    let mut b = [0.0; 3];
    for (x, t) in points {
        for i in 0..3 {
            b[i] += x[i] * t;
            for j in 0..3 {
                a[i][j] += x[i] * x[j];
            }
        }
    }
    let det = |m: &[[f64; 3]; 3]| {
        m[0][0] * (m[1][1] * m[2][2] - m[1][2] * m[2][1])
            - m[0][1] * (m[1][0] * m[2][2] - m[1][2] * m[2][0])
            + m[0][2] * (m[1][0] * m[2][1] - m[1][1] * m[2][0])
    };
    let d = det(&a);
    // Singular, or nearly: relative to the scale of the diagonal.
    let scale = (a[0][0] * a[1][1] * a[2][2]).abs();
    if points.len() < 3 || scale == 0.0 || d.abs() <= 1e-12 * scale {
        return None;
    }
    let mut c = [0.0; 3];
    for (k, ck) in c.iter_mut().enumerate() {
        let mut m = a;
        for i in 0..3 {
            m[i][k] = b[i];
        }
        *ck = det(&m) / d;
    }
    Some(c)
}

#[cfg(test)]
mod tests {
    use super::least_squares;

    #[test]
    fn least_squares_recovers_exact_costs() {
        let cost = [7000.0, 1800.0, 300.0];
        let xs = [
            [1000.0, 0.0, 0.0],
            [4000.0, 2000.0, 1000.0],
            [4000.0, 2000.0, 90_000.0],
            [4000.0, 2000.0, 600_000.0],
            [2000.0, 1000.0, 300_000.0],
        ];
        let points: Vec<([f64; 3], f64)> = xs
            .iter()
            .map(|x| (*x, x.iter().zip(&cost).map(|(a, b)| a * b).sum()))
            .collect();
        let c = least_squares(&points).unwrap();
        for (got, want) in c.iter().zip(cost) {
            assert!((got - want).abs() < 1e-3 * want, "{c:?}");
        }
        assert!(least_squares(&points[..2]).is_none());
    }
}
