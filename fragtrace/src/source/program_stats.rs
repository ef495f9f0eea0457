//! The kernel's own accounting of fragtrace's BPF programs (`run_time_ns`, `run_cnt`): which
//! programs a running fragtrace holds (its /proc/PID/fdinfo), and what each has cost so far.
//! The kernel counts only while statistics are enabled (`BPF_ENABLE_STATS`, or the sysctl
//! `kernel.bpf_stats_enabled`).
use std::{collections::BTreeMap, fs, os::fd::OwnedFd};

/// A running fragtrace and the ids of the BPF programs it holds.
#[derive(Debug)]
pub struct Holder {
    pub pid: u32,
    pub program_ids: Vec<u32>,
}

/// Every running fragtrace but this process, with its programs (none for one still loading).
pub fn running_fragtraces() -> Vec<Holder> {
    let me = std::process::id();
    let Ok(procs) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut found: Vec<Holder> = procs
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| pid != me)
        .filter(|pid| {
            fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|c| c.trim_end() == "fragtrace")
        })
        .map(|pid| Holder {
            pid,
            program_ids: program_ids_of(pid),
        })
        .collect();
    found.sort_by_key(|h| h.pid);
    found
}

/// The `prog_id` of every BPF program file descriptor `pid` holds.
pub fn program_ids_of(pid: u32) -> Vec<u32> {
    let Ok(fds) = fs::read_dir(format!("/proc/{pid}/fdinfo")) else {
        return Vec::new();
    };
    let mut ids: Vec<u32> = fds
        .flatten()
        .filter_map(|fd| fs::read_to_string(fd.path()).ok())
        .filter_map(|info| {
            info.lines()
                .find_map(|l| l.strip_prefix("prog_id:"))
                .and_then(|v| v.trim().parse().ok())
        })
        .collect();
    ids.sort_unstable();
    ids.dedup();
    ids
}

/// One program's accounting at one moment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProgramCost {
    pub name: String,
    pub run_time_ns: u64,
    pub run_count: u64,
}

/// Every loaded program's accounting now, by id.
pub fn read_costs() -> BTreeMap<u32, ProgramCost> {
    aya::programs::loaded_programs()
        .flatten()
        .map(|p| {
            (
                p.id(),
                ProgramCost {
                    name: p.name_as_str().unwrap_or("?").to_string(),
                    run_time_ns: p.run_time().as_nanos() as u64,
                    run_count: p.run_count(),
                },
            )
        })
        .collect()
}

/// How the kernel's statistics are on while the returned guard lives: enabled for this process
/// (`BPF_ENABLE_STATS`, Linux 5.8+), or already on by the sysctl. Err with why not.
pub fn enable() -> Result<Option<OwnedFd>, String> {
    match aya::sys::enable_stats(aya::sys::Stats::RunTime) {
        Ok(fd) => Ok(Some(fd)),
        Err(e) => {
            let sysctl = fs::read_to_string("/proc/sys/kernel/bpf_stats_enabled")
                .is_ok_and(|v| v.trim() == "1");
            if sysctl {
                Ok(None)
            } else {
                Err(format!(
                    "cannot enable BPF statistics (BPF_ENABLE_STATS needs Linux 5.8 and \
                     CAP_SYS_ADMIN: {e}); on older kernels set kernel.bpf_stats_enabled=1"
                ))
            }
        }
    }
}
