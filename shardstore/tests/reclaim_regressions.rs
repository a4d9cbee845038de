//! Regression tests of reclamation (moving live chunks out of mostly dead
//! extents, along with commits or a whole extent at a time), and of the
//! operations it shares the ring with, each named by the failure it
//! guards against.

use shardstore::device::sim::{Fault, SimConfig, SimDevice};
use shardstore::error::{Error, OpKind};
use shardstore::format::{format, FormatOptions};
use shardstore::store::{Op, Pace, Store};

#[path = "common/half_dead.rs"]
mod half_dead;
#[path = "common/sim_store.rs"]
mod sim_store;
use sim_store::fresh;

/// A transient read error during reclamation aborts the pass without
/// resetting the extent; data stays readable and a later pass succeeds.
#[test]
fn reclamation_after_a_transient_read_error() {
    let (h, mut store) = fresh(2);
    let keep: Vec<u8> = (0..50_000).map(|i| i as u8).collect();
    store.put(b"keep", &keep).unwrap();
    store.put(b"dead", &vec![1u8; 1 << 20]).unwrap();
    store.put(b"filler", &vec![2u8; 3 << 20]).unwrap();
    store.delete(b"dead").unwrap();
    let (offset, _) = store.chunk_locations(b"keep").unwrap()[0];
    h.inject(Fault { op: OpKind::Read, range: Some((offset, 4096)), skip: 0, remaining: Some(1) });
    let err = store.reclaim().unwrap_err();
    assert!(matches!(err, Error::Corruption { .. }), "{err}");
    assert!(store.extents()[0].write_blocks > 0, "the extent must not be reset after a failed pass");
    store.check_invariants();
    assert_eq!(store.get(b"keep").unwrap(), keep);
    let (victim, moved) = store.reclaim().unwrap().expect("the retry reclaims");
    assert_eq!(victim, 0);
    assert!(moved > 0);
    assert_eq!(store.get(b"keep").unwrap(), keep);
    drop(store);
    let mut store = Store::open(Box::new(h.attach())).unwrap();
    store.check_invariants();
    assert_eq!(store.get(b"keep").unwrap(), keep);
    assert_eq!(store.extents()[0].generation, 1, "the reset is durable");
}

/// Overwriting a small working set far beyond the device's capacity never
/// runs out of space: reclamation keeps up.
#[test]
fn steady_overwrites_never_run_out_of_space() {
    let (h, mut store) = fresh(5);
    let mut last = std::collections::BTreeMap::new();
    for round in 0..400u32 {
        for k in 0..8u32 {
            let data = vec![(round + k) as u8; 200_000 + k as usize * 1000];
            let key = format!("hot/{k}").into_bytes();
            store.put(&key, &data).unwrap_or_else(|e| panic!("round {round}: {e}"));
            last.insert(key, data);
        }
    }
    // 400 x 8 x ~200 KB = ~650 MB written through a 64 MiB device.
    store.check_invariants();
    drop(store);
    let mut store = Store::open(Box::new(h.attach())).unwrap();
    store.check_invariants();
    for (k, v) in &last {
        assert_eq!(&store.get(k).unwrap(), v);
    }
}

/// A steady random overwrite load is reclaimed in steps that ride on the
/// group commits (no commit evacuates a whole extent first), and a crash
/// in the middle of it loses no acknowledged put.
#[test]
fn reclamation_rides_on_commits_under_steady_overwrites_and_survives_crashes() {
    overwrites_reclaimed_along(None);
}

/// The same with each victim's live chunks listed 50 index entries at a
/// time (one step per commit, 40 steps for the 2 000 keys): the keys
/// overwritten between the steps, the chunks listed before and moved
/// after, and the crashes, lose nothing. (A full walk of the index per
/// victim held the store thread for the better part of a second with ten
/// million shards.)
#[test]
fn reclamation_listing_its_victim_across_commits_loses_nothing() {
    overwrites_reclaimed_along(Some(50));
}

fn overwrites_reclaimed_along(list_step: Option<usize>) {
    use shardstore::rng::Rng;
    use std::collections::HashMap;
    // 16 extents of 4 MiB; 2 000 shards of two payload blocks each, their
    // headers grouped (16 MiB live).
    let (h, mut store) = fresh(9);
    let step = |store: &mut Store| {
        if let Some(n) = list_step {
            store.set_reclaim_list_step_entries(n);
        }
    };
    step(&mut store);
    let mut rng = Rng::new(9);
    let mut model: HashMap<Vec<u8>, Vec<u8>> = HashMap::new();
    let mut round = 0u64;
    let (mut walks, mut resets) = (0, 0);
    for crash_at in [150u64, 320, 500] {
        while round < crash_at {
            round += 1;
            let ops = overwrites(&mut rng, round);
            for r in store.commit(&ops) {
                r.unwrap();
            }
            apply(&mut model, &ops);
        }
        let counts = store.reclaim_counts();
        assert!(counts.chunks_moved_along > 0 && counts.extents_reset_along > 0, "{counts:?}");
        (walks, resets) = (walks + counts.index_walks, resets + counts.extents_reset_along);
        assert_eq!(counts.whole_extents, 0, "no commit waited for a whole extent: {counts:?}");
        store.check_invariants();
        // Power cut: unflushed writes meet random fates; everything
        // acknowledged is there after recovery.
        drop(store);
        h.crash();
        store = Store::open(Box::new(h.attach())).unwrap();
        step(&mut store);
        store.check_invariants();
        assert_model(&mut store, &model);
    }
    // A walk of the index lists the next victims with its own (one walk
    // per victim before, and a second for a victim emptied, not yet reset).
    assert!(walks * 4 <= resets, "{walks} walks of the index for {resets} extents reset");
}

/// 32 puts over 2 000 keys (`k00000`..), each 7 000 to 7 999 bytes (two
/// payload blocks: small records, staged into runs), for round `round`.
fn overwrites(rng: &mut shardstore::rng::Rng, round: u64) -> Vec<Op> {
    (0..32)
        .map(|i| {
            let key = format!("k{:05}", rng.below(2000)).into_bytes();
            Op::put(key, vec![(round * 31 + i) as u8; 7000 + (round as usize * 7 + i as usize) % 1000])
        })
        .collect()
}

/// The model after `ops` (puts) were acknowledged.
fn apply(model: &mut std::collections::HashMap<Vec<u8>, Vec<u8>>, ops: &[Op]) {
    for op in ops {
        if let Op::Put { key, data, .. } = op {
            model.insert(key.clone(), data.to_vec());
        }
    }
}

/// Every key of the model reads back as the model has it.
fn assert_model(store: &mut Store, model: &std::collections::HashMap<Vec<u8>, Vec<u8>>) {
    for (key, data) in model {
        assert_eq!(&store.get(key).unwrap(), data, "{}", String::from_utf8_lossy(key));
    }
}

/// Gets kept waiting while a group commit's reclamation step moved chunks:
/// every read finished first, and the step's reads, checks and writes ran
/// with the device to themselves (4 ms at p99 in a full store). Now gets
/// are started and answered between them, including gets of the very
/// chunks being moved, and read what the index holds; while gets are in
/// progress reclamation keeps at most `RECLAIM_IN_FLIGHT_MAX` of its
/// operations on the device (a debug assertion where it submits).
#[test]
fn gets_are_answered_while_reclamation_moves_chunks() {
    use shardstore::rng::Rng;
    use std::collections::HashMap;
    let (h, mut store) = fresh(53);
    let mut rng = Rng::new(53);
    let mut model: HashMap<Vec<u8>, Vec<u8>> = HashMap::new();
    let mut reclaiming_commits = 0;
    let mut answered_during_moves = 0;
    for round in 0..600u64 {
        // Small puts only: they are staged into runs with no pump, so the
        // commit's first pump before any write is reclamation's.
        let ops = overwrites(&mut rng, round);
        let in_batch: std::collections::HashSet<&[u8]> = ops.iter().map(Op::key).collect();
        let readable: Vec<(u64, Vec<u8>)> = model
            .keys()
            .filter(|k| !in_batch.contains(k.as_slice()))
            .take(64)
            .enumerate()
            .map(|(i, k)| (i as u64, k.clone()))
            .collect();
        let moved_before = store.reclaim_counts().chunks_moved_along;
        let writes_before = h.stats().writes;
        let (mut started, mut during) = (false, 0);
        let mut done = Vec::new();
        // Eight gets are in flight when the commit starts (they keep
        // going: reclamation then keeps few of its reads ahead of them),
        // the rest start from its first pump.
        let (before, after) = readable.split_at(readable.len() / 8);
        for (id, key) in before {
            store.start_get(*id, key, 0, u64::MAX).unwrap();
        }
        store.submit_gets(&mut done);
        let mut pump = |store: &mut Store| {
            if !started {
                for (id, key) in after {
                    store.start_get(*id, key, 0, u64::MAX).unwrap();
                }
                started = true;
            }
            store.submit_gets(&mut done);
            store.take_finished_gets(&mut done);
            if h.stats().writes == writes_before {
                during = done.len();
            }
        };
        for r in store.commit_with(&ops, &mut pump) {
            r.unwrap();
        }
        while store.completions_pending() {
            store.poll_gets(true, &mut done).unwrap();
        }
        store.take_finished_gets(&mut done);
        assert_eq!(done.len(), readable.len(), "round {round}: every get answered");
        for (id, result) in done {
            let key = &readable[id as usize].1;
            assert_eq!(result.unwrap(), model[key], "round {round}: {}", String::from_utf8_lossy(key));
        }
        apply(&mut model, &ops);
        if store.reclaim_counts().chunks_moved_along > moved_before {
            reclaiming_commits += 1;
            answered_during_moves += during;
        }
        if reclaiming_commits >= 20 {
            break;
        }
    }
    assert!(reclaiming_commits >= 20, "only {reclaiming_commits} commits moved chunks");
    assert!(answered_during_moves > 0, "no get was answered while a commit moved chunks");
    assert_eq!(store.reclaim_counts().whole_extents, 0, "{:?}", store.reclaim_counts());
    store.check_invariants();
    assert_model(&mut store, &model);
}

/// An idle pass (or a commit's last resort) evacuating a whole extent ran
/// with the device to itself: a get arriving then waited for every chunk
/// of the extent to be read, verified and written again (tens of ms for a
/// 64 MiB extent). Now gets are answered while the chunks move, and read
/// what the index holds; the extent is reset only once they finished.
#[test]
fn gets_are_answered_while_a_whole_extent_is_reclaimed() {
    let (h, mut store) = fresh(61);
    half_dead(&mut store);
    let flushes_before = h.stats().flushes;
    let (mut next, mut during) = (0u64, 0usize);
    let mut done = Vec::new();
    let mut pump = |store: &mut Store| {
        // Eight gets in progress at a time, as a client at QD8.
        while next < half_dead::SHARDS && next - (done.len() as u64) < 8 {
            store.start_get(next, &half_dead::key(next), 0, u64::MAX).unwrap();
            next += 1;
        }
        store.submit_gets(&mut done);
        store.take_finished_gets(&mut done);
        if h.stats().flushes == flushes_before {
            during = done.len();
        }
    };
    let (victim, moved) =
        store.reclaim_with(&mut pump, Pace::Background, &|| false).unwrap().expect("an extent half dead is reclaimed");
    assert!(moved > 0, "extent {victim} had live chunks to move");
    assert!(during > 0, "no get was answered while extent {victim}'s chunks moved");
    while store.completions_pending() {
        store.poll_gets(true, &mut done).unwrap();
    }
    store.take_finished_gets(&mut done);
    assert_eq!(done.len() as u64, next);
    for (id, result) in done {
        assert_eq!(result.unwrap(), half_dead::value(id), "get {id}");
    }
    assert_eq!(store.extents()[victim as usize].write_blocks, 0, "extent {victim} is free again");
    store.check_invariants();
    drop(store);
    let mut store = Store::open(Box::new(h.attach())).unwrap();
    store.check_invariants();
    assert_half_dead(&mut store);
}

/// Every shard reads back as `half_dead` left it.
fn assert_half_dead(store: &mut Store) {
    for i in 0..half_dead::SHARDS {
        assert_eq!(store.get(&half_dead::key(i)).unwrap(), half_dead::value(i), "k{i:04}");
    }
}

/// The half-dead store (`common/half_dead.rs`).
fn half_dead(store: &mut Store) {
    half_dead::fill(|key, value| store.put(&key, &value).unwrap());
}

/// In the background (the thread's idle pass) reclamation keeps at most
/// `RECLAIM_IN_FLIGHT_MAX` of its operations on the device even with no
/// get in progress, so a get arriving finds little ahead of it (32 chunk
/// reads sent at once made one wait 25 ms); a commit's pass (foreground)
/// with no get in progress fills the queue.
#[test]
fn background_reclamation_keeps_little_on_the_device() {
    use shardstore::store::RECLAIM_IN_FLIGHT_MAX;
    for pace in [Pace::Background, Pace::Foreground] {
        let (h, mut store) = fresh(67);
        half_dead(&mut store);
        h.reset_in_flight_max();
        // Read at each pump: while chunks move, before the pass's flush and
        // log write (which have the device to themselves).
        let mut moving = 0;
        let mut pump = |_: &mut Store| moving = h.stats().in_flight_max;
        store.reclaim_with(&mut pump, pace, &|| false).unwrap().expect("an extent half dead is reclaimed");
        let most = moving as usize;
        if pace == Pace::Background {
            assert!((1..=RECLAIM_IN_FLIGHT_MAX).contains(&most), "{most} at once in the background");
        } else {
            assert!(most > RECLAIM_IN_FLIGHT_MAX, "only {most} at once in the foreground");
        }
        assert_half_dead(&mut store);
        store.check_invariants();
    }
}

/// An idle pass gives way to writes: asked between batches of chunks, it
/// ends there, logging the chunks it moved (they read from their new
/// place, before and after a restart) and leaving the rest of the extent
/// for a later pass, which finishes it.
#[test]
fn a_whole_extent_pass_that_gives_way_logs_what_it_moved() {
    let (h, mut store) = fresh(73);
    half_dead(&mut store);
    let asked = std::cell::Cell::new(0);
    let give_way = || {
        asked.set(asked.get() + 1);
        true
    };
    assert_eq!(store.reclaim_with(&mut |_| {}, Pace::Background, &give_way).unwrap(), None, "the pass gave way");
    assert_eq!(asked.get(), 1, "asked after the first batch");
    let moved = store.reclaim_counts().chunks_moved_whole;
    assert_eq!(moved, shardstore::store::STORE_QUEUE_DEPTH as u64, "one batch of chunks moved");
    assert_eq!(store.reclaim_counts().whole_extents, 0);
    assert_eq!(store.reclaim_counts().passes_given_way, 1, "the pass is counted as given way");
    store.check_invariants();
    drop(store);
    let mut store = Store::open(Box::new(h.attach())).unwrap();
    store.check_invariants();
    assert_half_dead(&mut store);
    let (victim, _) = store.reclaim_with(&mut |_| {}, Pace::Background, &|| false).unwrap().expect("finished later");
    assert_eq!(store.extents()[victim as usize].write_blocks, 0, "extent {victim} is free again");
    store.check_invariants();
    assert_half_dead(&mut store);
}

/// An idle pass lists its victim's chunks a step at a time, serving gets
/// between the steps, and gives way to writes there too: what it listed
/// stays listed, and the next pass goes on from it and empties the extent.
#[test]
fn a_whole_extent_pass_gives_way_while_it_lists_and_goes_on_from_there() {
    let (h, mut store) = fresh(74);
    half_dead(&mut store);
    store.set_reclaim_list_step_entries(1);
    let pumped = std::cell::Cell::new(0);
    let mut pump = |_: &mut Store| pumped.set(pumped.get() + 1);
    assert_eq!(store.reclaim_with(&mut pump, Pace::Background, &|| true).unwrap(), None, "the pass gave way");
    assert_eq!(pumped.get(), 1, "gets were served after the first step");
    let counts = store.reclaim_counts();
    assert_eq!((counts.chunks_moved_whole, counts.passes_given_way), (0, 1), "{counts:?}");
    store.check_invariants();
    pumped.set(0);
    let mut pump = |_: &mut Store| pumped.set(pumped.get() + 1);
    let (victim, _) = store.reclaim_with(&mut pump, Pace::Background, &|| false).unwrap().expect("finished");
    assert!(pumped.get() > 1, "listed in steps, gets served between them");
    assert_eq!(store.extents()[victim as usize].write_blocks, 0, "extent {victim} is free again");
    assert_eq!(store.reclaim_counts().whole_extents, 1);
    store.check_invariants();
    assert_half_dead(&mut store);
    drop(store);
    let mut store = Store::open(Box::new(h.attach())).unwrap();
    store.check_invariants();
    assert_half_dead(&mut store);
}

/// A commit or reclamation whose wait on the ring failed gives up with
/// its operations still on the device; their completions come back to
/// whatever reaps next. A get reaping them after the store failed found
/// a commit's (or reclamation's) token in the read pipeline and panicked
/// the store thread; they are dropped (the store failed and its callers
/// were answered), and the get reads what was stored.
#[test]
fn operations_given_up_on_a_failed_reap_leave_gets_working() {
    let (h, mut store) = fresh(61);
    let value = vec![5u8; 4096];
    store.put(b"kept", &value).unwrap();
    h.inject(Fault::once(OpKind::Submit));
    let err = store.put(b"lost", &[6u8; 4096]).unwrap_err();
    assert!(matches!(err, Error::Poisoned { .. }), "the failed reap fails the put: {err}");
    assert_eq!(h.stats().faults_hit, 1);
    assert_eq!(store.get(b"kept").unwrap(), value, "a get after the failure reads what was stored");
    assert_eq!(store.get(b"kept").unwrap(), value);

    let (h, mut store) = fresh(62);
    half_dead(&mut store);
    // Past the first reap, so the pass has its reads out when one fails.
    h.inject(Fault { skip: 1, ..Fault::once(OpKind::Submit) });
    let err = store.reclaim_with(&mut |_| {}, Pace::Foreground, &|| false).unwrap_err();
    assert!(matches!(err, Error::Poisoned { .. }), "the failed reap fails the pass: {err}");
    assert_eq!(h.stats().faults_hit, 1);
    assert_half_dead(&mut store);
}

/// In the background a batch moves at most
/// `RECLAIM_BACKGROUND_BATCH_BYTES_MAX` of chunks (at least one), so an
/// idle pass gives way to a write after that much: batches of 32 chunks
/// of 1 MiB kept a 4 KiB PUT on a quiet agent waiting 20 ms at p90. A
/// foreground pass (a commit waits for it anyway) is bounded by count.
#[test]
fn a_background_batch_of_large_chunks_is_bounded_by_bytes() {
    use shardstore::store::RECLAIM_BACKGROUND_BATCH_BYTES_MAX;
    let value = |i: u64, round: u64| vec![(i * 3 + round) as u8; 1 << 20];
    for pace in [Pace::Background, Pace::Foreground] {
        let mut dev = SimDevice::new(SimConfig::new(256 << 20, 79));
        format(&mut dev, &FormatOptions { extent_size_bytes: Some(16 << 20), ..FormatOptions::default() }).unwrap();
        let h = dev.handle();
        let mut store = Store::open(Box::new(dev)).unwrap();
        // 40 shards of 1 MiB, every fourth overwritten: the first extents
        // are a quarter dead, their other chunks to move.
        for round in 0..2u64 {
            for i in (0..40u64).filter(|i| round == 0 || i % 4 == 0) {
                store.put(format!("b{i:02}").as_bytes(), &value(i, round)).unwrap();
            }
        }
        let asked = std::cell::Cell::new(0);
        let give_way = || {
            asked.set(asked.get() + 1);
            true
        };
        let done = store.reclaim_with(&mut |_| {}, pace, &give_way).unwrap();
        let moved = store.reclaim_counts().chunks_moved_whole;
        if pace == Pace::Background {
            assert_eq!(done, None, "the background pass gave way");
            assert_eq!(asked.get(), 1);
            assert_eq!(moved, RECLAIM_BACKGROUND_BATCH_BYTES_MAX >> 20, "chunks of 1 MiB moved before giving way");
        } else {
            assert!(done.is_some(), "a foreground batch takes the whole extent's {moved} chunks");
            assert!(moved > 8, "only {moved} chunks moved in the foreground");
            assert_eq!(asked.get(), 0, "nothing left to give way to");
        }
        let given_way = u64::from(pace == Pace::Background);
        assert_eq!(store.reclaim_counts().passes_given_way, given_way, "{pace:?}");
        store.check_invariants();
        drop(store);
        let mut store = Store::open(Box::new(h.attach())).unwrap();
        for i in 0..40u64 {
            let round = u64::from(i % 4 == 0);
            assert_eq!(store.get(format!("b{i:02}").as_bytes()).unwrap(), value(i, round), "b{i:02} ({pace:?})");
        }
    }
}

/// A likely next victim whose chunks the walk of the victim before it
/// listed, then emptied, reset and written again before its turn, is
/// listed again when its turn comes: its old list names none of what it
/// holds now, and evacuating by that list would reset it under live
/// shards.
#[test]
fn a_victim_listed_ahead_and_reset_before_its_turn_is_listed_again() {
    let (_h, mut store) = fresh(12);
    let data_offset = store.superblock().layout.data_offset;
    let extent_of =
        |store: &Store, key: &str| (store.chunk_locations(key.as_bytes()).unwrap()[0].0 - data_offset) >> 22;
    // Shards of 512 KiB: seven fill a 4 MiB extent.
    let shard = |n: u64| vec![n as u8; 512 << 10];
    let mut live = std::collections::BTreeMap::new();
    for n in 0..28u64 {
        let key = format!("a{n:02}");
        store.put(key.as_bytes(), &shard(n)).unwrap();
        live.insert(key, n);
    }
    let in_extent = |store: &Store, live: &std::collections::BTreeMap<String, u64>, e: u64| -> Vec<String> {
        live.keys().filter(|k| extent_of(store, k) == e).cloned().collect()
    };
    let (first, second) = (extent_of(&store, "a00"), extent_of(&store, "a07"));
    assert_eq!(in_extent(&store, &live, first).len(), 7);
    assert_eq!(in_extent(&store, &live, second).len(), 7);
    let delete = |store: &mut Store, live: &mut std::collections::BTreeMap<String, u64>, keys: &[String]| {
        for key in keys {
            store.delete(key.as_bytes()).unwrap();
            live.remove(key);
        }
    };
    // Both worth reclaiming, the first more: it goes first, and its walk
    // lists the second ahead.
    let doomed: Vec<String> = in_extent(&store, &live, first)[..4].to_vec();
    delete(&mut store, &mut live, &doomed);
    let doomed: Vec<String> = in_extent(&store, &live, second)[..2].to_vec();
    delete(&mut store, &mut live, &doomed);
    assert_eq!(store.reclaim().unwrap().map(|(v, _)| u64::from(v)), Some(first));
    assert_eq!(store.reclaim_counts().index_walks, 1);

    // The second empties (the next commit resets it) and fills again.
    let rest = in_extent(&store, &live, second);
    delete(&mut store, &mut live, &rest);
    let mut refilled = Vec::new();
    for n in 100..140u64 {
        let key = format!("b{n:03}");
        store.put(key.as_bytes(), &shard(n)).unwrap();
        live.insert(key.clone(), n);
        if extent_of(&store, &key) == second {
            refilled.push(key);
        } else if !refilled.is_empty() {
            break;
        }
    }
    assert_eq!(refilled.len(), 7, "the reset extent filled again, and sealed");
    // Now it is the emptiest: its turn.
    delete(&mut store, &mut live, &refilled[..4]);
    assert_eq!(store.reclaim().unwrap().map(|(v, _)| u64::from(v)), Some(second));
    store.check_invariants();
    for (key, n) in &live {
        assert_eq!(store.get(key.as_bytes()).unwrap(), shard(*n), "{key}");
    }
    assert_eq!(store.reclaim_counts().index_walks, 2, "the extent reset since was listed again");
}

/// A restart goes on appending in the extent that was open. It used to
/// seal it, its rest unwritten, and pick a fresh one; and reclamation,
/// choosing by dead blocks, never took an extent whose few blocks were
/// all live. A store holding cold data lost most of an extent at every
/// restart: here (a 512 KiB shard between restarts, 16 extents of 4 MiB)
/// puts found no space at the 11th, with 5.5 MiB of 64 live. Now the
/// shards fill the extents one after the other: a 512 KiB shard's record
/// is 129 blocks, seven to an extent of 1024, so 40 take six.
#[test]
fn restarts_go_on_appending_in_the_extent_that_was_open() {
    let (h, mut store) = fresh(91);
    let value = |i: u32| vec![i as u8; 512 << 10];
    for i in 0..40u32 {
        let key = format!("cold/{i:02}").into_bytes();
        store.put(&key, &value(i)).unwrap_or_else(|e| panic!("put {i} after {i} restarts: {e}"));
        drop(store);
        store = Store::open(Box::new(h.attach())).unwrap();
        store.check_invariants();
    }
    for i in 0..40u32 {
        assert_eq!(store.get(format!("cold/{i:02}").as_bytes()).unwrap(), value(i), "cold/{i:02}");
    }
    let written: Vec<u32> = store.extents().iter().map(|e| e.write_blocks).filter(|&w| w > 0).collect();
    assert_eq!(written, vec![903, 903, 903, 903, 903, 645], "extents written to");
}
