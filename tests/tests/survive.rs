//! The tracer on a node in trouble: what it costs by default, and how it protects itself.
use fragtrace_tests::{Tracer, is_root_or_skip, summary};

/// By default no program sits on a syscall tracepoint (each one taxes every system call on the
/// node); `--netns-syscalls` attaches them.
#[test]
fn netns_syscall_tracepoints_are_opt_in() {
    if !is_root_or_skip("netns_syscall_tracepoints_are_opt_in") {
        return;
    }
    for (args, want_requested) in [(&[][..], false), (&["--netns-syscalls"][..], true)] {
        let (events, stderr) = Tracer::start(args).stop();
        let hooks = summary(&events)["hooks"].as_array().unwrap().clone();
        let syscalls: Vec<_> = hooks
            .iter()
            .filter(|h| h["hook"].as_str().unwrap().starts_with("syscalls:"))
            .collect();
        assert_eq!(syscalls.len(), 8, "{hooks:?}");
        for h in syscalls {
            assert_eq!(h["opt_in"], "--netns-syscalls", "{h}");
            assert_eq!(h["requested"], want_requested, "{h}");
            if want_requested {
                // Attached, or named with the kernel's reason.
                let why = h["unavailable"].as_array().unwrap();
                assert!(h["attached"] == true || !why.is_empty(), "{h}\n{stderr}");
            } else {
                assert_eq!(h["attached"], false, "{h}\n{stderr}");
                assert!(h["unavailable"].as_array().unwrap().is_empty(), "{h}");
            }
        }
    }
}
