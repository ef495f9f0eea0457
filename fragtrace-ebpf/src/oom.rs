//! `oom:mark_victim`. Its arguments changed (int pid on 5.x, task_struct on 6.x), so it is read
//! as a classic tracepoint whose `pid` field offset comes from tracefs.

use aya_ebpf::{macros::tracepoint, programs::TracePointContext};
use fragtrace_common::{EventKind, MmEvent, OomVictimEvent, TASK_COMM_LEN, counter};

use crate::{
    maps::{EVENTS, bump, current_comm_into, header, load_const},
    memcg::current_memcg_counters,
    zones::snapshot_current_node,
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
    let Some(mut entry) = EVENTS.reserve::<OomVictimEvent>(0) else {
        bump(counter::RINGBUF_DROPS);
        return Ok(());
    };
    let ev = entry.as_mut_ptr();
    // SAFETY: `ev` points at a reserved record of the right size; every field is written below.
    unsafe {
        (*ev).mm = MmEvent {
            header: header(EventKind::OomVictim),
            comm: [0; TASK_COMM_LEN],
            args: [pid as u32 as u64, 0, 0, 0, 0, 0],
        };
        current_comm_into(&mut (*ev).mm.comm);
        // The current task invoked the OOM killer; for a memory-cgroup OOM its cgroup (or an
        // ancestor) is the one at its limit. Read now: the victim and its cgroup may be gone
        // later. Written into the record at once, as the failure handler does: kept live
        // across the reservation instead, the counters' paths multiplied the states the 5.10
        // verifier walked through the zone loop below (10 s of fragtrace's start-up there).
        let [usage, max, ino, level] = current_memcg_counters().to_args();
        (*ev).mm.args[1] = usage;
        (*ev).mm.args[2] = max;
        (*ev).mm.args[3] = ino;
        (*ev).mm.args[4] = level;
        // The zones before the victim frees anything: free memory then says whether the OOM
        // killer ran with memory free.
        snapshot_current_node(core::ptr::addr_of_mut!((*ev).zones));
    }
    entry.submit(0);
    Ok(())
}
