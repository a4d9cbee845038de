//! Memory the store keeps per shard, measured with a counting allocator:
//! the growth of live heap bytes while 10 000 shards with 16-byte keys
//! are added (everything a commit allocates temporarily is freed again).
//! The target is under 100 bytes plus the key (issue 3); the bound below
//! guards against regressions from today's figure until the index entry is
//! compacted.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use shardstore::device::sim::{SimConfig, SimDevice};
use shardstore::format::{format, FormatOptions};
use shardstore::store::{Op, Store};

struct Counting;

static ALLOCATED: AtomicUsize = AtomicUsize::new(0);
static FREED: AtomicUsize = AtomicUsize::new(0);

/// Heap bytes live now.
fn live() -> f64 {
    ALLOCATED.load(Ordering::Relaxed) as f64 - FREED.load(Ordering::Relaxed) as f64
}

// SAFETY: forwards to the system allocator and only counts sizes.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATED.fetch_add(layout.size(), Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        FREED.fetch_add(layout.size(), Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn memory_per_shard() {
    const SHARDS: usize = 10_000;
    const KEY_BYTES: usize = 16;
    let mut dev = SimDevice::new(SimConfig::new(256 << 20, 3));
    format(&mut dev, &FormatOptions { extent_size_bytes: 16 << 20, ..FormatOptions::default() }).unwrap();
    let mut store = Store::open(Box::new(dev)).unwrap();
    // Warm up any lazily allocated state with one batch, then measure.
    store.commit(&[Op::Put { key: b"warmup/000000000".to_vec(), data: Vec::new() }]);
    let before = live();
    for batch in 0..SHARDS / 500 {
        let ops: Vec<Op> = (0..500)
            .map(|i| Op::Put { key: format!("shard/{:010}", batch * 500 + i).into_bytes(), data: Vec::new() })
            .collect();
        assert!(store.commit(&ops).iter().all(Result::is_ok));
    }
    let per_shard = (live() - before) / SHARDS as f64;
    eprintln!("memory per shard: {per_shard:.1} bytes including a {KEY_BYTES}-byte key");
    assert_eq!(store.len(), SHARDS + 1);
    assert!(per_shard < 200.0 + KEY_BYTES as f64, "index memory regressed: {per_shard:.1} bytes per shard");
}
