//! Network-namespace creation windows. Everywhere: the unshare/clone/clone3/setns syscalls with
//! CLONE_NEWNET. Where the kernel allows fentry/fexit or kprobes: copy_net_ns, the precise
//! window. Failed allocations inside a window are tagged by page_alloc.rs.

use aya_ebpf::{
    EbpfContext,
    helpers::{bpf_ktime_get_ns, bpf_probe_read_user},
    macros::{fentry, fexit, kprobe, kretprobe, tracepoint},
    programs::{FEntryContext, FExitContext, ProbeContext, RetProbeContext, TracePointContext},
};
use fragtrace_common::{CLONE_NEWNET, EventKind, NetnsOp};

use crate::maps::{COPY_NET_NS_START, NETNS_WINDOWS, current_tid, emit_mm, is_self};

// syscalls/sys_enter_*: `long` arguments from offset 16; sys_exit_*: `long ret` at offset 16.
const SYSCALL_ARG0: usize = 16;
const SYSCALL_ARG1: usize = 24;
const SYSCALL_RET: usize = 16;

fn now() -> u64 {
    // SAFETY: helper without preconditions.
    unsafe { bpf_ktime_get_ns() }
}

fn open_window(op: NetnsOp, flags: u64) {
    if flags & CLONE_NEWNET == 0 || is_self() {
        return;
    }
    let _ = NETNS_WINDOWS.insert(current_tid(), [now(), op as u64, flags], 0);
}

fn close_window(ctx: &TracePointContext) -> Result<(), i64> {
    let tid = current_tid();
    // SAFETY: map lookup by value; the value is copied before removal.
    let Some(window) = (unsafe { NETNS_WINDOWS.get(tid) }).copied() else {
        return Ok(());
    };
    let _ = NETNS_WINDOWS.remove(tid);
    // SAFETY: fixed layout of syscalls/sys_exit_* records.
    let ret: i64 = unsafe { ctx.read_at(SYSCALL_RET)? };
    emit_mm(
        ctx,
        EventKind::NetnsSyscall,
        [window[1], window[2], window[0], ret as u64, 0, 0],
    );
    Ok(())
}

fn flags_arg(ctx: &TracePointContext, offset: usize) -> u64 {
    // SAFETY: fixed layout of syscalls/sys_enter_* records.
    unsafe { ctx.read_at::<u64>(offset) }.unwrap_or(0)
}

#[tracepoint(category = "syscalls", name = "sys_enter_unshare")]
pub fn netns_enter_unshare(ctx: TracePointContext) -> u32 {
    open_window(NetnsOp::Unshare, flags_arg(&ctx, SYSCALL_ARG0));
    0
}

#[tracepoint(category = "syscalls", name = "sys_enter_clone")]
pub fn netns_enter_clone(ctx: TracePointContext) -> u32 {
    open_window(NetnsOp::Clone, flags_arg(&ctx, SYSCALL_ARG0));
    0
}

#[tracepoint(category = "syscalls", name = "sys_enter_clone3")]
pub fn netns_enter_clone3(ctx: TracePointContext) -> u32 {
    // clone3(struct clone_args *uargs, size_t size): flags is the struct's first u64.
    let uargs = flags_arg(&ctx, SYSCALL_ARG0) as *const u64;
    // SAFETY: a checked read of user memory.
    let flags = unsafe { bpf_probe_read_user(uargs) }.unwrap_or(0);
    open_window(NetnsOp::Clone3, flags);
    0
}

#[tracepoint(category = "syscalls", name = "sys_enter_setns")]
pub fn netns_enter_setns(ctx: TracePointContext) -> u32 {
    open_window(NetnsOp::Setns, flags_arg(&ctx, SYSCALL_ARG1));
    0
}

#[tracepoint(category = "syscalls", name = "sys_exit_unshare")]
pub fn netns_exit_unshare(ctx: TracePointContext) -> u32 {
    let _ = close_window(&ctx);
    0
}

#[tracepoint(category = "syscalls", name = "sys_exit_clone")]
pub fn netns_exit_clone(ctx: TracePointContext) -> u32 {
    let _ = close_window(&ctx);
    0
}

#[tracepoint(category = "syscalls", name = "sys_exit_clone3")]
pub fn netns_exit_clone3(ctx: TracePointContext) -> u32 {
    let _ = close_window(&ctx);
    0
}

#[tracepoint(category = "syscalls", name = "sys_exit_setns")]
pub fn netns_exit_setns(ctx: TracePointContext) -> u32 {
    let _ = close_window(&ctx);
    0
}

// copy_net_ns(unsigned long flags, struct user_namespace *user_ns, struct net *old_net)
fn copy_net_ns_entry(flags: u64) {
    if flags & CLONE_NEWNET != 0 && !is_self() {
        let _ = COPY_NET_NS_START.insert(current_tid(), now(), 0);
    }
}

/// `ret` is a `struct net *` or an ERR_PTR (-errno).
fn copy_net_ns_exit<C: EbpfContext>(ctx: &C, ret: u64) {
    let tid = current_tid();
    // SAFETY: map lookup by value.
    let Some(start) = (unsafe { COPY_NET_NS_START.get(tid) }).copied() else {
        return;
    };
    let _ = COPY_NET_NS_START.remove(tid);
    emit_mm(ctx, EventKind::CopyNetNs, [start, ret, 0, 0, 0, 0]);
}

#[fentry(function = "copy_net_ns")]
pub fn copy_net_ns_fentry(ctx: FEntryContext) -> i32 {
    copy_net_ns_entry(ctx.arg::<u64>(0));
    0
}

#[fexit(function = "copy_net_ns")]
pub fn copy_net_ns_fexit(ctx: FExitContext) -> i32 {
    // The return value follows the three arguments (bpf_get_func_ret needs 5.17).
    copy_net_ns_exit(&ctx, ctx.arg::<u64>(3));
    0
}

#[kprobe]
pub fn copy_net_ns_kprobe(ctx: ProbeContext) -> u32 {
    copy_net_ns_entry(ctx.arg::<u64>(0).unwrap_or(0));
    0
}

#[kretprobe]
pub fn copy_net_ns_kretprobe(ctx: RetProbeContext) -> u32 {
    copy_net_ns_exit(&ctx, ctx.ret::<u64>());
    0
}
