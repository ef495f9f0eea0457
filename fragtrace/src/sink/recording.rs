//! The recording sink: frames of the recording format (`source::recording`), built as analysis
//! goes and written by a writer thread into a zstd stream flushed at least once a second, so
//! that a SIGKILL loses at most the last second. The file is created with mode 0600.
use std::{
    collections::HashSet,
    fs::File,
    io::{self, Write},
    path::Path,
    time::Duration,
};

use anyhow::Result;
use fragtrace_common::{AllocFailEvent, EventHeader, EventKind, read_record};

use super::writer::{Chunk, Flush, Output, Writer};
use crate::{
    decode::kallsyms::Kallsyms,
    error::{ExitStatus, fatal},
    source::{
        host::{Fact, ZoneSample},
        recording::{self, CounterSnapshot, Frame, Header, Symbol, Trailer},
        stack_maps::AggregatedStacks,
    },
};

/// Bytes of records the recording's writer holds before shedding (before compression).
const QUEUED_BYTES: usize = 4 << 20;
const FLUSH_EVERY: Duration = Duration::from_secs(1);

pub struct Recorder {
    writer: Writer,
    pending: Chunk,
    /// Symbol addresses already written.
    symbols: HashSet<u64>,
}

/// The zstd stream over the file.
struct Compressed(zstd::stream::write::Encoder<'static, File>);

impl Write for Compressed {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        // A zstd flush ends the current block: everything so far can be decoded.
        self.0.flush()?;
        self.0.get_mut().flush()
    }
}

impl Output for Compressed {
    fn finish(self: Box<Self>) -> io::Result<()> {
        let file = self.0.finish()?;
        file.sync_data()
    }
}

impl Recorder {
    /// Creates `path` (mode 0600, replacing a file there) and writes the header.
    pub fn create(path: &Path, header: &Header) -> Result<Self> {
        let name = path.display();
        let mut file = super::create_private(path)
            .map_err(|e| fatal(ExitStatus::Failure, format!("cannot create {name}: {e}")))?;
        let write_err =
            |e: io::Error| fatal(ExitStatus::Failure, format!("cannot write {name}: {e}"));
        file.write_all(recording::MAGIC).map_err(write_err)?;
        file.write_all(&recording::VERSION.to_le_bytes())
            .map_err(write_err)?;
        let mut zstd = zstd::stream::write::Encoder::new(file, 3).map_err(write_err)?;
        let mut head = Vec::new();
        recording::encode_header(header, &mut head);
        zstd.write_all(&head).map_err(write_err)?;
        zstd.flush().map_err(write_err)?;
        let writer = Writer::spawn(
            "fragtrace-record",
            Box::new(Compressed(zstd)),
            QUEUED_BYTES,
            Flush::Every(FLUSH_EVERY),
        )
        .map_err(|e| {
            fatal(
                ExitStatus::Failure,
                format!("cannot start the recording: {e}"),
            )
        })?;
        Ok(Self {
            writer,
            pending: Chunk::default(),
            symbols: HashSet::new(),
        })
    }

    /// A raw record as it arrived, preceded by the symbols its stack needs.
    pub fn raw(&mut self, bytes: &[u8], kallsyms: &Kallsyms) {
        if let Some(header) = read_record::<EventHeader>(bytes)
            && header.kind == EventKind::AllocFail as u32
            && let Some(failure) = read_record::<AllocFailEvent>(bytes)
        {
            self.symbols(failure.frames(), kallsyms);
            self.pending.event_ts.push(header.ts_ns);
        }
        recording::encode_raw(bytes, &mut self.pending.bytes);
    }

    /// The kernel's stack aggregations, preceded by the symbols their stacks need.
    pub fn stacks(&mut self, stacks: &AggregatedStacks, kallsyms: &Kallsyms) {
        for frames in stacks.stacks.values() {
            self.symbols(frames, kallsyms);
        }
        self.frame(&Frame::Stacks(stacks.clone()));
    }

    /// Symbol frames for the addresses whose symbols are not in the recording yet.
    fn symbols(&mut self, addresses: &[u64], kallsyms: &Kallsyms) {
        for &addr in addresses {
            let Some((start, name, module)) = kallsyms.symbol_at(addr) else {
                continue;
            };
            if self.symbols.insert(start) {
                self.frame(&Frame::Symbol(Symbol {
                    addr: start,
                    name: name.to_string(),
                    module: module.map(str::to_string),
                }));
            }
        }
    }

    pub fn facts(&mut self, facts: Vec<Fact>) {
        for f in facts {
            self.frame(&Frame::Fact(f));
        }
    }

    pub fn zone_sample(&mut self, sample: &ZoneSample) {
        self.frame(&Frame::Zones(sample.clone()));
    }

    pub fn counters(&mut self, snapshot: CounterSnapshot) {
        self.frame(&Frame::Counters(Box::new(snapshot)));
    }

    fn frame(&mut self, frame: &Frame) {
        recording::encode(frame, &mut self.pending.bytes);
    }

    /// Hands what this batch added to the writer thread.
    pub fn end_batch(&mut self) {
        let chunk = std::mem::take(&mut self.pending);
        self.writer.send(chunk);
    }

    /// True once a write failed (the file system is full, say): recording has stopped.
    pub fn failed(&self) -> bool {
        self.writer.stats.failed()
    }

    /// Events whose records were shed because the writer could not keep up.
    pub fn shed_events(&self) -> u64 {
        self.writer
            .stats
            .shed_events
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Writes the trailer and closes the file; the first write error, if any.
    pub fn finish(mut self, trailer: Trailer) -> Option<io::Error> {
        self.end_batch();
        let mut last = Chunk::default();
        recording::encode(&Frame::Trailer(Box::new(trailer)), &mut last.bytes);
        self.writer.send_wait(last);
        self.writer.close()
    }
}
