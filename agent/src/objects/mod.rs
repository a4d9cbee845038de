//! Objects across the cluster (issue 13): any agent coordinates a PUT,
//! GET, HEAD or DELETE of an object; the bytes live as shards on the
//! holders the roster's stripe groups give (`shardnode_cluster::placement`),
//! written and read through the peers' shard API with signed requests.
//!
//! - **Layout**: an object of at least k × 64 KiB is coded, k data + m
//!   parity shards (`shardnode_cluster::ec`); a smaller one is kept as m + 1
//!   whole copies. Each shard is stored under the key
//!   `o.<key hash>.<version>-<writer>.<part>` (part `s<i>g<group>` for
//!   shard i, `c<i>g<group>` for copy i, `t` for a tombstone), its bytes framed with the
//!   object's manifest (`shardnode_cluster::manifest`), which records the
//!   CRC of every shard at PUT time.
//! - **Versions**: the coordinator's hybrid logical clock and its host id.
//!   A version is readable once k of its shards (one copy) exist; readers
//!   take the newest readable version, so an overwrite is seen whole or
//!   not at all. A tombstone newer than every readable version makes the
//!   object deleted. Superseded versions are deleted once the new one is
//!   acknowledged.
//! - **Where**: the key's two candidate groups; a PUT writes to the one
//!   whose holders are in better shape (more alive, then more free space by
//!   gossip), a GET or DELETE looks in both.

pub mod repair;
pub mod routes;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use shardnode_cluster::ec::{self, Geometry};
use shardnode_cluster::manifest::{Layout, Manifest, ShardRef};
use shardnode_cluster::placement::Placement;
use shardnode_cluster::records::Body;
use shardstore::store::SHARD_SIZE_BYTES_MAX;

use crate::cluster::peer::{self, Answer};
use crate::cluster::Cluster;

/// Objects under k × this many bytes are kept as m + 1 whole copies.
pub const COPIES_BELOW_BYTES_PER_DATA_SHARD: u64 = 64 << 10;
/// Room kept in a shard for its frame (the manifest).
const FRAME_BYTES_MAX: u64 = 1 << 20;
/// How long a PUT waits for every holder before settling for k + 1.
const PUT_DEADLINE: Duration = Duration::from_secs(30);
/// One shard read, listing or delete.
const READ_TIMEOUT: Duration = Duration::from_secs(10);
const TOMBSTONE_MAGIC: &[u8; 4] = b"SNTB";
/// The least a direct range read waits for a piece before reading whole
/// shards instead.
const DIRECT_PATIENCE_MIN: Duration = Duration::from_millis(100);

/// The memory a PUT of `size` bytes holds at most: the body, its k + m
/// shards (m + 1 copies' frames) and one frame being built, which the
/// agent's request body budget (`limits.body_memory_bytes_max`) is
/// charged with before the body is read.
pub fn put_memory_bytes(size: u64, key_bytes: usize, k: u8, m: u8) -> u64 {
    let width = usize::from(k) + usize::from(m);
    let frame = 4 + Manifest::encoded_len(key_bytes, width) as u64;
    if size < u64::from(k) * COPIES_BELOW_BYTES_PER_DATA_SHARD {
        return size + (size + frame) * (u64::from(m) + 1);
    }
    let g = Geometry::for_object(size, k.into(), m.into());
    size + (g.cell + frame) * (width as u64 + 1)
}

/// The largest object a code of k data shards stores.
pub fn object_bytes_max(k: u8) -> u64 {
    u64::from(k) * (SHARD_SIZE_BYTES_MAX - FRAME_BYTES_MAX)
}

/// Why an object operation failed (mapped to HTTP in `routes.rs`).
#[derive(Debug, thiserror::Error)]
pub enum ObjectError {
    #[error("{0}")]
    NoCode(String),
    #[error("x-object-crc32c {given:08x} is not the body's CRC32C {actual:08x}; nothing was stored")]
    BadDigest { given: u32, actual: u32 },
    #[error("an object of {size} bytes is over the maximum of {max} for this code")]
    TooLarge { size: u64, max: u64 },
    #[error("no such object")]
    NotFound,
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    InsufficientHolders(String),
    #[error("{0}")]
    InvalidRange(String),
}

/// A version: the coordinator's clock, then its host id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Version {
    pub clock: u64,
    pub writer: u32,
}

/// What a stored shard key names: shard or copy i of a stripe in stripe
/// group g (so a repairer holding only the key finds its siblings), or a
/// tombstone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Part {
    Shard(usize, u32),
    Copy(usize, u32),
    Tombstone,
}

/// The hash of an object key that names its shards.
pub fn key_hash(key: &[u8]) -> String {
    let h = blake3::hash(key);
    shardnode_cluster::keys::encode_hex(&h.as_bytes()[..16])
}

pub fn shard_key(kh: &str, v: Version, part: Part) -> String {
    let part = match part {
        Part::Shard(i, g) => format!("s{i}g{g}"),
        Part::Copy(i, g) => format!("c{i}g{g}"),
        Part::Tombstone => "t".to_owned(),
    };
    format!("o.{kh}.{:016x}-{:08x}.{part}", v.clock, v.writer)
}

/// The version and part a listed shard key names, if it is one of `kh`'s.
pub fn parse_shard_key(key: &str, kh: &str) -> Option<(Version, Part)> {
    let rest = key.strip_prefix("o.")?.strip_prefix(kh)?.strip_prefix('.')?;
    let (version, part) = rest.split_once('.')?;
    let (clock, writer) = version.split_once('-')?;
    let v = Version { clock: u64::from_str_radix(clock, 16).ok()?, writer: u32::from_str_radix(writer, 16).ok()? };
    let indexed = |rest: &str| -> Option<(usize, u32)> {
        let (i, g) = rest.split_once('g')?;
        Some((i.parse().ok()?, g.parse().ok()?))
    };
    let part = match part.split_at(1) {
        ("s", rest) => indexed(rest).map(|(i, g)| Part::Shard(i, g))?,
        ("c", rest) => indexed(rest).map(|(i, g)| Part::Copy(i, g))?,
        ("t", "") => Part::Tombstone,
        _ => return None,
    };
    Some((v, part))
}

/// A shard's stored bytes: the manifest's length, the manifest, the data.
pub fn frame(manifest: &Manifest, data: &[u8]) -> Vec<u8> {
    let m = manifest.encode();
    let mut out = Vec::with_capacity(4 + m.len() + data.len());
    out.extend_from_slice(&(m.len() as u32).to_le_bytes());
    out.extend_from_slice(&m);
    out.extend_from_slice(data);
    out
}

/// The manifest and data of a stored shard.
pub fn unframe(bytes: &[u8]) -> Result<(Manifest, &[u8]), String> {
    let n = bytes.get(..4).map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")) as usize).ok_or("too short")?;
    let m = bytes.get(4..4 + n).ok_or("manifest cut short")?;
    let manifest = Manifest::decode(m).map_err(|e| e.to_string())?;
    Ok((manifest, &bytes[4 + n..]))
}

/// The data bytes of each shard of the object `m` describes (a copy is
/// the whole object).
pub fn shard_bytes(m: &Manifest) -> u64 {
    match m.layout {
        Layout::Coded => u64::from(m.cell_bytes),
        Layout::Copies => m.size,
    }
}

fn shard_path(key: &str) -> String {
    format!("/v1/shards/{key}")
}

/// A host's HTTP address and gossip view of it.
struct Peer {
    host: u32,
    addr: SocketAddr,
    alive: bool,
    /// Gossip holds it down (not merely suspect).
    down: bool,
    /// Alive, and its latest host record does not say it refuses writes
    /// or is under maintenance: it is given new shards.
    writable: bool,
    free_bytes: u64,
}

fn peers(cluster: &Cluster, hosts: &[u32]) -> Vec<Peer> {
    let g = cluster.gossip();
    let me = g.me().host;
    hosts
        .iter()
        .filter_map(|&host| {
            let h = g.roster().host(host)?;
            let alive = host == me || g.state_of(host).is_some_and(|(_, s)| s == foca::State::Alive);
            let down = host != me && g.state_of(host).is_some_and(|(_, s)| s == foca::State::Down);
            let free_bytes = g
                .records_of(host)
                .iter()
                .filter_map(|r| match &r.record.body {
                    Body::Device { device, .. } if device.state == shardnode_cluster::records::DeviceState::Open => {
                        Some(device.free_bytes)
                    }
                    _ => None,
                })
                .sum();
            let refuses = g
                .records_of(host)
                .iter()
                .any(|r| matches!(&r.record.body, Body::Host(h) if !h.accepting_writes || h.maintenance));
            Some(Peer { host, addr: h.http, alive, down, writable: alive && !refuses, free_bytes })
        })
        .collect()
}

/// The group a new version goes to: of the two candidates, the one with
/// more holders alive, then the more free space on its fullest holder.
fn choose_group(cluster: &Cluster, p: &Placement, key: &[u8]) -> u32 {
    let [a, b] = p.candidates(key);
    let score = |g: u32| {
        let holders = p.group(g).expect("a candidate group").holders(&p.code).to_vec();
        let peers = peers(cluster, &holders);
        let alive = peers.iter().filter(|x| x.alive).count();
        let min_free = peers.iter().map(|x| x.free_bytes).min().unwrap_or(0);
        (alive, min_free)
    };
    if score(b) > score(a) {
        b
    } else {
        a
    }
}

fn placement(cluster: &Cluster) -> Result<Arc<Placement>, ObjectError> {
    cluster.placement().map_err(ObjectError::NoCode)
}

/// What a PUT did.
#[derive(Debug)]
pub struct Put {
    pub version: Version,
    pub group: u32,
    pub layout: Layout,
    pub crc: u32,
    /// Holders that did not take their shard (to be repaired).
    pub missing: Vec<u32>,
}

/// Stores an object: encodes it, writes every shard to its holder, and
/// answers once all are durable, or after the deadline once k + 1 are
/// (fewer: an error, and what was written is removed).
pub async fn put(
    cluster: &Arc<Cluster>,
    version_clock: u64,
    key: &[u8],
    body: &[u8],
    client_crc: Option<u32>,
) -> Result<Put, ObjectError> {
    let p = placement(cluster)?;
    let code = p.code;
    let size = body.len() as u64;
    let max = object_bytes_max(code.data);
    if size > max {
        return Err(ObjectError::TooLarge { size, max });
    }
    let crc = crc32c::crc32c(body);
    if let Some(given) = client_crc.filter(|g| *g != crc) {
        return Err(ObjectError::BadDigest { given, actual: crc });
    }
    let version = Version { clock: version_clock, writer: cluster.settings.host_id };
    let group = choose_group(cluster, &p, key);
    let holders = p.group(group).expect("a group").holders(&code).to_vec();
    let coded = size >= u64::from(code.data) * COPIES_BELOW_BYTES_PER_DATA_SHARD;
    let shards = if coded {
        let g = Geometry::for_object(size, code.data.into(), code.parity.into());
        ec::encode(&g, body).map_err(|e| ObjectError::Unavailable(e.to_string()))?
    } else {
        Vec::new()
    };
    let (layout, parts, crcs): (Layout, Vec<Part>, Vec<u32>) = if coded {
        (
            Layout::Coded,
            (0..shards.len()).map(|i| Part::Shard(i, group)).collect(),
            shards.iter().map(|s| crc32c::crc32c(s)).collect(),
        )
    } else {
        let copies = usize::from(code.parity) + 1;
        (Layout::Copies, (0..copies).map(|i| Part::Copy(i, group)).collect(), vec![crc; copies])
    };
    let manifest = Manifest {
        key: key.to_vec(),
        layout,
        k: if coded { code.data } else { 1 },
        m: code.parity,
        version: version.clock,
        writer: version.writer,
        group,
        epoch: p.epoch,
        size,
        crc,
        cell_bytes: if coded {
            Geometry::for_object(size, code.data.into(), code.parity.into()).cell as u32
        } else {
            0
        },
        shards: crcs.iter().zip(&holders).map(|(&crc, &host)| ShardRef { host, crc }).collect(),
    };
    // Each shard is dropped once framed: the PUT holds the body, the
    // shards and the frames no longer than it must (`put_memory_bytes`).
    let frames: Vec<Vec<u8>> = if coded {
        shards.into_iter().map(|s| frame(&manifest, &s)).collect()
    } else {
        parts.iter().map(|_| frame(&manifest, body)).collect()
    };
    let kh = key_hash(key);
    let addrs = peers(cluster, &holders);
    let mut writes = tokio::task::JoinSet::new();
    let mut missing = Vec::new();
    for ((part, bytes), peer) in parts.iter().zip(frames).zip(&addrs) {
        let (c, target, host, addr) =
            (Arc::clone(cluster), shard_path(&shard_key(&kh, version, *part)), peer.host, peer.addr);
        // A holder gossip shows down, suspect or refusing writes is not
        // waited for: it is owed its shard.
        if !peer.writable {
            tracing::info!(host, "object shard not sent: the holder is not alive or not taking writes");
            missing.push((host, target));
            continue;
        }
        writes.spawn(async move {
            let r = peer::call(&c, addr, "PUT", &target, Some(&bytes), PUT_DEADLINE).await;
            (host, target, r)
        });
    }
    let mut written = Vec::new();
    while let Some(done) = writes.join_next().await {
        let (host, target, r) = done.expect("a write task never panics");
        match r {
            Ok(a) if a.status == 201 => written.push((host, target)),
            Ok(a) => {
                tracing::warn!(host, status = a.status, code = %a.code(), "object shard not written");
                missing.push((host, target));
            }
            Err(e) => {
                tracing::warn!(host, error = %format!("{e:#}"), "object shard not written");
                missing.push((host, target));
            }
        }
    }
    // A copy its holder did not take goes to the group's next holders
    // instead, so that m + 1 copies stand: a read hearing from all but m
    // of the holders then always sees one.
    if !coded && !missing.is_empty() {
        let spares = (parts.len()..holders.len()).filter_map(|j| Some((j, addrs.get(j)?))).filter(|(_, p)| p.writable);
        for (j, peer) in spares {
            if written.len() >= parts.len() {
                break;
            }
            let target = shard_path(&shard_key(&kh, version, Part::Copy(j, group)));
            match peer::call(cluster, peer.addr, "PUT", &target, Some(&frame(&manifest, body)), PUT_DEADLINE).await {
                Ok(a) if a.status == 201 => written.push((peer.host, target)),
                _ => tracing::warn!(host = peer.host, "object copy not written to a stand-in holder either"),
            }
        }
    }
    // Coded: k + 1 shards, so any read that hears from all but m holders
    // (m <= k, checked by the roster) sees this version. Copies: m + 1.
    let quorum = if coded { usize::from(code.data) + 1 } else { parts.len() }.min(parts.len());
    if written.len() < quorum {
        // Not enough to stand: take back what was written.
        for (host, target) in &written {
            if let Some(peer) = addrs.iter().find(|x| x.host == *host) {
                let _ = peer::call(cluster, peer.addr, "DELETE", target, None, READ_TIMEOUT).await;
            }
        }
        return Err(ObjectError::InsufficientHolders(format!(
            "only {} of {} holders took their shard (at least {quorum} are needed); nothing was stored",
            written.len(),
            parts.len()
        )));
    }
    // What the missing holders owe is recorded before the answer, so a
    // crash after it still delivers their shards.
    let bytes = shard_bytes(&manifest);
    for (host, target) in &missing {
        let key = target.trim_start_matches("/v1/shards/");
        if let Err(why) = repair::owe(cluster, key, *host, bytes, repair::Source::Put).await {
            // Acknowledged without its debt recorded, the object would stay
            // short of a shard for good: not acknowledged, taken back.
            for (host, target) in &written {
                if let Some(peer) = addrs.iter().find(|x| x.host == *host) {
                    let _ = peer::call(cluster, peer.addr, "DELETE", target, None, READ_TIMEOUT).await;
                }
            }
            return Err(ObjectError::Unavailable(format!("{why}; nothing was stored")));
        }
    }
    let mut missing: Vec<u32> = missing.into_iter().map(|(h, _)| h).collect();
    missing.sort_unstable();
    // Superseded versions go once this one stands.
    let c = Arc::clone(cluster);
    let key = key.to_vec();
    tokio::spawn(async move { remove_older(&c, &key, version).await });
    Ok(Put { version, group, layout, crc, missing })
}

/// What the holders of an object's candidate groups list for it.
struct Listing {
    kh: String,
    /// Version → (parts found, hosts holding them).
    versions: BTreeMap<Version, Vec<(Part, u32)>>,
    /// Holders that could not be asked, or have not answered yet.
    unreachable: Vec<u32>,
    /// The asks still in flight (holders given up on after the grace,
    /// whose answers `hear_more` still takes).
    pending: tokio::task::JoinSet<(u32, anyhow::Result<Answer>)>,
}

impl Listing {
    /// Takes one answer: its host is no longer unreachable if it listed.
    fn take(&mut self, host: u32, r: anyhow::Result<Answer>, began: std::time::Instant) {
        let json = match r {
            Ok(a) if a.status == 200 => {
                LISTINGS.record(began.elapsed());
                serde_json::from_slice::<serde_json::Value>(&a.body).ok()
            }
            _ => None,
        };
        let Some(json) = json else { return };
        self.unreachable.retain(|h| *h != host);
        for k in json["shards"].as_array().into_iter().flatten().filter_map(|s| s["key"].as_str()) {
            if let Some((v, part)) = parse_shard_key(k, &self.kh) {
                self.versions.entry(v).or_default().push((part, host));
            }
        }
    }

    /// Waits for one more of the holders given up on; false if none is
    /// left to hear from.
    async fn hear_more(&mut self) -> bool {
        let began = std::time::Instant::now();
        match self.pending.join_next().await {
            Some(done) => {
                let (host, r) = done.expect("a listing task never panics");
                self.take(host, r, began);
                true
            }
            None => false,
        }
    }
}

async fn list(cluster: &Arc<Cluster>, p: &Placement, key: &[u8]) -> Listing {
    let hosts: BTreeSet<u32> =
        p.candidates(key).iter().flat_map(|&g| p.group(g).expect("a group").holders(&p.code).to_vec()).collect();
    let hosts: Vec<u32> = hosts.into_iter().collect();
    list_hosts(cluster, &hosts, &key_hash(key), p.code.parity.into()).await
}

/// What `hosts` list of the object whose key hashes to `kh`: all of them
/// are asked; once all but `parity` answered, the others get a short
/// grace (twice the p95 of recent listings), after which the listing is
/// returned with them unreachable and their asks pending: a reader whose
/// answer depends on them waits for them (`hear_more`), one that does not
/// goes on without them.
async fn list_hosts(cluster: &Arc<Cluster>, hosts: &[u32], kh: &str, parity: usize) -> Listing {
    let began = std::time::Instant::now();
    let mut listing = Listing {
        kh: kh.to_owned(),
        versions: BTreeMap::new(),
        unreachable: Vec::new(),
        pending: tokio::task::JoinSet::new(),
    };
    for peer in peers(cluster, hosts) {
        // A holder gossip holds down is not waited for: it is one that
        // could not be asked.
        listing.unreachable.push(peer.host);
        if peer.down {
            continue;
        }
        let (c, target) = (Arc::clone(cluster), format!("/v1/shards?prefix=o.{kh}.&limit=1000"));
        listing
            .pending
            .spawn(async move { (peer.host, peer::call(&c, peer.addr, "GET", &target, None, READ_TIMEOUT).await) });
    }
    let enough = hosts.len().saturating_sub(parity).max(1);
    let mut grace: Option<tokio::time::Instant> = None;
    loop {
        let done = match grace {
            Some(until) => match tokio::time::timeout_at(until, listing.pending.join_next()).await {
                Ok(d) => d,
                Err(_) => break,
            },
            None => listing.pending.join_next().await,
        };
        let Some(done) = done else { break };
        let (host, r) = done.expect("a listing task never panics");
        listing.take(host, r, began);
        // Answered, or not asked (down): heard from.
        let heard = hosts.len() - listing.pending.len();
        if heard >= enough && grace.is_none() {
            grace = Some(tokio::time::Instant::now() + 2 * LISTINGS.delay());
        }
    }
    listing
}

/// The newest version a reader may use: readable (k shards or one copy
/// listed) and newer than any tombstone; `NotFound` only when every holder
/// answered; `Unavailable` when a newer version may be hidden on holders
/// that did not answer.
fn newest(listing: &Listing, k: usize) -> Result<(Version, Vec<(Part, u32)>), ObjectError> {
    let mut incomplete_newer = false;
    for (v, parts) in listing.versions.iter().rev() {
        if parts.iter().any(|(p, _)| *p == Part::Tombstone) {
            // Unless a newer version seen in part may stand complete on
            // holders not heard from.
            if incomplete_newer && !listing.unreachable.is_empty() {
                break;
            }
            return Err(ObjectError::NotFound);
        }
        let shards = parts.iter().filter(|(p, _)| matches!(p, Part::Shard(..))).count();
        let copies = parts.iter().filter(|(p, _)| matches!(p, Part::Copy(..))).count();
        if shards >= k || copies >= 1 {
            if incomplete_newer && !listing.unreachable.is_empty() {
                break;
            }
            return Ok((*v, parts.clone()));
        }
        incomplete_newer = true;
    }
    if listing.unreachable.is_empty() {
        Err(ObjectError::NotFound)
    } else {
        Err(ObjectError::Unavailable(format!(
            "holders {:?} could not be asked; the object's absence is not proven",
            listing.unreachable
        )))
    }
}

/// Recent shard fetch latencies, from which a read decides when to ask
/// one more holder: the 95th percentile of the last 256, at least 2 ms
/// (50 ms before any was seen).
#[derive(Debug)]
pub struct Hedging {
    recent: std::sync::Mutex<std::collections::VecDeque<Duration>>,
}

const HEDGE_WINDOW: usize = 256;
const HEDGE_DELAY_MIN: Duration = Duration::from_millis(2);
const HEDGE_DELAY_FIRST: Duration = Duration::from_millis(50);

static HEDGING: Hedging = Hedging::new();
/// The same for listings (small answers), which set how long a listing
/// waits for its last m holders.
static LISTINGS: Hedging = Hedging::new();

impl Hedging {
    const fn new() -> Hedging {
        Hedging { recent: std::sync::Mutex::new(std::collections::VecDeque::new()) }
    }

    fn record(&self, d: Duration) {
        let mut r = self.recent.lock().expect("never poisoned");
        if r.len() == HEDGE_WINDOW {
            r.pop_front();
        }
        r.push_back(d);
    }

    /// How long a read waits for its k shards before asking one more
    /// holder.
    pub fn delay(&self) -> Duration {
        let r = self.recent.lock().expect("never poisoned");
        if r.is_empty() {
            return HEDGE_DELAY_FIRST;
        }
        let mut v: Vec<Duration> = r.iter().copied().collect();
        v.sort_unstable();
        v[(v.len() * 95 / 100).min(v.len() - 1)].max(HEDGE_DELAY_MIN)
    }
}

/// An object read: its manifest, and the bytes asked for.
#[derive(Debug)]
pub struct Got {
    pub manifest: Manifest,
    pub bytes: Vec<u8>,
    /// Shards decoded from parity (0 on a healthy read).
    pub decoded: usize,
}

/// Fetches one stored shard and checks it against its manifest: the
/// shard's own CRC recorded at PUT time, and the version asked for.
async fn fetch(
    cluster: &Arc<Cluster>,
    addr: SocketAddr,
    target: String,
    v: Version,
    index: usize,
) -> Result<(Manifest, Vec<u8>), FetchError> {
    let passing = |why: String| FetchError { why, damaged: false, busy: false, gone: false };
    let damaged = |why: &str| FetchError { why: why.to_owned(), damaged: true, busy: false, gone: false };
    let a: Answer =
        peer::call(cluster, addr, "GET", &target, None, READ_TIMEOUT).await.map_err(|e| passing(format!("{e:#}")))?;
    if a.status != 200 {
        let why = format!("{} ({})", a.status, a.code());
        // The holder's store found the shard's bytes damaged, or (to a
        // repair read) has no room beside its foreground reads.
        return Err(FetchError {
            damaged: a.code() == "Corrupt",
            busy: a.code() == "Busy",
            gone: a.status == 404,
            why,
        });
    }
    // The holder's store verified the bytes; this checks the way here.
    // Damage on the wire or at the holder cannot be told apart: the shard
    // is treated as damaged (a rebuild is written only if it verifies).
    if a.header("x-shard-crc32c").is_some_and(|h| *h != format!("{:08x}", crc32c::crc32c(&a.body))) {
        return Err(damaged("the body is not the CRC its holder sent"));
    }
    let (manifest, data) = unframe(&a.body).map_err(|e| damaged(&e))?;
    if manifest.version != v.clock || manifest.writer != v.writer {
        return Err(damaged("the manifest names another version"));
    }
    // Every copy (a stand-in's too) is the whole object.
    let want = match manifest.layout {
        Layout::Copies => manifest.crc,
        Layout::Coded => manifest.shards.get(index).ok_or_else(|| damaged("no such shard in the manifest"))?.crc,
    };
    if crc32c::crc32c(data) != want {
        return Err(damaged("the shard's CRC is not the one recorded when the object was written"));
    }
    Ok((manifest, data.to_vec()))
}

/// Why a shard could not be used, and whether its holder has it damaged
/// (then it is owed a rebuilt one) rather than being unreachable or slow.
#[derive(Debug)]
struct FetchError {
    why: String,
    damaged: bool,
    busy: bool,
    /// The holder no longer has it (`404`).
    gone: bool,
}

/// What a hedged fetch gathered: the verified parts by index, the
/// manifest they share, and why the others failed.
struct Fetched {
    got: BTreeMap<usize, Vec<u8>>,
    manifest: Option<Manifest>,
    failures: Vec<String>,
    /// Parts whose holders have them damaged.
    damaged: Vec<(Part, u32)>,
    /// Holders that answered a repair read `503 Busy`.
    busy: Vec<u32>,
    /// Parts whose holders no longer have them.
    gone: usize,
    /// Fetches still in flight when enough had verified (the caller
    /// cancels them, or lets them finish to learn whether they were
    /// damaged).
    stragglers: tokio::task::JoinSet<Straggler>,
}

type Straggler = (Part, u32, Result<(Manifest, Vec<u8>), FetchError>);

/// Fetches `need` of `wanted` (in order: the first ones are preferred):
/// `need + 1` at once, one more after each failure, and one more whenever
/// the answers are slower than the peers' recent 95th percentile (a
/// hedge). Stops at `need` verified and cancels the rest. A `background`
/// (repair) fetch asks the holders to serve it only with room their
/// foreground reads leave (`?priority=background`, else `503 Busy`).
async fn fetch_hedged(
    cluster: &Arc<Cluster>,
    kh: &str,
    version: Version,
    wanted: &[(Part, u32)],
    addr_of: &BTreeMap<u32, SocketAddr>,
    need: usize,
    background: bool,
) -> Fetched {
    let index = |p: Part| match p {
        Part::Shard(i, _) | Part::Copy(i, _) => i,
        Part::Tombstone => usize::MAX,
    };
    let mut pending = wanted.iter().copied();
    let mut fetching = tokio::task::JoinSet::new();
    let start = |fetching: &mut tokio::task::JoinSet<_>, (part, host): (Part, u32)| {
        let mut target = shard_path(&shard_key(kh, version, part));
        if background {
            target.push_str("?priority=background");
        }
        let (c, addr) = (Arc::clone(cluster), addr_of[&host]);
        let i = index(part);
        fetching.spawn(async move {
            let r = fetch(&c, addr, target, version, i).await;
            (part, host, r)
        });
    };
    // k + 1 shards at once; a single copy (the others are hedges); k
    // without hedging.
    let hedge = cluster.settings.hedge_reads;
    let first = if !hedge || wanted.iter().any(|(p, _)| matches!(p, Part::Copy(..))) { need } else { need + 1 };
    for w in pending.by_ref().take(first) {
        start(&mut fetching, w);
    }
    let mut out = Fetched {
        got: BTreeMap::new(),
        manifest: None,
        failures: Vec::new(),
        damaged: Vec::new(),
        busy: Vec::new(),
        gone: 0,
        stragglers: tokio::task::JoinSet::new(),
    };
    let mut hedged: BTreeSet<usize> = BTreeSet::new();
    let delay = HEDGING.delay();
    let began = std::time::Instant::now();
    // Without hedging, the next hedge never comes.
    let mut next_hedge = tokio::time::Instant::now() + if hedge { delay } else { Duration::from_secs(86_400) };
    while out.got.len() < need && !fetching.is_empty() {
        let done = tokio::select! {
            done = fetching.join_next() => done,
            () = tokio::time::sleep_until(next_hedge) => {
                // Slower than the peers usually are: one more holder.
                if let Some(next) = pending.next() {
                    hedged.insert(index(next.0));
                    metrics::counter!("shardnode_object_hedges_total", "outcome" => "sent").increment(1);
                    start(&mut fetching, next);
                }
                next_hedge += delay;
                continue;
            }
        };
        let Some(done) = done else { break };
        let (part, host, r) = done.expect("a fetch task never panics");
        match r {
            Ok((m, data)) => {
                HEDGING.record(began.elapsed());
                out.manifest.get_or_insert(m);
                out.got.insert(index(part), data);
                if hedged.contains(&index(part)) {
                    metrics::counter!("shardnode_object_hedges_total", "outcome" => "won").increment(1);
                }
            }
            Err(e) => {
                out.failures.push(format!("host {host}: {part:?}: {}", e.why));
                if e.damaged {
                    out.damaged.push((part, host));
                }
                if e.busy {
                    out.busy.push(host);
                }
                out.gone += usize::from(e.gone);
                if let Some(next) = pending.next() {
                    start(&mut fetching, next);
                }
            }
        }
    }
    out.stragglers = fetching;
    out
}

/// Records that `host` holds `part` damaged: this host's repair rounds
/// rebuild it from the siblings and write it back.
fn owe_damaged(cluster: &Arc<Cluster>, kh: &str, version: Version, part: Part, host: u32, bytes: u64) {
    let (c, key) = (Arc::clone(cluster), shard_key(kh, version, part));
    metrics::counter!("shardnode_object_damaged_shards_read_total").increment(1);
    tracing::warn!(key = %key, host, "a read found an object shard damaged; its repair is queued");
    tokio::spawn(async move {
        // Logged by `owe` if it fails: the damage is found again by the
        // next read or by the holder's scrubber.
        let _ = repair::owe(&c, &key, host, bytes, repair::Source::Read).await;
    });
}

/// Reads an object (a byte range of it): the newest readable version,
/// from the data shards first, any k that verify, decoding if needed; no
/// byte is returned that did not verify.
/// `range_of` is given the object's size once its manifest is known and
/// answers the byte range to return (`None`: all of it); `ranged` says
/// whether it will answer one (then only the bytes of the data shards the
/// range covers are read, when their holders serve them).
pub async fn get(
    cluster: &Arc<Cluster>,
    key: &[u8],
    ranged: bool,
    range_of: impl FnOnce(u64) -> Result<Option<std::ops::Range<u64>>, String>,
) -> Result<Got, ObjectError> {
    let mut range_of = Some(range_of);
    let mut memo: Option<Result<Option<std::ops::Range<u64>>, String>> = None;
    let mut range_for = |size: u64| {
        if let Some(f) = range_of.take() {
            memo = Some(f(size));
        }
        memo.clone().expect("set above").map_err(ObjectError::InvalidRange)
    };
    let placed = placement(cluster)?;
    let kh = key_hash(key);
    let mut attempts = 0;
    let (version, copies, k, mut fetched) = loop {
        let mut listing = list(cluster, &placed, key).await;
        // The holders given up on after the grace are waited for only if
        // the answer depends on them.
        let (version, parts) = loop {
            match newest(&listing, placed.code.data.into()) {
                Err(ObjectError::Unavailable(_)) if listing.hear_more().await => {}
                decided => break decided?,
            }
        };
        let hosts: Vec<u32> = parts.iter().map(|(_, h)| *h).collect();
        let addr_of: BTreeMap<u32, SocketAddr> = peers(cluster, &hosts).into_iter().map(|x| (x.host, x.addr)).collect();
        // Copies: any one that verifies. Coded: data shards first, then
        // parity; any k that verify.
        let mut wanted: Vec<(Part, u32)> = parts.iter().filter(|(p, _)| *p != Part::Tombstone).copied().collect();
        wanted.sort_unstable();
        let copies = wanted.iter().any(|(p, _)| matches!(p, Part::Copy(..)));
        let k = if copies { 1 } else { usize::from(placed.code.data) };
        if ranged && !copies {
            let direct = Direct { kh: kh.clone(), version, width: placed.code.width(), k, key_bytes: key.len() };
            if let Some(got) = direct.read(cluster, &wanted, &addr_of, &mut range_for).await {
                metrics::counter!("shardnode_object_range_reads_total", "path" => "direct").increment(1);
                return got;
            }
            metrics::counter!("shardnode_object_range_reads_total", "path" => "whole_shards").increment(1);
        }
        let fetched = fetch_hedged(cluster, &kh, version, &wanted, &addr_of, k, false).await;
        attempts += 1;
        // Shards listed a moment ago and gone now: an overwrite or delete
        // removed this version while it was read. Read what is newest now.
        if fetched.got.len() < k && fetched.gone > 0 && attempts < 3 {
            continue;
        }
        break (version, copies, k, fetched);
    };
    // A shard found damaged by this read is owed a rebuilt one: recorded
    // for this host's repair rounds, without holding up the answer.
    let bytes = fetched.manifest.as_ref().map_or(0, shard_bytes);
    for &(part, host) in &fetched.damaged {
        owe_damaged(cluster, &kh, version, part, host, bytes);
    }
    // A data shard that did not arrive in time (the read decodes without
    // it) may be slow or may be damaged: its fetch is left to finish in
    // the background to find out. On a healthy read the rest (parity)
    // are cancelled.
    let stragglers = std::mem::take(&mut fetched.stragglers);
    if !copies && (0..k).any(|i| !fetched.got.contains_key(&i)) {
        let (c, kh) = (Arc::clone(cluster), kh.clone());
        tokio::spawn(async move {
            let mut stragglers = stragglers;
            while let Some(Ok((part, host, r))) = stragglers.join_next().await {
                if matches!(r, Err(FetchError { damaged: true, .. })) {
                    owe_damaged(&c, &kh, version, part, host, bytes);
                }
            }
        });
    }
    let (got, manifest, failures) = (fetched.got, fetched.manifest, fetched.failures);
    let Some(manifest) = manifest.filter(|_| got.len() >= k) else {
        return Err(ObjectError::Unavailable(format!(
            "only {} of the {k} {} needed verified: {}",
            got.len(),
            if copies { "copy" } else { "shards" },
            failures.join("; ")
        )));
    };
    if copies {
        let data = got.into_values().next().expect("one copy");
        let r = range_for(manifest.size)?.unwrap_or(0..manifest.size);
        let bytes = data[r.start.min(manifest.size) as usize..r.end.min(manifest.size) as usize].to_vec();
        return Ok(Got { manifest, bytes, decoded: 0 });
    }
    let geometry = manifest.geometry();
    let avail: Vec<Option<&[u8]>> = (0..manifest.width()).map(|i| got.get(&i).map(Vec::as_slice)).collect();
    let decoded = (0..k).filter(|i| !got.contains_key(i)).count();
    let range = range_for(manifest.size)?;
    let whole = range.is_none();
    let r = range.unwrap_or(0..manifest.size);
    let bytes = ec::decode_range(&geometry, &avail, r).map_err(|e| ObjectError::Unavailable(e.to_string()))?;
    if whole && crc32c::crc32c(&bytes) != manifest.crc {
        return Err(ObjectError::Unavailable("the decoded object does not match its CRC; not returned".into()));
    }
    Ok(Got { manifest, bytes, decoded })
}

/// A range of a coded object read from only the data shards it covers,
/// and only their bytes in it: the manifest first (its length follows
/// from the key and the code), then each piece with a `range` request,
/// whose bytes the holder's store verified and the holder vouches for on
/// the wire with `x-range-crc32c`.
#[derive(Clone)]
struct Direct {
    kh: String,
    version: Version,
    width: usize,
    k: usize,
    key_bytes: usize,
}

impl Direct {
    /// The range read; `None` when it cannot be read this way (a holder
    /// missing or failing, a manifest of another shape): the caller then
    /// reads whole shards, hedged, and decodes.
    async fn read(
        &self,
        cluster: &Arc<Cluster>,
        wanted: &[(Part, u32)],
        addr_of: &BTreeMap<u32, SocketAddr>,
        range_for: &mut impl FnMut(u64) -> Result<Option<std::ops::Range<u64>>, ObjectError>,
    ) -> Option<Result<Got, ObjectError>> {
        let holder = |i: usize| {
            wanted
                .iter()
                .find(|(p, _)| matches!(p, Part::Shard(j, _) if *j == i))
                .and_then(|&(p, h)| Some((p, *addr_of.get(&h)?)))
        };
        let frame = 4 + Manifest::encoded_len(self.key_bytes, self.width) as u64;
        let (first, addr) = holder(0)?;
        let head = self.piece(cluster, addr, first, 0..frame).await?;
        if u32::from_le_bytes(head.get(..4)?.try_into().ok()?) as u64 != frame - 4 {
            return None;
        }
        let manifest = Manifest::decode(&head[4..]).ok()?;
        if manifest.version != self.version.clock
            || manifest.writer != self.version.writer
            || manifest.layout != Layout::Coded
            || usize::from(manifest.k) != self.k
        {
            return None;
        }
        let r = match range_for(manifest.size) {
            Ok(r) => r.unwrap_or(0..manifest.size),
            Err(e) => return Some(Err(e)),
        };
        let cell = u64::from(manifest.cell_bytes);
        if r.is_empty() || cell == 0 {
            return Some(Ok(Got { manifest, bytes: Vec::new(), decoded: 0 }));
        }
        let mut pieces = tokio::task::JoinSet::new();
        for i in r.start / cell..=(r.end - 1) / cell {
            let (part, addr) = holder(i as usize)?;
            let (lo, hi) = (r.start.max(i * cell) - i * cell, r.end.min((i + 1) * cell) - i * cell);
            let (c, d) = (Arc::clone(cluster), self.clone());
            pieces.spawn(async move { (i, d.piece(&c, addr, part, frame + lo..frame + hi).await) });
        }
        let mut got = BTreeMap::new();
        while let Some(done) = pieces.join_next().await {
            let (i, bytes) = done.ok()?;
            got.insert(i, bytes?);
        }
        let bytes: Vec<u8> = got.into_values().flatten().collect();
        Some(Ok(Got { manifest, bytes, decoded: 0 }))
    }

    /// Bytes `r` of a stored shard, checked against the CRC its holder
    /// sent for them.
    async fn piece(
        &self,
        cluster: &Arc<Cluster>,
        addr: SocketAddr,
        part: Part,
        r: std::ops::Range<u64>,
    ) -> Option<Vec<u8>> {
        let target = shard_path(&shard_key(&self.kh, self.version, part));
        let range = format!("bytes={}-{}", r.start, r.end - 1);
        // A holder slower than usual sends the read the hedged way.
        let patience = (4 * HEDGING.delay()).clamp(DIRECT_PATIENCE_MIN, READ_TIMEOUT);
        let a = peer::call_with(cluster, addr, "GET", &target, None, &[("range", &range)], patience).await.ok()?;
        let crc = format!("{:08x}", crc32c::crc32c(&a.body));
        (a.status == 206 && a.body.len() as u64 == r.end - r.start && a.header("x-range-crc32c") == Some(&crc))
            .then_some(a.body)
    }
}

/// Deletes an object: a tombstone newer than every version on the holders
/// of both candidate groups (at least k + 1 of them), then the data of
/// older versions. A later repair can never bring it back: readers see
/// the tombstone first.
pub async fn delete(cluster: &Arc<Cluster>, version_clock: u64, key: &[u8]) -> Result<Version, ObjectError> {
    let p = placement(cluster)?;
    let version = Version { clock: version_clock, writer: cluster.settings.host_id };
    let kh = key_hash(key);
    let hosts: BTreeSet<u32> =
        p.candidates(key).iter().flat_map(|&g| p.group(g).expect("a group").holders(&p.code).to_vec()).collect();
    let hosts: Vec<u32> = hosts.into_iter().collect();
    let mut marker = TOMBSTONE_MAGIC.to_vec();
    marker.extend_from_slice(key);
    let target = shard_path(&shard_key(&kh, version, Part::Tombstone));
    let mut writes = tokio::task::JoinSet::new();
    for peer in peers(cluster, &hosts) {
        let (c, target, marker) = (Arc::clone(cluster), target.clone(), marker.clone());
        writes.spawn(async move { peer::call(&c, peer.addr, "PUT", &target, Some(&marker), PUT_DEADLINE).await });
    }
    let mut ok = 0;
    while let Some(done) = writes.join_next().await {
        if matches!(done.expect("never panics"), Ok(a) if a.status == 201) {
            ok += 1;
        }
    }
    let quorum = usize::from(p.code.data) + 1;
    if ok < quorum {
        return Err(ObjectError::InsufficientHolders(format!(
            "the tombstone reached {ok} of {} holders (at least {quorum} are needed); retry the delete",
            hosts.len()
        )));
    }
    let c = Arc::clone(cluster);
    let key = key.to_vec();
    tokio::spawn(async move { remove_older(&c, &key, version).await });
    Ok(version)
}

/// Deletes the shards of every version older than `newer` (never a
/// tombstone: those stay so nothing older comes back). Best effort: what
/// is left is found again by the next write or delete.
async fn remove_older(cluster: &Arc<Cluster>, key: &[u8], newer: Version) {
    let Ok(p) = placement(cluster) else { return };
    let listing = list(cluster, &p, key).await;
    let kh = key_hash(key);
    for (v, parts) in listing.versions.range(..newer) {
        for (part, host) in parts.iter().filter(|(p, _)| *p != Part::Tombstone) {
            let Some(peer) = peers(cluster, &[*host]).pop() else { continue };
            let target = shard_path(&shard_key(&kh, *v, *part));
            if let Err(e) = peer::call(cluster, peer.addr, "DELETE", &target, None, READ_TIMEOUT).await {
                tracing::debug!(host, error = %format!("{e:#}"), "superseded shard not deleted yet");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_keys_round_trip_and_sort_by_version() {
        let kh = key_hash(b"photos/cat.jpg");
        assert_eq!(kh.len(), 32);
        for part in [Part::Shard(0, 7), Part::Shard(13, 65_535), Part::Copy(2, 0), Part::Tombstone] {
            let v = Version { clock: 0x1234_5678_9abc, writer: 7 };
            let k = shard_key(&kh, v, part);
            assert!(k.len() < 100 && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-'), "{k}");
            assert_eq!(parse_shard_key(&k, &kh), Some((v, part)));
            assert_eq!(parse_shard_key(&k, &key_hash(b"other")), None);
        }
        let older = shard_key(&kh, Version { clock: 9, writer: 100 }, Part::Shard(0, 3));
        let newer = shard_key(&kh, Version { clock: 10, writer: 1 }, Part::Shard(0, 3));
        assert!(older < newer, "keys sort as versions do");
    }

    #[test]
    fn the_newest_readable_version_wins_and_absence_needs_every_holder() {
        let v = |c| Version { clock: c, writer: 1 };
        let mut l = Listing {
            kh: String::new(),
            versions: BTreeMap::new(),
            unreachable: vec![],
            pending: tokio::task::JoinSet::new(),
        };
        l.versions.insert(v(1), (0..6).map(|i| (Part::Shard(i, 0), i as u32 + 1)).collect());
        l.versions.insert(v(2), (0..3).map(|i| (Part::Shard(i, 0), i as u32 + 1)).collect());
        assert_eq!(newest(&l, 4).unwrap().0, v(1), "an incomplete newer version is skipped");
        l.unreachable.push(5);
        assert!(matches!(newest(&l, 4), Err(ObjectError::Unavailable(_))), "it may be complete on holders not asked");
        l.unreachable.clear();
        l.versions.insert(v(3), vec![(Part::Tombstone, 1)]);
        assert!(matches!(newest(&l, 4), Err(ObjectError::NotFound)));
        // A newer write seen in part beyond a tombstone, with a holder
        // unheard: it may stand there complete, so absence is not proven.
        l.versions.insert(v(4), (0..2).map(|i| (Part::Shard(i, 0), i as u32 + 1)).collect());
        assert!(matches!(newest(&l, 4), Err(ObjectError::NotFound)), "all heard: the write is not acknowledged");
        l.unreachable.push(6);
        assert!(matches!(newest(&l, 4), Err(ObjectError::Unavailable(_))));
        let empty = Listing { unreachable: vec![3], versions: BTreeMap::new(), ..l };
        assert!(matches!(newest(&empty, 4), Err(ObjectError::Unavailable(_))));
    }
}
