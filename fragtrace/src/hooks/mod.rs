//! The kernel side from user space: the hook catalog, preflight checks, loading and attaching
//! (the maps are read in source/).
pub mod catalog;
pub mod kernel_layout;
pub mod loader;
pub mod outcome;
pub mod preflight;
