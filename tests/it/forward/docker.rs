//! Against the real Docker daemon and its `fluentd` log driver.

use std::io::Write;
use std::os::unix::net::UnixListener;
use std::time::Duration;

use serde_json::Value;

use super::listen::{file_events, ActivatedWeir};
use super::{config_text, messages_with, Weir};
use crate::docker_harness::{Dockerd, IMAGE};

fn find<'a>(events: &'a [Value], message: &str) -> &'a Value {
    let found: Vec<_> = events.iter().filter(|e| e["message"] == message).collect();
    assert_eq!(
        found.len(),
        1,
        "exactly one {message:?} (no loss, no resend)"
    );
    found[0]
}

#[test]
fn docker_lines_arrive_with_labels_acks_and_long_lines_whole() {
    let weir = Weir::start("fwd_docker", "");
    let docker = Dockerd::start();
    let address = format!("fluentd-address=unix://{}", weir.socket.display());
    // One 40 KiB line: Docker sends it as three 16 KiB pieces. The sleeps
    // keep stdout and stderr from being posted concurrently: Docker's client
    // library then races reading acks on the shared connection (its bug,
    // whatever the server) and resends.
    let script =
        "echo out line; sleep 0.3; echo err line >&2; sleep 0.3; head -c 40960 /dev/zero | tr '\\0' x; echo";
    let started = std::time::Instant::now();
    docker.run(&[
        "--rm",
        "--name",
        "web-1",
        "--label",
        "com.docker.compose.project=shop",
        "--label",
        "com.docker.compose.service=web",
        "--label",
        "team=blue",
        "--log-driver",
        "fluentd",
        "--log-opt",
        &address,
        "--log-opt",
        "fluentd-sub-second-precision=true",
        "--log-opt",
        "fluentd-request-ack=true",
        "--log-opt",
        "labels=com.docker.compose.project,com.docker.compose.service,team",
        "--log-opt",
        "tag=docker.{{.Name}}",
        IMAGE,
        "sh",
        "-c",
        script,
    ]);
    // Unanswered acks would make the driver wait out its timeout and resend.
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "docker run took {:?}: acks not answered?",
        started.elapsed()
    );
    let events = weir.wait_events(3);
    std::thread::sleep(Duration::from_millis(500));
    let events = if events.len() > 3 {
        events
    } else {
        weir.events()
    };
    assert_eq!(events.len(), 3, "{events:#?}");

    let out = find(&events, "out line");
    assert_eq!(out["labels"]["container_name"], "web-1");
    assert_eq!(out["labels"]["app"], "shop");
    assert_eq!(out["labels"]["service"], "web");
    assert_eq!(out["labels"]["level"], "info");
    assert_eq!(out["labels"]["source"], "docker");
    assert_eq!(out["labels"]["host"], "test-host");
    assert_eq!(out["fields"]["stream"], "stdout");
    assert_eq!(out["fields"]["team"], "blue");
    assert_eq!(out["fields"]["tag"], "docker.web-1");
    let id = out["fields"]["container_id"].as_str().unwrap();
    assert_eq!(id.len(), 64, "{id}");

    let err = find(&events, "err line");
    assert_eq!(err["labels"]["level"], "error");
    assert_eq!(err["fields"]["stream"], "stderr");
    assert_eq!(err["fields"]["container_id"], id);

    let long = events
        .iter()
        .find(|e| e["message"].as_str().unwrap().starts_with("xxx"))
        .expect("the long line");
    let text = long["message"].as_str().unwrap();
    assert!(
        text == "x".repeat(40960),
        "long line: {} bytes, fields {:?}",
        text.len(),
        long["fields"]
    );
    assert!(
        long["fields"].get("partial").is_none(),
        "{:?}",
        long["fields"]
    );
    assert!(long["fields"].get("partial_id").is_none());
    assert_eq!(long["labels"]["container_name"], "web-1");
    // EventTime: sub-second precision survived.
    assert!(events
        .iter()
        .any(|e| e["timestamp_ns"].as_i64().unwrap() % 1_000_000_000 != 0));
}

/// Incident 1: the socket is held (as `weir.socket` would) but nobody accepts
/// yet; a container with `fluentd-async=true` starts logging; then weir
/// starts on the inherited socket and every line arrives, in order.
///
/// The kernel buffers what Docker writes to the not-yet-accepted connection;
/// once that buffer is full Docker's sender waits, holding the rest in its
/// own buffer, until weir accepts. (Measured here: a container that *exits*
/// before anyone accepts loses what did not fit in the kernel buffer, because
/// Docker's driver drops its async buffer when the container stops. Hence
/// the container below is still running when weir starts, as at boot.)
#[test]
fn docker_lines_written_before_weir_starts_all_arrive() {
    let docker = Dockerd::start();
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("forward.sock");
    let listener = UnixListener::bind(&socket).unwrap();
    let address = format!("fluentd-address=unix://{}", socket.display());
    let id = docker.run(&[
        "-d",
        "--log-driver",
        "fluentd",
        "--log-opt",
        &address,
        "--log-opt",
        "fluentd-async=true",
        IMAGE,
        "sh",
        "-c",
        "for i in $(seq 1 500); do echo early $i; done; sleep 4",
    ]);
    let id = id.trim().to_owned();
    // The container writes all its lines while weir does not exist yet.
    let waiter = docker.spawn(&["wait", &id]);
    std::thread::sleep(Duration::from_secs(2));
    let config = dir.path().join("weir.toml");
    let mut f = std::fs::File::create(&config).unwrap();
    f.write_all(config_text(dir.path(), "fwd_incident1", &socket, "").as_bytes())
        .unwrap();
    let _weir = ActivatedWeir::start(listener, &config);
    let mut events = Vec::new();
    for _ in 0..300 {
        events = file_events(dir.path());
        if messages_with(&events, "early ").len() >= 500 {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let got = messages_with(&events, "early ");
    let want: Vec<String> = (1..=500).map(|i| format!("early {i}")).collect();
    let missing: Vec<&String> = want.iter().filter(|w| !got.contains(w)).collect();
    assert!(
        got == want,
        "{} of 500 lines; missing {:?}; {} duplicates",
        got.len(),
        &missing[..missing.len().min(20)],
        got.len() + missing.len() - 500
    );
    let out = waiter.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "0");
}

/// Issue 20 item 8: under `fluentd-request-ack`, a burst from a new
/// container made dockerd log `fluent#write: message ack () doesn't match
/// expected one (...)` and reconnect. The empty `()` is not an ack weir
/// wrote: fluent-logger-golang prints that line when *reading* the ack
/// failed (`err != nil || resp.Ack != msg.ack`, `resp.Ack` still empty).
/// Two ways Docker's side makes that read fail, both reproduced here:
/// with `fluentd-async=true` the container's exit closes the logger
/// (`ForceStopAsyncSend`) under the goroutine waiting for an ack, and the
/// events still queued in dockerd are discarded ("Discarding queued
/// events"); in the synchronous mode the stdout and stderr copiers share
/// one connection and race reading acks. weir closes no connection and
/// answers every chunk once, in order, once durable: a container that stays
/// up after its burst gets every line exactly once and no mismatch.
#[test]
fn docker_bursts_on_stdout_and_stderr_get_every_ack() {
    let weir = Weir::start("fwd_docker_acks", "");
    let docker = Dockerd::start();
    let address = format!("fluentd-address=unix://{}", weir.socket.display());
    const N: usize = 300;
    for mode in ["async", "sync"] {
        // The sleep keeps the container (and its logger) up until the acks
        // of its burst came back.
        let script = format!(
            "for i in $(seq 1 {N}); do echo {mode}-out-$i; echo {mode}-err-$i >&2; done; sleep 20"
        );
        let before = docker.log();
        let closed_before: std::collections::HashMap<&str, f64> = [
            "bad_frame",
            "malformed",
            "truncated",
            "gave_way",
            "idle_timeout",
        ]
        .into_iter()
        .map(|r| {
            (
                r,
                weir.metric("weir_source_decode_errors_total", &[("reason", r)]),
            )
        })
        .collect();
        let id = docker.run(&[
            "-d",
            "--log-driver",
            "fluentd",
            "--log-opt",
            &address,
            "--log-opt",
            "fluentd-request-ack=true",
            "--log-opt",
            &format!("fluentd-async={}", mode == "async"),
            IMAGE,
            "sh",
            "-c",
            &script,
        ]);
        let id = id.trim().to_owned();
        let lines: Vec<String> = ["out", "err"]
            .iter()
            .flat_map(|stream| (1..=N).map(move |i| format!("{mode}-{stream}-{i}")))
            .collect();
        let count =
            |events: &[Value], line: &str| events.iter().filter(|e| e["message"] == line).count();
        // Every line, or (sync mode) whatever came within 40 s.
        let deadline = std::time::Instant::now() + Duration::from_secs(40);
        let events = loop {
            let events = weir.events();
            let missing = lines.iter().filter(|l| count(&events, l) == 0).count();
            if missing == 0 || std::time::Instant::now() > deadline {
                break events;
            }
            std::thread::sleep(Duration::from_millis(200));
        };
        let log = docker.log();
        let new = &log[before.len().min(log.len())..];
        let mismatches = new.matches("doesn't match expected one").count();
        let lost = lines.iter().filter(|l| count(&events, l) == 0).count();
        let repeated = lines.iter().filter(|l| count(&events, l) > 1).count();
        eprintln!("{mode}: dockerd logged {mismatches} ack mismatches; {lost} lines lost, {repeated} sent more than once; {} connections gave way",
            weir.metric("weir_source_decode_errors_total", &[("reason", "gave_way")]));
        // What weir closed in this mode: no bad input and no timeout ever.
        let closed = |reason: &str| {
            weir.metric("weir_source_decode_errors_total", &[("reason", reason)])
                - closed_before[reason]
        };
        for reason in ["bad_frame", "malformed", "truncated", "idle_timeout"] {
            assert_eq!(closed(reason), 0.0, "{mode}: {reason}");
        }
        if mode == "async" {
            assert_eq!((mismatches, lost, repeated), (0, 0, 0), "{new}");
            // weir closed no connection either.
            assert_eq!(closed("gave_way"), 0.0, "async: gave_way");
        } else {
            // Docker's copiers race on the shared connection: what it drops
            // after its retries, or resends, it has logged as a mismatch.
            assert!(mismatches > 0 || lost + repeated == 0, "{new}");
            // Each mismatch makes dockerd reconnect. Under load (tens of
            // thousands of mismatches at load 3-6) some runs had
            // connections asked to give way (25 and 168, with the code of
            // 445c593 as with later code), others none; which limit asked
            // them (connection slots or the memory budget) is not known
            // yet. Without a mismatch there is no reconnect, so nothing may
            // give way.
            if mismatches == 0 {
                assert_eq!(closed("gave_way"), 0.0, "sync: gave_way");
            }
        }
        let _ = docker.docker(&["rm", "-f", &id]);
    }
}
