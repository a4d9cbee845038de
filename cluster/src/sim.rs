//! A deterministic simulation of a cluster's gossip: N hosts, each the
//! same `Gossip` the agent runs, in one thread on a virtual clock, over a
//! simulated network with seeded faults (loss, duplication, delay and
//! reordering, partitions, one-way loss, bit flips, truncation, replays of
//! old datagrams, forged senders). It reaches states real sockets cannot
//! produce on demand; the agents' own tests run the real thing.
//!
//! The simulator keeps the truth: every record each host sealed. A record
//! held anywhere that is not byte for byte one of those was altered or
//! forged, and `bad_records_held` counts it (it must stay 0).

use std::collections::{BTreeMap, BinaryHeap, HashMap, HashSet};
use std::net::SocketAddr;

use foca::{State, Timer};

use crate::envelope::{self, Reject, Sender};
use crate::gossip::{lan_config, Event, Gossip, Output};
use crate::keys::{GossipKey, Keyring};
use crate::member::NodeId;
use crate::records::{Body, DeviceHealth, DeviceHealthState, DeviceState, HostHealth};
use crate::roster::{Roster, RosterHost};

/// Network faults, as probabilities per datagram and delays in virtual ms.
#[derive(Debug, Clone, Copy)]
pub struct Faults {
    pub loss: f64,
    pub duplicate: f64,
    /// Delivery delay, uniform in [min, max] ms: a spread reorders.
    pub delay_ms: (u64, u64),
    /// A datagram delivered with one random bit flipped.
    pub bit_flip: f64,
    /// A datagram delivered cut short.
    pub truncate: f64,
    /// An old datagram (captured earlier) delivered again.
    pub replay: f64,
}

impl Faults {
    pub fn none() -> Faults {
        Faults { loss: 0.0, duplicate: 0.0, delay_ms: (1, 3), bit_flip: 0.0, truncate: 0.0, replay: 0.0 }
    }

    /// Every kind of fault at once, at rates that still let a cluster work.
    pub fn hostile() -> Faults {
        Faults { loss: 0.05, duplicate: 0.05, delay_ms: (1, 40), bit_flip: 0.02, truncate: 0.01, replay: 0.02 }
    }
}

/// Totals of what the network did and what the hosts refused.
#[derive(Debug, Clone, Default)]
pub struct SimStats {
    pub sent: u64,
    pub delivered: u64,
    pub lost: u64,
    pub duplicated: u64,
    pub flipped: u64,
    pub truncated: u64,
    pub replayed: u64,
    pub forged: u64,
    /// Datagrams refused, by reason.
    pub rejected: BTreeMap<&'static str, u64>,
    /// Damaged or forged datagrams that were accepted (must stay 0).
    pub damaged_accepted: u64,
    /// Datagrams a host accepted a second time (must stay 0).
    pub replays_accepted: u64,
}

#[derive(Debug)]
enum Ev {
    Deliver {
        to: u32,
        datagram: Vec<u8>,
        damaged: bool,
    },
    Timer {
        host: u32,
        life: u64,
        timer: Timer<NodeId>,
    },
    /// `again`: the periodic republish (schedules the next one); else a
    /// change published at once.
    Publish {
        host: u32,
        life: u64,
        again: bool,
    },
    Announce {
        host: u32,
        life: u64,
    },
    Pull {
        host: u32,
        life: u64,
    },
}

#[derive(Debug)]
struct Queued {
    at: u64,
    seq: u64,
    ev: Ev,
}

impl PartialEq for Queued {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.seq) == (o.at, o.seq)
    }
}
impl Eq for Queued {}
impl PartialOrd for Queued {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Queued {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        // A min-heap on (time, insertion order).
        (o.at, o.seq).cmp(&(self.at, self.seq))
    }
}

/// A small deterministic generator (splitmix64).
#[derive(Debug, Clone)]
pub struct SimRng(u64);

impl SimRng {
    pub fn new(seed: u64) -> SimRng {
        SimRng(seed ^ 0x9e37_79b9_7f4a_7c15)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
    pub fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && ((self.next_u64() >> 11) as f64 / (1u64 << 53) as f64) < p
    }
}

struct Host {
    gossip: Option<Gossip>,
    /// Bumped at every restart: timers of an earlier life are ignored.
    life: u64,
    generation: u64,
    devices: Vec<DeviceHealth>,
    /// Paused (SIGSTOP): its datagrams and timers wait here, in order,
    /// until it resumes.
    paused: Option<Vec<Ev>>,
}

/// Republishing interval of unchanged health records (the agent's
/// default); a change is published at once.
pub const PUBLISH_INTERVAL_MS: u64 = 60_000;
/// Unknown roster hosts a host asks at each attempt.
pub const ANNOUNCE_FANOUT: usize = 3;
/// How often a host announces itself to roster hosts it has not heard of.
pub const ANNOUNCE_RETRY_MS: u64 = 1_000;
/// The simulated wall clock starts here (unix ms).
const EPOCH_MS: u64 = 1_800_000_000_000;

/// The simulated cluster.
pub struct Sim {
    pub now_ms: u64,
    roster: Roster,
    keyring: Keyring,
    hosts: Vec<Host>,
    queue: BinaryHeap<Queued>,
    seq: u64,
    rng: SimRng,
    pub faults: Faults,
    /// Datagrams from a to b are dropped.
    cut: HashSet<(u32, u32)>,
    /// Recent datagrams, for replays.
    captured: Vec<(u32, Vec<u8>)>,
    /// Every record each host sealed: (origin, generation, sequence) →
    /// bytes.
    truth: HashMap<(u32, u64, u64), Vec<u8>>,
    pub stats: SimStats,
    pub events: Vec<(u64, u32, Event)>,
    config: foca::Config,
    /// (receiver, sender, generation, sequence) of every datagram
    /// accepted, to catch one accepted twice.
    accepted: HashSet<(u32, u32, u64, u64)>,
}

impl std::fmt::Debug for Sim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sim").field("now_ms", &self.now_ms).field("hosts", &self.hosts.len()).finish_non_exhaustive()
    }
}

fn addr(host: u32) -> SocketAddr {
    SocketAddr::from(([10, (host >> 16) as u8, (host >> 8) as u8, host as u8], 7946))
}

/// A healthy device of the simulated hosts.
pub fn sim_device() -> DeviceHealth {
    DeviceHealth {
        state: DeviceState::Open,
        health: DeviceHealthState::Healthy,
        capacity_bytes: 1 << 40,
        free_bytes: 1 << 39,
        used_bytes: 1 << 39,
        shards: 1000,
        io_errors: 0,
        checksum_errors: 0,
        read_p50_us: 200,
        read_p99_us: 2000,
        commit_p50_us: 500,
        commit_p99_us: 5000,
        scrub_oldest_unverified_s: Some(3600),
        scrub_deadline_s: 14 * 86400,
        damaged_shards: 0,
    }
}

impl Sim {
    /// A cluster of `n` hosts (ids 1..=n, two failure domains), all
    /// started; foca's LAN settings for `n`.
    pub fn new(n: u32, seed: u64, faults: Faults) -> Sim {
        Sim::with_config(n, seed, faults, lan_config(n as usize))
    }

    pub fn with_config(n: u32, seed: u64, faults: Faults, config: foca::Config) -> Sim {
        let roster = Roster {
            cluster: "sim".into(),
            epoch: 1,
            code: None,
            hosts: (1..=n)
                .map(|id| RosterHost {
                    id,
                    name: None,
                    gossip: addr(id),
                    http: SocketAddr::new(addr(id).ip(), 8080),
                    domain: format!("d{}", id % 2),
                    weight: 1.0,
                })
                .collect(),
        };
        let keyring = Keyring::new(vec![GossipKey::new(1, [0x5a; 32])]).expect("one key");
        let mut sim = Sim {
            now_ms: EPOCH_MS,
            roster,
            keyring,
            hosts: Vec::new(),
            queue: BinaryHeap::new(),
            seq: 0,
            rng: SimRng::new(seed),
            faults,
            cut: HashSet::new(),
            captured: Vec::new(),
            truth: HashMap::new(),
            stats: SimStats::default(),
            events: Vec::new(),
            config,
            accepted: HashSet::new(),
        };
        for id in 1..=n {
            sim.hosts.push(Host {
                gossip: None,
                life: 0,
                generation: EPOCH_MS / 1000 - 1000,
                devices: vec![sim_device(), sim_device()],
                paused: None,
            });
            sim.start(id);
        }
        sim
    }

    fn host(&mut self, id: u32) -> &mut Host {
        &mut self.hosts[(id - 1) as usize]
    }

    fn schedule(&mut self, after_ms: u64, ev: Ev) {
        self.seq += 1;
        self.queue.push(Queued { at: self.now_ms + after_ms, seq: self.seq, ev });
    }

    /// Starts (or restarts, in a new life) a host; it announces itself
    /// to roster hosts it has not heard of (`Gossip::join_step`).
    pub fn start(&mut self, id: u32) {
        let now_s = self.now_ms / 1000;
        let seed = self.rng.next_u64();
        let (roster, keyring, config, now) =
            (self.roster.clone(), self.keyring.clone(), self.config.clone(), self.now_ms);
        let h = self.host(id);
        h.life += 1;
        h.generation = crate::member::next_generation(h.generation, now_s);
        let me = NodeId { host: id, generation: h.generation, addr: addr(id) };
        h.gossip = Some(Gossip::new(me, roster, keyring, config, seed, now));
        let life = h.life;
        let jitter = self.rng.below(200);
        self.schedule(jitter, Ev::Announce { host: id, life });
        let jitter = self.rng.below(PUBLISH_INTERVAL_MS);
        self.schedule(jitter.min(500), Ev::Publish { host: id, life, again: true });
        let jitter = self.rng.below(PUBLISH_INTERVAL_MS / 2);
        self.schedule(jitter, Ev::Pull { host: id, life });
    }

    /// Kills a host (no goodbye): its pending events are dropped.
    pub fn kill(&mut self, id: u32) {
        let h = self.host(id);
        h.gossip = None;
        h.paused = None;
        h.life += 1;
    }

    /// Stops a host cleanly: it tells the others it leaves.
    pub fn stop(&mut self, id: u32) {
        let now = self.now_ms;
        if let Some(g) = self.host(id).gossip.as_mut() {
            let out = g.leave(now);
            self.take(id, out);
        }
        self.kill(id);
    }

    /// Pauses a host as SIGSTOP does: nothing it receives is read and
    /// none of its timers fire until `resume`; then all of it arrives at
    /// once, late.
    pub fn pause(&mut self, id: u32) {
        let h = self.host(id);
        if h.gossip.is_some() && h.paused.is_none() {
            h.paused = Some(Vec::new());
        }
    }

    /// Resumes a paused host (SIGCONT).
    pub fn resume(&mut self, id: u32) {
        if let Some(held) = self.host(id).paused.take() {
            for ev in held {
                self.schedule(0, ev);
            }
        }
    }

    pub fn is_running(&self, id: u32) -> bool {
        self.hosts[(id - 1) as usize].gossip.is_some()
    }

    /// Splits the hosts into groups that cannot reach one another.
    pub fn partition(&mut self, groups: &[Vec<u32>]) {
        for (i, a) in groups.iter().enumerate() {
            for (j, b) in groups.iter().enumerate() {
                if i != j {
                    for &x in a {
                        for &y in b {
                            self.cut.insert((x, y));
                        }
                    }
                }
            }
        }
    }

    /// Drops datagrams from `a` to `b` only.
    pub fn cut_one_way(&mut self, a: u32, b: u32) {
        self.cut.insert((a, b));
    }

    pub fn heal(&mut self) {
        self.cut.clear();
    }

    /// Changes a device of a host; the host publishes at once.
    pub fn set_device(&mut self, id: u32, slot: usize, change: impl FnOnce(&mut DeviceHealth)) {
        change(&mut self.host(id).devices[slot]);
        let life = self.host(id).life;
        self.schedule(0, Ev::Publish { host: id, life, again: false });
    }

    fn bodies(&self, id: u32) -> Vec<Body> {
        let h = &self.hosts[(id - 1) as usize];
        let mut bodies = vec![Body::Host(HostHealth {
            roster_epoch: self.roster.epoch,
            uptime_s: 1,
            accepting_reads: true,
            accepting_writes: true,
            maintenance: false,
            devices: h.devices.len() as u16,
            version: "sim".into(),
            gossip_rejected: vec![0; Reject::ALL.len()],
        })];
        for (slot, d) in h.devices.iter().enumerate() {
            bodies.push(Body::Device { slot: slot as u16, device: d.clone() });
        }
        bodies
    }

    /// Handles what a host's gossip asked for.
    fn take(&mut self, from: u32, out: Output) {
        let life = self.host(from).life;
        for (timer, after) in out.timers {
            self.schedule(after.as_millis() as u64, Ev::Timer { host: from, life, timer });
        }
        for e in out.events {
            if let Event::Rejoined(id) = e {
                self.host(from).generation = id.generation;
            }
            self.events.push((self.now_ms, from, e));
        }
        for (to_addr, datagram) in out.datagrams {
            let Some(to) = self.roster.hosts.iter().find(|h| h.gossip == to_addr).map(|h| h.id) else { continue };
            self.send(from, to, &datagram);
        }
    }

    /// Puts a datagram on the simulated wire, with the faults.
    fn send(&mut self, from: u32, to: u32, datagram: &[u8]) {
        self.stats.sent += 1;
        if self.captured.len() < 4096 {
            self.captured.push((to, datagram.to_vec()));
        } else {
            let i = self.rng.below(4096) as usize;
            self.captured[i] = (to, datagram.to_vec());
        }
        if self.cut.contains(&(from, to)) || self.rng.chance(self.faults.loss) {
            self.stats.lost += 1;
            return;
        }
        let copies = if self.rng.chance(self.faults.duplicate) {
            self.stats.duplicated += 1;
            2
        } else {
            1
        };
        for _ in 0..copies {
            let (lo, hi) = self.faults.delay_ms;
            let delay = lo + self.rng.below(hi - lo + 1);
            let mut d = datagram.to_vec();
            let mut damaged = false;
            if self.rng.chance(self.faults.bit_flip) {
                let bit = self.rng.below(d.len() as u64 * 8) as usize;
                d[bit / 8] ^= 1 << (bit % 8);
                self.stats.flipped += 1;
                damaged = true;
            } else if self.rng.chance(self.faults.truncate) {
                d.truncate(self.rng.below(d.len() as u64) as usize);
                self.stats.truncated += 1;
                damaged = true;
            }
            self.schedule(delay, Ev::Deliver { to, datagram: d, damaged });
        }
        if self.rng.chance(self.faults.replay) && !self.captured.is_empty() {
            let i = self.rng.below(self.captured.len() as u64) as usize;
            let (to, old) = self.captured[i].clone();
            self.stats.replayed += 1;
            // A replay is a copy of something sent before: its sequence
            // was seen (or is about to be), so it must never be applied
            // twice; it is not counted as damage if it is the first copy
            // to arrive.
            self.schedule(self.faults.delay_ms.1 + 1, Ev::Deliver { to, datagram: old, damaged: false });
        }
    }

    /// Delivers a datagram to a host now; returns what it said.
    pub fn deliver(&mut self, to: u32, datagram: &[u8]) -> Option<Result<(), Reject>> {
        let now = self.now_ms;
        let g = self.host(to).gossip.as_mut()?;
        let result = g.handle_datagram(datagram, now);
        Some(match result {
            Ok(out) => {
                self.stats.delivered += 1;
                let field =
                    |at: usize, n: usize| datagram[at..at + n].iter().rev().fold(0u64, |v, b| v << 8 | u64::from(*b));
                let id = (to, field(16, 4) as u32, field(20, 8), field(28, 8));
                if !self.accepted.insert(id) {
                    self.stats.replays_accepted += 1;
                }
                self.take(to, out);
                Ok(())
            }
            Err(why) => {
                *self.stats.rejected.entry(why.name()).or_default() += 1;
                Err(why)
            }
        })
    }

    /// Sends a datagram sealed with `keyring` as if from `sender` (a
    /// forgery, a wrong key, an old life).
    pub fn forge(&mut self, to: u32, keyring: &Keyring, sender: Sender, payload: &[u8]) -> Option<Result<(), Reject>> {
        self.stats.forged += 1;
        let d = envelope::seal(keyring, self.roster.cluster_id(), sender, payload);
        let r = self.deliver(to, &d);
        if matches!(r, Some(Ok(()))) {
            self.stats.damaged_accepted += 1;
        }
        r
    }

    /// Runs events until the virtual clock reaches `until_ms` (absolute).
    pub fn run_until(&mut self, until_ms: u64) {
        // Bounded: a runaway of events is a bug, not a long simulation.
        let mut budget: u64 = 200_000_000;
        while let Some(q) = self.queue.peek() {
            if q.at > until_ms {
                break;
            }
            budget -= 1;
            assert!(budget > 0, "the simulation did not settle");
            let q = self.queue.pop().expect("peeked");
            self.now_ms = self.now_ms.max(q.at);
            self.step(q.ev);
        }
        self.now_ms = self.now_ms.max(until_ms);
    }

    /// Runs for `ms` more virtual milliseconds.
    pub fn run_for(&mut self, ms: u64) {
        self.run_until(self.now_ms + ms);
    }

    fn step(&mut self, ev: Ev) {
        let now = self.now_ms;
        let target = match &ev {
            Ev::Deliver { to, .. } => *to,
            Ev::Timer { host, .. } | Ev::Publish { host, .. } | Ev::Announce { host, .. } | Ev::Pull { host, .. } => {
                *host
            }
        };
        if let Some(held) = self.host(target).paused.as_mut() {
            held.push(ev);
            return;
        }
        match ev {
            Ev::Deliver { to, datagram, damaged } => {
                if let Some(Ok(())) = self.deliver(to, &datagram) {
                    if damaged {
                        self.stats.damaged_accepted += 1;
                    }
                }
            }
            Ev::Timer { host, life, timer } => {
                if self.host(host).life != life {
                    return;
                }
                if let Some(g) = self.host(host).gossip.as_mut() {
                    let out = g.handle_timer(timer, now);
                    self.take(host, out);
                }
            }
            Ev::Publish { host, life, again } => {
                if self.host(host).life != life {
                    return;
                }
                let bodies = self.bodies(host);
                if let Some(g) = self.host(host).gossip.as_mut() {
                    let out = g.publish(bodies, now);
                    let own = g.records_of(host);
                    for held in own {
                        let r = &held.record;
                        self.truth.entry((r.origin, r.generation, r.sequence)).or_insert(held.bytes);
                    }
                    self.take(host, out);
                }
                if again {
                    self.schedule(PUBLISH_INTERVAL_MS, Ev::Publish { host, life, again });
                }
            }
            Ev::Pull { host, life } => {
                if self.host(host).life != life {
                    return;
                }
                self.pull(host);
                self.schedule(PUBLISH_INTERVAL_MS / 2, Ev::Pull { host, life });
            }
            Ev::Announce { host, life } => {
                if self.host(host).life != life {
                    return;
                }
                if let Some(g) = self.host(host).gossip.as_mut() {
                    let out = g.join_step(ANNOUNCE_FANOUT, now);
                    self.take(host, out);
                }
                self.schedule(ANNOUNCE_RETRY_MS, Ev::Announce { host, life });
            }
        }
    }

    /// The agent's periodic pull over HTTP, modelled: `host` takes every
    /// record a random peer it sees alive holds (unless the network
    /// between them is cut; the request's loss is not modelled).
    fn pull(&mut self, host: u32) {
        let now = self.now_ms;
        let peers: Vec<u32> = (1..=self.hosts.len() as u32)
            .filter(|&p| p != host && !self.cut.contains(&(p, host)) && self.hosts[(p - 1) as usize].paused.is_none())
            .filter(|&p| self.state(host, p).is_some_and(|(_, s)| s == State::Alive))
            .collect();
        if peers.is_empty() {
            return;
        }
        let peer = peers[self.rng.below(peers.len() as u64) as usize];
        let Some(records) = self.hosts[(peer - 1) as usize].gossip.as_ref().map(Gossip::held_records) else { return };
        if let Some(g) = self.host(host).gossip.as_mut() {
            g.ingest_records(records.iter().map(Vec::as_slice), now);
        }
    }

    /// How `observer` sees `host` (None: never heard of it).
    pub fn state(&self, observer: u32, host: u32) -> Option<(NodeId, State)> {
        self.hosts[(observer - 1) as usize].gossip.as_ref()?.state_of(host)
    }

    /// The generation `host` runs with now.
    pub fn generation(&self, host: u32) -> u64 {
        self.hosts[(host - 1) as usize].generation
    }

    /// Hosts running now.
    pub fn running(&self) -> Vec<u32> {
        (1..=self.hosts.len() as u32).filter(|h| self.is_running(*h)).collect()
    }

    /// Whether every running host other than `host` sees it in `state`
    /// (in its current life, for alive).
    pub fn all_see(&self, host: u32, state: State) -> bool {
        let generation = self.generation(host);
        self.running().into_iter().filter(|o| *o != host).all(|o| match self.state(o, host) {
            Some((id, s)) => s == state && (state != State::Alive || id.generation == generation),
            None => false,
        })
    }

    /// Whether every running host holds `origin`'s record of device `slot`
    /// with a sequence of at least `sequence`, in its current life.
    pub fn all_hold(&self, origin: u32, slot: u16, sequence: u64) -> bool {
        let generation = self.generation(origin);
        self.running().into_iter().filter(|o| *o != origin).all(|o| {
            let g = self.hosts[(o - 1) as usize].gossip.as_ref().expect("running");
            g.records_of(origin).iter().any(|h| {
                matches!(h.record.body, Body::Device { slot: s, .. } if s == slot)
                    && h.record.generation == generation
                    && h.record.sequence >= sequence
            })
        })
    }

    /// The sequence of `origin`'s latest record of device `slot`.
    pub fn published_sequence(&self, origin: u32, slot: u16) -> Option<u64> {
        let g = self.hosts[(origin - 1) as usize].gossip.as_ref()?;
        g.records_of(origin)
            .iter()
            .filter(|h| matches!(h.record.body, Body::Device { slot: s, .. } if s == slot))
            .map(|h| h.record.sequence)
            .max()
    }

    /// Records held by any running host that are not byte for byte what
    /// their origin sealed: altered or forged records that got in.
    pub fn bad_records_held(&self) -> u64 {
        let mut bad = 0;
        for o in self.running() {
            let g = self.hosts[(o - 1) as usize].gossip.as_ref().expect("running");
            for origin in 1..=self.hosts.len() as u32 {
                for h in g.records_of(origin) {
                    let r = &h.record;
                    if self.truth.get(&(r.origin, r.generation, r.sequence)) != Some(&h.bytes) {
                        bad += 1;
                    }
                }
            }
        }
        bad
    }

    /// Records held in all, over every running host.
    pub fn records_held(&self) -> u64 {
        self.running()
            .into_iter()
            .map(|o| {
                let g = self.hosts[(o - 1) as usize].gossip.as_ref().expect("running");
                (1..=self.hosts.len() as u32).map(|origin| g.records_of(origin).len() as u64).sum::<u64>()
            })
            .sum()
    }

    /// Some datagrams sent recently (for flipping every bit of them).
    pub fn samples(&mut self, count: usize) -> Vec<(u32, Vec<u8>)> {
        (0..count.min(self.captured.len()))
            .map(|_| {
                let i = self.rng.below(self.captured.len() as u64) as usize;
                self.captured[i].clone()
            })
            .collect()
    }

    pub fn roster(&self) -> &Roster {
        &self.roster
    }

    pub fn keyring(&self) -> &Keyring {
        &self.keyring
    }

    /// Gossip counters of a running host.
    pub fn counters(&self, host: u32) -> Option<crate::gossip::Counters> {
        Some(self.hosts[(host - 1) as usize].gossip.as_ref()?.counters())
    }

    pub fn gossip(&self, host: u32) -> Option<&Gossip> {
        self.hosts[(host - 1) as usize].gossip.as_ref()
    }

    /// Runs until `cond` holds, checking every `step_ms`, for at most
    /// `limit_ms`; returns the virtual time it took, or None.
    pub fn time_until(&mut self, limit_ms: u64, step_ms: u64, mut cond: impl FnMut(&Sim) -> bool) -> Option<u64> {
        let start = self.now_ms;
        while self.now_ms - start <= limit_ms {
            if cond(self) {
                return Some(self.now_ms - start);
            }
            self.run_for(step_ms);
        }
        None
    }
}
