//! Parsers for /proc/buddyinfo, /proc/zoneinfo and /proc/pagetypeinfo.
//!
//! Pure text-to-data functions (std and anyhow only) so that the fuzz crate can include this file
//! on its own. Every parser accepts the layouts printed since 2.6.x by mm/vmstat.c.
use anyhow::{Context, Result, bail};

/// One `Node N, zone NAME c0 c1 ...` line of /proc/buddyinfo: free blocks per order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BuddyZone {
    pub node: u32,
    pub zone: String,
    pub free_blocks: Vec<u64>,
}

/// The watermarks and sizes of one zone in /proc/zoneinfo, in pages.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ZoneinfoZone {
    pub node: u32,
    pub zone: String,
    pub free: Option<u64>,
    pub min: Option<u64>,
    pub low: Option<u64>,
    pub high: Option<u64>,
    pub spanned: Option<u64>,
    pub present: Option<u64>,
    pub managed: Option<u64>,
    /// `protection: (0, 2815, 15868, 15868)`: lowmem_reserve per class zone index.
    pub protection: Vec<u64>,
}

/// Free blocks per order of one migratetype in one zone. `capped` is set when the kernel printed
/// `>100000` (it stops counting there since 5.x) for some order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TypeFree {
    pub node: u32,
    pub zone: String,
    pub migratetype: String,
    pub free_blocks: Vec<u64>,
    pub capped: bool,
}

/// Pageblocks per migratetype of one zone (`Number of blocks type` table).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TypeBlocks {
    pub node: u32,
    pub zone: String,
    pub blocks: Vec<(String, u64)>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Pagetypeinfo {
    pub pageblock_order: Option<u32>,
    pub free: Vec<TypeFree>,
    pub blocks: Vec<TypeBlocks>,
}

/// Splits `Node 0, zone   Normal<rest>` into (0, "Normal", rest). The zone name is one word.
fn node_zone_prefix(line: &str) -> Option<(u32, &str, &str)> {
    let rest = line.trim_start().strip_prefix("Node")?;
    let (node, rest) = rest.split_once(',')?;
    let node = node.trim().parse().ok()?;
    let rest = rest.trim_start().strip_prefix("zone")?.trim_start();
    let end = rest
        .find(|c: char| c.is_whitespace() || c == ',')
        .unwrap_or(rest.len());
    let (zone, rest) = rest.split_at(end);
    if zone.is_empty() {
        return None;
    }
    Some((node, zone, rest))
}

fn parse_counts(text: &str, what: &str) -> Result<Vec<u64>> {
    text.split_whitespace()
        .map(|t| {
            t.parse::<u64>()
                .with_context(|| format!("{what}: {t:?} is not a count"))
        })
        .collect()
}

/// Parses /proc/buddyinfo.
pub fn parse_buddyinfo(text: &str) -> Result<Vec<BuddyZone>> {
    let mut zones = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let (node, zone, rest) = node_zone_prefix(line)
            .with_context(|| format!("buddyinfo line {}: no `Node N, zone NAME`", n + 1))?;
        let free_blocks = parse_counts(rest, &format!("buddyinfo line {}", n + 1))?;
        if free_blocks.is_empty() {
            bail!("buddyinfo line {}: no free counts", n + 1);
        }
        zones.push(BuddyZone {
            node,
            zone: zone.to_string(),
            free_blocks,
        });
    }
    if zones.is_empty() {
        bail!("buddyinfo has no zones");
    }
    Ok(zones)
}

/// Parses /proc/zoneinfo: the header of each zone, its free pages, watermarks, sizes and
/// protection. Per-node and per-cpu statistics are skipped.
pub fn parse_zoneinfo(text: &str) -> Result<Vec<ZoneinfoZone>> {
    let mut zones: Vec<ZoneinfoZone> = Vec::new();
    for line in text.lines() {
        if let Some((node, zone, _)) = node_zone_prefix(line) {
            zones.push(ZoneinfoZone {
                node,
                zone: zone.to_string(),
                ..Default::default()
            });
            continue;
        }
        let Some(current) = zones.last_mut() else {
            continue;
        };
        let trimmed = line.trim();
        if let Some(list) = trimmed.strip_prefix("protection:") {
            let inner = list.trim().trim_start_matches('(').trim_end_matches(')');
            current.protection = inner
                .split(',')
                .filter(|s| !s.trim().is_empty())
                .map(|s| s.trim().parse::<u64>())
                .collect::<Result<_, _>>()
                .with_context(|| format!("zoneinfo: bad protection list {trimmed:?}"))?;
            continue;
        }
        let mut words = trimmed.split_whitespace();
        let (Some(key), Some(value)) = (words.next(), words.next()) else {
            continue;
        };
        // `pages free N` carries its value in the third word.
        let (key, value) = if key == "pages" && value == "free" {
            ("free", words.next().unwrap_or(""))
        } else {
            (key, value)
        };
        let slot = match key {
            "free" => &mut current.free,
            "min" => &mut current.min,
            "low" => &mut current.low,
            "high" => &mut current.high,
            "spanned" => &mut current.spanned,
            "present" => &mut current.present,
            "managed" => &mut current.managed,
            _ => continue,
        };
        // Only the first occurrence counts; later `high:` lines belong to per-cpu pagesets.
        if slot.is_none() {
            *slot = value.parse().ok();
        }
    }
    if zones.is_empty() {
        bail!("zoneinfo has no zones");
    }
    Ok(zones)
}

/// Parses /proc/pagetypeinfo: free blocks per order and migratetype, and pageblocks per type.
pub fn parse_pagetypeinfo(text: &str) -> Result<Pagetypeinfo> {
    let mut info = Pagetypeinfo::default();
    let mut block_types: Vec<String> = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let trimmed = line.trim();
        if let Some(v) = trimmed.strip_prefix("Page block order:") {
            info.pageblock_order = v.trim().parse().ok();
            continue;
        }
        if let Some(types) = trimmed.strip_prefix("Number of blocks type") {
            block_types = types.split_whitespace().map(str::to_string).collect();
            continue;
        }
        let Some((node, zone, rest)) = node_zone_prefix(line) else {
            continue;
        };
        if let Some(rest) = rest.trim_start().strip_prefix(',') {
            // `, type    Unmovable      0      0 ...`
            let rest = rest
                .trim_start()
                .strip_prefix("type")
                .with_context(|| format!("pagetypeinfo line {}: no `type`", n + 1))?;
            let mut words = rest.split_whitespace();
            let migratetype = words
                .next()
                .with_context(|| format!("pagetypeinfo line {}: no migratetype", n + 1))?;
            let mut capped = false;
            let mut free_blocks = Vec::new();
            for w in words {
                let digits = match w.strip_prefix('>') {
                    Some(d) => {
                        capped = true;
                        d
                    }
                    None => w,
                };
                free_blocks.push(digits.parse::<u64>().with_context(|| {
                    format!("pagetypeinfo line {}: {w:?} is not a count", n + 1)
                })?);
            }
            info.free.push(TypeFree {
                node,
                zone: zone.to_string(),
                migratetype: migratetype.to_string(),
                free_blocks,
                capped,
            });
        } else {
            let counts = parse_counts(rest, &format!("pagetypeinfo line {}", n + 1))?;
            if counts.len() != block_types.len() {
                bail!(
                    "pagetypeinfo line {}: {} block counts for {} types",
                    n + 1,
                    counts.len(),
                    block_types.len()
                );
            }
            info.blocks.push(TypeBlocks {
                node,
                zone: zone.to_string(),
                blocks: block_types.iter().cloned().zip(counts).collect(),
            });
        }
    }
    if info.free.is_empty() {
        bail!("pagetypeinfo has no free lists");
    }
    Ok(info)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BUDDY_6_18: &str = include_str!("../../tests/fixtures/proc/6.18/buddyinfo");
    const ZONEINFO_6_18: &str = include_str!("../../tests/fixtures/proc/6.18/zoneinfo");
    const PAGETYPE_6_18: &str = include_str!("../../tests/fixtures/proc/6.18/pagetypeinfo");
    const BUDDY_3_10: &str = include_str!("../../tests/fixtures/proc/3.10-seed002/buddyinfo");

    #[test]
    fn buddyinfo_6_18() {
        let zones = parse_buddyinfo(BUDDY_6_18).unwrap();
        let names: Vec<_> = zones.iter().map(|z| z.zone.as_str()).collect();
        assert_eq!(names, ["DMA", "DMA32", "Normal"]);
        assert!(
            zones
                .iter()
                .all(|z| z.node == 0 && z.free_blocks.len() == 11)
        );
        assert_eq!(zones[0].free_blocks, [0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 3]);
    }

    #[test]
    fn buddyinfo_3_10_seed() {
        let zones = parse_buddyinfo(BUDDY_3_10).unwrap();
        assert_eq!(zones[2].zone, "Normal");
        assert_eq!(zones[2].free_blocks[..5], [40153, 12774, 302, 17, 0]);
    }

    #[test]
    fn zoneinfo_6_18() {
        let zones = parse_zoneinfo(ZONEINFO_6_18).unwrap();
        let dma = &zones[0];
        assert_eq!(
            (dma.zone.as_str(), dma.free, dma.min),
            ("DMA", Some(3840), Some(39))
        );
        assert_eq!(
            (dma.low, dma.high, dma.spanned),
            (Some(48), Some(57), Some(4095))
        );
        let normal = zones.iter().find(|z| z.zone == "Normal").unwrap();
        assert!(normal.managed.unwrap() > 0 && normal.min.unwrap() > 0);
        assert_eq!(dma.protection, [0, 3019, 6475, 6475, 6475]);
        // Unpopulated zones are listed too (they hold an index in the protection arrays).
        let names: Vec<_> = zones.iter().map(|z| z.zone.as_str()).collect();
        assert_eq!(names, ["DMA", "DMA32", "Normal", "Movable", "Device"]);
        // The per-cpu `high:` lines must not overwrite the watermark.
        assert!(normal.high.unwrap() < normal.managed.unwrap());
    }

    #[test]
    fn pagetypeinfo_6_18() {
        let info = parse_pagetypeinfo(PAGETYPE_6_18).unwrap();
        assert_eq!(info.pageblock_order, Some(9));
        let movable = info
            .free
            .iter()
            .find(|t| t.zone == "DMA" && t.migratetype == "Movable")
            .unwrap();
        assert_eq!(movable.free_blocks, [0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 3]);
        let dma = info.blocks.iter().find(|b| b.zone == "DMA").unwrap();
        assert_eq!(dma.blocks[1], ("Movable".to_string(), 7));
    }

    #[test]
    fn pagetypeinfo_capped_counts() {
        let text =
            "Page block order: 9\nNode    0, zone   Normal, type      Movable >100000  51 0\n";
        let info = parse_pagetypeinfo(text).unwrap();
        assert!(info.free[0].capped);
        assert_eq!(info.free[0].free_blocks, [100000, 51, 0]);
    }

    /// Text no fixture has: a zone name this build does not know, more orders than 11 (a
    /// kernel with a larger MAX_ORDER), an unknown migratetype and an extra block-count column.
    #[test]
    fn unseen_zones_orders_and_migratetypes_are_kept() {
        let buddy = "Node 1, zone   DMA64   1 2 3 4 5 6 7 8 9 10 11 12 13\n";
        let zones = parse_buddyinfo(buddy).unwrap();
        assert_eq!((zones[0].node, zones[0].zone.as_str()), (1, "DMA64"));
        assert_eq!(zones[0].free_blocks.len(), 13);
        let text = "Page block order: 10\n\
                    Node    0, zone   Normal, type   Quarantine      5      4      0\n\
                    \n\
                    Number of blocks type     Unmovable      Movable  Reclaimable   HighAtomic      Isolate   Quarantine\n\
                    Node 0, zone   Normal            3           40            1            0            0            2\n";
        let info = parse_pagetypeinfo(text).unwrap();
        assert_eq!(info.pageblock_order, Some(10));
        assert_eq!(info.free[0].migratetype, "Quarantine");
        assert_eq!(info.free[0].free_blocks, [5, 4, 0]);
        assert_eq!(info.blocks[0].blocks[5], ("Quarantine".to_string(), 2));
    }

    /// A zoneinfo with a field this build has never seen keeps the fields it knows.
    #[test]
    fn zoneinfo_with_a_new_field() {
        let text = "Node 0, zone   Normal\n  pages free     1000\n        boost    0\n        \
                    min      10\n        low      20\n        high     30\n        \
                    promo    40\n        spanned  4096\n        present  4096\n        \
                    managed  4000\n        brand_new_counter 7\n";
        let zones = parse_zoneinfo(text).unwrap();
        assert_eq!(
            (zones[0].free, zones[0].min, zones[0].high, zones[0].managed),
            (Some(1000), Some(10), Some(30), Some(4000))
        );
    }

    #[test]
    fn rejects_garbage() {
        assert!(parse_buddyinfo("").is_err());
        assert!(parse_buddyinfo("Node 0, zone DMA 1 x 2").is_err());
        assert!(parse_zoneinfo("hello\n").is_err());
        assert!(parse_pagetypeinfo("Node 0, zone").is_err());
    }
}
