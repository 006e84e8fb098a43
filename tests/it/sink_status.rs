//! `weir status` on a sink that is delivering: it must never be called
//! stalled. (The file sink once never set
//! `weir_sink_last_success_timestamp_seconds`, so on a real install `weir
//! status` said "UNHEALTHY: sink local is 177 B behind and has delivered
//! nothing in 5m 17s" in 8 checks of 8 while it delivered thousands.)

use std::collections::HashMap;
use std::io::Write as _;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::{wait_for, weir_run, weir_says, KillOnDrop};

fn status(config: &Path, stall_after: &str) -> (Option<i32>, String) {
    let config = config.to_str().unwrap();
    weir_says(&["status", "--stall-after", stall_after, "--config", config])
}

/// The bytes of the `lag N B` figure of `sink`'s row, if it is in bytes.
fn lag_of(text: &str, sink: &str) -> Option<f64> {
    let row = text.split(&format!("  {sink}: ")).nth(1)?;
    let after = row.split("lag ").nth(1)?;
    let mut parts = after.split_whitespace();
    let value: f64 = parts.next()?.parse().ok()?;
    let unit = parts.next()?.trim_end_matches(',');
    let scale = match unit {
        "B" => 1.0,
        "KiB" => 1024.0,
        "MiB" => 1024.0 * 1024.0,
        _ => return None,
    };
    Some(value * scale)
}

/// A Forward Message-mode entry, `[tag, time, record]`, as Docker sends it.
fn forward_message(i: u64) -> Vec<u8> {
    let mut record = HashMap::new();
    record.insert("container_name", "/status-test".to_owned());
    record.insert("source", "stdout".to_owned());
    record.insert("log", format!("line {i} of a busy container"));
    rmp_serde::to_vec(&(
        "docker.test",
        (std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs())
            + i,
        record,
    ))
    .unwrap()
}

#[test]
fn weir_status_calls_a_delivering_file_sink_healthy_past_stall_after() {
    const STALL_AFTER: &str = "2s";
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    let config = dir.path().join("weir.toml");
    std::fs::write(
        &config,
        format!(
            "state_dir = \"{d}/state\"\n\
             [sources.docker]\ntype = \"forward\"\nlisten = \"unix://{d}/forward.sock\"\n\
             [sinks.local]\ntype = \"file\"\npath = \"{d}/out/events.ndjson\"\n\
             [metrics]\nlisten = \"unix://{d}/metrics.sock\"\n"
        ),
    )
    .unwrap();
    let started = Instant::now();
    let _agent = KillOnDrop(
        weir_run(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let socket = dir.path().join("forward.sock");
    let mut conn = wait_for("the forward socket", Duration::from_secs(20), || {
        UnixStream::connect(&socket).ok()
    });

    // A container writing all along: the sink always has something to do.
    let stop = Arc::new(AtomicBool::new(false));
    let written = Arc::new(AtomicU64::new(0));
    let producer = {
        let (stop, written) = (stop.clone(), written.clone());
        std::thread::spawn(move || {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                for _ in 0..50 {
                    conn.write_all(&forward_message(i)).unwrap();
                    i += 1;
                }
                written.store(i, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(2));
            }
        })
    };

    // Checks count only once weir has been up past --stall-after, and only
    // those that saw the sink behind (the condition of the bug): wait for
    // three of them, each of which must say healthy with a recent success.
    let mut behind_checks = 0;
    let mut checks = 0;
    let deadline = Instant::now() + Duration::from_secs(90);
    while behind_checks < 3 {
        assert!(
            Instant::now() < deadline,
            "the sink was never seen behind in {checks} checks"
        );
        let (code, text) = status(&config, STALL_AFTER);
        if started.elapsed() < Duration::from_secs(4) || !text.contains("  local: ") {
            continue;
        }
        checks += 1;
        assert_eq!(code, Some(0), "a delivering sink called unhealthy:\n{text}");
        assert!(text.contains("status: healthy"), "{text}");
        assert!(
            !text.contains("last success never"),
            "the file sink must report its last success:\n{text}"
        );
        if lag_of(&text, "local").is_some_and(|lag| lag > 0.0) {
            behind_checks += 1;
        }
    }
    stop.store(true, Ordering::Relaxed);
    producer.join().unwrap();
    assert!(written.load(Ordering::Relaxed) > 0);
    let lines = std::fs::read_to_string(dir.path().join("out/events.ndjson"))
        .unwrap()
        .lines()
        .count();
    assert!(lines > 0, "the file sink delivered nothing");
}
