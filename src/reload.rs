//! Reloading the config of a running weir: `systemctl reload weir`,
//! `weir reload`, or SIGHUP.
//!
//! # How a reload finds the running weir
//!
//! Under systemd, `ExecReload=/bin/kill -HUP $MAINPID`: systemd knows the pid.
//! Elsewhere, `weir run` writes its pid to a pid file (default
//! [`DEFAULT_PID_FILE`], in weir's `RuntimeDirectory`) and `weir reload` reads
//! it, checks that the process is weir (a stale file may name a recycled pid)
//! and sends SIGHUP. `weir reload` returns once the signal is sent; the
//! outcome is in weir's log.
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

use std::path::{Path, PathBuf};

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

/// Sends SIGHUP to the weir named by `pid_file`; returns its pid.
pub fn signal_running(pid_file: &Path) -> Result<u32, ReloadError> {
    let pid = read_pid(pid_file)?;
    // The kernel's name of the process: the executable's file name (15 chars).
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    if comm.trim_end() != "weir" {
        return Err(ReloadError::NotWeir {
            path: pid_file.to_owned(),
            pid,
        });
    }
    // kill(1) rather than libc::kill: the crate forbids `unsafe`.
    let out = std::process::Command::new("kill")
        .args(["-HUP", &pid.to_string()])
        .output()
        .map_err(|e| ReloadError::Signal {
            pid,
            reason: format!("cannot run kill(1): {e}"),
        })?;
    if !out.status.success() {
        return Err(ReloadError::Signal {
            pid,
            reason: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    Ok(pid)
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
}

/// A reload channel for a config read from `path` (`None`: the default
/// lookup, as at start).
pub fn channel(path: Option<PathBuf>) -> (Trigger, Requests) {
    let (tx, rx) = mpsc::channel(1);
    (Trigger(tx), Requests { rx, path })
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
