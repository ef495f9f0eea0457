//! fragtrace's kernel side. Each program is a thin wrapper over a handler; user space attaches
//! each hook with the first method this kernel accepts.
#![no_std]
#![no_main]
// atomic_xadd: the BPF target has no compare-and-swap, so no AtomicU64::fetch_add.
#![allow(internal_features)]
#![feature(core_intrinsics)]

mod bench_floor;
mod compaction;
mod maps;
mod memcg;
mod netns;
mod oom;
mod page_alloc;
mod slab;
mod stacks;
mod warn;
mod zones;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

/// The crates' MIT side plus GPL, which the kernel requires for the GPL-only helpers used here
/// (`bpf_probe_read_kernel`, `bpf_get_stack`); it accepts "Dual MIT/GPL" as GPL-compatible.
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
