//! Where findings go: event lines (text or JSON) on standard output, the recording, the status
//! line and the summary. Each output is written by a thread of its own (`writer`), so a slow
//! reader or disk never holds up analysis or the ring buffer's drain.
pub mod flamegraph;
pub mod flight_recorder;
pub mod http;
pub mod json;
pub mod metrics;
pub mod recording;
pub mod status;
pub mod summary;
pub mod text;
pub mod writer;

use std::{
    fs::{File, OpenOptions},
    io::{self, Write},
    os::unix::fs::{OpenOptionsExt, PermissionsExt},
    path::Path,
};

use writer::{Chunk, Flush, Output, Writer};

use crate::analysis::analyzer::Finding;

/// Writes a command's whole output to standard output. A reader that went away (`| head`) is
/// a normal end; another write error is one line and exit status 1.
pub fn print_whole(text: &str) -> anyhow::Result<std::process::ExitCode> {
    let written = io::stdout().lock().write_all(text.as_bytes());
    ended_by(written.err())
}

/// How a command ends after writing its output: a reader that went away is a normal end.
pub fn ended_by(error: Option<io::Error>) -> anyhow::Result<std::process::ExitCode> {
    match error {
        None => Ok(std::process::ExitCode::SUCCESS),
        Some(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(std::process::ExitCode::SUCCESS),
        Some(e) => Err(anyhow::Error::new(e).context("cannot write to standard output")),
    }
}

/// Whether an error comes from the reader of standard output going away (`| head`).
pub fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<io::Error>()
            .is_some_and(|io| io.kind() == io::ErrorKind::BrokenPipe)
    })
}

/// Creates (or truncates) an output file the user named, readable by its owner only (mode
/// 0600, also when it existed), and never through a symbolic link.
pub fn create_private(path: &Path) -> io::Result<File> {
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)?;
    file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    Ok(file)
}

/// How event lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LineFormat {
    /// Text with at most `frames` stack frames per failure.
    Text { frames: usize },
    /// One JSON object per line (docs/json.md).
    Json,
}

/// Bytes of event lines a writer holds before shedding: about a thousand failures' lines.
const QUEUED_BYTES: usize = 1 << 20;

/// Standard output, with the status line out of the way while it is written.
struct Stdout(io::Stdout);

impl Write for Stdout {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        status::suspend(|| self.0.write(buf))
    }
    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

impl Output for Stdout {
    fn finish(mut self: Box<Self>) -> io::Result<()> {
        self.0.flush()
    }
}

/// Event lines on standard output.
pub struct EventLines {
    format: LineFormat,
    writer: Writer,
    pending: Chunk,
}

impl EventLines {
    pub fn stdout(format: LineFormat) -> io::Result<Self> {
        Ok(Self {
            format,
            writer: Writer::spawn(
                "fragtrace-out",
                Box::new(Stdout(io::stdout())),
                QUEUED_BYTES,
                Flush::WhenIdle,
            )?,
            pending: Chunk::default(),
        })
    }

    /// Event lines appended to `path` (created with mode 0600), for the daemon's `--events
    /// FILE`. Reopening after logrotate moved the file is closing these and calling again.
    pub fn file(path: &Path, format: LineFormat) -> io::Result<Self> {
        let file = OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(path)?;
        // A file that was there keeps its mode through O_CREAT: event lines name tasks and
        // containers, so they are for root only.
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        Ok(Self {
            format,
            writer: Writer::spawn(
                "fragtrace-events",
                Box::new(file),
                QUEUED_BYTES,
                Flush::WhenIdle,
            )?,
            pending: Chunk::default(),
        })
    }

    pub fn finding(&mut self, f: &Finding) {
        match self.format {
            LineFormat::Json => json::finding(f, &mut self.pending.bytes),
            LineFormat::Text { frames } => self
                .pending
                .bytes
                .extend_from_slice(text::finding(f, frames).as_bytes()),
        }
        self.pending.event_ts.push(f.task.ts_ns);
    }

    /// Hands this batch's lines to the writer thread.
    pub fn end_batch(&mut self) {
        self.writer.send(std::mem::take(&mut self.pending));
    }

    pub fn format(&self) -> LineFormat {
        self.format
    }

    /// True once a write failed (a closed pipe, a full disk): output has stopped.
    pub fn failed(&self) -> bool {
        self.writer.stats.failed()
    }

    pub fn stats(&self) -> &writer::WriterStats {
        &self.writer.stats
    }

    /// Writes the summary after the last lines and closes standard output. A write error
    /// (then or earlier) is returned; the summary then goes to stderr.
    pub fn finish(mut self, summary: &str) -> Option<io::Error> {
        self.end_batch();
        let failed_before = self.failed();
        if !failed_before {
            self.writer.send_wait(Chunk {
                bytes: summary.as_bytes().to_vec(),
                event_ts: Vec::new(),
            });
        }
        let err = self.writer.close();
        if failed_before || err.is_some() {
            eprint!("{summary}");
        }
        err
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reader_gone_is_a_normal_end() {
        let e = anyhow::Error::from(io::Error::from(io::ErrorKind::BrokenPipe)).context("writing");
        assert!(is_broken_pipe(&e));
        assert!(!is_broken_pipe(&anyhow::anyhow!("other")));
        assert!(ended_by(Some(io::Error::from(io::ErrorKind::BrokenPipe))).is_ok());
        let full = ended_by(Some(io::Error::from_raw_os_error(libc::ENOSPC))).unwrap_err();
        assert!(format!("{full:#}").starts_with("cannot write to standard output"));
    }
}
