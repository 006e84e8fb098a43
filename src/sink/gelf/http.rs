//! GELF over HTTP(S): `POST` to Graylog's GELF HTTP input, which answers
//! `202 Accepted` once it has the message: the one GELF transport with an
//! acknowledgement.
//!
//! - One message per request (default), or many newline-separated (`bulk`,
//!   for an input with bulk receiving on), up to `max_message_bytes` of
//!   JSON per request body. Connections are kept alive and reused.
//! - Bodies are gzip-compressed by default (`compression`: `zlib` sends
//!   `Content-Encoding: deflate`, `none` plain JSON).
//! - TLS with rustls: the system's roots plus `ca_file`; basic or bearer
//!   auth (the secret is marked sensitive and never printed).
//!
//! | answer | what happens |
//! |---|---|
//! | 2xx | acknowledged |
//! | 429, 5xx, 408, no answer, timeout | retried with backoff (or after `Retry-After`), forever: the spool holds the data |
//! | 400, 413 for a request of several messages | split in halves, to deliver all but the refused message |
//! | other 4xx (and 400/413 for one message) | the request's messages are dropped, counted in `weir_sink_rejected_events_total{reason}` (`bad_request`, `too_large`, `unauthorized`, `forbidden`, `not_found`, `client_error`) |
//!
//! A response body is read (at most [`BODY_DRAIN`] bytes, so that the
//! connection can be reused) and discarded: never logged.

use std::io::Write as _;
use std::ops::Range;
use std::time::Duration;

use flate2::write::{GzEncoder, ZlibEncoder};
use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION, CONTENT_ENCODING, CONTENT_TYPE};

use super::config::Auth;
use super::{Compression, Config, Frames, COMPRESSION_LEVEL};
use crate::sink::cause::Cause;
use crate::sink::driver::{Failure, Step};
use crate::sink::http_client;
use crate::sink::loki::response::network_reason;

/// Longest wait for a TCP (+ TLS) connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How much of a response body is read (then discarded).
pub const BODY_DRAIN: usize = 4096;
/// Longest `Retry-After` honoured: a server cannot park the sink for hours.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);

/// The HTTP transport of one sink.
pub struct HttpSender {
    url: reqwest::Url,
    compression: Compression,
    bulk: bool,
    auth: Auth,
    ca_file: Option<std::path::PathBuf>,
    request_timeout: Duration,
    /// Most JSON bytes in one bulk body.
    max_body: usize,
    /// Built on first use, again after a setup failure (a CA file fixed
    /// while weir runs); the data waits in the spool meanwhile.
    client: Option<reqwest::Client>,
    /// Requests of the current batch still to send (message index ranges),
    /// the next one last.
    pending: Vec<Range<usize>>,
    json: Vec<u8>,
}

impl HttpSender {
    pub fn new(config: &Config) -> HttpSender {
        HttpSender {
            url: reqwest::Url::parse(&config.address).expect("validated in config"),
            compression: config.compression,
            bulk: config.bulk,
            auth: config.auth.clone(),
            ca_file: config.ca_file.clone(),
            request_timeout: config.request_timeout.0,
            max_body: config.max_message_bytes.0 as usize,
            client: None,
            pending: Vec::new(),
            json: Vec::new(),
        }
    }

    /// Plans the requests of a new batch.
    pub fn begin(&mut self, frames: &Frames) {
        self.pending.clear();
        let mut start = 0;
        let mut size = 0;
        for i in 0..frames.len() {
            let len = frames.get(i).map_or(0, <[u8]>::len) + 1;
            if i > start && (!self.bulk || size + len > self.max_body) {
                self.pending.push(start..i);
                start = i;
                size = 0;
            }
            size += len;
        }
        if start < frames.len() {
            self.pending.push(start..frames.len());
        }
        self.pending.reverse();
    }

    /// Sends the next request of the batch and says what happened.
    pub async fn step(&mut self, frames: &Frames) -> Step {
        loop {
            if self.client.is_none() {
                match self.build_client() {
                    Ok(c) => self.client = Some(c),
                    Err(detail) => {
                        return Step::Retry(Failure {
                            reason: "client_setup",
                            detail,
                            after: None,
                        })
                    }
                }
            }
            let Some(range) = self.pending.last().cloned() else {
                return Step::Done;
            };
            let body = self.body(frames, range.clone());
            let size = body.len() as u64;
            let messages = range.len();
            let answer = self.post(body).await;
            let status = match answer {
                Ok(status) => status,
                Err((reason, cause)) => {
                    return Step::Retry(Failure {
                        reason,
                        detail: format!(
                            "{cause} ({}); a request of {size} bytes, {messages} messages",
                            self.url
                        ),
                        after: None,
                    })
                }
            };
            match status.code {
                200..=299 => {
                    self.pending.pop();
                    return Step::Sent {
                        events: messages as u64,
                        bytes: size,
                    };
                }
                400 | 413 if messages > 1 => {
                    // Isolate the refused message: the others are delivered.
                    self.pending.pop();
                    let mid = range.start + messages / 2;
                    self.pending.push(mid..range.end);
                    self.pending.push(range.start..mid);
                }
                400..=499 if status.code != 408 && status.code != 429 => {
                    self.pending.pop();
                    return Step::Dropped {
                        events: messages as u64,
                        reason: client_error_reason(status.code),
                    };
                }
                code => {
                    let reason = match code {
                        429 => "rate_limited",
                        408 => "timeout",
                        500..=599 => "server_error",
                        _ => "unexpected_status",
                    };
                    return Step::Retry(Failure {
                        reason,
                        detail: format!(
                            "{} answered HTTP {code} to a request of {size} bytes, {messages} messages",
                            self.url
                        ),
                        after: status.retry_after,
                    });
                }
            }
        }
    }

    /// The body of one request: the messages' JSON, newline-separated, compressed.
    fn body(&mut self, frames: &Frames, range: Range<usize>) -> Vec<u8> {
        self.json.clear();
        for i in range {
            if !self.json.is_empty() {
                self.json.push(b'\n');
            }
            self.json
                .extend_from_slice(frames.get(i).unwrap_or_default());
        }
        let level = flate2::Compression::new(COMPRESSION_LEVEL);
        let out = Vec::with_capacity(self.json.len() / 4 + 64);
        match self.compression {
            Compression::None => self.json.clone(),
            Compression::Gzip => {
                let mut z = GzEncoder::new(out, level);
                z.write_all(&self.json)
                    .expect("writing to a Vec cannot fail");
                z.finish().expect("writing to a Vec cannot fail")
            }
            Compression::Zlib => {
                let mut z = ZlibEncoder::new(out, level);
                z.write_all(&self.json)
                    .expect("writing to a Vec cannot fail");
                z.finish().expect("writing to a Vec cannot fail")
            }
        }
    }

    /// Posts `body`; the status and `Retry-After`, or the reason it failed.
    /// Posts one body; without an answer, the metric reason and the cause.
    async fn post(&self, body: Vec<u8>) -> Result<Answer, (&'static str, Cause)> {
        let client = self.client.as_ref().expect("built before posting");
        let mut request = client
            .post(self.url.clone())
            .header(CONTENT_TYPE, "application/json")
            .body(body);
        match self.compression {
            Compression::Gzip => request = request.header(CONTENT_ENCODING, "gzip"),
            Compression::Zlib => request = request.header(CONTENT_ENCODING, "deflate"),
            Compression::None => {}
        }
        if let Auth::Basic { username, password } = &self.auth {
            request = request.basic_auth(username, Some(&password.0));
        }
        let mut response = request.send().await.map_err(|e| {
            let host = self.url.host_str().unwrap_or("?");
            let cause = Cause::of_reqwest(&e, host, CONNECT_TIMEOUT, self.request_timeout);
            (network_reason(&e), cause)
        })?;
        let code = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(|s| Duration::from_secs(s).min(MAX_RETRY_AFTER));
        // Read a little of the body so the connection can be reused; a
        // larger body closes it. Nothing of it is kept.
        let mut drained = 0;
        while drained < BODY_DRAIN {
            match response.chunk().await {
                Ok(Some(chunk)) => drained += chunk.len(),
                Ok(None) | Err(_) => break,
            }
        }
        Ok(Answer { code, retry_after })
    }

    fn build_client(&self) -> Result<reqwest::Client, String> {
        let mut headers = HeaderMap::new();
        if let Auth::Bearer { token } = &self.auth {
            let mut value = HeaderValue::from_str(&format!("Bearer {}", token.0))
                .map_err(|_| "bearer_token holds characters not allowed in an HTTP header")?;
            value.set_sensitive(true);
            headers.insert(AUTHORIZATION, value);
        }
        http_client::build(http_client::Options {
            ca_file: self.ca_file.as_deref(),
            connect_timeout: CONNECT_TIMEOUT,
            request_timeout: self.request_timeout,
            headers,
        })
        .map_err(|e| e.to_string())
    }
}

/// A response, reduced to what decides the outcome.
struct Answer {
    code: u16,
    retry_after: Option<Duration>,
}

/// The `reason` of a 4xx that drops messages.
fn client_error_reason(code: u16) -> &'static str {
    match code {
        400 => "bad_request",
        401 => "unauthorized",
        403 => "forbidden",
        404 => "not_found",
        413 => "too_large",
        _ => "client_error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Event, Origin};
    use crate::problems::Problems;
    use crate::sink::gelf::{Encoder, RawConfig};

    fn sender(extra: &str, events: usize) -> (HttpSender, Frames) {
        let raw: RawConfig =
            toml::from_str(&format!("address = \"http://g:12201/gelf\"\n{extra}")).unwrap();
        let mut problems = Problems::default();
        let config = raw.validate("sinks.g", &mut problems);
        assert!(problems.is_empty(), "{problems:?}");
        let mut frames = Frames::default();
        let batch: Vec<Event> = (0..events)
            .map(|i| Event::new(0, Origin::Docker, format!("line {i} {}", "x".repeat(1200))))
            .collect();
        Encoder::new(&config, "h").encode_batch(&batch, &mut frames);
        let mut s = HttpSender::new(&config);
        s.begin(&frames);
        (s, frames)
    }

    #[test]
    fn one_request_per_message_unless_bulk_and_bulk_bodies_stay_under_the_cap() {
        let (s, _) = sender("", 5);
        assert_eq!(s.pending, [4..5, 3..4, 2..3, 1..2, 0..1]);
        let (s, _) = sender("bulk = true", 5);
        assert_eq!(s.pending, vec![Range { start: 0, end: 5 }]);
        // ~1.5 KB messages (the line, and its first 250 characters as
        // short_message), 4 KiB bodies: two per request.
        let (s, frames) = sender("bulk = true\nmax_message_bytes = \"4KiB\"", 5);
        let len = frames.get(0).unwrap().len();
        assert!((1400..2000).contains(&len), "{len}");
        assert_eq!(s.pending, [4..5, 2..4, 0..2]);
    }

    #[test]
    fn bulk_body_is_newline_separated_gzip_json() {
        let (mut s, frames) = sender("bulk = true", 3);
        let body = s.body(&frames, 0..3);
        assert_eq!(&body[..2], &[0x1f, 0x8b], "gzip magic");
        let mut json = String::new();
        std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&body[..]), &mut json)
            .unwrap();
        let lines: Vec<serde_json::Value> = json
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[2]["short_message"]
            .as_str()
            .unwrap()
            .starts_with("line 2 "));
    }
}
