//! Memory the store keeps per shard, measured with a counting allocator:
//! the growth of live heap bytes while 10 000 shards with 16-byte keys
//! are added (everything a commit allocates temporarily is freed again).
//! Counted are the sizes Rust asks the allocator for (the allocator's own
//! bookkeeping, about 8 to 16 bytes per allocation with glibc, is not).
//! The target, and the bound asserted, is under 100 bytes plus the key.

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

/// Live heap bytes per shard after adding `SHARDS` one-chunk shards with
/// 16-byte keys, in the order `order` gives.
fn measure(order: impl Fn(usize) -> usize) -> f64 {
    const SHARDS: usize = 10_000;
    let mut dev = SimDevice::new(SimConfig::new(256 << 20, 3));
    format(&mut dev, &FormatOptions { extent_size_bytes: Some(16 << 20), ..FormatOptions::default() }).unwrap();
    let mut store = Store::open(Box::new(dev)).unwrap();
    // Warm up any lazily allocated state with one batch, then measure.
    store.commit(&[Op::put(b"warmup/000000000".to_vec(), vec![1; 100])]);
    let before = live();
    for batch in 0..SHARDS / 500 {
        let ops: Vec<Op> = (0..500)
            .map(|i| Op::put(format!("shard/{:010}", order(batch * 500 + i)).into_bytes(), vec![7; 100]))
            .collect();
        assert!(store.commit(&ops).iter().all(Result::is_ok));
    }
    assert_eq!(store.len(), SHARDS + 1);
    let measured = (live() - before) / SHARDS as f64;
    // The index's own estimate, which status and metrics report, is close
    // to what the allocator counted.
    let estimated = store.index_memory_bytes() as f64 / store.len() as f64;
    assert!(
        (estimated / measured - 1.0).abs() < 0.25,
        "estimated {estimated:.1} bytes per shard, measured {measured:.1}"
    );
    measured
}

#[test]
fn memory_per_shard() {
    const KEY_BYTES: usize = 16;
    // Keys in order (a B-tree's worst case: nodes split and stay half
    // full) and in a scattered order (as hashed object names arrive).
    let sequential = measure(|n| n);
    let scattered = measure(|n| n.wrapping_mul(7919) % 10_000);
    eprintln!(
        "memory per shard with a {KEY_BYTES}-byte key: {sequential:.1} bytes (keys in order), {scattered:.1} bytes (scattered)"
    );
    for per_shard in [sequential, scattered] {
        assert!(per_shard < 100.0 + KEY_BYTES as f64, "over 100 bytes plus the key: {per_shard:.1} bytes per shard");
    }
}
