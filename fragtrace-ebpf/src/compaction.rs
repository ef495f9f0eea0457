//! Direct compaction, kcompactd, compaction retries, and migratetype fallbacks. Each begin and
//! end is reported (user space pairs them for the live lines and latency histograms), and the
//! stalls' time is also aggregated per stack in the kernel (stacks.rs) for flamegraphs.

use aya_ebpf::{
    EbpfContext, macros::tracepoint, programs::TracePointContext, programs::tracing::StackIdContext,
};
use fragtrace_common::{EventKind, MIGRATE_SLOTS, counter, stall_kind};

use crate::{
    maps::{btf_and_raw_tracepoint, bump, emit_mm, is_self, load_const},
    stacks,
};

/// The kernel's pageblock order (user space reads it from /proc/pagetypeinfo).
#[unsafe(no_mangle)]
static PAGEBLOCK_ORDER: u32 = 9;

// TP_PROTO(int order, gfp_t gfp_mask, int prio)
btf_and_raw_tracepoint!(
    "mm_compaction_try_to_compact_pages",
    compact_try_btf,
    compact_try_raw,
    compact_try
);
fn compact_try<C: EbpfContext>(ctx: &C, arg: impl Fn(usize) -> u64) -> Result<(), i64> {
    if !is_self() {
        stacks::on_compact_request(arg(0) as u32);
        let args = [
            arg(0) as u32 as u64,
            arg(1) as u32 as u64,
            arg(2) as i32 as i64 as u64,
            0,
            0,
            0,
        ];
        emit_mm(ctx, EventKind::CompactTry, args);
    }
    Ok(())
}

// TP_PROTO(unsigned long zone_start, unsigned long migrate_pfn, unsigned long free_pfn,
//          unsigned long zone_end, bool sync)
btf_and_raw_tracepoint!(
    "mm_compaction_begin",
    compact_begin_btf,
    compact_begin_raw,
    compact_begin
);
fn compact_begin<C: StackIdContext>(ctx: &C, _arg: impl Fn(usize) -> u64) -> Result<(), i64> {
    if !is_self() {
        stacks::on_compact_begin(ctx);
    }
    emit_mm(ctx, EventKind::CompactBegin, [0; 6]);
    Ok(())
}

/// Offset of `status` in the classic `compaction/mm_compaction_end` record, from tracefs.
/// The event's arguments changed across kernels (a `compact_control` pointer came and went),
/// so its record, whose fields are stable by name, is read instead of its arguments.
#[unsafe(no_mangle)]
static COMPACT_STATUS_OFFSET: u32 = 44;

#[tracepoint(category = "compaction", name = "mm_compaction_end")]
pub fn compact_end_tp(ctx: TracePointContext) -> u32 {
    // SAFETY: the offset comes from this kernel's tracefs format for this event.
    stacks::on_stall_end(stall_kind::COMPACTION);
    if let Ok(status) = unsafe { ctx.read_at::<i32>(load_const(&COMPACT_STATUS_OFFSET) as usize) } {
        emit_mm(
            &ctx,
            EventKind::CompactEnd,
            [status as i64 as u64, 0, 0, 0, 0, 0],
        );
    }
    0
}

// TP_PROTO(struct zone *zone, int order)
btf_and_raw_tracepoint!(
    "mm_compaction_deferred",
    compact_deferred_btf,
    compact_deferred_raw,
    compact_deferred
);
fn compact_deferred<C: EbpfContext>(_ctx: &C, _arg: impl Fn(usize) -> u64) -> Result<(), i64> {
    bump(counter::COMPACTION_DEFERRED);
    Ok(())
}

// TP_PROTO(int nid, int order, enum zone_type highest_zoneidx)
btf_and_raw_tracepoint!(
    "mm_compaction_kcompactd_wake",
    kcompactd_wake_btf,
    kcompactd_wake_raw,
    kcompactd_wake
);
fn kcompactd_wake<C: EbpfContext>(_ctx: &C, _arg: impl Fn(usize) -> u64) -> Result<(), i64> {
    bump(counter::KCOMPACTD_WAKES);
    Ok(())
}

// TP_PROTO(int order, enum compact_priority priority, enum compact_result result, int retries,
//          int max_retries, bool ret)
btf_and_raw_tracepoint!(
    "compact_retry",
    compact_retry_btf,
    compact_retry_raw,
    compact_retry
);
fn compact_retry<C: EbpfContext>(ctx: &C, arg: impl Fn(usize) -> u64) -> Result<(), i64> {
    let a = |n| arg(n) as u32 as u64;
    emit_mm(
        ctx,
        EventKind::CompactRetry,
        [a(0), a(1), a(2), a(3), a(4), arg(5) & 1],
    );
    Ok(())
}

// TP_PROTO(struct page *page, int alloc_order, int fallback_order, int alloc_migratetype,
//          int fallback_migratetype)
btf_and_raw_tracepoint!("mm_page_alloc_extfrag", extfrag_btf, extfrag_raw, extfrag);
fn extfrag<C: StackIdContext>(ctx: &C, arg: impl Fn(usize) -> u64) -> Result<(), i64> {
    let (fallback_order, alloc_mt, fallback_mt) = (arg(2) as u32, arg(3) as u32, arg(4) as u32);
    if alloc_mt as usize >= MIGRATE_SLOTS || fallback_mt as usize >= MIGRATE_SLOTS {
        return Ok(());
    }
    let pair = alloc_mt * MIGRATE_SLOTS as u32 + fallback_mt;
    bump(counter::EXTFRAG_BASE + pair);
    if fallback_order < load_const(&PAGEBLOCK_ORDER) {
        bump(counter::EXTFRAG_FRAGMENTING_BASE + pair);
        if !is_self() {
            stacks::on_fragmenting_fallback(ctx, fallback_order, alloc_mt, fallback_mt);
        }
    }
    Ok(())
}

// TP_PROTO(int order, gfp_t gfp_flags) (5.x and later)
btf_and_raw_tracepoint!(
    "mm_vmscan_direct_reclaim_begin",
    reclaim_begin_btf,
    reclaim_begin_raw,
    reclaim_begin
);
fn reclaim_begin<C: StackIdContext>(ctx: &C, arg: impl Fn(usize) -> u64) -> Result<(), i64> {
    if !is_self() {
        stacks::on_reclaim_begin(ctx, arg(0) as u32);
        emit_mm(
            ctx,
            EventKind::ReclaimBegin,
            [arg(0) as u32 as u64, arg(1) as u32 as u64, 0, 0, 0, 0],
        );
    }
    Ok(())
}

// TP_PROTO(unsigned long nr_reclaimed)
btf_and_raw_tracepoint!(
    "mm_vmscan_direct_reclaim_end",
    reclaim_end_btf,
    reclaim_end_raw,
    reclaim_end
);
fn reclaim_end<C: EbpfContext>(ctx: &C, arg: impl Fn(usize) -> u64) -> Result<(), i64> {
    if !is_self() {
        stacks::on_stall_end(stall_kind::RECLAIM);
        emit_mm(ctx, EventKind::ReclaimEnd, [arg(0), 0, 0, 0, 0, 0]);
    }
    Ok(())
}
