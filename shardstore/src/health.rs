//! Drive health: what a device's store counts (I/O errors, checksum
//! failures, latency of reads and of group commits) and the rules that
//! turn those figures into a health state with hysteresis.
//!
//! The store thread updates [`DeviceCounters`] (atomics, nothing per I/O
//! but an increment); whoever watches the device (the agent) takes a
//! [`CounterSnapshot`] once per interval and feeds it to a
//! [`HealthTracker`]. The rules, with the defaults of [`HealthRules`]:
//!
//! - **suspect** when, over the last `window_intervals` intervals, the
//!   device had `io_errors_suspect` I/O errors or `checksum_failures_suspect`
//!   checksum failures, or when for `slow_intervals_suspect` intervals in a
//!   row its median read or commit latency was `slow_factor` times its own
//!   baseline (the running median of its healthy intervals). An interval
//!   with fewer than `latency_samples_min` operations of a kind says nothing
//!   about that kind, so one slow I/O, or an idle device, changes nothing.
//! - back to **healthy** only after `recovery_intervals` clean intervals in
//!   a row (no error, not slow): hysteresis, so a device at the edge does
//!   not flap.
//! - **fenced** (no new shards placed; reads go on): set by an operator, or
//!   automatically when a device turns suspect and `auto_fence` is on. A
//!   fence stays until an operator lifts it; the evidence then starts over.
//! - **failed**: the store stopped (it could not open, or a failed flush
//!   poisoned it). Only a restart clears it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::Serialize;

/// Latency buckets: four per power of two of microseconds, up to 2^32 µs.
const SUB_BUCKETS: usize = 4;
pub const LATENCY_BUCKETS: usize = 32 * SUB_BUCKETS;

/// Bucket of a latency in microseconds: `4 * floor(log2(us))` plus the two
/// bits after the leading one.
fn bucket_of(us: u64) -> usize {
    let us = us.max(1);
    let log = 63 - us.leading_zeros() as usize;
    let sub = if log >= 2 { ((us >> (log - 2)) & 3) as usize } else { (us << (2 - log)) as usize & 3 };
    (log * SUB_BUCKETS + sub).min(LATENCY_BUCKETS - 1)
}

/// The smallest latency (µs) a bucket holds.
fn bucket_floor_us(b: usize) -> u64 {
    let (log, sub) = (b / SUB_BUCKETS, (b % SUB_BUCKETS) as u64);
    if log >= 2 {
        (4 + sub) << (log - 2)
    } else {
        ((4 + sub) >> (2 - log)).max(1)
    }
}

/// A latency histogram of atomics.
#[derive(Debug)]
pub struct LatencyCounts([AtomicU64; LATENCY_BUCKETS]);

impl Default for LatencyCounts {
    fn default() -> Self {
        LatencyCounts(std::array::from_fn(|_| AtomicU64::new(0)))
    }
}

impl LatencyCounts {
    pub fn record(&self, latency: Duration) {
        let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.0[bucket_of(us)].fetch_add(1, Ordering::Relaxed);
    }

    fn snapshot(&self) -> [u64; LATENCY_BUCKETS] {
        std::array::from_fn(|i| self.0[i].load(Ordering::Relaxed))
    }
}

/// What a store counts about its device.
#[derive(Debug, Default)]
pub struct DeviceCounters {
    /// Operations the device failed (reads, writes, flushes, scrub reads).
    pub io_errors: AtomicU64,
    /// Data that came back but did not match its checksum (gets, scrub).
    pub checksum_failures: AtomicU64,
    /// Gets, from start to verified bytes.
    pub read_latency: LatencyCounts,
    /// Group commits, from start to durable.
    pub commit_latency: LatencyCounts,
}

impl DeviceCounters {
    pub fn snapshot(&self) -> CounterSnapshot {
        CounterSnapshot {
            io_errors: self.io_errors.load(Ordering::Relaxed),
            checksum_failures: self.checksum_failures.load(Ordering::Relaxed),
            read_latency: self.read_latency.snapshot(),
            commit_latency: self.commit_latency.snapshot(),
        }
    }
}

/// The counters at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CounterSnapshot {
    pub io_errors: u64,
    pub checksum_failures: u64,
    pub read_latency: [u64; LATENCY_BUCKETS],
    pub commit_latency: [u64; LATENCY_BUCKETS],
}

/// Median (µs, the floor of its bucket) of the operations between two
/// snapshots' histograms, and how many there were.
fn interval_median(now: &[u64; LATENCY_BUCKETS], before: &[u64; LATENCY_BUCKETS]) -> (u64, u64) {
    let counts: Vec<u64> = now.iter().zip(before).map(|(a, b)| a.saturating_sub(*b)).collect();
    let total: u64 = counts.iter().sum();
    let mut seen = 0;
    for (b, n) in counts.iter().enumerate() {
        seen += n;
        if total > 0 && seen * 2 >= total {
            return (bucket_floor_us(b), total);
        }
    }
    (0, total)
}

/// Thresholds; see the module documentation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HealthRules {
    pub window_intervals: usize,
    pub io_errors_suspect: u64,
    pub checksum_failures_suspect: u64,
    pub slow_factor: f64,
    pub latency_samples_min: u64,
    pub slow_intervals_suspect: u32,
    pub recovery_intervals: u32,
    /// Healthy intervals needed before the baseline is trusted.
    pub baseline_intervals_min: u32,
    pub auto_fence: bool,
}

impl Default for HealthRules {
    /// For one observation per second: errors over a minute, five slow
    /// seconds in a row, five clean minutes to recover.
    fn default() -> Self {
        HealthRules {
            window_intervals: 60,
            io_errors_suspect: 3,
            checksum_failures_suspect: 3,
            slow_factor: 5.0,
            latency_samples_min: 8,
            slow_intervals_suspect: 5,
            recovery_intervals: 300,
            baseline_intervals_min: 10,
            auto_fence: true,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HealthState {
    Healthy,
    Suspect,
    Fenced,
    Failed,
}

impl HealthState {
    pub fn name(self) -> &'static str {
        match self {
            HealthState::Healthy => "healthy",
            HealthState::Suspect => "suspect",
            HealthState::Fenced => "fenced",
            HealthState::Failed => "failed",
        }
    }
}

/// A change of state and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    pub from: HealthState,
    pub to: HealthState,
    pub reason: String,
}

/// A running baseline of one latency kind: the median of recent healthy
/// intervals' medians (robust to a few odd intervals).
#[derive(Debug, Default, Clone)]
struct Baseline {
    medians: std::collections::VecDeque<u64>,
}

impl Baseline {
    const KEEP: usize = 300;

    fn value(&self, min: u32) -> Option<u64> {
        if self.medians.len() < min as usize {
            return None;
        }
        let mut v: Vec<u64> = self.medians.iter().copied().collect();
        v.sort_unstable();
        Some(v[v.len() / 2])
    }

    fn add(&mut self, median: u64) {
        if self.medians.len() == Self::KEEP {
            self.medians.pop_front();
        }
        self.medians.push_back(median);
    }
}

/// One device's health, fed one snapshot per interval.
#[derive(Debug)]
pub struct HealthTracker {
    rules: HealthRules,
    state: HealthState,
    reason: String,
    last: Option<CounterSnapshot>,
    /// Errors of each recent interval (I/O, checksum), newest last.
    window: std::collections::VecDeque<(u64, u64)>,
    /// Baselines of read and of commit latency.
    baselines: [Baseline; 2],
    slow_streak: u32,
    clean_streak: u32,
}

impl HealthTracker {
    pub fn new(rules: HealthRules) -> HealthTracker {
        HealthTracker {
            rules,
            state: HealthState::Healthy,
            reason: String::new(),
            last: None,
            window: std::collections::VecDeque::new(),
            baselines: [Baseline::default(), Baseline::default()],
            slow_streak: 0,
            clean_streak: 0,
        }
    }

    pub fn state(&self) -> HealthState {
        self.state
    }

    /// Why the device is in its state (empty when healthy).
    pub fn reason(&self) -> &str {
        &self.reason
    }

    fn go(&mut self, to: HealthState, reason: String) -> Option<Transition> {
        if to == self.state {
            return None;
        }
        let t = Transition { from: self.state, to, reason: reason.clone() };
        self.state = to;
        self.reason = if to == HealthState::Healthy { String::new() } else { reason };
        Some(t)
    }

    /// An operator fenced or unfenced the device. Unfencing starts the
    /// evidence over (a still-bad device is caught again by new evidence).
    pub fn operator_fence(&mut self, fenced: bool) -> Option<Transition> {
        if self.state == HealthState::Failed {
            return None;
        }
        if fenced {
            return self.go(HealthState::Fenced, "fenced by an operator".to_owned());
        }
        self.window.clear();
        self.slow_streak = 0;
        self.clean_streak = 0;
        self.go(HealthState::Healthy, "unfenced by an operator".to_owned())
    }

    /// The store stopped serving: failed until a restart.
    pub fn failed(&mut self, why: &str) -> Option<Transition> {
        self.go(HealthState::Failed, why.to_owned())
    }

    /// One interval's evidence. Returns the transition it caused, if any
    /// (at most one per call: suspect, then fenced on the next).
    pub fn observe(&mut self, now: &CounterSnapshot) -> Option<Transition> {
        let before = self.last.replace(now.clone())?;
        if self.state == HealthState::Failed {
            return None;
        }
        let io = now.io_errors.saturating_sub(before.io_errors);
        let sums = now.checksum_failures.saturating_sub(before.checksum_failures);
        if self.window.len() == self.rules.window_intervals {
            self.window.pop_front();
        }
        self.window.push_back((io, sums));
        let (window_io, window_sums) = self.window.iter().fold((0, 0), |(a, b), (x, y)| (a + x, b + y));

        let mut slow = None;
        let kinds = [
            ("read", &now.read_latency, &before.read_latency),
            ("commit", &now.commit_latency, &before.commit_latency),
        ];
        let mut medians = [None, None];
        for (i, (kind, a, b)) in kinds.into_iter().enumerate() {
            let (median, n) = interval_median(a, b);
            if n < self.rules.latency_samples_min {
                continue;
            }
            match self.baselines[i].value(self.rules.baseline_intervals_min) {
                Some(base) if median as f64 >= self.rules.slow_factor * base.max(1) as f64 => {
                    let times = median as f64 / base.max(1) as f64;
                    slow.get_or_insert(format!("median {kind} latency {median} µs, {times:.0}x its usual {base} µs"));
                }
                _ => medians[i] = Some(median),
            }
        }
        // Only ordinary intervals of a healthy device teach the baseline.
        if self.state == HealthState::Healthy && slow.is_none() && io == 0 && sums == 0 {
            for (baseline, median) in self.baselines.iter_mut().zip(medians) {
                if let Some(m) = median {
                    baseline.add(m);
                }
            }
        }
        self.slow_streak = if slow.is_some() { self.slow_streak + 1 } else { 0 };
        let clean = io == 0 && sums == 0 && slow.is_none();
        self.clean_streak = if clean { self.clean_streak + 1 } else { 0 };

        let evidence = if window_io >= self.rules.io_errors_suspect {
            Some(format!("{window_io} I/O errors in the last {} intervals", self.window.len()))
        } else if window_sums >= self.rules.checksum_failures_suspect {
            Some(format!("{window_sums} checksum failures in the last {} intervals", self.window.len()))
        } else if self.slow_streak >= self.rules.slow_intervals_suspect {
            slow.map(|s| format!("{s}, {} intervals in a row", self.slow_streak))
        } else {
            None
        };
        match self.state {
            HealthState::Healthy => evidence.and_then(|why| self.go(HealthState::Suspect, why)),
            HealthState::Suspect if self.rules.auto_fence => {
                let why = format!("fenced automatically: {}", self.reason);
                self.go(HealthState::Fenced, why)
            }
            HealthState::Suspect if self.clean_streak >= self.rules.recovery_intervals => {
                let why = format!("{} clean intervals in a row", self.clean_streak);
                self.window.clear();
                self.go(HealthState::Healthy, why)
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_ordered_and_within_a_quarter_octave() {
        let mut last = 0;
        for us in 1..100_000u64 {
            let b = bucket_of(us);
            assert!(b >= last, "{us}");
            last = b;
            let floor = bucket_floor_us(b);
            assert!(floor <= us && us < floor + floor / 4 + 2, "{us} in bucket {b} from {floor}");
        }
    }
}
