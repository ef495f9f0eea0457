//! The status line on stderr (only when stderr is a terminal): what is attached, counts, time.
use std::{
    io::{IsTerminal, Write},
    sync::atomic::{AtomicBool, Ordering},
};

static SHOWN: AtomicBool = AtomicBool::new(false);
static ENABLED: AtomicBool = AtomicBool::new(false);

/// Turns the status line on when stderr is a terminal and the user did not opt out.
pub fn enable(wanted: bool) {
    ENABLED.store(wanted && std::io::stderr().is_terminal(), Ordering::Relaxed);
}

pub fn draw(text: &str) {
    if !ENABLED.load(Ordering::Relaxed) {
        return;
    }
    let mut err = std::io::stderr().lock();
    let _ = write!(err, "\r\x1b[K{text}");
    let _ = err.flush();
    SHOWN.store(true, Ordering::Relaxed);
}

/// Erases the status line before other output is written.
pub fn clear() {
    if SHOWN.swap(false, Ordering::Relaxed) {
        let mut err = std::io::stderr().lock();
        let _ = write!(err, "\r\x1b[K");
        let _ = err.flush();
    }
}
