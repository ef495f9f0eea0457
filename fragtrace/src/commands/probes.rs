//! `fragtrace probes`: tries every attach method of every hook on this kernel and reports.
use std::{fmt::Write as _, process::ExitCode};

use anyhow::Result;
use serde::Serialize;

use crate::{
    cli::ProbesArgs,
    decode::{kallsyms::Kallsyms, tracefs},
    hooks::outcome::HookJson,
    hooks::{loader, preflight},
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

fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}
