//! The gossip of many hosts in the deterministic simulator: convergence,
//! failure detection, partitions, and a hostile network whose damage and
//! forgeries are never applied. Seeds: `SIM_SEEDS` (default 3 per test);
//! a failing seed is printed.

use foca::State;
use shardnode_cluster::envelope::{Reject, Sender};
use shardnode_cluster::keys::{GossipKey, Keyring};
use shardnode_cluster::records::DeviceState;
use shardnode_cluster::sim::{Faults, Sim};

fn seeds() -> Vec<u64> {
    let n: u64 = std::env::var("SIM_SEEDS").ok().and_then(|s| s.parse().ok()).unwrap_or(3);
    (1..=n).collect()
}

/// Runs `f` for every seed, naming the seed that failed.
fn each_seed(f: impl Fn(u64) + std::panic::RefUnwindSafe) {
    for seed in seeds() {
        if let Err(e) = std::panic::catch_unwind(|| f(seed)) {
            eprintln!("failed with seed {seed} (rerun: SIM_SEEDS covers 1..=N)");
            std::panic::resume_unwind(e);
        }
    }
}

/// Every host sees every other alive, in its current life.
fn converged(sim: &Sim) -> bool {
    sim.running().into_iter().all(|h| sim.all_see(h, State::Alive))
}

#[test]
fn a_cluster_converges_and_spreads_a_health_change() {
    each_seed(|seed| {
        let mut sim = Sim::new(20, seed, Faults::none());
        let joined = sim.time_until(30_000, 100, converged).expect("20 hosts converge within 30 s");
        assert!(sim.time_until(15_000, 100, |s| s.all_hold(1, 0, 1)).is_some(), "records spread");
        // A drive fenced on host 7 shows as fenced everywhere.
        sim.set_device(7, 1, |d| d.state = DeviceState::Fenced);
        sim.run_for(1);
        let seq = sim.published_sequence(7, 1).unwrap();
        let spread = sim.time_until(10_000, 50, |s| s.all_hold(7, 1, seq)).expect("the change spreads");
        eprintln!("seed {seed}: 20 hosts joined in {joined} ms, a health change reached all in {spread} ms");
        assert_eq!(sim.bad_records_held(), 0);
        assert_eq!(sim.stats.damaged_accepted + sim.stats.replays_accepted, 0);
    });
}

#[test]
fn a_paused_host_is_suspected_then_refutes_without_losing_its_life() {
    each_seed(|seed| {
        // 3 hosts: the suspicion timeout is its floor, 3 x 1 s.
        for n in [3, 10] {
            let mut sim = Sim::new(n, seed, Faults::none());
            sim.time_until(30_000, 100, converged).expect("converged");
            let life = sim.generation(2);
            sim.pause(2);
            let suspected = sim
                .time_until(5_000, 50, |s| {
                    s.running().iter().any(|&o| o != 2 && s.state(o, 2).is_some_and(|st| st.1 == State::Suspect))
                })
                .expect("a paused host is suspected");
            // Resume well before the suspicion times out (SIGSTOP, then
            // SIGCONT): it reads the suspicion and refutes it.
            sim.run_for(2_500 - suspected.min(2_000));
            sim.resume(2);
            sim.run_for(10_000);
            assert_eq!(sim.generation(2), life, "seed {seed}, {n} hosts: the paused host was made to rejoin");
            assert!(sim.all_see(2, State::Alive), "seed {seed}, {n} hosts: alive again everywhere");
            let downs = sim
                .events
                .iter()
                .filter(|(_, _, e)| matches!(e, shardnode_cluster::gossip::Event::MemberDown(id) if id.host == 2))
                .count();
            assert_eq!(downs, 0, "seed {seed}, {n} hosts: nobody acted on the suspicion");
        }
    });
}

#[test]
fn a_killed_host_is_seen_down_and_a_restarted_one_rejoins_in_a_new_life() {
    each_seed(|seed| {
        let mut sim = Sim::new(12, seed, Faults::none());
        sim.time_until(30_000, 100, converged).expect("converged");
        let old = sim.generation(5);
        sim.kill(5);
        // SWIM's bound at 12 hosts: a probe within a few periods, the
        // suspicion timeout (3 x log10(12) x 1 s ~ 3.2 s), dissemination.
        let down = sim.time_until(20_000, 100, |s| s.all_see(5, State::Down)).expect("seen down");
        sim.start(5);
        let back = sim.time_until(20_000, 100, |s| s.all_see(5, State::Alive)).expect("back alive");
        assert!(sim.generation(5) > old);
        for o in sim.running() {
            if o != 5 {
                let (id, _) = sim.state(o, 5).unwrap();
                assert_eq!(id.generation, sim.generation(5), "host {o} still knows host 5's old life");
            }
        }
        eprintln!("seed {seed}: a killed host was seen down in {down} ms, restarted and back in {back} ms");
        // A clean stop says goodbye: most hosts see it down at once (the
        // leave is gossiped like any update), the rest within SWIM's bound.
        sim.stop(6);
        sim.run_for(1_000);
        let seen =
            sim.running().into_iter().filter(|o| sim.state(*o, 6).is_some_and(|(_, s)| s == State::Down)).count();
        assert!(seen * 2 >= sim.running().len(), "1 s after host 6 left only {seen} hosts saw it down");
        sim.time_until(20_000, 100, |s| s.all_see(6, State::Down)).expect("everyone sees the host that left down");
    });
}

#[test]
fn a_partition_heals_and_one_way_loss_is_ridden_out() {
    each_seed(|seed| {
        let mut sim = Sim::new(10, seed, Faults::none());
        sim.time_until(30_000, 100, converged).expect("converged");
        sim.partition(&[(1..=5).collect(), (6..=10).collect()]);
        sim.time_until(60_000, 200, |s| s.state(1, 8).is_some_and(|(_, st)| st == State::Down))
            .expect("each side sees the other down");
        sim.heal();
        let healed = sim.time_until(120_000, 200, converged).expect("the partition heals");
        eprintln!("seed {seed}: partition healed in {healed} ms");
        // One-way loss between two hosts: indirect probes keep both alive.
        sim.cut_one_way(3, 4);
        sim.run_for(30_000);
        assert!(sim.all_see(3, State::Alive) && sim.all_see(4, State::Alive), "one-way loss took a host out");
        sim.heal();
    });
}

#[test]
fn a_hostile_network_never_gets_damage_or_forgery_applied() {
    each_seed(|seed| {
        let mut sim = Sim::new(16, seed, Faults::hostile());
        sim.time_until(60_000, 200, converged).expect("converges despite the faults");
        sim.set_device(3, 0, |d| d.free_bytes /= 2);
        sim.run_for(1);
        let seq = sim.published_sequence(3, 0).unwrap();
        sim.time_until(30_000, 100, |s| s.all_hold(3, 0, seq)).expect("a change spreads despite the faults");
        // Long enough for hundreds of each fault (records are republished
        // every minute, so most traffic is SWIM's).
        sim.run_for(180_000);
        let s = sim.stats.clone();
        eprintln!("seed {seed}: {s:?}");
        assert!(s.flipped > 100 && s.truncated > 50 && s.replayed > 100 && s.lost > 100, "the faults ran");
        assert_eq!(s.damaged_accepted, 0, "a damaged datagram was accepted");
        assert_eq!(s.replays_accepted, 0, "a datagram was accepted twice");
        assert_eq!(sim.bad_records_held(), 0, "an altered record is held");
        assert!(sim.records_held() > 0);
        assert!(
            s.rejected.get("corrupt").copied().unwrap_or(0) > 0 && s.rejected.get("replay").copied().unwrap_or(0) > 0
        );
    });
}

#[test]
fn every_bit_flip_of_sampled_datagrams_is_rejected() {
    let mut sim = Sim::new(8, 7, Faults::none());
    sim.time_until(30_000, 100, converged).expect("converged");
    let mut flipped = 0u64;
    for (to, datagram) in sim.samples(40) {
        for bit in 0..datagram.len() * 8 {
            let mut bad = datagram.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            assert_eq!(sim.deliver(to, &bad), Some(Err(Reject::Corrupt)), "bit {bit}");
            flipped += 1;
        }
    }
    eprintln!("{flipped} single-bit flips, all rejected as corrupt");
    assert!(flipped > 40 * 8 * 60);
    assert_eq!(sim.bad_records_held(), 0);
}

#[test]
fn forged_senders_wrong_keys_and_old_lives_are_refused() {
    let mut sim = Sim::new(6, 3, Faults::none());
    sim.time_until(30_000, 100, converged).expect("converged");
    let now_s = sim.now_ms / 1000;
    // A SWIM message some host other than 3 sent (its first field is the
    // sender's host id).
    let sample = sim.samples(50).into_iter().map(|(_, d)| d[38..d.len() - 20].to_vec()).find(|p| payload_from(p) != 3);
    let payload = &sample.expect("a sample from a host other than 3")[..];
    let wrong = Keyring::new(vec![GossipKey::new(1, [1; 32])]).unwrap();
    let ring = sim.keyring().clone();
    let g2 = sim.generation(2);
    let cases = [
        (wrong, Sender { host: 2, generation: g2, sequence: 1 << 40 }, Reject::Auth),
        (ring.clone(), Sender { host: 99, generation: g2, sequence: 1 << 40 }, Reject::UnknownSender),
        (ring.clone(), Sender { host: 2, generation: g2 - 1, sequence: 1 << 40 }, Reject::StaleGeneration),
        (ring.clone(), Sender { host: 2, generation: now_s + 2 * 86400, sequence: 1 << 40 }, Reject::StaleGeneration),
    ];
    for (keys, sender, want) in cases {
        assert_eq!(sim.forge(1, &keys, sender, payload), Some(Err(want)), "{sender:?}");
    }
    // A roster host's key and life, but a SWIM message from another host.
    let spoof = Sender { host: 3, generation: sim.generation(3), sequence: 1 << 40 };
    assert_eq!(sim.forge(4, &ring, spoof, payload), Some(Err(Reject::Spoofed)));
    assert_eq!(sim.stats.damaged_accepted, 0);
}

/// The host a SWIM payload says it is from.
fn payload_from(payload: &[u8]) -> u32 {
    u32::from_le_bytes(payload[..4].try_into().unwrap())
}

#[test]
fn a_hundred_hosts_converge_and_detect_a_death() {
    let mut sim = Sim::new(100, 11, Faults::none());
    let joined = sim.time_until(60_000, 250, converged).expect("100 hosts converge within 60 s");
    sim.kill(42);
    let down = sim.time_until(60_000, 250, |s| s.all_see(42, State::Down)).expect("seen down");
    eprintln!("100 hosts: joined in {joined} ms, a death seen by all in {down} ms");
    assert!(down <= 30_000, "detection took {down} ms");
    assert_eq!(sim.bad_records_held(), 0);
}
