//! `analyze-log --follow`: a reader thread per source (a file followed like `tail -f`, /dev/kmsg,
//! or standard input) hands raw lines over a bounded channel; the main loop feeds the pipeline and
//! treats a short quiet spell as the end of the report under way, so a report that is the last
//! thing written is still printed within about a second. SIGINT and SIGTERM end it cleanly.
use std::{
    io::{BufRead, BufReader, Read, Seek, SeekFrom},
    os::unix::fs::OpenOptionsExt,
    path::{Path, PathBuf},
    process::ExitCode,
    sync::{
        atomic::{AtomicBool, Ordering},
        mpsc,
    },
    time::{Duration, Instant},
};

use anyhow::Result;

use super::{Pipeline, Sink, logparse::Incident};
use crate::error::{ExitStatus, fatal};

/// A report is complete once no line has come for this long.
const QUIET: Duration = Duration::from_millis(400);
/// How long a complete report waits for evidence that follows it (runtime errors, a report
/// whose Mem-Info it may borrow).
const HOLD: Duration = Duration::from_millis(500);
const POLL: Duration = Duration::from_millis(100);

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

fn install_signal_handlers() {
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }
}

pub fn run(file: Option<&PathBuf>, sink: &mut Sink) -> Result<ExitCode> {
    install_signal_handlers();
    let mut follower = Follower::start(file)?;
    let mut done = Vec::new();
    while !STOP.load(Ordering::SeqCst) {
        let open = follower.poll(&mut done);
        for inc in done.drain(..) {
            sink.print(&inc)?;
        }
        sink.flush()?;
        if !open {
            break;
        }
    }
    follower.finish(&mut done);
    for inc in done.drain(..) {
        sink.print(&inc)?;
    }
    sink.flush()?;
    Ok(ExitCode::SUCCESS)
}

/// A kernel log followed as it grows: raw lines from a reader thread, reports out as soon as
/// they are complete. `analyze-log --follow` prints them; the daemon counts them when its hooks
/// cannot attach.
pub struct Follower {
    rx: mpsc::Receiver<String>,
    pipeline: Pipeline,
    last_line: Instant,
}

impl Follower {
    /// Opens `file` (`-`: standard input; none: /dev/kmsg) and starts reading new lines.
    pub fn start(file: Option<&PathBuf>) -> Result<Self> {
        let (tx, rx) = mpsc::sync_channel::<String>(4096);
        let source = match file.map(|p| p.as_path()) {
            Some(p) if p.as_os_str() == "-" => Source::Stdin,
            Some(p) if p == Path::new("/dev/kmsg") => Source::Kmsg(p.to_path_buf()),
            Some(p) => Source::File(p.to_path_buf()),
            None => Source::Kmsg(PathBuf::from("/dev/kmsg")),
        };
        source.start(tx)?;
        Ok(Self {
            rx,
            pipeline: Pipeline::new(),
            last_line: Instant::now(),
        })
    }

    /// Waits up to a poll period for lines; appends the reports completed meanwhile. False
    /// once the source has ended.
    pub fn poll(&mut self, done: &mut Vec<Incident>) -> bool {
        match self.rx.recv_timeout(POLL) {
            Ok(line) => {
                self.pipeline.push_line(&line, done);
                self.last_line = Instant::now();
                // Whatever else is queued, without waiting.
                while let Ok(line) = self.rx.try_recv() {
                    self.pipeline.push_line(&line, done);
                }
                true
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if self.pipeline.has_pending() && self.last_line.elapsed() >= QUIET {
                    self.pipeline.idle(HOLD, done);
                }
                true
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => false,
        }
    }

    /// The reports still under way, as they stand.
    pub fn finish(&mut self, done: &mut Vec<Incident>) {
        self.pipeline.finish(done);
    }
}

enum Source {
    File(PathBuf),
    Kmsg(PathBuf),
    Stdin,
}

impl Source {
    /// Opens the source (errors are reported here, before anything runs) and starts its reader.
    fn start(self, tx: mpsc::SyncSender<String>) -> Result<()> {
        match self {
            Source::File(path) => {
                let mut f = std::fs::File::open(&path).map_err(|e| {
                    fatal(
                        ExitStatus::BadInput,
                        format!("cannot open {}: {e}", path.display()),
                    )
                })?;
                let start = f.seek(SeekFrom::End(0))?;
                std::thread::spawn(move || tail_file(path, f, start, tx));
            }
            Source::Kmsg(path) => {
                let mut f = std::fs::OpenOptions::new()
                    .read(true)
                    .custom_flags(libc::O_NONBLOCK)
                    .open(&path)
                    .map_err(|e| {
                        let status = if e.kind() == std::io::ErrorKind::PermissionDenied {
                            ExitStatus::Permission
                        } else {
                            ExitStatus::BadInput
                        };
                        fatal(
                            status,
                            format!(
                                "cannot open {}: {e} (reading the kernel log needs root, or kernel.dmesg_restrict=0)",
                                path.display()
                            ),
                        )
                    })?;
                // New records only, like `tail -f`.
                f.seek(SeekFrom::End(0))?;
                std::thread::spawn(move || read_kmsg(f, tx));
            }
            Source::Stdin => {
                std::thread::spawn(move || {
                    let stdin = std::io::stdin();
                    for line in stdin.lock().lines() {
                        let Ok(line) = line else { break };
                        if tx.send(line).is_err() {
                            break;
                        }
                    }
                });
            }
        }
        Ok(())
    }
}

/// Follows a file from `start`: waits at its end, and starts over when it is truncated or
/// replaced (log rotation).
fn tail_file(path: PathBuf, file: std::fs::File, start: u64, tx: mpsc::SyncSender<String>) {
    let mut pos = start;
    let mut reader = BufReader::new(file);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match reader.read_until(b'\n', &mut buf) {
            Ok(0) => {
                std::thread::sleep(POLL);
                let Ok(meta) = std::fs::metadata(&path) else {
                    continue;
                };
                let replaced = reader
                    .get_ref()
                    .metadata()
                    .map(|m| {
                        use std::os::unix::fs::MetadataExt;
                        m.ino() != meta.ino()
                    })
                    .unwrap_or(false);
                if meta.len() < pos || replaced {
                    let Ok(f) = std::fs::File::open(&path) else {
                        continue;
                    };
                    reader = BufReader::new(f);
                    pos = 0;
                }
            }
            Ok(n) => {
                // A line still being written has no newline yet: wait for the rest.
                if buf.last() != Some(&b'\n') {
                    let _ = reader.seek(SeekFrom::Start(pos));
                    std::thread::sleep(POLL);
                    continue;
                }
                pos += n as u64;
                let line = String::from_utf8_lossy(&buf[..buf.len() - 1]).into_owned();
                if tx.send(line).is_err() {
                    return;
                }
            }
            Err(_) => std::thread::sleep(POLL),
        }
    }
}

/// Reads /dev/kmsg records (`prio,seq,usec,flags;text`, dictionary lines after). A record's
/// embedded newlines arrive escaped as `\x0a`; each part is passed on with the record's prefix.
fn read_kmsg(mut f: std::fs::File, tx: mpsc::SyncSender<String>) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        match f.read(&mut buf) {
            Ok(0) => std::thread::sleep(POLL),
            Ok(n) => {
                let record = String::from_utf8_lossy(&buf[..n]);
                for line in kmsg_lines(&record) {
                    if tx.send(line).is_err() {
                        return;
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => std::thread::sleep(POLL),
            // EPIPE: records were overwritten before we read them; go on with the next.
            Err(e) if e.raw_os_error() == Some(libc::EPIPE) => {}
            Err(_) => return,
        }
    }
}

/// The lines of one /dev/kmsg record.
fn kmsg_lines(record: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut lines = record.lines();
    let Some(first) = lines.next() else {
        return out;
    };
    let Some((head, message)) = first.split_once(';') else {
        return out;
    };
    for part in message.split("\\x0a") {
        out.push(format!("{head};{part}"));
    }
    // Dictionary lines (` SUBSYSTEM=...`) follow; the joiner drops them.
    out.extend(lines.map(str::to_string));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kmsg_records_split_at_escaped_newlines() {
        assert_eq!(
            kmsg_lines("6,12,345,-;Mem-Info:\n"),
            ["6,12,345,-;Mem-Info:"]
        );
        assert_eq!(
            kmsg_lines("4,13,346,-;active_anon:1\\x0a active_file:2\n SUBSYSTEM=x\n"),
            [
                "4,13,346,-;active_anon:1",
                "4,13,346,-; active_file:2",
                " SUBSYSTEM=x"
            ]
        );
    }
}
