//! A failing fdatasync under load: weir's state_dir on a thin-provisioned
//! disk (see `thin_disk`) that runs out of space underneath ext4 while Loki
//! is down and clients write, then gets room again once weir stopped.
//!
//! The books this scenario asserts:
//! - weir stops by itself, with a failure exit status (systemd's
//!   `Restart=on-failure` restarts it) and a log line saying why, rather
//!   than retrying the fdatasync and believing it;
//! - restarted on what the disk really holds, with Loki back, every
//!   acknowledged event is delivered: lost 0.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::{merge, spawn_clients, Books, Loki, Setup};
use crate::common::wait_for;
use crate::loki_receiver::Limits;
use crate::thin_disk::ThinDisk;

const LINE: usize = 1024;

#[test]
fn e2e_failed_fdatasync_stops_weir_and_a_restart_loses_nothing_acknowledged() {
    let mut disk = ThinDisk::new("12m", "256m");
    let loki = Loki::start(Limits::default());
    // Down: the spool keeps everything, so the disk fills.
    loki.down();
    let setup = Setup::new(
        Some(disk.mnt.join("state")),
        &loki.receiver.url(),
        true,
        "segment_bytes = \"4MiB\"",
        "",
        "",
    );
    let mut weir = setup.start();
    let stop = Arc::new(AtomicBool::new(false));
    let clients = spawn_clients(4, &setup.socket, "thin", LINE, None, &stop);
    let start = std::time::Instant::now();
    let status = loop {
        if let Some(status) = weir.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            start.elapsed() < Duration::from_secs(300),
            "weir did not stop in 300 s; backing store free: {} B; its log:\n{}",
            disk.backing_free(),
            setup.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let log = setup.log();
    for line in log.lines().filter(|l| l.contains("ERROR")).take(5) {
        println!("thin_disk, weir said: {line}");
    }
    assert!(!status.success(), "weir must exit with a failure: {status}");
    assert!(
        log.contains("spool fdatasync failed") && log.contains("stopped because the spool failed"),
        "weir's log says why it stopped:\n{log}"
    );
    // Room again, what the disk really holds, and weir again on it (the
    // clients reconnect).
    disk.grow();
    disk.remount();
    let mut weir = setup.start();
    loki.up();
    wait_for("the spool to drain", Duration::from_secs(120), || {
        (setup.metric("weir_spool_sink_lag_bytes", &[("sink", "loki")]) == 0.0).then_some(())
    });
    stop.store(true, Ordering::Relaxed);
    let logs: Vec<_> = clients.into_iter().map(|c| c.join().unwrap()).collect();
    let (sent, acked) = merge(&logs);
    let delivered = loki.wait_ids(&acked, Duration::from_secs(30));
    weir.assert_alive();
    let books = Books::count(&sent, &acked, &delivered, &loki);
    books.print("thin_disk");
    assert!(
        books.acked > 1000,
        "clients were acknowledged before the disk filled: {books:?}"
    );
    assert_eq!(books.lost, 0, "acknowledged events lost: {books:?}");
}
