//! Reloading the config of a running weir: `systemctl reload weir`,
//! `weir reload`, or SIGHUP.
//!
//! # How a reload finds the running weir
//!
//! `weir run` writes its pid to a pid file (default [`DEFAULT_PID_FILE`], in
//! weir's `RuntimeDirectory`; created if missing outside systemd) and
//! `weir reload` reads it (or takes `--pid`, which the unit's `ExecReload`
//! passes as `$MAINPID`), checks that the process is weir (a stale file may
//! name a recycled pid) and sends SIGHUP.
//!
//! # The verdict
//!
//! After each reload the running weir writes its verdict (accepted, or
//! refused with every problem) next to the pid file ([`verdict_path`]), with
//! a sequence number. `weir reload` notes the number before signalling and
//! waits for a newer one, so it exits non-zero and prints the problems when
//! the running agent refused the file, and so does `systemctl reload weir`.
//!
//! # What a reload does
//!
//! The config is re-read from the same place as at start. If it is invalid,
//! weir logs every problem (key and line; never payload) and keeps running on
//! the config it has. If it is valid, the pipeline restarts in-process: sources
//! stop, the spool is fsynced, sinks stop, then everything starts again on the
//! new config. The process stays, so the listening socket systemd passed
//! (`LISTEN_FDS`) stays open and Docker's connections queue in its backlog
//! meanwhile; nothing here closes an inherited descriptor.
//!
//! # Open Forward connections
//!
//! Stopping the forward source closes every open connection cleanly: each
//! takes what its client already sent (waiting up to 50 ms for bytes in
//! flight), appends the complete frames, writes their acks once durable,
//! then closes. A frame received only in part is dropped unacknowledged.
//! A client that requires acks (Docker's `fluentd-request-ack`,
//! fluent-logger-golang's `RequestAck`) reconnects and resends what it has
//! no ack for: nothing is lost; a record may be stored twice (at least
//! once), e.g. when its ack was lost with the connection
//! (`forward::reload::a_client_requiring_acks_loses_nothing_across_reloads`).
//! A socket weir bound itself is removed and bound again, so a client
//! connecting in between is refused and retries; one systemd passed keeps
//! queueing connections in its backlog.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::config::{self, Config, ConfigError, Source};

/// Where `weir run` writes its pid and `weir reload` looks for it.
pub const DEFAULT_PID_FILE: &str = "/run/weir/weir.pid";

/// Why `weir reload` could not signal the running weir. Each says what to do.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("cannot read pid file {path}: {source}; is weir running? (under systemd: systemctl reload weir)")]
    ReadPidFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("pid file {path} does not hold a process id; delete it and restart weir")]
    BadPidFile { path: PathBuf },
    #[error("pid file {path} names process {pid}, which is not a running weir (stale pid file?); delete it")]
    NotWeir { path: PathBuf, pid: u32 },
    #[error("cannot signal process {pid}: {reason}")]
    Signal { pid: u32, reason: String },
    #[error("process {pid} gave no verdict on the reload within {}s; see its log (journalctl -u weir)", .waited.as_secs())]
    NoVerdict { pid: u32, waited: Duration },
}

/// The pid file of a running weir; removed when dropped, if still ours.
pub struct PidFile {
    path: PathBuf,
    pid: u32,
}

impl PidFile {
    /// Writes this process's pid to `path` (atomically: temp file + rename).
    pub fn write(path: &Path) -> std::io::Result<PidFile> {
        let pid = std::process::id();
        // Outside systemd nothing made /run/weir (the RuntimeDirectory).
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let tmp = path.with_extension("pid.tmp");
        // Not through a symlink planted at the temporary name (weir runs
        // as root); the rename then replaces a link at `path` itself.
        let mut opts = crate::statefile::options();
        // A pid file is public by convention (unlike state files).
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o644);
        opts.write(true).create(true).truncate(true);
        std::io::Write::write_all(
            &mut crate::statefile::open(&tmp, &opts)?,
            format!("{pid}\n").as_bytes(),
        )?;
        std::fs::rename(&tmp, path)?;
        Ok(PidFile {
            path: path.to_owned(),
            pid,
        })
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        // Another weir may have started since and written its own pid.
        if read_pid(&self.path).ok() == Some(self.pid) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

fn read_pid(path: &Path) -> Result<u32, ReloadError> {
    let text = std::fs::read_to_string(path).map_err(|source| ReloadError::ReadPidFile {
        path: path.to_owned(),
        source,
    })?;
    text.trim().parse().map_err(|_| ReloadError::BadPidFile {
        path: path.to_owned(),
    })
}

/// The pid in `pid_file`, checked to be a running weir.
pub fn running_pid(pid_file: &Path) -> Result<u32, ReloadError> {
    let pid = read_pid(pid_file)?;
    check_is_weir(pid, pid_file)?;
    Ok(pid)
}

fn check_is_weir(pid: u32, pid_file: &Path) -> Result<(), ReloadError> {
    // The kernel's name of the process: the executable's file name (15 chars).
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    if comm.trim_end() != "weir" {
        return Err(ReloadError::NotWeir {
            path: pid_file.to_owned(),
            pid,
        });
    }
    Ok(())
}

/// Sends SIGHUP to the weir named by `pid_file`; returns its pid.
pub fn signal_running(pid_file: &Path) -> Result<u32, ReloadError> {
    let pid = running_pid(pid_file)?;
    hangup(pid)?;
    Ok(pid)
}

fn hangup(pid: u32) -> Result<(), ReloadError> {
    let signal_error = |reason: String| ReloadError::Signal { pid, reason };
    let target = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
        .ok_or_else(|| signal_error("not a process id".into()))?;
    rustix::process::kill_process(target, rustix::process::Signal::HUP)
        .map_err(|e| signal_error(std::io::Error::from(e).to_string()))
}

/// Where the weir that writes `pid_file` writes its reload verdicts.
pub fn verdict_path(pid_file: &Path) -> PathBuf {
    pid_file.with_extension("verdict")
}

/// The outcome of one reload, as the running weir wrote it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verdict {
    /// The process that reloaded.
    pub pid: u32,
    /// Counts this process's reloads, from 1.
    pub seq: u64,
    pub accepted: bool,
    /// What it runs on now (accepted) or why it refused: every problem,
    /// one per line, with file, line and key.
    pub message: String,
}

impl Verdict {
    fn read(path: &Path) -> Option<Verdict> {
        serde_json::from_slice(&std::fs::read(path).ok()?).ok()
    }
}

/// Asks process `pid` (a weir writing verdicts to `verdict`) to reload, and
/// waits up to `wait` for its verdict on that reload.
pub fn reload_and_wait(pid: u32, pid_file: &Path, wait: Duration) -> Result<Verdict, ReloadError> {
    check_is_weir(pid, pid_file)?;
    let verdict = verdict_path(pid_file);
    let seen = Verdict::read(&verdict)
        .filter(|v| v.pid == pid)
        .map_or(0, |v| v.seq);
    hangup(pid)?;
    let start = Instant::now();
    loop {
        if let Some(v) = Verdict::read(&verdict).filter(|v| v.pid == pid && v.seq > seen) {
            return Ok(v);
        }
        if start.elapsed() >= wait {
            return Err(ReloadError::NoVerdict { pid, waited: wait });
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Sends reload requests to the pipeline (the SIGHUP handler holds it).
#[derive(Clone)]
pub struct Trigger(mpsc::Sender<()>);

impl Trigger {
    /// Asks for a reload. Requests made while one is pending are merged: the
    /// reload reads the file as it is when it runs.
    pub fn request(&self) {
        let _ = self.0.try_send(());
    }
}

/// The pipeline's side: pending reload requests, and where to read the config.
pub struct Requests {
    rx: mpsc::Receiver<()>,
    path: Option<PathBuf>,
    verdict: Option<PathBuf>,
    seq: u64,
}

/// A reload channel for a config read from `path` (`None`: the default
/// lookup, as at start); verdicts are written to `verdict` when given.
pub fn channel(path: Option<PathBuf>, verdict: Option<PathBuf>) -> (Trigger, Requests) {
    let (tx, rx) = mpsc::channel(1);
    (
        Trigger(tx),
        Requests {
            rx,
            path,
            verdict,
            seq: 0,
        },
    )
}

impl Requests {
    /// Waits for the next request; never returns once every trigger is gone.
    pub async fn next(&mut self) {
        if self.rx.recv().await.is_none() {
            std::future::pending::<()>().await;
        }
    }

    /// Re-reads and validates the config.
    pub fn load(&self) -> Result<(Config, Source), ConfigError> {
        config::load(self.path.as_deref())
    }

    /// Publishes the outcome of the reload just done for `weir reload`.
    pub fn decided(&mut self, accepted: bool, message: &str) {
        self.seq += 1;
        let Some(path) = &self.verdict else { return };
        let verdict = Verdict {
            pid: std::process::id(),
            seq: self.seq,
            accepted,
            message: message.to_owned(),
        };
        let tmp = path.with_extension("verdict.tmp");
        let written = serde_json::to_vec(&verdict)
            .map_err(std::io::Error::other)
            .and_then(|json| std::fs::write(&tmp, json))
            .and_then(|()| std::fs::rename(&tmp, path));
        if let Err(e) = written {
            tracing::warn!(path = %path.display(), error = %e, "cannot write the reload verdict; `weir reload` will wait for it in vain");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pid_file_is_written_and_removed_only_if_ours() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("weir.pid");
        let pid = PidFile::write(&path).unwrap();
        assert_eq!(read_pid(&path).unwrap(), std::process::id());
        drop(pid);
        assert!(!path.exists());

        let pid = PidFile::write(&path).unwrap();
        std::fs::write(&path, "1\n").unwrap();
        drop(pid);
        assert!(
            path.exists(),
            "another process's pid file must be left alone"
        );
    }

    #[test]
    fn signal_refuses_a_pid_that_is_not_weir() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("weir.pid");
        // This test binary is not called weir.
        std::fs::write(&path, format!("{}\n", std::process::id())).unwrap();
        assert!(matches!(
            signal_running(&path),
            Err(ReloadError::NotWeir { .. })
        ));
        std::fs::write(&path, "garbage").unwrap();
        assert!(matches!(
            signal_running(&path),
            Err(ReloadError::BadPidFile { .. })
        ));
        assert!(matches!(
            signal_running(&dir.path().join("absent.pid")),
            Err(ReloadError::ReadPidFile { .. })
        ));
    }
}
