//! Helpers for the daemon's tests: run `fragtrace daemon`, talk HTTP to it and to Prometheus
//! (ureq, loopback only), and the real tools the tests drive (promtool, podman, python).
use std::{
    io::{BufRead, BufReader, Read},
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;

use crate::fragtrace_bin;

/// Whether `tool` runs here (`tool --version`).
pub fn have(tool: &str) -> bool {
    Command::new(tool)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The workspace root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

/// An HTTP answer: status, `Content-Type`, body.
pub struct Answer {
    pub status: u16,
    pub content_type: String,
    pub body: String,
}

/// `GET url` on loopback, with no proxy and any status accepted.
pub fn get(url: &str) -> Result<Answer, String> {
    request(url, "GET", &[])
}

/// `METHOD url?query`, with no proxy and any status accepted.
pub fn request(url: &str, method: &str, query: &[(&str, &str)]) -> Result<Answer, String> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .proxy(None)
        .timeout_global(Some(Duration::from_secs(15)))
        .build()
        .into();
    let mut req = match method {
        "GET" => agent.get(url),
        "HEAD" => agent.head(url),
        "DELETE" => agent.delete(url),
        other => panic!("no {other} here"),
    };
    for (k, v) in query {
        req = req.query(*k, *v);
    }
    let mut resp = req.call().map_err(|e| e.to_string())?;
    let content_type = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    Ok(Answer {
        status: resp.status().as_u16(),
        content_type,
        body: resp
            .body_mut()
            .read_to_string()
            .map_err(|e| e.to_string())?,
    })
}

/// Calls `probe` until it returns Some, or panics after `limit` (a hang guard) naming `what`.
pub fn wait_for<T>(what: &str, limit: Duration, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = probe() {
            return v;
        }
        assert!(Instant::now() < deadline, "gave up after {limit:?}: {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A running `fragtrace daemon` listening on a free loopback port.
pub struct Daemon {
    child: Child,
    pub addr: String,
    stderr: std::thread::JoinHandle<String>,
}

impl Daemon {
    /// Starts `fragtrace daemon --listen 127.0.0.1:PORT ARGS` and waits until it serves.
    pub fn start(args: &[&str]) -> Self {
        Self::start_with(Command::new(fragtrace_bin()), args)
    }

    /// The same with `command` as fragtrace (a wrapper such as setpriv, ending with the binary).
    pub fn start_with(mut command: Command, args: &[&str]) -> Self {
        let addr = format!("127.0.0.1:{}", free_port());
        let mut child = command
            .args(["daemon", "--listen", &addr])
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn fragtrace daemon");
        let mut stderr = BufReader::new(child.stderr.take().unwrap());
        let mut seen = String::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let mut line = String::new();
            if stderr.read_line(&mut line).unwrap_or(0) == 0 || Instant::now() > deadline {
                let status = child.wait().ok();
                panic!("the daemon did not start (status {status:?}); stderr:\n{seen}");
            }
            seen.push_str(&line);
            if line.contains("daemon serving") {
                break;
            }
        }
        let stderr = std::thread::spawn(move || {
            let mut rest = String::new();
            let _ = stderr.read_to_string(&mut rest);
            seen + &rest
        });
        Self {
            child,
            addr,
            stderr,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// `GET /metrics`, which must answer 200.
    pub fn scrape(&self) -> String {
        let a = get(&self.url("/metrics")).expect("scrape the daemon");
        assert_eq!(a.status, 200, "{}", a.body);
        a.body
    }

    pub fn signal(&self, signal: i32) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, signal) };
    }

    /// SIGTERM, then waits: the exit status, how long the exit took, and stderr.
    pub fn stop(mut self) -> (ExitStatus, Duration, String) {
        let sent = Instant::now();
        self.signal(libc::SIGTERM);
        let status = loop {
            if let Some(s) = self.child.try_wait().expect("wait") {
                break s;
            }
            if sent.elapsed() > Duration::from_secs(30) {
                let _ = self.child.kill();
                panic!("the daemon did not exit within 30 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        let took = sent.elapsed();
        (status, took, self.stderr.join().unwrap_or_default())
    }
}

/// The value of the sample `name{labels}` (labels exactly as exposed) in a scrape.
pub fn sample(scrape: &str, series: &str) -> Option<f64> {
    scrape
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

/// The metric family names in a scrape (its `# TYPE` lines).
pub fn families(scrape: &str) -> Vec<String> {
    scrape
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

/// A YAML file (or stream of documents) as JSON, read by PyYAML (which kubernetes-validate
/// brings). None when python3 has no yaml module.
pub fn yaml_documents(path: &Path) -> Option<Vec<Value>> {
    let out = Command::new("python3")
        .args([
            "-c",
            "import json, sys, yaml; \
             print(json.dumps([d for d in yaml.safe_load_all(open(sys.argv[1])) if d]))",
        ])
        .arg(path)
        .output()
        .ok()?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("No module named 'yaml'"),
            "cannot read {}: {err}",
            path.display()
        );
        return None;
    }
    Some(serde_json::from_slice(&out.stdout).expect("python printed JSON"))
}

/// A real Prometheus server on 127.0.0.1 with its own data directory, stopped on drop.
pub struct Prometheus {
    child: Child,
    pub url: String,
    _dir: crate::Scratch,
}

impl Prometheus {
    /// Scrapes `targets` every second and evaluates `rule_files` every second.
    pub fn start(tag: &str, targets: &[&str], rule_files: &[PathBuf]) -> Self {
        let dir = crate::Scratch::new(&format!("prometheus-server-{tag}"));
        let rules: Vec<String> = rule_files
            .iter()
            .map(|p| format!("  - {}", std::fs::canonicalize(p).unwrap().display()))
            .collect();
        let targets: Vec<String> = targets.iter().map(|t| format!("'{t}'")).collect();
        let config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             rule_files:\n{}\n\
             scrape_configs:\n  - job_name: fragtrace\n    static_configs:\n      - targets: [{}]\n",
            if rules.is_empty() {
                "  []".to_string()
            } else {
                rules.join("\n")
            },
            targets.join(", ")
        );
        let config_path = dir.path().join("prometheus.yml");
        std::fs::write(&config_path, config).unwrap();
        let url = format!("http://127.0.0.1:{}", free_port());
        let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!(
                "--web.listen-address={}",
                url.trim_start_matches("http://")
            ))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start prometheus");
        let p = Self {
            child,
            url,
            _dir: dir,
        };
        wait_for("prometheus ready", Duration::from_secs(60), || {
            get(&format!("{}/-/ready", p.url))
                .ok()
                .filter(|a| a.status == 200)
        });
        p
    }

    /// The query API's answer: (HTTP status, JSON body).
    pub fn query_raw(&self, expr: &str) -> (u16, Value) {
        let a = request(
            &format!("{}/api/v1/query", self.url),
            "GET",
            &[("query", expr)],
        )
        .expect("query prometheus");
        let body = serde_json::from_str(&a.body)
            .unwrap_or_else(|e| panic!("prometheus answered non-JSON ({e}): {}", a.body));
        (a.status, body)
    }

    /// `data.result` of a query that must succeed.
    pub fn query(&self, expr: &str) -> Vec<Value> {
        let (status, body) = self.query_raw(expr);
        assert_eq!(status, 200, "{expr}: {body}");
        body["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// The raw samples of one series over `range` (a range-vector query): (time, value).
    pub fn raw_samples(&self, series: &str, range: &str) -> Vec<(f64, f64)> {
        let result = self.query(&format!("{series}[{range}]"));
        assert!(
            result.len() <= 1,
            "{series} matches several series: {result:?}"
        );
        result
            .first()
            .map(|r| {
                r["values"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|v| {
                        (
                            v[0].as_f64().unwrap(),
                            v[1].as_str().unwrap().parse().unwrap(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The alerts Prometheus holds now (pending and firing).
    pub fn alerts(&self) -> Vec<Value> {
        let a = get(&format!("{}/api/v1/alerts", self.url)).expect("alerts");
        let v: Value = serde_json::from_str(&a.body).unwrap();
        v["data"]["alerts"].as_array().cloned().unwrap_or_default()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A copy of a workload binary under a name no other task has (its comm), so that series
/// labelled or filtered by comm are this test's alone.
pub fn renamed_workload(dir: &Path, source: &str, tag: &str) -> (PathBuf, String) {
    let comm = format!("{tag}{}", std::process::id() % 100_000);
    assert!(comm.len() <= 15, "a comm holds 15 characters: {comm}");
    let path = dir.join(&comm);
    std::fs::copy(source, &path).expect("copy the workload");
    (path, comm)
}
