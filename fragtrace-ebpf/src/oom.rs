//! `oom:mark_victim`. Its arguments changed (int pid on 5.x, task_struct on 6.x), so it is read
//! as a classic tracepoint whose `pid` field offset comes from tracefs.

use aya_ebpf::{macros::tracepoint, programs::TracePointContext};
use fragtrace_common::EventKind;

use crate::{
    maps::{emit_mm, load_const},
    memcg::current_memcg_counters,
};

#[unsafe(no_mangle)]
static OOM_PID_OFFSET: u32 = 8;

#[tracepoint(category = "oom", name = "mark_victim")]
pub fn oom_mark_victim(ctx: TracePointContext) -> u32 {
    let _ = try_mark_victim(&ctx);
    0
}

fn try_mark_victim(ctx: &TracePointContext) -> Result<(), i64> {
    // SAFETY: the offset comes from this kernel's tracefs format for this event.
    let pid: i32 = unsafe { ctx.read_at(load_const(&OOM_PID_OFFSET) as usize)? };
    // The current task invoked the OOM killer; for a memory-cgroup OOM its cgroup (or an
    // ancestor) is the one at its limit. Read now: the victim and its cgroup may be gone later.
    let [usage, max, ino, level] = current_memcg_counters().to_args();
    emit_mm(
        ctx,
        EventKind::OomVictim,
        [pid as u32 as u64, usage, max, ino, level, 0],
    );
    Ok(())
}
