//! The stack aggregations the kernel side keeps (stacks.rs there), read whole: failures past
//! the storm threshold, stalls with their time, high-order allocations, fragmenting fallbacks,
//! and the frames of every stack they point to.
use std::collections::BTreeMap;

use anyhow::{Context, Result};
use aya::maps::{HashMap, Map, MapData, StackTraceMap};
use fragtrace_common::{StackKey, StackValue};
use serde::{Deserialize, Serialize};

/// One aggregated stack with its counts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Aggregated {
    pub cgroup_id: u64,
    pub comm: String,
    /// Key into [`AggregatedStacks::stacks`]; negative when the kernel could not keep the
    /// stack (its map was full: -EEXIST or -ENOMEM).
    pub stack_id: i32,
    pub order: u32,
    /// Stalls: 1 compaction, 2 reclaim; fallbacks: `alloc_mt << 8 | fallback_mt`.
    pub tag: u32,
    pub count: u64,
    pub total_ns: u64,
}

/// Everything aggregated so far. A recording keeps it, so that `report` has the same stacks.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AggregatedStacks {
    pub failures: Vec<Aggregated>,
    pub stalls: Vec<Aggregated>,
    pub allocations: Vec<Aggregated>,
    pub fallbacks: Vec<Aggregated>,
    /// Stack id to its frames (kernel addresses, innermost first).
    pub stacks: BTreeMap<i32, Vec<u64>>,
}

impl AggregatedStacks {
    /// Every aggregation, for symbol lookups.
    pub fn all(&self) -> impl Iterator<Item = &Aggregated> {
        self.failures
            .iter()
            .chain(&self.stalls)
            .chain(&self.allocations)
            .chain(&self.fallbacks)
    }
}

pub struct StackMaps {
    stacks: StackTraceMap<MapData>,
    failures: HashMap<MapData, StackKey, StackValue>,
    stalls: HashMap<MapData, StackKey, StackValue>,
    allocations: HashMap<MapData, StackKey, StackValue>,
    fallbacks: HashMap<MapData, StackKey, StackValue>,
}

impl StackMaps {
    /// Takes the maps out of the loaded object.
    pub fn new(mut take: impl FnMut(&str) -> Result<Map>) -> Result<Self> {
        let hash = |m: Map, name: &str| {
            HashMap::try_from(m).with_context(|| format!("{name} is not a hash map"))
        };
        Ok(Self {
            stacks: StackTraceMap::try_from(take("STACKS")?)
                .context("STACKS is not a stack-trace map")?,
            failures: hash(take("FAIL_STACKS")?, "FAIL_STACKS")?,
            stalls: hash(take("STALL_STACKS")?, "STALL_STACKS")?,
            allocations: hash(take("ALLOC_STACKS")?, "ALLOC_STACKS")?,
            fallbacks: hash(take("FALLBACK_STACKS")?, "FALLBACK_STACKS")?,
        })
    }

    /// Reads every aggregation and the stacks they name.
    pub fn read(&self) -> AggregatedStacks {
        let mut out = AggregatedStacks {
            failures: entries(&self.failures),
            stalls: entries(&self.stalls),
            allocations: entries(&self.allocations),
            fallbacks: entries(&self.fallbacks),
            stacks: BTreeMap::new(),
        };
        let ids: Vec<i32> = out
            .all()
            .map(|a| a.stack_id)
            .filter(|&id| id >= 0)
            .collect();
        for id in ids {
            if out.stacks.contains_key(&id) {
                continue;
            }
            if let Ok(trace) = self.stacks.get(&(id as u32), 0) {
                out.stacks
                    .insert(id, trace.frames().iter().map(|f| f.ip).collect());
            }
        }
        out
    }
}

fn entries(map: &HashMap<MapData, StackKey, StackValue>) -> Vec<Aggregated> {
    let mut v: Vec<Aggregated> = map
        .iter()
        .filter_map(Result::ok)
        .map(|(k, v)| Aggregated {
            cgroup_id: k.cgroup_id,
            comm: c_str(&k.comm),
            stack_id: k.stack_id,
            order: k.order,
            tag: k.tag,
            count: v.count,
            total_ns: v.total_ns,
        })
        .collect();
    // Map order is arbitrary: sort so that output is stable.
    v.sort_by(|a, b| {
        (b.count, &a.comm, a.stack_id, a.order, a.tag, a.cgroup_id).cmp(&(
            a.count,
            &b.comm,
            b.stack_id,
            b.order,
            b.tag,
            b.cgroup_id,
        ))
    });
    v
}

fn c_str(comm: &[u8]) -> String {
    let end = comm.iter().position(|&b| b == 0).unwrap_or(comm.len());
    String::from_utf8_lossy(&comm[..end]).into_owned()
}
