//! Renderers: text lines, JSON lines (docs/json.md), the status line and the summary.
pub mod json;
pub mod status;
pub mod summary;
pub mod text;

use std::io::{self, Write};

/// Where events go: stdout, line by line, flushed per event so pipes see them at once.
/// A write error (full disk, closed pipe) is returned to the caller, which stops and still
/// reports what it recorded.
pub struct Sink {
    out: io::BufWriter<io::Stdout>,
}

impl Sink {
    pub fn stdout() -> Self {
        Self {
            out: io::BufWriter::new(io::stdout()),
        }
    }

    pub fn line(&mut self, line: &str) -> io::Result<()> {
        status::clear();
        self.out.write_all(line.as_bytes())?;
        self.out.write_all(b"\n")?;
        self.out.flush()
    }
}
