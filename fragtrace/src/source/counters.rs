//! The per-CPU counters the kernel side bumps, summed over CPUs.
use anyhow::{Context, Result};
use aya::maps::{Map, MapData, PerCpuArray};
use fragtrace_common::{MIGRATE_SLOTS, ORDER_BUCKETS, counter};

pub struct Counters {
    map: PerCpuArray<MapData, u64>,
}

/// One reading of all counters.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CounterValues {
    pub alloc_by_order: [u64; ORDER_BUCKETS],
    pub fail_by_order: [u64; ORDER_BUCKETS],
    pub ringbuf_drops: u64,
    /// `mm_page_alloc_extfrag` per `alloc_mt * MIGRATE_SLOTS + fallback_mt`.
    pub extfrag: Vec<u64>,
    /// The same, only the fallbacks below pageblock order.
    pub extfrag_fragmenting: Vec<u64>,
    pub kcompactd_wakes: u64,
    pub compaction_deferred: u64,
    /// Failures counted by stack in the kernel instead of sent as records (storm mode).
    #[serde(default)]
    pub storm_aggregated: u64,
    /// Per stack aggregation (failures, stalls, allocations, fallbacks): updates lost because
    /// its map was full.
    #[serde(default)]
    pub aggregation_full: [u64; fragtrace_common::aggregation::COUNT as usize],
}

impl CounterValues {
    pub fn allocs(&self) -> u64 {
        self.alloc_by_order.iter().sum()
    }

    pub fn failures(&self) -> u64 {
        self.fail_by_order.iter().sum()
    }
}

impl Counters {
    pub fn new(map: Map) -> Result<Self> {
        Ok(Self {
            map: PerCpuArray::try_from(map).context("COUNTERS is not a per-CPU array")?,
        })
    }

    pub fn read(&self) -> Result<CounterValues> {
        let sum = |index: u32| -> Result<u64> {
            let per_cpu = self
                .map
                .get(&index, 0)
                .with_context(|| format!("cannot read counter {index}"))?;
            Ok(per_cpu.iter().sum())
        };
        let mut values = CounterValues::default();
        for order in 0..ORDER_BUCKETS as u32 {
            values.alloc_by_order[order as usize] = sum(counter::ALLOC_BASE + order)?;
            values.fail_by_order[order as usize] = sum(counter::FAIL_BASE + order)?;
        }
        values.ringbuf_drops = sum(counter::RINGBUF_DROPS)?;
        for pair in 0..(MIGRATE_SLOTS * MIGRATE_SLOTS) as u32 {
            values.extfrag.push(sum(counter::EXTFRAG_BASE + pair)?);
            values
                .extfrag_fragmenting
                .push(sum(counter::EXTFRAG_FRAGMENTING_BASE + pair)?);
        }
        values.kcompactd_wakes = sum(counter::KCOMPACTD_WAKES)?;
        values.compaction_deferred = sum(counter::COMPACTION_DEFERRED)?;
        values.storm_aggregated = sum(counter::STORM_AGGREGATED)?;
        for (i, lost) in values.aggregation_full.iter_mut().enumerate() {
            *lost = sum(counter::AGG_FULL_BASE + i as u32)?;
        }
        Ok(values)
    }
}
