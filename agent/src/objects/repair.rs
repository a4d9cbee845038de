//! Repair of object shards: those this host holds that its scrubber found
//! damaged, and those holders missed when this host acknowledged a write
//! on k + 1 of them (each recorded durably as an intent shard `r.<shard
//! key>.h<holder>` in this host's own store, delivered once the holder is
//! alive again), and those a read coordinated here found damaged on their
//! holder (recorded the same way).
//!
//! A damaged shard's key names its object's key hash, version, stripe
//! group and index (`Part`), so the repairer finds the siblings without
//! the damaged bytes: it fetches k of them from the group's other holders,
//! each verified against the manifest's PUT-time CRC, rebuilds the shard
//! (a copy is taken as it is), checks the rebuilt bytes against the CRC
//! the manifest recorded for that shard, and only then writes it back,
//! which takes it off the repair list. Nothing unverified is ever written.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use shardnode_cluster::ec;
use shardnode_cluster::manifest::Manifest;

use super::{fetch_hedged, frame, peers, shard_path, Part, Version};
use crate::api::App;
use crate::cluster::{peer, Cluster};

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
    let want = manifest.shards.get(index).ok_or("no such shard in the manifest")?.crc;
    let crc = crc32c::crc32c(&rebuilt);
    if crc != want {
        return Err(format!(
            "the rebuilt shard has CRC32C {crc:08x}, the object was written with {want:08x}: not written"
        ));
    }
    Ok(rebuilt)
}

/// Shard `key` rebuilt from its siblings (never from the holder `skip`,
/// which lacks it): the manifest and the verified bytes.
async fn rebuild(cluster: &Arc<Cluster>, key: &str, skip: u32) -> Result<(Manifest, Vec<u8>, u32), String> {
    let (kh, version, part) = parse_any(key).ok_or("not an object shard key")?;
    let (index, group, copy) = match part {
        Part::Shard(i, g) => (i, g, false),
        Part::Copy(i, g) => (i, g, true),
        Part::Tombstone => return Err("a damaged tombstone is not repaired yet".into()),
    };
    let placement = cluster.placement()?;
    let holders = placement
        .group(group)
        .ok_or("the key names a group the roster does not have")?
        .holders(&placement.code)
        .to_vec();
    let width = if copy { usize::from(placement.code.parity) + 1 } else { placement.code.width() };
    let wanted: Vec<(Part, u32)> = (0..width)
        .filter(|&i| i != index)
        .filter_map(|i| holders.get(i).map(|&h| (if copy { Part::Copy(i, group) } else { Part::Shard(i, group) }, h)))
        .filter(|(_, h)| *h != skip)
        .collect();
    let addr_of: BTreeMap<u32, SocketAddr> = peers(cluster, &holders).into_iter().map(|p| (p.host, p.addr)).collect();
    let need = if copy { 1 } else { usize::from(placement.code.data) };
    let fetched = fetch_hedged(cluster, &kh, version, &wanted, &addr_of, need).await;
    let manifest = fetched.manifest.filter(|_| fetched.got.len() >= need).ok_or_else(|| {
        format!("only {} of {need} siblings verified: {}", fetched.got.len(), fetched.failures.join("; "))
    })?;
    let rebuilt = verified_rebuild(&manifest, &fetched.got, index, copy)?;
    let holder = *holders.get(index).ok_or("no holder for the shard")?;
    Ok((manifest, rebuilt, holder))
}

/// Writes a rebuilt shard to `host`.
async fn write_back(
    cluster: &Arc<Cluster>,
    host: u32,
    key: &str,
    manifest: &Manifest,
    bytes: &[u8],
) -> Result<(), String> {
    let addr = peers(cluster, &[host]).pop().ok_or("the holder is not on the roster")?.addr;
    let a = peer::call(cluster, addr, "PUT", &shard_path(key), Some(&frame(manifest, bytes)), super::PUT_DEADLINE)
        .await
        .map_err(|e| format!("{e:#}"))?;
    if a.status != 201 {
        return Err(format!("writing it to host {host}: {} {}", a.status, a.code()));
    }
    Ok(())
}

/// Repairs one damaged shard of this host; the error says why not.
async fn repair_one(cluster: &Arc<Cluster>, key: &str) -> Result<(), String> {
    let me = cluster.settings.host_id;
    let (manifest, rebuilt, _) = rebuild(cluster, key, me).await?;
    write_back(cluster, me, key, &manifest, &rebuilt).await
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

/// Records, durably in this host's own store, that `host` missed shard
/// `key` of a write this host acknowledged on k + 1 holders; the repair
/// rounds deliver it once the holder is back.
pub async fn owe(cluster: &Arc<Cluster>, key: &str, host: u32) {
    let me = cluster.settings.host_id;
    let Some(mine) = peers(cluster, &[me]).pop() else { return };
    let target = shard_path(&intent_key(key, host));
    match peer::call(cluster, mine.addr, "PUT", &target, Some(b"owed"), super::PUT_DEADLINE).await {
        Ok(a) if a.status == 201 => {}
        Ok(a) => tracing::error!(key, host, status = a.status, "cannot record a shard owed to a holder"),
        Err(e) => tracing::error!(key, host, error = %format!("{e:#}"), "cannot record a shard owed to a holder"),
    }
}

/// Delivers the shards owed to holders that are back: rebuilt from their
/// siblings, written to the holder, the intent then deleted.
async fn deliver_owed(app: &App, cluster: &Arc<Cluster>) -> (usize, usize) {
    let (mut delivered, mut failed) = (0, 0);
    let me = cluster.settings.host_id;
    let Some(mine) = peers(cluster, &[me]).pop() else { return (0, 0) };
    for slot in &app.node.slots {
        let Some(store) = &slot.store else { continue };
        let Ok(intents) = crate::node::list(store, b"r.", None, 1000).await else { continue };
        for (raw, _) in intents {
            let Ok(intent) = String::from_utf8(raw) else { continue };
            let Some((key, host)) = parse_intent(&intent) else { continue };
            let alive = host == me || cluster.gossip().state_of(host).is_some_and(|(_, s)| s == foca::State::Alive);
            if !alive {
                continue;
            }
            let result = async {
                let (manifest, rebuilt, holder) = rebuild(cluster, key, host).await?;
                if holder != host {
                    return Err(format!("the roster now gives the shard to host {holder}, not {host}"));
                }
                write_back(cluster, host, key, &manifest, &rebuilt).await
            }
            .await;
            match result {
                Ok(()) => {
                    delivered += 1;
                    metrics::counter!("shardnode_object_repairs_total", "outcome" => "delivered").increment(1);
                    tracing::info!(key, host, "shard owed to a holder delivered");
                    let _ =
                        peer::call(cluster, mine.addr, "DELETE", &shard_path(&intent), None, super::READ_TIMEOUT).await;
                }
                Err(why) => {
                    failed += 1;
                    tracing::warn!(key, host, %why, "shard owed to a holder not delivered yet");
                }
            }
        }
    }
    (delivered, failed)
}

/// One round: the shards owed to holders, then every device's repair
/// list.
pub async fn round(app: &App, cluster: &Arc<Cluster>) -> (usize, usize) {
    let (mut repaired, mut failed) = deliver_owed(app, cluster).await;
    for slot in &app.node.slots {
        let Some(store) = &slot.store else { continue };
        let Ok(damaged) = crate::node::damaged_shards(store).await else { continue };
        for d in damaged.iter().filter(|d| d.key.starts_with("o.")) {
            match repair_one(cluster, &d.key).await {
                Ok(()) => {
                    repaired += 1;
                    metrics::counter!("shardnode_object_repairs_total", "outcome" => "repaired").increment(1);
                    tracing::warn!(key = %d.key, device = slot.id, "damaged object shard rebuilt from its siblings");
                }
                Err(why) => {
                    failed += 1;
                    metrics::counter!("shardnode_object_repairs_total", "outcome" => "failed").increment(1);
                    tracing::error!(key = %d.key, device = slot.id, %why, "damaged object shard not repaired");
                }
            }
        }
    }
    (repaired, failed)
}

/// Repairs forever, a round every `every`.
pub async fn run(app: Arc<App>, cluster: Arc<Cluster>, every: Duration) {
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
