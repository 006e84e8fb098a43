//! Flow: many frames in one write, acks in order, partial lines from a raw
//! client, metrics.

use std::io::Write;

use super::{connect, message_frame, messages_with, read_ack, Weir};

/// More frames in one write than one batch holds: all appended, the final
/// chunk acknowledged (regression: the reader must not wait for more input
/// while complete frames are still buffered).
#[test]
fn a_burst_larger_than_a_batch_is_fully_appended_and_acked() {
    let weir = Weir::start("fwd_burst", "");
    let mut burst = Vec::new();
    for i in 0..40_000 {
        let chunk = (i == 39_999).then_some("end");
        burst.extend(message_frame(
            "b",
            &[("message", &format!("burst {i}"))],
            chunk,
        ));
    }
    let mut s = connect(&weir.socket);
    s.write_all(&burst).unwrap();
    assert_eq!(read_ack(&mut s), "end");
    let events = weir.wait_events(40_000);
    let got = messages_with(&events, "burst ");
    assert_eq!(got.len(), 40_000);
    assert_eq!(got[39_999], "burst 39999");
    assert_eq!(
        weir.metric("weir_source_events_received_total", &[]),
        40_000.0
    );
    assert_eq!(
        weir.metric("weir_source_bytes_received_total", &[]),
        burst.len() as f64 + 17.0, // plus the 17-byte probe frame of Weir::start
    );
}

/// Docker's split-line records from a raw client: joined, and acks given
/// for each piece in order.
#[test]
fn split_lines_are_joined_and_every_piece_acked() {
    let weir = Weir::start("fwd_partial", "partial_max_bytes = \"32KiB\"");
    let mut s = connect(&weir.socket);
    let piece = "y".repeat(16 * 1024);
    for (n, last) in [("1", "false"), ("2", "false"), ("3", "true")] {
        let rec = [
            ("container_name", "/p"),
            ("source", "stdout"),
            ("log", piece.as_str()),
            ("partial_message", "true"),
            ("partial_id", "abc"),
            ("partial_ordinal", n),
            ("partial_last", last),
        ];
        s.write_all(&message_frame("t", &rec, Some(n))).unwrap();
        assert_eq!(read_ack(&mut s), n);
    }
    let events = weir.wait_events(1);
    assert_eq!(events.len(), 1);
    let m = events[0]["message"].as_str().unwrap();
    assert!(m.starts_with(&"y".repeat(32 * 1024)));
    assert!(m.ends_with("...[truncated by weir]"), "marker");
    assert_eq!(events[0]["fields"]["truncated_bytes"], "16384");
}

/// `weir_source_reads_total` counts socket reads, so that bytes (and
/// events) per read can be told: a client that waits for each ack before
/// its next frame makes exactly one read per frame; a burst of frames in
/// one write is taken in far fewer reads than frames.
#[test]
fn reads_are_counted_once_per_socket_read() {
    let weir = Weir::start("fwd_reads", "");
    // The probe connection of Weir::start: one read.
    assert_eq!(weir.metric("weir_source_reads_total", &[]), 1.0);
    let mut s = connect(&weir.socket);
    for i in 0..5 {
        let chunk = format!("c{i}");
        s.write_all(&message_frame("r", &[("message", "one")], Some(&chunk)))
            .unwrap();
        assert_eq!(read_ack(&mut s), chunk);
        // Counted by the time the frame is acknowledged.
        assert_eq!(weir.metric("weir_source_reads_total", &[]), 2.0 + i as f64);
    }
    let mut burst = Vec::new();
    for i in 0..2_000 {
        let chunk = (i == 1_999).then_some("end");
        burst.extend(message_frame("r", &[("message", "many")], chunk));
    }
    s.write_all(&burst).unwrap();
    assert_eq!(read_ack(&mut s), "end");
    let reads = weir.metric("weir_source_reads_total", &[]) - 6.0;
    // ~60 KB: one read of up to 64 KiB if the write was whole by then.
    assert!((1.0..100.0).contains(&reads), "{reads} reads for the burst");
}
