//! The journal source against a real systemd-journald (see `journald_harness`).
//!
//! Most tests run the source in-process on one `Ingest`, so that a "restart"
//! (stop the source, start it again) sees the cursor the spool committed, as
//! it will across processes with the durable spool. The tests that need the
//! spool to survive a process (`weir` run twice, kill -9) are written against
//! the binary and ignored until the durable spool lands.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use weir::event::{Event, Level};
use weir::ingest::Ingest;
use weir::scrub::Scrubber;
use weir::source::journal::{self, config::JournalSet, config::MaxAge, config::StartAt};
use weir::spool::{self, Spool};

use crate::common::{wait_for, weir_bin};
use crate::journald_harness::{wait_timeout, Journald};

/// A spool, the ingest in front of it and a sink-side reader.
struct Weir {
    ingest: Ingest,
    reader: spool::Reader,
    _dir: tempfile::TempDir,
}

fn weir() -> Weir {
    let dir = tempfile::tempdir().unwrap();
    let mut problems = weir::problems::Problems::default();
    let spool_config = spool::RawConfig::default().validate("spool", &mut problems);
    let scrub_config = weir::scrub::RawConfig::default().validate("scrub", &mut problems);
    let spool = Spool::open_with(
        &dir.path().join("spool"),
        &spool_config,
        &["t".into()],
        registry(),
    )
    .unwrap();
    let scrubber = Arc::new(Scrubber::new(&scrub_config, dir.path()).unwrap());
    let ingest = Ingest::new(spool.clone(), scrubber, "agent-host");
    let reader = spool.reader("t").unwrap();
    Weir {
        ingest,
        reader,
        _dir: dir,
    }
}

/// The test namespace from its head; journald's own notices left out.
fn config(j: &Journald) -> journal::Config {
    journal::Config {
        journal: JournalSet::Namespace(j.namespace.clone()),
        start_at: StartAt::Head,
        max_age: MaxAge(None),
        exclude_identifiers: vec!["systemd-journald".into()],
        ..journal::Config::default()
    }
}

struct Running {
    task: JoinHandle<()>,
    stop: CancellationToken,
}

async fn run(name: &str, config: &journal::Config, w: &Weir) -> Running {
    let stop = CancellationToken::new();
    let task = journal::start(name, config, w.ingest.clone(), stop.clone())
        .await
        .expect("journal source starts");
    Running { task, stop }
}

impl Running {
    /// Stops the source; it must notice within a wait step or so.
    async fn stop(self) {
        let t = Instant::now();
        self.stop.cancel();
        tokio::time::timeout(Duration::from_secs(3), self.task)
            .await
            .expect("the journal source stops promptly")
            .unwrap();
        assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    }
}

/// Exactly `n` events from the spool, waiting up to 20 s.
async fn take(w: &mut Weir, n: usize) -> Vec<Event> {
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while got.len() < n {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, w.reader.next_batch(10_000, 64 << 20)).await {
            Ok(batch) => got.extend(batch.unwrap().events),
            Err(_) => panic!(
                "timed out with {} of {n} events: {:?}",
                got.len(),
                messages(&got)
            ),
        }
    }
    assert_eq!(
        got.len(),
        n,
        "more events than expected: {:?}",
        messages(&got)
    );
    got
}

/// Asserts that no event arrives within `d`.
async fn nothing_more(w: &mut Weir, d: Duration) {
    if let Ok(batch) = tokio::time::timeout(d, w.reader.next_batch(10_000, 64 << 20)).await {
        panic!("unexpected events: {:?}", messages(&batch.unwrap().events));
    }
}

fn messages(events: &[Event]) -> Vec<String> {
    events
        .iter()
        .map(|e| String::from_utf8_lossy(&e.message[..e.message.len().min(80)]).into_owned())
        .collect()
}

/// One registry for every test's spool here: a test that restarts its
/// source on a new spool still reads one count (sources are named per test).
fn registry() -> &'static weir::metrics::Metrics {
    static REGISTRY: std::sync::OnceLock<weir::metrics::Metrics> = std::sync::OnceLock::new();
    REGISTRY.get_or_init(weir::metrics::Metrics::new)
}

fn counter(name: &str, source: &str) -> f64 {
    registry().value(name, &[("source", source)]).unwrap_or(0.0)
}

fn lines(prefix: &str, range: std::ops::RangeInclusive<u32>) -> Vec<String> {
    range.map(|i| format!("{prefix} {i}")).collect()
}

fn cat(j: &Journald, msgs: &[String]) {
    let refs: Vec<&str> = msgs.iter().map(String::as_str).collect();
    j.systemd_cat("catapp", "info", &refs);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_from_logger_systemd_cat_and_the_native_protocol_arrive_with_their_fields() {
    let j = Journald::start("fields");
    let mut w = weir();
    let src = run("j-fields", &config(&j), &w).await;

    j.systemd_cat("catapp", "warning", &["hello from systemd-cat"]);
    j.logger_journald(&[
        ("MESSAGE", "hello from a container"),
        ("SYSLOG_IDENTIFIER", "0123456789ab"),
        ("PRIORITY", "3"),
        ("CONTAINER_NAME", "shop-web-1"),
        ("CONTAINER_ID", "0123456789ab"),
        ("CONTAINER_ID_FULL", "0123456789abcdef0123456789abcdef"),
        ("CONTAINER_TAG", "web"),
        ("COM_DOCKER_COMPOSE_PROJECT", "shop"),
        ("COM_DOCKER_COMPOSE_SERVICE", "web"),
        ("REQUEST_ID", "r-42"),
    ]);
    j.logger_syslog("syslogapp", "user.notice", "hello over syslog");
    j.send_native(&[
        ("MESSAGE", b"native \xff\xfe not utf-8\n second line"),
        ("SYSLOG_IDENTIFIER", b"nativeapp"),
        ("PRIORITY", b"7"),
    ]);

    let events = take(&mut w, 4).await;
    let journal = j.wait_entries(
        4,
        &[
            "--identifier=catapp",
            "--identifier=0123456789ab",
            "--identifier=syslogapp",
            "--identifier=nativeapp",
        ],
    );
    let by_msg = |m: &[u8]| {
        events.iter().find(|e| e.message == m).unwrap_or_else(|| {
            panic!(
                "{:?} in {:?}",
                String::from_utf8_lossy(m),
                messages(&events)
            )
        })
    };

    let e = by_msg(b"hello from systemd-cat");
    assert_eq!(e.labels.level, Some(Level::Warning));
    assert_eq!(e.labels.service.as_deref(), Some("catapp"));
    assert_eq!(e.field("SYSLOG_IDENTIFIER"), Some("catapp"));
    assert_eq!(e.field("_TRANSPORT"), Some("stdout"));
    let hostname = journal[0]["_HOSTNAME"].as_str().unwrap();
    assert_eq!(e.labels.host.as_deref(), Some(hostname));
    let cat_entry = journal
        .iter()
        .find(|v| v["SYSLOG_IDENTIFIER"] == "catapp")
        .unwrap();
    let realtime: i64 = cat_entry["__REALTIME_TIMESTAMP"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(e.timestamp_ns, realtime * 1000);
    assert_eq!(e.field("_BOOT_ID"), cat_entry["_BOOT_ID"].as_str());
    assert_eq!(e.field("_PID"), cat_entry["_PID"].as_str());

    let e = by_msg(b"hello from a container");
    assert_eq!(e.labels.level, Some(Level::Error));
    assert_eq!(e.labels.app.as_deref(), Some("shop"));
    assert_eq!(e.labels.service.as_deref(), Some("web"));
    assert_eq!(e.labels.container_name.as_deref(), Some("shop-web-1"));
    assert_eq!(
        e.field("container_id"),
        Some("0123456789abcdef0123456789abcdef")
    );
    assert_eq!(e.field("container_tag"), Some("web"));
    assert_eq!(e.field("REQUEST_ID"), Some("r-42"));
    assert_eq!(e.field("_TRANSPORT"), Some("journal"));
    assert_eq!(
        e.field("_CMDLINE"),
        None,
        "trusted fields outside the list are dropped"
    );

    let e = by_msg(b"hello over syslog");
    assert_eq!(e.labels.level, Some(Level::Notice));
    assert_eq!(e.labels.service.as_deref(), Some("syslogapp"));
    assert_eq!(e.field("_TRANSPORT"), Some("syslog"));
    assert_eq!(e.field("SYSLOG_FACILITY"), Some("1"));

    let e = by_msg(b"native \xff\xfe not utf-8\n second line");
    assert_eq!(e.labels.level, Some(Level::Debug));
    assert_eq!(e.labels.service.as_deref(), Some("nativeapp"));

    assert_eq!(
        counter("weir_source_events_received_total", "j-fields"),
        4.0
    );
    assert!(counter("weir_source_bytes_received_total", "j-fields") > 100.0);
    src.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_mebibyte_message_arrives_whole() {
    let j = Journald::start("big");
    let mut w = weir();
    let src = run("j-big", &config(&j), &w).await;
    // Varied bytes so that a cut or a shuffle shows; logger passes it in a memfd.
    let big: String = (0..(1usize << 20))
        .map(|i| (b'a' + (i * 7 % 26) as u8) as char)
        .collect();
    j.logger_journald(&[("MESSAGE", &big), ("SYSLOG_IDENTIFIER", "bigapp")]);
    j.send_native(&[("MESSAGE", b"after the big one")]);
    let events = take(&mut w, 2).await;
    assert_eq!(events[0].message.len(), big.len());
    assert!(
        events[0].message == big.as_bytes(),
        "the 1 MiB message changed"
    );
    assert_eq!(events[0].field("weir_truncated"), None);
    assert_eq!(events[1].message, b"after the big one");
    src.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_resumes_right_after_the_cursor() {
    let j = Journald::start("resume");
    let mut w = weir();
    cat(&j, &lines("first", 1..=5));
    let src = run("j-resume", &config(&j), &w).await;
    assert_eq!(messages(&take(&mut w, 5).await), lines("first", 1..=5));
    src.stop().await;

    cat(&j, &lines("while stopped", 1..=5));
    // `tail` would skip what was written while stopped, `head` would replay
    // the first five: only the committed cursor gives exactly the next five.
    let cfg = journal::Config {
        start_at: StartAt::Tail,
        ..config(&j)
    };
    let src = run("j-resume", &cfg, &w).await;
    assert_eq!(
        messages(&take(&mut w, 5).await),
        lines("while stopped", 1..=5)
    );
    cat(&j, &lines("after", 1..=3));
    assert_eq!(messages(&take(&mut w, 3).await), lines("after", 1..=3));
    nothing_more(&mut w, Duration::from_millis(500)).await;
    assert_eq!(counter("weir_journal_cursor_gaps_total", "j-resume"), 0.0);
    src.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vacuum_while_stopped_gives_a_counted_gap_and_no_replay() {
    let j = Journald::start("vacuum");
    let mut w = weir();
    let src = run("j-vacuum", &config(&j), &w).await;
    cat(&j, &lines("old", 1..=5));
    assert_eq!(messages(&take(&mut w, 5).await), lines("old", 1..=5));
    src.stop().await;

    cat(&j, &lines("lost", 1..=3));
    j.rotate_and_vacuum();
    assert!(
        j.entries(&["--identifier=catapp"]).is_empty(),
        "vacuum left entries"
    );
    cat(&j, &lines("new", 1..=3));
    let src = run("j-vacuum", &config(&j), &w).await;
    assert_eq!(messages(&take(&mut w, 3).await), lines("new", 1..=3));
    nothing_more(&mut w, Duration::from_millis(500)).await;
    assert_eq!(counter("weir_journal_cursor_gaps_total", "j-vacuum"), 1.0);
    // The journal's sequence numbers tell how many: the three lost lines.
    assert_eq!(
        counter("weir_journal_entries_missed_total", "j-vacuum"),
        3.0
    );
    src.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn survives_journald_restart_rotation_and_vacuum_while_running() {
    let mut j = Journald::start("survive");
    let mut w = weir();
    let src = run("j-survive", &config(&j), &w).await;
    cat(&j, &lines("before", 1..=3));
    assert_eq!(messages(&take(&mut w, 3).await), lines("before", 1..=3));
    j.restart();
    cat(&j, &lines("after restart", 1..=3));
    assert_eq!(
        messages(&take(&mut w, 3).await),
        lines("after restart", 1..=3)
    );
    j.journalctl(&["--rotate"]);
    cat(&j, &lines("after rotate", 1..=3));
    assert_eq!(
        messages(&take(&mut w, 3).await),
        lines("after rotate", 1..=3)
    );
    j.journalctl(&["--rotate"]);
    j.journalctl(&["--vacuum-files=1"]);
    cat(&j, &lines("after vacuum", 1..=3));
    assert_eq!(
        messages(&take(&mut w, 3).await),
        lines("after vacuum", 1..=3)
    );
    nothing_more(&mut w, Duration::from_millis(500)).await;
    src.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_start_at_tail_reads_only_new_entries() {
    let j = Journald::start("tail");
    let mut w = weir();
    cat(&j, &lines("old", 1..=3));
    j.wait_entries(3, &["--identifier=catapp"]);
    let cfg = journal::Config {
        start_at: StartAt::Tail,
        ..config(&j)
    };
    let src = run("j-tail", &cfg, &w).await;
    cat(&j, &lines("new", 1..=2));
    assert_eq!(messages(&take(&mut w, 2).await), lines("new", 1..=2));
    src.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn include_and_exclude_filters() {
    let j = Journald::start("filters");
    let mut w = weir();
    let cfg = journal::Config {
        identifiers: vec!["keep".into(), "noisy".into()],
        exclude_identifiers: vec!["noisy".into()],
        max_priority: Some(Level::Warning),
        ..config(&j)
    };
    let src = run("j-filters", &cfg, &w).await;
    j.systemd_cat("keep", "info", &["too low"]);
    j.systemd_cat("other", "err", &["other identifier"]);
    j.systemd_cat("noisy", "err", &["excluded"]);
    j.systemd_cat("keep", "err", &["kept"]);
    assert_eq!(messages(&take(&mut w, 1).await), ["kept"]);
    nothing_more(&mut w, Duration::from_millis(300)).await;
    src.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_of_this_process_or_named_weir_are_never_ingested() {
    let j = Journald::start("selfpid");
    let mut w = weir();
    // Even a config asking for exactly weir's identifier gets none of it.
    let src = run("j-selfpid", &config(&j), &w).await;
    // This process is weir here: its pid is in `_PID`.
    j.send_native_from_here(&[
        ("MESSAGE", b"from weir's own pid"),
        ("SYSLOG_IDENTIFIER", b"other"),
    ]);
    j.logger_journald(&[
        ("MESSAGE", "claims to be weir"),
        ("SYSLOG_IDENTIFIER", "weir"),
    ]);
    j.wait_entries(
        2,
        &["MESSAGE=from weir's own pid", "+", "SYSLOG_IDENTIFIER=weir"],
    );
    cat(&j, &lines("marker", 1..=1));
    assert_eq!(messages(&take(&mut w, 1).await), ["marker 1"]);
    nothing_more(&mut w, Duration::from_millis(300)).await;
    let skipped = registry().value(
        "weir_journal_entries_skipped_total",
        &[("source", "j-selfpid"), ("reason", "self")],
    );
    assert_eq!(skipped, Some(2.0));
    src.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_journal_directory_fails_the_start_with_a_clear_error() {
    let w = weir();
    let cfg = journal::Config {
        journal: JournalSet::Directory("/nonexistent/journal".into()),
        ..journal::Config::default()
    };
    let err = journal::start(
        "j-missing",
        &cfg,
        w.ingest.clone(),
        CancellationToken::new(),
    )
    .await
    .expect_err("start fails");
    let text = err.to_string();
    assert!(text.contains("/nonexistent/journal"), "{text}");
}

// ---- the binary ------------------------------------------------------------

/// A `weir run` process, killed on drop.
struct WeirProcess(Child);

impl Drop for WeirProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl WeirProcess {
    /// Starts `weir run` in the journald namespace's mount view, logging to
    /// that journald as under systemd (`INVOCATION_ID` set).
    fn start(j: &Journald, config: &Path) -> WeirProcess {
        let child = j
            .command(weir_bin())
            .args(["run", "--config"])
            .arg(config)
            .env("INVOCATION_ID", "0123456789abcdef0123456789abcdef")
            .env("WEIR_LOG", "info")
            .spawn()
            .expect("weir run");
        WeirProcess(child)
    }

    fn pid(&self) -> u32 {
        self.0.id()
    }

    fn terminate(mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        assert!(
            wait_timeout(&mut self.0, Duration::from_secs(15)).is_some(),
            "weir did not stop on SIGTERM"
        );
    }
}

fn write_config(dir: &Path, j: &Journald, extra: &str) -> PathBuf {
    let path = dir.join("weir.toml");
    std::fs::write(
        &path,
        format!(
            r#"
state_dir = "{state}"
[sources.journal]
type = "journal"
namespace = "{ns}"
start_at = "head"
max_age = "off"
exclude_identifiers = ["systemd-journald"]
[sinks.out]
type = "file"
path = "{out}"
[metrics]
listen = ""
{extra}
"#,
            state = dir.join("state").display(),
            ns = j.namespace,
            out = dir.join("out/events.ndjson").display(),
        ),
    )
    .unwrap();
    path
}

/// The events the file sink wrote, as JSON (complete lines only: the
/// sink may be writing one).
fn sink_events(dir: &Path) -> Vec<serde_json::Value> {
    let bytes = std::fs::read(dir.join("out/events.ndjson")).unwrap_or_default();
    crate::common::complete_lines(&bytes)
        .map(|l| serde_json::from_slice(l).expect("ndjson line"))
        .collect()
}

fn sink_messages(dir: &Path) -> Vec<String> {
    sink_events(dir)
        .iter()
        .map(|e| e["message"].as_str().unwrap_or_default().to_owned())
        .collect()
}

fn wait_sink_message(dir: &Path, message: &str) {
    wait_for(
        &format!("`{message}` in the file sink"),
        Duration::from_secs(20),
        || {
            sink_messages(dir)
                .iter()
                .any(|m| m == message)
                .then_some(())
        },
    );
}

#[test]
fn weir_logging_a_failure_into_the_journal_it_reads_ingests_none_of_it() {
    let j = Journald::start("selflog");
    let dir = tempfile::tempdir().unwrap();
    // A sink that cannot write: its path runs through a regular file.
    std::fs::write(dir.path().join("blocker"), b"").unwrap();
    let config = write_config(
        dir.path(),
        &j,
        &format!(
            "[sinks.broken]\ntype = \"file\"\npath = \"{}\"\n",
            dir.path().join("blocker/events.ndjson").display()
        ),
    );
    let weir = WeirProcess::start(&j, &config);
    cat(&j, &lines("marker", 1..=1));
    wait_sink_message(dir.path(), "marker 1");
    // weir now fails to write the broken sink and says so in this very journal.
    let pid = weir.pid().to_string();
    let own = j.wait_entries(
        1,
        &[
            &format!("_PID={pid}"),
            "MESSAGE=cannot write the file sink; retrying",
        ],
    );
    assert_eq!(own[0]["SYSLOG_IDENTIFIER"], "weir");
    cat(&j, &lines("marker", 2..=2));
    wait_sink_message(dir.path(), "marker 2");
    let own_total = j.entries(&[&format!("_PID={pid}")]).len();
    assert!(own_total >= 2, "weir logged {own_total} entries");
    let events = sink_events(dir.path());
    let leaked: Vec<_> = events
        .iter()
        .filter(|e| {
            e["fields"]["SYSLOG_IDENTIFIER"] == "weir" || e["fields"]["_PID"] == pid.as_str()
        })
        .collect();
    assert!(leaked.is_empty(), "weir ingested its own log: {leaked:?}");
    assert_eq!(sink_messages(dir.path()), ["marker 1", "marker 2"]);
    weir.terminate();
}

#[test]
fn weir_run_twice_resumes_right_after_the_cursor() {
    let j = Journald::start("binresume");
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &j, "");
    let weir = WeirProcess::start(&j, &config);
    cat(&j, &lines("one", 1..=5));
    wait_sink_message(dir.path(), "one 5");
    weir.terminate();
    cat(&j, &lines("two", 1..=5));
    let weir = WeirProcess::start(&j, &config);
    wait_sink_message(dir.path(), "two 5");
    cat(&j, &lines("three", 1..=2));
    wait_sink_message(dir.path(), "three 2");
    weir.terminate();
    let mut want = lines("one", 1..=5);
    want.extend(lines("two", 1..=5));
    want.extend(lines("three", 1..=2));
    assert_eq!(
        sink_messages(dir.path()),
        want,
        "loss or duplicate across the restart"
    );
}

#[test]
fn kill_9_mid_stream_loses_nothing_committed() {
    let j = Journald::start("kill9");
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &j, "");
    let weir = WeirProcess::start(&j, &config);
    let all = lines("line", 1..=3000);
    let writer = {
        let all = all.clone();
        let refs: Vec<String> = all;
        let ns = j.command("systemd-cat");
        std::thread::spawn(move || {
            let mut ns = ns;
            let mut child = ns
                .args(["-t", "catapp"])
                .stdin(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            let mut stdin = child.stdin.take().unwrap();
            for l in refs {
                use std::io::Write;
                writeln!(stdin, "{l}").unwrap();
            }
            drop(stdin);
            child.wait().unwrap();
        })
    };
    wait_for("some lines in the sink", Duration::from_secs(20), || {
        (sink_messages(dir.path()).len() > 100).then_some(())
    });
    drop(weir); // SIGKILL mid-stream
    writer.join().unwrap();
    let weir = WeirProcess::start(&j, &config);
    wait_sink_message(dir.path(), "line 3000");
    weir.terminate();
    let got = sink_messages(dir.path());
    for l in &all {
        assert!(got.contains(l), "{l} lost after kill -9");
    }
}

// ---- real-world churn (issue 25) -------------------------------------------

/// CPU seconds (user + system) used so far by this process's thread whose
/// name is `comm` (Linux cuts thread names at 15 bytes).
fn thread_cpu_s(comm: &str) -> f64 {
    for task in std::fs::read_dir("/proc/self/task").unwrap() {
        let dir = task.unwrap().path();
        let name = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        if name.trim_end() == comm {
            return stat_cpu_s(&std::fs::read_to_string(dir.join("stat")).unwrap());
        }
    }
    panic!("no thread named {comm}");
}

/// utime + stime of a `/proc/.../stat` line, in seconds (100 ticks a second).
fn stat_cpu_s(stat: &str) -> f64 {
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = after.split_whitespace().collect();
    (f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()) as f64 / 100.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cursor_from_an_earlier_boot_resumes_across_the_boot_boundary() {
    let mut j = Journald::start("boot");
    let mut w = weir();
    cat(&j, &lines("boot one", 1..=5));
    let src = run("j-boot", &config(&j), &w).await;
    let first = take(&mut w, 5).await;
    assert_eq!(messages(&first), lines("boot one", 1..=5));
    let old_boot = first[4].field("_BOOT_ID").unwrap().to_owned();
    src.stop().await;

    // "Reboot": journald comes back under another boot id, archives the
    // old boot's file and writes the new boot's entries.
    let new_boot = "5eb00700000000000000000000000b07";
    assert_ne!(old_boot, new_boot);
    j.restart_as_boot(new_boot);
    j.journalctl(&["--rotate"]);
    cat(&j, &lines("boot two", 1..=5));
    j.wait_entries(5, &[&format!("_BOOT_ID={new_boot}"), "--identifier=catapp"]);

    // The stored cursor is of the old boot; `tail` would skip the new boot's
    // first entries, a `--boot` reader would lose the old boot's last ones.
    let cfg = journal::Config {
        start_at: StartAt::Tail,
        ..config(&j)
    };
    let src = run("j-boot", &cfg, &w).await;
    let second = take(&mut w, 5).await;
    assert_eq!(messages(&second), lines("boot two", 1..=5));
    for e in &second {
        assert_eq!(e.field("_BOOT_ID"), Some(new_boot));
    }
    cat(&j, &lines("boot two more", 1..=2));
    assert_eq!(
        messages(&take(&mut w, 2).await),
        lines("boot two more", 1..=2)
    );
    nothing_more(&mut w, Duration::from_millis(500)).await;
    assert_eq!(counter("weir_journal_cursor_gaps_total", "j-boot"), 0.0);
    assert_eq!(counter("weir_journal_entries_missed_total", "j-boot"), 0.0);
    src.stop().await;
}

/// The archived files of a journald namespace (`system@….journal`).
fn archived_files(j: &Journald) -> Vec<PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(j.journal_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("system@") && n.ends_with(".journal"))
        })
        .collect();
    v.sort();
    v
}

/// Flips every bit of 64 KiB in the middle of the objects of a journal file
/// (after the header's hash tables, before its last object), where entry,
/// data and entry array objects lie.
fn corrupt_middle(file: &Path) {
    use std::io::{Read, Seek, SeekFrom, Write};
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(file)
        .unwrap();
    let mut header = [0u8; 160];
    f.read_exact(&mut header).unwrap();
    assert_eq!(&header[..8], b"LPKSHHRH", "not a journal file");
    let u64_at = |o: usize| u64::from_le_bytes(header[o..o + 8].try_into().unwrap());
    // Header: data_hash_table_offset at 104 (+ its size at 112), tail_object_offset at 136.
    let objects_start = u64_at(104) + u64_at(112);
    let tail = u64_at(136);
    assert!(
        tail > objects_start + 4 * 65536,
        "too few objects to corrupt"
    );
    let at = (objects_start + (tail - objects_start) / 2) & !7;
    let mut buf = vec![0u8; 65536];
    f.seek(SeekFrom::Start(at)).unwrap();
    f.read_exact(&mut buf).unwrap();
    for b in &mut buf {
        *b = !*b;
    }
    f.seek(SeekFrom::Start(at)).unwrap();
    f.write_all(&buf).unwrap();
    f.sync_all().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_archived_file_is_read_around_counted_and_never_spun_on() {
    read_around_a_damaged_file("corrupt", "jc", corrupt_middle).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_archived_file_behind_the_cursor_is_a_counted_gap() {
    let j = Journald::start("truncated");
    let mut w = weir();
    cat(&j, &lines("old", 1..=1000));
    let src = run("jt", &config(&j), &w).await;
    assert_eq!(messages(&take(&mut w, 1000).await), lines("old", 1..=1000));
    src.stop().await;

    // While weir is stopped: 2,000 more, archived, and the archive cut to a
    // third, as a full disk or a crash while copying leaves a file.
    // libsystemd refuses the whole file: the committed entry is gone too.
    cat(&j, &lines("old", 1001..=3000));
    j.wait_entries(1, &["MESSAGE=old 3000"]);
    j.journalctl(&["--rotate"]);
    let archived = archived_files(&j);
    assert_eq!(archived.len(), 1, "{archived:?}");
    let len = std::fs::metadata(&archived[0]).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&archived[0])
        .unwrap()
        .set_len(len / 3)
        .unwrap();
    cat(&j, &lines("after", 1..=100));
    j.wait_entries(1, &["MESSAGE=after 100"]);

    let src = run("jt", &config(&j), &w).await;
    assert_eq!(messages(&take(&mut w, 100).await), lines("after", 1..=100));
    nothing_more(&mut w, Duration::from_millis(500)).await;
    assert_eq!(counter("weir_journal_cursor_gaps_total", "jt"), 1.0);
    // The 2,000 never read, and not more than those and the few entries
    // journald wrote of itself meanwhile.
    let missed = counter("weir_journal_entries_missed_total", "jt");
    eprintln!("missed {missed}");
    assert!(
        (2000.0..=2010.0).contains(&missed),
        "{missed} counted missed"
    );
    let cpu0 = thread_cpu_s("journal-jt");
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(thread_cpu_s("journal-jt") - cpu0 < 0.5, "the reader spins");
    src.stop().await;
}

/// 3,000 entries archived into a file that `damage` then damages, 100 more
/// in the active file: weir delivers what libsystemd can read of the
/// damaged file, counts the rest, delivers the new entries, and waits on
/// more without spinning. `name` names the source (and its reader thread,
/// at most 7 bytes so that `journal-NAME` stays whole).
async fn read_around_a_damaged_file(tag: &str, name: &str, damage: impl FnOnce(&Path)) {
    let j = Journald::start(tag);
    let mut w = weir();
    let old = lines("old", 1..=3000);
    cat(&j, &old);
    j.wait_entries(3000, &["--identifier=catapp"]);
    j.journalctl(&["--rotate"]);
    let archived = archived_files(&j);
    assert_eq!(archived.len(), 1, "{archived:?}");
    damage(&archived[0]);
    cat(&j, &lines("after", 1..=100));
    j.wait_entries(1, &["MESSAGE=after 100"]);

    let src = run(name, &config(&j), &w).await;
    // What can still be read is read; then the active file's entries.
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !got.iter().any(|e: &Event| e.message == b"after 100") {
        assert!(Instant::now() < deadline, "stalled at {} events", got.len());
        if let Ok(batch) = tokio::time::timeout(
            Duration::from_secs(1),
            w.reader.next_batch(10_000, 64 << 20),
        )
        .await
        {
            got.extend(batch.unwrap().events);
        }
    }
    // Entries of the old file: all before the first new one. Some may have
    // lost a field to the corruption (libsystemd hands over the items it can
    // read, as `journalctl` shows them): they still count as read.
    let first_after = got
        .iter()
        .position(|e| e.message == b"after 1")
        .expect("after 1 delivered");
    let got_old = first_after as u64;
    assert_eq!(
        messages(&got[got.len() - 100..]),
        lines("after", 1..=100),
        "the entries after the corrupt file"
    );
    assert!(got_old < 3000, "the corruption hid nothing: test broken");
    // Every old entry is either delivered or counted.
    let unread = counter("weir_journal_entries_missed_total", name)
        + registry()
            .value(
                "weir_source_decode_errors_total",
                &[("source", name), ("reason", "unreadable_entry")],
            )
            .unwrap_or(0.0);
    eprintln!("old file: {got_old} of 3000 entries read, {unread} counted unread");
    assert_eq!(
        got_old as f64 + unread,
        3000.0,
        "{got_old} old entries delivered, {unread} counted unread"
    );

    // New entries keep coming, and waiting costs next to nothing.
    let cpu0 = thread_cpu_s(&format!("journal-{name}"));
    let t = Instant::now();
    for round in 1..=4 {
        cat(&j, &lines(&format!("new {round}"), 1..=10));
        assert_eq!(
            messages(&take(&mut w, 10).await),
            lines(&format!("new {round}"), 1..=10)
        );
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
    let cpu = thread_cpu_s(&format!("journal-{name}")) - cpu0;
    let share = cpu / t.elapsed().as_secs_f64();
    eprintln!(
        "reader thread: {cpu:.2} CPU s over {:?} ({:.2}% of a core)",
        t.elapsed(),
        share * 100.0
    );
    assert!(
        share < 0.10,
        "the reader spins: {:.1}% of a core",
        share * 100.0
    );
    nothing_more(&mut w, Duration::from_millis(300)).await;
    src.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_journal_sources_each_resume_from_their_own_cursor() {
    let a = Journald::start("multi-a");
    let b = Journald::start("multi-b");
    let c = Journald::start("multi-c");
    let mut w = weir();
    let cfg_a = config(&a);
    let cfg_b = config(&b);
    // The third one by directory: the files of a namespace, read like any
    // copied or remote journal directory.
    let cfg_c = journal::Config {
        journal: JournalSet::Directory(c.journal_dir()),
        ..config(&c)
    };
    let write_all = |round: &str| {
        cat(&a, &lines(&format!("a {round}"), 1..=4));
        cat(&b, &lines(&format!("b {round}"), 1..=3));
        cat(&c, &lines(&format!("c {round}"), 1..=2));
    };
    let split = |events: &[Event]| {
        let mut by: std::collections::BTreeMap<char, Vec<String>> = Default::default();
        for m in messages(events) {
            by.entry(m.chars().next().unwrap()).or_default().push(m);
        }
        by
    };
    let expect = |round: &str| {
        let mut by = std::collections::BTreeMap::new();
        by.insert('a', lines(&format!("a {round}"), 1..=4));
        by.insert('b', lines(&format!("b {round}"), 1..=3));
        by.insert('c', lines(&format!("c {round}"), 1..=2));
        by
    };
    write_all("one");
    c.wait_entries(2, &["--identifier=catapp"]);
    let run_all = |w: &Weir| {
        let (ca, cb, cc) = (cfg_a.clone(), cfg_b.clone(), cfg_c.clone());
        let ingest = w.ingest.clone();
        async move {
            let mut v = Vec::new();
            for (name, cfg) in [("jm-a", ca), ("jm-b", cb), ("jm-c", cc)] {
                let stop = CancellationToken::new();
                let task = journal::start(name, &cfg, ingest.clone(), stop.clone())
                    .await
                    .expect("journal source starts");
                v.push(Running { task, stop });
            }
            v
        }
    };
    let srcs = run_all(&w).await;
    assert_eq!(split(&take(&mut w, 9).await), expect("one"));
    for s in srcs {
        s.stop().await;
    }

    // While stopped: each journal moves on by a different amount.
    write_all("two");
    c.wait_entries(1, &["MESSAGE=c two 2"]);
    let srcs = run_all(&w).await;
    assert_eq!(split(&take(&mut w, 9).await), expect("two"));
    write_all("three");
    assert_eq!(split(&take(&mut w, 9).await), expect("three"));
    nothing_more(&mut w, Duration::from_millis(500)).await;
    for (name, received) in [("jm-a", 12.0), ("jm-b", 9.0), ("jm-c", 6.0)] {
        assert_eq!(
            counter("weir_journal_cursor_gaps_total", name),
            0.0,
            "{name}"
        );
        assert_eq!(
            counter("weir_source_events_received_total", name),
            received,
            "{name} read an entry twice"
        );
    }
    for s in srcs {
        s.stop().await;
    }
}

/// Writes `msgs` with `systemd-cat -t catapp`, running `journalctl --rotate`
/// after every `per_file` lines (each rotation archives the active file).
fn cat_rotating(j: &Journald, msgs: &[String], per_file: usize) {
    for chunk in msgs.chunks(per_file) {
        cat(j, chunk);
        j.journalctl(&["--rotate"]);
    }
}

/// How many of weir's own log entries in `j` have this message, and the sum
/// of their `field` (a number) where present.
fn weir_log(j: &Journald, message: &str, field: &str) -> (usize, u64) {
    let entries = j.entries(&["SYSLOG_IDENTIFIER=weir", &format!("MESSAGE={message}")]);
    let sum = entries
        .iter()
        .filter_map(|e| e[field].as_str()?.parse::<u64>().ok())
        .sum();
    (entries.len(), sum)
}

#[test]
fn rotation_vacuum_and_kill_9_while_reading_20000_entries() {
    let j = Journald::start("churn");
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &j, "");
    let all = lines("churn", 1..=20_000);
    let (read_live, rest) = all.split_at(8_000);
    let (vacuumed, after) = rest.split_at(4_000);

    // 1. 8,000 entries over four files, rotated while weir reads; weir is
    //    killed with SIGKILL mid-stream and started again.
    let weir = WeirProcess::start(&j, &config);
    std::thread::scope(|s| {
        let writer = s.spawn(|| cat_rotating(&j, read_live, 2_000));
        wait_for("3000 lines in the sink", Duration::from_secs(30), || {
            (sink_messages(dir.path()).len() >= 3_000).then_some(())
        });
        drop(weir); // SIGKILL mid-stream
        writer.join().unwrap();
    });
    let written_before_kill = sink_messages(dir.path());
    let weir = WeirProcess::start(&j, &config);
    wait_sink_message(dir.path(), "churn 8000");
    weir.terminate();

    // 2. While weir is down, 4,000 more are written, then rotated and
    //    vacuumed away: weir never saw them.
    cat(&j, vacuumed);
    j.wait_entries(1, &["MESSAGE=churn 12000"]);
    // Entries after the last one weir took (`churn 8000`): these 4,000 and
    // whatever else was logged meanwhile (weir's own shutdown lines).
    let journal = j.entries(&[]);
    let last_taken = journal
        .iter()
        .position(|e| e["MESSAGE"] == "churn 8000")
        .unwrap();
    let unread = journal.len() - last_taken - 1;
    j.rotate_and_vacuum();
    assert!(
        j.entries(&["--identifier=catapp"]).is_empty(),
        "vacuum left entries"
    );

    // 3. Started again: a counted gap, then 8,000 more over four rotations.
    let weir = WeirProcess::start(&j, &config);
    cat_rotating(&j, after, 2_000);
    wait_sink_message(dir.path(), "churn 20000");
    weir.terminate();

    let got = sink_messages(dir.path());
    let unique: std::collections::HashSet<&str> = got.iter().map(String::as_str).collect();
    let duplicates = got.len() - unique.len();
    let lost_live: Vec<_> = read_live
        .iter()
        .chain(after)
        .filter(|l| !unique.contains(l.as_str()))
        .collect();
    assert!(
        lost_live.is_empty(),
        "{} entries lost: {:?}",
        lost_live.len(),
        &lost_live[..lost_live.len().min(10)]
    );
    let leaked = vacuumed
        .iter()
        .filter(|l| unique.contains(l.as_str()))
        .count();
    assert_eq!(leaked, 0, "vacuumed entries cannot have been read");
    assert_eq!(unique.len(), 16_000, "unexpected events in the sink");
    eprintln!(
        "{} lines in the sink: 16000 distinct, {duplicates} duplicates",
        got.len()
    );
    // At-least-once: only what the sink wrote before the SIGKILL but had
    // not acknowledged yet (its cursor is stored once a second) is written
    // again, once. The journal side adds none: it resumes right after the
    // cursor committed with the spooled data.
    let before_kill: std::collections::HashSet<&str> =
        written_before_kill.iter().map(String::as_str).collect();
    let mut seen = std::collections::HashMap::<&str, usize>::new();
    for m in &got {
        *seen.entry(m.as_str()).or_default() += 1;
    }
    for (m, n) in &seen {
        assert!(
            *n == 1 || (*n == 2 && before_kill.contains(m)),
            "`{m}` written {n} times"
        );
    }
    assert!(duplicates <= written_before_kill.len());
    // The gap is counted once and its size told: weir logs both.
    let (gaps, _) = weir_log(
        &j,
        "the last committed journal entry is gone (vacuumed or rotated while weir was down); resuming at the oldest entry since its time, entries in between are lost",
        "F_RESUME_AT_US",
    );
    assert_eq!(gaps, 1, "one gap warning");
    let (_, missed) = weir_log(
        &j,
        "the journal's sequence numbers jumped: entries were vacuumed before weir read them, or are in a corrupt journal file; reading on",
        "F_MISSED",
    );
    // All 4,000 and nothing that was not there; the entries right after
    // `churn 8000` that weir read (its own, skipped) with its last batch are
    // behind its cursor, not missed.
    assert!(
        (4_000..=unread as u64).contains(&missed),
        "{missed} counted missed, {unread} after the last entry taken"
    );
}

/// `/proc/PID[/task/TID]/io` as name -> value.
fn proc_io(path: &Path) -> std::collections::HashMap<String, u64> {
    std::fs::read_to_string(path.join("io"))
        .unwrap()
        .lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(": ")?;
            Some((k.to_owned(), v.trim().parse().ok()?))
        })
        .collect()
}

/// The `/proc` directory of `pid`'s thread named `comm`.
fn thread_dir(pid: u32, comm: &str) -> PathBuf {
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let dir = task.unwrap().path();
        if std::fs::read_to_string(dir.join("comm"))
            .unwrap_or_default()
            .trim_end()
            == comm
        {
            return dir;
        }
    }
    panic!("weir has no thread named {comm}");
}

/// CPU seconds and I/O of the whole process and of its journal thread.
struct Usage {
    cpu: f64,
    io: std::collections::HashMap<String, u64>,
    thread_cpu: f64,
    thread_io: std::collections::HashMap<String, u64>,
    /// Every thread's (name, write syscalls, bytes written, bytes to storage).
    threads: std::collections::BTreeMap<String, (u64, u64, u64)>,
}

impl Usage {
    fn of(pid: u32) -> Usage {
        let proc_dir = PathBuf::from(format!("/proc/{pid}"));
        let thread = thread_dir(pid, "journal-journal");
        Usage {
            cpu: stat_cpu_s(&std::fs::read_to_string(proc_dir.join("stat")).unwrap()),
            io: proc_io(&proc_dir),
            thread_cpu: stat_cpu_s(&std::fs::read_to_string(thread.join("stat")).unwrap()),
            thread_io: proc_io(&thread),
            threads: std::fs::read_dir(proc_dir.join("task"))
                .unwrap()
                .filter_map(|t| {
                    let dir = t.ok()?.path();
                    let comm = std::fs::read_to_string(dir.join("comm")).ok()?;
                    let io = proc_io(&dir);
                    let tid = dir.file_name()?.to_string_lossy().into_owned();
                    Some((
                        format!("{}/{tid}", comm.trim_end()),
                        (io["syscw"], io["wchar"], io["write_bytes"]),
                    ))
                })
                .collect(),
        }
    }
}

#[test]
fn idle_costs_nothing_for_the_journal_source_and_the_whole_agent() {
    let j = Journald::start("idle");
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("forward.sock");
    let config = write_config(
        dir.path(),
        &j,
        &format!(
            "[sources.docker]\ntype = \"forward\"\nlisten = \"unix://{}\"\n",
            sock.display()
        ),
    );
    let weir = WeirProcess::start(&j, &config);
    cat(&j, &lines("busy", 1..=500));
    wait_sink_message(dir.path(), "busy 500");
    // Docker keeps a connection per container open even when it is quiet.
    let _idle_client = wait_for("the forward socket", Duration::from_secs(10), || {
        std::os::unix::net::UnixStream::connect(&sock).ok()
    });
    // Let start-up and the last batch settle (sink ack, spool sync).
    std::thread::sleep(Duration::from_secs(3));

    let window = Duration::from_secs(60);
    let before = Usage::of(weir.pid());
    std::thread::sleep(window);
    let after = Usage::of(weir.pid());
    let delta = |a: &std::collections::HashMap<String, u64>,
                 b: &std::collections::HashMap<String, u64>,
                 k: &str| b[k] - a[k];
    let secs = window.as_secs_f64();
    eprintln!(
        "idle {secs} s: journal thread {:.2} CPU s, {} write syscalls, {} bytes written; \
         whole agent {:.2} CPU s, {} write syscalls, wchar {}, write_bytes {}",
        after.thread_cpu - before.thread_cpu,
        delta(&before.thread_io, &after.thread_io, "syscw"),
        delta(&before.thread_io, &after.thread_io, "wchar"),
        after.cpu - before.cpu,
        delta(&before.io, &after.io, "syscw"),
        delta(&before.io, &after.io, "wchar"),
        delta(&before.io, &after.io, "write_bytes"),
    );
    for (t, (c, w, b)) in &after.threads {
        let (c0, w0, b0) = before.threads.get(t).copied().unwrap_or_default();
        if (c - c0, w - w0, b - b0) != (0, 0, 0) {
            eprintln!(
                "  thread {t}: {} write syscalls, wchar {}, write_bytes {}",
                c - c0,
                w - w0,
                b - b0
            );
        }
    }
    assert!(
        (after.thread_cpu - before.thread_cpu) / secs < 0.005,
        "the journal source used over 0.5% of a core idle"
    );
    assert!(
        (after.cpu - before.cpu) / secs < 0.005,
        "the agent used over 0.5% of a core idle"
    );
    // The journal source writes nothing at all: no write syscall (wchar
    // counts every byte passed to write(2), to disk or not), so no cursor
    // rewrite either.
    for key in ["wchar", "syscw", "write_bytes"] {
        assert_eq!(
            delta(&before.thread_io, &after.thread_io, key),
            0,
            "journal thread {key}"
        );
    }
    // The agent sends nothing to storage (write_bytes counts the file pages
    // a process dirties), and its only writes are the async runtime's 8-byte
    // eventfd wake-ups (its timers), not files, logs or sockets.
    assert_eq!(
        delta(&before.io, &after.io, "write_bytes"),
        0,
        "agent write_bytes"
    );
    assert_eq!(
        delta(&before.io, &after.io, "wchar"),
        8 * delta(&before.io, &after.io, "syscw"),
        "agent writes other than eventfd wake-ups"
    );
    // Still reading: a new entry arrives.
    cat(&j, &lines("awake", 1..=1));
    wait_sink_message(dir.path(), "awake 1");
    weir.terminate();
}
