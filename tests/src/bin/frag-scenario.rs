//! In-guest scenario program of `cargo xtask vmtest` (issue #3). Runs as the guest's only real
//! workload, as root, on a throwaway VM: it fragments memory for real and must not run elsewhere.
//!
//! `frag-scenario guest --mode boot|full|survive|cost [--repeat N] --fragtrace PATH`
//!
//! Prints `FRAGTRACE-VMTEST-FEATURE`, `-CHECK <name> <pass|fail|info> <detail>`, `-METRIC k=v`
//! and one `-RESULT {json}` line; the host judges the checks. Scenarios (mode full):
//! 1. `fragtrace probes --json`: every hook attached.
//! 2. With `fragtrace --json` running: keep the per-CPU page lists short (their pages are free
//!    memory that buddyinfo does not show), pin nearly all memory (mlock), free every page whose
//!    buddy stays pinned (PFNs from /proc/self/pagemap), so free memory is order-0 holes; then
//!    take the remaining blocks of order >= 1 with pipe rings (F_SETPIPE_SZ, order >= 4) and unix
//!    stream socket data (orders 3..1) until /proc/buddyinfo shows none. Then, each time after
//!    taking again the blocks that came back free since: create network namespaces in a child
//!    named `netns-maker` (16, then more in batches until a tracefs instance of its own has seen
//!    one of its allocations of order >= 1 fail, bounded), send on sockets, request hugepages.
//! 3. Failed allocations counted by ftrace (kmem/mm_page_alloc filtered on pfn == -1) over the
//!    same window must equal fragtrace's count, or differ by fragtrace's drop count.
//!    fragtrace runs as `record --json --folded`: `report --json` must print the same objects,
//!    and the folded stacks (failures live; stall and fallbacks from `report`) are checked.
//! 4. A cgroup v2 memory limit: order-6 pipe failures tagged memcg_limited, and an OOM kill
//!    called a cgroup OOM, both from counters read in the kernel.
//! 5. Survive (issue 8; mode survive runs only this, `--repeat N` times): see
//!    [`Scenario::survive`].
//!
//! Mode cost (issue 9, not part of full) runs only [`Scenario::cost`]: what the failure
//! program's in-kernel zone and memory-cgroup reads cost, with and without `--no-kernel-reads`.
use std::{
    collections::{BTreeMap, BTreeSet},
    ffi::CString,
    fs,
    io::{Read, Seek, SeekFrom},
    os::{
        fd::{AsRawFd, RawFd},
        unix::process::CommandExt,
    },
    process::{Child, Command, Stdio},
    thread::sleep,
    time::{Duration, Instant},
};

use fragtrace::source::program_stats;
use serde_json::{Value, json};

const PAGE: usize = 4096;
const TRACING: &str = "/sys/kernel/tracing";
const EVENT: &str = "/sys/kernel/tracing/events/kmem/mm_page_alloc";
/// Memory left unpinned for the kernel, fragtrace and this program.
const RESERVE_KB: u64 = 40 * 1024;
/// Free memory the consuming step never goes below (the check wants over 100 MiB).
const FLOOR_MIB: u64 = 104;
const NETNS_COMM: &str = "netns-maker";
/// The fragmentation scenario's recording and its failure-weighted folded stacks.
const RECORDING: &str = "/tmp/fragmentation.rec";
const FOLDED_FAILURES: &str = "/tmp/failures.folded";

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut mode = "full".to_string();
    let mut fragtrace = "/bin/fragtrace".to_string();
    let mut repeat = 1usize;
    let mut it = args.iter();
    match it.next().map(String::as_str) {
        Some("guest") => {}
        _ => {
            eprintln!(
                "usage: frag-scenario guest [--mode boot|full|survive|cost] [--repeat N] [--fragtrace PATH]"
            );
            std::process::exit(2);
        }
    }
    while let Some(a) = it.next() {
        match a.as_str() {
            "--mode" => mode = it.next().cloned().unwrap_or_default(),
            "--fragtrace" => fragtrace = it.next().cloned().unwrap_or_default(),
            "--repeat" => repeat = it.next().and_then(|n| n.parse().ok()).unwrap_or(1),
            other => {
                eprintln!("frag-scenario: unknown argument {other}");
                std::process::exit(2);
            }
        }
    }
    let mut s = Scenario::default();
    features();
    s.check("boot", true, format!("kernel {}", uname_release()));
    if mode == "full" {
        s.full(&fragtrace);
    }
    // Issue 9's cost measurement only on demand: it adds a minute and a half or more.
    if mode == "cost" {
        s.cost(&fragtrace);
    }
    // Issue 8's survive scenario last: it ends with OOM kills.
    if mode == "full" || mode == "survive" {
        for run in 1..=repeat.max(1) {
            s.survive(&fragtrace, run);
        }
    }
    s.result["checks"] = Value::Array(
        s.checks
            .iter()
            .map(|(n, ok, d)| json!({"name": n, "pass": ok, "detail": d}))
            .collect(),
    );
    println!("FRAGTRACE-VMTEST-RESULT {}", s.result);
    std::process::exit(if s.checks.iter().all(|c| c.1) { 0 } else { 1 });
}

#[derive(Default)]
struct Scenario {
    checks: Vec<(String, bool, String)>,
    result: Value,
}

impl Scenario {
    fn check(&mut self, name: &str, ok: bool, detail: impl Into<String>) {
        let detail = detail.into().replace('\n', " ");
        println!(
            "FRAGTRACE-VMTEST-CHECK {name} {} {detail}",
            if ok { "pass" } else { "fail" }
        );
        self.checks.push((name.to_string(), ok, detail));
    }

    fn info(&mut self, name: &str, detail: impl Into<String>) {
        println!("FRAGTRACE-VMTEST-CHECK {name} info {}", detail.into());
    }

    fn metric(&mut self, key: &str, value: Value) {
        let text = match &value {
            Value::String(s) => s.clone(),
            v => v.to_string(),
        };
        println!("FRAGTRACE-VMTEST-METRIC {key}={text}");
        if self.result.is_null() {
            self.result = json!({});
        }
        self.result[key] = value;
    }

    fn full(&mut self, fragtrace: &str) {
        let t0 = Instant::now();
        let _ = kmsg();
        self.probes(fragtrace);
        tune_sysctls();
        // The OOM killer must pick the pinner, never this program; fragtrace protects itself.
        let _ = fs::write("/proc/self/oom_score_adj", "-1000");

        // fragtrace runs through everything, recording as it prints (issue 10) and writing the
        // failure-weighted folded stacks (issue 11); ftrace counts the same window.
        let mut tracer = Tracer::start_with(
            fragtrace,
            &["record", "-o", RECORDING, "--folded", FOLDED_FAILURES],
            900,
        );
        match &tracer {
            Ok(t) => {
                self.info(
                    "fragtrace_started",
                    format!(
                        "pid {}, ready in {:.1}s",
                        t.pid(),
                        t.ready_after.as_secs_f64()
                    ),
                );
                self.metric("fragtrace_startup", json!(t.phases));
                let score = fs::read_to_string(format!("/proc/{}/oom_score_adj", t.pid()))
                    .unwrap_or_default();
                self.check(
                    "fragtrace_oom_score_adj",
                    score.trim() == "-1000",
                    format!(
                        "fragtrace started at 0 and set its own oom_score_adj to {}",
                        score.trim()
                    ),
                );
            }
            Err(e) => self.check("fragtrace_started", false, e.clone()),
        }
        let ftrace = Ftrace::start();
        if let Err(e) = &ftrace {
            self.check("ftrace_started", false, e.clone());
        }

        // The netns child is forked now: a fork needs order-2 blocks that will be gone.
        let netns = NetnsMaker::fork();
        // Set up before fragmenting: a new tracefs instance allocates and frees memory.
        let watch = NetnsWatch::start(netns.pid);
        if let Err(e) = &watch {
            self.info("netns_watch", format!("no watch instance, one batch: {e}"));
        }
        let before = Buddy::read();
        self.metric("buddyinfo_before", json!(before.lines));
        self.metric("free_mib_before", json!(before.free_mib()));
        let tf = Instant::now();
        let pinner = Pinner::spawn();
        let after = Buddy::read();
        self.metric("fragment_secs", json!(round1(tf.elapsed().as_secs_f64())));
        self.metric("buddyinfo_after", json!(after.lines));
        self.metric("free_mib_after", json!(after.free_mib()));
        self.metric("pcp_pages_after", json!(pcp_pages()));
        self.metric("zones_after", json!(zone_figures()));
        let ooms_fragmenting = oom_kills();
        if ooms_fragmenting > 0 {
            let log = dmesg();
            let invoked: Vec<&str> = log
                .lines()
                .filter(|l| {
                    l.contains("invoked oom-killer")
                        || l.contains("Call Trace")
                        || l.contains("+0x")
                })
                .take(40)
                .collect();
            self.metric("oom_while_fragmenting", json!(invoked));
        }
        match &pinner {
            Ok(p) => self.metric("fragmenter", p.report.clone()),
            Err(e) => self.metric("fragmenter", json!({ "error": e })),
        }
        let high = after.free_blocks_from(1);
        self.check(
            "fragmented",
            pinner.as_ref().is_ok_and(|p| p.report["error"].is_null())
                && after.free_mib() > 100.0
                && high == 0
                && ooms_fragmenting == 0,
            format!(
                "{:.1} MiB free, {high} free blocks of order >= 1 in the zones GFP_KERNEL can use{}, \
                 {ooms_fragmenting} OOM kills{}",
                after.free_mib(),
                if after.held_back.is_empty() {
                    String::new()
                } else {
                    format!(" (held back by lowmem_reserve: {})", after.held_back.join(", "))
                },
                match &pinner {
                    Ok(p) if !p.report["error"].is_null() => format!("; {}", p.report["error"]),
                    Err(e) => format!("; {e}"),
                    _ => String::new(),
                }
            ),
        );

        // The workloads of the incident, netns creation first. Blocks of order >= 1 come back
        // free after the check above (kernel memory freed late: RCU callbacks, discarded slabs,
        // fragtrace's heap), so the pinner takes them again right before each workload, and
        // buddyinfo is read around the netns step. The netns creations' order-1..3 failures may
        // wake the OOM killer, whose victim is the pinner (oom_score_adj 1000), which ends the
        // fragmentation; hugepages come last, as their compaction attempts may leave free
        // blocks behind.
        let tw = Instant::now();
        if let Ok(p) = &pinner {
            self.metric("reconsumed_before_netns", p.reconsume());
        }
        let pre = Buddy::read();
        self.metric("buddyinfo_pre_netns", json!(pre.lines));
        let tn = Instant::now();
        let netns = netns.run(watch.as_ref().ok(), pinner.as_ref().ok().map(|p| p.pid));
        let netns_secs = tn.elapsed().as_secs_f64();
        let post = Buddy::read();
        self.metric("buddyinfo_post_netns", json!(post.lines));
        self.metric(
            "netns",
            json!({
                "pid": netns.pid,
                "created": netns.created,
                "errors": netns.errors,
                "batches": netns.batches,
                "failures_seen_after_each_batch": netns.seen,
                "stop": netns.stop,
                "secs": round1(netns_secs),
                "free_blocks_order_ge1_before": pre.free_blocks_from(1),
                "free_blocks_order_ge1_after": post.free_blocks_from(1),
            }),
        );
        if let Ok(p) = &pinner {
            self.metric("reconsumed_before_sends", p.reconsume());
        }
        let sent = socket_sends(64, 64 * 1024);
        self.metric("socket_send_bytes", json!(sent));
        let huge = request_hugepages(4);
        self.metric("hugepages", json!({"requested": 4, "got": huge}));
        self.metric("workload_secs", json!(round1(tw.elapsed().as_secs_f64())));
        self.metric(
            "oom_kills_in_workloads",
            json!(oom_kills() - ooms_fragmenting),
        );

        // Give memory back before the window closes, so that nothing fails after it.
        if let Ok(p) = pinner {
            p.release();
        }
        let _ = fs::write("/proc/sys/vm/nr_hugepages", "0");
        if let Ok(w) = watch {
            w.stop();
        }
        sleep(Duration::from_millis(500));
        let ft_events = ftrace.and_then(|f| f.stop());
        sleep(Duration::from_secs(2));
        let tracer_out = match tracer.as_mut() {
            Ok(t) => t.stop(),
            Err(e) => Err(e.clone()),
        };
        self.compare(ft_events, tracer_out, netns.pid);
        self.record_report(fragtrace, netns.pid);
        self.oom_check();
        self.memcg(fragtrace);
        self.slab_cache(fragtrace);
        self.metric("scenario_secs", json!(round1(t0.elapsed().as_secs_f64())));
    }

    /// Scenario 5 (issue 14): a real slab-cache creation failure. The test module built for
    /// this kernel from tests/kmod asks kmem_cache_create for objects larger than any slab
    /// order holds, and fails its own init with EAGAIN when the kernel answered NULL (EEXIST
    /// if it did not). fragtrace must report `slab_create_fail` with the cache's name.
    fn slab_cache(&mut self, fragtrace: &str) {
        const CACHE: &str = "fragtrace_test_cache";
        let path = format!("/lib/modules/{}/fragtrace_slab_fail.ko", uname_release());
        let module = match fs::File::open(&path) {
            Ok(f) => f,
            Err(e) => return self.check("slab_module", false, format!("{path}: {e}")),
        };
        let mut tracer = match Tracer::start(fragtrace) {
            Ok(t) => t,
            Err(e) => return self.check("slab_fragtrace_started", false, e),
        };
        // SAFETY: finit_module with an open module file and empty parameters.
        let rc =
            unsafe { libc::syscall(libc::SYS_finit_module, module.as_raw_fd(), c"".as_ptr(), 0) };
        let errno = if rc == 0 {
            0
        } else {
            std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
        };
        sleep(Duration::from_secs(1));
        let out = tracer.stop();
        let refused = errno == libc::EAGAIN;
        self.check(
            "slab_module",
            refused,
            match errno {
                libc::EAGAIN => "kmem_cache_create returned NULL in the module".to_string(),
                libc::EEXIST => "kmem_cache_create did not fail".to_string(),
                0 => "the module loaded (it must fail its init)".to_string(),
                e => format!("finit_module: {}", std::io::Error::from_raw_os_error(e)),
            },
        );
        let out = match out {
            Ok(o) => o,
            Err(e) => return self.check("slab_create_fail", false, e),
        };
        let seen: Vec<String> = out
            .slab_create_fails
            .iter()
            .map(|v| {
                format!(
                    "{} (comm {})",
                    v["cache"].as_str().unwrap_or("?"),
                    v["comm"].as_str().unwrap_or("?")
                )
            })
            .collect();
        self.check(
            "slab_create_fail",
            out.slab_create_fails
                .iter()
                .any(|v| v["cache"].as_str() == Some(CACHE)),
            format!(
                "fragtrace reported {} slab_create_fail: [{}]; want cache {CACHE}",
                seen.len(),
                seen.join(", ")
            ),
        );
    }

    /// Scenario 4: a cgroup v2 memory limit. A child filling the cgroup gets order-6
    /// `F_SETPIPE_SZ` failures that must be tagged memcg_limited; a second child touching more
    /// than the limit is OOM-killed, which must be called a cgroup OOM. Both verdicts come from
    /// the page counters the eBPF handlers read through this kernel's BTF layout.
    fn memcg(&mut self, fragtrace: &str) {
        let dir = "/sys/fs/cgroup/fragtrace-memcg";
        let setup = write("/sys/fs/cgroup/cgroup.subtree_control", "+memory")
            .and_then(|_| fs::create_dir(dir).map_err(|e| format!("mkdir {dir}: {e}")))
            .and_then(|_| write(&format!("{dir}/memory.max"), &(32u64 << 20).to_string()))
            .and_then(|_| write("/proc/sys/fs/pipe-max-size", &(16u32 << 20).to_string()));
        if let Err(e) = setup {
            return self.check("memcg_setup", false, e);
        }
        let mut tracer = match Tracer::start(fragtrace) {
            Ok(t) => t,
            Err(e) => return self.check("memcg_fragtrace_started", false, e),
        };
        // The child counts its ENOMEM calls in memory shared with this program (touched here
        // first, so charged outside the cgroup): the count survives the cgroup's OOM killer
        // ending the child mid-way, which a memory cgroup at its limit may do.
        // SAFETY: a fresh anonymous shared mapping of one page, used as one u32.
        let counter = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                4096,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if counter == libc::MAP_FAILED {
            return self.check("memcg_setup", false, "mmap of the shared counter failed");
        }
        ENOMEM_COUNTER.store(counter.cast(), std::sync::atomic::Ordering::SeqCst);
        // SAFETY: the mapping is one writable page.
        unsafe { std::ptr::write_volatile(counter.cast::<u32>(), 0) };
        let (pipe_pid, pipe_status) = in_cgroup_child(dir, fill_then_grow_pipes);
        // SAFETY: as above; the child has exited.
        let counted = unsafe { std::ptr::read_volatile(counter.cast::<u32>()) };
        let enomem = (libc::WIFEXITED(pipe_status)
            || (libc::WIFSIGNALED(pipe_status) && libc::WTERMSIG(pipe_status) == libc::SIGKILL))
            .then_some(counted as i32);
        let (hog_pid, hog_status) = in_cgroup_child(dir, touch_beyond_limit);
        let hog_killed =
            libc::WIFSIGNALED(hog_status) && libc::WTERMSIG(hog_status) == libc::SIGKILL;
        sleep(Duration::from_millis(500));
        let out = tracer.stop();
        let _ = fs::remove_dir(dir);
        let out = match out {
            Ok(o) => o,
            Err(e) => return self.check("memcg_fragtrace_output", false, e),
        };

        let fails: Vec<&Fail> = out.fails.iter().filter(|f| f.pid == pipe_pid).collect();
        let tagged = fails
            .iter()
            .filter(|f| {
                f.memcg_limited
                    && f.order == 6
                    && f.reason.contains("/fragtrace-memcg")
                    && f.reason.contains("at the failure")
            })
            .count();
        self.check(
            "memcg_limited",
            enomem.is_some_and(|n| n > 0 && n as usize == fails.len()) && tagged == fails.len(),
            format!(
                "{} F_SETPIPE_SZ calls failed with ENOMEM (exit status {pipe_status:#x}); \
                 fragtrace: {} alloc_fail for pid {pipe_pid}, {tagged} of them order 6 and \
                 memcg_limited by counters read at the failure; first reason: {}",
                enomem.map_or("?".into(), |n| n.to_string()),
                fails.len(),
                fails.first().map_or("-", |f| f.reason.as_str()),
            ),
        );
        let kill = out.oom_kills.iter().find(|k| k["victim_pid"] == hog_pid);
        let reason = kill.and_then(|k| k["reason"].as_str()).unwrap_or("");
        self.check(
            "memcg_oom_kill",
            hog_killed
                && kill.is_some_and(|k| k["memcg_oom"] == true)
                && reason.contains("/fragtrace-memcg")
                && reason.contains("when the OOM killer ran"),
            format!(
                "hog pid {hog_pid} {}; fragtrace: {}",
                if hog_killed {
                    "SIGKILLed"
                } else {
                    "not OOM-killed"
                },
                kill.map_or("no oom_kill record for it".into(), |k| k.to_string()),
            ),
        );
    }

    /// Scenario 1.
    fn probes(&mut self, fragtrace: &str) {
        let out = Command::new(fragtrace).args(["probes", "--json"]).output();
        let out = match out {
            Ok(o) => o,
            Err(e) => return self.check("probes", false, format!("cannot run {fragtrace}: {e}")),
        };
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        if !out.status.success() {
            return self.check(
                "probes",
                false,
                format!(
                    "`fragtrace probes --json` {}: {}",
                    out.status,
                    last_line(&stderr)
                ),
            );
        }
        let v: Value = match serde_json::from_str(&stdout) {
            Ok(v) => v,
            Err(e) => {
                return self.check(
                    "probes",
                    false,
                    format!("not JSON ({e}): {}", clip(&stdout, 200)),
                );
            }
        };
        let hooks = hook_list(&v);
        if hooks.is_empty() {
            return self.check(
                "probes",
                false,
                format!("no hook listed: {}", clip(&stdout, 200)),
            );
        }
        let mut missing = Vec::new();
        let mut attached = Vec::new();
        for h in &hooks {
            let name = ["name", "hook", "id"]
                .iter()
                .find_map(|k| h.get(*k).and_then(Value::as_str))
                .unwrap_or("?");
            if hook_attached(h) {
                attached.push(name.to_string());
            } else {
                missing.push(format!("{name} ({})", clip(&h.to_string(), 160)));
            }
        }
        self.metric("probes_attached", json!(attached));
        self.check(
            "probes",
            missing.is_empty(),
            if missing.is_empty() {
                format!("all {} hooks attached", hooks.len())
            } else {
                format!(
                    "{} of {} hooks not attached: {}",
                    missing.len(),
                    hooks.len(),
                    missing.join("; ")
                )
            },
        );
    }

    /// Scenarios 2 and 3: what fragtrace reported against ftrace's record.
    fn compare(
        &mut self,
        ft: Result<FtraceRecord, String>,
        tr: Result<TracerOutput, String>,
        netns_pid: i32,
    ) {
        let ft = match ft {
            Ok(f) => f,
            Err(e) => return self.check("ftrace", false, e),
        };
        self.metric("ftrace_failures", json!(ft.events.len()));
        self.metric(
            "ftrace_failures_by_order",
            json!(by_order(ft.events.iter().map(|e| e.order))),
        );
        self.metric("ftrace_overrun", json!(ft.overrun));
        let comms: BTreeMap<String, usize> = ft.events.iter().fold(BTreeMap::new(), |mut m, e| {
            *m.entry(format!("{}:{}", e.comm, e.pid)).or_default() += 1;
            m
        });
        self.metric("ftrace_failures_by_task", json!(comms));
        let high: Vec<&FtEvent> = ft.events.iter().filter(|e| e.order >= 1).collect();
        let netns_high = high.iter().filter(|e| e.pid == netns_pid).count();
        self.check(
            "allocations_failed",
            !high.is_empty(),
            format!(
                "ftrace saw {} failed allocations of order >= 1 ({netns_high} in {NETNS_COMM}), overrun {}",
                high.len(),
                ft.overrun
            ),
        );
        self.check(
            "netns_failures",
            netns_high > 0,
            format!("{netns_high} failed allocations of order >= 1 in {NETNS_COMM} (pid {netns_pid}) per ftrace"),
        );

        let tr = match tr {
            Ok(t) => t,
            Err(e) => return self.check("fragtrace_output", false, e),
        };
        let own: BTreeSet<i32> = tr.tids.iter().copied().collect();
        let fragtrace_pid = tr.pid;
        let counted: Vec<&FtEvent> = ft
            .events
            .iter()
            .filter(|e| !own.contains(&e.pid) && e.tgid != Some(fragtrace_pid))
            .collect();
        // Entries the ring buffer overwrote were failures too (the filter keeps nothing else).
        let ft_total = counted.len() as i64 + ft.overrun as i64;
        let fails = &tr.fails;
        self.metric("fragtrace_failures", json!(fails.len()));
        self.metric(
            "fragtrace_failures_by_order",
            json!(by_order(fails.iter().map(|f| f.order))),
        );
        self.metric("fragtrace_dropped", json!(tr.dropped));
        self.metric(
            "fragtrace_summary_fail_by_order",
            tr.summary_by_order
                .clone()
                .map_or(Value::Null, |v| json!(v)),
        );
        if let Some(first) = tr.first_fail.as_ref() {
            self.metric("fragtrace_first_alloc_fail", first.clone());
        }
        self.check(
            "fragtrace_output",
            tr.summary.is_some() && tr.exit_ok,
            format!(
                "{} alloc_fail lines, summary {}, exit {}{}",
                fails.len(),
                if tr.summary.is_some() {
                    "present"
                } else {
                    "missing"
                },
                tr.status,
                if tr.stderr_tail.is_empty() {
                    String::new()
                } else {
                    format!("; stderr: {}", tr.stderr_tail)
                }
            ),
        );

        // No loss: the counts equal, or differ by exactly what fragtrace says it dropped.
        let diff = ft_total - fails.len() as i64;
        let dropped = tr.dropped.unwrap_or(0) as i64;
        self.check(
            "no_loss",
            tr.dropped.is_some() && (diff == 0 || diff == dropped) && !counted.is_empty(),
            format!(
                "ftrace {ft_total} ({} read + {} overwritten; fragtrace's own {} excluded), fragtrace {}, dropped {}",
                counted.len(),
                ft.overrun,
                ft.events.len() - counted.len(),
                fails.len(),
                tr.dropped.map_or("missing".into(), |d| d.to_string())
            ),
        );
        let ft_orders = by_order(counted.iter().map(|e| e.order));
        let tr_orders = by_order(fails.iter().map(|f| f.order));
        if dropped == 0 && ft.overrun == 0 {
            self.check(
                "per_order",
                ft_orders == tr_orders,
                format!("ftrace {ft_orders:?} fragtrace {tr_orders:?}"),
            );
        }
        if let Some(sum) = &tr.summary_by_order {
            let from_lines: BTreeMap<u32, usize> = tr_orders.clone();
            self.check(
                "summary_matches_lines",
                *sum == from_lines,
                format!("summary {sum:?} lines {from_lines:?}"),
            );
        }

        // The right task: every pid ftrace saw failing must be in fragtrace with the same count per
        // order, and the netns child and this program with their names.
        let me = std::process::id() as i32;
        for (pid, comm) in [(netns_pid, NETNS_COMM), (me, "frag-scenario")] {
            let ft_n = by_order(
                counted
                    .iter()
                    .filter(|e| e.pid == pid && e.order >= 1)
                    .map(|e| e.order),
            );
            let mine: Vec<&Fail> = fails
                .iter()
                .filter(|f| f.pid == pid && f.order >= 1)
                .collect();
            let tr_n = by_order(mine.iter().map(|f| f.order));
            let bad_comm: BTreeSet<&str> = mine
                .iter()
                .map(|f| f.comm.as_str())
                .filter(|c| *c != comm)
                .collect();
            // With ftrace entries overwritten, ftrace's per-task counts are a lower bound.
            let counts_ok = if ft.overrun == 0 {
                ft_n == tr_n
            } else {
                mine.len() >= ft_n.values().sum::<usize>()
            };
            self.check(
                &format!("comm_{comm}"),
                counts_ok && bad_comm.is_empty() && (pid != netns_pid || !mine.is_empty()),
                format!("pid {pid}: ftrace {ft_n:?}, fragtrace {tr_n:?}, other comms {bad_comm:?}"),
            );
        }

        // Decoded gfp flags: names, as the kernel's own decoder prints them.
        let undecoded: Vec<&str> = fails
            .iter()
            .map(|f| f.gfp.as_str())
            .filter(|g| {
                g.is_empty()
                    || !g
                        .split('|')
                        .all(|p| p.starts_with("GFP_") || p.starts_with("__GFP_"))
            })
            .collect();
        let mut same = 0;
        for f in fails.iter() {
            let want = flag_set(&f.gfp);
            if counted
                .iter()
                .any(|e| e.pid == f.pid && e.order == f.order && flag_set(&e.gfp) == want)
            {
                same += 1;
            }
        }
        self.check(
            "gfp_decoded",
            !fails.is_empty() && undecoded.is_empty() && same == fails.len(),
            format!(
                "{} of {} failures have the same flag names as ftrace; undecoded: {:?}",
                same,
                fails.len(),
                undecoded.iter().take(3).collect::<Vec<_>>()
            ),
        );

        // Stacks: symbolized frames, the allocator at the top and unshare under the netns ones.
        // Frames are `symbol+0xoff`, or a raw address for code kallsyms does not list (a BPF
        // trampoline, e.g. the one on copy_net_ns); the innermost frame is the allocator.
        let bad_stack = fails
            .iter()
            .filter(|f| {
                f.stack.is_empty()
                    || !f.stack[0].contains("alloc")
                    || !f.stack[0].contains("+0x")
                    || !f
                        .stack
                        .iter()
                        .all(|s| s.contains("+0x") || s.starts_with("0xffff"))
            })
            .count();
        let netns_with_path = fails
            .iter()
            .filter(|f| f.pid == netns_pid)
            .filter(|f| {
                f.stack.iter().any(|s| {
                    s.contains("unshare") || s.contains("net_ns") || s.contains("setup_net")
                })
            })
            .count();
        let netns_total = fails.iter().filter(|f| f.pid == netns_pid).count();
        self.check(
            "stacks",
            !fails.is_empty() && bad_stack == 0 && netns_total > 0 && netns_with_path == netns_total,
            format!(
                "{bad_stack} of {} failures without a symbolized stack; {netns_with_path} of {netns_total} {NETNS_COMM} stacks go through unshare/copy_net_ns",
                fails.len()
            ),
        );
        if let Some(f) = fails.iter().find(|f| f.pid == netns_pid) {
            self.info(
                "netns_stack_example",
                format!("order {} {} {}", f.order, f.gfp, f.stack.join(" <- ")),
            );
        }

        // Attribution: failures inside the netns creations are tagged, with the frame that shows it.
        let tagged: Vec<&Fail> = fails
            .iter()
            .filter(|f| f.pid == netns_pid && f.netns)
            .collect();
        let with_frame = tagged
            .iter()
            .filter(|f| {
                f.netns_evidence.as_deref().is_some_and(|e| {
                    ["copy_net_ns", "setup_net", "ops_init", "nf_conntrack"]
                        .iter()
                        .any(|n| e.starts_with(n))
                })
            })
            .count();
        self.check(
            "netns_tagged",
            with_frame > 0,
            format!(
                "{} of {netns_total} {NETNS_COMM} failures tagged netns, {with_frame} with a stack frame as evidence{}",
                tagged.len(),
                tagged
                    .first()
                    .and_then(|f| f.netns_evidence.as_deref())
                    .map_or(String::new(), |e| format!(" (e.g. {e})"))
            ),
        );
        // Why: with over 100 MiB free and no block of order >= 1, failures are fragmentation,
        // never exhaustion or a cgroup limit. These kernels list node_data and have BTF, so the
        // eBPF handler reads the zones at each failure (lag 0); a /proc read made later could
        // find a block kcompactd made meanwhile ("unknown").
        let count = |pid: Option<i32>| {
            let mut by: BTreeMap<&str, usize> = BTreeMap::new();
            for f in fails.iter().filter(|f| pid.is_none_or(|p| f.pid == p)) {
                *by.entry(f.verdict.as_str()).or_default() += 1;
            }
            by
        };
        let all = count(None);
        let netns_verdicts = count(Some(netns_pid));
        let fragmentation = all.get("fragmentation").copied().unwrap_or(0);
        let wrong = |by: &BTreeMap<&str, usize>| {
            by.iter()
                .filter(|(v, _)| !matches!(**v, "fragmentation" | "unknown"))
                .map(|(_, n)| n)
                .sum::<usize>()
        };
        let lags: Vec<i64> = fails.iter().filter_map(|f| f.zone_state_lag_ms).collect();
        let example = |kind: &str| {
            fails
                .iter()
                .find(|f| f.verdict == kind)
                .map_or("-", |f| f.reason.as_str())
        };
        let at_failure = fails
            .iter()
            .filter(|f| f.zone_state_lag_ms == Some(0) && f.reason.contains("read at the failure"))
            .count();
        let unknown = all.get("unknown").copied().unwrap_or(0);
        self.check(
            "verdicts",
            fragmentation > 0
                && wrong(&all) == 0
                && wrong(&netns_verdicts) == 0
                && at_failure == fails.len()
                && unknown * 20 <= fails.len(),
            format!(
                "all {all:?}, {NETNS_COMM} {netns_verdicts:?}; {at_failure} of {} judged on zones \
                 read in the kernel at the failure; zone state read {}..{} ms after the \
                 failures; e.g. {}; unknown e.g. {}",
                fails.len(),
                lags.iter().min().unwrap_or(&0),
                lags.iter().max().unwrap_or(&0),
                example("fragmentation"),
                example("unknown"),
            ),
        );
        // What the kernel did: the hugepage requests go through direct compaction.
        self.check(
            "compaction_events",
            tr.compactions > 0,
            format!("{} compaction records", tr.compactions),
        );
        // An OOM kill, if the kernel killed, is reported with the free memory at that moment.
        let kills_in_log = dmesg()
            .lines()
            .filter(|l| l.contains("Killed process"))
            .count();
        let with_free = tr
            .oom_kills
            .iter()
            .filter(|k| {
                k.get("zones")
                    .and_then(Value::as_array)
                    .is_some_and(|z| !z.is_empty() && z.iter().all(|z| z.get("free_kb").is_some()))
            })
            .count();
        // The pinner is killed only while it holds memory fragmented with over 100 MiB free:
        // such a kill must be called fragmentation-driven.
        let pinner_kills: Vec<&Value> = tr
            .oom_kills
            .iter()
            .filter(|k| k["victim_comm"] == "frag-pinner")
            .collect();
        // ... judged on the zones as they were when the victim was chosen, before it freed
        // anything (read in the kernel on these kernels).
        let driven = pinner_kills
            .iter()
            .filter(|k| {
                k["fragmentation_driven"] == true
                    && k["memcg_oom"] == false
                    && k["reason"]
                        .as_str()
                        .is_some_and(|r| r.contains("zones read when the victim was chosen"))
            })
            .count();
        self.metric("fragtrace_oom_kills", json!(tr.oom_kills));
        self.check(
            "oom_kills_reported",
            tr.oom_kills.len() == kills_in_log
                && with_free == tr.oom_kills.len()
                && driven == pinner_kills.len(),
            format!(
                "kernel log {kills_in_log} kills, fragtrace {} oom_kill records ({with_free} with \
                 zone free memory; {driven} of {} kills of the pinner fragmentation-driven on \
                 zones read at the kill){}",
                tr.oom_kills.len(),
                pinner_kills.len(),
                pinner_kills
                    .first()
                    .and_then(|k| k["reason"].as_str())
                    .map_or(String::new(), |r| format!("; e.g. {r}"))
            ),
        );
    }

    fn oom_check(&mut self) {
        let out = dmesg();
        let warns = out
            .lines()
            .filter(|l| l.contains("page allocation failure"))
            .count();
        self.metric("dmesg_page_allocation_failure_lines", json!(warns));
    }
}

static KMSG: std::sync::OnceLock<Option<fs::File>> = std::sync::OnceLock::new();

/// /dev/kmsg, opened once, before memory is fragmented: each open allocates an 8 KiB buffer, an
/// order-2 or order-3 request that may not fail (5.10: kmalloc_order from devkmsg_open), so in
/// the fragmented guest it wakes the OOM killer.
fn kmsg() -> Option<&'static fs::File> {
    KMSG.get_or_init(|| {
        use std::os::unix::fs::OpenOptionsExt;
        fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open("/dev/kmsg")
            .ok()
    })
    .as_ref()
}

/// The kernel log, read from /dev/kmsg (from its first record each time): running `dmesg` would
/// fork, and a fork needs order-2 blocks that the fragmented guest does not have.
fn dmesg() -> String {
    let Some(mut f) = kmsg() else {
        return String::new();
    };
    if f.seek(SeekFrom::Start(0)).is_err() {
        return String::new();
    }
    let mut out = String::new();
    let mut buf = vec![0u8; 8192];
    // One record per read; EAGAIN at the end.
    while let Ok(n) = f.read(&mut buf) {
        if n == 0 {
            break;
        }
        let rec = String::from_utf8_lossy(&buf[..n]);
        out.push_str(rec.split_once(';').map_or(&rec[..], |r| r.1));
    }
    out
}

fn oom_kills() -> usize {
    dmesg()
        .lines()
        .filter(|l| l.contains("invoked oom-killer"))
        .count()
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

fn clip(s: &str, n: usize) -> String {
    let s = s.trim();
    match s.char_indices().nth(n) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

fn last_line(s: &str) -> String {
    clip(
        s.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or(""),
        300,
    )
}

fn by_order(it: impl Iterator<Item = u32>) -> BTreeMap<u32, usize> {
    it.fold(BTreeMap::new(), |mut m, o| {
        *m.entry(o).or_default() += 1;
        m
    })
}

fn flag_set(s: &str) -> BTreeSet<String> {
    s.split('|')
        .map(|p| p.trim().to_string())
        .filter(|p| !p.is_empty())
        .collect()
}

/// The hooks of `fragtrace probes --json`: an array, or an object with an array under "hooks" or
/// "probes", or an object keyed by hook name.
fn hook_list(v: &Value) -> Vec<Value> {
    match v {
        Value::Array(a) => a.clone(),
        Value::Object(o) => {
            for k in ["hooks", "probes"] {
                if let Some(Value::Array(a)) = o.get(k) {
                    return a.clone();
                }
            }
            o.iter()
                .map(|(k, v)| {
                    let mut v = v.clone();
                    if let Value::Object(m) = &mut v {
                        m.entry("name").or_insert(Value::String(k.clone()));
                    }
                    v
                })
                .collect()
        }
        _ => Vec::new(),
    }
}

fn hook_attached(h: &Value) -> bool {
    if let Some(b) = h.get("attached").and_then(Value::as_bool) {
        return b;
    }
    ["status", "state"].iter().any(|k| {
        h.get(*k)
            .and_then(Value::as_str)
            .is_some_and(|s| s.eq_ignore_ascii_case("attached") || s.starts_with("attached"))
    })
}

fn uname_release() -> String {
    fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// What this kernel offers fragtrace: BTF, kprobes, ftrace functions and the symbols of the hooks.
fn features() {
    let yn = |b: bool| if b { "yes" } else { "no" };
    let kallsyms = fs::read_to_string("/proc/kallsyms").unwrap_or_default();
    let syms: BTreeSet<&str> = kallsyms
        .lines()
        .filter_map(|l| l.split_whitespace().nth(2))
        .collect();
    let funcs =
        fs::read_to_string(format!("{TRACING}/available_filter_functions")).unwrap_or_default();
    let fset: BTreeSet<&str> = funcs
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    println!(
        "FRAGTRACE-VMTEST-FEATURE btf={} kprobe_events={} ftrace_functions={} hist_triggers={}",
        yn(fs::metadata("/sys/kernel/btf/vmlinux").is_ok()),
        yn(fs::metadata(format!("{TRACING}/kprobe_events")).is_ok()),
        fset.len(),
        yn(fs::read_to_string(format!("{EVENT}/trigger")).is_ok_and(|t| t.contains("hist")))
    );
    let mut line = String::new();
    for s in [
        "warn_alloc",
        "__alloc_pages",
        "__alloc_pages_noprof",
        "__alloc_pages_nodemask",
        "__kmem_cache_create_args",
        "kmem_cache_create_usercopy",
        "kmem_cache_create",
        "copy_net_ns",
        "setup_net",
    ] {
        line.push_str(&format!(
            " {s}={}",
            match (syms.contains(s), fset.contains(s)) {
                (true, true) => "traceable",
                (true, false) => "kallsyms-only",
                _ => "absent",
            }
        ));
    }
    println!("FRAGTRACE-VMTEST-FEATURE symbols:{line}");
    let modules = fs::read_to_string("/proc/modules").unwrap_or_default();
    println!(
        "FRAGTRACE-VMTEST-FEATURE loaded_modules={}",
        modules.lines().count()
    );
}

fn write(path: &str, value: &str) -> Result<(), String> {
    fs::write(path, value).map_err(|e| format!("write {value:?} to {path}: {e}"))
}

fn tune_sysctls() {
    for (p, v) in [
        ("/proc/sys/vm/compact_unevictable_allowed", "0"),
        ("/proc/sys/vm/compaction_proactiveness", "0"),
        // Fragmentation index <= 1000 always: compaction judges itself unsuitable and does not
        // assemble free blocks from the few movable pages left (fragtrace's heap among them).
        ("/proc/sys/vm/extfrag_threshold", "1000"),
        ("/proc/sys/vm/max_map_count", "1000000"),
        ("/proc/sys/fs/pipe-max-size", "268435456"),
        ("/sys/kernel/mm/transparent_hugepage/enabled", "never"),
    ] {
        // compaction_proactiveness is new in 5.9; the rest exist everywhere.
        if let Err(e) = write(p, v) {
            println!("frag-scenario: {e}");
        }
    }
    // Per-CPU page lists as short as the kernel allows. Pages on them are neither in MemFree nor
    // in /proc/buddyinfo: since 6.7 the lists grow to 1/8 of the zone when a task frees many
    // pages in a row (the holes), 50 MiB on 6.12, and 5.13+ keep blocks of order 1..3 there too.
    // Any drain (a direct reclaim's drain_all_pages, 6.7's decay_pcp_high every second) then
    // brings them back, merged with their buddies into blocks the fragmentation check never saw.
    // The fraction bounds each list to managed pages / fraction: 5.14+ call it
    // percpu_pagelist_high_fraction, 5.10 percpu_pagelist_fraction.
    let fraction = ["percpu_pagelist_high_fraction", "percpu_pagelist_fraction"]
        .iter()
        .map(|n| format!("/proc/sys/vm/{n}"))
        .find(|p| fs::metadata(p).is_ok());
    match fraction {
        Some(p) => {
            if let Err(e) = write(&p, "100000") {
                println!("frag-scenario: {e}");
            }
        }
        None => println!("frag-scenario: no percpu_pagelist sysctl"),
    }
    let lim = libc::rlimit {
        rlim_cur: 1 << 20,
        rlim_max: 1 << 20,
    };
    unsafe {
        libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        let inf = libc::rlimit {
            rlim_cur: libc::RLIM_INFINITY,
            rlim_max: libc::RLIM_INFINITY,
        };
        libc::setrlimit(libc::RLIMIT_MEMLOCK, &inf);
    }
}

/// /proc/buddyinfo, with /proc/zoneinfo to tell which zones GFP_KERNEL allocations can still use.
struct Buddy {
    lines: Vec<String>,
    /// Free blocks per order, in the zones GFP_KERNEL allocations can use.
    counts: Vec<u64>,
    /// Free pages, all zones.
    all_free: u64,
    /// Zones whose free memory lowmem_reserve keeps from GFP_KERNEL allocations, with their blocks.
    held_back: Vec<String>,
}

/// Per zone from /proc/zoneinfo: (free pages, low watermark, largest lowmem_reserve).
fn zoneinfo() -> BTreeMap<String, (u64, u64, u64)> {
    let text = fs::read_to_string("/proc/zoneinfo").unwrap_or_default();
    let mut zones = BTreeMap::new();
    let mut cur: Option<(String, u64, u64, u64)> = None;
    for l in text.lines() {
        let t = l.trim();
        if let Some(rest) = t.strip_prefix("Node ") {
            if let Some(z) = cur.take() {
                zones.insert(z.0, (z.1, z.2, z.3));
            }
            let name = rest.split_whitespace().last().unwrap_or("").to_string();
            cur = Some((name, 0, 0, 0));
        } else if let Some(z) = cur.as_mut() {
            let mut w = t.split_whitespace();
            match (w.next(), w.next(), w.next()) {
                (Some("pages"), Some("free"), Some(n)) => z.1 = n.parse().unwrap_or(0),
                (Some("low"), Some(n), None) => z.2 = n.parse().unwrap_or(0),
                (Some("protection:"), ..) => {
                    z.3 = t
                        .trim_start_matches("protection:")
                        .trim_matches(|c| c == ' ' || c == '(' || c == ')')
                        .split(',')
                        .filter_map(|n| n.trim().parse().ok())
                        .max()
                        .unwrap_or(0)
                }
                _ => {}
            }
        }
    }
    if let Some(z) = cur.take() {
        zones.insert(z.0, (z.1, z.2, z.3));
    }
    zones
}

impl Buddy {
    fn read() -> Self {
        let text = fs::read_to_string("/proc/buddyinfo").unwrap_or_default();
        let zones = zoneinfo();
        let mut counts = vec![0u64; 11];
        let mut lines = Vec::new();
        let mut held_back = Vec::new();
        let mut all_free = 0;
        for l in text.lines() {
            lines.push(l.split_whitespace().collect::<Vec<_>>().join(" "));
            let Some((_, rest)) = l.split_once("zone") else {
                continue;
            };
            let mut w = rest.split_whitespace();
            let zone = w.next().unwrap_or("");
            let nums: Vec<u64> = w.filter_map(|n| n.parse().ok()).collect();
            let free: u64 = nums.iter().enumerate().map(|(o, n)| n << o).sum();
            all_free += free;
            // A block of order o is out of reach of GFP_KERNEL when taking it would put the zone
            // under its low watermark plus the reserve it keeps for allocations from higher zones
            // (the fast path's __zone_watermark_ok).
            let (zfree, low, reserve) = zones.get(zone).copied().unwrap_or((free, 0, 0));
            let mut held = 0;
            for (o, n) in nums.iter().enumerate() {
                if o >= counts.len() {
                    counts.resize(o + 1, 0);
                }
                if o >= 1 && zfree < (1 << o) + low + reserve {
                    held += n;
                } else {
                    counts[o] += n;
                }
            }
            if held > 0 {
                held_back.push(format!(
                    "{zone}: {held} blocks (free {zfree} pages, low {low}, reserve {reserve})"
                ));
            }
        }
        Self {
            lines,
            counts,
            all_free,
            held_back,
        }
    }
    fn free_pages(&self) -> u64 {
        self.all_free
    }
    fn free_mib(&self) -> f64 {
        round1(self.free_pages() as f64 * PAGE as f64 / (1 << 20) as f64)
    }
    fn free_blocks_from(&self, order: usize) -> u64 {
        self.counts.iter().skip(order).sum()
    }
    fn highest(&self) -> Option<usize> {
        (1..self.counts.len()).rev().find(|&o| self.counts[o] > 0)
    }
}

fn meminfo_kb(key: &str) -> u64 {
    fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix(key)?
                .strip_prefix(':')?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

/// Pages on the per-CPU page lists, all zones and CPUs (/proc/zoneinfo `count:`): free memory
/// that MemFree and /proc/buddyinfo do not show.
/// The watermark lines of /proc/zoneinfo and the pageblock table of /proc/pagetypeinfo: what a
/// verdict is judged against, for the record.
fn zone_figures() -> Vec<String> {
    let zoneinfo = fs::read_to_string("/proc/zoneinfo").unwrap_or_default();
    let mut out = Vec::new();
    let mut zone = String::new();
    for line in zoneinfo.lines() {
        let t = line.trim();
        if t.starts_with("Node") {
            zone = t.split_whitespace().last().unwrap_or("").to_string();
            continue;
        }
        let key = t.split_whitespace().next().unwrap_or("");
        if matches!(key, "min" | "boost" | "protection:" | "nr_free_pages")
            || t.starts_with("pages free")
        {
            out.push(format!("{zone}: {t}"));
        }
    }
    let pagetype = fs::read_to_string("/proc/pagetypeinfo").unwrap_or_default();
    let mut in_blocks = false;
    for line in pagetype.lines() {
        in_blocks |= line.starts_with("Number of blocks type");
        if in_blocks && !line.trim().is_empty() {
            out.push(line.split_whitespace().collect::<Vec<_>>().join(" "));
        }
    }
    out
}

fn pcp_pages() -> u64 {
    fs::read_to_string("/proc/zoneinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().strip_prefix("count:")?.trim().parse::<u64>().ok())
        .sum()
}

#[derive(Default)]
struct Fragmenter {
    /// Pinned chunks: (address, length).
    chunks: Vec<(usize, usize)>,
    pinned_pages: usize,
    holes: usize,
    pipes: Vec<RawFd>,
    socks: Vec<RawFd>,
    consume_allocs: usize,
    pipe_errors: usize,
    pcp_blocks: usize,
}

const CHUNK: usize = 8 << 20;

impl Fragmenter {
    fn fragment(&mut self) -> Result<(), String> {
        // 1. Pin nearly all memory, chunk by chunk, never below the reserve (no OOM kill).
        loop {
            let free = meminfo_kb("MemFree");
            if free < RESERVE_KB + (CHUNK / 1024) as u64 {
                break;
            }
            let p = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    CHUNK,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                    -1,
                    0,
                )
            };
            if p == libc::MAP_FAILED {
                return Err(format!("mmap: {}", std::io::Error::last_os_error()));
            }
            if unsafe { libc::mlock(p, CHUNK) } != 0 {
                let e = std::io::Error::last_os_error();
                unsafe { libc::munmap(p, CHUNK) };
                return Err(format!("mlock: {e}"));
            }
            self.chunks.push((p as usize, CHUNK));
            self.pinned_pages += CHUNK / PAGE;
        }
        // 2. Free every page whose buddy (pfn ^ 1) stays pinned: order-0 holes the buddy allocator
        // cannot merge, and compaction may not move the pinned pages (compact_unevictable_allowed=0).
        self.punch_holes()?;
        // The bookkeeping above is freed by now: its blocks are back in the buddy lists.
        // 3. Take every remaining block of order >= 1.
        self.consume(true)
    }

    /// Takes every free block of order >= 1, the highest first, until /proc/buddyinfo shows none
    /// (then, with `drain_pcp`, the blocks the per-CPU lists hide, and again). Never below the
    /// floor: an allocation that misses its block falls back to order 0 and eats the holes.
    fn consume(&mut self, drain_pcp: bool) -> Result<(), String> {
        let started = Instant::now();
        let mut sock: Option<RawFd> = None;
        let mut last_report = Instant::now();
        let mut last_counts = Vec::new();
        let mut stuck = 0;
        let mut drained = !drain_pcp;
        loop {
            let b = Buddy::read();
            let Some(h) = b.highest() else {
                if drained {
                    return Ok(());
                }
                self.drain_pcp();
                drained = true;
                continue;
            };
            let floor = (FLOOR_MIB << 20) / PAGE as u64;
            if started.elapsed() > Duration::from_secs(120) || b.free_pages() < floor {
                return Err(format!(
                    "blocks of order >= 1 still free after {} allocations in {:.0?} ({:.1} MiB free): {:?}",
                    self.consume_allocs,
                    started.elapsed(),
                    b.free_mib(),
                    b.lines
                ));
            }
            if last_report.elapsed() > Duration::from_secs(3) {
                println!(
                    "frag-scenario: consuming: {} allocations, free per order {:?}",
                    self.consume_allocs, b.counts
                );
                last_report = Instant::now();
            }
            if b.counts == last_counts {
                stuck += 1;
                if stuck > 200 {
                    return Err(format!(
                        "the blocks of order >= 1 do not go away ({} allocations): {:?}",
                        self.consume_allocs, b.lines
                    ));
                }
            } else {
                stuck = 0;
            }
            for _ in 0..b.counts[h].max(1) {
                self.consume_allocs += 1;
                // A pipe ring of order <= 3 (PAGE_ALLOC_COSTLY_ORDER) would not fail but wake the
                // OOM killer: those orders go to socket data, which falls back quietly.
                if h >= 4 {
                    let _ = self.pipe_ring(h);
                } else {
                    sock = self.socket_block(sock, h);
                }
            }
            last_counts = b.counts;
        }
    }

    /// Frees every pinned page whose buddy (pfn ^ 1) stays pinned.
    fn punch_holes(&mut self) -> Result<(), String> {
        let mut pages: Vec<(u64, usize)> = Vec::with_capacity(self.pinned_pages);
        let mut pagemap =
            fs::File::open("/proc/self/pagemap").map_err(|e| format!("pagemap: {e}"))?;
        for &(addr, len) in &self.chunks {
            let n = len / PAGE;
            let mut buf = vec![0u8; n * 8];
            pagemap
                .seek(SeekFrom::Start((addr / PAGE * 8) as u64))
                .map_err(|e| e.to_string())?;
            pagemap
                .read_exact(&mut buf)
                .map_err(|e| format!("pagemap read: {e}"))?;
            for i in 0..n {
                let v = u64::from_le_bytes(buf[i * 8..i * 8 + 8].try_into().unwrap());
                if v >> 63 == 1 {
                    pages.push((v & ((1 << 55) - 1), addr + i * PAGE));
                }
            }
        }
        let pfns: BTreeSet<u64> = pages.iter().map(|p| p.0).collect();
        if pfns.len() < pages.len() / 2 || pfns.iter().all(|&p| p == 0) {
            return Err("pagemap gave no PFNs".into());
        }
        for &(pfn, addr) in &pages {
            if pfn & 1 == 1 && pfns.contains(&(pfn ^ 1)) {
                unsafe { libc::munmap(addr as *mut libc::c_void, PAGE) };
                self.holes += 1;
            }
        }
        Ok(())
    }

    /// A pipe whose ring (40-byte pipe_buffer slots, kcalloc) takes one block of `order`.
    fn pipe_ring(&mut self, order: usize) -> bool {
        let mut fds = [0; 2];
        if unsafe { libc::pipe(fds.as_mut_ptr()) } != 0 {
            return false;
        }
        self.pipes.extend(fds);
        let size = 1usize << (order + 18);
        if unsafe { libc::fcntl(fds[1], libc::F_SETPIPE_SZ, size as libc::c_int) } < 0 {
            // A failed pipe still holds memory: close it.
            unsafe {
                libc::close(fds[0]);
                libc::close(fds[1]);
            }
            self.pipes.truncate(self.pipes.len() - 2);
            self.pipe_errors += 1;
            return false;
        }
        true
    }

    /// The per-CPU page lists keep blocks of order 1..3 and the pageblock order (5.13 and later)
    /// that buddyinfo does not show: on each CPU, take blocks of those orders.
    fn drain_pcp(&mut self) {
        let cpus = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) }.max(1) as usize;
        for cpu in 0..cpus {
            unsafe {
                let mut set: libc::cpu_set_t = std::mem::zeroed();
                libc::CPU_SET(cpu, &mut set);
                libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
            }
            for _ in 0..16 {
                self.consume_allocs += 1;
                if !self.pipe_ring(9) {
                    break;
                }
                self.pcp_blocks += 1;
            }
            // Orders 3..1 through socket data: a miss falls back to order 0 (a few holes), where
            // a pipe ring of order <= 3 would wake the OOM killer instead of failing.
            let mut sock = None;
            for order in [3, 2, 1] {
                for _ in 0..48 {
                    self.consume_allocs += 1;
                    sock = self.socket_block(sock, order);
                }
            }
        }
        unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            for cpu in 0..cpus {
                libc::CPU_SET(cpu, &mut set);
            }
            libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
        }
    }

    /// Queues 2^order pages in a unix stream socket: the data goes in one page fragment of that
    /// order. Returns the socket to go on with.
    fn socket_block(&mut self, sock: Option<RawFd>, order: usize) -> Option<RawFd> {
        static BUF: [u8; 32768] = [0x5a; 32768];
        let len = PAGE << order;
        let send = |fd: RawFd| unsafe {
            libc::send(
                fd,
                BUF.as_ptr() as *const libc::c_void,
                len,
                libc::MSG_DONTWAIT,
            ) > 0
        };
        if let Some(fd) = sock
            && send(fd)
        {
            return Some(fd);
        }
        // None yet, or full: a new pair.
        let fd = unix_pair(&mut self.socks)?;
        send(fd).then_some(fd)
    }
}

/// A unix stream socket pair with a large send buffer; both ends go to `keep`. Returns the sender.
fn unix_pair(keep: &mut Vec<RawFd>) -> Option<RawFd> {
    let mut sv = [0; 2];
    if unsafe { libc::socketpair(libc::AF_UNIX, libc::SOCK_STREAM, 0, sv.as_mut_ptr()) } != 0 {
        return None;
    }
    let big: libc::c_int = 64 << 20;
    unsafe {
        libc::setsockopt(
            sv[0],
            libc::SOL_SOCKET,
            libc::SO_SNDBUFFORCE,
            &big as *const _ as *const libc::c_void,
            4,
        );
    }
    keep.extend(sv);
    Some(sv[0])
}

/// A child named `netns-maker`, forked before memory is fragmented, that creates network
/// namespaces when told to: each command on its pipe is a count, each answer `<created> <errors>`.
/// Besides unshare it only reads and writes its pipes, so that every allocation it makes in the
/// window is netns creation's.
struct NetnsMaker {
    pid: i32,
    go: RawFd,
    result: RawFd,
}

/// What the netns step did.
struct NetnsRun {
    pid: i32,
    created: usize,
    errors: Vec<String>,
    /// Namespaces asked for, per batch.
    batches: Vec<usize>,
    /// Failed allocations of order >= 1 in the child after each batch, per the watch instance.
    seen: Vec<u64>,
    /// Why the step ended.
    stop: String,
}

/// The first batch: the incident's scale. More batches follow until a failure is seen.
const NETNS_FIRST: usize = 16;
const NETNS_BATCH: usize = 8;
const NETNS_MAX: usize = 96;
const NETNS_MAX_SECS: u64 = 30;
/// A batch that takes longer is stuck (an allocation retrying for ever): the child is killed.
const NETNS_BATCH_TIMEOUT_MS: i32 = 60_000;

impl NetnsMaker {
    /// Panics when no child can be made: every later step needs it.
    fn fork() -> Self {
        let (pid, go, result) = fork_piped(NETNS_COMM, |go, res| {
            // Strings with room enough, so that the loop's own heap does not grow.
            let mut errs = String::with_capacity(16 << 10);
            let mut msg = String::with_capacity(16 << 10);
            let mut byte = 0u8;
            // A count of 0 ends it (the pinner, forked later, holds the pipe's write end too: no
            // end of file comes).
            while unsafe { libc::read(go, &mut byte as *mut u8 as *mut libc::c_void, 1) } == 1
                && byte > 0
            {
                let mut ok = 0;
                errs.clear();
                for _ in 0..byte {
                    // The parent keeps each namespace alive (so that each new one needs new
                    // memory) by opening /proc/PID/ns/net: an open here would allocate outside
                    // netns creation.
                    if unsafe { libc::unshare(libc::CLONE_NEWNET) } == 0 {
                        ok += 1;
                    } else {
                        errs.push_str(&format!("{};", std::io::Error::last_os_error()));
                    }
                }
                msg.clear();
                msg.push_str(&format!("{ok} {errs}\n"));
                unsafe { libc::write(res, msg.as_ptr() as *const libc::c_void, msg.len()) };
            }
        })
        .unwrap_or_else(|e| panic!("cannot start {NETNS_COMM}: {e}"));
        Self { pid, go, result }
    }

    /// Asks for `n` namespaces; (created, errors), or why there is no answer.
    fn batch(&self, n: usize) -> Result<(usize, Vec<String>), String> {
        let byte = n.min(255) as u8;
        if unsafe { libc::write(self.go, &byte as *const u8 as *const libc::c_void, 1) } != 1 {
            return Err("the child is gone (OOM kill?)".into());
        }
        let mut pfd = libc::pollfd {
            fd: self.result,
            events: libc::POLLIN,
            revents: 0,
        };
        if unsafe { libc::poll(&mut pfd, 1, NETNS_BATCH_TIMEOUT_MS) } != 1 {
            let stack = fs::read_to_string(format!("/proc/{}/stack", self.pid)).unwrap_or_default();
            unsafe { libc::kill(self.pid, libc::SIGKILL) };
            return Err(format!(
                "no answer in {} s; the child's kernel stack: {}",
                NETNS_BATCH_TIMEOUT_MS / 1000,
                stack.lines().take(16).collect::<Vec<_>>().join(" <- ")
            ));
        }
        let msg = read_line(self.result);
        let (ok, errs) = msg
            .trim_end_matches('\n')
            .split_once(' ')
            .ok_or_else(|| format!("the child died (OOM kill?): {msg:?}"))?;
        let errors = errs
            .split(';')
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect();
        Ok((ok.parse().unwrap_or(0), errors))
    }

    /// Creates NETNS_FIRST namespaces, then batches of NETNS_BATCH until the watch instance has
    /// seen a failed allocation of order >= 1 in the child, NETNS_MAX namespaces or
    /// NETNS_MAX_SECS. Whether a failure comes within the first batch depends on what the slab
    /// caches netns creation uses still hold (partial slabs, per-CPU slabs), so the step goes on
    /// until one comes, bounded, and says how far it went.
    fn run(self, watch: Option<&NetnsWatch>, pinner: Option<i32>) -> NetnsRun {
        let started = Instant::now();
        let mut r = NetnsRun {
            pid: self.pid,
            created: 0,
            errors: Vec::new(),
            batches: Vec::new(),
            seen: Vec::new(),
            stop: String::new(),
        };
        'batches: loop {
            let n = if r.batches.is_empty() {
                NETNS_FIRST
            } else {
                NETNS_BATCH
            };
            r.batches.push(n);
            for _ in 0..n {
                match self.batch(1) {
                    Ok((ok, errs)) => {
                        r.created += ok;
                        r.errors.extend(errs);
                        if ok == 1 {
                            // Held until this program exits.
                            let path = CString::new(format!("/proc/{}/ns/net", self.pid)).unwrap();
                            let fd = unsafe { libc::open(path.as_ptr(), libc::O_RDONLY) };
                            if fd < 0 {
                                r.errors.push(format!(
                                    "open {path:?}: {}",
                                    std::io::Error::last_os_error()
                                ));
                            }
                        }
                    }
                    Err(e) => {
                        r.stop = e;
                        break 'batches;
                    }
                }
            }
            println!(
                "frag-scenario: netns batch {}: {} created so far, {:.1?}",
                r.batches.len(),
                r.created,
                started.elapsed()
            );
            let Some(w) = watch else {
                r.stop = "no watch instance: one batch".into();
                break;
            };
            let seen = w.failures();
            r.seen.push(seen);
            let asked: usize = r.batches.iter().sum();
            if seen > 0 {
                r.stop = format!("failure seen after {asked} namespaces");
                break;
            }
            if asked + NETNS_BATCH > NETNS_MAX {
                r.stop = format!("no failure seen in {asked} namespaces (limit {NETNS_MAX})");
                break;
            }
            if started.elapsed() > Duration::from_secs(NETNS_MAX_SECS) {
                r.stop = format!("no failure seen in {asked} namespaces in {NETNS_MAX_SECS} s");
                break;
            }
            if !r.errors.is_empty() {
                r.stop = "unshare failed".into();
                break;
            }
            // Killed by the OOM killer (the fallbacks of the failed requests cannot fail), the
            // pinner took the fragmentation with it: more namespaces would prove nothing.
            if pinner.is_some_and(|p| !alive(p)) {
                r.stop = format!("the pinner is gone (OOM kill) after {asked} namespaces");
                break;
            }
        }
        let mut status = 0;
        unsafe {
            libc::write(self.go, [0u8].as_ptr() as *const libc::c_void, 1);
            libc::close(self.go);
            libc::waitpid(self.pid, &mut status, 0);
            libc::close(self.result);
        }
        r
    }
}

/// A tracefs instance of its own (so the window's ftrace count is untouched) that records the
/// netns child's failed allocations of order >= 1: how the netns step knows when to stop.
/// Read through `trace_pipe`, opened in advance: opening `trace` allocates an iterator of several
/// pages, a request that may not fail, in the fragmented guest.
struct NetnsWatch {
    dir: String,
    pipe: fs::File,
    seen: std::cell::Cell<u64>,
}

impl NetnsWatch {
    fn start(pid: i32) -> Result<Self, String> {
        let dir = format!("{TRACING}/instances/netns-watch");
        if let Err(e) = fs::create_dir(&dir)
            && e.kind() != std::io::ErrorKind::AlreadyExists
        {
            return Err(format!("mkdir {dir}: {e}"));
        }
        let ev = format!("{dir}/events/kmem/mm_page_alloc");
        write(&format!("{dir}/buffer_size_kb"), "256")?;
        write(
            &format!("{ev}/filter"),
            &format!("common_pid == {pid} && pfn == 18446744073709551615 && order >= 1"),
        )?;
        write(&format!("{ev}/enable"), "1")?;
        write(&format!("{dir}/tracing_on"), "1")?;
        use std::os::unix::fs::OpenOptionsExt;
        let pipe = fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(format!("{dir}/trace_pipe"))
            .map_err(|e| format!("open {dir}/trace_pipe: {e}"))?;
        Ok(Self {
            dir,
            pipe,
            seen: std::cell::Cell::new(0),
        })
    }

    /// The failures recorded so far (trace_pipe consumes what it returns: they add up).
    fn failures(&self) -> u64 {
        static BUF: std::sync::Mutex<[u8; 16384]> = std::sync::Mutex::new([0; 16384]);
        let mut buf = BUF.lock().unwrap();
        let mut f = &self.pipe;
        // One event per line, each line ending in its gfp flags: count the newlines.
        while let Ok(n) = f.read(&mut buf[..]) {
            if n == 0 {
                break;
            }
            let lines = buf[..n].iter().filter(|&&b| b == b'\n').count() as u64;
            self.seen.set(self.seen.get() + lines);
        }
        self.seen.get()
    }

    fn stop(self) {
        let _ = write(
            &format!("{}/events/kmem/mm_page_alloc/enable", self.dir),
            "0",
        );
        drop(self.pipe);
        let _ = fs::remove_dir(&self.dir);
    }
}

/// The child that holds the fragmentation: pinned memory with holes, pipes and sockets. It is the
/// OOM killer's preferred victim, and killing it undoes everything. Once it has reported, it
/// waits for commands: `c` takes the blocks of order >= 1 that came back free since (kernel
/// memory freed late: RCU callbacks, slabs discarded, fragtrace's heap) and reports.
struct Pinner {
    pid: i32,
    report: Value,
    cmd: RawFd,
    res: RawFd,
}

impl Pinner {
    fn spawn() -> Result<Self, String> {
        Self::spawn_with(Some(1000))
    }

    /// `oom_score_adj`: the pinner's own, or None to leave it as the kernel sets it (0).
    fn spawn_with(oom_score_adj: Option<i32>) -> Result<Self, String> {
        let (pid, cmd, res) = fork_piped("frag-pinner", |cmd, res| {
            // This program's -1000 is inherited: the pinner's own score, or the kernel's 0.
            let _ = fs::write(
                "/proc/self/oom_score_adj",
                oom_score_adj.unwrap_or(0).to_string(),
            );
            let mut f = Fragmenter::default();
            let r = f.fragment();
            let report = json!({
                "pinned_mib": f.pinned_pages * PAGE / (1 << 20),
                "holes_mib": f.holes * PAGE / (1 << 20),
                "pipes": f.pipes.len() / 2,
                "socket_pairs": f.socks.len() / 2,
                "consume_allocs": f.consume_allocs,
                "pipe_errors": f.pipe_errors,
                "pcp_blocks": f.pcp_blocks,
                "error": r.err(),
            });
            write_line(res, &report.to_string());
            let mut byte = 0u8;
            while unsafe { libc::read(cmd, &mut byte as *mut u8 as *mut libc::c_void, 1) } == 1 {
                let before = Buddy::read();
                let allocs = f.consume_allocs;
                let r = f.consume(false);
                let report = json!({
                    "blocks_found": before.free_blocks_from(1),
                    "highest_order": before.highest(),
                    "allocs": f.consume_allocs - allocs,
                    "error": r.err(),
                });
                write_line(res, &report.to_string());
            }
            // The parent is gone: hold on until killed.
            loop {
                unsafe { libc::pause() };
            }
        })?;
        let report = first_report(res, "the pinner")?;
        Ok(Self {
            pid,
            report,
            cmd,
            res,
        })
    }

    /// Has the pinner take the blocks of order >= 1 that are free again; its report.
    fn reconsume(&self) -> Value {
        let sent = unsafe { libc::write(self.cmd, b"c".as_ptr() as *const libc::c_void, 1) };
        let text = if sent == 1 {
            read_line(self.res)
        } else {
            String::new()
        };
        serde_json::from_str(text.trim()).unwrap_or_else(|_| {
            json!({ "error": if alive(self.pid) {
                format!("the pinner did not answer: {}", clip(&text, 200))
            } else {
                "the pinner is gone (OOM kill)".to_string()
            } })
        })
    }

    fn release(self) {
        kill_piped(self.pid, self.cmd, self.res);
    }
}

/// Forks a child named `comm` with a pipe each way, runs `body(commands, results)` in it on the
/// child's ends, then `_exit(0)`. The parent gets the pid, the commands' write end and the
/// results' read end.
fn fork_piped(comm: &str, body: impl FnOnce(RawFd, RawFd)) -> Result<(i32, RawFd, RawFd), String> {
    let (mut cmd, mut res) = ([0; 2], [0; 2]);
    // SAFETY: plain system calls on arrays of two descriptors.
    unsafe {
        if libc::pipe(cmd.as_mut_ptr()) != 0 || libc::pipe(res.as_mut_ptr()) != 0 {
            return Err(format!("pipe: {}", std::io::Error::last_os_error()));
        }
    }
    // SAFETY: the children run plain system calls and allocations, then _exit.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(format!("fork: {}", std::io::Error::last_os_error()));
    }
    if pid == 0 {
        let name = CString::new(comm).unwrap();
        // SAFETY: naming this process and closing the parent's ends in it.
        unsafe {
            libc::prctl(libc::PR_SET_NAME, name.as_ptr() as libc::c_ulong, 0, 0, 0);
            libc::close(res[0]);
            libc::close(cmd[1]);
        }
        body(cmd[0], res[1]);
        // SAFETY: ends the child.
        unsafe { libc::_exit(0) };
    }
    // SAFETY: closing this side's copies of the child's ends.
    unsafe {
        libc::close(res[1]);
        libc::close(cmd[0]);
    }
    Ok((pid, cmd[1], res[0]))
}

/// The first line a piped child writes, as JSON.
fn first_report(res: RawFd, who: &str) -> Result<Value, String> {
    let text = read_line(res);
    serde_json::from_str(text.trim())
        .map_err(|_| format!("{who} died before reporting: {}", clip(&text, 200)))
}

/// Closes a piped child's pipes, kills it and reaps it.
fn kill_piped(pid: i32, cmd: RawFd, res: RawFd) {
    let mut status = 0;
    // SAFETY: our own descriptors and child.
    unsafe {
        libc::close(cmd);
        libc::close(res);
        libc::kill(pid, libc::SIGKILL);
        libc::waitpid(pid, &mut status, 0);
    }
}

/// Whether a child runs (neither gone nor a zombie).
fn alive(pid: i32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(") ").map(|r| !r.1.starts_with(['Z', 'X'])))
        .unwrap_or(false)
}

fn write_line(fd: RawFd, line: &str) {
    let msg = format!("{line}\n");
    unsafe { libc::write(fd, msg.as_ptr() as *const libc::c_void, msg.len()) };
}

/// Reads up to a newline (or end of file) from a pipe.
fn read_line(fd: RawFd) -> String {
    let mut text = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = unsafe { libc::read(fd, buf.as_mut_ptr() as *mut libc::c_void, buf.len()) };
        if n <= 0 {
            break;
        }
        text.extend_from_slice(&buf[..n as usize]);
        if text.ends_with(b"\n") {
            break;
        }
    }
    String::from_utf8_lossy(&text).into_owned()
}

fn request_hugepages(n: u32) -> u64 {
    let _ = fs::write("/proc/sys/vm/nr_hugepages", n.to_string());
    fs::read_to_string("/proc/sys/vm/nr_hugepages")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

/// Sends `count` messages of `size` bytes on a fresh unix stream pair (order-3 page frags first).
fn socket_sends(count: usize, size: usize) -> usize {
    let mut fds = Vec::new();
    let Some(fd) = unix_pair(&mut fds) else {
        return 0;
    };
    let buf = vec![0xa5u8; size];
    let mut sent = 0;
    for _ in 0..count {
        let n = unsafe {
            libc::send(
                fd,
                buf.as_ptr() as *const libc::c_void,
                size,
                libc::MSG_DONTWAIT,
            )
        };
        if n <= 0 {
            break;
        }
        sent += n as usize;
    }
    for fd in fds {
        unsafe { libc::close(fd) };
    }
    sent
}

/// ftrace's own count of failed page allocations: kmem/mm_page_alloc with pfn == -1.
struct Ftrace;

struct FtEvent {
    comm: String,
    pid: i32,
    tgid: Option<i32>,
    order: u32,
    gfp: String,
}

struct FtraceRecord {
    events: Vec<FtEvent>,
    overrun: u64,
}

impl Ftrace {
    fn start() -> Result<Self, String> {
        write(&format!("{TRACING}/tracing_on"), "0")?;
        write(&format!("{EVENT}/enable"), "0")?;
        write(&format!("{TRACING}/buffer_size_kb"), "8192")?;
        write(&format!("{TRACING}/trace"), "")?;
        // Each line names its thread group too, so fragtrace's own allocations (which it does
        // not trace) are known even from threads that have exited by the end.
        write(&format!("{TRACING}/options/record-tgid"), "1")?;
        // The tracepoint records pfn = -1UL for a NULL page.
        write(&format!("{EVENT}/filter"), "pfn == 18446744073709551615")?;
        write(&format!("{EVENT}/enable"), "1")?;
        write(&format!("{TRACING}/tracing_on"), "1")?;
        Ok(Ftrace)
    }

    fn stop(self) -> Result<FtraceRecord, String> {
        write(&format!("{EVENT}/enable"), "0")?;
        write(&format!("{TRACING}/tracing_on"), "0")?;
        let text = fs::read_to_string(format!("{TRACING}/trace"))
            .map_err(|e| format!("read trace: {e}"))?;
        let mut events = Vec::new();
        for l in text
            .lines()
            .filter(|l| !l.starts_with('#') && l.contains("mm_page_alloc:"))
        {
            // `comm-tid (tgid) [cpu] ...`; the tgid reads `-------` when the kernel lost it.
            let head = l.split(" [").next().unwrap_or("").trim();
            let (task, tgid) = match head.rsplit_once(" (") {
                Some((task, tgid)) => (task.trim(), tgid.trim_end_matches(')').trim().parse().ok()),
                None => (head, None),
            };
            let (comm, pid) = task.rsplit_once('-').unwrap_or((task, "0"));
            let field = |k: &str| {
                l.split_whitespace()
                    .find_map(|w| w.strip_prefix(k))
                    .unwrap_or("")
                    .to_string()
            };
            events.push(FtEvent {
                comm: comm.to_string(),
                pid: pid.parse().unwrap_or(0),
                tgid,
                order: field("order=").parse().unwrap_or(u32::MAX),
                gfp: field("gfp_flags="),
            });
        }
        let mut overrun = 0;
        if let Ok(cpus) = fs::read_dir(format!("{TRACING}/per_cpu")) {
            for c in cpus.flatten() {
                let stats = fs::read_to_string(c.path().join("stats")).unwrap_or_default();
                overrun += stats
                    .lines()
                    .find_map(|l| l.strip_prefix("overrun:")?.trim().parse::<u64>().ok())
                    .unwrap_or(0);
            }
        }
        let _ = write(&format!("{EVENT}/filter"), "0");
        Ok(FtraceRecord { events, overrun })
    }
}

/// Forks a child that joins the cgroup `dir` (with an OOM score of its own: this program's is
/// -1000) and runs `work`, whose result is its exit status. Returns its pid and wait status.
fn in_cgroup_child(dir: &str, work: fn(&str) -> i32) -> (i32, i32) {
    // SAFETY: the child runs plain system calls and allocations, then _exit.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        let joined = write("/proc/self/oom_score_adj", "0")
            .and_then(|_| write(&format!("{dir}/cgroup.procs"), "0"));
        let code = if joined.is_ok() { work(dir) } else { 250 };
        unsafe { libc::_exit(code) };
    }
    let mut status = 0;
    // SAFETY: waiting for our own child.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    (pid, status)
}

/// Where `fill_then_grow_pipes` counts its ENOMEM calls as they happen (shared memory).
static ENOMEM_COUNTER: std::sync::atomic::AtomicPtr<u32> =
    std::sync::atomic::AtomicPtr::new(std::ptr::null_mut());

/// A number in one of the cgroup `dir`'s files; u64::MAX when unreadable ("max").
fn cgroup_value(dir: &str, file: &str) -> u64 {
    fs::read_to_string(format!("{dir}/{file}"))
        .ok()
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or(u64::MAX)
}

/// Touches anonymous memory in 256 KiB pieces until the cgroup `dir` (this task's) is 2 MiB
/// below its memory.max; the pieces are returned, to be held.
fn fill_to_2_mib_below_limit(dir: &str) -> Vec<Vec<u8>> {
    let limit = cgroup_value(dir, "memory.max");
    let mut held: Vec<Vec<u8>> = Vec::new();
    while cgroup_value(dir, "memory.current").saturating_add(2 << 20) + (256 << 10) <= limit {
        held.push(std::hint::black_box(vec![1u8; 256 << 10]));
    }
    held
}

/// Fills the cgroup to 2 MiB below memory.max, then asks for 16 MiB pipe buffers: each needs
/// an order-6 GFP_KERNEL_ACCOUNT allocation whose charge fails. Exit status: ENOMEM count,
/// also kept in `ENOMEM_COUNTER` as it goes.
fn fill_then_grow_pipes(dir: &str) -> i32 {
    let held = fill_to_2_mib_below_limit(dir);
    let mut enomem = 0;
    for _ in 0..16 {
        let mut fds = [0i32; 2];
        // SAFETY: plain system calls on descriptors this child owns; they stay open.
        unsafe {
            if libc::pipe(fds.as_mut_ptr()) != 0 {
                return 251;
            }
            if libc::fcntl(fds[0], libc::F_SETPIPE_SZ, 16 << 20) < 0
                && *libc::__errno_location() == libc::ENOMEM
            {
                enomem += 1;
                let counter = ENOMEM_COUNTER.load(std::sync::atomic::Ordering::SeqCst);
                if !counter.is_null() {
                    std::ptr::write_volatile(counter, enomem as u32);
                }
            }
        }
    }
    drop(held);
    enomem
}

/// Touches 128 MiB, four times the cgroup's limit: the cgroup's OOM killer ends it.
fn touch_beyond_limit(_dir: &str) -> i32 {
    let mut held: Vec<Vec<u8>> = Vec::new();
    for _ in 0..128 {
        held.push(std::hint::black_box(vec![1u8; 1 << 20]));
    }
    0
}

/// `fragtrace --json` in the background.
struct Tracer {
    child: Child,
    ready_after: Duration,
    /// fragtrace's own `start-up:` timings (`-v`).
    phases: Vec<String>,
}

struct Fail {
    pid: i32,
    comm: String,
    order: u32,
    gfp: String,
    stack: Vec<String>,
    netns: bool,
    netns_evidence: Option<String>,
    memcg_limited: bool,
    verdict: String,
    reason: String,
    zone_state_lag_ms: Option<i64>,
}

struct TracerOutput {
    fails: Vec<Fail>,
    slab_create_fails: Vec<Value>,
    /// `compaction` records (attempts, passes, retries).
    compactions: usize,
    oom_kills: Vec<Value>,
    first_fail: Option<Value>,
    summary: Option<Value>,
    summary_by_order: Option<BTreeMap<u32, usize>>,
    dropped: Option<u64>,
    pid: i32,
    tids: Vec<i32>,
    exit_ok: bool,
    status: String,
    stderr_tail: String,
}

impl Tracer {
    fn start(bin: &str) -> Result<Self, String> {
        Self::start_with(bin, &[], 900)
    }

    /// Runs `--duration secs`.
    fn start_for(bin: &str, secs: u32) -> Result<Self, String> {
        Self::start_with(bin, &[], secs)
    }

    /// `fragtrace ARGS... --json ... --duration secs`.
    fn start_with(bin: &str, args: &[&str], secs: u32) -> Result<Self, String> {
        Self::start_into(bin, args, secs, 0)
    }

    /// As [`Tracer::start_with`], the output file's first `prealloc` bytes allocated (zeros)
    /// before fragtrace writes: its lines then take no new page while it runs.
    fn start_into(bin: &str, args: &[&str], secs: u32, prealloc: i64) -> Result<Self, String> {
        let out = fs::File::create("/tmp/fragtrace.jsonl").map_err(|e| e.to_string())?;
        // SAFETY: fallocate on a file this program just opened.
        if prealloc > 0 && unsafe { libc::fallocate(out.as_raw_fd(), 0, 0, prealloc) } != 0 {
            return Err(format!(
                "fallocate /tmp/fragtrace.jsonl: {}",
                std::io::Error::last_os_error()
            ));
        }
        let err = fs::File::create("/tmp/fragtrace.err").map_err(|e| e.to_string())?;
        let started = Instant::now();
        // fragtrace starts as any tool would, at OOM score 0 (not this program's -1000), and
        // must protect itself.
        let mut command = Command::new(bin);
        // SAFETY: one write(2) to a procfs file between fork and exec.
        unsafe {
            command.pre_exec(|| fs::write("/proc/self/oom_score_adj", "0"));
        }
        let mut child = command
            .args(args)
            .args([
                "-v",
                "--json",
                "--no-status",
                "--duration",
                &secs.to_string(),
            ])
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .spawn()
            .map_err(|e| format!("cannot start {bin}: {e}"))?;
        // Ready when it says so: the line it prints once every hook is attached and the drain
        // runs (the count of its BPF fds can stall for seconds mid-load on slow kernels).
        loop {
            if let Ok(Some(st)) = child.try_wait() {
                return Err(format!(
                    "fragtrace --json exited at start ({st}): {}",
                    last_line(&fs::read_to_string("/tmp/fragtrace.err").unwrap_or_default())
                ));
            }
            let err = fs::read_to_string("/tmp/fragtrace.err").unwrap_or_default();
            if err.contains("fragtrace: tracing;") {
                break;
            }
            if started.elapsed() > Duration::from_secs(90) {
                let _ = child.kill();
                return Err(format!(
                    "fragtrace did not report tracing within 90 s: {}",
                    last_line(&err)
                ));
            }
            sleep(Duration::from_millis(50));
        }
        let phases = fs::read_to_string("/tmp/fragtrace.err")
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split_once("start-up: ").map(|p| p.1.to_string()))
            .collect();
        Ok(Self {
            ready_after: started.elapsed(),
            phases,
            child,
        })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn stop(&mut self) -> Result<TracerOutput, String> {
        let pid = self.child.id() as i32;
        let tids: Vec<i32> = fs::read_dir(format!("/proc/{pid}/task"))
            .map(|d| {
                d.flatten()
                    .filter_map(|e| e.file_name().to_str()?.parse().ok())
                    .collect()
            })
            .unwrap_or_default();
        unsafe { libc::kill(pid, libc::SIGINT) };
        self.finish(tids, Duration::from_secs(60))
    }

    /// Waits up to `wait` for fragtrace to exit (then kills it) and reads what it wrote.
    fn finish(&mut self, tids: Vec<i32>, wait: Duration) -> Result<TracerOutput, String> {
        let pid = self.child.id() as i32;
        let deadline = Instant::now() + wait;
        let status = loop {
            if let Ok(Some(st)) = self.child.try_wait() {
                break Some(st);
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                break None;
            }
            sleep(Duration::from_millis(100));
        };
        let text = fs::read_to_string("/tmp/fragtrace.jsonl").map_err(|e| e.to_string())?;
        // A preallocated file ends in zeros past what fragtrace wrote.
        let text = text.split('\0').next().unwrap_or_default();
        let stderr = fs::read_to_string("/tmp/fragtrace.err").unwrap_or_default();
        let mut out = TracerOutput {
            fails: Vec::new(),
            slab_create_fails: Vec::new(),
            compactions: 0,
            oom_kills: Vec::new(),
            first_fail: None,
            summary: None,
            summary_by_order: None,
            dropped: None,
            pid,
            tids,
            exit_ok: status.is_some_and(|s| s.success()),
            status: status.map_or(
                format!("killed after {wait:?} without exiting on its own"),
                |s| s.to_string(),
            ),
            stderr_tail: if status.is_some_and(|s| s.success()) {
                String::new()
            } else {
                last_line(&stderr)
            },
        };
        let mut bad = 0;
        for l in text.lines().filter(|l| !l.trim().is_empty()) {
            let Ok(v) = serde_json::from_str::<Value>(l) else {
                bad += 1;
                continue;
            };
            match v.get("type").and_then(Value::as_str) {
                Some("alloc_fail") => {
                    if out.first_fail.is_none() {
                        out.first_fail = Some(v.clone());
                    }
                    out.fails.push(Fail {
                        pid: v.get("pid").and_then(Value::as_i64).unwrap_or(-1) as i32,
                        comm: v
                            .get("comm")
                            .and_then(Value::as_str)
                            .unwrap_or("")
                            .to_string(),
                        order: v
                            .get("order")
                            .and_then(Value::as_u64)
                            .map_or(u32::MAX, |o| o as u32),
                        gfp: v
                            .get("gfp_flags")
                            .and_then(Value::as_str)
                            .unwrap_or("")
                            .to_string(),
                        stack: v
                            .get("stack")
                            .and_then(Value::as_array)
                            .map(|a| {
                                a.iter()
                                    .filter_map(|s| s.as_str().map(str::to_string))
                                    .collect()
                            })
                            .unwrap_or_default(),
                        netns: v.get("netns").and_then(Value::as_bool).unwrap_or(false),
                        netns_evidence: v
                            .get("netns_evidence")
                            .and_then(Value::as_str)
                            .map(str::to_string),
                        memcg_limited: v["memcg_limited"] == true,
                        verdict: v["verdict"].as_str().unwrap_or("").to_string(),
                        reason: v["reason"].as_str().unwrap_or("").to_string(),
                        zone_state_lag_ms: v["zone_state_lag_ms"].as_i64(),
                    });
                }
                Some("compaction") => out.compactions += 1,
                Some("oom_kill") => out.oom_kills.push(v),
                Some("slab_create_fail") => out.slab_create_fails.push(v),
                Some("summary") => {
                    out.dropped = v.get("dropped").and_then(Value::as_u64);
                    out.summary_by_order = v.get("fail_by_order").and_then(fail_by_order);
                    out.summary = Some(v);
                }
                _ => {}
            }
        }
        if bad > 0 {
            out.stderr_tail = format!("{bad} stdout lines are not JSON; {}", out.stderr_tail);
            out.exit_ok = false;
        }
        Ok(out)
    }
}

/// `fail_by_order`: counts indexed by order, or objects with order and count.
fn fail_by_order(v: &Value) -> Option<BTreeMap<u32, usize>> {
    let a = v.as_array()?;
    let mut m = BTreeMap::new();
    for (i, e) in a.iter().enumerate() {
        match e {
            Value::Number(n) => {
                let n = n.as_u64()? as usize;
                if n > 0 {
                    m.insert(i as u32, n);
                }
            }
            Value::Object(o) => {
                let order = o.get("order")?.as_u64()? as u32;
                let n = ["count", "failures", "n"]
                    .iter()
                    .find_map(|k| o.get(*k)?.as_u64())? as usize;
                if n > 0 {
                    m.insert(order, n);
                }
            }
            _ => return None,
        }
    }
    Some(m)
}

/// Seconds `fragtrace --duration` runs in the survive scenario: the workload ends well before,
/// and fragtrace must end on its own, with its summary.
const SURVIVE_SECS: u32 = 45;
/// What the squeezer touches at most: more than the guest's memory, so the OOM killer must run.
const SQUEEZE_MIB: usize = 1024;

/// A child named `frag-squeezer` (OOM score 0) that touches anonymous memory 1 MiB at a time,
/// up to SQUEEZE_MIB (more than the guest has, and there is no swap), then holds it.
fn squeezer() -> i32 {
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        let name = CString::new("frag-squeezer").unwrap();
        unsafe { libc::prctl(libc::PR_SET_NAME, name.as_ptr() as libc::c_ulong, 0, 0, 0) };
        let _ = fs::write("/proc/self/oom_score_adj", "0");
        for _ in 0..SQUEEZE_MIB {
            let p = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    1 << 20,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                    -1,
                    0,
                )
            };
            if p == libc::MAP_FAILED {
                break;
            }
            for off in (0..1 << 20).step_by(PAGE) {
                unsafe { *(p as *mut u8).add(off) = 1 };
            }
        }
        loop {
            unsafe { libc::pause() };
        }
    }
    pid
}

/// `Killed process PID (COMM)` lines of the kernel log, from the `skip`-th on.
fn killed_processes(skip: usize) -> Vec<(i32, String)> {
    dmesg()
        .lines()
        .filter_map(|l| l.split_once("Killed process ").map(|r| r.1))
        .skip(skip)
        .filter_map(|r| {
            let (pid, rest) = r.split_once(" (")?;
            let comm = rest.split_once(')')?.0;
            Some((pid.trim().parse().ok()?, comm.to_string()))
        })
        .collect()
}

impl Scenario {
    /// Issue 8, "survive": no margin and no protection but fragtrace's own. Memory is pinned in
    /// order-0 holes by a pinner at OOM score 0, then a squeezer (score 0) touches more memory
    /// than the guest has while a child creates network namespaces: the OOM killer must run,
    /// and chooses as it would on a real node (only this driver is protected, at -1000).
    /// fragtrace runs with `--duration` and must outlive it all, account for every failure
    /// ftrace saw, report every kill judged on zones read in the kernel, and end on its own.
    fn survive(&mut self, fragtrace: &str, run: usize) {
        let name = |c: &str| format!("survive.{run}.{c}");
        let t0 = Instant::now();
        let _ = kmsg();
        tune_sysctls();
        let _ = fs::write("/proc/self/oom_score_adj", "-1000");
        let kills_before = killed_processes(0).len();
        let mut tracer = match Tracer::start_for(fragtrace, SURVIVE_SECS) {
            Ok(t) => t,
            Err(e) => return self.check(&name("started"), false, e),
        };
        let tracer_pid = tracer.pid() as i32;
        let tracing_since = Instant::now();
        self.metric(
            &name("ready_s"),
            json!(round1(tracer.ready_after.as_secs_f64())),
        );
        self.metric(&name("startup"), json!(tracer.phases));
        let score =
            fs::read_to_string(format!("/proc/{tracer_pid}/oom_score_adj")).unwrap_or_default();
        let ftrace = Ftrace::start();
        let netns = NetnsMaker::fork();
        // Forked from this driver, it would inherit its -1000: back to the kernel's default.
        let _ = fs::write(format!("/proc/{}/oom_score_adj", netns.pid), "0");
        let pinner = Pinner::spawn_with(None);
        let after = Buddy::read();
        let squeezer = squeezer();
        // Namespaces while the squeezer eats what is left, until it is gone (killed) or bounded.
        let mut created = 0;
        let netns_stop;
        let tn = Instant::now();
        loop {
            if !alive(squeezer) {
                netns_stop = "squeezer gone".into();
                break;
            }
            if created >= NETNS_MAX || tn.elapsed() > Duration::from_secs(20) {
                netns_stop = format!("bounded ({created} namespaces, {:.0?})", tn.elapsed());
                break;
            }
            match netns.batch(4) {
                Ok((ok, _)) => created += ok,
                Err(e) => {
                    netns_stop = e;
                    break;
                }
            }
        }
        // The squeezer asks for more than there is: wait for the OOM killer to end it.
        let tw = Instant::now();
        while alive(squeezer) && tw.elapsed() < Duration::from_secs(20) {
            sleep(Duration::from_millis(100));
        }
        let squeezer_survived = alive(squeezer);
        let mut status = 0;
        unsafe {
            libc::kill(squeezer, libc::SIGKILL);
            libc::waitpid(squeezer, &mut status, 0);
            libc::write(netns.go, [0u8].as_ptr() as *const libc::c_void, 1);
            libc::close(netns.go);
            libc::kill(netns.pid, libc::SIGKILL);
            libc::waitpid(netns.pid, &mut status, 0);
            libc::close(netns.result);
        }
        let pinner_report = pinner
            .as_ref()
            .map_or_else(|e| json!({ "error": e }), |p| p.report.clone());
        if let Ok(p) = pinner {
            p.release();
        }
        let workload_secs = t0.elapsed().as_secs_f64();
        sleep(Duration::from_millis(500));
        let ft = ftrace.and_then(|f| f.stop());
        let tracer_alive = alive(tracer_pid);
        let tids: Vec<i32> = fs::read_dir(format!("/proc/{tracer_pid}/task"))
            .map(|d| {
                d.flatten()
                    .filter_map(|e| e.file_name().to_str()?.parse().ok())
                    .collect()
            })
            .unwrap_or_default();
        // fragtrace ends by itself at --duration.
        let left = Duration::from_secs(SURVIVE_SECS as u64).saturating_sub(tracing_since.elapsed());
        let out = tracer.finish(tids, left + Duration::from_secs(30));
        let kills = killed_processes(kills_before);

        self.metric(
            &name("workload"),
            json!({
                "free_mib_after_fragmenting": after.free_mib(),
                "free_blocks_order_ge1_after_fragmenting": after.free_blocks_from(1),
                "pinner": pinner_report,
                "netns_created": created,
                "netns_stop": netns_stop,
                "squeezer_survived": squeezer_survived,
                "workload_secs": round1(workload_secs),
                "kills": kills.iter().map(|(p, c)| format!("{c}:{p}")).collect::<Vec<_>>(),
            }),
        );
        let fragtrace_killed = kills.iter().any(|(p, _)| *p == tracer_pid);
        self.check(
            &name("not_victim"),
            score.trim() == "-1000" && !fragtrace_killed && tracer_alive && !kills.is_empty(),
            format!(
                "{} OOM kills ({}); fragtrace (pid {tracer_pid}, oom_score_adj {}, set by itself) {}",
                kills.len(),
                kills
                    .iter()
                    .map(|(p, c)| format!("{c}:{p}"))
                    .collect::<Vec<_>>()
                    .join(" "),
                score.trim(),
                if fragtrace_killed {
                    "was killed"
                } else if tracer_alive {
                    "alive after the workload"
                } else {
                    "gone before the end"
                }
            ),
        );
        let out = match out {
            Ok(o) => o,
            Err(e) => return self.check(&name("output"), false, e),
        };
        let summary = out.summary.clone().unwrap_or(Value::Null);
        let tracer_health = &summary["tracer"];
        self.check(
            &name("clean_exit"),
            out.summary.is_some() && out.exit_ok,
            format!(
                "exit {} at --duration {SURVIVE_SECS}, summary {}{}",
                out.status,
                if out.summary.is_some() {
                    "present"
                } else {
                    "missing"
                },
                if out.stderr_tail.is_empty() {
                    String::new()
                } else {
                    format!("; stderr: {}", out.stderr_tail)
                }
            ),
        );
        let lag = &tracer_health["output_lag"];
        let ms = |k: &str| lag[k].as_f64().map(|n| round1(n / 1e6));
        self.metric(
            &name("output_lag_ms"),
            json!({"p50": ms("p50_ns"), "p99": ms("p99_ns"), "max": ms("max_ns"), "count": lag["count"]}),
        );
        // Which stage holds events up: the same lag where each stage ends.
        let stages = &tracer_health["stage_lag"];
        let p = |stage: &str, k: &str| stages[stage][k].as_f64().map(|n| round1(n / 1e6));
        self.metric(
            &name("stage_lag_ms"),
            json!({
                "drained": {"p50": p("drained", "p50_ns"), "p99": p("drained", "p99_ns"), "max": p("drained", "max_ns")},
                "taken_up": {"p50": p("picked_up", "p50_ns"), "p99": p("picked_up", "p99_ns"), "max": p("picked_up", "max_ns")},
                "analysed": {"p50": p("analysed", "p50_ns"), "p99": p("analysed", "p99_ns"), "max": p("analysed", "max_ns")},
            }),
        );
        let spent = |k: &str| {
            let t = &tracer_health[k];
            json!({"count": t["count"], "total_ms": t["total_ns"].as_f64().map(|n| round1(n / 1e6)), "max_ms": t["max_ns"].as_f64().map(|n| round1(n / 1e6))})
        };
        self.metric(
            &name("analysis_time"),
            json!({"batches": spent("batches"), "host_reads": spent("host_reads"), "zone_reads": spent("zone_reads"), "page_faults": tracer_health["page_faults"], "batches_cpu_ms": tracer_health["batches_cpu_ns"].as_f64().map(|n| round1(n / 1e6)), "batches_page_faults": tracer_health["batches_page_faults"], "runqueue_wait_ms": tracer_health["analysis_runqueue_wait_ns"].as_f64().map(|n| round1(n / 1e6))}),
        );
        self.metric(
            &name("fragtrace_rss_kb"),
            json!({"rss": tracer_health["rss_kb"], "peak": tracer_health["peak_rss_kb"]}),
        );

        // Every failure ftrace saw (but fragtrace's own) is a line, counted without a record
        // (storm mode), or reported as lost.
        match ft {
            Err(e) => self.check(&name("accounted"), false, format!("ftrace: {e}")),
            Ok(ft) => {
                let counted = ft
                    .events
                    .iter()
                    .filter(|e| !out.tids.contains(&e.pid) && e.tgid != Some(tracer_pid))
                    .count() as u64
                    + ft.overrun;
                let n = |k: &str| summary[k].as_u64().unwrap_or(0);
                let t = |k: &str| tracer_health[k].as_u64().unwrap_or(0);
                let lines = out.fails.len() as u64;
                let storm = n("storm_aggregated");
                let lost = n("dropped") + t("drain_shed") + t("output_shed");
                self.metric(
                    &name("failures"),
                    json!({"ftrace": counted, "ftrace_overrun": ft.overrun, "lines": lines,
                           "storm_aggregated": storm, "lost": lost}),
                );
                self.check(
                    &name("accounted"),
                    counted > 0 && counted == lines + storm + lost,
                    format!(
                        "ftrace {counted} failed allocations (overrun {}), fragtrace {lines} \
                         alloc_fail lines + {storm} counted in storm mode + {lost} reported lost",
                        ft.overrun
                    ),
                );
            }
        }
        // Every kill is reported, judged on the zones read in the kernel when the victim was
        // chosen.
        let unreported: Vec<String> = kills
            .iter()
            .filter(|(pid, _)| {
                !out.oom_kills.iter().any(|k| {
                    k["victim_pid"] == *pid
                        && k["zones"].as_array().is_some_and(|z| !z.is_empty())
                        && k["reason"]
                            .as_str()
                            .is_some_and(|r| r.contains("zones read when the victim was chosen"))
                })
            })
            .map(|(p, c)| format!("{c}:{p}"))
            .collect();
        self.check(
            &name("kills_reported"),
            !kills.is_empty() && unreported.is_empty() && out.oom_kills.len() == kills.len(),
            format!(
                "kernel log {} kills, fragtrace {} oom_kill records; not reported with zones \
                 read in the kernel: {unreported:?}; e.g. {}",
                kills.len(),
                out.oom_kills.len(),
                out.oom_kills
                    .first()
                    .and_then(|k| k["reason"].as_str())
                    .unwrap_or("-")
            ),
        );
        self.metric(&name("secs"), json!(round1(t0.elapsed().as_secs_f64())));
    }
}

/// `fragtrace report ARGS...`: its standard output, or why it failed.
fn report(fragtrace: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new(fragtrace)
        .arg("report")
        .args(args)
        .output()
        .map_err(|e| format!("cannot run {fragtrace} report: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "`fragtrace report {}` {}: {}",
            args.join(" "),
            out.status,
            last_line(&String::from_utf8_lossy(&out.stderr))
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Folded lines as (stack, weight).
fn folded(path: &str) -> Result<Vec<(String, u64)>, String> {
    let text = fs::read_to_string(path).map_err(|e| format!("read {path}: {e}"))?;
    Ok(text
        .lines()
        .filter_map(|l| {
            let (stack, n) = l.rsplit_once(' ')?;
            Some((stack.to_string(), n.parse().ok()?))
        })
        .collect())
}

impl Scenario {
    /// Issues 10 and 11 on the fragmentation scenario: the live run recorded as it printed;
    /// `report --json` on the recording prints the same objects (docs/json.md: none is
    /// live-only); the failure-weighted folded stacks of the live run include the netns
    /// child's path through copy_net_ns; `report --weight stall` totals equal the summary's
    /// stall totals (each stack rounded down to whole microseconds); `report --weight
    /// fallbacks` names the pinner's fragmenting allocations.
    fn record_report(&mut self, fragtrace: &str, netns_pid: i32) {
        let live: Vec<Value> = fs::read_to_string("/tmp/fragtrace.jsonl")
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        match report(fragtrace, &[RECORDING, "--json"]) {
            Err(e) => self.check("report_same_objects", false, e),
            Ok(text) => {
                let replayed: Vec<Value> = text
                    .lines()
                    .filter_map(|l| serde_json::from_str(l).ok())
                    .collect();
                let first_diff = live
                    .iter()
                    .zip(&replayed)
                    .position(|(a, b)| a != b)
                    .map(|i| {
                        let (a, b) = (&live[i], &replayed[i]);
                        let keys: Vec<String> = a
                            .as_object()
                            .into_iter()
                            .flatten()
                            .filter(|(k, v)| b.get(k.as_str()) != Some(*v))
                            .map(|(k, _)| k.clone())
                            .collect();
                        format!("object {i} ({}) differs in {keys:?}", a["type"])
                    });
                let size = fs::metadata(RECORDING).map_or(0, |m| m.len());
                self.metric("recording_bytes", json!(size));
                self.check(
                    "report_same_objects",
                    !live.is_empty() && live.len() == replayed.len() && first_diff.is_none(),
                    format!(
                        "live {} objects, report {} objects; {}; recording {size} bytes",
                        live.len(),
                        replayed.len(),
                        first_diff.unwrap_or_else(|| "all equal".into())
                    ),
                );
            }
        }
        // Failure weights, from the live run.
        match folded(FOLDED_FAILURES) {
            Err(e) => self.check("folded_netns_path", false, e),
            Ok(lines) => {
                let netns: Vec<&(String, u64)> = lines
                    .iter()
                    .filter(|(s, _)| s.starts_with(&format!("{NETNS_COMM};")))
                    .collect();
                let through = netns
                    .iter()
                    .filter(|(s, _)| s.split(';').any(|f| f.starts_with("copy_net_ns")))
                    .map(|(_, n)| n)
                    .sum::<u64>();
                let total: u64 = netns.iter().map(|(_, n)| n).sum();
                self.check(
                    "folded_netns_path",
                    through > 0,
                    format!(
                        "{through} of {total} failures of {NETNS_COMM} (pid {netns_pid}) folded \
                         through copy_net_ns; {} folded stacks in all; e.g. {}",
                        lines.len(),
                        netns.first().map_or("-", |l| l.0.as_str())
                    ),
                );
            }
        }
        let summary = live
            .iter()
            .rev()
            .find(|v| v["type"] == "summary")
            .cloned()
            .unwrap_or(Value::Null);
        let stall_ns: u64 = ["compaction", "reclaim"]
            .iter()
            .map(|k| match &summary[*k]["stall_ns_by_order"] {
                Value::Array(a) => a.iter().filter_map(Value::as_u64).sum::<u64>(),
                Value::Object(o) => o.values().filter_map(Value::as_u64).sum::<u64>(),
                _ => 0,
            })
            .sum();
        let stall = report(
            fragtrace,
            &[
                RECORDING,
                "--folded",
                "/tmp/stall.folded",
                "--weight",
                "stall",
            ],
        )
        .and_then(|_| folded("/tmp/stall.folded"));
        match stall {
            Err(e) => self.check("folded_stall_totals", false, e),
            Ok(lines) => {
                let us: u64 = lines.iter().map(|(_, n)| n).sum();
                // Each stack is rounded down to whole microseconds.
                let ok = stall_ns > 0
                    && us * 1000 <= stall_ns
                    && stall_ns - us * 1000 < 1000 * lines.len().max(1) as u64;
                self.check(
                    "folded_stall_totals",
                    ok,
                    format!(
                        "--weight stall: {us} us over {} stacks; summary stall_ns_by_order \
                         (compaction + reclaim): {stall_ns} ns",
                        lines.len()
                    ),
                );
            }
        }
        let fallbacks = report(
            fragtrace,
            &[
                RECORDING,
                "--folded",
                "/tmp/fallbacks.folded",
                "--weight",
                "fallbacks",
            ],
        )
        .and_then(|_| folded("/tmp/fallbacks.folded"));
        match fallbacks {
            Err(e) => self.check("folded_fallbacks", false, e),
            Ok(lines) => {
                // The pinner's own allocations: pipe rings, socket buffers, the pages it pins.
                let named: Vec<&(String, u64)> = lines
                    .iter()
                    .filter(|(s, _)| {
                        s.starts_with("frag-pinner;")
                            && s.split(';').any(|f| {
                                [
                                    "pipe",
                                    "unix_stream",
                                    "sock_alloc",
                                    "skb",
                                    "handle_mm_fault",
                                ]
                                .iter()
                                .any(|n| f.contains(n))
                            })
                    })
                    .collect();
                let total: u64 = lines.iter().map(|(_, n)| n).sum();
                self.check(
                    "folded_fallbacks",
                    !named.is_empty(),
                    format!(
                        "{} of {} fallback stacks ({total} fallbacks) are frag-pinner's pipe, \
                         socket or page-fault allocations; heaviest: {}",
                        named.len(),
                        lines.len(),
                        lines.first().map_or("-".into(), |l| clip(&l.0, 300))
                    ),
                );
            }
        }
    }
}

/// Rounds of each variant in the cost scenario, interleaved.
const COST_ROUNDS: usize = 5;
/// Seconds of memory-cgroup charge failures per round.
const COST_SECS: f64 = 4.0;
const COST_CGROUP: &str = "/sys/fs/cgroup/fragtrace-cost";
/// fragtrace's output file in the cost scenario, allocated before it starts (a round's lines
/// take a few MiB).
const COST_OUTPUT_BYTES: i64 = 32 << 20;

/// A child in a limited memory cgroup that makes order-6 charge failures on demand, as
/// fail-bench does (on cgroup v2): filled to 2 MiB below `memory.max`, pipes resized to 16 MiB
/// until one fails, then that pipe asked again and again. Each call fires `mm_page_alloc` once,
/// with no page.
struct FailWorker {
    pid: i32,
    report: Value,
    cmd: RawFd,
    res: RawFd,
}

impl FailWorker {
    fn spawn(dir: &str) -> Result<Self, String> {
        let (pid, cmd, res) = fork_piped("cost-worker", |cmd, res| fail_worker(dir, cmd, res))?;
        let report = first_report(res, "the worker")?;
        let worker = Self {
            pid,
            report,
            cmd,
            res,
        };
        if let Some(e) = worker.report["error"].as_str() {
            let e = e.to_string();
            worker.stop();
            return Err(e);
        }
        Ok(worker)
    }

    /// Charge failures for `secs`: `{"calls","failures","secs"}`.
    fn run(&self, secs: f64) -> Result<Value, String> {
        write_line(self.cmd, &secs.to_string());
        let text = read_line(self.res);
        serde_json::from_str(text.trim()).map_err(|_| {
            format!(
                "the worker did not answer ({}): {}",
                if alive(self.pid) { "alive" } else { "gone" },
                clip(&text, 200)
            )
        })
    }

    fn stop(self) {
        kill_piped(self.pid, self.cmd, self.res);
    }
}

/// The worker's body: joins `dir`, fills it, reports, then runs each request read from `cmd`
/// (seconds) and answers on `res`, until `cmd` closes.
fn fail_worker(dir: &str, cmd: RawFd, res: RawFd) {
    let fail = |e: String| write_line(res, &json!({ "error": e }).to_string());
    if let Err(e) = write(&format!("{dir}/cgroup.procs"), "0") {
        return fail(e);
    }
    let held = fill_to_2_mib_below_limit(dir);
    let read = |f: &str| cgroup_value(dir, f);
    let limit = read("memory.max");
    // Pipes resized until the first failure stay open: their rings hold the last headroom.
    let mut fds = [0i32; 2];
    let mut kept = 0;
    loop {
        // SAFETY: valid array for pipe(2); fcntl on a pipe this process owns.
        unsafe {
            if libc::pipe(fds.as_mut_ptr()) != 0 {
                return fail(format!("pipe: {}", std::io::Error::last_os_error()));
            }
            if libc::fcntl(fds[0], libc::F_SETPIPE_SZ, 16 << 20) < 0 {
                break;
            }
        }
        kept += 1;
        if kept >= 1000 {
            return fail("F_SETPIPE_SZ never fails: is the memory cgroup limited?".into());
        }
    }
    write_line(
        res,
        &json!({"held_mib": held.len() / 4, "pipes_resized": kept, "memory_current": read("memory.current"), "memory_max": limit})
            .to_string(),
    );
    loop {
        let line = read_line(cmd);
        let Ok(secs) = line.trim().parse::<f64>() else {
            break;
        };
        let (started, limit_time) = (Instant::now(), Duration::from_secs_f64(secs));
        let (mut calls, mut failures) = (0u64, 0u64);
        while started.elapsed() < limit_time {
            for _ in 0..16 {
                calls += 1;
                // SAFETY: fcntl on a pipe this process owns.
                if unsafe { libc::fcntl(fds[0], libc::F_SETPIPE_SZ, 16 << 20) } < 0 {
                    failures += 1;
                }
            }
        }
        write_line(
            res,
            &json!({"calls": calls, "failures": failures, "secs": round1(started.elapsed().as_secs_f64())})
                .to_string(),
        );
    }
    drop(held);
}

/// One BPF program's accounting, as the kernel keeps it.
#[derive(Clone, Debug)]
struct ProgramRuns {
    id: u32,
    name: String,
    run_time_ns: u64,
    run_cnt: u64,
}

/// The `kmem:mm_page_alloc` program fragtrace `pid` holds (`page_alloc_btf`, `_raw` or `_tp`):
/// the one of those names that ran most.
fn page_alloc_program(pid: u32) -> Result<ProgramRuns, String> {
    let ids = program_stats::program_ids_of(pid);
    let costs = program_stats::read_costs();
    ids.iter()
        .filter_map(|id| Some((*id, costs.get(id)?)))
        .filter(|(_, c)| c.name.starts_with("page_alloc_"))
        .map(|(id, c)| ProgramRuns {
            id,
            name: c.name.clone(),
            run_time_ns: c.run_time_ns,
            run_cnt: c.run_count,
        })
        .max_by_key(|p| p.run_cnt)
        .ok_or_else(|| {
            format!(
                "no page_alloc_* program among the {} process {pid} holds",
                ids.len()
            )
        })
}

/// The median of `v` (the mean of the middle two for an even count); None when empty.
fn median(v: &[f64]) -> Option<f64> {
    let mut v: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

/// One round of the cost scenario.
struct CostRound {
    /// The pair of rounds (one of each variant, back to back) it belongs to.
    pair: usize,
    reads: bool,
    program: ProgramRuns,
    runs: u64,
    run_time_ns: u64,
    worker: Value,
    failures: u64,
    /// The worker's alloc_fail lines, and of them those judged on zones read in the kernel
    /// (zone state lag 0, memcg counters read `at the failure`) and those that name a read in
    /// the kernel at all (`at the failure`).
    lines: usize,
    judged_in_kernel: usize,
    naming_kernel_reads: usize,
    kernel_reads: Value,
    stderr_says_off: bool,
    /// Failures counted in the kernel at order 6, storm-aggregated, dropped.
    order6: u64,
    storm: u64,
    dropped: u64,
    exit: String,
}

impl CostRound {
    fn ns_per_run(&self) -> f64 {
        self.run_time_ns as f64 / self.runs.max(1) as f64
    }

    fn variant(&self) -> &'static str {
        if self.reads { "with" } else { "without" }
    }

    /// Every failure of the window took the record path (none aggregated or dropped) and ran
    /// the program once.
    fn complete(&self) -> bool {
        self.failures > 0
            && self.storm == 0
            && self.dropped == 0
            && self.order6 >= self.failures
            && self.runs >= self.failures
    }

    fn json(&self) -> Value {
        json!({
            "pair": self.pair + 1,
            "variant": self.variant(),
            "program": format!("{} (id {})", self.program.name, self.program.id),
            "runs": self.runs,
            "run_time_ns": self.run_time_ns,
            "ns_per_run": round1(self.ns_per_run()),
            "failures": self.failures,
            "calls": self.worker["calls"],
            "secs": self.worker["secs"],
            "lines": self.lines,
            "judged_in_kernel": self.judged_in_kernel,
            "naming_kernel_reads": self.naming_kernel_reads,
            "order6_counted": self.order6,
            "storm_aggregated": self.storm,
            "dropped": self.dropped,
        })
    }
}

impl Scenario {
    /// Issue 9, target 6 (mode cost; not in full): what the failure program's in-kernel zone and
    /// memory-cgroup reads cost. With `kernel.bpf_stats_enabled`, fragtrace runs
    /// `--storm-threshold 0` (every failure takes the record path) with and without
    /// `--no-kernel-reads`, in interleaved rounds, while a worker makes order-6 memory-cgroup
    /// charge failures for [`COST_SECS`]; the `page_alloc_*` program's run_time_ns and run_cnt
    /// over that window come from fragtrace's fdinfo. TCG distorts absolute times: the figure is
    /// the ratio of the medians, and the reads' share `(with - without) / with`. `cargo xtask
    /// vmtest --scenarios cost` boots one vCPU with `-icount`, so these times count guest
    /// instructions (4 ns each), not host time: memory latency is not in them.
    fn cost(&mut self, fragtrace: &str) {
        let t0 = Instant::now();
        let setup = write("/proc/sys/kernel/bpf_stats_enabled", "1")
            .and_then(|_| write("/sys/fs/cgroup/cgroup.subtree_control", "+memory"))
            .and_then(|_| match fs::create_dir(COST_CGROUP) {
                Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
                    Err(format!("mkdir {COST_CGROUP}: {e}"))
                }
                _ => Ok(()),
            })
            .and_then(|_| {
                write(
                    &format!("{COST_CGROUP}/memory.max"),
                    &(32u64 << 20).to_string(),
                )
            })
            .and_then(|_| write("/proc/sys/fs/pipe-max-size", &(16u32 << 20).to_string()));
        if let Err(e) = setup {
            return self.check("cost_setup", false, e);
        }
        let worker = match FailWorker::spawn(COST_CGROUP) {
            Ok(w) => w,
            Err(e) => return self.check("cost_setup", false, format!("worker: {e}")),
        };
        self.metric("cost_worker", worker.report.clone());
        let mut rounds: Vec<CostRound> = Vec::new();
        let mut errors = Vec::new();
        // with, without; without, with; ...: drift over the boot weighs on both alike.
        'rounds: for i in 0..COST_ROUNDS {
            let order = if i % 2 == 0 {
                [true, false]
            } else {
                [false, true]
            };
            for reads in order {
                match Self::cost_round(fragtrace, &worker, reads) {
                    Ok(r) => rounds.push(CostRound { pair: i, ..r }),
                    Err(e) => {
                        errors.push(format!(
                            "round {} {}: {e}",
                            i + 1,
                            if reads { "with" } else { "without" }
                        ));
                        if errors.len() > 2 {
                            break 'rounds;
                        }
                    }
                }
            }
        }
        worker.stop();
        let _ = fs::remove_dir(COST_CGROUP);
        let _ = write("/proc/sys/kernel/bpf_stats_enabled", "0");
        self.metric(
            "cost_rounds",
            Value::Array(rounds.iter().map(CostRound::json).collect()),
        );
        self.check(
            "cost_rounds",
            errors.is_empty() && rounds.len() == 2 * COST_ROUNDS,
            format!(
                "{} of {} rounds measured{}",
                rounds.len(),
                2 * COST_ROUNDS,
                if errors.is_empty() {
                    String::new()
                } else {
                    format!("; {}", errors.join("; "))
                }
            ),
        );
        let incomplete: Vec<String> = rounds
            .iter()
            .filter(|r| !r.complete())
            .map(|r| {
                format!(
                    "{}: {} failures, {} runs, {} counted at order 6, {} storm-aggregated, {} \
                     dropped, fragtrace {}",
                    r.variant(),
                    r.failures,
                    r.runs,
                    r.order6,
                    r.storm,
                    r.dropped,
                    r.exit
                )
            })
            .collect();
        self.check(
            "cost_every_failure_recorded",
            !rounds.is_empty() && incomplete.is_empty(),
            if incomplete.is_empty() {
                "every round: each worker failure counted at order 6 and sent as a record (none \
                 storm-aggregated or dropped), the program ran at least once per failure"
                    .to_string()
            } else {
                incomplete.join("; ")
            },
        );

        // The switch works: with it the failures are judged on what the kernel read at the
        // failure, without it on /proc and cgroupfs read later.
        let with: Vec<&CostRound> = rounds.iter().filter(|r| r.reads).collect();
        let without: Vec<&CostRound> = rounds.iter().filter(|r| !r.reads).collect();
        let sum =
            |v: &[&CostRound], f: fn(&CostRound) -> usize| v.iter().map(|r| f(r)).sum::<usize>();
        let kernel_reads_on =
            |r: &&CostRound| r.kernel_reads == json!({"memcg": null, "zones": null});
        let kernel_reads_off = |r: &&CostRound| {
            ["memcg", "zones"].iter().all(|k| {
                r.kernel_reads[k]
                    .as_str()
                    .is_some_and(|s| s.contains("--no-kernel-reads"))
            })
        };
        self.check(
            "cost_reads_on",
            !with.is_empty()
                && with
                    .iter()
                    .all(|r| kernel_reads_on(r) && r.lines > 0 && r.judged_in_kernel == r.lines),
            format!(
                "without the switch: {} of {} worker failures judged on zones and memcg counters \
                 read in the kernel at the failure (zone_state_lag_ms 0, reason `at the \
                 failure`); summary kernel_reads {}",
                sum(&with, |r| r.judged_in_kernel),
                sum(&with, |r| r.lines),
                with.first()
                    .map_or("-".into(), |r| r.kernel_reads.to_string())
            ),
        );
        self.check(
            "cost_reads_off",
            !without.is_empty()
                && without.iter().all(|r| {
                    kernel_reads_off(r)
                        && r.stderr_says_off
                        && r.lines > 0
                        && r.naming_kernel_reads == 0
                }),
            format!(
                "with --no-kernel-reads: {} of {} worker failures name a read in the kernel; \
                 summary kernel_reads {}; stderr says so in {} of {} rounds",
                sum(&without, |r| r.naming_kernel_reads),
                sum(&without, |r| r.lines),
                without
                    .first()
                    .map_or("-".into(), |r| r.kernel_reads.to_string()),
                without.iter().filter(|r| r.stderr_says_off).count(),
                without.len()
            ),
        );

        let per_run =
            |v: &[&CostRound]| median(&v.iter().map(|r| r.ns_per_run()).collect::<Vec<_>>());
        let (Some(w), Some(wo)) = (per_run(&with), per_run(&without)) else {
            return self.check("cost_measured", false, "no round of one variant");
        };
        let program = rounds
            .first()
            .map_or("?".into(), |r| r.program.name.clone());
        let runs = |v: &[&CostRound]| v.iter().map(|r| r.runs).collect::<Vec<_>>();
        let failures = |v: &[&CostRound]| v.iter().map(|r| r.failures).collect::<Vec<_>>();
        let ratio = w / wo;
        let share = (w - wo) / w;
        // Each pair's own ratio: the two rounds ran back to back, under the same host load.
        let pair_ratios: Vec<f64> = (0..COST_ROUNDS)
            .filter_map(|p| {
                let of = |reads: bool| rounds.iter().find(|r| r.pair == p && r.reads == reads);
                Some(of(true)?.ns_per_run() / of(false)?.ns_per_run())
            })
            .collect();
        let pooled = |v: &[&CostRound]| {
            v.iter().map(|r| r.run_time_ns).sum::<u64>() as f64
                / v.iter().map(|r| r.runs).sum::<u64>().max(1) as f64
        };
        let per_failure = |v: &[&CostRound]| {
            v.iter().map(|r| r.runs).sum::<u64>() as f64
                / v.iter().map(|r| r.failures).sum::<u64>().max(1) as f64
        };
        self.metric("cost_program", json!(program));
        self.metric("cost_ns_per_run_with_reads", json!(round1(w)));
        self.metric("cost_ns_per_run_without_reads", json!(round1(wo)));
        self.metric(
            "cost_ratio_with_over_without",
            json!((ratio * 1000.0).round() / 1000.0),
        );
        self.metric("cost_reads_share_pct", json!(round1(share * 100.0)));
        self.metric(
            "cost_pair_ratios",
            json!({
                "each": pair_ratios.iter().map(|r| (r * 1000.0).round() / 1000.0).collect::<Vec<_>>(),
                "median": median(&pair_ratios).map(|r| (r * 1000.0).round() / 1000.0),
            }),
        );
        self.metric(
            "cost_pooled_ns_per_run",
            json!({"with": round1(pooled(&with)), "without": round1(pooled(&without)),
                   "ratio": ((pooled(&with) / pooled(&without)) * 1000.0).round() / 1000.0}),
        );
        self.metric(
            "cost_runs",
            json!({"with": runs(&with), "without": runs(&without)}),
        );
        self.metric(
            "cost_runs_per_failure",
            json!({"with": (per_failure(&with) * 1000.0).round() / 1000.0,
                   "without": (per_failure(&without) * 1000.0).round() / 1000.0}),
        );
        self.metric(
            "cost_failures",
            json!({"with": failures(&with), "without": failures(&without)}),
        );
        self.info(
            "cost",
            format!(
                "{program}: {w:.0} ns per run with the zone and memcg reads, {wo:.0} without \
                 (medians of {} and {} rounds of {COST_SECS} s of order-6 memcg charge \
                 failures, ~{} runs each): ratio {ratio:.3} (median of the pairs' own ratios \
                 {}), the reads {:.1}% of the program's cost (TCG: compare ratios, not times)",
                with.len(),
                without.len(),
                rounds.iter().map(|r| r.runs).sum::<u64>() / rounds.len().max(1) as u64,
                median(&pair_ratios).map_or("-".into(), |r| format!("{r:.3}")),
                share * 100.0
            ),
        );
        self.metric("cost_secs", json!(round1(t0.elapsed().as_secs_f64())));
    }

    /// One round: fragtrace with (`reads`) or without the in-kernel reads, the worker's
    /// failures, the failure program's accounting over the worker's window.
    fn cost_round(fragtrace: &str, worker: &FailWorker, reads: bool) -> Result<CostRound, String> {
        let mut args = vec!["--storm-threshold", "0"];
        if !reads {
            args.push("--no-kernel-reads");
        }
        // The lines go to a file allocated beforehand: writing them allocates no page, so the
        // program's runs in the window are the worker's failures (and few others).
        let mut tracer = Tracer::start_into(fragtrace, &args, 300, COST_OUTPUT_BYTES)?;
        let pid = tracer.pid();
        let before = page_alloc_program(pid);
        let run = worker.run(COST_SECS);
        let after = page_alloc_program(pid);
        let out = tracer.stop()?;
        let (before, run, after) = (before?, run?, after?);
        if before.id != after.id {
            return Err(format!(
                "the page_alloc program changed: {} then {}",
                before.id, after.id
            ));
        }
        let summary = out.summary.clone().unwrap_or(Value::Null);
        let stderr = fs::read_to_string("/tmp/fragtrace.err").unwrap_or_default();
        let lines: Vec<&Fail> = out.fails.iter().filter(|f| f.pid == worker.pid).collect();
        Ok(CostRound {
            pair: 0,
            reads,
            runs: after.run_cnt.saturating_sub(before.run_cnt),
            run_time_ns: after.run_time_ns.saturating_sub(before.run_time_ns),
            program: after,
            failures: run["failures"].as_u64().unwrap_or(0),
            worker: run,
            lines: lines.len(),
            judged_in_kernel: lines
                .iter()
                .filter(|f| f.zone_state_lag_ms == Some(0) && f.reason.contains("at the failure"))
                .count(),
            naming_kernel_reads: lines
                .iter()
                .filter(|f| f.reason.contains("at the failure"))
                .count(),
            kernel_reads: summary["kernel_reads"].clone(),
            stderr_says_off: stderr.contains(
                "zones not read in the kernel at failures (turned off by --no-kernel-reads)",
            ),
            order6: out
                .summary_by_order
                .as_ref()
                .and_then(|m| m.get(&6).copied())
                .unwrap_or(0) as u64,
            storm: summary["storm_aggregated"].as_u64().unwrap_or(u64::MAX),
            dropped: out.dropped.unwrap_or(u64::MAX),
            exit: if out.exit_ok {
                "exited 0".into()
            } else {
                format!("{} {}", out.status, out.stderr_tail)
            },
        })
    }
}
