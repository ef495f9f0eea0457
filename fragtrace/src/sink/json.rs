//! JSON lines. Field names are a contract (docs/json.md): add fields, never rename them.
use std::{collections::BTreeMap, io::Write as _};

use serde::Serialize;

use crate::{
    analysis::{
        analyzer::{Finding, Found},
        attribution::{FailureContext, ZoneFree},
        histogram::LatencySummary,
        netns::errno_name,
        stalls::Stall,
    },
    decode::event::{AllocFail, Task},
    hooks::outcome::HookJson,
};

/// The fields every task event starts with.
#[derive(Serialize)]
pub struct TaskFields<'a> {
    pub ts_ns: u64,
    pub time: String,
    pub pid: u32,
    pub tid: u32,
    pub comm: &'a str,
}

impl<'a> TaskFields<'a> {
    pub fn new(t: &'a Task) -> Self {
        Self {
            ts_ns: t.ts_ns,
            time: t.time.to_string(),
            pid: t.pid,
            tid: t.tid,
            comm: &t.comm,
        }
    }
}

/// An alloc_fail line's fields, as docs/json.md lists them; [`finding`] writes the same bytes
/// without going through this.
#[derive(Serialize)]
pub struct AllocFailJson<'a> {
    #[serde(rename = "type")]
    pub kind: &'static str,
    #[serde(flatten)]
    pub task: TaskFields<'a>,
    pub order: u32,
    pub gfp: u64,
    pub gfp_flags: &'a str,
    pub migratetype: &'a str,
    pub cgroup_id: u64,
    pub stack: &'a [String],
    pub netns: bool,
    pub netns_evidence: Option<&'a str>,
    pub container_id: Option<&'a str>,
    pub pod_uid: Option<&'a str>,
    pub memcg_limited: Option<bool>,
    pub warned: bool,
    pub verdict: &'static str,
    pub reason: &'a str,
    pub zone_state_lag_ms: Option<i64>,
}

impl<'a> AllocFailJson<'a> {
    pub fn new(task: &'a Task, ev: &'a AllocFail, ctx: &'a FailureContext) -> Self {
        let container = ctx.container.as_ref();
        Self {
            kind: "alloc_fail",
            task: TaskFields::new(task),
            order: ev.order,
            gfp: ev.gfp.mask,
            gfp_flags: &ev.gfp.names,
            migratetype: &ev.migratetype,
            cgroup_id: ev.cgroup_id,
            stack: &ev.stack,
            netns: ctx.netns,
            netns_evidence: ctx.netns_evidence.as_deref(),
            container_id: container.and_then(|c| c.container_id.as_deref()),
            pod_uid: container.and_then(|c| c.pod_uid.as_deref()),
            memcg_limited: ctx.memcg_limited,
            warned: ev.warned,
            verdict: ctx.verdict.kind.as_str(),
            reason: &ctx.verdict.reason,
            zone_state_lag_ms: ctx.zone_state_lag_ms,
        }
    }
}

/// Appends an alloc_fail line: the bytes `serde_json` writes for [`AllocFailJson`] (a test
/// holds them equal), written field by field. This is the failure path's hottest code: keys are
/// copied rather than escaped, the time is formatted in place, and a stack's frames are
/// serialized once per stack ([`crate::decode::stack::Stack::json`]), not once per failure.
fn alloc_fail(task: &Task, ev: &AllocFail, ctx: &FailureContext, out: &mut Vec<u8>) {
    let container = ctx.container.as_ref();
    out.extend_from_slice(br#"{"type":"alloc_fail","ts_ns":"#);
    value(out, &task.ts_ns);
    // RFC 3339 holds nothing JSON escapes.
    let _ = write!(out, r#","time":"{}","pid":"#, task.time);
    value(out, &task.pid);
    out.extend_from_slice(br#","tid":"#);
    value(out, &task.tid);
    out.extend_from_slice(br#","comm":"#);
    value(out, &task.comm);
    out.extend_from_slice(br#","order":"#);
    value(out, &ev.order);
    out.extend_from_slice(br#","gfp":"#);
    value(out, &ev.gfp.mask);
    out.extend_from_slice(br#","gfp_flags":"#);
    value(out, &ev.gfp.names);
    out.extend_from_slice(br#","migratetype":"#);
    value(out, &ev.migratetype);
    out.extend_from_slice(br#","cgroup_id":"#);
    value(out, &ev.cgroup_id);
    out.extend_from_slice(br#","stack":"#);
    out.extend_from_slice(ev.stack.json());
    out.extend_from_slice(br#","netns":"#);
    value(out, &ctx.netns);
    out.extend_from_slice(br#","netns_evidence":"#);
    value(out, &ctx.netns_evidence);
    out.extend_from_slice(br#","container_id":"#);
    value(out, &container.and_then(|c| c.container_id.as_deref()));
    out.extend_from_slice(br#","pod_uid":"#);
    value(out, &container.and_then(|c| c.pod_uid.as_deref()));
    out.extend_from_slice(br#","memcg_limited":"#);
    value(out, &ctx.memcg_limited);
    out.extend_from_slice(br#","warned":"#);
    value(out, &ev.warned);
    out.extend_from_slice(br#","verdict":"#);
    value(out, ctx.verdict.kind.as_str());
    out.extend_from_slice(br#","reason":"#);
    value(out, &ctx.verdict.reason);
    out.extend_from_slice(br#","zone_state_lag_ms":"#);
    value(out, &ctx.zone_state_lag_ms);
    out.push(b'}');
}

/// One JSON value, appended.
fn value<T: Serialize + ?Sized>(out: &mut Vec<u8>, v: &T) {
    serde_json::to_writer(&mut *out, v).expect("plain values serialize");
}

/// Appends a finding as one JSON line.
pub fn finding(f: &Finding, out: &mut Vec<u8>) {
    if let Found::AllocFail { failure, context } = &f.what {
        alloc_fail(&f.task, failure, context, out);
        out.push(b'\n');
        return;
    }
    let task = TaskFields::new(&f.task);
    let written = match &f.what {
        Found::AllocFail { .. } => unreachable!("written above"),
        Found::AllocWarn { gfp } => serde_json::to_writer(
            &mut *out,
            &AllocWarnJson {
                kind: "alloc_warn",
                task,
                gfp: gfp.mask,
                gfp_flags: &gfp.names,
            },
        ),
        Found::CompactTry(request) => serde_json::to_writer(
            &mut *out,
            &CompactionJson {
                kind: "compaction",
                event: "try",
                task,
                direct: true,
                order: Some(request.order),
                gfp: Some(request.gfp.mask),
                gfp_flags: Some(&request.gfp.names),
                priority: Some(request.priority),
                status: None,
                stall_ns: None,
                retry: None,
            },
        ),
        Found::Stall(Stall::Compaction {
            request,
            status,
            stall_ns,
        }) => serde_json::to_writer(
            &mut *out,
            &CompactionJson {
                kind: "compaction",
                event: "pass",
                task,
                direct: request.is_some(),
                order: request.as_ref().map(|r| r.order),
                gfp: request.as_ref().map(|r| r.gfp.mask),
                gfp_flags: request.as_ref().map(|r| r.gfp.names.as_str()),
                priority: request.as_ref().map(|r| r.priority),
                status: Some(status),
                stall_ns: Some(*stall_ns),
                retry: None,
            },
        ),
        Found::CompactRetry(r) => serde_json::to_writer(
            &mut *out,
            &CompactRetryJson {
                kind: "compaction",
                event: "retry",
                task,
                order: r.order,
                priority: &r.priority,
                result: &r.result,
                retries: r.retries,
                max_retries: r.max_retries,
                retry: r.retry,
            },
        ),
        Found::Stall(Stall::Reclaim {
            order,
            gfp,
            stall_ns,
            nr_reclaimed,
        }) => serde_json::to_writer(
            &mut *out,
            &ReclaimJson {
                kind: "reclaim",
                task,
                order: *order,
                gfp: gfp.mask,
                gfp_flags: &gfp.names,
                stall_ns: *stall_ns,
                nr_reclaimed: *nr_reclaimed,
            },
        ),
        Found::Netns(n) => serde_json::to_writer(
            &mut *out,
            &NetnsJson {
                kind: "netns",
                task,
                op: n.op,
                latency_ns: n.latency_ns,
                ok: n.errno.is_none(),
                errno: n.errno,
                error: n.errno.map(errno_name),
            },
        ),
        Found::OomKill(kill) => serde_json::to_writer(
            &mut *out,
            &OomKillJson {
                kind: "oom_kill",
                task,
                victim_pid: kill.victim_pid,
                victim_comm: &kill.victim_comm,
                fragmentation_driven: kill.fragmentation_driven,
                memcg_oom: kill.memcg_oom,
                reason: &kill.reason,
                zones: &kill.zones,
            },
        ),
        Found::SlabCreateFail { cache } => serde_json::to_writer(
            &mut *out,
            &SlabCreateFailJson {
                kind: "slab_create_fail",
                task,
                cache,
            },
        ),
    };
    written.expect("findings serialize");
    out.push(b'\n');
}

#[derive(Serialize)]
struct AllocWarnJson<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(flatten)]
    task: TaskFields<'a>,
    gfp: u64,
    gfp_flags: &'a str,
}

#[derive(Serialize)]
struct CompactionJson<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    event: &'static str,
    #[serde(flatten)]
    task: TaskFields<'a>,
    direct: bool,
    order: Option<u32>,
    gfp: Option<u64>,
    gfp_flags: Option<&'a str>,
    priority: Option<i64>,
    status: Option<&'a str>,
    stall_ns: Option<u64>,
    retry: Option<bool>,
}

#[derive(Serialize)]
struct CompactRetryJson<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    event: &'static str,
    #[serde(flatten)]
    task: TaskFields<'a>,
    order: u32,
    priority: &'a str,
    result: &'a str,
    retries: u64,
    max_retries: u64,
    retry: bool,
}

#[derive(Serialize)]
struct ReclaimJson<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(flatten)]
    task: TaskFields<'a>,
    order: u32,
    gfp: u64,
    gfp_flags: &'a str,
    stall_ns: u64,
    nr_reclaimed: u64,
}

#[derive(Serialize)]
struct NetnsJson<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(flatten)]
    task: TaskFields<'a>,
    op: &'static str,
    latency_ns: u64,
    ok: bool,
    errno: Option<i32>,
    error: Option<String>,
}

#[derive(Serialize)]
struct OomKillJson<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(flatten)]
    task: TaskFields<'a>,
    victim_pid: u32,
    victim_comm: &'a str,
    fragmentation_driven: bool,
    memcg_oom: bool,
    reason: &'a str,
    zones: &'a [ZoneFree],
}

#[derive(Serialize)]
struct SlabCreateFailJson<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(flatten)]
    task: TaskFields<'a>,
    cache: &'a str,
}

/// `mm_page_alloc_extfrag` fallbacks of one (alloc, fallback) migratetype pair, at the end.
#[derive(Serialize)]
pub struct ExtfragJson<'a> {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub alloc_migratetype: &'a str,
    pub fallback_migratetype: &'a str,
    pub fallbacks: u64,
    /// Fallbacks below pageblock order: they mix migratetypes inside a pageblock.
    pub fragmenting: u64,
}

#[derive(Serialize)]
pub struct TaskJson<'a> {
    pub comm: &'a str,
    pub pid: u32,
    pub failures: u64,
}

#[derive(Serialize)]
pub struct StackJson<'a> {
    pub failures: u64,
    pub stack: &'a [String],
}

#[derive(Serialize)]
pub struct SummaryJson<'a> {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub duration_s: f64,
    pub alloc_by_order: &'a [u64],
    pub fail_by_order: &'a [u64],
    /// Failure events lost in the kernel (ring buffer full).
    pub dropped: u64,
    /// Failure events printed (after filters).
    pub events: u64,
    pub undecodable: u64,
    pub top_tasks: Vec<TaskJson<'a>>,
    pub top_stacks: Vec<StackJson<'a>>,
    /// Failures counted by stack in the kernel instead of sent as records (storm mode).
    pub storm_aggregated: u64,
    pub hooks: &'a [HookJson],
    /// What the kernel reads at failures, or why not (null when it does).
    pub kernel_reads: &'a crate::hooks::loader::KernelReads,
    /// Failures by verdict: memcg_limit, fragmentation, exhaustion, unknown.
    pub verdicts: &'a BTreeMap<&'static str, u64>,
    /// Failures that warn_alloc reported (`page allocation failure` in the kernel log).
    pub warned_failures: u64,
    /// Failures inside a netns creation.
    pub netns_failures: u64,
    pub compaction: CompactionSummaryJson<'a>,
    pub reclaim: ReclaimSummaryJson,
    pub netns: NetnsSummaryJson<'a>,
    pub oom_kills: u64,
    pub oom_kills_fragmentation_driven: u64,
    pub slab_create_failures: &'a BTreeMap<String, u64>,
    /// Zone state at the first and the last sample of the run.
    pub zones_first: Option<crate::zones::snapshot::SnapshotJson<'a>>,
    pub zones_last: Option<crate::zones::snapshot::SnapshotJson<'a>>,
    pub hints: Vec<&'static str>,
    /// What fragtrace lost or suffered itself.
    pub tracer: &'a crate::health::TracerHealth,
    /// Set when a replayed recording ends before its trailer: why.
    pub cut: Option<&'a str>,
}

#[derive(Serialize)]
pub struct CompactionSummaryJson<'a> {
    /// Direct compaction stall per pass, by requested order.
    pub direct: Vec<LatencySummary>,
    /// kcompactd and proactive passes.
    pub background: Option<LatencySummary>,
    pub status: &'a BTreeMap<String, u64>,
    /// Direct compaction attempts by requested order.
    pub attempts: &'a BTreeMap<u32, u64>,
    pub retries: u64,
    pub kcompactd_wakes: u64,
    pub deferred: u64,
    /// Direct compaction stall in all by requested order, as the kernel summed it by stack.
    pub stall_ns_by_order: BTreeMap<u32, u64>,
}

#[derive(Serialize)]
pub struct ReclaimSummaryJson {
    pub direct: Vec<LatencySummary>,
    pub reclaimed_pages: u64,
    /// Direct reclaim stall in all by order, as the kernel summed it by stack.
    pub stall_ns_by_order: BTreeMap<u32, u64>,
}

#[derive(Serialize)]
pub struct NetnsSummaryJson<'a> {
    /// Latency of successful creations.
    pub latency: Option<LatencySummary>,
    /// Failed creations by `op ERRNO`.
    pub failed: &'a BTreeMap<String, u64>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        analysis::attribution::tests::failure,
        decode::stack::Stack,
        source::container::ContainerInfo,
        zones::verdict::{Verdict, VerdictKind},
    };

    /// The hand-written alloc_fail line is byte for byte what serde writes for its fields,
    /// with and without the optional ones, and with strings that need escaping.
    #[test]
    fn alloc_fail_line_is_the_serde_line() {
        let task = Task {
            ts_ns: 3_005_320_880_910,
            time: jiff::Timestamp::from_nanosecond(1_796_218_179_847_395_251).unwrap(),
            pid: 30347,
            tid: 30348,
            comm: "fail\"bench\\\u{1}é".into(),
        };
        let mut ev = failure(6);
        ev.stack = Stack::new(vec!["pipe_fcntl+0xf2".into(), "a\"b".into()]);
        let mut ctx = FailureContext {
            netns: false,
            netns_evidence: None,
            container: None,
            memcg_limited: None,
            zone_state_lag_ms: None,
            verdict: Verdict {
                kind: VerdictKind::Unknown,
                reason: "zone state unreadable\n(/proc)".into(),
                zone: None,
            },
        };
        let check = |task: &Task, ev: &AllocFail, ctx: &FailureContext| {
            let mut fast = Vec::new();
            alloc_fail(task, ev, ctx, &mut fast);
            let serde = serde_json::to_vec(&AllocFailJson::new(task, ev, ctx)).unwrap();
            assert_eq!(
                String::from_utf8(fast).unwrap(),
                String::from_utf8(serde).unwrap()
            );
        };
        check(&task, &ev, &ctx);
        ctx.netns = true;
        ctx.netns_evidence = Some("setup_net+0xa3".into());
        ctx.container = Some(ContainerInfo {
            container_id: Some("abc".into()),
            pod_uid: Some("pod-1".into()),
            ..Default::default()
        });
        ctx.memcg_limited = Some(true);
        ctx.zone_state_lag_ms = Some(-5);
        ev.warned = true;
        ev.stack = Stack::new(Vec::new());
        let whole_second = Task {
            time: jiff::Timestamp::from_second(1_796_218_179).unwrap(),
            ..task.clone()
        };
        check(&whole_second, &ev, &ctx);
    }
}
