//! One weir per state directory.
//!
//! Two weirs on one state directory would append to the same spool segment
//! from two writer threads, overwrite each other's sink cursors and delete
//! segments the other still reads: silent loss and duplicates. A second
//! instance started by mistake (a manual `weir run` next to the service, a
//! test instance sharing the default `state_dir`) must be refused instead.
//!
//! The lock is an exclusive `flock` on `<state_dir>/lock`, held for as long
//! as the process runs; the kernel drops it when the process dies, even by
//! kill -9, so a stale lock file never blocks a restart. The file holds the
//! holder's pid, only to make the refusal say who holds it.

use std::fs::{File, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

/// Why the state directory could not be locked.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("state directory {} is in use by another weir (pid {holder}); stop it, or give this instance its own `state_dir`", dir.display())]
    Held { dir: PathBuf, holder: String },
    #[error("cannot lock {}: {source}; check that the state directory is writable", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Held while this process uses a state directory; released on drop or exit.
#[derive(Debug)]
pub struct StateLock {
    _file: File,
}

impl StateLock {
    /// Takes the lock on `dir` (which must exist), or says who holds it.
    pub fn acquire(dir: &Path) -> Result<StateLock, LockError> {
        let path = dir.join("lock");
        let io = |source| LockError::Io {
            path: path.clone(),
            source,
        };
        // Never through a symlink: as root, `set_len(0)` below would
        // truncate whatever file a planted link points at.
        let mut file = crate::statefile::open(
            &path,
            crate::statefile::options()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false),
        )
        .map_err(io)?;
        crate::statefile::restrict(&file, crate::statefile::FILE_MODE).map_err(io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = holder.trim();
                let holder = if holder.is_empty() || holder.len() > 20 {
                    "unknown".to_owned()
                } else {
                    holder.to_owned()
                };
                return Err(LockError::Held {
                    dir: dir.to_owned(),
                    holder,
                });
            }
            Err(TryLockError::Error(e)) => return Err(io(e)),
        }
        file.set_len(0).map_err(io)?;
        file.rewind().map_err(io)?;
        writeln!(file, "{}", std::process::id()).map_err(io)?;
        Ok(StateLock { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_the_same_directory_is_refused_until_the_first_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let first = StateLock::acquire(dir.path()).unwrap();
        let err = StateLock::acquire(dir.path()).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains(&format!("pid {}", std::process::id())),
            "{text}"
        );
        assert!(text.contains("state_dir"), "{text}");
        drop(first);
        StateLock::acquire(dir.path()).expect("free again once dropped");
    }

    #[test]
    fn a_symlinked_lock_is_refused_and_its_target_kept() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, b"keep me").unwrap();
        std::os::unix::fs::symlink(&victim, dir.path().join("lock")).unwrap();
        let err = StateLock::acquire(dir.path()).unwrap_err().to_string();
        assert!(err.contains("symbolic link"), "{err}");
        assert_eq!(std::fs::read(&victim).unwrap(), b"keep me");
    }

    #[test]
    fn different_directories_do_not_conflict() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        let _la = StateLock::acquire(a.path()).unwrap();
        let _lb = StateLock::acquire(b.path()).unwrap();
    }
}
