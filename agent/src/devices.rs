//! The devices this agent serves: opening each one, and creating the
//! default file-backed devices on a first run.
//!
//! The agent formats only files it creates itself, under a temporary name
//! renamed into place once formatted, so a crash mid-creation leaves
//! nothing that looks like a device. A configured device is never
//! formatted: if it is not a shardnode device the error says how to format it.

use std::path::{Path, PathBuf};

use anyhow::Context;
use shardstore::device::{self, OpenOptions};
use shardstore::format::{format, FormatOptions};
use shardstore::superblock::{self, Superblock};

use crate::config::{Config, DEFAULT_DEVICE_COUNT};

/// How long a device that is busy at start-up is waited for. After a crash
/// (SIGKILL) the kernel finishes the dead process's in-flight I/O and tears
/// down its io_uring asynchronously; until then its registered file still
/// holds the O_EXCL claim or flock, and a restart by systemd must not fail
/// on that.
pub const DEVICE_BUSY_WAIT_MS_MAX: u64 = 10_000;

/// One device and how it fared.
#[derive(Debug)]
pub enum DeviceState {
    Open { dev: Box<shardstore::device::uring::UringDevice>, superblock: Superblock },
    Failed { error: String },
}

#[derive(Debug)]
pub struct Device {
    pub path: PathBuf,
    pub state: DeviceState,
}

/// The devices to serve: the configured ones, or the default files.
pub fn device_paths(config: &Config) -> anyhow::Result<Vec<PathBuf>> {
    if !config.devices.is_empty() {
        return Ok(config.devices.clone());
    }
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("{}: cannot create data directory", config.data_dir.display()))?;
    (0..DEFAULT_DEVICE_COUNT)
        .map(|i| {
            let path = config.data_dir.join(format!("dev{i}.img"));
            if !path.exists() {
                create_default_device(&path, config.default_device_size_bytes)?;
            }
            Ok(path)
        })
        .collect()
}

fn create_default_device(path: &Path, size: u64) -> anyhow::Result<()> {
    let tmp = path.with_extension("img.tmp");
    let _ = std::fs::remove_file(&tmp);
    let file = std::fs::File::create(&tmp).with_context(|| format!("{}: cannot create", tmp.display()))?;
    file.set_len(size).with_context(|| format!("{}: cannot size", tmp.display()))?;
    drop(file);
    {
        let mut dev = device::open(&tmp, &OpenOptions { queue_depth: 4, ..OpenOptions::default() })?;
        let sb = format(&mut dev, &FormatOptions::default())?;
        tracing::info!(device = %path.display(), uuid = %superblock::format_uuid(&sb.device_uuid), "created and formatted default device");
    }
    std::fs::rename(&tmp, path).with_context(|| format!("{}: cannot rename into place", path.display()))?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir).and_then(|d| d.sync_all()).ok();
    }
    Ok(())
}

/// Opens one device for serving: superblock open with repair, then a new
/// version with the clean-shutdown flag cleared (the device is in use).
pub fn open_device(path: &Path) -> Device {
    let result = (|| -> anyhow::Result<DeviceState> {
        let options = OpenOptions { busy_wait_ms: DEVICE_BUSY_WAIT_MS_MAX, ..OpenOptions::default() };
        let mut dev = Box::new(device::open(path, &options)?);
        let opened = superblock::open(dev.as_mut(), true).map_err(|e| match e {
            shardstore::Error::NotFormatted { .. } => anyhow::anyhow!(
                "{}: not a shardnode device; the agent never formats a configured device: run `shardctl format {}` first",
                path.display(),
                path.display()
            ),
            other => other.into(),
        })?;
        if !opened.repaired.is_empty() {
            tracing::warn!(device = %path.display(), copies = ?opened.repaired, "repaired superblock copies");
        }
        if !opened.superblock.clean_shutdown {
            tracing::warn!(device = %path.display(), "device was not shut down cleanly");
        }
        let superblock = superblock::commit(dev.as_mut(), &opened.superblock, |sb| sb.clean_shutdown = false)?;
        Ok(DeviceState::Open { dev, superblock })
    })();
    let state = result.unwrap_or_else(|e| DeviceState::Failed { error: format!("{e:#}") });
    Device { path: path.to_owned(), state }
}

/// Marks an open device cleanly shut down.
pub fn close_device(device: &mut Device) -> anyhow::Result<()> {
    if let DeviceState::Open { dev, superblock } = &mut device.state {
        *superblock = superblock::commit(dev.as_mut(), superblock, |sb| sb.clean_shutdown = true)?;
    }
    Ok(())
}
