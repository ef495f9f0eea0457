//! Network-namespace creation: windows from the kernel's records, and stack evidence.
use fragtrace_common::{EventKind, NetnsOp};

use crate::decode::event::Task;

/// One closed window: a CLONE_NEWNET syscall, or copy_net_ns itself.
#[derive(Clone, Debug, PartialEq)]
pub struct NetnsCreation {
    pub task: Task,
    /// `unshare`, `clone`, `clone3`, `setns` or `copy_net_ns`.
    pub op: &'static str,
    pub latency_ns: u64,
    /// The errno when it failed.
    pub errno: Option<i32>,
}

impl NetnsCreation {
    pub fn from_record(task: &Task, kind: EventKind, args: &[u64; 6]) -> Option<Self> {
        let (op, start, ret) = match kind {
            EventKind::NetnsSyscall => {
                (NetnsOp::from_u64(args[0])?.name(), args[2], args[3] as i64)
            }
            EventKind::CopyNetNs => ("copy_net_ns", args[0], args[1] as i64),
            _ => return None,
        };
        // Syscalls return -errno; copy_net_ns returns a pointer or ERR_PTR(-errno).
        let errno = (-4095..0).contains(&ret).then_some(-ret as i32);
        Some(Self {
            task: task.clone(),
            op,
            latency_ns: task.ts_ns.saturating_sub(start),
            errno,
        })
    }
}

/// Frames that tie an allocation to netns creation (the seeds' incident: nf_conntrack's
/// per-netns setup under copy_net_ns).
const NETNS_FRAMES: &[&str] = &["copy_net_ns", "setup_net", "ops_init", "nf_conntrack"];

/// The first stack frame that shows a netns creation, if any.
pub fn stack_evidence(stack: &[String]) -> Option<&str> {
    stack
        .iter()
        .find(|f| NETNS_FRAMES.iter().any(|n| f.starts_with(n)))
        .map(String::as_str)
}

/// `EPERM` style names for the errnos netns creation returns; the number otherwise.
pub fn errno_name(errno: i32) -> String {
    let name = match errno {
        libc::EPERM => "EPERM",
        libc::ENOMEM => "ENOMEM",
        libc::ENOSPC => "ENOSPC",
        libc::EINVAL => "EINVAL",
        libc::EUSERS => "EUSERS",
        libc::EAGAIN => "EAGAIN",
        libc::EBADF => "EBADF",
        libc::EFAULT => "EFAULT",
        libc::ENOSYS => "ENOSYS",
        libc::EINTR => "EINTR",
        _ => return errno.to_string(),
    };
    name.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(ts_ns: u64) -> Task {
        Task {
            ts_ns,
            time: jiff::Timestamp::UNIX_EPOCH,
            pid: 1,
            tid: 1,
            comm: "runc:[1:CHILD]".into(),
        }
    }

    #[test]
    fn syscall_and_copy_net_ns_windows() {
        let ok = NetnsCreation::from_record(
            &task(5_000),
            EventKind::NetnsSyscall,
            &[NetnsOp::Unshare as u64, 0x4000_0000, 1_000, 0, 0, 0],
        )
        .unwrap();
        assert_eq!((ok.op, ok.latency_ns, ok.errno), ("unshare", 4_000, None));
        let denied = NetnsCreation::from_record(
            &task(2_000),
            EventKind::NetnsSyscall,
            &[
                NetnsOp::Clone as u64,
                0x4000_0000,
                1_500,
                (-1i64) as u64,
                0,
                0,
            ],
        )
        .unwrap();
        assert_eq!((denied.op, denied.errno), ("clone", Some(libc::EPERM)));
        // copy_net_ns returns a kernel pointer on success, ERR_PTR(-ENOMEM) on failure.
        let ptr = NetnsCreation::from_record(
            &task(9),
            EventKind::CopyNetNs,
            &[3, 0xffff_8880_1234_5000, 0, 0, 0, 0],
        )
        .unwrap();
        assert_eq!(ptr.errno, None);
        let enomem = NetnsCreation::from_record(
            &task(9),
            EventKind::CopyNetNs,
            &[3, (-12i64) as u64, 0, 0, 0, 0],
        )
        .unwrap();
        assert_eq!(
            (enomem.op, enomem.errno, enomem.latency_ns),
            ("copy_net_ns", Some(12), 6)
        );
        assert_eq!(errno_name(12), "ENOMEM");
        assert_eq!(errno_name(1), "EPERM");
        assert_eq!(errno_name(1234), "1234");
    }

    #[test]
    fn evidence_from_the_seed_stack() {
        let stack: Vec<String> = [
            "__alloc_pages_nodemask+0x405",
            "kmem_cache_create+0x2b",
            "nf_conntrack_init_net+0x101 [nf_conntrack]",
            "ops_init+0x41",
            "setup_net+0xa3",
            "copy_net_ns+0x7c",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(
            stack_evidence(&stack),
            Some("nf_conntrack_init_net+0x101 [nf_conntrack]")
        );
        assert_eq!(stack_evidence(&stack[..2]), None);
    }
}
