//! The read cache, on a real file through io_uring: a shard enters when a
//! whole-shard get verified it, a write or delete of the key drops it
//! before the write is answered, and a hit is never older than a write
//! acknowledged before the lookup, while reads in flight race overwrites.
//! On the simulated device, the states a real one gives only by chance: a
//! read completing after a later overwrite, a failed flush.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex};

use shardstore::device::sim::{SimConfig, SimDevice, SimHandle};
use shardstore::device::OpenOptions;
use shardstore::format::{format, FormatOptions};
use shardstore::store::cache::ReadCacheSettings;
use shardstore::store::thread::{self, StoreHandle, ThreadSettings};

#[path = "common/overwrites.rs"]
mod overwrites;
use overwrites::{overwrite_until, problem, versioned};

fn start(dir: &std::path::Path, read_cache: ReadCacheSettings) -> (StoreHandle, std::thread::JoinHandle<()>) {
    let path = dir.join("store.img");
    std::fs::File::create(&path).unwrap().set_len(256 << 20).unwrap();
    let options = OpenOptions { queue_depth: 64, ..Default::default() };
    {
        let mut dev = shardstore::device::open(&path, &options).unwrap();
        format(&mut dev, &FormatOptions { extent_size_bytes: Some(8 << 20), ..FormatOptions::default() }).unwrap();
    }
    let dev = shardstore::device::open(&path, &options).unwrap();
    thread::spawn_with(Box::new(dev), ThreadSettings { read_cache, ..ThreadSettings::default() }).unwrap()
}

/// A store thread on a formatted simulated device, with its handle.
fn start_sim(seed: u64, settings: ThreadSettings) -> (StoreHandle, std::thread::JoinHandle<()>, SimHandle) {
    let mut dev = SimDevice::new(SimConfig::new(64 << 20, seed));
    format(&mut dev, &FormatOptions { extent_size_bytes: Some(4 << 20), ..FormatOptions::default() }).unwrap();
    let h = dev.handle();
    let (store, join) = thread::spawn_with(Box::new(dev), settings).unwrap();
    (store, join, h)
}

const ON: ReadCacheSettings = ReadCacheSettings { capacity_bytes: 1 << 20, shard_bytes_max: 64 << 10 };

#[test]
fn a_cached_shard_is_what_the_store_holds_now() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let (store, join) = start(dir.path(), ON);
    let hits = || store.read_cache().stats().hits.load(SeqCst);

    store.put(b"k", vec![1u8; 5000]).unwrap();
    assert!(store.cached(b"k").is_none(), "a put alone fills nothing");
    // A range read does not fill it; a whole-shard read does.
    assert_eq!(store.get_range(b"k", 10, 20).unwrap(), vec![1u8; 20]);
    assert!(store.cached(b"k").is_none());
    assert_eq!(store.get(b"k").unwrap(), vec![1u8; 5000]);
    let hit = store.cached(b"k").expect("a verified whole read is kept");
    assert_eq!(hit.bytes.as_ref(), &[1u8; 5000][..]);
    let stat = store.stat(b"k").unwrap().unwrap();
    assert_eq!(hit.stat, stat);
    assert_eq!(hits(), 1);

    // An overwrite drops the entry before it is acknowledged; the next
    // whole read keeps the new bytes.
    store.put(b"k", vec![2u8; 3000]).unwrap();
    assert!(store.cached(b"k").is_none(), "the old bytes outlived an acknowledged overwrite");
    store.get(b"k").unwrap();
    assert_eq!(store.cached(b"k").unwrap().bytes.as_ref(), &[2u8; 3000][..]);
    // So does a delete.
    store.delete(b"k").unwrap();
    assert!(store.cached(b"k").is_none(), "a deleted shard is still answered");

    // A shard past the size limit is never kept.
    store.put(b"big", vec![3u8; 100 << 10]).unwrap();
    store.get(b"big").unwrap();
    assert!(store.cached(b"big").is_none());

    // Closing empties it: a handle kept past the thread answers nothing.
    store.put(b"k2", vec![4u8; 10]).unwrap();
    store.get(b"k2").unwrap();
    assert!(store.cached(b"k2").is_some());
    store.close().unwrap();
    join.join().unwrap();
    assert!(store.cached(b"k2").is_none(), "a closed store's cache still answers");
}

#[test]
fn a_store_without_a_cache_keeps_nothing() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let (store, join) = start(dir.path(), ReadCacheSettings::OFF);
    store.put(b"k", vec![1u8; 10]).unwrap();
    store.get(b"k").unwrap();
    assert!(store.cached(b"k").is_none());
    assert_eq!(store.read_cache().stats().misses.load(SeqCst), 0, "a cache turned off is not counted");
    store.close().unwrap();
    join.join().unwrap();
}

const KEYS: u32 = 8;
const GETS: u64 = 20_000;

struct Shared {
    store: StoreHandle,
    acked: Vec<AtomicU32>,
    issued: AtomicU64,
    finished: AtomicU64,
    problems: Mutex<Vec<String>>,
}

/// Whole-shard gets, each issued from the completion of the one before
/// (32 chains), keep reads of a few keys in flight while they are
/// overwritten: the reads that finish fill the cache.
fn chain(s: &Arc<Shared>, n: u64) {
    let key = (n.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40) as u32 % KEYS;
    let me = Arc::clone(s);
    s.store
        .submit_get(format!("k{key}").into_bytes(), 0, u64::MAX, move |got| {
            if let Err(e) = got {
                me.problems.lock().unwrap().push(format!("get of k{key}: {e}"));
            }
            let next = me.issued.fetch_add(1, SeqCst);
            if next < GETS {
                chain(&me, next);
            }
            me.finished.fetch_add(1, SeqCst);
        })
        .unwrap();
}

/// The race the cache must win: a read of a key in flight while an
/// overwrite of the key commits. Its older bytes must not enter the cache
/// once the overwrite is applied. A checker looks keys up as fast as it
/// can: every hit must be the key's own bytes, of a version no older than
/// the last one acknowledged before the lookup began.
#[test]
fn a_hit_is_never_older_than_a_write_acknowledged_before_it() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let (store, join) = start(dir.path(), ON);
    for k in 0..KEYS {
        store.put(format!("k{k}").as_bytes(), versioned(k, 0)).unwrap();
    }
    let s = Arc::new(Shared {
        store: store.clone(),
        acked: (0..KEYS).map(|_| AtomicU32::new(0)).collect(),
        issued: AtomicU64::new(32),
        finished: AtomicU64::new(0),
        problems: Mutex::new(Vec::new()),
    });
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (s, stop) = (Arc::clone(&s), Arc::clone(&stop));
        std::thread::spawn(move || overwrite_until(&s.store, &s.acked, 5, || stop.load(SeqCst)))
    };
    let checker = {
        let (s, stop) = (Arc::clone(&s), Arc::clone(&stop));
        std::thread::spawn(move || {
            let (mut lookups, mut hits) = (0u64, 0u64);
            while !stop.load(SeqCst) {
                let key = (lookups % u64::from(KEYS)) as u32;
                let at_least = s.acked[key as usize].load(SeqCst);
                lookups += 1;
                let Some(hit) = s.store.cached(format!("k{key}").as_bytes()) else { continue };
                hits += 1;
                if let Some(p) = problem(key, &hit.bytes, at_least) {
                    s.problems.lock().unwrap().push(format!("hit of k{key}: {p}"));
                }
            }
            (lookups, hits)
        })
    };
    for n in 0..32 {
        chain(&s, n);
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while s.finished.load(SeqCst) < GETS && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    stop.store(true, SeqCst);
    let puts = writer.join().unwrap();
    let (lookups, hits) = checker.join().unwrap();
    assert_eq!(s.finished.load(SeqCst), GETS, "the gets did not finish within 120 s");
    let problems = s.problems.lock().unwrap();
    assert!(problems.is_empty(), "{} problems, first: {}", problems.len(), problems[0]);
    let stats = store.read_cache().stats();
    eprintln!(
        "{GETS} gets and {puts} overwrites of {KEYS} keys; {lookups} lookups, {hits} hits; {} entries kept, {} dropped by writes",
        stats.inserts.load(SeqCst),
        stats.invalidations.load(SeqCst)
    );
    // The race was run, not avoided: keys were cached, hit, and dropped by
    // overwrites many times over.
    assert!(puts > 100 && hits > 100, "{puts} overwrites, {hits} hits");
    assert!(stats.invalidations.load(SeqCst) > 100);
    drop(problems);
    store.close().unwrap();
    join.join().unwrap();
}

/// The same race made certain on the simulated device, which can hold a
/// read's completion back on demand: a read of the old bytes is in flight
/// while an overwrite commits and is acknowledged, and finishes only after
/// it. It returns the old bytes (it began before the overwrite), but they
/// must not enter the cache.
#[test]
fn a_read_finishing_after_an_overwrite_does_not_bring_the_old_bytes_back() {
    use shardstore::store::scrub::ScrubSettings;
    // The scrubber paused: the operation held back must be the get's read.
    let settings = ThreadSettings {
        scrub: Some(ScrubSettings { paused: true, ..ScrubSettings::default() }),
        read_cache: ON,
        unvouched_commits: false,
    };
    let (store, join, h) = start_sim(3, settings);
    store.put(b"k", vec![1u8; 4096]).unwrap();
    h.hold_next_completion();
    let (tx, rx) = std::sync::mpsc::channel();
    store.submit_get(b"k".to_vec(), 0, u64::MAX, move |r| tx.send(r).unwrap()).unwrap();
    // The read is on the device before the overwrite is sent.
    let sent = std::time::Instant::now();
    while h.stats().reads == 0 && sent.elapsed() < std::time::Duration::from_secs(10) {
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    store.put(b"k", vec![2u8; 4096]).unwrap();
    assert!(rx.try_recv().is_err(), "the read finished before the overwrite was acknowledged: the race was not run");
    h.release_held();
    assert_eq!(rx.recv().unwrap().unwrap(), vec![1u8; 4096], "the read began before the overwrite");
    if let Some(hit) = store.cached(b"k") {
        assert!(hit.bytes.iter().all(|&b| b == 2), "the cache brought back bytes an acknowledged overwrite replaced");
    }
    // The next whole read keeps the new bytes.
    assert_eq!(store.get(b"k").unwrap(), vec![2u8; 4096]);
    assert!(store.cached(b"k").unwrap().bytes.iter().all(|&b| b == 2));
    store.close().unwrap();
    join.join().unwrap();
}

/// A store whose flush failed answers nothing more from memory: its cache
/// is emptied and stays empty, even as gets go on reading what the device
/// holds (the simulated device fails one flush on demand).
#[test]
fn a_failed_store_answers_nothing_from_its_cache() {
    use shardstore::device::sim::Fault;
    use shardstore::error::OpKind;
    let (store, join, h) = start_sim(4, ThreadSettings { read_cache: ON, ..ThreadSettings::default() });
    store.put(b"k", vec![7u8; 4096]).unwrap();
    store.get(b"k").unwrap();
    assert!(store.cached(b"k").is_some());
    h.inject(Fault::once(OpKind::Flush));
    assert!(store.put(b"other", vec![1u8; 10]).is_err(), "the put whose flush failed");
    assert!(store.cached(b"k").is_none(), "a failed store's cache still answers");
    let _ = store.get(b"k");
    assert!(store.cached(b"k").is_none(), "a failed store's cache was filled again");
    assert_eq!(store.read_cache().stats().bytes.load(SeqCst), 0);
    drop(store);
    join.join().unwrap();
}
