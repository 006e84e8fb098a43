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
use super::hash::{self, Keyring};
use super::{ipv4, ipv6, login, policy, programs, secrets, shadow, Action, Addresses, Scrubber};

const SKIP: u8 = 0;
const DIGIT: u8 = 1;
const HEX_LETTER: u8 = 2;
const LETTER: u8 = 3;
const COLON: u8 = 4;
const AT: u8 = 5;
const BRACKET: u8 = 6;
const SLASH: u8 = 7;
const PAREN: u8 = 8;
const QUOTE: u8 = 9;

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
            b'(' => PAREN,
            b'\'' | b'`' => QUOTE,
            _ => SKIP,
        };
        i += 1;
    }
    t
};

/// One rewrite, for `weir scrub --explain`: the span of the input, what
/// kind of item it held and the detector (rule) that found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rewrite {
    pub start: usize,
    pub end: usize,
    pub kind: &'static str,
    pub rule: &'static str,
}

/// Scrubs `s` with the built-in detectors; `None` when nothing changed.
/// With `log`, every rewrite is appended to it.
pub fn run(
    sc: &Scrubber,
    s: &[u8],
    timestamp_ns: i64,
    log: Option<&mut Vec<Rewrite>>,
) -> Option<Vec<u8>> {
    let mut cx = Cx::new(sc, s, timestamp_ns);
    cx.log = log.is_some().then(Vec::new);
    let mut anchors = Anchors::new(s);
    let mut i = 0;
    while let Some(c) = anchors.next(i) {
        if !anchor::worth_a_look(s, c) {
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
        log.extend(mine);
    }
    cx.finish()
}

/// The reference walk: [`Cx::step`] everywhere, no prefilter.
#[cfg(test)]
pub fn run_every_position(sc: &Scrubber, s: &[u8], timestamp_ns: i64) -> Option<Vec<u8>> {
    let mut cx = Cx::new(sc, s, timestamp_ns);
    let mut i = 0;
    while i < s.len() {
        i = cx.step(i);
    }
    cx.finish()
}

/// `root@host.example`, `noreply@example.org` as a login value: the mailbox
/// of a system account or a role, not a person's.
fn is_role_mailbox(sc: &Scrubber, v: &[u8]) -> bool {
    memchr::memchr(b'@', v).is_some_and(|at| sc.is_system_account(&v[..at]))
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

/// The state of one scrub: the input, the output (once something changed),
/// and how far the input has been copied.
pub struct Cx<'a> {
    pub sc: &'a Scrubber,
    pub s: &'a [u8],
    timestamp_ns: i64,
    key: Option<[u8; 32]>,
    out: Option<Vec<u8>>,
    /// `s[..copied]` is copied (or equal) to the output.
    pub copied: usize,
    /// End of the last item detected, rewritten or not: look-behinds (the
    /// local part of an e-mail, an access-log user) stop here, so an address
    /// left as it was is not read again as part of a name.
    settled: usize,
    /// The detector at work, named in `--explain` (set where it is entered).
    pub rule: &'static str,
    /// The kind of the item being rewritten.
    kind: &'static str,
    /// Rewrites so far, when explaining.
    log: Option<Vec<Rewrite>>,
}

impl<'a> Cx<'a> {
    pub fn new(sc: &'a Scrubber, s: &'a [u8], timestamp_ns: i64) -> Cx<'a> {
        Cx {
            sc,
            s,
            timestamp_ns,
            key: None,
            out: None,
            copied: 0,
            settled: 0,
            rule: "",
            kind: "",
            log: None,
        }
    }

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
            PAREN => {
                self.rule = "paren";
                programs::paren(self, i).unwrap_or(i + 1)
            }
            QUOTE => {
                self.rule = "shadow";
                shadow::quoted(self, i).unwrap_or(i + 1)
            }
            _ => self.word(i, class),
        }
    }

    pub fn finish(self) -> Option<Vec<u8>> {
        let mut out = self.out?;
        out.extend_from_slice(&self.s[self.copied..]);
        Some(out)
    }

    /// The byte `k` places before input position `pos` (`pos >= copied`) as
    /// the output has it: what a second pass would see there.
    pub fn out_byte_before(&self, pos: usize, k: usize) -> Option<u8> {
        debug_assert!(pos >= self.copied);
        let at = pos.checked_sub(k)?;
        if at >= self.copied {
            return Some(self.s[at]);
        }
        let out = self.out.as_ref()?;
        let back = self.copied - at;
        out.len().checked_sub(back).map(|i| out[i])
    }

    /// Where look-behinds must stop.
    pub fn floor(&self) -> usize {
        self.copied.max(self.settled)
    }

    /// Whether the input right before `pos` is the fixed phrase `lead`,
    /// wholly at or after [`Cx::floor`] (so the output holds it unchanged,
    /// as a second pass would read it), and not the end of a longer word
    /// (the byte before it is read from the output). The look-behind of the
    /// shapes that follow a phrase (`password changed for NAME`, `Login
    /// failed: NAME`, `add 'NAME'`, `new user: name=`).
    pub fn follows(&self, pos: usize, lead: &[u8]) -> bool {
        let Some(start) = pos.checked_sub(lead.len()) else {
            return false;
        };
        // Compared from the end, byte by byte: a phrase that is not there
        // nearly always differs within a byte or two, with no call to memcmp.
        let same = self.s[start..pos].iter().rev().eq(lead.iter().rev());
        start >= self.floor()
            && same
            && !self
                .out_byte_before(start, 1)
                .is_some_and(|b| b.is_ascii_alphanumeric())
    }

    /// Records that an item was detected up to `end`.
    pub fn settle(&mut self, end: usize) {
        self.settled = self.settled.max(end);
    }

    /// The hash key of this event's period, derived at most once per scrub.
    fn key(&mut self) -> [u8; 32] {
        let (keys, ts) = (&self.sc.keys, self.timestamp_ns);
        *self.key.get_or_insert_with(|| Keyring::key_for(keys, ts))
    }

    /// Replaces `s[start..end]` with what `f` appends.
    fn replace_with(&mut self, start: usize, end: usize, f: impl FnOnce(&mut Vec<u8>)) {
        debug_assert!(self.copied <= start && start <= end && end <= self.s.len());
        let s = self.s;
        if let Some(log) = &mut self.log {
            log.push(Rewrite {
                start,
                end,
                kind: self.kind,
                rule: self.rule,
            });
        }
        let out = self
            .out
            .get_or_insert_with(|| Vec::with_capacity(s.len() + 32));
        out.extend_from_slice(&s[self.copied..start]);
        f(out);
        self.copied = end;
    }

    fn replace(&mut self, start: usize, end: usize, with: &[u8]) {
        self.replace_with(start, end, |out| out.extend_from_slice(with));
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

    /// `::` may start a compressed IPv6 address; ` : ` may follow sudo's
    /// user; `Login failed: ` is followed by Nextcloud's.
    fn colon(&mut self, i: usize) -> usize {
        let found = match self.s.get(i + 1) {
            Some(b':') => {
                self.rule = "ipv6";
                self.detect_v6(i).map(|(addr, end)| {
                    self.rewrite_v6(i, end, addr);
                    end
                })
            }
            Some(b' ') if i > 0 && self.s[i - 1] == b' ' => {
                self.rule = "sudo";
                programs::sudo_user(self, i)
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

    fn rewrite_v4(&mut self, start: usize, end: usize, octets: [u8; 4], action: Action) {
        self.rewrite_v4_form(start, end, octets, action, ipv4::Form::Dotted);
    }

    /// The `ipv4` action on an address written in another form.
    fn rewrite_v4_as(&mut self, start: usize, end: usize, octets: [u8; 4], form: ipv4::Form) {
        self.rewrite_v4_form(start, end, octets, self.sc.config.ipv4, form);
    }

    fn rewrite_v4_form(
        &mut self,
        start: usize,
        end: usize,
        octets: [u8; 4],
        action: Action,
        form: ipv4::Form,
    ) {
        let sc = self.sc;
        self.settle(end);
        self.kind = "ipv4";
        if sc.config.addresses == Addresses::Public && !policy::public_v4(octets) {
            return;
        }
        match action {
            Action::Keep => return,
            Action::Truncate => {
                let mut buf = [0u8; 15];
                let n = ipv4::format_as(
                    ipv4::truncate(octets, sc.config.ipv4_prefix),
                    form,
                    &mut buf,
                );
                if buf[..n] == self.s[start..end] {
                    return;
                }
                self.replace(start, end, &buf[..n]);
            }
            Action::Hash => {
                let key = self.key();
                self.replace_with(start, end, |out| {
                    hash::pseudonym(&key, b"ipv4", &octets, hash::IPV4_PREFIX, out)
                });
            }
            Action::Mask => self.replace(start, end, sc.config.mask_token.as_bytes()),
        }
        sc.counters.ipv4.inc();
    }

    fn rewrite_v6(&mut self, start: usize, end: usize, addr: Ipv6Addr) {
        let sc = self.sc;
        self.settle(end);
        self.kind = "ipv6";
        if sc.config.addresses == Addresses::Public && !policy::public_v6(addr) {
            return;
        }
        if let Some(v4) = ipv6::mapped_v4(addr) {
            // An IPv4 client seen through a dual-stack socket: the IPv4 rules.
            if sc.config.ipv4 == Action::Truncate {
                let mut buf = *b"::ffff:xxx.xxx.xxx.xxx";
                let mut v4buf = [0u8; 15];
                let n = ipv4::format(ipv4::truncate(v4, sc.config.ipv4_prefix), &mut v4buf);
                buf[7..7 + n].copy_from_slice(&v4buf[..n]);
                if buf[..7 + n] != self.s[start..end] {
                    self.kind = "ipv4";
                    self.replace(start, end, &buf[..7 + n]);
                    sc.counters.ipv4.inc();
                }
            } else {
                self.rewrite_v4(start, end, v4, sc.config.ipv4);
            }
            return;
        }
        match sc.config.ipv6 {
            Action::Keep => return,
            Action::Truncate => {
                use std::io::Write as _;
                let mut buf = [0u8; 64];
                let addr = ipv6::truncate(addr, sc.config.ipv6_prefix);
                let room = buf.len();
                let mut w = &mut buf[..];
                // 64 bytes hold the longest form (45): the write cannot fail.
                let _ = write!(w, "{addr}");
                let n = room - w.len();
                if buf[..n] == self.s[start..end] {
                    return;
                }
                self.replace(start, end, &buf[..n]);
            }
            Action::Hash => {
                let key = self.key();
                let octets = addr.octets();
                self.replace_with(start, end, |out| {
                    hash::pseudonym(&key, b"ipv6", &octets, hash::IPV6_PREFIX, out)
                });
            }
            Action::Mask => self.replace(start, end, sc.config.mask_token.as_bytes()),
        }
        sc.counters.ipv6.inc();
    }

    /// Applies the login action to `s[start..end]`, unless it is empty,
    /// `-`, the mask token or a pseudonym already.
    pub fn rewrite_login(&mut self, start: usize, end: usize) {
        let sc = self.sc;
        if start < self.floor() || start >= end {
            return;
        }
        self.settle(end);
        let v = &self.s[start..end];
        if v == b"-"
            || v == sc.config.mask_token.as_bytes()
            || hash::is_pseudonym(v)
            || sc.is_system_account(v)
            || is_role_mailbox(sc, v)
        {
            return;
        }
        self.kind = "login";
        match sc.config.logins {
            Action::Keep | Action::Truncate => return,
            Action::Hash => {
                let key = self.key();
                self.replace_with(start, end, |out| {
                    hash::pseudonym(&key, b"login", v, hash::LOGIN_PREFIX, out)
                });
            }
            Action::Mask => self.replace(start, end, sc.config.mask_token.as_bytes()),
        }
        sc.counters.login.inc();
    }

    /// Applies the `secrets` action to a credential `s[start..end]`.
    pub fn rewrite_secret(&mut self, start: usize, end: usize) {
        let sc = self.sc;
        if start < self.copied || start >= end {
            return;
        }
        self.settle(end);
        let v = &self.s[start..end];
        if v == sc.config.mask_token.as_bytes() || hash::is_pseudonym(v) {
            return;
        }
        self.kind = "secrets";
        match sc.config.secrets {
            Action::Keep | Action::Truncate => return,
            Action::Hash => {
                let key = self.key();
                self.replace_with(start, end, |out| {
                    hash::pseudonym(&key, b"secret", v, hash::SECRET_PREFIX, out)
                });
            }
            Action::Mask => self.replace(start, end, sc.config.mask_token.as_bytes()),
        }
        sc.counters.secrets.inc();
    }
}
