//! `fragtrace [trace]`: attach, print each failure as it happens, summarize at the end.
use std::{io, process::ExitCode, time::Duration};

use anyhow::{Context, Result};
use bytes::Bytes;
use tokio::{
    signal::unix::{SignalKind, signal},
    time::{Instant, MissedTickBehavior},
};

use crate::{
    analysis::{filter::Filter, stats::FailureStats},
    cli::TraceArgs,
    decode::{
        event::{Decoder, Event},
        gfp::GfpTable,
        kallsyms::Kallsyms,
        migratetype::MigrateTypes,
        tracefs,
    },
    error::{ExitStatus, fatal},
    hooks::{
        counters::{CounterValues, Counters},
        loader::{self, HookStatus, Mode},
        preflight,
        ringbuf::EventReader,
    },
    output::{
        Sink,
        json::{AllocFailJson, HookJson},
        status,
        summary::Summary,
        text,
    },
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
    // Handlers first: a signal that arrives once the hooks are announced must end the run cleanly.
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    let tracefs = tracefs::locate(args.tracefs.as_deref())?;
    let mode = match args.force_method.as_deref() {
        Some(kind) => Mode::Only(kind),
        None => Mode::FirstWorking,
    };
    let mut loaded = loader::load(&tracefs, mode)?;
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
    let kallsyms = Kallsyms::load().unwrap_or_else(|e| {
        warn(&format!("stacks shown as addresses: {e:#}"));
        Kallsyms::default()
    });
    let decoder = Decoder::new(gfp, MigrateTypes::load(), kallsyms);
    let _bpf_log = start_bpf_logger(&mut loaded.ebpf);
    let counters = Counters::new(loaded.take_map("COUNTERS")?)?;
    let mut reader = EventReader::new(loaded.take_map("EVENTS")?)?;
    let hooks: Vec<HookJson> = loaded.hooks.iter().map(HookJson::from_status).collect();

    let mut run = Run {
        args: &args,
        filter: Filter::from_args(&args),
        decoder: &decoder,
        stats: FailureStats::default(),
        sink: Sink::stdout(),
        write_error: None,
    };
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
                    status::draw(&status_text(&attached_names, &c, &run.stats, started.elapsed()));
                }
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
    let summary = Summary {
        duration_s: started.elapsed().as_secs_f64(),
        counters: &counters,
        stats: &run.stats,
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

/// Per-run state for turning records into output.
struct Run<'a> {
    args: &'a TraceArgs,
    filter: Filter,
    decoder: &'a Decoder,
    stats: FailureStats,
    sink: Sink,
    /// The first write error; output stops there, counting does not.
    write_error: Option<io::Error>,
}

impl Run<'_> {
    fn handle(&mut self, batch: &mut Vec<Bytes>) {
        for record in batch.drain(..) {
            let Ok(Event::AllocFail(ev)) = self.decoder.decode(&record) else {
                self.stats.undecodable += 1;
                continue;
            };
            if !self.filter.matches(&ev) {
                continue;
            }
            self.stats.record(&ev);
            if self.write_error.is_some() {
                continue;
            }
            let line = if self.args.json {
                serde_json::to_string(&AllocFailJson::new(&ev)).expect("event serializes")
            } else {
                text::alloc_fail(&ev, self.args.frames)
            };
            if let Err(e) = self.sink.line(&line) {
                self.write_error = Some(e);
            }
        }
    }
}

fn report_hooks(hooks: &[HookStatus]) {
    for h in hooks {
        let failed: Vec<String> = h
            .attempts
            .iter()
            .filter_map(|a| {
                a.error
                    .as_ref()
                    .map(|e| format!("{}: {e}", a.method.kind()))
            })
            .collect();
        match h.attached() {
            Some(m) if failed.is_empty() => {
                eprintln!("fragtrace: {} attached via {}", h.hook.name, m.kind())
            }
            Some(m) => eprintln!(
                "fragtrace: {} attached via {} ({})",
                h.hook.name,
                m.kind(),
                failed.join("; ")
            ),
            None => eprintln!(
                "fragtrace: {} unavailable on this kernel ({})",
                h.hook.name,
                failed.join("; ")
            ),
        }
    }
}

fn attached_summary(hooks: &[HookStatus]) -> String {
    hooks
        .iter()
        .filter_map(|h| {
            h.attached()
                .map(|m| format!("{}({})", h.hook.name, m.kind()))
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn status_text(
    attached: &str,
    c: &CounterValues,
    stats: &FailureStats,
    elapsed: Duration,
) -> String {
    let secs = elapsed.as_secs();
    format!(
        "{attached} | allocations {} | failures {} | shown {} | dropped {} | {:02}:{:02}:{:02}",
        c.allocs(),
        c.failures(),
        stats.shown,
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
