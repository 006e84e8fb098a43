//! Config validation of the Loki sink.

use super::*;

fn validate(extra: &str) -> (Config, Vec<String>) {
    let raw: RawConfig = toml::from_str(&format!(
        "url = \"https://loki.example.org/loki/api/v1/push\"\n{extra}"
    ))
    .unwrap();
    let mut problems = Problems::default();
    let c = raw.validate("sinks.loki", &mut problems);
    let keys = format!("{problems:?}");
    (
        c,
        if problems.is_empty() {
            vec![]
        } else {
            vec![keys]
        },
    )
}

#[test]
fn defaults() {
    let (c, p) = validate("");
    assert!(p.is_empty(), "{p:?}");
    assert_eq!(c.encoding, Encoding::Protobuf);
    assert_eq!(c.compression, Compression::Snappy);
    assert_eq!(c.labels, LABEL_NAMES.to_vec());
    assert_eq!(c.line_format, LineFormat::Logfmt);
    assert!(!c.structured_metadata);
    assert_eq!(c.max_push_bytes, ByteSize(4_000_000));
    assert_eq!(c.batch_max_bytes, ByteSize(1 << 20));
    assert_eq!(c.batch_timeout.0, Duration::from_secs(1));
    assert_eq!(c.max_line_size, ByteSize(256 << 10));
}

#[test]
fn a_cap_above_loki_limit_is_refused() {
    let (_, p) = validate("max_push_bytes = 4194305");
    assert!(p[0].contains("sinks.loki.max_push_bytes"), "{p:?}");
    assert!(p[0].contains("4194304"), "{p:?}");
    let (c, p) = validate("max_push_bytes = 4194304");
    assert!(p.is_empty(), "{p:?}");
    assert_eq!(c.max_push_bytes.0, LOKI_GRPC_LIMIT);
    let (_, p) = validate("max_push_bytes = \"5MiB\"");
    assert!(!p.is_empty());
}

#[test]
fn bad_combinations_are_reported() {
    for (extra, key) in [
        ("compression = \"gzip\"", "compression"),
        (
            "encoding = \"json\"\ncompression = \"snappy\"",
            "compression",
        ),
        ("labels = [\"pod\"]", "labels"),
        ("labels = []", "labels"),
        ("username = \"u\"", "password"),
        (
            "bearer_token = \"t\"\nusername = \"u\"\npassword = \"p\"",
            "bearer_token",
        ),
        ("max_line_size = \"3MiB\"", "max_line_size"),
        ("ca_file = \"/nonexistent/ca.pem\"", "ca_file"),
        ("retry_max_backoff = \"1ms\"", "retry_max_backoff"),
    ] {
        let (_, p) = validate(extra);
        assert!(
            p.first()
                .is_some_and(|p| p.contains(&format!("sinks.loki.{key}"))),
            "{extra}: {p:?}"
        );
    }
    for url in [
        "ftp://x/y",
        "https://u:p@loki/loki/api/v1/push",
        "https://loki/",
        "loki",
    ] {
        let raw: RawConfig = toml::from_str(&format!("url = \"{url}\"")).unwrap();
        let mut problems = Problems::default();
        raw.validate("sinks.loki", &mut problems);
        assert!(!problems.is_empty(), "{url}");
    }
}

#[test]
fn secrets_are_not_printed() {
    let (c, p) = validate("username = \"u\"\npassword = \"hunter2\"");
    assert!(p.is_empty());
    let shown = format!("{c:?} {}", toml::to_string(&c).unwrap());
    assert!(!shown.contains("hunter2"), "{shown}");
    assert!(shown.contains("<redacted>"));
}

#[test]
fn the_commented_example_in_weir_toml_is_valid() {
    let text = include_str!("../../../config/weir.toml");
    let block: String = text
        .lines()
        .skip_while(|l| !l.starts_with("# [sinks.loki]"))
        .skip(2) // the table header and `type`
        .take_while(|l| l.starts_with('#'))
        .filter(|l| !l.starts_with("# #"))
        .map(|l| format!("{}\n", l.trim_start_matches("# ")))
        .collect();
    assert!(block.contains("max_push_bytes = 4000000"), "{block}");
    let raw: RawConfig = toml::from_str(&block).unwrap();
    let mut problems = Problems::default();
    let c = raw.validate("sinks.loki", &mut problems);
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(c.max_push_bytes.0, DEFAULT_MAX_PUSH_BYTES);
}

/// A Loki sink reads events' fields unless its lines are raw and without
/// structured metadata: only then does its spool reader skip them.
#[test]
fn fields_are_read_unless_lines_are_raw_without_metadata() {
    use crate::sink::driver::Sink as _;
    let reads = |extra: &str| {
        let (c, p) = validate(extra);
        assert!(p.is_empty(), "{p:?}");
        sink::LokiSink::new("loki", c, &crate::metrics::Metrics::new()).reads_fields()
    };
    assert!(reads(""), "logfmt, the default");
    assert!(reads("line_format = \"json\""));
    assert!(reads("line_format = \"raw\"\nstructured_metadata = true"));
    assert!(!reads("line_format = \"raw\""));
}
