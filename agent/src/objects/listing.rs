//! Listing an object's shards on its holders, and choosing the version a
//! reader may use (`newest`): absence only when proven.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use shardnode_cluster::placement::Placement;

use super::fetch::LISTINGS;
use super::{key_hash, parse_shard_key, peers, ObjectError, Part, Version, READ_TIMEOUT};
use crate::cluster::peer::{self, Answer};
use crate::cluster::Cluster;

/// What the holders of an object's candidate groups list for it.
pub(super) struct Listing {
    pub(super) kh: String,
    /// Version → (parts found, hosts holding them).
    pub(super) versions: BTreeMap<Version, Vec<(Part, u32)>>,
    /// Holders that could not be asked, or have not answered yet.
    pub(super) unreachable: Vec<u32>,
    /// The asks still in flight (holders given up on after the grace,
    /// whose answers `hear_more` still takes).
    pub(super) pending: tokio::task::JoinSet<(u32, anyhow::Result<Answer>)>,
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
    pub(super) async fn hear_more(&mut self) -> bool {
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

pub(super) async fn list(cluster: &Arc<Cluster>, p: &Placement, key: &[u8]) -> Listing {
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
pub(super) async fn list_hosts(cluster: &Arc<Cluster>, hosts: &[u32], kh: &str, parity: usize) -> Listing {
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
pub(super) fn newest(listing: &Listing, k: usize) -> Result<(Version, Vec<(Part, u32)>), ObjectError> {
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

#[cfg(test)]
mod tests {
    use super::*;

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
