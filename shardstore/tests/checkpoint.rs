//! Checkpoints written while the store goes on serving: the index encoded
//! in slices with gets answered between them and while the pieces are
//! written, a commit whose log half is full checkpointing the store as it
//! stood before the commit's records, and a checkpoint written beside
//! commits, which go on logging in the old half until it is made current.

use std::collections::BTreeMap;

use shardstore::device::sim::{SimConfig, SimDevice, SimHandle};
use shardstore::device::{self, OpenOptions};
use shardstore::format::{format, FormatOptions};
use shardstore::rng::Rng;
use shardstore::store::{FinishedGet, Lookup, Op, Store};

#[path = "common/full_log.rs"]
mod full_log;
#[path = "common/sim_store.rs"]
mod sim_store;
use full_log::{fill_log, log_room};
use sim_store::fresh;

fn bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = Rng::new(seed);
    (0..len).map(|_| rng.next_u64() as u8).collect()
}

/// Puts `base/0` to `base/{n - 1}`, each holding `value(i)`; the model of
/// what the store then holds.
fn put_base(store: &mut Store, n: u64, value: impl Fn(u64) -> Vec<u8>) -> BTreeMap<Vec<u8>, Vec<u8>> {
    let mut model = BTreeMap::new();
    for i in 0..n {
        let key = format!("base/{i}").into_bytes();
        let value = value(i);
        store.put(&key, &value).unwrap();
        model.insert(key, value);
    }
    model
}

/// The machine crashes with `store` open; the store opened again holds
/// exactly `model`, and is returned.
fn crash_and_check(h: &SimHandle, store: Store, model: &BTreeMap<Vec<u8>, Vec<u8>>) -> Store {
    drop(store);
    h.crash();
    let mut store = Store::open(Box::new(h.attach())).unwrap();
    store.check_invariants();
    assert_eq!(store.len(), model.len());
    for (key, value) in model {
        assert_eq!(&store.get(key).unwrap(), value, "{}", String::from_utf8_lossy(key));
    }
    store
}

/// Whether a write to the half of the metadata region not in force (where
/// the next checkpoint goes) is still waiting for a flush.
fn checkpoint_pending(h: &SimHandle, store: &Store) -> bool {
    let layout = &store.superblock().layout;
    let half = layout.meta_size_bytes / 2;
    let inactive = 1 - u64::from(store.superblock().store.half);
    let copies = [layout.meta_offset, layout.meta_mirror_offset];
    h.pending().iter().any(|w| {
        copies.iter().any(|&base| {
            let start = base + inactive * half;
            w.offset >= start && w.offset < start + half
        })
    })
}

#[test]
fn a_checkpoint_of_many_slices_recovers_every_entry() {
    // More entries than one slice of the encoding (4096), in three
    // slices and a part: a slice boundary that lost or repeated an entry
    // shows in the count, the listing or a get.
    let mut dev = SimDevice::new(SimConfig::new(256 << 20, 5));
    format(&mut dev, &FormatOptions { extent_size_bytes: Some(8 << 20), ..FormatOptions::default() }).unwrap();
    let h = dev.handle();
    let mut store = Store::open(Box::new(dev)).unwrap();
    let keys: Vec<Vec<u8>> = (0..13_000u32).map(|i| format!("k/{i:06}").into_bytes()).collect();
    for (n, batch) in keys.chunks(1000).enumerate() {
        let ops: Vec<Op> = batch.iter().enumerate().map(|(i, k)| Op::put(k.clone(), bytes(i % 7, n as u64))).collect();
        for r in store.commit(&ops) {
            r.unwrap();
        }
    }
    let epoch = store.superblock().store.epoch;
    store.checkpoint().unwrap();
    assert_eq!(store.superblock().store.epoch, epoch + 1);
    // Recovery reads the checkpoint alone: the log after it is empty.
    drop(store);
    h.crash();
    let mut store = Store::open(Box::new(h.attach())).unwrap();
    store.check_invariants();
    assert_eq!(store.len(), keys.len());
    let listed: Vec<Vec<u8>> = store.list(b"k/", None, usize::MAX).into_iter().map(|l| l.key).collect();
    assert_eq!(listed, keys);
    for (n, batch) in keys.chunks(1000).enumerate() {
        for (i, k) in batch.iter().enumerate().step_by(97) {
            assert_eq!(store.get(k).unwrap(), bytes(i % 7, n as u64), "{}", String::from_utf8_lossy(k));
        }
    }
}

/// Waits for the gets still in progress, then checks that all `started`
/// answered the value `model` holds for their key (`base[id]`).
fn check_gets(
    store: &mut Store,
    mut done: Vec<FinishedGet>,
    started: usize,
    base: &[Vec<u8>],
    model: &BTreeMap<Vec<u8>, Vec<u8>>,
) {
    while store.completions_pending() {
        store.poll_gets(true, &mut done).unwrap();
    }
    store.take_finished_gets(&mut done);
    assert_eq!(done.len(), started);
    for (id, result) in done {
        assert_eq!(result.unwrap(), model[&base[id as usize]], "get {id}");
    }
}

#[test]
fn gets_are_answered_while_a_commit_checkpoints() {
    let (h, mut store) = fresh(71);
    let mut model = put_base(&mut store, 48, |i| bytes(3000 + i as usize, i));
    fill_log(&mut store, &mut model);
    // The next put needs a log block and none is left: the commit
    // checkpoints the store before its record, and gets of other keys
    // started while the checkpoint's writes wait must be answered then.
    let epoch = store.superblock().store.epoch;
    let base: Vec<Vec<u8>> = model.keys().filter(|k| k.starts_with(b"base/")).cloned().collect();
    let (mut next, mut during, mut pumped_during) = (0usize, 0usize, 0usize);
    let mut done = Vec::new();
    let mut pump = |store: &mut Store| {
        store.take_finished_gets(&mut done);
        if store.superblock().store.epoch == epoch {
            // The checkpoint (if it started) is not in force yet.
            during = done.len();
        }
        if !checkpoint_pending(&h, store) {
            return;
        }
        pumped_during += 1;
        // Four gets in progress at a time.
        while next < base.len() && next - done.len() < 4 {
            store.start_get(next as u64, &base[next], 0, u64::MAX).unwrap();
            next += 1;
        }
        store.submit_gets(&mut done);
    };
    let value = bytes(60_000, 7);
    let results = store.commit_with(&[Op::put(b"new".to_vec(), value.clone())], &mut pump);
    for r in results {
        r.unwrap();
    }
    model.insert(b"new".to_vec(), value);
    assert_eq!(store.superblock().store.epoch, epoch + 1, "the commit checkpointed");
    let counts = store.checkpoint_counts();
    assert_eq!(counts.written, 1, "{counts:?}");
    assert!(counts.last_micros > 0 && counts.next_bytes > 4096 && counts.half_bytes == 2 << 20, "{counts:?}");
    assert!(pumped_during > 0, "the pump never ran while the checkpoint was written");
    assert!(during > 0, "no get started during the checkpoint was answered before it was in force");
    check_gets(&mut store, done, next, &base, &model);
    // The put's record opened the new half's log, after the checkpoint.
    assert!(log_room(&store) < store.superblock().layout.meta_size_bytes / 2);
    crash_and_check(&h, store, &model);
}

#[test]
fn commits_go_on_while_a_checkpoint_beside_them_is_written() {
    let (h, mut store) = fresh(73);
    let mut model = BTreeMap::new();
    let mut n = 0u64;
    while !store.checkpoint_due() {
        let key = format!("k/{n}").into_bytes();
        let value = bytes(20_000, n);
        store.put(&key, &value).unwrap();
        model.insert(key, value);
        n += 1;
    }
    let epoch = store.superblock().store.epoch;
    let in_force = store.metadata_in_use();
    assert!(store.start_checkpoint().unwrap());
    assert!(store.checkpoint_under_way());
    assert!(!store.start_checkpoint().unwrap(), "a second one started beside the first");
    // Commits log in the half in force meanwhile, and are acknowledged.
    for i in 0..6u64 {
        let key = format!("during/{i}").into_bytes();
        let value = bytes(100 + i as usize * 3000, 500 + i);
        store.put(&key, &value).unwrap();
        model.insert(key, value);
    }
    store.delete(b"k/0").unwrap();
    model.remove(b"k/0".as_slice());
    assert_eq!(store.superblock().store.epoch, epoch, "made current before it was written");
    assert!(store.metadata_in_use()[0].1 > in_force[0].1, "the commits logged in the old half");
    store.finish_checkpoint(&mut |_| {}).unwrap();
    assert!(!store.checkpoint_under_way());
    assert_eq!(store.superblock().store.epoch, epoch + 1);
    assert_eq!(store.checkpoint_counts().written, 1);
    // The new half: the checkpoint, then those commits' records.
    let (_, used) = store.metadata_in_use()[0];
    assert!(used > store.superblock().store.checkpoint_len_bytes, "the records were not written after it");
    for (key, value) in &model {
        assert_eq!(&store.get(key).unwrap(), value, "{}", String::from_utf8_lossy(key));
    }
    store.put(b"after", &bytes(100, 1)).unwrap();
    model.insert(b"after".to_vec(), bytes(100, 1));
    let store = crash_and_check(&h, store, &model);
    assert_eq!(store.superblock().store.epoch, epoch + 1);
}

/// A store formatted on a real file of 256 MiB (8 MiB extents) in `dir`,
/// closed again: its path, to open through io_uring.
fn formatted_file(dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("store.img");
    std::fs::File::create(&path).unwrap().set_len(256 << 20).unwrap();
    let mut dev = device::open(&path, &OpenOptions::default()).unwrap();
    format(&mut dev, &FormatOptions { extent_size_bytes: Some(8 << 20), ..FormatOptions::default() }).unwrap();
    path
}

/// The same on a real file through io_uring: a delete (no data to write
/// or flush first) finds the log full, so everything its commit waits for
/// before the superblock names the new half is the checkpoint; gets
/// started then are answered then.
#[test]
fn gets_are_answered_while_a_delete_checkpoints_on_a_real_file() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let path = formatted_file(dir.path());
    let mut store = Store::open(Box::new(device::open(&path, &OpenOptions::default()).unwrap())).unwrap();
    let mut model = put_base(&mut store, 32, |i| bytes(5000, i));
    fill_log(&mut store, &mut model);
    let epoch = store.superblock().store.epoch;
    let base: Vec<Vec<u8>> = model.keys().filter(|k| k.starts_with(b"base/")).cloned().collect();
    let (mut next, mut during) = (0usize, 0usize);
    let mut done = Vec::new();
    let mut pump = |store: &mut Store| {
        store.take_finished_gets(&mut done);
        if store.superblock().store.epoch != epoch {
            return;
        }
        during = done.len();
        while next < base.len() && next - done.len() < 4 {
            store.start_get(next as u64, &base[next], 0, u64::MAX).unwrap();
            next += 1;
        }
        store.submit_gets(&mut done);
    };
    let deleted = b"fill/0".to_vec();
    for r in store.commit_with(&[Op::Delete { key: deleted.clone() }], &mut pump) {
        r.unwrap();
    }
    model.remove(&deleted);
    assert_eq!(store.superblock().store.epoch, epoch + 1, "the delete checkpointed");
    assert!(during > 0, "no get was answered while the checkpoint was written");
    check_gets(&mut store, done, next, &base, &model);
    // Dropped without a close, as a killed process leaves it.
    drop(store);
    let mut store = Store::open(Box::new(device::open(&path, &OpenOptions::default()).unwrap())).unwrap();
    store.check_invariants();
    assert_eq!(store.len(), model.len());
    for (key, value) in &model {
        assert_eq!(&store.get(key).unwrap(), value, "{}", String::from_utf8_lossy(key));
    }
}

/// A checkpoint beside commits holds the store as it stood when it began,
/// not the shards later commits left in the keys its slices had not
/// reached yet: here an extent is emptied and reset during the encoding,
/// and written again by puts of keys encoded after those puts.
/// Had the checkpoint taken those puts' shards, the records logged after
/// it would reset an extent it already holds live shards in, and the
/// store would refuse to open ("reset of extent ..., which still holds
/// ... live blocks").
#[test]
fn a_checkpoint_encoded_between_commits_holds_the_store_as_it_began() {
    let (h, mut store) = fresh(74);
    store.set_checkpoint_slice_entries(1);
    let layout = store.superblock().layout;
    let extent_of = |store: &Store, key: &[u8]| {
        (store.chunk_locations(key).unwrap()[0].0 - layout.data_offset) / layout.extent_size_bytes
    };
    let mut model = BTreeMap::new();
    // Shards until the first one's extent is full and sealed.
    store.put(b"a/00", &bytes(600_000, 0)).unwrap();
    let first = extent_of(&store, b"a/00");
    let mut n = 1u64;
    loop {
        let key = format!("a/{n:02}").into_bytes();
        store.put(&key, &bytes(600_000, n)).unwrap();
        n += 1;
        if extent_of(&store, &key) != first {
            model.insert(key.clone(), bytes(600_000, n - 1));
            break;
        }
    }
    let epoch = store.superblock().store.epoch;
    assert!(store.start_checkpoint().unwrap());
    assert!(!store.advance_checkpoint(&mut |_| {}).unwrap(), "one entry per slice: not encoded yet");
    // The extent emptied; the next commit resets it (along with its own
    // records), and it is the first free one again.
    for i in 0..n - 1 {
        store.delete(format!("a/{i:02}").as_bytes()).unwrap();
    }
    store.put(b"m", &bytes(100, 9)).unwrap();
    model.insert(b"m".to_vec(), bytes(100, 9));
    // Puts of keys the encoding has not reached, until one lands in the
    // extent just reset.
    let mut landed = false;
    for i in 0..48u64 {
        let key = format!("z/{i:02}").into_bytes();
        let value = bytes(600_000, 100 + i);
        store.put(&key, &value).unwrap();
        model.insert(key.clone(), value);
        if extent_of(&store, &key) == first {
            landed = true;
            break;
        }
    }
    assert!(landed, "no put landed in the reset extent");
    store.finish_checkpoint(&mut |_| {}).unwrap();
    assert_eq!(store.superblock().store.epoch, epoch + 1);
    crash_and_check(&h, store, &model);
}

/// A checkpoint beside commits begun with the log empty, while the old
/// half fills to its last block with records kept whole for the new half
/// (tombstones with long keys; a put's payload copies are not kept): the
/// commit that finds the old half full switches it in with every one of
/// those records written again after it, at the edge of the room the
/// switch checks for, and nothing acknowledged is lost, before or after a
/// crash.
#[test]
fn a_checkpoint_beside_commits_switched_with_a_full_half_of_records_keeps_them_all() {
    let (h, mut store) = fresh(75);
    let mut model = put_base(&mut store, 40, |i| bytes(3000, i));
    store.checkpoint().unwrap();
    let epoch = store.superblock().store.epoch;
    let begun_len = store.superblock().store.checkpoint_len_bytes;
    let half = store.superblock().layout.meta_size_bytes / 2;
    assert!(store.start_checkpoint().unwrap());
    // Batches of 50 while there is room for them, then one at a time (a
    // block each), until a commit finds the old half full.
    let mut tombstones = Vec::new();
    let logged = loop {
        let logged = half - log_room(&store) - begun_len;
        let n = if log_room(&store) > 64 << 10 { 50 } else { 1 };
        let ops: Vec<Op> = (0..n)
            .map(|_| {
                let key = format!("{:05}/{}", tombstones.len(), "t".repeat(240)).into_bytes();
                tombstones.push(key.clone());
                Op::Tombstone { key, version: 1 }
            })
            .collect();
        for r in store.commit(&ops) {
            r.unwrap();
        }
        if store.superblock().store.epoch != epoch {
            break logged;
        }
        assert!(tombstones.len() < 100_000, "the log never filled");
    };
    assert!(!store.checkpoint_under_way());
    assert_eq!(store.superblock().store.epoch, epoch + 1);
    // The new half: the checkpoint begun, then every record logged beside
    // it (packed more densely than one commit's blocks were), then the
    // last commit's.
    let sb = store.superblock().store;
    assert_eq!(sb.checkpoint_len_bytes, begun_len, "not the checkpoint begun with the log empty");
    let after = store.metadata_in_use()[0].1 - sb.checkpoint_len_bytes;
    assert!(after > logged * 3 / 4, "{after} bytes logged after the checkpoint, of {logged} logged beside it");
    assert!(after + begun_len > half * 3 / 4, "the half is not three quarters full");
    store.check_invariants();
    let mut store = crash_and_check(&h, store, &model);
    for key in &tombstones {
        assert!(matches!(store.lookup(key), Lookup::Tombstone(_)), "a tombstone was lost");
    }
    store.put(b"after", &bytes(100, 1)).unwrap();
    model.insert(b"after".to_vec(), bytes(100, 1));
    let store = crash_and_check(&h, store, &model);
    assert_eq!(store.superblock().store.epoch, epoch + 1);
}

/// A commit that finds the log half full while a checkpoint beside
/// commits is still being encoded finishes the encoding itself. It used to
/// wait for a completion after each slice it encoded: with nothing on the
/// device (no piece of the checkpoint ready yet, no get in flight) the
/// wait never ended, and the store thread hung with every writer waiting
/// on it (seen with 64 writers of 4 KiB puts on a store of 262144
/// shards). On a real file through io_uring, where such a wait blocks;
/// the store runs on a thread of its own so that a hang fails the test.
#[test]
fn a_commit_finishing_a_checkpoint_still_being_encoded_waits_for_nothing_absent() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let path = formatted_file(dir.path());
    let (tx, rx) = std::sync::mpsc::channel();
    let opened = path.clone();
    std::thread::spawn(move || {
        let mut store = Store::open(Box::new(device::open(&opened, &OpenOptions::default()).unwrap())).unwrap();
        // As the store thread does: a wait then lasts until a completion
        // or a request (without a waker, one with nothing on the device
        // returns at once).
        let _waker = store.waker().unwrap().expect("a ring has a waker");
        let mut model = put_base(&mut store, 32, |i| bytes(5000, i));
        // An entry a slice: the encoding takes many, and no piece of it is
        // ready until most are done.
        store.set_checkpoint_slice_entries(1);
        assert!(store.start_checkpoint().unwrap());
        fill_log(&mut store, &mut model);
        let epoch = store.superblock().store.epoch;
        store.delete(b"fill/0").unwrap();
        model.remove(b"fill/0".as_slice());
        assert_eq!(store.superblock().store.epoch, epoch + 1, "the delete finished the checkpoint");
        drop(store);
        tx.send(model).unwrap();
    });
    let model = rx.recv_timeout(std::time::Duration::from_secs(60)).expect("the commit finishing the checkpoint hung");
    let mut store = Store::open(Box::new(device::open(&path, &OpenOptions::default()).unwrap())).unwrap();
    store.check_invariants();
    assert_eq!(store.len(), model.len());
    for (key, value) in &model {
        assert_eq!(&store.get(key).unwrap(), value, "{}", String::from_utf8_lossy(key));
    }
}
