//! Every metric family weir registers, declared once: its type, its label
//! set and its one HELP text. Components take handles from these fields;
//! [`super::names`] spells the exposed names, which users' dashboards use.

use std::sync::OnceLock;

use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::{Metric, Registry};

use super::{names as n, Counter, Family, Gauge};

/// The label sets. Field order is the order labels are written in.
pub mod labels {
    use prometheus_client::encoding::EncodeLabelSet;

    #[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
    pub struct Source {
        pub source: String,
    }

    #[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
    pub struct SourceReason {
        pub source: String,
        pub reason: String,
    }

    #[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
    pub struct Sink {
        pub sink: String,
    }

    #[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
    pub struct SinkReason {
        pub sink: String,
        pub reason: String,
    }

    #[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
    pub struct Rewrite {
        pub kind: String,
        pub action: String,
    }

    #[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
    pub struct Level {
        pub level: String,
    }

    #[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
    pub struct Version {
        pub version: String,
    }

    pub fn source(source: &str) -> Source {
        Source {
            source: source.to_owned(),
        }
    }

    pub fn sink(sink: &str) -> Sink {
        Sink {
            sink: sink.to_owned(),
        }
    }

    impl SourceReason {
        pub fn new(source: &str, reason: &str) -> SourceReason {
            SourceReason {
                source: source.to_owned(),
                reason: reason.to_owned(),
            }
        }
    }

    impl SinkReason {
        pub fn new(sink: &str, reason: &str) -> SinkReason {
            SinkReason {
                sink: sink.to_owned(),
                reason: reason.to_owned(),
            }
        }
    }
}

use labels::{Rewrite, Sink, SinkReason, Source, SourceReason, Version};

/// Declares the families (struct fields) and registers each under its name
/// and HELP text.
macro_rules! families {
    ($($field:ident: $ty:ty = $name:expr, $help:literal;)*) => {
        /// The families of one registry.
        pub struct Families {
            $(#[doc = $help] pub $field: $ty,)*
        }

        impl Families {
            pub(super) fn new(registry: &mut Registry) -> Families {
                let f = Families { $($field: Default::default(),)* };
                $(register(registry, $name, $help, f.$field.clone());)*
                register_process_wide(registry);
                f
            }
        }
    };
}

families! {
    source_events_received: Family<Source, Counter> = n::SOURCE_EVENTS_RECEIVED,
        "Events a source received (decoded from its clients or read from the journal).";
    source_bytes_received: Family<Source, Counter> = n::SOURCE_BYTES_RECEIVED,
        "Bytes a source received.";
    source_decode_errors: Family<SourceReason, Counter> = n::SOURCE_DECODE_ERRORS,
        "Records a source could not decode or rejected, by reason.";
    source_connections: Family<Source, Gauge> = n::SOURCE_CONNECTIONS,
        "Open client connections of a source.";
    source_events_spooled: Family<Source, Counter> = n::SOURCE_EVENTS_SPOOLED,
        "Events a source appended to the spool (after scrubbing).";
    source_buffered_bytes: Family<Source, Gauge> = n::SOURCE_BUFFERED_BYTES,
        "Bytes a forward source holds on its memory budget (max_buffered_bytes): frames being received, inflated data, lines being joined, batches in flight.";
    source_budget_gave_way: Family<Source, Counter> = n::SOURCE_BUDGET_GAVE_WAY,
        "Connections asked to close unacknowledged to free the memory budget for a waiting one (also counted in weir_source_decode_errors_total{reason=\"gave_way\"}).";
    source_reads: Family<Source, Counter> = n::SOURCE_READS,
        "Socket reads of a forward source that returned data. Bytes received per read tell how clients batch: Docker writes one event per write, and a receiver that keeps up reads one event per read, at several times the CPU per event of a busy one.";
    journal_cursor_gaps: Family<Source, Counter> = n::JOURNAL_CURSOR_GAPS,
        "Starts where the committed journal entry was gone (vacuumed or rotated away); entries in between were lost.";
    journal_entries_skipped: Family<SourceReason, Counter> = n::JOURNAL_ENTRIES_SKIPPED,
        "Journal entries not ingested: weir's own (self) or filtered out (excluded).";
    journal_entries_missed: Family<Source, Counter> = n::JOURNAL_ENTRIES_MISSED,
        "Journal entries stepped over unread: the journal's sequence numbers jumped (vacuumed before weir read them, or lost in a corrupt file). Counted only without include filters.";
    journal_read_errors: Family<Source, Counter> = n::JOURNAL_READ_ERRORS,
        "Journal read or reopen failures; the reader reopens and resumes after its last cursor.";
    scrub_rewrites: Family<Rewrite, Counter> = n::SCRUB_REWRITES,
        "Personal data items rewritten before the spool, by kind and action.";
    spool_bytes: Gauge = n::SPOOL_BYTES,
        "Bytes the spool uses on disk.";
    spool_max_bytes: Gauge = n::SPOOL_MAX_BYTES,
        "Most bytes the spool may use (`spool.max_bytes`).";
    spool_segments: Gauge = n::SPOOL_SEGMENTS,
        "Segment files in the spool.";
    spool_dropped_events: Family<SinkReason, Counter> = n::SPOOL_DROPPED_EVENTS,
        "Events a sink never got because the spool dropped them, by reason.";
    spool_sink_lag_bytes: Family<Sink, Gauge> = n::SPOOL_SINK_LAG_BYTES,
        "Spool bytes appended but not yet acknowledged by the sink.";
    spool_oldest_unacked: Family<Sink, Gauge> = n::SPOOL_OLDEST_UNACKED,
        "When the oldest record the sink has not acknowledged was appended (0 when caught up).";
    spool_fsyncs: Counter = n::SPOOL_FSYNCS,
        "fdatasync calls on spool segments.";
    spool_recovered_discarded_bytes: Counter = n::SPOOL_RECOVERED_DISCARDED_BYTES,
        "Bytes of torn or corrupt records cut off the spool's tail at open.";
    spool_corrupt_records: Counter = n::SPOOL_CORRUPT_RECORDS,
        "Spool records found damaged (magic, length or checksum), at open or when read back; each is skipped and the valid records after it kept.";
    spool_corrupt_lost_events: Counter = n::SPOOL_CORRUPT_LOST_EVENTS,
        "Events held by damaged spool records found at open (as far as their headers said), never delivered.";
    sink_events_sent: Family<Sink, Counter> = n::SINK_EVENTS_SENT,
        "Events a sink delivered and acknowledged.";
    sink_bytes_sent: Family<Sink, Counter> = n::SINK_BYTES_SENT,
        "Bytes a sink delivered, as sent on the wire or written.";
    sink_batches: Family<Sink, Counter> = n::SINK_BATCHES,
        "Requests (or writes) a sink had accepted.";
    sink_retries: Family<Sink, Counter> = n::SINK_RETRIES,
        "Delivery attempts a sink repeated after a failure.";
    sink_splits: Family<Sink, Counter> = n::SINK_SPLITS,
        "Pushes a sink split in two after the server refused them.";
    sink_rejected_events: Family<SinkReason, Counter> = n::SINK_REJECTED_EVENTS,
        "Events a sink dropped because the server refused them (or they could never fit), by reason.";
    sink_errors: Family<SinkReason, Counter> = n::SINK_ERRORS,
        "Failed delivery attempts, by sink and reason.";
    sink_last_success: Family<Sink, Gauge> = n::SINK_LAST_SUCCESS,
        "Unix time of a sink's last accepted request (or write).";
    sink_truncated_events: Family<Sink, Counter> = n::SINK_TRUNCATED_EVENTS,
        "Events shrunk to fit the server's size limits (line or message cut with a marker).";
    loki_demoted_events: Family<Sink, Counter> = n::LOKI_DEMOTED_EVENTS,
        "Events whose variable labels (container_name first) went into the line because the sink's stream cap (max_streams) was reached.";
    build_info: Family<Version, Gauge> = n::BUILD_INFO,
        "Always 1; the version label says which weir is running.";
}

/// weir's own log lines by level, and those the rate limit suppressed. The
/// only process-wide families: one tracing subscriber logs for the whole
/// process, so they are counted once and registered in every registry.
pub struct OwnLog {
    pub lines: Family<labels::Level, Counter>,
    pub suppressed: Counter,
}

/// The process's [`OwnLog`].
pub fn own_log() -> &'static OwnLog {
    static LOG: OnceLock<OwnLog> = OnceLock::new();
    LOG.get_or_init(|| OwnLog {
        lines: Family::default(),
        suppressed: Counter::default(),
    })
}

fn register_process_wide(registry: &mut Registry) {
    let log = own_log();
    register(
        registry,
        n::LOG_MESSAGES,
        "Lines weir wrote to its own log, by level.",
        log.lines.clone(),
    );
    register(
        registry,
        n::LOG_MESSAGES_SUPPRESSED,
        "Lines of weir's own log suppressed by the per-call-site rate limit.",
        log.suppressed.clone(),
    );
}

/// Registers `metric` as `name`: without the `_total` of a counter and the
/// final period of `help`, which the encoder adds back.
fn register<M: Metric + TypedMetric>(registry: &mut Registry, name: &str, help: &str, metric: M) {
    let name = match M::TYPE {
        MetricType::Counter => name
            .strip_suffix("_total")
            .expect("counter names end in _total"),
        _ => name,
    };
    registry.register(name, help.strip_suffix('.').unwrap_or(help), metric);
}

#[cfg(test)]
mod tests {
    use super::super::Metrics;
    use super::*;

    /// Every family registered is in the catalog of names with its type,
    /// and every catalogued family is exposed.
    #[test]
    fn the_registry_and_the_catalog_of_names_agree() {
        let text = Metrics::new().encode();
        let exposed: std::collections::BTreeMap<&str, &str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.split_once(' '))
            .collect();
        for (name, kind) in &exposed {
            let f = n::find(name).unwrap_or_else(|| panic!("{name} is not in names::ALL"));
            assert_eq!(f.kind.as_str(), *kind, "{name}");
        }
        for f in n::ALL {
            assert!(
                exposed.contains_key(f.name) || f.name == n::UP,
                "{} is in names::ALL but not registered",
                f.name
            );
        }
    }
}
