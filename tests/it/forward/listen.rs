//! The unix socket: permissions, a live socket refused, removal at shutdown,
//! and systemd socket activation (`LISTEN_FDS`) with data already waiting.

use std::io::Write;
use std::os::fd::OwnedFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{config_text, connect, message_frame, messages_with, send_acked, Weir};
use crate::common::{wait_for, weir_bin};

#[test]
fn socket_is_private_refuses_a_second_owner_and_is_removed_at_stop() {
    let mut weir = Weir::start("fwd_sock", "");
    let mode = std::fs::metadata(&weir.socket)
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);

    // A second weir on the same live socket must refuse to start, not steal it.
    let text = config_text(weir.dir.path(), "fwd_sock2", &weir.socket, "");
    let config = weir::config::parse(&text.replace("/state", "/state2"), "test").unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let err = rt
        .block_on(weir::run(
            config,
            tokio_util::sync::CancellationToken::new(),
            None,
        ))
        .expect_err("second instance started");
    assert!(err.to_string().contains("in use"), "{err}");

    // The first is unaffected.
    let mut s = connect(&weir.socket);
    send_acked(&mut s, "still here", "1");
    weir.stop();
    assert!(!weir.socket.exists(), "socket file left behind");
}

/// The `weir` binary started on a socket passed as fd 3 (what systemd does
/// for `weir.socket`). `sh` moves the listener from stdin to fd 3 because
/// std's `Command` cannot place an fd elsewhere without `pre_exec`.
pub struct ActivatedWeir(Child);

impl ActivatedWeir {
    pub fn start(listener: UnixListener, config: &Path) -> ActivatedWeir {
        let child = Command::new("sh")
            .args([
                "-c",
                r#"exec 3<&0 0</dev/null; export LISTEN_PID=$$ LISTEN_FDS=1; exec "$0" run --config "$1""#,
            ])
            .arg(weir_bin())
            .arg(config)
            .stdin(Stdio::from(OwnedFd::from(listener)))
            .stdout(Stdio::null())
            .env("WEIR_LOG", "warn")
            .spawn()
            .unwrap();
        ActivatedWeir(child)
    }
}

impl Drop for ActivatedWeir {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Reads the file sink's events from a config's directory (complete
/// lines only: the sink may be writing one).
pub fn file_events(dir: &Path) -> Vec<serde_json::Value> {
    let bytes = std::fs::read(dir.join("events.ndjson")).unwrap_or_default();
    crate::common::complete_lines(&bytes)
        .map(|l| serde_json::from_slice(l).unwrap())
        .collect()
}

/// Incident 1 without Docker: lines written while the socket is bound but
/// nobody accepts yet all arrive once weir starts on the inherited socket.
#[test]
fn socket_activation_keeps_what_was_written_before_weir_started() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("forward.sock");
    let listener = UnixListener::bind(&socket).unwrap();
    // The client connects and writes while weir does not exist yet.
    let mut early = connect(&socket);
    for i in 0..200 {
        early
            .write_all(&message_frame(
                "early",
                &[("message", &format!("early {i}"))],
                None,
            ))
            .unwrap();
    }
    let config = dir.path().join("weir.toml");
    std::fs::write(
        &config,
        config_text(dir.path(), "fwd_activated", &socket, ""),
    )
    .unwrap();
    let _weir = ActivatedWeir::start(listener, &config);
    let events = wait_for("200 early events", Duration::from_secs(60), || {
        let e = file_events(dir.path());
        (messages_with(&e, "early ").len() >= 200).then_some(e)
    });
    let got = messages_with(&events, "early ");
    assert_eq!(got.len(), 200);
    assert_eq!(got[199], "early 199");
    // And it keeps serving: a late client gets its ack.
    let mut late = connect(&socket);
    send_acked(&mut late, "late", "late-1");
    assert!(
        socket.exists(),
        "weir must not remove the socket systemd owns"
    );
}
