//! Opening a device target: a block device or a regular file, with
//! O_DIRECT, exclusivity, and the geometry the engine must respect.
#![allow(unsafe_code)]

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;

use crate::constants::{BLOCK_SIZE_BYTES, SECTOR_SIZE_BYTES_MAX};
use crate::error::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TargetKind {
    BlockDevice,
    File,
    Simulated,
}

/// An opened target and its geometry.
#[derive(Debug)]
pub(crate) struct Target {
    pub file: File,
    pub kind: TargetKind,
    pub size_bytes: u64,
    pub logical_block_size: u64,
    pub physical_block_size: u64,
}

nix::ioctl_read!(ioctl_blkgetsize64, 0x12, 114, u64);
nix::ioctl_read_bad!(ioctl_blksszget, libc::BLKSSZGET, libc::c_int);
nix::ioctl_read_bad!(ioctl_blkpbszget, libc::BLKPBSZGET, libc::c_uint);

/// Opens `path`, retrying for `busy_wait_ms` while it is busy (see
/// `OPEN_BUSY_WAIT_MS_MAX` for why a just-released device can look held).
pub(crate) fn open_target(path: &Path, read_only: bool, exclusive: bool, busy_wait_ms: u64) -> Result<Target> {
    let started = std::time::Instant::now();
    loop {
        match open_target_once(path, read_only, exclusive) {
            Err(Error::Busy { .. }) if started.elapsed() < std::time::Duration::from_millis(busy_wait_ms) => {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            other => return other,
        }
    }
}

fn open_target_once(path: &Path, read_only: bool, exclusive: bool) -> Result<Target> {
    let name = path.display().to_string();
    let meta = std::fs::metadata(path).map_err(|source| Error::Open { device: name.clone(), cause: source })?;
    let file_type = meta.file_type();
    let kind = if file_type.is_block_device() {
        TargetKind::BlockDevice
    } else if file_type.is_file() {
        TargetKind::File
    } else {
        return Err(Error::InvalidArgument(format!("{name}: not a block device or a regular file")));
    };
    let mut flags = libc::O_DIRECT | libc::O_CLOEXEC;
    if kind == TargetKind::BlockDevice && exclusive {
        // On a block device O_EXCL without O_CREAT means: fail with EBUSY
        // if it is mounted or another process holds it exclusively.
        flags |= libc::O_EXCL;
    }
    let file =
        std::fs::OpenOptions::new().read(true).write(!read_only).custom_flags(flags).open(path).map_err(|source| {
            match source.raw_os_error() {
                Some(libc::EBUSY) => Error::Busy {
                    device: name.clone(),
                    reason: "device is mounted or held open exclusively by another process (EBUSY)".to_owned(),
                },
                Some(libc::EINVAL) => Error::Open {
                    device: name.clone(),
                    cause: std::io::Error::new(
                        source.kind(),
                        "O_DIRECT is not supported by the file system holding this file (EINVAL)",
                    ),
                },
                _ => Error::Open { device: name.clone(), cause: source },
            }
        })?;

    if kind == TargetKind::File && exclusive {
        let lock = if read_only { libc::LOCK_SH } else { libc::LOCK_EX };
        // SAFETY: flock on a valid, owned descriptor; no memory is passed.
        let rc = unsafe { libc::flock(file.as_raw_fd(), lock | libc::LOCK_NB) };
        if rc != 0 {
            let err = std::io::Error::last_os_error();
            return Err(if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
                Error::Busy { device: name, reason: "file is in use by another shardnode process (locked)".to_owned() }
            } else {
                Error::Open { device: name, cause: err }
            });
        }
    }

    let (size_bytes, logical, physical) = match kind {
        TargetKind::BlockDevice => {
            let fd = file.as_raw_fd();
            let mut size = 0u64;
            let mut logical: libc::c_int = 0;
            let mut physical: libc::c_uint = 0;
            let ioctl_err = |what: &str, e: nix::Error| Error::Open {
                device: name.clone(),
                cause: std::io::Error::other(format!("{what} failed: {e}")),
            };
            // SAFETY: each ioctl writes one integer of the declared type
            // into the pointed-to local, on a valid descriptor.
            unsafe {
                ioctl_blkgetsize64(fd, &raw mut size).map_err(|e| ioctl_err("BLKGETSIZE64", e))?;
                ioctl_blksszget(fd, &raw mut logical).map_err(|e| ioctl_err("BLKSSZGET", e))?;
                ioctl_blkpbszget(fd, &raw mut physical).map_err(|e| ioctl_err("BLKPBSZGET", e))?;
            }
            (size, logical as u64, u64::from(physical).max(logical as u64))
        }
        // Files: the page size is the alignment every Linux file system
        // accepts for O_DIRECT, and the unit its page cache would write.
        TargetKind::File | TargetKind::Simulated => (meta.len(), BLOCK_SIZE_BYTES, BLOCK_SIZE_BYTES),
    };
    if !logical.is_power_of_two() || logical > SECTOR_SIZE_BYTES_MAX {
        return Err(Error::InvalidArgument(format!(
            "{name}: logical block size {logical} is not supported (must be a power of two up to {SECTOR_SIZE_BYTES_MAX})"
        )));
    }
    Ok(Target { file, kind, size_bytes, logical_block_size: logical, physical_block_size: physical })
}
