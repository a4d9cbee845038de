//! A formatted store on a simulated device of 64 MiB with 4 MiB extents,
//! for the regression tests.

use shardstore::device::sim::{SimConfig, SimDevice, SimHandle};
use shardstore::format::{format, FormatOptions};
use shardstore::store::Store;

/// A fresh store, and the test's grip on its device.
pub fn fresh(seed: u64) -> (SimHandle, Store) {
    let mut dev = SimDevice::new(SimConfig::new(64 << 20, seed));
    format(&mut dev, &FormatOptions { extent_size_bytes: Some(4 << 20), ..FormatOptions::default() }).unwrap();
    let h = dev.handle();
    (h, Store::open(Box::new(dev)).unwrap())
}
