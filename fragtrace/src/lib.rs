//! fragtrace as a library: the binary (`main.rs`) only parses the command line and exits with
//! the status of what it ran.
//!
//! Data flows hooks/ (the kernel side: attach, maps) -> decode/ (raw records to typed events)
//! -> analysis/ (pairing, attribution, verdicts, aggregates; zones/ for zone state) -> sink/
//! (text, JSON, summary). commands/ wires one subcommand each; offline/ is the kernel-log path,
//! which needs no eBPF.
pub mod analysis;
pub mod cli;
pub mod commands;
pub mod decode;
pub mod error;
pub mod hooks;
pub mod offline;
pub mod sink;
pub mod survival;
pub mod zones;
