//! fragtrace: data flows hooks/ (kernel side, attach) -> decode/ (raw records to typed events)
//! -> analysis/ (attribution, statistics, verdicts; zones/ for zone state) -> output/ (text, JSON).
//! commands/ wires one subcommand each; offline/ is the kernel-log path, which needs no eBPF.
mod analysis;
mod cli;
mod commands;
mod decode;
mod error;
mod hooks;
mod offline;
mod output;
mod zones;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = match cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => {
            // --help and --version print to stdout and exit 0; usage errors exit 2.
            let _ = err.print();
            return ExitCode::from(if err.use_stderr() { 2 } else { 0 });
        }
    };
    match commands::dispatch(cli) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("fragtrace: {}", error::one_line(&err));
            ExitCode::from(error::exit_status_of(&err))
        }
    }
}
