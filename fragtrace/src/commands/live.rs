//! A live session, shared by the tracer, `record` and the daemon: attach the hooks, start the
//! ring buffer's drain thread, run each batch through the pipeline, and at the end gather the
//! kernel's counters and fragtrace's own health. Each command adds its sinks and its loop.
use std::{
    path::Path,
    sync::atomic::Ordering,
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use fragtrace_common::{EventHeader, read_record};

use crate::{
    analysis::histogram::Latency,
    analysis::{analyzer::Analyzer, filter::Filter},
    cli::TraceArgs,
    decode::{
        event::{Decoder, KernelTables, MonotonicClock},
        kallsyms::Kallsyms,
        tracefs,
    },
    error::{ExitStatus, fatal},
    health::{Shed, StageLag, TracerHealth},
    hooks::outcome::HookJson,
    hooks::{
        catalog,
        loader::{self, HookStatus, KernelReads, Mode},
        preflight,
    },
    pipeline::Pipeline,
    sink::{metrics::AnalysisTime, recording::Recorder, status},
    source::{
        counters::{CounterValues, Counters},
        host::{Host, LiveHost, ZoneReads, ZoneSample},
        recording::{self, CounterSnapshot, Header, Trailer},
        ringbuf::{Batches, Drain, RECORDS_PER_BATCH, RawBatch},
        stack_maps::StackMaps,
    },
    survival,
};

/// How often the zone state is read from /proc besides when failures need it, and the
/// kernel's counters are recorded.
pub const ZONE_SAMPLE_PERIOD: Duration = Duration::from_secs(10);

pub struct Live {
    pub pipeline: Pipeline<LiveHost>,
    pub batches: Batches,
    pub counters: Counters,
    pub stack_maps: StackMaps,
    pub hooks: Vec<HookJson>,
    pub hook_status: Vec<HookStatus>,
    pub kernel_reads: KernelReads,
    pub health: TracerHealth,
    pub started: Instant,
    /// What a recording's header needs.
    tables: KernelTables,
    filter: Filter,
    /// When the current recording (or flight-recorder segment) began.
    recording_started: Instant,
    /// Events shed by recordings already ended.
    ended_recordings_shed: u64,
    drain: Drain,
    zone_reads: ZoneReads,
    stage_lag: StageLagRecorder,
    /// fragtrace's own page faults when tracing began.
    faults_at_start: u64,
    /// The main thread's run-queue wait when tracing began.
    runqueue_wait_at_start: u64,
    /// Kept alive: dropping it detaches every program.
    _loaded: loader::Loaded,
}

impl Live {
    /// Protects the process, attaches every hook it can (naming those it cannot, once), and
    /// starts draining. `record` adds a recording sink. Call from inside a tokio runtime.
    pub fn attach(args: &TraceArgs, record: Option<&Path>) -> Result<Self> {
        preflight::require_privileges()?;
        survival::return_large_blocks_when_freed();
        let mut health = TracerHealth::default();
        // Out of the OOM killer's choice before the memory-hungry load, so that an incident
        // already under way cannot end the tracer during start-up.
        match protect_from_oom_killer(args.oom_score_adj) {
            Ok(adj) => health.oom_score_adj = Some(adj),
            Err(e) => health.oom_score_adj_error = Some(e),
        }
        let tracefs = tracefs::locate(args.tracefs.as_deref())?;
        let mode = match args.force_method.as_deref() {
            Some(kind) => Mode::Only(kind),
            None => Mode::FirstWorking,
        };
        let t = Instant::now();
        let kallsyms = match Kallsyms::load() {
            Ok(k) if k.is_empty() => {
                warn(
                    "stacks shown as addresses: /proc/kallsyms hides kernel addresses from \
                     fragtrace (kernel.kptr_restrict; reading them needs CAP_SYSLOG)",
                );
                k
            }
            Ok(k) => k,
            Err(e) => {
                warn(&format!("stacks shown as addresses: {e:#}"));
                Kallsyms::default()
            }
        };
        log::info!("start-up: kallsyms read in {:.0?}", t.elapsed());
        let opted_in: &[catalog::OptIn] = if args.netns_syscalls {
            &[catalog::NETNS_SYSCALLS]
        } else {
            &[]
        };
        let request = loader::Request {
            mode,
            opted_in,
            storm_threshold: args.storm_threshold,
            storm_stacks: args.storm_stacks,
            stacks_min_order: args.stacks_min_order,
            no_kernel_reads: args.no_kernel_reads,
        };
        let mut loaded = loader::load(&tracefs, request, &kallsyms)?;
        // Loading parsed the kernel's BTF (tens of MB, now freed): give back what is left in
        // the heap before the ring buffer is mapped (twice its size in RSS) and the rest is
        // locked in memory, or the two add up in the peak.
        // SAFETY: malloc_trim only releases free heap memory.
        unsafe { libc::malloc_trim(0) };
        loaded.require_any_attached()?;
        health.ring_buffer_bytes = loaded.ring_buffer_bytes.into();
        report_hooks(&loaded.hooks);
        for line in loaded.kernel_reads.inactive() {
            eprintln!("fragtrace: {line}");
        }
        let hooks: Vec<HookJson> = loaded.hooks.iter().map(HookJson::from_status).collect();
        let page_alloc_format = loaded
            .page_alloc_format
            .as_ref()
            .ok()
            .map(|f| f.print_fmt.clone());
        let t = Instant::now();
        let tables = KernelTables::read(&tracefs, page_alloc_format);
        let (decoder, gfp_error) = Decoder::new(&tables, kallsyms);
        if let Some(e) = gfp_error {
            warn(&format!("gfp flags shown as hex: {e}"));
        }
        let counters = Counters::new(loaded.take_map("COUNTERS")?)?;
        let stack_maps = StackMaps::new(|name| loaded.take_map(name))?;
        let (drain, batches) = Drain::start(loaded.take_map("EVENTS")?)?;

        let filter = args.filter.filter();
        let mut pipeline = Pipeline {
            decoder,
            analyzer: Analyzer::new(vec![filter.clone()]),
            host: LiveHost::default(),
            lines: None,
            recorder: None,
            metrics: None,
            flamegraphs: None,
        };
        let mut zone_reads = ZoneReads::default();
        if let Some(z) = zone_reads.read(&mut health.zone_reads) {
            pipeline.zone_sample(z);
        }
        log::info!(
            "start-up: kernel tables, maps and first zone sample in {:.0?}",
            t.elapsed()
        );
        let t = Instant::now();
        match lock_memory() {
            Ok(()) => health.memory_locked = true,
            Err(e) => health.memory_lock_error = Some(e),
        }
        let mut live = Self {
            pipeline,
            batches,
            counters,
            stack_maps,
            hooks,
            hook_status: loaded.hooks.clone(),
            kernel_reads: loaded.kernel_reads.clone(),
            health,
            started: Instant::now(),
            tables,
            filter,
            recording_started: Instant::now(),
            ended_recordings_shed: 0,
            drain,
            zone_reads,
            stage_lag: StageLagRecorder::default(),
            faults_at_start: 0,
            runqueue_wait_at_start: 0,
            _loaded: loaded,
        };
        if let Some(path) = record {
            live.begin_recording(path)?;
        }
        log::info!("start-up: memory locked in {:.0?}", t.elapsed());
        let t = Instant::now();
        // Everything that needed privilege is done: attached, opened, locked, read. (The
        // daemon's flight recorder creates its later segments as the owner of its directory.)
        let keep_bpf = survival::maps_need_capability(|| live.counters.read().is_ok());
        match survival::drop_capabilities(live.health.memory_locked, keep_bpf) {
            Ok(kept) => live.health.capabilities_kept = kept,
            Err(e) => {
                warn(&e);
                live.health.capabilities_error = Some(e);
            }
        }
        log::info!("start-up: capabilities dropped in {:.0?}", t.elapsed());
        live.faults_at_start = survival::page_faults();
        live.runqueue_wait_at_start = survival::thread_runqueue_wait_ns();
        Ok(live)
    }

    /// Starts recording to `path` (mode 0600): the header, the latest zone state, then
    /// everything analysis reads. A recording already under way must be ended first.
    pub fn begin_recording(&mut self, path: &Path) -> Result<()> {
        let zones = self.pipeline.analyzer.attributor.zones.latest.clone();
        let header = recording_header(
            &self.tables,
            &self.hooks,
            &self.kernel_reads,
            &self.filter,
            zones.as_ref(),
        );
        let mut recorder = Recorder::create(path, &header)?;
        if let Some(z) = &zones {
            recorder.zone_sample(z);
        }
        self.pipeline.host.set_journal(true);
        self.pipeline.recorder = Some(recorder);
        self.recording_started = Instant::now();
        Ok(())
    }

    /// How long the current recording (or flight-recorder segment) has run.
    pub fn recording_duration_s(&self) -> f64 {
        self.recording_started.elapsed().as_secs_f64()
    }

    /// Ends the current recording, if any, with its trailer: the kernel's `counters` now,
    /// the `duration_s` it covers (the summary's, for `record`) and fragtrace's health. The
    /// first write error, if any.
    pub fn end_recording(
        &mut self,
        counters: CounterValues,
        duration_s: f64,
    ) -> Option<std::io::Error> {
        let recorder = self.pipeline.recorder.take()?;
        self.pipeline.host.set_journal(false);
        self.ended_recordings_shed += recorder.shed_events();
        let mut health = self.health.clone();
        health.recording_shed = self.ended_recordings_shed;
        recorder.finish(Trailer {
            ended_ns: MonotonicClock::monotonic_now_ns(),
            duration_s,
            counters,
            health,
        })
    }

    /// Records, lines and events shed so far after the ring buffer, by where.
    pub fn shed_now(&self) -> Shed {
        Shed {
            analysis: self.drain.stats.shed.load(Ordering::Relaxed),
            event_lines: self
                .pipeline
                .lines
                .as_ref()
                .map_or(0, |l| l.stats().shed_events.load(Ordering::Relaxed)),
            recording: self.ended_recordings_shed
                + self
                    .pipeline
                    .recorder
                    .as_ref()
                    .map_or(0, Recorder::shed_events),
        }
    }

    /// Analysis's time so far (call from the analysis thread: the run-queue wait is its own).
    pub fn analysis_time_now(&self) -> AnalysisTime {
        AnalysisTime {
            busy_ns: self.health.batches.total_ns,
            cpu_ns: self.health.batches_cpu_ns,
            runqueue_wait_ns: survival::thread_runqueue_wait_ns()
                .saturating_sub(self.runqueue_wait_at_start),
            page_faults: survival::page_faults().saturating_sub(self.faults_at_start),
        }
    }

    /// The drain thread's latest pass (CLOCK_MONOTONIC ns): it passes at least every 50 ms.
    pub fn drain_heartbeat_ns(&self) -> u64 {
        self.drain.stats.heartbeat_ns.load(Ordering::Relaxed)
    }

    /// One batch from the drain thread: /proc read first if its failures need it and the pace
    /// allows, then every record through the pipeline, then the sinks get the batch's output.
    pub fn on_batch(&mut self, batch: RawBatch) {
        let started = Instant::now();
        let (cpu0, faults0) = survival::thread_cpu_and_faults();
        self.stage_lag.taken_up(&batch);
        if self.pipeline.needs_zone_sample(batch.records())
            && let Some(z) = self.zone_reads.read_if_due(&mut self.health.zone_reads)
        {
            self.pipeline.zone_sample(z);
        }
        for record in batch.records() {
            self.pipeline.raw(record);
        }
        self.pipeline.end_batch();
        self.stage_lag.analysed();
        self.health.batches.add(started.elapsed().as_nanos() as u64);
        let (cpu1, faults1) = survival::thread_cpu_and_faults();
        self.health.batches_cpu_ns += cpu1.saturating_sub(cpu0);
        self.health.batches_page_faults += faults1.saturating_sub(faults0);
        self.batches.recycle(batch);
    }

    /// The periodic /proc read, and what the kernel counts and aggregates.
    pub fn on_zone_tick(&mut self) {
        if let Some(z) = self.zone_reads.read(&mut self.health.zone_reads) {
            self.pipeline.zone_sample(z);
        }
        self.read_kernel_aggregates();
        self.pipeline.end_batch();
    }

    /// The kernel's counters and stack aggregations, for the recording and the summary; the
    /// containers of the cgroups they name are looked up while those cgroups still exist.
    fn read_kernel_aggregates(&mut self) {
        let stacks = self.stack_maps.read();
        for a in stacks.all() {
            self.pipeline.host.container(a.cgroup_id, 0);
        }
        if let Some(r) = &mut self.pipeline.recorder {
            r.facts(self.pipeline.host.take_facts());
            if let Ok(c) = self.counters.read() {
                r.counters(CounterSnapshot {
                    at_ns: MonotonicClock::monotonic_now_ns(),
                    counters: c,
                });
            }
        }
        self.pipeline.stacks(stacks);
    }

    /// Stops draining, analyses whatever the kernel had already queued, and gathers the
    /// final counters and fragtrace's own health.
    pub async fn finish(&mut self) -> Result<CounterValues> {
        self.drain.stop();
        while let Some(batch) = self.batches.rx.recv().await {
            self.on_batch(batch);
        }
        status::clear();
        let counters = self.counters.read()?;
        if let Some(z) = self.zone_reads.read(&mut self.health.zone_reads) {
            self.pipeline.zone_sample(z);
        }
        self.read_kernel_aggregates();
        self.pipeline.end_batch();
        let spent = self.analysis_time_now();
        let h = &mut self.health;
        h.page_faults = spent.page_faults;
        h.analysis_runqueue_wait_ns = spent.runqueue_wait_ns;
        h.records_drained = self.drain.stats.records.load(Ordering::Relaxed);
        h.drain_shed = self.drain.stats.shed.load(Ordering::Relaxed);
        if let Some(lines) = &self.pipeline.lines {
            h.output_shed = lines.stats().shed_events.load(Ordering::Relaxed);
            h.output_lag = lines.stats().lag.lock().ok().and_then(|l| l.summary());
        }
        h.stage_lag = self.stage_lag.summary();
        h.host_reads = self.pipeline.host.reads;
        h.recording_shed = self.ended_recordings_shed
            + self
                .pipeline
                .recorder
                .as_ref()
                .map_or(0, Recorder::shed_events);
        (h.rss_kb, h.peak_rss_kb) = survival::rss_kb();

        Ok(counters)
    }

    /// "19/22 hooks attached", for the status line.
    pub fn attached_summary(&self) -> String {
        attached_summary(&self.hook_status)
    }
}

/// How late records are at each stage before their output (see [`StageLag`]).
struct StageLagRecorder {
    drained: Latency,
    picked_up: Latency,
    analysed: Latency,
    /// The kernel times of the batch under analysis (sized before tracing for a full batch).
    batch_ts: Vec<u64>,
}

impl Default for StageLagRecorder {
    fn default() -> Self {
        Self {
            drained: Latency::default(),
            picked_up: Latency::default(),
            analysed: Latency::default(),
            batch_ts: Vec::with_capacity(RECORDS_PER_BATCH),
        }
    }
}

impl StageLagRecorder {
    fn taken_up(&mut self, batch: &RawBatch) {
        let now = MonotonicClock::monotonic_now_ns();
        self.batch_ts.clear();
        self.batch_ts.extend(
            batch
                .records()
                .filter_map(|r| Some(read_record::<EventHeader>(r)?.ts_ns)),
        );
        for &ts in &self.batch_ts {
            self.drained.record(batch.handed_ns.saturating_sub(ts));
            self.picked_up.record(now.saturating_sub(ts));
        }
    }

    fn analysed(&mut self) {
        let now = MonotonicClock::monotonic_now_ns();
        for &ts in &self.batch_ts {
            self.analysed.record(now.saturating_sub(ts));
        }
    }

    fn summary(&self) -> StageLag {
        StageLag {
            drained: self.drained.summary(),
            picked_up: self.picked_up.summary(),
            analysed: self.analysed.summary(),
        }
    }
}

/// Sets fragtrace's own OOM score (the value in force), or says once why it could not.
pub fn protect_from_oom_killer(oom_score_adj: i32) -> Result<i32, String> {
    survival::set_oom_score_adj(oom_score_adj)
        .map(|()| oom_score_adj)
        .inspect_err(|e| warn(&format!("{e}: the OOM killer may choose fragtrace")))
}

/// Locks fragtrace's memory, or says once why it could not.
pub fn lock_memory() -> Result<(), String> {
    survival::lock_memory()
        .inspect_err(|e| warn(&format!("{e}: memory pressure may stall fragtrace")))
}

/// When a run with `--duration` ends: that many seconds from now, or in practice never.
pub fn deadline(duration: Option<f64>) -> tokio::time::Sleep {
    tokio::time::sleep(
        duration
            .map(Duration::from_secs_f64)
            .unwrap_or(Duration::from_secs(100 * 365 * 86400)),
    )
}

/// Validates `--duration`: positive, finite, below 1e9 s.
pub fn check_duration(duration: Option<f64>) -> Result<()> {
    match duration {
        Some(d) if !(d.is_finite() && d > 0.0 && d < 1e9) => Err(fatal(
            ExitStatus::Usage,
            "--duration needs a positive number of seconds (below 1e9)",
        )),
        _ => Ok(()),
    }
}

pub fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// What `report` needs to know about this machine and run.
fn recording_header(
    tables: &KernelTables,
    hooks: &[HookJson],
    kernel_reads: &KernelReads,
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
        kernel_reads: kernel_reads.clone(),
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

pub fn warn(msg: &str) {
    status::suspend(|| eprintln!("fragtrace: warning: {msg}"));
}
