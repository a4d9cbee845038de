//! The gossip loop: one tokio task owns the UDP socket and drives the
//! sans-IO gossip state with datagrams, foca's timers and the clock, and
//! every `join_interval_ms` announces this host to roster hosts it has not
//! heard of (its seeds, while it joins) and resolves stale suspicions. It
//! never waits on anything but its socket and its timers: a peer whose
//! HTTP hangs or a store thread that does not answer must not keep it
//! from answering probes, or its peers would suspect a healthy host.
//!
//! What does wait runs in two more tasks on the same interval, each
//! handing what the gossip state answers (datagrams, timers, events) to
//! the loop: the publisher publishes this host's health records when a
//! device changed (and every `publish_interval_ms` regardless); the puller
//! pulls one live peer's records over HTTP every half of that
//! (anti-entropy; the first pull is a late joiner's catch-up) and fetches
//! a newer roster a peer runs with. Apart, so that a publication never
//! waits for a pull from a peer that hangs. On stop the loop leaves the
//! cluster, so peers learn at once instead of suspecting it.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use shardnode_cluster::envelope::Reject;
use shardnode_cluster::gossip::{Event, Output, SwimTimer};
use shardnode_cluster::records::{Body, DeviceHealth, DeviceHealthState, DeviceState, HostHealth};
use shardstore::health::{CounterSnapshot, HealthState};
use tokio::net::UdpSocket;
use tokio::signal::unix::{signal, SignalKind};

use super::{peer, unix_ms, Cluster};
use crate::api::App;

/// Roster hosts not heard of yet that one join step announces to.
const JOIN_FANOUT: usize = 3;
/// A datagram refused for a reason is logged at most this often (the rest
/// are counted, and the count is logged with the next line).
const REJECT_LOG_EVERY: Duration = Duration::from_secs(10);
/// A newer roster another host runs with is fetched at most this often.
const ROSTER_FETCH_EVERY: Duration = Duration::from_secs(10);
/// The chores' answers the loop has not taken yet, at most (the chores
/// wait for room: one step's answer is a publication's datagrams).
const CHORES_QUEUED_MAX: usize = 4;

/// Runs until `stop` fires, then leaves the cluster.
pub async fn run(cluster: Arc<Cluster>, app: Arc<App>, stop: tokio::sync::watch::Receiver<bool>) {
    let socket = cluster.socket.lock().expect("never poisoned").take().expect("the driver runs once");
    let socket = match UdpSocket::from_std(socket) {
        Ok(s) => Arc::new(s),
        Err(e) => {
            tracing::error!(error = %e, "gossip socket unusable; this host stays alone");
            return;
        }
    };
    let (to_loop, from_chores) = tokio::sync::mpsc::channel(CHORES_QUEUED_MAX);
    let publisher = Publisher {
        cluster: cluster.clone(),
        app,
        published: None,
        last_publish: None,
        latency_before: HashMap::new(),
    };
    let puller = Puller { cluster: cluster.clone(), roster_fetched: None, caught_up: false, last_pull: None, pulls: 0 };
    let chores = [tokio::spawn(run_chore(publisher, to_loop.clone())), tokio::spawn(run_chore(puller, to_loop))];
    let mut d = Driver { cluster, socket, timers: Vec::new(), rejects: HashMap::new(), from_chores };
    d.run(stop).await;
    for task in chores {
        task.abort();
    }
}

struct Driver {
    cluster: Arc<Cluster>,
    socket: Arc<UdpSocket>,
    timers: Vec<(Instant, SwimTimer)>,
    /// Per reason: when last logged, and how many since.
    rejects: HashMap<Reject, (Option<Instant>, u64)>,
    /// What the gossip state answered to the chores' work.
    from_chores: tokio::sync::mpsc::Receiver<Output>,
}

/// Publishes this host's records (asking its store threads, each within
/// a bound).
struct Publisher {
    cluster: Arc<Cluster>,
    app: Arc<App>,
    /// What the last publication said, to publish a change at once.
    published: Option<Vec<(DeviceState, DeviceHealthState, bool)>>,
    last_publish: Option<Instant>,
    /// Each device's counters at the last publication (latency percentiles
    /// are over the interval since).
    latency_before: HashMap<usize, CounterSnapshot>,
}

/// Pulls peers' records and fetches a newer roster, over HTTP.
struct Puller {
    cluster: Arc<Cluster>,
    roster_fetched: Option<Instant>,
    caught_up: bool,
    /// The last pull of a peer's records, and how many so far.
    last_pull: Option<Instant>,
    pulls: usize,
}

/// Work beside the gossip loop that may wait (on store threads, on
/// peers' HTTP): one turn every `join_interval_ms`.
trait Chore: Send {
    fn cluster(&self) -> &Cluster;
    /// One turn; what the gossip state answered to it.
    fn turn(&mut self) -> impl std::future::Future<Output = Output> + Send;
}

/// Runs `chore`, handing what each turn answers to the loop, until the
/// loop is gone.
async fn run_chore(mut chore: impl Chore, to_loop: tokio::sync::mpsc::Sender<Output>) {
    let every = Duration::from_millis(chore.cluster().settings.join_interval_ms.max(10));
    let mut step = tokio::time::interval(every);
    step.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        step.tick().await;
        let out = chore.turn().await;
        let empty = out.datagrams.is_empty() && out.timers.is_empty() && out.events.is_empty();
        if !empty && to_loop.send(out).await.is_err() {
            return;
        }
    }
}

impl Driver {
    async fn run(&mut self, mut stop: tokio::sync::watch::Receiver<bool>) {
        let mut buf = vec![0u8; 64 * 1024];
        let mut step = tokio::time::interval(Duration::from_millis(self.cluster.settings.join_interval_ms.max(10)));
        step.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut hup = signal(SignalKind::hangup()).ok();
        loop {
            let next_timer = self.timers.iter().map(|t| t.0).min();
            let sleep = next_timer.map_or(Duration::from_secs(3600), |t| t.saturating_duration_since(Instant::now()));
            let out = tokio::select! {
                r = self.socket.recv_from(&mut buf) => match r {
                    Ok((n, _)) => self.datagram(&buf[..n]),
                    Err(e) => {
                        tracing::debug!(error = %e, "gossip receive failed");
                        continue;
                    }
                },
                () = tokio::time::sleep(sleep) => self.fire_timers(),
                _ = step.tick() => self.cluster.gossip().join_step(JOIN_FANOUT, unix_ms()),
                Some(out) = self.from_chores.recv() => out,
                Some(()) = async { match &mut hup { Some(h) => h.recv().await, None => std::future::pending().await } } => {
                    self.reload_roster()
                }
                _ = stop.changed() => break,
            };
            self.dispatch(out).await;
        }
        let mut out = self.cluster.gossip().leave(unix_ms());
        // Leaving makes foca consider this host gone: not news to log.
        out.events.retain(|e| !matches!(e, Event::Defunct | Event::Idle));
        let n = out.datagrams.len();
        self.dispatch(out).await;
        tracing::info!(datagrams = n, "left the cluster");
    }

    fn datagram(&mut self, bytes: &[u8]) -> Output {
        let result = self.cluster.gossip().handle_datagram(bytes, unix_ms());
        match result {
            Ok(out) => out,
            Err(why) => {
                let now = Instant::now();
                let entry = self.rejects.entry(why).or_insert((None, 0));
                entry.1 += 1;
                if entry.0.is_none_or(|at: Instant| now.duration_since(at) >= REJECT_LOG_EVERY) {
                    tracing::warn!(reason = why.name(), count = entry.1, "gossip datagrams dropped");
                    *entry = (Some(now), 0);
                }
                Output::default()
            }
        }
    }

    fn fire_timers(&mut self) -> Output {
        let now = Instant::now();
        let mut due = Vec::new();
        self.timers.retain(|(at, t)| {
            if *at <= now {
                due.push(t.clone());
                false
            } else {
                true
            }
        });
        let mut out = Output::default();
        let mut g = self.cluster.gossip();
        for t in due {
            merge(&mut out, g.handle_timer(t, unix_ms()));
        }
        out
    }

    /// SIGHUP: the operator changed the keyring (a rotation step) or
    /// installed a roster; reload the one, adopt the other if newer.
    fn reload_roster(&mut self) -> Output {
        if let Err(e) = self.cluster.reload_keyring() {
            tracing::error!(error = %format!("{e:#}"), "SIGHUP: keyring refused; the one in use is kept");
        }
        if let Err(e) = self.cluster.reload_client_tokens() {
            tracing::error!(error = %format!("{e:#}"), "SIGHUP: client tokens refused; the ones in use are kept");
        }
        let path = &self.cluster.settings.roster;
        match std::fs::read(path) {
            Err(e) => tracing::error!(path = %path.display(), error = %e, "SIGHUP: cannot read the roster"),
            Ok(bytes) => match self.cluster.adopt(&bytes, &path.display().to_string()) {
                Ok(Some(out)) => return out,
                Ok(None) => tracing::info!(path = %path.display(), "SIGHUP: the roster file is not newer; kept"),
                Err(e) => tracing::error!(error = %format!("{e:#}"), "SIGHUP: roster refused"),
            },
        }
        Output::default()
    }

    /// Sends what the gossip state asked for, sets its timers, logs its
    /// membership changes.
    async fn dispatch(&mut self, out: Output) {
        for (to, bytes) in &out.datagrams {
            if let Err(e) = self.socket.send_to(bytes, to).await {
                tracing::debug!(%to, error = %e, "gossip send failed");
            }
        }
        let now = Instant::now();
        self.timers.extend(out.timers.into_iter().map(|(t, after)| (now + after, t)));
        for event in out.events {
            self.log(&event);
        }
    }

    fn log(&self, event: &Event) {
        let name = |host: u32| {
            self.cluster
                .gossip()
                .roster()
                .host(host)
                .map_or_else(|| format!("host {host}"), shardnode_cluster::roster::RosterHost::display_name)
        };
        match *event {
            Event::MemberUp(id) => {
                tracing::info!(host = id.host, name = %name(id.host), generation = id.generation, "member up");
            }
            Event::MemberDown(id) => {
                tracing::warn!(host = id.host, name = %name(id.host), generation = id.generation, "member down");
            }
            Event::Renamed { from, to } => tracing::info!(
                host = to.host,
                name = %name(to.host),
                from = from.generation,
                to = to.generation,
                "member restarted (new generation)"
            ),
            Event::Active => tracing::info!("joined the cluster"),
            Event::Idle => tracing::warn!("no other member is reachable"),
            Event::Rejoined(id) => {
                self.cluster.persist_generation(id.generation);
                tracing::warn!(generation = id.generation, "this host was declared down; rejoined as a new generation");
            }
            Event::Defunct => tracing::error!("this host was declared down and cannot rejoin"),
        }
    }
}

impl Chore for Publisher {
    fn cluster(&self) -> &Cluster {
        &self.cluster
    }

    async fn turn(&mut self) -> Output {
        self.publish().await
    }
}

impl Chore for Puller {
    fn cluster(&self) -> &Cluster {
        &self.cluster
    }

    async fn turn(&mut self) -> Output {
        self.pull().await;
        self.fetch_newer_roster().await
    }
}

impl Publisher {
    /// Publishes this host's records if they changed or are due.
    async fn publish(&mut self) -> Output {
        let mut out = Output::default();
        let bodies = self.bodies().await;
        let summary: Vec<_> = bodies
            .iter()
            .map(|b| match b {
                Body::Device { device, .. } => (device.state, device.health, false),
                Body::Host(h) => (DeviceState::Open, DeviceHealthState::Healthy, h.accepting_writes),
            })
            .collect();
        let every = Duration::from_millis(self.cluster.settings.publish_interval_ms.max(100));
        let due = self.last_publish.is_none_or(|t| t.elapsed() >= every);
        if due || self.published.as_ref() != Some(&summary) {
            merge(&mut out, self.cluster.gossip().publish(bodies, unix_ms()));
            self.published = Some(summary);
            self.last_publish = Some(Instant::now());
            self.latency_before = self
                .app
                .node
                .slots
                .iter()
                .filter_map(|s| s.store.as_ref().map(|st| (s.id, st.counters().snapshot())))
                .collect();
        }
        out
    }

    /// This host's facts now.
    async fn bodies(&self) -> Vec<Body> {
        let node = &self.app.node;
        // A store thread that does not answer in time is published without
        // its scrub fields rather than holding back the rest.
        let scrubs: HashMap<usize, _> = crate::api::scrub_statuses(node).await.into_iter().collect();
        // One lock at a time: never two guards of the gossip state in one
        // expression.
        let roster_epoch = self.cluster.gossip().roster().epoch;
        let gossip_rejected = self.cluster.gossip().counters().rejected.to_vec();
        let mut bodies = vec![Body::Host(HostHealth {
            roster_epoch,
            uptime_s: self.cluster.started.elapsed().as_secs(),
            accepting_reads: node.open_count() > 0,
            accepting_writes: node.slots.iter().any(crate::node::Slot::accepts_writes),
            maintenance: self.cluster.settings.maintenance,
            devices: node.slots.len() as u16,
            version: env!("CARGO_PKG_VERSION").to_owned(),
            gossip_rejected,
        })];
        for s in &node.slots {
            let (health, _) = s.health_state();
            let failed = s.store.is_none() || s.stopped.load(Ordering::Relaxed) || health == HealthState::Failed;
            let state = if failed {
                DeviceState::Failed
            } else if s.fenced.load(Ordering::Relaxed) {
                DeviceState::Fenced
            } else {
                DeviceState::Open
            };
            let health = match health {
                HealthState::Healthy => DeviceHealthState::Healthy,
                HealthState::Suspect => DeviceHealthState::Suspect,
                HealthState::Fenced | HealthState::Failed => DeviceHealthState::Failing,
            };
            let mut d = DeviceHealth {
                state,
                health,
                capacity_bytes: 0,
                free_bytes: 0,
                used_bytes: 0,
                shards: 0,
                io_errors: s.errors.io.load(Ordering::Relaxed),
                checksum_errors: s.errors.corruption.load(Ordering::Relaxed),
                read_p50_us: 0,
                read_p99_us: 0,
                commit_p50_us: 0,
                commit_p99_us: 0,
                scrub_oldest_unverified_s: None,
                scrub_deadline_s: shardstore::store::scrub::SCRUB_DEADLINE_DAYS_DEFAULT * 86400,
                damaged_shards: 0,
            };
            if let Some(store) = &s.store {
                let u = store.stats().usage();
                let c = store.counters().snapshot();
                let before = self.latency_before.get(&s.id);
                let q = |kind, q| c.interval_quantile_us(before, kind, q).min(u64::from(u32::MAX)) as u32;
                d.capacity_bytes = u.capacity_bytes;
                d.free_bytes = u.free_bytes.min(u.capacity_bytes);
                d.used_bytes = u.live_bytes.min(u.capacity_bytes);
                d.shards = u.shards;
                d.io_errors = d.io_errors.max(c.io_errors);
                d.checksum_errors = d.checksum_errors.max(c.checksum_failures);
                (d.read_p50_us, d.read_p99_us) = (q(0, 0.5), q(0, 0.99));
                (d.commit_p50_us, d.commit_p99_us) = (q(1, 0.5), q(1, 0.99));
                if let Some(Ok(st)) = scrubs.get(&s.id) {
                    d.scrub_oldest_unverified_s = st.oldest_unverified_age_ms.map(|ms| ms / 1000);
                    d.scrub_deadline_s = st.deadline_ms / 1000;
                    d.damaged_shards = st.damaged_shards;
                }
            }
            bodies.push(Body::Device { slot: s.id as u16, device: d });
        }
        bodies
    }
}

impl Puller {
    /// Pulls one live peer's records when due (a late joiner's catch-up
    /// until one answers).
    async fn pull(&mut self) {
        let every = Duration::from_millis(self.cluster.settings.publish_interval_ms.max(100));
        let pull_every = every / 2;
        if !self.caught_up || self.last_pull.is_none_or(|t| t.elapsed() >= pull_every) {
            self.pulls += 1;
            let answered = peer::catch_up(&self.cluster, self.pulls, !self.caught_up).await;
            self.caught_up |= answered;
            if self.caught_up {
                self.last_pull = Some(Instant::now());
            }
        }
    }

    /// Fetches and adopts a newer roster a peer says it runs with.
    async fn fetch_newer_roster(&mut self) -> Output {
        let mut out = Output::default();
        let newer = self.cluster.gossip().newer_roster_seen();
        if let Some((epoch, host)) = newer {
            if self.roster_fetched.is_none_or(|t| t.elapsed() >= ROSTER_FETCH_EVERY) {
                self.roster_fetched = Some(Instant::now());
                match peer::fetch_roster(&self.cluster, host).await {
                    Ok(bytes) => match self.cluster.adopt(&bytes, &format!("host {host}")) {
                        Ok(Some(o)) => merge(&mut out, o),
                        Ok(None) => {
                            tracing::warn!(host, epoch, "host says it runs a newer roster but served an older one");
                        }
                        Err(e) => tracing::error!(host, epoch, error = %format!("{e:#}"), "newer roster refused"),
                    },
                    Err(e) => tracing::warn!(host, epoch, error = %format!("{e:#}"), "cannot fetch the newer roster"),
                }
            }
        }
        out
    }
}

fn merge(into: &mut Output, more: Output) {
    into.datagrams.extend(more.datagrams);
    into.timers.extend(more.timers);
    into.events.extend(more.events);
}
