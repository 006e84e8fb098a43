//! GELF sink throughput on loopback: `cargo bench --bench gelf`.
//!
//! Runs the real sink loop (`weir::sink::gelf::run`) over a spool holding
//! N typical Docker access-log events and measures messages/s until the
//! sink has acknowledged all of them, for UDP (gzip and uncompressed) and
//! TCP. A receiver thread in the bench counts what arrives: datagrams for
//! UDP (where the kernel may drop under load: the count shows how many),
//! null-terminated frames for TCP (where nothing may be lost). The encoder
//! alone (no network) is measured too, as the ceiling.

mod common;
use common::machine;

use std::io::Read;
use std::net::{TcpListener, UdpSocket};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use weir::event::{Event, Origin};
use weir::metrics;
use weir::problems::Problems;
use weir::sink::gelf;
use weir::spool::{self, Spool};

const EVENTS: usize = 200_000;

fn events() -> Vec<Event> {
    (0..EVENTS)
        .map(|i| {
            let msg = format!(
                "192.0.2.{} - - [22/Nov/2026:00:00:{:02} +0000] \"GET /api/v1/items/{i} HTTP/1.1\" 200 {} \"-\" \"Mozilla/5.0 (X11; Linux x86_64)\"",
                i % 250,
                i % 60,
                i % 9000
            );
            let mut e = Event::new(1_763_769_600_000_000_000 + i as i64 * 1000, Origin::Docker, msg);
            e.labels.host = Some("web-1".into());
            e.labels.app = Some("shop".into());
            e.labels.service = Some("frontend".into());
            e.labels.container_name = Some("shop-frontend-1".into());
            for (k, v) in [
                ("container_id", "4f2a9c0e1b7d3c5a8e6f0a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d6e7f8a9b0c1d"),
                ("container_name", "/shop-frontend-1"),
                ("source", "stdout"),
                ("tag", "docker.4f2a9c0e1b7d"),
            ] {
                e.fields.push((k.into(), v.into()));
            }
            e
        })
        .collect()
}

fn config(toml_text: &str) -> gelf::Config {
    let raw: gelf::RawConfig = toml::from_str(toml_text).unwrap();
    let mut problems = Problems::default();
    let c = raw.validate("sinks.bench", &mut problems);
    assert!(problems.is_empty(), "{problems:?}");
    c
}

/// Runs the sink over a spool pre-filled with `events`; returns the seconds
/// until it acknowledged all of them.
fn run_sink(
    rt: &tokio::runtime::Runtime,
    name: &str,
    config: gelf::Config,
    events: &[Event],
) -> f64 {
    rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let mut problems = Problems::default();
        let sc = spool::RawConfig::default().validate("spool", &mut problems);
        let spool = Spool::open(dir.path(), &sc, &[name.to_owned()]).unwrap();
        for chunk in events.chunks(1000) {
            spool.append(chunk, None).await.unwrap();
        }
        let reader = spool.reader(name).unwrap();
        let stop = CancellationToken::new();
        let start = Instant::now();
        let task = tokio::spawn(gelf::run(name.to_owned(), config, reader, stop.clone()));
        let sent =
            || metrics::value("weir_sink_events_sent_total", &[("sink", name)]).unwrap_or(0.0);
        while sent() < events.len() as f64 {
            tokio::time::sleep(Duration::from_millis(2)).await;
            assert!(
                start.elapsed() < Duration::from_secs(300),
                "sink stalled at {}",
                sent()
            );
        }
        let secs = start.elapsed().as_secs_f64();
        stop.cancel();
        task.await.unwrap();
        secs
    })
}

fn udp_receiver() -> (String, Arc<AtomicU64>) {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = sock.local_addr().unwrap().to_string();
    let count = Arc::new(AtomicU64::new(0));
    let c = count.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 65536];
        while sock.recv(&mut buf).is_ok() {
            c.fetch_add(1, Ordering::Relaxed);
        }
    });
    (addr, count)
}

fn tcp_receiver() -> (String, Arc<AtomicU64>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let count = Arc::new(AtomicU64::new(0));
    let c = count.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            let mut buf = vec![0u8; 1 << 16];
            while let Ok(n) = conn.read(&mut buf) {
                if n == 0 {
                    break;
                }
                let frames = buf[..n].iter().filter(|b| **b == 0).count();
                c.fetch_add(frames as u64, Ordering::Relaxed);
            }
        }
    });
    (addr, count)
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else to parse.
    let events = events();
    let avg: usize = events.iter().map(|e| e.message.len()).sum::<usize>() / events.len();
    println!("GELF sink benchmark: {EVENTS} Docker events, messages of {avg} bytes on average");
    println!("machine: {}", machine());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();

    for (label, comp) in [("gzip", "gzip"), ("none", "none")] {
        let cfg = config(&format!(
            "address = \"udp://127.0.0.1:9\"\ncompression = \"{comp}\""
        ));
        let mut enc = gelf::Encoder::new(&cfg, "bench");
        let mut frames = gelf::Frames::default();
        let start = Instant::now();
        let mut bytes = 0;
        for batch in events.chunks(2000) {
            enc.encode_batch(batch, &mut frames);
            bytes += frames.bytes().len();
        }
        let secs = start.elapsed().as_secs_f64();
        println!(
            "encode only, {label:<4}: {:>9.0} messages/s, {:.0} bytes/message on the wire",
            EVENTS as f64 / secs,
            bytes as f64 / EVENTS as f64
        );
    }

    for comp in ["gzip", "none"] {
        let (addr, received) = udp_receiver();
        let name = format!("bench-udp-{comp}");
        let secs = run_sink(
            &rt,
            &name,
            config(&format!(
                "address = \"udp://{addr}\"\ncompression = \"{comp}\""
            )),
            &events,
        );
        std::thread::sleep(Duration::from_millis(200));
        let got = received.load(Ordering::Relaxed);
        println!(
            "UDP {comp:<4}  : {:>9.0} messages/s sent ({secs:.2} s); receiver got {got} ({:.1}% lost in the kernel)",
            EVENTS as f64 / secs,
            100.0 * (EVENTS as f64 - got as f64) / EVENTS as f64
        );
    }

    let (addr, received) = tcp_receiver();
    let secs = run_sink(
        &rt,
        "bench-tcp",
        config(&format!("address = \"tcp://{addr}\"")),
        &events,
    );
    let start = Instant::now();
    while received.load(Ordering::Relaxed) < EVENTS as u64
        && start.elapsed() < Duration::from_secs(10)
    {
        std::thread::sleep(Duration::from_millis(1));
    }
    let got = received.load(Ordering::Relaxed);
    assert_eq!(got, EVENTS as u64, "TCP lost frames");
    println!(
        "TCP        : {:>9.0} messages/s ({secs:.2} s, written, flushed and acknowledged); receiver got all {got}",
        EVENTS as f64 / secs
    );
}
