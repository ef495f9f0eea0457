//! Who a failure hit and why: netns creation, container, memory cgroup, and the zone verdict.
use std::{borrow::Cow, time::Duration};

use fragtrace_common::{MemcgCounters, ZoneSnapshot, netns_window};

use super::{
    container::{ContainerInfo, ContainerResolver},
    netns::stack_evidence,
};
use crate::{
    decode::{
        event::{AllocFail, MonotonicClock},
        gfp::GfpTable,
    },
    zones::preferred_zone,
    zones::{
        ZoneState,
        memcg::{MemcgNames, MemcgUsage},
        verdict::{self, Access, Verdict},
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
    /// How many ms after the failure the zone state behind the verdict was read (negative:
    /// before it); None when /proc was unreadable.
    pub zone_state_lag_ms: Option<i64>,
    pub verdict: Verdict,
}

/// A zone state read later than this after a failure is flagged in the reason.
const STALE_STATE_MS: i64 = 100;

/// Zone state sampled on demand and kept for the run's summary. A failure is judged against
/// the newest sample unless that sample is more than `fresh_for` older than the failure; a
/// backlog of failures that happened before the newest sample reuses it rather than reading
/// /proc again later, further from when they happened.
pub struct ZoneSampler {
    fresh_for_ns: u64,
    /// (CLOCK_MONOTONIC ns when read, state)
    last: Option<(u64, ZoneState)>,
    pub first: Option<ZoneState>,
    pub samples: u64,
}

impl ZoneSampler {
    pub fn new(fresh_for: Duration) -> Self {
        Self {
            fresh_for_ns: fresh_for.as_nanos() as u64,
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
        self.last = Some((MonotonicClock::monotonic_now_ns(), state));
        self.last.as_ref().map(|(_, s)| s)
    }

    /// Reads /proc now unless the newest sample already covers an event at `event_ns`.
    pub fn cover(&mut self, event_ns: u64) {
        let covered = self
            .last
            .as_ref()
            .is_some_and(|(at, _)| at.saturating_add(self.fresh_for_ns) >= event_ns);
        if !covered {
            self.sample();
        }
    }

    /// The state to judge an event at `event_ns` against, and how many ms after the event it
    /// was read (negative: before it).
    pub fn for_event(&mut self, event_ns: u64) -> Option<(&ZoneState, i64)> {
        self.cover(event_ns);
        self.last.as_ref().map(|(at, state)| {
            let lag_ns = i128::from(*at) - i128::from(event_ns);
            (state, (lag_ns / 1_000_000) as i64)
        })
    }

    /// The newest sample, whatever its age; reads /proc only if there is none.
    pub fn latest_or_sample(&mut self) -> Option<&ZoneState> {
        if self.last.is_none() {
            self.sample();
        }
        self.latest()
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

impl Default for Attributor {
    fn default() -> Self {
        Self::new()
    }
}

impl Attributor {
    pub fn new() -> Self {
        Self {
            containers: ContainerResolver::new(),
            zones: ZoneSampler::new(Duration::from_millis(100)),
            memcg_names: MemcgNames::default(),
        }
    }

    /// `gfp` is the running kernel's flag table, for the request's reserve rights.
    pub fn failure(&mut self, ev: &AllocFail, gfp: Option<&GfpTable>) -> FailureContext {
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
        // The zones as the kernel handler read them at the failure (on the latest /proc read
        // for names and reserves, however old), else the nearest /proc read.
        let at_failure = self
            .zones
            .latest_or_sample()
            .and_then(|state| state.with_kernel_snapshot(&ev.zones));
        let sampled = match at_failure {
            Some(state) => Some((Cow::Owned(state), 0, true)),
            None => self
                .zones
                .for_event(ev.ts_ns)
                .map(|(state, lag_ms)| (Cow::Borrowed(state), lag_ms, false)),
        };
        let zone_state_lag_ms = sampled.as_ref().map(|(_, lag, _)| *lag);
        let verdict = match sampled {
            Some((state, lag_ms, in_kernel)) => {
                let zone = preferred_zone(ev.gfp, state.zones.iter().any(|z| z.zone == "HighMem"));
                let access = Access::from_gfp(ev.gfp, ev.migratetype == "Movable", |name| {
                    gfp.and_then(|t| t.bit(name))
                });
                let mut v = verdict::judge_in(ev.order, Some(zone), access, &state, memcg.as_ref());
                if v.zone.is_some() {
                    if in_kernel {
                        v.reason += &format!(" [node {} zones read at the failure]", ev.zones.node);
                    } else if lag_ms > STALE_STATE_MS {
                        v.reason += &format!(" [zone state read {lag_ms} ms after the failure]");
                    }
                }
                v
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
            zone_state_lag_ms,
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
        zones_at_kill: &ZoneSnapshot,
    ) -> OomKill {
        let victim_comm = std::fs::read_to_string(format!("/proc/{victim_pid}/comm"))
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| "?".into());
        let memcg = self
            .memcg_read_in_kernel(invoker_memcg, invoker, "when the OOM killer ran")
            .or_else(|| MemcgUsage::for_pid(victim_pid).ok());
        // Less headroom than one charge batch (64 pages): the cgroup is at its limit.
        let memcg_reason = memcg.and_then(|m| m.near_limit_reason(64 * crate::zones::page_size()));
        // The zones when the victim was chosen (read in the kernel), else /proc now, after the
        // victim may have freed its memory.
        let sampled = self.zones.sample().map(|state| {
            state
                .with_kernel_snapshot(zones_at_kill)
                .map_or((Cow::Borrowed(state), false), |s| (Cow::Owned(s), true))
        });
        let in_kernel = sampled.as_ref().is_some_and(|(_, k)| *k);
        let zones: Vec<ZoneFree> = sampled
            .map(|(state, _)| {
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
        let when = if in_kernel {
            format!(
                " [node {} zones read when the victim was chosen]",
                zones_at_kill.node
            )
        } else {
            String::new()
        };
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
            ) + &when
        } else if zones.is_empty() {
            "zone state unreadable".into()
        } else {
            format!("memory exhausted: every zone at or below its high watermark{when}")
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
