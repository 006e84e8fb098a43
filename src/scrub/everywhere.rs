//! Recognise once, replace everywhere: a login or e-mail address that a
//! detector recognised anywhere in an event (its message or a field) is
//! rewritten the same way at every whole-token occurrence in that event:
//! `user=heidi ... GET /files/heidi/`, `/@alice`, `'heidi'` in an SQL
//! statement. Detectors find names by their context; the same name
//! elsewhere in the event has none, but is no less the person's.
//!
//! A whole token is not glued to a letter, digit, `_` or non-ASCII byte on
//! either side, nor to a `.` or `-` that joins it to more of a word
//! (`heidi.txt`, `x-heidi`, `heidi-laptop` stay). Names shorter than 3
//! bytes or without a letter (`user=1000`: a UID as well) are not swept:
//! too many innocent tokens share them. At most [`MAX_NAMES`] distinct
//! names are swept for per event (the first ones recognised).

use memchr::memmem;

/// A name recognised in the event and what it was rewritten to.
pub struct Name {
    pub from: Vec<u8>,
    pub to: Vec<u8>,
    /// The search for `from`, built once per event ([`Name::new`]) rather
    /// than once per text swept: building one costs about 650
    /// instructions, more than searching an event's short fields.
    finder: memmem::Finder<'static>,
}

impl Name {
    pub fn new(from: Vec<u8>, to: Vec<u8>) -> Name {
        let finder = memmem::Finder::new(&from).into_owned();
        Name { from, to, finder }
    }
}

/// Most distinct names swept for in one event: a real event names a few
/// people; hostile input naming thousands would cost a search each.
pub const MAX_NAMES: usize = 16;

/// The names recognised in one event, in the order recognised, for the
/// sweep: their bytes one after another in one buffer, with where each
/// ends. One buffer rather than a `Vec` per name (an allocation, a copy
/// and a free per name recognised, ~200 instructions per rewritten login),
/// and that buffer is the thread's spare ([`SPARE`]) when it has one: a
/// scrub that recognises names takes it and gives it back when dropped,
/// so a thread that scrubs line after line allocates none.
pub struct Seen {
    bytes: Vec<u8>,
    ends: [usize; MAX_NAMES],
    len: usize,
}

thread_local! {
    /// The buffer of the last [`Seen`] this thread dropped, cleared; kept
    /// only up to [`SPARE_MAX`] bytes (a hostile event's long names are not
    /// held after it).
    static SPARE: std::cell::Cell<Vec<u8>> = const { std::cell::Cell::new(Vec::new()) };
}

/// The largest buffer a thread keeps as its spare (16 names of 64 bytes).
const SPARE_MAX: usize = 1024;

impl Seen {
    /// No name yet, and no allocation: most texts recognise none.
    pub const fn new() -> Seen {
        Seen {
            bytes: Vec::new(),
            ends: [0; MAX_NAMES],
            len: 0,
        }
    }

    /// How many names are remembered.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Name `k`, in the order remembered.
    pub fn get(&self, k: usize) -> &[u8] {
        let start = if k == 0 { 0 } else { self.ends[k - 1] };
        &self.bytes[start..self.ends[k]]
    }

    /// The names from the `k`th on, in the order remembered.
    pub fn names_from(&self, k: usize) -> impl Iterator<Item = &[u8]> {
        (k..self.len).map(|j| self.get(j))
    }

    /// Remembers a recognised name for the sweep: if it is worth sweeping
    /// for, new, and fewer than [`MAX_NAMES`] are remembered (hostile input
    /// naming thousands costs nothing each).
    pub fn remember(&mut self, name: &[u8]) {
        if self.len < MAX_NAMES
            && worth_sweeping(name)
            && !self.names_from(0).any(|n| same_bytes(n, name))
        {
            if self.bytes.capacity() == 0 {
                self.bytes = SPARE.try_with(|s| s.take()).unwrap_or_default();
            }
            self.bytes.extend_from_slice(name);
            self.ends[self.len] = self.bytes.len();
            self.len += 1;
        }
    }
}

impl Default for Seen {
    fn default() -> Seen {
        Seen::new()
    }
}

impl Drop for Seen {
    /// Gives the buffer back as the thread's spare (see [`Seen`]).
    fn drop(&mut self) {
        if self.bytes.capacity() == 0 || self.bytes.capacity() > SPARE_MAX {
            return;
        }
        let mut bytes = std::mem::take(&mut self.bytes);
        bytes.clear();
        // During thread teardown the slot may be gone: then it is freed.
        let _ = SPARE.try_with(|s| s.set(bytes));
    }
}

/// `a == b` in a byte loop: for the short names compared at each rewrite,
/// a call to memcmp costs more than the comparison.
#[inline]
pub fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x == y)
}

/// Whether a recognised name is swept for elsewhere (see the module doc).
pub fn worth_sweeping(name: &[u8]) -> bool {
    name.len() >= 3 && name.iter().any(u8::is_ascii_alphabetic)
}

fn glue(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c >= 0x80
}

/// Whether `s[a..b]` is a whole token.
fn whole(s: &[u8], a: usize, b: usize) -> bool {
    let before = |k: usize| a.checked_sub(k).map(|i| s[i]);
    let after = |k: usize| s.get(b + k - 1).copied();
    let glued_before = match before(1) {
        Some(c) if glue(c) => true,
        Some(b'.' | b'-') => before(2).is_some_and(glue),
        _ => false,
    };
    let glued_after = match after(1) {
        Some(c) if glue(c) => true,
        Some(b'.' | b'-') => after(2).is_some_and(glue),
        _ => false,
    };
    !glued_before && !glued_after
}

/// Whether `name` may occur in `s` as a whole token: a quick look before
/// the sweep, which costs a searcher per name and the names' pseudonyms.
/// Nearly always the only occurrence of a name was the one rewritten, so
/// this is `false`; after a few occurrences of its first byte that are not
/// the name it gives up and says `true` (the sweep then looks properly, and
/// a hostile line of near-names stays linear).
pub fn may_occur(s: &[u8], name: &[u8]) -> bool {
    let Some(&first) = name.first() else {
        return false;
    };
    let mut misses = 0;
    for at in memchr::memchr_iter(first, s) {
        if s[at..].starts_with(name) && whole(s, at, at + name.len()) {
            return true;
        }
        misses += 1;
        if misses == 8 {
            return true;
        }
    }
    false
}

/// Replaces every whole-token occurrence of each name in `s`; the spans
/// replaced (of `s`) go to `spans`. `None` when there was none.
pub fn sweep(s: &[u8], names: &[Name], spans: &mut Vec<(usize, usize)>) -> Option<Vec<u8>> {
    if let [name] = names {
        return sweep_one(s, name, spans);
    }
    // A name with no whole occurrence gives no hit: when only one of them
    // may occur (a chain of `@` rewrites a name between each pair and
    // leaves one to the sweep), it is swept alone, with no list of hits to
    // sort.
    let mut live = names.iter().filter(|n| may_occur(s, &n.from));
    match (live.next(), live.next()) {
        (None, _) => return None,
        (Some(name), None) => return sweep_one(s, name, spans),
        _ => {}
    }
    let mut hits: Vec<(usize, usize, usize)> = Vec::new();
    for (k, n) in names.iter().enumerate() {
        for at in n.finder.find_iter(s) {
            let end = at + n.from.len();
            if whole(s, at, end) {
                hits.push((at, end, k));
            }
        }
    }
    if hits.is_empty() {
        return None;
    }
    // Longest first where two names overlap (`alice` in `alice.b@x.org`
    // cannot be whole, but `bob` and `bobby` both may be listed).
    hits.sort_by_key(|&(a, b, _)| (a, std::cmp::Reverse(b)));
    let mut out = Vec::with_capacity(s.len() + 16);
    let mut copied = 0;
    for (a, b, k) in hits {
        if a < copied {
            continue;
        }
        out.extend_from_slice(&s[copied..a]);
        out.extend_from_slice(&names[k].to);
        spans.push((a, b));
        copied = b;
    }
    out.extend_from_slice(&s[copied..]);
    Some(out)
}

/// [`sweep`] for one name (nearly always: a text names one person): its
/// occurrences come in order and do not overlap, so the output is written
/// as they are found, with no list of hits to sort.
fn sweep_one(s: &[u8], name: &Name, spans: &mut Vec<(usize, usize)>) -> Option<Vec<u8>> {
    let mut out: Option<Vec<u8>> = None;
    let mut copied = 0;
    for at in name.finder.find_iter(s) {
        let end = at + name.from.len();
        if !whole(s, at, end) {
            continue;
        }
        let out = out.get_or_insert_with(|| Vec::with_capacity(s.len() + 16));
        out.extend_from_slice(&s[copied..at]);
        out.extend_from_slice(&name.to);
        spans.push((at, end));
        copied = end;
    }
    let mut out = out?;
    out.extend_from_slice(&s[copied..]);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_tokens_only() {
        let names = [Name::new(b"heidi".to_vec(), b"u:0123456789".to_vec())];
        let mut spans = Vec::new();
        let s =
            b"GET /files/heidi/ 'heidi' /@heidi heidi.txt x-heidi heidi-laptop heidis heidi. heidi";
        let out = sweep(s, &names, &mut spans).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "GET /files/u:0123456789/ 'u:0123456789' /@u:0123456789 heidi.txt x-heidi heidi-laptop heidis u:0123456789. u:0123456789"
        );
        assert_eq!(spans.len(), 5);
        assert!(sweep(b"nothing here", &names, &mut spans).is_none());
        assert!(may_occur(s, b"heidi"));
        assert!(!may_occur(b"heidi.txt x-heidi heidis", b"heidi"));
        assert!(!may_occur(b"nothing here", b"heidi"));
        // Many near-misses: it gives up and lets the sweep look.
        assert!(may_occur(&b"hx ".repeat(9), b"heidi"));
        assert!(!worth_sweeping(b"al"));
        assert!(!worth_sweeping(b"1000"));
        assert!(worth_sweeping(b"bob"));
    }

    /// `Seen` keeps what the list of copies it replaced kept: names worth
    /// sweeping, each once, in order, at most `MAX_NAMES`; its buffer is
    /// the thread's spare, given back cleared.
    #[test]
    fn seen_is_a_list_of_distinct_names() {
        let mut want: Vec<Vec<u8>> = Vec::new();
        {
            let mut seen = Seen::new();
            assert!(seen.is_empty());
            for k in 0..100 {
                // Repeats, short names and digit-only names among them.
                let name = match k % 5 {
                    0 => format!("user{}", k % 15),
                    1 => "al".to_owned(),
                    2 => format!("{k}000"),
                    3 => "heidi".to_owned(),
                    _ => format!("n{k}.x@example.org"),
                };
                let name = name.as_bytes();
                if want.len() < MAX_NAMES && worth_sweeping(name) && !want.iter().any(|n| n == name)
                {
                    want.push(name.to_vec());
                }
                seen.remember(name);
                assert_eq!(seen.len(), want.len());
            }
            assert_eq!(seen.len(), MAX_NAMES);
            let got: Vec<&[u8]> = seen.names_from(0).collect();
            assert_eq!(got, want.iter().map(Vec::as_slice).collect::<Vec<_>>());
            let tail: Vec<&[u8]> = seen.names_from(3).collect();
            assert_eq!(tail, got[3..]);
        }
        // Dropped: its buffer is this thread's spare, empty, and the next
        // one starts from it with no name.
        let mut next = Seen::new();
        next.remember(b"carol");
        assert_eq!(next.names_from(0).collect::<Vec<_>>(), [b"carol"]);
        assert!(next.bytes.capacity() >= 16 * 4);
    }

    /// One name swept alone gives what the general path gives for it (a
    /// second name that never occurs sends it there).
    #[test]
    fn one_name_is_the_general_sweep() {
        let absent = Name::new(b"zzzzq".to_vec(), b"u:9999999999".to_vec());
        for (name, text) in [
            ("heidi", "GET /files/heidi/ 'heidi' heidi.txt heidi"),
            ("aa", "aaa aa aa-aa aa.aa aa"),
            ("b1c", &"a.@b1c@m.".repeat(20)),
            ("bob", "nothing here"),
            ("x.y", "x.y x.yx.y @x.y"),
        ] {
            let n = || Name::new(name.as_bytes().to_vec(), b"u:0123456789".to_vec());
            let (mut one, mut general) = (Vec::new(), Vec::new());
            let a = sweep(text.as_bytes(), &[n()], &mut one);
            let b = sweep(
                text.as_bytes(),
                &[n(), Name::new(absent.from.clone(), absent.to.clone())],
                &mut general,
            );
            assert_eq!(a, b, "{name} in {text}");
            assert_eq!(one, general, "{name} in {text}");
        }
    }
}
