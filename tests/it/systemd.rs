//! systemd integration: the notify protocol on a test NOTIFY_SOCKET, reload
//! (valid and invalid), the unit files (`systemd-analyze verify` and
//! `security`), and socket activation through `systemd-socket-activate`.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::{stdout_of_success, wait_for, weir_bin};

const TIMEOUT: Duration = Duration::from_secs(20);

/// A config with a forward source on a temp socket and one file sink per name.
fn config(dir: &Path, sinks: &[&str]) -> String {
    let mut c = format!(
        "state_dir = \"{d}/state\"\n\n[metrics]\nlisten = \"unix://{d}/metrics.sock\"\n\n[sources.docker]\ntype = \"forward\"\nlisten = \"unix://{d}/forward.sock\"\n",
        d = dir.display()
    );
    for s in sinks {
        c.push_str(&format!(
            "\n[sinks.{s}]\ntype = \"file\"\npath = \"{d}/{s}.ndjson\"\n",
            d = dir.display()
        ));
    }
    c
}

/// The datagrams weir sends to its NOTIFY_SOCKET, as they arrive.
struct Notifications {
    socket: UnixDatagram,
    seen: Vec<String>,
}

impl Notifications {
    fn bind(path: &Path) -> Notifications {
        let socket = UnixDatagram::bind(path).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        Notifications {
            socket,
            seen: Vec::new(),
        }
    }

    /// Reads until a datagram contains `needle`; returns that datagram.
    fn wait_for(&mut self, needle: &str) -> String {
        let start = Instant::now();
        let mut buf = [0u8; 4096];
        loop {
            if let Ok(n) = self.socket.recv(&mut buf) {
                let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
                self.seen.push(msg.clone());
                if msg.contains(needle) {
                    return msg;
                }
            }
            assert!(
                start.elapsed() < TIMEOUT,
                "no notification containing {needle:?} in {TIMEOUT:?}; got {:?}",
                self.seen
            );
        }
    }
}

/// A running `weir run`, its stderr collected; killed on drop.
struct Weir {
    child: Child,
    stderr: Arc<Mutex<String>>,
}

impl Weir {
    fn start(mut cmd: Command) -> Weir {
        let mut child = cmd
            .env("WEIR_LOG", "info")
            .env_remove("INVOCATION_ID")
            .env_remove("JOURNAL_STREAM")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = Arc::new(Mutex::new(String::new()));
        let pipe = child.stderr.take().unwrap();
        let sink = stderr.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                let mut s = sink.lock().unwrap();
                s.push_str(&line);
                s.push('\n');
            }
        });
        Weir { child, stderr }
    }

    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    fn wait_stderr(&self, needle: &str) -> String {
        wait_for(&format!("{needle:?} on weir's stderr"), TIMEOUT, || {
            let s = self.stderr();
            s.contains(needle).then_some(s)
        })
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill {sig} failed");
    }

    /// SIGTERM, then the exit code.
    fn stop(mut self) -> Option<i32> {
        self.signal("-TERM");
        let status = wait_for("weir to exit", TIMEOUT, || self.child.try_wait().unwrap());
        status.code()
    }
}

impl Drop for Weir {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn weir_run(dir: &Path, config_path: &Path, notify: &Path) -> Command {
    // As systemd does: WATCHDOG_PID names the process the watchdog is for;
    // the shell execs weir, so that is weir's pid.
    let mut cmd = Command::new("sh");
    cmd.args(["-c", "WATCHDOG_PID=$$ exec \"$0\" \"$@\""])
        .arg(weir_bin())
        .arg("run")
        .arg("--config")
        .arg(config_path)
        .arg("--pid-file")
        .arg(dir.join("weir.pid"))
        .env("NOTIFY_SOCKET", notify)
        // 600 ms: a ping (and a STATUS refresh) every 300 ms.
        .env("WATCHDOG_USEC", "600000");
    cmd
}

#[test]
fn notify_ready_status_watchdog_stopping() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("weir.toml");
    std::fs::write(&cfg, config(dir.path(), &["local"])).unwrap();
    let mut notes = Notifications::bind(&dir.path().join("notify.sock"));
    let weir = Weir::start(weir_run(dir.path(), &cfg, &dir.path().join("notify.sock")));

    notes.wait_for("READY=1");
    let first = notes.wait_for("STATUS=");
    assert!(first.contains("running: 1 source(s), 1 sink(s)"), "{first}");
    // Two pings prove it is periodic, not a one-off.
    notes.wait_for("WATCHDOG=1");
    notes.wait_for("WATCHDOG=1");
    let rates = notes.wait_for("STATUS=in ");
    assert!(rates.contains("local: out 0.0/s"), "{rates}");
    assert_eq!(
        std::fs::read_to_string(dir.path().join("weir.pid"))
            .unwrap()
            .trim(),
        weir.child.id().to_string(),
        "pid file"
    );

    let pid_file = dir.path().join("weir.pid");
    let code = weir.stop();
    notes.wait_for("STOPPING=1");
    assert_eq!(code, Some(0));
    assert!(!pid_file.exists(), "pid file removed at exit");
    let ready_at = notes.seen.iter().position(|m| m.contains("READY=1"));
    let stopping_at = notes.seen.iter().position(|m| m.contains("STOPPING=1"));
    assert!(ready_at < stopping_at, "{:?}", notes.seen);
}

#[test]
fn reload_applies_a_valid_config_and_refuses_an_invalid_one() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("weir.toml");
    let notify = dir.path().join("notify.sock");
    std::fs::write(&cfg, config(dir.path(), &["first"])).unwrap();
    let mut notes = Notifications::bind(&notify);
    let weir = Weir::start(weir_run(dir.path(), &cfg, &notify));
    notes.wait_for("READY=1");

    // Valid: a second sink appears, through `weir reload --pid`, as the
    // unit's ExecReload runs it (the verdict is read next to the pid file).
    std::fs::write(&cfg, config(dir.path(), &["first", "second"])).unwrap();
    let out = Command::new(weir_bin())
        .arg("reload")
        .arg("--pid")
        .arg(weir.child.id().to_string())
        .arg("--pid-file")
        .arg(dir.path().join("weir.pid"))
        .output()
        .unwrap();
    let said = stdout_of_success(&out);
    assert!(
        said.contains("config reloaded: 1 source(s), 2 sink(s)"),
        "{said}"
    );
    notes.wait_for("RELOADING=1");
    notes.wait_for("READY=1");
    let status = notes.wait_for("second: out");
    assert!(status.contains("first: out"), "{status}");
    weir.wait_stderr("config reloaded");

    // Invalid: refused with key and line; the old config keeps running.
    std::fs::write(
        &cfg,
        format!(
            "{}\n[sinks.third]\ntype = \"file\"\npath = \"relative.ndjson\"\n",
            config(dir.path(), &["first", "second"])
        ),
    )
    .unwrap();
    let bad_line = std::fs::read_to_string(&cfg)
        .unwrap()
        .lines()
        .position(|l| l.starts_with("path = \"relative"))
        .unwrap()
        + 1;
    weir.signal("-HUP");
    let err = weir.wait_stderr("config reload refused");
    assert!(
        err.contains(&format!(
            "line {bad_line}: `sinks.third.path`: must be an absolute path"
        )),
        "{err}"
    );
    notes.wait_for("STATUS=reload refused");
    // `weir reload` gets the running agent's verdict: exit 1, every problem
    // with file, line and key.
    std::fs::write(
        &cfg,
        std::fs::read_to_string(&cfg).unwrap() + "keep_files = \"many\"\n",
    )
    .unwrap();
    let out = Command::new(weir_bin())
        .arg("reload")
        .arg("--pid-file")
        .arg(dir.path().join("weir.pid"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("refused the reload"), "{err}");
    assert!(
        err.contains(&format!(
            "{}: line {}: `sinks.third.keep_files`",
            cfg.display(),
            bad_line + 1
        )),
        "{err}"
    );
    // The journal text itself names the problem, not only a field.
    let logged = weir.wait_stderr("sinks.third.keep_files");
    let line = logged
        .lines()
        .find(|l| l.contains("sinks.third.keep_files"))
        .unwrap();
    assert!(line.contains("config reload refused"), "{line}");
    // `weir status` reports the running agent: the invalid file on disk is a
    // warning line, not an unhealthy exit.
    let out = Command::new(weir_bin())
        .args(["status", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    let printed = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{printed}");
    assert!(
        printed.starts_with("WARNING: the config on disk is invalid")
            && printed.contains("sinks.third.keep_files"),
        "{printed}"
    );
    // Still alive, healthy and on the previous config.
    notes.wait_for("WATCHDOG=1");
    let status = notes.wait_for("STATUS=in ");
    assert!(
        status.contains("second: out") && !status.contains("third"),
        "{status}"
    );
    assert_eq!(weir.stop(), Some(0));
}

#[test]
fn reload_without_a_running_weir_says_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(weir_bin())
        .arg("reload")
        .arg("--pid-file")
        .arg(dir.path().join("none.pid"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("is weir running?"), "{err}");
}

/// The units with `/usr/bin/weir` pointed at the built binary, in a temp
/// dir, so `systemd-analyze verify` checks commands that exist; the man page
/// the units name is in `man/` (the test's MANPATH), as the package installs it.
fn units_for_test() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    std::fs::create_dir_all(dir.path().join("man/man1")).unwrap();
    std::fs::copy(
        root.join("packaging/weir.1"),
        dir.path().join("man/man1/weir.1"),
    )
    .unwrap();
    let units = root.join("systemd");
    for name in ["weir.service", "weir.socket"] {
        let text = std::fs::read_to_string(units.join(name)).unwrap();
        let text = text.replace("/usr/bin/weir", &weir_bin().display().to_string());
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    dir
}

fn systemd_analyze(args: &[&str], dir: &Path) -> std::process::Output {
    Command::new("systemd-analyze")
        .args(args)
        .current_dir(dir)
        .env("MANPATH", dir.join("man"))
        .output()
        .expect("systemd-analyze not found: install systemd (scripts/deps.sh)")
}

#[test]
fn units_pass_systemd_analyze_verify() {
    let dir = units_for_test();
    let out = systemd_analyze(&["verify", "./weir.socket", "./weir.service"], dir.path());
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(text.trim().is_empty(), "verify printed warnings:\n{text}");
}

#[test]
fn service_exposure_is_at_most_2() {
    let dir = units_for_test();
    let out = systemd_analyze(
        &["security", "--offline=true", "--no-pager", "./weir.service"],
        dir.path(),
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let exposure: f64 = text
        .lines()
        .find_map(|l| l.split("Overall exposure level for weir.service:").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| {
            panic!(
                "no exposure figure in:\n{text}{}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    eprintln!("weir.service exposure: {exposure}");
    assert!(exposure <= 2.0, "exposure {exposure} > 2.0:\n{text}");
}

/// The unit settings that the incidents and the packaging rely on.
#[test]
fn units_keep_their_contracts() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let socket = std::fs::read_to_string(root.join("systemd/weir.socket")).unwrap();
    let service = std::fs::read_to_string(root.join("systemd/weir.service")).unwrap();
    let has = |unit: &str, line: &str| unit.lines().any(|l| l.trim() == line);
    // The socket exists before dockerd, and is where the config listens.
    for line in [
        "ListenStream=/run/weir/forward.sock",
        "Before=docker.service",
        "SocketMode=0600",
        "SocketUser=weir",
        "WantedBy=sockets.target",
    ] {
        assert!(has(&socket, line), "weir.socket lacks {line}");
    }
    let shipped = std::fs::read_to_string(root.join("config/weir.toml")).unwrap();
    assert!(shipped.contains("listen = \"unix:///run/weir/forward.sock\""));
    assert!(weir::config::BUILTIN_DEFAULT.contains("listen = \"unix:///run/weir/forward.sock\""));
    for line in [
        "Type=notify",
        "Requires=weir.socket",
        "After=weir.socket",
        "Before=docker.service",
        "ExecStartPre=/usr/bin/weir check-config --quiet",
        "ExecStart=/usr/bin/weir run",
        // Validate first, then wait for the running weir's verdict, so that
        // `systemctl reload weir` fails when the file is refused.
        "ExecReload=/usr/bin/weir check-config --quiet",
        "ExecReload=/usr/bin/weir reload --pid $MAINPID",
        // Files in /var/log/weir: 0640 group adm.
        "Group=adm",
        "UMask=0027",
        "LimitNOFILE=8192",
        // Freed read buffers go back to the system (issue 20's memory bound).
        "Environment=MALLOC_MMAP_THRESHOLD_=262144",
        "Restart=on-failure",
        "User=weir",
        "SupplementaryGroups=weir systemd-journal",
        "StateDirectory=weir",
        "LogsDirectory=weir",
        // A service restart must not unlink the socket in /run/weir.
        "RuntimeDirectoryPreserve=yes",
    ] {
        assert!(has(&service, line), "weir.service lacks {line}");
    }
    assert!(service.lines().any(|l| l.starts_with("WatchdogSec=")));
}

/// A Forward Message-mode event, `[tag, time, record]`.
fn forward_message(msg: &str) -> Vec<u8> {
    let record = std::collections::BTreeMap::from([("log", msg), ("source", "stdout")]);
    rmp_serde::to_vec(&(
        "docker.test",
        (std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()),
        record,
    ))
    .unwrap()
}

/// Socket activation: systemd-socket-activate holds the socket and passes it
/// via LISTEN_FDS; a client connecting *before* weir runs is served, and the
/// inherited socket survives an in-process reload.
#[test]
fn socket_activation_serves_early_clients_and_survives_reload() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("weir.toml");
    let sock = dir.path().join("forward.sock");
    let notify = dir.path().join("notify.sock");
    std::fs::write(&cfg, config(dir.path(), &["local"])).unwrap();
    let mut notes = Notifications::bind(&notify);
    let mut cmd = Command::new("systemd-socket-activate");
    cmd.arg("-l")
        .arg(&sock)
        .arg("-E")
        .arg(format!("NOTIFY_SOCKET={}", notify.display()))
        .arg("-E")
        .arg("WEIR_LOG=info")
        .arg(weir_bin())
        .arg("run")
        .arg("--config")
        .arg(&cfg)
        .arg("--pid-file")
        .arg(dir.path().join("weir.pid"));
    let weir = Weir::start(cmd);
    wait_for("the activation socket", TIMEOUT, || {
        sock.exists().then_some(())
    });

    // Connects before weir started: waits in the backlog, loses nothing.
    let mut early = UnixStream::connect(&sock).unwrap();
    early.write_all(&forward_message("before ready")).unwrap();
    notes.wait_for("READY=1");
    let out = dir.path().join("local.ndjson");
    let has = |needle: &str| {
        let needle = needle.to_owned();
        let out = out.clone();
        move || {
            std::fs::read_to_string(&out)
                .ok()
                .filter(|t| t.contains(&needle))
        }
    };
    wait_for(
        "the early event in the file sink",
        TIMEOUT,
        has("before ready"),
    );

    // Reload: the inherited listener must still accept afterwards.
    weir.signal("-HUP");
    notes.wait_for("RELOADING=1");
    notes.wait_for("READY=1");
    let mut late = UnixStream::connect(&sock).unwrap();
    late.write_all(&forward_message("after reload")).unwrap();
    wait_for(
        "the post-reload event in the file sink",
        TIMEOUT,
        has("after reload"),
    );
    drop((early, late));
    assert_eq!(weir.stop(), Some(0));
}
