//! The gossip benchmark (issue 12): in the deterministic simulator, for
//! clusters of N hosts on a clean network and with 50% message loss,
//! how long a health change takes to reach every live host, how long until
//! every live host sees a killed host down, and the gossip traffic per
//! host; on the real clock, the CPU one datagram costs (the envelope
//! checks alone, and the whole handling: envelope, foca, records).
//!
//! usage: cargo run --release -p shardnode-cluster --example gossip_bench --
//!            [--hosts 10,50,100,200] [--seeds 5]
//! Prints a markdown report (medians over the seeds, and the worst).

use std::time::Instant;

use foca::State;
use shardnode_cluster::envelope::{self, Opener, Sender};
use shardnode_cluster::gossip::Event;
use shardnode_cluster::records::DeviceState;
use shardnode_cluster::sim::{Faults, Sim};

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return f64::NAN;
    }
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        f64::midpoint(v[m - 1], v[m])
    }
}

fn worst(v: &[f64]) -> f64 {
    v.iter().copied().fold(f64::NAN, f64::max)
}

fn converged(sim: &Sim) -> bool {
    sim.running().into_iter().all(|h| sim.all_see(h, State::Alive))
}

/// One run: (health change to all, ms; death seen by all, ms; bytes sent
/// per host per second in steady state; CPU ns per datagram handled).
fn run(n: u32, seed: u64, faults: Faults) -> Option<(f64, f64, f64, f64, f64)> {
    // The cluster forms on a clean network; then the faults begin.
    let mut sim = Sim::new(n, seed, Faults::none());
    sim.time_until(120_000, 100, converged)?;
    sim.faults = faults;
    let events_before = sim.events.len();
    // Steady state: traffic over 30 virtual seconds.
    let bytes_before: u64 = (1..=n).filter_map(|h| sim.counters(h)).map(|c| c.bytes_sent).sum();
    let delivered_before = sim.stats.delivered;
    let cpu = Instant::now();
    sim.run_for(30_000);
    let cpu_ns = cpu.elapsed().as_nanos() as f64;
    let bytes: u64 = (1..=n).filter_map(|h| sim.counters(h)).map(|c| c.bytes_sent).sum::<u64>() - bytes_before;
    let per_host_per_s = bytes as f64 / f64::from(n) / 30.0;
    let ns_per_datagram = cpu_ns / (sim.stats.delivered - delivered_before).max(1) as f64;
    // A drive fenced on one host: until every live host holds the record.
    let origin = 1 + (seed % u64::from(n)) as u32;
    sim.set_device(origin, 1, |d| d.state = DeviceState::Fenced);
    sim.run_for(1);
    let seq = sim.published_sequence(origin, 1)?;
    let spread = sim.time_until(120_000, 10, |s| s.all_hold(origin, 1, seq))?;
    // A host killed: until every live host sees it down.
    let victim = 1 + ((seed + 1) % u64::from(n)) as u32;
    sim.kill(victim);
    let down = sim.time_until(120_000, 10, |s| s.all_see(victim, State::Down))?;
    // Live hosts some host declared down (false positives), per minute.
    let minutes = (sim.now_ms - 1_800_000_000_000) as f64 / 60_000.0;
    let false_downs = sim.events[events_before..]
        .iter()
        .filter(|(_, _, e)| matches!(e, Event::MemberDown(id) if id.host != victim))
        .count();
    Some((spread as f64, down as f64, per_host_per_s, ns_per_datagram, false_downs as f64 / minutes.max(1e-9)))
}

/// The envelope checks alone: ns per datagram opened.
fn envelope_ns() -> f64 {
    let sim = Sim::new(2, 1, Faults::none());
    let keyring = sim.keyring().clone();
    let cluster = sim.roster().cluster_id();
    let payload = vec![0x5au8; 300];
    let rounds = 200_000u64;
    let datagrams: Vec<Vec<u8>> = (1..=1024)
        .map(|seq| {
            envelope::seal(&keyring, cluster, Sender { host: 1, generation: 1_800_000_000, sequence: seq }, &payload)
        })
        .collect();
    let start = Instant::now();
    let mut ok = 0u64;
    for r in 0..rounds {
        // A fresh replay window every 1024 datagrams, so each is new.
        let mut opener = Opener::new(keyring.clone(), cluster);
        let d = &datagrams[(r % 1024) as usize];
        if opener.open(d, |h| h == 1, 1_800_000_000).is_ok() {
            ok += 1;
        }
    }
    assert_eq!(ok, rounds, "every datagram opens");
    start.elapsed().as_nanos() as f64 / rounds as f64
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned();
    let hosts: Vec<u32> = arg("--hosts")
        .unwrap_or_else(|| "10,50,100,200".into())
        .split(',')
        .map(|h| h.trim().parse().expect("--hosts: a list of numbers"))
        .collect();
    let seeds: u64 = arg("--seeds").and_then(|s| s.parse().ok()).unwrap_or(5);

    println!("# Gossip in the simulator (virtual time), {seeds} seeds each\n");
    println!(
        "foca with memberlist's LAN timing (1 s probes, 500 ms probe timeout), suspicion 3 x max(1, log10 N) s, 8 x log10(N+1) retransmissions;"
    );
    println!(
        "records republished every 10 s, a device change published at once. The cluster forms on a clean network,"
    );
    println!("then the faults start; \"declared down\" counts MemberDown events for live hosts (false positives). Medians over the seeds (worst).\n");
    println!("| hosts | network | health change reaches all | death seen by all | live hosts declared down per minute | gossip bytes/s per host | CPU per datagram handled |");
    println!("|---:|---|---:|---:|---:|---:|---:|");
    for &n in &hosts {
        for (name, faults) in [("clean", Faults::none()), ("50% loss", Faults { loss: 0.5, ..Faults::none() })] {
            let runs: Vec<_> = (1..=seeds).filter_map(|s| run(n, s, faults)).collect();
            if runs.len() < seeds as usize {
                println!("| {n} | {name} | {} of {seeds} seeds did not finish | | | | |", seeds as usize - runs.len());
                continue;
            }
            let col = |f: fn(&(f64, f64, f64, f64, f64)) -> f64| runs.iter().map(f).collect::<Vec<f64>>();
            let (spread, down, bytes, cpu, false_downs) =
                (col(|r| r.0), col(|r| r.1), col(|r| r.2), col(|r| r.3), col(|r| r.4));
            println!(
                "| {n} | {name} | {:.2} s ({:.2}) | {:.2} s ({:.2}) | {:.1} | {:.0} ({:.0}) | {:.1} µs |",
                median(spread.clone()) / 1000.0,
                worst(&spread) / 1000.0,
                median(down.clone()) / 1000.0,
                worst(&down) / 1000.0,
                median(false_downs),
                median(bytes.clone()),
                worst(&bytes),
                median(cpu) / 1000.0,
            );
        }
    }
    let e: Vec<f64> = (0..5).map(|_| envelope_ns()).collect();
    println!(
        "\nEnvelope checks alone (length, magic, key, keyed-BLAKE3 MAC, CRC32C, cluster, roster, generation, replay window), 300-byte payload: {:.2} µs per datagram (median of 5 runs of 200,000).",
        median(e) / 1000.0
    );
    println!("\"CPU per datagram handled\" is the simulator's wall time per datagram delivered in steady state: envelope, foca, record checks and the simulator's own bookkeeping, one thread.");
}
