//! Push bodies: Loki's `push.proto` messages, snappy, JSON, and how an event
//! becomes a stream label set and a line.
//!
//! The messages are written by hand with `prost` derives (no protoc, no
//! build script), field numbers as in Loki's `pkg/push/push.proto`:
//!
//! ```text
//! message PushRequest      { repeated StreamAdapter streams = 1; }
//! message StreamAdapter    { string labels = 1; repeated EntryAdapter entries = 2; uint64 hash = 3; }
//! message EntryAdapter     { google.protobuf.Timestamp timestamp = 1; string line = 2;
//!                            repeated LabelPairAdapter structuredMetadata = 3; }
//! message LabelPairAdapter { string name = 1; string value = 2; }
//! ```
//!
//! A protobuf body is snappy-compressed in the *block* format (not framed),
//! `Content-Type: application/x-protobuf`. A JSON body is
//! `{"streams":[{"stream":{"k":"v"},"values":[["<ns>","<line>",{"meta":"v"}]]}]}`,
//! optionally gzip'ed with `Content-Encoding: gzip`.

use std::io::Write;

use prost::Message;
use serde::ser::{SerializeMap, SerializeSeq, Serializer};
use serde::Serialize;

use super::{Compression, Encoding, LineFormat};
use crate::event::Event;

/// `google.protobuf.Timestamp`.
#[derive(Clone, Copy, PartialEq, Eq, Message)]
pub struct Timestamp {
    #[prost(int64, tag = "1")]
    pub seconds: i64,
    #[prost(int32, tag = "2")]
    pub nanos: i32,
}

impl Timestamp {
    pub fn from_ns(ns: i64) -> Timestamp {
        Timestamp {
            seconds: ns.div_euclid(1_000_000_000),
            nanos: ns.rem_euclid(1_000_000_000) as i32,
        }
    }

    pub fn as_ns(&self) -> i64 {
        self.seconds
            .saturating_mul(1_000_000_000)
            .saturating_add(i64::from(self.nanos))
    }
}

// The messages of push.proto as prost types: what the pushes weir writes
// decode to (tests compare [`write_protobuf`]'s bytes with prost's).
#[derive(Clone, PartialEq, Message)]
pub struct PushRequest {
    #[prost(message, repeated, tag = "1")]
    pub streams: Vec<StreamAdapter>,
}

#[derive(Clone, PartialEq, Message)]
pub struct StreamAdapter {
    /// The label set in Loki's syntax: `{host="h1", source="docker"}`.
    #[prost(string, tag = "1")]
    pub labels: String,
    #[prost(message, repeated, tag = "2")]
    pub entries: Vec<EntryAdapter>,
    /// Computed by Loki's distributor; clients leave it 0.
    #[prost(uint64, tag = "3")]
    pub hash: u64,
}

#[derive(Clone, PartialEq, Message)]
pub struct EntryAdapter {
    #[prost(message, optional, tag = "1")]
    pub timestamp: Option<Timestamp>,
    #[prost(string, tag = "2")]
    pub line: String,
    #[prost(message, repeated, tag = "3")]
    pub structured_metadata: Vec<LabelPairAdapter>,
}

#[derive(Clone, PartialEq, Eq, Message)]
pub struct LabelPairAdapter {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub value: String,
}

/// The lines and structured metadata of one plan's entries, written once
/// as each entry is built ([`LineBuilder::entry`]) and read by the encoders:
/// one buffer for all lines, not a `String` per entry (its allocation, its
/// free and its drop walk were about 600 instructions per event). A sink
/// lane keeps one from plan to plan.
#[derive(Debug, Default)]
pub struct Text {
    lines: String,
    meta: Vec<LabelPairAdapter>,
}

/// Largest [`Text`] kept by an idle lane: about two batches' lines at the
/// default `batch_max_bytes`; a larger one is freed once its batch is done.
pub const KEEP_TEXT_BYTES: usize = 2 << 20;

impl Text {
    pub fn clear(&mut self) {
        self.lines.clear();
        self.meta.clear();
    }

    /// The heap bytes held (what keeping it between batches costs).
    pub fn held_bytes(&self) -> usize {
        self.lines.capacity() + self.meta.capacity() * std::mem::size_of::<LabelPairAdapter>()
    }

    /// `entry`'s line.
    pub fn line(&self, entry: &Entry) -> &str {
        &self.lines[entry.line.0..entry.line.1]
    }

    /// `entry`'s structured metadata.
    pub fn metadata(&self, entry: &Entry) -> &[LabelPairAdapter] {
        &self.meta[entry.meta.0 as usize..entry.meta.1 as usize]
    }
}

/// One entry of a plan: its time, where its line and metadata are in the
/// plan's [`Text`], and its protobuf length (computed once, when it is
/// built). `Copy`, 40 bytes: sorting, packing and splitting move it, and
/// dropping a push frees no entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    pub ts_ns: i64,
    /// `lines[line.0..line.1]` of the [`Text`].
    line: (usize, usize),
    /// `meta[meta.0..meta.1]` of the [`Text`].
    meta: (u32, u32),
    /// The length of its `EntryAdapter` message.
    pub encoded_len: usize,
}

/// A stream of a push: its label string and its entries, in time order.
#[derive(Debug, Clone, PartialEq)]
pub struct Stream {
    /// The label set in Loki's syntax: `{host="h1", source="docker"}`.
    pub labels: String,
    pub entries: Vec<Entry>,
}

/// `streams` (of `text`) as prost messages: what a push decodes to.
#[cfg(test)]
pub fn to_request(streams: &[Stream], text: &Text) -> PushRequest {
    PushRequest {
        streams: streams
            .iter()
            .map(|s| StreamAdapter {
                labels: s.labels.clone(),
                entries: s
                    .entries
                    .iter()
                    .map(|e| EntryAdapter {
                        timestamp: Some(Timestamp::from_ns(e.ts_ns)),
                        line: text.line(e).to_owned(),
                        structured_metadata: text.metadata(e).to_vec(),
                    })
                    .collect(),
                hash: 0,
            })
            .collect(),
    }
}

/// A finished request body and the headers that describe it.
#[derive(Debug, Clone)]
pub struct Body {
    pub bytes: bytes::Bytes,
    pub content_type: &'static str,
    pub content_encoding: Option<&'static str>,
}

/// Encodes `streams` (whose lines are in `text`) as configured, with
/// buffers of its own (see [`Scratch`]). Returns the body and the decoded
/// size (the uncompressed protobuf, or the uncompressed JSON).
pub fn encode(
    streams: &[Stream],
    text: &Text,
    encoding: Encoding,
    compression: Compression,
) -> (Body, usize) {
    Scratch::default().encode(streams, text, encoding, compression)
}

/// What encoding a push needs besides its output, kept by a sink lane from
/// one push to the next: the uncompressed protobuf (snappy's input),
/// snappy's hash table and its output buffer.
#[derive(Default)]
pub struct Scratch {
    raw: Vec<u8>,
    snappy: Option<snap::raw::Encoder>,
    /// Snappy writes here (its worst-case size, zeroed once, not per push);
    /// the body is a copy of the compressed part, a fraction of it.
    compressed: Vec<u8>,
}

/// Largest `raw` buffer kept between pushes (and about the largest
/// `compressed`): a lane holds at most this much while idle (pushes are up
/// to 4 MB, a busy lane's are usually far smaller), so lanes do not pin
/// the memory budget.
const KEEP_RAW_BYTES: usize = 1 << 20;

impl std::fmt::Debug for Scratch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scratch")
            .field("raw", &self.raw.capacity())
            .finish_non_exhaustive()
    }
}

impl Scratch {
    /// [`encode`], reusing this scratch's buffers.
    pub fn encode(
        &mut self,
        streams: &[Stream],
        text: &Text,
        encoding: Encoding,
        compression: Compression,
    ) -> (Body, usize) {
        match encoding {
            Encoding::Protobuf => {
                self.raw.clear();
                write_protobuf(streams, text, &mut self.raw);
                let raw = &self.raw;
                let room = snap::raw::max_compress_len(raw.len());
                if self.compressed.len() < room {
                    self.compressed.resize(room, 0);
                }
                let n = self
                    .snappy
                    .get_or_insert_with(snap::raw::Encoder::new)
                    .compress(raw, &mut self.compressed[..room])
                    .expect("snappy accepts any input under 4 GiB");
                let bytes = bytes::Bytes::copy_from_slice(&self.compressed[..n]);
                let decoded = raw.len();
                if self.raw.capacity() > KEEP_RAW_BYTES {
                    self.raw = Vec::new();
                    self.compressed = Vec::new();
                }
                let body = Body {
                    bytes,
                    content_type: "application/x-protobuf",
                    content_encoding: None,
                };
                (body, decoded)
            }
            Encoding::Json => encode_json(streams, text, compression),
        }
    }
}

/// Bytes of `v` as a protobuf varint.
fn varint_len(v: u64) -> usize {
    prost::encoding::encoded_len_varint(v)
}

/// Appends `v` as a protobuf varint (`out` has room: callers reserve).
fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Appends a length-delimited field: key (`tag`, wire type 2), length, bytes.
fn put_bytes_field(out: &mut Vec<u8>, tag: u8, bytes: &[u8]) {
    out.push(tag << 3 | 2);
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// The fields of a `Timestamp` message, as prost writes them (proto3: a
/// zero field is left out; `nanos` is never negative here).
fn timestamp_body_len(ts: Timestamp) -> usize {
    let seconds = if ts.seconds != 0 {
        1 + varint_len(ts.seconds as u64)
    } else {
        0
    };
    let nanos = if ts.nanos != 0 {
        1 + varint_len(ts.nanos as u64)
    } else {
        0
    };
    seconds + nanos
}

/// The length of an entry's `EntryAdapter` message: its timestamp (always
/// present), its line (left out when empty) and its metadata pairs.
fn entry_len(ts: Timestamp, line_len: usize, meta: &[LabelPairAdapter]) -> usize {
    let ts_len = timestamp_body_len(ts);
    let mut n = 1 + varint_len(ts_len as u64) + ts_len;
    if line_len > 0 {
        n += 1 + varint_len(line_len as u64) + line_len;
    }
    for pair in meta {
        let len = pair.encoded_len();
        n += 1 + varint_len(len as u64) + len;
    }
    n
}

/// The bytes a stream's entries and labels take in its `StreamAdapter`.
fn stream_len(stream: &Stream) -> usize {
    let labels = stream.labels.len();
    let mut len = if labels > 0 {
        1 + varint_len(labels as u64) + labels
    } else {
        0
    };
    for e in &stream.entries {
        len += 1 + varint_len(e.encoded_len as u64) + e.encoded_len;
    }
    len
}

/// The protobuf length of a push of `streams`.
pub fn protobuf_len(streams: &[Stream]) -> usize {
    streams
        .iter()
        .map(|s| {
            let n = stream_len(s);
            1 + varint_len(n as u64) + n
        })
        .sum()
}

/// Writes the `PushRequest` of `streams` as prost would write the same
/// messages (byte for byte: a test checks it), in one walk: each entry's
/// length was computed when it was built, and its line is copied from the
/// plan's one buffer. Prost's own `encode` computes the lengths of nested
/// messages again at each level, three walks of every entry.
fn write_protobuf(streams: &[Stream], text: &Text, out: &mut Vec<u8>) {
    for stream in streams {
        let len = stream_len(stream);
        out.reserve(len + 16);
        out.push(1 << 3 | 2);
        put_varint(out, len as u64);
        if !stream.labels.is_empty() {
            put_bytes_field(out, 1, stream.labels.as_bytes());
        }
        for entry in &stream.entries {
            out.push(2 << 3 | 2);
            put_varint(out, entry.encoded_len as u64);
            write_entry(entry, text, out);
        }
    }
}

/// An entry's fields, as prost writes an `EntryAdapter` (proto3: an empty
/// line is left out; a present timestamp is written even if zero).
fn write_entry(entry: &Entry, text: &Text, out: &mut Vec<u8>) {
    let ts = Timestamp::from_ns(entry.ts_ns);
    out.push(1 << 3 | 2);
    put_varint(out, timestamp_body_len(ts) as u64);
    if ts.seconds != 0 {
        out.push(1 << 3);
        put_varint(out, ts.seconds as u64);
    }
    if ts.nanos != 0 {
        out.push(2 << 3);
        put_varint(out, ts.nanos as u64);
    }
    let line = text.line(entry);
    if !line.is_empty() {
        put_bytes_field(out, 2, line.as_bytes());
    }
    for pair in text.metadata(entry) {
        prost::encoding::message::encode(3, pair, out);
    }
}

/// The JSON body of `streams`, gzip'ed if configured.
fn encode_json(streams: &[Stream], text: &Text, compression: Compression) -> (Body, usize) {
    let raw =
        serde_json::to_vec(&JsonPush(streams, text)).expect("serialising to a Vec cannot fail");
    let decoded = raw.len();
    let body = match compression {
        Compression::Gzip => {
            let mut gz = flate2::write::GzEncoder::new(
                Vec::with_capacity(raw.len() / 4),
                flate2::Compression::fast(),
            );
            gz.write_all(&raw).expect("writing to a Vec cannot fail");
            Body {
                bytes: gz.finish().expect("writing to a Vec cannot fail").into(),
                content_type: "application/json",
                content_encoding: Some("gzip"),
            }
        }
        _ => Body {
            bytes: raw.into(),
            content_type: "application/json",
            content_encoding: None,
        },
    };
    (body, decoded)
}

/// The JSON push format of `streams`, whose lines are in the [`Text`].
pub struct JsonPush<'a>(pub &'a [Stream], pub &'a Text);

impl Serialize for JsonPush<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(1))?;
        m.serialize_entry("streams", &JsonStreams(self.0, self.1))?;
        m.end()
    }
}

struct JsonStreams<'a>(&'a [Stream], &'a Text);

impl Serialize for JsonStreams<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.0.len()))?;
        for stream in self.0 {
            seq.serialize_element(&JsonStream(stream, self.1))?;
        }
        seq.end()
    }
}

struct JsonStream<'a>(&'a Stream, &'a Text);

impl Serialize for JsonStream<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(2))?;
        m.serialize_entry("stream", &JsonLabels(&self.0.labels))?;
        m.serialize_entry("values", &JsonEntries(&self.0.entries, self.1))?;
        m.end()
    }
}

struct JsonEntries<'a>(&'a [Entry], &'a Text);

impl Serialize for JsonEntries<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.0.len()))?;
        for entry in self.0 {
            seq.serialize_element(&JsonEntry(entry, self.1))?;
        }
        seq.end()
    }
}

/// Re-reads a label string we wrote ([`label_string`]) as a JSON object.
struct JsonLabels<'a>(&'a str);

impl Serialize for JsonLabels<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let pairs = parse_label_string(self.0);
        let mut m = s.serialize_map(Some(pairs.len()))?;
        for (k, v) in &pairs {
            m.serialize_entry(k, v)?;
        }
        m.end()
    }
}

/// Serialises one entry as `["<ns>", "<line>"]` or `["<ns>", "<line>", {metadata}]`.
pub struct JsonEntry<'a>(pub &'a Entry, pub &'a Text);

impl Serialize for JsonEntry<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let (e, text) = (self.0, self.1);
        let meta = text.metadata(e);
        let n = if meta.is_empty() { 2 } else { 3 };
        let mut seq = s.serialize_seq(Some(n))?;
        seq.serialize_element(&e.ts_ns.to_string())?;
        seq.serialize_element(text.line(e))?;
        if n == 3 {
            seq.serialize_element(&MetaMap(meta))?;
        }
        seq.end()
    }
}

/// The length of [`JsonEntry`] as serde_json writes it, counted without
/// writing it: the planner sizes every JSON entry (tested against
/// serde_json's output).
pub fn json_entry_len(e: &Entry, text: &Text) -> usize {
    // `["<ns>","<line>"]`
    let mut n = 1 + (decimal_len(e.ts_ns) + 2) + 1 + json_string_len(text.line(e)) + 1;
    let meta = text.metadata(e);
    if !meta.is_empty() {
        // `,{"k":"v","k2":"v2"}`
        n += 1 + 2 + meta.len() - 1;
        for p in meta {
            n += json_string_len(&p.name) + 1 + json_string_len(&p.value);
        }
    }
    n
}

/// Characters of `v` in decimal, sign included.
fn decimal_len(v: i64) -> usize {
    let digits = v
        .unsigned_abs()
        .checked_ilog10()
        .map_or(1, |l| l as usize + 1);
    digits + usize::from(v < 0)
}

/// The length of `s` as a quoted JSON string written by serde_json: `"`,
/// `\` and `\b\f\n\r\t` take two bytes, other control characters six
/// (`\u00XX`), everything else itself.
/// Eight bytes at a time are passed over when none needs escaping (the
/// file sink's escaping tables, which are serde_json's).
fn json_string_len(s: &str) -> usize {
    use crate::sink::file::json::{needs_escape, ESCAPE};
    let extra = |bytes: &[u8]| -> usize {
        bytes
            .iter()
            .map(|&b| match ESCAPE[b as usize] {
                0 => 0,
                b'u' => 5,
                _ => 1,
            })
            .sum()
    };
    let mut words = s.as_bytes().chunks_exact(8);
    let mut n = s.len() + 2;
    for w in &mut words {
        if needs_escape(u64::from_le_bytes(w.try_into().expect("8 bytes"))) {
            n += extra(w);
        }
    }
    n + extra(words.remainder())
}

struct MetaMap<'a>(&'a [LabelPairAdapter]);

impl Serialize for MetaMap<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for p in self.0 {
            m.serialize_entry(&p.name, &p.value)?;
        }
        m.end()
    }
}

/// Loki's label syntax: `{a="x", b="y"}`, values quoted Go-style.
pub fn label_string<'a>(pairs: impl Iterator<Item = (&'a str, &'a str)>) -> String {
    let mut out = String::with_capacity(64);
    write_label_string(&mut out, pairs);
    out
}

/// [`label_string`] into `out` (cleared first), for a caller that reuses
/// one buffer rather than allocate a string per event.
pub fn write_label_string<'a>(out: &mut String, pairs: impl Iterator<Item = (&'a str, &'a str)>) {
    out.clear();
    out.push('{');
    for (i, (k, v)) in pairs.enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        out.push_str(k);
        out.push_str("=\"");
        escape_quoted(out, v);
        out.push('"');
    }
    out.push('}');
}

/// Appends `v` escaped for a double-quoted Go/LogQL/logfmt string: `\\`,
/// `\"`, `\n`, `\r`, `\t`, other control characters (U+0000-U+001F,
/// U+007F-U+009F) as `\uXXXX`. Runs of characters that need nothing are
/// copied whole (every label value and logfmt field goes through here).
fn escape_quoted(out: &mut String, v: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let b = v.as_bytes();
    let mut start = 0;
    let mut i = 0;
    while i < b.len() {
        // Eight bytes at a time past those that need nothing (nearly all),
        // then straight to the first byte that may.
        if let Some(word) = b.get(i..i + 8) {
            let may = may_need_escape(u64::from_le_bytes(word.try_into().expect("8 bytes")));
            if may == 0 {
                i += 8;
                continue;
            }
            i += (may.trailing_zeros() / 8) as usize;
        }
        // The control character and its length in bytes, if one starts here.
        let (c, len) = match b[i] {
            b'\\' | b'"' | 0x00..=0x1f | 0x7f => (u32::from(b[i]), 1),
            // U+0080-U+009F: 0xC2 followed by 0x80-0x9F in UTF-8.
            0xc2 if matches!(b.get(i + 1), Some(0x80..=0x9f)) => (u32::from(b[i + 1]), 2),
            _ => {
                i += 1;
                continue;
            }
        };
        out.push_str(&v[start..i]);
        match c {
            0x5c => out.push_str("\\\\"),
            0x22 => out.push_str("\\\""),
            0x0a => out.push_str("\\n"),
            0x0d => out.push_str("\\r"),
            0x09 => out.push_str("\\t"),
            c => {
                out.push_str("\\u00");
                out.push(char::from(HEX[(c >> 4) as usize]));
                out.push(char::from(HEX[(c & 0xf) as usize]));
            }
        }
        i += len;
        start = i;
    }
    out.push_str(&v[start..]);
}

/// The bytes of `w` (little-endian) that [`escape_quoted`] looks at, as
/// the high bit of each: a control character (below 0x20), `"`, `\`, DEL
/// (0x7f) or 0xC2 (the first byte of U+0080-U+009F). The lowest bit set is
/// exact (the first such byte), and none is missed: the "has a zero byte"
/// and "has a byte less than n" word tricks can only flag a byte above a
/// true match (a borrow), never below one.
fn may_need_escape(w: u64) -> u64 {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let has = |x: u8| {
        let d = w ^ (ONES * u64::from(x));
        d.wrapping_sub(ONES) & !d
    };
    let control = w.wrapping_sub(ONES * 0x20) & !w;
    (control | has(b'"') | has(b'\\') | has(0x7f) | has(0xc2)) & HIGH
}

/// Parses a label string written by [`label_string`] back into pairs.
fn parse_label_string(s: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = s.trim().trim_start_matches('{').trim_end_matches('}');
    while let Some(eq) = rest.find("=\"") {
        let key = rest[..eq].trim().trim_start_matches(',').trim().to_owned();
        let mut value = String::new();
        let mut chars = rest[eq + 2..].char_indices();
        let mut end = rest.len() - eq - 2;
        while let Some((i, c)) = chars.next() {
            match c {
                '"' => {
                    end = i + 1;
                    break;
                }
                '\\' => match chars.next().map(|(_, c)| c) {
                    Some('n') => value.push('\n'),
                    Some('r') => value.push('\r'),
                    Some('t') => value.push('\t'),
                    Some('u') => {
                        let hex: String = chars.by_ref().take(4).map(|(_, c)| c).collect();
                        if let Some(c) = u32::from_str_radix(&hex, 16).ok().and_then(char::from_u32)
                        {
                            value.push(c);
                        }
                    }
                    Some(c) => value.push(c),
                    None => {}
                },
                c => value.push(c),
            }
        }
        out.push((key, value));
        rest = &rest[eq + 2 + end..];
    }
    out
}

/// Turns an event's message and fields into a line (and structured metadata).
#[derive(Debug, Clone)]
pub struct LineBuilder {
    pub format: LineFormat,
    pub structured_metadata: bool,
    pub max_line_size: usize,
}

/// Appended to a truncated line.
pub const TRUNCATION_MARKER: &str = " …[truncated by weir]";

impl LineBuilder {
    /// Builds the entry for `event`, its line (and metadata) appended to
    /// `text`; `extra` are event labels not used as stream labels, kept
    /// ahead of the fields. Returns the entry and whether the line was
    /// truncated.
    pub fn entry(&self, event: &Event, extra: &[(&str, &str)], text: &mut Text) -> (Entry, bool) {
        let message = match std::str::from_utf8(&event.message) {
            Ok(s) => std::borrow::Cow::Borrowed(s),
            Err(_) => String::from_utf8_lossy(&event.message),
        };
        let fields = extra
            .iter()
            .copied()
            .chain(event.fields.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        let meta_start = text.meta.len();
        let start = text.lines.len();
        if self.structured_metadata {
            text.meta.extend(fields.map(|(k, v)| LabelPairAdapter {
                name: sanitize_name(k),
                value: v.to_owned(),
            }));
            self.write_line(&mut text.lines, &message, std::iter::empty());
        } else {
            self.write_line(&mut text.lines, &message, fields);
        }
        let truncated = truncate(&mut text.lines, start, self.max_line_size);
        let line = (start, text.lines.len());
        let ts = Timestamp::from_ns(event.timestamp_ns);
        // Metadata pairs per plan fit a u32: at most 100,000 events of
        // fields under `batch_max_bytes`.
        let meta = (meta_start as u32, text.meta.len() as u32);
        let encoded_len = entry_len(ts, line.1 - line.0, &text.meta[meta_start..]);
        let entry = Entry {
            ts_ns: event.timestamp_ns,
            line,
            meta,
            encoded_len,
        };
        (entry, truncated)
    }

    fn write_line<'a>(
        &self,
        out: &mut String,
        message: &str,
        fields: impl Iterator<Item = (&'a str, &'a str)>,
    ) {
        match self.format {
            LineFormat::Raw => out.push_str(message),
            LineFormat::Logfmt => {
                out.push_str("msg=");
                logfmt_value(out, message);
                for (k, v) in fields {
                    out.push(' ');
                    push_sanitized_name(out, k);
                    out.push('=');
                    logfmt_value(out, v);
                }
            }
            LineFormat::Json => {
                let mut buf = Vec::with_capacity(message.len() + 64);
                let mut ser = serde_json::Serializer::new(&mut buf);
                let mut m = ser.serialize_map(None).expect("to a Vec");
                m.serialize_entry("message", message).expect("to a Vec");
                for (k, v) in fields {
                    m.serialize_entry(k, v).expect("to a Vec");
                }
                SerializeMap::end(m).expect("to a Vec");
                out.push_str(std::str::from_utf8(&buf).expect("serde_json writes UTF-8"));
            }
        }
    }
}

/// Cuts the line at `lines[start..]` to at most `max` bytes (marker
/// included) on a char boundary.
fn truncate(lines: &mut String, start: usize, max: usize) -> bool {
    if lines.len() - start <= max {
        return false;
    }
    // `start` is a char boundary: the loop stops there at the latest.
    let mut cut = start + max.saturating_sub(TRUNCATION_MARKER.len());
    while !lines.is_char_boundary(cut) {
        cut -= 1;
    }
    lines.truncate(cut);
    lines.push_str(TRUNCATION_MARKER);
    true
}

/// A logfmt value: bare when it is a plain word, else quoted and escaped.
fn logfmt_value(out: &mut String, v: &str) {
    if plain_logfmt(v) {
        out.push_str(v);
    } else {
        out.push('"');
        escape_quoted(out, v);
        out.push('"');
    }
}

/// Whether `v` can be a bare logfmt value: not empty, and no whitespace,
/// control character, `"`, `=` or `\`. ASCII text (nearly every value) is
/// checked byte by byte; the char-by-char Unicode test is only for the rest.
fn plain_logfmt(v: &str) -> bool {
    if v.is_ascii() {
        // The ASCII whitespace and control characters are exactly the
        // bytes up to the space, and DEL.
        !v.is_empty()
            && v.bytes()
                .all(|b| b > b' ' && b != 0x7f && b != b'"' && b != b'=' && b != b'\\')
    } else {
        v.chars()
            .all(|c| !c.is_whitespace() && !c.is_control() && c != '"' && c != '=' && c != '\\')
    }
}

/// A label-like name (`[a-zA-Z_][a-zA-Z0-9_]*`): other characters become `_`.
pub fn sanitize_name(k: &str) -> String {
    let mut s = String::with_capacity(k.len() + 1);
    push_sanitized_name(&mut s, k);
    s
}

/// Appends [`sanitize_name`]`(k)` to `out` without a string of its own (a
/// logfmt line has one per field). A name that is already valid, as nearly
/// all are, is copied whole.
fn push_sanitized_name(out: &mut String, k: &str) {
    let valid = |c: char| c.is_ascii_alphanumeric() || c == '_';
    if k.is_empty() || k.starts_with(|c: char| c.is_ascii_digit()) {
        out.push('_');
    }
    if k.chars().all(valid) {
        out.push_str(k);
    } else {
        out.extend(k.chars().map(|c| if valid(c) { c } else { '_' }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Origin;

    #[test]
    fn timestamps_split_into_seconds_and_nanos() {
        let t = Timestamp::from_ns(1_700_000_000_123_456_789);
        assert_eq!((t.seconds, t.nanos), (1_700_000_000, 123_456_789));
        assert_eq!(t.as_ns(), 1_700_000_000_123_456_789);
        let t = Timestamp::from_ns(-1);
        assert_eq!((t.seconds, t.nanos), (-1, 999_999_999));
    }

    #[test]
    fn label_string_escapes_and_parses_back() {
        let pairs = [("host", "h1"), ("service", "a\"b\\c\nd\u{1}")];
        let s = label_string(pairs.iter().copied());
        assert_eq!(s, r#"{host="h1", service="a\"b\\c\nd\u0001"}"#);
        let back = parse_label_string(&s);
        assert_eq!(
            back,
            vec![
                ("host".to_owned(), "h1".to_owned()),
                ("service".to_owned(), "a\"b\\c\nd\u{1}".to_owned())
            ]
        );
    }

    /// The escaping as it was written first, char by char: the reference.
    fn escape_quoted_by_char(v: &str) -> String {
        let mut out = String::new();
        for c in v.chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '"' => out.push_str("\\\""),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\t' => out.push_str("\\t"),
                c if c.is_control() => {
                    use std::fmt::Write as _;
                    let _ = write!(out, "\\u{:04x}", c as u32);
                }
                c => out.push(c),
            }
        }
        out
    }

    #[test]
    fn escaping_matches_the_char_by_char_reference_on_every_control_char() {
        let every: String = (0u32..0x800).filter_map(char::from_u32).collect();
        for v in [
            every.as_str(),
            "",
            "plain",
            "\u{9f}\u{a0}\u{85}é\u{2028}\\\"\u{7f}x",
        ] {
            let mut out = String::new();
            escape_quoted(&mut out, v);
            assert_eq!(out, escape_quoted_by_char(v), "{v:?}");
        }
    }

    #[test]
    fn word_test_finds_exactly_the_bytes_escaping_looks_at() {
        let looked_at = |x: u8| matches!(x, 0x00..=0x1f | b'"' | b'\\' | 0x7f | 0xc2);
        for filler in [
            b'a', 0xff, 0xc3, 0x80, b'!', b'#', b'[', b']', 0x7e, 0x20, 0x00, b'"',
        ] {
            for at in 0..8 {
                for b in 0..=255u8 {
                    let mut w = [filler; 8];
                    w[at] = b;
                    // The first byte looked at, exactly (later flags may
                    // be false positives: escaping checks each byte).
                    let want = w.iter().position(|&x| looked_at(x));
                    let got = may_need_escape(u64::from_le_bytes(w));
                    let first = (got != 0).then(|| (got.trailing_zeros() / 8) as usize);
                    assert_eq!(first, want, "{w:?}");
                }
            }
        }
    }

    proptest::proptest! {
        #[test]
        fn escaping_matches_the_char_by_char_reference(v in "\\PC*|[\\x00-\\x20\\x7f-\\u{a0}\"\\\\a]{0,24}") {
            let mut out = String::new();
            escape_quoted(&mut out, &v);
            proptest::prop_assert_eq!(out, escape_quoted_by_char(&v));
        }
    }

    /// The bare-value test as it was written before the ASCII fast path:
    /// the reference.
    fn plain_by_char(v: &str) -> bool {
        !v.is_empty()
            && v.chars()
                .all(|c| !c.is_whitespace() && !c.is_control() && c != '"' && c != '=' && c != '\\')
    }

    #[test]
    fn bare_logfmt_values_match_the_char_by_char_reference_for_every_char() {
        for c in (0u32..0x3100).filter_map(char::from_u32) {
            for v in [c.to_string(), format!("a{c}b"), format!("{c}é")] {
                assert_eq!(plain_logfmt(&v), plain_by_char(&v), "{v:?}");
            }
        }
        assert!(!plain_logfmt(""));
        assert!(plain_logfmt("4f2a9c1b7e3d"));
        assert!(!plain_logfmt("GET / 200"));
    }

    /// Appends an entry to `text` as [`LineBuilder::entry`] does.
    fn push_entry(text: &mut Text, ts: i64, line: &str, meta: &[(&str, &str)]) -> Entry {
        let start = text.lines.len();
        text.lines.push_str(line);
        let meta_start = text.meta.len();
        text.meta
            .extend(meta.iter().map(|&(name, value)| LabelPairAdapter {
                name: name.into(),
                value: value.into(),
            }));
        Entry {
            ts_ns: ts,
            line: (start, text.lines.len()),
            meta: (meta_start as u32, text.meta.len() as u32),
            encoded_len: entry_len(Timestamp::from_ns(ts), line.len(), &text.meta[meta_start..]),
        }
    }

    fn json_entry(ts: i64, line: &str, meta: &[(String, String)]) -> (Entry, Text) {
        let mut text = Text::default();
        // Something before, as in a plan's buffer.
        push_entry(&mut text, 1, "before", &[("b", "c")]);
        let meta: Vec<(&str, &str)> = meta.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let e = push_entry(&mut text, ts, line, &meta);
        (e, text)
    }

    #[test]
    fn json_entry_len_is_what_serde_json_writes_for_every_byte_and_edge_timestamp() {
        let every: String = (0u32..0x800).filter_map(char::from_u32).collect();
        for ts in [
            0,
            1,
            -1,
            9,
            10,
            -10,
            999_999_999,
            i64::MAX,
            i64::MIN + 1,
            1_700_000_000_123_456_789,
        ] {
            for meta in [vec![], vec![("k\"".to_owned(), every.clone())]] {
                let (e, text) = json_entry(ts, &every, &meta);
                let written = serde_json::to_vec(&JsonEntry(&e, &text)).unwrap().len();
                assert_eq!(json_entry_len(&e, &text), written, "ts {ts}");
            }
        }
    }

    proptest::proptest! {
        #[test]
        fn bare_logfmt_values_match_the_char_by_char_reference(v in "\\PC*|[\\x00-\\x20\\x7f-\\u{a0}\"=\\\\a]{0,24}") {
            proptest::prop_assert_eq!(plain_logfmt(&v), plain_by_char(&v));
        }

        #[test]
        fn json_entry_len_is_what_serde_json_writes(
            ts in proptest::num::i64::ANY,
            line in "\\PC*|[\\x00-\\x20\\x7f\"\\\\a]{0,24}",
            meta in proptest::collection::vec(("\\PC{0,8}", "[\\x00-\\x20\"\\\\é]{0,12}"), 0..4),
        ) {
            let (e, text) = json_entry(ts, &line, &meta);
            let written = serde_json::to_vec(&JsonEntry(&e, &text)).unwrap().len();
            proptest::prop_assert_eq!(json_entry_len(&e, &text), written);
        }
    }

    fn sample() -> Event {
        let mut e = Event::new(5_000_000_123, Origin::Docker, "GET / 200");
        e.fields.push(("container_id".into(), "abc".into()));
        e.fields.push(("weird key".into(), "two words".into()));
        e
    }

    #[test]
    fn logfmt_json_and_raw_lines() {
        let mut b = LineBuilder {
            format: LineFormat::Logfmt,
            structured_metadata: false,
            max_line_size: 1024,
        };
        let mut text = Text::default();
        let (e, _) = b.entry(&sample(), &[("level", "info")], &mut text);
        assert_eq!(
            text.line(&e),
            r#"msg="GET / 200" level=info container_id=abc weird_key="two words""#
        );
        assert_eq!(e.ts_ns, 5_000_000_123);
        b.format = LineFormat::Json;
        let (e, _) = b.entry(&sample(), &[], &mut text);
        let v: serde_json::Value = serde_json::from_str(text.line(&e)).unwrap();
        assert_eq!(v["message"], "GET / 200");
        assert_eq!(v["weird key"], "two words");
        b.format = LineFormat::Raw;
        b.structured_metadata = true;
        let (e, _) = b.entry(&sample(), &[], &mut text);
        assert_eq!(text.line(&e), "GET / 200");
        assert_eq!(text.metadata(&e).len(), 2);
        assert_eq!(text.metadata(&e)[1].name, "weird_key");
        assert_eq!(text.metadata(&e)[1].value, "two words");
    }

    /// Field names in a logfmt line and metadata names are sanitised the
    /// same way: digits first, empty, non-ASCII and punctuation.
    #[test]
    fn names_are_sanitised_alike_in_lines_and_metadata() {
        let cases = [
            ("_PID", "_PID"),
            ("1st", "_1st"),
            ("", "_"),
            ("é-a.b", "__a_b"),
            ("9é", "_9_"),
        ];
        let mut e = Event::new(0, Origin::Journal, "m");
        e.fields = cases
            .iter()
            .map(|(k, _)| (k.to_string(), "v".into()))
            .collect();
        let b = LineBuilder {
            format: LineFormat::Logfmt,
            structured_metadata: false,
            max_line_size: 1024,
        };
        let mut text = Text::default();
        let (entry, _) = b.entry(&e, &[], &mut text);
        assert_eq!(text.line(&entry), "msg=m _PID=v _1st=v _=v __a_b=v _9_=v");
        for (k, want) in cases {
            assert_eq!(sanitize_name(k), want, "{k:?}");
        }
    }

    #[test]
    fn long_lines_are_truncated_on_a_char_boundary_with_a_marker() {
        let b = LineBuilder {
            format: LineFormat::Raw,
            structured_metadata: false,
            max_line_size: 100,
        };
        let e = Event::new(0, Origin::Journal, "é".repeat(200));
        let mut text = Text::default();
        // A line before: truncation cuts only the entry's own line.
        let (first, _) = b.entry(&Event::new(0, Origin::Journal, "é"), &[], &mut text);
        let (entry, truncated) = b.entry(&e, &[], &mut text);
        assert!(truncated);
        assert!(text.line(&entry).len() <= 100);
        assert!(text.line(&entry).len() > 90);
        assert!(text.line(&entry).ends_with(TRUNCATION_MARKER));
        assert_eq!(text.line(&first), "é");
        let (entry, truncated) = b.entry(&Event::new(0, Origin::Journal, "short"), &[], &mut text);
        assert!(!truncated);
        assert_eq!(text.line(&entry), "short");
    }

    #[test]
    fn invalid_utf8_is_replaced() {
        let b = LineBuilder {
            format: LineFormat::Raw,
            structured_metadata: false,
            max_line_size: 100,
        };
        let mut text = Text::default();
        let (entry, _) = b.entry(
            &Event::new(0, Origin::Journal, b"a\xffb".to_vec()),
            &[],
            &mut text,
        );
        assert_eq!(text.line(&entry), "a\u{fffd}b");
    }

    fn request() -> (Vec<Stream>, Text) {
        let mut text = Text::default();
        let e = push_entry(&mut text, 1_500_000_000, "hello", &[("trace_id", "t1")]);
        let streams = vec![Stream {
            labels: label_string([("host", "h"), ("source", "docker")].into_iter()),
            entries: vec![e],
        }];
        (streams, text)
    }

    #[test]
    fn protobuf_body_is_snappy_block_of_the_request() {
        let (streams, text) = request();
        let (body, decoded) = encode(&streams, &text, Encoding::Protobuf, Compression::Snappy);
        assert_eq!(body.content_type, "application/x-protobuf");
        let raw = snap::raw::Decoder::new()
            .decompress_vec(&body.bytes)
            .unwrap();
        assert_eq!(raw.len(), decoded);
        assert_eq!(decoded, protobuf_len(&streams));
        let req = PushRequest::decode(raw.as_slice()).unwrap();
        assert_eq!(req, to_request(&streams, &text));
        assert_eq!(req.streams[0].entries[0].line, "hello");
    }

    /// A request with what prost leaves out or writes specially: empty
    /// lines and labels, zero and negative timestamps, a stream without
    /// entries, metadata with empty names or values, lengths past one
    /// varint byte, lines behind others in the plan's buffer.
    fn awkward_request() -> (Vec<Stream>, Text) {
        let mut text = Text::default();
        let mut t =
            |ts: i64, line: &str, meta: &[(&str, &str)]| push_entry(&mut text, ts, line, meta);
        let first = vec![
            t(0, "", &[]),
            t(-1_500_000_001, "x", &[("a", ""), ("", "b")]),
            t(-1, &"y".repeat(300), &[]),
            t(999_999_999, "ns", &[]),
            t(i64::MAX, &"z".repeat(20_000), &[("t", "1")]),
            t(i64::MIN, "min", &[]),
        ];
        let third = (0..200)
            .map(|i| t(i * 7_000_000_001, &"w".repeat(i as usize), &[]))
            .collect();
        let streams = vec![
            Stream {
                labels: label_string([("host", "h")].into_iter()),
                entries: first,
            },
            Stream {
                labels: String::new(),
                entries: Vec::new(),
            },
            Stream {
                labels: "l".repeat(200),
                entries: third,
            },
        ];
        (streams, text)
    }

    #[test]
    fn protobuf_is_written_byte_for_byte_as_prost_writes_it() {
        let mut scratch = Scratch::default();
        for (streams, text) in [request(), awkward_request(), (Vec::new(), Text::default())] {
            let (body, decoded) =
                scratch.encode(&streams, &text, Encoding::Protobuf, Compression::Snappy);
            let raw = snap::raw::Decoder::new()
                .decompress_vec(&body.bytes)
                .unwrap();
            let req = to_request(&streams, &text);
            assert_eq!(raw, req.encode_to_vec());
            assert_eq!(decoded, raw.len());
            assert_eq!(protobuf_len(&streams), raw.len());
            for (s, rs) in streams.iter().zip(&req.streams) {
                for (e, re) in s.entries.iter().zip(&rs.entries) {
                    assert_eq!(e.encoded_len, re.encoded_len());
                }
            }
        }
    }

    #[test]
    fn json_body_matches_loki_documented_shape() {
        let (streams, text) = request();
        let (body, decoded) = encode(&streams, &text, Encoding::Json, Compression::Gzip);
        assert_eq!(body.content_encoding, Some("gzip"));
        let mut raw = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&body.bytes[..]), &mut raw)
            .unwrap();
        assert_eq!(raw.len(), decoded);
        let v: serde_json::Value = serde_json::from_slice(&raw).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"streams": [{"stream": {"host": "h", "source": "docker"},
                "values": [["1500000000", "hello", {"trace_id": "t1"}]]}]})
        );
    }
}
