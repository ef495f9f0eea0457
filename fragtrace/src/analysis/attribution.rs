//! Who a failure hit and why: netns creation, container, memory cgroup, and the zone verdict.
use std::{borrow::Cow, collections::HashMap};

use fragtrace_common::{MemcgCounters, ZoneSnapshot};

use super::netns::stack_evidence;
use crate::{
    decode::event::{AllocFail, Stack, Task},
    source::{
        container::{ContainerInfo, parse_cgroup_path},
        host::{Host, ZoneSample},
    },
    zones::{
        ZoneState,
        memcg::MemcgUsage,
        preferred_zone,
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
    /// How many ms after the failure the zone state behind the verdict was read (negative:
    /// before it); None when /proc was unreadable.
    pub zone_state_lag_ms: Option<i64>,
    pub verdict: Verdict,
}

/// A zone state read more than this after a failure, or before it, is flagged in the reason.
const STALE_STATE_MS: i64 = 100;

/// The zone states read from /proc during the run, as they were handed in: the first (for the
/// summary) and the latest (for verdicts where the kernel did not read the zones itself).
#[derive(Default)]
pub struct ZoneHistory {
    pub first: Option<ZoneSample>,
    pub latest: Option<ZoneSample>,
    pub samples: u64,
}

impl ZoneHistory {
    pub fn add(&mut self, sample: ZoneSample) {
        self.samples += 1;
        if self.first.is_none() {
            self.first = Some(sample.clone());
        }
        self.latest = Some(sample);
    }

    pub fn latest_state(&self) -> Option<&ZoneState> {
        self.latest.as_ref().map(|s| &s.state)
    }

    /// The latest state and how many ms after an event at `event_ns` it was read (negative:
    /// before it).
    fn for_event(&self, event_ns: u64) -> Option<(&ZoneState, i64)> {
        self.latest.as_ref().map(|s| {
            let lag_ns = i128::from(s.at_ns) - i128::from(event_ns);
            (&s.state, (lag_ns / 1_000_000) as i64)
        })
    }

    /// Whether the latest state was read within `fresh_ns` before `event_ns`, or after it.
    pub fn covers(&self, event_ns: u64, fresh_ns: u64) -> bool {
        self.latest
            .as_ref()
            .is_some_and(|s| s.at_ns.saturating_add(fresh_ns) >= event_ns)
    }
}

#[derive(Default)]
pub struct Attributor {
    pub zones: ZoneHistory,
    /// The netns evidence of each stack seen: a stack's frames decide it alone.
    netns_frames: HashMap<Stack, Option<String>>,
}

/// Distinct stacks whose netns evidence is kept; past this the cache starts over.
const MAX_EVIDENCE_CACHED: usize = 4096;

impl Attributor {
    /// `cgroup` is the task's, from [`task_cgroup`].
    pub fn failure(
        &mut self,
        task: &Task,
        ev: &AllocFail,
        cgroup: Option<ContainerInfo>,
        host: &mut dyn Host,
    ) -> FailureContext {
        let frame = self.netns_frame(&ev.stack);
        let netns_evidence = frame.or_else(|| ev.netns_window.map(|w| w.describe().to_string()));
        let page_size = self.page_size();
        let memcg = memcg_read_in_kernel(host, &ev.memcg, task.pid, "at the failure", page_size)
            .or_else(|| host.memcg_usage(task.pid));
        let request_bytes = page_size << ev.order.min(40);
        let memcg_limited = memcg.as_ref().map(|m| m.exceeds_limit(request_bytes));
        // The zones as the kernel handler read them at the failure (on the latest /proc read
        // for names and reserves, however old), else the latest /proc read.
        let at_failure = self
            .zones
            .latest_state()
            .and_then(|state| state.with_kernel_snapshot(&ev.zones));
        let sampled = match at_failure {
            Some(state) => Some((Cow::Owned(state), 0, true)),
            None => self
                .zones
                .for_event(task.ts_ns)
                .map(|(state, lag_ms)| (Cow::Borrowed(state), lag_ms, false)),
        };
        let zone_state_lag_ms = sampled.as_ref().map(|(_, lag, _)| *lag);
        let verdict = match sampled {
            Some((state, lag_ms, in_kernel)) => {
                let zone =
                    preferred_zone(ev.gfp.mask, state.zones.iter().any(|z| z.zone == "HighMem"));
                let mut v =
                    verdict::judge_in(ev.order, Some(zone), ev.access, &state, memcg.as_ref());
                if v.zone.is_some() {
                    if in_kernel {
                        v.reason += &format!(" [node {} zones read at the failure]", ev.zones.node);
                    } else if lag_ms > STALE_STATE_MS {
                        v.reason += &format!(" [zone state read {lag_ms} ms after the failure]");
                    } else if lag_ms < -STALE_STATE_MS {
                        let before = -lag_ms;
                        v.reason += &format!(" [zone state read {before} ms before the failure]");
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
            container: cgroup,
            memcg_limited,
            zone_state_lag_ms,
            verdict,
        }
    }

    /// The first frame of `stack` that shows a netns creation, found once per stack.
    fn netns_frame(&mut self, stack: &Stack) -> Option<String> {
        if let Some(frame) = self.netns_frames.get(stack) {
            return frame.clone();
        }
        if self.netns_frames.len() >= MAX_EVIDENCE_CACHED {
            self.netns_frames.clear();
        }
        let frame = stack_evidence(stack.iter()).map(str::to_string);
        self.netns_frames.insert(stack.clone(), frame.clone());
        frame
    }

    /// The page size of the zone state, else of this machine.
    fn page_size(&self) -> u64 {
        self.zones
            .latest_state()
            .map_or_else(crate::zones::page_size, |s| s.page_size)
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

/// The cgroup a failing task ran in: from its cgroup v2 id or /proc/PID/cgroup, unless those
/// name no container while the memory cgroup read in the kernel at the failure does (the task
/// may have exited before user space looked, as runc's init does after a failed netns).
pub fn task_cgroup(task: &Task, ev: &AllocFail, host: &mut dyn Host) -> Option<ContainerInfo> {
    let by_task = host.container(ev.cgroup_id, task.pid);
    let names_one = |i: &ContainerInfo| i.container_id.is_some() || i.pod_uid.is_some();
    if by_task.as_ref().is_some_and(names_one) {
        return by_task;
    }
    let by_memcg = (ev.memcg.valid != 0)
        .then(|| host.memcg_name(ev.memcg.cgroup_ino))
        .flatten()
        .map(|(_, path)| parse_cgroup_path(&path));
    match (by_task, by_memcg) {
        (_, Some(m)) if names_one(&m) => Some(m),
        (Some(t), Some(m)) if t.cgroup_path == "/" => Some(m),
        (None, m) => m,
        (t, _) => t,
    }
}

/// The memory cgroup counters of task `pid` as a kernel handler read them (`moment`), named by
/// the cgroup's inode, else by the task's /proc/PID/cgroup if it still exists.
fn memcg_read_in_kernel(
    host: &mut dyn Host,
    counters: &MemcgCounters,
    pid: u32,
    moment: &'static str,
    page_size: u64,
) -> Option<MemcgUsage> {
    if counters.valid == 0 {
        return None;
    }
    let named = host.memcg_name(counters.cgroup_ino);
    let proc_cgroup = match named {
        Some(_) => None,
        None => host.proc_cgroup(pid),
    };
    MemcgUsage::from_event(
        counters,
        page_size,
        named,
        proc_cgroup.as_deref(),
        format_args!("of pid {pid}"),
        moment,
    )
}

impl Attributor {
    /// `invoker` ran the OOM killer; `invoker_memcg` is its memory cgroup as the kernel handler
    /// read it then. Without those counters the victim's cgroup is read from cgroupfs.
    pub fn oom_kill(
        &mut self,
        victim_pid: u32,
        invoker: u32,
        invoker_memcg: &MemcgCounters,
        zones_at_kill: &ZoneSnapshot,
        host: &mut dyn Host,
    ) -> OomKill {
        let victim_comm = host.comm(victim_pid).unwrap_or_else(|| "?".into());
        let page_size = self.page_size();
        let memcg = memcg_read_in_kernel(
            host,
            invoker_memcg,
            invoker,
            "when the OOM killer ran",
            page_size,
        )
        .or_else(|| host.memcg_usage(victim_pid));
        // Less headroom than one charge batch (64 pages): the cgroup is at its limit.
        let memcg_reason = memcg.and_then(|m| m.near_limit_reason(64 * page_size));
        // The zones when the victim was chosen (read in the kernel), else the latest /proc
        // read, taken as the kill arrived, after the victim may have freed its memory.
        let sampled = self.zones.latest_state().map(|state| {
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

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::{decode::event::Gfp, source::host::RecordedHost, zones::verdict::Access};

    /// An order-`order` GFP_KERNEL failure with nothing read in the kernel.
    pub(crate) fn failure(order: u32) -> AllocFail {
        AllocFail {
            order,
            gfp: Gfp {
                mask: 0xcc0,
                names: "GFP_KERNEL".into(),
            },
            access: Access::default(),
            migratetype: "Unmovable".into(),
            cgroup_id: 0,
            stack: vec!["__alloc_pages+0x1".into(), "setup_net+0xa3".into()].into(),
            netns_window: None,
            warned: false,
            memcg: Default::default(),
            zones: Default::default(),
        }
    }

    fn task(ts_ns: u64) -> Task {
        Task {
            ts_ns,
            time: jiff::Timestamp::UNIX_EPOCH,
            pid: 42,
            tid: 42,
            comm: "netns-maker".into(),
        }
    }

    /// Judged on the /proc state handed in, with the lag; on the kernel's own read when it has
    /// one, with no lag.
    #[test]
    fn verdicts_on_the_state_handed_in() {
        let mut a = Attributor::default();
        let mut host = RecordedHost::default();
        let ctx = a.failure(&task(1_000_000_000), &failure(3), None, &mut host);
        assert_eq!(ctx.verdict.kind, verdict::VerdictKind::Unknown);
        assert_eq!(ctx.zone_state_lag_ms, None);
        assert_eq!(ctx.netns_evidence.as_deref(), Some("setup_net+0xa3"));

        let state = crate::zones::tests::captured_6_18();
        a.zones.add(ZoneSample {
            at_ns: 1_250_000_000,
            state,
        });
        assert!(a.zones.covers(1_000_000_000, 0));
        assert!(!a.zones.covers(1_400_000_000, 100_000_000));
        let ctx = a.failure(&task(1_000_000_000), &failure(3), None, &mut host);
        assert_eq!(ctx.zone_state_lag_ms, Some(250));
        assert!(ctx.verdict.reason.contains("250 ms after"), "{ctx:?}");
        // Reads are paced, so a failure may be judged on one well before it.
        let ctx = a.failure(&task(1_400_000_000), &failure(3), None, &mut host);
        assert_eq!(ctx.zone_state_lag_ms, Some(-150));
        assert!(ctx.verdict.reason.contains("150 ms before"), "{ctx:?}");
        let ctx = a.failure(&task(1_300_000_000), &failure(3), None, &mut host);
        assert!(!ctx.verdict.reason.contains("before"), "{ctx:?}");

        let mut f = failure(3);
        f.zones.flags = fragtrace_common::zone_snapshot::VALID;
        // Every zone with plenty free, all of it in single pages.
        for z in &mut f.zones.zones[..3] {
            z.managed_pages = 1 << 20;
            z.free_pages = 50_000;
            z.min_pages = 1_000;
            z.free_blocks[0] = 50_000;
        }
        let ctx = a.failure(&task(1_000_000_000), &f, None, &mut host);
        assert_eq!(ctx.zone_state_lag_ms, Some(0));
        assert_eq!(ctx.verdict.kind, verdict::VerdictKind::Fragmentation);
        assert!(
            ctx.verdict
                .reason
                .ends_with("[node 0 zones read at the failure]")
        );
    }

    /// A task gone before user space looked is still placed in its container by the memory
    /// cgroup the kernel read at the failure.
    #[test]
    fn exited_tasks_are_placed_by_their_memory_cgroup() {
        use crate::source::host::Fact;
        let id = "5b9be8c5bb12".to_string() + &"0".repeat(52);
        let mut host = RecordedHost::default();
        host.learn(Fact::MemcgName {
            ino: 77,
            name: Some((1, format!("/docker/{id}"))),
        });
        let mut f = failure(6);
        f.memcg.valid = 1;
        f.memcg.cgroup_ino = 77;
        let info = task_cgroup(&task(1), &f, &mut host).expect("placed");
        assert_eq!(info.container_id.as_deref(), Some(id.as_str()));
        assert_eq!(info.runtime, Some("docker"));
        // Nothing read in the kernel, nothing from /proc: unknown.
        assert_eq!(task_cgroup(&task(1), &failure(6), &mut host), None);
    }
}
