//! Disk full under load: the spool's state_dir on an 8 MiB tmpfs, Loki down,
//! clients writing far more than fits.
//!
//! The books this scenario asserts (drop_oldest is a policy that loses data,
//! and counts it):
//! - weir keeps acknowledging every frame (it never blocks the socket) and
//!   never dies;
//! - `weir_spool_dropped_events_total{sink="loki"}` > 0;
//! - acknowledged but not delivered <= dropped (every loss is a counted drop);
//! - what is dropped is the oldest: each client's last acknowledged event is
//!   delivered;
//! - no corruption: every delivered line is exactly a line a client sent;
//! - once Loki returns, the spool drains to zero lag.

use std::collections::HashMap;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use super::{merge, padded, scale, spawn_clients, Books, Loki, Setup, Tmpfs};
use crate::common::wait_for;
use crate::loki_receiver::Limits;

const LINE: usize = 1024;

#[test]
fn e2e_disk_full_drops_oldest_counted_keeps_accepting_and_recovers() {
    // 8 MiB of disk; each client writes this many KiB-sized events.
    let per_client: u64 = scale(4_000, 20_000);
    let mount = tempfile::tempdir().unwrap();
    let _tmpfs = Tmpfs::mount(mount.path(), "8m");
    let loki = Loki::start(Limits::default());
    loki.down();
    let setup = Setup::new(
        Some(mount.path().join("state")),
        &loki.receiver.url(),
        true,
        "segment_bytes = \"512KiB\"",
        "",
        "",
    );
    let mut weir = setup.start();
    let stop = Arc::new(AtomicBool::new(false));
    let clients = spawn_clients(4, &setup.socket, "dfc", LINE, Some(per_client), &stop);
    let logs: Vec<_> = clients.into_iter().map(|c| c.join().unwrap()).collect();
    weir.assert_alive();
    let dropped = setup.metric("weir_spool_dropped_events_total", &[("sink", "loki")]);
    let max_wait = logs.iter().map(|l| l.max_ack_wait).max().unwrap();
    loki.up();
    wait_for("the spool to drain", Duration::from_secs(120), || {
        (setup.metric("weir_spool_sink_lag_bytes", &[("sink", "loki")]) == 0.0).then_some(())
    });
    std::thread::sleep(Duration::from_secs(1));
    weir.assert_alive();
    let (sent, acked) = merge(&logs);
    let entries = loki.receiver.entries();
    let delivered = loki.ids();
    let books = Books::count(&sent, &acked, &delivered, &loki);
    books.print("disk_full");
    println!("disk_full: dropped {dropped} (drop_oldest, counted), longest ack wait {max_wait:?}");
    assert_eq!(
        books.acked, books.sent,
        "weir stopped acknowledging: {books:?}"
    );
    assert!(dropped > 0.0, "8 MiB cannot hold {} KiB", books.sent);
    assert!(
        books.lost as f64 <= dropped,
        "{} acknowledged events lost but only {dropped} drops counted",
        books.lost
    );
    for log in &logs {
        let last = log.acked.last().unwrap();
        assert!(delivered.contains(last), "newest event {last} dropped");
    }
    let expected: HashMap<&str, String> = sent
        .iter()
        .map(|id| (id.as_str(), padded(id, LINE)))
        .collect();
    for e in &entries {
        let id = e.line.split(' ').next().unwrap();
        assert_eq!(
            expected.get(id),
            Some(&e.line),
            "corrupt or unknown line delivered"
        );
    }
}
