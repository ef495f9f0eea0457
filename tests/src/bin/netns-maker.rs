//! Workload for the netns tests: calls unshare(CLONE_NEWNET) COUNT times in this process and
//! prints `{"pid":P,"ok":N,"errnos":[...]}`. Run unprivileged, every call fails with EPERM.
//!
//! usage: netns-maker COUNT
fn main() {
    let count: usize = std::env::args()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("usage: netns-maker COUNT");
    let mut ok = 0;
    let mut errnos = Vec::new();
    for _ in 0..count {
        // SAFETY: unshare has no memory-safety preconditions.
        if unsafe { libc::unshare(libc::CLONE_NEWNET) } == 0 {
            ok += 1;
        } else {
            errnos.push(std::io::Error::last_os_error().raw_os_error().unwrap_or(0));
        }
    }
    println!(
        "{{\"pid\":{},\"ok\":{ok},\"errnos\":{errnos:?}}}",
        std::process::id()
    );
}
