//! Bad input gets one line on stderr and a documented non-zero status, never a panic.
use std::process::{Command, Output};

use fragtrace_tests::fragtrace_bin;

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
    for bad in ["-1", "0", "abc", "inf"] {
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
    // Drop to nobody with no capabilities (util-linux setpriv), as a user would run it.
    if Command::new("setpriv").arg("--version").output().is_err() {
        eprintln!("SKIPPED: setpriv not installed");
        return;
    }
    for args in [&[][..], &["probes"][..]] {
        let out = Command::new("setpriv")
            .args([
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                "--inh-caps=-all",
            ])
            .arg(fragtrace_bin())
            .args(args)
            .output()
            .unwrap();
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
    assert!(!missing.status.success());
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

#[test]
fn snapshot_json_has_every_zone() {
    let out = Command::new(fragtrace_bin())
        .args(["snapshot", "--json"])
        .output()
        .unwrap();
    if !out.status.success() {
        // /proc/pagetypeinfo is root-only; without root the error must be one line.
        assert_eq!(
            String::from_utf8_lossy(&out.stderr).trim().lines().count(),
            1
        );
        return;
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let buddy = std::fs::read_to_string("/proc/buddyinfo").unwrap();
    let zones = buddy.lines().filter(|l| l.contains("zone")).count();
    let shown = v["zones"].as_array().map_or(0, Vec::len);
    assert_eq!(shown, zones, "{v}");
}
