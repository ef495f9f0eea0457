//! `fragtrace daemon`: the live session (commands/live.rs) left running, with the metrics sink
//! served over HTTP, and optionally event lines (`--events`) and a flight recorder. One loop
//! owns everything: batches from the drain thread, the zone tick, scrapes, signals. SIGTERM and
//! SIGINT end it; SIGHUP reopens the event file.
use std::{
    net::SocketAddr,
    path::PathBuf,
    process::ExitCode,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use tokio::{
    signal::unix::{SignalKind, signal},
    sync::mpsc,
    time::MissedTickBehavior,
};

use super::live::{self, Live, ZONE_SAMPLE_PERIOD, warn};
use crate::{
    cli::{DaemonArgs, DaemonSource},
    decode::event::MonotonicClock,
    error::{ExitStatus, fatal},
    sink::{
        EventLines, LineFormat,
        flight_recorder::FlightRecorder,
        http::{self, Health},
        metrics::{Metrics, Scrape},
    },
    survival,
};

/// A flight recorder that failed to write is tried again after this long.
const RECORDER_RETRY: Duration = Duration::from_secs(60);

/// Where `--events` sends the event lines.
#[derive(Clone, Debug, PartialEq, Eq)]
enum EventsTo {
    Stdout,
    File(PathBuf),
}

impl EventsTo {
    fn from_arg(arg: Option<&str>) -> Option<Self> {
        arg.map(|a| match a {
            "json" | "-" => Self::Stdout,
            path => Self::File(path.into()),
        })
    }

    fn open(&self) -> Result<EventLines> {
        match self {
            Self::Stdout => {
                EventLines::stdout(LineFormat::Json).context("cannot start the output thread")
            }
            Self::File(path) => EventLines::file(path, LineFormat::Json).map_err(|e| {
                fatal(
                    ExitStatus::Failure,
                    format!("cannot open {}: {e}", path.display()),
                )
            }),
        }
    }
}

pub fn run(args: DaemonArgs) -> Result<ExitCode> {
    live::check_duration(args.duration)?;
    live::runtime()?.block_on(daemon(args))
}

async fn daemon(args: DaemonArgs) -> Result<ExitCode> {
    // Handlers first: a signal that arrives once the hooks are announced must end the run cleanly.
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sighup = signal(SignalKind::hangup())?;
    // Listening before attaching: a taken port fails fast, before any eBPF is loaded.
    let listener = bind(args.listen)?;
    let serving = listener.local_addr().unwrap_or(args.listen);
    let health = Arc::new(Health::default());
    let (scrape_tx, mut scrapes) = mpsc::channel(4);
    let server = tokio::spawn(http::serve(listener, health.clone(), scrape_tx));

    // Outputs next, for the same reason: a bad path fails before any eBPF is loaded.
    let events_to = EventsTo::from_arg(args.events.as_deref());
    let lines = events_to.as_ref().map(EventsTo::open).transpose()?;
    let mut flight = args
        .flight_recorder
        .as_deref()
        .map(|dir| FlightRecorder::open(dir, args.flight_recorder_size))
        .transpose()?;

    let attached = match args.source {
        DaemonSource::KernelLog => Err(("--source kernel-log".to_string(), None)),
        DaemonSource::Ebpf => Ok(Live::attach(&args.session(), None)?),
        DaemonSource::Auto => match Live::attach(&args.session(), None) {
            Ok(live) => Ok(live),
            // No hook attaches here (an old or locked-down kernel), or no privilege for eBPF:
            // the kernel log still tells of failures and OOM kills.
            Err(e)
                if [ExitStatus::Unsupported as u8, ExitStatus::Permission as u8]
                    .contains(&crate::error::exit_status_of(&e)) =>
            {
                Err((crate::error::one_line(&e), Some(e)))
            }
            Err(e) => return Err(e),
        },
    };
    let mut live = match attached {
        Ok(live) => live,
        Err((why, attach_error)) => {
            let signals = Signals {
                sigint,
                sigterm,
                sighup,
            };
            let result = from_kernel_log(
                why,
                attach_error,
                &args,
                serving,
                &health,
                &mut scrapes,
                signals,
            )
            .await;
            server.abort();
            return result;
        }
    };
    live.pipeline.lines = lines;
    let mut metrics = Metrics::new(&live.hooks, live.pipeline.decoder.migratetypes.names());
    metrics.set_source("ebpf", String::new());
    live.pipeline.metrics = Some(metrics);
    if let Some(fr) = &mut flight {
        live.begin_recording(&fr.next_segment())?;
    }
    let attached = live
        .hook_status
        .iter()
        .filter(|h| h.attached().is_some())
        .count();
    health.attached(attached, live.attached_summary());
    health.beat(live.drain_heartbeat_ns());
    eprintln!("fragtrace: daemon serving http://{serving}/metrics and /healthz");

    let deadline = live::deadline(args.duration);
    tokio::pin!(deadline);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let mut zone_tick = tokio::time::interval(ZONE_SAMPLE_PERIOD);
    zone_tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
    zone_tick.reset();
    let mut outputs = Outputs::default();
    loop {
        tokio::select! {
            _ = sigint.recv() => break,
            _ = sigterm.recv() => break,
            _ = sighup.recv() => {
                if let Some(to @ EventsTo::File(_)) = &events_to {
                    outputs.reopen_events(&mut live, to);
                }
            }
            _ = &mut deadline => break,
            _ = tick.tick() => {
                if let Some(fr) = &mut flight {
                    outputs.rotate_if_due(&mut live, fr);
                }
            }
            _ = zone_tick.tick() => live.on_zone_tick(),
            Some(reply) = scrapes.recv() => {
                let _ = reply.send(render(&live, flight.as_ref(), &outputs));
            }
            batch = live.batches.rx.recv() => match batch {
                Some(batch) => live.on_batch(batch),
                // The drain thread ended: it cannot, short of a crash there.
                None => break,
            },
        }
        health.beat(live.drain_heartbeat_ns());
        outputs.check(&mut live);
    }
    server.abort();
    let counters = live.finish().await?;
    let covered = live.recording_duration_s();
    if let Some(e) = live.end_recording(counters, covered) {
        warn(&format!("flight recorder: {e}"));
    }
    if let Some(lines) = live.pipeline.lines.take()
        && let Some(e) = lines.finish("")
        && !outputs.events_failure_told
    {
        warn(&format!("event lines: {e}"));
    }
    Ok(ExitCode::SUCCESS)
}

struct Signals {
    sigint: tokio::signal::unix::Signal,
    sigterm: tokio::signal::unix::Signal,
    sighup: tokio::signal::unix::Signal,
}

/// The daemon where no hook attaches: page allocation failure and OOM-killer reports read from
/// /dev/kmsg as the kernel prints them, diagnosed as `analyze-log` does, counted in the same
/// series; zone gauges from /proc as usual.
async fn from_kernel_log(
    why: String,
    attach_error: Option<anyhow::Error>,
    args: &DaemonArgs,
    serving: SocketAddr,
    health: &Health,
    scrapes: &mut mpsc::Receiver<tokio::sync::oneshot::Sender<String>>,
    mut signals: Signals,
) -> Result<ExitCode> {
    // Where the hooks failed, the kernel log is only a fallback: if it cannot be read either,
    // the hooks' error (and its exit status) is the one that counts.
    let mut follower = match (crate::offline::follow::Follower::start(None), attach_error) {
        (Ok(f), _) => f,
        (Err(log_error), Some(e)) => {
            // Only those two fall back (see the caller).
            let status = if crate::error::exit_status_of(&e) == ExitStatus::Permission as u8 {
                ExitStatus::Permission
            } else {
                ExitStatus::Unsupported
            };
            return Err(fatal(
                status,
                format!(
                    "{}; no kernel log to fall back on either ({})",
                    crate::error::one_line(&e),
                    crate::error::one_line(&log_error)
                ),
            ));
        }
        (Err(log_error), None) => return Err(log_error),
    };
    warn(&format!(
        "eBPF unavailable ({why}): counting failures from the kernel log (/dev/kmsg) instead"
    ));
    if args.events.is_some() || args.flight_recorder.is_some() {
        warn(
            "--events and --flight-recorder carry hook events: from the kernel log, only the metrics are kept",
        );
    }
    let oom_score_adj = live::protect_from_oom_killer(args.oom_score_adj).ok();
    let memory_locked = live::lock_memory().is_ok();
    // /dev/kmsg is open: no privilege is needed any more.
    if let Err(e) = survival::drop_capabilities(memory_locked, false) {
        warn(&e);
    }
    let (tx, mut reports) = mpsc::channel(256);
    let reader_alive = Arc::new(std::sync::atomic::AtomicU64::new(
        MonotonicClock::monotonic_now_ns(),
    ));
    let alive = reader_alive.clone();
    std::thread::Builder::new()
        .name("fragtrace-kmsg".into())
        .stack_size(256 << 10)
        .spawn(move || {
            let mut done = Vec::new();
            loop {
                let open = follower.poll(&mut done);
                alive.store(
                    MonotonicClock::monotonic_now_ns(),
                    std::sync::atomic::Ordering::Relaxed,
                );
                for inc in done.drain(..) {
                    if tx.blocking_send(crate::offline::counted(&inc)).is_err() {
                        return;
                    }
                }
                if !open {
                    return;
                }
            }
        })
        .context("cannot start the kernel-log reader")?;
    let mut metrics = Metrics::new(&[], &[]);
    metrics.set_source("kernel_log", why);
    health.attached(1, "the kernel log (/dev/kmsg)".into());
    eprintln!("fragtrace: daemon serving http://{serving}/metrics and /healthz");
    let mut zones = crate::source::host::ZoneSample::read();
    let deadline = live::deadline(args.duration);
    tokio::pin!(deadline);
    let mut zone_tick = tokio::time::interval(ZONE_SAMPLE_PERIOD);
    zone_tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = signals.sigint.recv() => break,
            _ = signals.sigterm.recv() => break,
            _ = signals.sighup.recv() => {}
            _ = &mut deadline => break,
            _ = tick.tick() => {}
            _ = zone_tick.tick() => zones = crate::source::host::ZoneSample::read(),
            Some(c) = reports.recv() => metrics.kernel_log(&c),
            Some(reply) = scrapes.recv() => {
                let _ = reply.send(metrics.render(Scrape {
                    counters: None,
                    zones: zones.clone(),
                    now_ns: MonotonicClock::monotonic_now_ns(),
                    shed: Default::default(),
                    undecodable: 0,
                    memory_locked,
                    oom_score_adj,
                    flight_recorder_bytes: None,
                    // No ring buffer, no batches: the kernel log is read line by line.
                    analysis: Default::default(),
                }));
            }
        }
        health.beat(reader_alive.load(std::sync::atomic::Ordering::Relaxed));
    }
    Ok(ExitCode::SUCCESS)
}

fn bind(addr: SocketAddr) -> Result<tokio::net::TcpListener> {
    let listener = std::net::TcpListener::bind(addr)
        .and_then(|l| l.set_nonblocking(true).map(|()| l))
        .map_err(|e| fatal(ExitStatus::Failure, format!("cannot listen on {addr}: {e}")))?;
    tokio::net::TcpListener::from_std(listener)
        .map_err(|e| fatal(ExitStatus::Failure, format!("cannot listen on {addr}: {e}")))
}

/// The state of the daemon's outputs beyond the metrics: what failed, what was shed by event
/// outputs closed since.
#[derive(Default)]
struct Outputs {
    /// Lines shed by event outputs closed by a SIGHUP.
    events_shed_before: u64,
    events_failure_told: bool,
    /// When the flight recorder failed, to try again later.
    recorder_failed_at: Option<Instant>,
}

impl Outputs {
    /// Closes the event file (after what is queued) and opens it again at its path: logrotate
    /// has moved it away.
    fn reopen_events(&mut self, live: &mut Live, to: &EventsTo) {
        if let Some(old) = live.pipeline.lines.take() {
            self.events_shed_before += old
                .stats()
                .shed_events
                .load(std::sync::atomic::Ordering::Relaxed);
            if let Some(e) = old.finish("") {
                warn(&format!("event lines: {e}"));
            }
        }
        match to.open() {
            Ok(lines) => {
                live.pipeline.lines = Some(lines);
                self.events_failure_told = false;
            }
            Err(e) => warn(&format!("{e:#}; event lines stop until the next SIGHUP")),
        }
    }

    /// Closes a full flight-recorder segment and starts the next; retries a failed recorder.
    fn rotate_if_due(&mut self, live: &mut Live, fr: &mut FlightRecorder) {
        let due = match self.recorder_failed_at {
            Some(at) => at.elapsed() >= RECORDER_RETRY,
            None => fr.is_full(),
        };
        if !due {
            return;
        }
        let (counters, covered) = (
            live.counters.read().unwrap_or_default(),
            live.recording_duration_s(),
        );
        if let Some(e) = live.end_recording(counters, covered) {
            warn(&format!("flight recorder: {e}"));
        }
        match live.begin_recording(&fr.next_segment()) {
            Ok(()) => self.recorder_failed_at = None,
            Err(e) => {
                warn(&format!(
                    "flight recorder: {e:#}; trying again in {}s",
                    RECORDER_RETRY.as_secs()
                ));
                self.recorder_failed_at = Some(Instant::now());
            }
        }
    }

    /// An output that failed is named once; the metrics go on without it.
    fn check(&mut self, live: &mut Live) {
        if !self.events_failure_told
            && let Some(lines) = &live.pipeline.lines
            && lines.failed()
        {
            self.events_failure_told = true;
            let e = lines.stats().take_error();
            warn(&format!(
                "event lines stopped ({}); the metrics go on",
                e.map_or("write failed".into(), |e| e.to_string())
            ));
        }
        if live.pipeline.recorder.as_ref().is_some_and(|r| r.failed()) {
            let (counters, covered) = (
                live.counters.read().unwrap_or_default(),
                live.recording_duration_s(),
            );
            let e = live.end_recording(counters, covered);
            warn(&format!(
                "flight recorder stopped ({}); trying again in {}s",
                e.map_or("write failed".into(), |e| e.to_string()),
                RECORDER_RETRY.as_secs()
            ));
            self.recorder_failed_at = Some(Instant::now());
        }
    }
}

/// The exposition text with every scrape-time figure read now.
fn render(live: &Live, flight: Option<&FlightRecorder>, outputs: &Outputs) -> String {
    let Some(metrics) = &live.pipeline.metrics else {
        return String::new();
    };
    let mut shed = live.shed_now();
    shed.event_lines += outputs.events_shed_before;
    metrics.render(Scrape {
        counters: live.counters.read().ok(),
        zones: live.pipeline.analyzer.attributor.zones.latest.clone(),
        now_ns: MonotonicClock::monotonic_now_ns(),
        shed,
        undecodable: live.pipeline.analyzer.totals.failures.undecodable,
        memory_locked: live.health.memory_locked,
        oom_score_adj: live.health.oom_score_adj,
        flight_recorder_bytes: flight.map(FlightRecorder::bytes),
        analysis: live.analysis_time_now(),
    })
}
