//! Bad input closes (or skips within) one connection, is counted by reason,
//! and a valid client on another connection is unaffected.

use std::io::Write;
use std::time::Duration;

use crate::common::wait_for;

use super::{
    closed_by_server, connect, gzip_frame, message_frame, messages_with, send_acked, Weir,
};

/// Sends `bad` on its own connection between two acked events of a healthy
/// client, and checks the bad connection was closed and counted as `reason`.
fn check_isolated(weir: &Weir, case: &str, bad: &[u8], reason: &str) {
    let before = weir.metric("weir_source_decode_errors_total", &[("reason", reason)]);
    let mut good = connect(&weir.socket);
    send_acked(&mut good, &format!("{case} before"), &format!("{case}-1"));

    let mut evil = connect(&weir.socket);
    // The server may close while we are still writing: that is fine.
    let _ = evil.write_all(bad);
    assert!(
        closed_by_server(&mut evil),
        "{case}: bad connection left open"
    );

    send_acked(&mut good, &format!("{case} after"), &format!("{case}-2"));
    let after = weir.metric("weir_source_decode_errors_total", &[("reason", reason)]);
    assert_eq!(
        after,
        before + 1.0,
        "{case}: decode error counted as {reason}"
    );
    let got = wait_for(case, Duration::from_secs(30), || {
        let got = messages_with(&weir.events(), case);
        (got.len() >= 2).then_some(got)
    });
    assert_eq!(got, [format!("{case} before"), format!("{case} after")]);
}

#[test]
fn each_bad_input_closes_only_its_connection() {
    let weir = Weir::start(
        "fwd_bad",
        "max_frame_bytes = \"64KiB\"\nmax_decompressed_bytes = \"1MiB\"",
    );

    check_isolated(
        &weir,
        "malformed",
        &[0x93, 0xa1, b't', 0xc1, 0, 0],
        "malformed",
    );

    let mut too_big = vec![0x93, 0xa1, b't', 0xc6];
    too_big.extend_from_slice(&(1u32 << 20).to_be_bytes());
    check_isolated(&weir, "too_big", &too_big, "frame_too_large");

    check_isolated(&weir, "deep", &[0x91; 200], "too_deep");

    // 8 MiB of zeros gzip into a few KiB: must not inflate past 1 MiB.
    let bomb = gzip_frame("t", &vec![0u8; 8 << 20], flate2::Compression::best(), None);
    check_isolated(&weir, "bomb", &bomb, "decompressed_too_large");

    // Well-formed msgpack of the wrong shape: a tag that is a number.
    check_isolated(&weir, "wrong_type", &[0x93, 0x05, 0x05, 0x80], "bad_frame");

    // A frame cut off by the client closing.
    let mut s = connect(&weir.socket);
    s.write_all(&message_frame("t", &[("message", "cut")], None)[..10])
        .unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    assert!(closed_by_server(&mut s));
}

#[test]
fn a_bad_event_is_skipped_and_its_neighbours_kept() {
    let weir = Weir::start("fwd_skip", "");
    // Forward mode: [tag, [[time, {message: "kept 1"}], [time, 5], [time, {message: "kept 2"}]], {chunk}]
    let mut f = Vec::new();
    rmp::encode::write_array_len(&mut f, 3).unwrap();
    rmp::encode::write_str(&mut f, "t").unwrap();
    rmp::encode::write_array_len(&mut f, 3).unwrap();
    for m in [Some("kept 1"), None, Some("kept 2")] {
        rmp::encode::write_array_len(&mut f, 2).unwrap();
        rmp::encode::write_uint(
            &mut f,
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs(),
        )
        .unwrap();
        match m {
            Some(m) => {
                rmp::encode::write_map_len(&mut f, 1).unwrap();
                rmp::encode::write_str(&mut f, "message").unwrap();
                rmp::encode::write_str(&mut f, m).unwrap();
            }
            None => {
                rmp::encode::write_uint(&mut f, 5).unwrap();
            }
        }
    }
    rmp::encode::write_map_len(&mut f, 1).unwrap();
    rmp::encode::write_str(&mut f, "chunk").unwrap();
    rmp::encode::write_str(&mut f, "skip-1").unwrap();
    let mut s = connect(&weir.socket);
    s.write_all(&f).unwrap();
    assert_eq!(super::read_ack(&mut s), "skip-1");
    // The connection stays usable.
    send_acked(&mut s, "kept 3", "skip-2");
    let events = weir.wait_events(3);
    assert_eq!(
        messages_with(&events, "kept"),
        ["kept 1", "kept 2", "kept 3"]
    );
    assert_eq!(
        weir.metric(
            "weir_source_decode_errors_total",
            &[("reason", "bad_event")]
        ),
        1.0
    );
}

#[test]
fn at_the_limit_the_longest_idle_connection_gives_way() {
    let weir = Weir::start("fwd_limit", "max_connections = 2");
    let mut a = connect(&weir.socket);
    let mut b = connect(&weir.socket);
    send_acked(&mut a, "limit a", "a");
    send_acked(&mut b, "limit b", "b");
    // Both sent within the last second: neither gives way, `c` is refused
    // (after waiting up to 1s for a slot) and counted.
    let mut c = connect(&weir.socket);
    assert!(closed_by_server(&mut c), "third connection accepted");
    let refused = || {
        weir.metric(
            "weir_source_decode_errors_total",
            &[("reason", "too_many_connections")],
        )
    };
    assert_eq!(refused(), 1.0);
    // A second later `a` is idle longest and gives way to `d`.
    std::thread::sleep(Duration::from_millis(1200));
    send_acked(&mut b, "limit b2", "b2");
    let mut d = connect(&weir.socket);
    send_acked(&mut d, "limit d", "d");
    assert!(
        closed_by_server(&mut a),
        "the longest-idle connection stayed"
    );
    assert_eq!(
        weir.metric("weir_source_decode_errors_total", &[("reason", "gave_way")]),
        1.0
    );
    assert_eq!(weir.metric("weir_source_connections", &[]), 2.0);
    send_acked(&mut b, "limit b3", "b3");
    assert_eq!(weir.wait_events(5).len(), 5);
    assert_eq!(refused(), 1.0);
}
