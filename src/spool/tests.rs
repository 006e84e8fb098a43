//! API-level tests of the spool on a real directory.

use super::*;
use crate::event::Origin;
use std::time::Duration;

pub(crate) fn config(segment: u64, max: u64, when_full: WhenFull) -> Config {
    Config {
        max_bytes: ByteSize(max),
        when_full,
        segment_bytes: ByteSize(segment),
        fsync_interval: HumanDuration(Duration::from_millis(20)),
        max_age: HumanDuration(Duration::ZERO),
    }
}

fn ev(i: u64) -> Event {
    Event::new(i as i64, Origin::Docker, format!("event number {i:08}"))
}

fn sinks(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| s.to_string()).collect()
}

async fn read_all(r: &mut Reader, n: usize) -> Vec<Event> {
    let mut out = Vec::new();
    while out.len() < n {
        let b = tokio::time::timeout(Duration::from_secs(5), r.next_batch(1000, 1 << 20))
            .await
            .expect("data within 5s")
            .unwrap();
        assert!(!b.events.is_empty());
        out.extend(b.events);
        r.ack(b.end).unwrap();
    }
    out
}

#[tokio::test]
async fn append_read_ack_and_resume_after_restart() {
    let d = tempfile::tempdir().unwrap();
    let cfg = config(64 << 10, 1 << 30, WhenFull::DropOldest);
    {
        let s = Spool::open(d.path(), &cfg, &sinks(&["a"])).unwrap();
        let mut r = s.reader("a").unwrap();
        let p = SourcePosition {
            source: "journal",
            position: b"cursor-1",
        };
        let end = s.append(&[ev(0), ev(1)], Some(p)).await.unwrap();
        s.wait_durable(end).await.unwrap();
        s.append(&[ev(2)], None).await.unwrap();
        let got = read_all(&mut r, 3).await;
        assert_eq!(got, vec![ev(0), ev(1), ev(2)]);
        // Unacknowledged after restart: a fourth event.
        let end = s.append(&[ev(3)], None).await.unwrap();
        s.wait_durable(end).await.unwrap();
        s.sync().await.unwrap();
    }
    let s = Spool::open(d.path(), &cfg, &sinks(&["a"])).unwrap();
    assert_eq!(
        s.source_position("journal").as_deref(),
        Some(&b"cursor-1"[..])
    );
    assert_eq!(s.source_position("docker"), None);
    let mut r = s.reader("a").unwrap();
    assert_eq!(read_all(&mut r, 1).await, vec![ev(3)]);
}

#[tokio::test]
async fn reader_waits_for_durable_data_without_polling() {
    let d = tempfile::tempdir().unwrap();
    let mut cfg = config(64 << 10, 1 << 30, WhenFull::DropOldest);
    cfg.fsync_interval = HumanDuration(Duration::from_secs(3600));
    let s = Spool::open(d.path(), &cfg, &sinks(&["a"])).unwrap();
    let mut r = s.reader("a").unwrap();
    let t = tokio::time::timeout(Duration::from_millis(100), r.next_batch(10, 1000)).await;
    assert!(t.is_err(), "nothing to read yet");
    let end = s.append(&[ev(7)], None).await.unwrap();
    // Not durable (interval is an hour): readers do not see it yet.
    let t = tokio::time::timeout(Duration::from_millis(100), r.next_batch(10, 1000)).await;
    assert!(t.is_err(), "readers only see durable data");
    s.wait_durable(end).await.unwrap();
    let b = r.next_batch(10, 1000).await.unwrap();
    assert_eq!((b.events, b.end), (vec![ev(7)], end));
}

#[tokio::test]
async fn batches_respect_limits_inside_one_record() {
    let d = tempfile::tempdir().unwrap();
    let cfg = config(64 << 10, 1 << 30, WhenFull::DropOldest);
    let s = Spool::open(d.path(), &cfg, &sinks(&["a"])).unwrap();
    let evs: Vec<Event> = (0..10).map(ev).collect();
    let end = s.append(&evs, None).await.unwrap();
    s.wait_durable(end).await.unwrap();
    let mut r = s.reader("a").unwrap();
    let mut got = Vec::new();
    let mut ends = Vec::new();
    while got.len() < 10 {
        let b = r.next_batch(3, 1 << 20).await.unwrap();
        assert!(b.events.len() <= 3);
        got.extend(b.events);
        ends.push(b.end);
    }
    assert_eq!(got, evs);
    // Only the batch that finishes the record passes it.
    assert_eq!(ends, vec![0, 0, 0, end]);
    // A byte limit smaller than one event still returns one event.
    let end2 = s.append(&evs[..2], None).await.unwrap();
    s.wait_durable(end2).await.unwrap();
    assert_eq!(r.next_batch(100, 1).await.unwrap().events.len(), 1);
}

#[tokio::test]
async fn segments_roll_and_are_deleted_once_every_sink_acked() {
    let d = tempfile::tempdir().unwrap();
    let cfg = config(4096, 1 << 30, WhenFull::DropOldest);
    let s = Spool::open(d.path(), &cfg, &sinks(&["a", "b"])).unwrap();
    for i in 0..200 {
        s.append(&[ev(i)], None).await.unwrap();
    }
    s.sync().await.unwrap();
    let segs = s.stats().segments;
    assert!(segs > 2, "{segs} segments");
    let mut a = s.reader("a").unwrap();
    read_all(&mut a, 200).await;
    s.sync().await.unwrap();
    assert_eq!(s.stats().segments, segs, "b still needs them");
    let mut b = s.reader("b").unwrap();
    read_all(&mut b, 200).await;
    s.sync().await.unwrap();
    assert_eq!(s.stats().segments, 1);
    let files = std::fs::read_dir(d.path())
        .unwrap()
        .filter(|e| e.as_ref().unwrap().path().extension() == Some("seg".as_ref()))
        .count();
    assert_eq!(files, 1);
}

#[tokio::test]
async fn new_sink_starts_at_oldest_and_removed_sink_stops_holding() {
    let d = tempfile::tempdir().unwrap();
    let cfg = config(4096, 1 << 30, WhenFull::DropOldest);
    {
        let s = Spool::open(d.path(), &cfg, &sinks(&["old"])).unwrap();
        for i in 0..100 {
            s.append(&[ev(i)], None).await.unwrap();
        }
        s.sync().await.unwrap();
    }
    let s = Spool::open(d.path(), &cfg, &sinks(&["new"])).unwrap();
    assert!(!d.path().join("cursors/old.cursor").exists());
    let mut r = s.reader("new").unwrap();
    let got = read_all(&mut r, 100).await;
    assert_eq!(got[0], ev(0));
    s.sync().await.unwrap();
    assert_eq!(s.stats().segments, 1);
}

#[tokio::test]
async fn drop_oldest_counts_what_each_sink_lost() {
    let d = tempfile::tempdir().unwrap();
    let cfg = config(4096, 3 * 4096, WhenFull::DropOldest);
    let s = Spool::open(d.path(), &cfg, &sinks(&["slow"])).unwrap();
    for i in 0..1000 {
        s.append(&[ev(i)], None).await.unwrap();
    }
    s.sync().await.unwrap();
    let st = s.stats();
    assert!(st.bytes <= 3 * 4096 + 4096, "{st:?}");
    let mut r = s.reader("slow").unwrap();
    let b = r.next_batch(10_000, 1 << 30).await.unwrap();
    let first = b.events[0].timestamp_ns as u64;
    assert!(first > 0, "oldest data was dropped");
    assert_eq!(
        r.dropped_events(),
        first,
        "every dropped event counted once"
    );
    assert_eq!(s.stats().sinks[0].dropped_events, first);
}

#[tokio::test]
async fn block_waits_for_acknowledgements() {
    let d = tempfile::tempdir().unwrap();
    let cfg = config(4096, 2 * 4096, WhenFull::Block);
    let s = Spool::open(d.path(), &cfg, &sinks(&["a"])).unwrap();
    let mut n = 0;
    loop {
        let t = tokio::time::timeout(Duration::from_millis(300), s.append(&[ev(n)], None)).await;
        match t {
            Ok(r) => {
                r.unwrap();
                n += 1;
            }
            Err(_) => break,
        }
        assert!(n < 10_000, "never blocked");
    }
    let s2 = s.clone();
    let writer = tokio::spawn(async move { s2.append(&[ev(n)], None).await.unwrap() });
    let mut r = s.reader("a").unwrap();
    let got = read_all(&mut r, n as usize).await;
    assert_eq!(got.len() as u64, n);
    let end = tokio::time::timeout(Duration::from_secs(5), writer)
        .await
        .unwrap()
        .unwrap();
    s.wait_durable(end).await.unwrap();
    assert_eq!(read_all(&mut r, 1).await, vec![ev(n)]);
    assert_eq!(r.dropped_events(), 0);
}

#[tokio::test]
async fn torn_tail_is_cut_and_counted() {
    let d = tempfile::tempdir().unwrap();
    let cfg = config(1 << 20, 1 << 30, WhenFull::DropOldest);
    {
        let s = Spool::open(d.path(), &cfg, &sinks(&["a"])).unwrap();
        for i in 0..10 {
            s.append(&[ev(i)], None).await.unwrap();
        }
        s.sync().await.unwrap();
    }
    let seg = d.path().join(segment::file_name(0));
    let mut bytes = std::fs::read(&seg).unwrap();
    let good = bytes.len();
    bytes.extend_from_within(good - 20..); // a torn copy of a record tail
    std::fs::write(&seg, &bytes).unwrap();
    let s = Spool::open(d.path(), &cfg, &sinks(&["a"])).unwrap();
    assert_eq!(std::fs::metadata(&seg).unwrap().len() as usize, good);
    let mut r = s.reader("a").unwrap();
    assert_eq!(
        read_all(&mut r, 10).await,
        (0..10).map(ev).collect::<Vec<_>>()
    );
    let end = s.append(&[ev(10)], None).await.unwrap();
    s.wait_durable(end).await.unwrap();
    assert_eq!(read_all(&mut r, 1).await, vec![ev(10)]);
}

#[test]
fn newer_format_is_refused() {
    let d = tempfile::tempdir().unwrap();
    let cfg = config(1 << 20, 1 << 30, WhenFull::DropOldest);
    drop(Spool::open(d.path(), &cfg, &[]).unwrap());
    let seg = d.path().join(segment::file_name(0));
    let mut b = std::fs::read(&seg).unwrap();
    b[8] = 9;
    std::fs::write(&seg, b).unwrap();
    let e = Spool::open(d.path(), &cfg, &[]).err().expect("refused");
    assert!(
        matches!(e, SpoolError::NewerFormat { version: 9, .. }),
        "{e}"
    );
    assert!(e.to_string().contains("newer"), "{e}");
}

#[tokio::test]
async fn positions_survive_deletion_of_their_segment() {
    let d = tempfile::tempdir().unwrap();
    let cfg = config(4096, 1 << 30, WhenFull::DropOldest);
    {
        let s = Spool::open(d.path(), &cfg, &sinks(&["a"])).unwrap();
        let p = SourcePosition {
            source: "journal",
            position: b"rare",
        };
        s.append(&[ev(0)], Some(p)).await.unwrap();
        for i in 1..200 {
            s.append(&[ev(i)], None).await.unwrap();
        }
        s.sync().await.unwrap();
        let mut r = s.reader("a").unwrap();
        read_all(&mut r, 200).await;
        s.sync().await.unwrap();
        assert_eq!(s.stats().segments, 1);
    }
    let s = Spool::open(d.path(), &cfg, &sinks(&["a"])).unwrap();
    assert_eq!(s.source_position("journal").as_deref(), Some(&b"rare"[..]));
}

/// A record damaged under a running spool (after the open repaired what it
/// found) costs a reader only that record: it resumes at the next valid one.
#[tokio::test]
async fn a_record_damaged_while_running_costs_a_reader_only_itself() {
    use std::os::unix::fs::FileExt;
    let d = tempfile::tempdir().unwrap();
    let cfg = config(1 << 20, 1 << 30, WhenFull::DropOldest);
    let s = Spool::open(d.path(), &cfg, &sinks(&["a"])).unwrap();
    let mut r = s.reader("a").unwrap();
    let mut ends = vec![0];
    for i in 0..10 {
        ends.push(s.append(&[ev(2 * i), ev(2 * i + 1)], None).await.unwrap());
    }
    s.wait_durable(*ends.last().unwrap()).await.unwrap();
    // Flip a byte inside record 4 (events 8 and 9).
    let header_len = s.shared().lock().segments[&0].header_len;
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(segment::path(d.path(), 0))
        .unwrap();
    f.write_all_at(&[0xff], header_len + ends[4] + 40).unwrap();
    drop(f);
    let got = read_all(&mut r, 18).await;
    let want: Vec<Event> = (0..20).filter(|i| !(8..10).contains(i)).map(ev).collect();
    assert_eq!(got, want);
}

/// A reader told to skip fields hands out every event whole but for its
/// fields, whatever they refer back to (fields repeated from the event
/// before, changed, added, dropped), and its labels and messages still
/// follow the events' own.
#[tokio::test]
async fn a_reader_skipping_fields_hands_out_the_rest_of_every_event() {
    let d = tempfile::tempdir().unwrap();
    let cfg = config(1 << 20, 1 << 30, WhenFull::DropOldest);
    let s = Spool::open(d.path(), &cfg, &sinks(&["a", "b"])).unwrap();
    let events: Vec<Event> = (0..40u64)
        .map(|i| {
            let mut e = ev(i);
            e.labels.host = Some("host".into());
            e.labels.container_name = Some(format!("c{}", i / 7));
            for f in 0..(i % 4) {
                e.fields
                    .push((format!("k{f}"), format!("v{}", if f == 1 { i } else { f })));
            }
            e
        })
        .collect();
    let end = s.append(&events[..25], None).await.unwrap();
    s.append(&events[25..], None).await.unwrap();
    s.wait_durable(end).await.unwrap();
    let mut skipping = s.reader("a").unwrap();
    skipping.skip_fields();
    let got = read_all(&mut skipping, events.len()).await;
    let want: Vec<Event> = events
        .iter()
        .map(|e| Event {
            fields: Vec::new(),
            ..e.clone()
        })
        .collect();
    assert_eq!(got, want);
    // The other sink's reader still reads them.
    let mut whole = s.reader("b").unwrap();
    assert_eq!(read_all(&mut whole, events.len()).await, events);
}

/// A closed segment truncated under a running spool, inside a record whose
/// header is still whole: the reader hands out the records before it,
/// counts that record as one corrupt record ("record beyond the end of its
/// segment file", not a checksum mismatch over bytes it never read), skips
/// the rest of that segment (nothing valid is left in the file) and goes on
/// with the next segment, losing nothing there.
#[tokio::test]
async fn a_segment_truncated_inside_a_record_costs_only_what_it_lost() {
    let out = crate::selflog::CaptureWriter::default();
    let sub = tracing_subscriber::fmt()
        .with_writer(out.clone())
        .with_ansi(false)
        .finish();
    let _log = tracing::subscriber::set_default(sub);
    let d = tempfile::tempdir().unwrap();
    let cfg = config(4 << 10, 1 << 30, WhenFull::DropOldest);
    let s = Spool::open(d.path(), &cfg, &sinks(&["a"])).unwrap();
    let mut r = s.reader("a").unwrap();
    // Records of 2 events (record k: events 2k and 2k + 1), until segment
    // 0 is closed and 3 more are in the next one.
    let mut ends = vec![0];
    let mut after_roll = 0;
    while after_roll < 3 {
        let k = ends.len() as u64 - 1;
        ends.push(s.append(&[ev(2 * k), ev(2 * k + 1)], None).await.unwrap());
        if s.shared().lock().segments.len() > 1 {
            after_roll += 1;
        }
    }
    let records = ends.len() - 1;
    s.wait_durable(ends[records]).await.unwrap();
    let next_base = *s.shared().lock().segments.keys().nth(1).unwrap();
    let next = ends.iter().position(|&e| e == next_base).unwrap();
    assert!(next > 4 && next < records, "segment 0 holds {next} records");
    // Cut segment 0 inside record 3: its header and 5 bytes of its body
    // are left.
    let header_len = s.shared().lock().segments[&0].header_len;
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(segment::path(d.path(), 0))
        .unwrap();
    f.set_len(header_len + ends[3] + record::HEADER_LEN as u64 + 5)
        .unwrap();
    drop(f);
    let want: Vec<Event> = (0..6)
        .chain(2 * next as u64..2 * records as u64)
        .map(ev)
        .collect();
    let got = read_all(&mut r, want.len()).await;
    assert_eq!(got, want);
    let value = |name| s.metrics().value(name, &[]).unwrap();
    assert_eq!(value(crate::metrics::names::SPOOL_CORRUPT_RECORDS), 1.0);
    let log = out.contents();
    assert_eq!(
        log.matches("record beyond the end of its segment file")
            .count(),
        1,
        "{log}"
    );
    assert_eq!(log.matches("spool record damaged").count(), 1, "{log}");
    // Nothing else is waiting: the lost records are not handed out later.
    let more = tokio::time::timeout(Duration::from_millis(100), r.next_batch(1000, 1 << 20));
    assert!(
        more.await.is_err(),
        "more events after the truncated segment"
    );
}

/// A spool an older weir left (segment format 1, records in version 1 of
/// the event encoding, a source position): after the upgrade every event
/// is delivered, new appends go to a new segment of the current format,
/// and both survive a restart.
#[tokio::test]
async fn a_spool_of_the_previous_format_is_read_after_an_upgrade() {
    let d = tempfile::tempdir().unwrap();
    let cfg = config(1 << 20, 1 << 30, WhenFull::DropOldest);
    let mut header = segment::encode_header(0, &Default::default());
    header[8] = 1;
    let n = header.len();
    let crc = crc32c::crc32c(&header[..n - 4]);
    header[n - 4..].copy_from_slice(&crc.to_le_bytes());
    let mut file = header;
    let old: Vec<Event> = (0..5).map(ev).collect();
    let mut rec = Vec::new();
    record::encode_v1(&mut rec, &old[..2], Some(("journal", b"old-cursor")), 1);
    file.extend_from_slice(&rec);
    record::encode_v1(&mut rec, &old[2..], None, 2);
    file.extend_from_slice(&rec);
    std::fs::create_dir_all(d.path()).unwrap();
    std::fs::write(d.path().join(segment::file_name(0)), &file).unwrap();
    let new: Vec<Event> = (5..8).map(ev).collect();
    {
        let s = Spool::open(d.path(), &cfg, &sinks(&["a", "b"])).unwrap();
        assert_eq!(
            s.source_position("journal").as_deref(),
            Some(&b"old-cursor"[..])
        );
        assert_eq!(s.stats().segments, 2, "appends go to a new segment");
        let end = s.append(&new, None).await.unwrap();
        s.wait_durable(end).await.unwrap();
        let mut r = s.reader("a").unwrap();
        let got = read_all(&mut r, 8).await;
        assert_eq!(got[..5], old[..]);
        assert_eq!(got[5..], new[..]);
        s.sync().await.unwrap();
    }
    let names: Vec<_> = std::fs::read_dir(d.path())
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".seg"))
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
    let tail = segment::path(d.path(), (file.len() - n) as u64);
    let h = segment::parse_header(&std::fs::read(tail).unwrap()).unwrap();
    assert_eq!(h.version, segment::VERSION);
    assert_eq!(
        h.positions.get("journal").map(Vec::as_slice),
        Some(&b"old-cursor"[..])
    );
    // After a restart, a sink that acknowledged nothing reads both formats.
    let s = Spool::open(d.path(), &cfg, &sinks(&["a", "b"])).unwrap();
    let mut r = s.reader("b").unwrap();
    let got = read_all(&mut r, 8).await;
    assert_eq!(got[..5], old[..]);
    assert_eq!(got[5..], new[..]);
}

/// An empty tail of the previous format is rewritten in the current one,
/// at the same offset.
#[tokio::test]
async fn an_empty_tail_of_the_previous_format_is_rewritten() {
    let d = tempfile::tempdir().unwrap();
    let cfg = config(1 << 20, 1 << 30, WhenFull::DropOldest);
    drop(Spool::open(d.path(), &cfg, &[]).unwrap());
    let seg = d.path().join(segment::file_name(0));
    let mut b = std::fs::read(&seg).unwrap();
    b[8] = 1;
    let n = b.len();
    let crc = crc32c::crc32c(&b[..n - 4]);
    b[n - 4..].copy_from_slice(&crc.to_le_bytes());
    std::fs::write(&seg, b).unwrap();
    let s = Spool::open(d.path(), &cfg, &sinks(&["a"])).unwrap();
    assert_eq!(s.stats().segments, 1);
    let h = segment::parse_header(&std::fs::read(&seg).unwrap()).unwrap();
    assert_eq!(h.version, segment::VERSION);
    let end = s.append(&[ev(1)], None).await.unwrap();
    s.wait_durable(end).await.unwrap();
    let mut r = s.reader("a").unwrap();
    assert_eq!(read_all(&mut r, 1).await, vec![ev(1)]);
}

/// A sink hands its events back and later batches decode into them: the
/// events read are the events appended whatever they held before, and
/// batches are bounded by decoded size though the record stores a large
/// repeated field once.
#[tokio::test]
async fn recycled_events_and_decoded_size_bounds() {
    let d = tempfile::tempdir().unwrap();
    let cfg = config(64 << 20, 1 << 30, WhenFull::DropOldest);
    let s = Spool::open(d.path(), &cfg, &sinks(&["a"])).unwrap();
    let mut r = s.reader("a").unwrap();
    let big = |i: u64| {
        let mut e = ev(i);
        e.fields.push(("tag".into(), "t".repeat(16 << 10)));
        e.labels.host = Some("h".into());
        e
    };
    let batch: Vec<Event> = (0..1000).map(big).collect();
    let end = s.append(&batch, None).await.unwrap();
    assert!(end < 100 << 10, "the tag is stored once: {end} bytes");
    let small: Vec<Event> = (1000..1010).map(ev).collect();
    let end = s.append(&small, None).await.unwrap();
    s.wait_durable(end).await.unwrap();
    let mut got = Vec::new();
    while got.len() < 1010 {
        let b = r.next_batch(10_000, 1 << 20).await.unwrap();
        let size: usize = b.events.iter().map(Event::approx_size).sum();
        assert!(
            size < (1 << 20) + (17 << 10),
            "{size} bytes decoded in one batch"
        );
        got.extend(b.events.iter().cloned());
        r.ack(b.end).unwrap();
        r.recycle(b.events);
    }
    assert_eq!(got[..1000], batch[..]);
    assert_eq!(got[1000..], small[..]);
}

/// A real segment written by the release binary before format 2 (see
/// tests/corpus/spool-v1/README.md: Docker, PackedForward and Forward-mode
/// messages through a forward source), with the file sink's output of that
/// run: read by today's spool, the events render to the same bytes.
#[tokio::test]
async fn a_segment_written_by_the_previous_release_reads_back_the_same_events() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(
        d.path().join(segment::file_name(0)),
        include_bytes!("../../tests/corpus/spool-v1/00000000000000000000.seg"),
    )
    .unwrap();
    let expected = include_str!("../../tests/corpus/spool-v1/file-sink.ndjson");
    let cfg = config(1 << 20, 1 << 30, WhenFull::DropOldest);
    let s = Spool::open(d.path(), &cfg, &sinks(&["new"])).unwrap();
    let mut r = s.reader("new").unwrap();
    let got = read_all(&mut r, expected.lines().count()).await;
    let mut out = Vec::new();
    for e in &got {
        crate::sink::file::write_line(&mut out, e);
    }
    assert_eq!(String::from_utf8(out).unwrap(), expected);
    assert_eq!(s.stats().segments, 2, "appends go to a new segment");
}

/// A CRC-valid record whose third event cannot be decoded (a bug or a
/// foreign writer): the reader hands out the two before it, skips the rest
/// of the record and counts the skipped events by the record's count, then
/// goes on with the next record.
#[tokio::test]
async fn events_skipped_after_an_undecodable_one_are_counted() {
    let d = tempfile::tempdir().unwrap();
    let cfg = config(1 << 20, 1 << 30, WhenFull::DropOldest);
    let mut file = segment::encode_header(0, &Default::default());
    let mut rec = Vec::new();
    record::encode(&mut rec, &[ev(0), ev(1)], None, 1).unwrap();
    // Three more events claimed, the first of them garbage.
    rec.extend_from_slice(&[0xff; 16]);
    rec.extend_from_slice(&[0; 40]);
    let len = (rec.len() - record::HEADER_LEN) as u32;
    rec[4..8].copy_from_slice(&len.to_le_bytes());
    rec[12..16].copy_from_slice(&5u32.to_le_bytes());
    let crc = crc32c::crc32c(&rec[12..]);
    rec[8..12].copy_from_slice(&crc.to_le_bytes());
    file.extend_from_slice(&rec);
    record::encode(&mut rec, &[ev(5), ev(6)], None, 2).unwrap();
    file.extend_from_slice(&rec);
    std::fs::create_dir_all(d.path()).unwrap();
    std::fs::write(d.path().join(segment::file_name(0)), &file).unwrap();
    let s = Spool::open(d.path(), &cfg, &sinks(&["a"])).unwrap();
    let mut r = s.reader("a").unwrap();
    let got = read_all(&mut r, 4).await;
    assert_eq!(got, [0, 1, 5, 6].map(ev));
    let skipped = s
        .metrics()
        .value(
            crate::metrics::names::SPOOL_DROPPED_EVENTS,
            &[("sink", "a"), ("reason", "undecodable")],
        )
        .unwrap();
    assert_eq!(skipped, 3.0);
    // The record is still passed: acknowledged, nothing left to read.
    assert_eq!(s.stats().sinks[0].lag_bytes, 0);
}

/// A cursor store that fails (here its directory is gone; a full disk or a
/// read-only remount fail alike) is retried once a second, not at once in
/// a loop (it was: 100% CPU and one error line per attempt while a `sync`
/// waited), and the cursors are stored once it can be done again.
#[tokio::test]
async fn a_failing_cursor_store_is_retried_once_a_second_until_it_works() {
    use std::sync::atomic::Ordering;
    let d = tempfile::tempdir().unwrap();
    let cfg = config(64 << 10, 1 << 30, WhenFull::DropOldest);
    let s = Spool::open(d.path(), &cfg, &sinks(&["a"])).unwrap();
    let mut r = s.reader("a").unwrap();
    let end = s.append(&[ev(0), ev(1)], None).await.unwrap();
    s.wait_durable(end).await.unwrap();
    read_all(&mut r, 2).await;
    let cursors = s.shared().cursors_dir();
    std::fs::remove_dir_all(&cursors).unwrap();
    let waited = tokio::time::timeout(Duration::from_millis(2500), s.sync()).await;
    assert!(waited.is_err(), "sync cannot finish without its cursors");
    let failures = s.shared().store_failures.load(Ordering::Relaxed);
    assert!(
        (1..=4).contains(&failures),
        "{failures} failed stores in 2.5 s: expected one a second"
    );
    std::fs::create_dir(&cursors).unwrap();
    tokio::time::timeout(Duration::from_secs(5), s.sync())
        .await
        .expect("cursors stored once the directory is back")
        .unwrap();
    assert!(cursors.join("a.cursor").exists());
}
