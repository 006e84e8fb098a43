//! Forward source throughput: events/s and MB/s accepted into the spool over
//! the unix socket, CPU seconds per million events and peak RSS of the
//! receiving process, and where that CPU goes, stage by stage.
//!
//! ```text
//! cargo bench --bench forward            # every scenario
//! cargo bench --bench forward -- Packed  # those whose name contains "Packed"
//! WEIR_BENCH_WRAP="valgrind --tool=callgrind" cargo bench --bench forward -- "docker-shaped, 50"
//! ```
//!
//! The receiver runs in a child process (this binary re-executed with
//! `WEIR_BENCH_SERVER=DIR`, under `WEIR_BENCH_WRAP` if set, to profile it),
//! so `/proc/PID` gives its own CPU time and peak RSS. A fresh child serves
//! each scenario, in one of three configurations:
//! - *receiver only*: the forward source, `Ingest` with scrubbing off and
//!   the spool (defaults, durable) with no sinks: nothing but receiving,
//!   decoding, mapping and spooling is measured;
//! - *ingest* ("ingest:"): the same with the default scrubber (on): the
//!   ingest half of what users run, which issue 24's targets are about;
//! - *as users run it*: the whole agent (`weir::pipeline::run`) with the
//!   default scrubber (on) and a file sink; the scenario ends once the sink
//!   has written every event, so its CPU is counted too.
//!
//! The load generator (threads with blocking sockets, in this process)
//! shares the machine's cores with it. Every connection's last frame asks
//! for an ack, which comes only after everything before it on that
//! connection was appended and made durable.
//!
//! Scenarios:
//! - Docker-shaped: Message mode, one event per write, EventTime, a 139-byte
//!   line plus Docker's keys (`container_id`, `container_name`, `source`,
//!   `log`), from 1 and from 50 connections, one container per connection;
//!   "paced": 50 connections writing 2,000 events/s each, which the receiver
//!   keeps up with, so that it reads one event at a time.
//!   "varied lines": the 50-connection scenario with each connection cycling
//!   through 256 different lines of the same shape (numbers, paths, methods
//!   and statuses vary, as an access log's do), so that nothing which
//!   remembers the last line (a memo of the scrubber's, the spool's
//!   back-references) can flatter the figure; reported beside the
//!   one-line scenario, not instead of it.
//! - PackedForward: 1000 events per frame (what Fluent Bit/Fluentd forward).
//! - "TCP": the 50-connection Docker-shaped scenario over TCP on the
//!   loopback (Docker's fluentd driver connects over TCP unless told a
//!   unix socket; its Go client sets TCP_NODELAY, and so does the load
//!   generator here), its floor receiver over TCP too.
//!
//! Each row also says the receiver's socket reads per event
//! (`weir_source_reads_total`, "reads/ev"): the CPU per event of a read that
//! brings one event is several times that of one bringing hundreds, and how
//! many a read brings depends on how busy the machine is (a "paced" row
//! measured under load reads several events at a time).
//!
//! Each row also says the receiver's system (kernel) CPU per event ("sys
//! s/M", part of "CPU s/M"), and "floor": the CPU per event of a receiver
//! that only reads the same bytes from the same clients (this binary with
//! `WEIR_BENCH_SERVER` and a `null` file in DIR, never wrapped: one tokio
//! task per connection, 64 KiB reads, as the forward source reads, and the
//! ack). That is the kernel's cost of receiving what the clients wrote,
//! which no receiver avoids: Docker writes each event on its own, and each
//! write is a socket buffer the reader's kernel copies, frees and
//! uncharges (perf, 2026-12-07: 46% of the receiver's CPU was in
//! `recvfrom`, for 0.009 reads per event).
//!
//! After them, the CPU per event of each stage the receiver runs in process
//! (framing, 0 for Docker's Message-mode frames, which are decoded
//! straight; msgpack decoding, event building, scrubbing, spool record
//! encoding; as users run it also the spool reader's record decoding and
//! the file sink's JSON), measured apart on this thread over the same
//! frames through the same functions, beside the receiver's measured total:
//! the rest is the socket reads, the runtime, the spool's copy, write and
//! fsync, the acks (and the file sink's writes, as users run it); "floor"
//! is repeated there, so "rest" - "floor" is what the receiver's own
//! machinery (runtime, spool writes and fsyncs, acks) costs beyond reading.
//!
//! Targets (issue 4, 2 cores, scrubbing off, spool defaults): >= 300k
//! events/s from 50 Docker-shaped connections, >= 1.5M events/s
//! PackedForward, <= 3 CPU s per million Docker-shaped events, RSS <= 64 MiB.
//! Issue 24, scrub on and durable: Docker-shaped <= 1.5 CPU s per million,
//! PackedForward >= 2M events/s at <= 0.35 CPU s per million.

mod common;
use common::machine;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Turns scrubbing off in the receiver's config, as the targets ask (an
/// empty `[scrub]` section would mean the private defaults: scrubbing on).
/// Every detector: until this bench said `secrets = "keep"`, its
/// "scrubbing off" still masked secrets, at about a third of the receiver's
/// CPU.
const SCRUB_OFF: &str = "ipv4 = \"keep\"\nipv6 = \"keep\"\nlogins = \"keep\"\nsecrets = \"keep\"\n";
/// The scrubber's defaults: what users run.
const SCRUB_ON: &str = "";

/// Which receiver serves a scenario.
#[derive(Clone, Copy, PartialEq)]
enum Setup {
    /// Source -> Ingest (scrubbing off) -> spool, no sinks.
    ReceiverOnly,
    /// Source -> Ingest (scrubbing on, defaults) -> spool, no sinks.
    Ingest,
    /// The whole agent: scrubbing on (defaults), a file sink.
    AsUsersRunIt,
}

impl Setup {
    fn scrub(self) -> &'static str {
        match self {
            Setup::ReceiverOnly => SCRUB_OFF,
            Setup::Ingest | Setup::AsUsersRunIt => SCRUB_ON,
        }
    }
}

fn main() {
    if let Ok(dir) = std::env::var("WEIR_BENCH_SERVER") {
        server(Path::new(&dir));
        return;
    }
    println!("forward source benchmark");
    // Absolute figures mean little on a busy machine: say how busy it was.
    println!("machine: {}", machine());
    println!("receiver only: forward source (unix socket) -> Ingest (scrubbing off) -> durable spool (defaults, temp dir), acks after fsync");
    println!("ingest (\"ingest:\"): the same, scrubbing on (defaults): issue 24's targets");
    println!("as users run it (\"users:\"): the whole agent, scrubbing on (defaults), durable spool, file sink; ends once the sink wrote every event");
    println!();
    println!("floor: a receiver that only reads the same bytes (the kernel's cost of the clients' writes)");
    println!();
    println!(
        "{:<40} {:>10} {:>12} {:>8} {:>12} {:>10} {:>9} {:>9} {:>9}",
        "scenario",
        "events",
        "events/s",
        "MB/s",
        "CPU s/M ev",
        "peak RSS",
        "reads/ev",
        "sys s/M",
        "floor"
    );
    // `cargo bench` passes `--bench`; any other argument picks scenarios.
    let filter = std::env::args().skip(1).find(|a| !a.starts_with("--"));
    let mut totals = Vec::new();
    let mut run =
        |name: &str, setup, frames: &[Vec<Vec<u8>>], frames_per_conn, events_per_frame| {
            if filter.as_deref().is_none_or(|f| name.contains(f)) {
                let pace = name.contains("paced").then_some(PACE);
                let (cpu, floor) =
                    run(name, setup, frames, frames_per_conn, events_per_frame, pace);
                totals.push((name.to_owned(), setup, frames[0].clone(), cpu, floor));
            }
        };
    use Setup::*;
    // One container per connection, as Docker connects.
    let docker = |n: usize| {
        (0..n)
            .map(|c| vec![docker_frame(c, LINE)])
            .collect::<Vec<_>>()
    };
    let docker_varied = |n: usize| {
        (0..n)
            .map(|c| {
                (0..VARIED)
                    .map(|i| docker_frame(c, &varied_line(c, i)))
                    .collect()
            })
            .collect::<Vec<_>>()
    };
    run(
        "docker-shaped, 1 connection",
        ReceiverOnly,
        &docker(1),
        300_000,
        1,
    );
    run(
        "docker-shaped, 50 connections",
        ReceiverOnly,
        &docker(50),
        12_000,
        1,
    );
    let packed = |n: usize| {
        (0..n)
            .map(|c| vec![packed_frame(c, 1000)])
            .collect::<Vec<_>>()
    };
    run(
        "PackedForward x1000, 1 connection",
        ReceiverOnly,
        &packed(1),
        1_000,
        1000,
    );
    run(
        "PackedForward x1000, 4 connections",
        ReceiverOnly,
        &packed(4),
        300,
        1000,
    );
    run(
        "ingest: docker-shaped, 50 connections",
        Ingest,
        &docker(50),
        12_000,
        1,
    );
    run(
        "ingest: docker-shaped, varied lines, 50",
        Ingest,
        &docker_varied(50),
        12_000,
        1,
    );
    run(
        "ingest: docker-shaped, 50 conns, paced",
        Ingest,
        &docker(50),
        6_000,
        1,
    );
    run(
        "ingest: docker-shaped, TCP, 50 conns",
        Ingest,
        &docker(50),
        12_000,
        1,
    );
    run(
        "ingest: PackedForward x1000, 4 conns",
        Ingest,
        &packed(4),
        300,
        1000,
    );
    run(
        "users: docker-shaped, 50 connections",
        AsUsersRunIt,
        &docker(50),
        12_000,
        1,
    );
    run(
        "users: PackedForward x1000, 4 conns",
        AsUsersRunIt,
        &packed(4),
        300,
        1000,
    );
    println!();
    println!("CPU per event by stage, in CPU s per million events (= us per event): each stage");
    println!(
        "measured apart on this thread, over the scenario's frames, through the receiver's own"
    );
    println!(
        "functions; \"rest\" = the receiver's measured total - the stages: socket reads, runtime,"
    );
    println!("spool copy/write/fsync, acks (and, for users:, the file sink's writes). For users:,");
    println!("\"read\" is the spool reader's record decoding and \"json\" the file sink's line.");
    println!(
        "\"floor\" (as above) is the part of \"rest\" any receiver pays to read the same bytes."
    );
    println!(
        "{:<40} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8}",
        "scenario",
        "framing",
        "decode",
        "build",
        "scrub",
        "encode",
        "read",
        "json",
        "total",
        "rest",
        "floor"
    );
    for (name, setup, frames, total, floor) in totals {
        let st = stages::measure(&frames, setup.scrub(), setup == Setup::AsUsersRunIt);
        let opt = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.3}"));
        println!(
            "{:<40} {:>8.3} {:>8.3} {:>8.3} {:>8.3} {:>8.3} {:>8} {:>8} {:>8.3} {:>8.3} {:>8.3}",
            name,
            st.framing,
            st.decode,
            st.build,
            st.scrub,
            st.encode,
            opt(st.read),
            opt(st.json),
            total,
            total - st.sum(),
            floor
        );
    }
    println!();
    println!("machine at end: {}", machine());
}

/// Receiver: the forward source in front of a spool with no sinks, or (with
/// `users` in DIR) the whole agent.
fn server(dir: &Path) {
    if dir.join("null").exists() {
        if let Ok(addr) = std::fs::read_to_string(dir.join("tcp")) {
            return null_server_tcp(addr.parse().unwrap());
        }
        return null_server(dir);
    }
    let text = std::fs::read_to_string(dir.join("weir.toml")).unwrap();
    let config = weir::config::parse(&text, "bench").unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    if dir.join("users").exists() {
        return rt.block_on(agent(config, dir));
    }
    rt.block_on(async {
        let spool =
            weir::spool::Spool::open(&config.state_dir.join("spool"), &config.spool, &[]).unwrap();
        let scrubber = std::sync::Arc::new(
            weir::scrub::Scrubber::new(&config.scrub, &config.state_dir).unwrap(),
        );
        let ingest = weir::ingest::Ingest::new(spool, scrubber, &config.hostname);
        let metrics = ingest.metrics().clone();
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
        print_reads(&metrics);
    });
}

/// The end of the scenario's last frame on each connection, the one that
/// asks for an ack: `{"chunk": "last"}` (see [`with_chunk`]); every other
/// frame ends with an empty map.
const ACKED_TAIL: &[u8] = b"\x81\xa5chunk\xa4last";

/// The "floor" receiver: reads everything each client sends, as the
/// forward source reads it (a task per connection on a multi-threaded
/// tokio runtime, up to 64 KiB per read), decodes nothing and keeps
/// nothing; answers the acked frame with `{"ack": "last"}`. What it costs
/// per event is what receiving the clients' writes costs any receiver.
fn null_server(dir: &Path) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let listener = tokio::net::UnixListener::bind(dir.join("forward.sock")).unwrap();
        println!("ready");
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(drain(stream));
            }
        });
        tokio::task::spawn_blocking(|| {
            let _ = std::io::stdin().read_to_end(&mut Vec::new());
        })
        .await
        .unwrap();
    });
}

/// [`null_server`] on a TCP address.
fn null_server_tcp(addr: SocketAddr) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        println!("ready");
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(drain(stream));
            }
        });
        tokio::task::spawn_blocking(|| {
            let _ = std::io::stdin().read_to_end(&mut Vec::new());
        })
        .await
        .unwrap();
    });
}

/// Reads a connection to its end, acking [`ACKED_TAIL`] (which a read may
/// split: the last bytes of the one before are kept).
async fn drain<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(mut stream: S) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 64 * 1024];
    let mut tail = Vec::with_capacity(2 * ACKED_TAIL.len());
    loop {
        let n = match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        tail.extend_from_slice(&buf[n.saturating_sub(ACKED_TAIL.len())..n]);
        if tail.ends_with(ACKED_TAIL) {
            let mut ack = Vec::new();
            rmp::encode::write_map_len(&mut ack, 1).unwrap();
            rmp::encode::write_str(&mut ack, "ack").unwrap();
            rmp::encode::write_str(&mut ack, "last").unwrap();
            let _ = stream.write_all(&ack).await;
        }
        tail.drain(..tail.len().saturating_sub(ACKED_TAIL.len()));
    }
}

/// Tells the parent, on the child's last line, how many socket reads the
/// forward source made (`weir_source_reads_total`).
fn print_reads(metrics: &weir::metrics::Metrics) {
    if let Some(reads) = metrics.value("weir_source_reads_total", &[("source", "bench")]) {
        println!("reads {reads}");
    }
}

/// The whole agent. Reads `wait N` lines from stdin and answers `delivered`
/// once its file sink wrote N events; stops when stdin closes.
async fn agent(config: weir::Config, dir: &Path) {
    let socket = dir.join("forward.sock");
    let stop = tokio_util::sync::CancellationToken::new();
    let metrics = weir::metrics::Metrics::new();
    let run = {
        let (stop, metrics) = (stop.clone(), metrics.clone());
        tokio::spawn(
            async move { weir::pipeline::run_counting_in(config, stop, None, &metrics).await },
        )
    };
    while !socket.exists() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    println!("ready");
    let counted = metrics.clone();
    tokio::task::spawn_blocking(move || {
        for line in std::io::stdin().lines() {
            let Some(n) = line
                .ok()
                .and_then(|l| l.strip_prefix("wait ")?.parse::<f64>().ok())
            else {
                break;
            };
            let sent = || {
                metrics
                    .value("weir_sink_events_sent_total", &[("sink", "local")])
                    .unwrap_or(0.0)
            };
            while sent() < n {
                std::thread::sleep(Duration::from_millis(5));
            }
            println!("delivered");
        }
    })
    .await
    .unwrap();
    stop.cancel();
    let _ = run.await;
    print_reads(&counted);
}

/// Where a receiver listens.
#[derive(Clone)]
enum Address {
    Unix(PathBuf),
    Tcp(SocketAddr),
}

/// A client's connection, of either kind.
trait Stream: Read + Write {}
impl<T: Read + Write> Stream for T {}

impl Address {
    fn url(&self) -> String {
        match self {
            Address::Unix(path) => format!("unix://{}", path.display()),
            Address::Tcp(addr) => format!("tcp://{addr}"),
        }
    }

    /// Connects as Docker's driver does (its Go client sets TCP_NODELAY).
    fn connect(&self) -> Box<dyn Stream> {
        match self {
            Address::Unix(path) => Box::new(UnixStream::connect(path).unwrap()),
            Address::Tcp(addr) => {
                let s = TcpStream::connect(addr).unwrap();
                s.set_nodelay(true).unwrap();
                Box::new(s)
            }
        }
    }
}

struct Server {
    child: Child,
    socket: Address,
    /// The child's stdout, after its `ready`.
    out: BufReader<std::process::ChildStdout>,
    dir: tempfile::TempDir,
}

impl Server {
    /// A receiver for `setup`, or with `null` the floor receiver
    /// ([`null_server`]; never under `WEIR_BENCH_WRAP`); on a loopback TCP
    /// port with `tcp`, else on a unix socket.
    fn start(setup: Setup, null: bool, tcp: bool) -> Server {
        assert!(
            !tcp || setup != Setup::AsUsersRunIt,
            "the agent is awaited on its unix socket"
        );
        let dir = tempfile::tempdir().unwrap();
        let socket = match tcp {
            // A free port (the receiver binds it again right after).
            true => Address::Tcp(
                std::net::TcpListener::bind("127.0.0.1:0")
                    .unwrap()
                    .local_addr()
                    .unwrap(),
            ),
            false => Address::Unix(dir.path().join("forward.sock")),
        };
        let config = format!(
            "state_dir = \"{d}/state\"\nhostname = \"bench-host\"\n[sources.bench]\ntype = \"forward\"\nlisten = \"{s}\"\n[scrub]\n{scrub}\n[sinks.local]\ntype = \"file\"\npath = \"{d}/events.ndjson\"\n",
            d = dir.path().display(),
            s = socket.url(),
            scrub = setup.scrub(),
        );
        std::fs::write(dir.path().join("weir.toml"), config).unwrap();
        if setup == Setup::AsUsersRunIt {
            std::fs::write(dir.path().join("users"), "").unwrap();
        }
        if null {
            std::fs::write(dir.path().join("null"), "").unwrap();
            if let Address::Tcp(addr) = &socket {
                std::fs::write(dir.path().join("tcp"), addr.to_string()).unwrap();
            }
        }
        let exe = std::env::current_exe().unwrap();
        let wrap = match null {
            false => std::env::var("WEIR_BENCH_WRAP").unwrap_or_default(),
            true => String::new(),
        };
        let mut argv: Vec<&std::ffi::OsStr> = wrap.split_whitespace().map(|w| w.as_ref()).collect();
        argv.push(exe.as_os_str());
        let mut child = Command::new(argv[0])
            .args(&argv[1..])
            .env("WEIR_BENCH_SERVER", dir.path())
            .env("WEIR_LOG", "error")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "ready", "receiver did not start");
        Server {
            child,
            socket,
            out,
            dir,
        }
    }

    /// Waits until the agent's file sink wrote `events` events.
    fn wait_delivered(&mut self, events: usize) {
        writeln!(self.child.stdin.as_ref().unwrap(), "wait {events}").unwrap();
        let mut line = String::new();
        self.out.read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "delivered", "file sink did not finish");
    }

    /// Stops the receiver and returns the socket reads it made, from its
    /// last line (`None` from a receiver built before it printed them).
    fn stop_and_count_reads(&mut self) -> Option<f64> {
        drop(self.child.stdin.take());
        let mut line = String::new();
        while self.out.read_line(&mut line).ok()? > 0 {
            if let Some(reads) = line.trim().strip_prefix("reads ") {
                return reads.parse().ok();
            }
            line.clear();
        }
        None
    }

    /// (user + system CPU seconds, system CPU seconds, peak RSS bytes) of
    /// the receiver so far.
    fn usage(&self) -> (f64, f64, u64) {
        let pid = self.child.id();
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        // Fields after the command name (which is in parentheses).
        let rest = &stat[stat.rfind(')').unwrap() + 2..];
        let f: Vec<&str> = rest.split_whitespace().collect();
        let system: f64 = f[12].parse().unwrap();
        let ticks: f64 = f[11].parse::<f64>().unwrap() + system;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let hwm_kb: u64 = status
            .lines()
            .find(|l| l.starts_with("VmHWM:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        (ticks / clock_ticks(), system / clock_ticks(), hwm_kb * 1024)
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

/// Writes per second and connection of a "paced" scenario: 100k events/s
/// from 50 connections, which the receiver keeps up with, so that it reads
/// one event at a time, as on a Docker host whose containers log now and
/// then (at full speed, reads hold many events and per-read costs hide).
const PACE: u32 = 2_000;

/// One scenario: a connection per list of `frames`, each writing
/// `frames_per_conn` frames (cycling through its list; one write each,
/// `pace` writes per second if given) then one acked frame;
/// `events_per_frame` events in each. Then the same load against the
/// floor receiver. Returns the receiver's CPU seconds per million events
/// and the floor's.
fn run(
    name: &str,
    setup: Setup,
    frames: &[Vec<Vec<u8>>],
    frames_per_conn: usize,
    events_per_frame: usize,
    pace: Option<u32>,
) -> (f64, f64) {
    let events = frames.len() * (frames_per_conn + 1) * events_per_frame;
    let tcp = name.contains("TCP");
    let mut server = Server::start(setup, false, tcp);
    let (cpu0, sys0, _) = server.usage();
    let start = Instant::now();
    let bytes = load(&server.socket, frames, frames_per_conn, pace);
    if setup == Setup::AsUsersRunIt {
        server.wait_delivered(events);
    }
    let elapsed = start.elapsed().as_secs_f64();
    let (cpu1, sys1, rss) = server.usage();
    let per_m = |cpu: f64| cpu / (events as f64 / 1e6);
    // CPU per event depends on how many events a read brings: say it.
    let reads = server
        .stop_and_count_reads()
        .map_or("-".to_owned(), |r| format!("{:.3}", r / events as f64));
    // The file sink's output is as large as the input: do not keep it
    // while the next scenario runs.
    let _ = std::fs::remove_file(server.dir.path().join("events.ndjson"));
    drop(server);
    let null = Server::start(setup, true, tcp);
    let (floor0, _, _) = null.usage();
    load(&null.socket, frames, frames_per_conn, pace);
    let (floor1, _, _) = null.usage();
    drop(null);
    let floor = per_m(floor1 - floor0);
    println!(
        "{:<40} {:>10} {:>12.0} {:>8.1} {:>12.2} {:>7.1} MiB {:>9} {:>9.2} {:>9.2}",
        name,
        events,
        events as f64 / elapsed,
        bytes as f64 / elapsed / 1e6,
        per_m(cpu1 - cpu0),
        rss as f64 / (1 << 20) as f64,
        reads,
        per_m(sys1 - sys0),
        floor
    );
    (per_m(cpu1 - cpu0), floor)
}

/// The load generator: a thread and connection per list of `frames`,
/// writing `frames_per_conn` of them (cycling through the list, one write
/// each, as Docker writes each event, `pace` writes per second if given),
/// then the first frame asking for an ack, and waiting for it. Returns the
/// bytes written.
fn load(
    socket: &Address,
    frames: &[Vec<Vec<u8>>],
    frames_per_conn: usize,
    pace: Option<u32>,
) -> usize {
    let threads: Vec<_> = frames
        .iter()
        .map(|frames| {
            let socket = socket.clone();
            let frames = frames.clone();
            let acked = with_chunk(&frames[0], "last");
            std::thread::spawn(move || {
                let mut s = socket.connect();
                let started = Instant::now();
                let mut bytes = acked.len();
                for i in 0..frames_per_conn {
                    if let Some(per_second) = pace {
                        let due =
                            started + Duration::from_secs_f64(i as f64 / f64::from(per_second));
                        if let Some(wait) = due.checked_duration_since(Instant::now()) {
                            std::thread::sleep(wait);
                        }
                    }
                    let frame = &frames[i % frames.len()];
                    s.write_all(frame).unwrap();
                    bytes += frame.len();
                }
                s.write_all(&acked).unwrap();
                let mut ack = [0u8; 32];
                let n = s.read(&mut ack).unwrap();
                assert!(n > 0, "no ack");
                bytes
            })
        })
        .collect();
    threads.into_iter().map(|t| t.join().unwrap()).sum()
}

/// A ~150-byte log line.
const LINE: &str = "2026-11-21T23:59:59.123Z INFO  [http-worker-7] GET /api/v1/orders/84213/items?page=2 200 OK in 12.4ms (user agent: curl/8.5.0, bytes: 4312)";

/// Lines per connection of the "varied lines" scenario.
const VARIED: usize = 256;

/// Line `i` of connection `c` in the "varied lines" scenario: [`LINE`]'s
/// shape (an access log line, ~130-150 bytes, nothing to scrub) with its
/// time, worker, method, path, ids, status, duration, client and size
/// drawn from a fixed pseudo-random sequence, different on every line.
/// (`weir scrub` leaves all 12,800 lines of the 50 connections as they are,
/// as it does [`LINE`]; a `/users/me/` path it took for a login was left out.)
fn varied_line(c: usize, i: usize) -> String {
    // splitmix64: a fixed, well-spread sequence (no dependency).
    let mut x = (c as u64) << 32 | i as u64;
    let mut next = |n: u64| {
        x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = x;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        (z ^ (z >> 31)) % n
    };
    let method = ["GET", "POST", "PUT", "DELETE"][next(4) as usize];
    let path = ["orders", "items", "carts", "products/reviews", "search"][next(5) as usize];
    let (status, word) = [
        (200, "OK"),
        (201, "Created"),
        (204, "No Content"),
        (304, "Not Modified"),
        (404, "Not Found"),
        (502, "Bad Gateway"),
    ][next(6) as usize];
    let agent = [
        "curl/8.5.0",
        "Go-http-client/1.1",
        "okhttp/4.12.0",
        "python-requests/2.31.0",
    ][next(4) as usize];
    format!(
        "2026-11-21T23:{:02}:{:02}.{:03}Z INFO  [http-worker-{}] {method} /api/v1/{path}/{}?page={} {status} {word} in {}.{}ms (user agent: {agent}, bytes: {})",
        next(60),
        next(60),
        next(1000),
        next(16),
        next(100_000),
        next(20),
        next(900),
        next(10),
        next(100_000)
    )
}

/// Docker's record from container number `c` logging `line`:
/// `[tag, EventTime, {container_id, container_name, source, log}, {}]`.
fn docker_frame(c: usize, line: &str) -> Vec<u8> {
    let mut f = Vec::new();
    rmp::encode::write_array_len(&mut f, 4).unwrap();
    rmp::encode::write_str(&mut f, &format!("docker.{}", &container_id(c)[..12])).unwrap();
    event_time(&mut f);
    docker_record(&mut f, c, line);
    rmp::encode::write_map_len(&mut f, 0).unwrap();
    f
}

/// A 64-hex-digit id, different for each container.
fn container_id(c: usize) -> String {
    format!("{c:04x}1c2a9b8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f")
}

fn docker_record(f: &mut Vec<u8>, c: usize, line: &str) {
    rmp::encode::write_map_len(f, 4).unwrap();
    for (k, v) in [
        ("container_id", container_id(c)),
        ("container_name", format!("/shop-web-{c}")),
        ("source", "stdout".into()),
        ("log", line.into()),
    ] {
        rmp::encode::write_str(f, k).unwrap();
        rmp::encode::write_str(f, &v).unwrap();
    }
}

/// Now: a sink drops events older than `spool.max_age`, so a fixed time
/// would one day leave the file sink nothing to write.
fn event_time(f: &mut Vec<u8>) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as u32;
    f.extend_from_slice(&[0xd7, 0x00]);
    f.extend_from_slice(&now.to_be_bytes());
    f.extend_from_slice(&123_456_789u32.to_be_bytes());
}

/// `[tag, bin([time, record] * n), {}]`, records of container `c`.
fn packed_frame(c: usize, n: usize) -> Vec<u8> {
    let mut entries = Vec::new();
    for _ in 0..n {
        rmp::encode::write_array_len(&mut entries, 2).unwrap();
        event_time(&mut entries);
        docker_record(&mut entries, c, LINE);
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

/// The receiver's in-process stages, measured apart.
mod stages {
    use std::sync::Arc;

    use weir::event::codec;
    use weir::scrub::{FieldMemo, Scrubber};
    use weir::source::forward::batch::{Batch, Spares};
    use weir::source::forward::decode::{self, DecodeLimits, FrameDecoder, Record, TagCache};
    use weir::source::forward::{docker, frame, MAX_DEPTH};

    /// CPU s per million events (us per event) of each stage.
    pub struct Stages {
        pub framing: f64,
        pub decode: f64,
        pub build: f64,
        pub scrub: f64,
        pub encode: f64,
        /// The spool reader decoding the record's events (delivery).
        pub read: Option<f64>,
        /// The file sink's JSON line (delivery).
        pub json: Option<f64>,
    }

    impl Stages {
        pub fn sum(&self) -> f64 {
            self.framing
                + self.decode
                + self.build
                + self.scrub
                + self.encode
                + self.read.unwrap_or(0.0)
                + self.json.unwrap_or(0.0)
        }
    }

    /// This thread's CPU time in ns (the scheduler's own count, which it
    /// brings up to date at its ticks: only long intervals are exact).
    fn thread_ns() -> u64 {
        let s = std::fs::read_to_string("/proc/thread-self/schedstat").unwrap();
        s.split_whitespace().next().unwrap().parse().unwrap()
    }

    /// Events per round: a batch as the receiver appends it.
    const ROUND: usize = 4096;
    /// Each stage runs at least this long (and this many events), so that
    /// the scheduler's tick (4 ms) is a small part of what is measured.
    const AT_LEAST: std::time::Duration = std::time::Duration::from_millis(300);
    const EVENTS: usize = 200_000;

    /// Runs `round` (which returns the events it handled) until it has run
    /// long enough; returns this thread's CPU ns per event.
    fn timed(mut round: impl FnMut() -> usize) -> f64 {
        let (cpu, wall) = (thread_ns(), std::time::Instant::now());
        let mut events = 0;
        while events < EVENTS || wall.elapsed() < AT_LEAST {
            events += round();
        }
        (thread_ns() - cpu) as f64 / events as f64
    }

    /// Runs each stage over one connection's `frames` (cycled through,
    /// as its client writes them) with the scrubber `scrub`
    /// configures, as the receiver does: one record scratch per buffer,
    /// events refilled in a reused batch, one scrub memo per connection
    /// (the bench's lines have nothing to rewrite, so scrubbing the same
    /// batch again costs what scrubbing new ones would), a spool record
    /// (events + CRC32C) per batch; with `delivery`, the record's events
    /// decoded back and written as the file sink's lines.
    pub fn measure(frames: &[Vec<u8>], scrub: &str, delivery: bool) -> Stages {
        let raw: weir::scrub::RawConfig = toml::from_str(scrub).unwrap();
        let mut problems = weir::problems::Problems::default();
        let config = raw.validate("scrub", &mut problems);
        assert!(problems.is_empty(), "{problems:?}");
        let scrubber = Arc::new(Scrubber::with_key(&config, [7; 32]).unwrap());
        let limits = DecodeLimits {
            frame: frame::Limits {
                max_bytes: 16 << 20,
                max_depth: MAX_DEPTH,
            },
            max_decompressed_bytes: 64 << 20,
        };
        let per_frame = count(&frames[0], &limits);
        let rounds = ROUND.div_ceil(per_frame);
        // The frames of a round, cycling through the connection's.
        let round = || frames.iter().cycle().take(rounds);
        // A Message-mode frame (Docker's) is decoded straight, not framed.
        let straight = decode::message(&frames[0], &limits, &mut Record::default()).is_some();
        let framing = if straight {
            0.0
        } else {
            timed(|| {
                for f in round() {
                    std::hint::black_box(frame::scan(f, limits.frame).unwrap());
                }
                rounds * per_frame
            })
        };
        // One per connection, as the receiver keeps it.
        let mut tags = TagCache::default();
        let decode = timed(|| {
            for f in round() {
                decode_frame(f, &limits, &mut tags, &mut |_, r| {
                    std::hint::black_box(r.entries.len());
                });
            }
            rounds * per_frame
        });
        let spares = Spares::default();
        let fill = |batch: &mut Batch<'_>, tags: &mut TagCache| {
            for f in round() {
                decode_frame(f, &limits, tags, &mut |tag, r| {
                    let (event, like) = batch.slot_like();
                    docker::fill_event_like(event, like, tag, r);
                    batch.count_last();
                });
            }
        };
        let build = timed(|| {
            let mut batch = Batch::new(&spares);
            fill(&mut batch, &mut tags);
            let n = batch.len();
            batch.clear();
            n
        });
        let mut batch = Batch::new(&spares);
        fill(&mut batch, &mut tags);
        for e in batch.events_mut() {
            e.labels.host = Some("bench-host".into());
        }
        let mut memo = FieldMemo::new();
        let scrub = timed(|| {
            for e in batch.events_mut() {
                scrubber.scrub_with(e, Some(&mut memo));
            }
            batch.len()
        });
        let mut out = Vec::new();
        let encode = timed(|| {
            out.clear();
            codec::encode_events(batch.events_mut(), &mut out);
            std::hint::black_box(crc32c::crc32c(&out));
            batch.len()
        });
        let per_m = |ns: f64| ns / 1e3;
        let (mut read, mut json) = (None, None);
        if delivery {
            let n = batch.len();
            // As the spool reader decodes: into reused events, each holding
            // another event's strings (rotated every round), as pooled ones do.
            let mut decoder = codec::Decoder::new(codec::Version::V2);
            let mut into = batch.events_mut().to_vec();
            read = Some(per_m(timed(|| {
                into.rotate_left(1);
                decoder.reset(codec::Version::V2);
                let mut at = 0;
                for e in into.iter_mut() {
                    decoder.decode_into(&out, &mut at, e).unwrap();
                }
                std::hint::black_box(&into);
                n
            })));
            let mut line = Vec::new();
            json = Some(per_m(timed(|| {
                line.clear();
                for e in batch.events_mut().iter() {
                    weir::sink::file::write_line(&mut line, e);
                }
                std::hint::black_box(&line);
                n
            })));
        }
        Stages {
            framing: per_m(framing),
            decode: per_m(decode),
            build: per_m((build - decode).max(0.0)),
            scrub: per_m(scrub),
            encode: per_m(encode),
            read,
            json,
        }
    }

    fn decode_frame(
        bytes: &[u8],
        limits: &DecodeLimits,
        tags: &mut TagCache,
        on_event: &mut dyn FnMut(&str, &Record<'_>),
    ) {
        let mut record = Record::default();
        // As the receiver decodes it: straight for Message mode.
        if let Some(m) = decode::message(bytes, limits, &mut record) {
            assert_eq!(m.len, bytes.len());
            on_event(tags.text(m.raw_tag), &record);
            return;
        }
        let mut f = FrameDecoder::start(bytes, limits).unwrap();
        while !f.is_done() {
            f.decode_some(bytes, limits, &mut record, 64, on_event, &mut |e| {
                panic!("bench frame skipped an event: {e}")
            })
            .unwrap();
        }
    }

    fn count(bytes: &[u8], limits: &DecodeLimits) -> usize {
        let mut n = 0;
        decode_frame(bytes, limits, &mut TagCache::default(), &mut |_, _| n += 1);
        n
    }
}
