//! A sink's cursor over the spool.
//!
//! Readers see only **durable** data (fdatasync'ed): a sink never ships an
//! event that a crash could take back and a source would then send again, so
//! a crash does not add duplicates. The cost is at most `fsync_interval` of
//! extra delivery latency.
//!
//! Records are read with `pread` into a reused buffer, on the calling task:
//! one read of about `max_bytes`, almost always a page-cache hit of data
//! written moments ago, which keeps `next_batch` cheap and cancel-safe
//! (no state changes until it returns). They are checked against their CRC, and decoded event
//! by event, so a batch can end inside a record: the rest of that record is
//! kept for the next call, and [`Batch::end`] only passes a record once all
//! its events were handed out.
//!
//! Events are decoded into events the reader keeps from earlier batches
//! (the sink hands them back with [`Reader::recycle`]): once warm, a batch
//! costs no allocation per event (issue 24: the ~13 `String`s per event
//! and their frees were the largest delivery cost on every sink). Batches
//! are bounded by decoded size, not by the compact encoded size: a record
//! storing a 64 KiB tag once for 20,000 events still yields batches of
//! about `max_bytes`.

use std::fs::File;
use std::os::unix::fs::FileExt;

use tokio::sync::watch;

use super::record::{self, HEADER_LEN};
use super::{segment, Batch, Offset, Spool, SpoolError};
use crate::event::codec::{DecodeError, Decoder};
use crate::event::{Event, Origin};

/// Most events kept for reuse: a sink's largest batch.
const POOL_EVENTS: usize = 20_000;
/// An event holding more buffer bytes than this is freed, not kept: one
/// huge event must not pin its memory in the pool.
const POOL_EVENT_BYTES: usize = 16 << 10;

/// One sink's cursor over the spool.
pub struct Reader {
    pub(super) spool: Spool,
    pub(super) sink: String,
    /// Next record to read (everything before it was handed out).
    pub(super) read: Offset,
    /// Events handed out from the segment holding `read`.
    pub(super) seg_base: Offset,
    pub(super) seg_events: u64,
    pub(super) file: Option<(Offset, File)>,
    pub(super) chunk: Vec<u8>,
    /// The record being handed out in parts.
    pub(super) cur: Option<Current>,
    pub(super) durable: watch::Receiver<Offset>,
    /// Events older than this (by their timestamp) are dropped here.
    pub(super) max_age: std::time::Duration,
    /// `weir_spool_dropped_events_total{reason="max_age"}` for this sink.
    pub(super) expired: crate::metrics::Counter,
    /// `weir_spool_dropped_events_total{reason="undecodable"}` for this
    /// sink: the events of a CRC-valid record from one that cannot be
    /// decoded to its end (see [`Decode::take`]).
    pub(super) undecodable: crate::metrics::Counter,
    /// Events to decode into (see [`Reader::recycle`]).
    pub(super) pool: Vec<Event>,
    /// The emptied `Vec` of a batch handed back, to hand out the next batch
    /// in: a batch's events are then decoded into place, not into a `Vec`
    /// grown (and its events moved) a doubling at a time.
    pub(super) spare: Vec<Event>,
    /// Follows the record being read (`cur`'s, while there is one).
    pub(super) decoder: Decoder,
}

/// A record whose events are being handed out.
pub(super) struct Current {
    start: Offset,
    end: Offset,
    /// The encoded events (position stripped).
    events: Vec<u8>,
    at: usize,
    /// Events the record holds (its header's count) and those handed out.
    count: u32,
    handed: u32,
}

/// Where the next bytes come from, decided under the lock.
struct Plan {
    base: Offset,
    header_len: u64,
    /// Readable logical end: the segment's end or the durable offset.
    limit: Offset,
    /// Every other sink has read past `limit`: what this reader reads is
    /// read by all (see [`Reader::drop_read`]).
    last_reader: bool,
}

impl Reader {
    /// The registry of the spool, for the sink's metrics.
    pub fn metrics(&self) -> &crate::metrics::Metrics {
        self.spool.metrics()
    }

    /// Waits until there is data past this reader's read position, then returns
    /// at least one event and at most `max_events` / about `max_bytes`
    /// (by [`Event::approx_size`]). Cancel-safe: dropping the future loses nothing.
    pub async fn next_batch(
        &mut self,
        max_events: usize,
        max_bytes: usize,
    ) -> Result<Batch, SpoolError> {
        let mut events = self.take_spare();
        let (end, _) = self.read_into(&mut events, max_events, max_bytes).await?;
        Ok(Batch { events, end })
    }

    /// Events are handed out without their fields from now on: for a sink
    /// that never reads them (see [`Decoder::skip_fields`]). Their
    /// [`Event::approx_size`], which bounds batches, then counts what the
    /// sink reads.
    pub fn skip_fields(&mut self) {
        self.decoder.skip_fields();
    }

    /// An empty `Vec` to gather a batch in: the emptied one of a batch
    /// handed back to [`Reader::recycle`] (with room for a batch), if any.
    pub fn take_spare(&mut self) -> Vec<Event> {
        std::mem::take(&mut self.spare)
    }

    /// [`Reader::next_batch`], appending to `events` (the limits count only
    /// the events appended): a sink gathering a batch from several reads
    /// decodes each event straight into its place in the batch. Returns the
    /// offset the batch ends at ([`Batch::end`]) and the approximate size
    /// of the events appended ([`Event::approx_size`], summed as they were
    /// decoded; it counts the rare event then dropped as expired).
    /// Cancel-safe: dropping the future appends nothing.
    pub async fn read_into(
        &mut self,
        events: &mut Vec<Event>,
        max_events: usize,
        max_bytes: usize,
    ) -> Result<(Offset, usize), SpoolError> {
        let max_events = max_events.max(1);
        let base = events.len();
        loop {
            let plan = self.plan();
            let bytes = if let Some(cur) = &mut self.cur {
                let mut d = Decode {
                    decoder: &mut self.decoder,
                    pool: &mut self.pool,
                    out: events,
                    base,
                    failed: None,
                };
                let bytes = d.take(&cur.events, &mut cur.at, max_events, max_bytes);
                let failed = d.failed.take();
                cur.handed += (events.len() - base) as u32;
                if let Some(err) = failed {
                    skipped_undecodable(&self.undecodable, err, cur.count, cur.handed);
                }
                if cur.at >= cur.events.len() {
                    self.read = cur.end;
                    self.cur = None;
                }
                bytes
            } else if let Some(plan) = plan {
                let from = self.read;
                let bytes = self.fill(&plan, max_events, max_bytes, events, base)?;
                if plan.last_reader {
                    self.drop_read(&plan, from);
                }
                bytes
            } else {
                let read = self.read;
                self.durable
                    .wait_for(|&d| d > read)
                    .await
                    .map_err(|_| SpoolError::Closed)?;
                continue;
            };
            self.seg_events += (events.len() - base) as u64;
            self.publish();
            self.drop_expired(events, base);
            if events.len() > base {
                return Ok((self.read, bytes));
            }
        }
    }

    /// Takes back a batch's events once the sink is done with them, to
    /// decode later batches into (bounded: [`POOL_EVENTS`], and an event
    /// holding over [`POOL_EVENT_BYTES`] is freed).
    pub fn recycle(&mut self, mut events: Vec<Event>) {
        // Filtered in place, then moved in one block: draining events one
        // by one through an iterator (a bounds check and a ~180-byte move
        // each) into the pool cost ~300 instructions per event, on the
        // task that reads and plans every batch.
        events.retain(|e| e.held_bytes() <= POOL_EVENT_BYTES);
        events.truncate(POOL_EVENTS.saturating_sub(self.pool.len()));
        self.pool.append(&mut events);
        // The larger emptied `Vec` is kept for the next batch
        // ([`Reader::take_spare`]; bounded like the pool).
        if events.capacity() > self.spare.capacity() && events.capacity() <= POOL_EVENTS {
            self.spare = events;
        }
    }

    /// Drops events older than `max_age` (retention, and Loki refuses them
    /// anyway); they go back to the pool. A batch of only expired events is
    /// skipped: its offsets are acknowledged with the next batch the sink delivers.
    /// Only `events[from..]` (this read's) are looked at.
    fn drop_expired(&mut self, events: &mut Vec<Event>, from: usize) {
        if self.max_age.is_zero() {
            return;
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let cutoff = now.saturating_sub(self.max_age).as_nanos();
        let cutoff = i64::try_from(cutoff).unwrap_or(i64::MAX);
        // Usually none has expired: then nothing is moved (an event is a
        // few hundred bytes, and swapping one with itself copies it thrice).
        let Some(first) = events[from..]
            .iter()
            .position(|e| e.timestamp_ns < cutoff)
            .map(|i| from + i)
        else {
            return;
        };
        // A stable partition: kept events stay in order.
        let mut kept = first;
        for i in first + 1..events.len() {
            if events[i].timestamp_ns >= cutoff {
                events.swap(kept, i);
                kept += 1;
            }
        }
        let dropped = (events.len() - kept) as u64;
        let expired: Vec<Event> = events.drain(kept..).collect();
        self.recycle(expired);
        if dropped > 0 {
            self.expired.add(dropped);
            tracing::warn!(sink = %self.sink, events = dropped, "dropped spooled events older than spool.max_age");
        }
    }

    /// Records that everything up to `offset` was delivered. The cursor file
    /// is written within a second (coalesced), and at `sync`/shutdown.
    pub fn ack(&mut self, offset: Offset) -> Result<(), SpoolError> {
        let mut st = self.spool.shared().lock();
        let durable = st.durable;
        if let Some(s) = st.sinks.get_mut(&self.sink) {
            s.acked = s.acked.max(offset.min(durable));
        }
        Ok(())
    }

    /// Events this sink lost to `drop_oldest` since the spool was opened.
    pub fn dropped_events(&self) -> u64 {
        let st = self.spool.shared().lock();
        st.sinks.get(&self.sink).map_or(0, |s| s.dropped_total)
    }

    /// Catches up with drops, then says what to read next (`None`: wait).
    fn plan(&mut self) -> Option<Plan> {
        let st = self.spool.shared().lock();
        let shared_read = st.sinks.get(&self.sink).map_or(0, |s| s.read);
        if shared_read > self.read {
            // drop_oldest moved this sink past a deleted segment.
            self.read = shared_read;
            self.cur = None;
            self.seg_base = shared_read;
            self.seg_events = 0;
        }
        if let Some(cur) = &self.cur {
            if cur.start >= self.read {
                return None; // finish handing out the current record first
            }
            self.cur = None;
        }
        loop {
            if self.read >= st.durable {
                return None;
            }
            let (&base, seg) = match st.segments.range(..=self.read).next_back() {
                Some(s) => s,
                None => {
                    self.read = *st.segments.keys().next()?;
                    continue;
                }
            };
            if self.read >= seg.end {
                // Past a damaged segment's readable end: on to the next one.
                match st.segments.range(self.read + 1..).next() {
                    Some((&next, _)) => {
                        self.read = next;
                        continue;
                    }
                    None => return None,
                }
            }
            if base != self.seg_base {
                self.seg_base = base;
                self.seg_events = 0;
            }
            let limit = seg.end.min(st.durable);
            let last_reader = st
                .sinks
                .iter()
                .all(|(name, s)| *name == self.sink || s.read >= limit);
            return Some(Plan {
                base,
                header_len: seg.header_len,
                limit,
                last_reader,
            });
        }
    }

    /// Reads whole records from `plan` into `events` until a limit is hit
    /// (counting only the events past `base`); a record only partly handed
    /// out stays in `self.cur`. Returns the approximate size of the events
    /// appended.
    fn fill(
        &mut self,
        plan: &Plan,
        max_events: usize,
        max_bytes: usize,
        events: &mut Vec<Event>,
        base: usize,
    ) -> Result<usize, SpoolError> {
        if self.file.as_ref().map(|f| f.0) != Some(plan.base) {
            match crate::statefile::open_read(&segment::path(&self.spool.shared().dir, plan.base)) {
                Ok(f) => self.file = Some((plan.base, f)),
                // Dropped meanwhile: the next plan() moves past it.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
                Err(source) => {
                    return Err(SpoolError::Io {
                        what: "opening a segment to read",
                        source,
                    })
                }
            }
        }
        let file = &self.file.as_ref().expect("opened above").1;
        let want = (plan.limit - self.read).min(max_bytes.max(64 << 10) as u64 + HEADER_LEN as u64);
        // `self.chunk[..len]` holds what was read; past it, older bytes.
        let mut len = read_at(
            file,
            &mut self.chunk,
            want as usize,
            plan.header_len + (self.read - plan.base),
        )?;
        let mut at = 0usize;
        let mut bytes = 0usize;
        while events.len() - base < max_events && (bytes < max_bytes || events.len() == base) {
            if self.read >= plan.limit {
                break;
            }
            if len - at < HEADER_LEN {
                if at == 0 {
                    corrupt(self, plan, "record header beyond the readable end");
                    return Ok(bytes);
                }
                break;
            }
            let hb: [u8; HEADER_LEN] = self.chunk[at..at + HEADER_LEN].try_into().expect("len");
            let Some(h) = record::Header::parse(&hb) else {
                corrupt(self, plan, "bad record magic");
                return Ok(bytes);
            };
            let total = h.total_len();
            if self.read + total > plan.limit {
                corrupt(self, plan, "record longer than its segment");
                return Ok(bytes);
            }
            if (len - at) < total as usize {
                if at > 0 {
                    break; // read it whole next time
                }
                let pos = plan.header_len + (self.read - plan.base);
                len = read_at(file, &mut self.chunk, total as usize, pos)?;
                if len < total as usize {
                    corrupt(self, plan, "record beyond the end of its segment file");
                    return Ok(bytes);
                }
            }
            let body = &self.chunk[at + HEADER_LEN..at + total as usize];
            let hb: [u8; HEADER_LEN] = self.chunk[at..at + HEADER_LEN].try_into().expect("len");
            if !h.check(&hb, body) {
                corrupt(self, plan, "record checksum mismatch");
                return Ok(bytes);
            }
            let Ok(parts) = record::split_body(&h, body) else {
                corrupt(self, plan, "malformed record body");
                return Ok(bytes);
            };
            // Decoded where it was read; copied only if part of it is left
            // for the next batch.
            let mut taken = 0;
            let before = events.len();
            self.decoder.reset(parts.version);
            let mut d = Decode {
                decoder: &mut self.decoder,
                pool: &mut self.pool,
                out: events,
                base,
                failed: None,
            };
            bytes += d.take(
                parts.events,
                &mut taken,
                max_events,
                max_bytes.saturating_sub(bytes),
            );
            let failed = d.failed.take();
            let handed = (events.len() - before) as u32;
            if let Some(err) = failed {
                skipped_undecodable(&self.undecodable, err, h.count, handed);
            }
            if taken < parts.events.len() {
                if events.len() == before && events.len() > base {
                    // Nothing of it fitted: leave it for the next batch whole.
                    break;
                }
                self.cur = Some(Current {
                    start: self.read,
                    end: self.read + total,
                    events: parts.events.to_vec(),
                    at: taken,
                    count: h.count,
                    handed,
                });
                break;
            }
            at += total as usize;
            self.read += total;
        }
        Ok(bytes)
    }

    /// Asks the kernel to drop the page cache of the records read since
    /// `from` (in `plan`'s segment; the first page from its start, a last
    /// page partly unread is kept): no sink reads them again. Kept cached
    /// until their segment is deleted, the spool's pages make the writer's
    /// next pages come from reclaim; dropped, they are reused at once (as
    /// the file sink does for what it wrote). Only advice: nothing read or
    /// written changes.
    fn drop_read(&self, plan: &Plan, from: Offset) {
        let Some((base, file)) = &self.file else {
            return;
        };
        if *base != plan.base || self.read <= from || self.read > plan.limit {
            return; // nothing read, or moved on past damage
        }
        let start = plan.header_len + (from - plan.base);
        let end = plan.header_len + (self.read - plan.base);
        crate::pagecache::drop(file, start, Some(end));
    }

    /// Shares the read position for loss accounting under `drop_oldest`.
    fn publish(&self) {
        let mut st = self.spool.shared().lock();
        if let Some(s) = st.sinks.get_mut(&self.sink) {
            if self.read >= s.read {
                s.read = self.read;
                s.read_seg = self.seg_base;
                s.read_events_in_seg = self.seg_events;
            }
        }
    }
}

/// Where decoded events come from and go.
struct Decode<'a> {
    decoder: &'a mut Decoder,
    pool: &'a mut Vec<Event>,
    out: &'a mut Vec<Event>,
    /// Events of `out` from earlier reads: not counted against the limits.
    base: usize,
    /// Why an event could not be decoded: the rest of the record was skipped.
    failed: Option<DecodeError>,
}

/// Counts (and logs, without payload) the events of a record of `count`
/// that were skipped after `handed` were handed out: the undecodable one
/// and every one after it.
fn skipped_undecodable(
    counter: &crate::metrics::Counter,
    err: DecodeError,
    count: u32,
    handed: u32,
) {
    let skipped = u64::from(count.saturating_sub(handed));
    counter.add(skipped);
    tracing::error!(
        error = %err,
        events_skipped = skipped,
        "spool record holds an undecodable event; skipped it and the rest of the record (weir_spool_dropped_events_total{{reason=\"undecodable\"}})"
    );
}

impl Decode<'_> {
    /// Decodes the events of `buf` (one record's) from `*at` into `out`
    /// within the limits (at least one if none is past `base`), moving `*at` past
    /// them; returns their approximate size. A decode error ends the record
    /// (CRC passed, so it is a bug or a foreign writer): the rest of it is
    /// skipped.
    fn take(&mut self, buf: &[u8], at: &mut usize, max_events: usize, max_bytes: usize) -> usize {
        let mut bytes = 0;
        // Only events decoded by this call are known to be the decoder's
        // previous one (a batch handed out since may have been changed).
        let first = self.out.len();
        while *at < buf.len() && self.out.len() - self.base < max_events {
            if self.out.len() > self.base && bytes >= max_bytes {
                break;
            }
            let mut e = self
                .pool
                .pop()
                .unwrap_or_else(|| Event::new(0, Origin::Docker, Vec::new()));
            let mut next = *at;
            let prev = self.out[first..].last();
            if let Err(err) = self.decoder.decode_after(buf, &mut next, &mut e, prev) {
                self.failed = Some(err);
                self.pool.push(e);
                *at = buf.len();
                break;
            }
            *at = next;
            bytes += e.approx_size();
            self.out.push(e);
        }
        bytes
    }
}

/// Logs and counts a record found damaged after the spool was opened (the
/// disk changed under a running weir; damage present at open was repaired
/// then), and moves the reader past it: to the next valid record of the
/// segment, as recovery would (see `repair`), else to the next segment or
/// the readable end of the last one.
fn corrupt(r: &mut Reader, plan: &Plan, reason: &'static str) {
    r.spool.shared().metrics.corrupt.inc();
    let to_file = |o: Offset| plan.header_len + (o - plan.base);
    let next = r.file.as_ref().and_then(|(_, f)| {
        super::repair::next_valid(f, to_file(r.read) + HEADER_LEN as u64, to_file(plan.limit))
            .ok()
            .flatten()
    });
    tracing::error!(
        segment_base = plan.base,
        offset = r.read,
        reason,
        resumed = next.is_some(),
        "spool record damaged on disk; skipped it (resumed at the next valid record if any, else at the next segment)"
    );
    if let Some(pos) = next {
        r.read = plan.base + (pos - plan.header_len);
        return;
    }
    let st = r.spool.shared().lock();
    r.read = match st.segments.range(plan.base + 1..).next() {
        Some((&next, _)) => next,
        None => plan.limit,
    };
}

/// Reads up to `len` bytes at `pos` into the start of `buf`; returns how
/// many (fewer only at the end of the file). `buf` only grows, so it is
/// zeroed only where it grows, not before every read (that memset cost
/// about 60 instructions per event delivered).
fn read_at(file: &File, buf: &mut Vec<u8>, len: usize, pos: u64) -> Result<usize, SpoolError> {
    if buf.len() < len {
        buf.resize(len, 0);
    }
    let mut n = 0;
    while n < len {
        match file.read_at(&mut buf[n..len], pos + n as u64) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(source) => {
                return Err(SpoolError::Io {
                    what: "reading a segment",
                    source,
                })
            }
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::super::tests::config;
    use super::super::WhenFull;
    use super::*;

    fn ev(i: u64) -> Event {
        Event::new(i as i64, Origin::Docker, format!("event number {i:08}"))
    }

    /// A spool in `d` with one sink, "a", and `records` appended durably,
    /// one record each.
    async fn spool_with(d: &std::path::Path, records: &[&[Event]]) -> Spool {
        let cfg = config(64 << 10, 1 << 30, WhenFull::DropOldest);
        let s = Spool::open(d, &cfg, &["a".to_string()]).unwrap();
        for record in records {
            let end = s.append(record, None).await.unwrap();
            s.wait_durable(end).await.unwrap();
        }
        s
    }

    /// A batch gathered from several reads: each read's limits count only
    /// what it appends, and each still returns at least one event; the
    /// events appended follow those already there, in spool order.
    #[tokio::test]
    async fn reads_append_with_limits_of_their_own() {
        let d = tempfile::tempdir().unwrap();
        let evs: Vec<Event> = (0..10).map(ev).collect();
        let s = spool_with(d.path(), &[&evs[..6], &evs[6..]]).await;
        let mut r = s.reader("a").unwrap();
        let mut batch = vec![ev(99)];
        // 4 of the first record's 6: the one already there is not counted.
        let (at, bytes) = r.read_into(&mut batch, 4, 1 << 20).await.unwrap();
        assert_eq!(batch[1..], evs[..4]);
        assert_eq!(at, 0, "the first record is not passed yet");
        // The size of what it appended, as decoded.
        let size: usize = evs[..4].iter().map(Event::approx_size).sum();
        assert_eq!(bytes, size);
        // A byte limit below one event still appends one.
        r.read_into(&mut batch, 100, 1).await.unwrap();
        assert_eq!(batch[1..], evs[..5]);
        // The rest of the first record, then the second.
        while batch.len() < 11 {
            let before = batch.len();
            let (_, bytes) = r.read_into(&mut batch, 100, 1 << 20).await.unwrap();
            let size: usize = batch[before..].iter().map(Event::approx_size).sum();
            assert_eq!(bytes, size);
        }
        assert_eq!(batch[0], ev(99));
        assert_eq!(batch[1..], evs[..]);
        // Nothing more is durable: a read waits, and cancelling it appends
        // nothing.
        let wait = tokio::time::timeout(
            std::time::Duration::from_millis(50),
            r.read_into(&mut batch, 100, 1 << 20),
        );
        assert!(wait.await.is_err());
        assert_eq!(batch.len(), 11);
    }

    /// A reader drops the pages it read only when every other sink has read
    /// past them: a slower sink must still find them cached.
    #[tokio::test]
    async fn only_the_last_reader_of_records_drops_their_pages() {
        let d = tempfile::tempdir().unwrap();
        let cfg = config(64 << 10, 1 << 30, WhenFull::DropOldest);
        let s = Spool::open(d.path(), &cfg, &["a".to_string(), "b".to_string()]).unwrap();
        let evs: Vec<Event> = (0..10).map(ev).collect();
        let end = s.append(&evs, None).await.unwrap();
        s.wait_durable(end).await.unwrap();
        let (mut a, mut b) = (s.reader("a").unwrap(), s.reader("b").unwrap());
        assert!(!a.plan().expect("a has a record to read").last_reader);
        assert!(!b.plan().expect("b has a record to read").last_reader);
        let got = b.next_batch(100, 1 << 20).await.unwrap();
        assert_eq!(got.events, evs);
        assert!(a.plan().expect("a has not read it").last_reader);
        let got = a.next_batch(100, 1 << 20).await.unwrap();
        assert_eq!(got.events, evs);
        // Alone, a sink is always the last reader.
        let d = tempfile::tempdir().unwrap();
        let s = spool_with(d.path(), &[&evs]).await;
        assert!(s.reader("a").unwrap().plan().unwrap().last_reader);
    }

    /// The emptied `Vec` of a recycled batch is the next one handed out.
    #[tokio::test]
    async fn a_recycled_batch_vec_is_reused() {
        let d = tempfile::tempdir().unwrap();
        let evs: Vec<Event> = (0..100).map(ev).collect();
        let s = spool_with(d.path(), &[&evs]).await;
        let mut r = s.reader("a").unwrap();
        let mut first = r.take_spare();
        assert_eq!(first.capacity(), 0);
        first.reserve(500);
        let cap = first.capacity();
        r.read_into(&mut first, 100, 1 << 20).await.unwrap();
        r.recycle(first);
        let again = r.take_spare();
        assert!(again.is_empty());
        assert_eq!(again.capacity(), cap);
    }
}
