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
//! Bad input closes only this connection (or skips one event when the frame
//! boundaries are still known), is counted by reason and logged without
//! payload. Events decoded before the bad frame are kept.

use std::time::Instant;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, WriteHalf};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::batch::Batch;
use super::decode::{DecodeError, FrameDecoder, Record};
use super::frame::{self, Scan};
use super::partial::Assembler;
use super::{docker, handshake, Shared};
use crate::ingest::Ingest;
use crate::net::Slot;
use crate::spool::Offset;

/// Bytes asked of the socket per read.
const READ_SIZE: usize = 64 * 1024;
/// An idle buffer larger than this is given back to the allocator (after one
/// big frame, do not keep 16 MiB per connection).
const KEEP_CAPACITY: usize = 1 << 20;
/// Acks queued for the acker, at most: with [`super::decode::MAX_CHUNK_BYTES`],
/// what a client that never reads its acks can make weir hold. Past it the
/// connection stops reading until the acks drain.
const MAX_PENDING_ACKS: usize = 1024;
/// Events decoded between two checks of the batch's budget.
const STEP: usize = 64;
/// At shutdown, how long to wait for bytes a client already sent.
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
    let mut buf = BytesMut::with_capacity(READ_SIZE);

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
    };
    // Do not scan again before the buffer holds this many bytes.
    let mut need = 1;
    let mut stopping = false;
    loop {
        buf.reserve(READ_SIZE);
        let deadline = conn.assembler.next_deadline();
        let read = if stopping {
            // Shutting down: take what the client already sent (it is in
            // the kernel's buffer and would be lost with the connection),
            // but do not wait for more.
            match tokio::time::timeout(DRAIN_WAIT, rd.read_buf(&mut buf)).await {
                Ok(r) => r,
                Err(_) => break,
            }
        } else {
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => {
                    stopping = true;
                    continue;
                }
                _ = slot.give_way().cancelled() => {
                    // A new connection needs the slot: close without
                    // reading on (the client resends what was not acked).
                    m.decode_error("gave_way");
                    tracing::debug!(source = %shared.name, peer = %peer, "idle connection gave way to a new one");
                    break;
                }
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
                r = rd.read_buf(&mut buf) => r,
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
                slot.touch();
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
        match conn.process(&mut buf).await {
            Ok(at_least) => need = at_least,
            Err(()) => break,
        }
        if buf.is_empty() && buf.capacity() > KEEP_CAPACITY {
            buf = BytesMut::with_capacity(READ_SIZE);
        }
    }
    conn.assembler.drain(&mut conn.batch);
    conn.flush().await;
    drop(conn);
    // The acker ends once it has sent every ack queued above.
    let _ = acker.await;
}

/// How far [`Conn::decode_frames`] got.
enum Progress {
    /// Every complete frame was decoded; scan again once the buffer holds
    /// this many bytes.
    NeedMore(usize),
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
}

impl Conn<'_> {
    /// Decodes and appends every complete frame in `buf`, removing them.
    /// Returns the buffer length to wait for, or `Err` when the connection
    /// must close (bad input, already counted and logged, or spool failure).
    async fn process(&mut self, buf: &mut BytesMut) -> Result<usize, ()> {
        loop {
            // Decoding and appending a batch needs one of the source's
            // batch permits (see `BATCHES_IN_FLIGHT`); queueing acks, which
            // may wait on a client, does not hold it.
            let permit = tokio::select! {
                biased;
                p = self.shared.batches.acquire() => p.expect("the semaphore is never closed"),
                _ = self.give_way.cancelled() => {
                    self.shared.metrics.decode_error("gave_way");
                    return Err(());
                }
            };
            let (consumed, result) = self.decode_frames(buf);
            buf.advance(consumed);
            let appended = self.append().await;
            drop(permit);
            if !appended || !self.queue_acks().await {
                return Err(());
            }
            match result {
                Ok(Progress::BatchFull) => continue,
                Ok(Progress::NeedMore(at_least)) => return Ok(at_least),
                Err(e) => {
                    self.reject(e.reason(), &e.to_string());
                    return Err(());
                }
            }
        }
    }

    /// Decodes the complete frames at the start of `buf` until the batch is
    /// full (possibly in the middle of a frame: [`Conn::frame`] remembers
    /// where). Returns the bytes of whole frames consumed and how far it got,
    /// or the error that must close the connection.
    fn decode_frames(&mut self, buf: &[u8]) -> (usize, Result<Progress, DecodeError>) {
        let shared = self.shared;
        let mut pos = 0;
        let now = Instant::now();
        // One record scratch for every frame of this buffer.
        let mut record = Record::default();
        loop {
            let (len, frame) = match self.frame.take() {
                // A frame the last batch filled up in the middle of.
                Some(resume) => resume,
                None => {
                    let len = match frame::scan(&buf[pos..], shared.limits.frame) {
                        Ok(Scan::Complete(n)) => n,
                        Ok(Scan::Incomplete { at_least }) => {
                            return (pos, Ok(Progress::NeedMore(at_least)))
                        }
                        Err(e) => return (pos, Err(e.into())),
                    };
                    match FrameDecoder::start(&buf[pos..pos + len], &shared.limits) {
                        Ok(f) => (len, f),
                        Err(e) => return (pos + len, Err(e)),
                    }
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
                    &mut record,
                    STEP,
                    &mut |tag, record| {
                        if let Some(p) = docker::fill_event(batch.slot(), tag, record) {
                            // A piece of a long line: it waits in the assembler.
                            let piece = batch.take_last();
                            assembler.push(piece, p, now, batch);
                        } else {
                            batch.count_last();
                        }
                    },
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
            shared.metrics.events.add((frame.events - before) as u64);
            if let Err(e) = decoded {
                return (pos + len, Err(e));
            }
            if !frame.is_done() {
                // Append what this frame gave so far, then go on with it.
                self.frame = Some((len, frame));
                return (pos, Ok(Progress::BatchFull));
            }
            pos += len;
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
                .append_batch_with(&self.shared.name, events, memo, None)
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
        for chunk in self.chunks.drain(..) {
            // When the queue is full (the client does not read its acks),
            // this waits: the connection stops reading until acks drain.
            // The acker is gone only if writing an ack failed.
            let sent = tokio::select! {
                biased;
                s = self.acks.send((self.last_offset, chunk)) => s.is_ok(),
                _ = self.give_way.cancelled() => false,
            };
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
