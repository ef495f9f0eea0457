//! Decoded events in, findings out: pairing, filters, attribution, and the run's aggregates.
//! The same code runs live and in `report`; only the [`Host`] that answers differs.
use std::collections::BTreeMap;

use super::{
    attribution::{self, Attributor, FailureContext, OomKill},
    filter::{Filter, PodNames},
    histogram::{Latency, LatencyByOrder},
    netns::errno_name,
    stalls::{Stall, StallTracker},
    stats::FailureStats,
};
use crate::{
    decode::event::{
        AllocFail, CompactRequest, CompactRetry, Event, Gfp, NetnsCreation, Task, What,
    },
    source::{
        container::ContainerInfo,
        host::{Host, ZoneSample},
        stack_maps::AggregatedStacks,
    },
};

/// What the sinks show: one per event that passed the filters and is worth a line.
#[derive(Debug)]
pub struct Finding {
    pub task: Task,
    pub what: Found,
}

#[derive(Debug)]
pub enum Found {
    AllocFail {
        failure: Box<AllocFail>,
        context: Box<FailureContext>,
    },
    /// warn_alloc ran: the kernel printed `page allocation failure`.
    AllocWarn {
        gfp: Gfp,
    },
    /// A direct compaction attempt (`try_to_compact_pages`); its passes follow as stalls.
    CompactTry(CompactRequest),
    Stall(Stall),
    CompactRetry(CompactRetry),
    Netns(NetnsCreation),
    OomKill(OomKill),
    SlabCreateFail {
        cache: String,
    },
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
    /// Every one must match for an event to be shown.
    pub filters: Vec<Filter>,
    pub totals: Aggregates,
    pub attributor: Attributor,
    /// The kernel's stack aggregations as last read.
    pub kernel_stacks: AggregatedStacks,
    stalls: StallTracker,
}

impl Analyzer {
    pub fn new(filters: Vec<Filter>) -> Self {
        Self {
            filters,
            totals: Aggregates::default(),
            attributor: Attributor::default(),
            kernel_stacks: AggregatedStacks::default(),
            stalls: StallTracker::default(),
        }
    }

    /// The zone state read from /proc, in stream order.
    pub fn on_zone_sample(&mut self, sample: ZoneSample) {
        self.attributor.zones.add(sample);
    }

    pub fn on_kernel_stacks(&mut self, stacks: AggregatedStacks) {
        self.kernel_stacks = stacks;
    }

    /// A record user space could not decode.
    pub fn on_undecodable(&mut self) {
        self.totals.failures.undecodable += 1;
    }

    /// Whether every filter lets an event of `task` through. The task's cgroup is looked up
    /// (`cgroup`) only when a filter needs it.
    fn shown(
        filters: &[Filter],
        task: &Task,
        order: Option<u32>,
        cgroup: impl FnOnce(&mut dyn Host) -> Option<ContainerInfo>,
        host: &mut dyn Host,
    ) -> bool {
        if !filters
            .iter()
            .all(|f| f.matches(task.pid, &task.comm, order))
        {
            return false;
        }
        if !filters.iter().any(Filter::needs_cgroup) {
            return true;
        }
        let cgroup = cgroup(host);
        let mut pods = PodsOf(host);
        filters
            .iter()
            .all(|f| f.matches_cgroup(cgroup.as_ref(), &mut pods))
    }

    /// One decoded event; `None` when it only updates state or is filtered out.
    pub fn on_event(&mut self, event: Event, host: &mut dyn Host) -> Option<Finding> {
        let stall = self.stalls.on(&event);
        let Event { task, what } = event;
        let filters = &self.filters;
        let pid = task.pid;
        let mut shown = |order| Self::shown(filters, &task, order, |h| h.container(0, pid), host);
        let t = &mut self.totals;
        let found = match what {
            What::AllocFail(failure) => {
                // Found once, for the filters and the attribution alike.
                let cgroup = attribution::task_cgroup(&task, &failure, host);
                let known = cgroup.clone();
                if !Self::shown(filters, &task, Some(failure.order), |_| known, host) {
                    return None;
                }
                let context = self.attributor.failure(&task, &failure, cgroup, host);
                t.failures.record(&task, &failure);
                t.warned_failures += failure.warned as u64;
                t.netns_failures += context.netns as u64;
                *t.verdicts.entry(context.verdict.kind.as_str()).or_default() += 1;
                Found::AllocFail {
                    failure,
                    context: Box::new(context),
                }
            }
            What::CompactTry(request) => {
                if !shown(Some(request.order)) {
                    return None;
                }
                *t.compaction_attempts.entry(request.order).or_default() += 1;
                Found::CompactTry(request)
            }
            What::CompactBegin | What::ReclaimBegin { .. } => return None,
            What::CompactEnd { .. } | What::ReclaimEnd { .. } => {
                let stall = stall?;
                if !shown(stall.order()) {
                    return None;
                }
                match &stall {
                    Stall::Compaction {
                        request,
                        status,
                        stall_ns,
                    } => {
                        *t.compaction_status.entry(status.clone()).or_default() += 1;
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
                Found::Stall(stall)
            }
            What::CompactRetry(retry) => {
                if !shown(Some(retry.order)) {
                    return None;
                }
                t.compact_retries += 1;
                Found::CompactRetry(retry)
            }
            What::Netns(creation) => {
                if !shown(None) {
                    return None;
                }
                match creation.errno {
                    None => t.netns_latency.record(creation.latency_ns),
                    Some(e) => {
                        let key = format!("{} {}", creation.op, errno_name(e));
                        *t.netns_failed.entry(key).or_default() += 1;
                    }
                }
                Found::Netns(creation)
            }
            What::AllocWarn { gfp } => {
                if !shown(None) {
                    return None;
                }
                Found::AllocWarn { gfp }
            }
            // Always shown: an OOM kill matters whoever it hit.
            What::OomVictim(oom) => {
                let kill = self.attributor.oom_kill(
                    oom.victim_pid,
                    task.pid,
                    &oom.invoker_memcg,
                    &oom.zones,
                    host,
                );
                t.oom_kills += 1;
                t.oom_fragmentation_driven += kill.fragmentation_driven as u64;
                Found::OomKill(kill)
            }
            What::SlabCreateFail { cache } => {
                if !shown(None) {
                    return None;
                }
                *t.slab_failures.entry(cache.clone()).or_default() += 1;
                Found::SlabCreateFail { cache }
            }
        };
        Some(Finding { task, what: found })
    }
}

/// Pod names as the host knows them.
struct PodsOf<'a>(&'a mut dyn Host);

impl PodNames for PodsOf<'_> {
    fn pod_uid(&mut self, name: &str) -> Option<String> {
        self.0.pod_uid(name)
    }
}
