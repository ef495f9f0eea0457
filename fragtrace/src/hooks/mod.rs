//! The kernel side from user space: the hook catalog, preflight checks, loading and attaching,
//! and the counters.
pub mod catalog;
pub mod counters;
pub mod kernel_layout;
pub mod loader;
pub mod preflight;
