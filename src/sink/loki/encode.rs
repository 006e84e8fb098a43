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

impl EntryAdapter {
    pub fn ts_ns(&self) -> i64 {
        self.timestamp.map_or(0, |t| t.as_ns())
    }
}

/// A finished request body and the headers that describe it.
#[derive(Debug, Clone)]
pub struct Body {
    pub bytes: bytes::Bytes,
    pub content_type: &'static str,
    pub content_encoding: Option<&'static str>,
}

/// Encodes `req` as configured, with buffers of its own (see [`Scratch`]).
/// Returns the body and the decoded size (the uncompressed protobuf, or the
/// uncompressed JSON).
pub fn encode(req: &PushRequest, encoding: Encoding, compression: Compression) -> (Body, usize) {
    Scratch::default().encode(req, encoding, compression)
}

/// What encoding a push needs besides its output, kept by a sink lane from
/// one push to the next: the uncompressed protobuf (snappy's input), each
/// entry's encoded length, snappy's hash table and its output buffer.
#[derive(Default)]
pub struct Scratch {
    raw: Vec<u8>,
    lens: Vec<u32>,
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
        req: &PushRequest,
        encoding: Encoding,
        compression: Compression,
    ) -> (Body, usize) {
        match encoding {
            Encoding::Protobuf => {
                self.raw.clear();
                write_protobuf(req, &mut self.raw, &mut self.lens);
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
            Encoding::Json => encode_json(req, compression),
        }
    }
}

/// Writes `req` as prost would (`req.encode_to_vec()`, byte for byte: a
/// test checks it), computing each entry's length once: prost's own
/// `encode` computes the lengths of nested messages again at each level
/// (the request's, each stream's, each entry's), three walks of every entry.
fn write_protobuf(req: &PushRequest, out: &mut Vec<u8>, lens: &mut Vec<u32>) {
    use prost::encoding::{encode_key, encode_varint, encoded_len_varint, key_len, WireType};
    for stream in &req.streams {
        lens.clear();
        let mut len = 0;
        if !stream.labels.is_empty() {
            len +=
                key_len(1) + encoded_len_varint(stream.labels.len() as u64) + stream.labels.len();
        }
        for entry in &stream.entries {
            let n = entry.encoded_len();
            lens.push(n as u32);
            len += key_len(2) + encoded_len_varint(n as u64) + n;
        }
        if stream.hash != 0 {
            len += key_len(3) + encoded_len_varint(stream.hash);
        }
        out.reserve(len + 16);
        encode_key(1, WireType::LengthDelimited, out);
        encode_varint(len as u64, out);
        if !stream.labels.is_empty() {
            prost::encoding::string::encode(1, &stream.labels, out);
        }
        for (entry, &n) in stream.entries.iter().zip(lens.iter()) {
            encode_key(2, WireType::LengthDelimited, out);
            encode_varint(u64::from(n), out);
            write_entry(entry, out);
        }
        if stream.hash != 0 {
            prost::encoding::uint64::encode(3, &stream.hash, out);
        }
    }
}

/// An entry's fields, as prost writes them (proto3: empty and zero values
/// are left out; a present timestamp is written even if zero). Not
/// `Message::encode`: it computes the entry's length again first (the walk
/// this function exists to save), and `encode_raw` is prost's own, "meant
/// to be used only by `Message` implementations".
fn write_entry(entry: &EntryAdapter, out: &mut Vec<u8>) {
    if let Some(ts) = &entry.timestamp {
        prost::encoding::message::encode(1, ts, out);
    }
    if !entry.line.is_empty() {
        prost::encoding::string::encode(2, &entry.line, out);
    }
    for pair in &entry.structured_metadata {
        prost::encoding::message::encode(3, pair, out);
    }
}

/// The JSON body of `req`, gzip'ed if configured.
fn encode_json(req: &PushRequest, compression: Compression) -> (Body, usize) {
    let raw = serde_json::to_vec(&JsonPush(req)).expect("serialising to a Vec cannot fail");
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

/// The JSON push format, serialised straight from the protobuf messages.
pub struct JsonPush<'a>(pub &'a PushRequest);

impl Serialize for JsonPush<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(1))?;
        m.serialize_entry("streams", &JsonStreams(&self.0.streams))?;
        m.end()
    }
}

struct JsonStreams<'a>(&'a [StreamAdapter]);

impl Serialize for JsonStreams<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.0.len()))?;
        for stream in self.0 {
            seq.serialize_element(&JsonStream(stream))?;
        }
        seq.end()
    }
}

struct JsonStream<'a>(&'a StreamAdapter);

impl Serialize for JsonStream<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(2))?;
        m.serialize_entry("stream", &JsonLabels(&self.0.labels))?;
        m.serialize_entry("values", &JsonEntries(&self.0.entries))?;
        m.end()
    }
}

struct JsonEntries<'a>(&'a [EntryAdapter]);

impl Serialize for JsonEntries<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.0.len()))?;
        for entry in self.0 {
            seq.serialize_element(&JsonEntry(entry))?;
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
pub struct JsonEntry<'a>(pub &'a EntryAdapter);

impl Serialize for JsonEntry<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let e = self.0;
        let n = if e.structured_metadata.is_empty() {
            2
        } else {
            3
        };
        let mut seq = s.serialize_seq(Some(n))?;
        seq.serialize_element(&e.ts_ns().to_string())?;
        seq.serialize_element(&e.line)?;
        if n == 3 {
            seq.serialize_element(&MetaMap(&e.structured_metadata))?;
        }
        seq.end()
    }
}

/// The length of [`JsonEntry`] as serde_json writes it, counted without
/// writing it: the planner sizes every JSON entry (tested against
/// serde_json's output).
pub fn json_entry_len(e: &EntryAdapter) -> usize {
    // `["<ns>","<line>"]`
    let mut n = 1 + (decimal_len(e.ts_ns()) + 2) + 1 + json_string_len(&e.line) + 1;
    if !e.structured_metadata.is_empty() {
        // `,{"k":"v","k2":"v2"}`
        n += 1 + 2 + e.structured_metadata.len() - 1;
        for p in &e.structured_metadata {
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
    /// Builds the entry for `event`; `extra` are event labels not used as
    /// stream labels, kept ahead of the fields. Returns the entry and whether
    /// the line was truncated.
    pub fn entry(&self, event: &Event, extra: &[(&str, &str)]) -> (EntryAdapter, bool) {
        let message = match std::str::from_utf8(&event.message) {
            Ok(s) => std::borrow::Cow::Borrowed(s),
            Err(_) => String::from_utf8_lossy(&event.message),
        };
        let fields = extra
            .iter()
            .copied()
            .chain(event.fields.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        let mut metadata = Vec::new();
        let mut line = String::with_capacity(message.len() + 64);
        if self.structured_metadata {
            metadata = fields
                .map(|(k, v)| LabelPairAdapter {
                    name: sanitize_name(k),
                    value: v.to_owned(),
                })
                .collect();
            self.write_line(&mut line, &message, std::iter::empty());
        } else {
            self.write_line(&mut line, &message, fields);
        }
        let truncated = truncate(&mut line, self.max_line_size);
        let entry = EntryAdapter {
            timestamp: Some(Timestamp::from_ns(event.timestamp_ns)),
            line,
            structured_metadata: metadata,
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

/// Cuts `line` to at most `max` bytes (marker included) on a char boundary.
fn truncate(line: &mut String, max: usize) -> bool {
    if line.len() <= max {
        return false;
    }
    let mut cut = max.saturating_sub(TRUNCATION_MARKER.len());
    while !line.is_char_boundary(cut) {
        cut -= 1;
    }
    line.truncate(cut);
    line.push_str(TRUNCATION_MARKER);
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

    fn json_entry(ts: i64, line: String, meta: Vec<(String, String)>) -> EntryAdapter {
        EntryAdapter {
            timestamp: Some(Timestamp::from_ns(ts)),
            line,
            structured_metadata: meta
                .into_iter()
                .map(|(name, value)| LabelPairAdapter { name, value })
                .collect(),
        }
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
                let e = json_entry(ts, every.clone(), meta);
                let written = serde_json::to_vec(&JsonEntry(&e)).unwrap().len();
                assert_eq!(json_entry_len(&e), written, "ts {ts}");
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
            let e = json_entry(ts, line, meta);
            let written = serde_json::to_vec(&JsonEntry(&e)).unwrap().len();
            proptest::prop_assert_eq!(json_entry_len(&e), written);
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
        let (e, _) = b.entry(&sample(), &[("level", "info")]);
        assert_eq!(
            e.line,
            r#"msg="GET / 200" level=info container_id=abc weird_key="two words""#
        );
        assert_eq!(e.ts_ns(), 5_000_000_123);
        b.format = LineFormat::Json;
        let (e, _) = b.entry(&sample(), &[]);
        let v: serde_json::Value = serde_json::from_str(&e.line).unwrap();
        assert_eq!(v["message"], "GET / 200");
        assert_eq!(v["weird key"], "two words");
        b.format = LineFormat::Raw;
        b.structured_metadata = true;
        let (e, _) = b.entry(&sample(), &[]);
        assert_eq!(e.line, "GET / 200");
        assert_eq!(e.structured_metadata[1].name, "weird_key");
        assert_eq!(e.structured_metadata[1].value, "two words");
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
        let (entry, _) = b.entry(&e, &[]);
        assert_eq!(entry.line, "msg=m _PID=v _1st=v _=v __a_b=v _9_=v");
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
        let (entry, truncated) = b.entry(&e, &[]);
        assert!(truncated);
        assert!(entry.line.len() <= 100);
        assert!(entry.line.ends_with(TRUNCATION_MARKER));
        let (entry, truncated) = b.entry(&Event::new(0, Origin::Journal, "short"), &[]);
        assert!(!truncated);
        assert_eq!(entry.line, "short");
    }

    #[test]
    fn invalid_utf8_is_replaced() {
        let b = LineBuilder {
            format: LineFormat::Raw,
            structured_metadata: false,
            max_line_size: 100,
        };
        let (entry, _) = b.entry(&Event::new(0, Origin::Journal, b"a\xffb".to_vec()), &[]);
        assert_eq!(entry.line, "a\u{fffd}b");
    }

    fn request() -> PushRequest {
        PushRequest {
            streams: vec![StreamAdapter {
                labels: label_string([("host", "h"), ("source", "docker")].into_iter()),
                entries: vec![EntryAdapter {
                    timestamp: Some(Timestamp::from_ns(1_500_000_000)),
                    line: "hello".into(),
                    structured_metadata: vec![LabelPairAdapter {
                        name: "trace_id".into(),
                        value: "t1".into(),
                    }],
                }],
                hash: 0,
            }],
        }
    }

    #[test]
    fn protobuf_body_is_snappy_block_of_the_request() {
        let req = request();
        let (body, decoded) = encode(&req, Encoding::Protobuf, Compression::Snappy);
        assert_eq!(body.content_type, "application/x-protobuf");
        let raw = snap::raw::Decoder::new()
            .decompress_vec(&body.bytes)
            .unwrap();
        assert_eq!(raw.len(), decoded);
        assert_eq!(decoded, req.encoded_len());
        assert_eq!(PushRequest::decode(raw.as_slice()).unwrap(), req);
    }

    /// A request with what prost leaves out or writes specially: empty
    /// lines and labels, zero and negative timestamps, no timestamp, a
    /// stream hash, metadata with empty values, lengths past one varint byte.
    fn awkward_request() -> PushRequest {
        let entry = |ts: Option<i64>, line: &str, meta: &[(&str, &str)]| EntryAdapter {
            timestamp: ts.map(Timestamp::from_ns),
            line: line.into(),
            structured_metadata: meta
                .iter()
                .map(|&(name, value)| LabelPairAdapter {
                    name: name.into(),
                    value: value.into(),
                })
                .collect(),
        };
        PushRequest {
            streams: vec![
                StreamAdapter {
                    labels: label_string([("host", "h")].into_iter()),
                    entries: vec![
                        entry(Some(0), "", &[]),
                        entry(Some(-1_500_000_001), "x", &[("a", ""), ("", "b")]),
                        entry(None, &"y".repeat(300), &[]),
                        entry(Some(i64::MAX), &"z".repeat(20_000), &[("t", "1")]),
                    ],
                    hash: 0,
                },
                StreamAdapter {
                    labels: String::new(),
                    entries: Vec::new(),
                    hash: u64::MAX,
                },
                StreamAdapter {
                    labels: "l".repeat(200),
                    entries: (0..200)
                        .map(|i| entry(Some(i * 7_000_000_001), &"w".repeat(i as usize), &[]))
                        .collect(),
                    hash: 3,
                },
            ],
        }
    }

    #[test]
    fn protobuf_is_written_byte_for_byte_as_prost_writes_it() {
        let mut scratch = Scratch::default();
        for req in [request(), awkward_request(), PushRequest::default()] {
            let (body, decoded) = scratch.encode(&req, Encoding::Protobuf, Compression::Snappy);
            let raw = snap::raw::Decoder::new()
                .decompress_vec(&body.bytes)
                .unwrap();
            assert_eq!(raw, req.encode_to_vec());
            assert_eq!(decoded, raw.len());
        }
    }

    #[test]
    fn json_body_matches_loki_documented_shape() {
        let (body, decoded) = encode(&request(), Encoding::Json, Compression::Gzip);
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
