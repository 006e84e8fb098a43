//! The HTTP side: the sinks' one client builder ([`http_client`]), tenant
//! and auth headers, and one call that turns a push body into an
//! [`Outcome`].

use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION, CONTENT_ENCODING, CONTENT_TYPE};

use super::encode::Body;
use super::response::{self, Outcome, BODY_PEEK};
use super::{Auth, Config};
use crate::sink::cause::Cause;
use crate::sink::http_client;

/// No HTTP answer at all: the metric reason (a fixed word) and what exactly
/// failed (for the log).
#[derive(Debug)]
pub struct Unreachable {
    pub reason: &'static str,
    pub cause: Cause,
}

/// Why the client could not be built. Says what to fix; carries no payload.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("tenant_id or credentials contain characters not allowed in an HTTP header")]
    BadHeader,
    #[error(transparent)]
    Client(#[from] http_client::ClientError),
}

/// A configured Loki endpoint.
#[derive(Clone)]
pub struct Service {
    client: reqwest::Client,
    url: reqwest::Url,
    auth: Auth,
    connect_timeout: std::time::Duration,
    request_timeout: std::time::Duration,
}

impl Service {
    pub fn new(config: &Config) -> Result<Service, ServiceError> {
        let url = reqwest::Url::parse(&config.url).expect("validated in config");
        let mut headers = HeaderMap::new();
        if let Some(tenant) = &config.tenant_id {
            headers.insert(
                "X-Scope-OrgID",
                HeaderValue::from_str(tenant).map_err(|_| ServiceError::BadHeader)?,
            );
        }
        if let Auth::Bearer { token } = &config.auth {
            let mut value = HeaderValue::from_str(&format!("Bearer {}", token.0))
                .map_err(|_| ServiceError::BadHeader)?;
            value.set_sensitive(true);
            headers.insert(AUTHORIZATION, value);
        }
        let client = http_client::build(http_client::Options {
            ca_file: config.ca_file.as_deref(),
            connect_timeout: config.connect_timeout.0,
            request_timeout: config.request_timeout.0,
            headers,
        })?;
        Ok(Service {
            client,
            url,
            auth: config.auth.clone(),
            connect_timeout: config.connect_timeout.0,
            request_timeout: config.request_timeout.0,
        })
    }

    /// `host:port` of the endpoint, for log lines (never the path or
    /// credentials).
    pub fn peer(&self) -> String {
        let host = self.url.host_str().unwrap_or("?");
        match self.url.port_or_known_default() {
            Some(port) => format!("{host}:{port}"),
            None => host.to_owned(),
        }
    }

    /// Sends one push and says what its response means, or why there was none.
    pub async fn push(&self, body: &Body) -> Result<Outcome, Unreachable> {
        let mut request = self
            .client
            .post(self.url.clone())
            .header(CONTENT_TYPE, body.content_type)
            .body(body.bytes.clone());
        if let Auth::Basic { username, password } = &self.auth {
            request = request.basic_auth(username, Some(&password.0));
        }
        if let Some(encoding) = body.content_encoding {
            request = request.header(CONTENT_ENCODING, encoding);
        }
        let mut response = match request.send().await {
            Ok(r) => r,
            Err(e) => {
                let host = self.url.host_str().unwrap_or("?");
                return Err(Unreachable {
                    reason: response::network_reason(&e),
                    cause: Cause::of_reqwest(&e, host, self.connect_timeout, self.request_timeout),
                });
            }
        };
        let status = response.status().as_u16();
        if response.status().is_success() {
            return Ok(Outcome::Accepted);
        }
        // Read only the start of the body: enough for a classifier, never
        // enough to matter if a proxy answers with a whole page.
        let mut peek = Vec::new();
        while peek.len() < BODY_PEEK {
            match response.chunk().await {
                Ok(Some(chunk)) => peek.extend_from_slice(&chunk),
                Ok(None) | Err(_) => break,
            }
        }
        Ok(response::classify(status, &peek))
    }
}
