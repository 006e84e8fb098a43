//! kill -9 under load: every acknowledged event reaches Loki; redeliveries
//! (events delivered but whose sink cursor was not yet stored at the kill)
//! are counted and bounded.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::{merge, scale, spawn_clients, Books, Loki, Setup};
use crate::loki_receiver::Limits;

#[test]
fn e2e_kill_9_under_load_loses_no_acknowledged_event() {
    let kills = scale(5, 20);
    let loki = Loki::start(Limits::default());
    let setup = Setup::new(None, &loki.receiver.url(), false, "", "", "");
    let mut weir = setup.start();
    let stop = Arc::new(AtomicBool::new(false));
    let clients = spawn_clients(4, &setup.socket, "k9c", 150, None, &stop);
    for _ in 0..kills {
        std::thread::sleep(Duration::from_secs(2));
        weir.kill9();
        // Restarted on the same state_dir and socket, as systemd would.
        weir = setup.start();
    }
    std::thread::sleep(Duration::from_secs(2));
    stop.store(true, Ordering::Relaxed);
    let logs: Vec<_> = clients.into_iter().map(|c| c.join().unwrap()).collect();
    let (sent, acked) = merge(&logs);
    let delivered = loki.wait_ids(&acked, Duration::from_secs(120));
    weir.assert_alive();
    let books = Books::count(&sent, &acked, &delivered, &loki);
    books.print("kill9");
    assert!(
        books.acked > kills * 10,
        "too little load to prove anything: {books:?}"
    );
    assert_eq!(
        books.lost, 0,
        "acknowledged events lost after kill -9: {books:?}"
    );
    // Redelivered at most: what was delivered in the cursor-store window
    // (200 ms) before each kill, plus the push in flight; with a kill every
    // 2 s that is far below a tenth of the traffic.
    assert!(
        books.duplicated * 10 <= books.sent as u64,
        "too many duplicates after kill -9: {books:?}"
    );
    // Nothing the clients never sent appears (no corruption into new lines).
    assert!(delivered.is_subset(&sent), "unknown ids delivered");
}
