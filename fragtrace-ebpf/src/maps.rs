//! Maps and load-time constants shared by all programs.

use aya_ebpf::{
    helpers::bpf_get_current_pid_tgid,
    macros::map,
    maps::{PerCpuArray, RingBuf},
};
use fragtrace_common::counter;

/// Per-CPU counters, indexed by `fragtrace_common::counter`.
#[map]
pub static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(counter::COUNT, 0);

/// Events for user space. 4 MiB holds ~3,500 failure records between two drains.
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(4 << 20, 0);

/// fragtrace's own tgid, set by user space at load time: its own allocations are not traced.
#[unsafe(no_mangle)]
static FRAGTRACE_TGID: u32 = 0;

#[inline(always)]
pub fn bump(index: u32) {
    if let Some(slot) = COUNTERS.get_ptr_mut(index) {
        // SAFETY: per-CPU slot; BPF programs run with migration disabled.
        unsafe { *slot += 1 };
    }
}

/// True when the current task belongs to fragtrace itself.
#[inline(always)]
pub fn is_self() -> bool {
    // SAFETY: a read of a load-time constant.
    let own = unsafe { core::ptr::read_volatile(&FRAGTRACE_TGID) };
    own != 0 && (bpf_get_current_pid_tgid() >> 32) as u32 == own
}
