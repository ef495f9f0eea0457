//! Checks made before loading anything: privileges, locked-memory limit, kernel BTF.
use anyhow::Result;

use crate::error::{ExitStatus, fatal};

const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

/// Fails with a sentence naming the fix unless the process may load tracing programs:
/// CAP_SYS_ADMIN, or CAP_BPF with CAP_PERFMON.
pub fn require_privileges() -> Result<()> {
    let caps = effective_capabilities().unwrap_or(0);
    let has = |cap: u32| caps & (1u64 << cap) != 0;
    if has(CAP_SYS_ADMIN) || (has(CAP_BPF) && has(CAP_PERFMON)) {
        return Ok(());
    }
    Err(fatal(
        ExitStatus::Permission,
        "loading eBPF programs needs root (or CAP_BPF and CAP_PERFMON): run fragtrace with sudo",
    ))
}

fn effective_capabilities() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let hex = status.lines().find_map(|l| l.strip_prefix("CapEff:"))?;
    u64::from_str_radix(hex.trim(), 16).ok()
}

/// Kernels before 5.11 charge BPF maps to RLIMIT_MEMLOCK; lift it so maps can be created.
pub fn raise_memlock_limit() {
    let unlimited = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: plain syscall with a valid struct. Failure is fine on 5.11+ (memcg accounting).
    unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &unlimited) };
}

/// The kernel's BTF, or why there is none (tp_btf and fexit need it; raw_tp does not).
pub fn kernel_btf() -> Result<aya::Btf, String> {
    if !std::path::Path::new("/sys/kernel/btf/vmlinux").exists() {
        return Err("kernel has no BTF (/sys/kernel/btf/vmlinux missing; needs \
                    CONFIG_DEBUG_INFO_BTF=y)"
            .to_string());
    }
    aya::Btf::from_sys_fs().map_err(|e| format!("cannot parse kernel BTF: {e}"))
}

/// Whether kprobes can attach: the kprobe PMU or tracefs `kprobe_events` must exist.
pub fn kprobe_support(tracefs: &std::path::Path) -> Result<(), String> {
    if std::path::Path::new("/sys/bus/event_source/devices/kprobe/type").exists()
        || tracefs.join("kprobe_events").exists()
    {
        Ok(())
    } else {
        Err("kprobes not built into this kernel (CONFIG_KPROBES)".to_string())
    }
}

/// The pageblock order from /proc/pagetypeinfo (`Page block order: 9`), 9 if unreadable.
pub fn pageblock_order() -> u32 {
    std::fs::read_to_string("/proc/pagetypeinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("Page block order:"))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(9)
}
