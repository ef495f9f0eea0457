//! Loads the embedded eBPF object and attaches each hook with the first method this kernel
//! accepts. A hook that cannot attach is reported with the reason of each method tried; the
//! others keep working.
use std::path::Path;

use anyhow::{Context, Result};
use aya::{
    Btf, Ebpf, EbpfLoader,
    programs::{BtfTracePoint, FEntry, FExit, KProbe, ProgramError, RawTracePoint, TracePoint},
};

use super::{
    catalog::{self, Hook, Method},
    kernel_layout, preflight,
};
use crate::{
    decode::{kallsyms::Kallsyms, tracefs::EventFormat},
    error::{ExitStatus, fatal},
};

/// The eBPF object: every program and map of fragtrace-ebpf (the benchmarks load its
/// `bench_floor` program alone).
pub static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/fragtrace"));

/// The outcome of one attach method.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub method: Method,
    /// `None` when it attached.
    pub error: Option<String>,
}

/// What happened to one hook.
#[derive(Debug, Clone)]
pub struct HookStatus {
    pub hook: &'static Hook,
    pub attempts: Vec<Attempt>,
    /// False for an opt-in hook whose option was not given: nothing was tried.
    pub requested: bool,
}

impl HookStatus {
    /// The method in use, if any attached.
    pub fn attached(&self) -> Option<Method> {
        self.attempts
            .iter()
            .find(|a| a.error.is_none())
            .map(|a| a.method)
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Mode<'a> {
    /// Stop at the first method that attaches (tracing).
    FirstWorking,
    /// Try every method of every hook (`fragtrace probes`).
    EveryMethod,
    /// Use only methods of this kind (`tp_btf`, `raw_tp`, `tracepoint`): tests the fallbacks.
    Only(&'a str),
}

/// A loaded object with its attached programs; dropping it detaches everything.
pub struct Loaded {
    pub ebpf: Ebpf,
    pub hooks: Vec<HookStatus>,
    /// The `kmem/mm_page_alloc` format, when tracefs has it (gfp names come from it).
    pub page_alloc_format: Result<EventFormat, String>,
    pub kernel_reads: KernelReads,
    /// The size given to the EVENTS ring buffer ([`ring_buffer_bytes`]).
    pub ring_buffer_bytes: u32,
}

/// What the failure handler reads in the kernel at the failure itself, or why it cannot here.
/// Without them, verdicts are judged on /proc and cgroupfs read later in user space.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct KernelReads {
    /// Memory-cgroup page counters (usage, limit) of the failing task's cgroups.
    pub memcg: Option<String>,
    /// The zones of the failing CPU's node (free pages, watermarks, free blocks per order).
    pub zones: Option<String>,
}

impl KernelReads {
    /// One line per read that does not run, with why.
    pub fn inactive(&self) -> Vec<String> {
        let mut v = Vec::new();
        if let Some(why) = &self.memcg {
            v.push(format!(
                "memory-cgroup counters not read in the kernel at failures ({why}): memcg verdicts come from cgroupfs, read later"
            ));
        }
        if let Some(why) = &self.zones {
            v.push(format!(
                "zones not read in the kernel at failures ({why}): verdicts are judged on /proc, read later"
            ));
        }
        v
    }
}

/// What the kernel offers, read once before attaching.
struct Kernel<'a> {
    btf: Result<Btf, String>,
    kprobes: Result<(), String>,
    kallsyms: &'a Kallsyms,
    /// Classic tracepoint programs whose record offsets could not be read, with the reason.
    missing_offsets: Vec<(&'static str, String)>,
}

/// What the user asked of the kernel side.
#[derive(Clone, Copy)]
pub struct Request<'a> {
    pub mode: Mode<'a>,
    /// The opt-in hooks asked for ([`catalog::OptIn`]); `probes` tries every hook anyway.
    pub opted_in: &'a [catalog::OptIn],
    /// Failure records per second and CPU before they are aggregated in the kernel; 0: never.
    pub storm_threshold: u32,
    /// Stacks walked per second and CPU for failures aggregated in the kernel.
    pub storm_stacks: u32,
    /// Aggregate the stacks of successful allocations of this order and above.
    pub stacks_min_order: Option<u32>,
    /// Leave the in-kernel zone and memory-cgroup reads off (`--no-kernel-reads`), as where the
    /// kernel does not allow them: for measuring their cost.
    pub no_kernel_reads: bool,
}

impl Request<'_> {
    /// What `probes` asks: every method of every hook.
    pub fn every_method() -> Request<'static> {
        Request {
            mode: Mode::EveryMethod,
            opted_in: &[],
            storm_threshold: DEFAULT_STORM_THRESHOLD,
            storm_stacks: DEFAULT_STORM_STACKS,
            stacks_min_order: None,
            no_kernel_reads: false,
        }
    }
}

/// Why the in-kernel reads are off when `--no-kernel-reads` turned them off.
const KERNEL_READS_TURNED_OFF: &str = "turned off by --no-kernel-reads";

/// Failure records per second and CPU before storm mode aggregates them in the kernel.
pub const DEFAULT_STORM_THRESHOLD: u32 = 2000;

/// Stacks walked per second and CPU for failures aggregated in the kernel: at 1.5-5 us a walk,
/// at most 0.5 % of each CPU.
pub const DEFAULT_STORM_STACKS: u32 = 1000;

/// The EVENTS ring buffer's size: 512 KiB (about 290 failure records) per online CPU, a power
/// of two from 1 MiB to 16 MiB. Records come at most [`DEFAULT_STORM_THRESHOLD`] per second
/// per CPU, so the buffer covers about 150 ms of every CPU at that rate. It is mapped twice
/// into fragtrace (so it counts twice in RSS); failures that find it full are still counted
/// by stack in the kernel.
pub fn ring_buffer_bytes(online_cpus: usize) -> u32 {
    const PER_CPU: usize = 512 << 10;
    const MAX: usize = 16 << 20;
    (online_cpus.min(MAX / PER_CPU) * PER_CPU)
        .next_power_of_two()
        .clamp(1 << 20, MAX) as u32
}

/// Callers check privileges first ([`preflight::require_privileges`]).
pub fn load(tracefs: &Path, request: Request<'_>, kallsyms: &Kallsyms) -> Result<Loaded> {
    let Request { mode, opted_in, .. } = request;
    let t = std::time::Instant::now();
    preflight::raise_memlock_limit();
    let page_alloc_format =
        EventFormat::read(tracefs, "kmem", "mm_page_alloc").map_err(|e| format!("{e:#}"));
    // aya's loader parses kernel BTF when created; dropping that copy before parsing the one
    // kept here means the two never coexist (peak RSS).
    let mut loader = EbpfLoader::new();
    loader.btf(None);
    let btf = preflight::kernel_btf();
    log::info!("start-up: kernel BTF parsed (aya) in {:.0?}", t.elapsed());
    let mut kernel = Kernel {
        btf,
        kprobes: preflight::kprobe_support(tracefs),
        kallsyms,
        missing_offsets: Vec::new(),
    };

    let mut globals: Vec<(&'static str, u32)> = vec![
        ("FRAGTRACE_TGID", std::process::id()),
        ("PAGEBLOCK_ORDER", preflight::pageblock_order()),
        ("STORM_RECORDS_PER_SEC", request.storm_threshold),
        ("STORM_STACKS_PER_SEC", request.storm_stacks),
        (
            "MIN_STACK_ORDER",
            request.stacks_min_order.unwrap_or(u32::MAX),
        ),
    ];
    // Without these the failure handler skips the memory-cgroup read, and user space falls
    // back to reading cgroupfs when the event arrives.
    let mut kernel_reads = KernelReads::default();
    // Without these the failure handler skips the zone read, and the verdict is judged
    // against /proc read when the event arrives.
    let mut pgdat_symbol_addr = 0u64;
    if request.no_kernel_reads {
        // ZONE_LAYOUT_KNOWN and MEMCG_LAYOUT_KNOWN stay 0: the handlers read neither.
        kernel_reads.memcg = Some(KERNEL_READS_TURNED_OFF.into());
        kernel_reads.zones = Some(KERNEL_READS_TURNED_OFF.into());
    } else {
        let t_layout = std::time::Instant::now();
        let layout_btf = kernel_layout::open_btf();
        match kernel_layout::memcg_globals(&layout_btf) {
            Ok(offsets) => globals.extend(offsets),
            Err(e) => kernel_reads.memcg = Some(format!("{e:#}")),
        }
        match kernel_layout::zone_globals(&layout_btf, kallsyms.pgdat) {
            Ok(offsets) => {
                globals.extend(offsets);
                pgdat_symbol_addr = kallsyms.pgdat.map_or(0, |(addr, _)| addr);
            }
            Err(e) => kernel_reads.zones = Some(format!("{e:#}")),
        }
        drop(layout_btf);
        log::info!(
            "start-up: struct layouts read from BTF in {:.0?}",
            t_layout.elapsed()
        );
    }
    match page_alloc_offsets(&page_alloc_format) {
        Ok(offsets) => globals.extend(offsets),
        Err(e) => kernel.missing_offsets.push(("page_alloc_tp", e)),
    }
    // Classic tracepoints read one field at an offset taken from tracefs.
    for (program, category, event, field, global) in [
        (
            "oom_mark_victim",
            "oom",
            "mark_victim",
            "pid",
            "OOM_PID_OFFSET",
        ),
        (
            "compact_end_tp",
            "compaction",
            "mm_compaction_end",
            "status",
            "COMPACT_STATUS_OFFSET",
        ),
    ] {
        match EventFormat::read(tracefs, category, event).and_then(|f| Ok(f.field(field)?.offset)) {
            Ok(offset) => globals.push((global, offset)),
            Err(e) => kernel
                .missing_offsets
                .push((program, format!("tracefs format unreadable: {e:#}"))),
        }
    }

    log::info!(
        "start-up: BTF, layouts and tracefs formats read in {:.0?} in all",
        t.elapsed()
    );
    let t = std::time::Instant::now();
    loader.btf(kernel.btf.as_ref().ok());
    for (name, value) in &globals {
        loader.override_global(name, value, true);
    }
    loader.override_global("PGDAT_SYMBOL_ADDR", &pgdat_symbol_addr, true);
    let online_cpus = aya::util::online_cpus().map_or(1, |cpus| cpus.len());
    let ring_buffer_bytes = ring_buffer_bytes(online_cpus);
    loader.map_max_entries("EVENTS", ring_buffer_bytes);
    let mut ebpf = loader.load(EBPF_OBJECT).map_err(|e| {
        fatal(
            ExitStatus::Unsupported,
            format!(
                "the kernel refused fragtrace's eBPF maps: {}",
                first_line(&e)
            ),
        )
    })?;
    log::info!(
        "start-up: eBPF object and maps loaded in {:.0?} (ring buffer {} KiB for {online_cpus} \
         online CPUs)",
        t.elapsed(),
        ring_buffer_bytes >> 10
    );

    let mut hooks = Vec::new();
    for hook in catalog::ALL {
        let requested =
            mode == Mode::EveryMethod || hook.opt_in.is_none_or(|o| opted_in.contains(&o));
        if !requested {
            hooks.push(HookStatus {
                hook,
                attempts: Vec::new(),
                requested,
            });
            continue;
        }
        let mut attempts = Vec::new();
        for &method in hook.methods {
            if matches!(mode, Mode::Only(kind) if kind != method.kind()) {
                continue;
            }
            let t = std::time::Instant::now();
            let error = attach(&mut ebpf, method, &kernel).err();
            let ok = error.is_none();
            log::info!(
                "start-up: {} via {} {} in {:.0?}",
                hook.name,
                method.label(),
                if ok { "attached" } else { "refused" },
                t.elapsed()
            );
            attempts.push(Attempt { method, error });
            if ok && mode != Mode::EveryMethod {
                break;
            }
        }
        hooks.push(HookStatus {
            hook,
            attempts,
            requested,
        });
    }
    Ok(Loaded {
        ebpf,
        hooks,
        page_alloc_format,
        kernel_reads,
        ring_buffer_bytes,
    })
}

/// Offsets of the classic `kmem/mm_page_alloc` record fields for `page_alloc_tp`.
fn page_alloc_offsets(
    format: &Result<EventFormat, String>,
) -> Result<Vec<(&'static str, u32)>, String> {
    let format = format
        .as_ref()
        .map_err(|e| format!("tracefs format unreadable: {e}"))?;
    let field = |name| {
        format
            .field(name)
            .map(|f| (f.offset, f.size))
            .map_err(|e| format!("tracefs format lacks the expected fields: {e}"))
    };
    let (pfn, order, gfp, mt) = (
        field("pfn")?,
        field("order")?,
        field("gfp_flags")?,
        field("migratetype")?,
    );
    Ok(vec![
        ("TP_PFN_OFFSET", pfn.0),
        ("TP_ORDER_OFFSET", order.0),
        ("TP_GFP_OFFSET", gfp.0),
        ("TP_GFP_SIZE", gfp.1),
        ("TP_MIGRATETYPE_OFFSET", mt.0),
    ])
}

fn attach(ebpf: &mut Ebpf, method: Method, kernel: &Kernel<'_>) -> Result<(), String> {
    if let Some(function) = method.function() {
        if matches!(
            method,
            Method::Kprobe { .. } | Method::KprobeKretprobe { .. }
        ) {
            kernel.kprobes.clone()?;
        } else {
            kernel.btf.as_ref().map_err(Clone::clone)?;
        }
        if kernel.kallsyms.address_of(function).is_none() && !kernel.kallsyms.is_empty() {
            return Err(format!("{function} is not in this kernel"));
        }
    }
    let programs = method.programs();
    for (i, program) in programs.iter().enumerate() {
        if let Err(e) = attach_program(ebpf, method, program, kernel) {
            // Undo the first half of a pair so nothing stays half-attached.
            for done in &programs[..i] {
                if let Some(p) = ebpf.program_mut(done) {
                    let _ = unload(p);
                }
            }
            return Err(e);
        }
    }
    Ok(())
}

fn attach_program(
    ebpf: &mut Ebpf,
    method: Method,
    name: &str,
    kernel: &Kernel<'_>,
) -> Result<(), String> {
    if let Some((_, why)) = kernel.missing_offsets.iter().find(|(p, _)| *p == name) {
        return Err(why.clone());
    }
    let program = ebpf
        .program_mut(name)
        .ok_or_else(|| format!("program {name} missing from the eBPF object"))?;
    let res: Result<(), ProgramError> = match method {
        Method::TpBtf { event, .. } => {
            let btf = kernel.btf.as_ref().map_err(Clone::clone)?;
            let p: &mut BtfTracePoint = program.try_into().map_err(|e| first_line(&e))?;
            timed_load(name, || load_once(p.load(event, btf))).and_then(|()| p.attach().map(drop))
        }
        Method::RawTp { event, .. } => {
            let p: &mut RawTracePoint = program.try_into().map_err(|e| first_line(&e))?;
            timed_load(name, || load_once(p.load())).and_then(|()| p.attach(event).map(drop))
        }
        Method::Tracepoint {
            category, event, ..
        } => {
            let p: &mut TracePoint = program.try_into().map_err(|e| first_line(&e))?;
            timed_load(name, || load_once(p.load()))
                .and_then(|()| p.attach(category, event).map(drop))
        }
        Method::Kprobe { function, .. } | Method::KprobeKretprobe { function, .. } => {
            let p: &mut KProbe = program.try_into().map_err(|e| first_line(&e))?;
            timed_load(name, || load_once(p.load())).and_then(|()| p.attach(function, 0).map(drop))
        }
        Method::Fexit { function, .. } | Method::FentryFexit { function, .. } => {
            let btf = kernel.btf.as_ref().map_err(Clone::clone)?;
            if let Ok(p) = <&mut FEntry>::try_from(&mut *program) {
                load_once(p.load(function, btf)).and_then(|()| p.attach().map(drop))
            } else {
                let p: &mut FExit = program.try_into().map_err(|e| first_line(&e))?;
                load_once(p.load(function, btf)).and_then(|()| p.attach().map(drop))
            }
        }
    };
    res.map_err(|e| explain(&e))
}

/// Loads (the kernel verifies) with the time it took logged: verification is most of the
/// start-up time on older kernels.
fn timed_load(
    name: &str,
    load: impl FnOnce() -> Result<(), ProgramError>,
) -> Result<(), ProgramError> {
    let t = std::time::Instant::now();
    let res = load();
    log::info!(
        "start-up: program {name} loaded (verified) in {:.0?}",
        t.elapsed()
    );
    res
}

/// A program shared by two methods (one kprobe on either of two functions) is loaded once.
fn load_once(res: Result<(), ProgramError>) -> Result<(), ProgramError> {
    match res {
        Err(ProgramError::AlreadyLoaded) => Ok(()),
        other => other,
    }
}

fn unload(program: &mut aya::programs::Program) -> Result<(), ProgramError> {
    use aya::programs::Program;
    match program {
        Program::KProbe(p) => p.unload(),
        Program::FEntry(p) => p.unload(),
        Program::FExit(p) => p.unload(),
        _ => Ok(()),
    }
}

/// A short reason for a refused program: the error chain's first lines, not the verifier log.
fn explain(err: &ProgramError) -> String {
    let text = first_line(err);
    // The verifier's log adds nothing for a refusal; keep the syscall's answer.
    let text = text
        .split(". Verifier output:")
        .next()
        .unwrap_or(&text)
        .to_string();
    if text.contains("Operation not permitted") {
        format!("refused: EPERM ({text})")
    } else {
        text
    }
}

fn first_line(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    let line = text.lines().next().unwrap_or_default();
    line.chars().take(240).collect()
}

impl Loaded {
    /// Fails with every reason given when no hook attached at all.
    pub fn require_any_attached(&self) -> Result<()> {
        if self.hooks.iter().any(|h| h.attached().is_some()) {
            return Ok(());
        }
        let reasons: Vec<String> = self
            .hooks
            .iter()
            .flat_map(|h| {
                h.attempts.iter().map(move |a| {
                    format!(
                        "{} via {}: {}",
                        h.hook.name,
                        a.method.kind(),
                        a.error.as_deref().unwrap_or("?")
                    )
                })
            })
            .collect();
        Err(fatal(
            ExitStatus::Unsupported,
            format!(
                "no hook could attach on this kernel ({})",
                reasons.join("; ")
            ),
        ))
    }

    pub fn take_map(&mut self, name: &str) -> Result<aya::maps::Map> {
        self.ebpf
            .take_map(name)
            .with_context(|| format!("map {name} missing from the eBPF object"))
    }
}

#[cfg(test)]
mod tests {
    use super::ring_buffer_bytes;

    #[test]
    fn ring_buffer_scales_with_cpus_within_bounds() {
        let mib = 1 << 20;
        assert_eq!(ring_buffer_bytes(0), mib);
        assert_eq!(ring_buffer_bytes(2), mib);
        assert_eq!(ring_buffer_bytes(3), 2 * mib);
        assert_eq!(ring_buffer_bytes(8), 4 * mib);
        assert_eq!(ring_buffer_bytes(512), 16 * mib);
        assert_eq!(ring_buffer_bytes(usize::MAX), 16 * mib);
    }
}
