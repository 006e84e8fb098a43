//! The whole pipeline: load generators -> the `weir` binary (forward and
//! journal sources, scrub on, spool on its defaults) -> the Loki test
//! receiver and a GELF UDP receiver.
//!
//! Run (as root, for the journald): `cargo bench --bench pipeline`
//! (optionally `-- EVENTS`, default 200000, split between the two Forward
//! generators; the journal writer adds a tenth of that).
//!
//! `cargo bench --bench pipeline -- loki [EVENTS]`: Forward -> Loki alone
//! (issue 24's end-to-end case): the two Forward generators, no journal, no
//! GELF sink, whose UDP sends would otherwise be most of weir's CPU.
//!
//! - Docker-shaped: 4 connections, Message mode, one event per write,
//!   EventTime, ~150-byte lines in `log` with Docker's record fields;
//! - PackedForward: 2 connections, 100 events per frame (what fluent-bit and
//!   fluentd forwarders send);
//! - journal: one writer sending native-protocol entries to a real
//!   systemd-journald in a namespace of its own (the integration tests'
//!   harness, tests/it/journald_harness.rs), which weir's journal source
//!   reads through libsystemd.
//!
//! `WEIR_BENCH_WRAP="valgrind --tool=callgrind" cargo bench --bench pipeline
//! -- loki 200000` runs weir under the given command (a profiler).
//!
//! Every line carries its send time (`t=NANOS`); the receiver stamps when the
//! push carrying it was accepted, giving write-to-accepted-push latency. CPU
//! is weir's utime + stime from /proc/PID/stat, peak RSS its VmHWM. Results go
//! to stdout and `target/bench-pipeline.json`.

mod common;
use common::machine;

#[path = "../tests/it/journald_harness.rs"]
mod journald_harness;
#[path = "../tests/it/loki_receiver.rs"]
mod loki_receiver;

use std::io::Write;
use std::net::UdpSocket;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use journald_harness::{native_datagram, Journald};
use loki_receiver::{Limits, Receiver};

const DOCKER_CONNS: u64 = 4;
const PACKED_CONNS: u64 = 2;
const PACK: u64 = 100;

fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i64
}

/// utime + stime of process `pid`, in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("/proc");
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split(' ').collect();
    (f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()) as f64 / 100.0
}

/// Peak resident set of `pid` in KiB (VmHWM).
fn peak_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .expect("/proc")
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// A Docker-like access-log line of about 150 bytes carrying its send time.
fn line(gen: &str, i: u64) -> String {
    let mut l = format!(
        "t={} {gen}-{i} 10.1.{}.{} - - \"GET /api/v1/items/{i} HTTP/1.1\" 200 512 \"-\" \"Mozilla/5.0\"",
        now_ns(),
        i % 250,
        i % 200
    );
    while l.len() < 150 {
        l.push('x');
    }
    l
}

fn event_time(f: &mut Vec<u8>) {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    f.extend_from_slice(&[0xd7, 0x00]);
    f.extend_from_slice(&(now.as_secs() as u32).to_be_bytes());
    f.extend_from_slice(&now.subsec_nanos().to_be_bytes());
}

/// The record Docker's fluentd driver sends.
fn record(f: &mut Vec<u8>, log: &str) {
    rmp::encode::write_map_len(f, 4).unwrap();
    for (k, v) in [
        (
            "container_id",
            "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        ),
        ("container_name", "/web"),
        ("source", "stdout"),
        ("log", log),
    ] {
        rmp::encode::write_str(f, k).unwrap();
        rmp::encode::write_str(f, v).unwrap();
    }
}

fn docker_client(socket: &Path, conn: u64, n: u64) {
    let mut s = UnixStream::connect(socket).unwrap();
    let mut f = Vec::new();
    for i in 0..n {
        f.clear();
        rmp::encode::write_array_len(&mut f, 3).unwrap();
        rmp::encode::write_str(&mut f, "docker.web").unwrap();
        event_time(&mut f);
        record(&mut f, &line(&format!("d{conn}"), i));
        s.write_all(&f).unwrap();
    }
}

/// Sends `n` entries to journald's native socket, as a service logging
/// through sd_journal_send would. A full socket queue blocks the send, so
/// the writer goes at journald's pace.
fn journal_client(journald_socket: &Path, n: u64) {
    let s = std::os::unix::net::UnixDatagram::unbound().unwrap();
    for i in 0..n {
        let line = line("j", i);
        let d = native_datagram(&[
            ("MESSAGE", line.as_bytes()),
            ("SYSLOG_IDENTIFIER", b"weir-bench"),
            ("PRIORITY", b"6"),
        ]);
        s.send_to(&d, journald_socket).expect("native datagram");
    }
}

fn packed_client(socket: &Path, conn: u64, n: u64) {
    let mut s = UnixStream::connect(socket).unwrap();
    let mut i = 0;
    while i < n {
        let k = PACK.min(n - i);
        let mut entries = Vec::new();
        for _ in 0..k {
            rmp::encode::write_array_len(&mut entries, 2).unwrap();
            event_time(&mut entries);
            record(&mut entries, &line(&format!("p{conn}"), i));
            i += 1;
        }
        let mut f = Vec::new();
        rmp::encode::write_array_len(&mut f, 3).unwrap();
        rmp::encode::write_str(&mut f, "fluentbit.web").unwrap();
        rmp::encode::write_bin_len(&mut f, entries.len() as u32).unwrap();
        f.extend_from_slice(&entries);
        rmp::encode::write_map_len(&mut f, 1).unwrap();
        rmp::encode::write_str(&mut f, "size").unwrap();
        rmp::encode::write_uint(&mut f, k).unwrap();
        s.write_all(&f).unwrap();
    }
}

struct Weir(Child);

impl Drop for Weir {
    /// SIGTERM first (weir shuts down cleanly, and a profiler wrapping it
    /// writes its output), SIGKILL after 30 s.
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn percentile(sorted: &[i64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p) as usize] as f64 / 1e6
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let loki_only = args.iter().any(|a| a == "loki");
    let total: u64 = args.iter().find_map(|a| a.parse().ok()).unwrap_or(200_000);
    let per_docker = total / 2 / DOCKER_CONNS;
    let per_packed = total / 2 / PACKED_CONNS;
    let journal = if loki_only { 0 } else { total / 10 };
    let total = per_docker * DOCKER_CONNS + per_packed * PACKED_CONNS + journal;

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let receiver = rt.block_on(Receiver::start_with(Limits::default(), None));
    let gelf = UdpSocket::bind("127.0.0.1:0").unwrap();
    let gelf_addr = gelf.local_addr().unwrap();
    let datagrams = Arc::new(AtomicU64::new(0));
    {
        let datagrams = datagrams.clone();
        gelf.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 65536];
            loop {
                if gelf.recv(&mut buf).is_ok() {
                    datagrams.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
    }

    let journald = (!loki_only).then(|| Journald::start("bench"));
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("forward.sock");
    let config = dir.path().join("weir.toml");
    let mut toml = format!(
        r#"
state_dir = "{state}"
hostname = "bench-host"
[sources.docker]
type = "forward"
listen = "unix://{socket}"
[sinks.loki]
type = "loki"
url = "{url}"
line_format = "raw"
[metrics]
listen = ""
"#,
        state = dir.path().join("state").display(),
        socket = socket.display(),
        url = receiver.url(),
    );
    if let Some(journald) = &journald {
        toml += &format!(
            r#"
[sources.journal]
type = "journal"
namespace = "{namespace}"
start_at = "head"
max_age = "off"
identifiers = ["weir-bench"]
[sinks.graylog]
type = "gelf"
address = "udp://{gelf_addr}"
# Unpaced: this bench measures the agent's throughput, not what a GELF
# receiver keeps up with (the default max_rate would make GELF the bottleneck).
max_rate = {{ messages = 0, bytes = 0 }}
"#,
            namespace = journald.namespace,
        );
    }
    std::fs::write(&config, toml).unwrap();
    // `WEIR_BENCH_WRAP="valgrind --tool=callgrind"`: weir runs under it
    // (a profiler sees the whole agent under this load).
    let wrap = std::env::var("WEIR_BENCH_WRAP").unwrap_or_default();
    let mut argv: Vec<&str> = wrap.split_whitespace().collect();
    argv.push(env!("CARGO_BIN_EXE_weir"));
    let weir = Weir(
        Command::new(argv[0])
            .args(&argv[1..])
            .args(["run", "--config"])
            .arg(&config)
            .arg("--pid-file")
            .arg(dir.path().join("weir.pid"))
            .env("WEIR_LOG", "warn")
            .stdin(Stdio::null())
            .spawn()
            .expect("weir run"),
    );
    let pid = weir.0.id();
    let deadline = Instant::now() + Duration::from_secs(60);
    while UnixStream::connect(&socket).is_err() {
        assert!(Instant::now() < deadline, "weir did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    let cpu_start = cpu_seconds(pid);
    let bench_cpu_start = cpu_seconds(std::process::id());

    let sinks = if loki_only { "Loki" } else { "Loki + GELF/UDP" };
    println!("pipeline: {total} events ({DOCKER_CONNS} Docker-shaped connections, {PACKED_CONNS} PackedForward, 1 journal writer: {journal}) -> weir -> {sinks}; {}", machine());
    let start = Instant::now();
    let mut writers = Vec::new();
    for c in 0..DOCKER_CONNS {
        let socket = socket.clone();
        writers.push(std::thread::spawn(move || {
            docker_client(&socket, c, per_docker)
        }));
    }
    for c in 0..PACKED_CONNS {
        let socket = socket.clone();
        writers.push(std::thread::spawn(move || {
            packed_client(&socket, c, per_packed)
        }));
    }
    if let Some(journald) = &journald {
        let socket = journald.socket();
        writers.push(std::thread::spawn(move || journal_client(&socket, journal)));
    }
    for w in writers {
        w.join().unwrap();
    }
    let written = start.elapsed();
    let deadline = Instant::now() + Duration::from_secs(600);
    while receiver.stats().accepted < total {
        assert!(
            Instant::now() < deadline,
            "only {} of {total} events reached Loki",
            receiver.stats().accepted
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let elapsed = start.elapsed();
    let cpu = cpu_seconds(pid) - cpu_start;
    let bench_cpu = cpu_seconds(std::process::id()) - bench_cpu_start;
    let rss = peak_rss_kib(pid);
    // The GELF sink runs on its own cursor: wait until it has sent
    // everything or its count stalls for 2 s (UDP drops what the receiver's
    // socket buffer cannot hold).
    let (mut gelf_count, mut last_change) = (0, Instant::now());
    while !loki_only && gelf_count < total && last_change.elapsed() < Duration::from_secs(2) {
        std::thread::sleep(Duration::from_millis(50));
        let now = datagrams.load(Ordering::Relaxed);
        if now != gelf_count {
            (gelf_count, last_change) = (now, Instant::now());
        }
    }
    let gelf_elapsed = last_change.duration_since(start).as_secs_f64();

    let mut lat: Vec<i64> = receiver
        .entries()
        .iter()
        .filter_map(|e| {
            let t: i64 = e.line.strip_prefix("t=")?.split(' ').next()?.parse().ok()?;
            Some(e.received_ns - t)
        })
        .collect();
    lat.sort_unstable();
    assert_eq!(lat.len() as u64, total, "lines without a send time");
    let eps = total as f64 / elapsed.as_secs_f64();
    let p50 = percentile(&lat, 0.50);
    let p99 = percentile(&lat, 0.99);
    let cpu_per_m = cpu / (total as f64 / 1e6);
    println!(
        "  written by the generators in {:.2} s",
        written.as_secs_f64()
    );
    println!(
        "  end to end (first write to last accepted Loki push): {:.2} s = {eps:.0} events/s",
        elapsed.as_secs_f64()
    );
    println!("  latency write -> accepted push: p50 {p50:.1} ms, p99 {p99:.1} ms");
    println!(
        "  weir CPU: {cpu:.2} s = {cpu_per_m:.2} CPU s per million events; peak RSS {:.1} MiB",
        rss as f64 / 1024.0
    );
    println!(
        "  this process (load generators, Loki receiver): {bench_cpu:.2} CPU s, over {:.2} s",
        elapsed.as_secs_f64()
    );
    if !loki_only {
        println!("  GELF/UDP: {gelf_count} of {total} datagrams received, the last {gelf_elapsed:.2} s after the first write (UDP drops what the receiver cannot take; not asserted)");
    }
    let json = serde_json::json!({
        "bench": if loki_only { "pipeline loki" } else { "pipeline" },
        "machine": machine(),
        "events": total,
        "docker_connections": DOCKER_CONNS,
        "packed_connections": PACKED_CONNS,
        "journal_events": journal,
        "seconds": elapsed.as_secs_f64(),
        "events_per_second": eps,
        "latency_ms": { "p50": p50, "p99": p99 },
        "cpu_seconds": cpu,
        "cpu_seconds_per_million_events": cpu_per_m,
        "bench_process_cpu_seconds": bench_cpu,
        "peak_rss_kib": rss,
        "gelf_datagrams": gelf_count,
        "gelf_seconds": gelf_elapsed,
    });
    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join(if loki_only {
        "target/bench-pipeline-loki.json"
    } else {
        "target/bench-pipeline.json"
    });
    std::fs::write(&out, serde_json::to_string_pretty(&json).unwrap()).unwrap();
    println!("  results: {}", out.display());
    drop(weir);
    drop(journald);
}
