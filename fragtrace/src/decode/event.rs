//! Raw ring-buffer records to typed events with names: gfp flags, migratetype, symbols, time.
use anyhow::{Result, bail};
use fragtrace_common::{
    AllocFailEvent, EventHeader, EventKind, MemcgCounters, MmEvent, OomVictimEvent,
    SlabCreateFailEvent, ZoneSnapshot, read_record,
};

use super::{gfp::GfpTable, kallsyms::Kallsyms, migratetype::MigrateTypes, print_fmt::Symbols};

/// Who and when, for every event.
#[derive(Debug, Clone, PartialEq)]
pub struct Task {
    pub ts_ns: u64,
    pub time: jiff::Timestamp,
    pub pid: u32,
    pub tid: u32,
    pub comm: String,
}

/// A failed page allocation, decoded.
#[derive(Debug, Clone)]
pub struct AllocFail {
    pub ts_ns: u64,
    pub time: jiff::Timestamp,
    pub pid: u32,
    pub tid: u32,
    pub comm: String,
    pub order: u32,
    pub gfp: u64,
    pub gfp_flags: String,
    pub migratetype: String,
    pub cgroup_id: u64,
    /// Symbolized frames, innermost first, tracing machinery removed.
    pub stack: Vec<String>,
    /// A `fragtrace_common::netns_window` value: inside a netns creation, and how it is known.
    pub netns_window: u32,
    /// warn_alloc ran for it: the kernel printed `page allocation failure`.
    pub warned: bool,
    /// The task's memory-cgroup counters as the kernel handler read them at the failure.
    pub memcg: MemcgCounters,
    /// The failing CPU's node's zones as the kernel handler read them at the failure.
    pub zones: Box<ZoneSnapshot>,
}

#[derive(Debug, Clone)]
pub enum Event {
    AllocFail(AllocFail),
    /// `oom:mark_victim`: args per [`EventKind::OomVictim`], and the zones when it ran.
    OomVictim {
        task: Task,
        args: [u64; 6],
        zones: Box<ZoneSnapshot>,
    },
    /// Compaction, reclaim, netns and warn records; `args` per [`EventKind`].
    Mm {
        task: Task,
        kind: EventKind,
        args: [u64; 6],
    },
    SlabCreateFail {
        task: Task,
        cache: String,
    },
}

/// Names of kernel enums printed by tracepoints, from their tracefs `print fmt`.
#[derive(Debug, Clone, Default)]
pub struct KernelSymbols {
    pub compaction_status: Symbols,
    pub compact_priority: Symbols,
    pub compact_result: Symbols,
}

impl KernelSymbols {
    pub fn load(tracefs: &std::path::Path) -> Self {
        let fmt = |cat: &str, ev: &str| {
            super::tracefs::EventFormat::read(tracefs, cat, ev)
                .map(|f| f.print_fmt)
                .unwrap_or_default()
        };
        let end = fmt("compaction", "mm_compaction_end");
        let retry = fmt("oom", "compact_retry");
        Self {
            compaction_status: Symbols::from_print_fmt(&end, "status"),
            compact_priority: Symbols::from_print_fmt(&retry, "priority"),
            compact_result: Symbols::from_print_fmt(&retry, "result"),
        }
    }
}

/// Everything needed to name what the kernel sent.
pub struct Decoder {
    pub gfp: Option<GfpTable>,
    pub migratetypes: MigrateTypes,
    pub kallsyms: Kallsyms,
    pub symbols: KernelSymbols,
    clock: MonotonicClock,
}

impl Decoder {
    pub fn new(gfp: Option<GfpTable>, migratetypes: MigrateTypes, kallsyms: Kallsyms) -> Self {
        Self {
            gfp,
            migratetypes,
            kallsyms,
            symbols: KernelSymbols::default(),
            clock: MonotonicClock::now(),
        }
    }

    pub fn decode(&self, bytes: &[u8]) -> Result<Event> {
        let Some(header) = read_record::<EventHeader>(bytes) else {
            bail!("short record ({} bytes)", bytes.len());
        };
        match EventKind::from_u32(header.kind) {
            Some(EventKind::AllocFail) => {
                let Some(raw) = read_record::<AllocFailEvent>(bytes) else {
                    bail!("short alloc_fail record ({} bytes)", bytes.len());
                };
                Ok(Event::AllocFail(self.alloc_fail(&raw)))
            }
            Some(EventKind::SlabCreateFail) => {
                let Some(raw) = read_record::<SlabCreateFailEvent>(bytes) else {
                    bail!("short slab_create_fail record ({} bytes)", bytes.len());
                };
                Ok(Event::SlabCreateFail {
                    task: self.task(&raw.header, &raw.comm),
                    cache: c_str(&raw.name),
                })
            }
            Some(EventKind::OomVictim) => {
                let Some(raw) = read_record::<OomVictimEvent>(bytes) else {
                    bail!("short oom_kill record ({} bytes)", bytes.len());
                };
                Ok(Event::OomVictim {
                    task: self.task(&raw.mm.header, &raw.mm.comm),
                    args: raw.mm.args,
                    zones: Box::new(raw.zones),
                })
            }
            Some(kind) => {
                let Some(raw) = read_record::<MmEvent>(bytes) else {
                    bail!("short {kind:?} record ({} bytes)", bytes.len());
                };
                Ok(Event::Mm {
                    task: self.task(&raw.header, &raw.comm),
                    kind,
                    args: raw.args,
                })
            }
            None => bail!("unknown record kind {}", header.kind),
        }
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
        AllocFail {
            ts_ns: raw.header.ts_ns,
            time: self.clock.wall_time(raw.header.ts_ns),
            pid: raw.header.pid,
            tid: raw.header.tid,
            comm: c_str(&raw.comm),
            order: raw.order,
            gfp: raw.gfp_flags,
            gfp_flags: self.gfp_names(raw.gfp_flags),
            migratetype: self.migratetypes.name(raw.migratetype),
            cgroup_id: raw.cgroup_id,
            stack: self.symbolize(raw.frames()),
            netns_window: raw.netns,
            warned: raw.warned != 0,
            memcg: raw.memcg,
            zones: Box::new(raw.zones),
        }
    }

    pub fn gfp_names(&self, gfp: u64) -> String {
        match &self.gfp {
            Some(table) => table.decode(gfp),
            None => format!("{gfp:#x}"),
        }
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
    realtime_minus_monotonic_ns: i128,
}

impl MonotonicClock {
    pub fn now() -> Self {
        let mono = clock_ns(libc::CLOCK_MONOTONIC);
        let real = clock_ns(libc::CLOCK_REALTIME);
        Self {
            realtime_minus_monotonic_ns: real - mono,
        }
    }

    pub fn wall_time(&self, monotonic_ns: u64) -> jiff::Timestamp {
        let ns = monotonic_ns as i128 + self.realtime_minus_monotonic_ns;
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

    #[test]
    fn decodes_a_record_end_to_end() {
        let kallsyms = Kallsyms::parse(
            "ffffffff81100000 T bpf_trace_run4\n\
             ffffffff81200000 T __traceiter_mm_page_alloc\n\
             ffffffff812a0000 T __alloc_pages_noprof\n\
             ffffffff81300000 T pipe_resize_ring\n",
        );
        let gfp = GfpTable::from_print_fmt(include_str!(
            "../../tests/fixtures/tracefs/mm_page_alloc-6.18.format"
        ))
        .unwrap();
        let d = Decoder::new(Some(gfp), MigrateTypes::default(), kallsyms);
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
            netns: 0,
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
        let Event::AllocFail(ev) = d.decode(record_bytes(&raw)).unwrap() else {
            panic!("not an alloc_fail");
        };
        assert_eq!(*ev.zones, raw.zones);
        assert_eq!(ev.comm, "pipe");
        assert_eq!(
            ev.gfp_flags,
            "GFP_KERNEL_ACCOUNT|__GFP_ZERO|__GFP_NOWARN|__GFP_COMP"
        );
        assert_eq!(ev.migratetype, "migratetype0");
        assert_eq!(
            ev.stack,
            vec!["__alloc_pages_noprof+0x30", "pipe_resize_ring+0x40"]
        );
        let age = jiff::Timestamp::now().duration_since(ev.time);
        assert!(age.as_secs_f64().abs() < 5.0, "wall time off by {age:?}");
        assert!(d.decode(&record_bytes(&raw)[..40]).is_err());
    }

    /// An OOM record carries the zones as they were when the victim was chosen.
    #[test]
    fn oom_victim_round_trip() {
        let d = Decoder::new(None, MigrateTypes::default(), Kallsyms::parse(""));
        let mut raw = OomVictimEvent::default();
        raw.mm.header.kind = EventKind::OomVictim as u32;
        raw.mm.args[0] = 4242;
        raw.zones.flags = fragtrace_common::zone_snapshot::VALID;
        raw.zones.zones[1].free_pages = 9;
        let Event::OomVictim { args, zones, .. } = d.decode(record_bytes(&raw)).unwrap() else {
            panic!("not an oom record");
        };
        assert_eq!((args[0], *zones), (4242, raw.zones));
        // A record cut short is refused, not misread.
        assert!(d.decode(&record_bytes(&raw)[..100]).is_err());
    }
}
