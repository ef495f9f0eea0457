//! Bad input gets one line on stderr and a documented non-zero status, never a panic; every
//! exit status in README.md's table is checked here.
use std::process::{Command, Output, Stdio};

use fragtrace_tests::{fragtrace_bin, has_setpriv, is_root, is_root_or_skip};

fn assert_one_line_error(out: &Output, status: i32) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(status), "stderr: {stderr}");
    assert!(
        !stderr.contains("panicked") && !stderr.contains("RUST_BACKTRACE"),
        "{stderr}"
    );
    assert!(!stderr.trim().is_empty());
}

#[test]
fn unknown_flag_is_a_usage_error() {
    let out = Command::new(fragtrace_bin())
        .arg("--no-such-flag")
        .output()
        .unwrap();
    assert_one_line_error(&out, 2);
}

#[test]
fn bad_duration_is_a_usage_error() {
    for bad in ["-1", "0", "abc", "inf", "NaN", "1e300"] {
        let out = Command::new(fragtrace_bin())
            .args(["--duration", bad])
            .output()
            .unwrap();
        assert_one_line_error(&out, 2);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(stderr.trim().lines().count(), 1, "{bad}: {stderr}");
    }
}

#[test]
fn without_privileges_the_fix_is_named() {
    const TEST: &str = "without_privileges_the_fix_is_named";
    if !has_setpriv(TEST) {
        return;
    }
    for args in [&[][..], &["probes"][..]] {
        let out = as_nobody().args(args).output().unwrap();
        assert_one_line_error(&out, 3);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("root"), "{stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    }
}

#[test]
fn help_and_version_succeed() {
    for flag in ["--help", "--version"] {
        let out = Command::new(fragtrace_bin()).arg(flag).output().unwrap();
        assert!(out.status.success());
        assert!(String::from_utf8_lossy(&out.stdout).contains("fragtrace"));
    }
}

fn analyze(input: &[u8], json: bool) -> Output {
    let dir = std::env::temp_dir().join(format!("fragtrace-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("log-{}", input.len()));
    std::fs::write(&path, input).unwrap();
    let mut cmd = Command::new(fragtrace_bin());
    cmd.arg("analyze-log").arg(&path);
    if json {
        cmd.arg("--json");
    }
    let out = cmd.output().unwrap();
    let _ = std::fs::remove_file(&path);
    out
}

const SEED_002: &str =
    include_str!("../../fragtrace/tests/fixtures/logs/rhel7-3.10-netns-fragmentation.log");

#[test]
fn analyze_log_rejects_unusable_input_with_one_line() {
    let mut binary = Vec::new();
    for i in 0..65536u32 {
        binary.extend_from_slice(&i.wrapping_mul(2654435761).to_le_bytes());
    }
    let long_line = vec![b'x'; 5 << 20];
    // Cut inside the Mem-Info block, before the zones' free lists.
    let cut = &SEED_002[..SEED_002.find("Node 0 DMA: 1*4kB").unwrap()];
    for (what, input) in [
        ("empty", &b""[..]),
        ("binary", &binary[..]),
        ("5 MB line", &long_line[..]),
        ("not a kernel log", &b"hello\nworld\n"[..]),
        ("truncated incident", cut.as_bytes()),
    ] {
        let out = analyze(input, false);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(5), "{what}: {stderr}");
        assert!(!stderr.contains("panicked"), "{what}: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "{what}: {stderr}");
    }
    let missing = Command::new(fragtrace_bin())
        .args(["analyze-log", "/nonexistent/kern.log"])
        .output()
        .unwrap();
    assert_one_line_error(&missing, 5);
    assert_eq!(
        String::from_utf8_lossy(&missing.stderr)
            .trim()
            .lines()
            .count(),
        1
    );
}

#[test]
fn analyze_log_gives_the_seed_diagnosis_with_every_documented_key() {
    let out = analyze(SEED_002.as_bytes(), true);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let incident: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    fragtrace_tests::assert_has_fields(
        &incident,
        &fragtrace_tests::documented_fields("## analyze-log"),
        "log_failure",
    );
    assert_eq!(incident["type"], "log_failure");
    assert_eq!(incident["comm"], "exe");
    assert_eq!(incident["order"], 6);
    assert_eq!(incident["mode"], "0x10c0d0");
    assert_eq!(incident["largest_free_order"], 5);
    assert_eq!(incident["verdict"], "fragmentation");
    assert_eq!(incident["netns"], true);
    assert_eq!(incident["slab_cache"], "nf_conntrack_ffff8803eef66180");
    // The same from standard input.
    let mut child = Command::new(fragtrace_bin())
        .args(["analyze-log", "-", "--json"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(SEED_002.as_bytes())
        .unwrap();
    let piped = child.wait_with_output().unwrap();
    assert_eq!(String::from_utf8(piped.stdout).unwrap(), text);
}

/// fragtrace as nobody with no capabilities (util-linux setpriv), as a user would run it. When
/// the tests do not run as root they are that user already.
fn as_nobody() -> Command {
    if !is_root() {
        return Command::new(fragtrace_bin());
    }
    let mut cmd = Command::new("setpriv");
    cmd.args([
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        "--inh-caps=-all",
    ])
    .arg(fragtrace_bin());
    cmd
}

fn buddyinfo_zones() -> usize {
    let buddy = std::fs::read_to_string("/proc/buddyinfo").unwrap();
    buddy.lines().filter(|l| l.contains("zone")).count()
}

/// `snapshot --json` run by `cmd`: succeeds with one object listing every zone of buddyinfo.
fn snapshot_json(mut cmd: Command) -> serde_json::Value {
    let out = cmd.args(["snapshot", "--json"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{}: {stderr}", out.status);
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(text.lines().count(), 1, "{text}");
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let shown = v["zones"].as_array().map_or(0, Vec::len);
    assert_eq!(shown, buddyinfo_zones(), "{v}");
    v
}

/// Free blocks per migratetype come from /proc/pagetypeinfo, which only root may read since
/// 5.x: shown whenever fragtrace can read it.
#[test]
fn snapshot_json_has_every_zone() {
    let v = snapshot_json(Command::new(fragtrace_bin()));
    let readable = std::fs::read_to_string("/proc/pagetypeinfo").is_ok();
    assert_eq!(v["pageblock_order"].is_u64(), readable, "{v}");
    for zone in v["zones"].as_array().unwrap() {
        let types = zone["free_by_migratetype"].as_object().unwrap();
        assert_eq!(!types.is_empty(), readable, "{zone}");
    }
}

/// pagetypeinfo is optional: without root, snapshot still shows every zone, without the
/// migratetype columns.
#[test]
fn snapshot_works_without_root() {
    const TEST: &str = "snapshot_works_without_root";
    if is_root() && !has_setpriv(TEST) {
        return;
    }
    let v = snapshot_json(as_nobody());
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata("/proc/pagetypeinfo").map_or(0, |m| m.permissions().mode());
    if mode & 0o004 == 0 {
        assert!(v["pageblock_order"].is_null(), "{v}");
        for zone in v["zones"].as_array().unwrap() {
            assert_eq!(zone["free_by_migratetype"], serde_json::json!({}), "{zone}");
        }
    }
    let text = as_nobody().arg("snapshot").output().unwrap();
    assert!(text.status.success(), "{text:?}");
    let text = String::from_utf8(text.stdout).unwrap();
    assert_eq!(
        text.matches("  verdict: ").count(),
        buddyinfo_zones(),
        "{text}"
    );
}

/// Runs fragtrace with `args` and its standard output a pipe whose reader is already gone.
fn with_reader_gone(args: &[&str]) -> Output {
    let mut child = Command::new(fragtrace_bin())
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    child.wait_with_output().unwrap()
}

/// `fragtrace snapshot | head -1`: a reader that goes away is a normal end (status 0, quiet).
#[test]
fn snapshot_with_the_reader_gone_exits_0() {
    for args in [&["snapshot"][..], &["snapshot", "--json"][..]] {
        let out = with_reader_gone(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {stderr}");
        assert!(stderr.is_empty(), "{args:?}: {stderr}");
    }
}

#[test]
fn probes_with_the_reader_gone_exits_0() {
    if !is_root_or_skip("probes_with_the_reader_gone_exits_0") {
        return;
    }
    for args in [&["probes"][..], &["probes", "--json"][..]] {
        let out = with_reader_gone(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
}

/// Output that cannot be written (a full disk) is a runtime failure: status 1, one line.
#[test]
fn unwritable_output_is_a_runtime_failure() {
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap();
    let out = Command::new(fragtrace_bin())
        .arg("snapshot")
        .stdout(full)
        .output()
        .unwrap();
    assert_one_line_error(&out, 1);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("standard output"), "{stderr}");
}

/// A kernel without what fragtrace needs (here: no tracefs where it is told to look): status 4.
#[test]
fn missing_tracefs_is_unsupported() {
    if !is_root_or_skip("missing_tracefs_is_unsupported") {
        return;
    }
    let out = Command::new(fragtrace_bin())
        .args(["--tracefs", "/nonexistent", "--duration", "1"])
        .output()
        .unwrap();
    assert_one_line_error(&out, 4);
    // Warnings (e.g. about oom_score_adj) may come first; the error is one line.
    let stderr = String::from_utf8_lossy(&out.stderr);
    let errors: Vec<&str> = stderr.lines().filter(|l| !l.contains("warning:")).collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(
        errors[0].contains("/nonexistent is not a tracefs"),
        "{stderr}"
    );
}
