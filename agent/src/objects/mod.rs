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

mod fetch;
mod listing;
mod range;
pub mod repair;
mod repairer;
pub mod routes;

use fetch::{fetch_hedged, FetchError};
use listing::{list, list_hosts, newest};
use range::Direct;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use shardnode_cluster::ec::{self, Geometry};
use shardnode_cluster::manifest::{Layout, Manifest, ShardRef};
use shardnode_cluster::placement::Placement;
use shardnode_cluster::records::Body;
use shardstore::store::SHARD_SIZE_BYTES_MAX;

use crate::cluster::peer;
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

/// An object read: its manifest, and the bytes asked for.
#[derive(Debug)]
pub struct Got {
    pub manifest: Manifest,
    pub bytes: Vec<u8>,
    /// Shards decoded from parity (0 on a healthy read).
    pub decoded: usize,
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
}
