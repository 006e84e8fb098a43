//! Per-sink read cursors, persisted crash-safely.
//!
//! ```text
//! cursors/<sink>.cursor := magic:"WEIRCUR1" acked:u64le crc:u32le
//! ```
//!
//! A cursor is replaced by writing `<sink>.cursor.tmp`, fsyncing it, renaming
//! it over the old file and fsyncing the directory: after a crash the file
//! holds either the old or the new value, never a mix. Sink names are
//! escaped (`%XX` for anything but ASCII letters, digits, `-` and `_`) so any
//! config key makes a safe file name.

use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::Path;

use super::segment::sync_dir;
use crate::statefile;

const MAGIC: &[u8; 8] = b"WEIRCUR1";
const LEN: usize = 8 + 8 + 4;
const SUFFIX: &str = ".cursor";

/// The file name for a sink's cursor.
pub fn file_name(sink: &str) -> String {
    let mut s = String::with_capacity(sink.len() + SUFFIX.len());
    for b in sink.bytes() {
        if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' {
            s.push(b as char);
        } else {
            s.push_str(&format!("%{b:02X}"));
        }
    }
    s.push_str(SUFFIX);
    s
}

fn encode(acked: u64) -> [u8; LEN] {
    let mut b = [0u8; LEN];
    b[..8].copy_from_slice(MAGIC);
    b[8..16].copy_from_slice(&acked.to_le_bytes());
    let crc = crc32c::crc32c(&b[..16]);
    b[16..].copy_from_slice(&crc.to_le_bytes());
    b
}

fn decode(b: &[u8]) -> Option<u64> {
    if b.len() != LEN || &b[..8] != MAGIC {
        return None;
    }
    let crc = u32::from_le_bytes(b[16..].try_into().expect("4"));
    (crc32c::crc32c(&b[..16]) == crc).then(|| u64::from_le_bytes(b[8..16].try_into().expect("8")))
}

/// Writes the cursors of `sinks` and fsyncs the directory once.
pub fn store(dir: &Path, sinks: &[(&str, u64)]) -> std::io::Result<()> {
    for (sink, acked) in sinks {
        let name = file_name(sink);
        let tmp = dir.join(format!("{name}.tmp"));
        let mut create = statefile::options();
        create.write(true).create(true).truncate(true);
        let r = statefile::open(&tmp, &create).and_then(|mut f| {
            f.write_all(&encode(*acked))?;
            f.sync_data()
        });
        match r {
            Ok(()) => fs::rename(&tmp, dir.join(name))?,
            Err(e) if super::is_disk_full(&e) => {
                // A full disk must not keep cursors from moving: they are
                // what frees space. Overwrite the existing file in place
                // (its block is already allocated); the 20 bytes sit in one
                // sector, and a torn write would fail the CRC and restart the
                // sink at the oldest data (duplicates, never loss).
                let _ = fs::remove_file(&tmp);
                let f = statefile::open(&dir.join(&name), statefile::options().write(true))?;
                f.write_all_at(&encode(*acked), 0)?;
                f.sync_data()?;
            }
            Err(e) => return Err(e),
        }
    }
    sync_dir(dir)
}

/// What [`load`] found.
#[derive(Debug, Default)]
pub struct Loaded {
    /// Acknowledged offsets of configured sinks that have a valid cursor.
    pub acked: HashMap<String, u64>,
    /// Configured sinks whose cursor file was unreadable (they restart at
    /// the oldest data: duplicates rather than loss).
    pub damaged: Vec<String>,
    /// Cursor files of sinks no longer configured, now deleted.
    pub removed: usize,
}

/// Reads the cursors of the configured `sinks` and deletes the files of
/// sinks that are no longer configured (so they hold no segments).
pub fn load(dir: &Path, sinks: &[String]) -> std::io::Result<Loaded> {
    let mut out = Loaded::default();
    let wanted: HashMap<String, &String> = sinks.iter().map(|s| (file_name(s), s)).collect();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.ends_with(".tmp") {
            // A store interrupted by a crash; the renamed file is authoritative.
            fs::remove_file(entry.path())?;
            continue;
        }
        if !name.ends_with(SUFFIX) {
            continue;
        }
        match wanted.get(name) {
            Some(sink) => match statefile::read(&entry.path()) {
                // A planted link is refused, not read as a damaged cursor.
                Err(e) if statefile::is_link_refused(&e) => return Err(e),
                r => match r.ok().as_deref().and_then(decode) {
                    Some(acked) => {
                        out.acked.insert((*sink).clone(), acked);
                    }
                    None => out.damaged.push((*sink).clone()),
                },
            },
            None => {
                fs::remove_file(entry.path())?;
                out.removed += 1;
            }
        }
    }
    if out.removed > 0 {
        sync_dir(dir)?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_escaped() {
        assert_eq!(file_name("loki"), "loki.cursor");
        assert_eq!(file_name("../x y"), "%2E%2E%2Fx%20y.cursor");
    }

    #[test]
    fn store_load_and_forget_removed_sinks() {
        let d = tempfile::tempdir().unwrap();
        store(d.path(), &[("a", 10), ("old", 5), ("b/c", 7)]).unwrap();
        fs::write(d.path().join("x.cursor.tmp"), b"junk").unwrap();
        fs::write(d.path().join(file_name("bad")), b"junk").unwrap();
        let sinks = ["a", "b/c", "bad", "new"].map(String::from);
        let l = load(d.path(), &sinks).unwrap();
        assert_eq!(l.acked.get("a"), Some(&10));
        assert_eq!(l.acked.get("b/c"), Some(&7));
        assert_eq!(l.damaged, vec!["bad".to_owned()]);
        assert_eq!(l.removed, 1);
        assert!(!d.path().join("old.cursor").exists());
        assert!(!d.path().join("x.cursor.tmp").exists());
        store(d.path(), &[("a", 11)]).unwrap();
        assert_eq!(load(d.path(), &sinks).unwrap().acked.get("a"), Some(&11));
    }

    #[test]
    fn symlinked_cursors_are_refused_and_never_written_through() {
        let d = tempfile::tempdir().unwrap();
        let victim = d.path().join("victim");
        fs::write(&victim, b"keep").unwrap();
        std::os::unix::fs::symlink(&victim, d.path().join("a.cursor")).unwrap();
        let err = load(d.path(), &["a".to_owned()]).unwrap_err();
        assert!(statefile::is_link_refused(&err), "{err}");
        fs::remove_file(d.path().join("a.cursor")).unwrap();
        // A link planted where the temporary file goes is refused too.
        std::os::unix::fs::symlink(&victim, d.path().join("a.cursor.tmp")).unwrap();
        let err = store(d.path(), &[("a", 1)]).unwrap_err();
        assert!(statefile::is_link_refused(&err), "{err}");
        assert_eq!(fs::read(&victim).unwrap(), b"keep");
    }
}
