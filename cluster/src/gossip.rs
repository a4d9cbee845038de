//! One host's gossip, sans-IO: foca for membership, our envelope around
//! every datagram, our records as custom broadcasts. The caller (the
//! agent's UDP task, or the simulator) feeds in datagrams, timer events
//! and the clock, and takes out datagrams to send, timers to set and
//! membership events.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use foca::{Foca, OwnedNotification, Runtime, State, Timer};
use rand::rngs::StdRng;
use rand::SeedableRng;
use serde::Serialize;

use crate::envelope::{self, Opener, Reject, Sender};
use crate::keys::Keyring;
use crate::member::{addresses_of, Addresses, NodeId, WireCodec};
use crate::records::{self, Body, Held, Record, RecordBook, RecordStore, Veto};
use crate::roster::Roster;

/// A membership change, for logs and the view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    MemberUp(NodeId),
    MemberDown(NodeId),
    /// A host came back in a new life (`from` → `to`).
    Renamed {
        from: NodeId,
        to: NodeId,
    },
    /// This host is known by at least one active member.
    Active,
    /// Every known member left or is down.
    Idle,
    /// This host was declared down and rejoined in a new life.
    Rejoined(NodeId),
    /// This host was declared down and cannot rejoin by itself.
    Defunct,
}

/// Gossip totals since start.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Counters {
    pub datagrams_sent: u64,
    pub datagrams_received: u64,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    /// Datagrams dropped, by reason (`Reject::ALL` order).
    pub rejected: [u64; Reject::ALL.len()],
    /// Datagrams that passed the envelope but foca refused.
    pub foca_errors: u64,
    /// "You are down" messages foca queued for members that had refuted
    /// their suspicion (see `Gossip::refuted_since_suspected`), not sent.
    pub turn_undead_withheld: u64,
    /// Messages telling a suspected member it is suspected.
    pub suspicions_told: u64,
    pub records_accepted: u64,
    /// Records vetoed, by reason (`Veto::ALL` order).
    pub records_vetoed: [u64; Veto::ALL.len()],
}

/// Collects what foca asks of its runtime during one call.
#[derive(Debug, Default)]
struct Outbox {
    sends: Vec<(NodeId, Vec<u8>)>,
    timers: Vec<(Timer<NodeId>, Duration)>,
    notes: Vec<OwnedNotification<NodeId>>,
}

impl Runtime<NodeId> for Outbox {
    fn notify(&mut self, notification: foca::Notification<'_, NodeId>) {
        self.notes.push(notification.to_owned());
    }

    fn send_to(&mut self, to: NodeId, data: &[u8]) {
        self.sends.push((to, data.to_vec()));
    }

    fn submit_after(&mut self, event: Timer<NodeId>, after: Duration) {
        self.timers.push((event, after));
    }
}

/// What the caller must do after a call.
#[derive(Debug, Default)]
pub struct Output {
    /// Datagrams to send, sealed.
    pub datagrams: Vec<(SocketAddr, Vec<u8>)>,
    /// Timers to fire after a delay (pass them back to `handle_timer`).
    pub timers: Vec<(Timer<NodeId>, Duration)>,
    pub events: Vec<Event>,
}

/// One member as this host sees it.
#[derive(Debug, Clone, Serialize)]
pub struct MemberView {
    pub host: u32,
    pub name: String,
    pub domain: String,
    pub gossip: SocketAddr,
    pub http: SocketAddr,
    /// `alive`, `suspect`, `down`, or `unknown` (never heard).
    pub state: &'static str,
    pub generation: Option<u64>,
    /// Milliseconds since a datagram from it last passed every check.
    pub last_heard_ms_ago: Option<u64>,
    pub records: Vec<HeldView>,
}

/// A held record and its age.
#[derive(Debug, Clone, Serialize)]
pub struct HeldView {
    pub age_ms: u64,
    pub generation: u64,
    pub sequence: u64,
    #[serde(flatten)]
    pub body: Body,
}

impl HeldView {
    fn of(h: &Held, now_ms: u64) -> HeldView {
        HeldView {
            age_ms: now_ms.saturating_sub(h.record.published_ms),
            generation: h.record.generation,
            sequence: h.record.sequence,
            body: h.record.body.clone(),
        }
    }
}

type Swim = Foca<NodeId, WireCodec, StdRng, RecordStore>;

/// A timer foca asked for, to hand back to `Gossip::handle_timer`.
pub type SwimTimer = Timer<NodeId>;

/// One host's gossip state.
pub struct Gossip {
    me: NodeId,
    roster: Roster,
    keyring: Keyring,
    foca: Swim,
    /// The records held, shared with foca's handler.
    book: Arc<std::sync::Mutex<RecordBook>>,
    opener: Opener,
    /// Roster hosts' gossip addresses, shared with the codec.
    addresses: Addresses,
    datagram_seq: u64,
    record_seq: u64,
    /// This life's SWIM incarnation, as foca's messages carry it.
    incarnation: u16,
    join_cursor: u64,
    /// Members seen suspect, since when (ms).
    suspected: HashMap<(NodeId, u16), u64>,
    suspect_to_down_ms: u64,
    last_heard: HashMap<u32, u64>,
    counters: Counters,
    outbox: Outbox,
    now_ms: u64,
}

impl std::fmt::Debug for Gossip {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gossip").field("me", &self.me).field("epoch", &self.roster.epoch).finish_non_exhaustive()
    }
}

/// The suspicion timeout in probe periods, times max(1, log10 N).
pub const SUSPICION_MULTIPLIER: f64 = 3.0;

/// foca's settings for a cluster of `hosts`: memberlist's LAN defaults,
/// with the packet size our envelope leaves, twice the retransmissions
/// and a suspicion of 3 (not 4) x max(1, log10 N) probe periods.
pub fn lan_config(hosts: usize) -> foca::Config {
    let mut c = foca::Config::new_lan(std::num::NonZeroU32::new(hosts.max(1) as u32).expect("at least 1"));
    c.max_packet_size = std::num::NonZeroUsize::new(envelope::PAYLOAD_BYTES_MAX).expect("nonzero");
    // Twice memberlist's retransmissions (8 x log10(N + 1) instead of 4):
    // measured in the simulator (examples/gossip_bench.rs, BENCHMARKS.md),
    // with 4 a health change missed some host about one time in three at
    // 10 hosts and nearly always under 50% loss (it then waited for the
    // next republish), and live hosts were declared down under 50% loss;
    // with 8, every change reached every host within a second and no live
    // host was declared down, for about twice the bytes (23 KB/s per host
    // at 100 hosts).
    c.max_transmissions = std::num::NonZeroU8::new(c.max_transmissions.get().saturating_mul(2)).expect("nonzero");
    // Suspicion 3 x max(1, log10 N) probe periods instead of memberlist's 4
    // x: measured in the simulator with the retransmissions above and the
    // suspects told (`tell_suspects`), a dead host is seen down by all in
    // 7.9 s at 100 hosts instead of 10.6 s (chitchat publishes < 10 s),
    // with no live host declared down at 50% loss at 10 to 200 hosts.
    c.suspect_to_down_after =
        c.probe_period.mul_f64(SUSPICION_MULTIPLIER * f64::max(1.0, (hosts.max(1) as f64).log10()));
    c
}

impl Gossip {
    /// A host of `roster` in the life `me`.
    pub fn new(me: NodeId, roster: Roster, keyring: Keyring, config: foca::Config, seed: u64, now_ms: u64) -> Gossip {
        assert!(config.max_packet_size.get() <= envelope::PAYLOAD_BYTES_MAX, "foca's packets must fit the envelope");
        let suspect_to_down = config.suspect_to_down_after;
        let addresses: Addresses = Arc::new(std::sync::RwLock::new(addresses_of(&roster)));
        let mut book = RecordBook::new(keyring.clone(), me.host, roster.hosts.iter().map(|h| h.id));
        book.now_ms = now_ms;
        let book = Arc::new(std::sync::Mutex::new(book));
        let codec = WireCodec::with_roster(Arc::clone(&addresses));
        let foca =
            Foca::with_custom_broadcast(me, config, StdRng::seed_from_u64(seed), codec, RecordStore(Arc::clone(&book)));
        Gossip {
            me,
            book,
            opener: Opener::new(keyring.clone(), roster.cluster_id()),
            roster,
            keyring,
            foca,
            addresses,
            datagram_seq: 0,
            record_seq: 0,
            incarnation: 0,
            join_cursor: seed,
            suspected: HashMap::new(),
            suspect_to_down_ms: suspect_to_down.as_millis() as u64,
            last_heard: HashMap::new(),
            counters: Counters::default(),
            outbox: Outbox::default(),
            now_ms,
        }
    }

    pub fn me(&self) -> NodeId {
        *self.foca.identity()
    }

    pub fn roster(&self) -> &Roster {
        &self.roster
    }

    pub fn counters(&self) -> Counters {
        let mut c = self.counters.clone();
        let book = self.book();
        c.records_accepted = book.accepted;
        c.records_vetoed = book.vetoed;
        c
    }

    fn address_of(&self, host: u32) -> Option<SocketAddr> {
        self.addresses.read().expect("the address map is never poisoned").get(&host).copied()
    }

    fn book(&self) -> std::sync::MutexGuard<'_, RecordBook> {
        self.book.lock().expect("the record book is never poisoned")
    }

    fn set_clock(&mut self, now_ms: u64) {
        self.now_ms = self.now_ms.max(now_ms);
        let now = self.now_ms;
        self.book().now_ms = now;
    }

    /// Asks a roster host to let this one in (a seed). Call again until
    /// `Event::Active` arrives.
    pub fn announce(&mut self, host: u32, now_ms: u64) -> Output {
        self.set_clock(now_ms);
        if let Some(addr) = self.address_of(host) {
            let dst = NodeId { host, generation: 0, addr };
            if let Err(e) = self.foca.announce(dst, &mut self.outbox) {
                tracing::debug!(host, error = %e, "announce failed");
            }
        }
        self.drain()
    }

    /// Announces this host to up to `fanout` roster hosts it has never
    /// heard of (all of them are unknown before the first answer). Called
    /// every second or so: a joining host retries its seeds until one
    /// answers, and a host some update never reached still finds every
    /// roster host within seconds instead of waiting for foca's periodic
    /// announce (30 s). Does nothing once every roster host is known.
    pub fn join_step(&mut self, fanout: usize, now_ms: u64) -> Output {
        self.set_clock(now_ms);
        let known: std::collections::HashSet<u32> = self.foca.iter_membership_state().map(|m| m.id().host).collect();
        let unknown: Vec<u32> =
            self.roster.hosts.iter().map(|h| h.id).filter(|h| *h != self.me.host && !known.contains(h)).collect();
        self.expire_suspicions();
        self.tell_suspects();
        for i in 0..fanout.min(unknown.len()) {
            self.join_cursor = self.join_cursor.wrapping_add(1);
            let host = unknown[(self.join_cursor as usize + i * 7919) % unknown.len()];
            let Some(addr) = self.address_of(host) else { continue };
            if let Err(e) = self.foca.announce(NodeId { host, generation: 0, addr }, &mut self.outbox) {
                tracing::debug!(host, error = %e, "announce failed");
            }
        }
        self.drain()
    }

    /// Tells every member this host suspects that it is suspected (the
    /// "buddy system" of memberlist and Lifeguard). foca spreads a
    /// suspicion only as a piggybacked update with a few transmissions,
    /// which may all go to other members: a host that was paused (SIGSTOP,
    /// a stall) then learns of it too late to refute, and is declared
    /// down though it is alive. A SWIM `Gossip` message carrying the one
    /// update reaches it directly; its foca refutes as for any suspicion.
    fn tell_suspects(&mut self) {
        let suspects: Vec<foca::Member<NodeId>> =
            self.foca.iter_membership_state().filter(|m| m.state() == State::Suspect).cloned().collect();
        let me = self.me();
        for m in suspects {
            let header = foca::Header {
                src: me,
                src_incarnation: self.incarnation,
                dst: *m.id(),
                message: foca::Message::Gossip,
            };
            let mut payload = Vec::with_capacity(64);
            let mut codec = WireCodec::default();
            if foca::Codec::encode_header(&mut codec, &header, &mut payload).is_err() {
                continue;
            }
            payload.extend_from_slice(&1u16.to_be_bytes());
            if foca::Codec::encode_member(&mut codec, &m, &mut payload).is_err() {
                continue;
            }
            self.counters.suspicions_told += 1;
            self.outbox.sends.push((*m.id(), payload));
        }
    }

    /// Declares down a member that stayed suspect for twice the suspicion
    /// timeout. foca runs the suspect-to-down timer only on the host whose
    /// probe failed; if that host renews its identity (after a partition)
    /// the timer is lost, and a member that never heard it was suspected
    /// stays suspect everywhere. Every host resolving such a stale
    /// suspicion on its own brings it back to SWIM's bound: the member
    /// learns it is down, renews and rejoins.
    fn expire_suspicions(&mut self) {
        let limit = 2 * self.suspect_to_down_ms;
        let now = self.now_ms;
        let suspects: Vec<(NodeId, u16)> = self
            .foca
            .iter_membership_state()
            .filter(|m| m.state() == State::Suspect)
            .map(|m| (*m.id(), m.incarnation()))
            .collect();
        self.suspected.retain(|k, _| suspects.contains(k));
        let mut expired = Vec::new();
        for k in suspects {
            let since = *self.suspected.entry(k).or_insert(now);
            if now.saturating_sub(since) > limit {
                expired.push(foca::Member::new(k.0, k.1, State::Down));
            }
        }
        if !expired.is_empty() {
            tracing::info!(count = expired.len(), "members suspect for too long declared down");
            if let Err(e) = self.foca.apply_many(expired.into_iter(), true, &mut self.outbox) {
                tracing::debug!(error = %e, "declaring stale suspects down failed");
            }
        }
    }

    /// A datagram arrived. Every check of the envelope runs before foca
    /// sees a byte; a refused datagram changes nothing but the counters.
    pub fn handle_datagram(&mut self, datagram: &[u8], now_ms: u64) -> Result<Output, Reject> {
        self.set_clock(now_ms);
        self.counters.datagrams_received += 1;
        self.counters.bytes_received += datagram.len() as u64;
        let result = self.open(datagram);
        let (sender, payload) = match result {
            Ok(ok) => ok,
            Err(why) => {
                self.counters.rejected[why.index()] += 1;
                return Err(why);
            }
        };
        self.last_heard.insert(sender.host, self.now_ms);
        if let Err(e) = self.foca.handle_data(payload, &mut self.outbox) {
            self.counters.foca_errors += 1;
            tracing::debug!(host = sender.host, error = %e, "SWIM message refused");
        }
        Ok(self.drain())
    }

    fn open<'a>(&mut self, datagram: &'a [u8]) -> Result<(Sender, &'a [u8]), Reject> {
        let addresses = Arc::clone(&self.addresses);
        let (sender, payload) = {
            let map = addresses.read().expect("the address map is never poisoned");
            self.opener.open(datagram, |h| map.contains_key(&h), self.now_ms / 1000)?
        };
        // The SWIM message must be from the life the envelope names, and
        // name roster hosts at their roster addresses.
        let header = WireCodec::with_roster(addresses).peek_header(payload).map_err(|_| Reject::Spoofed)?;
        if header.src.host != sender.host || header.src.generation != sender.generation {
            return Err(Reject::Spoofed);
        }
        Ok((sender, payload))
    }

    /// A timer foca asked for fired.
    pub fn handle_timer(&mut self, timer: Timer<NodeId>, now_ms: u64) -> Output {
        self.set_clock(now_ms);
        if let Err(e) = self.foca.handle_timer(timer, &mut self.outbox) {
            tracing::debug!(error = %e, "SWIM timer failed");
        }
        self.drain()
    }

    /// Publishes this host's facts: each body sealed as a record with the
    /// next sequence and handed to foca to disseminate. Call every few
    /// seconds even when nothing changed (foca has no anti-entropy of its
    /// own; a republished record also shows the origin is current).
    pub fn publish(&mut self, bodies: Vec<Body>, now_ms: u64) -> Output {
        self.set_clock(now_ms);
        for body in bodies {
            self.record_seq += 1;
            let record = Record {
                origin: self.me.host,
                generation: self.me().generation,
                sequence: self.record_seq,
                published_ms: self.now_ms,
                body,
            };
            let bytes = records::seal(&self.keyring, &record);
            match self.foca.add_broadcast(&bytes) {
                Ok(true) => {}
                Ok(false) => tracing::warn!("a health record of this host failed its own checks"),
                Err(e) => tracing::warn!(error = %e, "could not queue a health record"),
            }
        }
        if let Err(e) = self.foca.broadcast(&mut self.outbox) {
            tracing::debug!(error = %e, "broadcast failed");
        }
        self.drain()
    }

    /// Leaves the cluster (SIGTERM): members learn at once instead of
    /// suspecting.
    pub fn leave(&mut self, now_ms: u64) -> Output {
        self.set_clock(now_ms);
        let _ = self.foca.leave_cluster(&mut self.outbox);
        self.drain()
    }

    /// Adopts a newer signed roster (verified by the caller): same
    /// cluster, higher epoch, this host still on it. Hosts no longer on it
    /// are declared down and their datagrams and records refused from now
    /// on; new hosts are announced to by `join_step`.
    pub fn adopt_roster(&mut self, roster: Roster, now_ms: u64) -> Result<Output, String> {
        self.set_clock(now_ms);
        if roster.cluster != self.roster.cluster {
            return Err(format!("roster of cluster {:?}, not {:?}", roster.cluster, self.roster.cluster));
        }
        if roster.epoch <= self.roster.epoch {
            return Err(format!("epoch {} is not newer than {}", roster.epoch, self.roster.epoch));
        }
        let Some(mine) = roster.host(self.me.host) else {
            return Err(format!("host {} is not on roster epoch {}", self.me.host, roster.epoch));
        };
        if mine.gossip != self.me.addr {
            return Err(format!(
                "roster epoch {} moves this host's gossip address to {} (restart the agent to move it)",
                roster.epoch, mine.gossip
            ));
        }
        *self.addresses.write().expect("the address map is never poisoned") = addresses_of(&roster);
        self.book().set_roster(roster.hosts.iter().map(|h| h.id));
        let gone: Vec<foca::Member<NodeId>> = self
            .foca
            .iter_membership_state()
            .filter(|m| roster.host(m.id().host).is_none())
            .map(|m| foca::Member::new(*m.id(), m.incarnation(), State::Down))
            .collect();
        if !gone.is_empty() {
            if let Err(e) = self.foca.apply_many(gone.into_iter(), true, &mut self.outbox) {
                tracing::debug!(error = %e, "declaring hosts off the roster down failed");
            }
        }
        self.last_heard.retain(|h, _| roster.host(*h).is_some());
        self.roster = roster;
        Ok(self.drain())
    }

    /// Replaces the keyring (a key rotation step, `docs/cluster.md`):
    /// datagrams and records are sealed with its first key from now on and
    /// accepted under any of its keys.
    pub fn set_keyring(&mut self, keyring: Keyring) {
        self.opener.keyring = keyring.clone();
        self.book().set_keyring(keyring.clone());
        self.keyring = keyring;
    }

    /// The keyring in use.
    pub fn keyring(&self) -> &Keyring {
        &self.keyring
    }

    /// The highest roster epoch another host says it runs with, above
    /// this host's, and that host.
    pub fn newer_roster_seen(&self) -> Option<(u64, u32)> {
        let book = self.book();
        book.all()
            .filter_map(|h| match &h.record.body {
                Body::Host(host) if host.roster_epoch > self.roster.epoch => Some((host.roster_epoch, h.record.origin)),
                _ => None,
            })
            .max()
    }

    /// Every record held (this host's own included), sealed as received:
    /// what a late joiner fetches to catch up.
    pub fn held_records(&self) -> Vec<Vec<u8>> {
        self.book().all().map(|h| h.bytes.clone()).collect()
    }

    /// Records fetched from a peer (catch-up): each passes the same checks
    /// as one that arrived by gossip. Returns how many were taken.
    pub fn ingest_records<'a>(&mut self, records: impl IntoIterator<Item = &'a [u8]>, now_ms: u64) -> usize {
        self.set_clock(now_ms);
        let mut book = self.book();
        records.into_iter().filter(|r| book.receive(r, false).is_ok()).count()
    }

    /// The SWIM state of a host, if this host knows it.
    pub fn state_of(&self, host: u32) -> Option<(NodeId, State)> {
        self.foca
            .iter_membership_state()
            .filter(|m| m.id().host == host)
            .max_by_key(|m| m.id().generation)
            .map(|m| (*m.id(), m.state()))
    }

    /// Every record held from `origin` (this host's own as published).
    pub fn records_of(&self, origin: u32) -> Vec<Held> {
        self.book().of(origin).cloned().collect()
    }

    /// Every member of the roster as this host sees it.
    pub fn view(&self) -> Vec<MemberView> {
        self.roster
            .hosts
            .iter()
            .map(|h| {
                let state = if h.id == self.me.host { Some((self.me(), State::Alive)) } else { self.state_of(h.id) };
                let mut records: Vec<HeldView> =
                    self.records_of(h.id).iter().map(|r| HeldView::of(r, self.now_ms)).collect();
                records.sort_by_key(|r| match &r.body {
                    Body::Host(_) => 0,
                    Body::Device { slot, .. } => 1 + u32::from(*slot),
                });
                MemberView {
                    host: h.id,
                    name: h.display_name(),
                    domain: h.domain.clone(),
                    gossip: h.gossip,
                    http: h.http,
                    state: match state.map(|s| s.1) {
                        Some(State::Alive) => "alive",
                        Some(State::Suspect) => "suspect",
                        Some(State::Down) => "down",
                        None => "unknown",
                    },
                    generation: state.map(|s| s.0.generation),
                    last_heard_ms_ago: if h.id == self.me.host {
                        Some(0)
                    } else {
                        self.last_heard.get(&h.id).map(|t| self.now_ms.saturating_sub(*t))
                    },
                    records,
                }
            })
            .collect()
    }

    /// Whether a queued message is foca's "you are down" (`TurnUndead`) to
    /// a member this host does not hold down. foca 2.0.0 sends it when a
    /// suspicion timer fires even if the member refuted the suspicion in
    /// the meantime (its state check fails, but the message goes anyway),
    /// which makes a host that was only paused or slow (SIGSTOP, a long
    /// GC-like stall, a loaded machine) throw away its life and rejoin.
    /// Such a message is withheld; one to a member held down still goes.
    fn refuted_since_suspected(&self, to: &NodeId, payload: &[u8]) -> bool {
        let Ok(header) = WireCodec::default().peek_header(payload) else { return false };
        if header.message != foca::Message::TurnUndead {
            return false;
        }
        self.foca.iter_membership_state().any(|m| m.id() == to && m.state() != State::Down)
    }

    /// Seals what foca queued and turns its notifications into events.
    fn drain(&mut self) -> Output {
        let mut out = Output::default();
        let outbox = std::mem::take(&mut self.outbox);
        let me = self.me();
        for (to, payload) in outbox.sends {
            if let Ok(h) = WireCodec::default().peek_header(&payload) {
                // foca's own incarnation, as its messages carry it.
                if h.src == me {
                    self.incarnation = h.src_incarnation;
                }
            }
            if self.refuted_since_suspected(&to, &payload) {
                self.counters.turn_undead_withheld += 1;
                continue;
            }
            self.datagram_seq += 1;
            let sender = Sender { host: me.host, generation: me.generation, sequence: self.datagram_seq };
            let datagram = envelope::seal(&self.keyring, self.roster.cluster_id(), sender, &payload);
            self.counters.datagrams_sent += 1;
            self.counters.bytes_sent += datagram.len() as u64;
            out.datagrams.push((to.addr, datagram));
        }
        out.timers = outbox.timers;
        for note in outbox.notes {
            let event = match note {
                OwnedNotification::MemberUp(id) => Event::MemberUp(id),
                OwnedNotification::MemberDown(id) => Event::MemberDown(id),
                OwnedNotification::Rename(from, to) => Event::Renamed { from, to },
                OwnedNotification::Active => Event::Active,
                OwnedNotification::Idle => Event::Idle,
                OwnedNotification::Defunct => Event::Defunct,
                OwnedNotification::Rejoin(id) => {
                    // A new life: a new datagram sequence space.
                    self.me = id;
                    self.datagram_seq = 0;
                    self.incarnation = 0;
                    Event::Rejoined(id)
                }
                #[allow(unreachable_patterns)]
                _ => continue,
            };
            out.events.push(event);
        }
        out
    }
}

/// Converts `Veto` counters into named pairs (for views and metrics).
pub fn veto_counts(c: &Counters) -> Vec<(&'static str, u64)> {
    Veto::ALL.iter().map(|v| (v.name(), c.records_vetoed[*v as usize])).collect()
}

/// Converts reject counters into named pairs.
pub fn reject_counts(c: &Counters) -> Vec<(&'static str, u64)> {
    Reject::ALL.iter().map(|r| (r.name(), c.rejected[r.index()])).collect()
}
