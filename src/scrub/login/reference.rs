//! The login detectors as they were before session 12's fast paths (the
//! `user NAME` shortcut, `is_prose` over integer keys, `not_a_name`), kept
//! for the tests: [`differences`] runs both on every word of a text and
//! tells where they part. Only this file's own copies differ from
//! `login`'s; the helpers they call are `login`'s.

use super::super::everywhere::Seen;
use super::super::scan;
use super::super::Scrubber;
use super::*;

/// Where the detectors of `login` and their reference part on `s`, if
/// anywhere: both are run at every alphanumeric byte (the word to its
/// end), in a fresh scrub, after one whose floor is half way there, and
/// after one whose output holds a login rewritten before it; their answer,
/// the rule, the rewrites and the output must be the same.
pub(in super::super) fn differences(sc: &Scrubber, s: &[u8]) -> Option<String> {
    type Detector = fn(&mut Cx, usize, usize) -> Option<usize>;
    let run = |detector: Detector, i: usize, end: usize, setup: usize| {
        let mut seen = Seen::new();
        let mut cx = Cx::new(sc, s, 1_700_000_000_000_000_000, &mut seen);
        cx.log = Some(Vec::new());
        match setup {
            1 => cx.settle(i / 2),
            2 => cx.rewrite_login(0, i / 2),
            _ => {}
        }
        let next = detector(&mut cx, i, end);
        let rule = cx.rule;
        let log = cx.log.take();
        (next, rule, log, cx.finish())
    };
    for i in 0..s.len() {
        if !s[i].is_ascii_alphanumeric() {
            continue;
        }
        let end = scan::word_end(s, i);
        for setup in 0..3 {
            let new = run(super::at_word, i, end, setup);
            let old = run(at_word, i, end, setup);
            if new != old {
                return Some(format!(
                    "at_word at {i} (setup {setup}) of {:?}: {new:?}, the reference {old:?}",
                    String::from_utf8_lossy(s)
                ));
            }
        }
    }
    None
}

pub(super) fn login_key(word: &[u8]) -> Option<bool> {
    // Every key ends in `user`, `name`, `ogin` or `mail` (any case): one
    // 4-byte compare turns nearly every word away.
    let tail: [u8; 4] = word.get(word.len().checked_sub(4)?..)?.try_into().ok()?;
    let tail = (u32::from_le_bytes(tail) | 0x2020_2020).to_le_bytes();
    if !matches!(&tail, b"user" | b"name" | b"ogin" | b"mail" | b"ount") {
        return None;
    }
    let is = |k: &[u8]| word.eq_ignore_ascii_case(k);
    if is(b"user") {
        return Some(true);
    }
    if is(b"account") {
        return Some(false);
    }
    if [
        &b"username"[..],
        b"login",
        b"logname",
        b"email",
        b"ruser",
        b"uname",
    ]
    .iter()
    .any(|k| is(k))
    {
        return Some(false);
    }
    // camelCase: `ClientUsername`, `remoteUser`, `userEmail`.
    for k in [&b"username"[..], b"user", b"login", b"email"] {
        if word.len() > k.len() {
            let cut = word.len() - k.len();
            let tail = &word[cut..];
            if tail[0].is_ascii_uppercase()
                && word[cut - 1].is_ascii_lowercase()
                && tail.eq_ignore_ascii_case(k)
            {
                return Some(false);
            }
        }
    }
    None
}

pub(super) const NOT_NAMES: &[&[u8]] = &[
    b"-",
    b"--",
    // login(1) has pam_unix write `logname=LOGIN` before anyone logged in.
    b"LOGIN",
    b"null",
    b"nil",
    b"none",
    b"true",
    b"false",
    b"undefined",
];

pub(super) fn is_prose(v: &[u8]) -> bool {
    let mut buf = [0u8; PROSE_LONGEST];
    let Some(lower) = buf.get_mut(..v.len()) else {
        return false;
    };
    for (l, c) in lower.iter_mut().zip(v) {
        *l = c.to_ascii_lowercase();
    }
    // Compared in a byte loop: `Ord` for slices calls memcmp at each step.
    PROSE
        .binary_search_by(|w| {
            w.iter()
                .zip(lower.iter())
                .map(|(a, b)| a.cmp(b))
                .find(|o| o.is_ne())
                .unwrap_or_else(|| w.len().cmp(&lower.len()))
        })
        .is_ok()
}

fn at_word(cx: &mut Cx, i: usize, end: usize) -> Option<usize> {
    let s = cx.s;
    let word = &s[i..end];
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
    let mut b = i;
    while b > cx.floor() && i - b < 32 && (s[b - 1].is_ascii_alphanumeric() || s[b - 1] == b'_') {
        b -= 1;
    }
    let (k, json) = secrets::quoted_key_end(s, b, k);
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
    if v.is_empty() || NOT_NAMES.iter().any(|n| v.eq_ignore_ascii_case(n)) {
        return (after > q).then_some(after);
    }
    if prose_check && is_prose(v) {
        return None;
    }
    cx.rewrite_login(vs, ve);
    Some(after)
}

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
