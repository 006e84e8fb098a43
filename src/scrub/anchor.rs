//! The prefilter: finds the few bytes where something to scrub may be
//! anchored, 16 bytes at a time, so a line with nothing to scrub costs a
//! vectorised scan and a handful of two- or three-byte checks.
//!
//! Every detector needs one of these *anchors* at or after the position the
//! one-pass driver detects it at (see `scan::run`):
//!
//! | anchor | needed by |
//! |---|---|
//! | `:` | IPv6 (`::1`, the colon after a first group), `key: value`, JSON `"key":`, Nextcloud's `Login failed: NAME` |
//! | `.` after a digit | IPv4 (the dot after the first octet) |
//! | `=` | `key=value`, useradd's `new user: name=NAME` |
//! | `@` | e-mail, URL userinfo |
//! | `%` | a percent-encoded e-mail address (`vera%40example.org`) |
//! | `.` after `ip6` | an IPv6 reverse-DNS name (`….2.ip6.arpa`) |
//! | `[` | the date of an access-log line |
//! | space after `r`/`R` | `user NAME`, `user NAME: `, `for NAME from`, `password changed for NAME` |
//! | `/` after `e` | `/home/NAME` |
//!
//! [`worth_a_look`] then throws most anchors away with a look at their
//! neighbours (`=` after `level` holds no login), and [`backup`] says where the
//! driver must start stepping so that it visits the detector's start exactly
//! as a byte-by-byte walk would.
//!
//! The block mask is SSE2 compares on x86_64 (the baseline of every such
//! CPU, so no detection at run time) and the byte-wise rule elsewhere; a
//! test holds the two to the same answer on every pair of bytes.

const BLOCK: usize = 16;

/// Whether byte `c`, after byte `p`, is an anchor (see the module table).
#[inline(always)]
fn is_anchor(c: u8, p: u8) -> bool {
    let lower = p | 0x20;
    (c == b':')
        | (c == b'=')
        | (c == b'@')
        | (c == b'%')
        | (c == b'[')
        | ((c == b'.') & (p.wrapping_sub(b'0') < 10))
        | ((c == b' ') & (lower == b'r'))
        | ((c == b'/') & (p == b'e'))
}

/// Bit `k` is set when `cur[k]` (after `prev[k]`) is an anchor: the
/// byte-at-a-time rule of [`is_anchor`], for targets without SSE2 (and the
/// reference the SIMD mask is tested against).
#[cfg_attr(all(target_arch = "x86_64", target_feature = "sse2"), allow(dead_code))]
fn block_mask_bytewise(cur: &[u8; BLOCK], prev: &[u8; BLOCK]) -> u16 {
    let mut mask = 0u16;
    for k in 0..BLOCK {
        mask |= u16::from(is_anchor(cur[k], prev[k])) << k;
    }
    mask
}

/// The same mask with SSE2, which every x86_64 CPU has (`safe_arch`: the
/// intrinsics without `unsafe` here): about 35 instructions per 16 bytes,
/// one compare per anchor byte, three more for the byte before and one
/// `pmovmskb`. The byte-wise rule, even vectorised by the compiler, took
/// about 70 and a call (a quarter of a clean line's instructions).
#[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
#[inline]
fn block_mask(cur: &[u8; BLOCK], prev: &[u8; BLOCK]) -> u16 {
    use safe_arch::{
        bitand_m128i as and, bitor_m128i as or, cmp_eq_mask_i8_m128i as eq, load_unaligned_m128i,
        min_u8_m128i, move_mask_i8_m128i, set_splat_i8_m128i as splat, sub_i8_m128i,
    };
    // Keep in step with `is_anchor` (a test compares the two on every pair
    // of bytes).
    let (c, p) = (load_unaligned_m128i(cur), load_unaligned_m128i(prev));
    let is = |v: u8| eq(c, splat(v as i8));
    // `p - '0' <= 9` unsigned: min(d, 9) == d.
    let d = sub_i8_m128i(p, splat(b'0' as i8));
    let digit_before = eq(min_u8_m128i(d, splat(9)), d);
    let r_before = eq(or(p, splat(0x20)), splat(b'r' as i8));
    let e_before = eq(p, splat(b'e' as i8));
    let alone = or(or(is(b':'), is(b'=')), or(or(is(b'@'), is(b'%')), is(b'[')));
    let after = or(
        or(and(is(b'.'), digit_before), and(is(b' '), r_before)),
        and(is(b'/'), e_before),
    );
    move_mask_i8_m128i(or(alone, after)) as u16
}

#[cfg(not(all(target_arch = "x86_64", target_feature = "sse2")))]
#[inline]
fn block_mask(cur: &[u8; BLOCK], prev: &[u8; BLOCK]) -> u16 {
    block_mask_bytewise(cur, prev)
}

/// A block of anchors holding position `from`: its start (`from`, or less
/// near the end of `s`, so that every block is a whole one) and its mask.
#[inline]
fn block_at(s: &[u8], from: usize) -> (usize, u16) {
    if s.len() < BLOCK {
        // A short text: zeros pad it, and anchor nothing.
        let mut cur = [0u8; BLOCK];
        let mut prev = [0u8; BLOCK];
        cur[..s.len()].copy_from_slice(s);
        prev[1..=s.len()].copy_from_slice(s);
        return (0, block_mask(&cur, &prev));
    }
    let base = from.min(s.len() - BLOCK);
    let whole = |at: usize| -> &[u8; BLOCK] {
        s[at..at + BLOCK]
            .try_into()
            .expect("a block is BLOCK bytes")
    };
    let prev = match base.checked_sub(1) {
        Some(b) => *whole(b),
        None => {
            let mut prev = [0u8; BLOCK];
            prev[1..].copy_from_slice(&s[..BLOCK - 1]);
            prev
        }
    };
    (base, block_mask(whole(base), &prev))
}

/// Walks the anchors of a text in order, one 16-byte block mask at a time.
pub struct Anchors<'a> {
    s: &'a [u8],
    base: usize,
    mask: u16,
}

impl<'a> Anchors<'a> {
    pub fn new(s: &'a [u8]) -> Anchors<'a> {
        let (base, mask) = block_at(s, 0);
        Anchors { s, base, mask }
    }

    /// The first anchor at or after `from`.
    #[inline]
    pub fn next(&mut self, mut from: usize) -> Option<usize> {
        loop {
            if from < self.base + BLOCK {
                let skip = from.saturating_sub(self.base);
                let m = (self.mask >> skip) << skip;
                if m != 0 {
                    return Some(self.base + m.trailing_zeros() as usize);
                }
                from = self.base + BLOCK;
            }
            if from >= self.s.len() {
                return None;
            }
            (self.base, self.mask) = block_at(self.s, from);
        }
    }
}

/// Whether `s` holds an anchor at all: without one, no detector of the
/// walk can start anywhere in it (see `scan::run`).
pub fn any(s: &[u8]) -> bool {
    Anchors::new(s).next(0).is_some()
}

/// Whether the bytes before `end` (after optional spaces, then an optional
/// closing `"` or `\"`) end like a login key: `user`, `name`, `ogin` or
/// `mail`, any case. Every key of `login` ends so.
fn key_tail_before(s: &[u8], mut end: usize) -> bool {
    while end > 0 && s[end - 1] == b' ' {
        end -= 1;
    }
    if end > 0 && s[end - 1] == b'"' {
        end -= 1;
        if end > 0 && s[end - 1] == b'\\' {
            end -= 1;
        }
    }
    let Some(tail) = end.checked_sub(4).map(|b| &s[b..end]) else {
        return false;
    };
    let t = u32::from_le_bytes([tail[0], tail[1], tail[2], tail[3]]) | 0x2020_2020;
    matches!(
        &t.to_le_bytes(),
        b"user" | b"name" | b"ogin" | b"mail" | b"ount"
    )
}

/// Whether the `=` at `c` follows an LDAP `uid` or `cn` (any case).
fn dn_key_before(s: &[u8], c: usize) -> bool {
    let lower = |k: usize| c.checked_sub(k).map(|at| s[at] | 0x20);
    (lower(2) == Some(b'c') && lower(1) == Some(b'n'))
        || (lower(3) == Some(b'u') && lower(2) == Some(b'i') && lower(1) == Some(b'd'))
}

/// Where a key before the separator at `end` ends: before spaces and a
/// closing `"` or `\"`.
fn key_end(s: &[u8], mut end: usize) -> usize {
    while end > 0 && s[end - 1] == b' ' {
        end -= 1;
    }
    if end > 0 && s[end - 1] == b'"' {
        end -= 1;
        if end > 0 && s[end - 1] == b'\\' {
            end -= 1;
        }
    }
    end
}

/// Whether the anchor at `c` may belong to something the driver detects.
/// A `false` here must be certain: the driver then skips every byte up to
/// and including `c`. `curl` says whether the text holds curl's `-u`
/// anywhere (asked only when needed, and then once: `Cx::curl_possible`).
#[inline]
pub fn worth_a_look(s: &[u8], c: usize, curl: &mut impl FnMut() -> bool) -> bool {
    let before = |k: usize| c.checked_sub(k).map(|at| s[at]);
    let after = s.get(c + 1).copied();
    match s[c] {
        // After a digit (a time, `12:34:56`, or a port) no key's tail can
        // end (they end in a letter, a quote or a space): only IPv6 and
        // curl's `-u user1:pw` remain.
        b':' if before(1).is_some_and(|b| b.is_ascii_digit()) => {
            after == Some(b':')
                || may_be_ipv6(s, c)
                || (curl() && super::secrets::curl_worth_a_look(s, c))
        }
        b':' => {
            after == Some(b':')
                || (before(1).is_some_and(|b| b.is_ascii_hexdigit()) && may_be_ipv6(s, c))
                || key_tail_before(s, c)
                || (before(1) == Some(b'd') && super::programs::nextcloud_worth_a_look(s, c))
                || super::secrets::key_tail(s, key_end(s, c))
                || (curl() && super::secrets::curl_worth_a_look(s, c))
                || s[..c].ends_with(b"\"user_id\"")
        }
        b'=' => {
            key_tail_before(s, c)
                || super::secrets::key_tail(s, key_end(s, c))
                || dn_key_before(s, c)
        }
        b'.' => may_be_ipv4(s, c) || (s[..c].ends_with(b"ip6") && s[c + 1..].starts_with(b"arpa")),
        b'%' => s[c + 1..].starts_with(b"40"),
        b' ' => {
            let lower = |k| before(k).map(|b| b | 0x20);
            (lower(3) == Some(b'f') && lower(2) == Some(b'o') && for_may_name(s, c))
                || key_tail_before(s, c)
        }
        b'/' => s[..c].ends_with(b"/home"),
        _ => true, // `@`, `[`
    }
}

/// Whether `for` before the space at `c` may take a name (`login`'s
/// `for_from`): `for NAME from`, where NAME holds no space, so the first
/// space after it starts ` from `; or a phrase of
/// `login::FOR_NAME_AFTER` right before `for`. Most `for`s are prose
/// (`waiting for the service`), and each cost the walk ~400 instructions.
fn for_may_name(s: &[u8], c: usize) -> bool {
    let rest = &s[c + 1..];
    let from = memchr::memchr(b' ', rest).is_some_and(|n| rest[n..].starts_with(b" from "));
    from || super::login::FOR_NAME_AFTER
        .iter()
        .any(|lead| s[..c - 3].ends_with(lead))
}

/// Whether an IPv6 address may run through the colon at `c`: its run of hex
/// digits, `:` and `.` holds a `::` or at least six colons (eight groups, or
/// six and an IPv4 tail). Times (`12:34:56.789`) hold two.
fn may_be_ipv6(s: &[u8], c: usize) -> bool {
    let mut colons = 0;
    let mut last_colon = false;
    for (k, &b) in s[c..].iter().enumerate() {
        if k > 48 {
            return true; // longer than any address: let the detector decide
        }
        match b {
            b':' if last_colon => return true,
            b':' => {
                colons += 1;
                last_colon = true;
            }
            b'.' => last_colon = false,
            _ if b.is_ascii_hexdigit() => last_colon = false,
            _ => break,
        }
    }
    colons >= 6
}

/// Whether an IPv4 address may run through the dot at `c` (which follows a
/// digit): at most three digits before it, and at least three dots in the
/// run of digits and dots from it. Decimals (`0.42`, `1700000123.456`) fail.
fn may_be_ipv4(s: &[u8], c: usize) -> bool {
    // `host-203-0-113-40.example.net`: a dashed address ends at this dot.
    // The letter after it first: one byte turns most dots away (decimals,
    // times, versions) before the 16-byte count.
    if s.get(c + 1).is_some_and(u8::is_ascii_alphabetic)
        && s[..c].iter().rev().take(16).filter(|&&b| b == b'-').count() >= 3
    {
        return true;
    }
    let digits_before = s[..c]
        .iter()
        .rev()
        .take(4)
        .take_while(|b| b.is_ascii_digit())
        .count();
    if digits_before > 3 {
        return false;
    }
    let mut dots = 0;
    for &b in &s[c..] {
        match b {
            b'.' => dots += 1,
            b'0'..=b'9' => {}
            _ => break,
        }
        if dots == 3 {
            return true;
        }
    }
    false
}

/// Where stepping must start so that a detector anchored at `c` is found at
/// its start: back over the key, address or name before the anchor
/// (letters, digits, `. _ - " \`, and spaces after a closing quote, as in
/// `"user" : "alice"`), but not before `floor`.
#[inline]
pub fn backup(s: &[u8], c: usize, floor: usize) -> usize {
    let in_token =
        |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'"' | b'\\');
    let mut p = c;
    loop {
        while p > floor && in_token(s[p - 1]) {
            p -= 1;
        }
        let mut q = p;
        while q > floor && s[q - 1] == b' ' {
            q -= 1;
        }
        // `"user" : "x"`, and SQL's `username = 'x'`.
        if q < p && q > floor && (s[q - 1] == b'"' || (s[c] == b'=' && p == c)) {
            p = q;
            continue;
        }
        return p;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(s: &[u8]) -> Vec<usize> {
        let mut a = Anchors::new(s);
        let mut out = Vec::new();
        let mut i = 0;
        while let Some(c) = a.next(i) {
            out.push(c);
            i = c + 1;
        }
        out
    }

    #[test]
    fn anchors_match_the_byte_rule_at_every_offset() {
        let text = b"a user=x 1.2 for y: [z] @ /home/q e/ r  ...:9= add 'x' `y' (to %40 ip6.arpa";
        for len in 0..text.len() {
            let s = &text[..len];
            let want: Vec<usize> = (0..s.len())
                .filter(|&k| is_anchor(s[k], if k == 0 { 0 } else { s[k - 1] }))
                .collect();
            assert_eq!(all(s), want, "{:?}", String::from_utf8_lossy(s));
        }
    }

    /// The SIMD mask and the byte-wise rule agree on every pair of bytes.
    #[test]
    fn block_mask_is_the_byte_rule_for_every_pair() {
        for p in 0..=255u8 {
            for c0 in (0..=255u8).step_by(BLOCK) {
                let cur: [u8; BLOCK] = std::array::from_fn(|k| c0 + k as u8);
                let prev = [p; BLOCK];
                assert_eq!(
                    block_mask(&cur, &prev),
                    block_mask_bytewise(&cur, &prev),
                    "bytes {c0}.. after {p}"
                );
            }
        }
    }

    #[test]
    fn anchors_found_from_any_start() {
        let s = b"xxxxxxxxxxxxxxxxxxxxx=xxxxxxxxxxxxxx:xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx@";
        let mut a = Anchors::new(s);
        assert_eq!(a.next(0), Some(21));
        assert_eq!(a.next(22), Some(36));
        assert_eq!(a.next(40), Some(s.len() - 1));
        assert_eq!(a.next(s.len()), None);
    }

    #[test]
    fn backup_reaches_the_key() {
        let s = b"x \"user\" : \"a\"";
        assert_eq!(backup(s, 9, 0), 2);
        assert_eq!(backup(s, 9, 4), 4);
        let s = b"a remote_user.name=b";
        assert_eq!(backup(s, 18, 0), 2);
    }
}
