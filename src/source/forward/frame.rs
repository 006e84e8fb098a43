//! Incremental msgpack framing: where does the next top-level value end?
//!
//! The Forward protocol has no length prefix: a stream is a sequence of
//! msgpack values. [`scan`] walks one value's structure (headers only, never
//! copying) over the bytes received so far and says whether it is complete,
//! how long it is, or how many bytes it needs at least before scanning again
//! is worthwhile; a [`Scanner`] kept between reads goes on from where it
//! stopped (so a 10 MiB frame arriving in 64 KiB reads is not rescanned
//! from its start 160 times). It is iterative, with a depth limit, so hostile
//! nesting cannot overflow the stack, and it refuses declared sizes over the
//! frame limit before any of those bytes arrive.

/// Why a byte stream cannot be framed. The connection must be closed: there
/// is no way to find the next frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("invalid msgpack marker byte 0x{0:02x}")]
    BadMarker(u8),
    #[error("frame larger than max_frame_bytes ({limit} bytes)")]
    TooLarge { limit: usize },
    #[error("nesting deeper than {limit} levels")]
    TooDeep { limit: usize },
}

/// What [`scan`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scan {
    /// A complete value occupies the first `len` bytes.
    Complete(usize),
    /// Incomplete: do not scan again before the buffer holds `at_least` bytes.
    Incomplete { at_least: usize },
}

/// Limits applied while framing.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_bytes: usize,
    pub max_depth: usize,
}

/// Scans the value at the start of `buf`.
pub fn scan(buf: &[u8], limits: Limits) -> Result<Scan, FrameError> {
    Scanner::default().scan(buf, limits)
}

/// A [`scan`] that resumes where it stopped. A Forward-mode frame
/// (`[tag, [[t, rec], ...]]`) tells its length only entry by entry, so a
/// fresh scan on every 64 KiB read walked the frame again from its start:
/// a 15 MiB frame arriving slowly was walked some 240 times (quadratic
/// CPU). A connection keeps one scanner for the frame at the start of its
/// buffer; each call goes on from the last whole item it stepped over.
#[derive(Default)]
pub struct Scanner {
    /// Elements still to read at each open array/map level (a map counts
    /// 2 per entry).
    stack: Levels,
    /// Where the next item starts: every item before it was whole.
    pos: usize,
    /// Bytes stepped over, in all calls (what the resumption saves shows
    /// here: a frame is stepped over once, however it arrives).
    stepped: u64,
}

impl Scanner {
    /// Scans on: `buf` must start with the bytes the previous calls saw
    /// (more may have arrived). Once the value is complete or found bad,
    /// the scanner is ready for the next value.
    pub fn scan(&mut self, buf: &[u8], limits: Limits) -> Result<Scan, FrameError> {
        let scanned = self.walk(buf, limits);
        if !matches!(scanned, Ok(Scan::Incomplete { .. })) {
            self.pos = 0;
            self.stack.clear();
        }
        scanned
    }

    /// Part of a value was scanned and is remembered (the next call must
    /// be given the same value's bytes).
    pub fn started(&self) -> bool {
        self.pos > 0
    }

    /// Bytes stepped over since the scanner was made.
    pub fn stepped(&self) -> u64 {
        self.stepped
    }

    /// Steps over whole items from `pos`. An item that is not whole yet
    /// leaves `pos` and the stack as they were, at its start.
    fn walk(&mut self, buf: &[u8], limits: Limits) -> Result<Scan, FrameError> {
        let too_large = FrameError::TooLarge {
            limit: limits.max_bytes,
        };
        loop {
            let pos = self.pos;
            let Some(&marker) = buf.get(pos) else {
                return Ok(Scan::Incomplete { at_least: pos + 1 });
            };
            let head = match header(marker) {
                Header::Fixed(n) => Item::Skip(n),
                Header::Len(width, extra) => {
                    let Some(bytes) = buf.get(pos + 1..pos + 1 + width) else {
                        return Ok(Scan::Incomplete {
                            at_least: pos + 1 + width,
                        });
                    };
                    let n = be(bytes);
                    Item::Skip(1 + width + extra + usize::try_from(n).map_err(|_| too_large)?)
                }
                Header::Container(width, inline, per) => {
                    let n = if width == 0 {
                        inline
                    } else {
                        let Some(bytes) = buf.get(pos + 1..pos + 1 + width) else {
                            return Ok(Scan::Incomplete {
                                at_least: pos + 1 + width,
                            });
                        };
                        be(bytes)
                    };
                    Item::Open(1 + width, n * per)
                }
                Header::Invalid => return Err(FrameError::BadMarker(marker)),
            };
            let (end, elements) = match head {
                Item::Skip(n) => {
                    let end = pos.checked_add(n).ok_or(too_large)?;
                    if end > limits.max_bytes {
                        return Err(too_large);
                    }
                    if end > buf.len() {
                        return Ok(Scan::Incomplete { at_least: end });
                    }
                    (end, 0)
                }
                Item::Open(n, elements) => {
                    let end = pos + n;
                    // Every element takes at least one byte: a count beyond
                    // the limit can never fit, so refuse it now.
                    if end as u64 + elements > limits.max_bytes as u64 {
                        return Err(too_large);
                    }
                    if elements > 0 && self.stack.len() >= limits.max_depth {
                        return Err(FrameError::TooDeep {
                            limit: limits.max_depth,
                        });
                    }
                    (end, elements)
                }
            };
            self.stepped += (end - pos) as u64;
            self.pos = end;
            if elements == 0 {
                close_levels(&mut self.stack);
            } else {
                self.stack.push(elements);
                continue;
            }
            if self.stack.is_empty() {
                return Ok(Scan::Complete(end));
            }
        }
    }
}

/// Marks one element of the innermost open level as read, closing every
/// level this completes.
fn close_levels(stack: &mut Levels) {
    while let Some(top) = stack.last_mut() {
        *top -= 1;
        if *top > 0 {
            return;
        }
        stack.pop();
    }
}

/// Levels a scan holds without allocating: a Forward frame needs 4, and
/// [`scan`] runs once per frame and once per nested record value, so a
/// heap stack would cost an allocation per event. Deeper nesting spills to the heap.
const INLINE_LEVELS: usize = 16;

/// The stack of open levels: inline first, then `spill`.
#[derive(Default)]
struct Levels {
    inline: [u64; INLINE_LEVELS],
    len: usize,
    spill: Vec<u64>,
}

impl Levels {
    fn len(&self) -> usize {
        self.len + self.spill.len()
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn push(&mut self, v: u64) {
        if self.len < INLINE_LEVELS {
            self.inline[self.len] = v;
            self.len += 1;
        } else {
            self.spill.push(v);
        }
    }

    fn last_mut(&mut self) -> Option<&mut u64> {
        if !self.spill.is_empty() {
            return self.spill.last_mut();
        }
        self.len.checked_sub(1).map(|i| &mut self.inline[i])
    }

    fn pop(&mut self) {
        if self.spill.pop().is_none() {
            self.len = self.len.saturating_sub(1);
        }
    }

    fn clear(&mut self) {
        self.len = 0;
        self.spill.clear();
    }
}

enum Item {
    /// A scalar, string, binary or extension of this many bytes in total.
    Skip(usize),
    /// An array or map: header bytes, then this many elements.
    Open(usize, u64),
}

enum Header {
    /// The whole value is this many bytes.
    Fixed(usize),
    /// A `width`-byte big-endian length follows the marker, then `extra`
    /// bytes (the ext type) and the data.
    Len(usize, usize),
    /// A container: `width`-byte count (0: the count is `inline`), times
    /// elements per entry.
    Container(usize, u64, u64),
    Invalid,
}

fn header(m: u8) -> Header {
    use Header::*;
    match m {
        0x00..=0x7f | 0xe0..=0xff | 0xc0 | 0xc2 | 0xc3 => Fixed(1),
        0x80..=0x8f => Container(0, u64::from(m & 0x0f), 2),
        0x90..=0x9f => Container(0, u64::from(m & 0x0f), 1),
        0xa0..=0xbf => Fixed(1 + usize::from(m & 0x1f)),
        0xc1 => Invalid,
        0xc4 | 0xd9 => Len(1, 0),
        0xc5 | 0xda => Len(2, 0),
        0xc6 | 0xdb => Len(4, 0),
        0xc7 => Len(1, 1),
        0xc8 => Len(2, 1),
        0xc9 => Len(4, 1),
        0xca => Fixed(5),
        0xcb => Fixed(9),
        0xcc | 0xd0 => Fixed(2),
        0xcd | 0xd1 => Fixed(3),
        0xce | 0xd2 => Fixed(5),
        0xcf | 0xd3 => Fixed(9),
        0xd4 => Fixed(3),
        0xd5 => Fixed(4),
        0xd6 => Fixed(6),
        0xd7 => Fixed(10),
        0xd8 => Fixed(18),
        0xdc => Container(2, 0, 1),
        0xdd => Container(4, 0, 1),
        0xde => Container(2, 0, 2),
        0xdf => Container(4, 0, 2),
    }
}

fn be(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0u64, |acc, &b| (acc << 8) | u64::from(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    const L: Limits = Limits {
        max_bytes: 1 << 20,
        max_depth: 16,
    };

    fn encode(v: &rmpv_like::V) -> Vec<u8> {
        let mut out = Vec::new();
        rmpv_like::write(&mut out, v);
        out
    }

    /// A tiny value tree written with `rmp`'s low-level writers.
    mod rmpv_like {
        pub enum V {
            Int(i64),
            Str(&'static str),
            Bin(usize),
            Arr(Vec<V>),
            Map(Vec<(V, V)>),
        }
        pub fn write(out: &mut Vec<u8>, v: &V) {
            match v {
                V::Int(i) => {
                    rmp::encode::write_sint(out, *i).unwrap();
                }
                V::Str(s) => rmp::encode::write_str(out, s).unwrap(),
                V::Bin(n) => rmp::encode::write_bin(out, &vec![7u8; *n]).unwrap(),
                V::Arr(a) => {
                    rmp::encode::write_array_len(out, a.len() as u32).unwrap();
                    a.iter().for_each(|v| write(out, v));
                }
                V::Map(m) => {
                    rmp::encode::write_map_len(out, m.len() as u32).unwrap();
                    for (k, v) in m {
                        write(out, k);
                        write(out, v);
                    }
                }
            }
        }
    }

    #[test]
    fn every_prefix_is_incomplete_and_the_whole_is_complete() {
        use rmpv_like::V::*;
        let v = Arr(vec![
            Str("docker.abc"),
            Int(1_700_000_000),
            Map(vec![
                (Str("log"), Str("hello")),
                (Str("n"), Int(-70000)),
                (Str("b"), Bin(300)),
                (Str("e"), Arr(vec![])),
            ]),
        ]);
        let mut bytes = encode(&v);
        let n = bytes.len();
        for cut in 0..n {
            match scan(&bytes[..cut], L).unwrap() {
                Scan::Incomplete { at_least } => assert!(at_least > cut && at_least <= n),
                Scan::Complete(_) => panic!("complete at {cut}"),
            }
        }
        bytes.extend_from_slice(&[0x93, 1, 2]);
        assert_eq!(scan(&bytes, L).unwrap(), Scan::Complete(n));
    }

    #[test]
    fn limits_are_enforced_before_the_data_arrives() {
        // bin32 declaring 2 GiB: refused from its 5-byte header.
        assert_eq!(
            scan(&[0xc6, 0x80, 0, 0, 0], L),
            Err(FrameError::TooLarge { limit: 1 << 20 })
        );
        // array32 of 4 billion elements.
        assert!(matches!(
            scan(&[0xdd, 0xff, 0xff, 0xff, 0xff], L),
            Err(FrameError::TooLarge { .. })
        ));
        let deep = vec![0x91u8; 100];
        assert_eq!(scan(&deep, L), Err(FrameError::TooDeep { limit: 16 }));
        assert_eq!(scan(&[0xc1], L), Err(FrameError::BadMarker(0xc1)));
    }

    #[test]
    fn nesting_deeper_than_the_inline_levels_is_framed() {
        let limits = Limits {
            max_bytes: 1 << 20,
            max_depth: 64,
        };
        // 40 nested one-element arrays around a 2-byte value, then 1 byte more.
        let mut bytes = vec![0x91u8; 40];
        bytes.extend_from_slice(&[0xcc, 0x07, 0x05]);
        assert_eq!(scan(&bytes, limits).unwrap(), Scan::Complete(42));
        for cut in 0..42 {
            assert!(matches!(
                scan(&bytes[..cut], limits).unwrap(),
                Scan::Incomplete { .. }
            ));
        }
    }

    /// A Forward-mode frame of `n` entries of about 150 bytes.
    fn forward_frame(n: usize) -> Vec<u8> {
        use rmpv_like::V::*;
        let entry = || {
            Arr(vec![
                Int(1_700_000_000),
                Map(vec![
                    (Str("source"), Str("stdout")),
                    (Str("log"), Str("GET /api/v1/orders/84213/items?page=2 200 OK in 12.4ms (user agent: curl/8.5.0, bytes: 4312) and a little more")),
                ]),
            ])
        };
        encode(&Arr(vec![
            Str("docker.abc"),
            Arr((0..n).map(|_| entry()).collect()),
        ]))
    }

    /// A big Forward-mode frame arriving 64 KiB at a time, scanned as a
    /// connection scans it (again once the buffer holds what the last scan
    /// asked for), is stepped over once. A fresh scan per read walked it
    /// from its start every time: quadratic.
    #[test]
    fn a_slow_forward_frame_is_stepped_over_once() {
        let bytes = forward_frame(20_000);
        let len = bytes.len();
        assert!(len > 2 << 20, "{len}");
        let limits = Limits {
            max_bytes: 16 << 20,
            max_depth: 16,
        };
        let mut scanner = Scanner::default();
        let mut fresh_stepped = 0;
        let (mut have, mut need, mut reads) = (0, 1, 0);
        let complete = loop {
            have = (have + 64 * 1024).min(len);
            reads += 1;
            if have < need {
                continue;
            }
            let mut fresh = Scanner::default();
            let want = fresh.scan(&bytes[..have], limits).unwrap();
            fresh_stepped += fresh.stepped();
            assert_eq!(scanner.scan(&bytes[..have], limits).unwrap(), want);
            match want {
                Scan::Complete(n) => break n,
                Scan::Incomplete { at_least } => need = at_least,
            }
        };
        assert_eq!(complete, len);
        assert!(reads > 30, "{reads}");
        assert_eq!(scanner.stepped(), len as u64);
        // What this test tells apart: without resuming, the scans stepped
        // over the frame about reads / 2 times.
        assert!(fresh_stepped > 10 * len as u64, "{fresh_stepped}");
    }

    /// Resuming after any cut gives what one scan of the longer prefix
    /// gives, errors and limits included; a finished scanner starts over.
    #[test]
    fn resuming_after_any_cut_gives_what_a_fresh_scan_gives() {
        use rmpv_like::V::*;
        let v = Arr(vec![
            Str("docker.abc"),
            Arr(vec![
                Arr(vec![Int(1), Map(vec![(Str("log"), Str("hello"))])]),
                Arr(vec![Int(-70000), Map(vec![(Str("b"), Bin(300))])]),
                Arr(vec![Int(2), Map(vec![(Str("e"), Arr(vec![Arr(vec![])]))])]),
            ]),
            Map(vec![(Str("chunk"), Str("abc"))]),
        ]);
        let mut bytes = encode(&v);
        let n = bytes.len();
        bytes.extend_from_slice(&[0x93, 1, 2]);
        for limits in [
            L,
            Limits {
                max_bytes: 100,
                max_depth: 16,
            },
            Limits {
                max_bytes: 1 << 20,
                max_depth: 4,
            },
        ] {
            for a in 0..=n {
                for b in a..=bytes.len() {
                    let mut scanner = Scanner::default();
                    let first = scanner.scan(&bytes[..a], limits);
                    let want = scan(&bytes[..b], limits);
                    if matches!(first, Ok(Scan::Incomplete { .. })) {
                        assert_eq!(scanner.scan(&bytes[..b], limits), want, "{a} {b}");
                    } else {
                        assert_eq!(first, scan(&bytes[..a], limits));
                    }
                    // Done or failed: the next value starts afresh.
                    if !matches!(want, Ok(Scan::Incomplete { .. })) {
                        assert!(!scanner.started());
                        assert_eq!(scanner.scan(&[0x05], limits), Ok(Scan::Complete(1)));
                    }
                }
            }
        }
        // With these limits the frame is too deep, or too large.
        assert!(scan(
            &bytes,
            Limits {
                max_bytes: 100,
                max_depth: 16
            }
        )
        .is_err());
        assert!(scan(
            &bytes,
            Limits {
                max_bytes: 1 << 20,
                max_depth: 4
            }
        )
        .is_err());
    }

    #[test]
    fn scalars_and_empty_containers_are_frames() {
        assert_eq!(scan(&[0x05], L).unwrap(), Scan::Complete(1));
        assert_eq!(scan(&[0x90, 0x80], L).unwrap(), Scan::Complete(1));
        assert_eq!(
            scan(&[0x92, 0x90, 0x80, 0xff], L).unwrap(),
            Scan::Complete(3)
        );
    }
}
