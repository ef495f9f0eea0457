//! Pairs compaction and reclaim begin/end records per thread into stalls. Records of one thread
//! arrive in order (one ring buffer, reserved in time order), so per-thread state suffices.
use std::collections::HashMap;

use crate::decode::event::{CompactRequest, Event, Gfp, What};

/// A closed stall of one thread.
#[derive(Clone, Debug, PartialEq)]
pub enum Stall {
    /// One compaction pass over a zone (`mm_compaction_begin` to `_end`). `request` is set for
    /// direct compaction (the thread asked for it); kcompactd and proactive passes have none.
    Compaction {
        request: Option<CompactRequest>,
        status: String,
        stall_ns: u64,
    },
    /// One direct reclaim (`mm_vmscan_direct_reclaim_begin` to `_end`).
    Reclaim {
        order: u32,
        gfp: Gfp,
        stall_ns: u64,
        nr_reclaimed: u64,
    },
}

impl Stall {
    /// The order the stalled allocation asked for, where known.
    pub fn order(&self) -> Option<u32> {
        match self {
            Stall::Compaction { request, .. } => request.as_ref().map(|r| r.order),
            Stall::Reclaim { order, .. } => Some(*order),
        }
    }
}

/// Threads with unpaired state beyond this are forgotten (records lost or tasks gone).
const MAX_PENDING: usize = 65536;

#[derive(Default)]
pub struct StallTracker {
    requests: HashMap<u32, CompactRequest>,
    compaction_started: HashMap<u32, u64>,
    reclaim_started: HashMap<u32, (u64, u32, Gfp)>,
}

impl StallTracker {
    /// Feeds one event; returns a stall when it closes one.
    pub fn on(&mut self, event: &Event) -> Option<Stall> {
        self.bound();
        let (tid, ts) = (event.task.tid, event.task.ts_ns);
        match &event.what {
            What::CompactTry(request) => {
                self.requests.insert(tid, request.clone());
                None
            }
            What::CompactBegin => {
                self.compaction_started.insert(tid, ts);
                None
            }
            What::CompactEnd { status } => {
                let start = self.compaction_started.remove(&tid)?;
                Some(Stall::Compaction {
                    request: self.requests.get(&tid).cloned(),
                    status: status.clone(),
                    stall_ns: ts.saturating_sub(start),
                })
            }
            What::ReclaimBegin { order, gfp } => {
                self.reclaim_started.insert(tid, (ts, *order, gfp.clone()));
                None
            }
            What::ReclaimEnd { nr_reclaimed } => {
                let (start, order, gfp) = self.reclaim_started.remove(&tid)?;
                Some(Stall::Reclaim {
                    order,
                    gfp,
                    stall_ns: ts.saturating_sub(start),
                    nr_reclaimed: *nr_reclaimed,
                })
            }
            // The allocation this thread was compacting for has ended.
            What::AllocFail(_) => {
                self.requests.remove(&tid);
                None
            }
            _ => None,
        }
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
    use crate::decode::event::Task;

    fn ev(tid: u32, ts_ns: u64, what: What) -> Event {
        Event {
            task: Task {
                ts_ns,
                time: jiff::Timestamp::UNIX_EPOCH,
                pid: tid,
                tid,
                comm: format!("t{tid}"),
            },
            what,
        }
    }

    fn gfp(mask: u64) -> Gfp {
        Gfp {
            mask,
            names: format!("{mask:#x}"),
        }
    }

    fn end(status: &str) -> What {
        What::CompactEnd {
            status: status.into(),
        }
    }

    #[test]
    fn direct_compaction_passes_carry_the_request() {
        let mut t = StallTracker::default();
        let request = CompactRequest {
            order: 6,
            gfp: gfp(0xcc0),
            priority: 2,
        };
        assert!(
            t.on(&ev(7, 100, What::CompactTry(request.clone())))
                .is_none()
        );
        assert!(t.on(&ev(7, 1_000, What::CompactBegin)).is_none());
        // Another thread interleaves: it must not disturb thread 7.
        assert!(t.on(&ev(8, 1_500, What::CompactBegin)).is_none());
        assert_eq!(
            t.on(&ev(7, 4_000, end("complete"))),
            Some(Stall::Compaction {
                request: Some(request.clone()),
                status: "complete".into(),
                stall_ns: 3_000
            })
        );
        // A second zone pass of the same request.
        t.on(&ev(7, 5_000, What::CompactBegin));
        let stall = t.on(&ev(7, 5_500, end("skipped"))).unwrap();
        assert_eq!((stall.order(), &stall), (Some(6), &stall));
        // Thread 8 never asked: a background (kcompactd) pass.
        assert_eq!(
            t.on(&ev(8, 2_500, end("success"))),
            Some(Stall::Compaction {
                request: None,
                status: "success".into(),
                stall_ns: 1_000
            })
        );
    }

    #[test]
    fn a_failure_ends_the_request() {
        let mut t = StallTracker::default();
        let request = CompactRequest {
            order: 3,
            gfp: gfp(0xcc0),
            priority: 1,
        };
        t.on(&ev(7, 1, What::CompactTry(request)));
        let failure = crate::analysis::attribution::tests::failure(3);
        t.on(&ev(7, 2, What::AllocFail(Box::new(failure))));
        t.on(&ev(7, 9_000, What::CompactBegin));
        let Some(Stall::Compaction { request, .. }) = t.on(&ev(7, 9_100, end("complete"))) else {
            panic!("no stall");
        };
        assert_eq!(request, None);
    }

    #[test]
    fn reclaim_pairs_and_unmatched_ends_are_ignored() {
        let mut t = StallTracker::default();
        // An end whose begin came before tracing started: nothing to pair.
        assert!(
            t.on(&ev(3, 10, What::ReclaimEnd { nr_reclaimed: 5 }))
                .is_none()
        );
        assert!(t.on(&ev(3, 20, end("complete"))).is_none());
        t.on(&ev(
            3,
            100,
            What::ReclaimBegin {
                order: 3,
                gfp: gfp(0x400cc0),
            },
        ));
        let stall = t.on(&ev(3, 2_100, What::ReclaimEnd { nr_reclaimed: 32 }));
        assert_eq!(
            stall,
            Some(Stall::Reclaim {
                order: 3,
                gfp: gfp(0x400cc0),
                stall_ns: 2_000,
                nr_reclaimed: 32
            })
        );
        // Paired once only.
        assert!(
            t.on(&ev(3, 2_200, What::ReclaimEnd { nr_reclaimed: 1 }))
                .is_none()
        );
    }
}
