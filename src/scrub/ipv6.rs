//! IPv6 addresses in every RFC 4291 / RFC 5952 textual form.
//!
//! Accepted: full (`2001:0db8:0:0:0:0:0:1`), compressed (`2001:db8::1`, `::1`,
//! `fe80::`), any case, with an embedded IPv4 tail (`::ffff:192.0.2.1`,
//! `64:ff9b::192.0.2.1`). A zone id (`%eth0`), brackets and a port are left
//! in place around the address. Decisions against false positives:
//! - the candidate starts a word: not after a letter, digit or `.`; after a
//!   `:` only when the token before that colon is not itself a hex group
//!   (`IPv6:2001:db8::1` is an address, the tail of `12:34:56:78` is not);
//! - it is not glued to a following letter or digit, or to more groups;
//! - without `::` it needs all 8 groups, so times (`12:34:56`), MAC addresses
//!   (6 groups) and `20:17:03.644` are not addresses;
//! - 8 groups of exactly 2 hex digits are an EUI-64 / WWN, not an address;
//! - it contains a decimal digit or is the full 8-group form, so C++/Rust
//!   paths made of hex letters (`a::b`, `Cache::add`) are not addresses.

use std::net::Ipv6Addr;

use super::ipv4;

/// A detected address and where its text ends.
#[derive(Clone, Copy)]
pub struct Found {
    pub addr: Ipv6Addr,
    pub end: usize,
}

fn is_hex(c: u8) -> bool {
    c.is_ascii_hexdigit()
}

/// Length of the hex run at `s[p..]`, counting at most `cap`.
pub fn hex_run(s: &[u8], p: usize, cap: usize) -> usize {
    let mut n = 0;
    while n < cap && p + n < s.len() && is_hex(s[p + n]) {
        n += 1;
    }
    n
}

/// Whether an address may start at `start` (see the module doc).
fn starts_word(s: &[u8], start: usize) -> bool {
    if start == 0 {
        return true;
    }
    match s[start - 1] {
        b'.' | b'0'..=b'9' | b'a'..=b'z' | b'A'..=b'Z' => false,
        b':' => {
            if s[start] == b':' {
                return false;
            }
            // The token before the colon: a hex group means we are mid-run.
            let colon = start - 1;
            let mut b = colon;
            while b > 0 && colon - b < 5 && s[b - 1].is_ascii_alphanumeric() {
                b -= 1;
            }
            let token = &s[b..colon];
            !(token.is_empty() || (token.len() <= 4 && token.iter().all(|&c| is_hex(c))))
        }
        _ => true,
    }
}

/// An address starting at `start` (a hex digit, or the `::` of `::1`).
pub fn detect(s: &[u8], start: usize) -> Option<Found> {
    if !starts_word(s, start) {
        return None;
    }
    let mut groups = [0u16; 8];
    let mut n = 0usize;
    let mut gap: Option<usize> = None;
    let mut p = start;
    let mut has_digit = false;
    let mut all_two = true;
    if s[p..].starts_with(b"::") {
        gap = Some(0);
        p += 2;
    }
    loop {
        let h = hex_run(s, p, 5);
        if h == 0 {
            break;
        }
        if h > 4 {
            return None;
        }
        if s.get(p + h) == Some(&b'.') {
            // Embedded IPv4: only as the last 32 bits.
            let (v4, end) = ipv4::parse_quad(s, p)?;
            if n > 6 || (gap.is_none() && n != 6) {
                return None;
            }
            groups[n] = u16::from_be_bytes([v4[0], v4[1]]);
            groups[n + 1] = u16::from_be_bytes([v4[2], v4[3]]);
            n += 2;
            p = end;
            has_digit = true;
            all_two = false;
            break;
        }
        let mut v = 0u16;
        for &c in &s[p..p + h] {
            has_digit |= c.is_ascii_digit();
            v = v << 4 | u16::from((c as char).to_digit(16).unwrap_or(0) as u8);
        }
        all_two &= h == 2;
        groups[n] = v;
        n += 1;
        p += h;
        if n == 8 {
            break;
        }
        if s.get(p) != Some(&b':') {
            break;
        }
        if s.get(p + 1) == Some(&b':') {
            if gap.is_some() {
                return None;
            }
            gap = Some(n);
            p += 2;
        } else if s.get(p + 1).copied().is_some_and(is_hex) {
            p += 1;
        } else {
            break; // a trailing `:` is punctuation, not part of the address
        }
    }
    // What follows must end the address.
    match s.get(p) {
        Some(c) if c.is_ascii_alphanumeric() => return None,
        // `:` then a letter or digit glues on (`1:0erin`, `1:u:3f9a...`).
        Some(b':')
            if s.get(p + 1)
                .is_some_and(|&c| c.is_ascii_alphanumeric() || c == b':') =>
        {
            return None
        }
        Some(b'.') if s.get(p + 1).is_some_and(u8::is_ascii_digit) => return None,
        _ => {}
    }
    let addr = match gap {
        None if n == 8 => {
            if all_two {
                return None; // EUI-64 / WWN
            }
            groups
        }
        None => return None,
        Some(_) if n > 7 => return None,
        Some(at) => {
            if !has_digit {
                return None;
            }
            let mut full = [0u16; 8];
            full[..at].copy_from_slice(&groups[..at]);
            let tail = n - at;
            full[8 - tail..].copy_from_slice(&groups[at..n]);
            full
        }
    };
    Some(Found {
        addr: Ipv6Addr::from(addr),
        end: p,
    })
}

/// Keeps the first `prefix` bits.
pub fn truncate(addr: Ipv6Addr, prefix: u8) -> Ipv6Addr {
    let bits = u128::from(addr);
    let mask = if prefix == 0 {
        0
    } else {
        u128::MAX << (128 - u32::from(prefix.min(128)))
    };
    Ipv6Addr::from(bits & mask)
}

/// The longest text [`format`] writes (`ffff:ffff:…:ffff`, or
/// `::ffff:255.255.255.255`: 39 and 22 bytes).
pub const MAX_LEN: usize = 39;

/// Writes `addr` in its canonical form (RFC 5952), byte for byte what
/// `Ipv6Addr`'s `Display` writes, into `buf`; returns the length. Its own
/// writer because `core::fmt` (a `Formatter`, a `dyn Write`, padding
/// checks) cost ~1,350 instructions per truncated address, ~5x this; the
/// test `format_is_display` holds the two equal over arbitrary addresses.
pub fn format(addr: Ipv6Addr, buf: &mut [u8; MAX_LEN]) -> usize {
    if let Some(v4) = addr.to_ipv4_mapped() {
        // Display's one special form (not `::a.b.c.d`: that is deprecated).
        buf[..7].copy_from_slice(b"::ffff:");
        let mut quad = [0u8; 15];
        let n = ipv4::format(v4.octets(), &mut quad);
        buf[7..7 + n].copy_from_slice(&quad[..n]);
        return 7 + n;
    }
    let groups = addr.segments();
    // The longest run of zero groups, the first of equal ones, if at least
    // two long (RFC 5952 4.2.2: one zero group is written `0`).
    let (mut best_at, mut best_len) = (8, 0);
    let mut k = 0;
    while k < 8 {
        if groups[k] != 0 {
            k += 1;
            continue;
        }
        let at = k;
        while k < 8 && groups[k] == 0 {
            k += 1;
        }
        if k - at > best_len {
            (best_at, best_len) = (at, k - at);
        }
    }
    if best_len < 2 {
        best_at = 8;
    }
    let mut n = 0;
    let mut k = 0;
    while k < 8 {
        if k == best_at {
            buf[n..n + 2].copy_from_slice(b"::");
            n += 2;
            k += best_len;
            continue;
        }
        if k > 0 && k != best_at + best_len {
            buf[n] = b':';
            n += 1;
        }
        n += write_group(groups[k], &mut buf[n..]);
        k += 1;
    }
    n
}

/// Writes `g` in lower-case hex without leading zeros; returns the length.
fn write_group(g: u16, out: &mut [u8]) -> usize {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    // Digits: 1 for 0..=0xf, up to 4.
    let digits = (4 - (g.leading_zeros() as usize) / 4).max(1);
    for j in 0..digits {
        out[j] = HEX[usize::from(g >> (4 * (digits - 1 - j)) & 0xf)];
    }
    digits
}

/// The domain a reverse-DNS name of an IPv6 address ends in (RFC 3596).
pub const ARPA: &[u8] = b"ip6.arpa";

/// A reverse-DNS name of an IPv6 address or prefix at `start`, a word start
/// (`7.0.0.0.….2.6.2.1.0.0.2.ip6.arpa`, RFC 3596): 1 to 32 hex nibbles,
/// the lowest first, each followed by `.`, then [`ARPA`] (lower case, as
/// resolvers log it) ending the word. The address (nibbles not written are
/// zero), the number of nibbles and where they end (before `ip6.arpa`: like
/// `in-addr.arpa` names, only the nibbles are rewritten).
pub fn detect_arpa(s: &[u8], start: usize) -> Option<(Ipv6Addr, usize, usize)> {
    if start > 0 && (s[start - 1].is_ascii_alphanumeric() || matches!(s[start - 1], b'.' | b'-')) {
        return None;
    }
    let mut bits = 0u128;
    let mut p = start;
    let mut n = 0;
    while !s[p..].starts_with(ARPA) {
        let c = *s.get(p)?;
        if n == 32 || !is_hex(c) || s.get(p + 1) != Some(&b'.') {
            return None;
        }
        bits = bits >> 4 | u128::from(nibble(c)) << 124;
        n += 1;
        p += 2;
    }
    let after = p + ARPA.len();
    if n == 0
        || s.get(after)
            .is_some_and(|&c| c.is_ascii_alphanumeric() || c == b'-')
    {
        return None;
    }
    // Read lowest first and shifted in from the top: the last nibble read
    // is the address's highest, the first the `n`th from the top.
    Some((Ipv6Addr::from(bits), n, p - 1))
}

/// The value of the hex digit `c`.
pub fn nibble(c: u8) -> u8 {
    match c {
        b'0'..=b'9' => c - b'0',
        _ => (c | 0x20) - b'a' + 10,
    }
}

/// The embedded IPv4 address of `::ffff:a.b.c.d` (in any textual form).
pub fn mapped_v4(addr: Ipv6Addr) -> Option<[u8; 4]> {
    addr.to_ipv4_mapped().map(|v4| v4.octets())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found(s: &str) -> Option<String> {
        let start = s.find(|c: char| c.is_ascii_hexdigit() || c == ':')?;
        detect(s.as_bytes(), start).map(|f| format!("{} {}", f.addr, &s[start..f.end]))
    }

    #[test]
    fn forms() {
        assert_eq!(found("2001:db8::1").unwrap(), "2001:db8::1 2001:db8::1");
        assert_eq!(found("::1]").unwrap(), "::1 ::1");
        assert_eq!(found("fe80::1%eth0").unwrap(), "fe80::1 fe80::1");
        assert_eq!(
            found("::ffff:192.0.2.1 x").unwrap(),
            "::ffff:192.0.2.1 ::ffff:192.0.2.1"
        );
        assert_eq!(
            found("2001:0DB8:0000:0000:0000:0000:0000:0001").unwrap(),
            "2001:db8::1 2001:0DB8:0000:0000:0000:0000:0000:0001"
        );
        assert_eq!(found("2001:db8:: x").unwrap(), "2001:db8:: 2001:db8::");
        assert_eq!(
            found("1:2:3:4:5:6:1.2.3.4").unwrap(),
            "1:2:3:4:5:6:102:304 1:2:3:4:5:6:1.2.3.4"
        );
        assert_eq!(
            found("2001:db8::1: refused").unwrap(),
            "2001:db8::1 2001:db8::1"
        );
    }

    #[test]
    fn not_addresses() {
        for s in [
            "12:34:56",
            "20:17:03.644",
            "00:1a:2b:3c:4d:5e",
            "00:11:22:33:44:55:66:77",
            "a::b",
            "1:2:3:4:5:6:7:8:9",
            "1::2::3",
            "2001:db8::1x",
            "12345::1",
        ] {
            assert!(found(s).is_none(), "{s}");
        }
    }

    /// `format` is `Display`, on the forms that matter (zero runs at each
    /// place, ties, one zero group, mapped and compatible addresses) and on
    /// arbitrary addresses, some with runs of zero groups forced in.
    #[test]
    fn format_is_display_on_forms() {
        for s in [
            "::",
            "::1",
            "1::",
            "1:0:0:2:0:0:3:4",
            "1:0:2:0:3:0:4:0",
            "0:1:0:0:0:2:0:0",
            "2001:db8:0:1:1:1:1:1",
            "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
            "::ffff:255.255.255.255",
            "::ffff:0.0.0.0",
            "::1.2.3.4",
            "::ffff:0:1.2.3.4",
            "64:ff9b::192.0.2.1",
            "fe80::1:0:0",
            "0:0:1::",
        ] {
            let a: Ipv6Addr = s.parse().unwrap();
            let mut buf = [0u8; MAX_LEN];
            let n = format(a, &mut buf);
            assert_eq!(
                std::str::from_utf8(&buf[..n]).unwrap(),
                a.to_string(),
                "{s}"
            );
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(20_000))]
        #[test]
        fn format_is_display(
            groups in proptest::array::uniform8(proptest::prop_oneof![
                3 => proptest::num::u16::ANY,
                3 => proptest::strategy::Just(0u16),
                1 => 0u16..16,
                1 => proptest::strategy::Just(0xffffu16),
            ]),
            prefix in 0u8..=128,
        ) {
            for a in [Ipv6Addr::from(groups), truncate(Ipv6Addr::from(groups), prefix)] {
                let mut buf = [0u8; MAX_LEN];
                let n = format(a, &mut buf);
                proptest::prop_assert_eq!(std::str::from_utf8(&buf[..n]).unwrap(), a.to_string());
            }
        }
    }

    #[test]
    fn truncation() {
        let a: Ipv6Addr = "2001:db8:1234:5678::1".parse().unwrap();
        assert_eq!(truncate(a, 48).to_string(), "2001:db8:1234::");
        assert_eq!(truncate(a, 0).to_string(), "::");
        assert_eq!(truncate(a, 128), a);
    }
}
