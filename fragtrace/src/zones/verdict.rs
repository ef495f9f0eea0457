//! Why an allocation of a given order failed, judged against the zone state (and the task's
//! memory cgroup when known), with a one-line reason that carries the numbers.
//!
//! The model follows the kernel's own check (`__zone_watermark_ok`): a zone can serve an
//! order-N request when its free pages minus (2^N - 1) and minus the free pages it may not use
//! (CMA for non-movable requests, the highatomic reserve for requests without reserve rights)
//! stay above `min + lowmem_reserve` for the request's preferred zone, and one of the free lists
//! it may use holds a block of order N or larger. See [`Access`]. Kernels before 4.4 checked
//! differently ([`WatermarkCheck::PerOrder`]). Numbers come from logs too, so every sum
//! saturates instead of overflowing.
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

/// How the kernel that failed judged a zone in `__zone_watermark_ok`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum WatermarkCheck {
    /// 4.4 and later (commit 97a16fc82a7c): free pages above min + lowmem reserve, and a free
    /// block of the order in a list the request may use.
    #[default]
    FreeLists,
    /// Before 4.4: for each order below the request's, the free pages of that order are taken
    /// away and min is halved; what is left must stay above it. Blocks of the order can exist
    /// and the check still fail.
    PerOrder,
}

/// What the allocator lets one request use, from its gfp flags and migratetype
/// (mm/page_alloc.c: `gfp_to_alloc_flags`, `__zone_watermark_unusable_free`,
/// `__zone_watermark_ok`). The default is an ordinary sleeping, non-movable request such as
/// GFP_KERNEL.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Access {
    /// A movable request may use free pages in CMA pageblocks (ALLOC_CMA).
    pub cma: bool,
    /// `__GFP_HIGH`: the min watermark is halved (ALLOC_MIN_RESERVE, ALLOC_HIGH before 6.3).
    pub high: bool,
    /// Cannot sleep and not `__GFP_NOMEMALLOC` (ALLOC_NON_BLOCK; before 6.3, `__GFP_ATOMIC`
    /// gave ALLOC_HARDER): with `high`, min drops a further quarter; the highatomic reserve
    /// and, above order 0, the HighAtomic free lists become usable.
    pub atomic: bool,
}

impl Access {
    /// From a gfp mask, with `bit` giving the running kernel's value for a flag name (the
    /// tracefs print fmt table), so no bit layout is hard-coded.
    pub fn from_gfp(gfp: u64, movable: bool, bit: impl Fn(&str) -> Option<u64>) -> Self {
        let set = |name: &str| bit(name).is_some_and(|b| gfp & b != 0);
        // Kernels that still have __GFP_ATOMIC (before 6.3) key the atomic rights on it.
        let cannot_sleep = match bit("__GFP_ATOMIC") {
            Some(b) => gfp & b != 0,
            None => bit("__GFP_DIRECT_RECLAIM").is_some_and(|b| gfp & b == 0),
        };
        Self {
            cma: movable,
            high: set("__GFP_HIGH"),
            atomic: cannot_sleep && !set("__GFP_NOMEMALLOC"),
        }
    }

    /// From flag names as a kernel log prints them (`GFP_ATOMIC|__GFP_COMP`). Composite names
    /// hide bits, so only names that carry the rights count: `__GFP_HIGH` and `GFP_ATOMIC` for
    /// `high`, `GFP_ATOMIC` and `__GFP_ATOMIC` for `atomic`, `__GFP_MOVABLE` and the movable
    /// composites for `cma`.
    pub fn from_flag_names(names: &str) -> Self {
        let has = |wanted: &[&str]| names.split('|').any(|f| wanted.contains(&f.trim()));
        Self {
            cma: has(&[
                "__GFP_MOVABLE",
                "GFP_HIGHUSER_MOVABLE",
                "GFP_TRANSHUGE",
                "GFP_TRANSHUGE_LIGHT",
            ]),
            high: has(&["__GFP_HIGH", "GFP_ATOMIC"]),
            atomic: has(&["GFP_ATOMIC", "__GFP_ATOMIC"]) && !has(&["__GFP_NOMEMALLOC"]),
        }
    }

    /// Whether the request had any right to reserves below the min watermark.
    pub fn has_reserve_rights(self) -> bool {
        self.high || self.atomic
    }

    /// The min watermark this request is held to.
    fn min_watermark(self, min: u64) -> u64 {
        if !self.high {
            return min;
        }
        let min = min - min / 2;
        if self.atomic { min - min / 4 } else { min }
    }

    /// Free pages of `zone` that this request may not count: free CMA pages without ALLOC_CMA,
    /// free highatomic pages without reserve rights.
    fn unusable(self, zone: &Zone) -> Unusable {
        Unusable {
            cma: if self.cma {
                0
            } else {
                zone.free_cma_pages
                    .unwrap_or_else(|| zone.free_pages_of("CMA"))
            },
            highatomic: if self.has_reserve_rights() {
                0
            } else {
                zone.highatomic_pages
                    .unwrap_or_else(|| zone.free_pages_of("HighAtomic"))
            },
        }
    }

    /// Whether the free lists of `migratetype` can serve an order-`order` request.
    fn may_use(self, migratetype: &str, order: u32) -> bool {
        match migratetype {
            "Unmovable" | "Movable" | "Reclaimable" => true,
            "CMA" => self.cma,
            "HighAtomic" => self.atomic && order > 0,
            _ => false,
        }
    }

    /// The largest free block this request may take from `zone`: per migratetype when
    /// pagetypeinfo was read, else any free block (buddyinfo).
    fn largest_usable_order(self, zone: &Zone, order: u32) -> Option<u32> {
        if zone.free_by_migratetype.is_empty() {
            return zone.largest_free_order();
        }
        zone.free_by_migratetype
            .iter()
            .filter(|(mt, _)| self.may_use(mt, order))
            .filter_map(|(_, counts)| index::largest_free_order(counts))
            .max()
    }
}

/// Free pages a request may not count, by why.
#[derive(Clone, Copy, Default)]
struct Unusable {
    cma: u64,
    highatomic: u64,
}

impl Unusable {
    fn total(self) -> u64 {
        self.cma.saturating_add(self.highatomic)
    }
}

/// Judges an order-`order` failure whose preferred zone is the highest ordinary zone (Normal,
/// else the highest non-Movable zone): what a GFP_KERNEL request gets.
#[allow(dead_code, reason = "API for the live tracer (issue #5 wiring)")]
pub fn judge(order: u32, zone_state: &ZoneState, memcg: Option<&MemcgUsage>) -> Verdict {
    judge_in(order, None, Access::default(), zone_state, memcg)
}

/// As [`judge`], with the preferred zone named (from the request's gfp zone bits) and the
/// request's [`Access`].
pub fn judge_in(
    order: u32,
    preferred: Option<&str>,
    access: Access,
    zone_state: &ZoneState,
    memcg: Option<&MemcgUsage>,
) -> Verdict {
    judge_with(
        order,
        preferred,
        access,
        zone_state,
        memcg,
        WatermarkCheck::FreeLists,
    )
}

/// As [`judge_in`], the zones checked the way the failing kernel's generation checked them.
pub fn judge_with(
    order: u32,
    preferred: Option<&str>,
    access: Access,
    zone_state: &ZoneState,
    memcg: Option<&MemcgUsage>,
    model: WatermarkCheck,
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
        .map(|z| (*z, check(z, order, access, &targets, model)))
        .collect();
    // A zone that could serve it by a few pages only is within the noise of a /proc read
    // taken after the failure (DMA, held back by its lowmem reserve, sits right there).
    let serving = |c: &ZoneCheck| c.above_watermark && c.has_block;
    let marginal: Vec<String> = checks
        .iter()
        .filter(|(_, c)| serving(c) && c.within_noise)
        .map(|(z, c)| {
            format!(
                "; {} has a free block, but only {} page{} over its min + lowmem reserve, \
                 within the noise of a later read",
                z.label(),
                c.margin_pages,
                if c.margin_pages == 1 { "" } else { "s" }
            )
        })
        .collect();
    if let Some((zone, _)) = checks.iter().find(|(_, c)| serving(c) && !c.within_noise) {
        return Verdict {
            kind: VerdictKind::Unknown,
            reason: format!(
                "{} could serve an order-{order} request in this state (largest usable free \
                 order {}, {} kB free); the failure came from a constraint not visible here \
                 (cpuset, nodemask, __GFP_THISNODE, migratetype) or the state changed since",
                zone.label(),
                fmt_order(access.largest_usable_order(zone, order)),
                zone_state.kb(zone.free_pages.unwrap_or(0)),
            ),
            zone: Some(figures),
        };
    }
    let kb = |p| zone_state.kb(p);
    let block_kb = kb(1u64 << order.min(40));
    let min = access.min_watermark(min);
    let rights = rights_note(access);
    let largest = access.largest_usable_order(main, order);
    // Above the watermark with a usable block, but only by the noise of a read: the zone sat on
    // its watermark, which is exhaustion, not fragmentation.
    if !checks
        .iter()
        .any(|(_, c)| c.above_watermark && !c.has_block)
        && let Some((zone, c)) = checks.iter().find(|(_, c)| serving(c))
    {
        return Verdict {
            kind: VerdictKind::Exhaustion,
            reason: format!(
                "{}: {} kB free, only {} page{} over {} kB min{rights} + lowmem reserve: the zone \
                 was at its watermark{}",
                zone.label(),
                kb(zone.free_pages.unwrap_or(0)),
                c.margin_pages,
                if c.margin_pages == 1 { "" } else { "s" },
                kb(access.min_watermark(zone.min_pages.unwrap_or(0))),
                lower_zones_note(&checks, main, zone_state),
            ),
            zone: Some(figures),
        };
    }
    if checks.iter().any(|(_, c)| c.above_watermark) {
        let frag = figures.fragmentation_index.unwrap_or(0);
        let threshold = zone_state.threshold();
        let index_note = if frag == -1000 {
            "fragmentation index -1.000 (a free block of the order exists, so compaction is \
             not ruled out)"
                .to_string()
        } else if frag > i64::from(threshold) {
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
        let usable = if main.free_by_migratetype.is_empty() {
            "largest free block"
        } else {
            "largest free block it may use"
        };
        let main_check = checks
            .iter()
            .find(|(z, _)| std::ptr::eq(*z, main))
            .map(|(_, c)| c);
        if let Some(fail) = main_check.and_then(|c| c.per_order_failure)
            && largest.is_some_and(|l| l >= order)
        {
            return Verdict {
                kind: VerdictKind::Fragmentation,
                reason: format!(
                    "{}: {} kB free > {} kB min{rights} and free blocks of order {} exist, but \
                     this kernel's watermark check (before 4.4) fails at order {}: {} kB are \
                     left in blocks of that order or larger <= {} kB (min halved {} times); \
                     {index_note}{}",
                    main.label(),
                    kb(free),
                    kb(min),
                    fmt_order(largest),
                    fail.order,
                    kb(fail.left),
                    kb(fail.min),
                    fail.order,
                    marginal.concat(),
                ),
                zone: Some(figures),
            };
        }
        let per_order_note = match main_check.and_then(|c| c.per_order_failure) {
            Some(fail) => format!(
                " (this kernel's pre-4.4 watermark check fails at order {}: {} kB left in \
                 blocks of that order or larger <= {} kB)",
                fail.order,
                kb(fail.left),
                kb(fail.min)
            ),
            None => String::new(),
        };
        return Verdict {
            kind: VerdictKind::Fragmentation,
            reason: format!(
                "{}: {} kB free > {} kB min{rights}, but the {usable} is order {} ({}) < \
                 order {order} ({block_kb} kB){}{per_order_note}; {index_note}{}",
                main.label(),
                kb(free),
                kb(min),
                fmt_order(largest),
                largest
                    .map(|o| format!("{} kB", kb(1u64 << o)))
                    .unwrap_or_else(|| "none".into()),
                restricted_blocks_note(main, largest, order),
                marginal.concat(),
            ),
            zone: Some(figures),
        };
    }
    let unusable = access.unusable(main);
    let (counted, not_counted) = match unusable_note(unusable, zone_state) {
        Some(note) => (
            format!(
                "{} kB of {} kB free usable by this request",
                kb(free.saturating_sub(unusable.total())),
                kb(free)
            ),
            format!("; not usable: {note}"),
        ),
        None => (format!("{} kB free", kb(free)), String::new()),
    };
    Verdict {
        kind: VerdictKind::Exhaustion,
        reason: format!(
            "{}: {counted} <= {} kB min{rights} (+ {} kB order-{order} request){not_counted}{}",
            main.label(),
            kb(min),
            block_kb,
            lower_zones_note(&checks, main, zone_state),
        ),
        zone: Some(figures),
    }
}

/// " (halved for __GFP_HIGH)" when the request may dip below the min watermark.
fn rights_note(access: Access) -> &'static str {
    match (access.high, access.atomic) {
        (true, true) => " (lowered for an atomic __GFP_HIGH request)",
        (true, false) => " (halved for __GFP_HIGH)",
        _ => "",
    }
}

/// "204800 kB in CMA blocks (movable requests only)", or None when all free pages count.
fn unusable_note(unusable: Unusable, state: &ZoneState) -> Option<String> {
    let mut parts = Vec::new();
    if unusable.cma > 0 {
        parts.push(format!(
            "{} kB in CMA blocks (movable requests only)",
            state.kb(unusable.cma)
        ));
    }
    if unusable.highatomic > 0 {
        parts.push(format!(
            "{} kB in the highatomic reserve (atomic and __GFP_HIGH requests only)",
            state.kb(unusable.highatomic)
        ));
    }
    (!parts.is_empty()).then(|| parts.join(", "))
}

/// "; order-9 blocks are free only in the CMA lists" when buddyinfo shows larger blocks than the
/// request may take.
fn restricted_blocks_note(zone: &Zone, usable: Option<u32>, order: u32) -> String {
    let Some(any) = zone.largest_free_order() else {
        return String::new();
    };
    if usable.is_some_and(|u| u >= any) || any < order {
        return String::new();
    }
    let lists: Vec<&str> = zone
        .free_by_migratetype
        .iter()
        .filter(|(_, counts)| index::largest_free_order(counts).is_some_and(|o| o >= order))
        .map(|(mt, _)| mt.as_str())
        .collect();
    if lists.is_empty() {
        return String::new();
    }
    format!(
        " (order {any} blocks are free only in the {} lists, which this request may not use)",
        lists.join("/")
    )
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

/// The zone a request with this preferred zone type really starts from: the type itself when
/// populated, else the highest populated type below it. A machine with 2 GB or less has no
/// Normal zone on x86-64, so a GFP_KERNEL request is served from DMA32 (the zonelist holds
/// only populated zones).
fn highest_present_zone(state: &ZoneState, preferred: String) -> String {
    if state.zones.iter().any(|z| z.zone == preferred) {
        return preferred;
    }
    let Some(rank) = super::ZONE_TYPES.iter().position(|z| *z == preferred) else {
        return preferred;
    };
    super::ZONE_TYPES[..rank]
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

/// Where the pre-4.4 per-order check stopped: at `order`, `left` pages in blocks of that order or
/// larger were not above `min` (halved `order` times).
#[derive(Clone, Copy)]
struct PerOrderFailure {
    order: u32,
    left: u64,
    min: u64,
}

struct ZoneCheck {
    per_order_failure: Option<PerOrderFailure>,
    above_watermark: bool,
    has_block: bool,
    /// Free pages left over min + lowmem reserve after the request.
    margin_pages: u64,
    /// Above the watermark by less than 1% of min + reserve (or the request's size).
    within_noise: bool,
}

/// `__zone_watermark_ok` for a request with `access` (ALLOC_OOM and cpusets aside).
fn check(
    zone: &Zone,
    order: u32,
    access: Access,
    targets: &[&Zone],
    model: WatermarkCheck,
) -> ZoneCheck {
    let free = zone.free_pages.unwrap_or(0);
    let min = access.min_watermark(zone.min_pages.unwrap_or(0));
    let reserve = targets
        .iter()
        .find(|t| t.node == zone.node)
        .map(|t| lowmem_reserve(zone, t))
        .unwrap_or(0);
    let floor = min.saturating_add(reserve);
    let needed = ((1u64 << order.min(40)) - 1).saturating_add(access.unusable(zone).total());
    let margin_pages = free.saturating_sub(needed).saturating_sub(floor);
    let above_watermark = zone.free_pages.is_some() && free.saturating_sub(needed) > floor;
    let per_order_failure = match model {
        WatermarkCheck::PerOrder if above_watermark => per_order_check(zone, order, min),
        _ => None,
    };
    let has_block = match model {
        WatermarkCheck::FreeLists => access
            .largest_usable_order(zone, order)
            .is_some_and(|o| o >= order),
        WatermarkCheck::PerOrder => {
            per_order_failure.is_none()
                && access
                    .largest_usable_order(zone, order)
                    .is_some_and(|o| o >= order)
        }
    };
    ZoneCheck {
        per_order_failure,
        above_watermark,
        margin_pages,
        within_noise: margin_pages <= (floor / 100).max(1u64 << order.min(40)),
        has_block,
    }
}

/// The loop of `__zone_watermark_ok` before 4.4: `free_pages -= nr_free[o] << o; min >>= 1;
/// if (free_pages <= min) return false;` for each order below the request's. Free pages may go
/// negative there (a `long`).
fn per_order_check(zone: &Zone, order: u32, min: u64) -> Option<PerOrderFailure> {
    let mut free = i128::from(zone.free_pages.unwrap_or(0)) - ((1i128 << order.min(40)) - 1);
    let mut min = i128::from(min);
    for o in 0..order.min(63) {
        let blocks = i128::from(zone.free_blocks.get(o as usize).copied().unwrap_or(0));
        free = free.saturating_sub(blocks.saturating_mul(1i128 << o));
        min >>= 1;
        if free <= min {
            return Some(PerOrderFailure {
                order: o + 1,
                left: u64::try_from(free.max(0)).unwrap_or(u64::MAX),
                min: u64::try_from(min).unwrap_or(u64::MAX),
            });
        }
    }
    None
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

    /// The running kernel's table decides the rights: 6.18 has no __GFP_ATOMIC, so a request
    /// that cannot sleep is atomic; 5.10 keys on __GFP_ATOMIC, so GFP_NOWAIT is not.
    #[test]
    fn access_from_the_kernels_own_flag_table() {
        use crate::decode::gfp::GfpTable;
        let table = |fmt| GfpTable::from_print_fmt(fmt).unwrap();
        let new = table(include_str!(
            "../../tests/fixtures/tracefs/mm_page_alloc-6.18.format"
        ));
        let old = table(include_str!(
            "../../tests/fixtures/tracefs/mm_page_alloc-5.10.format"
        ));
        let access = |t: &GfpTable, names: &[&str], movable| {
            let gfp = names
                .iter()
                .map(|n| t.bit(n).unwrap())
                .fold(0, |a, b| a | b);
            Access::from_gfp(gfp, movable, |n| t.bit(n))
        };
        for t in [&new, &old] {
            let atomic = access(t, &["GFP_ATOMIC"], false);
            assert!(atomic.high && atomic.atomic && !atomic.cma);
            assert_eq!(access(t, &["GFP_KERNEL"], false), Access::default());
            let no_reserve = access(t, &["GFP_ATOMIC", "__GFP_NOMEMALLOC"], true);
            assert!(no_reserve.high && !no_reserve.atomic && no_reserve.cma);
        }
        assert!(access(&new, &["GFP_NOWAIT"], false).atomic);
        assert!(!access(&old, &["GFP_NOWAIT"], false).atomic);
        // 50% then 25% off: __zone_watermark_ok's min for an atomic __GFP_HIGH request.
        assert_eq!(
            access(&new, &["GFP_ATOMIC"], false).min_watermark(1000),
            375
        );
        assert_eq!(
            Access::from_flag_names("GFP_ATOMIC|__GFP_COMP"),
            access(&new, &["GFP_ATOMIC"], false)
        );
    }

    /// A zone whose only high-order blocks sit in CMA pageblocks: a GFP_KERNEL request cannot
    /// use them (nor the free CMA pages for its watermark); a movable one can.
    #[test]
    fn cma_blocks_serve_only_movable_requests() {
        let mut cma = vec![0; 11];
        cma[9] = 100; // 200 MiB free, all in CMA order-9 blocks
        let state = ZoneState {
            page_size: 4096,
            pageblock_order: Some(9),
            extfrag_threshold: Some(500),
            zones: vec![Zone {
                node: 0,
                zone: "Normal".into(),
                index: Some(2),
                free_pages: Some(20_000 + 51_200),
                min_pages: Some(4_000),
                free_blocks: vec![20_000, 0, 0, 0, 0, 0, 0, 0, 0, 100, 0],
                free_by_migratetype: vec![
                    (
                        "Unmovable".into(),
                        vec![20_000, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
                    ),
                    ("Movable".into(), vec![0; 11]),
                    ("CMA".into(), cma),
                ],
                ..Default::default()
            }],
        };
        let kernel = judge_in(3, Some("Normal"), Access::default(), &state, None);
        assert_eq!(kernel.kind, VerdictKind::Fragmentation, "{}", kernel.reason);
        assert!(
            kernel
                .reason
                .contains("largest free block it may use is order 0 (4 kB) < order 3")
                && kernel
                    .reason
                    .contains("order 9 blocks are free only in the CMA lists"),
            "{}",
            kernel.reason
        );
        let movable = Access {
            cma: true,
            ..Access::default()
        };
        let v = judge_in(3, Some("Normal"), movable, &state, None);
        assert_eq!(v.kind, VerdictKind::Unknown, "{}", v.reason);

        // Below min once CMA pages are not counted: exhaustion for GFP_KERNEL, with the reason.
        let mut low = state.clone();
        low.zones[0].free_pages = Some(3_000 + 51_200);
        low.zones[0].free_blocks[0] = 3_000;
        low.zones[0].free_by_migratetype[0].1[0] = 3_000;
        let v = judge_in(0, Some("Normal"), Access::default(), &low, None);
        assert_eq!(v.kind, VerdictKind::Exhaustion, "{}", v.reason);
        assert!(
            v.reason
                .contains("12000 kB of 216800 kB free usable by this request <= 16000 kB min (+ 4 kB order-0 request); not usable: 204800 kB in CMA blocks (movable requests only)"),
            "{}",
            v.reason
        );
    }

    /// The 5.10 VM after fragmentation: DMA (an order-8 block, but held back by a 440-page
    /// lowmem reserve) is 1 page over its watermark in a later read; DMA32 has no block.
    #[test]
    fn a_fallback_zone_over_its_watermark_by_a_page_does_not_hide_fragmentation() {
        let mut dma_blocks = vec![0; 11];
        dma_blocks[8] = 1;
        dma_blocks[0] = 209;
        let state = ZoneState {
            page_size: 4096,
            pageblock_order: Some(9),
            extfrag_threshold: Some(1000),
            zones: vec![
                Zone {
                    node: 0,
                    zone: "DMA".into(),
                    index: Some(0),
                    free_pages: Some(465),
                    min_pages: Some(23),
                    protection: vec![0, 440, 440, 440, 440],
                    free_blocks: dma_blocks,
                    ..Default::default()
                },
                Zone {
                    node: 0,
                    zone: "DMA32".into(),
                    index: Some(1),
                    free_pages: Some(44_727),
                    min_pages: Some(659),
                    free_blocks: vec![44_727, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
                    ..Default::default()
                },
            ],
        };
        let v = judge_in(1, Some("Normal"), Access::default(), &state, None);
        assert_eq!(v.kind, VerdictKind::Fragmentation, "{}", v.reason);
        assert!(
            v.reason
                .contains("Node 0 DMA has a free block, but only 1 page over its min"),
            "{}",
            v.reason
        );
        // Well over the watermark, DMA could serve it: then it is not fragmentation.
        let mut roomy = state.clone();
        roomy.zones[0].free_pages = Some(600);
        let v = judge_in(1, Some("Normal"), Access::default(), &roomy, None);
        assert_eq!(v.kind, VerdictKind::Unknown, "{}", v.reason);
    }

    /// Before 4.4 the kernel took the free pages of each lower order away and halved min at each
    /// step: blocks of the order can exist and the request still fail. That is fragmentation on
    /// that kernel; the 4.4+ check would have passed.
    #[test]
    fn pre_4_4_per_order_check_fails_with_blocks_of_the_order() {
        let mut blocks = vec![0; 11];
        blocks[0] = 60_000; // 234 MB in single pages
        blocks[3] = 10; // and ten order-3 blocks
        let state = ZoneState {
            page_size: 4096,
            pageblock_order: None,
            extfrag_threshold: None,
            zones: vec![Zone {
                node: 0,
                zone: "Normal".into(),
                index: Some(2),
                free_pages: Some(60_080),
                min_pages: Some(10_000),
                free_blocks: blocks,
                ..Default::default()
            }],
        };
        let modern = judge_with(
            3,
            Some("Normal"),
            Access::default(),
            &state,
            None,
            WatermarkCheck::FreeLists,
        );
        assert_eq!(modern.kind, VerdictKind::Unknown, "{}", modern.reason);
        let old = judge_with(
            3,
            Some("Normal"),
            Access::default(),
            &state,
            None,
            WatermarkCheck::PerOrder,
        );
        assert_eq!(old.kind, VerdictKind::Fragmentation, "{}", old.reason);
        // 60080 - 7 - 60000 = 73 pages left in order >= 1 after order 0, <= 10000/2.
        assert!(
            old.reason.contains(
                "fails at order 1: 292 kB are left in blocks of that order or larger <= 20000 kB"
            ),
            "{}",
            old.reason
        );
    }

    /// Figures from a crafted log can be as large as u64 allows: no overflow, no panic.
    #[test]
    fn huge_numbers_saturate() {
        for model in [WatermarkCheck::FreeLists, WatermarkCheck::PerOrder] {
            let zone = |name: &str| Zone {
                node: 0,
                zone: name.into(),
                free_pages: Some(u64::MAX),
                min_pages: Some(u64::MAX),
                protection: vec![u64::MAX; 4],
                free_blocks: vec![u64::MAX; 64],
                free_by_migratetype: vec![("CMA".into(), vec![u64::MAX; 64])],
                free_cma_pages: None,
                highatomic_pages: Some(u64::MAX),
                ..Default::default()
            };
            let state = ZoneState {
                page_size: u64::MAX,
                pageblock_order: None,
                extfrag_threshold: None,
                zones: vec![zone("DMA32"), zone("Normal")],
            };
            for order in [0, 1, 10, 40, 63, u32::MAX] {
                let v = judge_with(order, None, Access::default(), &state, None, model);
                assert!(!v.reason.is_empty());
            }
            assert_eq!(state.zones[0].free_pages_of("CMA"), u64::MAX);
        }
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
        let v = judge_in(0, Some("Normal"), Access::default(), &state, None);
        assert_eq!(v.kind, VerdictKind::Exhaustion, "{}", v.reason);
        assert_eq!(v.zone.unwrap().zone, "DMA32");
        assert_eq!(highest_present_zone(&state, "HighMem".into()), "DMA32");
        assert_eq!(highest_present_zone(&state, "DMA".into()), "DMA");
        assert_eq!(highest_present_zone(&state, "Weird".into()), "Weird");
    }
}
