//! Zone state from /proc: buddyinfo, zoneinfo, pagetypeinfo; the kernel's fragmentation indices;
//! verdicts. (Being written: issue #5.)
pub mod snapshot;
