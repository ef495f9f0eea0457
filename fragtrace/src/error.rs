//! Errors that end the program with a one-line message and a documented exit status.
use std::fmt;

/// Exit statuses (documented in README.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitStatus {
    /// Runtime failure (I/O error, write error, unexpected kernel answer).
    Failure = 1,
    /// Bad command line (clap's own status).
    Usage = 2,
    /// Not enough privilege: not root, or CAP_BPF/CAP_PERFMON missing.
    Permission = 3,
    /// The kernel lacks something fragtrace needs (BTF, tracefs, the tracepoint).
    Unsupported = 4,
    /// Input that cannot be used: an unreadable, empty, binary or truncated log.
    BadInput = 5,
}

/// An error that carries its exit status and a sentence that says what to do.
#[derive(Debug)]
pub struct Fatal {
    pub status: ExitStatus,
    pub message: String,
}

impl Fatal {
    pub fn new(status: ExitStatus, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }
}

impl fmt::Display for Fatal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Fatal {}

/// Shorthand: `Err(fatal(ExitStatus::X, "..."))?`.
pub fn fatal(status: ExitStatus, message: impl Into<String>) -> anyhow::Error {
    Fatal::new(status, message).into()
}

/// The exit status for any error: that of a [`Fatal`] anywhere in the chain, else
/// [`ExitStatus::Failure`].
pub fn exit_status_of(err: &anyhow::Error) -> u8 {
    for cause in err.chain() {
        if let Some(f) = cause.downcast_ref::<Fatal>() {
            return f.status as u8;
        }
    }
    ExitStatus::Failure as u8
}

/// One line: the error and its causes joined with ": ", with newlines folded.
pub fn one_line(err: &anyhow::Error) -> String {
    format!("{err:#}").replace('\n', " ")
}
