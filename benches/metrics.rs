//! What metrics cost: the hot-path counter add (alone and contended), the
//! registry encode at a realistic and a large series count, and a whole
//! scrape over the endpoint (hyper on a unix socket, encode included), of
//! `/metrics` and of `/status`.
//!
//! Run: `cargo bench --bench metrics`. Prints the machine first.

mod common;
use common::machine;

use std::hint::black_box;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use weir::metrics::{http, labels, Health, Metrics};

/// Runs `f` `iters` times and returns the mean time per call.
fn per_call(iters: u64, mut f: impl FnMut()) -> Duration {
    let start = Instant::now();
    for _ in 0..iters {
        f();
    }
    start.elapsed() / iters as u32
}

fn registry_with(series: usize) -> Metrics {
    let r = Metrics::new();
    for i in 0..series {
        let sink = format!("sink{}", i % 8);
        let reason = format!("reason{}", i / 8);
        r.sink_errors
            .with(labels::SinkReason::new(&sink, &reason))
            .add(i as u64 * 1000);
    }
    r
}

fn main() {
    println!("machine: {}", machine());

    let metrics = Metrics::new();
    let c = metrics.sink_events_sent.with(labels::sink("a"));
    let t = per_call(50_000_000, || c.add(black_box(1)));
    println!(
        "counter add, 1 thread:        {:>8.2} ns/op",
        t.as_nanos() as f64
    );

    let threads = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .max(2);
    let iters = 10_000_000u64;
    let start = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..threads {
            let c = c.clone();
            s.spawn(move || {
                for _ in 0..iters {
                    c.add(black_box(1));
                }
            });
        }
    });
    let ns = start.elapsed().as_nanos() as f64 / (iters * threads as u64) as f64;
    println!("counter add, {threads} threads, same counter: {ns:>8.2} ns/op (wall time per add)");

    for series in [100, 1_000, 10_000] {
        let r = registry_with(series);
        let bytes = r.encode().len();
        let iters = (200_000 / series as u64).max(10);
        let t = per_call(iters, || {
            black_box(r.encode());
        });
        println!(
            "encode {series:>6} series:         {:>8.1} µs ({bytes} bytes)",
            t.as_secs_f64() * 1e6
        );
    }

    // A whole scrape of a pipeline's registry over the endpoint.
    let dir = tempfile::tempdir().unwrap();
    let listen = format!("unix://{}/m.sock", dir.path().display());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let stop = CancellationToken::new();
    let listener = rt.block_on(http::bind(&listen)).unwrap();
    let address = listener.local_address();
    let _server = {
        let _in = rt.enter();
        http::serve(
            listener,
            metrics.clone(),
            Health::new(stop.clone()),
            stop.clone(),
        )
    };
    for path in ["/metrics", "/status"] {
        let mut latencies: Vec<Duration> = (0..2_000)
            .map(|_| {
                let start = Instant::now();
                let r = http::get(&address, path, Duration::from_secs(5)).unwrap();
                assert_eq!(r.status, 200);
                start.elapsed()
            })
            .collect();
        latencies.sort();
        let p = |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize].as_secs_f64() * 1e6;
        println!(
            "scrape {path} over unix socket ({} families): p50 {:.0} µs, p99 {:.0} µs",
            metrics.encode().matches("# TYPE").count(),
            p(0.5),
            p(0.99)
        );
    }
    stop.cancel();
}
