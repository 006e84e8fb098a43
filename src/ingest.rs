//! The hand-off from sources to the spool: scrub, count, append.
//!
//! Scrubbing happens here, before the spool write, so personal data never
//! touches disk whatever the source.

use std::sync::{Arc, Mutex};

use crate::event::Event;
use crate::metrics::{labels, Counter};
use crate::scrub::{FieldMemo, Scrubber};
use crate::spool::{Offset, SourcePosition, Spool, SpoolError};
use crate::tap::Tap;

/// What sources append to; cheap to clone.
#[derive(Clone)]
pub struct Ingest {
    spool: Spool,
    scrubber: Arc<Scrubber>,
    hostname: Arc<str>,
    tap: Option<Tap>,
    /// `weir_source_events_spooled_total` of each source, taken once: a
    /// registry lookup per append was a cost per event for Docker's one
    /// event per read.
    spooled: Arc<Mutex<Vec<(String, Counter)>>>,
}

impl Ingest {
    /// `hostname` becomes the `host` label of events whose source set none.
    pub fn new(spool: Spool, scrubber: Arc<Scrubber>, hostname: &str) -> Ingest {
        Ingest {
            spool,
            scrubber,
            hostname: hostname.into(),
            tap: None,
            spooled: Arc::default(),
        }
    }

    /// Also offers every scrubbed, spooled event to `weir tap` viewers.
    pub fn with_tap(mut self, tap: Tap) -> Ingest {
        self.tap = Some(tap);
        self
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
        self.append_batch(source, &mut events, position).await
    }

    /// [`Ingest::append`] for a source that reuses its events: they are
    /// labelled and scrubbed in place and left to the caller, whose next
    /// batch can refill their strings instead of allocating new ones.
    pub async fn append_batch(
        &self,
        source: &str,
        events: &mut [Event],
        position: Option<&[u8]>,
    ) -> Result<Offset, SpoolError> {
        self.append_batch_with(source, events, &mut FieldMemo::new(), position)
            .await
    }

    /// [`Ingest::append_batch`] for a source whose events repeat fields (a
    /// Docker connection: container id, tag, stream): `memo`, kept by the
    /// caller from batch to batch, spares the scrubber scanning them again.
    /// Use one memo with one `Ingest` only (it is valid for one scrubber).
    pub async fn append_batch_with(
        &self,
        source: &str,
        events: &mut [Event],
        memo: &mut FieldMemo,
        position: Option<&[u8]>,
    ) -> Result<Offset, SpoolError> {
        let spooled = self.spooled(source);
        self.append_counted(source, events, memo, &spooled, position)
            .await
    }

    /// `weir_source_events_spooled_total` of `source`, for a caller that
    /// appends often to keep and pass to [`Ingest::append_counted`].
    pub fn spooled(&self, source: &str) -> Counter {
        self.spooled_counter(source)
    }

    /// [`Ingest::append_batch_with`], counting in `spooled` (what
    /// [`Ingest::spooled`] gave for `source`): a Docker connection appends
    /// once per event, and the lookup took a lock shared by every
    /// connection of every source.
    pub async fn append_counted(
        &self,
        source: &str,
        events: &mut [Event],
        memo: &mut FieldMemo,
        spooled: &Counter,
        position: Option<&[u8]>,
    ) -> Result<Offset, SpoolError> {
        for event in events.iter_mut() {
            if event.labels.host.is_none() {
                event.labels.host = Some(self.hostname.to_string());
            }
            self.scrubber.scrub_with(event, Some(memo));
        }
        let n = events.len() as u64;
        let offset = self
            .spool
            .append(
                events,
                position.map(|position| SourcePosition { source, position }),
            )
            .await?;
        spooled.add(n);
        if let Some(tap) = &self.tap {
            tap.publish(source, events);
        }
        Ok(offset)
    }

    fn spooled_counter(&self, source: &str) -> Counter {
        let mut cache = self.spooled.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, c)) = cache.iter().find(|(s, _)| s == source) {
            return c.clone();
        }
        let c = self
            .spool
            .metrics()
            .source_events_spooled
            .with(labels::source(source));
        cache.push((source.to_owned(), c.clone()));
        c
    }

    /// Returns once everything up to `offset` is fsynced.
    pub async fn wait_durable(&self, offset: Offset) -> Result<(), SpoolError> {
        self.spool.wait_durable(offset).await
    }

    /// The registry the spool counts in, for the sources' metrics.
    pub fn metrics(&self) -> &crate::metrics::Metrics {
        self.spool.metrics()
    }

    /// The last position `source` committed with a batch, recovered from the spool.
    pub fn committed_position(&self, source: &str) -> Option<Vec<u8>> {
        self.spool.source_position(source)
    }
}

#[cfg(test)]
mod tests {
    use crate::event::{Event, Origin};
    use crate::scrub::tests::scrubber_with;

    /// `append_batch` skips scrubbing when the scrubber is off: that must
    /// only ever happen when scrubbing would have changed nothing.
    #[test]
    fn a_scrubber_that_is_off_changes_nothing() {
        let off = scrubber_with(
            "ipv4 = \"keep\"\nipv6 = \"keep\"\nlogins = \"keep\"\nsecrets = \"keep\"\n",
        );
        assert!(off.is_off());
        let texts = [
            "GET / from 203.0.113.7 and 2001:db8::1 and ::ffff:192.0.2.1",
            "user=alice login: bob alice@example.org",
            "https://carol:hunter2@example.org/ 10.1.2.3:8080",
            "[10/Oct/2000:13:55:36] 203.0.113.9 - frank [x] \"GET\"",
        ];
        for text in texts {
            let mut e = Event::new(1, Origin::Docker, text);
            e.fields.push(("user".into(), "dave".into()));
            e.fields.push(("client".into(), text.into()));
            let before = e.clone();
            off.scrub(&mut e);
            assert_eq!(e, before);
            // The inputs are ones scrubbing on would rewrite.
            scrubber_with("").scrub(&mut e);
            assert_ne!(e.message, before.message, "{text}");
        }
        for on in [
            "",
            "ipv4 = \"keep\"\nipv6 = \"keep\"",
            "ipv4 = \"keep\"\nlogins = \"keep\"",
            "ipv6 = \"keep\"\nlogins = \"keep\"",
            "ipv4 = \"keep\"\nipv6 = \"keep\"\nlogins = \"keep\"\n[[rules]]\nname = \"tok\"\npattern = \"tok_[a-z]+\"\naction = \"mask\"\n",
        ] {
            assert!(!scrubber_with(on).is_off(), "{on}");
        }
    }
}
