//! Where something listens: `unix:///path` or `tcp://host:port` (a bare
//! `host:port` is TCP too: `metrics.listen` has always accepted it). One
//! parser and one error style for the forward source, the metrics endpoint
//! and matching the sockets systemd passes.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;

/// A listening address, as configured.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub enum Endpoint {
    /// `host:port`, as written (the host may be a name such as `localhost`).
    Tcp(String),
    /// An absolute path.
    Unix(PathBuf),
}

/// Why a value is not an endpoint. Says what a valid one looks like.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum EndpointError {
    #[error("a unix socket needs an absolute path, e.g. unix:///run/weir/forward.sock")]
    RelativeUnixPath,
    #[error("must be host:port (or tcp://host:port), e.g. 127.0.0.1:9880, or unix:///absolute/path.sock")]
    NoPort,
}

impl Endpoint {
    /// Parses `unix:///path`, `tcp://host:port` or `host:port`.
    pub fn parse(s: &str) -> Result<Endpoint, EndpointError> {
        if let Some(path) = s.strip_prefix("unix://") {
            if !path.starts_with('/') {
                return Err(EndpointError::RelativeUnixPath);
            }
            return Ok(Endpoint::Unix(PathBuf::from(path)));
        }
        let hostport = s.strip_prefix("tcp://").unwrap_or(s);
        match host_port(hostport) {
            Some(_) => Ok(Endpoint::Tcp(hostport.to_owned())),
            None => Err(EndpointError::NoPort),
        }
    }

    /// Whether a socket bound to `local` is this endpoint: the same path, or
    /// one of the addresses the host resolves to with the same port (so
    /// `tcp://localhost:24224` is the socket bound to 127.0.0.1:24224).
    pub fn is_bound_at(&self, local: &Bound) -> bool {
        match (self, local) {
            (Endpoint::Unix(want), Bound::Unix(path)) => want == path,
            (Endpoint::Tcp(want), Bound::Tcp(addr)) => want
                .to_socket_addrs()
                .map(|mut all| all.any(|a| a == *addr))
                .unwrap_or(false),
            _ => false,
        }
    }
}

/// `host:port` split at its last colon, the brackets of an IPv6 host
/// removed (`[::1]:12201` is `::1` and 12201): the one reading of a host and
/// port, for listen addresses here and for the GELF sink's `udp://`,
/// `tcp://` and `tls://` addresses. `None` when the port is not a number up
/// to 65535 or the host is empty or holds `/`, `[` or `]`.
pub fn host_port(s: &str) -> Option<(&str, u16)> {
    let (host, port) = s.rsplit_once(':')?;
    let port = port.parse().ok()?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    (!host.is_empty() && !host.contains(['/', '[', ']'])).then_some((host, port))
}

/// Where a socket is actually bound.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bound {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            // Bare, as `metrics.listen` is usually written (error messages
            // quote it back).
            Endpoint::Tcp(a) => write!(f, "{a}"),
            Endpoint::Unix(p) => write!(f, "unix://{}", p.display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_form_parses_with_one_error_style() {
        assert_eq!(
            Endpoint::parse("127.0.0.1:9880"),
            Ok(Endpoint::Tcp("127.0.0.1:9880".into()))
        );
        assert_eq!(
            Endpoint::parse("tcp://[::1]:24224"),
            Ok(Endpoint::Tcp("[::1]:24224".into()))
        );
        assert_eq!(
            Endpoint::parse("unix:///run/weir/forward.sock"),
            Ok(Endpoint::Unix("/run/weir/forward.sock".into()))
        );
        assert_eq!(
            Endpoint::parse("unix://rel.sock"),
            Err(EndpointError::RelativeUnixPath)
        );
        for bad in ["9880", "host:http", "udp://x:1", "http://x", ":9880", ""] {
            assert_eq!(Endpoint::parse(bad), Err(EndpointError::NoPort), "{bad}");
        }
    }

    #[test]
    fn host_and_port_are_read_once_for_every_address() {
        assert_eq!(host_port("[::1]:12201"), Some(("::1", 12201)));
        assert_eq!(
            host_port("graylog.example.org:0"),
            Some(("graylog.example.org", 0))
        );
        for bad in [
            "graylog", ":1", "g:99999", "g:http", "a/b:1", "[::1:1", "::1]:1",
        ] {
            assert_eq!(host_port(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_host_name_matches_the_address_it_resolves_to() {
        let at = |s: &str| Bound::Tcp(s.parse().unwrap());
        let localhost = Endpoint::parse("tcp://localhost:24224").unwrap();
        assert!(localhost.is_bound_at(&at("127.0.0.1:24224")));
        assert!(!localhost.is_bound_at(&at("127.0.0.1:24225")));
        assert!(Endpoint::parse("0.0.0.0:1")
            .unwrap()
            .is_bound_at(&at("0.0.0.0:1")));
        let unix = Endpoint::parse("unix:///run/x.sock").unwrap();
        assert!(unix.is_bound_at(&Bound::Unix("/run/x.sock".into())));
        assert!(!unix.is_bound_at(&at("127.0.0.1:24224")));
    }
}
