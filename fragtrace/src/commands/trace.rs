//! `fragtrace [trace]` and `fragtrace record`: a live session printing each finding as it
//! happens, until Ctrl-C, SIGTERM, SIGHUP or `--duration`, then the summary.
use std::{path::Path, process::ExitCode, time::Duration};

use anyhow::{Context, Result};
use tokio::{
    signal::unix::{SignalKind, signal},
    time::MissedTickBehavior,
};

use super::live::{self, Live, ZONE_SAMPLE_PERIOD};
use crate::{
    cli::TraceArgs,
    error::{ExitStatus, fatal},
    sink::{
        EventLines, LineFormat,
        flamegraph::{Flamegraphs, Title, Weight},
        status,
        summary::Summary,
    },
    source::counters::CounterValues,
};

pub fn run(args: TraceArgs, record: Option<&Path>) -> Result<ExitCode> {
    live::check_duration(args.duration)?;
    live::runtime()?.block_on(trace(args, record))
}

async fn trace(args: TraceArgs, record: Option<&Path>) -> Result<ExitCode> {
    let flamegraphs = Flamegraphs::from_args(&args.flamegraph)?;
    if flamegraphs
        .as_ref()
        .is_some_and(|f| f.weight == Weight::Allocations)
        && args.stacks_min_order.is_none()
    {
        live::warn("--weight allocations counts nothing without --stacks-min-order N");
    }
    // Handlers first: a signal that arrives once the hooks are announced must end the run cleanly.
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sighup = signal(SignalKind::hangup())?;
    let mut live = Live::attach(&args, record)?;
    let format = if args.show.json {
        LineFormat::Json
    } else {
        LineFormat::Text {
            frames: args.show.frames,
        }
    };
    live.pipeline.lines =
        Some(EventLines::stdout(format).context("cannot start the output thread")?);
    live.pipeline.flamegraphs = flamegraphs;
    let started_at = jiff::Timestamp::now();

    let attached = live.attached_summary();
    eprintln!("fragtrace: tracing; Ctrl-C to end");
    status::enable(!args.no_status && !args.show.json);
    let deadline = live::deadline(args.duration);
    tokio::pin!(deadline);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let mut zone_tick = tokio::time::interval(ZONE_SAMPLE_PERIOD);
    zone_tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
    zone_tick.reset();
    loop {
        tokio::select! {
            _ = sigint.recv() => break,
            _ = sigterm.recv() => break,
            _ = sighup.recv() => break,
            _ = &mut deadline => break,
            _ = tick.tick() => {
                if let Ok(c) = live.counters.read() {
                    let shown = live.pipeline.analyzer.totals.failures.shown;
                    status::draw(&status_text(&attached, &c, shown, live.started.elapsed()));
                }
            }
            _ = zone_tick.tick() => live.on_zone_tick(),
            batch = live.batches.rx.recv() => match batch {
                Some(batch) => {
                    live.on_batch(batch);
                    if live.pipeline.output_failed() {
                        break;
                    }
                }
                // The drain thread ended: it cannot, short of a crash there.
                None => break,
            },
        }
    }
    let counters = live.finish().await?;
    let duration_s = live.started.elapsed().as_secs_f64();
    let lines = live.pipeline.lines.take().expect("set above");
    let kernel = live.pipeline.kernel_stacks();
    let read = |path: &str| {
        std::fs::read_to_string(path)
            .map(|s| s.trim().to_string())
            .unwrap_or_default()
    };
    let flamegraph_error = live
        .pipeline
        .write_flamegraphs(
            &kernel,
            &Title {
                host: read("/proc/sys/kernel/hostname"),
                kernel: read("/proc/sys/kernel/osrelease"),
                from: started_at.to_string(),
                to: jiff::Timestamp::now().to_string(),
            },
        )
        .err();
    let summary = Summary {
        duration_s,
        counters: &counters,
        totals: &live.pipeline.analyzer.totals,
        zones: &live.pipeline.analyzer.attributor.zones,
        migratetypes: &live.pipeline.decoder.migratetypes,
        hooks: &live.hooks,
        kernel_reads: &live.kernel_reads,
        top: args.show.top,
        health: &live.health,
        cut: None,
        kernel: &kernel,
    }
    .render(lines.format());
    // Said on stderr too: the output that fell behind may be the one the summary goes to.
    if let Some(line) = crate::sink::summary::fell_behind(&live.health) {
        eprintln!("fragtrace: {line}");
    }
    let recording_error = live.end_recording(counters.clone(), duration_s);
    let output_error = lines.finish(&summary);
    if let Some(e) = flamegraph_error {
        return Err(e);
    }
    if let (Some(e), Some(path)) = (recording_error, record) {
        return Err(fatal(
            ExitStatus::Failure,
            format!(
                "cannot write {}: {e}; the recording ends at the last second before the error",
                path.display()
            ),
        ));
    }
    crate::sink::ended_by(output_error)
}

fn status_text(attached: &str, c: &CounterValues, shown: u64, elapsed: Duration) -> String {
    let secs = elapsed.as_secs();
    // Most telling first: the terminal's width cuts the end.
    format!(
        "{:02}:{:02}:{:02} failures {} shown {} dropped {} | allocations {} | {attached}",
        secs / 3600,
        secs / 60 % 60,
        secs % 60,
        c.failures(),
        shown,
        c.ringbuf_drops,
        c.allocs(),
    )
}
