//! Folded stacks and flamegraphs from real failures and real high-order allocations, fed to the
//! real consumers: inferno's `inferno-flamegraph`, and an XML parser for the SVG.
use std::{path::Path, process::Command};

use fragtrace_tests::{
    PipePressure, Scratch, Tracer, current_test, folded, fragtrace_bin, is_root_or_skip, of_type,
    skip, summary,
};

fn pipe_pressure(pressure: &PipePressure) -> u64 {
    pressure.run(env!("CARGO_BIN_EXE_pipe-pressure"), 16)["enomem"]
        .as_u64()
        .unwrap()
}

/// inferno's own tool must accept the folded file and draw it.
fn inferno_accepts(folded: &str) -> Option<String> {
    let Ok(out) = Command::new("inferno-flamegraph").arg(folded).output() else {
        skip(
            &format!("{} (its inferno-flamegraph part)", current_test()),
            "inferno-flamegraph not installed (cargo xtask setup installs it)",
        );
        return None;
    };
    assert!(
        out.status.success(),
        "inferno-flamegraph refused {folded}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(String::from_utf8(out.stdout).unwrap())
}

fn svg_frames(svg: &str) -> Vec<String> {
    let options = roxmltree::ParsingOptions {
        allow_dtd: true,
        ..Default::default()
    };
    let doc =
        roxmltree::Document::parse_with_options(svg, options).expect("the SVG is well-formed XML");
    doc.descendants()
        .filter(|n| n.has_tag_name("title"))
        .filter_map(|n| n.text().map(str::to_string))
        .collect()
}

/// Where failures come from: every failure of the run is in the folded stacks, under its task
/// (or its verdict), root first; inferno draws it; `report` folds the same.
#[test]
fn failure_flamegraphs_from_real_failures() {
    if !is_root_or_skip("failure_flamegraphs_from_real_failures") {
        return;
    }
    let Some(pressure) = PipePressure::prepare("fgfail") else {
        return;
    };
    let dir = Scratch::new("fail");
    let (by_comm, by_verdict, svg, rec) = (
        dir.file("comm.folded"),
        dir.file("verdict.folded"),
        dir.file("fail.svg"),
        dir.file("run.ftrec"),
    );
    let tracer = Tracer::start_command(
        &["record", "-o", &rec],
        &["--folded", &by_comm, "--flamegraph", &svg],
    );
    let by_verdict_run = Tracer::start(&["--folded", &by_verdict, "--folded-root", "verdict"]);
    let enomem = pipe_pressure(&pressure);
    let (events, stderr) = tracer.stop();
    let (verdict_events, _) = by_verdict_run.stop();
    assert!(enomem > 0);
    let mine: Vec<(String, u64)> = folded(&by_comm)
        .into_iter()
        .filter(|(s, _)| s.starts_with("pipe-pressure;"))
        .collect();
    let total: u64 = mine.iter().map(|(_, n)| n).sum();
    assert_eq!(total, enomem, "{mine:?}\n{stderr}");
    for (stack, _) in &mine {
        // Root first: the syscall entry near the root, the allocator at the leaf.
        let frames: Vec<&str> = stack.split(';').collect();
        let fcntl = frames
            .iter()
            .position(|f| *f == "pipe_fcntl")
            .expect("pipe_fcntl");
        let resize = frames
            .iter()
            .position(|f| *f == "pipe_resize_ring")
            .expect("resize");
        assert!(fcntl < resize, "not root-first: {stack}");
        assert!(!stack.contains("+0x"), "offsets left in {stack}");
    }
    let alloc_fails = of_type(&events, "alloc_fail").len() as u64;
    let all: u64 = folded(&by_comm).iter().map(|(_, n)| n).sum();
    assert_eq!(
        all,
        alloc_fails + summary(&events)["storm_aggregated"].as_u64().unwrap()
    );
    let verdicts: u64 = folded(&by_verdict)
        .iter()
        .filter(|(s, _)| s.starts_with("memcg_limit;"))
        .map(|(_, n)| n)
        .sum();
    assert_eq!(
        verdicts,
        of_type(&verdict_events, "alloc_fail")
            .iter()
            .filter(|e| e["verdict"] == "memcg_limit")
            .count() as u64
    );
    assert!(verdicts >= enomem);

    let frames = svg_frames(&std::fs::read_to_string(&svg).unwrap());
    assert!(
        frames.iter().any(|t| t.starts_with("pipe_resize_ring")),
        "{frames:?}"
    );
    assert!(
        frames.iter().any(|t| t.starts_with("pipe-pressure")),
        "{frames:?}"
    );
    if let Some(drawn) = inferno_accepts(&by_comm) {
        assert!(
            svg_frames(&drawn)
                .iter()
                .any(|t| t.starts_with("pipe_resize_ring"))
        );
    }

    // The recording folds the same in `report`.
    let again = dir.file("again.folded");
    let out = Command::new(fragtrace_bin())
        .args(["report", &rec, "--json", "--folded", &again])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(folded(&again), folded(&by_comm));
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&again).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);
}

/// Who asks for high-order blocks: with --stacks-min-order 3, the pipe resizes that succeed
/// (order 6) are counted by stack; without it, nothing is.
#[test]
fn high_order_allocation_stacks() {
    if !is_root_or_skip("high_order_allocation_stacks") {
        return;
    }
    let Some(pressure) = PipePressure::prepare("fgalloc") else {
        return;
    };
    let dir = Scratch::new("alloc");
    let (with, without) = (dir.file("with.folded"), dir.file("without.folded"));
    let counting = Tracer::start(&[
        "--stacks-min-order",
        "3",
        "--weight",
        "allocations",
        "--folded",
        &with,
    ]);
    let off = Tracer::start(&["--weight", "allocations", "--folded", &without]);
    pipe_pressure(&pressure);
    let (_, stderr) = counting.stop();
    let (_, off_stderr) = off.stop();
    let stacks = folded(&with);
    let resizes: u64 = stacks
        .iter()
        .filter(|(s, _)| s.starts_with("pipe-pressure;") && s.contains(";pipe_resize_ring;"))
        .map(|(_, n)| n)
        .sum();
    // 16 calls: the ones that succeeded allocated order-6 rings (at least one did).
    assert!(resizes >= 1, "{stacks:?}\n{stderr}");
    assert!(folded(&without).is_empty());
    assert!(
        off_stderr.contains("counts nothing without --stacks-min-order"),
        "{off_stderr}"
    );
    inferno_accepts(&with);
}

/// The options that cannot go together are refused before anything is attached.
#[test]
fn verdict_roots_need_failure_weights() {
    let out = Command::new(fragtrace_bin())
        .args([
            "--weight",
            "stall",
            "--folded-root",
            "verdict",
            "--folded",
            "/nonexistent-dir/x",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("--weight failures"));
    assert!(!Path::new("/nonexistent-dir").exists());
}
