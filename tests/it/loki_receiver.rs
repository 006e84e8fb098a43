//! A Loki push receiver for tests: a real HTTP/1.1 server (optionally TLS)
//! that decodes `POST /loki/api/v1/push` as Loki documents it and enforces
//! Loki's limits with Loki's own error texts.
//!
//! Independent of weir's encoder: it has its own `push.proto` messages and
//! its own label parser, so a test checks weir against the format, not
//! against itself.
//!
//! - protobuf: `Content-Type: application/x-protobuf`, snappy *block* format;
//!   JSON: `application/json`, optionally `Content-Encoding: gzip`.
//! - a push whose decoded protobuf (JSON pushes are converted, as Loki does)
//!   passes `limit` (default 4,194,304): 500 `rpc error: code =
//!   ResourceExhausted desc = grpc: received message larger than max (N vs. L)`.
//! - a body on the wire over `max_body_bytes` (Loki's default 100 MiB): 413.
//! - per entry, as Loki's validation and ingester do: line over
//!   `max_line_size` (400 "Max entry size ..."), timestamp older than
//!   `reject_old_after` (400 "... timestamp too old ..."), newer than now +
//!   10 min (400 "... too new"), behind the stream's newest by more than
//!   `out_of_order_window` (400 "entry too far behind"), and exact duplicates
//!   ignored silently. Like Loki, valid entries of a push are stored even when
//!   others are refused, and the 400 names the first refusal.
//! - switches: [`Receiver::down`] / [`Receiver::up`] (connections refused),
//!   [`Receiver::fail_with_429`] for the next N pushes,
//!   [`Receiver::reject_lines_containing`] (400 for such entries).

#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::convert::Infallible;
use std::io::Read;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use prost::Message;
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};
use tokio_rustls::rustls;

/// Loki's `push.proto`, as the receiver reads it.
pub mod proto {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct PushRequest {
        #[prost(message, repeated, tag = "1")]
        pub streams: Vec<Stream>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Stream {
        #[prost(string, tag = "1")]
        pub labels: String,
        #[prost(message, repeated, tag = "2")]
        pub entries: Vec<Entry>,
        #[prost(uint64, tag = "3")]
        pub hash: u64,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Entry {
        #[prost(message, optional, tag = "1")]
        pub timestamp: Option<Timestamp>,
        #[prost(string, tag = "2")]
        pub line: String,
        #[prost(message, repeated, tag = "3")]
        pub structured_metadata: Vec<LabelPair>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct LabelPair {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(string, tag = "2")]
        pub value: String,
    }
    #[derive(Clone, Copy, PartialEq, prost::Message)]
    pub struct Timestamp {
        #[prost(int64, tag = "1")]
        pub seconds: i64,
        #[prost(int32, tag = "2")]
        pub nanos: i32,
    }
}

/// Limits and behaviour; defaults are Loki's.
#[derive(Debug, Clone)]
pub struct Limits {
    /// `grpc_server_max_recv_msg_size`.
    pub limit: usize,
    /// `distributor.max_recv_msg_size`.
    pub max_body_bytes: usize,
    pub max_line_size: usize,
    /// `reject_old_samples_max_age`.
    pub reject_old_after: Duration,
    /// `max_chunk_age / 2`: how far behind a stream's newest entry one may be.
    pub out_of_order_window: Duration,
    /// Keep accepted entries for [`Receiver::entries`] (and drop exact
    /// duplicates, as Loki does). Off for benchmarks: count only.
    pub keep_entries: bool,
    /// Time to answer each push (a busy or distant Loki), so that a
    /// client's pushes in flight overlap.
    pub delay: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            limit: 4_194_304,
            max_body_bytes: 100 << 20,
            max_line_size: 256 << 10,
            reject_old_after: Duration::from_secs(168 * 3600),
            out_of_order_window: Duration::from_secs(3600),
            keep_entries: true,
            delay: Duration::ZERO,
        }
    }
}

/// One stored entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    /// Shared by the entries of a stream in a push: a receiver that copied
    /// them per entry would be the benchmarks' bottleneck.
    pub labels: Arc<BTreeMap<String, String>>,
    pub ts_ns: i64,
    pub line: String,
    pub metadata: Vec<(String, String)>,
    /// Wall clock (ns since the epoch) when the push carrying it was accepted.
    pub received_ns: i64,
}

/// What the receiver saw, for assertions.
#[derive(Debug, Default, Clone)]
pub struct Stats {
    pub requests: u64,
    pub statuses: BTreeMap<u16, u64>,
    pub max_wire_bytes: usize,
    pub max_decoded_bytes: usize,
    /// `X-Scope-OrgID` and `Authorization` of the last push.
    pub tenant: Option<String>,
    pub authorization: Option<String>,
    pub content_types: HashSet<String>,
    /// Entries accepted (duplicates included when `keep_entries` is off).
    pub accepted: u64,
    /// Every valid entry received, exact duplicates included: `received -
    /// accepted` is the number of redeliveries Loki silently ignored.
    pub received: u64,
    /// Streams received whose entries were not in time order within the push.
    pub unsorted_streams: u64,
    /// Most streams in one push.
    pub max_streams_per_push: usize,
    /// Distinct streams that had an entry accepted.
    pub streams: usize,
    /// Most requests being handled at once.
    pub max_in_flight: usize,
    /// Entries accepted although older than their stream's newest (Loki >=
    /// 2.4's unordered writes, within `out_of_order_window`).
    pub behind_newest: u64,
}

#[derive(Default)]
struct State {
    in_flight: usize,
    entries: Vec<Stored>,
    /// Exact duplicates (stream id, timestamp, line), in two parts so
    /// that an entry costs no copy of its line and no hash of it (the
    /// pipeline bench's receiver stores millions): by (stream id,
    /// timestamp), the index in `entries` of the first one stored; and
    /// the other lines stored with a (stream id, timestamp) already there.
    seen: HashMap<(usize, i64), usize>,
    seen_more: HashSet<(usize, i64, String)>,
    /// Stream ids by label string (`{labels:?}` of the parsed labels).
    ids: HashMap<String, usize>,
    newest: HashMap<String, i64>,
    stats: Stats,
    fail_429: u32,
    reject_marker: Option<String>,
}

/// A running receiver; dropping it stops it.
pub struct Receiver {
    pub addr: SocketAddr,
    limits: Limits,
    tls: Option<Arc<rustls::ServerConfig>>,
    state: Arc<Mutex<State>>,
    accept: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        if let Some(h) = self.accept.lock().unwrap().take() {
            h.abort();
        }
    }
}

/// A test CA and a server certificate for `localhost` signed by it.
pub struct TestPki {
    pub ca_pem: String,
    pub server_config: Arc<rustls::ServerConfig>,
}

impl TestPki {
    pub fn new() -> TestPki {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "weir test CA");
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let key = KeyPair::generate().unwrap();
        let params = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        let cert = params.signed_by(&key, &ca, &ca_key).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let server_config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![cert.der().clone()],
                rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
            )
            .unwrap();
        TestPki {
            ca_pem: ca.pem(),
            server_config: Arc::new(server_config),
        }
    }
}

impl Receiver {
    /// Starts a plain HTTP receiver on 127.0.0.1 with Loki's default limits.
    pub async fn start() -> Receiver {
        Receiver::start_with(Limits::default(), None).await
    }

    pub async fn start_with(limits: Limits, tls: Option<Arc<rustls::ServerConfig>>) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let r = Receiver {
            addr: listener.local_addr().unwrap(),
            limits,
            tls,
            state: Arc::default(),
            accept: Mutex::new(None),
        };
        r.serve(listener);
        r
    }

    /// The push URL (`https://localhost:PORT/...` when TLS is on).
    pub fn url(&self) -> String {
        match self.tls {
            Some(_) => format!("https://localhost:{}/loki/api/v1/push", self.addr.port()),
            None => format!("http://{}/loki/api/v1/push", self.addr),
        }
    }

    fn serve(&self, listener: TcpListener) {
        let state = self.state.clone();
        let limits = self.limits.clone();
        let tls = self.tls.clone().map(tokio_rustls::TlsAcceptor::from);
        let task = tokio::spawn(async move {
            // Dropping the set (when this task is aborted) aborts every connection.
            let mut conns = JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let state = state.clone();
                let limits = limits.clone();
                let tls = tls.clone();
                conns.spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        handle(state.clone(), limits.clone(), req)
                    });
                    let http = hyper::server::conn::http1::Builder::new();
                    match tls {
                        Some(acceptor) => {
                            if let Ok(s) = acceptor.accept(stream).await {
                                let _ = http.serve_connection(TokioIo::new(s), svc).await;
                            }
                        }
                        None => {
                            let _ = http.serve_connection(TokioIo::new(stream), svc).await;
                        }
                    }
                });
                while conns.try_join_next().is_some() {}
            }
        });
        *self.accept.lock().unwrap() = Some(task);
    }

    /// Stops listening and drops every connection: clients get "connection refused".
    pub async fn down(&self) {
        let task = self.accept.lock().unwrap().take();
        if let Some(task) = task {
            task.abort();
            let _ = task.await;
        }
    }

    /// Listens again on the same port.
    pub async fn up(&self) {
        let listener = TcpListener::bind(self.addr).await.unwrap();
        self.serve(listener);
    }

    /// Answers the next `n` pushes with 429, as Loki's rate limiter does.
    pub fn fail_with_429(&self, n: u32) {
        self.state.lock().unwrap().fail_429 = n;
    }

    /// Refuses (400) every entry whose line contains `marker`.
    pub fn reject_lines_containing(&self, marker: &str) {
        self.state.lock().unwrap().reject_marker = Some(marker.to_owned());
    }

    pub fn entries(&self) -> Vec<Stored> {
        self.state.lock().unwrap().entries.clone()
    }

    pub fn stats(&self) -> Stats {
        let st = self.state.lock().unwrap();
        let mut stats = st.stats.clone();
        stats.streams = st.newest.len();
        stats
    }
}

fn respond(status: StatusCode, text: impl Into<String>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(text.into())));
    *r.status_mut() = status;
    r
}

async fn handle(
    state: Arc<Mutex<State>>,
    limits: Limits,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let content_type = header("content-type").unwrap_or_default();
    let content_encoding = header("content-encoding");
    {
        let mut st = state.lock().unwrap();
        st.stats.requests += 1;
        st.stats.tenant = header("x-scope-orgid");
        st.stats.authorization = header("authorization");
        st.stats.content_types.insert(content_type.clone());
        st.in_flight += 1;
        st.stats.max_in_flight = st.stats.max_in_flight.max(st.in_flight);
    }
    let ok_path = req.uri().path() == "/loki/api/v1/push" && req.method() == hyper::Method::POST;
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            state.lock().unwrap().in_flight -= 1;
            return Ok(respond(StatusCode::BAD_REQUEST, "cannot read body"));
        }
    };
    if !limits.delay.is_zero() {
        tokio::time::sleep(limits.delay).await;
    }
    let response = if ok_path {
        push(
            &state,
            &limits,
            &content_type,
            content_encoding.as_deref(),
            &body,
        )
    } else {
        respond(StatusCode::NOT_FOUND, "404 page not found\n")
    };
    let mut st = state.lock().unwrap();
    st.in_flight -= 1;
    *st.stats
        .statuses
        .entry(response.status().as_u16())
        .or_default() += 1;
    Ok(response)
}

fn push(
    state: &Mutex<State>,
    limits: &Limits,
    content_type: &str,
    content_encoding: Option<&str>,
    body: &[u8],
) -> Response<Full<Bytes>> {
    {
        let mut st = state.lock().unwrap();
        if st.fail_429 > 0 {
            st.fail_429 -= 1;
            return respond(
                StatusCode::TOO_MANY_REQUESTS,
                "Ingestion rate limit exceeded for user fake (limit: 4194304 bytes/sec) while attempting to ingest '1' lines totaling '100' bytes, reduce log volume or contact your Loki administrator to see if the limit can be increased",
            );
        }
        st.stats.max_wire_bytes = st.stats.max_wire_bytes.max(body.len());
    }
    if body.len() > limits.max_body_bytes {
        return respond(StatusCode::PAYLOAD_TOO_LARGE, "request body too large");
    }
    let request = match decode(content_type, content_encoding, body) {
        Ok(r) => r,
        Err(e) => return respond(StatusCode::BAD_REQUEST, e),
    };
    let decoded = request.encoded_len();
    {
        let mut st = state.lock().unwrap();
        st.stats.max_decoded_bytes = st.stats.max_decoded_bytes.max(decoded);
    }
    if decoded > limits.limit {
        return respond(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!(
                "rpc error: code = ResourceExhausted desc = grpc: received message larger than max ({decoded} vs. {})",
                limits.limit
            ),
        );
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i64;
    let oldest = now - limits.reject_old_after.as_nanos() as i64;
    let newest_ok = now + 600 * 1_000_000_000;
    let mut st = state.lock().unwrap();
    let first_stored = st.entries.len();
    st.stats.max_streams_per_push = st.stats.max_streams_per_push.max(request.streams.len());
    let mut first_error = None;
    let mut refused = 0;
    let mut total = 0;
    for stream in request.streams {
        let labels = match parse_labels(&stream.labels) {
            Ok(l) if !l.is_empty() => l,
            _ => return respond(StatusCode::BAD_REQUEST, "error parsing labels: parse error"),
        };
        let key = format!("{labels:?}");
        let labels = Arc::new(labels);
        let next_id = st.ids.len();
        let id = *st.ids.entry(key.clone()).or_insert(next_id);
        let ts_of = |e: &proto::Entry| e.timestamp.map_or((0, 0), |t| (t.seconds, t.nanos));
        if stream
            .entries
            .windows(2)
            .any(|w| ts_of(&w[0]) > ts_of(&w[1]))
        {
            st.stats.unsorted_streams += 1;
        }
        // The stream's newest timestamp, looked up once per stream (not per
        // entry) and stored back after its entries.
        let newest_before = st.newest.get(&key).copied();
        let mut newest = newest_before.unwrap_or(i64::MIN);
        for entry in stream.entries {
            total += 1;
            let ts = entry
                .timestamp
                .map_or(0, |t| t.seconds * 1_000_000_000 + i64::from(t.nanos));
            let error = if st
                .reject_marker
                .as_deref()
                .is_some_and(|m| entry.line.contains(m))
            {
                Some(format!(
                    "entry for stream '{}' refused by the test receiver's policy",
                    stream.labels
                ))
            } else if entry.line.len() > limits.max_line_size {
                Some(format!("Max entry size '{}' bytes exceeded for stream '{}' while adding an entry with length '{}' bytes", limits.max_line_size, stream.labels, entry.line.len()))
            } else if ts < oldest {
                Some(format!("entry for stream '{}' has timestamp too old: {ts}, oldest acceptable timestamp is: {oldest}", stream.labels))
            } else if ts > newest_ok {
                Some(format!(
                    "entry for stream '{}' has timestamp too new: {ts}",
                    stream.labels
                ))
            } else if newest != i64::MIN
                && ts < newest - limits.out_of_order_window.as_nanos() as i64
            {
                Some(format!("entry with timestamp {ts} ignored, reason: 'entry too far behind, oldest acceptable timestamp is: {}'", newest - limits.out_of_order_window.as_nanos() as i64))
            } else {
                None
            };
            if let Some(e) = error {
                refused += 1;
                first_error.get_or_insert(e);
                continue;
            }
            st.stats.received += 1;
            if ts < newest {
                st.stats.behind_newest += 1;
            }
            if newest < ts {
                newest = ts;
            }
            if !limits.keep_entries {
                st.stats.accepted += 1;
                continue;
            }
            let st = &mut *st;
            let duplicate = match st.seen.entry((id, ts)) {
                std::collections::hash_map::Entry::Vacant(v) => {
                    v.insert(st.entries.len());
                    false
                }
                std::collections::hash_map::Entry::Occupied(o) => {
                    st.entries[*o.get()].line == entry.line
                        || !st.seen_more.insert((id, ts, entry.line.clone()))
                }
            };
            if duplicate {
                continue; // Loki ignores exact duplicates
            }
            st.stats.accepted += 1;
            st.entries.push(Stored {
                labels: labels.clone(),
                ts_ns: ts,
                line: entry.line,
                metadata: entry
                    .structured_metadata
                    .into_iter()
                    .map(|p| (p.name, p.value))
                    .collect(),
                received_ns: 0, // set below, once the push is accepted
            });
        }
        if newest_before.map_or(newest != i64::MIN, |before| before != newest) {
            st.newest.insert(key, newest);
        }
    }
    // Every entry of the push was accepted when the push was: now.
    let accepted_ns = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64);
    for e in &mut st.entries[first_stored..] {
        e.received_ns = accepted_ns;
    }
    match first_error {
        Some(e) => respond(
            StatusCode::BAD_REQUEST,
            format!("{e}\ntotal ignored: {refused} out of {total}"),
        ),
        None => respond(StatusCode::NO_CONTENT, ""),
    }
}

fn decode(
    content_type: &str,
    content_encoding: Option<&str>,
    body: &[u8],
) -> Result<proto::PushRequest, String> {
    let mut raw = body.to_vec();
    if content_encoding == Some("gzip") {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(body)
            .read_to_end(&mut out)
            .map_err(|e| format!("gzip: {e}"))?;
        raw = out;
    }
    let ct = content_type.split(';').next().unwrap_or("").trim();
    match ct {
        "application/x-protobuf" => {
            let decoded = snap::raw::Decoder::new()
                .decompress_vec(&raw)
                .map_err(|e| format!("snappy: {e}"))?;
            proto::PushRequest::decode(decoded.as_slice()).map_err(|e| format!("proto: {e}"))
        }
        "application/json" | "" => from_json(&raw),
        other => Err(format!("unsupported Content-Type {other}")),
    }
}

/// `{"streams":[{"stream":{..},"values":[["ns","line",{meta}?]]}]}` as Loki reads it.
fn from_json(raw: &[u8]) -> Result<proto::PushRequest, String> {
    let v: serde_json::Value = serde_json::from_slice(raw).map_err(|e| format!("json: {e}"))?;
    let mut req = proto::PushRequest::default();
    let streams = v["streams"].as_array().ok_or("no streams")?;
    for s in streams {
        let labels = s["stream"].as_object().ok_or("no stream labels")?;
        let mut sorted: Vec<_> = labels.iter().collect();
        sorted.sort_by(|a, b| a.0.cmp(b.0));
        let label_text = format!(
            "{{{}}}",
            sorted
                .iter()
                .map(|(k, v)| format!(
                    "{k}={}",
                    serde_json::to_string(v.as_str().unwrap_or("")).unwrap()
                ))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let mut stream = proto::Stream {
            labels: label_text,
            ..Default::default()
        };
        for value in s["values"].as_array().ok_or("no values")? {
            let arr = value.as_array().ok_or("value not an array")?;
            let ts: i64 = arr
                .first()
                .and_then(|t| t.as_str())
                .and_then(|t| t.parse().ok())
                .ok_or("timestamp must be a string of nanoseconds")?;
            let line = arr.get(1).and_then(|l| l.as_str()).ok_or("no line")?;
            let mut meta = Vec::new();
            if let Some(m) = arr.get(2).and_then(|m| m.as_object()) {
                for (k, v) in m {
                    meta.push(proto::LabelPair {
                        name: k.clone(),
                        value: v.as_str().unwrap_or("").to_owned(),
                    });
                }
            }
            stream.entries.push(proto::Entry {
                timestamp: Some(proto::Timestamp {
                    seconds: ts.div_euclid(1_000_000_000),
                    nanos: ts.rem_euclid(1_000_000_000) as i32,
                }),
                line: line.to_owned(),
                structured_metadata: meta,
            });
        }
        req.streams.push(stream);
    }
    Ok(req)
}

/// Parses `{name="value", ...}` (LogQL stream selector syntax, Go escapes).
pub fn parse_labels(s: &str) -> Result<BTreeMap<String, String>, &'static str> {
    let mut out = BTreeMap::new();
    let mut chars = s.trim().chars().peekable();
    if chars.next() != Some('{') {
        return Err("expected {");
    }
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace() || *c == ',') {
            chars.next();
        }
        if chars.peek() == Some(&'}') {
            chars.next();
            break;
        }
        let mut name = String::new();
        while let Some(&c) = chars.peek() {
            if c.is_ascii_alphanumeric() || c == '_' {
                name.push(c);
                chars.next();
            } else {
                break;
            }
        }
        if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
            return Err("bad label name");
        }
        if chars.next() != Some('=') || chars.next() != Some('"') {
            return Err("expected =\"");
        }
        let mut value = String::new();
        loop {
            match chars.next().ok_or("unterminated value")? {
                '"' => break,
                '\\' => match chars.next().ok_or("bad escape")? {
                    'n' => value.push('\n'),
                    'r' => value.push('\r'),
                    't' => value.push('\t'),
                    '\\' => value.push('\\'),
                    '"' => value.push('"'),
                    'u' => {
                        let hex: String = chars.by_ref().take(4).collect();
                        let c = u32::from_str_radix(&hex, 16)
                            .ok()
                            .and_then(char::from_u32)
                            .ok_or("bad \\u escape")?;
                        value.push(c);
                    }
                    _ => return Err("unknown escape"),
                },
                c => value.push(c),
            }
        }
        out.insert(name, value);
    }
    if chars.next().is_some() {
        return Err("trailing characters");
    }
    Ok(out)
}
