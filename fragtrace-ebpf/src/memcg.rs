//! The failing task's memory-cgroup page counters, read at the failure.
//!
//! `current->cgroups->subsys[memory_cgrp_id]` is the task's `mem_cgroup` (by its `css`); its
//! `memory` page counter and every ancestor's (`page_counter.parent`) hold usage and max. A
//! charge fails at the first level without room, so the level with the least headroom is kept.
//! The offsets come from the kernel's BTF, set by user space at load time; `MEMCG_LAYOUT_KNOWN`
//! stays 0 when they could not be read, and then nothing is read here.

use aya_ebpf::helpers::bpf_get_current_task;
use fragtrace_common::{MEMCG_MAX_LEVELS, MemcgCounters};

use crate::maps::{load_const, read_kernel_u64};

#[unsafe(no_mangle)]
static MEMCG_LAYOUT_KNOWN: u32 = 0;
/// `offsetof(struct task_struct, cgroups)`.
#[unsafe(no_mangle)]
static TASK_CGROUPS_OFFSET: u32 = 0;
/// `offsetof(struct css_set, subsys) + memory_cgrp_id * sizeof(void *)`.
#[unsafe(no_mangle)]
static CSS_SET_MEMORY_SUBSYS_OFFSET: u32 = 0;
/// `offsetof(struct mem_cgroup, memory) - offsetof(struct mem_cgroup, css)`.
#[unsafe(no_mangle)]
static MEMCG_CSS_TO_COUNTER: u32 = 0;
/// `offsetof(struct page_counter, usage | max | parent)`.
#[unsafe(no_mangle)]
static COUNTER_USAGE_OFFSET: u32 = 0;
#[unsafe(no_mangle)]
static COUNTER_MAX_OFFSET: u32 = 0;
#[unsafe(no_mangle)]
static COUNTER_PARENT_OFFSET: u32 = 0;
/// `offsetof(struct cgroup_subsys_state, cgroup)`, `offsetof(struct cgroup, kn)`,
/// `offsetof(struct kernfs_node, id)`: the cgroup directory's inode number.
#[unsafe(no_mangle)]
static CSS_CGROUP_OFFSET: u32 = 0;
#[unsafe(no_mangle)]
static CGROUP_KN_OFFSET: u32 = 0;
#[unsafe(no_mangle)]
static KERNFS_ID_OFFSET: u32 = 0;

#[inline(always)]
fn read_u64(base: u64, offset: u32) -> Option<u64> {
    read_kernel_u64(base + offset as u64)
}

/// The counters of the current task's memory cgroup level with the least headroom.
#[inline(always)]
pub fn current_memcg_counters() -> MemcgCounters {
    let mut best = MemcgCounters::default();
    if load_const(&MEMCG_LAYOUT_KNOWN) == 0 {
        return best;
    }
    // SAFETY: helper without preconditions.
    let task = unsafe { bpf_get_current_task() };
    let Some(css_set) = read_u64(task, load_const(&TASK_CGROUPS_OFFSET)) else {
        return best;
    };
    let Some(css) = read_u64(css_set, load_const(&CSS_SET_MEMORY_SUBSYS_OFFSET)) else {
        return best;
    };
    if css == 0 {
        return best;
    }
    let css_to_counter = load_const(&MEMCG_CSS_TO_COUNTER) as u64;
    let mut counter = css + css_to_counter;
    let mut best_counter = 0;
    let mut best_headroom = u64::MAX;
    for level in 0..MEMCG_MAX_LEVELS {
        let (Some(usage), Some(max)) = (
            read_u64(counter, load_const(&COUNTER_USAGE_OFFSET)),
            read_u64(counter, load_const(&COUNTER_MAX_OFFSET)),
        ) else {
            break;
        };
        let headroom = max.saturating_sub(usage);
        if headroom < best_headroom {
            best_headroom = headroom;
            best_counter = counter;
            best = MemcgCounters {
                usage_pages: usage,
                max_pages: max,
                cgroup_ino: 0,
                level,
                valid: 1,
            };
        }
        match read_u64(counter, load_const(&COUNTER_PARENT_OFFSET)) {
            Some(parent) if parent != 0 => counter = parent,
            _ => break,
        }
    }
    if best_counter != 0 {
        // Every counter on the parent chain is the `memory` member of a mem_cgroup.
        best.cgroup_ino = read_u64(
            best_counter - css_to_counter,
            load_const(&CSS_CGROUP_OFFSET),
        )
        .and_then(|cgroup| read_u64(cgroup, load_const(&CGROUP_KN_OFFSET)))
        .and_then(|kn| read_u64(kn, load_const(&KERNFS_ID_OFFSET)))
        .unwrap_or(0);
    }
    best
}
