//! The device thread: concurrent writers share group commits (far fewer
//! flushes than puts), every acknowledged put is durable, reads see
//! acknowledged writes, and close records a clean shutdown.

use std::sync::Arc;

use shardstore::device::sim::{SimConfig, SimDevice};
use shardstore::format::{format, FormatOptions};
use shardstore::store::{thread, Store};

#[path = "common/half_dead.rs"]
mod half_dead;
#[path = "common/overwrites.rs"]
mod overwrites;
use overwrites::{overwrite_until, problem, versioned};

#[test]
fn concurrent_writers_share_group_commits() {
    let mut dev = SimDevice::new(SimConfig::new(128 << 20, 11));
    format(&mut dev, &FormatOptions { extent_size_bytes: Some(4 << 20), ..FormatOptions::default() }).unwrap();
    let h = dev.handle();
    let (store, join) = thread::spawn(Box::new(dev)).unwrap();
    let store = Arc::new(store);
    let flushes_before = h.stats().flushes;
    let writers: Vec<_> = (0..64u32)
        .map(|w| {
            let store = Arc::clone(&store);
            std::thread::spawn(move || {
                for i in 0..20u32 {
                    let key = format!("w{w}/{i}").into_bytes();
                    store.put(&key, vec![(w ^ i) as u8; 4096]).unwrap();
                    // A read after an acknowledged put sees it.
                    assert_eq!(store.get(&key).unwrap(), vec![(w ^ i) as u8; 4096]);
                }
            })
        })
        .collect();
    for w in writers {
        w.join().unwrap();
    }
    let flushes = h.stats().flushes - flushes_before;
    assert!(flushes < 1280 / 2, "1280 puts from 64 writers took {flushes} flushes: no group commit");
    eprintln!("group commit: 1280 puts from 64 writers, {flushes} flushes");
    assert_eq!(store.list(b"w1/", None, 100).unwrap().len(), 20);
    // The figures callers read without a round trip catch up within the
    // publish interval (at once when the queue drains, or when idle).
    let settled = std::time::Instant::now() + std::time::Duration::from_secs(2);
    while store.stats().usage().shards != 1280 && std::time::Instant::now() < settled {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let usage = store.stats().usage();
    assert_eq!(usage.shards, 1280);
    // One payload block per shard, and a header block per shard written
    // alone (a one-flush commit) or per group of shards committed together
    // (how puts fell into commits is up to timing; the exact figure is
    // checked against the reopened store's accounting below).
    assert!(
        usage.live_bytes % 4096 == 0 && usage.live_bytes > 1280 * 4096 && usage.live_bytes <= 1280 * 8192,
        "{} live bytes for 1280 shards of 4 KiB",
        usage.live_bytes
    );
    assert!(usage.free_bytes < usage.capacity_bytes - usage.live_bytes, "free space excludes the reserve");
    assert_eq!(store.stats().queued.load(std::sync::atomic::Ordering::Relaxed), 0);
    let commits = store.stats().commits.load(std::sync::atomic::Ordering::Relaxed);
    assert!(commits > 0 && commits < 1280 / 2, "{commits} group commits for 1280 puts");
    assert_eq!(store.stats().committed_ops.load(std::sync::atomic::Ordering::Relaxed), 1280);
    store.close().unwrap();
    join.join().unwrap();
    let mut reopened = Store::open(Box::new(h.attach())).unwrap();
    assert!(reopened.opened_clean());
    assert_eq!(reopened.len(), 64 * 20);
    reopened.check_invariants();
    let live: u64 = reopened.extents().iter().map(|e| u64::from(e.live_blocks) * 4096).sum();
    assert_eq!(usage.live_bytes, live, "the published usage is the store's own accounting");
    for w in 0..64u32 {
        for i in 0..20u32 {
            assert_eq!(reopened.get(format!("w{w}/{i}").as_bytes()).unwrap(), vec![(w ^ i) as u8; 4096]);
        }
    }
}

struct Readers {
    store: thread::StoreHandle,
    acked: Vec<std::sync::atomic::AtomicU32>,
    issued: std::sync::atomic::AtomicU64,
    done: std::sync::Mutex<(u64, Vec<String>)>,
    finished: std::sync::Condvar,
}

const KEYS: u32 = 256;
const GETS: u64 = 20_000;

/// Issues one get whose completion checks the bytes and issues the next,
/// as a client that keeps a fixed number of reads in flight does (the
/// store thread runs the completion).
fn chain(r: &Arc<Readers>, n: u64) {
    use std::sync::atomic::Ordering::SeqCst;
    let key = (n.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40) as u32 % KEYS;
    // A get issued after an overwrite was acknowledged must see it.
    let at_least = r.acked[key as usize].load(SeqCst);
    let me = Arc::clone(r);
    let queued = r.store.submit_get(format!("k{key}").into_bytes(), 0, u64::MAX, move |got| {
        let problem = match got {
            Err(e) => Some(format!("get {n} of k{key}: {e}")),
            Ok(bytes) => problem(key, &bytes, at_least).map(|p| format!("get {n} of k{key}: {p}")),
        };
        let next = me.issued.fetch_add(1, SeqCst);
        if next < GETS {
            chain(&me, next);
        }
        let mut done = me.done.lock().unwrap();
        done.0 += 1;
        done.1.extend(problem);
        if done.0 == GETS {
            me.finished.notify_all();
        }
    });
    queued.unwrap();
}

/// Reads issued from completions of earlier reads (the store thread starts
/// them between verifying one read and the next) while another thread
/// overwrites the same shards, on a real file through io_uring: every get
/// returns whole bytes of its own shard, never older than an overwrite
/// acknowledged before it was issued; every put is acknowledged; the queue
/// drains.
#[test]
fn reads_chained_from_completions_see_acknowledged_overwrites() {
    let stats = chained_gets_beside_overwrites(256 << 20, 8 << 20, false);
    eprintln!("reclamation: {} chunks moved along", stats.chunks_moved_along);
}

/// The same in a store so small that the overwrites keep it full: group
/// commits move live chunks forward all along (gets are served while they
/// do), and the counts the thread publishes for metrics show it.
#[test]
fn reads_chained_through_reclamation_see_acknowledged_overwrites() {
    let stats = chained_gets_beside_overwrites(48 << 20, 4 << 20, true);
    assert!(
        stats.chunks_moved_along > 0 && stats.extents_reset_along > 0,
        "no reclamation rode on the commits: {stats:?}"
    );
    // The moved chunks of 256 KiB shards (longer than a write piece) are
    // split when gets are in flight as they go out: how often is timing.
    eprintln!("reclamation beside chained gets: {stats:?}");
}

/// What the store thread published about reclamation and split writes.
#[derive(Debug)]
#[allow(dead_code)]
struct Published {
    chunks_moved_along: u64,
    extents_reset_along: u64,
    whole_extents: u64,
    writes_split: u64,
}

/// Runs `GETS` chained gets against a writer overwriting the same `KEYS`
/// shards, on a store file of `size` bytes with extents of `extent` (if
/// `full`, filled first with shards half of which are deleted, until less
/// than three extents are free: the next commits reclaim); checks every
/// get and returns the reclamation figures the thread published.
fn chained_gets_beside_overwrites(size: u64, extent: u64, full: bool) -> Published {
    use std::sync::atomic::Ordering::SeqCst;
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let path = dir.path().join("store.img");
    std::fs::File::create(&path).unwrap().set_len(size).unwrap();
    let options = shardstore::device::OpenOptions { queue_depth: 64, ..Default::default() };
    {
        let mut dev = shardstore::device::open(&path, &options).unwrap();
        format(&mut dev, &FormatOptions { extent_size_bytes: Some(extent), ..FormatOptions::default() }).unwrap();
    }
    let (store, join) = thread::spawn(Box::new(shardstore::device::open(&path, &options).unwrap())).unwrap();
    for k in 0..KEYS {
        store.put(format!("k{k}").as_bytes(), versioned(k, 0)).unwrap();
    }
    if full {
        let mut filled = 0u32;
        while store.stats().usage().free_bytes >= 3 * extent {
            store.put(format!("fill{filled}").as_bytes(), vec![filled as u8; 256 << 10]).unwrap();
            if filled % 2 == 1 {
                store.delete(format!("fill{}", filled - 1).as_bytes()).unwrap();
            }
            filled += 1;
            assert!(u64::from(filled) * (256 << 10) < size, "the store never filled: {:?}", store.stats().usage());
        }
    }
    let readers = Arc::new(Readers {
        store: store.clone(),
        acked: (0..KEYS).map(|_| std::sync::atomic::AtomicU32::new(0)).collect(),
        issued: std::sync::atomic::AtomicU64::new(32),
        done: std::sync::Mutex::new((0, Vec::new())),
        finished: std::sync::Condvar::new(),
    });
    for n in 0..32 {
        chain(&readers, n);
    }
    let writer = {
        let readers = Arc::clone(&readers);
        std::thread::spawn(move || {
            overwrite_until(&readers.store, &readers.acked, 37, || readers.issued.load(SeqCst) >= GETS)
        })
    };
    let mut done = readers.done.lock().unwrap();
    while done.0 < GETS {
        done = readers.finished.wait(done).unwrap();
    }
    assert!(done.1.is_empty(), "{} wrong gets, first: {}", done.1.len(), done.1[0]);
    drop(done);
    let puts = writer.join().unwrap();
    assert!(puts > 0, "the writer overlapped the reads");
    eprintln!("{GETS} chained gets alongside {puts} acknowledged overwrites");
    assert_eq!(store.stats().queued.load(SeqCst), 0);
    let stats = store.stats();
    let published = Published {
        chunks_moved_along: stats.chunks_moved_along.load(SeqCst),
        extents_reset_along: stats.extents_reset_along.load(SeqCst),
        whole_extents: stats.whole_extents_reclaimed.load(SeqCst),
        writes_split: stats.writes_split.load(SeqCst),
    };
    store.close().unwrap();
    join.join().unwrap();
    let reopened = Store::open(Box::new(shardstore::device::open(&path, &options).unwrap())).unwrap();
    reopened.check_invariants();
    assert_eq!(reopened.reclaim_counts().chunks_moved_along, 0, "counts start again at open");
    published
}

/// A store thread on a slow simulated drive (1 ms an operation), its
/// scrubber paused, holding the half-dead store (`common/half_dead.rs`),
/// returned once its idle pass has started reading: moving half an
/// extent's chunks takes hundreds of operations from there.
fn slow_idle_pass(seed: u64) -> (shardstore::device::sim::SimHandle, thread::StoreHandle, std::thread::JoinHandle<()>) {
    use std::time::{Duration, Instant};
    let mut dev = SimDevice::new(SimConfig::new(64 << 20, seed));
    format(&mut dev, &FormatOptions { extent_size_bytes: Some(4 << 20), ..FormatOptions::default() }).unwrap();
    let h = dev.handle();
    // The scrubber paused: the only reads of an idle thread are the pass's.
    let paused = shardstore::store::scrub::ScrubSettings { paused: true, ..Default::default() };
    let settings = thread::ThreadSettings { scrub: Some(paused), ..Default::default() };
    let (store, join) = thread::spawn_with(Box::new(dev), settings).unwrap();
    half_dead::fill(|key, value| store.put(&key, value).unwrap());
    h.set_latency(Duration::from_millis(1));
    // Nothing is asked of the thread until its idle pass has started
    // reading (a request would restart its idle wait).
    let reads_idle = h.stats().reads;
    let deadline = Instant::now() + Duration::from_secs(20);
    while h.stats().reads == reads_idle {
        assert!(Instant::now() < deadline, "no idle reclamation started");
        std::thread::sleep(Duration::from_millis(1));
    }
    (h, store, join)
}

/// Closes the thread and checks the store it leaves, `changed` aside.
fn close_and_check(
    h: &shardstore::device::sim::SimHandle,
    store: &thread::StoreHandle,
    join: std::thread::JoinHandle<()>,
    changed: &[(u64, Vec<u8>)],
) {
    h.set_latency(std::time::Duration::ZERO);
    store.close().unwrap();
    join.join().unwrap();
    let mut reopened = Store::open(Box::new(h.attach())).unwrap();
    reopened.check_invariants();
    for i in 0..half_dead::SHARDS {
        let want = changed.iter().find(|(k, _)| *k == i).map_or_else(|| half_dead::value(i), |(_, v)| v.clone());
        assert_eq!(reopened.get(&half_dead::key(i)).unwrap(), want, "k{i:04}");
    }
}

/// The thread reclaims a whole extent when idle; a get arriving then
/// used to wait for every chunk of it to move (on a slow drive, the whole
/// pass). Now it is answered while the pass goes on, and the pass ends.
#[test]
fn gets_are_answered_while_the_idle_thread_reclaims_an_extent() {
    use std::sync::atomic::Ordering::SeqCst;
    use std::time::{Duration, Instant};
    let (h, store, join) = slow_idle_pass(71);
    let stats = store.stats();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut during = 0;
    while stats.whole_extents_reclaimed.load(SeqCst) == 0 {
        assert!(Instant::now() < deadline, "the idle pass did not end");
        assert_eq!(store.get(b"k0001").unwrap(), half_dead::value(1));
        // Published when the pass ends, before the thread takes another
        // request: a get that waited for the pass sees it ended.
        if stats.whole_extents_reclaimed.load(SeqCst) == 0 {
            during += 1;
        }
    }
    assert!(during > 0, "no get was answered while the idle pass moved chunks");
    assert!(stats.chunks_moved_whole.load(SeqCst) > 0, "the pass moved live chunks");
    close_and_check(&h, &store, join, &[]);
}

/// A put arriving during an idle pass used to wait for the whole pass.
/// Now the pass gives way after the chunks it is moving: it logs them,
/// the put is committed, and the rest of the extent waits for a later
/// pass.
#[test]
fn a_put_arriving_during_an_idle_pass_ends_it() {
    use std::sync::atomic::Ordering::SeqCst;
    let (h, store, join) = slow_idle_pass(79);
    let stats = store.stats();
    let newer = vec![0xee; 6000];
    store.put(b"k0001", newer.clone()).unwrap();
    // Published before the thread took the put: the pass had ended early.
    assert_eq!(stats.whole_extents_reclaimed.load(SeqCst), 0, "the put waited for the whole pass");
    assert!(stats.chunks_moved_whole.load(SeqCst) > 0, "the chunks moved before the put were logged");
    assert_eq!(stats.reclaim_passes_given_way.load(SeqCst), 1, "the pass that gave way is published");
    assert_eq!(store.get(b"k0001").unwrap(), newer);
    close_and_check(&h, &store, join, &[(1, newer)]);
}

/// The thread checkpoints (beside its commits) once the log has used most
/// of its room, so that the commit that would find it full need not; then
/// the log holds what was logged meanwhile, and it does not checkpoint
/// again.
#[test]
fn the_thread_checkpoints_before_the_log_is_full() {
    use std::sync::atomic::Ordering::SeqCst;
    use std::time::{Duration, Instant};
    let mut dev = SimDevice::new(SimConfig::new(64 << 20, 83));
    format(&mut dev, &FormatOptions { extent_size_bytes: Some(4 << 20), ..FormatOptions::default() }).unwrap();
    let h = dev.handle();
    let paused = shardstore::store::scrub::ScrubSettings { paused: true, ..Default::default() };
    // Unvouched: puts of 60 KiB carry a copy of their payload in the log
    // (vouched, each would log one block, and a confirmation or not as
    // timing has it).
    let settings = thread::ThreadSettings { scrub: Some(paused), unvouched_commits: true, ..Default::default() };
    let (store, join) = thread::spawn_with(Box::new(dev), settings).unwrap();
    let stats = store.stats();
    // Puts of 60 KiB carry a copy of their payload in the log (15 blocks):
    // 31 of them use 91% of a 2 MiB half, more than the share that makes a
    // checkpoint due (80%) and less than all of it.
    let value = |i: u32| vec![i as u8; 60_000];
    for i in 0..31u32 {
        store.put(format!("k{i}").as_bytes(), value(i)).unwrap();
    }
    // (The checkpoint starts among the puts, when the log passes 80%;
    // what they log after it is too little to be due again.)
    let deadline = Instant::now() + Duration::from_secs(10);
    while stats.checkpoints.load(SeqCst) == 0 {
        assert!(Instant::now() < deadline, "the thread did not checkpoint");
        std::thread::sleep(Duration::from_millis(5));
    }
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(stats.checkpoints.load(SeqCst), 1, "the thread checkpointed again");
    store.close().unwrap();
    join.join().unwrap();
    let mut reopened = Store::open(Box::new(h.attach())).unwrap();
    reopened.check_invariants();
    for i in 0..31u32 {
        assert_eq!(reopened.get(format!("k{i}").as_bytes()).unwrap(), value(i));
    }
}

/// A read in one trip: the shard's stat and the verified bytes of the
/// range (resolved against the size by the thread), or why there are
/// none.
#[test]
fn a_read_answers_the_stat_and_the_range_in_one_request() {
    use shardstore::store::{ByteRange, Read};
    let mut dev = SimDevice::new(SimConfig::new(64 << 20, 5));
    format(&mut dev, &FormatOptions { extent_size_bytes: Some(4 << 20), ..FormatOptions::default() }).unwrap();
    let (store, join) = thread::spawn(Box::new(dev)).unwrap();
    let body: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    store.put(b"k", body.clone()).unwrap();
    store.put(b"gone", vec![1; 10]).unwrap();
    store.delete(b"gone").unwrap();
    let read = |key: &[u8], range: Option<ByteRange>| {
        let (tx, rx) = std::sync::mpsc::channel();
        store.submit_read(key.to_vec(), range, move |r| tx.send(r).unwrap()).unwrap();
        rx.recv().unwrap().unwrap()
    };
    match read(b"k", None) {
        Read::Shard { stat, offset, bytes } => {
            assert_eq!((stat.size, stat.crc32c, offset), (100_000, crc32c::crc32c(&body), 0));
            assert!(bytes == body);
        }
        other => panic!("{other:?}"),
    }
    for (range, want) in [
        (ByteRange::FromTo(10, 19), 10..20),
        (ByteRange::FromTo(99_990, 1 << 40), 99_990..100_000),
        (ByteRange::From(99_999), 99_999..100_000),
        (ByteRange::Suffix(5), 99_995..100_000),
        (ByteRange::Suffix(1 << 30), 0..100_000),
    ] {
        match read(b"k", Some(range)) {
            Read::Shard { offset, bytes, .. } => {
                assert_eq!(offset, want.start as u64, "{range:?}");
                assert!(bytes == body[want.clone()], "{range:?}");
            }
            other => panic!("{range:?}: {other:?}"),
        }
    }
    for range in [ByteRange::From(100_000), ByteRange::FromTo(20, 10)] {
        assert!(matches!(read(b"k", Some(range)), Read::OutOfRange(s) if s.size == 100_000), "{range:?}");
    }
    assert!(matches!(read(b"never", None), Read::Absent));
    assert!(matches!(read(b"gone", None), Read::Tombstone(_) | Read::Absent));
    store.close().unwrap();
    join.join().unwrap();
}

/// The shard count callers read without a round trip (the agent's status)
/// already counts a put or delete when its answer is given: the answer
/// (run on the store thread, as the agent's is) reads it.
#[test]
fn a_write_is_counted_before_it_is_answered() {
    let mut dev = SimDevice::new(SimConfig::new(64 << 20, 12));
    format(&mut dev, &FormatOptions { extent_size_bytes: Some(4 << 20), ..FormatOptions::default() }).unwrap();
    let (store, join) = thread::spawn(Box::new(dev)).unwrap();
    let store = Arc::new(store);
    for (i, delete) in [(0u64, false), (1, false), (2, false), (1, true)] {
        let (tx, rx) = std::sync::mpsc::channel();
        let seen = Arc::clone(&store);
        let done = move |r: shardstore::error::Result<()>| {
            let _ = tx.send((r.is_ok(), seen.stats().usage().shards));
        };
        if delete {
            store.submit_delete(b"s0".to_vec(), done).unwrap();
        } else {
            store.submit_put(format!("s{i}").into_bytes(), vec![7u8; 100], None, done).unwrap();
        }
        let want = if delete { 2 } else { i + 1 };
        assert_eq!(rx.recv().unwrap(), (true, want), "write {i} (delete: {delete})");
    }
    store.close().unwrap();
    join.join().unwrap();
}

/// Gets from many threads at once, on a real file through io_uring, and
/// stats beside them: while enough gets' reads are at the device, a new
/// get is left for the next completion instead of waking the thread
/// (`lazy_waits` counts such waits); every get and stat is still
/// answered, with its shard's own bytes.
#[test]
fn gets_sent_while_reads_are_in_flight_are_answered_without_a_wake_up_each() {
    const SHARDS: u32 = 64;
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let path = dir.path().join("store.img");
    std::fs::File::create(&path).unwrap().set_len(64 << 20).unwrap();
    let options = shardstore::device::OpenOptions { queue_depth: 64, ..Default::default() };
    format(&mut shardstore::device::open(&path, &options).unwrap(), &FormatOptions::default()).unwrap();
    let (store, join) = thread::spawn(Box::new(shardstore::device::open(&path, &options).unwrap())).unwrap();
    for k in 0..SHARDS {
        store.put(format!("k{k}").as_bytes(), vec![k as u8; 4096]).unwrap();
    }
    let getters: Vec<_> = (0..32u32)
        .map(|t| {
            let store = store.clone();
            std::thread::spawn(move || {
                for i in 0..300u32 {
                    let k = (t * 7 + i * 13) % SHARDS;
                    assert_eq!(store.get(format!("k{k}").as_bytes()).unwrap(), vec![k as u8; 4096], "k{k}");
                }
            })
        })
        .collect();
    let stats = {
        let store = store.clone();
        std::thread::spawn(move || {
            for i in 0..300u32 {
                let k = i % SHARDS;
                let stat = store.stat(format!("k{k}").as_bytes()).unwrap().expect("stored");
                assert_eq!(stat.size, 4096);
            }
        })
    };
    for g in getters {
        g.join().unwrap();
    }
    stats.join().unwrap();
    let lazy = store.stats().lazy_waits.load(std::sync::atomic::Ordering::Relaxed);
    eprintln!("{lazy} waits left new gets to the next completion");
    assert!(lazy > 0, "32 threads of gets never had 4 reads at the device during a wait");
    store.close().unwrap();
    join.join().unwrap();
}

/// A put too large for payload copies in the log is a vouched commit
/// (one flush); with no write after it, the thread proves it durable at
/// once with an empty log write of its own. Rot of its data then is
/// damage found by reads after a crash, never the put left out.
#[test]
fn the_thread_confirms_a_vouched_commit_no_other_follows() {
    use shardstore::device::sim::Fate;
    use std::sync::atomic::Ordering::Relaxed;
    let mut dev = SimDevice::new(SimConfig::new(64 << 20, 21));
    format(&mut dev, &FormatOptions { extent_size_bytes: Some(4 << 20), ..FormatOptions::default() }).unwrap();
    let h = dev.handle();
    // The scrubber paused: its findings would be log writes too.
    let paused = shardstore::store::scrub::ScrubSettings { paused: true, ..Default::default() };
    let settings = thread::ThreadSettings { scrub: Some(paused), ..Default::default() };
    let (store, join) = thread::spawn_with(Box::new(dev), settings).unwrap();
    let confirmed = |n: u64| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while store.stats().confirmations.load(Relaxed) < n {
            assert!(std::time::Instant::now() < deadline, "the vouched commit was never confirmed");
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    };
    store.put(b"old", vec![1u8; 1000]).unwrap();
    confirmed(1);
    let flushes = h.stats().flushes;
    store.put(b"k", vec![7u8; 200_000]).unwrap();
    confirmed(2);
    assert_eq!(store.stats().vouched_commits.load(Relaxed), 2);
    assert_eq!(store.stats().confirmations.load(Relaxed), 2);
    assert_eq!(h.stats().flushes - flushes, 2, "one flush for the put, one for its confirmation");
    let (offset, len) = Store::open_read_only(Box::new(h.attach())).unwrap().chunk_locations(b"k").unwrap()[0];
    h.rot_bit(offset + len / 3, 2);
    h.crash_with(|_, _| Fate::Persist);
    drop(store);
    let _ = join.join();
    let mut reopened = Store::open(Box::new(h.attach())).unwrap();
    assert!(reopened.reverted_at_open().is_empty());
    assert!(matches!(reopened.get(b"k"), Err(shardstore::error::Error::Corruption { .. })));
    assert_eq!(reopened.get(b"old").unwrap(), vec![1u8; 1000]);
}
