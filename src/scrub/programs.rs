//! Login shapes particular to one program's log lines that a row of the
//! shape table (`shapes`) cannot say, each anchored at a punctuation byte
//! the prefilter stops at.
//!
//! | program | example | rewritten | anchor |
//! |---|---|---|---|
//! | any | `/home/alice/.ssh/authorized_keys`, `PWD=/home/alice` | `alice`: a home directory names its user | the `/` after `home` |
//! | Nextcloud | `Login failed: alice (Remote IP: 203.0.113.7)`, `Login failed: 'alice' (...`, `alice disabled (...` | what was typed, up to ` (Remote IP: ` | the `:` after `failed` |
//! | ECS JSON | `"user":{"name":"alice"}`, `"user":{"target":{"full_name":"Alice B"}}` | `name` and `full_name` in a `user` object (or its `target`, `effective`, `changes`) | the `:` after the key |
//!
//! sudo, su, cron and dovecot are rows of `shapes`. Why these stay code:
//! `/home/` starts a path anywhere in any program's line; Nextcloud's
//! login is whatever was typed, spaces and quotes included, up to a mark
//! (no slot of the table takes text ending at a mark with its own
//! quoting rules); ECS names a person by the keys of enclosing objects.
//!
//! Decisions: `/home/` must start a path (not after a letter, digit, `.`,
//! `_`, `-` or `~`: `/srv/home/x` is not a home directory). In ECS JSON
//! only the person-naming keys are logins: `user.id` and `user.group.name`
//! stay. Nextcloud writes whatever was typed at the
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
