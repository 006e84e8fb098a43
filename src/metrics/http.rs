//! The metrics endpoint: a deliberately tiny HTTP/1.1 responder on tokio.
//!
//! It answers `GET` (and `HEAD`) for three paths and nothing else:
//!
//! | path       | 200 when                                   | else |
//! |------------|--------------------------------------------|------|
//! | `/metrics` | always: the registry, text format 0.0.4    |      |
//! | `/health`  | the pipeline loop is alive                 | 503 and the reason |
//! | `/ready`   | the spool is open and every source listens, not shutting down | 503 and the reason |
//!
//! One request per connection (`Connection: close`), a request head of at
//! most [`MAX_REQUEST_BYTES`], [`IO_TIMEOUT`] to read it and to write the
//! answer, at most [`MAX_CONNECTIONS`] at once (further clients wait in the
//! kernel's backlog). A scraper is the only client this needs to please; a
//! full HTTP stack would be more code to trust than this file.
//!
//! [`get`] is the matching blocking client, used by `weir status` and tests.

use std::io::{self, Read as _};
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, UnixListener};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::health::{Health, Verdict};
use crate::net::{self, Bound, Slot, Slots, Stream};

/// Longest request head accepted (request line and headers).
pub const MAX_REQUEST_BYTES: usize = 8 * 1024;
/// Time allowed to read a request, and separately to write its answer.
pub const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections served at once.
pub const MAX_CONNECTIONS: usize = 32;
/// The Content-Type of the Prometheus text format.
pub const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Where the endpoint listens: `host:port` (or `tcp://host:port`) or
/// `unix:///path`, parsed by the one endpoint parser.
pub use crate::net::{Endpoint as Address, EndpointError as AddressError};

/// Why the endpoint could not start. Each says what to do.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    #[error("`metrics.listen` = {address:?}: {source}")]
    Address {
        address: String,
        source: AddressError,
    },
    #[error("cannot listen on {address} for /metrics: {source}; free the address, set another `metrics.listen`, or set it to \"\" to turn the endpoint off")]
    Io { address: String, source: io::Error },
    #[error("cannot listen on {address} for /metrics: a process already serves that socket (another weir?); stop it or set another `metrics.listen`")]
    InUse { address: String },
}

/// A bound endpoint socket, not yet serving.
pub struct Listener {
    inner: net::Listener,
    /// A unix socket's path, removed when serving stops.
    path: Option<PathBuf>,
}

impl Listener {
    /// The address actually bound (with the real port when `:0` was asked).
    pub fn local_address(&self) -> Address {
        match (&self.inner.bound(), &self.path) {
            (_, Some(p)) => Address::Unix(p.clone()),
            (Ok(Bound::Tcp(a)), None) => Address::Tcp(a.to_string()),
            _ => Address::Tcp("?".into()),
        }
    }
}

/// Binds `listen` (a `metrics.listen` value). A unix socket left behind by a
/// crashed weir is replaced; one that a live process answers on is not.
pub async fn bind(listen: &str) -> Result<Listener, BindError> {
    let address = Address::parse(listen).map_err(|source| BindError::Address {
        address: listen.to_owned(),
        source,
    })?;
    let io = |source| BindError::Io {
        address: address.to_string(),
        source,
    };
    match &address {
        Address::Tcp(a) => Ok(Listener {
            inner: net::Listener::Tcp(TcpListener::bind(a.as_str()).await.map_err(io)?),
            path: None,
        }),
        Address::Unix(path) => {
            remove_stale_socket(path, &address)?;
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).map_err(io)?;
            }
            let l = UnixListener::bind(path).map_err(io)?;
            Ok(Listener {
                inner: net::Listener::Unix(l),
                path: Some(path.clone()),
            })
        }
    }
}

fn remove_stale_socket(path: &Path, address: &Address) -> Result<(), BindError> {
    use std::os::unix::fs::FileTypeExt;
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return Ok(());
    };
    if !meta.file_type().is_socket() {
        return Err(BindError::Io {
            address: address.to_string(),
            source: io::Error::new(
                io::ErrorKind::AlreadyExists,
                "the path exists and is not a socket",
            ),
        });
    }
    match std::os::unix::net::UnixStream::connect(path) {
        Ok(_) => Err(BindError::InUse {
            address: address.to_string(),
        }),
        Err(_) => std::fs::remove_file(path).map_err(|source| BindError::Io {
            address: address.to_string(),
            source,
        }),
    }
}

/// Serves `listener` until `shutdown` is cancelled; then stops accepting,
/// removes a unix socket path, and returns. Connections in flight finish
/// within their own timeouts.
///
/// Slots are [`crate::net::Slots`]: when all [`MAX_CONNECTIONS`] are taken,
/// the connection waiting longest for its request gives way, so idle
/// connections cannot keep a scrape out.
pub fn serve(listener: Listener, health: Health, shutdown: CancellationToken) -> JoinHandle<()> {
    tokio::spawn(async move {
        let slots = Slots::new(MAX_CONNECTIONS);
        let refused = |_: &str| {
            tracing::debug!("metrics endpoint: no connection gave way; new connection closed");
        };
        let serve = |stream: Stream, _peer: String, slot: Slot| {
            let health = health.clone();
            tokio::spawn(async move {
                match stream {
                    Stream::Tcp(s) => handle(s, &health, &slot).await,
                    Stream::Unix(s) => handle(s, &health, &slot).await,
                }
            });
        };
        listener
            .inner
            .serve("metrics", &slots, &shutdown, refused, serve)
            .await;
        if let Some(path) = &listener.path {
            let _ = std::fs::remove_file(path);
        }
    })
}

/// A complete answer.
struct Answer {
    status: u16,
    content_type: &'static str,
    extra_header: Option<&'static str>,
    body: String,
}

impl Answer {
    fn text(status: u16, body: impl Into<String>) -> Answer {
        Answer {
            status,
            content_type: "text/plain; charset=utf-8",
            extra_header: None,
            body: body.into(),
        }
    }
}

async fn handle<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S, health: &Health, slot: &Slot) {
    // Until its request is read, a connection gives way to a newer one.
    let head = tokio::select! {
        h = tokio::time::timeout(IO_TIMEOUT, read_head(&mut stream)) => h,
        _ = slot.give_way().cancelled() => return,
    };
    let (answer, head_only) = match head {
        Err(_) => (Answer::text(408, "request timeout\n"), false),
        Ok(Err(HeadError::Io)) => return,
        Ok(Err(HeadError::TooLarge)) => (Answer::text(431, "request head too large\n"), false),
        Ok(Ok(head)) => match parse_request_line(&head) {
            None => (Answer::text(400, "malformed request\n"), false),
            Some((method, path)) => (route(method, path, health), method == "HEAD"),
        },
    };
    let mut out = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\nCache-Control: no-store\r\n",
        answer.status,
        reason_phrase(answer.status),
        answer.content_type,
        answer.body.len()
    );
    if let Some(h) = answer.extra_header {
        out.push_str(h);
        out.push_str("\r\n");
    }
    out.push_str("\r\n");
    if !head_only {
        out.push_str(&answer.body);
    }
    let _ = tokio::time::timeout(IO_TIMEOUT, async {
        stream.write_all(out.as_bytes()).await?;
        stream.shutdown().await
    })
    .await;
}

enum HeadError {
    Io,
    TooLarge,
}

/// Reads up to the blank line that ends the request head.
async fn read_head<S: AsyncRead + Unpin>(stream: &mut S) -> Result<Vec<u8>, HeadError> {
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    loop {
        let n = stream.read(&mut chunk).await.map_err(|_| HeadError::Io)?;
        if n == 0 {
            return Err(HeadError::Io);
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = find(&buf, b"\r\n\r\n").or_else(|| find(&buf, b"\n\n")) {
            buf.truncate(end);
            return Ok(buf);
        }
        if buf.len() > MAX_REQUEST_BYTES {
            return Err(HeadError::TooLarge);
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// `GET /path?query HTTP/1.1` -> (`GET`, `/path`).
fn parse_request_line(head: &[u8]) -> Option<(&str, &str)> {
    let line = head.split(|&b| b == b'\n').next()?;
    let line = std::str::from_utf8(line).ok()?.trim_end_matches('\r');
    let mut parts = line.split(' ');
    let (method, target, version) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || !version.starts_with("HTTP/1.") || !target.starts_with('/') {
        return None;
    }
    Some((method, target.split('?').next().unwrap_or(target)))
}

fn route(method: &str, path: &str, health: &Health) -> Answer {
    if method != "GET" && method != "HEAD" {
        let mut a = Answer::text(405, "only GET is supported\n");
        a.extra_header = Some("Allow: GET, HEAD");
        return a;
    }
    let verdict = |v: Verdict| match v {
        Verdict::Ok => Answer::text(200, "ok\n"),
        Verdict::Failing(why) => Answer::text(503, format!("{why}\n")),
    };
    match path {
        "/metrics" => Answer {
            status: 200,
            content_type: METRICS_CONTENT_TYPE,
            extra_header: None,
            body: super::render(),
        },
        "/health" | "/healthz" => verdict(health.liveness()),
        "/ready" | "/readyz" => verdict(health.readiness()),
        "/" => Answer::text(200, "weir: /metrics /health /ready\n"),
        _ => Answer::text(404, "not found; try /metrics, /health or /ready\n"),
    }
}

fn reason_phrase(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "",
    }
}

/// A response read by [`get`].
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub content_type: Option<String>,
    pub body: String,
}

/// Why [`get`] failed. Carries no response body.
#[derive(Debug, thiserror::Error)]
pub enum GetError {
    #[error("cannot connect to {address}: {source}")]
    Connect { address: String, source: io::Error },
    #[error("{address}: {source}")]
    Io { address: String, source: io::Error },
    #[error("{address}: not an HTTP response")]
    Malformed { address: String },
}

/// Most bytes [`get`] reads: far above any real scrape.
const MAX_RESPONSE_BYTES: u64 = 64 << 20;

/// A blocking `GET path` against the endpoint at `address`.
pub fn get(address: &Address, path: &str, timeout: Duration) -> Result<Response, GetError> {
    let name = address.to_string();
    let connect = |source| GetError::Connect {
        address: name.clone(),
        source,
    };
    let raw = match address {
        Address::Tcp(a) => {
            let mut last = io::Error::new(io::ErrorKind::NotFound, "the name resolves to nothing");
            let mut stream = None;
            for sa in std::net::ToSocketAddrs::to_socket_addrs(a.as_str()).map_err(connect)? {
                match std::net::TcpStream::connect_timeout(&sa, timeout) {
                    Ok(s) => {
                        stream = Some(s);
                        break;
                    }
                    Err(e) => last = e,
                }
            }
            let s = stream.ok_or_else(|| connect(last))?;
            s.set_read_timeout(Some(timeout))
                .and_then(|()| s.set_write_timeout(Some(timeout)))
                .and_then(|()| exchange(s, path))
        }
        Address::Unix(p) => {
            let s = std::os::unix::net::UnixStream::connect(p).map_err(connect)?;
            s.set_read_timeout(Some(timeout))
                .and_then(|()| s.set_write_timeout(Some(timeout)))
                .and_then(|()| exchange(s, path))
        }
    }
    .map_err(|source| GetError::Io {
        address: name.clone(),
        source,
    })?;
    parse_response(&raw).ok_or(GetError::Malformed { address: name })
}

/// Writes the request, reads the whole answer (the server closes).
fn exchange(mut stream: impl io::Read + io::Write, path: &str) -> io::Result<Vec<u8>> {
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: weir\r\nUser-Agent: weir-status\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes())?;
    let mut raw = Vec::new();
    stream.take(MAX_RESPONSE_BYTES).read_to_end(&mut raw)?;
    Ok(raw)
}

fn parse_response(raw: &[u8]) -> Option<Response> {
    let end = find(raw, b"\r\n\r\n")?;
    let head = std::str::from_utf8(&raw[..end]).ok()?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next()?;
    let mut parts = status_line.splitn(3, ' ');
    if !parts.next()?.starts_with("HTTP/1.") {
        return None;
    }
    let status = parts.next()?.parse().ok()?;
    let content_type = lines.find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case("content-type")
            .then(|| v.trim().to_owned())
    });
    Some(Response {
        status,
        content_type,
        body: String::from_utf8_lossy(&raw[end + 4..]).into_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_lines_parse() {
        assert_eq!(
            parse_request_line(b"GET /metrics?x=1 HTTP/1.1\r\nHost: a"),
            Some(("GET", "/metrics"))
        );
        assert_eq!(parse_request_line(b"GET /metrics"), None);
        assert_eq!(parse_request_line(b"GET metrics HTTP/1.1"), None);
        assert_eq!(parse_request_line(b"\xff\xfe"), None);
    }

    async fn exchange(request: &[u8], health: &Health) -> String {
        let (mut client, server) = tokio::io::duplex(1 << 20);
        let h = health.clone();
        let task = tokio::spawn(async move {
            let slot = Slots::new(1).acquire().await.unwrap();
            handle(server, &h, &slot).await
        });
        client.write_all(request).await.unwrap();
        let mut out = Vec::new();
        client.read_to_end(&mut out).await.unwrap();
        task.await.unwrap();
        String::from_utf8(out).unwrap()
    }

    #[tokio::test]
    async fn answers_methods_paths_and_oversized_heads() {
        let health = Health::new(CancellationToken::new());
        health.beat();
        let r = exchange(b"GET /health HTTP/1.1\r\n\r\n", &health).await;
        assert!(r.starts_with("HTTP/1.1 200 OK\r\n"), "{r}");
        assert!(r.contains("Connection: close\r\n"), "{r}");
        let r = exchange(b"GET /ready HTTP/1.0\r\n\r\n", &health).await;
        assert!(r.starts_with("HTTP/1.1 503 "), "{r}");
        let r = exchange(b"POST /metrics HTTP/1.1\r\n\r\n", &health).await;
        assert!(
            r.starts_with("HTTP/1.1 405 ") && r.contains("Allow: GET"),
            "{r}"
        );
        let r = exchange(b"GET /nope HTTP/1.1\r\n\r\n", &health).await;
        assert!(r.starts_with("HTTP/1.1 404 "), "{r}");
        let r = exchange(b"HEAD /metrics HTTP/1.1\r\n\r\n", &health).await;
        assert!(
            r.starts_with("HTTP/1.1 200 ") && r.ends_with("\r\n\r\n"),
            "{r}"
        );
        let mut big = b"GET /metrics HTTP/1.1\r\n".to_vec();
        big.extend(std::iter::repeat_n(b'x', MAX_REQUEST_BYTES + 10));
        let r = exchange(&big, &health).await;
        assert!(r.starts_with("HTTP/1.1 431 "), "{r}");
        let r = exchange(b"garbage\r\n\r\n", &health).await;
        assert!(r.starts_with("HTTP/1.1 400 "), "{r}");
    }

    #[test]
    fn responses_parse() {
        let r = parse_response(
            b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain\r\n\r\nwhy\n",
        )
        .unwrap();
        assert_eq!(r.status, 503);
        assert_eq!(r.content_type.as_deref(), Some("text/plain"));
        assert_eq!(r.body, "why\n");
        assert!(parse_response(b"SSH-2.0-OpenSSH\r\n\r\n").is_none());
    }
}
