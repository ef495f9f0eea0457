//! The daemon's Prometheus metrics (docs/metrics.md), with the official client
//! (`prometheus-client`) and its Prometheus text exposition. Two kinds:
//! - counted as findings are analysed ([`Metrics::event`], [`Metrics::finding`]): failures with
//!   their verdict, stalls, netns creations, OOM kills, slab-cache failures, events by kind;
//! - read at scrape time ([`Scrape`]): the kernel's per-CPU counters, the latest zone state
//!   from /proc, what was shed, the process's own figures.
//!
//! Cardinality is bounded by design: no pid label; the comm and container labels keep their
//! value for the first [`COMM_LABELS`] / [`CONTAINER_LABELS`] distinct values seen, and count
//! the rest under `other`, so every series stays monotonic for the daemon's life.
use std::{
    collections::HashSet,
    fmt,
    sync::{Arc, Mutex},
};

use fragtrace_common::{MIGRATE_SLOTS, ORDER_BUCKETS};
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric, prometheus_text},
    metrics::{
        MetricType,
        counter::{ConstCounter, Counter},
        family::Family,
        gauge::{ConstGauge, Gauge},
        histogram::Histogram,
        info::Info,
    },
    registry::Registry,
};

use crate::{
    analysis::{
        analyzer::{Finding, Found},
        netns::errno_name,
        stalls::Stall,
    },
    decode::event::What,
    health::Shed,
    hooks::catalog,
    hooks::outcome::HookJson,
    offline::report::Counted,
    source::{counters::CounterValues, host::ZoneSample},
    zones::{index, verdict::VerdictKind},
};

/// The `Content-Type` of what [`Metrics::render`] returns.
pub const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;
/// Distinct comm label values kept; later comms count under `other`.
pub const COMM_LABELS: usize = 64;
/// Distinct container label values kept; later containers count under `other`.
pub const CONTAINER_LABELS: usize = 64;
/// Distinct errno label values kept on netns creation failures.
const ERRNO_LABELS: usize = 16;
pub const OTHER: &str = "other";

/// Stall and latency buckets, in seconds: 10 us to 5 s.
const LATENCY_BUCKETS: [f64; 12] = [
    0.000_01, 0.000_05, 0.000_1, 0.000_5, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0,
];

const VERDICTS: [VerdictKind; 4] = [
    VerdictKind::MemcgLimit,
    VerdictKind::Fragmentation,
    VerdictKind::Exhaustion,
    VerdictKind::Unknown,
];
const OOM_KINDS: [&str; 4] = ["cgroup", "fragmentation", "exhaustion", "unknown"];
const EVENT_KINDS: [&str; 11] = [
    "alloc_fail",
    "alloc_warn",
    "compact_try",
    "compact_begin",
    "compact_end",
    "compact_retry",
    "reclaim_begin",
    "reclaim_end",
    "oom_victim",
    "netns",
    "slab_create_fail",
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FailureLabels {
    order: u32,
    verdict: &'static str,
    netns: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SourceLabels {
    source: &'static str,
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CommLabels {
    comm: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ContainerLabels {
    container_id: String,
    pod_uid: String,
    verdict: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrnoLabels {
    errno: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProbeLabels {
    probe: String,
    method: String,
    /// Why it is not attached (the kernel's answer per method, or the option it needs).
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NetnsTimingLabels {
    source: &'static str,
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: &'static str,
    arch: &'static str,
}

/// A label that keeps the first `cap` distinct values and maps every later one to `other`.
#[derive(Debug)]
struct Capped {
    kept: HashSet<String>,
    cap: usize,
}

impl Capped {
    fn new(cap: usize) -> Self {
        Self {
            kept: HashSet::new(),
            cap,
        }
    }

    fn value(&mut self, value: &str) -> String {
        if self.kept.contains(value) {
            return value.to_string();
        }
        if self.kept.len() < self.cap {
            self.kept.insert(value.to_string());
            return value.to_string();
        }
        OTHER.to_string()
    }
}

/// Netns creation series, registered only where creation windows are hooked.
struct NetnsSeries {
    latency: Histogram,
    failures: Family<ErrnoLabels, Counter>,
    errnos: Capped,
}

/// What only a scrape reads: set just before the registry is encoded.
#[derive(Debug, Default)]
pub struct Scrape {
    /// The kernel's per-CPU counters, summed; None when the map could not be read.
    pub counters: Option<CounterValues>,
    /// The latest zone state read from /proc.
    pub zones: Option<ZoneSample>,
    /// CLOCK_MONOTONIC ns now, for the zone state's age.
    pub now_ns: u64,
    pub shed: Shed,
    pub undecodable: u64,
    pub memory_locked: bool,
    pub oom_score_adj: Option<i32>,
    /// What the flight recorder keeps on disk, when there is one.
    pub flight_recorder_bytes: Option<u64>,
    /// Where analysis spent its time, to tell a stalled consumer from a busy one.
    pub analysis: AnalysisTime,
}

/// Analysis's time so far: on batches of records (of which on a CPU), waiting for a CPU, and
/// fragtrace's own page faults, since tracing began.
#[derive(Clone, Copy, Debug, Default)]
pub struct AnalysisTime {
    pub busy_ns: u64,
    pub cpu_ns: u64,
    pub runqueue_wait_ns: u64,
    pub page_faults: u64,
}

/// Encodes a [`Scrape`] on each scrape: registered once in the registry.
#[derive(Debug)]
struct ScrapeCollector {
    scrape: Arc<Mutex<Scrape>>,
    /// Migratetype names by the kernel's enum index.
    migratetypes: Vec<String>,
}

pub struct Metrics {
    registry: Registry,
    scrape: Arc<Mutex<Scrape>>,
    failures: Family<FailureLabels, Counter>,
    by_comm: Family<CommLabels, Counter>,
    comms: Capped,
    by_container: Family<ContainerLabels, Counter>,
    containers: Capped,
    compaction_stall: Histogram,
    reclaim_stall: Histogram,
    netns: Option<NetnsSeries>,
    oom_kills: Family<KindLabels, Counter>,
    slab_failures: Counter,
    events: Family<KindLabels, Counter>,
}

impl Metrics {
    /// The registry for this run: `hooks` as they attached, `migratetypes` in the kernel's
    /// enum order. Every series an alert watches starts at 0.
    pub fn new(hooks: &[HookJson], migratetypes: &[String]) -> Self {
        let mut registry = Registry::default();
        let scrape = Arc::new(Mutex::new(Scrape::default()));

        registry.register(
            "fragtrace_build",
            "fragtrace's version and architecture",
            Info::new(BuildLabels {
                version: env!("CARGO_PKG_VERSION"),
                arch: std::env::consts::ARCH,
            }),
        );
        let probes = Family::<ProbeLabels, Gauge>::default();
        for h in hooks {
            let attached = probes.get_or_create(&ProbeLabels {
                probe: h.hook.clone(),
                method: h.method.clone().unwrap_or_else(|| "none".into()),
                reason: unattached_reason(h),
            });
            attached.set(h.attached as i64);
        }
        registry.register(
            "fragtrace_probe_attached",
            "Whether each kernel hook is attached (1) and by which method, or why not (0)",
            probes,
        );
        let (source, reason) = netns_timing(hooks);
        let timing = Family::<NetnsTimingLabels, Gauge>::default();
        timing
            .get_or_create(&NetnsTimingLabels { source, reason })
            .set((source != "none") as i64);
        registry.register(
            "fragtrace_netns_timing_available",
            "Whether netns creation latency and errno are measured (1), from which source, \
             or why their series are absent (0)",
            timing,
        );

        let failures = Family::<FailureLabels, Counter>::default();
        for order in 0..ORDER_BUCKETS as u32 {
            for verdict in VERDICTS {
                for netns in ["yes", "no"] {
                    let _ = failures.get_or_create(&FailureLabels {
                        order,
                        verdict: verdict.as_str(),
                        netns,
                    });
                }
            }
        }
        registry.register(
            "fragtrace_alloc_failures",
            "Failed page allocations analysed, by order, verdict and whether a network \
             namespace creation made them (after --min-order/--pid/--comm filters)",
            failures.clone(),
        );
        let by_comm = Family::<CommLabels, Counter>::default();
        registry.register(
            "fragtrace_alloc_failures_by_comm",
            format!(
                "Failed page allocations analysed, by task name: the first {COMM_LABELS} \
                 names keep their label, later ones count under comm=\"{OTHER}\""
            ),
            by_comm.clone(),
        );
        let by_container = Family::<ContainerLabels, Counter>::default();
        registry.register(
            "fragtrace_alloc_failures_by_container",
            format!(
                "Failed page allocations analysed of tasks in a container, by container id, \
                 Kubernetes pod uid and verdict: the first {CONTAINER_LABELS} containers keep \
                 their labels, later ones count under container_id=\"{OTHER}\""
            ),
            by_container.clone(),
        );
        let compaction_stall = Histogram::new(LATENCY_BUCKETS);
        registry.register(
            "fragtrace_direct_compaction_stall_seconds",
            "Time a task stalled in one direct compaction pass",
            compaction_stall.clone(),
        );
        let reclaim_stall = Histogram::new(LATENCY_BUCKETS);
        registry.register(
            "fragtrace_direct_reclaim_stall_seconds",
            "Time a task stalled in one direct reclaim",
            reclaim_stall.clone(),
        );
        let netns = (source != "none").then(|| {
            let latency = Histogram::new(LATENCY_BUCKETS);
            registry.register(
                "fragtrace_netns_creation_seconds",
                "Latency of successful network namespace creations",
                latency.clone(),
            );
            let failures = Family::<ErrnoLabels, Counter>::default();
            registry.register(
                "fragtrace_netns_creation_failures",
                "Network namespace creations that failed, by errno",
                failures.clone(),
            );
            NetnsSeries {
                latency,
                failures,
                errnos: Capped::new(ERRNO_LABELS),
            }
        });
        let oom_kills = Family::<KindLabels, Counter>::default();
        for kind in OOM_KINDS {
            let _ = oom_kills.get_or_create(&KindLabels { kind });
        }
        registry.register(
            "fragtrace_oom_kills",
            "OOM kills by kind: cgroup (the memory cgroup at its limit), fragmentation (a zone \
             had free memory above its high watermark), exhaustion, unknown (no zone state)",
            oom_kills.clone(),
        );
        let slab_failures = Counter::default();
        registry.register(
            "fragtrace_slab_cache_create_failures",
            "Slab caches the kernel could not create (names in the event lines)",
            slab_failures.clone(),
        );
        let events = Family::<KindLabels, Counter>::default();
        for kind in EVENT_KINDS {
            let _ = events.get_or_create(&KindLabels { kind });
        }
        registry.register(
            "fragtrace_events",
            "Records from the kernel analysed, by kind (before filters)",
            events.clone(),
        );
        registry.register_collector(Box::new(ScrapeCollector {
            scrape: scrape.clone(),
            migratetypes: migratetypes.to_vec(),
        }));

        Self {
            registry,
            scrape,
            failures,
            by_comm,
            comms: Capped::new(COMM_LABELS),
            by_container,
            containers: Capped::new(CONTAINER_LABELS),
            compaction_stall,
            reclaim_stall,
            netns,
            oom_kills,
            slab_failures,
            events,
        }
    }

    /// Where the failures counted come from: `ebpf` (the hooks), or `kernel_log` (/dev/kmsg,
    /// where no hook could attach: `reason` says why).
    pub fn set_source(&mut self, source: &'static str, reason: String) {
        let family = Family::<SourceLabels, Gauge>::default();
        family
            .get_or_create(&SourceLabels { source, reason })
            .set(1);
        self.registry.register(
            "fragtrace_source",
            "Where the failures counted come from: the eBPF hooks, or the kernel log where \
             no hook could attach (and why)",
            family,
        );
    }

    /// A report diagnosed from the kernel log (`--source kernel-log`, or where no hook
    /// attaches): the same failure and OOM series as from the hooks.
    pub fn kernel_log(&mut self, c: &Counted) {
        if let Some((order, verdict, netns)) = c.failure {
            if let Some(order) = order {
                self.failures
                    .get_or_create(&FailureLabels {
                        order: order.min(ORDER_BUCKETS as u32 - 1),
                        verdict,
                        netns: if netns { "yes" } else { "no" },
                    })
                    .inc();
            }
            let comm = self.comms.value(&c.comm);
            self.by_comm.get_or_create(&CommLabels { comm }).inc();
        }
        if let Some(kind) = c.oom_kill {
            self.oom_kills.get_or_create(&KindLabels { kind }).inc();
        }
    }

    /// A decoded record, before filters.
    pub fn event(&mut self, what: &What) {
        let kind = match what {
            What::AllocFail(_) => "alloc_fail",
            What::AllocWarn { .. } => "alloc_warn",
            What::CompactTry(_) => "compact_try",
            What::CompactBegin => "compact_begin",
            What::CompactEnd { .. } => "compact_end",
            What::CompactRetry(_) => "compact_retry",
            What::ReclaimBegin { .. } => "reclaim_begin",
            What::ReclaimEnd { .. } => "reclaim_end",
            What::OomVictim(_) => "oom_victim",
            What::Netns(_) => "netns",
            What::SlabCreateFail { .. } => "slab_create_fail",
        };
        self.events.get_or_create(&KindLabels { kind }).inc();
    }

    /// A finding that passed the filters.
    pub fn finding(&mut self, f: &Finding) {
        match &f.what {
            Found::AllocFail { failure, context } => {
                let verdict = context.verdict.kind.as_str();
                self.failures
                    .get_or_create(&FailureLabels {
                        order: failure.order,
                        verdict,
                        netns: if context.netns { "yes" } else { "no" },
                    })
                    .inc();
                let comm = self.comms.value(&f.task.comm);
                self.by_comm.get_or_create(&CommLabels { comm }).inc();
                if let Some(c) = &context.container
                    && (c.container_id.is_some() || c.pod_uid.is_some())
                {
                    let id = c.container_id.clone().unwrap_or_default();
                    let pod = c.pod_uid.clone().unwrap_or_default();
                    let key = format!("{id}/{pod}");
                    let (container_id, pod_uid) = if self.containers.value(&key) == OTHER {
                        (OTHER.to_string(), OTHER.to_string())
                    } else {
                        (id, pod)
                    };
                    self.by_container
                        .get_or_create(&ContainerLabels {
                            container_id,
                            pod_uid,
                            verdict,
                        })
                        .inc();
                }
            }
            Found::Stall(Stall::Compaction {
                request: Some(_),
                stall_ns,
                ..
            }) => self.compaction_stall.observe(seconds(*stall_ns)),
            Found::Stall(Stall::Reclaim { stall_ns, .. }) => {
                self.reclaim_stall.observe(seconds(*stall_ns))
            }
            Found::Netns(creation) => {
                if let Some(n) = &mut self.netns {
                    match creation.errno {
                        None => n.latency.observe(seconds(creation.latency_ns)),
                        Some(e) => {
                            let errno = n.errnos.value(&errno_name(e));
                            n.failures.get_or_create(&ErrnoLabels { errno }).inc();
                        }
                    }
                }
            }
            Found::OomKill(kill) => {
                let kind = if kill.memcg_oom {
                    "cgroup"
                } else if kill.fragmentation_driven {
                    "fragmentation"
                } else if kill.zones.is_empty() {
                    "unknown"
                } else {
                    "exhaustion"
                };
                self.oom_kills.get_or_create(&KindLabels { kind }).inc();
            }
            Found::SlabCreateFail { .. } => {
                self.slab_failures.inc();
            }
            Found::Stall(Stall::Compaction { request: None, .. })
            | Found::AllocWarn { .. }
            | Found::CompactTry(_)
            | Found::CompactRetry(_) => {}
        }
    }

    /// The Prometheus text exposition of every metric, with `scrape`'s figures.
    pub fn render(&self, scrape: Scrape) -> String {
        *self.scrape.lock().unwrap_or_else(|p| p.into_inner()) = scrape;
        let mut text = String::new();
        prometheus_text::encode(&mut text, &self.registry).expect("a String takes any write");
        text
    }
}

fn seconds(ns: u64) -> f64 {
    ns as f64 / 1e9
}

/// Empty when attached; else the option it needs, or each method's error.
fn unattached_reason(h: &HookJson) -> String {
    if h.attached {
        String::new()
    } else if !h.requested {
        format!(
            "opt-in: {} ({})",
            h.opt_in.as_deref().unwrap_or("?"),
            h.cost.as_deref().unwrap_or("")
        )
    } else {
        h.unavailable
            .iter()
            .map(|m| format!("{}: {}", m.method, m.error))
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// Where netns creation windows come from, or why there are none.
fn netns_timing(hooks: &[HookJson]) -> (&'static str, String) {
    let attached = |pred: &dyn Fn(&HookJson) -> bool| hooks.iter().any(|h| h.attached && pred(h));
    if attached(&|h| h.hook == catalog::COPY_NET_NS.name) {
        ("copy_net_ns", String::new())
    } else if attached(&|h| h.opt_in.is_some()) {
        ("syscalls", String::new())
    } else {
        (
            "none",
            format!(
                "copy_net_ns cannot be hooked on this kernel and {} is off: netns creation \
                 latency and errno series are absent; failures are still tagged netns from \
                 their stacks",
                catalog::NETNS_SYSCALLS.option
            ),
        )
    }
}

impl Collector for ScrapeCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), fmt::Error> {
        let s = self.scrape.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = &s.counters {
            let by_order = |values: &[u64; ORDER_BUCKETS]| {
                values
                    .iter()
                    .enumerate()
                    .map(|(order, &v)| ([("order", order as u32)], v))
                    .collect::<Vec<_>>()
            };
            counter_family(
                &mut enc,
                "fragtrace_page_allocations",
                "Successful page allocations by order, counted in the kernel (all tasks but \
                 fragtrace).",
                by_order(&c.alloc_by_order),
            )?;
            counter_family(
                &mut enc,
                "fragtrace_page_allocation_failures",
                "Failed page allocations by order, counted in the kernel: every one, including \
                 those dropped before analysis or hidden by filters.",
                by_order(&c.fail_by_order),
            )?;
            counter_family(
                &mut enc,
                "fragtrace_migratetype_fallbacks",
                "Allocations served from another migratetype's free lists \
                 (mm_page_alloc_extfrag), by the migratetype asked for; fragmenting=\"yes\" \
                 for fallbacks below pageblock order.",
                self.fallbacks(c),
            )?;
            counter(
                &mut enc,
                "fragtrace_kcompactd_wakeups",
                "kcompactd wakeups.",
                c.kcompactd_wakes,
            )?;
            counter(
                &mut enc,
                "fragtrace_compactions_deferred",
                "Direct compactions the kernel deferred (mm_compaction_deferred).",
                c.compaction_deferred,
            )?;
            counter(
                &mut enc,
                "fragtrace_storm_aggregated_failures",
                "Failures counted by stack in the kernel instead of sent as records (storm mode, \
                 past --storm-threshold): in fragtrace_page_allocation_failures_total, not in \
                 fragtrace_alloc_failures_total.",
                c.storm_aggregated,
            )?;
            counter(
                &mut enc,
                "fragtrace_ringbuf_drops",
                "Records lost in the kernel because the ring buffer was full.",
                c.ringbuf_drops,
            )?;
        }
        gauge(
            &mut enc,
            "fragtrace_kernel_counters_readable",
            "Whether the kernel's counters map could be read at this scrape.",
            s.counters.is_some() as i64,
        )?;
        counter_family(
            &mut enc,
            "fragtrace_events_shed",
            "Events lost after the ring buffer, by where: analysis (the drain thread's channel \
             was full), event_lines (--events output too slow), flight_recorder (its disk too \
             slow).",
            vec![
                ([("stage", "analysis")], s.shed.analysis),
                ([("stage", "event_lines")], s.shed.event_lines),
                ([("stage", "flight_recorder")], s.shed.recording),
            ],
        )?;
        let a = s.analysis;
        counter(
            &mut enc,
            "fragtrace_analysis_busy_seconds",
            "Time analysis spent on batches of records from the ring buffer.",
            a.busy_ns as f64 / 1e9,
        )?;
        counter(
            &mut enc,
            "fragtrace_analysis_cpu_seconds",
            "Of that time, time on a CPU (the rest is blocked: /proc reads, page faults).",
            a.cpu_ns as f64 / 1e9,
        )?;
        counter(
            &mut enc,
            "fragtrace_analysis_runqueue_wait_seconds",
            "Time analysis was ready to run but waited for a CPU (schedstat).",
            a.runqueue_wait_ns as f64 / 1e9,
        )?;
        counter(
            &mut enc,
            "fragtrace_page_faults",
            "fragtrace's own page faults since tracing began; each may wait in direct reclaim.",
            a.page_faults,
        )?;
        counter(
            &mut enc,
            "fragtrace_undecodable_records",
            "Records from the kernel that user space could not decode.",
            s.undecodable,
        )?;
        gauge(
            &mut enc,
            "fragtrace_memory_locked",
            "Whether fragtrace's memory is locked (mlockall), so reclaim cannot stall it.",
            s.memory_locked as i64,
        )?;
        if let Some(adj) = s.oom_score_adj {
            gauge(
                &mut enc,
                "fragtrace_oom_score_adj",
                "fragtrace's own oom_score_adj (-1000: never chosen by the OOM killer).",
                adj as i64,
            )?;
        }
        if let Some(bytes) = s.flight_recorder_bytes {
            gauge(
                &mut enc,
                "fragtrace_flight_recorder_bytes",
                "What the flight recorder's segments take on disk.",
                bytes as i64,
            )?;
        }
        if let Some(z) = &s.zones {
            encode_zones(&mut enc, z, s.now_ns)?;
        }
        encode_process(&mut enc)
    }
}

impl ScrapeCollector {
    /// Fallbacks summed over the migratetype fallen back to, per migratetype asked for.
    fn fallbacks(&self, c: &CounterValues) -> Vec<([(&'static str, String); 2], u64)> {
        let per_asked = |pairs: &[u64], asked: usize| -> u64 {
            pairs
                .iter()
                .skip(asked * MIGRATE_SLOTS)
                .take(MIGRATE_SLOTS)
                .sum()
        };
        let mut rows = Vec::new();
        for asked in 0..MIGRATE_SLOTS {
            // `extfrag` counts every fallback, the fragmenting ones included.
            let fragmenting = per_asked(&c.extfrag_fragmenting, asked);
            let all = per_asked(&c.extfrag, asked);
            let name = self.migratetypes.get(asked);
            if name.is_none() && all == 0 {
                continue;
            }
            let name = name
                .cloned()
                .unwrap_or_else(|| format!("migratetype{asked}"));
            rows.push((
                [("migratetype", name.clone()), ("fragmenting", "yes".into())],
                fragmenting,
            ));
            rows.push((
                [("migratetype", name), ("fragmenting", "no".into())],
                all.saturating_sub(fragmenting),
            ));
        }
        rows
    }
}

/// Per zone and order, from the latest /proc read.
fn encode_zones(enc: &mut DescriptorEncoder, z: &ZoneSample, now_ns: u64) -> fmt::Result {
    let state = &z.state;
    let zones: Vec<_> = state
        .zones
        .iter()
        .filter(|zone| zone.managed_pages.unwrap_or(0) > 0 && !zone.free_blocks.is_empty())
        .collect();
    let zone_labels =
        |zone: &crate::zones::Zone| [("node", zone.node.to_string()), ("zone", zone.zone.clone())];
    let per_order = |zone: &crate::zones::Zone, order: usize| {
        [
            ("node", zone.node.to_string()),
            ("zone", zone.zone.clone()),
            ("order", order.to_string()),
        ]
    };
    gauge_family(
        enc,
        "fragtrace_zone_free_blocks",
        "Free blocks per zone and order (/proc/buddyinfo).",
        zones
            .iter()
            .flat_map(|zone| {
                zone.free_blocks
                    .iter()
                    .enumerate()
                    .map(|(order, &n)| (per_order(zone, order), n as f64))
            })
            .collect(),
    )?;
    gauge_family(
        enc,
        "fragtrace_zone_free_bytes",
        "Free memory per zone (/proc/zoneinfo).",
        zones
            .iter()
            .map(|zone| {
                (
                    zone_labels(zone),
                    (zone.free_pages.unwrap_or(0) * state.page_size) as f64,
                )
            })
            .collect(),
    )?;
    gauge_family(
        enc,
        "fragtrace_zone_managed_bytes",
        "Memory the buddy allocator manages per zone (/proc/zoneinfo).",
        zones
            .iter()
            .map(|zone| {
                (
                    zone_labels(zone),
                    (zone.managed_pages.unwrap_or(0) * state.page_size) as f64,
                )
            })
            .collect(),
    )?;
    let mut watermarks = Vec::new();
    for zone in &zones {
        for (name, pages) in [
            ("min", zone.min_pages),
            ("low", zone.low_pages),
            ("high", zone.high_pages),
        ] {
            if let Some(p) = pages {
                let [node, zname] = zone_labels(zone);
                watermarks.push((
                    [node, zname, ("watermark", name.to_string())],
                    (p * state.page_size) as f64,
                ));
            }
        }
    }
    gauge_family(
        enc,
        "fragtrace_zone_watermark_bytes",
        "Zone watermarks (/proc/zoneinfo): below min only atomic and reclaim-exempt requests \
         are served.",
        watermarks,
    )?;
    let mut unusable = Vec::new();
    let mut fragmentation = Vec::new();
    for zone in &zones {
        let (u, f) = index::indices(&zone.free_blocks);
        for order in 0..zone.free_blocks.len() {
            unusable.push((per_order(zone, order), index::as_fraction(u[order])));
            fragmentation.push((per_order(zone, order), index::as_fraction(f[order])));
        }
    }
    gauge_family(
        enc,
        "fragtrace_zone_unusable_index",
        "The kernel's unusable free space index per order (0: all free memory usable for the \
         order, 1: none), computed from /proc/buddyinfo as mm/vmstat.c does.",
        unusable,
    )?;
    gauge_family(
        enc,
        "fragtrace_zone_fragmentation_index",
        "The kernel's fragmentation index per order (-1: a block is free; towards 0: a \
         failure would be for lack of memory; towards 1: for fragmentation).",
        fragmentation,
    )?;
    gauge_family(
        enc,
        "fragtrace_zone_largest_free_order",
        "The largest order with a free block per zone (-1: none).",
        zones
            .iter()
            .map(|zone| {
                (
                    zone_labels(zone),
                    zone.largest_free_order().map_or(-1.0, f64::from),
                )
            })
            .collect(),
    )?;
    gauge(
        enc,
        "fragtrace_zone_state_age_seconds",
        "How old the zone state above is (read from /proc at least every 10 s, and when a \
         failure needs it).",
        now_ns.saturating_sub(z.at_ns) as f64 / 1e9,
    )
}

/// The process's own figures, under the names every Prometheus client uses.
fn encode_process(enc: &mut DescriptorEncoder) -> fmt::Result {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name, which may hold spaces: state is field 3.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let field = |n: usize| fields.get(n - 3).and_then(|v| v.parse::<u64>().ok());
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    if let (Some(utime), Some(stime)) = (field(14), field(15)) {
        counter(
            enc,
            "process_cpu_seconds",
            "Total user and system CPU time spent in seconds.",
            (utime + stime) as f64 / ticks,
        )?;
    }
    if let (Some(start), Some(boot)) = (field(22), boot_time_s()) {
        gauge(
            enc,
            "process_start_time_seconds",
            "Start time of the process since unix epoch in seconds.",
            boot + start as f64 / ticks,
        )?;
    }
    if let (Some(rss_kb), _) = crate::survival::rss_kb() {
        gauge(
            enc,
            "process_resident_memory_bytes",
            "Resident memory size in bytes.",
            (rss_kb * 1024) as f64,
        )?;
    }
    if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
        gauge(
            enc,
            "process_open_fds",
            "Number of open file descriptors.",
            fds.count() as f64,
        )?;
    }
    Ok(())
}

/// The boot time (`btime` in /proc/stat), in seconds since the epoch.
fn boot_time_s() -> Option<f64> {
    std::fs::read_to_string("/proc/stat")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
}

fn counter<V: prometheus_client::encoding::EncodeCounterValue>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: V,
) -> fmt::Result {
    let m = enc.encode_descriptor(name, help, None, MetricType::Counter)?;
    ConstCounter::new(value).encode(m)
}

fn gauge<V: prometheus_client::encoding::EncodeGaugeValue>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: V,
) -> fmt::Result {
    let m = enc.encode_descriptor(name, help, None, MetricType::Gauge)?;
    ConstGauge::new(value).encode(m)
}

fn counter_family<L: EncodeLabelSet>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    rows: Vec<(L, u64)>,
) -> fmt::Result {
    let mut m = enc.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, value) in rows {
        ConstCounter::new(value).encode(m.encode_family(&labels)?)?;
    }
    Ok(())
}

fn gauge_family<L: EncodeLabelSet>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    rows: Vec<(L, f64)>,
) -> fmt::Result {
    if rows.is_empty() {
        return Ok(());
    }
    let mut m = enc.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, value) in rows {
        ConstGauge::new(value).encode(m.encode_family(&labels)?)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hook(name: &str, method: Option<&str>) -> HookJson {
        HookJson {
            hook: name.into(),
            method: method.map(Into::into),
            function: None,
            attached: method.is_some(),
            available: method.iter().map(|m| m.to_string()).collect(),
            unavailable: if method.is_none() {
                vec![crate::hooks::outcome::MethodError {
                    method: "fexit(copy_net_ns)".into(),
                    error: "refused: EPERM".into(),
                }]
            } else {
                Vec::new()
            },
            purpose: String::new(),
            opt_in: None,
            cost: None,
            requested: true,
        }
    }

    fn samples<'a>(text: &'a str, name: &str) -> Vec<&'a str> {
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
            .collect()
    }

    #[test]
    fn capped_labels_keep_the_first_values_for_life() {
        let mut c = Capped::new(2);
        assert_eq!(c.value("a"), "a");
        assert_eq!(c.value("b"), "b");
        assert_eq!(c.value("c"), OTHER);
        assert_eq!(c.value("a"), "a");
        assert_eq!(c.value("d"), OTHER);
    }

    /// Every series an alert watches is there at 0 from the first scrape; netns creation
    /// series are absent where their windows are not hooked, and a gauge says why.
    #[test]
    fn alerted_series_start_at_zero_and_netns_series_only_where_hooked() {
        let hooks = [
            hook("kmem:mm_page_alloc", Some("tp_btf")),
            hook("copy_net_ns", None),
        ];
        let m = Metrics::new(&hooks, &["Unmovable".into(), "Movable".into()]);
        let text = m.render(Scrape::default());
        let failures = samples(&text, "fragtrace_alloc_failures_total");
        assert_eq!(failures.len(), ORDER_BUCKETS * VERDICTS.len() * 2);
        assert!(failures.iter().all(|l| l.ends_with(" 0")), "{failures:?}");
        assert!(failures.contains(
            &r#"fragtrace_alloc_failures_total{order="6",verdict="memcg_limit",netns="no"} 0"#
        ));
        assert_eq!(samples(&text, "fragtrace_oom_kills_total").len(), 4);
        assert!(!text.contains("fragtrace_netns_creation"), "{text}");
        let timing = samples(&text, "fragtrace_netns_timing_available");
        assert!(timing[0].contains(r#"source="none""#) && timing[0].ends_with(" 0"));
        assert!(timing[0].contains("copy_net_ns cannot be hooked"));
        let copy = samples(&text, "fragtrace_probe_attached")
            .into_iter()
            .find(|l| l.contains(r#"probe="copy_net_ns""#))
            .unwrap();
        assert!(
            copy.contains("refused: EPERM") && copy.ends_with(" 0"),
            "{copy}"
        );

        let hooked = Metrics::new(&[hook("copy_net_ns", Some("fexit"))], &[]);
        let text = hooked.render(Scrape::default());
        assert!(
            text.contains("fragtrace_netns_creation_seconds_bucket"),
            "{text}"
        );
    }

    /// Scrape-time figures: the kernel's counters per order and the zones from /proc.
    #[test]
    fn scrape_time_counters_and_zones() {
        let m = Metrics::new(&[], &["Unmovable".into(), "Movable".into()]);
        let mut counters = CounterValues {
            extfrag: vec![0; MIGRATE_SLOTS * MIGRATE_SLOTS],
            extfrag_fragmenting: vec![0; MIGRATE_SLOTS * MIGRATE_SLOTS],
            ..Default::default()
        };
        counters.fail_by_order[6] = 26;
        counters.alloc_by_order[0] = 1000;
        // Movable asking, Unmovable given: 5 fallbacks, 3 of them below pageblock order.
        counters.extfrag[MIGRATE_SLOTS] = 5;
        counters.extfrag_fragmenting[MIGRATE_SLOTS] = 3;
        let state = crate::zones::tests::captured_6_18();
        let text = m.render(Scrape {
            counters: Some(counters),
            zones: Some(ZoneSample {
                at_ns: 1_000_000_000,
                state: state.clone(),
            }),
            now_ns: 3_500_000_000,
            ..Default::default()
        });
        assert!(text.contains("fragtrace_page_allocation_failures_total{order=\"6\"} 26\n"));
        assert!(text.contains("fragtrace_page_allocations_total{order=\"0\"} 1000\n"));
        assert!(text.contains(
            "fragtrace_migratetype_fallbacks_total{migratetype=\"Movable\",fragmenting=\"yes\"} 3\n"
        ));
        assert!(text.contains(
            "fragtrace_migratetype_fallbacks_total{migratetype=\"Movable\",fragmenting=\"no\"} 2\n"
        ));
        assert!(
            text.contains("fragtrace_zone_state_age_seconds 2.5\n"),
            "{text}"
        );
        let normal = state
            .zones
            .iter()
            .find(|z| z.zone == "Normal")
            .expect("a Normal zone");
        let blocks = samples(&text, "fragtrace_zone_free_blocks");
        let order3 = format!(
            "fragtrace_zone_free_blocks{{node=\"{}\",zone=\"Normal\",order=\"3\"}} {}",
            normal.node, normal.free_blocks[3] as f64
        );
        assert!(
            blocks.iter().any(|l| l.starts_with(&order3)),
            "{order3} not in {blocks:?}"
        );
        let largest = normal.largest_free_order().map_or(-1.0, f64::from);
        assert!(text.contains(&format!(
            "fragtrace_zone_largest_free_order{{node=\"{}\",zone=\"Normal\"}} {largest:?}",
            normal.node
        )));
        assert!(samples(&text, "process_resident_memory_bytes").len() == 1);
    }
}
