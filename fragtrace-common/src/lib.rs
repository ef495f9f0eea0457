//! Types shared by the eBPF programs and user space.
//!
//! Every ring-buffer record starts with an [`EventHeader`] at offset 0; its `kind` says which
//! record follows. All records are `#[repr(C)]` with explicit padding so both sides agree on the
//! layout byte for byte.
#![cfg_attr(not(test), no_std)]

/// Highest page order counted per order. Orders above it (rare, arch-specific) land in the last
/// bucket.
pub const MAX_ORDER: usize = 10;
/// Number of per-order buckets (orders 0..=MAX_ORDER).
pub const ORDER_BUCKETS: usize = MAX_ORDER + 1;
/// Kernel stack frames kept per failure; the kernel's own `perf_event_max_stack` default.
pub const MAX_STACK_DEPTH: usize = 127;
pub const TASK_COMM_LEN: usize = 16;

/// Indices into the per-CPU `COUNTERS` array beyond the per-order allocation counters.
pub mod counter {
    use super::ORDER_BUCKETS;
    /// `COUNTERS[ALLOC_BASE + order]`: successful allocations of that order.
    pub const ALLOC_BASE: u32 = 0;
    /// `COUNTERS[FAIL_BASE + order]`: failed allocations of that order (all, even if dropped).
    pub const FAIL_BASE: u32 = ORDER_BUCKETS as u32;
    /// Ring-buffer reservations that failed: events lost in the kernel.
    pub const RINGBUF_DROPS: u32 = 2 * ORDER_BUCKETS as u32;
    pub const COUNT: u32 = RINGBUF_DROPS + 1;
}

#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    AllocFail = 1,
}

impl EventKind {
    pub fn from_u32(v: u32) -> Option<Self> {
        match v {
            1 => Some(Self::AllocFail),
            _ => None,
        }
    }
}

/// Fixed header at offset 0 of every record. 24 bytes, no padding.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EventHeader {
    /// An [`EventKind`] value.
    pub kind: u32,
    pub cpu: u32,
    /// `bpf_ktime_get_ns()`: CLOCK_MONOTONIC nanoseconds.
    pub ts_ns: u64,
    /// Thread group id (the user-visible pid).
    pub pid: u32,
    /// Thread id.
    pub tid: u32,
}

/// A page allocation that returned no page (`kmem:mm_page_alloc` with page NULL / pfn -1).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct AllocFailEvent {
    pub header: EventHeader,
    pub cgroup_id: u64,
    pub gfp_flags: u64,
    pub order: u32,
    pub migratetype: i32,
    pub comm: [u8; TASK_COMM_LEN],
    /// Bytes of `stack` filled by `bpf_get_stack`, or a negative errno.
    pub stack_bytes: i64,
    pub stack: [u64; MAX_STACK_DEPTH],
}

impl AllocFailEvent {
    /// The valid frames of `stack`.
    pub fn frames(&self) -> &[u64] {
        let n = if self.stack_bytes > 0 {
            (self.stack_bytes as usize / 8).min(MAX_STACK_DEPTH)
        } else {
            0
        };
        &self.stack[..n]
    }
}

// Layout guards: a change here is a change of the kernel/user contract.
const _: () = assert!(core::mem::size_of::<EventHeader>() == 24);
const _: () =
    assert!(core::mem::size_of::<AllocFailEvent>() == 24 + 8 + 8 + 4 + 4 + 16 + 8 + 127 * 8);
const _: () = assert!(core::mem::offset_of!(AllocFailEvent, stack) % 8 == 0);

#[cfg(feature = "user")]
mod user {
    use super::*;
    // SAFETY: plain-old-data, `#[repr(C)]`, no implicit padding (checked by the asserts above).
    unsafe impl aya::Pod for EventHeader {}
    unsafe impl aya::Pod for AllocFailEvent {}
}

/// Reads a record of type `T` from raw ring-buffer bytes. `None` if the buffer is too short.
///
/// # Safety contract
/// `T` must be one of this crate's plain-old-data records.
pub fn read_record<T: Copy>(bytes: &[u8]) -> Option<T> {
    if bytes.len() < core::mem::size_of::<T>() {
        return None;
    }
    // SAFETY: length checked; read_unaligned tolerates any alignment; T is POD.
    Some(unsafe { core::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) })
}

/// Views a record as bytes (the inverse of [`read_record`]).
pub fn record_bytes<T: Copy>(record: &T) -> &[u8] {
    // SAFETY: T is a padding-free POD record; any byte pattern of it is initialised.
    unsafe {
        core::slice::from_raw_parts((record as *const T).cast::<u8>(), core::mem::size_of::<T>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alloc_fail_round_trip() {
        let mut ev = AllocFailEvent {
            header: EventHeader {
                kind: EventKind::AllocFail as u32,
                cpu: 1,
                ts_ns: 123_456_789,
                pid: 42,
                tid: 43,
            },
            cgroup_id: 0xdead_beef,
            gfp_flags: 0x0040_2dc0,
            order: 6,
            migratetype: 0,
            comm: *b"pipe-filler\0\0\0\0\0",
            stack_bytes: 3 * 8,
            stack: [0; MAX_STACK_DEPTH],
        };
        ev.stack[..3].copy_from_slice(&[0xffff_ffff_8100_0000, 2, 3]);
        let bytes = record_bytes(&ev);
        let back: AllocFailEvent = read_record(bytes).unwrap();
        assert_eq!(back.header, ev.header);
        assert_eq!(back.order, 6);
        assert_eq!(back.gfp_flags, 0x0040_2dc0);
        assert_eq!(back.frames(), &[0xffff_ffff_8100_0000, 2, 3]);
        assert_eq!(
            EventKind::from_u32(back.header.kind),
            Some(EventKind::AllocFail)
        );
    }

    #[test]
    fn short_or_negative_stacks() {
        let header: EventHeader = EventHeader::default();
        assert!(read_record::<AllocFailEvent>(record_bytes(&header)).is_none());
        let ev = AllocFailEvent {
            header,
            cgroup_id: 0,
            gfp_flags: 0,
            order: 0,
            migratetype: 0,
            comm: [0; 16],
            stack_bytes: -14,
            stack: [7; MAX_STACK_DEPTH],
        };
        assert!(ev.frames().is_empty());
    }
}
