//! Credentials (kind `secrets`, action `secrets`, default `mask`).
//!
//! | shape | example | rewritten |
//! |---|---|---|
//! | secret key, `k=v`, `k: v`, `"k":"v"` | `password=hunter2`, `"client_secret": "x"`, `db_password: x`, `?access_token=x&` | the value |
//! | Authorization header | `Authorization: Basic Ym9i...`, `"authorization":"Bearer x"`, `Proxy-Authorization: Digest ...` | the credential after the scheme (Digest: every parameter) |
//! | curl's `-u`/`--user` | `curl -u bob:hunter2 https://...` | the user as a login, the password as a secret |
//! | URL userinfo, DSN | `https://bob:pw@host/`, `postgres://app:pa55@db/app` | the password (the user is a login; see `login`) |
//! | PEM private key | `-----BEGIN RSA PRIVATE KEY-----...-----END RSA PRIVATE KEY-----` | the body between the lines |
//!
//! Secret keys (any case, alone or as the last word of `_`/`-`/camelCase
//! compounds: `db_password`, `clientSecret`, `X-Api-Key`): `password`,
//! `passwd`, `pass`, `pwd`, `passphrase`, `secret`, `token`, `apikey`,
//! `key` after `api`. Not keys: `token_type`, `passwords_checked` (the key
//! must end at the separator), `"secret": false` and other non-values (`-`,
//! `null`, `true`, ...). A bare value runs to whitespace or one of
//! `, ; & " ' ) ] } >`: passwords hold any other punctuation.
//!
//! `-u user:pass` where both sides are digits is `docker run -u 1000:1000`,
//! a UID and GID, and stays.

use super::cx::Cx;
use super::hash;

/// The lower-cased last word of a compound key (`db_password` ->
/// `password`, `clientSecret` -> `secret`), and the word before it.
fn last_words(word: &[u8]) -> (&[u8], &[u8]) {
    let mut cut = word.len();
    while cut > 0 {
        let c = word[cut - 1];
        if matches!(c, b'_' | b'-' | b'.') {
            break;
        }
        cut -= 1;
        if c.is_ascii_uppercase() && cut > 0 && word[cut - 1].is_ascii_lowercase() {
            break;
        }
    }
    let last = &word[cut..];
    let head = &word[..cut];
    let head = head.strip_suffix(b"_").unwrap_or(head);
    let head = head.strip_suffix(b"-").unwrap_or(head);
    let head = head.strip_suffix(b".").unwrap_or(head);
    (last, head)
}

/// Whether `key` (a whole key, `a-z A-Z 0-9 _ - .`) names a credential.
pub fn secret_key(key: &[u8]) -> bool {
    // `PWD=/home/alice` (sudo, env dumps) is the working directory.
    if key.len() < 3 || key.len() > 48 || key == b"PWD" || key == b"OLDPWD" {
        return false;
    }
    // `PGPASSWORD`, `MYSQL_ROOT_PASSWORD`, `GITHUB_TOKEN`: environment
    // variables glue the words in capitals.
    if key
        .iter()
        .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == b'_')
        && [&b"PASSWORD"[..], b"PASSWD", b"SECRET", b"TOKEN"]
            .iter()
            .any(|k| key.ends_with(k))
    {
        return true;
    }
    let (last, head) = last_words(key);
    let is = |k: &[u8]| last.eq_ignore_ascii_case(k);
    if [
        &b"password"[..],
        b"passwd",
        b"pass",
        b"pwd",
        b"passphrase",
        b"secret",
        b"token",
        b"apikey",
    ]
    .iter()
    .any(|k| is(k))
    {
        return true;
    }
    // `api_key`, `apiKey`, `X-Api-Key`.
    is(b"key") && last_words(head).0.eq_ignore_ascii_case(b"api")
}

/// Whether `key` is `Authorization` or `Proxy-Authorization`.
fn authorization_key(key: &[u8]) -> bool {
    last_words(key).0.eq_ignore_ascii_case(b"authorization")
}

/// For the prefilter: whether the bytes before `end` may end a secret key
/// or `authorization` (checked again, exactly, by the detector).
pub fn key_tail(s: &[u8], end: usize) -> bool {
    // The last byte first (every tail below ends in one of these, any
    // case): it turns most keys away at once (`level=`, `caller=`).
    if end == 0 || !matches!(s[end - 1] | 0x20, b'd' | b's' | b'e' | b't' | b'n' | b'y') {
        return false;
    }
    if end >= 3 && s[end - 3..end].eq_ignore_ascii_case(b"pwd") {
        return true;
    }
    let Some(t) = end.checked_sub(4).map(|b| &s[b..end]) else {
        return false;
    };
    let t = (u32::from_le_bytes([t[0], t[1], t[2], t[3]]) | 0x2020_2020).to_le_bytes();
    matches!(
        &t,
        b"word" | b"sswd" | b"pass" | b"rase" | b"cret" | b"oken" | b"ikey" | b"\x7fkey" | b"-key"
    ) || (&t == b"tion" && end >= 13 && s[end - 13..end].eq_ignore_ascii_case(b"authorization"))
}

/// The whole key that ends at `end` and whose last word starts at `i`:
/// back over `_`, `-`, `.` and alphanumerics (not before `floor`).
fn key_start(s: &[u8], i: usize, floor: usize) -> usize {
    let mut b = i;
    while b > floor && (s[b - 1].is_ascii_alphanumeric() || matches!(s[b - 1], b'_' | b'-' | b'.'))
    {
        b -= 1;
    }
    b
}

/// A word `s[i..end]` that may end a secret key: if the key is one and a
/// value follows (`=`, `:`, JSON), rewrites it. Returns where the walk goes.
pub fn at_key(cx: &mut Cx, i: usize, end: usize) -> Option<usize> {
    let s = cx.s;
    if !key_tail(s, end) {
        return None;
    }
    let b = key_start(s, i, cx.floor());
    let key = &s[b..end];
    let auth = authorization_key(key);
    if !auth && !secret_key(key) {
        return None;
    }
    // The separator: `=`, `: `, `":"`, `\":\"`, `" : "`.
    let (k, json) = quoted_key_end(s, b, end);
    let q = match s.get(k)? {
        b'=' if s.get(k + 1) != Some(&b'=') && !json => k + 1,
        b':' if json => skip_spaces(s, k + 1),
        // `password: x`, `db_password: x` (YAML, headers): at most two
        // words, so that a function's label (`check_ntlm_password:`) is not
        // taken for a key.
        b':' if s.get(k + 1) == Some(&b' ') && yaml_or_header_key(key) => skip_spaces(s, k + 1),
        b' ' if json => {
            let p = skip_spaces(s, k);
            (s.get(p) == Some(&b':')).then(|| skip_spaces(s, p + 1))?
        }
        _ => return None,
    };
    let (vs, ve, after) = value_span(s, q)?;
    if auth {
        let (cs, ce) = credential(s, vs, ve)?;
        cx.rewrite_secret(cs, ce);
        // The credential may run past the value's first word.
        return Some(after.max(ce));
    }
    let v = &s[vs..ve];
    const NOT_VALUES: &[&[u8]] = &[
        b"-",
        b"null",
        b"nil",
        b"none",
        b"true",
        b"false",
        b"undefined",
        b"*",
        b"***",
        // MySQL's `(using password: YES)`.
        b"yes",
        b"no",
        // Asterisk's `UsingPassword="1"`: a flag.
        b"0",
        b"1",
        // Rails' `filter_parameters` placeholder (GitLab, Mastodon): the
        // value is already gone.
        b"[FILTERED]",
    ];
    if v.is_empty() || NOT_VALUES.iter().any(|n| v.eq_ignore_ascii_case(n)) {
        return Some(after.max(q));
    }
    cx.rewrite_secret(vs, ve);
    Some(after)
}

/// Whether `key` before `: ` is a YAML key or an HTTP header (`password`,
/// `db_password`, `X-Api-Key`) rather than a function's label in a
/// message (`check_ntlm_password:`): at most two words, or a header's
/// capitalised words joined by `-`.
fn yaml_or_header_key(key: &[u8]) -> bool {
    let seps = key
        .iter()
        .filter(|&&c| matches!(c, b'_' | b'-' | b'.'))
        .count();
    seps <= 1
        || key
            .split(|&c| c == b'-')
            .all(|w| w.first().is_some_and(u8::is_ascii_uppercase))
}

fn skip_spaces(s: &[u8], mut p: usize) -> usize {
    while s.get(p) == Some(&b' ') {
        p += 1;
    }
    p
}

/// Where a bare secret value ends: whitespace or a delimiter of the text
/// around it, never other punctuation (passwords hold any).
fn bare_end(s: &[u8], q: usize) -> usize {
    q + s[q..]
        .iter()
        .take(4096)
        .take_while(|&&c| {
            !(c.is_ascii_whitespace()
                || matches!(
                    c,
                    b',' | b';' | b'&' | b'"' | b'\'' | b')' | b']' | b'}' | b'>'
                ))
        })
        .count()
}

/// The value at `q`: quoted (`"`, `'`, `\"`) or bare. Its span and where the
/// walk goes on.
fn value_span(s: &[u8], q: usize) -> Option<(usize, usize, usize)> {
    match s.get(q) {
        Some(&quote @ (b'"' | b'\'')) => {
            let close = closing(s, q + 1, quote)?;
            Some((q + 1, close, close + 1))
        }
        // A JSON array of strings (Caddy's headers): the first string.
        Some(b'[') if s.get(q + 1) == Some(&b'"') => {
            let close = closing(s, q + 2, b'"')?;
            Some((q + 2, close, close + 1))
        }
        Some(b'\\') if s.get(q + 1) == Some(&b'"') => {
            let window = &s[q + 2..(q + 2 + 4096).min(s.len())];
            let close = q + 2 + memchr::memmem::find(window, b"\\\"")?;
            Some((q + 2, close, close + 2))
        }
        Some(_) => {
            let e = bare_end(s, q);
            Some((q, e, e))
        }
        None => None,
    }
}

/// The closing quote of a string starting at `p`, within 4 KiB on one line.
fn closing(s: &[u8], p: usize, quote: u8) -> Option<usize> {
    let mut i = p;
    while i < s.len() && i - p < 4096 {
        match s[i] {
            b'\n' => return None,
            b'\\' => i += 2,
            c if c == quote => return Some(i),
            _ => i += 1,
        }
    }
    None
}

/// The credential in an Authorization value `s[vs..ve]`: after the scheme
/// word (`Basic`, `Bearer`, `token`, ...), or all of it without one. A
/// bare value stopped at the space after the scheme, so it runs on here.
fn credential(s: &[u8], vs: usize, ve: usize) -> Option<(usize, usize)> {
    let scheme = s[vs..ve]
        .iter()
        .take_while(|c| c.is_ascii_alphabetic())
        .count();
    let after_scheme = vs + scheme;
    if scheme > 0 && s.get(after_scheme) == Some(&b' ') {
        let cs = skip_spaces(s, after_scheme);
        let quoted = vs > 0 && matches!(s[vs - 1], b'"' | b'\'');
        let ce = if quoted {
            ve
        } else if s[vs..after_scheme].eq_ignore_ascii_case(b"digest") {
            // Digest's parameters are quoted and comma-separated: to the
            // end of the line.
            memchr::memchr(b'\n', &s[cs..]).map_or(s.len(), |n| cs + n)
        } else {
            bare_end(s, cs)
        };
        return (ce > cs).then_some((cs, ce));
    }
    (ve > vs && after_scheme != ve).then_some((vs, ve))
}

/// curl's `-u user:pass` / `--user user:pass`: the `:` at `c`.
pub fn curl_user(cx: &mut Cx, c: usize) -> Option<usize> {
    let s = cx.s;
    // Every lead holds `-u`: a text without it (nearly all) is done here,
    // at the cost of one search per text.
    if !cx.curl_possible() {
        return None;
    }
    // The lead (` -u `, ` --user `, ` --user=`, then maybe a quote) ends at
    // most 65 bytes before `c`, so its `-` is in the 80 bytes before it:
    // one vectorised look spares the byte loop below at every other `:`.
    memchr::memchr(b'-', &s[c.saturating_sub(80)..c])?;
    let floor = cx.floor();
    // A user name is short: 64 bytes back at most, so a line of colons
    // (hostile input) costs a short look per colon.
    let mut b = c;
    while b > floor && !matches!(s[b - 1], b' ' | b'=' | b'"' | b'\'') {
        if c - b == 64 {
            return None;
        }
        b -= 1;
    }
    let lead = &s[..b];
    let quote = if b > 0 && matches!(s[b - 1], b'"' | b'\'') {
        Some(s[b - 1])
    } else {
        None
    };
    let lead = if quote.is_some() {
        &lead[..lead.len() - 1]
    } else {
        lead
    };
    if !(lead.ends_with(b" -u ") || lead.ends_with(b" --user ") || lead.ends_with(b" --user=")) {
        return None;
    }
    // `-u u:3f9a2b1c5d:REDACTED`: scrubbed by an earlier pass; the user
    // ends after the pseudonym, not at its own `:`.
    if let Some(n) = hash::pseudonym_len_at(s, b) {
        if c < b + n {
            cx.settle(b + n);
            return Some(b + n);
        }
    }
    let ps = c + 1;
    let pe = match quote {
        Some(q) => ps + memchr::memchr(q, &s[ps..])?,
        None => bare_end(s, ps),
    };
    let (user, pass) = (&s[b..c], &s[ps..pe]);
    if user.iter().all(u8::is_ascii_digit) && pass.iter().all(u8::is_ascii_digit) {
        return None; // `-u 1000:1000`: a UID and a GID
    }
    if hash::pseudonym_len_at(s, b).is_some() {
        cx.settle(c);
    } else {
        cx.rewrite_login(b, c);
    }
    cx.rewrite_secret(ps, pe);
    Some(pe.max(c + 1))
}

/// Whether the `:` at `c` may be curl's `-u user:pass` (for the prefilter).
pub fn curl_worth_a_look(s: &[u8], c: usize) -> bool {
    // A user name is short: 64 bytes back at most (every `:` of a JSON line
    // comes here; a longer look-back would cost each of them).
    // A vectorised search: most `:` (JSON keys, times) have no space in
    // the 64 bytes before them, and a byte loop there cost 8% of the time.
    let start = c.saturating_sub(64);
    let b = memchr::memrchr(b' ', &s[start..c]).map(|p| start + p);
    b.is_some_and(|b| {
        let lead = &s[..=b];
        let lead = lead.strip_suffix(b"\"").unwrap_or(lead);
        lead.ends_with(b" -u ")
            || lead.ends_with(b" --user ")
            || s[b + 1..c].starts_with(b"--user=")
            || s[b + 1..c].starts_with(b"\"")
            || s[b + 1..c].starts_with(b"'")
    })
}

/// PEM private-key blocks: the body between `-----BEGIN ... PRIVATE
/// KEY-----` and its `-----END` line (or the end of the text) is replaced
/// by `mask`, whatever the `secrets` action (a key is never hashed: it is
/// long, and worthless as a pseudonym). `None` when there is none.
pub fn pem_blocks(s: &[u8], mask: &[u8]) -> Option<Vec<u8>> {
    const HEAD_END: &[u8] = b"PRIVATE KEY-----";
    // Built once: every text of every event is searched.
    static FINDER: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
        std::sync::LazyLock::new(|| memchr::memmem::Finder::new(HEAD_END));
    let finder = &*FINDER;
    let mut out: Option<Vec<u8>> = None;
    let mut copied = 0;
    let mut at = 0;
    while let Some(n) = finder.find(&s[at..]) {
        let body = at + n + HEAD_END.len();
        // The header's own `-----BEGIN`: it must be there, or this is the
        // END line of a block already handled or cut.
        let line_start = s[..at + n]
            .iter()
            .rposition(|&c| c == b'\n')
            .map_or(0, |p| p + 1);
        let head = &s[line_start.max((at + n).saturating_sub(64))..at + n];
        if memchr::memmem::find(head, b"-----BEGIN ").is_none() {
            at = body;
            continue;
        }
        let end = memchr::memmem::find(&s[body..], b"-----END ").map_or(s.len(), |m| body + m);
        let (is, ie) = trim(s, body, end);
        at = end.max(body);
        if is == ie || &s[is..ie] == mask {
            continue;
        }
        let buf = out.get_or_insert_with(|| Vec::with_capacity(s.len()));
        buf.extend_from_slice(&s[copied..is]);
        buf.extend_from_slice(mask);
        copied = ie;
    }
    let mut buf = out?;
    buf.extend_from_slice(&s[copied..]);
    Some(buf)
}

/// `s[a..b]` without leading and trailing whitespace (and `\n` escapes, as
/// JSON strings hold them).
fn trim(s: &[u8], mut a: usize, mut b: usize) -> (usize, usize) {
    loop {
        let before = (a, b);
        while a < b && s[a].is_ascii_whitespace() {
            a += 1;
        }
        while b > a && s[b - 1].is_ascii_whitespace() {
            b -= 1;
        }
        if s[a..b].starts_with(b"\\n") {
            a += 2;
        }
        if s[a..b].ends_with(b"\\n") {
            b -= 2;
        }
        if (a, b) == before {
            return (a, b);
        }
    }
}

/// Where a key that starts at `b` and ends at `k` really ends when it is
/// quoted: past its closing `"` (JSON) or `\"` (JSON inside a string), and
/// whether it was. Shared by the secret and the login keys.
pub(super) fn quoted_key_end(s: &[u8], b: usize, k: usize) -> (usize, bool) {
    if b >= 2 && &s[b - 2..b] == b"\\\"" && s[k..].starts_with(b"\\\"") {
        (k + 2, true)
    } else if b >= 1 && s[b - 1] == b'"' && s.get(k) == Some(&b'"') {
        (k + 1, true)
    } else {
        (k, false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys() {
        for k in [
            "password",
            "PASSWORD",
            "db_password",
            "passwd",
            "pass",
            "pwd",
            "secret",
            "client_secret",
            "clientSecret",
            "token",
            "access_token",
            "refresh-token",
            "api_key",
            "apiKey",
            "X-Api-Key",
            "apikey",
            "passphrase",
        ] {
            assert!(secret_key(k.as_bytes()), "{k}");
            assert!(key_tail(k.as_bytes(), k.len()), "tail of {k}");
        }
        for k in [
            "token_type",
            "passwords",
            "key",
            "monkey",
            "ssh_key",
            "user",
            "bypass",
            "compass",
        ] {
            assert!(!secret_key(k.as_bytes()), "{k}");
        }
        assert!(authorization_key(b"Proxy-Authorization"));
        assert!(key_tail(b"Authorization", 13));
    }

    #[test]
    fn pem() {
        let s = b"key: -----BEGIN RSA PRIVATE KEY-----\nMIIEow\nIBAAK\n-----END RSA PRIVATE KEY----- done";
        let out = pem_blocks(s, b"REDACTED").unwrap();
        assert_eq!(
            out,
            b"key: -----BEGIN RSA PRIVATE KEY-----\nREDACTED\n-----END RSA PRIVATE KEY----- done"
        );
        assert!(pem_blocks(&out, b"REDACTED").is_none());
        assert!(pem_blocks(b"-----BEGIN PUBLIC KEY-----\nabc\n", b"REDACTED").is_none());
        let cut = b"-----BEGIN OPENSSH PRIVATE KEY-----\\nb3BlbnNz";
        assert_eq!(
            pem_blocks(cut, b"REDACTED").unwrap(),
            b"-----BEGIN OPENSSH PRIVATE KEY-----\\nREDACTED"
        );
    }
}
