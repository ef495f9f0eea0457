//! Root integration tests: the real eBPF programs on this machine's kernel, real workloads.
//! Run one at a time (`--test-threads=1`): they share the kernel's tracepoints and memcg tree.
use std::process::Command;

use fragtrace_tests::*;

#[test]
fn probes_reports_page_alloc_attached() {
    const TEST: &str = "probes_reports_page_alloc_attached";
    if !is_root_or_skip(TEST) {
        return;
    }
    let v = probes_json();
    let hook = v["hooks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["hook"] == "kmem:mm_page_alloc")
        .expect("page alloc hook listed");
    assert_eq!(hook["attached"], true, "{v}");
    // Tracing uses the first method that works, in the catalog's order of preference.
    assert_eq!(hook["method"], hook["available"][0], "{v}");
    if let Err(why) = tp_btf_supported() {
        skip(TEST, &format!("{why}: the choice of tp_btf is not checked"));
        return;
    }
    // With BTF the preferred method is the one chosen, and probes tries every method: raw_tp and
    // the classic tracepoint work wherever tp_btf does.
    assert_eq!(hook["method"], "tp_btf", "{v}");
    assert_eq!(
        hook["available"],
        serde_json::json!(["tp_btf", "raw_tp", "tracepoint"]),
        "{v}"
    );
}

/// `probes --stats` measures the programs of the running tracer: the ids it holds, as bpftool
/// lists them with the same names, and the page-allocation program's runs and kernel time while
/// a workload takes page faults; bpftool then shows at least those runs.
#[test]
fn probes_stats_measures_the_running_tracers_programs() {
    const TEST: &str = "probes_stats_measures_the_running_tracers_programs";
    if !is_root_or_skip(TEST) {
        return;
    }
    if Command::new("bpftool").arg("version").output().is_err() {
        skip(
            TEST,
            "bpftool not installed (cargo xtask setup installs it)",
        );
        return;
    }
    let tracer = Tracer::start(&[]);
    let touching = std::thread::spawn(|| {
        let until = std::time::Instant::now() + std::time::Duration::from_secs(4);
        while std::time::Instant::now() < until {
            let v = vec![1u8; 16 << 20];
            std::hint::black_box(&v);
        }
    });
    let out = Command::new(fragtrace_bin())
        .args(["probes", "--stats", "2", "--json"])
        .output()
        .unwrap();
    touching.join().unwrap();
    assert!(out.status.success(), "{out:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let mine = v["processes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["pid"] == tracer.pid())
        .unwrap_or_else(|| panic!("tracer {} not listed: {v}", tracer.pid()))
        .clone();
    let listed = Command::new("bpftool")
        .args(["prog", "show", "--json"])
        .output()
        .unwrap();
    let kernel: Vec<serde_json::Value> = serde_json::from_slice(&listed.stdout).unwrap();
    let programs = mine["programs"].as_array().unwrap();
    assert!(!programs.is_empty(), "{v}");
    for p in programs {
        let k = kernel
            .iter()
            .find(|k| k["id"] == p["id"])
            .unwrap_or_else(|| panic!("bpftool does not list {p}"));
        let full = k["name"].as_str().unwrap();
        assert!(full.starts_with(p["name"].as_str().unwrap()), "{p} vs {k}");
    }
    let page_alloc = programs
        .iter()
        .find(|p| p["name"].as_str().unwrap().starts_with("page_alloc"))
        .unwrap_or_else(|| panic!("no page_alloc program: {v}"));
    let runs = page_alloc["runs"].as_u64().unwrap();
    assert!(
        runs > 0 && page_alloc["ns_per_run"].as_f64().unwrap() > 0.0,
        "{page_alloc}"
    );
    let k = kernel.iter().find(|k| k["id"] == page_alloc["id"]).unwrap();
    assert!(
        k["run_cnt"].as_u64().unwrap_or(0) >= runs,
        "{k} vs {page_alloc}"
    );
    tracer.stop();
}

#[test]
fn allocation_counts_move_under_page_faults_and_netns_creation() {
    if !is_root_or_skip("allocation_counts_move_under_page_faults_and_netns_creation") {
        return;
    }
    let tracer = Tracer::start(&[]);
    // 64 MiB of anonymous memory, touched page by page: at least 16384 order-0 allocations
    // (fewer only if THP serves it, which then shows as order-9 allocations).
    let pages = 16384;
    let mut buf = vec![0u8; pages * 4096];
    for i in (0..buf.len()).step_by(4096) {
        // Volatile: the buffer is never read, so plain stores would be optimized away.
        unsafe { std::ptr::write_volatile(&mut buf[i], 1) };
    }
    drop(buf);
    let netns = create_netns(10);
    assert_eq!(netns, 10, "unshare(CLONE_NEWNET) failed");
    let (events, _) = tracer.stop();
    let s = summary(&events);
    let allocs: Vec<u64> = s["alloc_by_order"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    assert_eq!(allocs.len(), 11);
    assert!(
        allocs[0] + allocs[9] * 512 >= pages as u64,
        "page faults not counted: {allocs:?}"
    );
    // Ten network namespaces need higher-order blocks (per-netns tables, slab pages).
    assert!(
        allocs[1..].iter().sum::<u64>() > 0,
        "no order>=1 allocation: {allocs:?}"
    );
}

#[test]
fn memcg_pipe_failures_are_all_caught() {
    if !is_root_or_skip("memcg_pipe_failures_are_all_caught") {
        return;
    }
    memcg_pipe_failures_caught_with(&[]);
}

/// The fallbacks must see the same failures: raw_tp (no BTF needed) and the classic tracepoint
/// (fields at the offsets read from tracefs).
#[test]
fn memcg_pipe_failures_are_caught_by_every_attach_method() {
    if !is_root_or_skip("memcg_pipe_failures_are_caught_by_every_attach_method") {
        return;
    }
    for method in ["raw_tp", "tracepoint"] {
        if !memcg_pipe_failures_caught_with(&["--force-method", method]) {
            return;
        }
    }
}

/// False when skipped (no usable memory controller).
fn memcg_pipe_failures_caught_with(tracer_args: &[&str]) -> bool {
    // Kept whole until the end of the test: dropping it restores the sysctl and the cgroup.
    let Some(pressure) = PipePressure::prepare("test") else {
        return false;
    };
    let tracer = Tracer::start(tracer_args);
    let out = Command::new(env!("CARGO_BIN_EXE_pipe-pressure"))
        .arg(&pressure.cgroup.dir)
        .arg("32")
        .output()
        .expect("run pipe-pressure");
    assert!(
        out.status.success(),
        "pipe-pressure failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let result: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let pid = result["pid"].as_u64().unwrap();
    let enomem = result["enomem"].as_u64().unwrap();
    assert!(enomem > 0, "no F_SETPIPE_SZ failed: {result}");
    let (events, stderr) = tracer.stop();

    let fails: Vec<_> = of_type(&events, "alloc_fail")
        .into_iter()
        .filter(|e| e["pid"] == pid)
        .collect();
    let s = summary(&events);
    assert_eq!(
        fails.len() as u64,
        enomem,
        "{tracer_args:?}: alloc_fail events for pid {pid} != ENOMEM results; workload {result}; \
         summary: dropped {}, storm_aggregated {}, tracer {}, fail_by_order {}; stderr {stderr}",
        s["dropped"],
        s["storm_aggregated"],
        s["tracer"],
        s["fail_by_order"]
    );
    for f in &fails {
        // The memory cgroup was at its limit: that, not fragmentation, is the verdict.
        assert_eq!(f["memcg_limited"], true, "{f}");
        assert_eq!(f["verdict"], "memcg_limit", "{f}");
        // Read by the kernel handler at the failure, so it survives the workload freeing its
        // memory and exiting before fragtrace handles the event.
        assert!(
            f["reason"].as_str().unwrap().contains("at the failure"),
            "{f}"
        );
        assert!(f["reason"].as_str().unwrap().contains("limit"), "{f}");
        assert!(
            f["reason"]
                .as_str()
                .unwrap()
                .starts_with("memory cgroup /fragtrace-test-"),
            "{f}"
        );
        assert_eq!(f["netns"], false, "{f}");
        assert_eq!(f["order"], 6, "{f}");
        assert_eq!(f["comm"], "pipe-pressure", "{f}");
        let flags = f["gfp_flags"].as_str().unwrap();
        assert!(flags.contains("__GFP_COMP"), "{f}");
        // GFP_KERNEL_ACCOUNT; once the host uses cpusets (podman makes cpuset cgroups) the
        // allocator adds __GFP_HARDWALL, and the kernel's own table then names it
        // GFP_USER|...|__GFP_ACCOUNT.
        assert!(
            flags.contains("GFP_KERNEL_ACCOUNT")
                || (flags.starts_with("GFP_USER|") && flags.contains("|__GFP_ACCOUNT")),
            "{f}"
        );
        let stack: Vec<&str> = f["stack"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap())
            .collect();
        assert!(
            stack.iter().any(|s| s.starts_with("pipe_")),
            "no pipe frame: {stack:?}"
        );
        assert!(f["cgroup_id"].as_u64().unwrap() > 0);
        assert!(f["time"].as_str().unwrap().ends_with('Z'));
    }
    assert!(s["fail_by_order"][6].as_u64().unwrap() >= enomem, "{s}");
    assert_eq!(s["dropped"], 0, "{s}");
    true
}

#[test]
fn sigterm_and_duration_end_with_a_summary() {
    if !is_root_or_skip("sigterm_and_duration_end_with_a_summary") {
        return;
    }
    let tracer = Tracer::start(&[]);
    std::thread::sleep(std::time::Duration::from_millis(200));
    let (events, _) = tracer.stop_with(libc::SIGTERM);
    assert!(summary(&events)["duration_s"].as_f64().unwrap() > 0.0);

    let out = Command::new(fragtrace_bin())
        .args(["--json", "--duration", "1"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let last: serde_json::Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    assert_eq!(last["type"], "summary");
    let d = last["duration_s"].as_f64().unwrap();
    assert!((0.9..5.0).contains(&d), "duration {d}");
}

/// `fragtrace --json | head -1`: once the reader is gone the tracer stops and writes its summary
/// to stderr instead; status 0.
#[test]
fn tracer_with_the_reader_gone_exits_0_with_the_summary_on_stderr() {
    if !is_root_or_skip("tracer_with_the_reader_gone_exits_0_with_the_summary_on_stderr") {
        return;
    }
    let mut child = Command::new(fragtrace_bin())
        .args(["--json", "--duration", "1"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let summary = stderr
        .lines()
        .find_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .unwrap_or_else(|| panic!("no JSON summary on stderr:\n{stderr}"));
    assert_eq!(summary["type"], "summary", "{summary}");
}

#[test]
fn filters_hide_other_tasks() {
    if !is_root_or_skip("filters_hide_other_tasks") {
        return;
    }
    // Kept whole until the end of the test: dropping it restores the sysctl and the cgroup.
    let Some(pressure) = PipePressure::prepare("filter") else {
        return;
    };
    // Filters that exclude the workload: no event may get through, but counters still count.
    let tracer = Tracer::start(&["--comm", "no-such-task", "--min-order", "7"]);
    let out = Command::new(env!("CARGO_BIN_EXE_pipe-pressure"))
        .arg(&pressure.cgroup.dir)
        .arg("16")
        .output()
        .unwrap();
    assert!(out.status.success());
    let (events, _) = tracer.stop();
    assert!(of_type(&events, "alloc_fail").is_empty(), "{events:?}");
    let s = summary(&events);
    assert_eq!(s["events"], 0);
    assert!(s["fail_by_order"][6].as_u64().unwrap() > 0, "{s}");
}

#[test]
fn netns_creations_are_timed_and_failures_carry_their_errno() {
    const TEST: &str = "netns_creations_are_timed_and_failures_carry_their_errno";
    if !is_root_or_skip(TEST) || !has_setpriv(TEST) {
        return;
    }
    // The syscall windows are opt-in; copy_net_ns cannot be hooked on every kernel.
    let tracer = Tracer::start(&["--netns-syscalls"]);
    let ok_run = Command::new(env!("CARGO_BIN_EXE_netns-maker"))
        .arg("5")
        .output()
        .unwrap();
    let ok_result: serde_json::Value = serde_json::from_slice(&ok_run.stdout).unwrap();
    assert_eq!(ok_result["ok"], 5, "{ok_result}");
    // Unprivileged (nobody, no capabilities): unshare(CLONE_NEWNET) fails with EPERM.
    let denied_run = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
        ])
        .arg(env!("CARGO_BIN_EXE_netns-maker"))
        .arg("2")
        .output()
        .unwrap();
    let denied: serde_json::Value = serde_json::from_slice(&denied_run.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&denied_run.stderr)));
    assert_eq!(
        denied["errnos"],
        serde_json::json!([libc::EPERM, libc::EPERM]),
        "{denied}"
    );
    let (events, stderr) = tracer.stop();

    let netns_of = |pid: &serde_json::Value| -> Vec<&serde_json::Value> {
        of_type(&events, "netns")
            .into_iter()
            .filter(|e| &e["pid"] == pid && e["op"] == "unshare")
            .collect()
    };
    let created = netns_of(&ok_result["pid"]);
    assert_eq!(created.len(), 5, "{created:?}\n{stderr}");
    for e in &created {
        assert_eq!(e["op"], "unshare");
        assert_eq!(e["ok"], true);
        assert_eq!(e["comm"], "netns-maker");
        assert!(e["latency_ns"].as_u64().unwrap() > 0, "{e}");
    }
    let failed = netns_of(&denied["pid"]);
    assert_eq!(failed.len(), 2, "{failed:?}");
    for e in &failed {
        assert_eq!(
            (&e["ok"], &e["errno"], &e["error"]),
            (
                &serde_json::json!(false),
                &serde_json::json!(1),
                &serde_json::json!("EPERM")
            ),
            "{e}"
        );
    }
    let s = summary(&events);
    assert!(s["netns"]["latency"]["count"].as_u64().unwrap() >= 5, "{s}");
    assert!(
        s["netns"]["failed"]["unshare EPERM"].as_u64().unwrap() >= 2,
        "{s}"
    );
}

#[test]
fn unavailable_hooks_are_named_once_with_a_reason() {
    if !is_root_or_skip("unavailable_hooks_are_named_once_with_a_reason") {
        return;
    }
    let v = probes_json();
    let tracer = Tracer::start(&[]);
    let (_, stderr) = tracer.stop();
    for hook in v["hooks"].as_array().unwrap() {
        let name = hook["hook"].as_str().unwrap();
        let mentions = stderr
            .lines()
            .filter(|l| l.contains(&format!("{name} unavailable")))
            .count();
        if hook["attached"] == true {
            assert_eq!(
                mentions, 0,
                "{name} attached but reported unavailable:\n{stderr}"
            );
        } else {
            assert_eq!(mentions, 1, "{name} must be named once:\n{stderr}");
            assert!(!hook["unavailable"].as_array().unwrap().is_empty());
        }
    }
    // Every hook on a tracepoint this kernel has attaches (by tp_btf, raw_tp or the tracepoint
    // itself); one the kernel lacks cannot.
    let tracefs = tracefs_dir();
    for hook in v["hooks"].as_array().unwrap() {
        let name = hook["hook"].as_str().unwrap();
        if let Some((category, event)) = name.split_once(':') {
            let exists = tracefs.join("events").join(category).join(event).is_dir();
            assert_eq!(hook["attached"], exists, "{name} exists: {exists}; {hook}");
        }
    }
}

/// The JSON contract: every field docs/json.md documents is in the real output, and the fields
/// of the first release are never renamed.
#[test]
fn json_output_has_every_documented_field() {
    if !is_root_or_skip("json_output_has_every_documented_field") {
        return;
    }
    // Kept whole until the end of the test: dropping it restores the sysctl and the cgroup.
    let Some(pressure) = PipePressure::prepare("contract") else {
        return;
    };
    // The netns record needs a window hook: copy_net_ns, or the opt-in syscall tracepoints.
    let tracer = Tracer::start(&["--netns-syscalls"]);
    let out = Command::new(env!("CARGO_BIN_EXE_pipe-pressure"))
        .arg(&pressure.cgroup.dir)
        .arg("16")
        .output()
        .unwrap();
    assert!(out.status.success());
    let netns = Command::new(env!("CARGO_BIN_EXE_netns-maker"))
        .arg("1")
        .output()
        .unwrap();
    assert!(netns.status.success());
    let (events, _) = tracer.stop();

    const FIRST_RELEASE_ALLOC_FAIL: &[&str] = &[
        "type",
        "ts_ns",
        "time",
        "pid",
        "tid",
        "comm",
        "order",
        "gfp",
        "gfp_flags",
        "migratetype",
        "cgroup_id",
        "stack",
    ];
    const FIRST_RELEASE_SUMMARY: &[&str] = &[
        "type",
        "duration_s",
        "alloc_by_order",
        "fail_by_order",
        "dropped",
    ];
    let fail = *of_type(&events, "alloc_fail")
        .first()
        .expect("an alloc_fail event");
    assert_has_fields(fail, FIRST_RELEASE_ALLOC_FAIL, "alloc_fail");
    assert_has_fields(fail, &documented_fields("### `alloc_fail`"), "alloc_fail");
    let s = summary(&events);
    assert_has_fields(s, FIRST_RELEASE_SUMMARY, "summary");
    assert_has_fields(s, &documented_fields("### `summary`"), "summary");
    let hook = &s["hooks"][0];
    assert_has_fields(hook, &documented_fields("Each hook:"), "hook");
    let n = *of_type(&events, "netns").first().expect("a netns event");
    assert_has_fields(
        n,
        &[
            "type",
            "ts_ns",
            "time",
            "pid",
            "tid",
            "comm",
            "op",
            "latency_ns",
            "ok",
            "errno",
            "error",
        ],
        "netns",
    );
}

/// A memory-cgroup OOM kill on a machine with gigabytes free: the `oom_kill` event names the
/// victim and calls it a cgroup OOM, from counters read in the kernel when the OOM killer ran
/// (the victim is gone by the time user space looks).
#[test]
fn memcg_oom_kill_is_reported_as_a_cgroup_oom() {
    if !is_root_or_skip("memcg_oom_kill_is_reported_as_a_cgroup_oom") {
        return;
    }
    let name = format!("fragtrace-oom-{}", std::process::id());
    let Some(cgroup) = MemCgroup::create(&name, 32 << 20) else {
        return;
    };
    let tracer = Tracer::start(&[]);
    let mut hog = Command::new(env!("CARGO_BIN_EXE_memcg-hog"))
        .arg(&cgroup.dir)
        .arg("256")
        .spawn()
        .expect("run memcg-hog");
    let hog_pid = hog.id();
    let status = hog.wait().unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(
        status.signal(),
        Some(libc::SIGKILL),
        "the hog was not OOM-killed: {status}"
    );
    let (events, stderr) = tracer.stop();

    let kills = of_type(&events, "oom_kill");
    let kill = kills
        .iter()
        .find(|k| k["victim_pid"] == hog_pid)
        .unwrap_or_else(|| panic!("no oom_kill for pid {hog_pid}: {kills:?}; stderr {stderr}"));
    assert_eq!(kill["memcg_oom"], true, "{kill}");
    assert_eq!(kill["fragmentation_driven"], false, "{kill}");
    let reason = kill["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("cgroup OOM: memory cgroup /fragtrace-oom-"),
        "{kill}"
    );
    assert!(reason.contains("when the OOM killer ran"), "{kill}");
    assert!(reason.contains("kB used of a 32768 kB limit"), "{kill}");
    // The zones were read too: this machine has far more free than 32 MiB.
    let free_kb: u64 = kill["zones"]
        .as_array()
        .unwrap()
        .iter()
        .map(|z| z["free_kb"].as_u64().unwrap())
        .sum();
    assert!(free_kb > 32 << 10, "{kill}");
    let summary = of_type(&events, "summary")[0];
    assert!(summary["oom_kills"].as_u64().unwrap() >= 1, "{summary}");
}
