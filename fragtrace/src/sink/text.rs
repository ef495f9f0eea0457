//! Human-readable event lines: `HH:MM:SS.ffffff comm[pid] WHAT details`, stacks indented.
use crate::{
    analysis::{
        attribution::FailureContext, histogram::human_ns, netns::errno_name, pipeline::Record,
        stalls::Stall,
    },
    decode::event::{AllocFail, Decoder, Task},
};

fn clock(t: &jiff::Timestamp) -> String {
    t.to_zoned(jiff::tz::TimeZone::system())
        .strftime("%H:%M:%S%.6f")
        .to_string()
}

fn head(task: &Task, what: &str) -> String {
    format!("{} {}[{}] {what}", clock(&task.time), task.comm, task.pid)
}

pub fn record(rec: &Record, frames: usize, decoder: &Decoder) -> String {
    match rec {
        Record::AllocFail(ev, ctx) => alloc_fail(ev, ctx, frames),
        Record::AllocWarn {
            task, gfp_flags, ..
        } => head(
            task,
            &format!("WARN page allocation failure printed, {gfp_flags}"),
        ),
        Record::CompactTry { task, request } => head(
            task,
            &format!(
                "COMPACT-TRY order={} {} prio={}",
                request.order,
                decoder.gfp_names(request.gfp),
                request.prio
            ),
        ),
        Record::Stall(Stall::Compaction {
            task,
            request,
            status,
            stall_ns,
        }) => {
            let status = decoder.symbols.compaction_status.name(*status as u64);
            match request {
                Some(r) => head(
                    task,
                    &format!(
                        "COMPACT order={} {} prio={} stalled {} -> {status}",
                        r.order,
                        decoder.gfp_names(r.gfp),
                        r.prio,
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
            }
        }
        Record::Stall(Stall::Reclaim {
            task,
            order,
            gfp,
            stall_ns,
            nr_reclaimed,
        }) => head(
            task,
            &format!(
                "RECLAIM order={order} {} stalled {} reclaimed {nr_reclaimed} pages",
                decoder.gfp_names(*gfp),
                human_ns(*stall_ns)
            ),
        ),
        Record::CompactRetry(r) => head(
            &r.task,
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
        Record::Netns(n) => head(
            &n.task,
            &format!(
                "NETNS {} {} in {}",
                n.op,
                n.errno
                    .map_or("ok".to_string(), |e| format!("failed {}", errno_name(e))),
                human_ns(n.latency_ns)
            ),
        ),
        Record::OomKill { task, kill } => head(
            task,
            &format!(
                "OOM-KILL victim {}[{}]: {}",
                kill.victim_comm, kill.victim_pid, kill.reason
            ),
        ),
        Record::SlabCreateFail { task, cache } => {
            head(task, &format!("SLAB kmem_cache_create({cache}) failed"))
        }
    }
}

/// The failure line, its verdict and attribution, then the top frames, indented.
pub fn alloc_fail(ev: &AllocFail, ctx: &FailureContext, frames: usize) -> String {
    let task = Task {
        ts_ns: ev.ts_ns,
        time: ev.time,
        pid: ev.pid,
        tid: ev.tid,
        comm: ev.comm.clone(),
    };
    let mut s = head(
        &task,
        &format!(
            "order={} {} {} cgroup={}",
            ev.order, ev.gfp_flags, ev.migratetype, ev.cgroup_id
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
