//! Incremental msgpack framing: where does the next top-level value end?
//!
//! The Forward protocol has no length prefix: a stream is a sequence of
//! msgpack values. [`scan`] walks one value's structure (headers only, never
//! copying) over the bytes received so far and says whether it is complete,
//! how long it is, or how many bytes it needs at least before scanning again
//! is worthwhile (so a 10 MiB frame arriving in 64 KiB reads is not rescanned
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
    // Elements still to read at each open array/map level (a map counts 2 per entry).
    let mut stack = Levels::default();
    let mut pos = 0usize;
    let too_large = FrameError::TooLarge {
        limit: limits.max_bytes,
    };
    loop {
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
        match head {
            Item::Skip(n) => {
                pos = pos.checked_add(n).ok_or(too_large)?;
                if pos > limits.max_bytes {
                    return Err(too_large);
                }
                if pos > buf.len() {
                    return Ok(Scan::Incomplete { at_least: pos });
                }
                close_levels(&mut stack);
            }
            Item::Open(n, elements) => {
                pos += n;
                // Every element takes at least one byte: a count beyond the
                // limit can never fit, so refuse it now.
                if pos as u64 + elements > limits.max_bytes as u64 {
                    return Err(too_large);
                }
                if elements == 0 {
                    close_levels(&mut stack);
                } else {
                    if stack.len() >= limits.max_depth {
                        return Err(FrameError::TooDeep {
                            limit: limits.max_depth,
                        });
                    }
                    stack.push(elements);
                    continue;
                }
            }
        }
        if stack.is_empty() {
            return Ok(Scan::Complete(pos));
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
/// [`scan`] runs once per frame and once per packed entry, so a heap stack
/// would cost an allocation per event. Deeper nesting spills to the heap.
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
