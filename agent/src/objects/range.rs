//! Range reads of coded objects from only the pieces of the data shards
//! they cover (`Direct`).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use shardnode_cluster::manifest::{Layout, Manifest};

use super::fetch::HEDGING;
use super::{shard_key, shard_path, Got, ObjectError, Part, Version, DIRECT_PATIENCE_MIN, READ_TIMEOUT};
use crate::cluster::peer;
use crate::cluster::Cluster;

/// A range of a coded object read from only the data shards it covers,
/// and only their bytes in it: the manifest first (its length follows
/// from the key and the code), then each piece with a `range` request,
/// whose bytes the holder's store verified and the holder vouches for on
/// the wire with `x-range-crc32c`.
#[derive(Clone)]
pub(super) struct Direct {
    pub(super) kh: String,
    pub(super) version: Version,
    pub(super) width: usize,
    pub(super) k: usize,
    pub(super) key_bytes: usize,
}

impl Direct {
    /// The range read; `None` when it cannot be read this way (a holder
    /// missing or failing, a manifest of another shape): the caller then
    /// reads whole shards, hedged, and decodes.
    pub(super) async fn read(
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
