//! Latency histograms per order (HdrHistogram, nanoseconds, 3 significant digits).
use std::collections::BTreeMap;

use hdrhistogram::Histogram;
use serde::Serialize;

#[derive(Default)]
pub struct LatencyByOrder {
    per_order: BTreeMap<u32, Histogram<u64>>,
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
        let h = self
            .per_order
            .entry(order)
            .or_insert_with(|| Histogram::new(3).expect("3 significant digits is valid"));
        // Auto-resizing: `record` grows the range (`saturating_record` would clamp instead).
        let _ = h.record(ns.max(1));
    }

    pub fn summaries(&self) -> Vec<LatencySummary> {
        self.per_order
            .iter()
            .map(|(&order, h)| summarize(Some(order), h))
            .collect()
    }
}

/// A histogram with no order dimension (e.g. netns creation latency).
#[derive(Default)]
pub struct Latency {
    inner: Option<Histogram<u64>>,
}

impl Latency {
    pub fn record(&mut self, ns: u64) {
        let _ = self
            .inner
            .get_or_insert_with(|| Histogram::new(3).expect("valid"))
            .record(ns.max(1));
    }

    pub fn summary(&self) -> Option<LatencySummary> {
        self.inner.as_ref().map(|h| summarize(None, h))
    }
}

fn summarize(order: Option<u32>, h: &Histogram<u64>) -> LatencySummary {
    // The sum is approximate (bucket midpoints), to HdrHistogram's 3 significant digits.
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

    #[test]
    fn human_units() {
        assert_eq!(human_ns(850), "850ns");
        assert_eq!(human_ns(12_345), "12.3us");
        assert_eq!(human_ns(4_560_000), "4.56ms");
        assert_eq!(human_ns(1_200_000_000), "1.20s");
    }
}
