//! fragtrace as a library: the binary (`main.rs`) only parses the command line and exits with
//! the status of what it ran.
//!
//! One pipeline (`pipeline`) serves every mode: source/ (the kernel's ring buffer, a recording,
//! the host's /proc and cgroupfs) -> decode/ (raw records to typed, named events) -> analysis/
//! (pairing, attribution, verdicts, aggregates) -> sink/ (text, JSON, recording, summary).
//! hooks/ is the kernel side seen from user space (attach, maps); zones/ models zone state and
//! judges verdicts; offline/ is the kernel-log path, which needs no eBPF; commands/ wires one
//! subcommand each.
pub mod analysis;
pub mod cli;
pub mod commands;
pub mod decode;
pub mod error;
pub mod health;
pub mod hooks;
pub mod offline;
pub mod pipeline;
pub mod sink;
pub mod source;
pub mod survival;
#[cfg(test)]
mod test_support;
pub mod zones;
