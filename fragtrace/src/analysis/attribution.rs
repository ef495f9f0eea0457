//! Who a failure hit and why: netns creation, container, memory cgroup, and the zone verdict.
use std::time::{Duration, Instant};

use fragtrace_common::{MemcgCounters, netns_window};

use super::{
    container::{ContainerInfo, ContainerResolver},
    netns::stack_evidence,
};
use crate::{
    decode::event::AllocFail,
    offline::gfp_layouts::preferred_zone,
    zones::{
        ZoneState,
        memcg::{MemcgNames, MemcgUsage},
        verdict::{self, Verdict},
    },
};

/// What fragtrace adds to a failed allocation.
#[derive(Clone, Debug)]
pub struct FailureContext {
    pub netns: bool,
    /// The frame or window that ties the failure to netns creation.
    pub netns_evidence: Option<String>,
    pub container: Option<ContainerInfo>,
    /// None when the task's memory cgroup could not be read (the task may have exited).
    pub memcg_limited: Option<bool>,
    pub verdict: Verdict,
}

/// Zone state sampled on demand (at most every `fresh_for`) and kept for the run's summary.
pub struct ZoneSampler {
    fresh_for: Duration,
    last: Option<(Instant, ZoneState)>,
    pub first: Option<ZoneState>,
    pub samples: u64,
}

impl ZoneSampler {
    pub fn new(fresh_for: Duration) -> Self {
        Self {
            fresh_for,
            last: None,
            first: None,
            samples: 0,
        }
    }

    /// Reads /proc now.
    pub fn sample(&mut self) -> Option<&ZoneState> {
        let state = ZoneState::read().ok()?;
        self.samples += 1;
        if self.first.is_none() {
            self.first = Some(state.clone());
        }
        self.last = Some((Instant::now(), state));
        self.last.as_ref().map(|(_, s)| s)
    }

    /// A sample no older than `fresh_for` (bursts of failures share one read).
    pub fn recent(&mut self) -> Option<&ZoneState> {
        let fresh = self
            .last
            .as_ref()
            .is_some_and(|(at, _)| at.elapsed() < self.fresh_for);
        if fresh {
            return self.last.as_ref().map(|(_, s)| s);
        }
        self.sample()
    }

    pub fn latest(&self) -> Option<&ZoneState> {
        self.last.as_ref().map(|(_, s)| s)
    }
}

pub struct Attributor {
    containers: ContainerResolver,
    pub zones: ZoneSampler,
    memcg_names: MemcgNames,
}

impl Attributor {
    pub fn new() -> Self {
        Self {
            containers: ContainerResolver::new(),
            zones: ZoneSampler::new(Duration::from_millis(100)),
            memcg_names: MemcgNames::default(),
        }
    }

    pub fn failure(&mut self, ev: &AllocFail) -> FailureContext {
        let frame = stack_evidence(&ev.stack).map(str::to_string);
        let window = match ev.netns_window {
            netns_window::COPY_NET_NS => Some("inside copy_net_ns"),
            netns_window::SYSCALL => Some("inside a CLONE_NEWNET unshare/clone/clone3/setns"),
            _ => None,
        };
        let netns_evidence = frame.or_else(|| window.map(str::to_string));
        let page_size = crate::zones::page_size();
        let memcg = self
            .memcg_read_in_kernel(&ev.memcg, ev.pid, "at the failure")
            .or_else(|| MemcgUsage::for_pid(ev.pid).ok());
        let request_bytes = page_size << ev.order.min(40);
        let memcg_limited = memcg
            .as_ref()
            .map(|m| m.limit_reason(request_bytes).is_some());
        let verdict = match self.zones.recent() {
            Some(state) => {
                let zone = preferred_zone(ev.gfp, state.zones.iter().any(|z| z.zone == "HighMem"));
                verdict::judge_in(ev.order, Some(zone), state, memcg.as_ref())
            }
            None => Verdict {
                kind: verdict::VerdictKind::Unknown,
                reason: "zone state unreadable (/proc/zoneinfo, /proc/buddyinfo)".into(),
                zone: None,
            },
        };
        FailureContext {
            netns: netns_evidence.is_some(),
            netns_evidence,
            container: self.containers.for_task(ev.cgroup_id, ev.pid),
            memcg_limited,
            verdict,
        }
    }
}

/// One zone's free memory against its watermarks, in kB.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ZoneFree {
    pub zone: String,
    pub free_kb: u64,
    pub min_kb: u64,
    pub high_kb: u64,
    pub largest_free_order: Option<u32>,
}

/// An OOM kill with the memory state at the moment it was handled.
#[derive(Clone, Debug)]
pub struct OomKill {
    pub victim_pid: u32,
    pub victim_comm: String,
    pub zones: Vec<ZoneFree>,
    /// A zone had free memory above its high watermark: memory was free, but not in blocks.
    pub fragmentation_driven: bool,
    /// The victim's memory cgroup was at its limit: a cgroup OOM, not a system one.
    pub memcg_oom: bool,
    pub reason: String,
}

impl Attributor {
    /// The memory cgroup counters of task `pid` as a kernel handler read them (`moment`), named
    /// by the cgroup's inode, else by the task's /proc/PID/cgroup if it still exists.
    fn memcg_read_in_kernel(
        &mut self,
        counters: &MemcgCounters,
        pid: u32,
        moment: &'static str,
    ) -> Option<MemcgUsage> {
        let named = self.memcg_names.name(counters.cgroup_ino);
        let proc_cgroup = match named {
            Some(_) => None,
            None => std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok(),
        };
        MemcgUsage::from_event(
            counters,
            crate::zones::page_size(),
            named,
            proc_cgroup.as_deref(),
            &format!("of pid {pid}"),
            moment,
        )
    }

    /// `invoker` ran the OOM killer; `invoker_memcg` is its memory cgroup as the kernel handler
    /// read it then. Without those counters the victim's cgroup is read from cgroupfs.
    pub fn oom_kill(
        &mut self,
        victim_pid: u32,
        invoker: u32,
        invoker_memcg: &MemcgCounters,
    ) -> OomKill {
        let victim_comm = std::fs::read_to_string(format!("/proc/{victim_pid}/comm"))
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| "?".into());
        let memcg = self
            .memcg_read_in_kernel(invoker_memcg, invoker, "when the OOM killer ran")
            .or_else(|| MemcgUsage::for_pid(victim_pid).ok());
        // Less headroom than one charge batch (64 pages): the cgroup is at its limit.
        let memcg_reason = memcg.and_then(|m| m.near_limit_reason(64 * crate::zones::page_size()));
        let zones: Vec<ZoneFree> = self
            .zones
            .sample()
            .map(|state| {
                state
                    .zones
                    .iter()
                    .filter(|z| z.managed_pages.unwrap_or(0) > 0)
                    .map(|z| ZoneFree {
                        zone: z.label(),
                        free_kb: state.kb(z.free_pages.unwrap_or(0)),
                        min_kb: state.kb(z.min_pages.unwrap_or(0)),
                        high_kb: state.kb(z.high_pages.unwrap_or(0)),
                        largest_free_order: z.largest_free_order(),
                    })
                    .collect()
            })
            .unwrap_or_default();
        let well_above: Vec<&ZoneFree> = zones
            .iter()
            .filter(|z| z.high_kb > 0 && z.free_kb > z.high_kb)
            .collect();
        let memcg_oom = memcg_reason.is_some();
        let fragmentation_driven = !memcg_oom && !well_above.is_empty();
        let reason = if let Some(r) = memcg_reason {
            format!("cgroup OOM: {r}")
        } else if let Some(z) = well_above.iter().max_by_key(|z| z.free_kb) {
            format!(
                "fragmentation-driven: {} has {} kB free, above its high watermark {} kB \
                 (min {} kB), largest free block order {}",
                z.zone,
                z.free_kb,
                z.high_kb,
                z.min_kb,
                z.largest_free_order
                    .map_or("none".into(), |o| o.to_string())
            )
        } else if zones.is_empty() {
            "zone state unreadable".into()
        } else {
            "memory exhausted: every zone at or below its high watermark".into()
        };
        OomKill {
            victim_pid,
            victim_comm,
            zones,
            fragmentation_driven,
            memcg_oom,
            reason,
        }
    }
}
