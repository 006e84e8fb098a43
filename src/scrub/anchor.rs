//! The prefilter: finds the few bytes where something to scrub may be
//! anchored, 32 or 16 bytes at a time, so a line with nothing to scrub costs a
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
//! [`Anchors::worth_a_look`] then throws most anchors away with a look at
//! their neighbours (`=` after `level` holds no login), and [`backup`] says
//! where the driver must start stepping so that it visits the detector's
//! start exactly as a byte-by-byte walk would.
//!
//! The block mask is AVX2 nibble look-ups (`pshufb`: the class of each
//! byte and of the byte before it, [`byte_class`], [`before_class`]), 32
//! bytes a step, where the CPU has AVX2 (detected at run time through
//! `pulp`, as in `keygate`) and the text is longer than 32 bytes; else
//! SSE2 compares, 16 bytes a step, on x86_64 (the baseline of every such
//! CPU); and the byte-wise rule elsewhere. Tests hold both masks to the
//! byte-wise rule on every pair of bytes.
//!
//! The same loads also tell the [`Pairs`] of the text, rare pairs of bytes
//! that other stages of a pass would each search the whole text for (a
//! `WORD(`, a private-key header's `Y-`, curl's `-u`): [`Anchors::new`]
//! goes over the whole text once, up front, and a pass hands the answers
//! on.

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

/// Rare pairs that stages other than the walk search the whole text for,
/// told by the same pass over the bytes that finds the anchors (each was a
/// memchr or memmem call of its own, about 250 instructions on a clean
/// line): whether the text holds
/// - `(` after a lower-case letter, a digit or `-` (a byte of a call
///   word, `shapes::call_byte`): the `WORD(` rows of the shape table
///   (`Shapes::find`), which need a word right before the `(`. Most `(`
///   of log text follow a space (`in 12ms (queue`, `(KHTML, like`), and
///   each was a memchr over the text in `Shapes::find`;
/// - `-` after `Y`: the end of a private-key header `… KEY-----`
///   (`secrets::pem_blocks`, which searches `PRIVATE KEY-----`);
/// - `u` after `-`: curl's `-u`, `--user` (`Cx::curl_possible`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pairs {
    pub paren: bool,
    pub pem: bool,
    pub dash_u: bool,
}

impl Pairs {
    /// The byte-wise rule: [`Pairs`] of `c` after `p`.
    fn of(c: u8, p: u8) -> Pairs {
        Pairs {
            paren: c == b'(' && super::shapes::call_byte(p),
            pem: c == b'-' && p == b'Y',
            dash_u: c == b'u' && p == b'-',
        }
    }

    fn or(self, o: Pairs) -> Pairs {
        Pairs {
            paren: self.paren | o.paren,
            pem: self.pem | o.pem,
            dash_u: self.dash_u | o.dash_u,
        }
    }
}

/// Bit `k` is set when `cur[k]` (after `prev[k]`) is an anchor: the
/// byte-at-a-time rule of [`is_anchor`], for targets without SSE2 (and the
/// reference the SIMD mask is tested against); `pairs` gains the block's
/// [`Pairs`].
#[cfg_attr(all(target_arch = "x86_64", target_feature = "sse2"), allow(dead_code))]
fn block_mask_bytewise(cur: &[u8; BLOCK], prev: &[u8; BLOCK], pairs: &mut Pairs) -> u16 {
    let mut mask = 0u16;
    for k in 0..BLOCK {
        mask |= u16::from(is_anchor(cur[k], prev[k])) << k;
        *pairs = pairs.or(Pairs::of(cur[k], prev[k]));
    }
    mask
}

/// What the SIMD mask gathers of [`Pairs`] over blocks: one lane per byte
/// (0xff where the pair is), told as bools once at the end.
#[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
#[derive(Clone, Copy)]
struct PairLanes {
    paren: safe_arch::m128i,
    pem: safe_arch::m128i,
    dash_u: safe_arch::m128i,
}

#[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
impl PairLanes {
    fn new() -> PairLanes {
        let zero = safe_arch::zeroed_m128i();
        PairLanes {
            paren: zero,
            pem: zero,
            dash_u: zero,
        }
    }

    fn pairs(self) -> Pairs {
        let any = |v| safe_arch::move_mask_i8_m128i(v) != 0;
        Pairs {
            paren: any(self.paren),
            pem: any(self.pem),
            dash_u: any(self.dash_u),
        }
    }
}

/// The same mask with SSE2, which every x86_64 CPU has (`safe_arch`: the
/// intrinsics without `unsafe` here): about 35 instructions per 16 bytes,
/// one compare per anchor byte, three more for the byte before and one
/// `pmovmskb`; the [`Pairs`] add about 9 (the loads are shared). The
/// byte-wise rule, even vectorised by the compiler, took about 70 and a
/// call (a quarter of a clean line's instructions).
#[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
#[inline(always)]
fn block_mask_lanes(cur: &[u8; BLOCK], prev: &[u8; BLOCK], lanes: &mut PairLanes) -> u16 {
    use safe_arch::load_unaligned_m128i as load;
    block_mask_vec(load(cur), load(prev), lanes)
}

/// [`block_mask_lanes`] of bytes `c` after bytes `p`, loaded.
#[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
#[inline(always)]
fn block_mask_vec(c: safe_arch::m128i, p: safe_arch::m128i, lanes: &mut PairLanes) -> u16 {
    use safe_arch::{
        bitand_m128i as and, bitor_m128i as or, cmp_eq_mask_i8_m128i as eq, min_u8_m128i,
        move_mask_i8_m128i, set_splat_i8_m128i as splat, sub_i8_m128i,
    };
    // Keep in step with `is_anchor` and `Pairs::of` (a test compares them
    // on every pair of bytes).
    let is = |v: u8| eq(c, splat(v as i8));
    // `p - '0' <= 9` unsigned: min(d, 9) == d.
    let d = sub_i8_m128i(p, splat(b'0' as i8));
    let digit_before = eq(min_u8_m128i(d, splat(9)), d);
    let r_before = eq(or(p, splat(0x20)), splat(b'r' as i8));
    let e_before = eq(p, splat(b'e' as i8));
    let dash_before = eq(p, splat(b'-' as i8));
    // `p - 'a' <= 25` unsigned, as the digit above.
    let l = sub_i8_m128i(p, splat(b'a' as i8));
    let lower_before = eq(min_u8_m128i(l, splat(25)), l);
    let call_before = or(or(digit_before, lower_before), dash_before);
    lanes.paren = or(lanes.paren, and(is(b'('), call_before));
    lanes.pem = or(lanes.pem, and(is(b'-'), eq(p, splat(b'Y' as i8))));
    lanes.dash_u = or(lanes.dash_u, and(is(b'u'), dash_before));
    let alone = or(or(is(b':'), is(b'=')), or(or(is(b'@'), is(b'%')), is(b'[')));
    let after = or(
        or(and(is(b'.'), digit_before), and(is(b' '), r_before)),
        and(is(b'/'), e_before),
    );
    move_mask_i8_m128i(or(alone, after)) as u16
}

/// Only the [`Pairs`] of a block, for the blocks past [`AHEAD`] (whose
/// anchors the walk finds lazily).
#[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
#[inline(always)]
fn block_pairs_lanes(cur: &[u8; BLOCK], prev: &[u8; BLOCK], lanes: &mut PairLanes) {
    use safe_arch::{
        bitand_m128i as and, bitor_m128i as or, cmp_eq_mask_i8_m128i as eq, load_unaligned_m128i,
        min_u8_m128i, set_splat_i8_m128i as splat, sub_i8_m128i,
    };
    let (c, p) = (load_unaligned_m128i(cur), load_unaligned_m128i(prev));
    let is = |v: u8| eq(c, splat(v as i8));
    let d = sub_i8_m128i(p, splat(b'0' as i8));
    let l = sub_i8_m128i(p, splat(b'a' as i8));
    let dash_before = eq(p, splat(b'-' as i8));
    let call_before = or(
        or(
            eq(min_u8_m128i(d, splat(9)), d),
            eq(min_u8_m128i(l, splat(25)), l),
        ),
        dash_before,
    );
    lanes.paren = or(lanes.paren, and(is(b'('), call_before));
    lanes.pem = or(lanes.pem, and(is(b'-'), eq(p, splat(b'Y' as i8))));
    lanes.dash_u = or(lanes.dash_u, and(is(b'u'), dash_before));
}

#[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
#[inline]
fn block_mask(cur: &[u8; BLOCK], prev: &[u8; BLOCK], pairs: &mut Pairs) -> u16 {
    let mut lanes = PairLanes::new();
    let mask = block_mask_lanes(cur, prev, &mut lanes);
    *pairs = pairs.or(lanes.pairs());
    mask
}

#[cfg(not(all(target_arch = "x86_64", target_feature = "sse2")))]
#[inline]
fn block_mask(cur: &[u8; BLOCK], prev: &[u8; BLOCK], pairs: &mut Pairs) -> u16 {
    block_mask_bytewise(cur, prev, pairs)
}

/// Block `k` of `s` (bytes `16k..16k+16`, zeros past the end, which anchor
/// nothing and make no pair) and the bytes before each of them.
#[inline(always)]
fn block_bytes(s: &[u8], k: usize) -> ([u8; BLOCK], [u8; BLOCK]) {
    let at = k * BLOCK;
    let mut cur = [0u8; BLOCK];
    let mut prev = [0u8; BLOCK];
    if at + BLOCK <= s.len() && at > 0 {
        cur.copy_from_slice(&s[at..at + BLOCK]);
        prev.copy_from_slice(&s[at - 1..at + BLOCK - 1]);
    } else {
        // The first block (nothing before it) or the last, short one.
        let end = s.len().min(at + BLOCK);
        cur[..end - at].copy_from_slice(&s[at..end]);
        let from = at.saturating_sub(1);
        let to = s.len().min(at + BLOCK - 1);
        let dst = from + 1 - at;
        if to > from {
            prev[dst..dst + to - from].copy_from_slice(&s[from..to]);
        }
    }
    (cur, prev)
}

/// The anchors of the first [`AHEAD`] bytes of a text are found when the
/// walk starts, all at once (one tight loop, no look-up per block); past
/// them, block by block as the walk gets there (hostile 1 MB lines).
const AHEAD_WORDS: usize = 16;
const AHEAD: usize = AHEAD_WORDS * 64;

/// `b` as a block (it is one: callers cut `BLOCK` bytes).
#[inline(always)]
fn whole(b: &[u8]) -> &[u8; BLOCK] {
    b.try_into().expect("a block is BLOCK bytes")
}

/// A block of anchors holding position `from` (past [`AHEAD`]): its start
/// (`from`, or less near the end of `s`, so that every block is a whole
/// one) and its mask.
#[inline]
fn block_at(s: &[u8], from: usize) -> (usize, u16) {
    let mut ignored = Pairs::default();
    let base = from.min(s.len() - BLOCK);
    let (cur, prev) = (
        whole(&s[base..base + BLOCK]),
        whole(&s[base - 1..base - 1 + BLOCK]),
    );
    (base, block_mask(cur, prev, &mut ignored))
}

/// Walks the anchors of a text in order, and tells its [`Pairs`].
pub struct Anchors<'a> {
    s: &'a [u8],
    /// Bit `k % 64` of word `k / 64`: whether `s[k]` is an anchor, for
    /// `k` below [`AHEAD`].
    words: [u64; AHEAD_WORDS],
    /// Past [`AHEAD`]: the block last looked at, and its mask.
    base: usize,
    mask: u16,
    pairs: Pairs,
    /// The last run of a time's colons [`worth_a_look`] turned away.
    no_v6: NoV6,
}

/// The anchor masks of `s`'s first [`AHEAD`] bytes into `words`, and the
/// pairs of all of `s`, with every block read in place: the first one's
/// bytes before are its own shifted by one, and the last, short one is
/// read as the whole block ending the text, its mask shifted to drop what
/// the block before covered. (Copying a block into a buffer to load it
/// stalls the load until the copy's stores land: that, not the compares,
/// was most of a short text's cost.)
#[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
#[inline(always)]
fn fill_sse2(s: &[u8], words: &mut [u64; AHEAD_WORDS]) -> Pairs {
    use safe_arch::{byte_shl_imm_u128_m128i as shift_up, load_unaligned_m128i as load};
    let mut lanes = PairLanes::new();
    let n = s.len();
    let mut put = |k: usize, m: u16| {
        if let Some(w) = words.get_mut(k / 4) {
            *w |= u64::from(m) << (16 * (k % 4));
        }
    };
    if n < BLOCK {
        // A short text (a field): zeros pad it.
        let (cur, prev) = block_bytes(s, 0);
        put(0, block_mask_lanes(&cur, &prev, &mut lanes));
        return lanes.pairs();
    }
    let first = load(whole(&s[..BLOCK]));
    put(0, block_mask_vec(first, shift_up::<1>(first), &mut lanes));
    let full = n / BLOCK;
    for k in 1..full {
        let at = k * BLOCK;
        let (cur, prev) = (whole(&s[at..at + BLOCK]), whole(&s[at - 1..at - 1 + BLOCK]));
        if k < AHEAD / BLOCK {
            put(k, block_mask_lanes(cur, prev, &mut lanes));
        } else {
            block_pairs_lanes(cur, prev, &mut lanes);
        }
    }
    let rest = n % BLOCK;
    if rest > 0 {
        // n > BLOCK here: the block ending the text has a byte before it.
        let (cur, prev) = (whole(&s[n - BLOCK..n]), whole(&s[n - BLOCK - 1..n - 1]));
        let m = block_mask_lanes(cur, prev, &mut lanes);
        put(full, m >> (BLOCK - rest));
    }
    lanes.pairs()
}

/// Bytes per AVX2 block of [`fill_avx2`].
#[cfg(target_arch = "x86_64")]
const WIDE: usize = 32;

/// [`fill_sse2`] 32 bytes at a time with AVX2, where the CPU has it
/// (detected at run time through `pulp`, whose tokens make the intrinsics
/// safe to call, as in `keygate`): half the steps, and one mask per 32
/// bytes, two to a word. The same blocks as [`fill_sse2`]'s, twice as
/// wide: the first one's bytes before are its own shifted up by one, the
/// last, short one is the block ending the text. For texts of more than
/// [`WIDE`] bytes (shorter ones take [`fill_sse2`]).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn fill_avx2(v3: pulp::x86::V3, s: &[u8], words: &mut [u64; AHEAD_WORDS]) -> Pairs {
    v3.vectorize(
        #[inline(always)]
        || fill_avx2_inner(v3, s, words),
    )
}

/// What [`fill_avx2`] gathers of [`Pairs`] over blocks, as [`PairLanes`].
#[cfg(target_arch = "x86_64")]
struct WideLanes {
    paren: core::arch::x86_64::__m256i,
    pem: core::arch::x86_64::__m256i,
    dash_u: core::arch::x86_64::__m256i,
}

/// The 32 bytes of `s` from `at`, loaded in place.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn load_wide(s: &[u8], at: usize) -> core::arch::x86_64::__m256i {
    let b: [u8; WIDE] = s[at..at + WIDE].try_into().expect("WIDE bytes");
    pulp::cast(b)
}

/// The class of a byte for the AVX2 mask ([`wide_mask`]), one bit per
/// anchor byte that needs a look-up: `:` and `=` (bit 0), `@`, `[`, `%`
/// (bits 1-3: anchors whatever comes before), `.`, space, `/` (bits 4-6:
/// anchors after the byte [`before_class`] gives the same bit), `(`
/// (bit 7: a [`Pairs::paren`] after a call byte, bits 0-3 of
/// [`before_class`]).
#[cfg(target_arch = "x86_64")]
const fn byte_class(c: u8) -> u8 {
    match c {
        b':' | b'=' => 1,
        b'@' => 2,
        b'[' => 4,
        b'%' => 8,
        b'.' => 16,
        b' ' => 32,
        b'/' => 64,
        b'(' => 128,
        _ => 0,
    }
}

/// The class of a byte as the byte before another (see [`byte_class`]):
/// bits 0-3 a call byte (`a-o`, `p-z`, a digit, `-`, each a set the
/// nibble tables can tell exactly), bit 4 a digit (before `.`), bit 5
/// `r` or `R` (before a space), bit 6 `e` (before `/`).
#[cfg(target_arch = "x86_64")]
const fn before_class(p: u8) -> u8 {
    let mut k = 0;
    if p >= b'a' && p <= b'o' {
        k |= 1;
    }
    if p >= b'p' && p <= b'z' {
        k |= 2;
    }
    if p.is_ascii_digit() {
        k |= 4 | 16;
    }
    if p == b'-' {
        k |= 8;
    }
    if p | 0x20 == b'r' {
        k |= 32;
    }
    if p == b'e' {
        k |= 64;
    }
    k
}

/// [`before_class`] of `c` if `before`, else [`byte_class`].
#[cfg(target_arch = "x86_64")]
const fn class_of(before: bool, c: u8) -> u8 {
    if before {
        before_class(c)
    } else {
        byte_class(c)
    }
}

/// Nibble tables of a byte class: `lo[c & 15] & hi[c >> 4]` is the class
/// of `c` (each 16 bytes twice, as `pshufb` looks up each 128-bit half
/// in its own). A bit of `lo` (`hi`) is set where some byte of the class
/// has that low (high) nibble; the look-up is exact when each bit's
/// bytes are a rectangle of nibbles, which the build checks on every byte
/// (and a byte from 0x80 on is class 0: `pshufb` gives 0 for it, the low
/// nibble being looked up with the byte itself).
#[cfg(target_arch = "x86_64")]
const fn nibble_tables(before: bool) -> ([u8; 32], [u8; 32]) {
    let (mut lo, mut hi) = ([0u8; 32], [0u8; 32]);
    let mut c = 0usize;
    while c < 128 {
        let k = class_of(before, c as u8);
        lo[c & 15] |= k;
        lo[16 + (c & 15)] |= k;
        hi[c >> 4] |= k;
        hi[16 + (c >> 4)] |= k;
        c += 1;
    }
    let mut c = 0usize;
    while c < 256 {
        let looked_up = if c < 128 { lo[c & 15] & hi[c >> 4] } else { 0 };
        assert!(
            looked_up == class_of(before, c as u8),
            "a class the nibbles cannot tell"
        );
        c += 1;
    }
    (lo, hi)
}

#[cfg(target_arch = "x86_64")]
const BYTE_TABLES: ([u8; 32], [u8; 32]) = nibble_tables(false);
#[cfg(target_arch = "x86_64")]
const BEFORE_TABLES: ([u8; 32], [u8; 32]) = nibble_tables(true);

/// [`block_mask_vec`] of 32 bytes `c` after bytes `p`; with `masks`
/// false, only the pairs (the blocks past [`AHEAD`]). Keep in step with
/// `is_anchor` and `Pairs::of` (tests compare them on every pair of
/// bytes and on arbitrary text). The classes of `c` and `p` are two
/// `pshufb` look-ups each ([`byte_class`], [`before_class`]), then one
/// `and` tells every anchor: about 26 instructions a block, where a
/// compare per byte and per byte before took 45.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn wide_mask(
    v3: pulp::x86::V3,
    c: core::arch::x86_64::__m256i,
    p: core::arch::x86_64::__m256i,
    lanes: &mut WideLanes,
    masks: bool,
) -> u32 {
    use core::arch::x86_64::__m256i;
    let (avx, avx2) = (v3.avx, v3.avx2);
    let splat = |v: u8| avx._mm256_set1_epi8(v as i8);
    let eq = |a, b| avx2._mm256_cmpeq_epi8(a, b);
    let or = |a, b| avx2._mm256_or_si256(a, b);
    let and = |a, b| avx2._mm256_and_si256(a, b);
    let low = splat(0x0f);
    let class = |v: __m256i, (lo, hi): ([u8; 32], [u8; 32])| {
        let high = and(avx2._mm256_srli_epi16::<4>(v), low);
        and(
            avx2._mm256_shuffle_epi8(pulp::cast(lo), v),
            avx2._mm256_shuffle_epi8(pulp::cast(hi), high),
        )
    };
    let (ck, pk) = (class(c, BYTE_TABLES), class(p, BEFORE_TABLES));
    // `(` (bit 7 of `ck`) where the byte before is a call byte (bits 0-3
    // of `pk`); `pem` and `dash_u` compare their two bytes.
    let not_call = eq(and(pk, low), avx._mm256_setzero_si256());
    lanes.paren = or(lanes.paren, avx2._mm256_andnot_si256(not_call, ck));
    let dash_before = eq(p, splat(b'-'));
    lanes.pem = or(lanes.pem, and(eq(c, splat(b'-')), eq(p, splat(b'Y'))));
    lanes.dash_u = or(lanes.dash_u, and(eq(c, splat(b'u')), dash_before));
    if !masks {
        return 0;
    }
    // Bits 0-3 of `ck` anchor alone, bits 4-6 with the same bit of `pk`
    // (bit 7 of `pk` is never set: a `(` anchors nothing).
    let anchors = and(ck, or(pk, low));
    !(avx2._mm256_movemask_epi8(eq(anchors, avx._mm256_setzero_si256())) as u32)
}

#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn fill_avx2_inner(v3: pulp::x86::V3, s: &[u8], words: &mut [u64; AHEAD_WORDS]) -> Pairs {
    let (avx, avx2) = (v3.avx, v3.avx2);
    let zero = avx._mm256_setzero_si256();
    let mut lanes = WideLanes {
        paren: zero,
        pem: zero,
        dash_u: zero,
    };
    let n = s.len();
    debug_assert!(n > WIDE);
    let mut put = |k: usize, m: u32| {
        if let Some(w) = words.get_mut(k / 2) {
            *w |= u64::from(m) << (32 * (k % 2));
        }
    };
    // The first block's bytes before: its own, one lane up (a zero
    // first), across the two 128-bit halves (`alignr` shifts each half
    // alone; the permute hands the low half's last byte to the high).
    let first = load_wide(s, 0);
    let below = avx2._mm256_permute2x128_si256::<0x08>(first, first);
    let before = avx2._mm256_alignr_epi8::<15>(first, below);
    put(0, wide_mask(v3, first, before, &mut lanes, true));
    let full = n / WIDE;
    // Two loops, not one asking `k < AHEAD / WIDE` at each block: with
    // the question inside, the compiler kept two sets of constants live
    // and moved registers about at every block.
    let ahead = full.min(AHEAD / WIDE);
    for k in 1..ahead {
        let at = k * WIDE;
        let m = wide_mask(v3, load_wide(s, at), load_wide(s, at - 1), &mut lanes, true);
        put(k, m);
    }
    for k in ahead.max(1)..full {
        let at = k * WIDE;
        wide_mask(
            v3,
            load_wide(s, at),
            load_wide(s, at - 1),
            &mut lanes,
            false,
        );
    }
    let rest = n % WIDE;
    if rest > 0 {
        // n > WIDE: the block ending the text has a byte before it.
        let m = wide_mask(
            v3,
            load_wide(s, n - WIDE),
            load_wide(s, n - WIDE - 1),
            &mut lanes,
            full < AHEAD / WIDE,
        );
        put(full, m >> (WIDE - rest));
    }
    let any = |v| avx2._mm256_movemask_epi8(v) != 0;
    Pairs {
        paren: any(lanes.paren),
        pem: any(lanes.pem),
        dash_u: any(lanes.dash_u),
    }
}

impl<'a> Anchors<'a> {
    /// Inlined into its callers (the pass, the glance): returned from a
    /// call, the 168 bytes of `Anchors` were a `memcpy` and the call's
    /// set-up, ~40 instructions of a clean line.
    #[inline(always)]
    pub fn new(s: &'a [u8]) -> Anchors<'a> {
        // Built in place and filled (a moved or copied `Anchors` is a
        // `memcpy` of its words, which was a tenth of a clean line).
        let mut a = Anchors {
            s,
            words: [0; AHEAD_WORDS],
            // No block yet: every position past AHEAD is past this one.
            base: 0,
            mask: 0,
            pairs: Pairs::default(),
            no_v6: NoV6::default(),
        };
        #[cfg(target_arch = "x86_64")]
        if let Some(v3) = pulp::x86::V3::try_new().filter(|_| s.len() > WIDE) {
            a.pairs = fill_avx2(v3, s, &mut a.words);
            return a;
        }
        #[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
        {
            a.pairs = fill_sse2(s, &mut a.words);
        }
        #[cfg(not(all(target_arch = "x86_64", target_feature = "sse2")))]
        for k in 0..s.len().div_ceil(BLOCK) {
            let (cur, prev) = block_bytes(s, k);
            let m = block_mask(&cur, &prev, &mut a.pairs);
            if let Some(w) = a.words.get_mut(k / 4) {
                *w |= u64::from(m) << (16 * (k % 4));
            }
        }
        a
    }

    /// The text walked.
    pub fn text(&self) -> &'a [u8] {
        self.s
    }

    /// The rare pairs the text holds.
    pub fn pairs(&self) -> Pairs {
        self.pairs
    }

    /// Whether the anchor at `c` may belong to something the driver
    /// detects. A `false` here must be certain: the driver then skips
    /// every byte up to and including `c`. `curl` says whether the text
    /// holds curl's `-u` anywhere (asked only when needed, and then once:
    /// `Cx::curl_possible`).
    #[inline]
    pub fn worth_a_look(&mut self, c: usize, curl: &mut impl FnMut() -> bool) -> bool {
        worth_a_look(self.s, c, curl, &mut self.no_v6)
    }

    /// The first anchor at or after `from`.
    #[inline]
    pub fn next(&mut self, from: usize) -> Option<usize> {
        if from < AHEAD {
            let mut w = from / 64;
            let mut m = self.words[w] >> (from % 64) << (from % 64);
            loop {
                if m != 0 {
                    return Some(w * 64 + m.trailing_zeros() as usize);
                }
                w += 1;
                if w == AHEAD_WORDS || w * 64 >= self.s.len() {
                    break;
                }
                m = self.words[w];
            }
        }
        self.next_past_ahead(from.max(AHEAD))
    }

    /// [`Anchors::next`] past [`AHEAD`], one block at a time.
    fn next_past_ahead(&mut self, mut from: usize) -> Option<usize> {
        loop {
            if from >= self.s.len() {
                return None;
            }
            if from < self.base || from >= self.base + BLOCK {
                (self.base, self.mask) = block_at(self.s, from);
            }
            let skip = from - self.base;
            let m = (self.mask >> skip) << skip;
            if m != 0 {
                return Some(self.base + m.trailing_zeros() as usize);
            }
            from = self.base + BLOCK;
        }
    }

    /// Whether the text holds no anchor: then no detector of the walk can
    /// start anywhere in it (see `scan::run`).
    pub fn none(&mut self) -> bool {
        self.next(0).is_none()
    }
}

/// Whether the key ending at `end` (see [`key_end`]) ends like a login
/// key: `user`, `name`, `ogin`, `mail` or `ount`, any case. Every key of
/// `login` ends so.
fn login_key_tail(s: &[u8], end: usize) -> bool {
    let Some(tail) = end.checked_sub(4).map(|b| &s[b..end]) else {
        return false;
    };
    let t = u32::from_le_bytes([tail[0], tail[1], tail[2], tail[3]]) | 0x2020_2020;
    matches!(
        &t.to_le_bytes(),
        b"user" | b"name" | b"ogin" | b"mail" | b"ount"
    )
}

/// The tails [`key_tail_any`] looks for, lower-cased as it reads them
/// (`| 0x20`: `_` becomes 0x7f, `api_key`): those of `login_key_tail`,
/// then those of `secrets::key_tail` (`tion` as `authorization`; `pwd`,
/// three bytes, is checked apart).
const TAILS: [&[u8; 4]; 15] = [
    b"user", b"name", b"ogin", b"mail", b"ount", b"word", b"sswd", b"pass", b"rase", b"cret",
    b"oken", b"ikey", b"\x7fkey", b"-key", b"tion",
];

/// The slot of tail `t` in [`TAIL_TABLE`]: a multiplicative hash, its
/// multiplier picked (by a search) so that the tails' slots differ.
const fn tail_slot(t: u32) -> usize {
    (t.wrapping_mul(0x6b7c_c667) >> 28) as usize
}

/// Each tail of [`TAILS`] at its slot, 0 elsewhere (no tail read is 0:
/// every byte is at least 0x20). Built at compile time, which fails if
/// two tails share a slot.
const TAIL_TABLE: [u32; 16] = {
    let mut table = [0u32; 16];
    let mut k = 0;
    while k < TAILS.len() {
        let t = u32::from_le_bytes(*TAILS[k]);
        assert!(table[tail_slot(t)] == 0, "two key tails share a slot");
        table[tail_slot(t)] = t;
        k += 1;
    }
    table
};

/// Whether the key ending at `end` (see [`key_end`]) ends like a login key
/// or a secret key: `login_key_tail(s, end) || secrets::key_tail(s, end)`
/// (a test holds it to that on arbitrary tails), told by one look at the
/// last four bytes, lower-cased: one table slot to compare. The walk
/// asked both at every `=` and every `:` after a letter, each loading and
/// comparing the tail again (about 55 instructions a key; most keys,
/// `level=`, `ts=`, are neither).
#[inline]
fn key_tail_any(s: &[u8], end: usize) -> bool {
    const TION: u32 = u32::from_le_bytes(*b"tion");
    // `pwd`: the last three bytes.
    const PWD: u32 = u32::from_le_bytes(*b"\0pwd");
    let t = match end.checked_sub(4).and_then(|b| s.get(b..end)) {
        Some(w) => u32::from_le_bytes([w[0], w[1], w[2], w[3]]) | 0x2020_2020,
        None if end == 3 && s.len() >= 3 => u32::from_le_bytes([0, s[0], s[1], s[2]]) | 0x2020_2000,
        None => return false,
    };
    if TAIL_TABLE[tail_slot(t)] == t {
        return t != TION || (end >= 13 && s[end - 13..end].eq_ignore_ascii_case(b"authorization"));
    }
    t & 0xffff_ff00 == PWD
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

/// [`Anchors::worth_a_look`] of the anchor at `c` of `s`. `no_v6` remembers the last run of hex digits, `:` and `.` found to hold
/// no IPv6 address ([`NoV6`]).
#[inline]
fn worth_a_look(s: &[u8], c: usize, curl: &mut impl FnMut() -> bool, no_v6: &mut NoV6) -> bool {
    let before = |k: usize| c.checked_sub(k).map(|at| s[at]);
    let after = s.get(c + 1).copied();
    match s[c] {
        // After a digit (a time, `12:34:56`, or a port) no key's tail can
        // end (they end in a letter, a quote or a space): only IPv6 and
        // curl's `-u user1:pw` remain.
        b':' if before(1).is_some_and(|b| b.is_ascii_digit()) => {
            after == Some(b':')
                || no_v6.may_be_ipv6(s, c)
                || (curl() && super::secrets::curl_worth_a_look(s, c))
        }
        b':' => {
            // The key's end, found once for both kinds of key tail.
            let end = key_end(s, c);
            after == Some(b':')
                || (before(1).is_some_and(|b| b.is_ascii_hexdigit()) && no_v6.may_be_ipv6(s, c))
                || key_tail_any(s, end)
                || (before(1) == Some(b'd') && super::programs::nextcloud_worth_a_look(s, c))
                || (curl() && super::secrets::curl_worth_a_look(s, c))
                || s[..c].ends_with(b"\"user_id\"")
        }
        b'=' => {
            let end = key_end(s, c);
            key_tail_any(s, end) || dn_key_before(s, c)
        }
        b'.' => may_be_ipv4(s, c) || (s[..c].ends_with(b"ip6") && s[c + 1..].starts_with(b"arpa")),
        b'%' => s[c + 1..].starts_with(b"40"),
        b' ' => {
            let lower = |k| before(k).map(|b| b | 0x20);
            // The anchor rule puts `r` or `R` before this space: the key
            // (`user NAME`) ends at it.
            (lower(3) == Some(b'f') && lower(2) == Some(b'o') && for_may_name(s, c))
                || login_key_tail(s, c)
        }
        b'/' => s[..c].ends_with(b"/home"),
        // An access log's date, `[10/Oct/2000:13:55:36` after a space
        // (`login::access_log_user`, the one detector a `[` anchors):
        // most `[`s of log text hold a thread or a module (`[worker-3]`).
        b'[' => c > 0 && s[c - 1] == b' ' && s.get(c + 3) == Some(&b'/'),
        _ => true, // `@`
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
#[cfg(test)]
fn may_be_ipv6(s: &[u8], c: usize) -> bool {
    no_ipv6_run(s, c).is_none()
}

/// `None` when an IPv6 address may run through the colon at `c` (see
/// [`may_be_ipv6`]); else where the run from `c` ends. Most runs (a
/// time's `:34:56.789`, a port) end within 16 bytes: those are told by
/// one look at the 16 bytes from `c` ([`Window`]), the rest byte by byte.
fn no_ipv6_run(s: &[u8], c: usize) -> Option<usize> {
    if let Some(w) = Window::from(s, c) {
        let (colon, member) = w.v6_run();
        let end = (!member).trailing_zeros() as usize;
        // Past `w.len` the window does not tell, unless the text ends there.
        if end < w.len || c + end == s.len() {
            let colon = colon & ((1 << end) - 1);
            if colon & (colon >> 1) != 0 {
                return None; // `::`
            }
            return (colon.count_ones() < 6).then_some(c + end);
        }
    }
    no_ipv6_run_bytewise(s, c)
}

/// [`no_ipv6_run`] a byte at a time, for runs the window does not hold
/// the end of (and the reference its window is tested against).
fn no_ipv6_run_bytewise(s: &[u8], c: usize) -> Option<usize> {
    let mut colons = 0;
    let mut last_colon = false;
    for (k, &b) in s[c..].iter().enumerate() {
        if k > 48 {
            return None; // longer than any address: let the detector decide
        }
        match b {
            b':' if last_colon => return None,
            b':' => {
                colons += 1;
                last_colon = true;
            }
            b'.' => last_colon = false,
            _ if b.is_ascii_hexdigit() => last_colon = false,
            _ => return (colons < 6).then_some(c + k),
        }
    }
    (colons < 6).then_some(s.len())
}

/// The colons `from..to`, of a run of hex digits, `:` and `.` that
/// [`no_ipv6_run`] found to hold no IPv6 address from `from` on. No colon
/// after `from` in the run needs the scan again: from it the run is a
/// part of the same, with fewer colons and no `::` the whole did not
/// have, so the answer is the same. A time (`12:34:56.789`) is scanned
/// once, not at each colon.
#[derive(Debug, Clone, Copy, Default)]
struct NoV6 {
    from: usize,
    to: usize,
}

impl NoV6 {
    /// [`may_be_ipv6`], remembering the run it turns away.
    #[inline]
    fn may_be_ipv6(&mut self, s: &[u8], c: usize) -> bool {
        if (self.from..self.to).contains(&c) {
            return false;
        }
        match no_ipv6_run(s, c) {
            Some(to) => {
                *self = NoV6 { from: c, to };
                false
            }
            None => true,
        }
    }
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
    if c >= 4 && s[c - 4..c].iter().all(u8::is_ascii_digit) {
        return false; // four digits or more before the dot
    }
    // The dots of the run from `c`: an address's third is at most 12
    // bytes on, so the 16 bytes from `c` nearly always tell.
    if let Some(w) = Window::from(s, c) {
        let (dot, member) = w.v4_run();
        let end = (!member).trailing_zeros() as usize;
        if (dot & ((1 << end) - 1)).count_ones() >= 3 {
            return true;
        }
        if end < w.len || c + end == s.len() {
            return false;
        }
    }
    three_dots_bytewise(s, c)
}

/// Whether the run of digits and dots from `c` holds three dots, a byte
/// at a time: [`may_be_ipv4`]'s count where the window did not tell.
fn three_dots_bytewise(s: &[u8], c: usize) -> bool {
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
    let mut p = c;
    loop {
        p = token_start(s, p, floor);
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

/// A byte of the tokens [`backup`] goes back over.
fn in_token(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'"' | b'\\')
}

/// Where the run of [`in_token`] bytes ending at `p` starts, not before
/// `floor`: 16 bytes a look ([`Window`]), where a byte loop took ~8
/// instructions a byte (a JSON key, `"ClientUsername"`, is 16).
#[inline]
fn token_start(s: &[u8], mut p: usize, floor: usize) -> usize {
    while p > floor {
        // The 16 bytes ending at `p`, or the first 16 of `s` with those
        // from `p` on left out.
        let base = p.saturating_sub(BLOCK);
        let Some(w) = Window::from(s, base) else {
            break; // a text shorter than a window
        };
        let outside = (!w.token()) & ((1 << (p - base)) - 1);
        if outside != 0 {
            let last = 31 - outside.leading_zeros() as usize;
            return (base + last + 1).max(floor);
        }
        p = base.max(floor);
    }
    while p > floor && in_token(s[p - 1]) {
        p -= 1;
    }
    p
}

/// Up to 16 bytes of a text from some position, told apart by class 16
/// at a time: bit `k` of a mask is byte `k` of the window. Past the
/// text's end every bit is clear (no class holds those bytes), so a run
/// ends at the text's end as at a byte outside it.
#[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
struct Window {
    /// The 16 bytes of `s` ending at its end or from the position, which
    /// ever comes first, and how many of them lie before the position.
    v: safe_arch::m128i,
    skip: usize,
    /// How many bytes of the text the window holds (16, or fewer at its end).
    len: usize,
}

#[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
impl Window {
    /// The bytes of `s` from `at` (`at <= s.len()`); `None` when `s` is
    /// shorter than 16 bytes (a field: the byte loops are as cheap).
    #[inline(always)]
    fn from(s: &[u8], at: usize) -> Option<Window> {
        let base = at.min(s.len().checked_sub(BLOCK)?);
        let v = safe_arch::load_unaligned_m128i(whole(&s[base..base + BLOCK]));
        Some(Window {
            v,
            skip: at - base,
            len: BLOCK - (at - base),
        })
    }

    /// The lanes set in `m`, as bits from the position on.
    #[inline(always)]
    fn bits(&self, m: safe_arch::m128i) -> u32 {
        (safe_arch::move_mask_i8_m128i(m) as u32) >> self.skip
    }

    #[inline(always)]
    fn is(&self, b: u8) -> safe_arch::m128i {
        safe_arch::cmp_eq_mask_i8_m128i(self.v, safe_arch::set_splat_i8_m128i(b as i8))
    }

    /// Lanes of `v` in `lo..=hi` (unsigned: `v - lo <= hi - lo`).
    #[inline(always)]
    fn in_range(v: safe_arch::m128i, lo: u8, hi: u8) -> safe_arch::m128i {
        use safe_arch::{cmp_eq_mask_i8_m128i, min_u8_m128i, set_splat_i8_m128i, sub_i8_m128i};
        let d = sub_i8_m128i(v, set_splat_i8_m128i(lo as i8));
        cmp_eq_mask_i8_m128i(min_u8_m128i(d, set_splat_i8_m128i((hi - lo) as i8)), d)
    }

    #[inline(always)]
    fn digit(&self) -> safe_arch::m128i {
        Self::in_range(self.v, b'0', b'9')
    }

    /// `v | 0x20`: ASCII letters in lower case (and other bytes moved
    /// where no letter is).
    #[inline(always)]
    fn lower(&self) -> safe_arch::m128i {
        safe_arch::bitor_m128i(self.v, safe_arch::set_splat_i8_m128i(0x20))
    }

    /// [`no_ipv6_run`]'s classes: the colons, and the bytes of a run of
    /// hex digits, `:` and `.`.
    #[inline(always)]
    fn v6_run(&self) -> (u32, u32) {
        use safe_arch::bitor_m128i as or;
        let colon = self.is(b':');
        let hex = or(self.digit(), Self::in_range(self.lower(), b'a', b'f'));
        let member = or(or(colon, self.is(b'.')), hex);
        (self.bits(colon), self.bits(member))
    }

    /// [`may_be_ipv4`]'s classes: the dots, and the bytes of a run of
    /// digits and dots.
    #[inline(always)]
    fn v4_run(&self) -> (u32, u32) {
        let dot = self.is(b'.');
        let member = safe_arch::bitor_m128i(dot, self.digit());
        (self.bits(dot), self.bits(member))
    }

    /// The [`in_token`] bytes.
    #[inline(always)]
    fn token(&self) -> u32 {
        use safe_arch::bitor_m128i as or;
        let alnum = or(self.digit(), Self::in_range(self.lower(), b'a', b'z'));
        let marks = or(
            or(self.is(b'.'), self.is(b'_')),
            or(or(self.is(b'-'), self.is(b'"')), self.is(b'\\')),
        );
        self.bits(or(alnum, marks))
    }
}

/// Where SSE2 is missing, no window: the byte loops do it all.
#[cfg(not(all(target_arch = "x86_64", target_feature = "sse2")))]
struct Window {
    len: usize,
}

#[cfg(not(all(target_arch = "x86_64", target_feature = "sse2")))]
impl Window {
    fn from(_: &[u8], _: usize) -> Option<Window> {
        None
    }
    fn v6_run(&self) -> (u32, u32) {
        unreachable!()
    }
    fn v4_run(&self) -> (u32, u32) {
        unreachable!()
    }
    fn token(&self) -> u32 {
        unreachable!()
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
                let (mut simd, mut bytewise) = (Pairs::default(), Pairs::default());
                assert_eq!(
                    block_mask(&cur, &prev, &mut simd),
                    block_mask_bytewise(&cur, &prev, &mut bytewise),
                    "bytes {c0}.. after {p}"
                );
                assert_eq!(simd, bytewise, "bytes {c0}.. after {p}");
            }
        }
    }

    /// The AVX2 mask and the byte-wise rule agree on every pair of bytes.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn wide_mask_is_the_byte_rule_for_every_pair() {
        let Some(v3) = pulp::x86::V3::try_new() else {
            return; // no AVX2: the SSE2 mask is used, tested above
        };
        for p in 0..=255u8 {
            for c0 in (0..=255u8).step_by(WIDE) {
                let cur: [u8; WIDE] = std::array::from_fn(|k| c0 + k as u8);
                let prev = [p; WIDE];
                let (mask, simd) = v3.vectorize(|| {
                    let zero = v3.avx._mm256_setzero_si256();
                    let mut lanes = WideLanes {
                        paren: zero,
                        pem: zero,
                        dash_u: zero,
                    };
                    let m = wide_mask(
                        v3,
                        load_wide(&cur, 0),
                        load_wide(&prev, 0),
                        &mut lanes,
                        true,
                    );
                    let any = |v| v3.avx2._mm256_movemask_epi8(v) != 0;
                    let pairs = Pairs {
                        paren: any(lanes.paren),
                        pem: any(lanes.pem),
                        dash_u: any(lanes.dash_u),
                    };
                    (m, pairs)
                });
                let mut bytewise = Pairs::default();
                let want = (0..WIDE).fold(0u32, |m, k| {
                    bytewise = bytewise.or(Pairs::of(cur[k], prev[k]));
                    m | u32::from(is_anchor(cur[k], prev[k])) << k
                });
                assert_eq!(mask, want, "bytes {c0}.. after {p}");
                assert_eq!(simd, bytewise, "bytes {c0}.. after {p}");
            }
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(3000))]
        /// The one look at a key's tail answers as the two checks it
        /// stands for, on any bytes (tails of real keys among them).
        #[test]
        fn key_tail_any_is_both_tails(
            lead in proptest::collection::vec(proptest::num::u8::ANY, 0..12),
            key in proptest::sample::select(vec![
                "user", "USERNAME", "login", "e-mail", "Account", "password", "PASSWD",
                "pwd", "Pwd", "passphrase", "secret", "Token", "api_key", "API-KEY",
                "apikey", "authorization", "Proxy-Authorization", "cation", "pass", "",
                "ion", "wd", "_key", "-key", "monkey", "name",
            ]),
            trail in proptest::collection::vec(
                proptest::prop_oneof![
                    proptest::sample::select(b"pPwWdDsSeEyY_-kKnNtT".to_vec()),
                    proptest::num::u8::ANY,
                ],
                0..5,
            ),
        ) {
            let s = [lead.as_slice(), key.as_bytes(), &trail].concat();
            for end in 0..=s.len() {
                proptest::prop_assert_eq!(
                    key_tail_any(&s, end),
                    login_key_tail(&s, end) || crate::scrub::secrets::key_tail(&s, end),
                    "{:?} to {}", String::from_utf8_lossy(&s), end
                );
            }
        }
    }

    /// The reference: every anchor of `s` by the byte rule, and its pairs.
    fn by_the_byte_rule(s: &[u8]) -> (Vec<usize>, Pairs) {
        let before = |k: usize| if k == 0 { 0 } else { s[k - 1] };
        let anchors = (0..s.len()).filter(|&k| is_anchor(s[k], before(k)));
        let pairs = (0..s.len()).fold(Pairs::default(), |p, k| p.or(Pairs::of(s[k], before(k))));
        (anchors.collect(), pairs)
    }

    /// What the stages that trust [`Pairs`] searched for before.
    fn pairs_hold_what_the_stages_search(s: &[u8], pairs: Pairs) {
        let has = |needle: &[u8]| memchr::memmem::find(s, needle).is_some();
        let call_paren = s
            .windows(2)
            .any(|w| w[1] == b'(' && crate::scrub::shapes::call_byte(w[0]));
        assert_eq!(pairs.paren, call_paren);
        assert_eq!(pairs.dash_u, has(b"-u"));
        assert!(pairs.pem || !has(b"PRIVATE KEY-----"));
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(500))]
        /// On any bytes and any length (past [`AHEAD`] too), from any
        /// start, the walk finds exactly the byte rule's anchors, and the
        /// pairs are the byte rule's.
        #[test]
        fn anchors_and_pairs_are_the_byte_rule(
            s in proptest::collection::vec(
                proptest::prop_oneof![
                    proptest::sample::select(b"-uY(:=@%[. rRe/0123456789PRIVATE KEY".to_vec()),
                    proptest::num::u8::ANY,
                ],
                0..2300,
            ),
            start in 0usize..2400,
        ) {
            let (want, pairs) = by_the_byte_rule(&s);
            let mut a = Anchors::new(&s);
            proptest::prop_assert_eq!(a.pairs(), pairs);
            pairs_hold_what_the_stages_search(&s, pairs);
            proptest::prop_assert_eq!(all(&s), want.clone());
            let from = want.iter().copied().find(|&k| k >= start);
            proptest::prop_assert_eq!(a.next(start), from);
        }
    }

    /// `may_be_ipv6` as it was before [`NoV6`] (the reference).
    fn may_be_ipv6_old(s: &[u8], c: usize) -> bool {
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

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(3000))]
        /// Asked at the colons of a text in the walk's order (rising,
        /// some skipped), or in any order, the remembered run answers as
        /// the scan at each colon did.
        #[test]
        fn no_v6_answers_as_the_scan(
            s in proptest::collection::vec(
                proptest::prop_oneof![
                    8 => proptest::sample::select(b"0123456789abcdefABCDEF:.".to_vec()),
                    1 => proptest::sample::select(b" Z-g[".to_vec()),
                ],
                0..120,
            ),
            skip in proptest::collection::vec(proptest::bool::ANY, 120),
            order in proptest::collection::vec(0usize..120, 0..40),
        ) {
            let colons: Vec<usize> = (0..s.len()).filter(|&k| s[k] == b':').collect();
            let mut memo = NoV6::default();
            for (n, &c) in colons.iter().enumerate() {
                if skip[n] {
                    continue;
                }
                proptest::prop_assert_eq!(memo.may_be_ipv6(&s, c), may_be_ipv6_old(&s, c), "at {}", c);
            }
            let mut memo = NoV6::default();
            for k in order {
                if let Some(&c) = colons.get(k) {
                    proptest::prop_assert_eq!(memo.may_be_ipv6(&s, c), may_be_ipv6_old(&s, c), "at {}", c);
                }
            }
        }
    }

    /// `may_be_ipv4` as it was before its window (the reference).
    fn may_be_ipv4_old(s: &[u8], c: usize) -> bool {
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

    /// `backup` as it was before its window (the reference).
    fn backup_old(s: &[u8], c: usize, floor: usize) -> usize {
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
            if q < p && q > floor && (s[q - 1] == b'"' || (s[c] == b'=' && p == c)) {
                p = q;
                continue;
            }
            return p;
        }
    }

    /// Log-like bytes for the window tests: addresses, times, versions,
    /// keys and the bytes that end their runs, with any byte now and then.
    fn window_text() -> impl proptest::strategy::Strategy<Value = Vec<u8>> {
        proptest::collection::vec(
            proptest::prop_oneof![
                6 => proptest::sample::select(b"0123456789.:".to_vec()),
                3 => proptest::sample::select(b"abcdefABCDEFgzGZ_-\\\" =@/[]x".to_vec()),
                1 => proptest::num::u8::ANY,
            ],
            0..90,
        )
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(4000))]
        /// At every position of log-like text of any length (shorter
        /// and longer than a window, runs ending at the text's end), the
        /// windowed checks answer as the byte loops they replace.
        #[test]
        fn windows_answer_as_the_byte_loops(s in window_text(), floor in 0usize..90) {
            for c in 0..s.len() {
                proptest::prop_assert_eq!(
                    no_ipv6_run(&s, c), no_ipv6_run_bytewise(&s, c),
                    "v6 {:?} at {}", String::from_utf8_lossy(&s), c
                );
                proptest::prop_assert_eq!(
                    may_be_ipv4(&s, c), may_be_ipv4_old(&s, c),
                    "v4 {:?} at {}", String::from_utf8_lossy(&s), c
                );
                for f in [0, floor.min(c), c / 2, c.saturating_sub(17), c] {
                    proptest::prop_assert_eq!(
                        backup(&s, c, f), backup_old(&s, c, f),
                        "backup {:?} at {} floor {}", String::from_utf8_lossy(&s), c, f
                    );
                }
            }
        }

        /// The same on any bytes.
        #[test]
        fn windows_answer_as_the_byte_loops_on_any_bytes(
            s in proptest::collection::vec(proptest::num::u8::ANY, 0..70),
        ) {
            for c in 0..s.len() {
                proptest::prop_assert_eq!(no_ipv6_run(&s, c), no_ipv6_run_bytewise(&s, c));
                proptest::prop_assert_eq!(may_be_ipv4(&s, c), may_be_ipv4_old(&s, c));
                proptest::prop_assert_eq!(backup(&s, c, 0), backup_old(&s, c, 0));
            }
        }
    }

    /// Real shapes at the windows' edges: a run ending exactly at the
    /// window's end or the text's, one longer than the window, keys
    /// longer than a window.
    #[test]
    fn windows_at_their_edges() {
        let texts: [&[u8]; 8] = [
            b"from 1.2.3.4",
            b"xx 12345678901.2.3.4 yy",
            b"at 1.22222222222222222.3.4 and more text",
            b"fe80:0:0:0:0:0:0:1",
            b"t 12:34:56.789 1:2:3:4:5:6:7:8 1:2:3:4:5:6:7:8:9:a:b:c:d:e",
            b"  \"a_very_long_json_key_name\" : \"alice\" and=more",
            b"0123456789abcdef0123456789abcdef=x",
            b"12:34:56.789",
        ];
        for s in texts {
            for c in 0..s.len() {
                assert_eq!(no_ipv6_run(s, c), no_ipv6_run_bytewise(s, c), "{s:?} {c}");
                assert_eq!(may_be_ipv4(s, c), may_be_ipv4_old(s, c), "{s:?} {c}");
                for f in 0..=c {
                    assert_eq!(backup(s, c, f), backup_old(s, c, f), "{s:?} {c} {f}");
                }
            }
        }
        assert!(may_be_ipv4(b"from 1.2.3.4", 6));
        assert!(may_be_ipv4(b"at 1.22222222222222222.3.4 and", 4));
        assert!(!may_be_ipv4(b"xx 12345678901.2.3.4 yy", 14));
        assert_eq!(no_ipv6_run(b"12:34:56.789", 2), Some(12));
        assert_eq!(no_ipv6_run(b"fe80:0:0:0:0:0:0:1", 4), None);
        let key = b"  \"a_very_long_json_key_name\" : \"alice\"";
        assert_eq!(key[30], b':');
        assert_eq!(backup(key, 30, 0), 2);
    }

    #[test]
    fn no_v6_scans_a_time_once() {
        let s = b"2024-05-01T13:45:12.345Z up ::1 fe80::1:2 1:2:3:4:5:6:7:8 12:34:56";
        let mut memo = NoV6::default();
        let colons: Vec<usize> = (0..s.len()).filter(|&k| s[k] == b':').collect();
        let got: Vec<bool> = colons.iter().map(|&c| memo.may_be_ipv6(s, c)).collect();
        let want: Vec<bool> = colons.iter().map(|&c| may_be_ipv6_old(s, c)).collect();
        assert_eq!(got, want);
        let mut memo = NoV6::default();
        assert!(!memo.may_be_ipv6(s, 13));
        assert_eq!((memo.from, memo.to), (13, 23));
        assert_eq!(&s[28..31], b"::1");
        assert!(may_be_ipv6(s, 28));
    }

    #[test]
    fn pairs_of_real_text() {
        let pem = b"key: -----BEGIN RSA PRIVATE KEY-----\nMIIE";
        let p = Anchors::new(pem).pairs();
        assert!(p.pem && !p.paren && !p.dash_u);
        let curl = b"run: curl -s -u deploy:x https://example.org/ (retry 2)";
        let p = Anchors::new(curl).pairs();
        // A `(` after a space starts no `WORD(` row.
        assert!(!p.pem && !p.paren && p.dash_u);
        let dovecot = b"dovecot: imap(alice)<1234><abc>: Logged out in=12 out=345";
        assert!(Anchors::new(dovecot).pairs().paren);
        let pam = b"pam_unix(sudo:session): session opened";
        assert!(Anchors::new(pam).pairs().paren);
        let long = [b"x".repeat(5000), b"-u".to_vec()].concat();
        assert!(Anchors::new(&long).pairs().dash_u);
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
