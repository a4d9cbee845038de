//! Where everything lives on a formatted device.
//!
//! ```text
//! 0            1 MiB                          data_offset                       size - 1 MiB   size
//! | head zone  | metadata region (index log,  | extent 0 | extent 1 | ... | pad | tail zone    |
//! | SB0 .. SB1 | checkpoints; issue 3)        |                               | SB2 .. SB3   |
//! ```
//! Superblock copies 0 and 1 sit in the head zone, 512 KiB apart; copies 2
//! and 3 in the tail zone, likewise, so neither one damaged region nor one
//! misdirected write can take a quorum. See `docs/format.md`.

use crate::constants::{
    BLOCK_SIZE_BYTES, EXTENT_COUNT_MIN, EXTENT_COUNT_PREFERRED, EXTENT_SIZE_BYTES_DEFAULT, EXTENT_SIZE_BYTES_MAX,
    EXTENT_SIZE_BYTES_MIN, META_FRACTION_DENOMINATOR, META_SIZE_BYTES_MAX, META_SIZE_BYTES_MIN, SECTOR_SIZE_BYTES_MAX,
    SUPERBLOCK_COPIES_COUNT, SUPERBLOCK_COPY_SPACING_BYTES, SUPERBLOCK_ZONE_SIZE_BYTES,
};

/// The layout parameters recorded in every superblock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Layout {
    /// Device size when formatted; the tail zone is placed from it.
    pub device_size_bytes: u64,
    pub sector_size_bytes: u64,
    pub block_size_bytes: u64,
    pub extent_size_bytes: u64,
    pub extent_count: u64,
    pub meta_offset: u64,
    pub meta_size_bytes: u64,
    pub data_offset: u64,
    /// Format version 2: where the mirror of the metadata region starts
    /// (after the extents, before the tail zone: a device apart from the
    /// first copy). 0 in version 1, which keeps one copy.
    pub meta_mirror_offset: u64,
}

/// Why a layout cannot be made; the caller adds the device name.
pub type LayoutError = String;

impl Layout {
    /// The extent size a device gets when none is asked for: the largest
    /// power of two from `EXTENT_SIZE_BYTES_DEFAULT` (64 MiB) down to
    /// `EXTENT_SIZE_BYTES_MIN` (4 MiB) that leaves the device at least
    /// `EXTENT_COUNT_PREFERRED` (16) extents, so the extents held back for
    /// reclamation stay a small share of it; the minimum when none does.
    /// A 256 MiB device gets 8 MiB extents (30 of them, beside the two copies of its metadata); a device of
    /// 1.05 GiB or more gets 64 MiB.
    pub fn default_extent_size(device_size_bytes: u64, sector_size_bytes: u64) -> u64 {
        let mut size = EXTENT_SIZE_BYTES_DEFAULT;
        while size > EXTENT_SIZE_BYTES_MIN {
            match Layout::compute(device_size_bytes, sector_size_bytes, size) {
                Ok(l) if l.extent_count >= EXTENT_COUNT_PREFERRED => return size,
                _ => size /= 2,
            }
        }
        size
    }

    /// Computes the layout for a device of `device_size_bytes` with the
    /// given logical sector size and extent size.
    pub fn compute(
        device_size_bytes: u64,
        sector_size_bytes: u64,
        extent_size_bytes: u64,
    ) -> Result<Layout, LayoutError> {
        Layout::compute_version(
            device_size_bytes,
            sector_size_bytes,
            extent_size_bytes,
            crate::superblock::FORMAT_VERSION,
        )
    }

    /// As `compute`, for format `version` (1: one copy of the metadata
    /// region; 2: a mirror of it before the tail zone).
    pub fn compute_version(
        device_size_bytes: u64,
        sector_size_bytes: u64,
        extent_size_bytes: u64,
        version: u32,
    ) -> Result<Layout, LayoutError> {
        if !extent_size_bytes.is_power_of_two() {
            return Err(format!("extent size {extent_size_bytes} is not a power of two"));
        }
        if extent_size_bytes % BLOCK_SIZE_BYTES != 0 || extent_size_bytes % sector_size_bytes != 0 {
            return Err(format!(
                "extent size {extent_size_bytes} is not a multiple of the block size ({BLOCK_SIZE_BYTES})"
            ));
        }
        if !(EXTENT_SIZE_BYTES_MIN..=EXTENT_SIZE_BYTES_MAX).contains(&extent_size_bytes) {
            return Err(format!(
                "extent size {extent_size_bytes} is outside {EXTENT_SIZE_BYTES_MIN}..={EXTENT_SIZE_BYTES_MAX} bytes"
            ));
        }
        if !sector_size_bytes.is_power_of_two() || sector_size_bytes > SECTOR_SIZE_BYTES_MAX {
            return Err(format!("sector size {sector_size_bytes} is not supported"));
        }
        // Only whole zones count: a device whose size is not a multiple of
        // the zone has its last partial zone unused.
        let usable = device_size_bytes - device_size_bytes % SUPERBLOCK_ZONE_SIZE_BYTES;
        let meta_size = (usable / META_FRACTION_DENOMINATOR)
            .clamp(META_SIZE_BYTES_MIN, META_SIZE_BYTES_MAX)
            .div_ceil(SUPERBLOCK_ZONE_SIZE_BYTES)
            * SUPERBLOCK_ZONE_SIZE_BYTES;
        let meta_offset = SUPERBLOCK_ZONE_SIZE_BYTES;
        let data_offset = meta_offset + meta_size;
        let tail_zone = usable.saturating_sub(SUPERBLOCK_ZONE_SIZE_BYTES);
        let mirrors = u64::from(version >= 2);
        let data_end_max = tail_zone.saturating_sub(mirrors * meta_size);
        let extent_count = data_end_max.saturating_sub(data_offset) / extent_size_bytes;
        let meta_mirror_offset = if mirrors == 1 { data_end_max } else { 0 };
        let needed =
            data_offset + EXTENT_COUNT_MIN * extent_size_bytes + mirrors * meta_size + SUPERBLOCK_ZONE_SIZE_BYTES;
        if usable < SUPERBLOCK_ZONE_SIZE_BYTES * 2 || extent_count < EXTENT_COUNT_MIN {
            return Err(format!(
                "device of {device_size_bytes} bytes is too small: this layout needs at least {needed} bytes \
                 ({EXTENT_COUNT_MIN} extents of {extent_size_bytes} bytes plus superblock zones and metadata)"
            ));
        }
        Ok(Layout {
            device_size_bytes,
            sector_size_bytes,
            block_size_bytes: BLOCK_SIZE_BYTES,
            extent_size_bytes,
            extent_count,
            meta_offset,
            meta_size_bytes: meta_size,
            data_offset,
            meta_mirror_offset,
        })
    }

    /// Start of each copy of the metadata region: one (version 1) or two.
    pub fn meta_copies(&self) -> Vec<u64> {
        if self.meta_mirror_offset == 0 {
            vec![self.meta_offset]
        } else {
            vec![self.meta_offset, self.meta_mirror_offset]
        }
    }

    /// Start of the tail superblock zone.
    pub fn tail_zone_offset(&self) -> u64 {
        tail_zone_offset(self.device_size_bytes)
    }

    /// Byte offset of superblock copy `index`.
    pub fn copy_offset(&self, index: usize) -> u64 {
        copy_offset(self.device_size_bytes, index)
    }

    pub fn data_end(&self) -> u64 {
        self.data_offset + self.extent_count * self.extent_size_bytes
    }

    /// Checks the internal consistency of a layout read from disk.
    /// The layout must be what format `version` derives.
    pub fn check(&self, version: u32) -> Result<(), LayoutError> {
        let expected =
            Layout::compute_version(self.device_size_bytes, self.sector_size_bytes, self.extent_size_bytes, version)?;
        if *self == expected {
            Ok(())
        } else {
            Err(format!("layout fields are inconsistent: recorded {self:?}, derived {expected:?}"))
        }
    }
}

pub fn tail_zone_offset(device_size_bytes: u64) -> u64 {
    let usable = device_size_bytes - device_size_bytes % SUPERBLOCK_ZONE_SIZE_BYTES;
    usable.saturating_sub(SUPERBLOCK_ZONE_SIZE_BYTES)
}

/// Offset of superblock copy `index` on a device formatted at
/// `device_size_bytes`.
pub fn copy_offset(device_size_bytes: u64, index: usize) -> u64 {
    assert!(index < SUPERBLOCK_COPIES_COUNT);
    let zone = if index < 2 { 0 } else { tail_zone_offset(device_size_bytes) };
    zone + (index as u64 % 2) * SUPERBLOCK_COPY_SPACING_BYTES
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_are_distinct_aligned_and_outside_data() {
        let l = Layout::compute(10 << 30, 512, 64 << 20).unwrap();
        let offsets: Vec<u64> = (0..4).map(|i| l.copy_offset(i)).collect();
        for (i, o) in offsets.iter().enumerate() {
            assert_eq!(o % 4096, 0);
            assert!(*o + 4096 <= l.meta_offset || *o >= l.data_end(), "copy {i} overlaps data");
        }
        assert_eq!(offsets[0], 0);
        assert!(offsets[2] >= l.data_end());
        assert!(l.data_end() <= l.tail_zone_offset());
        l.check(crate::superblock::FORMAT_VERSION).unwrap();
    }

    #[test]
    fn bad_parameters_are_named() {
        assert!(Layout::compute(1 << 30, 512, 3 << 20).unwrap_err().contains("power of two"));
        assert!(Layout::compute(1 << 30, 512, 2048).unwrap_err().contains("multiple of the block size"));
        assert!(Layout::compute(8 << 20, 512, 4 << 20).unwrap_err().contains("too small"));
        assert!(Layout::compute(1 << 30, 512, 1 << 20).unwrap_err().contains("outside"));
    }

    #[test]
    fn the_default_extent_size_fits_small_devices() {
        let mib = 1 << 20;
        for (device, extent) in [
            (256 * mib, 8 * mib),
            (100 * mib, 4 * mib),
            (1200 * mib, 64 * mib),
            (10 << 30, 64 * mib),
            (600 * mib, 32 * mib),
        ] {
            assert_eq!(Layout::default_extent_size(device, 512), extent, "device of {device} bytes");
            let l = Layout::compute(device, 512, extent).unwrap();
            assert!(l.extent_count >= EXTENT_COUNT_PREFERRED, "{device}: {} extents", l.extent_count);
        }
        // Below what 16 extents of the minimum need, the minimum, as long
        // as four extents fit; a device too small for that is refused.
        assert_eq!(Layout::default_extent_size(64 * mib, 512), EXTENT_SIZE_BYTES_MIN);
        assert_eq!(Layout::default_extent_size(30 * mib, 512), EXTENT_SIZE_BYTES_MIN);
        assert!(Layout::compute(30 * mib, 512, EXTENT_SIZE_BYTES_MIN).is_ok());
        assert!(Layout::compute(16 * mib, 512, Layout::default_extent_size(16 * mib, 512)).is_err());
    }
}
