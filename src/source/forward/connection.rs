//! One client connection: read at full speed, frame, decode, append to the
//! spool in batches, acknowledge chunks once they are durable.
//!
//! Reading never waits for an fsync: a separate task per connection waits
//! for each chunk's spool offset to become durable and then writes
//! `{"ack": chunk}`, in order. Everything decoded from one socket read is
//! appended as one batch (per-event appends would cost a spool round trip
//! each), into events reused from earlier batches ([`super::batch`]). A batch
//! is appended once full ([`super::batch::FULL`] events or [`super::batch::FULL_BYTES`]),
//! in the middle of a frame if need be. The only wait in the read loop is the spool append itself, which
//! blocks only when the spool's `when_full = "block"` policy says so.
//!
//! # Memory
//!
//! Each connection reads into a buffer of [`FREE`] bytes of its own. A
//! frame that does not fit (and the inflated data of a gzip frame) is held
//! on the source's shared budget (`max_buffered_bytes`, [`crate::net::budget`]):
//! the buffer grows only once the budget granted it, so what all
//! connections hold is bounded whatever their number, and shrinks back to
//! [`FREE`] (giving the budget back) once the big frame is consumed.
//!
//! Bad input closes only this connection (or skips one event when the frame
//! boundaries are still known), is counted by reason and logged without
//! payload. Events decoded before the bad frame are kept.

use std::time::Instant;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, WriteHalf};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::batch::Batch;
use super::decode::{self, DecodeError, FrameDecoder, Record};
use super::frame::{self, Scan};
use super::partial::Assembler;
use super::{docker, handshake, Shared};
use crate::ingest::Ingest;
use crate::net::{Flow, Share, Slot};
use crate::spool::Offset;

/// Bytes asked of the socket per read, at most (and the room a growing
/// buffer gets beyond what it holds).
const READ_SIZE: usize = 64 * 1024;
/// A connection's own read buffer, not counted on the shared budget: a
/// Docker event (a 16 KiB piece of a line and its metadata) fits, so a
/// client of small frames never waits on the budget, however busy it is.
const FREE: usize = READ_SIZE;
/// A read gets at least this much room; with less, the buffer is moved or
/// grown first.
const MIN_READ: usize = 4 * 1024;
/// Acks queued for the acker, at most: with [`super::decode::MAX_CHUNK_BYTES`],
/// what a client that never reads its acks can make weir hold. Past it the
/// connection stops reading until the acks drain.
const MAX_PENDING_ACKS: usize = 1024;
/// Events decoded between two checks of the batch's budget.
const STEP: usize = 64;
/// A batch that took this long to decode, scrub and append is followed by
/// a yield to the runtime. Without it a connection with more to decode
/// goes on at once, and tokio polls sockets, timers and tasks woken by
/// other threads (the spool's syncer: acks) only every 61 task polls: 16
/// clients sending long lines, 20-60 ms a batch in a debug build, held a
/// valid client's ack for over a second. (A yielding task is resumed only
/// after the runtime has polled its driver.)
const LONG_TURN: std::time::Duration = std::time::Duration::from_millis(1);
/// At shutdown, how long to take bytes a client already sent, in all.
const DRAIN_WAIT: std::time::Duration = std::time::Duration::from_millis(50);

/// Serves one client until it disconnects, sends bad input, or `shutdown`.
///
/// The connection gives up its slot (closes, acknowledging nothing more) when
/// `slot` is asked to give way, and closes when it has sent nothing within
/// `idle_timeout` of connecting.
pub async fn serve<S>(
    mut stream: S,
    peer: String,
    shared: &Shared,
    slot: &Slot,
    shutdown: CancellationToken,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let m = &shared.metrics;
    let mut buf = BytesMut::with_capacity(FREE);

    if let Some(auth) = &shared.auth {
        let timeout = shared.handshake_timeout;
        let done = tokio::select! {
            d = tokio::time::timeout(timeout, handshake::server(&mut stream, auth, &mut buf)) => d,
            _ = slot.give_way().cancelled() => {
                m.decode_error("gave_way");
                return;
            }
        };
        match done {
            Ok(Ok(())) => slot.touch(),
            Ok(Err(e)) => {
                m.decode_error(e.reason());
                tracing::warn!(source = %shared.name, peer = %peer, error = %e, "handshake failed; connection closed");
                return;
            }
            Err(_) => {
                m.decode_error("handshake_timeout");
                tracing::warn!(source = %shared.name, peer = %peer, ?timeout, "shared-key handshake not finished in time (handshake_timeout); connection closed");
                return;
            }
        }
    }
    // A connection that never sends must not keep its slot for long.
    let mut silent_until = Some(Instant::now() + shared.idle_timeout);
    // The two ways a connection is told to stop, as one future made once.
    // Made anew for every read, each `cancelled()` took its token's lock to
    // register and again to unregister (a sixth of what a read cost besides
    // the event itself, callgrind); and the source's shutdown token is
    // shared by all its connections, so that lock moved between the cores
    // for every Docker event (one event per read). The child token is this
    // connection's alone.
    let shutdown = shutdown.child_token();
    let stop = async {
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => Stop::Shutdown,
            _ = slot.give_way().cancelled() => Stop::GiveWay,
        }
    };
    tokio::pin!(stop);

    let (mut rd, wr) = tokio::io::split(stream);
    let (acks, ack_rx) = mpsc::channel(MAX_PENDING_ACKS);
    let acker = tokio::spawn(ack_loop(wr, ack_rx, shared.ingest.clone()));
    let mut conn = Conn {
        shared,
        peer: &peer,
        batch: Batch::new(&shared.spares),
        chunks: Vec::new(),
        assembler: Assembler::new(
            shared.partial_max_bytes,
            shared.partial_timeout,
            shared.partial_budget.clone(),
        ),
        last_offset: 0,
        acks,
        frame: None,
        give_way: slot.give_way(),
        share: shared.buffers.share(slot.give_way().clone()),
        buffer_charge: 0,
        flow: Flow::default(),
        inflate_room: 0,
        record: Record::default(),
        spooled: shared.ingest.spooled(&shared.name),
        scanner: frame::Scanner::default(),
        decoded: 0,
        reads: 0,
        tags: decode::TagCache::default(),
    };
    // Largest buffer: a frame at the limit and one read past it.
    let max_buffer = shared.limits.frame.max_bytes + READ_SIZE;
    // Do not scan again before the buffer holds this many bytes.
    let mut need = 1;
    // Set at shutdown: until when bytes the client already sent are taken.
    // One deadline for the whole drain, not one per read: a client that
    // keeps sending (every ack answered by its next record) would otherwise
    // hold a reload or a stop for as long as it has records.
    let mut stopping: Option<Instant> = None;
    loop {
        if let Some(capacity) = resize(
            buf.len(),
            buf.capacity(),
            conn.buffer_charge > 0,
            need,
            max_buffer,
        ) {
            let charge = capacity.saturating_sub(FREE);
            if charge > conn.share.bytes() {
                if stopping.is_some() {
                    break;
                }
                // Wait for the budget without reading: only this client slows.
                let grown = tokio::select! {
                    biased;
                    _ = shutdown.cancelled() => break,
                    _ = slot.give_way().cancelled() => {
                        m.decode_error("gave_way");
                        tracing::debug!(source = %shared.name, peer = %peer, "connection gave way while waiting for the buffer budget");
                        break;
                    }
                    g = conn.share.grow_to(charge) => g,
                };
                if let Err(e) = grown {
                    conn.reject("buffer_budget", &format!("{e}; raise max_buffered_bytes"));
                    break;
                }
            }
            let mut moved = BytesMut::with_capacity(capacity);
            moved.extend_from_slice(&buf);
            buf = moved;
            conn.buffer_charge = charge;
            conn.share.shrink_to(charge);
        }
        let deadline = conn.assembler.next_deadline();
        let read = if let Some(drained_by) = stopping {
            // Shutting down: take what the client already sent (it is in
            // the kernel's buffer and would be lost with the connection),
            // but do not wait for more.
            match tokio::time::timeout_at(drained_by.into(), rd.read_buf(&mut buf)).await {
                Ok(r) => r,
                Err(_) => break,
            }
        } else {
            // Told to stop: looked at here, for two atomic loads; `stop` is
            // polled (taking its tokens' locks) only when there is nothing
            // to read, so that it wakes this task if it comes meanwhile.
            let stopped = if shutdown.is_cancelled() {
                Some(Stop::Shutdown)
            } else if slot.give_way().is_cancelled() {
                Some(Stop::GiveWay)
            } else {
                None
            };
            let woke = match stopped {
                Some(why) => Err(why),
                None => tokio::select! {
                    biased;
                    _ = sleep_until(silent_until), if silent_until.is_some() => {
                        m.decode_error("idle_timeout");
                        tracing::debug!(source = %shared.name, peer = %peer, "connection sent nothing within idle_timeout; closed");
                        break;
                    }
                    _ = sleep_until(deadline), if deadline.is_some() => {
                        conn.assembler.expire(Instant::now(), &mut conn.batch);
                        if !conn.flush().await {
                            break;
                        }
                        continue;
                    }
                    r = rd.read_buf(&mut buf) => Ok(r),
                    // (Not polled again once done: `stopping` is set, or
                    // the loop ends.)
                    why = &mut stop => Err(why),
                },
            };
            match woke {
                Ok(read) => read,
                Err(Stop::Shutdown) => {
                    stopping = Some(Instant::now() + DRAIN_WAIT);
                    continue;
                }
                Err(Stop::GiveWay) => {
                    // A new connection needs the slot, or a waiting one the
                    // budget this one holds: close without reading on (the
                    // client resends what was not acked).
                    m.decode_error("gave_way");
                    tracing::debug!(source = %shared.name, peer = %peer, "idle connection gave way to a new one or to the buffer budget");
                    break;
                }
            }
        };
        match read {
            Ok(0) => {
                if !buf.is_empty() {
                    conn.reject("truncated", "connection closed in the middle of a frame");
                }
                break;
            }
            Ok(n) => {
                m.bytes.add(n as u64);
                conn.reads += 1;
                slot.touch();
                conn.share.touch();
                silent_until = None;
            }
            Err(e) => {
                tracing::debug!(source = %shared.name, peer = %peer, error = %e, "read failed; connection closed");
                break;
            }
        }
        if buf.len() < need {
            continue;
        }
        conn.share.set_busy(true);
        let processed = conn.process(&mut buf).await;
        conn.share.set_busy(false);
        match processed {
            Ok(at_least) => need = at_least,
            Err(()) => break,
        }
    }
    conn.assembler.drain(&mut conn.batch);
    conn.flush().await;
    m.reads.add(conn.reads);
    drop(conn);
    // The acker ends once it has sent every ack queued above.
    let _ = acker.await;
}

/// Why a connection stops reading.
enum Stop {
    /// The source is shutting down: take what the client already sent.
    Shutdown,
    /// Its slot or budget share is wanted elsewhere: close now.
    GiveWay,
}

/// How far [`Conn::decode_frames`] got.
enum Progress {
    /// Every complete frame was decoded; scan again once the buffer holds
    /// this many bytes.
    NeedMore(usize),
    /// The next frame (in [`Conn::frame`]) is gzip data: inflate it, then
    /// decode it.
    NeedInflate,
    /// The batch is full: append it, then continue with the same buffer.
    BatchFull,
}

struct Conn<'a> {
    shared: &'a Shared,
    peer: &'a str,
    /// Events decoded since the last append (reused across appends).
    batch: Batch<'a>,
    /// Chunks of frames decoded since the last append, in order.
    chunks: Vec<String>,
    assembler: Assembler,
    /// The spool offset just past this connection's last append.
    last_offset: Offset,
    acks: mpsc::Sender<(Offset, String)>,
    /// A frame at the start of the buffer, partly decoded (its length and
    /// where its decoding stopped when the batch filled up).
    frame: Option<(usize, FrameDecoder)>,
    /// Cancelled when the connection must give its slot up.
    give_way: &'a CancellationToken,
    /// What this connection holds of the source's buffer budget: its read
    /// buffer beyond [`FREE`] (`buffer_charge`), plus the inflated data of
    /// the frame being decoded.
    share: Share,
    buffer_charge: usize,
    /// This connection's use of the source's batch turns, for its place
    /// in line.
    flow: Flow,
    /// Room to set aside for the next inflate: more than the first guess
    /// once that proved too small (see [`Conn::inflate`]).
    inflate_room: usize,
    /// The record every read is decoded into, emptied (its entry list is
    /// allocated once per connection, not once per read).
    record: Record<'static>,
    /// `weir_source_events_spooled_total` of the source, looked up once.
    spooled: crate::metrics::Counter,
    /// Frames the frame at the start of the buffer, across reads.
    scanner: frame::Scanner,
    /// Events decoded by this [`Conn::decode_frames`], counted once it
    /// returns (`weir_source_events_received_total` is shared by the
    /// source's connections: one atomic add per read, not per event).
    decoded: u64,
    /// Reads since `weir_source_reads_total` was last added to (with the
    /// events, in [`Conn::decode_frames`], and when the connection ends).
    reads: u64,
    /// The client's tag as text, checked once, not once per frame.
    tags: decode::TagCache,
}

impl Conn<'_> {
    /// Decodes and appends every complete frame in `buf`, removing them.
    /// Returns the buffer length to wait for, or `Err` when the connection
    /// must close (bad input, already counted and logged, or spool failure).
    async fn process(&mut self, buf: &mut BytesMut) -> Result<usize, ()> {
        loop {
            // Decoding and appending a batch needs one of the source's
            // turns (see `BATCHES_IN_FLIGHT`), fairly shared: the connection
            // that used the least of them goes first. Queueing acks, which
            // may wait on a client, does not hold one.
            let turn = tokio::select! {
                biased;
                t = self.shared.batches.take(self.flow) => t,
                _ = self.give_way.cancelled() => {
                    self.shared.metrics.decode_error("gave_way");
                    return Err(());
                }
            };
            let (consumed, result) = self.decode_frames(buf);
            buf.advance(consumed);
            let appended = self.append().await;
            let held = turn.held();
            self.flow = turn.end();
            if !appended || !self.queue_acks().await {
                return Err(());
            }
            if held >= LONG_TURN {
                // Let the runtime poll its sockets and timers before this
                // connection's next batch (see `LONG_TURN`).
                tokio::task::yield_now().await;
            }
            let need_budget = match result {
                Ok(Progress::BatchFull) => continue,
                Ok(Progress::NeedMore(at_least)) => return Ok(at_least),
                Ok(Progress::NeedInflate) => match self.inflate(buf).await {
                    Ok(None) => continue,
                    Ok(Some(bytes)) => bytes,
                    Err(Some(e)) => {
                        self.reject(e.reason(), &e.to_string());
                        return Err(());
                    }
                    Err(None) => return Err(()),
                },
                Err(e) => {
                    self.reject(e.reason(), &e.to_string());
                    return Err(());
                }
            };
            // Waiting here holds no batch permit, and may be asked to give
            // way (two such waiters must not deadlock), but only after
            // those stalled on their clients: this frame is whole.
            self.share.set_busy(false);
            self.share.set_whole(true);
            let grown = tokio::select! {
                biased;
                _ = self.give_way.cancelled() => {
                    self.shared.metrics.decode_error("gave_way");
                    return Err(());
                }
                g = self.share.grow_to(need_budget) => g,
            };
            self.share.set_whole(false);
            self.share.set_busy(true);
            if let Err(e) = grown {
                self.reject(
                    "buffer_budget",
                    &format!("gzip frame: {e}; raise max_buffered_bytes"),
                );
                return Err(());
            }
        }
    }

    /// Inflates the gzip frame at the start of `buf` ([`Conn::frame`]) on
    /// the source's inflating threads ([`super::inflate`]), so that a big
    /// inflate holds up no other client's connection. What it takes is held on the source's budget before it
    /// is taken: the copy of the gzip data and room for the inflated data,
    /// first four times the gzip size (at least 1 MiB), four times more
    /// each time that proves too small, up to `max_decompressed_bytes`;
    /// after, the inflated data until the frame is done. Without room on
    /// the budget, the frame is forgotten and `Ok(Some(bytes))` says the
    /// share to wait for before it is decoded (and inflated) again.
    /// `Err(Some)`: bad gzip, to report.
    async fn inflate(&mut self, buf: &BytesMut) -> Result<Option<usize>, Option<DecodeError>> {
        let Some((len, frame)) = self.frame.as_mut() else {
            return Ok(None);
        };
        let Some(gz) = frame.compressed(&buf[..*len]) else {
            return Ok(None);
        };
        let limit = self.shared.limits.max_decompressed_bytes;
        let gz_len = gz.len();
        let room = self.inflate_room.max((gz_len * 4).max(1 << 20)).min(limit);
        let want = self.buffer_charge + gz_len + room;
        if !self.share.try_grow_to(want) {
            self.frame = None;
            return Ok(Some(want));
        }
        // Not given up when the connection is asked to give way: the
        // memory is held until the inflate ends, and so is the share.
        let inflated = self.shared.inflater.inflate(gz.to_vec(), room).await;
        let data = match inflated {
            Ok(data) => data,
            Err(DecodeError::DecompressedTooLarge { .. }) if room < limit => {
                // Wait for four times the room, then inflate again.
                self.inflate_room = room.saturating_mul(4).min(limit);
                self.frame = None;
                self.share.shrink_to(self.buffer_charge);
                return Ok(Some(self.buffer_charge + gz_len + self.inflate_room));
            }
            Err(e) => return Err(Some(e)),
        };
        self.inflate_room = 0;
        self.share.shrink_to(self.buffer_charge + data.capacity());
        frame.set_inflated(data);
        Ok(None)
    }

    /// Decodes the complete frames at the start of `buf` until the batch is
    /// full (possibly in the middle of a frame: [`Conn::frame`] remembers
    /// where). Returns the bytes of whole frames consumed and how far it got,
    /// or the error that must close the connection.
    fn decode_frames(&mut self, buf: &[u8]) -> (usize, Result<Progress, DecodeError>) {
        let mut record = std::mem::take(&mut self.record).reuse();
        let done = self.decode_frames_into(buf, &mut record);
        self.record = record.reuse();
        let decoded = std::mem::take(&mut self.decoded);
        if decoded > 0 {
            self.shared.metrics.events.add(decoded);
            self.shared
                .metrics
                .reads
                .add(std::mem::take(&mut self.reads));
        }
        done
    }

    /// [`Conn::decode_frames`], with the connection's record scratch.
    fn decode_frames_into<'b>(
        &mut self,
        buf: &'b [u8],
        record: &mut Record<'b>,
    ) -> (usize, Result<Progress, DecodeError>) {
        let shared = self.shared;
        let mut pos = 0;
        loop {
            let (len, frame) = match self.frame.take() {
                // A frame the last batch filled up in the middle of.
                Some(resume) => resume,
                None => {
                    // Docker's frames (Message mode, one event each) are
                    // decoded straight, not framed first; any other, or
                    // one not whole yet, is framed. (Not one partly framed
                    // already: that one is big and still arriving, and
                    // decoding it again on every read would be quadratic.)
                    if !self.scanner.started() {
                        if let Some(m) = decode::message(&buf[pos..], &shared.limits, record) {
                            let tag = self.tags.text(m.raw_tag);
                            take_event(&mut self.batch, &mut self.assembler, tag, record);
                            self.decoded += 1;
                            pos += m.len;
                            // (No inflated data to give back.)
                            if let Some(chunk) = m.chunk {
                                self.chunks.push(chunk);
                            }
                            if self.batch.is_full() {
                                return (pos, Ok(Progress::BatchFull));
                            }
                            continue;
                        }
                    }
                    let len = match self.scanner.scan(&buf[pos..], shared.limits.frame) {
                        Ok(Scan::Complete(n)) => n,
                        Ok(Scan::Incomplete { at_least }) => {
                            return (pos, Ok(Progress::NeedMore(at_least)))
                        }
                        Err(e) => return (pos, Err(e.into())),
                    };
                    let f = match FrameDecoder::open(&buf[pos..pos + len]) {
                        Ok(f) => f,
                        Err(e) => return (pos + len, Err(e)),
                    };
                    if f.compressed(&buf[pos..pos + len]).is_some() {
                        self.frame = Some((len, f));
                        return (pos, Ok(Progress::NeedInflate));
                    }
                    (len, f)
                }
            };
            let mut frame = frame;
            let bytes = &buf[pos..pos + len];
            let batch = &mut self.batch;
            let assembler = &mut self.assembler;
            let mut skipped = 0u32;
            let before = frame.events;
            let mut decoded = Ok(());
            // A few events at a time, so that the batch's budget is checked
            // often whatever the events' size.
            while !frame.is_done() && !batch.is_full() {
                decoded = frame.decode_some(
                    bytes,
                    &shared.limits,
                    record,
                    STEP,
                    &mut |tag, record| take_event(batch, assembler, tag, record),
                    &mut |e| {
                        skipped += 1;
                        shared.metrics.decode_error(e.reason());
                        if skipped == 1 {
                            tracing::warn!(source = %shared.name, peer = %self.peer, error = %e, "event skipped");
                        }
                    },
                );
                if decoded.is_err() {
                    break;
                }
            }
            self.decoded += (frame.events - before) as u64;
            if let Err(e) = decoded {
                return (pos + len, Err(e));
            }
            if !frame.is_done() {
                // Append what this frame gave so far, then go on with it.
                self.frame = Some((len, frame));
                return (pos, Ok(Progress::BatchFull));
            }
            pos += len;
            // Done: its inflated data is gone, give its budget back.
            self.share.shrink_to(self.buffer_charge);
            if let Some(chunk) = frame.chunk {
                self.chunks.push(chunk);
            }
            if self.batch.is_full() {
                // Leave the rest for the next round, after an append.
                return (pos, Ok(Progress::BatchFull));
            }
        }
    }

    /// Appends the pending events as one batch and queues the pending acks.
    /// Returns false when the spool refuses (the connection should close
    /// without acknowledging, so the client resends elsewhere or later).
    async fn flush(&mut self) -> bool {
        self.append().await && self.queue_acks().await
    }

    /// Appends the pending events as one batch; false when the spool refuses.
    async fn append(&mut self) -> bool {
        if !self.batch.is_empty() {
            let (events, memo) = self.batch.parts_mut();
            let appended = self
                .shared
                .ingest
                .append_counted(&self.shared.name, events, memo, &self.spooled, None)
                .await;
            self.batch.clear();
            match appended {
                Ok(offset) => self.last_offset = offset,
                Err(e) => {
                    tracing::error!(source = %self.shared.name, peer = %self.peer, error = %e, "spool append failed; closing the connection without acknowledging");
                    self.chunks.clear();
                    return false;
                }
            }
        }
        true
    }

    /// Queues the acks of the frames appended so far.
    async fn queue_acks(&mut self) -> bool {
        let busy = self.share.is_busy();
        for chunk in self.chunks.drain(..) {
            // When the queue is full (the client does not read its acks),
            // this waits: the connection stops reading until acks drain.
            // The acker is gone only if writing an ack failed. Waiting on
            // its client, it may be asked to give its budget share way.
            let item = match self.acks.try_send((self.last_offset, chunk)) {
                Ok(()) => continue,
                Err(mpsc::error::TrySendError::Closed(_)) => return false,
                Err(mpsc::error::TrySendError::Full(item)) => item,
            };
            self.share.set_busy(false);
            let sent = tokio::select! {
                biased;
                s = self.acks.send(item) => s.is_ok(),
                _ = self.give_way.cancelled() => false,
            };
            self.share.set_busy(busy);
            if !sent {
                return false;
            }
        }
        true
    }

    /// Counts and logs input that closes the connection.
    fn reject(&self, reason: &'static str, detail: &str) {
        self.shared.metrics.decode_error(reason);
        tracing::warn!(source = %self.shared.name, peer = %self.peer, reason, error = detail, "bad input; connection closed");
    }
}

/// Makes one decoded record the batch's next event.
fn take_event(batch: &mut Batch<'_>, assembler: &mut Assembler, tag: &str, record: &Record<'_>) {
    let (event, like) = batch.slot_like();
    if let Some(p) = docker::fill_event_like(event, like, tag, record) {
        // A piece of a long line: it waits in the assembler.
        let piece = batch.take_last();
        assembler.push(piece, p, Instant::now(), batch);
    } else {
        batch.count_last();
    }
}

/// Writes `{"ack": chunk}` for each chunk once its offset is durable, in order.
///
/// One write per ack, as Fluentd does: Docker's client (fluent-logger-golang)
/// reads each ack through a fresh buffered reader, so two acks coalesced in
/// one read would lose the second and make the driver time out and resend.
async fn ack_loop<W: AsyncWrite>(
    mut wr: WriteHalf<W>,
    mut rx: mpsc::Receiver<(Offset, String)>,
    ingest: Ingest,
) {
    let mut out = Vec::new();
    let mut durable: Offset = 0;
    while let Some((offset, chunk)) = rx.recv().await {
        if offset > durable {
            if let Err(e) = ingest.wait_durable(offset).await {
                tracing::error!(error = %e, "spool not durable; withholding acks (the client will resend)");
                return;
            }
            durable = offset;
        }
        out.clear();
        encode_ack(&mut out, &chunk);
        if wr.write_all(&out).await.is_err() {
            return;
        }
    }
    let _ = wr.shutdown().await;
}

fn encode_ack(out: &mut Vec<u8>, chunk: &str) {
    rmp::encode::write_map_len(out, 1).expect("vec");
    rmp::encode::write_str(out, "ack").expect("vec");
    rmp::encode::write_str(out, chunk).expect("vec");
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d.into()).await,
        None => std::future::pending().await,
    }
}

/// The capacity the read buffer should be given before the next read, or
/// `None` to keep it: back to [`FREE`] once it holds little (giving the
/// budget back, and the room before its data after frames were consumed),
/// larger when less than [`MIN_READ`] is left. It grows at least twofold,
/// or at once to the size the frame is known to need (`need`), so that a
/// big frame is copied a few times, not once per read, and asks the budget
/// for its whole size early; never past `max`.
fn resize(len: usize, capacity: usize, charged: bool, need: usize, max: usize) -> Option<usize> {
    let spare = capacity - len;
    if len <= FREE / 2 {
        return (charged || spare < MIN_READ).then_some(FREE);
    }
    if spare >= MIN_READ {
        return None;
    }
    let grown = (2 * len)
        .max(len + READ_SIZE)
        .max(need.saturating_add(READ_SIZE))
        .min(max)
        .max(len + MIN_READ);
    Some(grown)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: usize = (16 << 20) + READ_SIZE;

    /// Over a grid of states: a read always gets at least MIN_READ of room,
    /// a buffer holding little is never kept charged, and a new buffer is
    /// never bigger than the largest frame and a read (or what it holds
    /// plus MIN_READ).
    #[test]
    fn every_state_leaves_room_to_read_and_stays_within_bounds() {
        let sizes = [
            0,
            1,
            100,
            4095,
            4096,
            20_000,
            FREE / 2,
            FREE / 2 + 1,
            FREE - 1,
            FREE,
            FREE + 1,
            1 << 20,
            (16 << 20) - 1,
            16 << 20,
            MAX - 1,
            MAX,
        ];
        for &len in &sizes {
            for &extra in &[0, 1, MIN_READ - 1, MIN_READ, READ_SIZE, 1 << 20] {
                let capacity = len + extra;
                for charged in [false, true] {
                    for &need in &[len + 1, len + 10, 1 << 20, 15 << 20, 16 << 20] {
                        match resize(len, capacity, charged, need, MAX) {
                            None => {
                                assert!(capacity - len >= MIN_READ);
                                assert!(!charged || len > FREE / 2, "{len} {capacity}");
                            }
                            Some(c) => {
                                assert!(c >= len + MIN_READ, "{len} {capacity} {need} -> {c}");
                                assert!(c <= MAX.max(len + MIN_READ), "{len} -> {c}");
                                if len <= FREE / 2 {
                                    assert_eq!(c, FREE);
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    /// What `inflate` sets aside is what the inflated data may take, even
    /// while it grows (a doubling buffer took up to twice the limit).
    #[test]
    fn gunzip_never_takes_more_than_its_limit() {
        use std::io::Write;
        let member = |data: &[u8]| {
            let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            enc.write_all(data).unwrap();
            enc.finish().unwrap()
        };
        // Two members, as concatenated gzip frames may be.
        let mut gz = member(&vec![b'a'; (5 << 20) + 7]);
        gz.extend_from_slice(&member(b"tail"));
        let size = (5 << 20) + 11;
        for limit in [size, size + 1, 8 << 20] {
            let out = super::super::decode::gunzip(&gz, limit).unwrap();
            assert_eq!(out.len(), size);
            assert!(out.ends_with(b"atail"));
            assert!(out.capacity() <= limit + 1, "{} > {limit}", out.capacity());
        }
        for limit in [0, 1000, size - 1] {
            assert!(matches!(
                super::super::decode::gunzip(&gz, limit),
                Err(DecodeError::DecompressedTooLarge { limit: l }) if l == limit
            ));
        }
        assert_eq!(super::super::decode::gunzip(&member(b""), 0).unwrap(), b"");
        assert!(matches!(
            super::super::decode::gunzip(&gz[..100], 8 << 20),
            Err(DecodeError::BadGzip)
        ));
    }

    #[test]
    fn small_frames_stay_in_the_free_buffer() {
        // Room enough: keep it.
        assert_eq!(resize(0, FREE, false, 1, MAX), None);
        assert_eq!(resize(20_000, FREE, false, 20_001, MAX), None);
        // Little room left after frames were consumed: move the rest to
        // the start of a fresh free buffer, still uncharged.
        assert_eq!(resize(100, 2_000, false, 101, MAX), Some(FREE));
    }

    #[test]
    fn a_big_frame_grows_geometrically_or_at_once_and_shrinks_back() {
        // Forward mode: the scan knows only the next entry.
        assert_eq!(
            resize(FREE - 100, FREE, false, FREE + 10, MAX),
            Some(FREE + 10 + READ_SIZE)
        );
        assert_eq!(resize(1 << 20, 1 << 20, true, 1 << 20, MAX), Some(2 << 20));
        // PackedForward: the bin's header says the frame is 15 MiB.
        assert_eq!(
            resize(FREE - 100, FREE, false, 15 << 20, MAX),
            Some((15 << 20) + READ_SIZE)
        );
        // Never past the largest frame and one read.
        assert_eq!(resize(12 << 20, 12 << 20, true, 13 << 20, MAX), Some(MAX));
        // Consumed: back to the free buffer, the budget given back.
        assert_eq!(resize(10, 5 << 20, true, 11, MAX), Some(FREE));
    }
}
