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
