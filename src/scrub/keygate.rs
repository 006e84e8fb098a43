//! The key gate: finds every key of the shape table (`shapes`) in a text
//! in one pass, for a fraction of what a Teddy search (and the gate that
//! used to run before it, and again after each hit) cost.
//!
//! It is Teddy's own fingerprint with an exact check of what it lets
//! through: each key goes into one of 8 buckets, and for each of a key's
//! [`KEY_LEN`] byte positions two 16-entry tables (by the byte's low and
//! high nibble) say which buckets a byte there may belong to. A position
//! passes when one bucket holds at every byte position: every key
//! occurrence passes, and most other positions do not (about one in 60
//! of the corpus's). Each passing position's 4 bytes are then looked up
//! in a small hash table of the keys ([`KeyGate::key_at`]).
//!
//! The tables are looked up with `pshufb`, 32 bytes at a time (AVX2,
//! detected at run time through `pulp`, whose tokens make the intrinsics
//! safe to call; weir stays free of `unsafe`). Where the CPU lacks it,
//! [`KeyGate::each_key`] says so and the caller runs Teddy, as before the
//! gate. The byte-wise rule ([`KeyGate::passes_at`]) is the reference a
//! test holds the SIMD pass to.

use core::ops::ControlFlow;

/// Bytes of each key (`shapes::KEY_LEN`).
pub const KEY_LEN: usize = 4;

/// Buckets: one bit of a table byte each. Eight (one set of tables):
/// the 8 tables stay in registers (the 16 of two sets did not: they were
/// read from the stack at every block), and the positions the looser
/// fingerprint lets through cost a look-up each, not a search.
const BUCKETS: usize = 8;

pub struct KeyGate {
    /// `lo[j][n]`: the buckets whose keys may have a byte with low
    /// nibble `n` at position `j`; `hi` likewise by the high nibble. Each
    /// table is there twice (bytes 16.. repeat 0..16), as `pshufb` on 32
    /// bytes looks up each half in its own half.
    lo: [[u8; 32]; KEY_LEN],
    hi: [[u8; 32]; KEY_LEN],
    /// The keys, for the exact check of each position the fingerprint
    /// lets through ([`KeyGate::key_at`]): an open-addressed table of
    /// [`SLOTS`] slots, each a key's bytes (little-endian) and its index
    /// in `keys` ([`EMPTY`] for a free slot), a key in the first free slot
    /// from its [`hash`] on.
    slot_key: [u32; SLOTS],
    slot_index: [u8; SLOTS],
    /// The multiplier of [`hash`]: one that puts every key in its own slot
    /// (then a look-up reads one slot), found when the gate is built.
    mul: u32,
    #[cfg(target_arch = "x86_64")]
    v3: Option<pulp::x86::V3>,
}

/// Slots of the key table: four times the 64 keys Teddy allowed, so that
/// a multiplier giving each key a slot of its own is found at once.
const SLOTS: usize = 256;
/// A free slot's index.
const EMPTY: u8 = u8::MAX;

/// The slot where the search for the key `w` starts (multiplicative
/// hashing: the top 8 bits of the product).
#[inline(always)]
fn hash(w: u32, mul: u32) -> usize {
    (w.wrapping_mul(mul) >> 24) as usize
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
        assert!(keys.len() < usize::from(EMPTY), "at most 254 keys");
        let mut gate = KeyGate {
            lo: [[0; 32]; KEY_LEN],
            hi: [[0; 32]; KEY_LEN],
            slot_key: [0; SLOTS],
            slot_index: [EMPTY; SLOTS],
            mul: 0,
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
                let bit = 1 << best;
                for half in [0, 16] {
                    gate.lo[j][half + usize::from(c & 15)] |= bit;
                    gate.hi[j][half + usize::from(c >> 4)] |= bit;
                }
            }
        }
        let words: Vec<u32> = keys.iter().map(|k| word(k, 0)).collect();
        // Odd multipliers from the golden ratio's on, the first that gives
        // every key a slot of its own; any multiplier is right (a collision
        // costs a probe), so the search is bounded.
        let spread = |mul: u32| {
            let mut used = [false; SLOTS];
            words
                .iter()
                .all(|&w| !std::mem::replace(&mut used[hash(w, mul)], true))
        };
        gate.mul = (0..1000u32)
            .map(|i| 0x9e37_79b1u32.wrapping_add(i.wrapping_mul(0x7f4a_7c16)))
            .find(|&m| spread(m))
            .unwrap_or(0x9e37_79b1);
        for (i, &w) in words.iter().enumerate() {
            assert!(!words[..i].contains(&w), "keys are distinct");
            let mut h = hash(w, gate.mul);
            while gate.slot_index[h] != EMPTY {
                h = (h + 1) % SLOTS;
            }
            gate.slot_key[h] = w;
            gate.slot_index[h] = i as u8;
        }
        gate
    }

    /// The index (in `keys`) of the key at `s[p..p + KEY_LEN]`, if any.
    #[inline(always)]
    pub fn key_at(&self, s: &[u8], p: usize) -> Option<usize> {
        let w = word(s, p);
        let mut h = hash(w, self.mul);
        loop {
            let i = self.slot_index[h];
            if i == EMPTY {
                return None;
            }
            if self.slot_key[h] == w {
                return Some(usize::from(i));
            }
            h = (h + 1) % SLOTS;
        }
    }

    /// Calls `f(p, key)` for every occurrence of a key in `s` (where it
    /// starts and its index in `keys`), in order, until `f` breaks; each
    /// position the fingerprint lets through is checked exactly
    /// ([`KeyGate::key_at`]). One pass over the text, the tables loaded
    /// once: this replaces a Teddy search (which verified its own
    /// candidates) started and restarted at the gate's. Returns `false`,
    /// without calling `f`, where the CPU lacks AVX2: the caller searches
    /// otherwise.
    #[inline]
    pub fn each_key(&self, s: &[u8], mut f: impl FnMut(usize, usize) -> ControlFlow<()>) -> bool {
        #[cfg(target_arch = "x86_64")]
        if let Some(v3) = self.v3 {
            v3.vectorize(
                #[inline(always)]
                || self.each_key_avx2(v3, s, &mut f),
            );
            return true;
        }
        let _ = (s, &mut f);
        false
    }

    /// [`KeyGate::each_key`] with AVX2: the keys at the positions
    /// [`blocks_avx2`] lets through.
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    fn each_key_avx2(
        &self,
        v3: pulp::x86::V3,
        s: &[u8],
        f: &mut impl FnMut(usize, usize) -> ControlFlow<()>,
    ) {
        blocks_avx2(v3, self, s, |base, mut mask| {
            while mask != 0 {
                let p = base + mask.trailing_zeros() as usize;
                if let Some(k) = self.key_at(s, p) {
                    f(p, k)?;
                }
                mask &= mask - 1;
            }
            ControlFlow::Continue(())
        });
    }

    /// The byte-wise rule: whether a key may start at `p` (`s[p..p + 4]`).
    #[cfg(test)]
    pub fn passes_at(&self, s: &[u8], p: usize) -> bool {
        let mut buckets = 0xff;
        for j in 0..KEY_LEN {
            let c = s[p + j];
            let (lo, hi) = (&self.lo[j], &self.hi[j]);
            buckets &= lo[usize::from(c & 15)] & hi[usize::from(c >> 4)];
        }
        buckets != 0
    }

    /// The positions the SIMD fingerprint lets through, in order (tests:
    /// the byte-wise rule's); `None` without AVX2.
    #[cfg(test)]
    pub fn candidates(&self, s: &[u8]) -> Option<Vec<usize>> {
        #[cfg(target_arch = "x86_64")]
        if let Some(v3) = self.v3 {
            let mut out = Vec::new();
            v3.vectorize(|| {
                blocks_avx2(v3, self, s, |base, mut mask| {
                    while mask != 0 {
                        out.push(base + mask.trailing_zeros() as usize);
                        mask &= mask - 1;
                    }
                    ControlFlow::Continue(())
                })
            });
            return Some(out);
        }
        let _ = s;
        None
    }

    /// The positions the byte-wise rule lets through (tests).
    #[cfg(test)]
    pub fn candidates_bytewise(&self, s: &[u8]) -> Vec<usize> {
        (0..(s.len() + 1).saturating_sub(KEY_LEN))
            .filter(|&p| self.passes_at(s, p))
            .collect()
    }

    /// Every key occurrence by the plain rule: each position looked up
    /// (tests).
    #[cfg(test)]
    pub fn keys_bytewise(&self, s: &[u8]) -> Vec<(usize, usize)> {
        (0..(s.len() + 1).saturating_sub(KEY_LEN))
            .filter_map(|p| self.key_at(s, p).map(|k| (p, k)))
            .collect()
    }

    /// Without the SIMD pass, as on a CPU without AVX2 (tests).
    #[cfg(test)]
    pub fn without_simd(mut self) -> KeyGate {
        #[cfg(target_arch = "x86_64")]
        {
            self.v3 = None;
        }
        self
    }

    /// Whether the SIMD pass runs (tests).
    #[cfg(test)]
    pub fn simd(&self) -> bool {
        #[cfg(target_arch = "x86_64")]
        return self.v3.is_some();
        #[cfg(not(target_arch = "x86_64"))]
        false
    }
}

/// Calls `visit(base, mask)` for the blocks of `s` in order, until it
/// breaks: bit `k` of `mask` set when the fingerprint lets a key start
/// at `base + k` (and a whole key fits there), each position once; a
/// block letting nothing through is not visited. Blocks of 32
/// positions; the four loads at `at..at + 3` put the bytes of a key
/// starting at each position in one lane. The last block is the one
/// ending the text (it overlaps the one before; positions already seen
/// are masked off); a text shorter than a block is padded with zeros,
/// and positions where no whole key fits are masked off.
///
/// The masks of up to [`CHUNK`] blocks are made before any is visited:
/// with no call among them, the tables stay in registers (a call in the
/// loop had them spilled to the stack, and read back at every block).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn blocks_avx2(
    v3: pulp::x86::V3,
    gate: &KeyGate,
    s: &[u8],
    mut visit: impl FnMut(usize, u32) -> ControlFlow<()>,
) {
    let n = s.len();
    if n < KEY_LEN {
        return;
    }
    let r = Tables::new(v3, gate);
    if n < SPAN {
        let mut padded = [0u8; SPAN];
        padded[..n].copy_from_slice(s);
        // `n - KEY_LEN + 1 < W` positions.
        let fits = (1u32 << (n - KEY_LEN + 1)) - 1;
        let mask = block_avx2(v3, &r, &padded) & fits;
        if mask != 0 {
            let _ = visit(0, mask);
        }
        return;
    }
    let span = |at: usize| -> &[u8; SPAN] { s[at..at + SPAN].try_into().expect("SPAN bytes") };
    let mut at = 0;
    loop {
        let mut masks = [(0usize, 0u32); CHUNK];
        let mut k = 0;
        let mut done = false;
        while k < CHUNK {
            if at + SPAN <= n {
                masks[k] = (at, block_avx2(v3, &r, span(at)));
                at += W;
            } else {
                done = true;
                if at + KEY_LEN > n {
                    break;
                }
                let (base, skip) = (n - SPAN, at - (n - SPAN));
                masks[k] = (base, block_avx2(v3, &r, span(base)) >> skip << skip);
            }
            k += 1;
            if done {
                break;
            }
        }
        for &(base, mask) in &masks[..k] {
            if mask != 0 && visit(base, mask).is_break() {
                return;
            }
        }
        if done {
            return;
        }
    }
}

/// Blocks whose masks [`blocks_avx2`] makes before visiting them.
#[cfg(target_arch = "x86_64")]
const CHUNK: usize = 8;

/// The [`KEY_LEN`] bytes at `s[p..]` as one word (little-endian).
#[inline(always)]
fn word(s: &[u8], p: usize) -> u32 {
    u32::from_le_bytes(s[p..p + KEY_LEN].try_into().expect("KEY_LEN bytes"))
}

/// Positions per AVX2 block, and the bytes their keys span.
const W: usize = 32;
const SPAN: usize = W + KEY_LEN - 1;

/// The gate's tables in registers, and the constants of [`block_avx2`]:
/// loaded once per text, not at every block.
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
struct Tables {
    lo: [core::arch::x86_64::__m256i; KEY_LEN],
    hi: [core::arch::x86_64::__m256i; KEY_LEN],
    nibble: core::arch::x86_64::__m256i,
    top: core::arch::x86_64::__m256i,
}

#[cfg(target_arch = "x86_64")]
impl Tables {
    #[inline(always)]
    fn new(v3: pulp::x86::V3, gate: &KeyGate) -> Tables {
        Tables {
            lo: gate.lo.map(pulp::cast),
            hi: gate.hi.map(pulp::cast),
            nibble: v3.avx._mm256_set1_epi8(0x0f),
            top: v3.avx._mm256_set1_epi8(0x7f),
        }
    }
}

/// Bit `k` set when a key may start at `b[k]` (`k < W`), by the tables
/// `r`. Everything here is inlined into `pulp`'s AVX2 function (a call
/// left out of it runs each intrinsic as a call of its own).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn block_avx2(v3: pulp::x86::V3, r: &Tables, b: &[u8; SPAN]) -> u32 {
    use core::arch::x86_64::__m256i;
    let avx2 = v3.avx2;
    let mut acc = v3.avx._mm256_set1_epi8(-1);
    // One byte position at a time: 12 registers live, the 8 tables among
    // them, so none is spilled.
    for j in 0..KEY_LEN {
        let bytes: [u8; W] = b[j..j + W].try_into().expect("W bytes");
        let v: __m256i = pulp::cast(bytes);
        // The low nibble is looked up with the byte itself: `pshufb`
        // reads its bits 0-3, and gives 0 when bit 7 is set, which is
        // the byte-wise rule's answer there (keys are ASCII, so the high
        // nibble tables are 0 from 8 on). One `and` less per load.
        let h = avx2._mm256_and_si256(avx2._mm256_srli_epi16::<4>(v), r.nibble);
        let m = avx2._mm256_and_si256(
            avx2._mm256_shuffle_epi8(r.lo[j], v),
            avx2._mm256_shuffle_epi8(r.hi[j], h),
        );
        acc = avx2._mm256_and_si256(acc, m);
    }
    // A lane passes when it holds a bucket, not zero: adding 0x7f (with
    // saturation) sets its top bit then, and only then.
    avx2._mm256_movemask_epi8(avx2._mm256_adds_epu8(acc, r.top)) as u32
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

    /// Every key at every position, by comparing each key's bytes.
    fn occurrences(s: &[u8]) -> Vec<(usize, usize)> {
        (0..s.len())
            .flat_map(|p| {
                KEYS.iter()
                    .position(|k| s[p..].starts_with(k))
                    .map(|k| (p, k))
            })
            .collect()
    }

    /// What `each_key` calls `f` with (`None` when it does not run).
    fn each_key(gate: &KeyGate, s: &[u8]) -> Option<Vec<(usize, usize)>> {
        let mut out = Vec::new();
        gate.each_key(s, |p, k| {
            out.push((p, k));
            ControlFlow::Continue(())
        })
        .then_some(out)
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]
        /// The SIMD pass lets through the positions of the byte-wise rule,
        /// at any length (short texts, whole blocks, the overlapping last
        /// block).
        #[test]
        fn simd_is_the_byte_rule(s in text()) {
            let gate = KeyGate::new(KEYS, rarity);
            match gate.candidates(&s) {
                Some(c) => proptest::prop_assert_eq!(c, gate.candidates_bytewise(&s)),
                None => proptest::prop_assert!(!gate.simd()),
            }
        }

        /// `each_key` tells every key occurrence, in order, and nothing
        /// else (with AVX2; without it, it says it did not run); the
        /// key table's look-up is a plain comparison with each key.
        #[test]
        fn each_key_is_every_occurrence(s in text()) {
            let gate = KeyGate::new(KEYS, rarity);
            let all = occurrences(&s);
            proptest::prop_assert_eq!(&gate.keys_bytewise(&s), &all);
            match each_key(&gate, &s) {
                Some(found) => proptest::prop_assert_eq!(found, all),
                None => proptest::prop_assert!(!gate.simd()),
            }
            proptest::prop_assert_eq!(each_key(&gate.without_simd(), &s), None);
        }

        /// A key anywhere is found.
        #[test]
        fn a_key_anywhere_is_found(
            s in text(),
            key in proptest::sample::select(KEYS.to_vec()),
            at in 0usize..300,
        ) {
            let at = at.min(s.len());
            let s = [&s[..at], key, &s[at..]].concat();
            let k = KEYS.iter().position(|x| x == &key).expect("a key");
            let gate = KeyGate::new(KEYS, rarity);
            if let Some(found) = each_key(&gate, &s) {
                proptest::prop_assert!(found.contains(&(at, k)));
            }
        }
    }

    /// Each key has a slot of its own (a look-up of a key reads one).
    #[test]
    fn keys_have_their_own_slots() {
        let gate = KeyGate::new(KEYS, rarity);
        for (i, k) in KEYS.iter().enumerate() {
            let h = hash(word(k, 0), gate.mul);
            assert_eq!(usize::from(gate.slot_index[h]), i, "{k:?}");
        }
    }

    /// `f` breaking stops the search.
    #[test]
    fn a_break_stops() {
        let gate = KeyGate::new(KEYS, rarity);
        let s = b"pass pass pass pass".repeat(5);
        let mut calls = 0;
        let ran = gate.each_key(&s, |_, _| {
            calls += 1;
            ControlFlow::Break(())
        });
        assert_eq!(calls, usize::from(ran));
    }

    #[test]
    fn at_every_offset_and_length() {
        let gate = KeyGate::new(KEYS, rarity);
        if !gate.simd() {
            return;
        }
        for (k, key) in KEYS.iter().enumerate() {
            for len in 0..80 {
                for at in 0..=len {
                    let mut s = vec![b'x'; len];
                    s.splice(at..at, key.iter().copied());
                    assert_eq!(
                        each_key(&gate, &s),
                        Some(vec![(at, k)]),
                        "{key:?} at {at} of {len}"
                    );
                    // Cut at the end: the key whole or cut (no key).
                    let short = &s[..s.len() - 1];
                    assert_eq!(each_key(&gate, short), Some(occurrences(short)));
                    assert_eq!(
                        gate.candidates(short),
                        Some(gate.candidates_bytewise(short))
                    );
                }
            }
        }
        assert_eq!(each_key(&gate, b""), Some(vec![]));
        assert_eq!(each_key(&gate, b"TTY"), Some(vec![]));
        let clean = b"Starting the background job scheduler; waiting for the service";
        assert_eq!(gate.candidates(clean), Some(vec![]));
    }
}
