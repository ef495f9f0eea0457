//! JSON lines. Field names are a contract (docs/json.md): add fields, never rename them.
use serde::Serialize;

use crate::decode::event::AllocFail;

#[derive(Serialize)]
pub struct AllocFailJson<'a> {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub ts_ns: u64,
    pub time: String,
    pub pid: u32,
    pub tid: u32,
    pub comm: &'a str,
    pub order: u32,
    pub gfp: u64,
    pub gfp_flags: &'a str,
    pub migratetype: &'a str,
    pub cgroup_id: u64,
    pub stack: &'a [String],
}

impl<'a> AllocFailJson<'a> {
    pub fn new(ev: &'a AllocFail) -> Self {
        Self {
            kind: "alloc_fail",
            ts_ns: ev.ts_ns,
            time: ev.time.to_string(),
            pid: ev.pid,
            tid: ev.tid,
            comm: &ev.comm,
            order: ev.order,
            gfp: ev.gfp,
            gfp_flags: &ev.gfp_flags,
            migratetype: &ev.migratetype,
            cgroup_id: ev.cgroup_id,
            stack: &ev.stack,
        }
    }
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
    pub hooks: Vec<HookJson>,
}

#[derive(Serialize, Clone)]
pub struct HookJson {
    pub hook: &'static str,
    /// The attach method in use, or null when the hook is unavailable.
    pub method: Option<&'static str>,
    pub attached: bool,
    /// Every method that attached (`probes` tries them all; tracing stops at the first).
    pub available: Vec<&'static str>,
    /// Methods tried that did not attach, with the kernel's reason.
    pub unavailable: Vec<MethodError>,
    pub purpose: &'static str,
}

#[derive(Serialize, Clone)]
pub struct MethodError {
    pub method: &'static str,
    pub error: String,
}

impl HookJson {
    pub fn from_status(status: &crate::hooks::loader::HookStatus) -> Self {
        Self {
            hook: status.hook.name,
            method: status.attached().map(|m| m.kind()),
            attached: status.attached().is_some(),
            available: status
                .attempts
                .iter()
                .filter(|a| a.error.is_none())
                .map(|a| a.method.kind())
                .collect(),
            unavailable: status
                .attempts
                .iter()
                .filter_map(|a| {
                    a.error.as_ref().map(|e| MethodError {
                        method: a.method.kind(),
                        error: e.clone(),
                    })
                })
                .collect(),
            purpose: status.hook.purpose,
        }
    }
}
