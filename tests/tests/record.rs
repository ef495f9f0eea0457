//! `fragtrace record` and `fragtrace report`: a live run records and prints; the report of its
//! recording prints the same, and a damaged recording is reported up to the damage.
use std::{
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::{Command, Output},
};

use fragtrace_tests::{
    PipePressure, Scratch, Tracer, fragtrace_bin, is_root_or_skip, of_type, summary,
};
use serde_json::Value;

fn report(file: &Path, args: &[&str]) -> Output {
    Command::new(fragtrace_bin())
        .arg("report")
        .arg(file)
        .args(args)
        .output()
        .expect("run fragtrace report")
}

fn json_lines(out: &[u8]) -> Vec<Value> {
    String::from_utf8_lossy(out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

/// A recording made of real memory-cgroup failures, with the live run's JSON output.
struct Recorded {
    file: PathBuf,
    live: Vec<Value>,
    enomem: u64,
    _dir: Scratch,
}

fn record_memcg_failures(tag: &str) -> Option<Recorded> {
    let pressure = PipePressure::prepare(tag)?;
    let dir = Scratch::new(tag);
    let file = dir.0.join("run.ftrec");
    let tracer = Tracer::start_command(&["record", "-o", file.to_str().unwrap()], &[]);
    let out = Command::new(env!("CARGO_BIN_EXE_pipe-pressure"))
        .arg(&pressure.cgroup.dir)
        .arg("16")
        .output()
        .unwrap();
    assert!(out.status.success());
    let result: Value = serde_json::from_slice(&out.stdout).unwrap();
    let (live, stderr) = tracer.stop();
    let enomem = result["enomem"].as_u64().unwrap();
    assert!(enomem > 0, "no failure provoked: {result}");
    assert_eq!(
        of_type(&live, "alloc_fail").len() as u64,
        enomem,
        "live run: {stderr}"
    );
    Some(Recorded {
        file,
        live,
        enomem,
        _dir: dir,
    })
}

/// One live run records and prints JSON; `report --json` on the recording, as another user
/// without privileges, prints the very same objects.
#[test]
fn report_gives_what_the_live_run_gave() {
    if !is_root_or_skip("report_gives_what_the_live_run_gave") {
        return;
    }
    let Some(rec) = record_memcg_failures("record") else {
        return;
    };
    let mode = std::fs::metadata(&rec.file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "recording mode {mode:o}");
    // Readable by anyone for the unprivileged replay below (the test's own copy).
    let copy = rec.file.with_extension("copy");
    std::fs::copy(&rec.file, &copy).unwrap();
    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::set_permissions(
        copy.parent().unwrap(),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
        ])
        .arg(fragtrace_bin())
        .arg("report")
        .arg(&copy)
        .arg("--json")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let replayed = json_lines(&out.stdout);
    assert_eq!(replayed.len(), rec.live.len());
    for (live, again) in rec.live.iter().zip(&replayed) {
        assert_eq!(live, again);
    }
    let s = summary(&replayed);
    assert_eq!(s["events"].as_u64(), Some(rec.enomem));
    assert_eq!(s["cut"], Value::Null);

    // Filters of report narrow further: another pid shows nothing.
    let out = report(&rec.file, &["--json", "--pid", "1"]);
    assert!(out.status.success());
    let filtered = json_lines(&out.stdout);
    assert!(of_type(&filtered, "alloc_fail").is_empty());
    assert_eq!(summary(&filtered)["events"], 0);

    // Text too, with the verdict and the stack.
    let out = report(&rec.file, &[]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("memcg_limit: memory cgroup"), "{text}");
    assert!(text.contains("pipe_resize_ring+0x"), "{text}");
    assert!(text.contains("=== fragtrace summary"), "{text}");
}

/// A recording cut anywhere (a SIGKILL, a full disk) is reported up to the cut, says so, and
/// exits 0; one damaged in the middle is reported up to the damage.
#[test]
fn a_cut_or_damaged_recording_is_reported_up_to_the_damage() {
    if !is_root_or_skip("a_cut_or_damaged_recording_is_reported_up_to_the_damage") {
        return;
    }
    let Some(rec) = record_memcg_failures("cut") else {
        return;
    };
    let bytes = std::fs::read(&rec.file).unwrap();
    let cut = rec.file.with_extension("cut");
    // Without its last 16 bytes (inside the trailer's zstd block, or the trailer itself).
    std::fs::write(&cut, &bytes[..bytes.len() - 16]).unwrap();
    let out = report(&cut, &["--json"]);
    assert!(out.status.success(), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("is incomplete"), "{stderr}");
    let events = json_lines(&out.stdout);
    let s = summary(&events);
    assert!(s["cut"].is_string(), "{s}");

    // Damage anywhere in the compressed stream: never a panic or a misread event. Damage in
    // the header refuses the file (status 5); later damage reports what comes before it.
    let live_events: Vec<&Value> = of_type(&rec.live, "alloc_fail");
    let mut partial_reports = 0;
    let step = (bytes.len() / 24).max(1);
    for at in (32..bytes.len().saturating_sub(64)).step_by(step) {
        let mut damaged = bytes.clone();
        for b in &mut damaged[at..at + 64] {
            *b ^= 0x5a;
        }
        let path = rec.file.with_extension("damaged");
        std::fs::write(&path, &damaged).unwrap();
        let out = report(&path, &["--json"]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        match out.status.code() {
            Some(5) => assert_eq!(stderr.lines().count(), 1, "at {at}: {stderr}"),
            Some(0) => {
                let events = json_lines(&out.stdout);
                let s = summary(&events);
                assert!(s["cut"].is_string(), "damage at {at} unnoticed: {s}");
                assert!(stderr.contains("is incomplete"), "at {at}: {stderr}");
                // What is reported is what the live run saw, in order, up to the damage.
                let seen = of_type(&events, "alloc_fail");
                assert!(seen.len() <= live_events.len());
                assert_eq!(seen[..], live_events[..seen.len()], "at {at}");
                partial_reports += (!seen.is_empty()) as usize;
            }
            other => panic!("damage at {at}: status {other:?}: {stderr}"),
        }
    }
    assert!(
        partial_reports > 0,
        "no damaged recording was reported up to its damage"
    );
}

/// Not a recording, a newer format, a header cut short, no such file: one line, status 5.
#[test]
fn what_is_not_a_readable_recording_is_refused_with_one_line() {
    let dir = Scratch::new("refuse");
    let write = |name: &str, bytes: &[u8]| {
        let p = dir.0.join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    };
    let mut newer = b"fragtrace recording\n".to_vec();
    newer.extend_from_slice(&99u32.to_le_bytes());
    let cases = [
        (
            write("log.txt", b"Dec  2 kernel: hello\n"),
            "is not a fragtrace recording",
        ),
        (write("empty", b""), "is not a fragtrace recording"),
        (write("newer", &newer), "newer than this fragtrace reads"),
        (
            write("header-cut", b"fragtrace recording\n\x01\x00"),
            "cut before the end of its header",
        ),
        (dir.0.join("missing"), "cannot open"),
    ];
    for (path, says) in cases {
        let out = report(&path, &[]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(5), "{path:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(stderr.contains(says), "{path:?}: {stderr}");
        assert!(out.stdout.is_empty());
    }
}

/// `--cgroup`, `--container` and `--pod` select by the task's cgroup, live and in `report`.
#[test]
fn cgroup_filters_select_the_failing_tasks() {
    if !is_root_or_skip("cgroup_filters_select_the_failing_tasks") {
        return;
    }
    let Some(pressure) = PipePressure::prepare("cgfilter") else {
        return;
    };
    // The task's cgroup as /proc/PID/cgroup names it under its hierarchy's mount.
    let mount = pressure.cgroup.dir.parent().unwrap();
    let path = format!(
        "/{}",
        pressure.cgroup.dir.strip_prefix(mount).unwrap().display()
    );
    let dir = Scratch::new("cgfilter");
    let file = dir.0.join("run.ftrec");
    let matching = Tracer::start(&["--cgroup", &path]);
    let elsewhere = Tracer::start(&["--cgroup", "/no-such-cgroup"]);
    let no_container = Tracer::start_command(
        &["record", "-o", file.to_str().unwrap()],
        &["--container", "5b9be8c5bb12"],
    );
    let out = Command::new(env!("CARGO_BIN_EXE_pipe-pressure"))
        .arg(&pressure.cgroup.dir)
        .arg("16")
        .output()
        .unwrap();
    let enomem = serde_json::from_slice::<Value>(&out.stdout).unwrap()["enomem"]
        .as_u64()
        .unwrap();
    assert!(enomem > 0);
    let (shown, stderr) = matching.stop();
    assert_eq!(
        of_type(&shown, "alloc_fail").len() as u64,
        enomem,
        "{path}: {stderr}"
    );
    for f in of_type(&shown, "alloc_fail") {
        assert_eq!(f["memcg_limited"], true, "{f}");
    }
    let (hidden, _) = elsewhere.stop();
    assert!(of_type(&hidden, "alloc_fail").is_empty());
    assert!(summary(&hidden)["fail_by_order"][6].as_u64().unwrap() >= enomem);
    let (none, _) = no_container.stop();
    assert!(of_type(&none, "alloc_fail").is_empty());
    // The recording keeps every record and its filter: report shows what the run showed.
    let out = report(&file, &["--json"]);
    let replayed = json_lines(&out.stdout);
    assert!(of_type(&replayed, "alloc_fail").is_empty());
    assert_eq!(replayed, none);
}
