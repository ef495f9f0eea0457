//! Attribution and statistics over decoded events.
pub mod container;
pub mod filter;
pub mod stats;
