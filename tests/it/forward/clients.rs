//! Real Forward clients: Python's `fluent-logger` and fluent-logger-golang
//! (the library inside Docker's fluentd driver), with acknowledgements.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

use super::{messages_with, Weir};

#[test]
fn python_fluent_logger_message_mode() {
    let weir = Weir::start("fwd_python", "");
    // fluent-logger has no ack support; EventTime via nanosecond_precision.
    let script = r#"
import sys
from fluent import sender
s = sender.FluentSender("py.app", host="unix://" + sys.argv[1], nanosecond_precision=True)
for i in range(50):
    if not s.emit("ev", {"message": "python %d" % i, "n": i, "nested": {"a": [1, 2]}}):
        raise SystemExit("emit failed: %r" % s.last_error)
s.close()
"#;
    let out = Command::new("python3")
        .args(["-c", script])
        .arg(&weir.socket)
        .output()
        .expect("python3 (install fluent-logger: scripts/deps.sh)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let events = weir.wait_events(50);
    let got = messages_with(&events, "python ");
    assert_eq!(got.len(), 50);
    assert_eq!(got[49], "python 49");
    let e = events.iter().find(|e| e["message"] == "python 7").unwrap();
    assert_eq!(e["fields"]["tag"], "py.app.ev");
    assert_eq!(e["fields"]["n"], "7");
    assert_eq!(e["fields"]["nested"], r#"{"a":[1,2]}"#);
    assert_eq!(e["labels"]["host"], "test-host");
    // nanosecond precision: not a whole second (with overwhelming probability over 50 events)
    assert!(events
        .iter()
        .any(|e| e["timestamp_ns"].as_i64().unwrap() % 1_000_000_000 != 0));
}

/// Builds `tests/go/forwardclient` once per test run.
pub(super) fn go_client() -> &'static PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let out_dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("go");
        std::fs::create_dir_all(&out_dir).unwrap();
        let bin = out_dir.join("forwardclient");
        let status = Command::new("go")
            .args(["build", "-o"])
            .arg(&bin)
            .arg(".")
            .current_dir(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/go/forwardclient"
            ))
            .env("GOPATH", "/usr/share/gocode")
            .env("GO111MODULE", "off")
            .env("GOCACHE", out_dir.join("cache"))
            .status()
            .expect(
                "go (golang-go and golang-github-fluent-fluent-logger-golang-dev: scripts/deps.sh)",
            );
        assert!(status.success(), "building the Go client failed");
        bin
    })
}

fn run_go(weir: &Weir, mode: &str, n: usize) {
    let out = Command::new(go_client())
        .args([
            "-mode",
            mode,
            "-n",
            &n.to_string(),
            "-tag",
            "go.app",
            "-socket",
        ])
        .arg(&weir.socket)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "go client ({mode}): {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn fluent_logger_golang_all_modes_with_acks() {
    let weir = Weir::start("fwd_go", "");
    run_go(&weir, "message", 20);
    run_go(&weir, "forward", 250);
    run_go(&weir, "packed", 1000);
    let events = weir.wait_events(1270);
    assert_eq!(messages_with(&events, "go message ").len(), 20);
    assert_eq!(messages_with(&events, "go forward ").len(), 250);
    let packed = messages_with(&events, "go packed ");
    assert_eq!(packed.len(), 1000);
    assert_eq!(packed[999], "go packed 999");
    let e = events
        .iter()
        .find(|e| e["message"] == "go message 3")
        .unwrap();
    assert_eq!(e["labels"]["level"], "warning");
    assert_eq!(e["fields"]["n"], "3");
    assert_eq!(e["fields"]["tag"], "go.app");
    assert_eq!(
        weir.metric("weir_source_events_received_total", &[]),
        1270.0
    );
}
