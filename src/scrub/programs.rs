//! Login shapes particular to one program's log lines, each anchored at a
//! punctuation byte the prefilter stops at.
//!
//! | program | example | rewritten | anchor |
//! |---|---|---|---|
//! | sudo | `alice : TTY=pts/0 ; PWD=/home/alice ; USER=root ; COMMAND=/bin/ls` | the leading user (`USER=` is a key, `/home/alice` below) | the ` : ` |
//! | sudo | `alice : 3 incorrect password attempts ; TTY=pts/0 ; ...` | the leading user | the ` : ` |
//! | any | `/home/alice/.ssh/authorized_keys`, `PWD=/home/alice` | `alice`: a home directory names its user | the `/` after `home` |
//! | dovecot | `imap(alice)<7><x>:`, `pop3(alice):`, `auth: passwd-file(alice,203.0.113.7): unknown user` | the user | the `(` |
//! | su, runuser (util-linux) | `(to root) alice on pts/0`, `FAILED SU (to root) alice on pts/0` | both users | the `(` |
//! | cron | `CRON[1234]: (alice) CMD (/usr/bin/backup)`, cronie's `CMDOUT`, `CMDEND` | the crontab's owner (a system account such as `root` stays) | the `(` |
//! | Nextcloud | `Login failed: alice (Remote IP: 203.0.113.7)`, `Login failed: 'alice' (...`, `alice disabled (...` | what was typed, up to ` (Remote IP: ` | the `:` after `failed` |
//! | ECS JSON | `"user":{"name":"alice"}`, `"user":{"target":{"full_name":"Alice B"}}` | `name` and `full_name` in a `user` object (or its `target`, `effective`, `changes`) | the `:` after the key |
//!
//! Decisions: sudo's leading user needs `TTY=` later on the line (sudo always
//! writes it, `TTY=unknown` without a terminal), so `a : b` in prose is left
//! alone. `/home/` must start a path (not after a letter, digit, `.`, `_`,
//! `-` or `~`: `/srv/home/x` is not a home directory). The dovecot shape is
//! limited to dovecot's service and passdb names, so `f(x)` in application
//! logs is left alone (pam's `by NAME(uid=` is a row of `shapes`). In ECS JSON only
//! the person-naming keys are logins: `user.id` and `user.group.name` stay.
//!
//! su's and cron's `(` must start the text or follow a space, and the whole
//! shape must follow: su's ` on ` then a terminal (`pts/`, `tty`, `console`,
//! `none`, `/dev/`), so `(to be continued) later on` and `(to do) list on
//! monday` stay; cron's verb in capitals then ` (`, so `(CRON) info (...)`
//! and `(see below) CMD` stay. Nextcloud writes whatever was typed at the
//! login form (spaces, e-mail addresses, sometimes a password typed into the
//! wrong field), so the whole text between `Login failed: ` and ` (Remote
//! IP: ` is one login, hashed whole: on the same line, within one JSON string
//! (an unescaped `"` ends it) and 256 bytes. The risk is a line that quotes
//! such a message inside other text: the span still ends at the mark.

use super::cx::Cx;
use super::hash;

/// A byte of a user name in these shapes (POSIX portable names, `$` for
/// machine accounts, and non-ASCII).
fn is_name_byte(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-' | b'$') || c >= 0x80
}

/// The end of the name at `q`, or `None` if there is none or it is a
/// pseudonym already (`u:3f9a2b1c5d` holds a `:`, which ends a name).
fn name_end(s: &[u8], q: usize) -> Option<usize> {
    if hash::pseudonym_len_at(s, q).is_some() {
        return None;
    }
    let len = s[q.min(s.len())..]
        .iter()
        .take_while(|&&c| is_name_byte(c))
        .count();
    (len > 0).then_some(q + len)
}

/// The start of the name ending at `end`, which must begin after `floor` and
/// right after a space or at the start of the text.
fn name_start_before(s: &[u8], end: usize, floor: usize) -> Option<usize> {
    let mut b = end;
    while b > floor && is_name_byte(s[b - 1]) {
        b -= 1;
    }
    let bounded = b == 0 || s[b - 1] == b' ';
    (b < end && bounded && !(b == floor && b > 0 && is_name_byte(s[b - 1]))).then_some(b)
}

/// Whether `word` ends a pseudonym (`u:3f9a2b1c5d`): its hex digits are not a
/// name of their own.
fn ends_pseudonym(s: &[u8], end: usize) -> bool {
    [hash::LOGIN_PREFIX, hash::IPV4_PREFIX, hash::IPV6_PREFIX]
        .iter()
        .any(|p| {
            let n = p.len() + hash::HASH_HEX;
            end >= n && hash::prefixed_len(&s[end - n..end], p) == Some(n)
        })
}

/// sudo: the ` : ` at `c` after the invoking user, with `TTY=` later on.
pub fn sudo_user(cx: &mut Cx, c: usize) -> Option<usize> {
    let s = cx.s;
    // Within 512 bytes and the line: bounded, so that a line of a thousand
    // ` : ` costs a thousand short looks, not a thousand whole-line scans.
    let window = (c + 512).min(s.len());
    let line_end = memchr::memchr(b'\n', &s[c..window]).map_or(window, |n| c + n);
    // The next `TTY=` is looked up once and remembered: a line of a
    // thousand ` : ` (hostile input) costs one search, not a thousand.
    let tty = cx.next_tty(c)?;
    if tty >= line_end {
        return None;
    }
    let end = c - 1;
    let start = name_start_before(s, end, cx.floor())?;
    if ends_pseudonym(s, end) {
        return None;
    }
    cx.rewrite_login(start, end);
    Some(c + 1)
}

/// `/home/NAME`: the `/` at `c` ends `/home`.
pub fn home_dir(cx: &mut Cx, c: usize) -> Option<usize> {
    let s = cx.s;
    if !s[..c].ends_with(b"/home") {
        return None;
    }
    let lead = c - 5;
    if lead > 0
        && (s[lead - 1].is_ascii_alphanumeric() || matches!(s[lead - 1], b'.' | b'_' | b'-' | b'~'))
    {
        return None;
    }
    let q = c + 1;
    if let Some(n) = hash::pseudonym_len_at(s, q) {
        cx.settle(q + n);
        return Some(q + n);
    }
    let end = name_end(s, q)?;
    cx.rewrite_login(q, end);
    Some(end)
}

/// Dovecot's services and passdbs, which log as `NAME(user...)`.
const DOVECOT: &[&[u8]] = &[
    b"imap",
    b"pop3",
    b"lmtp",
    b"lda",
    b"managesieve",
    b"submission",
    b"doveadm",
    b"indexer-worker",
    b"quota-status",
    b"pam",
    b"passwd",
    b"passwd-file",
    b"shadow",
    b"sql",
    b"ldap",
    b"checkpassword",
    b"static",
    b"oauth2",
    b"lua",
    b"bsdauth",
];

/// The end of the name or pseudonym at `q`; `q` itself when there is none.
fn slot_end(s: &[u8], q: usize) -> usize {
    hash::pseudonym_len_at(s, q).map_or_else(|| name_end(s, q).unwrap_or(q), |n| q + n)
}

/// util-linux su and runuser: `(to NEW) OLD on TTY`, optionally after
/// `FAILED SU `; the `(` at `c`. The spans of both names.
fn su_shape(s: &[u8], c: usize) -> Option<[(usize, usize); 2]> {
    let new = c + 4;
    if !s[c..].starts_with(b"(to ") {
        return None;
    }
    let new_end = slot_end(s, new);
    if new_end == new || !s[new_end..].starts_with(b") ") {
        return None;
    }
    // The invoking user is empty when su cannot tell who ran it.
    let old = new_end + 2;
    let old_end = slot_end(s, old);
    let tty = s[old_end..].strip_prefix(b" on ")?;
    const TTYS: &[&[u8]] = &[b"pts/", b"tty", b"console", b"none", b"/dev/"];
    TTYS.iter()
        .any(|t| tty.starts_with(t))
        .then_some([(new, new_end), (old, old_end)])
}

/// cron: `(NAME) CMD (command)` (cronie also writes `CMDOUT` and `CMDEND`);
/// the `(` at `c`. The span of the name.
fn cron_shape(s: &[u8], c: usize) -> Option<(usize, usize)> {
    let q = c + 1;
    let end = slot_end(s, q);
    let verb = s[end..].strip_prefix(b") ")?;
    let shaped = [&b"CMD ("[..], b"CMDOUT (", b"CMDEND ("]
        .iter()
        .any(|v| verb.starts_with(v));
    (end > q && shaped).then_some((q, end))
}

/// A `(` at `c`: su's `(to root) alice on pts/0`, cron's `(alice) CMD (`,
/// and dovecot's `imap(alice)`.
pub fn paren(cx: &mut Cx, c: usize) -> Option<usize> {
    let s = cx.s;
    // su and cron open their lines with the `(`: it starts the text or
    // follows a space (as the output has it, for a second pass).
    if cx.out_byte_before(c, 1).is_none_or(|b| b == b' ') {
        if let Some([(a, b), (x, y)]) = su_shape(s, c) {
            cx.rewrite_login(a, b);
            cx.rewrite_login(x, y);
            return Some(y);
        }
        if let Some((a, b)) = cron_shape(s, c) {
            cx.rewrite_login(a, b);
            return Some(b);
        }
    }
    let floor = cx.floor();
    // The word before the `(`.
    let mut w = c;
    while w > floor
        && (s[w - 1].is_ascii_alphanumeric() || matches!(s[w - 1], b'-' | b'_' | b'.' | b'$'))
    {
        w -= 1;
    }
    if w == c || (w == floor && w > 0 && s[w - 1].is_ascii_alphanumeric()) {
        return None;
    }
    let word = &s[w..c];
    if DOVECOT.contains(&word) {
        let q = c + 1;
        if let Some(n) = hash::pseudonym_len_at(s, q) {
            cx.settle(q + n);
            return Some(q + n);
        }
        let end = name_end(s, q)?;
        if !matches!(s.get(end), Some(b')' | b',')) {
            return None;
        }
        cx.rewrite_login(q, end);
        return Some(end);
    }
    None
}

/// ECS keys naming a person inside a `user` object.
const ECS_NAME_KEYS: &[&[u8]] = &[b"name", b"full_name"];
/// Objects inside `user` that describe another user.
const ECS_USER_CHILDREN: &[&[u8]] = &[b"target", b"effective", b"changes"];

/// Whether the quoted key starting at `i` (after its `"`) is a person's name
/// in an ECS `user` object: `"user":{"name":...}`. Reads the text before `i`
/// as the output has it, so a rewrite earlier in the object does not hide
/// the object from this pass or the next.
pub fn ecs_user_name_key(cx: &Cx, i: usize, key_end: usize) -> bool {
    let s = cx.s;
    if !ECS_NAME_KEYS.iter().any(|k| &s[i..key_end] == *k) {
        return false;
    }
    let back = |k: usize| cx.out_byte_before(i, k);
    // `k` counts back from `i`: k = 1 is the key's opening quote.
    let Some(key) = enclosing_key(&back, 2) else {
        return false;
    };
    if key.is(b"user") {
        return true;
    }
    ECS_USER_CHILDREN.iter().any(|c| key.is(c))
        && enclosing_key(&back, key.next_k).is_some_and(|k| k.is(b"user"))
}

/// The key of the object enclosing the byte `k` places back.
struct Key {
    /// The key, reversed, and its length (keys longer than 32 bytes are
    /// none of ours).
    rev: [u8; 32],
    len: usize,
    /// Where to go on looking back: just before the key's opening quote.
    next_k: usize,
}

/// Looks back from `k` (bytes from `back`) for the `{` opening the
/// enclosing object, then for `"key":` before it. Bounded to 2 KiB.
fn enclosing_key(back: &impl Fn(usize) -> Option<u8>, mut k: usize) -> Option<Key> {
    const LIMIT: usize = 2048;
    let start = k;
    let mut depth = 0usize;
    loop {
        if k - start > LIMIT {
            return None;
        }
        match back(k)? {
            b'"' => {
                // Skip back over a string to its opening quote.
                k += 1;
                loop {
                    if k - start > LIMIT {
                        return None;
                    }
                    if back(k)? == b'"' {
                        let mut slashes = 0;
                        while back(k + 1 + slashes) == Some(b'\\') {
                            slashes += 1;
                        }
                        if slashes % 2 == 0 {
                            break;
                        }
                    }
                    k += 1;
                }
            }
            b'}' | b']' => depth += 1,
            b'[' if depth == 0 => return None,
            b'{' if depth == 0 => break,
            b'{' | b'[' => depth -= 1,
            _ => {}
        }
        k += 1;
    }
    // `"key" : {`
    k += 1;
    while back(k) == Some(b' ') {
        k += 1;
    }
    if back(k)? != b':' {
        return None;
    }
    k += 1;
    while back(k) == Some(b' ') {
        k += 1;
    }
    if back(k)? != b'"' {
        return None;
    }
    let mut key = Key {
        rev: [0; 32],
        len: 0,
        next_k: 0,
    };
    k += 1;
    loop {
        let b = back(k)?;
        if b == b'"' {
            break;
        }
        *key.rev.get_mut(key.len)? = b;
        key.len += 1;
        k += 1;
    }
    key.next_k = k + 1;
    Some(key)
}

impl Key {
    fn is(&self, name: &[u8]) -> bool {
        name.len() == self.len && name.iter().rev().eq(self.rev[..self.len].iter())
    }
}

/// Whether a `(` at `c` may open one of the shapes above.
pub fn paren_worth_a_look(s: &[u8], c: usize) -> bool {
    su_shape(s, c).is_some() || may_be_cron(s, c) || DOVECOT.iter().any(|d| s[..c].ends_with(d))
}

/// A cheap superset of [`cron_shape`] for the prefilter, which meets every
/// `(` of every line: the name or pseudonym (its bytes are name bytes and
/// `:`) and then `) CMD`, without the pseudonym checks.
fn may_be_cron(s: &[u8], c: usize) -> bool {
    let q = c + 1;
    let len = s[q..]
        .iter()
        .take_while(|&&b| is_name_byte(b) || b == b':')
        .count();
    s[q + len..].starts_with(b") CMD")
}

/// The phrase before the `:` of Nextcloud's failed logins.
const NEXTCLOUD_LEAD: &[u8] = b"Login failed";

/// Whether the `:` at `c` may end [`NEXTCLOUD_LEAD`] (for the prefilter).
pub fn nextcloud_worth_a_look(s: &[u8], c: usize) -> bool {
    s[..c].ends_with(NEXTCLOUD_LEAD)
}

/// Nextcloud: `Login failed: NAME (Remote IP: 203.0.113.7)`; the `:` at `c`.
/// The name is what was typed at the login form, spaces and all, so the whole
/// text up to ` (Remote IP: ` is rewritten (inside its quotes if Nextcloud
/// quoted it, without the ` disabled` it adds for a disabled account).
pub fn nextcloud_login_failed(cx: &mut Cx, c: usize) -> Option<usize> {
    let s = cx.s;
    // Every `key: value` colon comes here: one byte turns nearly all away.
    if c == 0 || s[c - 1] != b'd' || !cx.follows(c, NEXTCLOUD_LEAD) {
        return None;
    }
    let q = c + 2;
    let end = q + remote_ip_at(&s[q..])?;
    let mut v = (q, end);
    if let Some(stripped) = s[v.0..v.1].strip_suffix(b" disabled") {
        v.1 = v.0 + stripped.len();
    }
    if v.1 - v.0 >= 2 && s[v.0] == b'\'' && s[v.1 - 1] == b'\'' {
        v = (v.0 + 1, v.1 - 1);
    }
    cx.rewrite_login(v.0, v.1);
    Some(end)
}

/// Where ` (Remote IP: ` starts in `rest`, within 256 bytes, on the same line
/// and inside the same JSON string (an unescaped `"` ends the search).
fn remote_ip_at(rest: &[u8]) -> Option<usize> {
    const MARK: &[u8] = b" (Remote IP: ";
    let mut k = 0;
    while k < rest.len().min(256) {
        match rest[k] {
            b'\n' | b'"' => return None,
            b'\\' => k += 2,
            b' ' if rest[k..].starts_with(MARK) => return Some(k),
            _ => k += 1,
        }
    }
    None
}
