//! Field values already found clean, so a connection's constant fields are
//! scanned once instead of once per event.
//!
//! A Docker event carries its container's id, its tag and its stream as
//! fields: the same text in every event of a connection, and about a third
//! of the bytes the scrubber scanned per event (2.9k of 13.8k instructions
//! of a Docker-shaped event, measured with callgrind). Scanning a field
//! depends only on its name and text (not on the rest of the event nor on
//! the time: a text with nothing to rewrite has nothing hashed), so a value
//! that scrubbed to itself, and recognised no name, will do so again.
//! Such a field is still swept for the names found elsewhere in its event
//! (`everywhere`): only its own scan is skipped.
//!
//! The memo keeps, per field name, the last values found clean: a ring of
//! [`FieldMemo::new`]'s one (a Docker connection: its constant fields) or
//! [`FieldMemo::recent`]'s few (a journal, whose units interleave, so a
//! field such as `_COMM` alternates between a handful of values; one slot
//! missed ~2.8 of an entry's 6 fields). Slots are overwritten in place (no
//! allocation once warm, even for a field whose value changes with every
//! event). It is only valid for the [`super::Scrubber`] that filled it:
//! keep one per connection or source, never share it between scrubbers.
//!
//! Names and values are compared with [`same_bytes`], inline: they are
//! short (a pid, a unit, a stream), and a memcmp call for each was most of
//! a memo hit.

use crate::event::same_bytes;

/// Most field names remembered; the rest are scanned every time. Docker
/// sends 3 constant fields (plus the labels and env the `labels`/`env`
/// log-opts name).
const MAX_NAMES: usize = 8;
/// Longest value remembered, in bytes (Docker's container id is 64, its
/// default tag 12): with [`MAX_NAMES`], at most ~2 KiB per connection,
/// 2 MiB for the default 1024 connections, whatever clients send.
const MAX_VALUE_BYTES: usize = 256;

/// Most values remembered per name by [`FieldMemo::recent`]: with
/// [`MAX_NAMES`] and [`MAX_VALUE_BYTES`], at most 16 KiB per source.
const MAX_RECENT: usize = 8;

/// Per field name, the last values found to scrub to themselves. See the
/// module doc.
#[derive(Debug)]
pub struct FieldMemo {
    slots: Vec<Slot>,
    /// Values kept per name.
    depth: usize,
}

/// One field name's values, replaced oldest first.
#[derive(Debug)]
struct Slot {
    name: String,
    values: Vec<String>,
    next: usize,
}

impl Default for FieldMemo {
    fn default() -> FieldMemo {
        FieldMemo::new()
    }
}

impl FieldMemo {
    /// One value per name: for a source whose fields are constant per
    /// memo (a Docker connection), ~2 KiB at most.
    pub fn new() -> FieldMemo {
        FieldMemo {
            slots: Vec::new(),
            depth: 1,
        }
    }

    /// The last few values per name: for a source whose fields alternate
    /// (the journal's units interleave).
    pub fn recent() -> FieldMemo {
        FieldMemo {
            slots: Vec::new(),
            depth: MAX_RECENT,
        }
    }

    /// The slot of field `name`, the event's field number `k`. A source
    /// sends its fields in the same order event after event, and slots are
    /// made in the order first found clean, so slot `k` is nearly always
    /// the one: one comparison of names instead of a search.
    #[inline]
    fn slot(&self, k: usize, name: &str) -> Option<&Slot> {
        match self.slots.get(k) {
            Some(s) if same_bytes(s.name.as_bytes(), name.as_bytes()) => Some(s),
            _ => self
                .slots
                .iter()
                .find(|s| same_bytes(s.name.as_bytes(), name.as_bytes())),
        }
    }

    /// Whether `value` of field `name` (the event's field number `k`, a
    /// hint only) was found clean before.
    #[inline]
    pub(super) fn is_clean(&self, k: usize, name: &str, value: &str) -> bool {
        self.slot(k, name).is_some_and(|s| {
            s.values
                .iter()
                .any(|v| same_bytes(v.as_bytes(), value.as_bytes()))
        })
    }

    /// Remembers that `value` of field `name` scrubbed to itself and
    /// recognised no name.
    pub(super) fn found_clean(&mut self, name: &str, value: &str) {
        if value.len() > MAX_VALUE_BYTES {
            return;
        }
        if let Some(slot) = self.slots.iter_mut().find(|s| s.name == name) {
            if slot.values.len() < self.depth {
                slot.values.push(value.to_owned());
            } else {
                let v = &mut slot.values[slot.next];
                v.clear();
                v.push_str(value);
                slot.next = (slot.next + 1) % self.depth;
            }
        } else if self.slots.len() < MAX_NAMES {
            self.slots.push(Slot {
                name: name.to_owned(),
                values: vec![value.to_owned()],
                next: 0,
            });
        }
    }

    /// Values remembered, over all names.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.slots.iter().map(|s| s.values.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Event, Origin};
    use crate::scrub::tests::scrubber_with;

    fn event(ts: i64, message: &str, fields: &[(&str, &str)]) -> Event {
        let mut e = Event::new(ts, Origin::Docker, message);
        e.fields = fields
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        e
    }

    /// A stream of events as one connection sends them, where constant
    /// fields hold names and addresses that other events reveal: with the
    /// memo warm, every event comes out byte for byte as without it.
    #[test]
    fn a_memo_changes_no_result() {
        let id = "3f1c2a9b8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a";
        let events = [
            event(
                1,
                "starting",
                &[
                    ("container_id", id),
                    ("note", "box of bob"),
                    ("stream", "stdout"),
                ],
            ),
            event(
                2,
                "user=bob logged in",
                &[
                    ("container_id", id),
                    ("note", "box of bob"),
                    ("stream", "stdout"),
                ],
            ),
            event(
                3,
                "GET / 200",
                &[
                    ("container_id", id),
                    ("note", "box of bob"),
                    ("stream", "stderr"),
                ],
            ),
            event(
                4,
                "login: alice@example.org",
                &[
                    ("container_id", id),
                    ("note", "alice@example.org"),
                    ("stream", "stderr"),
                ],
            ),
            event(
                5,
                "x",
                &[
                    ("container_id", id),
                    ("note", "from 203.0.113.7"),
                    ("user", "carol"),
                ],
            ),
            event(
                6,
                "user=carol",
                &[("container_id", id), ("note", "carol"), ("user", "carol")],
            ),
            event(
                7,
                "nothing",
                &[("container_id", id), ("note", "carol"), ("user", "root")],
            ),
            event(
                8,
                "su dave",
                &[
                    ("container_id", "dave"),
                    ("note", "carol"),
                    ("user", "root"),
                ],
            ),
            event(
                9,
                "user=dave",
                &[
                    ("container_id", "dave"),
                    ("note", "carol"),
                    ("user", "root"),
                ],
            ),
        ];
        for (config, mut memo) in ["", "logins = \"mask\"", "fields = [\"note\", \"user\"]"]
            .into_iter()
            .flat_map(|c| [(c, FieldMemo::new()), (c, FieldMemo::recent())])
        {
            let s = scrubber_with(config);
            for round in 0..3 {
                for e in &events {
                    let (mut plain, mut memoised) = (e.clone(), e.clone());
                    s.scrub(&mut plain);
                    s.scrub_with(&mut memoised, Some(&mut memo));
                    assert_eq!(memoised, plain, "config {config:?}, round {round}");
                }
            }
            // It did remember (and so skip) something.
            assert!(memo.len() > 0, "config {config:?}");
        }
        // The sweep still reaches a field remembered clean: bob, found in
        // event 2's message, is rewritten in its `note`.
        let s = scrubber_with("");
        let mut memo = FieldMemo::new();
        let mut first = events[0].clone();
        s.scrub_with(&mut first, Some(&mut memo));
        assert!(memo.is_clean(1, "note", "box of bob"));
        assert!(memo.is_clean(0, "container_id", id));
        let mut second = events[1].clone();
        s.scrub_with(&mut second, Some(&mut memo));
        assert_ne!(second.field("note"), Some("box of bob"));
    }

    #[test]
    fn one_slot_per_name_and_bounded() {
        let mut memo = FieldMemo::new();
        memo.found_clean("stream", "stdout");
        memo.found_clean("stream", "stderr");
        assert!(memo.is_clean(5, "stream", "stderr") && !memo.is_clean(5, "stream", "stdout"));
        assert!(!memo.is_clean(5, "other", "stderr"));
        for i in 0..100 {
            memo.found_clean(&format!("f{i}"), "v");
        }
        assert_eq!(memo.len(), MAX_NAMES);
        memo.found_clean("long", &"x".repeat(MAX_VALUE_BYTES + 1));
        assert!(!memo.is_clean(5, "long", &"x".repeat(MAX_VALUE_BYTES + 1)));
    }

    /// `recent` keeps the last values of a name (oldest replaced first),
    /// within the same bounds.
    #[test]
    fn recent_keeps_a_ring_per_name() {
        let mut memo = FieldMemo::recent();
        for i in 0..MAX_RECENT {
            memo.found_clean("_COMM", &format!("unit{i}"));
        }
        assert!((0..MAX_RECENT).all(|i| memo.is_clean(5, "_COMM", &format!("unit{i}"))));
        memo.found_clean("_COMM", "newest");
        assert!(memo.is_clean(5, "_COMM", "newest") && !memo.is_clean(5, "_COMM", "unit0"));
        assert!(memo.is_clean(5, "_COMM", "unit1"));
        assert!(!memo.is_clean(5, "_EXE", "unit1"));
        for i in 0..100 {
            for v in 0..20 {
                memo.found_clean(&format!("f{i}"), &format!("v{v}"));
            }
        }
        assert_eq!(memo.len(), MAX_NAMES * MAX_RECENT);
    }

    /// The field number is a hint: a slot is found by its name wherever
    /// it stands, and a slot of another name at that number is no hit.
    #[test]
    fn the_field_number_is_only_a_hint() {
        let mut memo = FieldMemo::new();
        for (name, value) in [("a", "1"), ("b", "2"), ("c", "3")] {
            memo.found_clean(name, value);
        }
        for k in 0..5 {
            assert!(memo.is_clean(k, "b", "2"), "hint {k}");
            assert!(!memo.is_clean(k, "b", "1"), "hint {k}");
            assert!(!memo.is_clean(k, "d", "2"), "hint {k}");
        }
    }
}
