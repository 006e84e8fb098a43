//! The command line: check-config, --version, --help.

use std::process::Command;

use crate::common::{check_config_text, stdout_of_success, weir_bin};

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
    let printed = stdout_of_success(&out);
    assert!(printed.contains("[sources.docker]"), "{printed}");
}

#[test]
fn check_config_reports_every_problem_and_exits_1() {
    let out = check_config_text(
        "state_dir = \"rel\"\n[sources.d]\ntype = \"forward\"\n[sinks.f]\ntype = \"file\"\npath = \"rel\"\n",
    );
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

/// Two weirs on one state directory would corrupt each other's spool: the
/// second is refused, says who holds it, and leaves the first (and its pid
/// file, which `weir reload` reads) alone.
#[test]
fn a_second_weir_on_the_same_state_dir_is_refused_and_leaves_the_first_alone() {
    use std::time::Duration;

    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("weir.toml");
    std::fs::write(
        &config,
        format!(
            "state_dir = \"{d}/state\"\n[sources.fwd]\ntype = \"forward\"\nlisten = \"unix://{d}/fwd.sock\"\n[sinks.out]\ntype = \"file\"\npath = \"{d}/out.ndjson\"\n[metrics]\nlisten = \"\"\n",
            d = dir.path().display()
        ),
    )
    .unwrap();
    let pid_file = dir.path().join("weir.pid");
    let start = || {
        // weir_run passes --pid-file next to the config: `pid_file`.
        crate::common::weir_run(&config).spawn().unwrap()
    };
    let mut first = start();
    struct Kill<'a>(&'a mut std::process::Child);
    impl Drop for Kill<'_> {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let first_pid = first.id();
    let first = Kill(&mut first);
    crate::common::wait_for("the first weir to listen", Duration::from_secs(30), || {
        std::os::unix::net::UnixStream::connect(dir.path().join("fwd.sock")).ok()
    });

    let second = start().wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(!second.status.success(), "second weir ran: {stderr}");
    assert!(
        stderr.contains(&format!("in use by another weir (pid {first_pid})")),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read_to_string(&pid_file).unwrap().trim(),
        first_pid.to_string(),
        "the second weir touched the first one's pid file"
    );
    assert!(
        first.0.try_wait().unwrap().is_none(),
        "the first weir stopped"
    );
}

/// The packaged completion scripts are what `weir completions` prints, so
/// they never lag behind the command line.
#[test]
fn packaged_completions_match_the_command_line() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    for shell in ["bash", "zsh", "fish"] {
        let out = Command::new(weir_bin())
            .args(["completions", shell])
            .output()
            .unwrap();
        assert!(out.status.success());
        let printed = String::from_utf8(out.stdout).unwrap();
        assert!(
            printed.contains("check-config") && printed.contains("tap"),
            "{shell}"
        );
        let file = root.join(format!("packaging/completions/weir.{shell}"));
        let packaged = std::fs::read_to_string(&file).unwrap_or_default();
        assert!(
            packaged == printed,
            "{} is stale: regenerate with `weir completions {shell} > {}`",
            file.display(),
            file.display()
        );
    }
}

/// The man page names every subcommand `weir --help` lists, and has the
/// sections an administrator looks for.
#[test]
fn man_page_covers_every_subcommand_signals_exit_codes_and_files() {
    let man =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/packaging/weir.1")).unwrap();
    let out = Command::new(weir_bin()).arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    let commands: Vec<&str> = help
        .split("Commands:")
        .nth(1)
        .unwrap()
        .lines()
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .collect();
    assert!(commands.len() >= 6, "{help}");
    for c in commands {
        let roff = c.replace('-', "\\-");
        assert!(
            man.contains(&format!("\n.B {roff}\n")),
            "packaging/weir.1 lacks a `.B {roff}` entry under COMMANDS"
        );
    }
    for section in [
        ".SH SIGNALS",
        ".SH EXIT STATUS",
        ".SH FILES",
        "SIGHUP",
        "/etc/weir/conf.d",
    ] {
        assert!(man.contains(section), "packaging/weir.1 lacks {section}");
    }
}

/// Drop-ins in conf.d are merged in name order; check-config names the
/// file, line and full key of every problem, sorted by file and line; and
/// the effective config it prints is accepted when fed back.
#[test]
fn check_config_merges_dropins_and_its_output_is_valid_input() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    let main = dir.path().join("weir.toml");
    std::fs::write(
        &main,
        format!(
            "state_dir = \"{d}/state\"\n[sources.j]\ntype = \"journal\"\nnamespace = \"weir-cli-test\"\n\
             [sinks.f]\ntype = \"file\"\npath = \"{d}/out.ndjson\"\n"
        ),
    )
    .unwrap();
    let conf_d = dir.path().join("conf.d");
    std::fs::create_dir(&conf_d).unwrap();
    std::fs::write(
        conf_d.join("10-spool.toml"),
        "[spool]\nmax_bytes = \"2GiB\"\n",
    )
    .unwrap();
    let check = |config: &std::path::Path| {
        Command::new(weir_bin())
            .args(["check-config", "--config"])
            .arg(config)
            .output()
            .unwrap()
    };
    let out = check(&main);
    let printed = stdout_of_success(&out);
    assert!(
        printed.contains("10-spool.toml"),
        "the header names the drop-in: {printed}"
    );
    assert!(
        printed.contains("max_bytes = \"2GiB\"") || printed.contains("max_bytes = 2147483648"),
        "{printed}"
    );
    // Fed back (in a directory without drop-ins), it is the same config.
    let again_dir = tempfile::tempdir().unwrap();
    let again = again_dir.path().join("effective.toml");
    std::fs::write(&again, &printed).unwrap();
    let out = check(&again);
    let reprinted = stdout_of_success(&out);
    let body = |s: &str| s.lines().skip(1).collect::<Vec<_>>().join("\n");
    assert_eq!(body(&reprinted), body(&printed));

    // Problems in two files, each with its file, line and full key.
    std::fs::write(
        conf_d.join("20-bad.toml"),
        "\n[sinks.f]\nkeep_files = \"many\"\n",
    )
    .unwrap();
    let text = std::fs::read_to_string(&main).unwrap();
    let text = text.replacen(&format!("state_dir = \"{d}/state\""), "state_dir = 7", 1);
    std::fs::write(&main, text).unwrap();
    let out = check(&main);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    let first = err.find(&format!("{}: line 1: `state_dir`", main.display()));
    let second = err.find(&format!(
        "{}: line 3: `sinks.f.keep_files`",
        conf_d.join("20-bad.toml").display()
    ));
    assert!(
        first.is_some() && second.is_some() && first < second,
        "{err}"
    );
}
