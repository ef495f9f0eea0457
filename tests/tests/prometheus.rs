//! fragtrace's metrics, rules and dashboard against the real Prometheus and promtool (Debian's
//! `prometheus` package): a scrape passes `promtool check metrics`; the rules pass `promtool
//! check rules` and their unit tests; a real Prometheus scrapes the daemon while memory-cgroup
//! failures happen, and its HTTP API shows the failure counter rising by exactly the number of
//! ENOMEM calls and the alert firing; the PrometheusRule holds the same rules; every PromQL
//! expression of the Grafana dashboard parses on the real server.
use std::{
    collections::BTreeSet,
    io::Write,
    process::{Command, Stdio},
    time::Duration,
};

use fragtrace_tests::{daemon::*, *};
use serde_json::Value;

const RULES: &str = "deploy/prometheus/fragtrace-rules.yml";
const RULE_TESTS: &str = "deploy/prometheus/tests/fragtrace-rules.test.yml";
const PROMETHEUS_RULE: &str = "deploy/kubernetes/prometheusrule.yaml";
const DASHBOARD: &str = "deploy/grafana/fragtrace-dashboard.json";

fn promtool(args: &[&str], stdin: Option<&str>) -> (bool, String) {
    let mut child = Command::new("promtool")
        .args(args)
        .current_dir(repo())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run promtool");
    if let Some(text) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
    }
    let out = child.wait_with_output().unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

fn have_prometheus(test: &str) -> bool {
    let ok = have("promtool") && have("prometheus");
    if !ok {
        skip(
            test,
            "prometheus and promtool not installed (cargo xtask setup installs them)",
        );
    }
    ok
}

#[test]
fn rules_pass_promtool_and_their_unit_tests() {
    let name = "rules_pass_promtool_and_their_unit_tests";
    if !have_prometheus(name) {
        return;
    }
    let (ok, out) = promtool(&["check", "rules", RULES], None);
    assert!(ok, "{out}");
    let (ok, out) = promtool(&["test", "rules", RULE_TESTS], None);
    assert!(ok, "{out}");
    // Every alert of the rules file has a unit test that fires it.
    let rules = std::fs::read_to_string(repo().join(RULES)).unwrap();
    let tests = std::fs::read_to_string(repo().join(RULE_TESTS)).unwrap();
    let alerts: Vec<&str> = rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: "))
        .collect();
    assert!(alerts.len() >= 6, "{alerts:?}");
    for alert in alerts {
        let fired = tests
            .split("alertname: ")
            .skip(1)
            .any(|t| t.starts_with(alert) && t.contains("exp_labels"));
        assert!(fired, "no unit test fires {alert}");
    }
}

/// The PrometheusRule holds exactly the plain rules file's groups, and they pass promtool once
/// extracted.
#[test]
fn prometheus_rule_matches_the_rules_file() {
    let name = "prometheus_rule_matches_the_rules_file";
    if !have_prometheus(name) {
        return;
    }
    let Some(kube) = yaml_documents(&repo().join(PROMETHEUS_RULE)) else {
        return skip(
            name,
            "python3 has no yaml module (pip install kubernetes-validate)",
        );
    };
    let plain = yaml_documents(&repo().join(RULES)).unwrap();
    assert_eq!(kube.len(), 1);
    assert_eq!(kube[0]["kind"], "PrometheusRule");
    assert_eq!(
        kube[0]["spec"], plain[0],
        "the PrometheusRule's groups differ from {RULES}"
    );
    let dir = Scratch::new("prometheusrule");
    let extracted = dir.path().join("extracted.yml");
    std::fs::write(&extracted, serde_json::to_string(&kube[0]["spec"]).unwrap()).unwrap();
    let (ok, out) = promtool(&["check", "rules", extracted.to_str().unwrap()], None);
    assert!(ok, "{out}");
    assert!(out.contains("SUCCESS: 7 rules found"), "{out}");
}

/// The scenario of the issue, end to end: a real Prometheus scrapes the daemon every second
/// while the memory-cgroup pipe workload fails order-6 allocations. The failure counter's raw
/// samples are there at 0 before, and rise by exactly the workload's ENOMEM count; the order >= 3
/// alert fires with verdict="memcg_limit".
#[test]
fn real_prometheus_sees_memcg_failures_and_fires_the_alert() {
    let name = "real_prometheus_sees_memcg_failures_and_fires_the_alert";
    if !is_root_or_skip(name) || !have_prometheus(name) {
        return;
    }
    let Some(pressure) = PipePressure::prepare("prometheus") else {
        return;
    };
    let dir = Scratch::new("e2e-workload");
    // The workload under a comm of its own, and the daemon counting only it: failures other
    // tests on this machine may cause are not in these series.
    let (workload, comm) = renamed_workload(dir.path(), env!("CARGO_BIN_EXE_pipe-pressure"), "ftp");
    let daemon = Daemon::start(&["--comm", &comm]);
    let prometheus = Prometheus::start("e2e", &[&daemon.addr], &[repo().join(RULES)]);

    let series = r#"fragtrace_alloc_failures_total{job="fragtrace",order="6",verdict="memcg_limit",netns="no"}"#;
    // Present at 0 before the failures: several scrapes of it.
    let before = wait_for("three scrapes at 0", Duration::from_secs(60), || {
        let s = prometheus.raw_samples(series, "1m");
        (s.len() >= 3).then_some(s)
    });
    assert!(before.iter().all(|&(_, v)| v == 0.0), "{before:?}");

    let out = Command::new(&workload)
        .arg(&pressure.cgroup.dir)
        .arg("32")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let result: Value = serde_json::from_slice(&out.stdout).unwrap();
    let enomem = result["enomem"].as_u64().unwrap() as f64;
    assert!(enomem > 0.0, "no F_SETPIPE_SZ failed: {result}");

    // The raw samples reach the ENOMEM count and stay there.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let samples = loop {
        let s = prometheus.raw_samples(series, "5m");
        if s.iter()
            .rev()
            .take(3)
            .filter(|&&(_, v)| v == enomem)
            .count()
            == 3
        {
            break s;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the failures were not scraped in 60 s: {s:?} (ENOMEM {enomem}); targets {}",
            get(&format!("{}/api/v1/targets", prometheus.url))
                .unwrap()
                .body
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let values: Vec<f64> = samples.iter().map(|&(_, v)| v).collect();
    assert_eq!(values[0], 0.0, "{values:?}");
    assert!(
        values.windows(2).all(|w| w[0] <= w[1]),
        "not monotonic: {values:?}"
    );
    assert_eq!(values.last().unwrap() - values[0], enomem, "{values:?}");
    // The same through PromQL, and the comm series and the kernel's own count agree.
    let increase = prometheus.query(&format!(
        "max_over_time({series}[5m]) - min_over_time({series}[5m])"
    ));
    assert_eq!(increase[0]["value"][1], enomem.to_string(), "{increase:?}");
    let by_comm = prometheus.query(&format!(
        r#"fragtrace_alloc_failures_by_comm_total{{comm="{comm}"}}"#
    ));
    assert_eq!(by_comm[0]["value"][1], enomem.to_string(), "{by_comm:?}");
    let kernel = prometheus.query(
        r#"max_over_time(fragtrace_page_allocation_failures_total{order="6"}[5m]) - min_over_time(fragtrace_page_allocation_failures_total{order="6"}[5m])"#,
    );
    let kernel: f64 = kernel[0]["value"][1].as_str().unwrap().parse().unwrap();
    assert!(kernel >= enomem, "the kernel counted {kernel} < {enomem}");

    // The alert, with its verdict.
    let alert = wait_for("the alert firing", Duration::from_secs(60), || {
        prometheus.alerts().into_iter().find(|a| {
            a["labels"]["alertname"] == "FragtraceHighOrderAllocationFailures"
                && a["labels"]["verdict"] == "memcg_limit"
                && a["state"] == "firing"
        })
    });
    assert_eq!(alert["labels"]["severity"], "warning", "{alert}");

    // promtool lints the scrape as it is now, with its failure series.
    let scrape = daemon.scrape();
    let (ok, lint) = promtool(&["check", "metrics"], Some(&scrape));
    assert!(ok, "promtool check metrics: {lint}");

    eprintln!("scrape excerpt:");
    for line in scrape.lines().filter(|l| {
        l.contains(r#"order="6",verdict="memcg_limit""#)
            || l.contains(&comm)
            || l.starts_with(r#"fragtrace_page_allocation_failures_total{order="6"}"#)
    }) {
        eprintln!("  {line}");
    }
    eprintln!("raw samples of {series}: {values:?} (ENOMEM calls: {enomem})");
    eprintln!(
        "query max-min over 5m: {}",
        serde_json::to_string(&increase).unwrap()
    );
    eprintln!("alert: {alert}");
    drop(prometheus);
    let (status, took, stderr) = daemon.stop();
    assert!(status.success(), "{stderr}");
    assert!(took < Duration::from_secs(1), "SIGTERM took {took:?}");
}

/// PromQL expressions in the dashboard, Grafana's variables replaced by values.
fn dashboard_expressions() -> Vec<String> {
    let text = std::fs::read_to_string(repo().join(DASHBOARD)).unwrap();
    let dashboard: Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    let mut exprs = Vec::new();
    collect_exprs(&dashboard, &mut exprs);
    // Template variables: `label_values(SELECTOR, label)` is Grafana's; its selector is PromQL.
    for var in dashboard["templating"]["list"].as_array().unwrap() {
        if let Some(q) = var["query"]["query"].as_str()
            && let Some(inner) = q.strip_prefix("label_values(")
        {
            let selector = inner.rsplit_once(',').map_or(inner, |(s, _)| s);
            exprs.push(selector.to_string());
        }
    }
    exprs
        .into_iter()
        .map(|e| {
            e.replace("$__rate_interval", "1m")
                .replace("$__interval", "1m")
                .replace("$__range", "1h")
                .replace("$instance", ".*")
                .replace("$zone", ".*")
        })
        .collect()
}

fn collect_exprs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(map) => {
            if let Some(Value::String(e)) = map.get("expr") {
                out.push(e.clone());
            }
            map.values().for_each(|v| collect_exprs(v, out));
        }
        Value::Array(items) => items.iter().for_each(|v| collect_exprs(v, out)),
        _ => {}
    }
}

/// Every PromQL expression of the dashboard parses on the real Prometheus (its query API), and
/// names only metrics docs/metrics.md documents or the rules record.
#[test]
fn dashboard_queries_parse_on_real_prometheus() {
    let name = "dashboard_queries_parse_on_real_prometheus";
    if !have_prometheus(name) {
        return;
    }
    let exprs = dashboard_expressions();
    assert!(exprs.len() >= 25, "{} expressions", exprs.len());
    assert!(
        exprs.iter().all(|e| !e.contains('$')),
        "a variable left: {exprs:?}"
    );
    let prometheus = Prometheus::start("dashboard", &[], &[repo().join(RULES)]);
    // The check can fail: a broken expression is refused as bad_data.
    let (status, body) = prometheus.query_raw("sum(rate(fragtrace_events_total[5m])");
    assert_eq!(
        (status, body["errorType"].as_str()),
        (400, Some("bad_data")),
        "{body}"
    );
    for e in &exprs {
        let (status, body) = prometheus.query_raw(e);
        assert_eq!(status, 200, "{e}: {body}");
        assert_eq!(body["status"], "success", "{e}: {body}");
    }
    let doc = std::fs::read_to_string(repo().join("docs/metrics.md")).unwrap();
    let rules = std::fs::read_to_string(repo().join(RULES)).unwrap();
    let names: BTreeSet<String> = exprs
        .iter()
        .chain(std::iter::once(&rules))
        .flat_map(|e| metric_names(e))
        .collect();
    for n in names {
        let base = n
            .trim_end_matches("_bucket")
            .trim_end_matches("_sum")
            .trim_end_matches("_count");
        let known = doc.contains(&format!("`{n}`"))
            || doc.contains(&format!("`{base}`"))
            || rules.contains(&format!("record: {n}"));
        assert!(known, "{n} is neither documented nor recorded");
    }
}

/// Metric names in PromQL text: `fragtrace_...`, `fragtrace:...` and `process_...` words.
fn metric_names(text: &str) -> Vec<String> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .filter(|w| {
            w.starts_with("fragtrace_") || w.starts_with("fragtrace:") || w.starts_with("process_")
        })
        .map(str::to_string)
        .collect()
}
