//! The EVENTS ring buffer, drained by a thread that does nothing else: it waits for records,
//! copies them into preallocated batches and hands each batch on through a bounded channel.
//! It never blocks on the consumer (/proc reads, cgroupfs, output, its own allocations): when
//! no batch is free and the channel is full, it leaves the records in the kernel's buffer and
//! comes back a few milliseconds later. Should that buffer fill, the kernel counts each failure
//! it cannot send by stack, order and task instead (with the ring-buffer drops), so a consumer
//! that falls behind costs failure records their detail, never their count.
use std::{
    os::fd::{AsRawFd, RawFd},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
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
    /// When the drain thread handed it on (CLOCK_MONOTONIC ns).
    pub handed_ns: u64,
}

impl RawBatch {
    fn with_capacity(bytes: usize) -> Self {
        let mut batch = Self {
            bytes: Vec::with_capacity(bytes),
            ends: Vec::with_capacity(RECORDS_PER_BATCH),
            handed_ns: 0,
        };
        // Touch the pages now, so that they are resident and locked before an incident.
        batch.bytes.resize(bytes, 0);
        batch.bytes.clear();
        batch
    }

    /// Whether any record still fits.
    fn has_room(&self) -> bool {
        self.bytes.len() + MAX_RECORD_BYTES <= self.bytes.capacity()
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
/// the kernel's own buffer (1 to 16 MiB, by online CPUs).
const BATCHES: usize = 16;
const BATCH_BYTES: usize = 128 << 10;
/// Records a batch can hold at most (the smallest record, an `MmEvent`, is 88 bytes).
pub const RECORDS_PER_BATCH: usize = BATCH_BYTES / 64;
/// The largest record: a batch with this much room takes any record.
const MAX_RECORD_BYTES: usize = {
    use fragtrace_common::{AllocFailEvent, MmEvent, OomVictimEvent, SlabCreateFailEvent};
    use std::mem::size_of;
    let sizes = [
        size_of::<AllocFailEvent>(),
        size_of::<OomVictimEvent>(),
        size_of::<MmEvent>(),
        size_of::<SlabCreateFailEvent>(),
    ];
    let (mut i, mut max) = (0, 0);
    while i < sizes.len() {
        if sizes[i] > max {
            max = sizes[i];
        }
        i += 1;
    }
    max
};

/// What the drain thread has done, for the summary and the metrics.
#[derive(Default)]
pub struct DrainStats {
    /// Records copied out of the kernel's buffer.
    pub records: AtomicU64,
    /// Records lost at exit (read but not taken by the consumer within the wait, or still in
    /// the kernel's buffer), and records of no known size.
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
    in_flight: Arc<AtomicUsize>,
}

impl Batches {
    /// Hands a read batch back for reuse.
    pub fn recycle(&self, mut batch: RawBatch) {
        batch.clear();
        self.in_flight.fetch_sub(1, Ordering::AcqRel);
        let _ = self.recycle.send(batch);
    }
}

/// The drain thread. Dropping it stops it too, as [`Drain::stop`] does, and waits for it.
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
        let in_flight = Arc::new(AtomicUsize::new(0));
        let worker = Worker {
            ring,
            out: Handoff {
                tx,
                free,
                recycle: recycle.clone(),
                stats: stats.clone(),
                in_flight: in_flight.clone(),
            },
            stop: stop.clone(),
            pending: None,
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
            Batches {
                rx,
                recycle,
                in_flight,
            },
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
    /// The batch being filled. It goes to the consumer at once when the consumer is idle, and
    /// when full; while the consumer is busy records keep joining it, so a consumer busy for a
    /// while costs batches, not records.
    pending: Option<RawBatch>,
}

/// The drain thread's side of the channel and of the batch pool.
struct Handoff {
    tx: tokio::sync::mpsc::Sender<RawBatch>,
    free: mpsc::Receiver<RawBatch>,
    recycle: mpsc::Sender<RawBatch>,
    stats: Arc<DrainStats>,
    /// Batches handed on and not yet recycled by the consumer.
    in_flight: Arc<AtomicUsize>,
}

/// How long a wait for records lasts before the stop flag is looked at again, and, while a
/// filled batch or the kernel's records wait for the consumer, before they are tried again.
const POLL_MS: i32 = 50;
const RETRY_MS: i32 = 5;
/// After a pass that found records, the drain lets more gather this long before it looks
/// again, so that a steady stream wakes each thread (drain, analysis, output) once per batch
/// rather than once per record: 111 -> 61 us of fragtrace's CPU per failure at 1,300 failures/s
/// here (`cargo xtask bench --only failure`). At most 2,000 records per CPU per second come
/// before storm mode; the kernel's buffer holds about 290 per CPU
/// ([`crate::hooks::loader::ring_buffer_bytes`]).
const GATHER_MS: u64 = 5;

impl Worker {
    fn run(mut self) {
        let fd = self.ring.as_raw_fd();
        let (mut blocked, mut found_records) = (false, false);
        while !self.stop.load(Ordering::Acquire) {
            self.out.stats.heartbeat_ns.store(
                crate::decode::event::MonotonicClock::monotonic_now_ns(),
                Ordering::Relaxed,
            );
            if blocked {
                // Records wait in the kernel's buffer: polling would return at once.
                thread::sleep(Duration::from_millis(RETRY_MS as u64));
            } else if found_records {
                // Let records gather in the kernel's buffer: one wakeup of each thread for many.
                thread::sleep(Duration::from_millis(GATHER_MS));
            } else {
                let waiting = self.pending.as_ref().is_some_and(|b| !b.is_empty());
                wait_readable(fd, if waiting { RETRY_MS } else { POLL_MS });
            }
            let pass = self.drain_once(false);
            (blocked, found_records) = (pass.blocked, pass.copied > 0);
        }
        // The final pass: the consumer reads until the channel closes. What it did not take
        // within the wait, and what the kernel's buffer still holds, is lost and counted.
        self.drain_once(true);
        let mut lost = self.pending.take().map_or(0, |b| b.len() as u64);
        while self.ring.next().is_some() {
            lost += 1;
        }
        self.out.stats.shed.fetch_add(lost, Ordering::Relaxed);
    }

    /// Copies the pending records into the batch being filled, handing full batches on. Stops
    /// when no batch has room: the rest stays in the kernel's buffer until the consumer frees
    /// one.
    fn drain_once(&mut self, last: bool) -> Pass {
        let (out, pending) = (&self.out, &mut self.pending);
        let mut blocked = false;
        let mut shed = 0u64;
        let mut copied = 0u64;
        loop {
            if pending.as_ref().is_some_and(|b| !b.has_room()) {
                // Full: on to the consumer if it has room; else it keeps waiting.
                match out.offer(pending.take().expect("checked above"), last) {
                    Ok(()) => {}
                    Err(full) => {
                        *pending = Some(full);
                        blocked = true;
                        break;
                    }
                }
            }
            if pending.is_none() {
                *pending = out.free_batch(last);
            }
            let Some(b) = pending.as_mut() else {
                blocked = true;
                break;
            };
            let Some(item) = self.ring.next() else {
                break;
            };
            copied += 1;
            if !b.push(&item) {
                // Larger than any record of fragtrace-common: not one of them.
                shed += 1;
            }
        }
        let idle = out.in_flight.load(Ordering::Acquire) == 0;
        if let Some(b) = pending.take() {
            // At the end, a batch the consumer did not take above is not offered again.
            if b.is_empty() || !(idle || last) || (blocked && last) {
                *pending = Some(b);
            } else if let Err(waiting) = out.offer(b, last) {
                *pending = Some(waiting);
            }
        }
        if copied > 0 {
            out.stats.records.fetch_add(copied, Ordering::Relaxed);
            out.stats.wakeups.fetch_add(1, Ordering::Relaxed);
        }
        if shed > 0 {
            out.stats.shed.fetch_add(shed, Ordering::Relaxed);
        }
        Pass { blocked, copied }
    }
}

/// What one pass of the drain did.
struct Pass {
    /// It stopped for want of room: records wait in the kernel's buffer.
    blocked: bool,
    /// Records copied out of the kernel's buffer.
    copied: u64,
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

    /// Hands a batch on; gives it back when the consumer has no room (at the end, after
    /// waiting for room a while: a consumer that stopped reading must not hang the exit).
    fn offer(&self, batch: RawBatch, wait: bool) -> Result<(), RawBatch> {
        use tokio::sync::mpsc::error::TrySendError;
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        let mut batch = batch;
        // Counted before it can arrive: the consumer may recycle it before try_send returns.
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        loop {
            batch.handed_ns = crate::decode::event::MonotonicClock::monotonic_now_ns();
            match self.tx.try_send(batch) {
                Ok(()) => return Ok(()),
                Err(TrySendError::Full(b)) if wait && std::time::Instant::now() < deadline => {
                    batch = b;
                    thread::sleep(Duration::from_millis(1));
                }
                Err(TrySendError::Full(b)) => {
                    self.in_flight.fetch_sub(1, Ordering::AcqRel);
                    return Err(b);
                }
                // The consumer is gone: nobody will read these.
                Err(TrySendError::Closed(mut b)) => {
                    self.in_flight.fetch_sub(1, Ordering::AcqRel);
                    self.stats.shed.fetch_add(b.len() as u64, Ordering::Relaxed);
                    b.clear();
                    let _ = self.recycle.send(b);
                    return Ok(());
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
