//! Forward source throughput: events/s and MB/s accepted into the spool over
//! the unix socket, CPU seconds per million events and peak RSS of the
//! receiving process.
//!
//! ```text
//! cargo bench --bench forward            # every scenario
//! cargo bench --bench forward -- Packed  # those whose name contains "Packed"
//! ```
//!
//! The receiver runs in a child process (this binary re-executed with
//! `WEIR_BENCH_SERVER=DIR`): the forward source, `Ingest` and the spool with
//! its default config and no sinks, so nothing but receiving, decoding,
//! mapping and spooling is measured, and `/proc/PID` gives its own CPU time
//! and peak RSS. A fresh child serves each scenario. The load generator
//! (threads with blocking sockets, in this process) shares the machine's
//! cores with it. A scenario ends when the last frame of every connection,
//! which asks for an ack, is acknowledged: the ack comes only after
//! everything before it on that connection was appended and made durable.
//!
//! Scenarios:
//! - Docker-shaped: Message mode, one event per write, EventTime, a 139-byte
//!   line plus Docker's keys (`container_id`, `container_name`, `source`,
//!   `log`), from 1 and from 50 connections, one container per connection.
//! - PackedForward: 1000 events per frame (what Fluent Bit/Fluentd forward).
//!
//! Targets (issue 4, 2 cores, scrubbing off, spool defaults): >= 300k
//! events/s from 50 Docker-shaped connections, >= 1.5M events/s
//! PackedForward, <= 3 CPU s per million Docker-shaped events, RSS <= 64 MiB.

mod common;
use common::machine;

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Turns scrubbing off in the receiver's config, as the targets ask (an
/// empty `[scrub]` section would mean the private defaults: scrubbing on).
const SCRUB_OFF: &str = "ipv4 = \"keep\"\nipv6 = \"keep\"\nlogins = \"keep\"\n";

fn main() {
    if let Ok(dir) = std::env::var("WEIR_BENCH_SERVER") {
        server(Path::new(&dir));
        return;
    }
    println!("forward source benchmark");
    // Absolute figures mean little on a busy machine: say how busy it was.
    println!("machine: {}", machine());
    println!("receiver: forward source (unix socket) -> Ingest (scrubbing off) -> durable spool (defaults, temp dir), acks after fsync");
    println!();
    println!(
        "{:<34} {:>10} {:>12} {:>8} {:>12} {:>10}",
        "scenario", "events", "events/s", "MB/s", "CPU s/M ev", "peak RSS"
    );
    // `cargo bench` passes `--bench`; any other argument picks scenarios.
    let filter = std::env::args().skip(1).find(|a| !a.starts_with("--"));
    let run = |name: &str, frames: &[Vec<u8>], frames_per_conn, events_per_frame| {
        if filter.as_deref().is_none_or(|f| name.contains(f)) {
            run(name, frames, frames_per_conn, events_per_frame);
        }
    };
    // One container per connection, as Docker connects.
    let docker = |n: usize| (0..n).map(docker_frame).collect::<Vec<_>>();
    run("docker-shaped, 1 connection", &docker(1), 300_000, 1);
    run("docker-shaped, 50 connections", &docker(50), 12_000, 1);
    let packed = |n: usize| (0..n).map(|c| packed_frame(c, 1000)).collect::<Vec<_>>();
    run("PackedForward x1000, 1 connection", &packed(1), 1_000, 1000);
    run("PackedForward x1000, 4 connections", &packed(4), 300, 1000);
    println!();
    println!("machine at end: {}", machine());
}

/// Receiver: the forward source in front of a spool with no sinks.
fn server(dir: &Path) {
    let text = std::fs::read_to_string(dir.join("weir.toml")).unwrap();
    let config = weir::config::parse(&text, "bench").unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let spool =
            weir::spool::Spool::open(&config.state_dir.join("spool"), &config.spool, &[]).unwrap();
        let scrubber = std::sync::Arc::new(
            weir::scrub::Scrubber::new(&config.scrub, &config.state_dir).unwrap(),
        );
        let ingest = weir::ingest::Ingest::new(spool, scrubber, &config.hostname);
        let stop = tokio_util::sync::CancellationToken::new();
        let (name, source) = config.sources.iter().next().unwrap();
        let task = weir::source::start(name, source, ingest, stop.clone())
            .await
            .unwrap();
        println!("ready");
        // Runs until the parent closes our stdin.
        tokio::task::spawn_blocking(|| {
            let _ = std::io::stdin().read_to_end(&mut Vec::new());
        })
        .await
        .unwrap();
        stop.cancel();
        let _ = task.await;
    });
}

struct Server {
    child: Child,
    socket: PathBuf,
    _dir: tempfile::TempDir,
}

impl Server {
    fn start() -> Server {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("forward.sock");
        let config = format!(
            "state_dir = \"{d}/state\"\nhostname = \"bench-host\"\n[sources.bench]\ntype = \"forward\"\nlisten = \"unix://{s}\"\n[scrub]\n{SCRUB_OFF}\n[sinks.unused]\ntype = \"file\"\npath = \"{d}/unused.ndjson\"\n",
            d = dir.path().display(),
            s = socket.display()
        );
        std::fs::write(dir.path().join("weir.toml"), config).unwrap();
        let mut child = Command::new(std::env::current_exe().unwrap())
            .env("WEIR_BENCH_SERVER", dir.path())
            .env("WEIR_LOG", "error")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "ready", "receiver did not start");
        Server {
            child,
            socket,
            _dir: dir,
        }
    }

    /// (user + system CPU seconds, peak RSS bytes) of the receiver so far.
    fn usage(&self) -> (f64, u64) {
        let pid = self.child.id();
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        // Fields after the command name (which is in parentheses).
        let rest = &stat[stat.rfind(')').unwrap() + 2..];
        let f: Vec<&str> = rest.split_whitespace().collect();
        let ticks: f64 = f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let hwm_kb: u64 = status
            .lines()
            .find(|l| l.starts_with("VmHWM:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        (ticks / clock_ticks(), hwm_kb * 1024)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn clock_ticks() -> f64 {
    // SC_CLK_TCK is 100 on every Linux weir targets.
    100.0
}

/// One scenario: a connection per frame of `frames`, each writing
/// `frames_per_conn` copies of its frame (one write each) then one acked
/// frame; `events_per_frame` events in each.
fn run(name: &str, frames: &[Vec<u8>], frames_per_conn: usize, events_per_frame: usize) {
    let server = Server::start();
    let (cpu0, _) = server.usage();
    let conns = frames.len();
    let start = Instant::now();
    let threads: Vec<_> = frames
        .iter()
        .map(|frame| {
            let socket = server.socket.clone();
            let frame = frame.clone();
            let acked = with_chunk(&frame, "last");
            std::thread::spawn(move || {
                let mut s = UnixStream::connect(&socket).unwrap();
                for _ in 0..frames_per_conn {
                    s.write_all(&frame).unwrap();
                }
                s.write_all(&acked).unwrap();
                let mut ack = [0u8; 32];
                let n = s.read(&mut ack).unwrap();
                assert!(n > 0, "no ack");
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let elapsed = start.elapsed().as_secs_f64();
    let (cpu1, rss) = server.usage();
    let events = conns * (frames_per_conn + 1) * events_per_frame;
    let bytes: usize = frames
        .iter()
        .map(|f| frames_per_conn * f.len() + with_chunk(f, "last").len())
        .sum();
    println!(
        "{:<34} {:>10} {:>12.0} {:>8.1} {:>12.2} {:>7.1} MiB",
        name,
        events,
        events as f64 / elapsed,
        bytes as f64 / elapsed / 1e6,
        (cpu1 - cpu0) / (events as f64 / 1e6),
        rss as f64 / (1 << 20) as f64
    );
}

/// A ~150-byte log line.
const LINE: &str = "2026-11-21T23:59:59.123Z INFO  [http-worker-7] GET /api/v1/orders/84213/items?page=2 200 OK in 12.4ms (user agent: curl/8.5.0, bytes: 4312)";

/// Docker's record from container number `c`:
/// `[tag, EventTime, {container_id, container_name, source, log}, {}]`.
fn docker_frame(c: usize) -> Vec<u8> {
    let mut f = Vec::new();
    rmp::encode::write_array_len(&mut f, 4).unwrap();
    rmp::encode::write_str(&mut f, &format!("docker.{}", &container_id(c)[..12])).unwrap();
    event_time(&mut f);
    docker_record(&mut f, c);
    rmp::encode::write_map_len(&mut f, 0).unwrap();
    f
}

/// A 64-hex-digit id, different for each container.
fn container_id(c: usize) -> String {
    format!("{c:04x}1c2a9b8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a")
}

fn docker_record(f: &mut Vec<u8>, c: usize) {
    rmp::encode::write_map_len(f, 4).unwrap();
    for (k, v) in [
        ("container_id", container_id(c)),
        ("container_name", format!("/shop-web-{c}")),
        ("source", "stdout".into()),
        ("log", LINE.into()),
    ] {
        rmp::encode::write_str(f, k).unwrap();
        rmp::encode::write_str(f, &v).unwrap();
    }
}

fn event_time(f: &mut Vec<u8>) {
    f.extend_from_slice(&[0xd7, 0x00]);
    f.extend_from_slice(&1_795_000_000u32.to_be_bytes());
    f.extend_from_slice(&123_456_789u32.to_be_bytes());
}

/// `[tag, bin([time, record] * n), {}]`, records of container `c`.
fn packed_frame(c: usize, n: usize) -> Vec<u8> {
    let mut entries = Vec::new();
    for _ in 0..n {
        rmp::encode::write_array_len(&mut entries, 2).unwrap();
        event_time(&mut entries);
        docker_record(&mut entries, c);
    }
    let mut f = Vec::new();
    rmp::encode::write_array_len(&mut f, 3).unwrap();
    rmp::encode::write_str(&mut f, &format!("docker.{}", &container_id(c)[..12])).unwrap();
    rmp::encode::write_bin(&mut f, &entries).unwrap();
    rmp::encode::write_map_len(&mut f, 0).unwrap();
    f
}

/// The same frame with its (empty, last) option map replaced by `{chunk}`.
fn with_chunk(frame: &[u8], chunk: &str) -> Vec<u8> {
    assert_eq!(frame.last(), Some(&0x80));
    let mut f = frame[..frame.len() - 1].to_vec();
    rmp::encode::write_map_len(&mut f, 1).unwrap();
    rmp::encode::write_str(&mut f, "chunk").unwrap();
    rmp::encode::write_str(&mut f, chunk).unwrap();
    f
}
