//! Shard fetches: one verified against its manifest (`fetch`), and k of
//! them hedged against the peers' recent latency (`fetch_hedged`).

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use shardnode_cluster::manifest::{Layout, Manifest};

use super::{shard_key, shard_path, unframe, Part, Version, READ_TIMEOUT};
use crate::cluster::peer::{self, Answer};
use crate::cluster::Cluster;

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

pub(super) static HEDGING: Hedging = Hedging::new();
/// The same for listings (small answers), which set how long a listing
/// waits for its last m holders.
pub(super) static LISTINGS: Hedging = Hedging::new();

impl Hedging {
    const fn new() -> Hedging {
        Hedging { recent: std::sync::Mutex::new(std::collections::VecDeque::new()) }
    }

    pub(super) fn record(&self, d: Duration) {
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

/// Fetches one stored shard and checks it against its manifest: the
/// shard's own CRC recorded at PUT time, and the version asked for.
pub(super) async fn fetch(
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
pub(super) struct FetchError {
    pub(super) why: String,
    pub(super) damaged: bool,
    pub(super) busy: bool,
    /// The holder no longer has it (`404`).
    pub(super) gone: bool,
}

/// What a hedged fetch gathered: the verified parts by index, the
/// manifest they share, and why the others failed.
pub(super) struct Fetched {
    pub(super) got: BTreeMap<usize, Vec<u8>>,
    pub(super) manifest: Option<Manifest>,
    pub(super) failures: Vec<String>,
    /// Parts whose holders have them damaged.
    pub(super) damaged: Vec<(Part, u32)>,
    /// Holders that answered a repair read `503 Busy`.
    pub(super) busy: Vec<u32>,
    /// Parts whose holders no longer have them.
    pub(super) gone: usize,
    /// Fetches still in flight when enough had verified (the caller
    /// cancels them, or lets them finish to learn whether they were
    /// damaged).
    pub(super) stragglers: tokio::task::JoinSet<Straggler>,
}

pub(super) type Straggler = (Part, u32, Result<(Manifest, Vec<u8>), FetchError>);

/// Fetches `need` of `wanted` (in order: the first ones are preferred):
/// `need + 1` at once, one more after each failure, and one more whenever
/// the answers are slower than the peers' recent 95th percentile (a
/// hedge). Stops at `need` verified and cancels the rest. A `background`
/// (repair) fetch asks the holders to serve it only with room their
/// foreground reads leave (`?priority=background`, else `503 Busy`).
pub(super) async fn fetch_hedged(
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
