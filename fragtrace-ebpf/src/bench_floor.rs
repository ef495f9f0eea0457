//! The benchmarks' floor: an empty program on `mm_page_alloc`, attached as fragtrace's own
//! page-allocation hook is (tp_btf). What it costs per allocation is the cost of any hook there;
//! fragtrace never loads it (only `cargo xtask bench`, through the `bench-floor` workload).
use aya_ebpf::{macros::btf_tracepoint, programs::BtfTracePointContext};

#[btf_tracepoint(function = "mm_page_alloc")]
pub fn bench_floor(_ctx: BtfTracePointContext) -> i32 {
    0
}
