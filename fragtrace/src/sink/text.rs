//! Human-readable event lines: `HH:MM:SS.ffffff comm[pid] WHAT details`, stacks indented.
use crate::{
    analysis::{
        analyzer::{Finding, Found},
        attribution::FailureContext,
        histogram::human_ns,
        netns::errno_name,
        stalls::Stall,
    },
    decode::event::{AllocFail, Task},
};

fn clock(t: &jiff::Timestamp) -> String {
    t.to_zoned(jiff::tz::TimeZone::system())
        .strftime("%H:%M:%S%.6f")
        .to_string()
}

fn head(task: &Task, what: &str) -> String {
    format!("{} {}[{}] {what}", clock(&task.time), task.comm, task.pid)
}

/// One finding as text, `frames` stack frames at most, ending with a newline.
pub fn finding(f: &Finding, frames: usize) -> String {
    let task = &f.task;
    let mut s = match &f.what {
        Found::AllocFail { failure, context } => alloc_fail(task, failure, context, frames),
        Found::AllocWarn { gfp } => head(
            task,
            &format!("WARN page allocation failure printed, {}", gfp.names),
        ),
        Found::CompactTry(r) => head(
            task,
            &format!(
                "COMPACT-TRY order={} {} prio={}",
                r.order, r.gfp.names, r.priority
            ),
        ),
        Found::Stall(Stall::Compaction {
            request,
            status,
            stall_ns,
        }) => match request {
            Some(r) => head(
                task,
                &format!(
                    "COMPACT order={} {} prio={} stalled {} -> {status}",
                    r.order,
                    r.gfp.names,
                    r.priority,
                    human_ns(*stall_ns)
                ),
            ),
            None => head(
                task,
                &format!(
                    "COMPACT background pass {} -> {status}",
                    human_ns(*stall_ns)
                ),
            ),
        },
        Found::Stall(Stall::Reclaim {
            order,
            gfp,
            stall_ns,
            nr_reclaimed,
        }) => head(
            task,
            &format!(
                "RECLAIM order={order} {} stalled {} reclaimed {nr_reclaimed} pages",
                gfp.names,
                human_ns(*stall_ns)
            ),
        ),
        Found::CompactRetry(r) => head(
            task,
            &format!(
                "COMPACT-RETRY order={} {} result={} retries={}/{} -> {}",
                r.order,
                r.priority,
                r.result,
                r.retries,
                r.max_retries,
                if r.retry { "retry" } else { "give up" }
            ),
        ),
        Found::Netns(n) => head(
            task,
            &format!(
                "NETNS {} {} in {}",
                n.op,
                n.errno
                    .map_or("ok".to_string(), |e| format!("failed {}", errno_name(e))),
                human_ns(n.latency_ns)
            ),
        ),
        Found::OomKill(kill) => head(
            task,
            &format!(
                "OOM-KILL victim {}[{}]: {}",
                kill.victim_comm, kill.victim_pid, kill.reason
            ),
        ),
        Found::SlabCreateFail { cache } => {
            head(task, &format!("SLAB kmem_cache_create({cache}) failed"))
        }
    };
    s.push('\n');
    s
}

/// The failure line, its verdict and attribution, then the top frames, indented.
fn alloc_fail(task: &Task, ev: &AllocFail, ctx: &FailureContext, frames: usize) -> String {
    let mut s = head(
        task,
        &format!(
            "order={} {} {} cgroup={}",
            ev.order, ev.gfp.names, ev.migratetype, ev.cgroup_id
        ),
    );
    let mut tags = Vec::new();
    if let Some(c) = &ctx.container {
        if let Some(id) = &c.container_id {
            tags.push(format!("container={}", &id[..id.len().min(12)]));
        }
        if let Some(uid) = &c.pod_uid {
            tags.push(format!("pod={uid}"));
        }
    }
    if let Some(e) = &ctx.netns_evidence {
        tags.push(format!("netns ({e})"));
    }
    if ev.warned {
        tags.push("warned".into());
    }
    if !tags.is_empty() {
        s.push(' ');
        s.push_str(&tags.join(" "));
    }
    s.push_str(&format!(
        "\n    {}: {}",
        ctx.verdict.kind.as_str(),
        ctx.verdict.reason
    ));
    for frame in ev.stack.iter().take(frames) {
        s.push_str("\n    ");
        s.push_str(frame);
    }
    if ev.stack.len() > frames {
        s.push_str(&format!(
            "\n    ... {} more frames",
            ev.stack.len() - frames
        ));
    }
    s
}
