//! Benchmark workloads beside fault-bench and syscall-bench, for `cargo xtask bench`'s matrix.
//! Each runs OPS operations as fast as one thread can and prints
//! `{"workload":W,"ops":N,"seconds":S,"ns_per_op":X}`:
//! - `fork`: fork(), the child _exit(0)s at once, waitpid();
//! - `netns`: unshare(CLONE_NEWNET), a new network namespace each time (the previous one is
//!   released and torn down by the kernel's netns workqueue);
//! - `tcp`: one 64 KiB write on a loopback TCP connection and its full read by a second thread
//!   (a transfer of OPS x 64 KiB; the receiver runs on the same CPU when the caller pins).
//!
//! usage: ops-bench fork|netns|tcp OPS
use std::{
    io::{Read, Write},
    net::{TcpListener, TcpStream},
    time::Instant,
};

const TCP_CHUNK: usize = 64 * 1024;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(workload), Some(Ok(ops))) = (args.first(), args.get(1).map(|n| n.parse::<u64>()))
    else {
        eprintln!("usage: ops-bench fork|netns|tcp OPS");
        std::process::exit(2);
    };
    let started = Instant::now();
    let result = match workload.as_str() {
        "fork" => fork(ops),
        "netns" => netns(ops),
        "tcp" => tcp(ops),
        other => Err(format!("unknown workload {other}")),
    };
    if let Err(e) = result {
        eprintln!("ops-bench {workload}: {e}");
        std::process::exit(1);
    }
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "{{\"workload\":\"{workload}\",\"ops\":{ops},\"seconds\":{seconds:.4},\"ns_per_op\":{:.1}}}",
        seconds * 1e9 / ops.max(1) as f64
    );
}

fn fork(ops: u64) -> Result<(), String> {
    for _ in 0..ops {
        // SAFETY: the child only calls _exit.
        match unsafe { libc::fork() } {
            -1 => return Err(format!("fork: {}", std::io::Error::last_os_error())),
            // SAFETY: async-signal-safe.
            0 => unsafe { libc::_exit(0) },
            pid => {
                let mut status = 0;
                // SAFETY: reaping our own child.
                if unsafe { libc::waitpid(pid, &mut status, 0) } != pid {
                    return Err(format!("waitpid: {}", std::io::Error::last_os_error()));
                }
            }
        }
    }
    Ok(())
}

fn netns(ops: u64) -> Result<(), String> {
    for _ in 0..ops {
        // SAFETY: affects only this (single-threaded) process's namespaces.
        if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
            return Err(format!("unshare: {}", std::io::Error::last_os_error()));
        }
    }
    Ok(())
}

fn tcp(ops: u64) -> Result<(), String> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("bind: {e}"))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let receiver = std::thread::spawn(move || -> Result<u64, String> {
        let (mut conn, _) = listener.accept().map_err(|e| format!("accept: {e}"))?;
        let mut buf = vec![0u8; TCP_CHUNK];
        let mut total = 0u64;
        loop {
            match conn.read(&mut buf) {
                Ok(0) => return Ok(total),
                Ok(n) => total += n as u64,
                Err(e) => return Err(format!("read: {e}")),
            }
        }
    });
    let mut conn = TcpStream::connect(addr).map_err(|e| format!("connect: {e}"))?;
    let chunk = vec![0x5au8; TCP_CHUNK];
    for _ in 0..ops {
        conn.write_all(&chunk).map_err(|e| format!("write: {e}"))?;
    }
    drop(conn);
    let received = receiver.join().map_err(|_| "receiver panicked")??;
    if received != ops * TCP_CHUNK as u64 {
        return Err(format!(
            "received {received} of {} bytes",
            ops * TCP_CHUNK as u64
        ));
    }
    Ok(())
}
