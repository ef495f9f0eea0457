//! The daemon's image under a real container runtime (podman, runc): run with exactly the
//! DaemonSet's capabilities, mounts and seccomp setting (read from deploy/kubernetes), it
//! attaches and serves /metrics; a second container with a memory limit provokes memory-cgroup
//! failures, and they carry that container's id as `podman inspect` gives it. Then each grant
//! is taken away in turn, to show what breaks without it.
//!
//! `cargo xtask test` builds the images (`FRAGTRACE_IMAGE`, `FRAGTRACE_WORKLOAD_IMAGE`).
use std::{
    process::{Command, Output},
    time::{Duration, Instant},
};

use fragtrace_tests::{daemon::*, *};
use serde_json::Value;

fn podman() -> Command {
    let mut cmd = Command::new("podman");
    cmd.env(
        "CONTAINERS_CONF",
        repo().join("tests/fixtures/containers.conf"),
    );
    cmd
}

fn podman_out(args: &[&str]) -> Output {
    podman().args(args).output().expect("run podman")
}

fn podman_ok(args: &[&str]) -> String {
    let out = podman_out(args);
    assert!(
        out.status.success(),
        "podman {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Removes the named containers however the test ends.
struct Containers(Vec<String>);

impl Drop for Containers {
    fn drop(&mut self) {
        for name in &self.0 {
            let _ = podman().args(["rm", "-f", "-t", "2", name]).output();
        }
    }
}

/// The cgroups podman leaves behind (`libpod_parent` in each v1 hierarchy, with `conmon` in
/// it) are removed on drop when the test created them: while a second cpuset exists the kernel
/// adds __GFP_HARDWALL to every allocation, which renames the gfp flags every later test sees.
struct PodmanCgroups(Vec<std::path::PathBuf>);

impl PodmanCgroups {
    fn created_from_now() -> Self {
        let absent = std::fs::read_dir("/sys/fs/cgroup")
            .map(|d| {
                d.flatten()
                    .map(|e| e.path().join("libpod_parent"))
                    .filter(|p| !p.exists())
                    .collect()
            })
            .unwrap_or_default();
        Self(absent)
    }
}

impl Drop for PodmanCgroups {
    fn drop(&mut self) {
        fn remove(dir: &std::path::Path) {
            if let Ok(entries) = std::fs::read_dir(dir) {
                for e in entries.flatten() {
                    if e.file_type().is_ok_and(|t| t.is_dir()) {
                        remove(&e.path());
                    }
                }
            }
            let _ = std::fs::remove_dir(dir);
        }
        for dir in &self.0 {
            remove(dir);
        }
    }
}

/// What the tests need, or why they skip.
fn ready(test: &str) -> Option<(String, String)> {
    if !is_root_or_skip(test) {
        return None;
    }
    if !have("podman") {
        skip(test, "podman not installed (cargo xtask setup installs it)");
        return None;
    }
    let (Ok(image), Ok(workload)) = (
        std::env::var("FRAGTRACE_IMAGE"),
        std::env::var("FRAGTRACE_WORKLOAD_IMAGE"),
    ) else {
        skip(
            test,
            "FRAGTRACE_IMAGE/FRAGTRACE_WORKLOAD_IMAGE unset: cargo xtask test builds the images",
        );
        return None;
    };
    if yaml_documents(&repo().join("deploy/kubernetes/service.yaml")).is_none() {
        skip(
            test,
            "python3 has no yaml module (cargo xtask setup installs it)",
        );
        return None;
    }
    Some((image, workload))
}

/// The DaemonSet's container as podman flags.
struct Spec {
    caps: Vec<String>,
    args: Vec<String>,
    /// (host path, container path, read-only)
    mounts: Vec<(String, String, bool)>,
    host_pid: bool,
    read_only_root: bool,
    seccomp_unconfined: bool,
    no_new_privileges: bool,
    user: Option<u64>,
}

impl Spec {
    fn from_daemonset() -> Self {
        let ds = &yaml_documents(&repo().join("deploy/kubernetes/daemonset.yaml")).unwrap()[0];
        let spec = &ds["spec"]["template"]["spec"];
        let c = &spec["containers"][0];
        let sc = &c["securityContext"];
        let strings = |v: &Value| -> Vec<String> {
            v.as_array()
                .unwrap()
                .iter()
                .map(|s| s.as_str().unwrap().to_string())
                .collect()
        };
        assert_eq!(strings(&sc["capabilities"]["drop"]), ["ALL"]);
        let volumes = spec["volumes"].as_array().unwrap();
        let mounts = c["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                let v = volumes.iter().find(|v| v["name"] == m["name"]).unwrap();
                (
                    v["hostPath"]["path"].as_str().unwrap().to_string(),
                    m["mountPath"].as_str().unwrap().to_string(),
                    m["readOnly"] == true,
                )
            })
            .collect();
        Self {
            caps: strings(&sc["capabilities"]["add"]),
            args: strings(&c["args"]),
            mounts,
            host_pid: spec["hostPID"] == true,
            read_only_root: sc["readOnlyRootFilesystem"] == true,
            seccomp_unconfined: sc["seccompProfile"]["type"] == "Unconfined",
            no_new_privileges: sc["allowPrivilegeEscalation"] == false,
            user: sc["runAsUser"].as_u64(),
        }
    }

    /// `podman run` of `image` as the DaemonSet runs it, with `drop` left out of the
    /// capabilities, the runtime's default seccomp profile if `default_seccomp`, the host paths
    /// this machine has. podman has no downward API: the pod IP is
    /// 127.0.0.1 on the host network, and the port a free one.
    fn run_args(
        &self,
        image: &str,
        name: &str,
        port: u16,
        flight_recorder: &std::path::Path,
        drop: Option<&str>,
        default_seccomp: bool,
    ) -> Vec<String> {
        let mut a: Vec<String> = [
            "run",
            "-d",
            "--name",
            name,
            "--network=host",
            "--cap-drop=all",
        ]
        .map(String::from)
        .to_vec();
        let caps: Vec<&str> = self
            .caps
            .iter()
            .map(String::as_str)
            .filter(|c| Some(*c) != drop)
            .collect();
        if !caps.is_empty() {
            a.push(format!("--cap-add={}", caps.join(",")));
        }
        if self.host_pid {
            a.push("--pid=host".into());
        }
        if self.read_only_root {
            a.push("--read-only".into());
        }
        if self.seccomp_unconfined && !default_seccomp {
            a.push("--security-opt=seccomp=unconfined".into());
        }
        if self.no_new_privileges {
            a.push("--security-opt=no-new-privileges".into());
        }
        if let Some(u) = self.user {
            a.push(format!("--user={u}"));
        }
        for (host, path, ro) in &self.mounts {
            let host = match path.as_str() {
                "/sys/kernel/tracing" => tracefs_on_this_host(),
                _ if path.starts_with("/var/lib/fragtrace") => {
                    flight_recorder.display().to_string()
                }
                _ => host.clone(),
            };
            a.push("-v".into());
            a.push(format!("{host}:{path}{}", if *ro { ":ro" } else { "" }));
        }
        a.push(image.into());
        for arg in &self.args {
            a.push(
                arg.replace("$(POD_IP)", "127.0.0.1")
                    .replace(":9464", &format!(":{port}")),
            );
        }
        a
    }
}

/// Where this host has tracefs: /sys/kernel/tracing, as the DaemonSet mounts it, or the mount
/// point /proc/mounts names (/sys/kernel/debug/tracing on older setups).
fn tracefs_on_this_host() -> String {
    if std::path::Path::new("/sys/kernel/tracing/events").is_dir() {
        return "/sys/kernel/tracing".into();
    }
    std::fs::read_to_string("/proc/mounts")
        .unwrap()
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.get(2) == Some(&"tracefs")).then(|| f[1].to_string())
        })
        .expect("tracefs mounted somewhere")
}

/// One run of the daemon's container: its exit code, its log, and a scrape taken while it
/// served (None when it never became healthy).
struct Run {
    exit_code: i64,
    logs: String,
    scrape: Option<String>,
}

fn run_daemon(spec: &Spec, image: &str, drop: Option<&str>, default_seccomp: bool) -> Run {
    let name = format!(
        "fragtrace-caps-{}-{}",
        drop.unwrap_or(if default_seccomp { "seccomp" } else { "all" })
            .to_lowercase(),
        std::process::id()
    );
    let _guard = Containers(vec![name.clone()]);
    let dir = Scratch::new(&name);
    let port = free_port();
    let args = spec.run_args(image, &name, port, dir.path(), drop, default_seccomp);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    podman_ok(&args);
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut scrape = None;
    loop {
        let running = podman_ok(&["inspect", "--format", "{{.State.Running}}", &name]) == "true";
        if !running {
            break;
        }
        if let Ok(a) = get(&format!("http://127.0.0.1:{port}/healthz"))
            && a.status == 200
        {
            scrape = Some(
                get(&format!("http://127.0.0.1:{port}/metrics"))
                    .unwrap()
                    .body,
            );
            podman_ok(&["stop", "-t", "10", &name]);
            break;
        }
        assert!(Instant::now() < deadline, "{name} neither served nor ended");
        std::thread::sleep(Duration::from_millis(200));
    }
    let exit_code = podman_ok(&["inspect", "--format", "{{.State.ExitCode}}", &name])
        .parse()
        .unwrap();
    let out = podman_out(&["logs", &name]);
    let logs =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    Run {
        exit_code,
        logs,
        scrape,
    }
}

/// The daemon's image with the DaemonSet's grants attributes the memory-cgroup failures of
/// another container to that container's id, in the metrics and in the flight recorder.
#[test]
fn image_attributes_memcg_failures_to_the_container() {
    let name = "image_attributes_memcg_failures_to_the_container";
    let _cgroups = PodmanCgroups::created_from_now();
    let Some((image, workload)) = ready(name) else {
        return;
    };
    if !std::path::Path::new("/sys/fs/cgroup/memory/memory.limit_in_bytes").exists() {
        return skip(
            name,
            "no cgroup v1 memory controller (the workload's limit)",
        );
    }
    let spec = Spec::from_daemonset();
    let pid = std::process::id();
    let (daemon, hog) = (
        format!("fragtrace-daemon-{pid}"),
        format!("fragtrace-hog-{pid}"),
    );
    let _guard = Containers(vec![daemon.clone(), hog.clone()]);
    let dir = Scratch::new("container-flight");
    let port = free_port();
    let args = spec.run_args(&image, &daemon, port, dir.path(), None, false);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    podman_ok(&args);
    let health = format!("http://127.0.0.1:{port}/healthz");
    wait_for(
        "the daemon's container healthy",
        Duration::from_secs(60),
        || get(&health).ok().filter(|a| a.status == 200),
    );
    let metrics = format!("http://127.0.0.1:{port}/metrics");
    let scrape = get(&metrics).unwrap().body;
    // Attached, memory locked, and the root-only /proc/pagetypeinfo read without
    // CAP_DAC_READ_SEARCH (the migratetypes have their names).
    assert!(scrape.contains(r#"fragtrace_probe_attached{probe="kmem:mm_page_alloc""#));
    assert_eq!(sample(&scrape, "fragtrace_memory_locked"), Some(1.0));
    assert!(
        scrape.contains(r#"fragtrace_migratetype_fallbacks_total{migratetype="Movable""#),
        "{scrape}"
    );

    let _pipes = FileRestore::set("/proc/sys/fs/pipe-max-size", &(16 << 20).to_string());
    podman_ok(&[
        "run",
        "-d",
        "--name",
        &hog,
        "--privileged",
        "--memory=64m",
        "--network=none",
        &workload,
        "/sys/fs/cgroup/memory",
        "32",
        "2",
    ]);
    assert_eq!(podman_ok(&["wait", &hog]), "0");
    let id = podman_ok(&["inspect", "--format", "{{.Id}}", &hog]);
    assert_eq!(id.len(), 64, "{id}");
    let result: Value = serde_json::from_str(&podman_ok(&["logs", &hog])).unwrap();
    let enomem = result["enomem"].as_u64().unwrap();
    assert!(enomem > 0, "{result}");

    let series = format!(
        r#"fragtrace_alloc_failures_by_container_total{{container_id="{id}",pod_uid="",verdict="memcg_limit"}}"#
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    let scrape = loop {
        let s = get(&metrics).unwrap().body;
        if sample(&s, &series) == Some(enomem as f64) {
            break s;
        }
        let seen: Vec<&str> = s
            .lines()
            .filter(|l| {
                l.starts_with("fragtrace_alloc_failures_by") || l.contains(r#"order="6",verdict"#)
            })
            .collect();
        assert!(
            Instant::now() < deadline,
            "{series} never reached {enomem}; the failure series: {seen:#?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    podman_ok(&["stop", "-t", "10", &daemon]);
    assert_eq!(
        podman_ok(&["inspect", "--format", "{{.State.ExitCode}}", &daemon]),
        "0"
    );
    let logs = podman_out(&["logs", &daemon]);
    let logs = String::from_utf8_lossy(&logs.stderr);
    assert!(!logs.contains("stacks shown as addresses"), "{logs}");

    // The flight recorder on the host path has the events, with the id and named stacks.
    let out = Command::new(fragtrace_bin())
        .args(["report", "--json"])
        .arg(dir.path().join("flight-recorder"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let events: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|e: &Value| e["type"] == "alloc_fail" && e["container_id"] == id.as_str())
        .collect();
    assert_eq!(events.len() as u64, enomem);
    for e in &events {
        assert_eq!(e["verdict"], "memcg_limit", "{e}");
        let stack = e["stack"].as_array().unwrap();
        assert!(
            stack
                .iter()
                .any(|f| f.as_str().unwrap().starts_with("pipe_")),
            "{e}"
        );
    }
    eprintln!("{series} {enomem} (podman inspect: {id})");
    for line in scrape.lines().filter(|l| l.contains(&id)) {
        eprintln!("  {line}");
    }
}

/// linux/capability.h
const CAP_SYS_RESOURCE: u32 = 24;

/// Bit `cap` of this process's capability bounding set.
fn in_bounding_set(cap: u32) -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let hex = status
        .lines()
        .find_map(|l| l.strip_prefix("CapBnd:"))
        .unwrap()
        .trim();
    u64::from_str_radix(hex, 16).unwrap() & (1 << cap) != 0
}

fn read_number(path: &str) -> i64 {
    std::fs::read_to_string(path)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// Each capability the DaemonSet adds, and its seccomp setting, taken away in turn: what
/// breaks shows why it is granted. A grant without a test here fails the test.
#[test]
fn each_daemonset_grant_is_needed() {
    let name = "each_daemonset_grant_is_needed";
    let _cgroups = PodmanCgroups::created_from_now();
    let Some((image, _)) = ready(name) else {
        return;
    };
    let spec = Spec::from_daemonset();
    let full = run_daemon(&spec, &image, None, false);
    assert!(
        full.scrape.is_some(),
        "the DaemonSet's grants do not serve: {}",
        full.logs
    );
    assert_eq!(full.exit_code, 0, "{}", full.logs);
    // SAFETY: plain getrlimit.
    let memlock = unsafe {
        let mut r = std::mem::zeroed::<libc::rlimit>();
        libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut r);
        r.rlim_cur
    };
    for cap in &spec.caps {
        let test = format!("{name} ({cap})");
        match cap.as_str() {
            "BPF" | "PERFMON" => {
                let run = run_daemon(&spec, &image, Some(cap), false);
                assert!(run.scrape.is_none(), "served without {cap}");
                assert_eq!(run.exit_code, 3, "{}", run.logs);
                assert!(run.logs.contains("CAP_BPF and CAP_PERFMON"), "{}", run.logs);
            }
            "SYSLOG" => {
                // Addresses are hidden from a task without CAP_SYSLOG when kptr_restrict is 1,
                // or 0 with perf_event_paranoid above 1; from everyone when it is 2.
                let (kptr, paranoid) = (
                    read_number("/proc/sys/kernel/kptr_restrict"),
                    read_number("/proc/sys/kernel/perf_event_paranoid"),
                );
                if !(kptr == 1 || (kptr == 0 && paranoid > 1)) {
                    skip(
                        &test,
                        &format!(
                            "kptr_restrict {kptr}, perf_event_paranoid {paranoid}: CAP_SYSLOG changes nothing here"
                        ),
                    );
                    continue;
                }
                let hidden = "/proc/kallsyms hides kernel addresses";
                assert!(!full.logs.contains(hidden), "{}", full.logs);
                let run = run_daemon(&spec, &image, Some(cap), false);
                assert!(run.logs.contains(hidden), "{}", run.logs);
            }
            "IPC_LOCK" => {
                if memlock == libc::RLIM_INFINITY {
                    skip(
                        &test,
                        "RLIMIT_MEMLOCK is unlimited here: mlockall needs no capability",
                    );
                    continue;
                }
                let run = run_daemon(&spec, &image, Some(cap), false);
                assert!(run.logs.contains("cannot lock memory"), "{}", run.logs);
                assert_eq!(
                    sample(run.scrape.as_deref().unwrap(), "fragtrace_memory_locked"),
                    Some(0.0)
                );
                assert_eq!(
                    sample(full.scrape.as_deref().unwrap(), "fragtrace_memory_locked"),
                    Some(1.0)
                );
            }
            "SYS_RESOURCE" => {
                if !in_bounding_set(CAP_SYS_RESOURCE) {
                    skip(
                        &test,
                        "this machine's capability bounding set lacks CAP_SYS_RESOURCE: no container here can hold it, so its effect cannot be shown",
                    );
                    continue;
                }
                let run = run_daemon(&spec, &image, Some(cap), false);
                assert!(
                    run.logs.contains("cannot set oom_score_adj"),
                    "{}",
                    run.logs
                );
                assert_eq!(
                    sample(full.scrape.as_deref().unwrap(), "fragtrace_oom_score_adj"),
                    Some(-1000.0)
                );
            }
            other => panic!("no test shows why the DaemonSet adds {other}"),
        }
    }
    // seccomp: under the runtime's default profile the eBPF maps cannot be created.
    if spec.seccomp_unconfined {
        let run = run_daemon(&spec, &image, None, true);
        assert!(
            run.scrape.is_none(),
            "served under the default seccomp profile"
        );
        assert_ne!(run.exit_code, 0, "{}", run.logs);
        assert!(run.logs.contains("Operation not permitted"), "{}", run.logs);
    }
}
