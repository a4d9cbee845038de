//! The crash-consistent superblock: four copies, each naming its slot,
//! chained by checksum, opened by quorum and repaired at open.
//!
//! Byte layout, update protocol and the crash argument are in
//! `docs/format.md`; the offsets below mirror its table.

use std::fmt;

use crate::codec::{get_u32, get_u64, put_u32, put_u64};
use crate::constants::{SUPERBLOCK_COPIES_COUNT, SUPERBLOCK_COPY_SIZE_BYTES, SUPERBLOCK_QUORUM_COUNT};
use crate::device::{BlockDevice, BlockDeviceExt};
use crate::error::{Error, Result};
use crate::layout::{self, Layout};

pub const MAGIC: [u8; 8] = *b"SHRDNDSB";
/// The version new devices are formatted with, and the version a version 2
/// or 3 device becomes when this build opens it to write. Each of 3 and 4
/// is the layout of version 2 with records the builds before it cannot
/// read: version 3 record groups, one-flush commits' payload copies and
/// checkpoint version 4; version 4 vouched commits' `Vouch` log records.
/// Those builds refuse such a device as an unsupported format instead of
/// calling it corrupt. Version 1 (one copy of the metadata region) is
/// still opened and served.
pub const FORMAT_VERSION: u32 = 4;
/// The oldest format a read-write open upgrades to `FORMAT_VERSION` (every
/// version from it up; see `FORMAT_VERSION`).
pub const FORMAT_VERSION_UPGRADED_FROM: u32 = 2;
/// Oldest format version this build opens.
pub const FORMAT_VERSION_MIN: u32 = 1;

/// Flag bit: the store was shut down cleanly after this version.
pub const FLAG_CLEAN_SHUTDOWN: u32 = 1;

const COPY_SIZE: usize = SUPERBLOCK_COPY_SIZE_BYTES as usize;

// Field offsets (docs/format.md, "Superblock copy").
const OFF_MAGIC: usize = 0;
const OFF_CHECKSUM: usize = 8;
const OFF_COPY_INDEX: usize = 12;
/// Start of the version body: identical in every copy of one version.
const OFF_BODY: usize = 16;
const OFF_FORMAT_VERSION: usize = 16;
const OFF_FLAGS: usize = 20;
const OFF_SEQUENCE: usize = 24;
const OFF_PARENT: usize = 32;
const OFF_RESERVED0: usize = 36;
const OFF_DEVICE_UUID: usize = 40;
const OFF_CLUSTER_UUID: usize = 56;
const OFF_NODE_ID: usize = 72;
const OFF_DEVICE_SIZE: usize = 80;
const OFF_SECTOR_SIZE: usize = 88;
const OFF_BLOCK_SIZE: usize = 96;
const OFF_EXTENT_SIZE: usize = 104;
const OFF_EXTENT_COUNT: usize = 112;
const OFF_META_OFFSET: usize = 120;
const OFF_META_SIZE: usize = 128;
const OFF_DATA_OFFSET: usize = 136;
const OFF_CREATED: usize = 144;
const OFF_UPDATED: usize = 152;
const OFF_STORE_EPOCH: usize = 160;
const OFF_STORE_HALF: usize = 168;
const OFF_CHECKPOINT_CRC: usize = 172;
const OFF_CHECKPOINT_LEN: usize = 176;
/// Version 2: start of the metadata region's mirror (reserved, zero, in
/// version 1).
const OFF_META_MIRROR: usize = 184;
/// First byte of the reserved tail, zero in version 2.
const OFF_RESERVED_TAIL: usize = 192;

const _: () = assert!(OFF_CHECKSUM == OFF_MAGIC + 8);
const _: () = assert!(OFF_COPY_INDEX == OFF_CHECKSUM + 4);
const _: () = assert!(OFF_BODY == OFF_COPY_INDEX + 4 && OFF_FORMAT_VERSION == OFF_BODY);
const _: () = assert!(OFF_FLAGS == OFF_FORMAT_VERSION + 4 && OFF_SEQUENCE == OFF_FLAGS + 4);
const _: () = assert!(OFF_PARENT == OFF_SEQUENCE + 8 && OFF_RESERVED0 == OFF_PARENT + 4);
const _: () = assert!(OFF_DEVICE_UUID == OFF_RESERVED0 + 4 && OFF_CLUSTER_UUID == OFF_DEVICE_UUID + 16);
const _: () = assert!(OFF_NODE_ID == OFF_CLUSTER_UUID + 16 && OFF_DEVICE_SIZE == OFF_NODE_ID + 8);
const _: () = assert!(OFF_SECTOR_SIZE == OFF_DEVICE_SIZE + 8 && OFF_BLOCK_SIZE == OFF_SECTOR_SIZE + 8);
const _: () = assert!(OFF_EXTENT_SIZE == OFF_BLOCK_SIZE + 8 && OFF_EXTENT_COUNT == OFF_EXTENT_SIZE + 8);
const _: () = assert!(OFF_META_OFFSET == OFF_EXTENT_COUNT + 8 && OFF_META_SIZE == OFF_META_OFFSET + 8);
const _: () = assert!(OFF_DATA_OFFSET == OFF_META_SIZE + 8 && OFF_CREATED == OFF_DATA_OFFSET + 8);
const _: () = assert!(OFF_UPDATED == OFF_CREATED + 8 && OFF_STORE_EPOCH == OFF_UPDATED + 8);
const _: () = assert!(OFF_STORE_HALF == OFF_STORE_EPOCH + 8 && OFF_CHECKPOINT_CRC == OFF_STORE_HALF + 4);
const _: () = assert!(OFF_CHECKPOINT_LEN == OFF_CHECKPOINT_CRC + 4 && OFF_META_MIRROR == OFF_CHECKPOINT_LEN + 8);
const _: () = assert!(OFF_RESERVED_TAIL == OFF_META_MIRROR + 8);
const _: () = assert!(OFF_RESERVED_TAIL <= COPY_SIZE);

/// One version of the superblock, as held in memory.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Superblock {
    pub format_version: u32,
    pub clean_shutdown: bool,
    /// Starts at 1 at format; +1 per update.
    pub sequence: u64,
    /// `version_checksum` of the version with `sequence - 1` (0 for 1).
    pub parent_checksum: u32,
    #[serde(serialize_with = "ser_uuid")]
    pub device_uuid: [u8; 16],
    #[serde(serialize_with = "ser_uuid")]
    pub cluster_uuid: [u8; 16],
    pub node_id: u64,
    pub layout: Layout,
    pub created_unix_ms: u64,
    pub updated_unix_ms: u64,
    /// The store's checkpoint in force.
    pub store: StoreRef,
}

/// Where the store's checkpoint in force lives, and what it must hash to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct StoreRef {
    /// Increases with every checkpoint; log blocks carry it.
    pub epoch: u64,
    /// Which half of the metadata region holds the checkpoint (0 or 1).
    pub half: u32,
    pub checkpoint_crc: u32,
    pub checkpoint_len_bytes: u64,
}

fn ser_uuid<S: serde::Serializer>(uuid: &[u8; 16], s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_str(&format_uuid(uuid))
}

pub fn format_uuid(u: &[u8; 16]) -> String {
    use std::fmt::Write as _;
    let h = u.iter().fold(String::with_capacity(32), |mut h, b| {
        let _ = write!(h, "{b:02x}");
        h
    });
    format!("{}-{}-{}-{}-{}", &h[0..8], &h[8..12], &h[12..16], &h[16..20], &h[20..32])
}

impl Superblock {
    /// Encodes the copy for slot `copy_index`.
    pub fn encode(&self, copy_index: usize) -> Vec<u8> {
        assert!(copy_index < SUPERBLOCK_COPIES_COUNT);
        let mut b = vec![0u8; COPY_SIZE];
        b[OFF_MAGIC..OFF_MAGIC + 8].copy_from_slice(&MAGIC);
        put_u32(&mut b, OFF_COPY_INDEX, copy_index as u32);
        put_u32(&mut b, OFF_FORMAT_VERSION, self.format_version);
        put_u32(&mut b, OFF_FLAGS, if self.clean_shutdown { FLAG_CLEAN_SHUTDOWN } else { 0 });
        put_u64(&mut b, OFF_SEQUENCE, self.sequence);
        put_u32(&mut b, OFF_PARENT, self.parent_checksum);
        b[OFF_DEVICE_UUID..OFF_DEVICE_UUID + 16].copy_from_slice(&self.device_uuid);
        b[OFF_CLUSTER_UUID..OFF_CLUSTER_UUID + 16].copy_from_slice(&self.cluster_uuid);
        put_u64(&mut b, OFF_NODE_ID, self.node_id);
        let l = &self.layout;
        put_u64(&mut b, OFF_DEVICE_SIZE, l.device_size_bytes);
        put_u64(&mut b, OFF_SECTOR_SIZE, l.sector_size_bytes);
        put_u64(&mut b, OFF_BLOCK_SIZE, l.block_size_bytes);
        put_u64(&mut b, OFF_EXTENT_SIZE, l.extent_size_bytes);
        put_u64(&mut b, OFF_EXTENT_COUNT, l.extent_count);
        put_u64(&mut b, OFF_META_OFFSET, l.meta_offset);
        put_u64(&mut b, OFF_META_SIZE, l.meta_size_bytes);
        put_u64(&mut b, OFF_DATA_OFFSET, l.data_offset);
        put_u64(&mut b, OFF_CREATED, self.created_unix_ms);
        put_u64(&mut b, OFF_UPDATED, self.updated_unix_ms);
        put_u64(&mut b, OFF_STORE_EPOCH, self.store.epoch);
        put_u32(&mut b, OFF_STORE_HALF, self.store.half);
        put_u32(&mut b, OFF_CHECKPOINT_CRC, self.store.checkpoint_crc);
        put_u64(&mut b, OFF_CHECKPOINT_LEN, self.store.checkpoint_len_bytes);
        put_u64(&mut b, OFF_META_MIRROR, l.meta_mirror_offset);
        let checksum = crc32c::crc32c(&b[OFF_COPY_INDEX..]);
        put_u32(&mut b, OFF_CHECKSUM, checksum);
        b
    }

    /// CRC32C of the version body: the same in all four copies of this
    /// version; the next version records it as its parent.
    pub fn version_checksum(&self) -> u32 {
        crc32c::crc32c(&self.encode(0)[OFF_BODY..])
    }

    /// Decodes the copy found in slot `slot`, or says what is wrong with it.
    pub fn decode(bytes: &[u8], slot: usize) -> std::result::Result<Superblock, CopyProblem> {
        assert_eq!(bytes.len(), COPY_SIZE);
        if bytes.iter().all(|&b| b == 0) {
            return Err(CopyProblem::Blank);
        }
        if bytes[OFF_MAGIC..OFF_MAGIC + 8] != MAGIC {
            return Err(CopyProblem::NoMagic);
        }
        if crc32c::crc32c(&bytes[OFF_COPY_INDEX..]) != get_u32(bytes, OFF_CHECKSUM) {
            return Err(CopyProblem::BadChecksum);
        }
        let copy_index = get_u32(bytes, OFF_COPY_INDEX);
        if copy_index as usize != slot {
            return Err(CopyProblem::Misdirected { holds: copy_index });
        }
        let format_version = get_u32(bytes, OFF_FORMAT_VERSION);
        if !(FORMAT_VERSION_MIN..=FORMAT_VERSION).contains(&format_version) {
            return Err(CopyProblem::UnsupportedVersion(format_version));
        }
        let flags = get_u32(bytes, OFF_FLAGS);
        if flags & !FLAG_CLEAN_SHUTDOWN != 0 || get_u32(bytes, OFF_RESERVED0) != 0 {
            return Err(CopyProblem::Invalid("unknown flags or reserved bits set".to_owned()));
        }
        let reserved_from = if format_version >= 2 { OFF_RESERVED_TAIL } else { OFF_META_MIRROR };
        if bytes[reserved_from..].iter().any(|&b| b != 0) {
            return Err(CopyProblem::Invalid("reserved bytes are not zero".to_owned()));
        }
        let uuid = |at: usize| -> [u8; 16] { bytes[at..at + 16].try_into().expect("16 bytes") };
        let sb = Superblock {
            format_version,
            clean_shutdown: flags & FLAG_CLEAN_SHUTDOWN != 0,
            sequence: get_u64(bytes, OFF_SEQUENCE),
            parent_checksum: get_u32(bytes, OFF_PARENT),
            device_uuid: uuid(OFF_DEVICE_UUID),
            cluster_uuid: uuid(OFF_CLUSTER_UUID),
            node_id: get_u64(bytes, OFF_NODE_ID),
            layout: Layout {
                device_size_bytes: get_u64(bytes, OFF_DEVICE_SIZE),
                sector_size_bytes: get_u64(bytes, OFF_SECTOR_SIZE),
                block_size_bytes: get_u64(bytes, OFF_BLOCK_SIZE),
                extent_size_bytes: get_u64(bytes, OFF_EXTENT_SIZE),
                extent_count: get_u64(bytes, OFF_EXTENT_COUNT),
                meta_offset: get_u64(bytes, OFF_META_OFFSET),
                meta_size_bytes: get_u64(bytes, OFF_META_SIZE),
                data_offset: get_u64(bytes, OFF_DATA_OFFSET),
                meta_mirror_offset: get_u64(bytes, OFF_META_MIRROR),
            },
            created_unix_ms: get_u64(bytes, OFF_CREATED),
            updated_unix_ms: get_u64(bytes, OFF_UPDATED),
            store: StoreRef {
                epoch: get_u64(bytes, OFF_STORE_EPOCH),
                half: get_u32(bytes, OFF_STORE_HALF),
                checkpoint_crc: get_u32(bytes, OFF_CHECKPOINT_CRC),
                checkpoint_len_bytes: get_u64(bytes, OFF_CHECKPOINT_LEN),
            },
        };
        if sb.store.half > 1 || sb.store.checkpoint_len_bytes > sb.layout.meta_size_bytes / 2 {
            return Err(CopyProblem::Invalid("store checkpoint reference out of range".to_owned()));
        }
        if sb.sequence == 0 {
            return Err(CopyProblem::Invalid("sequence 0".to_owned()));
        }
        sb.layout.check(format_version).map_err(CopyProblem::Invalid)?;
        Ok(sb)
    }
}

/// Why a copy is not valid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CopyProblem {
    Unreadable(String),
    Blank,
    NoMagic,
    /// Torn by a crash mid-write, or rotted.
    BadChecksum,
    /// A valid copy of another slot: a misdirected write.
    Misdirected {
        holds: u32,
    },
    UnsupportedVersion(u32),
    Invalid(String),
}

impl fmt::Display for CopyProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CopyProblem::Unreadable(e) => write!(f, "unreadable: {e}"),
            CopyProblem::Blank => f.write_str("blank (all zeros)"),
            CopyProblem::NoMagic => f.write_str("no superblock magic"),
            CopyProblem::BadChecksum => f.write_str("bad checksum (torn or corrupted)"),
            CopyProblem::Misdirected { holds } => write!(f, "wrong copy index {holds} (misdirected write)"),
            CopyProblem::UnsupportedVersion(v) => {
                write!(f, "unsupported format version {v} (this build reads {FORMAT_VERSION_MIN} to {FORMAT_VERSION})")
            }
            CopyProblem::Invalid(why) => write!(f, "invalid: {why}"),
        }
    }
}

/// One copy as found on the device.
#[derive(Debug, Clone)]
pub struct CopyReport {
    pub index: usize,
    pub offset: u64,
    pub copy: std::result::Result<Superblock, CopyProblem>,
}

/// How one copy relates to the version in force.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CopyStatus {
    Current,
    /// Valid, older version (or a newer one that never reached a quorum).
    Stale,
    Invalid,
}

/// The result of choosing a version from four copies.
#[derive(Debug, Clone)]
pub struct Selection {
    pub superblock: Superblock,
    pub status: [CopyStatus; SUPERBLOCK_COPIES_COUNT],
}

impl Selection {
    /// Copies that open must rewrite.
    pub fn needs_repair(&self) -> Vec<usize> {
        (0..SUPERBLOCK_COPIES_COUNT).filter(|&i| self.status[i] != CopyStatus::Current).collect()
    }
}

/// Why no version can be opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SelectError {
    /// No copy carries shardnode magic at all.
    NotFormatted,
    NoQuorum(String),
    Fork(String),
    BrokenChain(String),
    MixedIdentity(String),
}

impl fmt::Display for SelectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SelectError::NotFormatted => f.write_str("no shardnode superblock found"),
            SelectError::NoQuorum(d) => {
                write!(f, "no superblock version is held by {SUPERBLOCK_QUORUM_COUNT} valid copies: {d}")
            }
            SelectError::Fork(d) => write!(f, "superblock fork: {d}"),
            SelectError::BrokenChain(d) => write!(f, "broken superblock chain: {d}"),
            SelectError::MixedIdentity(d) => write!(f, "copies belong to different devices: {d}"),
        }
    }
}

/// Picks the version in force: the newest sequence held by a quorum of
/// valid copies, after refusing forks, broken chains and mixed identities.
pub fn select(copies: &[CopyReport]) -> std::result::Result<Selection, SelectError> {
    assert_eq!(copies.len(), SUPERBLOCK_COPIES_COUNT);
    let valid: Vec<(usize, &Superblock)> =
        copies.iter().filter_map(|c| c.copy.as_ref().ok().map(|sb| (c.index, sb))).collect();
    if valid.is_empty() {
        let any_ours = copies
            .iter()
            .any(|c| !matches!(c.copy, Err(CopyProblem::Blank | CopyProblem::NoMagic | CopyProblem::Unreadable(_))));
        return Err(if any_ours {
            let problems: Vec<String> =
                copies.iter().filter_map(|c| c.copy.as_ref().err().map(|p| format!("copy {}: {p}", c.index))).collect();
            SelectError::NoQuorum(format!("no copy is valid ({})", problems.join("; ")))
        } else {
            SelectError::NotFormatted
        });
    }
    let (i0, first) = valid[0];
    for &(i, sb) in &valid[1..] {
        if sb.device_uuid != first.device_uuid {
            return Err(SelectError::MixedIdentity(format!(
                "copy {i0} is device {}, copy {i} is device {}",
                format_uuid(&first.device_uuid),
                format_uuid(&sb.device_uuid)
            )));
        }
    }
    for (a, &(ia, sa)) in valid.iter().enumerate() {
        for &(ib, sb) in &valid[a + 1..] {
            if sa.sequence == sb.sequence && sa != sb {
                return Err(SelectError::Fork(format!(
                    "copies {ia} and {ib} hold different versions with sequence {}",
                    sa.sequence
                )));
            }
        }
    }
    let in_force = valid
        .iter()
        .filter(|(_, sb)| valid.iter().filter(|(_, o)| o.sequence == sb.sequence).count() >= SUPERBLOCK_QUORUM_COUNT)
        .map(|(_, sb)| *sb)
        .max_by_key(|sb| sb.sequence);
    let Some(in_force) = in_force else {
        let seen: Vec<String> = valid.iter().map(|(i, sb)| format!("copy {i} has sequence {}", sb.sequence)).collect();
        return Err(SelectError::NoQuorum(seen.join(", ")));
    };
    let checksum = in_force.version_checksum();
    let mut status = [CopyStatus::Invalid; SUPERBLOCK_COPIES_COUNT];
    for &(i, sb) in &valid {
        status[i] = if sb.sequence == in_force.sequence {
            CopyStatus::Current
        } else if sb.sequence + 1 == in_force.sequence {
            if sb.version_checksum() != in_force.parent_checksum {
                return Err(SelectError::BrokenChain(format!(
                    "copy {i} (sequence {}) is not the parent of the version in force (sequence {})",
                    sb.sequence, in_force.sequence
                )));
            }
            CopyStatus::Stale
        } else if sb.sequence == in_force.sequence + 1 {
            // An update that crashed before reaching a quorum: it must at
            // least descend from the version in force.
            if sb.parent_checksum != checksum {
                return Err(SelectError::BrokenChain(format!(
                    "copy {i} (sequence {}) does not descend from the version in force (sequence {})",
                    sb.sequence, in_force.sequence
                )));
            }
            CopyStatus::Stale
        } else if sb.sequence > in_force.sequence {
            return Err(SelectError::BrokenChain(format!(
                "copy {i} has sequence {}, more than one ahead of the version in force ({})",
                sb.sequence, in_force.sequence
            )));
        } else {
            CopyStatus::Stale
        };
    }
    Ok(Selection { superblock: in_force.clone(), status })
}

/// Reads all four copies. The head copies are read first; the tail
/// copies are placed from the device size a valid head copy records (the
/// size at format), or from the current size when no head copy is valid.
pub fn read_copies(dev: &mut dyn BlockDevice) -> Vec<CopyReport> {
    let mut reports = Vec::with_capacity(SUPERBLOCK_COPIES_COUNT);
    let size_now = dev.info().size_bytes;
    for index in 0..2 {
        reports.push(read_copy(dev, index, layout::copy_offset(size_now, index)));
    }
    let formatted_size = reports
        .iter()
        .filter_map(|r| r.copy.as_ref().ok())
        .max_by_key(|sb| sb.sequence)
        .map_or(size_now, |sb| sb.layout.device_size_bytes);
    for index in 2..SUPERBLOCK_COPIES_COUNT {
        reports.push(read_copy(dev, index, layout::copy_offset(formatted_size, index)));
    }
    reports
}

fn read_copy(dev: &mut dyn BlockDevice, index: usize, offset: u64) -> CopyReport {
    let copy = match dev.read_at(offset, COPY_SIZE) {
        Ok(buf) => Superblock::decode(buf.as_slice(), index),
        Err(e) => Err(CopyProblem::Unreadable(e.to_string())),
    };
    CopyReport { index, offset, copy }
}

/// What `open` found and did.
#[derive(Debug, Clone)]
pub struct Opened {
    pub superblock: Superblock,
    pub copies: Vec<CopyReport>,
    /// Copies rewritten with the version in force.
    pub repaired: Vec<usize>,
}

/// Opens the superblock of a formatted device: picks the version in force
/// and, when `repair` is set, rewrites every stale or damaged copy.
pub fn open(dev: &mut dyn BlockDevice, repair: bool) -> Result<Opened> {
    let name = dev.info().name.clone();
    let copies = read_copies(dev);
    let selection = select(&copies).map_err(|e| match e {
        SelectError::NotFormatted => Error::NotFormatted {
            device: name.clone(),
            reason: "no shardnode superblock found; format it with `shardctl format`".to_owned(),
        },
        other => Error::Superblock { device: name.clone(), reason: other.to_string() },
    })?;
    let sb = selection.superblock.clone();
    if sb.layout.device_size_bytes > dev.info().size_bytes {
        return Err(Error::Superblock {
            device: name,
            reason: format!(
                "device is {} bytes but was formatted at {} bytes: it shrank, or this is the wrong device",
                dev.info().size_bytes,
                sb.layout.device_size_bytes
            ),
        });
    }
    // Every store I/O is block-aligned, so any logical sector that divides
    // the block works, whatever sector size the device had at format (a
    // loop device of 512-byte sectors and its 4096-aligned backing file
    // are the same store).
    if sb.layout.block_size_bytes % dev.info().logical_block_size != 0 {
        return Err(Error::Superblock {
            device: name,
            reason: format!(
                "the device's {}-byte logical sectors do not divide the store's {}-byte block",
                dev.info().logical_block_size,
                sb.layout.block_size_bytes
            ),
        });
    }
    let mut repaired = Vec::new();
    if repair {
        for index in selection.needs_repair() {
            write_copy(dev, &sb, index)?;
            dev.flush()?;
            repaired.push(index);
        }
    }
    Ok(Opened { superblock: sb, copies, repaired })
}

fn write_copy(dev: &mut dyn BlockDevice, sb: &Superblock, index: usize) -> Result<()> {
    let (offset, bytes) = copy_write(sb, index);
    dev.write_at(offset, &bytes, false)
}

/// Where copy `index` of `sb` goes, and its bytes.
pub(crate) fn copy_write(sb: &Superblock, index: usize) -> (u64, Vec<u8>) {
    let bytes = sb.encode(index);
    // Paired assertion: what we are about to write must read back as
    // exactly this version.
    assert_eq!(Superblock::decode(&bytes, index).as_ref(), Ok(sb), "superblock encoding round-trip");
    (sb.layout.copy_offset(index), bytes)
}

/// Writes version `sequence + 1` derived from `current` by `change`.
///
/// Protocol: flush (everything the new version refers to is durable), then
/// for each copy in order: write, flush. At every instant two copies hold
/// one of the two versions, so a crash leaves either the old or the new
/// version openable, never neither and never anything else.
pub fn commit(
    dev: &mut dyn BlockDevice,
    current: &Superblock,
    change: impl FnOnce(&mut Superblock),
) -> Result<Superblock> {
    let next = next_version(current, change);
    dev.flush()?;
    for index in 0..SUPERBLOCK_COPIES_COUNT {
        write_copy(dev, &next, index)?;
        dev.flush()?;
    }
    Ok(next)
}

/// Version `sequence + 1` derived from `current` by `change`, for
/// [`commit`] (or a caller that follows its protocol on a ring of its
/// own) to write.
pub(crate) fn next_version(current: &Superblock, change: impl FnOnce(&mut Superblock)) -> Superblock {
    let mut next = current.clone();
    change(&mut next);
    assert_eq!(next.device_uuid, current.device_uuid, "an update may not change the device identity");
    assert_eq!(next.layout, current.layout, "an update may not change the layout");
    next.sequence = current.sequence + 1;
    next.parent_checksum = current.version_checksum();
    next.updated_unix_ms = now_unix_ms().max(current.updated_unix_ms);
    next
}

/// Writes the first version of a freshly formatted device (all copies).
pub(crate) fn write_initial(dev: &mut dyn BlockDevice, sb: &Superblock) -> Result<()> {
    assert_eq!(sb.sequence, 1);
    for index in 0..SUPERBLOCK_COPIES_COUNT {
        write_copy(dev, sb, index)?;
        dev.flush()?;
    }
    Ok(())
}

pub fn now_unix_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}
