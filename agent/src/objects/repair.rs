//! This host's repair queue of object shards, rebuilt from their siblings.
//!
//! What is queued, all of it durable where it was found:
//! - shards of this host that its scrubber found damaged (the devices'
//!   repair lists, `source: scrubber`);
//! - shards owed to another holder: missed when this host acknowledged a
//!   write on k + 1 holders (`put`), or found damaged on their holder by a
//!   read this host coordinated (`read`). Each is an intent shard
//!   `r.<shard key>.h<holder>` in this host's own store, whose body says
//!   the shard's size, why and since when; it is delivered once gossip
//!   shows the holder alive.
//!
//! Every round scans the queue and orders it by the stripe's remaining
//! redundancy (how many more of its shards may be lost before the object
//! is: m minus the shards queued or on holders gossip says are not alive),
//! then by age: the most endangered stripes first, up to four repairs in
//! flight. A shard key names its
//! object's key hash, version, stripe group and index (`Part`), so the
//! repairer finds the siblings without the damaged bytes: it fetches k of
//! them (a copy: one) from the group's other holders, each verified
//! against the manifest's PUT-time CRC, rebuilds the shard, checks the
//! rebuilt bytes against the CRC the manifest recorded for that shard,
//! and only then writes it back. Nothing unverified is ever written.
//!
//! Repairs are throttled by a token bucket (`[cluster]
//! repair_bytes_per_second`, settable at run time with `PUT
//! /v1/repairs/rate`), charged with the bytes each repair reads. Repair
//! reads ask the holders for room their foreground reads leave
//! (`?priority=background`); a holder without it answers `503 Busy` and
//! the repairer backs off (1 s, doubling to 30 s, reset by a success).
//!
//! An entry whose object version was superseded or deleted (a newer
//! readable version or a tombstone on the group's holders) is obsolete:
//! its intent is dropped, its damaged local shard deleted. An intent whose
//! version has no sibling left on any holder of the group (all answered)
//! is dropped too; a damaged shard of this host's own in that case is
//! kept on the repair list (its object may be lost, and must not read as
//! never written). So a repair can never bring a
//! deleted object back, and the queue does not keep what cannot matter.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use shardnode_cluster::ec;
use shardnode_cluster::manifest::Manifest;

pub use super::repairer::Repairer;
use super::repairer::{summarize, Unscanned};
use super::{fetch_hedged, frame, key_hash, list_hosts, peers, shard_path, Part, Version};
use crate::api::App;
use crate::cluster::{peer, unix_ms, Cluster};

/// Why a shard is in the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    Scrubber,
    Put,
    Read,
}

/// One shard to rebuild.
#[derive(Debug, Clone, Serialize)]
pub struct Entry {
    /// The shard's key.
    pub key: String,
    /// The host that must hold it.
    pub holder: u32,
    pub source: Source,
    /// The shard's data bytes (0: not known).
    pub bytes: u64,
    /// How many more shards of its stripe may be lost before the object
    /// is (negative: it already is, unless a holder returns).
    pub redundancy: i64,
    pub since_unix_ms: u64,
    /// How many rounds tried it, and why the last one failed.
    pub attempts: u32,
    pub last_error: Option<String>,
    #[serde(skip)]
    intent: Option<String>,
}

/// What the body of an intent shard records.
#[derive(Debug, Serialize, serde::Deserialize)]
struct Intent {
    bytes: u64,
    source: Source,
    since_unix_ms: u64,
}

const BACKOFF_FIRST: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// A round repairs for at most this long before scanning again, so newly
/// endangered stripes do not wait behind a long queue.
const ROUND_BUDGET: Duration = Duration::from_secs(10);
/// Entries scanned per device and source per round.
const SCAN_MAX: usize = 10_000;

/// The key hash, version and part of any object shard key.
pub fn parse_any(key: &str) -> Option<(String, Version, Part)> {
    let kh = key.strip_prefix("o.")?.split('.').next()?.to_owned();
    let (v, part) = super::parse_shard_key(key, &kh)?;
    Some((kh, v, part))
}

/// Shard `index` rebuilt from the verified siblings `got`, accepted only
/// if it has the CRC the manifest recorded for it when the object was
/// written (never trust what the siblings say now alone).
pub fn verified_rebuild(
    manifest: &Manifest,
    got: &BTreeMap<usize, Vec<u8>>,
    index: usize,
    copy: bool,
) -> Result<Vec<u8>, String> {
    let rebuilt = if copy {
        got.values().next().cloned().ok_or("no copy to take")?
    } else {
        let g = manifest.geometry();
        let avail: Vec<Option<&[u8]>> = (0..manifest.width()).map(|i| got.get(&i).map(Vec::as_slice)).collect();
        ec::rebuild(&g, &avail, index).map_err(|e| e.to_string())?
    };
    let want = if copy { manifest.crc } else { manifest.shards.get(index).ok_or("no such shard in the manifest")?.crc };
    let crc = crc32c::crc32c(&rebuilt);
    if crc != want {
        return Err(format!(
            "the rebuilt shard has CRC32C {crc:08x}, the object was written with {want:08x}: not written"
        ));
    }
    Ok(rebuilt)
}

/// Why a repair did not happen.
#[derive(Debug)]
enum Failure {
    /// A holder had no room beside its foreground reads: back off.
    Busy(String),
    /// The version was superseded or deleted: nothing to repair.
    Obsolete(String),
    Failed(String),
}

impl From<String> for Failure {
    fn from(s: String) -> Failure {
        Failure::Failed(s)
    }
}

impl From<&str> for Failure {
    fn from(s: &str) -> Failure {
        Failure::Failed(s.to_owned())
    }
}

/// Shard `key` rebuilt from its siblings (never from the holder `skip`,
/// which must hold it and lacks it): the manifest and the verified bytes.
async fn rebuild(cluster: &Arc<Cluster>, key: &str, skip: u32) -> Result<(Manifest, Vec<u8>), Failure> {
    let (kh, version, part) = parse_any(key).ok_or("not an object shard key")?;
    let (index, group, copy) = match part {
        Part::Shard(i, g) => (i, g, false),
        Part::Copy(i, g) => (i, g, true),
        Part::Tombstone => return Err("a tombstone has no siblings".into()),
    };
    let placement = cluster.placement()?;
    let holders = placement
        .group(group)
        .ok_or("the key names a group the roster does not have")?
        .holders(&placement.code)
        .to_vec();
    // A copy may also stand on any holder of the group (a stand-in for a
    // holder that missed the write).
    let width = placement.code.width();
    let wanted: Vec<(Part, u32)> = (0..width)
        .filter(|&i| i != index)
        .filter_map(|i| holders.get(i).map(|&h| (if copy { Part::Copy(i, group) } else { Part::Shard(i, group) }, h)))
        .filter(|(_, h)| *h != skip)
        .collect();
    if holders.get(index) != Some(&skip) {
        return Err(format!("the roster now gives the shard to host {:?}, not {skip}", holders.get(index)).into());
    }
    let addr_of: BTreeMap<u32, SocketAddr> = peers(cluster, &holders).into_iter().map(|p| (p.host, p.addr)).collect();
    let need = if copy { 1 } else { usize::from(placement.code.data) };
    let fetched = fetch_hedged(cluster, &kh, version, &wanted, &addr_of, need, true).await;
    if fetched.got.len() < need {
        let why = format!("only {} of {need} siblings verified: {}", fetched.got.len(), fetched.failures.join("; "));
        if !fetched.busy.is_empty() {
            return Err(Failure::Busy(why));
        }
        return Err(match superseded(cluster, &holders, &kh, version, (index, holders.get(index).copied())).await {
            Some(obsolete) => Failure::Obsolete(obsolete),
            None => Failure::Failed(why),
        });
    }
    let manifest = fetched.manifest.ok_or("no manifest")?;
    let rebuilt = verified_rebuild(&manifest, &fetched.got, index, copy)?;
    Ok((manifest, rebuilt))
}

/// Why the version `v` of the object hashed `kh` no longer needs its
/// shard `own` (index, holder) rebuilt, if it does not: a newer readable
/// version or a tombstone on the group's holders, or no other shard of it
/// left on any of them (all answered: only a delete removes shards).
async fn superseded(
    cluster: &Arc<Cluster>,
    holders: &[u32],
    kh: &str,
    v: Version,
    own: (usize, Option<u32>),
) -> Option<String> {
    let parity = usize::from(cluster.placement().ok()?.code.parity);
    let listing = list_hosts(cluster, holders, kh, parity).await;
    let k = usize::from(cluster.placement().ok()?.code.data);
    for (newer, parts) in listing.versions.range(v..).filter(|(n, _)| **n > v) {
        if parts.iter().any(|(p, _)| *p == Part::Tombstone) {
            return Some(format!("deleted (tombstone {newer:?})"));
        }
        let shards = parts.iter().filter(|(p, _)| matches!(p, Part::Shard(..))).count();
        if shards >= k || parts.iter().any(|(p, _)| matches!(p, Part::Copy(..))) {
            return Some(format!("superseded by version {newer:?}"));
        }
    }
    let others = listing.versions.get(&v).into_iter().flatten().filter(|(p, h)| {
        let i = match p {
            Part::Shard(i, _) | Part::Copy(i, _) => *i,
            Part::Tombstone => return false,
        };
        (i, Some(*h)) != own
    });
    (listing.unreachable.is_empty() && others.count() == 0).then(|| NO_SIBLINGS.to_owned())
}

const NO_SIBLINGS: &str = "no sibling is left on any holder of the group";

/// A damaged tombstone rebuilt: the same tombstone fetched from another
/// host that holds it (it went to the holders of both candidate groups,
/// which only the object's key gives; so every roster host is asked), and
/// accepted only if the key it names hashes to the shard key's hash.
async fn rebuild_tombstone(cluster: &Arc<Cluster>, key: &str) -> Result<Vec<u8>, Failure> {
    let (kh, _, _) = parse_any(key).ok_or("not an object shard key")?;
    let me = cluster.settings.host_id;
    let hosts: Vec<u32> = cluster.gossip().roster().hosts.iter().map(|h| h.id).filter(|h| *h != me).collect();
    for batch in hosts.chunks(16) {
        let mut asks = tokio::task::JoinSet::new();
        for p in peers(cluster, batch).into_iter().filter(|p| p.alive) {
            let (c, target) = (Arc::clone(cluster), shard_path(key));
            asks.spawn(async move { peer::call(&c, p.addr, "GET", &target, None, super::READ_TIMEOUT).await });
        }
        while let Some(done) = asks.join_next().await {
            let Ok(Ok(a)) = done else { continue };
            let named = a.body.strip_prefix(super::TOMBSTONE_MAGIC.as_slice());
            if a.status == 200 && named.is_some_and(|k| key_hash(k) == kh) {
                return Ok(a.body);
            }
        }
    }
    Err("no other host holds a verified copy of the tombstone".into())
}

/// Writes `body` as shard `key` to `host`.
async fn write_to(cluster: &Arc<Cluster>, host: u32, key: &str, body: &[u8]) -> Result<(), String> {
    let addr = peers(cluster, &[host]).pop().ok_or("the holder is not on the roster")?.addr;
    let a = peer::call(cluster, addr, "PUT", &shard_path(key), Some(body), super::PUT_DEADLINE)
        .await
        .map_err(|e| format!("{e:#}"))?;
    if a.status != 201 {
        return Err(format!("writing it to host {host}: {} {}", a.status, a.code()));
    }
    Ok(())
}

/// Repairs one entry: the bytes rebuilt and written.
async fn repair(cluster: &Arc<Cluster>, e: &Entry) -> Result<u64, Failure> {
    if matches!(parse_any(&e.key), Some((_, _, Part::Tombstone))) {
        let body = rebuild_tombstone(cluster, &e.key).await?;
        write_to(cluster, e.holder, &e.key, &body).await?;
        return Ok(body.len() as u64);
    }
    let (manifest, rebuilt) = rebuild(cluster, &e.key, e.holder).await?;
    write_to(cluster, e.holder, &e.key, &frame(&manifest, &rebuilt)).await?;
    Ok(rebuilt.len() as u64)
}

/// The key of an intent: shard `key` is owed to `host`.
pub fn intent_key(key: &str, host: u32) -> String {
    format!("r.{key}.h{host}")
}

fn parse_intent(intent: &str) -> Option<(&str, u32)> {
    let rest = intent.strip_prefix("r.")?;
    let (key, host) = rest.rsplit_once(".h")?;
    Some((key, host.parse().ok()?))
}

/// Records durably, in this host's own store, that `host` is owed shard
/// `key` (`bytes` long): the repair rounds deliver it once the holder is
/// alive.
pub async fn owe(cluster: &Arc<Cluster>, key: &str, host: u32, bytes: u64, source: Source) -> Result<(), String> {
    let me = cluster.settings.host_id;
    let mine = peers(cluster, &[me]).pop().ok_or("this host is not on the roster")?;
    let target = shard_path(&intent_key(key, host));
    let body = serde_json::to_vec(&Intent { bytes, source, since_unix_ms: unix_ms() }).expect("plain data");
    // A few tries: each is a new signed request (a retried one would be
    // refused as a replay).
    let mut why = String::new();
    for attempt in 0..3u32 {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_millis(100 << attempt)).await;
        }
        match peer::call(cluster, mine.addr, "PUT", &target, Some(&body), super::PUT_DEADLINE).await {
            Ok(a) if a.status == 201 => return Ok(()),
            Ok(a) => why = format!("{} {}", a.status, a.code()),
            Err(e) => why = format!("{e:#}"),
        }
        tracing::warn!(key, host, attempt, %why, "recording a shard owed to a holder failed");
    }
    tracing::error!(key, host, %why, "cannot record a shard owed to a holder");
    Err(format!("the shard owed to host {host} could not be recorded: {why}"))
}

/// The queue: every device's damaged object shards and every intent,
/// most endangered stripes first, then oldest; and the devices that could
/// not be read (not open, or their repair list or intents unreadable),
/// whose entries the queue lacks. Those are reported, and the repairs of
/// the rest go on: a dead device must not hold up its siblings' repairs.
async fn scan(
    app: &App,
    cluster: &Arc<Cluster>,
    errors: &BTreeMap<String, (u32, String)>,
) -> (Vec<Entry>, Vec<Unscanned>) {
    let me = cluster.settings.host_id;
    let (mut queue, mut unscanned) = (Vec::new(), Vec::new());
    for slot in &app.node.slots {
        let Some(store) = &slot.store else {
            unscanned.push(Unscanned { device: slot.id, reason: format!("not open: {}", slot.open_error()) });
            continue;
        };
        let damaged = match crate::node::damaged_shards(store).await {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(device = slot.id, error = %e, "repair scan: the repair list could not be read");
                unscanned
                    .push(Unscanned { device: slot.id, reason: format!("the repair list could not be read: {e}") });
                continue;
            }
        };
        let intents = match crate::node::list(store, b"r.", None, SCAN_MAX).await {
            Ok(i) => i,
            Err(e) => {
                tracing::warn!(device = slot.id, error = %e, "repair scan: the owed shards could not be listed");
                unscanned
                    .push(Unscanned { device: slot.id, reason: format!("the owed shards could not be listed: {e}") });
                continue;
            }
        };
        for d in damaged.into_iter().filter(|d| d.key.starts_with("o.")).take(SCAN_MAX) {
            let bytes = match crate::node::lookup(store, d.key.as_bytes()).await {
                Ok(shardstore::store::Lookup::Shard(stat)) => stat.size,
                _ => 0,
            };
            queue.push(entry(d.key, me, Source::Scrubber, bytes, d.found_unix_ms, None));
        }
        // Tombstones (no size) are deleted intents.
        for (raw, size) in intents.into_iter().filter_map(|l| Some((l.key, l.size?))) {
            let Ok(intent) = String::from_utf8(raw) else { continue };
            let Some((key, host)) = parse_intent(&intent) else { continue };
            let body = crate::node::get(store, intent.as_bytes(), 0, size).await.unwrap_or_default();
            let i: Intent =
                serde_json::from_slice(&body).unwrap_or(Intent { bytes: 0, source: Source::Put, since_unix_ms: 0 });
            queue.push(entry(key.to_owned(), host, i.source, i.bytes, i.since_unix_ms, Some(intent.clone())));
        }
    }
    for e in &mut queue {
        if let Some((n, why)) = errors.get(&e.key) {
            (e.attempts, e.last_error) = (*n, Some(why.clone()));
        }
    }
    rank(cluster, &mut queue);
    (queue, unscanned)
}

pub(super) fn entry(key: String, holder: u32, source: Source, bytes: u64, since: u64, intent: Option<String>) -> Entry {
    Entry { key, holder, source, bytes, redundancy: 0, since_unix_ms: since, attempts: 0, last_error: None, intent }
}

/// Sets each entry's remaining redundancy (m minus the stripe's shards
/// that are queued or on holders gossip does not show alive) and sorts
/// the queue: lowest redundancy first, then oldest.
fn rank(cluster: &Arc<Cluster>, queue: &mut [Entry]) {
    let Ok(placement) = cluster.placement() else { return };
    let m = i64::from(placement.code.parity);
    let alive: BTreeSet<u32> = {
        let g = cluster.gossip();
        g.roster()
            .hosts
            .iter()
            .map(|h| h.id)
            .filter(|&h| h == cluster.settings.host_id || g.state_of(h).is_some_and(|(_, s)| s == foca::State::Alive))
            .collect()
    };
    // Stripe → the indices of it that are lost.
    let mut lost: BTreeMap<(String, Version, u32), BTreeSet<usize>> = BTreeMap::new();
    for e in queue.iter() {
        if let Some((kh, v, Part::Shard(i, g) | Part::Copy(i, g))) = parse_any(&e.key) {
            let set = lost.entry((kh, v, g)).or_default();
            set.insert(i);
            let copies = matches!(parse_any(&e.key), Some((_, _, Part::Copy(..))));
            let width = if copies { placement.code.parity as usize + 1 } else { placement.code.width() };
            if let Some(group) = placement.group(g) {
                let holders = group.holders(&placement.code);
                set.extend((0..width).filter(|&j| holders.get(j).is_some_and(|h| !alive.contains(h))));
            }
        }
    }
    for e in queue.iter_mut() {
        e.redundancy = match parse_any(&e.key) {
            Some((kh, v, Part::Shard(_, g) | Part::Copy(_, g))) => {
                m - lost.get(&(kh, v, g)).map_or(0, |s| i64::try_from(s.len()).unwrap_or(i64::MAX))
            }
            _ => m,
        };
    }
    queue.sort_by_key(|e| (e.redundancy, e.since_unix_ms));
}

fn publish_metrics(queue: &[Entry], m: i64) {
    let (by, at_risk) = summarize(queue);
    for r in 0..=m {
        let (shards, bytes) = by.get(&r).copied().unwrap_or_default();
        let label = r.to_string();
        metrics::gauge!("shardnode_repair_queue_shards", "redundancy" => label.clone()).set(shards as f64);
        metrics::gauge!("shardnode_repair_queue_bytes", "redundancy" => label).set(bytes as f64);
    }
    for (r, n) in at_risk {
        metrics::gauge!("shardnode_stripes_at_risk", "redundancy" => r.to_string()).set(n as f64);
    }
}

/// Deletes a shard of this host's store (an intent, or a superseded
/// damaged shard).
async fn delete_own(cluster: &Arc<Cluster>, key: &str) {
    let me = cluster.settings.host_id;
    let Some(mine) = peers(cluster, &[me]).pop() else { return };
    if let Err(e) = peer::call(cluster, mine.addr, "DELETE", &shard_path(key), None, super::READ_TIMEOUT).await {
        tracing::warn!(key, error = %format!("{e:#}"), "cannot delete a finished repair entry; the next round retries");
    }
}

/// One round: scan, then repair in priority order within the throttle,
/// for at most `ROUND_BUDGET`. Returns the repairs done and failed.
pub async fn round(app: &App, cluster: &Arc<Cluster>) -> (usize, usize) {
    let r = &cluster.repairs;
    let errors = r.errors.lock().expect("never poisoned").clone();
    let (queue, unscanned) = scan(app, cluster, &errors).await;
    let m = cluster.placement().map_or(0, |p| i64::from(p.code.parity));
    publish_metrics(&queue, m);
    metrics::gauge!("shardnode_repair_unscanned_devices").set(unscanned.len() as f64);
    {
        let mut s = r.status.lock().expect("never poisoned");
        s.rounds += 1;
        s.queue.clone_from(&queue);
        s.unscanned_devices = unscanned;
    }
    // Errors of entries no longer queued are forgotten.
    let queued: BTreeSet<&str> = queue.iter().map(|e| e.key.as_str()).collect();
    r.errors.lock().expect("never poisoned").retain(|k, _| queued.contains(k.as_str()));
    let began = Instant::now();
    let (mut done, mut failed) = (0, 0);
    let mut pending = queue.into_iter().filter(|e| {
        e.holder == cluster.settings.host_id
            || cluster.gossip().state_of(e.holder).is_some_and(|(_, s)| s == foca::State::Alive)
    });
    let mut running = tokio::task::JoinSet::new();
    let backing_off = || r.backoff_until.lock().expect("never poisoned").is_some_and(|t| Instant::now() < t);
    loop {
        // Up to REPAIRS_AT_ONCE in flight, in priority order, each started
        // once the throttle allows what it reads: k siblings (one copy).
        while !backing_off() && running.len() < REPAIRS_AT_ONCE && began.elapsed() < ROUND_BUDGET {
            let Some(entry) = pending.next() else { break };
            let k = cluster.placement().map_or(1, |p| u64::from(p.code.data));
            let reads = if matches!(parse_any(&entry.key), Some((_, _, Part::Shard(..)))) { k } else { 1 };
            if !r.spend(entry.bytes.max(1) * reads).await {
                break;
            }
            let c = Arc::clone(cluster);
            running.spawn(async move {
                let outcome = repair(&c, &entry).await;
                (entry, outcome)
            });
        }
        let Some(finished) = running.join_next().await else { break };
        let (e, outcome) = finished.expect("a repair task never panics");
        match settle(cluster, &e, outcome).await {
            Settled::Done => done += 1,
            Settled::Failed => failed += 1,
            Settled::Busy(d) => {
                failed += 1;
                let mut until = r.backoff_until.lock().expect("never poisoned");
                let new = Instant::now() + d;
                *until = Some(until.map_or(new, |t| t.max(new)));
            }
        }
    }
    (done, failed)
}

/// Repairs in flight at once (each fetches k siblings and writes one).
const REPAIRS_AT_ONCE: usize = 4;

enum Settled {
    Done,
    Failed,
    /// Holders were busy: wait this long before the next repair.
    Busy(Duration),
}

/// Records what a repair did: counters, the queue view, logs; deletes a
/// delivered intent or an obsolete entry.
async fn settle(cluster: &Arc<Cluster>, e: &Entry, outcome: Result<u64, Failure>) -> Settled {
    let r = &cluster.repairs;
    let mut then_delete: Option<&str> = None;
    let settled = {
        let mut s = r.status.lock().expect("never poisoned");
        match outcome {
            Ok(bytes) => {
                s.repaired += 1;
                s.bytes_repaired += bytes;
                s.backoff_ms = 0;
                s.queue.retain(|q| q.key != e.key || q.holder != e.holder);
                metrics::counter!("shardnode_object_repairs_total", "outcome" => "repaired").increment(1);
                metrics::counter!("shardnode_repair_bytes_total").increment(bytes);
                tracing::warn!(key = %e.key, holder = e.holder, source = ?e.source, bytes, "object shard rebuilt from its siblings and written");
                then_delete = e.intent.as_deref();
                Settled::Done
            }
            // Without a newer version or tombstone in sight, a damaged
            // shard of this host's own is kept (listed, answering
            // `Corrupt`): its version was superseded through the other
            // candidate group, or lost, and a lost object must not read
            // as one that never was. An intent is only a pointer: dropped.
            Err(Failure::Obsolete(why)) if why == NO_SIBLINGS && e.intent.is_none() => {
                s.failed += 1;
                let why =
                    format!("{why}: the version cannot be rebuilt here (superseded, or lost); kept on the repair list");
                note_error(r, &e.key, &why);
                metrics::counter!("shardnode_object_repairs_total", "outcome" => "failed").increment(1);
                tracing::error!(key = %e.key, %why, "object shard not repaired");
                Settled::Failed
            }
            Err(Failure::Obsolete(why)) => {
                s.obsolete += 1;
                s.queue.retain(|q| q.key != e.key || q.holder != e.holder);
                metrics::counter!("shardnode_object_repairs_total", "outcome" => "obsolete").increment(1);
                tracing::warn!(key = %e.key, holder = e.holder, %why, "repair entry dropped: the object version is gone");
                then_delete = Some(e.intent.as_deref().unwrap_or(&e.key));
                Settled::Done
            }
            Err(Failure::Busy(why)) => {
                let backoff = (Duration::from_millis(s.backoff_ms) * 2).clamp(BACKOFF_FIRST, BACKOFF_MAX);
                s.backoff_ms = backoff.as_millis() as u64;
                note_error(r, &e.key, &why);
                metrics::counter!("shardnode_object_repairs_total", "outcome" => "busy").increment(1);
                tracing::info!(key = %e.key, %why, ?backoff, "holders busy with foreground reads; repair backs off");
                Settled::Busy(backoff)
            }
            Err(Failure::Failed(why)) => {
                s.failed += 1;
                note_error(r, &e.key, &why);
                metrics::counter!("shardnode_object_repairs_total", "outcome" => "failed").increment(1);
                tracing::error!(key = %e.key, holder = e.holder, %why, "object shard not repaired");
                Settled::Failed
            }
        }
    };
    if let Some(key) = then_delete {
        delete_own(cluster, key).await;
    }
    settled
}

fn note_error(r: &Repairer, key: &str, why: &str) {
    let mut errors = r.errors.lock().expect("never poisoned");
    let slot = errors.entry(key.to_owned()).or_insert((0, String::new()));
    slot.0 += 1;
    why.clone_into(&mut slot.1);
}

/// Repairs forever, a round every `every`.
pub async fn run(app: Arc<App>, cluster: Arc<Cluster>, every: Duration) {
    metrics::gauge!("shardnode_repair_rate_bytes_per_second").set(cluster.repairs.rate() as f64);
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        round(&app, &cluster).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shardnode_cluster::ec::Geometry;
    use shardnode_cluster::manifest::{Layout, ShardRef};

    fn manifest_of(shards: &[Vec<u8>], size: u64) -> Manifest {
        Manifest {
            key: b"k".to_vec(),
            layout: Layout::Coded,
            k: 4,
            m: 2,
            version: 1,
            writer: 1,
            group: 0,
            epoch: 1,
            size,
            crc: 0,
            cell_bytes: Geometry::for_object(size, 4, 2).cell as u32,
            shards: shards
                .iter()
                .enumerate()
                .map(|(i, s)| ShardRef { host: i as u32 + 1, crc: crc32c::crc32c(s) })
                .collect(),
        }
    }

    #[test]
    fn a_rebuild_is_written_only_with_the_crc_recorded_at_put() {
        let object: Vec<u8> = (0..300_000u32).map(|i| (i * 7) as u8).collect();
        let g = Geometry::for_object(object.len() as u64, 4, 2);
        let shards = ec::encode(&g, &object).unwrap();
        let manifest = manifest_of(&shards, object.len() as u64);
        let got: BTreeMap<usize, Vec<u8>> = (1..5).map(|i| (i, shards[i].clone())).collect();
        assert_eq!(verified_rebuild(&manifest, &got, 0, false).unwrap(), shards[0]);
        // A sibling whose bytes changed after the PUT (rot the sibling's own
        // check did not see, say): the rebuild differs, and is refused.
        let mut rotten = got.clone();
        rotten.get_mut(&4).unwrap()[10] ^= 1;
        let err = verified_rebuild(&manifest, &rotten, 0, false).unwrap_err();
        assert!(err.contains("not written"), "{err}");
        assert!(parse_any("o.00112233445566778899aabbccddeeff.0000000000000001-00000002.s3g7").is_some());
        assert!(parse_any("plain-shard").is_none());
        let key = "o.00112233445566778899aabbccddeeff.0000000000000001-00000002.s3g7";
        assert_eq!(parse_intent(&intent_key(key, 12)), Some((key, 12)));
        assert!(intent_key(key, 4_000_000_000).len() < 255, "a valid shard key");
    }
}
