//! Where the pipeline's input comes from: the kernel's ring buffer, drained on a thread of its
//! own (`ringbuf`); a recording (`recording`); and the host's /proc and cgroupfs, asked about
//! the tasks behind events (`host`, `container`).
pub mod container;
pub mod host;
pub mod recording;
pub mod ringbuf;
