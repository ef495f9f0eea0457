//! Attribution and statistics over decoded events.
pub mod filter;
pub mod stats;
