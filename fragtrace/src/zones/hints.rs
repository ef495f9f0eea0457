//! Remediation hints that fit a verdict, with the caveats the seeds learnt the hard way.
use super::verdict::VerdictKind;

const COMPACT_MEMORY: &str = "echo 1 > /proc/sys/vm/compact_memory compacts every zone now; it is \
     expensive (it walks all memory and can stall services for seconds), so run it off-peak and \
     never in a loop";
const DROP_CACHES: &str = "echo 3 > /proc/sys/vm/drop_caches lets freed page cache and slab pages \
     merge into larger blocks, but it is only a stopgap: caches refill, costing I/O, and the \
     fragmentation returns";
const PROACTIVENESS: &str = "vm.compaction_proactiveness (5.9+, default 20): raise it (e.g. 40-60) \
     so kcompactd keeps high-order blocks free in the background";
const EXTFRAG: &str = "vm.extfrag_threshold (default 500): lower it (e.g. 300-400) so the kernel \
     compacts instead of reclaiming when a high-order request fails for fragmentation";
const WATERMARK_SCALE: &str = "vm.watermark_scale_factor (default 10 = 0.1% of memory): raise it \
     (e.g. 100-200) so kswapd wakes earlier and leaves compaction free pages to work with";
const MIN_FREE: &str = "vm.min_free_kbytes: raising it keeps more memory (and whole pageblocks) \
     free for atomic and high-order requests, at the cost of that memory";

/// The hints for a verdict, most useful first.
pub fn for_verdict(kind: VerdictKind) -> Vec<&'static str> {
    match kind {
        VerdictKind::Fragmentation => vec![
            PROACTIVENESS,
            EXTFRAG,
            WATERMARK_SCALE,
            MIN_FREE,
            COMPACT_MEMORY,
            DROP_CACHES,
        ],
        VerdictKind::Exhaustion => vec![
            "free memory was at the min watermark: find the consumer (slab in /proc/slabinfo, \
             anon or page cache in /proc/meminfo) or add memory; compaction cannot help",
            WATERMARK_SCALE,
            MIN_FREE,
            DROP_CACHES,
        ],
        VerdictKind::MemcgLimit => vec![
            "the task's memory cgroup was at its limit: raise memory.max (v2) or \
             memory.limit_in_bytes (v1), or reduce the group's usage; kernel memory (slab, \
             stacks) is charged too",
        ],
        VerdictKind::Unknown => vec![
            "run `fragtrace snapshot` while failures happen, or the live tracer, to capture the \
             zone state at the failure",
        ],
    }
}

/// A hint that applies when netns creation hit the failure.
pub const NETNS: &str = "the failure came from network namespace creation (nf_conntrack sets up \
     per-namespace tables and, before 4.7, a slab cache per namespace); creating fewer \
     namespaces at once, or a newer kernel, avoids these high-order requests";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fragmentation_hints_carry_the_caveats() {
        let hints = for_verdict(VerdictKind::Fragmentation).join("\n");
        for needle in [
            "compaction_proactiveness",
            "watermark_scale_factor",
            "min_free_kbytes",
            "extfrag_threshold",
            "expensive",
            "stopgap",
        ] {
            assert!(hints.contains(needle), "missing {needle}");
        }
    }
}
