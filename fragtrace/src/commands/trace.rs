//! `fragtrace [trace]`: attach, print each failure as it happens, summarize at the end.
use std::{io, process::ExitCode, time::Duration};

use anyhow::{Context, Result};
use bytes::Bytes;
use fragtrace_common::zone_snapshot;
use tokio::{
    signal::unix::{SignalKind, signal},
    time::{Instant, MissedTickBehavior},
};

use crate::{
    analysis::{filter::Filter, pipeline::Analyzer},
    cli::TraceArgs,
    decode::{
        event::{Decoder, Event, KernelSymbols},
        gfp::GfpTable,
        kallsyms::Kallsyms,
        migratetype::MigrateTypes,
        tracefs,
    },
    error::{ExitStatus, fatal},
    hooks::{
        catalog,
        counters::{CounterValues, Counters},
        loader::{self, HookStatus, Mode},
        preflight,
        ringbuf::EventReader,
    },
    sink::{
        Sink,
        json::{self, HookJson},
        status,
        summary::Summary,
        text,
    },
    survival,
};

pub fn run(args: TraceArgs) -> Result<ExitCode> {
    if let Some(d) = args.duration
        && !(d.is_finite() && d > 0.0)
    {
        return Err(fatal(
            ExitStatus::Usage,
            "--duration needs a positive number of seconds",
        ));
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    rt.block_on(trace(args))
}

async fn trace(args: TraceArgs) -> Result<ExitCode> {
    preflight::require_privileges()?;
    // Out of the OOM killer's choice before the memory-hungry load, so that an incident already
    // under way cannot end the tracer during start-up.
    if let Err(e) = survival::set_oom_score_adj(args.oom_score_adj) {
        warn(&format!("{e}: the OOM killer may choose fragtrace"));
    }
    // Handlers first: a signal that arrives once the hooks are announced must end the run cleanly.
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;
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

    let gfp = match &loaded.page_alloc_format {
        Ok(format) => GfpTable::from_print_fmt(&format.print_fmt)
            .map_err(|e| warn(&format!("gfp flags shown as hex: {e:#}")))
            .ok(),
        Err(e) => {
            warn(&format!("gfp flags shown as hex: {e}"));
            None
        }
    };
    let mut decoder = Decoder::new(gfp, MigrateTypes::load(), kallsyms);
    decoder.symbols = KernelSymbols::load(&tracefs);
    let _bpf_log = start_bpf_logger(&mut loaded.ebpf);
    let counters = Counters::new(loaded.take_map("COUNTERS")?)?;
    let mut reader = EventReader::new(loaded.take_map("EVENTS")?)?;
    let hooks: Vec<HookJson> = loaded.hooks.iter().map(HookJson::from_status).collect();
    // Loading parsed the kernel's BTF and kallsyms text (tens of MB, now freed): give those
    // pages back so the long-running tracer stays small.
    // SAFETY: malloc_trim only releases free heap memory.
    unsafe { libc::malloc_trim(0) };
    if let Err(e) = survival::lock_memory() {
        warn(&format!("{e}: memory pressure may stall fragtrace"));
    }

    let mut run = Run {
        args: &args,
        analyzer: Analyzer::new(Filter::from_args(&args)),
        decoder: &decoder,
        sink: Sink::stdout(),
        write_error: None,
    };
    run.analyzer.attributor.zones.sample();
    let mut zone_tick = tokio::time::interval(ZONE_SAMPLE_PERIOD);
    zone_tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
    status::enable(!args.no_status && !args.json);
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
    let mut batch: Vec<Bytes> = Vec::new();

    let loop_result: Result<()> = loop {
        tokio::select! {
            _ = sigint.recv() => break Ok(()),
            _ = sigterm.recv() => break Ok(()),
            _ = &mut deadline => break Ok(()),
            _ = tick.tick() => {
                if let Ok(c) = counters.read() {
                    let shown = run.analyzer.totals.failures.shown;
                    status::draw(&status_text(&attached_names, &c, shown, started.elapsed()));
                }
            }
            _ = zone_tick.tick() => {
                run.analyzer.attributor.zones.sample();
            }
            res = reader.next_batch(&mut batch) => {
                if let Err(e) = res {
                    break Err(e.context("reading the ring buffer"));
                }
                run.handle(&mut batch);
                if run.write_error.is_some() {
                    break Ok(());
                }
            }
        }
    };
    // Whatever the kernel already queued is still reported.
    reader.drain_now(&mut batch);
    run.handle(&mut batch);
    status::clear();

    let counters = counters.read()?;
    run.analyzer.attributor.zones.sample();
    let summary = Summary {
        duration_s: started.elapsed().as_secs_f64(),
        counters: &counters,
        totals: &run.analyzer.totals,
        zones: &run.analyzer.attributor.zones,
        migratetypes: &decoder.migratetypes,
        hooks,
        top: args.top,
    };
    let rendered = if args.json {
        summary.json()
    } else {
        summary.text()
    };
    match run.write_error.take() {
        // The reader went away (`| head`): a normal end; the summary goes to stderr.
        Some(e) if e.kind() == io::ErrorKind::BrokenPipe => {
            eprintln!("{rendered}");
        }
        Some(e) => {
            eprintln!("{rendered}");
            return Err(anyhow::Error::new(e).context("cannot write to standard output"));
        }
        None => {
            if let Err(e) = run.sink.line(rendered.trim_end_matches('\n')) {
                eprintln!("{rendered}");
                if e.kind() != io::ErrorKind::BrokenPipe {
                    return Err(anyhow::Error::new(e).context("cannot write to standard output"));
                }
            }
        }
    }
    loop_result?;
    Ok(ExitCode::SUCCESS)
}

/// How often the zone state is sampled besides at each failure.
const ZONE_SAMPLE_PERIOD: Duration = Duration::from_secs(10);

/// Per-run state for turning records into output.
struct Run<'a> {
    args: &'a TraceArgs,
    analyzer: Analyzer,
    decoder: &'a Decoder,
    sink: Sink,
    /// The first write error; output stops there, counting does not.
    write_error: Option<io::Error>,
}

impl Run<'_> {
    fn handle(&mut self, batch: &mut Vec<Bytes>) {
        let mut events = Vec::with_capacity(batch.len());
        for bytes in batch.drain(..) {
            match self.decoder.decode(&bytes) {
                Ok(event) => events.push(event),
                Err(_) => self.analyzer.totals.failures.undecodable += 1,
            }
        }
        // Failures without zones read in the kernel are judged on /proc: read it once as the
        // batch arrives, before output slows its tail down.
        let newest_failure = events
            .iter()
            .filter_map(|e| match e {
                Event::AllocFail(f) if f.zones.flags & zone_snapshot::VALID == 0 => Some(f.ts_ns),
                _ => None,
            })
            .max();
        if let Some(ts) = newest_failure {
            self.analyzer.attributor.zones.cover(ts);
        }
        for event in events {
            let Some(record) = self.analyzer.on_event(event, self.decoder) else {
                continue;
            };
            if self.write_error.is_some() {
                continue;
            }
            let line = if self.args.json {
                json::record(&record, self.decoder)
            } else {
                text::record(&record, self.args.frames, self.decoder)
            };
            if let Err(e) = self.sink.line(&line) {
                self.write_error = Some(e);
            }
        }
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
