//! Pairs compaction and reclaim begin/end records per task into stalls. Records of one task
//! arrive in order (one ring buffer, reserved in time order), so per-thread state suffices.
use std::collections::HashMap;

use fragtrace_common::EventKind;

use crate::decode::event::Task;

/// Direct compaction parameters from `mm_compaction_try_to_compact_pages`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CompactRequest {
    pub order: u32,
    pub gfp: u64,
    pub prio: i64,
}

impl CompactRequest {
    /// From a `CompactTry` record's args: [order, gfp, prio].
    pub fn from_args(args: &[u64; 6]) -> Self {
        Self {
            order: args[0] as u32,
            gfp: args[1],
            prio: args[2] as i64,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum Stall {
    /// One compaction pass over a zone (`mm_compaction_begin` to `_end`). `request` is set for
    /// direct compaction (the task asked for it); kcompactd and proactive passes have none.
    Compaction {
        task: Task,
        request: Option<CompactRequest>,
        status: i64,
        stall_ns: u64,
    },
    /// One direct reclaim (`mm_vmscan_direct_reclaim_begin` to `_end`).
    Reclaim {
        task: Task,
        order: u32,
        gfp: u64,
        stall_ns: u64,
        nr_reclaimed: u64,
    },
}

/// Threads with unpaired state beyond this are forgotten (records lost or tasks gone).
const MAX_PENDING: usize = 65536;

#[derive(Default)]
pub struct StallTracker {
    requests: HashMap<u32, CompactRequest>,
    compaction_started: HashMap<u32, u64>,
    reclaim_started: HashMap<u32, (u64, u32, u64)>,
}

impl StallTracker {
    /// Feeds one record; returns a stall when it closes one.
    pub fn on(&mut self, task: &Task, kind: EventKind, args: &[u64; 6]) -> Option<Stall> {
        self.bound();
        match kind {
            EventKind::CompactTry => {
                self.requests
                    .insert(task.tid, CompactRequest::from_args(args));
                None
            }
            EventKind::CompactBegin => {
                self.compaction_started.insert(task.tid, task.ts_ns);
                None
            }
            EventKind::CompactEnd => {
                let start = self.compaction_started.remove(&task.tid)?;
                Some(Stall::Compaction {
                    task: task.clone(),
                    request: self.requests.get(&task.tid).copied(),
                    status: args[0] as i64,
                    stall_ns: task.ts_ns.saturating_sub(start),
                })
            }
            EventKind::ReclaimBegin => {
                self.reclaim_started
                    .insert(task.tid, (task.ts_ns, args[0] as u32, args[1]));
                None
            }
            EventKind::ReclaimEnd => {
                let (start, order, gfp) = self.reclaim_started.remove(&task.tid)?;
                Some(Stall::Reclaim {
                    task: task.clone(),
                    order,
                    gfp,
                    stall_ns: task.ts_ns.saturating_sub(start),
                    nr_reclaimed: args[0],
                })
            }
            _ => None,
        }
    }

    /// The allocation this thread was compacting for has ended (it failed or succeeded).
    pub fn allocation_done(&mut self, tid: u32) {
        self.requests.remove(&tid);
    }

    fn bound(&mut self) {
        if self.requests.len() > MAX_PENDING {
            self.requests.clear();
        }
        if self.compaction_started.len() > MAX_PENDING {
            self.compaction_started.clear();
        }
        if self.reclaim_started.len() > MAX_PENDING {
            self.reclaim_started.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(tid: u32, ts_ns: u64) -> Task {
        Task {
            ts_ns,
            time: jiff::Timestamp::UNIX_EPOCH,
            pid: tid,
            tid,
            comm: format!("t{tid}"),
        }
    }

    fn feed(
        t: &mut StallTracker,
        tid: u32,
        ts: u64,
        kind: EventKind,
        a: [u64; 6],
    ) -> Option<Stall> {
        t.on(&task(tid, ts), kind, &a)
    }

    #[test]
    fn direct_compaction_passes_carry_the_request() {
        let mut t = StallTracker::default();
        assert!(
            feed(
                &mut t,
                7,
                100,
                EventKind::CompactTry,
                [6, 0xcc0, 2, 0, 0, 0]
            )
            .is_none()
        );
        assert!(feed(&mut t, 7, 1_000, EventKind::CompactBegin, [0; 6]).is_none());
        // Another thread interleaves: it must not disturb thread 7.
        assert!(feed(&mut t, 8, 1_500, EventKind::CompactBegin, [0; 6]).is_none());
        let Some(Stall::Compaction {
            request,
            status,
            stall_ns,
            ..
        }) = feed(&mut t, 7, 4_000, EventKind::CompactEnd, [8, 0, 0, 0, 0, 0])
        else {
            panic!("no stall");
        };
        assert_eq!(
            request,
            Some(CompactRequest {
                order: 6,
                gfp: 0xcc0,
                prio: 2
            })
        );
        assert_eq!((status, stall_ns), (8, 3_000));
        // A second zone pass of the same request.
        feed(&mut t, 7, 5_000, EventKind::CompactBegin, [0; 6]);
        let Some(Stall::Compaction {
            request, stall_ns, ..
        }) = feed(
            &mut t,
            7,
            5_500,
            EventKind::CompactEnd,
            [(-1i64) as u64, 0, 0, 0, 0, 0],
        )
        else {
            panic!("no second stall");
        };
        assert_eq!((request.unwrap().order, stall_ns), (6, 500));
        // Thread 8 never asked: a background (kcompactd) pass.
        let Some(Stall::Compaction {
            request, stall_ns, ..
        }) = feed(&mut t, 8, 2_500, EventKind::CompactEnd, [1, 0, 0, 0, 0, 0])
        else {
            panic!("no kcompactd stall");
        };
        assert_eq!((request, stall_ns), (None, 1_000));
        // Once its allocation ended, later passes of thread 7 are not attributed to it.
        t.allocation_done(7);
        feed(&mut t, 7, 9_000, EventKind::CompactBegin, [0; 6]);
        let Some(Stall::Compaction { request, .. }) =
            feed(&mut t, 7, 9_100, EventKind::CompactEnd, [1, 0, 0, 0, 0, 0])
        else {
            panic!();
        };
        assert_eq!(request, None);
    }

    #[test]
    fn reclaim_pairs_and_unmatched_ends_are_ignored() {
        let mut t = StallTracker::default();
        // An end whose begin came before tracing started: nothing to pair.
        assert!(feed(&mut t, 3, 10, EventKind::ReclaimEnd, [5, 0, 0, 0, 0, 0]).is_none());
        assert!(feed(&mut t, 3, 20, EventKind::CompactEnd, [1, 0, 0, 0, 0, 0]).is_none());
        feed(
            &mut t,
            3,
            100,
            EventKind::ReclaimBegin,
            [3, 0x400cc0, 0, 0, 0, 0],
        );
        let stall = feed(&mut t, 3, 2_100, EventKind::ReclaimEnd, [32, 0, 0, 0, 0, 0]).unwrap();
        assert_eq!(
            stall,
            Stall::Reclaim {
                task: task(3, 2_100),
                order: 3,
                gfp: 0x400cc0,
                stall_ns: 2_000,
                nr_reclaimed: 32
            }
        );
        // Paired once only.
        assert!(feed(&mut t, 3, 2_200, EventKind::ReclaimEnd, [1, 0, 0, 0, 0, 0]).is_none());
    }
}
