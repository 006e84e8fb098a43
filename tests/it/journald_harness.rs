//! A real `systemd-journald`, started by a test in a journald namespace of its
//! own, and the real clients that write to it.
//!
//! `systemd-journald NAME` runs standalone as root (no systemd as PID 1
//! needed) once `/run/systemd/journal/` exists. It reads
//! `/etc/systemd/journald@NAME.conf` (written here: no rate limit, persistent
//! storage, plus what a test adds), listens on `/run/systemd/journal.NAME/`
//! (`socket` native, `stdout` streams, `dev-log` syslog, `io.systemd.journal`
//! varlink for `journalctl --rotate`) and writes
//! `/var/log/journal/<machine-id>.NAME/`. Several tests run side by side,
//! each on its own namespace.
//!
//! Clients that hard-code `/run/systemd/journal/` (`systemd-cat`,
//! `logger --journald`, weir's own `tracing-journald` log) are run by
//! [`Journald::command`] in a private mount namespace (`unshare -m`) where the
//! namespace's socket directory is bind-mounted over `/run/systemd/journal`.
//!
//! A namespaced journald exits after 30 s without clients; the harness keeps
//! a stdout stream connected so it lives as long as the test. Dropping the
//! [`Journald`] kills it and removes its sockets, files and config, also when
//! the test panics.

#![allow(dead_code)]

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use crate::common::wait_for;

const JOURNALD: &str = "/lib/systemd/systemd-journald";

pub struct Journald {
    pub namespace: String,
    extra_conf: String,
    child: Option<Child>,
    keepalive: Option<UnixStream>,
    machine_id: String,
    /// A file holding a fake boot id, bind-mounted over
    /// `/proc/sys/kernel/random/boot_id` for journald (see [`Journald::restart_as_boot`]).
    boot_id_file: Option<tempfile::NamedTempFile>,
}

impl Journald {
    /// Starts journald in a new namespace whose name contains `tag`.
    pub fn start(tag: &str) -> Journald {
        Journald::start_with(tag, "")
    }

    /// Like [`Journald::start`], with extra `[Journal]` settings (e.g. `SystemMaxFileSize=`).
    pub fn start_with(tag: &str, extra_conf: &str) -> Journald {
        static N: AtomicU32 = AtomicU32::new(0);
        let namespace = format!(
            "weirt-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        assert!(
            Path::new(JOURNALD).exists(),
            "{JOURNALD} is missing: install systemd (scripts/deps.sh); journal tests need a real journald"
        );
        std::fs::create_dir_all("/run/systemd/journal")
            .expect("creating /run/systemd/journal (journal tests must run as root)");
        let machine_id = std::fs::read_to_string("/etc/machine-id")
            .expect("/etc/machine-id")
            .trim()
            .to_owned();
        let mut j = Journald {
            namespace,
            extra_conf: extra_conf.to_owned(),
            child: None,
            keepalive: None,
            machine_id,
            boot_id_file: None,
        };
        std::fs::write(
            j.conf_path(),
            format!(
                "[Journal]\nStorage=persistent\nRateLimitIntervalSec=0\nRateLimitBurst=0\n{}\n",
                j.extra_conf
            ),
        )
        .expect("writing the journald namespace config");
        j.spawn();
        j
    }

    fn spawn(&mut self) {
        let mut cmd = match &self.boot_id_file {
            None => Command::new(JOURNALD),
            Some(file) => {
                // journald stamps `_BOOT_ID` from this file: a private mount
                // namespace where it reads another id is a reboot as far as
                // the journal can tell.
                let mut c = Command::new("unshare");
                c.args(["-m", "--propagation", "private", "sh", "-c"])
                    .arg(r#"mount --bind "$0" /proc/sys/kernel/random/boot_id && exec "$@""#)
                    .arg(file.path())
                    .arg(JOURNALD);
                c
            }
        };
        let child = cmd
            .arg(&self.namespace)
            .env("SYSTEMD_LOG_LEVEL", "warning")
            .env("SYSTEMD_LOG_TARGET", "console")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting systemd-journald");
        self.child = Some(child);
        let stdout = self.socket_dir().join("stdout");
        let stream = wait_for("journald's stdout socket", Duration::from_secs(10), || {
            UnixStream::connect(&stdout).ok()
        });
        self.keepalive = Some(stream);
        // Native socket ready too (a datagram socket: connecting is the check).
        let native = self.socket();
        wait_for("journald's native socket", Duration::from_secs(10), || {
            std::os::unix::net::UnixDatagram::unbound()
                .ok()?
                .connect(&native)
                .ok()
        });
    }

    /// Stops journald (SIGTERM, as systemd would) and starts it again.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// Stops journald and starts it again as if the machine had rebooted:
    /// its new entries carry `boot_id` (32 hex digits) as `_BOOT_ID`.
    pub fn restart_as_boot(&mut self, boot_id: &str) {
        assert_eq!(boot_id.len(), 32, "a boot id is 32 hex digits");
        let dashed = format!(
            "{}-{}-{}-{}-{}\n",
            &boot_id[..8],
            &boot_id[8..12],
            &boot_id[12..16],
            &boot_id[16..20],
            &boot_id[20..]
        );
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(dashed.as_bytes()).unwrap();
        self.stop();
        self.boot_id_file = Some(file);
        self.spawn();
    }

    /// The pid of the running journald (for reading its `/proc` files).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("journald running").id()
    }

    fn stop(&mut self) {
        self.keepalive = None;
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            if wait_timeout(&mut child, Duration::from_secs(5)).is_none() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }

    fn conf_path(&self) -> PathBuf {
        PathBuf::from(format!("/etc/systemd/journald@{}.conf", self.namespace))
    }

    /// `/run/systemd/journal.NAME`.
    pub fn socket_dir(&self) -> PathBuf {
        PathBuf::from(format!("/run/systemd/journal.{}", self.namespace))
    }

    /// The native protocol socket.
    pub fn socket(&self) -> PathBuf {
        self.socket_dir().join("socket")
    }

    /// Where journald writes this namespace's files.
    pub fn journal_dir(&self) -> PathBuf {
        PathBuf::from(format!(
            "/var/log/journal/{}.{}",
            self.machine_id, self.namespace
        ))
    }

    /// `program` run with `/run/systemd/journal` pointing at this namespace.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("unshare");
        c.args(["-m", "--propagation", "private", "sh", "-c"])
            .arg(r#"mount --bind "$0" /run/systemd/journal && exec "$@""#)
            .arg(self.socket_dir())
            .arg(program);
        c
    }

    /// Writes one line per `lines` item with `systemd-cat -t identifier`.
    pub fn systemd_cat(&self, identifier: &str, priority: &str, lines: &[&str]) {
        let mut child = self
            .command("systemd-cat")
            .args(["-t", identifier, "-p", priority])
            .stdin(Stdio::piped())
            .spawn()
            .expect("systemd-cat");
        let mut stdin = child.stdin.take().unwrap();
        for l in lines {
            writeln!(stdin, "{l}").unwrap();
        }
        drop(stdin);
        assert!(child.wait().unwrap().success(), "systemd-cat failed");
    }

    /// `logger --journald`: one entry of `FIELD=value` lines, native protocol.
    pub fn logger_journald(&self, fields: &[(&str, &str)]) {
        let mut child = self
            .command("logger")
            .arg("--journald")
            .stdin(Stdio::piped())
            .spawn()
            .expect("logger");
        let mut stdin = child.stdin.take().unwrap();
        for (k, v) in fields {
            writeln!(stdin, "{k}={v}").unwrap();
        }
        drop(stdin);
        assert!(child.wait().unwrap().success(), "logger --journald failed");
    }

    /// `logger -t tag -p prio message` to the namespace's syslog socket.
    pub fn logger_syslog(&self, tag: &str, priority: &str, message: &str) {
        let st = Command::new("logger")
            .arg("-u")
            .arg(self.socket_dir().join("dev-log"))
            .args(["-t", tag, "-p", priority, "--", message])
            .status()
            .expect("logger");
        assert!(st.success(), "logger failed");
    }

    /// One entry in the native protocol, binary-safe encoding for every field
    /// (`NAME\n<u64 le length><bytes>\n`), sent as one datagram by a
    /// separate process (python3), so that its `_PID` is not the test's.
    pub fn send_native(&self, fields: &[(&str, &[u8])]) {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("entry");
        std::fs::write(&file, native_datagram(fields)).unwrap();
        let st = Command::new("python3")
            .args([
                "-c",
                "import socket,sys\ns=socket.socket(socket.AF_UNIX,socket.SOCK_DGRAM)\ns.setsockopt(socket.SOL_SOCKET,socket.SO_SNDBUF,8<<20)\ns.sendto(open(sys.argv[1],'rb').read(),sys.argv[2])",
            ])
            .arg(&file)
            .arg(self.socket())
            .status()
            .expect("python3");
        assert!(st.success(), "native datagram not sent");
    }

    /// Sends a native entry from this very process (its `_PID` is the test's).
    pub fn send_native_from_here(&self, fields: &[(&str, &[u8])]) {
        let s = std::os::unix::net::UnixDatagram::unbound().unwrap();
        s.send_to(&native_datagram(fields), self.socket())
            .expect("native datagram");
    }

    pub fn journalctl(&self, args: &[&str]) -> Output {
        let out = Command::new("journalctl")
            .arg(format!("--namespace={}", self.namespace))
            .args(["--no-pager"])
            .args(args)
            .output()
            .expect("journalctl");
        assert!(
            out.status.success(),
            "journalctl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// Entries as JSON objects (`journalctl -o json`), optionally matching `FIELD=value`.
    pub fn entries(&self, matches: &[&str]) -> Vec<serde_json::Value> {
        let mut args = vec!["-o", "json", "--all"];
        args.extend_from_slice(matches);
        let out = self.journalctl(&args);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).expect("journalctl json"))
            .collect()
    }

    /// Waits until journald has written `n` entries matching `matches`.
    pub fn wait_entries(&self, n: usize, matches: &[&str]) -> Vec<serde_json::Value> {
        wait_for(
            &format!("{n} journal entries matching {matches:?}"),
            Duration::from_secs(20),
            || {
                let e = self.entries(matches);
                (e.len() >= n).then_some(e)
            },
        )
    }

    /// Archives the active files (`journalctl --rotate`), then deletes all
    /// archived ones: every entry written so far is gone.
    pub fn rotate_and_vacuum(&self) {
        self.journalctl(&["--rotate"]);
        self.journalctl(&["--vacuum-files=1"]);
    }
}

impl Drop for Journald {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(self.socket_dir());
        let _ = std::fs::remove_dir_all(self.journal_dir());
        let _ = std::fs::remove_dir_all(format!(
            "/run/log/journal/{}.{}",
            self.machine_id, self.namespace
        ));
        let _ = std::fs::remove_file(self.conf_path());
    }
}

/// The native protocol's binary-safe encoding of one entry.
pub fn native_datagram(fields: &[(&str, &[u8])]) -> Vec<u8> {
    let mut d = Vec::new();
    for (k, v) in fields {
        d.extend_from_slice(k.as_bytes());
        d.push(b'\n');
        d.extend_from_slice(&(v.len() as u64).to_le_bytes());
        d.extend_from_slice(v);
        d.push(b'\n');
    }
    d
}

/// Waits for `child` up to `d`; `None` if it is still running.
pub fn wait_timeout(child: &mut Child, d: Duration) -> Option<std::process::ExitStatus> {
    let end = std::time::Instant::now() + d;
    loop {
        if let Ok(Some(st)) = child.try_wait() {
            return Some(st);
        }
        if std::time::Instant::now() > end {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
