//! Sink errors say what failed (issue 23, item 7). Each test points a real
//! sink loop (Loki, GELF over HTTP, TCP, TLS) at a real loopback peer that
//! fails one way (an unresolvable `.invalid` name, a closed port, a TLS
//! server whose CA is not trusted, a server that never answers, an HTTP
//! 503) and checks both sides of the contract: the log line's `error=`
//! names the specific cause, and the metric label stays the coarse word
//! dashboards already use.

use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::instrument::WithSubscriber;
use tracing::level_filters::LevelFilter;
use weir::event::{Event, Origin};
use weir::problems::Problems;
use weir::selflog::{self, CaptureWriter, RateLimit};
use weir::sink::{self, gelf, loki};
use weir::spool::{self, Spool};

/// A sink loop over its own spool in a temp dir, its log captured.
struct Running {
    name: String,
    _spool: Spool,
    stop: CancellationToken,
    log: CaptureWriter,
    _dir: tempfile::TempDir,
}

impl Running {
    async fn start(name: &str, toml_text: &str) -> Running {
        let raw: sink::RawConfig = toml::from_str(toml_text).unwrap();
        let mut problems = Problems::default();
        let config = raw.validate(&format!("sinks.{name}"), &mut problems);
        assert!(problems.is_empty(), "{problems:?}");
        let dir = tempfile::tempdir().unwrap();
        let spool_config = spool::RawConfig::default().validate("spool", &mut problems);
        let spool = Spool::open(dir.path(), &spool_config, &[name.to_owned()]).unwrap();
        let reader = spool.reader(name).unwrap();
        let stop = CancellationToken::new();
        let log = CaptureWriter::default();
        let sub = selflog::text_subscriber(log.clone(), LevelFilter::INFO, RateLimit::default());
        let (n, s) = (name.to_owned(), stop.clone());
        match config {
            sink::Config::Loki(c) => tokio::spawn(loki::run(n, c, reader, s).with_subscriber(sub)),
            sink::Config::Gelf(c) => tokio::spawn(gelf::run(n, c, reader, s).with_subscriber(sub)),
            sink::Config::File(_) => unreachable!("no network"),
        };
        // Now: Loki's sink drops entries older than it would accept.
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as i64;
        let event = Event::new(now, Origin::Docker, "SECRET-PAYLOAD");
        spool.append(&[event], None).await.unwrap();
        Running {
            name: name.to_owned(),
            _spool: spool,
            stop,
            log,
            _dir: dir,
        }
    }

    fn errors(&self, reason: &str) -> f64 {
        self._spool
            .metrics()
            .value(
                "weir_sink_errors_total",
                &[("sink", &self.name), ("reason", reason)],
            )
            .unwrap_or(0.0)
    }

    /// Waits for the first failed attempt; returns its log line.
    async fn first_failure(&self, reason: &str) -> String {
        for _ in 0..1000 {
            if self.errors(reason) >= 1.0 {
                let log = self.log.contents();
                if let Some(line) = log.lines().find(|l| l.contains("retrying")) {
                    assert!(!log.contains("SECRET-PAYLOAD"), "payload in the log: {log}");
                    eprintln!("{line}");
                    return line.to_owned();
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!(
            "no {reason} failure logged by {} within 20 s; log:\n{}",
            self.name,
            self.log.contents()
        );
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// A port nothing listens on (bound, then closed).
async fn closed_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap().port()
}

/// A server that accepts connections and never says a word.
async fn silent_server() -> (u16, tokio::task::JoinHandle<()>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = l.accept().await {
            held.push(s);
        }
    });
    (port, task)
}

/// An HTTP server answering every request `503 Service Unavailable`.
async fn unavailable_server() -> (u16, tokio::task::JoinHandle<()>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 65536];
                // Answer after the first bytes of the request; close after.
                let _ = tokio::io::AsyncReadExt::read(&mut s, &mut buf).await;
                let _ = s
                    .write_all(b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                    .await;
            });
        }
    });
    (port, task)
}

/// A TLS server for `localhost` with a self-signed certificate the client
/// is not told to trust.
async fn untrusted_tls_server() -> (u16, tokio::task::JoinHandle<()>) {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let acceptor = crate::common::tls_acceptor(&ck);
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let _ = acceptor.accept(s).await;
            });
        }
    });
    (port, task)
}

fn loki(url: &str) -> String {
    format!("type = \"loki\"\nurl = \"{url}\"\nconnect_timeout = \"1s\"\nrequest_timeout = \"1s\"")
}

fn gelf(address: &str) -> String {
    format!("type = \"gelf\"\naddress = \"{address}\"")
}

fn assert_detail(line: &str, wanted: &str) {
    assert!(line.contains(wanted), "wanted `{wanted}` in: {line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unresolvable_host_says_dns_and_the_name() {
    let loki = Running::start(
        "err-dns-loki",
        &loki("http://nowhere.invalid:3100/loki/api/v1/push"),
    )
    .await;
    let http = Running::start(
        "err-dns-gelf-http",
        &gelf("http://nowhere.invalid:12201/gelf"),
    )
    .await;
    let tcp = Running::start("err-dns-gelf-tcp", &gelf("tcp://nowhere.invalid:12201")).await;
    // Labels as before: Loki and GELF HTTP said `connect`, GELF TCP `resolve`.
    let line = loki.first_failure("connect").await;
    assert_detail(&line, "error=dns: no such host nowhere.invalid");
    let line = http.first_failure("connect").await;
    assert_detail(&line, "error=dns: no such host nowhere.invalid");
    let line = tcp.first_failure("resolve").await;
    assert_detail(&line, "error=dns: no such host nowhere.invalid");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_port_says_refused() {
    let port = closed_port().await;
    let loki = Running::start(
        "err-refused-loki",
        &loki(&format!("http://127.0.0.1:{port}/loki/api/v1/push")),
    )
    .await;
    let http = Running::start(
        "err-refused-gelf-http",
        &gelf(&format!("http://127.0.0.1:{port}/gelf")),
    )
    .await;
    let tcp = Running::start(
        "err-refused-gelf-tcp",
        &gelf(&format!("tcp://127.0.0.1:{port}")),
    )
    .await;
    let line = loki.first_failure("connect").await;
    assert_detail(&line, &format!("error=refused (127.0.0.1:{port})"));
    let line = http.first_failure("connect").await;
    assert_detail(&line, "error=refused (");
    let line = tcp.first_failure("connect").await;
    assert_detail(&line, &format!("error=refused (127.0.0.1:{port})"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_ca_says_tls_and_the_verify_reason() {
    let (port, _server) = untrusted_tls_server().await;
    let loki = Running::start(
        "err-tls-loki",
        &loki(&format!("https://localhost:{port}/loki/api/v1/push")),
    )
    .await;
    let http = Running::start(
        "err-tls-gelf-http",
        &gelf(&format!("https://localhost:{port}/gelf")),
    )
    .await;
    let tls = Running::start(
        "err-tls-gelf-tls",
        &gelf(&format!("tls://localhost:{port}")),
    )
    .await;
    for sink in [&loki, &http, &tls] {
        let line = sink.first_failure("tls").await;
        assert_detail(&line, "error=tls: certificate verify failed: UnknownIssuer");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_never_answers_says_timeout_after_the_limit() {
    let (port, _server) = silent_server().await;
    let loki = Running::start(
        "err-timeout-loki",
        &loki(&format!("http://127.0.0.1:{port}/loki/api/v1/push")),
    )
    .await;
    let http = Running::start(
        "err-timeout-gelf-http",
        &format!(
            "{}\nrequest_timeout = \"1s\"",
            gelf(&format!("http://127.0.0.1:{port}/gelf"))
        ),
    )
    .await;
    let line = loki.first_failure("timeout").await;
    assert_detail(&line, &format!("error=timeout after 1s (127.0.0.1:{port})"));
    let line = http.first_failure("timeout").await;
    assert_detail(&line, "error=timeout after 1s (");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_error_says_the_status() {
    let (port, _server) = unavailable_server().await;
    let loki = Running::start(
        "err-503-loki",
        &loki(&format!("http://127.0.0.1:{port}/loki/api/v1/push")),
    )
    .await;
    let http = Running::start(
        "err-503-gelf-http",
        &gelf(&format!("http://127.0.0.1:{port}/gelf")),
    )
    .await;
    let line = loki.first_failure("server_error").await;
    assert_detail(&line, &format!("error=HTTP 503 from 127.0.0.1:{port}"));
    let line = http.first_failure("server_error").await;
    assert_detail(&line, "answered HTTP 503");
}
