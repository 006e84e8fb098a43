//! The end-to-end fault suite: the real `weir` binary as a child process (so
//! `kill -9` is real) on temporary dirs, Forward clients that record what was
//! acknowledged, and the Loki test receiver behind it.
//!
//! Scale: the default is short (what CI runs); `WEIR_E2E=full` runs the long
//! form (`scripts/fault-suite.sh`). Every scenario prints one line
//! `scenario: sent N, acknowledged N, delivered N, lost N, duplicated N`:
//! - sent: frames written by clients (an unacknowledged one may or may not
//!   have been spooled);
//! - acknowledged: frames whose `{"ack": chunk}` came back: weir promised them;
//! - delivered: distinct sent ids the receiver accepted;
//! - lost: acknowledged ids never delivered (must be 0, except where a
//!   documented policy drops data and counts it: see `disk_full`);
//! - duplicated: entries the receiver got more than once (Loki ignores exact
//!   duplicates; the receiver counts them in `Stats::received`).

mod disk_full;
mod garbage;
mod incident2;
mod kill9;
mod outage;
mod scrub;
mod thin_disk;

use std::collections::HashSet;
use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::{wait_for, weir_bin};
use crate::forward::message_frame;
use crate::loki_receiver::{Limits, Receiver};

/// True for the long form (`WEIR_E2E=full`).
pub fn full() -> bool {
    std::env::var("WEIR_E2E").as_deref() == Ok("full")
}

/// `ci` in the short form, `full` in the long one.
pub fn scale<T>(ci: T, full_value: T) -> T {
    if full() {
        full_value
    } else {
        ci
    }
}

/// A free TCP port on 127.0.0.1 (for weir's metrics endpoint).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Where one scenario's weir lives and how it is configured.
pub struct Setup {
    /// Holds the config, socket and stderr file; removed on drop.
    _dir: tempfile::TempDir,
    pub socket: PathBuf,
    pub config: PathBuf,
    /// weir's stderr over every run of this setup (appended across restarts).
    pub stderr: PathBuf,
    /// 0 when the metrics endpoint is off.
    pub metrics_port: u16,
}

impl Setup {
    /// A forward source `fwd` on a unix socket, a Loki sink `loki` (raw
    /// lines, short batches and backoff so a test does not wait, unless
    /// `loki` sets its own `batch_timeout`), the scrubber
    /// and spool on their defaults unless `spool` says otherwise. `extra` is
    /// appended (more sources, sink keys go in `loki`).
    pub fn new(
        state_dir: Option<PathBuf>,
        loki_url: &str,
        metrics: bool,
        spool: &str,
        loki: &str,
        extra: &str,
    ) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let state_dir = state_dir.unwrap_or_else(|| dir.path().join("state"));
        let socket = dir.path().join("forward.sock");
        let metrics_port = if metrics { free_port() } else { 0 };
        let listen = if metrics {
            format!("127.0.0.1:{metrics_port}")
        } else {
            String::new()
        };
        let text = format!(
            r#"
state_dir = "{state}"
hostname = "e2e-host"

[sources.fwd]
type = "forward"
listen = "unix://{socket}"

[spool]
{spool}

[sinks.loki]
type = "loki"
url = "{loki_url}"
line_format = "raw"
{batch_timeout}
retry_initial_backoff = "100ms"
retry_max_backoff = "1s"
{loki}

[metrics]
listen = "{listen}"

{extra}
"#,
            state = state_dir.display(),
            socket = socket.display(),
            batch_timeout = if loki.contains("batch_timeout") {
                ""
            } else {
                "batch_timeout = \"200ms\""
            },
        );
        let config = dir.path().join("weir.toml");
        std::fs::write(&config, text).unwrap();
        let stderr = dir.path().join("weir.stderr");
        Setup {
            socket,
            config,
            stderr,
            metrics_port,
            _dir: dir,
        }
    }

    /// Starts `weir run` on this setup; waits until the socket accepts.
    pub fn start(&self) -> WeirChild {
        let mut cmd = Command::new(weir_bin());
        self.start_with(&mut cmd)
    }

    /// Starts `cmd` (the weir binary, possibly wrapped) with this config.
    pub fn start_with(&self, cmd: &mut Command) -> WeirChild {
        let log = File::options()
            .create(true)
            .append(true)
            .open(&self.stderr)
            .unwrap();
        let child = cmd
            .args(["run", "--config"])
            .arg(&self.config)
            .env("WEIR_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("weir run");
        let mut weir = WeirChild(child);
        let socket = self.socket.clone();
        wait_for("weir's forward socket", Duration::from_secs(60), || {
            if let Ok(Some(status)) = weir.0.try_wait() {
                panic!("weir exited at start: {status}; its log:\n{}", self.log());
            }
            UnixStream::connect(&socket).ok()
        });
        weir
    }

    /// weir's stderr so far.
    pub fn log(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.stderr).unwrap_or_default()).into_owned()
    }

    /// The sum of every series of `family` whose labels include `labels`.
    pub fn metric(&self, family: &str, labels: &[(&str, &str)]) -> f64 {
        assert_ne!(self.metrics_port, 0, "metrics endpoint off in this setup");
        metric_sum(&scrape(self.metrics_port), family, labels)
    }
}

/// A `weir run` child process, SIGKILLed on drop.
pub struct WeirChild(pub Child);

impl WeirChild {
    /// `kill -9`, and reap it.
    pub fn kill9(mut self) {
        self.0.kill().unwrap();
        self.0.wait().unwrap();
    }

    /// Panics if weir has exited.
    pub fn assert_alive(&mut self) {
        if let Some(status) = self.0.try_wait().unwrap() {
            panic!("weir died: {status}");
        }
    }
}

impl Drop for WeirChild {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `GET /metrics` over plain HTTP/1.1 (empty on any failure).
pub fn scrape(port: u16) -> String {
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return String::new();
    };
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = s.write_all(b"GET /metrics HTTP/1.1\r\nHost: weir\r\nConnection: close\r\n\r\n");
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    text.split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default()
}

/// Sums the samples of `family` (Prometheus text) whose labels include all of `labels`.
pub fn metric_sum(text: &str, family: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            let name_end = l.find(['{', ' ']).unwrap_or(l.len());
            &l[..name_end] == family
        })
        .filter(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// A Loki receiver on a runtime of its own (the test threads stay blocking).
pub struct Loki {
    pub receiver: Receiver,
    pub rt: tokio::runtime::Runtime,
}

impl Loki {
    pub fn start(limits: Limits) -> Loki {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let receiver = rt.block_on(Receiver::start_with(limits, None));
        Loki { receiver, rt }
    }

    pub fn down(&self) {
        self.rt.block_on(self.receiver.down());
    }

    pub fn up(&self) {
        self.rt.block_on(self.receiver.up());
    }

    /// The ids (first word of each raw line) of every accepted entry.
    pub fn ids(&self) -> HashSet<String> {
        self.receiver
            .entries()
            .into_iter()
            .filter_map(|e| e.line.split(' ').next().map(str::to_owned))
            .collect()
    }

    /// Waits until every id of `want` was accepted; returns the delivered ids.
    pub fn wait_ids(&self, want: &HashSet<String>, timeout: Duration) -> HashSet<String> {
        let start = Instant::now();
        loop {
            let got = self.ids();
            let missing = want.difference(&got).count();
            if missing == 0 {
                return got;
            }
            if start.elapsed() > timeout {
                eprintln!("{missing} acknowledged ids still missing after {timeout:?}");
                return got;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// What one client sent and got acknowledged.
#[derive(Default)]
pub struct ClientLog {
    pub sent: Vec<String>,
    pub acked: Vec<String>,
    /// Longest wait for one ack.
    pub max_ack_wait: Duration,
}

/// A Forward client on its own thread: Message-mode frames with a `chunk`
/// (the id), one at a time, each waiting for its ack; reconnects whenever
/// weir is away. Stops after `limit` frames or when `stop` is set.
pub fn spawn_client(
    socket: PathBuf,
    prefix: String,
    line_len: usize,
    limit: Option<u64>,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<ClientLog> {
    std::thread::spawn(move || {
        let mut log = ClientLog::default();
        let mut conn: Option<UnixStream> = None;
        let mut seq = 0u64;
        while !stop.load(Ordering::Relaxed) && !matches!(limit, Some(l) if seq >= l) {
            let s = match conn.as_mut() {
                Some(s) => s,
                None => match UnixStream::connect(&socket) {
                    Ok(s) => {
                        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
                        conn.insert(s)
                    }
                    Err(_) => {
                        std::thread::sleep(Duration::from_millis(20));
                        continue;
                    }
                },
            };
            let id = format!("{prefix}-{seq}");
            seq += 1;
            let line = padded(&id, line_len);
            let frame = message_frame("e2e", &[("message", &line)], Some(&id));
            log.sent.push(id.clone());
            let started = Instant::now();
            if s.write_all(&frame).is_err() {
                conn = None;
                continue;
            }
            match try_read_ack(s) {
                Some(ack) if ack == id => {
                    log.max_ack_wait = log.max_ack_wait.max(started.elapsed());
                    log.acked.push(id);
                }
                _ => conn = None,
            }
        }
        log
    })
}

/// `n` clients as [`spawn_client`], with ids `{prefix}{c}-{seq}`.
pub fn spawn_clients(
    n: usize,
    socket: &Path,
    prefix: &str,
    line_len: usize,
    limit: Option<u64>,
    stop: &Arc<AtomicBool>,
) -> Vec<std::thread::JoinHandle<ClientLog>> {
    (0..n)
        .map(|c| {
            let prefix = format!("{prefix}{c}");
            spawn_client(socket.to_owned(), prefix, line_len, limit, stop.clone())
        })
        .collect()
}

/// `id` followed by filler up to `len` bytes (what a log line looks like).
pub fn padded(id: &str, len: usize) -> String {
    let mut line = format!("{id} level=info msg=\"request served\" path=/api/items");
    let mut i = 0u64;
    while line.len() < len {
        i = i
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        line.push(char::from(b'a' + (i >> 59) as u8 % 26));
    }
    line.truncate(len.max(id.len()));
    line
}

/// Reads one `{"ack": chunk}`; `None` on EOF, timeout or garbage.
pub fn try_read_ack(s: &mut UnixStream) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Ack {
        ack: String,
    }
    rmp_serde::from_read::<_, Ack>(&mut *s).ok().map(|a| a.ack)
}

/// Merges client logs into (sent, acked) id sets.
pub fn merge(logs: &[ClientLog]) -> (HashSet<String>, HashSet<String>) {
    let sent = logs.iter().flat_map(|l| l.sent.iter().cloned()).collect();
    let acked = logs.iter().flat_map(|l| l.acked.iter().cloned()).collect();
    (sent, acked)
}

/// One scenario's books.
#[derive(Debug)]
pub struct Books {
    pub sent: usize,
    pub acked: usize,
    pub delivered: usize,
    pub lost: usize,
    pub duplicated: u64,
}

impl Books {
    /// Counts against the receiver: `delivered` only counts ids that were sent.
    pub fn count(
        sent: &HashSet<String>,
        acked: &HashSet<String>,
        delivered: &HashSet<String>,
        loki: &Loki,
    ) -> Books {
        let stats = loki.receiver.stats();
        Books {
            sent: sent.len(),
            acked: acked.len(),
            delivered: delivered.intersection(sent).count(),
            lost: acked.difference(delivered).count(),
            duplicated: stats.received - stats.accepted,
        }
    }

    pub fn print(&self, scenario: &str) {
        println!(
            "{scenario}: sent {}, acknowledged {}, delivered {}, lost {}, duplicated {}",
            self.sent, self.acked, self.delivered, self.lost, self.duplicated
        );
    }
}

/// Guards a mount point: unmounted (lazily, so a straggler cannot block
/// cleanup) when dropped, also on panic.
pub struct Tmpfs(pub PathBuf);

impl Tmpfs {
    pub fn mount(path: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(path).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(path)
            .status()
            .expect("mount(8)")
            .success();
        assert!(
            ok,
            "cannot mount a tmpfs on {} (root needed)",
            path.display()
        );
        Tmpfs(path.to_owned())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}
