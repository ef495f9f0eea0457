//! One pipeline for every mode: source -> decode -> analysis -> sinks. The live tracer, `record`
//! and `report` differ only in where records and host answers come from, and where findings go.
use fragtrace_common::{AllocFailEvent, EventHeader, EventKind, read_record, zone_snapshot};

use crate::{
    analysis::analyzer::Analyzer,
    decode::event::{Decoder, KernelStacks},
    sink::{
        EventLines,
        flamegraph::{Flamegraphs, Title},
        metrics::Metrics,
        recording::Recorder,
    },
    source::{
        host::{Host, ZoneSample},
        stack_maps::AggregatedStacks,
    },
};

/// A failure judged on /proc is judged on a read at most this old (or taken after it).
pub const ZONE_STATE_FRESH_NS: u64 = 100_000_000;

pub struct Pipeline<H: Host> {
    pub decoder: Decoder,
    pub analyzer: Analyzer,
    pub host: H,
    pub lines: Option<EventLines>,
    pub recorder: Option<Recorder>,
    pub flamegraphs: Option<Flamegraphs>,
    /// The daemon's Prometheus metrics.
    pub metrics: Option<Metrics>,
}

impl<H: Host> Pipeline<H> {
    /// One raw record: decoded, analysed, shown, recorded.
    pub fn raw(&mut self, bytes: &[u8]) {
        match self.decoder.decode(bytes) {
            Ok(event) => {
                if let Some(m) = &mut self.metrics {
                    m.event(&event.what);
                }
                if let Some(finding) = self.analyzer.on_event(event, &mut self.host) {
                    if let Some(lines) = &mut self.lines {
                        lines.finding(&finding);
                    }
                    if let Some(f) = &mut self.flamegraphs {
                        f.finding(&finding);
                    }
                    if let Some(m) = &mut self.metrics {
                        m.finding(&finding);
                    }
                }
            }
            Err(_) => self.analyzer.on_undecodable(),
        }
        if let Some(r) = &mut self.recorder {
            // The host's answers first: replay learns them before the record that needs them.
            r.facts(self.host.take_facts());
            r.raw(bytes, &self.decoder.kallsyms);
        }
    }

    /// The zone state read from /proc, in stream order.
    pub fn zone_sample(&mut self, sample: ZoneSample) {
        if let Some(r) = &mut self.recorder {
            r.zone_sample(&sample);
        }
        self.analyzer.on_zone_sample(sample);
    }

    /// What the kernel aggregated so far (each reading replaces the last).
    pub fn stacks(&mut self, stacks: AggregatedStacks) {
        if let Some(r) = &mut self.recorder {
            r.stacks(&stacks, &self.decoder.kallsyms);
        }
        self.analyzer.on_kernel_stacks(stacks);
    }

    /// The kernel's stack aggregations, named; storm-mode failures pass the same filters as
    /// failure records (as far as a task name and an order can tell).
    pub fn kernel_stacks(&self) -> KernelStacks {
        let mut named = self.decoder.kernel_stacks(&self.analyzer.kernel_stacks);
        let filters = &self.analyzer.filters;
        named.failures.retain(|s| {
            filters
                .iter()
                .all(|f| f.matches_aggregate(&s.comm, s.order))
        });
        named
    }

    /// Writes the folded stacks and flamegraph asked for, from what the run saw.
    pub fn write_flamegraphs(
        &mut self,
        kernel: &KernelStacks,
        title: &Title,
    ) -> anyhow::Result<()> {
        let Some(f) = self.flamegraphs.take() else {
            return Ok(());
        };
        let host = &mut self.host;
        let lines = f.lines(kernel, |cgroup_id| {
            host.container(cgroup_id, 0).and_then(|c| c.container_id)
        });
        f.write(&lines, title).map_err(|e| {
            crate::error::fatal(
                crate::error::ExitStatus::Failure,
                format!("cannot write the flamegraph: {e}"),
            )
        })
    }

    /// Hands what a batch of records produced to the sinks' writer threads.
    pub fn end_batch(&mut self) {
        if let Some(lines) = &mut self.lines {
            lines.end_batch();
        }
        if let Some(r) = &mut self.recorder {
            r.end_batch();
        }
    }

    /// An output failed (a closed pipe, a full disk): the run ends.
    pub fn output_failed(&self) -> bool {
        self.lines.as_ref().is_some_and(EventLines::failed)
            || self.recorder.as_ref().is_some_and(Recorder::failed)
    }

    /// Whether a batch holds an event that /proc must be read for before it is judged: a
    /// failure whose zones the kernel did not read, or an OOM kill, newer than the latest read.
    pub fn needs_zone_sample<'a>(&self, records: impl Iterator<Item = &'a [u8]>) -> bool {
        let newest = records
            .filter_map(|bytes| {
                let header = read_record::<EventHeader>(bytes)?;
                let unread = match EventKind::from_u32(header.kind)? {
                    EventKind::AllocFail => read_record::<AllocFailEvent>(bytes)
                        .is_some_and(|f| f.zones.flags & zone_snapshot::VALID == 0),
                    EventKind::OomVictim => true,
                    _ => false,
                };
                unread.then_some(header.ts_ns)
            })
            .max();
        newest.is_some_and(|ts| {
            !self
                .analyzer
                .attributor
                .zones
                .covers(ts, ZONE_STATE_FRESH_NS)
        })
    }
}
