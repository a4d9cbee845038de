//! The device thread: concurrent writers share group commits (far fewer
//! flushes than puts), every acknowledged put is durable, reads see
//! acknowledged writes, and close records a clean shutdown.

use std::sync::Arc;

use shardstore::device::sim::{SimConfig, SimDevice};
use shardstore::format::{format, FormatOptions};
use shardstore::store::{thread, Store};

#[test]
fn concurrent_writers_share_group_commits() {
    let mut dev = SimDevice::new(SimConfig::new(128 << 20, 11));
    format(&mut dev, &FormatOptions { extent_size_bytes: 4 << 20, ..FormatOptions::default() }).unwrap();
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
    assert_eq!(usage.live_bytes, 1280 * 8192, "a header block and one payload block per shard");
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
    for w in 0..64u32 {
        for i in 0..20u32 {
            assert_eq!(reopened.get(format!("w{w}/{i}").as_bytes()).unwrap(), vec![(w ^ i) as u8; 4096]);
        }
    }
}
