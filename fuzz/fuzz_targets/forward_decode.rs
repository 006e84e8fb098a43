//! Arbitrary bytes as a Forward protocol stream: frame, decode and map every
//! frame the way a connection does, a few events at a time. Must never
//! panic, loop or allocate beyond the limits; decoding in steps must give
//! exactly the events decoding at once gives, no step more than it asked
//! for, and never more events than the bytes can hold (3 bytes per event,
//! `[0, {}]`, after inflating).
#![no_main]

use libfuzzer_sys::fuzz_target;
use weir::source::forward::decode::{decode_frame, DecodeLimits, FrameDecoder, Record};
use weir::source::forward::docker;
use weir::source::forward::frame::{scan, Limits, Scan};

const LIMITS: DecodeLimits = DecodeLimits {
    frame: Limits {
        max_bytes: 1 << 20,
        max_depth: 32,
    },
    max_decompressed_bytes: 4 << 20,
};

/// Events per step, as small as a connection's would be relative to a frame.
const STEP: usize = 7;

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

        let mut whole = Vec::new();
        let whole_result = decode_frame(
            frame,
            &LIMITS,
            &mut |tag, record| {
                let (event, _) = docker::to_event(tag, record);
                whole.push(event.timestamp_ns);
            },
            &mut |_| {},
        );

        let mut stepped = Vec::new();
        let mut stepped_ok = true;
        match FrameDecoder::start(frame, &LIMITS) {
            Ok(mut d) => {
                let mut record = Record::default();
                while !d.is_done() {
                    let before = stepped.len();
                    let r = d.decode_some(
                        frame,
                        &LIMITS,
                        &mut record,
                        STEP,
                        &mut |tag, record| {
                            let (event, _) = docker::to_event(tag, record);
                            stepped.push(event.timestamp_ns);
                        },
                        &mut |_| {},
                    );
                    assert!(stepped.len() - before <= STEP, "a step gave more than asked");
                    if r.is_err() {
                        stepped_ok = false;
                        break;
                    }
                }
                assert_eq!(d.events, stepped.len());
            }
            Err(_) => stepped_ok = false,
        }
        assert_eq!(whole, stepped, "stepped decoding differs");
        assert_eq!(whole_result.is_ok(), stepped_ok);
        let room = len + LIMITS.max_decompressed_bytes;
        assert!(whole.len() * 3 <= room, "{} events from {len} bytes", whole.len());
        pos += len;
    }
});
