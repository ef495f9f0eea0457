//! The failing CPU's node's zones, read at the failure: free pages, min watermark, free CMA and
//! highatomic pages, and free blocks per order. Judging the failure against these, rather than
//! against /proc read later in user space, keeps the verdict true when kcompactd or reclaim
//! changes the free lists a few milliseconds after.
//!
//! `PGDAT_SYMBOL_ADDR` is `node_data` (an array of `pglist_data *`) or `contig_page_data` (the
//! one node itself) from /proc/kallsyms; the offsets come from the kernel's BTF. User space sets
//! them at load time; `ZONE_LAYOUT_KNOWN` stays 0 when it could not, and then nothing is read.

use aya_ebpf::helpers::bpf_get_numa_node_id;
use fragtrace_common::{
    SNAPSHOT_ORDERS, SNAPSHOT_ZONES, ZoneCounters, ZoneSnapshot, zone_snapshot,
};

use crate::maps::{load_const, load_const_u64, read_kernel_u64};

#[unsafe(no_mangle)]
static ZONE_LAYOUT_KNOWN: u32 = 0;
/// Address of `node_data` or `contig_page_data`.
#[unsafe(no_mangle)]
static PGDAT_SYMBOL_ADDR: u64 = 0;
/// 1: the symbol is `node_data[]`, indexed by node; 0: it is the only `pglist_data`.
#[unsafe(no_mangle)]
static PGDAT_IS_ARRAY: u32 = 0;
/// `offsetof(struct pglist_data, node_zones)`, `sizeof(struct zone)`.
#[unsafe(no_mangle)]
static PGDAT_NODE_ZONES_OFFSET: u32 = 0;
#[unsafe(no_mangle)]
static ZONE_SIZE: u32 = 0;
/// Offsets in `struct zone`.
#[unsafe(no_mangle)]
static ZONE_MANAGED_OFFSET: u32 = 0;
/// `vm_stat[NR_FREE_PAGES]`.
#[unsafe(no_mangle)]
static ZONE_FREE_PAGES_OFFSET: u32 = 0;
/// `vm_stat[NR_FREE_CMA_PAGES]`; 0 when the kernel has no such counter.
#[unsafe(no_mangle)]
static ZONE_FREE_CMA_OFFSET: u32 = 0;
/// `_watermark[WMARK_MIN]`, and `watermark_boost` (0 when absent).
#[unsafe(no_mangle)]
static ZONE_WMARK_MIN_OFFSET: u32 = 0;
#[unsafe(no_mangle)]
static ZONE_BOOST_OFFSET: u32 = 0;
/// `nr_free_highatomic` or `nr_reserved_highatomic`.
#[unsafe(no_mangle)]
static ZONE_HIGHATOMIC_OFFSET: u32 = 0;
/// `free_area[0]`, `sizeof(struct free_area)`, `offsetof(struct free_area, nr_free)`.
#[unsafe(no_mangle)]
static ZONE_FREE_AREA_OFFSET: u32 = 0;
#[unsafe(no_mangle)]
static FREE_AREA_SIZE: u32 = 0;
#[unsafe(no_mangle)]
static FREE_AREA_NR_FREE_OFFSET: u32 = 0;
/// Orders in `free_area[]` (at most SNAPSHOT_ORDERS are read).
#[unsafe(no_mangle)]
static ZONE_ORDERS: u32 = 0;

/// A fault reads as 0.
#[inline(always)]
fn read_u64(addr: u64) -> u64 {
    read_kernel_u64(addr).unwrap_or(0)
}

#[inline(always)]
fn at(base: u64, offset: &u32) -> u64 {
    read_u64(base + load_const(offset) as u64)
}

/// Fills `out` (ring-buffer memory: every field is written) with the current node's zones.
///
/// # Safety
/// `out` must point at writable memory for one `ZoneSnapshot`.
#[inline(always)]
pub unsafe fn snapshot_current_node(out: *mut ZoneSnapshot) {
    // SAFETY: helper without preconditions.
    let node = unsafe { bpf_get_numa_node_id() } as u64;
    let known = load_const(&ZONE_LAYOUT_KNOWN) != 0 && node < 1024;
    let symbol = load_const_u64(&PGDAT_SYMBOL_ADDR);
    let pgdat = match (known, load_const(&PGDAT_IS_ARRAY)) {
        (false, _) => 0,
        (true, 0) => symbol,
        (true, _) => read_u64(symbol + node * 8),
    };
    let orders = (load_const(&ZONE_ORDERS) as usize).min(SNAPSHOT_ORDERS);
    let has_cma = load_const(&ZONE_FREE_CMA_OFFSET) != 0;
    let has_boost = load_const(&ZONE_BOOST_OFFSET) != 0;
    // SAFETY: the caller guarantees `out`; indices stay within the arrays.
    unsafe {
        (*out).node = node as u32;
        (*out).flags = if pgdat != 0 { zone_snapshot::VALID } else { 0 };
        for z in 0..SNAPSHOT_ZONES {
            let slot: *mut ZoneCounters = &mut (*out).zones[z];
            let zone = if pgdat == 0 {
                0
            } else {
                pgdat
                    + load_const(&PGDAT_NODE_ZONES_OFFSET) as u64
                    + z as u64 * load_const(&ZONE_SIZE) as u64
            };
            let managed = if zone == 0 {
                0
            } else {
                at(zone, &ZONE_MANAGED_OFFSET)
            };
            let populated = managed != 0;
            (*slot).managed_pages = managed;
            (*slot).free_pages = if populated {
                at(zone, &ZONE_FREE_PAGES_OFFSET)
            } else {
                0
            };
            (*slot).min_pages = if populated {
                at(zone, &ZONE_WMARK_MIN_OFFSET)
                    + if has_boost {
                        at(zone, &ZONE_BOOST_OFFSET)
                    } else {
                        0
                    }
            } else {
                0
            };
            (*slot).free_cma_pages = if populated && has_cma {
                at(zone, &ZONE_FREE_CMA_OFFSET)
            } else {
                0
            };
            (*slot).highatomic_pages = if populated {
                at(zone, &ZONE_HIGHATOMIC_OFFSET)
            } else {
                0
            };
            let area = zone + load_const(&ZONE_FREE_AREA_OFFSET) as u64;
            for o in 0..SNAPSHOT_ORDERS {
                (*slot).free_blocks[o] = if populated && o < orders {
                    read_u64(
                        area + o as u64 * load_const(&FREE_AREA_SIZE) as u64
                            + load_const(&FREE_AREA_NR_FREE_OFFSET) as u64,
                    )
                } else {
                    0
                };
            }
        }
    }
}
