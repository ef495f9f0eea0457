//! `fragtrace [trace]` and `fragtrace record`: attach, then run the pipeline on the live ring
//! buffer until Ctrl-C, SIGTERM, SIGHUP or `--duration`, and summarize.
use std::{io, path::Path, process::ExitCode, time::Duration};

use anyhow::{Context, Result};
use tokio::{
    signal::unix::{SignalKind, signal},
    time::{Instant, MissedTickBehavior},
};

use crate::{
    analysis::{analyzer::Analyzer, filter::Filter},
    cli::TraceArgs,
    decode::{
        event::{Decoder, KernelTables, MonotonicClock},
        kallsyms::Kallsyms,
        tracefs,
    },
    error::{ExitStatus, fatal},
    hooks::{
        catalog,
        counters::{CounterValues, Counters},
        loader::{self, HookStatus, Mode},
        preflight,
    },
    pipeline::{Pipeline, TracerHealth},
    sink::{EventLines, LineFormat, json::HookJson, recording::Recorder, status, summary::Summary},
    source::{
        host::{LiveHost, ZoneSample},
        recording::{self, CounterSnapshot, Header, Trailer},
        ringbuf::Drain,
    },
    survival,
};

/// `record`: where the recording goes.
pub struct Record<'a> {
    pub path: &'a Path,
}

pub fn run(args: TraceArgs, record: Option<Record<'_>>) -> Result<ExitCode> {
    if let Some(d) = args.duration
        && !(d.is_finite() && d > 0.0 && d < 1e9)
    {
        return Err(fatal(
            ExitStatus::Usage,
            "--duration needs a positive number of seconds (below 1e9)",
        ));
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    rt.block_on(trace(args, record))
}

/// How often the zone state is read from /proc besides when failures need it, and the kernel's
/// counters are recorded.
const ZONE_SAMPLE_PERIOD: Duration = Duration::from_secs(10);

async fn trace(args: TraceArgs, record: Option<Record<'_>>) -> Result<ExitCode> {
    preflight::require_privileges()?;
    let mut health = TracerHealth::default();
    // Out of the OOM killer's choice before the memory-hungry load, so that an incident already
    // under way cannot end the tracer during start-up.
    match survival::set_oom_score_adj(args.oom_score_adj) {
        Ok(()) => health.oom_score_adj = Some(args.oom_score_adj),
        Err(e) => {
            warn(&format!("{e}: the OOM killer may choose fragtrace"));
            health.oom_score_adj_error = Some(e);
        }
    }
    // Handlers first: a signal that arrives once the hooks are announced must end the run cleanly.
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sighup = signal(SignalKind::hangup())?;
    let tracefs = tracefs::locate(args.tracefs.as_deref())?;
    let mode = match args.force_method.as_deref() {
        Some(kind) => Mode::Only(kind),
        None => Mode::FirstWorking,
    };
    let kallsyms = Kallsyms::load().unwrap_or_else(|e| {
        warn(&format!("stacks shown as addresses: {e:#}"));
        Kallsyms::default()
    });
    let opted_in: &[catalog::OptIn] = if args.netns_syscalls {
        &[catalog::NETNS_SYSCALLS]
    } else {
        &[]
    };
    let mut loaded = loader::load(&tracefs, mode, opted_in, &kallsyms)?;
    loaded.require_any_attached()?;
    report_hooks(&loaded.hooks);
    let hooks: Vec<HookJson> = loaded.hooks.iter().map(HookJson::from_status).collect();

    let tables = KernelTables::read(
        &tracefs,
        loaded
            .page_alloc_format
            .as_ref()
            .ok()
            .map(|f| f.print_fmt.clone()),
    );
    let (decoder, gfp_error) = Decoder::new(&tables, kallsyms);
    if let Some(e) = gfp_error {
        warn(&format!("gfp flags shown as hex: {e}"));
    }
    let _bpf_log = start_bpf_logger(&mut loaded.ebpf);
    let counters = Counters::new(loaded.take_map("COUNTERS")?)?;
    let (drain, mut batches) = Drain::start(loaded.take_map("EVENTS")?)?;

    let format = if args.show.json {
        LineFormat::Json
    } else {
        LineFormat::Text {
            frames: args.show.frames,
        }
    };
    let filter = Filter::from_args(&args.filter);
    let first_zones = ZoneSample::read();
    let recorder = match &record {
        Some(r) => Some(Recorder::create(
            r.path,
            &recording_header(&tables, &hooks, &filter, first_zones.as_ref()),
        )?),
        None => None,
    };
    let mut pipeline = Pipeline {
        decoder,
        analyzer: Analyzer::new(vec![filter]),
        host: if record.is_some() {
            LiveHost::recording()
        } else {
            LiveHost::default()
        },
        lines: Some(EventLines::stdout(format).context("cannot start the output thread")?),
        recorder,
    };
    if let Some(z) = first_zones {
        pipeline.zone_sample(z);
    }
    // Loading parsed the kernel's BTF and kallsyms text (tens of MB, now freed): give those
    // pages back before the rest is locked in memory.
    // SAFETY: malloc_trim only releases free heap memory.
    unsafe { libc::malloc_trim(0) };
    match survival::lock_memory() {
        Ok(()) => health.memory_locked = true,
        Err(e) => {
            warn(&format!("{e}: memory pressure may stall fragtrace"));
            health.memory_lock_error = Some(e);
        }
    }

    status::enable(!args.no_status && !args.show.json);
    let attached_names = attached_summary(&loaded.hooks);
    let started = Instant::now();
    let deadline = tokio::time::sleep(
        args.duration
            .map(Duration::from_secs_f64)
            .unwrap_or(Duration::from_secs(100 * 365 * 86400)),
    );
    tokio::pin!(deadline);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let mut zone_tick = tokio::time::interval(ZONE_SAMPLE_PERIOD);
    zone_tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
    zone_tick.reset();

    let mut channel_open = true;
    while channel_open {
        tokio::select! {
            _ = sigint.recv() => break,
            _ = sigterm.recv() => break,
            _ = sighup.recv() => break,
            _ = &mut deadline => break,
            _ = tick.tick() => {
                if let Ok(c) = counters.read() {
                    let shown = pipeline.analyzer.totals.failures.shown;
                    status::draw(&status_text(&attached_names, &c, shown, started.elapsed()));
                }
            }
            _ = zone_tick.tick() => {
                if let Some(z) = ZoneSample::read() {
                    pipeline.zone_sample(z);
                }
                if let (Some(r), Ok(c)) = (&mut pipeline.recorder, counters.read()) {
                    r.counters(CounterSnapshot { at_ns: MonotonicClock::monotonic_now_ns(), counters: c });
                }
                pipeline.end_batch();
            }
            batch = batches.rx.recv() => match batch {
                Some(batch) => {
                    handle_batch(&mut pipeline, &batch);
                    batches.recycle(batch);
                    if pipeline.output_failed() {
                        break;
                    }
                }
                None => channel_open = false,
            },
        }
    }
    // Whatever the kernel already queued is still analysed and written.
    drain.stop();
    while let Some(batch) = batches.rx.recv().await {
        handle_batch(&mut pipeline, &batch);
        batches.recycle(batch);
    }
    status::clear();

    let counters = counters.read()?;
    if let Some(z) = ZoneSample::read() {
        pipeline.zone_sample(z);
    }
    pipeline.end_batch();
    let stats = &drain.stats;
    health.records_drained = stats.records.load(std::sync::atomic::Ordering::Relaxed);
    health.drain_shed = stats.shed.load(std::sync::atomic::Ordering::Relaxed);
    drop(drain);
    let lines = pipeline.lines.take().expect("set above");
    health.output_shed = lines
        .stats()
        .shed_events
        .load(std::sync::atomic::Ordering::Relaxed);
    health.output_lag = lines.stats().lag.lock().ok().and_then(|l| l.summary());
    health.recording_shed = pipeline.recorder.as_ref().map_or(0, Recorder::shed_events);
    let (rss, peak) = survival::rss_kb();
    (health.rss_kb, health.peak_rss_kb) = (rss, peak);
    let duration_s = started.elapsed().as_secs_f64();
    let summary = Summary {
        duration_s,
        counters: &counters,
        totals: &pipeline.analyzer.totals,
        zones: &pipeline.analyzer.attributor.zones,
        migratetypes: &pipeline.decoder.migratetypes,
        hooks: &hooks,
        top: args.show.top,
        health: &health,
        cut: None,
    }
    .render(lines.format());
    let recording_error = pipeline.recorder.take().and_then(|r| {
        r.finish(Trailer {
            ended_ns: MonotonicClock::monotonic_now_ns(),
            duration_s,
            counters: counters.clone(),
            health: health.clone(),
        })
    });
    let output_error = lines.finish(&summary);
    if let (Some(e), Some(r)) = (recording_error, &record) {
        return Err(fatal(
            ExitStatus::Failure,
            format!(
                "cannot write {}: {e}; the recording stops at the last second before it",
                r.path.display()
            ),
        ));
    }
    match output_error {
        // The reader went away (`| head`): a normal end.
        Some(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(ExitCode::SUCCESS),
        Some(e) => Err(anyhow::Error::new(e).context("cannot write to standard output")),
        None => Ok(ExitCode::SUCCESS),
    }
}

/// One batch from the drain thread: /proc read first if its failures need it, then every
/// record through the pipeline, then the sinks get the batch's output.
fn handle_batch(pipeline: &mut Pipeline<LiveHost>, batch: &crate::source::ringbuf::RawBatch) {
    if pipeline.needs_zone_sample(batch.records())
        && let Some(z) = ZoneSample::read()
    {
        pipeline.zone_sample(z);
    }
    for record in batch.records() {
        pipeline.raw(record);
    }
    pipeline.end_batch();
}

/// What `report` needs to know about this machine and run.
fn recording_header(
    tables: &KernelTables,
    hooks: &[HookJson],
    filter: &Filter,
    zones: Option<&ZoneSample>,
) -> Header {
    let read = |path: &str| {
        std::fs::read_to_string(path)
            .map(|s| s.trim().to_string())
            .unwrap_or_default()
    };
    Header {
        format_version: recording::VERSION,
        fragtrace_version: env!("CARGO_PKG_VERSION").into(),
        kernel_release: read("/proc/sys/kernel/osrelease"),
        hostname: read("/proc/sys/kernel/hostname"),
        boot_id: read("/proc/sys/kernel/random/boot_id"),
        started: jiff::Timestamp::now().to_string(),
        started_ns: MonotonicClock::monotonic_now_ns(),
        page_size: zones.map_or_else(crate::zones::page_size, |z| z.state.page_size),
        tables: tables.clone(),
        hooks: hooks.to_vec(),
        filter: filter.clone(),
    }
}

/// One line per hook that fell back or is unavailable (with the kernel's reasons), the page
/// allocator hook's method, what is lost without netns windows, and a count.
fn report_hooks(hooks: &[HookStatus]) {
    for h in hooks.iter().filter(|h| h.requested) {
        let failed: Vec<String> = h
            .attempts
            .iter()
            .filter_map(|a| {
                a.error
                    .as_ref()
                    .map(|e| format!("{}: {e}", a.method.label()))
            })
            .collect();
        match h.attached() {
            Some(m) if h.hook.name == catalog::PAGE_ALLOC.name || !failed.is_empty() => {
                let note = if failed.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", failed.join("; "))
                };
                eprintln!(
                    "fragtrace: {} attached via {}{note}",
                    h.hook.name,
                    m.label()
                );
            }
            Some(_) => {}
            None => eprintln!(
                "fragtrace: {} unavailable on this kernel ({})",
                h.hook.name,
                failed.join("; ")
            ),
        }
    }
    let windows =
        |f: fn(&HookStatus) -> bool| hooks.iter().any(|h| h.hook.opt_in.is_some() && f(h));
    let copy_net_ns = hooks
        .iter()
        .any(|h| h.hook.name == catalog::COPY_NET_NS.name && h.attached().is_some());
    if !copy_net_ns && !windows(|h| h.attached().is_some()) {
        let hint = if windows(|h| !h.requested) {
            format!(
                "; {} times them at a cost ({})",
                catalog::NETNS_SYSCALLS.option,
                catalog::NETNS_SYSCALLS.cost
            )
        } else {
            String::new()
        };
        eprintln!(
            "fragtrace: netns creation latency and errors unavailable: copy_net_ns cannot be \
             hooked here; failures are still tagged netns from their stacks{hint}"
        );
    }
    eprintln!("fragtrace: {}", attached_summary(hooks));
}

fn attached_summary(hooks: &[HookStatus]) -> String {
    let attached = hooks.iter().filter(|h| h.attached().is_some()).count();
    let requested = hooks.iter().filter(|h| h.requested).count();
    let left_out = hooks.len() - requested;
    if left_out == 0 {
        format!("{attached}/{requested} hooks attached")
    } else {
        format!("{attached}/{requested} hooks attached ({left_out} opt-in left out)")
    }
}

fn status_text(attached: &str, c: &CounterValues, shown: u64, elapsed: Duration) -> String {
    let secs = elapsed.as_secs();
    format!(
        "{attached} | allocations {} | failures {} | shown {} | dropped {} | {:02}:{:02}:{:02}",
        c.allocs(),
        c.failures(),
        shown,
        c.ringbuf_drops,
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

fn warn(msg: &str) {
    eprintln!("fragtrace: warning: {msg}");
}

/// Forwards the eBPF programs' aya-log messages to stderr. Optional: tracing works without it.
fn start_bpf_logger(ebpf: &mut aya::Ebpf) -> Option<tokio::task::JoinHandle<()>> {
    struct Stderr;
    impl log::Log for Stderr {
        fn enabled(&self, _: &log::Metadata) -> bool {
            true
        }
        fn log(&self, record: &log::Record) {
            status::clear();
            eprintln!("fragtrace: bpf {}: {}", record.level(), record.args());
        }
        fn flush(&self) {}
    }
    let logger = aya_log::EbpfLogger::init_with_logger(ebpf, Stderr).ok()?;
    // SAFETY: the AsyncFd owns the logger and its ring buffer fd.
    let mut fd = unsafe {
        tokio::io::unix::AsyncFd::register_with_interest(logger, tokio::io::Interest::READABLE)
    }
    .ok()?;
    Some(tokio::spawn(async move {
        loop {
            let Ok(mut guard) = fd.readable_mut().await else {
                return;
            };
            guard.get_inner_mut().flush();
            guard.clear_ready();
        }
    }))
}
