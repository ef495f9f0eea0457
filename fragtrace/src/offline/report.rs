//! One incident's diagnosis: decoded mode, zone figures (its own Mem-Info, another report's, or a
//! /proc dump pasted beside it), the verdict the way that kernel's generation judged, netns and
//! slab ties, runtime errors, OOM kill; as JSON (docs/json.md, `log_failure`) and as text.
use std::fmt::Write as _;

use serde::Serialize;

use super::{
    gfp_layouts::{self, Version},
    logparse::{Incident, LogZone, OomKill, Trigger},
};
use crate::analysis::netns::stack_evidence;
use crate::zones::{
    Zone, ZoneState, hints, index,
    verdict::{self, Access, Verdict, VerdictKind, WatermarkCheck},
};

pub struct Report {
    pub json: LogFailure,
    verdict: Verdict,
}

/// What a diagnosis from the kernel log adds to the daemon's counters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Counted {
    pub comm: String,
    /// A page allocation failure: its order (when printed), verdict, and whether a netns
    /// creation was under way.
    pub failure: Option<(Option<u32>, &'static str, bool)>,
    /// An OOM kill, by kind: `cgroup`, `fragmentation`, `exhaustion` or `unknown`.
    pub oom_kill: Option<&'static str>,
}

impl Report {
    pub fn counted(&self) -> Counted {
        let j = &self.json;
        let oom_kind = |o: &OomJson| {
            if o.constraint.as_deref() == Some("CONSTRAINT_MEMCG") || o.memcg.is_some() {
                "cgroup"
            } else {
                match j.verdict {
                    VerdictKind::Fragmentation => "fragmentation",
                    VerdictKind::Exhaustion => "exhaustion",
                    _ => "unknown",
                }
            }
        };
        Counted {
            comm: j.comm.clone(),
            failure: (j.trigger == "page_allocation_failure")
                .then(|| (j.order, j.verdict.as_str(), j.netns)),
            oom_kill: j.oom_kill.as_ref().map(oom_kind),
        }
    }
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
    /// `certain`, `likely` (zone state not the report's own), or null for `unknown`.
    confidence: Option<&'static str>,
    reason: String,
    /// `mem_info`, `borrowed_mem_info`, `buddyinfo`/`zoneinfo`/`pagetypeinfo` (and `+` joins),
    /// or null.
    zone_state_source: Option<String>,
    /// The line the zone state was read from.
    zone_state_line: Option<usize>,
    /// Which `__zone_watermark_ok` was modelled, and why.
    watermark_check: String,
    /// The page size the log's free lists show, in kB.
    page_kb: Option<u64>,
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
    runtime: Vec<RuntimeJson>,
    pods: Vec<String>,
    containers: Vec<String>,
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

#[derive(Serialize)]
struct RuntimeJson {
    line: usize,
    timestamp: Option<String>,
    program: Option<String>,
    what: String,
    pod: Option<String>,
    container: Option<String>,
    /// `time` or `position`.
    linked_by: &'static str,
}

/// The kernel generation whose rules apply, and how it was found.
struct Generation {
    version: Option<Version>,
    check: WatermarkCheck,
    why: String,
}

/// Where the zone figures come from.
struct ZoneSource {
    zones: Vec<LogZone>,
    state: Option<ZoneState>,
    label: Option<String>,
    line: Option<usize>,
    /// Prefix of the reason that says where the figures came from.
    note: String,
    likely: bool,
    /// A dump without watermarks (buddyinfo, pagetypeinfo).
    no_watermarks: bool,
}

impl Report {
    pub fn new(inc: &Incident) -> Self {
        let mask = inc
            .mode
            .as_deref()
            .and_then(|m| u64::from_str_radix(m.trim_start_matches("0x"), 16).ok());
        let source = zone_source(inc);
        let generation = generation(inc, &source.zones, mask);
        let (gfp_flags, gfp_layout) = match (&inc.printed_flags, mask) {
            (Some(names), _) => (Some(names.clone()), "printed by the kernel".to_string()),
            (None, Some(mask)) => {
                let d = gfp_layouts::decode(mask, known_version(inc));
                (d.flags, d.layout)
            }
            (None, None) => (None, "unknown: no mode in the log".to_string()),
        };
        let access = gfp_flags
            .as_deref()
            .map(|f| access_for(f, generation.version, generation.check));
        // Unknown flags: keep every free block rather than guess.
        let access_or_default = access.unwrap_or_default();
        let mut state = match &source.state {
            Some(s) => s.clone(),
            None => zone_state(&source.zones, access, generation.check),
        };
        let has_highmem = state.zones.iter().any(|z| z.zone == "HighMem");
        let preferred = mask.map(|m| crate::zones::preferred_zone(m, has_highmem));
        let mut verdict = judge(
            inc,
            &state,
            &source,
            preferred,
            access_or_default,
            generation.check,
        );
        // Before it kills, the kernel makes a last attempt at the high watermark
        // (__alloc_pages_may_oom, ALLOC_WMARK_HIGH): an OOM report whose zones could serve the
        // request at min is judged against high.
        let oom_high = inc.trigger == Trigger::OomKiller
            && verdict.kind == VerdictKind::Unknown
            && !state.zones.is_empty()
            && state.zones.iter().all(|z| z.high_pages.is_some());
        if oom_high {
            for z in &mut state.zones {
                z.min_pages = z.high_pages;
            }
            verdict = judge(
                inc,
                &state,
                &source,
                preferred,
                access_or_default,
                generation.check,
            );
        }
        if oom_high && verdict.kind != VerdictKind::MemcgLimit {
            verdict.reason = format!(
                "the zones could serve it at min, but the OOM killer runs once a last attempt at the high watermark has failed, so they are judged against high: {}",
                verdict.reason.replace(" kB min", " kB high")
            );
            if let Some(z) = verdict.zone.as_mut() {
                z.min_kb = source
                    .zones
                    .iter()
                    .find(|l| l.node == z.node && l.zone == z.zone)
                    .and_then(|l| l.min_kb)
                    .or(z.min_kb);
            }
        }
        if let Some(note) = reserved_blocks_note(inc, &source.zones, &verdict, access) {
            verdict.reason.push_str(&note);
        }
        if let Some(note) = cma_note(&source.zones, &verdict) {
            verdict.reason.push_str(&note);
        }
        if !source.note.is_empty() {
            verdict.reason = format!("{}{}", source.note, verdict.reason);
        }
        let mut netns_frames: Vec<String> = Vec::new();
        for f in inc.call_trace.iter().chain(&inc.later_frames) {
            if stack_evidence([f]).is_some() && !netns_frames.contains(f) {
                netns_frames.push(f.clone());
            }
        }
        // A runtime error that failed in setns or netns setup ties it to netns creation too.
        let netns_runtime = inc.evidence.runtime.iter().find(|l| {
            ["setns", "network namespace", "nf_conn"]
                .iter()
                .any(|w| l.hit.what.contains(w))
        });
        let netns = !netns_frames.is_empty()
            || netns_runtime.is_some()
            || inc
                .slab_cache
                .as_deref()
                .is_some_and(|s| s.starts_with("nf_conn"));
        let mut hint_list = hints::for_verdict(verdict.kind);
        if netns {
            hint_list.insert(0, hints::NETNS);
        }
        let runtime: Vec<RuntimeJson> = inc
            .evidence
            .runtime
            .iter()
            .map(|l| RuntimeJson {
                line: l.hit.line,
                timestamp: l.hit.timestamp.clone(),
                program: l.hit.program.clone(),
                what: l.hit.what.clone(),
                pod: l.hit.pod.clone(),
                container: l.hit.container.clone(),
                linked_by: l.by,
            })
            .collect();
        let mut pods: Vec<String> = Vec::new();
        let mut containers: Vec<String> = Vec::new();
        for r in &runtime {
            if let Some(p) = &r.pod
                && !pods.contains(p)
            {
                pods.push(p.clone());
            }
            if let Some(c) = &r.container
                && !containers.contains(c)
            {
                containers.push(c.clone());
            }
        }
        let confidence = match verdict.kind {
            VerdictKind::Unknown => None,
            _ if source.likely => Some("likely"),
            _ => Some("certain"),
        };
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
            confidence,
            reason: verdict.reason.clone(),
            zone_state_source: source.label.clone(),
            zone_state_line: source.line,
            watermark_check: generation.why.clone(),
            page_kb: source.zones.iter().find_map(|z| z.page_kb),
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
            zones: source.zones.iter().map(zone_json).collect(),
            runtime,
            pods,
            containers,
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
                    .and_then(|(o, kb)| kb.checked_mul(1u64.checked_shl(o)?))
                    .map(|kb| format!(" ({kb} kB)"))
                    .unwrap_or_default()
            );
        }
        let _ = writeln!(
            out,
            "  verdict: {}{} - {}",
            j.verdict.as_str(),
            if j.confidence == Some("likely") {
                " (likely)"
            } else {
                ""
            },
            self.verdict.reason
        );
        let _ = writeln!(out, "  check:   {}", j.watermark_check);
        if j.netns {
            let names: Vec<&str> = j
                .netns_frames
                .iter()
                .map(|f| f.trim_start_matches("? ").split('+').next().unwrap_or(f))
                .collect();
            if names.is_empty() {
                let via = j
                    .runtime
                    .iter()
                    .find(|r| r.what.contains("setns") || r.what.contains("namespace"))
                    .map_or("the nf_conn slab cache".to_string(), |r| {
                        format!("the runtime error at line {} ({})", r.line, r.what)
                    });
                let _ = writeln!(out, "  netns:   yes, via {via}");
            } else {
                let _ = writeln!(out, "  netns:   yes, via {}", names.join(" < "));
            }
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
        if !j.pods.is_empty() || !j.containers.is_empty() {
            let short: Vec<String> = j
                .containers
                .iter()
                .map(|c| match c.get(..12) {
                    Some(head) if c.len() > 12 => format!("{head}…"),
                    _ => c.clone(),
                })
                .collect();
            let _ = writeln!(
                out,
                "  runtime: pod {}, container {}",
                if j.pods.is_empty() {
                    "?".to_string()
                } else {
                    j.pods.join(", ")
                },
                if short.is_empty() {
                    "?".to_string()
                } else {
                    short.join(", ")
                }
            );
        }
        for r in &j.runtime {
            let _ = writeln!(
                out,
                "  runtime: line {}{}: {} (linked by {})",
                r.line,
                r.program
                    .as_deref()
                    .map(|p| format!(" {p}"))
                    .unwrap_or_default(),
                r.what,
                r.linked_by
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

fn opt<T: ToString>(v: Option<T>) -> String {
    v.map_or_else(|| "?".to_string(), |v| v.to_string())
}

/// The kernel version the report names.
fn known_version(inc: &Incident) -> Option<Version> {
    inc.kernel.as_deref().and_then(gfp_layouts::parse_version)
}

/// The generation whose `__zone_watermark_ok` applies: from the kernel version, else from what
/// the log's format shows.
fn generation(inc: &Incident, zones: &[LogZone], mask: Option<u64>) -> Generation {
    let by_version = |v: Version, how: &str| Generation {
        version: Some(v),
        check: if v < (4, 4) {
            WatermarkCheck::PerOrder
        } else {
            WatermarkCheck::FreeLists
        },
        why: format!(
            "{} ({how})",
            if v < (4, 4) {
                "before 4.4: free pages of each lower order removed, min halved per order"
            } else {
                "4.4+: a free block of the order in a list the request may use"
            }
        ),
    };
    if let Some(v) = known_version(inc) {
        return by_version(v, &format!("kernel {}.{} in the log", v.0, v.1));
    }
    let letters: String = zones
        .iter()
        .flat_map(|z| z.free_types.iter())
        .flat_map(|t| t.chars())
        .collect();
    if inc.printed_flags.is_some() {
        return by_version(
            (4, 6),
            "no kernel version; flag names are printed since 4.6",
        );
    }
    if letters.contains('H') {
        return by_version(
            (4, 4),
            "no kernel version; highatomic (H) free lists exist since 4.4",
        );
    }
    if letters.contains('R') {
        return by_version(
            (3, 13),
            "no kernel version; MIGRATE_RESERVE (R) free lists ended in 4.4",
        );
    }
    if let Some(m) = mask {
        // The hex-only layouts (before 4.6): the 4.4 rework moved reclaim to 0x2000000.
        return if m & 0x200_0000 != 0 {
            by_version(
                (4, 5),
                "no kernel version; inferred from the hex-only mode's 4.4-4.9 bit layout",
            )
        } else {
            by_version(
                (3, 10),
                "no kernel version; inferred from the hex-only mode's pre-4.4 bit layout",
            )
        };
    }
    Generation {
        version: None,
        check: WatermarkCheck::FreeLists,
        why: "4.4+ assumed: no kernel version and no format clue in the log".to_string(),
    }
}

/// What the request may use, under the rules of its kernel's generation.
fn access_for(names: &str, version: Option<Version>, check: WatermarkCheck) -> Access {
    let mut a = Access::from_flag_names(names);
    let normalized: Vec<&str> = names
        .split('|')
        .map(|f| f.trim().trim_start_matches('_'))
        .collect();
    let has = |n: &[&str]| normalized.iter().any(|f| n.contains(f));
    a.high |= has(&["GFP_HIGH"]);
    a.cma |= has(&["GFP_MOVABLE"]);
    let old = check == WatermarkCheck::PerOrder;
    let new = version.is_some_and(|v| v >= (6, 3));
    if old || new {
        // Before 4.4 (`!__GFP_WAIT`) and since 6.3 (`!__GFP_DIRECT_RECLAIM`), a request that
        // cannot sleep gets the atomic rights.
        let sleeps = has(&[
            "GFP_KERNEL",
            "GFP_KERNEL_ACCOUNT",
            "GFP_NOFS",
            "GFP_NOIO",
            "GFP_USER",
            "GFP_HIGHUSER",
            "GFP_HIGHUSER_MOVABLE",
            "GFP_TEMPORARY",
            "GFP_TRANSHUGE",
            "GFP_WAIT",
            "GFP_DIRECT_RECLAIM",
            "GFP_RECLAIM",
        ]);
        a.atomic = !sleeps && !has(&["GFP_NOMEMALLOC"]);
    }
    a
}

/// Whether free blocks of a printed migratetype set may serve the request: `H` (4.4+ highatomic)
/// only atomic requests above order 0, `C` (CMA) only movable ones, `I` (isolated) none; `R`
/// (the pre-4.4 reserve) and the ordinary lists any.
fn types_usable(types: &str, access: Option<Access>, order_nonzero: bool) -> bool {
    let Some(a) = access else {
        return true;
    };
    types.is_empty()
        || types.chars().any(|t| match t {
            'H' => a.atomic && order_nonzero,
            'C' => a.cma,
            'I' => false,
            _ => true,
        })
}

/// The free blocks the request may use (orders whose blocks are all in lists it may not use
/// count as empty).
fn usable_blocks(z: &LogZone, access: Option<Access>, order_nonzero: bool) -> Vec<u64> {
    let mut blocks = z.free_blocks.clone();
    for (b, t) in blocks.iter_mut().zip(&z.free_types) {
        if !types_usable(t, access, order_nonzero) {
            *b = 0;
        }
    }
    blocks
}

/// Says so when the verdict's zone has free blocks of the requested order or larger that only
/// reserved lists (highatomic, CMA, isolated) hold.
fn reserved_blocks_note(
    inc: &Incident,
    zones: &[LogZone],
    verdict: &Verdict,
    access: Option<Access>,
) -> Option<String> {
    let order = inc.order? as usize;
    let figures = verdict.zone.as_ref()?;
    let z = zones
        .iter()
        .find(|z| z.node == figures.node && z.zone == figures.zone)?;
    let reserved: Vec<String> = z
        .free_types
        .iter()
        .enumerate()
        .skip(order)
        .filter(|(o, t)| {
            !types_usable(t, access, order > 0) && z.free_blocks.get(*o).is_some_and(|&n| n > 0)
        })
        .map(|(o, t)| format!("{}*order-{o} ({t})", z.free_blocks[o]))
        .collect();
    (!reserved.is_empty()).then(|| {
        format!(
            "; the free {} block(s) are only in lists this request may not use (H: highatomic reserve, atomic requests only; C: CMA, movable only; I: isolated)",
            reserved.join(", ")
        )
    })
}

/// When a zone could serve the request only by counting its free CMA pages: what is left
/// without them (requests that may not use CMA, or kernels that keep movable ones out of it).
fn cma_note(zones: &[LogZone], verdict: &Verdict) -> Option<String> {
    if verdict.kind != VerdictKind::Unknown {
        return None;
    }
    let figures = verdict.zone.as_ref()?;
    let z = zones
        .iter()
        .find(|z| z.node == figures.node && z.zone == figures.zone)?;
    let (free, cma, min) = (z.free_kb?, z.free_cma_kb?, z.min_kb?);
    let outside = free.saturating_sub(cma);
    (cma > 0 && outside <= min).then(|| {
        format!(
            "; {cma} kB of its free memory is CMA: without it {outside} kB are free <= {min} kB min, exhaustion for any request kept out of CMA"
        )
    })
}

/// Where the zone figures come from: the report's Mem-Info, another report's, or a dump.
fn zone_source(inc: &Incident) -> ZoneSource {
    if !inc.zones.is_empty() {
        // Free lists whose zone lines were cut out of the paste: judged from the lists alone.
        let cut = inc.zones.iter().all(|z| z.min_kb.is_none())
            && inc.zones.iter().any(|z| !z.free_blocks.is_empty());
        return ZoneSource {
            zones: inc.zones.clone(),
            state: None,
            label: Some("mem_info".into()),
            line: Some(inc.line),
            note: if cut {
                "the report's zone lines (free, min) are not in the log, only its free lists: "
                    .to_string()
            } else {
                String::new()
            },
            likely: cut,
            no_watermarks: cut,
        };
    }
    if let Some(b) = &inc.evidence.borrowed {
        let tied = inc.oom_kill.as_ref().is_some_and(|o| o.line == b.line);
        let what = match (b.trigger, tied) {
            (Trigger::OomKiller, true) => "the OOM-killer report it invoked".to_string(),
            (Trigger::OomKiller, false) => format!("the OOM-killer report of {}", b.comm),
            (Trigger::AllocationFailure, _) => {
                format!("the page allocation failure of {}", b.comm)
            }
        };
        let when = match b.seconds {
            Some(s) if s.abs() < 0.0005 => " (same time)".to_string(),
            Some(s) if s > 0.0 => format!(" ({s:.3} s later)"),
            Some(s) => format!(" ({:.3} s earlier)", -s),
            None => String::new(),
        };
        return ZoneSource {
            zones: b.zones.clone(),
            state: None,
            label: Some("borrowed_mem_info".into()),
            line: Some(b.line),
            note: format!(
                "no Mem-Info in this report; borrowed from {what} at line {}{when}: ",
                b.line
            ),
            likely: !tied,
            no_watermarks: false,
        };
    }
    if let Some(d) = &inc.evidence.dump {
        let when = match d.seconds {
            Some(s) if s >= 0.0 => format!("taken {s:.0} s after the failure"),
            Some(s) => format!("taken {:.0} s before the failure", -s),
            None => "its time relative to the failure is unknown".to_string(),
        };
        let kinds = d.dump.kinds();
        let cannot = if d.dump.has_watermarks() {
            String::new()
        } else {
            format!(
                "; {kinds} has no watermarks, so whether free memory was above min is not known"
            )
        };
        return ZoneSource {
            zones: Vec::new(),
            state: Some(d.dump.zone_state()),
            label: Some(kinds.clone()),
            line: Some(d.dump.line),
            note: format!(
                "no Mem-Info in the log for this failure; zone state from the {kinds} dump at lines {}-{} ({when}{cannot}): ",
                d.dump.line, d.dump.last_line
            ),
            likely: true,
            no_watermarks: !d.dump.has_watermarks(),
        };
    }
    ZoneSource {
        zones: Vec::new(),
        state: None,
        label: None,
        line: None,
        note: String::new(),
        likely: false,
        no_watermarks: false,
    }
}

/// The Mem-Info zones as a [`ZoneState`] in pages of the log's own page size, so the live verdict
/// code judges them. Free blocks only in lists the request may not use do not count.
fn zone_state(zones: &[LogZone], access: Option<Access>, check: WatermarkCheck) -> ZoneState {
    let page_kb = zones.iter().find_map(|z| z.page_kb).unwrap_or(4).max(1);
    let _ = check;
    let mut state = ZoneState {
        page_size: page_kb.saturating_mul(1024),
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
                free_blocks: usable_blocks(z, access, true),
                free_by_migratetype: Vec::new(),
                free_cma_pages: z.free_cma_kb.map(|k| k / page_kb),
                highatomic_pages: z.reserved_highatomic_kb.map(|k| k / page_kb),
            })
            .collect(),
    };
    state.infer_indices();
    state
}

fn judge(
    inc: &Incident,
    state: &ZoneState,
    source: &ZoneSource,
    preferred: Option<&str>,
    access: Access,
    check: WatermarkCheck,
) -> Verdict {
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
            reason: "the log has no Mem-Info zone figures for this failure (free, min, free lists), nor a buddyinfo/zoneinfo/pagetypeinfo dump near it"
                .into(),
            zone: None,
        };
    }
    if source.no_watermarks {
        return judge_without_watermarks(order, state, preferred);
    }
    let v = verdict::judge_with(order, preferred, access, state, None, check);
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

/// Free lists without watermarks (a buddyinfo or pagetypeinfo dump): no block of the order in
/// any zone the request may fall back to is fragmentation when the kernel's fragmentation index
/// says so, exhaustion when it says the zone lacks memory.
fn judge_without_watermarks(order: u32, state: &ZoneState, preferred: Option<&str>) -> Verdict {
    let preferred = preferred.unwrap_or("Normal");
    let rank = |name: &str| {
        ["DMA", "DMA32", "Normal", "HighMem", "Movable"]
            .iter()
            .position(|z| *z == name)
    };
    let limit = rank(preferred).unwrap_or(2);
    // DMA's lowmem reserve against higher zones (in zoneinfo, not here) nearly always exceeds
    // its few MB: it serves only requests that ask for it, or when it is the only zone.
    let higher = state.zones.iter().any(|z| z.zone != "DMA");
    let skip_dma = higher && limit > 1;
    let candidates: Vec<&Zone> = state
        .zones
        .iter()
        .filter(|z| rank(&z.zone).is_some_and(|r| r <= limit))
        .filter(|z| !(skip_dma && z.zone == "DMA"))
        .collect();
    let dma_note = if skip_dma && state.zones.iter().any(|z| z.zone == "DMA") {
        "; DMA is left out: its lowmem reserve against higher zones, which this dump does not show, normally exceeds its free memory"
    } else {
        ""
    };
    let Some(main) = candidates
        .iter()
        .rev()
        .find(|z| !z.free_blocks.is_empty())
        .copied()
    else {
        return Verdict {
            kind: VerdictKind::Unknown,
            reason: "the dump has no free lists for the zones this request may use".into(),
            zone: None,
        };
    };
    let figures = verdict::ZoneFigures {
        node: main.node,
        zone: main.zone.clone(),
        free_kb: None,
        min_kb: None,
        largest_free_order: main.largest_free_order(),
        fragmentation_index: Some(index::fragmentation_index(
            order,
            &index::contig_info(&main.free_blocks, order),
        )),
    };
    if let Some(z) = candidates
        .iter()
        .find(|z| z.largest_free_order().is_some_and(|o| o >= order))
    {
        return Verdict {
            kind: VerdictKind::Unknown,
            reason: format!(
                "{} had free blocks of order {} or larger when the dump was taken, so the dump does not show why the order-{order} request failed{dma_note}",
                z.label(),
                order
            ),
            zone: Some(figures),
        };
    }
    let free_pages: u64 = candidates
        .iter()
        .flat_map(|z| z.free_blocks.iter().enumerate())
        .map(|(o, n)| n.saturating_mul(1u64 << o.min(40)))
        .fold(0, u64::saturating_add);
    let frag = figures.fragmentation_index.unwrap_or(0);
    let kind = if frag > 500 {
        VerdictKind::Fragmentation
    } else {
        VerdictKind::Exhaustion
    };
    Verdict {
        kind,
        reason: format!(
            "no zone the request may use has a free block of order {order} or larger ({} largest: order {}; {free_pages} pages free in the free lists of {}); fragmentation index {} {} 0.500, so the kernel would call it {}{dma_note}",
            main.label(),
            opt(main.largest_free_order()),
            candidates
                .iter()
                .map(|z| z.zone.as_str())
                .collect::<Vec<_>>()
                .join("/"),
            index::format_thousandths(frag, 1),
            if frag > 500 { ">" } else { "<=" },
            if frag > 500 {
                "fragmentation"
            } else {
                "a lack of memory"
            }
        ),
        zone: Some(figures),
    }
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

    fn reports(fixture: &str) -> Vec<Report> {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/logs")
            .join(fixture);
        let text = std::fs::read_to_string(path).unwrap();
        crate::offline::analyze_text(&text)
            .iter()
            .map(Report::new)
            .collect()
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

    /// Seed 000 whole: failure lines without Mem-Info, dockerd/kubelet errors, a buddyinfo paste.
    #[test]
    fn seed_000_article_links_runtime_errors_and_the_buddyinfo_paste() {
        let r = reports("tke-article-mixed-evidence.log");
        let comms: Vec<&str> = r.iter().map(|r| r.json.comm.as_str()).collect();
        assert_eq!(comms, ["mysqld", "runc:[1:CHILD]"]);
        let runc = &r[1].json;
        assert_eq!(runc.pods, ["matchdataserver-1255064836-t4b2w"]);
        assert!(
            runc.containers == ["5b9be8c5bb121264899fac8d9d36b02150269d41ce96ba6ad36d70b8640cb01c"],
            "{:?}",
            runc.containers
        );
        assert!(runc.runtime.iter().all(|l| l.linked_by == "position"));
        assert!(
            runc.runtime
                .iter()
                .any(|l| l.what.contains("exit status 6"))
        );
        assert!(
            r[0].json.runtime.is_empty(),
            "the runtime lines follow runc's failure: {:?}",
            r[0].json
                .runtime
                .iter()
                .map(|l| (l.line, &l.what))
                .collect::<Vec<_>>()
        );
        for j in [&r[0].json, runc] {
            assert_eq!(j.zone_state_source.as_deref(), Some("buddyinfo"));
            assert_eq!(j.verdict, VerdictKind::Fragmentation, "{}", j.reason);
            assert_eq!(j.confidence, Some("likely"));
            assert!(
                j.reason
                    .contains("its time relative to the failure is unknown"),
                "{}",
                j.reason
            );
            assert!(
                j.reason.contains("buddyinfo has no watermarks"),
                "{}",
                j.reason
            );
            assert_eq!(j.largest_free_order, Some(3));
        }
        let text = r[1].text();
        assert!(
            text.contains("pod matchdataserver-1255064836-t4b2w, container 5b9be8c5bb12…"),
            "{text}"
        );
    }

    #[test]
    fn the_whole_seed_article_parses_too() {
        let text = include_str!("../../tests/fixtures/logs/rhel7-3.10-netns-fragmentation.log");
        let article = format!("# notes\n\n```sh\n{text}```\n\nSome prose: Node 0 DMA free:1kB\n");
        let r: Vec<Report> = crate::offline::analyze_text(&article)
            .iter()
            .map(Report::new)
            .collect();
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
        // Printed 0.2 s after tuned's report, in the same flood: its Mem-Info is borrowed.
        assert_eq!(
            second.zone_state_source.as_deref(),
            Some("borrowed_mem_info")
        );
        assert_eq!(second.zone_state_line, Some(r[0].json.line));
        assert!(
            second
                .reason
                .starts_with("no Mem-Info in this report; borrowed from the page allocation failure of tuned at line"),
            "{}",
            second.reason
        );
        assert_eq!(second.verdict, VerdictKind::Exhaustion, "{}", second.reason);
        assert_eq!(second.confidence, Some("likely"));
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

    /// A crafted report with numbers at u64's limit: a verdict, no overflow (debug builds panic
    /// on overflow, so `cargo test` without --release checks this too).
    #[test]
    fn crafted_huge_numbers_do_not_overflow() {
        let max = u64::MAX;
        let text = format!(
            "[1.0] x: page allocation failure: order:63, mode:0xffffffffffffffff\n\
             [1.0] CPU: 0 PID: 1 Comm: x Not tainted 3.10.0 #1\n\
             [1.0] Node 0 DMA32 free:{max}kB min:{max}kB low:{max}kB high:{max}kB managed:{max}kB free_cma:{max}kB\n\
             [1.0] lowmem_reserve[]: 0 {max} {max} {max}\n\
             [1.0] Node 0 Normal free:{max}kB min:0kB low:0kB high:0kB reserved_highatomic:{max}KB\n\
             [1.0] lowmem_reserve[]: 0 0 0 0\n\
             [1.0] Node 0 DMA32: {max}*4kB (UMEHC) {max}*9223372036854775808kB (H) = {max}kB\n\
             [1.0] Node 0 Normal: {max}*4kB (U) {max}*8kB (C) {max}*16kB (I) = {max}kB\n"
        );
        for inc in crate::offline::analyze_text(&text) {
            let r = Report::new(&inc);
            assert!(!r.json.reason.is_empty());
            let _ = r.text();
        }
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
