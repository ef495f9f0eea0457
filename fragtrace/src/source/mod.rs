//! Where the pipeline's input comes from: the kernel's ring buffer, drained on a thread of its
//! own (`ringbuf`), and the maps the kernel side counts and aggregates in (`counters`,
//! `stack_maps`); a recording (`recording`); and the host's /proc and cgroupfs, asked about the
//! tasks behind events (`host`, `container`).
pub mod container;
pub mod counters;
pub mod host;
pub mod recording;
pub mod ringbuf;
pub mod stack_maps;
