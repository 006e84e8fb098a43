//! The state of one scrub ([`Cx`]) and the rewrites every detector ends
//! in: the input, the output (allocated at the first rewrite), how far the
//! input is copied, and the one place where the policy (`policy`) and the
//! actions apply. Detectors (`login`, `programs`, `shadow`, `secrets`)
//! import this module and nothing of the driver (`scan`), which imports
//! them: no import circle.

use std::net::Ipv6Addr;

use super::everywhere;
use super::hash::{self, Keyring};
use super::{ipv4, ipv6, policy, Action, Addresses, Scrubber};

/// One rewrite, for `weir scrub --explain`: the span of the input, what
/// kind of item it held and the detector (rule) that found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rewrite {
    pub start: usize,
    pub end: usize,
    pub kind: &'static str,
    pub rule: &'static str,
}

/// `root@host.example`, `noreply@example.org` as a login value: the mailbox
/// of a system account or a role, not a person's.
pub(super) fn is_role_mailbox(sc: &Scrubber, v: &[u8]) -> bool {
    // A byte loop: values are short, and a call to memchr cost more.
    v.iter()
        .position(|&c| c == b'@')
        .is_some_and(|at| sc.is_system_account(&v[..at]))
}

/// The state of one scrub: the input, the output (once something changed),
/// and how far the input has been copied.
pub struct Cx<'a> {
    pub sc: &'a Scrubber,
    pub s: &'a [u8],
    timestamp_ns: i64,
    key: Option<[u8; 32]>,
    pub(super) out: Option<Vec<u8>>,
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
    /// Rewrites so far, when explaining (`weir scrub --explain`); `None`
    /// otherwise, so a scrub that is not explained logs nothing.
    pub(super) log: Option<Vec<Rewrite>>,
    /// The logins and e-mail addresses rewritten (for the sweep,
    /// `everywhere`), remembered as they are rewritten rather than read back
    /// from a rewrite log: the log is kept only when explaining. The
    /// caller's, borrowed: a pointer to set up per scrub, not a list to move
    /// in and out (which every clean line paid for).
    seen: &'a mut everywhere::Seen,
    /// Where the next `ip6.arpa` at or after some position is, once looked
    /// up: `Some(None)` when there is none.
    arpa: Option<Option<usize>>,
    /// `(from, at)`: the first token delimiter at or after `from` is at
    /// `at` (`s.len()` when none), once looked up (see [`Cx::next_delimiter`]).
    delimiter: Option<(usize, usize)>,
    /// Whether the text holds `-u` (curl's `-u`, `--user`), once looked up.
    curl: Option<bool>,
    /// The last value hashed (`start..end` of `s`), its hashing domain and
    /// its digits: a name repeated in one text (`a@x b@x` has no repeat,
    /// but a chain of `@` or a list of one user's sessions does) is hashed
    /// once, without the per-thread table's look-up.
    last_hash: Option<(usize, usize, &'static [u8], [u8; hash::HASH_HEX])>,
    /// `start..end` of `s`: the last login [`Cx::rewrite_login`] rewrote.
    /// The same name again (a chain of `@`, one user's sessions) needs
    /// none of the checks (they read only its bytes and the config) and
    /// is remembered for the sweep already: it costs a comparison.
    last_login: Option<(usize, usize)>,
    /// Whether a rewrite may have put a `(` right after a byte it did not
    /// follow in `s`: one written by a rewrite, or one of `s` right after
    /// a rewritten span. Every other `(` of the output follows the byte it
    /// follows in `s`, so the output holds a `WORD(` pair
    /// (`anchor::Pairs::paren`) only if `s` does or this is set: the
    /// program shapes then need not look for `(` in a rewritten text that
    /// had no such pair (see `Scrubber::pass`).
    pub(super) paren_made: bool,
}

impl<'a> Cx<'a> {
    pub fn finish(self) -> Option<Vec<u8>> {
        let mut out = self.out?;
        out.extend_from_slice(&self.s[self.copied..]);
        Some(out)
    }

    pub(super) fn rewrite_v4(&mut self, start: usize, end: usize, octets: [u8; 4], action: Action) {
        self.rewrite_v4_form(start, end, octets, action, ipv4::Form::Dotted);
    }

    /// The names rewritten are remembered in `seen`.
    pub fn new(
        sc: &'a Scrubber,
        s: &'a [u8],
        timestamp_ns: i64,
        seen: &'a mut everywhere::Seen,
    ) -> Cx<'a> {
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
            seen,
            arpa: None,
            delimiter: None,
            curl: None,
            last_hash: None,
            last_login: None,
            paren_made: false,
        }
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

    /// The first byte at or after `from` that ends a token in running text
    /// (whitespace, quotes, `,;()<>[]{}`), or `s.len()`. Remembered: the
    /// walk only goes forward, so each byte is looked at once per pass even
    /// in a line of `@` chains with no delimiter (hostile input).
    /// (The remembered answer is looked up inline, at every `@`; the
    /// search is not.)
    #[inline]
    pub fn next_delimiter(&mut self, from: usize) -> usize {
        if let Some((f, at)) = self.delimiter {
            if f <= from && from <= at {
                return at;
            }
        }
        self.find_delimiter(from)
    }

    #[inline(never)]
    fn find_delimiter(&mut self, from: usize) -> usize {
        let at = self.s[from..]
            .iter()
            .position(|&c| DELIMITER[usize::from(c)])
            .map_or(self.s.len(), |n| from + n);
        self.delimiter = Some((from, at));
        at
    }

    /// The position of the first `ip6.arpa` at or after `from`, looked up
    /// once per pass (the one-nibble words before it are many).
    pub fn next_arpa(&mut self, from: usize) -> Option<usize> {
        match self.arpa {
            Some(Some(at)) if at >= from => return Some(at),
            Some(None) => return None,
            _ => {}
        }
        let found = memchr::memmem::find(&self.s[from..], ipv6::ARPA).map(|n| from + n);
        self.arpa = Some(found);
        found
    }

    /// Whether curl's `-u user:password` may be in the text: every form of
    /// it (` -u `, ` --user `, ` --user=`) holds `-u`. One search per pass.
    pub fn curl_possible(&mut self) -> bool {
        static FINDER: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
            std::sync::LazyLock::new(|| memchr::memmem::Finder::new(b"-u"));
        let s = self.s;
        *self.curl.get_or_insert_with(|| FINDER.find(s).is_some())
    }

    /// Tells whether the text holds `-u`, found along with the anchors
    /// (`anchor::Pairs`), which saves [`Cx::curl_possible`] its search.
    pub fn curl_is(&mut self, possible: bool) {
        self.curl = Some(possible);
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
        // The only rewrite that may write a `(` is the mask token: the
        // others write pseudonyms (a prefix and hex digits) and addresses
        // (digits, hex, `.`, `:`, `-`). Searching what each wrote cost
        // ~70 instructions per rewrite.
        self.paren_made |= s.get(end) == Some(&b'(') || self.sc.mask_paren;
        self.copied = end;
    }

    /// Replaces `s[start..end]` with its pseudonym in hashing `domain`.
    fn replace_hashed(
        &mut self,
        start: usize,
        end: usize,
        domain: &'static [u8],
        prefix: &'static [u8],
    ) {
        let key = self.key();
        let v = &self.s[start..end];
        let hex = match self.last_hash {
            Some((a, b, d, hex))
                if everywhere::same_bytes(d, domain)
                    && everywhere::same_bytes(&self.s[a..b], v) =>
            {
                hex
            }
            _ => {
                let hex = hash::pseudonym_hex(&key, domain, v);
                self.last_hash = Some((start, end, domain, hex));
                hex
            }
        };
        // The prefix and the digits written at once: one copy, not two.
        let mut buf = [0u8; 16];
        let n = prefix.len() + hex.len();
        buf[..prefix.len()].copy_from_slice(prefix);
        buf[prefix.len()..n].copy_from_slice(&hex);
        self.replace_with(start, end, |out| out.extend_from_slice(&buf[..n]));
    }

    fn replace(&mut self, start: usize, end: usize, with: &[u8]) {
        self.replace_with(start, end, |out| out.extend_from_slice(with));
    }

    /// The `ipv4` action on an address written in another form.
    pub(super) fn rewrite_v4_as(
        &mut self,
        start: usize,
        end: usize,
        octets: [u8; 4],
        form: ipv4::Form,
    ) {
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
                let kept = ipv4::truncate(octets, sc.config.ipv4_prefix);
                // Its own truncation, written without leading zeros (the
                // text, digits and three separators, is as long as the
                // digits need): it stays as it is. Nearly every address of
                // a second pass, told without writing it out.
                if kept == octets && end - start == ipv4::written_len(octets) {
                    return;
                }
                let mut buf = [0u8; 15];
                let n = ipv4::format_as(kept, form, &mut buf);
                if everywhere::same_bytes(&buf[..n], &self.s[start..end]) {
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

    pub(super) fn rewrite_v6(&mut self, start: usize, end: usize, addr: Ipv6Addr) {
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
                let mut buf = [0u8; ipv6::MAX_LEN];
                let n = ipv6::format(ipv6::truncate(addr, sc.config.ipv6_prefix), &mut buf);
                // Its own truncation in canonical form (nearly every address
                // of a second pass): left as it is.
                if everywhere::same_bytes(&buf[..n], &self.s[start..end]) {
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

    /// The `ipv6` action on the nibbles `s[start..end]` of a reverse-DNS
    /// name (`ipv6::detect_arpa`: `n` nibbles, `addr` the address or prefix
    /// they write). Truncation zeroes the nibbles past the prefix in place,
    /// so the name keeps its form (and the case of the nibbles kept).
    pub(super) fn rewrite_v6_arpa(&mut self, start: usize, end: usize, addr: Ipv6Addr, n: usize) {
        let sc = self.sc;
        self.settle(end);
        self.kind = "ipv6";
        if sc.config.addresses == Addresses::Public && !policy::public_v6(addr) {
            return;
        }
        match sc.config.ipv6 {
            Action::Keep => return,
            Action::Truncate => {
                let kept = u128::from(ipv6::truncate(addr, sc.config.ipv6_prefix));
                let mut name = [0u8; 63];
                let name = &mut name[..end - start];
                name.copy_from_slice(&self.s[start..end]);
                for j in 0..n {
                    // Text nibble `j` is the address's `n - 1 - j`th from the top.
                    let v = (kept >> (4 * (32 - n + j))) as u8 & 0xf;
                    if ipv6::nibble(name[2 * j]) != v {
                        name[2 * j] = b"0123456789abcdef"[usize::from(v)];
                    }
                }
                if name[..] == self.s[start..end] {
                    return;
                }
                self.replace(start, end, name);
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
        let s = self.s;
        let v = &s[start..end];
        let again = self
            .last_login
            .is_some_and(|(a, b)| everywhere::same_bytes(&s[a..b], v));
        if !again
            && (v == b"-"
                || v == sc.config.mask_token.as_bytes()
                || hash::is_pseudonym(v)
                || sc.is_system_account(v)
                || is_role_mailbox(sc, v))
        {
            return;
        }
        self.kind = "login";
        match sc.config.logins {
            Action::Keep | Action::Truncate => return,
            Action::Hash => self.replace_hashed(start, end, b"login", hash::LOGIN_PREFIX),
            Action::Mask => self.replace(start, end, sc.config.mask_token.as_bytes()),
        }
        if !again {
            self.seen.remember(v);
            self.last_login = Some((start, end));
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
            Action::Hash => self.replace_hashed(start, end, b"secret", hash::SECRET_PREFIX),
            Action::Mask => self.replace(start, end, sc.config.mask_token.as_bytes()),
        }
        sc.counters.secrets.inc();
    }
}

/// [`token_delimiter`] as a table: [`Cx::find_delimiter`] tests every byte
/// of a token after an `@`.
static DELIMITER: [bool; 256] = {
    let mut t = [false; 256];
    let mut c = 0;
    while c < 256 {
        t[c] = token_delimiter(c as u8);
        c += 1;
    }
    t
};

/// Whether `c` ends a token in running text (see [`Cx::next_delimiter`]).
const fn token_delimiter(c: u8) -> bool {
    c.is_ascii_whitespace()
        || matches!(
            c,
            b'"' | b'\'' | b',' | b';' | b'(' | b')' | b'<' | b'>' | b'[' | b']' | b'{' | b'}'
        )
}
