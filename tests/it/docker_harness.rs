//! A private Docker daemon for tests: Debian's `dockerd` on its own temp
//! data root, exec root and socket (so several tests and agents can run one
//! each), with an image imported from `busybox-static`.
//!
//! ```ignore
//! let docker = Dockerd::start();
//! docker.run(&["--rm", "--log-driver", "fluentd", ..., IMAGE, "sh", "-c", "echo hi"]);
//! ```
//!
//! Dropping the guard removes the containers, stops dockerd (which stops its
//! containerd) and kills both if they linger, even when the test failed.
//! There is no fallback: if dockerd cannot start, the test fails and says why.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The image every test container runs: busybox and its applets.
pub const IMAGE: &str = "weir-test:1";

const DOCKERD: &str = "/usr/sbin/dockerd";
/// The daemon's own client (not a newer one that may be on PATH).
const DOCKER: &str = "/usr/bin/docker";

pub struct Dockerd {
    dir: tempfile::TempDir,
    child: Child,
    socket: PathBuf,
}

impl Dockerd {
    /// Starts dockerd, waits until it answers, and imports [`IMAGE`].
    pub fn start() -> Dockerd {
        // Short paths: containerd's sockets live under the exec root and unix
        // socket paths are limited to 108 bytes.
        let dir = tempfile::Builder::new()
            .prefix("weir-dockerd.")
            .tempdir_in("/tmp")
            .unwrap();
        let d = dir.path();
        std::fs::write(d.join("daemon.json"), "{}").unwrap();
        let log = std::fs::File::create(d.join("dockerd.log")).unwrap();
        let socket = d.join("docker.sock");
        let child = Command::new(DOCKERD)
            .arg("--config-file")
            .arg(d.join("daemon.json"))
            .args(["--iptables=false", "--bridge=none", "--storage-driver=vfs"])
            .arg("--data-root")
            .arg(d.join("data"))
            .arg("--exec-root")
            .arg(d.join("exec"))
            .arg("--pidfile")
            .arg(d.join("docker.pid"))
            .arg("-H")
            .arg(format!("unix://{}", socket.display()))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {DOCKERD} ({e}); install docker.io (scripts/deps.sh) and run as root"));
        let mut docker = Dockerd { dir, child, socket };
        let start = Instant::now();
        loop {
            if docker.docker(&["version"]).status.success() {
                break;
            }
            if let Ok(Some(status)) = docker.child.try_wait() {
                panic!("dockerd exited ({status}): {}", docker.log());
            }
            if start.elapsed() > Duration::from_secs(60) {
                panic!("dockerd did not answer within 60s: {}", docker.log());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        docker.import_busybox();
        docker
    }

    /// The daemon's log so far (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("dockerd.log")).unwrap_or_default()
    }

    /// A temp directory that lives as long as the daemon.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Runs the docker client against this daemon.
    pub fn docker(&self, args: &[&str]) -> Output {
        Command::new(DOCKER)
            .arg("-H")
            .arg(format!("unix://{}", self.socket.display()))
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {DOCKER}: {e}"))
    }

    /// Starts the docker client without waiting for it.
    pub fn spawn(&self, args: &[&str]) -> Child {
        Command::new(DOCKER)
            .arg("-H")
            .arg(format!("unix://{}", self.socket.display()))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {DOCKER}: {e}"))
    }

    /// Runs the docker client; panics with its stderr unless it succeeds.
    pub fn docker_ok(&self, args: &[&str]) -> String {
        let out = self.docker(args);
        assert!(
            out.status.success(),
            "docker {args:?} failed: {}\n--- dockerd log ---\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `docker run ARGS` (foreground unless ARGS has `-d`); returns stdout.
    pub fn run(&self, args: &[&str]) -> String {
        let mut all = vec!["run", "--network", "none"];
        all.extend_from_slice(args);
        self.docker_ok(&all)
    }

    /// Imports a rootfs of busybox-static and its applet links as [`IMAGE`].
    fn import_busybox(&self) {
        let rootfs = self.dir.path().join("rootfs");
        let bin = rootfs.join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        std::fs::copy("/bin/busybox", bin.join("busybox"))
            .expect("/bin/busybox (install busybox-static: scripts/deps.sh)");
        let list = Command::new("/bin/busybox").arg("--list").output().unwrap();
        for applet in String::from_utf8_lossy(&list.stdout).lines() {
            if applet != "busybox" {
                std::os::unix::fs::symlink("busybox", bin.join(applet)).unwrap();
            }
        }
        let mut tar = Command::new("tar")
            .arg("-C")
            .arg(&rootfs)
            .args(["-c", "."])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let out = Command::new(DOCKER)
            .arg("-H")
            .arg(format!("unix://{}", self.socket.display()))
            .args(["import", "-", IMAGE])
            .stdin(tar.stdout.take().unwrap())
            .output()
            .unwrap();
        assert!(
            tar.wait().unwrap().success(),
            "tar of the busybox rootfs failed"
        );
        assert!(
            out.status.success(),
            "docker import failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn pid_file(&self, rel: &str) -> Option<i32> {
        std::fs::read_to_string(self.dir.path().join(rel))
            .ok()?
            .trim()
            .parse()
            .ok()
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        let ids = self.docker(&["ps", "-aq"]);
        let ids = String::from_utf8_lossy(&ids.stdout).into_owned();
        let ids: Vec<&str> = ids.split_whitespace().collect();
        if !ids.is_empty() {
            let mut args = vec!["rm", "-f"];
            args.extend(ids);
            let _ = self.docker(&args);
        }
        let containerd = self.pid_file("exec/containerd/containerd.pid");
        // SIGTERM: dockerd stops its containerd and cleans up its mounts.
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(15) {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Only if that pid is still a containerd (never a reused pid).
        let alive = |pid: i32| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|c| c.trim() == "containerd")
        };
        if let Some(pid) = containerd.filter(|p| alive(*p)) {
            let _ = Command::new("kill")
                .args(["-9", &pid.to_string()])
                .stderr(Stdio::null())
                .status();
        }
    }
}
