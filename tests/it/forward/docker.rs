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
