//! The shard store on a real file through io_uring with O_DIRECT: a few
//! thousand puts of random sizes in batches, deletes and overwrites, then a
//! clean restart and a restart after the handle was simply dropped (as a
//! killed process leaves it); everything reads back identically.

use std::collections::BTreeMap;

use shardstore::device::{self, OpenOptions};
use shardstore::format::{format, FormatOptions};
use shardstore::rng::Rng;
use shardstore::store::{Landing, Op, Store};

fn open(path: &std::path::Path) -> Store {
    Store::open(Box::new(device::open(path, &OpenOptions::default()).unwrap())).unwrap()
}

fn verify(store: &mut Store, model: &BTreeMap<Vec<u8>, Vec<u8>>) {
    store.check_invariants();
    assert_eq!(store.len(), model.len());
    for (k, v) in model {
        let got = store.get(k).unwrap_or_else(|e| panic!("{k:?}: {e}"));
        assert!(&got == v, "{k:?}: wrong bytes");
    }
}

/// A 1 GiB file formatted with 16 MiB extents, in a directory of its own
/// (removed when the returned guard drops).
fn formatted_file() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let path = dir.path().join("store.img");
    std::fs::File::create(&path).unwrap().set_len(1 << 30).unwrap();
    let mut dev = device::open(&path, &OpenOptions::default()).unwrap();
    format(&mut dev, &FormatOptions { extent_size_bytes: Some(16 << 20), ..FormatOptions::default() }).unwrap();
    (dir, path)
}

#[test]
fn thousands_of_puts_survive_restarts_on_a_real_file() {
    let (_dir, path) = formatted_file();
    let mut store = open(&path);
    let mut model: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
    let mut rng = Rng::new(2026);
    let mut puts = 0;
    while puts < 3000 {
        let batch = 1 + rng.below(48) as usize;
        let mut ops = Vec::with_capacity(batch);
        for _ in 0..batch {
            let key = format!("shard/{:05}", rng.below(2500)).into_bytes();
            if rng.chance(1, 10) {
                ops.push(Op::Delete { key });
                continue;
            }
            let len = match rng.below(100) {
                0..=59 => rng.below(8192),
                60..=94 => rng.below(128 << 10),
                _ => rng.below(3 << 20),
            } as usize;
            let data: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
            ops.push(Op::put(key, data));
            puts += 1;
        }
        let results = store.commit(&ops);
        for (op, r) in ops.into_iter().zip(results) {
            match op {
                Op::Put { key, data, .. } => {
                    r.unwrap_or_else(|e| panic!("put {key:?}: {e}"));
                    model.insert(key, data.to_vec());
                }
                Op::Delete { key } => match r {
                    Ok(()) => assert!(model.remove(&key).is_some()),
                    Err(shardstore::Error::NotFound(_)) => assert!(!model.contains_key(&key)),
                    Err(e) => panic!("delete {key:?}: {e}"),
                },
                other => unreachable!("this test makes no {other:?}"),
            }
        }
    }
    verify(&mut store, &model);
    store.close().unwrap();

    let mut store = open(&path);
    assert!(store.opened_clean(), "close() records a clean shutdown");
    verify(&mut store, &model);
    // A few more acknowledged writes, then the handle is abandoned without
    // close: the log alone must bring them back.
    for i in 0..50u32 {
        let key = format!("late/{i}").into_bytes();
        let data = vec![i as u8; (i as usize) * 997];
        store.put(&key, &data).unwrap();
        model.insert(key, data);
    }
    drop(store);
    let mut store = open(&path);
    assert!(!store.opened_clean(), "an abandoned store is not taken for a clean one");
    verify(&mut store, &model);
}

/// Put bodies that landed in record buffers (as the agent lands large
/// ones) are written as they are: mixed in batches with puts held as
/// pieces, one and several chunks, overwrites, with and without the
/// sender's CRC. They read back, survive a restart without close, a wrong
/// sender's CRC is refused with nothing written, and every record buffer
/// is free again once the commit answered.
#[test]
fn landed_puts_read_back_and_survive_a_restart() {
    const RECORDS: usize = 8;
    let (_dir, path) = formatted_file();
    let landing = Landing::new(RECORDS).unwrap();
    let land = |data: &[u8]| {
        let mut landed = landing.take(data.len()).expect("free records");
        for frame in data.chunks(100_003) {
            assert!(landed.extend(frame));
        }
        landed.finish().expect("every byte landed")
    };
    let mut store = open(&path);
    let mut model: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
    let mut rng = Rng::new(14);
    for round in 0..6 {
        let mut ops = Vec::new();
        for (i, len) in [64 << 10, 1 << 20, (2 << 20) + 4097].into_iter().enumerate() {
            let key = format!("landed/{}", (round + i) % 4).into_bytes();
            let data: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
            let crc32c = (i == 1).then(|| crc32c::crc32c(&data));
            ops.push(Op::Put { key: key.clone(), data: land(&data), crc32c, version: None });
            model.insert(key, data);
        }
        let small: Vec<u8> = (0..3000).map(|_| rng.next_u64() as u8).collect();
        ops.push(Op::put(format!("pieces/{round}"), small.clone()));
        model.insert(format!("pieces/{round}").into_bytes(), small);
        for (op, r) in ops.iter().zip(store.commit(&ops)) {
            r.unwrap_or_else(|e| panic!("put {:?}: {e}", op.key()));
        }
        assert_eq!(landing.free(), RECORDS, "round {round}: the written records are free again");
        verify(&mut store, &model);
    }
    let data = vec![5u8; 200_000];
    let wrong = crc32c::crc32c(&data) ^ 1;
    let r =
        store.commit(&[Op::Put { key: b"landed/bad".to_vec(), data: land(&data), crc32c: Some(wrong), version: None }]);
    assert!(matches!(r[0], Err(shardstore::Error::BadDigest { .. })), "{:?}", r[0]);
    assert_eq!(landing.free(), RECORDS);
    verify(&mut store, &model);
    drop(store);
    let mut store = open(&path);
    assert!(!store.opened_clean());
    verify(&mut store, &model);
}
