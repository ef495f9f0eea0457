//! The EVENTS ring buffer, drained by a thread that does nothing else: it waits for records,
//! copies them into preallocated batches and hands each batch on through a bounded channel.
//! It never blocks on the consumer: when no batch is free or the channel is full, the records
//! are shed and counted. Whatever the consumer does (/proc reads, cgroupfs, output, its own
//! allocations), the kernel's buffer keeps being emptied.
use std::{
    os::fd::{AsRawFd, RawFd},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
        mpsc,
    },
    thread,
    time::Duration,
};

use anyhow::{Context, Result};
use aya::maps::{Map, MapData, RingBuf};

/// Records copied out of the ring buffer, back to back.
pub struct RawBatch {
    bytes: Vec<u8>,
    ends: Vec<u32>,
}

impl RawBatch {
    fn with_capacity(bytes: usize) -> Self {
        let mut batch = Self {
            bytes: Vec::with_capacity(bytes),
            ends: Vec::with_capacity(bytes / 128),
        };
        // Touch the pages now, so that they are resident and locked before an incident.
        batch.bytes.resize(bytes, 0);
        batch.bytes.clear();
        batch
    }

    fn push(&mut self, record: &[u8]) -> bool {
        if self.bytes.len() + record.len() > self.bytes.capacity() {
            return false;
        }
        self.bytes.extend_from_slice(record);
        self.ends.push(self.bytes.len() as u32);
        true
    }

    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    pub fn records(&self) -> impl Iterator<Item = &[u8]> {
        let mut start = 0usize;
        self.ends.iter().map(move |&end| {
            let record = &self.bytes[start..end as usize];
            start = end as usize;
            record
        })
    }

    fn clear(&mut self) {
        self.bytes.clear();
        self.ends.clear();
    }
}

/// Batches preallocated: together they hold 2 MiB of records, about 1,100 failures, beyond
/// the kernel's own 4 MiB buffer.
const BATCHES: usize = 16;
const BATCH_BYTES: usize = 128 << 10;

/// What the drain thread has done, for the summary and the metrics.
#[derive(Default)]
pub struct DrainStats {
    /// Records copied out of the kernel's buffer.
    pub records: AtomicU64,
    /// Records shed because the consumer was behind (no free batch, or the channel full).
    pub shed: AtomicU64,
    /// Passes that found records.
    pub wakeups: AtomicU64,
    /// CLOCK_MONOTONIC ns of the thread's latest pass (at least every 50 ms while it runs).
    pub heartbeat_ns: AtomicU64,
}

/// The consumer's end: batches arrive here, and go back to the drain thread when read.
pub struct Batches {
    pub rx: tokio::sync::mpsc::Receiver<RawBatch>,
    recycle: mpsc::Sender<RawBatch>,
}

impl Batches {
    /// Hands a read batch back for reuse.
    pub fn recycle(&self, mut batch: RawBatch) {
        batch.clear();
        let _ = self.recycle.send(batch);
    }
}

/// The drain thread. Dropping it without [`Drain::finish`] stops it too.
pub struct Drain {
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
    pub stats: Arc<DrainStats>,
}

impl Drain {
    /// Starts draining `map` (the EVENTS ring buffer) on a thread of its own.
    pub fn start(map: Map) -> Result<(Self, Batches)> {
        let ring = RingBuf::try_from(map).context("EVENTS is not a ring buffer")?;
        let (tx, rx) = tokio::sync::mpsc::channel(BATCHES);
        let (recycle, free) = mpsc::channel();
        for _ in 0..BATCHES {
            let _ = recycle.send(RawBatch::with_capacity(BATCH_BYTES));
        }
        let stop = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(DrainStats::default());
        let worker = Worker {
            ring,
            out: Handoff {
                tx,
                free,
                recycle: recycle.clone(),
                stats: stats.clone(),
            },
            stop: stop.clone(),
        };
        let thread = thread::Builder::new()
            .name("fragtrace-drain".into())
            // Memory is locked: a small stack keeps the locked thread small.
            .stack_size(256 << 10)
            .spawn(move || worker.run())
            .context("cannot start the ring-buffer thread")?;
        Ok((
            Self {
                stop,
                thread: Some(thread),
                stats,
            },
            Batches { rx, recycle },
        ))
    }

    /// Asks the thread to drain what the kernel still holds, hand it on (waiting for the
    /// consumer this time) and end; the channel closes behind the last batch. The consumer
    /// keeps reading until then.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Release);
    }
}

impl Drop for Drain {
    fn drop(&mut self) {
        self.stop();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

struct Worker {
    ring: RingBuf<MapData>,
    out: Handoff,
    stop: Arc<AtomicBool>,
}

/// The drain thread's side of the channel and of the batch pool.
struct Handoff {
    tx: tokio::sync::mpsc::Sender<RawBatch>,
    free: mpsc::Receiver<RawBatch>,
    recycle: mpsc::Sender<RawBatch>,
    stats: Arc<DrainStats>,
}

/// How long a wait for records lasts before the stop flag is looked at again.
const POLL_MS: i32 = 50;

impl Worker {
    fn run(mut self) {
        let fd = self.ring.as_raw_fd();
        while !self.stop.load(Ordering::Acquire) {
            self.out.stats.heartbeat_ns.store(
                crate::decode::event::MonotonicClock::monotonic_now_ns(),
                Ordering::Relaxed,
            );
            wait_readable(fd, POLL_MS);
            drain_once(&mut self.ring, &self.out, false);
        }
        // The final pass: nothing may be shed now, the consumer reads until the channel closes.
        drain_once(&mut self.ring, &self.out, true);
    }
}

/// Copies every pending record into batches and sends them on.
fn drain_once(ring: &mut RingBuf<MapData>, out: &Handoff, last: bool) {
    let mut batch: Option<RawBatch> = None;
    let mut shed = 0u64;
    let mut copied = 0u64;
    while let Some(item) = ring.next() {
        copied += 1;
        loop {
            if batch.is_none() {
                batch = out.free_batch(last);
            }
            let Some(b) = batch.as_mut() else {
                shed += 1;
                break;
            };
            if b.push(&item) {
                break;
            }
            if b.is_empty() {
                // Larger than a batch: no record of fragtrace-common is.
                shed += 1;
                break;
            }
            shed += out.send(batch.take().expect("checked above"), last);
        }
    }
    if let Some(b) = batch {
        if b.is_empty() {
            out.put_back(b);
        } else {
            shed += out.send(b, last);
        }
    }
    if copied > 0 {
        out.stats.records.fetch_add(copied, Ordering::Relaxed);
        out.stats.wakeups.fetch_add(1, Ordering::Relaxed);
    }
    if shed > 0 {
        out.stats.shed.fetch_add(shed, Ordering::Relaxed);
    }
}

impl Handoff {
    /// A free batch: from the pool, or, at the end, by waiting for one to come back.
    fn free_batch(&self, wait: bool) -> Option<RawBatch> {
        match self.free.try_recv() {
            Ok(b) => Some(b),
            Err(_) if wait => self.free.recv_timeout(Duration::from_secs(5)).ok(),
            Err(_) => None,
        }
    }

    fn put_back(&self, mut batch: RawBatch) {
        batch.clear();
        let _ = self.recycle.send(batch);
    }

    /// Hands a batch on; returns the records shed when the consumer cannot take it.
    fn send(&self, batch: RawBatch, wait: bool) -> u64 {
        use tokio::sync::mpsc::error::TrySendError;
        let n = batch.len() as u64;
        // At the end the consumer is reading until the channel closes: wait for room, but
        // not for ever (a consumer that stopped reading must not hang the exit).
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        let mut batch = batch;
        loop {
            match self.tx.try_send(batch) {
                Ok(()) => return 0,
                Err(TrySendError::Full(b)) if wait && std::time::Instant::now() < deadline => {
                    batch = b;
                    thread::sleep(Duration::from_millis(1));
                }
                Err(TrySendError::Full(b) | TrySendError::Closed(b)) => {
                    self.put_back(b);
                    return n;
                }
            }
        }
    }
}

/// Waits until the ring buffer's fd is readable, or `timeout_ms`.
fn wait_readable(fd: RawFd, timeout_ms: i32) {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    unsafe { libc::poll(&mut pfd, 1, timeout_ms) };
}
