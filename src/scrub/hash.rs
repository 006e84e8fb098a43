//! Keyed pseudonyms and the key file they depend on.
//!
//! A pseudonym is `PREFIX` + the first 5 bytes (10 hex digits) of
//! `BLAKE3-keyed(period_key, domain || 0 || value)`: stable for a given key and
//! period, not reversible without the key, and recognisable (see
//! [`pseudonym_len_at`]) so that scrubbing a pseudonym again leaves it alone.
//! 40 bits make collisions between two users of one host very unlikely while
//! keeping lines short.
//!
//! The key is 32 random bytes from the OS, stored as 64 hex digits in
//! `<state_dir>/scrub.key` (mode 0600). It is created by writing a temporary
//! file and hard-linking it into place, which fails rather than overwrites when
//! another start won the race: both then read the same key. With
//! `hash_rotation`, the key of period `n` (event time / rotation) is
//! `BLAKE3-keyed(key, "weir scrub period" || n as i64 le)`.

use std::fs::{self, OpenOptions};
use std::io::{ErrorKind, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use rand::RngCore;

use super::ScrubError;
use crate::event::same_bytes;

/// Name of the key file inside the state directory.
pub const KEY_FILE: &str = "scrub.key";

/// Hex digits in a pseudonym after its prefix.
pub const HASH_HEX: usize = 10;

/// The master key and the rotation period.
#[derive(Clone)]
pub struct Keyring {
    master: [u8; 32],
    rotation_secs: Option<u64>,
}

impl Keyring {
    pub fn new(master: [u8; 32], rotation_secs: Option<u64>) -> Keyring {
        Keyring {
            master,
            rotation_secs: rotation_secs.filter(|&s| s > 0),
        }
    }

    /// The key for an event written at `timestamp_ns`.
    pub fn key_for(&self, timestamp_ns: i64) -> [u8; 32] {
        let Some(rot) = self.rotation_secs else {
            return self.master;
        };
        let period = timestamp_ns
            .div_euclid(1_000_000_000)
            .div_euclid(i64::try_from(rot).unwrap_or(i64::MAX));
        let mut h = blake3::Hasher::new_keyed(&self.master);
        h.update(b"weir scrub period");
        h.update(&period.to_le_bytes());
        *h.finalize().as_bytes()
    }
}

/// Appends `prefix` and the pseudonym of `value` (in hashing domain `domain`).
pub fn pseudonym(key: &[u8; 32], domain: &[u8], value: &[u8], prefix: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(prefix);
    out.extend_from_slice(&pseudonym_hex(key, domain, value));
}

/// The hex digits of the pseudonym of `value` in hashing domain `domain`
/// (what [`pseudonym`] appends after the prefix).
pub fn pseudonym_hex(key: &[u8; 32], domain: &[u8], value: &[u8]) -> [u8; HASH_HEX] {
    let n = domain.len() + 1 + value.len();
    if n > RECENT_INPUT {
        return digest_hex(key, domain, value);
    }
    let slot = recent_slot(domain, value);
    RECENT.with_borrow_mut(|recent| {
        let r = &mut recent[slot];
        if !r.holds(key, domain, value) {
            r.hex = digest_hex(key, domain, value);
            r.key = *key;
            r.input[..domain.len()].copy_from_slice(domain);
            r.input[domain.len()] = 0;
            r.input[domain.len() + 1..n].copy_from_slice(value);
            r.len = n as u8;
        }
        r.hex
    })
}

/// The slot of `domain || 0 || value` in the table of recent pseudonyms:
/// FNV-1a over those bytes, read where they lie (no input assembled first:
/// that was a memset and two copies per rewrite). Cheap, and a collision
/// only costs a hash. (Seeding FNV with the domain's length and last byte
/// instead, to skip its bytes, put two of the bench's six names in one
/// slot: a quarter of the look-ups missed.)
fn recent_slot(domain: &[u8], value: &[u8]) -> usize {
    let step = |h: u64, &b: &u8| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
    let h = domain.iter().fold(0xcbf2_9ce4_8422_2325_u64, step);
    let h = value.iter().fold(step(h, &0), step);
    h as usize % RECENT_SLOTS
}

/// The pseudonym's hex digits: the first bytes of the keyed BLAKE3 digest.
fn digest_hex(key: &[u8; 32], domain: &[u8], value: &[u8]) -> [u8; HASH_HEX] {
    let mut h = blake3::Hasher::new_keyed(key);
    h.update(domain);
    h.update(&[0]);
    h.update(value);
    let digest = h.finalize();
    let mut hex = [0u8; HASH_HEX];
    for (k, b) in digest.as_bytes()[..HASH_HEX / 2].iter().enumerate() {
        hex[2 * k] = HEX[usize::from(b >> 4)];
        hex[2 * k + 1] = HEX[usize::from(b & 15)];
    }
    hex
}

/// Slots of the per-thread table of recent pseudonyms.
const RECENT_SLOTS: usize = 128;
/// Longest `domain || 0 || value` the table holds (longer ones are hashed
/// every time).
const RECENT_INPUT: usize = 64;

/// One pseudonym made recently: its key, input and digits (`len` 0: empty).
#[derive(Clone, Copy)]
struct Recent {
    key: [u8; 32],
    input: [u8; RECENT_INPUT],
    len: u8,
    hex: [u8; HASH_HEX],
}

impl Recent {
    const EMPTY: Recent = Recent {
        key: [0; 32],
        input: [0; RECENT_INPUT],
        len: 0,
        hex: [0; HASH_HEX],
    };

    /// Whether this slot holds the pseudonym of `domain || 0 || value`
    /// under `key` (whose length is at most [`RECENT_INPUT`]). The parts
    /// are compared where they lie.
    #[inline]
    fn holds(&self, key: &[u8; 32], domain: &[u8], value: &[u8]) -> bool {
        let d = domain.len();
        let n = d + 1 + value.len();
        usize::from(self.len) == n
            && self.input[d] == 0
            && same_bytes(&self.input[..d], domain)
            && same_bytes(&self.input[d + 1..n], value)
            && self.key == *key
    }
}

thread_local! {
    /// Pseudonyms this thread made recently. The same people and machines
    /// recur line after line (a user's session, a client's requests), and
    /// the keyed BLAKE3 hash of a short name is most of what rewriting it
    /// costs: a look-up here is a small fraction of that. Bounded (128
    /// slots of 107 bytes per thread), and a slot is reused by whatever
    /// lands on it next; it holds the names the scrubber is rewriting, no
    /// more than the events in flight already do. A `const` initialiser:
    /// no lazy set-up to check at every look-up.
    static RECENT: std::cell::RefCell<[Recent; RECENT_SLOTS]> =
        const { std::cell::RefCell::new([Recent::EMPTY; RECENT_SLOTS]) };
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Prefixes of the built-in pseudonyms.
pub const LOGIN_PREFIX: &[u8] = b"u:";
pub const IPV4_PREFIX: &[u8] = b"ip4:";
pub const IPV6_PREFIX: &[u8] = b"ip6:";
/// Credentials with `secrets = "hash"`.
pub const SECRET_PREFIX: &[u8] = b"pw:";

/// The length of a built-in pseudonym starting at `s[at..]`, if one does (and
/// is not glued to a following letter or digit).
pub fn pseudonym_len_at(s: &[u8], at: usize) -> Option<usize> {
    let rest = &s[at.min(s.len())..];
    // The prefixes differ in their first byte (`ip4:` and `ip6:` in their
    // third): one byte picks the only one that may match, and turns away
    // most positions looked at (every `@`, key value and host).
    let prefix = match rest.first()? {
        b'u' => LOGIN_PREFIX,
        b'p' => SECRET_PREFIX,
        b'i' if rest.get(2) == Some(&b'4') => IPV4_PREFIX,
        b'i' => IPV6_PREFIX,
        _ => return None,
    };
    prefixed_len(rest, prefix)
}

/// The length of a built-in pseudonym ending at `s[..end]`, if one does:
/// what a name read backward from `end` stops at (its hex digits are no
/// name of their own).
pub fn pseudonym_len_before(s: &[u8], end: usize) -> Option<usize> {
    let s = &s[..end];
    [LOGIN_PREFIX, IPV4_PREFIX, IPV6_PREFIX, SECRET_PREFIX]
        .into_iter()
        .map(|p| p.len() + HASH_HEX)
        .find(|&n| end >= n && pseudonym_len_at(s, end - n) == Some(n))
}

/// Whether a login or address pseudonym (`u:`, `ip4:`, `ip6:` and the
/// digits) ends at `end`: a name hashed by an earlier pass, before an `@`.
/// What `pseudonym_len_at(&s[..end], end - n) == Some(n)` tells for the
/// lengths `n` of those prefixes, digits first: a second pass asks it at
/// every `@` of a chain.
#[inline]
pub fn login_or_address_before(s: &[u8], end: usize) -> bool {
    const _: () = assert!(IPV4_PREFIX.len() == IPV6_PREFIX.len());
    let digits = end.wrapping_sub(HASH_HEX);
    end >= HASH_HEX
        && lower_hex_10(&s[digits..end])
        && (s[..digits].ends_with(LOGIN_PREFIX)
            || s[..digits].ends_with(IPV4_PREFIX)
            || s[..digits].ends_with(IPV6_PREFIX))
}

/// The length of `prefix` + 10 lower-case hex digits at the start of `s`.
pub fn prefixed_len(s: &[u8], prefix: &[u8]) -> Option<usize> {
    let n = prefix.len() + HASH_HEX;
    // Byte by byte, not `starts_with`: that is a call to libc's memcmp,
    // and this runs at every `@`, `:` and key the walk looks at (a tenth
    // of the time of hostile lines went to those calls).
    let ok = s.len() >= n
        && s.iter().zip(prefix).all(|(a, b)| a == b)
        && lower_hex_10(&s[prefix.len()..n])
        && !s.get(n).is_some_and(u8::is_ascii_alphanumeric);
    ok.then_some(n)
}

/// Whether the [`HASH_HEX`] bytes of `d` are all lower-case hex digits
/// (`0-9a-f`): two overlapping 8-byte words tested a byte lane at a time
/// (a second pass checks a pseudonym at every `@` and name of a chain, and
/// a byte loop cost about 40 instructions a check).
fn lower_hex_10(d: &[u8]) -> bool {
    const _: () = assert!(HASH_HEX == 10);
    let word = |at: usize| u64::from_le_bytes(d[at..at + 8].try_into().unwrap_or([0; 8]));
    lower_hex_8(word(0)) && lower_hex_8(word(2))
}

/// Whether each byte of `x` is `0-9` or `a-f`. For a byte `c < 0x80`,
/// `c + (0x80 - lo)` stays below 0x100 (no carry into the next lane) and
/// has its high bit set exactly when `c >= lo`.
#[inline]
fn lower_hex_8(x: u64) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    if x & HIGH != 0 {
        return false;
    }
    let at_least = |lo: u8| x.wrapping_add(ONES * u64::from(0x80 - lo)) & HIGH;
    let digit = at_least(b'0') & !at_least(b'9' + 1);
    let letter = at_least(b'a') & !at_least(b'f' + 1);
    digit | letter == HIGH
}

/// Whether `v` is exactly one built-in pseudonym.
pub fn is_pseudonym(v: &[u8]) -> bool {
    pseudonym_len_at(v, 0) == Some(v.len())
}

/// Reads `<state_dir>/scrub.key`, creating it at first start.
pub fn load_or_create_key(state_dir: &Path) -> Result<[u8; 32], ScrubError> {
    let path = state_dir.join(KEY_FILE);
    let io = |source| ScrubError::Key {
        path: path.display().to_string(),
        source,
    };
    match read_key(&path) {
        Ok(key) => return Ok(key),
        Err(ReadError::Io(e)) if e.kind() == ErrorKind::NotFound => {}
        Err(ReadError::Io(e)) => return Err(io(e)),
        Err(ReadError::Corrupt) => {
            return Err(ScrubError::CorruptKey {
                path: path.display().to_string(),
            })
        }
    }
    crate::statefile::ensure_dir(state_dir, true).map_err(io)?;
    let mut key = [0u8; 32];
    rand::rngs::OsRng
        .try_fill_bytes(&mut key)
        .map_err(|e| io(std::io::Error::other(e)))?;
    let tmp = temp_path(state_dir);
    let written = write_new(&tmp, &key).and_then(|()| fs::hard_link(&tmp, &path));
    let _ = fs::remove_file(&tmp);
    match written {
        Ok(()) => {
            // Make the new name durable before anything is hashed with it.
            if let Ok(dir) = fs::File::open(state_dir) {
                let _ = dir.sync_all();
            }
            Ok(key)
        }
        // Another start created it first: use theirs, so both agree.
        Err(e) if e.kind() == ErrorKind::AlreadyExists => match read_key(&path) {
            Ok(key) => Ok(key),
            Err(ReadError::Io(e)) => Err(io(e)),
            Err(ReadError::Corrupt) => Err(ScrubError::CorruptKey {
                path: path.display().to_string(),
            }),
        },
        Err(e) => Err(io(e)),
    }
}

enum ReadError {
    Io(std::io::Error),
    Corrupt,
}

fn read_key(path: &Path) -> Result<[u8; 32], ReadError> {
    // Never through a symlink (it could make weir chmod any file), and the
    // mode fixed through the descriptor, not the path.
    let f = crate::statefile::open_read(path).map_err(ReadError::Io)?;
    // A key readable by others is fixed rather than refused: it is ours.
    if let Some(mode) = crate::statefile::restrict(&f, 0o600).map_err(ReadError::Io)? {
        tracing::warn!(
            mode = format!("{:o}", mode & 0o777),
            "scrub key was readable by other users; permissions reset to 0600"
        );
    }
    let mut text = String::new();
    f.take(130)
        .read_to_string(&mut text)
        .map_err(|_| ReadError::Corrupt)?;
    let hex = text.trim_end_matches('\n');
    if hex.len() != 64 {
        return Err(ReadError::Corrupt);
    }
    let mut key = [0u8; 32];
    for (i, k) in key.iter_mut().enumerate() {
        *k = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|_| ReadError::Corrupt)?;
    }
    Ok(key)
}

fn write_new(path: &Path, key: &[u8; 32]) -> std::io::Result<()> {
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    let mut text = Vec::with_capacity(65);
    for b in key {
        text.push(HEX[usize::from(b >> 4)]);
        text.push(HEX[usize::from(b & 15)]);
    }
    text.push(b'\n');
    f.write_all(&text)?;
    f.sync_all()
}

fn temp_path(dir: &Path) -> PathBuf {
    let nonce = rand::random::<u64>();
    dir.join(format!(
        ".{KEY_FILE}.{}.{nonce:016x}.tmp",
        std::process::id()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// `login_or_address_before` is the look-up it stands for, at every
    /// end of texts with pseudonyms of each kind, cut and glued.
    #[test]
    fn login_or_address_before_is_the_lookup() {
        let texts: [&[u8]; 5] = [
            b"u:0123456789@ip4:abcdef0123@ip6:0011223344@pw:0123456789@",
            b"xu:0123456789@xip4:0123456789u:012345678g@",
            b"ip5:0123456789 i:0123456789 uu:aaaaaaaaaa",
            b"u:0123456789abcdef@ip4:ffffffffff0",
            b"0123456789",
        ];
        for s in texts {
            for end in 0..=s.len() {
                let want = [LOGIN_PREFIX.len(), IPV4_PREFIX.len()].iter().any(|&p| {
                    let n = p + HASH_HEX;
                    end >= n && pseudonym_len_at(&s[..end], end - n) == Some(n)
                });
                assert_eq!(login_or_address_before(s, end), want, "{end}");
            }
        }
    }

    /// The lane test agrees with a byte loop on every byte value at every
    /// place of the digits, next to digits and letters at the edges of
    /// their ranges (`0`, `9`, `a`, `f`).
    #[test]
    fn lower_hex_lanes_are_the_byte_test() {
        let lower_hex = |c: u8| matches!(c, b'0'..=b'9' | b'a'..=b'f');
        for base in [b"0123456789", b"abcdefabcd", b"9f0a9f0a9f", b"fffffffff0"] {
            assert!(lower_hex_10(base));
            for at in 0..HASH_HEX {
                for c in 0..=255u8 {
                    let mut d = *base;
                    d[at] = c;
                    assert_eq!(lower_hex_10(&d), lower_hex(c), "{c:#x} at {at}");
                }
            }
        }
        // Two bad bytes, one in each word only.
        assert!(!lower_hex_10(b"g12345678G"));
        assert!(!lower_hex_10(b"01234567:9"));
        assert!(!lower_hex_10(b"/123456789"));
    }

    /// `pseudonym_len_at` turns away any position that does not start
    /// with `u`, `i` or `p`: every prefix must start with one of them.
    #[test]
    fn prefixes_start_as_the_gate_says() {
        for p in [LOGIN_PREFIX, IPV4_PREFIX, IPV6_PREFIX, SECRET_PREFIX] {
            assert!(matches!(p[0], b'u' | b'i' | b'p'), "{p:?}");
            let mut s = p.to_vec();
            s.extend_from_slice(b"0123456789 rest");
            assert_eq!(pseudonym_len_at(&s, 0), Some(p.len() + HASH_HEX));
            assert!(is_pseudonym(&s[..p.len() + HASH_HEX]));
        }
        assert_eq!(pseudonym_len_at(b"x:0123456789", 0), None);
        // One byte picks the prefix; the others are never compared.
        for s in [
            &b"ip4:0123456789"[..],
            b"ip6:abcdef0123",
            b"pw:0123456789",
            b"u:0123456789",
        ] {
            let by_each = [LOGIN_PREFIX, IPV4_PREFIX, IPV6_PREFIX, SECRET_PREFIX]
                .into_iter()
                .find_map(|p| prefixed_len(s, p));
            assert_eq!(pseudonym_len_at(s, 0), by_each);
            assert!(by_each.is_some());
        }
        for s in [
            &b"ip5:0123456789"[..],
            b"i",
            b"u:012345678A",
            b"u:01234567890",
        ] {
            assert_eq!(pseudonym_len_at(s, 0), None, "{s:?}");
        }
    }

    /// `pseudonym` is the prefix then `pseudonym_hex`, from the table or not.
    #[test]
    fn pseudonym_is_prefix_and_hex() {
        let key = [3; 32];
        let long = vec![b'a'; RECENT_INPUT + 1];
        for v in [&b"alice"[..], &long] {
            for _ in 0..2 {
                let mut out = Vec::new();
                pseudonym(&key, b"login", v, LOGIN_PREFIX, &mut out);
                let hex = pseudonym_hex(&key, b"login", v);
                assert_eq!(out, [LOGIN_PREFIX, &hex[..]].concat());
                assert_eq!(hex, digest_hex(&key, b"login", v));
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Through the table, a pseudonym is always the digest's: over
        /// sequences of look-ups that repeat, collide in slots, differ
        /// only in the key, in the domain/value split (`a`+`b0` and `ab`+`0`
        /// hash different bytes; `a`+`0` twice is one), or in length.
        #[test]
        fn table_is_the_digest(
            lookups in proptest::collection::vec(
                (0..3u8, 0..4usize, proptest::collection::vec(any::<u8>().prop_map(|b| b % 4 + b'0'), 0..70)),
                1..200,
            ),
        ) {
            let domains: [&[u8]; 4] = [b"login", b"ipv4", b"log", b""];
            for (k, d, v) in lookups {
                let key = [k; 32];
                let domain = domains[d];
                prop_assert_eq!(
                    pseudonym_hex(&key, domain, &v),
                    digest_hex(&key, domain, &v),
                    "{:?} {:?} {:?}", k, domain, v
                );
            }
        }
    }

    /// The slot is FNV-1a's over `domain || 0 || value`, as when that
    /// input was assembled: every name keeps the slot it had.
    #[test]
    fn slot_is_fnv_of_the_input() {
        for (d, v) in [
            (&b"login"[..], &b"alice"[..]),
            (b"ipv4", &[203, 0, 113, 7]),
            (b"", b""),
            (b"x", b""),
        ] {
            let input = [d, &[0], v].concat();
            let fnv = input.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, &b| {
                (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
            });
            assert_eq!(
                recent_slot(d, v),
                fnv as usize % RECENT_SLOTS,
                "{d:?} {v:?}"
            );
        }
    }
}
