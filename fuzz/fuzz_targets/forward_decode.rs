//! Arbitrary bytes as a Forward protocol stream: frame, decode and map every
//! frame the way a connection does. Must never panic, loop or allocate
//! beyond the limits.
#![no_main]

use libfuzzer_sys::fuzz_target;
use weir::source::forward::decode::{decode_frame, DecodeLimits};
use weir::source::forward::docker;
use weir::source::forward::frame::{scan, Limits, Scan};

const LIMITS: DecodeLimits = DecodeLimits {
    frame: Limits {
        max_bytes: 1 << 20,
        max_depth: 32,
    },
    max_decompressed_bytes: 4 << 20,
};

fuzz_target!(|data: &[u8]| {
    let mut pos = 0;
    while pos < data.len() {
        let len = match scan(&data[pos..], LIMITS.frame) {
            Ok(Scan::Complete(n)) => n,
            Ok(Scan::Incomplete { at_least }) => {
                assert!(at_least > data.len() - pos);
                return;
            }
            Err(_) => return,
        };
        assert!(len > 0 && pos + len <= data.len());
        let frame = &data[pos..pos + len];
        let _ = decode_frame(
            frame,
            &LIMITS,
            &mut |tag, record| {
                let (event, _) = docker::to_event(tag, record);
                std::hint::black_box(event);
            },
            &mut |_| {},
        );
        pos += len;
    }
});
