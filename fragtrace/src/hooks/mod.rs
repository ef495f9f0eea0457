//! The kernel side from user space: the hook catalog, loading, attaching, the ring buffer.
