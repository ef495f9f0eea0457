//! Storm mode counts exactly: a synthetic storm made with BPF_PROG_TEST_RUN on fragtrace's own
//! `page_alloc_raw` program (`storm-producer`, one call per failure, page NULL) from two
//! threads as fast as they go, far past the storm threshold. fragtrace's count of the
//! producer's failures (records analysed plus failures counted by stack in the kernel, both for
//! the producer's task name) must equal the producer's own count of successful calls.
use std::process::Command;

use fragtrace_tests::{Scratch, Tracer, folded, is_root_or_skip, summary};
use serde_json::Value;

/// The producer's task name (its threads' too): fragtrace's counts are matched on it.
const COMM: &str = "storm-producer";

#[test]
fn a_storm_is_counted_exactly_records_and_aggregation_together() {
    if !is_root_or_skip("a_storm_is_counted_exactly_records_and_aggregation_together") {
        return;
    }
    let dir = Scratch::new("storm");
    let folded_file = dir.file("storm.folded");
    let tracer = Tracer::start(&[
        "--force-method",
        "raw_tp",
        "--comm",
        COMM,
        "--folded",
        &folded_file,
    ]);
    let out = Command::new(env!("CARGO_BIN_EXE_storm-producer"))
        .args(["--pid", &tracer.pid().to_string()])
        .args(["--threads", "2", "--seconds", "3", "--comm", COMM])
        .output()
        .expect("run storm-producer");
    let (events, stderr) = tracer.stop();
    assert!(
        out.status.success(),
        "storm-producer failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let p: Value = serde_json::from_slice(&out.stdout).expect("storm-producer prints JSON");
    let produced = p["calls"].as_u64().unwrap();
    assert_eq!(p["errors"], 0, "calls failed: {p}");
    assert_eq!(p["comm"], COMM);

    let s = summary(&events);
    let u = |v: &Value| v.as_u64().unwrap();
    // Records analysed (the --comm filter leaves only the producer's) and, with them, the
    // failures counted by stack in the kernel (storm mode, or the ring buffer full), under the
    // task's name as the root frame.
    let records = u(&s["events"]);
    let stacks = folded(&folded_file);
    let count_of = |keep: &dyn Fn(&str) -> bool| -> u64 {
        stacks
            .iter()
            .filter(|(stack, _)| stack.split(';').next() == Some(COMM) && keep(stack))
            .map(|(_, n)| n)
            .sum()
    };
    let counted = count_of(&|_| true);
    let by_stack = counted.saturating_sub(records);
    // Past --storm-stacks (1000 a second per CPU by default) failures are counted without a
    // stack walk.
    let not_taken = count_of(&|l| l.contains(";[stack not taken]"));
    // SAFETY: plain sysconf.
    let cpus = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) }.max(1) as u64;
    let seconds = p["seconds"].as_f64().unwrap();
    let stack_budget = 1000 * cpus * (seconds.ceil() as u64 + 1);
    let kernel: u64 = s["fail_by_order"].as_array().unwrap().iter().map(u).sum();
    let breakdown = format!(
        "produced {produced} ({:.0}/s); fragtrace counted {counted}: {records} records + {by_stack} \
         counted by stack for {COMM} ({not_taken} of them past the stack budget, \
         {stack_budget} at most walked); storm_aggregated (all tasks, the kernel's counter) {}; \
         dropped {}, drain_shed {}, output_shed {}; kernel failure count (all tasks) {kernel}\n\
         stderr:\n{stderr}",
        p["rate"].as_f64().unwrap(),
        s["storm_aggregated"],
        s["dropped"],
        s["tracer"]["drain_shed"],
        s["tracer"]["output_shed"],
    );
    eprintln!("storm: {}", breakdown.lines().next().unwrap());
    // Every call ran the program: the kernel's own count has them all.
    assert!(kernel >= produced, "{breakdown}");
    // Two threads unpaced make far more than the threshold's 2000 records/s per CPU.
    assert!(records > 0, "no failure record was sent: {breakdown}");
    assert!(
        u(&s["storm_aggregated"]) > 0,
        "storm mode never engaged: {breakdown}"
    );
    assert_eq!(counted, produced, "not counted exactly: {breakdown}");
    // The stack budget holds, and the storm went past it.
    assert!(
        by_stack.saturating_sub(not_taken) <= stack_budget,
        "more stacks walked than --storm-stacks allows: {breakdown}"
    );
    assert!(not_taken > 0, "the stack budget never ran out: {breakdown}");
}
