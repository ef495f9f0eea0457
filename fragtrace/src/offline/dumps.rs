//! `/proc/buddyinfo`, `/proc/zoneinfo` and `/proc/pagetypeinfo` dumps pasted into a log (support
//! tickets, journal exports): found line by line, handed out when the paste ends.
use super::lines::{KernelLine, Stamp};
use crate::zones::{
    ZoneState,
    procfs::{self, BuddyZone, Pagetypeinfo, ZoneinfoZone},
};

/// One paste of one or more /proc files.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Dump {
    pub line: usize,
    pub last_line: usize,
    pub timestamp: Option<String>,
    pub stamp: Stamp,
    pub buddy: Vec<BuddyZone>,
    pub zoneinfo: Vec<ZoneinfoZone>,
    pub pagetype: Option<Pagetypeinfo>,
}

impl Dump {
    /// `buddyinfo`, `zoneinfo+buddyinfo`, ...
    pub fn kinds(&self) -> String {
        let mut k = Vec::new();
        if !self.buddy.is_empty() {
            k.push("buddyinfo");
        }
        if !self.zoneinfo.is_empty() {
            k.push("zoneinfo");
        }
        if self.pagetype.is_some() {
            k.push("pagetypeinfo");
        }
        k.join("+")
    }

    /// Whether the dump gives watermarks (zoneinfo) and free lists per order.
    pub fn has_watermarks(&self) -> bool {
        self.zoneinfo.iter().any(|z| z.min.is_some())
    }

    /// The dump as a zone state; the page size is not in these files, so 4 kB is assumed for
    /// sizes (orders and page counts do not depend on it).
    pub fn zone_state(&self) -> ZoneState {
        let buddy: Vec<BuddyZone> = if !self.buddy.is_empty() {
            self.buddy.clone()
        } else if let Some(pt) = &self.pagetype {
            // Free blocks per order summed over migratetypes.
            let mut out: Vec<BuddyZone> = Vec::new();
            for t in &pt.free {
                let entry = match out
                    .iter_mut()
                    .position(|b| b.node == t.node && b.zone == t.zone)
                {
                    Some(i) => &mut out[i],
                    None => {
                        out.push(BuddyZone {
                            node: t.node,
                            zone: t.zone.clone(),
                            free_blocks: Vec::new(),
                        });
                        out.last_mut().unwrap()
                    }
                };
                if entry.free_blocks.len() < t.free_blocks.len() {
                    entry.free_blocks.resize(t.free_blocks.len(), 0);
                }
                for (sum, n) in entry.free_blocks.iter_mut().zip(&t.free_blocks) {
                    *sum = sum.saturating_add(*n);
                }
            }
            out
        } else {
            self.zoneinfo
                .iter()
                .map(|z| BuddyZone {
                    node: z.node,
                    zone: z.zone.clone(),
                    free_blocks: Vec::new(),
                })
                .collect()
        };
        let mut state =
            ZoneState::from_proc(&buddy, &self.zoneinfo, self.pagetype.as_ref(), 4096, None);
        if self.zoneinfo.is_empty() {
            state.infer_indices();
        }
        state
    }
}

/// The longest paste kept; a longer one is handed out in parts.
const MAX_DUMP_LINES: usize = 4096;

#[derive(Default)]
pub struct DumpCollector {
    open: Option<Open>,
}

#[derive(Default)]
struct Open {
    dump: Dump,
    buddy_text: String,
    pagetype_text: String,
    lines: usize,
    /// After `Number of blocks type`: `Node N, zone Z  counts` lines are block counts.
    in_block_table: bool,
}

impl DumpCollector {
    /// Takes `t` when it is a line of a dump; hands a finished dump to `out` when a paste ends.
    pub fn push(
        &mut self,
        kl: &KernelLine,
        t: &str,
        out: &mut Vec<super::logparse::Event>,
    ) -> bool {
        let kind = classify(t, self.open.as_ref().is_some_and(|o| o.in_block_table));
        let Some(kind) = kind else {
            self.finish(out);
            return false;
        };
        let open = self.open.get_or_insert_with(|| Open {
            dump: Dump {
                line: kl.line,
                timestamp: kl.timestamp.clone(),
                stamp: kl.stamp,
                ..Default::default()
            },
            ..Default::default()
        });
        open.dump.last_line = kl.line;
        open.lines += 1;
        match kind {
            Kind::Buddy => {
                open.buddy_text.push_str(t);
                open.buddy_text.push('\n');
            }
            Kind::Zoneinfo => {
                if let Some(z) = zoneinfo_zone(t) {
                    open.dump.zoneinfo.push(z);
                }
            }
            Kind::PagetypeHeader => {
                if t.starts_with("Number of blocks type") {
                    open.in_block_table = true;
                }
                open.pagetype_text.push_str(t);
                open.pagetype_text.push('\n');
            }
            Kind::Pagetype => {
                open.pagetype_text.push_str(t);
                open.pagetype_text.push('\n');
            }
        }
        if open.lines >= MAX_DUMP_LINES {
            self.finish(out);
        }
        true
    }

    pub fn is_open(&self) -> bool {
        self.open.is_some()
    }

    /// Ends the paste under way, if any.
    pub fn finish(&mut self, out: &mut Vec<super::logparse::Event>) {
        let Some(open) = self.open.take() else {
            return;
        };
        let mut dump = open.dump;
        if !open.buddy_text.is_empty() {
            dump.buddy = procfs::parse_buddyinfo(&open.buddy_text).unwrap_or_default();
        }
        if !open.pagetype_text.is_empty() {
            dump.pagetype = procfs::parse_pagetypeinfo(&open.pagetype_text).ok();
        }
        if !dump.buddy.is_empty() || !dump.zoneinfo.is_empty() || dump.pagetype.is_some() {
            out.push(super::logparse::Event::Dump(dump));
        }
    }
}

/// Whether a line can begin a dump.
pub fn starts_dump(t: &str) -> bool {
    matches!(t.as_bytes().first(), Some(b'N' | b'P' | b'F'))
        && (t.starts_with("Node") || classify(t, false).is_some())
}

enum Kind {
    Buddy,
    Zoneinfo,
    PagetypeHeader,
    Pagetype,
}

fn classify(t: &str, in_block_table: bool) -> Option<Kind> {
    if t.starts_with("Page block order:")
        || t.starts_with("Pages per block:")
        || t.starts_with("Free pages count per migrate type")
        || t.starts_with("Number of blocks type")
        || t.starts_with("Number of mixed blocks")
    {
        return Some(Kind::PagetypeHeader);
    }
    let rest = t.strip_prefix("Node")?;
    let (node, rest) = rest.split_once(',')?;
    if node.trim().parse::<u32>().is_err() {
        return None;
    }
    let rest = rest.trim_start().strip_prefix("zone")?;
    let mut words = rest.split_whitespace();
    let zone = words.next()?;
    if zone.ends_with(',') {
        return Some(Kind::Pagetype);
    }
    let rest: Vec<&str> = words.collect();
    if rest.windows(2).any(|w| w == ["pages", "free"]) {
        return Some(Kind::Zoneinfo);
    }
    let numeric = !rest.is_empty() && rest.iter().all(|w| w.bytes().all(|b| b.is_ascii_digit()));
    match (numeric, in_block_table) {
        (true, true) => Some(Kind::Pagetype),
        (true, false) => Some(Kind::Buddy),
        _ => None,
    }
}

/// One zone of /proc/zoneinfo whose indented lines were joined onto its `Node N, zone Z` line.
fn zoneinfo_zone(t: &str) -> Option<ZoneinfoZone> {
    let rest = t.strip_prefix("Node")?;
    let (node, rest) = rest.split_once(',')?;
    let rest = rest.trim_start().strip_prefix("zone")?;
    let mut words = rest.split_whitespace().peekable();
    let mut zone = ZoneinfoZone {
        node: node.trim().parse().ok()?,
        zone: words.next()?.to_string(),
        ..Default::default()
    };
    let words: Vec<&str> = words.collect();
    let mut i = 0;
    while i < words.len() {
        let w = words[i];
        let next = words.get(i + 1).and_then(|v| v.parse::<u64>().ok());
        let slot = match w {
            "pages" if words.get(i + 1) == Some(&"free") => {
                zone.free = zone.free.or(words.get(i + 2).and_then(|v| v.parse().ok()));
                i += 3;
                continue;
            }
            "min" => &mut zone.min,
            "low" => &mut zone.low,
            "high" => &mut zone.high,
            "spanned" => &mut zone.spanned,
            "present" => &mut zone.present,
            "managed" => &mut zone.managed,
            "protection:" => {
                let mut values = Vec::new();
                for v in &words[i + 1..] {
                    let digits = v.trim_matches(|c| c == '(' || c == ')' || c == ',');
                    if let Ok(n) = digits.parse::<u64>() {
                        values.push(n);
                    }
                    if v.ends_with(')') {
                        break;
                    }
                }
                if zone.protection.is_empty() {
                    zone.protection = values;
                }
                i += 1;
                continue;
            }
            _ => {
                i += 1;
                continue;
            }
        };
        if slot.is_none() {
            *slot = next;
        }
        i += 1;
    }
    Some(zone)
}

#[cfg(test)]
mod tests {
    use crate::offline::logparse::parse;

    #[test]
    fn buddyinfo_paste() {
        let p = parse(
            "$ cat /proc/buddyinfo\n\
             Node 0, zone      DMA      1      0      1      0      2      1      1      0      1      1      3\n\
             Node 0, zone    DMA32   2725    624    489    178      0      0      0      0      0      0      0\n\
             Node 0, zone   Normal   1163   1101    932    222      0      0      0      0      0      0      0\n\
             ```\n",
        );
        assert_eq!(p.dumps.len(), 1);
        let d = &p.dumps[0];
        assert_eq!(
            (d.line, d.last_line, d.kinds().as_str()),
            (2, 4, "buddyinfo")
        );
        assert_eq!(d.buddy[2].free_blocks[..4], [1163, 1101, 932, 222]);
        let state = d.zone_state();
        assert_eq!(state.zones.len(), 3);
        assert!(state.zones[2].min_pages.is_none());
    }

    #[test]
    fn zoneinfo_and_pagetypeinfo_pastes() {
        let p = parse(
            "Node 0, zone   Normal\n  pages free     3977\n        min      5\n        low      6\n        high     7\n        spanned  4095\n        present  3998\n        managed  3977\n        protection: (0, 2815, 15868, 15868)\n      nr_free_pages 3977\n\
             \n\
             Page block order: 9\n\
             Pages per block:  512\n\
             \n\
             Free pages count per migrate type at order       0      1      2\n\
             Node    0, zone   Normal, type    Unmovable      1      2      3\n\
             Node    0, zone   Normal, type      Movable      4      5      6\n\
             \n\
             Number of blocks type     Unmovable      Movable\n\
             Node 0, zone   Normal            1            2\n",
        );
        let z = &p.dumps[0].zoneinfo[0];
        assert_eq!(
            (z.free, z.min, z.low, z.high, z.managed),
            (Some(3977), Some(5), Some(6), Some(7), Some(3977))
        );
        assert_eq!(z.protection, [0, 2815, 15868, 15868]);
        let pt = p.dumps.iter().find_map(|d| d.pagetype.as_ref()).unwrap();
        assert_eq!(pt.pageblock_order, Some(9));
        assert_eq!(pt.free.len(), 2);
        let state = p.dumps.last().unwrap().zone_state();
        assert_eq!(state.zones[0].free_blocks, [5, 7, 9]);
    }
}
