use super::*;
use crate::units::ByteSize;

fn problems(text: &str) -> Vec<Problem> {
    match parse(text, "test.toml") {
        Ok(c) => panic!("expected problems, got {c:?}"),
        Err(e) => e.problems().to_vec(),
    }
}

#[test]
fn builtin_default_is_valid() {
    let c = parse(BUILTIN_DEFAULT, "default").unwrap();
    assert_eq!(c.state_dir, PathBuf::from("/var/lib/weir"));
    assert!(matches!(c.sources["docker"], source::Config::Forward(_)));
    assert!(matches!(c.sources["journal"], source::Config::Journal(_)));
    assert!(matches!(c.sinks["local"], sink::Config::File(_)));
    assert_eq!(c.spool.max_bytes, ByteSize(1 << 30));
}

#[test]
fn shipped_config_file_is_valid() {
    let text = include_str!("../../config/weir.toml");
    parse(text, "config/weir.toml").unwrap();
}

#[test]
fn several_named_sinks() {
    let c = parse(
        r#"
        [sources.docker]
        type = "forward"
        [sinks.a]
        type = "file"
        path = "/tmp/a"
        [sinks.b]
        type = "file"
        path = "/tmp/b"
        max_file_bytes = "64MiB"
        "#,
        "t",
    )
    .unwrap();
    assert_eq!(c.sinks.len(), 2);
    let sink::Config::File(b) = &c.sinks["b"] else {
        panic!()
    };
    assert_eq!(b.max_file_bytes, ByteSize(64 << 20));
}

#[test]
fn unknown_key_names_key_and_line() {
    let p = problems("state_dir = \"/x\"\n[sources.d]\ntype = \"forward\"\n\n[sinks.f]\ntype = \"file\"\npath = \"/tmp/f\"\ncolour = 3\n");
    assert_eq!(p.len(), 1);
    assert!(p[0].key.starts_with("sinks.f"), "{:?}", p[0]);
    assert!(p[0].message.contains("colour"), "{:?}", p[0]);
    assert!(
        p[0].line.is_some_and(|l| (5..=8).contains(&l)),
        "{:?}",
        p[0]
    );
}

#[test]
fn bad_size_names_key() {
    let p = problems("[spool]\nmax_bytes = \"12 parsecs\"\n");
    assert_eq!(p[0].key, "spool.max_bytes");
    assert_eq!(p[0].line, Some(2));
    assert!(p[0].message.contains("size unit"), "{:?}", p[0]);
}

#[test]
fn unknown_type_is_reported() {
    let p = problems("[sources.x]\ntype = \"carrier-pigeon\"\n");
    assert!(p[0].key.starts_with("sources.x"), "{:?}", p[0]);
    assert!(p[0].message.contains("carrier-pigeon"), "{:?}", p[0]);
}

#[test]
fn validation_reports_every_problem_with_lines() {
    let text = "state_dir = \"relative\"\n[sources.docker]\ntype = \"forward\"\nlisten = \"http://x\"\n[spool]\nsegment_bytes = \"1MiB\"\nmax_bytes = \"1MiB\"\n[sinks.f]\ntype = \"file\"\npath = \"rel\"\n";
    let p = problems(text);
    let keys: Vec<_> = p.iter().map(|p| (p.key.as_str(), p.line)).collect();
    assert!(keys.contains(&("state_dir", Some(1))), "{keys:?}");
    assert!(
        keys.contains(&("sources.docker.listen", Some(4))),
        "{keys:?}"
    );
    assert!(keys.contains(&("spool.max_bytes", Some(7))), "{keys:?}");
    assert!(keys.contains(&("sinks.f.path", Some(10))), "{keys:?}");
}

#[test]
fn no_sources_or_sinks_is_an_error() {
    let p = problems("state_dir = \"/x\"\n");
    let keys: Vec<_> = p.iter().map(|p| p.key.as_str()).collect();
    assert_eq!(keys, vec!["sources", "sinks"]);
}

#[test]
fn error_display_lists_all() {
    let e = parse("[spool]\nmax_bytes = 1\nsegment_bytes = 1\n", "x.toml").unwrap_err();
    let text = e.to_string();
    assert!(text.starts_with("x.toml: "), "{text}");
    assert!(text.contains("line 3: `spool.segment_bytes`"), "{text}");
}
