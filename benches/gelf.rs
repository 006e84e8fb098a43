//! GELF sink throughput on loopback: `cargo bench --bench gelf`.
//!
//! Runs the real sink loop (`weir::sink::gelf::run`) over a spool holding
//! typical Docker access-log events and measures, per transport, messages/s
//! until the sink has acknowledged all of them and the sink's CPU seconds
//! per million messages (CPU time of every thread of the process except
//! the receiver's, from `/proc/self/task/*/schedstat`). Transports: UDP
//! paced at the default `max_rate` and unpaced (gzip and plain), TCP, and
//! HTTP (one message per request, and bulk). A receiver thread counts what
//! arrives: datagrams for UDP (where the kernel may drop: the count shows
//! how many), null-terminated frames for TCP, messages of 202-answered
//! requests for HTTP (where nothing may be lost). The encoder alone (no
//! network) is measured too, as the ceiling.

mod common;
use common::machine;

use std::io::Read;
use std::net::{TcpListener, UdpSocket};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use weir::event::{Event, Origin};
use weir::problems::Problems;
use weir::sink::gelf;
use weir::spool::{self, Spool};

const EVENTS: usize = 200_000;
/// Events for the slow cases (paced UDP, one HTTP request per message).
const FEW_EVENTS: usize = 10_000;

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

/// Nanoseconds on CPU of this process's threads, but those in `exclude`.
fn cpu_ns(exclude: &[String]) -> u64 {
    let mut total = 0;
    for task in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        let tid = task.file_name().to_string_lossy().into_owned();
        if exclude.contains(&tid) {
            continue;
        }
        let stat = std::fs::read_to_string(task.path().join("schedstat")).unwrap_or_default();
        total += stat
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
    }
    total
}

/// The calling thread's id, as named in `/proc/self/task`.
fn my_tid() -> String {
    let link = std::fs::read_link("/proc/thread-self").unwrap();
    link.file_name().unwrap().to_string_lossy().into_owned()
}

/// Runs the sink over a spool pre-filled with `events`; returns the seconds
/// until it acknowledged all of them and the CPU seconds the process spent
/// meanwhile outside the `receiver` thread.
fn run_sink(
    rt: &tokio::runtime::Runtime,
    name: &str,
    config: gelf::Config,
    events: &[Event],
    receiver: &str,
) -> (f64, f64) {
    let exclude = [receiver.to_owned()];
    rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let mut problems = Problems::default();
        let sc = // Fixed 2023-2025 timestamps: keep them whatever spool.max_age says.
        toml::from_str::<spool::RawConfig>("max_age = \"0s\"")
            .unwrap()
            .validate("spool", &mut problems);
        let spool = Spool::open(dir.path(), &sc, &[name.to_owned()]).unwrap();
        for chunk in events.chunks(1000) {
            spool.append(chunk, None).await.unwrap();
        }
        let reader = spool.reader(name).unwrap();
        let stop = CancellationToken::new();
        let cpu0 = cpu_ns(&exclude);
        let start = Instant::now();
        let task = tokio::spawn(gelf::run(name.to_owned(), config, reader, stop.clone()));
        let sent = || {
            spool
                .metrics()
                .value("weir_sink_events_sent_total", &[("sink", name)])
                .unwrap_or(0.0)
        };
        while sent() < events.len() as f64 {
            // Polled every 10 ms: often enough for the timing (under 1% of the
            // shortest run), rarely enough not to count as the sink's CPU.
            tokio::time::sleep(Duration::from_millis(10)).await;
            assert!(
                start.elapsed() < Duration::from_secs(300),
                "sink stalled at {}",
                sent()
            );
        }
        let secs = start.elapsed().as_secs_f64();
        let cpu = (cpu_ns(&exclude) - cpu0) as f64 / 1e9;
        stop.cancel();
        task.await.unwrap();
        (secs, cpu)
    })
}

/// Counts datagrams; returns its address, the count and its thread id.
fn udp_receiver() -> (String, Arc<AtomicU64>, String) {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = sock.local_addr().unwrap().to_string();
    let count = Arc::new(AtomicU64::new(0));
    let c = count.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        tx.send(my_tid()).unwrap();
        let mut buf = [0u8; 65536];
        while sock.recv(&mut buf).is_ok() {
            c.fetch_add(1, Ordering::Relaxed);
        }
    });
    (addr, count, rx.recv().unwrap())
}

/// Counts null-terminated frames.
fn tcp_receiver() -> (String, Arc<AtomicU64>, String) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let count = Arc::new(AtomicU64::new(0));
    let c = count.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        tx.send(my_tid()).unwrap();
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
    (addr, count, rx.recv().unwrap())
}

/// A GELF HTTP input (hyper, on its own single-threaded runtime): inflates
/// each gzip body, counts its messages (lines), answers 202.
fn http_receiver() -> (String, Arc<AtomicU64>, String) {
    use http_body_util::BodyExt;
    let std_listener = TcpListener::bind("127.0.0.1:0").unwrap();
    std_listener.set_nonblocking(true).unwrap();
    let addr = std_listener.local_addr().unwrap().to_string();
    let count = Arc::new(AtomicU64::new(0));
    let c = count.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        tx.send(my_tid()).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(std_listener).unwrap();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let c = c.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(
                        move |req: hyper::Request<hyper::body::Incoming>| {
                            let c = c.clone();
                            async move {
                                let raw = req.into_body().collect().await?.to_bytes();
                                let mut body = Vec::new();
                                flate2::read::GzDecoder::new(&raw[..])
                                    .read_to_end(&mut body)
                                    .unwrap();
                                let lines = body.split(|b| *b == b'\n').count();
                                c.fetch_add(lines as u64, Ordering::Relaxed);
                                let mut r = hyper::Response::new(http_body_util::Full::new(
                                    bytes::Bytes::new(),
                                ));
                                *r.status_mut() = hyper::StatusCode::ACCEPTED;
                                Ok::<_, hyper::Error>(r)
                            }
                        },
                    );
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
    });
    (format!("http://{addr}/gelf"), count, rx.recv().unwrap())
}

fn report(label: &str, n: usize, secs: f64, cpu: f64, note: &str) {
    println!(
        "{label:<24}: {:>9.0} messages/s, {:>6.2} CPU s per million messages ({n} in {secs:.2} s); {note}",
        n as f64 / secs,
        cpu / n as f64 * 1e6,
    );
}

/// Waits (up to 10 s) for a receiver to count `n`.
fn settle(received: &AtomicU64, n: usize) -> u64 {
    let start = Instant::now();
    while received.load(Ordering::Relaxed) < n as u64 && start.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(1));
    }
    std::thread::sleep(Duration::from_millis(100));
    received.load(Ordering::Relaxed)
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else to parse.
    let events = events();
    let few = &events[..FEW_EVENTS];
    let avg: usize = events.iter().map(|e| e.message.len()).sum::<usize>() / events.len();
    println!("GELF sink benchmark: Docker events, messages of {avg} bytes on average");
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
            "encode only, {label:<4}     : {:>9.0} messages/s, {:.0} bytes/message on the wire",
            EVENTS as f64 / secs,
            bytes as f64 / EVENTS as f64
        );
    }

    // UDP: paced at the default max_rate, then unpaced.
    let d = gelf::DEFAULT_MAX_RATE;
    let udp_cases = [
        ("UDP gzip, paced", "", few),
        (
            "UDP gzip, unpaced",
            "max_rate = { messages = 0, bytes = 0 }",
            &events[..],
        ),
        (
            "UDP none, unpaced",
            "compression = \"none\"\nmax_rate = { messages = 0, bytes = 0 }",
            &events[..],
        ),
    ];
    for (i, (label, extra, evs)) in udp_cases.into_iter().enumerate() {
        let (addr, received, tid) = udp_receiver();
        let name = format!("bench-udp-{i}");
        let cfg = config(&format!("address = \"udp://{addr}\"\n{extra}"));
        let (secs, cpu) = run_sink(&rt, &name, cfg, evs, &tid);
        let got = settle(&received, evs.len());
        let paced = if extra.is_empty() {
            format!(
                " (default max_rate: {} messages/s, {} B/s)",
                d.messages, d.bytes.0
            )
        } else {
            String::new()
        };
        report(
            label,
            evs.len(),
            secs,
            cpu,
            &format!(
                "receiver got {got} ({:.1}% lost in the kernel){paced}",
                100.0 * (evs.len() as f64 - got as f64) / evs.len() as f64
            ),
        );
    }

    let (addr, received, tid) = tcp_receiver();
    let (secs, cpu) = run_sink(
        &rt,
        "bench-tcp",
        config(&format!("address = \"tcp://{addr}\"")),
        &events,
        &tid,
    );
    let got = settle(&received, EVENTS);
    assert_eq!(got, EVENTS as u64, "TCP lost frames");
    report(
        "TCP",
        EVENTS,
        secs,
        cpu,
        "written and flushed; receiver got all",
    );

    for (label, extra, evs) in [
        ("HTTP gzip, 1 per request", "", few),
        ("HTTP gzip, bulk", "bulk = true", &events[..]),
    ] {
        let (url, received, tid) = http_receiver();
        let name = format!("bench-http-{}", extra.is_empty());
        let (secs, cpu) = run_sink(
            &rt,
            &name,
            config(&format!("address = \"{url}\"\n{extra}")),
            evs,
            &tid,
        );
        let got = settle(&received, evs.len());
        assert_eq!(got, evs.len() as u64, "HTTP lost messages");
        report(
            label,
            evs.len(),
            secs,
            cpu,
            "202-acknowledged; receiver got all",
        );
    }
}
