//! deploy/kubernetes: the core kinds validate against the Kubernetes API's schemas
//! (kubernetes-validate, from PyPI), and the DaemonSet says what the issue asks of it: least
//! privilege with a reason per capability, the listener on the pod's own IP, readiness and a
//! generous liveness on /healthz, amd64 only, every node, read-only host mounts.
use std::process::Command;

use fragtrace_tests::{Scratch, daemon::*, skip};
use serde_json::Value;

const CORE: [&str; 4] = [
    "namespace.yaml",
    "serviceaccount.yaml",
    "daemonset.yaml",
    "service.yaml",
];

fn have_validator(test: &str) -> bool {
    let ok = Command::new("python3")
        .args(["-m", "kubernetes_validate", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        skip(
            test,
            "kubernetes-validate not installed (cargo xtask setup installs it)",
        );
    }
    ok
}

fn validate(paths: &[std::path::PathBuf]) -> (bool, String) {
    let out = Command::new("python3")
        .args(["-m", "kubernetes_validate", "--strict"])
        .args(paths)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr),
    )
}

#[test]
fn core_kinds_validate_against_the_api_schemas() {
    let name = "core_kinds_validate_against_the_api_schemas";
    if !have_validator(name) {
        return;
    }
    let dir = repo().join("deploy/kubernetes");
    let paths: Vec<_> = CORE.iter().map(|f| dir.join(f)).collect();
    let (ok, out) = validate(&paths);
    assert!(ok, "{out}");
    for f in CORE {
        assert!(
            out.lines().any(|l| l.contains(f) && l.contains("passed")),
            "{f} not validated: {out}"
        );
    }
    // The check can fail: a misspelt field is refused (strict validation).
    let tmp = Scratch::new("kube-validate");
    let bad = tmp.path().join("daemonset.yaml");
    let text = std::fs::read_to_string(dir.join("daemonset.yaml")).unwrap();
    std::fs::write(&bad, text.replace("hostPID", "hostPid")).unwrap();
    let (ok, out) = validate(&[bad]);
    assert!(!ok && out.contains("hostPid"), "{out}");
}

fn daemonset() -> (Value, String) {
    let path = repo().join("deploy/kubernetes/daemonset.yaml");
    let docs = yaml_documents(&path).expect("python3 with yaml");
    (docs[0].clone(), std::fs::read_to_string(path).unwrap())
}

#[test]
fn daemonset_grants_least_privilege_and_listens_on_the_pod_ip() {
    let name = "daemonset_grants_least_privilege_and_listens_on_the_pod_ip";
    if yaml_documents(&repo().join("deploy/kubernetes/service.yaml")).is_none() {
        return skip(
            name,
            "python3 has no yaml module (cargo xtask setup installs it)",
        );
    }
    let (ds, text) = daemonset();
    assert_eq!(ds["kind"], "DaemonSet");
    let pod = &ds["spec"]["template"];
    let spec = &pod["spec"];
    let c = &spec["containers"][0];

    // The pod's own IP, from the downward API; never the host network.
    assert!(spec["hostNetwork"].is_null() || spec["hostNetwork"] == false);
    let args: Vec<&str> = c["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_eq!(args[0], "daemon");
    assert!(args.contains(&"--listen=$(POD_IP):9464"), "{args:?}");
    let pod_ip = c["env"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "POD_IP")
        .expect("POD_IP");
    assert_eq!(pod_ip["valueFrom"]["fieldRef"]["fieldPath"], "status.podIP");

    // Least privilege: unprivileged, all capabilities dropped, each one added with its reason.
    let sc = &c["securityContext"];
    assert_eq!(sc["privileged"], false);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["capabilities"]["drop"], serde_json::json!(["ALL"]));
    let added: Vec<&str> = sc["capabilities"]["add"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert!(
        added.contains(&"BPF") && added.contains(&"PERFMON"),
        "{added:?}"
    );
    assert!(!added.contains(&"SYS_ADMIN"), "{added:?}");
    for cap in &added {
        let line = text
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("- {cap} ")))
            .unwrap_or_else(|| panic!("no line for {cap}"));
        let reason = line.split_once('#').map(|(_, r)| r.trim()).unwrap_or("");
        assert!(reason.len() > 10, "{cap} has no reason: {line}");
    }
    assert_eq!(spec["automountServiceAccountToken"], false);

    // Readiness on /healthz; liveness only after long failure (10 minutes).
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/healthz");
    let live = &c["livenessProbe"];
    assert_eq!(live["httpGet"]["path"], "/healthz");
    let patience =
        live["periodSeconds"].as_u64().unwrap() * live["failureThreshold"].as_u64().unwrap();
    assert!(patience >= 300, "liveness gives up after {patience} s");

    // amd64 only, every node.
    assert_eq!(spec["nodeSelector"]["kubernetes.io/arch"], "amd64");
    assert!(
        spec["tolerations"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["operator"] == "Exists" && t["key"].is_null()),
        "{}",
        spec["tolerations"]
    );

    // Host mounts read-only, but for the flight recorder's directory.
    let volumes = spec["volumes"].as_array().unwrap();
    for m in c["volumeMounts"].as_array().unwrap() {
        let v = volumes.iter().find(|v| v["name"] == m["name"]).unwrap();
        assert!(v["hostPath"]["path"].is_string(), "{v}");
        if m["name"] == "flight-recorder" {
            assert!(args.iter().any(|a| a.starts_with(&format!(
                "--flight-recorder={}",
                m["mountPath"].as_str().unwrap()
            ))));
        } else {
            assert_eq!(m["readOnly"], true, "{m}");
        }
    }

    // Requests and a memory limit; scrape annotations on the pod.
    let res = &c["resources"];
    for field in ["requests", "limits"] {
        assert!(res[field]["memory"].is_string(), "{res}");
    }
    let annotations = &pod["metadata"]["annotations"];
    assert_eq!(annotations["prometheus.io/scrape"], "true");
    assert_eq!(annotations["prometheus.io/port"], "9464");
    assert_eq!(c["ports"][0]["containerPort"], 9464);

    // The Service and the ServiceMonitor find these pods and their port.
    let kube = repo().join("deploy/kubernetes");
    let service = &yaml_documents(&kube.join("service.yaml")).unwrap()[0];
    let monitor = &yaml_documents(&kube.join("servicemonitor.yaml")).unwrap()[0];
    let labels = &pod["metadata"]["labels"];
    for (k, v) in service["spec"]["selector"].as_object().unwrap() {
        assert_eq!(&labels[k], v);
    }
    for (k, v) in monitor["spec"]["selector"]["matchLabels"]
        .as_object()
        .unwrap()
    {
        assert_eq!(&service["metadata"]["labels"][k], v);
    }
    assert_eq!(
        monitor["spec"]["endpoints"][0]["port"],
        service["spec"]["ports"][0]["name"]
    );
    assert_eq!(
        service["spec"]["ports"][0]["targetPort"],
        c["ports"][0]["name"]
    );
}
