//! Workload for the memcg test: joins a memory cgroup (v1 or v2), fills it with anonymous memory
//! up to a margin below its limit, then asks for 16 MiB pipe buffers (`F_SETPIPE_SZ`) until they fail.
//! Each call needs an order-6 `GFP_KERNEL_ACCOUNT|__GFP_COMP` allocation that the memcg charge
//! refuses once the limit is reached. Prints `{"pid":P,"enomem":N,"ok":M}` on stdout.
//!
//! Then it holds its memory for HOLD seconds (default 0), so that a tracer finds it alive.
//!
//! usage: pipe-pressure CGROUP_DIR CALLS [HOLD]
use std::{fs, io::Write};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let cgroup = &args[1];
    let calls: usize = args[2].parse().expect("CALLS");
    fs::write(
        format!("{cgroup}/cgroup.procs"),
        std::process::id().to_string(),
    )
    .expect("join the cgroup");
    // v2 names the files memory.max and memory.current.
    let v2 = fs::exists(format!("{cgroup}/memory.max")).unwrap_or(false);
    let (limit_file, usage_file) = if v2 {
        ("memory.max", "memory.current")
    } else {
        ("memory.limit_in_bytes", "memory.usage_in_bytes")
    };
    let limit: u64 = read_u64(&format!("{cgroup}/{limit_file}"));

    // Fill to 2 MiB below the limit, 256 KiB at a time, touching every page.
    let chunk = 256 * 1024;
    let mut held: Vec<Vec<u8>> = Vec::new();
    while read_u64(&format!("{cgroup}/{usage_file}")) + 2 * 1024 * 1024 + chunk as u64 <= limit {
        held.push(vec![1u8; chunk]);
    }

    let mut pipes = Vec::new();
    let (mut ok, mut enomem) = (0, 0);
    for _ in 0..calls {
        let mut fds = [0i32; 2];
        // SAFETY: valid array for pipe(2).
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0, "pipe");
        // SAFETY: fcntl on a pipe fd we own.
        let rc = unsafe { libc::fcntl(fds[0], libc::F_SETPIPE_SZ, 16 << 20) };
        if rc >= 0 {
            ok += 1;
        } else if std::io::Error::last_os_error().raw_os_error() == Some(libc::ENOMEM) {
            enomem += 1;
        } else {
            panic!("F_SETPIPE_SZ: {}", std::io::Error::last_os_error());
        }
        pipes.push(fds); // kept open: each success keeps its charge
    }
    println!(
        "{{\"pid\":{},\"enomem\":{enomem},\"ok\":{ok}}}",
        std::process::id()
    );
    std::io::stdout().flush().unwrap();
    let hold: f64 = args
        .get(3)
        .map_or(0.0, |h| h.parse().expect("HOLD seconds"));
    std::thread::sleep(std::time::Duration::from_secs_f64(hold));
    drop(held);
}

fn read_u64(path: &str) -> u64 {
    fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{path}: {e}"))
        .trim()
        .parse()
        .unwrap()
}
