//! The `fragtrace` binary: parse the command line, run the command, exit with its status.
use std::process::ExitCode;

use clap::Parser;
use fragtrace::{cli, commands, error};

fn main() -> ExitCode {
    let cli = match cli::Cli::try_parse() {
        Ok(cli) => cli,
        // --help and --version print to stdout and exit 0.
        Err(err) if !err.use_stderr() => {
            let _ = err.print();
            return ExitCode::SUCCESS;
        }
        // Usage errors: clap's first line only, as one line like every other error.
        Err(err) => {
            let rendered = err.render().to_string();
            let first = rendered.lines().next().unwrap_or("invalid arguments");
            let first = first.strip_prefix("error: ").unwrap_or(first);
            eprintln!("fragtrace: {first} (see fragtrace --help)");
            return ExitCode::from(error::ExitStatus::Usage as u8);
        }
    };
    let level = match cli.verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(level))
        .format_target(false)
        .format_timestamp(None)
        .init();
    match commands::dispatch(cli) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("fragtrace: {}", error::one_line(&err));
            ExitCode::from(error::exit_status_of(&err))
        }
    }
}
