//! The hand-off from sources to the spool: scrub, count, append.
//!
//! Scrubbing happens here, before the spool write, so personal data never
//! touches disk whatever the source.

use std::sync::Arc;

use crate::event::Event;
use crate::metrics::{self, Counter};
use crate::scrub::Scrubber;
use crate::spool::{Offset, SourcePosition, Spool, SpoolError};

/// What sources append to; cheap to clone.
#[derive(Clone)]
pub struct Ingest {
    spool: Spool,
    scrubber: Arc<Scrubber>,
    hostname: Arc<str>,
}

impl Ingest {
    /// `hostname` becomes the `host` label of events whose source set none.
    pub fn new(spool: Spool, scrubber: Arc<Scrubber>, hostname: &str) -> Ingest {
        Ingest {
            spool,
            scrubber,
            hostname: hostname.into(),
        }
    }

    /// Scrubs `events` and appends them as one spool batch, together with the
    /// source's resume `position` (committed atomically with the batch).
    /// Returns the offset to pass to [`Ingest::wait_durable`] before
    /// acknowledging to a client or trusting the position.
    pub async fn append(
        &self,
        source: &str,
        mut events: Vec<Event>,
        position: Option<&[u8]>,
    ) -> Result<Offset, SpoolError> {
        for event in &mut events {
            if event.labels.host.is_none() {
                event.labels.host = Some(self.hostname.to_string());
            }
            self.scrubber.scrub(event);
        }
        let n = events.len() as u64;
        let offset = self
            .spool
            .append(
                &events,
                position.map(|position| SourcePosition { source, position }),
            )
            .await?;
        spooled_counter(source).add(n);
        Ok(offset)
    }

    /// Returns once everything up to `offset` is fsynced.
    pub async fn wait_durable(&self, offset: Offset) -> Result<(), SpoolError> {
        self.spool.wait_durable(offset).await
    }

    /// The last position `source` committed with a batch, recovered from the spool.
    pub fn committed_position(&self, source: &str) -> Option<Vec<u8>> {
        self.spool.source_position(source)
    }
}

fn spooled_counter(source: &str) -> Counter {
    metrics::counter(
        "weir_source_events_spooled_total",
        "Events a source appended to the spool (after scrubbing).",
        &[("source", source)],
    )
}
