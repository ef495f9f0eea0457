//! Latency histograms per order (HdrHistogram, nanoseconds, 2 significant digits: values within
//! 1 %). Each is allocated whole before tracing starts, 1 ns to an hour, and never grows: a
//! histogram allocated or resized while recording takes page faults, which in an incident wait
//! in direct reclaim (measured: most of fragtrace's faults under the VM survive scenario).
use std::collections::BTreeMap;

use hdrhistogram::Histogram;
use serde::Serialize;

pub struct LatencyByOrder {
    per_order: BTreeMap<u32, Histogram<u64>>,
}

/// Orders whose histograms exist from the start (the buddy allocator's, up to 10 on most
/// kernels); a higher one gets its histogram when first seen.
const ORDERS_AHEAD: u32 = 10;

impl Default for LatencyByOrder {
    fn default() -> Self {
        Self {
            per_order: (0..=ORDERS_AHEAD).map(|o| (o, bounded())).collect(),
        }
    }
}

/// Percentiles of one histogram, in nanoseconds.
#[derive(Clone, Debug, Serialize, serde::Deserialize, PartialEq)]
pub struct LatencySummary {
    pub order: Option<u32>,
    pub count: u64,
    pub p50_ns: u64,
    pub p90_ns: u64,
    pub p99_ns: u64,
    pub max_ns: u64,
    pub total_ns: u64,
}

impl LatencyByOrder {
    pub fn record(&mut self, order: u32, ns: u64) {
        self.per_order
            .entry(order)
            .or_insert_with(bounded)
            .saturating_record(ns.max(1));
    }

    pub fn summaries(&self) -> Vec<LatencySummary> {
        self.per_order
            .iter()
            .filter(|(_, h)| !h.is_empty())
            .map(|(&order, h)| summarize(Some(order), h))
            .collect()
    }
}

/// A histogram with no order dimension (e.g. netns creation latency).
pub struct Latency {
    inner: Histogram<u64>,
}

impl Default for Latency {
    fn default() -> Self {
        Self { inner: bounded() }
    }
}

impl Latency {
    pub fn record(&mut self, ns: u64) {
        self.inner.saturating_record(ns.max(1));
    }

    /// None until something is recorded.
    pub fn summary(&self) -> Option<LatencySummary> {
        (!self.inner.is_empty()).then(|| summarize(None, &self.inner))
    }
}

/// The largest value kept: an hour; longer ones count as an hour.
const MAX_NS: u64 = 3_600_000_000_000;

fn bounded() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_NS, 2).expect("valid bounds")
}

fn summarize(order: Option<u32>, h: &Histogram<u64>) -> LatencySummary {
    // The sum is approximate (bucket midpoints), to the histogram's 2 significant digits.
    let total = h
        .iter_recorded()
        .map(|v| v.value_iterated_to() * v.count_at_value())
        .sum();
    LatencySummary {
        order,
        count: h.len(),
        p50_ns: h.value_at_quantile(0.50),
        p90_ns: h.value_at_quantile(0.90),
        p99_ns: h.value_at_quantile(0.99),
        max_ns: h.max(),
        total_ns: total,
    }
}

/// `850ns`, `12.3us`, `4.56ms`, `1.20s`.
pub fn human_ns(ns: u64) -> String {
    match ns {
        0..1_000 => format!("{ns}ns"),
        1_000..1_000_000 => format!("{:.1}us", ns as f64 / 1e3),
        1_000_000..1_000_000_000 => format!("{:.2}ms", ns as f64 / 1e6),
        _ => format!("{:.2}s", ns as f64 / 1e9),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_per_order() {
        let mut h = LatencyByOrder::default();
        for i in 1..=100 {
            h.record(3, i * 1_000);
        }
        h.record(9, 5_000_000);
        let s = h.summaries();
        assert_eq!(s.len(), 2);
        assert_eq!((s[0].order, s[0].count), (Some(3), 100));
        let near = |v: u64, want: u64| (v as f64 - want as f64).abs() / want as f64 <= 0.01;
        assert!(near(s[0].p50_ns, 50_000), "{:?}", s[0]);
        assert!(near(s[0].p99_ns, 99_000), "{:?}", s[0]);
        assert!(near(s[0].max_ns, 100_000), "{:?}", s[0]);
        assert_eq!((s[1].order, s[1].count), (Some(9), 1));
    }

    /// Allocated whole up front: recording any value never resizes (an hour and beyond is
    /// kept as an hour), and nothing is reported until something is recorded.
    #[test]
    fn histograms_never_grow() {
        let mut l = Latency::default();
        assert!(l.summary().is_none());
        let before = l.inner.distinct_values();
        for ns in [0, 1, 999, 1_000_000_007, MAX_NS, u64::MAX] {
            l.record(ns);
        }
        assert_eq!(l.inner.distinct_values(), before);
        let s = l.summary().unwrap();
        assert_eq!(s.count, 6);
        assert!(
            s.max_ns >= MAX_NS && s.max_ns <= MAX_NS + MAX_NS / 100,
            "{s:?}"
        );
        let by_order = LatencyByOrder::default();
        assert!(by_order.summaries().is_empty());
    }

    #[test]
    fn human_units() {
        assert_eq!(human_ns(850), "850ns");
        assert_eq!(human_ns(12_345), "12.3us");
        assert_eq!(human_ns(4_560_000), "4.56ms");
        assert_eq!(human_ns(1_200_000_000), "1.20s");
    }
}
