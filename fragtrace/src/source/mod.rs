//! Where the pipeline's input comes from: the kernel's ring buffer, drained on a thread of its
//! own (`ringbuf`), and the maps the kernel side counts and aggregates in (`counters`,
//! `stack_maps`); a recording (`recording`); and the host's /proc and cgroupfs, asked about the
//! tasks behind events (`host`, `container`); and the kernel's accounting of a running
//! fragtrace's programs (`program_stats`).
pub mod container;
pub mod counters;
pub mod host;
pub mod program_stats;
pub mod recording;
pub mod ringbuf;
pub mod stack_maps;
