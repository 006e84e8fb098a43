//! Damage in a segment costs only the damaged records.
//!
//! A record that fails its check (bad magic, a length past the file, a CRC
//! mismatch, a malformed body) is not where reading stops: recovery looks
//! for the next valid record (its magic, a length inside the file and a
//! matching CRC) and goes on from there. The damaged bytes in between are
//!
//! 1. copied to `spool/damaged/<base>-<file position>.bin` for inspection
//!    (at most [`MAX_ASIDE`] bytes in all, so repeated damage cannot fill the
//!    disk);
//! 2. replaced in place by one *skipped* record ([`record::SKIPPED`]) of
//!    exactly their length: a valid record with no events. Offsets, cursors
//!    and the segment's size stay as they were, readers step over it like
//!    any record, and the next open finds nothing to repair again.
//!
//! Each damaged stretch counts as one corrupt record; the events it held
//! are counted as lost when its header survived to say how many.
//!
//! A stretch with no valid record after it, at the end of the tail segment,
//! is what a crash in the middle of a write leaves: it is cut off (after
//! being copied aside), as before. A segment whose header is damaged keeps
//! its records: the header is rebuilt in front of the first valid record.
//!
//! A log line may itself contain the bytes of a valid record, so a resync
//! that starts inside damage could in principle land on one; it only looks
//! for records at or past where the damaged one's header ended, and only
//! after damage, so undamaged spools never meet that case.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

use super::record::{self, HEADER_LEN};
use super::segment;
use crate::statefile;

/// Most bytes kept in `spool/damaged/` in all.
pub const MAX_ASIDE: u64 = 64 << 20;
/// The directory damaged bytes are copied to.
pub const ASIDE_DIR: &str = "damaged";

/// Reads `buf.len()` bytes at `pos`, or fewer at the end of the file.
fn read_full(file: &File, buf: &mut [u8], pos: u64) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match file.read_at(&mut buf[n..], pos + n as u64) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// The header of the valid record at file position `pos`, if there is one
/// (magic, length inside `file_len`, CRC and body layout all good). `body`
/// is a reused buffer and holds the body afterwards.
pub fn valid_at(
    file: &File,
    pos: u64,
    file_len: u64,
    body: &mut Vec<u8>,
) -> io::Result<Option<record::Header>> {
    if file_len.saturating_sub(pos) < HEADER_LEN as u64 {
        return Ok(None);
    }
    let mut hb = [0u8; HEADER_LEN];
    if read_full(file, &mut hb, pos)? < HEADER_LEN {
        return Ok(None);
    }
    let Some(h) = record::Header::parse(&hb) else {
        return Ok(None);
    };
    if h.total_len() > file_len - pos {
        return Ok(None);
    }
    body.resize(h.len as usize, 0);
    if read_full(file, body, pos + HEADER_LEN as u64)? < body.len() {
        return Ok(None);
    }
    if !h.check(&hb, body) || record::split_body(&h, body).is_err() {
        return Ok(None);
    }
    Ok(Some(h))
}

/// A read-ahead window over a segment, so that checking records of a few
/// hundred bytes costs one `pread` per MiB rather than two per record.
pub struct Window<'f> {
    file: &'f File,
    file_len: u64,
    buf: Vec<u8>,
    /// File position of `buf[0]`.
    at: u64,
}

impl<'f> Window<'f> {
    pub fn new(file: &'f File, file_len: u64) -> Window<'f> {
        Window {
            file,
            file_len,
            buf: Vec::new(),
            at: 0,
        }
    }

    /// The `n` bytes at `pos`, or `None` past the end of the file.
    pub fn get(&mut self, pos: u64, n: usize) -> io::Result<Option<&[u8]>> {
        if pos.saturating_add(n as u64) > self.file_len {
            return Ok(None);
        }
        let end = self.at + self.buf.len() as u64;
        if pos < self.at || pos + n as u64 > end {
            let want = (n.max(1 << 20) as u64).min(self.file_len - pos) as usize;
            self.buf.resize(want, 0);
            let got = read_full(self.file, &mut self.buf, pos)?;
            self.buf.truncate(got);
            self.at = pos;
            if got < n {
                return Ok(None);
            }
        }
        let from = (pos - self.at) as usize;
        Ok(Some(&self.buf[from..from + n]))
    }

    /// The header and body of the valid record at `pos`, if there is one
    /// (as [`valid_at`] checks it).
    pub fn record(&mut self, pos: u64) -> io::Result<Option<(record::Header, &[u8])>> {
        let Some(hb) = self.get(pos, HEADER_LEN)? else {
            return Ok(None);
        };
        let hb: [u8; HEADER_LEN] = hb.try_into().expect("HEADER_LEN bytes");
        let Some(h) = record::Header::parse(&hb) else {
            return Ok(None);
        };
        let Some(bytes) = self.get(pos, h.total_len() as usize)? else {
            return Ok(None);
        };
        let body = &bytes[HEADER_LEN..];
        if !h.check(&hb, body) || record::split_body(&h, body).is_err() {
            return Ok(None);
        }
        Ok(Some((h, body)))
    }
}

/// The file position of the first valid record at or after `from`.
pub fn next_valid(file: &File, from: u64, file_len: u64) -> io::Result<Option<u64>> {
    let magic = record::MAGIC.to_le_bytes();
    let mut window = vec![0u8; 1 << 20];
    let mut body = Vec::new();
    let mut at = from;
    while file_len.saturating_sub(at) >= HEADER_LEN as u64 {
        let n = read_full(file, &mut window, at)?;
        if n < magic.len() {
            break;
        }
        for i in memchr_all(&window[..n], &magic) {
            if valid_at(file, at + i as u64, file_len, &mut body)?.is_some() {
                return Ok(Some(at + i as u64));
            }
        }
        // Overlap by three bytes so a magic across the window edge is seen.
        at += (n - (magic.len() - 1)) as u64;
    }
    Ok(None)
}

/// Start indexes of `needle` in `hay`.
fn memchr_all<'a>(hay: &'a [u8], needle: &'a [u8]) -> impl Iterator<Item = usize> + 'a {
    hay.windows(needle.len())
        .enumerate()
        .filter(move |(_, w)| *w == needle)
        .map(|(i, _)| i)
}

/// What one damaged stretch held, as far as its header can tell.
pub fn events_in(file: &File, pos: u64, len: u64) -> io::Result<Option<u64>> {
    let mut hb = [0u8; HEADER_LEN];
    if read_full(file, &mut hb, pos)? < HEADER_LEN {
        return Ok(None);
    }
    // A count larger than the bytes could hold is itself damage.
    Ok(record::Header::parse(&hb)
        .filter(|h| u64::from(h.count) <= len && h.total_len() <= len)
        .map(|h| u64::from(h.count)))
}

/// Copies `len` bytes at `pos` of segment `base` into the aside directory,
/// unless that would pass [`MAX_ASIDE`]. Returns whether it copied them.
pub fn set_aside(spool_dir: &Path, base: u64, file: &File, pos: u64, len: u64) -> io::Result<bool> {
    let dir = spool_dir.join(ASIDE_DIR);
    statefile::ensure_dir(&dir, false)?;
    let used: u64 = std::fs::read_dir(&dir)?
        .filter_map(|e| e.ok()?.metadata().ok())
        .map(|m| m.len())
        .sum();
    if used + len > MAX_ASIDE {
        return Ok(false);
    }
    let path = dir.join(format!("{base:020}-{pos:020}.bin"));
    let mut opts = statefile::options();
    opts.write(true).create(true).truncate(true);
    let out = statefile::open(&path, &opts)?;
    let mut buf = vec![0u8; (len.min(1 << 20)) as usize];
    let mut done = 0;
    while done < len {
        let want = (len - done).min(buf.len() as u64) as usize;
        let n = read_full(file, &mut buf[..want], pos + done)?;
        if n == 0 {
            break;
        }
        out.write_all_at(&buf[..n], done)?;
        done += n as u64;
    }
    out.sync_data()?;
    Ok(true)
}

/// Rewrites the `len` damaged bytes at `pos` as one skipped record (see the
/// module doc), durably. `len` must be at least a record header.
pub fn mark_skipped(file: &File, pos: u64, len: u64, time_ns: i64) -> io::Result<()> {
    let body_len = len - HEADER_LEN as u64;
    let body_len32 = u32::try_from(body_len)
        .map_err(|_| io::Error::other("damaged stretch longer than a record can be"))?;
    let mut crc = 0;
    let mut buf = vec![0u8; (body_len.min(1 << 20)) as usize];
    let mut done = 0;
    while done < body_len {
        let want = (body_len - done).min(buf.len() as u64) as usize;
        let n = read_full(file, &mut buf[..want], pos + HEADER_LEN as u64 + done)?;
        if n < want {
            return Err(io::Error::from(io::ErrorKind::UnexpectedEof));
        }
        crc = crc32c::crc32c_append(crc, &buf[..n]);
        done += n as u64;
    }
    file.write_all_at(&record::skipped_header(body_len32, time_ns, crc), pos)?;
    file.sync_data()
}

/// Writes a new header for segment `base` whose damaged header ended where
/// its first valid record starts (`first`), so every record keeps its
/// offset. The position snapshot is `positions` when it fits, else empty.
pub fn rebuild_header(
    file: &File,
    base: u64,
    first: u64,
    positions: &std::collections::BTreeMap<String, Vec<u8>>,
) -> io::Result<bool> {
    let Some(h) = segment::encode_header_padded(base, positions, first)
        .or_else(|| segment::encode_header_padded(base, &Default::default(), first))
    else {
        return Ok(false);
    };
    file.write_all_at(&h, 0)?;
    file.sync_data()?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Event, Origin};

    fn rec(n: usize) -> Vec<u8> {
        let events: Vec<Event> = (0..n)
            .map(|i| Event::new(i as i64, Origin::Docker, format!("line {i}")))
            .collect();
        let mut out = Vec::new();
        record::encode(&mut out, &events, None, 5).unwrap();
        out
    }

    #[test]
    fn finds_the_next_valid_record_past_garbage_and_across_window_edges() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("f");
        let r = rec(3);
        for gap in [0usize, 1, (1 << 20) - 2, (1 << 20) + 5] {
            // Garbage that contains the magic but no valid record.
            let mut bytes: Vec<u8> = (0..gap).map(|i| (i * 7) as u8).collect();
            if gap > 10 {
                bytes[3..7].copy_from_slice(b"WRec");
            }
            bytes.extend_from_slice(&r);
            std::fs::write(&path, &bytes).unwrap();
            let f = File::open(&path).unwrap();
            let len = bytes.len() as u64;
            assert_eq!(
                next_valid(&f, 0, len).unwrap(),
                Some(gap as u64),
                "gap {gap}"
            );
            assert_eq!(next_valid(&f, gap as u64 + 1, len).unwrap(), None);
        }
    }

    #[test]
    fn the_window_reads_the_same_records_as_pread() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("f");
        let mut bytes = Vec::new();
        let mut starts = Vec::new();
        for k in 0..3000 {
            starts.push(bytes.len() as u64);
            bytes.extend(rec(1 + k % 5));
        }
        std::fs::write(&path, &bytes).unwrap();
        let f = File::open(&path).unwrap();
        let n = bytes.len() as u64;
        let mut w = Window::new(&f, n);
        let mut body = Vec::new();
        for &at in &starts {
            let (h, b) = w.record(at).unwrap().expect("valid");
            assert_eq!(valid_at(&f, at, n, &mut body).unwrap(), Some(h));
            assert_eq!(b, &body[..]);
        }
        assert!(w.record(n).unwrap().is_none());
        assert!(w.record(starts[5] + 1).unwrap().is_none());
        assert!(w.get(n - 3, 4).unwrap().is_none());
    }

    #[test]
    fn a_skipped_stretch_reads_as_one_empty_record() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("f");
        let mut bytes = rec(4);
        let n = bytes.len() as u64;
        bytes[40] ^= 0xff;
        std::fs::write(&path, &bytes).unwrap();
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .unwrap();
        let mut body = Vec::new();
        assert!(valid_at(&f, 0, n, &mut body).unwrap().is_none());
        assert_eq!(events_in(&f, 0, n).unwrap(), Some(4));
        mark_skipped(&f, 0, n, 7).unwrap();
        let h = valid_at(&f, 0, n, &mut body).unwrap().expect("valid now");
        assert_eq!((h.count, h.total_len(), h.time_ns), (0, n, 7));
    }
}
