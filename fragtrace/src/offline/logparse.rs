//! Kernel log text to incidents: page allocation failures and OOM-killer reports with their call
//! traces and Mem-Info blocks; /proc dumps and container-runtime errors found beside them.
//!
//! Streaming: [`Parser`] takes one [`Piece`] at a time and hands out each report as soon as it is
//! complete (the next line that is not part of it, a new report, or [`Parser::idle`]). Memory
//! does not grow with the log. [`parse`] runs it over a whole text.
//!
//! Pure text processing (std only), so the fuzz crate can drive it.
pub use super::lines::{KernelLine, MAX_LINE, Piece, ProgramLine, Stamp};
use super::{
    dumps::{Dump, DumpCollector},
    lines::{Joiner, looks_like_frame},
    runtime::{self, RuntimeHit},
};

/// Mem-Info figures of one zone, in kB (`Node 0 Normal free:311184kB min:55536kB ...`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LogZone {
    pub node: u32,
    pub zone: String,
    pub free_kb: Option<u64>,
    pub min_kb: Option<u64>,
    pub low_kb: Option<u64>,
    pub high_kb: Option<u64>,
    pub managed_kb: Option<u64>,
    /// `free_cma:` (3.x+).
    pub free_cma_kb: Option<u64>,
    /// `reserved_highatomic:` (5.x+).
    pub reserved_highatomic_kb: Option<u64>,
    /// `lowmem_reserve[]` in pages.
    pub lowmem_reserve: Vec<u64>,
    /// Free blocks per order from `Node 0 Normal: 34178*4kB (UEM) ...`.
    pub free_blocks: Vec<u64>,
    /// The migratetypes of each order's free blocks as printed (`UMEH`; `H` is the highatomic
    /// reserve, `R` the pre-4.4 reserve, `C` CMA, `I` isolated), empty when the kernel printed
    /// none (before 3.13, or no free block).
    pub free_types: Vec<String>,
    /// The size of an order-0 block in that list (the page size), in kB.
    pub page_kb: Option<u64>,
}

/// The OOM-killer report: who invoked it and whom it killed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OomKill {
    pub line: usize,
    pub invoker: String,
    pub gfp_mask: Option<String>,
    pub gfp_names: Option<String>,
    pub order: Option<u32>,
    pub killed_pid: Option<u32>,
    pub killed_comm: Option<String>,
    /// `CONSTRAINT_MEMCG`, `CONSTRAINT_NONE`, ... when printed (4.19+).
    pub constraint: Option<String>,
    /// The memory cgroup that hit its limit (`Memory cgroup out of memory`, `Task in X killed as
    /// a result of limit of Y`, `oom_memcg=`).
    pub memcg: Option<String>,
}

/// What started an incident.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trigger {
    AllocationFailure,
    /// An OOM-killer report with no page allocation failure before it.
    OomKiller,
}

/// Another report's Mem-Info used for an incident that printed none of its own.
#[derive(Clone, Debug, PartialEq)]
pub struct Borrowed {
    pub line: usize,
    pub comm: String,
    pub trigger: Trigger,
    pub zones: Vec<LogZone>,
    pub stamp: Stamp,
    /// Seconds from the incident to the report lent from (negative: before it), when both carry
    /// timestamps on one clock.
    pub seconds: Option<f64>,
}

/// A /proc dump used as the zone state of an incident without Mem-Info.
#[derive(Clone, Debug, PartialEq)]
pub struct DumpUse {
    pub dump: Dump,
    /// Seconds from the failure to the dump, when both carry timestamps on one clock.
    pub seconds: Option<f64>,
}

/// A container-runtime or kubelet error tied to an incident.
#[derive(Clone, Debug, PartialEq)]
pub struct RuntimeLink {
    pub hit: RuntimeHit,
    /// `time` or `position`.
    pub by: &'static str,
}

/// What the log holds beside an incident's own report, filled in by the analysis.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Evidence {
    pub borrowed: Option<Borrowed>,
    pub dump: Option<DumpUse>,
    pub runtime: Vec<RuntimeLink>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Incident {
    pub trigger: Trigger,
    pub line: usize,
    /// The last raw line that belonged to the report.
    pub last_line: usize,
    pub timestamp: Option<String>,
    pub stamp: Stamp,
    pub comm: String,
    pub order: Option<u32>,
    /// The hex mask as printed (`0x10c0d0`).
    pub mode: Option<String>,
    /// Flag names when the kernel printed them (4.6+: `mode:0x24000c0(GFP_KERNEL)`).
    pub printed_flags: Option<String>,
    pub nodemask: Option<String>,
    pub cpuset: Option<String>,
    pub mems_allowed: Option<String>,
    /// `3.10.0-514.el7.x86_64` from the `CPU: .. PID: .. Comm: ..` (or `Pid: .., comm:`) line.
    pub kernel: Option<String>,
    /// The first call trace: the failing allocation's.
    pub call_trace: Vec<String>,
    /// Frames of later traces in the same incident (the slab-cache failure's dump_stack).
    pub later_frames: Vec<String>,
    pub zones: Vec<LogZone>,
    /// The Mem-Info of an OOM-killer report tied to this failure, when the failure had none.
    pub oom_zones: Vec<LogZone>,
    /// `kmem_cache_create(NAME) failed with error -12`, or `nf_conn` from `Unable to create
    /// nf_conn slab cache`.
    pub slab_cache: Option<String>,
    pub slab_error: Option<String>,
    pub oom_kill: Option<OomKill>,
    /// The log ended inside this incident (a call trace or Mem-Info without its free lists).
    pub truncated: bool,
    pub evidence: Evidence,
    /// The stamp of the report's latest line.
    latest_stamp: Stamp,
    mem_info_started: bool,
    in_call_trace: bool,
    /// The free lists (or the OOM victim) were printed: the report's tail.
    reached_tail: bool,
}

impl Incident {
    fn new(trigger: Trigger, kl: &KernelLine, comm: &str) -> Self {
        Self {
            trigger,
            line: kl.line,
            last_line: kl.line,
            timestamp: kl.timestamp.clone(),
            stamp: kl.stamp,
            comm: comm.to_string(),
            order: None,
            mode: None,
            printed_flags: None,
            nodemask: None,
            cpuset: None,
            mems_allowed: None,
            kernel: None,
            call_trace: Vec::new(),
            later_frames: Vec::new(),
            zones: Vec::new(),
            oom_zones: Vec::new(),
            slab_cache: None,
            slab_error: None,
            oom_kill: None,
            truncated: false,
            evidence: Evidence::default(),
            latest_stamp: kl.stamp,
            mem_info_started: false,
            in_call_trace: false,
            reached_tail: false,
        }
    }

    /// Whether the report printed free lists of its own.
    pub fn has_mem_info(&self) -> bool {
        self.zones.iter().any(|z| !z.free_blocks.is_empty())
    }

    fn collecting_oom_zones(&self) -> bool {
        self.trigger == Trigger::AllocationFailure && self.oom_kill.is_some()
    }
}

/// What the parser hands out.
#[derive(Debug, PartialEq)]
pub enum Event {
    /// A complete report.
    Incident(Box<Incident>),
    /// A /proc/buddyinfo, zoneinfo or pagetypeinfo dump pasted into the log.
    Dump(Dump),
    /// A container-runtime or kubelet error.
    Runtime(RuntimeHit),
}

/// Consecutive lines foreign to a report after which it is over, before and after its tail
/// (free lists, OOM victim). Interleaved lines of other CPUs and drivers are tolerated before it.
const FOREIGN_LINES_BEFORE_TAIL: usize = 8;
const FOREIGN_LINES_AFTER_TAIL: usize = 1;
/// A line logged this long after a report's last line does not belong to it.
const REPORT_GAP_SECONDS: f64 = 10.0;

/// The incident state machine.
#[derive(Default)]
pub struct Parser {
    current: Option<Incident>,
    foreign: usize,
    dumps: DumpCollector,
    /// Lines that carried a kernel-log prefix or a known kernel message.
    pub kernel_lines: usize,
}

impl Parser {
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds one piece; complete reports, dumps and runtime errors go to `out`.
    pub fn push(&mut self, piece: Piece, out: &mut Vec<Event>) {
        match piece {
            Piece::Program(p) => {
                if let Some(hit) = runtime::detect(
                    &p.text,
                    Some(&p.program),
                    p.line,
                    p.timestamp.as_deref(),
                    p.stamp,
                ) {
                    out.push(Event::Runtime(hit));
                }
            }
            Piece::Kernel(kl) => self.push_kernel(kl, out),
        }
    }

    fn push_kernel(&mut self, kl: KernelLine, out: &mut Vec<Event>) {
        let t = kl.text.trim();
        if t.is_empty() {
            return;
        }
        if kl.prefixed || is_known_kernel_text(t) {
            self.kernel_lines += 1;
        }
        if self.dumps.push(&kl, t, out) {
            return;
        }
        if !kl.prefixed
            && let Some(hit) = runtime::detect(t, None, kl.line, kl.timestamp.as_deref(), kl.stamp)
        {
            out.push(Event::Runtime(hit));
            return;
        }
        if let Some(inc) = &self.current
            && let Some(gap) = inc.stamp_last(&kl)
            && gap > REPORT_GAP_SECONDS
        {
            self.close(out);
        }
        let header = find_header(t);
        if let Some((Header::Failure, at)) = header {
            let (comm, after) = (&t[..at], &t[at + FAILURE.len()..]);
            self.close(out);
            let mut inc = Incident::new(Trigger::AllocationFailure, &kl, task_name(comm));
            parse_failure_header(after, &mut inc);
            self.current = Some(inc);
            self.foreign = 0;
            return;
        }
        if let Some((Header::Oom, at)) = header {
            let (invoker, after) = (&t[..at], &t[at + OOM.len()..]);
            let oom = OomKill {
                line: kl.line,
                invoker: task_name(invoker).to_string(),
                gfp_mask: field(after, "gfp_mask=")
                    .map(|m| m.split('(').next().unwrap_or(m).to_string()),
                gfp_names: field(after, "gfp_mask=").and_then(|m| {
                    let (_, names) = m.split_once('(')?;
                    Some(names.trim_end_matches(')').to_string())
                }),
                order: field(after, "order=").and_then(|o| o.parse().ok()),
                ..Default::default()
            };
            match self.current.as_mut() {
                Some(inc)
                    if inc.oom_kill.is_none() && inc.trigger == Trigger::AllocationFailure =>
                {
                    // Tied to the failure before it; its Mem-Info must not overwrite the failure's.
                    inc.oom_kill = Some(oom);
                    inc.last_line = kl.line;
                    inc.reached_tail = false;
                    inc.in_call_trace = false;
                }
                _ => {
                    self.close(out);
                    let mut inc = Incident::new(Trigger::OomKiller, &kl, &oom.invoker);
                    inc.order = oom.order;
                    inc.mode = oom.gfp_mask.clone();
                    inc.printed_flags = oom.gfp_names.clone();
                    inc.oom_kill = Some(oom);
                    self.current = Some(inc);
                }
            }
            self.foreign = 0;
            return;
        }
        let Some(inc) = self.current.as_mut() else {
            return;
        };
        let belongs = if inc.collecting_oom_zones() {
            let oom_line = parse_oom_line(t, inc.oom_kill.as_mut().unwrap());
            let own = inc.has_mem_info();
            let mut zones = std::mem::take(&mut inc.oom_zones);
            let zone_line = !own && parse_zone_line(t, &mut zones);
            inc.oom_zones = zones;
            if oom_line {
                inc.reached_tail = true;
            }
            oom_line || zone_line || is_report_line(t) || own && is_mem_info_line(t)
        } else {
            let oom_line = inc.trigger == Trigger::OomKiller
                && parse_oom_line(t, inc.oom_kill.as_mut().unwrap());
            if oom_line
                && inc
                    .oom_kill
                    .as_ref()
                    .is_some_and(|o| o.killed_pid.is_some())
            {
                inc.reached_tail = true;
            }
            parse_incident_line(&kl, t, inc) || oom_line
        };
        if belongs {
            inc.last_line = kl.line;
            if kl.stamp != Stamp::default() {
                inc.last_stamp_update(kl.stamp);
            }
            self.foreign = 0;
            return;
        }
        self.foreign += 1;
        let limit = if inc.reached_tail {
            FOREIGN_LINES_AFTER_TAIL
        } else {
            FOREIGN_LINES_BEFORE_TAIL
        };
        if self.foreign >= limit {
            self.close(out);
        }
    }

    /// A quiet spell in a followed log: the report under way is as complete as it will get.
    pub fn idle(&mut self, out: &mut Vec<Event>) {
        self.dumps.finish(out);
        self.close(out);
    }

    /// End of input: a report cut short is marked truncated.
    pub fn finish(&mut self, out: &mut Vec<Event>) {
        self.dumps.finish(out);
        // Cut short only when the input ends on the report itself (no other lines after it).
        if let Some(last) = self.current.as_mut()
            && self.foreign == 0
        {
            last.truncated = (last.mem_info_started && !last.has_mem_info())
                || (last.in_call_trace && last.call_trace.is_empty());
        }
        self.close(out);
    }

    /// Whether a report or a dump is under way.
    pub fn in_report(&self) -> bool {
        self.current.is_some() || self.dumps.is_open()
    }

    fn close(&mut self, out: &mut Vec<Event>) {
        if let Some(done) = self.current.take() {
            out.push(Event::Incident(Box::new(done)));
        }
        self.foreign = 0;
    }
}

impl Incident {
    /// Seconds between this report's latest line and `kl`, on a clock both carry.
    fn stamp_last(&self, kl: &KernelLine) -> Option<f64> {
        self.latest_stamp.seconds_until(&kl.stamp)
    }

    fn last_stamp_update(&mut self, stamp: Stamp) {
        self.latest_stamp = stamp;
    }
}

/// What the parser found in a whole text.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Parsed {
    pub incidents: Vec<Incident>,
    pub dumps: Vec<Dump>,
    pub runtime: Vec<RuntimeHit>,
    /// Lines that carried a kernel-log prefix or a known kernel message.
    pub kernel_lines: usize,
}

/// Parses a whole text (no evidence linking; see `offline::analyze` for that).
pub fn parse(text: &str) -> Parsed {
    let mut joiner = Joiner::new();
    let mut parser = Parser::new();
    let mut pieces = Vec::new();
    let mut events = Vec::new();
    for raw in text.lines() {
        joiner.push(raw, &mut pieces);
        for p in pieces.drain(..) {
            parser.push(p, &mut events);
        }
    }
    joiner.flush(&mut pieces);
    for p in pieces.drain(..) {
        parser.push(p, &mut events);
    }
    parser.finish(&mut events);
    let mut parsed = Parsed {
        kernel_lines: parser.kernel_lines,
        ..Default::default()
    };
    for e in events {
        match e {
            Event::Incident(i) => parsed.incidents.push(*i),
            Event::Dump(d) => parsed.dumps.push(d),
            Event::Runtime(r) => parsed.runtime.push(r),
        }
    }
    parsed
}

const FAILURE: &str = ": page allocation failure";
const OOM: &str = " invoked oom-killer:";

#[derive(Clone, Copy, PartialEq, Eq)]
enum Header {
    Failure,
    Oom,
}

/// Where a report header starts. Runs on every line of a log, so it searches with Horspool's
/// skip table (about one step per needle length) instead of building a searcher per line.
fn find_header(t: &str) -> Option<(Header, usize)> {
    const ALLOCATION: &[u8] = b"allocation failure";
    const PAGE: &[u8] = b": page ";
    let b = t.as_bytes();
    let mut from = 0;
    while let Some(p) = horspool(&b[from..], ALLOCATION, &ALLOCATION_SKIP) {
        let at = from + p;
        // Prose that names the message is not one: a header goes on with its order.
        if b[..at].ends_with(PAGE) && t[at..].contains("order") {
            return Some((Header::Failure, at - PAGE.len()));
        }
        from = at + 1;
    }
    horspool(b, OOM.as_bytes(), &OOM_SKIP)
        .filter(|&p| t[p..].contains("gfp_mask") || t[p..].contains("order"))
        .map(|p| (Header::Oom, p))
}

const fn skip_table(needle: &[u8]) -> [u8; 256] {
    let mut t = [needle.len() as u8; 256];
    let mut i = 0;
    while i + 1 < needle.len() {
        t[needle[i] as usize] = (needle.len() - 1 - i) as u8;
        i += 1;
    }
    t
}

const ALLOCATION_SKIP: [u8; 256] = skip_table(b"allocation failure");
const OOM_SKIP: [u8; 256] = skip_table(OOM.as_bytes());

/// The first position of `needle` in `hay` (Boyer-Moore-Horspool).
fn horspool(hay: &[u8], needle: &[u8], skip: &[u8; 256]) -> Option<usize> {
    let n = needle.len();
    let last = *needle.last()?;
    let mut i = 0;
    while i + n <= hay.len() {
        let c = hay[i + n - 1];
        if c == last && hay[i..i + n - 1] == needle[..n - 1] {
            return Some(i);
        }
        i += skip[c as usize] as usize;
    }
    None
}

/// Whether a kernel line can start a report or a dump: the others need no look while nothing
/// is under way.
pub fn starts_something(t: &str) -> bool {
    find_header(t).is_some() || super::dumps::starts_dump(t.trim_start())
}

/// The task name before `: page allocation failure` / ` invoked oom-killer:`, without anything a
/// prefix left in front of it (`kernel: `, a vendor `[..]` group).
fn task_name(before: &str) -> &str {
    let t = before.trim();
    let t = t.strip_prefix("kernel: ").unwrap_or(t);
    match t.rfind("] ") {
        Some(i) if t.starts_with('[') => t[i + 2..].trim(),
        _ => t,
    }
}

pub fn is_known_kernel_text(t: &str) -> bool {
    super::lines::starts_known_kernel_text(t)
}

/// `: order:6, mode:0x10c0d0` or `. order:4, mode:0xd0` or
/// `: order:0, mode:0x2084120(GFP_ATOMIC|__GFP_COLD|__GFP_COMP), nodemask=(null),cpuset=/,mems_allowed=0`.
fn parse_failure_header(after: &str, inc: &mut Incident) {
    inc.order = field(after, "order:").and_then(|o| o.parse().ok());
    if let Some(mode) = field(after, "mode:") {
        let (hex, names) = match mode.split_once('(') {
            Some((h, n)) => (h, Some(n.trim_end_matches(')'))),
            None => (mode, None),
        };
        inc.mode = Some(hex.to_string());
        inc.printed_flags = names.filter(|n| !n.is_empty()).map(str::to_string);
    }
    parse_cpuset_fields(after, inc);
}

fn parse_cpuset_fields(t: &str, inc: &mut Incident) -> bool {
    let mut any = false;
    if let Some(v) = field(t, "nodemask=") {
        inc.nodemask.get_or_insert_with(|| v.to_string());
        any = true;
    }
    if let Some(v) = field(t, "cpuset=") {
        inc.cpuset.get_or_insert_with(|| v.to_string());
        any = true;
    }
    if let Some(v) = field(t, "mems_allowed=") {
        inc.mems_allowed.get_or_insert_with(|| v.to_string());
        any = true;
    }
    any
}

/// The value after `key` up to the next `,` or whitespace, parentheses kept balanced.
fn field<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    let start = text.find(key)? + key.len();
    let rest = &text[start..];
    let mut depth = 0i32;
    let mut end = rest.len();
    for (i, c) in rest.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' | ' ' | '\t' if depth <= 0 => {
                end = i;
                break;
            }
            _ => {}
        }
    }
    let value = &rest[..end];
    (!value.is_empty()).then_some(value)
}

/// Lines a page allocation failure or OOM report prints that fragtrace reads nothing from, but
/// that show the report is still under way.
fn is_report_line(t: &str) -> bool {
    const STARTS: [&str; 42] = [
        "Unreclaimable slab info",
        "Name ",
        "Hardware name:",
        "Workqueue:",
        "Call Trace:",
        "Call trace:",
        "<IRQ>",
        "</IRQ>",
        "<EOI>",
        "<TASK>",
        "</TASK>",
        "Stack:",
        "Backtrace:",
        "Code:",
        "Mem-Info:",
        "Mem-info:",
        "warn_alloc",
        "SLUB: Unable",
        "cache:",
        "node ",
        "Tasks state",
        "[ pid ]",
        "[  pid  ]",
        "oom-kill:",
        "Out of memory",
        "Memory cgroup",
        "oom_reaper:",
        "Task in ",
        "memory: usage",
        "memory+swap: usage",
        "kmem: usage",
        "swap: usage",
        "Free swap",
        "Total swap",
        "Swap cache stats",
        "Node ",
        "lowmem_reserve[]",
        "kmem_cache_create",
        "Unable to create",
        "Killed process",
        "Exception stack",
        "pstate:",
    ];
    if STARTS.iter().any(|s| t.starts_with(s)) || looks_like_frame(t) || is_mem_info_line(t) {
        return true;
    }
    const CONTAINS: [&str; 16] = [
        " pages RAM",
        " pages HighMem",
        " pages reserved",
        " pages cma reserved",
        " pages hwpoisoned",
        " total pagecache pages",
        " pages in swap cache",
        " per-cpu:",
        "hugepages_total=",
        " mems_allowed=",
        "CPU: ",
        "Pid: ",
        "callbacks suppressed",
        " hi: ",
        "Tainted: ",
        " free:",
    ];
    // Each of those holds a space followed by a letter from this set: a cheap first filter.
    let maybe = t
        .as_bytes()
        .windows(2)
        .any(|w| (w[0] == b' ' || w[0] == b'-') && b"pthmfcPTCsh".contains(&w[1]))
        || t.starts_with("CPU")
        || t.starts_with("Pid")
        || t.starts_with("hugepages")
        || t.starts_with("callbacks");
    if maybe && CONTAINS.iter().any(|s| t.contains(s)) {
        return true;
    }
    // `skbuff_head_cache   244KB   311KB` (the unreclaimable slab table).
    let words: Vec<&str> = t.split_whitespace().collect();
    if words.len() == 3
        && words[1..].iter().all(|w| {
            w.strip_suffix("KB")
                .is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()))
        })
    {
        return true;
    }
    // Register dumps (`RIP: 0010:...`, `RAX: ...`, `x29: ...`, `lr : ...`, `pc : ...`), the task
    // table (`[  1234]     0  1234 ...`), raw stack words.
    let first = t.split_whitespace().next().unwrap_or("");
    (first.len() <= 4
        && first.ends_with(':')
        && first[..first.len() - 1]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric()))
        || t.starts_with("lr :")
        || t.starts_with("pc :")
        || t.starts_with("sp :")
        || (t.starts_with('[')
            && t[1..]
                .trim_start()
                .starts_with(|c: char| c.is_ascii_digit()))
        || t.split_whitespace()
            .all(|w| w.len() >= 8 && w.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// A Mem-Info `key:value` run (`active_anon:44762 inactive_anon:52333`).
fn is_mem_info_line(t: &str) -> bool {
    let first = t.split_whitespace().next().unwrap_or("");
    first.split_once(':').is_some_and(|(k, v)| {
        !k.is_empty()
            && k.bytes()
                .all(|c| c.is_ascii_lowercase() || c == b'_' || c == b'(' || c == b')')
            && v.starts_with(|c: char| c.is_ascii_digit())
    })
}

/// Reads one line of a report into `inc`; false when the line is not part of a report.
fn parse_incident_line(kl: &KernelLine, t: &str, inc: &mut Incident) -> bool {
    let mut known = false;
    if t.starts_with("cpuset=") || t.contains("mems_allowed=") {
        known |= parse_cpuset_fields(t, inc);
    }
    if (t.starts_with("CPU: ") && t.contains("PID: ")) || t.starts_with("Pid: ") {
        if inc.kernel.is_none() {
            inc.kernel = kernel_version(t);
        }
        // The report's own name for the task wins over what a prefix left before the header.
        if let Some(comm) = cpu_line_comm(t)
            && inc.comm != comm
            && inc.comm.ends_with(comm.as_str())
        {
            inc.comm = comm;
        }
        return true;
    }
    if t.starts_with("Call Trace:") || t.starts_with("Call trace:") {
        inc.in_call_trace = true;
        return true;
    }
    if inc.in_call_trace {
        if let Some(frame) = frame_text(t) {
            if frame.starts_with('<') {
            } else if inc.mem_info_started {
                inc.later_frames.push(frame);
            } else {
                inc.call_trace.push(frame);
            }
            return true;
        }
        if !(t.starts_with('R') && t.contains(": ") || t.starts_with("Code:")) {
            inc.in_call_trace = false;
        }
    }
    if t.starts_with("Mem-Info:") || t.starts_with("Mem-info:") {
        inc.mem_info_started = true;
        inc.in_call_trace = false;
        return true;
    }
    if let Some(rest) = t.strip_prefix("kmem_cache_create(")
        && let Some((name, after)) = rest.split_once(')')
    {
        inc.slab_cache.get_or_insert_with(|| name.to_string());
        inc.slab_error = after
            .split_whitespace()
            .last()
            .map(str::to_string)
            .filter(|e| e.starts_with('-'));
        return true;
    }
    if let Some(rest) = t.strip_prefix("Unable to create ")
        && let Some(name) = rest.strip_suffix(" slab cache")
    {
        inc.slab_cache.get_or_insert_with(|| name.to_string());
        return true;
    }
    let _ = kl;
    if parse_zone_line(t, &mut inc.zones) {
        // An OOM report goes on after its free lists (task table, victim).
        if inc.has_mem_info() && inc.trigger == Trigger::AllocationFailure {
            inc.reached_tail = true;
        }
        return true;
    }
    known || is_report_line(t)
}

/// `lowmem_reserve[]:`, `Node 0 DMA32 free:..`, `Node 0 Normal: 34178*4kB ...` and their
/// forms without `Node N ` (kernels without CONFIG_NUMA). False for other lines.
fn parse_zone_line(t: &str, zones: &mut Vec<LogZone>) -> bool {
    if let Some(r) = t.strip_prefix("lowmem_reserve[]:") {
        if let Some(z) = zones.last_mut() {
            z.lowmem_reserve = r
                .split_whitespace()
                .filter_map(|v| v.parse().ok())
                .collect();
        }
        return true;
    }
    if let Some(rest) = t.strip_prefix("Node ") {
        parse_node_line(rest, zones);
        true
    } else if is_bare_zone_line(t) {
        parse_node_line(&format!("0 {t}"), zones);
        true
    } else {
        false
    }
}

/// `DMA32 free:1408kB min:1416kB ...` or `DMA32: 14*4kB (UME) ...`, as a kernel without
/// CONFIG_NUMA prints them (no `Node 0 `).
fn is_bare_zone_line(t: &str) -> bool {
    let mut words = t.split_whitespace();
    let (Some(first), Some(second)) = (words.next(), words.next()) else {
        return false;
    };
    let name = first.strip_suffix(':').unwrap_or(first);
    crate::zones::ZONE_TYPES.contains(&name)
        && if first.ends_with(':') {
            second.contains('*')
        } else {
            second.starts_with("free:")
        }
}

/// `CPU: 1 PID: 18377 Comm: exe Not tainted 3.10.0-514.el7.x86_64 #1` ->
/// `3.10.0-514.el7.x86_64`; also `Tainted: G  O 4.9.24-coreos #1` and 2.6/3.x `Pid: ..`.
fn kernel_version(t: &str) -> Option<String> {
    // Some builds print no taint word: `Comm: ffmpeg 4.0.5-gzp1 #1`.
    let after = t
        .split_once("tainted ")
        .or_else(|| t.split_once("Tainted: "))
        .or_else(|| t.split_once("Comm: "))
        .or_else(|| t.split_once("comm: "))
        .map(|(_, a)| a)?;
    after
        .split_whitespace()
        .find(|w| {
            let mut parts = w.split('.');
            matches!(
                (parts.next(), parts.next()),
                (Some(a), Some(b)) if !a.is_empty() && a.chars().all(|c| c.is_ascii_digit())
                    && b.chars().next().is_some_and(|c| c.is_ascii_digit())
            )
        })
        .map(str::to_string)
}

/// `Comm: exe Not tainted` / `comm: splat Tainted:` -> `exe`.
fn cpu_line_comm(t: &str) -> Option<String> {
    let (_, after) = t.split_once("Comm: ").or_else(|| t.split_once("comm: "))?;
    let end = [" Not tainted", " Tainted:", " Kdump:", " ", ""]
        .iter()
        .find_map(|m| {
            if m.is_empty() {
                Some(after.len())
            } else {
                after.find(m)
            }
        })?;
    let comm = after[..end].trim();
    (!comm.is_empty()).then(|| comm.to_string())
}

/// A frame as `function+0x../0x.. [module]`, without the address and with `? ` kept.
fn frame_text(t: &str) -> Option<String> {
    let t = t.trim();
    let (unsure, t) = match t.strip_prefix("? ") {
        Some(r) => ("? ", r.trim_start()),
        None => ("", t),
    };
    let t = match t.strip_prefix("[<") {
        Some(r) => {
            let (_, after) = r.split_once(">]")?;
            after.trim_start()
        }
        None => t,
    };
    // ppc `[c1c65940] [c07926d4] dump_stack_lvl+0x80/0xac (unreliable)`.
    let mut t = t;
    while let Some(r) = t.strip_prefix('[')
        && let Some((addr, after)) = r.split_once(']')
        && addr.bytes().all(|b| b.is_ascii_hexdigit())
    {
        t = after.trim_start();
    }
    let (unsure, t) = match t.strip_prefix("? ") {
        Some(r) => ("? ", r),
        None => (unsure, t),
    };
    let name = t.split_whitespace().next()?;
    if !(name.contains("+0x") || t.starts_with('<')) {
        return None;
    }
    Some(format!("{unsure}{t}"))
}

/// `Node 0 DMA32 free:127248kB min:..` (zone figures) or `Node 0 Normal: 34178*4kB (UEM) ...`
/// (free list).
fn parse_node_line(rest: &str, zones: &mut Vec<LogZone>) {
    let mut words = rest.split_whitespace();
    let Some(node) = words.next().and_then(|n| n.parse::<u32>().ok()) else {
        return;
    };
    let Some(zone_word) = words.next() else {
        return;
    };
    if let Some(zone) = zone_word.strip_suffix(':') {
        // Free list: `N*SIZEkB` tokens, each optionally followed by its migratetypes `(UMEH)`.
        let mut sizes: Vec<(u64, u64, String)> = Vec::new();
        for w in words {
            if let Some((count, size)) = w.split_once('*')
                && let (Ok(count), Some(Ok(kb))) = (
                    count.parse::<u64>(),
                    size.strip_suffix("kB").map(str::parse::<u64>),
                )
            {
                sizes.push((count, kb, String::new()));
            } else if let Some(types) = w.strip_prefix('(').and_then(|w| w.strip_suffix(')'))
                && types.chars().all(|c| c.is_ascii_uppercase())
                && let Some(last) = sizes.last_mut()
            {
                last.2 = types.to_string();
            }
        }
        // The smallest block printed is one page: the log's own page size (4K, 16K, 64K).
        let Some(base) = sizes.iter().map(|s| s.1).min() else {
            return;
        };
        if base == 0 {
            return;
        }
        let mut blocks = Vec::new();
        let mut types = Vec::new();
        for (count, kb, t) in sizes {
            if kb % base != 0 || !(kb / base).is_power_of_two() {
                return;
            }
            let order = (kb / base).trailing_zeros() as usize;
            if order >= 64 {
                return;
            }
            if blocks.len() <= order {
                blocks.resize(order + 1, 0);
                types.resize(order + 1, String::new());
            }
            blocks[order] = count;
            types[order] = t;
        }
        let z = zone_entry(zones, node, zone);
        z.free_blocks = blocks;
        z.free_types = types;
        z.page_kb = Some(base);
        return;
    }
    // Zone figures; `Node 0 active_anon:..` (per-node stats, 4.8+) has no zone name.
    if zone_word.contains(':') {
        return;
    }
    let remainder: Vec<&str> = words.collect();
    let kb = |key: &str| {
        remainder.iter().find_map(|w| {
            let v = w.strip_prefix(key)?.strip_prefix(':')?;
            v.strip_suffix("kB")
                .or_else(|| v.strip_suffix("KB"))?
                .parse::<u64>()
                .ok()
        })
    };
    let Some(free) = kb("free") else {
        return;
    };
    let z = zone_entry(zones, node, zone_word);
    z.free_kb = Some(free);
    z.min_kb = kb("min");
    z.low_kb = kb("low");
    z.high_kb = kb("high");
    z.managed_kb = kb("managed");
    z.free_cma_kb = kb("free_cma");
    z.reserved_highatomic_kb = kb("reserved_highatomic");
}

fn zone_entry<'a>(zones: &'a mut Vec<LogZone>, node: u32, zone: &str) -> &'a mut LogZone {
    if let Some(i) = zones.iter().position(|z| z.node == node && z.zone == zone) {
        return &mut zones[i];
    }
    zones.push(LogZone {
        node,
        zone: zone.to_string(),
        ..Default::default()
    });
    zones.last_mut().unwrap()
}

/// Lines of an OOM-killer report: the victim and the constraint. True when the line was one.
fn parse_oom_line(t: &str, oom: &mut OomKill) -> bool {
    // Every line it reads names a killed process (`ill`) or a `key=value` field.
    let b = t.as_bytes();
    if !b.contains(&b'=') && !b.windows(3).any(|w| w == b"ill") {
        return false;
    }
    let mut known = false;
    // `Out of memory: Killed process 1234 (java) total-vm:..` (4.x+) or
    // `Out of memory: Kill process 1234 (java) score 900 or sacrifice child` (older), and the
    // memcg variants `Memory cgroup out of memory: Killed process ..`.
    let victim = ["Killed process ", "Kill process "]
        .iter()
        .find_map(|k| t.find(k).map(|i| &t[i + k.len()..]));
    if let Some(rest) = victim {
        known = true;
        if oom.killed_pid.is_none() {
            let mut words = rest.split_whitespace();
            oom.killed_pid = words.next().and_then(|p| p.parse().ok());
            if let Some(open) = rest.find('(')
                && let Some(close) = rest[open..].find(") ")
            {
                oom.killed_comm = Some(rest[open + 1..open + close].to_string());
            } else if let Some(open) = rest.find('(') {
                oom.killed_comm = Some(rest[open + 1..].trim_end_matches(')').to_string());
            }
            if t.starts_with("Memory cgroup out of memory") && oom.memcg.is_none() {
                oom.memcg = Some(String::new());
            }
        }
    }
    if let Some(c) = field(t, "constraint=") {
        oom.constraint = Some(c.to_string());
        known = true;
    }
    if let Some(m) = field(t, "oom_memcg=") {
        oom.memcg = Some(m.to_string());
        known = true;
    }
    if let Some(rest) = t
        .split_once("killed as a result of limit of ")
        .map(|(_, r)| r)
    {
        oom.memcg = Some(rest.trim().to_string());
        known = true;
    }
    known
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_forms() {
        let p = parse(
            "runc:[1:CHILD]: page allocation failure: order:6, mode:0x10c0d0\n\
                       mysqld: page allocation failure. order:4, mode:0x10c0d0\n\
                       [1.0] java: page allocation failure: order:0, mode:0x2084120(GFP_ATOMIC|__GFP_COLD|__GFP_COMP), nodemask=(null),cpuset=/docker/ab,mems_allowed=0-1\n",
        );
        let i = &p.incidents;
        assert_eq!(i.len(), 3);
        assert_eq!(
            (i[0].comm.as_str(), i[0].order),
            ("runc:[1:CHILD]", Some(6))
        );
        assert_eq!(
            (i[1].comm.as_str(), i[1].order, i[1].mode.as_deref()),
            ("mysqld", Some(4), Some("0x10c0d0"))
        );
        assert_eq!(
            i[2].printed_flags.as_deref(),
            Some("GFP_ATOMIC|__GFP_COLD|__GFP_COMP")
        );
        assert_eq!(i[2].nodemask.as_deref(), Some("(null)"));
        assert_eq!(i[2].cpuset.as_deref(), Some("/docker/ab"));
        assert_eq!(i[2].mems_allowed.as_deref(), Some("0-1"));
        assert!(i.iter().all(|x| !x.truncated));
    }

    /// The task name comes from the report, whatever the prefix left before the header.
    #[test]
    fn task_name_comes_from_the_report() {
        for text in [
            "[  1.0] [pid:77,cpu1,my task]my task: page allocation failure: order:3, mode:0xd0\n[  1.0] CPU: 1 PID: 77 Comm: my task Not tainted 4.4.0 #1\n",
            "[  1.0] foo[1]: bar my task: page allocation failure: order:3, mode:0xd0\n[  1.0] CPU: 1 PID: 77 Comm: my task Not tainted 4.4.0 #1\n",
        ] {
            let p = parse(text);
            assert_eq!(p.incidents[0].comm, "my task", "{text}");
            assert_eq!(p.incidents[0].kernel.as_deref(), Some("4.4.0"));
        }
    }

    #[test]
    fn frames() {
        assert_eq!(
            frame_text(" [<ffffffffa03719e1>] nf_conntrack_init_net+0x101/0x250 [nf_conntrack]")
                .as_deref(),
            Some("nf_conntrack_init_net+0x101/0x250 [nf_conntrack]")
        );
        assert_eq!(
            frame_text(" ? __alloc_pages_slowpath+0x25f/0xbb0").as_deref(),
            Some("? __alloc_pages_slowpath+0x25f/0xbb0")
        );
        assert_eq!(
            frame_text(" [<ffffffff81691e76>] ? trace_do_page_fault+0x56/0x150").as_deref(),
            Some("? trace_do_page_fault+0x56/0x150")
        );
        assert_eq!(
            frame_text("[c1c65960] [c01b6234] warn_alloc+0x100/0x178").as_deref(),
            Some("warn_alloc+0x100/0x178")
        );
        assert_eq!(frame_text("Mem-Info:"), None);
    }

    #[test]
    fn truncated_mem_info() {
        let p = parse(
            "[1.0] a: page allocation failure: order:3, mode:0xd0\n[1.0] Call Trace:\n[1.0]  [<ffffffff81685fac>] dump_stack+0x19/0x1b\n[1.0] Mem-Info:\n[1.0] Node 0 Normal free:1kB min:2kB\n",
        );
        assert!(p.incidents[0].truncated);
    }

    #[test]
    fn oom_after_failure_is_tied_to_it() {
        let text = "[1.0] a: page allocation failure: order:3, mode:0xd0\n\
                    [1.1] Node 0 Normal: 1*4kB (U) 0*8kB = 4kB\n\
                    [2.0] b invoked oom-killer: gfp_mask=0x201da, order=0, oom_score_adj=0\n\
                    [2.1] Node 0 Normal: 9*4kB (U) 9*8kB = 4kB\n\
                    [2.2] Out of memory: Kill process 77 (java) score 900 or sacrifice child\n\
                    [3.0] c invoked oom-killer: gfp_mask=0x6200ca(GFP_HIGHUSER_MOVABLE), order=0, oom_score_adj=0\n\
                    [3.1] oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=/,mems_allowed=0,oom_memcg=/pod1,task_memcg=/pod1,task=x,pid=8,uid=0\n\
                    [3.2] Memory cgroup out of memory: Killed process 8 (x) total-vm:100kB, anon-rss:5kB\n";
        let p = parse(text);
        assert_eq!(p.incidents.len(), 2);
        let first = &p.incidents[0];
        assert_eq!(first.zones[0].free_blocks, [1, 0]);
        assert!(first.oom_zones.is_empty(), "the failure has its own");
        let oom = first.oom_kill.as_ref().unwrap();
        assert_eq!(
            (
                oom.invoker.as_str(),
                oom.killed_pid,
                oom.killed_comm.as_deref()
            ),
            ("b", Some(77), Some("java"))
        );
        let second = &p.incidents[1];
        assert_eq!(second.trigger, Trigger::OomKiller);
        assert_eq!(
            second.printed_flags.as_deref(),
            Some("GFP_HIGHUSER_MOVABLE")
        );
        let oom = second.oom_kill.as_ref().unwrap();
        assert_eq!(oom.constraint.as_deref(), Some("CONSTRAINT_MEMCG"));
        assert_eq!(oom.memcg.as_deref(), Some("/pod1"));
        assert_eq!(oom.killed_comm.as_deref(), Some("x"));
    }

    /// A failure with no Mem-Info keeps the Mem-Info of the OOM report tied to it apart.
    #[test]
    fn oom_mem_info_is_kept_for_a_failure_without_one() {
        let p = parse(
            "[1.0] a: page allocation failure: order:3, mode:0xd0\n\
             [1.0] CPU: 0 PID: 1 Comm: a Not tainted 4.9.0 #1\n\
             [1.1] b invoked oom-killer: gfp_mask=0x24201ca, order=0, oom_score_adj=0\n\
             [1.2] Node 0 Normal free:100kB min:50kB\n\
             [1.2] Node 0 Normal: 9*4kB (U) 9*8kB = 108kB\n\
             [1.3] Out of memory: Kill process 77 (java) score 900 or sacrifice child\n",
        );
        let i = &p.incidents[0];
        assert!(i.zones.is_empty());
        assert_eq!(i.oom_zones[0].free_blocks, [9, 9]);
        assert_eq!(i.oom_zones[0].free_kb, Some(100));
    }

    /// A report ends at the first foreign line after its tail, and within a few before it.
    #[test]
    fn reports_end_where_other_messages_begin() {
        let p = parse(
            "[1.0] a: page allocation failure: order:3, mode:0xd0\n\
             [1.0] Node 0 Normal: 1*4kB (U) 0*8kB = 4kB\n\
             [1.1] e1000: link up\n\
             [1.2] Unable to create nf_conn slab cache\n",
        );
        assert_eq!(p.incidents.len(), 1);
        assert!(p.incidents[0].slab_cache.is_none());
        let p = parse(
            "[1.0] a: page allocation failure: order:3, mode:0xd0\n\
             [1.0] e1000: link up\n\
             [1.0] Mem-Info:\n\
             [1.0] Node 0 Normal: 1*4kB (U) 0*8kB = 4kB\n",
        );
        assert_eq!(p.incidents[0].zones.len(), 1);
    }

    #[test]
    fn kernel_versions() {
        assert_eq!(
            kernel_version("CPU: 1 PID: 18377 Comm: exe Not tainted 3.10.0-514.el7.x86_64 #1")
                .as_deref(),
            Some("3.10.0-514.el7.x86_64")
        );
        assert_eq!(
            kernel_version("Pid: 31170, comm: splat Tainted: P         C O 3.8.0-1-mainline #1")
                .as_deref(),
            Some("3.8.0-1-mainline")
        );
        assert_eq!(
            kernel_version("CPU: 2 PID: 9 Comm: k Tainted: G        W  6.1.0 #1").as_deref(),
            Some("6.1.0")
        );
    }

    #[test]
    fn zone_lines_without_node_prefix() {
        let p = parse(
            "[1.0] a invoked oom-killer: gfp_mask=0xcc0(GFP_KERNEL), order=0, oom_score_adj=0\n\
             [1.1] DMA per-cpu:\n\
             [1.2] DMA32 free:1408kB min:1416kB low:1768kB high:2120kB\n\
             [1.3] lowmem_reserve[]: 0 0 0 0\n\
             [1.4] DMA32: 14*4kB (UME) 9*8kB (UME) 0*16kB = 128kB\n\
             [1.5] DMA: preallocated 128 KiB GFP_KERNEL pool for atomic allocations\n",
        );
        let z = &p.incidents[0].zones;
        assert_eq!(z.len(), 1, "{z:?}");
        assert_eq!((z[0].node, z[0].zone.as_str()), (0, "DMA32"));
        assert_eq!((z[0].free_kb, z[0].min_kb), (Some(1408), Some(1416)));
        assert_eq!(z[0].free_blocks, [14, 9, 0]);
        assert_eq!(z[0].free_types, ["UME", "UME", ""]);
        assert!(!p.incidents[0].truncated);
    }

    /// 64K pages (arm64, ppc64le): the smallest block printed is the page.
    #[test]
    fn page_size_comes_from_the_free_lists() {
        let p = parse(
            "[1.0] a: page allocation failure: order:4, mode:0xcc0(GFP_KERNEL)\n\
             [1.0] Node 0 Normal free:1000000kB min:20000kB reserved_highatomic:0KB free_cma:64kB\n\
             [1.0] Node 0 Normal: 100*64kB (UME) 20*128kB (UM) 3*256kB (M) 0*512kB = 10000kB\n",
        );
        let z = &p.incidents[0].zones[0];
        assert_eq!(z.page_kb, Some(64));
        assert_eq!(z.free_blocks, [100, 20, 3, 0]);
        assert_eq!(
            (z.free_cma_kb, z.reserved_highatomic_kb),
            (Some(64), Some(0))
        );
    }

    #[test]
    fn mail_wrapped_lines_are_joined() {
        let text = "Jun 18 16:37:06 h kernel: x: page allocation failure: order:8,\n\
                    mode:0x40dc0(GFP_KERNEL),\n\
                    nodemask=3D(null),cpuset=3D/,mems_allowed=3D0\n\
                    Jun 18 16:37:06 h kernel: Call Trace:\n\
                    Jun 18 16:37:06 h kernel:\n\
                    __alloc_pages_slowpath.constprop.0+0xb80/0xbb0\n\
                    Jun 18 16:37:06 h kernel: Node 0 Normal: 5*4kB (UMEH) 6*8kB\n\
                    (UMEH) 0*16kB 1*32kB (H) =3D\n\
                    2159700kB\n\
                    ```\n";
        let p = parse(text);
        let i = &p.incidents[0];
        assert_eq!(i.order, Some(8));
        assert_eq!(i.printed_flags.as_deref(), Some("GFP_KERNEL"));
        assert_eq!(i.nodemask.as_deref(), Some("(null)"));
        assert_eq!(i.mems_allowed.as_deref(), Some("0"));
        assert_eq!(
            i.call_trace,
            ["__alloc_pages_slowpath.constprop.0+0xb80/0xbb0"]
        );
        assert_eq!(i.zones[0].free_blocks, [5, 6, 0, 1]);
        assert_eq!(i.zones[0].free_types, ["UMEH", "UMEH", "", "H"]);
    }
}
