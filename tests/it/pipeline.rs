//! The whole agent as a process: start, graceful shutdown, exit code.

use std::io::{BufRead, BufReader};

use std::time::{Duration, Instant};

use crate::common::spawn_weir;

/// A config with a forward source on a temp socket and a file sink.
pub fn minimal_config(dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("weir.toml");
    std::fs::write(
        &path,
        format!(
            r#"
state_dir = "{d}/state"
[sources.docker]
type = "forward"
listen = "unix://{d}/forward.sock"
[sinks.out]
type = "file"
path = "{d}/out/events.ndjson"
[metrics]
listen = ""
"#,
            d = dir.display()
        ),
    )
    .unwrap();
    path
}

#[test]
fn sigterm_shuts_down_in_order_and_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let config = minimal_config(dir.path());
    let mut child = spawn_weir(&config);
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut lines = Vec::new();
    let mut line = String::new();
    while stderr.read_line(&mut line).unwrap() > 0 {
        lines.push(std::mem::take(&mut line));
        if lines.last().unwrap().contains("weir started") {
            break;
        }
    }
    assert!(
        lines.iter().any(|l| l.contains("weir started")),
        "weir did not start: {lines:?}"
    );
    let sent = Instant::now();
    let rc = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(rc.success());
    let status = child.wait().unwrap();
    let took = sent.elapsed();
    for l in stderr.lines() {
        lines.push(l.unwrap());
    }
    assert_eq!(status.code(), Some(0), "{lines:?}");
    assert!(took < Duration::from_secs(20), "shutdown took {took:?}");
    let pos = |needle: &str| {
        lines
            .iter()
            .position(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no `{needle}` in {lines:?}"))
    };
    assert!(pos("shutting down") < pos("weir stopped"));
}
