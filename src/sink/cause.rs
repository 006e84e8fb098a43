//! What exactly failed when a sink could not reach its server: the one
//! classification of connection errors used by every sink (reqwest's for
//! Loki and GELF over HTTP, `std::io`'s for GELF over TCP, TLS and UDP).
//!
//! The metric label (`weir_sink_errors_total{reason}`) stays a coarse, stable
//! word chosen by each sink (`connect`, `tls`, `timeout`...: dashboards use
//! them); a [`Cause`] is the specific text for the log line's detail, so an
//! administrator reads `dns: no such host loki.example` or `tls: certificate
//! verify failed: UnknownIssuer` rather than a bare `connect`.

use std::error::Error as StdError;
use std::fmt;
use std::io;
use std::time::Duration;

use tokio_rustls::rustls;

/// The specific cause of a failed connection or request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cause {
    /// The name did not resolve; the text says how (no such host, DNS down).
    Dns(String),
    /// Nothing listens on that port (or a firewall rejects).
    Refused,
    /// The peer closed or reset the connection.
    Reset,
    /// The TLS handshake failed; the text is the verify reason.
    Tls(String),
    /// No answer within this long.
    Timeout(Duration),
    /// Anything else: the innermost error's text (OS or library, never payload).
    Other(String),
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Cause::Dns(what) => write!(f, "dns: {what}"),
            Cause::Refused => f.write_str("refused"),
            Cause::Reset => f.write_str("connection reset by the server"),
            Cause::Tls(why) => write!(f, "tls: {why}"),
            Cause::Timeout(after) => write!(f, "timeout after {}", seconds(*after)),
            Cause::Other(text) => f.write_str(text),
        }
    }
}

impl Cause {
    /// Classifies an error from a connection attempt to `host` by walking
    /// its whole source chain (including what an `io::Error` wraps, which
    /// `source()` skips). `timeout` is the limit that applied, if it fired.
    pub fn of(error: &(dyn StdError + 'static), host: &str, timeout: Duration) -> Cause {
        let mut texts = Vec::new();
        let mut next: Option<&(dyn StdError + 'static)> = Some(error);
        while let Some(e) = next {
            if let Some(tls) = e.downcast_ref::<rustls::Error>() {
                return Cause::Tls(describe_tls(tls));
            }
            if let Some(io) = e.downcast_ref::<io::Error>() {
                match io.kind() {
                    io::ErrorKind::ConnectionRefused => return Cause::Refused,
                    io::ErrorKind::ConnectionReset
                    | io::ErrorKind::ConnectionAborted
                    | io::ErrorKind::BrokenPipe
                    | io::ErrorKind::UnexpectedEof => return Cause::Reset,
                    io::ErrorKind::TimedOut => return Cause::Timeout(timeout),
                    _ => {}
                }
            }
            let text = e.to_string();
            // reqwest's own timeout type has no io kind; its text is fixed.
            if text == "operation timed out" {
                return Cause::Timeout(timeout);
            }
            texts.push(text);
            next = inner(e);
        }
        let whole = texts.join(": ");
        if let Some(dns) = dns_text(&whole, host) {
            return Cause::Dns(dns);
        }
        Cause::Other(texts.pop().unwrap_or_default())
    }

    /// Classifies a reqwest error: its connect timeout applies when the
    /// connection was never made, the request timeout otherwise.
    pub fn of_reqwest(
        error: &reqwest::Error,
        host: &str,
        connect_timeout: Duration,
        request_timeout: Duration,
    ) -> Cause {
        let timeout = if error.is_connect() {
            connect_timeout
        } else {
            request_timeout
        };
        if error.is_timeout() {
            return Cause::Timeout(timeout);
        }
        Cause::of(error, host, timeout)
    }
}

/// The next error down the chain. An `io::Error` wrapping another error
/// returns that error's *source* from `source()`, skipping the error itself
/// (often the rustls error that says why): step into it instead.
fn inner<'a>(e: &'a (dyn StdError + 'static)) -> Option<&'a (dyn StdError + 'static)> {
    if let Some(wrapped) = e.downcast_ref::<io::Error>().and_then(io::Error::get_ref) {
        return Some(wrapped);
    }
    e.source()
}

/// The resolver's verdict, from getaddrinfo's text (the same through
/// tokio's `lookup_host` and hyper's resolver); `None` if not a DNS error.
fn dns_text(text: &str, host: &str) -> Option<String> {
    let lower = text.to_ascii_lowercase();
    if !(lower.contains("dns error") || lower.contains("failed to lookup address")) {
        return None;
    }
    if lower.contains("name or service not known")
        || lower.contains("no address associated")
        || lower.contains("nodename nor servname")
    {
        return Some(format!("no such host {host}"));
    }
    if lower.contains("temporary failure") {
        return Some(format!(
            "cannot resolve {host} now (temporary failure: is a DNS server reachable?)"
        ));
    }
    let detail = text.rsplit_once(": ").map_or(text, |(_, d)| d);
    Some(format!("cannot resolve {host}: {detail}"))
}

/// The TLS failure as an administrator searches for it: certificate
/// problems name rustls's verify reason (`UnknownIssuer`, `Expired`,
/// `NotValidForName`...).
fn describe_tls(error: &rustls::Error) -> String {
    match error {
        rustls::Error::InvalidCertificate(why) => format!("certificate verify failed: {why:?}"),
        rustls::Error::AlertReceived(alert) => format!("the server sent alert {alert:?}"),
        other => other.to_string(),
    }
}

/// `10s`, `1.5s`, `250ms`: the way config durations are written.
fn seconds(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else if d.as_secs() == 0 {
        format!("{}ms", d.as_millis())
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Duration = Duration::from_secs(10);

    #[test]
    fn io_kinds_are_classified() {
        let refused = io::Error::from(io::ErrorKind::ConnectionRefused);
        assert_eq!(Cause::of(&refused, "h", T), Cause::Refused);
        let reset = io::Error::from(io::ErrorKind::ConnectionReset);
        assert_eq!(Cause::of(&reset, "h", T), Cause::Reset);
        let timed = io::Error::from(io::ErrorKind::TimedOut);
        assert_eq!(Cause::of(&timed, "h", T).to_string(), "timeout after 10s");
    }

    #[test]
    fn rustls_inside_io_names_the_verify_reason() {
        let e = io::Error::new(
            io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer),
        );
        assert_eq!(
            Cause::of(&e, "h", T).to_string(),
            "tls: certificate verify failed: UnknownIssuer"
        );
    }

    #[test]
    fn getaddrinfo_texts_become_dns_causes() {
        let e = io::Error::other("failed to lookup address information: Name or service not known");
        assert_eq!(
            Cause::of(&e, "loki.example", T).to_string(),
            "dns: no such host loki.example"
        );
        let e = io::Error::other(
            "failed to lookup address information: Temporary failure in name resolution",
        );
        assert!(Cause::of(&e, "x", T)
            .to_string()
            .starts_with("dns: cannot resolve x now"));
    }

    #[test]
    fn durations_read_like_config() {
        assert_eq!(seconds(Duration::from_secs(30)), "30s");
        assert_eq!(seconds(Duration::from_millis(250)), "250ms");
        assert_eq!(seconds(Duration::from_millis(1500)), "1.5s");
    }
}
