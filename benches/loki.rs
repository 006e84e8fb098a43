//! Loki sink throughput: a full spool drained to the test receiver.
//!
//! Run: `cargo bench --bench loki` (optionally `-- EVENTS`, default 500000).
//!
//! For each encoding, the spool is filled first, then the sink is started on
//! a single-threaded runtime of its own (the main thread) and timed until the
//! receiver has accepted every event. The receiver (decoding and validating
//! as Loki does, without storing) runs on another thread, so the sink's CPU
//! time is that of the main thread alone (`/proc/thread-self/stat`).

mod common;
use common::machine;

#[path = "../tests/it/loki_receiver.rs"]
mod loki_receiver;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio_util::sync::CancellationToken;
use weir::event::{Event, Level, Origin};
use weir::problems::Problems;
use weir::sink::loki;
use weir::spool::{self, Spool};

use loki_receiver::{Limits, Receiver};

/// CPU seconds (user + system) of the calling thread.
fn thread_cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").expect("Linux /proc");
    // Fields after the command name (which is in parentheses): utime is the
    // 14th field overall, stime the 15th, both in USER_HZ (100 on Linux).
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split(' ').collect();
    let ticks: u64 = f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
    ticks as f64 / 100.0
}

fn events(n: usize) -> Vec<Event> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i64;
    (0..n)
        .map(|i| {
            let mut e = Event::new(
                now - (n - i) as i64 * 1000,
                Origin::Docker,
                format!(
                    "10.1.{}.{} - - \"GET /api/v1/items/{i}?page={} HTTP/1.1\" 200 {} \"-\" \"Mozilla/5.0\" rt=0.0{}",
                    i % 250,
                    i % 199,
                    i % 17,
                    1000 + i % 9000,
                    i % 97
                ),
            );
            e.labels.host = Some("web-1".into());
            e.labels.app = Some("shop".into());
            e.labels.service = Some(["api", "web", "worker", "db"][i % 4].into());
            e.labels.container_name = Some(format!("shop-{}-1", ["api", "web", "worker", "db"][i % 4]));
            e.labels.level = Some(if i % 10 == 0 { Level::Error } else { Level::Info });
            e.fields.push(("container_id".into(), "4f2a9c1b7e3d".into()));
            e
        })
        .collect()
}

fn run_one(label: &str, extra: &str, all: &[Event]) {
    // Receiver: its own thread and runtime.
    let (tx, rx) = std::sync::mpsc::channel();
    let stop_receiver = CancellationToken::new();
    let stop_r = stop_receiver.clone();
    let receiver_thread = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let limits = Limits {
                keep_entries: false,
                ..Limits::default()
            };
            let r = std::sync::Arc::new(Receiver::start_with(limits, None).await);
            tx.send(r.clone()).unwrap();
            stop_r.cancelled().await;
        });
    });
    let receiver = rx.recv().unwrap();

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let name = format!("bench_{label}");
    let (wall, cpu, sent_bytes) = rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let mut problems = Problems::default();
        let spool_config = spool::RawConfig::default().validate("spool", &mut problems);
        let spool = Spool::open(dir.path(), &spool_config, std::slice::from_ref(&name)).unwrap();
        for chunk in all.chunks(1000) {
            spool.append(chunk, None).await.unwrap();
        }
        let raw: loki::RawConfig =
            toml::from_str(&format!("url = \"{}\"\n{extra}", receiver.url())).unwrap();
        let config = raw.validate("sinks.bench", &mut problems);
        assert!(problems.is_empty(), "{problems:?}");
        let stop = CancellationToken::new();
        let reader = spool.reader(&name).unwrap();
        let cpu0 = thread_cpu_seconds();
        let start = Instant::now();
        let task = tokio::spawn(loki::run(name.clone(), config, reader, stop.clone()));
        while receiver.stats().accepted < all.len() as u64 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let wall = start.elapsed().as_secs_f64();
        let cpu = thread_cpu_seconds() - cpu0;
        stop.cancel();
        task.await.unwrap();
        let sent = spool
            .metrics()
            .value("weir_sink_bytes_sent_total", &[("sink", &name)])
            .unwrap();
        (wall, cpu, sent)
    });
    stop_receiver.cancel();
    receiver_thread.join().unwrap();

    let n = all.len() as f64;
    let message_bytes: usize = all.iter().map(|e| e.message.len()).sum();
    let stats = receiver.stats();
    println!(
        "{label:<14} {:>10.0} events/s  {:>7.1} MB/s of messages  {:>7.1} MB/s on the wire  {:>6.2} CPU s per million events  ({} pushes, largest decoded {} B)",
        n / wall,
        message_bytes as f64 / wall / 1e6,
        sent_bytes / wall / 1e6,
        cpu / n * 1e6,
        stats.requests,
        stats.max_decoded_bytes,
    );
}

fn main() {
    let n: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(500_000);
    println!("loki sink benchmark: {n} events from a full spool to the test receiver over HTTP on 127.0.0.1");
    println!("machine: {}", machine());
    println!("defaults otherwise: batch_max_bytes 1MiB, max_push_bytes 4000000, all labels, logfmt lines");
    let all = events(n);
    run_one("protobuf", "", &all);
    run_one("json", "encoding = \"json\"", &all);
    run_one(
        "json+gzip",
        "encoding = \"json\"\ncompression = \"gzip\"",
        &all,
    );
}
