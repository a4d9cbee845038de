//! Every limit and fixed size of shardnode, in one place.
//!
//! Names carry their unit last (`_bytes`, `_count`). On-disk sizes are
//! mirrored in `docs/format.md`; the relations between them are asserted at
//! compile time below so the document and the code cannot drift apart
//! silently.

/// Size of one superblock copy on disk. One 4 KiB block: the largest logical
/// sector size we support, so a copy is always sector-aligned.
pub const SUPERBLOCK_COPY_SIZE_BYTES: u64 = 4096;

/// Number of superblock copies on every formatted device.
pub const SUPERBLOCK_COPIES_COUNT: usize = 4;

/// Copies that must agree on a version for it to be opened. With four copies
/// written one after another, two is the quorum that exists at every instant
/// of an update (see `docs/format.md`, "Update protocol").
pub const SUPERBLOCK_QUORUM_COUNT: usize = 2;

/// Each end of the device has a superblock zone holding two copies.
pub const SUPERBLOCK_ZONE_SIZE_BYTES: u64 = 1024 * 1024;

/// Distance between the two copies inside one zone, so a damaged region of
/// less than this does not take both copies of a zone.
pub const SUPERBLOCK_COPY_SPACING_BYTES: u64 = 512 * 1024;

/// The store's block: unit of allocation and of every data-path I/O.
pub const BLOCK_SIZE_BYTES: u64 = 4096;

/// Largest logical sector size the engine accepts from a device.
pub const SECTOR_SIZE_BYTES_MAX: u64 = 4096;

/// Default extent size: large enough that an HDD spends its time
/// transferring, not seeking, when a whole extent is evacuated.
pub const EXTENT_SIZE_BYTES_DEFAULT: u64 = 64 * 1024 * 1024;
/// Smallest extent: it must hold several of the largest chunk records
/// (1 MiB of payload plus header and key, 1 MiB + 4 KiB on disk).
pub const EXTENT_SIZE_BYTES_MIN: u64 = 4 * 1024 * 1024;
pub const EXTENT_SIZE_BYTES_MAX: u64 = 1024 * 1024 * 1024;

/// Fewest extents a formatted device may have: reclamation needs room to
/// evacuate one extent into another.
pub const EXTENT_COUNT_MIN: u64 = 4;
/// Extents a device formatted without an explicit extent size gets at
/// least when it is large enough: the default size is halved (down to the
/// minimum) until this many fit, so a small test device formats and the
/// reclamation reserve stays a small share of it.
pub const EXTENT_COUNT_PREFERRED: u64 = 16;

/// The metadata region (index log and checkpoints) takes this fraction of
/// the device, clamped to the bounds below.
pub const META_FRACTION_DENOMINATOR: u64 = 64;
pub const META_SIZE_BYTES_MIN: u64 = 4 * 1024 * 1024;
pub const META_SIZE_BYTES_MAX: u64 = 16 * 1024 * 1024 * 1024;

/// Bytes at the head of a device that `format` reads to recognise foreign
/// data before it agrees to overwrite anything.
pub const PROBE_SIZE_BYTES: u64 = 1024 * 1024;

/// Deepest io_uring submission queue a device handle creates.
pub const QUEUE_DEPTH_MAX: u32 = 4096;
pub const QUEUE_DEPTH_DEFAULT: u32 = 128;

/// Largest single I/O the engine accepts (one buffer-pool slot at most).
pub const IO_SIZE_BYTES_MAX: u64 = 64 * 1024 * 1024;

/// Writes longer than this, queued while reads are in flight, are sent in
/// pieces of this size, at most `WRITE_PIECES_WITH_READS_DEFAULT` in flight
/// while reads are (`OpenOptions::write_piece_bytes`).
pub const WRITE_PIECE_BYTES_DEFAULT: u64 = 256 * 1024;
pub const WRITE_PIECES_WITH_READS_DEFAULT: u32 = 2;

/// How long opening waits for a device that is busy before saying so. A
/// process that just exited (even cleanly) can hold its exclusive claim a
/// little longer: the kernel drops an io_uring's registered file
/// asynchronously after the ring is gone.
pub const OPEN_BUSY_WAIT_MS_MAX: u64 = 1000;

/// An I/O in flight this long is a stall (`OpenOptions::stall_after_ms`):
/// far past any latency of a working drive under load, short of the
/// kernel's own block-layer timeout (30 s), after which it would fail the
/// I/O itself.
pub const IO_STALL_AFTER_MS_DEFAULT: u64 = 10_000;

/// io_uring accepts at most this many registered buffers.
pub const REGISTERED_BUFFERS_COUNT_MAX: usize = 16 * 1024;

/// Socket operations a device's ring holds in flight at most
/// (`BlockDevice::submit_socket`): each connection a store thread serves
/// has at most one, so this bounds the connections a thread can serve;
/// its ring's completion queue has room for all of them at once.
pub const SOCKET_OPS_MAX: usize = 4096;

const _: () = assert!(SUPERBLOCK_COPY_SIZE_BYTES >= SECTOR_SIZE_BYTES_MAX);
const _: () = assert!(SUPERBLOCK_COPY_SIZE_BYTES % SECTOR_SIZE_BYTES_MAX == 0);
const _: () = assert!(SUPERBLOCK_COPIES_COUNT == 4, "two per zone, two zones");
const _: () = assert!(SUPERBLOCK_QUORUM_COUNT * 2 == SUPERBLOCK_COPIES_COUNT);
const _: () = assert!(SUPERBLOCK_COPY_SPACING_BYTES + SUPERBLOCK_COPY_SIZE_BYTES <= SUPERBLOCK_ZONE_SIZE_BYTES);
const _: () = assert!(SUPERBLOCK_ZONE_SIZE_BYTES % BLOCK_SIZE_BYTES == 0);
const _: () = assert!(BLOCK_SIZE_BYTES % SECTOR_SIZE_BYTES_MAX == 0);
const _: () = assert!(EXTENT_SIZE_BYTES_MIN.is_power_of_two() && EXTENT_SIZE_BYTES_MAX.is_power_of_two());
const _: () = assert!(EXTENT_SIZE_BYTES_DEFAULT.is_power_of_two());
const _: () = assert!(EXTENT_SIZE_BYTES_MIN % BLOCK_SIZE_BYTES == 0);
const _: () = assert!(META_SIZE_BYTES_MIN % SUPERBLOCK_ZONE_SIZE_BYTES == 0);
const _: () = assert!(PROBE_SIZE_BYTES == SUPERBLOCK_ZONE_SIZE_BYTES);
