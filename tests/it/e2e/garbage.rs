//! Garbage at full speed from one client while ten others send valid data:
//! every valid acknowledged event arrives, the garbage is counted.

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::{merge, scale, spawn_clients, Books, Loki, Setup};
use crate::loki_receiver::Limits;

#[test]
fn e2e_garbage_flood_does_not_cost_valid_clients_anything() {
    let per_client = scale(200, 3000);
    let loki = Loki::start(Limits::default());
    let setup = Setup::new(None, &loki.receiver.url(), true, "", "", "");
    let mut weir = setup.start();
    let stop = Arc::new(AtomicBool::new(false));
    let garbage_bytes = Arc::new(AtomicU64::new(0));
    let flood = {
        let (socket, stop, counter) = (setup.socket.clone(), stop.clone(), garbage_bytes.clone());
        std::thread::spawn(move || {
            let mut x = 0x9e37_79b9_7f4a_7c15u64;
            let mut buf = vec![0u8; 64 * 1024];
            while !stop.load(Ordering::Relaxed) {
                let Ok(mut s) = UnixStream::connect(&socket) else {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                };
                // Until weir closes the connection (it must, on garbage).
                while !stop.load(Ordering::Relaxed) {
                    for b in buf.iter_mut() {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        *b = x as u8;
                    }
                    if s.write_all(&buf).is_err() {
                        break;
                    }
                    counter.fetch_add(buf.len() as u64, Ordering::Relaxed);
                }
            }
        })
    };
    let clients = spawn_clients(10, &setup.socket, "okc", 150, Some(per_client), &stop);
    let logs: Vec<_> = clients.into_iter().map(|c| c.join().unwrap()).collect();
    stop.store(true, Ordering::Relaxed);
    flood.join().unwrap();
    let (sent, acked) = merge(&logs);
    let delivered = loki.wait_ids(&acked, Duration::from_secs(120));
    weir.assert_alive();
    let errors = setup.metric("weir_source_decode_errors_total", &[("source", "fwd")]);
    let books = Books::count(&sent, &acked, &delivered, &loki);
    books.print("garbage");
    println!(
        "garbage: {} garbage bytes written, {errors} decode errors counted",
        garbage_bytes.load(Ordering::Relaxed)
    );
    assert_eq!(books.sent, 10 * per_client as usize);
    assert_eq!(
        books.acked, books.sent,
        "a valid client was not acknowledged: {books:?}"
    );
    assert_eq!(books.lost, 0, "{books:?}");
    assert_eq!(books.delivered, books.sent, "{books:?}");
    assert!(errors >= 1.0, "garbage not counted as decode errors");
}
