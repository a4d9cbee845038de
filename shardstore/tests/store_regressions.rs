//! Regression tests for the failure classes ShardStore reported, each
//! named by the failure it guards against. Reclamation's have their own
//! file (`reclaim_regressions.rs`).

use shardstore::device::sim::Fault;
use shardstore::error::{Error, OpKind};
use shardstore::store::{Op, Store};

#[path = "common/sim_store.rs"]
mod sim_store;
use sim_store::fresh;

/// A chunk whose record ends exactly at, one byte before, or one byte
/// after a block boundary reads back whole.
#[test]
fn chunks_at_the_block_boundary_read_back() {
    let (_, mut store) = fresh(1);
    for key_len in [1usize, 7, 255] {
        let key = vec![b'k'; key_len];
        for len in [4096 - 64 - key_len - 1, 4096 - 64 - key_len, 4096 - 64 - key_len + 1] {
            let data: Vec<u8> = (0..len).map(|i| (i * 31) as u8).collect();
            store.put(&key, &data).unwrap();
            assert_eq!(store.get(&key).unwrap(), data, "key {key_len} bytes, payload {len}");
            assert_eq!(store.get_range(&key, len as u64 - 1, 10).unwrap(), data[len - 1..]);
        }
    }
    store.check_invariants();
}

/// A record whose header block landed but whose payload did not (a torn
/// write that leaves a valid header) is refused, never served.
#[test]
fn a_torn_chunk_with_a_valid_header_is_refused() {
    let (h, mut store) = fresh(3);
    let data = vec![9u8; 20_000];
    store.put(b"k", &data).unwrap();
    let (offset, len) = store.chunk_locations(b"k").unwrap()[0];
    // The header block just before the payload stays; the payload's later
    // sectors revert to what was there before (zeros).
    h.scribble(offset + 512, &vec![0u8; (len - 512) as usize]);
    let err = store.get(b"k").unwrap_err();
    assert!(matches!(err, Error::Corruption { ref what, .. } if what.contains("payload")), "{err}");
    assert!(store.get_range(b"k", 0, 100).is_err(), "a range in the torn chunk is refused too");
}

/// A device that disappears (every operation fails) and comes back: the
/// store refuses work while it is gone and, reopened, has every
/// acknowledged shard.
#[test]
fn a_device_removed_and_returned() {
    let (h, mut store) = fresh(4);
    store.put(b"before", b"acknowledged").unwrap();
    for op in [OpKind::Read, OpKind::Write, OpKind::Flush] {
        h.inject(Fault { op, range: None, skip: 0, remaining: None });
    }
    assert!(store.put(b"during", b"x").is_err());
    assert!(store.get(b"before").is_err(), "reads fail while the device is gone");
    assert!(store.put(b"during2", b"y").is_err(), "the store stays failed");
    h.clear_faults();
    drop(store);
    let mut store = Store::open(Box::new(h.attach())).unwrap();
    assert_eq!(store.get(b"before").unwrap(), b"acknowledged");
    assert!(store.get(b"during").is_err());
    store.put(b"after", b"ok").unwrap();
    store.check_invariants();
}

/// Reads reaped but not yet finished (the store thread finishes them one
/// at a time, starting new gets in between) still hold their buffers: gets
/// started meanwhile wait for a buffer instead of exhausting the pool.
#[test]
fn gets_started_while_reaped_reads_wait_do_not_exhaust_buffers() {
    let (_h, mut store) = fresh(31);
    let depth = shardstore::store::STORE_QUEUE_DEPTH as u64;
    let value = |i: u64| vec![i as u8; 4096];
    for i in 0..2 * depth {
        store.put(format!("k{i}").as_bytes(), &value(i)).unwrap();
    }
    let mut done = Vec::new();
    for i in 0..depth {
        store.start_get(i, format!("k{i}").as_bytes(), 0, u64::MAX).unwrap();
    }
    store.submit_gets(&mut done);
    store.reap_gets(true, &mut done).unwrap();
    // One read finished, then a queue's worth of new gets is started.
    assert!(store.finish_next_read(&mut done));
    for i in depth..2 * depth {
        store.start_get(i, format!("k{i}").as_bytes(), 0, u64::MAX).unwrap();
    }
    store.submit_gets(&mut done);
    while store.completions_pending() {
        store.poll_gets(true, &mut done).unwrap();
    }
    done.sort_by_key(|(id, _)| *id);
    assert_eq!(done.len() as u64, 2 * depth);
    for (id, result) in done {
        assert_eq!(result.unwrap(), value(id), "get {id}");
    }
}

/// A long put is copied into its I/O buffer a block at a time, the commit
/// serving gets between blocks: gets started then are answered before the
/// put's write reaches the device (they used to wait for the whole copy),
/// even twice a queue's worth of them, while the copy holds a buffer no
/// queue slot carries yet (a read then waits for a buffer: without that
/// wait, the read path took a buffer the pool did not have and panicked).
#[test]
fn gets_are_answered_while_a_long_put_is_copied() {
    let (h, mut store) = fresh(41);
    let gets = 2 * shardstore::store::STORE_QUEUE_DEPTH as u64;
    let value = |i: u64| vec![i as u8; 4096];
    for i in 0..gets {
        store.put(format!("k{i}").as_bytes(), &value(i)).unwrap();
    }
    let big: Vec<u8> = (0..1u32 << 20).map(|i| (i.wrapping_mul(13) >> 3) as u8).collect();
    let writes_before = h.stats().writes;
    let mut done = Vec::new();
    let (mut started, mut answered_before_the_write) = (false, 0);
    let mut pump = |store: &mut Store| {
        if !started {
            for i in 0..gets {
                store.start_get(i, format!("k{i}").as_bytes(), 0, u64::MAX).unwrap();
            }
            started = true;
        }
        store.submit_gets(&mut done);
        store.take_finished_gets(&mut done);
        if h.stats().writes == writes_before {
            answered_before_the_write = done.len();
        }
    };
    let put = Op::Put { key: b"big".to_vec(), data: big.clone().into(), crc32c: None, version: None };
    let results = store.commit_with(&[put], &mut pump);
    for r in results {
        r.unwrap();
    }
    assert!(answered_before_the_write > 0, "no get was answered while the put was copied");
    while store.completions_pending() {
        store.poll_gets(true, &mut done).unwrap();
    }
    store.take_finished_gets(&mut done);
    done.sort_by_key(|(id, _)| *id);
    assert_eq!(done.len() as u64, gets);
    for (id, result) in done {
        assert_eq!(result.unwrap(), value(id), "get {id}");
    }
    assert_eq!(store.get(b"big").unwrap(), big);
}

/// The store thread panicked with "blocking helper used with operations
/// in flight": the scrubber's last window of an extent completed while a
/// get's read was still in flight, and finishing the extent wrote its log
/// record with a blocking write. The simulated device holds completions
/// back so the get's read is reaped only after the scrub window's.
#[test]
fn finishing_a_scrub_extent_with_a_get_in_flight_keeps_the_get() {
    use shardstore::store::scrub::ScrubSettings;
    let (h, mut store) = fresh(11);
    let data: Vec<u8> = (0..20_000).map(|i| (i * 7) as u8).collect();
    store.put(b"a", &data).unwrap();
    store.put(b"b", &data).unwrap();
    store.set_scrub_settings(ScrubSettings { unthrottled: true, ..ScrubSettings::default() });
    h.hold_completions(Some(0));
    let mut done = Vec::new();
    // Step until the scrubber's window over extent 0 is in flight.
    for _ in 0..100 {
        store.scrub_step().unwrap();
        if store.completions_pending() {
            break;
        }
    }
    assert!(store.completions_pending(), "the scrubber never started a read");
    // A get goes to the device behind the scrub window.
    store.start_get(7, b"b", 0, u64::MAX).unwrap();
    store.submit_gets(&mut done);
    // One completion: the scrub window's. The get's read is still in flight.
    store.reap_gets(true, &mut done).unwrap();
    assert!(store.finish_next_read(&mut done));
    assert!(done.is_empty(), "the get's read must still be in flight");
    assert!(store.scrub_wants_step());
    // The extent is finished: its record is logged with the get in flight.
    store.scrub_step().unwrap();
    h.hold_completions(None);
    while store.completions_pending() || !done.is_empty() {
        store.poll_gets(false, &mut done).unwrap();
        store.take_finished_gets(&mut done);
        if let Some((id, result)) = done.pop() {
            assert_eq!(id, 7);
            assert_eq!(result.unwrap(), data);
            break;
        }
    }
    assert_eq!(store.scrub_status().counters.extents_verified, 1);
    store.check_invariants();
}

/// The client's CRC was checked against the body in the agent only: the
/// store never compared it with the bytes it wrote. A put carrying a CRC
/// the data does not have now fails with `BadDigest` before any write,
/// for one-chunk and many-chunk shards, and the shard it would have
/// replaced stays.
#[test]
fn a_put_whose_crc_differs_from_its_bytes_writes_nothing() {
    use shardstore::store::Op;
    let (h, mut store) = fresh(12);
    for len in [0usize, 1, 5000, (1 << 20) + 17, (3 << 20) + 5] {
        let old: Vec<u8> = (0..len).map(|i| (i * 13) as u8).collect();
        let new: Vec<u8> = (0..len).map(|i| (i * 17 + 1) as u8).collect();
        store.put(b"k", &old).unwrap();
        let right = crc32c::crc32c(&new);
        let wrong = right ^ 0x0100_0000;
        let writes = h.stats().writes;
        let put = |crc| Op::Put { key: b"k".to_vec(), data: new.clone().into(), crc32c: Some(crc), version: None };
        let err = store.commit(&[put(wrong)]).pop().unwrap().unwrap_err();
        assert!(
            matches!(err, Error::BadDigest { expected, actual, .. } if expected == wrong && actual == right),
            "{len} bytes: {err}"
        );
        assert_eq!(h.stats().writes, writes, "{len} bytes: a refused put wrote to the device");
        assert_eq!(store.get(b"k").unwrap(), old, "{len} bytes: the shard it would have replaced");
        store.commit(&[put(right)]).pop().unwrap().unwrap();
        assert_eq!(store.get(b"k").unwrap(), new);
        assert_eq!(store.stat(b"k").unwrap().crc32c, right);
    }
    store.check_invariants();
}

/// Regression (CI, the sim crash test): a one-flush batch whose log write
/// is larger than one reusable log buffer (a delete and 8 puts of 4 KiB:
/// 64 KiB of records, whose payload copies and records make 68 KiB of
/// log) took a pooled buffer too small for it and panicked the store
/// thread. Every size of
/// log write around the buffer's commits, and reads back after a restart.
#[test]
fn a_one_flush_log_write_larger_than_a_log_buffer_commits() {
    let (h, mut store) = fresh(91);
    for puts in [6usize, 7, 8] {
        // A delete first: its record takes the head of the log write, so
        // eight puts' payload copies spill into a 17th block (68 KiB).
        let victim = format!("victim/{puts}").into_bytes();
        store.put(&victim, b"x").unwrap();
        let mut ops = vec![Op::Delete { key: victim }];
        ops.extend((0..puts).map(|i| Op::put(format!("big/{puts}/{i}").into_bytes(), vec![i as u8; 4096])));
        let before = store.one_flush_commits();
        for r in store.commit(&ops) {
            r.unwrap();
        }
        assert_eq!(store.one_flush_commits(), before + 1, "{puts} x 4 KiB is one flush");
    }
    drop(store);
    h.crash_with(|_, _| shardstore::device::sim::Fate::Drop);
    let mut store = Store::open(Box::new(h.attach())).unwrap();
    for puts in [6usize, 7, 8] {
        for i in 0..puts {
            assert_eq!(store.get(format!("big/{puts}/{i}").as_bytes()).unwrap(), vec![i as u8; 4096]);
        }
    }
}

/// A log that filled its half to one block before the end, then a crash:
/// replay finds no valid block at the half's last block and looks at the
/// block after it for proof of loss, which for the second half lies past
/// the metadata region. It must take the invalid block as the log's end,
/// not look outside the region (shardbench's crash test found this as a
/// failed debug assertion in `meta_copies_of`).
#[test]
fn a_log_ending_one_block_before_the_second_half_ends_reopens() {
    let (h, mut store) = fresh(93);
    let layout = store.superblock().layout;
    let half = layout.meta_size_bytes / 2;
    let last_block = layout.meta_offset + 2 * half - 4096;
    let mut puts = 0u64;
    loop {
        let (start, len) = store.metadata_in_use()[0];
        if start + len == last_block {
            break;
        }
        assert!(puts < 200_000, "the log never stopped at the second half's last block");
        store.put(format!("k/{}", puts % 64).as_bytes(), &puts.to_le_bytes()).unwrap();
        puts += 1;
    }
    drop(store);
    h.crash();
    let mut store = Store::open(Box::new(h.attach())).unwrap();
    for k in puts.saturating_sub(64)..puts {
        assert_eq!(store.get(format!("k/{}", k % 64).as_bytes()).unwrap(), k.to_le_bytes());
    }
    // And it keeps working from there.
    store.put(b"after", b"y").unwrap();
    assert_eq!(store.get(b"after").unwrap(), b"y");
}

/// A batch's small records that lie side by side on the device go as one
/// write (a run, their headers sharing a header block), split where the
/// open extent ends; each reads back, also after a restart; a failed run
/// write fails every put in it, and nothing of them becomes visible.
#[test]
fn small_records_side_by_side_go_as_one_write_and_fail_together() {
    let (h, mut store) = fresh(12);
    let batch = |tag: u8, n: usize| -> Vec<Op> {
        (0..n).map(|i| Op::put(format!("run/{tag}/{i:02}").into_bytes(), vec![tag ^ i as u8; 4000])).collect()
    };
    let expect_ok = |results: Vec<Result<(), Error>>| assert!(results.iter().all(Result::is_ok), "{results:?}");

    // 20 records of one payload block and a shared header block in a fresh
    // extent: one data write, then the log's two copies (a two-flush
    // batch: records of their own would be 160 KiB).
    let before = h.stats();
    expect_ok(store.commit(&batch(1, 20)));
    let after = h.stats();
    assert_eq!(after.writes - before.writes, 3, "the records went as one write");
    assert_eq!(after.flushes - before.flushes, 2);

    // Leave ten blocks in the open extent: a header block and nine
    // payloads fit it, the other eleven start a run in the next extent.
    let layout = store.superblock().layout;
    let extent_of = |offset: u64| (offset - layout.data_offset) / layout.extent_size_bytes;
    let open = extent_of(store.chunk_locations(b"run/1/19").unwrap()[0].0);
    let per_extent = (layout.extent_size_bytes / 4096) as u32;
    let left_blocks = per_extent - store.extents()[open as usize].write_blocks;
    // A shard's records take a header block per chunk (of 1 MiB) and its
    // payload's blocks.
    let chunks = (1..8u32).find(|&c| (left_blocks - 10 - c) as usize * 4096 <= c as usize * (1 << 20)).unwrap();
    let filler = vec![7u8; ((left_blocks - 10 - chunks) * 4096) as usize];
    store.put(b"filler", &filler).unwrap();
    assert_eq!(store.extents()[open as usize].write_blocks, per_extent - 10);
    let before = h.stats();
    expect_ok(store.commit(&batch(2, 20)));
    let after = h.stats();
    assert_eq!(after.writes - before.writes, 4, "two runs: the extent's end splits them");
    assert_eq!(extent_of(store.chunk_locations(b"run/2/08").unwrap()[0].0), open, "nine fill the open extent");
    assert_ne!(extent_of(store.chunk_locations(b"run/2/09").unwrap()[0].0), open, "the tenth opens the next");

    // The run's write fails: every put in it fails, none is visible, and
    // the next batch goes through.
    h.inject(Fault { op: OpKind::Write, range: None, skip: 0, remaining: Some(1) });
    let results = store.commit(&batch(3, 20));
    assert!(results.iter().all(|r| matches!(r, Err(Error::Io { .. }))), "{results:?}");
    for op in batch(3, 20) {
        assert!(matches!(store.get(op.key()), Err(Error::NotFound(_))), "a failed put is not visible");
    }
    expect_ok(store.commit(&batch(4, 20)));

    let check = |store: &mut Store| {
        for tag in [1u8, 2, 4] {
            for op in batch(tag, 20) {
                let Op::Put { key, data, .. } = op else { unreachable!() };
                assert_eq!(store.get(&key).unwrap(), data.to_vec(), "{key:?}");
            }
        }
        assert_eq!(store.get(b"filler").unwrap(), filler);
    };
    check(&mut store);
    drop(store);
    let mut store = Store::open(Box::new(h.attach())).unwrap();
    store.check_invariants();
    check(&mut store);
}

/// A get still queued while later commits empty its shard's extent, reset
/// it and write there again answers the bytes it asked for: the commit
/// that could reuse the extent finishes the reads that started before the
/// reset first (commits otherwise let reads in flight run through them).
#[test]
fn a_get_queued_across_commits_never_reads_a_reused_extent() {
    let (_, mut store) = fresh(13);
    let mib = |tag: u8| vec![tag; 1 << 20];
    let layout = store.superblock().layout;
    let extent_of = |store: &Store, key: &[u8]| {
        (store.chunk_locations(key).unwrap()[0].0 - layout.data_offset) / layout.extent_size_bytes
    };
    store.put(b"x", &mib(1)).unwrap();
    let first = extent_of(&store, b"x");
    // Fill the extent: the put that no longer fits opens the next one.
    let mut fillers = Vec::new();
    loop {
        let key = format!("filler/{}", fillers.len()).into_bytes();
        store.put(&key, &mib(2)).unwrap();
        if extent_of(&store, &key) != first {
            break;
        }
        fillers.push(key);
    }
    // A get of x, its read queued (a commit's own pump sends no reads).
    store.start_get(7, b"x", 0, u64::MAX).unwrap();
    // Everything in the first extent dies; the next commit resets it.
    store.put(b"x", &mib(3)).unwrap();
    for key in &fillers {
        store.delete(key).unwrap();
    }
    // Puts until one lands in the first extent again (the lowest free one
    // once the open extent is full).
    let mut reused = false;
    for i in 0..16 {
        let key = format!("later/{i}").into_bytes();
        store.put(&key, &mib(4)).unwrap();
        if extent_of(&store, &key) == first {
            reused = true;
            break;
        }
    }
    assert!(reused, "the test never wrote the first extent again");
    let mut done = Vec::new();
    while store.completions_pending() {
        store.poll_gets(true, &mut done).unwrap();
    }
    store.take_finished_gets(&mut done);
    let (_, answer) = done.into_iter().find(|(id, _)| *id == 7).expect("the get finished");
    assert_eq!(answer.expect("the get reads what it asked for"), mib(1));
}

/// A shard that cannot join a group (an empty one) amid a batch whose
/// records are grouped ends the group before it: fsck, which walks a
/// group's block and skips its payloads, finds every record, and all read
/// back, also after a restart.
#[test]
fn a_record_of_its_own_amid_grouped_records_is_found_by_fsck() {
    let (h, mut store) = fresh(14);
    let mut ops: Vec<Op> = (0..10u8).map(|i| Op::put(vec![b'a', i], vec![i; 5000])).collect();
    ops.insert(5, Op::put(b"empty".to_vec(), Vec::new()));
    assert!(store.commit(&ops).iter().all(Result::is_ok));
    let check = |store: &mut Store| {
        let fsck = store.fsck();
        assert!(fsck.is_consistent(), "{:?}", fsck.problems);
        assert_eq!(fsck.records_live, 11);
        for op in &ops {
            let Op::Put { key, data, .. } = op else { unreachable!() };
            assert_eq!(store.get(key).unwrap(), data.to_vec(), "{key:?}");
        }
    };
    check(&mut store);
    // The five before the empty shard share one header block, the five
    // after it another: 1 + 10 (five payloads of two blocks), 1 (the empty
    // shard's header block), 1 + 10.
    assert_eq!(store.extents().iter().map(|e| e.write_blocks).sum::<u32>(), 23);
    drop(store);
    let mut store = Store::open(Box::new(h.attach())).unwrap();
    check(&mut store);
}
