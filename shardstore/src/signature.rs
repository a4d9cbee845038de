//! Recognising data that is not ours, so `format` never destroys it by
//! accident. A device is only overwritten without `--force` when its head
//! zone is all zeros and no superblock slot carries shardnode magic.

use crate::constants::{PROBE_SIZE_BYTES, SUPERBLOCK_COPIES_COUNT, SUPERBLOCK_COPY_SIZE_BYTES};
use crate::device::{BlockDevice, BlockDeviceExt};
use crate::error::Result;
use crate::layout;
use crate::superblock::{self, Superblock};

/// Known on-disk signatures: (byte offset, bytes, what it is).
const SIGNATURES: &[(usize, &[u8], &str)] = &[
    (0, b"XFSB", "an XFS file system"),
    (1080, &[0x53, 0xEF], "an ext2/ext3/ext4 file system"),
    (65600, b"_BHRfS_M", "a btrfs file system"),
    (0, b"LUKS\xba\xbe", "a LUKS encrypted volume"),
    (512, b"LABELONE", "an LVM physical volume"),
    (4086, b"SWAPSPACE2", "a Linux swap area"),
    (4096, &[0xfc, 0x4e, 0x2b, 0xa9], "a Linux md RAID member"),
    (512, b"EFI PART", "a GPT partition table"),
    (0, b"bluestore block device", "a Ceph BlueStore device"),
    (32769, b"CD001", "an ISO 9660 image"),
    (510, &[0x55, 0xAA], "an MBR partition table or boot sector"),
];

/// Says what the device holds if it is anything but blank, or `None` when
/// it is safe to format.
pub fn detect(dev: &mut dyn BlockDevice) -> Result<Option<String>> {
    let size = dev.info().size_bytes;
    let align = dev.info().logical_block_size.max(SUPERBLOCK_COPY_SIZE_BYTES);
    let probe_len = PROBE_SIZE_BYTES.min(size - size % align);
    if probe_len == 0 {
        return Ok(None);
    }
    for index in 0..SUPERBLOCK_COPIES_COUNT {
        let offset = layout::copy_offset(size, index);
        if offset + SUPERBLOCK_COPY_SIZE_BYTES > size {
            continue;
        }
        let buf = dev.read_at(offset, SUPERBLOCK_COPY_SIZE_BYTES as usize)?;
        let bytes = buf.as_slice();
        if bytes[..8] == superblock::MAGIC {
            return Ok(Some(match Superblock::decode(bytes, index) {
                Ok(sb) => format!(
                    "it holds a shardnode store (device {}, superblock sequence {})",
                    superblock::format_uuid(&sb.device_uuid),
                    sb.sequence
                ),
                Err(problem) => format!("it holds a damaged shardnode superblock (copy {index}: {problem})"),
            }));
        }
    }
    let head = dev.read_at(0, probe_len as usize)?;
    let head = head.as_slice();
    for (offset, magic, what) in SIGNATURES {
        if head.len() >= offset + magic.len() && &head[*offset..offset + magic.len()] == *magic {
            return Ok(Some(format!("it holds {what}")));
        }
    }
    if let Some(at) = head.iter().position(|&b| b != 0) {
        return Ok(Some(format!(
            "its first {probe_len} bytes hold data of an unknown kind (first non-zero byte at offset {at})"
        )));
    }
    Ok(None)
}
