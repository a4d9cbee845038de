//! A cluster of real agents on loopback for the integration tests: keys,
//! a signed roster, one config per host on its own 127.R.N.x address (R
//! this process's, `testnet`).
#![allow(dead_code)]

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use shardnode_cluster::keys::{GossipKey, Keyring};
use shardnode_cluster::roster::SignedRoster;

use super::{request, Agent};

pub const TOKEN: &str = "cluster-test-token";
pub const PROBE_PERIOD_MS: u64 = 200;
pub const SUSPECT_TO_DOWN_MS: u64 = 3000;
/// A silent host is seen down by everyone within this: a few probe
/// periods until some member probes it and fails, the suspicion, and the
/// spread of the news (each a few periods).
pub const DOWN_BOUND: Duration = Duration::from_millis(SUSPECT_TO_DOWN_MS + 20 * PROBE_PERIOD_MS);
/// A device change is published within one join interval and spreads in
/// a few gossip rounds.
pub const SPREAD_BOUND: Duration = Duration::from_secs(5);

pub struct Host {
    pub id: u32,
    pub http: SocketAddr,
    pub config: PathBuf,
}

pub struct TestCluster {
    pub dir: tempfile::TempDir,
    pub hosts: Vec<Host>,
    pub agents: Vec<Option<Agent>>,
    pub signing: ed25519_dalek::SigningKey,
}

pub fn ip(net: u8, host: u32) -> String {
    format!("127.{}.{net}.{}", super::testnet::run_octet(), host + 1)
}

pub fn roster_text(net: u8, n: u32, epoch: u64, gossip_of: &dyn Fn(u32) -> String, extra: &str) -> String {
    let mut t = format!("cluster = \"test-{net}\"\nepoch = {epoch}\n{extra}");
    for id in 1..=n {
        let _ = write!(
            t,
            "\n[[host]]\nid = {id}\ngossip = \"{}\"\nhttp = \"{}:7480\"\ndomain = \"rack-{id}\"\nweight = 1\n",
            gossip_of(id),
            ip(net, id)
        );
    }
    t
}

impl TestCluster {
    /// Writes keys, a signed roster and one config per host. `gossip_of`
    /// gives each host's roster gossip address; `listen_of` where it
    /// really listens (different when a proxy stands in front of it).
    pub fn new(
        net: u8,
        n: u32,
        gossip_of: &dyn Fn(u32) -> String,
        listen_of: &dyn Fn(u32) -> Option<String>,
    ) -> TestCluster {
        TestCluster::with_roster(net, n, gossip_of, listen_of, "")
    }

    /// As `new`, with `extra` in the roster before the hosts (a `[code]`).
    pub fn with_roster(
        net: u8,
        n: u32,
        gossip_of: &dyn Fn(u32) -> String,
        listen_of: &dyn Fn(u32) -> Option<String>,
        extra: &str,
    ) -> TestCluster {
        let dir = tempfile::tempdir().unwrap();
        let signing = ed25519_dalek::SigningKey::from_bytes(&[net; 32]);
        std::fs::write(
            dir.path().join("operator.pub"),
            shardnode_cluster::keys::encode_hex(&signing.verifying_key().to_bytes()),
        )
        .unwrap();
        let ring = Keyring::new(vec![GossipKey::new(1, [net.wrapping_add(1); 32])]).unwrap();
        std::fs::write(dir.path().join("gossip.keys"), ring.to_text()).unwrap();
        std::fs::write(dir.path().join("admin.token"), format!("{TOKEN}\n")).unwrap();
        let signed = SignedRoster::sign(&roster_text(net, n, 1, gossip_of, extra), &signing).unwrap();
        std::fs::write(dir.path().join("roster.signed"), &signed.bytes).unwrap();
        let mut hosts = Vec::new();
        for id in 1..=n {
            let data = dir.path().join(format!("host-{id}"));
            std::fs::create_dir_all(&data).unwrap();
            let config = data.join("agent.toml");
            let listen = listen_of(id).map(|a| format!("gossip_listen = \"{a}\"\n")).unwrap_or_default();
            std::fs::write(
                &config,
                format!(
                    "data_dir = \"{data}\"\nlisten = \"{ip}:7480\"\ndefault_device_count = 1\n\
                     default_device_size_bytes = {size}\nadmin_token_file = \"{token}\"\n\n\
                     [cluster]\nhost_id = {id}\nroster = \"{roster}\"\ngossip_key = \"{keys}\"\n\
                     operator_public_key = \"{public}\"\n{listen}join_interval_ms = 200\n\
                     publish_interval_ms = 1000\nprobe_period_ms = {PROBE_PERIOD_MS}\nprobe_rtt_ms = 100\n\
                     suspect_to_down_ms = {SUSPECT_TO_DOWN_MS}\n",
                    data = data.display(),
                    ip = ip(net, id),
                    size = 256u64 << 20,
                    token = dir.path().join("admin.token").display(),
                    roster = dir.path().join("roster.signed").display(),
                    keys = dir.path().join("gossip.keys").display(),
                    public = dir.path().join("operator.pub").display(),
                ),
            )
            .unwrap();
            hosts.push(Host { id, http: format!("{}:7480", ip(net, id)).parse().unwrap(), config });
        }
        let agents = (0..n).map(|_| None).collect();
        TestCluster { dir, hosts, agents, signing }
    }

    pub fn plain(net: u8, n: u32) -> TestCluster {
        TestCluster::new(net, n, &|id| format!("{}:7946", ip(net, id)), &|_| None)
    }

    /// Hosts in distinct failure domains with a `[code]` of k + m.
    pub fn coded(net: u8, n: u32, k: u8, m: u8) -> TestCluster {
        let code = format!("\n[code]\ndata = {k}\nparity = {m}\n");
        TestCluster::with_roster(net, n, &|id| format!("{}:7946", ip(net, id)), &|_| None, &code)
    }

    /// Appends `text` to host `id`'s config (read at its next start).
    pub fn append_config(&self, id: u32, text: &str) {
        let config = &self.hosts[(id - 1) as usize].config;
        let mut t = std::fs::read_to_string(config).unwrap();
        t.push_str(text);
        std::fs::write(config, t).unwrap();
    }

    fn placement(&self) -> shardnode_cluster::placement::Placement {
        let roster =
            shardnode_cluster::roster::Roster::parse(&std::fs::read_to_string(self.path("roster.signed")).unwrap())
                .unwrap();
        shardnode_cluster::placement::Placement::new(&roster).unwrap()
    }

    /// The holders of stripe group `group`'s shards, in shard order.
    pub fn holders(&self, group: u32) -> Vec<u32> {
        let placement = self.placement();
        placement.group(group).unwrap().holders(&placement.code).to_vec()
    }

    /// The two candidate stripe groups of an object key.
    pub fn candidates(&self, key: &str) -> [u32; 2] {
        self.placement().candidates(key.as_bytes())
    }

    pub fn start(&mut self, id: u32) {
        let h = &self.hosts[(id - 1) as usize];
        let mut agent = Agent::start_exactly(&["--config", h.config.to_str().unwrap()], &[]);
        agent.wait_for("shard-agent ready");
        self.agents[(id - 1) as usize] = Some(agent);
    }

    /// Starts every host and waits (at most 20 s) until each sees all of
    /// them alive.
    pub fn start_all(&mut self) {
        for id in 1..=self.hosts.len() as u32 {
            self.start(id);
        }
        within(Duration::from_secs(20), || self.converged()).expect("the agents converge");
    }

    pub fn agent(&mut self, id: u32) -> &mut Agent {
        self.agents[(id - 1) as usize].as_mut().expect("running")
    }

    pub fn running(&self) -> Vec<u32> {
        self.hosts.iter().filter(|h| self.agents[(h.id - 1) as usize].is_some()).map(|h| h.id).collect()
    }

    pub fn view(&self, observer: u32) -> serde_json::Value {
        let r = request(self.hosts[(observer - 1) as usize].http, "GET", "/v1/cluster", &[], b"");
        assert_eq!(r.status, 200, "{}", r.code());
        r.json()
    }

    /// How `observer` sees `host`: its state and generation.
    pub fn seen(&self, observer: u32, host: u32) -> (String, Option<u64>) {
        let v = self.view(observer);
        let m = v["members"].as_array().unwrap().iter().find(|m| m["host"] == host).cloned().unwrap();
        (m["state"].as_str().unwrap().to_owned(), m["generation"].as_u64())
    }

    /// Every running host other than `host` sees it in `state` (and, if
    /// given, in that generation).
    pub fn all_see(&self, host: u32, state: &str, generation: Option<u64>) -> bool {
        self.running().into_iter().filter(|&o| o != host).all(|o| {
            let (s, g) = self.seen(o, host);
            s == state && generation.is_none_or(|want| g == Some(want))
        })
    }

    pub fn converged(&self) -> bool {
        self.running().into_iter().all(|h| self.all_see(h, "alive", Some(self.own_generation(h))))
    }

    pub fn own_generation(&self, host: u32) -> u64 {
        self.view(host)["generation"].as_u64().unwrap()
    }

    pub fn sign_roster(&self, text: &str) -> Vec<u8> {
        SignedRoster::sign(text, &self.signing).unwrap().bytes
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

/// Polls `cond` every 50 ms up to `limit`; the time it took to hold.
pub fn within(limit: Duration, mut cond: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if cond() {
            return Some(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

pub fn logged(agent: &mut Agent, text: &str) -> bool {
    agent.drain_log().iter().any(|l| l.contains(text))
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64
}

/// A peer request's header, signed by `host` with `ring`.
pub fn signed(ring: &Keyring, host: u32, method: &str, target: &str, crc: Option<&str>, at: u64) -> String {
    let req = shardnode_cluster::auth::Request { method, target, content: crc };
    shardnode_cluster::auth::sign(ring, host, &req, at)
}
