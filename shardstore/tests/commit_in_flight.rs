//! Gets keep flowing while a group commit's writes and flush are in
//! flight: gets and lookups of other keys, listings, the scrubber's
//! reports and the list of tombstones are answered while a put's commit
//! cannot complete (before, every get waited for the whole commit).
//! A get or lookup of the key being put is held for the commit and never
//! sees anything but nothing or the new bytes.
//!
//! The commit is held in flight for real, not by timing: the store's file
//! lives on an ext4 file system (on a loop device) frozen with `fsfreeze`,
//! so the commit's writes wait in the kernel until the test thaws it, while
//! O_DIRECT reads of the same file complete. (An earlier version raced a
//! 64 MiB commit against the test thread's polling; on a loaded CI machine
//! the commit sometimes won.)
//!
//! Two ways in are covered: gets taken in the same batch as the put (they
//! were started but their reads went out only at the commit's first
//! completion: on a drive whose writes hang, never), and gets and lookups
//! arriving while the commit waits (they wake the thread).

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use shardstore::device::{self, OpenOptions};
use shardstore::rng::Rng;
use shardstore::store::{thread, Lookup, Op};

#[path = "common/frozen_fs.rs"]
mod frozen_fs;
use frozen_fs::Mounted;

type Order = Arc<Mutex<Vec<String>>>;

fn wait_for(what: &str, order: &Order, mut done: impl FnMut(&[String]) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done(&order.lock().unwrap()) {
        assert!(Instant::now() < deadline, "{what}: not within 30 s: {:?}", order.lock().unwrap());
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn count(order: &[String], prefix: &str) -> usize {
    order.iter().filter(|e| e.starts_with(prefix)).count()
}

#[test]
fn gets_are_answered_while_a_commit_is_in_flight() {
    let Some(fs) = Mounted::for_test("gets_are_answered_while_a_commit_is_in_flight") else { return };
    let path = fs.mnt.join("dev.img");
    frozen_fs::formatted_file(&path, 128 << 20);
    let (store, join) = thread::spawn(Box::new(device::open(&path, &OpenOptions::default()).unwrap())).unwrap();
    let small = |i: u8| vec![i; 4096];
    for i in 0..8u8 {
        store.put(format!("small/{i}").as_bytes(), small(i)).unwrap();
    }
    // A tombstone, for the list of them asked during the commit.
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    store.submit_op(Op::Tombstone { key: b"gone".to_vec(), version: 1 }, move |r| done_tx.send(r).unwrap()).unwrap();
    done_rx.recv_timeout(Duration::from_secs(30)).unwrap().unwrap();
    let order: Order = Arc::default();
    let mut rng = Rng::new(7);
    let big: Vec<u8> = (0..8 << 20).map(|_| rng.next_u64() as u8).collect();

    fs.freeze(true);
    // The store thread is held (in a lookup's reply, which it runs) while
    // the put and the gets are sent, so that it takes them in one batch:
    // the gets are started with the commit, not while it waits.
    let (held_tx, held_rx) = std::sync::mpsc::channel();
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    store
        .submit_lookup(b"small/0".to_vec(), move |_| {
            held_tx.send(()).unwrap();
            release_rx.recv_timeout(Duration::from_secs(30)).unwrap();
        })
        .unwrap();
    held_rx.recv_timeout(Duration::from_secs(30)).expect("the store thread took the lookup");
    let o = Arc::clone(&order);
    store
        .submit_put(b"big".to_vec(), big.clone(), None, move |r| {
            r.unwrap();
            o.lock().unwrap().push("put".to_owned());
        })
        .unwrap();
    for i in 0..8u8 {
        let o = Arc::clone(&order);
        store
            .submit_get(format!("small/{i}").into_bytes(), 0, u64::MAX, move |r| {
                assert_eq!(r.unwrap(), small(i));
                o.lock().unwrap().push(format!("get {i}"));
            })
            .unwrap();
    }
    release_tx.send(()).unwrap();
    // The gets are answered though the commit cannot complete.
    wait_for("gets of other keys answered during the commit", &order, |o| count(o, "get ") == 8);
    // Once the thread took every request, the commit is under way: what is
    // sent now arrives while it waits. (A request of the key being put,
    // held for the commit, counts as queued until the commit ends: none is
    // sent before this.)
    let deadline = Instant::now() + Duration::from_secs(30);
    while store.stats().queued.load(Ordering::Relaxed) > 0 {
        assert!(Instant::now() < deadline, "the thread did not take the put");
        std::thread::sleep(Duration::from_millis(5));
    }
    for i in 0..4u8 {
        let o = Arc::clone(&order);
        store
            .submit_lookup(format!("small/{i}").into_bytes(), move |r| {
                assert!(matches!(r.unwrap(), Lookup::Shard(s) if s.size == 4096));
                o.lock().unwrap().push(format!("lookup {i}"));
            })
            .unwrap();
    }
    let o = Arc::clone(&order);
    let head = big[..4096].to_vec();
    store
        .submit_get(b"big".to_vec(), 0, 4096, move |r| {
            let seen = match r {
                Ok(bytes) => {
                    assert!(bytes == head, "a get of the key being put returned other bytes");
                    "get big: new"
                }
                Err(shardstore::error::Error::NotFound(_)) => "get big: absent",
                Err(e) => panic!("a get of the key being put failed: {e}"),
            };
            o.lock().unwrap().push(seen.to_owned());
        })
        .unwrap();
    let o = Arc::clone(&order);
    store
        .submit_lookup(b"big".to_vec(), move |r| {
            let seen = match r.unwrap() {
                Lookup::Shard(s) if s.size == 8 << 20 => "lookup big: new",
                Lookup::Absent => "lookup big: absent",
                other => panic!("a lookup of the key being put found {other:?}"),
            };
            o.lock().unwrap().push(seen.to_owned());
        })
        .unwrap();
    // A listing and the scrubber's report read only memory: answered
    // during the commit too, the key being put not yet in the listing.
    let o = Arc::clone(&order);
    store
        .submit_list(Vec::new(), None, 100, move |r| {
            // Shards only: the listing also shows the tombstone.
            let keys: Vec<Vec<u8>> = r.unwrap().into_iter().filter(|l| l.size.is_some()).map(|l| l.key).collect();
            let small: Vec<Vec<u8>> = (0..8u8).map(|i| format!("small/{i}").into_bytes()).collect();
            assert_eq!(keys, small, "a listing during the commit lists what was acknowledged");
            o.lock().unwrap().push("list".to_owned());
        })
        .unwrap();
    let o = Arc::clone(&order);
    store
        .submit_scrub_status(move |r| {
            r.unwrap();
            o.lock().unwrap().push("scrub status".to_owned());
        })
        .unwrap();
    // So does the list of tombstones (asked, at start, by the agent's
    // reconciliation, which has no callback form: a thread waits for it).
    let (o, h) = (Arc::clone(&order), store.clone());
    let tombstones = std::thread::spawn(move || {
        let list = h.tombstones().unwrap();
        assert_eq!(list.len(), 1, "the tombstone: {list:?}");
        assert_eq!(list[0].0, b"gone");
        o.lock().unwrap().push("tombstones".to_owned());
    });
    wait_for("lookups of other keys answered during the commit", &order, |o| count(o, "lookup ") >= 4);
    wait_for("a listing, a scrub report and the tombstones answered during the commit", &order, |o| {
        count(o, "list") == 1 && count(o, "scrub status") == 1 && count(o, "tombstones") == 1
    });
    tombstones.join().unwrap();
    assert_eq!(count(&order.lock().unwrap(), "put"), 0, "a put acknowledged while its writes could not complete");

    fs.freeze(false);
    wait_for("every request answered once thawed", &order, |o| o.len() == 18);
    let order = order.lock().unwrap().clone();
    let put_at = order.iter().position(|e| e == "put").unwrap();
    for kind in ["get ", "lookup "] {
        let other = |e: &&String| e.starts_with(kind) && !e.contains("big");
        assert_eq!(
            order[..put_at].iter().filter(other).count(),
            order.iter().filter(other).count(),
            "{kind}of other keys waited for the commit: {order:?}"
        );
        let big_at = order.iter().position(|e| e.starts_with(&format!("{kind}big"))).unwrap();
        assert!(order[big_at].ends_with("absent") || big_at > put_at, "new state before the ack: {order:?}");
    }
    assert_eq!(store.get(b"big").unwrap(), big);
    store.close().unwrap();
    join.join().unwrap();
    drop(fs);
}
