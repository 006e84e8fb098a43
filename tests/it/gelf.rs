//! GELF sink against real decoders: Graylog's own Go library (go-gelf's UDP
//! reader, which reassembles chunks and inflates gzip/zlib) for UDP, and
//! Rust TCP/TLS listeners in the test for null-byte framing, reconnects and
//! TLS. Each test drives the real sink loop (`weir::sink::gelf::run`) over a
//! spool in a temp dir, with events appended through the spool API.
//!
//! Needs `go` and Debian's golang-github-graylog2-go-gelf-dev
//! (`scripts/deps.sh`); without them the UDP tests fail, saying so.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use serde_json::Value;
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use weir::config::Problems;
use weir::event::{Event, Level, Origin};
use weir::metrics;
use weir::sink::gelf;
use weir::spool::{self, Spool};

const GO_GELF: &str = "/usr/share/gocode/src/github.com/Graylog2/go-gelf/gelf";
const TS: i64 = 1_700_000_000_123_456_789;

// ---------------------------------------------------------------- peers --

/// The go-gelf receiver, built once per source version and cached in
/// `target/tmp/gelfrecv-<hash of main.go>`.
fn gelfrecv_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/go/gelfrecv/main.go");
        let code = std::fs::read(&src).expect("tests/go/gelfrecv/main.go");
        // FNV-1a: stable across Rust versions, unlike DefaultHasher.
        let hash = code.iter().fold(0xcbf29ce484222325u64, |h, b| {
            (h ^ u64::from(*b)).wrapping_mul(0x100000001b3)
        });
        let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
        let bin = tmp.join(format!("gelfrecv-{hash:016x}"));
        if bin.exists() {
            return bin;
        }
        assert!(
            Path::new(GO_GELF).is_dir(),
            "go-gelf sources missing at {GO_GELF}: install golang-github-graylog2-go-gelf-dev (scripts/deps.sh)"
        );
        let partial = tmp.join(format!("gelfrecv-{hash:016x}.{}", std::process::id()));
        let out = Command::new("go")
            .args(["build", "-o"])
            .arg(&partial)
            .arg(&src)
            .env("GO111MODULE", "off")
            .env("GOPATH", "/usr/share/gocode")
            .env("GOFLAGS", "")
            .env("GOCACHE", tmp.join("go-cache"))
            .output()
            .expect("cannot run `go`: install golang-go (scripts/deps.sh)");
        assert!(
            out.status.success(),
            "building gelfrecv failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::rename(&partial, &bin).unwrap();
        bin
    })
}

/// A running go-gelf UDP reader; killed on drop.
struct GoGelf {
    child: Child,
    addr: String,
    lines: mpsc::UnboundedReceiver<String>,
}

impl GoGelf {
    fn start() -> GoGelf {
        GoGelf::start_with(&[])
    }

    /// go-gelf's reader exactly as shipped (`gelf.NewReader`): the kernel's
    /// default socket receive buffer.
    fn start_default_buffer() -> GoGelf {
        GoGelf::start_with(&["default-buffer"])
    }

    fn start_with(args: &[&str]) -> GoGelf {
        let mut child = Command::new(gelfrecv_bin())
            .arg("127.0.0.1:0")
            .args(args)
            .stdout(Stdio::piped())
            .spawn()
            .expect("start gelfrecv");
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut first = String::new();
        stdout.read_line(&mut first).unwrap();
        let addr = first
            .strip_prefix("LISTENING ")
            .unwrap_or_else(|| panic!("gelfrecv said {first:?}"))
            .trim()
            .to_owned();
        let (tx, lines) = mpsc::unbounded_channel();
        std::thread::spawn(move || {
            for line in stdout.lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        GoGelf { child, addr, lines }
    }

    /// The next decoded message; fails on a decode error or after 10 s.
    async fn next(&mut self) -> Value {
        let line = tokio::time::timeout(Duration::from_secs(10), self.lines.recv())
            .await
            .expect("no GELF message decoded within 10 s")
            .expect("gelfrecv exited");
        let v: Value = serde_json::from_str(&line).unwrap();
        assert!(v.get("error").is_none(), "go-gelf could not decode: {v}");
        v
    }
}

impl Drop for GoGelf {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl GoGelf {
    /// Decoded messages and decode errors until `want` messages arrived or
    /// nothing came for `quiet`.
    async fn collect(&mut self, want: usize, quiet: Duration) -> (Vec<Value>, usize) {
        let (mut decoded, mut errors) = (Vec::new(), 0);
        while decoded.len() < want {
            let Ok(Some(line)) = tokio::time::timeout(quiet, self.lines.recv()).await else {
                break;
            };
            let v: Value = serde_json::from_str(&line).unwrap();
            if v.get("error").is_some() {
                errors += 1;
            } else {
                decoded.push(v);
            }
        }
        (decoded, errors)
    }
}

// ----------------------------------------------------------------- sink --

/// The real sink loop over a temp spool; stopped on drop.
struct Sink {
    name: String,
    spool: Spool,
    stop: CancellationToken,
    handle: Option<tokio::task::JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

impl Sink {
    fn start(name: &str, toml_text: &str) -> Sink {
        let raw: gelf::RawConfig = toml::from_str(toml_text).unwrap();
        let mut problems = Problems::default();
        let config = raw.validate(&format!("sinks.{name}"), &mut problems);
        assert!(problems.is_empty(), "{problems:?}");
        let dir = tempfile::tempdir().unwrap();
        let spool_config = spool::RawConfig::default().validate("spool", &mut problems);
        let spool = Spool::open(dir.path(), &spool_config, &[name.to_owned()]).unwrap();
        let reader = spool.reader(name).unwrap();
        let stop = CancellationToken::new();
        let handle = tokio::spawn(gelf::run(name.to_owned(), config, reader, stop.clone()));
        Sink {
            name: name.to_owned(),
            spool,
            stop,
            handle: Some(handle),
            _dir: dir,
        }
    }

    async fn append(&self, events: &[Event]) {
        self.spool.append(events, None).await.unwrap();
    }

    fn metric(&self, name: &str) -> f64 {
        metrics::value(name, &[("sink", &self.name)]).unwrap_or(0.0)
    }

    fn errors(&self, reason: &str) -> f64 {
        metrics::value(
            "weir_sink_errors_total",
            &[("sink", &self.name), ("reason", reason)],
        )
        .unwrap_or(0.0)
    }

    /// Cancels and waits; fails if the loop does not stop at once.
    async fn stop(mut self) {
        self.stop.cancel();
        let handle = self.handle.take().unwrap();
        tokio::time::timeout(Duration::from_secs(1), handle)
            .await
            .expect("sink did not stop within 1 s of shutdown")
            .unwrap();
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    for _ in 0..500 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out after 10 s waiting for {what}");
}

// --------------------------------------------------------------- events --

/// Deterministic text that gzip cannot squeeze much (about 6 bits a byte).
fn noise(len: usize, seed: u64) -> String {
    let mut state = seed;
    (0..len)
        .map(|i| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            if i % 100 == 99 {
                '\n'
            } else {
                char::from(b'!' + (state >> 58) as u8)
            }
        })
        .collect()
}

fn docker_event(message: &str, stream: &str) -> Event {
    let mut e = Event::new(TS, Origin::Docker, message);
    e.labels.host = Some("web-1".into());
    e.labels.app = Some("shop".into());
    e.labels.service = Some("db".into());
    e.labels.container_name = Some("shop-db-1".into());
    for (k, v) in [
        ("container_id", "4f2a9c0e1b7d"),
        ("container_name", "/shop-db-1"),
        ("stream", stream),
        ("tag", "docker.4f2a9c0e1b7d"),
        ("com.docker.compose.project", "shop"),
    ] {
        e.fields.push((k.into(), v.into()));
    }
    e
}

fn journal_event(message: &str) -> Event {
    let mut e = Event::new(TS, Origin::Journal, message);
    e.labels.host = Some("db-host".into());
    e.labels.unit = Some("cron.service".into());
    e.labels.level = Some(Level::Warning);
    for (k, v) in [
        ("_SYSTEMD_UNIT", "cron.service"),
        ("_PID", "4242"),
        ("_COMM", "cron"),
        ("SYSLOG_IDENTIFIER", "CRON"),
        ("PRIORITY", "4"),
    ] {
        e.fields.push((k.into(), v.into()));
    }
    e
}

fn field_name_ok(name: &str) -> bool {
    name.chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

// ---------------------------------------------------------------- tests --

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_gzip_zlib_and_plain_decode_with_go_gelf() {
    for compression in ["gzip", "zlib", "none"] {
        let mut peer = GoGelf::start();
        let sink = Sink::start(
            &format!("gelf-udp-{compression}"),
            &format!(
                "address = \"udp://{}\"\ncompression = \"{compression}\"",
                peer.addr
            ),
        );
        // ~30 KB of poorly compressible lines: many 1420-byte chunks whatever
        // the compression; go-gelf's reader truncates any single datagram
        // over 1420 bytes, so decoding it proves the chunking.
        let big = format!("panic: worker crashed\n{}", noise(30_000, 7));
        sink.append(&[
            docker_event("GET /health 200", "stdout"),
            docker_event(&big, "stderr"),
            journal_event("(root) CMD (run-parts /etc/cron.hourly)\n"),
        ])
        .await;

        let small = peer.next().await;
        assert_eq!(small["version"], "1.1", "{compression}");
        assert_eq!(small["host"], "web-1");
        assert_eq!(small["short_message"], "GET /health 200");
        assert!(small.get("full_message").is_none());
        assert_eq!(small["level"], 6);
        let ts = small["timestamp"].as_f64().unwrap();
        assert!((ts - 1_700_000_000.123456).abs() < 1e-5, "{ts}");
        assert_eq!(small["_container_id"], "4f2a9c0e1b7d");
        assert_eq!(small["_container_name"], "shop-db-1");
        assert_eq!(small["_tag"], "docker.4f2a9c0e1b7d");
        assert_eq!(small["_com.docker.compose.project"], "shop");
        assert_eq!(small["_app"], "shop");
        assert_eq!(small["_service"], "db");

        let chunked = peer.next().await;
        assert_eq!(chunked["short_message"], "panic: worker crashed");
        let full = chunked["full_message"].as_str().unwrap();
        // Trailing newlines are not part of a GELF message.
        assert!(
            full == big.trim_end(),
            "full_message differs ({} vs {} bytes)",
            full.len(),
            big.len()
        );
        assert_eq!(chunked["level"], 3);

        let journal = peer.next().await;
        assert_eq!(journal["host"], "db-host");
        assert_eq!(
            journal["short_message"],
            "(root) CMD (run-parts /etc/cron.hourly)"
        );
        assert_eq!(journal["level"], 4);
        assert_eq!(journal["_systemd_unit"], "cron.service");
        assert_eq!(journal["_pid"], "4242");
        assert_eq!(journal["_comm"], "cron");
        assert_eq!(journal["_syslog_identifier"], "CRON");
        assert!(journal.get("_priority").is_none());

        wait_until("3 events counted", || {
            sink.metric("weir_sink_events_sent_total") == 3.0
        })
        .await;
        assert_eq!(sink.metric("weir_sink_truncated_events_total"), 0.0);
        assert!(sink.metric("weir_sink_last_success_timestamp_seconds") > 1.7e9);
        sink.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_oversized_message_is_shrunk_decodable_and_counted() {
    let mut peer = GoGelf::start();
    let sink = Sink::start(
        "gelf-udp-oversized",
        &format!("address = \"udp://{}\"", peer.addr),
    );
    // 1 MB that gzip leaves at ~750 KB: over 4x the 128 x 1408 bytes allowed.
    let huge = format!("first line stays\n{}", noise(1_000_000, 11));
    sink.append(&[
        docker_event(&huge, "stdout"),
        docker_event("after", "stdout"),
    ])
    .await;
    let v = peer.next().await;
    assert_eq!(v["short_message"], "first line stays");
    assert_eq!(v["_container_id"], "4f2a9c0e1b7d");
    let full = v["full_message"].as_str().unwrap();
    assert!(full.ends_with(gelf::message::TRUNCATION_MARKER));
    let kept = full.len() - gelf::message::TRUNCATION_MARKER.len();
    assert!(full[..kept] == huge[..kept], "not a prefix of the original");
    assert!(kept > 100_000, "kept only {kept} bytes");
    assert_eq!(peer.next().await["short_message"], "after");
    wait_until("both counted", || {
        sink.metric("weir_sink_events_sent_total") == 2.0
    })
    .await;
    assert_eq!(sink.metric("weir_sink_truncated_events_total"), 1.0);
    sink.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn field_names_are_sanitised_and_id_never_sent() {
    let mut peer = GoGelf::start();
    let sink = Sink::start(
        "gelf-udp-names",
        &format!("address = \"udp://{}\"\ncompression = \"none\"", peer.addr),
    );
    let mut e = docker_event("names", "stdout");
    for k in ["id", "_id", "bad name!", "ünïcode", "gl2_remote_ip", "a/b"] {
        e.fields.push((k.into(), "v".into()));
    }
    let mut j = journal_event("journal names");
    j.fields.push(("ID".into(), "v".into()));
    j.fields.push(("MESSAGE_ID".into(), "fc2e22bc".into()));
    sink.append(&[e, j]).await;
    for _ in 0..2 {
        let v = peer.next().await;
        let names: Vec<&String> = v.as_object().unwrap().keys().collect();
        for n in &names {
            assert!(field_name_ok(n), "bad field name {n:?} in {names:?}");
            assert_ne!(n.as_str(), "_id", "{names:?}");
        }
        if v["short_message"] == "names" {
            for n in [
                "_id_",
                "__id_",
                "_bad_name_",
                "__n_code",
                "_gl2_remote_ip_",
                "_a_b",
            ] {
                assert_eq!(v[n], "v", "{n} missing in {names:?}");
            }
        } else {
            assert_eq!(v["_id_"], "v");
            assert_eq!(v["_message_id"], "fc2e22bc");
        }
    }
    sink.stop().await;
}

/// Reads null-terminated frames from `conn` until `n` were read.
async fn read_frames(conn: &mut (impl AsyncReadExt + Unpin), n: usize) -> Vec<Value> {
    let mut buf = Vec::new();
    let mut frames = Vec::new();
    let mut chunk = [0u8; 8192];
    while frames.len() < n {
        let got = tokio::time::timeout(Duration::from_secs(10), conn.read(&mut chunk))
            .await
            .expect("no GELF frame within 10 s")
            .unwrap();
        assert!(got > 0, "sink closed the connection");
        buf.extend_from_slice(&chunk[..got]);
        while let Some(end) = buf.iter().position(|b| *b == 0) {
            let frame: Vec<u8> = buf.drain(..=end).collect();
            frames.push(serde_json::from_slice(&frame[..end]).expect("frame is one JSON object"));
        }
    }
    assert!(buf.is_empty(), "bytes after the last frame");
    frames
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_frames_and_reconnects_after_server_restart() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let sink = Sink::start("gelf-tcp", &format!("address = \"tcp://{addr}\""));
    sink.append(&[
        docker_event("one", "stdout"),
        docker_event("two\nsecond line", "stderr"),
        journal_event("three"),
    ])
    .await;
    let (mut conn, _) = listener.accept().await.unwrap();
    let frames = read_frames(&mut conn, 3).await;
    let shorts: Vec<&str> = frames
        .iter()
        .map(|f| f["short_message"].as_str().unwrap())
        .collect();
    assert_eq!(shorts, ["one", "two", "three"]);
    assert_eq!(frames[1]["full_message"], "two\nsecond line");
    assert_eq!(frames[1]["level"], 3);
    assert_eq!(frames[2]["_pid"], "4242");

    // Graylog restarts: the connection and the listener go away, events keep coming.
    drop(conn);
    drop(listener);
    sink.append(&[docker_event("while down 1", "stdout")]).await;
    wait_until("a failed connect", || sink.errors("connect") >= 1.0).await;
    sink.append(&[docker_event("while down 2", "stdout")]).await;
    let listener = TcpListener::bind(addr).await.unwrap();
    let (mut conn, _) = listener.accept().await.unwrap();
    let mut shorts = Vec::new();
    while !shorts.contains(&"while down 2".to_owned()) {
        for f in read_frames(&mut conn, 1).await {
            shorts.push(f["short_message"].as_str().unwrap().to_owned());
        }
    }
    assert!(shorts.contains(&"while down 1".to_owned()), "{shorts:?}");
    assert!(sink.metric("weir_sink_retries_total") >= 1.0);
    wait_until("5 events counted", || {
        sink.metric("weir_sink_events_sent_total") >= 5.0
    })
    .await;
    sink.stop().await;
}

fn self_signed() -> (rcgen::CertifiedKey, tempfile::NamedTempFile) {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), ck.cert.pem()).unwrap();
    (ck, file)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_custom_ca_and_wrong_ca_is_refused() {
    use tokio_rustls::rustls;
    let (ck, ca_file) = self_signed();
    let (_, other_ca) = self_signed();
    let key = rustls::pki_types::PrivateKeyDer::try_from(ck.key_pair.serialize_der()).unwrap();
    let server = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![ck.cert.der().clone()], key)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();

    let wrong = Sink::start(
        "gelf-tls-wrong-ca",
        &format!(
            "address = \"tls://{addr}\"\nserver_name = \"localhost\"\nca_file = \"{}\"",
            other_ca.path().display()
        ),
    );
    wrong
        .append(&[docker_event("must not arrive", "stdout")])
        .await;
    let (tcp, _) = listener.accept().await.unwrap();
    assert!(acceptor.accept(tcp).await.is_err(), "handshake must fail");
    wait_until("a TLS error", || wrong.errors("tls") >= 1.0).await;
    assert_eq!(wrong.metric("weir_sink_events_sent_total"), 0.0);
    wrong.stop().await;

    let sink = Sink::start(
        "gelf-tls",
        &format!(
            "address = \"tls://{addr}\"\nserver_name = \"localhost\"\nca_file = \"{}\"",
            ca_file.path().display()
        ),
    );
    sink.append(&[
        docker_event("over tls", "stdout"),
        journal_event("also tls"),
    ])
    .await;
    let (tcp, _) = listener.accept().await.unwrap();
    let mut conn = acceptor.accept(tcp).await.unwrap();
    let frames = read_frames(&mut conn, 2).await;
    assert_eq!(frames[0]["short_message"], "over tls");
    assert_eq!(frames[1]["_comm"], "cron");
    wait_until("2 events counted", || {
        sink.metric("weir_sink_events_sent_total") == 2.0
    })
    .await;
    sink.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_stops_at_once_while_the_server_is_down() {
    // A port with nothing listening: the sink is in its retry loop.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let sink = Sink::start(
        "gelf-down",
        &format!("address = \"tcp://127.0.0.1:{port}\""),
    );
    sink.append(&[docker_event("pending", "stdout")]).await;
    wait_until("a failed connect", || sink.errors("connect") >= 1.0).await;
    assert_eq!(sink.metric("weir_sink_events_sent_total"), 0.0);
    sink.stop().await;
}

/// Issue 22's burst: 5,000 short lines and one 300 KB one from a container,
/// spooled at once (as after an outage), against go-gelf's reader exactly
/// as shipped (the kernel's default socket buffer). Unpaced, the reader
/// decoded 573 to 657 of the 5,000 and never the large one; at the default
/// `max_rate`, at least 99.9% and the large one (shrunk to 128 chunks).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_burst_at_the_default_rate_is_decoded_by_go_gelf() {
    const SHORT: usize = 5_000;
    let mut peer = GoGelf::start_default_buffer();
    let sink = Sink::start(
        "gelf-udp-burst",
        &format!("address = \"udp://{}\"", peer.addr),
    );
    let mut events: Vec<Event> = (0..SHORT)
        .map(|i| docker_event(&format!("GET /api/items/{i} 200 1.{i:03}ms"), "stdout"))
        .collect();
    events.insert(
        SHORT / 2,
        docker_event(&format!("big dump\n{}", noise(300_000, 3)), "stderr"),
    );
    sink.append(&events).await;

    let (decoded, errors) = peer.collect(SHORT + 1, Duration::from_secs(5)).await;
    wait_until("the burst counted as sent", || {
        sink.metric("weir_sink_events_sent_total") == (SHORT + 1) as f64
    })
    .await;
    let short = decoded
        .iter()
        .filter(|v| {
            v["short_message"]
                .as_str()
                .is_some_and(|m| m.starts_with("GET /api/items/"))
        })
        .count();
    let big: Vec<&Value> = decoded
        .iter()
        .filter(|v| v["short_message"] == "big dump")
        .collect();
    eprintln!(
        "burst: {short} of {SHORT} short decoded, large one {}, {errors} decode errors",
        big.len()
    );
    assert!(
        short * 1000 >= SHORT * 999,
        "go-gelf decoded only {short} of {SHORT} ({errors} decode errors)"
    );
    assert_eq!(
        big.len(),
        1,
        "the 300 KB message was not decoded ({errors} decode errors)"
    );
    let full = big[0]["full_message"].as_str().unwrap();
    assert!(full.len() > 100_000, "{} bytes", full.len());
    assert_eq!(sink.metric("weir_sink_truncated_events_total"), 1.0);
    sink.stop().await;
}
