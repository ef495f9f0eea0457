//! The kernel-log parser of `fragtrace analyze-log` must never panic, whatever the text.
#![no_main]

use fragtrace::offline::logparse;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let parsed = logparse::parse(&text);
    for incident in &parsed.incidents {
        // Every free list must index orders that fit a shift.
        for zone in &incident.zones {
            assert!(zone.free_blocks.len() <= 64);
        }
    }
});
