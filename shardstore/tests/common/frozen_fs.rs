//! A file system whose writes can be made to wait, for tests of I/O that
//! does not complete: an ext4 file system on a loop device, frozen with
//! `fsfreeze` (a write to a frozen file system waits until it is thawed,
//! as an I/O to a hung drive waits for an answer). Needs root. Shared by
//! `shardstore/tests/{io_stall,commit_in_flight}.rs` and
//! `agent/tests/io_stall.rs`.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A loop-mounted ext4 file system, thawed, unmounted and detached however
/// the test ends, and then its directory removed.
pub struct Mounted {
    loop_dev: String,
    pub mnt: PathBuf,
    /// The test's directory: the image, the mount point, and whatever else
    /// the test keeps there (read by the agent's test only).
    #[allow(dead_code)]
    pub dir: tempfile::TempDir,
}

impl Mounted {
    /// For `test`: a 256 MiB ext4 file system mounted in a directory of
    /// its own; `None` (the test skips) when its prerequisites are missing
    /// (`prerequisites`).
    pub fn for_test(test: &str) -> Option<Mounted> {
        prerequisites(test).then(|| Mounted::new(tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap()))
    }

    fn new(dir: tempfile::TempDir) -> Mounted {
        let backing = dir.path().join("fs.img");
        std::fs::File::create(&backing).unwrap().set_len(256 << 20).unwrap();
        let out = Command::new("losetup").args(["--find", "--show"]).arg(&backing).output().unwrap();
        assert!(out.status.success(), "losetup: {}", String::from_utf8_lossy(&out.stderr));
        let loop_dev = String::from_utf8(out.stdout).unwrap().trim().to_owned();
        let mnt = dir.path().join("mnt");
        std::fs::create_dir(&mnt).unwrap();
        let mounted = Mounted { loop_dev, mnt, dir };
        run("mkfs.ext4", &["-q", "-F", &mounted.loop_dev]);
        run("mount", &[&mounted.loop_dev, mounted.mnt.to_str().unwrap()]);
        mounted
    }

    /// Freezes (writes wait) or thaws the file system.
    pub fn freeze(&self, on: bool) {
        run("fsfreeze", &[if on { "--freeze" } else { "--unfreeze" }, self.mnt.to_str().unwrap()]);
    }

    /// A guard that thaws the file system when dropped. Declared after
    /// whatever waits for the file system's I/O when dropped (an agent
    /// process, which cannot exit while a write of its is held), it is
    /// dropped first when a failed assertion unwinds the test: without it,
    /// the agent's drop would wait forever for a process the frozen file
    /// system holds, and the test would hang instead of failing.
    #[allow(dead_code)]
    pub fn thaw_on_drop(&self) -> Thaw<'_> {
        Thaw(self)
    }
}

pub struct Thaw<'a>(&'a Mounted);

impl Drop for Thaw<'_> {
    fn drop(&mut self) {
        let _ = Command::new("fsfreeze").args(["--unfreeze", self.0.mnt.to_str().unwrap()]).output();
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let mnt = self.mnt.to_str().unwrap();
        let _ = Command::new("fsfreeze").args(["--unfreeze", mnt]).output();
        // The kernel lets go of a closed io_uring's files asynchronously:
        // the file system may be busy for a moment after the store closed.
        // Lazily at last (should a failed test's store thread still hold
        // a file): the loop device then detaches itself once it is free.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while !Command::new("umount").arg(mnt).output().is_ok_and(|o| o.status.success()) {
            if std::time::Instant::now() > deadline {
                let _ = Command::new("umount").args(["--lazy", mnt]).output();
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let _ = Command::new("losetup").args(["-d", &self.loop_dev]).output();
    }
}

pub fn run(cmd: &str, args: &[&str]) {
    let out = Command::new(cmd).args(args).output().unwrap_or_else(|e| panic!("{cmd}: {e}"));
    assert!(out.status.success(), "{cmd} {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// Whether the test can run: as root, with mkfs.ext4 and fsfreeze
/// (installed by `scripts/ensure-tool` when missing). Otherwise it says it
/// skips, and under CI (`CI` set), where every prerequisite must be
/// present, fails.
fn prerequisites(test: &str) -> bool {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/ensure-tool");
    let have = |cmd: &str, pkg: &str| Command::new(script).args([cmd, pkg]).status().is_ok_and(|s| s.success());
    let why = if !nix::unistd::Uid::effective().is_root() {
        "needs root to mount and freeze a file system"
    } else if !have("mkfs.ext4", "e2fsprogs") || !have("fsfreeze", "util-linux") || !have("losetup", "mount") {
        "mkfs.ext4, fsfreeze or losetup missing and not installable here"
    } else {
        return true;
    };
    assert!(std::env::var_os("CI").is_none(), "prerequisite missing under CI: {test}: {why}");
    eprintln!("SKIPPED: {test}: {why}");
    false
}

/// A store device file of `size` bytes at `path`, formatted with 4 MiB
/// extents.
pub fn formatted_file(path: &Path, size: u64) {
    use shardstore::device::{self, OpenOptions};
    use shardstore::format::{format, FormatOptions};
    std::fs::File::create(path).unwrap().set_len(size).unwrap();
    let mut dev = device::open(path, &OpenOptions { queue_depth: 4, ..OpenOptions::default() }).unwrap();
    format(&mut dev, &FormatOptions { extent_size_bytes: Some(4 << 20), ..FormatOptions::default() }).unwrap();
}
