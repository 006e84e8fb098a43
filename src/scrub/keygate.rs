//! The key gate: tells, for a fraction of a Teddy search's cost, that no
//! key of the shape table (`shapes`) can start anywhere in a text, so a
//! line with nothing to scrub skips the search; and else the first
//! position where one may, so that the search starts there (and, after
//! each hit, where the next may).
//!
//! It is Teddy's own fingerprint without the verification: each key goes
//! into one of 16 buckets (two sets of 8), and for each of a key's [`KEY_LEN`] byte
//! positions two 16-entry tables (by the byte's low and high nibble) say
//! which buckets a byte there may belong to. A position passes when one
//! bucket holds at every byte position: every key occurrence passes (so a
//! `false` is certain), and most other positions do not. A text with any
//! passing position is handed to the real search, which decides.
//!
//! The tables are looked up with `pshufb`, 32 bytes at a time (AVX2,
//! detected at run time through `pulp`, whose tokens make the intrinsics
//! safe to call; weir stays free of `unsafe`). Where the CPU lacks it the
//! gate says "may hold" and Teddy runs, as before. The byte-wise rule
//! ([`KeyGate::passes_at`]) is the reference a test holds the SIMD pass to.

/// Bytes of each key (`shapes::KEY_LEN`).
pub const KEY_LEN: usize = 4;

/// Sets of tables, 8 buckets each (one bit of a table byte).
const SETS: usize = 2;
const BUCKETS: usize = 8 * SETS;

pub struct KeyGate {
    /// `lo[t][j][n]`: the buckets of set `t` whose keys may have a byte
    /// with low nibble `n` at position `j`; `hi` likewise by the high
    /// nibble. Each table is there twice (bytes 16.. repeat 0..16), as
    /// `pshufb` on 32 bytes looks up each half in its own half.
    lo: [[[u8; 32]; KEY_LEN]; SETS],
    hi: [[[u8; 32]; KEY_LEN]; SETS],
    #[cfg(target_arch = "x86_64")]
    v3: Option<pulp::x86::V3>,
}

impl KeyGate {
    /// The gate of `keys` (each [`KEY_LEN`] bytes). Each key goes to the
    /// bucket it widens least: the one whose fingerprint, with the key
    /// added, lets the least text through, each byte weighed by how
    /// common `rarity` (1 common, 2 less so, 3 rare) says it is in log
    /// text (the shape table's own measure, no text in mind). Keys alike
    /// share a bucket; a key unlike the others does not open one to every
    /// common byte.
    pub fn new(keys: &[&[u8]], rarity: fn(u8) -> usize) -> KeyGate {
        let mut gate = KeyGate {
            lo: [[[0; 32]; KEY_LEN]; SETS],
            hi: [[[0; 32]; KEY_LEN]; SETS],
            #[cfg(target_arch = "x86_64")]
            v3: pulp::x86::V3::try_new(),
        };
        // The nibble sets of each bucket, per position: bit n of a u16.
        let mut sets = [[(0u16, 0u16); KEY_LEN]; BUCKETS];
        // Common bytes weigh 16, less common 4, rare 1: a 4 in 16 chance
        // of a common byte against a rare one.
        let weight = |c: u8| 16.0 / 4f64.powi(rarity(c).clamp(1, 3) as i32 - 1);
        // The share of text a bucket lets through, per byte position.
        let volume = |b: &[(u16, u16); KEY_LEN]| -> f64 {
            b.iter()
                .map(|&(l, h)| {
                    let nibbles = |set: u16| (0..16u8).filter(move |n| set >> n & 1 == 1);
                    nibbles(h)
                        .flat_map(|hi| nibbles(l).map(move |lo| weight(hi << 4 | lo)))
                        .sum::<f64>()
                })
                .product()
        };
        for key in keys {
            assert_eq!(key.len(), KEY_LEN, "a key is KEY_LEN bytes");
            // `block_avx2` looks a byte's low nibble up with the byte.
            assert!(key.is_ascii(), "a key is ASCII");
            let with = |b: &[(u16, u16); KEY_LEN]| {
                let mut b = *b;
                for (j, &c) in key.iter().enumerate() {
                    b[j].0 |= 1 << (c & 15);
                    b[j].1 |= 1 << (c >> 4);
                }
                b
            };
            let best = (0..BUCKETS)
                .min_by(|&x, &y| {
                    let cost = |k: usize| volume(&with(&sets[k])) - volume(&sets[k]);
                    cost(x).total_cmp(&cost(y))
                })
                .expect("buckets");
            sets[best] = with(&sets[best]);
            for (j, &c) in key.iter().enumerate() {
                let (t, bit) = (best / 8, 1 << (best % 8));
                for half in [0, 16] {
                    gate.lo[t][j][half + usize::from(c & 15)] |= bit;
                    gate.hi[t][j][half + usize::from(c >> 4)] |= bit;
                }
            }
        }
        gate
    }

    /// The byte-wise rule: whether a key may start at `p` (`s[p..p + 4]`).
    #[cfg(test)]
    pub fn passes_at(&self, s: &[u8], p: usize) -> bool {
        (0..SETS).any(|set| {
            let mut buckets = 0xff;
            for j in 0..KEY_LEN {
                let c = s[p + j];
                let (lo, hi) = (&self.lo[set][j], &self.hi[set][j]);
                buckets &= lo[usize::from(c & 15)] & hi[usize::from(c >> 4)];
            }
            buckets != 0
        })
    }

    /// Whether a key may start anywhere in `s`; `false` is certain (tests).
    #[cfg(test)]
    pub fn may_hold_key(&self, s: &[u8]) -> bool {
        self.first_candidate(s, 0).is_some()
    }

    /// The first position at or after `from` where a key may start: no
    /// key starts in `from..` before it, and `None` is certain. So the
    /// search for keys (Teddy) starts there, not at `from`: a line holding
    /// a key (an access log's ` GET`) is searched from near the key on,
    /// and asked again after each hit, rather than to its end. Without
    /// AVX2, `from` itself (the search decides, as before the gate).
    #[inline]
    pub fn first_candidate(&self, s: &[u8], from: usize) -> Option<usize> {
        if from + KEY_LEN > s.len() {
            return None;
        }
        #[cfg(target_arch = "x86_64")]
        if let Some(v3) = self.v3 {
            return v3.vectorize(
                #[inline(always)]
                || self.first_candidate_avx2(v3, s, from),
            );
        }
        Some(from)
    }

    /// [`KeyGate::first_candidate`] with AVX2, 32 positions at a time: the
    /// four loads at `at..at + 3` put the bytes of a key starting at each
    /// position in one lane. The last block is the one ending the text
    /// (it overlaps the one before; positions before `at` are masked
    /// off); a text shorter than a block is padded with zeros, which no
    /// key byte's high nibble (0) lets through.
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    fn first_candidate_avx2(&self, v3: pulp::x86::V3, s: &[u8], from: usize) -> Option<usize> {
        let n = s.len();
        // Positions from `base + skip` on, of a block starting at `base`.
        let first = |base: usize, skip: usize, mask: u32| {
            let m = mask >> skip << skip;
            (m != 0).then(|| base + m.trailing_zeros() as usize)
        };
        if n < SPAN {
            let mut padded = [0u8; SPAN];
            padded[..n].copy_from_slice(s);
            return first(0, from, block_avx2(v3, self, &padded));
        }
        let span = |at: usize| -> &[u8; SPAN] { s[at..at + SPAN].try_into().expect("SPAN bytes") };
        let mut at = from;
        while at + SPAN <= n {
            let m = block_avx2(v3, self, span(at));
            if m != 0 {
                return Some(at + m.trailing_zeros() as usize);
            }
            at += W;
        }
        if at + KEY_LEN > n {
            return None;
        }
        let base = n - SPAN;
        first(base, at - base, block_avx2(v3, self, span(base)))
    }

    /// [`KeyGate::first_candidate`] by the byte-wise rule (tests).
    #[cfg(test)]
    pub fn first_candidate_bytewise(&self, s: &[u8], from: usize) -> Option<usize> {
        (from..(s.len() + 1).saturating_sub(KEY_LEN)).find(|&p| self.passes_at(s, p))
    }

    /// [`KeyGate::may_hold_key`] by the byte-wise rule (tests).
    #[cfg(test)]
    pub fn may_hold_key_bytewise(&self, s: &[u8]) -> bool {
        self.first_candidate_bytewise(s, 0).is_some()
    }
}

/// Positions per AVX2 block, and the bytes their keys span.
const W: usize = 32;
const SPAN: usize = W + KEY_LEN - 1;

/// Bit `k` set when a key of `gate` may start at `b[k]` (`k < W`).
/// Everything here is inlined into `pulp`'s AVX2 function (a call left
/// out of it runs each intrinsic as a call of its own).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn block_avx2(v3: pulp::x86::V3, gate: &KeyGate, b: &[u8; SPAN]) -> u32 {
    use core::arch::x86_64::__m256i;
    let (avx, avx2) = (v3.avx, v3.avx2);
    let nibble = avx._mm256_set1_epi8(0x0f);
    let mut l = [nibble; KEY_LEN];
    let mut h = [nibble; KEY_LEN];
    for j in 0..KEY_LEN {
        let bytes: [u8; W] = b[j..j + W].try_into().expect("W bytes");
        let v: __m256i = pulp::cast(bytes);
        // The low nibble is looked up with the byte itself: `pshufb`
        // reads its bits 0-3, and gives 0 when bit 7 is set, which is
        // the byte-wise rule's answer there (keys are ASCII, so the high
        // nibble tables are 0 from 8 on). One `and` less per load.
        l[j] = v;
        h[j] = avx2._mm256_and_si256(avx2._mm256_srli_epi16::<4>(v), nibble);
    }
    let mut any = avx._mm256_setzero_si256();
    for t in 0..SETS {
        let mut acc = avx._mm256_set1_epi8(-1);
        for j in 0..KEY_LEN {
            let (lo, hi): (__m256i, __m256i) =
                (pulp::cast(gate.lo[t][j]), pulp::cast(gate.hi[t][j]));
            let m = avx2._mm256_and_si256(
                avx2._mm256_shuffle_epi8(lo, l[j]),
                avx2._mm256_shuffle_epi8(hi, h[j]),
            );
            acc = avx2._mm256_and_si256(acc, m);
        }
        any = avx2._mm256_or_si256(any, acc);
    }
    // A lane passes when it holds a bucket: not zero.
    !(avx2._mm256_movemask_epi8(avx2._mm256_cmpeq_epi8(any, avx._mm256_setzero_si256())) as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rarity(c: u8) -> usize {
        if c.is_ascii_lowercase() || c == b' ' {
            1
        } else {
            3
        }
    }

    const KEYS: &[&[u8]] = &[
        b"Auth", b"logg", b"or \"", b"(ID:", b"] Pe", b"e\":\"", b"TTY=", b"' to", b"pass", b"chan",
    ];

    /// Key bytes, their neighbours in the nibble tables, and anything.
    fn text() -> impl proptest::strategy::Strategy<Value = Vec<u8>> {
        proptest::collection::vec(
            proptest::prop_oneof![
                proptest::sample::select(b"Authlogr \"(ID:]Pe\":TY='topasschn@/0q".to_vec()),
                proptest::num::u8::ANY,
            ],
            0..300,
        )
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]
        /// The SIMD pass answers as the byte-wise rule, at any length
        /// (short texts, whole blocks, the overlapping last block).
        #[test]
        fn simd_is_the_byte_rule(s in text()) {
            let gate = KeyGate::new(KEYS, rarity);
            if gate.v3.is_some() {
                proptest::prop_assert_eq!(gate.may_hold_key(&s), gate.may_hold_key_bytewise(&s));
            } else {
                proptest::prop_assert!(gate.may_hold_key(&s));
            }
        }

        /// The first candidate from any start is the byte-wise rule's
        /// (with AVX2; without it, the start itself).
        #[test]
        fn first_candidate_is_the_byte_rule(s in text(), from in 0usize..310) {
            let gate = KeyGate::new(KEYS, rarity);
            let got = gate.first_candidate(&s, from);
            if gate.v3.is_some() {
                proptest::prop_assert_eq!(got, gate.first_candidate_bytewise(&s, from));
            } else {
                proptest::prop_assert_eq!(got, (from + KEY_LEN <= s.len()).then_some(from));
            }
        }

        /// A key anywhere opens the gate.
        #[test]
        fn a_key_anywhere_opens_the_gate(
            s in text(),
            key in proptest::sample::select(KEYS.to_vec()),
            at in 0usize..300,
        ) {
            let at = at.min(s.len());
            let s = [&s[..at], key, &s[at..]].concat();
            proptest::prop_assert!(KeyGate::new(KEYS, rarity).may_hold_key(&s));
        }
    }

    #[test]
    fn at_every_offset_and_length() {
        let gate = KeyGate::new(KEYS, rarity);
        for key in KEYS {
            for len in 0..80 {
                for at in 0..=len {
                    let mut s = vec![b'x'; len];
                    s.splice(at..at, key.iter().copied());
                    assert!(gate.may_hold_key(&s), "{key:?} at {at} of {len}");
                    let short = &s[..s.len() - 1];
                    if gate.v3.is_some() {
                        // `x…` holds no key: only the cut key may open it.
                        assert_eq!(gate.may_hold_key(short), gate.may_hold_key_bytewise(short));
                    }
                }
            }
        }
        assert!(!gate.may_hold_key(b""));
        assert!(!gate.may_hold_key(b"TTY"));
        if gate.v3.is_some() {
            let clean = b"Starting the background job scheduler; waiting for the service";
            assert!(!gate.may_hold_key(clean));
        }
    }
}
