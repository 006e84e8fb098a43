//! GELF sink: Graylog's format over HTTP(S), UDP, TCP or TLS.
//!
//! Split like the Loki sink: [`config`] (keys, checks, `address`),
//! [`encode`] (events -> wire messages, via [`message`]: field mapping, name
//! rules, shrinking), and the transports ([`transport`] picks one by the
//! scheme of `address`). The delivery loop is the shared
//! [`crate::sink::driver`].
//!
//! | address          | wire                                                         | a batch is acknowledged in the spool when | what can be lost |
//! |------------------|--------------------------------------------------------------|-------------------------------------------|------------------|
//! | `http(s)://host:port/gelf` | `POST`, one JSON message per request or newline-separated (`bulk`), gzip (default), deflate or plain ([`http`]) | the server answered 2xx (Graylog: `202 Accepted`) for every message, or refused one with a 4xx (dropped, counted) | nothing the server acknowledged |
//! | `udp://host:port` | one datagram per message, or up to 128 chunks ([`chunk`]); gzip (default), zlib or no compression; paced by `max_rate` ([`pace`]) | every datagram was handed to the kernel ([`udp`]) | anything the network or a busy server drops: UDP has no acknowledgement. A closed port (ICMP unreachable) is noticed and retried |
//! | `tcp://host:port` | JSON + `\0` per message, uncompressed, one connection          | the batch was written and flushed ([`tcp`]) | what was in flight when the server died after weir's liveness probe; otherwise a broken connection resends the batch (possible duplicates, no loss) |
//! | `tls://host:port` | as `tcp://`, inside TLS (rustls; system roots or `ca_file`) | as `tcp://`                               | as `tcp://`      |
//!
//! Failures are retried with exponential backoff, forever: the spool keeps
//! the data meanwhile (and sheds the oldest, counted, if it fills).
//! Shutdown stops at once; what was not acknowledged is sent after restart.
//!
//! # Size limits
//!
//! A UDP message must fit in 128 chunks of `chunk_size` bytes (after
//! compression); a TCP frame or HTTP message in `max_message_bytes`
//! (default 2 MiB, Graylog's `max_message_size`). A message that does not is
//! shrunk, never dropped: `full_message` is cut (with
//! [`message::TRUNCATION_MARKER`]) and, if that is not enough, long field
//! values, then `short_message`. Such events are counted in
//! `weir_sink_truncated_events_total{sink}`.
//!
//! # Metrics (label `sink` = the section name)
//!
//! The driver's set: `weir_sink_events_sent_total`,
//! `weir_sink_bytes_sent_total` (message bytes after compression, with
//! TCP's `\0`, without UDP chunk headers; HTTP request bodies),
//! `weir_sink_batches_total` (batches; HTTP requests),
//! `weir_sink_retries_total`, `weir_sink_errors_total{reason}` (`resolve`,
//! `connect`, `tls`, `tls_setup`, `send`, `timeout`; HTTP: `network`,
//! `rate_limited`, `server_error`, `client_setup`, `unexpected_status`),
//! `weir_sink_truncated_events_total`,
//! `weir_sink_rejected_events_total{reason}` (`too_large`: cannot happen
//! with the allowed limits, counted should it ever; HTTP 4xx reasons), and
//! `weir_sink_last_success_timestamp_seconds`.
//!
//! weir's log names the peer, counts, sizes and reasons; never a message,
//! never a response body.

pub mod chunk;
pub mod compress;
pub mod config;
pub mod encode;
pub mod http;
pub mod message;
pub mod pace;
pub mod tcp;
pub mod transport;
pub mod udp;

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::event::Event;
use crate::sink::driver::{self, Failure, Prepared, Step};
use crate::spool;

pub use config::{
    parse_address, Auth, Compression, Config, Endpoint, Protocol, Rate, RawConfig,
    DEFAULT_CHUNK_SIZE, DEFAULT_MAX_MESSAGE_BYTES, DEFAULT_MAX_RATE,
};
pub use encode::{EncodeStats, Encoder, Frames, COMPRESSION_LEVEL};
pub use transport::SendError;
use transport::{resolve, Transport};

/// Events per batch (one acknowledgement each).
const BATCH_EVENTS: usize = 2_000;
const BATCH_BYTES: usize = 1 << 20;

/// The GELF sink on the [`driver`]: encodes a batch once, then sends it
/// through the transport, resuming after a failure where the transport
/// stopped.
pub struct GelfSink {
    encoder: Encoder,
    transport: Transport,
    frames: Frames,
    /// The next message to send.
    next: usize,
    /// Messages before this one were reported sent to the driver.
    reported: usize,
}

impl GelfSink {
    pub fn new(config: &Config) -> GelfSink {
        GelfSink {
            encoder: Encoder::new(config, &crate::hostname::machine_hostname()),
            transport: Transport::new(config),
            frames: Frames::default(),
            next: 0,
            reported: 0,
        }
    }
}

impl driver::Sink for GelfSink {
    const RETRY_MESSAGE: &'static str = "cannot deliver to the GELF server; retrying";

    fn policy(&self) -> driver::Policy {
        driver::Policy {
            max_events: BATCH_EVENTS,
            max_bytes: BATCH_BYTES,
            linger: Duration::ZERO,
            backoff_initial: Duration::from_millis(200),
            backoff_max: Duration::from_secs(30),
            // One connection: messages stay in spool order.
            in_flight: 1,
        }
    }

    fn begin(&mut self, events: &[Event]) -> Prepared {
        let stats = self.encoder.encode_batch(events, &mut self.frames);
        self.next = 0;
        self.reported = 0;
        if let Transport::Http(http) = &mut self.transport {
            http.begin(&self.frames);
        }
        Prepared {
            truncated: stats.truncated,
            too_large: stats.rejected,
        }
    }

    async fn step(&mut self) -> Step {
        if let Transport::Http(http) = &mut self.transport {
            return http.step(&self.frames).await;
        }
        if self.reported == self.frames.len() {
            return Step::Done;
        }
        if let Err(e) = self.transport.send(&self.frames, &mut self.next).await {
            return Step::Retry(Failure {
                reason: e.reason(),
                detail: format!("{e} ({} messages pending)", self.frames.len() - self.next),
                after: None,
            });
        }
        let bytes = self.frames.range_bytes(self.reported, self.next);
        let events = (self.next - self.reported) as u64;
        self.reported = self.next;
        Step::Sent { events, bytes }
    }
}

/// Delivers from `reader` to the GELF server until `shutdown`.
pub async fn run(name: String, config: Config, reader: spool::Reader, shutdown: CancellationToken) {
    tracing::info!(sink = %name, address = %config.address, "GELF sink started");
    driver::run(name, GelfSink::new(&config), reader, shutdown).await
}
