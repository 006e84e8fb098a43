//! Opening a spool: find the segments, repair damage, cut a torn tail,
//! rebuild the in-memory state (segments, source positions, sink cursors).
//!
//! Every segment is read in full and every record's CRC checked (a bit
//! flipped in a closed segment is as real as one in the tail). A damaged
//! record costs only itself: [`repair`] resynchronises on the next valid
//! record and replaces the damage by a skipped record; a damaged segment
//! header is rebuilt. Only damage at the very end of the tail, with no valid
//! record after it (a torn write), is cut off. Positions come from the
//! tail's header snapshot plus its records up to the first damage.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File};
use std::os::unix::fs::FileExt;
use std::path::Path;

use super::record::{self, HEADER_LEN};
use super::repair;
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
    /// Damaged records (and segment headers) repaired, and the events the
    /// damaged records held as far as their headers said.
    pub corrupt: u64,
    pub lost_events: u64,
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

/// What repairing damaged records in one segment found (see [`repair`]).
#[derive(Default)]
struct Repairs {
    /// Damaged stretches replaced by a skipped record.
    corrupt: u64,
    /// Events those stretches held, as far as their headers said.
    lost_events: u64,
}

/// Walks and checks every record of a segment, repairing damage in the
/// middle (see [`repair`]). Returns the file position just past the last
/// valid record: anything after it is damage with no valid record behind
/// it, for the caller to cut (tail) or leave (closed segment).
fn scan(
    dir: &Path,
    file: &File,
    header: &segment::Header,
    file_len: u64,
    repairs: &mut Repairs,
    mut each: impl FnMut(Found<'_>),
) -> std::io::Result<u64> {
    let mut pos = header.len;
    let mut body = Vec::new();
    let mut damaged = false;
    let mut window = repair::Window::new(file, file_len);
    while file_len - pos >= HEADER_LEN as u64 {
        if let Some((h, record_body)) = window.record(pos)? {
            pos += h.total_len();
            let parts = record::split_body(&h, record_body).expect("checked by Window::record");
            each(Found {
                end: header.base + (pos - header.len),
                count: h.count,
                // A source position after damage would skip the damaged
                // events (a power cut can leave a hole of unsynced pages
                // before records that did reach the disk): keep the last
                // one before it, so the source reads them again
                // (duplicates of what follows, never loss).
                position: if damaged { None } else { parts.position },
            });
            continue;
        }
        damaged = true;
        // A record's header is at least HEADER_LEN bytes, so the next
        // record cannot start before that.
        let Some(next) = repair::next_valid(file, pos + HEADER_LEN as u64, file_len)? else {
            break;
        };
        let len = next - pos;
        let lost = repair::events_in(file, pos, len)?;
        let time_ns = repair::valid_at(file, next, file_len, &mut body)?.map_or(0, |h| h.time_ns);
        let aside = repair::set_aside(dir, header.base, file, pos, len)?;
        repair::mark_skipped(file, pos, len, time_ns)?;
        // The window may hold the bytes from before the rewrite.
        window = repair::Window::new(file, file_len);
        repairs.corrupt += 1;
        repairs.lost_events += lost.unwrap_or(0);
        tracing::error!(
            segment = %segment::path(dir, header.base).display(),
            at_byte = pos,
            damaged_bytes = len,
            lost_events = lost.map_or("unknown".to_owned(), |n| n.to_string()),
            copied_to = if aside { repair::ASIDE_DIR } else { "(not copied: damaged/ is full)" },
            "spool record damaged on disk; skipped it and kept every valid record after it"
        );
        pos = next;
        each(Found {
            end: header.base + (pos - header.len),
            count: 0,
            position: None,
        });
    }
    Ok(pos)
}

/// Rebuilds the damaged header of segment `base` in front of its first
/// valid record; `false` when it holds none (nothing to keep).
fn rebuild(
    dir: &Path,
    base: Offset,
    file: &File,
    file_len: u64,
    positions: &BTreeMap<String, Vec<u8>>,
) -> std::io::Result<bool> {
    let Some(first) = repair::next_valid(file, segment::MIN_HEADER_LEN, file_len)? else {
        return Ok(false);
    };
    let aside = repair::set_aside(dir, base, file, 0, first)?;
    if !repair::rebuild_header(file, base, first, positions)? {
        return Ok(false);
    }
    tracing::error!(
        segment = %segment::path(dir, base).display(),
        header_bytes = first,
        copied_to = if aside { repair::ASIDE_DIR } else { "(not copied: damaged/ is full)" },
        "spool segment header is damaged; rebuilt it, its records are kept (source positions from the previous segment)"
    );
    Ok(true)
}

/// Opens or creates the spool in `dir` for `sinks`.
pub fn recover(dir: &Path, sinks: &[String]) -> Result<Recovered, SpoolError> {
    let cursors_dir = dir.join("cursors");
    // 0700 whatever the umask. The spool directory may be a link an admin
    // made to put it on another disk (only root can, in a 0700 state
    // directory); nothing inside it may.
    statefile::ensure_dir(dir, true).map_err(io("creating the spool directory"))?;
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
    let mut repairs = Repairs::default();
    // A crash while creating a segment can leave a file whose header is
    // torn: it holds no record, so it goes. A damaged header in front of
    // valid records is rebuilt.
    let mut headers: Vec<(Offset, File, u64, segment::Header)> = Vec::with_capacity(bases.len());
    for (i, &base) in bases.iter().enumerate() {
        let path = segment::path(dir, base);
        let file = statefile::open(&path, statefile::options().read(true).write(true))
            .map_err(io("opening a segment"))?;
        // Segments an older weir made under a wide umask become private.
        statefile::restrict(&file, statefile::FILE_MODE)
            .map_err(io("narrowing a segment's mode"))?;
        let file_len = file
            .metadata()
            .map_err(io("reading a segment's size"))?
            .len();
        let mut header = read_header(&file);
        if matches!(&header, Ok(h) if h.base != base)
            || matches!(header, Err(HeaderError::Damaged(_)))
        {
            let positions = headers
                .last()
                .map(|h| h.3.positions.clone())
                .unwrap_or_default();
            if rebuild(dir, base, &file, file_len, &positions)
                .map_err(io("rebuilding a segment header"))?
            {
                repairs.corrupt += 1;
                header = read_header(&file);
            }
        }
        match header {
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
    let mut tail_repaired = false;
    let mut tail_older_format = false;
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
        let corrupt_before = repairs.corrupt;
        let good = scan(dir, &file, &h, file_len, &mut repairs, |f| {
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
        let mut good = good;
        if !is_tail && file_len - good >= HEADER_LEN as u64 {
            // Damage at the end of a closed segment (fdatasync'ed before the
            // next one began, so not a torn write): skipped like any other.
            let lost = repair::events_in(&file, good, file_len - good)
                .map_err(io("repairing a segment"))?;
            repair::set_aside(dir, base, &file, good, file_len - good)
                .map_err(io("copying damaged bytes aside"))?;
            repair::mark_skipped(&file, good, file_len - good, 0)
                .map_err(io("repairing a segment"))?;
            tracing::error!(segment = %segment::path(dir, base).display(), at_byte = good, damaged_bytes = file_len - good, "spool segment ends in damaged bytes; skipped them");
            repairs.corrupt += 1;
            repairs.lost_events += lost.unwrap_or(0);
            good = file_len;
        }
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
                repair::set_aside(dir, base, &file, good, file_len - good)
                    .map_err(io("copying damaged bytes aside"))?;
                tracing::warn!(segment = %path.display(), discarded_bytes = file_len - good, "spool tail ended in a torn record (crash during a write); cut it off");
                file.set_len(good).map_err(io("truncating a torn tail"))?;
                discarded += file_len - good;
                disk_len = good;
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
            tail_repaired = repairs.corrupt > corrupt_before;
            tail_older_format = h.version < segment::VERSION;
            tail = Some((file, disk_len));
        }
    }
    if tail_repaired || tail_older_format {
        // The tail held damage, so the positions end before it (see
        // `scan`). Later appends must not sit behind a skipped record in
        // the same segment (the next open would skip their positions too):
        // they go to a new tail whose header holds those positions.
        // Likewise after an upgrade: records of a newer format go to a
        // segment whose header says so, which an older weir refuses to read
        // rather than misread (an empty old tail is rewritten in place).
        if let Some((old, _)) = &tail {
            old.sync_data().map_err(io("syncing the tail segment"))?;
        }
        let next = segments.values().next_back().expect("the tail").end;
        let (file, header_len) = create_segment(dir, next, &positions)?;
        segments.insert(
            next,
            SegMeta {
                header_len,
                end: next,
                events: 0,
                disk_len: header_len,
            },
        );
        tail = Some((file, header_len));
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
        corrupt: repairs.corrupt,
        lost_events: repairs.lost_events,
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
    fn a_flipped_record_is_skipped_counted_and_set_aside_once() {
        use crate::event::{Event, Origin};
        let d = tempfile::tempdir().unwrap();
        let (f, h) = create_segment(d.path(), 0, &BTreeMap::new()).unwrap();
        let mut rec = Vec::new();
        let mut at = h;
        let mut starts = Vec::new();
        for k in 0..5 {
            let events: Vec<Event> = (0..k + 1)
                .map(|i| Event::new(i, Origin::Docker, format!("record {k} line {i}")))
                .collect();
            // Each record carries the journal position after it.
            let pos = (k + 1).to_string();
            record::encode(&mut rec, &events, Some(("journal", pos.as_bytes())), 1).unwrap();
            f.write_all_at(&rec, at).unwrap();
            starts.push(at);
            at += rec.len() as u64;
        }
        drop(f);
        // Flip a body byte of record 2 (3 events).
        let path = segment::path(d.path(), 0);
        let mut b = std::fs::read(&path).unwrap();
        b[starts[2] as usize + HEADER_LEN + 3] ^= 0x10;
        std::fs::write(&path, &b).unwrap();
        let r = recover(d.path(), &sinks()).unwrap();
        assert_eq!((r.corrupt, r.lost_events, r.discarded), (1, 3, 0));
        // The position stops before the damage, and stays there: the next
        // appends go to a new tail whose header holds it.
        assert_eq!(
            r.positions.get("journal").map(Vec::as_slice),
            Some(&b"2"[..])
        );
        assert_eq!(r.segments.len(), 2);
        assert_eq!(r.segments[&0].events, 1 + 2 + 4 + 5);
        assert_eq!(r.segments[&0].end, at - h, "offsets unchanged");
        let aside = d
            .path()
            .join(format!("damaged/{:020}-{:020}.bin", 0, starts[2]));
        assert_eq!(
            std::fs::read(aside).unwrap(),
            &b[starts[2] as usize..starts[3] as usize]
        );
        drop(r);
        let r = recover(d.path(), &sinks()).unwrap();
        assert_eq!((r.corrupt, r.lost_events), (0, 0), "repaired once");
        assert_eq!(
            r.positions.get("journal").map(Vec::as_slice),
            Some(&b"2"[..])
        );
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
