//! The command line: check-config, --version, --help.

use std::process::Command;

use crate::common::weir_bin;

#[test]
fn version_and_help() {
    let out = Command::new(weir_bin()).arg("--version").output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("weir "));
    let out = Command::new(weir_bin()).arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(
        help.contains("check-config") && help.contains("Examples:"),
        "{help}"
    );
}

#[test]
fn check_config_accepts_the_shipped_config() {
    let out = Command::new(weir_bin())
        .args([
            "check-config",
            "--config",
            concat!(env!("CARGO_MANIFEST_DIR"), "/config/weir.toml"),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(printed.contains("[sources.docker]"), "{printed}");
}

#[test]
fn check_config_reports_every_problem_and_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "state_dir = \"rel\"\n[sources.d]\ntype = \"forward\"\n[sinks.f]\ntype = \"file\"\npath = \"rel\"\n",
    )
    .unwrap();
    let out = Command::new(weir_bin())
        .args(["check-config", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("line 1: `state_dir`"), "{err}");
    assert!(err.contains("line 6: `sinks.f.path`"), "{err}");
}

#[test]
fn check_config_on_missing_file_says_so() {
    let out = Command::new(weir_bin())
        .args(["check-config", "--config", "/nonexistent/weir.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read /nonexistent/weir.toml"));
}
