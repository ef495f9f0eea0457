//! The status line on stderr, only when stderr is a terminal: what is attached, counts, time.
//! indicatif draws it and fits it to the terminal's width; other output suspends it, so that
//! no stale line is left behind.
use std::{
    io::IsTerminal,
    sync::{Mutex, OnceLock},
    time::Duration,
};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

static BAR: OnceLock<Mutex<Option<ProgressBar>>> = OnceLock::new();

fn bar() -> Option<ProgressBar> {
    BAR.get()?.lock().ok()?.clone()
}

/// Turns the status line on when stderr is a terminal and the user did not opt out.
pub fn enable(wanted: bool) {
    if !wanted || !std::io::stderr().is_terminal() {
        return;
    }
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr_with_hz(4));
    bar.set_style(ProgressStyle::with_template("{wide_msg}").expect("a valid template"));
    bar.enable_steady_tick(Duration::from_secs(1));
    let _ = BAR.set(Mutex::new(Some(bar)));
}

pub fn draw(text: &str) {
    if let Some(bar) = bar() {
        bar.set_message(text.to_string());
    }
}

/// Runs `f` (which writes to the terminal) with the status line out of the way.
pub fn suspend<T>(f: impl FnOnce() -> T) -> T {
    match bar() {
        Some(bar) => bar.suspend(f),
        None => f(),
    }
}

/// Erases the status line for good (before the summary).
pub fn clear() {
    if let Some(slot) = BAR.get()
        && let Ok(mut bar) = slot.lock()
        && let Some(bar) = bar.take()
    {
        bar.finish_and_clear();
    }
}
