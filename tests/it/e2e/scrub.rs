//! Scrub before disk: personal data sent by a client is rewritten before it
//! reaches the spool files, not only before it leaves for the server.

use std::collections::HashSet;
use std::io::Write;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use super::{try_read_ack, Books, Loki, Setup};
use crate::common::wait_for;
use crate::forward::message_frame;
use crate::loki_receiver::Limits;

const ADDRESS: &str = "203.0.113.77";
const LOGIN: &str = "alicewonder";

/// Every byte of every file under `dir`.
fn all_bytes(dir: &Path) -> Vec<u8> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(all_bytes(&path));
        } else if let Ok(b) = std::fs::read(&path) {
            out.extend(b);
        }
    }
    out
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

#[test]
fn e2e_personal_data_never_reaches_the_spool_files() {
    let loki = Loki::start(Limits::default());
    // Loki down: the events stay in the spool while we read its files.
    loki.down();
    let state = tempfile::tempdir().unwrap();
    let setup = Setup::new(
        Some(state.path().to_owned()),
        &loki.receiver.url(),
        true,
        "",
        "",
        "",
    );
    let _weir = setup.start();
    let mut s = UnixStream::connect(&setup.socket).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    for i in 0..50 {
        let id = format!("scrub-{i}");
        let line = format!("{id} login from {ADDRESS} user={LOGIN} ok");
        s.write_all(&message_frame("e2e", &[("message", &line)], Some(&id)))
            .unwrap();
        assert_eq!(try_read_ack(&mut s).as_deref(), Some(id.as_str()));
    }
    // Acknowledged means fsynced: the spool files hold all 50 now.
    let spooled = all_bytes(state.path());
    assert!(
        contains(&spooled, "scrub-49"),
        "events not in the spool files"
    );
    assert!(!contains(&spooled, ADDRESS), "raw IP address on disk");
    assert!(!contains(&spooled, LOGIN), "raw login on disk");
    loki.up();
    let entries = wait_for("50 entries", Duration::from_secs(60), || {
        let e = loki.receiver.entries();
        (e.len() >= 50).then_some(e)
    });
    for e in &entries {
        assert!(e.line.contains("203.0.113.0"), "{}", e.line);
        assert!(!e.line.contains(ADDRESS) && !e.line.contains(LOGIN));
    }
    let ids: HashSet<String> = (0..50).map(|i| format!("scrub-{i}")).collect();
    let books = Books::count(&ids, &ids, &loki.ids(), &loki);
    books.print("scrub");
    assert_eq!(books.lost, 0, "{books:?}");
}
