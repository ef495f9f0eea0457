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
    /// `COUNTERS[EXTFRAG_BASE + alloc_mt * MIGRATE_SLOTS + fallback_mt]`: migratetype fallbacks.
    pub const EXTFRAG_BASE: u32 = RINGBUF_DROPS + 1;
    /// `COUNTERS[EXTFRAG_FRAGMENTING_BASE + ...]`: the same, only fallbacks below pageblock order.
    pub const EXTFRAG_FRAGMENTING_BASE: u32 = EXTFRAG_BASE + (MIGRATE_SLOTS * MIGRATE_SLOTS) as u32;
    /// kcompactd wakeups.
    pub const KCOMPACTD_WAKES: u32 =
        EXTFRAG_FRAGMENTING_BASE + (MIGRATE_SLOTS * MIGRATE_SLOTS) as u32;
    /// Compactions deferred (`mm_compaction_deferred`).
    pub const COMPACTION_DEFERRED: u32 = KCOMPACTD_WAKES + 1;
    /// Failures counted in `FAIL_STACKS` instead of sent as records (storm mode).
    pub const STORM_AGGREGATED: u32 = COMPACTION_DEFERRED + 1;
    /// `AGG_FULL_BASE + aggregation`: updates lost because that aggregation's map was full
    /// (see [`super::aggregation`]).
    pub const AGG_FULL_BASE: u32 = STORM_AGGREGATED + 1;
    pub const COUNT: u32 = AGG_FULL_BASE + super::aggregation::COUNT;
    use super::MIGRATE_SLOTS;
}

/// Migratetypes counted per (alloc, fallback) pair; the kernel has at most 7.
pub const MIGRATE_SLOTS: usize = 8;

/// The stack aggregations made in the kernel, each a hash map of [`StackKey`] to
/// [`StackValue`] over the `STACKS` stack-trace map.
pub mod aggregation {
    /// Failures past the storm threshold (`FAIL_STACKS`): counted, not sent one by one.
    pub const FAILURES: u32 = 0;
    /// Direct compaction and direct reclaim stalls (`STALL_STACKS`), with their time.
    pub const STALLS: u32 = 1;
    /// Successful allocations of `--stacks-min-order` and above (`ALLOC_STACKS`).
    pub const ALLOCATIONS: u32 = 2;
    /// Migratetype fallbacks below pageblock order (`FALLBACK_STACKS`): who fragments.
    pub const FALLBACKS: u32 = 3;
    pub const COUNT: u32 = 4;
}

/// `StackKey::tag` of a stall.
pub mod stall_kind {
    pub const COMPACTION: u32 = 1;
    pub const RECLAIM: u32 = 2;
}

/// What an aggregated stack is counted under. 40 bytes, no padding.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct StackKey {
    /// The task's cgroup v2 id.
    pub cgroup_id: u64,
    pub comm: [u8; TASK_COMM_LEN],
    /// Id in the `STACKS` map; negative (an errno) when the stack could not be kept, or
    /// [`STACK_NOT_TAKEN`].
    pub stack_id: i32,
    /// The order asked for (a fallback's: the order it fell back at).
    pub order: u32,
    /// Stalls: a [`stall_kind`]; fallbacks: `alloc_mt << 8 | fallback_mt`; else 0.
    pub tag: u32,
    pub _pad: u32,
}

/// A failure counted in the kernel without its stack: past the stack budget
/// (`STORM_STACKS_PER_SEC` per CPU), which bounds what stack walks cost in a storm.
/// Outside -4095..-1, so never one of `bpf_get_stackid`'s errnos.
pub const STACK_NOT_TAKEN: i32 = i32::MIN;

/// How often, and for stalls how long in all.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StackValue {
    pub count: u64,
    pub total_ns: u64,
}

/// Frames kept per aggregated stack (the kernel's `PERF_MAX_STACK_DEPTH`).
pub const STACK_MAP_DEPTH: usize = 127;

/// What a record is. For [`MmEvent`] kinds, the meaning of `args` is given per kind.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// [`AllocFailEvent`].
    AllocFail = 1,
    /// `mm_compaction_try_to_compact_pages`: args = [order, gfp, prio].
    CompactTry = 2,
    /// `mm_compaction_begin`: args = [].
    CompactBegin = 3,
    /// `mm_compaction_end`: args = [status].
    CompactEnd = 4,
    /// `oom:compact_retry`: args = [order, priority, result, retries, max_retries, retry?].
    CompactRetry = 5,
    /// `mm_vmscan_direct_reclaim_begin`: args = [order, gfp].
    ReclaimBegin = 6,
    /// `mm_vmscan_direct_reclaim_end`: args = [nr_reclaimed].
    ReclaimEnd = 7,
    /// `oom:mark_victim`: args = [victim pid, then the OOM invoker's memory-cgroup counters
    /// packed by [`MemcgCounters::to_args`]].
    OomVictim = 8,
    /// A netns syscall window closed: args = [op (NetnsOp), flags, start ns, return value].
    NetnsSyscall = 9,
    /// `copy_net_ns` returned: args = [start ns, return value (pointer or -errno)].
    CopyNetNs = 10,
    /// `warn_alloc` entered: args = [gfp]; the header's task is the failing one.
    AllocWarn = 11,
    /// [`SlabCreateFailEvent`].
    SlabCreateFail = 12,
}

impl EventKind {
    pub fn from_u32(v: u32) -> Option<Self> {
        Some(match v {
            1 => Self::AllocFail,
            2 => Self::CompactTry,
            3 => Self::CompactBegin,
            4 => Self::CompactEnd,
            5 => Self::CompactRetry,
            6 => Self::ReclaimBegin,
            7 => Self::ReclaimEnd,
            8 => Self::OomVictim,
            9 => Self::NetnsSyscall,
            10 => Self::CopyNetNs,
            11 => Self::AllocWarn,
            12 => Self::SlabCreateFail,
            _ => return None,
        })
    }
}

/// The syscall that opened a netns window ([`EventKind::NetnsSyscall`] args[0]).
#[repr(u64)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NetnsOp {
    Unshare = 1,
    Clone = 2,
    Clone3 = 3,
    Setns = 4,
}

impl NetnsOp {
    pub fn from_u64(v: u64) -> Option<Self> {
        Some(match v {
            1 => Self::Unshare,
            2 => Self::Clone,
            3 => Self::Clone3,
            4 => Self::Setns,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Unshare => "unshare",
            Self::Clone => "clone",
            Self::Clone3 => "clone3",
            Self::Setns => "setns",
        }
    }
}

pub const CLONE_NEWNET: u64 = 0x4000_0000;

/// `AllocFailEvent::netns` values: how the failure was tied to a netns creation in the kernel.
pub mod netns_window {
    /// Not inside any window.
    pub const NONE: u32 = 0;
    /// Inside an unshare/clone/clone3/setns(CLONE_NEWNET) syscall.
    pub const SYSCALL: u32 = 1;
    /// Inside copy_net_ns (fexit/kretprobe): the precise window.
    pub const COPY_NET_NS: u32 = 2;
}

/// A small lifecycle record: compaction, reclaim, OOM, netns, warn. `args` per [`EventKind`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct MmEvent {
    pub header: EventHeader,
    pub comm: [u8; TASK_COMM_LEN],
    pub args: [u64; 6],
}

/// `oom:mark_victim`: the [`MmEvent`] with the invoking CPU's node's zones as they were when
/// the victim was chosen, before its memory is freed.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct OomVictimEvent {
    pub mm: MmEvent,
    pub zones: ZoneSnapshot,
}

/// Length of a slab cache name kept in [`SlabCreateFailEvent`].
pub const SLAB_NAME_LEN: usize = 64;

/// A `kmem_cache_create` family call that returned NULL.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct SlabCreateFailEvent {
    pub header: EventHeader,
    pub comm: [u8; TASK_COMM_LEN],
    /// NUL-terminated cache name, e.g. `nf_conntrack_ffff8803eef66180`.
    pub name: [u8; SLAB_NAME_LEN],
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

/// A memory cgroup's page counter (`mem_cgroup.memory`), read at the moment of a failure.
/// Reading it then, not later from cgroupfs, keeps the evidence when the task exits or frees
/// memory before user space looks.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemcgCounters {
    /// Pages charged (`page_counter.usage`).
    pub usage_pages: u64,
    /// The limit in pages (`page_counter.max`).
    pub max_pages: u64,
    /// Inode number of that level's cgroup directory (`kernfs_node.id`), which names it in
    /// cgroupfs after the task is gone; 0 if unread.
    pub cgroup_ino: u64,
    /// 0 for the task's own memory cgroup, 1 for its parent, and so on.
    pub level: u32,
    /// 1 when the counters were read; 0 when this kernel's layout is unknown or a read failed.
    pub valid: u32,
}

impl MemcgCounters {
    /// Packed into four [`MmEvent`] args.
    pub fn to_args(&self) -> [u64; 4] {
        [
            self.usage_pages,
            self.max_pages,
            self.cgroup_ino,
            ((self.valid as u64) << 32) | self.level as u64,
        ]
    }

    pub fn from_args(args: &[u64]) -> Self {
        match args {
            [usage, max, ino, packed, ..] => Self {
                usage_pages: *usage,
                max_pages: *max,
                cgroup_ino: *ino,
                level: *packed as u32,
                valid: (*packed >> 32) as u32,
            },
            _ => Self::default(),
        }
    }
}

/// Levels of the memory-cgroup hierarchy walked from the task's own cgroup towards the root.
pub const MEMCG_MAX_LEVELS: u32 = 8;

/// Zones of one node read at a failure, by zone index (DMA, DMA32, Normal, Movable, Device on
/// x86-64), the way /proc/zoneinfo lists them.
pub const SNAPSHOT_ZONES: usize = 5;
/// Free-list orders read per zone (0..=MAX_ORDER).
pub const SNAPSHOT_ORDERS: usize = MAX_ORDER + 1;

/// One `struct zone`'s counters, read at the failure.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ZoneCounters {
    /// `managed_pages`; 0 for an unpopulated zone.
    pub managed_pages: u64,
    /// `vm_stat[NR_FREE_PAGES]`.
    pub free_pages: u64,
    /// `min_wmark_pages()`: `_watermark[WMARK_MIN] + watermark_boost`.
    pub min_pages: u64,
    /// `vm_stat[NR_FREE_CMA_PAGES]` (0 without CONFIG_CMA).
    pub free_cma_pages: u64,
    /// What the watermark check holds back for the highatomic reserve: `nr_free_highatomic`
    /// where the kernel has it, else `nr_reserved_highatomic`.
    pub highatomic_pages: u64,
    /// `free_area[order].nr_free`: free blocks per order, as /proc/buddyinfo.
    pub free_blocks: [u64; SNAPSHOT_ORDERS],
}

/// The failing CPU's node's zones at the failure ([`zone_snapshot`] flags say if it was read).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ZoneSnapshot {
    pub zones: [ZoneCounters; SNAPSHOT_ZONES],
    pub node: u32,
    pub flags: u32,
}

pub mod zone_snapshot {
    /// The counters were read.
    pub const VALID: u32 = 1;
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
    /// A [`netns_window`] value.
    pub netns: u32,
    /// 1 when `warn_alloc` ran for this failure (it printed `page allocation failure`).
    pub warned: u32,
    /// The task's memory-cgroup counters read in the kernel at the failure, at the level of the
    /// hierarchy with the least headroom (see [`MemcgCounters`]).
    pub memcg: MemcgCounters,
    /// The zones of the failing CPU's node at the failure.
    pub zones: ZoneSnapshot,
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
const _: () = assert!(
    core::mem::size_of::<AllocFailEvent>()
        == 24 + 8 + 8 + 4 + 4 + 16 + 4 + 4 + 32 + (5 * 16 * 8 + 8) + 8 + 127 * 8
);
const _: () = assert!(core::mem::size_of::<MemcgCounters>() == 32);
const _: () = assert!(core::mem::size_of::<OomVictimEvent>() == 24 + 16 + 48 + 5 * 16 * 8 + 8);
const _: () = assert!(core::mem::offset_of!(AllocFailEvent, memcg) % 8 == 0);
const _: () = assert!(core::mem::size_of::<MmEvent>() == 24 + 16 + 48);
const _: () = assert!(core::mem::size_of::<SlabCreateFailEvent>() == 24 + 16 + 64);
const _: () = assert!(core::mem::offset_of!(AllocFailEvent, stack) % 8 == 0);
const _: () = assert!(core::mem::size_of::<StackKey>() == 8 + 16 + 4 + 4 + 4 + 4);
const _: () = assert!(core::mem::size_of::<StackValue>() == 16);

#[cfg(feature = "user")]
mod user {
    use super::*;
    // SAFETY: plain-old-data, `#[repr(C)]`, no implicit padding (checked by the asserts above).
    unsafe impl aya::Pod for EventHeader {}
    unsafe impl aya::Pod for AllocFailEvent {}
    unsafe impl aya::Pod for MmEvent {}
    unsafe impl aya::Pod for SlabCreateFailEvent {}
    unsafe impl aya::Pod for StackKey {}
    unsafe impl aya::Pod for StackValue {}
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
    fn memcg_counters_pack_into_args() {
        let c = MemcgCounters {
            usage_pages: 16384,
            max_pages: 16385,
            cgroup_ino: 4242,
            level: 2,
            valid: 1,
        };
        assert_eq!(MemcgCounters::from_args(&c.to_args()), c);
        assert_eq!(MemcgCounters::from_args(&[]), MemcgCounters::default());
    }

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
            netns: netns_window::COPY_NET_NS,
            warned: 1,
            memcg: MemcgCounters::default(),
            zones: ZoneSnapshot::default(),
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
        assert_eq!((back.netns, back.warned), (netns_window::COPY_NET_NS, 1));
    }

    #[test]
    fn mm_event_round_trip_and_kinds() {
        let ev = MmEvent {
            header: EventHeader {
                kind: EventKind::NetnsSyscall as u32,
                ..Default::default()
            },
            comm: *b"runc:[1:CHILD]\0\0",
            args: [
                NetnsOp::Clone as u64,
                CLONE_NEWNET,
                5,
                (-12i64) as u64,
                0,
                0,
            ],
        };
        let back: MmEvent = read_record(record_bytes(&ev)).unwrap();
        assert_eq!(back.args[3] as i64, -12);
        assert_eq!(NetnsOp::from_u64(back.args[0]), Some(NetnsOp::Clone));
        for k in 1..=12 {
            assert_eq!(EventKind::from_u32(k).unwrap() as u32, k);
        }
        assert_eq!(EventKind::from_u32(13), None);
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
            netns: 0,
            warned: 0,
            memcg: MemcgCounters::default(),
            zones: ZoneSnapshot::default(),
            stack_bytes: -14,
            stack: [7; MAX_STACK_DEPTH],
        };
        assert!(ev.frames().is_empty());
    }
}
