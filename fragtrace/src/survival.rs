//! Staying alive through the incident fragtrace diagnoses: out of the OOM killer's choice, and
//! with memory the kernel cannot reclaim from under the tracer. Each step says once what it
//! could not do, and tracing carries on without it.
use std::io;

/// fragtrace's own `oom_score_adj` while it traces, unless told otherwise: -1000 takes it out of
/// the OOM killer's choice. Its memory is bounded, so this cannot starve the node.
pub const DEFAULT_OOM_SCORE_ADJ: i32 = -1000;

/// Sets this process's `oom_score_adj`. Lowering it needs CAP_SYS_RESOURCE.
pub fn set_oom_score_adj(value: i32) -> Result<(), String> {
    std::fs::write("/proc/self/oom_score_adj", value.to_string()).map_err(|e| match e.kind() {
        io::ErrorKind::PermissionDenied => {
            format!("cannot set oom_score_adj to {value} (lowering it needs CAP_SYS_RESOURCE)")
        }
        _ => format!("cannot set oom_score_adj to {value}: {e}"),
    })
}

/// For start-up, which reads and frees tens of MB (kernel BTF parsed twice by aya, kallsyms):
/// a fixed mmap threshold, so each large block goes back to the kernel when freed. glibc
/// otherwise raises the threshold to the largest block freed so far, and aya's second BTF
/// parse then lands in the heap and stays there (peak 31 MB instead of 26 MB, measured).
/// [`lock_memory`] switches to keeping everything once tracing starts.
pub fn return_large_blocks_when_freed() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only sets allocator parameters.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 << 10);
    }
}

/// Locks fragtrace's memory (`mlockall`), so that memory pressure cannot reclaim its code or
/// buffers while it drains events: every page it has touched, every page it touches later, and
/// all of its executable code, read in now so that the first failure of an incident does not
/// wait for it. Pages never touched stay unallocated (MCL_ONFAULT). Needs CAP_IPC_LOCK or a
/// memlock limit above fragtrace's resident set.
pub fn lock_memory() -> Result<(), String> {
    reserve_heap();
    // SAFETY: plain syscall.
    if unsafe { libc::mlockall(libc::MCL_CURRENT | libc::MCL_FUTURE | libc::MCL_ONFAULT) } == 0 {
        fault_in_own_code();
        return Ok(());
    }
    let e = io::Error::last_os_error();
    Err(match e.raw_os_error() {
        Some(libc::EPERM) => "cannot lock memory (mlockall needs CAP_IPC_LOCK)".to_string(),
        Some(libc::ENOMEM) => {
            "cannot lock memory (mlockall: RLIMIT_MEMLOCK below fragtrace's size)".to_string()
        }
        _ => format!("cannot lock memory (mlockall: {e})"),
    })
}

/// Heap kept resident for what analysis and the outputs allocate while tracing.
pub const HEAP_RESERVE: usize = 1 << 20;

/// Makes the allocator keep the memory it has: heap freed stays in the heap (no trimming) and
/// allocations below 32 MiB come from it (no mmap per allocation), then grows the heap by
/// [`HEAP_RESERVE`] with every page touched. Otherwise glibc hands freed memory back and asks
/// for it again batch after batch, and each page it asks for is a page fault, which in an
/// incident waits in direct reclaim: measured in the VM survive scenario, where analysis
/// stalled for hundreds of ms at a time.
fn reserve_heap() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only sets allocator parameters.
    unsafe {
        libc::mallopt(libc::M_TRIM_THRESHOLD, libc::c_int::MAX);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
    }
    let mut reserve: Vec<u8> = Vec::with_capacity(HEAP_RESERVE);
    let base = reserve.as_mut_ptr();
    for offset in (0..HEAP_RESERVE).step_by(4096) {
        // SAFETY: within the capacity just allocated.
        unsafe { std::ptr::write_volatile(base.add(offset), 0) };
    }
    drop(reserve);
}

/// Whether reading the maps fragtrace holds open still needs a capability: kernels before 6.5
/// with `kernel.unprivileged_bpf_disabled` set refuse every bpf() command, map lookups too,
/// without CAP_BPF or CAP_SYS_ADMIN. Tried for real with `read_maps` on a thread of its own
/// whose effective capabilities are cleared (capabilities belong to each thread).
pub fn maps_need_capability(read_maps: impl FnOnce() -> bool + Send) -> bool {
    use caps::CapSet;
    std::thread::scope(|scope| {
        scope
            .spawn(|| caps::clear(None, CapSet::Effective).is_ok() && !read_maps())
            .join()
            .unwrap_or(false)
    })
}

/// Drops every capability once the programs are attached and the files fragtrace needs are
/// open: what stays open (maps, the ring buffer, output files) needs none, and /proc and
/// cgroupfs are readable without them. Memory locked on a finite memlock limit keeps
/// CAP_IPC_LOCK, without which the locked pages of later allocations would count against
/// that limit and could fail; `keep_bpf` (see `maps_need_capability`) keeps CAP_BPF, or
/// CAP_SYS_ADMIN on kernels older than CAP_BPF (5.8). Returns what was kept.
pub fn drop_capabilities(memory_locked: bool, keep_bpf: bool) -> Result<Vec<String>, String> {
    use caps::{CapSet, Capability, CapsHashSet};
    let mut keep = CapsHashSet::new();
    if memory_locked && !memlock_unlimited() {
        keep.insert(Capability::CAP_IPC_LOCK);
    }
    if keep_bpf {
        let cap_bpf_known = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
            .ok()
            .and_then(|t| t.trim().parse::<u8>().ok())
            .is_some_and(|last| last >= Capability::CAP_BPF.index());
        keep.insert(if cap_bpf_known {
            Capability::CAP_BPF
        } else {
            Capability::CAP_SYS_ADMIN
        });
    }
    let set = |which: CapSet, caps: &CapsHashSet| {
        caps::set(None, which, caps).map_err(|e| format!("cannot drop capabilities: {e}"))
    };
    // The bounding set first, while CAP_SETPCAP is still there; then what the process holds.
    if let Ok(bounding) = caps::read(None, CapSet::Bounding) {
        for cap in bounding.difference(&keep) {
            let _ = caps::drop(None, CapSet::Bounding, *cap);
        }
    }
    set(CapSet::Ambient, &CapsHashSet::new())?;
    set(CapSet::Inheritable, &CapsHashSet::new())?;
    set(CapSet::Effective, &keep)?;
    set(CapSet::Permitted, &keep)?;
    Ok(keep.iter().map(|c| c.to_string()).collect())
}

fn memlock_unlimited() -> bool {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: a valid pointer to an rlimit.
    let read = unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut limit) } == 0;
    read && limit.rlim_cur == libc::RLIM_INFINITY
}

/// Touches every page of fragtrace's executable mappings, so that they are resident and locked.
fn fault_in_own_code() {
    let Ok(exe) = std::fs::read_link("/proc/self/exe") else {
        return;
    };
    let exe = exe.to_string_lossy();
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
    for line in maps.lines() {
        let mut fields = line.split_whitespace();
        let (Some(range), Some(perms)) = (fields.next(), fields.next()) else {
            continue;
        };
        if !perms.starts_with("r-x") || line.split_whitespace().nth(5) != Some(&*exe) {
            continue;
        }
        let Some((start, end)) = range.split_once('-') else {
            continue;
        };
        let (Ok(start), Ok(end)) = (
            usize::from_str_radix(start, 16),
            usize::from_str_radix(end, 16),
        ) else {
            continue;
        };
        for page in (start..end).step_by(4096) {
            // SAFETY: the page lies in a readable mapping of this process, listed just now.
            unsafe { std::ptr::read_volatile(page as *const u8) };
        }
    }
}

/// This process's resident set now and at its peak (VmRSS, VmHWM), in kB.
/// Page faults fragtrace has taken so far, all threads, minor and major: each one may allocate
/// a page, and under memory pressure wait in direct reclaim.
pub fn page_faults() -> u64 {
    // SAFETY: getrusage writes one rusage.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return 0;
    }
    (usage.ru_minflt + usage.ru_majflt) as u64
}

/// This thread's CPU time (ns) and page faults so far.
pub fn thread_cpu_and_faults() -> (u64, u64) {
    // SAFETY: clock_gettime and getrusage write one struct each.
    unsafe {
        let mut ts: libc::timespec = std::mem::zeroed();
        libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts);
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_THREAD, &mut usage);
        (
            ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64,
            (usage.ru_minflt + usage.ru_majflt) as u64,
        )
    }
}

/// The time this thread has waited on a run queue for a CPU (ns, from schedstat; 0 where the
/// kernel keeps none).
pub fn thread_runqueue_wait_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

pub fn rss_kb() -> (Option<u64>, Option<u64>) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
    };
    (field("VmRSS:"), field("VmHWM:"))
}
