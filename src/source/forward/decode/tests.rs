use super::*;
use proptest::prelude::*;
use std::io::Write;

const LIMITS: DecodeLimits = DecodeLimits {
    frame: Limits {
        max_bytes: 1 << 20,
        max_depth: 32,
    },
    max_decompressed_bytes: 1 << 20,
};

fn event_time(out: &mut Vec<u8>, secs: u32, nanos: u32) {
    out.extend_from_slice(&[0xd7, 0x00]);
    out.extend_from_slice(&secs.to_be_bytes());
    out.extend_from_slice(&nanos.to_be_bytes());
}

fn record(out: &mut Vec<u8>, log: &str) {
    rmp::encode::write_map_len(out, 2).unwrap();
    rmp::encode::write_str(out, "log").unwrap();
    rmp::encode::write_str(out, log).unwrap();
    rmp::encode::write_str(out, "source").unwrap();
    rmp::encode::write_str(out, "stdout").unwrap();
}

fn chunk_option(out: &mut Vec<u8>, chunk: &str, extra: Option<(&str, &str)>) {
    rmp::encode::write_map_len(out, 2 + u32::from(extra.is_some())).unwrap();
    rmp::encode::write_str(out, "chunk").unwrap();
    rmp::encode::write_str(out, chunk).unwrap();
    rmp::encode::write_str(out, "size").unwrap();
    rmp::encode::write_uint(out, 2).unwrap();
    if let Some((k, v)) = extra {
        rmp::encode::write_str(out, k).unwrap();
        rmp::encode::write_str(out, v).unwrap();
    }
}

/// What [`run`] saw: (time, log) of each event, the result, skip reasons.
type Run<'a> = (
    Vec<(i64, String)>,
    Result<FrameInfo<'a>, DecodeError>,
    Vec<&'static str>,
);

/// Decodes one frame, collecting what the callbacks saw.
fn run(frame: &[u8]) -> Run<'_> {
    let mut got = Vec::new();
    let mut skipped = Vec::new();
    let info = decode_frame(
        frame,
        &LIMITS,
        &mut |_, r| {
            let log = match r.get("log") {
                Some(Value::Str(s)) => String::from_utf8_lossy(s).into_owned(),
                _ => String::new(),
            };
            got.push((r.time_ns, log));
        },
        &mut |e| skipped.push(e.reason()),
    );
    (got, info, skipped)
}

#[test]
fn message_mode_with_event_time_and_chunk() {
    let mut f = Vec::new();
    rmp::encode::write_array_len(&mut f, 4).unwrap();
    rmp::encode::write_str(&mut f, "docker.abc").unwrap();
    event_time(&mut f, 1_700_000_000, 123_456_789);
    record(&mut f, "hello");
    chunk_option(&mut f, "c1", None);
    let (got, info, _) = run(&f);
    assert_eq!(got, vec![(1_700_000_000_123_456_789, "hello".into())]);
    let info = info.unwrap();
    assert_eq!(info.tag, "docker.abc");
    assert_eq!(info.chunk.as_deref(), Some("c1"));
    assert_eq!(info.events, 1);
}

#[test]
fn message_mode_with_integer_time_and_no_option() {
    let mut f = Vec::new();
    rmp::encode::write_array_len(&mut f, 3).unwrap();
    rmp::encode::write_str(&mut f, "t").unwrap();
    rmp::encode::write_uint(&mut f, 1_700_000_000).unwrap();
    record(&mut f, "x");
    let (got, info, _) = run(&f);
    assert_eq!(got, vec![(1_700_000_000_000_000_000, "x".into())]);
    assert_eq!(info.unwrap().chunk, None);
}

fn entries(n: usize) -> Vec<u8> {
    let mut e = Vec::new();
    for i in 0..n {
        rmp::encode::write_array_len(&mut e, 2).unwrap();
        event_time(&mut e, 1_700_000_000 + i as u32, 0);
        record(&mut e, &format!("line {i}"));
    }
    e
}

#[test]
fn forward_mode() {
    let mut f = Vec::new();
    rmp::encode::write_array_len(&mut f, 3).unwrap();
    rmp::encode::write_str(&mut f, "t").unwrap();
    rmp::encode::write_array_len(&mut f, 3).unwrap();
    f.extend_from_slice(&entries(3));
    chunk_option(&mut f, "c2", None);
    let (got, info, _) = run(&f);
    assert_eq!(got.len(), 3);
    assert_eq!(got[2], (1_700_000_002_000_000_000, "line 2".into()));
    assert_eq!(info.unwrap().chunk.as_deref(), Some("c2"));
}

#[test]
fn packed_and_compressed_packed_forward() {
    let packed = entries(5);
    let mut f = Vec::new();
    rmp::encode::write_array_len(&mut f, 3).unwrap();
    rmp::encode::write_str(&mut f, "t").unwrap();
    rmp::encode::write_bin(&mut f, &packed).unwrap();
    chunk_option(&mut f, "c3", None);
    let (got, info, _) = run(&f);
    assert_eq!(got.len(), 5);
    assert_eq!(info.unwrap().events, 5);

    // Two concatenated gzip members, as fluentd may send.
    let mut gz = Vec::new();
    for half in [&packed[..], &entries(2)[..]] {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(half).unwrap();
        gz.extend(enc.finish().unwrap());
    }
    let mut f = Vec::new();
    rmp::encode::write_array_len(&mut f, 3).unwrap();
    rmp::encode::write_str(&mut f, "t").unwrap();
    rmp::encode::write_bin(&mut f, &gz).unwrap();
    chunk_option(&mut f, "c4", Some(("compressed", "gzip")));
    let (got, info, _) = run(&f);
    assert_eq!(got.len(), 7);
    assert_eq!(info.unwrap().chunk.as_deref(), Some("c4"));
}

#[test]
fn a_gzip_bomb_is_refused() {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    enc.write_all(&vec![0u8; 8 << 20]).unwrap();
    let gz = enc.finish().unwrap();
    assert!(gz.len() < 64 * 1024);
    let mut f = Vec::new();
    rmp::encode::write_array_len(&mut f, 3).unwrap();
    rmp::encode::write_str(&mut f, "t").unwrap();
    rmp::encode::write_bin(&mut f, &gz).unwrap();
    chunk_option(&mut f, "c", Some(("compressed", "gzip")));
    let (got, info, _) = run(&f);
    assert!(got.is_empty());
    assert_eq!(
        info.unwrap_err(),
        DecodeError::DecompressedTooLarge { limit: 1 << 20 }
    );
}

#[test]
fn a_bad_event_is_skipped_and_the_rest_kept() {
    let mut f = Vec::new();
    rmp::encode::write_array_len(&mut f, 2).unwrap();
    rmp::encode::write_str(&mut f, "t").unwrap();
    rmp::encode::write_array_len(&mut f, 3).unwrap();
    f.extend_from_slice(&entries(1));
    // [ "not a time", {} ] and [time, 5]
    rmp::encode::write_array_len(&mut f, 2).unwrap();
    rmp::encode::write_str(&mut f, "noon").unwrap();
    rmp::encode::write_map_len(&mut f, 0).unwrap();
    rmp::encode::write_array_len(&mut f, 2).unwrap();
    rmp::encode::write_uint(&mut f, 5).unwrap();
    rmp::encode::write_uint(&mut f, 5).unwrap();
    let (got, info, skipped) = run(&f);
    assert_eq!(got.len(), 1);
    assert_eq!(skipped, vec!["bad_event", "bad_event"]);
    assert_eq!(info.unwrap().events, 1);
}

#[test]
fn wrong_shapes_are_frame_errors() {
    for bad in [
        &[0x05][..],                   // not an array
        &[0x91, 0xa1, b't'][..],       // one element
        &[0x92, 0x05, 0x05][..],       // tag not a string
        &[0x92, 0xa1, b't', 0xc0][..], // second element nil
    ] {
        let (got, info, _) = run(bad);
        assert!(got.is_empty());
        assert!(
            matches!(info, Err(DecodeError::BadFrame(_))),
            "{bad:?}: {info:?}"
        );
    }
}

proptest! {
    /// Arbitrary bytes never panic the framer or the decoder, and whatever
    /// the framer accepts as a frame stays within it.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        if let Ok(frame::Scan::Complete(n)) = frame::scan(&bytes, LIMITS.frame) {
            prop_assert!(n <= bytes.len());
            let _ = run(&bytes[..n]);
        }
        let _ = run(&bytes);
    }

    /// Mutating one byte of a valid frame never panics either.
    #[test]
    fn mutated_frames_never_panic(i in 0usize..200, b in any::<u8>()) {
        let mut f = Vec::new();
        rmp::encode::write_array_len(&mut f, 3).unwrap();
        rmp::encode::write_str(&mut f, "t").unwrap();
        rmp::encode::write_bin(&mut f, &entries(3)).unwrap();
        chunk_option(&mut f, "c", None);
        let i = i % f.len();
        f[i] = b;
        let _ = run(&f);
    }
}

/// The frame of every mode that holds `entries(n)`.
fn frames_of(n: usize) -> Vec<Vec<u8>> {
    let packed = entries(n);
    let mut forward = Vec::new();
    rmp::encode::write_array_len(&mut forward, 3).unwrap();
    rmp::encode::write_str(&mut forward, "t").unwrap();
    rmp::encode::write_array_len(&mut forward, n as u32).unwrap();
    forward.extend_from_slice(&packed);
    chunk_option(&mut forward, "c", None);
    let mut bin = Vec::new();
    rmp::encode::write_array_len(&mut bin, 3).unwrap();
    rmp::encode::write_str(&mut bin, "t").unwrap();
    rmp::encode::write_bin(&mut bin, &packed).unwrap();
    chunk_option(&mut bin, "c", None);
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(&packed).unwrap();
    let mut gz = Vec::new();
    rmp::encode::write_array_len(&mut gz, 3).unwrap();
    rmp::encode::write_str(&mut gz, "t").unwrap();
    rmp::encode::write_bin(&mut gz, &enc.finish().unwrap()).unwrap();
    chunk_option(&mut gz, "c", Some(("compressed", "gzip")));
    vec![forward, bin, gz]
}

#[test]
fn a_frame_decoded_a_few_events_at_a_time_gives_every_event_once_in_order() {
    for frame in frames_of(1000) {
        let mut d = FrameDecoder::start(&frame, &LIMITS).unwrap();
        let mut got = Vec::new();
        let mut calls = 0;
        let mut record = Record::default();
        while !d.is_done() {
            let before = got.len();
            d.decode_some(
                &frame,
                &LIMITS,
                &mut record,
                7,
                &mut |_, r| got.push(r.time_ns),
                &mut |e| panic!("{e}"),
            )
            .unwrap();
            assert!(got.len() - before <= 7, "at most max_events per call");
            calls += 1;
        }
        assert_eq!(calls, 1000usize.div_ceil(7));
        let want: Vec<i64> = (0..1000)
            .map(|i| (1_700_000_000 + i) * 1_000_000_000)
            .collect();
        assert_eq!(got, want);
        assert_eq!(d.events, 1000);
        assert_eq!(d.chunk.as_deref(), Some("c"));
    }
}

#[test]
fn a_long_chunk_id_fails_the_frame_before_any_event() {
    let mut f = Vec::new();
    rmp::encode::write_array_len(&mut f, 3).unwrap();
    rmp::encode::write_str(&mut f, "t").unwrap();
    rmp::encode::write_array_len(&mut f, 3).unwrap();
    f.extend_from_slice(&entries(3));
    chunk_option(&mut f, &"c".repeat(MAX_CHUNK_BYTES + 1), None);
    let (got, info, _) = run(&f);
    assert!(got.is_empty());
    assert_eq!(info.unwrap_err().reason(), "bad_frame");
    let mut f = Vec::new();
    rmp::encode::write_array_len(&mut f, 3).unwrap();
    rmp::encode::write_str(&mut f, "t").unwrap();
    rmp::encode::write_array_len(&mut f, 3).unwrap();
    f.extend_from_slice(&entries(3));
    chunk_option(&mut f, &"c".repeat(MAX_CHUNK_BYTES), None);
    assert_eq!(run(&f).0.len(), 3);
}

/// Times of the events of `frame` decoded `step` at a time, and whether the
/// frame decoded without a frame-level error.
fn stepped(frame: &[u8], step: usize) -> (Vec<i64>, bool) {
    let mut got = Vec::new();
    let Ok(mut d) = FrameDecoder::start(frame, &LIMITS) else {
        return (got, false);
    };
    let mut record = Record::default();
    while !d.is_done() {
        let r = d.decode_some(
            frame,
            &LIMITS,
            &mut record,
            step,
            &mut |_, r| got.push(r.time_ns),
            &mut |_| {},
        );
        if r.is_err() {
            return (got, false);
        }
    }
    (got, true)
}

proptest! {
    /// Decoding a damaged frame a few events at a time gives exactly what
    /// decoding it at once gives, error included.
    #[test]
    fn stepped_decoding_equals_whole_decoding(
        mode in 0usize..3, n in 0usize..40, step in 1usize..9,
        i in any::<usize>(), b in any::<u8>(), damage in any::<bool>(),
    ) {
        let mut f = frames_of(n).swap_remove(mode);
        if damage {
            let i = i % f.len();
            f[i] = b;
        }
        let (whole, info, _) = run(&f);
        let whole: Vec<i64> = whole.into_iter().map(|(t, _)| t).collect();
        let (got, ok) = stepped(&f, step);
        prop_assert_eq!(got, whole);
        prop_assert_eq!(ok, info.is_ok());
    }
}

#[test]
fn a_huge_tag_is_cut_so_that_it_is_not_copied_whole_into_every_event() {
    let tag = "t".repeat(64 * 1024);
    let mut f = Vec::new();
    rmp::encode::write_array_len(&mut f, 2).unwrap();
    rmp::encode::write_str(&mut f, &tag).unwrap();
    rmp::encode::write_array_len(&mut f, 3).unwrap();
    f.extend_from_slice(&entries(3));
    let mut tags = Vec::new();
    let info = decode_frame(&f, &LIMITS, &mut |t, _| tags.push(t.len()), &mut |_| {}).unwrap();
    assert_eq!(tags, [MAX_TAG_BYTES; 3]);
    assert_eq!(info.tag.len(), MAX_TAG_BYTES);
}

/// `[tag, bin(entries), {}]`, gzip-compressed when `gzip`.
fn packed_frame(entries: &[u8], gzip: bool) -> Vec<u8> {
    let mut f = Vec::new();
    rmp::encode::write_array_len(&mut f, 3).unwrap();
    rmp::encode::write_str(&mut f, "t").unwrap();
    if gzip {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(entries).unwrap();
        rmp::encode::write_bin(&mut f, &enc.finish().unwrap()).unwrap();
        rmp::encode::write_map_len(&mut f, 1).unwrap();
        rmp::encode::write_str(&mut f, "compressed").unwrap();
        rmp::encode::write_str(&mut f, "gzip").unwrap();
    } else {
        rmp::encode::write_bin(&mut f, entries).unwrap();
        rmp::encode::write_map_len(&mut f, 0).unwrap();
    }
    f
}

/// Packed entries are no longer framed one by one before being decoded:
/// decoding them applies the same limits. Framing each entry (what the
/// decoder did before) is the oracle: an entry whose nested values framing
/// refuses as too deep fails the frame as `too_deep` before its event, at
/// every depth around the limit, whether the nesting is in a value, in a
/// key or in the time, plain or gzip.
#[test]
fn packed_entries_get_the_frame_depth_limit() {
    for depth in 25..40 {
        for place in ["value", "key", "time"] {
            let mut nested = vec![0x91; depth];
            nested.push(0x01);
            let mut entry = Vec::new();
            rmp::encode::write_array_len(&mut entry, 2).unwrap();
            if place == "time" {
                entry.extend_from_slice(&nested);
            } else {
                event_time(&mut entry, 1_700_000_000, 0);
            }
            rmp::encode::write_map_len(&mut entry, 2).unwrap();
            rmp::encode::write_str(&mut entry, "log").unwrap();
            rmp::encode::write_str(&mut entry, "deep").unwrap();
            match place {
                "value" => {
                    rmp::encode::write_str(&mut entry, "v").unwrap();
                    entry.extend_from_slice(&nested);
                }
                "key" => {
                    entry.extend_from_slice(&nested);
                    rmp::encode::write_str(&mut entry, "v").unwrap();
                }
                _ => {
                    rmp::encode::write_str(&mut entry, "v").unwrap();
                    rmp::encode::write_str(&mut entry, "w").unwrap();
                }
            }
            let framed = frame::scan(&entry, LIMITS.frame);
            let mut all = entries(2);
            all.extend_from_slice(&entry);
            all.extend_from_slice(&entries(1));
            for gzip in [false, true] {
                let f = packed_frame(&all, gzip);
                let (got, info, skipped) = run(&f);
                let what = format!("depth {depth} in the {place}, gzip {gzip}");
                match framed {
                    Ok(frame::Scan::Complete(_)) => {
                        let info = info.unwrap_or_else(|e| panic!("{what}: {e}"));
                        // A bad time skips the event; the rest are kept.
                        let expected = if place == "time" { 3 } else { 4 };
                        assert_eq!(info.events, expected, "{what}");
                        assert_eq!(got.len(), expected, "{what}");
                        assert_eq!(skipped.len(), 4 - expected, "{what}");
                    }
                    Err(frame::FrameError::TooDeep { .. }) => {
                        assert_eq!(info.unwrap_err().reason(), "too_deep", "{what}");
                        assert_eq!(got.len(), 2, "{what}: the events before it only");
                    }
                    other => panic!("{what}: framing said {other:?}"),
                }
            }
        }
    }
}

/// An inflated entry larger than a frame may be is refused before its
/// event is delivered (the bytes of a plain bin are inside a frame, so
/// within the limit already).
#[test]
fn an_inflated_entry_larger_than_a_frame_fails_the_frame() {
    let limits = DecodeLimits {
        frame: Limits {
            max_bytes: 1024,
            max_depth: 32,
        },
        max_decompressed_bytes: 1 << 20,
    };
    let mut all = entries(2);
    rmp::encode::write_array_len(&mut all, 2).unwrap();
    event_time(&mut all, 1_700_000_000, 0);
    record(&mut all, &"x".repeat(2000));
    all.extend_from_slice(&entries(1));
    let f = packed_frame(&all, true);
    let mut got = 0;
    let info = decode_frame(&f, &limits, &mut |_, _| got += 1, &mut |e| {
        panic!("skipped {e}")
    });
    assert_eq!(info.unwrap_err().reason(), "frame_too_large");
    assert_eq!(got, 2);
    // A bad marker inside an entry: malformed, as framing would say.
    let mut all = entries(1);
    all.extend_from_slice(&[0x92, 0x01, 0x81, 0xa1, b'k', 0xc1]);
    let f = packed_frame(&all, false);
    let (got, info, _) = run(&f);
    assert_eq!(info.unwrap_err().reason(), "malformed");
    assert_eq!(got.len(), 1);
}

/// A connection decodes every read into one record: emptied for another
/// buffer's lifetime, its entry list must keep its allocation (an
/// allocation per read was one per event for Docker's one event per read).
#[test]
fn a_reused_record_keeps_its_entry_list() {
    let first = b"container_id".to_vec();
    let mut record = Record::default();
    for _ in 0..6 {
        record.entries.push((&first[..], Value::Nil));
    }
    let (ptr, capacity) = (record.entries.as_ptr() as usize, record.entries.capacity());
    let second = b"log".to_vec();
    let mut again = record.reuse();
    assert!(again.entries.is_empty());
    assert_eq!(again.entries.as_ptr() as usize, ptr);
    assert_eq!(again.entries.capacity(), capacity);
    again.entries.push((&second[..], Value::Str(b"line")));
    assert_eq!(again.get("log"), Some(Value::Str(b"line")));
}

/// A Docker-shaped Message-mode frame: `[tag, EventTime, record, option?]`
/// with `value` as one more record entry.
fn docker_message(chunk: Option<&str>, value: &[u8]) -> Vec<u8> {
    let mut f = Vec::new();
    rmp::encode::write_array_len(&mut f, 3 + u32::from(chunk.is_some())).unwrap();
    rmp::encode::write_str(&mut f, "docker.0123456789ab").unwrap();
    event_time(&mut f, 1_700_000_000, 5);
    rmp::encode::write_map_len(&mut f, 5).unwrap();
    for (k, v) in [
        ("container_id", "0123456789ab0123456789ab0123456789ab"),
        ("container_name", "/shop-web-1"),
        ("source", "stdout"),
        ("log", "GET /api/v1/orders 200 OK in 12.4ms"),
    ] {
        rmp::encode::write_str(&mut f, k).unwrap();
        rmp::encode::write_str(&mut f, v).unwrap();
    }
    rmp::encode::write_str(&mut f, "extra").unwrap();
    f.extend_from_slice(value);
    if let Some(c) = chunk {
        chunk_option(&mut f, c, None);
    }
    f
}

/// One good event as the general way (framing, then [`decode_frame`])
/// makes it of the value at the start of `buf`: (length, tag, chunk, the
/// event's time and entries); `None` for anything else.
type General = (usize, String, Option<String>, i64, String);

fn general(buf: &[u8], limits: &DecodeLimits) -> Option<General> {
    let Ok(frame::Scan::Complete(n)) = frame::scan(buf, limits.frame) else {
        return None;
    };
    let mut events = Vec::new();
    let mut skipped = 0;
    let info = decode_frame(
        &buf[..n],
        limits,
        &mut |_, r| events.push((r.time_ns, format!("{:?}", r.entries))),
        &mut |_| skipped += 1,
    )
    .ok()?;
    if events.len() != 1 || skipped != 0 {
        return None;
    }
    let (time, entries) = events.pop()?;
    Some((n, info.tag.into_owned(), info.chunk, time, entries))
}

/// [`message`]'s answer, in [`general`]'s terms.
fn fast(buf: &[u8], limits: &DecodeLimits) -> Option<General> {
    let mut record = Record::default();
    let m = message(buf, limits, &mut record)?;
    let entries = format!("{:?}", record.entries);
    Some((
        m.len,
        m.tag().into_owned(),
        m.chunk,
        record.time_ns,
        entries,
    ))
}

#[test]
fn docker_frames_are_decoded_straight_and_as_the_general_way_decodes_them() {
    let nested = [0x92, 0x01, 0x81, 0xa1, b'a', 0xc0];
    for chunk in [None, Some("MDEyMzQ1Njc4OWFiY2RlZg==")] {
        for value in [&[0xc3][..], &nested, &[0xcb, 0, 0, 0, 0, 0, 0, 0, 0]] {
            let mut f = docker_message(chunk, value);
            let len = f.len();
            let want = general(&f, &LIMITS);
            assert!(want.is_some());
            assert_eq!(fast(&f, &LIMITS), want);
            // The next frame's bytes behind it change nothing.
            f.extend_from_slice(&docker_message(None, &[0xc0]));
            assert_eq!(fast(&f, &LIMITS), want);
            // Incomplete: left to the framing, which waits for more.
            for cut in 0..len {
                assert_eq!(fast(&f[..cut], &LIMITS), None, "{cut}");
            }
        }
    }
}

#[test]
fn a_message_frame_past_a_limit_is_left_to_the_framing() {
    // A record value nested `d` deep, against a depth limit of 8: the
    // framing refuses 7 levels (with the frame and the record, 9 > 8).
    for d in 0..12 {
        let mut value = vec![0x91; d];
        value.push(0x01);
        let f = docker_message(Some("c"), &value);
        for max_depth in [0, 1, 2, 3, 8, 32] {
            let limits = DecodeLimits {
                frame: Limits {
                    max_bytes: 1 << 20,
                    max_depth,
                },
                ..LIMITS
            };
            let want = general(&f, &limits);
            assert_eq!(fast(&f, &limits), want, "depth {d}, limit {max_depth}");
            if max_depth == 8 {
                assert_eq!(want.is_some(), d < 7, "depth {d}");
            }
        }
    }
    let f = docker_message(Some("c"), &[0xc0]);
    for max_bytes in [f.len() - 1, f.len(), f.len() + 1] {
        let limits = DecodeLimits {
            frame: Limits {
                max_bytes,
                max_depth: 32,
            },
            ..LIMITS
        };
        assert_eq!(fast(&f, &limits), general(&f, &limits));
        assert_eq!(fast(&f, &limits).is_some(), max_bytes >= f.len());
    }
}

proptest! {
    /// Whatever bytes it is given (a Docker frame with one byte changed,
    /// cut anywhere, another frame behind it), the straight decoding gives
    /// nothing or what the general way gives.
    #[test]
    fn straight_decoding_agrees_with_framing_then_decoding(
        i in 0usize..400,
        b in any::<u8>(),
        cut in 0usize..400,
        chunk in any::<bool>(),
    ) {
        let mut f = docker_message(chunk.then_some("c1"), &[0x92, 0xd7, 0, 1, 2, 3, 4, 5, 6, 7, 8]);
        f.extend_from_slice(&docker_message(None, &[0xc0]));
        let i = i % f.len();
        f[i] = b;
        let f = &f[..cut.min(f.len())];
        if let Some(got) = fast(f, &LIMITS) {
            prop_assert_eq!(Some(got), general(f, &LIMITS));
        }
    }

    /// ... and arbitrary bytes after a Message-mode head.
    #[test]
    fn straight_decoding_agrees_on_arbitrary_bodies(
        bytes in proptest::collection::vec(any::<u8>(), 0..256),
        four in any::<bool>(),
    ) {
        let mut f = vec![if four { 0x94 } else { 0x93 }, 0xa1, b't'];
        event_time(&mut f, 1, 2);
        f.extend_from_slice(&bytes);
        if let Some(got) = fast(&f, &LIMITS) {
            prop_assert_eq!(Some(got), general(&f, &LIMITS));
        }
    }
}

/// Extensions are read from their header alone, as long as the framing
/// says they are; cut short, they are a truncated frame.
#[test]
fn extensions_are_read_to_the_length_the_framing_gives() {
    // fixext 1, 2, 4, 8, 16, then ext 8, 16, 32.
    let mut exts = Vec::new();
    for n in [1usize, 2, 4, 8, 16, 0, 3, 300, 70_000] {
        let mut v = Vec::new();
        rmp::encode::write_ext_meta(&mut v, n as u32, -1).unwrap();
        v.extend(std::iter::repeat_n(9u8, n));
        exts.push(v);
    }
    for ext in &exts {
        let mut bytes = ext.clone();
        bytes.push(0xc0);
        let mut r = Reader::new(&bytes);
        assert_eq!(r.value().unwrap(), Value::Raw(&ext[..]));
        assert_eq!(
            frame::scan(&bytes, LIMITS.frame),
            Ok(frame::Scan::Complete(ext.len()))
        );
        for cut in 0..ext.len() {
            assert_eq!(Reader::new(&ext[..cut]).value(), Err(TRUNCATED), "{cut}");
        }
    }
}

proptest! {
    /// A connection's tag cache gives what checking each frame's tag would
    /// have, whatever tags follow one another: repeated, changed, empty,
    /// not UTF-8, longer than [`MAX_TAG_BYTES`].
    #[test]
    fn the_tag_cache_gives_each_frames_own_tag(
        tags in proptest::collection::vec(
            prop_oneof![
                Just(b"docker.3f1c2a9b8d7e".to_vec()),
                Just(Vec::new()),
                Just(vec![b'a'; MAX_TAG_BYTES + 5]),
                Just("ü".repeat(MAX_TAG_BYTES / 2 + 1).into_bytes()),
                proptest::collection::vec(any::<u8>(), 0..8),
            ],
            1..12,
        )
    ) {
        let mut cache = TagCache::default();
        for raw in &tags {
            let mut frame = Vec::new();
            rmp::encode::write_array_len(&mut frame, 3).unwrap();
            rmp::encode::write_str_len(&mut frame, raw.len() as u32).unwrap();
            frame.extend_from_slice(raw);
            frame.extend_from_slice(&[0xd7, 0, 0, 0, 0, 1, 0, 0, 0, 2, 0x80]);
            let slow = FrameDecoder::open(&frame).unwrap().tag(&frame).into_owned();
            let m = message(&frame, &LIMITS, &mut Record::default()).unwrap();
            prop_assert_eq!(&m.tag(), &slow);
            prop_assert_eq!(cache.text(m.raw_tag), slow.as_str());
        }
    }
}

/// The inlined paths of [`Reader::value`] (fixstr, str8, fixext8) read
/// what the general match does: every marker, followed by every length
/// byte and then cut at every length up to what it needs.
#[test]
fn inline_value_paths_agree_with_the_general_match() {
    let mut cases = 0;
    for m in 0..=255u8 {
        for n in [0u8, 1, 7, 8, 9, 31, 32, 33, 200, 255] {
            let mut bytes = vec![m, n];
            bytes.extend((0..300).map(|i| i as u8));
            for cut in 0..=bytes.len().min(300) {
                let b = &bytes[..cut];
                let (mut fast, mut slow) = (Reader::new(b), Reader::new(b));
                let got = fast.value();
                assert_same_value(&got, &slow.any_value(), m, n, cut);
                assert_eq!(fast.pos, slow.pos, "marker {m:#x} length {n} cut {cut}");
                cases += 1;
            }
        }
    }
    assert!(cases > 100_000);
}

fn assert_same_value(
    a: &Result<Value<'_>, DecodeError>,
    b: &Result<Value<'_>, DecodeError>,
    m: u8,
    n: u8,
    cut: usize,
) {
    // (Floats compared as bits: a NaN is its own equal here.)
    let bits = |v: &Result<Value<'_>, DecodeError>| match v {
        Ok(Value::Float(f)) => Ok(Ok(f.to_bits())),
        Ok(other) => Ok(Err(format!("{other:?}"))),
        Err(e) => Err(*e),
    };
    assert_eq!(bits(a), bits(b), "marker {m:#x} length {n} cut {cut}");
}
