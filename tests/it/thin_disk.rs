//! A thin-provisioned disk for tests: what a spool on storage that runs out
//! of space underneath the filesystem sees (a failing fdatasync).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// A thin-provisioned disk: ext4 on a loop device whose backing file lives
/// on a tmpfs smaller than the volume. Writes land in the page cache; once
/// the backing tmpfs is full, writeback of file data fails and fdatasync
/// reports it, as on a thin LVM pool or network storage out of space. The
/// journal is on a second loop device with room, so the filesystem stays
/// writable and a later fdatasync succeeds without the lost pages (what
/// the spool must not believe). Unmounted and detached on drop.
pub struct ThinDisk {
    _dir: tempfile::TempDir,
    pub backing: PathBuf,
    pub image: PathBuf,
    journal: PathBuf,
    loopdev: String,
    journal_dev: String,
    pub mnt: PathBuf,
}

pub fn run(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?} failed (these tests need root and loop devices; CI has both): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Free bytes of the filesystem holding `path`.
fn free_bytes(path: &Path) -> u64 {
    run("df", &["-B1", "--output=avail", path.to_str().unwrap()])
        .lines()
        .last()
        .and_then(|l| l.trim().parse().ok())
        .expect("df's output")
}

fn grow(backing: &Path) {
    run(
        "mount",
        &["-o", "remount,size=1g", backing.to_str().unwrap()],
    );
}

fn attach(image: &Path) -> String {
    run("losetup", &["-f", "--show", image.to_str().unwrap()])
}

/// Attaches the data image with requests of one page at most: the loop
/// driver reports a short write into its backing file (the tmpfs has room
/// for part of a request) as a success, so larger requests would make this
/// test disk lose data whose fdatasync succeeded, which no program above
/// it can notice. A one-page request is written whole or fails.
fn attach_data(image: &Path) -> String {
    let dev = attach(image);
    let name = dev.trim_start_matches("/dev/");
    std::fs::write(format!("/sys/block/{name}/queue/max_sectors_kb"), "4")
        .expect("limiting the loop device's request size");
    dev
}

impl ThinDisk {
    pub fn new(backing_size: &str, volume_size: &str) -> ThinDisk {
        let dir = tempfile::tempdir().unwrap();
        let backing = dir.path().join("backing");
        let mnt = dir.path().join("mnt");
        std::fs::create_dir(&backing).unwrap();
        std::fs::create_dir(&mnt).unwrap();
        let b = backing.to_str().unwrap();
        run(
            "mount",
            &[
                "-t",
                "tmpfs",
                "-o",
                &format!("size={backing_size}"),
                "tmpfs",
                b,
            ],
        );
        let journal = dir.path().join("journal.img");
        let image = backing.join("disk.img");
        run("truncate", &["-s", "16m", journal.to_str().unwrap()]);
        run("truncate", &["-s", volume_size, image.to_str().unwrap()]);
        run(
            "mke2fs",
            &[
                "-q",
                "-O",
                "journal_dev",
                "-b",
                "4096",
                journal.to_str().unwrap(),
            ],
        );
        let journal_dev = attach(&journal);
        let loopdev = attach_data(&image);
        let jopt = format!("device={journal_dev}");
        run(
            "mkfs.ext4",
            &["-q", "-F", "-b", "4096", "-J", &jopt, &loopdev],
        );
        let disk = ThinDisk {
            _dir: dir,
            backing,
            image,
            journal,
            loopdev,
            journal_dev,
            mnt,
        };
        disk.mount();
        disk
    }

    fn mount(&self) {
        // `errors=continue`: a failed data write is reported to the writer
        // (fdatasync), not turned into a read-only remount. `noinit_itable`:
        // no background zeroing of inode tables filling the backing store.
        let opts = format!(
            "errors=continue,noinit_itable,journal_path={}",
            self.journal_dev
        );
        run(
            "mount",
            &["-o", &opts, &self.loopdev, self.mnt.to_str().unwrap()],
        );
    }

    /// Free bytes left in the backing store.
    pub fn backing_free(&self) -> u64 {
        free_bytes(&self.backing)
    }

    /// Gives the backing store room, as an admin growing the pool would: from
    /// then on a retried fdatasync succeeds, without the pages it lost.
    pub fn grow(&self) {
        grow(&self.backing);
    }

    /// [`ThinDisk::grow`] on a thread, `after` the backing store is full
    /// (less than a page free: writeback fails).
    pub fn grow_when_full(&self, after: Duration) -> std::thread::JoinHandle<()> {
        let backing = self.backing.clone();
        std::thread::spawn(move || {
            let start = Instant::now();
            while free_bytes(&backing) >= 4096 {
                assert!(
                    start.elapsed() < Duration::from_secs(300),
                    "the disk never filled"
                );
                std::thread::sleep(Duration::from_millis(10));
            }
            std::thread::sleep(after);
            grow(&backing);
        })
    }

    /// Unmounts and mounts again from the images: afterwards the files hold
    /// what the disk really has, not what the page cache had.
    pub fn remount(&mut self) {
        run("umount", &[self.mnt.to_str().unwrap()]);
        run("losetup", &["-d", &self.loopdev, &self.journal_dev]);
        self.journal_dev = attach(&self.journal);
        self.loopdev = attach_data(&self.image);
        self.mount();
    }
}

impl Drop for ThinDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.mnt).status();
        let _ = Command::new("losetup")
            .args(["-d", &self.loopdev, &self.journal_dev])
            .status();
        let _ = Command::new("umount").arg("-l").arg(&self.backing).status();
    }
}
