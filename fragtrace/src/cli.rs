//! Command-line interface.
use std::{net::SocketAddr, path::PathBuf};

use clap::{Args, Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "fragtrace",
    version,
    about = "Trace failed page allocations, compaction and fragmentation with eBPF",
    long_about = "Trace failed page allocations, compaction and fragmentation with eBPF.\n\n\
        With no subcommand, fragtrace attaches every hook this kernel supports (root needed) and \
        prints, as they happen, each failed page allocation with its verdict and what the kernel \
        did about it (compaction, direct reclaim, OOM kills, network namespace creations), then \
        a summary on Ctrl-C, SIGTERM or --duration.",
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    /// More diagnostics on stderr (-v: info, -vv: debug, -vvv: trace); RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub trace: TraceArgs,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Trace live (the default when no subcommand is given).
    Trace(TraceArgs),
    /// Trace live and record everything to a file for `fragtrace report`, on this or another
    /// machine. Prints what the tracer prints.
    Record(RecordArgs),
    /// Replay a recording: the same event lines, JSON objects and summary the live run gave.
    /// A directory is a daemon's flight recorder, replayed oldest segment first. No root, no
    /// eBPF.
    Report(ReportArgs),
    /// List every hook fragtrace knows and how it attaches on this kernel, or why it cannot.
    Probes(ProbesArgs),
    /// Print the fragmentation state of every zone (buddyinfo, watermarks, indices).
    Snapshot(crate::zones::snapshot::SnapshotArgs),
    /// Diagnose page allocation failures in a kernel log (dmesg, journal, syslog). No root needed.
    AnalyzeLog(crate::offline::AnalyzeLogArgs),
    /// Run always on: the tracer's hooks and analysis, served as Prometheus metrics on
    /// --listen (/metrics, /healthz), with optional event lines and a flight recorder.
    Daemon(DaemonArgs),
}

/// Which events are shown (and counted in the summary's lists), live and in `report`.
#[derive(Args, Debug, Default, Clone)]
pub struct FilterArgs {
    /// Show only events of this order or higher (events without an order are kept).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(0..=31))]
    pub min_order: Option<u32>,
    /// Show only events of this process (thread group) id (OOM kills are always shown).
    #[arg(long, value_name = "PID")]
    pub pid: Option<u32>,
    /// Show only events of tasks whose name contains COMM (OOM kills are always shown).
    #[arg(long, value_name = "COMM")]
    pub comm: Option<String>,
    /// Show only events of tasks in this cgroup or below it (a path as /proc/PID/cgroup gives
    /// it, e.g. /kubepods.slice).
    #[arg(long, value_name = "PATH")]
    pub cgroup: Option<String>,
    /// Show only events of this container (its id, or a prefix of it).
    #[arg(long, value_name = "ID")]
    pub container: Option<String>,
    /// Show only events of this Kubernetes pod: its uid (or a prefix), or its NAME or
    /// NAMESPACE/NAME as the node's /var/log/pods directories give them.
    #[arg(long, value_name = "NAME|UID")]
    pub pod: Option<String>,
}

/// How events and the summary are shown.
#[derive(Args, Debug, Clone)]
pub struct ShowArgs {
    /// Print one JSON object per line (see docs/json.md) instead of text.
    #[arg(long)]
    pub json: bool,
    /// Stack frames shown per failure in text output (JSON always has all of them).
    #[arg(long, value_name = "N", default_value_t = 8)]
    pub frames: usize,
    /// Entries in each top-N list of the summary.
    #[arg(long, value_name = "N", default_value_t = 5)]
    pub top: usize,
}

/// Flamegraphs written at the end, live and in `report`.
#[derive(Args, Debug, Clone)]
pub struct FlamegraphArgs {
    /// Write folded stacks (the flamegraph.pl and inferno input) to FILE at the end.
    #[arg(long, value_name = "FILE")]
    pub folded: Option<PathBuf>,
    /// Write a flamegraph SVG to FILE at the end.
    #[arg(long, value_name = "FILE")]
    pub flamegraph: Option<PathBuf>,
    /// What the widths count: failures (where failures come from), stall (microseconds of
    /// direct compaction and reclaim: where the node stalls), allocations (successful ones of
    /// --stacks-min-order and above: who asks for high-order blocks), fallbacks (migratetype
    /// fallbacks below pageblock order: who fragments memory).
    #[arg(long, value_enum, default_value = "failures")]
    pub weight: crate::sink::flamegraph::Weight,
    /// The root frame of each stack: the task's name, its container, or (failures only) the
    /// verdict.
    #[arg(long, value_enum, default_value = "comm")]
    pub folded_root: crate::sink::flamegraph::Root,
}

#[derive(Args, Debug, Clone)]
pub struct TraceArgs {
    #[command(flatten)]
    pub show: ShowArgs,
    #[command(flatten)]
    pub flamegraph: FlamegraphArgs,
    #[command(flatten)]
    pub filter: FilterArgs,
    /// Stop after SECS seconds and print the summary.
    #[arg(long, value_name = "SECS")]
    pub duration: Option<f64>,
    /// Never draw the status line on stderr, even on a terminal.
    #[arg(long)]
    pub no_status: bool,
    /// Also time netns creations with the unshare/clone/clone3/setns syscall tracepoints, where
    /// copy_net_ns cannot be hooked. Costly: while attached, every system call on the node takes
    /// the syscall-tracing slow path (measured on 6.18: getppid 191 -> 269 ns).
    #[arg(long)]
    pub netns_syscalls: bool,
    /// Failure records per second and CPU before storm mode counts further failures in the
    /// kernel, by stack, order and task name, instead of sending each (counts stay exact). 0
    /// sends every failure.
    #[arg(long, value_name = "N", default_value_t = crate::hooks::loader::DEFAULT_STORM_THRESHOLD)]
    pub storm_threshold: u32,
    /// Stacks walked per second and CPU for failures counted in the kernel (storm mode, or the
    /// ring buffer full). A walk costs microseconds; past N a failure is still counted, by
    /// order and task, under "[stack not taken]". 0 walks none; 4294967295 walks every one.
    #[arg(long, value_name = "N", default_value_t = crate::hooks::loader::DEFAULT_STORM_STACKS)]
    pub storm_stacks: u32,
    /// Also count, by stack, successful allocations of order N and above: who asks for
    /// high-order blocks before anything fails (`--weight allocations` flamegraphs). Costs a
    /// stack walk per such allocation; order-0 allocations cost nothing more.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=10))]
    pub stacks_min_order: Option<u32>,
    /// fragtrace's own OOM score adjustment while tracing (-1000..1000). The default, -1000, keeps
    /// the OOM killer from choosing fragtrace during the incident it records; its memory is
    /// bounded and locked. In a memory cgroup that holds only fragtrace, set its limit well
    /// above fragtrace's peak (see README), or choose a higher value.
    #[arg(long, value_name = "N", default_value_t = crate::survival::DEFAULT_OOM_SCORE_ADJ,
          allow_negative_numbers = true,
          value_parser = clap::value_parser!(i32).range(-1000..=1000))]
    pub oom_score_adj: i32,
    /// Attach only with this method (tp_btf, raw_tp or tracepoint), to test the fallbacks.
    #[arg(long, value_name = "METHOD", hide = true, value_parser = ["tp_btf", "raw_tp", "tracepoint"])]
    pub force_method: Option<String>,
    /// Where tracefs is (mounted there if it is not mounted anywhere).
    #[arg(long, value_name = "DIR", hide = true)]
    pub tracefs: Option<PathBuf>,
    /// Leave the in-kernel reads off: the failure (and OOM) handlers read neither the zones nor
    /// the task's memory-cgroup counters, so verdicts are judged on /proc and cgroupfs read
    /// later, as on kernels without `node_data` in kallsyms. For measuring what those reads
    /// cost (the VM matrix's `cost` scenario); the summary's `kernel_reads` says they were off.
    #[arg(long, hide = true)]
    pub no_kernel_reads: bool,
}

/// Where the daemon's failures come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum DaemonSource {
    Auto,
    Ebpf,
    KernelLog,
}

#[derive(Args, Debug, Clone)]
pub struct RecordArgs {
    /// The recording to write (created with mode 0600; an existing file is replaced).
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub output: PathBuf,
    #[command(flatten)]
    pub trace: TraceArgs,
}

#[derive(Args, Debug, Clone)]
pub struct ReportArgs {
    /// A recording made by `fragtrace record`, or the directory of `fragtrace daemon
    /// --flight-recorder`.
    #[arg(value_name = "FILE|DIR")]
    pub file: PathBuf,
    #[command(flatten)]
    pub show: ShowArgs,
    #[command(flatten)]
    pub flamegraph: FlamegraphArgs,
    /// Filters on top of the ones the recording was made with.
    #[command(flatten)]
    pub filter: FilterArgs,
}

#[derive(Args, Debug, Default)]
pub struct ProbesArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Instead of trying the hooks: what each BPF program of the running fragtrace (tracer or
    /// daemon) costs, in kernel time per run, measured over SECONDS (5 by default) with the
    /// kernel's statistics enabled for that window (BPF_ENABLE_STATS, Linux 5.8+).
    #[arg(long, value_name = "SECONDS", num_args = 0..=1, default_missing_value = "5")]
    pub stats: Option<f64>,
}

#[derive(Args, Debug, Clone)]
pub struct DaemonArgs {
    /// Where failures come from: `ebpf` (the hooks), `kernel-log` (reports diagnosed from
    /// /dev/kmsg, as `analyze-log --follow` does: for kernels where no hook can attach), or
    /// `auto`: the hooks, else the kernel log.
    #[arg(long, value_enum, default_value = "auto")]
    pub source: DaemonSource,
    /// Where to serve /metrics and /healthz over HTTP. Nothing there changes fragtrace, but
    /// anyone who reaches it can read the metrics: keep it on loopback or the pod's own IP.
    #[arg(long, value_name = "ADDR:PORT", default_value = "127.0.0.1:9464")]
    pub listen: SocketAddr,
    /// Event lines: `json` prints one JSON object per event on stdout (docs/json.md); any other
    /// value is a FILE they are appended to (created with mode 0600; SIGHUP reopens it, for
    /// logrotate). None by default.
    #[arg(long, value_name = "json|FILE")]
    pub events: Option<String>,
    /// Keep a rotating recording of the last events in DIR (mode 0700, created if missing;
    /// files 0600), for `fragtrace report DIR` after an alert.
    #[arg(long, value_name = "DIR")]
    pub flight_recorder: Option<PathBuf>,
    /// What the flight recorder keeps on disk, e.g. 64MiB, 1GiB (at least 1MiB), in 8 segments;
    /// the oldest goes when the newest is full (the directory may pass the size by what one
    /// second of events adds while a segment closes).
    #[arg(long, value_name = "SIZE", default_value = "64MiB",
          value_parser = parse_size)]
    pub flight_recorder_size: u64,
    /// Count and show only these events (allocation counters read from the kernel count all).
    #[command(flatten)]
    pub filter: FilterArgs,
    /// Stop after SECS seconds (for tests and benchmarks; the daemon otherwise runs until
    /// SIGTERM or SIGINT).
    #[arg(long, value_name = "SECS")]
    pub duration: Option<f64>,
    /// As for the tracer: time netns creations with the syscall tracepoints (costly, see
    /// `fragtrace --help`).
    #[arg(long)]
    pub netns_syscalls: bool,
    /// As for the tracer: failure records per second and CPU before storm mode counts further
    /// failures in the kernel (fragtrace_storm_aggregated_failures_total) instead of sending
    /// each. 0 sends every failure.
    #[arg(long, value_name = "N", default_value_t = crate::hooks::loader::DEFAULT_STORM_THRESHOLD)]
    pub storm_threshold: u32,
    /// As for the tracer: stacks walked per second and CPU for failures counted in the kernel;
    /// past N they are counted under "[stack not taken]" (0: none walked).
    #[arg(long, value_name = "N", default_value_t = crate::hooks::loader::DEFAULT_STORM_STACKS)]
    pub storm_stacks: u32,
    /// As for the tracer: fragtrace's own OOM score adjustment (-1000..1000).
    #[arg(long, value_name = "N", default_value_t = crate::survival::DEFAULT_OOM_SCORE_ADJ,
          allow_negative_numbers = true,
          value_parser = clap::value_parser!(i32).range(-1000..=1000))]
    pub oom_score_adj: i32,
    #[arg(long, value_name = "METHOD", hide = true, value_parser = ["tp_btf", "raw_tp", "tracepoint"])]
    pub force_method: Option<String>,
    #[arg(long, value_name = "DIR", hide = true)]
    pub tracefs: Option<PathBuf>,
}

impl DaemonArgs {
    /// The live session's settings: the tracer's, with no terminal output of its own.
    pub fn session(&self) -> TraceArgs {
        TraceArgs {
            show: ShowArgs {
                json: true,
                frames: 8,
                top: 5,
            },
            flamegraph: FlamegraphArgs {
                folded: None,
                flamegraph: None,
                weight: crate::sink::flamegraph::Weight::Failures,
                folded_root: crate::sink::flamegraph::Root::Comm,
            },
            filter: self.filter.clone(),
            duration: self.duration,
            no_status: true,
            netns_syscalls: self.netns_syscalls,
            storm_threshold: self.storm_threshold,
            storm_stacks: self.storm_stacks,
            stacks_min_order: None,
            oom_score_adj: self.oom_score_adj,
            force_method: self.force_method.clone(),
            tracefs: self.tracefs.clone(),
            no_kernel_reads: false,
        }
    }
}

/// `64MiB`, `512KiB`, `1GiB`, `64M`, or plain bytes; at least 1 MiB.
fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (number, unit) = t.split_at(digits);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a size like 64MiB"))?;
    let shift = match unit.trim() {
        "" | "B" => 0,
        "K" | "KiB" | "k" => 10,
        "M" | "MiB" => 20,
        "G" | "GiB" => 30,
        other => return Err(format!("unknown unit `{other}` (use KiB, MiB or GiB)")),
    };
    let bytes = number
        .checked_mul(1 << shift)
        .ok_or_else(|| format!("`{text}` is too large"))?;
    if bytes < 1 << 20 {
        return Err(format!("`{text}` is below the 1MiB minimum"));
    }
    Ok(bytes)
}

impl FilterArgs {
    /// The filter these options ask for.
    pub fn filter(&self) -> crate::analysis::filter::Filter {
        crate::analysis::filter::Filter {
            min_order: self.min_order,
            pid: self.pid,
            comm: self.comm.clone(),
            cgroup: self.cgroup.clone(),
            container: self.container.clone(),
            pod: self.pod.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        assert_eq!(parse_size("2048KiB"), Ok(2 << 20));
        assert_eq!(parse_size("1048576"), Ok(1 << 20));
        assert!(parse_size("1048575").is_err());
        assert!(parse_size("64 parsecs").is_err());
        assert!(parse_size("MiB").is_err());
        assert!(parse_size("99999999999999999GiB").is_err());
        assert!(parse_size("-1MiB").is_err());
    }
}
