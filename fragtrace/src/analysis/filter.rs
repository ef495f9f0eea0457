//! The user's event filters: --min-order, --pid, --comm, --cgroup, --container, --pod. The
//! same live, in `record` (whose recording keeps them) and in `report`.
use serde::{Deserialize, Serialize};

use crate::source::container::ContainerInfo;

#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct Filter {
    pub min_order: Option<u32>,
    pub pid: Option<u32>,
    pub comm: Option<String>,
    /// The task's cgroup path starts with this.
    #[serde(default)]
    pub cgroup: Option<String>,
    /// The container id starts with this.
    #[serde(default)]
    pub container: Option<String>,
    /// The pod: its uid (or a prefix), or its name or NAMESPACE/NAME as the kubelet's
    /// /var/log/pods directories give them.
    #[serde(default)]
    pub pod: Option<String>,
}

/// What a filter on cgroups asks of the host.
pub trait PodNames {
    /// The uid of the pod this name (NAME or NAMESPACE/NAME) belongs to, if the node has it.
    fn pod_uid(&mut self, name: &str) -> Option<String>;
}

impl Filter {
    /// Whether the filter looks at the task's cgroup (so the caller must find it).
    pub fn needs_cgroup(&self) -> bool {
        self.cgroup.is_some() || self.container.is_some() || self.pod.is_some()
    }

    /// Whether an event of this task (and order, when it has one) is shown, without the
    /// cgroup conditions.
    pub fn matches(&self, pid: u32, comm: &str, order: Option<u32>) -> bool {
        self.pid.is_none_or(|p| pid == p)
            && self.comm.as_deref().is_none_or(|c| comm.contains(c))
            && match (self.min_order, order) {
                (Some(min), Some(order)) => order >= min,
                _ => true,
            }
    }

    /// Whether a stack the kernel aggregated (known by task name and order, not by pid or
    /// cgroup) is shown: not when the filter asks for a pid or a cgroup.
    pub fn matches_aggregate(&self, comm: &str, order: u32) -> bool {
        self.pid.is_none() && !self.needs_cgroup() && self.matches(0, comm, Some(order))
    }

    /// The cgroup conditions, on the task's cgroup (None: unknown, which matches none).
    pub fn matches_cgroup(&self, cgroup: Option<&ContainerInfo>, pods: &mut dyn PodNames) -> bool {
        if !self.needs_cgroup() {
            return true;
        }
        let Some(info) = cgroup else {
            return false;
        };
        let container = info.container_id.as_deref();
        let uid = info.pod_uid.as_deref();
        self.cgroup
            .as_deref()
            .is_none_or(|p| info.cgroup_path.starts_with(p))
            && self
                .container
                .as_deref()
                .is_none_or(|c| !c.is_empty() && container.is_some_and(|id| id.starts_with(c)))
            && self.pod.as_deref().is_none_or(|p| {
                !p.is_empty()
                    && uid.is_some_and(|u| {
                        u.starts_with(p) || pods.pod_uid(p).is_some_and(|named| named == u)
                    })
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::container::parse_cgroup_path;

    struct NoPods;
    impl PodNames for NoPods {
        fn pod_uid(&mut self, _: &str) -> Option<String> {
            None
        }
    }

    #[test]
    fn all_conditions_must_hold() {
        let f = Filter {
            min_order: Some(3),
            pid: Some(10),
            comm: Some("runc".into()),
            ..Default::default()
        };
        assert!(f.matches(10, "runc:[1:CHILD]", Some(6)));
        assert!(f.matches(10, "runc", None));
        assert!(!f.matches(10, "runc", Some(2)));
        assert!(!f.matches(11, "runc", Some(6)));
        assert!(!f.matches(10, "dockerd", Some(6)));
        assert!(Filter::default().matches(1, "x", Some(0)));
    }

    #[test]
    fn cgroup_container_and_pod() {
        let uid = "1c6bf0a9-2e4d-4e6f-9f3a-0123456789ab";
        let id = "5b9be8c5bb12".to_string() + &"0".repeat(52);
        let path = format!(
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice/cri-containerd-{id}.scope",
            uid.replace('-', "_")
        );
        let info = parse_cgroup_path(&path);
        let by = |f: Filter| f.matches_cgroup(Some(&info), &mut NoPods);
        assert!(by(Filter::default()));
        assert!(by(Filter {
            cgroup: Some("/kubepods.slice/".into()),
            ..Default::default()
        }));
        assert!(!by(Filter {
            cgroup: Some("/system.slice".into()),
            ..Default::default()
        }));
        assert!(by(Filter {
            container: Some("5b9be8c5bb12".into()),
            ..Default::default()
        }));
        assert!(!by(Filter {
            container: Some("".into()),
            ..Default::default()
        }));
        assert!(by(Filter {
            pod: Some("1c6bf0a9".into()),
            ..Default::default()
        }));
        assert!(!by(Filter {
            pod: Some("matchdataserver".into()),
            ..Default::default()
        }));
        // A task whose cgroup is unknown matches no cgroup condition.
        assert!(
            !Filter {
                pod: Some("1c6bf0a9".into()),
                ..Default::default()
            }
            .matches_cgroup(None, &mut NoPods)
        );
    }
}
