//! The full verification pass finds every injected fault that touches what
//! the store references (a flipped payload bit, a damaged header block, an
//! unreadable sector, a damaged superblock copy), names each exactly, and
//! reports nothing else: damage to dead records is not a finding.

use shardstore::device::sim::{Fault, SimConfig, SimDevice};
use shardstore::error::{Error, OpKind};
use shardstore::format::{format, FormatOptions};
use shardstore::layout;
use shardstore::rng::Rng;
use shardstore::store::scrub::FindingKind;
use shardstore::store::Store;

const DEVICE_BYTES: u64 = 128 << 20;

fn data(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = Rng::new(seed);
    (0..len).map(|_| rng.next_u64() as u8).collect()
}

#[test]
fn a_pass_finds_exactly_the_injected_faults() {
    let mut dev = SimDevice::new(SimConfig::new(DEVICE_BYTES, 5));
    format(&mut dev, &FormatOptions { extent_size_bytes: Some(8 << 20), ..FormatOptions::default() }).unwrap();
    let h = dev.handle();
    let mut store = Store::open(Box::new(dev)).unwrap();
    let sizes = [0usize, 1, 4000, 4096, 70_000, 1 << 20, (3 << 20) + 5];
    for (i, &len) in sizes.iter().cycle().take(21).enumerate() {
        store.put(format!("k{i:02}").as_bytes(), &data(len, i as u64)).unwrap();
    }
    // A shard put and deleted: its record is dead space.
    store.put(b"gone", &data(50_000, 99)).unwrap();
    let dead = store.chunk_locations(b"gone").unwrap()[0];
    store.delete(b"gone").unwrap();
    store.close().unwrap();
    let mut store = Store::open(Box::new(h.attach())).unwrap();
    let clean = store.scrub_pass(|_, _| {});
    assert!(clean.is_clean(), "a healthy store has findings: {:?}", clean.findings);
    // Per cycle of seven sizes: six one-chunk shards and a four-chunk one.
    assert_eq!(clean.chunks_verified, 3 * (6 + 4), "every chunk of every live shard");
    assert_eq!(clean.superblock_copies_checked, 4);
    assert!(clean.metadata_bytes_verified > 0);

    // The faults.
    let payload = |key: &str, chunk: usize| store.chunk_locations(key.as_bytes()).unwrap()[chunk];
    let (flip_at, _) = payload("k05", 0); // a 1 MiB shard
    h.rot_bit(flip_at + 777, 3);
    let (multi, _) = payload("k06", 2); // the third chunk of a 3 MiB shard
    h.rot_bit(multi + 5, 0);
    let (header_of, _) = payload("k10", 0);
    let header_at = header_of - 4096; // the header block before the payload
    h.rot_bit(header_at + 20, 1);
    let (unreadable, _) = payload("k11", 0); // 70 000 bytes
    let bad_sector = unreadable + 8 * 4096;
    h.inject(Fault { op: OpKind::Read, range: Some((bad_sector, 512)), skip: 0, remaining: None });
    let copy2 = layout::copy_offset(DEVICE_BYTES, 2);
    h.rot_bit(copy2 + 40, 6);
    h.rot_bit(dead.0 + 10, 2); // dead space: not a finding

    let report = store.scrub_pass(|_, _| {});
    let mut found: Vec<(FindingKind, Option<String>, u64, u64)> =
        report.findings.iter().map(|f| (f.kind, f.key.clone(), f.offset, f.len)).collect();
    found.sort_by_key(|f| f.2);
    let mut want = vec![
        (FindingKind::ChunkChecksum, Some("k05".to_owned()), flip_at, 1 << 20),
        (FindingKind::ChunkChecksum, Some("k06".to_owned()), multi, 1 << 20),
        (FindingKind::ChunkHeader, Some("k10".to_owned()), header_at, 4096),
        (FindingKind::ChunkUnreadable, Some("k11".to_owned()), bad_sector, 512),
        (FindingKind::SuperblockCopy, None, copy2, 4096),
    ];
    want.sort_by_key(|f| f.2);
    assert_eq!(found, want, "findings:\n{:#?}", report.findings);

    // What failed verification is never served.
    for key in ["k05", "k06", "k11"] {
        match store.get(key.as_bytes()) {
            Err(Error::Corruption { .. }) => {}
            other => panic!("{key}: a damaged shard was answered with {:?}", other.map(|b| b.len())),
        }
    }
    // A damaged header block leaves the payload intact (a get reads only
    // the payload, checked against the locator's CRC): the right bytes are
    // still served, and the finding is that the record can no longer be
    // rebuilt from the extent alone.
    assert_eq!(store.get(b"k10").unwrap(), data(sizes[10 % sizes.len()], 10));
    assert_eq!(store.get(b"k12").unwrap(), data(sizes[12 % sizes.len()], 12));
}
