//! A store thread's handle: each call queues one request (`send`), and
//! the blocking helpers wait for its answer.

use std::sync::atomic::Ordering;
use std::sync::mpsc::{self, TrySendError};

use bytes::Bytes;

use super::{Reply, Request, StoreHandle, AWAKE, PARKED, PARKED_FOR_READS, STORE_QUEUE_REQUESTS_MAX};
use crate::error::{Error, Result};
use crate::store::cache::{Cached, ReadCache};
use crate::store::placed::{PlacedRead, Placements};
use crate::store::scrub::{DamagedShard, ScrubSettings, ScrubStatus};
use crate::store::stats::StoreStats;
use crate::store::{ByteRange, Listed, Lookup, Op, PutData, Read, ShardStat};

impl StoreHandle {
    /// Queues a request without waiting: `Busy` when the queue is full
    /// (the reply is then never called).
    fn send(&self, request: Request) -> Result<()> {
        let is_read = matches!(request, Request::Get { .. } | Request::Read { .. });
        // Counted before it can be taken, so the count never goes below 0.
        self.wake.stats.queued.fetch_add(1, Ordering::Relaxed);
        let sent = self.tx.try_send(request);
        if sent.is_err() {
            self.wake.stats.queued.fetch_sub(1, Ordering::Relaxed);
        }
        match sent {
            Ok(()) => {
                self.wake.stats.requests.fetch_add(1, Ordering::Relaxed);
                if wakes(self.wake.parked.load(Ordering::SeqCst), is_read)
                    && self.wake.parked.swap(AWAKE, Ordering::SeqCst) != AWAKE
                {
                    if let Some(w) = &self.wake.waker {
                        w.wake();
                    }
                }
                Ok(())
            }
            Err(TrySendError::Full(_)) => Err(Error::Busy {
                device: self.name.clone(),
                reason: format!("store queue is full ({STORE_QUEUE_REQUESTS_MAX} requests waiting)"),
            }),
            Err(TrySendError::Disconnected(_)) => Err(self.gone()),
        }
    }

    /// Queues a stat; `done` gets the shard's metadata, if it exists.
    pub fn submit_stat(
        &self,
        key: Vec<u8>,
        done: impl FnOnce(Result<Option<ShardStat>>) + Send + 'static,
    ) -> Result<()> {
        self.send(Request::Stat { key, reply: Box::new(done) })
    }

    /// Queues a listing (see [`StoreHandle::list`]).
    pub fn submit_list(
        &self,
        prefix: Vec<u8>,
        start_after: Option<Vec<u8>>,
        limit: usize,
        done: impl FnOnce(Result<Vec<Listed>>) + Send + 'static,
    ) -> Result<()> {
        self.send(Request::List { prefix, start_after, limit, reply: Box::new(done) })
    }

    fn call<T: Send + 'static>(&self, make: impl FnOnce(Reply<T>) -> Request) -> Result<T> {
        let (tx, rx) = mpsc::sync_channel(1);
        self.send(make(Box::new(move |r| {
            let _ = tx.send(r);
        })))?;
        rx.recv().map_err(|_| self.gone())?
    }

    /// Queues a put; `done` is called on the store thread once the shard is
    /// durable (or the put failed). For callers that keep many requests in
    /// flight without a thread each (the agent's tasks, the benchmark).
    ///
    /// `crc32c` is what the sender vouches the data's CRC32C is (a client's
    /// header, or the CRC of the body as it arrived): the store checks the
    /// bytes it writes against it and fails the put with `BadDigest`,
    /// storing nothing, when they differ. `None`: the store's own CRC.
    pub fn submit_put(
        &self,
        key: Vec<u8>,
        data: impl Into<Bytes>,
        crc32c: Option<u32>,
        done: impl FnOnce(Result<()>) + Send + 'static,
    ) -> Result<()> {
        self.send(Request::Write(
            Op::Put { key, data: PutData::from(data.into()), crc32c, version: None },
            Box::new(done),
        ))
    }

    /// Queues any write operation (a versioned put, a tombstone, a purge);
    /// `done` is called once it is durable.
    pub fn submit_op(&self, op: Op, done: impl FnOnce(Result<()>) + Send + 'static) -> Result<()> {
        self.send(Request::Write(op, Box::new(done)))
    }

    /// Queues a lookup: the key's shard, its tombstone, or neither.
    pub fn submit_lookup(&self, key: Vec<u8>, done: impl FnOnce(Result<Lookup>) + Send + 'static) -> Result<()> {
        self.send(Request::Lookup { key, reply: Box::new(done) })
    }

    /// Queues a read of `key`: its newest state here and, for a shard, the
    /// verified bytes of `range` (all of it: `None`), in one trip.
    pub fn submit_read(
        &self,
        key: Vec<u8>,
        range: Option<ByteRange>,
        done: impl FnOnce(Result<Read>) + Send + 'static,
    ) -> Result<()> {
        self.send(Request::Read { key, range, reply: Box::new(done) })
    }

    /// Every tombstone of the store (key, sequence).
    pub fn tombstones(&self) -> Result<Vec<(Vec<u8>, u64)>> {
        self.call(Request::Tombstones)
    }

    /// The sequence the store's next write gets at least, as it was when
    /// the store opened (the agent's clock starts above every store's).
    pub fn next_sequence_at_open(&self) -> u64 {
        self.wake.stats.next_sequence_at_open.load(Ordering::Relaxed)
    }

    /// Queues a delete; `done` is called once it is durable.
    pub fn submit_delete(&self, key: Vec<u8>, done: impl FnOnce(Result<()>) + Send + 'static) -> Result<()> {
        self.send(Request::Write(Op::Delete { key }, Box::new(done)))
    }

    /// Queues a read of `len` bytes at `offset` of a shard (`u64::MAX`: to
    /// the end); `done` gets the verified bytes.
    pub fn submit_get(
        &self,
        key: Vec<u8>,
        offset: u64,
        len: u64,
        done: impl FnOnce(Result<Vec<u8>>) + Send + 'static,
    ) -> Result<()> {
        self.send(Request::Get { key, offset, len, reply: Box::new(done) })
    }

    /// Attaches `sidecar` to the thread (see [`super::Sidecar`]), replacing
    /// any attached before; an error when the device cannot wake the
    /// thread for it (only io_uring devices can).
    pub fn attach(&self, sidecar: Box<dyn super::Sidecar>) -> Result<()> {
        self.call(|reply| Request::Attach(sidecar, reply))
    }

    /// Ends the thread's wait for its sidecar, which has work
    /// ([`super::Sidecar::has_work`] says so from now on): as a get sent
    /// now would, so not while the thread is awake (it looks before it
    /// waits) or waits on reads sure to complete soon.
    pub fn nudge(&self) {
        if wakes(self.wake.parked.load(Ordering::SeqCst), true)
            && self.wake.parked.swap(AWAKE, Ordering::SeqCst) != AWAKE
        {
            if let Some(w) = &self.wake.waker {
                w.wake();
            }
        }
    }

    /// The whole shard of `key` from the read cache, without a trip to the
    /// thread: exactly what the store holds for the key now (`cache.rs`),
    /// or `None` (not cached; ask the thread).
    pub fn cached(&self, key: &[u8]) -> Option<Cached> {
        self.cache.get(key)
    }

    pub fn read_cache(&self) -> &ReadCache {
        &self.cache
    }

    /// A read of `key`'s shard to make on the caller's own ring, from
    /// where the thread placed it (`placed.rs`), or `None` (not placed:
    /// ask the thread).
    pub fn placed(&self, key: &[u8]) -> Option<PlacedRead> {
        self.placed.lookup(key)
    }

    pub fn placements(&self) -> &Placements {
        &self.placed
    }

    /// The thread's current figures.
    pub fn stats(&self) -> &StoreStats {
        &self.wake.stats
    }

    /// The device's error and latency counters, for its health.
    pub fn counters(&self) -> &crate::health::DeviceCounters {
        &self.wake.counters
    }

    /// Whether the previous run closed the store cleanly.
    pub fn opened_clean(&self) -> bool {
        self.opened_clean
    }

    /// The device's format version once opened (docs/format.md, "Version
    /// history"): what a build must read to open it.
    pub fn format_version(&self) -> u32 {
        self.format_version
    }

    /// The device this store serves.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The error for a request the thread can no longer answer.
    pub fn gone(&self) -> Error {
        Error::Stopped { device: self.name.clone() }
    }

    pub fn put(&self, key: &[u8], data: impl Into<Bytes>) -> Result<()> {
        let data = PutData::from(data.into());
        self.call(|r| Request::Write(Op::Put { key: key.to_vec(), data, crc32c: None, version: None }, r))
    }

    pub fn delete(&self, key: &[u8]) -> Result<()> {
        self.call(|r| Request::Write(Op::Delete { key: key.to_vec() }, r))
    }

    pub fn get(&self, key: &[u8]) -> Result<Vec<u8>> {
        self.get_range(key, 0, u64::MAX)
    }

    pub fn get_range(&self, key: &[u8], offset: u64, len: u64) -> Result<Vec<u8>> {
        self.call(|reply| Request::Get { key: key.to_vec(), offset, len, reply })
    }

    pub fn stat(&self, key: &[u8]) -> Result<Option<ShardStat>> {
        self.call(|reply| Request::Stat { key: key.to_vec(), reply })
    }

    pub fn list(&self, prefix: &[u8], start_after: Option<&[u8]>, limit: usize) -> Result<Vec<Listed>> {
        self.call(|reply| Request::List {
            prefix: prefix.to_vec(),
            start_after: start_after.map(<[u8]>::to_vec),
            limit,
            reply,
        })
    }

    pub fn checkpoint(&self) -> Result<()> {
        self.call(Request::Checkpoint)
    }

    /// Sets how the background scrubber runs (it takes effect at once).
    pub fn set_scrub(&self, settings: ScrubSettings) -> Result<()> {
        self.call(|reply| Request::UpdateScrub(Box::new(move |s| *s = settings), reply)).map(|_| ())
    }

    pub fn scrub_status(&self) -> Result<ScrubStatus> {
        self.call(Request::ScrubStatus)
    }

    /// The repair list: shards the scrubber found damaged.
    pub fn damaged_shards(&self) -> Result<Vec<DamagedShard>> {
        self.call(Request::Damaged)
    }

    /// Queues a scrub status request (for async callers).
    pub fn submit_scrub_status(&self, done: impl FnOnce(Result<ScrubStatus>) + Send + 'static) -> Result<()> {
        self.send(Request::ScrubStatus(Box::new(done)))
    }

    /// Queues a change to the scrub settings as they are now (an
    /// operator's pause or resume must not undo what the scrubber changed
    /// itself, like the end of a one-pass `start`); `done` gets the result.
    pub fn submit_update_scrub(
        &self,
        change: impl FnOnce(&mut ScrubSettings) + Send + 'static,
        done: impl FnOnce(Result<ScrubSettings>) + Send + 'static,
    ) -> Result<()> {
        self.send(Request::UpdateScrub(Box::new(change), Box::new(done)))
    }

    /// Queues a request for the repair list (for async callers).
    pub fn submit_damaged_shards(&self, done: impl FnOnce(Result<Vec<DamagedShard>>) + Send + 'static) -> Result<()> {
        self.send(Request::Damaged(Box::new(done)))
    }

    /// Commits what is queued, checkpoints, records a clean shutdown and
    /// stops the thread.
    pub fn close(&self) -> Result<()> {
        self.call(Request::Close)
    }
}

/// Whether a request sent while the thread is `parked` must wake it: not
/// if it is awake (it looks at the queue before it waits again), nor for a
/// get or read while it waits for gets' reads (the next completion ends
/// that wait); any other request while it waits, so that what reads only
/// memory never waits for the device.
fn wakes(parked: u8, is_read: bool) -> bool {
    match parked {
        AWAKE => false,
        PARKED_FOR_READS => !is_read,
        PARKED => true,
        other => unreachable!("no parked state {other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_wait_the_request_cannot_count_on_ending_is_woken() {
        assert!(!wakes(AWAKE, true) && !wakes(AWAKE, false));
        assert!(wakes(PARKED, true) && wakes(PARKED, false));
        assert!(!wakes(PARKED_FOR_READS, true), "a get waits for the next read's completion");
        assert!(wakes(PARKED_FOR_READS, false), "a stat, lookup or write is not held up by reads");
    }
}
