//! Formatting a device: lay out the regions and write the first version of
//! the superblock to all four copies. Refuses to overwrite anything it
//! recognises unless forced.

use crate::constants::{SUPERBLOCK_COPIES_COUNT, SUPERBLOCK_COPY_SIZE_BYTES};
use crate::device::{BlockDevice, BlockDeviceExt};
use crate::error::{Error, Result};
use crate::layout::Layout;
use crate::signature;
use crate::superblock::{self, Superblock, FORMAT_VERSION};

#[derive(Debug, Clone, Default)]
pub struct FormatOptions {
    /// `None`: chosen from the device size ([`Layout::default_extent_size`]).
    pub extent_size_bytes: Option<u64>,
    /// `None`: the current version. Version 1 (no metadata mirror) only
    /// for tests of stores written by earlier builds.
    pub format_version: Option<u32>,
    /// Overwrite a device that holds a shardnode store or other data.
    pub force: bool,
    pub cluster_uuid: [u8; 16],
    pub node_id: u64,
}

/// Formats `dev`. The old superblock copies are zeroed (and flushed) before
/// the new ones are written, so an interrupted format leaves a device that
/// open refuses as unformatted, never a mix of two identities that opens.
pub fn format(dev: &mut dyn BlockDevice, options: &FormatOptions) -> Result<Superblock> {
    let info = dev.info().clone();
    // What is on the device is the first thing an operator must hear about,
    // before whether the requested layout fits.
    if !options.force {
        if let Some(reason) = signature::detect(dev)? {
            return Err(Error::WouldOverwrite { device: info.name.clone(), reason });
        }
    }
    let extent_size_bytes = options
        .extent_size_bytes
        .unwrap_or_else(|| Layout::default_extent_size(info.size_bytes, info.logical_block_size));
    let version = options.format_version.unwrap_or(FORMAT_VERSION);
    if !(superblock::FORMAT_VERSION_MIN..=FORMAT_VERSION).contains(&version) {
        return Err(Error::InvalidArgument(format!("format version {version} is not one this build writes")));
    }
    let layout = Layout::compute_version(info.size_bytes, info.logical_block_size, extent_size_bytes, version)
        .map_err(|reason| Error::InvalidLayout { device: info.name.clone(), reason })?;
    let zeros = vec![0u8; SUPERBLOCK_COPY_SIZE_BYTES as usize];
    for index in 0..SUPERBLOCK_COPIES_COUNT {
        dev.write_at(layout.copy_offset(index), &zeros, false)?;
    }
    dev.flush()?;
    // The store starts from an empty checkpoint in the first half of the
    // metadata region; the superblock records its length and CRC.
    let store = crate::store::write_initial_checkpoint(dev, &layout)?;
    let now = superblock::now_unix_ms();
    let sb = Superblock {
        format_version: version,
        clean_shutdown: true,
        sequence: 1,
        parent_checksum: 0,
        device_uuid: random_uuid()?,
        cluster_uuid: options.cluster_uuid,
        node_id: options.node_id,
        layout,
        created_unix_ms: now,
        updated_unix_ms: now,
        store,
    };
    dev.flush()?;
    superblock::write_initial(dev, &sb)?;
    Ok(sb)
}

/// A random (version 4) UUID from the kernel's generator.
pub fn random_uuid() -> Result<[u8; 16]> {
    use std::io::Read;
    let mut u = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut u))
        .map_err(|e| Error::InvalidArgument(format!("cannot read /dev/urandom for a device UUID: {e}")))?;
    u[6] = (u[6] & 0x0f) | 0x40;
    u[8] = (u[8] & 0x3f) | 0x80;
    Ok(u)
}
