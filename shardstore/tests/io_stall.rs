//! A device that stops completing I/O, for real: the store's file lives on
//! an ext4 file system (on a loop device) that the test freezes with
//! `fsfreeze`. A write to a frozen file system waits until it is thawed,
//! as an I/O to a hung drive waits for an answer: the store thread blocks
//! in its commit, the put is not acknowledged, and the device reports the
//! stall (its age, counted once) while it lasts and clears it once the
//! write completes; the put is then acknowledged and reads back. Drive
//! health turns the stall into a suspect device (unit tests in
//! `src/health.rs`); the agent's metric and status show it (docs/api.md).

use std::time::{Duration, Instant};

use shardstore::device::{self, OpenOptions};
use shardstore::store::thread;

#[path = "common/frozen_fs.rs"]
mod frozen_fs;
use frozen_fs::Mounted;

fn wait_for(what: &str, within: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !done() {
        assert!(Instant::now() < deadline, "{what}: not within {within:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_write_that_does_not_complete_is_reported_as_a_stall_until_it_does() {
    let Some(fs) = Mounted::for_test("a_write_that_does_not_complete_is_reported_as_a_stall_until_it_does") else {
        return;
    };
    let path = fs.mnt.join("dev.img");
    frozen_fs::formatted_file(&path, 64 << 20);
    // Well past what a flush of this loop-mounted file system takes on a
    // busy shared disk, so ordinary work never counts as a stall.
    let stall_after = Duration::from_secs(2);
    let options = OpenOptions { stall_after_ms: stall_after.as_millis() as u64, ..OpenOptions::default() };
    // The scrubber paused: its log records would confirm the put's commit
    // in the thread's place (below) as often as not.
    let paused = shardstore::store::scrub::ScrubSettings { paused: true, ..Default::default() };
    let settings = thread::ThreadSettings { scrub: Some(paused), ..Default::default() };
    let (store, join) = thread::spawn_with(Box::new(device::open(&path, &options).unwrap()), settings).unwrap();
    store.put(b"before", vec![1u8; 8192]).unwrap();
    // The put's commit is confirmed by a log write of the thread's own
    // half a millisecond later: it must not be the write the freeze
    // catches, whose stall would have begun before the one timed here.
    let confirmed = || store.stats().confirmations.load(std::sync::atomic::Ordering::SeqCst) == 1;
    wait_for("the put's commit confirmed", Duration::from_secs(10), confirmed);
    let watch = &store.counters().io_stall;
    assert_eq!((watch.stalled_for(), watch.stalls()), (None, 0), "no stall in ordinary work");

    fs.freeze(true);
    let (tx, rx) = std::sync::mpsc::channel();
    store.submit_put(b"during".to_vec(), vec![2u8; 8192], None, move |r| tx.send(r).unwrap()).unwrap();
    let started = Instant::now();
    wait_for("the stall reported", Duration::from_secs(10), || watch.stalled_for().is_some());
    assert!(started.elapsed() >= stall_after, "reported after {:?}, before the threshold", started.elapsed());
    // It grows while it lasts, is counted once, and the health snapshot
    // carries it; the put is not acknowledged meanwhile.
    let first = watch.stalled_for().unwrap();
    wait_for("the stall's age growing", Duration::from_secs(10), || watch.stalled_for().is_some_and(|d| d > first));
    assert!(rx.try_recv().is_err(), "a put acknowledged while its write could not complete");
    let snap = store.counters().snapshot();
    assert!(snap.io_stalled_ms >= stall_after.as_millis() as u64, "{snap:?}");
    assert_eq!((snap.io_stalls, watch.stalls()), (1, 1));

    fs.freeze(false);
    let acked = rx.recv_timeout(Duration::from_secs(30)).expect("the put answered once thawed");
    assert!(acked.is_ok(), "{acked:?}");
    wait_for("the stall cleared", Duration::from_secs(10), || watch.stalled_for().is_none());
    assert_eq!(watch.stalls(), 1, "one stall, counted once");
    assert_eq!(store.get(b"during").unwrap(), vec![2u8; 8192]);
    assert_eq!(store.get(b"before").unwrap(), vec![1u8; 8192]);
    store.close().unwrap();
    join.join().unwrap();
    drop(fs);
}
