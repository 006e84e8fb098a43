//! The `[sinks.NAME]` section of `type = "gelf"`: keys, defaults, checks,
//! and the `address` parser (the scheme picks the transport).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{compress, tcp};
use crate::problems::Problems;
use crate::secret::Secret;
use crate::units::{ByteSize, HumanDuration};

/// Default `chunk_size`: fits a 1500-byte MTU path with room for IP/UDP
/// headers and tunnels (the value of Docker's gelf driver and go-gelf).
pub const DEFAULT_CHUNK_SIZE: u64 = 1420;
/// Default `max_message_bytes`: Graylog's GELF TCP input default (2 MiB).
pub const DEFAULT_MAX_MESSAGE_BYTES: u64 = 2 << 20;

/// Default `max_rate` of UDP: half of what Graylog's own Go reader (go-gelf,
/// the kernel's default 208 KiB socket buffer) decoded without loss on
/// loopback while sharing two loaded cores with weir: at 4,000 messages/s
/// it kept up, at 5,000 it lost 2%, unpaced 68% (the test
/// `gelf::udp_burst_at_the_default_rate_is_decoded_by_go_gelf`).
pub const DEFAULT_MAX_RATE: Rate = Rate {
    messages: 2_000,
    bytes: ByteSize(2 << 20),
};

/// `[sinks.NAME]` with `type = "gelf"`, as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// Where the Graylog GELF input listens: `udp://host:port`,
    /// `tcp://host:port`, `tls://host:port` (Graylog's default port is
    /// 12201), or the URL of a GELF HTTP input, `http://host:port/gelf` or
    /// `https://host:port/gelf` (the only transport whose server
    /// acknowledges what it received). The name is resolved again on every
    /// reconnect.
    pub address: String,
    /// UDP and HTTP: `gzip` (default), `zlib` (HTTP `deflate`) or `none`.
    /// GELF over TCP is never compressed.
    pub compression: Option<Compression>,
    /// UDP only: messages shorter than this go out uncompressed (GELF
    /// inputs detect compression per datagram). Default `1KiB`: compressing
    /// a short line costs more CPU than it saves bytes. `0` compresses every
    /// message.
    pub compress_min_bytes: Option<ByteSize>,
    /// UDP only: the largest datagram sent, 12-byte chunk header included.
    /// Default `1420` (safe on WAN paths); up to `8192` on a LAN with a
    /// 9000-byte MTU. Between 256 and 65507 bytes.
    pub chunk_size: Option<ByteSize>,
    /// TCP, TLS and HTTP: the largest message (JSON bytes; a TCP frame is
    /// this plus its `\0`). Default `2MiB`, the default `max_message_size`
    /// of Graylog's GELF TCP input (a larger frame is refused with
    /// `TooLongFrameException`); lower it to what your input allows. A
    /// larger message is shrunk like an oversized UDP one, and counted.
    pub max_message_bytes: Option<ByteSize>,
    /// HTTP only: send many messages per request, newline-separated
    /// (Graylog's GELF HTTP input with "bulk receiving" enabled). Default
    /// `false`: one message per request, on a kept-alive connection.
    pub bulk: Option<bool>,
    /// HTTP only: longest wait for one request, response included, before
    /// it counts as failed and is retried. Default `30s`.
    pub request_timeout: Option<HumanDuration>,
    /// HTTP only: basic auth user name (e.g. for a reverse proxy in front
    /// of Graylog); needs `password`.
    pub username: Option<String>,
    /// HTTP only: basic auth password.
    pub password: Option<Secret>,
    /// HTTP only: bearer token (`Authorization: Bearer ...`); excludes
    /// basic auth.
    pub bearer_token: Option<Secret>,
    /// UDP only: the most sent per second, as `{ messages = N, bytes = SIZE }`
    /// (either may be left out to keep its default; `0` turns that limit
    /// off). Default `{ messages = 2000, bytes = "2MiB" }`. UDP has no
    /// acknowledgement: a receiver whose socket buffer overflows loses
    /// messages silently, so weir paces its sends and the spool holds what
    /// waits. Raise it for a Graylog that keeps up (larger
    /// `recv_buffer_size`), never above what it can decode.
    pub max_rate: Option<RawRate>,
    /// `level` of Docker lines written to stdout. Default 6 (info).
    pub stdout_level: Option<u8>,
    /// `level` of Docker lines written to stderr. Default 3 (error).
    pub stderr_level: Option<u8>,
    /// TLS only: PEM file of the CA certificate(s) to trust instead of the
    /// system's roots (e.g. a private CA that signed Graylog's certificate).
    /// HTTPS: trusted in addition to the system's roots.
    pub ca_file: Option<PathBuf>,
    /// TLS only: the name expected in the server's certificate. Default: the
    /// host of `address` (set it when `address` is an IP address).
    pub server_name: Option<String>,
}

/// `max_rate` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRate {
    pub messages: Option<u64>,
    pub bytes: Option<ByteSize>,
}

/// A send rate: messages and bytes per second, 0 meaning no limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Rate {
    pub messages: u64,
    pub bytes: ByteSize,
}

/// Compression of UDP messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Compression {
    Gzip,
    Zlib,
    None,
}

/// The transport named by the address scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Udp,
    Tcp,
    Tls,
    /// `http://` or `https://`: Graylog's GELF HTTP input.
    Http,
}

/// A parsed `address`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub protocol: Protocol,
    /// Host name or IP address (without IPv6 brackets).
    pub host: String,
    pub port: u16,
}

/// How the HTTP transport authenticates.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Auth {
    None,
    Basic { username: String, password: Secret },
    Bearer { token: Secret },
}

/// Validated gelf sink config.
#[derive(Debug, Clone, Serialize)]
pub struct Config {
    pub address: String,
    #[serde(skip)]
    pub endpoint: Endpoint,
    pub compression: Compression,
    pub compress_min_bytes: ByteSize,
    pub chunk_size: ByteSize,
    pub max_message_bytes: ByteSize,
    pub max_rate: Rate,
    pub bulk: bool,
    pub auth: Auth,
    pub request_timeout: HumanDuration,
    pub stdout_level: u8,
    pub stderr_level: u8,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_name: Option<String>,
}

impl RawConfig {
    pub fn validate(self, key: &str, problems: &mut Problems) -> Config {
        let endpoint = parse_address(&self.address).unwrap_or_else(|why| {
            problems.add(format!("{key}.address"), why);
            Endpoint {
                protocol: Protocol::Udp,
                host: String::new(),
                port: 0,
            }
        });
        let udp = endpoint.protocol == Protocol::Udp;
        let tls = endpoint.protocol == Protocol::Tls;
        let http = endpoint.protocol == Protocol::Http;
        let https = http && self.address.starts_with("https://");
        let mut only = |set: bool, field: &str, scheme: &str| {
            if set {
                problems.add(
                    format!("{key}.{field}"),
                    format!("applies only to {scheme} addresses: remove it"),
                );
            }
        };
        only(
            !udp && !http && self.compression.is_some_and(|c| c != Compression::None),
            "compression",
            "udp:// and http(s)://",
        );
        only(!udp && self.chunk_size.is_some(), "chunk_size", "udp://");
        only(
            !udp && self.compress_min_bytes.is_some(),
            "compress_min_bytes",
            "udp://",
        );
        only(
            udp && self.max_message_bytes.is_some(),
            "max_message_bytes",
            "tcp://, tls:// and http(s)://",
        );
        only(!http && self.bulk.is_some(), "bulk", "http(s)://");
        only(
            !http && self.request_timeout.is_some(),
            "request_timeout",
            "http(s)://",
        );

        only(!http && self.username.is_some(), "username", "http(s)://");
        only(!http && self.password.is_some(), "password", "http(s)://");
        only(
            !http && self.bearer_token.is_some(),
            "bearer_token",
            "http(s)://",
        );
        only(!udp && self.max_rate.is_some(), "max_rate", "udp://");
        only(
            !tls && !https && self.ca_file.is_some(),
            "ca_file",
            "tls:// and https://",
        );
        only(!tls && self.server_name.is_some(), "server_name", "tls://");
        let request_timeout = self
            .request_timeout
            .unwrap_or(HumanDuration(std::time::Duration::from_secs(30)));
        if request_timeout.0.is_zero() {
            problems.add(format!("{key}.request_timeout"), "must be more than 0ms");
        }
        let chunk_size = self.chunk_size.unwrap_or(ByteSize(DEFAULT_CHUNK_SIZE));
        if !(256..=65_507).contains(&chunk_size.0) {
            problems.add(
                format!("{key}.chunk_size"),
                "must be between 256 and 65507 bytes; 1420 suits WAN paths, 8192 a LAN with jumbo frames",
            );
        }
        let max_message_bytes = self
            .max_message_bytes
            .unwrap_or(ByteSize(DEFAULT_MAX_MESSAGE_BYTES));
        if max_message_bytes.0 < 4096 {
            problems.add(format!("{key}.max_message_bytes"), "must be at least 4KiB");
        }
        let max_rate = self.max_rate.map_or(DEFAULT_MAX_RATE, |r| Rate {
            messages: r.messages.unwrap_or(DEFAULT_MAX_RATE.messages),
            bytes: r.bytes.unwrap_or(DEFAULT_MAX_RATE.bytes),
        });
        if max_rate.bytes.0 != 0 && max_rate.bytes.0 < chunk_size.0 {
            problems.add(
                format!("{key}.max_rate"),
                "`bytes` must be at least chunk_size per second (or 0 for no limit)",
            );
        }
        let mut level = |v: Option<u8>, field: &str, default: u8| match v {
            Some(l) if l > 7 => {
                problems.add(
                    format!("{key}.{field}"),
                    "must be a syslog severity from 0 (emergency) to 7 (debug)",
                );
                default
            }
            Some(l) => l,
            None => default,
        };
        let stdout_level = level(self.stdout_level, "stdout_level", 6);
        let stderr_level = level(self.stderr_level, "stderr_level", 3);
        if tls {
            let name = self.server_name.as_deref().unwrap_or(&endpoint.host);
            if let Some(ca) = &self.ca_file {
                if let Err(e) = tcp::tls_connector(Some(ca), name) {
                    let field = match e {
                        tcp::TlsSetupError::ServerName { .. } => "server_name",
                        _ => "ca_file",
                    };
                    problems.add(format!("{key}.{field}"), e.to_string());
                }
            }
        }
        let auth = match (self.username, self.password, self.bearer_token) {
            (None, None, None) => Auth::None,
            (Some(username), Some(password), None) => Auth::Basic { username, password },
            (None, None, Some(token)) => Auth::Bearer { token },
            (_, _, Some(_)) => {
                problems.add(
                    format!("{key}.bearer_token"),
                    "use either a bearer token or username/password, not both",
                );
                Auth::None
            }
            (Some(_), None, None) => {
                problems.add(format!("{key}.password"), "basic auth needs a password too");
                Auth::None
            }
            (None, Some(_), None) => {
                problems.add(format!("{key}.username"), "basic auth needs a username too");
                Auth::None
            }
        };
        if let (true, Some(path)) = (https, &self.ca_file) {
            if let Err(e) = std::fs::metadata(path) {
                problems.add(
                    format!("{key}.ca_file"),
                    format!("cannot read {}: {e}", path.display()),
                );
            }
        }
        Config {
            address: self.address,
            endpoint,
            compression: self.compression.unwrap_or(Compression::Gzip),
            compress_min_bytes: self
                .compress_min_bytes
                .unwrap_or(ByteSize(compress::DEFAULT_MIN_BYTES)),
            chunk_size,
            max_message_bytes,
            max_rate,
            bulk: self.bulk.unwrap_or(false),
            auth,
            request_timeout,
            stdout_level,
            stderr_level,
            ca_file: self.ca_file,
            server_name: self.server_name,
        }
    }
}

/// Parses `udp://host:port`, `tcp://host:port`, `tls://host:port` (IPv6 as
/// `[::1]`), and the URLs `http://host:port/path`, `https://...`.
pub fn parse_address(address: &str) -> Result<Endpoint, String> {
    let usage = "must be udp://host:port, tcp://host:port, tls://host:port or the URL of a GELF HTTP input, http(s)://host:port/gelf (Graylog's GELF inputs listen on 12201 by default)";
    let (scheme, rest) = address.split_once("://").ok_or(usage)?;
    if matches!(scheme, "http" | "https") {
        return parse_url(address, usage);
    }
    let protocol = match scheme {
        "udp" => Protocol::Udp,
        "tcp" => Protocol::Tcp,
        "tls" => Protocol::Tls,
        _ => return Err(format!("unknown scheme `{scheme}`: {usage}")),
    };
    let (host, port) = crate::net::host_port(rest)
        .filter(|&(_, port)| port != 0)
        .ok_or_else(|| format!("no valid host and port (1 to 65535): {usage}"))?;
    Ok(Endpoint {
        protocol,
        host: host.to_owned(),
        port,
    })
}

fn parse_url(address: &str, usage: &str) -> Result<Endpoint, String> {
    let url = reqwest::Url::parse(address).map_err(|e| format!("not a URL ({e}): {usage}"))?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err(
            "credentials in the URL would show in logs and check-config: use username/password"
                .into(),
        );
    }
    if url.path() == "/" {
        return Err(format!(
            "give the input's path too, e.g. \"{}gelf\" (Graylog's GELF HTTP input answers POST /gelf)",
            url.as_str()
        ));
    }
    let host = url
        .host_str()
        .filter(|h| !h.is_empty())
        .ok_or_else(|| format!("no valid host: {usage}"))?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    Ok(Endpoint {
        protocol: Protocol::Http,
        host: host.to_owned(),
        port: url.port_or_known_default().unwrap_or(80),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn validate(toml_text: &str) -> (Config, Vec<String>) {
        let raw: RawConfig = toml::from_str(toml_text).unwrap();
        let mut problems = Problems::default();
        let c = raw.validate("sinks.g", &mut problems);
        let keys = format!("{problems:?}");
        let keys = keys
            .split("key: \"")
            .skip(1)
            .map(|s| s.split('"').next().unwrap().to_owned())
            .collect();
        (c, keys)
    }

    #[test]
    fn defaults_for_udp() {
        let (c, problems) = validate("address = \"udp://graylog.example.org:12201\"");
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(
            c.endpoint,
            Endpoint {
                protocol: Protocol::Udp,
                host: "graylog.example.org".into(),
                port: 12201
            }
        );
        assert_eq!(c.compression, Compression::Gzip);
        assert_eq!(c.chunk_size, ByteSize(1420));
        assert_eq!((c.stdout_level, c.stderr_level), (6, 3));
        // `weir check-config` prints the validated config as TOML.
        let shown = toml::to_string(&c).unwrap();
        assert!(shown.contains("compression = \"gzip\""), "{shown}");
        assert!(shown.contains("chunk_size = \"1420B\""), "{shown}");
    }

    #[test]
    fn addresses() {
        let e = parse_address("tls://[::1]:12201").unwrap();
        assert_eq!(
            (e.protocol, e.host.as_str(), e.port),
            (Protocol::Tls, "::1", 12201)
        );
        for bad in [
            "graylog:12201",
            "http://graylog:12201",
            "http://user:pw@graylog:12201/gelf",
            "udp://graylog",
            "udp://:12201",
            "udp://graylog:0",
            "udp://graylog:99999",
        ] {
            assert!(parse_address(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn options_of_another_transport_are_problems() {
        let (_, problems) = validate(
            "address = \"tcp://g:12201\"\ncompression = \"gzip\"\nchunk_size = 1000\ncompress_min_bytes = 0\nca_file = \"/x\"\nstdout_level = 9",
        );
        assert_eq!(
            problems,
            [
                "sinks.g.compression",
                "sinks.g.chunk_size",
                "sinks.g.compress_min_bytes",
                "sinks.g.ca_file",
                "sinks.g.stdout_level"
            ]
        );
        let (_, problems) =
            validate("address = \"udp://g:1\"\nchunk_size = 100\nmax_message_bytes = \"1MiB\"");
        assert_eq!(
            problems,
            ["sinks.g.max_message_bytes", "sinks.g.chunk_size"]
        );
        let (_, problems) = validate("address = \"tls://g:1\"\nca_file = \"/nonexistent/ca.pem\"");
        assert_eq!(problems, ["sinks.g.ca_file"]);
    }

    #[test]
    fn max_rate_defaults_partial_tables_and_transport() {
        let (c, problems) = validate("address = \"udp://g:1\"");
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(c.max_rate, DEFAULT_MAX_RATE);
        let (c, problems) = validate("address = \"udp://g:1\"\nmax_rate = { messages = 0 }");
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(
            c.max_rate,
            Rate {
                messages: 0,
                bytes: DEFAULT_MAX_RATE.bytes
            }
        );
        let (_, problems) = validate("address = \"udp://g:1\"\nmax_rate = { bytes = 100 }");
        assert_eq!(problems, ["sinks.g.max_rate"]);
        let (_, problems) = validate("address = \"tcp://g:1\"\nmax_rate = { messages = 10 }");
        assert_eq!(problems, ["sinks.g.max_rate"]);
        assert!(
            toml::from_str::<RawConfig>("address = \"udp://g:1\"\nmax_rate = { msgs = 1 }")
                .is_err()
        );
    }

    /// Every key the commented example in config/weir.toml shows exists
    /// (unknown keys are refused), with a value of the right type.
    #[test]
    fn the_commented_example_in_weir_toml_parses() {
        let text = include_str!("../../../config/weir.toml");
        let keys: String = text
            .lines()
            .skip_while(|l| !l.starts_with("# [sinks.graylog]"))
            .skip(1)
            .take_while(|l| l.starts_with('#'))
            .filter_map(|l| l.strip_prefix("# "))
            .filter(|l| {
                l.split_once(" = ").is_some_and(|(k, _)| {
                    k != "type" && k.chars().all(|c| c.is_ascii_lowercase() || c == '_')
                })
            })
            .map(|l| format!("{l}\n"))
            .collect();
        for key in [
            "address",
            "max_rate",
            "bulk",
            "bearer_token",
            "request_timeout",
        ] {
            assert!(
                keys.contains(&format!("{key} = ")),
                "{key} missing:\n{keys}"
            );
        }
        let raw: RawConfig = toml::from_str(&keys).unwrap();
        assert_eq!(
            raw.max_rate.unwrap().messages,
            Some(DEFAULT_MAX_RATE.messages)
        );
    }
}
