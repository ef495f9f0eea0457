//! The EVENTS ring buffer, drained with tokio's AsyncFd: wait until readable, copy every
//! pending record out, clear readiness.
use anyhow::{Context, Result};
use aya::maps::{Map, MapData, RingBuf};
use bytes::Bytes;
use tokio::io::{Interest, unix::AsyncFd};

pub struct EventReader {
    fd: AsyncFd<RingBuf<MapData>>,
}

impl EventReader {
    pub fn new(map: Map) -> Result<Self> {
        let ring = RingBuf::try_from(map).context("EVENTS is not a ring buffer")?;
        // SAFETY: the AsyncFd owns the ring buffer, so the fd stays open while registered.
        let fd = unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }
            .map_err(|e| anyhow::anyhow!("cannot poll the ring buffer: {e}"))?;
        Ok(Self { fd })
    }

    /// Waits for records, then appends all pending ones to `out`.
    pub async fn next_batch(&mut self, out: &mut Vec<Bytes>) -> Result<()> {
        let mut guard = self.fd.readable_mut().await?;
        drain(guard.get_inner_mut(), out);
        guard.clear_ready();
        Ok(())
    }

    /// Appends whatever is pending without waiting (for the final drain at exit).
    pub fn drain_now(&mut self, out: &mut Vec<Bytes>) {
        drain(self.fd.get_mut(), out);
    }
}

fn drain(ring: &mut RingBuf<MapData>, out: &mut Vec<Bytes>) {
    while let Some(item) = ring.next() {
        out.push(Bytes::copy_from_slice(&item));
    }
}
