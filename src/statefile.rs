//! Opening files and directories in the state directory, safely.
//!
//! weir usually runs as root, and its state directory holds the scrub key,
//! the lock, the spool segments and the sink cursors. If any of those names
//! were a symlink, following it would let whoever planted it make weir read,
//! truncate or chmod another file (as root: any file). So every state file
//! is opened with `O_NOFOLLOW`, and a symlink is refused with an error that
//! says so, rather than followed.
//!
//! Permissions do not depend on the umask or on systemd's
//! `StateDirectoryMode=`: directories weir creates or uses are made 0700,
//! files it creates 0600, and an existing file or directory with wider
//! permissions is narrowed (through its open descriptor, never by path).
//!
//! The state directory itself may be a symlink (systemd's `DynamicUser=`
//! makes `/var/lib/weir` one), and so may its `spool` directory (an admin
//! putting the spool on another disk); the files inside them may not.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Mode of every directory weir keeps state in.
pub const DIR_MODE: u32 = 0o700;
/// Mode of every state file weir creates.
pub const FILE_MODE: u32 = 0o600;

/// Open options that never follow a symlink in the last component and
/// create files 0600 (the umask can only narrow that). Set read, write,
/// create... on the result as usual, then open it with [`open`].
pub fn options() -> OpenOptions {
    let mut o = OpenOptions::new();
    o.custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .mode(FILE_MODE);
    o
}

/// Opens `path` with `opts` (made by [`options`]); a symlink is refused with
/// an error that names it and says what to do.
pub fn open(path: &Path, opts: &OpenOptions) -> io::Result<File> {
    opts.open(path).map_err(|e| explain(path, e))
}

/// Opens an existing state file for reading, refusing a symlink.
pub fn open_read(path: &Path) -> io::Result<File> {
    open(path, options().read(true))
}

/// Reads a whole (small) state file, refusing a symlink.
pub fn read(path: &Path) -> io::Result<Vec<u8>> {
    use std::io::Read;
    let mut out = Vec::new();
    open_read(path)?.read_to_end(&mut out)?;
    Ok(out)
}

/// Narrows `file`'s permissions to `mode` when they are wider. Returns the
/// old mode when it changed it (for the caller to log).
pub fn restrict(file: &File, mode: u32) -> io::Result<Option<u32>> {
    let old = file.metadata()?.permissions().mode() & 0o7777;
    if old & !mode == 0 {
        return Ok(None);
    }
    file.set_permissions(fs::Permissions::from_mode(mode))?;
    Ok(Some(old))
}

/// Creates `dir` (and missing parents) with mode 0700 and makes sure it is
/// a directory of mode 0700: an existing one with wider permissions is
/// narrowed, whatever the umask or systemd set. `dir` itself may be a
/// symlink to a directory only when `allow_link` (the configured
/// `state_dir`); the directories weir makes inside it may not.
pub fn ensure_dir(dir: &Path, allow_link: bool) -> io::Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(dir)
        .map_err(|e| explain(dir, e))?;
    let mut flags = libc::O_DIRECTORY | libc::O_CLOEXEC;
    if !allow_link {
        flags |= libc::O_NOFOLLOW;
    }
    let d = OpenOptions::new()
        .read(true)
        .custom_flags(flags)
        .open(dir)
        .map_err(|e| explain(dir, e))?;
    match restrict(&d, DIR_MODE) {
        Ok(None) => {}
        Ok(Some(old)) => tracing::warn!(
            dir = %dir.display(),
            mode = format!("{old:o}"),
            "state directory was accessible to other users; permissions reset to 0700"
        ),
        // Owned by another user who shares it on purpose (group access):
        // weir can still work in it, so say so rather than refuse to start.
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => tracing::warn!(
            dir = %dir.display(),
            error = %e,
            "state directory is accessible to other users and not weir's to chmod; make it 0700 (chmod 700) or let weir create it"
        ),
        Err(e) => return Err(e),
    }
    Ok(())
}

/// Turns the error of an open that met a symlink (ELOOP from `O_NOFOLLOW`,
/// or ENOTDIR for a link where a directory was expected) into one that
/// says what happened and what to do; other errors pass unchanged.
fn explain(path: &Path, e: io::Error) -> io::Error {
    let is_link = fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink());
    if !is_link {
        return e;
    }
    io::Error::new(
        io::ErrorKind::InvalidInput,
        LinkRefused(path.display().to_string()),
    )
}

/// The error inside an [`io::Error`] for a state file that is a symlink.
#[derive(Debug, thiserror::Error)]
#[error(
    "{0} is a symbolic link; weir never follows links in its state directory \
     (one could point it at any file): remove the link, and move the real file \
     there if it is weir's"
)]
pub struct LinkRefused(String);

/// Whether `e` is the refusal of a symlink by this module (rather than a
/// missing or unreadable file), so callers that tolerate damage still stop.
pub fn is_link_refused(e: &io::Error) -> bool {
    e.get_ref().is_some_and(|inner| inner.is::<LinkRefused>())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn mode(p: &Path) -> u32 {
        fs::symlink_metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn a_symlink_is_refused_and_its_target_untouched() {
        let d = tempfile::tempdir().unwrap();
        let target = d.path().join("target");
        fs::write(&target, b"precious").unwrap();
        fs::set_permissions(&target, fs::Permissions::from_mode(0o644)).unwrap();
        let link = d.path().join("lock");
        symlink(&target, &link).unwrap();
        let err = open(&link, options().read(true).write(true).create(true)).unwrap_err();
        let text = err.to_string();
        assert!(is_link_refused(&err));
        assert!(text.contains("symbolic link"), "{text}");
        assert!(text.contains(&link.display().to_string()), "{text}");
        assert_eq!(fs::read(&target).unwrap(), b"precious");
        assert_eq!(mode(&target), 0o644);
        assert!(read(&link).is_err());
        // A dangling link is refused too, rather than created through.
        let dangling = d.path().join("cursor");
        symlink(d.path().join("nowhere"), &dangling).unwrap();
        let err = open(&dangling, options().write(true).create(true)).unwrap_err();
        assert!(err.to_string().contains("symbolic link"), "{err}");
        assert!(!d.path().join("nowhere").exists());
    }

    #[test]
    fn files_are_0600_and_dirs_0700_whatever_the_umask() {
        // The umask is process-wide; rather than change it under other
        // tests, show that the modes asked for are the narrow ones and that
        // existing wide ones are narrowed.
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("f");
        open(&f, options().write(true).create(true)).unwrap();
        assert_eq!(mode(&f) & !FILE_MODE, 0);
        fs::set_permissions(&f, fs::Permissions::from_mode(0o644)).unwrap();
        let file = open(&f, options().write(true)).unwrap();
        assert_eq!(restrict(&file, FILE_MODE).unwrap(), Some(0o644));
        assert_eq!(mode(&f), 0o600);

        let sub = d.path().join("a/b");
        ensure_dir(&sub, false).unwrap();
        assert_eq!(mode(&sub), 0o700);
        fs::set_permissions(&sub, fs::Permissions::from_mode(0o755)).unwrap();
        ensure_dir(&sub, false).unwrap();
        assert_eq!(mode(&sub), 0o700);
    }

    #[test]
    fn a_linked_directory_is_refused_unless_allowed() {
        let d = tempfile::tempdir().unwrap();
        let real = d.path().join("real");
        fs::create_dir(&real).unwrap();
        fs::set_permissions(&real, fs::Permissions::from_mode(0o755)).unwrap();
        let link = d.path().join("spool");
        symlink(&real, &link).unwrap();
        let err = ensure_dir(&link, false).unwrap_err();
        assert!(err.to_string().contains("symbolic link"), "{err}");
        assert_eq!(mode(&real), 0o755, "the target is left alone");
        ensure_dir(&link, true).unwrap();
        assert_eq!(mode(&real), 0o700);
    }
}
