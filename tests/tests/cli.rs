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
