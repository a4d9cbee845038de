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
use shardstore::store::thread::{self as store_thread, StoreHandle};
use shardstore::superblock;

use crate::config::Config;

/// How long a device that is busy at start-up is waited for. After a crash
/// (SIGKILL) the kernel finishes the dead process's in-flight I/O and tears
/// down its io_uring asynchronously; until then its registered file still
/// holds the O_EXCL claim or flock, and a restart by systemd must not fail
/// on that.
pub const DEVICE_BUSY_WAIT_MS_MAX: u64 = 10_000;

/// One device and how it fared.
#[derive(Debug)]
pub enum DeviceState {
    /// Served by its store thread.
    Open {
        store: StoreHandle,
        opened_clean: bool,
    },
    Failed {
        error: String,
    },
}

#[derive(Debug)]
pub struct Device {
    pub path: PathBuf,
    pub state: DeviceState,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// The devices to serve: the configured ones, or the default files.
pub fn device_paths(config: &Config) -> anyhow::Result<Vec<PathBuf>> {
    if !config.devices.is_empty() {
        return Ok(config.devices.clone());
    }
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("{}: cannot create data directory", config.data_dir.display()))?;
    (0..config.default_device_count.max(1))
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

/// How the agent's devices are driven (`health.io_stall_ms`,
/// `limits.write_piece_bytes`, `limits.write_pieces_with_reads`).
#[derive(Debug, Clone, Copy)]
pub struct IoSettings {
    pub stall_after_ms: u64,
    pub write_piece_bytes: u64,
    pub write_pieces_with_reads: u32,
}

impl IoSettings {
    pub fn of(config: &crate::config::Config) -> IoSettings {
        IoSettings {
            stall_after_ms: config.health.io_stall_ms,
            write_piece_bytes: config.limits.write_piece_bytes,
            write_pieces_with_reads: config.limits.write_pieces_with_reads,
        }
    }
}

/// Opens one device for serving: superblock open with repair, recovery of
/// its store, and a store thread to serve it. The store marks the device in
/// use (clean-shutdown flag cleared) and records a clean shutdown on close.
/// Opens a device on its store thread, its scrubber and read cache
/// configured with `settings` before the thread serves anything.
pub fn open_device(path: &Path, settings: store_thread::ThreadSettings, io: IoSettings) -> Device {
    let result = (|| -> anyhow::Result<(StoreHandle, std::thread::JoinHandle<()>, bool)> {
        let options = OpenOptions {
            busy_wait_ms: DEVICE_BUSY_WAIT_MS_MAX,
            stall_after_ms: io.stall_after_ms,
            write_piece_bytes: io.write_piece_bytes,
            write_pieces_with_reads: io.write_pieces_with_reads,
            ..OpenOptions::default()
        };
        let dev = device::open(path, &options)?;
        let (store, thread) = store_thread::spawn_with(Box::new(dev), settings).map_err(|e| match e {
            shardstore::Error::NotFormatted { .. } => anyhow::anyhow!(
                "{}: not a shardnode device; the agent never formats a configured device: run `shardctl format {}` first",
                path.display(),
                path.display()
            ),
            other => other.into(),
        })?;
        let opened_clean = store.opened_clean();
        Ok((store, thread, opened_clean))
    })();
    match result {
        Ok((store, thread, opened_clean)) => {
            if !opened_clean {
                tracing::warn!(device = %path.display(), "device was not shut down cleanly; recovered from its log");
            }
            Device { path: path.to_owned(), state: DeviceState::Open { store, opened_clean }, thread: Some(thread) }
        }
        Err(e) => {
            Device { path: path.to_owned(), state: DeviceState::Failed { error: format!("{e:#}") }, thread: None }
        }
    }
}

/// Commits what is queued, checkpoints, records a clean shutdown and stops
/// the device's store thread.
pub fn close_device(device: &mut Device) -> anyhow::Result<()> {
    if let DeviceState::Open { store, .. } = &device.state {
        store.close()?;
    }
    if let Some(thread) = device.thread.take() {
        thread.join().map_err(|_| anyhow::anyhow!("{}: the store thread panicked", device.path.display()))?;
    }
    Ok(())
}
