//! `fragtrace report FILE`: a recording through the same decode and analysis as the live run,
//! on any machine, without root or eBPF. A recording cut short is reported up to the cut.
use std::{process::ExitCode, str::FromStr};

use anyhow::Result;

use crate::{
    analysis::{analyzer::Analyzer, filter::Filter},
    cli::ReportArgs,
    decode::{event::Decoder, kallsyms::Kallsyms},
    pipeline::{Pipeline, TracerHealth},
    sink::{
        EventLines, LineFormat,
        flamegraph::{Flamegraphs, Title},
        summary::Summary,
    },
    source::counters::CounterValues,
    source::{
        host::RecordedHost,
        recording::{Frame, Recording, Trailer},
    },
};

/// How many records are analysed before their lines are handed to the writer.
const BATCH: usize = 256;

pub fn run(args: ReportArgs) -> Result<ExitCode> {
    let mut recording = Recording::open(&args.file)?;
    let header = recording.header.clone();
    let (decoder, _) = Decoder::new(&header.tables, Kallsyms::default());
    let format = if args.show.json {
        LineFormat::Json
    } else {
        LineFormat::Text {
            frames: args.show.frames,
        }
    };
    let mut pipeline = Pipeline {
        decoder,
        analyzer: Analyzer::new(vec![header.filter.clone(), Filter::from_args(&args.filter)]),
        host: RecordedHost::default(),
        lines: Some(EventLines::stdout(format)?),
        recorder: None,
        flamegraphs: Flamegraphs::from_args(&args.flamegraph)?,
    };
    let mut counters: Option<(u64, CounterValues)> = None;
    let mut trailer: Option<Trailer> = None;
    let mut in_batch = 0;
    while let Some(frame) = recording.next_frame() {
        match frame {
            Frame::Raw(bytes) => {
                pipeline.raw(&bytes);
                in_batch += 1;
                if in_batch == BATCH {
                    pipeline.end_batch();
                    in_batch = 0;
                }
            }
            Frame::Zones(z) => pipeline.zone_sample(z),
            Frame::Fact(f) => pipeline.host.learn(f),
            Frame::Symbol(s) => {
                pipeline
                    .decoder
                    .kallsyms
                    .insert(s.addr, &s.name, s.module.as_deref())
            }
            Frame::Counters(c) => counters = Some((c.at_ns, c.counters)),
            Frame::Stacks(a) => pipeline.stacks(a),
            Frame::Trailer(t) => {
                trailer = Some(*t);
                break;
            }
        }
        if pipeline.output_failed() {
            break;
        }
    }
    pipeline.end_batch();
    // Without a trailer the run's end is unknown: the last counters recorded stand for it.
    let cut = trailer.is_none().then(|| {
        recording
            .cut
            .clone()
            .unwrap_or_else(|| "the recording ends without its trailer".into())
    });
    let (duration_s, counters, health) = match trailer {
        Some(t) => (t.duration_s, t.counters, t.health),
        None => {
            let (at, c) = counters.unwrap_or_default();
            let secs = at.saturating_sub(header.started_ns) as f64 / 1e9;
            (secs, c, TracerHealth::default())
        }
    };
    let lines = pipeline.lines.take().expect("set above");
    let kernel = pipeline.kernel_stacks();
    let ended = jiff::Timestamp::from_str(&header.started)
        .ok()
        .and_then(|t| {
            t.checked_add(jiff::SignedDuration::from_secs_f64(duration_s))
                .ok()
        })
        .map_or_else(|| "?".to_string(), |t| t.to_string());
    pipeline.write_flamegraphs(
        &kernel,
        &Title {
            host: header.hostname.clone(),
            kernel: header.kernel_release.clone(),
            from: header.started.clone(),
            to: ended,
        },
    )?;
    let summary = Summary {
        duration_s,
        counters: &counters,
        totals: &pipeline.analyzer.totals,
        zones: &pipeline.analyzer.attributor.zones,
        migratetypes: &pipeline.decoder.migratetypes,
        hooks: &header.hooks,
        kernel_reads: &header.kernel_reads,
        top: args.show.top,
        health: &health,
        cut: cut.as_deref(),
        kernel: &kernel,
    }
    .render(lines.format());
    if let Some(cut) = &cut {
        eprintln!(
            "fragtrace: {} is incomplete ({cut}): reported up to there",
            args.file.display()
        );
    }
    crate::sink::ended_by(lines.finish(&summary))
}
