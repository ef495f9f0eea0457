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

/// Once attached, fragtrace holds no capability it does not need: none, or CAP_IPC_LOCK for
/// its locked memory; and the run still ends with its summary and its failures caught.
#[test]
fn capabilities_are_dropped_once_attached() {
    if !is_root_or_skip("capabilities_are_dropped_once_attached") {
        return;
    }
    const CAP_IPC_LOCK: u64 = 1 << 14;
    let tracer = Tracer::start(&[]);
    let status = std::fs::read_to_string(format!("/proc/{}/status", tracer.pid())).unwrap();
    let caps = |name: &str| {
        let hex = status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .unwrap_or_else(|| panic!("no {name} in {status}"));
        u64::from_str_radix(hex.trim(), 16).unwrap()
    };
    let (eff, prm, inh, amb) = (
        caps("CapEff:"),
        caps("CapPrm:"),
        caps("CapInh:"),
        caps("CapAmb:"),
    );
    let (events, stderr) = tracer.stop();
    let kept = &summary(&events)["tracer"]["capabilities_kept"];
    assert_eq!(eff & !CAP_IPC_LOCK, 0, "CapEff {eff:x}\n{stderr}");
    assert_eq!(prm, eff, "CapPrm {prm:x}");
    assert_eq!((inh, amb), (0, 0));
    let ipc_lock_kept = kept.as_array().unwrap().iter().any(|c| c == "CAP_IPC_LOCK");
    assert_eq!(eff == CAP_IPC_LOCK, ipc_lock_kept, "{kept}");
}
