//! Raw ring-buffer records to typed events with every name resolved: gfp flags and the rights
//! they carry, migratetypes, compaction statuses, symbols, wall-clock time. Nothing downstream
//! reads a record's positional arguments or calls back into the decoder.
use anyhow::{Result, bail};
use fragtrace_common::{
    AllocFailEvent, EventHeader, EventKind, MemcgCounters, MmEvent, NetnsOp, OomVictimEvent,
    STACK_NOT_TAKEN, SlabCreateFailEvent, ZoneSnapshot, read_record, stall_kind,
};
use serde::{Deserialize, Serialize};
use std::{cell::RefCell, collections::HashMap};

pub use super::stack::Stack;
use super::{
    gfp::GfpTable, kallsyms::Kallsyms, migratetype::MigrateTypes, print_fmt::Symbols,
    stack::StackCache,
};
use crate::{
    source::stack_maps::{Aggregated, AggregatedStacks},
    zones::verdict::Access,
};

/// Who and when, for every event.
#[derive(Debug, Clone, PartialEq)]
pub struct Task {
    /// CLOCK_MONOTONIC nanoseconds (`bpf_ktime_get_ns`).
    pub ts_ns: u64,
    pub time: jiff::Timestamp,
    pub pid: u32,
    pub tid: u32,
    pub comm: String,
}

/// A gfp mask and the kernel's names for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gfp {
    pub mask: u64,
    /// `GFP_KERNEL|__GFP_COMP`, or the mask in hex when the kernel's table is unknown.
    pub names: String,
}

/// A failed page allocation.
#[derive(Debug, Clone)]
pub struct AllocFail {
    pub order: u32,
    pub gfp: Gfp,
    /// What the request may use below the watermarks, from its flags.
    pub access: Access,
    pub migratetype: String,
    pub cgroup_id: u64,
    /// Symbolized frames, innermost first, tracing machinery removed.
    pub stack: Stack,
    /// How the kernel side tied it to a netns creation window, if it did.
    pub netns_window: Option<NetnsWindow>,
    /// warn_alloc ran for it: the kernel printed `page allocation failure`.
    pub warned: bool,
    /// The task's memory-cgroup counters as the kernel handler read them at the failure.
    pub memcg: MemcgCounters,
    /// The failing CPU's node's zones as the kernel handler read them at the failure.
    pub zones: Box<ZoneSnapshot>,
}

/// The netns creation window a failure happened in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetnsWindow {
    /// Inside copy_net_ns (fexit/kretprobe): the precise window.
    CopyNetNs,
    /// Inside an unshare/clone/clone3/setns(CLONE_NEWNET) syscall.
    Syscall,
}

impl NetnsWindow {
    pub fn describe(self) -> &'static str {
        match self {
            Self::CopyNetNs => "inside copy_net_ns",
            Self::Syscall => "inside a CLONE_NEWNET unshare/clone/clone3/setns",
        }
    }
}

/// `mm_compaction_try_to_compact_pages`: a task starts direct compaction.
#[derive(Debug, Clone, PartialEq)]
pub struct CompactRequest {
    pub order: u32,
    pub gfp: Gfp,
    pub priority: i64,
}

/// `oom:compact_retry`: the allocator's decision after a compaction attempt.
#[derive(Debug, Clone, PartialEq)]
pub struct CompactRetry {
    pub order: u32,
    pub priority: String,
    pub result: String,
    pub retries: u64,
    pub max_retries: u64,
    /// It will compact again.
    pub retry: bool,
}

/// One closed netns creation window: a CLONE_NEWNET syscall, or copy_net_ns itself.
#[derive(Debug, Clone, PartialEq)]
pub struct NetnsCreation {
    /// `unshare`, `clone`, `clone3`, `setns` or `copy_net_ns`.
    pub op: &'static str,
    pub latency_ns: u64,
    /// The errno when it failed.
    pub errno: Option<i32>,
}

/// `oom:mark_victim`, with what the kernel handler read when the victim was chosen.
#[derive(Debug, Clone)]
pub struct OomVictim {
    pub victim_pid: u32,
    /// The memory cgroup of the task that ran the OOM killer.
    pub invoker_memcg: MemcgCounters,
    /// The invoking CPU's node's zones, before the victim frees its memory.
    pub zones: Box<ZoneSnapshot>,
}

/// What a record says, by kind.
#[derive(Debug, Clone)]
pub enum What {
    AllocFail(Box<AllocFail>),
    /// warn_alloc entered: the kernel is printing `page allocation failure`.
    AllocWarn {
        gfp: Gfp,
    },
    CompactTry(CompactRequest),
    /// A compaction pass over a zone starts (`mm_compaction_begin`).
    CompactBegin,
    /// The pass ends (`mm_compaction_end`) with the kernel's status name.
    CompactEnd {
        status: String,
    },
    CompactRetry(CompactRetry),
    ReclaimBegin {
        order: u32,
        gfp: Gfp,
    },
    ReclaimEnd {
        nr_reclaimed: u64,
    },
    OomVictim(OomVictim),
    Netns(NetnsCreation),
    SlabCreateFail {
        cache: String,
    },
}

/// One decoded record: who and when, then what.
#[derive(Debug, Clone)]
pub struct Event {
    pub task: Task,
    pub what: What,
}

/// The running kernel's tables that name what its records hold, as read at start-up. A
/// recording carries them, so that `report` decodes exactly as the live run did.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct KernelTables {
    /// `kmem/mm_page_alloc`'s tracefs `print fmt`: the gfp flag table.
    pub page_alloc_format: Option<String>,
    /// `compaction/mm_compaction_end`'s `print fmt`: compaction status names.
    pub compaction_end_format: Option<String>,
    /// `oom/compact_retry`'s `print fmt`: compaction priority and result names.
    pub compact_retry_format: Option<String>,
    /// Migratetype names in enum order (/proc/pagetypeinfo).
    pub migratetypes: Vec<String>,
    /// CLOCK_REALTIME minus CLOCK_MONOTONIC at start-up, in ns: turns event times into dates.
    pub realtime_minus_monotonic_ns: i64,
}

impl KernelTables {
    /// This kernel's tables. `page_alloc_format` is read by the loader (it needs the offsets).
    pub fn read(tracefs: &std::path::Path, page_alloc_format: Option<String>) -> Self {
        let format = |cat: &str, ev: &str| {
            super::tracefs::EventFormat::read(tracefs, cat, ev)
                .map(|f| f.print_fmt)
                .ok()
        };
        Self {
            page_alloc_format,
            compaction_end_format: format("compaction", "mm_compaction_end"),
            compact_retry_format: format("oom", "compact_retry"),
            migratetypes: MigrateTypes::load().names().to_vec(),
            realtime_minus_monotonic_ns: MonotonicClock::now().realtime_minus_monotonic_ns,
        }
    }
}

/// Everything needed to name what the kernel sent.
pub struct Decoder {
    pub gfp: Option<GfpTable>,
    pub migratetypes: MigrateTypes,
    pub kallsyms: Kallsyms,
    compaction_status: Symbols,
    compact_priority: Symbols,
    compact_result: Symbols,
    clock: MonotonicClock,
    stacks: RefCell<StackCache>,
    /// Masks already named: their names and the rights they carry (`cma` aside, which is the
    /// migratetype's). A handful of masks recur.
    masks: RefCell<HashMap<u64, (String, Access)>>,
}

/// Distinct gfp masks kept named; past this the cache starts over.
const MAX_CACHED_MASKS: usize = 1024;

impl Decoder {
    /// `gfp_error` is set when the tables carry no usable gfp flag table: masks are then
    /// printed in hex.
    pub fn new(tables: &KernelTables, kallsyms: Kallsyms) -> (Self, Option<String>) {
        let (gfp, gfp_error) = match tables.page_alloc_format.as_deref() {
            Some(fmt) => match GfpTable::from_print_fmt(fmt) {
                Ok(t) => (Some(t), None),
                Err(e) => (None, Some(format!("{e:#}"))),
            },
            None => (None, Some("kmem/mm_page_alloc format unreadable".into())),
        };
        let symbols = |fmt: &Option<String>, field| {
            Symbols::from_print_fmt(fmt.as_deref().unwrap_or_default(), field)
        };
        let decoder = Self {
            gfp,
            migratetypes: MigrateTypes::from_names(tables.migratetypes.clone()),
            kallsyms,
            compaction_status: symbols(&tables.compaction_end_format, "status"),
            compact_priority: symbols(&tables.compact_retry_format, "priority"),
            compact_result: symbols(&tables.compact_retry_format, "result"),
            clock: MonotonicClock {
                realtime_minus_monotonic_ns: tables.realtime_minus_monotonic_ns,
            },
            stacks: RefCell::default(),
            masks: RefCell::default(),
        };
        (decoder, gfp_error)
    }

    pub fn decode(&self, bytes: &[u8]) -> Result<Event> {
        let Some(header) = read_record::<EventHeader>(bytes) else {
            bail!("short record ({} bytes)", bytes.len());
        };
        let Some(kind) = EventKind::from_u32(header.kind) else {
            bail!("unknown record kind {}", header.kind);
        };
        let short = || anyhow::anyhow!("short {kind:?} record ({} bytes)", bytes.len());
        match kind {
            EventKind::AllocFail => {
                let raw = read_record::<AllocFailEvent>(bytes).ok_or_else(short)?;
                Ok(Event {
                    task: self.task(&raw.header, &raw.comm),
                    what: What::AllocFail(Box::new(self.alloc_fail(&raw))),
                })
            }
            EventKind::SlabCreateFail => {
                let raw = read_record::<SlabCreateFailEvent>(bytes).ok_or_else(short)?;
                Ok(Event {
                    task: self.task(&raw.header, &raw.comm),
                    what: What::SlabCreateFail {
                        cache: c_str(&raw.name),
                    },
                })
            }
            EventKind::OomVictim => {
                let raw = read_record::<OomVictimEvent>(bytes).ok_or_else(short)?;
                Ok(Event {
                    task: self.task(&raw.mm.header, &raw.mm.comm),
                    what: What::OomVictim(OomVictim {
                        victim_pid: raw.mm.args[0] as u32,
                        invoker_memcg: MemcgCounters::from_args(&raw.mm.args[1..5]),
                        zones: Box::new(raw.zones),
                    }),
                })
            }
            _ => {
                let raw = read_record::<MmEvent>(bytes).ok_or_else(short)?;
                let task = self.task(&raw.header, &raw.comm);
                let what = self.mm(kind, &raw.args, task.ts_ns)?;
                Ok(Event { task, what })
            }
        }
    }

    /// The small lifecycle records; `args` per [`EventKind`].
    fn mm(&self, kind: EventKind, a: &[u64; 6], ts_ns: u64) -> Result<What> {
        Ok(match kind {
            EventKind::CompactTry => What::CompactTry(CompactRequest {
                order: a[0] as u32,
                gfp: self.gfp(a[1]),
                priority: a[2] as i64,
            }),
            EventKind::CompactBegin => What::CompactBegin,
            EventKind::CompactEnd => What::CompactEnd {
                status: self.compaction_status.name(a[0]),
            },
            EventKind::CompactRetry => What::CompactRetry(CompactRetry {
                order: a[0] as u32,
                priority: self.compact_priority.name(a[1]),
                result: self.compact_result.name(a[2]),
                retries: a[3],
                max_retries: a[4],
                retry: a[5] != 0,
            }),
            EventKind::ReclaimBegin => What::ReclaimBegin {
                order: a[0] as u32,
                gfp: self.gfp(a[1]),
            },
            EventKind::ReclaimEnd => What::ReclaimEnd { nr_reclaimed: a[0] },
            EventKind::NetnsSyscall => {
                let Some(op) = NetnsOp::from_u64(a[0]) else {
                    bail!("unknown netns syscall {}", a[0]);
                };
                What::Netns(netns_creation(op.name(), a[2], a[3] as i64, ts_ns))
            }
            EventKind::CopyNetNs => {
                What::Netns(netns_creation("copy_net_ns", a[0], a[1] as i64, ts_ns))
            }
            EventKind::AllocWarn => What::AllocWarn {
                gfp: self.gfp(a[0]),
            },
            EventKind::AllocFail | EventKind::SlabCreateFail | EventKind::OomVictim => {
                bail!("{kind:?} is not a lifecycle record")
            }
        })
    }

    fn task(&self, header: &EventHeader, comm: &[u8]) -> Task {
        Task {
            ts_ns: header.ts_ns,
            time: self.clock.wall_time(header.ts_ns),
            pid: header.pid,
            tid: header.tid,
            comm: c_str(comm),
        }
    }

    fn alloc_fail(&self, raw: &AllocFailEvent) -> AllocFail {
        let migratetype = self.migratetypes.name(raw.migratetype);
        let (gfp, access) = self.gfp_and_access(raw.gfp_flags);
        AllocFail {
            order: raw.order,
            gfp,
            access: Access {
                cma: migratetype == "Movable",
                ..access
            },
            migratetype,
            cgroup_id: raw.cgroup_id,
            stack: self.stack(raw.frames()),
            netns_window: match raw.netns {
                fragtrace_common::netns_window::COPY_NET_NS => Some(NetnsWindow::CopyNetNs),
                fragtrace_common::netns_window::SYSCALL => Some(NetnsWindow::Syscall),
                _ => None,
            },
            warned: raw.warned != 0,
            memcg: raw.memcg,
            zones: Box::new(raw.zones),
        }
    }

    fn gfp(&self, mask: u64) -> Gfp {
        self.gfp_and_access(mask).0
    }

    /// The mask named, and the rights it carries for a non-movable request; each mask is
    /// worked out once.
    fn gfp_and_access(&self, mask: u64) -> (Gfp, Access) {
        let mut masks = self.masks.borrow_mut();
        if let Some((names, access)) = masks.get(&mask) {
            let gfp = Gfp {
                mask,
                names: names.clone(),
            };
            return (gfp, *access);
        }
        if masks.len() >= MAX_CACHED_MASKS {
            masks.clear();
        }
        let gfp = self.name_gfp(mask);
        let access = Access::from_gfp(mask, false, |name| {
            self.gfp.as_ref().and_then(|t| t.bit(name))
        });
        masks.insert(mask, (gfp.names.clone(), access));
        (gfp, access)
    }

    fn name_gfp(&self, mask: u64) -> Gfp {
        Gfp {
            mask,
            names: match &self.gfp {
                Some(table) => table.decode(mask),
                None => format!("{mask:#x}"),
            },
        }
    }

    /// [`Self::symbolize`], shared with the earlier failures of the same stack.
    fn stack(&self, frames: &[u64]) -> Stack {
        self.stacks
            .borrow_mut()
            .get(frames, self.kallsyms.generation(), || {
                self.symbolize(frames)
            })
    }

    /// Symbolizes frames and drops the leading ones that belong to the tracing machinery
    /// (the BPF program itself, which has no symbol, and the tracepoint's own functions).
    pub fn symbolize(&self, frames: &[u64]) -> Vec<String> {
        let skip = frames
            .iter()
            .take_while(|&&addr| self.kallsyms.name(addr).is_none_or(is_tracing_frame))
            .count();
        frames[skip..]
            .iter()
            .map(|&addr| self.kallsyms.format(addr))
            .collect()
    }
}

/// A stack the kernel aggregated, named.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StackCount {
    pub comm: String,
    pub cgroup_id: u64,
    pub order: u32,
    /// Stalls: compaction or reclaim; fallbacks: `Unmovable->Movable`.
    pub what: Option<String>,
    /// Symbolized frames, innermost first; empty when the kernel could not keep the stack.
    pub stack: Vec<String>,
    pub count: u64,
    pub total_ns: u64,
}

/// The one frame of failures counted past the stack budget (`--storm-stacks`), as bcc's
/// `[Missed Kernel Stack]`.
pub const STACK_NOT_TAKEN_FRAME: &str = "[stack not taken]";

/// The kernel's stack aggregations, named.
#[derive(Debug, Clone, Default)]
pub struct KernelStacks {
    /// Failures counted in the kernel in storm mode.
    pub failures: Vec<StackCount>,
    /// Direct compaction and direct reclaim stalls.
    pub stalls: Vec<StackCount>,
    /// Successful allocations of `--stacks-min-order` and above.
    pub allocations: Vec<StackCount>,
    /// Migratetype fallbacks below pageblock order.
    pub fallbacks: Vec<StackCount>,
}

impl Decoder {
    pub fn kernel_stacks(&self, agg: &AggregatedStacks) -> KernelStacks {
        let name = |a: &Aggregated, what: Option<String>| StackCount {
            comm: a.comm.clone(),
            cgroup_id: a.cgroup_id,
            order: a.order,
            what,
            stack: match agg.stacks.get(&a.stack_id) {
                Some(frames) => self.symbolize(frames),
                None if a.stack_id == STACK_NOT_TAKEN => vec![STACK_NOT_TAKEN_FRAME.to_string()],
                None => Vec::new(),
            },
            count: a.count,
            total_ns: a.total_ns,
        };
        let stall = |tag| match tag {
            stall_kind::COMPACTION => "compaction".to_string(),
            stall_kind::RECLAIM => "reclaim".to_string(),
            other => format!("stall{other}"),
        };
        let mt = |v: u32| self.migratetypes.name((v & 0xff) as i32);
        KernelStacks {
            failures: agg.failures.iter().map(|a| name(a, None)).collect(),
            stalls: agg
                .stalls
                .iter()
                .map(|a| name(a, Some(stall(a.tag))))
                .collect(),
            allocations: agg.allocations.iter().map(|a| name(a, None)).collect(),
            fallbacks: agg
                .fallbacks
                .iter()
                .map(|a| name(a, Some(format!("{}->{}", mt(a.tag >> 8), mt(a.tag)))))
                .collect(),
        }
    }
}

/// Syscalls return -errno; copy_net_ns returns a pointer or ERR_PTR(-errno).
fn netns_creation(op: &'static str, start_ns: u64, ret: i64, end_ns: u64) -> NetnsCreation {
    NetnsCreation {
        op,
        latency_ns: end_ns.saturating_sub(start_ns),
        errno: (-4095..0).contains(&ret).then_some(-ret as i32),
    }
}

fn is_tracing_frame(name: &str) -> bool {
    const PREFIXES: &[&str] = &[
        "bpf_",
        "__bpf_",
        "___bpf_",
        "trace_event_raw_event_",
        "perf_trace_",
        "perf_",
        "__traceiter_",
        "trace_call_bpf",
        "__perf_",
        "kprobe_",
        "ftrace_",
    ];
    PREFIXES.iter().any(|p| name.starts_with(p)) || name.starts_with("trace_mm_page_alloc")
}

fn c_str(comm: &[u8]) -> String {
    let end = comm.iter().position(|&b| b == 0).unwrap_or(comm.len());
    String::from_utf8_lossy(&comm[..end]).into_owned()
}

/// Converts CLOCK_MONOTONIC nanoseconds (bpf_ktime_get_ns) to wall-clock time.
#[derive(Clone, Copy, Debug)]
pub struct MonotonicClock {
    realtime_minus_monotonic_ns: i64,
}

impl MonotonicClock {
    pub fn now() -> Self {
        let mono = clock_ns(libc::CLOCK_MONOTONIC);
        let real = clock_ns(libc::CLOCK_REALTIME);
        Self {
            realtime_minus_monotonic_ns: (real - mono) as i64,
        }
    }

    pub fn wall_time(&self, monotonic_ns: u64) -> jiff::Timestamp {
        let ns = monotonic_ns as i128 + self.realtime_minus_monotonic_ns as i128;
        jiff::Timestamp::from_nanosecond(ns).unwrap_or(jiff::Timestamp::UNIX_EPOCH)
    }

    /// CLOCK_MONOTONIC now, the clock of the events' `ts_ns`.
    pub fn monotonic_now_ns() -> u64 {
        clock_ns(libc::CLOCK_MONOTONIC) as u64
    }
}

fn clock_ns(clock: libc::clockid_t) -> i128 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid pointer to a timespec.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec as i128 * 1_000_000_000 + ts.tv_nsec as i128
}

#[cfg(test)]
mod tests {
    use fragtrace_common::{MAX_STACK_DEPTH, record_bytes};

    use super::*;

    fn tables() -> KernelTables {
        KernelTables {
            page_alloc_format: Some(
                include_str!("../../tests/fixtures/tracefs/mm_page_alloc-6.18.format").into(),
            ),
            realtime_minus_monotonic_ns: MonotonicClock::now().realtime_minus_monotonic_ns,
            ..Default::default()
        }
    }

    #[test]
    fn decodes_a_failure_end_to_end() {
        let kallsyms = Kallsyms::parse(
            "ffffffff81100000 T bpf_trace_run4\n\
             ffffffff81200000 T __traceiter_mm_page_alloc\n\
             ffffffff812a0000 T __alloc_pages_noprof\n\
             ffffffff81300000 T pipe_resize_ring\n",
        );
        let (d, gfp_error) = Decoder::new(&tables(), kallsyms);
        assert_eq!(gfp_error, None);
        let mut raw = AllocFailEvent {
            header: EventHeader {
                kind: EventKind::AllocFail as u32,
                cpu: 0,
                ts_ns: MonotonicClock::monotonic_now_ns(),
                pid: 7,
                tid: 8,
            },
            cgroup_id: 1,
            gfp_flags: 0x442dc0,
            order: 6,
            migratetype: 0,
            comm: *b"pipe\0\0\0\0\0\0\0\0\0\0\0\0",
            netns: fragtrace_common::netns_window::COPY_NET_NS,
            warned: 0,
            memcg: Default::default(),
            zones: Default::default(),
            stack_bytes: 5 * 8,
            stack: [0; MAX_STACK_DEPTH],
        };
        raw.stack[..5].copy_from_slice(&[
            0xffffffffc0001000, // the BPF program: no symbol
            0xffffffff81100010,
            0xffffffff81200020,
            0xffffffff812a0030,
            0xffffffff81300040,
        ]);
        raw.zones.node = 1;
        raw.zones.zones[2].free_blocks[10] = 77;
        let ev = d.decode(record_bytes(&raw)).unwrap();
        let What::AllocFail(f) = ev.what else {
            panic!("not an alloc_fail");
        };
        assert_eq!(*f.zones, raw.zones);
        assert_eq!(ev.task.comm, "pipe");
        assert_eq!(
            f.gfp.names,
            "GFP_KERNEL_ACCOUNT|__GFP_ZERO|__GFP_NOWARN|__GFP_COMP"
        );
        assert!(!f.access.high && !f.access.atomic);
        assert_eq!(f.migratetype, "migratetype0");
        assert_eq!(f.netns_window, Some(NetnsWindow::CopyNetNs));
        assert_eq!(
            *f.stack,
            ["__alloc_pages_noprof+0x30", "pipe_resize_ring+0x40"]
        );
        let age = jiff::Timestamp::now().duration_since(ev.task.time);
        assert!(age.as_secs_f64().abs() < 5.0, "wall time off by {age:?}");
        assert!(d.decode(&record_bytes(&raw)[..40]).is_err());
    }

    /// Aggregated failures: a kept stack is symbolized; one past the stack budget has the one
    /// `[stack not taken]` frame; one the kernel could not keep (an errno) has none.
    #[test]
    fn kernel_stacks_name_missing_stacks() {
        use crate::source::stack_maps::Aggregated;
        let (d, _) = Decoder::new(
            &KernelTables::default(),
            Kallsyms::parse("ffffffff812a0000 T __alloc_pages_noprof\n"),
        );
        let failure = |stack_id| Aggregated {
            cgroup_id: 1,
            comm: "storm".into(),
            stack_id,
            order: 3,
            tag: 0,
            count: 10,
            total_ns: 0,
        };
        let agg = AggregatedStacks {
            failures: vec![failure(4), failure(STACK_NOT_TAKEN), failure(-17)],
            stacks: [(4, vec![0xffffffff812a0010])].into(),
            ..Default::default()
        };
        let stacks: Vec<Vec<String>> = d
            .kernel_stacks(&agg)
            .failures
            .into_iter()
            .map(|f| f.stack)
            .collect();
        assert_eq!(
            stacks,
            [
                vec!["__alloc_pages_noprof+0x10".to_string()],
                vec![STACK_NOT_TAKEN_FRAME.to_string()],
                vec![],
            ]
        );
    }

    /// An OOM record carries the zones as they were when the victim was chosen.
    #[test]
    fn oom_victim_round_trip() {
        let (d, _) = Decoder::new(&KernelTables::default(), Kallsyms::parse(""));
        let mut raw = OomVictimEvent::default();
        raw.mm.header.kind = EventKind::OomVictim as u32;
        raw.mm.args[0] = 4242;
        raw.zones.flags = fragtrace_common::zone_snapshot::VALID;
        raw.zones.zones[1].free_pages = 9;
        let What::OomVictim(oom) = d.decode(record_bytes(&raw)).unwrap().what else {
            panic!("not an oom record");
        };
        assert_eq!((oom.victim_pid, *oom.zones), (4242, raw.zones));
        // A record cut short is refused, not misread.
        assert!(d.decode(&record_bytes(&raw)[..100]).is_err());
    }

    #[test]
    fn netns_windows_and_their_errors() {
        let (d, _) = Decoder::new(&KernelTables::default(), Kallsyms::parse(""));
        let mm = |kind: EventKind, ts_ns: u64, args: [u64; 6]| MmEvent {
            header: EventHeader {
                kind: kind as u32,
                ts_ns,
                ..Default::default()
            },
            comm: *b"runc:[1:CHILD]\0\0",
            args,
        };
        let netns = |raw: MmEvent| match d.decode(record_bytes(&raw)).unwrap().what {
            What::Netns(n) => n,
            other => panic!("not netns: {other:?}"),
        };
        let ok = netns(mm(
            EventKind::NetnsSyscall,
            5_000,
            [NetnsOp::Unshare as u64, 0x4000_0000, 1_000, 0, 0, 0],
        ));
        assert_eq!((ok.op, ok.latency_ns, ok.errno), ("unshare", 4_000, None));
        let denied = netns(mm(
            EventKind::NetnsSyscall,
            2_000,
            [
                NetnsOp::Clone as u64,
                0x4000_0000,
                1_500,
                (-1i64) as u64,
                0,
                0,
            ],
        ));
        assert_eq!((denied.op, denied.errno), ("clone", Some(libc::EPERM)));
        // copy_net_ns returns a kernel pointer on success, ERR_PTR(-ENOMEM) on failure.
        let ptr = netns(mm(
            EventKind::CopyNetNs,
            9,
            [3, 0xffff_8880_1234_5000, 0, 0, 0, 0],
        ));
        assert_eq!(ptr.errno, None);
        let enomem = netns(mm(
            EventKind::CopyNetNs,
            9,
            [3, (-12i64) as u64, 0, 0, 0, 0],
        ));
        assert_eq!(
            (enomem.op, enomem.errno, enomem.latency_ns),
            ("copy_net_ns", Some(12), 6)
        );
        // An unknown syscall number is refused, not guessed.
        assert!(
            d.decode(record_bytes(&mm(
                EventKind::NetnsSyscall,
                1,
                [99, 0, 0, 0, 0, 0]
            )))
            .is_err()
        );
    }
}
