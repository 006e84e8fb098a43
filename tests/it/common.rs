//! Shared test support: the weir binary, temporary dirs, waiting.

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Child, Command, Output};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Path of the built `weir` binary.
pub fn weir_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_weir"))
}

/// `weir run --config CONFIG --pid-file DIR/weir.pid` (DIR: the config's
/// directory) with its log on a piped stderr (not journald, whatever the
/// environment says), for a test to add arguments.
///
/// The pid file, and the tap socket that goes next to it, are the test's
/// own: with the defaults (/run/weir/weir.pid, /run/weir/tap.sock) every
/// test's weir would write the same files, and one's exit would remove
/// another's pid file.
pub fn weir_run(config: &std::path::Path) -> std::process::Command {
    let dir = config
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    let mut c = std::process::Command::new(weir_bin());
    c.args(["run", "--config"])
        .arg(config)
        .arg("--pid-file")
        .arg(dir.join("weir.pid"))
        .env_remove("JOURNAL_STREAM")
        .env_remove("INVOCATION_ID")
        .stderr(std::process::Stdio::piped());
    c
}

/// Starts [`weir_run`].
pub fn spawn_weir(config: &std::path::Path) -> std::process::Child {
    weir_run(config).spawn().unwrap()
}

/// Polls `f` every 20 ms until it returns `Some`, or panics after `timeout`.
pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        if start.elapsed() > timeout {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The non-empty lines of `bytes` that end with '\n' (without it); a last
/// line still being written is left out.
pub fn complete_lines(bytes: &[u8]) -> impl Iterator<Item = &[u8]> {
    let end = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    bytes[..end]
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
}

/// A child process that is killed and reaped when dropped, so a test that
/// fails half-way leaves no weir running behind it.
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs `weir ARGS` to its end: its exit code and everything it printed
/// (stdout, then stderr), for tests of the command-line interface.
pub fn weir_says(args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(weir_bin()).args(args).output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), text)
}

/// `weir check-config` on a config file holding `text`.
pub fn check_config_text(text: &str) -> Output {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("weir.toml");
    std::fs::write(&path, text).unwrap();
    Command::new(weir_bin())
        .args(["check-config", "--config"])
        .arg(&path)
        .output()
        .unwrap()
}

/// The stdout of a command that must have succeeded; its stderr otherwise.
pub fn stdout_of_success(out: &Output) -> String {
    assert!(
        out.status.success(),
        "the command exited with {:?}:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A TLS acceptor serving `ck`'s certificate (e.g. a self-signed one for
/// `localhost`), for test servers of the TLS transports.
pub fn tls_acceptor(ck: &rcgen::CertifiedKey) -> tokio_rustls::TlsAcceptor {
    use tokio_rustls::rustls;
    let key = rustls::pki_types::PrivateKeyDer::try_from(ck.key_pair.serialize_der()).unwrap();
    let server = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![ck.cert.der().clone()], key)
    .unwrap();
    tokio_rustls::TlsAcceptor::from(Arc::new(server))
}

#[test]
fn a_line_being_written_is_not_read() {
    fn lines(b: &[u8]) -> Vec<&[u8]> {
        complete_lines(b).collect()
    }
    assert!(lines(b"").is_empty());
    assert!(lines(b"{\"a\":").is_empty());
    assert_eq!(lines(b"{}\n{\"a\""), [b"{}"]);
    assert_eq!(lines(b"{}\n\n[1]\n"), [&b"{}"[..], &b"[1]"[..]]);
}
