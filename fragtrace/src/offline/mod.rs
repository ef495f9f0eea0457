//! `fragtrace analyze-log`: diagnosis of page allocation failures and OOM-killer reports from a
//! kernel log (dmesg, journalctl, syslog, /dev/kmsg), with no root and no eBPF; once over a file
//! or following a live log.
pub mod analyze;
pub mod dumps;
pub mod follow;
pub mod gfp_layouts;
pub mod lines;
pub mod logparse;
pub mod report;
pub mod runtime;

use std::{
    io::{BufRead, BufReader, Read, Write},
    path::PathBuf,
    process::ExitCode,
};

use anyhow::{Context, Result};

use crate::error::{ExitStatus, fatal};

#[derive(clap::Args, Debug)]
pub struct AnalyzeLogArgs {
    /// The log file; `-` or nothing reads standard input (with --follow: /dev/kmsg).
    pub file: Option<PathBuf>,
    /// Print one JSON object per incident.
    #[arg(long)]
    pub json: bool,
    /// Watch the log like `tail -f` (new lines only) and print each diagnosis as soon as its
    /// report is complete; FILE, or /dev/kmsg when none is given. Ends on SIGINT or SIGTERM.
    #[arg(long)]
    pub follow: bool,
}

pub fn run(args: AnalyzeLogArgs) -> Result<ExitCode> {
    let mut sink = Sink::new(args.json);
    let result = if args.follow {
        follow::run(args.file.as_ref(), &mut sink)
    } else {
        run_once(args.file.as_ref(), &mut sink)
    };
    match result {
        Err(e) if crate::sink::is_broken_pipe(&e) => Ok(ExitCode::SUCCESS),
        other => other,
    }
}

/// Prints diagnoses as text or JSON lines.
pub struct Sink {
    json: bool,
    out: std::io::BufWriter<std::io::Stdout>,
    pub printed: usize,
}

impl Sink {
    fn new(json: bool) -> Self {
        Self {
            json,
            out: std::io::BufWriter::with_capacity(1 << 16, std::io::stdout()),
            printed: 0,
        }
    }

    fn print(&mut self, inc: &logparse::Incident) -> Result<()> {
        let r = report::Report::new(inc);
        if self.json {
            serde_json::to_writer(&mut self.out, &r.json)?;
            self.out.write_all(b"\n")?;
        } else {
            self.out.write_all(r.text().as_bytes())?;
            self.out.write_all(b"\n")?;
        }
        self.printed += 1;
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        self.out.flush()?;
        Ok(())
    }
}

/// What one incident adds to the daemon's counters.
pub fn counted(inc: &logparse::Incident) -> report::Counted {
    report::Report::new(inc).counted()
}

/// One incident's diagnosis as its JSON line and its text (the fuzz targets drive this).
pub fn diagnose(inc: &logparse::Incident) -> (String, String) {
    let r = report::Report::new(inc);
    (serde_json::to_string(&r.json).unwrap_or_default(), r.text())
}

/// Raw lines in, finished incidents out: joiner, parser and evidence analysis in one place.
#[derive(Default)]
pub struct Pipeline {
    joiner: lines::Joiner,
    parser: logparse::Parser,
    analyzer: analyze::Analyzer,
    pieces: Vec<lines::Piece>,
    events: Vec<logparse::Event>,
    pub truncated_at: Option<usize>,
    pub dumps_seen: usize,
}

impl Pipeline {
    pub fn new() -> Self {
        Self::default()
    }

    /// One raw line; finished incidents go to `out`.
    pub fn push_line(&mut self, raw: &str, out: &mut Vec<logparse::Incident>) {
        self.joiner.skip_idle =
            (!self.parser.in_report()).then_some(logparse::starts_something as fn(&str) -> bool);
        self.joiner.push(raw, &mut self.pieces);
        if self.pieces.is_empty() {
            // Lines only counted still move the evidence window on.
            if self.joiner.raw_lines.is_multiple_of(1024) {
                self.analyzer.advance(self.joiner.raw_lines, out);
            }
            return;
        }
        self.drain_pieces(out);
    }

    fn drain_pieces(&mut self, out: &mut Vec<logparse::Incident>) {
        let mut latest = None;
        for p in self.pieces.drain(..) {
            latest = Some(match &p {
                lines::Piece::Kernel(k) => k.line,
                lines::Piece::Program(p) => p.line,
            });
            self.parser.push(p, &mut self.events);
        }
        self.drain_events(out);
        if let Some(line) = latest {
            self.analyzer.advance(line, out);
        }
    }

    fn drain_events(&mut self, out: &mut Vec<logparse::Incident>) {
        for e in self.events.drain(..) {
            match &e {
                logparse::Event::Incident(i) if i.truncated => {
                    self.truncated_at.get_or_insert(i.line);
                }
                logparse::Event::Dump(_) => self.dumps_seen += 1,
                _ => {}
            }
            self.analyzer.event(e, out);
        }
    }

    /// A quiet spell while following: what is held back is complete; reports that have waited
    /// `hold` for later evidence are handed out.
    pub fn idle(&mut self, hold: std::time::Duration, out: &mut Vec<logparse::Incident>) {
        self.joiner.flush(&mut self.pieces);
        for p in self.pieces.drain(..) {
            self.parser.push(p, &mut self.events);
        }
        self.parser.idle(&mut self.events);
        self.drain_events(out);
        self.analyzer.release_held(hold, out);
    }

    /// Whether anything is held back.
    pub fn has_pending(&self) -> bool {
        self.joiner.has_pending() || self.parser.in_report() || self.analyzer.has_pending()
    }

    /// End of input.
    pub fn finish(&mut self, out: &mut Vec<logparse::Incident>) {
        self.joiner.flush(&mut self.pieces);
        for p in self.pieces.drain(..) {
            self.parser.push(p, &mut self.events);
        }
        self.parser.finish(&mut self.events);
        self.drain_events(out);
        self.analyzer.finish(out);
    }

    pub fn kernel_lines(&self) -> usize {
        self.parser.kernel_lines + self.joiner.skipped
    }
}

/// Analyses a whole file or standard input, streaming.
fn run_once(file: Option<&PathBuf>, sink: &mut Sink) -> Result<ExitCode> {
    let (name, reader): (String, Box<dyn Read>) = match file.filter(|p| p.as_os_str() != "-") {
        Some(path) => {
            let name = path.display().to_string();
            let f = std::fs::File::open(path)
                .map_err(|e| fatal(ExitStatus::BadInput, format!("cannot open {name}: {e}")))?;
            (name, Box::new(f))
        }
        None => ("standard input".to_string(), Box::new(std::io::stdin())),
    };
    let mut reader = BufReader::with_capacity(1 << 20, reader);
    sniff(&name, &mut reader)?;
    let mut pipeline = Pipeline::new();
    let mut done = Vec::new();
    let mut buf = Vec::with_capacity(4096);
    let mut line_no = 0usize;
    let mut any_text = false;
    loop {
        buf.clear();
        let n = reader
            .read_until(b'\n', &mut buf)
            .map_err(|e| fatal(ExitStatus::BadInput, format!("cannot read {name}: {e}")))?;
        if n == 0 {
            break;
        }
        line_no += 1;
        let line = buf.strip_suffix(b"\n").unwrap_or(&buf);
        check_line(&name, line_no, line)?;
        any_text |= line.iter().any(|b| !b.is_ascii_whitespace());
        let text = match std::str::from_utf8(line) {
            Ok(t) => std::borrow::Cow::Borrowed(t),
            Err(_) => String::from_utf8_lossy(line),
        };
        pipeline.push_line(&text, &mut done);
        for inc in done.drain(..) {
            sink.print(&inc)?;
        }
    }
    pipeline.finish(&mut done);
    for inc in done.drain(..) {
        sink.print(&inc)?;
    }
    sink.flush()?;
    if !any_text {
        return Err(fatal(ExitStatus::BadInput, format!("{name} is empty")));
    }
    if sink.printed == 0 {
        if pipeline.kernel_lines() == 0 && pipeline.dumps_seen == 0 {
            return Err(fatal(
                ExitStatus::BadInput,
                format!(
                    "{name} does not look like a kernel log (no dmesg, syslog, journal or /dev/kmsg kernel lines)"
                ),
            ));
        }
        eprintln!("fragtrace: {name}: no page allocation failure or OOM-killer report found");
        return Ok(ExitCode::SUCCESS);
    }
    if let Some(line) = pipeline.truncated_at {
        return Err(fatal(
            ExitStatus::BadInput,
            format!(
                "{name} ends inside the incident that starts at line {line} (no free lists after its Mem-Info or call trace); the report above is partial"
            ),
        ));
    }
    Ok(ExitCode::SUCCESS)
}

/// Rejects what cannot be a kernel log from its first 64 KiB: binary data or invalid UTF-8.
fn sniff(name: &str, reader: &mut BufReader<Box<dyn Read>>) -> Result<()> {
    let head = reader
        .fill_buf()
        .with_context(|| format!("cannot read {name}"))?;
    let head = &head[..head.len().min(64 << 10)];
    check_text(name, head).map(|_| ()).or_else(|e| {
        // A multi-byte character cut by the 64 KiB boundary is not binary.
        match std::str::from_utf8(head) {
            Err(u) if u.error_len().is_none() && !head.contains(&0) => Ok(()),
            _ if head.iter().all(u8::is_ascii_whitespace) => Ok(()),
            _ => Err(e),
        }
    })
}

fn check_line(name: &str, line_no: usize, line: &[u8]) -> Result<()> {
    if line.len() > lines::MAX_LINE {
        return Err(fatal(
            ExitStatus::BadInput,
            format!(
                "{name} line {line_no} is {} bytes long; kernel log lines are at most a few kB, so this is not a kernel log",
                line.len()
            ),
        ));
    }
    // NUL bytes after the first 64 KiB (checked by `sniff`) are the padding a crash leaves in
    // /var/log/messages: the joiner drops them with other control characters.
    Ok(())
}

/// Rejects what cannot be a kernel log: empty, binary, or a line far longer than printk makes.
pub fn check_text<'a>(name: &str, bytes: &'a [u8]) -> Result<&'a str> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(fatal(ExitStatus::BadInput, format!("{name} is empty")));
    }
    let text = match std::str::from_utf8(bytes) {
        Ok(t) if !t.contains('\0') => t,
        _ => {
            return Err(fatal(
                ExitStatus::BadInput,
                format!("{name} is binary data, not a kernel log (NUL bytes or invalid UTF-8)"),
            ));
        }
    };
    if let Some((n, line)) = text
        .lines()
        .enumerate()
        .find(|(_, l)| l.len() > lines::MAX_LINE)
    {
        return Err(fatal(
            ExitStatus::BadInput,
            format!(
                "{name} line {} is {} bytes long; kernel log lines are at most a few kB, so this is not a kernel log",
                n + 1,
                line.len()
            ),
        ));
    }
    Ok(text)
}

/// Runs the whole pipeline over a text (tests).
#[cfg(test)]
pub(crate) fn analyze_text(text: &str) -> Vec<logparse::Incident> {
    let mut p = Pipeline::new();
    let mut out = Vec::new();
    for raw in text.lines() {
        p.push_line(raw, &mut out);
    }
    p.finish(&mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::exit_status_of;

    fn status(bytes: &[u8]) -> Option<u8> {
        check_text("x", bytes).err().map(|e| exit_status_of(&e))
    }

    #[test]
    fn bad_inputs_are_rejected_with_bad_input() {
        assert_eq!(status(b""), Some(5));
        assert_eq!(status(b" \n\n"), Some(5));
        assert_eq!(status(b"\x7fELF\x02\x01\x01\0\0\0"), Some(5));
        assert_eq!(status(&[0xff, 0xfe, 0x41]), Some(5));
        assert_eq!(status(&vec![b'a'; 5 << 20]), Some(5));
        assert_eq!(status(b"[1.0] hello\n"), None);
    }
}

/// Every published log in tests/fixtures/logs/README.md gets the diagnosis its row states.
#[cfg(test)]
mod corpus_tests {
    use super::*;

    fn dash<T: ToString>(v: Option<T>) -> String {
        v.map_or_else(|| "-".to_string(), |v| v.to_string())
    }

    #[test]
    fn every_corpus_log_gets_its_expected_diagnosis() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/logs");
        let table = std::fs::read_to_string(dir.join("README.md")).unwrap();
        let mut rows = 0;
        for row in table
            .lines()
            .filter(|l| l.starts_with("| ") && l.contains(".log |"))
        {
            let cells: Vec<&str> = row.trim_matches('|').split(" | ").map(str::trim).collect();
            let [
                file,
                index,
                _about,
                task,
                order,
                mode,
                largest,
                verdict,
                netns,
            ] = cells[..]
            else {
                panic!("bad row {row}");
            };
            assert!(
                dir.join(file.replace(".log", ".source")).exists(),
                "{file} has no .source"
            );
            let text = std::fs::read_to_string(dir.join(file)).unwrap();
            let incidents = analyze_text(&text);
            let inc = incidents
                .get(index.parse::<usize>().unwrap())
                .unwrap_or_else(|| panic!("{file}: no incident {index}"));
            let r = report::Report::new(inc);
            let j = serde_json::to_value(&r.json).unwrap();
            let got = [
                j["comm"].as_str().unwrap_or("-").to_string(),
                dash(j["order"].as_u64()),
                j["mode"].as_str().unwrap_or("-").to_string(),
                dash(j["largest_free_order"].as_u64()),
                j["verdict"].as_str().unwrap().to_string(),
                if j["netns"] == true { "yes" } else { "no" }.to_string(),
            ];
            assert_eq!(
                got,
                [task, order, mode, largest, verdict, netns],
                "{file} incident {index}: {}",
                j["reason"]
            );
            rows += 1;
        }
        assert!(rows >= 12, "only {rows} corpus rows");
    }
}
