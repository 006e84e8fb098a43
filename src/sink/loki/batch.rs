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

use std::collections::BTreeMap;

use prost::encoding::{encoded_len_varint, key_len};
use prost::Message;

use super::encode::{self, EntryAdapter, JsonEntry, LineBuilder, PushRequest, StreamAdapter};
use super::{Config, Encoding};
use crate::event::Event;

/// One push: the request, its entry count and its planned (upper bound) size.
#[derive(Debug, Clone, PartialEq)]
pub struct Push {
    pub request: PushRequest,
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
        for mut stream in self.request.streams {
            if taken >= half {
                second.push(stream);
            } else if taken + stream.entries.len() <= half {
                taken += stream.entries.len();
                first.push(stream);
            } else {
                let rest = stream.entries.split_off(half - taken);
                taken = half;
                second.push(StreamAdapter {
                    labels: stream.labels.clone(),
                    entries: rest,
                    hash: 0,
                });
                first.push(stream);
            }
        }
        (
            Push {
                request: PushRequest { streams: first },
                entries: half,
            },
            Push {
                request: PushRequest { streams: second },
                entries: self.entries - half,
            },
        )
    }
}

/// What planning produced from a batch of events.
#[derive(Debug, Default)]
pub struct Plan {
    pub pushes: Vec<Push>,
    /// Entries dropped because they could not fit in any push.
    pub too_large: u64,
    /// Lines cut to `max_line_size`.
    pub truncated: u64,
}

/// Builds pushes from events as the config says.
#[derive(Debug, Clone)]
pub struct Planner {
    labels: Vec<&'static str>,
    lines: LineBuilder,
    encoding: Encoding,
    /// `max_push_bytes`: no push is ever larger.
    cap: usize,
    /// The size pushes are packed to: `cap`, or less once the server has
    /// shown a lower limit. An entry above it but under `cap` goes alone.
    target: usize,
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

/// `{"streams":[]}`.
const JSON_PUSH_OVERHEAD: usize = 14;

impl Planner {
    pub fn new(config: &Config) -> Planner {
        Planner {
            labels: config.labels.clone(),
            lines: LineBuilder {
                format: config.line_format,
                structured_metadata: config.structured_metadata,
                max_line_size: config.max_line_size.0 as usize,
            },
            encoding: config.encoding,
            cap: config.max_push_bytes.0 as usize,
            target: config.max_push_bytes.0 as usize,
        }
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
    fn entry_size(&self, e: &EntryAdapter) -> usize {
        let len = e.encoded_len();
        let proto = key_len(2) + encoded_len_varint(len as u64) + len;
        match self.encoding {
            Encoding::Protobuf => proto,
            Encoding::Json => {
                let mut counter = Counter(0);
                serde_json::to_writer(&mut counter, &JsonEntry(e)).expect("counting cannot fail");
                proto.max(counter.0 + 1)
            }
        }
    }

    /// Groups, sorts and packs `events` into pushes under the cap.
    pub fn plan(&self, events: &[Event]) -> Plan {
        let mut plan = Plan::default();
        let mut streams: BTreeMap<String, Vec<EntryAdapter>> = BTreeMap::new();
        let mut extra = Vec::with_capacity(8);
        for event in events {
            extra.clear();
            let mut selected = Vec::with_capacity(self.labels.len());
            for (k, v) in event.labels.pairs(event.origin) {
                if v.is_empty() {
                    continue;
                }
                if self.labels.contains(&k) {
                    selected.push((k, v));
                } else {
                    extra.push((k, v));
                }
            }
            let key = encode::label_string(selected.into_iter());
            let (entry, truncated) = self.lines.entry(event, &extra);
            plan.truncated += u64::from(truncated);
            streams.entry(key).or_default().push(entry);
        }
        let push_overhead = match self.encoding {
            Encoding::Protobuf => 0,
            Encoding::Json => JSON_PUSH_OVERHEAD,
        };
        let mut current = PushRequest::default();
        let mut size = push_overhead;
        let mut count = 0;
        let mut finish = |req: &mut PushRequest, size: &mut usize, count: &mut usize| {
            if *count > 0 {
                plan.pushes.push(Push {
                    request: std::mem::take(req),
                    entries: *count,
                });
            }
            *size = push_overhead;
            *count = 0;
        };
        let mut too_large = 0;
        for (labels, mut entries) in streams {
            entries.sort_by_key(EntryAdapter::ts_ns);
            let overhead = stream_overhead(&labels, self.encoding);
            let mut open = false;
            for entry in entries {
                let entry_size = self.entry_size(&entry);
                if push_overhead + overhead + entry_size > self.cap {
                    too_large += 1;
                    continue;
                }
                let needed = entry_size + if open { 0 } else { overhead };
                if count > 0 && size + needed > self.target {
                    finish(&mut current, &mut size, &mut count);
                    open = false;
                }
                if !open {
                    current.streams.push(StreamAdapter {
                        labels: labels.clone(),
                        entries: Vec::new(),
                        hash: 0,
                    });
                    size += overhead;
                    open = true;
                }
                size += entry_size;
                count += 1;
                current
                    .streams
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

/// A writer that only counts bytes.
struct Counter(usize);

impl std::io::Write for Counter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len();
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
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

    fn event(ts: i64, service: &str, msg: String) -> Event {
        let mut e = Event::new(ts, Origin::Docker, msg);
        e.labels.host = Some("h1".into());
        e.labels.service = Some(service.into());
        e.labels.level = Some(Level::Info);
        e.fields
            .push(("container_id".into(), "0123456789ab".into()));
        e
    }

    #[test]
    fn groups_by_configured_labels_and_sorts_by_time() {
        let p = Planner::new(&config("labels = [\"host\", \"service\"]"));
        let events = vec![
            event(30, "db", "c".into()),
            event(10, "web", "a".into()),
            event(20, "db", "b".into()),
            event(20, "db", "b2".into()),
        ];
        let plan = p.plan(&events);
        assert_eq!(plan.pushes.len(), 1);
        let streams = &plan.pushes[0].request.streams;
        assert_eq!(streams.len(), 2);
        assert_eq!(streams[0].labels, r#"{host="h1", service="db"}"#);
        let ts: Vec<i64> = streams[0].entries.iter().map(|e| e.ts_ns()).collect();
        assert_eq!(ts, vec![20, 20, 30]);
        // Equal timestamps keep spool order; unselected labels go to the line.
        assert_eq!(
            streams[0].entries[0].line,
            "msg=b source=docker level=info container_id=0123456789ab"
        );
        assert!(streams[0].entries[1].line.starts_with("msg=b2 "));
    }

    fn check_plan(extra: &str, cap: usize) {
        let c = config(extra);
        let p = Planner::new(&c);
        let events: Vec<Event> = (0..3000)
            .map(|i| {
                event(
                    i,
                    ["a", "b", "c"][i as usize % 3],
                    "x".repeat(i as usize % 5000),
                )
            })
            .collect();
        let plan = p.plan(&events);
        assert_eq!(plan.too_large, 0);
        let total: usize = plan.pushes.iter().map(|p| p.entries).sum();
        assert_eq!(total, events.len());
        assert!(plan.pushes.len() > 1);
        for push in &plan.pushes {
            let counted: usize = push.request.streams.iter().map(|s| s.entries.len()).sum();
            assert_eq!(counted, push.entries);
            let (body, decoded) = encode::encode(&push.request, c.encoding, c.compression);
            assert!(decoded <= cap, "decoded {decoded} > {cap}");
            assert!(push.request.encoded_len() <= cap);
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
        let p = Planner::new(&c);
        let mut huge = event(1, "a", "small".into());
        huge.fields.push(("blob".into(), "y".repeat(100_000)));
        let plan = p.plan(&[event(0, "a", "ok".into()), huge, event(2, "a", "ok".into())]);
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
        let plan = p.plan(&events);
        assert_eq!(plan.too_large, 0);
        assert_eq!(plan.pushes.iter().map(|p| p.entries).sum::<usize>(), 101);
        let last = plan.pushes.last().unwrap();
        assert_eq!(last.entries, 1, "the big entry goes alone");
        for push in &plan.pushes[..plan.pushes.len() - 1] {
            assert!(push.request.encoded_len() <= 50_000);
        }
    }

    #[test]
    fn split_halves_keep_order_and_streams() {
        let p = Planner::new(&config(""));
        let events: Vec<Event> = (0..7)
            .map(|i| event(i, if i < 3 { "a" } else { "b" }, format!("m{i}")))
            .collect();
        let push = p.plan(&events).pushes.remove(0);
        let (a, b) = push.clone().split();
        assert_eq!((a.entries, b.entries), (3, 4));
        let lines = |p: &Push| -> Vec<String> {
            p.request
                .streams
                .iter()
                .flat_map(|s| s.entries.iter().map(|e| e.line.clone()))
                .collect()
        };
        let mut joined = lines(&a);
        joined.extend(lines(&b));
        assert_eq!(joined, lines(&push));
        let (c, d) = b.split();
        assert_eq!((c.entries, d.entries), (2, 2));
        assert_eq!(c.request.streams.len() + d.request.streams.len(), 2);
    }
}
