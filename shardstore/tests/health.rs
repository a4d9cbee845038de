//! Drive health from what a store thread counts on a simulated device: a
//! device that turns ten times slower, or starts failing reads, is marked
//! suspect and fenced automatically; one slow I/O changes nothing; a
//! suspect device recovers only after a run of clean intervals.

use std::time::Duration;

use shardstore::device::sim::{Fault, SimConfig, SimDevice, SimHandle};
use shardstore::error::OpKind;
use shardstore::format::{format, FormatOptions};
use shardstore::health::{HealthRules, HealthState, HealthTracker, Transition};
use shardstore::store::thread::{self, StoreHandle};

const KEYS: usize = 8;

fn start() -> (StoreHandle, std::thread::JoinHandle<()>, SimHandle) {
    let mut dev = SimDevice::new(SimConfig::new(64 << 20, 11));
    format(&mut dev, &FormatOptions { extent_size_bytes: Some(4 << 20), ..FormatOptions::default() }).unwrap();
    let sim = dev.handle();
    let (store, join) = thread::spawn(Box::new(dev)).unwrap();
    for k in 0..KEYS {
        store.put(format!("k{k}").as_bytes(), vec![k as u8; 8192]).unwrap();
    }
    sim.set_latency(Duration::from_micros(300));
    (store, join, sim)
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

/// One interval of traffic (gets and two puts), then one observation.
fn interval(store: &StoreHandle, tracker: &mut HealthTracker) -> Option<Transition> {
    for i in 0..12 {
        let _ = store.get(format!("k{}", i % KEYS).as_bytes());
    }
    for i in 0..2 {
        store.put(format!("w{i}").as_bytes(), vec![1u8; 4096]).unwrap();
    }
    tracker.observe(&store.counters().snapshot())
}

fn settle(store: &StoreHandle, tracker: &mut HealthTracker) {
    tracker.observe(&store.counters().snapshot());
    for i in 0..8 {
        assert_eq!(interval(store, tracker), None, "a steady device changed state in interval {i}");
    }
    assert_eq!(tracker.state(), HealthState::Healthy);
}

#[test]
fn a_device_ten_times_slower_is_suspected_then_fenced() {
    let (store, join, sim) = start();
    let mut tracker = HealthTracker::new(rules());
    settle(&store, &mut tracker);
    sim.set_latency(Duration::from_millis(3));
    let mut transitions = Vec::new();
    for _ in 0..6 {
        if let Some(t) = interval(&store, &mut tracker) {
            transitions.push(t);
        }
    }
    assert_eq!(transitions.len(), 2, "{transitions:#?}");
    assert_eq!((transitions[0].from, transitions[0].to), (HealthState::Healthy, HealthState::Suspect));
    assert!(transitions[0].reason.contains("latency"), "{}", transitions[0].reason);
    assert_eq!(transitions[1].to, HealthState::Fenced);
    assert!(transitions[1].reason.contains("fenced automatically"), "{}", transitions[1].reason);
    // A fence holds, however the device behaves, until an operator lifts it.
    sim.set_latency(Duration::from_micros(300));
    for _ in 0..12 {
        assert_eq!(interval(&store, &mut tracker), None);
    }
    assert_eq!(tracker.state(), HealthState::Fenced);
    assert_eq!(tracker.operator_fence(false).map(|t| t.to), Some(HealthState::Healthy));
    store.close().unwrap();
    join.join().unwrap();
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
