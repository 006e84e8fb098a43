//! Loki sink: pushes events to Grafana Loki's push API
//! (`POST /loki/api/v1/push`).
//!
//! This is the sink of incident 2 (DESIGN.md): a push over Loki's 4 MiB gRPC
//! limit, an error log quoting the push, the log fed back in. So:
//!
//! - every push is built under a hard cap on both its size on the wire and
//!   its decoded (uncompressed protobuf) size ([`batch`]);
//! - a response saying "too large" splits the push in halves; a 400 means
//!   Loki stored all but the refused entries, so the push is delivered except
//!   those (counted), never re-sent; entries Loki's known limits would refuse
//!   are not sent; an entry that can never fit is dropped and counted:
//!   nothing loops, nothing is stored twice ([`batch`], [`sink`], [`response`]);
//! - stream cardinality is capped (`max_streams`, `max_streams_per_push`):
//!   beyond it variable labels move into the line ([`batch`]);
//! - a response body is reduced to a `&'static str` reason by a classifier
//!   and then dropped: weir's log carries at most the status, that reason,
//!   the push size and the entry count.
//!
//! Files: [`encode`] (push.proto by hand, snappy, JSON), [`batch`] (events ->
//! streams -> pushes under the cap), [`service`] (HTTP client, auth, TLS),
//! [`response`] (what a response means), [`sink`] (the sink on [`crate::sink::driver`]).

pub mod batch;
pub mod encode;
pub mod response;
pub mod service;
mod sink;

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::problems::Problems;
use crate::secret::Secret;
use crate::spool;
use crate::units::{ByteSize, HumanDuration};

/// Loki's default gRPC message limit (`grpc_server_max_recv_msg_size`): a push
/// whose decoded size passes it is refused with a 500 `ResourceExhausted`.
pub const LOKI_GRPC_LIMIT: u64 = 4_194_304;
/// Default hard cap on a push, encoded and decoded: under Loki's limit with room.
pub const DEFAULT_MAX_PUSH_BYTES: u64 = 4_000_000;
/// Default `max_in_flight`: enough to keep a push in flight while the next
/// ones are encoded, few enough to bound memory (each holds one batch).
pub const DEFAULT_MAX_IN_FLIGHT: usize = 4;
/// Smallest cap accepted: below it a single long line could not fit.
const MIN_MAX_PUSH_BYTES: u64 = 64 << 10;

/// `[sinks.NAME]` with `type = "loki"`, as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// Push URL, e.g. `https://loki.example.org/loki/api/v1/push`.
    pub url: String,
    /// `protobuf` (default: snappy-compressed protobuf, what Loki's own
    /// clients send) or `json`.
    pub encoding: Option<Encoding>,
    /// Body compression. `protobuf` is always `snappy` (Loki requires it);
    /// `json` takes `none` (default) or `gzip`.
    pub compression: Option<Compression>,
    /// Event labels that become Loki stream labels, from `host`, `source`,
    /// `app`, `service`, `container_name`, `unit`, `level`. Default: all of
    /// them. Labels left out are kept as fields of the line.
    pub labels: Option<Vec<String>>,
    /// How the message and fields form the line: `logfmt` (default:
    /// `msg="..." key=value ...`), `json` (`{"message": "...", "key": "value"}`)
    /// or `raw` (the message only; fields go to structured metadata, or are
    /// dropped when that is off).
    pub line_format: Option<LineFormat>,
    /// Send fields as Loki structured metadata instead of in the line.
    /// Default `false`: Loki before 3.0, or with `allow_structured_metadata:
    /// false`, refuses such pushes.
    pub structured_metadata: Option<bool>,
    /// Tenant, sent as `X-Scope-OrgID` (multi-tenant Loki). Default: none.
    pub tenant_id: Option<String>,
    /// HTTP basic auth user name; needs `password`.
    pub username: Option<String>,
    /// HTTP basic auth password.
    pub password: Option<Secret>,
    /// Bearer token (`Authorization: Bearer ...`); excludes basic auth.
    pub bearer_token: Option<Secret>,
    /// PEM file of CA certificates trusted for `https` in addition to the
    /// system's. Default: none.
    pub ca_file: Option<PathBuf>,
    /// Longest wait for a TCP + TLS connection. Default `5s`.
    pub connect_timeout: Option<HumanDuration>,
    /// Longest wait for a whole push, response included. Default `30s`.
    pub request_timeout: Option<HumanDuration>,
    /// Push once this many bytes of events are gathered. Default `1MiB`.
    pub batch_max_bytes: Option<ByteSize>,
    /// Push at the latest this long after the first event of a batch. Default `1s`.
    pub batch_timeout: Option<HumanDuration>,
    /// Hard cap on one push, on the wire and decoded. Default `4000000`; at
    /// most `4194304` (Loki's default gRPC limit). Lower it if your Loki has a
    /// lower `grpc_server_max_recv_msg_size`.
    pub max_push_bytes: Option<ByteSize>,
    /// Lines longer than this are truncated with a marker. Default `256KiB`
    /// (Loki's default `max_line_size`).
    pub max_line_size: Option<ByteSize>,
    /// First delay before retrying a failed push. Default `200ms`.
    pub retry_initial_backoff: Option<HumanDuration>,
    /// Longest delay between retries (they go on forever). Default `30s`.
    pub retry_max_backoff: Option<HumanDuration>,
    /// Entries older than this are not sent but counted as refused
    /// (`too_old`): Loki would refuse them. Default `7d`, Loki's
    /// `reject_old_samples_max_age`; `0s` sends every age (for a Loki with
    /// `reject_old_samples: false`).
    pub reject_older_than: Option<HumanDuration>,
    /// Entries this far ahead of weir's clock are not sent but counted as
    /// refused (`too_new`). Default `10m`, Loki's `creation_grace_period`.
    pub reject_newer_than: Option<HumanDuration>,
    /// Most live streams (label sets used in the last 30 minutes). Beyond
    /// it `container_name`, then `unit`, `app` and `service` move into the
    /// line (or structured metadata) instead of making new streams. Default 2000.
    pub max_streams: Option<usize>,
    /// Most streams in one push. Default 1000.
    pub max_streams_per_push: Option<usize>,
    /// Most pushes in flight at once, each from a batch of its own, while
    /// the next batch is prepared. Default 4. Batches are still
    /// acknowledged in spool order, but entries of one stream may reach
    /// Loki out of order: Loki 2.4 and later accept that within
    /// `max_chunk_age / 2` (1 hour by default; `unordered_writes`, on by
    /// default). Set 1 for an older Loki, or one with `unordered_writes: false`.
    pub max_in_flight: Option<usize>,
}

/// The push body format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Encoding {
    Protobuf,
    Json,
}

/// The push body compression.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Compression {
    None,
    Snappy,
    Gzip,
}

/// How a line is made from the message and the fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LineFormat {
    Logfmt,
    Json,
    Raw,
}

/// How the sink authenticates.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Auth {
    None,
    Basic { username: String, password: Secret },
    Bearer { token: Secret },
}

/// The event labels a stream may be keyed by (see `event.rs`).
pub const LABEL_NAMES: [&str; 7] = [
    "host",
    "source",
    "app",
    "service",
    "container_name",
    "unit",
    "level",
];

/// Validated loki sink config.
#[derive(Debug, Clone, Serialize)]
pub struct Config {
    pub url: String,
    pub encoding: Encoding,
    pub compression: Compression,
    pub labels: Vec<&'static str>,
    pub line_format: LineFormat,
    pub structured_metadata: bool,
    pub tenant_id: Option<String>,
    pub auth: Auth,
    pub ca_file: Option<PathBuf>,
    pub connect_timeout: HumanDuration,
    pub request_timeout: HumanDuration,
    pub batch_max_bytes: ByteSize,
    pub batch_timeout: HumanDuration,
    pub max_push_bytes: ByteSize,
    pub max_line_size: ByteSize,
    pub retry_initial_backoff: HumanDuration,
    pub retry_max_backoff: HumanDuration,
    pub reject_older_than: HumanDuration,
    pub reject_newer_than: HumanDuration,
    pub max_streams: usize,
    pub max_streams_per_push: usize,
    pub max_in_flight: usize,
}

fn dur(v: Option<HumanDuration>, default: Duration) -> HumanDuration {
    v.unwrap_or(HumanDuration(default))
}

impl RawConfig {
    pub fn validate(self, key: &str, problems: &mut Problems) -> Config {
        let mut bad = |field: &str, msg: String| problems.add(format!("{key}.{field}"), msg);
        match reqwest::Url::parse(&self.url) {
            Ok(u) if !matches!(u.scheme(), "http" | "https") => bad(
                "url",
                format!("scheme `{}` is not http or https", u.scheme()),
            ),
            Ok(u) if !u.username().is_empty() || u.password().is_some() => bad(
                "url",
                "credentials in the URL would show in logs and check-config: use username/password"
                    .into(),
            ),
            Ok(u) if u.path() == "/" => bad(
                "url",
                "give the full push URL, e.g. \"https://loki.example.org/loki/api/v1/push\"".into(),
            ),
            Ok(_) => {}
            Err(e) => bad(
                "url",
                format!(
                    "not a URL ({e}): write e.g. \"https://loki.example.org/loki/api/v1/push\""
                ),
            ),
        }
        let encoding = self.encoding.unwrap_or(Encoding::Protobuf);
        let compression = match (encoding, self.compression) {
            (Encoding::Protobuf, None | Some(Compression::Snappy)) => Compression::Snappy,
            (Encoding::Protobuf, Some(c)) => {
                bad(
                    "compression",
                    format!("protobuf pushes are always snappy-compressed; remove `compression` or set encoding = \"json\" for {c:?}"),
                );
                Compression::Snappy
            }
            (Encoding::Json, None) => Compression::None,
            (Encoding::Json, Some(Compression::Snappy)) => {
                bad(
                    "compression",
                    "json pushes take \"none\" or \"gzip\"".into(),
                );
                Compression::None
            }
            (Encoding::Json, Some(c)) => c,
        };
        let labels: Vec<&'static str> = match self.labels {
            None => LABEL_NAMES.to_vec(),
            Some(list) => {
                let mut out = Vec::new();
                for name in &list {
                    match LABEL_NAMES.iter().find(|n| *n == name) {
                        Some(n) if !out.contains(n) => out.push(*n),
                        Some(_) => bad("labels", format!("`{name}` is listed twice")),
                        None => bad(
                            "labels",
                            format!(
                                "unknown label `{name}`: choose from {}",
                                LABEL_NAMES.join(", ")
                            ),
                        ),
                    }
                }
                if list.is_empty() {
                    bad(
                        "labels",
                        "Loki needs at least one stream label: list e.g. [\"host\", \"service\"]"
                            .into(),
                    );
                }
                out
            }
        };
        let auth = match (self.username, self.password, self.bearer_token) {
            (None, None, None) => Auth::None,
            (Some(username), Some(password), None) => Auth::Basic { username, password },
            (None, None, Some(token)) => Auth::Bearer { token },
            (_, _, Some(_)) => {
                bad(
                    "bearer_token",
                    "use either a bearer token or username/password, not both".into(),
                );
                Auth::None
            }
            (Some(_), None, None) => {
                bad("password", "basic auth needs a password too".into());
                Auth::None
            }
            (None, Some(_), None) => {
                bad("username", "basic auth needs a username too".into());
                Auth::None
            }
        };
        if let Some(t) = &self.tenant_id {
            if t.is_empty() || t.chars().any(|c| c.is_control()) {
                bad(
                    "tenant_id",
                    "must be a non-empty name without control characters".into(),
                );
            }
        }
        if let Some(path) = &self.ca_file {
            if let Err(e) = std::fs::metadata(path) {
                bad("ca_file", format!("cannot read {}: {e}", path.display()));
            }
        }
        let max_push_bytes = self
            .max_push_bytes
            .unwrap_or(ByteSize(DEFAULT_MAX_PUSH_BYTES));
        if max_push_bytes.0 > LOKI_GRPC_LIMIT {
            bad(
                "max_push_bytes",
                format!(
                    "{} is above Loki's 4194304-byte gRPC limit, which would refuse such pushes: use at most 4194304 (default 4000000)",
                    max_push_bytes.0
                ),
            );
        } else if max_push_bytes.0 < MIN_MAX_PUSH_BYTES {
            bad("max_push_bytes", "must be at least 64KiB".into());
        }
        let max_line_size = self.max_line_size.unwrap_or(ByteSize(256 << 10));
        if max_line_size.0 < 1024 || max_line_size.0 > max_push_bytes.0 / 2 {
            bad(
                "max_line_size",
                format!(
                    "must be between 1KiB and half of max_push_bytes ({})",
                    ByteSize(max_push_bytes.0 / 2)
                ),
            );
        }
        let batch_max_bytes = self.batch_max_bytes.unwrap_or(ByteSize(1 << 20));
        if batch_max_bytes.0 == 0 {
            bad("batch_max_bytes", "must be more than 0".into());
        }
        let batch_timeout = dur(self.batch_timeout, Duration::from_secs(1));
        let connect_timeout = dur(self.connect_timeout, Duration::from_secs(5));
        let request_timeout = dur(self.request_timeout, Duration::from_secs(30));
        let retry_initial_backoff = dur(self.retry_initial_backoff, Duration::from_millis(200));
        let retry_max_backoff = dur(self.retry_max_backoff, Duration::from_secs(30));
        for (field, d) in [
            ("connect_timeout", connect_timeout),
            ("request_timeout", request_timeout),
            ("retry_initial_backoff", retry_initial_backoff),
        ] {
            if d.0.is_zero() {
                bad(field, "must be more than 0ms".into());
            }
        }
        if retry_max_backoff < retry_initial_backoff {
            bad(
                "retry_max_backoff",
                "must be at least retry_initial_backoff".into(),
            );
        }
        let max_streams = self.max_streams.unwrap_or(2000);
        let max_streams_per_push = self.max_streams_per_push.unwrap_or(1000);
        for (field, n) in [
            ("max_streams", max_streams),
            ("max_streams_per_push", max_streams_per_push),
        ] {
            if !(1..=100_000).contains(&n) {
                bad(field, format!("{n} is outside 1..100000"));
            }
        }
        let max_in_flight = self.max_in_flight.unwrap_or(DEFAULT_MAX_IN_FLIGHT);
        if !(1..=64).contains(&max_in_flight) {
            bad(
                "max_in_flight",
                format!("{max_in_flight} is outside 1..64 (default {DEFAULT_MAX_IN_FLIGHT}; 1 for a Loki before 2.4)"),
            );
        }
        Config {
            max_in_flight,
            reject_older_than: dur(self.reject_older_than, Duration::from_secs(7 * 86_400)),
            reject_newer_than: dur(self.reject_newer_than, Duration::from_secs(600)),
            max_streams,
            max_streams_per_push,
            url: self.url,
            encoding,
            compression,
            labels,
            line_format: self.line_format.unwrap_or(LineFormat::Logfmt),
            structured_metadata: self.structured_metadata.unwrap_or(false),
            tenant_id: self.tenant_id,
            auth,
            ca_file: self.ca_file,
            connect_timeout,
            request_timeout,
            batch_max_bytes,
            batch_timeout,
            max_push_bytes,
            max_line_size,
            retry_initial_backoff,
            retry_max_backoff,
        }
    }
}

/// Delivers from `reader` to Loki until `shutdown`. What was not acknowledged
/// when `shutdown` fires stays in the spool for the next start.
pub async fn run(name: String, config: Config, reader: spool::Reader, shutdown: CancellationToken) {
    let sink = sink::LokiSink::new(&name, config, reader.metrics());
    crate::sink::driver::run(name, sink, reader, shutdown).await
}

#[cfg(test)]
mod tests;
