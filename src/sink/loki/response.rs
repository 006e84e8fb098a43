//! What a Loki response means for the push that caused it.
//!
//! The body is read (at most [`BODY_PEEK`] bytes) only to be reduced to a
//! `&'static str` reason by [`classify`]; then it is dropped. Nothing here can
//! carry response or payload bytes into a log line: an [`Outcome`] holds a
//! status number and a static reason.
//!
//! | response | outcome |
//! |---|---|
//! | 2xx | [`Outcome::Accepted`] |
//! | 413, or 500 saying `ResourceExhausted` / `larger than max` | [`Outcome::TooLarge`]: split in halves |
//! | 400 refusing entries (age, size, order, labels, metadata, policy) | [`Outcome::PartlyRefused`]: Loki wrote the others; acknowledge, count the refused |
//! | 400 refusing the push itself (unparsable body) | [`Outcome::Rejected`]: split to isolate what cannot be read, drop it |
//! | 429, other 5xx, network errors, timeouts | [`Outcome::Retry`]: same push, backoff, forever |
//! | 401, 403, 404, other 4xx | [`Outcome::Retry`]: a config problem; the data waits in the spool |

/// How much of a response body is looked at.
pub const BODY_PEEK: usize = 4096;

/// What to do with a push after a response (or a failure to get one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Loki stored it: acknowledge.
    Accepted,
    /// The push as a whole is too large for the server: split it.
    TooLarge { status: u16, reason: &'static str },
    /// Loki could not read the push as a whole: split to find the part it
    /// cannot read, drop only that.
    Rejected { status: u16, reason: &'static str },
    /// Loki's distributor stored the valid entries and refused the others
    /// (400): sending any of it again would duplicate what was stored, so
    /// it is delivered except the refused. `refused` is the count Loki gave
    /// (`total ignored: N out of M`), `None` when it gave none (at least one).
    PartlyRefused {
        status: u16,
        reason: &'static str,
        refused: Option<u64>,
    },
    /// Try the same push again later (network errors are the service's
    /// `Unreachable`, with their cause).
    Retry { status: u16, reason: &'static str },
}

/// Classifies a response from its status and the start of its body.
pub fn classify(status: u16, body: &[u8]) -> Outcome {
    let body = &body[..body.len().min(BODY_PEEK)];
    let text = String::from_utf8_lossy(body).to_ascii_lowercase();
    let has = |s: &str| text.contains(s);
    match status {
        200..=299 => Outcome::Accepted,
        413 => Outcome::TooLarge {
            status,
            reason: "too_large",
        },
        500 if has("resourceexhausted") || has("larger than max") => Outcome::TooLarge {
            status,
            reason: "too_large",
        },
        400 if is_unreadable(&text) => Outcome::Rejected {
            status,
            reason: "bad_request",
        },
        400 => Outcome::PartlyRefused {
            status,
            reason: rejection_reason(&text),
            refused: total_ignored(&text),
        },
        429 => Outcome::Retry {
            status,
            reason: "rate_limited",
        },
        500..=599 => Outcome::Retry {
            status,
            reason: "server_error",
        },
        401 => Outcome::Retry {
            status,
            reason: "unauthorized",
        },
        403 => Outcome::Retry {
            status,
            reason: "forbidden",
        },
        404 => Outcome::Retry {
            status,
            reason: "not_found",
        },
        _ => Outcome::Retry {
            status,
            reason: "unexpected_status",
        },
    }
}

/// The reason Loki gives for refusing entries, from the texts of Loki's
/// `pkg/validation` and ingester errors.
fn rejection_reason(text: &str) -> &'static str {
    let has = |s: &str| text.contains(s);
    if has("too far behind") || has("out of order") {
        "out_of_order"
    } else if has("too old") || has("greater than max allowed age") {
        "too_old"
    } else if has("too new") || has("too far in the future") {
        "too_new"
    } else if has("max entry size") || has("line too long") || has("max_line_size") {
        "line_too_long"
    } else if has("structured metadata") {
        "structured_metadata"
    } else if has("label") || has("parse error") {
        "invalid_labels"
    } else {
        "bad_request"
    }
}

/// Whether a 400 says the push could not be decoded at all (nothing of it
/// was stored), from the texts of Loki's push parsers.
fn is_unreadable(text: &str) -> bool {
    [
        "unmarshal",
        "snappy",
        "decompress",
        "readobject",
        "invalid character",
        "unexpected eof",
        "cannot parse",
        "failed to parse",
    ]
    .iter()
    .any(|s| text.contains(s))
}

/// `N` of Loki's `total ignored: N out of M`.
fn total_ignored(text: &str) -> Option<u64> {
    let rest = &text[text.find("total ignored: ")? + "total ignored: ".len()..];
    let digits = rest.split(|c: char| !c.is_ascii_digit()).next()?;
    digits.parse().ok().filter(|&n| n > 0)
}

/// The reason for a failed request, from `reqwest`'s error kinds only.
pub fn network_reason(e: &reqwest::Error) -> &'static str {
    if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        if chain_mentions_tls(e) {
            "tls"
        } else {
            "connect"
        }
    } else {
        "network"
    }
}

/// Whether the error chain is a TLS failure (certificate, handshake). The
/// texts are only inspected, never logged.
fn chain_mentions_tls(e: &reqwest::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(s) = source {
        let text = s.to_string().to_ascii_lowercase();
        if text.contains("certificate") || text.contains("tls") || text.contains("handshake") {
            return true;
        }
        source = s.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn incident_two_message_means_split() {
        let body = b"rpc error: code = ResourceExhausted desc = grpc: received message larger than max (5242880 vs. 4194304)";
        assert_eq!(
            classify(500, body),
            Outcome::TooLarge {
                status: 500,
                reason: "too_large"
            }
        );
        assert!(matches!(classify(413, b""), Outcome::TooLarge { .. }));
        assert!(matches!(
            classify(500, b"oops"),
            Outcome::Retry {
                reason: "server_error",
                ..
            }
        ));
    }

    #[test]
    fn loki_400_texts_map_to_reasons() {
        let cases: [(&str, &str); 6] = [
            ("entry with timestamp 2020-01-01 ignored, reason: 'entry too far behind, oldest acceptable timestamp is: ...'", "out_of_order"),
            ("entry for stream '{a=\"b\"}' has timestamp too old: 2020-01-01, oldest acceptable timestamp is: 2024-01-01", "too_old"),
            ("entry for stream '{a=\"b\"}' has timestamp too new: 2099-01-01", "too_new"),
            ("Max entry size '262144' bytes exceeded for stream '{a=\"b\"}' while adding an entry with length '300000' bytes", "line_too_long"),
            ("stream '{a=\"b\"}' includes structured metadata, but this feature is disallowed", "structured_metadata"),
            ("something else", "bad_request"),
        ];
        for (text, reason) in cases {
            assert_eq!(
                classify(400, text.as_bytes()),
                Outcome::PartlyRefused {
                    status: 400,
                    reason,
                    refused: None,
                },
                "{text}"
            );
        }
    }

    #[test]
    fn a_400_is_partial_unless_the_push_was_unreadable() {
        let body = "entry for stream '{a=\"b\"}' has timestamp too old: 1, oldest acceptable timestamp is: 2\ntotal ignored: 100 out of 1105";
        assert_eq!(
            classify(400, body.as_bytes()),
            Outcome::PartlyRefused {
                status: 400,
                reason: "too_old",
                refused: Some(100)
            }
        );
        for unreadable in [
            "snappy: corrupt input",
            "proto: cannot parse invalid wire-format data",
            "ReadObject: expect { or , or } or n, but found",
        ] {
            assert!(
                matches!(
                    classify(400, unreadable.as_bytes()),
                    Outcome::Rejected { .. }
                ),
                "{unreadable}"
            );
        }
    }

    #[test]
    fn throttling_and_config_errors_retry() {
        for (status, reason) in [
            (429, "rate_limited"),
            (503, "server_error"),
            (401, "unauthorized"),
            (403, "forbidden"),
            (404, "not_found"),
            (418, "unexpected_status"),
        ] {
            assert_eq!(classify(status, b"x"), Outcome::Retry { status, reason });
        }
        assert_eq!(classify(204, b""), Outcome::Accepted);
    }
}
