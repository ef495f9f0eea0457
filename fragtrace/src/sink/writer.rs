//! A writer thread per output: standard output, a recording file. Analysis hands it chunks of
//! bytes through a channel bounded in bytes and never waits on it; a chunk that does not fit
//! is shed and counted. The thread measures how late each event reaches its output.
use std::{
    io::{self, Write},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
        mpsc::{self, RecvTimeoutError, TrySendError},
    },
    thread,
    time::{Duration, Instant},
};

use crate::{analysis::histogram::Latency, decode::event::MonotonicClock};

/// Bytes for the output, and the kernel times (CLOCK_MONOTONIC ns) of the events they show.
#[derive(Default)]
pub struct Chunk {
    pub bytes: Vec<u8>,
    pub event_ts: Vec<u64>,
}

impl Chunk {
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }
}

/// Where a writer thread writes.
pub trait Output: Write + Send {
    /// Ends the output (a compressed stream writes its last block).
    fn finish(self: Box<Self>) -> io::Result<()>;
}

impl Output for io::Stdout {
    fn finish(mut self: Box<Self>) -> io::Result<()> {
        self.flush()
    }
}

impl Output for std::fs::File {
    fn finish(mut self: Box<Self>) -> io::Result<()> {
        self.flush()?;
        self.sync_data()
    }
}

/// When the thread flushes what it wrote.
#[derive(Clone, Copy)]
pub enum Flush {
    /// As soon as no chunk is waiting: lines reach a pipe at once.
    WhenIdle,
    /// At most this often, and at the end (a compressed recording).
    Every(Duration),
}

/// What a writer did, for the summary.
#[derive(Default)]
pub struct WriterStats {
    /// Events in chunks shed because the queue was full (its bytes, or 4,096 chunks).
    pub shed_events: AtomicU64,
    pub shed_chunks: AtomicU64,
    pub bytes: AtomicU64,
    /// Kernel time of an event to the moment its bytes were written and flushed.
    pub lag: Mutex<Latency>,
    failed: AtomicBool,
    error: Mutex<Option<io::Error>>,
}

impl WriterStats {
    pub fn failed(&self) -> bool {
        self.failed.load(Ordering::Acquire)
    }

    /// The first write error, once (the caller reports it).
    pub fn take_error(&self) -> Option<io::Error> {
        self.error.lock().ok()?.take()
    }
}

pub struct Writer {
    tx: Option<mpsc::SyncSender<Chunk>>,
    thread: Option<thread::JoinHandle<()>>,
    pub stats: Arc<WriterStats>,
    /// Bytes handed on and not yet written.
    queued: Arc<AtomicUsize>,
    max_queued_bytes: usize,
}

/// Chunks queued at most, whatever their size.
const MAX_QUEUED_CHUNKS: usize = 4096;

impl Writer {
    /// Starts a writer thread named `name` over `out`, holding up to `max_queued_bytes` not yet
    /// written (a chunk larger than that still goes when nothing else waits).
    pub fn spawn(
        name: &str,
        out: Box<dyn Output>,
        max_queued_bytes: usize,
        flush: Flush,
    ) -> io::Result<Self> {
        let (tx, rx) = mpsc::sync_channel(MAX_QUEUED_CHUNKS);
        let stats = Arc::new(WriterStats::default());
        let queued = Arc::new(AtomicUsize::new(0));
        let (thread_stats, thread_queued) = (stats.clone(), queued.clone());
        let thread = thread::Builder::new()
            .name(name.into())
            // Memory is locked: a small stack keeps the locked thread small.
            .stack_size(256 << 10)
            .spawn(move || write_loop(out, rx, flush, &thread_stats, &thread_queued))?;
        Ok(Self {
            tx: Some(tx),
            thread: Some(thread),
            stats,
            queued,
            max_queued_bytes,
        })
    }

    /// Hands a chunk on without waiting; false when it was shed (counted).
    pub fn send(&self, chunk: Chunk) -> bool {
        if chunk.is_empty() {
            return true;
        }
        let len = chunk.bytes.len();
        let queued = self.queued.load(Ordering::Acquire);
        let sent = match &self.tx {
            Some(tx) if queued == 0 || queued + len <= self.max_queued_bytes => {
                // Counted before it can arrive: the thread subtracts it once written.
                self.queued.fetch_add(len, Ordering::AcqRel);
                tx.try_send(chunk).map_err(|e| {
                    self.queued.fetch_sub(len, Ordering::AcqRel);
                    match e {
                        TrySendError::Full(c) | TrySendError::Disconnected(c) => c,
                    }
                })
            }
            _ => Err(chunk),
        };
        match sent {
            Ok(()) => true,
            Err(c) => {
                self.stats
                    .shed_events
                    .fetch_add(c.event_ts.len() as u64, Ordering::Relaxed);
                self.stats.shed_chunks.fetch_add(1, Ordering::Relaxed);
                false
            }
        }
    }

    /// Hands a chunk on, waiting for room (the summary, the trailer: never shed).
    pub fn send_wait(&self, chunk: Chunk) {
        if let Some(tx) = &self.tx {
            let len = chunk.bytes.len();
            self.queued.fetch_add(len, Ordering::AcqRel);
            if tx.send(chunk).is_err() {
                self.queued.fetch_sub(len, Ordering::AcqRel);
            }
        }
    }

    /// Writes what is queued, ends the output and the thread. The first write error, if any.
    pub fn close(mut self) -> Option<io::Error> {
        self.tx.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.stats.take_error()
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.tx.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn write_loop(
    out: Box<dyn Output>,
    rx: mpsc::Receiver<Chunk>,
    flush: Flush,
    stats: &WriterStats,
    queued: &AtomicUsize,
) {
    let mut out = Some(out);
    let mut written: Vec<u64> = Vec::new();
    let mut last_flush = Instant::now();
    let fail = |e: io::Error, out: &mut Option<Box<dyn Output>>| {
        if let Ok(mut slot) = stats.error.lock() {
            slot.get_or_insert(e);
        }
        stats.failed.store(true, Ordering::Release);
        // Output stops at the first error; what was written stays as it is.
        out.take();
    };
    loop {
        let wait = match flush {
            // Nothing written since the last flush: nothing is due until a chunk comes.
            Flush::Every(every) if !written.is_empty() => {
                every.saturating_sub(last_flush.elapsed())
            }
            _ => Duration::from_secs(3600),
        };
        let chunk = match rx.try_recv() {
            Ok(c) => Some(c),
            Err(mpsc::TryRecvError::Disconnected) => break,
            Err(mpsc::TryRecvError::Empty) => {
                // Nothing waiting: flush what is written (now, or when it is due).
                let due = match flush {
                    Flush::WhenIdle => true,
                    Flush::Every(every) => last_flush.elapsed() >= every,
                };
                if due && !written.is_empty() {
                    if let Some(o) = out.as_mut()
                        && let Err(e) = o.flush()
                    {
                        fail(e, &mut out);
                    }
                    record_lag(stats, &mut written);
                    last_flush = Instant::now();
                }
                match rx.recv_timeout(wait.max(Duration::from_millis(1))) {
                    Ok(c) => Some(c),
                    Err(RecvTimeoutError::Timeout) => None,
                    Err(RecvTimeoutError::Disconnected) => break,
                }
            }
        };
        let Some(chunk) = chunk else {
            continue;
        };
        let Some(o) = out.as_mut() else {
            queued.fetch_sub(chunk.bytes.len(), Ordering::AcqRel);
            continue;
        };
        let written_now = o.write_all(&chunk.bytes);
        queued.fetch_sub(chunk.bytes.len(), Ordering::AcqRel);
        match written_now {
            Ok(()) => {
                stats
                    .bytes
                    .fetch_add(chunk.bytes.len() as u64, Ordering::Relaxed);
                written.extend_from_slice(&chunk.event_ts);
                if written.is_empty() {
                    // Not an event (a summary): still counts as written data to flush.
                    written.push(0);
                }
            }
            Err(e) => fail(e, &mut out),
        }
    }
    if let Some(o) = out {
        if let Err(e) = o.finish() {
            fail(e, &mut None);
        } else {
            record_lag(stats, &mut written);
        }
    }
}

/// The lag of every event written since the last flush: they reached the output now.
fn record_lag(stats: &WriterStats, written: &mut Vec<u64>) {
    let now = MonotonicClock::monotonic_now_ns();
    if let Ok(mut lag) = stats.lag.lock() {
        for &ts in written.iter().filter(|&&ts| ts != 0) {
            lag.record(now.saturating_sub(ts));
        }
    }
    written.clear();
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    /// A pipe-like output that blocks until released, to stand for a stalled reader.
    struct Gate {
        open: Arc<(Mutex<bool>, std::sync::Condvar)>,
        data: Arc<Mutex<Vec<u8>>>,
    }

    impl Write for Gate {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let (lock, cv) = &*self.open;
            let mut open = lock.lock().unwrap();
            while !*open {
                open = cv.wait(open).unwrap();
            }
            self.data.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Output for Gate {
        fn finish(self: Box<Self>) -> io::Result<()> {
            Ok(())
        }
    }

    /// A stalled output never blocks the sender: what does not fit is shed and counted, and
    /// what was queued is written once the output moves again.
    #[test]
    fn a_stalled_output_sheds_and_counts() {
        let open = Arc::new((Mutex::new(false), std::sync::Condvar::new()));
        let data = Arc::new(Mutex::new(Vec::new()));
        let gate = Gate {
            open: open.clone(),
            data: data.clone(),
        };
        // Room for two bytes, each chunk one byte.
        let w = Writer::spawn("test-writer", Box::new(gate), 2, Flush::WhenIdle).unwrap();
        let started = Instant::now();
        let mut accepted = 0;
        for i in 0..10u8 {
            let chunk = Chunk {
                bytes: vec![b'a' + i],
                event_ts: vec![MonotonicClock::monotonic_now_ns()],
            };
            accepted += w.send(chunk) as usize;
        }
        assert!(started.elapsed() < Duration::from_secs(5), "send blocked");
        // The chunk in the thread's write counts until it is written.
        assert_eq!(accepted, 2);
        let shed = w.stats.shed_events.load(Ordering::Relaxed);
        assert_eq!(shed as usize, 10 - accepted);
        *open.0.lock().unwrap() = true;
        open.1.notify_all();
        let stats = w.stats.clone();
        assert!(w.close().is_none());
        assert_eq!(data.lock().unwrap().len(), accepted);
        assert_eq!(
            stats.lag.lock().unwrap().summary().unwrap().count as usize,
            accepted
        );
    }

    struct Broken;
    impl Write for Broken {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::Error::from_raw_os_error(libc::ENOSPC))
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    impl Output for Broken {
        fn finish(self: Box<Self>) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn the_first_write_error_is_kept() {
        let w = Writer::spawn("test-broken", Box::new(Broken), 4, Flush::WhenIdle).unwrap();
        w.send_wait(Chunk {
            bytes: b"x".to_vec(),
            event_ts: vec![1],
        });
        let stats = w.stats.clone();
        let err = w.close().expect("an error");
        assert_eq!(err.raw_os_error(), Some(libc::ENOSPC));
        assert!(stats.failed());
    }
}
