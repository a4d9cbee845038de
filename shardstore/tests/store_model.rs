//! Model conformance: the store and a reference model (a `BTreeMap`) are
//! driven by the same random operations, crashes, injected read errors
//! and bit rot included, and compared after every step. Every
//! acknowledged put reads back identically until replaced or deleted,
//! every acknowledged delete stays deleted, an operation hit by a fault
//! may fail but never returns wrong bytes, and the index and extent
//! accounting invariants hold. Failing cases print the seed that replays
//! them (`PROPTEST_CASES=N` runs more).

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use shardstore::device::sim::{Fate, Fault, SimConfig, SimDevice, SimHandle};
use shardstore::error::{Error, OpKind};
use shardstore::format::{format, FormatOptions};
use shardstore::rng::Rng;
use shardstore::store::scrub::ScrubSettings;
use shardstore::store::{Lookup, Op, Store};

#[path = "common/model_data.rs"]
mod model_data;
use model_data::{arrived, data};

const KEYS: [&str; 8] = ["a/1", "a/2", "a/3", "b/1", "b/22", "c", "c/x", "zz"];
/// Ids of the gets a batch step starts before its commit (the ones it
/// starts during the commit are numbered by key).
const EARLY: u64 = 100;
const PREFIXES: [&str; 4] = ["", "a/", "b", "c/"];
/// Sizes around the block and chunk boundaries (header 64 + key).
const SIZES: [usize; 10] =
    [0, 1, 4096 - 64 - 3, 4096 - 64 - 2, 4096, 5000, 65_536, 1 << 20, (1 << 20) + 1, (5 << 19) + 7];

#[derive(Debug, Clone)]
enum Step {
    Put {
        key: usize,
        size: usize,
        seed: u64,
    },
    Delete {
        key: usize,
    },
    Get {
        key: usize,
    },
    GetRange {
        key: usize,
        offset: u64,
        len: u64,
    },
    List {
        prefix: usize,
        after: Option<usize>,
        limit: usize,
    },
    /// A group commit; with `vouch`, one too large for payload copies is
    /// vouched (one flush), and confirmed at once unless `unconfirmed`
    /// (the store thread confirms it within a millisecond).
    Batch {
        puts: Vec<(usize, usize, u64)>,
        deletes: Vec<usize>,
        vouch: bool,
        unconfirmed: bool,
    },
    Checkpoint,
    Reclaim,
    CleanRestart,
    /// Power fails after `budget` device writes/flushes of the next put
    /// (or delete), then the machine crashes.
    CrashDuring {
        key: usize,
        size: usize,
        seed: u64,
        budget: u64,
        delete: bool,
        fate_seed: u64,
    },
    ReadError {
        key: usize,
    },
    BitRot {
        key: usize,
        pick: u64,
    },
    /// The background scrubber runs `steps` steps unthrottled, then
    /// (with a fate seed) the machine crashes.
    Scrub {
        steps: u16,
        crash: Option<u64>,
    },
    /// Media rot in one copy of the metadata in force (a flipped bit, or
    /// a whole block zeroed), then the machine restarts without a clean
    /// shutdown: recovery must use the intact copy and lose nothing.
    RotMetadata {
        copy: usize,
        pick: u64,
        zero: bool,
    },
    /// Puts of the model's keys until the log half in force is full: the
    /// next step that logs anything (a put, a batch with gets in flight,
    /// a delete, a scrub's findings) checkpoints the store first.
    FillLog {
        seed: u64,
    },
    /// A checkpoint beside commits starts: of the store as it is now,
    /// encoded two index entries at each `AdvanceCheckpoint`
    /// (`SLICE_ENTRIES`), so the steps after it (puts, deletes,
    /// reclamation, scrub findings, crashes, a clean restart) change keys
    /// before and after the encoding reaches them, and run while its
    /// pieces are written.
    StartCheckpoint,
    /// The checkpoint beside commits moves on (its pieces sent, and made
    /// current once written), or with `finish` is completed now.
    AdvanceCheckpoint {
        finish: bool,
    },
    /// A delete that leaves a tombstone (optionally purged at once).
    Tombstone {
        key: usize,
        purge: bool,
    },
    /// A small put (one flush), then its data rots before (or, with
    /// `confirmed`, after) the next commit, then the machine crashes:
    /// unconfirmed, recovery rewrites it from the log's copy; confirmed,
    /// it is damage and reads answer `Corruption`. Never the old version.
    RotLastCommit {
        key: usize,
        seed: u64,
        pick: u64,
        confirmed: bool,
        fate_seed: u64,
    },
    /// A vouched put, then its data rots before (or, with `confirmed`,
    /// after) the log write confirming it, then the machine crashes:
    /// unconfirmed, recovery cannot tell the rot from a crash before the
    /// flush and leaves the put out, reported; confirmed, it is damage
    /// and reads answer `Corruption`.
    RotLastVouched {
        key: usize,
        seed: u64,
        pick: u64,
        confirmed: bool,
        fate_seed: u64,
    },
}

fn step() -> impl Strategy<Value = Step> {
    let key = 0..KEYS.len();
    let size = 0..SIZES.len();
    prop_oneof![
        8 => (key.clone(), size.clone(), any::<u64>()).prop_map(|(key, size, seed)| Step::Put { key, size, seed }),
        3 => key.clone().prop_map(|key| Step::Delete { key }),
        5 => key.clone().prop_map(|key| Step::Get { key }),
        2 => (key.clone(), 0..6_000_000u64, 0..3_000_000u64).prop_map(|(key, offset, len)| Step::GetRange { key, offset, len }),
        1 => (0..PREFIXES.len(), proptest::option::of(0..KEYS.len()), 1..5usize)
            .prop_map(|(prefix, after, limit)| Step::List { prefix, after, limit }),
        3 => (proptest::collection::vec((key.clone(), size.clone(), any::<u64>()), 0..5), proptest::collection::vec(key.clone(), 0..3), any::<bool>(), proptest::bool::weighted(0.3))
            .prop_map(|(puts, deletes, vouch, unconfirmed)| Step::Batch { puts, deletes, vouch, unconfirmed }),
        1 => Just(Step::Checkpoint),
        2 => Just(Step::Reclaim),
        1 => Just(Step::CleanRestart),
        2 => (key.clone(), size.clone(), any::<u64>(), 0..8u64, any::<bool>(), any::<u64>())
            .prop_map(|(key, size, seed, budget, delete, fate_seed)| Step::CrashDuring { key, size, seed, budget, delete, fate_seed }),
        1 => key.clone().prop_map(|key| Step::ReadError { key }),
        1 => (key.clone(), any::<u64>()).prop_map(|(key, pick)| Step::BitRot { key, pick }),
        2 => (1..120u16, proptest::option::of(any::<u64>())).prop_map(|(steps, crash)| Step::Scrub { steps, crash }),
        2 => (0..2usize, any::<u64>(), any::<bool>()).prop_map(|(copy, pick, zero)| Step::RotMetadata { copy, pick, zero }),
        1 => (key.clone(), any::<bool>()).prop_map(|(key, purge)| Step::Tombstone { key, purge }),
        1 => any::<u64>().prop_map(|seed| Step::FillLog { seed }),
        1 => Just(Step::StartCheckpoint),
        2 => any::<bool>().prop_map(|finish| Step::AdvanceCheckpoint { finish }),
        1 => (key.clone(), any::<u64>(), any::<u64>(), any::<bool>(), any::<u64>())
            .prop_map(|(key, seed, pick, confirmed, fate_seed)| Step::RotLastCommit { key, seed, pick, confirmed, fate_seed }),
        1 => (key, any::<u64>(), any::<u64>(), any::<bool>(), any::<u64>())
            .prop_map(|(key, seed, pick, confirmed, fate_seed)| Step::RotLastVouched { key, seed, pick, confirmed, fate_seed }),
    ]
}

/// What a key held in the model: its value, whether its data rotted,
/// whether a tombstone was its last change.
type Held = (Option<Vec<u8>>, bool, bool);

struct Harness {
    handle: SimHandle,
    store: Option<Store>,
    model: BTreeMap<Vec<u8>, Vec<u8>>,
    /// Keys with a flipped bit in a live record: whole reads must fail.
    rotted: BTreeSet<Vec<u8>>,
    /// Device bits flipped so far: flipping one twice would restore it.
    flipped: BTreeSet<(u64, u8)>,
    /// Metadata blocks damaged since the checkpoint epoch `.0`, by copy
    /// and position in the copy: the same block is never damaged in both
    /// copies (that is the loss the mirror cannot cover).
    meta_damaged: (u64, BTreeSet<(usize, u64)>),
    /// Keys whose last change was a tombstone not purged since.
    tombs: BTreeSet<Vec<u8>>,
    /// The puts of the last vouched commit while no log write confirms
    /// it, with what each key held before (value, rotted, tombstone): a
    /// crash may leave one out if its data rotted (`reverted_at_open`).
    unconfirmed: BTreeMap<Vec<u8>, Held>,
}

/// Index entries a checkpoint beside commits encodes at a time here: a
/// few of the keys, so its encoding spans several steps.
const SLICE_ENTRIES: usize = 2;
/// Index entries a reclamation plan lists at a time here: its listing of
/// a victim's chunks spans commits (and the steps of whole-extent passes),
/// keys changing in between.
const LIST_STEP_ENTRIES: usize = 3;

impl Harness {
    fn new() -> Harness {
        let mut dev = SimDevice::new(SimConfig::new(64 << 20, 1));
        format(&mut dev, &FormatOptions { extent_size_bytes: Some(4 << 20), ..FormatOptions::default() }).unwrap();
        let handle = dev.handle();
        let mut store = Store::open(Box::new(dev)).unwrap();
        store.set_checkpoint_slice_entries(SLICE_ENTRIES);
        store.set_reclaim_list_step_entries(LIST_STEP_ENTRIES);
        Harness {
            handle,
            store: Some(store),
            model: BTreeMap::new(),
            rotted: BTreeSet::new(),
            flipped: BTreeSet::new(),
            meta_damaged: (0, BTreeSet::new()),
            tombs: BTreeSet::new(),
            unconfirmed: BTreeMap::new(),
        }
    }

    fn store(&mut self) -> &mut Store {
        self.store.as_mut().expect("store open")
    }

    /// The machine crashes: each unflushed write persists, vanishes or
    /// tears (chosen from `fate_seed`); then the store is opened again.
    fn crash(&mut self, fate_seed: u64) {
        let mut rng = Rng::new(fate_seed);
        self.handle.crash_with(|_, w| match rng.below(3) {
            0 => Fate::Persist,
            1 => Fate::Drop,
            _ => Fate::Tear((0..w.data.len() / 512).map(|_| rng.chance(1, 2)).collect()),
        });
        self.reopen();
    }

    fn reopen(&mut self) {
        self.store = None;
        self.store = Some(Store::open(Box::new(self.handle.attach())).expect("reopen after restart"));
        self.store().set_checkpoint_slice_entries(SLICE_ENTRIES);
        self.store().set_reclaim_list_step_entries(LIST_STEP_ENTRIES);
        // The last commit before a crash is completed from the log's copy
        // of its payload when its chunk does not verify: rot of a put the
        // model holds is then healed (the exact bytes, and reported as a
        // finding), never rolled back to an older version.
        let completed = self.store().completed_at_open().to_vec();
        if !completed.is_empty() {
            assert!(
                self.store().counters().snapshot().checksum_failures >= completed.len() as u64,
                "completions at open are reported as findings"
            );
        }
        for k in completed {
            let k = k.into_bytes();
            if let Some(want) = self.model.get(&k).cloned() {
                if self.store().get(&k).ok().as_ref() == Some(&want) {
                    self.rotted.remove(&k);
                }
            }
        }
        // An acknowledged put of the last vouched commit is left out only
        // if no log write confirmed it and its data rotted (the model
        // tears nothing acknowledged): reported, and the key holds what it
        // held before.
        let reverted = self.store().reverted_at_open().to_vec();
        if !reverted.is_empty() {
            assert!(
                self.store().counters().snapshot().checksum_failures >= reverted.len() as u64,
                "puts left out at open are reported as findings"
            );
        }
        for k in reverted {
            let k = k.into_bytes();
            let (old, rotted, tomb) = self
                .unconfirmed
                .remove(&k)
                .unwrap_or_else(|| panic!("{k:?} left out at open: not a put of an unconfirmed vouched commit"));
            assert!(self.rotted.contains(&k), "{k:?} left out at open although its data did not rot");
            match old {
                Some(v) => self.model.insert(k.clone(), v),
                None => self.model.remove(&k),
            };
            if !rotted {
                self.rotted.remove(&k);
            }
            if tomb {
                self.tombs.insert(k);
            }
        }
        self.unconfirmed.clear();
    }

    fn apply_put(&mut self, key: &[u8], value: Vec<u8>, result: &Result<(), Error>) {
        match result {
            Ok(()) => {
                self.rotted.remove(key);
                self.tombs.remove(key);
                self.model.insert(key.to_vec(), value);
            }
            Err(Error::NoSpace(_)) => {}
            Err(e) => panic!("put {key:?} failed without a fault: {e}"),
        }
    }

    fn check_get(&mut self, key: &[u8]) {
        let got = self.store().get(key);
        match (self.model.get(key), got) {
            (Some(want), Ok(bytes)) => {
                assert!(!self.rotted.contains(key), "rotted shard {key:?} was returned");
                assert!(&bytes == want, "shard {key:?}: wrong bytes");
            }
            (Some(_), Err(Error::Corruption { .. })) if self.rotted.contains(key) => {}
            (None, Err(Error::NotFound(_))) => {}
            (want, got) => panic!("get {key:?}: model has {:?} bytes, store answered {got:?}", want.map(Vec::len)),
        }
    }

    fn run(&mut self, step: &Step) {
        match step.clone() {
            Step::Put { key, size, seed } => {
                let (k, v) = (KEYS[key].as_bytes(), data(SIZES[size], seed));
                let r = self.store().put(k, &v);
                self.apply_put(k, v, &r);
            }
            Step::Delete { key } => {
                let k = KEYS[key].as_bytes();
                let r = self.store().delete(k);
                match (self.model.remove(k), r) {
                    (Some(_), Ok(())) | (None, Err(Error::NotFound(_))) => {
                        self.rotted.remove(k);
                    }
                    (had, r) => panic!("delete {k:?}: model had {}, store said {r:?}", had.is_some()),
                }
            }
            Step::Get { key } => self.check_get(KEYS[key].as_bytes()),
            Step::GetRange { key, offset, len } => {
                let k = KEYS[key].as_bytes();
                let got = self.store().get_range(k, offset, len);
                match (self.model.get(k), got) {
                    (Some(v), Ok(bytes)) => {
                        let start = (offset as usize).min(v.len());
                        let end = (offset.saturating_add(len) as usize).min(v.len());
                        assert!(bytes == v[start..end], "range of {k:?} at {offset}+{len}: wrong bytes");
                    }
                    (Some(v), Err(Error::InvalidArgument(_))) => assert!(offset as usize > v.len()),
                    (Some(_), Err(Error::Corruption { .. })) if self.rotted.contains(k) => {}
                    (None, Err(Error::NotFound(_))) => {}
                    (want, got) => panic!("range {k:?}: model {:?}, store {got:?}", want.map(Vec::len)),
                }
            }
            Step::List { prefix, after, limit } => {
                let p = PREFIXES[prefix].as_bytes();
                let after = after.map(|a| KEYS[a].as_bytes());
                let listed = self.store().list(p, after, limit);
                // Every shard with its size, and every key whose last
                // change was a tombstone, without a size.
                let mut want: BTreeMap<Vec<u8>, Option<u64>> = self.tombs.iter().map(|k| (k.clone(), None)).collect();
                want.extend(self.model.iter().map(|(k, v)| (k.clone(), Some(v.len() as u64))));
                let want: Vec<(Vec<u8>, Option<u64>)> = want
                    .into_iter()
                    .filter(|(k, _)| k.starts_with(p) && after.is_none_or(|a| k.as_slice() > a))
                    .take(limit)
                    .collect();
                let got: Vec<(Vec<u8>, Option<u64>)> = listed.iter().map(|l| (l.key.clone(), l.size)).collect();
                assert_eq!(got, want, "list {p:?} after {after:?}");
                for l in &listed {
                    let sequence = match self.store().lookup(&l.key) {
                        Lookup::Shard(stat) => stat.sequence,
                        Lookup::Tombstone(sequence) => sequence,
                        Lookup::Absent => panic!("listed {:?}, which lookup finds nowhere", l.key),
                    };
                    assert_eq!(l.sequence, sequence, "list: the sequence of {:?}", l.key);
                }
            }
            Step::Batch { puts, deletes, vouch, unconfirmed } => {
                self.store().set_vouched_commits(vouch);
                let vouched_before = self.store().vouched_commits().0;
                let mut ops: Vec<Op> = puts
                    .iter()
                    .map(|&(k, s, seed)| {
                        let data = data(SIZES[s], seed);
                        // Half of the puts carry their sender's CRC (the
                        // right one: a wrong one is refused, see the
                        // regression tests).
                        let crc32c = (seed % 2 == 0).then(|| crc32c::crc32c(&data));
                        Op::Put { key: KEYS[k].as_bytes().to_vec(), data: arrived(&data, seed), crc32c, version: None }
                    })
                    .collect();
                ops.extend(deletes.iter().map(|&k| Op::Delete { key: KEYS[k].as_bytes().to_vec() }));
                // Gets of every key outside the batch start while the
                // commit waits for its writes (as the store thread starts
                // them) and must answer what the model held before it.
                let outside: Vec<usize> =
                    (0..KEYS.len()).filter(|&k| !ops.iter().any(|op| op.key() == KEYS[k].as_bytes())).collect();
                let mut started: Option<Vec<(usize, Result<(), Error>)>> = None;
                let mut finished = Vec::new();
                let mut pump = |store: &mut Store| {
                    if started.is_none() {
                        let s =
                            outside.iter().map(|&k| (k, store.start_get(k as u64, KEYS[k].as_bytes(), 0, u64::MAX)));
                        started = Some(s.collect());
                    }
                    store.submit_gets(&mut finished);
                };
                // Gets of the same keys also start before the commit, their
                // reads not yet sent to the device: the commit stages its
                // writes with them queued (or finishes them first when one
                // could read an extent the batch may reuse), and they too
                // must answer what the model held before it.
                let early: Vec<(usize, Result<(), Error>)> = outside
                    .iter()
                    .map(|&k| (k, self.store().start_get(EARLY + k as u64, KEYS[k].as_bytes(), 0, u64::MAX)))
                    .collect();
                let before: BTreeMap<Vec<u8>, Held> = ops
                    .iter()
                    .map(|op| {
                        let k = op.key().to_vec();
                        let was = (self.model.get(&k).cloned(), self.rotted.contains(&k), self.tombs.contains(&k));
                        (k, was)
                    })
                    .collect();
                let results = self.store().commit_with(&ops, &mut pump);
                if self.store().unconfirmed() {
                    // Each put's "before" is what the key held when it was
                    // applied: an earlier put of the key in the batch, too.
                    let mut state = before;
                    self.unconfirmed.clear();
                    for (i, (op, r)) in ops.iter().zip(&results).enumerate() {
                        let k = op.key().to_vec();
                        if r.is_err() {
                            continue;
                        }
                        let now = if matches!(op, Op::Put { .. }) {
                            self.unconfirmed.insert(k.clone(), state[&k].clone());
                            Some(data(SIZES[puts[i].1], puts[i].2))
                        } else {
                            self.unconfirmed.remove(&k);
                            None
                        };
                        state.insert(k, (now, false, false));
                    }
                }
                while self.store().completions_pending() {
                    self.store().poll_gets(true, &mut finished).unwrap();
                }
                self.store().take_finished_gets(&mut finished);
                let mut answers: BTreeMap<usize, Result<Vec<u8>, Error>> =
                    finished.into_iter().map(|(id, r)| (id as usize, r)).collect();
                let early = early.into_iter().map(|(k, start)| (EARLY as usize + k, k, start));
                for (id, k, start) in early.chain(started.unwrap_or_default().into_iter().map(|(k, s)| (k, k, s))) {
                    let key = KEYS[k].as_bytes();
                    let answer = match start {
                        Ok(()) => answers.remove(&id).expect("every started get finishes"),
                        Err(e) => Err(e),
                    };
                    match (self.model.get(key), answer) {
                        (Some(want), Ok(bytes)) => {
                            assert!(!self.rotted.contains(key) && &bytes == want, "get of {key:?} during a commit");
                        }
                        (Some(_), Err(Error::Corruption { .. })) if self.rotted.contains(key) => {}
                        (None, Err(Error::NotFound(_))) => {}
                        (want, got) => {
                            panic!("get {key:?} during a commit: model {:?}, store {got:?}", want.map(Vec::len))
                        }
                    }
                }
                // The puts come first in `ops`, in the order of `puts`.
                for (i, (op, r)) in ops.into_iter().zip(results).enumerate() {
                    match op {
                        // What was sent, not the pieces gathered again.
                        Op::Put { key, .. } => {
                            let (_, s, seed) = puts[i];
                            self.apply_put(&key, data(SIZES[s], seed), &r);
                        }
                        Op::Delete { key } => match (self.model.contains_key(&key), r) {
                            (true, Ok(())) => {
                                self.model.remove(&key);
                                self.rotted.remove(&key);
                            }
                            (false, Err(Error::NotFound(_))) => {}
                            (had, r) => panic!("batched delete {key:?}: model had {had}, store said {r:?}"),
                        },
                        other => unreachable!("batches make no {other:?}"),
                    }
                }
                self.store().set_vouched_commits(false);
                if self.store().vouched_commits().0 > vouched_before && !unconfirmed {
                    self.store().confirm(&mut |_| {}).unwrap();
                }
            }
            Step::Checkpoint => self.store().checkpoint().unwrap(),
            Step::FillLog { seed } => {
                let room = |s: &Store| s.superblock().layout.meta_size_bytes / 2 - s.metadata_in_use()[0].1;
                for n in 0..2000u64 {
                    let left = room(self.store());
                    if left == 0 {
                        break;
                    }
                    // A put of up to 64 KiB logs a copy of its payload.
                    let size = if left > 128 << 10 { 60_000 } else { 100 };
                    let k = KEYS[(seed.wrapping_add(n) % KEYS.len() as u64) as usize].as_bytes();
                    let v = data(size, seed ^ n);
                    let r = self.store().put(k, &v);
                    self.apply_put(k, v, &r);
                    if r.is_err() {
                        break;
                    }
                }
            }
            Step::StartCheckpoint => {
                let under_way = self.store().checkpoint_under_way();
                let started = self.store().start_checkpoint().unwrap();
                assert!(!(under_way && started), "a second checkpoint started beside the first");
            }
            Step::AdvanceCheckpoint { finish } => {
                let epoch = self.store().superblock().store.epoch;
                let under_way = self.store().checkpoint_under_way();
                if finish {
                    self.store().finish_checkpoint(&mut |_| {}).unwrap();
                    assert!(!self.store().checkpoint_under_way());
                    assert_eq!(self.store().superblock().store.epoch, epoch + u64::from(under_way));
                } else {
                    let made = self.store().advance_checkpoint(&mut |_| {}).unwrap();
                    assert!(!made || under_way);
                }
            }
            Step::Reclaim => match self.store().reclaim() {
                Ok(_) => {}
                // A rotted chunk in the victim stops the pass, by design.
                Err(Error::Corruption { .. }) if !self.rotted.is_empty() => {}
                Err(e) => panic!("reclaim failed without a fault: {e}"),
            },
            Step::CleanRestart => {
                let store = self.store.take().unwrap();
                store.close().unwrap();
                self.reopen();
            }
            Step::CrashDuring { key, size, seed, budget, delete, fate_seed } => {
                let k = KEYS[key].as_bytes().to_vec();
                let v = data(SIZES[size], seed);
                self.handle.cut_power_after(budget);
                let r = if delete {
                    self.store().delete(&k)
                } else {
                    let op = Op::Put { key: k.clone(), data: arrived(&v, seed), crc32c: None, version: None };
                    self.store().commit(&[op]).pop().expect("one result")
                };
                self.crash(fate_seed);
                let old = self.model.get(&k).cloned();
                let new = if delete { None } else { Some(v) };
                let now = match self.store().get(&k) {
                    Ok(bytes) => Some(bytes),
                    Err(Error::NotFound(_)) => None,
                    Err(Error::Corruption { .. }) if self.rotted.contains(&k) => old.clone(),
                    Err(e) => panic!("after a crash, {k:?} reads as {e}"),
                };
                match &r {
                    // Acknowledged: it must have survived.
                    Ok(()) => assert!(
                        now == new,
                        "acknowledged {} of {k:?} lost in the crash",
                        if delete { "delete" } else { "put" }
                    ),
                    Err(Error::NotFound(_)) => assert!(delete && old.is_none() && now.is_none()),
                    Err(Error::NoSpace(_)) => assert!(now == old),
                    // Not acknowledged: old or new, nothing else.
                    Err(_) => assert!(now == old || now == new, "{k:?} after a crash is neither old nor new"),
                }
                if now != old {
                    self.rotted.remove(&k);
                }
                if now.is_some() && now != old {
                    self.tombs.remove(&k);
                }
                match now {
                    Some(bytes) => self.model.insert(k, bytes),
                    None => self.model.remove(&k),
                };
            }
            Step::ReadError { key } => {
                let k = KEYS[key].as_bytes();
                let Some(locs) = self.store().chunk_locations(k) else { return };
                let (offset, len) = locs[locs.len() / 2];
                if len == 0 {
                    return; // an empty shard is never read from the device
                }
                self.handle.inject(Fault { op: OpKind::Read, range: Some((offset, 512)), skip: 0, remaining: Some(1) });
                match self.store().get(k) {
                    Ok(bytes) => panic!("read of {k:?} through an injected error returned {} bytes", bytes.len()),
                    Err(Error::Corruption { what, .. }) => {
                        assert!(what.contains("unreadable") || self.rotted.contains(k), "{what}");
                    }
                    Err(e) => panic!("read error surfaced as {e}"),
                }
                self.handle.clear_faults();
                self.check_get(k);
            }
            Step::BitRot { key, pick } => {
                let k = KEYS[key].as_bytes();
                let Some(locs) = self.store().chunk_locations(k) else { return };
                let (offset, len) = locs[(pick % locs.len() as u64) as usize];
                if len == 0 {
                    return; // no data bytes to rot
                }
                let (at, bit) = (offset + (pick >> 8) % len, (pick % 8) as u8);
                if !self.flipped.insert((at, bit)) {
                    return; // flipping it again would heal it, not rot it
                }
                self.handle.rot_bit(at, bit);
                self.rotted.insert(k.to_vec());
                self.check_get(k);
            }
            Step::RotMetadata { copy, pick, zero } => {
                let epoch = self.store().superblock().store.epoch;
                if self.meta_damaged.0 != epoch {
                    self.meta_damaged = (epoch, BTreeSet::new());
                }
                let copies = self.store().metadata_in_use();
                let (start, len) = copies[copy % copies.len()];
                let block = (pick % len.div_ceil(4096)) * 4096;
                let other = (copy + 1) % copies.len();
                if copies.len() < 2 || self.meta_damaged.1.contains(&(other, block)) {
                    return; // both copies of one block: see tests/metadata_rot.rs
                }
                self.meta_damaged.1.insert((copy, block));
                if zero {
                    self.handle.scribble(start + block, &[0u8; 4096]);
                } else {
                    self.handle.rot_bit(start + block + (pick >> 20) % 4096, (pick % 8) as u8);
                }
                self.reopen();
                // The damaged copy was repaired from the other if recovery
                // read it; a copy it did not read stays damaged.
            }
            Step::Tombstone { key, purge } => {
                let k = KEYS[key].as_bytes().to_vec();
                let r = self.store().commit(&[Op::Tombstone { key: k.clone(), version: 0 }]).pop().unwrap();
                r.unwrap_or_else(|e| panic!("tombstone {k:?}: {e}"));
                self.model.remove(&k);
                self.rotted.remove(&k);
                self.tombs.insert(k.clone());
                let Lookup::Tombstone(sequence) = self.store().lookup(&k) else { panic!("no tombstone for {k:?}") };
                if purge {
                    let r = self.store().commit(&[Op::Purge { key: k.clone(), version: sequence }]).pop().unwrap();
                    r.unwrap_or_else(|e| panic!("purge {k:?}: {e}"));
                    self.tombs.remove(&k);
                }
            }
            Step::RotLastCommit { key, seed, pick, confirmed, fate_seed } => {
                let k = KEYS[key].as_bytes().to_vec();
                let v = data(1 + (seed % 9000) as usize, seed);
                let before = self.store().one_flush_commits();
                let r = self.store().put(&k, &v);
                if r.is_err() {
                    self.apply_put(&k, v, &r);
                    return;
                }
                self.apply_put(&k, v.clone(), &r);
                if self.store().one_flush_commits() == before {
                    return; // reclamation rode on the commit: two flushes (store_crash.rs covers one)
                }
                let locs = self.store().chunk_locations(&k).expect("just put");
                let (offset, len) = locs[0];
                let (at, bit) = (offset + pick % len, (pick >> 32) as u8 % 8);
                if !self.flipped.insert((at, bit)) {
                    return;
                }
                self.handle.rot_bit(at, bit);
                if confirmed {
                    let other = KEYS[(key + 1) % KEYS.len()].as_bytes().to_vec();
                    let w = data(100, seed ^ 1);
                    let r = self.store().put(&other, &w);
                    self.apply_put(&other, w, &r);
                }
                self.rotted.insert(k.clone());
                self.crash(fate_seed);
                let completed = self.store().completed_at_open().iter().any(|c| c.as_bytes() == k.as_slice());
                match self.store().get(&k) {
                    Ok(bytes) => {
                        assert!(!confirmed && completed, "rotted {k:?} read back without being completed at open");
                        assert!(bytes == v, "{k:?}: completed from the log with wrong bytes");
                    }
                    Err(Error::Corruption { .. }) => {
                        assert!(confirmed, "unconfirmed rot of {k:?} was not completed from the log");
                    }
                    Err(e) => panic!("{k:?} after rot and a crash: {e}"),
                }
            }
            Step::RotLastVouched { key, seed, pick, confirmed, fate_seed } => {
                let k = KEYS[key].as_bytes().to_vec();
                let v = data(70_000 + (seed % 200_000) as usize, seed);
                let was = (self.model.get(&k).cloned(), self.rotted.contains(&k), self.tombs.contains(&k));
                self.store().set_vouched_commits(true);
                let before = self.store().vouched_commits().0;
                let r = self.store().commit(&[Op::put(k.clone(), v.clone())]).pop().expect("one result");
                self.store().set_vouched_commits(false);
                self.apply_put(&k, v, &r);
                if r.is_err() || self.store().vouched_commits().0 == before {
                    return; // out of room: a checkpoint, not a vouched commit
                }
                self.unconfirmed = BTreeMap::from([(k.clone(), was)]);
                let locs = self.store().chunk_locations(&k).expect("just put");
                let (offset, len) = locs[(pick % locs.len() as u64) as usize];
                let (at, bit) = (offset + (pick >> 8) % len, (pick >> 40) as u8 % 8);
                if !self.flipped.insert((at, bit)) {
                    return;
                }
                self.handle.rot_bit(at, bit);
                self.rotted.insert(k.clone());
                if confirmed {
                    self.store().confirm(&mut |_| {}).unwrap();
                    self.unconfirmed.clear();
                }
                self.crash(fate_seed);
                let reverted = self.store().reverted_at_open().iter().any(|c| c.as_bytes() == k.as_slice());
                assert_eq!(reverted, !confirmed, "{k:?}: left out at open exactly when unconfirmed");
                self.check_get(&k);
            }
            Step::Scrub { steps, crash } => {
                let store = self.store();
                store.set_scrub_settings(ScrubSettings { unthrottled: true, ..ScrubSettings::default() });
                let mut finished = Vec::new();
                for _ in 0..steps {
                    store.scrub_step().unwrap();
                    store.poll_gets(false, &mut finished).unwrap();
                }
                assert!(finished.is_empty(), "no get was in progress");
                if let Some(fate_seed) = crash {
                    self.crash(fate_seed);
                }
                // The repair list holds only shards whose bits were
                // flipped: the scrubber reports no damage nobody injected.
                for d in self.store().damaged_shards() {
                    assert!(self.rotted.contains(d.key.as_bytes()), "{} listed as damaged: {d:?}", d.key);
                }
                for k in self.rotted.clone() {
                    self.check_get(&k);
                }
            }
        }
        if !self.store().unconfirmed() {
            self.unconfirmed.clear();
        }
        self.store().check_invariants();
        for (k, v) in self.model.clone() {
            let stat = self.store().stat(&k).unwrap_or_else(|| panic!("stat {k:?}: missing"));
            assert_eq!(stat.size, v.len() as u64, "stat {k:?}: size");
            assert_eq!(stat.crc32c, crc32c::crc32c(&v), "stat {k:?}: the shard CRC clients compare against");
        }
        assert_eq!(self.store().len(), self.model.len(), "shard count");
        for k in KEYS {
            let k = k.as_bytes();
            match (self.store().lookup(k), self.model.contains_key(k), self.tombs.contains(k)) {
                (Lookup::Shard(_), true, _) | (Lookup::Tombstone(_), false, true) | (Lookup::Absent, false, false) => {}
                (got, present, tomb) => panic!("lookup {k:?}: {got:?}, model has it {present}, tombstone {tomb}"),
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, max_shrink_iters: 200, ..ProptestConfig::default() })]

    #[test]
    fn store_matches_the_model(steps in proptest::collection::vec(step(), 1..40)) {
        let mut h = Harness::new();
        for step in &steps {
            h.run(step);
        }
        // A final clean restart must preserve everything.
        let store = h.store.take().unwrap();
        store.close().unwrap();
        h.reopen();
        for k in KEYS {
            h.check_get(k.as_bytes());
        }
        // A rebuild from the extents' records alone finds every chunk the
        // index references (groups walked as such), or names a rotted one.
        let fsck = h.store().fsck();
        for problem in &fsck.problems {
            let named = h.rotted.iter().any(|k| problem.contains(&format!("{:?}", String::from_utf8_lossy(k))));
            prop_assert!(named, "fsck: {problem}");
        }
    }
}
