//! The read pipeline: gets in progress in a slab, chunk reads kept in
//! flight up to the queue depth, each verified against its locator's CRC
//! as it completes (and a whole-shard read against the shard's CRC), and
//! a finished get handed out once; `quiesce` finishes every read in
//! flight before a path that uses the device one operation at a time.

use super::{
    chunk_len, combine_crcs, key_text, record, scrub, Completion, Error, IoKind, IoOp, Result, ShardMeta, Store,
    CHUNK_SIZE_BYTES_MAX, STORE_QUEUE_DEPTH,
};

/// One get in progress.
#[derive(Debug)]
pub(super) struct GetCtx {
    pub(super) id: u64,
    pub(super) key: Vec<u8>,
    pub(super) meta: ShardMeta,
    pub(super) offset: u64,
    pub(super) end: u64,
    pub(super) out: Vec<u8>,
    pub(super) remaining: usize,
    pub(super) error: Option<Error>,
    /// Verified payload CRC of each chunk, for the whole-shard check.
    pub(super) chunk_crcs: Vec<u32>,
    pub(super) started: std::time::Instant,
}

impl Store {
    pub fn get(&mut self, key: &[u8]) -> Result<Vec<u8>> {
        let size = self.index.get(key).ok_or_else(|| Error::NotFound(key_text(key)))?.size;
        self.get_range(key, 0, size)
    }

    /// Reads `len` bytes from `offset` of a shard (clamped to its end),
    /// verifying every chunk it touches; a whole-shard read also checks the
    /// shard's CRC32C.
    pub fn get_range(&mut self, key: &[u8], offset: u64, len: u64) -> Result<Vec<u8>> {
        const SYNC_ID: u64 = u64::MAX;
        self.start_get(SYNC_ID, key, offset, len)?;
        let mut done = Vec::with_capacity(1);
        loop {
            self.poll_gets(true, &mut done)?;
            if let Some(pos) = done.iter().position(|(id, _)| *id == SYNC_ID) {
                return done.swap_remove(pos).1;
            }
        }
    }

    /// Starts an asynchronous get identified by `id`; its result comes out
    /// of [`Store::poll_gets`]. Errors known before any I/O (not found, a
    /// range past the end) are returned at once.
    pub fn start_get(&mut self, id: u64, key: &[u8], offset: u64, len: u64) -> Result<()> {
        let meta = self.index.get(key).ok_or_else(|| Error::NotFound(key_text(key)))?;
        if let Some(d) = self.damage_of(key, meta.sequence) {
            let kind = scrub::FindingKind::from_code(d.kind).map_or("damage", scrub::FindingKind::name);
            return Err(Error::Corruption {
                device: self.name.clone(),
                what: format!(
                    "shard {:?} chunk {}: on the repair list ({kind} found by the scrubber)",
                    key_text(key),
                    d.chunk
                ),
                offset: d.offset,
            });
        }
        if offset > meta.size {
            return Err(Error::InvalidArgument(format!(
                "range starts at {offset}, past the end of a {}-byte shard",
                meta.size
            )));
        }
        let end = offset.saturating_add(len).min(meta.size);
        let chunk_size = CHUNK_SIZE_BYTES_MAX as u64;
        let first = (offset / chunk_size) as usize;
        let last = if end == offset { first } else { ((end - 1) / chunk_size) as usize };
        let slot = if let Some(free) = self.gets.iter().position(Option::is_none) {
            free
        } else {
            self.gets.push(None);
            self.gets.len() - 1
        };
        for chunk in first..=last {
            self.get_queue.push_back((slot as u32, chunk as u32));
        }
        self.gets[slot] = Some(GetCtx {
            id,
            key: key.to_vec(),
            meta,
            offset,
            end,
            // A one-chunk get takes its bytes straight from the read
            // buffer when it completes (no zeroing first).
            out: if first == last { Vec::new() } else { vec![0u8; (end - offset) as usize] },
            remaining: last - first + 1,
            error: None,
            chunk_crcs: vec![0; last - first + 1],
            started: std::time::Instant::now(),
        });
        Ok(())
    }

    /// Submits queued chunk reads up to the queue depth, collects what has
    /// completed (if `wait` and any are in flight, waiting for at least one
    /// completion or a call of the [`Store::waker`]), and appends finished
    /// gets to `done`.
    pub fn poll_gets(&mut self, wait: bool, done: &mut Vec<(u64, Result<Vec<u8>>)>) -> Result<()> {
        self.submit_gets(done);
        self.reap_gets(wait, done)?;
        while self.finish_next_read(done) {}
        Ok(())
    }

    /// Submits queued chunk reads up to the queue depth (the device hands
    /// them to the kernel at its next enter at the latest). Gets that end
    /// without I/O go to `done`.
    pub fn submit_gets(&mut self, done: &mut Vec<(u64, Result<Vec<u8>>)>) {
        // Reaped reads not yet finished still hold their buffers: a read
        // goes out only when a buffer is free for it.
        while self.dev.in_flight() + self.get_completions.len() < STORE_QUEUE_DEPTH {
            let Some((slot, chunk)) = self.get_queue.pop_front() else { break };
            let ctx = self.gets[slot as usize].as_mut().expect("queued chunk of a live get");
            let loc = ctx.meta.chunk(chunk as usize);
            let len = record::payload_size_bytes(chunk_len(ctx.meta.size, chunk as usize)) as usize;
            if len == 0 {
                // An empty shard: no bytes to read; its CRC is that of nothing.
                let first = (ctx.offset / CHUNK_SIZE_BYTES_MAX as u64) as usize;
                ctx.chunk_crcs[chunk as usize - first] = loc.crc;
                let result = if loc.crc == 0 {
                    Ok(())
                } else {
                    Err(Error::Corruption {
                        device: self.name.clone(),
                        what: format!("shard {:?}: an empty chunk with a non-empty checksum", key_text(&ctx.key)),
                        offset: 0,
                    })
                };
                self.finish_chunk(slot, result, done);
                continue;
            }
            let buf = self.pool.take(len).expect("a free buffer for every queue slot");
            let at = self.payload_offset(loc);
            let token = (u64::from(slot) << 32) | u64::from(chunk);
            if let Err(e) = self.dev.submit(IoOp { token, kind: IoKind::Read { offset: at, buf } }) {
                self.finish_chunk(slot, Err(e), done);
            }
        }
    }

    /// Collects completed reads (if `wait` and any are in flight, waiting
    /// for at least one or a call of the [`Store::waker`]) for
    /// [`Store::finish_next_read`]; submits what the device still holds.
    pub fn reap_gets(&mut self, wait: bool, done: &mut Vec<(u64, Result<Vec<u8>>)>) -> Result<()> {
        if self.dev.in_flight() == 0 {
            return Ok(());
        }
        let mut completions = std::mem::take(&mut self.get_completions);
        let reaped = if wait { self.dev.reap_or_wake(&mut completions) } else { self.dev.reap(0, &mut completions) };
        if let Err(e) = reaped {
            // The ring itself failed: no get in progress can finish. Answer
            // them all and stop serving, rather than wait forever.
            let why = format!("reaping reads failed: {e}");
            let _ = self.fail(&why);
            self.get_queue.clear();
            self.scrub.abandon_windows();
            for ctx in self.gets.iter_mut().filter_map(Option::take) {
                done.push((
                    ctx.id,
                    Err(Error::Poisoned { device: format!("{} ({why})", self.name), op: crate::error::OpKind::Read }),
                ));
            }
            // Reads reaped before the failure belong to the gets just answered.
            completions.clear();
            self.get_completions = completions;
            return Err(e);
        }
        // Finished first in, first out: `finish_next_read` pops.
        completions.reverse();
        self.get_completions = completions;
        Ok(())
    }

    /// Verifies the next reaped read and finishes its get (or scrub window)
    /// when it was the last piece; false when none is left. A thread serving
    /// clients answers a finished get before it verifies the next read, so
    /// the client's next request can go to the device sooner.
    pub fn finish_next_read(&mut self, done: &mut Vec<(u64, Result<Vec<u8>>)>) -> bool {
        let Some(c) = self.get_completions.pop() else { return false };
        let slot = (c.token >> 32) as u32;
        if slot == scrub::SCRUB_TOKEN_SLOT {
            self.scrub_window_done((c.token & 0xFFFF_FFFF) as usize, c);
            return true;
        }
        let chunk = (c.token & 0xFFFF_FFFF) as usize;
        let result = self.verify_chunk(slot, chunk, c);
        self.finish_chunk(slot, result, done);
        true
    }

    /// Gets that finished while a commit or checkpoint drained the device.
    pub fn take_finished_gets(&mut self, done: &mut Vec<(u64, Result<Vec<u8>>)>) {
        done.append(&mut self.finished_gets);
    }

    /// A handle that ends a waiting [`Store::poll_gets`] early from another
    /// thread (`None` when the device's waits are never long).
    pub fn waker(&mut self) -> Result<Option<std::sync::Arc<dyn crate::device::Wake>>> {
        self.dev.waker()
    }

    /// Whether any read (a get, or a scrub window) is still in progress.
    pub fn gets_pending(&self) -> bool {
        self.scrub.in_flight() > 0 || self.gets.iter().any(Option::is_some)
    }

    pub(super) fn verify_chunk(&mut self, slot: u32, chunk: usize, c: Completion) -> Result<()> {
        let at = {
            let ctx = self.gets[slot as usize].as_ref().expect("completion of a live get");
            self.payload_offset(ctx.meta.chunk(chunk))
        };
        let ctx = self.gets[slot as usize].as_mut().expect("completion of a live get");
        let loc = ctx.meta.chunk(chunk);
        let corrupt = |why: String| Error::Corruption {
            device: self.name.clone(),
            what: format!("shard {:?} chunk {chunk}: {why}", key_text(&ctx.key)),
            offset: at,
        };
        if let Err(e) = c.result {
            self.counters.io_errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return Err(corrupt(format!("unreadable: {e}")));
        }
        let buf = c.buf.expect("reads return their buffer");
        let payload = &buf.as_slice()[..chunk_len(ctx.meta.size, chunk)];
        if let Err(p) = record::verify_payload(payload, loc.crc) {
            self.counters.checksum_failures.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return Err(corrupt(p.to_string()));
        }
        let first = (ctx.offset / CHUNK_SIZE_BYTES_MAX as u64) as usize;
        ctx.chunk_crcs[chunk - first] = loc.crc;
        let chunk_size = CHUNK_SIZE_BYTES_MAX as u64;
        let chunk_start = chunk as u64 * chunk_size;
        let from = ctx.offset.max(chunk_start);
        let to = ctx.end.min(chunk_start + payload.len() as u64);
        if from < to {
            let bytes = &payload[(from - chunk_start) as usize..(to - chunk_start) as usize];
            if ctx.out.is_empty() {
                ctx.out = bytes.to_vec();
            } else {
                ctx.out[(from - ctx.offset) as usize..(to - ctx.offset) as usize].copy_from_slice(bytes);
            }
        }
        Ok(())
    }

    pub(super) fn finish_chunk(&mut self, slot: u32, result: Result<()>, done: &mut Vec<(u64, Result<Vec<u8>>)>) {
        let ctx = self.gets[slot as usize].as_mut().expect("chunk of a live get");
        if let Err(e) = result {
            ctx.error.get_or_insert(e);
        }
        ctx.remaining -= 1;
        if ctx.remaining > 0 {
            return;
        }
        let ctx = self.gets[slot as usize].take().expect("checked above");
        self.counters.read_latency.record(ctx.started.elapsed(), ctx.end - ctx.offset);
        let result = match ctx.error {
            Some(e) => Err(e),
            // Each chunk's payload was checked against its CRC; the chunk
            // CRCs must also combine into the shard's end-to-end CRC.
            None if ctx.offset == 0
                && ctx.end == ctx.meta.size
                && combine_crcs(&ctx.chunk_crcs, ctx.meta.size) != ctx.meta.crc =>
            {
                Err(Error::Corruption {
                    device: self.name.clone(),
                    what: format!("shard {:?}: whole-shard checksum mismatch", key_text(&ctx.key)),
                    offset: self.locator_offset(ctx.meta.chunk(0)),
                })
            }
            None => Ok(ctx.out),
        };
        done.push((ctx.id, result));
    }

    /// Completes every get in progress, keeping their results for
    /// `take_finished_gets`: commits, checkpoints and reclamation use the
    /// device one operation at a time and must have it to themselves.
    pub(super) fn quiesce(&mut self) {
        let mut finished = std::mem::take(&mut self.finished_gets);
        while self.gets_pending() {
            if let Err(e) = self.poll_gets(true, &mut finished) {
                let _ = self.fail(&format!("reading failed: {e}"));
                break;
            }
        }
        self.finished_gets = finished;
        // What the blocking paths after this rely on: the device is ours
        // alone (or the store is failed and writes nothing more).
        assert!(
            self.failed.is_some() || self.dev.in_flight() == 0,
            "{}: {} operations in flight after every get and scrub read finished",
            self.name,
            self.dev.in_flight()
        );
    }
}
