//! Synthetic failure storm: drives a running fragtrace's own `page_alloc_raw` program (the raw
//! tracepoint form of its `kmem:mm_page_alloc` hook, loaded with `--force-method raw_tp`) with
//! BPF_PROG_TEST_RUN, one call per failed allocation, the tracepoint's arguments given as
//! `[page = NULL, order, gfp, migratetype]`. The program runs in the calling thread, so the
//! failure is this task's: its comm (`--comm`, default `storm-producer`), pid and cgroup. Every
//! call the kernel answered 0 (the program ran) is counted; the count is exact.
//!
//! Threads are pinned round robin to the CPUs this process may use. `--rate R` paces the calls
//! to R per second in all (evenly between threads); without it they run as fast as they can.
//! The program's own bpf_stats (`run_time_ns`, `run_cnt`, non-zero only while
//! kernel.bpf_stats_enabled is on) are read just before the first call and just after the last,
//! so their differences cover the calls and whatever else ran the program meanwhile (the
//! tracepoint itself, on every page allocation of the machine). `--baseline S` first measures
//! that for S seconds without calls, so that it can be told apart. `--bpf-stats` turns the
//! statistics on for the producer's lifetime (BPF_ENABLE_STATS, Linux 5.8+) whatever the sysctl.
//!
//! Prints one JSON line: `{"calls","errors","first_error","seconds","rate","threads","order",
//! "gfp","migratetype","comm","pid","tracer_pid","prog_id","prog_run_cnt","prog_run_time_ns",
//! "baseline_seconds","baseline_run_cnt","baseline_run_time_ns","per_thread":[{"cpu","calls",
//! "errors"}]}`.
//!
//! usage: storm-producer [--pid PID] [--threads N] [--seconds S] [--rate R] [--order O]
//!        [--gfp G] [--migratetype M] [--comm NAME] [--baseline S] [--bpf-stats]
use std::{
    ffi::CString,
    os::fd::{AsFd, AsRawFd},
    sync::{Arc, Barrier},
    time::{Duration, Instant},
};

use aya::programs::ProgramFd;
use fragtrace::source::program_stats::{self, ProgramCost};

const USAGE: &str = "usage: storm-producer [--pid PID] [--threads N] [--seconds S] [--rate R] \
                     [--order O] [--gfp G] [--migratetype M] [--comm NAME] [--baseline S] [--bpf-stats]";

/// The program to drive, by its name in the kernel (BPF_OBJ_NAME_LEN allows 15 characters).
const PROGRAM: &str = "page_alloc_raw";

// enum bpf_cmd and bpf_prog_type values (include/uapi/linux/bpf.h). aya loads and inspects
// programs but has no public BPF_PROG_TEST_RUN.
const BPF_PROG_TEST_RUN: libc::c_long = 10;
const BPF_PROG_TYPE_RAW_TRACEPOINT: u32 = 17;

/// `union bpf_attr` for BPF_PROG_TEST_RUN (the `test` member).
#[allow(dead_code)] // The kernel's layout: every field is passed, not all are read here.
#[repr(C)]
#[derive(Default)]
struct TestRunAttr {
    prog_fd: u32,
    retval: u32,
    data_size_in: u32,
    data_size_out: u32,
    data_in: u64,
    data_out: u64,
    repeat: u32,
    duration: u32,
    ctx_size_in: u32,
    ctx_size_out: u32,
    ctx_in: u64,
    ctx_out: u64,
    flags: u32,
    cpu: u32,
    batch_size: u32,
    _pad: u32,
}

const _: () = assert!(std::mem::size_of::<TestRunAttr>() == 80);

fn sys_bpf<T>(cmd: libc::c_long, attr: &mut T) -> Result<libc::c_long, std::io::Error> {
    // SAFETY: `attr` is a valid, initialized bpf_attr prefix of its own size; the kernel reads
    // (and for some commands writes) only that many bytes.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut T as *mut libc::c_void,
            std::mem::size_of::<T>() as libc::c_uint,
        )
    };
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

struct Args {
    pid: Option<u32>,
    threads: usize,
    seconds: f64,
    rate: Option<f64>,
    order: u64,
    gfp: u64,
    migratetype: u64,
    comm: String,
    baseline: f64,
    bpf_stats: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        pid: None,
        threads: 1,
        seconds: 3.0,
        rate: None,
        order: 6,
        // GFP_KERNEL | __GFP_NOWARN | __GFP_COMP on 6.x: any mask does, it is only decoded.
        gfp: 0x52cc0,
        migratetype: 0,
        comm: "storm-producer".into(),
        baseline: 0.0,
        bpf_stats: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "--help" || flag == "-h" {
            println!("{USAGE}");
            std::process::exit(0);
        }
        if flag == "--bpf-stats" {
            args.bpf_stats = true;
            continue;
        }
        let value = it
            .next()
            .ok_or_else(|| format!("{flag} needs a value; {USAGE}"))?;
        let bad = |e: &dyn std::fmt::Display| format!("{flag} {value}: {e}");
        match flag.as_str() {
            "--pid" => args.pid = Some(value.parse().map_err(|e| bad(&e))?),
            "--threads" => args.threads = value.parse().map_err(|e| bad(&e))?,
            "--seconds" => args.seconds = value.parse().map_err(|e| bad(&e))?,
            "--rate" => args.rate = Some(value.parse().map_err(|e| bad(&e))?),
            "--order" => args.order = value.parse().map_err(|e| bad(&e))?,
            "--gfp" => {
                args.gfp = match value.strip_prefix("0x") {
                    Some(hex) => u64::from_str_radix(hex, 16).map_err(|e| bad(&e))?,
                    None => value.parse().map_err(|e| bad(&e))?,
                }
            }
            "--migratetype" => args.migratetype = value.parse().map_err(|e| bad(&e))?,
            "--comm" => args.comm = value,
            "--baseline" => args.baseline = value.parse().map_err(|e| bad(&e))?,
            _ => return Err(format!("unknown option {flag}; {USAGE}")),
        }
    }
    if args.threads == 0 {
        return Err("--threads must be at least 1".into());
    }
    // A day at most, and at least one call a second: the durations derived stay representable.
    if !(args.seconds > 0.0 && args.seconds <= 86_400.0) {
        return Err("--seconds must be above 0, at most 86400".into());
    }
    if !(args.baseline >= 0.0 && args.baseline <= 86_400.0) {
        return Err("--baseline must be 0 to 86400 seconds".into());
    }
    if args.rate.is_some_and(|r| !(r >= 1.0 && r.is_finite())) {
        return Err("--rate must be at least 1 call per second".into());
    }
    if args.comm.is_empty() || args.comm.len() > 15 || args.comm.contains('\0') {
        return Err("--comm must be 1 to 15 bytes (the kernel's TASK_COMM_LEN)".into());
    }
    Ok(args)
}

/// The running fragtrace: the one given, or the only one there is.
fn tracer_pid(given: Option<u32>) -> Result<u32, String> {
    if let Some(pid) = given {
        return match std::fs::metadata(format!("/proc/{pid}")) {
            Ok(_) => Ok(pid),
            Err(_) => Err(format!("no process {pid}")),
        };
    }
    let found: Vec<u32> = program_stats::running_fragtraces()
        .iter()
        .map(|h| h.pid)
        .collect();
    match found.as_slice() {
        [] => Err("no fragtrace is running (start one with --force-method raw_tp)".into()),
        [pid] => Ok(*pid),
        several => Err(format!(
            "{} fragtraces are running ({several:?}): choose one with --pid",
            several.len()
        )),
    }
}

/// The `page_alloc_raw` program `pid` holds, opened by id, and its id.
fn find_program(pid: u32) -> Result<(ProgramFd, u32), String> {
    let ids = program_stats::program_ids_of(pid);
    if ids.is_empty() {
        return Err(format!(
            "process {pid} holds no BPF program (or /proc/{pid}/fdinfo is unreadable: run as root)"
        ));
    }
    let mut seen = Vec::new();
    // Programs unloaded meanwhile are skipped.
    for info in aya::programs::loaded_programs().flatten() {
        let id = info.id();
        if !ids.contains(&id) {
            continue;
        }
        let name = info.name_as_str().unwrap_or("?").to_string();
        if name == PROGRAM && info.program_type() as u32 == BPF_PROG_TYPE_RAW_TRACEPOINT {
            let fd = info
                .fd()
                .map_err(|e| format!("BPF_PROG_GET_FD_BY_ID {id}: {e}"))?;
            return Ok((fd, id));
        }
        seen.push(name);
    }
    Err(format!(
        "process {pid} holds no {PROGRAM} (raw_tp) program: run fragtrace with --force-method \
         raw_tp (it holds: {})",
        seen.join(", ")
    ))
}

/// The CPUs this process may run on.
fn allowed_cpus() -> Vec<usize> {
    // SAFETY: a zeroed cpu_set_t is valid; sched_getaffinity fills it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return vec![0];
        }
        (0..libc::CPU_SETSIZE as usize)
            .filter(|&c| libc::CPU_ISSET(c, &set))
            .collect()
    }
}

fn pin_to(cpu: usize) -> Result<(), std::io::Error> {
    // SAFETY: a zeroed cpu_set_t is valid; the calling thread only.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

fn set_comm(comm: &CString) -> Result<(), std::io::Error> {
    // SAFETY: PR_SET_NAME reads a NUL-terminated string of at most 16 bytes; names the calling
    // thread.
    if unsafe { libc::prctl(libc::PR_SET_NAME, comm.as_ptr() as libc::c_ulong, 0, 0, 0) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

struct ThreadResult {
    cpu: usize,
    calls: u64,
    errors: u64,
    first_error: Option<String>,
}

struct Job {
    prog_fd: i32,
    ctx: [u64; 4],
    cpu: usize,
    comm: CString,
    /// Calls per second for this thread; None: unpaced.
    rate: Option<f64>,
    seconds: f64,
    start: Arc<Barrier>,
}

/// One thread: pinned, named, then test runs until the deadline.
fn worker(job: Job) -> ThreadResult {
    let mut result = ThreadResult {
        cpu: job.cpu,
        calls: 0,
        errors: 0,
        first_error: None,
    };
    let setup = pin_to(job.cpu)
        .map_err(|e| format!("sched_setaffinity CPU {}: {e}", job.cpu))
        .and_then(|_| set_comm(&job.comm).map_err(|e| format!("PR_SET_NAME: {e}")));
    job.start.wait();
    if let Err(e) = setup {
        result.first_error = Some(e);
        result.errors = 1;
        return result;
    }
    let mut attr = TestRunAttr {
        prog_fd: job.prog_fd as u32,
        ctx_size_in: std::mem::size_of_val(&job.ctx) as u32,
        ctx_in: job.ctx.as_ptr() as u64,
        ..Default::default()
    };
    let started = Instant::now();
    let limit = Duration::from_secs_f64(job.seconds);
    let mut call = |result: &mut ThreadResult| {
        attr.retval = 0;
        match sys_bpf(BPF_PROG_TEST_RUN, &mut attr) {
            Ok(_) => result.calls += 1,
            Err(e) => {
                result.errors += 1;
                if result.first_error.is_none() {
                    result.first_error = Some(format!("BPF_PROG_TEST_RUN: {e}"));
                }
            }
        }
    };
    match job.rate {
        None => loop {
            // The clock is read once per 64 calls: it costs about as much as a call.
            for _ in 0..64 {
                call(&mut result);
            }
            if started.elapsed() >= limit || result.errors > 1000 {
                break;
            }
        },
        Some(rate) => {
            // Calls due by now, made in bursts at most every millisecond: the storm threshold
            // is per second, so the bursts do not change which calls it lets through.
            let mut made = 0u64;
            loop {
                let elapsed = started.elapsed().min(limit);
                let due = (elapsed.as_secs_f64() * rate) as u64;
                while made < due {
                    call(&mut result);
                    made += 1;
                }
                if elapsed >= limit || result.errors > 1000 {
                    break;
                }
                let next = Duration::from_secs_f64((made + 1) as f64 / rate);
                let wait = next
                    .saturating_sub(started.elapsed())
                    .min(Duration::from_millis(1));
                if !wait.is_zero() {
                    std::thread::sleep(wait);
                }
            }
        }
    }
    result
}

fn run() -> Result<String, String> {
    let args = parse_args()?;
    let tracer = tracer_pid(args.pid)?;
    let (prog, prog_id) = find_program(tracer)?;
    // Held to the end: the kernel counts while any such descriptor is open.
    let _stats = if args.bpf_stats {
        program_stats::enable()?
    } else {
        None
    };
    let comm = CString::new(args.comm.clone()).map_err(|e| e.to_string())?;
    // The main thread too: whatever it might make counts under the same name.
    set_comm(&comm).map_err(|e| format!("PR_SET_NAME: {e}"))?;
    let info = || -> Result<ProgramCost, String> {
        program_stats::read_costs()
            .remove(&prog_id)
            .ok_or_else(|| format!("program {prog_id} was unloaded"))
    };
    // The program's runs without calls: the tracepoint on the machine's own allocations.
    let idle_from = info()?;
    let idle_started = Instant::now();
    std::thread::sleep(Duration::from_secs_f64(args.baseline));
    let idle_seconds = idle_started.elapsed().as_secs_f64();
    let idle_to = info()?;
    let cpus = allowed_cpus();
    let ctx = [0u64, args.order, args.gfp, args.migratetype];
    let start = Arc::new(Barrier::new(args.threads + 1));
    let per_thread_rate = args.rate.map(|r| r / args.threads as f64);
    let mut handles = Vec::new();
    for i in 0..args.threads {
        let job = Job {
            prog_fd: prog.as_fd().as_raw_fd(),
            ctx,
            cpu: cpus[i % cpus.len()],
            comm: comm.clone(),
            rate: per_thread_rate,
            seconds: args.seconds,
            start: Arc::clone(&start),
        };
        handles.push(
            std::thread::Builder::new()
                .spawn(move || worker(job))
                .map_err(|e| format!("cannot start a thread: {e}"))?,
        );
    }
    let before = info()?;
    let started = Instant::now();
    start.wait();
    let results: Vec<ThreadResult> = handles
        .into_iter()
        .map(|h| {
            h.join()
                .map_err(|_| "a producer thread panicked".to_string())
        })
        .collect::<Result<_, _>>()?;
    let seconds = started.elapsed().as_secs_f64();
    let after = info()?;
    let calls: u64 = results.iter().map(|r| r.calls).sum();
    let errors: u64 = results.iter().map(|r| r.errors).sum();
    let first_error = results.iter().find_map(|r| r.first_error.clone());
    let per_thread: Vec<serde_json::Value> = results
        .iter()
        .map(|r| serde_json::json!({"cpu": r.cpu, "calls": r.calls, "errors": r.errors}))
        .collect();
    let out = serde_json::json!({
        "calls": calls,
        "errors": errors,
        "first_error": first_error,
        "seconds": seconds,
        "rate": calls as f64 / seconds,
        "target_rate": args.rate,
        "threads": args.threads,
        "order": args.order,
        "gfp": args.gfp,
        "migratetype": args.migratetype,
        "comm": args.comm,
        "pid": std::process::id(),
        "tracer_pid": tracer,
        "prog_id": prog_id,
        "prog_run_cnt": after.run_count.wrapping_sub(before.run_count),
        "prog_run_time_ns": after.run_time_ns.wrapping_sub(before.run_time_ns),
        "baseline_seconds": idle_seconds,
        "baseline_run_cnt": idle_to.run_count.wrapping_sub(idle_from.run_count),
        "baseline_run_time_ns": idle_to.run_time_ns.wrapping_sub(idle_from.run_time_ns),
        "per_thread": per_thread,
    });
    if calls == 0 {
        return Err(format!(
            "no call succeeded: {}",
            first_error.unwrap_or_else(|| "no call made".into())
        ));
    }
    Ok(out.to_string())
}

fn main() {
    match run() {
        Ok(line) => println!("{line}"),
        Err(e) => {
            eprintln!("storm-producer: {e}");
            std::process::exit(1);
        }
    }
}
