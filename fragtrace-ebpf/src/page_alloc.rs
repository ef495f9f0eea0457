//! `kmem:mm_page_alloc`: per-order counters on success, one ring-buffer event per failure.
//!
//! Three attach forms share one handler; user space loads the first the kernel accepts
//! (tp_btf, then raw_tp, then the classic tracepoint).

use core::ffi::c_void;

use aya_ebpf::{
    helpers::{bpf_get_current_cgroup_id, bpf_get_stack, bpf_ktime_get_ns},
    macros::tracepoint,
    programs::TracePointContext,
    programs::tracing::StackIdContext,
};
use fragtrace_common::{
    AllocFailEvent, EventKind, MAX_ORDER, MAX_STACK_DEPTH, counter, netns_window,
};

use crate::maps::{
    COPY_NET_NS_START, EVENTS, NETNS_WINDOWS, WARNED, btf_and_raw_tracepoint, bump,
    current_comm_into, current_tid, header, is_self, load_const,
};
use crate::memcg::current_memcg_counters;
use crate::stacks;
use crate::zones::snapshot_current_node;

// Field offsets in the classic tracepoint record, read from tracefs `format` by user space.
#[unsafe(no_mangle)]
static TP_PFN_OFFSET: u32 = 8;
#[unsafe(no_mangle)]
static TP_ORDER_OFFSET: u32 = 16;
#[unsafe(no_mangle)]
static TP_GFP_OFFSET: u32 = 24;
/// 4 (gfp_t on older kernels) or 8 (unsigned long on newer ones).
#[unsafe(no_mangle)]
static TP_GFP_SIZE: u32 = 8;
#[unsafe(no_mangle)]
static TP_MIGRATETYPE_OFFSET: u32 = 32;

struct PageAlloc {
    failed: bool,
    order: u32,
    gfp_flags: u64,
    migratetype: i32,
}

// TP_PROTO(struct page *page, unsigned int order, gfp_t gfp_flags, int migratetype)
btf_and_raw_tracepoint!(
    "mm_page_alloc",
    page_alloc_btf,
    page_alloc_raw,
    page_alloc_args
);

fn page_alloc_args<C: StackIdContext>(ctx: &C, arg: impl Fn(usize) -> u64) -> Result<(), i64> {
    try_page_alloc(
        ctx,
        PageAlloc {
            failed: arg(0) == 0,
            order: arg(1) as u32,
            gfp_flags: arg(2) as u32 as u64,
            migratetype: arg(3) as i32,
        },
    )
}

#[tracepoint(category = "kmem", name = "mm_page_alloc")]
pub fn page_alloc_tp(ctx: TracePointContext) -> u32 {
    if let Ok(alloc) = read_tracepoint_record(&ctx) {
        let _ = try_page_alloc(&ctx, alloc);
    }
    0
}

fn read_tracepoint_record(ctx: &TracePointContext) -> Result<PageAlloc, i64> {
    let at = |v: &u32| load_const(v) as usize;
    // SAFETY: offsets come from this kernel's tracefs format for this event.
    unsafe {
        let pfn: u64 = ctx.read_at(at(&TP_PFN_OFFSET))?;
        let order: u32 = ctx.read_at(at(&TP_ORDER_OFFSET))?;
        let gfp_flags = if load_const(&TP_GFP_SIZE) == 4 {
            ctx.read_at::<u32>(at(&TP_GFP_OFFSET))? as u64
        } else {
            ctx.read_at::<u64>(at(&TP_GFP_OFFSET))?
        };
        let migratetype: i32 = ctx.read_at(at(&TP_MIGRATETYPE_OFFSET))?;
        Ok(PageAlloc {
            failed: pfn == u64::MAX,
            order,
            gfp_flags,
            migratetype,
        })
    }
}

#[inline(always)]
fn try_page_alloc<C: StackIdContext>(ctx: &C, alloc: PageAlloc) -> Result<(), i64> {
    let bucket = if alloc.order as usize > MAX_ORDER {
        MAX_ORDER as u32
    } else {
        alloc.order
    };
    if !alloc.failed {
        bump(counter::ALLOC_BASE + bucket);
        stacks::on_allocation(ctx, alloc.order);
        return Ok(());
    }
    if is_self() {
        return Ok(());
    }
    bump(counter::FAIL_BASE + bucket);
    if !stacks::failure_as_record(ctx, alloc.order) {
        return Ok(());
    }

    let tid = current_tid();
    // SAFETY: map lookups by value; the values are plain integers.
    let netns = unsafe {
        if COPY_NET_NS_START.get(tid).is_some() {
            netns_window::COPY_NET_NS
        } else if NETNS_WINDOWS.get(tid).is_some() {
            netns_window::SYSCALL
        } else {
            netns_window::NONE
        }
    };
    // warn_alloc runs just before the failing allocator returns; a mark older than a second
    // belongs to something else (vmalloc also calls warn_alloc).
    // SAFETY: map lookup by value.
    let warned = match unsafe { WARNED.get(tid) } {
        Some(&since) => {
            let _ = WARNED.remove(tid);
            // SAFETY: helper without preconditions.
            (unsafe { bpf_ktime_get_ns() }.wrapping_sub(since) < 1_000_000_000) as u32
        }
        None => 0,
    };

    let Some(mut entry) = EVENTS.reserve::<AllocFailEvent>(0) else {
        bump(counter::RINGBUF_DROPS);
        stacks::count_failure(ctx, alloc.order);
        return Ok(());
    };
    let ev = entry.as_mut_ptr();
    // SAFETY: `ev` points at a reserved record of the right size; every field is written below.
    unsafe {
        (*ev).header = header(EventKind::AllocFail);
        (*ev).cgroup_id = bpf_get_current_cgroup_id();
        (*ev).gfp_flags = alloc.gfp_flags;
        (*ev).order = alloc.order;
        (*ev).migratetype = alloc.migratetype;
        current_comm_into(&mut (*ev).comm);
        (*ev).netns = netns;
        (*ev).warned = warned;
        (*ev).memcg = current_memcg_counters();
        snapshot_current_node(core::ptr::addr_of_mut!((*ev).zones));
        let stack_ptr = core::ptr::addr_of_mut!((*ev).stack) as *mut c_void;
        (*ev).stack_bytes = bpf_get_stack(
            ctx.as_ptr(),
            stack_ptr,
            (MAX_STACK_DEPTH * 8) as u32,
            0, // kernel stack
        );
    }
    entry.submit(0);
    Ok(())
}
