//! Maps and load-time constants shared by all programs, and the record emitters.

use aya_ebpf::{
    EbpfContext,
    helpers::{bpf_get_current_pid_tgid, bpf_get_smp_processor_id, bpf_ktime_get_ns, generated},
    macros::map,
    maps::{HashMap, PerCpuArray, RingBuf},
};
use fragtrace_common::{EventHeader, EventKind, MmEvent, TASK_COMM_LEN, counter};

/// Per-CPU counters, indexed by `fragtrace_common::counter`.
#[map]
pub static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(counter::COUNT, 0);

/// Events for user space. Resized at load to the online CPUs (user space's
/// `loader::ring_buffer_bytes`: 1 MiB holds ~590 failure records of 1,776 bytes).
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(4 << 20, 0);

/// Open netns syscall windows by thread id: [start ns, op, flags].
#[map]
pub static NETNS_WINDOWS: HashMap<u32, [u64; 3]> = HashMap::with_max_entries(16384, 0);

/// copy_net_ns calls in progress by thread id: start ns.
#[map]
pub static COPY_NET_NS_START: HashMap<u32, u64> = HashMap::with_max_entries(16384, 0);

/// Threads that entered warn_alloc, with the time: the failure that follows printed
/// `page allocation failure`.
#[map]
pub static WARNED: HashMap<u32, u64> = HashMap::with_max_entries(16384, 0);

/// fragtrace's own tgid, set by user space at load time: its own allocations are not traced.
#[unsafe(no_mangle)]
static FRAGTRACE_TGID: u32 = 0;

#[inline(always)]
pub fn load_const(v: &u32) -> u32 {
    // SAFETY: a read of a load-time constant.
    unsafe { core::ptr::read_volatile(v) }
}

/// A load-time constant of 64 bits.
#[inline(always)]
pub fn load_const_u64(v: &u64) -> u64 {
    // SAFETY: a read of a load-time constant.
    unsafe { core::ptr::read_volatile(v) }
}

/// One u64 of kernel memory; None when the address faults.
#[inline(always)]
pub fn read_kernel_u64(addr: u64) -> Option<u64> {
    // SAFETY: bpf_probe_read_kernel checks the address; a fault returns an error.
    unsafe { aya_ebpf::helpers::bpf_probe_read_kernel(addr as *const u64).ok() }
}

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
    let own = load_const(&FRAGTRACE_TGID);
    own != 0 && (bpf_get_current_pid_tgid() >> 32) as u32 == own
}

#[inline(always)]
pub fn current_tid() -> u32 {
    bpf_get_current_pid_tgid() as u32
}

/// The common header for the current task.
#[inline(always)]
pub fn header(kind: EventKind) -> EventHeader {
    let pid_tgid = bpf_get_current_pid_tgid();
    EventHeader {
        kind: kind as u32,
        // SAFETY: helper without preconditions.
        cpu: unsafe { bpf_get_smp_processor_id() },
        // SAFETY: helper without preconditions.
        ts_ns: unsafe { bpf_ktime_get_ns() },
        pid: (pid_tgid >> 32) as u32,
        tid: pid_tgid as u32,
    }
}

/// Writes the current task's name into `dst` (zeroed if the helper fails). In place: the
/// helper wrapper's `Result<[u8; 16], _>` is copied byte by byte on the BPF target (align 1),
/// with a memset loop, which cost storm mode 20 of its 355 ns per failure.
#[inline(always)]
pub fn current_comm_into(dst: &mut [u8; TASK_COMM_LEN]) {
    // SAFETY: `dst` is TASK_COMM_LEN writable bytes; the kernel zero-fills them on error.
    unsafe { generated::bpf_get_current_comm(dst.as_mut_ptr().cast(), TASK_COMM_LEN as u32) };
}

/// Sends a small lifecycle record; a full ring buffer is counted as a drop.
#[inline(always)]
pub fn emit_mm<C: EbpfContext>(_ctx: &C, kind: EventKind, args: [u64; 6]) {
    let mut ev = MmEvent {
        header: header(kind),
        comm: [0; TASK_COMM_LEN],
        args,
    };
    current_comm_into(&mut ev.comm);
    if EVENTS.output::<MmEvent>(&ev, 0).is_err() {
        bump(counter::RINGBUF_DROPS);
    }
}

/// Positional arguments of tp_btf and raw_tp programs share one reader: `arg(n)` as u64.
macro_rules! btf_and_raw_tracepoint {
    ($event:literal, $btf_name:ident, $raw_name:ident, $handler:path) => {
        #[aya_ebpf::macros::btf_tracepoint(function = $event)]
        pub fn $btf_name(ctx: aya_ebpf::programs::BtfTracePointContext) -> i32 {
            let _ = $handler(&ctx, |n| ctx.arg::<u64>(n));
            0
        }

        #[aya_ebpf::macros::raw_tracepoint(tracepoint = $event)]
        pub fn $raw_name(ctx: aya_ebpf::programs::RawTracePointContext) -> i32 {
            let _ = $handler(&ctx, |n| ctx.arg::<u64>(n));
            0
        }
    };
}
pub(crate) use btf_and_raw_tracepoint;
