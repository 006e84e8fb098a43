//! One record = one appended batch: a fixed header, an optional source
//! position, then the events in [`crate::event::codec`] encoding.
//!
//! ```text
//! record  := magic:u32le len:u32le crc:u32le count:u32le flags:u8 pad:[u8;3] time_ns:i64le body
//! body    := [src_len:u16le src pos_len:u32le pos]   when flags & HAS_POSITION
//!            event*                                 `count` events, crate::event::codec:
//!                                                   version 2 when flags & V2, else version 1
//! len     := length of body
//! crc     := CRC32C of the header bytes after `crc` (count, flags, pad, time_ns) and of body
//! ```
//!
//! weir writes version 2 (what repeats between events stored once per
//! record) and reads both: records written before it (version 1, in
//! segments of segment format 1) are still delivered after an upgrade.
//!
//! A record is valid when its magic matches, `len` fits in the file and the
//! CRC matches; anything else is a torn write, a flipped bit or zeros left by
//! a crash. Recovery (see `repair`) resynchronises on the next valid record
//! and turns the damaged bytes between into one *skipped* record
//! (`flags & SKIPPED`, `count` 0): a valid record holding no events, so
//! offsets, cursors and quota accounting stay as they were.

use crate::event::codec::{self, Version};
use crate::event::Event;

/// Marks the start of a record ("WRec").
pub const MAGIC: u32 = u32::from_le_bytes(*b"WRec");
/// Bytes before the body.
pub const HEADER_LEN: usize = 28;
/// Flag bit: the body starts with a source position.
const HAS_POSITION: u8 = 1;
/// Flag bit: the body is damaged bytes recovery replaced (see `repair`); it
/// holds no events and no position.
pub const SKIPPED: u8 = 2;
/// Flag bit: the events are in version 2 of the event encoding.
const V2: u8 = 4;

/// The fixed part of a record, as parsed from its first [`HEADER_LEN`] bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub len: u32,
    pub crc: u32,
    pub count: u32,
    pub flags: u8,
    /// When the batch was appended (wall clock, ns since the Unix epoch).
    pub time_ns: i64,
}

impl Header {
    /// Parses a header; `None` when the magic does not match (not a record).
    pub fn parse(b: &[u8; HEADER_LEN]) -> Option<Header> {
        let u32_at = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().expect("4 bytes"));
        if u32_at(0) != MAGIC {
            return None;
        }
        Some(Header {
            len: u32_at(4),
            crc: u32_at(8),
            count: u32_at(12),
            flags: b[16],
            time_ns: i64::from_le_bytes(b[20..28].try_into().expect("8 bytes")),
        })
    }

    /// Total bytes of the record, header included.
    pub fn total_len(&self) -> u64 {
        HEADER_LEN as u64 + u64::from(self.len)
    }

    /// Whether `body` is what this header was written with.
    pub fn check(&self, header: &[u8; HEADER_LEN], body: &[u8]) -> bool {
        let crc = crc32c::crc32c_append(crc32c::crc32c(&header[12..]), body);
        crc == self.crc && body.len() == self.len as usize
    }
}

/// Encodes one record into `out` (cleared first). `out` is reused by the
/// caller so the hot path allocates nothing once warm.
pub fn encode(
    out: &mut Vec<u8>,
    events: &[Event],
    position: Option<(&str, &[u8])>,
    time_ns: i64,
) -> Result<(), EncodeError> {
    out.clear();
    out.resize(HEADER_LEN, 0);
    let mut flags = 0;
    if let Some((source, pos)) = position {
        let src_len = u16::try_from(source.len()).map_err(|_| EncodeError::TooLarge)?;
        let pos_len = u32::try_from(pos.len()).map_err(|_| EncodeError::TooLarge)?;
        flags |= HAS_POSITION;
        out.extend_from_slice(&src_len.to_le_bytes());
        out.extend_from_slice(source.as_bytes());
        out.extend_from_slice(&pos_len.to_le_bytes());
        out.extend_from_slice(pos);
    }
    flags |= V2;
    codec::encode_events(events, out);
    let len = u32::try_from(out.len() - HEADER_LEN).map_err(|_| EncodeError::TooLarge)?;
    let count = u32::try_from(events.len()).map_err(|_| EncodeError::TooLarge)?;
    out[0..4].copy_from_slice(&MAGIC.to_le_bytes());
    out[4..8].copy_from_slice(&len.to_le_bytes());
    out[12..16].copy_from_slice(&count.to_le_bytes());
    out[16] = flags;
    out[20..28].copy_from_slice(&time_ns.to_le_bytes());
    let crc = crc32c::crc32c(&out[12..]);
    out[8..12].copy_from_slice(&crc.to_le_bytes());
    Ok(())
}

/// Encodes one record as weir wrote it before version 2 (no `V2` flag,
/// events in version 1 of the event encoding): for tests that an upgraded
/// weir still reads what an older one left in its spool.
#[cfg(test)]
pub fn encode_v1(
    out: &mut Vec<u8>,
    events: &[Event],
    position: Option<(&str, &[u8])>,
    time_ns: i64,
) {
    encode(out, &[], position, time_ns).expect("small");
    for e in events {
        codec::encode_v1(e, out);
    }
    let len = (out.len() - HEADER_LEN) as u32;
    out[4..8].copy_from_slice(&len.to_le_bytes());
    out[12..16].copy_from_slice(&(events.len() as u32).to_le_bytes());
    out[16] &= !V2;
    let crc = crc32c::crc32c(&out[12..]);
    out[8..12].copy_from_slice(&crc.to_le_bytes());
}

/// The header of a skipped record over `len` damaged body bytes whose
/// CRC32C (as `crc32c_append` from 0) is `body_crc`.
pub fn skipped_header(len: u32, time_ns: i64, body_crc: u32) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[0..4].copy_from_slice(&MAGIC.to_le_bytes());
    h[4..8].copy_from_slice(&len.to_le_bytes());
    h[16] = SKIPPED;
    h[20..28].copy_from_slice(&time_ns.to_le_bytes());
    // CRC(header[12..] ++ body), from the body's CRC: crc32c can only be
    // extended, so compute the header part first and combine.
    let head = crc32c::crc32c(&h[12..]);
    let crc = crc32c::crc32c_combine(head, body_crc, len as usize);
    h[8..12].copy_from_slice(&crc.to_le_bytes());
    h
}

/// A batch too large for the record format (over 4 GiB, or a source name
/// over 64 KiB).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EncodeError {
    #[error("batch too large for one spool record")]
    TooLarge,
}

/// The body of a valid record, split into its parts.
#[derive(Debug)]
pub struct Body<'a> {
    pub position: Option<(&'a str, &'a [u8])>,
    /// The encoded events.
    pub events: &'a [u8],
    /// Their encoding.
    pub version: Version,
}

/// Why a body that passed its CRC still cannot be used (a bug or a spool
/// written by something else).
#[derive(Debug, Clone, Copy, thiserror::Error, PartialEq, Eq)]
#[error("malformed record body: {0}")]
pub struct BodyError(pub &'static str);

/// Splits a body (already CRC-checked) into position and events.
pub fn split_body<'a>(header: &Header, body: &'a [u8]) -> Result<Body<'a>, BodyError> {
    if header.flags & !(HAS_POSITION | SKIPPED | V2) != 0 {
        return Err(BodyError("unknown record flags"));
    }
    let version = if header.flags & V2 != 0 {
        Version::V2
    } else {
        Version::V1
    };
    if header.flags & SKIPPED != 0 {
        return Ok(Body {
            position: None,
            events: &[],
            version,
        });
    }
    if header.flags & HAS_POSITION == 0 {
        return Ok(Body {
            position: None,
            events: body,
            version,
        });
    }
    let short = BodyError("position truncated");
    let src_len = u16::from_le_bytes(body.get(0..2).ok_or(short)?.try_into().expect("2")) as usize;
    let src = body.get(2..2 + src_len).ok_or(short)?;
    let src = std::str::from_utf8(src).map_err(|_| BodyError("source name not UTF-8"))?;
    let at = 2 + src_len;
    let pos_len =
        u32::from_le_bytes(body.get(at..at + 4).ok_or(short)?.try_into().expect("4")) as usize;
    let pos = body.get(at + 4..at + 4 + pos_len).ok_or(short)?;
    Ok(Body {
        position: Some((src, pos)),
        events: &body[at + 4 + pos_len..],
        version,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Origin;

    fn events() -> Vec<Event> {
        (0..3)
            .map(|i| Event::new(i, Origin::Docker, format!("line {i}")))
            .collect()
    }

    fn parse(buf: &[u8]) -> Header {
        Header::parse(buf[..HEADER_LEN].try_into().unwrap()).unwrap()
    }

    #[test]
    fn round_trips_with_and_without_position() {
        let mut buf = Vec::new();
        for pos in [None, Some(("journal", &b"s=abc;i=1"[..]))] {
            encode(&mut buf, &events(), pos, 42).unwrap();
            let h = parse(&buf);
            assert_eq!((h.count, h.time_ns), (3, 42));
            assert_eq!(h.total_len(), buf.len() as u64);
            let (hb, body) = buf.split_at(HEADER_LEN);
            assert!(h.check(hb.try_into().unwrap(), body));
            let b = split_body(&h, body).unwrap();
            assert_eq!(b.position, pos);
            assert_eq!(b.version, Version::V2);
            assert_eq!(codec::decode_all(b.events, b.version).unwrap(), events());
        }
    }

    #[test]
    fn every_flipped_bit_is_detected() {
        let mut buf = Vec::new();
        encode(&mut buf, &events(), Some(("s", b"p")), 7).unwrap();
        for i in 0..buf.len() * 8 {
            let mut b = buf.clone();
            b[i / 8] ^= 1 << (i % 8);
            let Some(h) = Header::parse(b[..HEADER_LEN].try_into().unwrap()) else {
                continue; // magic broken: not a record
            };
            let (hb, body) = b.split_at(HEADER_LEN);
            assert!(!h.check(hb.try_into().unwrap(), body), "bit {i} undetected");
        }
    }

    #[test]
    fn a_skipped_record_is_valid_and_holds_nothing() {
        let body = b"damaged bytes that were a record".repeat(3);
        let hb = skipped_header(body.len() as u32, 9, crc32c::crc32c(&body));
        let h = Header::parse(&hb).unwrap();
        assert!(h.check(&hb, &body));
        assert_eq!(h.count, 0);
        let b = split_body(&h, &body).unwrap();
        assert_eq!((b.position, b.events.len()), (None, 0));
    }

    /// A record as weir wrote it before version 2: no `V2` flag, events
    /// in version 1; read as such.
    #[test]
    fn a_version_1_record_is_read_as_version_1() {
        let mut buf = Vec::new();
        encode_v1(&mut buf, &events(), Some(("docker", b"p")), 3);
        // The header as weir wrote it: only the position flag.
        assert_eq!(buf[16], HAS_POSITION);
        let (old, body) = buf.split_at(HEADER_LEN);
        let h = parse(old);
        assert_eq!((h.count, h.total_len()), (3, buf.len() as u64));
        assert!(h.check(old.try_into().unwrap(), body));
        let b = split_body(&h, body).unwrap();
        assert_eq!(
            (b.position, b.version),
            (Some(("docker", &b"p"[..])), Version::V1)
        );
        assert_eq!(codec::decode_all(b.events, b.version).unwrap(), events());
    }

    #[test]
    fn unknown_flags_are_refused() {
        let mut buf = Vec::new();
        encode(&mut buf, &events(), None, 3).unwrap();
        let mut h = parse(&buf);
        h.flags |= 8;
        assert!(split_body(&h, &buf[HEADER_LEN..]).is_err());
    }

    #[test]
    fn empty_batch_is_a_valid_record() {
        let mut buf = Vec::new();
        encode(&mut buf, &[], None, 0).unwrap();
        assert_eq!(buf.len(), HEADER_LEN);
        assert_eq!(parse(&buf).count, 0);
    }
}
