//! Why an allocation of a given order failed, judged against the zone state (and the task's
//! memory cgroup when known), with a one-line reason that carries the numbers.
//!
//! The model follows the kernel's own check (`__zone_watermark_ok`): a zone can serve an
//! order-N request when its free pages minus (2^N - 1) stay above `min + lowmem_reserve` for the
//! request's preferred zone, and it has a free block of order N or larger.
use serde::Serialize;

use super::{Zone, ZoneState, index, memcg::MemcgUsage};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum VerdictKind {
    /// The task's memory cgroup was at its limit.
    MemcgLimit,
    /// Free memory above the min watermark, but no free block of the order or larger.
    Fragmentation,
    /// Free memory at or below the min watermark.
    Exhaustion,
    /// Not enough evidence; the reason says what is missing.
    Unknown,
}

impl VerdictKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::MemcgLimit => "memcg_limit",
            Self::Fragmentation => "fragmentation",
            Self::Exhaustion => "exhaustion",
            Self::Unknown => "unknown",
        }
    }
}

/// The figures of the zone a verdict is about (the request's preferred zone).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ZoneFigures {
    pub node: u32,
    pub zone: String,
    pub free_kb: Option<u64>,
    pub min_kb: Option<u64>,
    pub largest_free_order: Option<u32>,
    /// The fragmentation index for the requested order, in thousandths (-1000: a block exists).
    pub fragmentation_index: Option<i64>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Verdict {
    pub kind: VerdictKind,
    pub reason: String,
    pub zone: Option<ZoneFigures>,
}

/// Judges an order-`order` failure whose preferred zone is the highest ordinary zone (Normal,
/// else the highest non-Movable zone): what a GFP_KERNEL request gets.
#[allow(dead_code, reason = "API for the live tracer (issue #5 wiring)")]
pub fn judge(order: u32, zone_state: &ZoneState, memcg: Option<&MemcgUsage>) -> Verdict {
    judge_in(order, None, zone_state, memcg)
}

/// As [`judge`], with the preferred zone named (from the request's gfp zone bits).
pub fn judge_in(
    order: u32,
    preferred: Option<&str>,
    zone_state: &ZoneState,
    memcg: Option<&MemcgUsage>,
) -> Verdict {
    let request_bytes = zone_state.page_size.saturating_mul(1u64 << order.min(40));
    if let Some(m) = memcg
        && let Some(reason) = m.limit_reason(request_bytes)
    {
        return Verdict {
            kind: VerdictKind::MemcgLimit,
            reason,
            zone: None,
        };
    }
    let preferred = preferred
        .map(str::to_string)
        .or_else(|| default_preferred(zone_state));
    let Some(preferred) = preferred else {
        return unknown("no zone state (no buddyinfo/zoneinfo or Mem-Info in the input)");
    };
    let preferred = highest_present_zone(zone_state, preferred);
    // The preferred zone of each node, and every zone the allocator may fall back to.
    let targets: Vec<&Zone> = zone_state
        .zones
        .iter()
        .filter(|z| z.zone == preferred)
        .collect();
    let Some(main) = targets
        .iter()
        .max_by_key(|z| z.free_pages.unwrap_or(0))
        .copied()
    else {
        return unknown(&format!("no {preferred} zone in the zone state"));
    };
    let figures = figures(main, order, zone_state);
    let (Some(free), Some(min)) = (main.free_pages, main.min_pages) else {
        return Verdict {
            kind: VerdictKind::Unknown,
            reason: format!("{}: free or min watermark missing", main.label()),
            zone: Some(figures),
        };
    };
    if main.free_blocks.is_empty() {
        return Verdict {
            kind: VerdictKind::Unknown,
            reason: format!("{}: no free list per order", main.label()),
            zone: Some(figures),
        };
    }

    let candidates = fallback_zones(zone_state, &targets);
    let checks: Vec<(&Zone, ZoneCheck)> = candidates
        .iter()
        .map(|z| (*z, check(z, order, &targets)))
        .collect();
    if let Some((zone, _)) = checks
        .iter()
        .find(|(_, c)| c.above_watermark && c.has_block)
    {
        return Verdict {
            kind: VerdictKind::Unknown,
            reason: format!(
                "{} could serve an order-{order} request in this state (largest free order {}, \
                 {} kB free); the failure came from a constraint not visible here (cpuset, \
                 nodemask, __GFP_THISNODE, migratetype) or the state changed since",
                zone.label(),
                fmt_order(zone.largest_free_order()),
                zone_state.kb(zone.free_pages.unwrap_or(0)),
            ),
            zone: Some(figures),
        };
    }
    let kb = |p| zone_state.kb(p);
    let block_kb = kb(1u64 << order.min(40));
    if checks.iter().any(|(_, c)| c.above_watermark) {
        let frag = figures.fragmentation_index.unwrap_or(0);
        let threshold = zone_state.threshold();
        let index_note = if frag > i64::from(threshold) {
            format!(
                "fragmentation index {} > extfrag_threshold {threshold}",
                index::format_thousandths(frag, 1)
            )
        } else {
            format!(
                "fragmentation index {} <= extfrag_threshold {threshold}, so the kernel \
                 reclaims rather than compacts",
                index::format_thousandths(frag, 1)
            )
        };
        return Verdict {
            kind: VerdictKind::Fragmentation,
            reason: format!(
                "{}: {} kB free > {} kB min, but the largest free block is order {} ({}) < \
                 order {order} ({block_kb} kB); {index_note}",
                main.label(),
                kb(free),
                kb(min),
                fmt_order(main.largest_free_order()),
                main.largest_free_order()
                    .map(|o| format!("{} kB", kb(1u64 << o)))
                    .unwrap_or_else(|| "none".into()),
            ),
            zone: Some(figures),
        };
    }
    Verdict {
        kind: VerdictKind::Exhaustion,
        reason: format!(
            "{}: {} kB free <= {} kB min (+ {} kB order-{order} request){}",
            main.label(),
            kb(free),
            kb(min),
            block_kb,
            lower_zones_note(&checks, main, zone_state),
        ),
        zone: Some(figures),
    }
}

fn unknown(reason: &str) -> Verdict {
    Verdict {
        kind: VerdictKind::Unknown,
        reason: reason.to_string(),
        zone: None,
    }
}

fn fmt_order(order: Option<u32>) -> String {
    order.map_or_else(|| "none".to_string(), |o| o.to_string())
}

/// "Normal" when present, else the highest zone that is not Movable or Device.
fn default_preferred(state: &ZoneState) -> Option<String> {
    if state.zones.iter().any(|z| z.zone == "Normal") {
        return Some("Normal".to_string());
    }
    state
        .zones
        .iter()
        .filter(|z| z.zone != "Movable" && z.zone != "Device")
        .max_by_key(|z| z.index.unwrap_or(0))
        .map(|z| z.zone.clone())
}

/// Zone types in index order (include/linux/mmzone.h).
const ZONE_ORDER: [&str; 6] = ["DMA", "DMA32", "Normal", "HighMem", "Movable", "Device"];

/// The zone a request with this preferred zone type really starts from: the type itself when
/// populated, else the highest populated type below it. A machine with 2 GB or less has no
/// Normal zone on x86-64, so a GFP_KERNEL request is served from DMA32 (the zonelist holds
/// only populated zones).
fn highest_present_zone(state: &ZoneState, preferred: String) -> String {
    if state.zones.iter().any(|z| z.zone == preferred) {
        return preferred;
    }
    let Some(rank) = ZONE_ORDER.iter().position(|z| *z == preferred) else {
        return preferred;
    };
    ZONE_ORDER[..rank]
        .iter()
        .rev()
        .find(|name| state.zones.iter().any(|z| z.zone == **name))
        .map_or(preferred, |name| (*name).to_string())
}

/// Zones listed before the preferred zone in the same node are its fallbacks (zones are listed
/// in index order, in /proc and in Mem-Info alike).
fn fallback_zones<'a>(state: &'a ZoneState, targets: &[&Zone]) -> Vec<&'a Zone> {
    let mut out = Vec::new();
    for target in targets {
        for z in state.zones.iter().filter(|z| z.node == target.node) {
            out.push(z);
            if z.zone == target.zone {
                break;
            }
        }
    }
    out
}

struct ZoneCheck {
    above_watermark: bool,
    has_block: bool,
}

/// `__zone_watermark_ok` without the migratetype and ALLOC_* refinements.
fn check(zone: &Zone, order: u32, targets: &[&Zone]) -> ZoneCheck {
    let free = zone.free_pages.unwrap_or(0);
    let min = zone.min_pages.unwrap_or(0);
    let reserve = targets
        .iter()
        .find(|t| t.node == zone.node)
        .map(|t| lowmem_reserve(zone, t))
        .unwrap_or(0);
    let needed = (1u64 << order.min(40)) - 1;
    ZoneCheck {
        above_watermark: zone.free_pages.is_some() && free.saturating_sub(needed) > min + reserve,
        has_block: zone.largest_free_order().is_some_and(|o| o >= order),
    }
}

/// `zone->lowmem_reserve[zone_idx(preferred)]`. Without a known index (a log whose reserve
/// arrays did not reveal it) the largest entry: the reserve against the highest zone.
fn lowmem_reserve(zone: &Zone, preferred: &Zone) -> u64 {
    if zone.zone == preferred.zone {
        return 0;
    }
    match preferred.index {
        Some(i) => zone.protection.get(i).copied().unwrap_or(0),
        None => zone.protection.iter().copied().max().unwrap_or(0),
    }
}

fn figures(zone: &Zone, order: u32, state: &ZoneState) -> ZoneFigures {
    let frag = (!zone.free_blocks.is_empty())
        .then(|| index::fragmentation_index(order, &index::contig_info(&zone.free_blocks, order)));
    ZoneFigures {
        node: zone.node,
        zone: zone.zone.clone(),
        free_kb: zone.free_pages.map(|p| state.kb(p)),
        min_kb: zone.min_pages.map(|p| state.kb(p)),
        largest_free_order: zone.largest_free_order(),
        fragmentation_index: frag,
    }
}

fn lower_zones_note(checks: &[(&Zone, ZoneCheck)], main: &Zone, state: &ZoneState) -> String {
    let others: Vec<String> = checks
        .iter()
        .filter(|(z, _)| !std::ptr::eq(*z, main))
        .map(|(z, _)| {
            format!(
                "{} {} kB free, {} kB min + {} kB reserve",
                z.label(),
                state.kb(z.free_pages.unwrap_or(0)),
                state.kb(z.min_pages.unwrap_or(0)),
                state.kb(checks
                    .iter()
                    .find(|(t, _)| t.zone == main.zone && t.node == z.node)
                    .map(|(t, _)| lowmem_reserve(z, t))
                    .unwrap_or(0)),
            )
        })
        .collect();
    if others.is_empty() {
        String::new()
    } else {
        format!(
            "; fallbacks below their watermarks too: {}",
            others.join(", ")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Seed 002's Mem-Info (3.10.0-514.el7), in 4 kB pages.
    fn seed_002() -> ZoneState {
        let zone = |name: &str, free_kb: u64, min_kb: u64, prot: Vec<u64>, blocks: Vec<u64>| Zone {
            node: 0,
            zone: name.into(),
            free_pages: Some(free_kb / 4),
            min_pages: Some(min_kb / 4),
            protection: prot,
            free_blocks: blocks,
            ..Default::default()
        };
        ZoneState {
            page_size: 4096,
            pageblock_order: None,
            extfrag_threshold: None,
            zones: vec![
                zone(
                    "DMA",
                    15908,
                    64,
                    vec![0, 2815, 15868, 15868],
                    vec![1, 0, 0, 1, 2, 1, 1, 0, 1, 1, 3],
                ),
                zone(
                    "DMA32",
                    127248,
                    11976,
                    vec![0, 0, 13053, 13053],
                    vec![19160, 6346, 35, 7, 0, 0, 0, 0, 0, 0, 0],
                ),
                zone(
                    "Normal",
                    311184,
                    55536,
                    vec![0, 0, 0, 0],
                    vec![34178, 20118, 412, 115, 46, 6, 0, 0, 0, 0, 0],
                ),
            ],
        }
    }

    #[test]
    fn seed_002_is_fragmentation() {
        let v = judge(6, &seed_002(), None);
        assert_eq!(v.kind, VerdictKind::Fragmentation, "{}", v.reason);
        assert!(
            v.reason.contains("311184 kB free > 55536 kB min"),
            "{}",
            v.reason
        );
        assert!(v.reason.contains("order 5 (128 kB)"), "{}", v.reason);
        assert!(
            v.reason.contains("0.978 > extfrag_threshold 500"),
            "{}",
            v.reason
        );
        let z = v.zone.unwrap();
        assert_eq!((z.zone.as_str(), z.largest_free_order), ("Normal", Some(5)));
    }

    #[test]
    fn dma_reserve_keeps_dma_out() {
        // DMA has order-10 blocks, but its lowmem reserve against Normal (15868 pages) exceeds
        // its free pages; without the reserve this would wrongly be "unknown".
        let mut state = seed_002();
        state.zones[0].protection = vec![0, 0, 0, 0];
        assert_eq!(judge(6, &state, None).kind, VerdictKind::Unknown);
    }

    #[test]
    fn below_min_is_exhaustion() {
        let mut state = seed_002();
        state.zones[2].free_pages = Some(40000 / 4);
        state.zones[1].free_pages = Some(10000 / 4);
        let v = judge(0, &state, None);
        assert_eq!(v.kind, VerdictKind::Exhaustion, "{}", v.reason);
        assert!(
            v.reason
                .starts_with("Node 0 Normal: 40000 kB free <= 55536 kB min")
        );
    }

    #[test]
    fn memcg_at_limit_comes_first() {
        let m = MemcgUsage {
            path: "/kubepods/pod1".into(),
            version: 2,
            usage_bytes: 100 << 20,
            limit_bytes: Some(100 << 20),
            failcnt: None,
            events_max: Some(3),
            events_oom: None,
            events_oom_kill: None,
            read_in_kernel: None,
        };
        let v = judge(6, &seed_002(), Some(&m));
        assert_eq!(v.kind, VerdictKind::MemcgLimit);
        assert!(v.reason.contains("max 3"), "{}", v.reason);
    }

    #[test]
    fn empty_state_is_unknown() {
        let state = ZoneState {
            page_size: 4096,
            pageblock_order: None,
            extfrag_threshold: None,
            zones: vec![],
        };
        assert_eq!(judge(3, &state, None).kind, VerdictKind::Unknown);
    }

    /// No Normal zone (x86-64 with 2 GB or less): a Normal request starts from DMA32.
    #[test]
    fn missing_preferred_zone_falls_back_to_the_highest_lower_zone() {
        let zone = |name: &str, free: u64, min: u64| Zone {
            node: 0,
            zone: name.into(),
            free_pages: Some(free),
            min_pages: Some(min),
            free_blocks: vec![free],
            ..Default::default()
        };
        let state = ZoneState {
            page_size: 4096,
            pageblock_order: None,
            extfrag_threshold: None,
            zones: vec![
                Zone {
                    protection: vec![0, 200, 200],
                    ..zone("DMA", 100, 10)
                },
                zone("DMA32", 352, 354),
            ],
        };
        let v = judge_in(0, Some("Normal"), &state, None);
        assert_eq!(v.kind, VerdictKind::Exhaustion, "{}", v.reason);
        assert_eq!(v.zone.unwrap().zone, "DMA32");
        assert_eq!(highest_present_zone(&state, "HighMem".into()), "DMA32");
        assert_eq!(highest_present_zone(&state, "DMA".into()), "DMA");
        assert_eq!(highest_present_zone(&state, "Weird".into()), "Weird");
    }
}
