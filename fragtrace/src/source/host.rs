//! What the host tells about a task beyond its record: its cgroups, container, memory cgroup
//! and name, and the zone state in /proc. Live, these are read from /proc and cgroupfs, and each
//! answer can be kept as a [`Fact`] for a recording; in `report`, the recorded facts answer.
use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};

use super::container::{ContainerInfo, ContainerResolver, parse_cgroup_path};
use crate::{
    decode::event::MonotonicClock,
    health::TimeSpent,
    zones::{
        ZoneState,
        memcg::{MemcgNames, MemcgUsage},
    },
};

/// The questions analysis asks about the host.
pub trait Host {
    /// The memory cgroup directory with this kernfs inode: (cgroup version, path).
    fn memcg_name(&mut self, ino: u64) -> Option<(u8, String)>;
    /// The text of `/proc/PID/cgroup`.
    fn proc_cgroup(&mut self, pid: u32) -> Option<String>;
    /// The memory cgroup of `pid` as cgroupfs shows it now.
    fn memcg_usage(&mut self, pid: u32) -> Option<MemcgUsage>;
    /// The container of a task with this cgroup v2 id.
    fn container(&mut self, cgroup_id: u64, pid: u32) -> Option<ContainerInfo>;
    /// The name of a process (`/proc/PID/comm`).
    fn comm(&mut self, pid: u32) -> Option<String>;
    /// The uid of the pod with this name (NAME or NAMESPACE/NAME), from the kubelet's
    /// /var/log/pods directories.
    fn pod_uid(&mut self, name: &str) -> Option<String>;
    /// The answers given since the last call that a recording does not have yet.
    fn take_facts(&mut self) -> Vec<Fact> {
        Vec::new()
    }
}

/// One answer of the host, as a recording keeps it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "fact", rename_all = "snake_case")]
pub enum Fact {
    MemcgName {
        ino: u64,
        name: Option<(u8, String)>,
    },
    ProcCgroup {
        pid: u32,
        text: Option<String>,
    },
    MemcgUsage {
        pid: u32,
        usage: Option<MemcgUsage>,
    },
    Container {
        cgroup_id: u64,
        pid: u32,
        /// The cgroup path the container is read from.
        cgroup_path: Option<String>,
    },
    Comm {
        pid: u32,
        comm: Option<String>,
    },
    PodUid {
        name: String,
        uid: Option<String>,
    },
}

/// The zone state read from /proc, and when (CLOCK_MONOTONIC ns).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ZoneSample {
    pub at_ns: u64,
    pub state: ZoneState,
}

impl ZoneSample {
    /// Reads /proc now.
    pub fn read() -> Option<Self> {
        let state = ZoneState::read().ok()?;
        Some(Self {
            at_ns: MonotonicClock::monotonic_now_ns(),
            state,
        })
    }
}

/// On the failure path, reads of /proc for the zone state take at most 1/ZONE_READ_SHARE of
/// the time. Reading /proc/pagetypeinfo counts every free list under its zone's lock, which
/// takes longer the more fragmented memory is: 3-8 ms a read on an idle 24 GiB machine, 15-26 ms
/// under allocation load.
const ZONE_READ_SHARE: u32 = 10;
/// The longest a paced read waits: a read that stalled (its thread preempted) costs at most this.
const MAX_ZONE_READ_PAUSE: Duration = Duration::from_secs(1);

/// /proc reads of the zone state, paced by `ZONE_READ_SHARE`.
#[derive(Default)]
pub struct ZoneReads {
    /// When the next paced read may start.
    next: Option<Instant>,
}

impl ZoneReads {
    /// Reads /proc now, counting the time in `spent`.
    pub fn read(&mut self, spent: &mut TimeSpent) -> Option<ZoneSample> {
        let started = Instant::now();
        let sample = ZoneSample::read();
        let took = started.elapsed();
        spent.add(took.as_nanos() as u64);
        self.paced(started, took);
        sample
    }

    /// Reads /proc unless the pace forbids it yet.
    pub fn read_if_due(&mut self, spent: &mut TimeSpent) -> Option<ZoneSample> {
        if !self.due(Instant::now()) {
            return None;
        }
        self.read(spent)
    }

    fn paced(&mut self, started: Instant, took: Duration) {
        self.next = Some(started + (took * ZONE_READ_SHARE).min(MAX_ZONE_READ_PAUSE));
    }

    fn due(&self, now: Instant) -> bool {
        self.next.is_none_or(|next| now >= next)
    }
}

/// Facts noted more than this many times between two recordings are forgotten and noted again.
const MAX_NOTED: usize = 65_536;

/// This machine: /proc and cgroupfs, read as questions come.
#[derive(Default)]
pub struct LiveHost {
    containers: ContainerResolver,
    memcg_names: MemcgNames,
    /// Answers not yet taken by the recording, when one is made.
    journal: Option<Journal>,
    /// Time spent reading /proc and cgroupfs (reads that can block under memory pressure).
    pub reads: TimeSpent,
    proc_cgroups: ProcCgroups,
}

/// `/proc/PID/cgroup` texts read in the last [`PROC_CGROUP_FRESH`]: a burst of failures from
/// one task reads it once. A task that moves to another cgroup v2 shows a new cgroup id in
/// its events, and is looked up by that id first.
#[derive(Default)]
struct ProcCgroups {
    by_pid: HashMap<u32, (Instant, Option<String>)>,
}

const PROC_CGROUP_FRESH: std::time::Duration = std::time::Duration::from_millis(250);
const PROC_CGROUPS_KEPT: usize = 4096;

impl ProcCgroups {
    fn read(&mut self, pid: u32) -> Option<String> {
        if let Some((at, text)) = self.by_pid.get(&pid)
            && at.elapsed() < PROC_CGROUP_FRESH
        {
            return text.clone();
        }
        if self.by_pid.len() >= PROC_CGROUPS_KEPT {
            self.by_pid.clear();
        }
        let text = read_proc_cgroup(pid);
        self.by_pid.insert(pid, (Instant::now(), text.clone()));
        text
    }
}

#[derive(Default)]
struct Journal {
    new: Vec<Fact>,
    /// The answers already recorded, so that a repeated one is not written again.
    recorded: std::collections::HashSet<Fact>,
}

impl LiveHost {
    /// Keeps every answer for [`Self::take_facts`].
    pub fn recording() -> Self {
        Self {
            journal: Some(Journal::default()),
            ..Self::default()
        }
    }

    /// Keeps every answer from now on for a new recording (`true`), including those an
    /// earlier recording already has, so that each flight-recorder segment stands alone; or
    /// stops keeping them (`false`) when no recording takes them.
    pub fn set_journal(&mut self, on: bool) {
        self.journal = on.then(Journal::default);
    }

    fn note(&mut self, fact: Fact) {
        let Some(journal) = &mut self.journal else {
            return;
        };
        if journal.recorded.len() >= MAX_NOTED {
            journal.recorded.clear();
        }
        if journal.recorded.insert(fact.clone()) {
            journal.new.push(fact);
        }
    }
}

impl Host for LiveHost {
    fn memcg_name(&mut self, ino: u64) -> Option<(u8, String)> {
        let names = &mut self.memcg_names;
        let name = self.reads.time(|| names.name(ino));
        self.note(Fact::MemcgName {
            ino,
            name: name.clone(),
        });
        name
    }

    fn proc_cgroup(&mut self, pid: u32) -> Option<String> {
        let cache = &mut self.proc_cgroups;
        let text = self.reads.time(|| cache.read(pid));
        self.note(Fact::ProcCgroup {
            pid,
            text: text.clone(),
        });
        text
    }

    fn memcg_usage(&mut self, pid: u32) -> Option<MemcgUsage> {
        let cache = &mut self.proc_cgroups;
        let usage = self.reads.time(|| {
            cache
                .read(pid)
                .and_then(|t| MemcgUsage::for_proc_cgroup(&t).ok())
        });
        self.note(Fact::MemcgUsage {
            pid,
            usage: usage.clone(),
        });
        usage
    }

    fn container(&mut self, cgroup_id: u64, pid: u32) -> Option<ContainerInfo> {
        let (containers, cache) = (&mut self.containers, &mut self.proc_cgroups);
        let info = self
            .reads
            .time(|| containers.for_task(cgroup_id, || cache.read(pid)));
        self.note(Fact::Container {
            cgroup_id,
            pid,
            cgroup_path: info.as_ref().map(|i| i.cgroup_path.clone()),
        });
        info
    }

    fn comm(&mut self, pid: u32) -> Option<String> {
        let comm = self.reads.time(|| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .ok()
                .map(|s| s.trim_end().to_string())
        });
        self.note(Fact::Comm {
            pid,
            comm: comm.clone(),
        });
        comm
    }

    fn pod_uid(&mut self, name: &str) -> Option<String> {
        let uid = self.reads.time(|| {
            super::container::pod_uid_from_log_dirs(std::path::Path::new(KUBELET_POD_LOGS), name)
        });
        self.note(Fact::PodUid {
            name: name.to_string(),
            uid: uid.clone(),
        });
        uid
    }

    fn take_facts(&mut self) -> Vec<Fact> {
        self.journal
            .as_mut()
            .map(|j| std::mem::take(&mut j.new))
            .unwrap_or_default()
    }
}

/// Where the kubelet keeps a directory per pod, named NAMESPACE_NAME_UID.
const KUBELET_POD_LOGS: &str = "/var/log/pods";

/// The one reader of `/proc/PID/cgroup`.
fn read_proc_cgroup(pid: u32) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()
}

/// The host as a recording saw it: the answers it recorded, the latest one for each question.
#[derive(Default)]
pub struct RecordedHost {
    memcg_names: HashMap<u64, Option<(u8, String)>>,
    proc_cgroups: HashMap<u32, Option<String>>,
    memcg_usages: HashMap<u32, Option<MemcgUsage>>,
    /// Parsed as learned: replay asks for the same task's container at every failure.
    containers: HashMap<(u64, u32), Option<ContainerInfo>>,
    comms: HashMap<u32, Option<String>>,
    pod_uids: HashMap<String, Option<String>>,
}

impl RecordedHost {
    pub fn learn(&mut self, fact: Fact) {
        match fact {
            Fact::MemcgName { ino, name } => {
                self.memcg_names.insert(ino, name);
            }
            Fact::ProcCgroup { pid, text } => {
                self.proc_cgroups.insert(pid, text);
            }
            Fact::MemcgUsage { pid, usage } => {
                self.memcg_usages.insert(pid, usage);
            }
            Fact::Container {
                cgroup_id,
                pid,
                cgroup_path,
            } => {
                let info = cgroup_path.as_deref().map(parse_cgroup_path);
                self.containers.insert((cgroup_id, pid), info);
            }
            Fact::Comm { pid, comm } => {
                self.comms.insert(pid, comm);
            }
            Fact::PodUid { name, uid } => {
                self.pod_uids.insert(name, uid);
            }
        }
    }
}

impl Host for RecordedHost {
    fn memcg_name(&mut self, ino: u64) -> Option<(u8, String)> {
        self.memcg_names.get(&ino).cloned().flatten()
    }

    fn proc_cgroup(&mut self, pid: u32) -> Option<String> {
        self.proc_cgroups.get(&pid).cloned().flatten()
    }

    fn memcg_usage(&mut self, pid: u32) -> Option<MemcgUsage> {
        self.memcg_usages.get(&pid).cloned().flatten()
    }

    fn container(&mut self, cgroup_id: u64, pid: u32) -> Option<ContainerInfo> {
        self.containers.get(&(cgroup_id, pid)).cloned().flatten()
    }

    fn comm(&mut self, pid: u32) -> Option<String> {
        self.comms.get(&pid).cloned().flatten()
    }

    fn pod_uid(&mut self, name: &str) -> Option<String> {
        self.pod_uids.get(name).cloned().flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A read ZONE_READ_SHARE times as long as it took, at most MAX_ZONE_READ_PAUSE, must pass
    /// before the next paced one.
    #[test]
    fn zone_reads_are_paced() {
        let mut reads = ZoneReads::default();
        let t0 = Instant::now();
        assert!(reads.due(t0));
        reads.paced(t0, Duration::from_millis(20));
        assert!(!reads.due(t0 + Duration::from_millis(199)));
        assert!(reads.due(t0 + Duration::from_millis(200)));
        reads.paced(t0, Duration::from_millis(500));
        assert!(reads.due(t0 + MAX_ZONE_READ_PAUSE));
        let mut spent = TimeSpent::default();
        reads.read(&mut spent);
        assert_eq!(spent.count, 1);
        assert!(reads.next.is_some_and(|next| next > t0));
    }

    /// What the live host answered and recorded, the recorded host answers the same.
    #[test]
    fn recorded_answers_replay() {
        let mut live = LiveHost::recording();
        let me = std::process::id();
        let answers = (
            live.proc_cgroup(me),
            live.comm(me),
            live.container(0, me),
            live.memcg_name(0),
        );
        // Asked again: the same answers are not recorded twice.
        live.comm(me);
        let facts = live.take_facts();
        assert_eq!(facts.len(), 4, "{facts:?}");
        assert!(live.take_facts().is_empty());
        let mut replay = RecordedHost::default();
        for f in facts {
            // Through JSON, as a recording stores them.
            let f: Fact = serde_json::from_str(&serde_json::to_string(&f).unwrap()).unwrap();
            replay.learn(f);
        }
        assert_eq!(
            (
                replay.proc_cgroup(me),
                replay.comm(me),
                replay.container(0, me),
                replay.memcg_name(0),
            ),
            answers
        );
        assert!(answers.1.is_some(), "this process has a name");
        // A question the recording never saw has no answer.
        assert_eq!(replay.comm(me + 1), None);
    }
}
