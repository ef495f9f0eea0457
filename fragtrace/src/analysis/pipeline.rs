//! Decoded events in, output records out: pairing, attribution, and the run's aggregates.
use std::collections::BTreeMap;

use fragtrace_common::{EventKind, MemcgCounters};

use super::{
    attribution::{Attributor, FailureContext, OomKill},
    filter::Filter,
    histogram::{Latency, LatencyByOrder},
    netns::{NetnsCreation, errno_name},
    stalls::{CompactRequest, Stall, StallTracker},
    stats::FailureStats,
};
use crate::decode::event::{AllocFail, Decoder, Event, Task};

/// What the outputs render, one per shown event.
#[derive(Debug)]
pub enum Record {
    AllocFail(Box<AllocFail>, Box<FailureContext>),
    AllocWarn {
        task: Task,
        gfp: u64,
        gfp_flags: String,
    },
    /// A direct compaction attempt (`try_to_compact_pages`); its passes follow as stalls.
    CompactTry {
        task: Task,
        request: CompactRequest,
    },
    Stall(Stall),
    CompactRetry(CompactRetry),
    Netns(NetnsCreation),
    OomKill {
        task: Task,
        kill: OomKill,
    },
    SlabCreateFail {
        task: Task,
        cache: String,
    },
}

/// The allocator's decision after a compaction attempt (`oom:compact_retry`).
#[derive(Debug)]
pub struct CompactRetry {
    pub task: Task,
    pub order: u32,
    pub priority: String,
    pub result: String,
    pub retries: u64,
    pub max_retries: u64,
    /// It will compact again.
    pub retry: bool,
}

/// Aggregates for the summary.
#[derive(Default)]
pub struct Aggregates {
    pub failures: FailureStats,
    /// Direct compaction stall per pass, by requested order.
    pub compaction_direct: LatencyByOrder,
    /// kcompactd and proactive compaction passes.
    pub compaction_background: Latency,
    pub compaction_status: BTreeMap<String, u64>,
    /// Direct compaction attempts by requested order.
    pub compaction_attempts: BTreeMap<u32, u64>,
    pub compact_retries: u64,
    pub reclaim: LatencyByOrder,
    pub reclaimed_pages: u64,
    pub netns_latency: Latency,
    /// Failed netns creations by `op errno`.
    pub netns_failed: BTreeMap<String, u64>,
    pub oom_kills: u64,
    pub oom_fragmentation_driven: u64,
    pub slab_failures: BTreeMap<String, u64>,
    pub warned_failures: u64,
    pub netns_failures: u64,
    pub verdicts: BTreeMap<&'static str, u64>,
}

pub struct Analyzer {
    pub filter: Filter,
    pub totals: Aggregates,
    pub attributor: Attributor,
    stalls: StallTracker,
}

impl Analyzer {
    pub fn new(filter: Filter) -> Self {
        Self {
            filter,
            totals: Aggregates::default(),
            attributor: Attributor::new(),
            stalls: StallTracker::default(),
        }
    }

    /// One decoded event; `None` when it only updates state or is filtered out.
    pub fn on_event(&mut self, event: Event, decoder: &Decoder) -> Option<Record> {
        match event {
            Event::AllocFail(ev) => {
                self.stalls.allocation_done(ev.tid);
                if !self.filter.matches(ev.pid, &ev.comm, Some(ev.order)) {
                    return None;
                }
                let ctx = self.attributor.failure(&ev, decoder.gfp.as_ref());
                let t = &mut self.totals;
                t.failures.record(&ev);
                t.warned_failures += ev.warned as u64;
                t.netns_failures += ctx.netns as u64;
                *t.verdicts.entry(ctx.verdict.kind.as_str()).or_default() += 1;
                Some(Record::AllocFail(Box::new(ev), Box::new(ctx)))
            }
            Event::SlabCreateFail { task, cache } => {
                if !self.filter.matches(task.pid, &task.comm, None) {
                    return None;
                }
                *self.totals.slab_failures.entry(cache.clone()).or_default() += 1;
                Some(Record::SlabCreateFail { task, cache })
            }
            Event::OomVictim { task, args, zones } => {
                // Always shown: an OOM kill matters whoever it hit.
                let kill = self.attributor.oom_kill(
                    args[0] as u32,
                    task.pid,
                    &MemcgCounters::from_args(&args[1..5]),
                    &zones,
                );
                let t = &mut self.totals;
                t.oom_kills += 1;
                t.oom_fragmentation_driven += kill.fragmentation_driven as u64;
                Some(Record::OomKill { task, kill })
            }
            Event::Mm { task, kind, args } => self.on_mm(task, kind, args, decoder),
        }
    }

    fn on_mm(
        &mut self,
        task: Task,
        kind: EventKind,
        args: [u64; 6],
        decoder: &Decoder,
    ) -> Option<Record> {
        let t = &mut self.totals;
        match kind {
            EventKind::CompactTry => {
                self.stalls.on(&task, kind, &args);
                let request = CompactRequest::from_args(&args);
                if !self
                    .filter
                    .matches(task.pid, &task.comm, Some(request.order))
                {
                    return None;
                }
                *t.compaction_attempts.entry(request.order).or_default() += 1;
                Some(Record::CompactTry { task, request })
            }
            EventKind::CompactBegin
            | EventKind::CompactEnd
            | EventKind::ReclaimBegin
            | EventKind::ReclaimEnd => {
                let stall = self.stalls.on(&task, kind, &args)?;
                let (order, stall_task) = match &stall {
                    Stall::Compaction { request, task, .. } => (request.map(|r| r.order), task),
                    Stall::Reclaim { order, task, .. } => (Some(*order), task),
                };
                if !self.filter.matches(stall_task.pid, &stall_task.comm, order) {
                    return None;
                }
                match &stall {
                    Stall::Compaction {
                        request,
                        status,
                        stall_ns,
                        ..
                    } => {
                        let name = decoder.symbols.compaction_status.name(*status as u64);
                        *t.compaction_status.entry(name).or_default() += 1;
                        match request {
                            Some(r) => t.compaction_direct.record(r.order, *stall_ns),
                            None => t.compaction_background.record(*stall_ns),
                        }
                    }
                    Stall::Reclaim {
                        order,
                        stall_ns,
                        nr_reclaimed,
                        ..
                    } => {
                        t.reclaim.record(*order, *stall_ns);
                        t.reclaimed_pages += nr_reclaimed;
                    }
                }
                Some(Record::Stall(stall))
            }
            EventKind::CompactRetry => {
                if !self
                    .filter
                    .matches(task.pid, &task.comm, Some(args[0] as u32))
                {
                    return None;
                }
                t.compact_retries += 1;
                Some(Record::CompactRetry(CompactRetry {
                    order: args[0] as u32,
                    priority: decoder.symbols.compact_priority.name(args[1]),
                    result: decoder.symbols.compact_result.name(args[2]),
                    retries: args[3],
                    max_retries: args[4],
                    retry: args[5] != 0,
                    task,
                }))
            }
            EventKind::NetnsSyscall | EventKind::CopyNetNs => {
                let creation = NetnsCreation::from_record(&task, kind, &args)?;
                if !self.filter.matches(task.pid, &task.comm, None) {
                    return None;
                }
                match creation.errno {
                    None => t.netns_latency.record(creation.latency_ns),
                    Some(e) => {
                        let key = format!("{} {}", creation.op, errno_name(e));
                        *t.netns_failed.entry(key).or_default() += 1;
                    }
                }
                Some(Record::Netns(creation))
            }
            EventKind::AllocWarn => {
                if !self.filter.matches(task.pid, &task.comm, None) {
                    return None;
                }
                Some(Record::AllocWarn {
                    gfp_flags: decoder.gfp_names(args[0]),
                    gfp: args[0],
                    task,
                })
            }
            // Decoded into their own events.
            EventKind::AllocFail | EventKind::SlabCreateFail | EventKind::OomVictim => None,
        }
    }
}
