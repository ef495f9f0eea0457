//! `warn_alloc`: the allocator is about to print `page allocation failure`. It is variadic, so
//! only a kprobe can hook it.

use aya_ebpf::{helpers::bpf_ktime_get_ns, macros::kprobe, programs::ProbeContext};
use fragtrace_common::EventKind;

use crate::maps::{WARNED, current_tid, emit_mm, is_self};

// warn_alloc(gfp_t gfp_mask, nodemask_t *nodemask, const char *fmt, ...)
#[kprobe]
pub fn warn_alloc_kprobe(ctx: ProbeContext) -> u32 {
    if is_self() {
        return 0;
    }
    let gfp = ctx.arg::<u32>(0).unwrap_or(0) as u64;
    // SAFETY: helper without preconditions.
    let _ = WARNED.insert(current_tid(), unsafe { bpf_ktime_get_ns() }, 0);
    emit_mm(&ctx, EventKind::AllocWarn, [gfp, 0, 0, 0, 0, 0]);
    0
}
