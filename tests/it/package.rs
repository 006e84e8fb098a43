//! The Debian package: built with cargo-deb, checked with dpkg-deb and
//! lintian, then installed on this (root, CI) machine with apt-get, checked
//! (binary, user, conffile, enabled units, daemon.json untouched) and purged.
//!
//! The build is a release build (a few minutes the first time; incremental
//! after). cargo-deb must be installed: `scripts/package.sh` does it.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Mutex, OnceLock};

fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn stdout(cmd: &mut Command) -> String {
    String::from_utf8_lossy(&run(cmd).stdout).into_owned()
}

/// Builds the .deb once per test run; returns its path.
fn deb() -> PathBuf {
    static DEB: OnceLock<PathBuf> = OnceLock::new();
    static BUILDING: Mutex<()> = Mutex::new(());
    let _one_at_a_time = BUILDING.lock().unwrap_or_else(|e| e.into_inner());
    DEB.get_or_init(|| {
        let root = env!("CARGO_MANIFEST_DIR");
        let probe = Command::new(env!("CARGO"))
            .args(["deb", "--version"])
            .output();
        assert!(
            probe.is_ok_and(|o| o.status.success()),
            "cargo-deb is not installed: run scripts/package.sh (installs it and builds the .deb)"
        );
        let out = stdout(
            Command::new(env!("CARGO"))
                .args(["deb", "--locked", "--strip"])
                .current_dir(root),
        );
        let path = out
            .lines()
            .rev()
            .map(str::trim)
            .find(|l| l.ends_with(".deb"))
            .unwrap_or_else(|| panic!("cargo deb printed no .deb path:\n{out}"));
        PathBuf::from(path)
    })
    .clone()
}

#[test]
fn deb_has_the_files_conffile_and_maintainer_scripts() {
    let deb = deb();
    let files = stdout(Command::new("dpkg-deb").arg("-c").arg(&deb));
    for path in [
        "./usr/bin/weir",
        "./etc/weir/weir.toml",
        "./lib/systemd/system/weir.service",
        "./lib/systemd/system/weir.socket",
        "./usr/share/doc/weir/copyright",
        "./usr/share/doc/weir/changelog.Debian.gz",
        "./usr/share/doc/weir/daemon.json.example",
        "./usr/share/man/man1/weir.1.gz",
        "./usr/share/weir/grafana/weir.json",
        "./usr/share/bash-completion/completions/weir",
        "./usr/share/zsh/vendor-completions/_weir",
        "./usr/share/fish/vendor_completions.d/weir.fish",
    ] {
        assert!(
            files.lines().any(|l| l.ends_with(path)),
            "{path} missing from the .deb:\n{files}"
        );
    }
    assert!(
        files
            .lines()
            .any(|l| l.starts_with("-rwxr-xr-x 0/0 ") && l.ends_with("./usr/bin/weir")),
        "{files}"
    );
    // The conffile may hold secrets: never world-readable, even before the
    // postinst gives it to group weir.
    assert!(
        files
            .lines()
            .any(|l| l.starts_with("-rw-r----- 0/0 ") && l.ends_with("./etc/weir/weir.toml")),
        "{files}"
    );

    let info = stdout(Command::new("dpkg-deb").arg("-I").arg(&deb));
    assert!(info.contains("Package: weir"), "{info}");
    let depends = info
        .lines()
        .find(|l| l.trim_start().starts_with("Depends:"))
        .unwrap_or_else(|| panic!("no Depends:\n{info}"));
    assert!(
        depends.contains("adduser") && depends.contains("libc6"),
        "{depends}"
    );

    let control = tempfile::tempdir().unwrap();
    run(Command::new("dpkg-deb")
        .arg("-e")
        .arg(&deb)
        .arg(control.path()));
    let read = |name: &str| std::fs::read_to_string(control.path().join(name)).unwrap();
    assert_eq!(read("conffiles").trim(), "/etc/weir/weir.toml");
    let postinst = read("postinst");
    assert!(
        postinst.contains("adduser --system --group"),
        "creates the user"
    );
    assert!(
        postinst.contains("adduser weir systemd-journal"),
        "journal group"
    );
    assert!(
        postinst.contains("deb-systemd-helper enable"),
        "enables the units"
    );
    assert!(postinst.contains("\"fluentd-address\": \"unix:///run/weir/forward.sock\""));
    // The README's daemon.json: the example and the postinst say the same.
    let example = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/packaging/docker/daemon.json.example"
    ))
    .unwrap();
    for key in [
        "\"fluentd-request-ack\": \"true\"",
        "\"fluentd-async\": \"true\"",
    ] {
        assert!(postinst.contains(key) && example.contains(key), "{key}");
    }
    // It prints daemon.json lines; nothing may write to daemon.json.
    for line in postinst.lines().filter(|l| l.contains("daemon.json")) {
        assert!(
            !line.contains('>') && !line.contains("sed") && !line.contains("tee"),
            "postinst must not edit daemon.json: {line}"
        );
    }
    // Upgrades restart the service only: restarting the socket would close it under Docker.
    assert!(!postinst.contains("restart weir.socket"));
    let postrm = read("postrm");
    assert!(postrm.contains("rm -rf /var/lib/weir"), "{postrm}");
    // prerm (remove) and postrm (purge) warn while daemon.json still points
    // at weir's socket; run their function on a daemon.json of each kind.
    for script in ["prerm", "postrm"] {
        let text = read(script);
        let func: String = text
            .lines()
            .skip_while(|l| !l.starts_with("warn_daemon_json()"))
            .take_while(|l| *l != "}")
            .chain(["}", "warn_daemon_json"])
            .collect::<Vec<_>>()
            .join("\n");
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("etc/docker")).unwrap();
        let warns = |daemon_json: &str| {
            std::fs::write(root.path().join("etc/docker/daemon.json"), daemon_json).unwrap();
            let out = run(Command::new("sh")
                .args(["-c", &func])
                .env("DPKG_ROOT", root.path()));
            String::from_utf8_lossy(&out.stderr).into_owned()
        };
        let ours = warns(&example);
        assert!(
            ours.contains("WARNING") && ours.contains("go nowhere"),
            "{script}: {ours}"
        );
        assert_eq!(warns("{\"log-driver\": \"journald\"}"), "", "{script}");
        assert!(
            text.contains("\n\twarn_daemon_json\n"),
            "{script} never calls it"
        );
    }
    assert!(postrm.contains("deluser --system"), "{postrm}");
    for script in ["postinst", "prerm", "postrm"] {
        run(Command::new("sh")
            .arg("-n")
            .arg(control.path().join(script)));
    }

    let lintian = Command::new("lintian")
        .args(["--no-tag-display-limit"])
        .arg(&deb)
        .output()
        .expect("lintian not found: run scripts/deps.sh");
    let report = String::from_utf8_lossy(&lintian.stdout);
    eprintln!("lintian:\n{report}");
    let errors: Vec<&str> = report.lines().filter(|l| l.starts_with("E:")).collect();
    assert!(errors.is_empty(), "lintian errors:\n{}", errors.join("\n"));
}

/// Purges weir from this machine when dropped, so a failed check leaves
/// nothing behind.
struct Installed;

impl Drop for Installed {
    fn drop(&mut self) {
        let _ = apt(&["purge", "-y", "weir"]);
    }
}

fn apt(args: &[&str]) -> Output {
    Command::new("flock")
        .args(["/tmp/apt.lock", "apt-get", "-q"])
        .args(args)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .output()
        .expect("cannot run apt-get")
}

fn user_exists(name: &str) -> bool {
    Command::new("getent")
        .args(["passwd", name])
        .output()
        .unwrap()
        .status
        .success()
}

#[test]
fn deb_installs_with_user_conffile_and_enabled_units_then_purges() {
    assert!(
        stdout(Command::new("id").arg("-u")).trim() == "0",
        "installing the .deb needs root (CI runs as root)"
    );
    let deb = deb();
    let daemon_json = Path::new("/etc/docker/daemon.json");
    let daemon_before = std::fs::read(daemon_json).ok();

    let deb_arg = deb.display().to_string();
    let out = apt(&["install", "-y", "--no-install-recommends", &deb_arg]);
    let _installed = Installed;
    let log = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "apt-get install failed:\n{log}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        log.contains("\"log-driver\": \"fluentd\""),
        "postinst prints the daemon.json lines:\n{log}"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !log.contains("adduser: Warning") && !stderr.contains("adduser: Warning"),
        "{log}{stderr}"
    );

    let version = stdout(Command::new("/usr/bin/weir").arg("--version"));
    assert!(version.starts_with("weir "), "{version}");
    run(Command::new("/usr/bin/weir").args(["check-config", "--quiet"]));
    assert!(user_exists("weir"));
    let groups = stdout(Command::new("id").args(["-nG", "weir"]));
    assert!(
        groups.split_whitespace().any(|g| g == "systemd-journal"),
        "{groups}"
    );
    // Secrets in the conffile: root writes it, group weir reads it.
    let mode = stdout(Command::new("stat").args(["-c", "%a %U:%G", "/etc/weir/weir.toml"]));
    assert_eq!(mode.trim(), "640 root:weir");
    let mode = stdout(Command::new("stat").args(["-c", "%a %U:%G", "/etc/weir/conf.d"]));
    assert_eq!(mode.trim(), "750 root:weir");
    let conffiles = stdout(Command::new("dpkg-query").args(["-W", "-f=${Conffiles}", "weir"]));
    assert!(conffiles.contains("/etc/weir/weir.toml"), "{conffiles}");
    for link in [
        "/etc/systemd/system/sockets.target.wants/weir.socket",
        "/etc/systemd/system/multi-user.target.wants/weir.service",
    ] {
        assert!(Path::new(link).exists(), "{link} not enabled");
    }
    assert_eq!(
        std::fs::read(daemon_json).ok(),
        daemon_before,
        "daemon.json changed"
    );

    // A local edit of the conffile survives reinstalling the package.
    let conf = Path::new("/etc/weir/weir.toml");
    let edited = format!(
        "{}\n# edited by the package test\n",
        std::fs::read_to_string(conf).unwrap()
    );
    std::fs::write(conf, &edited).unwrap();
    let out = Command::new("flock")
        .args(["/tmp/apt.lock", "dpkg", "--force-confold", "-i"])
        .arg(&deb)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(std::fs::read_to_string(conf).unwrap(), edited);

    // Purge: binary, config, state, user and unit links gone.
    std::fs::create_dir_all("/var/lib/weir/spool").unwrap();
    let out = apt(&["purge", "-y", "weir"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for gone in [
        "/usr/bin/weir",
        "/etc/weir/weir.toml",
        "/var/lib/weir",
        "/lib/systemd/system/weir.service",
        "/etc/systemd/system/sockets.target.wants/weir.socket",
        "/etc/systemd/system/multi-user.target.wants/weir.service",
    ] {
        assert!(!Path::new(gone).exists(), "{gone} left after purge");
    }
    assert!(!user_exists("weir"), "user weir left after purge");
}
