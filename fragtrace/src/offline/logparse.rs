//! Kernel log text to incidents: page allocation failures and OOM-killer reports with their call
//! traces and Mem-Info blocks.
//!
//! Pure text processing (std and anyhow only) so the fuzz crate can include this file alone.
//! Accepts dmesg (`[12345.678901] `, `<4>`, `dmesg -T`), syslog (`Nov 12 15:15:41 host kernel: `,
//! host optional), journalctl short-iso (`2024-02-09T08:09:39+0000 host kernel: `), `#012`
//! escaped newlines, and Mem-Info lines wrapped onto indented continuation lines.

/// A line longer than this is not a kernel log line (printk lines are at most 1 KiB; a syslog
/// line holding a `#012`-joined Mem-Info stays well below).
pub const MAX_LINE: usize = 64 * 1024;

/// One logical kernel line: the message text and the 1-based number of the raw line it began.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelLine {
    pub line: usize,
    pub timestamp: Option<String>,
    pub text: String,
}

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
    /// `lowmem_reserve[]` in pages.
    pub lowmem_reserve: Vec<u64>,
    /// Free blocks per order from `Node 0 Normal: 34178*4kB (UEM) ...`.
    pub free_blocks: Vec<u64>,
    /// The migratetypes of each order's free blocks as printed (`UMEH`; `H` is the highatomic
    /// reserve), empty when the kernel printed none (before 3.13, or no free block).
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

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Incident {
    pub trigger: Trigger,
    pub line: usize,
    pub timestamp: Option<String>,
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
    /// `kmem_cache_create(NAME) failed with error -12`, or `nf_conn` from `Unable to create
    /// nf_conn slab cache`.
    pub slab_cache: Option<String>,
    pub slab_error: Option<String>,
    pub oom_kill: Option<OomKill>,
    /// The log ended inside this incident (a call trace or Mem-Info without its free lists).
    pub truncated: bool,
    mem_info_started: bool,
    in_call_trace: bool,
}

impl Incident {
    fn new(trigger: Trigger, kl: &KernelLine, comm: &str) -> Self {
        Self {
            trigger,
            line: kl.line,
            timestamp: kl.timestamp.clone(),
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
            slab_cache: None,
            slab_error: None,
            oom_kill: None,
            truncated: false,
            mem_info_started: false,
            in_call_trace: false,
        }
    }
}

/// What the parser found in the whole input.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Parsed {
    pub incidents: Vec<Incident>,
    /// Lines that carried a kernel-log prefix or a known kernel message.
    pub kernel_lines: usize,
}

/// Splits the text into logical kernel lines: prefixes stripped, `#012` split, wrapped
/// continuation lines joined to the line they continue.
pub fn kernel_lines(text: &str) -> Vec<KernelLine> {
    let mut out: Vec<KernelLine> = Vec::new();
    let mut last_was_kernel = false;
    for (i, raw) in text.lines().enumerate() {
        let line_no = i + 1;
        let raw = unquote_printable(raw.trim_end_matches('\r'));
        let raw = raw.as_ref();
        match strip_prefix(raw) {
            Prefix::Kernel { timestamp, rest } => {
                for (k, part) in rest.split("#012").enumerate() {
                    if k > 0 && is_continuation(part) && !out.is_empty() {
                        join(out.last_mut().unwrap(), part);
                    } else {
                        out.push(KernelLine {
                            line: line_no,
                            timestamp: timestamp.clone(),
                            text: part.to_string(),
                        });
                    }
                }
                last_was_kernel = true;
            }
            Prefix::OtherProgram => last_was_kernel = false,
            Prefix::None => {
                if last_was_kernel
                    && !out.is_empty()
                    && ((is_continuation(raw) && raw.len() > 1) || is_wrapped_tail(raw))
                {
                    // A wrapped line: indented, a bare `key:value` run of a Mem-Info line, or
                    // the rest of a prefixed line that a mail client or terminal wrapped.
                    for part in raw.split("#012") {
                        join(out.last_mut().unwrap(), part);
                    }
                } else {
                    for part in raw.split("#012") {
                        out.push(KernelLine {
                            line: line_no,
                            timestamp: None,
                            text: part.to_string(),
                        });
                    }
                    last_was_kernel = false;
                }
            }
        }
    }
    out
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
        && !is_known_kernel_text(t)
}

/// Undoes the quoted-printable `=3D` (`=`) of a log pasted into a mail
/// (`nodemask=3D(null),cpuset=3D/`); kernel text never contains `=3D` itself.
fn unquote_printable(raw: &str) -> std::borrow::Cow<'_, str> {
    if raw.contains("=3D") {
        std::borrow::Cow::Owned(raw.replace("=3D", "="))
    } else {
        std::borrow::Cow::Borrowed(raw)
    }
}

fn join(prev: &mut KernelLine, part: &str) {
    let part = part.trim();
    if part.is_empty() {
        return;
    }
    if !prev.text.ends_with(' ') {
        prev.text.push(' ');
    }
    prev.text.push_str(part);
}

/// An indented line, or one that starts with a Mem-Info `key:value` (`inactive_file:1167040kB`).
fn is_continuation(s: &str) -> bool {
    if s.starts_with([' ', '\t']) {
        return !s.trim().is_empty() && !looks_like_frame(s.trim());
    }
    let first = s.split_whitespace().next().unwrap_or("");
    match first.split_once(':') {
        Some((key, value)) => {
            !key.is_empty()
                && key
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c == '_' || c == '(' || c == ')')
                && value.starts_with(|c: char| c.is_ascii_digit())
        }
        None => first == "all_unreclaimable?",
    }
}

enum Prefix<'a> {
    Kernel {
        timestamp: Option<String>,
        rest: &'a str,
    },
    /// A syslog line from another program (dockerd, kubelet): not kernel text.
    OtherProgram,
    None,
}

/// Recognises syslog / journal / dmesg prefixes.
fn strip_prefix(line: &str) -> Prefix<'_> {
    let mut rest = line;
    let mut timestamp = None;
    let mut saw_prefix = false;
    // syslog `Nov 12 15:15:41 ` or ISO `2024-02-09T08:09:39.123+0000 `.
    if let Some((ts, after)) = syslog_time(rest).or_else(|| iso_time(rest)) {
        timestamp = Some(ts.to_string());
        rest = after;
        // Optional host, then the program tag.
        let mut words = rest.splitn(2, ' ');
        let first = words.next().unwrap_or("");
        let after_first = words.next().unwrap_or("");
        if first == "kernel:" {
            rest = after_first;
        } else if let Some(after_host) = after_first.strip_prefix("kernel: ") {
            rest = after_host;
        } else if after_first == "kernel:" {
            rest = "";
        } else {
            return Prefix::OtherProgram;
        }
        saw_prefix = true;
    }
    // `<4>` console level.
    if let Some(r) = rest.strip_prefix('<')
        && let Some((lvl, after)) = r.split_once('>')
        && !lvl.is_empty()
        && lvl.len() <= 3
        && lvl.chars().all(|c| c.is_ascii_digit())
    {
        rest = after;
        saw_prefix = true;
    }
    // `[12345.678901] ` or `[Tue Jun 13 04:36:30 2017] `.
    if let Some(r) = rest.strip_prefix('[')
        && let Some((inner, after)) = r.split_once(']')
        && (is_dmesg_seconds(inner) || is_dmesg_date(inner))
    {
        if timestamp.is_none() {
            timestamp = Some(inner.trim().to_string());
        }
        rest = after.strip_prefix(' ').unwrap_or(after);
        saw_prefix = true;
    }
    if saw_prefix {
        Prefix::Kernel { timestamp, rest }
    } else {
        Prefix::None
    }
}

fn is_dmesg_seconds(s: &str) -> bool {
    let s = s.trim();
    match s.split_once('.') {
        Some((a, b)) => {
            !a.is_empty()
                && !b.is_empty()
                && a.chars().all(|c| c.is_ascii_digit())
                && b.chars().all(|c| c.is_ascii_digit())
        }
        None => false,
    }
}

fn is_dmesg_date(s: &str) -> bool {
    let words: Vec<&str> = s.split_whitespace().collect();
    words.len() == 5 && words[3].len() == 8 && words[3].matches(':').count() == 2
}

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// `Nov 12 15:15:41 ` / `Feb  9 08:09:39 `.
fn syslog_time(s: &str) -> Option<(&str, &str)> {
    let month = s.get(..3)?;
    if !MONTHS.contains(&month) || s.as_bytes().get(3) != Some(&b' ') {
        return None;
    }
    let after_month = s[4..].trim_start_matches(' ');
    let (day, after_day) = after_month.split_once(' ')?;
    if day.is_empty() || day.len() > 2 || !day.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let (time, after) = after_day.split_once(' ')?;
    if time.len() < 8 || time.as_bytes()[2] != b':' || time.as_bytes()[5] != b':' {
        return None;
    }
    let end = s.len() - after.len() - 1;
    Some((&s[..end], after))
}

/// `2024-02-09T08:09:39+0000 ` or `2024-02-09T08:09:39.123456+00:00 `.
fn iso_time(s: &str) -> Option<(&str, &str)> {
    let (ts, after) = s.split_once(' ')?;
    let b = ts.as_bytes();
    let ok = b.len() >= 19
        && b[..4].iter().all(u8::is_ascii_digit)
        && b[4] == b'-'
        && b[7] == b'-'
        && b[10] == b'T'
        && b[13] == b':';
    ok.then_some((ts, after))
}

fn looks_like_frame(t: &str) -> bool {
    let t = t.trim_start_matches("? ").trim();
    t.starts_with("[<")
        || t.starts_with('<') && t.ends_with('>')
        || t.split_whitespace()
            .next()
            .is_some_and(|w| w.contains("+0x") && w.contains('/'))
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

/// Parses the logical lines into incidents.
pub fn parse(text: &str) -> Parsed {
    let lines = kernel_lines(text);
    let mut parsed = Parsed::default();
    let mut current: Option<Incident> = None;
    for kl in &lines {
        let t = kl.text.trim();
        if t.is_empty() {
            continue;
        }
        if kl.timestamp.is_some() || is_known_kernel_text(t) {
            parsed.kernel_lines += 1;
        }
        if let Some((comm, after)) = t.split_once(": page allocation failure") {
            if let Some(done) = current.take() {
                parsed.incidents.push(done);
            }
            let mut inc = Incident::new(Trigger::AllocationFailure, kl, comm.trim());
            parse_failure_header(after, &mut inc);
            current = Some(inc);
            continue;
        }
        if let Some((invoker, after)) = t.split_once(" invoked oom-killer:") {
            let oom = OomKill {
                line: kl.line,
                invoker: invoker.trim().to_string(),
                gfp_mask: field(after, "gfp_mask=")
                    .map(|m| m.split('(').next().unwrap_or(m).to_string()),
                gfp_names: field(after, "gfp_mask=").and_then(|m| {
                    let (_, names) = m.split_once('(')?;
                    Some(names.trim_end_matches(')').to_string())
                }),
                order: field(after, "order=").and_then(|o| o.parse().ok()),
                ..Default::default()
            };
            match current.as_mut() {
                Some(inc)
                    if inc.oom_kill.is_none() && inc.trigger == Trigger::AllocationFailure =>
                {
                    // Tied to the failure before it; its Mem-Info must not overwrite the failure's.
                    inc.oom_kill = Some(oom);
                }
                _ => {
                    if let Some(done) = current.take() {
                        parsed.incidents.push(done);
                    }
                    let mut inc = Incident::new(Trigger::OomKiller, kl, &oom.invoker);
                    inc.order = oom.order;
                    inc.mode = oom.gfp_mask.clone();
                    inc.printed_flags = oom.gfp_names.clone();
                    inc.oom_kill = Some(oom);
                    current = Some(inc);
                }
            }
            continue;
        }
        let Some(inc) = current.as_mut() else {
            continue;
        };
        // An incident of the OOM killer that followed a failure keeps the failure's data.
        let oom_tail = inc.trigger == Trigger::AllocationFailure && inc.oom_kill.is_some();
        if oom_tail {
            parse_oom_line(t, inc.oom_kill.as_mut().unwrap());
            continue;
        }
        if inc.trigger == Trigger::OomKiller {
            parse_oom_line(t, inc.oom_kill.as_mut().unwrap());
        }
        parse_incident_line(t, inc);
    }
    if let Some(mut last) = current.take() {
        last.truncated = (last.mem_info_started
            && last.zones.iter().all(|z| z.free_blocks.is_empty()))
            || (last.in_call_trace && last.call_trace.is_empty());
        parsed.incidents.push(last);
    }
    parsed
}

fn is_known_kernel_text(t: &str) -> bool {
    t.starts_with("Call Trace:")
        || t.starts_with("Mem-Info:")
        || t.starts_with("CPU: ") && t.contains(" PID: ")
        || t.starts_with("lowmem_reserve[]:")
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

fn parse_cpuset_fields(t: &str, inc: &mut Incident) {
    if let Some(v) = field(t, "nodemask=") {
        inc.nodemask.get_or_insert_with(|| v.to_string());
    }
    if let Some(v) = field(t, "cpuset=") {
        inc.cpuset.get_or_insert_with(|| v.to_string());
    }
    if let Some(v) = field(t, "mems_allowed=") {
        inc.mems_allowed.get_or_insert_with(|| v.to_string());
    }
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

fn parse_incident_line(t: &str, inc: &mut Incident) {
    if t.starts_with("cpuset=") || t.contains("mems_allowed=") {
        parse_cpuset_fields(t, inc);
    }
    if inc.kernel.is_none()
        && ((t.starts_with("CPU: ") && t.contains("PID: ")) || t.starts_with("Pid: "))
    {
        inc.kernel = kernel_version(t);
    }
    if t.starts_with("Call Trace:") {
        inc.in_call_trace = true;
        return;
    }
    if inc.in_call_trace {
        if let Some(frame) = frame_text(t) {
            if frame.starts_with('<') {
            } else if inc.mem_info_started {
                inc.later_frames.push(frame);
            } else {
                inc.call_trace.push(frame);
            }
            return;
        }
        if !(t.starts_with("R") && t.contains(": ") || t.starts_with("Code:")) {
            inc.in_call_trace = false;
        }
    }
    if t.starts_with("Mem-Info:") {
        inc.mem_info_started = true;
        inc.in_call_trace = false;
        return;
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
        return;
    }
    if let Some(rest) = t.strip_prefix("Unable to create ")
        && let Some(name) = rest.strip_suffix(" slab cache")
    {
        inc.slab_cache.get_or_insert_with(|| name.to_string());
        return;
    }
    if let Some(r) = t.strip_prefix("lowmem_reserve[]:") {
        if let Some(z) = inc.zones.last_mut() {
            z.lowmem_reserve = r
                .split_whitespace()
                .filter_map(|v| v.parse().ok())
                .collect();
        }
        return;
    }
    if let Some(rest) = t.strip_prefix("Node ") {
        parse_node_line(rest, inc);
    } else if is_bare_zone_line(t) {
        // Kernels built without CONFIG_NUMA print no `Node N ` before zone lines.
        parse_node_line(&format!("0 {t}"), inc);
    }
}

const ZONE_NAMES: [&str; 6] = ["DMA", "DMA32", "Normal", "HighMem", "Movable", "Device"];

/// `DMA32 free:1408kB min:1416kB ...` or `DMA32: 14*4kB (UME) ...`, as a kernel without
/// CONFIG_NUMA prints them (no `Node 0 `).
fn is_bare_zone_line(t: &str) -> bool {
    let mut words = t.split_whitespace();
    let (Some(first), Some(second)) = (words.next(), words.next()) else {
        return false;
    };
    let name = first.strip_suffix(':').unwrap_or(first);
    ZONE_NAMES.contains(&name)
        && if first.ends_with(':') {
            second.contains('*')
        } else {
            second.starts_with("free:")
        }
}

/// `CPU: 1 PID: 18377 Comm: exe Not tainted 3.10.0-514.el7.x86_64 #1` ->
/// `3.10.0-514.el7.x86_64`; also `Tainted: G  O 4.9.24-coreos #1` and 2.6/3.x `Pid: ..`.
fn kernel_version(t: &str) -> Option<String> {
    let after = t
        .split_once("tainted ")
        .or_else(|| t.split_once("Tainted: "))
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

/// `Node 0 DMA32 free:127248kB min:..` (zone figures) or `Node 0 Normal: 34178*4kB (UEM) ...`
/// (free list).
fn parse_node_line(rest: &str, inc: &mut Incident) {
    let mut words = rest.split_whitespace();
    let Some(node) = words.next().and_then(|n| n.parse::<u32>().ok()) else {
        return;
    };
    let Some(zone_word) = words.next() else {
        return;
    };
    let remainder: Vec<&str> = words.collect();
    if let Some(zone) = zone_word.strip_suffix(':') {
        // Free list: `N*SIZEkB` tokens, each optionally followed by its migratetypes `(UMEH)`.
        let mut sizes: Vec<(u64, u64, String)> = Vec::new();
        for w in &remainder {
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
        let Some(&(_, base, _)) = sizes.first() else {
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
        let z = zone_entry(inc, node, zone);
        z.free_blocks = blocks;
        z.free_types = types;
        z.page_kb = Some(base);
        return;
    }
    // Zone figures; `Node 0 active_anon:..` (per-node stats, 4.8+) has no zone name.
    if zone_word.contains(':') {
        return;
    }
    let kb = |key: &str| {
        remainder.iter().find_map(|w| {
            w.strip_prefix(key)?
                .strip_prefix(':')?
                .strip_suffix("kB")?
                .parse::<u64>()
                .ok()
        })
    };
    let Some(free) = kb("free") else {
        return;
    };
    let (min, low, high, managed) = (kb("min"), kb("low"), kb("high"), kb("managed"));
    let z = zone_entry(inc, node, zone_word);
    z.free_kb = Some(free);
    z.min_kb = min;
    z.low_kb = low;
    z.high_kb = high;
    z.managed_kb = managed;
}

fn zone_entry<'a>(inc: &'a mut Incident, node: u32, zone: &str) -> &'a mut LogZone {
    if let Some(i) = inc
        .zones
        .iter()
        .position(|z| z.node == node && z.zone == zone)
    {
        return &mut inc.zones[i];
    }
    inc.zones.push(LogZone {
        node,
        zone: zone.to_string(),
        ..Default::default()
    });
    inc.zones.last_mut().unwrap()
}

/// Lines of an OOM-killer report: the victim and the constraint.
fn parse_oom_line(t: &str, oom: &mut OomKill) {
    // `Out of memory: Killed process 1234 (java) total-vm:..` (4.x+) or
    // `Out of memory: Kill process 1234 (java) score 900 or sacrifice child` (older), and the
    // memcg variants `Memory cgroup out of memory: Killed process ..`.
    let victim = ["Killed process ", "Kill process "]
        .iter()
        .find_map(|k| t.find(k).map(|i| &t[i + k.len()..]));
    if oom.killed_pid.is_none()
        && let Some(rest) = victim
    {
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
    if let Some(c) = field(t, "constraint=") {
        oom.constraint = Some(c.to_string());
    }
    if let Some(m) = field(t, "oom_memcg=") {
        oom.memcg = Some(m.to_string());
    }
    if let Some(rest) = t
        .split_once("killed as a result of limit of ")
        .map(|(_, r)| r)
    {
        oom.memcg = Some(rest.trim().to_string());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes() {
        let text = "Nov 12 15:15:41 kernel: exe: page allocation failure: order:6, mode:0x10c0d0\n\
                    Jun 13 04:36:30 ip-172-19-13-114 kernel: CPU: 7 PID: 1 Comm: java Not tainted 4.9.24-coreos #1\n\
                    [ 5061.330805] Mem-Info:\n\
                    <4>[12345.342532] Call Trace:\n\
                    2024-02-09T08:09:39.123+0000 prod kernel: Node 0 DMA free:1kB\n\
                    Jan 23 14:15:31 dc05 dockerd: time=x\n";
        let lines = kernel_lines(text);
        let texts: Vec<&str> = lines.iter().map(|l| l.text.as_str()).collect();
        assert_eq!(
            texts,
            [
                "exe: page allocation failure: order:6, mode:0x10c0d0",
                "CPU: 7 PID: 1 Comm: java Not tainted 4.9.24-coreos #1",
                "Mem-Info:",
                "Call Trace:",
                "Node 0 DMA free:1kB",
            ]
        );
        assert_eq!(lines[2].timestamp.as_deref(), Some("5061.330805"));
    }

    #[test]
    fn continuation_and_012() {
        let text = "Nov 12 15:15:41 kernel: active_anon:1 isolated_anon:26#012 active_file:13358#012 free:5\n\
                    Nov 12 15:15:41 kernel: Node 0 DMA free:15908kB min:64kB low:80kB\n\
                    \x20                       high:96kB managed:15908kB\n\
                    inactive_file:1167040kB unevictable:0kB\n";
        let lines = kernel_lines(text);
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert_eq!(
            lines[0].text,
            "active_anon:1 isolated_anon:26 active_file:13358 free:5"
        );
        assert!(
            lines[1]
                .text
                .ends_with("high:96kB managed:15908kB inactive_file:1167040kB unevictable:0kB")
        );
    }

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
