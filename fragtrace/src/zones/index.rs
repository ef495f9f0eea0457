//! The kernel's unusable free space index and fragmentation index, computed from free block
//! counts per order exactly as mm/vmstat.c does (`fill_contig_block_info`,
//! `unusable_free_index`, `__fragmentation_index`), in thousandths.

/// `struct contig_page_info` for one requested order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ContigInfo {
    pub free_pages: u64,
    pub free_blocks_total: u64,
    pub free_blocks_suitable: u64,
}

/// `fill_contig_block_info()`: `free_blocks[o]` is `zone->free_area[o].nr_free` (a buddyinfo
/// column).
pub fn contig_info(free_blocks: &[u64], suitable_order: u32) -> ContigInfo {
    let mut info = ContigInfo {
        free_pages: 0,
        free_blocks_total: 0,
        free_blocks_suitable: 0,
    };
    for (order, &blocks) in free_blocks.iter().enumerate() {
        let order = order as u32;
        info.free_blocks_total = info.free_blocks_total.wrapping_add(blocks);
        info.free_pages = info.free_pages.wrapping_add(blocks.wrapping_shl(order));
        if order >= suitable_order {
            info.free_blocks_suitable = info
                .free_blocks_suitable
                .wrapping_add(blocks.wrapping_shl(order - suitable_order));
        }
    }
    info
}

/// `unusable_free_index()`: 0 (all free memory usable for this order) to 1000 (none usable).
pub fn unusable_free_index(order: u32, info: &ContigInfo) -> i64 {
    if info.free_pages == 0 {
        return 1000;
    }
    let unusable = info
        .free_pages
        .wrapping_sub(info.free_blocks_suitable.wrapping_shl(order));
    // div_u64() returns u64; the kernel's `int` return truncates it.
    (unusable.wrapping_mul(1000) / info.free_pages) as i32 as i64
}

/// `__fragmentation_index()`: -1000 when a suitable block exists; otherwise towards 0 when the
/// failure would be for lack of memory and towards 1000 when it would be for fragmentation.
pub fn fragmentation_index(order: u32, info: &ContigInfo) -> i64 {
    if order >= 64 || info.free_blocks_total == 0 {
        return 0;
    }
    if info.free_blocks_suitable != 0 {
        return -1000;
    }
    let requested = 1u64 << order;
    let scaled = 1000u64.wrapping_add(info.free_pages.wrapping_mul(1000) / requested);
    // `1000 - div_u64(..)` is u64 arithmetic truncated to the kernel's `int` return.
    1000u64.wrapping_sub(scaled / info.free_blocks_total) as i32 as i64
}

/// Both indices for every order of a zone: (unusable, fragmentation), in thousandths.
pub fn indices(free_blocks: &[u64]) -> (Vec<i64>, Vec<i64>) {
    (0..free_blocks.len() as u32)
        .map(|order| {
            let info = contig_info(free_blocks, order);
            (
                unusable_free_index(order, &info),
                fragmentation_index(order, &info),
            )
        })
        .unzip()
}

/// Formats an index as debugfs does: `unusable_index` uses `%d.%03d`, `extfrag_index` uses
/// `%2d.%03d` (so -1000 prints `-1.000` and 970 prints ` 0.970`).
pub fn format_thousandths(index: i64, width: usize) -> String {
    format!("{:>width$}.{:03}", index / 1000, index % 1000)
}

/// The index as a number (JSON): -1000 becomes -1.0, 970 becomes 0.97.
pub fn as_fraction(index: i64) -> f64 {
    index as f64 / 1000.0
}

/// The largest order with a free block, if any.
pub fn largest_free_order(free_blocks: &[u64]) -> Option<u32> {
    free_blocks.iter().rposition(|&b| b > 0).map(|o| o as u32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::zones::procfs::parse_buddyinfo;

    /// Renders one debugfs line for a zone from its free counts.
    fn debugfs_line(node: u32, zone: &str, counts: &[u64], extfrag: bool) -> String {
        let (unusable, frag) = indices(counts);
        let mut line = format!("Node {node}, zone {zone:>8} ");
        for i in if extfrag { frag } else { unusable } {
            line.push_str(&format_thousandths(i, if extfrag { 2 } else { 1 }));
            line.push(' ');
        }
        line
    }

    fn render(buddyinfo: &str, extfrag: bool) -> String {
        parse_buddyinfo(buddyinfo)
            .unwrap()
            .iter()
            .map(|z| debugfs_line(z.node, &z.zone, &z.free_blocks, extfrag) + "\n")
            .collect()
    }

    /// A capture of this machine where buddyinfo did not change across the debugfs reads. The
    /// live comparison is a root integration test (tests/tests/zones.rs).
    #[test]
    fn equals_captured_debugfs() {
        let buddy = include_str!("../../tests/fixtures/proc/6.18/buddyinfo");
        let unusable = include_str!("../../tests/fixtures/proc/6.18/unusable_index");
        let extfrag = include_str!("../../tests/fixtures/proc/6.18/extfrag_index");
        assert_eq!(render(buddy, false).trim_end(), unusable.trim_end());
        assert_eq!(render(buddy, true).trim_end(), extfrag.trim_end());
    }

    #[test]
    fn fragmentation_index_by_hand() {
        // Seed 002, Normal zone from the Mem-Info free list (orders 0..=10).
        let normal = [34178, 20118, 412, 115, 46, 6, 0, 0, 0, 0, 0];
        let info = contig_info(&normal, 6);
        assert_eq!(info.free_pages, 77910);
        assert_eq!(info.free_blocks_suitable, 0);
        // 1000 - (1000 + 77910*1000/64) / 54875 = 1000 - 1218359/54875 = 1000 - 22
        assert_eq!(fragmentation_index(6, &info), 978);
        assert_eq!(fragmentation_index(5, &contig_info(&normal, 5)), -1000);
        assert_eq!(unusable_free_index(5, &contig_info(&normal, 5)), 997);
        assert_eq!(format_thousandths(-1000, 2), "-1.000");
        assert_eq!(format_thousandths(978, 2), " 0.978");
        assert_eq!(largest_free_order(&normal), Some(5));
        assert_eq!(largest_free_order(&[0, 0]), None);
    }

    #[test]
    fn empty_zone() {
        let info = contig_info(&[0; 11], 3);
        assert_eq!(unusable_free_index(3, &info), 1000);
        assert_eq!(fragmentation_index(3, &info), 0);
    }
}
