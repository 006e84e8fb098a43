//! Decoding one Forward protocol frame into timestamped records.
//!
//! A frame is `[tag, ...]` in one of four modes, told apart by the type of
//! the second element:
//!
//! | mode                    | frame                                            |
//! |-------------------------|--------------------------------------------------|
//! | Message                 | `[tag, time, record, option?]`                   |
//! | Forward                 | `[tag, [[time, record], ...], option?]`          |
//! | PackedForward           | `[tag, bin(concatenated [time, record]), option?]` |
//! | CompressedPackedForward | as PackedForward, `option.compressed = "gzip"`   |
//!
//! `time` is an integer (seconds) or EventTime (ext type 0: u32 seconds, u32
//! nanoseconds, big-endian). `option` may carry `chunk` (answer with
//! `{"ack": chunk}`), `size` (number of events) and `compressed`.
//!
//! The reader borrows from the frame bytes: the tag, keys and string values
//! are slices into the read buffer, so decoding allocates only for the
//! record's entry list (one per read buffer with [`decode_frame_with`]) and
//! for decompression. Errors carry reasons and
//! sizes only, never bytes from the wire.

use std::borrow::Cow;
use std::io::Read;

use super::frame::{self, Limits};

/// Why a frame, or one event in it, could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The frame's structure is wrong; the stream is still in sync, but what
    /// the client meant is unknown: the connection is closed.
    #[error("bad frame: {0}")]
    BadFrame(&'static str),
    /// One event is unusable and is skipped; the rest of the frame is kept.
    #[error("bad event: {0}")]
    BadEvent(&'static str),
    #[error("gzip data is corrupt")]
    BadGzip,
    #[error("decompressed entries larger than {limit} bytes")]
    DecompressedTooLarge { limit: usize },
    #[error(transparent)]
    Frame(#[from] frame::FrameError),
}

impl DecodeError {
    /// The `reason` label of `weir_source_decode_errors_total`.
    pub fn reason(&self) -> &'static str {
        match self {
            DecodeError::BadFrame(_) => "bad_frame",
            DecodeError::BadEvent(_) => "bad_event",
            DecodeError::BadGzip => "bad_gzip",
            DecodeError::DecompressedTooLarge { .. } => "decompressed_too_large",
            DecodeError::Frame(frame::FrameError::BadMarker(_)) => "malformed",
            DecodeError::Frame(frame::FrameError::TooLarge { .. }) => "frame_too_large",
            DecodeError::Frame(frame::FrameError::TooDeep { .. }) => "too_deep",
        }
    }
}

/// A record value, borrowed from the frame.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value<'a> {
    Nil,
    Bool(bool),
    Int(i64),
    UInt(u64),
    Float(f64),
    /// A msgpack str or bin (bytes, not necessarily UTF-8).
    Str(&'a [u8]),
    /// An array, map or extension, as its raw msgpack bytes.
    Raw(&'a [u8]),
}

/// One event of a frame: its time and record entries (keys are str or bin).
#[derive(Debug, Default)]
pub struct Record<'a> {
    pub time_ns: i64,
    pub entries: Vec<(&'a [u8], Value<'a>)>,
}

impl<'a> Record<'a> {
    pub fn get(&self, key: &str) -> Option<Value<'a>> {
        self.entries
            .iter()
            .find(|(k, _)| *k == key.as_bytes())
            .map(|(_, v)| *v)
    }

    /// The record emptied, to decode another buffer's bytes into: the
    /// entry list keeps its allocation (a connection reuses one record for
    /// every read, where Docker's one event per read made it one
    /// allocation per event).
    pub fn reuse<'b>(self) -> Record<'b> {
        let mut entries = self.entries;
        entries.clear();
        Record {
            time_ns: 0,
            // Collected in place: same element layout, no allocation.
            entries: entries.into_iter().map(|_| unreachable!()).collect(),
        }
    }
}

/// What a frame says besides its events.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct FrameInfo<'a> {
    /// Borrowed from the frame unless it was not UTF-8 (then repaired).
    pub tag: Cow<'a, str>,
    /// The `chunk` option: the client waits for `{"ack": chunk}`.
    pub chunk: Option<String>,
    /// Events handed to the callback.
    pub events: usize,
}

/// Limits applied while decoding a frame.
#[derive(Debug, Clone, Copy)]
pub struct DecodeLimits {
    pub frame: Limits,
    /// Most bytes a CompressedPackedForward frame may inflate to.
    pub max_decompressed_bytes: usize,
}

/// Decodes one complete frame (as delimited by [`frame::scan`]), calling
/// `on_event` for each event. Skipped events are reported to `on_skip` with
/// their error; a frame-level error is returned after the events before it
/// were delivered.
pub fn decode_frame<'a>(
    bytes: &'a [u8],
    limits: &DecodeLimits,
    on_event: &mut dyn FnMut(&str, &Record<'_>),
    on_skip: &mut dyn FnMut(DecodeError),
) -> Result<FrameInfo<'a>, DecodeError> {
    decode_frame_with(bytes, limits, &mut Record::default(), on_event, on_skip)
}

/// [`decode_frame`] with a caller's `record` to decode into: the record's
/// entry list is allocated once for every frame it is used for.
pub fn decode_frame_with<'a>(
    bytes: &'a [u8],
    limits: &DecodeLimits,
    record: &mut Record<'a>,
    on_event: &mut dyn FnMut(&str, &Record<'_>),
    on_skip: &mut dyn FnMut(DecodeError),
) -> Result<FrameInfo<'a>, DecodeError> {
    let mut frame = FrameDecoder::start(bytes, limits)?;
    while !frame.is_done() {
        frame.decode_some(bytes, limits, record, usize::MAX, on_event, on_skip)?;
    }
    Ok(FrameInfo {
        tag: frame.tag(bytes),
        events: frame.events,
        chunk: frame.chunk,
    })
}

/// A Message-mode frame decoded by [`message`].
#[derive(Debug, PartialEq)]
pub struct Message<'a> {
    /// The frame's length: the next frame starts there.
    pub len: usize,
    /// The tag's bytes (at most [`MAX_TAG_BYTES`]), not checked as UTF-8
    /// yet: [`Message::tag`], or a connection's [`TagCache`], which checks
    /// its client's tag once rather than once per event.
    pub raw_tag: &'a [u8],
    /// The `chunk` option: the client waits for `{"ack": chunk}`.
    pub chunk: Option<String>,
}

impl<'a> Message<'a> {
    /// The tag as [`FrameDecoder::tag`] gives it.
    pub fn tag(&self) -> Cow<'a, str> {
        tag_text(self.raw_tag)
    }
}

/// A connection's last tag, as text. Docker sends one tag on every frame
/// of a connection (its container's), one frame per event: checking it as
/// UTF-8 for each was about 150 instructions per event (callgrind); a
/// compare with the last one is a few dozen. At most [`MAX_TAG_BYTES`]
/// raw and three times that as text per connection.
#[derive(Debug, Default)]
pub struct TagCache {
    raw: Vec<u8>,
    text: String,
}

impl TagCache {
    /// [`Message::tag`] of a frame whose tag bytes are `raw`.
    pub fn text(&mut self, raw: &[u8]) -> &str {
        if !crate::event::same_bytes(raw, &self.raw) {
            self.raw.clear();
            self.raw.extend_from_slice(raw);
            self.text.clear();
            self.text.push_str(&tag_text(raw));
        }
        &self.text
    }
}

/// A tag's bytes as text (repaired if not UTF-8), cut to [`MAX_TAG_BYTES`].
fn tag_text(raw: &[u8]) -> Cow<'_, str> {
    let tag = &raw[..raw.len().min(MAX_TAG_BYTES)];
    // `from_utf8` (an ASCII fast path) checks a valid tag for fewer
    // instructions than the chunk by chunk walk of `from_utf8_lossy`,
    // which is only needed for a bad one.
    match std::str::from_utf8(tag) {
        Ok(tag) => Cow::Borrowed(tag),
        Err(_) => String::from_utf8_lossy(tag),
    }
}

/// Decodes the Message-mode frame (`[tag, time, record, option?]`, what
/// Docker sends: one event per frame) at the start of `buf` into `record`,
/// without framing it first: framing walked every Docker event a second
/// time (about 700 instructions of 11,000, callgrind).
///
/// Only the common case: `None` for a frame that is incomplete, of another
/// mode, or anything but good (a bad event or option, a limit reached), and
/// the caller frames and decodes it the general way ([`frame::scan`],
/// [`FrameDecoder`]), which says what is wrong with it. When this gives a
/// frame, that way would have given the same frame, event, tag and chunk:
/// the frame is whole and within `max_bytes`, and every value in it was
/// stepped over within the depth limit the framing applies (a record's
/// values are two levels below the frame).
pub fn message<'a>(
    buf: &'a [u8],
    limits: &DecodeLimits,
    record: &mut Record<'a>,
) -> Option<Message<'a>> {
    let with_options = match buf.first()? {
        0x93 => false,
        0x94 => true,
        _ => return None,
    };
    if limits.frame.max_depth < 2 {
        // The framing refuses the record map itself: its error is wanted.
        return None;
    }
    let mut r = Reader::new(buf);
    r.max_depth = limits.frame.max_depth;
    r.pos = 1;
    let tag = match r.value().ok()? {
        Value::Str(s) => (r.pos - s.len(), r.pos),
        _ => return None,
    };
    if !is_time_marker(r.peek().ok()?) {
        return None;
    }
    let time = r.value().ok()?;
    event(&mut r, time, record).ok()?;
    let chunk = if with_options {
        options(&mut r).ok()?.chunk
    } else {
        None
    };
    if r.pos > limits.frame.max_bytes {
        return None;
    }
    Some(Message {
        len: r.pos,
        raw_tag: &buf[tag.0..tag.1.min(tag.0 + MAX_TAG_BYTES)],
        chunk,
    })
}

/// Longest `chunk` option accepted, in bytes. Clients send a base64 UUID
/// (24 bytes: Docker, Fluent Bit, fluentd); the id is kept until its ack is
/// written, so a client that never reads its acks must not make it large.
pub const MAX_CHUNK_BYTES: usize = 256;

/// Longest tag kept, in bytes; the rest is cut. The tag is copied into
/// every event of its frame (field `tag`): a 64 KiB tag over 20,000 tiny
/// entries made a 125 KB frame into 1.3 GB of events. Real tags are a few
/// dozen bytes (Docker's default is the container id).
pub const MAX_TAG_BYTES: usize = 1024;

/// One frame decoded a few events at a time, so that a connection can append
/// what it has decoded to the spool before going on: a frame's events are
/// never all in memory at once (a 61 KB gzip frame can inflate to 20 M
/// events).
///
/// It holds positions, not borrows: the caller passes the same frame bytes to
/// every call (they stay in the connection's read buffer meanwhile).
/// Everything that can fail the whole frame (structure, options, gzip) is
/// checked before any of its events is delivered: by [`FrameDecoder::start`],
/// or for a Message-mode frame (one event) by its only `decode_some`.
#[derive(Debug)]
pub struct FrameDecoder {
    /// The tag's bytes in the frame.
    tag: (usize, usize),
    /// The `chunk` option: the client waits for `{"ack": chunk}`. (Known
    /// once [`FrameDecoder::is_done`].)
    pub chunk: Option<String>,
    /// Events delivered so far.
    pub events: usize,
    body: Body,
}

#[derive(Debug)]
enum Body {
    /// Message mode: the time at `at`, then the record, then the option
    /// map if `options`.
    Message {
        at: usize,
        options: bool,
    },
    /// Forward mode: `left` more `[time, record]` arrays from `pos`.
    Forward {
        pos: usize,
        left: u64,
    },
    /// PackedForward: concatenated entries in `pos..end` of the frame.
    Packed {
        pos: usize,
        end: usize,
    },
    /// CompressedPackedForward before inflating: gzip data in `pos..end`.
    Compressed {
        pos: usize,
        end: usize,
    },
    /// CompressedPackedForward: the inflated entries, from `pos`.
    Inflated {
        data: Vec<u8>,
        pos: usize,
    },
    Done,
}

impl FrameDecoder {
    /// Reads the frame's header and options (and inflates a compressed one).
    pub fn start(bytes: &[u8], limits: &DecodeLimits) -> Result<FrameDecoder, DecodeError> {
        let mut frame = FrameDecoder::open(bytes)?;
        frame.inflate_here(bytes, limits)?;
        Ok(frame)
    }

    /// [`FrameDecoder::start`] that leaves a CompressedPackedForward frame
    /// compressed: the caller inflates [`FrameDecoder::compressed`] where it
    /// costs no one else (a connection does it off its runtime thread: a
    /// 64 MiB inflate takes a tenth of a second) and hands the result to
    /// [`FrameDecoder::set_inflated`]. Decoding a frame left compressed
    /// inflates it first.
    pub fn open(bytes: &[u8]) -> Result<FrameDecoder, DecodeError> {
        let mut r = Reader::new(bytes);
        let n = r
            .array_len()
            .map_err(|_| DecodeError::BadFrame("frame is not an array"))?;
        if !(2..=4).contains(&n) {
            return Err(DecodeError::BadFrame(
                "frame array must have 2 to 4 elements",
            ));
        }
        let tag = match r.value()? {
            Value::Str(s) => (r.pos - s.len(), r.pos),
            _ => return Err(DecodeError::BadFrame("tag is not a string")),
        };
        let mode = r.peek()?;
        let (body, options) = match mode {
            // Message: [tag, time, record, option?]
            m if is_time_marker(m) => {
                if n < 3 {
                    return Err(DecodeError::BadFrame("message mode needs a record"));
                }
                // One event: decoded whole by the first `decode_some`,
                // options included (not scanned twice here).
                let body = Body::Message {
                    at: r.pos,
                    options: n == 4,
                };
                (body, Options::default())
            }
            // Forward: [tag, [[time, record], ...], option?]
            0x90..=0x9f | 0xdc | 0xdd => {
                let left = r.array_len()?;
                let pos = r.pos;
                for _ in 0..left {
                    r.skip()?;
                }
                let options = if n >= 3 {
                    options(&mut r)?
                } else {
                    Options::default()
                };
                (Body::Forward { pos, left }, options)
            }
            // PackedForward / CompressedPackedForward: [tag, bin, option?]
            0xc4..=0xc6 | 0xa0..=0xbf | 0xd9..=0xdb => {
                let packed = match r.value()? {
                    Value::Str(b) => b,
                    _ => unreachable!("marker checked"),
                };
                let (pos, end) = (r.pos - packed.len(), r.pos);
                let options = if n >= 3 {
                    options(&mut r)?
                } else {
                    Options::default()
                };
                let body = if options.gzip {
                    Body::Compressed { pos, end }
                } else {
                    Body::Packed { pos, end }
                };
                (body, options)
            }
            _ => {
                return Err(DecodeError::BadFrame(
                    "second element is not a time, array or bin",
                ))
            }
        };
        Ok(FrameDecoder {
            tag,
            chunk: options.chunk,
            events: 0,
            body,
        })
    }

    /// The frame's tag (repaired if it is not UTF-8), at most
    /// [`MAX_TAG_BYTES`].
    pub fn tag<'a>(&self, bytes: &'a [u8]) -> Cow<'a, str> {
        tag_text(&bytes[self.tag.0..self.tag.1])
    }

    /// The gzip data of a CompressedPackedForward frame not inflated yet.
    pub fn compressed<'a>(&self, bytes: &'a [u8]) -> Option<&'a [u8]> {
        match self.body {
            Body::Compressed { pos, end } => Some(&bytes[pos..end]),
            _ => None,
        }
    }

    /// The inflated entries of the frame [`FrameDecoder::compressed`] gave
    /// (what [`gunzip`] made of it).
    pub fn set_inflated(&mut self, data: Vec<u8>) {
        debug_assert!(matches!(self.body, Body::Compressed { .. }));
        self.body = Body::Inflated { data, pos: 0 };
    }

    /// Inflates a frame left compressed, on the calling thread.
    fn inflate_here(&mut self, bytes: &[u8], limits: &DecodeLimits) -> Result<(), DecodeError> {
        if let Some(gz) = self.compressed(bytes) {
            let data = gunzip(gz, limits.max_decompressed_bytes)?;
            self.set_inflated(data);
        }
        Ok(())
    }

    /// Every event was delivered (or skipped).
    pub fn is_done(&self) -> bool {
        matches!(self.body, Body::Done)
    }

    /// Delivers at most `max_events` more events of `bytes` (the frame given
    /// to [`FrameDecoder::start`]); skipped events do not count. A frame-level
    /// error is returned after the events before it were delivered.
    pub fn decode_some<'a>(
        &mut self,
        bytes: &'a [u8],
        limits: &DecodeLimits,
        record: &mut Record<'a>,
        max_events: usize,
        on_event: &mut dyn FnMut(&str, &Record<'_>),
        on_skip: &mut dyn FnMut(DecodeError),
    ) -> Result<(), DecodeError> {
        self.inflate_here(bytes, limits)?;
        let tag = self.tag(bytes);
        let before = self.events;
        let mut events = 0;
        let result = match &mut self.body {
            Body::Message {
                at,
                options: with_options,
            } => {
                let with_options = *with_options;
                let mut r = Reader::new(bytes);
                r.pos = *at;
                self.body = Body::Done;
                let time = r.value()?;
                let rec_start = r.pos;
                let decoded = event(&mut r, time, record);
                // The options are read before the event is delivered: a bad
                // option map fails the whole frame, event included.
                if with_options {
                    if decoded.is_err() {
                        // `event` may have stopped anywhere in the record.
                        r.pos = rec_start;
                        r.skip()?;
                    }
                    self.chunk = options(&mut r)?.chunk;
                }
                match decoded {
                    Ok(()) => {
                        on_event(&tag, record);
                        events += 1;
                    }
                    Err(e @ DecodeError::BadEvent(_)) => on_skip(e),
                    Err(e) => return Err(e),
                }
                Ok(())
            }
            Body::Forward { pos, left } => {
                let mut r = Reader::new(bytes);
                r.pos = *pos;
                let mut result = Ok(());
                while *left > 0 && events < max_events {
                    *left -= 1;
                    result = entry(&mut r, record, &tag, &mut events, on_event, on_skip);
                    if result.is_err() {
                        break;
                    }
                }
                *pos = r.pos;
                if *left == 0 || result.is_err() {
                    self.body = Body::Done;
                }
                result
            }
            Body::Packed { pos, end } => {
                let mut r = Reader::packed(&bytes[..*end], limits);
                r.pos = *pos;
                let result = packed_entries(
                    &mut r,
                    record,
                    &tag,
                    &mut events,
                    max_events,
                    on_event,
                    on_skip,
                );
                *pos = r.pos;
                if *pos >= *end || result.is_err() {
                    self.body = Body::Done;
                }
                result
            }
            Body::Inflated { data, pos } => {
                let mut record = Record::default();
                let mut r = Reader::packed(data, limits);
                r.pos = *pos;
                let result = packed_entries(
                    &mut r,
                    &mut record,
                    &tag,
                    &mut events,
                    max_events,
                    on_event,
                    on_skip,
                );
                *pos = r.pos;
                if *pos >= data.len() || result.is_err() {
                    self.body = Body::Done;
                }
                result
            }
            // Inflated by `inflate_here` above.
            Body::Compressed { .. } | Body::Done => Ok(()),
        };
        self.events = before + events;
        result
    }
}

fn is_time_marker(m: u8) -> bool {
    matches!(m, 0x00..=0x7f | 0xcc..=0xcf | 0xd0..=0xd3 | 0xe0..=0xff | 0xca | 0xcb | 0xd7 | 0xc7)
}

/// The concatenated `[time, record]` entries of PackedForward mode, from
/// `r.pos` to the end of `r`, until `max_events` were delivered.
fn packed_entries<'b>(
    r: &mut Reader<'b>,
    record: &mut Record<'b>,
    tag: &str,
    events: &mut usize,
    max_events: usize,
    on_event: &mut dyn FnMut(&str, &Record<'_>),
    on_skip: &mut dyn FnMut(DecodeError),
) -> Result<(), DecodeError> {
    // The outer framing saw one bin: the entries in it get the same limits
    // as the outer stream while they are decoded ([`Reader::packed`]: nested
    // values are skipped within the depth limit; an entry larger than a
    // frame is refused before its event is delivered). Not by framing each
    // entry first, which read every entry twice (a sixth of a PackedForward
    // event's decoding, callgrind).
    while r.pos < r.buf.len() && *events < max_events {
        entry(r, record, tag, events, on_event, on_skip)?;
    }
    Ok(())
}

/// One `[time, record]` entry of Forward or PackedForward mode.
fn entry<'a>(
    r: &mut Reader<'a>,
    record: &mut Record<'a>,
    tag: &str,
    events: &mut usize,
    on_event: &mut dyn FnMut(&str, &Record<'_>),
    on_skip: &mut dyn FnMut(DecodeError),
) -> Result<(), DecodeError> {
    let start = r.pos;
    let result = (|| {
        if r.array_len()? != 2 {
            return Err(DecodeError::BadEvent("entry is not [time, record]"));
        }
        if matches!(r.peek()?, 0x80..=0x9f | 0xdc..=0xdf) {
            // Not read as a value: that would skip it within a record
            // value's depth, one level less than the time's (the whole
            // entry is skipped below, within the entry's).
            return Err(DecodeError::BadEvent("time is not an integer or EventTime"));
        }
        let time = r.value()?;
        event(r, time, record)?;
        if r.pos - start > r.max_entry_bytes {
            return Err(frame::FrameError::TooLarge {
                limit: r.max_entry_bytes,
            }
            .into());
        }
        Ok(())
    })();
    match result {
        Ok(()) => {
            on_event(tag, record);
            *events += 1;
            Ok(())
        }
        Err(e @ DecodeError::BadEvent(_)) => {
            // Resynchronise on the entry boundary: skip the whole entry.
            r.pos = start;
            r.skip_within(r.max_depth)?;
            if r.pos - start > r.max_entry_bytes {
                return Err(frame::FrameError::TooLarge {
                    limit: r.max_entry_bytes,
                }
                .into());
            }
            on_skip(e);
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// Reads a record map after its `time`, filling `record`.
fn event<'a>(
    r: &mut Reader<'a>,
    time: Value<'a>,
    record: &mut Record<'a>,
) -> Result<(), DecodeError> {
    let time_ns = time_ns(time)?;
    let start = r.pos;
    let Ok(n) = r.map_len() else {
        r.pos = start;
        r.skip()?;
        return Err(DecodeError::BadEvent("record is not a map"));
    };
    record.time_ns = time_ns;
    record.entries.clear();
    for _ in 0..n {
        let k = r.value()?;
        let v = r.value()?;
        if let Value::Str(k) = k {
            record.entries.push((k, v));
        }
        // Non-string keys are not something a log record can name: dropped.
    }
    Ok(())
}

fn time_ns(v: Value<'_>) -> Result<i64, DecodeError> {
    const BAD: DecodeError = DecodeError::BadEvent("time out of range");
    match v {
        Value::UInt(s) => i64::try_from(s)
            .ok()
            .and_then(|s| s.checked_mul(1_000_000_000))
            .ok_or(BAD),
        Value::Int(s) => s.checked_mul(1_000_000_000).ok_or(BAD),
        Value::Float(f) if f.is_finite() && f.abs() < 9.2e9 => Ok((f * 1e9) as i64),
        Value::Raw(raw) => event_time(raw),
        _ => Err(DecodeError::BadEvent("time is not an integer or EventTime")),
    }
}

/// EventTime: fixext8 (0xd7) or ext8 (0xc7, len 8), type 0.
fn event_time(raw: &[u8]) -> Result<i64, DecodeError> {
    let data = match raw {
        [0xd7, 0, data @ ..] if data.len() == 8 => data,
        [0xc7, 8, 0, data @ ..] if data.len() == 8 => data,
        _ => return Err(DecodeError::BadEvent("time is not an integer or EventTime")),
    };
    let secs = u32::from_be_bytes(data[..4].try_into().expect("4 bytes"));
    let nanos = u32::from_be_bytes(data[4..].try_into().expect("4 bytes"));
    Ok(i64::from(secs) * 1_000_000_000 + i64::from(nanos))
}

#[derive(Default)]
struct Options {
    chunk: Option<String>,
    gzip: bool,
}

/// The option map (or nil).
fn options(r: &mut Reader<'_>) -> Result<Options, DecodeError> {
    let mut o = Options::default();
    if r.peek()? == 0xc0 {
        r.pos += 1;
        return Ok(o);
    }
    let n = r
        .map_len()
        .map_err(|_| DecodeError::BadFrame("option is not a map"))?;
    for _ in 0..n {
        let k = r.value()?;
        let v = r.value()?;
        match (k, v) {
            (Value::Str(b"chunk"), Value::Str(c)) if c.len() > MAX_CHUNK_BYTES => {
                return Err(DecodeError::BadFrame("chunk id longer than 256 bytes"))
            }
            (Value::Str(b"chunk"), Value::Str(c)) => {
                o.chunk = Some(
                    std::str::from_utf8(c)
                        .map_err(|_| DecodeError::BadFrame("chunk is not UTF-8"))?
                        .to_owned(),
                )
            }
            (Value::Str(b"chunk"), _) => {
                return Err(DecodeError::BadFrame("chunk is not a string"))
            }
            (Value::Str(b"compressed"), Value::Str(b"gzip")) => o.gzip = true,
            (Value::Str(b"compressed"), Value::Str(b"text")) => {}
            (Value::Str(b"compressed"), _) => {
                return Err(DecodeError::BadFrame("unknown compression (only gzip)"))
            }
            // `size` (the number of events) is informational: events are
            // counted as they are decoded.
            _ => {}
        }
    }
    Ok(o)
}

/// Inflates (possibly concatenated) gzip members, refusing more than `limit` bytes.
///
/// The output never takes more than `limit + 1` bytes of memory, even for
/// a moment (`read_to_end` doubles its buffer: up to twice the limit), so
/// that a caller that set `limit` bytes aside holds what it counted.
pub fn gunzip(data: &[u8], limit: usize) -> Result<Vec<u8>, DecodeError> {
    /// Bytes zeroed and read into at a time.
    const WINDOW: usize = 256 << 10;
    let cap = limit.saturating_add(1);
    let mut out = Vec::with_capacity((data.len() * 4).max(WINDOW).min(cap));
    let mut dec = flate2::read::MultiGzDecoder::new(data);
    loop {
        let len = out.len();
        if len == out.capacity() {
            if len >= cap {
                return Err(DecodeError::DecompressedTooLarge { limit });
            }
            // Half again, within the limit (and one byte to see it passed).
            out.reserve_exact((len / 2).max(WINDOW).min(cap - len));
        }
        let end = (len + WINDOW).min(out.capacity());
        out.resize(end, 0);
        match dec.read(&mut out[len..end]) {
            Ok(0) => {
                out.truncate(len);
                break;
            }
            Ok(n) => out.truncate(len + n),
            Err(_) => return Err(DecodeError::BadGzip),
        }
    }
    if out.len() > limit {
        return Err(DecodeError::DecompressedTooLarge { limit });
    }
    Ok(out)
}

/// A cursor over msgpack bytes that are known to be framed (complete), so
/// running out of bytes is a structure error, not "need more".
pub struct Reader<'a> {
    buf: &'a [u8],
    pub pos: usize,
    /// Deepest nesting of a value at the root of `buf` (an entry of packed
    /// entries); a record's values, two levels down, get two fewer.
    max_depth: usize,
    /// Largest `[time, record]` entry of packed entries.
    max_entry_bytes: usize,
}

const TRUNCATED: DecodeError = DecodeError::BadFrame("value runs past the end of its frame");

impl<'a> Reader<'a> {
    /// A reader over bytes the outer framing checked whole.
    pub fn new(buf: &'a [u8]) -> Reader<'a> {
        Reader {
            buf,
            pos: 0,
            max_depth: usize::MAX,
            max_entry_bytes: usize::MAX,
        }
    }

    /// A reader over PackedForward entries (a bin's bytes, or the inflated
    /// ones), which the outer framing did not look into: they get the
    /// frame's limits here.
    fn packed(buf: &'a [u8], limits: &DecodeLimits) -> Reader<'a> {
        Reader {
            buf,
            pos: 0,
            max_depth: limits.frame.max_depth,
            max_entry_bytes: limits.frame.max_bytes,
        }
    }

    fn peek(&self) -> Result<u8, DecodeError> {
        self.buf.get(self.pos).copied().ok_or(TRUNCATED)
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let end = self.pos.checked_add(n).ok_or(TRUNCATED)?;
        let s = self.buf.get(self.pos..end).ok_or(TRUNCATED)?;
        self.pos = end;
        Ok(s)
    }

    fn uint(&mut self, width: usize) -> Result<u64, DecodeError> {
        Ok(self
            .take(width)?
            .iter()
            .fold(0u64, |acc, &b| (acc << 8) | u64::from(b)))
    }

    fn array_len(&mut self) -> Result<u64, DecodeError> {
        match self.peek()? {
            m @ 0x90..=0x9f => {
                self.pos += 1;
                Ok(u64::from(m & 0x0f))
            }
            0xdc => {
                self.pos += 1;
                self.uint(2)
            }
            0xdd => {
                self.pos += 1;
                self.uint(4)
            }
            _ => Err(DecodeError::BadEvent("expected an array")),
        }
    }

    fn map_len(&mut self) -> Result<u64, DecodeError> {
        match self.peek()? {
            m @ 0x80..=0x8f => {
                self.pos += 1;
                Ok(u64::from(m & 0x0f))
            }
            0xde => {
                self.pos += 1;
                self.uint(2)
            }
            0xdf => {
                self.pos += 1;
                self.uint(4)
            }
            _ => Err(DecodeError::BadEvent("expected a map")),
        }
    }

    /// Skips one complete value of a record (two levels below an entry).
    fn skip(&mut self) -> Result<(), DecodeError> {
        self.skip_within(self.max_depth.saturating_sub(2))
    }

    /// Skips one complete value nested at most `max_depth` deep: a value
    /// nested deeper fails the frame (`too_deep`), as the outer framing
    /// would have.
    fn skip_within(&mut self, max_depth: usize) -> Result<(), DecodeError> {
        let limits = Limits {
            max_bytes: self.buf.len() - self.pos,
            max_depth,
        };
        match frame::scan(&self.buf[self.pos..], limits) {
            Ok(frame::Scan::Complete(n)) => {
                self.pos += n;
                Ok(())
            }
            Ok(frame::Scan::Incomplete { .. }) | Err(frame::FrameError::TooLarge { .. }) => {
                Err(TRUNCATED)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Reads one value; containers and extensions come back raw.
    #[inline]
    pub fn value(&mut self) -> Result<Value<'a>, DecodeError> {
        // Most keys and values of a log record are short strings (fixstr):
        // read here, inlined, not through the call to the general match
        // (eight per Docker event). So are str8 strings (32 to 255 bytes:
        // a line, a container id) and fixext8 (EventTime): three calls per
        // PackedForward event, about 15 instructions more than this
        // (callgrind). Anything else, or one cut short, is the general
        // match's.
        if let Some(&m) = self.buf.get(self.pos) {
            let (start, len) = match m {
                0xa0..=0xbf => (self.pos + 1, usize::from(m & 0x1f)),
                0xd9 => match self.buf.get(self.pos + 1) {
                    Some(&n) => (self.pos + 2, usize::from(n)),
                    None => return self.any_value(),
                },
                0xd7 => (self.pos, 10),
                _ => return self.any_value(),
            };
            if let Some(s) = self.buf.get(start..start + len) {
                self.pos = start + len;
                return Ok(if m == 0xd7 {
                    Value::Raw(s)
                } else {
                    Value::Str(s)
                });
            }
        }
        self.any_value()
    }

    /// [`Reader::value`], of any type.
    fn any_value(&mut self) -> Result<Value<'a>, DecodeError> {
        let m = self.peek()?;
        let start = self.pos;
        self.pos += 1;
        let v = match m {
            0x00..=0x7f => Value::UInt(u64::from(m)),
            0xe0..=0xff => Value::Int(i64::from(m as i8)),
            0xc0 => Value::Nil,
            0xc2 => Value::Bool(false),
            0xc3 => Value::Bool(true),
            0xa0..=0xbf => Value::Str(self.take(usize::from(m & 0x1f))?),
            0xd9 | 0xc4 => {
                let n = self.uint(1)? as usize;
                Value::Str(self.take(n)?)
            }
            0xda | 0xc5 => {
                let n = self.uint(2)? as usize;
                Value::Str(self.take(n)?)
            }
            0xdb | 0xc6 => {
                let n = self.uint(4)? as usize;
                Value::Str(self.take(n)?)
            }
            0xcc => Value::UInt(self.uint(1)?),
            0xcd => Value::UInt(self.uint(2)?),
            0xce => Value::UInt(self.uint(4)?),
            0xcf => Value::UInt(self.uint(8)?),
            0xd0 => Value::Int(i64::from(self.uint(1)? as u8 as i8)),
            0xd1 => Value::Int(i64::from(self.uint(2)? as u16 as i16)),
            0xd2 => Value::Int(i64::from(self.uint(4)? as u32 as i32)),
            0xd3 => Value::Int(self.uint(8)? as i64),
            0xca => Value::Float(f64::from(f32::from_bits(self.uint(4)? as u32))),
            0xcb => Value::Float(f64::from_bits(self.uint(8)?)),
            0xc1 => return Err(frame::FrameError::BadMarker(m).into()),
            // Extensions (EventTime is one, in every Docker event): their
            // length is in their header, there is nothing nested to frame.
            0xd4..=0xd8 => {
                self.take(1 + (1 << (m - 0xd4)))?;
                Value::Raw(&self.buf[start..self.pos])
            }
            0xc7..=0xc9 => {
                let n = self.uint(1 << (m - 0xc7))? as usize;
                self.take(n.checked_add(1).ok_or(TRUNCATED)?)?;
                Value::Raw(&self.buf[start..self.pos])
            }
            _ => {
                self.pos = start;
                self.skip()?;
                Value::Raw(&self.buf[start..self.pos])
            }
        };
        Ok(v)
    }
}

/// Appends `v` as JSON text (nested containers included) to `out`; used for
/// field values that are not strings.
pub fn write_json(v: Value<'_>, out: &mut String, depth: usize) {
    use std::fmt::Write as _;
    match v {
        Value::Nil => out.push_str("null"),
        Value::Bool(b) => out.push_str(if b { "true" } else { "false" }),
        Value::Int(i) => {
            let _ = write!(out, "{i}");
        }
        Value::UInt(u) => {
            let _ = write!(out, "{u}");
        }
        Value::Float(f) if f.is_finite() => {
            let _ = write!(out, "{f}");
        }
        Value::Float(_) => out.push_str("null"),
        Value::Str(s) => json_string(&String::from_utf8_lossy(s), out),
        Value::Raw(raw) => {
            let mut r = Reader::new(raw);
            if depth > 64 {
                out.push_str("null");
                return;
            }
            if let Ok(n) = r.array_len() {
                out.push('[');
                for i in 0..n {
                    if i > 0 {
                        out.push(',');
                    }
                    match r.value() {
                        Ok(v) => write_json(v, out, depth + 1),
                        Err(_) => out.push_str("null"),
                    }
                }
                out.push(']');
            } else if let Ok(n) = r.map_len() {
                out.push('{');
                for i in 0..n {
                    if i > 0 {
                        out.push(',');
                    }
                    match r.value() {
                        Ok(Value::Str(k)) => json_string(&String::from_utf8_lossy(k), out),
                        Ok(other) => {
                            let mut k = String::new();
                            write_json(other, &mut k, depth + 1);
                            json_string(&k, out);
                        }
                        Err(_) => out.push_str("\"\""),
                    }
                    out.push(':');
                    match r.value() {
                        Ok(v) => write_json(v, out, depth + 1),
                        Err(_) => out.push_str("null"),
                    }
                }
                out.push('}');
            } else {
                // An extension other than a timestamp: not representable.
                out.push_str("null");
            }
        }
    }
}

fn json_string(s: &str, out: &mut String) {
    use std::fmt::Write as _;
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests;
