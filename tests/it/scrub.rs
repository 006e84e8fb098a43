//! `[scrub]` through the real binary: defaults when absent, problems reported
//! with their key and line.

use std::process::Command;

use crate::common::weir_bin;

fn check_config(text: &str) -> std::process::Output {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("weir.toml");
    let base = "state_dir = \"/var/lib/weir\"\n[sources.d]\ntype = \"forward\"\nlisten = \"unix:///run/weir/f.sock\"\n[sinks.f]\ntype = \"file\"\npath = \"/var/log/weir/e.ndjson\"\n";
    std::fs::write(&path, format!("{base}{text}")).unwrap();
    Command::new(weir_bin())
        .args(["check-config", "--config"])
        .arg(&path)
        .output()
        .unwrap()
}

#[test]
fn absent_scrub_section_means_private_defaults() {
    let out = check_config("");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for line in [
        "ipv4 = \"truncate\"",
        "ipv6 = \"truncate\"",
        "logins = \"hash\"",
        "ipv4_prefix = 24",
        "ipv6_prefix = 48",
    ] {
        assert!(stdout.contains(line), "{line} missing from:\n{stdout}");
    }
}

#[test]
fn bad_scrub_settings_are_reported_with_their_line() {
    let out = check_config("[scrub]\nlogins = \"truncate\"\nipv6_prefix = 200\n");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("line 9: `scrub.logins`"), "{err}");
    assert!(err.contains("line 10: `scrub.ipv6_prefix`"), "{err}");

    let out = check_config("[scrub]\nipv4 = \"off\"\n");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("scrub.ipv4") && err.contains("truncate"),
        "{err}"
    );

    let out = check_config("[scrub]\nlogin = \"hash\"\n");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unknown field `login`"), "{err}");
}
