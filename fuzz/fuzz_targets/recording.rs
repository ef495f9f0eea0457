//! `fragtrace report` reads recordings from other machines: whatever the bytes, reading them
//! must end in an error or in frames, never in a panic or an unbounded allocation.
#![no_main]

use fragtrace::source::recording::Recording;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // A valid prefix (magic and version) lets most inputs reach the frame reader.
    let mut bytes = b"fragtrace recording\n\x01\x00\x00\x00".to_vec();
    bytes.extend_from_slice(data);
    for input in [data.to_vec(), bytes] {
        if let Ok(mut rec) = Recording::from_reader(&"fuzz", std::io::Cursor::new(input)) {
            while rec.next_frame().is_some() {}
        }
    }
});
