//! Every decoder of the store's on-disk structures takes arbitrary bytes
//! without panicking or allocating by what the bytes claim: the chunk
//! header, the log block (also with a valid frame around random records),
//! the checkpoint header and the superblock copy. Recovery itself is fed
//! log blocks that pass every checksum but carry random records: it opens
//! with a consistent index or refuses with `Corruption`, never panics.
//! A bounded number of cases runs in CI (`PROPTEST_CASES` runs more).

use proptest::prelude::*;
use shardstore::device::sim::{SimConfig, SimDevice, SimHandle};
use shardstore::error::Error;
use shardstore::format::{format, FormatOptions};
use shardstore::store::meta::{
    self, CheckpointHeader, Damage, Locator, LogRecord, Reader, ScrubCursor, ShardMeta, BLOCK, LOG_PAYLOAD_BYTES_MAX,
};
use shardstore::store::record::{self, RecordHeader};
use shardstore::store::Store;
use shardstore::superblock::Superblock;

const DEVICE_BYTES: u64 = 48 << 20;
const EXTENT_BYTES: u64 = 4 << 20;

fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), 0..max)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn chunk_headers_take_any_bytes(mut b in bytes(4200), fix_crc in any::<bool>(), crc in any::<u32>()) {
        if fix_crc && b.len() >= 64 {
            // Give the random header a valid magic and header CRC so the
            // decoder reaches the field checks.
            b[0..4].copy_from_slice(b"SHCK");
            let key_len = (b[5] as usize).min(b.len() - 64);
            b[5] = key_len as u8;
            let c = crc32c::crc32c_append(crc32c::crc32c(&b[..60]), &b[64..64 + key_len]);
            b[60..64].copy_from_slice(&c.to_le_bytes());
        }
        let _ = RecordHeader::decode(&b);
        let _ = RecordHeader::verify(&b, 1, crc);
    }

    /// A header block whose slots hold random headers given a valid magic,
    /// group flag and CRC (keys and distances as the bytes say): the list
    /// decodes or stops with a problem, and `verify` at any distance reads
    /// within the bytes it was given.
    #[test]
    fn group_blocks_take_any_bytes(
        mut b in proptest::collection::vec(any::<u8>(), 4096..8192),
        slots in 1..40usize,
        distance in any::<u8>(),
        crc in any::<u32>(),
    ) {
        let mut at = 0;
        for _ in 0..slots {
            if at + 64 > 4096 {
                break;
            }
            b[at..at + 4].copy_from_slice(b"SHCK");
            b[at + 4] = 1;
            b[at + 6] = 1;
            // Extent and generation 0, and a chunk of up to 16 KiB that is
            // its whole shard: the members' payload distances decide.
            b[at + 16..at + 24].fill(0);
            let chunk_len = 1 + u32::from(b[at + 40]) * 64;
            b[at + 24..at + 32].copy_from_slice(&u64::from(chunk_len).to_le_bytes());
            b[at + 32..at + 40].fill(0);
            b[at + 40..at + 44].copy_from_slice(&chunk_len.to_le_bytes());
            let key_len = (b[at + 5] as usize).min(4096 - at - 64);
            b[at + 5] = key_len as u8;
            let c = crc32c::crc32c_append(crc32c::crc32c(&b[at..at + 60]), &b[at + 64..at + 64 + key_len]);
            b[at + 60..at + 64].copy_from_slice(&c.to_le_bytes());
            at += (64 + key_len).next_multiple_of(8);
        }
        if let Ok((headers, _)) = record::decode_block(&b[..4096]) {
            prop_assert!(!headers.is_empty() && headers.len() <= slots);
            prop_assert!(headers.iter().all(|h| h.grouped && h.distance >= 1));
            prop_assert!(headers.windows(2).all(|w| w[0].distance < w[1].distance));
        }
        let _ = RecordHeader::verify(&b, distance, crc);
    }

    #[test]
    fn log_blocks_take_any_bytes(mut b in bytes(BLOCK + 1), epoch in 0..3u64, index in 0..3u64, prev in 0..3u32) {
        let _ = meta::decode_log_block(&b, epoch, index, prev);
        b.resize(BLOCK, 0);
        let _ = meta::decode_log_block(&b, epoch, index, prev);
    }

    #[test]
    fn framed_log_blocks_of_random_records_decode_or_refuse(
        payload in bytes(LOG_PAYLOAD_BYTES_MAX),
        count in any::<u32>(),
    ) {
        let mut block = vec![0u8; BLOCK];
        meta::encode_log_block(1, 0, 7, count, &payload, &mut block);
        if let Some((_, records)) = meta::decode_log_block(&block, 1, 0, 7) {
            prop_assert_eq!(records.len(), count as usize);
        }
        let mut r = Reader::new(&payload);
        while r.record().is_some() {}
        let mut r = Reader::new(&payload);
        while r.key_and_meta().is_some() {}
        let mut r = Reader::new(&payload);
        while r.key_and_damage().is_some() {}
    }

    #[test]
    fn checkpoint_headers_take_any_bytes(mut b in bytes(200), version in 0..4u32) {
        let _ = CheckpointHeader::decode(&b);
        if b.len() >= 8 {
            b[0..4].copy_from_slice(b"SHCP");
            b[4..8].copy_from_slice(&version.to_le_bytes());
            let _ = CheckpointHeader::decode(&b);
        }
    }

    #[test]
    fn superblock_copies_take_any_bytes(mut b in bytes(4096), slot in 0..4usize) {
        b.resize(4096, 0);
        let _ = Superblock::decode(&b, slot);
        b[0..8].copy_from_slice(b"SHRDNDSB");
        let c = crc32c::crc32c(&b[12..]);
        b[8..12].copy_from_slice(&c.to_le_bytes());
        let _ = Superblock::decode(&b, slot);
    }
}

/// Log records with numbers near the layout's limits: some valid, some
/// past an extent's end, past the extent table, or with the wrong chunk
/// count for their size.
fn record() -> impl Strategy<Value = LogRecord> {
    let extents = (DEVICE_BYTES / EXTENT_BYTES) as u32;
    let blocks = (EXTENT_BYTES / 4096) as u32;
    let key = prop_oneof![Just(b"k0".to_vec()), Just(b"k1".to_vec()), Just(b"k2".to_vec())];
    let extent = prop_oneof![0..extents, Just(extents - 1), Just(extents), any::<u32>()];
    // Blocks and payload distances near their limits, and any packed form
    // of the two at all.
    let block = prop_oneof![0..blocks, Just(blocks - 1), Just(blocks), Just((1 << 24) - 1)];
    let distance = prop_oneof![Just(1u8), 1..=u8::MAX];
    let locator = prop_oneof![
        (extent.clone(), block, distance, any::<u32>()).prop_map(|(extent, block, distance, crc)| Locator {
            extent,
            block,
            distance,
            crc
        }),
        (extent.clone(), 0..0xff00_0000u32, any::<u32>())
            .prop_map(|(extent, packed, crc)| Locator::unpack(extent, packed, crc).expect("a distance under 256")),
    ];
    let size = prop_oneof![0..10_000u64, Just(1 << 20), Just((1 << 20) + 1), Just(64 << 20), any::<u64>()];
    let meta = (size, any::<u32>(), 0..100u64, proptest::collection::vec(locator.clone(), 0..4))
        .prop_map(|(size, crc, sequence, chunks)| ShardMeta::new(size, crc, sequence, 5, chunks));
    prop_oneof![
        (key.clone(), meta).prop_map(|(key, meta)| LogRecord::Put { key, meta }),
        (key.clone(), 0..100u64).prop_map(|(key, sequence)| LogRecord::Delete { key, sequence }),
        (key.clone(), 0..100u64, 0..3u32, locator).prop_map(|(key, sequence, chunk, to)| LogRecord::Relocate {
            key,
            sequence,
            chunk,
            to
        }),
        (extent.clone(), any::<u32>()).prop_map(|(extent, generation)| LogRecord::Reset { extent, generation }),
        (extent, 0..3u32, any::<u32>()).prop_map(|(extent, generation, next_extent)| LogRecord::Scrubbed {
            extent,
            generation,
            checked_ms: 9,
            scrub: ScrubCursor { next_extent, ..ScrubCursor::default() },
        }),
        (key, 0..100u64).prop_map(|(key, sequence)| LogRecord::Damaged {
            key,
            damage: Damage { sequence, chunk: 0, kind: 3, offset: 0, len: 0, found_ms: 1 }
        }),
    ]
}

/// A store with a few shards, closed (its log is empty), and where its
/// first log block goes: (offset, epoch, previous CRC).
fn closed_store(seed: u64) -> (SimHandle, u64, u64, u32) {
    let mut dev = SimDevice::new(SimConfig::new(DEVICE_BYTES, seed));
    format(&mut dev, &FormatOptions { extent_size_bytes: Some(EXTENT_BYTES), ..FormatOptions::default() }).unwrap();
    let h = dev.handle();
    let mut store = Store::open(Box::new(dev)).unwrap();
    store.put(b"k0", &[1u8; 5000]).unwrap();
    store.put(b"k1", &vec![2u8; (1 << 20) + 3]).unwrap();
    let sb = store.superblock().clone();
    store.close().unwrap();
    let sb_now = shardstore::superblock::open(&mut h.attach(), false).unwrap().superblock;
    assert_eq!(sb_now.store.epoch, sb.store.epoch + 1, "close writes a checkpoint");
    let half = sb_now.layout.meta_offset + u64::from(sb_now.store.half) * (sb_now.layout.meta_size_bytes / 2);
    (h, half + sb_now.store.checkpoint_len_bytes, sb_now.store.epoch, sb_now.store.checkpoint_crc)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn recovery_of_checksummed_but_wrong_records_opens_consistently_or_refuses(
        records in proptest::collection::vec(record(), 1..12),
        seed in any::<u64>(),
    ) {
        let (h, offset, epoch, prev) = closed_store(seed);
        let mut payload = Vec::new();
        for r in &records {
            r.encode(&mut payload);
        }
        prop_assume!(payload.len() <= LOG_PAYLOAD_BYTES_MAX);
        let mut block = vec![0u8; BLOCK];
        meta::encode_log_block(epoch, 0, prev, records.len() as u32, &payload, &mut block);
        h.scribble(offset, &block);
        match Store::open(Box::new(h.attach())) {
            Ok(mut store) => {
                store.check_invariants();
                for key in [b"k0", b"k1", b"k2"] {
                    let _ = store.get(key);
                }
                store.check_invariants();
            }
            Err(e) => prop_assert!(matches!(e, Error::Corruption { .. }), "{e}"),
        }
    }
}

/// A put record with no chunks passed every checksum and was indexed;
/// a later get of the shard panicked. It is refused at open now.
#[test]
fn a_logged_put_without_chunks_is_refused_at_open() {
    let (h, offset, epoch, prev) = closed_store(3);
    let put = LogRecord::Put { key: b"k2".to_vec(), meta: ShardMeta::new(10, 0, 50, 5, Vec::new()) };
    let mut payload = Vec::new();
    put.encode(&mut payload);
    let mut block = vec![0u8; BLOCK];
    meta::encode_log_block(epoch, 0, prev, 1, &payload, &mut block);
    h.scribble(offset, &block);
    let err = Store::open(Box::new(h.attach())).unwrap_err();
    assert!(
        matches!(&err, Error::Corruption { what, offset: at, .. } if what.contains("chunks") && *at == offset),
        "{err}"
    );
}
