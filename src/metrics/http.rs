//! The metrics endpoint, served with hyper (HTTP/1.1).
//!
//! It answers `GET` (and `HEAD`) for four paths and nothing else:
//!
//! | path       | 200 when                                   | else |
//! |------------|--------------------------------------------|------|
//! | `/metrics` | always: the registry, Prometheus text format 0.0.4 | |
//! | `/health`  | the pipeline loop is alive                 | 503 and the reason |
//! | `/ready`   | the spool is open and every source listens, not shutting down | 503 and the reason |
//! | `/status`  | always: the [`Snapshot`] as JSON           |      |
//!
//! One request per connection (`Connection: close`), a request head of at
//! most [`MAX_REQUEST_BYTES`] (else 431), [`IO_TIMEOUT`] to read it and as
//! long again to answer, at most [`MAX_CONNECTIONS`] at once, the one that
//! has waited longest for its request giving way to a new one (so idle
//! connections cannot keep a scrape out).
//!
//! [`get`] is the matching blocking client, used by `weir status` and tests.

use std::convert::Infallible;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty, Full, Limited};
use hyper::header::{HeaderValue, ALLOW, CACHE_CONTROL, CONTENT_TYPE};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, UnixListener};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::health::{Health, Verdict};
use super::Metrics;
use crate::net::{self, Bound, Slot, Slots, Stream};

/// Longest request head accepted (request line and headers).
pub const MAX_REQUEST_BYTES: usize = 8 * 1024;
/// Time allowed to read a request, and separately to write its answer.
pub const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections served at once.
pub const MAX_CONNECTIONS: usize = 32;
/// The Content-Type of `/metrics`: the Prometheus text format.
pub const METRICS_CONTENT_TYPE: &str = super::CONTENT_TYPE;

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

/// What the endpoint serves.
struct Served {
    metrics: Metrics,
    health: Health,
}

/// Serves `listener` until `shutdown` is cancelled; then stops accepting,
/// removes a unix socket path, and returns. Connections in flight finish
/// within their own timeouts.
///
/// Slots are [`crate::net::Slots`]: when all [`MAX_CONNECTIONS`] are taken,
/// the connection waiting longest for its request gives way, so idle
/// connections cannot keep a scrape out.
pub fn serve(
    listener: Listener,
    metrics: Metrics,
    health: Health,
    shutdown: CancellationToken,
) -> JoinHandle<()> {
    let served = Arc::new(Served { metrics, health });
    tokio::spawn(async move {
        let slots = Slots::new(MAX_CONNECTIONS);
        let refused = |_: &str| {
            tracing::debug!("metrics endpoint: no connection gave way; new connection closed");
        };
        let serve = |stream: Stream, _peer: String, slot: Slot| {
            let served = served.clone();
            tokio::spawn(async move {
                match stream {
                    Stream::Tcp(s) => connection(s, served, slot).await,
                    Stream::Unix(s) => connection(s, served, slot).await,
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

type Response = hyper::Response<Full<Bytes>>;

/// One connection: one request, answered, then closed. Until its request
/// head is read it gives way to a newer connection that needs the slot.
async fn connection<S>(stream: S, served: Arc<Served>, slot: Slot)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let slot = Arc::new(slot);
    let service_slot = slot.clone();
    let service = hyper::service::service_fn(move |request: Request<hyper::body::Incoming>| {
        service_slot.touch();
        let answer = route(request.method(), request.uri().path(), &served);
        async move { Ok::<_, Infallible>(answer) }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(IO_TIMEOUT)
        .keep_alive(false)
        .max_buf_size(MAX_REQUEST_BYTES)
        .serve_connection(TokioIo::new(stream), service);
    tokio::select! {
        _ = tokio::time::timeout(2 * IO_TIMEOUT, conn) => {}
        _ = slot.give_way().cancelled() => {}
    }
}

fn answer(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Response {
    let mut r = hyper::Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response {
    answer(status, "text/plain; charset=utf-8", body)
}

fn route(method: &Method, path: &str, served: &Served) -> Response {
    if method != Method::GET && method != Method::HEAD {
        let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "only GET is supported\n");
        r.headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    let verdict = |v: Verdict| match v {
        Verdict::Ok => text(StatusCode::OK, "ok\n"),
        Verdict::Failing(why) => text(StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")),
    };
    match path {
        "/metrics" => answer(
            StatusCode::OK,
            METRICS_CONTENT_TYPE,
            served.metrics.encode(),
        ),
        "/status" => {
            let snapshot = served.metrics.snapshot(Some(&served.health));
            let json = serde_json::to_vec(&snapshot).expect("a snapshot serializes");
            answer(StatusCode::OK, "application/json", json)
        }
        "/health" | "/healthz" => verdict(served.health.liveness()),
        "/ready" | "/readyz" => verdict(served.health.readiness()),
        "/" => text(StatusCode::OK, "weir: /metrics /health /ready /status\n"),
        _ => text(
            StatusCode::NOT_FOUND,
            "not found; try /metrics, /health, /ready or /status\n",
        ),
    }
}

/// A response read by [`get`].
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub content_type: Option<String>,
    pub body: String,
}

/// Why [`get`] failed. Carries no response body.
#[derive(Debug, thiserror::Error)]
pub enum GetError {
    #[error("cannot connect to {address}: {source}")]
    Connect { address: String, source: io::Error },
    #[error("{address}: {why}")]
    Http { address: String, why: String },
    #[error("{address}: no answer within {timeout:?}")]
    Timeout { address: String, timeout: Duration },
}

/// Most bytes [`get`] reads: far above any real scrape.
const MAX_RESPONSE_BYTES: usize = 64 << 20;

/// A blocking `GET path` against the endpoint at `address`, all of it
/// within `timeout`.
pub fn get(address: &Address, path: &str, timeout: Duration) -> Result<Answer, GetError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|source| GetError::Connect {
            address: address.to_string(),
            source,
        })?;
    runtime.block_on(async {
        tokio::time::timeout(timeout, get_async(address, path))
            .await
            .unwrap_or_else(|_| {
                Err(GetError::Timeout {
                    address: address.to_string(),
                    timeout,
                })
            })
    })
}

async fn get_async(address: &Address, path: &str) -> Result<Answer, GetError> {
    let connect = |source| GetError::Connect {
        address: address.to_string(),
        source,
    };
    match address {
        Address::Tcp(a) => {
            let s = tokio::net::TcpStream::connect(a.as_str())
                .await
                .map_err(connect)?;
            exchange(s, address, path).await
        }
        Address::Unix(p) => {
            let s = tokio::net::UnixStream::connect(p).await.map_err(connect)?;
            exchange(s, address, path).await
        }
    }
}

async fn exchange<S>(stream: S, address: &Address, path: &str) -> Result<Answer, GetError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let http = |e: &dyn std::fmt::Display| GetError::Http {
        address: address.to_string(),
        why: e.to_string(),
    };
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| http(&e))?;
    let driver = tokio::spawn(conn);
    let request = Request::get(path)
        .header(hyper::header::HOST, "weir")
        .header(hyper::header::USER_AGENT, "weir-status")
        .body(Empty::<Bytes>::new())
        .map_err(|e| http(&e))?;
    let response = sender.send_request(request).await.map_err(|e| http(&e))?;
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = Limited::new(response.into_body(), MAX_RESPONSE_BYTES)
        .collect()
        .await
        .map_err(|e| http(&e))?
        .to_bytes();
    driver.abort();
    Ok(Answer {
        status,
        content_type,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn exchange_raw(request: &[u8], health: &Health) -> String {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let (mut client, server) = tokio::io::duplex(1 << 20);
        let served = Arc::new(Served {
            metrics: Metrics::new(),
            health: health.clone(),
        });
        let task = tokio::spawn(async move {
            let slot = Slots::new(1).acquire().await.unwrap();
            connection(server, served, slot).await
        });
        client.write_all(request).await.unwrap();
        let mut out = Vec::new();
        client.read_to_end(&mut out).await.unwrap();
        task.await.unwrap();
        String::from_utf8(out).unwrap()
    }

    /// A client that starts a request and never finishes it (slowloris) is
    /// cut off after IO_TIMEOUT, not served forever.
    #[tokio::test(start_paused = true)]
    async fn a_request_head_that_never_ends_is_cut_off() {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let (mut client, server) = tokio::io::duplex(1 << 16);
        let served = Arc::new(Served {
            metrics: Metrics::new(),
            health: Health::new(CancellationToken::new()),
        });
        let slot = Slots::new(1).acquire().await.unwrap();
        let task = tokio::spawn(connection(server, served, slot));
        client
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: a\r\n")
            .await
            .unwrap();
        let start = tokio::time::Instant::now();
        let mut out = Vec::new();
        let _ = client.read_to_end(&mut out).await;
        let waited = start.elapsed();
        assert!(
            waited >= IO_TIMEOUT && waited < 2 * IO_TIMEOUT,
            "closed after {waited:?}"
        );
        assert!(!String::from_utf8_lossy(&out).contains(" 200 "));
        task.await.unwrap();
    }

    #[tokio::test]
    async fn answers_methods_paths_and_oversized_heads() {
        let health = Health::new(CancellationToken::new());
        health.beat();
        let r = exchange_raw(b"GET /health HTTP/1.1\r\nHost: a\r\n\r\n", &health).await;
        assert!(r.starts_with("HTTP/1.1 200 OK\r\n"), "{r}");
        assert!(
            r.to_ascii_lowercase().contains("connection: close\r\n"),
            "{r}"
        );
        let r = exchange_raw(b"GET /ready HTTP/1.0\r\n\r\n", &health).await;
        assert!(
            r.starts_with("HTTP/1.0 503 ") || r.starts_with("HTTP/1.1 503 "),
            "{r}"
        );
        let r = exchange_raw(b"POST /metrics HTTP/1.1\r\nHost: a\r\n\r\n", &health).await;
        assert!(
            r.starts_with("HTTP/1.1 405 ") && r.to_ascii_lowercase().contains("allow: get"),
            "{r}"
        );
        let r = exchange_raw(b"GET /nope HTTP/1.1\r\nHost: a\r\n\r\n", &health).await;
        assert!(r.starts_with("HTTP/1.1 404 "), "{r}");
        let r = exchange_raw(b"HEAD /metrics HTTP/1.1\r\nHost: a\r\n\r\n", &health).await;
        assert!(
            r.starts_with("HTTP/1.1 200 ") && r.ends_with("\r\n\r\n"),
            "{r}"
        );
        let r = exchange_raw(b"GET /status HTTP/1.1\r\nHost: a\r\n\r\n", &health).await;
        let json = r.split("\r\n\r\n").nth(1).unwrap();
        let s: super::super::Snapshot = serde_json::from_str(json).unwrap();
        assert_eq!(
            s.not_ready.as_deref(),
            Some("starting: spool or sources not ready yet")
        );
        let mut big = b"GET /metrics HTTP/1.1\r\n".to_vec();
        big.extend(std::iter::repeat_n(b'x', MAX_REQUEST_BYTES + 10));
        let r = exchange_raw(&big, &health).await;
        assert!(r.starts_with("HTTP/1.1 431 "), "{r}");
        let r = exchange_raw(b"garbage\r\n\r\n", &health).await;
        assert!(r.starts_with("HTTP/1.1 400 "), "{r}");
    }
}
