//! `fragtrace analyze-log`: diagnosis of page allocation failures and OOM-killer reports from a
//! kernel log (dmesg, journalctl, syslog), with no root and no eBPF.
pub mod gfp_layouts;
pub mod logparse;
mod report;

use std::{
    io::{Read, Write},
    path::PathBuf,
    process::ExitCode,
};

use anyhow::{Context, Result};

use crate::error::{ExitStatus, fatal};

#[derive(clap::Args, Debug)]
pub struct AnalyzeLogArgs {
    /// The log file; `-` or nothing reads standard input.
    pub file: Option<PathBuf>,
    /// Print one JSON object per incident.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: AnalyzeLogArgs) -> Result<ExitCode> {
    let (name, bytes) = read_input(args.file.as_ref())?;
    let text = check_text(&name, &bytes)?;
    let parsed = logparse::parse(text);
    if parsed.incidents.is_empty() {
        if parsed.kernel_lines == 0 {
            return Err(fatal(
                ExitStatus::BadInput,
                format!(
                    "{name} does not look like a kernel log (no dmesg, syslog or journal kernel lines)"
                ),
            ));
        }
        println!("{name}: no page allocation failure or OOM-killer report found");
        return Ok(ExitCode::SUCCESS);
    }
    let reports: Vec<report::Report> = parsed.incidents.iter().map(report::Report::new).collect();
    let mut out = std::io::stdout().lock();
    for r in &reports {
        let line = if args.json {
            serde_json::to_string(&r.json)? + "\n"
        } else {
            r.text() + "\n"
        };
        out.write_all(line.as_bytes())?;
    }
    out.flush()?;
    if let Some(cut) = parsed.incidents.iter().find(|i| i.truncated) {
        return Err(fatal(
            ExitStatus::BadInput,
            format!(
                "{name} ends inside the incident that starts at line {} (no free lists after its Mem-Info or call trace); the report above is partial",
                cut.line
            ),
        ));
    }
    Ok(ExitCode::SUCCESS)
}

fn read_input(file: Option<&PathBuf>) -> Result<(String, Vec<u8>)> {
    let mut bytes = Vec::new();
    match file.filter(|p| p.as_os_str() != "-") {
        Some(path) => {
            let name = path.display().to_string();
            let mut f = std::fs::File::open(path)
                .map_err(|e| fatal(ExitStatus::BadInput, format!("cannot open {name}: {e}")))?;
            f.read_to_end(&mut bytes)
                .map_err(|e| fatal(ExitStatus::BadInput, format!("cannot read {name}: {e}")))?;
            Ok((name, bytes))
        }
        None => {
            std::io::stdin()
                .lock()
                .read_to_end(&mut bytes)
                .context("cannot read standard input")?;
            Ok(("standard input".to_string(), bytes))
        }
    }
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
        .find(|(_, l)| l.len() > logparse::MAX_LINE)
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
