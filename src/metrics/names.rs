//! Every metric family weir registers: the one list the Grafana dashboard
//! (`packaging/grafana/weir.json`) and `weir status` are checked against.
//!
//! A family added to [`super::families`] is added here too; a test fails
//! when the registry holds a family this list lacks, or when a dashboard
//! query names a family that is not here.

/// The Prometheus type of a family.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Kind {
    Counter,
    Gauge,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
        }
    }
}

/// One family: its name, type and label names.
#[derive(Debug, Clone, Copy)]
pub struct Family {
    pub name: &'static str,
    pub kind: Kind,
    pub labels: &'static [&'static str],
}

// Sources.
pub const SOURCE_EVENTS_RECEIVED: &str = "weir_source_events_received_total";
pub const SOURCE_BYTES_RECEIVED: &str = "weir_source_bytes_received_total";
pub const SOURCE_DECODE_ERRORS: &str = "weir_source_decode_errors_total";
pub const SOURCE_CONNECTIONS: &str = "weir_source_connections";
pub const SOURCE_EVENTS_SPOOLED: &str = "weir_source_events_spooled_total";
pub const SOURCE_BUFFERED_BYTES: &str = "weir_source_buffered_bytes";
pub const SOURCE_BUDGET_GAVE_WAY: &str = "weir_source_budget_gave_way_total";
pub const SOURCE_READS: &str = "weir_source_reads_total";
// The journal source.
pub const JOURNAL_CURSOR_GAPS: &str = "weir_journal_cursor_gaps_total";
pub const JOURNAL_ENTRIES_SKIPPED: &str = "weir_journal_entries_skipped_total";
pub const JOURNAL_ENTRIES_MISSED: &str = "weir_journal_entries_missed_total";
pub const JOURNAL_READ_ERRORS: &str = "weir_journal_read_errors_total";
// Scrub.
pub const SCRUB_REWRITES: &str = "weir_scrub_rewrites_total";
// Spool.
pub const SPOOL_BYTES: &str = "weir_spool_bytes";
pub const SPOOL_MAX_BYTES: &str = "weir_spool_max_bytes";
pub const SPOOL_SEGMENTS: &str = "weir_spool_segments";
pub const SPOOL_DROPPED_EVENTS: &str = "weir_spool_dropped_events_total";
pub const SPOOL_SINK_LAG_BYTES: &str = "weir_spool_sink_lag_bytes";
pub const SPOOL_OLDEST_UNACKED: &str = "weir_spool_oldest_unacked_timestamp_seconds";
pub const SPOOL_FSYNCS: &str = "weir_spool_fsyncs_total";
pub const SPOOL_RECOVERED_DISCARDED_BYTES: &str = "weir_spool_recovered_discarded_bytes_total";
pub const SPOOL_CORRUPT_RECORDS: &str = "weir_spool_corrupt_records_total";
pub const SPOOL_CORRUPT_LOST_EVENTS: &str = "weir_spool_corrupt_lost_events_total";
// Sinks.
pub const SINK_EVENTS_SENT: &str = "weir_sink_events_sent_total";
pub const SINK_BYTES_SENT: &str = "weir_sink_bytes_sent_total";
pub const SINK_BATCHES: &str = "weir_sink_batches_total";
pub const SINK_RETRIES: &str = "weir_sink_retries_total";
pub const SINK_SPLITS: &str = "weir_sink_splits_total";
pub const SINK_REJECTED_EVENTS: &str = "weir_sink_rejected_events_total";
pub const SINK_ERRORS: &str = "weir_sink_errors_total";
pub const SINK_LAST_SUCCESS: &str = "weir_sink_last_success_timestamp_seconds";
pub const SINK_TRUNCATED_EVENTS: &str = "weir_sink_truncated_events_total";
pub const LOKI_DEMOTED_EVENTS: &str = "weir_sink_loki_demoted_events_total";
// weir itself.
pub const LOG_MESSAGES: &str = "weir_log_messages_total";
pub const LOG_MESSAGES_SUPPRESSED: &str = "weir_log_messages_suppressed_total";
pub const BUILD_INFO: &str = "weir_build_info";
pub const UP: &str = "weir_up";
// The standard process metrics (see `process`).
pub const PROCESS_CPU_SECONDS: &str = "process_cpu_seconds_total";
pub const PROCESS_RESIDENT_MEMORY: &str = "process_resident_memory_bytes";
pub const PROCESS_VIRTUAL_MEMORY: &str = "process_virtual_memory_bytes";
pub const PROCESS_OPEN_FDS: &str = "process_open_fds";
pub const PROCESS_MAX_FDS: &str = "process_max_fds";
pub const PROCESS_START_TIME: &str = "process_start_time_seconds";

const fn c(name: &'static str, labels: &'static [&'static str]) -> Family {
    Family {
        name,
        kind: Kind::Counter,
        labels,
    }
}

const fn g(name: &'static str, labels: &'static [&'static str]) -> Family {
    Family {
        name,
        kind: Kind::Gauge,
        labels,
    }
}

/// The catalog.
pub const ALL: &[Family] = &[
    c(SOURCE_EVENTS_RECEIVED, &["source"]),
    c(SOURCE_BYTES_RECEIVED, &["source"]),
    c(SOURCE_DECODE_ERRORS, &["source", "reason"]),
    g(SOURCE_CONNECTIONS, &["source"]),
    c(SOURCE_EVENTS_SPOOLED, &["source"]),
    g(SOURCE_BUFFERED_BYTES, &["source"]),
    c(SOURCE_BUDGET_GAVE_WAY, &["source"]),
    c(SOURCE_READS, &["source"]),
    c(JOURNAL_CURSOR_GAPS, &["source"]),
    c(JOURNAL_ENTRIES_SKIPPED, &["source", "reason"]),
    c(JOURNAL_ENTRIES_MISSED, &["source"]),
    c(JOURNAL_READ_ERRORS, &["source"]),
    c(SCRUB_REWRITES, &["kind", "action"]),
    g(SPOOL_BYTES, &[]),
    g(SPOOL_MAX_BYTES, &[]),
    g(SPOOL_SEGMENTS, &[]),
    c(SPOOL_DROPPED_EVENTS, &["sink", "reason"]),
    g(SPOOL_SINK_LAG_BYTES, &["sink"]),
    g(SPOOL_OLDEST_UNACKED, &["sink"]),
    c(SPOOL_FSYNCS, &[]),
    c(SPOOL_RECOVERED_DISCARDED_BYTES, &[]),
    c(SPOOL_CORRUPT_RECORDS, &[]),
    c(SPOOL_CORRUPT_LOST_EVENTS, &[]),
    c(SINK_EVENTS_SENT, &["sink"]),
    c(SINK_BYTES_SENT, &["sink"]),
    c(SINK_BATCHES, &["sink"]),
    c(SINK_RETRIES, &["sink"]),
    c(SINK_SPLITS, &["sink"]),
    c(SINK_REJECTED_EVENTS, &["sink", "reason"]),
    c(SINK_ERRORS, &["sink", "reason"]),
    g(SINK_LAST_SUCCESS, &["sink"]),
    c(SINK_TRUNCATED_EVENTS, &["sink"]),
    c(LOKI_DEMOTED_EVENTS, &["sink"]),
    c(LOG_MESSAGES, &["level"]),
    c(LOG_MESSAGES_SUPPRESSED, &[]),
    g(BUILD_INFO, &["version"]),
    g(UP, &[]),
    c(PROCESS_CPU_SECONDS, &[]),
    g(PROCESS_RESIDENT_MEMORY, &[]),
    g(PROCESS_VIRTUAL_MEMORY, &[]),
    g(PROCESS_OPEN_FDS, &[]),
    g(PROCESS_MAX_FDS, &[]),
    g(PROCESS_START_TIME, &[]),
];

/// The catalog entry of a family.
pub fn find(name: &str) -> Option<&'static Family> {
    ALL.iter().find(|f| f.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_prometheus_conventions() {
        let mut seen = std::collections::HashSet::new();
        for f in ALL {
            assert!(seen.insert(f.name), "{} listed twice", f.name);
            assert!(
                f.name.starts_with("weir_") || f.name.starts_with("process_"),
                "{}",
                f.name
            );
            assert!(
                f.name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
                "{}",
                f.name
            );
            assert_eq!(
                f.kind == Kind::Counter,
                f.name.ends_with("_total"),
                "{}: counters and only counters end in _total",
                f.name
            );
        }
    }
}
