//! The io_uring engine against real files with O_DIRECT: data round-trips
//! with many operations in flight, misaligned and out-of-range requests
//! are refused before any I/O, and a kernel-reported short read surfaces as
//! an error naming the device, operation, offset and length.

use std::collections::HashMap;
use std::path::Path;

use shardstore::device::sync::SyncDevice;
use shardstore::device::uring::UringDevice;
use shardstore::device::{BlockDevice, BlockDeviceExt, BufferPool, Completion, IoKind, IoOp, OpenOptions};
use shardstore::error::{Error, OpKind};
use shardstore::rng::Rng;

#[path = "common/frozen_fs.rs"]
#[allow(dead_code)]
mod frozen_fs;
use frozen_fs::Mounted;

const FILE_SIZE: u64 = 64 << 20;

fn make_file(dir: &Path, size: u64) -> std::path::PathBuf {
    let path = dir.join("dev.img");
    let f = std::fs::File::create(&path).unwrap();
    f.set_len(size).unwrap();
    path
}

fn pattern(offset: u64, len: usize, seed: u64) -> Vec<u8> {
    let mut rng = Rng::new(offset ^ seed);
    (0..len).map(|_| rng.next_u64() as u8).collect()
}

fn write_read_many_in_flight(dev: &mut dyn BlockDevice, pool: &BufferPool) {
    let block = 16 * 1024usize;
    let blocks = FILE_SIZE / block as u64;
    let depth = 64;
    let mut rng = Rng::new(7);
    let mut written: HashMap<u64, u64> = HashMap::new();
    let mut out: Vec<Completion> = Vec::new();
    let mut max_in_flight = 0;
    let mut completed = 0;
    let mut drain = |out: &mut Vec<Completion>| {
        for c in out.drain(..) {
            c.result.as_ref().unwrap();
            completed += 1;
        }
    };
    // Writes: keep `depth` in flight.
    for i in 0..2000u64 {
        let offset = rng.below(blocks) * block as u64;
        if dev.in_flight() == depth {
            dev.reap(1, &mut out).unwrap();
        }
        // Later writes to the same block must not race earlier ones.
        if written.contains_key(&offset) {
            while dev.in_flight() > 0 {
                dev.reap(dev.in_flight(), &mut out).unwrap();
            }
        }
        drain(&mut out);
        let mut buf = pool.take(block).expect("pool sized for the queue depth");
        buf.as_mut_slice().copy_from_slice(&pattern(offset, block, i));
        dev.submit(IoOp { token: i, kind: IoKind::Write { offset, buf, fua: false } }).unwrap();
        max_in_flight = max_in_flight.max(dev.in_flight());
        written.insert(offset, i);
    }
    while dev.in_flight() > 0 {
        dev.reap(dev.in_flight(), &mut out).unwrap();
    }
    drain(&mut out);
    assert_eq!(completed, 2000, "every write completes once");
    assert!(max_in_flight >= 32, "expected many operations in flight, saw {max_in_flight}");
    dev.flush().unwrap();
    // Reads: all blocks written, many in flight, verify each.
    out.clear();
    let mut expected: HashMap<u64, u64> = HashMap::new();
    for (token, (&offset, &seed)) in written.iter().enumerate() {
        if dev.in_flight() == depth {
            dev.reap(1, &mut out).unwrap();
        }
        expected.insert(token as u64, seed);
        for c in out.drain(..) {
            check_read(&c, &expected);
        }
        let buf = pool.take(block).unwrap();
        dev.submit(IoOp { token: token as u64, kind: IoKind::Read { offset, buf } }).unwrap();
    }
    while dev.in_flight() > 0 {
        dev.reap(dev.in_flight(), &mut out).unwrap();
    }
    for c in out.drain(..) {
        check_read(&c, &expected);
    }
}

fn check_read(c: &Completion, expected: &HashMap<u64, u64>) {
    c.result.as_ref().unwrap();
    let buf = c.buf.as_ref().unwrap();
    assert!(buf.as_slice() == pattern(c.offset, buf.len(), expected[&c.token]), "data mismatch at {}", c.offset);
}

#[test]
fn uring_round_trips_with_many_in_flight_and_registered_buffers() {
    let dir = tempfile::tempdir().unwrap();
    let path = make_file(dir.path(), FILE_SIZE);
    let pool = BufferPool::new(16 * 1024, 128).unwrap();
    let options = OpenOptions { queue_depth: 64, buffers: Some(pool.clone()), ..OpenOptions::default() };
    let mut dev = UringDevice::open(&path, &options).unwrap();
    assert_eq!(dev.info().size_bytes, FILE_SIZE);
    assert_eq!(dev.info().logical_block_size, 4096);
    write_read_many_in_flight(&mut dev, &pool);
    assert!(dev.info().features.registered_file, "registered file expected on this kernel");
    drop(dev);
    assert_eq!(pool.free_count(), 128, "every buffer returned to the pool");
}

#[test]
fn uring_without_registered_buffers_and_psync_agree() {
    let dir = tempfile::tempdir().unwrap();
    let path = make_file(dir.path(), FILE_SIZE);
    let pool = BufferPool::new(16 * 1024, 128).unwrap();
    let options = OpenOptions { queue_depth: 64, ..OpenOptions::default() };
    let mut dev = UringDevice::open(&path, &options).unwrap();
    assert!(!dev.info().features.registered_buffers);
    write_read_many_in_flight(&mut dev, &pool);
    drop(dev);
    let mut sync = SyncDevice::open(&path, &options).unwrap();
    write_read_many_in_flight(&mut sync, &pool);
}

#[test]
fn a_device_handle_can_move_to_another_thread() {
    let dir = tempfile::tempdir().unwrap();
    let path = make_file(dir.path(), 1 << 20);
    let dev = UringDevice::open(&path, &OpenOptions::default()).unwrap();
    let data = std::thread::spawn(move || {
        let mut dev = dev;
        dev.write_at(4096, &[5u8; 4096], true).unwrap();
        dev.read_at(4096, 4096).unwrap().as_slice().to_vec()
    })
    .join()
    .unwrap();
    assert_eq!(data, vec![5u8; 4096]);
}

#[test]
fn misaligned_and_out_of_range_requests_are_refused_before_io() {
    let dir = tempfile::tempdir().unwrap();
    let path = make_file(dir.path(), 1 << 20);
    let mut dev = UringDevice::open(&path, &OpenOptions::default()).unwrap();
    let err = dev.read_at(100, 4096).unwrap_err();
    assert!(matches!(err, Error::Misaligned { offset: 100, align: 4096, .. }), "{err}");
    assert!(err.to_string().contains("dev.img") && err.to_string().contains("offset 100"), "{err}");
    let err = dev.read_at(0, 1000).unwrap_err();
    assert!(matches!(err, Error::Misaligned { len: 1000, .. }), "{err}");
    let err = dev.read_at(1 << 20, 4096).unwrap_err();
    assert!(matches!(err, Error::OutOfRange { .. }), "{err}");
    assert_eq!(dev.in_flight(), 0);
}

#[test]
fn a_short_read_from_the_kernel_is_an_error_naming_the_io() {
    let dir = tempfile::tempdir().unwrap();
    let path = make_file(dir.path(), 1 << 20);
    let mut dev = UringDevice::open(&path, &OpenOptions::default()).unwrap();
    // Shrink the file under the open handle: the kernel now returns 0 bytes.
    std::fs::OpenOptions::new().write(true).open(&path).unwrap().set_len(4096).unwrap();
    let err = dev.read_at(65536, 4096).unwrap_err();
    let Error::Io { op, offset, len, .. } = &err else { panic!("expected an I/O error, got {err}") };
    assert_eq!((*op, *offset, *len), (OpKind::Read, 65536, 4096));
    assert!(err.to_string().contains("short read"), "{err}");
}

#[test]
fn read_only_handles_refuse_writes_and_files_are_locked() {
    let dir = tempfile::tempdir().unwrap();
    let path = make_file(dir.path(), 1 << 20);
    let _writer = UringDevice::open(&path, &OpenOptions::default()).unwrap();
    let err = UringDevice::open(&path, &OpenOptions::default()).unwrap_err();
    assert!(matches!(err, Error::Busy { .. }), "a second exclusive opener must be refused: {err}");
    let ro = OpenOptions { read_only: true, exclusive: false, ..OpenOptions::default() };
    let mut reader = UringDevice::open(&path, &ro).unwrap();
    assert!(reader.write_at(0, &[0u8; 4096], false).is_err());
    assert!(reader.read_at(0, 4096).is_ok());
}

#[test]
fn opening_a_missing_path_names_it() {
    let err = UringDevice::open(Path::new("/nonexistent/shard.img"), &OpenOptions::default()).unwrap_err();
    assert!(err.to_string().contains("/nonexistent/shard.img"), "{err}");
}

#[test]
fn a_waker_ends_a_wait_from_another_thread_and_never_counts_as_a_completion() {
    let dir = tempfile::tempdir().unwrap();
    let path = make_file(dir.path(), FILE_SIZE);
    let mut dev = UringDevice::open(&path, &OpenOptions::default()).unwrap();
    // Real data to read (a hole in a sparse file reads back at once).
    dev.write_at(0, &vec![0x5A; 17 << 20], false).unwrap();
    dev.flush().unwrap();
    let waker = dev.waker().unwrap().expect("the uring engine has a waker");
    let mut out = Vec::new();

    // Nothing in flight: only the wake can end the wait.
    let started = std::time::Instant::now();
    let wake_later = {
        let waker = std::sync::Arc::clone(&waker);
        std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(50));
            waker.wake();
        })
    };
    assert_eq!(dev.reap_or_wake(&mut out).unwrap(), 0);
    assert!(started.elapsed() >= std::time::Duration::from_millis(40), "returned before the wake");
    wake_later.join().unwrap();

    // A wake that fires while a plain reap waits for real completions is
    // consumed, not counted. A read ends the next wait, leaving the poll
    // armed; the wake then fires while reap(16) waits for 16 reads, and
    // every one of them is still returned.
    let read = |token: u64, len: usize| IoOp {
        token,
        kind: IoKind::Read { offset: token * (1 << 20), buf: shardstore::device::IoBuf::standalone(len).unwrap() },
    };
    dev.submit(read(0, 4096)).unwrap();
    out.clear();
    while out.is_empty() {
        dev.reap_or_wake(&mut out).unwrap();
    }
    assert_eq!(out[0].token, 0);
    waker.wake();
    for token in 1..=16 {
        dev.submit(read(token, 1 << 20)).unwrap();
    }
    out.clear();
    assert_eq!(dev.reap(16, &mut out).unwrap(), 16);
    let mut tokens: Vec<u64> = out.iter().map(|c| c.token).collect();
    tokens.sort_unstable();
    assert_eq!(tokens, (1..=16).collect::<Vec<_>>());
    assert!(out.iter().all(|c| c.result.is_ok()));

    // Devices that never wait long have no waker.
    drop(dev);
    let mut psync = SyncDevice::open(&path, &OpenOptions::default()).unwrap();
    assert!(psync.waker().unwrap().is_none());
}

/// Whether `bytes` are in the file at `offset`, read through the page
/// cache by another descriptor (the kernel's view, not the ring's).
fn file_holds(path: &Path, offset: u64, bytes: &[u8]) -> bool {
    use std::os::unix::fs::FileExt;
    let mut seen = vec![0u8; bytes.len()];
    std::fs::File::open(path).unwrap().read_exact_at(&mut seen, offset).unwrap();
    seen == bytes
}

#[test]
fn operations_reach_the_kernel_when_the_submission_batch_fills_or_at_the_next_reap() {
    let dir = tempfile::tempdir().unwrap();
    let path = make_file(dir.path(), 1 << 20);
    let data = pattern(0, 4096, 7);
    let write = |dev: &mut UringDevice, offset: u64| {
        let mut buf = shardstore::device::IoBuf::standalone(4096).unwrap();
        buf.as_mut_slice().copy_from_slice(&data);
        dev.submit(IoOp { token: offset, kind: IoKind::Write { offset, buf, fua: false } }).unwrap();
    };
    let arrives = |offset: u64| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while std::time::Instant::now() < deadline {
            if file_holds(&path, offset, &data) {
                return true;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        false
    };

    // The default hands each operation over at once: the write lands
    // without anyone reaping it.
    let mut dev = UringDevice::open(&path, &OpenOptions::default()).unwrap();
    write(&mut dev, 0);
    assert!(arrives(0), "a submitted write must reach the kernel before the next reap");
    let mut done = Vec::new();
    dev.reap(1, &mut done).unwrap();
    done[0].result.as_ref().unwrap();
    drop(dev);

    // With a batch of two, one write waits in the ring until a second
    // fills the batch.
    let mut dev = UringDevice::open(&path, &OpenOptions { submit_batch: 2, ..OpenOptions::default() }).unwrap();
    write(&mut dev, 8192);
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert!(!file_holds(&path, 8192, &data), "a lone write in an unfilled batch must not have been submitted");
    write(&mut dev, 16384);
    assert!(arrives(8192) && arrives(16384), "a full batch is handed over");
    done.clear();
    dev.reap(2, &mut done).unwrap();
    assert!(done.iter().all(|c| c.result.is_ok()));
    drop(dev);

    // An operation left for the next reap stays in the ring even with the
    // default batch of one, and the reap that waits for it hands it over.
    let mut dev = UringDevice::open(&path, &OpenOptions::default()).unwrap();
    let mut buf = shardstore::device::IoBuf::standalone(4096).unwrap();
    buf.as_mut_slice().copy_from_slice(&data);
    dev.submit_with_next_reap(IoOp { token: 1, kind: IoKind::Write { offset: 24576, buf, fua: false } }).unwrap();
    assert_eq!(dev.in_flight(), 1);
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert!(!file_holds(&path, 24576, &data), "an operation left for the next reap must not have been submitted");
    done.clear();
    assert_eq!(dev.reap(1, &mut done).unwrap(), 1, "the reap submits what waits and waits for it");
    done[0].result.as_ref().unwrap();
    assert!(file_holds(&path, 24576, &data));
}

/// Opens `path` with long writes split into 64 KiB pieces, one in flight
/// while reads are.
fn open_with_pieces(path: &Path, buffers: Option<BufferPool>) -> UringDevice {
    let options =
        OpenOptions { write_piece_bytes: 64 << 10, write_pieces_with_reads: 1, buffers, ..OpenOptions::default() };
    UringDevice::open(path, &options).unwrap()
}

/// Queues `count` 4 KiB reads at `at` for the next reap (so they are in
/// flight when what follows is queued).
fn queue_reads(dev: &mut UringDevice, pool: &BufferPool, at: u64, count: u64) {
    for i in 0..count {
        let buf = pool.take(4096).unwrap();
        dev.submit_with_next_reap(IoOp { token: 100 + i, kind: IoKind::Read { offset: at + i * 4096, buf } }).unwrap();
    }
}

/// A long write queued while reads are in flight goes to the kernel in
/// pieces (so a read queued behind it waits for a piece, not the whole
/// write) and completes once, whole, with its buffer; from registered
/// buffers and plain ones, with and without FUA. With no read in flight
/// a write goes whole.
#[test]
fn a_long_write_queued_behind_reads_goes_in_pieces_and_lands_whole() {
    let dir = tempfile::tempdir().unwrap();
    let path = make_file(dir.path(), FILE_SIZE);
    let err = UringDevice::open(&path, &OpenOptions { write_piece_bytes: 1000, ..OpenOptions::default() }).unwrap_err();
    assert!(matches!(err, Error::InvalidArgument(_)) && err.to_string().contains("write_piece_bytes 1000"), "{err}");
    for registered in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let path = make_file(dir.path(), FILE_SIZE);
        let pool = BufferPool::new(1 << 20, 8).unwrap();
        let mut dev = open_with_pieces(&path, registered.then(|| pool.clone()));
        assert_eq!(dev.info().features.registered_buffers, registered);
        let mut split = 0;
        for (i, fua) in [false, true].into_iter().enumerate() {
            let offset = (1 + 2 * i as u64) << 20;
            // One piece and a bit more than 15: the last piece is short.
            let len = (1 << 20) - 4096;
            let data = pattern(offset, len, 3);
            queue_reads(&mut dev, &pool, 32 << 20, 4);
            let mut buf = pool.take(len).unwrap();
            buf.as_mut_slice().copy_from_slice(&data);
            dev.submit(IoOp { token: 1, kind: IoKind::Write { offset, buf, fua } }).unwrap();
            split += 1;
            assert_eq!(dev.writes_split(), split, "queued behind reads, the write is split");
            assert_eq!(dev.in_flight(), 5, "a split write is one operation in flight");
            let mut done = Vec::new();
            dev.reap(5, &mut done).unwrap();
            assert_eq!(done.len(), 5);
            let write = done.iter().find(|c| c.token == 1).expect("the write completes once");
            write.result.as_ref().unwrap();
            assert_eq!((write.op, write.offset, write.len), (OpKind::Write, offset, len as u64));
            assert_eq!(write.buf.as_ref().unwrap().as_slice(), &data[..], "the buffer comes back");
            assert!(done.iter().all(|c| c.result.is_ok()));
            assert_eq!(dev.in_flight(), 0);
            assert!(file_holds(&path, offset, &data), "every piece landed where it belongs");
        }
        // Nothing else in flight: the write goes whole.
        let data = pattern(8 << 20, 1 << 20, 5);
        dev.write_at(8 << 20, &data, false).unwrap();
        assert_eq!(dev.writes_split(), split);
        assert!(file_holds(&path, 8 << 20, &data));
    }
}

/// A piece that fails fails its write, naming where, and no piece after
/// it is sent; the device goes on serving. The write fills a hole of a
/// file on a file system with room for only part of it (ENOSPC).
#[test]
fn a_failed_piece_fails_its_write_and_the_device_goes_on() {
    let Some(fs) = Mounted::for_test("a_failed_piece_fails_its_write_and_the_device_goes_on") else {
        return;
    };
    let path = fs.mnt.join("dev.img");
    let f = std::fs::File::create(&path).unwrap();
    f.set_len(16 << 20).unwrap();
    // Written first, so that reads of it need no room.
    std::os::unix::fs::FileExt::write_all_at(&f, &vec![7u8; 64 << 10], 0).unwrap();
    f.sync_all().unwrap();
    drop(f);
    // The file system filled, then 128 KiB given back: room for two of
    // the write's sixteen pieces.
    let room = fs.mnt.join("room");
    std::fs::write(&room, vec![1u8; 128 << 10]).unwrap();
    let out = std::process::Command::new("stat").args(["-f", "-c", "%f %S"]).arg(&fs.mnt).output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let [free, block]: [u64; 2] =
        text.split_whitespace().map(|n| n.parse().unwrap()).collect::<Vec<_>>().try_into().unwrap();
    let filler = (free * block).saturating_sub(8 << 20).to_string();
    frozen_fs::run("fallocate", &["-l", &filler, fs.mnt.join("filler").to_str().unwrap()]);
    // The rest by writing until the file system refuses (dd then fails).
    let of = format!("of={}", fs.mnt.join("filler2").display());
    let _ = std::process::Command::new("dd").args(["if=/dev/zero", &of, "bs=64k"]).output().unwrap();
    std::fs::remove_file(&room).unwrap();
    frozen_fs::run("sync", &[]);

    let pool = BufferPool::new(1 << 20, 8).unwrap();
    let mut dev = open_with_pieces(&path, Some(pool.clone()));
    queue_reads(&mut dev, &pool, 0, 4);
    let offset = 4 << 20;
    let buf = pool.take(1 << 20).unwrap();
    dev.submit(IoOp { token: 1, kind: IoKind::Write { offset, buf, fua: false } }).unwrap();
    assert_eq!(dev.writes_split(), 1);
    let mut done = Vec::new();
    dev.reap(5, &mut done).unwrap();
    let write = done.iter().find(|c| c.token == 1).expect("the write completes");
    let err = write.result.as_ref().unwrap_err();
    let Error::Io { op, offset: at, len, .. } = err else { panic!("expected an I/O error, got {err}") };
    assert_eq!(*op, OpKind::Write);
    assert!((offset..offset + (1 << 20)).contains(at) && *len == 64 << 10, "names the piece: {err}");
    assert!(err.to_string().contains("No space"), "{err}");
    assert!(write.buf.is_some(), "the buffer comes back");
    assert!(done.iter().filter(|c| c.token != 1).all(|c| c.result.is_ok()), "the reads are unharmed");
    assert_eq!(dev.in_flight(), 0);
    // The device goes on: a read, and a write where there is room.
    assert!(dev.read_at(0, 4096).unwrap().as_slice().iter().all(|&b| b == 7));
    dev.write_at(0, &[9u8; 4096], false).unwrap();
}

/// Socket operations on a device's ring (`submit_socket`), beside block
/// I/O: a receive fills its buffer past what it held and ends the
/// device's wait for a wake-up (with nothing else in flight, and while a
/// read is); a send of a head and a body arrives whole, sent on from
/// where a short send stopped; a poll completes when its descriptor is
/// readable. Block completions never carry socket ones, nor the reverse.
#[test]
fn socket_operations_share_the_devices_ring_and_end_its_waits() {
    use shardstore::sockets::{SocketDone, SocketOp};
    use std::io::{Read, Write};
    use std::os::fd::AsRawFd;
    use std::time::{Duration, Instant};

    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let path = make_file(dir.path(), 1 << 20);
    let mut dev = UringDevice::open(&path, &OpenOptions::default()).unwrap();
    let _waker = dev.waker().unwrap().expect("io_uring has a waker");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (server, _) = listener.accept().unwrap();
    let fd = server.as_raw_fd();
    let mut blocks = Vec::new();
    let mut sockets = Vec::new();

    // A receive, and the idle wait it ends.
    dev.submit_socket(1, SocketOp::Recv { fd, buf: b"ab\0\0\0\0\0\0".to_vec(), at: 2 }).unwrap();
    let started = Instant::now();
    dev.wait_for_wake(Duration::from_millis(100), &mut blocks).unwrap();
    assert!(started.elapsed() >= Duration::from_millis(90), "the wait ended before anything happened");
    dev.take_socket_completions(&mut sockets);
    assert!(sockets.is_empty() && blocks.is_empty());
    client.write_all(b"cdef").unwrap();
    let started = Instant::now();
    while sockets.is_empty() && started.elapsed() < Duration::from_secs(5) {
        dev.wait_for_wake(Duration::from_secs(5), &mut blocks).unwrap();
        dev.take_socket_completions(&mut sockets);
    }
    assert!(started.elapsed() < Duration::from_secs(4), "the receive did not end the wait");
    assert!(blocks.is_empty(), "a socket completion reported as a block one");
    let Some(SocketDone { token: 1, result: Ok(4), op: SocketOp::Recv { buf, .. } }) = sockets.pop() else {
        panic!("not the receive")
    };
    assert_eq!(&buf[..6], b"abcdef");
    assert_eq!(dev.sockets_in_flight(), 0);

    // A receive completing while a read is in flight ends a reap_or_wake.
    let pool = BufferPool::new(4096, 1).unwrap();
    dev.submit_socket(2, SocketOp::Recv { fd, buf: vec![0; 16], at: 0 }).unwrap();
    client.write_all(b"x").unwrap();
    dev.submit(IoOp { token: 7, kind: IoKind::Read { offset: 0, buf: pool.take(4096).unwrap() } }).unwrap();
    let started = Instant::now();
    while (sockets.is_empty() || blocks.is_empty()) && started.elapsed() < Duration::from_secs(5) {
        dev.reap_or_wake(&mut blocks).unwrap();
        dev.take_socket_completions(&mut sockets);
    }
    assert!(matches!(blocks.as_slice(), [Completion { token: 7, result: Ok(()), .. }]), "{blocks:?}");
    assert!(matches!(sockets.as_slice(), [SocketDone { token: 2, result: Ok(1), .. }]), "{sockets:?}");
    blocks.clear();
    sockets.clear();

    // A send of 4 MB, sent on from where each short send stopped.
    let body: Vec<u8> = (0..4_000_000u32).map(|i| i as u8).collect();
    let want = [b"head".as_slice(), &body].concat();
    let reader = std::thread::spawn(move || {
        let mut got = vec![0; 4 + 4_000_000];
        client.read_exact(&mut got).unwrap();
        (client, got)
    });
    dev.submit_socket(3, SocketOp::Send { fd, head: b"head".to_vec(), body, sent: 0 }).unwrap();
    loop {
        dev.wait_for_wake(Duration::from_secs(5), &mut blocks).unwrap();
        dev.take_socket_completions(&mut sockets);
        let Some(done) = sockets.pop() else { continue };
        let SocketDone { token: 3, result: Ok(n), op: SocketOp::Send { fd, head, body, sent } } = done else {
            panic!("not the send: {done:?}")
        };
        if sent + n == head.len() + body.len() {
            break;
        }
        dev.submit_socket(3, SocketOp::Send { fd, head, body, sent: sent + n }).unwrap();
    }
    let (mut client, got) = reader.join().unwrap();
    assert!(got == want, "the bytes arrived whole and in order");

    // A poll, completed once its descriptor is readable.
    dev.submit_socket(4, SocketOp::Readable { fd }).unwrap();
    dev.wait_for_wake(Duration::from_millis(50), &mut blocks).unwrap();
    dev.take_socket_completions(&mut sockets);
    assert!(sockets.is_empty(), "readable before anything was sent");
    client.write_all(b"y").unwrap();
    let started = Instant::now();
    while sockets.is_empty() && started.elapsed() < Duration::from_secs(5) {
        dev.wait_for_wake(Duration::from_secs(5), &mut blocks).unwrap();
        dev.take_socket_completions(&mut sockets);
    }
    assert!(matches!(sockets.as_slice(), [SocketDone { token: 4, result: Ok(_), .. }]), "{sockets:?}");
    assert!(blocks.is_empty());
    assert_eq!((dev.sockets_in_flight(), dev.in_flight()), (0, 0));

    // Devices without a ring refuse socket operations, saying why.
    let mut sync = SyncDevice::open(&path, &OpenOptions { exclusive: false, ..OpenOptions::default() }).unwrap();
    let e = sync.submit_socket(5, SocketOp::Readable { fd }).unwrap_err();
    assert!(e.to_string().contains("io_uring"), "{e}");
}

/// Completes `count` operations, each successfully.
fn reap_ok(dev: &mut UringDevice, count: usize) {
    let mut done = Vec::new();
    assert_eq!(dev.reap(count, &mut done).unwrap(), count);
    for c in &done {
        c.result.as_ref().unwrap();
    }
}

fn write_op(token: u64, offset: u64, seed: u64) -> IoOp {
    let mut buf = shardstore::device::IoBuf::standalone(4096).unwrap();
    buf.as_mut_slice().copy_from_slice(&pattern(offset, 4096, seed));
    IoOp { token, kind: IoKind::Write { offset, buf, fua: false } }
}

#[test]
fn a_flush_with_nothing_in_flight_is_made_by_the_thread_and_one_beside_other_io_by_the_ring() {
    let dir = tempfile::tempdir().unwrap();
    let path = make_file(dir.path(), 1 << 20);
    let mut dev = UringDevice::open(&path, &OpenOptions::default()).unwrap();
    // A write completed, then a flush alone: made in-line, its completion
    // reaped as the ring's would be (counted in flight until then).
    dev.submit(write_op(1, 0, 3)).unwrap();
    reap_ok(&mut dev, 1);
    dev.submit(IoOp { token: 2, kind: IoKind::Flush }).unwrap();
    assert_eq!((dev.flushes_inline(), dev.in_flight()), (1, 1));
    let mut done = Vec::new();
    assert_eq!(dev.reap_or_wake(&mut done).unwrap(), 1);
    assert_eq!((done[0].token, done[0].op), (2, OpKind::Flush));
    done[0].result.as_ref().unwrap();
    assert_eq!(dev.in_flight(), 0);
    // A flush submitted while a write is in flight goes to the ring: it
    // must not be taken for one covering that write.
    dev.submit(write_op(3, 4096, 4)).unwrap();
    dev.submit(IoOp { token: 4, kind: IoKind::Flush }).unwrap();
    assert_eq!((dev.flushes_inline(), dev.in_flight()), (1, 2));
    reap_ok(&mut dev, 2);
    // An in-line flush's completion comes with the ring's that follow it.
    dev.submit(IoOp { token: 5, kind: IoKind::Flush }).unwrap();
    dev.submit(write_op(6, 8192, 5)).unwrap();
    assert_eq!((dev.flushes_inline(), dev.in_flight()), (2, 2));
    reap_ok(&mut dev, 2);
    assert!(file_holds(&path, 8192, &pattern(8192, 4096, 5)));
    drop(dev);
    // Turned off, every flush goes to the ring.
    let mut dev = UringDevice::open(&path, &OpenOptions { flush_inline: false, ..OpenOptions::default() }).unwrap();
    dev.submit(IoOp { token: 1, kind: IoKind::Flush }).unwrap();
    reap_ok(&mut dev, 1);
    assert_eq!(dev.flushes_inline(), 0);
}

/// A flush the device's thread makes itself blocks that thread, which can
/// then look at no operation's age: the call's start is marked in the
/// stall watch, and other threads see the stall once it is past the
/// threshold. Here the flush is made slow by 512 MiB of buffered writes to
/// the same file (written back by the flush: 40-200 ms on these machines),
/// against a 5 ms threshold.
#[test]
fn a_flush_made_by_the_thread_that_outlasts_the_threshold_is_seen_as_a_stall_while_it_lasts() {
    with_a_slow_flush(|mut dev, watch| {
        // A write that stalled under load (past 5 ms) is a stall of its own.
        let before = watch.stalls();
        let (seen, flushed) = (std::sync::atomic::AtomicU64::new(0), std::sync::atomic::AtomicBool::new(false));
        let took = std::thread::scope(|s| {
            s.spawn(|| {
                // Bounded: the flush ends, or 60 s pass.
                let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
                while !flushed.load(std::sync::atomic::Ordering::SeqCst) && std::time::Instant::now() < deadline {
                    if let Some(age) = watch.stalled_for() {
                        seen.fetch_max(age.as_millis() as u64, std::sync::atomic::Ordering::SeqCst);
                    }
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
            });
            let started = std::time::Instant::now();
            dev.submit(IoOp { token: 2, kind: IoKind::Flush }).unwrap();
            let took = started.elapsed();
            flushed.store(true, std::sync::atomic::Ordering::SeqCst);
            assert_eq!(dev.flushes_inline(), 1, "the flush was to be made in-line");
            took
        });
        if took < SLOW_FLUSH_MIN {
            return Err(took);
        }
        let seen = seen.load(std::sync::atomic::Ordering::SeqCst);
        assert!(seen >= 5, "another thread saw a stall of {seen} ms during the in-line flush");
        assert_eq!(
            (watch.stalled_for(), watch.stalls() - before),
            (None, 1),
            "over once the flush returned, and counted once"
        );
        reap_ok(&mut dev, 1);
        Ok(())
    });
}

/// A device with a 5 ms stall threshold whose next flush is slow: 512 MiB
/// of buffered writes to its file, which the flush writes back (40-250
/// ms on these machines). One write of its own is done first.
fn device_with_a_slow_flush() -> (tempfile::TempDir, UringDevice, std::sync::Arc<shardstore::device::StallWatch>) {
    use std::os::unix::fs::FileExt;
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let path = make_file(dir.path(), 576 << 20);
    let options = OpenOptions { stall_after_ms: 5, ..OpenOptions::default() };
    let mut dev = UringDevice::open(&path, &options).unwrap();
    let watch = std::sync::Arc::new(shardstore::device::StallWatch::default());
    dev.watch_stalls(std::sync::Arc::clone(&watch));
    dev.submit(write_op(1, 0, 3)).unwrap();
    reap_ok(&mut dev, 1);
    let dirty = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    let chunk = vec![0x5a_u8; 1 << 20];
    for i in 0..512 {
        dirty.write_all_at(&chunk, (64 << 20) + i * (1 << 20)).unwrap();
    }
    (dir, dev, watch)
}

/// A stall ends when its operation's completion is taken, not at the
/// device's next wait (which an idle device may not make for a long
/// time): the slow flush, sent to the ring beside a write, is seen as a
/// stall while the reap waits for it, and no more once the reap returns.
#[test]
fn a_stall_ends_when_its_operation_is_reaped() {
    with_a_slow_flush(|mut dev, watch| {
        let before = watch.stalls();
        let started = std::time::Instant::now();
        dev.submit(write_op(2, 4096, 4)).unwrap();
        dev.submit(IoOp { token: 3, kind: IoKind::Flush }).unwrap();
        reap_ok(&mut dev, 2);
        let took = started.elapsed();
        assert_eq!(dev.flushes_inline(), 0, "the flush beside a write goes to the ring");
        if took < SLOW_FLUSH_MIN {
            return Err(took);
        }
        assert!(watch.stalls() > before, "the slow flush was not seen as a stall");
        assert_eq!(watch.stalled_for(), None, "the stall outlived the reap of its operation");
        Ok(())
    });
}

/// How long a flush must take for the stall tests to prove anything
/// against their 5 ms threshold.
const SLOW_FLUSH_MIN: std::time::Duration = std::time::Duration::from_millis(15);

/// Runs `test` on a fresh `device_with_a_slow_flush` until its flush was
/// slow (`Err(took)` when it was not: the kernel's background writeback,
/// stirred by other tests' dirty pages, had already written the buffered
/// data back), at most three times. The precondition is made again, never
/// the assertions loosened: an attempt whose flush was slow must pass
/// them all. Three quick flushes fail, naming what was measured.
fn with_a_slow_flush(
    test: impl Fn(UringDevice, std::sync::Arc<shardstore::device::StallWatch>) -> Result<(), std::time::Duration>,
) {
    let mut quick = Vec::new();
    for _ in 0..3 {
        let (_dir, dev, watch) = device_with_a_slow_flush();
        match test(dev, watch) {
            Ok(()) => return,
            Err(took) => quick.push(took),
        }
    }
    panic!(
        "no flush of 512 MiB of buffered writes took {SLOW_FLUSH_MIN:?} in three attempts ({quick:?}): nothing proven"
    );
}
