//! The metrics endpoint, /health and /ready, `weir status`, the Grafana
//! dashboard, and the books-balance check (events received = spooled =
//! delivered + dropped, per sink).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use weir::metrics::http::{self, Address};
use weir::metrics::{labels, names, Metrics, Snapshot};

use crate::common::{wait_for, weir_bin, weir_run, weir_says, KillOnDrop};

const TIMEOUT: Duration = Duration::from_secs(5);

fn get(address: &Address, path: &str) -> Result<http::Answer, http::GetError> {
    http::get(address, path, TIMEOUT)
}

/// The agent's `/status`.
fn snapshot(address: &Address) -> Snapshot {
    let r = get(address, "/status").unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.content_type.as_deref(), Some("application/json"));
    serde_json::from_str(&r.body).unwrap()
}

/// A free TCP port on 127.0.0.1 (bound, read, released).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A config with a (placeholder) forward source on a temp socket and a file
/// sink, its metrics endpoint on `listen`.
fn config_text(dir: &Path, sink: &str, listen: &str) -> String {
    format!(
        "state_dir = \"{d}/state\"\n\
         [sources.docker]\ntype = \"forward\"\nlisten = \"unix://{d}/forward.sock\"\n\
         [sinks.{sink}]\ntype = \"file\"\npath = \"{d}/out/events.ndjson\"\n\
         [metrics]\nlisten = \"{listen}\"\n",
        d = dir.display()
    )
}

/// `weir::run` on its own runtime; cancelled and joined on drop.
struct InProcess {
    metrics: Metrics,
    shutdown: CancellationToken,
    runtime: Option<tokio::runtime::Runtime>,
    done: Option<tokio::task::JoinHandle<Result<(), weir::pipeline::RunError>>>,
}

impl InProcess {
    fn start(config_text: &str) -> InProcess {
        let config = weir::config::parse(config_text, "test").unwrap();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let shutdown = CancellationToken::new();
        let metrics = Metrics::new();
        let (stop, registry) = (shutdown.clone(), metrics.clone());
        let done = runtime.spawn(async move {
            weir::pipeline::run_counting_in(config, stop, None, &registry).await
        });
        InProcess {
            metrics,
            shutdown,
            runtime: Some(runtime),
            done: Some(done),
        }
    }

    /// Cancels and waits for `weir::run` to return.
    fn stop(&mut self) -> Result<(), weir::pipeline::RunError> {
        self.shutdown.cancel();
        let (Some(rt), Some(done)) = (self.runtime.as_ref(), self.done.take()) else {
            return Ok(());
        };
        rt.block_on(done).unwrap()
    }
}

impl Drop for InProcess {
    fn drop(&mut self) {
        let _ = self.stop();
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_timeout(Duration::from_secs(5));
        }
    }
}

fn wait_ready(address: &Address) {
    wait_for("/ready to answer 200", Duration::from_secs(10), || {
        get(address, "/ready").ok().filter(|r| r.status == 200)
    });
}

/// Checks `text` against the exposition format independently of weir's own
/// parser: every sample belongs to a family announced by exactly one HELP and
/// one TYPE before it, names and label names are valid, label values are
/// properly escaped, values are numbers. Returns family -> (type, the label
/// names of each sample).
fn validate_exposition(text: &str) -> BTreeMap<String, (String, Vec<BTreeSet<String>>)> {
    let mut help = BTreeSet::new();
    let mut families: BTreeMap<String, (String, Vec<BTreeSet<String>>)> = BTreeMap::new();
    let valid_name = |s: &str| {
        !s.is_empty()
            && !s.starts_with(|c: char| c.is_ascii_digit())
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    };
    assert!(text.ends_with('\n'), "exposition must end with a newline");
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let name = rest.split(' ').next().unwrap();
            assert!(valid_name(name), "bad family name in {line:?}");
            assert!(help.insert(name.to_owned()), "second HELP for {name}");
            assert!(
                !rest[name.len()..].trim().is_empty(),
                "empty HELP: {line:?}"
            );
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            assert!(help.contains(name), "TYPE before HELP for {name}");
            assert!(matches!(kind, "counter" | "gauge"), "{line:?}");
            let prev = families.insert(name.to_owned(), (kind.to_owned(), Vec::new()));
            assert!(prev.is_none(), "second TYPE for {name}");
            continue;
        }
        assert!(!line.starts_with('#') && !line.is_empty(), "{line:?}");
        let name_end = line.find(['{', ' ']).unwrap();
        let name = &line[..name_end];
        let fam = families
            .get_mut(name)
            .unwrap_or_else(|| panic!("sample {line:?} has no TYPE/HELP before it"));
        let mut rest = &line[name_end..];
        let mut label_names = BTreeSet::new();
        if let Some(labels) = rest.strip_prefix('{') {
            let mut chars = labels.char_indices();
            loop {
                let start = chars.as_str();
                let eq = start.find('=').expect("label without =");
                let label = &start[..eq];
                assert!(valid_name(label) && !label.starts_with("__"), "{line:?}");
                assert!(label_names.insert(label.to_owned()), "{line:?}");
                for _ in 0..=eq {
                    chars.next();
                }
                assert_eq!(chars.next().map(|c| c.1), Some('"'), "{line:?}");
                loop {
                    match chars.next().expect("unterminated label value").1 {
                        '"' => break,
                        '\\' => assert!(
                            matches!(chars.next().map(|c| c.1), Some('\\' | '"' | 'n')),
                            "bad escape in {line:?}"
                        ),
                        '\n' => panic!("raw newline"),
                        _ => {}
                    }
                }
                match chars.next().expect("label set not closed").1 {
                    ',' => continue,
                    '}' => break,
                    c => panic!("unexpected {c:?} in {line:?}"),
                }
            }
            rest = chars.as_str();
        }
        let value = rest.strip_prefix(' ').expect("space before value");
        assert!(
            matches!(value, "+Inf" | "-Inf" | "NaN") || value.parse::<f64>().is_ok(),
            "value {value:?} in {line:?}"
        );
        if fam.0 == "counter" {
            assert!(
                value.parse::<f64>().unwrap() >= 0.0,
                "negative counter {line:?}"
            );
        }
        fam.1.push(label_names);
    }
    families
}

#[test]
fn endpoint_serves_valid_exposition_and_the_catalog_covers_it() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let weir = InProcess::start(&config_text(dir.path(), "expo", &listen));
    // A hostile label value, to see it escaped on the wire.
    let hostile = "quote\" backslash\\ newline\n end";
    weir.metrics
        .sink_errors
        .with(labels::SinkReason::new("expo", hostile))
        .add(3);
    let address = Address::parse(&listen).unwrap();
    wait_ready(&address);

    let r = get(&address, "/metrics").unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(
        r.content_type.as_deref(),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let families = validate_exposition(&r.body);
    assert!(
        r.body.contains(
            "weir_sink_errors_total{sink=\"expo\",reason=\"quote\\\" backslash\\\\ newline\\n end\"} 3\n"
        ),
        "{}",
        r.body
    );
    assert_eq!(
        weir.metrics
            .value(names::SINK_ERRORS, &[("sink", "expo"), ("reason", hostile)]),
        Some(3.0)
    );
    assert!(r
        .body
        .contains("# HELP weir_sink_errors_total Failed delivery attempts, by sink and reason.\n"));

    // The agent's own families are there, with plausible values.
    let version = env!("CARGO_PKG_VERSION");
    assert!(r
        .body
        .contains(&format!("weir_build_info{{version=\"{version}\"}} 1\n")));
    let value = |name| weir.metrics.value(name, &[]).unwrap();
    assert_eq!(value(names::UP), 1.0);
    assert_eq!(value(names::SPOOL_MAX_BYTES), (1u64 << 30) as f64);
    assert!(value(names::PROCESS_RESIDENT_MEMORY) > 1e6);
    assert!(value(names::PROCESS_OPEN_FDS) >= 3.0);
    assert!(value(names::PROCESS_START_TIME) > 1.6e9);
    assert!(r
        .body
        .contains("weir_sink_events_sent_total{sink=\"expo\"} "));

    // Every weir/process family on the wire is in the catalog, with its
    // type and label names: the dashboard relies on it.
    for (name, (kind, samples)) in &families {
        let entry = names::find(name)
            .unwrap_or_else(|| panic!("{name} is registered but missing from metrics::names::ALL"));
        assert_eq!(entry.kind.as_str(), kind, "{name}");
        let want: BTreeSet<String> = entry.labels.iter().map(|l| (*l).to_owned()).collect();
        for got in samples {
            assert_eq!(got, &want, "labels of {name}");
        }
    }

    // `/status` is the same registry, as one snapshot.
    let s = snapshot(&address);
    assert_eq!(s.version, version);
    assert_eq!(s.sinks["expo"].errors[hostile], 3);
    assert_eq!(s.spool.max_bytes, 1 << 30);
    // ... the forward source's memory budget included.
    assert_eq!(
        s.sources["docker"].buffered_bytes as f64,
        weir.metrics
            .value(names::SOURCE_BUFFERED_BYTES, &[("source", "docker")])
            .unwrap()
    );
    assert!(s.sources["docker"].buffered_bytes > 0);
    assert_eq!(s.sources["docker"].budget_gave_way, 0);
    assert_eq!((s.unhealthy, s.not_ready), (None, None));
}

/// Runs Prometheus's `promtool` with `args`, `stdin` on its standard input.
fn promtool(args: &[&str], stdin: &str) -> (bool, String) {
    let mut child = Command::new("promtool")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot run promtool ({e}): run scripts/deps.sh, which installs it from Debian's prometheus package")
        });
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn prometheus_own_checker_accepts_the_exposition() {
    let dir = tempfile::tempdir().unwrap();
    let listen = format!("unix://{}/m.sock", dir.path().display());
    let _weir = InProcess::start(&config_text(dir.path(), "promtool", &listen));
    let address = Address::parse(&listen).unwrap();
    wait_ready(&address);
    let body = get(&address, "/metrics").unwrap().body;
    // `check metrics` parses the text and lints names, units and HELP.
    let (ok, out) = promtool(&["check", "metrics"], &body);
    assert!(ok, "promtool check metrics:\n{out}\n---\n{body}");
    // And it does reject a broken exposition, so the check means something.
    let (ok, _) = promtool(&["check", "metrics"], "weir_x{a=\"b} 1\n");
    assert!(!ok, "promtool accepted garbage");
}

#[test]
fn health_and_ready_follow_the_lifecycle() {
    // The endpoint and a Health driven by hand: every transition, deterministically.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let shutdown = CancellationToken::new();
    let health = weir::metrics::Health::new(shutdown.clone());
    let stop = CancellationToken::new();
    let listener = rt
        .block_on(http::bind("127.0.0.1:0"))
        .expect("bind an ephemeral port");
    let address = listener.local_address();
    let server = {
        let _in_runtime = rt.enter();
        http::serve(listener, Metrics::new(), health.clone(), stop.clone())
    };

    let status = |path| get(&address, path).unwrap();
    assert_eq!(status("/health").status, 200);
    let r = status("/ready");
    assert_eq!(r.status, 503, "not ready before the pipeline says so");
    assert!(r.body.contains("starting"), "{}", r.body);
    health.set_ready();
    assert_eq!(status("/ready").status, 200);
    shutdown.cancel();
    let r = status("/ready");
    assert_eq!(r.status, 503, "503 during shutdown");
    assert!(r.body.contains("shutting down"), "{}", r.body);
    assert_eq!(status("/health").status, 200, "alive while shutting down");
    health.set_stopped();
    assert_eq!(status("/health").status, 503);
    stop.cancel();
    rt.block_on(server).unwrap();
    assert!(matches!(
        get(&address, "/health"),
        Err(http::GetError::Connect { .. })
    ));
}

#[test]
fn the_pipeline_is_ready_after_start_and_never_after_cancel() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("run/metrics.sock");
    let listen = format!("unix://{}", sock.display());
    let mut weir = InProcess::start(&config_text(dir.path(), "lifecycle", &listen));
    let address = Address::parse(&listen).unwrap();
    wait_ready(&address);
    assert_eq!(get(&address, "/health").unwrap().status, 200);

    // Once the token is cancelled no answer may say ready; then the endpoint
    // goes away with the pipeline, and so does its socket file.
    weir.shutdown.cancel();
    let mut answers = Vec::new();
    // An error is a refusal, or a reset while queued in the backlog of a
    // listener that just closed: the endpoint is gone either way.
    while let Ok(r) = get(&address, "/ready") {
        answers.push(r.status);
        assert!(answers.len() < 10_000, "endpoint still up after shutdown");
    }
    assert!(answers.iter().all(|&s| s == 503), "{answers:?}");
    weir.stop().unwrap();
    assert!(!sock.exists(), "socket file left behind");
}

#[test]
fn unix_socket_listener_replaces_a_stale_socket_and_refuses_a_live_one() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("metrics.sock");
    let listen = format!("unix://{}", sock.display());
    // A socket file left by a crashed process: nobody accepts on it.
    drop(std::os::unix::net::UnixListener::bind(&sock).unwrap());
    assert!(sock.exists());
    let mut weir = InProcess::start(&config_text(dir.path(), "unixsock", &listen));
    let address = Address::parse(&listen).unwrap();
    wait_ready(&address);
    let r = get(&address, "/metrics").unwrap();
    assert_eq!(r.status, 200);
    validate_exposition(&r.body);

    // A second agent on the same socket must not steal it.
    let other = tempfile::tempdir().unwrap();
    let mut second = InProcess::start(&config_text(other.path(), "unixsock2", &listen));
    let err = second.stop().expect_err("the second bind must fail");
    let msg = err.to_string();
    assert!(
        msg.contains(&listen) && msg.contains("metrics.listen"),
        "{msg}"
    );
    assert_eq!(
        get(&address, "/health").unwrap().status,
        200,
        "first agent unaffected"
    );
    weir.stop().unwrap();
}

/// Starts `weir run` with `config`, killed on drop.
fn start_agent(config: &Path) -> KillOnDrop {
    KillOnDrop(weir_run(config).stdout(Stdio::null()).spawn().unwrap())
}

/// `weir status ARGS`: its exit code and what it printed.
fn weir_status(args: &[&str]) -> (Option<i32>, String) {
    weir_says(&[&["status"], args].concat())
}

#[test]
fn a_metrics_bind_failure_stops_startup_and_says_which_address() {
    let dir = tempfile::tempdir().unwrap();
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let listen = held.local_addr().unwrap().to_string();
    let config = dir.path().join("weir.toml");
    std::fs::write(&config, config_text(dir.path(), "local", &listen)).unwrap();
    let out = Command::new(weir_bin())
        .args(["run", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("cannot listen on {listen} for /metrics"))
            && err.contains("metrics.listen"),
        "{err}"
    );
}

#[test]
fn weir_status_summarizes_a_running_agent_and_fails_when_it_is_gone() {
    let dir = tempfile::tempdir().unwrap();
    let listen = format!("unix://{}/metrics.sock", dir.path().display());
    let config = dir.path().join("weir.toml");
    std::fs::write(&config, config_text(dir.path(), "local", &listen)).unwrap();
    let config_arg = config.to_str().unwrap();
    let agent = start_agent(&config);
    wait_ready(&Address::parse(&listen).unwrap());

    let (code, text) = weir_status(&["--config", config_arg]);
    assert_eq!(code, Some(0), "{text}");
    let version = env!("CARGO_PKG_VERSION");
    for want in [
        format!("weir {version} at {listen}: up "),
        "health ok, ready".into(),
        // An empty spool is one segment header.
        "B of 1.0 GiB (0.0%), 1 segments".into(),
        "  local: 0.0 events/s".into(),
        // The forward source's memory budget: the batches set aside at
        // start (8 of 4 MiB with the defaults) are held from the start.
        "  docker: 0.0 events/s".into(),
        "    memory budget (max_buffered_bytes): 32.0 MiB held, 0 connections gave way".into(),
        "last success never".into(),
        "weir's own log: ".into(),
        "status: healthy".into(),
    ] {
        assert!(text.contains(&want), "missing {want:?} in:\n{text}");
    }
    // --address wins over the config.
    let (code, text) = weir_status(&["--address", &listen]);
    assert_eq!(code, Some(0), "{text}");

    drop(agent);
    let (code, text) = weir_status(&["--config", config_arg]);
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains(&format!("UNHEALTHY: agent unreachable at {listen}")),
        "{text}"
    );
    let (code, text) = weir_status(&["--address", "not an address"]);
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("host:port"), "{text}");
}

/// One Forward-protocol Message-mode entry, as Docker's driver sends it:
/// `[tag, time, record]`.
fn forward_message(container: &str, i: usize) -> Vec<u8> {
    let mut record = HashMap::new();
    record.insert("container_name", format!("/{container}"));
    record.insert("source", "stdout".to_owned());
    record.insert("log", format!("line {i} from {container}"));
    rmp_serde::to_vec(&(
        "docker.test",
        (std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs())
            + i as u64,
        record,
    ))
    .unwrap()
}

/// (received by `source`, spooled by `source`, sent by `sink`, dropped for
/// `sink` over every reason).
fn counts(s: &Snapshot, source: &str, sink: &str) -> (u64, u64, u64, u64) {
    let src = s.sources.get(source).cloned().unwrap_or_default();
    let snk = s.sinks.get(sink).cloned().unwrap_or_default();
    (
        src.events_received,
        src.events_spooled,
        snk.events_sent,
        snk.dropped.values().sum(),
    )
}

/// What must hold at any scrape, even mid-load: nothing is spooled that was
/// not received, nothing delivered or dropped that was not spooled.
fn check_books_in_flight(s: &Snapshot, source: &str, sinks: &[&str]) {
    for sink in sinks {
        let (received, spooled, sent, dropped) = counts(s, source, sink);
        assert!(
            spooled <= received,
            "{sink}: spooled {spooled} > received {received}"
        );
        assert!(
            sent + dropped <= spooled,
            "{sink}: sent {sent} + dropped {dropped} > spooled {spooled}"
        );
    }
}

/// Waits until every sink accounts for `total` events, then checks the
/// books exactly: received = spooled = sent + dropped, the drops summed over
/// their reasons, and each sink's file holds as many lines as it was
/// counted to send.
fn check_books_settled(address: &Address, source: &str, sinks: &[(&str, PathBuf)], total: u64) {
    let last = wait_for(
        "every sink to account for every event",
        Duration::from_secs(60),
        || {
            let s = snapshot(address);
            let settled = sinks.iter().all(|(sink, _)| {
                let (received, spooled, sent, dropped) = counts(&s, source, sink);
                received == total && spooled == total && sent + dropped == total
            });
            settled.then_some(s)
        },
    );
    for (sink, path) in sinks {
        let (received, spooled, sent, dropped) = counts(&last, source, sink);
        assert_eq!(received, total);
        assert_eq!(spooled, received);
        assert_eq!(
            sent + dropped,
            spooled,
            "{sink}: sent {sent}, dropped {:?}",
            last.sinks[*sink].dropped
        );
        // The exposition says the same as the snapshot.
        let exposed: f64 = last.sinks[*sink]
            .dropped
            .keys()
            .map(|reason| {
                let body = get(address, "/metrics").unwrap().body;
                let line = format!(
                    "{}{{sink=\"{sink}\",reason=\"{reason}\"}} ",
                    names::SPOOL_DROPPED_EVENTS
                );
                body.lines()
                    .find_map(|l| l.strip_prefix(line.as_str()))
                    .map_or(0.0, |v| v.parse::<f64>().unwrap())
            })
            .sum();
        assert_eq!(exposed, dropped as f64, "{sink}");
        let lines = std::fs::read_to_string(path).unwrap().lines().count() as u64;
        assert_eq!(
            lines, sent,
            "{sink}: the file holds what was counted as sent"
        );
    }
    let errors = last.sources[source].decode_errors.values().sum::<u64>();
    assert_eq!(errors, 0);
}

/// The books balance through the parts that are real in every branch:
/// Ingest, the spool API, two file sinks and the endpoint, scraped while
/// producers append. The producer stands in for a source (the sources are
/// placeholders until issues 4 and 5) and counts what it "receives" under
/// the source metric name, exactly as a source must.
#[test]
fn books_balance_in_process_through_ingest_spool_and_sinks() {
    use std::sync::Arc;
    use weir::event::{Event, Origin};
    const PRODUCERS: usize = 4;
    const BATCHES: usize = 50;
    const PER_BATCH: usize = 100;
    let source = "books_src";
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    let listen = format!("unix://{d}/metrics.sock");
    let config = weir::config::parse(
        &format!(
            "state_dir = \"{d}/state\"\n\
             [sources.{source}]\ntype = \"forward\"\nlisten = \"unix://{d}/f.sock\"\n\
             [sinks.books_a]\ntype = \"file\"\npath = \"{d}/a/events.ndjson\"\n\
             [sinks.books_b]\ntype = \"file\"\npath = \"{d}/b/events.ndjson\"\n"
        ),
        "test",
    )
    .unwrap();
    let sinks = [
        ("books_a", dir.path().join("a/events.ndjson")),
        ("books_b", dir.path().join("b/events.ndjson")),
    ];
    let sink_names: Vec<&str> = sinks.iter().map(|(n, _)| *n).collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let stop = CancellationToken::new();
    let _stop_on_exit = stop.clone().drop_guard();
    let producers = rt.block_on(async {
        let names: Vec<String> = config.sinks.keys().cloned().collect();
        let spool =
            weir::spool::Spool::open(&config.state_dir.join("spool"), &config.spool, &names)
                .unwrap();
        let metrics = spool.metrics().clone();
        let scrubber = Arc::new(
            weir::scrub::Scrubber::new(&config.scrub, &config.state_dir)
                .unwrap()
                .counting_in(&metrics),
        );
        let ingest = weir::ingest::Ingest::new(spool.clone(), scrubber, "testhost");
        for (name, c) in &config.sinks {
            weir::sink::spawn(name, c, spool.reader(name).unwrap(), stop.clone());
        }
        let health = weir::metrics::Health::new(stop.clone());
        health.set_ready();
        let listener = http::bind(&listen).await.unwrap();
        http::serve(listener, metrics.clone(), health, stop.clone());
        let received = metrics.source_events_received.with(labels::source(source));
        (0..PRODUCERS)
            .map(|p| {
                let ingest = ingest.clone();
                let received = received.clone();
                tokio::spawn(async move {
                    for b in 0..BATCHES {
                        let events: Vec<Event> = (0..PER_BATCH)
                            .map(|i| {
                                let msg = format!("producer {p} batch {b} event {i}");
                                Event::new(
                                    std::time::SystemTime::now()
                                        .duration_since(std::time::UNIX_EPOCH)
                                        .unwrap()
                                        .as_nanos() as i64,
                                    Origin::Docker,
                                    msg,
                                )
                            })
                            .collect();
                        received.add(events.len() as u64);
                        ingest.append(source, events, None).await.unwrap();
                        tokio::task::yield_now().await;
                    }
                })
            })
            .collect::<Vec<_>>()
    });
    let address = Address::parse(&listen).unwrap();
    let mut scrapes = 0;
    while !producers.iter().all(|p| p.is_finished()) || scrapes == 0 {
        let s = snapshot(&address);
        check_books_in_flight(&s, source, &sink_names);
        scrapes += 1;
    }
    for p in producers {
        rt.block_on(p).unwrap();
    }
    let total = (PRODUCERS * BATCHES * PER_BATCH) as u64;
    check_books_settled(&address, source, &sinks, total);
}

/// The books balance: with clients sending through the forward source,
/// every scrape during the load has spooled <= received and
/// delivered + dropped <= spooled for every sink, and once the load is
/// delivered, received = spooled = delivered + dropped (dropped per reason),
/// and the sinks hold exactly what they were counted to deliver.
#[test]
fn books_balance_under_load() {
    const CLIENTS: usize = 4;
    const PER_CLIENT: usize = 5_000;
    let dir = tempfile::tempdir().unwrap();
    let listen = format!("unix://{}/metrics.sock", dir.path().display());
    let forward: PathBuf = dir.path().join("forward.sock");
    let config = dir.path().join("weir.toml");
    // Two sinks, so that "for every sink" means something; a spool smaller
    // than the load (20,000 events of ~150 bytes), so that drops may happen
    // and must then be counted.
    let text = format!(
        "{}[sinks.second]\ntype = \"file\"\npath = \"{}/out2/events.ndjson\"\n\
         [spool]\nmax_bytes = \"1MiB\"\nsegment_bytes = \"64KiB\"\n",
        config_text(dir.path(), "local", &listen),
        dir.path().display()
    );
    std::fs::write(&config, text).unwrap();
    let _agent = start_agent(&config);
    let address = Address::parse(&listen).unwrap();
    wait_ready(&address);
    let sinks = [
        ("local", dir.path().join("out/events.ndjson")),
        ("second", dir.path().join("out2/events.ndjson")),
    ];

    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let forward = forward.clone();
            std::thread::spawn(move || {
                let mut s = std::os::unix::net::UnixStream::connect(&forward).unwrap();
                for i in 0..PER_CLIENT {
                    s.write_all(&forward_message(&format!("c{c}"), i)).unwrap();
                }
            })
        })
        .collect();
    let sink_names: Vec<&str> = sinks.iter().map(|(n, _)| *n).collect();
    let mut scrapes = 0;
    while !clients.iter().all(|c| c.is_finished()) {
        let s = snapshot(&address);
        check_books_in_flight(&s, "docker", &sink_names);
        scrapes += 1;
        std::thread::sleep(Duration::from_millis(50));
    }
    for c in clients {
        c.join().unwrap();
    }
    assert!(scrapes > 0, "the load finished before a single scrape");
    check_books_settled(&address, "docker", &sinks, (CLIENTS * PER_CLIENT) as u64);
}

#[test]
fn grafana_dashboard_is_valid_and_queries_only_registered_metrics() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/packaging/grafana/weir.json");
    let dash: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap())
        .expect("weir.json is valid JSON");
    let schema = dash["schemaVersion"].as_u64().expect("schemaVersion");
    assert!((36..=41).contains(&schema), "schemaVersion {schema}");
    assert!(dash["title"].is_string() && dash["uid"].is_string());
    assert!(dash["id"].is_null(), "an exported dashboard has id null");
    let input = &dash["__inputs"][0];
    assert_eq!(input["name"], "DS_PROMETHEUS");
    assert_eq!(input["type"], "datasource");
    assert_eq!(input["pluginId"], "prometheus");
    let vars: BTreeMap<&str, &serde_json::Value> = dash["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| (v["name"].as_str().unwrap(), v))
        .collect();
    assert_eq!(vars["DS_PROMETHEUS"]["type"], "datasource");
    assert_eq!(vars["DS_PROMETHEUS"]["query"], "prometheus");
    assert_eq!(vars["instance"]["type"], "query");

    let catalog: BTreeSet<&str> = names::ALL.iter().map(|f| f.name).collect();
    let mut ids = BTreeSet::new();
    let mut used = BTreeSet::new();
    let mut exprs: Vec<String> = Vec::new();
    let mut panels: Vec<&serde_json::Value> = dash["panels"].as_array().unwrap().iter().collect();
    // Collapsed rows nest their panels.
    let nested: Vec<&serde_json::Value> = panels
        .iter()
        .filter_map(|p| p["panels"].as_array())
        .flatten()
        .collect();
    panels.extend(nested);
    let mut graphs = 0;
    for p in panels {
        let title = p["title"].as_str().expect("every panel has a title");
        assert!(
            ids.insert(p["id"].as_u64().expect("numeric id")),
            "duplicate id at {title}"
        );
        let grid = &p["gridPos"];
        for k in ["h", "w", "x", "y"] {
            assert!(grid[k].is_u64(), "{title}: gridPos.{k}");
        }
        assert!(
            grid["x"].as_u64().unwrap() + grid["w"].as_u64().unwrap() <= 24,
            "{title}"
        );
        if p["type"] == "row" {
            continue;
        }
        graphs += 1;
        assert!(
            matches!(p["type"].as_str(), Some("timeseries" | "stat")),
            "{title}"
        );
        assert_eq!(p["datasource"]["uid"], "${DS_PROMETHEUS}", "{title}");
        let targets = p["targets"]
            .as_array()
            .unwrap_or_else(|| panic!("{title}: targets"));
        assert!(!targets.is_empty(), "{title}: no query");
        let mut ref_ids = BTreeSet::new();
        for t in targets {
            assert!(
                ref_ids.insert(t["refId"].as_str().unwrap()),
                "{title}: refId"
            );
            let expr = t["expr"]
                .as_str()
                .unwrap_or_else(|| panic!("{title}: expr"));
            exprs.push(expr.to_owned());
            assert!(
                expr.contains("instance=~\"$instance\""),
                "{title}: {expr} ignores $instance"
            );
            assert_eq!(
                expr.matches('(').count(),
                expr.matches(')').count(),
                "{title}: {expr}"
            );
            let metrics: Vec<&str> = expr
                .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
                .filter(|w| w.starts_with("weir_") || w.starts_with("process_"))
                .collect();
            assert!(!metrics.is_empty(), "{title}: {expr} names no weir metric");
            for m in metrics {
                assert!(
                    catalog.contains(m),
                    "{title}: {m} is not a metric weir registers"
                );
                used.insert(m);
            }
        }
    }
    assert!(graphs >= 20, "only {graphs} panels");
    // Every query is valid PromQL by Prometheus's own parser: as recording
    // rules, with Grafana's variables replaced by what they expand to.
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, expr) in exprs.iter().enumerate() {
        let expanded = expr
            .replace("$__rate_interval", "1m")
            .replace("$instance", ".+");
        rules.push_str(&format!(
            "      - record: weir:dashboard_query_{i}\n        expr: {}\n",
            serde_json::to_string(&expanded).unwrap()
        ));
    }
    assert_eq!(exprs.len(), rules.matches("record:").count());
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), &rules).unwrap();
    let (ok, out) = promtool(&["check", "rules", file.path().to_str().unwrap()], "");
    assert!(ok, "a dashboard query is not valid PromQL:\n{out}");
    assert!(
        out.contains(&format!("SUCCESS: {} rules found", exprs.len())),
        "{out}"
    );
    // What the brief asks the dashboard to show.
    for must in [
        names::SOURCE_EVENTS_RECEIVED,
        names::SOURCE_DECODE_ERRORS,
        names::SCRUB_REWRITES,
        names::SPOOL_BYTES,
        names::SPOOL_MAX_BYTES,
        names::SPOOL_SEGMENTS,
        names::SPOOL_SINK_LAG_BYTES,
        names::SPOOL_OLDEST_UNACKED,
        names::SINK_EVENTS_SENT,
        names::SPOOL_DROPPED_EVENTS,
        names::SINK_REJECTED_EVENTS,
        names::SINK_ERRORS,
        names::SINK_RETRIES,
        names::SINK_SPLITS,
        names::LOG_MESSAGES,
        names::LOG_MESSAGES_SUPPRESSED,
        names::PROCESS_CPU_SECONDS,
        names::PROCESS_RESIDENT_MEMORY,
    ] {
        assert!(used.contains(must), "the dashboard does not show {must}");
    }
}
