//! Stacks aggregated in the kernel instead of sent one record each: failures past the storm
//! threshold, direct compaction and reclaim stalls with their time, successful allocations of
//! `--stacks-min-order` and above, and fragmenting migratetype fallbacks. User space reads the
//! maps (and the `STACKS` frames their keys point to) for the summary, flamegraphs and metrics.

use core::intrinsics::{AtomicOrdering, atomic_xadd};

use aya_ebpf::{
    helpers::{bpf_get_current_cgroup_id, bpf_ktime_get_ns},
    macros::map,
    maps::{HashMap, PerCpuArray, StackTrace},
    programs::tracing::StackIdContext,
};
use fragtrace_common::{
    STACK_NOT_TAKEN, StackKey, StackValue, TASK_COMM_LEN, aggregation, counter, stall_kind,
};

use crate::maps::{bump, current_comm_into, current_tid, load_const};

/// Distinct kernel stacks kept: 4096 of 127 frames, 4 MiB of kernel memory, preallocated.
#[map]
pub static STACKS: StackTrace = StackTrace::with_max_entries(4096, 0);

#[map]
pub static FAIL_STACKS: HashMap<StackKey, StackValue> = HashMap::with_max_entries(8192, 0);
#[map]
pub static STALL_STACKS: HashMap<StackKey, StackValue> = HashMap::with_max_entries(4096, 0);
#[map]
pub static ALLOC_STACKS: HashMap<StackKey, StackValue> = HashMap::with_max_entries(8192, 0);
#[map]
pub static FALLBACK_STACKS: HashMap<StackKey, StackValue> = HashMap::with_max_entries(4096, 0);

/// A stall under way, by thread id.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct StallStart {
    ts_ns: u64,
    stack_id: i32,
    order: u32,
    kind: u32,
    _pad: u32,
}

#[map]
static STALL_START: HashMap<u32, StallStart> = HashMap::with_max_entries(16384, 0);

/// Direct compaction requests by thread id: [start ns, order].
#[map]
static COMPACT_REQUEST: HashMap<u32, [u64; 2]> = HashMap::with_max_entries(16384, 0);

/// Per CPU: [start of the current second, failure records sent in it, failures counted here
/// in it (the first `STORM_STACKS_PER_SEC` with their stack)].
#[map]
static STORM_WINDOW: PerCpuArray<[u64; 3]> = PerCpuArray::with_max_entries(1, 0);

/// Failure records per second and CPU before storm mode counts them here instead. Set by user
/// space (`--storm-threshold`); 0 never aggregates.
#[unsafe(no_mangle)]
static STORM_RECORDS_PER_SEC: u32 = 2000;

/// Stacks walked per second and CPU for failures counted here (`--storm-stacks`): a walk
/// costs microseconds, so past this budget a failure is counted under its order and task
/// with [`STACK_NOT_TAKEN`].
#[unsafe(no_mangle)]
static STORM_STACKS_PER_SEC: u32 = 1000;

/// Successful allocations of this order and above are aggregated by stack
/// (`--stacks-min-order`); above MAX_ORDER (the default) none are.
#[unsafe(no_mangle)]
static MIN_STACK_ORDER: u32 = u32::MAX;

const NS_PER_SEC: u64 = 1_000_000_000;

fn now() -> u64 {
    // SAFETY: helper without preconditions.
    unsafe { bpf_ktime_get_ns() }
}

fn stack_id<C: StackIdContext>(ctx: &C) -> i32 {
    match ctx.get_stackid(&STACKS, 0) {
        Ok(id) => id as i32,
        Err(e) => e,
    }
}

fn key<C: StackIdContext>(ctx: &C, order: u32, tag: u32) -> StackKey {
    key_with(stack_id(ctx), order, tag)
}

fn key_with(stack_id: i32, order: u32, tag: u32) -> StackKey {
    let mut key = StackKey {
        // SAFETY: helper without preconditions.
        cgroup_id: unsafe { bpf_get_current_cgroup_id() },
        comm: [0; TASK_COMM_LEN],
        stack_id,
        order,
        tag,
        _pad: 0,
    };
    current_comm_into(&mut key.comm);
    key
}

/// Adds one occurrence and `ns` to a map value, atomically: CPUs in a storm share keys.
///
/// # Safety
/// `v` points at a live map value.
unsafe fn add_to(v: *mut StackValue, ns: u64) {
    // SAFETY: map values are 8-byte aligned and live while the program runs. The BPF target
    // has no compare-and-swap, hence no `AtomicU64::fetch_add`; with its result unused this
    // intrinsic is the plain atomic add every kernel takes (BPF_XADD).
    unsafe {
        atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(&raw mut (*v).count, 1);
        if ns != 0 {
            atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(&raw mut (*v).total_ns, ns);
        }
    }
}

/// Adds one occurrence (and `ns`) under `key`; a full map is counted, never blocks.
fn add(map: &HashMap<StackKey, StackValue>, which: u32, key: &StackKey, ns: u64) {
    if let Some(v) = map.get_ptr_mut(key) {
        // SAFETY: a live map value.
        unsafe { add_to(v, ns) };
        return;
    }
    let first = StackValue {
        count: 1,
        total_ns: ns,
    };
    // BPF_NOEXIST: another CPU may have inserted it meanwhile; then add to that one.
    if map.insert(key, first, 1).is_err() {
        match map.get_ptr_mut(key) {
            // SAFETY: as above.
            Some(v) => unsafe { add_to(v, ns) },
            None => bump(counter::AGG_FULL_BASE + which),
        }
    }
}

/// This CPU's counts for the current second, the window rolled over first if a second has
/// passed.
fn this_second() -> Option<*mut [u64; 3]> {
    let window = STORM_WINDOW.get_ptr_mut(0)?;
    let t = now();
    // SAFETY: per-CPU slot; BPF programs run with migration disabled.
    unsafe {
        if t.wrapping_sub((*window)[0]) >= NS_PER_SEC {
            *window = [t, 0, 0];
        }
    }
    Some(window)
}

/// Whether this failure goes to the ring buffer; past the threshold it is aggregated instead
/// (and counted), so that every failure is counted exactly whatever the rate.
pub fn failure_as_record<C: StackIdContext>(ctx: &C, order: u32) -> bool {
    let limit = load_const(&STORM_RECORDS_PER_SEC) as u64;
    if limit == 0 {
        return true;
    }
    let Some(window) = this_second() else {
        return true;
    };
    // SAFETY: as in `this_second`.
    let under = unsafe {
        (*window)[1] += 1;
        (*window)[1] <= limit
    };
    if under {
        return true;
    }
    bump(counter::STORM_AGGREGATED);
    count_in(ctx, order, Some(window));
    false
}

/// Counts a failure by stack (within the stack budget), order and task instead of sending a
/// record: past the storm threshold, and when the ring buffer has no room.
pub fn count_failure<C: StackIdContext>(ctx: &C, order: u32) {
    count_in(ctx, order, this_second());
}

fn count_in<C: StackIdContext>(ctx: &C, order: u32, window: Option<*mut [u64; 3]>) {
    let budget = load_const(&STORM_STACKS_PER_SEC) as u64;
    let take_stack = match window {
        // SAFETY: as in `this_second`.
        Some(w) => unsafe {
            (*w)[2] += 1;
            (*w)[2] <= budget
        },
        None => true,
    };
    let stack_id = if take_stack {
        stack_id(ctx)
    } else {
        STACK_NOT_TAKEN
    };
    add(
        &FAIL_STACKS,
        aggregation::FAILURES,
        &key_with(stack_id, order, 0),
        0,
    );
}

/// A successful allocation: aggregated by stack when asked for and of a high enough order.
#[inline(always)]
pub fn on_allocation<C: StackIdContext>(ctx: &C, order: u32) {
    if order >= load_const(&MIN_STACK_ORDER) {
        add(
            &ALLOC_STACKS,
            aggregation::ALLOCATIONS,
            &key(ctx, order, 0),
            0,
        );
    }
}

/// `mm_compaction_try_to_compact_pages`: the thread asks for direct compaction.
pub fn on_compact_request(order: u32) {
    let _ = COMPACT_REQUEST.insert(current_tid(), [now(), order as u64], 0);
}

/// A compaction pass begins: direct when its thread asked within the last second.
pub fn on_compact_begin<C: StackIdContext>(ctx: &C) {
    let tid = current_tid();
    // SAFETY: map lookup by value; copied out.
    let Some(request) = (unsafe { COMPACT_REQUEST.get(tid) }).copied() else {
        return;
    };
    let t = now();
    if t.wrapping_sub(request[0]) >= NS_PER_SEC {
        return;
    }
    stall_begin(ctx, request[1] as u32, stall_kind::COMPACTION, t);
}

pub fn on_reclaim_begin<C: StackIdContext>(ctx: &C, order: u32) {
    stall_begin(ctx, order, stall_kind::RECLAIM, now());
}

fn stall_begin<C: StackIdContext>(ctx: &C, order: u32, kind: u32, ts_ns: u64) {
    let start = StallStart {
        ts_ns,
        stack_id: stack_id(ctx),
        order,
        kind,
        _pad: 0,
    };
    let _ = STALL_START.insert(current_tid(), start, 0);
}

/// A compaction pass or direct reclaim ends: its time goes to the stack it began on.
pub fn on_stall_end(kind: u32) {
    let tid = current_tid();
    // SAFETY: map lookup by value; copied out before removal.
    let Some(start) = (unsafe { STALL_START.get(tid) }).copied() else {
        return;
    };
    if start.kind != kind {
        return;
    }
    let _ = STALL_START.remove(tid);
    let key = key_with(start.stack_id, start.order, kind);
    add(
        &STALL_STACKS,
        aggregation::STALLS,
        &key,
        now().wrapping_sub(start.ts_ns),
    );
}

/// A fallback below pageblock order: the allocation that mixes migratetypes in a pageblock.
pub fn on_fragmenting_fallback<C: StackIdContext>(
    ctx: &C,
    fallback_order: u32,
    alloc_mt: u32,
    fallback_mt: u32,
) {
    add(
        &FALLBACK_STACKS,
        aggregation::FALLBACKS,
        &key(ctx, fallback_order, alloc_mt << 8 | fallback_mt),
        0,
    );
}
