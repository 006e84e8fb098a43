//! The one way weir builds an HTTP client for a sink (Loki, GELF HTTP):
//! rustls with the system's roots plus an optional CA file, connect and
//! request timeouts, weir's user agent, and no redirects (a redirected POST
//! becomes a GET and loses its body; the sink reports the 3xx instead).

use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::header::HeaderMap;

/// How long an idle kept-alive connection is kept for the next request.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// What differs between the sinks' clients.
pub struct Options<'a> {
    /// PEM file of CA certificates trusted in addition to the system's roots.
    pub ca_file: Option<&'a Path>,
    pub connect_timeout: Duration,
    /// The whole request, response included.
    pub request_timeout: Duration,
    /// Sent with every request (tenant, bearer token).
    pub headers: HeaderMap,
}

/// Why the client could not be built. Says what to fix; carries no payload.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot read ca_file {path}: {source}; fix the path or its permissions")]
    CaRead {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("ca_file {path} holds no usable PEM certificate; give a PEM file of CA certificates")]
    CaParse { path: PathBuf },
    #[error("cannot build the HTTP client: {0}")]
    Build(#[source] reqwest::Error),
}

/// Builds the client. Reads `ca_file` now, so a bad file fails here, once.
pub fn build(options: Options<'_>) -> Result<reqwest::Client, ClientError> {
    let mut builder = reqwest::Client::builder()
        .use_rustls_tls()
        .user_agent(concat!("weir/", env!("CARGO_PKG_VERSION")))
        .default_headers(options.headers)
        .connect_timeout(options.connect_timeout)
        .timeout(options.request_timeout)
        .pool_idle_timeout(POOL_IDLE_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none());
    if let Some(path) = options.ca_file {
        let pem = std::fs::read(path).map_err(|source| ClientError::CaRead {
            path: path.to_owned(),
            source,
        })?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .ok()
            .filter(|c| !c.is_empty())
            .ok_or_else(|| ClientError::CaParse {
                path: path.to_owned(),
            })?;
        for cert in certs {
            builder = builder.add_root_certificate(cert);
        }
    }
    builder.build().map_err(ClientError::Build)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(ca_file: Option<&Path>) -> Options<'_> {
        Options {
            ca_file,
            connect_timeout: Duration::from_secs(1),
            request_timeout: Duration::from_secs(1),
            headers: HeaderMap::new(),
        }
    }

    /// A 3xx comes back to the sink as it is: following it would turn the
    /// POST into a GET without the body.
    #[tokio::test]
    async fn redirects_are_not_followed() {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/push", listener.local_addr().unwrap());
        let server = tokio::spawn(async move {
            let mut requests = 0;
            while let Ok(Ok((mut s, _))) =
                tokio::time::timeout(Duration::from_millis(500), listener.accept()).await
            {
                requests += 1;
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                let _ = s
                    .write_all(
                        b"HTTP/1.1 302 Found\r\nLocation: /elsewhere\r\nContent-Length: 0\r\n\r\n",
                    )
                    .await;
            }
            requests
        });
        let client = build(options(None)).unwrap();
        let r = client.post(&url).body("x").send().await.unwrap();
        assert_eq!(r.status().as_u16(), 302);
        assert_eq!(server.await.unwrap(), 1, "the redirect was followed");
    }

    #[test]
    fn a_missing_or_empty_ca_file_says_which_and_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.pem");
        let e = build(options(Some(&missing))).unwrap_err().to_string();
        assert!(
            e.contains("cannot read ca_file") && e.contains("nope.pem"),
            "{e}"
        );
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let e = build(options(Some(&empty))).unwrap_err().to_string();
        assert!(e.contains("holds no usable PEM certificate"), "{e}");
        assert!(build(options(None)).is_ok());
    }
}
