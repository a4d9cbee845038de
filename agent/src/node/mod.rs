//! The node: the host's devices as the HTTP layer sees them, where a new
//! shard goes (power of two random choices on free space, then queue
//! length), and where an existing one is (the devices whose key filter
//! matches).
//!
//! Operations on one key are ordered by a striped lock: a put holds its
//! key's stripe for writing from the lookup of the current holder to the
//! acknowledgement, so two puts of a new key cannot land on two devices,
//! and a get holds it for reading, so the size and checksum it answers
//! with belong to the bytes it returns.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use shardstore::health::{self, CounterSnapshot, HealthRules, HealthState, HealthTracker, Transition};
use shardstore::store::scrub::ScrubSettings;
use shardstore::store::thread::StoreHandle;
use shardstore::store::{Lookup, Op, ShardStat};
use shardstore::Error;

use crate::admission::{Admission, Thresholds};
use crate::devices::{Device, DeviceState};
use crate::filter::KeyFilter;

mod calls;
pub use calls::*;

/// Key stripes: enough that unrelated keys rarely share one.
const STRIPES: usize = 1024;
/// Keys fetched per store call while building a filter.
const LIST_PAGE: usize = 10_000;
/// Keys a device was not asked about while its I/O stalled, remembered for
/// tidying once it answers again (`Slot::owed`), by default
/// (`health.owed_keys_max`). Past as many, the device's whole listing is
/// swept instead (`Node::sweep`).
pub const OWED_KEYS_MAX_DEFAULT: usize = 100_000;

/// One device's copy of a key: a shard (`stat`) or a tombstone.
#[derive(Debug, Clone, Copy)]
pub struct Copy {
    pub slot: usize,
    pub sequence: u64,
    pub stat: Option<ShardStat>,
}

/// Where a read goes (`Node::route`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// Every device that may hold the key is overloaded (`slot` among
    /// them); `sole`: it is the only one, and every device is open (as for
    /// `Sole`: a shard in its read cache is the node's answer).
    Refuse {
        slot: usize,
        sole: bool,
    },
    /// Only this device may hold the key, and every device is open.
    Sole(usize),
    Search,
}

/// Where a key is, as far as the node can prove. Each case but `Absent`
/// carries the older copies found (for `Node::reconcile`).
#[derive(Debug)]
pub enum Located {
    /// The newest copy is this shard.
    Found(Found, Vec<Copy>),
    /// The newest copy is a tombstone, and every device was asked.
    Deleted(Copy, Vec<Copy>),
    /// Every device that may hold the key was asked, and none has it.
    Absent,
    /// No device asked has a shard of it newer than any tombstone, and
    /// these (described) could not be asked.
    Unavailable(Vec<String>, Vec<Copy>),
}

/// One device as served.
#[derive(Debug)]
pub struct Slot {
    pub id: usize,
    pub path: PathBuf,
    pub store: Option<StoreHandle>,
    pub error: Option<String>,
    pub opened_clean: bool,
    /// No new shards are placed here (reads and deletes continue).
    pub fenced: AtomicBool,
    /// Device errors seen by requests, by kind.
    pub errors: Errors,
    /// Shard traffic served from this device.
    pub traffic: Traffic,
    /// Who may run on the device now.
    pub admission: Admission,
    /// The device's health, judged from its store's counters.
    pub health: Mutex<HealthTracker>,
    /// Health transitions so far, by the state entered.
    pub transitions: [AtomicU64; 4],
    /// A request found the store stopped or poisoned: the device failed.
    pub stopped: AtomicBool,
    /// Keys this device was not asked about because its I/O stalled (one
    /// may have been written elsewhere meanwhile, leaving an older copy
    /// here): tidied once it answers again (`Node::take_owed`), so that no
    /// older copy lingers (a listing shows the newest).
    owed: Mutex<Owed>,
    /// Keys remembered in `owed` at most.
    owed_keys_max: usize,
    filter: Arc<Mutex<FilterState>>,
}

/// What devices whose stall ended are owed (`Node::take_owed`): keys to
/// tidy, and devices to sweep whole.
#[derive(Debug, Default)]
pub struct Owing {
    pub keys: Vec<Vec<u8>>,
    pub sweep: Vec<usize>,
}

#[derive(Debug, Default)]
struct Owed {
    keys: std::collections::BTreeSet<Vec<u8>>,
    /// More were owed than `Slot::owed_keys_max`: the device is swept.
    overflowed: bool,
}

/// Device faults seen by requests.
#[derive(Debug, Default)]
pub struct Errors {
    /// A shard's bytes failed verification.
    pub corruption: AtomicU64,
    /// The device failed an I/O, or is poisoned after a failed flush.
    pub io: AtomicU64,
}

/// Shard operations and bytes served by one device.
#[derive(Debug, Default)]
pub struct Traffic {
    pub reads: AtomicU64,
    pub read_bytes: AtomicU64,
    pub writes: AtomicU64,
    pub written_bytes: AtomicU64,
    pub deletes: AtomicU64,
}

/// A device's key filter, and the keys added while a bigger one is built
/// (they must reach the new filter too).
#[derive(Debug)]
struct FilterState {
    current: Arc<KeyFilter>,
    rebuilding: Option<Vec<Vec<u8>>>,
}

impl Slot {
    fn filter(&self) -> Arc<KeyFilter> {
        Arc::clone(&self.filter.lock().expect("filter lock").current)
    }

    pub fn accepts_writes(&self) -> bool {
        self.store.is_some()
            && !self.fenced.load(Ordering::Relaxed)
            && !self.stopped.load(Ordering::Relaxed)
            && self.stalled().is_none()
    }

    /// How long the device's oldest I/O has waited, while that is past the
    /// stall threshold (`health.io_stall_ms`). A stalled device is treated
    /// as one that cannot be asked until the I/O completes: nothing new is
    /// sent to it (a request would wait behind a drive that has not
    /// answered for that long), reads of keys it may hold are answered
    /// `Unavailable`, and writes go to other devices.
    pub fn stalled(&self) -> Option<std::time::Duration> {
        self.store.as_ref().and_then(|s| s.counters().io_stall.stalled_for())
    }

    fn owe(&self, key: &[u8]) {
        let mut owed = self.owed.lock().expect("owed lock");
        if owed.keys.len() < self.owed_keys_max {
            owed.keys.insert(key.to_vec());
        } else {
            owed.overflowed = true;
        }
    }

    /// Why a device without a store did not open.
    pub fn open_error(&self) -> &str {
        self.error.as_deref().unwrap_or("did not open")
    }

    /// "device N (why it did not open)", for a device without a store.
    pub fn why_not_open(&self) -> String {
        format!("device {} ({})", self.id, self.open_error())
    }

    /// "device N (why)" when `e` says the device could not be asked (its
    /// store stopped, which is noted, or its I/O is stalled); `None` for
    /// any other error, which is the request's own.
    pub fn not_asked(&self, e: &Error) -> Option<String> {
        match e {
            Error::Stopped { .. } => self.stopped.store(true, Ordering::Relaxed),
            Error::Stalled { waited_s, .. } => {
                return Some(format!(
                    "device {} (its I/O is stalled: the oldest operation has waited {waited_s} s)",
                    self.id
                ))
            }
            _ => return None,
        }
        Some(format!("device {} ({e})", self.id))
    }

    /// Whether requests may be sent to the device's store thread: it opened,
    /// has not stopped, and its I/O is not stalled.
    pub fn askable(&self) -> bool {
        self.store.is_some() && !self.stopped.load(Ordering::Relaxed) && self.stalled().is_none()
    }
}

#[derive(Debug)]
pub struct Node {
    pub name: String,
    pub slots: Vec<Slot>,
    stripes: Vec<tokio::sync::RwLock<()>>,
    rng: AtomicU64,
    /// The host's hybrid logical clock: versions of writes, ordered
    /// across the host's devices (see `next_version`).
    clock: AtomicU64,
    /// Held for reading by a listing across the devices, for writing by
    /// the purge of a key's newest tombstone (`reconcile`): a listing
    /// reads the devices one after another, so one that saw a key's old
    /// copy on a device must still find, on a device read later, the
    /// tombstone that hides it, even if the old copy is removed meanwhile.
    listing: tokio::sync::RwLock<()>,
}

/// Where a shard was found.
#[derive(Debug, Clone, Copy)]
pub struct Found {
    pub slot: usize,
    pub stat: ShardStat,
}

impl Node {
    /// Takes over the opened devices and builds each one's key filter from
    /// its store.
    pub async fn new(
        name: String,
        devices: &[Device],
        thresholds: Thresholds,
        scrub: ScrubSettings,
        health: HealthRules,
        owed_keys_max: usize,
    ) -> Node {
        let mut slots = Vec::with_capacity(devices.len());
        for (id, d) in devices.iter().enumerate() {
            let (store, error, opened_clean) = match &d.state {
                DeviceState::Open { store, opened_clean } => (Some(store.clone()), None, *opened_clean),
                DeviceState::Failed { error } => (None, Some(error.clone()), false),
            };
            let filter = match &store {
                Some(s) => build_filter(s).await.unwrap_or_else(|e| {
                    tracing::error!(device = %d.path.display(), error = %e, "cannot list keys; every lookup will ask this device");
                    full_filter()
                }),
                None => KeyFilter::new(0),
            };
            if let Some(s) = &store {
                if let Err(e) = set_scrub(s, scrub).await {
                    tracing::error!(device = %d.path.display(), error = %e, "cannot configure the scrubber");
                }
            }
            slots.push(Slot {
                id,
                path: d.path.clone(),
                store,
                error,
                opened_clean,
                fenced: AtomicBool::new(false),
                errors: Errors::default(),
                traffic: Traffic::default(),
                admission: Admission::new(thresholds),
                owed: Mutex::default(),
                owed_keys_max,
                health: Mutex::new(HealthTracker::new(health)),
                transitions: Default::default(),
                stopped: AtomicBool::new(false),
                filter: Arc::new(Mutex::new(FilterState { current: Arc::new(filter), rebuilding: None })),
            });
        }
        // Above every sequence any store has used, so that a write now is
        // newer than every copy on the host, whatever the wall clock did.
        let clock = slots.iter().filter_map(|s| s.store.as_ref()).map(StoreHandle::next_sequence_at_open).max();
        Node {
            name,
            slots,
            stripes: (0..STRIPES).map(|_| tokio::sync::RwLock::new(())).collect(),
            rng: AtomicU64::new(std::process::id().into()),
            clock: AtomicU64::new(clock.unwrap_or(0)),
            listing: tokio::sync::RwLock::new(()),
        }
    }

    /// A version for a new write: a hybrid logical clock, unix
    /// milliseconds shifted left by 16 bits, plus a counter when writes
    /// come faster; never below a version given before (or a sequence a
    /// store had when the agent started). Stores write a shard at a
    /// sequence at least its version, so the copies of one key on two
    /// devices compare by sequence.
    pub fn next_version(&self) -> u64 {
        let now = shardstore::superblock::now_unix_ms() << 16;
        let previous = self
            .clock
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| Some(now.max(v + 1)))
            .expect("the update never declines");
        now.max(previous + 1)
    }

    /// Taken by a listing across the devices for as long as it reads them
    /// (see `Node::listing`).
    pub async fn listing(&self) -> tokio::sync::RwLockReadGuard<'_, ()> {
        self.listing.read().await
    }

    pub fn stripe(&self, key: &[u8]) -> &tokio::sync::RwLock<()> {
        &self.stripes[crc32c::crc32c(key) as usize % STRIPES]
    }

    /// Where a read of `key` goes, from one walk over the devices' key
    /// filters and admission queues: refused at once if every device that
    /// may hold it has a full queue (a read would be refused after the
    /// lookup; sparing the store threads under overload); to the one
    /// device that may hold it when every device is open (what that device
    /// says is the node's answer: no copy, newer or older, can be
    /// elsewhere); otherwise a search of every candidate (`locate`).
    pub fn route(&self, key: &[u8]) -> Route {
        let (mut candidates, mut last, mut all_full, mut provable) = (0, 0, true, true);
        for slot in &self.slots {
            if !slot.askable() {
                provable = false;
            }
            if slot.store.is_none() || !slot.filter().may_contain(key) {
                continue;
            }
            candidates += 1;
            last = slot.id;
            all_full &= slot.admission.is_full();
        }
        match candidates {
            0 => Route::Search,
            _ if all_full => Route::Refuse { slot: last, sole: candidates == 1 && provable },
            1 if provable => Route::Sole(last),
            _ => Route::Search,
        }
    }

    /// Finds the newest copy of `key` on the host. The caller holds the
    /// key's stripe. Every device that may hold the key is asked (its key
    /// filter says maybe): each answers with its shard, its tombstone, or
    /// nothing, and the newest sequence wins; older copies are returned
    /// for `reconcile`. Absence is claimed only when every device that may
    /// hold the key was asked: a device that did not open, or whose store
    /// no longer answers, makes a key found nowhere else `Unavailable`. An
    /// overloaded device's refusal is returned as the error it is.
    pub async fn locate(&self, key: &[u8]) -> Result<Located, Error> {
        let mut unavailable = Vec::new();
        let mut copies: Vec<Copy> = Vec::new();
        for slot in &self.slots {
            let Some(store) = &slot.store else {
                unavailable.push(slot.why_not_open());
                continue;
            };
            if !slot.filter().may_contain(key) {
                continue;
            }
            match lookup(store, key).await {
                Ok(Lookup::Shard(stat)) => {
                    copies.push(Copy { slot: slot.id, sequence: stat.sequence, stat: Some(stat) });
                }
                Ok(Lookup::Tombstone(sequence)) => copies.push(Copy { slot: slot.id, sequence, stat: None }),
                Ok(Lookup::Absent) => {}
                Err(e) => {
                    // Not asked, or given up on, because its I/O is stalled:
                    // the caller may write the key elsewhere, and the device
                    // owes a tidy of it (run under the stripe, after the
                    // caller).
                    let stalled = matches!(e, Error::Stalled { .. });
                    unavailable.push(slot.not_asked(&e).ok_or(e)?);
                    if stalled {
                        slot.owe(key);
                    }
                }
            }
        }
        copies.sort_by_key(|c| std::cmp::Reverse(c.sequence));
        let older = copies.split_off(copies.len().min(1));
        Ok(match copies.pop() {
            Some(Copy { slot, stat: Some(stat), .. }) => Located::Found(Found { slot, stat }, older),
            Some(newest @ Copy { stat: None, .. }) if unavailable.is_empty() => Located::Deleted(newest, older),
            _ if unavailable.is_empty() => Located::Absent,
            _ => Located::Unavailable(unavailable, older),
        })
    }

    /// Removes copies of a key older than its newest (`older`, from
    /// `locate`): older shards are deleted, older tombstones purged. When
    /// the newest is a tombstone (`deleted`) and every device was asked,
    /// it is purged too once nothing older is left: no copy can come back.
    /// The caller holds the key's stripe for writing. Failures are logged
    /// and left for the next time the key is touched.
    pub async fn reconcile(&self, key: &[u8], older: &[Copy], deleted: Option<&Copy>) {
        let mut clean = true;
        for c in older.iter().chain(deleted) {
            let Some(store) = self.slots[c.slot].store.as_ref() else { continue };
            let op = match c.stat {
                Some(_) => Op::Delete { key: key.to_vec() },
                None => Op::Purge { key: key.to_vec(), version: c.sequence },
            };
            let is_newest = deleted.is_some_and(|d| std::ptr::eq(d, c));
            if is_newest && !clean {
                break;
            }
            // No listing is between two devices while the last copy that
            // hides the key goes (see `Node::listing`).
            let _no_listing = if is_newest { Some(self.listing.write().await) } else { None };
            match submit(store, op).await {
                Ok(()) => {}
                // The copy is older than what the caller has (a read finds
                // the newest), and goes once the device answers again.
                Err(Error::Stalled { .. }) => {
                    self.slots[c.slot].owe(key);
                    clean = false;
                }
                Err(e) => {
                    clean = false;
                    tracing::warn!(key = %crate::keys::encode_key(key), device = c.slot, error = %e, "an older copy was not removed");
                }
            }
        }
    }

    /// Finds `key` afresh under its stripe (taken for writing here) and
    /// removes every copy older than its newest (`reconcile`).
    pub async fn tidy(&self, key: &[u8]) {
        let _write = self.stripe(key).write().await;
        match self.locate(key).await {
            Ok(Located::Found(_, older)) => self.reconcile(key, &older, None).await,
            Ok(Located::Deleted(newest, older)) => self.reconcile(key, &older, Some(&newest)).await,
            Ok(_) => {}
            Err(e) => tracing::warn!(key = %crate::keys::encode_key(key), error = %e, "older copies not removed"),
        }
    }

    /// `tidy` of each key in turn (older copies found by a listing, or owed
    /// by a device whose stall ended).
    pub async fn tidy_each(&self, keys: Vec<Vec<u8>>) {
        for key in keys {
            self.tidy(&key).await;
        }
    }

    /// Deletes `key` so that no older copy can come back: a tombstone at a
    /// new version on `slot` (which removes the shard there, if any).
    pub async fn tombstone(&self, slot: usize, key: &[u8]) -> Result<(), Error> {
        let store = self.slots[slot].store.as_ref().expect("a tombstone goes to an open device");
        let version = self.next_version();
        // Before the write, which may take effect even if given up on.
        self.remember(slot, key);
        submit(store, Op::Tombstone { key: key.to_vec(), version }).await
    }

    /// What the devices whose stall has ended are owed (see `Slot::owed`),
    /// for the caller to tidy. Run once per health interval.
    pub fn take_owed(&self) -> Owing {
        let mut owing = Owing::default();
        for slot in self.slots.iter().filter(|s| s.askable()) {
            let owed = std::mem::take(&mut *slot.owed.lock().expect("owed lock"));
            if owed.overflowed {
                tracing::warn!(
                    device = slot.id,
                    max = slot.owed_keys_max,
                    "more keys were written elsewhere while the device stalled than are remembered: sweeping all its keys for older copies"
                );
                owing.sweep.push(slot.id);
            } else if !owed.keys.is_empty() {
                tracing::info!(
                    device = slot.id,
                    keys = owed.keys.len(),
                    "the device answers again: tidying the keys written elsewhere meanwhile"
                );
                owing.keys.extend(owed.keys);
            }
        }
        owing
    }

    /// Tidies every key of `slot`'s device that another device may also
    /// hold (its key filter says maybe): what a device whose owed keys
    /// overflowed is owed. Pages through the device's listing; if the
    /// device cannot be listed (it stalled again, or stopped), the sweep
    /// is owed again and starts over once it answers.
    pub async fn sweep(&self, slot: usize) {
        let Some(store) = self.slots[slot].store.as_ref() else { return };
        let (mut after, mut tidied, mut seen) = (None::<Vec<u8>>, 0u64, 0u64);
        loop {
            let page = match list(store, b"", after.as_deref(), LIST_PAGE).await {
                Ok(page) => page,
                Err(e) => {
                    tracing::warn!(device = slot, error = %e, "sweep for older copies stopped; it starts again once the device answers");
                    self.slots[slot].owed.lock().expect("owed lock").overflowed = true;
                    return;
                }
            };
            // The other devices' filters, taken once a page (not once a key:
            // each take locks the filter's state).
            let others: Vec<Arc<KeyFilter>> =
                self.slots.iter().filter(|s| s.id != slot && s.store.is_some()).map(Slot::filter).collect();
            for listed in &page {
                seen += 1;
                if others.iter().any(|f| f.may_contain(&listed.key)) {
                    self.tidy(&listed.key).await;
                    tidied += 1;
                }
            }
            match page.last() {
                Some(last) if page.len() == LIST_PAGE => after = Some(last.key.clone()),
                _ => break,
            }
        }
        tracing::info!(device = slot, keys = seen, tidied, "sweep for older copies done");
    }

    /// Whether every device could be asked (none failed to open, stopped,
    /// or has its I/O stalled).
    pub fn all_devices_available(&self) -> bool {
        self.slots.iter().all(Slot::askable)
    }

    /// At start: every tombstone on the host is reconciled (older copies
    /// removed, the tombstone purged) when every device is available, so
    /// a device that came back loses the copies deleted or overwritten
    /// while it was away.
    pub async fn reconcile_tombstones(&self) {
        if !self.all_devices_available() {
            tracing::info!("a device is unavailable: tombstones are kept until every device is back");
            return;
        }
        let mut keys = std::collections::BTreeSet::new();
        for slot in &self.slots {
            let Some(store) = &slot.store else { continue };
            let store = store.clone();
            match tokio::task::spawn_blocking(move || store.tombstones()).await {
                Ok(Ok(list)) => keys.extend(list.into_iter().map(|(k, _)| k)),
                Ok(Err(e)) => tracing::warn!(device = slot.id, error = %e, "cannot list tombstones"),
                Err(e) => tracing::warn!(device = slot.id, error = %e, "cannot list tombstones"),
            }
        }
        let count = keys.len();
        for key in keys {
            self.tidy(&key).await;
        }
        if count > 0 {
            tracing::info!(tombstones = count, "tombstones reconciled");
        }
    }

    /// One health interval of the host: every device judged against its
    /// siblings, automatic fences within the host's limit
    /// (`shardstore::health::judge_host`).
    pub fn judge_health(&self) {
        let mut trackers: Vec<_> = self.slots.iter().map(|s| s.health.lock().expect("health lock")).collect();
        let mut failed = Vec::new();
        let mut snapshots = Vec::with_capacity(self.slots.len());
        for (slot, tracker) in self.slots.iter().zip(trackers.iter_mut()) {
            let (snapshot, t) = slot.health_snapshot(tracker);
            failed.push(t);
            snapshots.push(snapshot);
        }
        let mut refs: Vec<&mut HealthTracker> = trackers.iter_mut().map(|t| &mut **t).collect();
        let judged = health::judge_host(&mut refs, &snapshots.iter().map(Option::as_ref).collect::<Vec<_>>());
        drop(trackers);
        for (slot, t) in self.slots.iter().zip(failed.into_iter().zip(judged)) {
            for t in [t.0, t.1].into_iter().flatten() {
                slot.apply_transition(&t);
            }
        }
    }

    /// Why no device takes a new shard of `len` bytes, one clause per
    /// device (fenced and why, failed and why, or full).
    pub fn why_no_device_writes(&self, len: u64) -> String {
        let reasons: Vec<String> = self
            .slots
            .iter()
            .map(|s| {
                let (state, reason) = s.health_state();
                let why = if s.store.is_none() || s.stopped.load(Ordering::Relaxed) || state == HealthState::Failed {
                    format!("failed ({})", if reason.is_empty() { "not serving" } else { &reason })
                } else if s.fenced.load(Ordering::Relaxed) {
                    format!("fenced ({reason})")
                } else {
                    let free = s.store.as_ref().map_or(0, |st| st.stats().usage().free_bytes);
                    format!("full ({free} bytes free, {len} needed)")
                };
                format!("device {} {why}", s.id)
            })
            .collect();
        reasons.join("; ")
    }

    /// Whether some device that takes writes lacks only room: a PUT that
    /// finds no device is then refused for space (507), not for health.
    pub fn only_space_is_missing(&self) -> bool {
        self.slots.iter().all(Slot::accepts_writes)
    }

    /// A device for a new shard of `len` bytes: of two devices picked at
    /// random among those that accept writes and have room, the one with
    /// more free space (on a tie, the shorter queue).
    pub fn place(&self, len: u64) -> Option<usize> {
        let room: Vec<&Slot> = self
            .slots
            .iter()
            .filter(|s| s.accepts_writes())
            .filter(|s| s.store.as_ref().is_some_and(|st| st.stats().usage().free_bytes > len))
            .collect();
        match room.len() {
            0 => None,
            1 => Some(room[0].id),
            n => {
                let r = self.next_random();
                let a = (r % n as u64) as usize;
                let b = (a + 1 + ((r >> 32) % (n as u64 - 1)) as usize) % n;
                let key = |s: &Slot| {
                    let stats = s.store.as_ref().expect("filtered").stats();
                    (stats.usage().free_bytes, std::cmp::Reverse(stats.queued.load(Ordering::Relaxed)))
                };
                Some(if key(room[a]) >= key(room[b]) { room[a].id } else { room[b].id })
            }
        }
    }

    /// Records that `key` now lives on `slot`. A filter that outgrew its
    /// size is rebuilt in the background; until then a filter that
    /// matches every key stands in (slower lookups, never a missed shard).
    pub fn remember(&self, slot: usize, key: &[u8]) {
        let mut state = self.slots[slot].filter.lock().expect("filter lock");
        state.current.insert(key);
        if let Some(keys) = &mut state.rebuilding {
            keys.push(key.to_vec());
            return;
        }
        if !state.current.is_overfull() {
            return;
        }
        let Some(store) = self.slots[slot].store.clone() else { return };
        state.current = Arc::new(full_filter());
        state.rebuilding = Some(Vec::new());
        drop(state);
        let (shared, path) = (Arc::clone(&self.slots[slot].filter), self.slots[slot].path.clone());
        tokio::spawn(async move {
            let built = build_filter(&store).await;
            let mut state = shared.lock().expect("filter lock");
            let added = state.rebuilding.take().unwrap_or_default();
            match built {
                Ok(f) => {
                    for k in &added {
                        f.insert(k);
                    }
                    tracing::info!(device = %path.display(), capacity = f.capacity(), "key filter rebuilt");
                    state.current = Arc::new(f);
                }
                // The full filter stays: correct, and the next put past
                // its size tries again.
                Err(e) => tracing::error!(device = %path.display(), error = %e, "key filter rebuild failed"),
            }
        });
    }

    fn next_random(&self) -> u64 {
        let mut z = self.rng.fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed).wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub fn open_count(&self) -> usize {
        self.slots.iter().filter(|s| s.store.is_some()).count()
    }
}

/// A filter that matches every key.
fn full_filter() -> KeyFilter {
    let f = KeyFilter::new(0);
    f.fill();
    f
}

/// A filter holding every key of a store, sized for twice as many.
async fn build_filter(store: &StoreHandle) -> Result<KeyFilter, Error> {
    let filter = KeyFilter::new(store.stats().usage().shards.saturating_mul(2));
    let mut after: Option<Vec<u8>> = None;
    loop {
        // Shards and tombstones: a tombstone is a copy of its key too, which
        // a lookup must ask.
        let page = list(store, b"", after.as_deref(), LIST_PAGE).await?;
        for l in &page {
            filter.insert(&l.key);
        }
        if page.len() < LIST_PAGE {
            return Ok(filter);
        }
        after = page.last().map(|l| l.key.clone());
    }
}

impl Slot {
    /// Applies a health transition: the fence follows it, and it is counted
    /// and logged.
    pub fn apply_transition(&self, t: &Transition) {
        if t.to == HealthState::Fenced {
            self.fenced.store(true, Ordering::Relaxed);
        }
        let index = match t.to {
            HealthState::Healthy => 0,
            HealthState::Suspect => 1,
            HealthState::Fenced => 2,
            HealthState::Failed => 3,
        };
        self.transitions[index].fetch_add(1, Ordering::Relaxed);
        tracing::warn!(
            device = self.id,
            path = %self.path.display(),
            from = t.from.name(),
            to = t.to.name(),
            reason = %t.reason,
            "device health changed"
        );
    }

    /// The store's counters now, or `None` (after marking the device
    /// failed) when it is not serving.
    fn health_snapshot(&self, tracker: &mut HealthTracker) -> (Option<CounterSnapshot>, Option<Transition>) {
        match &self.store {
            None => (None, tracker.failed(self.error.as_deref().unwrap_or("the device did not open"))),
            Some(_) if self.stopped.load(Ordering::Relaxed) => (None, tracker.failed("the store stopped serving")),
            Some(store) => (Some(store.counters().snapshot()), None),
        }
    }

    pub fn health_state(&self) -> (HealthState, String) {
        let tracker = self.health.lock().expect("health lock");
        (tracker.state(), tracker.reason().to_owned())
    }
}
