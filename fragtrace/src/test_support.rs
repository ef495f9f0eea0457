//! For unit tests: a test that cannot run here says why and is counted as skipped.

/// Prints `SKIPPED <test>: <reason>` and, when `cargo xtask test` set FRAGTRACE_SKIP_LOG,
/// appends it there, so that the suite's summary counts it (cargo shows it as passed).
pub(crate) fn skip(test: &str, reason: &str) {
    use std::io::Write;
    let reason = reason.replace('\n', " ");
    eprintln!("SKIPPED {test}: {reason}");
    if let Some(log) = std::env::var_os("FRAGTRACE_SKIP_LOG") {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .and_then(|mut f| f.write_all(format!("{test}: {reason}\n").as_bytes()))
            .unwrap_or_else(|e| panic!("FRAGTRACE_SKIP_LOG {}: {e}", log.to_string_lossy()));
    }
}
