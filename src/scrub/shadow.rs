//! The account tools of shadow-utils (useradd, groupadd, usermod, userdel,
//! passwd, chage, chsh): their syslog lines name accounts in fixed phrases.
//!
//! | program | example | rewritten | anchor |
//! |---|---|---|---|
//! | useradd | `new user: name=alice, UID=1001, GID=1001, home=/home/alice, ...` | `alice` (and the home directory, see `programs`) | the `=` after `name` |
//! | groupadd, useradd | `new group: name=alice, GID=1001`, `group added to /etc/gshadow: name=alice` | `alice` | the `=` after `name` |
//! | useradd, usermod | `add 'alice' to group 'sudo'`, ``add `alice' to shadow group `sudo'`` | `alice`; the group stays | the opening quote |
//! | userdel, usermod | `delete 'alice' from group 'sudo'`, `delete 'alice' from shadow group 'sudo'` | `alice`; the group stays | the opening quote |
//! | userdel | `removed group 'alice' owned by 'alice'` | both | the opening quote |
//! | usermod | `change user name 'alice' to 'alice2'`, `change 'alice' to 'alice2' in group 'sudo'` | both names; the group stays | the opening quote |
//! | passwd | `password for 'alice' changed by 'root'`, `password locked for 'alice'` | the names | the opening quote |
//! | passwd, chsh | `now < minimum age for 'alice'`, `can't change shell for 'alice'` | `alice` | the opening quote |
//!
//! Lines with `user 'NAME'` (`delete user 'alice'`, `lock user 'alice'
//! password`) are the `user NAME` shape of `login`; pam_unix's `password
//! changed for alice` is its `for NAME` shape.
//!
//! Decisions: `name=` is no login key (`name=nginx` names a container); it
//! is one only after `new user: `, `new group: ` and `group added to PATH: `
//! (PATH an absolute path: `/etc/group`, `/etc/gshadow`, or under a
//! `--prefix`). A new group is nearly always a user's private group, named
//! after the user, so its name is rewritten too, and so is userdel's
//! `removed group 'NAME'` (it removes only a group named after the user):
//! the cost is that a system group made by `groupadd docker` is hashed as
//! well. Groups in membership lines (`to group 'sudo'`) are shared groups and
//! stay. A quoted shape matches only as a whole, from the phrase before the
//! first quote (not glued to a word: `readd` is not `add`) to its last quote:
//! `add 'milk' to cart` and `add 'x' to group sudo` are left alone. The
//! quotes are `'NAME'` (shadow 4.2 on) or `` `NAME' `` (4.1); a name is
//! anything up to the closing `'` on the line, at most 256 bytes.

use super::cx::Cx;

/// The quoted shapes: `%n` is a quoted name (rewritten), `%g` a quoted group
/// name (kept). The text before the first `%` is the phrase looked behind
/// for at the opening quote, which the prefilter anchors at.
const QUOTED: &[&[u8]] = &[
    b"add %n to group %g",
    b"add %n to shadow group %g",
    b"delete %n from group %g",
    b"delete %n from shadow group %g",
    b"removed group %n owned by %n",
    b"removed shadow group %n owned by %n",
    b"change user name %n to %n",
    b"change %n to %n in group %g",
    b"change %n to %n in shadow group %g",
    b"change admin %n to %n in shadow group %g",
    b"password for %n changed by %n",
    b"password locked for %n",
    b"minimum age for %n",
    b"change shell for %n",
];

/// Names longer than this are no account names (Linux allows 32 bytes).
const MAX_NAME: usize = 256;

/// The phrase of a shape: its text before the first slot.
fn lead(shape: &[u8]) -> &[u8] {
    let first = memchr::memchr(b'%', shape).unwrap_or(shape.len());
    &shape[..first]
}

/// A quoted name at `p` (`'x'` or `` `x' ``): the span inside the quotes.
fn slot(s: &[u8], p: usize) -> Option<(usize, usize)> {
    if !matches!(s.get(p)?, b'\'' | b'`') {
        return None;
    }
    let q = p + 1;
    let window = &s[q..(q + MAX_NAME + 1).min(s.len())];
    let len = window.iter().position(|&c| c == b'\'' || c == b'\n')?;
    (len > 0 && window[len] == b'\'').then_some((q, q + len))
}

/// A quoted shape matched: where it ends, and the spans of its names.
struct Match {
    end: usize,
    /// The spans inside the quotes of its `%n` slots, in order (every shape
    /// has one or two).
    names: [(usize, usize); 2],
    n: usize,
}

/// Matches `shape` from its first slot at `c`.
fn match_shape(s: &[u8], c: usize, shape: &[u8]) -> Option<Match> {
    let mut names = [(0, 0); 2];
    let mut n = 0;
    let mut p = c;
    let mut k = lead(shape).len();
    while k < shape.len() {
        if shape[k] == b'%' {
            let (vs, ve) = slot(s, p)?;
            if shape[k + 1] == b'n' {
                *names.get_mut(n)? = (vs, ve);
                n += 1;
            }
            p = ve + 1;
            k += 2;
        } else {
            let lit_end = memchr::memchr(b'%', &shape[k..]).map_or(shape.len(), |m| k + m);
            if !s[p..].starts_with(&shape[k..lit_end]) {
                return None;
            }
            p += lit_end - k;
            k = lit_end;
        }
    }
    Some(Match { end: p, names, n })
}

/// An opening quote at `c`: one of the quoted shapes, whose phrase comes
/// right before it. Rewrites its names; returns where the walk goes on.
pub fn quoted(cx: &mut Cx, c: usize) -> Option<usize> {
    let s = cx.s;
    for shape in QUOTED {
        if !cx.follows(c, lead(shape)) {
            continue;
        }
        if let Some(m) = match_shape(s, c, shape) {
            for &(vs, ve) in &m.names[..m.n] {
                cx.rewrite_login(vs, ve);
            }
            return Some(m.end);
        }
    }
    None
}

/// Whether a quote at `c` may open one of the quoted shapes: it follows one
/// of their phrases (each ends with a space).
pub fn quote_worth_a_look(s: &[u8], c: usize) -> bool {
    c > 0 && s[c - 1] == b' ' && QUOTED.iter().any(|shape| s[..c].ends_with(lead(shape)))
}

/// Whether the word `name` at `i` (followed by `=`) is useradd's or
/// groupadd's: after `new user: `, `new group: ` or `group added to PATH: `.
pub fn account_name_key(cx: &Cx, i: usize) -> bool {
    if cx.follows(i, b"new user: ") || cx.follows(i, b"new group: ") {
        return true;
    }
    // `group added to /etc/group: `: back over the path to its `/`.
    let Some(colon) = i.checked_sub(2).filter(|&k| &cx.s[k..i] == b": ") else {
        return false;
    };
    let path = cx.s[..colon]
        .iter()
        .rev()
        .take(MAX_NAME)
        .take_while(|&&b| b != b' ')
        .count();
    let start = colon - path;
    path > 0 && cx.s[start] == b'/' && cx.follows(start, b"group added to ")
}
