//! `fragtrace report FILE|DIR`: a recording through the same decode and analysis as the live
//! run, on any machine, without root or eBPF. A recording cut short is reported up to the cut.
//! A directory is a daemon's flight recorder: its segments are replayed oldest first, through
//! one analysis, as if they were one recording.
use std::{path::PathBuf, process::ExitCode, str::FromStr};

use anyhow::Result;

use crate::{
    analysis::analyzer::Analyzer,
    cli::ReportArgs,
    decode::{event::Decoder, kallsyms::Kallsyms},
    error::{ExitStatus, fatal},
    health::TracerHealth,
    pipeline::Pipeline,
    sink::{
        EventLines, LineFormat,
        flamegraph::{Flamegraphs, Title},
        summary::Summary,
    },
    source::counters::CounterValues,
    source::{
        host::RecordedHost,
        recording::{self, Frame, Recording, Trailer},
    },
};

/// How many records are analysed before their lines are handed to the writer.
const BATCH: usize = 256;

pub fn run(args: ReportArgs) -> Result<ExitCode> {
    let files = recordings(&args)?;
    let mut recording = Recording::open(&files[0])?;
    let header = recording.header.clone();
    let format = if args.show.json {
        LineFormat::Json
    } else {
        LineFormat::Text {
            frames: args.show.frames,
        }
    };
    let mut pipeline = Pipeline {
        decoder: Decoder::new(&header.tables, Kallsyms::default()).0,
        analyzer: Analyzer::new(vec![header.filter.clone(), args.filter.filter()]),
        host: RecordedHost::default(),
        lines: Some(EventLines::stdout(format)?),
        recorder: None,
        metrics: None,
        flamegraphs: Flamegraphs::from_args(&args.flamegraph)?,
    };
    let mut end = End::default();
    let mut duration_s = 0.0;
    for (i, path) in files.iter().enumerate() {
        if i > 0 {
            recording = match Recording::open(path) {
                Ok(r) => r,
                // The daemon may have deleted its oldest segment meanwhile, or it is cut.
                Err(e) => {
                    eprintln!("fragtrace: {}: skipped: {e:#}", path.display());
                    continue;
                }
            };
            // Each segment carries its own symbols and tables (a restart may sit between).
            pipeline.decoder = Decoder::new(&recording.header.tables, Kallsyms::default()).0;
        }
        end = replay(&mut recording, &mut pipeline);
        duration_s += end.duration_s(recording.header.started_ns);
        let last = i + 1 == files.len();
        if !last && let Some(cut) = &end.cut {
            eprintln!(
                "fragtrace: {} is incomplete ({cut}): reported up to there",
                path.display()
            );
        }
        if pipeline.output_failed() {
            break;
        }
    }
    pipeline.end_batch();
    let (counters, health) = match end.trailer {
        Some(t) => (t.counters, t.health),
        None => (end.counters.unwrap_or_default().1, TracerHealth::default()),
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
        cut: end.cut.as_deref(),
        kernel: &kernel,
    }
    .render(lines.format());
    if let Some(cut) = &end.cut {
        eprintln!(
            "fragtrace: {} is incomplete ({cut}): reported up to there",
            files.last().expect("one at least").display()
        );
    }
    crate::sink::ended_by(lines.finish(&summary))
}

/// The file, or a flight recorder directory's segments oldest first.
fn recordings(args: &ReportArgs) -> Result<Vec<PathBuf>> {
    if !args.file.is_dir() {
        return Ok(vec![args.file.clone()]);
    }
    let name = args.file.display();
    let segments = recording::segments(&args.file)
        .map_err(|e| fatal(ExitStatus::BadInput, format!("cannot list {name}: {e}")))?;
    if segments.is_empty() {
        return Err(fatal(
            ExitStatus::BadInput,
            format!("{name} holds no flight-recorder segments (fragtrace-*.rec)"),
        ));
    }
    Ok(segments.into_iter().map(|(_, path)| path).collect())
}

/// How one recording ended.
#[derive(Default)]
struct End {
    trailer: Option<Trailer>,
    /// The last counters recorded (CLOCK_MONOTONIC ns, values).
    counters: Option<(u64, CounterValues)>,
    cut: Option<String>,
}

impl End {
    /// The time the recording covers; without a trailer, up to its last counters.
    fn duration_s(&self, started_ns: u64) -> f64 {
        match (&self.trailer, &self.counters) {
            (Some(t), _) => t.duration_s,
            (None, Some((at, _))) => at.saturating_sub(started_ns) as f64 / 1e9,
            (None, None) => 0.0,
        }
    }
}

/// Every frame of `recording` through the pipeline, up to its trailer or its cut.
fn replay(recording: &mut Recording, pipeline: &mut Pipeline<RecordedHost>) -> End {
    let mut end = End::default();
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
            Frame::Counters(c) => end.counters = Some((c.at_ns, c.counters)),
            Frame::Stacks(a) => pipeline.stacks(a),
            Frame::Trailer(t) => {
                end.trailer = Some(*t);
                break;
            }
        }
        if pipeline.output_failed() {
            break;
        }
    }
    pipeline.end_batch();
    // Without a trailer the run's end is unknown: the last counters recorded stand for it.
    if end.trailer.is_none() {
        end.cut = Some(
            recording
                .cut
                .clone()
                .unwrap_or_else(|| "the recording ends without its trailer".into()),
        );
    }
    end
}
