//! Building a commit's chunk records: each put checked and copied into
//! I/O buffers with its CRC taken on the way, small records gathered into
//! runs (one write for records side by side on the device) and, in a
//! two-flush commit, into groups sharing one header block
//! (docs/format.md, "Record group"). `commit.rs` submits and waits.

use crate::device::IoBuf;

use super::commit::{Pump, WriteBatch};
use super::{
    chunk_count, chunk_len, combine_crcs, key_text, record, record_size_bytes, validate_key, Error, IoKind, LogRecord,
    Op, PutData, RecordHeader, Result, ShardMeta, Store, BLOCK_SIZE_BYTES, CHUNK_SIZE_BYTES_MAX, RESERVE_EXTENTS_COUNT,
    SHARD_SIZE_BYTES_MAX, STORE_QUEUE_DEPTH,
};

/// A put's bytes are copied into the I/O buffer and checksummed there in
/// blocks of this size: half of an L1 data cache of 32 KiB or more.
const COPY_CRC_BLOCK_BYTES: usize = 16 * 1024;

/// While a long put is copied and checksummed (about 100 µs a MiB here),
/// the thread looks at the device and serves gets (`Pump`) every this many
/// bytes: a get whose read completes meanwhile, or that arrives, is not
/// held for the whole copy (BENCHMARKS.md, "Gets during 1 MiB puts": with
/// the copy skipped, as a probe, the p99 of 4 KiB gets during 1 MiB puts
/// fell from 4-5x the idle p99 to 3x).
const PUMP_EVERY_BYTES: usize = 128 * 1024;

/// A record of at most `1 / RUN_RECORDS_MIN` of an I/O buffer is gathered
/// with the records written right behind it on the device into one buffer
/// and one write (a run), instead of one write each: a batch of 64 4 KiB
/// puts is then one 512 KiB write, not 64 of 8 KiB (fio on this machine's
/// disk, 512 KiB then a flush: 238-267 MiB/s as one write, 175-193 as 64).
const RUN_RECORDS_MIN: usize = 4;

/// Records gathered for one write: the buffer (their bytes back to back),
/// the device offset of the first, the batch's operations they belong
/// to, and the group whose header block takes the next member's header.
pub(super) struct Run {
    pub(super) buf: IoBuf,
    pub(super) offset: u64,
    pub(super) ops: Vec<u32>,
    group: Option<Group>,
}

/// Small records sharing one header block (`record::decode_group`): the
/// block's place in the run's buffer and on the device, and the bytes of
/// it the members' headers fill so far.
struct Group {
    at: usize,
    extent: u32,
    block: u32,
    slots: usize,
}

/// Where a chunk record is being built: a buffer of its own (written
/// alone, or the start of a run), at a position in the open run, or (a
/// later member of the run's group) only its payload at the run's end.
enum Target {
    Own(IoBuf),
    Run(usize),
    Member(usize),
}

impl Target {
    /// The record's bytes, `len` long (a member's: its payload, padded).
    fn record<'a>(&'a mut self, writes: &'a mut WriteBatch, len: usize) -> &'a mut [u8] {
        match self {
            Target::Own(buf) => buf.as_mut_slice(),
            Target::Run(at) | Target::Member(at) => {
                &mut writes.run.as_mut().expect("the run joined").buf.as_mut_slice()[*at..*at + len]
            }
        }
    }

    /// The record is not written after all: its place in the run (the
    /// run's end) is given back; its own buffer goes back on drop.
    fn give_back(self, writes: &mut WriteBatch) {
        if let Target::Run(at) | Target::Member(at) = self {
            writes.run.as_mut().expect("the run joined").buf.set_len(at);
        }
    }
}

/// Copies `data` from `start` into `to`, taking the CRC of each block
/// right behind its copy, while the block is still in L1, and running
/// `between` every `PUMP_EVERY_BYTES`. Returns the CRC of what was placed.
fn copy_with_crc(data: &PutData, start: usize, to: &mut [u8], mut between: impl FnMut() -> Result<()>) -> Result<u32> {
    let mut crc = 0;
    for (i, block) in to.chunks_mut(COPY_CRC_BLOCK_BYTES).enumerate() {
        let at = i * COPY_CRC_BLOCK_BYTES;
        if at > 0 && at % PUMP_EVERY_BYTES == 0 {
            between()?;
        }
        data.copy_to(start + at, block);
        crc = crc32c::crc32c_append(crc, block);
    }
    Ok(crc)
}

impl Store {
    /// Checks a put and submits its chunk records (reaped by the caller);
    /// returns the log record that will make it visible. The CRC of every
    /// aligned buffer that goes to the device is compared with what the
    /// sender vouched for (`expected`) before the buffer is written.
    pub(super) fn stage_put(
        &mut self,
        i: usize,
        put: &Op,
        now: u64,
        writes: &mut WriteBatch,
        pump: Pump<'_>,
    ) -> Result<LogRecord> {
        let Op::Put { key, data, crc32c: expected, version } = put else { unreachable!("stage_put stages puts") };
        let key: &[u8] = key;
        let (expected, version) = (*expected, *version);
        validate_key(key)?;
        self.check_usable()?;
        let size = data.len() as u64;
        if size > SHARD_SIZE_BYTES_MAX {
            return Err(Error::TooLarge { size, max: SHARD_SIZE_BYTES_MAX });
        }
        let count = chunk_count(size);
        let bad_digest = |expected: u32, actual: u32| Error::BadDigest { key: key_text(key), expected, actual };
        // A one-chunk shard (nearly all of them) takes its CRC from the copy
        // in the I/O buffer while it is in cache. A longer one needs every
        // chunk's CRC first (each header carries the whole shard's), so it
        // is checked against the sender's before anything is written, and
        // each buffer's copy against its chunk's CRC. Landed chunks' CRCs
        // were taken from their record buffers as the bytes landed.
        let mut chunk_crcs: Vec<u32> = Vec::with_capacity(if count == 1 { 0 } else { count });
        for c in (0..count).filter(|_| count > 1) {
            let start = c * CHUNK_SIZE_BYTES_MAX;
            if let Some(crc) = data.landed_crc(c) {
                chunk_crcs.push(crc);
                continue;
            }
            chunk_crcs.push(data.crc32c(start..start + chunk_len(size, c)));
            // A MiB of checksum: gets are served between chunks.
            self.serve_gets_meanwhile(writes, pump)?;
        }
        let mut shard_crc = if count == 1 { 0 } else { combine_crcs(&chunk_crcs, size) };
        if let Some(want) = expected.filter(|&want| count > 1 && want != shard_crc) {
            return Err(bad_digest(want, shard_crc));
        }
        let sequence = self.next_sequence.max(version.unwrap_or(0));
        self.next_sequence = sequence + 1;
        let mut chunks = Vec::with_capacity(count);
        for c in 0..count {
            let start = c * CHUNK_SIZE_BYTES_MAX;
            let payload_len = chunk_len(size, c);
            let len = record_size_bytes(key.len(), payload_len) as usize;
            let payload_bytes = len - record::HEADER_BLOCK_BYTES;
            // A one-chunk record the store copies joins the run of records
            // before it when it lands right behind them on the device (the
            // open extent has room) and fits the run's buffer; otherwise the
            // run goes to the device and this record starts the next. Where
            // records are grouped, it joins the run's group (its payload
            // alone, its header in the group's block) while the block has
            // room for its header and its payload is near enough, or starts
            // a new group (a header block of its own) in the run.
            let small = !data.is_landed() && count == 1 && self.small_record(len);
            let grouped = small && writes.groups && self.groupable(key.len(), payload_len);
            let member = grouped && self.joins_group(key.len(), payload_bytes, writes);
            let joins = member || (small && self.joins_run(len, writes));
            if !joins {
                self.submit_run(writes);
            }
            // Every buffer taken from the pool is one a queue slot can carry.
            while self.dev.in_flight() + usize::from(writes.run.is_some()) >= STORE_QUEUE_DEPTH {
                if let Err(e) = self.reap_commit_io(writes) {
                    // The ring itself failed: nothing more can be written.
                    return Err(self.fail(&format!("reaping writes failed: {e}")));
                }
            }
            // A landed record is written as it is; its CRC was taken from
            // the very bytes that go to the device, right behind their copy
            // into this buffer as they landed ([`super::Landed::extend`]).
            let (mut target, placed_crc) = if let Some((buf, crc)) = data.take_record(c) {
                assert_eq!(buf.len(), len, "a landed record is shaped for its chunk");
                (Target::Own(buf), crc)
            } else {
                let (mut target, bytes) = if joins {
                    let run = writes.run.as_mut().expect("a run to join");
                    let at = run.buf.len();
                    let bytes = if member { payload_bytes } else { len };
                    run.buf.set_len(at + bytes);
                    (if member { Target::Member(at) } else { Target::Run(at) }, bytes)
                } else {
                    let Some(buf) = self.pool.take(len) else {
                        return Err(
                            self.fail("no free I/O buffer with a queue slot free (buffers lost to a failed ring)")
                        );
                    };
                    (Target::Own(buf), len)
                };
                let placed_crc = if let Target::Own(buf) = &mut target {
                    // A record of its own (the long ones): gets are served
                    // during the copy; the buffer is the record's alone.
                    let to = record::payload_mut(payload_len, buf.as_mut_slice());
                    copy_with_crc(data, start, to, || self.serve_gets_meanwhile(writes, pump))?
                } else {
                    let out = target.record(writes, bytes);
                    let to = if member {
                        out[payload_len..].fill(0);
                        &mut out[..payload_len]
                    } else {
                        record::payload_mut(payload_len, out)
                    };
                    copy_with_crc(data, start, to, || Ok(()))?
                };
                (target, placed_crc)
            };
            let (payload_crc, refused) = if count == 1 {
                shard_crc = placed_crc;
                (placed_crc, expected.filter(|&want| want != placed_crc).map(|want| bad_digest(want, placed_crc)))
            } else {
                let want = chunk_crcs.get(c).copied().expect("a CRC per chunk of a longer shard");
                (want, (placed_crc != want).then(|| bad_digest(want, placed_crc)))
            };
            // A member's payload blocks; any other record's header block too.
            let blocks = (if member { payload_bytes } else { len } as u64 / BLOCK_SIZE_BYTES) as u32;
            let allocated = match refused {
                Some(e) => Err(e),
                None => self.extents.allocate_put(blocks).ok_or_else(|| {
                    Error::NoSpace(format!(
                        "{}: no free extent for a {size}-byte shard ({RESERVE_EXTENTS_COUNT} are held back for reclamation)",
                        self.name
                    ))
                }),
            };
            let mut loc = match allocated {
                Ok(loc) => loc,
                Err(e) => {
                    target.give_back(writes);
                    return Err(e);
                }
            };
            // Where the record's bytes go on the device (a member's: its
            // payload), before a member's locator names its group's block.
            let offset = self.locator_offset(loc);
            if member {
                let group = writes.run.as_ref().and_then(|r| r.group.as_ref()).expect("the group joined");
                loc.distance = u8::try_from(loc.block - group.block).expect("checked by joins_group");
                loc.block = group.block;
            }
            let header = RecordHeader {
                key: key.to_vec(),
                sequence,
                extent: loc.extent,
                generation: self.extents.get(loc.extent).generation,
                shard_len: size,
                chunk_offset: start as u64,
                chunk_len: payload_len as u32,
                payload_crc,
                shard_crc,
                written_unix_ms: now,
                grouped,
                distance: loc.distance,
            };
            if grouped && !member {
                // The first member: a header block of its own, zeroed past its
                // header so that the list of headers ends where they do.
                let out = target.record(writes, len);
                out[..record::HEADER_BLOCK_BYTES].fill(0);
                header.encode_slot(out);
            } else if !member {
                header.encode_header(target.record(writes, len));
            }
            loc.crc = payload_crc;
            writes.any_data = true;
            let slot = record::member_slot_bytes(key.len());
            let group = |at: usize| Group { at, extent: loc.extent, block: loc.block, slots: slot };
            match target {
                Target::Own(buf) if small => {
                    // The first record of a new run.
                    let group = grouped.then(|| group(0));
                    writes.run = Some(Run { buf, offset, ops: vec![i as u32], group });
                }
                Target::Own(buf) => {
                    self.submit_commit_io(i as u32, IoKind::Write { offset, buf, fua: false }, writes)?;
                }
                Target::Run(at) => {
                    let run = writes.run.as_mut().expect("the run joined");
                    assert_eq!(run.offset + at as u64, offset, "a run's records are contiguous on the device");
                    run.ops.push(i as u32);
                    // A record of its own ends the group before it: a walker
                    // skips a group's payloads, and would skip this record
                    // if a later member's payload lay past it.
                    run.group = grouped.then(|| group(at));
                }
                Target::Member(at) => {
                    let run = writes.run.as_mut().expect("the run joined");
                    assert_eq!(run.offset + at as u64, offset, "a group's payloads are contiguous on the device");
                    let g = run.group.as_mut().expect("the group joined");
                    let header_block = &mut run.buf.as_mut_slice()[g.at..g.at + record::HEADER_BLOCK_BYTES];
                    header.encode_slot(&mut header_block[g.slots..]);
                    g.slots += slot;
                    run.ops.push(i as u32);
                }
            }
            chunks.push(loc);
        }
        Ok(LogRecord::Put { key: key.to_vec(), meta: ShardMeta::new(size, shard_crc, sequence, now, chunks) })
    }

    /// While a put is staged: collects what the device completed (the
    /// commit's writes so far, gets' reads) and runs `pump` to answer and
    /// start gets. Fails only when the ring itself does.
    fn serve_gets_meanwhile(&mut self, writes: &mut WriteBatch, pump: Pump<'_>) -> Result<()> {
        if let Err(e) = self.poll_commit_io(writes) {
            return Err(self.fail(&format!("reaping writes failed: {e}")));
        }
        pump(self);
        Ok(())
    }

    /// Whether a record of `len` bytes is small enough to share a write
    /// with others (`RUN_RECORDS_MIN`).
    fn small_record(&self, len: usize) -> bool {
        len <= self.pool.slot_size() / RUN_RECORDS_MIN
    }

    /// Whether a chunk with a key of `key_len` bytes and `payload_len` of
    /// payload may be a group member, when written by a commit or moved by
    /// reclamation: a small record, and a payload at all (an empty one has
    /// no blocks to tell it apart in a group).
    pub(super) fn groupable(&self, key_len: usize, payload_len: usize) -> bool {
        payload_len > 0 && self.small_record(record_size_bytes(key_len, payload_len) as usize)
    }

    /// Whether a record of `len` bytes (header block and payload) can join
    /// the run: the open extent has room for it right behind the run's end
    /// on the device, and the run's buffer has room for it.
    fn joins_run(&self, len: usize, writes: &WriteBatch) -> bool {
        let next = self.extents.next_in_open((len as u64 / BLOCK_SIZE_BYTES) as u32).map(|at| self.locator_offset(at));
        writes.run.as_ref().is_some_and(|run| {
            next == Some(run.offset + run.buf.len() as u64) && run.buf.len() + len <= run.buf.capacity()
        })
    }

    /// Whether a record with a key of `key_len` bytes and `payload_bytes`
    /// of padded payload can join the run's group: its payload right
    /// behind the run's end in the group's extent, at most
    /// `GROUP_DISTANCE_MAX` blocks after the group's header block, which
    /// has room for its header, and the run's buffer room for its payload.
    fn joins_group(&self, key_len: usize, payload_bytes: usize, writes: &WriteBatch) -> bool {
        let Some(run) = writes.run.as_ref() else { return false };
        let Some(group) = run.group.as_ref() else { return false };
        let Some(next) = self.extents.next_in_open((payload_bytes as u64 / BLOCK_SIZE_BYTES) as u32) else {
            return false;
        };
        next.extent == group.extent
            && self.locator_offset(next) == run.offset + run.buf.len() as u64
            && record::fits_group(group.slots, next.block - group.block, key_len)
            && run.buf.len() + payload_bytes <= run.buf.capacity()
    }
}
