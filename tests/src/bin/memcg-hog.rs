//! Workload for the OOM test: joins a memory cgroup and touches anonymous memory 1 MiB at a
//! time until the cgroup's OOM killer ends it. Exits 0 only if it reached `MIB` without being
//! killed (then the limit did not hold).
//!
//! usage: memcg-hog CGROUP_DIR MIB
use std::fs;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (cgroup, mib): (&str, usize) = (&args[1], args[2].parse().expect("MIB"));
    fs::write(
        format!("{cgroup}/cgroup.procs"),
        std::process::id().to_string(),
    )
    .expect("join the cgroup");
    let mut held: Vec<Vec<u8>> = Vec::new();
    for _ in 0..mib {
        held.push(std::hint::black_box(vec![1u8; 1 << 20]));
    }
    println!("{}", held.len());
}
