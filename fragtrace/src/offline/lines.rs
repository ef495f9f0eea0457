//! Raw log lines to logical kernel lines, one line at a time: every prefix a kernel line can carry
//! is taken off (syslog, journalctl, dmesg, /dev/kmsg records, printk caller ids, vendor
//! prefixes, console levels, mail quoting, serial-console CRs and colours), `#012` escapes are
//! split, and wrapped lines are joined to the line they continue.
//!
//! Pure text processing (std only) so the fuzz crate can drive it.
use std::borrow::Cow;

/// A line longer than this is not a kernel log line (printk lines are at most 1 KiB; a syslog
/// line holding a `#012`-joined Mem-Info stays well below).
pub const MAX_LINE: usize = 64 * 1024;

/// When a line was logged, as far as its prefix says.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Stamp {
    /// Seconds since boot (dmesg `[123.456]`, /dev/kmsg).
    pub boot: Option<f64>,
    /// Wall-clock seconds within a year (syslog, journal, ISO, `dmesg -T`): only differences
    /// between two such stamps mean anything.
    pub wall: Option<f64>,
}

impl Stamp {
    /// Seconds from `self` to `later` on a clock both share.
    pub fn seconds_until(&self, later: &Stamp) -> Option<f64> {
        match (self.boot, later.boot, self.wall, later.wall) {
            (Some(a), Some(b), _, _) => Some(b - a),
            (_, _, Some(a), Some(b)) => Some(b - a),
            _ => None,
        }
    }
}

/// One logical kernel line: the message, the 1-based number of the raw line it began on, and the
/// timestamp as printed.
#[derive(Clone, Debug, PartialEq)]
pub struct KernelLine {
    pub line: usize,
    pub timestamp: Option<String>,
    pub stamp: Stamp,
    pub text: String,
    /// The line came with a kernel-log prefix (dmesg, syslog `kernel:`, /dev/kmsg).
    pub prefixed: bool,
}

/// A line another program logged (dockerd, kubelet, containerd) through syslog or the journal.
#[derive(Clone, Debug, PartialEq)]
pub struct ProgramLine {
    pub line: usize,
    pub program: String,
    pub timestamp: Option<String>,
    pub stamp: Stamp,
    pub text: String,
}

/// What one raw line turned into.
#[derive(Debug, PartialEq)]
pub enum Piece {
    Kernel(KernelLine),
    Program(ProgramLine),
}

/// Turns raw lines into [`Piece`]s. A kernel line is held back until the next raw line shows
/// that it does not continue it; [`Joiner::flush`] releases it (end of input, or a quiet spell
/// when following a live log).
#[derive(Default)]
pub struct Joiner {
    pending: Option<KernelLine>,
    /// The text of a quoted-printable soft line break (`...mode:0x=`) waiting for its rest.
    soft_break: Option<(usize, String)>,
    last_was_prefixed: bool,
    /// Raw lines seen.
    pub raw_lines: usize,
    /// Set by the caller while no report or dump is under way: prefixed kernel lines that
    /// cannot start one are only counted, not handed out (most lines of a big log).
    pub skip_idle: Option<fn(&str) -> bool>,
    /// Kernel lines counted but not handed out.
    pub skipped: usize,
}

impl Joiner {
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds one raw line (without its newline); pushes finished pieces to `out`.
    pub fn push(&mut self, raw: &str, out: &mut Vec<Piece>) {
        self.raw_lines += 1;
        let special = scan(raw.as_bytes());
        let cleaned = if special & CONTROL == 0 {
            std::borrow::Cow::Borrowed(raw)
        } else {
            clean(raw)
        };
        // A quoted-printable soft break joins this line to the previous one with nothing between.
        let (line_no, text) = match self.soft_break.take() {
            Some((first, mut head)) => {
                head.push_str(strip_quote_marks(&unquote(&cleaned)));
                (first, std::borrow::Cow::Owned(head))
            }
            None => {
                if special & EQUALS == 0 || !cleaned.ends_with('=') {
                    let special = if special & CONTROL == 0 {
                        special
                    } else {
                        scan(cleaned.as_bytes())
                    };
                    return self.process(self.raw_lines, &cleaned, special, out);
                }
                (self.raw_lines, cleaned)
            }
        };
        if text.ends_with('=') && !text.ends_with(" =") && !text.ends_with("==") {
            self.soft_break = Some((line_no, text[..text.len() - 1].to_string()));
            return;
        }
        let special = scan(text.as_bytes());
        self.process(line_no, &text, special, out);
    }

    /// `special`: the [`scan`] of `text`.
    fn process(&mut self, line_no: usize, text: &str, special: u8, out: &mut Vec<Piece>) {
        // Two records glued into one line by a lost newline (`7802[30104.278944] Node 0 ...`),
        // looked for inside reports only (the lines between them need no look).
        if self.skip_idle.is_none()
            && let Some(at) = glued_record(text)
        {
            let (head, tail) = text.split_at(at);
            self.process(line_no, head, scan(head.as_bytes()), out);
            self.process(line_no, tail, scan(tail.as_bytes()), out);
            return;
        }
        let text = if special & EQUALS != 0 {
            unquote(text)
        } else {
            std::borrow::Cow::Borrowed(text)
        };
        let text = strip_quote_marks(&text);
        // A log indented as a whole (a mail, a ticket): the prefix after the indentation counts.
        let indented = text.trim_start();
        let prefix = if indented.len() == text.len() {
            strip_prefix(text)
        } else {
            match strip_prefix(indented) {
                p @ Prefix::Kernel { .. } => p,
                _ => strip_prefix(text),
            }
        };
        match prefix {
            Prefix::Kernel {
                stamp,
                timestamp,
                rest,
            } => {
                let rest = strip_inner_prefixes(rest);
                if let Some(starts_something) = self.skip_idle
                    && special & HASH == 0
                    && !starts_something(rest)
                    && self
                        .pending
                        .as_ref()
                        .is_none_or(|p| !starts_something(&p.text))
                {
                    self.emit_pending(out);
                    self.skipped += 1;
                    self.last_was_prefixed = false;
                    return;
                }
                if special & HASH == 0 {
                    self.emit_pending(out);
                    self.pending = Some(KernelLine {
                        line: line_no,
                        timestamp: timestamp.map(|t| t.trim().to_string()),
                        stamp,
                        text: rest.to_string(),
                        prefixed: true,
                    });
                    self.last_was_prefixed = true;
                    return;
                }
                for (k, part) in rest.split("#012").enumerate() {
                    if k > 0
                        && is_continuation(part)
                        && let Some(pending) = self.pending.as_mut()
                    {
                        join(pending, part);
                    } else {
                        self.emit_pending(out);
                        self.pending = Some(KernelLine {
                            line: line_no,
                            timestamp: timestamp.as_ref().map(|t| t.trim().to_string()),
                            stamp,
                            text: part.to_string(),
                            prefixed: true,
                        });
                    }
                }
                self.last_was_prefixed = true;
            }
            Prefix::Program {
                program,
                stamp,
                timestamp,
                rest,
            } => {
                self.emit_pending(out);
                self.last_was_prefixed = false;
                out.push(Piece::Program(ProgramLine {
                    line: line_no,
                    program: program.to_string(),
                    timestamp: timestamp.map(|t| t.trim().to_string()),
                    stamp,
                    text: rest.to_string(),
                }));
            }
            Prefix::KmsgDictionary => {}
            Prefix::None => {
                // An unprefixed line cut after `:` or `,` goes on on the next line
                // (`dumpsys invoked oom-killer:` / `gfp_mask=0x40dc0(...), order=3,`).
                let cut_after_separator = self
                    .pending
                    .as_ref()
                    .is_some_and(|p| !p.prefixed && p.text.trim_end().ends_with([':', ',']));
                // A fence or a report header never joins another line.
                let fenced = self
                    .pending
                    .as_ref()
                    .is_some_and(|p| p.text.starts_with("```") || p.text.starts_with("~~~"));
                let joinable = self.pending.is_some()
                    && !fenced
                    && !names_a_report(text)
                    && ((is_continuation(text) && text.trim().len() > 1)
                        || ((self.last_was_prefixed || cut_after_separator)
                            && is_wrapped_tail(text)));
                if joinable {
                    // An indented or bare `key:value` run of a Mem-Info line, or the rest of a
                    // prefixed line that a mail client or terminal wrapped.
                    for part in text.split("#012") {
                        join(self.pending.as_mut().unwrap(), part);
                    }
                    return;
                }
                self.emit_pending(out);
                let rest = strip_inner_prefixes(text);
                for part in rest.split("#012") {
                    self.emit_pending(out);
                    self.pending = Some(KernelLine {
                        line: line_no,
                        timestamp: None,
                        stamp: Stamp::default(),
                        text: part.to_string(),
                        prefixed: false,
                    });
                }
                self.last_was_prefixed = false;
            }
        }
    }

    /// Releases the line held back, if any.
    pub fn flush(&mut self, out: &mut Vec<Piece>) {
        if let Some((line, text)) = self.soft_break.take() {
            let special = scan(text.as_bytes());
            self.process(line, &text, special, out);
        }
        self.emit_pending(out);
    }

    /// Whether a line is held back.
    pub fn has_pending(&self) -> bool {
        self.pending.is_some() || self.soft_break.is_some()
    }

    fn emit_pending(&mut self, out: &mut Vec<Piece>) {
        if let Some(p) = self.pending.take() {
            out.push(Piece::Kernel(p));
        }
    }
}

/// All pieces of a whole text (tests, fuzzing).
pub fn pieces(text: &str) -> Vec<Piece> {
    let mut joiner = Joiner::new();
    let mut out = Vec::new();
    for raw in text.lines() {
        joiner.push(raw, &mut out);
    }
    joiner.flush(&mut out);
    out
}

/// Takes off what a terminal or serial console adds: CRs (the text after the last one wins, as
/// on screen), ANSI colour and cursor sequences, and other control characters.
/// Bytes that call for work, found in one pass over a line (most lines have none of them).
const CONTROL: u8 = 1;
const EQUALS: u8 = 2;
const HASH: u8 = 4;

const SPECIAL: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut b = 0;
    while b < 0x20 {
        t[b] = CONTROL;
        b += 1;
    }
    t[b'\t' as usize] = 0;
    t[0x7f] = CONTROL;
    t[b'=' as usize] = EQUALS;
    t[b'#' as usize] = HASH;
    t
};

/// The [`SPECIAL`] bytes of a line: eight bytes at a time (SWAR), byte by byte only for words
/// that hold one.
fn scan(bytes: &[u8]) -> u8 {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let has_zero = |w: u64| w.wrapping_sub(ONES) & !w & HIGHS != 0;
    let mut flags = 0;
    let mut chunks = bytes.chunks_exact(8);
    for chunk in &mut chunks {
        let w = u64::from_le_bytes(chunk.try_into().unwrap());
        // A byte below 0x20, DEL, `=` or `#`.
        let below = w.wrapping_sub(ONES * 0x20) & !w & HIGHS != 0;
        if below
            || has_zero(w ^ (ONES * 0x7f))
            || has_zero(w ^ (ONES * b'=' as u64))
            || has_zero(w ^ (ONES * b'#' as u64))
        {
            flags |= chunk.iter().fold(0, |acc, &b| acc | SPECIAL[b as usize]);
        }
    }
    chunks
        .remainder()
        .iter()
        .fold(flags, |acc, &b| acc | SPECIAL[b as usize])
}

fn clean(raw: &str) -> std::borrow::Cow<'_, str> {
    let raw = raw.trim_end_matches('\r');
    let raw = match raw.rfind('\r') {
        Some(i) if !raw[i + 1..].trim().is_empty() => &raw[i + 1..],
        Some(i) => &raw[..i],
        None => raw,
    };
    if !raw.bytes().any(|b| b < 0x20 && b != b'\t') {
        return std::borrow::Cow::Borrowed(raw);
    }
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            // CSI `ESC [ params final` or a two-character escape.
            if chars.peek() == Some(&'[') {
                chars.next();
                for c in chars.by_ref() {
                    if ('@'..='~').contains(&c) {
                        break;
                    }
                }
            } else {
                chars.next();
            }
        } else if c == '\t' || !c.is_control() {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

/// Undoes the quoted-printable `=3D` (`=`) and `=20` of a log pasted into a mail; kernel text
/// never contains them itself.
fn unquote(raw: &str) -> std::borrow::Cow<'_, str> {
    let b = raw.as_bytes();
    let mut escaped = false;
    let mut i = 0;
    while i + 2 < b.len() {
        if b[i] == b'='
            && ((b[i + 1] == b'3' && b[i + 2] == b'D') || (b[i + 1] == b'2' && b[i + 2] == b'0'))
        {
            escaped = true;
            break;
        }
        i += 1;
    }
    if escaped {
        std::borrow::Cow::Owned(raw.replace("=3D", "=").replace("=20", " "))
    } else {
        std::borrow::Cow::Borrowed(raw)
    }
}

/// Where a second dmesg record starts inside a line: a `[seconds]` bracket right after a
/// letter or digit.
fn glued_record(text: &str) -> Option<usize> {
    let b = text.as_bytes();
    let mut from = 1;
    while from < b.len() {
        let i = from + b[from..].iter().position(|&c| c == b'[')?;
        if b[i - 1].is_ascii_alphanumeric()
            && let Some(len) = b[i..b.len().min(i + 24)].iter().position(|&c| c == b']')
            && dmesg_seconds(&text[i + 1..i + len]).is_some()
        {
            return Some(i);
        }
        from = i + 1;
    }
    None
}

/// Mail quoting: `> `, `> > `, `>> `.
fn strip_quote_marks(s: &str) -> &str {
    let mut rest = s;
    while let Some(r) = rest.strip_prefix('>') {
        rest = r.strip_prefix(' ').unwrap_or(r);
    }
    rest
}

fn join(prev: &mut KernelLine, part: &str) {
    let part = part.trim();
    if part.is_empty() {
        return;
    }
    // `gfp_mask=0x240c2c0` + `(GFP_KERNEL|...)`: the names belong to the mask.
    let names_of_mask = part.starts_with('(')
        && prev
            .text
            .rsplit(['=', ':'])
            .next()
            .is_some_and(|v| v.starts_with("0x") && v.len() > 2 && !v.contains(' '));
    if !prev.text.ends_with(' ') && !names_of_mask {
        prev.text.push(' ');
    }
    prev.text.push_str(part);
}

/// An indented line that is not a stack frame, or one that starts with a Mem-Info `key:value`
/// (`inactive_file:1167040kB`).
fn is_continuation(s: &str) -> bool {
    if s.starts_with([' ', '\t']) {
        let t = s.trim();
        return !t.is_empty()
            && !looks_like_frame(t)
            && !looks_like_hex_words(t)
            && !starts_known_kernel_text(t)
            && !t.starts_with("Workqueue:");
    }
    let first = s.split_whitespace().next().unwrap_or("");
    // Wrapped flag names (`(GFP_KERNEL|__GFP_NOWARN), nodemask=0, order=3,`).
    if first.starts_with("(GFP_") || first.starts_with("(__GFP_") {
        return true;
    }
    // The rest of a wrapped free list: `2*128kB (M) ...`, `(UME) 3*16kB`, `= 1816kB`.
    let free_list_tail = first.split_once('*').is_some_and(|(n, size)| {
        !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) && size.ends_with("kB")
    }) || (first.starts_with('(')
        && first.ends_with(')')
        && first.len() > 2
        && first[1..first.len() - 1]
            .bytes()
            .all(|b| b.is_ascii_uppercase()))
        || first == "=";
    if free_list_tail {
        return true;
    }
    match first.split_once(':') {
        Some((key, value)) => {
            !key.is_empty()
                && key
                    .bytes()
                    .all(|c| c.is_ascii_lowercase() || c == b'_' || c == b'(' || c == b')')
                && value.starts_with(|c: char| c.is_ascii_digit())
        }
        None => first == "all_unreclaimable?",
    }
}

/// A line with no prefix right after a prefixed kernel line, that is neither a frame nor the
/// start of a kernel message: the wrapped rest of that line (`0*64kB 0*128kB ... = 11264kB`,
/// `(UME) 7392*16kB (UME)`, `T 5.18.5 #7`). Markdown fences around a pasted log are not.
fn is_wrapped_tail(raw: &str) -> bool {
    let t = raw.trim();
    !t.is_empty()
        && !looks_like_frame(t)
        && !t.starts_with("```")
        && !t.starts_with("~~~")
        && !t.contains(": page allocation failure")
        && !t.contains(" invoked oom-killer:")
        && !starts_known_kernel_text(t)
}

/// A line that holds a report header.
fn names_a_report(t: &str) -> bool {
    t.contains(": page allocation failure") || t.contains(" invoked oom-killer:")
}

/// Lines that begin a kernel report section, never the tail of another line.
pub fn starts_known_kernel_text(t: &str) -> bool {
    t.starts_with("Call Trace:")
        || t.starts_with("Mem-Info:")
        || (t.starts_with("CPU: ") && t.contains(" PID: "))
        || t.starts_with("lowmem_reserve[]:")
        || t.starts_with("Hardware name:")
        || t.starts_with("Node ")
}

/// `[<ffffffff81685fac>] dump_stack+0x19/0x1b`, `<IRQ>`, `dump_stack+0x66/0x90`, `? foo+0x1/0x2`.
pub fn looks_like_frame(t: &str) -> bool {
    let t = t.trim_start_matches("? ").trim();
    t.starts_with("[<")
        || t.starts_with('<') && t.ends_with('>')
        || t.split_whitespace()
            .next()
            .is_some_and(|w| w.contains("+0x") && w.contains('/'))
        || (t.starts_with('[') && t.contains("] [") && t.contains("+0x"))
        // 32-bit ARM: `(show_stack) from (dump_stack+0x94/0xa8)`.
        || (t.starts_with('(') && t.contains(") from ("))
}

/// The raw stack words some kernels print before the trace (`ffff8803f7f8b928 ffffffff81685fac`).
fn looks_like_hex_words(t: &str) -> bool {
    let mut n = 0;
    for w in t.split_whitespace() {
        if w.len() < 8 || !w.bytes().all(|b| b.is_ascii_hexdigit()) {
            return false;
        }
        n += 1;
    }
    n > 0
}

enum Prefix<'a> {
    Kernel {
        stamp: Stamp,
        timestamp: Option<Cow<'a, str>>,
        rest: &'a str,
    },
    /// A syslog or journal line of another program (dockerd, kubelet).
    Program {
        program: &'a str,
        stamp: Stamp,
        timestamp: Option<Cow<'a, str>>,
        rest: &'a str,
    },
    /// A /dev/kmsg dictionary line (` SUBSYSTEM=...`).
    KmsgDictionary,
    None,
}

/// Recognises the outer prefixes: /dev/kmsg records, syslog and journal timestamps with their
/// host and program tag, console levels and the dmesg bracket.
fn strip_prefix(line: &str) -> Prefix<'_> {
    // The common dmesg shape first: `[  123.456789] message`.
    if line.starts_with('[')
        && let Some(end) = line.as_bytes()[..line.len().min(32)]
            .iter()
            .position(|&b| b == b']')
        && let Some(secs) = dmesg_seconds(&line[1..end])
    {
        let after = &line[end + 1..];
        return Prefix::Kernel {
            stamp: Stamp {
                boot: Some(secs),
                wall: None,
            },
            timestamp: Some(Cow::Borrowed(&line[1..end])),
            rest: after.strip_prefix(' ').unwrap_or(after),
        };
    }
    if let Some(p) = kmsg_record(line) {
        return p;
    }
    let mut rest = line;
    let mut stamp = Stamp::default();
    let mut timestamp = None;
    let mut saw_prefix = false;
    // Raw syslog priority before the time: `<4>Nov 12 15:15:41 ...`.
    if let Some(after) = level_prefix(rest)
        && (syslog_time(after).is_some() || iso_time(after).is_some())
    {
        rest = after;
    }
    // syslog `Nov 12 15:15:41[.123456] `, ISO `2024-02-09T08:09:39[.123][+0000] `, or a bare
    // `19:18:21 ` some exports keep.
    let dated = syslog_time(rest)
        .or_else(|| clock_only_time(rest))
        .map(|(ts, wall, after)| (ts, wall, after, false))
        .or_else(|| iso_time(rest));
    if let Some((ts, wall, after, dmesg_iso)) = dated {
        timestamp = Some(Cow::Borrowed(ts));
        stamp.wall = Some(wall);
        saw_prefix = true;
        rest = after;
        if !dmesg_iso {
            // Host (optional), then the program tag: `kernel:`, `kernel[0]:`, `dockerd[12]:`.
            match program_tag(rest) {
                Some(("kernel", after)) => rest = after,
                Some((program, after)) => {
                    return Prefix::Program {
                        program,
                        stamp,
                        timestamp,
                        rest: after,
                    };
                }
                None => {
                    let (_host, after_host) = rest.split_once(' ').unwrap_or((rest, ""));
                    match program_tag(after_host) {
                        Some(("kernel", after)) => rest = after,
                        Some((program, after)) => {
                            return Prefix::Program {
                                program,
                                stamp,
                                timestamp,
                                rest: after,
                            };
                        }
                        // `-o short` of a line with no tag, or prose after a date.
                        None => return Prefix::None,
                    }
                }
            }
        }
    }
    if let Some(after) = level_prefix(rest) {
        rest = after;
        saw_prefix = true;
    }
    // `[12345.678901] ` or `[Tue Jun 13 04:36:30 2017] `.
    if let Some(r) = rest.strip_prefix('[')
        && let Some((inner, after)) = r.split_once(']')
    {
        if let Some(secs) = dmesg_seconds(inner) {
            stamp.boot = Some(secs);
            if timestamp.is_none() {
                timestamp = Some(Cow::Borrowed(inner.trim()));
            }
            rest = after.strip_prefix(' ').unwrap_or(after);
            saw_prefix = true;
        } else if let Some(wall) = dmesg_date(inner) {
            stamp.wall.get_or_insert(wall);
            if timestamp.is_none() {
                timestamp = Some(Cow::Borrowed(inner.trim()));
            }
            rest = after.strip_prefix(' ').unwrap_or(after);
            saw_prefix = true;
        }
    }
    if saw_prefix {
        Prefix::Kernel {
            stamp,
            timestamp,
            rest,
        }
    } else {
        Prefix::None
    }
}

/// `6,1234,5678901,-;message` (a /dev/kmsg record) and its ` KEY=value` dictionary lines.
fn kmsg_record(line: &str) -> Option<Prefix<'_>> {
    let first = line.as_bytes().first()?;
    if *first == b' ' {
        let t = line.trim_start();
        let key_end = t.find('=')?;
        let key = &t[..key_end];
        return (!key.is_empty() && key.bytes().all(|b| b.is_ascii_uppercase() || b == b'_'))
            .then_some(Prefix::KmsgDictionary);
    }
    if !first.is_ascii_digit() {
        return None;
    }
    let (head, message) = line.split_once(';')?;
    let mut fields = head.split(',');
    let prio = fields.next()?;
    let seq = fields.next()?;
    let usec = fields.next()?;
    let flags = fields.next()?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !(digits(prio) && digits(seq) && digits(usec) && flags.len() <= 2) {
        return None;
    }
    let usec: u64 = usec.parse().ok()?;
    let secs = usec as f64 / 1e6;
    Some(Prefix::Kernel {
        stamp: Stamp {
            boot: Some(secs),
            wall: None,
        },
        timestamp: Some(Cow::Owned(format!(
            "{}.{:06}",
            usec / 1_000_000,
            usec % 1_000_000
        ))),
        rest: message,
    })
}

/// `<4>` console level.
fn level_prefix(s: &str) -> Option<&str> {
    let r = s.strip_prefix('<')?;
    let (lvl, after) = r.split_once('>')?;
    (!lvl.is_empty() && lvl.len() <= 3 && lvl.bytes().all(|c| c.is_ascii_digit())).then_some(after)
}

/// `kernel: rest` or `dockerd[123]: rest` -> (program, rest).
fn program_tag(s: &str) -> Option<(&str, &str)> {
    let (word, rest) = match s.split_once(' ') {
        Some((w, r)) => (w, r),
        None => (s, ""),
    };
    let tag = word.strip_suffix(':')?;
    let program = match tag.split_once('[') {
        Some((p, pid)) if pid.ends_with(']') => p,
        Some(_) => return None,
        None => tag,
    };
    let ok = !program.is_empty()
        && program
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./@".contains(&b));
    ok.then_some((program, rest))
}

/// Takes off what some kernels and vendors put between the timestamp and the message:
/// `CONFIG_PRINTK_CALLER` ids (`[T1234]`, `[  C3]`), Android/vendor `[pid:N,cpuN,comm]`,
/// MediaTek `(3)[1234:comm]`, and repeated console levels.
fn strip_inner_prefixes(mut s: &str) -> &str {
    loop {
        let before = s;
        if let Some(after) = level_prefix(s) {
            s = after;
        }
        if let Some(r) = s.strip_prefix('[')
            && let Some((inner, after)) = r.split_once(']')
            && (is_caller_id(inner) || is_vendor_task(inner))
        {
            s = after.strip_prefix(' ').unwrap_or(after);
        }
        if let Some(r) = s.strip_prefix('(')
            && let Some((cpu, after)) = r.split_once(')')
            && !cpu.is_empty()
            && cpu.bytes().all(|b| b.is_ascii_digit())
            && let Some(r) = after.strip_prefix('[')
            && let Some((inner, after)) = r.split_once(']')
            && inner
                .split_once(':')
                .is_some_and(|(pid, _)| !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()))
        {
            s = after.strip_prefix(' ').unwrap_or(after);
        }
        if s == before {
            return s;
        }
    }
}

/// `T1234`, `    T0`, `C3`: the printk caller id.
fn is_caller_id(inner: &str) -> bool {
    let t = inner.trim_start();
    let mut b = t.bytes();
    matches!(b.next(), Some(b'T' | b'C')) && t.len() > 1 && b.all(|c| c.is_ascii_digit())
}

/// `pid:1234,cpu3,kworker/u16:3` (HiSilicon/Android).
fn is_vendor_task(inner: &str) -> bool {
    inner.starts_with("pid:") && inner.contains(",cpu")
}

/// `  123.456789` -> seconds (parsed by hand: every dmesg line has one).
fn dmesg_seconds(s: &str) -> Option<f64> {
    let s = s.trim_start_matches(' ');
    let dot = s.as_bytes().iter().position(|&c| c == b'.')?;
    let (a, b) = (&s[..dot], &s[dot + 1..]);
    if a.is_empty() || b.is_empty() || a.len() > 12 || b.len() > 9 {
        return None;
    }
    let digits = |t: &str| {
        t.bytes().try_fold(0u64, |acc, c| {
            c.is_ascii_digit().then(|| acc * 10 + u64::from(c - b'0'))
        })
    };
    const SCALE: [f64; 10] = [1.0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9];
    let (whole, frac) = (digits(a)?, digits(b)?);
    Some(whole as f64 + frac as f64 / SCALE[b.len()])
}

/// `Tue Jun 13 04:36:30 2017` (dmesg -T, any language: five words, the fourth `hh:mm:ss`).
fn dmesg_date(s: &str) -> Option<f64> {
    let words: Vec<&str> = s.split_whitespace().collect();
    if words.len() != 5 {
        return None;
    }
    let secs = clock_seconds(words[3])?;
    let day: f64 = words[2].parse().ok()?;
    let month = MONTHS
        .iter()
        .position(|m| *m == words[1])
        .map(|m| m as f64)
        .or_else(|| {
            let digits: String = words[1].chars().take_while(char::is_ascii_digit).collect();
            digits.parse::<f64>().ok().map(|m| m - 1.0)
        })
        .unwrap_or(0.0);
    Some(year_seconds(month, day, secs))
}

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

fn year_seconds(month0: f64, day: f64, secs: f64) -> f64 {
    (month0 * 31.0 + day) * 86_400.0 + secs
}

/// `15:15:41` or `15:15:41.123456` -> seconds of the day.
fn clock_seconds(t: &str) -> Option<f64> {
    let b = t.as_bytes();
    if b.len() < 8 || b[2] != b':' || b[5] != b':' {
        return None;
    }
    let h: f64 = t[..2].parse().ok()?;
    let m: f64 = t[3..5].parse().ok()?;
    let s: f64 = t[6..].replace(',', ".").parse().ok()?;
    Some(h * 3600.0 + m * 60.0 + s)
}

/// `19:18:21 kernel: ...`: a time of day with no date, counted only before a program tag.
fn clock_only_time(s: &str) -> Option<(&str, f64, &str)> {
    let (time, after) = s.split_once(' ')?;
    if time.len() > 15 || !time.as_bytes().first()?.is_ascii_digit() {
        return None;
    }
    let secs = clock_seconds(time)?;
    program_tag(after).or_else(|| {
        let (_, after_host) = after.split_once(' ')?;
        program_tag(after_host)
    })?;
    Some((time, secs, after))
}

/// `Nov 12 15:15:41 ` / `Feb  9 08:09:39.123456 ` (short, short-precise).
fn syslog_time(s: &str) -> Option<(&str, f64, &str)> {
    let month = s.get(..3)?;
    let month0 = MONTHS.iter().position(|m| *m == month)?;
    if s.as_bytes().get(3) != Some(&b' ') {
        return None;
    }
    let after_month = s[4..].trim_start_matches(' ');
    let (day, after_day) = after_month.split_once(' ')?;
    if day.is_empty() || day.len() > 2 || !day.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let (time, after) = after_day.split_once(' ').unwrap_or((after_day, ""));
    let secs = clock_seconds(time)?;
    let end = s.len() - after.len();
    let ts = s[..end].trim_end();
    Some((
        ts,
        year_seconds(month0 as f64, day.parse().ok()?, secs),
        after,
    ))
}

/// `2024-02-09T08:09:39+0000 `, `2024-02-09T08:09:39.123456+00:00 ` (journal short-iso,
/// short-iso-precise, RFC 5424 syslog), and `2024-02-09T08:09:39,123456+00:00 ` (dmesg
/// --time-format=iso, whose message follows directly: the last value is true then).
fn iso_time(s: &str) -> Option<(&str, f64, &str, bool)> {
    if s.len() < 19 || !s.as_bytes()[0].is_ascii_digit() || s.as_bytes()[4] != b'-' {
        return None;
    }
    let (ts, after) = s.split_once(' ').unwrap_or((s, ""));
    let b = ts.as_bytes();
    let ok = b.len() >= 19
        && b[..4].iter().all(u8::is_ascii_digit)
        && b[4] == b'-'
        && b[7] == b'-'
        && (b[10] == b'T' || b[10] == b' ')
        && b[13] == b':';
    if !ok {
        return None;
    }
    let month: f64 = ts[5..7].parse().ok()?;
    let day: f64 = ts[8..10].parse().ok()?;
    let clock_end = ts[11..].find(['+', 'Z', '-']).map_or(ts.len(), |i| 11 + i);
    let secs = clock_seconds(&ts[11..clock_end])?;
    let dmesg_iso = ts.get(19..20) == Some(",");
    Some((ts, year_seconds(month - 1.0, day, secs), after, dmesg_iso))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kernel_texts(text: &str) -> Vec<String> {
        pieces(text)
            .into_iter()
            .filter_map(|p| match p {
                Piece::Kernel(k) => Some(k.text),
                Piece::Program(_) => None,
            })
            .collect()
    }

    #[test]
    fn every_prefix_comes_off() {
        let msg = "exe: page allocation failure: order:6, mode:0x10c0d0";
        for line in [
            format!("Nov 12 15:15:41 kernel: {msg}"),
            format!("Nov 12 15:15:41 host kernel: {msg}"),
            format!("Nov 12 15:15:41.123456 host kernel: {msg}"),
            format!("Nov 12 15:15:41 host kernel: [ 5061.330805] {msg}"),
            format!("2024-02-09T08:09:39+0000 host kernel: {msg}"),
            format!("2024-02-09T08:09:39.123456+00:00 host kernel: {msg}"),
            format!("2024-02-09T08:09:39,123456+00:00 {msg}"),
            format!("<4>[12345.342532] {msg}"),
            format!("<4>{msg}"),
            format!("[ 5061.330805] {msg}"),
            format!("[Tue Jun 13 04:36:30 2017] {msg}"),
            format!("[四 4月 17 18:48:52 2025] {msg}"),
            format!("[   17.470894][    T1] {msg}"),
            format!("19:18:21 kernel: {msg}"),
            format!("[   17.470894] [  C3] {msg}"),
            format!("[  123.456] [pid:2156,cpu5,kworker/u16:3]{msg}"),
            format!("<6>[  123.456] (3)[1234:exe]{msg}"),
            format!("6,1234,5678901,-;{msg}"),
            format!("6,1234,5678901,-,caller=T1;{msg}"),
            format!("> > [ 5061.330805] {msg}"),
            format!("\x1b[33m[ 5061.330805] {msg}\x1b[0m\r"),
            format!("garbage\r[ 5061.330805] {msg}"),
            format!("kernel: {msg}").replace("kernel: ", ""),
        ] {
            assert_eq!(kernel_texts(&line), [msg], "{line:?}");
        }
    }

    #[test]
    fn stamps() {
        let p = pieces("[ 5061.330805] a\nNov 12 15:15:41 h kernel: b\n6,1,2500000,-;c\n");
        let stamps: Vec<Stamp> = p
            .iter()
            .map(|p| match p {
                Piece::Kernel(k) => k.stamp,
                Piece::Program(p) => p.stamp,
            })
            .collect();
        assert_eq!(stamps[0].boot, Some(5061.330805));
        assert!(stamps[1].wall.is_some() && stamps[1].boot.is_none());
        assert_eq!(stamps[2].boot, Some(2.5));
        let a = Stamp {
            wall: syslog_time("Nov 12 15:15:41 x").map(|t| t.1),
            boot: None,
        };
        let b = Stamp {
            wall: syslog_time("Nov 12 15:16:01.5 x").map(|t| t.1),
            boot: None,
        };
        assert_eq!(a.seconds_until(&b), Some(20.5));
    }

    #[test]
    fn other_programs_and_kmsg_dictionary() {
        let p = pieces(
            "Jan 23 14:15:31 dc05 dockerd: time=x\n\
             Jan 23 14:15:31 dc05 kubelet[26037]: E0123 boom\n\
             6,2,3,-;hello\n SUBSYSTEM=net\n DEVICE=n2\n",
        );
        assert_eq!(p.len(), 3, "{p:?}");
        match &p[1] {
            Piece::Program(l) => {
                assert_eq!(
                    (l.program.as_str(), l.text.as_str()),
                    ("kubelet", "E0123 boom")
                )
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn continuation_and_012() {
        let text = "Nov 12 15:15:41 kernel: active_anon:1 isolated_anon:26#012 active_file:13358#012 free:5\n\
                    Nov 12 15:15:41 kernel: Node 0 DMA free:15908kB min:64kB low:80kB\n\
                    \x20                       high:96kB managed:15908kB\n\
                    inactive_file:1167040kB unevictable:0kB\n";
        let lines = kernel_texts(text);
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert_eq!(
            lines[0],
            "active_anon:1 isolated_anon:26 active_file:13358 free:5"
        );
        assert!(
            lines[1].ends_with("high:96kB managed:15908kB inactive_file:1167040kB unevictable:0kB")
        );
    }

    /// The word-at-a-time scan finds what a byte-by-byte one finds, wherever the byte sits.
    #[test]
    fn scan_matches_the_byte_loop() {
        for b in 0..=255u8 {
            for at in 0..20 {
                let mut line = vec![b'a'; 20];
                line[at] = b;
                let slow = line.iter().fold(0, |acc, &c| acc | SPECIAL[c as usize]);
                assert_eq!(scan(&line), slow, "byte {b:#x} at {at}");
            }
        }
    }

    #[test]
    fn glued_records_split() {
        let texts = kernel_texts(
            "[30104.278942] lowmem_reserve[]: 0 3340 7802 7802 7802[30104.278944] Node 0 DMA32 free:105108kB min:93836kB\n",
        );
        assert_eq!(
            texts,
            [
                "lowmem_reserve[]: 0 3340 7802 7802 7802",
                "Node 0 DMA32 free:105108kB min:93836kB"
            ]
        );
        // A frame's bracket and a syslog line's dmesg bracket are not glued records.
        assert_eq!(
            kernel_texts("[1.0]  [<ffffffff8171a214>] dump_stack+0x45/0x56\n").len(),
            1
        );
        assert_eq!(kernel_texts("Jun 1 00:00:01 h kernel: [ 1.5] x\n"), ["x"]);
    }

    #[test]
    fn quoted_printable_soft_breaks_join() {
        let text = "> [761945.327441] kworker/u32:45: page allocation failure: order:4, mode:0x=\n\
                    40c00(GFP_NOIO|__GFP_COMP), nodemask=3D(null),cpuset=3D/,mems_allowed=3D0=\n\
                    \n";
        assert_eq!(
            kernel_texts(text),
            [
                "kworker/u32:45: page allocation failure: order:4, mode:0x40c00(GFP_NOIO|__GFP_COMP), nodemask=(null),cpuset=/,mems_allowed=0"
            ]
        );
    }
}
