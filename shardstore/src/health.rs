//! Drive health: what a device's store counts (I/O errors, checksum
//! failures, latency of reads and of group commits, by operation size)
//! and the rules that turn those figures into a health state with
//! hysteresis.
//!
//! The store thread updates [`DeviceCounters`] (atomics, nothing per I/O
//! but an increment); whoever watches the devices (the agent) takes a
//! [`CounterSnapshot`] of each once per interval and feeds them all to
//! [`judge_host`]. The rules, with the defaults of [`HealthRules`]:
//!
//! - **suspect** when the device is stalled at the interval's end (an
//!   operation in flight for longer than its stall threshold, see
//!   [`crate::device::StallWatch`]: a hung drive records no latency at
//!   all, so this is the only evidence it leaves); or when, over the last
//!   `window_intervals` intervals, the
//!   device had `io_errors_suspect` I/O errors or `checksum_failures_suspect`
//!   checksum failures, or when for `slow_intervals_suspect` intervals in a
//!   row it was slow at the same work. Latency is judged per kind (reads,
//!   commits) and per size class of the operation ([`SIZE_CLASSES`]), so a
//!   switch from small reads to large writes compares like with like. A
//!   device is slow in a class when its median is `slow_factor` times the
//!   median of its sibling devices' medians in that class (the host's
//!   other devices doing the same work): when every device slows down
//!   together, the cause is the workload or the host, never one drive.
//!   Only when no sibling did that work in the interval is the device
//!   compared with its own usual median (the running median of its healthy
//!   intervals). An interval with fewer than `latency_samples_min`
//!   operations of a kind and class says nothing about it, so one slow I/O,
//!   or an idle device, changes nothing.
//! - back to **healthy** only after `recovery_intervals` clean intervals in
//!   a row (no error, not slow, not stalled): hysteresis, so a device at the edge does
//!   not flap.
//! - **fenced** (no new shards placed; reads go on): set by an operator, or
//!   automatically when a device is suspect and `auto_fence` is on, but
//!   only while the host's devices that take no writes (fenced or failed)
//!   stay within [`auto_fence_limit`]: a quarter of the devices (at least
//!   one), and never the last writable device. A local judgment can thus
//!   take at most a bounded share of a host out of write service; beyond
//!   it a device stays suspect for an operator (or, later, the cluster's
//!   guardrail) to decide. A fence stays until an operator lifts it; the
//!   evidence then starts over.
//! - **failed**: the store stopped (it could not open, or a failed flush
//!   poisoned it). Only a restart clears it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use crate::device::StallWatch;

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

/// Size classes of operations whose latencies are compared with each
/// other: up to 16 KiB, 256 KiB, 4 MiB, and larger (a get's bytes, a group
/// commit's bytes).
pub const SIZE_CLASSES: usize = 4;
const SIZE_CLASS_LIMITS_BYTES: [u64; SIZE_CLASSES - 1] = [16 << 10, 256 << 10, 4 << 20];

/// The size class of an operation of `bytes`.
pub fn size_class(bytes: u64) -> usize {
    SIZE_CLASS_LIMITS_BYTES.iter().position(|&limit| bytes <= limit).unwrap_or(SIZE_CLASSES - 1)
}

/// One latency histogram per size class.
#[derive(Debug, Default)]
pub struct ClassedLatency([LatencyCounts; SIZE_CLASSES]);

impl ClassedLatency {
    /// An operation of `bytes` took `latency`.
    pub fn record(&self, latency: Duration, bytes: u64) {
        self.0[size_class(bytes)].record(latency);
    }

    fn snapshot(&self) -> [[u64; LATENCY_BUCKETS]; SIZE_CLASSES] {
        std::array::from_fn(|c| self.0[c].snapshot())
    }
}

/// What a store counts about its device.
#[derive(Debug, Default)]
pub struct DeviceCounters {
    /// Operations the device failed (reads, writes, flushes, scrub reads).
    pub io_errors: AtomicU64,
    /// Data that came back but did not match its checksum (gets, scrub).
    pub checksum_failures: AtomicU64,
    /// Gets, from start to verified bytes, by the get's size.
    pub read_latency: ClassedLatency,
    /// Group commits, from start to durable, by the batch's bytes.
    pub commit_latency: ClassedLatency,
    /// Operations the device stopped completing (published by the device
    /// itself while the store thread waits on it: a stalled operation
    /// blocks that thread, and no latency is recorded for it).
    pub io_stall: Arc<StallWatch>,
}

impl DeviceCounters {
    pub fn snapshot(&self) -> CounterSnapshot {
        CounterSnapshot {
            io_errors: self.io_errors.load(Ordering::Relaxed),
            checksum_failures: self.checksum_failures.load(Ordering::Relaxed),
            io_stalled_ms: self.io_stall.stalled_for().map_or(0, |d| d.as_millis() as u64),
            io_stalls: self.io_stall.stalls(),
            latency: [self.read_latency.snapshot(), self.commit_latency.snapshot()],
        }
    }
}

/// Latency kinds, in the order of [`CounterSnapshot::latency`].
const KINDS: [&str; 2] = ["read", "commit"];

/// The counters at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CounterSnapshot {
    pub io_errors: u64,
    pub checksum_failures: u64,
    /// How long the device's oldest operation in flight has been waiting,
    /// while it is stalled ([`StallWatch`]); 0 when not.
    pub io_stalled_ms: u64,
    /// Stalls since the device was opened.
    pub io_stalls: u64,
    /// Histograms by kind (read, commit) and size class.
    pub latency: [[[u64; LATENCY_BUCKETS]; SIZE_CLASSES]; 2],
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

impl CounterSnapshot {
    /// The latency (µs, the floor of its bucket) under which a share `q`
    /// of one kind's operations (0 read, 1 commit) fell since `before`
    /// (since start without one), all sizes together; 0 with none.
    pub fn interval_quantile_us(&self, before: Option<&CounterSnapshot>, kind: usize, q: f64) -> u64 {
        let mut counts = [0u64; LATENCY_BUCKETS];
        for class in 0..SIZE_CLASSES {
            for (b, n) in counts.iter_mut().enumerate() {
                let earlier = before.map_or(0, |s| s.latency[kind][class][b]);
                *n += self.latency[kind][class][b].saturating_sub(earlier);
            }
        }
        let total: u64 = counts.iter().sum();
        let need = ((total as f64) * q.clamp(0.0, 1.0)).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (b, n) in counts.iter().enumerate() {
            seen += n;
            if total > 0 && seen >= need {
                return bucket_floor_us(b);
            }
        }
        0
    }
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

/// Devices of a host of `devices` that may be out of write service (fenced
/// or failed) for an automatic fence to be made: a quarter, at least one,
/// and never every device. One device alone is never fenced automatically.
pub fn auto_fence_limit(devices: usize) -> usize {
    (devices / 4).max(1).min(devices.saturating_sub(1))
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

/// One interval of one device, measured and not yet judged: errors, and
/// the median latency (µs) of each kind and size class that saw enough
/// operations.
#[derive(Debug, Clone, Default)]
pub struct Interval {
    io_errors: u64,
    checksum_failures: u64,
    /// The device's stall at the interval's end (ms the oldest operation
    /// in flight has waited), or 0.
    stalled_ms: u64,
    medians: [[Option<u64>; SIZE_CLASSES]; 2],
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
    /// Baselines of each latency kind and size class.
    baselines: [[Baseline; SIZE_CLASSES]; 2],
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
            baselines: Default::default(),
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

    /// Whether new shards may be placed on the device.
    pub fn accepts_writes(&self) -> bool {
        matches!(self.state, HealthState::Healthy | HealthState::Suspect)
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

    /// One device alone: [`judge_host`] with no siblings (latency is then
    /// compared with the device's own usual figures, and it is never
    /// fenced automatically).
    pub fn observe(&mut self, now: &CounterSnapshot) -> Option<Transition> {
        judge_host(&mut [self], &[Some(now)]).pop().flatten()
    }

    /// The interval since the last snapshot (`None` for the first).
    fn measure(&mut self, now: &CounterSnapshot) -> Option<Interval> {
        let before = self.last.replace(now.clone())?;
        let mut interval = Interval {
            io_errors: now.io_errors.saturating_sub(before.io_errors),
            checksum_failures: now.checksum_failures.saturating_sub(before.checksum_failures),
            stalled_ms: now.io_stalled_ms,
            medians: Default::default(),
        };
        for (k, medians) in interval.medians.iter_mut().enumerate() {
            for (c, median) in medians.iter_mut().enumerate() {
                let (m, n) = interval_median(&now.latency[k][c], &before.latency[k][c]);
                *median = (n >= self.rules.latency_samples_min).then_some(m);
            }
        }
        Some(interval)
    }

    /// Whether the device is slow at some work it did in `me`: against its
    /// siblings that did the same work (`peers`), or, where none did,
    /// against its own usual figures. Returns why.
    fn slowness(&self, me: &Interval, peers: &[&Interval]) -> Option<String> {
        let factor = self.rules.slow_factor;
        for (k, kind) in KINDS.iter().enumerate() {
            for (c, class) in SIZE_CLASS_NAMES.iter().enumerate() {
                let Some(median) = me.medians[k][c] else { continue };
                let mut others: Vec<u64> = peers.iter().filter_map(|p| p.medians[k][c]).collect();
                if !others.is_empty() {
                    others.sort_unstable();
                    let usual = others[others.len() / 2].max(1);
                    if median as f64 >= factor * usual as f64 {
                        let times = median as f64 / usual as f64;
                        return Some(format!(
                            "median {kind} latency ({class}) {median} µs, {times:.0}x its sibling devices' {usual} µs"
                        ));
                    }
                } else if let Some(base) = self.baselines[k][c].value(self.rules.baseline_intervals_min) {
                    if median as f64 >= factor * base.max(1) as f64 {
                        let times = median as f64 / base.max(1) as f64;
                        return Some(format!(
                            "median {kind} latency ({class}) {median} µs, {times:.0}x its usual {base} µs"
                        ));
                    }
                }
            }
        }
        None
    }

    /// Judges one measured interval; returns a change to suspect or back
    /// to healthy (fencing is the host's decision: [`judge_host`]).
    fn judge(&mut self, me: &Interval, peers: &[&Interval]) -> Option<Transition> {
        if self.state == HealthState::Failed {
            return None;
        }
        let (io, sums) = (me.io_errors, me.checksum_failures);
        if self.window.len() == self.rules.window_intervals {
            self.window.pop_front();
        }
        self.window.push_back((io, sums));
        let (window_io, window_sums) = self.window.iter().fold((0, 0), |(a, b), (x, y)| (a + x, b + y));
        let slow = self.slowness(me, peers);
        // Only ordinary intervals of a healthy device teach the baseline.
        if self.state == HealthState::Healthy && slow.is_none() && io == 0 && sums == 0 {
            for (baselines, medians) in self.baselines.iter_mut().zip(&me.medians) {
                for (baseline, median) in baselines.iter_mut().zip(medians) {
                    if let Some(m) = median {
                        baseline.add(*m);
                    }
                }
            }
        }
        self.slow_streak = if slow.is_some() { self.slow_streak + 1 } else { 0 };
        let clean = io == 0 && sums == 0 && slow.is_none() && me.stalled_ms == 0;
        self.clean_streak = if clean { self.clean_streak + 1 } else { 0 };

        let evidence = if me.stalled_ms > 0 {
            Some(format!(
                "I/O stalled: an operation has been in flight for {:.1} s without completing",
                me.stalled_ms as f64 / 1000.0
            ))
        } else if window_io >= self.rules.io_errors_suspect {
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
            HealthState::Suspect if self.clean_streak >= self.rules.recovery_intervals => {
                let why = format!("{} clean intervals in a row", self.clean_streak);
                self.window.clear();
                self.go(HealthState::Healthy, why)
            }
            _ => None,
        }
    }
}

/// What a suspect device's reason says when the automatic limit kept it
/// in write service.
const NOT_FENCED: &str = "not fenced automatically";

/// Names of the size classes, for reasons.
const SIZE_CLASS_NAMES: [&str; SIZE_CLASSES] = ["up to 16 KiB", "up to 256 KiB", "up to 4 MiB", "over 4 MiB"];

/// One interval of a host: every device's tracker with its snapshot
/// (`None` for a device that is not serving; mark it failed first). Each
/// device is judged against its siblings, then devices that were already
/// suspect are fenced automatically while the host stays within
/// [`auto_fence_limit`]. Returns at most one transition per device.
pub fn judge_host(
    trackers: &mut [&mut HealthTracker],
    snapshots: &[Option<&CounterSnapshot>],
) -> Vec<Option<Transition>> {
    assert_eq!(trackers.len(), snapshots.len(), "one snapshot (or none) per device");
    let was_suspect: Vec<bool> = trackers.iter().map(|t| t.state == HealthState::Suspect).collect();
    let intervals: Vec<Option<Interval>> =
        trackers.iter_mut().zip(snapshots).map(|(t, s)| s.and_then(|s| t.measure(s))).collect();
    let mut out: Vec<Option<Transition>> = Vec::with_capacity(trackers.len());
    for (i, tracker) in trackers.iter_mut().enumerate() {
        let Some(me) = &intervals[i] else {
            out.push(None);
            continue;
        };
        let peers: Vec<&Interval> =
            intervals.iter().enumerate().filter(|(j, _)| *j != i).filter_map(|(_, p)| p.as_ref()).collect();
        out.push(tracker.judge(me, &peers));
    }
    let devices = trackers.len();
    let limit = auto_fence_limit(devices);
    let mut out_of_service = trackers.iter().filter(|t| !t.accepts_writes()).count();
    for (i, tracker) in trackers.iter_mut().enumerate() {
        let due = was_suspect[i] && tracker.state == HealthState::Suspect && tracker.rules.auto_fence;
        if !due || out.get(i).is_some_and(Option::is_some) {
            continue;
        }
        if out_of_service < limit {
            out_of_service += 1;
            let why = format!("fenced automatically: {}", tracker.reason);
            out[i] = tracker.go(HealthState::Fenced, why);
        } else if !tracker.reason.contains(NOT_FENCED) {
            // Left for an operator: say why it still takes writes.
            tracker.reason = format!(
                "{}; {NOT_FENCED}: {out_of_service} of {devices} devices already take no writes (the limit is {limit})",
                tracker.reason
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Counters of a device that did, per interval, `n` operations of each
    /// (kind, size class) listed, at the given latency in µs.
    #[derive(Clone)]
    struct Fake(CounterSnapshot);

    impl Fake {
        fn new() -> Fake {
            Fake(CounterSnapshot {
                io_errors: 0,
                checksum_failures: 0,
                io_stalled_ms: 0,
                io_stalls: 0,
                latency: [[[0; LATENCY_BUCKETS]; SIZE_CLASSES]; 2],
            })
        }

        fn work(&mut self, kind: usize, bytes: u64, us: u64, n: u64) -> &CounterSnapshot {
            self.0.latency[kind][size_class(bytes)][bucket_of(us)] += n;
            &self.0
        }
    }

    const READ: usize = 0;
    const COMMIT: usize = 1;

    fn rules() -> HealthRules {
        HealthRules {
            slow_intervals_suspect: 3,
            baseline_intervals_min: 5,
            recovery_intervals: 10,
            ..HealthRules::default()
        }
    }

    /// Runs `intervals` host intervals in which device `d` does the work
    /// `work(d, interval)` returns (kind, bytes, µs); returns every
    /// transition with its device.
    fn run(
        trackers: &mut [HealthTracker],
        fakes: &mut [Fake],
        intervals: usize,
        work: impl Fn(usize, usize) -> Vec<(usize, u64, u64)>,
    ) -> Vec<(usize, Transition)> {
        let mut seen = Vec::new();
        for i in 0..intervals {
            let snaps: Vec<CounterSnapshot> = fakes
                .iter_mut()
                .enumerate()
                .map(|(d, f)| {
                    for (kind, bytes, us) in work(d, i) {
                        f.work(kind, bytes, us, 20);
                    }
                    f.0.clone()
                })
                .collect();
            let mut refs: Vec<&mut HealthTracker> = trackers.iter_mut().collect();
            let judged = judge_host(&mut refs, &snaps.iter().map(Some).collect::<Vec<_>>());
            seen.extend(judged.into_iter().enumerate().filter_map(|(d, t)| t.map(|t| (d, t))));
        }
        seen
    }

    fn host(n: usize) -> (Vec<HealthTracker>, Vec<Fake>) {
        ((0..n).map(|_| HealthTracker::new(rules())).collect(), vec![Fake::new(); n])
    }

    #[test]
    fn interval_quantiles_cover_all_sizes_since_the_earlier_snapshot() {
        let c = DeviceCounters::default();
        for _ in 0..90 {
            c.read_latency.record(Duration::from_micros(100), 4096);
        }
        let before = c.snapshot();
        assert_eq!(before.interval_quantile_us(None, 0, 0.99), 96, "the floor of 100 µs's bucket");
        for _ in 0..98 {
            c.read_latency.record(Duration::from_millis(1), 1 << 20);
        }
        for _ in 0..2 {
            c.read_latency.record(Duration::from_millis(50), 4096);
        }
        let now = c.snapshot();
        assert_eq!(now.interval_quantile_us(Some(&before), 0, 0.5), 896);
        assert_eq!(now.interval_quantile_us(Some(&before), 0, 0.99), 49152);
        assert_eq!(now.interval_quantile_us(Some(&now), 0, 0.5), 0, "nothing in the interval");
        assert_eq!(now.interval_quantile_us(None, 1, 0.5), 0, "no commits");
    }

    #[test]
    fn a_workload_that_slows_every_device_together_fences_nothing() {
        let (mut trackers, mut fakes) = host(3);
        // Small reads, then large writes with reads stuck behind them (every
        // device 8x slower at reads, commits of a new size), then a burst
        // of durable puts (small commits 6x slower), then small reads again.
        let seen = run(&mut trackers, &mut fakes, 80, |d, i| {
            let jitter = 1 + d as u64;
            match i {
                0..20 => vec![(READ, 4096, 100 + jitter), (COMMIT, 8192, 400)],
                20..40 => vec![(READ, 4096, 800 + jitter), (COMMIT, 8 << 20, 9000)],
                40..60 => vec![(COMMIT, 4096, 2400 + 10 * jitter)],
                _ => vec![(READ, 4096, 100 + jitter)],
            }
        });
        assert!(seen.is_empty(), "{seen:#?}");
        // The old rule (each device against its own baseline only) would
        // have suspected all three: a device alone does.
        let mut alone = HealthTracker::new(rules());
        let mut fake = Fake::new();
        let mut transitions = Vec::new();
        for i in 0..40 {
            let us = if i < 20 { 100 } else { 800 };
            transitions.extend(alone.observe(fake.work(READ, 4096, us, 20)));
        }
        assert_eq!(transitions.len(), 1, "{transitions:#?}");
        assert_eq!(alone.state(), HealthState::Suspect, "a lone device is judged against itself, never fenced");
    }

    #[test]
    fn one_device_ten_times_slower_than_its_siblings_is_caught_without_a_baseline() {
        let (mut trackers, mut fakes) = host(3);
        // No baseline needed: from the first intervals device 2 is 10x
        // slower than its siblings at the same work.
        let seen = run(&mut trackers, &mut fakes, 6, |d, _| {
            let us = if d == 2 { 1000 } else { 100 };
            vec![(READ, 4096, us), (COMMIT, 1 << 20, us * 20)]
        });
        let to: Vec<(usize, HealthState)> = seen.iter().map(|(d, t)| (*d, t.to)).collect();
        assert_eq!(to, vec![(2, HealthState::Suspect), (2, HealthState::Fenced)], "{seen:#?}");
        assert!(seen[0].1.reason.contains("sibling devices"), "{}", seen[0].1.reason);
    }

    #[test]
    fn automatic_fences_stop_at_a_quarter_of_the_host_and_never_take_the_last_device() {
        assert_eq!((1..=9).map(auto_fence_limit).collect::<Vec<_>>(), vec![0, 1, 1, 1, 1, 1, 1, 2, 2]);
        assert_eq!(auto_fence_limit(24), 6);
        // Four devices, two of them slow: one is fenced, the other stays
        // suspect (still taking writes) and says why.
        let (mut trackers, mut fakes) = host(4);
        let seen = run(&mut trackers, &mut fakes, 8, |d, _| vec![(READ, 4096, if d < 2 { 2000 } else { 100 })]);
        let states: Vec<HealthState> = trackers.iter().map(HealthTracker::state).collect();
        assert_eq!(
            states,
            vec![HealthState::Fenced, HealthState::Suspect, HealthState::Healthy, HealthState::Healthy],
            "{seen:#?}"
        );
        assert!(trackers[1].reason().contains("not fenced automatically"), "{}", trackers[1].reason());
        assert!(trackers[1].accepts_writes());
        // A host of one device never fences it automatically.
        let (mut trackers, mut fakes) = host(1);
        run(&mut trackers, &mut fakes, 40, |_, i| vec![(READ, 4096, if i < 20 { 100 } else { 5000 })]);
        assert_eq!(trackers[0].state(), HealthState::Suspect);
    }

    /// A hung device records no latency and no error: its stall is the
    /// evidence. Suspect while it lasts (and fenced within the limit), and
    /// no interval of it counts as clean, so recovery starts only once the
    /// I/O completes.
    #[test]
    fn a_stalled_device_is_suspect_and_recovers_only_after_the_stall() {
        let (mut trackers, mut fakes) = host(3);
        let mut seen = run(&mut trackers, &mut fakes, 3, |_, _| vec![(READ, 4096, 100)]);
        assert!(seen.is_empty(), "{seen:#?}");
        // Device 1 stops completing I/O: its counters stand still.
        fakes[1].0.io_stalled_ms = 12_500;
        fakes[1].0.io_stalls = 1;
        seen = run(&mut trackers, &mut fakes, 2, |d, _| if d == 1 { vec![] } else { vec![(READ, 4096, 100)] });
        let to: Vec<(usize, HealthState)> = seen.iter().map(|(d, t)| (*d, t.to)).collect();
        assert_eq!(to, vec![(1, HealthState::Suspect), (1, HealthState::Fenced)], "{seen:#?}");
        assert!(
            seen[0].1.reason.contains("I/O stalled") && seen[0].1.reason.contains("12.5 s"),
            "{}",
            seen[0].1.reason
        );
        // One device alone, which is never fenced: suspect for as long as
        // the stall lasts, whatever else it does, then healthy after the
        // clean intervals the rules ask for.
        let mut alone = HealthTracker::new(rules());
        let mut fake = Fake::new();
        fake.0.io_stalled_ms = 10_000;
        let mut transitions: Vec<Transition> = Vec::new();
        for _ in 0..30 {
            transitions.extend(alone.observe(fake.work(READ, 4096, 100, 20)));
        }
        assert_eq!(transitions.iter().map(|t| t.to).collect::<Vec<_>>(), vec![HealthState::Suspect]);
        fake.0.io_stalled_ms = 0;
        let recovery = rules().recovery_intervals as usize;
        for _ in 0..recovery - 1 {
            transitions.extend(alone.observe(fake.work(READ, 4096, 100, 20)));
        }
        assert_eq!(alone.state(), HealthState::Suspect, "not clean before the stall ended");
        transitions.extend(alone.observe(fake.work(READ, 4096, 100, 20)));
        assert_eq!(alone.state(), HealthState::Healthy, "{transitions:#?}");
    }

    #[test]
    fn a_stall_watch_counts_each_stall_once() {
        let w = crate::device::StallWatch::default();
        assert_eq!((w.stalled_for(), w.stalls()), (None, 0));
        assert!(w.publish(Some(Duration::from_millis(10_500))), "a stall starts");
        assert!(!w.publish(Some(Duration::from_secs(11))), "the same stall, older");
        assert_eq!((w.stalled_for(), w.stalls()), (Some(Duration::from_secs(11)), 1));
        assert!(!w.publish(None));
        assert_eq!(w.stalled_for(), None);
        assert!(w.publish(Some(Duration::from_micros(300))), "a second stall; under a millisecond still shows");
        assert_eq!((w.stalled_for(), w.stalls()), (Some(Duration::from_millis(1)), 2));
        assert_eq!(crate::device::StallWatch::check_interval(Duration::from_secs(10)), Duration::from_secs(1));
        assert_eq!(crate::device::StallWatch::check_interval(Duration::from_millis(400)), Duration::from_millis(100));
    }

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
