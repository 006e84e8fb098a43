//! Logins and user names in their common shapes.
//!
//! | shape | example | rewritten |
//! |---|---|---|
//! | key=value, key: value | `user=alice`, `sasl_username=a@b.org`, `login: alice` | the value |
//! | JSON / quoted key | `"user":"alice"`, `"ClientUsername": "bob"`, `{\"user\":\"x\"}` | the string |
//! | `user NAME` | `Invalid user bob from`, `session opened for user alice(uid=0)`, `user 'alice'` | NAME |
//! | `user NAME: ` | Apache's `AH01617: user alice: authentication failure for "/"` | NAME |
//! | `for NAME from` | `Accepted publickey for alice from 203.0.113.7` | NAME |
//! | `for NAME` after a phrase | pam_unix's `password changed for alice`, chage's `changed password expiry for alice` | NAME |
//! | `name=` after useradd's phrases | `new user: name=alice, UID=1001` (see `shadow`) | the value |
//! | e-mail | `from=<alice@example.com>` | the whole address |
//! | URL userinfo | `https://alice:s3cret@host/` | the user; the password is masked |
//! | access log | `203.0.113.7 - alice [10/Oct/2000:13:55:36 -0700] "GET ...` | ident and user |
//!
//! Keys (any case): `user`, `username`, `login`, `logname`, `email`, `ruser`,
//! `uname` (Grafana's context logger),
//! `user.name` / `user_name` / `user-name`, and camel-case or `_`/`-`-joined
//! words ending in one of them (`ClientUsername`, `remoteUser`,
//! `sasl_username`, `X-Remote-User`). Not keys: `user_id`, `userAgent`,
//! `user-agent`, `superuser`, `uid`, `userId` (numbers, not names), `name`
//! (`name=nginx` names a container; see `shadow` for the exceptions).
//!
//! Values: a string quoted with `"`, `'` or `<>` (dovecot's `user=<alice>`),
//! or a bare run of letters, digits, `. _ - $ \ @`
//! and non-ASCII bytes (so `josé` goes whole). Never rewritten: `-`, empty,
//! `null`/`nil`/`none`/`true`/`false`/`undefined`, the mask token, a
//! pseudonym. After `user ` (space, no `=`), a common English word is prose,
//! not a name (`user logged in`, `user not found`). There a bare value may
//! end in `: ` (`user alice: authentication failure`): elsewhere `NAME:` is
//! a label (`Login: user=<alice>`), and `user root:root` (no space) is still
//! refused. The trade-off is prose such as `user profile: updated`: the
//! prose list holds the nouns that usually make such labels (`settings`,
//! `profile`, `config`, `status`, ...), and systemd's `User Manager`, `User
//! Runtime Directory` and `User Slice`; another noun there is hashed.
//!
//! An e-mail needs a dotted domain ending in a 2+ letter label, and is
//! rewritten whole. `NAME@HOST` with a one-label host starting with a letter
//! (`alice@server`, `root@web-1`: ssh and shell prompts) is a login at a
//! machine: the name is rewritten, the host kept. Not logins: `npm@8.1.0`
//! (a version), `image@sha256:...` (a digest), `getty@tty1.service` (a
//! systemd unit: the last label is a unit type), `@scope/pkg`.
//!
//! `for NAME` without ` from` needs the phrase right before `for`, and a
//! NAME that is neither prose nor a key (`password changed for the first
//! time`; `... for user bob` is left to the `user NAME` shape).
//!
//! `user NAME` needs the bare key `user`; `user.name` and friends take `=`
//! or `:` only. `pop3-login: Disconnected` is dovecot's process label, not a
//! `login:` key.

use super::cx::Cx;
use super::{hash, programs, secrets, shadow};

#[cfg(test)]
pub(super) mod reference;

/// Whether `word` is a login key; `Some(true)` when it may be followed by a
/// bare name after a space (`user alice`).
#[inline]
fn login_key(word: &[u8]) -> Option<bool> {
    // Every key ends in `user`, `name`, `ogin`, `mail` or `ount` (any
    // case): one 4-byte compare turns nearly every word away, and tells
    // which few keys the word may be.
    let tail: [u8; 4] = word.get(word.len().checked_sub(4)?..)?.try_into().ok()?;
    let tail = (u32::from_le_bytes(tail) | 0x2020_2020).to_le_bytes();
    let is = |k: &[u8]| same_letters(word, k);
    // camelCase: `ClientUsername`, `remoteUser`, `userEmail`.
    let camel = |k: &[u8]| {
        word.len() > k.len() && {
            let cut = word.len() - k.len();
            word[cut].is_ascii_uppercase()
                && word[cut - 1].is_ascii_lowercase()
                && same_letters(&word[cut..], k)
        }
    };
    match &tail {
        b"user" if word.len() == 4 => Some(true),
        b"user" => (is(b"ruser") || camel(b"user")).then_some(false),
        b"name" => (is(b"username") || is(b"logname") || is(b"uname") || camel(b"username"))
            .then_some(false),
        b"ogin" => (is(b"login") || camel(b"login")).then_some(false),
        b"mail" => (is(b"email") || camel(b"email")).then_some(false),
        b"ount" => is(b"account").then_some(false),
        _ => None,
    }
}

/// `v.eq_ignore_ascii_case(k)` for a `k` of lower-case letters, inline (the
/// library's goes out of line to compare in chunks).
#[inline]
fn same_letters(v: &[u8], k: &[u8]) -> bool {
    v.len() == k.len() && v.iter().zip(k).all(|(&c, &l)| c | 0x20 == l)
}

/// Whether a field's name says its whole value is a login
/// (`USER`, `REMOTE_USER`, `user.name`, `ClientUsername`, `email`, ...).
pub fn field_is_login(name: &str) -> bool {
    let name = name.as_bytes();
    let name = name.strip_suffix(b".name").unwrap_or(name);
    let name = name.strip_suffix(b"_name").unwrap_or(name);
    let name = name.strip_suffix(b"_NAME").unwrap_or(name);
    let last = name
        .rsplit(|&c| matches!(c, b'_' | b'-' | b'.'))
        .next()
        .unwrap_or(name);
    login_key(last).is_some()
}

/// Values that name nobody: `-`, `--`, `null`, `nil`, `none`, `true`,
/// `false`, `undefined` (any case), and `LOGIN`, which login(1) has pam_unix
/// write as `logname=LOGIN` before anyone logged in; or empty. Told by the
/// length first: this runs at every login value (a test compares it with
/// the list).
fn not_a_name(v: &[u8]) -> bool {
    let is = |n: &[u8]| v.eq_ignore_ascii_case(n);
    match v.len() {
        0 => true,
        1 => v == b"-",
        2 => v == b"--",
        3 => is(b"nil"),
        4 => is(b"null") || is(b"none") || is(b"true"),
        5 => is(b"login") || is(b"false"),
        9 => is(b"undefined"),
        _ => false,
    }
}

/// English words that follow `user ` in prose rather than a name: function
/// words, verbs, and the nouns that make `user NAME: ` a label (`user
/// settings: saved`) or name systemd's per-user units (`Started User
/// Manager for UID 1000`, `User Runtime Directory`, `User Slice`); and the
/// SQL clause words that follow a table named `user` (`FROM user WHERE`).
const PROSE: &[&[u8]] = &[
    b"a",
    b"account",
    b"accounts",
    b"added",
    b"agent",
    b"already",
    b"an",
    b"and",
    b"as",
    b"at",
    b"authenticated",
    // Minecraft's `[User Authenticator #1/INFO]` thread.
    b"authenticator",
    b"by",
    b"can",
    b"cannot",
    b"changed",
    b"config",
    b"configuration",
    b"count",
    b"created",
    b"credentials",
    b"data",
    b"database",
    b"deleted",
    b"details",
    b"did",
    b"does",
    b"error",
    b"exists",
    b"for",
    b"found",
    b"from",
    b"group",
    b"had",
    b"has",
    b"id",
    b"if",
    b"in",
    b"info",
    b"inner",
    b"input",
    b"is",
    b"join",
    b"left",
    b"limit",
    b"list",
    b"logged",
    b"login",
    b"logout",
    b"manager",
    b"may",
    b"mode",
    b"must",
    b"name",
    b"names",
    b"not",
    b"of",
    b"on",
    b"or",
    b"order",
    b"permissions",
    b"preferences",
    b"profile",
    b"record",
    b"removed",
    b"request",
    b"returning",
    b"role",
    b"roles",
    b"runtime",
    b"session",
    b"sessions",
    b"set",
    b"settings",
    b"should",
    b"slice",
    b"status",
    b"successfully",
    b"system",
    b"that",
    b"the",
    b"this",
    b"to",
    b"token",
    b"type",
    b"union",
    b"unknown",
    b"updated",
    b"using",
    b"values",
    b"was",
    b"where",
    b"which",
    b"who",
    b"will",
    b"with",
    b"would",
];

/// Whether `v` is one of [`PROSE`], in any case: its key ([`prose_key`])
/// is looked up in [`PROSE_SLOTS`], one slot and one compare. This runs
/// at every `user NAME` (`user agent:` in many Docker lines): comparing
/// with each word cost more than the rest of the shape, a binary search
/// over the words (a byte loop per step) ~280 instructions on `user
/// agent:`, one over the keys ~130 (7 steps of two-word compares and
/// branches), this ~60.
fn is_prose(v: &[u8]) -> bool {
    prose_key(v).is_some_and(|k| {
        let i = PROSE_SLOTS[prose_slot(k)];
        i != NO_WORD && PROSE_KEYS[usize::from(i)] == k
    })
}

/// The slot of the key `k` in [`PROSE_SLOTS`]: its two halves folded,
/// then multiplicative hashing (the top 9 bits of the product).
#[inline(always)]
const fn prose_slot(k: u128) -> usize {
    let folded = (k >> 64) as u64 ^ k as u64;
    (folded.wrapping_mul(PROSE_MUL) >> (64 - 9)) as usize
}

/// A multiplier that gives each word of [`PROSE`] a slot of its own (found
/// by trying random odd ones; the table's build checks it). A word added
/// to [`PROSE`] may need another: the build says so.
const PROSE_MUL: u64 = 0x5d3c_2e5e_70f6_5057;

/// A slot no word of [`PROSE`] hashes to.
const NO_WORD: u8 = u8::MAX;

/// For each slot ([`prose_slot`]), the index in [`PROSE`] of the word
/// whose key goes there, or [`NO_WORD`]: a perfect hash table, made (and
/// checked to be perfect) at compile time.
static PROSE_SLOTS: [u8; 512] = {
    assert!(PROSE.len() < NO_WORD as usize);
    let mut slots = [NO_WORD; 512];
    let mut k = 0;
    while k < PROSE.len() {
        let slot = prose_slot(PROSE_KEYS[k]);
        assert!(
            slots[slot] == NO_WORD,
            "PROSE_MUL puts two words of PROSE in one slot: pick another"
        );
        slots[slot] = k as u8;
        k += 1;
    }
    slots
};

/// `v` lower-cased and packed into a `u128`, first byte highest, zeros
/// after it: two words compare as their keys do (a word's bytes are
/// letters, never 0). `None` when `v` is empty, longer than any word of
/// [`PROSE`] or holds a byte that is no ASCII letter (no word does).
#[inline]
fn prose_key(v: &[u8]) -> Option<u128> {
    if v.is_empty() || v.len() > PROSE_LONGEST {
        return None;
    }
    let mut key = 0u128;
    for &c in v {
        if !c.is_ascii_alphabetic() {
            return None;
        }
        key = key << 8 | u128::from(c | 0x20);
    }
    Some(key << (8 * (16 - v.len())))
}

/// The keys ([`prose_key`]) of [`PROSE`], in its order, which is theirs
/// (the list is sorted: a test checks).
static PROSE_KEYS: [u128; PROSE.len()] = {
    let mut keys = [0u128; PROSE.len()];
    let mut k = 0;
    while k < PROSE.len() {
        let w = PROSE[k];
        let mut j = 0;
        while j < 16 {
            let c = if j < w.len() { w[j] } else { 0 };
            keys[k] = keys[k] << 8 | c as u128;
            j += 1;
        }
        k += 1;
    }
    keys
};

/// The length of the longest word of [`PROSE`] (a test checks).
const PROSE_LONGEST: usize = 13;

/// Whether `v` holds the mask token `mask`: a value of an earlier pass.
/// Values are short, so comparing at each occurrence of the token's first
/// byte costs less than setting up a substring search.
fn holds_mask(v: &[u8], mask: &[u8]) -> bool {
    let Some((&first, rest)) = mask.split_first() else {
        return true;
    };
    if v.len() > 64 {
        return memchr::memmem::find(v, mask).is_some();
    }
    v.len() >= mask.len()
        && v[..=v.len() - mask.len()]
            .iter()
            .enumerate()
            .any(|(k, &c)| c == first && v[k + 1..k + mask.len()] == *rest)
}

/// A byte of a bare login value (looked up in [`BYTE_CLASS`]).
#[inline]
fn is_value_byte(c: u8) -> bool {
    BYTE_CLASS[usize::from(c)] & VALUE != 0
}

const fn value_byte(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-' | b'$' | b'\\' | b'@') || c >= 0x80
}

/// A word starts at `i` and ends at `end`: a login key or `for`?
pub fn at_word(cx: &mut Cx, i: usize, end: usize) -> Option<usize> {
    let s = cx.s;
    let word = &s[i..end];
    // `user NAME`, the commonest key (and `user agent: curl/8.5.0` in many
    // Docker lines): after `user` and a space, no shape below but the bare
    // name applies (no secret key ends in `r`, no suffix or closing quote
    // of the key follows it, and SQL's ` = '` starts with `=`), so the
    // value is read at once.
    if word.len() == 4
        && s.get(end) == Some(&b' ')
        && s.get(end + 1) != Some(&b'=')
        && word.eq_ignore_ascii_case(b"user")
    {
        cx.rule = "login_key";
        if agent_at(s, end + 1) && !holds_mask(&s[end + 1..end + 6], cx.sc.mask_token()) {
            return None;
        }
        return value(cx, end + 1, true);
    }
    // `u:3f9a2b1c5d`, `ip4:…`: a pseudonym of an earlier pass. Nothing
    // starts inside one: its `:` is no IPv6 (a hex digit follows) and no
    // Nextcloud mark, and its hex word ends no key (the last three bytes
    // of every key hold a letter past `f`); only curl's `-u` reads a `:`
    // there (and settles past the pseudonym), so without
    // `-u` in the text the walk goes on after it, as it would have step by
    // step.
    if word.len() <= 3 && s.get(end) == Some(&b':') {
        // The pseudonym first: the search for `-u` is one per text, but
        // more than most texts with a short word before a `:` need.
        if let Some(n) = hash::pseudonym_len_at(s, i) {
            if !cx.curl_possible() {
                return Some(i + n);
            }
        }
    }
    cx.rule = "secret_key";
    if let Some(next) = secrets::at_key(cx, i, end) {
        return Some(next);
    }
    if (word.eq_ignore_ascii_case(b"uid") || word.eq_ignore_ascii_case(b"cn"))
        && s.get(end) == Some(&b'=')
    {
        cx.rule = "ldap_dn";
        return dn_value(cx, i, end + 1);
    }
    cx.rule = "login_key";
    if word.len() == 3 {
        return if word.eq_ignore_ascii_case(b"for") {
            cx.rule = "for_name";
            for_from(cx, end)
        } else {
            None
        };
    }
    let Some(mut space_ok) = login_key(word) else {
        if word == b"name" && s.get(end) == Some(&b'=') && shadow::account_name_key(cx, i) {
            return value(cx, end + 1, false);
        }
        return ecs_name(cx, i);
    };
    // A key continues with `.`/`_`/`-` only as `user.name` and the like,
    // which is a key before `=` or `:` only: `user_name alice` is no log
    // shape (and the prefilter anchors `user NAME` at the space after `r`).
    let mut k = end;
    if space_ok {
        for suffix in [&b".name"[..], b"_name", b"-name"] {
            if s[k..].starts_with(suffix) && !s.get(k + 5).is_some_and(u8::is_ascii_alphanumeric) {
                k += 5;
                space_ok = false;
                break;
            }
        }
    }
    // Caddy's `"user_id":"erin"` holds the name basic auth accepted; other
    // programs put a number or a UUID there (`"user_id":"42"`), which stays.
    if space_ok && i >= 1 && s[i - 1] == b'"' && s[k..].starts_with(b"_id\":\"") && word == b"user"
    {
        let q = k + 6;
        let close = closing(s, q, b'"')?;
        let v = &s[q..close];
        // gitlab-shell writes `"user_id":"user-42"`: an id too.
        let an_id = v.iter().all(|c| c.is_ascii_hexdigit() || *c == b'-')
            || v.strip_prefix(b"user-")
                .is_some_and(|n| !n.is_empty() && n.iter().all(u8::is_ascii_digit));
        if an_id {
            return Some(close + 1);
        }
        return value(cx, q - 1, false);
    }
    // The whole key: `"remote_user"` is a JSON key as much as `"user"`.
    // Only a closing quote after the key (`"` or `\"`) needs it.
    let (k, json) = if matches!(s.get(k), Some(b'"' | b'\\')) {
        let mut b = i;
        while b > cx.floor() && i - b < 32 && (s[b - 1].is_ascii_alphanumeric() || s[b - 1] == b'_')
        {
            b -= 1;
        }
        secrets::quoted_key_end(s, b, k)
    } else {
        (k, false)
    };
    // `account` names a person in `account=x` and JSON only: `account:
    // locked` is prose.
    let key_only = word.eq_ignore_ascii_case(b"account");
    // An all-capitals key before `: ` is a label (vsftpd's `OK LOGIN:
    // Client ...`), not a login.
    let label = word.len() > 1 && word.iter().all(|c| c.is_ascii_uppercase());
    match s.get(k)? {
        b'=' if s.get(k + 1) != Some(&b'=') => value(cx, k + 1, false),
        b':' if json => value(cx, skip_spaces(s, k + 1), false),
        // `login: alice` needs the space: `user:pass@host` is userinfo.
        // Dovecot's `pop3-login: Disconnected` names a process, not a key.
        b':' if s.get(k + 1) == Some(&b' ')
            && !process_label(s, i, word)
            && !key_only
            && !label =>
        {
            value(cx, skip_spaces(s, k + 1), false)
        }
        // SQL: `WHERE username = 'heidi'`.
        b' ' if s[k..].starts_with(b" = ") && matches!(s.get(k + 3), Some(b'\'' | b'"')) => {
            value(cx, k + 3, false)
        }
        b' ' if json => {
            let p = skip_spaces(s, k);
            (s.get(p) == Some(&b':')).then(|| value(cx, skip_spaces(s, p + 1), false))?
        }
        b' ' if space_ok && !key_only => value(cx, k + 1, true),
        _ => None,
    }
}

/// An LDAP DN's or filter's `uid=NAME` / `cn=NAME` (the value at `q`, the
/// key at `i`): rewritten when it ends at `,`, `)` or `"` (a DN, a filter)
/// and holds a letter; `uid=1000` (pam, id) stays. `cn` values may hold
/// spaces (`cn=Alice Example,ou=people`).
fn dn_value(cx: &mut Cx, i: usize, q: usize) -> Option<usize> {
    let s = cx.s;
    if i > 0 && (s[i - 1].is_ascii_alphanumeric() || s[i - 1] == b'_') {
        return None;
    }
    let spaces = s[i..q].eq_ignore_ascii_case(b"cn=");
    let len = s[q..]
        .iter()
        .take(256)
        .take_while(|&&c| is_value_byte(c) || (spaces && c == b' '))
        .count();
    let ve = q + len;
    let v = &s[q..ve];
    if !matches!(s.get(ve), Some(b',' | b')' | b'"')) || !v.iter().any(u8::is_ascii_alphabetic) {
        return None;
    }
    // `CN=vpn.example.org`: a server certificate's subject (strongSwan,
    // OpenVPN) names a host, a dotted name of three labels or more.
    let host = spaces && v.iter().filter(|&&c| c == b'.').count() >= 2 && {
        let mut labels = v.split(|&c| c == b'.');
        let label =
            |l: &[u8]| !l.is_empty() && l.iter().all(|&c| c.is_ascii_alphanumeric() || c == b'-');
        labels.clone().all(label)
            && labels
                .next_back()
                .is_some_and(|l| l.len() >= 2 && l.iter().all(u8::is_ascii_alphabetic))
    };
    if host {
        cx.settle(ve);
        return Some(ve);
    }
    cx.rewrite_login(q, ve);
    Some(ve)
}

/// `imap-login:`, `pop3-login:`: dovecot's login processes label their lines.
fn process_label(s: &[u8], i: usize, word: &[u8]) -> bool {
    i > 0 && s[i - 1] == b'-' && word.eq_ignore_ascii_case(b"login")
}

/// A JSON key that is no login key by its name, but is one by where it is:
/// `"name"` in an ECS `"user":{...}` object (see `programs`).
fn ecs_name(cx: &mut Cx, i: usize) -> Option<usize> {
    let s = cx.s;
    if i == 0 || s[i - 1] != b'"' {
        return None;
    }
    let key_end = i + s[i..]
        .iter()
        .take(16)
        .take_while(|&&c| c.is_ascii_alphanumeric() || c == b'_')
        .count();
    if s.get(key_end) != Some(&b'"') || !programs::ecs_user_name_key(cx, i, key_end) {
        return None;
    }
    let p = skip_spaces(s, key_end + 1);
    (s.get(p) == Some(&b':')).then(|| value(cx, skip_spaces(s, p + 1), false))?
}

fn skip_spaces(s: &[u8], mut p: usize) -> usize {
    while s.get(p) == Some(&b' ') {
        p += 1;
    }
    p
}

/// Whether the word at `q` is `agent` (any case) as [`value`] reads it:
/// no value byte and no `%` (`%40`) follows. Then `user agent` (the HTTP
/// user agent in prose, `(user agent: curl/8.5.0, ...)` in many Docker
/// lines) is prose, [`value`]'s answer (it reads `agent`, a [`PROSE`]
/// word), unless the mask token is in it; told at once, this costs a
/// tenth of [`value`]'s reading (~290 instructions).
#[inline]
fn agent_at(s: &[u8], q: usize) -> bool {
    s.get(q..q + 5)
        .is_some_and(|w| w.eq_ignore_ascii_case(b"agent"))
        && s.get(q + 5).is_none_or(|&c| !is_value_byte(c) && c != b'%')
}

/// The value at `q`: rewrites it and returns where scanning goes on.
fn value(cx: &mut Cx, q: usize, prose_check: bool) -> Option<usize> {
    let s = cx.s;
    let (vs, ve, after) = match s.get(q)? {
        &quote @ (b'"' | b'\'' | b'<') => {
            let close = closing(s, q + 1, if quote == b'<' { b'>' } else { quote })?;
            (q + 1, close, close + 1)
        }
        b'\\' if s.get(q + 1) == Some(&b'"') => {
            let window = &s[q + 2..(q + 2 + 512).min(s.len())];
            let close = q + 2 + memchr::memmem::find(window, b"\\\"")?;
            (q + 2, close, close + 2)
        }
        _ => {
            if let Some(n) = hash::pseudonym_len_at(s, q) {
                cx.settle(q + n);
                return Some(q + n);
            }
            let mut ve = q;
            while ve < s.len() && is_value_byte(s[ve]) {
                ve += 1;
            }
            // `Login: user=<alice>`, `imap-login: Login: ...`: a key or a
            // label, not the value. After a bare `user `, `NAME: ` (colon,
            // space) is a name all the same: Apache's `user alice:
            // authentication failure`; the prose check still applies.
            let labelled = prose_check && s[ve..].starts_with(b": ");
            if matches!(s.get(ve), Some(b'=' | b':')) && !labelled {
                return None;
            }
            // `email=vera%40example.org` (a URL's query): the whole address.
            if s[ve..].starts_with(b"%40") {
                if let Some(d) = domain_end(s, ve + 3) {
                    ve = d;
                }
            }
            // A sentence's full stop is not part of the name.
            while ve > q && s[ve - 1] == b'.' {
                ve -= 1;
            }
            (q, ve, ve)
        }
    };
    let v = &s[vs..ve];
    // A value holding the mask token was (partly) masked by an earlier pass,
    // e.g. `login=\xc7::6f` -> `login=\xc7REDACTED`: leave it.
    if holds_mask(v, cx.sc.mask_token()) {
        return Some(after);
    }
    if not_a_name(v) {
        return (after > q).then_some(after);
    }
    if prose_check && is_prose(v) {
        return None;
    }
    cx.rewrite_login(vs, ve);
    Some(after)
}

/// The closing quote of a string starting at `p` (backslash escapes `"`), on
/// the same line and within 512 bytes.
fn closing(s: &[u8], p: usize, quote: u8) -> Option<usize> {
    let mut i = p;
    while i < s.len() && i - p < 512 {
        match s[i] {
            b'\n' => return None,
            b'\\' if quote == b'"' => i += 2,
            c if c == quote => return Some(i),
            _ => i += 1,
        }
    }
    None
}

/// Phrases after which `for NAME` names an account, whatever follows it:
/// pam_unix's `password changed for alice`, chage's `changed password
/// expiry for alice`.
pub const FOR_NAME_AFTER: &[&[u8]] = &[b"password changed ", b"password expiry "];

/// `for NAME from`: sshd's `Accepted password for alice from ...`; or `for
/// NAME` after one of [`FOR_NAME_AFTER`]. `p` ends the word `for`.
fn for_from(cx: &mut Cx, p: usize) -> Option<usize> {
    let s = cx.s;
    if s.get(p) != Some(&b' ') {
        return None;
    }
    let q = p + 1;
    let ve = hash::pseudonym_len_at(s, q)
        .map(|n| q + n)
        .unwrap_or_else(|| {
            let mut ve = q;
            while ve < s.len() && is_value_byte(s[ve]) {
                ve += 1;
            }
            ve
        });
    if ve == q {
        return None;
    }
    if s[ve..].starts_with(b" from ") {
        cx.rewrite_login(q, ve);
        return Some(ve);
    }
    if !FOR_NAME_AFTER.iter().any(|lead| cx.follows(p - 3, lead)) {
        return None;
    }
    // A sentence's full stop is not part of the name.
    let end = q + s[q..ve].iter().rposition(|&c| c != b'.')? + 1;
    let v = &s[q..end];
    // `password changed for the first time` is prose; in `... for user
    // alice` the walk goes on to the `user NAME` shape.
    if is_prose(v) || login_key(v).is_some() {
        return None;
    }
    cx.rewrite_login(q, end);
    Some(end)
}

/// A byte of an e-mail's local part; non-ASCII for internationalised
/// addresses (RFC 6531: `jörg@example.de`).
const fn local_byte(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'%' | b'+' | b'-') || c >= 0x80
}

const fn userinfo_byte(c: u8) -> bool {
    c.is_ascii_alphanumeric()
        || matches!(
            c,
            b'.' | b'_'
                | b'~'
                | b'%'
                | b'!'
                | b'$'
                | b'&'
                | b'*'
                | b'+'
                | b','
                | b';'
                | b'='
                | b':'
                | b'-'
        )
}

/// A byte of a domain label: internationalised names (IDN) are written in
/// UTF-8 (`bücher.example`) or in punycode (`xn--bcher-kva.example`).
const fn label_byte(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'-' || c >= 0x80
}

const LOCAL: u8 = 1;
const USERINFO: u8 = 2;
const LABEL: u8 = 4;
const VALUE: u8 = 8;
/// A byte of a host name as [`not_mail`] reads it: ASCII letters, digits,
/// `.` and `-`.
const HOST: u8 = 16;

/// The byte classes above, [`value_byte`] and host names', looked up in
/// one table: the look-behinds, the scans after every `@` and the login
/// values test them byte by byte.
static BYTE_CLASS: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut c = 0;
    while c < 256 {
        let b = c as u8;
        t[c] = (local_byte(b) as u8 * LOCAL)
            | (userinfo_byte(b) as u8 * USERINFO)
            | (label_byte(b) as u8 * LABEL)
            | (value_byte(b) as u8 * VALUE)
            | ((b.is_ascii_alphanumeric() || b == b'.' || b == b'-') as u8 * HOST);
        c += 1;
    }
    t
};

/// The start of the run of bytes of `class` that ends at `i`, looking no
/// further back than `lo` (the back-scans of [`at_sign`]; `i` when `lo`
/// is past it).
#[inline]
fn run_before(s: &[u8], lo: usize, i: usize, class: u8) -> usize {
    let lo = lo.min(i);
    i - s[lo..i]
        .iter()
        .rev()
        .take_while(|&&c| BYTE_CLASS[usize::from(c)] & class != 0)
        .count()
}

#[inline]
fn is_local(c: u8) -> bool {
    BYTE_CLASS[usize::from(c)] & LOCAL != 0
}

#[inline]
fn is_label(c: u8) -> bool {
    BYTE_CLASS[usize::from(c)] & LABEL != 0
}

/// Whether `s` starts with the mask token `mask`: its first byte decides
/// nearly always, without a call to memcmp (the token's length is the
/// config's, so the comparison is not inlined).
fn starts_with_mask(s: &[u8], mask: &[u8]) -> bool {
    match (s.first(), mask.first()) {
        (Some(a), Some(b)) if a != b => false,
        _ => s.starts_with(mask),
    }
}

/// An `@` at `i`: URL userinfo or an e-mail address around it.
pub fn at_sign(cx: &mut Cx, i: usize) -> Option<usize> {
    let s = cx.s;
    let floor = cx.floor();
    // `u:3f9a2b1c5d@...`: a name already pseudonymised (first pass:
    // userinfo). A pseudonym ends in a lower-case hex digit: most `@` are
    // not after one, and need no look at the prefixes.
    if i > 0 && matches!(s[i - 1], b'0'..=b'9' | b'a'..=b'f') && hash::login_or_address_before(s, i)
    {
        return None;
    }
    // Userinfo is at most 256 bytes back.
    let b = run_before(s, floor.max(i.saturating_sub(256)), i, USERINFO);
    // `scheme://`: the byte before `://` belongs to a scheme (not the `::`
    // a truncated IPv6 address can end with). Read from the output, as a
    // second pass would: a rewrite may end right before `://`.
    let scheme_char = |c: u8| c.is_ascii_alphanumeric() || matches!(c, b'+' | b'-' | b'.');
    let before = |k| cx.out_byte_before(b, k);
    let url = before(3) == Some(b':')
        && before(2) == Some(b'/')
        && before(1) == Some(b'/')
        && before(4).is_some_and(scheme_char);
    if b < i && url {
        // Userinfo holding an address pseudonym or the mask token had part
        // of it rewritten by an earlier pass: leave it as that pass did.
        let ui = &s[b..i];
        let rewritten = [hash::IPV4_PREFIX, hash::IPV6_PREFIX, cx.sc.mask_token()]
            .iter()
            .any(|p| memchr::memmem::find(ui, p).is_some());
        if !rewritten {
            userinfo(cx, b, i);
        }
        return Some(i + 1);
    }
    // A local part is at most 64 bytes, and one byte more tells a longer
    // one (below).
    let mut l = run_before(s, floor.max(i.saturating_sub(65)), i, LOCAL);
    if l == i {
        return handle(cx, i);
    }
    // `message-id=<...@host>`: a Message-ID names a message, not a mailbox.
    if message_id_before(s, l) {
        let end = domain_end(s, i + 1).unwrap_or(i + 1);
        cx.settle(end);
        return Some(end);
    }
    if l > 0 && is_local(s[l - 1]) && l > floor {
        return None; // longer than a local part may be
    }
    while l < i && s[l] == b'.' {
        l += 1;
    }
    // Empty, or starting with the mask token: an earlier pass masked what
    // was glued to this address (`1.2.3.4%x@example.com`).
    if l == i || starts_with_mask(&s[l..i], cx.sc.mask_token()) {
        return None;
    }
    // Likewise after the `@` (`x@b5::-y.org` masks to `x@REDACTED-y.org`).
    if starts_with_mask(&s[i + 1..], cx.sc.mask_token()) {
        return None;
    }
    if let Some(end) = not_mail(cx, l, i) {
        cx.settle(end);
        return Some(end);
    }
    // (The `/` first: most `@` have none before their local part.)
    let principal = match l {
        1.. if s[l - 1] == b'/' => principal(s, l, i, floor),
        _ => None,
    };
    match principal {
        Some(Principal::Service(end)) => {
            cx.settle(end);
            return Some(end);
        }
        Some(Principal::User(p, end)) => {
            cx.rewrite_login(p, end);
            return Some(end);
        }
        None => {}
    }
    match domain_end(s, i + 1) {
        // `git@github.com:org/repo.git`, `alice@host.example:backup/`: an
        // scp-style remote names a login at a machine, not a mailbox.
        Some(end)
            if s.get(end) == Some(&b':')
                && s.get(end + 1)
                    .is_some_and(|&c| c.is_ascii_alphabetic() || matches!(c, b'/' | b'~')) =>
        {
            cx.rewrite_login(l, i);
            Some(end)
        }
        // `root@mx.example.org`, `postmaster@...`: a system account's or a
        // role's mailbox.
        Some(end) if cx.sc.is_system_account(&s[l..i]) => {
            cx.settle(end);
            Some(end)
        }
        Some(end) => {
            cx.rewrite_login(l, end);
            Some(end)
        }
        // `alice@203.0.113.7` (Pure-FTPd's `(alice@203.0.113.7)`, ssh): a
        // login at an address; the walk goes on into the address, which is
        // the address detector's.
        // (The digit test first: a hostile line of `@`s must not pay a
        // call per `@`.)
        None if s.get(i + 1).is_some_and(u8::is_ascii_digit)
            && super::ipv4::detect(s, i + 1, true).is_some() =>
        {
            cx.rewrite_login(l, i);
            Some(i + 1)
        }
        // `200@from-internal:1`: Asterisk's extension@context. Digits alone
        // name no login (useradd refuses them).
        None if s[l..i].iter().all(u8::is_ascii_digit) => None,
        None => {
            // `alice@server`: ssh's user@host. The host stays: it names a
            // machine, not a person.
            // The walk goes on into the host, as a second pass would.
            host_end(s, i + 1)?;
            cx.rewrite_login(l, i);
            Some(i + 1)
        }
    }
}

/// `%40` at `i`: a percent-encoded `@`, as a mailbox stands in a URL's
/// query or path (`?email=vera%40example.org`, `mailto:vera%40example.org`):
/// an e-mail address when a local part comes before it and a dotted domain
/// after it, rewritten whole. `%40bob` and `50%40` stay.
pub fn encoded_at(cx: &mut Cx, i: usize) -> Option<usize> {
    let s = cx.s;
    if !s[i..].starts_with(b"%40") {
        return None;
    }
    let floor = cx.floor();
    let mut l = i;
    while l > floor && i - l <= 64 && is_local(s[l - 1]) {
        l -= 1;
    }
    if l > 0 && l > floor && is_local(s[l - 1]) {
        return None; // longer than a local part may be
    }
    // `mailto%3Avera%40…`, `q=a%20vera%40…`: an encoded byte that is no
    // local-part byte (`:`, space, `%`) ends the local part.
    let mut k = l;
    while let Some(n) = memchr::memchr(b'%', &s[k..i]) {
        let p = k + n;
        let decoded = s.get(p + 1..p + 3).and_then(|h| {
            let h = std::str::from_utf8(h).ok()?;
            u8::from_str_radix(h, 16).ok()
        });
        if decoded.is_some_and(|c| c == b'%' || !is_local(c)) {
            l = p + 3;
        }
        k = p + 1;
    }
    while l < i && s[l] == b'.' {
        l += 1;
    }
    if l >= i
        || starts_with_mask(&s[l..i], cx.sc.mask_token())
        || hash::pseudonym_len_at(s, l).is_some()
    {
        return None;
    }
    let end = domain_end(s, i + 3)?;
    if cx.sc.is_system_account(&s[l..i]) {
        cx.settle(end);
        return Some(end);
    }
    cx.rewrite_login(l, end);
    Some(end)
}

/// Whether the text before `l` opens a Message-ID: `message-id=<`
/// (Postfix), `msgid=<` (Dovecot), `Message-ID: <` (headers), `id: <`
/// (rspamd), ` id=` (Exim), `mid=<` and `processing message <` (spamd).
fn message_id_before(s: &[u8], l: usize) -> bool {
    let before = &s[..l];
    // Exim's `<=` lines end with ` id=` and the Message-ID, unbracketed.
    if before.ends_with(b" id=") {
        return true;
    }
    let Some(before) = before.strip_suffix(b"<") else {
        return false;
    };
    // spamd: `mid=<...>`, `processing message <...> for alice:1000`.
    [
        &b"message-id="[..],
        b"msgid=",
        b"message-id: ",
        b" id: ",
        b"mid=",
        b"processing message ",
        b"checking message ",
    ]
    .iter()
    .any(|k| before.len() >= k.len() && before[before.len() - k.len()..].eq_ignore_ascii_case(k))
}

/// An `@` at `i` with no local part before it: a handle. `/@bob` in a URL
/// path (Mastodon, Misskey profiles) and Matrix IDs (`@alice:matrix.org`,
/// after a space, `{` or `"`): the name is rewritten, the server kept.
fn handle(cx: &mut Cx, i: usize) -> Option<usize> {
    let s = cx.s;
    let before = cx.out_byte_before(i, 1);
    let q = i + 1;
    let len = s[q..]
        .iter()
        .take(64)
        .take_while(|&&c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-' | b'='))
        .count();
    if len == 0 || hash::pseudonym_len_at(s, q).is_some() {
        return None;
    }
    let end = q + len;
    let path = before == Some(b'/') && !matches!(s.get(end), Some(b'@' | b'.'));
    let matrix = matches!(before, None | Some(b' ' | b'{' | b'"' | b'<' | b'('))
        && s.get(end) == Some(&b':')
        && s.get(end + 1).is_some_and(u8::is_ascii_alphabetic);
    if !(path || matrix) {
        return None;
    }
    cx.rewrite_login(q, end);
    Some(end)
}

/// Domains of SSH algorithm names (`chacha20-poly1305@openssh.com`,
/// `curve25519-sha256@libssh.org`): RFC 4251's private names, not mail.
const ALGORITHM_DOMAINS: &[&[u8]] = &[b"openssh.com", b"libssh.org", b"ssh.com"];

/// Traefik's provider suffixes (`api@internal`, `web@docker`).
const TRAEFIK_PROVIDERS: &[&[u8]] = &[
    b"internal",
    b"docker",
    b"swarm",
    b"file",
    b"kubernetes",
    b"kubernetescrd",
    b"kubernetesgateway",
    b"kubernetesingress",
    b"consul",
    b"consulcatalog",
    b"ecs",
    b"marathon",
    b"rancher",
    b"nomad",
    b"redis",
    b"etcd",
    b"zookeeper",
    b"http",
];

/// Per first byte, a bit per length of the Traefik providers that start
/// with it (all are shorter than 32 bytes).
static PROVIDER_LENGTHS: [u32; 256] = {
    let mut t = [0u32; 256];
    let mut k = 0;
    while k < TRAEFIK_PROVIDERS.len() {
        let p = TRAEFIK_PROVIDERS[k];
        assert!(p.len() < 32);
        t[p[0] as usize] |= 1 << p.len();
        k += 1;
    }
    t
};

/// `@` forms that are no e-mail address or login (the `@` at `i`, the
/// local part from `l`): a systemd unit instance, an SSH algorithm name, a
/// Traefik `NAME@provider`. Where the form ends, if it is one.
fn not_mail(cx: &mut Cx, l: usize, i: usize) -> Option<usize> {
    let s = cx.s;
    // The token after the `@`, up to a delimiter of the text around it (at
    // most 256 bytes).
    let end = cx.next_delimiter(i + 1).min(i + 1 + 256);
    let mut token = &s[i + 1..end];
    while let Some(t) = token
        .strip_suffix(b".")
        .or_else(|| token.strip_suffix(b":"))
    {
        token = t;
    }
    if systemd_unit(token) {
        return Some(i + 1 + token.len());
    }
    let host = &token[..token
        .iter()
        .position(|&c| BYTE_CLASS[usize::from(c)] & HOST == 0)
        .unwrap_or(token.len())];
    if ALGORITHM_DOMAINS
        .iter()
        .any(|d| host.eq_ignore_ascii_case(d))
    {
        return Some(i + 1 + host.len());
    }
    // Traefik's routers, services and middlewares: `NAME@PROVIDER`, the
    // name a word of letters, digits, `-` and `_`.
    let local = &s[l..i];
    // The first byte and the length turn away nearly every host with no
    // look at the list (this runs at every `@`); the bytes are compared
    // only with a provider of both.
    let provider = host.first().is_some_and(|&h| {
        host.len() < 32
            && PROVIDER_LENGTHS[usize::from(h)] & (1 << host.len()) != 0
            && TRAEFIK_PROVIDERS
                .iter()
                .any(|p| p.len() == host.len() && p[0] == h && *p == host)
    });
    if provider && !local.is_empty() && s.get(i + 1 + host.len()) != Some(&b'.') {
        return Some(i + 1 + host.len());
    }
    None
}

/// A Kerberos principal with an instance, `primary/instance@REALM`.
enum Principal {
    /// A service's, which names a machine and stays: where it ends.
    Service(usize),
    /// A user's (`alice/admin@EXAMPLE.ORG`): the span to rewrite whole,
    /// as `alice@EXAMPLE.ORG` is.
    User(usize, usize),
}

/// The principal around the `@` at `i` (the instance from `l`, after a
/// `/`), its realm in capitals (RFC 4120's convention). A service's has a
/// dotted instance (a host name, a realm: `host/web1.example.org@EXAMPLE.ORG`,
/// `krbtgt/EXAMPLE.ORG@EXAMPLE.ORG`) or is the KDC's own (`kadmin/admin`);
/// any other is a user's with an instance (`alice/admin@EXAMPLE.ORG`).
fn principal(s: &[u8], l: usize, i: usize, floor: usize) -> Option<Principal> {
    if l == 0 || s[l - 1] != b'/' {
        return None;
    }
    let realm = s[i + 1..]
        .iter()
        .take(256)
        .take_while(|&&c| c.is_ascii_uppercase() || c.is_ascii_digit() || matches!(c, b'.' | b'-'))
        .count();
    let end = i + 1 + realm;
    if !s[i + 1..end].iter().any(u8::is_ascii_uppercase) || s.get(end).is_some_and(|&c| is_label(c))
    {
        return None;
    }
    let slash = l - 1;
    let mut p = slash;
    while p > floor && slash - p < 64 && is_local(s[p - 1]) {
        p -= 1;
    }
    let primary = &s[p..slash];
    if s[l..i].contains(&b'.') || matches!(primary, b"krbtgt" | b"kadmin") {
        return Some(Principal::Service(end));
    }
    (!primary.is_empty()).then_some(Principal::User(p, end))
}

/// systemd's unit types (`systemd.unit(5)`).
const UNIT_TYPES: &[&[u8]] = &[
    b"service",
    b"socket",
    b"target",
    b"timer",
    b"mount",
    b"automount",
    b"slice",
    b"scope",
    b"path",
    b"device",
    b"swap",
];

/// `getty@tty1.service`, `systemd-fsck@dev-disk-by\x2duuid-1234.service`:
/// a systemd unit instance (the instance may hold any escaped bytes).
fn systemd_unit(token: &[u8]) -> bool {
    // The longest type is 9 bytes: a last dot further back ends no unit,
    // and looking no further keeps a line of `@` (hostile input) linear.
    // Every type ends in `e`, `t`, `r`, `h` or `p`: most tokens are told
    // by their last byte.
    if !matches!(token.last(), Some(b'e' | b't' | b'r' | b'h' | b'p')) {
        return false;
    }
    let tail = &token[token.len().saturating_sub(10)..];
    let Some(dot) = tail.iter().rposition(|&c| c == b'.') else {
        return false;
    };
    let tld = &tail[dot + 1..];
    // Every type is 4 to 9 lower-case letters: most tails after an `@`
    // are turned away without comparing them with each.
    (4..=9).contains(&tld.len()) && tld[0].is_ascii_lowercase() && UNIT_TYPES.contains(&tld)
}

/// The end of a one-label host name at `p` (a letter, then letters, digits
/// and `-`), not followed by a dot and more name: `alice@server`,
/// `root@web-1`. Not `npm@8.1.0` (a version), not `image@sha256:...`.
fn host_end(s: &[u8], p: usize) -> Option<usize> {
    // `x@u:3f9a2b1c5d`: an e-mail address hashed by an earlier pass.
    if !s.get(p)?.is_ascii_alphabetic() || hash::pseudonym_len_at(s, p).is_some() {
        return None;
    }
    let end = p + s[p..]
        .iter()
        .take_while(|&&c| c.is_ascii_alphanumeric() || c == b'-')
        .count();
    if s.get(end) == Some(&b'.') && s.get(end + 1).is_some_and(u8::is_ascii_alphanumeric) {
        return None;
    }
    let host = &s[p..end];
    const DIGESTS: &[&[u8]] = &[b"sha1", b"sha256", b"sha384", b"sha512", b"md5"];
    // Every digest starts with `s` or `m`: most hosts are told by that byte.
    if matches!(host[0] | 0x20, b's' | b'm') && DIGESTS.iter().any(|d| host.eq_ignore_ascii_case(d))
    {
        return None;
    }
    Some(end)
}

/// `user[:password]` between `://` and `@`.
fn userinfo(cx: &mut Cx, b: usize, at: usize) {
    let s = cx.s;
    let user_end = match hash::pseudonym_len_at(&s[..at], b) {
        Some(n) => b + n,
        None => b + memchr::memchr(b':', &s[b..at]).unwrap_or(at - b),
    };
    cx.rewrite_login(b, user_end);
    if user_end < at {
        cx.rewrite_secret(user_end + 1, at);
    }
}

/// The end of a dotted domain name at `p` whose last label is a top-level
/// domain: 2+ letters (`org`), non-ASCII (`рф`) or punycode (`xn--p1ai`).
fn domain_end(s: &[u8], p: usize) -> Option<usize> {
    let mut q = p;
    let mut labels = 0;
    loop {
        let start = q;
        while q < s.len() && is_label(s[q]) {
            q += 1;
        }
        if q == start {
            return None;
        }
        labels += 1;
        let label = &s[start..q];
        let dot_next = s.get(q) == Some(&b'.') && s.get(q + 1).is_some_and(|&c| is_label(c));
        if !dot_next {
            if labels < 2 {
                return None;
            }
            let punycode = label.len() > 4 && label[..4].eq_ignore_ascii_case(b"xn--");
            let tld_ok = label.len() >= 2
                && (punycode || label.iter().all(|&c| c.is_ascii_alphabetic() || c >= 0x80));
            return tld_ok.then_some(q);
        }
        q += 1;
    }
}

/// A `[` at `i` opening a common-log-format date (`[10/Oct/2000:13:55:36`):
/// the two tokens before it are the identd login and the user.
pub fn access_log_user(cx: &mut Cx, i: usize) -> Option<usize> {
    let s = cx.s;
    let d = s.get(i + 1..i + 13)?;
    let shape = d[0].is_ascii_digit()
        && d[1].is_ascii_digit()
        && d[2] == b'/'
        && d[3..6].iter().all(u8::is_ascii_alphabetic)
        && d[6] == b'/'
        && d[7..11].iter().all(u8::is_ascii_digit)
        && d[11] == b':';
    if !shape || i < 1 || s[i - 1] != b' ' {
        return None;
    }
    let user_end = i - 1;
    let floor = cx.floor();
    let user_start = token_start(s, user_end, floor)?;
    let ident = user_start
        .checked_sub(1)
        .and_then(|ident_end| Some((token_start(s, ident_end, floor)?, ident_end)));
    // CUPS's page_log (`printer user job-id [date]`) puts a job id where
    // a common log has the user: digits alone name no login (useradd
    // refuses them).
    let digits = |a: usize, b: usize| s[a..b].iter().all(u8::is_ascii_digit);
    if let Some((a, b)) = ident {
        cx.rewrite_login(a, b);
    }
    if !digits(user_start, user_end) {
        cx.rewrite_login(user_start, user_end);
    }
    Some(i + 1)
}

/// The start of the space-delimited token ending at `end`, if it is preceded
/// by a space and lies wholly after `floor`.
fn token_start(s: &[u8], end: usize, floor: usize) -> Option<usize> {
    let mut b = end;
    while b > floor && s[b - 1] != b' ' {
        b -= 1;
    }
    (b < end && b > 0 && s[b - 1] == b' ').then_some(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `is_prose` looks the keys of `PROSE` up in a perfect hash table:
    /// the list must stay sorted, of lower-case letters and no longer than
    /// `PROSE_LONGEST`, its keys in its order, and the look-up agree with
    /// comparing each word in any case (and with the byte-wise search it
    /// replaced).
    #[test]
    fn prose_lookup_is_the_list() {
        assert!(PROSE.windows(2).all(|w| w[0] < w[1]), "PROSE is sorted");
        assert!(PROSE_KEYS.windows(2).all(|w| w[0] < w[1]), "keys sorted");
        assert!(PROSE
            .iter()
            .all(|w| !w.is_empty() && w.iter().all(u8::is_ascii_lowercase)));
        assert_eq!(PROSE.iter().map(|w| w.len()).max(), Some(PROSE_LONGEST));
        for (w, k) in PROSE.iter().zip(PROSE_KEYS) {
            assert_eq!(prose_key(w), Some(k), "{w:?}");
        }
        let mut probes: Vec<Vec<u8>> = PROSE.iter().map(|w| w.to_vec()).collect();
        for w in PROSE {
            probes.push(w.to_ascii_uppercase());
            probes.push([*w, b"s"].concat());
            probes.push([*w, b"\0"].concat());
            probes.push([*w, b"\x80"].concat());
            probes.push(w[..w.len() - 1].to_vec());
            probes.push(w.iter().map(|c| c & !0x20).collect());
            probes.push(w.iter().map(|c| c ^ 0x40).collect());
            probes.push(w.iter().map(|c| c - 0x20 + 0x60).collect());
        }
        probes.extend(
            [
                &b""[..],
                b"alice",
                b"AGENT",
                b"Agent",
                b"configurations",
                b"j\xc3\xb6rg",
                b"\0",
                b"@",
                b"[",
                b"`",
                b"{",
            ]
            .map(<[u8]>::to_vec),
        );
        // Every one- and two-byte value.
        for a in 0..=255u8 {
            probes.push(vec![a]);
            for b in [b'n', b'N', b's', b't', b'y', 0, 0x80, b'.', b'@', 0xff] {
                probes.push(vec![a, b]);
                probes.push(vec![b, a]);
            }
        }
        for p in probes {
            let linear = PROSE.iter().any(|w| p.eq_ignore_ascii_case(w));
            assert_eq!(is_prose(&p), linear, "{}", String::from_utf8_lossy(&p));
            assert_eq!(
                reference::is_prose(&p),
                linear,
                "{}",
                String::from_utf8_lossy(&p)
            );
        }
    }

    /// `login_key` is the one it replaced (`reference::login_key`): every
    /// key and key tail in every case, alone and after heads that make
    /// compounds, camelCase or neither.
    #[test]
    fn login_key_is_the_reference() {
        let keys = [
            "user", "username", "login", "logname", "email", "ruser", "uname", "account", "name",
            "mail", "ogin", "ount", "sername", "count", "gname", "ser",
        ];
        let heads = [
            "", "a", "A", "x_", "x-", "x.", "client", "Client", "CLIENT", "remote", "sasl_", "r",
            "R", "e", "E", "u", "U", "log", "Log", "ac", "c", "1", "\u{e9}", "s", "S",
        ];
        let mut words = 0;
        for k in keys {
            let k = k.as_bytes();
            for case in 0..1u32 << k.len() {
                let cased: Vec<u8> = k
                    .iter()
                    .enumerate()
                    .map(|(n, &c)| if case & 1 << n != 0 { c ^ 0x20 } else { c })
                    .collect();
                for h in heads {
                    let word = [h.as_bytes(), &cased].concat();
                    assert_eq!(
                        login_key(&word),
                        reference::login_key(&word),
                        "{}",
                        String::from_utf8_lossy(&word)
                    );
                    words += 1;
                }
            }
        }
        assert!(words > 20_000);
    }

    /// `not_a_name` is the list it replaced, on the words of the list in
    /// any case, their neighbours and every short value.
    #[test]
    fn not_a_name_is_the_list() {
        let mut probes: Vec<Vec<u8>> = vec![Vec::new()];
        for n in reference::NOT_NAMES {
            probes.push(n.to_vec());
            probes.push(n.to_ascii_lowercase());
            probes.push(n.to_ascii_uppercase());
            probes.push([*n, b"x"].concat());
            probes.push(n[1..].to_vec());
            probes.push(n.iter().map(|c| c ^ 0x40).collect());
        }
        for a in 0..=255u8 {
            probes.push(vec![a]);
            probes.push(vec![a, a]);
            probes.push(vec![b'-', a]);
        }
        for p in probes {
            let listed = reference::NOT_NAMES
                .iter()
                .any(|n| p.eq_ignore_ascii_case(n));
            assert_eq!(
                not_a_name(&p),
                p.is_empty() || listed,
                "{}",
                String::from_utf8_lossy(&p)
            );
        }
    }

    /// `holds_mask` is a substring test.
    #[test]
    fn holds_mask_is_a_substring_test() {
        let long = [b"x".repeat(70), b"REDACTED".to_vec()].concat();
        for (v, want) in [
            (&b""[..], false),
            (b"REDACTED", true),
            (b"xREDACTED", true),
            (b"REDACTEDx", true),
            (b"REDACTE", false),
            (b"RREDACTEDD", true),
            (b"REDACTEREDACTEx", false),
            (&long[..], true),
            (&long[..long.len() - 1], false),
        ] {
            assert_eq!(holds_mask(v, b"REDACTED"), want, "{v:?}");
            assert_eq!(
                memchr::memmem::find(v, b"REDACTED").is_some(),
                want,
                "{v:?}"
            );
        }
        assert!(holds_mask(b"abc", b""));
    }

    /// `run_before` stops where the byte loops it replaced stopped: at the
    /// floor, at the length bound, or after the first byte not of the class.
    #[test]
    fn run_before_is_the_bounded_back_scan() {
        let texts: [&[u8]; 4] = [
            b"a.@b1c@m.a.@b1c@m.",
            b"x://user:pw@host alice.b@example.org",
            b"ab/c@EXAMPLE.ORG",
            &[b'a'; 300],
        ];
        for s in texts {
            for i in 0..=s.len() {
                for floor in [0, 1, 3, i.saturating_sub(2), i, i + 1] {
                    for (class, max) in [(LOCAL, 64), (USERINFO, 255)] {
                        let mut b = i;
                        while b > floor
                            && i - b <= max
                            && BYTE_CLASS[usize::from(s[b - 1])] & class != 0
                        {
                            b -= 1;
                        }
                        let lo = floor.max(i.saturating_sub(max + 1));
                        assert_eq!(run_before(s, lo, i, class), b, "{i} {floor} {class}");
                    }
                }
            }
        }
    }

    /// The last-byte gate of `systemd_unit` lets every unit type through.
    #[test]
    fn unit_types_end_as_the_gate_says() {
        for t in UNIT_TYPES {
            assert!(
                matches!(t.last(), Some(b'e' | b't' | b'r' | b'h' | b'p')),
                "{t:?}"
            );
            let mut token = b"getty@tty1.".to_vec();
            token.extend_from_slice(t);
            assert!(systemd_unit(&token[6..]), "{t:?}");
        }
    }

    /// The class table is the three predicates, byte for byte.
    #[test]
    fn byte_classes_are_the_predicates() {
        for c in 0..=255u8 {
            assert_eq!(is_local(c), local_byte(c), "{c}");
            assert_eq!(
                BYTE_CLASS[usize::from(c)] & USERINFO != 0,
                userinfo_byte(c),
                "{c}"
            );
            assert_eq!(is_label(c), label_byte(c), "{c}");
            let value = c.is_ascii_alphanumeric()
                || matches!(c, b'.' | b'_' | b'-' | b'$' | b'\\' | b'@')
                || c >= 0x80;
            assert_eq!(is_value_byte(c), value, "{c}");
            let host = c.is_ascii_alphanumeric() || matches!(c, b'.' | b'-');
            assert_eq!(BYTE_CLASS[usize::from(c)] & HOST != 0, host, "{c}");
        }
        for (s, m, want) in [
            (&b"REDACTED-x"[..], &b"REDACTED"[..], true),
            (b"REDACTE", b"REDACTED", false),
            (b"xREDACTED", b"REDACTED", false),
            (b"", b"REDACTED", false),
            (b"abc", b"", true),
        ] {
            assert_eq!(starts_with_mask(s, m), want, "{s:?}");
        }
    }

    /// `systemd_unit`'s gate (4 to 9 lower-case letters) lets every type in.
    #[test]
    fn every_unit_type_is_a_unit() {
        for t in UNIT_TYPES {
            assert!(systemd_unit(&[b"tty1.", *t].concat()), "{t:?}");
            assert!(!systemd_unit(&[b"tty1.", *t, b"x"].concat()), "{t:?}");
        }
    }
}
