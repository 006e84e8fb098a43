//! The one-pass driver: walks the bytes once, hands candidate positions to the
//! detectors, and copies into a new buffer only from the first rewrite on.
//!
//! Two walks with one meaning. The reference walk ([`Cx::step`] at every
//! position it lands on) visits each byte that can start nothing, and each
//! word (an ASCII alphanumeric run) at its start, which it then skips whole;
//! detectors are called there. [`run`] does exactly the same steps but only
//! near the anchors the prefilter finds (`anchor`): every detector needs an
//! anchor at or after its start, so between anchors every step would have
//! been a no-op. A test walks both ways over random log-like text and
//! compares the results.
//!
//! Detectors only look forward, or backward no further than the last
//! rewrite, so spans are rewritten in order and nothing is scanned twice
//! except in a failed candidate's short look-ahead.

use std::net::Ipv6Addr;

use super::anchor::{self, Anchors};
pub use super::cx::{Cx, Rewrite};
use super::everywhere::Seen;
use super::{ipv4, ipv6, login, programs, secrets, Scrubber};

const SKIP: u8 = 0;
const DIGIT: u8 = 1;
const HEX_LETTER: u8 = 2;
const LETTER: u8 = 3;
const COLON: u8 = 4;
const AT: u8 = 5;
const BRACKET: u8 = 6;
const SLASH: u8 = 7;
const PERCENT: u8 = 8;

static CLASS: [u8; 256] = {
    let mut t = [SKIP; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = match i as u8 {
            b'0'..=b'9' => DIGIT,
            b'a'..=b'f' | b'A'..=b'F' => HEX_LETTER,
            b'g'..=b'z' | b'G'..=b'Z' => LETTER,
            b':' => COLON,
            b'@' => AT,
            b'[' => BRACKET,
            b'/' => SLASH,
            b'%' => PERCENT,
            _ => SKIP,
        };
        i += 1;
    }
    t
};

/// Scrubs the text of `anchors` with the built-in detectors; `None` when
/// nothing changed, else the output and whether it may hold a `WORD(` pair
/// the text did not (`Cx::paren_made`). With `log`, every rewrite is
/// appended to it. The logins
/// and e-mail addresses rewritten are added to `seen`
/// (`everywhere::Seen::remember`). Inlined into its one caller (the pass): called
/// apart, the state of the walk was built and moved through memory, ~100
/// instructions more per clean line.
#[inline(always)]
pub fn run(
    sc: &Scrubber,
    anchors: &mut Anchors<'_>,
    timestamp_ns: i64,
    mut log: Option<&mut Vec<Rewrite>>,
    seen: &mut Seen,
) -> Option<(Vec<u8>, bool)> {
    let s = anchors.text();
    let mut cx = Cx::new(sc, s, timestamp_ns, seen);
    cx.log = log.as_deref_mut().map(std::mem::take);
    cx.curl_is(anchors.pairs().dash_u);
    let mut i = 0;
    while let Some(c) = anchors.next(i) {
        if !anchors.worth_a_look(c, &mut || cx.curl_possible()) {
            i = c + 1;
            continue;
        }
        let mut p = anchor::backup(s, c, i).max(i);
        while p <= c {
            p = cx.step(p);
        }
        i = p;
    }
    if let (Some(log), Some(mine)) = (log, cx.log.take()) {
        *log = mine;
    }
    // Nothing rewritten (most texts): no move of `cx` into `finish`.
    cx.out.as_ref()?;
    let paren_made = cx.paren_made;
    cx.finish().map(|out| (out, paren_made))
}

/// The reference walk: [`Cx::step`] everywhere, no prefilter.
#[cfg(test)]
pub fn run_every_position(sc: &Scrubber, s: &[u8], timestamp_ns: i64) -> Option<Vec<u8>> {
    let mut seen = Seen::new();
    let mut cx = Cx::new(sc, s, timestamp_ns, &mut seen);
    let mut i = 0;
    while i < s.len() {
        i = cx.step(i);
    }
    cx.finish()
}

/// End of the ASCII alphanumeric run starting at `i`.
#[inline]
pub fn word_end(s: &[u8], i: usize) -> usize {
    match s[i..]
        .iter()
        .position(|&c| CLASS[usize::from(c)] > LETTER || CLASS[usize::from(c)] == SKIP)
    {
        Some(n) => i + n,
        None => s.len(),
    }
}

/// The walk's steps: what starts at a position, and the detector for it.
impl Cx<'_> {
    /// One step of the walk at `i`: a detector for what starts there, or
    /// the next position (past a word, or the next byte).
    #[inline]
    pub fn step(&mut self, i: usize) -> usize {
        let class = CLASS[usize::from(self.s[i])];
        match class {
            SKIP => i + 1,
            COLON => self.colon(i),
            AT => {
                self.rule = "at_sign";
                login::at_sign(self, i).unwrap_or(i + 1)
            }
            BRACKET => {
                self.rule = "access_log";
                login::access_log_user(self, i).unwrap_or(i + 1)
            }
            SLASH => {
                self.rule = "home_dir";
                programs::home_dir(self, i).unwrap_or(i + 1)
            }
            PERCENT => {
                self.rule = "at_sign_encoded";
                login::encoded_at(self, i).unwrap_or(i + 1)
            }
            _ => self.word(i, class),
        }
    }

    /// A word starts at `i`: an address, a login key, or nothing.
    fn word(&mut self, i: usize, class: u8) -> usize {
        let s = self.s;
        let end = word_end(s, i);
        if class != LETTER {
            // Cheap shape checks first: a first IPv6 group is 1-4 hex digits
            // and a colon, a first octet 1-3 digits and a dot.
            let len = end - i;
            let next = s.get(end).copied();
            // `7.0.….2.ip6.arpa`: one nibble and a dot, `ip6.arpa` at most
            // 64 bytes on (32 nibbles and their dots).
            if len == 1 && next == Some(b'.') && self.next_arpa(i).is_some_and(|at| at - i <= 64) {
                self.rule = "ipv6_reverse_dns";
                if let Some(((addr, n), end)) = self.in_view(i, |v, at| {
                    ipv6::detect_arpa(v, at).map(|(a, n, end)| ((a, n), end))
                }) {
                    self.rewrite_v6_arpa(i, end, addr, n);
                    return end;
                }
            }
            if len <= 4 && next == Some(b':') && s[i..end].iter().all(u8::is_ascii_hexdigit) {
                self.rule = "ipv6";
                if let Some((addr, end)) = self.detect_v6(i) {
                    self.rewrite_v6(i, end, addr);
                    return end;
                }
            }
            if class == DIGIT
                && len <= 3
                && next == Some(b'.')
                && s[i..end].iter().all(u8::is_ascii_digit)
            {
                let keep_versions = self.sc.config.keep_versions;
                self.rule = "ipv4";
                if let Some((octets, end)) =
                    self.in_view(i, |v, at| ipv4::detect(v, at, keep_versions))
                {
                    if ipv4::reversed(s, end) {
                        let [a, b, c, d] = octets;
                        self.rewrite_v4_as(i, end, [d, c, b, a], ipv4::Form::Reversed);
                    } else {
                        self.rewrite_v4(i, end, octets, self.sc.config.ipv4);
                    }
                    return end;
                }
            }
            if class == DIGIT && len <= 3 && next == Some(b'-') {
                self.rule = "ipv4_in_host_name";
                if let Some((octets, end)) = self.in_view(i, ipv4::detect_dashed) {
                    self.rewrite_v4_as(i, end, octets, ipv4::Form::Dashed);
                    return end;
                }
            }
        }
        if class != DIGIT {
            if let Some(next) = login::at_word(self, i, end) {
                return next;
            }
        }
        end
    }

    fn detect_v6(&self, i: usize) -> Option<(Ipv6Addr, usize)> {
        self.in_view(i, |v, at| ipv6::detect(v, at).map(|f| (f.addr, f.end)))
    }

    /// Runs an address detector at `start` on a view in which the bytes
    /// before `start` are the *output* so far. A detector's look-behind (is
    /// this a word start? a version?) then sees what a second pass would see,
    /// which keeps scrubbing idempotent next to a rewrite. Detectors look at
    /// most 24 bytes back and 64 ahead; the view holds 32 and 96.
    fn in_view<T>(
        &self,
        start: usize,
        detect: impl FnOnce(&[u8], usize) -> Option<(T, usize)>,
    ) -> Option<(T, usize)> {
        const LEFT: usize = 32;
        const RIGHT: usize = 96;
        if start < self.copied {
            // Inside a span already rewritten: nothing starts there.
            return None;
        }
        let out = match &self.out {
            Some(out) if start < self.copied + LEFT => out,
            _ => return detect(self.s, start),
        };
        let mut buf = [0u8; LEFT + RIGHT];
        let mid = &self.s[self.copied..start];
        let from_out = (LEFT - mid.len()).min(out.len());
        let left = from_out + mid.len();
        buf[..from_out].copy_from_slice(&out[out.len() - from_out..]);
        buf[from_out..left].copy_from_slice(mid);
        let right = &self.s[start..(start + RIGHT).min(self.s.len())];
        buf[left..left + right.len()].copy_from_slice(right);
        let (t, end) = detect(&buf[..left + right.len()], left)?;
        Some((t, start + (end - left)))
    }

    /// `::` may start a compressed IPv6 address; `Login failed: ` is
    /// followed by Nextcloud's.
    fn colon(&mut self, i: usize) -> usize {
        let found = match self.s.get(i + 1) {
            Some(b':') => {
                self.rule = "ipv6";
                self.detect_v6(i).map(|(addr, end)| {
                    self.rewrite_v6(i, end, addr);
                    end
                })
            }
            Some(b' ') => {
                self.rule = "nextcloud";
                programs::nextcloud_login_failed(self, i)
            }
            _ => {
                self.rule = "curl_user";
                secrets::curl_user(self, i)
            }
        };
        found.unwrap_or(i + 1)
    }
}
