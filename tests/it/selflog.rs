//! The no-payload rule, end to end: weir's own log never quotes what it is
//! sent, even when what it is sent is what it complains about.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::process::Command;
use std::time::Duration;

use crate::common::{spawn_weir, wait_for};
use crate::pipeline::minimal_config;

const MARKER: &str = "PAYLOAD-7f3a9c-must-never-be-logged";

/// Sends `bytes` on a fresh connection and waits until weir closes it.
fn send_and_wait_close(socket: &std::path::Path, bytes: &[u8]) {
    let mut s = UnixStream::connect(socket).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = s.write_all(bytes);
    let mut buf = [0u8; 64];
    // Bad input closes the connection: read returns 0 (or an error).
    let _ = s.read(&mut buf);
}

fn str8(out: &mut Vec<u8>, s: &str) {
    out.push(0xd9);
    out.push(s.len() as u8);
    out.extend_from_slice(s.as_bytes());
}

#[test]
fn bad_input_is_logged_without_its_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let config = minimal_config(dir.path());
    let socket = dir.path().join("forward.sock");
    let mut child = spawn_weir(&config);
    wait_for("the forward socket", Duration::from_secs(30), || {
        UnixStream::connect(&socket).ok()
    });

    // Wrong type: the time is a string (the marker) instead of a number.
    let mut wrong_type = vec![0x93];
    str8(&mut wrong_type, MARKER);
    str8(&mut wrong_type, MARKER);
    wrong_type.push(0x80);
    // Malformed msgpack: 0xc1 is a byte msgpack never uses, then the marker.
    let mut malformed = vec![0x92, 0xc1];
    malformed.extend_from_slice(MARKER.as_bytes());
    // Not msgpack at all: a line of text carrying the marker.
    let text = format!("GET /{MARKER} HTTP/1.1\r\n\r\n").into_bytes();
    for bad in [&wrong_type, &malformed, &text] {
        send_and_wait_close(&socket, bad);
    }

    let rc = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(rc.success());
    let mut log = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut log)
        .unwrap();
    assert_eq!(child.wait().unwrap().code(), Some(0), "{log}");

    // The errors were logged (so this test can fail), as reasons only.
    let complaints = log.lines().filter(|l| l.contains("bad input")).count();
    assert!(
        complaints >= 2,
        "expected bad-input lines in weir's log:\n{log}"
    );
    assert!(!log.contains(MARKER), "payload bytes in weir's log:\n{log}");
    assert!(
        !log.contains("7f3a9c"),
        "part of the payload in weir's log:\n{log}"
    );
}
