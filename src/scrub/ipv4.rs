//! IPv4 dotted quads: where one starts and ends, and how it is truncated.
//!
//! An address is four decimal octets of 1-3 digits, each at most 255 (leading
//! zeros accepted: logs zero-pad), that
//! - starts a word: not after a letter, digit or `.` (`a1.2.3.4`, the tail of
//!   `1.2.3.4.5` and OIDs are not addresses);
//! - is not followed by a letter or digit, nor by `.` and a digit;
//! - with `keep_versions`, is not a version (see [`is_version`]).
//!
//! Ports, brackets, URLs and lists around it are just other bytes: only the
//! address itself is rewritten, so `[203.0.113.7]:443` keeps its port.

/// Parses exactly `a.b.c.d` at `start`; returns the octets and the end.
pub fn parse_quad(s: &[u8], start: usize) -> Option<([u8; 4], usize)> {
    let mut p = start;
    let mut octets = [0u8; 4];
    for (k, octet) in octets.iter_mut().enumerate() {
        if k > 0 {
            if s.get(p) != Some(&b'.') {
                return None;
            }
            p += 1;
        }
        let mut v: u32 = 0;
        let mut n = 0;
        while n < 4 {
            match s.get(p + n) {
                Some(c) if c.is_ascii_digit() => v = v * 10 + u32::from(c - b'0'),
                _ => break,
            }
            n += 1;
        }
        if n == 0 || n > 3 || v > 255 {
            return None;
        }
        *octet = v as u8;
        p += n;
    }
    Some((octets, p))
}

/// An address starting at the word start `start`, with its end.
pub fn detect(s: &[u8], start: usize, keep_versions: bool) -> Option<([u8; 4], usize)> {
    // A dot before continues a version or a longer dotted number, unless
    // it ends an ellipsis (strongSwan's `192.0.2.1[a]...203.0.113.9[b]`).
    let ellipsis = start >= 2 && s[start - 2] == b'.';
    if start > 0
        && matches!(s[start - 1], b'.' | b'0'..=b'9' | b'a'..=b'z' | b'A'..=b'Z')
        && !(s[start - 1] == b'.' && ellipsis)
    {
        return None;
    }
    let (octets, end) = parse_quad(s, start)?;
    match s.get(end) {
        Some(c) if c.is_ascii_alphanumeric() => return None,
        Some(b'.') if s.get(end + 1).is_some_and(u8::is_ascii_digit) => return None,
        _ => {}
    }
    if keep_versions && (is_version(s, start) || debian_version(s, start, end) || is_oid(s, start))
    {
        return None;
    }
    Some((octets, end))
}

/// Whether the quad `s[start..end]` is part of a Debian (or RPM) version:
/// after an epoch (`1:2.3.19.1`), or before `+` or `~` (`+dfsg1`,
/// `~deb12u1`), or before `-` and a revision that is no address
/// (`2.3.19.1-2.1`, but `203.0.113.7-203.0.113.9` is a range).
fn debian_version(s: &[u8], start: usize, end: usize) -> bool {
    match s.get(end) {
        Some(b'+' | b'~') => return s.get(end + 1).is_some_and(u8::is_ascii_alphanumeric),
        Some(b'-') if s.get(end + 1).is_some_and(u8::is_ascii_digit) => {
            return parse_quad(s, end + 1).is_none();
        }
        _ => {}
    }
    // An epoch: digits and `:` right before, starting a word.
    if start < 2 || s[start - 1] != b':' {
        return false;
    }
    let digits = s[..start - 1]
        .iter()
        .rev()
        .take(4)
        .take_while(|c| c.is_ascii_digit())
        .count();
    let b = start - 1 - digits;
    (1..=3).contains(&digits)
        && (b == 0 || !(s[b - 1].is_ascii_alphanumeric() || matches!(s[b - 1], b':' | b'.')))
}

/// The form an address is written in, kept when it is rewritten.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Form {
    /// `203.0.113.7`
    Dotted,
    /// `203-0-113-7`, inside a host name (`host-203-0-113-7.example.net`).
    Dashed,
    /// `7.113.0.203`, before `.in-addr.arpa`.
    Reversed,
}

/// A dashed address (`203-0-113-40`) inside a host name at the word start
/// `start`: four octets joined by `-`, then `.` and a letter (a domain), not
/// glued to more digits before.
pub fn detect_dashed(s: &[u8], start: usize) -> Option<([u8; 4], usize)> {
    if start > 0 {
        let b = s[start - 1];
        if b.is_ascii_alphanumeric() || b == b'.' {
            return None;
        }
        if b == b'-' && start > 1 && s[start - 2].is_ascii_digit() {
            return None;
        }
    }
    let mut p = start;
    let mut octets = [0u8; 4];
    for (k, octet) in octets.iter_mut().enumerate() {
        if k > 0 {
            if s.get(p) != Some(&b'-') {
                return None;
            }
            p += 1;
        }
        let n = s[p.min(s.len())..]
            .iter()
            .take(4)
            .take_while(|c| c.is_ascii_digit())
            .count();
        if n == 0 || n > 3 {
            return None;
        }
        let v = s[p..p + n]
            .iter()
            .fold(0u32, |v, c| v * 10 + u32::from(c - b'0'));
        *octet = u8::try_from(v).ok()?;
        p += n;
    }
    (s.get(p) == Some(&b'.') && s.get(p + 1).is_some_and(u8::is_ascii_alphabetic))
        .then_some((octets, p))
}

/// Whether the quad ending at `end` is a reverse-DNS name's
/// (`7.113.0.203.in-addr.arpa`).
pub fn reversed(s: &[u8], end: usize) -> bool {
    const ARPA: &[u8] = b".in-addr.arpa";
    s.get(end..end + ARPA.len())
        .is_some_and(|t| t.eq_ignore_ascii_case(ARPA))
}

/// Writes `octets` in `form` into `buf`; returns the length.
pub fn format_as(octets: [u8; 4], form: Form, buf: &mut [u8; 15]) -> usize {
    match form {
        Form::Dotted => format(octets, buf),
        Form::Dashed => {
            let n = format(octets, buf);
            for b in &mut buf[..n] {
                if *b == b'.' {
                    *b = b'-';
                }
            }
            n
        }
        Form::Reversed => {
            let [a, b, c, d] = octets;
            format([d, c, b, a], buf)
        }
    }
}

/// Whether the quad at `start` follows a version marker: `version`, `ver`,
/// `v` or `release` (any case) then up to one of ` =:/` with spaces around, or
/// a capitalised product token directly before a `/` (`Chrome/120.0.0.0`).
pub fn is_version(s: &[u8], start: usize) -> bool {
    let (p, sep) = before_marker(s, start);
    p != start
        && may_end_version_word(s, p, sep == b'/' && p + 1 == start)
        && word_is_version(s, start, p, sep)
}

/// Where the word before the quad at `start` ends, past spaces and JSON's
/// quotes (`"version": "28.0.5.1"`, `\"v\":\"1...`) around one separator of
/// ` =:/`, and that separator (` ` when there is none).
fn before_marker(s: &[u8], start: usize) -> (usize, u8) {
    let skip_spaces = |mut p: usize| {
        while p > 0 && start - p < 8 && matches!(s[p - 1], b' ' | b'"' | b'\\') {
            p -= 1;
        }
        p
    };
    let p = skip_spaces(start);
    if p > 0 && matches!(s[p - 1], b'=' | b':' | b'/') {
        (skip_spaces(p - 1), s[p - 1])
    } else {
        (p, b' ')
    }
}

/// Whether the word ending at `p` (found by [`before_marker`], with its
/// separator `sep`) marks the quad at `start` as a version.
fn word_is_version(s: &[u8], start: usize, p: usize, sep: u8) -> bool {
    let mut w = p;
    while w > 0 && p - w < 16 && s[w - 1].is_ascii_alphabetic() {
        w -= 1;
    }
    if w > 0 && s[w - 1].is_ascii_alphanumeric() {
        return false;
    }
    let word = &s[w..p];
    // A product token starts a word: after a `/` it is a path's segment
    // (Asterisk's `IPV4/UDP/198.51.100.9/5060`), after a `_` part of a
    // code (Squid's `HIER_DIRECT/198.51.100.20`), not a product.
    let in_path = w > 0 && matches!(s[w - 1], b'/' | b'_');
    if sep == b'/' && p + 1 == start && word.len() >= 2 && word[0].is_ascii_uppercase() && !in_path
    {
        return true;
    }
    if VERSION_WORDS.iter().any(|k| word.eq_ignore_ascii_case(k)) {
        return true;
    }
    // `Nextcloud 29.0.7.1 is up to date`: a product that numbers its
    // releases with four parts, then one space.
    sep == b' ' && p + 1 == start && PRODUCTS.contains(&word)
}

/// The words before a version (any case): `version 1.2.3.4`, `v=1.2.3.4`.
const VERSION_WORDS: &[&[u8]] = &[b"version", b"ver", b"v", b"release", b"build", b"oid"];

/// Whether the word ending at `p` (the letters before it) may be one that
/// [`is_version`] accepts, told from its last two bytes: a product token
/// before a `/` (`product_token`: any word may be one), `v`, or a word of
/// two letters or more whose last two are those of a [`VERSION_WORDS`] or
/// [`PRODUCTS`] word. `false` only when `is_version` is: most words before
/// an address (`from`, `client`, JSON keys) end otherwise, and scanning
/// back over their letters cost more than the rest of the test.
fn may_end_version_word(s: &[u8], p: usize, product_token: bool) -> bool {
    let Some(&last) = p.checked_sub(1).and_then(|i| s.get(i)) else {
        return false;
    };
    // No letter before `p`: the word is empty, and no empty word is one.
    if !last.is_ascii_alphabetic() {
        return false;
    }
    if product_token || last | 0x20 == b'v' {
        return true;
    }
    let second = p.checked_sub(2).map_or(b' ', |i| s[i]);
    // One letter, not `v`: every other word is longer.
    second.is_ascii_alphabetic() && VERSION_ENDS[usize::from(second & 31)] >> (last & 31) & 1 == 1
}

/// The last two letters of the [`VERSION_WORDS`] and [`PRODUCTS`] of two
/// letters or more, in any case: bit `last & 31` of entry `second_last &
/// 31` (`& 31` maps a letter's two cases together).
const VERSION_ENDS: [u32; 32] = {
    let mut t = [0u32; 32];
    let lists = [VERSION_WORDS, PRODUCTS];
    let mut l = 0;
    while l < lists.len() {
        let mut i = 0;
        while i < lists[l].len() {
            let w = lists[l][i];
            if w.len() >= 2 {
                t[(w[w.len() - 2] & 31) as usize] |= 1 << (w[w.len() - 1] & 31);
            }
            i += 1;
        }
        l += 1;
    }
    t
};

/// Products whose versions have four parts, as their own messages name
/// them before the version (`Nextcloud 29.0.7.1`, `Chrome 120.0.6099.109`,
/// `Windows 10.0.19045.3803`). Their names followed by an address are no
/// log phrase.
const PRODUCTS: &[&[u8]] = &[
    b"Nextcloud",
    b"ownCloud",
    b"Chrome",
    b"Chromium",
    b"Edge",
    b"Windows",
    b"Plesk",
    b"Thunderbird",
    b"Firefox",
    // RabbitMQ's `Starting RabbitMQ 3.13.7 on Erlang 26.2.5.3 [jit]`.
    b"Erlang",
];

/// Whether the quad `s[start..end]` is an ASN.1 object identifier rather
/// than an address: its first arc is 0, 1 or 2 (every OID's), and the line
/// before it (at most 48 bytes: each quad of a hostile line of them reads
/// that far) names OIDs: the word `oid`/`OID`, slapd's
/// attribute list `attr=`, or a longer OID (five or more arcs, as
/// `1.3.6.1.4.1.2021.10.1.3.1`). `SRCH attr=cn mail 2.5.4.3`, `oid
/// 1.3.6.1.4.1.311 and 2.5.4.3`. A public address of 1.0.0.0/8 or
/// 2.0.0.0/8 on such a line is kept as well: the price of not hashing OIDs.
pub fn is_oid(s: &[u8], start: usize) -> bool {
    if !matches!(s[start], b'0'..=b'2') || s.get(start + 1) != Some(&b'.') {
        return false;
    }
    let from = start.saturating_sub(48);
    let line = &s[from..start];
    let line = match memchr::memrchr(b'\n', line) {
        Some(n) => &line[n + 1..],
        None => line,
    };
    if memchr::memmem::find(line, b"attr=").is_some() {
        return true;
    }
    // Words of the line, split at anything but letters, digits and dots.
    line.split(|&c| !(c.is_ascii_alphanumeric() || c == b'.'))
        .any(|w| {
            w.eq_ignore_ascii_case(b"oid")
                || w.eq_ignore_ascii_case(b"oids")
                || (w.len() >= 9
                    && w.iter().all(|&c| c.is_ascii_digit() || c == b'.')
                    && w.iter().filter(|&&c| c == b'.').count() >= 4
                    && w[0].is_ascii_digit()
                    && !w.windows(2).any(|p| p == b".."))
        })
}

/// Keeps the first `prefix` bits.
pub fn truncate(octets: [u8; 4], prefix: u8) -> [u8; 4] {
    let bits = u32::from_be_bytes(octets);
    let mask = if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix.min(32)))
    };
    (bits & mask).to_be_bytes()
}

/// The length of `a.b.c.d` as [`format`] writes it.
pub fn written_len(octets: [u8; 4]) -> usize {
    3 + octets
        .iter()
        .map(|&o| 1 + usize::from(o >= 10) + usize::from(o >= 100))
        .sum::<usize>()
}

/// Writes `a.b.c.d` (no leading zeros) into `buf`; returns the length.
pub fn format(octets: [u8; 4], buf: &mut [u8; 15]) -> usize {
    let mut n = 0;
    for (k, &o) in octets.iter().enumerate() {
        if k > 0 {
            buf[n] = b'.';
            n += 1;
        }
        // Three bytes at once (`n <= 12`): those past the octet's digits
        // are written over by the next `.` and octet, or lie past the end.
        let [a, b, c, len] = DECIMAL[usize::from(o)];
        buf[n..n + 3].copy_from_slice(&[a, b, c]);
        n += usize::from(len);
    }
    n
}

/// Each byte value's decimal digits (no leading zeros, then zeros to 3
/// bytes) and how many there are: a look-up, where dividing by 100 and 10
/// cost ~105 instructions per address written.
const DECIMAL: [[u8; 4]; 256] = {
    let mut t = [[0u8; 4]; 256];
    let mut o = 0;
    while o < 256 {
        let (h, d, u) = ((o / 100) as u8, (o / 10 % 10) as u8, (o % 10) as u8);
        t[o] = match o {
            0..=9 => [b'0' + u, 0, 0, 1],
            10..=99 => [b'0' + d, b'0' + u, 0, 2],
            _ => [b'0' + h, b'0' + d, b'0' + u, 3],
        };
        o += 1;
    }
    t
};

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// `written_len` is what `format` writes, for every octet value.
    #[test]
    fn written_len_is_formats() {
        let mut buf = [0u8; 15];
        for o in 0..=255u8 {
            for q in [[o, 0, 0, 0], [1, o, 22, 255], [o, o, o, o]] {
                assert_eq!(written_len(q), format(q, &mut buf), "{q:?}");
            }
        }
    }

    #[test]
    fn parse_and_format() {
        let (o, end) = parse_quad(b"010.0.255.7:80", 0).unwrap();
        assert_eq!((o, end), ([10, 0, 255, 7], 11));
        let mut buf = [0; 15];
        let n = format(o, &mut buf);
        assert_eq!(&buf[..n], b"10.0.255.7");
        assert!(parse_quad(b"1.2.3.256", 0).is_none());
        assert!(parse_quad(b"1.2.3.1000", 0).is_none());
        assert!(parse_quad(b"1.2.3", 0).is_none());
    }

    #[test]
    fn truncation() {
        assert_eq!(truncate([203, 0, 113, 7], 24), [203, 0, 113, 0]);
        assert_eq!(truncate([203, 0, 113, 7], 20), [203, 0, 112, 0]);
        assert_eq!(truncate([203, 0, 113, 7], 0), [0, 0, 0, 0]);
        assert_eq!(truncate([203, 0, 113, 7], 32), [203, 0, 113, 7]);
    }

    #[test]
    fn versions() {
        for s in [
            "version 1.2.3.4",
            "Version: 1.2.3.4",
            "ver=1.2.3.4",
            "Chrome/1.2.3.4",
        ] {
            let at = s.find('1').unwrap();
            assert!(is_version(s.as_bytes(), at), "{s}");
        }
        for s in [
            "from 1.2.3.4",
            "http://1.2.3.4",
            "api/1.2.3.4",
            "serve 1.2.3.4",
        ] {
            let at = s.find('1').unwrap();
            assert!(!is_version(s.as_bytes(), at), "{s}");
        }
    }

    /// The divisions `format` made: the reference for the table.
    fn format_divided(octets: [u8; 4], buf: &mut [u8; 15]) -> usize {
        let mut n = 0;
        for (k, &o) in octets.iter().enumerate() {
            if k > 0 {
                buf[n] = b'.';
                n += 1;
            }
            if o >= 100 {
                buf[n] = b'0' + o / 100;
                n += 1;
            }
            if o >= 10 {
                buf[n] = b'0' + (o / 10) % 10;
                n += 1;
            }
            buf[n] = b'0' + o % 10;
            n += 1;
        }
        n
    }

    /// `is_version` without the test of the word's last letters: the
    /// reference for it.
    fn is_version_scanned(s: &[u8], start: usize) -> bool {
        let (p, sep) = before_marker(s, start);
        p != start && word_is_version(s, start, p, sep)
    }

    /// The table writes what the divisions wrote, for every octet value in
    /// every place.
    #[test]
    fn format_is_the_divisions() {
        let (mut a, mut b) = ([0u8; 15], [0u8; 15]);
        for o in 0..=255u8 {
            for q in [
                [o, 0, 0, 0],
                [1, o, 22, 255],
                [255, 9, o, 100],
                [99, 10, 0, o],
                [o; 4],
            ] {
                let (n, m) = (format(q, &mut a), format_divided(q, &mut b));
                assert_eq!(&a[..n], &b[..m], "{q:?}");
            }
        }
    }

    /// Log-like pieces: the words `is_version` looks for (in any case),
    /// other words, separators, digits and dots.
    fn quad_part() -> impl Strategy<Value = String> {
        let words = prop::sample::select(
            VERSION_WORDS
                .iter()
                .chain(PRODUCTS)
                .chain(&[
                    &b"from"[..],
                    b"client",
                    b"ClientAddr",
                    b"IPV4",
                    b"HIER_DIRECT",
                ])
                .map(|w| String::from_utf8(w.to_vec()).unwrap())
                .collect::<Vec<_>>(),
        );
        prop_oneof![
            (words, any::<u8>()).prop_map(|(w, m)| match m % 3 {
                0 => w,
                1 => w.to_uppercase(),
                _ => w[1..].to_string(),
            }),
            prop::sample::select(vec![
                " ", "  ", "=", ":", "/", "\"", "\\", "_", "-", "+", "~", ".", "..", "[", "x", "v",
                "V", "ion", "1", "0", "12", "255", "256", "1000", "007", "\u{e9}", "\0",
            ])
            .prop_map(String::from),
            (any::<[u8; 4]>(), 0..3usize).prop_map(|(o, k)| {
                let q = format!("{}.{}.{}.{}", o[0], o[1], o[2], o[3]);
                q[..q.len() - k].to_string()
            }),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2048))]

        /// `is_version` and `format` do what their references do, at every
        /// position of log-like text and of any bytes.
        #[test]
        fn version_and_format_are_their_reference(
            parts in proptest::collection::vec(quad_part(), 0..12),
            bytes in proptest::collection::vec(any::<u8>(), 0..40),
            octets in any::<[u8; 4]>(),
        ) {
            let text = parts.concat();
            for s in [text.as_bytes(), &bytes[..]] {
                for at in 0..s.len() {
                    prop_assert_eq!(is_version(s, at), is_version_scanned(s, at), "{:?} at {}", s, at);
                }
            }
            let (mut a, mut b) = ([0u8; 15], [0u8; 15]);
            let (n, m) = (format(octets, &mut a), format_divided(octets, &mut b));
            prop_assert_eq!(&a[..n], &b[..m]);
        }
    }
}
