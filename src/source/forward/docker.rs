//! Record -> [`Event`]: the Docker `fluentd` log driver's record shape, and
//! any other Forward client's.
//!
//! Docker sends `{container_id, container_name, source, log}` plus the
//! container labels and environment variables named by the `labels`/`env`
//! log-opts, and `partial_*` keys on pieces of a line longer than 16 KiB.
//!
//! | record key                   | becomes                                       |
//! |------------------------------|-----------------------------------------------|
//! | `log` (else `message`, else `msg`) | the message                             |
//! | `container_name`             | label `container_name` (leading `/` removed)  |
//! | `com.docker.compose.project` | label `app`                                   |
//! | `com.docker.compose.service` | label `service` (else the container name)     |
//! | `source` = `stdout`/`stderr` | label `level` `info`/`error`, field `stream`  |
//! | `level` (non-Docker records) | label `level` when it names a severity        |
//! | the frame's tag              | field `tag`                                   |
//! | `partial_*`                  | consumed by reassembly ([`super::partial`])   |
//! | anything else                | a field (strings as text, other values as JSON) |

use crate::event::{same_bytes, Event, Level, Origin};

use super::decode::{write_json, Record, Value};

/// The `partial_*` keys of one piece of a split line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partial {
    pub id: String,
    pub ordinal: u64,
    pub last: bool,
}

/// Maps one record. Returns the event and, for a piece of a split line, its
/// partial metadata.
pub fn to_event(tag: &str, record: &Record<'_>) -> (Event, Option<Partial>) {
    let mut event = Event::new(record.time_ns, Origin::Docker, Vec::new());
    let partial = fill_event(&mut event, tag, record);
    (event, partial)
}

/// Maps one record into `event`, overwriting everything in it except the
/// `host` label (which is [`crate::ingest::Ingest`]'s: Docker records carry
/// none). `event` may be one used before: its strings are refilled in place,
/// so a connection that reuses its events allocates nothing per event once
/// warm. The result is the same as [`to_event`]'s, host aside.
pub fn fill_event(event: &mut Event, tag: &str, record: &Record<'_>) -> Option<Partial> {
    fill_event_like(event, None, tag, record)
}

/// [`fill_event`], given the event built before this one from the same
/// client (`like`: most of its labels and fields are this one's too, the
/// same container's). A reused event that held another client's strings
/// takes those `like` holds from it (a copy) instead of checking the
/// record's bytes as UTF-8 again: events come back from the source's
/// shared pool with another container's id, name and tag, and checking
/// them was about 500 instructions per event (callgrind). The result is
/// exactly [`fill_event`]'s whatever `like` holds.
pub fn fill_event_like(
    event: &mut Event,
    like: Option<&Event>,
    tag: &str,
    record: &Record<'_>,
) -> Option<Partial> {
    let message = message_entry(record);
    event.timestamp_ns = record.time_ns;
    event.origin = Origin::Docker;
    event.message.clear();
    let labels = &mut event.labels;
    let like_labels = like.map(|e| &e.labels);
    labels.level = None;
    labels.unit = None;
    let (mut app, mut service, mut container_name) = (false, false, false);
    let mut fields = Fields::new(&mut event.fields, like.map(|e| &e.fields[..]));
    let mut partial_flag = false;
    let mut partial_id = None;
    let mut partial_ordinal = 0;
    let mut partial_last = false;
    let mut docker_stream = false;
    for (i, &(key, value)) in record.entries.iter().enumerate() {
        // Keys are matched as bytes; only a key kept as a field name needs
        // to be UTF-8 (others are dropped: a log record cannot name them).
        if let Some(m) = message {
            if i == m.at {
                match value {
                    Value::Str(s) => event.message.extend_from_slice(s),
                    other => event.message.extend_from_slice(text(other).as_bytes()),
                }
                continue;
            }
            // (A repeated key: the last one wins, as for every other key.)
            if m.repeated && same_bytes(m.key, key) {
                continue;
            }
        }
        match key {
            b"container_name" => {
                let name = match value {
                    Value::Str([b'/', rest @ ..]) => Value::Str(rest),
                    other => other,
                };
                set_text(
                    labels.container_name.get_or_insert_with(String::new),
                    name,
                    || like_labels.and_then(|l| l.container_name.as_deref()),
                );
                container_name = true;
            }
            b"com.docker.compose.project" => {
                set_text(labels.app.get_or_insert_with(String::new), value, || {
                    like_labels.and_then(|l| l.app.as_deref())
                });
                app = true;
            }
            b"com.docker.compose.service" => {
                set_text(
                    labels.service.get_or_insert_with(String::new),
                    value,
                    || like_labels.and_then(|l| l.service.as_deref()),
                );
                service = true;
            }
            b"source" if matches!(value, Value::Str(b"stdout") | Value::Str(b"stderr")) => {
                let stderr = matches!(value, Value::Str(b"stderr"));
                labels.level = Some(if stderr { Level::Error } else { Level::Info });
                fields.push_str("stream", if stderr { "stderr" } else { "stdout" });
                docker_stream = true;
            }
            b"partial_message" => partial_flag = matches!(value, Value::Str(b"true")),
            b"partial_id" => partial_id = Some(text(value)),
            b"partial_ordinal" => partial_ordinal = text(value).parse().unwrap_or(0),
            b"partial_last" => partial_last = matches!(value, Value::Str(b"true")),
            _ => fields.push(key, value),
        }
    }
    // (Checked as UTF-8 once per frame, by the decoder.)
    fields.push_str("tag", tag);
    fields.finish();
    // Labels this record did not set must not keep a value from the event's
    // previous use.
    if !app {
        labels.app = None;
    }
    if !container_name {
        labels.container_name = None;
    }
    if !docker_stream {
        // A non-Docker client naming its own severity.
        if let Some(i) = event.fields.iter().position(|(k, _)| k == "level") {
            if let Some(level) = Level::parse(&event.fields[i].1.to_ascii_lowercase()) {
                labels.level = Some(level);
                event.fields.remove(i);
            }
        }
    }
    if !service {
        // The service defaults to the container name.
        match &labels.container_name {
            Some(name) => {
                let s = labels.service.get_or_insert_with(String::new);
                if !same_bytes(s.as_bytes(), name.as_bytes()) {
                    s.clear();
                    s.push_str(name);
                }
            }
            None => labels.service = None,
        }
    }
    match (partial_flag, partial_id) {
        (true, Some(id)) => Some(Partial {
            id,
            ordinal: partial_ordinal,
            last: partial_last,
        }),
        _ => None,
    }
}

/// Where a record's message is: see [`message_entry`].
#[derive(Clone, Copy)]
struct MessageEntry<'a> {
    key: &'a [u8],
    /// The index of the last entry with that key.
    at: usize,
    /// Another entry has that key too.
    repeated: bool,
}

/// The key of `record` whose value is the message: `log`, else `message`,
/// else `msg`, and where its (last) value is. One walk over the record,
/// not one per key; building the event then tells the message by its
/// index, not by comparing every key with this one (4 compares per Docker
/// event, about 60 instructions, callgrind).
fn message_entry<'a>(record: &Record<'a>) -> Option<MessageEntry<'a>> {
    let mut best: Option<(u8, MessageEntry<'a>)> = None;
    for (at, &(key, _)) in record.entries.iter().enumerate() {
        let rank = match key {
            b"log" => 0,
            b"message" => 1,
            b"msg" => 2,
            _ => continue,
        };
        match &mut best {
            Some((r, m)) if *r == rank => {
                m.at = at;
                m.repeated = true;
            }
            Some((r, _)) if *r < rank => {}
            _ => {
                best = Some((
                    rank,
                    MessageEntry {
                        key,
                        at,
                        repeated: false,
                    },
                ))
            }
        }
    }
    best.map(|(_, m)| m)
}

/// Writes the fields of one event over those of its previous use, reusing
/// their strings; [`Fields::finish`] drops what is left over.
struct Fields<'e> {
    fields: &'e mut Vec<(String, String)>,
    /// The fields of the client's previous event, to copy from.
    like: &'e [(String, String)],
    used: usize,
}

impl<'e> Fields<'e> {
    fn new(
        fields: &'e mut Vec<(String, String)>,
        like: Option<&'e [(String, String)]>,
    ) -> Fields<'e> {
        Fields {
            fields,
            like: like.unwrap_or_default(),
            used: 0,
        }
    }

    /// Adds a field; a key that is not UTF-8 is dropped.
    fn push(&mut self, key: &[u8], value: Value<'_>) {
        // The previous event's field at this place, if it has this key:
        // looked at only when this event's field differs (as a spare
        // refilled for the same client seldom does).
        let likes: &'e [(String, String)] = self.like;
        let used = self.used;
        let like = || {
            likes
                .get(used)
                .filter(|(k, _)| same_bytes(k.as_bytes(), key))
        };
        if used == self.fields.len() {
            self.fields.push((String::new(), String::new()));
        }
        let (k, v) = &mut self.fields[used];
        if !same_bytes(k.as_bytes(), key) {
            let key = match like() {
                Some((k, _)) => k.as_str(),
                None => match std::str::from_utf8(key) {
                    Ok(key) => key,
                    Err(_) => return,
                },
            };
            k.clear();
            k.push_str(key);
        }
        set_text(v, value, || like().map(|(_, v)| v.as_str()));
        self.used += 1;
    }

    /// Adds a field whose key and value are known to be text. Inlined:
    /// its keys are constants, and so mostly are its values (`stdout`),
    /// whose compares then shrink to a word or two.
    #[inline(always)]
    fn push_str(&mut self, key: &str, value: &str) {
        if self.used == self.fields.len() {
            self.fields.push((String::new(), String::new()));
        }
        let (k, v) = &mut self.fields[self.used];
        self.used += 1;
        for (s, new) in [(k, key), (v, value)] {
            if !same_bytes(s.as_bytes(), new.as_bytes()) {
                s.clear();
                s.push_str(new);
            }
        }
    }

    fn finish(self) {
        self.fields.truncate(self.used);
    }
}

/// Sets `s` to a value's text. A reused event usually held the same text
/// (a connection's container id, name, stream and tag repeat): comparing
/// is cheaper than validating and copying again; and when `like` (the
/// same field of the client's previous event) holds it, it is copied from
/// there, already known to be text.
fn set_text<'l>(s: &mut String, value: Value<'_>, like: impl FnOnce() -> Option<&'l str>) {
    if let Value::Str(b) = value {
        if same_bytes(b, s.as_bytes()) {
            return;
        }
        if let Some(like) = like().filter(|l| same_bytes(l.as_bytes(), b)) {
            s.clear();
            s.push_str(like);
            return;
        }
    }
    s.clear();
    push_text(s, value);
}

/// A value as field text: strings as they are (invalid UTF-8 replaced),
/// everything else as JSON.
fn text(v: Value<'_>) -> String {
    let mut out = String::new();
    push_text(&mut out, v);
    out
}

/// Appends [`text`] of `v` to `out`.
fn push_text(out: &mut String, v: Value<'_>) {
    match v {
        Value::Str(s) => match std::str::from_utf8(s) {
            Ok(s) => out.push_str(s),
            Err(_) => out.push_str(&String::from_utf8_lossy(s)),
        },
        other => write_json(other, out, 0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record<'a>(entries: &[(&'a str, Value<'a>)]) -> Record<'a> {
        Record {
            time_ns: 42,
            entries: entries.iter().map(|(k, v)| (k.as_bytes(), *v)).collect(),
        }
    }

    #[test]
    fn docker_record_maps_to_labels_and_fields() {
        let r = record(&[
            ("container_id", Value::Str(b"abc123")),
            ("container_name", Value::Str(b"/web-1")),
            ("source", Value::Str(b"stderr")),
            ("log", Value::Str(b"boom")),
            ("com.docker.compose.project", Value::Str(b"shop")),
            ("com.docker.compose.service", Value::Str(b"web")),
            ("team", Value::Str(b"blue")),
        ]);
        let (e, p) = to_event("docker.abc123", &r);
        assert_eq!(p, None);
        assert_eq!(e.timestamp_ns, 42);
        assert_eq!(e.message, b"boom");
        assert_eq!(e.labels.container_name.as_deref(), Some("web-1"));
        assert_eq!(e.labels.app.as_deref(), Some("shop"));
        assert_eq!(e.labels.service.as_deref(), Some("web"));
        assert_eq!(e.labels.level, Some(Level::Error));
        assert_eq!(e.field("container_id"), Some("abc123"));
        assert_eq!(e.field("stream"), Some("stderr"));
        assert_eq!(e.field("team"), Some("blue"));
        assert_eq!(e.field("tag"), Some("docker.abc123"));
        assert_eq!(e.field("com.docker.compose.project"), None);
    }

    #[test]
    fn service_falls_back_to_the_container_name() {
        let r = record(&[
            ("container_name", Value::Str(b"/db")),
            ("source", Value::Str(b"stdout")),
            ("log", Value::Str(b"ok")),
        ]);
        let (e, _) = to_event("t", &r);
        assert_eq!(e.labels.service.as_deref(), Some("db"));
        assert_eq!(e.labels.level, Some(Level::Info));
    }

    #[test]
    fn generic_records_use_message_keys_and_keep_the_rest() {
        let r = record(&[
            ("msg", Value::Str(b"second choice")),
            ("message", Value::Str(b"hello")),
            ("level", Value::Str(b"WARN")),
            ("n", Value::UInt(7)),
            ("ok", Value::Bool(true)),
            ("nested", Value::Raw(&[0x81, 0xa1, b'a', 0x92, 0x01, 0xc0])),
        ]);
        let (e, _) = to_event("app.web", &r);
        assert_eq!(e.message, b"hello");
        assert_eq!(e.labels.level, Some(Level::Warning));
        assert_eq!(e.labels.service, None);
        assert_eq!(e.field("msg"), Some("second choice"));
        assert_eq!(e.field("n"), Some("7"));
        assert_eq!(e.field("ok"), Some("true"));
        assert_eq!(e.field("nested"), Some(r#"{"a":[1,null]}"#));
    }

    #[test]
    fn partial_metadata_is_consumed() {
        let r = record(&[
            ("log", Value::Str(b"part")),
            ("partial_message", Value::Str(b"true")),
            ("partial_id", Value::Str(b"p1")),
            ("partial_ordinal", Value::Str(b"2")),
            ("partial_last", Value::Str(b"false")),
        ]);
        let (e, p) = to_event("t", &r);
        assert_eq!(
            p,
            Some(Partial {
                id: "p1".into(),
                ordinal: 2,
                last: false
            })
        );
        assert!(e.fields.iter().all(|(k, _)| !k.starts_with("partial_")));
    }

    #[test]
    fn a_reused_event_is_filled_exactly_like_a_new_one() {
        let docker = record(&[
            ("container_id", Value::Str(b"abc123")),
            ("container_name", Value::Str(b"/web-1")),
            ("source", Value::Str(b"stderr")),
            ("log", Value::Str(b"boom")),
            ("com.docker.compose.project", Value::Str(b"shop")),
            ("com.docker.compose.service", Value::Str(b"web")),
            ("team", Value::Str(b"blue")),
            ("extra", Value::UInt(3)),
        ]);
        let generic = record(&[
            ("message", Value::Str(b"hi")),
            ("level", Value::Str(b"warn")),
        ]);
        let plain = record(&[
            ("container_name", Value::Str(b"/db")),
            ("source", Value::Str(b"stdout")),
            ("log", Value::Str(b"ok")),
        ]);
        let odd = Record {
            time_ns: 9,
            entries: vec![
                (&b"\xffkey"[..], Value::Str(b"dropped")),
                (b"container_id", Value::Str(b"\xffid")),
                (b"container_name", Value::Str(b"no-slash")),
                (b"log", Value::UInt(5)),
            ],
        };
        let records = [
            &docker, &generic, &plain, &docker, &odd, &docker, &plain, &generic,
        ];
        let mut reused = Event::new(0, Origin::Journal, "old");
        reused.labels.unit = Some("old.service".into());
        reused.labels.host = Some("agent".into());
        for (i, r) in records.iter().enumerate() {
            let tag = format!("tag{i}");
            let (mut fresh, fresh_partial) = to_event(&tag, r);
            assert_eq!(fill_event(&mut reused, &tag, r), fresh_partial);
            // The host label is the one thing left as it was.
            fresh.labels.host = Some("agent".into());
            assert_eq!(reused, fresh, "record {i}");
        }
        // Given any event built before as `like` (the same record's, another
        // record's, one with another tag), every pair of records comes out
        // as a new event would.
        let likes: Vec<Event> = records
            .iter()
            .flat_map(|r| [to_event("tag0", r).0, to_event("other", r).0])
            .collect();
        for like in &likes {
            for (i, r) in records.iter().enumerate() {
                for (j, before) in records.iter().enumerate() {
                    let tag = format!("tag{}", i % 2);
                    let (mut reused, _) = to_event("old", before);
                    let (fresh, fresh_partial) = to_event(&tag, r);
                    assert_eq!(
                        fill_event_like(&mut reused, Some(like), &tag, r),
                        fresh_partial
                    );
                    assert_eq!(reused, fresh, "record {i} over {j}");
                }
            }
        }
    }

    #[test]
    fn the_message_is_log_else_message_else_msg() {
        let m = |entries: &[(&'static str, Value<'static>)]| {
            let (e, _) = to_event("t", &record(entries));
            (String::from_utf8(e.message.clone()).unwrap(), e.fields)
        };
        let s = |b: &'static [u8]| Value::Str(b);
        let (msg, fields) = m(&[("msg", s(b"c")), ("message", s(b"b")), ("log", s(b"a"))]);
        assert_eq!(msg, "a");
        assert_eq!(fields.len(), 3, "{fields:?}");
        assert_eq!(m(&[("msg", s(b"c")), ("message", s(b"b"))]).0, "b");
        assert_eq!(m(&[("message", s(b"b")), ("msg", s(b"c"))]).0, "b");
        assert_eq!(m(&[("x", s(b"x")), ("msg", s(b"c"))]).0, "c");
        assert_eq!(m(&[("x", s(b"x"))]).0, "");
        // A repeated key: the last one.
        assert_eq!(m(&[("log", s(b"1")), ("log", s(b"2"))]).0, "2");
    }

    /// The message key as it was found before `message_entry`: the
    /// reference the message and fields are compared with.
    fn message_key_reference<'a>(record: &Record<'a>) -> Option<&'a [u8]> {
        let mut best: Option<(usize, &'a [u8])> = None;
        for &(key, _) in &record.entries {
            let rank = match key {
                b"log" => return Some(key),
                b"message" => 1,
                b"msg" => 2,
                _ => continue,
            };
            if best.is_none_or(|(r, _)| rank < r) {
                best = Some((rank, key));
            }
        }
        best.map(|(_, key)| key)
    }

    proptest::proptest! {
        /// Whatever message keys a record repeats, in whatever order: the
        /// message is the last value of the first-ranked key, which no
        /// field keeps, as when every key was compared with it; also into
        /// a reused event.
        #[test]
        fn the_message_is_the_last_value_of_its_key(
            keys in proptest::collection::vec(0usize..5, 0..9),
        ) {
            const KEYS: [&str; 5] = ["log", "message", "msg", "x", "container_id"];
            let values: Vec<String> = (0..keys.len()).map(|i| format!("v{i}")).collect();
            let entries: Vec<(&str, Value<'_>)> = keys
                .iter()
                .zip(&values)
                .map(|(&k, v)| (KEYS[k], Value::Str(v.as_bytes())))
                .collect();
            let r = record(&entries);
            let key = message_key_reference(&r);
            let mut message = Vec::new();
            let mut fields = Vec::new();
            for &(k, v) in &r.entries {
                match v {
                    Value::Str(v) if Some(k) == key => message = v.to_vec(),
                    Value::Str(v) => fields.push((
                        String::from_utf8(k.to_vec()).unwrap(),
                        String::from_utf8(v.to_vec()).unwrap(),
                    )),
                    _ => unreachable!(),
                }
            }
            fields.push(("tag".to_string(), "t".to_string()));
            let (e, _) = to_event("t", &r);
            proptest::prop_assert_eq!(&e.message, &message);
            proptest::prop_assert_eq!(&e.fields, &fields);
            let mut reused = to_event("old", &record(&[("log", Value::Str(b"old"))])).0;
            let like = e.clone();
            fill_event_like(&mut reused, Some(&like), "t", &r);
            proptest::prop_assert_eq!(&reused, &e);
        }
    }
}
