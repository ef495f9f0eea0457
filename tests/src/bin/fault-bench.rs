//! Benchmark workload: page faults as fast as one thread can take them. Maps MIB MiB of
//! anonymous memory without transparent hugepages, touches every page (one order-0 allocation
//! each), unmaps, ROUNDS times. Prints `{"pages":N,"seconds":S,"pages_per_sec":R}`.
//!
//! usage: fault-bench MIB ROUNDS
use std::time::Instant;

fn main() {
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("usage: fault-bench MIB ROUNDS"))
        .collect();
    let (bytes, rounds) = ((args[0] << 20) as usize, args[1]);
    let page = 4096;
    let started = Instant::now();
    for _ in 0..rounds {
        // SAFETY: a fresh private anonymous mapping, touched within bounds, then unmapped.
        unsafe {
            let p = libc::mmap(
                std::ptr::null_mut(),
                bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            );
            assert_ne!(p, libc::MAP_FAILED, "mmap");
            libc::madvise(p, bytes, libc::MADV_NOHUGEPAGE);
            let base = p.cast::<u8>();
            for off in (0..bytes).step_by(page) {
                std::ptr::write_volatile(base.add(off), 1);
            }
            libc::munmap(p, bytes);
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    let pages = rounds * (bytes / page) as u64;
    println!(
        "{{\"pages\":{pages},\"seconds\":{seconds:.4},\"pages_per_sec\":{:.0}}}",
        pages as f64 / seconds
    );
}
