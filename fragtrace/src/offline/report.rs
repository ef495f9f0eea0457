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
    verdict::{self, Access, Verdict, VerdictKind},
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
        let access = gfp_flags.as_deref().map(Access::from_flag_names);
        // Unknown flags: keep every free block rather than guess.
        let reserve_ok = access.is_none_or(Access::has_reserve_rights);
        let state = zone_state(&inc.zones, reserve_ok);
        let has_highmem = state.zones.iter().any(|z| z.zone == "HighMem");
        let preferred = mask.map(|m| crate::zones::preferred_zone(m, has_highmem));
        let mut verdict = judge(inc, &state, preferred, access.unwrap_or_default());
        if !reserve_ok && let Some(note) = highatomic_note(inc, &verdict) {
            verdict.reason.push_str(&note);
        }
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

/// Whether a request may take blocks from the highatomic reserve (`H` in the free lists):
/// only high-priority atomic requests may (`ALLOC_HARDER`/`ALLOC_HIGHATOMIC`, from
/// `__GFP_HIGH`/`__GFP_ATOMIC`, both in GFP_ATOMIC).
/// Free lists with only the highatomic reserve's blocks at an order are, for other requests,
/// empty at that order.
fn usable_blocks(z: &LogZone, reserve_ok: bool) -> Vec<u64> {
    let mut blocks = z.free_blocks.clone();
    if !reserve_ok {
        for (b, t) in blocks.iter_mut().zip(&z.free_types) {
            if t == "H" {
                *b = 0;
            }
        }
    }
    blocks
}

/// Says so when the verdict's zone has free blocks of the requested order or larger that only
/// the highatomic reserve holds.
fn highatomic_note(inc: &Incident, verdict: &Verdict) -> Option<String> {
    let order = inc.order? as usize;
    let figures = verdict.zone.as_ref()?;
    let z = inc
        .zones
        .iter()
        .find(|z| z.node == figures.node && z.zone == figures.zone)?;
    let reserved: Vec<String> = z
        .free_types
        .iter()
        .enumerate()
        .skip(order)
        .filter(|(o, t)| *t == "H" && z.free_blocks.get(*o).is_some_and(|&n| n > 0))
        .map(|(o, _)| format!("{}*order-{o}", z.free_blocks[o]))
        .collect();
    (!reserved.is_empty()).then(|| {
        format!(
            "; the free {} block(s) are in the highatomic reserve (H), which this non-atomic request may not use",
            reserved.join(", ")
        )
    })
}

/// The Mem-Info zones as a [`ZoneState`] in pages, so the live verdict code judges them.
/// Without `reserve_ok`, blocks only the highatomic reserve holds do not count.
fn zone_state(zones: &[LogZone], reserve_ok: bool) -> ZoneState {
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
                free_blocks: usable_blocks(z, reserve_ok),
                free_by_migratetype: Vec::new(),
                free_cma_pages: None,
                highatomic_pages: None,
            })
            .collect(),
    };
    state.infer_indices();
    state
}

fn judge(inc: &Incident, state: &ZoneState, preferred: Option<&str>, access: Access) -> Verdict {
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
    let v = verdict::judge_in(order, preferred, access, state, None);
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
    /// A true out-of-memory case: a kdump kernel (5.0, no CONFIG_NUMA, so zone lines have no
    /// `Node 0 `) with DMA32 below its min watermark, and the global OOM kill that followed.
    #[test]
    fn kdump_5_0_oom_is_exhaustion() {
        let r = reports("5.0-kdump-oom-exhaustion.log");
        assert_eq!(r.len(), 1);
        let j = &r[0].json;
        assert_eq!(j.trigger, "oom_killer");
        assert_eq!((j.comm.as_str(), j.order), ("systemd-udevd", Some(0)));
        assert_eq!(j.mode.as_deref(), Some("0x7080c0"));
        assert_eq!(
            j.gfp_flags.as_deref(),
            Some("GFP_KERNEL_ACCOUNT|__GFP_ZERO")
        );
        assert_eq!(j.kernel.as_deref(), Some("5.0.0-rc8+"));
        // GFP_KERNEL prefers Normal; this machine has none, so DMA32 is where it starts.
        assert_eq!(j.zone.as_deref(), Some("DMA32"));
        assert_eq!((j.free_kb, j.min_kb), (Some(1408), Some(1416)));
        assert_eq!(j.largest_free_order, Some(6));
        assert_eq!(j.verdict, VerdictKind::Exhaustion, "{}", j.reason);
        let zones: Vec<(&str, Option<u64>, Option<u32>)> = j
            .zones
            .iter()
            .map(|z| (z.zone.as_str(), z.free_kb, z.largest_free_order))
            .collect();
        assert_eq!(
            zones,
            [("DMA", Some(508), Some(6)), ("DMA32", Some(1408), Some(6))]
        );
        assert_eq!(j.zones[1].free_blocks, [14, 9, 14, 7, 3, 1, 2, 0, 0, 0, 0]);
        let oom = j.oom_kill.as_ref().unwrap();
        assert_eq!(oom.killed_pid, Some(132));
        assert_eq!(oom.killed_comm.as_deref(), Some("systemd-udevd"));
        assert_eq!(oom.constraint.as_deref(), Some("CONSTRAINT_NONE"));
        assert!(oom.memcg.is_none());
        assert!(!j.truncated && !j.netns);
    }

    /// warn_alloc era (4.12) with printed names; DMA32 just below min, DMA held back by its
    /// lowmem reserve: exhaustion. The second failure has no Mem-Info of its own.
    #[test]
    fn pagefault_4_12_is_exhaustion() {
        let r = reports("4.12-pagefault-exhaustion.log");
        assert_eq!(r.len(), 2);
        let j = &r[0].json;
        assert_eq!((j.comm.as_str(), j.order), ("tuned", Some(0)));
        assert_eq!(j.mode.as_deref(), Some("0x14201ca"));
        assert_eq!(
            j.gfp_flags.as_deref(),
            Some("GFP_HIGHUSER_MOVABLE|__GFP_COLD")
        );
        assert_eq!(j.gfp_layout, "printed by the kernel");
        assert_eq!(j.kernel.as_deref(), Some("4.12.0-rc4-next-20170609+"));
        assert_eq!(
            (j.cpuset.as_deref(), j.mems_allowed.as_deref()),
            (Some("/"), Some("0"))
        );
        assert_eq!(j.zone.as_deref(), Some("DMA32"));
        assert_eq!((j.free_kb, j.min_kb), (Some(44568), Some(44640)));
        assert_eq!(j.largest_free_order, Some(10));
        assert_eq!(j.verdict, VerdictKind::Exhaustion, "{}", j.reason);
        assert!(
            j.reason
                .contains("DMA 7120 kB free, 412 kB min + 6708 kB reserve"),
            "{}",
            j.reason
        );
        assert!(j.oom_kill.is_none());
        let second = &r[1].json;
        assert_eq!((second.comm.as_str(), second.order), ("a.out", Some(0)));
        assert_eq!(second.verdict, VerdictKind::Unknown);
        assert!(r.iter().all(|r| !r.json.truncated));
    }

    /// A syslog log pasted into a format=flowed, quoted-printable mail: wrapped lines and
    /// `=3D`. Order 8 fails with 2 GB free; the only order >= 8 block is highatomic reserve.
    #[test]
    fn mail_wrapped_5_18_is_fragmentation() {
        let r = reports("5.18-syslog-mail-wrapped-fragmentation.log");
        assert_eq!(r.len(), 1);
        let j = &r[0].json;
        assert_eq!((j.comm.as_str(), j.order), ("20.p", Some(8)));
        assert_eq!(j.mode.as_deref(), Some("0x40dc0"));
        assert_eq!(
            j.gfp_flags.as_deref(),
            Some("GFP_KERNEL|__GFP_COMP|__GFP_ZERO")
        );
        assert_eq!(j.kernel.as_deref(), Some("5.18.5"));
        assert_eq!(j.timestamp.as_deref(), Some("Jun 18 16:37:06"));
        assert_eq!(j.nodemask.as_deref(), Some("(null)"));
        assert_eq!(j.cpuset.as_deref(), Some("/"));
        assert_eq!(j.zone.as_deref(), Some("Normal"));
        assert_eq!((j.free_kb, j.min_kb), (Some(2157736), Some(65912)));
        // Order 9 exists only as highatomic reserve, so the usable largest order is 6.
        assert_eq!(j.largest_free_order, Some(6));
        assert_eq!(j.verdict, VerdictKind::Fragmentation, "{}", j.reason);
        assert!(j.reason.contains("highatomic reserve"), "{}", j.reason);
        let largest: Vec<(&str, Option<u32>)> = j
            .zones
            .iter()
            .map(|z| (z.zone.as_str(), z.largest_free_order))
            .collect();
        assert_eq!(
            largest,
            [("DMA", Some(10)), ("DMA32", Some(7)), ("Normal", Some(9))]
        );
        assert_eq!(
            j.zones[2].free_blocks,
            [65181, 61080, 19124, 12005, 6511, 2009, 173, 0, 0, 1, 0]
        );
        assert_eq!(j.call_trace.len(), 11, "{:?}", j.call_trace);
        assert!(
            j.call_trace
                .contains(&"__alloc_pages_slowpath.constprop.0+0xb80/0xbb0".to_string())
        );
        assert!(!j.truncated);
    }

    #[test]
    fn highatomic_reserve_is_for_atomic_requests_only() {
        let rights = |names| Access::from_flag_names(names).has_reserve_rights();
        assert!(rights("GFP_ATOMIC|__GFP_COMP"));
        assert!(rights("__GFP_HIGH|__GFP_NOWARN"));
        assert!(!rights("GFP_HIGHUSER_MOVABLE"));
        assert!(!rights("GFP_KERNEL|__GFP_HIGHMEM"));
    }
}
