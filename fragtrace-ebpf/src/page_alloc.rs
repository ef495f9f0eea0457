//! `kmem:mm_page_alloc`: per-order counters on success, one ring-buffer event per failure.
//!
//! Three attach forms share one handler; user space loads the first the kernel accepts
//! (tp_btf, then raw_tp, then the classic tracepoint).

use core::ffi::c_void;

use aya_ebpf::{
    EbpfContext,
    helpers::{
        bpf_get_current_cgroup_id, bpf_get_current_comm, bpf_get_current_pid_tgid,
        bpf_get_smp_processor_id, bpf_get_stack, bpf_ktime_get_ns,
    },
    macros::{btf_tracepoint, raw_tracepoint, tracepoint},
    programs::{BtfTracePointContext, RawTracePointContext, TracePointContext},
};
use aya_log_ebpf::warn;
use fragtrace_common::{AllocFailEvent, EventKind, MAX_ORDER, MAX_STACK_DEPTH, counter};

use crate::maps::{EVENTS, bump, is_self};

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

#[inline(always)]
fn load_const(v: &u32) -> usize {
    // SAFETY: a read of a load-time constant.
    unsafe { core::ptr::read_volatile(v) as usize }
}

struct PageAlloc {
    failed: bool,
    order: u32,
    gfp_flags: u64,
    migratetype: i32,
}

#[btf_tracepoint(function = "mm_page_alloc")]
pub fn page_alloc_btf(ctx: BtfTracePointContext) -> i32 {
    let alloc = PageAlloc {
        failed: ctx.arg::<*const c_void>(0).is_null(),
        order: ctx.arg::<u32>(1),
        gfp_flags: ctx.arg::<u32>(2) as u64,
        migratetype: ctx.arg::<i32>(3),
    };
    let _ = try_page_alloc(&ctx, alloc);
    0
}

#[raw_tracepoint(tracepoint = "mm_page_alloc")]
pub fn page_alloc_raw(ctx: RawTracePointContext) -> i32 {
    let alloc = PageAlloc {
        failed: ctx.arg::<*const c_void>(0).is_null(),
        order: ctx.arg::<u32>(1),
        gfp_flags: ctx.arg::<u32>(2) as u64,
        migratetype: ctx.arg::<i32>(3),
    };
    let _ = try_page_alloc(&ctx, alloc);
    0
}

#[tracepoint(category = "kmem", name = "mm_page_alloc")]
pub fn page_alloc_tp(ctx: TracePointContext) -> u32 {
    if let Ok(alloc) = read_tracepoint_record(&ctx) {
        let _ = try_page_alloc(&ctx, alloc);
    }
    0
}

fn read_tracepoint_record(ctx: &TracePointContext) -> Result<PageAlloc, i64> {
    // SAFETY: offsets come from this kernel's tracefs format for this event.
    unsafe {
        let pfn: u64 = ctx.read_at(load_const(&TP_PFN_OFFSET))?;
        let order: u32 = ctx.read_at(load_const(&TP_ORDER_OFFSET))?;
        let gfp_offset = load_const(&TP_GFP_OFFSET);
        let gfp_flags = if load_const(&TP_GFP_SIZE) == 4 {
            ctx.read_at::<u32>(gfp_offset)? as u64
        } else {
            ctx.read_at::<u64>(gfp_offset)?
        };
        let migratetype: i32 = ctx.read_at(load_const(&TP_MIGRATETYPE_OFFSET))?;
        Ok(PageAlloc {
            failed: pfn == u64::MAX,
            order,
            gfp_flags,
            migratetype,
        })
    }
}

#[inline(always)]
fn try_page_alloc<C: EbpfContext>(ctx: &C, alloc: PageAlloc) -> Result<(), i64> {
    let bucket = if alloc.order as usize > MAX_ORDER {
        MAX_ORDER as u32
    } else {
        alloc.order
    };
    if !alloc.failed {
        bump(counter::ALLOC_BASE + bucket);
        return Ok(());
    }
    if is_self() {
        return Ok(());
    }
    bump(counter::FAIL_BASE + bucket);

    let Some(mut entry) = EVENTS.reserve::<AllocFailEvent>(0) else {
        bump(counter::RINGBUF_DROPS);
        warn!(
            ctx,
            "ring buffer full: order-{} failure dropped", alloc.order
        );
        return Ok(());
    };
    let ev = entry.as_mut_ptr();
    let pid_tgid = bpf_get_current_pid_tgid();
    // SAFETY: `ev` points at a reserved record of the right size; every field is written below.
    unsafe {
        (*ev).header.kind = EventKind::AllocFail as u32;
        (*ev).header.cpu = bpf_get_smp_processor_id();
        (*ev).header.ts_ns = bpf_ktime_get_ns();
        (*ev).header.pid = (pid_tgid >> 32) as u32;
        (*ev).header.tid = pid_tgid as u32;
        (*ev).cgroup_id = bpf_get_current_cgroup_id();
        (*ev).gfp_flags = alloc.gfp_flags;
        (*ev).order = alloc.order;
        (*ev).migratetype = alloc.migratetype;
        (*ev).comm = bpf_get_current_comm().unwrap_or([0; 16]);
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
