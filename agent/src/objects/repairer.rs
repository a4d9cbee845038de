//! This host's repairer (`repair.rs` runs it): the token bucket that
//! throttles repairs, the back-off after busy holders, and the queue and
//! counters `GET /v1/repairs` shows.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::repair::Entry;

/// A token bucket of bytes: `rate` per second, at most one second's worth
/// saved. A repair larger than that runs once the bucket is not in debt,
/// and leaves it in debt (the average rate holds).
#[derive(Debug)]
struct Bucket {
    rate: u64,
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn refill(&mut self, now: Instant) {
        let dt = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + dt * self.rate as f64).min(self.rate as f64);
        self.at = now;
    }

    /// How long to wait before spending (`None`: paused, rate 0).
    fn wait(&mut self, now: Instant) -> Option<Duration> {
        self.refill(now);
        if self.rate == 0 {
            return None;
        }
        Some(if self.tokens >= 0.0 { Duration::ZERO } else { Duration::from_secs_f64(-self.tokens / self.rate as f64) })
    }
}

/// The queue as last scanned, and what the repairs did.
#[derive(Debug, Default, Serialize)]
pub struct Status {
    pub rounds: u64,
    pub repaired: u64,
    pub failed: u64,
    pub obsolete: u64,
    pub bytes_repaired: u64,
    /// Milliseconds the repairer is backing off after a `503 Busy`.
    pub backoff_ms: u64,
    pub queue: Vec<Entry>,
    /// Devices the last scan could not read (not open, or their repair
    /// list or owed shards unreadable): the queue lacks whatever they
    /// hold, so it is not known whole.
    pub unscanned_devices: Vec<Unscanned>,
}

/// A device the repair scan could not read, and why.
#[derive(Debug, Clone, Serialize)]
pub struct Unscanned {
    pub device: usize,
    pub reason: String,
}

/// This host's repairer: throttle, back-off and the queue it shows.
#[derive(Debug)]
pub struct Repairer {
    bucket: Mutex<Bucket>,
    pub(super) status: Mutex<Status>,
    /// Repair errors by shard key, kept across rounds for the queue view.
    pub(super) errors: Mutex<BTreeMap<String, (u32, String)>>,
    /// No repair starts before this (holders answered `503 Busy`); rounds
    /// still scan and show the queue meanwhile.
    pub(super) backoff_until: Mutex<Option<Instant>>,
}

impl Repairer {
    pub fn new(bytes_per_second: u64) -> Repairer {
        Repairer {
            bucket: Mutex::new(Bucket { rate: bytes_per_second, tokens: 0.0, at: Instant::now() }),
            status: Mutex::default(),
            errors: Mutex::default(),
            backoff_until: Mutex::default(),
        }
    }

    pub fn rate(&self) -> u64 {
        self.bucket.lock().expect("never poisoned").rate
    }

    /// Changes the throttle at once (0 pauses repairs).
    pub fn set_rate(&self, bytes_per_second: u64) {
        let mut b = self.bucket.lock().expect("never poisoned");
        b.refill(Instant::now());
        b.rate = bytes_per_second;
        b.tokens = b.tokens.min(bytes_per_second as f64);
        metrics::gauge!("shardnode_repair_rate_bytes_per_second").set(bytes_per_second as f64);
    }

    /// The queue and counters as JSON.
    pub fn view(&self) -> serde_json::Value {
        let s = self.status.lock().expect("never poisoned");
        let mut v = serde_json::to_value(&*s).expect("plain data");
        v["rate_bytes_per_second"] = self.rate().into();
        let (by, at_risk) = summarize(&s.queue);
        v["by_redundancy"] = serde_json::to_value(by).expect("plain data");
        v["stripes_at_risk"] = serde_json::to_value(at_risk).expect("plain data");
        v
    }

    /// Waits until the bucket allows `bytes` more, and spends them; false
    /// (nothing spent) if repairs are paused meanwhile. A wait is at most a
    /// second at a time, so a rate changed meanwhile takes effect.
    pub(super) async fn spend(&self, bytes: u64) -> bool {
        loop {
            let wait = self.bucket.lock().expect("never poisoned").wait(Instant::now());
            match wait {
                Some(d) if d.is_zero() => break,
                Some(d) => tokio::time::sleep(d.min(Duration::from_secs(1))).await,
                None => return false,
            }
        }
        self.bucket.lock().expect("never poisoned").tokens -= bytes as f64;
        true
    }
}

/// Shards and bytes queued by remaining redundancy (0 for ≤ 0), and the
/// stripes at risk (redundancy 0, or 1).
pub(super) fn summarize(queue: &[Entry]) -> (BTreeMap<i64, (u64, u64)>, BTreeMap<i64, u64>) {
    let mut by: BTreeMap<i64, (u64, u64)> = BTreeMap::new();
    let mut stripes: BTreeMap<String, i64> = BTreeMap::new();
    for e in queue {
        let r = e.redundancy.max(0);
        let slot = by.entry(r).or_default();
        slot.0 += 1;
        slot.1 += e.bytes;
        let stripe = e.key.rsplit_once('.').map_or(e.key.as_str(), |(s, _)| s).to_owned();
        let worst = stripes.entry(stripe).or_insert(r);
        *worst = (*worst).min(r);
    }
    let mut at_risk = BTreeMap::from([(0, 0), (1, 0)]);
    for r in stripes.into_values().filter(|r| *r <= 1) {
        *at_risk.entry(r).or_default() += 1;
    }
    (by, at_risk)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::objects::repair::{entry, Source};
    use std::sync::Arc;

    #[test]
    fn the_bucket_holds_the_rate_and_zero_pauses() {
        let t0 = Instant::now();
        let mut b = Bucket { rate: 1000, tokens: 0.0, at: t0 };
        assert_eq!(b.wait(t0), Some(Duration::ZERO), "not in debt");
        b.tokens -= 3000.0; // one large repair
        assert_eq!(b.wait(t0), Some(Duration::from_secs(3)), "the debt is paid at the rate");
        assert_eq!(b.wait(t0 + Duration::from_secs(3)), Some(Duration::ZERO));
        // At most one second is saved up.
        assert_eq!(b.wait(t0 + Duration::from_secs(100)), Some(Duration::ZERO));
        assert!((b.tokens - 1000.0).abs() < 1e-6, "{}", b.tokens);
        b.rate = 0;
        assert_eq!(b.wait(t0 + Duration::from_secs(101)), None, "paused");
    }

    #[tokio::test]
    async fn a_pause_releases_a_repair_waiting_for_the_throttle() {
        let r = Arc::new(Repairer::new(1000));
        assert!(r.spend(5000).await, "not in debt: spent at once, leaving a 5 s debt");
        let waiting = {
            let r = Arc::clone(&r);
            tokio::spawn(async move { r.spend(1).await })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        r.set_rate(0);
        // Released within the second it sleeps at most, not after the debt.
        let spent = tokio::time::timeout(Duration::from_secs(3), waiting).await.expect("released").unwrap();
        assert!(!spent, "paused: nothing spent");
        assert!(!Repairer::new(0).spend(1).await, "paused from the start");
    }

    #[test]
    fn the_summary_counts_bytes_by_redundancy_and_stripes_at_risk() {
        let e = |key: &str, r: i64, bytes: u64| {
            let mut x = entry(key.into(), 1, Source::Put, bytes, 0, None);
            x.redundancy = r;
            x
        };
        let q = [
            e("o.aa.0000000000000001-00000001.s0g1", 0, 10),
            e("o.aa.0000000000000001-00000001.s1g1", 0, 10),
            e("o.bb.0000000000000001-00000001.s0g1", 1, 20),
            e("o.cc.0000000000000001-00000001.c0g1", 2, 5),
            e("o.dd.0000000000000001-00000001.s0g1", -1, 7),
        ];
        let (by, at_risk) = summarize(&q);
        assert_eq!(by[&0], (3, 27), "a lost stripe counts as redundancy 0");
        assert_eq!(by[&1], (1, 20));
        assert_eq!(by[&2], (1, 5));
        assert_eq!(at_risk[&0], 2, "two stripes, not three shards");
        assert_eq!(at_risk[&1], 1);
    }
}
