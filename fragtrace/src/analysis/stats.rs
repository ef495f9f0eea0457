//! What the summary reports about the failures that passed the filters.
use std::collections::HashMap;

use crate::decode::event::{AllocFail, Stack, Task};

/// Distinct tasks and stacks counted for the top lists. Beyond, new ones are not tracked, so
/// that a daemon running for months keeps bounded memory (the failures are still counted).
const MAX_TRACKED: usize = 10_000;

#[derive(Debug, Default)]
pub struct FailureStats {
    /// Failures shown (after filters).
    pub shown: u64,
    /// Records user space could not decode.
    pub undecodable: u64,
    by_task: HashMap<(String, u32), u64>,
    by_stack: HashMap<Stack, u64>,
}

impl FailureStats {
    pub fn record(&mut self, task: &Task, failure: &AllocFail) {
        self.shown += 1;
        count(&mut self.by_task, (task.comm.clone(), task.pid));
        count(&mut self.by_stack, failure.stack.clone());
    }

    /// The `n` tasks with most failures: ((comm, pid), count), most first.
    pub fn top_tasks(&self, n: usize) -> Vec<(&(String, u32), u64)> {
        top(&self.by_task, n)
    }

    /// The `n` most frequent failing stacks, most first.
    pub fn top_stacks(&self, n: usize) -> Vec<(&Stack, u64)> {
        top(&self.by_stack, n)
    }
}

fn count<K: std::hash::Hash + Eq>(map: &mut HashMap<K, u64>, key: K) {
    if let Some(n) = map.get_mut(&key) {
        *n += 1;
    } else if map.len() < MAX_TRACKED {
        map.insert(key, 1);
    }
}

fn top<K: Ord>(map: &HashMap<K, u64>, n: usize) -> Vec<(&K, u64)> {
    let mut v: Vec<(&K, u64)> = map.iter().map(|(k, &c)| (k, c)).collect();
    // Most first; ties in key order so output is stable.
    v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0)));
    v.truncate(n);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(s: &mut FailureStats, comm: &str, pid: u32, stack: &[&str]) {
        let task = Task {
            ts_ns: 0,
            time: jiff::Timestamp::UNIX_EPOCH,
            pid,
            tid: pid,
            comm: comm.into(),
        };
        let mut failure = crate::analysis::attribution::tests::failure(3);
        failure.stack = stack.iter().map(|s| s.to_string()).collect();
        s.record(&task, &failure);
    }

    #[test]
    fn top_lists_rank_by_count_then_name() {
        let mut s = FailureStats::default();
        for _ in 0..3 {
            record(&mut s, "b", 2, &["x"]);
        }
        record(&mut s, "a", 1, &["y"]);
        record(&mut s, "c", 3, &["y"]);
        assert_eq!(s.shown, 5);
        let tasks = s.top_tasks(2);
        assert_eq!(tasks[0], (&("b".to_string(), 2), 3));
        assert_eq!(tasks[1], (&("a".to_string(), 1), 1));
        let stacks = s.top_stacks(5);
        assert_eq!(stacks[0].1, 3);
        assert_eq!((&stacks[1].0[..], stacks[1].1), (&["y".to_string()][..], 2));
    }

    /// However many tasks fail, the lists stay bounded; tasks already tracked keep counting.
    #[test]
    fn tracking_is_bounded() {
        let mut s = FailureStats::default();
        for pid in 0..MAX_TRACKED as u32 + 50 {
            record(&mut s, "t", pid, &["x"]);
        }
        record(&mut s, "t", 0, &["x"]);
        assert_eq!(s.by_task.len(), MAX_TRACKED);
        assert_eq!(s.shown, MAX_TRACKED as u64 + 51);
        assert_eq!(s.top_tasks(1)[0], (&("t".to_string(), 0), 2));
    }
}
