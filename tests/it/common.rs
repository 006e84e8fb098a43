//! Shared test support: the weir binary, temporary dirs, waiting.

#![allow(dead_code)]

use std::path::PathBuf;
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
