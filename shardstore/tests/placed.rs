//! Placements (`store::placed`), on real files through io_uring: one
//! store places a shard its get verified, and another store's ring reads
//! it from there. A place never outlives a change of its key (a put, a
//! delete, its chunk moved by reclamation) or its store; a read whose
//! bytes do not verify, or during which an extent was reset, is refused
//! (its reader asks the owner instead).

use std::time::{Duration, Instant};

use shardstore::device::{self, IoBuf, OpenOptions};
use shardstore::format::{format, FormatOptions};
use shardstore::sockets::SocketOp;
use shardstore::store::placed::PlacedRead;
use shardstore::store::Store;

/// A store on a 256 MiB file of 8 MiB extents, named `name` in `dir`.
fn store(dir: &std::path::Path, name: &str) -> Store {
    let path = dir.join(name);
    std::fs::File::create(&path).unwrap().set_len(256 << 20).unwrap();
    {
        let mut dev = device::open(&path, &OpenOptions::default()).unwrap();
        format(&mut dev, &FormatOptions { extent_size_bytes: Some(8 << 20), ..FormatOptions::default() }).unwrap();
    }
    Store::open(Box::new(device::open(&path, &OpenOptions::default()).unwrap())).unwrap()
}

/// Reads `read`'s place on `ring`'s io_uring, as a serving thread does.
fn read_on(ring: &mut Store, read: &PlacedRead) -> (std::io::Result<usize>, IoBuf) {
    let buf = IoBuf::standalone(read.read_len()).unwrap();
    ring.submit_socket(7, SocketOp::ReadAt { file: read.file(), offset: read.offset(), buf }).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut done = Vec::new();
    while done.is_empty() {
        assert!(Instant::now() < deadline, "a placed read did not complete in 10 s");
        ring.wait_for_wake(Duration::from_millis(20), &mut Vec::new()).unwrap();
        ring.take_socket_completions(&mut done);
    }
    let d = done.pop().unwrap();
    assert_eq!(d.token, 7);
    let SocketOp::ReadAt { buf, .. } = d.op else { panic!("another operation completed: {:?}", d.op) };
    (d.result, buf)
}

/// Looks `key` up in `owner`'s placements and reads it on `ring`: what
/// the check lets through.
fn placed_bytes(owner: &Store, ring: &mut Store, key: &[u8]) -> Option<Vec<u8>> {
    let read = owner.placements().lookup(key)?;
    let (result, buf) = read_on(ring, &read);
    read.finish(&result, buf.as_slice())
}

fn bytes(seed: u8, len: usize) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect()
}

#[test]
fn a_placed_shard_is_read_on_another_ring_and_never_outlives_a_change_of_its_key() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let mut owner = store(dir.path(), "owner.img");
    let mut ring = store(dir.path(), "reader.img");
    let stats = owner.placements();
    let reads = || stats.stats().reads.load(std::sync::atomic::Ordering::SeqCst);

    owner.put(b"k", &bytes(1, 5000)).unwrap();
    assert!(owner.placements().lookup(b"k").is_none(), "a put alone places nothing");
    // A range read places nothing; a whole read does.
    owner.get_range(b"k", 0, 100).unwrap();
    assert!(owner.placements().lookup(b"k").is_none());
    assert_eq!(owner.get(b"k").unwrap(), bytes(1, 5000));
    let read = owner.placements().lookup(b"k").expect("a verified whole read places its shard");
    assert_eq!(read.stat, owner.stat(b"k").unwrap());
    assert_eq!(placed_bytes(&owner, &mut ring, b"k"), Some(bytes(1, 5000)));
    assert_eq!(reads(), 1);

    // An overwrite removes the place before it is acknowledged; the next
    // whole read places the new bytes.
    owner.put(b"k", &bytes(2, 3000)).unwrap();
    assert!(owner.placements().lookup(b"k").is_none(), "the old place outlived an acknowledged overwrite");
    owner.get(b"k").unwrap();
    assert_eq!(placed_bytes(&owner, &mut ring, b"k"), Some(bytes(2, 3000)));
    // So does a delete.
    owner.delete(b"k").unwrap();
    assert!(owner.placements().lookup(b"k").is_none(), "a deleted shard keeps its place");

    // Too large, or of more than one chunk: never placed.
    owner.put(b"big", &bytes(3, 200 << 10)).unwrap();
    owner.get(b"big").unwrap();
    assert!(owner.placements().lookup(b"big").is_none());

    // Bytes that do not match the shard's CRC are refused, and counted.
    owner.put(b"k2", &bytes(4, 4096)).unwrap();
    owner.get(b"k2").unwrap();
    let read = owner.placements().lookup(b"k2").unwrap();
    let (result, mut buf) = read_on(&mut ring, &read);
    buf.as_mut_slice()[100] ^= 0x10;
    assert_eq!(read.finish(&result, buf.as_slice()), None, "a flipped bit was answered");
    assert_eq!(read.finish(&Ok(100), &bytes(4, 4096)), None, "a short read was answered");
    assert_eq!(owner.placements().stats().failed.load(std::sync::atomic::Ordering::SeqCst), 2);

    // A reader whose read is slow suspends the places (the device may
    // hang): lookups go to the owner until it finishes a read again.
    read.suspend();
    assert!(owner.placements().lookup(b"k2").is_none(), "a suspended device's places are still read");
    owner.get(b"k2").unwrap();
    assert_eq!(placed_bytes(&owner, &mut ring, b"k2"), Some(bytes(4, 4096)));

    // Closing removes every place (and the descriptor: nothing to read).
    owner.close().unwrap();
    assert!(stats.lookup(b"k2").is_none(), "a closed store's places are still read");
    assert_eq!(stats.stats().entries.load(std::sync::atomic::Ordering::SeqCst), 0);
}

/// Reclamation moves a placed shard's chunk (its place goes before the
/// move is applied) and resets the extent it left: a read that looked its
/// place up before the reset is refused as stale when it completes after,
/// whatever its bytes.
#[test]
fn a_moved_chunk_loses_its_place_and_a_read_across_a_reset_is_stale() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let mut owner = store(dir.path(), "owner.img");
    let mut ring = store(dir.path(), "reader.img");
    // One small shard among 100 KiB fillers, across more than one extent;
    // then the fillers go, and reclamation has extents mostly dead.
    owner.put(b"keep", &bytes(5, 6000)).unwrap();
    for i in 0..160u32 {
        owner.put(format!("filler-{i}").as_bytes(), &bytes(i as u8, 100 << 10)).unwrap();
    }
    // Until another thread looks a shard up, nothing is placed.
    owner.get(b"keep").unwrap();
    assert!(owner.placements().lookup(b"keep").is_none(), "placed before anyone looked");
    owner.get(b"keep").unwrap();
    let before = owner.placements().lookup(b"keep").expect("placed");
    for i in 0..160u32 {
        owner.delete(format!("filler-{i}").as_bytes()).unwrap();
    }
    let mut moved = false;
    let mut rounds = 0;
    while let Some((_, n)) = owner.reclaim().unwrap() {
        moved |= n > 0;
        rounds += 1;
        assert!(rounds < 100, "reclamation never ran out of victims");
    }
    assert!(moved, "reclamation moved no chunk: the test shows nothing");
    assert!(owner.placements().lookup(b"keep").is_none(), "a moved chunk kept its old place");
    // The read looked up before the reset is refused, whatever it reads.
    let (result, buf) = read_on(&mut ring, &before);
    assert_eq!(before.finish(&result, buf.as_slice()), None);
    assert_eq!(owner.placements().stats().stale.load(std::sync::atomic::Ordering::SeqCst), 1);
    // Read again by the owner, it is placed where it is now.
    assert_eq!(owner.get(b"keep").unwrap(), bytes(5, 6000));
    assert_eq!(placed_bytes(&owner, &mut ring, b"keep"), Some(bytes(5, 6000)));
    owner.check_invariants();
}
