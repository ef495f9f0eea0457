//! `fragtrace snapshot`: one table per node and zone (free memory, watermarks, free blocks per
//! order and migratetype, the kernel's indices) and a one-line verdict per zone.
use std::{fmt::Write as _, process::ExitCode};

use anyhow::Result;
use serde::Serialize;

use super::{Zone, ZoneState, index};

/// The pageblock order when pagetypeinfo is not readable (x86_64, arm64 with 4 kB pages).
const DEFAULT_PAGEBLOCK_ORDER: u32 = 9;

#[derive(clap::Args, Debug)]
pub struct SnapshotArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: SnapshotArgs) -> Result<ExitCode> {
    let state = ZoneState::read()?;
    let out = if args.json {
        serde_json::to_string(&SnapshotJson::new(&state))? + "\n"
    } else {
        render_text(&state)
    };
    crate::sink::print_whole(&out)
}

/// A zone's state in one line: `ok`, `fragmentation` or `exhaustion`, with the numbers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ZoneVerdict {
    pub verdict: &'static str,
    pub reason: String,
}

/// `exhaustion` at or below min; `fragmentation` above min without a free pageblock-sized block
/// (what compaction and THP work with); otherwise `ok`.
pub fn zone_verdict(zone: &Zone, state: &ZoneState) -> ZoneVerdict {
    let kb = |p| state.kb(p);
    let (Some(free), Some(min)) = (zone.free_pages, zone.min_pages) else {
        return ZoneVerdict {
            verdict: "unknown",
            reason: "no free or min figure in zoneinfo".into(),
        };
    };
    if free <= min {
        return ZoneVerdict {
            verdict: "exhaustion",
            reason: format!("{} kB free <= {} kB min", kb(free), kb(min)),
        };
    }
    let pageblock = state.pageblock_order.unwrap_or(DEFAULT_PAGEBLOCK_ORDER);
    let largest = zone.largest_free_order();
    let largest_text = largest.map_or_else(
        || "no free block".to_string(),
        |o| format!("largest free block order {o} ({} kB)", kb(1u64 << o)),
    );
    let threshold = state.threshold();
    let (_, frag) = index::indices(&zone.free_blocks);
    let over = frag
        .iter()
        .position(|&i| i > i64::from(threshold))
        .map(|o| {
            format!(
                "; orders >= {o} fail for fragmentation (index {} > extfrag_threshold {threshold})",
                index::format_thousandths(frag[o], 1)
            )
        })
        .unwrap_or_default();
    if largest.is_none_or(|o| o < pageblock) {
        ZoneVerdict {
            verdict: "fragmentation",
            reason: format!(
                "{} kB free > {} kB min, but {largest_text} < pageblock order {pageblock}{over}",
                kb(free),
                kb(min)
            ),
        }
    } else {
        ZoneVerdict {
            verdict: "ok",
            reason: format!(
                "{largest_text}; {} kB free > {} kB min{over}",
                kb(free),
                kb(min)
            ),
        }
    }
}

/// `fragtrace snapshot --json`, and the zone state in the live summary.
#[derive(Serialize)]
pub struct SnapshotJson<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    page_size: u64,
    pageblock_order: Option<u32>,
    extfrag_threshold: Option<u32>,
    zones: Vec<ZoneJson<'a>>,
}

#[derive(Serialize)]
pub struct ZoneJson<'a> {
    node: u32,
    zone: &'a str,
    free_kb: Option<u64>,
    min_kb: Option<u64>,
    low_kb: Option<u64>,
    high_kb: Option<u64>,
    managed_kb: Option<u64>,
    free_blocks: &'a [u64],
    free_by_migratetype: serde_json::Map<String, serde_json::Value>,
    largest_free_order: Option<u32>,
    unusable_index: Vec<f64>,
    extfrag_index: Vec<f64>,
    verdict: &'static str,
    reason: String,
}

impl<'a> SnapshotJson<'a> {
    pub fn new(state: &'a ZoneState) -> Self {
        let zones = state
            .zones
            .iter()
            .map(|z| {
                let (unusable, frag) = index::indices(&z.free_blocks);
                let v = zone_verdict(z, state);
                ZoneJson {
                    node: z.node,
                    zone: &z.zone,
                    free_kb: z.free_pages.map(|p| state.kb(p)),
                    min_kb: z.min_pages.map(|p| state.kb(p)),
                    low_kb: z.low_pages.map(|p| state.kb(p)),
                    high_kb: z.high_pages.map(|p| state.kb(p)),
                    managed_kb: z.managed_pages.map(|p| state.kb(p)),
                    free_blocks: &z.free_blocks,
                    free_by_migratetype: z
                        .free_by_migratetype
                        .iter()
                        .map(|(t, c)| (t.clone(), serde_json::json!(c)))
                        .collect(),
                    largest_free_order: z.largest_free_order(),
                    unusable_index: unusable.into_iter().map(index::as_fraction).collect(),
                    extfrag_index: frag.into_iter().map(index::as_fraction).collect(),
                    verdict: v.verdict,
                    reason: v.reason,
                }
            })
            .collect();
        Self {
            kind: "snapshot",
            page_size: state.page_size,
            pageblock_order: state.pageblock_order,
            extfrag_threshold: state.extfrag_threshold,
            zones,
        }
    }
}

/// The human tables.
pub fn render_text(state: &ZoneState) -> String {
    let mut out = String::new();
    let threshold = match state.extfrag_threshold {
        Some(t) => t.to_string(),
        None => format!(
            "{} (default; not readable)",
            super::DEFAULT_EXTFRAG_THRESHOLD
        ),
    };
    let _ = writeln!(
        out,
        "page size {} B, extfrag_threshold {threshold}",
        state.page_size
    );
    for z in &state.zones {
        let kb = |p: Option<u64>| p.map_or("?".to_string(), |p| state.kb(p).to_string());
        let _ = writeln!(
            out,
            "\n{}: free {} kB, min {} / low {} / high {} kB, managed {} kB",
            z.label(),
            kb(z.free_pages),
            kb(z.min_pages),
            kb(z.low_pages),
            kb(z.high_pages),
            kb(z.managed_pages),
        );
        let row = |label: &str, cells: Vec<String>| {
            let mut line = format!("  {label:<12}");
            for c in cells {
                let _ = write!(line, "{c:>7}");
            }
            line + "\n"
        };
        out += &row(
            "order",
            (0..z.free_blocks.len()).map(|o| o.to_string()).collect(),
        );
        out += &row(
            "free blocks",
            z.free_blocks.iter().map(u64::to_string).collect(),
        );
        for (t, counts) in &z.free_by_migratetype {
            out += &row(
                &format!(" {t}"),
                counts.iter().map(u64::to_string).collect(),
            );
        }
        let (unusable, frag) = index::indices(&z.free_blocks);
        out += &row(
            "unusable",
            unusable
                .iter()
                .map(|&i| index::format_thousandths(i, 1))
                .collect(),
        );
        out += &row(
            "extfrag",
            frag.iter()
                .map(|&i| index::format_thousandths(i, 1))
                .collect(),
        );
        let v = zone_verdict(z, state);
        let _ = writeln!(out, "  verdict: {} ({})", v.verdict, v.reason);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::zones::{procfs, tests::captured_6_18 as fixture_state};

    #[test]
    fn healthy_machine_is_ok() {
        let state = fixture_state();
        let v = zone_verdict(&state.zones[2], &state);
        assert_eq!(v.verdict, "ok", "{}", v.reason);
        let text = render_text(&state);
        assert!(text.contains("Node 0 Normal: free"));
        assert!(text.contains(" Movable"));
        let json: serde_json::Value =
            serde_json::from_str(&serde_json::to_string(&SnapshotJson::new(&state)).unwrap())
                .unwrap();
        assert_eq!(json["zones"][0]["extfrag_index"][0], -1.0);
        assert_eq!(
            json["zones"][2]["free_by_migratetype"]["Movable"]
                .as_array()
                .unwrap()
                .len(),
            11
        );
    }

    #[test]
    fn seed_buddyinfo_is_fragmentation() {
        let mut state = fixture_state();
        let seed = include_str!("../../tests/fixtures/proc/3.10-seed002/buddyinfo");
        state.zones[2].free_blocks = procfs::parse_buddyinfo(seed).unwrap()[2]
            .free_blocks
            .clone();
        let v = zone_verdict(&state.zones[2], &state);
        assert_eq!(v.verdict, "fragmentation", "{}", v.reason);
        assert!(
            v.reason.contains("largest free block order 3 (32 kB)"),
            "{}",
            v.reason
        );
    }
}
