//! Container attribution: maps a task's cgroup to a container id and Kubernetes pod uid.
//!
//! The eBPF side reports `bpf_get_current_cgroup_id()`, the cgroup v2 id, which is the inode
//! number of the cgroup's directory in the unified hierarchy. [`ContainerResolver`] walks that
//! hierarchy to map ids to paths; [`parse_cgroup_path`] reads the runtime's naming in a path.
//! On hybrid hosts containers live in the v1 hierarchies and every task's v2 id is the root, so
//! [`ContainerResolver::for_task`] reads the task's `/proc/PID/cgroup` (v2 and v1 lines) instead.
use std::{
    collections::{HashMap, HashSet},
    fs,
    os::unix::fs::MetadataExt,
    path::PathBuf,
    time::{Duration, Instant},
};

/// Most cgroups the id -> path map holds; a walk stops adding beyond this.
const MAX_CACHED_CGROUPS: usize = 65_536;
/// Least time between two walks of the hierarchy triggered by unknown ids.
const MIN_REWALK_INTERVAL: Duration = Duration::from_secs(1);

/// What a cgroup path says about the container and pod a task runs in.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContainerInfo {
    /// Path inside the cgroup hierarchy, e.g. `/system.slice/docker-<id>.scope`.
    pub cgroup_path: String,
    /// Full 64-hex container id.
    pub container_id: Option<String>,
    /// Kubernetes pod uid with dashes (a 32-hex hash for static pods).
    pub pod_uid: Option<String>,
    /// `docker`, `containerd`, `cri-o` or `podman`, when the naming tells.
    pub runtime: Option<&'static str>,
}

/// Maps cgroup v2 ids to container info, caching the hierarchy walk.
#[derive(Debug)]
pub struct ContainerResolver {
    /// The cgroup2 mount: `None` until looked up, `Some(None)` when there is none.
    mount: Option<Option<Cgroup2Mount>>,
    /// cgroup id (directory inode) -> path in the hierarchy.
    paths_by_id: HashMap<u64, String>,
    /// Ids still unknown after a walk that started after they were asked for: gone cgroups.
    known_missing: HashSet<u64>,
    last_walk: Option<Instant>,
    min_rewalk_interval: Duration,
}

/// Where the unified hierarchy is mounted, and which of its directories the mount shows.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Cgroup2Mount {
    mount_point: PathBuf,
    /// The hierarchy path shown at the mount point: `/` unless inside a cgroup namespace.
    root: String,
}

impl ContainerResolver {
    /// Cheap: finds the mount and walks the hierarchy on the first lookup.
    pub fn new() -> Self {
        Self {
            mount: None,
            paths_by_id: HashMap::new(),
            known_missing: HashSet::new(),
            last_walk: None,
            min_rewalk_interval: MIN_REWALK_INTERVAL,
        }
    }

    /// Container info for a cgroup v2 id, or `None` when the id is unknown (or the cgroup gone).
    /// Re-walks the hierarchy on an unknown id, at most once per second.
    pub fn for_cgroup_id(&mut self, id: u64) -> Option<ContainerInfo> {
        if let Some(path) = self.cached_path(id) {
            return Some(parse_cgroup_path(path));
        }
        if self.known_missing.contains(&id) || !self.rewalk_allowed() {
            return None;
        }
        self.walk();
        match self.cached_path(id) {
            Some(path) => Some(parse_cgroup_path(path)),
            None => {
                if self.known_missing.len() >= MAX_CACHED_CGROUPS {
                    self.known_missing.clear();
                }
                self.known_missing.insert(id);
                None
            }
        }
    }

    /// Best info for a failing task: its v2 id first, then its `/proc/PID/cgroup` text
    /// (`proc_cgroup`, read only when needed) when the id shows no container (on hybrid hosts
    /// the v2 id is the root; the task may have exited by now).
    pub fn for_task(
        &mut self,
        cgroup_id: u64,
        proc_cgroup: impl FnOnce() -> Option<String>,
    ) -> Option<ContainerInfo> {
        let by_id = self.for_cgroup_id(cgroup_id);
        if by_id
            .as_ref()
            .is_some_and(|info| info.container_id.is_some() || info.pod_uid.is_some())
        {
            return by_id;
        }
        match proc_cgroup().as_deref().and_then(parse_proc_cgroup) {
            Some(by_pid) if by_pid.container_id.is_some() || by_pid.pod_uid.is_some() => {
                Some(by_pid)
            }
            by_pid => by_id.or(by_pid),
        }
    }

    /// The path for an id, trying the low 32 bits too: before Linux 5.5, and on 32-bit kernels
    /// since, the id carries the inode generation in its high half.
    fn cached_path(&self, id: u64) -> Option<&str> {
        self.paths_by_id
            .get(&id)
            .or_else(|| self.paths_by_id.get(&(id & 0xffff_ffff)))
            .map(String::as_str)
    }

    fn rewalk_allowed(&self) -> bool {
        self.last_walk
            .is_none_or(|at| at.elapsed() >= self.min_rewalk_interval)
    }

    /// Rebuilds the id -> path map from the hierarchy (bounded by [`MAX_CACHED_CGROUPS`]).
    fn walk(&mut self) {
        self.last_walk = Some(Instant::now());
        let mount = self
            .mount
            .get_or_insert_with(|| {
                let mountinfo = fs::read_to_string("/proc/self/mountinfo").ok()?;
                cgroup2_mount_from_mountinfo(&mountinfo)
            })
            .clone();
        self.paths_by_id = match mount {
            Some(mount) => walk_hierarchy(&mount, MAX_CACHED_CGROUPS),
            None => HashMap::new(),
        };
    }
}

impl Default for ContainerResolver {
    fn default() -> Self {
        Self::new()
    }
}

/// Walks every directory under the mount, mapping its inode (the cgroup id) to its hierarchy path.
fn walk_hierarchy(mount: &Cgroup2Mount, max_entries: usize) -> HashMap<u64, String> {
    let mut paths_by_id = HashMap::new();
    let mut pending: Vec<(PathBuf, String)> = vec![(mount.mount_point.clone(), String::new())];
    while let Some((dir, relative)) = pending.pop() {
        if paths_by_id.len() >= max_entries {
            break;
        }
        let Ok(meta) = fs::symlink_metadata(&dir) else {
            continue; // removed while walking
        };
        paths_by_id.insert(meta.ino(), join_hierarchy_path(&mount.root, &relative));
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                let name = entry.file_name().to_string_lossy().into_owned();
                pending.push((entry.path(), format!("{relative}/{name}")));
            }
        }
    }
    paths_by_id
}

/// `root` + `relative` as an absolute hierarchy path without a trailing slash (`/` for the root).
fn join_hierarchy_path(root: &str, relative: &str) -> String {
    let joined = format!("{}{relative}", root.trim_end_matches('/'));
    if joined.is_empty() {
        "/".to_string()
    } else {
        joined
    }
}

/// The cgroup2 mount in `/proc/self/mountinfo` text, preferring one that shows the whole hierarchy.
fn cgroup2_mount_from_mountinfo(mountinfo: &str) -> Option<Cgroup2Mount> {
    let mounts: Vec<Cgroup2Mount> = mountinfo
        .lines()
        .filter_map(|line| {
            // id parent major:minor root mount_point options [optional...] - fstype source ...
            let (before, after) = line.split_once(" - ")?;
            if after.split_whitespace().next()? != "cgroup2" {
                return None;
            }
            let fields: Vec<&str> = before.split_whitespace().collect();
            Some(Cgroup2Mount {
                root: unescape_mountinfo(fields.get(3)?),
                mount_point: PathBuf::from(unescape_mountinfo(fields.get(4)?)),
            })
        })
        .collect();
    let whole = mounts.iter().position(|m| m.root == "/").unwrap_or(0);
    mounts.into_iter().nth(whole)
}

/// Decodes mountinfo's octal escapes (`\040` for a space, etc.).
fn unescape_mountinfo(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|digits| bytes[i] == b'\\' && digits.iter().all(|d| (b'0'..=b'7').contains(d)));
        match octal.and_then(|d| u8::from_str_radix(std::str::from_utf8(d).ok()?, 8).ok()) {
            Some(byte) => {
                out.push(byte);
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Picks the most telling line of `/proc/PID/cgroup` text: among the v2 line (`0::/path`), the
/// v1 `memory` line, the v1 `name=systemd` line and the other v1 lines, in that order, the first
/// whose path names a container or pod; else the first below the root (on hybrid hosts the v2
/// line is often `0::/` while the memory controller's names the task's cgroup); else the first.
/// `None` when there is no line.
pub fn parse_proc_cgroup(text: &str) -> Option<ContainerInfo> {
    let mut candidates: Vec<(u8, ContainerInfo)> = text
        .lines()
        .filter_map(|line| {
            // hierarchy-id:controllers:path, and the path may itself contain ':'.
            let mut fields = line.splitn(3, ':');
            let hierarchy = fields.next()?;
            let controllers = fields.next()?;
            let path = fields.next()?;
            if !path.starts_with('/') {
                return None;
            }
            let priority = if hierarchy == "0" && controllers.is_empty() {
                0
            } else if controllers.split(',').any(|c| c == "memory") {
                1
            } else if controllers == "name=systemd" {
                2
            } else {
                3
            };
            Some((priority, parse_cgroup_path(path)))
        })
        .collect();
    candidates.sort_by_key(|(priority, _)| *priority); // stable: file order within a priority
    let telling = candidates
        .iter()
        .position(|(_, info)| info.container_id.is_some() || info.pod_uid.is_some())
        .or_else(|| {
            candidates
                .iter()
                .position(|(_, info)| info.cgroup_path != "/")
        })
        .unwrap_or(0);
    candidates.into_iter().nth(telling).map(|(_, info)| info)
}

/// Reads the container id, pod uid and runtime from a cgroup path (v1 or v2, systemd or cgroupfs
/// driver). The deepest container wins (nested containers, kind nodes); a container segment above
/// the pod's segment belongs to an outer container and is dropped.
pub fn parse_cgroup_path(path: &str) -> ContainerInfo {
    let mut info = ContainerInfo {
        cgroup_path: path.to_string(),
        ..ContainerInfo::default()
    };
    // The runtime a bare 64-hex segment belongs to, from the nearest segment above it.
    let mut runtime_of_bare_id: Option<&'static str> = None;
    for segment in path.split('/').filter(|s| !s.is_empty()) {
        if let Some(uid) = pod_uid_in_segment(segment) {
            info.pod_uid = Some(uid);
            info.container_id = None;
            info.runtime = None;
            runtime_of_bare_id = Some("containerd");
        }
        if let Some((id, runtime)) = container_in_segment(segment) {
            info.container_id = Some(id.to_string());
            info.runtime = runtime.or(runtime_of_bare_id);
        }
        if segment == "docker" {
            runtime_of_bare_id = Some("docker");
        } else if segment.starts_with("kubepods") {
            // The cgroupfs driver's `/kubepods/<qos>/pod<uid>/<id>`: containerd, the common CRI
            // runtime since dockershim (which used the same layout) left Kubernetes 1.24.
            runtime_of_bare_id = Some("containerd");
        }
    }
    info
}

/// Runtime prefixes of container cgroup names, longest first where one prefixes another.
const RUNTIME_PREFIXES: [(&str, &str); 6] = [
    ("cri-containerd-", "containerd"),
    ("crio-conmon-", "cri-o"),
    ("crio-", "cri-o"),
    ("docker-", "docker"),
    ("libpod-conmon-", "podman"),
    ("libpod-", "podman"),
];

/// Runtimes in the systemd driver's v1 `<slice>:<prefix>:<id>` names.
const COLON_FORM_RUNTIMES: [(&str, &str); 3] = [
    ("cri-containerd", "containerd"),
    ("crio", "cri-o"),
    ("docker", "docker"),
];

/// The container id in one path segment: `docker-<id>.scope`, `crio-<id>`, a bare `<id>`,
/// `kubepods-...slice:cri-containerd:<id>`; with the runtime when the name tells it.
fn container_in_segment(segment: &str) -> Option<(&str, Option<&'static str>)> {
    let mut colon_fields = segment.split(':');
    if let (Some(_slice), Some(prefix), Some(id), None) = (
        colon_fields.next(),
        colon_fields.next(),
        colon_fields.next(),
        colon_fields.next(),
    ) {
        let runtime = COLON_FORM_RUNTIMES
            .iter()
            .find(|(name, _)| *name == prefix)
            .map(|(_, runtime)| *runtime);
        return is_container_id(id).then_some((id, runtime));
    }
    let name = segment.strip_suffix(".scope").unwrap_or(segment);
    if is_container_id(name) {
        return Some((name, None));
    }
    RUNTIME_PREFIXES.iter().find_map(|(prefix, runtime)| {
        let id = name.strip_prefix(prefix)?;
        is_container_id(id).then_some((id, Some(*runtime)))
    })
}

/// The pod uid in one path segment: cgroupfs `pod<uid>`, systemd
/// `kubepods-<qos>-pod<uid_with_underscores>.slice` (also inside the v1 colon form).
fn pod_uid_in_segment(segment: &str) -> Option<String> {
    if let Some(uid) = segment.strip_prefix("pod").filter(|uid| is_pod_uid(uid)) {
        return Some(uid.to_string());
    }
    let slice = segment.split(':').next()?.strip_suffix(".slice")?;
    let (_, escaped_uid) = slice.rsplit_once("-pod")?;
    let uid = escaped_uid.replace('_', "-");
    is_pod_uid(&uid).then_some(uid)
}

/// A full container id: 64 hex digits.
fn is_container_id(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit())
}

/// A pod uid: a dashed UUID, or the 32-hex hash kubelet gives static pods.
fn is_pod_uid(text: &str) -> bool {
    let bytes = text.as_bytes();
    match bytes.len() {
        32 => bytes.iter().all(u8::is_ascii_hexdigit),
        36 => bytes.iter().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => *b == b'-',
            _ => b.is_ascii_hexdigit(),
        }),
        _ => false,
    }
}

/// The kubelet's pod log directories, `/var/log/pods/NAMESPACE_NAME_UID`: pod names without an
/// API server.
pub fn pod_uid_from_log_dirs(root: &std::path::Path, name: &str) -> Option<String> {
    let (namespace, pod) = match name.split_once('/') {
        Some((ns, pod)) => (Some(ns), pod),
        None => (None, name),
    };
    std::fs::read_dir(root).ok()?.flatten().find_map(|entry| {
        let dir = entry.file_name().into_string().ok()?;
        // Namespaces and pod names cannot hold '_'; the uid is the last part.
        let mut parts = dir.splitn(3, '_');
        let (ns, n, uid) = (parts.next()?, parts.next()?, parts.next()?);
        (n == pod && namespace.is_none_or(|want| want == ns)).then(|| uid.to_string())
    })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    const ID: &str = "9ec39b91f3d70e1beff50a308f77067065ea6be0d91a3378375056cd4422cf3d";
    const UID: &str = "1c3b5a7e-2f4d-4e6a-8b9c-0d1e2f3a4b5c";
    const UID_UNDERSCORED: &str = "1c3b5a7e_2f4d_4e6a_8b9c_0d1e2f3a4b5c";

    fn expect(path: &str, id: Option<&str>, uid: Option<&str>, runtime: Option<&str>) {
        let info = parse_cgroup_path(path);
        assert_eq!(info.cgroup_path, path);
        assert_eq!(info.container_id.as_deref(), id, "container id of {path}");
        assert_eq!(info.pod_uid.as_deref(), uid, "pod uid of {path}");
        assert_eq!(info.runtime, runtime, "runtime of {path}");
    }

    #[test]
    fn docker_paths() {
        // cgroupfs driver (v1 and v2), systemd driver, old Debian layout at the root.
        expect(&format!("/docker/{ID}"), Some(ID), None, Some("docker"));
        expect(
            &format!("/system.slice/docker-{ID}.scope"),
            Some(ID),
            None,
            Some("docker"),
        );
        expect(&format!("/{ID}"), Some(ID), None, None);
        // docker-in-docker: the inner container.
        let outer = "a".repeat(64);
        expect(
            &format!("/docker/{outer}/docker/{ID}"),
            Some(ID),
            None,
            Some("docker"),
        );
        // Services and sessions are not containers.
        expect("/system.slice/docker.service", None, None, None);
        expect(
            "/user.slice/user-1000.slice/session-3.scope",
            None,
            None,
            None,
        );
        expect("/init.scope", None, None, None);
        expect("/", None, None, None);
    }

    #[test]
    fn kubernetes_systemd_driver_paths() {
        let containerd = format!(
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_UNDERSCORED}.slice/cri-containerd-{ID}.scope"
        );
        expect(&containerd, Some(ID), Some(UID), Some("containerd"));
        let guaranteed_crio =
            format!("/kubepods.slice/kubepods-pod{UID_UNDERSCORED}.slice/crio-{ID}.scope");
        expect(&guaranteed_crio, Some(ID), Some(UID), Some("cri-o"));
        let conmon = format!(
            "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_UNDERSCORED}.slice/crio-conmon-{ID}.scope"
        );
        expect(&conmon, Some(ID), Some(UID), Some("cri-o"));
        let dockershim = format!(
            "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_UNDERSCORED}.slice/docker-{ID}.scope"
        );
        expect(&dockershim, Some(ID), Some(UID), Some("docker"));
        // The pod-level cgroup alone (the pod's sandbox accounting).
        let pod_only = format!(
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_UNDERSCORED}.slice"
        );
        expect(&pod_only, None, Some(UID), None);
        expect("/kubepods.slice/kubepods-burstable.slice", None, None, None);
    }

    #[test]
    fn kubernetes_cgroupfs_driver_paths() {
        expect(
            &format!("/kubepods/burstable/pod{UID}/{ID}"),
            Some(ID),
            Some(UID),
            Some("containerd"),
        );
        expect(
            &format!("/kubepods/pod{UID}/{ID}"),
            Some(ID),
            Some(UID),
            Some("containerd"),
        );
        expect(
            &format!("/kubepods/besteffort/pod{UID}/crio-{ID}"),
            Some(ID),
            Some(UID),
            Some("cri-o"),
        );
        // Static (mirror) pods have a 32-hex hash for a uid.
        let static_uid = "8d1b3f27ee0bcb8d2ba1dd4a8d8af8f7";
        expect(
            &format!("/kubepods/burstable/pod{static_uid}/{ID}"),
            Some(ID),
            Some(static_uid),
            Some("containerd"),
        );
    }

    #[test]
    fn kubernetes_v1_colon_form() {
        // containerd's systemd driver in some v1 hierarchies: `<pod slice>:<prefix>:<id>`.
        let path = format!(
            "/system.slice/containerd.service/kubepods-burstable-pod{UID_UNDERSCORED}.slice:cri-containerd:{ID}"
        );
        expect(&path, Some(ID), Some(UID), Some("containerd"));
        let path = format!("/kubepods-besteffort-pod{UID_UNDERSCORED}.slice:crio:{ID}");
        expect(&path, Some(ID), Some(UID), Some("cri-o"));
    }

    #[test]
    fn kind_and_nested_nodes() {
        // A kind node is a docker container running kubelet: the pod's container wins.
        let node = "b".repeat(64);
        let cgroupfs = format!("/docker/{node}/kubelet/kubepods/burstable/pod{UID}/{ID}");
        expect(&cgroupfs, Some(ID), Some(UID), Some("containerd"));
        let systemd = format!(
            "/system.slice/docker-{node}.scope/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/kubelet-kubepods-besteffort-pod{UID_UNDERSCORED}.slice/cri-containerd-{ID}.scope"
        );
        expect(&systemd, Some(ID), Some(UID), Some("containerd"));
        // The pod cgroup inside the node: the node's id is not the pod's container.
        expect(
            &format!("/docker/{node}/kubelet/kubepods/burstable/pod{UID}"),
            None,
            Some(UID),
            None,
        );
        // Outside any pod, the node container itself.
        expect(
            &format!("/docker/{node}/system.slice/containerd.service"),
            Some(&node),
            None,
            Some("docker"),
        );
    }

    #[test]
    fn podman_and_other_paths() {
        expect(
            &format!("/machine.slice/libpod-{ID}.scope"),
            Some(ID),
            None,
            Some("podman"),
        );
        expect(
            &format!("/machine.slice/libpod-{ID}.scope/container"),
            Some(ID),
            None,
            Some("podman"),
        );
        expect(
            &format!("/machine.slice/libpod-conmon-{ID}.scope"),
            Some(ID),
            None,
            Some("podman"),
        );
        let rootless =
            format!("/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{ID}.scope");
        expect(&rootless, Some(ID), None, Some("podman"));
        expect(
            &format!("/libpod_parent/libpod-{ID}"),
            Some(ID),
            None,
            Some("podman"),
        );
        // ECS: task id (32 hex) then the container id; the runtime is not in the path.
        expect(
            &format!("/ecs/0123456789abcdef0123456789abcdef/{ID}"),
            Some(ID),
            None,
            None,
        );
    }

    #[test]
    fn near_misses_are_not_ids() {
        let short = &ID[..63];
        expect(&format!("/docker/{short}"), None, None, None);
        expect(
            &format!("/system.slice/docker-{short}.scope"),
            None,
            None,
            None,
        );
        let not_hex = format!("{}g", &ID[..63]);
        expect(&format!("/docker/{not_hex}"), None, None, None);
        expect(
            "/kubepods.slice/kubepods-podnot-a-uid.slice",
            None,
            None,
            None,
        );
        expect("/kubepods/burstable/podcast", None, None, None);
        // A uid must convert fully: a stray underscore elsewhere is not a uid.
        expect(
            "/kubepods-pod1c3b5a7e_2f4d_4e6a_8b9c_0d1e2f3a4b5.slice",
            None,
            None,
            None,
        );
    }

    #[test]
    fn proc_cgroup_hybrid_host_prefers_the_telling_v1_line() {
        let text = format!(
            "9:name=systemd:/\n8:pids:/docker/{ID}\n4:memory:/kubepods/burstable/pod{UID}/{ID}\n0::/\n"
        );
        let info = parse_proc_cgroup(&text).unwrap();
        assert_eq!(
            info.cgroup_path,
            format!("/kubepods/burstable/pod{UID}/{ID}")
        );
        assert_eq!(info.container_id.as_deref(), Some(ID));
        assert_eq!(info.pod_uid.as_deref(), Some(UID));
    }

    #[test]
    fn proc_cgroup_v2_line_first_and_fallbacks() {
        let v2 = format!("0::/system.slice/docker-{ID}.scope\n");
        assert_eq!(
            parse_proc_cgroup(&v2).unwrap().container_id.as_deref(),
            Some(ID)
        );
        // Colons in the path stay in the path.
        let colon = format!("1:name=systemd:/kubepods-pod{UID_UNDERSCORED}.slice:crio:{ID}\n");
        assert_eq!(parse_proc_cgroup(&colon).unwrap().runtime, Some("cri-o"));
        // No container anywhere: the v2 line.
        let plain = "4:memory:/process_api/c4d4\n0::/user.slice\n";
        let info = parse_proc_cgroup(plain).unwrap();
        assert_eq!(info.cgroup_path, "/user.slice");
        assert_eq!(info.container_id, None);
        // A hybrid host's root v2 line says nothing: the memory controller's line does.
        let hybrid = "9:name=systemd:/\n4:memory:/process_api/c4d4\n0::/\n";
        assert_eq!(
            parse_proc_cgroup(hybrid).unwrap().cgroup_path,
            "/process_api/c4d4"
        );
        assert_eq!(parse_proc_cgroup("0::/\n").unwrap().cgroup_path, "/");
        assert_eq!(parse_proc_cgroup(""), None);
    }

    #[test]
    fn mountinfo_finds_cgroup2() {
        let hybrid = "35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n\
                      41 31 0:38 / /sys/fs/cgroup/unified rw,relatime shared:9 - cgroup2 cgroup2 rw\n";
        let mount = cgroup2_mount_from_mountinfo(hybrid).unwrap();
        assert_eq!(mount.mount_point, PathBuf::from("/sys/fs/cgroup/unified"));
        assert_eq!(mount.root, "/");
        // In a cgroup namespace view first, then the whole hierarchy: the whole one wins.
        let two = "50 1 0:26 /kubepods/pod1 /host/cg rw - cgroup2 cgroup2 rw\n\
                   51 1 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n";
        assert_eq!(
            cgroup2_mount_from_mountinfo(two).unwrap().mount_point,
            PathBuf::from("/sys/fs/cgroup")
        );
        let escaped = "50 1 0:26 /a\\040b /mnt/cg\\040root rw - cgroup2 cgroup2 rw\n";
        let mount = cgroup2_mount_from_mountinfo(escaped).unwrap();
        assert_eq!(mount.mount_point, PathBuf::from("/mnt/cg root"));
        assert_eq!(join_hierarchy_path(&mount.root, "/x"), "/a b/x");
        assert_eq!(
            cgroup2_mount_from_mountinfo("35 31 0:32 / /x rw - cgroup cgroup rw\n"),
            None
        );
    }

    #[test]
    fn hierarchy_paths_join() {
        assert_eq!(join_hierarchy_path("/", ""), "/");
        assert_eq!(join_hierarchy_path("/", "/a/b"), "/a/b");
        assert_eq!(join_hierarchy_path("/ns", ""), "/ns");
    }

    #[test]
    fn unknown_ids_rewalk_at_most_once_per_interval() {
        let mut resolver = ContainerResolver::new();
        resolver.mount = Some(None); // no hierarchy: every id is unknown
        assert_eq!(resolver.for_cgroup_id(12345), None);
        let first_walk = resolver.last_walk.unwrap();
        assert!(resolver.known_missing.contains(&12345));
        assert_eq!(resolver.for_cgroup_id(678), None);
        assert_eq!(
            resolver.last_walk,
            Some(first_walk),
            "rate-limited: no second walk"
        );
        assert!(
            !resolver.known_missing.contains(&678),
            "unverified miss is not remembered"
        );
    }

    /// A cgroup directory (and its parent) created for a test, removed on drop with any child
    /// process moved into it.
    struct TestCgroup {
        parent: PathBuf,
        scope: PathBuf,
        child: Option<std::process::Child>,
    }

    impl Drop for TestCgroup {
        fn drop(&mut self) {
            if let Some(mut child) = self.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
            for dir in [&self.scope, &self.parent] {
                // rmdir can briefly see the just-reaped task; retry a little.
                for _ in 0..50 {
                    if fs::remove_dir(dir).is_ok() || !dir.exists() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        }
    }

    /// The cgroup id the kernel gives a directory, from its file handle (what
    /// `bpf_get_current_cgroup_id()` reports); `None` where handles are unsupported.
    fn kernel_cgroup_id(dir: &Path) -> Option<u64> {
        use std::os::unix::ffi::OsStrExt;
        #[repr(C)]
        struct Handle {
            handle_bytes: u32,
            handle_type: i32,
            f_handle: [u8; 8],
        }
        let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
        let mut handle = Handle {
            handle_bytes: 8,
            handle_type: 0,
            f_handle: [0; 8],
        };
        let mut mount_id = 0;
        // SAFETY: `handle` is a file_handle header followed by `handle_bytes` bytes of room.
        let rc = unsafe {
            libc::name_to_handle_at(
                libc::AT_FDCWD,
                path.as_ptr(),
                (&raw mut handle).cast::<libc::file_handle>(),
                &mut mount_id,
                0,
            )
        };
        (rc == 0 && handle.handle_bytes == 8).then(|| u64::from_ne_bytes(handle.f_handle))
    }

    #[test]
    fn real_cgroup_on_this_machine() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            crate::test_support::skip(
                "real_cgroup_on_this_machine",
                "needs root to create a cgroup",
            );
            return;
        }
        let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap();
        let Some(mount) = cgroup2_mount_from_mountinfo(&mountinfo) else {
            crate::test_support::skip("real_cgroup_on_this_machine", "no cgroup2 mount here");
            return;
        };
        let mut resolver = ContainerResolver::new();
        // Walk before the cgroup exists, so finding it below needs a refresh.
        let root_id = fs::metadata(&mount.mount_point).unwrap().ino();
        let root = resolver
            .for_cgroup_id(root_id)
            .expect("the mount's root is a cgroup");
        assert_eq!(root.cgroup_path, mount.root);

        let parent_name = format!("fragtrace-test-{}", std::process::id());
        let scope_name = format!("docker-{ID}.scope");
        let mut cgroup = TestCgroup {
            parent: mount.mount_point.join(&parent_name),
            scope: mount.mount_point.join(&parent_name).join(&scope_name),
            child: None,
        };
        fs::create_dir(&cgroup.parent).unwrap();
        fs::create_dir(&cgroup.scope).unwrap();
        let inode = fs::metadata(&cgroup.scope).unwrap().ino();
        let id = match kernel_cgroup_id(&cgroup.scope) {
            Some(id) => {
                assert_eq!(
                    id & 0xffff_ffff,
                    inode & 0xffff_ffff,
                    "cgroup id is the inode"
                );
                id
            }
            None => {
                println!("no file handles for cgroups here: using the inode as the id");
                inode
            }
        };

        assert_eq!(
            resolver.for_cgroup_id(id),
            None,
            "walked under a second ago"
        );
        std::thread::sleep(MIN_REWALK_INTERVAL + Duration::from_millis(50));
        let info = resolver.for_cgroup_id(id).expect("found after the rewalk");
        let expected_path =
            join_hierarchy_path(&mount.root, &format!("/{parent_name}/{scope_name}"));
        assert_eq!(info.cgroup_path, expected_path);
        assert_eq!(info.container_id.as_deref(), Some(ID));
        assert_eq!(info.runtime, Some("docker"));

        // A process moved into the cgroup: /proc/PID/cgroup names it too.
        let child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let pid = child.id();
        cgroup.child = Some(child);
        fs::write(cgroup.scope.join("cgroup.procs"), pid.to_string()).unwrap();
        let proc_cgroup = fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
        let by_pid = parse_proc_cgroup(&proc_cgroup).expect("a cgroup line");
        assert_eq!(by_pid.container_id.as_deref(), Some(ID));
        let by_task = resolver.for_task(root_id, || Some(proc_cgroup)).unwrap();
        assert_eq!(
            by_task.container_id.as_deref(),
            Some(ID),
            "falls back to the pid"
        );
    }

    #[test]
    fn pod_names_from_the_kubelets_log_directories() {
        let root = std::env::temp_dir().join(format!("fragtrace-pods-{}", std::process::id()));
        let uid = "1c6bf0a9-2e4d-4e6f-9f3a-0123456789ab";
        std::fs::create_dir_all(root.join(format!("default_web-7d4b9_{uid}"))).unwrap();
        std::fs::create_dir_all(root.join("kube-system_web-7d4b9_other-uid")).unwrap();
        assert_eq!(
            pod_uid_from_log_dirs(&root, "default/web-7d4b9").as_deref(),
            Some(uid)
        );
        assert!(pod_uid_from_log_dirs(&root, "web-7d4b9").is_some());
        assert_eq!(pod_uid_from_log_dirs(&root, "nope"), None);
        std::fs::remove_dir_all(&root).unwrap();
    }
}
