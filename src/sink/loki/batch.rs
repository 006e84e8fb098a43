//! Events -> streams -> pushes, each under the hard cap.
//!
//! Events are grouped into streams by the configured label set, entries are
//! sorted by time within each stream (stable: equal timestamps keep their
//! spool order), and streams are packed into pushes whose decoded size is at
//! most `max_push_bytes`. The size is computed exactly from the protobuf
//! encoding (for JSON, the larger of the JSON text and the protobuf Loki turns
//! it into), with a worst-case length prefix per stream, so a planned push can
//! only be smaller than planned. An entry too large for any push on its own is
//! dropped and counted here, before anything is sent: it could never be
//! delivered, and retrying it would loop.
//!
//! Entries are also checked against the limits of Loki's distributor that
//! weir knows before anything is sent (see [`Limits`]): Loki writes the valid
//! entries of a push and answers 400 for the others, so an entry it would
//! refuse must not be sent at all, or isolating it by splitting would send
//! the accepted ones again. Refused here, counted by Loki's reason.
//!
//! Stream cardinality is capped: a sink keeps at most `max_streams` live
//! streams (used within [`STREAM_IDLE`]) and a push holds at most
//! `max_streams_per_push`. An event that would open a stream beyond the cap
//! has its most variable labels ([`DEMOTE_ORDER`], `container_name` first)
//! moved into the line (or structured metadata) until it falls in a live
//! stream; such events are counted.

use std::collections::{BTreeMap, HashMap};

use prost::encoding::{encoded_len_varint, key_len};

use super::encode::{self, Entry, LineBuilder, Stream, Text};
use super::{Config, Encoding};
use crate::event::{same_bytes, Event};

/// One push: its streams (whose lines are in the plan's [`Text`]) and its
/// entry count.
#[derive(Debug, Clone, PartialEq)]
pub struct Push {
    pub streams: Vec<Stream>,
    pub entries: usize,
}

impl Push {
    /// Splits a push of two entries or more into two halves by entry count,
    /// keeping stream and time order (the first half is to be sent first).
    pub fn split(self) -> (Push, Push) {
        assert!(self.entries >= 2, "a single entry cannot be split");
        let half = self.entries / 2;
        let mut first = Vec::new();
        let mut second = Vec::new();
        let mut taken = 0;
        for mut stream in self.streams {
            if taken >= half {
                second.push(stream);
            } else if taken + stream.entries.len() <= half {
                taken += stream.entries.len();
                first.push(stream);
            } else {
                let rest = stream.entries.split_off(half - taken);
                taken = half;
                second.push(Stream {
                    labels: stream.labels.clone(),
                    entries: rest,
                });
                first.push(stream);
            }
        }
        (
            Push {
                streams: first,
                entries: half,
            },
            Push {
                streams: second,
                entries: self.entries - half,
            },
        )
    }
}

/// What planning produced from a batch of events (their lines are in the
/// [`Text`] given to [`Planner::plan`]).
#[derive(Debug, Default)]
pub struct Plan {
    pub pushes: Vec<Push>,
    /// Entries dropped because they could not fit in any push.
    pub too_large: u64,
    /// Lines cut to `max_line_size`.
    pub truncated: u64,
    /// Entries Loki would refuse, not sent, by Loki's reason (`too_old`,
    /// `too_new`, `invalid_labels`).
    pub refused: BTreeMap<&'static str, u64>,
    /// Events whose labels were moved into the line by the stream cap.
    pub demoted: u64,
}

/// Loki's `max_label_value_length` default: a stream with a longer label
/// value is refused whole.
pub const MAX_LABEL_VALUE_BYTES: usize = 2048;
/// A stream unused this long no longer counts as live (Loki's default
/// `chunk_idle_period`).
pub const STREAM_IDLE: std::time::Duration = std::time::Duration::from_secs(30 * 60);
/// Labels moved into the line, in this order, when the stream cap is
/// reached: the most variable first. `host`, `source` and `level` stay.
pub const DEMOTE_ORDER: [&str; 4] = ["container_name", "unit", "app", "service"];

/// The limits entries and streams are checked against before sending.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Entries older than this are refused (`too_old`); `None`: no limit.
    pub max_age_ns: Option<i64>,
    /// Entries further ahead of the clock than this are refused (`too_new`).
    pub max_ahead_ns: i64,
    pub max_streams: usize,
    pub max_streams_per_push: usize,
}

impl Limits {
    fn from_config(c: &Config) -> Limits {
        let ns = |d: std::time::Duration| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX);
        Limits {
            max_age_ns: (!c.reject_older_than.0.is_zero()).then(|| ns(c.reject_older_than.0)),
            max_ahead_ns: ns(c.reject_newer_than.0),
            max_streams: c.max_streams,
            max_streams_per_push: c.max_streams_per_push,
        }
    }
}

/// Builds pushes from events as the config says.
#[derive(Debug, Clone)]
pub struct Planner {
    labels: Vec<&'static str>,
    /// `labels` as bits of [`label_bit`]: one test per label of an event
    /// instead of comparing its name with each configured one.
    selects: u8,
    lines: LineBuilder,
    encoding: Encoding,
    /// `max_push_bytes`: no push is ever larger.
    cap: usize,
    /// The size pushes are packed to: `cap`, or less once the server has
    /// shown a lower limit. An entry above it but under `cap` goes alone.
    target: usize,
    limits: Limits,
    /// Live streams by stream key ([`write_stream_key`]). One lookup per
    /// event (none in a run of one stream) finds both whether the stream is
    /// live and where its entries go in the plan being built.
    live: HashMap<Vec<u8>, Live>,
    /// Numbers the calls of [`Planner::plan`], so that a stream's `slot`
    /// is known to belong to the current one.
    plans: u64,
}

/// A live stream.
#[derive(Debug, Clone)]
struct Live {
    /// Its label set in Loki's syntax, written once when the stream opens.
    labels: String,
    /// When an event last went to it (ns).
    last_ns: i64,
    /// The plan that `slot` belongs to.
    plan: u64,
    /// Its place among that plan's streams.
    slot: usize,
}

impl Live {
    /// This stream's place in plan `plan`, opened there (`streams` gets a
    /// copy of the label string) on its first event of that plan. The
    /// plan's first stream has room for all of `left` (the events not yet
    /// planned): most batches are one stream, whose entries then never move
    /// while it grows.
    fn slot(&mut self, plan: u64, streams: &mut Vec<(String, Vec<Entry>)>, left: usize) -> usize {
        if self.plan != plan {
            self.plan = plan;
            self.slot = streams.len();
            let room = if streams.is_empty() { left } else { 0 };
            streams.push((self.labels.clone(), Vec::with_capacity(room)));
        }
        self.slot
    }
}

/// A selected label: its name, value and [`label_bit`], computed once in the
/// selection loop (a run of one stream compares keys by bit, not by name).
type Selected<'a> = (&'static str, &'a str, u8);

/// Writes the key a stream is known by: for each selected label, its bit
/// ([`label_bit`]), its value's length and the value. It names the same
/// stream as the label string but is cheaper to write (no quoting or
/// escaping: a copy), so the label string is written only when a stream
/// opens. The lengths keep keys unambiguous whatever bytes values hold.
fn write_stream_key(key: &mut Vec<u8>, selected: &[Selected]) {
    key.clear();
    for &(_, v, bit) in selected {
        key.push(bit);
        key.extend_from_slice(&(v.len() as u32).to_le_bytes());
        key.extend_from_slice(v.as_bytes());
    }
}

/// Bytes a stream adds besides its entries: its field key, a worst-case
/// 5-byte length, and the labels field.
fn stream_overhead(labels: &str, encoding: Encoding) -> usize {
    let proto = 1 + 5 + key_len(1) + encoded_len_varint(labels.len() as u64) + labels.len();
    match encoding {
        Encoding::Protobuf => proto,
        // `{"stream":{...},"values":[]},` with every label quoted and escaped.
        Encoding::Json => proto.max(32 + 2 * labels.len()),
    }
}

/// Whether `key` is the stream key of `selected` ([`write_stream_key`]),
/// compared in place: a run of one stream's events (most batches) writes
/// no key.
fn is_stream_key(key: &[u8], selected: &[Selected]) -> bool {
    let mut rest = key;
    for &(_, v, bit) in selected {
        let Some((head, tail)) = rest.split_at_checked(5 + v.len()) else {
            return false;
        };
        // `same_bytes`, not `!=`: a label value is a dozen bytes, and a
        // slice compare is a call to libc's memcmp (callgrind: ~19
        // instructions more per label per event).
        if head[0] != bit
            || head[1..5] != (v.len() as u32).to_le_bytes()
            || !same_bytes(&head[5..], v.as_bytes())
        {
            return false;
        }
        rest = tail;
    }
    rest.is_empty()
}

/// A bit per name of [`super::LABEL_NAMES`] (0 for any other name).
fn label_bit(name: &str) -> u8 {
    // The order of LABEL_NAMES (a test checks it).
    match name {
        "host" => 1,
        "source" => 2,
        "app" => 4,
        "service" => 8,
        "container_name" => 16,
        "unit" => 32,
        "level" => 64,
        _ => 0,
    }
}

/// An event's labels as [`crate::event::Labels::pairs`] gives them, `None`
/// for those it lacks, each at the index of its [`label_bit`]: no name is
/// compared per event to find its bit (a test checks the order).
fn label_values(event: &Event) -> [(&'static str, Option<&str>); 7] {
    let l = &event.labels;
    [
        ("host", l.host.as_deref()),
        ("source", Some(event.origin.as_str())),
        ("app", l.app.as_deref()),
        ("service", l.service.as_deref()),
        ("container_name", l.container_name.as_deref()),
        ("unit", l.unit.as_deref()),
        ("level", l.level.map(crate::event::Level::as_str)),
    ]
}

/// Sorts entries by time, equal times in their order (a stable sort).
/// Entries already in order (one source writing, the usual case) are only
/// checked: the sort would allocate its scratch buffer first.
fn sort_by_time(entries: &mut [Entry]) {
    if !entries.is_sorted_by_key(|e| e.ts_ns) {
        entries.sort_by_key(|e| e.ts_ns);
    }
}

/// `{"streams":[]}`.
const JSON_PUSH_OVERHEAD: usize = 14;

impl Planner {
    pub fn new(config: &Config) -> Planner {
        Planner {
            labels: config.labels.clone(),
            selects: config.labels.iter().fold(0, |m, l| m | label_bit(l)),
            lines: LineBuilder {
                format: config.line_format,
                structured_metadata: config.structured_metadata,
                max_line_size: config.max_line_size.0 as usize,
            },
            encoding: config.encoding,
            cap: config.max_push_bytes.0 as usize,
            target: config.max_push_bytes.0 as usize,
            limits: Limits::from_config(config),
            live: HashMap::new(),
            plans: 0,
        }
    }

    /// Streams used within [`STREAM_IDLE`].
    pub fn live_streams(&self) -> usize {
        self.live.len()
    }

    /// Why Loki would refuse `event`, if it would; `long_label`: one of
    /// its selected labels is longer than Loki takes.
    fn refusal(&self, event: &Event, long_label: bool, now_ns: i64) -> Option<&'static str> {
        let ts = event.timestamp_ns;
        if self
            .limits
            .max_age_ns
            .is_some_and(|age| ts < now_ns.saturating_sub(age))
        {
            return Some("too_old");
        }
        if ts > now_ns.saturating_add(self.limits.max_ahead_ns) {
            return Some("too_new");
        }
        long_label.then_some("invalid_labels")
    }

    /// The place in this plan's `streams` of the live stream `key`, marked
    /// used at `now_ns`; `None` if it is not live.
    fn live_slot(
        &mut self,
        key: &[u8],
        now_ns: i64,
        streams: &mut Vec<(String, Vec<Entry>)>,
        left: usize,
    ) -> Option<usize> {
        let live = self.live.get_mut(key)?;
        live.last_ns = now_ns;
        Some(live.slot(self.plans, streams, left))
    }

    /// Makes `key` (whose labels are `selected`) a live stream used at
    /// `now_ns` and returns its place in this plan's `streams`.
    fn open_stream(
        &mut self,
        key: &[u8],
        selected: &[Selected],
        now_ns: i64,
        streams: &mut Vec<(String, Vec<Entry>)>,
        left: usize,
    ) -> usize {
        let mut live = Live {
            labels: encode::label_string(selected.iter().map(|&(k, v, _)| (k, v))),
            last_ns: now_ns,
            plan: 0,
            slot: 0,
        };
        let slot = live.slot(self.plans, streams, left);
        self.live.insert(key.to_owned(), live);
        slot
    }

    /// The server refused a push of `refused` decoded bytes as too large:
    /// pack later pushes to half of that (at least 16 KiB). Returns the new
    /// target if it went down.
    pub fn lower_target(&mut self, refused: usize) -> Option<usize> {
        let target = (refused / 2).max(16 << 10);
        (target < self.target).then(|| {
            self.target = target;
            target
        })
    }

    /// The size an entry adds to a push.
    fn entry_size(&self, e: &Entry, text: &Text) -> usize {
        let len = e.encoded_len;
        let proto = key_len(2) + encoded_len_varint(len as u64) + len;
        match self.encoding {
            Encoding::Protobuf => proto,
            // The entry and the comma before the next.
            Encoding::Json => proto.max(encode::json_entry_len(e, text) + 1),
        }
    }

    /// Checks, groups, sorts and packs `events` into pushes under the caps,
    /// as of the wall clock `now_ns`. The entries' lines are written to
    /// `text` (cleared first), which the pushes refer to.
    pub fn plan(&mut self, events: &[Event], now_ns: i64, text: &mut Text) -> Plan {
        let mut plan = Plan::default();
        text.clear();
        let idle = i64::try_from(STREAM_IDLE.as_nanos()).expect("30 min");
        self.live
            .retain(|_, live| live.last_ns >= now_ns.saturating_sub(idle));
        self.plans += 1;
        // This plan's streams, in order of first use; sorted by label
        // string below.
        let mut streams: Vec<(String, Vec<Entry>)> = Vec::new();
        let mut extra = Vec::with_capacity(8);
        let mut selected = Vec::with_capacity(self.labels.len());
        let mut key = Vec::with_capacity(128);
        // The previous event's stream key and slot: a run of events of one
        // stream (most batches) needs no lookup. Not kept for a demoted
        // event.
        let mut prev_key = Vec::with_capacity(128);
        let mut prev_slot: Option<usize> = None;
        for (i, event) in events.iter().enumerate() {
            let left = events.len() - i;
            extra.clear();
            selected.clear();
            let mut long_label = false;
            for (i, &(k, v)) in label_values(event).iter().enumerate() {
                let Some(v) = v.filter(|v| !v.is_empty()) else {
                    continue;
                };
                let bit = 1 << i;
                if self.selects & bit != 0 {
                    long_label |= v.len() > MAX_LABEL_VALUE_BYTES;
                    selected.push((k, v, bit));
                } else {
                    extra.push((k, v));
                }
            }
            if let Some(reason) = self.refusal(event, long_label, now_ns) {
                *plan.refused.entry(reason).or_default() += 1;
                continue;
            }
            // The key is written only when the stream changes.
            let same = prev_slot.is_some() && is_stream_key(&prev_key, &selected);
            if !same {
                write_stream_key(&mut key, &selected);
            }
            let slot = match prev_slot {
                Some(slot) if same => slot,
                _ => match self.live_slot(&key, now_ns, &mut streams, left) {
                    Some(slot) => {
                        std::mem::swap(&mut key, &mut prev_key);
                        prev_slot = Some(slot);
                        slot
                    }
                    None if self.live.len() < self.limits.max_streams => {
                        let slot = self.open_stream(&key, &selected, now_ns, &mut streams, left);
                        std::mem::swap(&mut key, &mut prev_key);
                        prev_slot = Some(slot);
                        slot
                    }
                    None => {
                        prev_slot = None;
                        // Beyond the stream cap: move the most variable
                        // labels into the line until the event falls in a
                        // live stream (or no label is left to move).
                        plan.demoted += 1;
                        let mut found = None;
                        for name in DEMOTE_ORDER {
                            if let Some(i) = selected.iter().position(|&(k, ..)| k == name) {
                                let (k, v, _) = selected.remove(i);
                                extra.push((k, v));
                                write_stream_key(&mut key, &selected);
                                found = self.live_slot(&key, now_ns, &mut streams, left);
                                if found.is_some() {
                                    break;
                                }
                            }
                        }
                        match found {
                            Some(slot) => slot,
                            None => self.open_stream(&key, &selected, now_ns, &mut streams, left),
                        }
                    }
                },
            };
            let (entry, truncated) = self.lines.entry(event, &extra, text);
            plan.truncated += u64::from(truncated);
            streams[slot].1.push(entry);
        }
        // Pushes are packed in label order, as they always were.
        streams.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        let push_overhead = match self.encoding {
            Encoding::Protobuf => 0,
            Encoding::Json => JSON_PUSH_OVERHEAD,
        };
        let mut current: Vec<Stream> = Vec::new();
        let mut size = push_overhead;
        let mut count = 0;
        let mut finish = |streams: &mut Vec<Stream>, size: &mut usize, count: &mut usize| {
            if *count > 0 {
                plan.pushes.push(Push {
                    streams: std::mem::take(streams),
                    entries: *count,
                });
            }
            *size = push_overhead;
            *count = 0;
        };
        let mut too_large = 0;
        for (labels, mut entries) in streams {
            sort_by_time(&mut entries);
            let overhead = stream_overhead(&labels, self.encoding);
            let mut open = false;
            let n = entries.len();
            for (i, &entry) in entries.iter().enumerate() {
                let entry_size = self.entry_size(&entry, text);
                if push_overhead + overhead + entry_size > self.cap {
                    too_large += 1;
                    continue;
                }
                let needed = entry_size + if open { 0 } else { overhead };
                let streams_full = !open && current.len() >= self.limits.max_streams_per_push;
                if count > 0 && (size + needed > self.target || streams_full) {
                    finish(&mut current, &mut size, &mut count);
                    open = false;
                }
                if !open {
                    // Room for the rest of the stream: a stream that fits
                    // in one push (most) is moved in without regrowing.
                    current.push(Stream {
                        labels: labels.clone(),
                        entries: Vec::with_capacity(n - i),
                    });
                    size += overhead;
                    open = true;
                }
                size += entry_size;
                count += 1;
                current
                    .last_mut()
                    .expect("a stream was just opened")
                    .entries
                    .push(entry);
            }
        }
        finish(&mut current, &mut size, &mut count);
        plan.too_large = too_large;
        plan
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Level, Origin};
    use crate::problems::Problems;
    use crate::sink::loki::{Compression, RawConfig};

    fn config(extra: &str) -> Config {
        let raw: RawConfig = toml::from_str(&format!(
            "url = \"http://127.0.0.1:1/loki/api/v1/push\"\n{extra}"
        ))
        .unwrap();
        let mut problems = Problems::default();
        let c = raw.validate("sinks.loki", &mut problems);
        assert!(problems.is_empty(), "{problems:?}");
        c
    }

    /// The planner's clock in these tests; events are stamped relative to it.
    const NOW: i64 = 1_700_000_000_000_000_000;

    fn event(ts: i64, service: &str, msg: String) -> Event {
        let mut e = Event::new(NOW + ts, Origin::Docker, msg);
        e.labels.host = Some("h1".into());
        e.labels.service = Some(service.into());
        e.labels.level = Some(Level::Info);
        e.fields
            .push(("container_id".into(), "0123456789ab".into()));
        e
    }

    #[test]
    fn groups_by_configured_labels_and_sorts_by_time() {
        let mut p = Planner::new(&config("labels = [\"host\", \"service\"]"));
        let events = vec![
            event(30, "db", "c".into()),
            event(10, "web", "a".into()),
            event(20, "db", "b".into()),
            event(20, "db", "b2".into()),
        ];
        let mut text = Text::default();
        let plan = p.plan(&events, NOW, &mut text);
        assert_eq!(plan.pushes.len(), 1);
        let streams = &plan.pushes[0].streams;
        assert_eq!(streams.len(), 2);
        assert_eq!(streams[0].labels, r#"{host="h1", service="db"}"#);
        let ts: Vec<i64> = streams[0].entries.iter().map(|e| e.ts_ns - NOW).collect();
        assert_eq!(ts, vec![20, 20, 30]);
        // Equal timestamps keep spool order; unselected labels go to the line.
        assert_eq!(
            text.line(&streams[0].entries[0]),
            "msg=b source=docker level=info container_id=0123456789ab"
        );
        assert!(text.line(&streams[0].entries[1]).starts_with("msg=b2 "));
    }

    fn check_plan(extra: &str, cap: usize) {
        let c = config(extra);
        let mut p = Planner::new(&c);
        let events: Vec<Event> = (0..3000)
            .map(|i| {
                event(
                    i,
                    ["a", "b", "c"][i as usize % 3],
                    "x".repeat(i as usize % 5000),
                )
            })
            .collect();
        let mut text = Text::default();
        let plan = p.plan(&events, NOW, &mut text);
        assert_eq!(plan.too_large, 0);
        let total: usize = plan.pushes.iter().map(|p| p.entries).sum();
        assert_eq!(total, events.len());
        assert!(plan.pushes.len() > 1);
        for push in &plan.pushes {
            let counted: usize = push.streams.iter().map(|s| s.entries.len()).sum();
            assert_eq!(counted, push.entries);
            let (body, decoded) = encode::encode(&push.streams, &text, c.encoding, c.compression);
            assert!(decoded <= cap, "decoded {decoded} > {cap}");
            assert!(encode::protobuf_len(&push.streams) <= cap);
            assert!(body.bytes.len() <= cap);
        }
    }

    #[test]
    fn every_push_fits_the_cap_decoded_and_encoded() {
        check_plan(
            "max_push_bytes = \"1MiB\"\nmax_line_size = \"4KiB\"",
            1 << 20,
        );
        check_plan(
            "max_push_bytes = 100000\nmax_line_size = \"4KiB\"\nencoding = \"json\"\ncompression = \"gzip\"",
            100_000,
        );
        check_plan(
            "max_push_bytes = 100000\nmax_line_size = \"4KiB\"\nencoding = \"json\"\nstructured_metadata = true",
            100_000,
        );
    }

    #[test]
    fn an_entry_that_cannot_fit_is_dropped_and_counted() {
        let c = config("max_push_bytes = \"64KiB\"\nmax_line_size = \"16KiB\"\nstructured_metadata = true\nline_format = \"raw\"");
        let mut p = Planner::new(&c);
        let mut huge = event(1, "a", "small".into());
        huge.fields.push(("blob".into(), "y".repeat(100_000)));
        let plan = p.plan(
            &[event(0, "a", "ok".into()), huge, event(2, "a", "ok".into())],
            NOW,
            &mut Text::default(),
        );
        assert_eq!(plan.too_large, 1);
        assert_eq!(plan.pushes.len(), 1);
        assert_eq!(plan.pushes[0].entries, 2);
        assert_eq!(c.compression, Compression::Snappy);
    }

    #[test]
    fn a_lowered_target_packs_smaller_pushes_but_keeps_big_entries() {
        let mut p = Planner::new(&config("max_line_size = \"64KiB\""));
        assert_eq!(p.lower_target(100_000), Some(50_000));
        assert_eq!(p.lower_target(200_000), None, "never raised");
        let mut events: Vec<Event> = (0..100).map(|i| event(i, "a", "x".repeat(2000))).collect();
        events.push(event(100, "a", "y".repeat(60_000)));
        let plan = p.plan(&events, NOW, &mut Text::default());
        assert_eq!(plan.too_large, 0);
        assert_eq!(plan.pushes.iter().map(|p| p.entries).sum::<usize>(), 101);
        let last = plan.pushes.last().unwrap();
        assert_eq!(last.entries, 1, "the big entry goes alone");
        for push in &plan.pushes[..plan.pushes.len() - 1] {
            assert!(encode::protobuf_len(&push.streams) <= 50_000);
        }
    }

    #[test]
    fn entries_loki_would_refuse_are_not_sent_but_counted_by_reason() {
        let mut p = Planner::new(&config(
            "reject_older_than = \"7d\"\nreject_newer_than = \"10m\"",
        ));
        let day = 86_400 * 1_000_000_000i64;
        let mut long_label = event(0, "a", "ok".into());
        long_label.labels.container_name = Some("c".repeat(MAX_LABEL_VALUE_BYTES + 1));
        let events = vec![
            event(0, "a", "now".into()),
            event(-8 * day, "a", "old".into()),
            event(-6 * day, "a", "six days".into()),
            event(11 * 60 * 1_000_000_000, "a", "ahead".into()),
            event(9 * 60 * 1_000_000_000, "a", "nine minutes ahead".into()),
            long_label,
        ];
        let plan = p.plan(&events, NOW, &mut Text::default());
        let want: BTreeMap<&str, u64> =
            [("too_old", 1), ("too_new", 1), ("invalid_labels", 1)].into();
        assert_eq!(plan.refused, want);
        assert_eq!(plan.pushes.iter().map(|p| p.entries).sum::<usize>(), 3);
        // `0s` turns the age check off.
        let mut p = Planner::new(&config("reject_older_than = \"0s\""));
        assert!(p
            .plan(
                &[event(-300 * day, "a", "x".into())],
                NOW,
                &mut Text::default()
            )
            .refused
            .is_empty());
    }

    #[test]
    fn beyond_max_streams_container_name_moves_into_the_line() {
        let mut p = Planner::new(&config("max_streams = 10\nmax_streams_per_push = 4"));
        let events: Vec<Event> = (0..1000)
            .map(|i| {
                let mut e = event(i, "svc", format!("m{i}"));
                e.labels.container_name = Some(format!("c{i}"));
                e
            })
            .collect();
        let mut text = Text::default();
        let plan = p.plan(&events, NOW, &mut text);
        let streams: std::collections::HashSet<&str> = plan
            .pushes
            .iter()
            .flat_map(|p| p.streams.iter().map(|s| s.labels.as_str()))
            .collect();
        assert!(streams.len() <= 11, "{} streams", streams.len());
        assert!(p.live_streams() <= 11);
        assert_eq!(plan.demoted, 1000 - 10);
        assert!(plan.pushes.iter().all(|p| p.streams.len() <= 4));
        assert_eq!(plan.pushes.iter().map(|p| p.entries).sum::<usize>(), 1000);
        // The demoted keep their container name, in the line.
        let demoted = plan
            .pushes
            .iter()
            .flat_map(|p| &p.streams)
            .find(|s| !s.labels.contains("container_name"))
            .expect("a stream without container_name");
        let line = text.line(&demoted.entries[0]);
        assert!(line.contains("container_name=c"), "{line}");
        // Streams idle for 30 minutes stop counting.
        let later = NOW + 31 * 60 * 1_000_000_000;
        let plan = p.plan(&events[..5], later, &mut Text::default());
        assert_eq!(plan.demoted, 0);
    }

    #[test]
    fn a_stream_key_is_recognised_in_place_and_only_its_own() {
        let sel = |pairs: &[(&'static str, &'static str)]| -> Vec<Selected<'static>> {
            pairs.iter().map(|&(k, v)| (k, v, label_bit(k))).collect()
        };
        let a = sel(&[("host", "h1"), ("service", "web")]);
        let mut key = Vec::new();
        write_stream_key(&mut key, &a);
        assert!(is_stream_key(&key, &a));
        for other in [
            &[("host", "h1"), ("service", "we")][..],
            &[("host", "h1"), ("service", "webb")],
            &[("host", "h1"), ("app", "web")],
            &[("host", "h1")],
            &[("host", "h1"), ("service", "web"), ("level", "info")],
            &[],
        ] {
            assert!(!is_stream_key(&key, &sel(other)), "{other:?}");
        }
    }

    #[test]
    fn sorting_by_time_is_stable() {
        // Times out of order, each repeated many times: equal times keep
        // spool order (the message is the spool position).
        let mut p = Planner::new(&config("line_format = \"raw\""));
        let events: Vec<Event> = (0..500)
            .map(|i: i64| event((i * 7919) % 31 - 15, "a", i.to_string()))
            .collect();
        let mut text = Text::default();
        let plan = p.plan(&events, NOW, &mut text);
        let got: Vec<(i64, String)> = plan
            .pushes
            .iter()
            .flat_map(|p| &p.streams)
            .flat_map(|s| &s.entries)
            .map(|e| (e.ts_ns - NOW, text.line(e).to_owned()))
            .collect();
        let mut expected: Vec<(i64, String)> = events
            .iter()
            .map(|e| {
                (
                    e.timestamp_ns - NOW,
                    String::from_utf8(e.message.clone()).unwrap(),
                )
            })
            .collect();
        expected.sort_by_key(|&(ts, _)| ts);
        assert_eq!(got, expected);
        // Already in order: unchanged.
        let mut entries: Vec<Entry> = plan.pushes[0].streams[0].entries.clone();
        let before = entries.clone();
        sort_by_time(&mut entries);
        assert_eq!(entries, before);
    }

    #[test]
    fn label_bits_follow_label_names() {
        for (i, name) in crate::sink::loki::LABEL_NAMES.iter().enumerate() {
            assert_eq!(label_bit(name), 1 << i, "{name}");
        }
        assert_eq!(label_bit("other"), 0);
        // The labels of an event, at the index of their bit, in the order
        // of `Labels::pairs`.
        let mut e = event(0, "svc", "m".into());
        e.labels.app = Some("app".into());
        e.labels.container_name = Some("c".into());
        e.labels.unit = Some("u.service".into());
        let values = label_values(&e);
        let names: Vec<&str> = values.iter().map(|&(k, _)| k).collect();
        assert_eq!(names, crate::sink::loki::LABEL_NAMES);
        let present: Vec<(&str, &str)> = values
            .iter()
            .filter_map(|&(k, v)| v.map(|v| (k, v)))
            .collect();
        assert_eq!(present, e.labels.pairs(e.origin).collect::<Vec<_>>());
        e.labels.app = None;
        assert_eq!(
            label_values(&e)[label_bit("app").trailing_zeros() as usize].1,
            None
        );
    }

    /// Runs of one stream take the previous event's stream without a
    /// lookup: the plan is the same as event by event, whatever the runs
    /// (a stream left and come back to, a label value differing only in
    /// its last byte, a label present then absent, demotion past the cap).
    #[test]
    fn runs_of_a_stream_plan_as_event_by_event() {
        let mut events = Vec::new();
        for (i, svc) in ["a", "a", "b", "a", "ab", "ab", "aa", "aa", "a"]
            .iter()
            .enumerate()
        {
            events.push(event(i as i64, svc, format!("m{i}")));
        }
        let mut no_level = event(9, "a", "no level".into());
        no_level.labels.level = None;
        events.push(no_level);
        events.push(event(10, "a", "m10".into()));
        for i in 11..40 {
            let mut e = event(i, "c", format!("m{i}"));
            e.labels.container_name = Some(format!("c{}", i / 3));
            events.push(e);
        }
        let run = |p: &mut Planner, events: &[Event]| {
            let mut text = Text::default();
            let plan = p.plan(events, NOW, &mut text);
            let got: Vec<(String, Vec<String>)> = plan
                .pushes
                .iter()
                .flat_map(|p| &p.streams)
                .map(|s| {
                    (
                        s.labels.clone(),
                        s.entries.iter().map(|e| text.line(e).to_owned()).collect(),
                    )
                })
                .collect();
            (got, plan.demoted)
        };
        let cfg = config("max_streams = 6");
        let together = run(&mut Planner::new(&cfg), &events);
        let mut p = Planner::new(&cfg);
        let mut one_by_one: Vec<(String, Vec<String>)> = Vec::new();
        let mut demoted = 0;
        for e in &events {
            let (streams, d) = run(&mut p, std::slice::from_ref(e));
            demoted += d;
            for (labels, lines) in streams {
                match one_by_one.iter_mut().find(|s| s.0 == labels) {
                    Some(s) => s.1.extend(lines),
                    None => one_by_one.push((labels, lines)),
                }
            }
        }
        one_by_one.sort();
        assert_eq!(together.0, one_by_one);
        assert_eq!(together.1, demoted);
        assert!(demoted > 0, "the cap was reached");
        assert!(together.0.len() >= 6, "{:?}", together.0);
    }

    #[test]
    fn split_halves_keep_order_and_streams() {
        let mut p = Planner::new(&config(""));
        let events: Vec<Event> = (0..7)
            .map(|i| event(i, if i < 3 { "a" } else { "b" }, format!("m{i}")))
            .collect();
        let mut text = Text::default();
        let push = p.plan(&events, NOW, &mut text).pushes.remove(0);
        let (a, b) = push.clone().split();
        assert_eq!((a.entries, b.entries), (3, 4));
        let lines = |p: &Push| -> Vec<String> {
            p.streams
                .iter()
                .flat_map(|s| s.entries.iter().map(|e| text.line(e).to_owned()))
                .collect()
        };
        let mut joined = lines(&a);
        joined.extend(lines(&b));
        assert_eq!(joined, lines(&push));
        let (c, d) = b.split();
        assert_eq!((c.entries, d.entries), (2, 2));
        assert_eq!(c.streams.len() + d.streams.len(), 2);
    }
}
