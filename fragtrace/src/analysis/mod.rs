//! Decoded events to findings: pairing begin/end records into stalls, attribution (netns,
//! container, memory cgroup, zone verdict), filters, and the run's aggregates (`analyzer`).
pub mod analyzer;
pub mod attribution;
pub mod filter;
pub mod histogram;
pub mod netns;
pub mod stalls;
pub mod stats;
