//! `fragtrace probes`: tries every attach method of every hook on this kernel and reports.
use std::{fmt::Write as _, process::ExitCode};

use anyhow::Result;
use serde::Serialize;

use crate::{
    cli::ProbesArgs,
    decode::{kallsyms::Kallsyms, tracefs},
    error::{ExitStatus, fatal},
    hooks::outcome::HookJson,
    hooks::{loader, preflight},
    source::program_stats,
};

#[derive(Serialize)]
struct ProbesJson {
    #[serde(rename = "type")]
    kind: &'static str,
    kernel: String,
    hooks: Vec<HookJson>,
    /// What the failure handler reads in the kernel, or why not.
    kernel_reads: loader::KernelReads,
}

pub fn run(args: ProbesArgs) -> Result<ExitCode> {
    preflight::require_privileges()?;
    if let Some(seconds) = args.stats {
        return stats(seconds, args.json);
    }
    let tracefs = tracefs::locate(None)?;
    let kallsyms = Kallsyms::load().unwrap_or_default();
    let loaded = loader::load(&tracefs, loader::Request::every_method(), &kallsyms)?;
    let hooks: Vec<HookJson> = loaded.hooks.iter().map(HookJson::from_status).collect();
    let kernel_reads = loaded.kernel_reads.clone();
    // Detach everything before printing: probing must leave nothing behind.
    drop(loaded);
    let report = ProbesJson {
        kind: "probes",
        kernel: kernel_release(),
        hooks,
        kernel_reads,
    };
    if args.json {
        return crate::sink::print_whole(&(serde_json::to_string(&report)? + "\n"));
    }
    let mut out = String::new();
    let _ = writeln!(out, "kernel {}", report.kernel);
    let _ = writeln!(
        out,
        "{:<24} {:<10} {:<28} NOTES",
        "HOOK", "METHOD", "WORKS HERE"
    );
    for h in &report.hooks {
        let mut notes: Vec<String> = h
            .unavailable
            .iter()
            .map(|u| format!("{} unavailable: {}", u.method, u.error))
            .collect();
        if let (Some(option), Some(cost)) = (&h.opt_in, &h.cost) {
            notes.insert(0, format!("only with {option}: {cost}"));
        }
        let _ = writeln!(
            out,
            "{:<24} {:<10} {:<28} {}",
            h.hook,
            h.method.as_deref().unwrap_or("-"),
            h.available.join(","),
            if notes.is_empty() {
                h.purpose.to_string()
            } else {
                notes.join("; ")
            }
        );
    }
    let reads = report.kernel_reads.inactive();
    if reads.is_empty() {
        let _ = writeln!(
            out,
            "memory-cgroup counters and zones are read in the kernel at each failure"
        );
    }
    for line in reads {
        let _ = writeln!(out, "{line}");
    }
    crate::sink::print_whole(&out)
}

#[derive(Serialize)]
struct StatsJson {
    #[serde(rename = "type")]
    kind: &'static str,
    seconds: f64,
    /// How the kernel's statistics were on: "enabled for the window" or "kernel.bpf_stats_enabled".
    stats: &'static str,
    processes: Vec<ProcessStats>,
}

#[derive(Serialize)]
struct ProcessStats {
    pid: u32,
    programs: Vec<ProgramStats>,
}

#[derive(Serialize)]
struct ProgramStats {
    id: u32,
    name: String,
    runs: u64,
    run_time_ns: u64,
    ns_per_run: Option<f64>,
    /// Kernel time of the program as a share of one CPU over the window, in percent.
    cpu_percent: f64,
}

/// `probes --stats`: each program of every running fragtrace, its runs and kernel time over
/// `seconds`, with the kernel's statistics on for that window.
fn stats(seconds: f64, json: bool) -> Result<ExitCode> {
    if !(seconds.is_finite() && seconds > 0.0 && seconds <= 3600.0) {
        return Err(fatal(
            ExitStatus::Usage,
            "--stats needs a number of seconds above 0, at most 3600",
        ));
    }
    let holders = program_stats::running_fragtraces();
    if holders.iter().all(|h| h.program_ids.is_empty()) {
        return Err(fatal(
            ExitStatus::Failure,
            "no running fragtrace holds BPF programs: start the tracer or the daemon first \
             (probes --stats measures the programs of a running fragtrace)",
        ));
    }
    let guard = program_stats::enable().map_err(|e| fatal(ExitStatus::Unsupported, e))?;
    let how = if guard.is_some() {
        "enabled for the window"
    } else {
        "kernel.bpf_stats_enabled"
    };
    let before = program_stats::read_costs();
    let started = std::time::Instant::now();
    std::thread::sleep(std::time::Duration::from_secs_f64(seconds));
    let after = program_stats::read_costs();
    let window = started.elapsed().as_secs_f64();
    drop(guard);
    let processes: Vec<ProcessStats> = holders
        .iter()
        .map(|h| ProcessStats {
            pid: h.pid,
            programs: h
                .program_ids
                .iter()
                .filter_map(|id| {
                    let (b, a) = (before.get(id)?, after.get(id)?);
                    let runs = a.run_count.saturating_sub(b.run_count);
                    let ns = a.run_time_ns.saturating_sub(b.run_time_ns);
                    Some(ProgramStats {
                        id: *id,
                        name: a.name.clone(),
                        runs,
                        run_time_ns: ns,
                        ns_per_run: (runs > 0).then(|| ns as f64 / runs as f64),
                        cpu_percent: ns as f64 / (window * 1e9) * 100.0,
                    })
                })
                .collect(),
        })
        .collect();
    let report = StatsJson {
        kind: "probe_stats",
        seconds: window,
        stats: how,
        processes,
    };
    if json {
        return crate::sink::print_whole(&(serde_json::to_string(&report)? + "\n"));
    }
    let mut out = String::new();
    for p in &report.processes {
        let _ = writeln!(
            out,
            "fragtrace pid {}: {} programs over {:.1} s (statistics {})",
            p.pid,
            p.programs.len(),
            report.seconds,
            report.stats
        );
        let _ = writeln!(
            out,
            "{:<16} {:>6} {:>10} {:>10} {:>9} {:>7}",
            "PROGRAM", "ID", "RUNS", "RUNS/S", "NS/RUN", "CPU%"
        );
        for g in &p.programs {
            let _ = writeln!(
                out,
                "{:<16} {:>6} {:>10} {:>10.0} {:>9} {:>7.3}",
                g.name,
                g.id,
                g.runs,
                g.runs as f64 / report.seconds,
                g.ns_per_run.map_or("-".into(), |n| format!("{n:.1}")),
                g.cpu_percent
            );
        }
        let total: f64 = p.programs.iter().map(|g| g.cpu_percent).sum();
        let _ = writeln!(out, "{:<16} {:>45.3}", "all", total);
    }
    let _ = writeln!(
        out,
        "NS/RUN is the kernel's own accounting, which adds its two clock reads to every run"
    );
    crate::sink::print_whole(&out)
}

fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}
