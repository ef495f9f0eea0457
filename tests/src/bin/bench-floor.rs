//! The benchmarks' floor: loads and attaches fragtrace's empty `bench_floor` program on
//! `mm_page_alloc` (tp_btf, as fragtrace's own hook), says so on stderr, and holds it until
//! SIGINT or SIGTERM. What a workload loses with it attached is what any program there costs.
//!
//! usage: bench-floor (as root)
use aya::{Btf, Ebpf, programs::BtfTracePoint};

fn main() {
    if let Err(e) = run() {
        eprintln!("bench-floor: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), String> {
    // Block the stop signals before attaching, so that one arriving early is not lost.
    // SAFETY: plain signal-mask calls on a zeroed set.
    let set = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    };
    let mut ebpf = Ebpf::load(fragtrace::hooks::loader::EBPF_OBJECT)
        .map_err(|e| format!("load the eBPF object: {e}"))?;
    let btf = Btf::from_sys_fs().map_err(|e| format!("kernel BTF: {e}"))?;
    let program: &mut BtfTracePoint = ebpf
        .program_mut("bench_floor")
        .ok_or("no bench_floor program in the object")?
        .try_into()
        .map_err(|e| format!("bench_floor: {e}"))?;
    program
        .load("mm_page_alloc", &btf)
        .map_err(|e| format!("load bench_floor: {e}"))?;
    drop(btf);
    program
        .attach()
        .map_err(|e| format!("attach bench_floor: {e}"))?;
    eprintln!("bench-floor: hooks attached (bench_floor, tp_btf mm_page_alloc)");
    let mut signal = 0;
    // SAFETY: waits for one of the blocked signals.
    unsafe { libc::sigwait(&set, &mut signal) };
    Ok(())
}
