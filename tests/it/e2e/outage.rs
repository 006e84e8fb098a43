//! Loki down under load, then back: nothing lost, the spool drains, and
//! weir's own log stays bounded however long the outage.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::{merge, scale, spawn_clients, Books, Loki, Setup};
use crate::common::wait_for;
use crate::loki_receiver::Limits;

/// Most bytes weir may write to stderr over the whole scenario: retries are
/// logged rate-limited per call site, so an outage of minutes costs a few
/// lines, not one per retry.
const LOG_BUDGET: usize = 8 * 1024;

#[test]
fn e2e_loki_down_under_load_then_back_loses_nothing_and_drains() {
    let outage = Duration::from_secs(scale(10, 180));
    let loki = Loki::start(Limits::default());
    let setup = Setup::new(None, &loki.receiver.url(), true, "", "", "");
    let mut weir = setup.start();
    let stop = Arc::new(AtomicBool::new(false));
    let clients = spawn_clients(4, &setup.socket, "outc", 150, None, &stop);
    std::thread::sleep(Duration::from_secs(1));
    loki.down();
    std::thread::sleep(outage);
    let lag = setup.metric("weir_spool_sink_lag_bytes", &[("sink", "loki")]);
    assert!(lag > 0.0, "nothing held in the spool during the outage");
    loki.up();
    std::thread::sleep(Duration::from_secs(1));
    stop.store(true, Ordering::Relaxed);
    let logs: Vec<_> = clients.into_iter().map(|c| c.join().unwrap()).collect();
    let (sent, acked) = merge(&logs);
    let delivered = loki.wait_ids(&acked, Duration::from_secs(180));
    wait_for("the spool to drain", Duration::from_secs(60), || {
        (setup.metric("weir_spool_sink_lag_bytes", &[("sink", "loki")]) == 0.0).then_some(())
    });
    weir.assert_alive();
    let books = Books::count(&sent, &acked, &delivered, &loki);
    books.print("loki_outage");
    let log = setup.log();
    println!(
        "loki_outage: spool lag during the outage {lag} bytes, weir log {} bytes",
        log.len()
    );
    assert_eq!(books.lost, 0, "{books:?}");
    assert_eq!(books.acked, books.sent, "a client was refused: {books:?}");
    assert!(books.duplicated <= books.sent as u64, "{books:?}");
    assert!(
        log.len() <= LOG_BUDGET,
        "weir's log grew to {} bytes during the outage:\n{log}",
        log.len()
    );
}
