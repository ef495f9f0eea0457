//! Network-namespace creation: which stack frames show one. The live tracer and the kernel-log
//! analysis both use this one list.
/// Frames that tie an allocation to netns creation (the seeds' incident: nf_conntrack's
/// per-netns setup under copy_net_ns).
pub const NETNS_FRAMES: &[&str] = &["copy_net_ns", "setup_net", "ops_init", "nf_conntrack"];

/// The first stack frame that shows a netns creation, if any. Frames are as fragtrace prints
/// them (`setup_net+0xa3`) or as a kernel log does (`[<ffffffff8150d6d3>] ? setup_net+0xa3/0x1f0`).
pub fn stack_evidence<'a, S: AsRef<str> + 'a>(
    stack: impl IntoIterator<Item = &'a S>,
) -> Option<&'a str> {
    stack.into_iter().map(AsRef::as_ref).find(|frame| {
        let function = function_of(frame);
        NETNS_FRAMES.iter().any(|n| function.starts_with(n))
    })
}

/// The function part of a frame: without a `[<address>]` prefix, `? `, ARM's `(`, or
/// leading blanks.
fn function_of(frame: &str) -> &str {
    let mut f = frame.trim_start();
    if f.starts_with("[<")
        && let Some(end) = f.find(">]")
    {
        f = f[end + 2..].trim_start();
    }
    f.trim_start_matches("? ")
        .trim_start_matches('(')
        .trim_start()
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

    #[test]
    fn errno_names() {
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
        // As a kernel log prints frames.
        let logged = [
            " [<ffffffff81187e3d>] __alloc_pages_nodemask+0x405/0x420",
            " [<ffffffff8150d6d3>] ? setup_net+0xa3/0x1f0",
        ];
        assert_eq!(stack_evidence(&logged), Some(logged[1]));
        let arm =
            ["[<c0a3f0b8>] (setup_net+0x4c/0x1a0) from [<c0a3f3e4>] (copy_net_ns+0x9c/0x1d8)"];
        assert_eq!(stack_evidence(&arm), Some(arm[0]));
        assert_eq!(stack_evidence(&["not_setup_net+0x1"]), None);
    }
}
