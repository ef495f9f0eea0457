//! The /proc/buddyinfo, zoneinfo and pagetypeinfo parsers and the index computations must never
//! panic, whatever the text.
#![no_main]

use fragtrace::zones::{index, procfs};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(zones) = procfs::parse_buddyinfo(&text) {
        for zone in zones {
            let (unusable, frag) = index::indices(&zone.free_blocks);
            assert_eq!(unusable.len(), zone.free_blocks.len());
            assert_eq!(frag.len(), zone.free_blocks.len());
        }
    }
    let _ = procfs::parse_zoneinfo(&text);
    let _ = procfs::parse_pagetypeinfo(&text);
});
