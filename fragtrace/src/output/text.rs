//! Human-readable event lines.
use crate::decode::event::AllocFail;

/// `HH:MM:SS.ffffff comm[pid] order=N GFP... migratetype`, then the top frames, indented.
pub fn alloc_fail(ev: &AllocFail, frames: usize) -> String {
    let local = ev.time.to_zoned(jiff::tz::TimeZone::system());
    let mut s = format!(
        "{} {}[{}] order={} {} {} cgroup={}",
        local.strftime("%H:%M:%S%.6f"),
        ev.comm,
        ev.pid,
        ev.order,
        ev.gfp_flags,
        ev.migratetype,
        ev.cgroup_id,
    );
    for frame in ev.stack.iter().take(frames) {
        s.push_str("\n    ");
        s.push_str(frame);
    }
    if ev.stack.len() > frames {
        s.push_str(&format!(
            "\n    ... {} more frames",
            ev.stack.len() - frames
        ));
    }
    s
}
