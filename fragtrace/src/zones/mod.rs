//! Zone state: free memory, watermarks and free blocks per order and migratetype, from /proc
//! (live) or from a kernel log's Mem-Info block (offline); the kernel's fragmentation indices;
//! verdicts for failed allocations; remediation hints; memory cgroup usage.
pub mod hints;
pub mod index;
#[allow(dead_code, reason = "API for the live tracer (issue #5 wiring)")]
pub mod memcg;
pub mod procfs;
pub mod snapshot;
pub mod verdict;

use std::path::Path;

use anyhow::{Context, Result};
use fragtrace_common::{ZoneSnapshot, zone_snapshot};
use serde::Serialize;

/// The default of `vm.extfrag_threshold` (mm/compaction.c), used when it cannot be read.
pub const DEFAULT_EXTFRAG_THRESHOLD: u32 = 500;

/// Zone types in index order (include/linux/mmzone.h): the one list of them.
pub const ZONE_TYPES: [&str; 6] = ["DMA", "DMA32", "Normal", "HighMem", "Movable", "Device"];

/// The zone modifier bits of a gfp mask: the same in every kernel's layout.
const GFP_DMA: u64 = 0x01;
const GFP_HIGHMEM: u64 = 0x02;
const GFP_DMA32: u64 = 0x04;

/// The request's preferred zone from the zone modifier bits of its gfp mask.
pub fn preferred_zone(mask: u64, has_highmem: bool) -> &'static str {
    if mask & GFP_DMA != 0 {
        "DMA"
    } else if mask & GFP_DMA32 != 0 {
        "DMA32"
    } else if mask & GFP_HIGHMEM != 0 && has_highmem {
        "HighMem"
    } else {
        "Normal"
    }
}

/// One zone of one node. Page counts are in pages of [`ZoneState::page_size`] bytes.
#[derive(Clone, Debug, Default, PartialEq, Serialize, serde::Deserialize)]
pub struct Zone {
    pub node: u32,
    pub zone: String,
    /// The zone's index in its node (`zone_idx`), which indexes `protection`; None when only
    /// populated zones were seen (a kernel log).
    pub index: Option<usize>,
    pub free_pages: Option<u64>,
    pub min_pages: Option<u64>,
    pub low_pages: Option<u64>,
    pub high_pages: Option<u64>,
    pub managed_pages: Option<u64>,
    /// `lowmem_reserve[]`: pages this zone keeps back from requests whose preferred zone has
    /// that index.
    pub protection: Vec<u64>,
    /// Free blocks per order (`/proc/buddyinfo`, or the Mem-Info free list).
    pub free_blocks: Vec<u64>,
    /// Free blocks per order for each migratetype (`/proc/pagetypeinfo`), when readable.
    pub free_by_migratetype: Vec<(String, Vec<u64>)>,
    /// Free CMA pages and the highatomic pages the watermark check holds back, when read from
    /// the kernel at a failure; otherwise they come from `free_by_migratetype`.
    pub free_cma_pages: Option<u64>,
    pub highatomic_pages: Option<u64>,
}

impl Zone {
    pub fn largest_free_order(&self) -> Option<u32> {
        index::largest_free_order(&self.free_blocks)
    }

    /// Free pages in the free lists of one migratetype (pagetypeinfo); 0 when unknown.
    pub fn free_pages_of(&self, migratetype: &str) -> u64 {
        self.free_by_migratetype
            .iter()
            .filter(|(mt, _)| mt == migratetype)
            .flat_map(|(_, counts)| counts.iter().enumerate())
            .map(|(order, n)| n.saturating_mul(1u64 << order.min(40)))
            .fold(0u64, u64::saturating_add)
    }

    /// "Node 0 Normal", as the kernel's Mem-Info names zones.
    pub fn label(&self) -> String {
        format!("Node {} {}", self.node, self.zone)
    }
}

/// All populated zones of all nodes, with what is needed to judge a failure against them.
#[derive(Clone, Debug, PartialEq, Serialize, serde::Deserialize)]
pub struct ZoneState {
    pub page_size: u64,
    /// `Page block order` from pagetypeinfo; None when unknown.
    pub pageblock_order: Option<u32>,
    /// `vm.extfrag_threshold`; None when it could not be read.
    pub extfrag_threshold: Option<u32>,
    pub zones: Vec<Zone>,
}

impl ZoneState {
    /// Reads this machine's zone state from /proc.
    pub fn read() -> Result<Self> {
        Self::read_from(Path::new("/"))
    }

    /// Reads the zone state below `root` (`root/proc/buddyinfo` and so on). pagetypeinfo (root
    /// only since 5.x) and extfrag_threshold are optional.
    pub fn read_from(root: &Path) -> Result<Self> {
        let read = |rel: &str| {
            let path = root.join(rel);
            std::fs::read_to_string(&path)
                .with_context(|| format!("cannot read {}", path.display()))
        };
        let buddy = procfs::parse_buddyinfo(&read("proc/buddyinfo")?)?;
        let zoneinfo = procfs::parse_zoneinfo(&read("proc/zoneinfo")?)?;
        let pagetype = read("proc/pagetypeinfo")
            .ok()
            .and_then(|t| procfs::parse_pagetypeinfo(&t).ok());
        let threshold = read("proc/sys/vm/extfrag_threshold")
            .ok()
            .and_then(|t| t.trim().parse().ok());
        Ok(Self::from_proc(
            &buddy,
            &zoneinfo,
            pagetype.as_ref(),
            page_size(),
            threshold,
        ))
    }

    /// Joins the parsed /proc files by (node, zone). Zones absent from buddyinfo (unpopulated)
    /// are left out; their index still counts.
    pub fn from_proc(
        buddy: &[procfs::BuddyZone],
        zoneinfo: &[procfs::ZoneinfoZone],
        pagetype: Option<&procfs::Pagetypeinfo>,
        page_size: u64,
        extfrag_threshold: Option<u32>,
    ) -> Self {
        let mut zones = Vec::new();
        for b in buddy {
            let mut zone = Zone {
                node: b.node,
                zone: b.zone.clone(),
                free_blocks: b.free_blocks.clone(),
                ..Default::default()
            };
            let in_node = zoneinfo.iter().filter(|z| z.node == b.node);
            if let Some((idx, zi)) = in_node.enumerate().find(|(_, z)| z.zone == b.zone) {
                zone.index = Some(idx);
                zone.free_pages = zi.free;
                zone.min_pages = zi.min;
                zone.low_pages = zi.low;
                zone.high_pages = zi.high;
                zone.managed_pages = zi.managed;
                zone.protection = zi.protection.clone();
            }
            if let Some(pt) = pagetype {
                zone.free_by_migratetype = pt
                    .free
                    .iter()
                    .filter(|t| t.node == b.node && t.zone == b.zone)
                    .map(|t| (t.migratetype.clone(), t.free_blocks.clone()))
                    .collect();
            }
            zones.push(zone);
        }
        Self {
            page_size,
            pageblock_order: pagetype.and_then(|p| p.pageblock_order),
            extfrag_threshold,
            zones,
        }
    }

    /// This state with one node's zones replaced by the counters the eBPF handler read at a
    /// failure (zones matched by index). Other nodes, names and lowmem reserves stay as read
    /// from /proc. None when the snapshot was not read or matches no zone here.
    pub fn with_kernel_snapshot(&self, snap: &ZoneSnapshot) -> Option<Self> {
        if snap.flags & zone_snapshot::VALID == 0 {
            return None;
        }
        let mut state = self.clone();
        let mut replaced = 0;
        for zone in state.zones.iter_mut().filter(|z| z.node == snap.node) {
            let Some(c) = zone.index.and_then(|i| snap.zones.get(i)) else {
                continue;
            };
            if c.managed_pages == 0 {
                continue;
            }
            zone.free_pages = Some(c.free_pages);
            // The kernel's min carries the watermark boost of that moment; low and high (read
            // from /proc, maybe before a boost) move with it, as the three differ by fixed
            // amounts until the sysctls change.
            if let Some(old_min) = zone.min_pages {
                let shift = |w: Option<u64>| w.map(|w| (w + c.min_pages).saturating_sub(old_min));
                zone.low_pages = shift(zone.low_pages);
                zone.high_pages = shift(zone.high_pages);
            }
            zone.min_pages = Some(c.min_pages);
            zone.free_blocks = c.free_blocks.to_vec();
            zone.free_by_migratetype.clear();
            zone.free_cma_pages = Some(c.free_cma_pages);
            zone.highatomic_pages = Some(c.highatomic_pages);
            replaced += 1;
        }
        (replaced > 0).then_some(state)
    }

    /// Fills in zone indices for a list of only populated zones (a kernel log): the lowest
    /// zone's `lowmem_reserve[]` is 0 up to its own index and steps up at each higher populated
    /// zone. Leaves them unknown when the steps do not match the zones seen.
    pub fn infer_indices(&mut self) {
        let mut nodes: Vec<u32> = self.zones.iter().map(|z| z.node).collect();
        nodes.dedup();
        for node in nodes {
            let positions: Vec<usize> = (0..self.zones.len())
                .filter(|&i| self.zones[i].node == node && self.zones[i].index.is_none())
                .collect();
            if positions.len() < 2 {
                continue;
            }
            let p = &self.zones[positions[0]].protection;
            let steps: Vec<usize> = (1..p.len()).filter(|&i| p[i] > p[i - 1]).collect();
            if steps.len() + 1 != positions.len() {
                continue;
            }
            let indices: Vec<usize> = std::iter::once(steps[0] - 1).chain(steps).collect();
            for (pos, idx) in positions.into_iter().zip(indices) {
                self.zones[pos].index = Some(idx);
            }
        }
    }

    /// Pages to kB.
    pub fn kb(&self, pages: u64) -> u64 {
        pages.saturating_mul(self.page_size) / 1024
    }

    /// The threshold in force, or the kernel default.
    pub fn threshold(&self) -> u32 {
        self.extfrag_threshold.unwrap_or(DEFAULT_EXTFRAG_THRESHOLD)
    }
}

/// The base page size of this machine.
pub fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if size > 0 { size as u64 } else { 4096 }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// This machine's /proc files, captured.
    pub(crate) fn captured_6_18() -> ZoneState {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/proc/6.18");
        let read = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap();
        ZoneState::from_proc(
            &procfs::parse_buddyinfo(&read("buddyinfo")).unwrap(),
            &procfs::parse_zoneinfo(&read("zoneinfo")).unwrap(),
            Some(&procfs::parse_pagetypeinfo(&read("pagetypeinfo")).unwrap()),
            4096,
            Some(500),
        )
    }

    #[test]
    fn joins_the_captured_6_18_files() {
        let state = captured_6_18();
        assert_eq!(state.zones.len(), 3);
        let dma = &state.zones[0];
        assert_eq!(
            (dma.index, dma.min_pages, dma.free_pages),
            (Some(0), Some(39), Some(3840))
        );
        assert_eq!(dma.free_by_migratetype.len(), 5);
        assert_eq!(state.zones[2].index, Some(2));
        assert_eq!(state.pageblock_order, Some(9));
        assert_eq!(state.kb(39), 156);
    }

    /// The kernel's counters replace the /proc figures of the zones they match by index.
    #[test]
    fn kernel_snapshot_replaces_its_nodes_zones() {
        let state = captured_6_18();
        let mut snap = ZoneSnapshot::default();
        assert!(state.with_kernel_snapshot(&snap).is_none(), "not read");
        snap.flags = zone_snapshot::VALID;
        snap.zones[2].managed_pages = 1000;
        snap.zones[2].free_pages = 123;
        snap.zones[2].min_pages = 45;
        snap.zones[2].highatomic_pages = 6;
        snap.zones[2].free_blocks[0] = 123;
        let merged = state.with_kernel_snapshot(&snap).unwrap();
        let normal = &merged.zones[2];
        assert_eq!(normal.zone, "Normal");
        assert_eq!((normal.free_pages, normal.min_pages), (Some(123), Some(45)));
        assert_eq!(normal.largest_free_order(), Some(0));
        assert!(normal.free_by_migratetype.is_empty());
        assert_eq!(normal.highatomic_pages, Some(6));
        assert_eq!(normal.protection, state.zones[2].protection);
        // Low and high keep their distance from min (a watermark boost moves all three).
        let before = &state.zones[2];
        let (old_min, old_high) = (before.min_pages.unwrap(), before.high_pages.unwrap());
        assert_eq!(normal.high_pages, Some(old_high + 45 - old_min));
        assert!(normal.min_pages < normal.low_pages && normal.low_pages < normal.high_pages);
        // Zones the snapshot shows unpopulated keep their /proc figures.
        assert_eq!(merged.zones[0], state.zones[0]);
        snap.node = 1;
        assert!(
            state.with_kernel_snapshot(&snap).is_none(),
            "no such node here"
        );
    }

    /// buddyinfo and zoneinfo are readable by everyone; pagetypeinfo (root only since 5.x) is
    /// used when readable and left out otherwise.
    #[test]
    fn reads_this_machine() {
        let state = ZoneState::read().expect("/proc/buddyinfo and /proc/zoneinfo");
        let buddy = std::fs::read_to_string("/proc/buddyinfo").unwrap();
        assert_eq!(state.zones.len(), buddy.lines().count());
        assert!(state.zones.iter().all(|z| z.min_pages.is_some()));
        let pagetype = std::fs::read_to_string("/proc/pagetypeinfo").is_ok();
        assert_eq!(state.pageblock_order.is_some(), pagetype);
        assert!(
            state
                .zones
                .iter()
                .all(|z| z.free_by_migratetype.is_empty() != pagetype)
        );
    }
}
