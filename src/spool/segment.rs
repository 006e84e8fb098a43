//! Segment files: naming, and the header that starts each one.
//!
//! ```text
//! file    := header record*
//! header  := magic:"WEIRSEG\0" version:u16le flags:u16le header_len:u32le base:u64le
//!            npos:u32le (src_len:u16le src pos_len:u32le pos)* crc:u32le
//! ```
//!
//! `base` is the logical offset of the first record; it is also the file
//! name (`{base:020}.seg`), so an offset maps to its segment by a search over
//! names. The header carries a snapshot of every source's last position as of
//! `base`, so a source that appends rarely keeps its position after the
//! segments that held its records are deleted. `crc` is CRC32C of every
//! header byte before it. Zero bytes may pad the header before `crc` (a
//! header rebuilt by recovery keeps the length of the damaged one).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The first bytes of every segment file.
pub const MAGIC: &[u8; 8] = b"WEIRSEG\0";
/// The on-disk format this build writes; it reads this one and older ones.
/// A spool written with a higher version is refused rather than misread.
///
/// - 1: records hold events in version 1 of the event encoding;
/// - 2: records may hold version 2 (see `record`). An older weir refuses
///   the segment instead of misreading it; this weir reads both, and after
///   an upgrade appends to a new segment rather than to a version 1 tail.
pub const VERSION: u16 = 2;
/// Bytes of the fixed part, before the position snapshot.
const FIXED_LEN: usize = 8 + 2 + 2 + 4 + 8 + 4;
/// The shortest header: no positions, just the CRC after the fixed part.
pub const MIN_HEADER_LEN: u64 = (FIXED_LEN + 4) as u64;

/// The file name of the segment starting at `base`.
pub fn file_name(base: u64) -> String {
    format!("{base:020}.seg")
}

pub fn path(dir: &Path, base: u64) -> PathBuf {
    dir.join(file_name(base))
}

/// The base offset in a segment file name, or `None` for other files.
pub fn parse_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".seg")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The header of a new segment.
pub fn encode_header(base: u64, positions: &BTreeMap<String, Vec<u8>>) -> Vec<u8> {
    let mut out = Vec::with_capacity(FIXED_LEN + 4);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes()); // header_len, patched below
    out.extend_from_slice(&base.to_le_bytes());
    out.extend_from_slice(&(positions.len() as u32).to_le_bytes());
    for (src, pos) in positions {
        // Source names come from config keys and positions from sources:
        // both are small; clamp rather than fail on absurd ones.
        let src = &src.as_bytes()[..src.len().min(u16::MAX as usize)];
        out.extend_from_slice(&(src.len() as u16).to_le_bytes());
        out.extend_from_slice(src);
        out.extend_from_slice(&(pos.len() as u32).to_le_bytes());
        out.extend_from_slice(pos);
    }
    let len = (out.len() + 4) as u32;
    out[12..16].copy_from_slice(&len.to_le_bytes());
    let crc = crc32c::crc32c(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// A header for `base` exactly `len` bytes long, zero-padded before its
/// CRC (the parser ignores bytes after the positions): recovery rebuilds a
/// damaged header to the length the old one had, so records keep their
/// offsets. `None` when the positions do not fit in `len`.
pub fn encode_header_padded(
    base: u64,
    positions: &BTreeMap<String, Vec<u8>>,
    len: u64,
) -> Option<Vec<u8>> {
    let mut h = encode_header(base, positions);
    let len = u32::try_from(len).ok()? as usize;
    if h.len() > len {
        return None;
    }
    h.truncate(h.len() - 4);
    h.resize(len - 4, 0);
    h[12..16].copy_from_slice(&(len as u32).to_le_bytes());
    let crc = crc32c::crc32c(&h);
    h.extend_from_slice(&crc.to_le_bytes());
    Some(h)
}

/// A parsed segment header.
#[derive(Debug, PartialEq, Eq)]
pub struct Header {
    /// The format version the segment was written in.
    pub version: u16,
    pub base: u64,
    /// Bytes of the header; records start here.
    pub len: u64,
    pub positions: BTreeMap<String, Vec<u8>>,
}

/// Why a segment header cannot be used.
#[derive(Debug, Clone, Copy, thiserror::Error, PartialEq, Eq)]
pub enum HeaderError {
    /// Written by a newer weir: refuse rather than misread.
    #[error("segment format version {0} is newer than this weir understands ({VERSION}); run a newer weir or move the spool away")]
    NewerVersion(u16),
    /// Not a segment header, or a torn one (a crash while creating the file).
    #[error("segment header is damaged ({0})")]
    Damaged(&'static str),
}

/// Parses the header at the start of `buf` (which may hold more bytes).
pub fn parse_header(buf: &[u8]) -> Result<Header, HeaderError> {
    use HeaderError::Damaged;
    if buf.len() < FIXED_LEN + 4 {
        return Err(Damaged("too short"));
    }
    if &buf[..8] != MAGIC {
        return Err(Damaged("bad magic"));
    }
    let version = u16::from_le_bytes([buf[8], buf[9]]);
    if version > VERSION {
        return Err(HeaderError::NewerVersion(version));
    }
    let len = u32::from_le_bytes(buf[12..16].try_into().expect("4")) as usize;
    if len < FIXED_LEN + 4 || len > buf.len() {
        return Err(Damaged("bad length"));
    }
    let crc = u32::from_le_bytes(buf[len - 4..len].try_into().expect("4"));
    if crc32c::crc32c(&buf[..len - 4]) != crc {
        return Err(Damaged("bad checksum"));
    }
    let base = u64::from_le_bytes(buf[16..24].try_into().expect("8"));
    let npos = u32::from_le_bytes(buf[24..28].try_into().expect("4"));
    let mut positions = BTreeMap::new();
    let mut at = FIXED_LEN;
    let body = &buf[..len - 4];
    for _ in 0..npos {
        let short = Damaged("positions truncated");
        let sl = u16::from_le_bytes(body.get(at..at + 2).ok_or(short)?.try_into().expect("2"));
        at += 2;
        let src = body.get(at..at + sl as usize).ok_or(short)?;
        at += sl as usize;
        let pl = u32::from_le_bytes(body.get(at..at + 4).ok_or(short)?.try_into().expect("4"));
        at += 4;
        let pos = body.get(at..at + pl as usize).ok_or(short)?;
        at += pl as usize;
        let src = String::from_utf8(src.to_vec()).map_err(|_| Damaged("source not UTF-8"))?;
        positions.insert(src, pos.to_vec());
    }
    Ok(Header {
        version,
        base,
        len: len as u64,
        positions,
    })
}

/// fsyncs a directory so that file creations, renames and deletions in it
/// survive a power loss.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_sort_numerically() {
        assert_eq!(file_name(42), "00000000000000000042.seg");
        assert_eq!(parse_name(&file_name(u64::MAX)), Some(u64::MAX));
        assert_eq!(parse_name("42.seg"), None);
        assert_eq!(parse_name("00000000000000000042.seg.tmp"), None);
        assert!(file_name(9) < file_name(10));
    }

    #[test]
    fn header_round_trips_with_positions() {
        let mut p = BTreeMap::new();
        p.insert("journal".to_owned(), b"s=1;i=2".to_vec());
        p.insert("docker".to_owned(), Vec::new());
        let mut h = encode_header(1234, &p);
        let len = h.len() as u64;
        h.extend_from_slice(b"record bytes follow");
        assert_eq!(
            parse_header(&h),
            Ok(Header {
                version: VERSION,
                base: 1234,
                len,
                positions: p
            })
        );
    }

    #[test]
    fn a_padded_header_parses_to_the_same_fields_and_length() {
        let mut p = BTreeMap::new();
        p.insert("journal".to_owned(), b"s=1".to_vec());
        let natural = encode_header(7, &p).len() as u64;
        let h = encode_header_padded(7, &p, natural + 100).unwrap();
        assert_eq!(h.len() as u64, natural + 100);
        let parsed = parse_header(&h).unwrap();
        assert_eq!(
            (parsed.base, parsed.len, parsed.positions),
            (7, natural + 100, p.clone())
        );
        assert!(encode_header_padded(7, &p, natural - 1).is_none());
    }

    #[test]
    fn newer_version_is_refused_and_damage_detected() {
        let h = encode_header(0, &BTreeMap::new());
        let mut newer = h.clone();
        newer[8] = 3;
        assert_eq!(parse_header(&newer), Err(HeaderError::NewerVersion(3)));
        for cut in 0..h.len() {
            assert!(parse_header(&h[..cut]).is_err(), "cut {cut}");
        }
        let mut flipped = h.clone();
        flipped[20] ^= 1;
        assert!(matches!(
            parse_header(&flipped),
            Err(HeaderError::Damaged(_))
        ));
    }
}
