//! Drive health from what store threads count on simulated devices: of
//! three devices doing the same work, one that turns ten times slower is
//! marked suspect and fenced automatically while its siblings stay
//! healthy; switching the whole host from small reads to large writes, or
//! to a burst of durable puts from many writers, fences nothing; one slow
//! I/O changes nothing; a suspect device recovers only after a run of
//! clean intervals.

use std::time::Duration;

use shardstore::device::sim::{Fault, SimConfig, SimDevice, SimHandle};
use shardstore::error::OpKind;
use shardstore::format::{format, FormatOptions};
use shardstore::health::{judge_host, HealthRules, HealthState, HealthTracker, Transition};
use shardstore::store::thread::{self, StoreHandle};

const KEYS: usize = 8;

fn start_seeded(seed: u64) -> (StoreHandle, std::thread::JoinHandle<()>, SimHandle) {
    let mut dev = SimDevice::new(SimConfig::new(64 << 20, seed));
    format(&mut dev, &FormatOptions { extent_size_bytes: Some(4 << 20), ..FormatOptions::default() }).unwrap();
    let sim = dev.handle();
    let (store, join) = thread::spawn(Box::new(dev)).unwrap();
    for k in 0..KEYS {
        store.put(format!("k{k}").as_bytes(), vec![k as u8; 8192]).unwrap();
    }
    sim.set_latency(Duration::from_micros(300));
    (store, join, sim)
}

fn start() -> (StoreHandle, std::thread::JoinHandle<()>, SimHandle) {
    start_seeded(11)
}

/// Short windows, so a test runs in seconds; the logic is the same.
fn rules() -> HealthRules {
    HealthRules {
        window_intervals: 20,
        slow_intervals_suspect: 3,
        recovery_intervals: 10,
        baseline_intervals_min: 5,
        ..HealthRules::default()
    }
}

/// One interval of traffic (gets and two puts) on one store.
fn traffic(store: &StoreHandle) {
    for i in 0..12 {
        let _ = store.get(format!("k{}", i % KEYS).as_bytes());
    }
    for i in 0..2 {
        store.put(format!("w{i}").as_bytes(), vec![1u8; 4096]).unwrap();
    }
}

/// One interval of traffic, then one observation.
fn interval(store: &StoreHandle, tracker: &mut HealthTracker) -> Option<Transition> {
    traffic(store);
    tracker.observe(&store.counters().snapshot())
}

fn settle(store: &StoreHandle, tracker: &mut HealthTracker) {
    tracker.observe(&store.counters().snapshot());
    for i in 0..8 {
        assert_eq!(interval(store, tracker), None, "a steady device changed state in interval {i}");
    }
    assert_eq!(tracker.state(), HealthState::Healthy);
}

/// A host of three simulated devices, each on its own store thread.
struct Host {
    stores: Vec<(StoreHandle, std::thread::JoinHandle<()>, SimHandle)>,
    trackers: Vec<HealthTracker>,
}

impl Host {
    fn new() -> Host {
        let stores: Vec<_> = (0..3).map(|d| start_seeded(20 + d)).collect();
        let mut host = Host { stores, trackers: (0..3).map(|_| HealthTracker::new(rules())).collect() };
        host.judge();
        host
    }

    /// Runs `work` on every device at once (a thread each), then judges
    /// the host; returns the transitions by device.
    fn interval(&mut self, work: impl Fn(&StoreHandle, usize) + Sync) -> Vec<(usize, Transition)> {
        std::thread::scope(|s| {
            for (d, (store, _, _)) in self.stores.iter().enumerate() {
                let work = &work;
                s.spawn(move || work(store, d));
            }
        });
        self.judge()
    }

    fn judge(&mut self) -> Vec<(usize, Transition)> {
        let snaps: Vec<_> = self.stores.iter().map(|(s, _, _)| s.counters().snapshot()).collect();
        let mut refs: Vec<&mut HealthTracker> = self.trackers.iter_mut().collect();
        let judged = judge_host(&mut refs, &snaps.iter().map(Some).collect::<Vec<_>>());
        judged.into_iter().enumerate().filter_map(|(d, t)| t.map(|t| (d, t))).collect()
    }

    fn close(self) {
        for (store, join, _) in self.stores {
            store.close().unwrap();
            join.join().unwrap();
        }
    }
}

#[test]
fn a_device_ten_times_slower_than_its_siblings_is_suspected_then_fenced() {
    let mut host = Host::new();
    for i in 0..8 {
        assert_eq!(host.interval(|s, _| traffic(s)), vec![], "a steady host changed state in interval {i}");
    }
    host.stores[1].2.set_latency(Duration::from_millis(3));
    let mut transitions = Vec::new();
    for _ in 0..6 {
        transitions.extend(host.interval(|s, _| traffic(s)));
    }
    let to: Vec<(usize, HealthState)> = transitions.iter().map(|(d, t)| (*d, t.to)).collect();
    assert_eq!(to, vec![(1, HealthState::Suspect), (1, HealthState::Fenced)], "{transitions:#?}");
    assert!(transitions[0].1.reason.contains("latency"), "{}", transitions[0].1.reason);
    assert!(transitions[1].1.reason.contains("fenced automatically"), "{}", transitions[1].1.reason);
    // A fence holds, however the device behaves, until an operator lifts it.
    host.stores[1].2.set_latency(Duration::from_micros(300));
    for _ in 0..12 {
        assert_eq!(host.interval(|s, _| traffic(s)), vec![]);
    }
    assert_eq!(host.trackers[1].state(), HealthState::Fenced);
    assert_eq!(host.trackers[1].operator_fence(false).map(|t| t.to), Some(HealthState::Healthy));
    host.close();
}

/// The incident: small random gets, then 1 MiB puts, made every device's
/// commit latency rise 5x against its own baseline; all three were fenced
/// within a second and every later PUT was refused. Devices that slow
/// down together are the workload, not a drive.
#[test]
fn workload_switches_on_healthy_devices_fence_nothing() {
    let mut host = Host::new();
    for s in &host.stores {
        // Transfer time as well as latency: large I/O takes longer.
        s.2.set_bandwidth(Some(200 << 20));
    }
    let small = |s: &StoreHandle, _: usize| {
        traffic(s);
        // Enough small commits that their latency is judged (and learnt).
        for i in 0..10 {
            s.put(format!("s{i}").as_bytes(), vec![3u8; 4096]).unwrap();
        }
    };
    let big_puts = |s: &StoreHandle, d: usize| {
        let done = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|t| {
            // Gets go on while the large puts are committed: they wait
            // behind the commits, on every device alike.
            t.spawn(|| {
                for i in 0.. {
                    if done.load(std::sync::atomic::Ordering::Relaxed) && i >= 16 {
                        break;
                    }
                    let _ = s.get(format!("k{}", i % KEYS).as_bytes());
                }
            });
            for i in 0..10 {
                s.put(format!("big{i}").as_bytes(), vec![d as u8; 1 << 20]).unwrap();
            }
            done.store(true, std::sync::atomic::Ordering::Relaxed);
        });
    };
    let durable_burst = |s: &StoreHandle, _: usize| {
        // Many writers at once, each waiting for its put to be durable.
        std::thread::scope(|t| {
            for w in 0..16 {
                t.spawn(move || {
                    for i in 0..4 {
                        s.put(format!("w{w}-{i}").as_bytes(), vec![w as u8; 4096]).unwrap();
                    }
                });
            }
        });
    };
    let mut seen = Vec::new();
    for phase in 0..4 {
        for _ in 0..10 {
            seen.extend(match phase {
                0 | 2 => host.interval(small),
                1 => host.interval(big_puts),
                _ => host.interval(durable_burst),
            });
        }
    }
    assert!(seen.is_empty(), "{seen:#?}");
    host.close();
}

#[test]
fn one_slow_io_now_and_then_does_not_flap() {
    let (store, join, sim) = start();
    let mut tracker = HealthTracker::new(rules());
    settle(&store, &mut tracker);
    for i in 0..15 {
        // One operation in each interval takes 100 times longer.
        sim.delay_next(Duration::from_millis(30));
        assert_eq!(interval(&store, &mut tracker), None, "interval {i}");
    }
    assert_eq!(tracker.state(), HealthState::Healthy);
    store.close().unwrap();
    join.join().unwrap();
}

#[test]
fn read_errors_make_a_device_suspect_and_clean_intervals_bring_it_back() {
    let (store, join, sim) = start();
    let mut tracker = HealthTracker::new(HealthRules { auto_fence: false, ..rules() });
    settle(&store, &mut tracker);
    sim.inject(Fault { op: OpKind::Read, range: None, skip: 0, remaining: Some(3) });
    let t = interval(&store, &mut tracker).expect("three read errors make it suspect");
    assert_eq!(t.to, HealthState::Suspect);
    assert!(t.reason.contains("3 I/O errors"), "{}", t.reason);
    // Without auto-fencing it stays suspect through the recovery period,
    // then turns healthy: never back and forth in between.
    for i in 0..9 {
        assert_eq!(interval(&store, &mut tracker), None, "interval {i}");
        assert_eq!(tracker.state(), HealthState::Suspect);
    }
    let t = interval(&store, &mut tracker).expect("ten clean intervals");
    assert_eq!(t.to, HealthState::Healthy);
    store.close().unwrap();
    join.join().unwrap();
}
