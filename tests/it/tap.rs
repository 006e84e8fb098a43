//! `weir tap` against a running weir: live scrubbed events, filtered by
//! source and label, in both formats; a viewer that does not read loses
//! events (and is told how many) while the pipeline spools everything.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{wait_for, weir_bin, weir_run};
use crate::forward::message_frame;

const TIMEOUT: Duration = Duration::from_secs(30);

/// Two forward sources `a` and `b`, one file sink, everything in `dir`.
fn start(dir: &Path) -> Child {
    let d = dir.display();
    let config = dir.join("weir.toml");
    std::fs::write(
        &config,
        format!(
            "state_dir = \"{d}/state\"\n[metrics]\nlisten = \"unix://{d}/metrics.sock\"\n\
             [sources.a]\ntype = \"forward\"\nlisten = \"unix://{d}/a.sock\"\n\
             [sources.b]\ntype = \"forward\"\nlisten = \"unix://{d}/b.sock\"\n\
             [sinks.out]\ntype = \"file\"\npath = \"{d}/out.ndjson\"\nmax_file_bytes = \"1GiB\"\n"
        ),
    )
    .unwrap();
    let child = weir_run(&config)
        .arg("--tap-socket")
        .arg(dir.join("tap.sock"))
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for("weir to serve its sources and tap", TIMEOUT, || {
        (UnixStream::connect(dir.join("b.sock")).is_ok()
            && UnixStream::connect(dir.join("tap.sock")).is_ok())
        .then_some(())
    });
    child
}

struct Kill(Child);
impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn docker_line(container: &str, log: &str) -> Vec<u8> {
    message_frame(
        "docker.test",
        &[
            ("container_name", container),
            ("source", "stdout"),
            ("log", log),
        ],
        None,
    )
}

#[test]
fn tap_streams_scrubbed_events_filtered_by_source_and_label() {
    let dir = tempfile::tempdir().unwrap();
    let _weir = Kill(start(dir.path()));
    let tap = |format: &str| {
        Command::new(weir_bin())
            .args([
                "tap",
                "-s",
                "b",
                "-l",
                "container_name=web",
                "-n",
                "1",
                "-f",
                format,
            ])
            .arg("--socket")
            .arg(dir.path().join("tap.sock"))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let mut viewers = [tap("ndjson"), tap("compact")];
    let mut a = UnixStream::connect(dir.path().join("a.sock")).unwrap();
    let mut b = UnixStream::connect(dir.path().join("b.sock")).unwrap();
    // A viewer sees events from when it subscribed: send until both exit.
    let start = Instant::now();
    while viewers.iter_mut().any(|v| v.try_wait().unwrap().is_none()) {
        assert!(
            start.elapsed() < TIMEOUT,
            "the viewers saw no matching event"
        );
        a.write_all(&docker_line("/web", "from a")).unwrap();
        b.write_all(&docker_line("/db", "from b db")).unwrap();
        b.write_all(&docker_line("/web", "from b web, client 203.0.113.7"))
            .unwrap();
        std::thread::sleep(Duration::from_millis(50));
    }
    let [ndjson, compact] = viewers.map(|v| {
        let out = v.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    });

    let lines: Vec<&str> = ndjson.lines().collect();
    assert_eq!(lines.len(), 1, "{ndjson}");
    let event: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
    assert_eq!(event["labels"]["container_name"], "web", "{event}");
    assert_eq!(event["labels"]["source"], "docker", "{event}");
    let message = event["message"].as_str().unwrap();
    // Scrubbed, as the sinks get it: the host part of the address is gone.
    assert!(message.starts_with("from b web, client "), "{message}");
    assert!(!message.contains("203.0.113.7"), "not scrubbed: {message}");

    let lines: Vec<&str> = compact.lines().collect();
    assert_eq!(lines.len(), 1, "{compact}");
    let line = lines[0];
    // `2026-12-06T22:25:01.123Z container_name=web ... : from b web, ...`
    assert!(
        line.len() > 24 && line.as_bytes()[10] == b'T' && &line[23..24] == "Z",
        "{line}"
    );
    assert!(line.contains(" container_name=web"), "{line}");
    assert!(line.contains(": from b web, client "), "{line}");
    assert!(!line.contains("203.0.113.7"), "{line}");
}

#[test]
fn a_viewer_that_does_not_read_loses_events_and_is_told_how_many() {
    const EVENTS: usize = 20_000;
    let dir = tempfile::tempdir().unwrap();
    let _weir = Kill(start(dir.path()));
    // A viewer that asks for everything; warm-up events until it sees one,
    // so that it surely subscribed before the burst.
    let viewer = UnixStream::connect(dir.path().join("tap.sock")).unwrap();
    (&viewer).write_all(b"{}\n").unwrap();
    viewer
        .set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let control = viewer.try_clone().unwrap();
    let mut lines = BufReader::new(viewer).lines();
    let mut source = UnixStream::connect(dir.path().join("a.sock")).unwrap();
    let mut warmups = 0;
    let start = Instant::now();
    loop {
        assert!(start.elapsed() < TIMEOUT, "the viewer saw no warm-up event");
        source
            .write_all(&docker_line("/warmup", "warm-up"))
            .unwrap();
        warmups += 1;
        if let Some(Ok(_)) = lines.next() {
            break;
        }
    }

    // Then it reads nothing while a burst goes through.
    let mut frames = Vec::new();
    for i in 0..EVENTS {
        frames.extend_from_slice(&docker_line("/web", &format!("line {i:05} of a burst")));
    }
    source.write_all(&frames).unwrap();
    // The pipeline is not slowed: every event reaches the file sink while
    // the viewer reads nothing.
    let out = dir.path().join("out.ndjson");
    wait_for("the file sink to have every event", TIMEOUT, || {
        let text = std::fs::read_to_string(&out).unwrap_or_default();
        (text.lines().count() >= EVENTS + warmups).then_some(())
    });

    control
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let (mut burst, mut dropped, mut notices) = (0usize, 0usize, 0usize);
    let mut last = String::new();
    while !last.contains("line 19999 ") {
        let Some(Ok(line)) = lines.next() else {
            panic!("the tap ended after {burst} burst events and {dropped} dropped");
        };
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        match v.get("weir_tap_dropped") {
            Some(n) => {
                dropped += n.as_u64().unwrap() as usize;
                notices += 1;
            }
            None if v["labels"]["container_name"] == "web" => {
                burst += 1;
                last = v["message"].as_str().unwrap().to_owned();
            }
            None => {}
        }
    }
    // Every burst event is shown or counted; the count may also hold the
    // few warm-up events still in flight when the first was read.
    assert!(
        (EVENTS..=EVENTS + warmups).contains(&(burst + dropped)),
        "{burst} shown + {dropped} dropped != {EVENTS} (+ up to {warmups} warm-ups)"
    );
    assert!(
        dropped > 0 && notices > 0,
        "a stalled viewer must lose events"
    );
    eprintln!("stalled viewer: {burst} events shown, {dropped} dropped in {notices} notice(s)");
}
