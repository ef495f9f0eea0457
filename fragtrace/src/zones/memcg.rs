//! Memory cgroup usage against its limit, for cgroup v2 (`memory.current`, `memory.max`,
//! `memory.events`) and v1 (`memory.usage_in_bytes`, `memory.limit_in_bytes`,
//! `memory.failcnt`).
use std::{
    collections::HashMap,
    fmt::Write as _,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use fragtrace_common::MemcgCounters;
use serde::Serialize;

/// Where the hierarchies are mounted on systemd and most other distributions.
const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// v1 treats limits at or above this as "no limit" (PAGE_COUNTER_MAX rounded to pages).
const V1_UNLIMITED: u64 = 1 << 62;

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
pub struct MemcgUsage {
    /// The cgroup path as in /proc/PID/cgroup (`/kubepods/pod1/...`).
    pub path: String,
    /// 1 or 2.
    pub version: u8,
    pub usage_bytes: u64,
    /// None when unlimited (`max`).
    pub limit_bytes: Option<u64>,
    /// v1: times usage hit the limit.
    pub failcnt: Option<u64>,
    /// v2 `memory.events`: `max` (times usage was about to exceed memory.max), `oom`,
    /// `oom_kill`.
    pub events_max: Option<u64>,
    pub events_oom: Option<u64>,
    pub events_oom_kill: Option<u64>,
    /// When the kernel handler read usage and limit (`at the failure`); None when they were
    /// read from cgroupfs afterwards.
    #[serde(skip_deserializing)]
    pub read_in_kernel: Option<&'static str>,
}

impl MemcgUsage {
    /// Reads the memory cgroup named in a task's `/proc/PID/cgroup` text.
    pub fn for_proc_cgroup(text: &str) -> Result<Self> {
        let (version, path) = memory_cgroup_of(text).context("no memory cgroup line")?;
        let dir = match version {
            1 => Path::new(CGROUP_ROOT).join("memory"),
            _ if Path::new(CGROUP_ROOT).join("cgroup.controllers").exists() => {
                PathBuf::from(CGROUP_ROOT)
            }
            _ => Path::new(CGROUP_ROOT).join("unified"),
        };
        Self::read(&dir.join(path.trim_start_matches('/')), &path)
    }

    /// From the page counter the kernel handler read at an event (`moment`, e.g. `at the
    /// failure`). `proc_cgroup` is the task's /proc/PID/cgroup text if it is still readable; it
    /// names the cgroup (`level` steps up from the task's own), else `unnamed` stands in.
    pub fn from_event(
        counters: &MemcgCounters,
        page_size: u64,
        named: Option<(u8, String)>,
        proc_cgroup: Option<&str>,
        unnamed: impl std::fmt::Display,
        moment: &'static str,
    ) -> Option<Self> {
        if counters.valid == 0 {
            return None;
        }
        let from_proc = || {
            proc_cgroup
                .and_then(memory_cgroup_of)
                .map(|(version, path)| (version, ancestor(&path, counters.level)))
        };
        let (version, path) = match named.or_else(from_proc) {
            Some(named) => named,
            None if counters.level == 0 => (0, unnamed.to_string()),
            None => (0, format!("{unnamed}, {} level(s) up", counters.level)),
        };
        let limit = counters.max_pages.saturating_mul(page_size);
        Some(Self {
            path,
            version,
            usage_bytes: counters.usage_pages.saturating_mul(page_size),
            limit_bytes: (limit < V1_UNLIMITED).then_some(limit),
            failcnt: None,
            events_max: None,
            events_oom: None,
            events_oom_kill: None,
            read_in_kernel: Some(moment),
        })
    }

    /// Reads the cgroup directory `dir` (v2 if it has `memory.current`, else v1). `path` is the
    /// name reported back.
    pub fn read(dir: &Path, path: &str) -> Result<Self> {
        let get = |f: &str| std::fs::read_to_string(dir.join(f)).ok();
        if let Some(current) = get("memory.current") {
            let events = get("memory.events").unwrap_or_default();
            return Ok(Self {
                path: path.to_string(),
                version: 2,
                usage_bytes: parse_u64(&current, "memory.current")?,
                limit_bytes: match get("memory.max").as_deref().map(str::trim) {
                    None | Some("max") => None,
                    Some(v) => Some(parse_u64(v, "memory.max")?),
                },
                failcnt: None,
                events_max: event(&events, "max"),
                events_oom: event(&events, "oom"),
                events_oom_kill: event(&events, "oom_kill"),
                read_in_kernel: None,
            });
        }
        if let Some(usage) = get("memory.usage_in_bytes") {
            let limit = match get("memory.limit_in_bytes") {
                Some(v) => Some(parse_u64(&v, "memory.limit_in_bytes")?),
                None => None,
            };
            let oom_control = get("memory.oom_control").unwrap_or_default();
            return Ok(Self {
                path: path.to_string(),
                version: 1,
                usage_bytes: parse_u64(&usage, "memory.usage_in_bytes")?,
                limit_bytes: limit.filter(|&l| l < V1_UNLIMITED),
                failcnt: get("memory.failcnt").and_then(|v| v.trim().parse().ok()),
                events_max: None,
                events_oom: None,
                events_oom_kill: event(&oom_control, "oom_kill"),
                read_in_kernel: None,
            });
        }
        bail!(
            "{} has neither memory.current nor memory.usage_in_bytes",
            dir.display()
        )
    }

    /// Whether an allocation of `request_bytes` would exceed the limit: [`Self::limit_reason`]
    /// is `Some` exactly then.
    pub fn exceeds_limit(&self, request_bytes: u64) -> bool {
        self.limit_bytes
            .is_some_and(|limit| self.usage_bytes.saturating_add(request_bytes) > limit)
    }

    /// A one-line reason when an allocation of `request_bytes` would exceed the limit.
    pub fn limit_reason(&self, request_bytes: u64) -> Option<String> {
        self.reason_if_within(
            request_bytes,
            format_args!("+ {} kB requested >", request_bytes / 1024),
        )
    }

    /// A one-line reason when usage is within `margin_bytes` of the limit (an OOM kill, where
    /// the size of the charge that failed is unknown).
    pub fn near_limit_reason(&self, margin_bytes: u64) -> Option<String> {
        self.reason_if_within(margin_bytes, format_args!("of a"))
    }

    fn reason_if_within(
        &self,
        margin_bytes: u64,
        relation: std::fmt::Arguments<'_>,
    ) -> Option<String> {
        let limit = self.limit_bytes?;
        if self.usage_bytes.saturating_add(margin_bytes) <= limit {
            return None;
        }
        // One string written in place: this runs for every failure of a limited cgroup.
        let mut reason = String::with_capacity(160);
        let _ = write!(reason, "memory cgroup {}", self.path);
        if self.version != 0 {
            let _ = write!(reason, " (v{})", self.version);
        }
        if let Some(moment) = self.read_in_kernel {
            let _ = write!(reason, ", {moment}");
        }
        let _ = write!(
            reason,
            ": {} kB used {relation} {} kB limit",
            self.usage_bytes / 1024,
            limit / 1024
        );
        let counters = [
            ("memory.events max", self.events_max),
            ("failcnt", self.failcnt),
            ("oom_kill", self.events_oom_kill),
        ];
        let mut separator = " (";
        for (name, n) in counters {
            if let Some(n) = n {
                let _ = write!(reason, "{separator}{name} {n}");
                separator = ", ";
            }
        }
        if separator == ", " {
            reason.push(')');
        }
        Some(reason)
    }
}

/// Memory-cgroup directories by inode number (the kernel's `kernfs_node.id`), so a cgroup
/// is named after its tasks are gone. The tree is rescanned on a miss, at most once a second.
#[derive(Default)]
pub struct MemcgNames {
    by_ino: HashMap<u64, (u8, String)>,
    scanned: Option<Instant>,
}

/// Enough for the cgroup trees of large Kubernetes nodes; the scan stops there.
const MAX_SCANNED_DIRS: usize = 200_000;

impl MemcgNames {
    /// Cgroup version and path (`/kubepods/pod1`) of the directory with inode `ino`.
    pub fn name(&mut self, ino: u64) -> Option<(u8, String)> {
        if ino == 0 {
            return None;
        }
        if !self.by_ino.contains_key(&ino)
            && self
                .scanned
                .is_none_or(|t| t.elapsed() >= Duration::from_secs(1))
        {
            self.scan();
        }
        self.by_ino.get(&ino).cloned()
    }

    fn scan(&mut self) {
        self.scanned = Some(Instant::now());
        let v1 = Path::new(CGROUP_ROOT).join("memory");
        let (version, root) = if v1.join("memory.limit_in_bytes").exists() {
            (1, v1)
        } else if Path::new(CGROUP_ROOT).join("cgroup.controllers").exists() {
            (2, PathBuf::from(CGROUP_ROOT))
        } else {
            (2, Path::new(CGROUP_ROOT).join("unified"))
        };
        let mut stack = vec![root.clone()];
        let mut found = HashMap::new();
        while let Some(dir) = stack.pop() {
            if found.len() >= MAX_SCANNED_DIRS {
                break;
            }
            let Ok(meta) = std::fs::metadata(&dir) else {
                continue;
            };
            let rel = dir.strip_prefix(&root).unwrap_or(&dir);
            found.insert(meta.ino(), (version, format!("/{}", rel.display())));
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            stack.extend(
                entries
                    .flatten()
                    .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                    .map(|e| e.path()),
            );
        }
        // Cgroups removed since earlier scans stay named (their tasks' failures may still be
        // in flight), until they outnumber the live ones: then only the live ones are kept, so
        // that a long-running daemon on a node with pod churn keeps bounded memory.
        if self.by_ino.len() > 2 * found.len() + 1024 {
            self.by_ino = found;
        } else {
            self.by_ino.extend(found);
        }
    }
}

/// The memory cgroup in a /proc/PID/cgroup text: the v1 `memory` line, else the v2 `0::` line.
pub fn memory_cgroup_of(proc_cgroup: &str) -> Option<(u8, String)> {
    let mut v2 = None;
    for line in proc_cgroup.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(id), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        if controllers.split(',').any(|c| c == "memory") {
            return Some((1, path.to_string()));
        }
        if id == "0" && controllers.is_empty() {
            v2 = Some((2, path.to_string()));
        }
    }
    v2
}

/// The cgroup `levels` steps above `path` (`/a/b/c`, 1 → `/a/b`; never above `/`).
fn ancestor(path: &str, levels: u32) -> String {
    let mut p = path.trim_end_matches('/');
    for _ in 0..levels {
        p = p.rsplit_once('/').map_or("", |(head, _)| head);
    }
    if p.is_empty() { "/".into() } else { p.into() }
}

fn parse_u64(text: &str, file: &str) -> Result<u64> {
    text.trim()
        .parse()
        .with_context(|| format!("{file}: {:?} is not a number", text.trim()))
}

fn event(events: &str, key: &str) -> Option<u64> {
    events.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir_with(files: &[(&str, &str)]) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "fragtrace-memcg-{}-{}",
            std::process::id(),
            files[0].0
        ));
        std::fs::create_dir_all(&dir).unwrap();
        for (name, text) in files {
            std::fs::write(dir.join(name), text).unwrap();
        }
        dir
    }

    #[test]
    fn v2_at_limit() {
        let dir = dir_with(&[
            ("memory.current", "104857600\n"),
            ("memory.max", "104857600\n"),
            (
                "memory.events",
                "low 0\nhigh 0\nmax 42\noom 1\noom_kill 1\n",
            ),
        ]);
        let m = MemcgUsage::read(&dir, "/pod").unwrap();
        assert_eq!(
            (m.version, m.limit_bytes, m.events_max),
            (2, Some(104857600), Some(42))
        );
        let reason = m.limit_reason(4096).unwrap();
        assert!(
            reason.contains("102400 kB used + 4 kB requested > 102400 kB limit"),
            "{reason}"
        );
        assert!(reason.contains("memory.events max 42"), "{reason}");
    }

    #[test]
    fn v1_unlimited_is_none() {
        let dir = dir_with(&[
            ("memory.usage_in_bytes", "5000\n"),
            ("memory.limit_in_bytes", "9223372036854771712\n"),
            ("memory.failcnt", "7\n"),
        ]);
        let m = MemcgUsage::read(&dir, "/").unwrap();
        assert_eq!((m.version, m.limit_bytes, m.failcnt), (1, None, Some(7)));
        assert!(m.limit_reason(1 << 30).is_none());
    }

    #[test]
    fn proc_cgroup_lines() {
        let v1 = "9:name=systemd:/\n4:memory:/process_api/899f\n0::/\n";
        assert_eq!(memory_cgroup_of(v1), Some((1, "/process_api/899f".into())));
        assert_eq!(
            memory_cgroup_of("0::/user.slice\n"),
            Some((2, "/user.slice".into()))
        );
        assert_eq!(memory_cgroup_of("garbage"), None);
    }

    #[test]
    fn counters_read_at_the_failure() {
        let at_limit = MemcgCounters {
            usage_pages: 16384,
            max_pages: 16384,
            cgroup_ino: 0,
            level: 1,
            valid: 1,
        };
        let proc = "4:memory:/kubepods/pod1/c1\n0::/\n";
        let m =
            MemcgUsage::from_event(&at_limit, 4096, None, Some(proc), "pid 7", "at the failure")
                .unwrap();
        assert_eq!((m.version, m.path.as_str()), (1, "/kubepods/pod1"));
        let reason = m.limit_reason(256 << 10).unwrap();
        assert!(
            reason.starts_with(
                "memory cgroup /kubepods/pod1 (v1), at the failure: 65536 kB used + 256 kB \
                 requested > 65536 kB limit"
            ),
            "{reason}"
        );
        // The task is gone: the reason still stands, with the pid instead of a path.
        let gone =
            MemcgUsage::from_event(&at_limit, 4096, None, None, "of pid 7", "at the failure")
                .unwrap();
        assert!(
            gone.limit_reason(4096)
                .unwrap()
                .contains("of pid 7, 1 level(s) up")
        );
        // Unlimited (PAGE_COUNTER_MAX) and unread counters.
        let unlimited = MemcgCounters {
            max_pages: i64::MAX as u64 / 4096,
            ..at_limit
        };
        let m = MemcgUsage::from_event(&unlimited, 4096, None, None, "x", "now").unwrap();
        assert_eq!(m.limit_bytes, None);
        assert!(
            MemcgUsage::from_event(&MemcgCounters::default(), 4096, None, None, "x", "now")
                .is_none()
        );
        assert_eq!(ancestor("/a/b/c", 2), "/a");
        assert_eq!(ancestor("/a", 3), "/");
    }

    #[test]
    fn cgroup_directories_are_found_by_inode() {
        let mut names = MemcgNames::default();
        let text = std::fs::read_to_string("/proc/self/cgroup").unwrap();
        let Some((_, path)) = memory_cgroup_of(&text) else {
            return;
        };
        names.scan();
        let found = names.by_ino.values().any(|(_, p)| *p == path);
        assert!(
            found || names.by_ino.is_empty(),
            "{path} not among the scanned directories"
        );
        assert_eq!(names.name(0), None);
    }

    #[test]
    fn this_process() {
        let text = std::fs::read_to_string("/proc/self/cgroup").unwrap();
        match MemcgUsage::for_proc_cgroup(&text) {
            Ok(m) => assert!(m.usage_bytes > 0),
            Err(err) => crate::test_support::skip(
                "this_process",
                &format!("no readable memory cgroup here: {err:#}"),
            ),
        }
    }
}
