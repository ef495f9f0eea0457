//! Container runtime and kubelet errors that follow a failed netns or slab-cache creation
//! (`runc ... running exec setns process for init caused "exit status 6"`, `RunPodSandbox from
//! runtime service failed`), with the pod and container they name.
use super::lines::Stamp;

/// One runtime or kubelet error line.
#[derive(Clone, Debug, PartialEq)]
pub struct RuntimeHit {
    pub line: usize,
    pub timestamp: Option<String>,
    pub stamp: Stamp,
    /// The syslog/journal program (`dockerd`, `kubelet`), when the line had one.
    pub program: Option<String>,
    /// What failed, in a few words.
    pub what: String,
    pub pod: Option<String>,
    /// The full container (or sandbox) id.
    pub container: Option<String>,
}

/// Programs whose errors are runtime evidence.
const RUNTIMES: [&str; 12] = [
    "dockerd",
    "docker",
    "containerd",
    "kubelet",
    "runc",
    "crio",
    "cri-o",
    "podman",
    "conmon",
    "k3s",
    "rke2",
    "crun",
];

/// The runtime error `text` reports, if it is one.
pub fn detect(
    text: &str,
    program: Option<&str>,
    line: usize,
    timestamp: Option<&str>,
    stamp: Stamp,
) -> Option<RuntimeHit> {
    if let Some(p) = program
        && !RUNTIMES.contains(&p)
    {
        return None;
    }
    // Nested JSON quoting (`\\\"exit status 6\\\"`) hides nothing once backslashes go.
    let plain: String = if text.contains('\\') {
        text.replace('\\', "")
    } else {
        text.to_string()
    };
    let what = classify(&plain, program.is_some())?;
    Some(RuntimeHit {
        line,
        timestamp: timestamp.map(str::to_string),
        stamp,
        program: program.map(str::to_string),
        what,
        pod: pod_name(&plain),
        container: container_id(&plain),
    })
}

/// `from_runtime`: the line came from a runtime's own log; without it only the runtimes' own
/// phrases count, not prose that mentions network namespaces or memory.
fn classify(t: &str, from_runtime: bool) -> Option<String> {
    let exit_status = t.split_once("exit status ").map(|(_, r)| {
        r.chars()
            .take_while(char::is_ascii_digit)
            .collect::<String>()
    });
    if t.contains("setns process for init") {
        return Some(match exit_status.filter(|s| !s.is_empty()) {
            Some(code) => format!("runc init failed in setns (exit status {code})"),
            None => "runc init failed in setns".to_string(),
        });
    }
    let failed = t.contains("failed") || t.contains("error") || t.contains("Error");
    if t.contains("RunPodSandbox") && failed {
        return Some("RunPodSandbox failed".into());
    }
    if t.contains("CreatePodSandbox") && failed {
        return Some("CreatePodSandbox failed".into());
    }
    if t.contains("failed to start sandbox container") {
        return Some("sandbox container failed to start".into());
    }
    if t.contains("Unable to create nf_conn slab cache") {
        return Some("nf_conn slab cache could not be created".into());
    }
    if (t.contains("oci runtime error") || t.contains("OCI runtime create failed")) && failed {
        return Some(match exit_status.filter(|s| !s.is_empty()) {
            Some(code) => format!("OCI runtime failed (exit status {code})"),
            None => "OCI runtime failed".to_string(),
        });
    }
    if !from_runtime {
        return None;
    }
    if (t.contains("network namespace") || t.contains("netns")) && failed {
        return Some("network namespace setup failed".into());
    }
    if t.contains("cannot allocate memory") && failed {
        return Some("cannot allocate memory".into());
    }
    None
}

/// `pod "NAME"`, `pod "NAME_NAMESPACE(UID)"`, `pod="NAMESPACE/NAME"`.
fn pod_name(t: &str) -> Option<String> {
    let quoted = t
        .split_once("pod \"")
        .or_else(|| t.split_once("pod=\""))
        .map(|(_, r)| r)?;
    let raw = quoted.split('"').next()?;
    let raw = raw.split('(').next().unwrap_or(raw);
    let name = match raw.rsplit_once('/') {
        Some((_, name)) => name,
        // Kubernetes pod names have no `_`: what follows is the namespace.
        None => raw.split('_').next().unwrap_or(raw),
    };
    (!name.is_empty()).then(|| name.to_string())
}

/// The first 64-hex-digit id in the text (docker/containerd container and sandbox ids).
fn container_id(t: &str) -> Option<String> {
    let b = t.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i].is_ascii_hexdigit() && (i == 0 || !b[i - 1].is_ascii_alphanumeric()) {
            let run = b[i..].iter().take_while(|c| c.is_ascii_hexdigit()).count();
            let end = i + run;
            if run == 64 && b.get(end).is_none_or(|c| !c.is_ascii_alphanumeric()) {
                return Some(t[i..end].to_ascii_lowercase());
            }
            i = end.max(i + 1);
        } else {
            i += 1;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOCKERD: &str = r#"time="2019-01-23T14:15:31.288446233+08:00" level=error msg="containerd: start container" error="oci runtime error: container_linux.go:247: starting container process caused \"process_linux.go:245: running exec setns process for init caused \\\"exit status 6\\\"\"\n" id=5b9be8c5bb121264899fac8d9d36b02150269d41ce96ba6ad36d70b8640cb01c"#;
    const KUBELET: &str = r#"E0123 14:15:31.352386   26037 remote_runtime.go:91] RunPodSandbox from runtime service failed: rpc error: code = 2 desc = failed to start sandbox container for pod "matchdataserver-1255064836-t4b2w": Error response from daemon: {"message":"invalid header field value \"oci runtime error\""}"#;

    #[test]
    fn seed_000_lines() {
        let d = detect(DOCKERD, Some("dockerd"), 1, None, Stamp::default()).unwrap();
        assert_eq!(d.what, "runc init failed in setns (exit status 6)");
        assert_eq!(
            d.container.as_deref(),
            Some("5b9be8c5bb121264899fac8d9d36b02150269d41ce96ba6ad36d70b8640cb01c")
        );
        let k = detect(KUBELET, Some("kubelet"), 2, None, Stamp::default()).unwrap();
        assert_eq!(k.what, "RunPodSandbox failed");
        assert_eq!(k.pod.as_deref(), Some("matchdataserver-1255064836-t4b2w"));
        let c = detect(
            r#"CreatePodSandbox for pod "matchdataserver-1255064836-t4b2w_basic(485fd485-1ed6-11e9-8661-0a587f8021ea)" failed: rpc error"#,
            Some("kubelet"),
            3,
            None,
            Stamp::default(),
        )
        .unwrap();
        assert_eq!(c.pod.as_deref(), Some("matchdataserver-1255064836-t4b2w"));
        assert_eq!(
            pod_name(r#"Failed to create sandbox for pod" pod="kube-system/coredns-abc""#),
            Some("coredns-abc".into())
        );
    }

    #[test]
    fn other_programs_and_lines_are_not_runtime_errors() {
        assert!(detect(DOCKERD, Some("CROND"), 1, None, Stamp::default()).is_none());
        assert!(
            detect(
                "level=info msg=started",
                Some("dockerd"),
                1,
                None,
                Stamp::default()
            )
            .is_none()
        );
        assert!(container_id(&"a".repeat(65)).is_none());
    }
}
