//! The end-of-run summary, as text or as JSON lines (extfrag pairs, then the summary object).
use std::{collections::BTreeMap, fmt::Write as _};

use fragtrace_common::{MIGRATE_SLOTS, ORDER_BUCKETS};

use super::json::{
    CompactionSummaryJson, ExtfragJson, NetnsSummaryJson, ReclaimSummaryJson, StackJson,
    SummaryJson, TaskJson,
};
use crate::{
    analysis::{
        analyzer::Aggregates,
        attribution::ZoneHistory,
        histogram::{LatencySummary, human_ns},
    },
    decode::{event::KernelStacks, migratetype::MigrateTypes},
    health::TracerHealth,
    hooks::loader::KernelReads,
    hooks::outcome::HookJson,
    source::counters::CounterValues,
    zones::{hints, snapshot::SnapshotJson, verdict::VerdictKind},
};

pub struct Summary<'a> {
    pub duration_s: f64,
    pub counters: &'a CounterValues,
    pub totals: &'a Aggregates,
    pub zones: &'a ZoneHistory,
    pub migratetypes: &'a MigrateTypes,
    pub hooks: &'a [HookJson],
    pub kernel_reads: &'a KernelReads,
    pub top: usize,
    pub health: &'a TracerHealth,
    /// Why a replayed recording ends early, if it does.
    pub cut: Option<&'a str>,
    /// What the kernel aggregated by stack, named and filtered.
    pub kernel: &'a KernelStacks,
}

/// One (alloc, fallback) migratetype pair with its counts.
struct Fallback {
    alloc: usize,
    fallback: usize,
    count: u64,
    fragmenting: u64,
}

impl Summary<'_> {
    /// The most frequent failing stacks: those of failure records and those the kernel
    /// counted in storm mode, together.
    fn top_stacks(&self) -> Vec<(&[String], u64)> {
        let mut by_stack: std::collections::HashMap<&[String], u64> = self
            .totals
            .failures
            .top_stacks(usize::MAX)
            .into_iter()
            .map(|(s, n)| (&s[..], n))
            .collect();
        for a in &self.kernel.failures {
            *by_stack.entry(a.stack.as_slice()).or_default() += a.count;
        }
        let mut v: Vec<(&[String], u64)> = by_stack.into_iter().collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0)));
        v.truncate(self.top);
        v
    }

    /// Stall time by requested order, as the kernel summed it per stack: the same figures the
    /// stall flamegraph weighs.
    fn stall_totals(&self, what: &str) -> BTreeMap<u32, u64> {
        let mut totals = BTreeMap::new();
        for s in self
            .kernel
            .stalls
            .iter()
            .filter(|s| s.what.as_deref() == Some(what))
        {
            *totals.entry(s.order).or_default() += s.total_ns;
        }
        totals
    }

    fn fallbacks(&self) -> Vec<Fallback> {
        let mut v = Vec::new();
        for alloc in 0..MIGRATE_SLOTS {
            for fallback in 0..MIGRATE_SLOTS {
                let i = alloc * MIGRATE_SLOTS + fallback;
                let count = self.counters.extfrag.get(i).copied().unwrap_or(0);
                if count > 0 {
                    v.push(Fallback {
                        alloc,
                        fallback,
                        count,
                        fragmenting: self
                            .counters
                            .extfrag_fragmenting
                            .get(i)
                            .copied()
                            .unwrap_or(0),
                    });
                }
            }
        }
        v
    }

    fn hints(&self) -> Vec<&'static str> {
        let mut out: Vec<&'static str> = Vec::new();
        for (kind, verdict) in [
            ("fragmentation", VerdictKind::Fragmentation),
            ("exhaustion", VerdictKind::Exhaustion),
            ("memcg_limit", VerdictKind::MemcgLimit),
        ] {
            if self.totals.verdicts.get(kind).copied().unwrap_or(0) > 0 {
                for h in hints::for_verdict(verdict) {
                    if !out.contains(&h) {
                        out.push(h);
                    }
                }
            }
        }
        out
    }

    /// As text, or as JSON lines; ends with a newline.
    pub fn render(&self, format: super::LineFormat) -> String {
        match format {
            super::LineFormat::Json => self.json() + "\n",
            super::LineFormat::Text { .. } => self.text(),
        }
    }

    /// JSON lines: one `extfrag` object per migratetype pair, then the `summary` object.
    pub fn json(&self) -> String {
        let mt = |i: usize| self.migratetypes.name(i as i32);
        let mut lines: Vec<String> = self
            .fallbacks()
            .iter()
            .map(|f| {
                let (a, b) = (mt(f.alloc), mt(f.fallback));
                serde_json::to_string(&ExtfragJson {
                    kind: "extfrag",
                    alloc_migratetype: &a,
                    fallback_migratetype: &b,
                    fallbacks: f.count,
                    fragmenting: f.fragmenting,
                })
                .expect("extfrag serializes")
            })
            .collect();
        let t = self.totals;
        let s = SummaryJson {
            kind: "summary",
            duration_s: (self.duration_s * 1e6).round() / 1e6,
            alloc_by_order: &self.counters.alloc_by_order,
            fail_by_order: &self.counters.fail_by_order,
            dropped: self.counters.ringbuf_drops,
            events: t.failures.shown,
            undecodable: t.failures.undecodable,
            top_tasks: t
                .failures
                .top_tasks(self.top)
                .into_iter()
                .map(|((comm, pid), failures)| TaskJson {
                    comm,
                    pid: *pid,
                    failures,
                })
                .collect(),
            top_stacks: self
                .top_stacks()
                .into_iter()
                .map(|(stack, failures)| StackJson { failures, stack })
                .collect(),
            storm_aggregated: self.counters.storm_aggregated,
            hooks: self.hooks,
            kernel_reads: self.kernel_reads,
            verdicts: &t.verdicts,
            warned_failures: t.warned_failures,
            netns_failures: t.netns_failures,
            compaction: CompactionSummaryJson {
                direct: t.compaction_direct.summaries(),
                background: t.compaction_background.summary(),
                status: &t.compaction_status,
                attempts: &t.compaction_attempts,
                retries: t.compact_retries,
                kcompactd_wakes: self.counters.kcompactd_wakes,
                deferred: self.counters.compaction_deferred,
                stall_ns_by_order: self.stall_totals("compaction"),
            },
            reclaim: ReclaimSummaryJson {
                direct: t.reclaim.summaries(),
                reclaimed_pages: t.reclaimed_pages,
                stall_ns_by_order: self.stall_totals("reclaim"),
            },
            netns: NetnsSummaryJson {
                latency: t.netns_latency.summary(),
                failed: &t.netns_failed,
            },
            oom_kills: t.oom_kills,
            oom_kills_fragmentation_driven: t.oom_fragmentation_driven,
            slab_create_failures: &t.slab_failures,
            zones_first: self
                .zones
                .first
                .as_ref()
                .map(|s| SnapshotJson::new(&s.state)),
            zones_last: self
                .zones
                .latest
                .as_ref()
                .map(|s| SnapshotJson::new(&s.state)),
            hints: self.hints(),
            tracer: self.health,
            cut: self.cut,
        };
        lines.push(serde_json::to_string(&s).expect("summary serializes"));
        lines.join("\n")
    }

    pub fn text(&self) -> String {
        let c = self.counters;
        let t = self.totals;
        let mut s = String::new();
        let _ = writeln!(s, "\n=== fragtrace summary: {:.1} s ===", self.duration_s);
        let _ = writeln!(
            s,
            "{:>5} {:>14} {:>10} {:>12}",
            "order", "allocations", "failures", "failure rate"
        );
        for order in 0..ORDER_BUCKETS {
            let (a, f) = (c.alloc_by_order[order], c.fail_by_order[order]);
            if a == 0 && f == 0 {
                continue;
            }
            let label = if order == ORDER_BUCKETS - 1 {
                format!("{order}+")
            } else {
                order.to_string()
            };
            let _ = writeln!(s, "{label:>5} {a:>14} {f:>10} {:>12}", rate(f, a + f));
        }
        let _ = writeln!(
            s,
            "{:>5} {:>14} {:>10} {:>12}",
            "all",
            c.allocs(),
            c.failures(),
            rate(c.failures(), c.allocs() + c.failures())
        );
        if !t.verdicts.is_empty() {
            let v: Vec<String> = t.verdicts.iter().map(|(k, n)| format!("{k} {n}")).collect();
            let _ = writeln!(
                s,
                "\nverdicts: {}   warned (page allocation failure printed): {}   in netns creation: {}",
                v.join(", "),
                t.warned_failures,
                t.netns_failures
            );
        }
        let tasks = t.failures.top_tasks(self.top);
        if !tasks.is_empty() {
            let _ = writeln!(s, "\ntop failing tasks:");
            for ((comm, pid), n) in tasks {
                let _ = writeln!(s, "  {n:>8}  {comm}[{pid}]");
            }
        }
        if c.storm_aggregated > 0 {
            let _ = writeln!(
                s,
                "\n{} failures counted in the kernel (storm mode; by stack within --storm-stacks): \
                 too many per second to send one by one; no verdict or attribution for those",
                c.storm_aggregated
            );
        }
        let stacks = self.top_stacks();
        if !stacks.is_empty() {
            let _ = writeln!(s, "\ntop failing stacks:");
            for (stack, n) in stacks {
                let _ = writeln!(
                    s,
                    "  {n:>8}  {}",
                    stack.first().map_or("(no stack)", String::as_str)
                );
                for frame in stack.iter().skip(1).take(7) {
                    let _ = writeln!(s, "            {frame}");
                }
            }
        }
        latency_table(
            &mut s,
            "direct compaction stall per pass",
            &t.compaction_direct.summaries(),
        );
        if let Some(bg) = t.compaction_background.summary() {
            latency_table(&mut s, "kcompactd/proactive compaction passes", &[bg]);
        }
        if !t.compaction_attempts.is_empty() {
            let a: Vec<String> = t
                .compaction_attempts
                .iter()
                .map(|(o, n)| format!("order {o} x{n}"))
                .collect();
            let _ = writeln!(s, "\ndirect compaction attempts: {}", a.join(", "));
        }
        if !t.compaction_status.is_empty() || c.kcompactd_wakes > 0 || c.compaction_deferred > 0 {
            let st: Vec<String> = t
                .compaction_status
                .iter()
                .map(|(k, n)| format!("{k} {n}"))
                .collect();
            let _ = writeln!(
                s,
                "compaction results: {}; retries {}; kcompactd wakeups {}; deferred {}",
                if st.is_empty() {
                    "-".into()
                } else {
                    st.join(", ")
                },
                t.compact_retries,
                c.kcompactd_wakes,
                c.compaction_deferred
            );
        }
        latency_table(&mut s, "direct reclaim stall", &t.reclaim.summaries());
        for what in ["compaction", "reclaim"] {
            let totals = self.stall_totals(what);
            if !totals.is_empty() {
                let by: Vec<String> = totals
                    .iter()
                    .map(|(o, ns)| format!("order {o} {}", human_ns(*ns)))
                    .collect();
                let _ = writeln!(s, "direct {what} stall in all (kernel): {}", by.join(", "));
            }
        }
        if t.reclaimed_pages > 0 {
            let _ = writeln!(s, "pages reclaimed directly: {}", t.reclaimed_pages);
        }
        if let Some(l) = t.netns_latency.summary() {
            latency_table(&mut s, "netns creation latency", &[l]);
        }
        if !t.netns_failed.is_empty() {
            let f: Vec<String> = t
                .netns_failed
                .iter()
                .map(|(k, n)| format!("{k} x{n}"))
                .collect();
            let _ = writeln!(s, "netns creations failed: {}", f.join(", "));
        }
        let fallbacks = self.fallbacks();
        if !fallbacks.is_empty() {
            let _ = writeln!(
                s,
                "\nmigratetype fallbacks (fragmenting = below pageblock order):"
            );
            for f in fallbacks {
                let _ = writeln!(
                    s,
                    "  {:>12} -> {:<12} {:>10}  fragmenting {}",
                    self.migratetypes.name(f.alloc as i32),
                    self.migratetypes.name(f.fallback as i32),
                    f.count,
                    f.fragmenting
                );
            }
        }
        if t.oom_kills > 0 {
            let _ = writeln!(
                s,
                "\nOOM kills: {} ({} with memory free: fragmentation-driven)",
                t.oom_kills, t.oom_fragmentation_driven
            );
        }
        for (cache, n) in &t.slab_failures {
            let _ = writeln!(s, "slab cache creation failed: {cache} x{n}");
        }
        zone_movement(&mut s, self.zones);
        let hints = self.hints();
        if !hints.is_empty() {
            let _ = writeln!(s, "\nwhat to do:");
            for h in hints {
                let _ = writeln!(s, "  - {h}");
            }
        }
        let _ = writeln!(
            s,
            "\nevents shown: {}   dropped in kernel (ring buffer full): {}   undecodable: {}",
            t.failures.shown, c.ringbuf_drops, t.failures.undecodable
        );
        for line in self.kernel_reads.inactive() {
            let _ = writeln!(s, "fragtrace {line}");
        }
        health_text(&mut s, self.health);
        if let Some(cut) = self.cut {
            let _ = writeln!(
                s,
                "recording incomplete: {cut}; the figures above stop there"
            );
        }
        s
    }
}

fn latency_table(s: &mut String, title: &str, rows: &[LatencySummary]) {
    if rows.is_empty() {
        return;
    }
    let _ = writeln!(s, "\n{title}:");
    let _ = writeln!(
        s,
        "  {:>5} {:>8} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "order", "count", "p50", "p90", "p99", "max", "total"
    );
    for r in rows {
        let _ = writeln!(
            s,
            "  {:>5} {:>8} {:>9} {:>9} {:>9} {:>9} {:>9}",
            r.order.map_or("-".into(), |o| o.to_string()),
            r.count,
            human_ns(r.p50_ns),
            human_ns(r.p90_ns),
            human_ns(r.p99_ns),
            human_ns(r.max_ns),
            human_ns(r.total_ns)
        );
    }
}

/// What fragtrace shed after the ring buffer, `fell behind: ...`; None when nothing was.
pub fn fell_behind(h: &TracerHealth) -> Option<String> {
    (h.shed() > 0).then(|| {
        format!(
            "fell behind: {} records shed after the ring buffer, {} lines not written \
             (output too slow), {} records not recorded",
            h.drain_shed, h.output_shed, h.recording_shed
        )
    })
}

/// What fragtrace lost or suffered itself, when it lost or suffered anything.
fn health_text(s: &mut String, h: &TracerHealth) {
    if let Some(line) = fell_behind(h) {
        let _ = writeln!(s, "fragtrace {line}");
    }
    if let Some(lag) = &h.output_lag {
        let _ = writeln!(
            s,
            "output lag (kernel event to line written): p50 {} p99 {} max {}",
            human_ns(lag.p50_ns),
            human_ns(lag.p99_ns),
            human_ns(lag.max_ns)
        );
        let stages = [
            ("drained", &h.stage_lag.drained),
            ("taken up", &h.stage_lag.picked_up),
            ("analysed", &h.stage_lag.analysed),
        ];
        let p99s: Vec<String> = stages
            .iter()
            .filter_map(|(name, l)| Some(format!("{name} {}", human_ns(l.as_ref()?.p99_ns))))
            .collect();
        if !p99s.is_empty() {
            let _ = writeln!(s, "  p99 by stage: {}", p99s.join(", "));
        }
        let spent = |t: &crate::health::TimeSpent| {
            format!(
                "{} in {} (longest {})",
                human_ns(t.total_ns),
                t.count,
                human_ns(t.max_ns)
            )
        };
        if !h.batches.is_empty() {
            let _ = writeln!(
                s,
                "  analysis: {} batches; /proc and cgroupfs reads {}; zone reads {}",
                spent(&h.batches),
                spent(&h.host_reads),
                spent(&h.zone_reads)
            );
        }
    }
    for e in [&h.oom_score_adj_error, &h.memory_lock_error]
        .into_iter()
        .flatten()
    {
        let _ = writeln!(s, "fragtrace self-protection: {e}");
    }
}

/// Free memory and largest free block per zone, first sample against last.
fn zone_movement(s: &mut String, zones: &ZoneHistory) {
    let (Some(first), Some(last)) = (
        zones.first.as_ref().map(|z| &z.state),
        zones.latest.as_ref().map(|z| &z.state),
    ) else {
        return;
    };
    let _ = writeln!(
        s,
        "\nzones, start -> end of the run ({} reads of /proc):",
        zones.samples
    );
    let _ = writeln!(
        s,
        "  {:<14} {:>23} {:>14} {:>8}",
        "zone", "free kB", "largest order", "min kB"
    );
    for z in &last.zones {
        let before = first
            .zones
            .iter()
            .find(|b| b.node == z.node && b.zone == z.zone);
        let kb = |st: &crate::zones::ZoneState, zz: &crate::zones::Zone| {
            zz.free_pages.map_or("?".into(), |p| st.kb(p).to_string())
        };
        let order = |zz: &crate::zones::Zone| {
            zz.largest_free_order()
                .map_or("none".into(), |o| o.to_string())
        };
        let _ = writeln!(
            s,
            "  {:<14} {:>10} -> {:<9} {:>5} -> {:<5} {:>8}",
            z.label(),
            before.map_or("?".into(), |b| kb(first, b)),
            kb(last, z),
            before.map_or("?".into(), order),
            order(z),
            z.min_pages.map_or("?".into(), |p| last.kb(p).to_string()),
        );
    }
}

fn rate(failures: u64, total: u64) -> String {
    if total == 0 {
        return "-".into();
    }
    let pct = failures as f64 * 100.0 / total as f64;
    if failures > 0 && pct < 0.001 {
        "<0.001%".into()
    } else {
        format!("{pct:.3}%")
    }
}
