//! What fragtrace did to itself during a run: what it shed, how late its output was, how it
//! protected itself. Filled by the live session, shown by the summary, kept in recordings.
use serde::{Deserialize, Serialize};

use crate::analysis::histogram::LatencySummary;

/// What fragtrace did to itself during a run: what it lost, how late its output was, how it
/// protected itself. A recording keeps the live run's figures.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct TracerHealth {
    /// Records copied out of the kernel's ring buffer.
    pub records_drained: u64,
    /// Records shed after the ring buffer because analysis was behind.
    pub drain_shed: u64,
    /// Events whose lines were shed because standard output was too slow.
    pub output_shed: u64,
    /// Events whose records were shed because the recording's disk was too slow.
    pub recording_shed: u64,
    /// From an event's kernel time to its line being written out.
    pub output_lag: Option<LatencySummary>,
    /// The OOM score adjustment in force, and why it is not the one asked for.
    pub oom_score_adj: Option<i32>,
    pub oom_score_adj_error: Option<String>,
    /// Memory locked (mlockall), or why not.
    pub memory_locked: bool,
    pub memory_lock_error: Option<String>,
    /// Capabilities kept once attached (all others dropped), or why they could not be dropped.
    pub capabilities_kept: Vec<String>,
    pub capabilities_error: Option<String>,
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

/// Events lost after the ring buffer, by where they were shed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Shed {
    /// Records the drain thread shed because analysis was behind.
    pub analysis: u64,
    /// Events whose lines were shed because their output was too slow.
    pub event_lines: u64,
    /// Events whose records the recording (or flight recorder) shed.
    pub recording: u64,
}
