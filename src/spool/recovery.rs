//! Opening a spool: find the segments, cut a torn tail, rebuild the
//! in-memory state (segments, source positions, sink cursors).
//!
//! Closed segments were fdatasync'ed before the next one was created, so
//! only their record headers are read (to count events; bodies are skipped).
//! The tail segment is read in full and every record's CRC checked: it ends
//! at the first record that is torn or damaged, and the file is truncated
//! there. Positions come from the tail's header snapshot plus its records.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File};
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::Path;

use super::record::{self, HEADER_LEN};
use super::segment::{self, HeaderError};
use super::state::SegMeta;
use super::{cursor, Offset, SpoolError};
use crate::statefile;

/// What a spool directory holds, ready to serve.
pub struct Recovered {
    pub segments: BTreeMap<Offset, SegMeta>,
    pub positions: BTreeMap<String, Vec<u8>>,
    /// The tail segment, open for writing, and its length.
    pub tail: File,
    pub tail_len: u64,
    /// Per configured sink: acknowledged offset and events before it in its segment.
    pub sinks: HashMap<String, (Offset, u64)>,
    /// Bytes cut off the tail (torn or corrupt records, a torn new segment).
    pub discarded: u64,
}

fn io(what: &'static str) -> impl FnOnce(std::io::Error) -> SpoolError {
    move |source| SpoolError::Io { what, source }
}

/// Reads the header of one segment file.
fn read_header(file: &File) -> Result<segment::Header, HeaderError> {
    let mut buf = vec![0u8; 64 << 10];
    let mut n = 0;
    while n < buf.len() {
        match file.read_at(&mut buf[n..], n as u64) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(_) => return Err(HeaderError::Damaged("unreadable")),
        }
    }
    buf.truncate(n);
    let h = segment::parse_header(&buf)?;
    Ok(h)
}

/// One record found by [`scan`].
struct Found<'a> {
    end: Offset,
    count: u32,
    position: Option<(&'a str, &'a [u8])>,
}

/// Walks the records of a segment from `start` (file position); with
/// `verify`, reads and checks every body. Returns the file position just past
/// the last good record.
fn scan(
    file: &File,
    header: &segment::Header,
    file_len: u64,
    verify: bool,
    mut each: impl FnMut(Found<'_>),
) -> std::io::Result<u64> {
    let mut r = BufReader::with_capacity(1 << 20, file);
    r.seek(SeekFrom::Start(header.len))?;
    let mut pos = header.len;
    let mut hb = [0u8; HEADER_LEN];
    let mut body = Vec::new();
    loop {
        if file_len - pos < HEADER_LEN as u64 {
            break;
        }
        r.read_exact(&mut hb)?;
        let Some(h) = record::Header::parse(&hb) else {
            break;
        };
        if h.total_len() > file_len - pos {
            break;
        }
        let mut position = None;
        if verify {
            body.resize(h.len as usize, 0);
            r.read_exact(&mut body)?;
            if !h.check(&hb, &body) {
                break;
            }
            match record::split_body(&h, &body) {
                Ok(b) => position = b.position,
                Err(_) => break,
            }
        } else {
            r.seek_relative(i64::from(h.len))?;
        }
        pos += h.total_len();
        each(Found {
            end: header.base + (pos - header.len),
            count: h.count,
            position,
        });
    }
    Ok(pos)
}

/// Opens or creates the spool in `dir` for `sinks`.
pub fn recover(dir: &Path, sinks: &[String]) -> Result<Recovered, SpoolError> {
    let cursors_dir = dir.join("cursors");
    // 0700 whatever the umask; neither may be a symlink.
    statefile::ensure_dir(dir, false).map_err(io("creating the spool directory"))?;
    statefile::ensure_dir(&cursors_dir, false).map_err(io("creating the spool directory"))?;
    let loaded = cursor::load(&cursors_dir, sinks).map_err(io("reading sink cursors"))?;
    for sink in &loaded.damaged {
        tracing::warn!(sink = %sink, "spool cursor file damaged; the sink restarts at the oldest spooled data");
    }

    let mut bases: Vec<Offset> = fs::read_dir(dir)
        .map_err(io("listing the spool directory"))?
        .filter_map(|e| e.ok()?.file_name().to_str().and_then(segment::parse_name))
        .collect();
    bases.sort_unstable();

    let mut discarded = 0;
    // A crash while creating a segment can leave a file whose header is
    // torn: it holds no record, so it goes.
    let mut headers = Vec::with_capacity(bases.len());
    for (i, &base) in bases.iter().enumerate() {
        let path = segment::path(dir, base);
        let file = statefile::open(&path, statefile::options().read(true).write(true))
            .map_err(io("opening a segment"))?;
        let file_len = file
            .metadata()
            .map_err(io("reading a segment's size"))?
            .len();
        match read_header(&file) {
            Ok(h) if h.base == base => headers.push((base, file, file_len, h)),
            Err(HeaderError::NewerVersion(version)) => {
                return Err(SpoolError::NewerFormat { path, version })
            }
            Ok(_) | Err(HeaderError::Damaged(_)) if i + 1 == bases.len() => {
                tracing::warn!(segment = %path.display(), bytes = file_len, "spool tail segment has a torn header (crash while creating it); removing it");
                discarded += file_len;
                fs::remove_file(&path).map_err(io("removing a torn segment"))?;
            }
            Ok(_) | Err(HeaderError::Damaged(_)) => {
                let aside = path.with_extension("seg.corrupt");
                tracing::error!(segment = %path.display(), "spool segment header is damaged; moved aside, its events are lost");
                fs::rename(&path, &aside).map_err(io("moving a damaged segment aside"))?;
            }
        }
    }

    let mut segments = BTreeMap::new();
    let mut positions = BTreeMap::new();
    let mut sink_pos: HashMap<String, (Offset, u64)> = HashMap::new();
    let n = headers.len();
    let mut tail = None;
    for (i, (base, file, file_len, h)) in headers.into_iter().enumerate() {
        let is_tail = i + 1 == n;
        let mut events = 0u64;
        // Sinks whose cursor lies inside this segment: count events before it.
        let inside: Vec<(&String, Offset)> = loaded
            .acked
            .iter()
            .filter(|(_, &a)| a > base)
            .map(|(s, &a)| (s, a))
            .collect();
        let mut before: Vec<u64> = vec![0; inside.len()];
        if is_tail {
            positions = h.positions.clone();
        }
        let good = scan(&file, &h, file_len, is_tail, |f| {
            events += u64::from(f.count);
            for (k, (_, a)) in inside.iter().enumerate() {
                if f.end <= *a {
                    before[k] = events;
                }
            }
            if let Some((src, pos)) = f.position {
                positions.insert(src.to_owned(), pos.to_vec());
            }
        })
        .map_err(io("scanning a segment"))?;
        let end = base + (good - h.len);
        for (k, (s, a)) in inside.iter().enumerate() {
            if *a < end {
                sink_pos.insert((*s).clone(), (*a, before[k]));
            }
        }
        let mut disk_len = file_len;
        if good < file_len {
            let path = segment::path(dir, base);
            if is_tail {
                tracing::warn!(segment = %path.display(), discarded_bytes = file_len - good, "spool tail had a torn or corrupt record (crash during a write); cut it off");
                file.set_len(good).map_err(io("truncating a torn tail"))?;
                discarded += file_len - good;
                disk_len = good;
            } else {
                tracing::error!(segment = %path.display(), at_byte = good, skipped_bytes = file_len - good, "spool segment is damaged; the records after the damage are skipped");
            }
        }
        segments.insert(
            base,
            SegMeta {
                header_len: h.len,
                end,
                events,
                disk_len,
            },
        );
        if is_tail {
            tail = Some((file, disk_len));
        }
    }

    let (tail, tail_len) = match tail {
        Some(t) => t,
        None => {
            // Empty spool: start where the cursors left off, so offsets never go back.
            let base = loaded.acked.values().copied().max().unwrap_or(0);
            let (file, header_len) = create_segment(dir, base, &BTreeMap::new())?;
            segments.insert(
                base,
                SegMeta {
                    header_len,
                    end: base,
                    events: 0,
                    disk_len: header_len,
                },
            );
            (file, header_len)
        }
    };
    // What a killed predecessor left in the page cache is now made durable.
    tail.sync_data().map_err(io("syncing the tail segment"))?;

    let oldest = *segments.keys().next().expect("at least one segment");
    let tail_meta = segments.values().next_back().expect("one");
    let (next, tail_events) = (tail_meta.end, tail_meta.events);
    let mut out_sinks = HashMap::new();
    for s in sinks {
        let pos = match loaded.acked.get(s) {
            Some(&a) if a <= oldest => (oldest, 0),
            // At the tail's end: every event of the tail was handed out, so
            // none of them is lost if the tail is dropped later.
            Some(&a) if a >= next => (next, tail_events),
            Some(&a) => sink_pos.get(s).copied().unwrap_or((a, 0)),
            None => {
                if !loaded.damaged.contains(s) {
                    tracing::info!(sink = %s, "new sink: it starts at the oldest data in the spool");
                }
                (oldest, 0)
            }
        };
        out_sinks.insert(s.clone(), pos);
    }
    // Every configured sink gets its cursor file now, so that later stores
    // can overwrite it in place even when the disk is full.
    let initial: Vec<(&str, Offset)> = out_sinks.iter().map(|(s, p)| (s.as_str(), p.0)).collect();
    cursor::store(&cursors_dir, &initial).map_err(io("storing sink cursors"))?;
    Ok(Recovered {
        segments,
        positions,
        tail,
        tail_len,
        sinks: out_sinks,
        discarded,
    })
}

/// Creates the segment file for `base` with its header, fsyncs it and the
/// directory. Returns the file and the header length.
pub fn create_segment(
    dir: &Path,
    base: Offset,
    positions: &BTreeMap<String, Vec<u8>>,
) -> Result<(File, u64), SpoolError> {
    let header = segment::encode_header(base, positions);
    let file = create_with_header(dir, base, &header).map_err(io("creating a segment"))?;
    Ok((file, header.len() as u64))
}

/// Creates (or re-creates, after a failed attempt) a segment file holding
/// just `header`, durable with its directory entry.
pub fn create_with_header(dir: &Path, base: Offset, header: &[u8]) -> std::io::Result<File> {
    let path = segment::path(dir, base);
    let file = statefile::open(
        &path,
        statefile::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true),
    )?;
    let r = file
        .write_all_at(header, 0)
        .and_then(|()| file.sync_data())
        .and_then(|()| segment::sync_dir(dir));
    if let Err(e) = r {
        // Leave no half-made segment behind (it would look torn at the next open).
        let _ = fs::remove_file(&path);
        return Err(e);
    }
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sinks() -> Vec<String> {
        vec!["s".to_owned()]
    }

    #[test]
    fn empty_dir_gets_a_first_segment_and_cursor_files() {
        let d = tempfile::tempdir().unwrap();
        let r = recover(d.path(), &sinks()).unwrap();
        assert_eq!(r.segments.keys().copied().collect::<Vec<_>>(), vec![0]);
        assert_eq!(r.sinks["s"], (0, 0));
        assert_eq!(r.tail_len, r.segments[&0].header_len);
        assert!(d.path().join("cursors/s.cursor").exists());
    }

    #[test]
    fn torn_new_segment_is_removed_and_garbage_never_panics() {
        let d = tempfile::tempdir().unwrap();
        drop(recover(d.path(), &sinks()).unwrap());
        // A crash right after creating the next segment: a few header bytes.
        std::fs::write(
            d.path()
                .join(segment::file_name(0))
                .with_file_name(segment::file_name(5)),
            b"WEIRS",
        )
        .unwrap();
        let r = recover(d.path(), &sinks()).unwrap();
        assert_eq!(r.segments.len(), 1);
        assert_eq!(r.discarded, 5);
        assert!(!segment::path(d.path(), 5).exists());
        // Random garbage after a valid header: cut, counted, no panic.
        let mut bytes = std::fs::read(segment::path(d.path(), 0)).unwrap();
        let header = bytes.len();
        bytes.extend((0..5000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8));
        std::fs::write(segment::path(d.path(), 0), &bytes).unwrap();
        let r = recover(d.path(), &sinks()).unwrap();
        assert_eq!(r.discarded, 5000);
        assert_eq!(r.tail_len as usize, header);
    }

    #[test]
    fn damaged_closed_segment_is_moved_aside() {
        let d = tempfile::tempdir().unwrap();
        let (_, h0) = create_segment(d.path(), 0, &BTreeMap::new()).unwrap();
        let (_, _) = create_segment(d.path(), 100, &BTreeMap::new()).unwrap();
        // Segment 0 claims 100 bytes but its header is broken.
        let mut b = std::fs::read(segment::path(d.path(), 0)).unwrap();
        b[0] = b'X';
        b.resize(h0 as usize + 100, 0);
        std::fs::write(segment::path(d.path(), 0), b).unwrap();
        let r = recover(d.path(), &sinks()).unwrap();
        assert_eq!(r.segments.keys().copied().collect::<Vec<_>>(), vec![100]);
        assert!(d.path().join("00000000000000000000.seg.corrupt").exists());
        assert_eq!(
            r.sinks["s"],
            (100, 0),
            "a new sink starts at the oldest data"
        );
    }
}
