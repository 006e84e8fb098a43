//! The attacks of issue 20 on the forward socket and the metrics port, each
//! against the real `weir` binary with a valid client beside it that must
//! keep getting its acks within 1 s, and weir's memory read from /proc.
//! Scaled down where the full attack only costs time and disk here (the
//! figures say what the unscaled attack did before).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::Child;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::common::{spawn_weir, wait_for};

use super::{closed_by_server, config_text_listen, connect, message_frame, read_ack};

/// One attack at a time: each loads the machine on purpose, and the valid
/// client's 1 s bound is about weir, not about four attacks sharing 2 cores.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// The real binary on a temporary directory, forward source on a unix socket.
struct Agent {
    _serial: std::sync::MutexGuard<'static, ()>,
    child: Child,
    _dir: tempfile::TempDir,
    socket: PathBuf,
}

impl Agent {
    /// Starts weir with `extra` in the source's section and the metrics
    /// endpoint on `metrics` (`""`: off); returns once the socket acks.
    fn start(extra: &str, metrics: &str) -> Agent {
        let serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("forward.sock");
        let listen = format!("unix://{}", socket.display());
        let text = config_text_listen(dir.path(), "attacked", &listen, extra)
            .replace("listen = \"\"", &format!("listen = \"{metrics}\""));
        let config = dir.path().join("weir.toml");
        std::fs::write(&config, text).unwrap();
        let mut child = spawn_weir(&config);
        // Drain weir's log so that it never blocks on a full pipe.
        let mut stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));
        let agent = Agent {
            _serial: serial,
            child,
            _dir: dir,
            socket,
        };
        let mut probe = wait_for("the forward socket", Duration::from_secs(30), || {
            UnixStream::connect(&agent.socket).ok()
        });
        probe
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        probe
            .write_all(&message_frame("t", &[("message", "probe")], Some("probe")))
            .unwrap();
        assert_eq!(read_ack(&mut probe), "probe");
        agent
    }

    /// A line of /proc/PID/status, in MiB (`VmRSS`, `VmHWM` for the peak).
    fn mib(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let line = status
            .lines()
            .find(|l| l.starts_with(field))
            .unwrap_or_else(|| panic!("no {field} in /proc/PID/status"));
        let kib: u64 = line
            .split_whitespace()
            .nth(1)
            .and_then(|n| n.parse().ok())
            .unwrap();
        kib / 1024
    }

    fn alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A valid client beside the attack: one event with a chunk every 100 ms;
/// every ack must come within 1 s.
struct Beside {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<Result<usize, String>>,
}

impl Beside {
    fn start(agent: &Agent) -> Beside {
        let stop = Arc::new(AtomicBool::new(false));
        let mut s = connect(&agent.socket);
        s.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
        let stopping = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut acked = 0;
            while !stopping.load(Ordering::Relaxed) {
                let chunk = format!("beside-{acked}");
                let sent = Instant::now();
                s.write_all(&message_frame("t", &[("message", "beside")], Some(&chunk)))
                    .map_err(|e| format!("write {chunk}: {e}"))?;
                let ack =
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| read_ack(&mut s)))
                        .map_err(|_| format!("no ack for {chunk} within 1s"))?;
                if ack != chunk {
                    return Err(format!("ack {ack:?} for {chunk:?}"));
                }
                assert!(sent.elapsed() < Duration::from_secs(1));
                acked += 1;
                std::thread::sleep(Duration::from_millis(100));
            }
            Ok(acked)
        });
        Beside { stop, thread }
    }

    /// Stops it; panics unless every ack came within 1 s.
    fn finish(self) -> usize {
        self.stop.store(true, Ordering::Relaxed);
        let acked = self
            .thread
            .join()
            .unwrap()
            .expect("the valid client beside");
        assert!(acked > 0);
        acked
    }
}

/// `n` three-byte `[0, {}]` entries, gzip-compressed, in one
/// CompressedPackedForward frame with a chunk.
fn tiny_entries_gzip_frame(n: usize, chunk: &str) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    let entry = [0x92, 0x00, 0x80];
    for _ in 0..n {
        enc.write_all(&entry).unwrap();
    }
    let gz = enc.finish().unwrap();
    let mut f = Vec::new();
    rmp::encode::write_array_len(&mut f, 3).unwrap();
    rmp::encode::write_str(&mut f, "t").unwrap();
    rmp::encode::write_bin(&mut f, &gz).unwrap();
    rmp::encode::write_map_len(&mut f, 2).unwrap();
    rmp::encode::write_str(&mut f, "chunk").unwrap();
    rmp::encode::write_str(&mut f, chunk).unwrap();
    rmp::encode::write_str(&mut f, "compressed").unwrap();
    rmp::encode::write_str(&mut f, "gzip").unwrap();
    f
}

/// Before: a 61 KB frame inflated to 20.9 M events, all in memory at once
/// (4.5 GB, abort). Here 400,000 events (about 240 MB before); weir must
/// append them in batches and grow by less than 64 MiB.
#[test]
fn a_small_gzip_frame_of_many_tiny_events_is_appended_in_batches() {
    let mut agent = Agent::start("", "");
    let beside = Beside::start(&agent);
    let before = agent.mib("VmRSS");
    let frame = tiny_entries_gzip_frame(400_000, "bomb");
    let mut s = connect(&agent.socket);
    s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    s.write_all(&frame).unwrap();
    assert_eq!(read_ack(&mut s), "bomb");
    let peak = agent.mib("VmHWM");
    let acked = beside.finish();
    eprintln!("400,000-event gzip frame: RSS {before} MiB before, peak {peak} MiB; {acked} acks beside, each within 1 s");
    assert!(agent.alive());
    assert!(
        peak < before + 64,
        "peak RSS {peak} MiB, {before} MiB before the frame"
    );
}

/// Before: a client that never read its acks made weir queue them without
/// bound (with 1 MiB chunk ids: +1 MiB per frame, 5.5 GB, abort). Now a
/// chunk id over 256 bytes closes the connection, and a client whose acks
/// back up is no longer read: its writes block.
#[test]
fn a_client_that_never_reads_its_acks_is_paused_and_long_chunk_ids_refused() {
    let mut agent = Agent::start("", "");
    let beside = Beside::start(&agent);
    let before = agent.mib("VmRSS");

    let mut long = connect(&agent.socket);
    long.write_all(&message_frame(
        "t",
        &[("message", "x")],
        Some(&"c".repeat(1 << 20)),
    ))
    .unwrap();
    assert!(closed_by_server(&mut long), "a 1 MiB chunk id was accepted");

    let mut s = connect(&agent.socket);
    s.set_write_timeout(Some(Duration::from_secs(3))).unwrap();
    let frame = message_frame(
        "t",
        &[("message", "never read")],
        Some("0123456789abcdef01234567"),
    );
    let mut frames = 0u64;
    let paused = loop {
        match s.write_all(&frame) {
            Ok(()) => frames += 1,
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                break true
            }
            Err(e) => panic!("write failed after {frames} frames: {e}"),
        }
        if frames > 2_000_000 {
            break false;
        }
    };
    assert!(
        paused,
        "weir read {frames} frames whose acks were never read"
    );
    let grown = agent.mib("VmHWM").saturating_sub(before);
    let acked = beside.finish();
    eprintln!("unread acks: paused after {frames} frames, RSS +{grown} MiB; {acked} acks beside, each within 1 s");
    assert!(agent.alive());
    assert!(grown < 64, "RSS grew by {grown} MiB ({frames} frames)");
}

/// Before: 5,000 connections that never send held all 1,024 slots; a valid
/// client got 0 of 40 acks. Now the longest-idle connection gives way.
#[test]
fn idle_connections_cannot_keep_a_valid_client_out() {
    let mut agent = Agent::start("max_connections = 256", "");
    let beside = Beside::start(&agent);
    let idle: Vec<UnixStream> = (0..1_000)
        .map(|_| UnixStream::connect(&agent.socket).unwrap())
        .collect();
    // A client connecting after the flood gets its ack within 1 s.
    for i in 0..5 {
        let mut late = connect(&agent.socket);
        late.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
        let chunk = format!("late-{i}");
        late.write_all(&message_frame("t", &[("message", "late")], Some(&chunk)))
            .unwrap();
        assert_eq!(read_ack(&mut late), chunk);
    }
    beside.finish();
    assert!(agent.alive());
    drop(idle);
}

/// Before: 2,000 idle connections to the metrics port made 3 of 3 scrapes
/// time out. Now each scrape is answered within 1 s.
#[test]
fn the_metrics_endpoint_answers_beside_2000_idle_connections() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut agent = Agent::start("", &format!("127.0.0.1:{port}"));
    let idle: Vec<TcpStream> = (0..2_000)
        .filter_map(|_| TcpStream::connect(("127.0.0.1", port)).ok())
        .collect();
    assert!(
        idle.len() > 1_000,
        "only {} idle connections opened",
        idle.len()
    );
    for _ in 0..3 {
        let started = Instant::now();
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: weir\r\n\r\n")
            .unwrap();
        let mut answer = String::new();
        s.read_to_string(&mut answer)
            .expect("a scrape answered within 1 s");
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer:.80}");
        assert!(answer.contains("weir_source_connections"));
        assert!(started.elapsed() < Duration::from_secs(1));
    }
    assert!(agent.alive());
    drop(idle);
}
