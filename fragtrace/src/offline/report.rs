//! One incident's diagnosis: decoded mode, zone figures, verdict, netns/slab ties, OOM kill; as
//! JSON (docs/json.md, `log_failure`) and as a short text report.
use std::fmt::Write as _;

use serde::Serialize;

use super::{
    gfp_layouts,
    logparse::{Incident, LogZone, OomKill, Trigger},
};
use crate::zones::{
    Zone, ZoneState, hints,
    verdict::{self, Verdict, VerdictKind},
};

/// Frames that tie a failure to network namespace creation.
const NETNS_FRAMES: [&str; 3] = ["copy_net_ns", "setup_net", "nf_conntrack"];

pub struct Report {
    pub json: LogFailure,
    verdict: Verdict,
}

/// The `log_failure` JSON object.
#[derive(Serialize)]
pub struct LogFailure {
    #[serde(rename = "type")]
    kind: &'static str,
    comm: String,
    order: Option<u32>,
    mode: Option<String>,
    gfp_flags: Option<String>,
    gfp_layout: String,
    kernel: Option<String>,
    zone: Option<String>,
    largest_free_order: Option<u32>,
    free_kb: Option<u64>,
    min_kb: Option<u64>,
    verdict: VerdictKind,
    reason: String,
    netns: bool,
    slab_cache: Option<String>,
    oom_kill: Option<OomJson>,
    /// `page_allocation_failure` or `oom_killer` (an OOM report with no failure before it).
    trigger: &'static str,
    line: usize,
    timestamp: Option<String>,
    nodemask: Option<String>,
    cpuset: Option<String>,
    mems_allowed: Option<String>,
    netns_frames: Vec<String>,
    slab_error: Option<String>,
    call_trace: Vec<String>,
    zones: Vec<ZoneJson>,
    truncated: bool,
    hints: Vec<&'static str>,
}

#[derive(Serialize)]
struct OomJson {
    line: usize,
    invoker: String,
    gfp_mask: Option<String>,
    gfp_flags: Option<String>,
    order: Option<u32>,
    killed_pid: Option<u32>,
    killed_comm: Option<String>,
    constraint: Option<String>,
    memcg: Option<String>,
}

#[derive(Serialize)]
struct ZoneJson {
    node: u32,
    zone: String,
    free_kb: Option<u64>,
    min_kb: Option<u64>,
    low_kb: Option<u64>,
    high_kb: Option<u64>,
    managed_kb: Option<u64>,
    free_blocks: Vec<u64>,
    largest_free_order: Option<u32>,
    #[serde(skip)]
    page_kb: Option<u64>,
}

impl Report {
    pub fn new(inc: &Incident) -> Self {
        let mask = inc
            .mode
            .as_deref()
            .and_then(|m| u64::from_str_radix(m.trim_start_matches("0x"), 16).ok());
        let (gfp_flags, gfp_layout) = match (&inc.printed_flags, mask) {
            (Some(names), _) => (Some(names.clone()), "printed by the kernel".to_string()),
            (None, Some(mask)) => {
                let version = inc.kernel.as_deref().and_then(gfp_layouts::parse_version);
                let d = gfp_layouts::decode(mask, version);
                (d.flags, d.layout)
            }
            (None, None) => (None, "unknown: no mode in the log".to_string()),
        };
        let state = zone_state(&inc.zones);
        let has_highmem = state.zones.iter().any(|z| z.zone == "HighMem");
        let preferred = mask.map(|m| gfp_layouts::preferred_zone(m, has_highmem));
        let verdict = judge(inc, &state, preferred);
        let mut netns_frames: Vec<String> = Vec::new();
        for f in inc.call_trace.iter().chain(&inc.later_frames) {
            if NETNS_FRAMES.iter().any(|n| f.contains(n)) && !netns_frames.contains(f) {
                netns_frames.push(f.clone());
            }
        }
        let netns = !netns_frames.is_empty()
            || inc
                .slab_cache
                .as_deref()
                .is_some_and(|s| s.starts_with("nf_conn"));
        let mut hint_list = hints::for_verdict(verdict.kind);
        if netns {
            hint_list.insert(0, hints::NETNS);
        }
        let z = verdict.zone.as_ref();
        let json = LogFailure {
            kind: "log_failure",
            comm: inc.comm.clone(),
            order: inc.order,
            mode: inc.mode.clone(),
            gfp_flags,
            gfp_layout,
            kernel: inc.kernel.clone(),
            zone: z.map(|z| z.zone.clone()),
            largest_free_order: z.and_then(|z| z.largest_free_order),
            free_kb: z.and_then(|z| z.free_kb),
            min_kb: z.and_then(|z| z.min_kb),
            verdict: verdict.kind,
            reason: verdict.reason.clone(),
            netns,
            slab_cache: inc.slab_cache.clone(),
            oom_kill: inc.oom_kill.as_ref().map(oom_json),
            trigger: match inc.trigger {
                Trigger::AllocationFailure => "page_allocation_failure",
                Trigger::OomKiller => "oom_killer",
            },
            line: inc.line,
            timestamp: inc.timestamp.clone(),
            nodemask: inc.nodemask.clone(),
            cpuset: inc.cpuset.clone(),
            mems_allowed: inc.mems_allowed.clone(),
            netns_frames,
            slab_error: inc.slab_error.clone(),
            call_trace: inc.call_trace.clone(),
            zones: inc.zones.iter().map(zone_json).collect(),
            truncated: inc.truncated,
            hints: hint_list,
        };
        Self { json, verdict }
    }

    /// The short human report.
    pub fn text(&self) -> String {
        let j = &self.json;
        let mut out = String::new();
        let what = match j.trigger {
            "oom_killer" => "OOM killer invoked by",
            _ => "page allocation failure in",
        };
        let _ = writeln!(
            out,
            "line {}{}: {what} {} (order {}, mode {})",
            j.line,
            j.timestamp
                .as_deref()
                .map(|t| format!(" [{t}]"))
                .unwrap_or_default(),
            j.comm,
            opt(j.order),
            j.mode.as_deref().unwrap_or("?"),
        );
        let _ = writeln!(
            out,
            "  flags:   {} (layout: {})",
            j.gfp_flags.as_deref().unwrap_or("?"),
            j.gfp_layout
        );
        if let Some(k) = &j.kernel {
            let _ = writeln!(out, "  kernel:  {k}");
        }
        let constraints: Vec<String> = [
            ("nodemask", &j.nodemask),
            ("cpuset", &j.cpuset),
            ("mems_allowed", &j.mems_allowed),
        ]
        .iter()
        .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}={v}")))
        .collect();
        if !constraints.is_empty() {
            let _ = writeln!(out, "  limits:  {}", constraints.join(" "));
        }
        for z in &j.zones {
            let _ = writeln!(
                out,
                "  zone:    Node {} {}: free {} kB, min {} kB, largest free order {}{}",
                z.node,
                z.zone,
                opt(z.free_kb),
                opt(z.min_kb),
                opt(z.largest_free_order),
                z.largest_free_order
                    .zip(z.page_kb)
                    .map(|(o, kb)| format!(" ({} kB)", kb << o))
                    .unwrap_or_default()
            );
        }
        let _ = writeln!(
            out,
            "  verdict: {} - {}",
            j.verdict_str(),
            self.verdict.reason
        );
        if j.netns {
            let names: Vec<&str> = j
                .netns_frames
                .iter()
                .map(|f| f.trim_start_matches("? ").split('+').next().unwrap_or(f))
                .collect();
            let _ = writeln!(out, "  netns:   yes, via {}", names.join(" < "));
        }
        if let Some(s) = &j.slab_cache {
            let _ = writeln!(
                out,
                "  slab:    cache {s} could not be created{}",
                j.slab_error
                    .as_deref()
                    .map(|e| format!(" (error {e})"))
                    .unwrap_or_default()
            );
        }
        if let Some(o) = &j.oom_kill {
            let _ = writeln!(
                out,
                "  oom:     line {}: {} invoked the OOM killer (order {}), killed {} ({}){}",
                o.line,
                o.invoker,
                opt(o.order),
                o.killed_comm.as_deref().unwrap_or("?"),
                opt(o.killed_pid),
                o.constraint
                    .as_deref()
                    .map(|c| format!(", {c}"))
                    .unwrap_or_default()
            );
        }
        if !j.call_trace.is_empty() {
            let shown: Vec<&str> = j
                .call_trace
                .iter()
                .map(String::as_str)
                .filter(|f| !f.starts_with("? "))
                .take(6)
                .collect();
            let _ = writeln!(out, "  trace:   {}", shown.join(" < "));
        }
        if j.truncated {
            let _ = writeln!(out, "  note:    the log ends inside this incident");
        }
        for h in &j.hints {
            let _ = writeln!(out, "  hint:    {h}");
        }
        out
    }
}

impl LogFailure {
    fn verdict_str(&self) -> &'static str {
        self.verdict.as_str()
    }
}

fn opt<T: ToString>(v: Option<T>) -> String {
    v.map_or_else(|| "?".to_string(), |v| v.to_string())
}

/// The Mem-Info zones as a [`ZoneState`] in pages, so the live verdict code judges them.
fn zone_state(zones: &[LogZone]) -> ZoneState {
    let page_kb = zones.iter().find_map(|z| z.page_kb).unwrap_or(4).max(1);
    let mut state = ZoneState {
        page_size: page_kb * 1024,
        pageblock_order: None,
        extfrag_threshold: None,
        zones: zones
            .iter()
            .map(|z| Zone {
                node: z.node,
                zone: z.zone.clone(),
                index: None,
                free_pages: z.free_kb.map(|k| k / page_kb),
                min_pages: z.min_kb.map(|k| k / page_kb),
                low_pages: z.low_kb.map(|k| k / page_kb),
                high_pages: z.high_kb.map(|k| k / page_kb),
                managed_pages: z.managed_kb.map(|k| k / page_kb),
                protection: z.lowmem_reserve.clone(),
                free_blocks: z.free_blocks.clone(),
                free_by_migratetype: Vec::new(),
            })
            .collect(),
    };
    state.infer_indices();
    state
}

fn judge(inc: &Incident, state: &ZoneState, preferred: Option<&str>) -> Verdict {
    if let Some(oom) = &inc.oom_kill
        && inc.trigger == Trigger::OomKiller
        && (oom.constraint.as_deref() == Some("CONSTRAINT_MEMCG") || oom.memcg.is_some())
    {
        return Verdict {
            kind: VerdictKind::MemcgLimit,
            reason: format!(
                "the OOM killer ran for a memory cgroup at its limit ({})",
                oom.memcg
                    .as_deref()
                    .filter(|m| !m.is_empty())
                    .or(oom.constraint.as_deref())
                    .unwrap_or("Memory cgroup out of memory")
            ),
            zone: None,
        };
    }
    let Some(order) = inc.order else {
        return Verdict {
            kind: VerdictKind::Unknown,
            reason: "the log gives no order for this failure".into(),
            zone: None,
        };
    };
    if state.zones.is_empty() {
        return Verdict {
            kind: VerdictKind::Unknown,
            reason: "the log has no Mem-Info zone figures for this failure (free, min, free lists)"
                .into(),
            zone: None,
        };
    }
    let v = verdict::judge_in(order, preferred, state, None);
    if v.kind == VerdictKind::Fragmentation {
        // The log does not record vm.extfrag_threshold; say the default was used.
        let reason = v.reason.replace(
            "extfrag_threshold 500",
            "extfrag_threshold 500 (the default; the log does not record it)",
        );
        return Verdict { reason, ..v };
    }
    v
}

fn oom_json(o: &OomKill) -> OomJson {
    OomJson {
        line: o.line,
        invoker: o.invoker.clone(),
        gfp_mask: o.gfp_mask.clone(),
        gfp_flags: o.gfp_names.clone(),
        order: o.order,
        killed_pid: o.killed_pid,
        killed_comm: o.killed_comm.clone(),
        constraint: o.constraint.clone(),
        memcg: o.memcg.clone().filter(|m| !m.is_empty()),
    }
}

fn zone_json(z: &LogZone) -> ZoneJson {
    ZoneJson {
        node: z.node,
        zone: z.zone.clone(),
        free_kb: z.free_kb,
        min_kb: z.min_kb,
        low_kb: z.low_kb,
        high_kb: z.high_kb,
        managed_kb: z.managed_kb,
        free_blocks: z.free_blocks.clone(),
        largest_free_order: crate::zones::index::largest_free_order(&z.free_blocks),
        page_kb: z.page_kb,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::offline::logparse::parse;

    fn reports(fixture: &str) -> Vec<Report> {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/logs")
            .join(fixture);
        let text = std::fs::read_to_string(path).unwrap();
        parse(&text).incidents.iter().map(Report::new).collect()
    }

    /// Issue #5's required answer for seed 002.
    #[test]
    fn seed_002_answer() {
        let r = reports("rhel7-3.10-netns-fragmentation.log");
        assert_eq!(r.len(), 1);
        let j = &r[0].json;
        assert_eq!((j.comm.as_str(), j.order), ("exe", Some(6)));
        assert_eq!(j.mode.as_deref(), Some("0x10c0d0"));
        assert_eq!(
            j.gfp_flags.as_deref(),
            Some("GFP_KERNEL|GFP_COMP|GFP_ZERO|GFP_KMEMCG")
        );
        assert_eq!(j.gfp_layout, "3.8-3.14");
        assert_eq!(j.zone.as_deref(), Some("Normal"));
        assert_eq!(j.largest_free_order, Some(5));
        assert_eq!((j.free_kb, j.min_kb), (Some(311184), Some(55536)));
        assert_eq!(j.verdict, VerdictKind::Fragmentation);
        assert!(j.netns);
        assert_eq!(
            j.slab_cache.as_deref(),
            Some("nf_conntrack_ffff8803eef66180")
        );
        assert_eq!(j.call_trace.len(), 24, "{:?}", j.call_trace);
        assert!(!j.truncated);
        let text = r[0].text();
        assert!(text.contains("largest free order 5 (128 kB)"), "{text}");
        assert!(text.contains("compact_memory") && text.contains("stopgap"));
    }

    #[test]
    fn seed_000_headers_only_are_unknown() {
        let r = reports("tke-headers-only.log");
        let comms: Vec<&str> = r.iter().map(|r| r.json.comm.as_str()).collect();
        assert_eq!(comms, ["mysqld", "runc:[1:CHILD]"]);
        assert!(r.iter().all(|r| r.json.verdict == VerdictKind::Unknown));
        assert!(r[0].json.gfp_layout.contains("assumed"));
    }

    #[test]
    fn the_whole_seed_article_parses_too() {
        let text = include_str!("../../tests/fixtures/logs/rhel7-3.10-netns-fragmentation.log");
        let article = format!("# notes\n\n```sh\n{text}```\n\nSome prose: Node 0 DMA free:1kB\n");
        let r: Vec<Report> = parse(&article).incidents.iter().map(Report::new).collect();
        assert_eq!(r[0].json.verdict, VerdictKind::Fragmentation);
    }
}
