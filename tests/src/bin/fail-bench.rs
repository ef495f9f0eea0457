//! Benchmark workload for the failure path: joins a v1 memory cgroup, fills it to 2 MiB below
//! its limit, resizes pipes to 16 MiB (`F_SETPIPE_SZ`) until one fails, then asks that pipe
//! again and again for SECONDS.
//! Each call is one order-6 allocation whose memory-cgroup charge fails. Prints
//! `{"failures":N,"seconds":S,"failures_per_sec":R}`.
//!
//! usage: fail-bench CGROUP_DIR SECONDS
use std::{
    fs,
    time::{Duration, Instant},
};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (cgroup, seconds): (&str, f64) = (
        &args[1],
        args[2]
            .parse()
            .expect("usage: fail-bench CGROUP_DIR SECONDS"),
    );
    fs::write(
        format!("{cgroup}/cgroup.procs"),
        std::process::id().to_string(),
    )
    .expect("join the cgroup");
    let read = |f: &str| -> u64 {
        fs::read_to_string(format!("{cgroup}/{f}"))
            .unwrap_or_else(|e| panic!("{cgroup}/{f}: {e}"))
            .trim()
            .parse()
            .unwrap()
    };
    let limit = read("memory.limit_in_bytes");
    let mut held: Vec<Vec<u8>> = Vec::new();
    while read("memory.usage_in_bytes") + (2 << 20) + (256 << 10) <= limit {
        held.push(std::hint::black_box(vec![1u8; 256 << 10]));
    }
    // Pipes resized until the first failure stay open: their rings hold the last headroom.
    let mut fds = [0i32; 2];
    let mut kept = Vec::new();
    loop {
        // SAFETY: valid array for pipe(2); fcntl on a pipe this process owns.
        unsafe {
            assert_eq!(libc::pipe(fds.as_mut_ptr()), 0, "pipe");
            if libc::fcntl(fds[0], libc::F_SETPIPE_SZ, 16 << 20) < 0 {
                break;
            }
        }
        kept.push(fds);
        assert!(
            kept.len() < 1000,
            "F_SETPIPE_SZ never fails: is the memory cgroup limited?"
        );
    }
    let (started, limit_time) = (Instant::now(), Duration::from_secs_f64(seconds));
    let mut failures = 0u64;
    while started.elapsed() < limit_time {
        for _ in 0..64 {
            // SAFETY: fcntl on a pipe this process owns.
            if unsafe { libc::fcntl(fds[0], libc::F_SETPIPE_SZ, 16 << 20) } < 0 {
                failures += 1;
            }
        }
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{{\"failures\":{failures},\"seconds\":{secs:.3},\"failures_per_sec\":{:.0}}}",
        failures as f64 / secs
    );
    drop(held);
}
