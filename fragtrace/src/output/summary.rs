//! The end-of-run summary, as text or as one JSON object.
use std::fmt::Write as _;

use fragtrace_common::ORDER_BUCKETS;

use super::json::{HookJson, StackJson, SummaryJson, TaskJson};
use crate::{analysis::stats::FailureStats, hooks::counters::CounterValues};

pub struct Summary<'a> {
    pub duration_s: f64,
    pub counters: &'a CounterValues,
    pub stats: &'a FailureStats,
    pub hooks: Vec<HookJson>,
    pub top: usize,
}

impl Summary<'_> {
    pub fn json(&self) -> String {
        let s = SummaryJson {
            kind: "summary",
            duration_s: (self.duration_s * 1e6).round() / 1e6,
            alloc_by_order: &self.counters.alloc_by_order,
            fail_by_order: &self.counters.fail_by_order,
            dropped: self.counters.ringbuf_drops,
            events: self.stats.shown,
            undecodable: self.stats.undecodable,
            top_tasks: self
                .stats
                .top_tasks(self.top)
                .into_iter()
                .map(|((comm, pid), failures)| TaskJson {
                    comm,
                    pid: *pid,
                    failures,
                })
                .collect(),
            top_stacks: self
                .stats
                .top_stacks(self.top)
                .into_iter()
                .map(|(stack, failures)| StackJson { failures, stack })
                .collect(),
            hooks: self.hooks.clone(),
        };
        serde_json::to_string(&s).expect("summary serializes")
    }

    pub fn text(&self) -> String {
        let c = self.counters;
        let mut s = String::new();
        let _ = writeln!(s, "\n=== fragtrace summary: {:.1} s ===", self.duration_s);
        let _ = writeln!(
            s,
            "{:>5} {:>14} {:>10} {:>12}",
            "order", "allocations", "failures", "failure rate"
        );
        for order in 0..ORDER_BUCKETS {
            let (a, f) = (c.alloc_by_order[order], c.fail_by_order[order]);
            if a == 0 && f == 0 {
                continue;
            }
            let label = if order == ORDER_BUCKETS - 1 {
                format!("{order}+")
            } else {
                order.to_string()
            };
            let _ = writeln!(s, "{label:>5} {a:>14} {f:>10} {:>12}", rate(f, a + f));
        }
        let _ = writeln!(
            s,
            "{:>5} {:>14} {:>10} {:>12}",
            "all",
            c.allocs(),
            c.failures(),
            rate(c.failures(), c.allocs() + c.failures())
        );
        let tasks = self.stats.top_tasks(self.top);
        if !tasks.is_empty() {
            let _ = writeln!(s, "\ntop failing tasks:");
            for ((comm, pid), n) in tasks {
                let _ = writeln!(s, "  {n:>8}  {comm}[{pid}]");
            }
        }
        let stacks = self.stats.top_stacks(self.top);
        if !stacks.is_empty() {
            let _ = writeln!(s, "\ntop failing stacks:");
            for (stack, n) in stacks {
                let _ = writeln!(
                    s,
                    "  {n:>8}  {}",
                    stack.first().map_or("(no stack)", String::as_str)
                );
                for frame in stack.iter().skip(1).take(7) {
                    let _ = writeln!(s, "            {frame}");
                }
            }
        }
        let _ = writeln!(
            s,
            "\nevents shown: {}   dropped in kernel (ring buffer full): {}   undecodable: {}",
            self.stats.shown, c.ringbuf_drops, self.stats.undecodable
        );
        s
    }
}

fn rate(failures: u64, total: u64) -> String {
    if total == 0 {
        return "-".into();
    }
    let pct = failures as f64 * 100.0 / total as f64;
    if failures > 0 && pct < 0.001 {
        "<0.001%".into()
    } else {
        format!("{pct:.3}%")
    }
}
