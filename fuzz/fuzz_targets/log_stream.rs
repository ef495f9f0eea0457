//! The streaming analysis behind `analyze-log` and `--follow` must never panic, whatever the
//! lines and wherever a quiet spell ends a report: line joiner, parser, evidence window and the
//! diagnosis (verdict arithmetic on numbers from the log).
#![no_main]

use std::time::Duration;

use fragtrace::offline::{Pipeline, diagnose};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&quiet_mask, rest)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(rest);
    let mut pipeline = Pipeline::new();
    let mut done = Vec::new();
    for (i, line) in text.split('\n').enumerate() {
        pipeline.push_line(line, &mut done);
        // Quiet spells at the lines the first byte picks, as a followed log has them.
        if quiet_mask & (1 << (i % 8)) != 0 {
            pipeline.idle(Duration::ZERO, &mut done);
        }
    }
    pipeline.finish(&mut done);
    for inc in &done {
        for zone in &inc.zones {
            assert!(zone.free_blocks.len() <= 64);
        }
        let (json, text) = diagnose(inc);
        assert!(json.starts_with('{') && !text.is_empty());
    }
});
