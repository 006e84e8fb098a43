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

#[test]
fn type_error_inside_a_sink_names_the_full_key_and_its_own_line() {
    let text = "[sources.d]\ntype = \"forward\"\n\n[sinks.local]\ntype = \"file\"\npath = \"/tmp/f\"\n\nkeep_files = \"many\"\n";
    let p = problems(text);
    assert_eq!(p.len(), 1, "{p:?}");
    assert_eq!(p[0].key, "sinks.local.keep_files", "{p:?}");
    assert_eq!(p[0].line, Some(8), "{p:?}");
}

#[test]
fn every_section_reports_its_problems_sorted_by_line() {
    let text = "[sources.d]\ntype = \"forward\"\nmax_connections = \"x\"\n[spool]\nmax_bytes = \"12 parsecs\"\n[sinks.a]\ntype = \"file\"\npath = \"/tmp/a\"\nbogus = 1\n";
    let p = problems(text);
    let got: Vec<_> = p.iter().map(|p| (p.key.as_str(), p.line)).collect();
    assert_eq!(
        got,
        vec![
            ("sources.d.max_connections", Some(3)),
            ("spool.max_bytes", Some(5)),
            ("sinks.a.bogus", Some(9)),
        ],
        "{p:?}"
    );
    assert!(p[2].message.contains("bogus"), "{p:?}");
}

#[test]
fn unquoted_octal_mode_says_to_quote_it() {
    let p = problems("[sources.d]\ntype = \"forward\"\nsocket_mode = 0600\n");
    assert_eq!(p[0].key, "sources.d.socket_mode", "{p:?}");
    assert_eq!(p[0].line, Some(3), "{p:?}");
    assert!(p[0].message.contains("\"0600\""), "{p:?}");
}

#[test]
fn effective_config_is_valid_input() {
    for (name, text) in [
        ("builtin", BUILTIN_DEFAULT),
        ("shipped", include_str!("../../config/weir.toml")),
    ] {
        let c = parse(text, name).unwrap();
        let printed = toml::to_string_pretty(&c).unwrap();
        let again =
            parse(&printed, "effective").unwrap_or_else(|e| panic!("{name}: {e}\n{printed}"));
        assert_eq!(toml::to_string_pretty(&again).unwrap(), printed, "{name}");
    }
}

const MINIMAL: &str =
    "[sources.d]\ntype = \"journal\"\n[sinks.f]\ntype = \"file\"\npath = \"/tmp/f\"\n";

#[test]
fn secret_file_and_env_vars() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("pw");
    std::fs::write(&secret, "s3cret\n").unwrap();
    // The variable is unique to this test: tests run in parallel threads.
    std::env::set_var("WEIR_TEST_SECRET_DIR", dir.path());
    let text = format!(
        "{MINIMAL}[sinks.l]\ntype = \"loki\"\nurl = \"http://127.0.0.1:3100/loki/api/v1/push\"\nusername = \"u\"\npassword_file = \"${{WEIR_TEST_SECRET_DIR}}/pw\"\n"
    );
    let c = parse(&text, "t").unwrap();
    let sink::Config::Loki(l) = &c.sinks["l"] else {
        panic!()
    };
    let shown = format!("{:?}", l.auth);
    assert!(!shown.contains("s3cret"), "{shown}");
    match &l.auth {
        sink::loki::Auth::Basic { password, .. } => assert_eq!(password.expose(), "s3cret"),
        other => panic!("{other:?}"),
    }

    let p = problems(&format!(
        "hostname = \"${{WEIR_TEST_UNSET_VAR}}\"\n{MINIMAL}"
    ));
    assert!(
        p[0].key == "hostname" && p[0].message.contains("WEIR_TEST_UNSET_VAR is not set"),
        "{p:?}"
    );
    let p = problems(&format!(
        "{MINIMAL}[sinks.l]\ntype = \"loki\"\nurl = \"http://x/loki/api/v1/push\"\nbearer_token_file = \"/nonexistent/t\"\n"
    ));
    assert_eq!(p[0].key, "sinks.l.bearer_token_file", "{p:?}");
    assert_eq!(p[0].line, Some(9), "{p:?}");
    assert!(p[0].message.contains("cannot read /nonexistent/t"), "{p:?}");
}

#[test]
fn dropins_merge_in_name_order_and_problems_name_their_file() {
    let dir = tempfile::tempdir().unwrap();
    let main = dir.path().join("weir.toml");
    std::fs::write(&main, MINIMAL).unwrap();
    let d = dir.path().join("conf.d");
    std::fs::create_dir(&d).unwrap();
    std::fs::write(d.join("20-b.toml"), "[spool]\nmax_bytes = \"2GiB\"\n").unwrap();
    std::fs::write(
        d.join("10-a.toml"),
        "[spool]\nmax_bytes = \"1GiB\"\nsegment_bytes = \"8MiB\"\n",
    )
    .unwrap();
    std::fs::write(d.join("ignored.toml~"), "garbage").unwrap();
    let (c, origin) = load(Some(&main)).unwrap();
    assert_eq!(c.spool.max_bytes, ByteSize(2 << 30));
    assert_eq!(c.spool.segment_bytes, ByteSize(8 << 20));
    assert_eq!(
        origin.dropins,
        vec![d.join("10-a.toml"), d.join("20-b.toml")]
    );

    std::fs::write(d.join("30-c.toml"), "\n[sinks.f]\nkeep_files = \"x\"\n").unwrap();
    std::fs::write(&main, format!("state_dir = 5\n{MINIMAL}")).unwrap();
    let e = load(Some(&main)).unwrap_err();
    let p = e.problems();
    assert_eq!(p.len(), 2, "{e}");
    // A section that cannot be read does not hide the others' problems.
    std::fs::write(&main, format!("state_dir = \"rel\"\n{MINIMAL}")).unwrap();
    let e = load(Some(&main)).unwrap_err();
    let keys: Vec<_> = e.problems().iter().map(|p| p.key.as_str()).collect();
    assert_eq!(keys, ["state_dir", "sinks.f.keep_files"], "{e}");
    assert_eq!(p[0].file.as_deref(), Some(main.to_str().unwrap()), "{e}");
    assert_eq!(p[0].key, "state_dir");
    let c_file = d.join("30-c.toml");
    assert_eq!(p[1].file.as_deref(), Some(c_file.to_str().unwrap()), "{e}");
    assert_eq!(
        (p[1].key.as_str(), p[1].line),
        ("sinks.f.keep_files", Some(3)),
        "{e}"
    );
}

#[test]
fn secret_files_work_inside_arrays_of_tables_too() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("key"), "k3y\n").unwrap();
    std::fs::write(dir.path().join("pw"), "pw\n").unwrap();
    let d = dir.path().display();
    let text = format!(
        "[sources.f]\ntype = \"forward\"\nlisten = \"tcp://127.0.0.1:24224\"\n\
         shared_key_file = \"{d}/key\"\nusers = [{{ username = \"u\", password_file = \"{d}/pw\" }}]\n\
         [sinks.f]\ntype = \"file\"\npath = \"/tmp/f\"\n"
    );
    let c = parse(&text, "t").unwrap();
    let source::Config::Forward(f) = &c.sources["f"] else {
        panic!()
    };
    assert_eq!(f.shared_key.as_ref().unwrap().expose(), "k3y");
    assert_eq!(f.users[0].password, "pw");
    let both = text.replace("shared_key_file", "shared_key = \"x\"\nshared_key_file");
    let p = problems(&both);
    assert_eq!(p[0].key, "sources.f.shared_key_file", "{p:?}");
    assert!(p[0].message.contains("not both"), "{p:?}");
}
