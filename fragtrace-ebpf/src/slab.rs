//! The kmem_cache_create family returning NULL, with the cache name. The kernel's entry point
//! moved: `__kmem_cache_create_args` (6.12+), `kmem_cache_create_usercopy` (4.16+, which
//! `kmem_cache_create` calls); user space picks the one this kernel has.

use aya_ebpf::{
    EbpfContext,
    helpers::bpf_probe_read_kernel_str_bytes,
    macros::{fexit, kprobe, kretprobe, map},
    maps::HashMap,
    programs::{FExitContext, ProbeContext, RetProbeContext},
};
use fragtrace_common::{EventKind, SLAB_NAME_LEN, SlabCreateFailEvent, TASK_COMM_LEN, counter};

use crate::maps::{EVENTS, bump, current_comm_into, current_tid, header, is_self};

/// The name argument of calls in progress, for the kretprobe.
#[map]
static SLAB_CREATE_NAMES: HashMap<u32, u64> = HashMap::with_max_entries(4096, 0);

fn report_failure<C: EbpfContext>(_ctx: &C, name_ptr: u64) {
    if is_self() {
        return;
    }
    let mut ev = SlabCreateFailEvent {
        header: header(EventKind::SlabCreateFail),
        comm: [0; TASK_COMM_LEN],
        name: [0; SLAB_NAME_LEN],
    };
    current_comm_into(&mut ev.comm);
    // SAFETY: a checked read of a kernel string into a fixed buffer.
    let _ = unsafe { bpf_probe_read_kernel_str_bytes(name_ptr as *const u8, &mut ev.name) };
    if EVENTS.output::<SlabCreateFailEvent>(&ev, 0).is_err() {
        bump(counter::RINGBUF_DROPS);
    }
}

// __kmem_cache_create_args(const char *name, unsigned int object_size,
//                          struct kmem_cache_args *args, slab_flags_t flags)
#[fexit(function = "__kmem_cache_create_args")]
pub fn slab_create_args_fexit(ctx: FExitContext) -> i32 {
    if ctx.arg::<u64>(4) == 0 {
        report_failure(&ctx, ctx.arg::<u64>(0));
    }
    0
}

// kmem_cache_create_usercopy(const char *name, unsigned int size, unsigned int align,
//     slab_flags_t flags, unsigned int useroffset, unsigned int usersize, void (*ctor)(void *))
#[fexit(function = "kmem_cache_create_usercopy")]
pub fn slab_create_usercopy_fexit(ctx: FExitContext) -> i32 {
    if ctx.arg::<u64>(7) == 0 {
        report_failure(&ctx, ctx.arg::<u64>(0));
    }
    0
}

/// Entry of either function: the name is the first argument of both.
#[kprobe]
pub fn slab_create_kprobe(ctx: ProbeContext) -> u32 {
    if let Some(name) = ctx.arg::<u64>(0) {
        let _ = SLAB_CREATE_NAMES.insert(current_tid(), name, 0);
    }
    0
}

#[kretprobe]
pub fn slab_create_kretprobe(ctx: RetProbeContext) -> u32 {
    let tid = current_tid();
    // SAFETY: map lookup by value.
    let Some(name) = (unsafe { SLAB_CREATE_NAMES.get(tid) }).copied() else {
        return 0;
    };
    let _ = SLAB_CREATE_NAMES.remove(tid);
    if ctx.ret::<u64>() == 0 {
        report_failure(&ctx, name);
    }
    0
}
