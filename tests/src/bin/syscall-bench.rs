//! Benchmark workload for the syscall path: `getppid()` as fast as one thread can call it, the
//! cheapest system call there is, so that what any tracer adds to every system call (the
//! syscall-tracing slow path, for one) shows in full. Runs CALLS calls in CHUNKS equal chunks and
//! prints `{"calls":N,"seconds":S,"ns_per_call":X,"best_chunk_ns_per_call":Y}`: the whole run's
//! mean, and the fastest chunk's (the least disturbed by other tasks).
//!
//! usage: syscall-bench CALLS [CHUNKS]
use std::time::Instant;

fn main() {
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("usage: syscall-bench CALLS [CHUNKS]"))
        .collect();
    let calls = *args.first().expect("usage: syscall-bench CALLS [CHUNKS]");
    let chunks = args.get(1).copied().unwrap_or(10).clamp(1, calls.max(1));
    let per_chunk = calls / chunks;
    let mut best = f64::INFINITY;
    let started = Instant::now();
    for _ in 0..chunks {
        let t = Instant::now();
        for _ in 0..per_chunk {
            // SAFETY: getppid has no preconditions. Through syscall(2), not a libc wrapper that
            // might cache the answer.
            std::hint::black_box(unsafe { libc::syscall(libc::SYS_getppid) });
        }
        best = best.min(t.elapsed().as_nanos() as f64 / per_chunk as f64);
    }
    let seconds = started.elapsed().as_secs_f64();
    let done = per_chunk * chunks;
    println!(
        "{{\"calls\":{done},\"seconds\":{seconds:.4},\"ns_per_call\":{:.2},\"best_chunk_ns_per_call\":{best:.2}}}",
        seconds * 1e9 / done as f64
    );
}
