//! Privacy scrubber: rewrites IP addresses and logins before the spool write.
//!
//! Every event from every source passes through [`Scrubber::scrub`] before it
//! is written to disk, so personal data never reaches the spool. With no
//! `[scrub]` section the defaults are private: IPv4 truncated to /24, IPv6 to
//! /48, logins hashed, the message and every field scrubbed. Turning privacy
//! off is explicit (`keep`).
//!
//! # Layout
//! One job per module; detectors import `cx` (the state and the rewrites)
//! and never the driver, so there is no import circle:
//! `scan` -> {`anchor`, `login`, `programs`, `shadow`, `secrets`} -> `cx`
//! -> {`policy`, `hash`, `ipv4`, `ipv6`, `everywhere`}.
//! - [`config`]: `[scrub]` keys, defaults and validation.
//! - [`policy`]: what is personal: public vs infrastructure addresses,
//!   system accounts (built-in, `/etc/passwd` UID < 1000, `keep_accounts`).
//! - `scan`: the one-pass driver; `anchor`: its byte-class prefilter.
//! - `cx`: the state of one scrub and the rewrites (where policy and actions
//!   apply).
//! - `ipv4`, `ipv6`: address detection, truncation (each module documents its
//!   boundaries).
//! - `login`: logins, user names, e-mail, URL userinfo, access-log users,
//!   LDAP DNs, handles; the `@` forms that are not mail.
//! - `programs`: the shapes a table row cannot say (`/home/NAME`,
//!   Nextcloud's typed login, ECS); `shadow`: useradd's `name=`.
//! - `shapes`: the table of program shapes (one row per shape, with a real
//!   example: sudo, su, cron, dovecot, shadow-utils, pam, ...), compiled
//!   into one Aho-Corasick matcher.
//! - `secrets`: credentials (kind `secrets`).
//! - `everywhere`: recognise once, replace everywhere in the event.
//! - `hash`: keyed BLAKE3 pseudonyms and the `scrub.key` file.
//! - `rules`: extra regex rules from the config.
//! - [`cli`]: `weir scrub [--explain]`.
//!
//! # Decisions
//! | input | becomes | why |
//! |---|---|---|
//! | `203.0.113.7:443`, `[203.0.113.7]`, `http://203.0.113.7/` | `203.0.113.0...` | only the address is rewritten; ports and syntax stay |
//! | `2001:db8:1:2::7`, `[2001:db8:1:2::7]:443` | `2001:db8:1::` | RFC 5952 form of the /48 |
//! | `127.0.0.1`, `[::1]:9090`, `10.0.0.3`, `fe80::1%eth0`, `fd00::5` | unchanged | the infrastructure's (`policy`); `addresses = "all"` rewrites them |
//! | `host-203-0-113-40.example.net`, `40.113.0.203.in-addr.arpa` | `host-203-0-113-0...`, `0.113.0.203...` | an address in a host name, rewritten in its form |
//! | `7.7.0.….8.b.d.0.1.0.0.2.ip6.arpa` | `0.0.0.….1.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa` | the nibbles past the prefix zeroed in place; zones shorter than the prefix stay |
//! | `jörg@bücher.example`, `a@xn--bcher-kva.example`, `vera%40example.org` | `u:3f9a2b1c5d` | internationalised and percent-encoded e-mail, whole |
//! | `password=x`, `Authorization: Basic x`, `curl -u a:x` | `...REDACTED` | credentials (`secrets`) |
//! | `::ffff:203.0.113.7` | `::ffff:203.0.113.0` | an IPv4 client on a dual-stack socket: the `ipv4` action |
//! | hash of an address | `ip4:3f9a2b1c5d`, `ip6:...` | hashes the binary address: every textual form of one address agrees |
//! | `user=alice`, `"user":"alice"`, `for alice from` | `u:3f9a2b1c5d` | see `login` for every shape |
//! | `https://alice:pw@host` | `https://u:...:REDACTED@host` | a password is masked, never hashed |
//! | `(to root) alice on pts/0`, `(alice) CMD (...)`, `add 'alice' to group 'sudo'` | `u:...` for each user; the group stays | su, cron and shadow-utils (rows of `shapes`) |
//! | `name=nginx`, `add 'milk' to cart`, `(to be continued) later on` | unchanged | `name=` is a login only in useradd's lines; the program shapes match whole |
//! | `12:34:56`, `20:17:03.644`, `2024-05-01T12:34:56Z` | unchanged | too few groups for IPv6, no dotted quad |
//! | `00:1a:2b:3c:4d:5e`, `00:11:22:33:44:55:66:77` | unchanged | 6 groups; 8 groups of 2 digits = EUI-64 |
//! | UUIDs, hex hashes, `1.5s`, `5.7.1` | unchanged | not colon groups, not four octets |
//! | `1.2.3.4.5`, `a1.2.3.4`, `1.2.3.999` | unchanged | not a word of exactly four octets |
//! | `version 1.2.3.4`, `v1.2.3.4`, `Chrome/120.0.0.0`, `Nextcloud 29.0.7.1` | unchanged | versions (`keep_versions`, default true) |
//! | `oid 2.5.4.3`, `SRCH attr=2.5.4.3`, `1.3.6.1.4.1.311 and 2.5.29.17` | unchanged | OIDs: first arc 0-2 on a line naming OIDs (`keep_versions`) |
//!
//! Idempotence: scrubbing twice equals scrubbing once. Truncated addresses
//! truncate to themselves; pseudonyms and the mask token (which may not
//! contain digits, `:`, `@`, `=` or quotes) are recognised and left alone;
//! look-behinds read the output so far, as a second pass would. That leaves
//! one way for a second pass to differ: a decision made on bytes *ahead*
//! that a later rewrite in the same pass changes. `7::.77Vak.@ms7.PP` with
//! `mask`: `7::` is no address while glued to `.77`, but `.77Vak.@ms7.PP`
//! is then masked as an e-mail, and in `7::.REDACTED` the `7::` stands
//! alone. So a text that changed is passed again until a pass changes
//! nothing (each pass only rewrites what no earlier one did, and in
//! practice the second finds nothing). The result is a fixed point of one
//! pass, so scrubbing it again borrows it unchanged. The cost is one extra
//! pass over the lines that had something rewritten; clean lines still take
//! one prefiltered scan. That extra pass skips the program shapes and the
//! extra rules when they would read the very text they left unchanged in
//! the pass before (nothing judged: a stage is a function of its input; see
//! `Scrubber::pass`).
//!
//! A text still changing after [`MAX_PASSES`] is replaced whole by the mask
//! token (counted as kind `unsettled`): that bounds the work on hostile
//! input, which can need a pass per link of a chain like
//! `a.@b1c@m.d@m.e@m...` (each e-mail look-behind stops at the previous
//! rewrite, so each pass unglues one more link; found by the fuzzer), and
//! keeps scrubbing idempotent with nothing personal left. No log line seen
//! needs more than two passes.
//!
//! Pseudonyms depend on the period of the event's timestamp when
//! `hash_rotation` is set, so a retried or replayed event gets the same one.
//!
//! Speed: one pass over the bytes with a class-table prefilter; the output
//! buffer is allocated at the first rewrite only, so an event with nothing
//! to scrub costs a scan and no allocation. Each thread remembers the
//! pseudonyms it made recently (`hash`): the same users and clients recur
//! line after line, and their keyed hash is most of what rewriting costs. Counters:
//! `weir_scrub_rewrites_total{kind,action}` (kind `ipv4`, `ipv6`, `login`,
//! `secrets`, `unsettled`, or a rule's name).

mod anchor;
pub mod cli;
pub mod config;
mod cx;
mod everywhere;
mod hash;
mod ipv4;
mod ipv6;
mod keygate;
mod login;
mod memo;
pub mod policy;
mod programs;
mod rules;
mod scan;
mod secrets;
mod shadow;
mod shapes;

#[cfg(test)]
pub(crate) mod tests;

use std::borrow::Cow;
use std::path::Path;

pub use config::{Action, Addresses, Config, RawConfig, RawRule, Rule};
pub use hash::KEY_FILE;
pub use memo::FieldMemo;

use crate::event::Event;
use crate::metrics::{labels, Counter, Metrics};

/// Passes over a text at most (see "Idempotence"): real log lines need two
/// at most; a text still changing after this many is masked whole.
pub const MAX_PASSES: usize = 8;

/// Why the scrubber could not start. None of these carries event data.
#[derive(Debug, thiserror::Error)]
pub enum ScrubError {
    #[error("scrub key {path}: {source} (check that the state directory exists and is writable by weir)")]
    Key {
        path: String,
        source: std::io::Error,
    },
    #[error("scrub key {path} is not 64 hex digits: restore it from a backup, or delete it to start new pseudonyms (old ones will no longer match)")]
    CorruptKey { path: String },
    #[error("scrub rule {name}: {reason}")]
    Rule { name: String, reason: String },
}

/// One rewrite as `weir scrub --explain` shows it. `start..end` are byte
/// offsets into the text as the stage that rewrote it read it: the
/// detectors of pass 1 read the input; the program shapes, the extra rules
/// and the sweep (`everywhere`) read what the stages before them wrote.
#[derive(Debug, Clone)]
pub struct Explained {
    pub pass: usize,
    pub start: usize,
    pub end: usize,
    /// `ipv4`, `ipv6`, `login`, `secrets`, `unsettled`, or a rule's name.
    pub kind: String,
    /// The detector that found it (see `weir scrub --explain`'s output).
    pub rule: String,
    /// The bytes rewritten.
    pub text: Vec<u8>,
}

/// Rewrite counters, one handle per kind (each kind has one action); in no
/// registry until [`Scrubber::counting_in`].
#[derive(Default)]
struct Counters {
    ipv4: Counter,
    ipv6: Counter,
    login: Counter,
    /// Credentials (every `secrets` shape, URL passwords included).
    secrets: Counter,
    /// Texts masked whole for not settling within [`MAX_PASSES`].
    unsettled: Counter,
}

/// The `weir_scrub_rewrites_total` series of `kind`.
fn rewrite_counter(registry: &Metrics, kind: &str, action: Action) -> Counter {
    registry.scrub_rewrites.with(labels::Rewrite {
        kind: kind.to_owned(),
        action: action.as_str().to_owned(),
    })
}

impl Counters {
    fn new(config: &Config, registry: &Metrics) -> Counters {
        let counter = |kind: &str, action: Action| rewrite_counter(registry, kind, action);
        Counters {
            ipv4: counter("ipv4", config.ipv4),
            ipv6: counter("ipv6", config.ipv6),
            login: counter("login", config.logins),
            secrets: counter("secrets", config.secrets),
            unsettled: counter("unsettled", Action::Mask),
        }
    }
}

/// Applies the configured rules to events. Shared by every source
/// (`Send + Sync`: no interior mutability beyond atomic counters).
pub struct Scrubber {
    config: Config,
    keys: hash::Keyring,
    /// System accounts, kept as written (see `policy`).
    accounts: policy::Accounts,
    /// The program shapes' table, compiled.
    shapes: shapes::Shapes,
    rules: Vec<rules::Compiled>,
    counters: Counters,
    all_fields: bool,
    /// Every detector `keep` and no rules: [`Scrubber::scrub`] returns at
    /// once instead of scanning text it cannot change.
    off: bool,
    /// Whether the mask token holds a `(` (see `Cx::paren_made`).
    mask_paren: bool,
}

impl Scrubber {
    /// Builds the scrubber, creating its hash key in `state_dir` at first
    /// start; the system accounts of this host's `/etc/passwd` are kept.
    pub fn new(config: &Config, state_dir: &Path) -> Result<Scrubber, ScrubError> {
        let key = hash::load_or_create_key(state_dir)?;
        Scrubber::with_passwd(config, key, host_passwd().as_deref())
    }

    /// Builds the scrubber with a given master key and only the built-in
    /// and configured accounts (tests, benchmarks, fuzzing: the same on any
    /// machine).
    pub fn with_key(config: &Config, key: [u8; 32]) -> Result<Scrubber, ScrubError> {
        Scrubber::with_passwd(config, key, None)
    }

    /// Builds the scrubber with a given key, keeping the system accounts
    /// (UID < 1000) of `passwd`, the text of an `/etc/passwd`.
    pub fn with_passwd(
        config: &Config,
        key: [u8; 32],
        passwd: Option<&str>,
    ) -> Result<Scrubber, ScrubError> {
        let rules = config
            .rules
            .iter()
            .map(rules::Compiled::new)
            .collect::<Result<Vec<_>, _>>()?;
        let rotation = config.hash_rotation.map(|d| d.get().as_secs());
        Ok(Scrubber {
            counters: Counters::default(),
            all_fields: config.fields.iter().any(|f| f == "*"),
            off: [config.ipv4, config.ipv6, config.logins, config.secrets] == [Action::Keep; 4]
                && rules.is_empty(),
            mask_paren: config.mask_token.contains('('),
            accounts: policy::Accounts::new(&config.keep_accounts, passwd),
            shapes: shapes::Shapes::new(),
            keys: hash::Keyring::new(key, rotation),
            rules,
            config: config.clone(),
        })
    }

    /// Counts rewrites in `registry` (until then, in a registry of its own).
    pub fn counting_in(mut self, registry: &Metrics) -> Scrubber {
        self.counters = Counters::new(&self.config, registry);
        for rule in &mut self.rules {
            rule.count_in(registry);
        }
        self
    }

    /// Whether scrubbing is off: every detector is `keep` and there are no
    /// extra rules, so [`Scrubber::scrub`] leaves every event as it is.
    pub fn is_off(&self) -> bool {
        self.off
    }

    /// Rewrites personal data in the message and chosen fields in place.
    /// A login or e-mail address recognised in any of them is then
    /// rewritten wherever else it stands in the event (`everywhere`).
    pub fn scrub(&self, event: &mut Event) {
        self.scrub_with(event, None)
    }

    /// [`Scrubber::scrub`], skipping the scan of fields `memo` knows to be
    /// clean and remembering those found clean (see [`FieldMemo`]); the
    /// result is the same as [`Scrubber::scrub`]'s.
    pub fn scrub_with(&self, event: &mut Event, mut memo: Option<&mut FieldMemo>) {
        if self.off {
            return;
        }
        let ts = event.timestamp_ns;
        let mut seen = everywhere::Seen::new();
        if let Cow::Owned(m) = self.scrub_text_full(&event.message, ts, None, &mut seen) {
            event.message = m;
        }
        let in_scope = |name: &str| self.all_fields || self.config.fields.iter().any(|f| f == name);
        for (k, (name, value)) in event.fields.iter_mut().enumerate() {
            if !in_scope(name) || memo.as_ref().is_some_and(|m| m.is_clean(k, name, value)) {
                continue;
            }
            let names_before = seen.len();
            let scrubbed = if login::field_is_login(name) {
                self.scrub_login_value(value.as_bytes(), ts, &mut seen)
            } else if self.clean_at_a_glance(value.as_bytes()) {
                Cow::Borrowed(value.as_bytes())
            } else {
                self.scrub_text_full(value.as_bytes(), ts, None, &mut seen)
            };
            match scrubbed {
                Cow::Owned(v) => *value = into_string(v),
                Cow::Borrowed(_) if seen.len() == names_before => {
                    if let Some(memo) = memo.as_deref_mut() {
                        memo.found_clean(name, value);
                    }
                }
                Cow::Borrowed(_) => {}
            }
        }
        // The names of one text are swept there already; sweep every text
        // with all of them.
        if seen.is_empty() || event.fields.is_empty() {
            return;
        }
        // Nearly always a name stands only where it was recognised (and
        // rewritten). A look for each name in each text longer than it
        // (most fields are shorter) tells which names may occur anywhere:
        // only those are swept for, since a name that cannot occur in a
        // text gives no hit in its sweep (`everywhere::may_occur`); and
        // when none may, neither their pseudonyms and searchers (~1,800
        // instructions a name) nor the sweeps are needed.
        const _: () = assert!(everywhere::MAX_NAMES <= 32);
        let mut live = 0u32;
        let texts = std::iter::once(event.message.as_slice()).chain(
            event
                .fields
                .iter()
                .filter(|(name, _)| in_scope(name))
                .map(|(_, value)| value.as_bytes()),
        );
        for text in texts {
            for (k, name) in seen.names_from(0).enumerate() {
                if live & 1 << k == 0
                    && text.len() >= name.len()
                    && everywhere::may_occur(text, name)
                {
                    live |= 1 << k;
                }
            }
        }
        if live == 0 {
            return;
        }
        let swept = seen
            .names_from(0)
            .enumerate()
            .filter(|&(k, _)| live & 1 << k != 0)
            .map(|(_, name)| name);
        let names = self.sweep_names(swept, ts);
        let mut spans = Vec::new();
        if let Some(m) = everywhere::sweep(&event.message, &names, &mut spans) {
            event.message = m;
        }
        for (name, value) in &mut event.fields {
            if in_scope(name) {
                if let Some(v) = everywhere::sweep(value.as_bytes(), &names, &mut spans) {
                    *value = into_string(v);
                }
            }
        }
        self.counters.login.add(spans.len() as u64);
    }

    /// Whether `text` certainly scrubs to itself and recognises no name,
    /// told without the passes: no extra rules, no anchor for the
    /// detectors (`anchor`: none can start), no key of a program shape
    /// (`shapes`) and no private-key header. For an event's short fields
    /// (a pid, a command, a stream, a tag), where the passes' fixed costs
    /// were most of the work and values change too often for the memo.
    fn clean_at_a_glance(&self, text: &[u8]) -> bool {
        if !self.rules.is_empty() {
            return false;
        }
        let mut anchors = anchor::Anchors::new(text);
        let pairs = anchors.pairs();
        anchors.none() && !pairs.pem && !self.shapes.may_match(text, pairs.paren)
    }

    /// What each recognised name is rewritten to, for the sweep.
    fn sweep_names<'s>(
        &self,
        seen: impl Iterator<Item = &'s [u8]>,
        timestamp_ns: i64,
    ) -> Vec<everywhere::Name> {
        let mut names: Vec<everywhere::Name> = Vec::new();
        let key = self.keys.key_for(timestamp_ns);
        for from in seen {
            if names.iter().any(|n| n.from == from) {
                continue;
            }
            if names.len() == everywhere::MAX_NAMES {
                break;
            }
            let mut to = Vec::new();
            match self.config.logins {
                Action::Hash => hash::pseudonym(&key, b"login", from, hash::LOGIN_PREFIX, &mut to),
                Action::Mask => to.extend_from_slice(self.mask_token()),
                Action::Keep | Action::Truncate => continue,
            }
            names.push(everywhere::Name::new(from.to_vec(), to));
        }
        names
    }

    /// Scrubs free text: built-in detectors in one pass, then the extra rules,
    /// again on the result until nothing changes (see "Idempotence" above).
    /// Borrowed when nothing changed. Valid UTF-8 in gives valid UTF-8 out.
    pub fn scrub_text<'a>(&self, text: &'a [u8], timestamp_ns: i64) -> Cow<'a, [u8]> {
        self.scrub_text_full(text, timestamp_ns, None, &mut everywhere::Seen::new())
    }

    /// [`Scrubber::scrub_text`], telling every rewrite: its span, kind and
    /// rule (`weir scrub --explain`).
    pub fn explain_text(&self, text: &[u8], timestamp_ns: i64) -> (Vec<u8>, Vec<Explained>) {
        let mut log = Vec::new();
        let out = self
            .scrub_text_full(
                text,
                timestamp_ns,
                Some(&mut log),
                &mut everywhere::Seen::new(),
            )
            .into_owned();
        (out, log)
    }

    /// Scrubs `text` to a fixed point; the logins and e-mail addresses
    /// recognised (worth sweeping for elsewhere) are added to `seen`.
    fn scrub_text_full<'a>(
        &self,
        text: &'a [u8],
        timestamp_ns: i64,
        mut log: Option<&mut Vec<Explained>>,
        seen: &mut everywhere::Seen,
    ) -> Cow<'a, [u8]> {
        let (out, mut settled) = self.pass(text, timestamp_ns, 1, false, log.as_deref_mut(), seen);
        let Some(mut cur) = out else {
            return Cow::Borrowed(text);
        };
        for n in 2..=MAX_PASSES {
            let (out, tail) = self.pass(&cur, timestamp_ns, n, settled, log.as_deref_mut(), seen);
            match out {
                Some(next) if next != cur => (cur, settled) = (next, tail),
                _ => return Cow::Owned(cur),
            }
        }
        // No fixed point within the cap: only hostile input gets here.
        self.counters.unsettled.inc();
        if let Some(log) = log {
            log.push(Explained {
                pass: MAX_PASSES,
                start: 0,
                end: cur.len(),
                kind: "unsettled".into(),
                rule: "unsettled".into(),
                text: cur.clone(),
            });
        }
        Cow::Owned(self.mask_token().to_vec())
    }

    /// One pass: private-key blocks, the built-in detectors, the program
    /// shapes, the extra rules, then the sweep for the names recognised
    /// (`everywhere`); `None` when nothing changed. Pass `n` is logged as
    /// such.
    ///
    /// Also returns whether the stages after the detectors (shapes, rules,
    /// sweep) changed nothing: then they read exactly the text this pass
    /// returns and left it as it was. `settled` is that answer from the
    /// pass that made `text`: when the private-key and detector stages
    /// leave `text` as it is too, the shapes and rules would read the same
    /// text again and, being functions of it, leave it again, so they are
    /// not run. This is what makes a verifying pass cheaper without judging
    /// anything: a stage is skipped only on the very input it already
    /// passed. (The sweep needs no such care: it runs only for names the
    /// detectors rewrote in this pass, and they rewrote nothing.)
    fn pass(
        &self,
        text: &[u8],
        timestamp_ns: i64,
        n: usize,
        settled: bool,
        mut log: Option<&mut Vec<Explained>>,
        seen: &mut everywhere::Seen,
    ) -> (Option<Vec<u8>>, bool) {
        let mut cur = Cow::Borrowed(text);
        let explaining = log.is_some();
        let mut note = |stage: &[u8], start: usize, end: usize, kind: &str, rule: &str| {
            if let Some(log) = log.as_deref_mut() {
                log.push(Explained {
                    pass: n,
                    start,
                    end,
                    kind: kind.into(),
                    rule: rule.into(),
                    text: stage[start..end].to_vec(),
                });
            }
        };
        // One pass over the bytes finds the walk's anchors and tells which
        // rare pairs the text holds, for the stages that search for them;
        // a stage that reads a rewritten text finds its own.
        let mut anchors = anchor::Anchors::new(text);
        let pairs = anchors.pairs();
        if self.config.secrets != Action::Keep && pairs.pem {
            if let Some(v) = secrets::pem_blocks(text, self.mask_token()) {
                self.counters.secrets.inc();
                note(text, 0, text.len(), "secrets", "pem_private_key");
                cur = Cow::Owned(v);
            }
        }
        let mut fresh;
        let anchors = match &cur {
            Cow::Borrowed(_) => &mut anchors,
            Cow::Owned(v) => {
                fresh = anchor::Anchors::new(v);
                &mut fresh
            }
        };
        // The detectors remember the names they rewrite themselves; their
        // rewrite log is only built to be explained.
        let mut found = Vec::new();
        let first_seen = seen.len();
        // Whether `cur` may hold a `(` after a call-word byte (for the
        // program shapes' `WORD(` rows): the text the detectors read
        // holds one, or a rewrite may have made one (`Cx::paren_made`).
        let mut paren = anchors.pairs().paren;
        if let Some((v, paren_made)) = scan::run(
            self,
            anchors,
            timestamp_ns,
            explaining.then_some(&mut found),
            seen,
        ) {
            for r in &found {
                note(&cur, r.start, r.end, r.kind, r.rule);
            }
            paren |= paren_made;
            cur = Cow::Owned(v);
        }
        debug_assert!(
            paren || !anchor::Anchors::new(&cur).pairs().paren,
            "a `WORD(` pair the detectors' output holds was not told"
        );
        if settled && matches!(cur, Cow::Borrowed(_)) {
            // Debug builds (tests, the fuzzer) check the skip.
            #[cfg(debug_assertions)]
            assert!(
                !self.tail_rewrites(text, pairs.paren, timestamp_ns),
                "a settled text changed in the shapes or rules"
            );
            return (None, true);
        }
        // Whether a stage after the detectors rewrote something.
        let mut tail_changed = false;
        if self.config.logins != Action::Keep {
            if let Some(v) = self.apply_shapes(&cur, paren, timestamp_ns, &mut note, seen) {
                tail_changed = true;
                cur = Cow::Owned(v);
            }
        }
        for rule in &self.rules {
            let mut spans = Vec::new();
            if let Some(v) = rule.apply(
                &cur,
                &self.keys,
                timestamp_ns,
                self.config.mask_token.as_bytes(),
                Some(&mut spans),
            ) {
                for &(a, b) in &spans {
                    note(&cur, a, b, rule.name(), rule.name());
                }
                tail_changed = true;
                cur = Cow::Owned(v);
            }
        }
        // Nearly always the one occurrence of a name was the one rewritten:
        // then the names' pseudonyms and the sweep are not needed.
        if seen
            .names_from(first_seen)
            .any(|n| everywhere::may_occur(&cur, n))
        {
            let names = self.sweep_names(seen.names_from(first_seen), timestamp_ns);
            let mut spans = Vec::new();
            if let Some(v) = everywhere::sweep(&cur, &names, &mut spans) {
                if explaining {
                    for &(a, b) in &spans {
                        note(&cur, a, b, "login", "everywhere");
                    }
                }
                self.counters.login.add(spans.len() as u64);
                tail_changed = true;
                cur = Cow::Owned(v);
            }
        }
        match cur {
            Cow::Owned(v) => (Some(v), !tail_changed),
            Cow::Borrowed(_) => (None, true),
        }
    }

    /// Whether the program shapes or the extra rules rewrite `text` (the
    /// check behind a skipped stage in debug builds; see `pass`).
    #[cfg(debug_assertions)]
    fn tail_rewrites(&self, text: &[u8], paren: bool, timestamp_ns: i64) -> bool {
        let mut scratch = everywhere::Seen::new();
        let mut quiet = |_: &[u8], _: usize, _: usize, _: &str, _: &str| {};
        (self.config.logins != Action::Keep
            && self
                .apply_shapes(text, paren, timestamp_ns, &mut quiet, &mut scratch)
                .is_some())
            || self.rules.iter().any(|rule| {
                rule.apply(text, &self.keys, timestamp_ns, self.mask_token(), None)
                    .is_some()
            })
    }

    /// The program shapes (`shapes`): rewrites their name slots with the
    /// `logins` action; `None` when nothing changed. `paren`: whether `s`
    /// may hold a `(` (see `Shapes::find`).
    fn apply_shapes(
        &self,
        s: &[u8],
        paren: bool,
        timestamp_ns: i64,
        note: &mut impl FnMut(&[u8], usize, usize, &str, &str),
        seen: &mut everywhere::Seen,
    ) -> Option<Vec<u8>> {
        let found = self.shapes.find(s, paren);
        let mut out: Option<Vec<u8>> = None;
        let mut copied = 0;
        let mut key = None;
        for (a, b, program) in found {
            let v = &s[a..b];
            // What `Cx::rewrite_login` keeps, the detectors' rewrites.
            if v == b"-"
                || hash::is_pseudonym(v)
                || memchr::memmem::find(v, self.mask_token()).is_some()
                || self.is_system_account(v)
                || cx::is_role_mailbox(self, v)
            {
                continue;
            }
            note(s, a, b, "login", program);
            seen.remember(v);
            let buf = out.get_or_insert_with(|| Vec::with_capacity(s.len() + 16));
            buf.extend_from_slice(&s[copied..a]);
            match self.config.logins {
                Action::Hash => {
                    let key = key.get_or_insert_with(|| self.keys.key_for(timestamp_ns));
                    hash::pseudonym(key, b"login", v, hash::LOGIN_PREFIX, buf);
                }
                _ => buf.extend_from_slice(self.mask_token()),
            }
            copied = b;
            self.counters.login.inc();
        }
        let mut buf = out?;
        buf.extend_from_slice(&s[copied..]);
        Some(buf)
    }

    /// A field that is a login as a whole (`REMOTE_USER=alice`).
    fn scrub_login_value<'a>(
        &self,
        value: &'a [u8],
        timestamp_ns: i64,
        seen: &mut everywhere::Seen,
    ) -> Cow<'a, [u8]> {
        // The rewrite remembers the value in `seen` (`Cx::rewrite_login`).
        let mut cx = scan::Cx::new(self, value, timestamp_ns, seen);
        cx.rewrite_login(0, value.len());
        match cx.finish() {
            Some(v) => Cow::Owned(v),
            None => Cow::Borrowed(value),
        }
    }

    fn mask_token(&self) -> &[u8] {
        self.config.mask_token.as_bytes()
    }

    /// Whether `name` is a system account, kept as written.
    fn is_system_account(&self, name: &[u8]) -> bool {
        self.accounts.contains(name)
    }

    /// Names of the extra rules, in order (for `weir status` and tests).
    pub fn rule_names(&self) -> impl Iterator<Item = &str> {
        self.rules.iter().map(|r| r.name())
    }
}

/// This host's `/etc/passwd`, if readable (its system accounts are kept).
fn host_passwd() -> Option<String> {
    std::fs::read_to_string("/etc/passwd").ok()
}

/// Every rewrite replaces whole characters with ASCII or the (UTF-8) mask
/// token, so this cannot fail; stay total anyway.
fn into_string(v: Vec<u8>) -> String {
    String::from_utf8(v).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}
