//! The recording format (docs/recording.md) and its reader. A recording is the live run's input
//! kept whole: the kernel's raw records as they arrived, the host's answers and zone states in
//! the order analysis used them, the symbols the stacks need, the kernel's counters, and the
//! tables that name it all. `report` replays it through the same decode and analysis.
//!
//! Layout: the magic line, the format version (u32, little-endian), then one zstd stream of
//! frames, each `tag: u8, length: u32 LE, crc32: u32 LE, payload`. The header is the first
//! frame; raw records are bytes, every other payload is JSON. The checksum finds damage at the
//! frame it hits, so that what comes before it is still used and nothing after it is misread.
use std::{
    fs::File,
    io::{self, BufReader, Read},
    path::Path,
};

use anyhow::Result;
use serde::{Deserialize, Serialize, de::DeserializeOwned};

use super::{
    host::{Fact, ZoneSample},
    stack_maps::AggregatedStacks,
};
use crate::{
    analysis::filter::Filter,
    decode::event::KernelTables,
    error::{ExitStatus, fatal},
    health::TracerHealth,
    hooks::loader::KernelReads,
    hooks::outcome::HookJson,
    source::counters::CounterValues,
};

pub const MAGIC: &[u8; 20] = b"fragtrace recording\n";
/// Bumped on any change a reader of the previous version would misread.
pub const VERSION: u32 = 1;

/// Frame tags.
mod tag {
    pub const HEADER: u8 = 1;
    pub const RAW: u8 = 2;
    pub const ZONES: u8 = 3;
    pub const FACT: u8 = 4;
    pub const SYMBOL: u8 = 5;
    pub const COUNTERS: u8 = 6;
    pub const TRAILER: u8 = 7;
    pub const STACKS: u8 = 8;
}

/// A flight recorder's directory holds recordings named `fragtrace-<sequence>.rec`, the
/// sequence counting up across restarts of the daemon.
pub fn segment_name(sequence: u64) -> String {
    format!("fragtrace-{sequence:012}.rec")
}

/// The sequence number of a flight-recorder segment's file name.
pub fn segment_sequence(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("fragtrace-")?.strip_suffix(".rec")?;
    (!digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| digits.parse().ok())
        .flatten()
}

/// The flight-recorder segments in `dir`, oldest first, with their sequence numbers. Other
/// files are left out.
pub fn segments(dir: &Path) -> io::Result<Vec<(u64, std::path::PathBuf)>> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if let Some(seq) = entry.file_name().to_str().and_then(segment_sequence)
            && entry.file_type()?.is_file()
        {
            found.push((seq, entry.path()));
        }
    }
    found.sort();
    Ok(found)
}

/// Frames longer than this are corrupt (the largest record is under 2 KiB; a zone state with
/// many nodes a few hundred KiB).
const MAX_FRAME: u32 = 16 << 20;
/// The largest zstd window accepted (the writer's level uses 2 MiB): bounds what a damaged or
/// hostile file can make the reader allocate.
const MAX_WINDOW_LOG: u32 = 24;

/// What the recording machine was and how the run was set up.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Header {
    pub format_version: u32,
    pub fragtrace_version: String,
    pub kernel_release: String,
    pub hostname: String,
    pub boot_id: String,
    /// When recording started (RFC 3339) and the CLOCK_MONOTONIC ns of that moment.
    pub started: String,
    pub started_ns: u64,
    pub page_size: u64,
    pub tables: KernelTables,
    pub hooks: Vec<HookJson>,
    /// What the kernel read at failures in the live run, or why not.
    #[serde(default)]
    pub kernel_reads: KernelReads,
    /// The filters of the live run; `report` applies them too.
    pub filter: Filter,
}

/// A kernel text symbol that a recorded stack frame falls in.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Symbol {
    pub addr: u64,
    pub name: String,
    pub module: Option<String>,
}

/// The kernel's counters at a moment (CLOCK_MONOTONIC ns).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CounterSnapshot {
    pub at_ns: u64,
    pub counters: CounterValues,
}

/// The end of a run: written last, so its absence means the recording was cut.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Trailer {
    pub ended_ns: u64,
    pub duration_s: f64,
    pub counters: CounterValues,
    pub health: TracerHealth,
}

/// One frame after the header.
#[derive(Clone, Debug)]
pub enum Frame {
    Raw(Vec<u8>),
    Zones(ZoneSample),
    Fact(Fact),
    Symbol(Symbol),
    Counters(Box<CounterSnapshot>),
    /// The kernel's stack aggregations, whole, as last read.
    Stacks(AggregatedStacks),
    Trailer(Box<Trailer>),
}

/// Appends one frame to `out`.
pub fn encode(frame: &Frame, out: &mut Vec<u8>) {
    match frame {
        Frame::Raw(bytes) => encode_raw(bytes, out),
        Frame::Zones(z) => put_json(out, tag::ZONES, z),
        Frame::Fact(f) => put_json(out, tag::FACT, f),
        Frame::Symbol(s) => put_json(out, tag::SYMBOL, s),
        Frame::Counters(c) => put_json(out, tag::COUNTERS, c),
        Frame::Stacks(a) => put_json(out, tag::STACKS, a),
        Frame::Trailer(t) => put_json(out, tag::TRAILER, t),
    }
}

/// The magic, the version and the header frame, uncompressed-prefix first: what a writer puts
/// before its zstd stream starts (the header frame goes inside it).
pub fn encode_header(header: &Header, out: &mut Vec<u8>) {
    put_json(out, tag::HEADER, header);
}

/// Appends a raw record frame, without copying the record first.
pub fn encode_raw(bytes: &[u8], out: &mut Vec<u8>) {
    put(out, tag::RAW, bytes);
}

fn put(out: &mut Vec<u8>, tag: u8, payload: &[u8]) {
    out.push(tag);
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    out.extend_from_slice(payload);
}

fn put_json(out: &mut Vec<u8>, tag: u8, value: &impl Serialize) {
    let json = serde_json::to_vec(value).expect("recording frames serialize");
    put(out, tag, &json);
}

/// A recording opened for reading.
pub struct Recording {
    pub header: Header,
    frames: Box<dyn Read>,
    /// Why reading stopped before the trailer, once it has.
    pub cut: Option<String>,
    pub frames_read: u64,
}

impl Recording {
    /// Opens `path`. Not a recording, a newer format, or an unreadable header: a one-line
    /// error with exit status 5.
    pub fn open(path: &Path) -> Result<Self> {
        let name = path.display();
        let file = File::open(path).map_err(|e| {
            fatal(
                if e.kind() == io::ErrorKind::NotFound {
                    ExitStatus::BadInput
                } else {
                    ExitStatus::Failure
                },
                format!("cannot open {name}: {e}"),
            )
        })?;
        Self::from_reader(&name, BufReader::new(file))
    }

    /// Reads a recording from any byte stream; `name` names it in errors.
    pub fn from_reader(
        name: &dyn std::fmt::Display,
        mut file: impl io::BufRead + 'static,
    ) -> Result<Self> {
        let mut magic = [0u8; MAGIC.len()];
        if file.read_exact(&mut magic).is_err() || &magic != MAGIC {
            return Err(fatal(
                ExitStatus::BadInput,
                format!("{name} is not a fragtrace recording (made by `fragtrace record`)"),
            ));
        }
        let mut version = [0u8; 4];
        if file.read_exact(&mut version).is_err() {
            return Err(truncated_header(name));
        }
        let version = u32::from_le_bytes(version);
        if version > VERSION {
            return Err(fatal(
                ExitStatus::BadInput,
                format!(
                    "{name} is a recording of format {version}, newer than this fragtrace reads \
                     ({VERSION}): use a newer fragtrace"
                ),
            ));
        }
        let mut zstd = zstd::stream::read::Decoder::with_buffer(file)
            .map_err(|e| fatal(ExitStatus::BadInput, format!("{name}: {e}")))?;
        zstd.window_log_max(MAX_WINDOW_LOG)
            .map_err(|e| fatal(ExitStatus::Failure, format!("{name}: {e}")))?;
        let mut recording = Self {
            header: empty_header(),
            frames: Box::new(zstd),
            cut: None,
            frames_read: 0,
        };
        recording.header = match recording.read_frame() {
            Ok(Some((tag::HEADER, payload))) => serde_json::from_slice(&payload).map_err(|e| {
                fatal(
                    ExitStatus::BadInput,
                    format!("{name}: unreadable recording header: {e}"),
                )
            })?,
            _ => return Err(truncated_header(name)),
        };
        Ok(recording)
    }

    /// The next frame; None at the end, or where the file is cut or corrupt (`cut` says which).
    pub fn next_frame(&mut self) -> Option<Frame> {
        if self.cut.is_some() {
            return None;
        }
        let (tag, payload) = match self.read_frame() {
            Ok(Some(f)) => f,
            Ok(None) => {
                self.cut = Some("the recording ends without its trailer".into());
                return None;
            }
            Err(e) => {
                self.cut = Some(e);
                return None;
            }
        };
        let frame = match tag {
            tag::RAW => Ok(Frame::Raw(payload)),
            tag::ZONES => json(&payload).map(Frame::Zones),
            tag::FACT => json(&payload).map(Frame::Fact),
            tag::SYMBOL => json(&payload).map(Frame::Symbol),
            tag::COUNTERS => json(&payload).map(|c| Frame::Counters(Box::new(c))),
            tag::STACKS => json(&payload).map(Frame::Stacks),
            tag::TRAILER => json(&payload).map(|t| Frame::Trailer(Box::new(t))),
            other => Err(format!("unknown frame tag {other}")),
        };
        match frame {
            Ok(f) => {
                self.frames_read += 1;
                Some(f)
            }
            Err(e) => {
                self.cut = Some(format!("corrupt after {} frames: {e}", self.frames_read));
                None
            }
        }
    }

    /// Ok(None) at a clean end of the stream; Err where it stops inside a frame or is corrupt.
    fn read_frame(&mut self) -> Result<Option<(u8, Vec<u8>)>, String> {
        let mut head = [0u8; 9];
        match read_full(&mut self.frames, &mut head) {
            Ok(0) => return Ok(None),
            Ok(9) => {}
            Ok(_) => return Err(self.cut_inside()),
            Err(e) => return Err(self.unreadable(&e)),
        }
        let len = u32::from_le_bytes([head[1], head[2], head[3], head[4]]);
        let crc = u32::from_le_bytes([head[5], head[6], head[7], head[8]]);
        if len > MAX_FRAME {
            return Err(format!(
                "corrupt after {} frames: a frame of {len} bytes",
                self.frames_read
            ));
        }
        let mut payload = vec![0u8; len as usize];
        match read_full(&mut self.frames, &mut payload) {
            Ok(n) if n == payload.len() && crc32fast::hash(&payload) == crc => {
                Ok(Some((head[0], payload)))
            }
            Ok(n) if n == payload.len() => Err(format!(
                "corrupt after {} frames: a checksum does not match",
                self.frames_read
            )),
            Ok(_) => Err(self.cut_inside()),
            Err(e) => Err(self.unreadable(&e)),
        }
    }

    fn cut_inside(&self) -> String {
        format!("the recording is cut inside frame {}", self.frames_read + 1)
    }

    fn unreadable(&self, e: &io::Error) -> String {
        match e.kind() {
            // zstd reports a stream that stops mid-block as an unexpected end.
            io::ErrorKind::UnexpectedEof => self.cut_inside(),
            _ => format!("corrupt after {} frames: {e}", self.frames_read),
        }
    }
}

/// Reads until `buf` is full or the stream ends; the bytes read.
fn read_full(r: &mut dyn Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

fn json<T: DeserializeOwned>(payload: &[u8]) -> Result<T, String> {
    serde_json::from_slice(payload).map_err(|e| e.to_string())
}

fn truncated_header(name: &dyn std::fmt::Display) -> anyhow::Error {
    fatal(
        ExitStatus::BadInput,
        format!("{name} is cut before the end of its header: nothing was recorded"),
    )
}

fn empty_header() -> Header {
    Header {
        format_version: VERSION,
        fragtrace_version: String::new(),
        kernel_release: String::new(),
        hostname: String::new(),
        boot_id: String::new(),
        started: String::new(),
        started_ns: 0,
        page_size: 0,
        tables: KernelTables::default(),
        hooks: Vec::new(),
        kernel_reads: KernelReads::default(),
        filter: Filter::default(),
    }
}
