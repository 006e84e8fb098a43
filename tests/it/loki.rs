//! The Loki sink against the test receiver (`loki_receiver.rs`): the sink's
//! real `run` loop reading a real spool, over real HTTP(S).

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::instrument::WithSubscriber;
use tracing::level_filters::LevelFilter;
use weir::event::{Event, Level, Origin};
use weir::problems::Problems;
use weir::selflog::{self, CaptureWriter, RateLimit};
use weir::sink::loki;
use weir::spool::{self, Spool};

use crate::common::check_config_text;
use crate::loki_receiver::{Limits, Receiver, TestPki};

fn config(url: &str, extra: &str) -> loki::Config {
    let raw: loki::RawConfig = toml::from_str(&format!(
        "url = \"{url}\"\nretry_initial_backoff = \"20ms\"\nretry_max_backoff = \"100ms\"\nbatch_timeout = \"50ms\"\n{extra}"
    ))
    .unwrap();
    let mut problems = Problems::default();
    let c = raw.validate("sinks.loki", &mut problems);
    assert!(problems.is_empty(), "{problems:?}");
    c
}

/// A spool and the Loki sink running on it, its log captured.
struct Harness {
    name: String,
    spool: Spool,
    stop: CancellationToken,
    task: JoinHandle<()>,
    log: CaptureWriter,
    _dir: tempfile::TempDir,
}

impl Harness {
    fn start(name: &str, config: loki::Config) -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let mut problems = Problems::default();
        let spool_config = // Old timestamps are the Loki sink's to refuse here (too_old), not the spool's.
        toml::from_str::<spool::RawConfig>("max_age = \"0s\"")
            .unwrap()
            .validate("spool", &mut problems);
        let spool = Spool::open(dir.path(), &spool_config, &[name.to_owned()]).unwrap();
        let mut h = Harness {
            name: name.to_owned(),
            spool,
            stop: CancellationToken::new(),
            task: tokio::spawn(async {}),
            log: CaptureWriter::default(),
            _dir: dir,
        };
        h.task = h.spawn(config);
        h
    }

    fn spawn(&self, config: loki::Config) -> JoinHandle<()> {
        let reader = self.spool.reader(&self.name).unwrap();
        let sub =
            selflog::text_subscriber(self.log.clone(), LevelFilter::INFO, RateLimit::default());
        tokio::spawn(
            loki::run(self.name.clone(), config, reader, self.stop.clone()).with_subscriber(sub),
        )
    }

    async fn append(&self, events: &[Event]) {
        self.spool.append(events, None).await.unwrap();
    }

    fn metric(&self, name: &str, reason: Option<&str>) -> f64 {
        let mut labels = vec![("sink", self.name.as_str())];
        if let Some(r) = reason {
            labels.push(("reason", r));
        }
        self.spool.metrics().value(name, &labels).unwrap_or(0.0)
    }

    /// Waits until a metric of this sink reaches `at_least`.
    async fn wait_metric(&self, name: &str, reason: Option<&str>, at_least: f64) {
        let start = Instant::now();
        while self.metric(name, reason) < at_least {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "timed out waiting for {name}{{reason={reason:?}}} >= {at_least}: {}",
                self.metric(name, reason)
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until the sink has acknowledged everything appended: from then
    /// on it sends nothing more, so what the receiver holds is final.
    async fn wait_acknowledged(&self) {
        let start = Instant::now();
        let lag = || {
            let stats = self.spool.stats();
            stats
                .sinks
                .iter()
                .find(|s| s.sink == self.name)
                .expect("the sink's cursor")
                .lag_bytes
        };
        while lag() > 0 {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "{} bytes never acknowledged",
                lag()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn stop(self) -> String {
        self.stop.cancel();
        tokio::time::timeout(Duration::from_secs(2), self.task)
            .await
            .expect("the sink stops at once on shutdown")
            .unwrap();
        self.log.contents()
    }
}

fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i64
}

fn event(ts: i64, service: &str, message: String) -> Event {
    let mut e = Event::new(ts, Origin::Docker, message);
    e.labels.host = Some("h1".into());
    e.labels.service = Some(service.into());
    e.labels.level = Some(Level::Info);
    e.fields
        .push(("container_id".into(), "0123456789ab".into()));
    e
}

/// Incompressible text (so that snappy cannot hide a size problem).
fn noise(seed: u64, len: usize) -> String {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (b'a' + (x % 26) as u8) as char
        })
        .collect()
}

async fn wait_entries(r: &Receiver, n: usize, timeout: Duration) {
    let start = Instant::now();
    while r.entries().len() < n {
        assert!(
            start.elapsed() < timeout,
            "timed out: {} of {n} entries delivered; stats {:?}",
            r.entries().len(),
            r.stats()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protobuf_push_groups_sorts_and_authenticates() {
    let r = Receiver::start().await;
    let cfg = config(
        &r.url(),
        "labels = [\"host\", \"service\"]\ntenant_id = \"team-a\"\nusername = \"u\"\npassword = \"p\"",
    );
    let h = Harness::start("loki_proto", cfg);
    let base = now_ns();
    // Timestamps run backwards within each append: weir must sort each stream.
    for chunk in 0..5 {
        let events: Vec<Event> = (0..200)
            .map(|i| {
                let n = chunk * 200 + i;
                event(
                    base - n,
                    ["a", "b", "c"][n as usize % 3],
                    format!("line {n}"),
                )
            })
            .collect();
        h.append(&events).await;
    }
    wait_entries(&r, 1000, Duration::from_secs(10)).await;
    let stats = r.stats();
    assert_eq!(stats.tenant.as_deref(), Some("team-a"));
    assert_eq!(stats.authorization.as_deref(), Some("Basic dTpw"));
    assert!(stats.content_types.contains("application/x-protobuf"));
    let mut per_stream: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for e in r.entries() {
        assert_eq!(e.labels.len(), 2, "{:?}", e.labels);
        assert_eq!(e.labels["host"], "h1");
        assert!(
            e.line
                .contains("source=docker level=info container_id=0123456789ab"),
            "{}",
            e.line
        );
        per_stream
            .entry(e.labels["service"].clone())
            .or_default()
            .push(e.ts_ns);
    }
    assert_eq!(per_stream.len(), 3);
    let lines: HashSet<String> = r.entries().into_iter().map(|e| e.line).collect();
    assert_eq!(lines.len(), 1000);
    for ts in per_stream.values() {
        assert!(ts.len() > 300);
    }
    // Timestamps ran backwards in the spool: every stream of every push was sorted.
    assert_eq!(stats.unsorted_streams, 0);
    h.wait_metric("weir_sink_events_sent_total", None, 1000.0)
        .await;
    assert_eq!(h.metric("weir_sink_events_sent_total", None), 1000.0);
    assert!(h.metric("weir_sink_last_success_timestamp_seconds", None) > 0.0);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_gzip_with_structured_metadata_and_bearer_token() {
    let r = Receiver::start().await;
    let cfg = config(
        &r.url(),
        "encoding = \"json\"\ncompression = \"gzip\"\nstructured_metadata = true\nline_format = \"raw\"\nlabels = [\"service\"]\nbearer_token = \"s3cret\"",
    );
    let h = Harness::start("loki_json", cfg);
    let base = now_ns();
    let events: Vec<Event> = (0..300)
        .map(|i| event(base + i, "web", format!("GET /{i} \"quoted\" é")))
        .collect();
    h.append(&events).await;
    wait_entries(&r, 300, Duration::from_secs(10)).await;
    let stats = r.stats();
    assert!(stats.content_types.contains("application/json"));
    assert_eq!(stats.authorization.as_deref(), Some("Bearer s3cret"));
    let entries = r.entries();
    let e = entries
        .iter()
        .find(|e| e.line == "GET /7 \"quoted\" é")
        .unwrap();
    assert_eq!(e.ts_ns, base + 7);
    assert_eq!(
        *e.labels,
        BTreeMap::from([("service".to_owned(), "web".to_owned())])
    );
    let mut metadata = e.metadata.clone();
    metadata.sort();
    assert_eq!(
        metadata,
        vec![
            ("container_id".to_owned(), "0123456789ab".to_owned()),
            ("host".to_owned(), "h1".to_owned()),
            ("level".to_owned(), "info".to_owned()),
            ("source".to_owned(), "docker".to_owned()),
        ]
    );
    h.stop().await;
}

/// Incident 2, first half: with big batches in the spool and Loki's real
/// limit, no push ever reaches the limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incident_2_pushes_stay_under_the_loki_limit() {
    let r = Receiver::start().await;
    let cfg = config(&r.url(), "batch_max_bytes = \"32MiB\"");
    let h = Harness::start("loki_incident_cap", cfg);
    let base = now_ns();
    let events: Vec<Event> = (0..120)
        .map(|i| {
            event(
                base + i,
                "app",
                format!("PAYLOAD-{i}-{}", noise(i as u64, 100_000)),
            )
        })
        .collect();
    h.append(&events).await;
    wait_entries(&r, 120, Duration::from_secs(20)).await;
    let stats = r.stats();
    assert_eq!(stats.statuses.get(&500), None, "{stats:?}");
    assert!(stats.max_decoded_bytes <= 4_000_000, "{stats:?}");
    assert!(stats.max_wire_bytes <= 4_000_000, "{stats:?}");
    assert!(stats.requests >= 3, "12 MB needs several pushes: {stats:?}");
    let log = h.stop().await;
    assert!(!log.contains("PAYLOAD"), "{log}");
}

/// Incident 2, second half: the server's limit is lower than weir's cap.
/// weir splits until its pushes pass, delivers everything once, and its own
/// log stays small and free of payload and response bodies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incident_2_server_limit_below_cap_splits_and_logs_no_payload() {
    let limits = Limits {
        limit: 1_000_000,
        ..Limits::default()
    };
    let r = Receiver::start_with(limits, None).await;
    let cfg = config(&r.url(), "batch_max_bytes = \"32MiB\"");
    let h = Harness::start("loki_incident_split", cfg);
    let base = now_ns();
    let mut lines = Vec::new();
    for chunk in 0..4u64 {
        let events: Vec<Event> = (0..200u64)
            .map(|i| {
                let n = chunk * 200 + i;
                let line = format!("PAYLOAD-{n}-{}", noise(n, 10_000 + (n as usize % 7) * 1000));
                lines.push(line.clone());
                event(base + n as i64, ["a", "b"][n as usize % 2], line)
            })
            .collect();
        h.append(&events).await;
    }
    wait_entries(&r, 800, Duration::from_secs(30)).await;
    h.wait_acknowledged().await;
    let got: Vec<String> = r.entries().into_iter().map(|e| e.line).collect();
    assert_eq!(got.len(), 800, "each line exactly once");
    let got: HashSet<String> = got
        .into_iter()
        .map(|l| {
            l.strip_prefix("msg=")
                .unwrap()
                .split(' ')
                .next()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(got, lines.iter().cloned().collect::<HashSet<_>>());
    let stats = r.stats();
    assert!(
        stats.statuses.get(&500).copied().unwrap_or(0) >= 1,
        "{stats:?}"
    );
    assert!(h.metric("weir_sink_splits_total", None) >= 1.0);
    h.wait_metric("weir_sink_events_sent_total", None, 800.0)
        .await;
    assert_eq!(h.metric("weir_sink_events_sent_total", None), 800.0);
    let log = h.stop().await;
    eprintln!("weir's log over the run ({} bytes):\n{log}", log.len());
    assert!(log.len() < 4096, "log too large: {} bytes", log.len());
    assert!(!log.contains("PAYLOAD"), "payload in weir's log: {log}");
    assert!(log.contains("packing smaller pushes"), "{log}");
    assert!(
        !log.contains("larger than max"),
        "response body in weir's log: {log}"
    );
    for line in &lines {
        assert!(!log.contains(&line[line.len() - 32..]));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limited_then_recovers() {
    let r = Receiver::start().await;
    r.fail_with_429(3);
    let h = Harness::start("loki_429", config(&r.url(), ""));
    let base = now_ns();
    let events: Vec<Event> = (0..100)
        .map(|i| event(base + i, "a", format!("l{i}")))
        .collect();
    h.append(&events).await;
    wait_entries(&r, 100, Duration::from_secs(10)).await;
    h.wait_metric("weir_sink_events_sent_total", None, 100.0)
        .await;
    assert_eq!(r.stats().statuses.get(&429), Some(&3));
    assert_eq!(h.metric("weir_sink_retries_total", None), 3.0);
    assert_eq!(
        h.metric("weir_sink_errors_total", Some("rate_limited")),
        3.0
    );
    h.stop().await;
}

/// Loki's distributor stores the valid entries of a push and answers 400
/// for the one it refuses: weir counts that one and sends nothing again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_refused_entry_costs_only_itself_and_nothing_is_sent_twice() {
    let r = Receiver::start().await;
    r.reject_lines_containing("POISON");
    let h = Harness::start("loki_400", config(&r.url(), ""));
    let base = now_ns();
    let events: Vec<Event> = (0..200)
        .map(|i| {
            let text = if i == 137 {
                "POISON pill".to_owned()
            } else {
                format!("good {i}")
            };
            event(base + i, ["a", "b"][i as usize % 2], text)
        })
        .collect();
    h.append(&events).await;
    wait_entries(&r, 199, Duration::from_secs(10)).await;
    let start = Instant::now();
    while h.metric("weir_sink_rejected_events_total", Some("bad_request")) < 1.0 {
        assert!(start.elapsed() < Duration::from_secs(5));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    h.wait_acknowledged().await;
    assert_eq!(r.entries().len(), 199);
    assert!(r.entries().iter().all(|e| !e.line.contains("POISON")));
    assert_eq!(
        h.metric("weir_sink_rejected_events_total", Some("bad_request")),
        1.0
    );
    assert_eq!(h.metric("weir_sink_splits_total", None), 0.0);
    let stats = r.stats();
    assert_eq!(
        stats.received, stats.accepted,
        "entries sent twice: {stats:?}"
    );
    let log = h.stop().await;
    assert!(!log.contains("POISON"), "{log}");
    assert!(log.contains("reason=\"bad_request\""), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_old_and_too_long_entries_are_counted_by_reason() {
    let limits = Limits {
        max_line_size: 2000,
        ..Limits::default()
    };
    let r = Receiver::start_with(limits, None).await;
    let h = Harness::start("loki_reasons", config(&r.url(), ""));
    let base = now_ns();
    let mut events: Vec<Event> = (0..50)
        .map(|i| event(base + i, "a", format!("fresh {i}")))
        .collect();
    events.push(event(
        base - 30 * 86_400 * 1_000_000_000,
        "a",
        "ancient".into(),
    ));
    events.push(event(base + 60, "a", "x".repeat(5000)));
    h.append(&events).await;
    let start = Instant::now();
    while h.metric("weir_sink_rejected_events_total", Some("too_old")) < 1.0
        || h.metric("weir_sink_rejected_events_total", Some("line_too_long")) < 1.0
    {
        assert!(start.elapsed() < Duration::from_secs(10), "{:?}", r.stats());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(r.entries().len(), 50);
    h.stop().await;
}

/// The case: 1,000 entries beside 100 month-old ones and five 300 KB
/// lines. weir knows Loki's default limits, so the month-old ones are never
/// sent (counted `too_old`) and the long lines are cut to `max_line_size`.
/// A Loki with tighter limits than weir knows (1 day, 100 KB lines) refuses
/// some entries of a push (400) after storing the rest: weir treats the push
/// as delivered except those, so every accepted entry was sent exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_loki_400_is_partial_and_no_accepted_entry_is_sent_twice() {
    let day = 86_400 * 1_000_000_000i64;
    let base = now_ns();
    let mut events: Vec<Event> = (0..1000)
        .map(|i| {
            event(
                base - 1000 + i,
                ["a", "b", "c"][i as usize % 3],
                format!("fresh {i}"),
            )
        })
        .collect();
    events.extend((0..100).map(|i| event(base - 30 * day + i, "a", format!("month-old {i}"))));
    events.extend((0..5).map(|i| event(base + i, "b", noise(i as u64, 300_000))));

    // Loki's defaults, which weir's defaults match: nothing refused by Loki.
    let r = Receiver::start().await;
    let h = Harness::start("loki_partial_defaults", config(&r.url(), ""));
    h.append(&events).await;
    wait_entries(&r, 1005, Duration::from_secs(20)).await;
    h.wait_metric("weir_sink_rejected_events_total", Some("too_old"), 100.0)
        .await;
    h.wait_metric("weir_sink_truncated_events_total", None, 5.0)
        .await;
    let stats = r.stats();
    assert_eq!(stats.statuses.get(&400), None, "{stats:?}");
    assert_eq!((stats.received, stats.accepted), (1005, 1005), "{stats:?}");
    h.stop().await;

    // Tighter than weir knows: 2-day-old entries and 200 KB lines refused
    // by the receiver, which stores the rest of each push, then says 400.
    let limits = Limits {
        reject_old_after: Duration::from_secs(86_400),
        max_line_size: 100_000,
        ..Limits::default()
    };
    let r = Receiver::start_with(limits, None).await;
    let h = Harness::start("loki_partial_tight", config(&r.url(), ""));
    let mut events: Vec<Event> = (0..1000)
        .map(|i| {
            event(
                base - 1000 + i,
                ["a", "b", "c"][i as usize % 3],
                format!("fresh {i}"),
            )
        })
        .collect();
    events.extend((0..100).map(|i| event(base - 2 * day + i, "a", format!("two days {i}"))));
    events.extend((0..5).map(|i| event(base + i, "b", noise(i as u64, 200_000))));
    h.append(&events).await;
    wait_entries(&r, 1000, Duration::from_secs(20)).await;
    let refused = || {
        ["too_old", "line_too_long"]
            .iter()
            .map(|reason| h.metric("weir_sink_rejected_events_total", Some(reason)))
            .sum::<f64>()
    };
    let start = Instant::now();
    while refused() < 105.0 {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{} {:?}",
            refused(),
            r.stats()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    h.wait_acknowledged().await;
    let stats = r.stats();
    assert!(
        stats.statuses.get(&400).is_some_and(|&n| n >= 1),
        "{stats:?}"
    );
    assert_eq!(
        (stats.received, stats.accepted),
        (1000, 1000),
        "accepted entries were sent again: {stats:?}"
    );
    assert_eq!(refused(), 105.0);
    assert_eq!(h.metric("weir_sink_splits_total", None), 0.0);
    assert_eq!(h.metric("weir_sink_events_sent_total", None), 1000.0);
    h.stop().await;
}

/// 5,000 distinct containers (the issue saw 100,000 make 100,059 streams,
/// 10,002 in one push): with `max_streams = 500` and `max_streams_per_push
/// = 100`, Loki sees at most ~500 streams, never more than 100 per push;
/// every event is delivered, its container name in the line, and counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn distinct_containers_beyond_max_streams_go_into_the_line() {
    let r = Receiver::start().await;
    let h = Harness::start(
        "loki_cardinality",
        config(&r.url(), "max_streams = 500\nmax_streams_per_push = 100"),
    );
    let base = now_ns();
    let events: Vec<Event> = (0..5000)
        .map(|i| {
            let mut e = event(base + i, "web", format!("hello {i}"));
            e.labels.container_name = Some(format!("web-{i}"));
            e
        })
        .collect();
    h.append(&events).await;
    wait_entries(&r, 5000, Duration::from_secs(30)).await;
    let stats = r.stats();
    assert!(stats.streams <= 501, "{} streams", stats.streams);
    assert!(stats.max_streams_per_push <= 100, "{stats:?}");
    h.wait_metric("weir_sink_loki_demoted_events_total", None, 4500.0)
        .await;
    let entries = r.entries();
    let moved = entries
        .iter()
        .filter(|e| !e.labels.contains_key("container_name"))
        .count();
    assert_eq!(moved, 4500);
    assert!(entries
        .iter()
        .filter(|e| !e.labels.contains_key("container_name"))
        .all(|e| e.line.contains("container_name=web-")));
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_down_for_a_while_loses_nothing() {
    let r = Receiver::start().await;
    r.down().await;
    let h = Harness::start("loki_down", config(&r.url(), "connect_timeout = \"500ms\""));
    let base = now_ns();
    for chunk in 0..3 {
        let events: Vec<Event> = (0..100)
            .map(|i| event(base + chunk * 100 + i, "a", format!("l{chunk}-{i}")))
            .collect();
        h.append(&events).await;
    }
    let start = Instant::now();
    while h.metric("weir_sink_errors_total", Some("connect")) < 3.0 {
        assert!(start.elapsed() < Duration::from_secs(10));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(r.entries().is_empty());
    r.up().await;
    wait_entries(&r, 300, Duration::from_secs(10)).await;
    h.wait_acknowledged().await;
    assert_eq!(r.entries().len(), 300);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_while_retrying_is_immediate_and_keeps_the_batch() {
    let r = Receiver::start().await;
    r.down().await;
    let h = Harness::start("loki_shutdown", config(&r.url(), ""));
    let base = now_ns();
    let events: Vec<Event> = (0..50)
        .map(|i| event(base + i, "a", format!("l{i}")))
        .collect();
    h.append(&events).await;
    // Retrying: shutdown must interrupt the backoff.
    h.wait_metric("weir_sink_retries_total", None, 1.0).await;
    let spool = h.spool.clone();
    let start = Instant::now();
    h.stop.cancel();
    tokio::time::timeout(Duration::from_millis(500), h.task)
        .await
        .expect("shutdown does not wait for the server")
        .unwrap();
    assert!(start.elapsed() < Duration::from_millis(500));
    // Nothing was acknowledged: a new start delivers the batch.
    r.up().await;
    let h2 = Harness {
        name: "loki_shutdown".into(),
        spool,
        stop: CancellationToken::new(),
        task: tokio::spawn(async {}),
        log: CaptureWriter::default(),
        _dir: h._dir,
    };
    let h2 = Harness {
        task: h2.spawn(config(&r.url(), "")),
        ..h2
    };
    wait_entries(&r, 50, Duration::from_secs(10)).await;
    h2.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_a_test_ca() {
    let pki = TestPki::new();
    let r = Receiver::start_with(Limits::default(), Some(pki.server_config.clone())).await;
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, &pki.ca_pem).unwrap();

    // Without the CA the server is not trusted: nothing is sent, errors are counted.
    let untrusted = Harness::start("loki_tls_untrusted", config(&r.url(), ""));
    untrusted
        .append(&[event(now_ns(), "a", "secret".into())])
        .await;
    let start = Instant::now();
    while untrusted.metric("weir_sink_errors_total", Some("tls")) < 1.0 {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{}",
            untrusted.log.contents()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(r.entries().is_empty());
    untrusted.stop().await;

    let cfg = config(&r.url(), &format!("ca_file = \"{}\"", ca.display()));
    let h = Harness::start("loki_tls", cfg);
    let base = now_ns();
    let events: Vec<Event> = (0..20)
        .map(|i| event(base + i, "a", format!("tls {i}")))
        .collect();
    h.append(&events).await;
    wait_entries(&r, 20, Duration::from_secs(10)).await;
    h.stop().await;
}

#[test]
fn check_config_refuses_a_cap_above_loki_limit() {
    let out = check_config_text(
        "[sources.d]\ntype = \"forward\"\n[sinks.loki]\ntype = \"loki\"\nurl = \"http://127.0.0.1:3100/loki/api/v1/push\"\nmax_push_bytes = \"5MiB\"\n",
    );
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("line 6: `sinks.loki.max_push_bytes`"), "{err}");
    assert!(err.contains("4194304"), "{err}");
}

/// Sinks deliver independently: a Loki that is down delays no other sink.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_down_loki_delays_no_other_sink() {
    let r = Receiver::start().await;
    r.down().await;
    let h = Harness::start("loki_independent", config(&r.url(), ""));
    let out = h._dir.path().join("events.ndjson");
    let file_config = weir::sink::file::Config {
        path: out.clone(),
        max_file_bytes: weir::units::ByteSize(100 << 20),
        keep_files: 1,
        max_age: weir::units::HumanDuration(std::time::Duration::ZERO),
    };
    let file_reader = h.spool.reader("file").unwrap();
    let file_task = tokio::spawn(weir::sink::file::run(
        "file".into(),
        file_config,
        file_reader,
        h.stop.clone(),
    ));
    let base = now_ns();
    let events: Vec<Event> = (0..100)
        .map(|i| event(base + i, "a", format!("l{i}")))
        .collect();
    h.append(&events).await;
    let start = Instant::now();
    loop {
        let lines = std::fs::read(&out).map_or(0, |b| crate::common::complete_lines(&b).count());
        if lines == 100 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "file sink got {lines} of 100"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(r.entries().is_empty());
    r.up().await;
    wait_entries(&r, 100, Duration::from_secs(10)).await;
    h.stop().await;
    file_task.await.unwrap();
}

/// Appends `n` events of 3 streams, in time order, in records of 20.
async fn append_streams(h: &Harness, n: i64) {
    let base = now_ns();
    for chunk in 0..n / 20 {
        let events: Vec<Event> = (chunk * 20..chunk * 20 + 20)
            .map(|i| event(base + i, ["a", "b", "c"][i as usize % 3], format!("l{i}")))
            .collect();
        h.append(&events).await;
    }
}

/// Several pushes in flight (`max_in_flight`) against a Loki that takes
/// 100 ms per push: they overlap, every entry arrives exactly once with no
/// refusal, and the spool is acknowledged to the end. Entries of a stream
/// may arrive behind its newest: what Loki >= 2.4 accepts within
/// `max_chunk_age / 2`, which the receiver enforces.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushes_in_flight_overlap_and_deliver_everything_once() {
    let limits = Limits {
        delay: Duration::from_millis(100),
        ..Limits::default()
    };
    let r = Receiver::start_with(limits, None).await;
    let cfg = config(&r.url(), "batch_max_bytes = \"2KiB\"\nmax_in_flight = 4");
    assert_eq!(cfg.max_in_flight, 4);
    let h = Harness::start("loki_in_flight", cfg);
    append_streams(&h, 1200).await;
    wait_entries(&r, 1200, Duration::from_secs(30)).await;
    h.wait_acknowledged().await;
    let stats = r.stats();
    assert_eq!(r.entries().len(), 1200, "{stats:?}");
    assert_eq!(stats.received, 1200, "an entry was sent twice: {stats:?}");
    assert_eq!(stats.statuses.keys().copied().collect::<Vec<_>>(), [204]);
    assert!(
        (2..=4).contains(&stats.max_in_flight),
        "pushes did not overlap, or more than max_in_flight did: {stats:?}"
    );
    let lines: HashSet<String> = r.entries().into_iter().map(|e| e.line).collect();
    assert_eq!(lines.len(), 1200);
    h.stop().await;
}

/// `max_in_flight = 1` (a Loki before 2.4, which refuses out-of-order
/// entries): one push at a time, each stream's entries in time order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_push_in_flight_keeps_each_stream_in_order() {
    let limits = Limits {
        delay: Duration::from_millis(20),
        ..Limits::default()
    };
    let r = Receiver::start_with(limits, None).await;
    let cfg = config(&r.url(), "batch_max_bytes = \"2KiB\"\nmax_in_flight = 1");
    let h = Harness::start("loki_one_in_flight", cfg);
    append_streams(&h, 600).await;
    wait_entries(&r, 600, Duration::from_secs(30)).await;
    h.wait_acknowledged().await;
    let stats = r.stats();
    assert_eq!(stats.max_in_flight, 1, "{stats:?}");
    assert_eq!(stats.behind_newest, 0, "{stats:?}");
    assert_eq!(stats.received, 600, "{stats:?}");
    h.stop().await;
}

/// With Loki down and several pushes in flight, every lane's push fails,
/// but the sink backs off and logs as one: a single backoff (its attempt 1
/// is logged once, not once per lane), every failed push counted, and one
/// "delivering again" when Loki is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_loki_down_the_lanes_back_off_and_log_as_one() {
    let r = Receiver::start().await;
    r.down().await;
    let raw: loki::RawConfig = toml::from_str(&format!(
        "url = \"{}\"\nretry_initial_backoff = \"100ms\"\nretry_max_backoff = \"100ms\"\n\
         batch_timeout = \"10ms\"\nbatch_max_bytes = 1000\nmax_in_flight = 4",
        r.url()
    ))
    .unwrap();
    let mut problems = Problems::default();
    let config = raw.validate("sinks.loki", &mut problems);
    assert!(problems.is_empty(), "{problems:?}");
    let h = Harness::start("loki_down_lanes", config);
    let base = now_ns();
    // About 10 events per 1000-byte batch: 4 batches in flight at once.
    let events: Vec<Event> = (0..60)
        .map(|i| event(base + i, "a", format!("line {i} {}", "x".repeat(40))))
        .collect();
    h.append(&events).await;
    // Three rounds or more of 4 failed pushes.
    h.wait_metric("weir_sink_retries_total", None, 12.0).await;
    r.up().await;
    wait_entries(&r, 60, Duration::from_secs(10)).await;
    h.wait_acknowledged().await;
    let log = h.log.contents();
    assert_eq!(
        log.matches("attempt=1 ").count(),
        1,
        "one backoff for the sink, not one per lane:\n{log}"
    );
    assert!(log.contains("attempt=2 "), "{log}");
    assert_eq!(log.matches("delivering again").count(), 1, "{log}");
    h.stop().await;
}
