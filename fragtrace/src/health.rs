//! What fragtrace did to itself during a run: what it shed, how late its output was, how it
//! protected itself. Filled by the live session, shown by the summary, kept in recordings.
use serde::{Deserialize, Serialize};

use crate::analysis::histogram::LatencySummary;

/// What fragtrace did to itself during a run: what it lost, how late its output was, how it
/// protected itself. A recording keeps the live run's figures.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct TracerHealth {
    /// The kernel's ring buffer size, in bytes (scaled to the online CPUs).
    #[serde(default)]
    pub ring_buffer_bytes: u64,
    /// Records copied out of the kernel's ring buffer.
    pub records_drained: u64,
    /// Records lost at exit: analysis did not take them in time, or they were still in the
    /// kernel's buffer.
    pub drain_shed: u64,
    /// Events whose lines were shed because standard output was too slow.
    pub output_shed: u64,
    /// Events whose records were shed because the recording's disk was too slow.
    pub recording_shed: u64,
    /// From an event's kernel time to its line being written out.
    pub output_lag: Option<LatencySummary>,
    /// The same lag at each stage before the output, to show which one holds events up.
    #[serde(default, skip_serializing_if = "StageLag::is_empty")]
    pub stage_lag: StageLag,
    /// Time analysis spent on batches of records, and within it on reads that can block:
    /// /proc and cgroupfs for tasks and containers, and /proc for the zone state.
    #[serde(default, skip_serializing_if = "TimeSpent::is_empty")]
    pub batches: TimeSpent,
    /// Of that time: on a CPU, and the page faults taken.
    #[serde(default)]
    pub batches_cpu_ns: u64,
    #[serde(default)]
    pub batches_page_faults: u64,
    /// Time analysis (the main thread) waited on a run queue for a CPU while tracing.
    #[serde(default)]
    pub analysis_runqueue_wait_ns: u64,
    #[serde(default, skip_serializing_if = "TimeSpent::is_empty")]
    pub host_reads: TimeSpent,
    #[serde(default, skip_serializing_if = "TimeSpent::is_empty")]
    pub zone_reads: TimeSpent,
    /// The OOM score adjustment in force, and why it is not the one asked for.
    pub oom_score_adj: Option<i32>,
    pub oom_score_adj_error: Option<String>,
    /// Memory locked (mlockall), or why not.
    pub memory_locked: bool,
    pub memory_lock_error: Option<String>,
    /// Capabilities kept once attached (all others dropped), or why they could not be dropped.
    pub capabilities_kept: Vec<String>,
    pub capabilities_error: Option<String>,
    /// Page faults fragtrace took while tracing (after start-up): each may wait in direct
    /// reclaim under memory pressure.
    #[serde(default)]
    pub page_faults: u64,
    /// Resident set at the end and at its peak, in kB.
    pub rss_kb: Option<u64>,
    pub peak_rss_kb: Option<u64>,
}

impl TracerHealth {
    /// Everything lost after the kernel's buffer.
    pub fn shed(&self) -> u64 {
        self.drain_shed + self.output_shed + self.recording_shed
    }
}

/// From an event's kernel time to the end of each stage before its output is written.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct StageLag {
    /// The drain thread handed its batch on.
    pub drained: Option<LatencySummary>,
    /// Analysis took the batch up.
    pub picked_up: Option<LatencySummary>,
    /// Analysis handed the batch's lines to the writer threads.
    pub analysed: Option<LatencySummary>,
}

impl StageLag {
    pub fn is_empty(&self) -> bool {
        self.drained.is_none() && self.picked_up.is_none() && self.analysed.is_none()
    }
}

/// How often something ran, for how long in all, and the longest once.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct TimeSpent {
    pub count: u64,
    pub total_ns: u64,
    pub max_ns: u64,
}

impl TimeSpent {
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Runs `f`, counting the time it takes.
    pub fn time<T>(&mut self, f: impl FnOnce() -> T) -> T {
        let start = std::time::Instant::now();
        let out = f();
        self.add(start.elapsed().as_nanos() as u64);
        out
    }

    pub fn add(&mut self, ns: u64) {
        self.count += 1;
        self.total_ns += ns;
        self.max_ns = self.max_ns.max(ns);
    }
}

/// Events lost after the ring buffer, by where they were shed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Shed {
    /// Records lost at exit: analysis did not take them in time, or they were still in the
    /// kernel's buffer (while tracing, records wait there instead of being shed).
    pub analysis: u64,
    /// Events whose lines were shed because their output was too slow.
    pub event_lines: u64,
    /// Events whose records the recording (or flight recorder) shed.
    pub recording: u64,
}
