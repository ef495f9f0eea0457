//! Attribution and statistics over decoded events: `pipeline` turns each event into an output
//! record and keeps the run's aggregates.
pub mod attribution;
pub mod container;
pub mod filter;
pub mod histogram;
pub mod netns;
pub mod pipeline;
pub mod stalls;
pub mod stats;
