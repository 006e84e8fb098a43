//! The account tools of shadow-utils (useradd, groupadd, usermod, userdel,
//! passwd, chage, chsh): their syslog lines name accounts in fixed phrases.
//! The quoted phrases (`add 'alice' to group 'sudo'`, `password for 'alice'
//! changed by 'root'`, `removed group 'alice' owned by 'alice'`, ...) are
//! rows of the shape table (`shapes`, slots `%q` and `%Q`); this module
//! holds the one shape that is a key instead:
//!
//! | program | example | rewritten | anchor |
//! |---|---|---|---|
//! | useradd | `new user: name=alice, UID=1001, GID=1001, home=/home/alice, ...` | `alice` (and the home directory, see `programs`) | the `=` after `name` |
//! | groupadd, useradd | `new group: name=alice, GID=1001`, `group added to /etc/gshadow: name=alice` | `alice` | the `=` after `name` |
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
//! `add 'milk' to cart` and `add 'x' to group sudo` are left alone.

use super::cx::Cx;

/// Paths longer than this are no `--prefix` of shadow-utils.
const MAX_NAME: usize = 256;

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
