//! Real agents gossiping over real UDP on loopback: they converge, see a
//! killed agent down and a stopped one only suspect, see a restarted one
//! in its new life, see a drive fenced on another host, adopt a newer
//! signed roster, and reject every datagram a faulty network damaged.
//!
//! Each test has its own 127.R.N.0/24 (hosts at .2, .3, ...; R held by
//! this process, `common::testnet`), so tests run in parallel, and beside
//! another run of them. SWIM timing is shortened by configuration (probe every
//! 200 ms, suspicion 3 s); the bounds asserted are derived from it.

mod common;

use common::cluster::*;

use std::net::UdpSocket;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::request;
use nix::sys::signal::Signal;
use shardnode_cluster::keys::{GossipKey, Keyring};
use shardnode_cluster::roster::SignedRoster;

#[test]
fn agents_converge_detect_death_ride_out_a_pause_and_see_new_lives() {
    let mut c = TestCluster::plain(21, 5);
    for id in 1..=5 {
        c.start(id);
    }
    let t = within(Duration::from_secs(20), || c.converged()).expect("5 agents converge");
    eprintln!("5 agents converged in {t:?}");
    let metrics = request(c.hosts[0].http, "GET", "/metrics", &[], b"");
    let text = String::from_utf8_lossy(&metrics.body).into_owned();
    for line in [
        "shardnode_cluster_members{state=\"alive\"} 5",
        "shardnode_cluster_members{state=\"down\"} 0",
        "shardnode_cluster_roster_epoch 1",
        "shardnode_gossip_rejected_total{reason=\"corrupt\"} 0",
    ] {
        assert!(text.lines().any(|l| l == line), "/metrics lacks {line:?}:\n{text}");
    }
    for family in
        ["shardnode_gossip_datagrams_total{direction=\"received\"}", "shardnode_gossip_bytes_total{direction=\"sent\"}"]
    {
        assert!(text.lines().any(|l| l.starts_with(family)), "/metrics lacks {family}");
    }
    // A host's health records spread within the bound, not with its
    // membership: converged, host 1 may see host 2 alive before it holds
    // a record of it (seen in CI: converged in 35 ms, no record yet), and
    // the age of the newest record is published only once there is one.
    let age = "shardnode_cluster_record_age_seconds{host=\"2\"}";
    let has_age = || {
        let metrics = request(c.hosts[0].http, "GET", "/metrics", &[], b"");
        String::from_utf8_lossy(&metrics.body).lines().any(|l| l.starts_with(age))
    };
    let t = within(SPREAD_BOUND, has_age).unwrap_or_else(|| panic!("/metrics lacks {age} after {SPREAD_BOUND:?}"));
    eprintln!("host 2's record age was published after {t:?}");

    // A drive fenced on host 1 shows as fenced in every other view.
    let fence =
        request(c.hosts[0].http, "POST", "/v1/devices/0/fence", &[("authorization", &format!("Bearer {TOKEN}"))], b"");
    assert_eq!(fence.status, 200, "{}", fence.code());
    let fenced_everywhere = || {
        (2..=5).all(|o| {
            let v = c.view(o);
            let h1 = v["members"].as_array().unwrap().iter().find(|m| m["host"] == 1).cloned().unwrap();
            h1["records"]
                .as_array()
                .unwrap()
                .iter()
                .any(|r| r["kind"] == "device" && r["slot"] == 0 && r["device"]["state"] == "fenced")
        })
    };
    let t = within(SPREAD_BOUND, fenced_everywhere).expect("the fenced drive shows everywhere within the bound");
    eprintln!("a fenced drive reached every view in {t:?}");

    // SIGSTOP: suspected, then it refutes on SIGCONT, in the same life,
    // and nobody ever declares it down.
    let life3 = c.own_generation(3);
    c.agent(3).send(Signal::SIGSTOP);
    let suspected =
        within(Duration::from_millis(SUSPECT_TO_DOWN_MS), || [1, 2, 4, 5].iter().any(|&o| c.seen(o, 3).0 == "suspect"));
    c.agent(3).send(Signal::SIGCONT);
    let suspected = suspected.expect("a stopped agent is suspected");
    eprintln!("a stopped agent was suspected after {suspected:?}");
    within(Duration::from_secs(10), || c.all_see(3, "alive", Some(life3))).expect("it refutes, in the same life");
    for id in [1, 2, 4, 5] {
        assert!(!logged(c.agent(id), "member down host=3"), "host {id} acted on the suspicion of host 3");
    }
    assert!(!logged(c.agent(3), "rejoined as a new generation"), "the paused host lost its life");

    // SIGKILL: seen down by every other host within the bound.
    let life4 = c.own_generation(4);
    c.agents[3].take().unwrap().signal(Signal::SIGKILL);
    let t = within(DOWN_BOUND + Duration::from_secs(2), || c.all_see(4, "down", Some(life4)))
        .expect("a killed agent is seen down by all");
    assert!(t <= DOWN_BOUND, "seen down after {t:?}, over the bound {DOWN_BOUND:?}");
    eprintln!("a killed agent was seen down by all in {t:?} (bound {DOWN_BOUND:?})");

    // Restart: a new generation, seen alive in it everywhere; the old life
    // is gone from every view; the late joiner catches up on records.
    c.start(4);
    let life4b = c.own_generation(4);
    assert!(life4b > life4, "restarted in generation {life4b}, after {life4}");
    within(Duration::from_secs(15), || c.all_see(4, "alive", Some(life4b))).expect("the new life is seen alive");
    within(Duration::from_secs(5), || logged(c.agent(4), "caught up on health records")).expect("catch-up over HTTP");
    let v4 = c.view(4);
    for m in v4["members"].as_array().unwrap() {
        assert!(!m["records"].as_array().unwrap().is_empty(), "the restarted host holds records of host {}", m["host"]);
    }

    // SIGTERM: it leaves; the others see it down at once (no suspicion).
    let t0 = Instant::now();
    let status = c.agents[4].take().unwrap().signal(Signal::SIGTERM);
    assert!(status.success(), "{status}");
    let t = within(Duration::from_secs(3), || c.all_see(5, "down", None)).expect("a leaving agent is seen down");
    eprintln!("a leaving agent was seen down {:?} after SIGTERM", t0.elapsed().max(t));
    for id in [1, 2, 3, 4] {
        let counters = c.view(id)["counters"].clone();
        let rejected: u64 = counters["rejected"].as_object().unwrap().values().map(|v| v.as_u64().unwrap()).sum();
        assert_eq!(rejected, 0, "host {id} rejected datagrams on a clean network: {counters}");
    }
}

/// A peer whose HTTP never answers (its roster address accepts
/// connections, as a wedged server's kernel does, and nothing replies)
/// while its gossip is healthy must not stall the others' gossip: their
/// record pulls from it wait out their timeout, their probes and acks do
/// not. A host whose gossip loop waited on that pull would stop answering
/// probes, and its peers would suspect a healthy host.
#[test]
fn a_peer_whose_http_never_answers_does_not_stall_the_others_gossip() {
    let mut c = TestCluster::plain(33, 3);
    // Host 3 serves HTTP on another port; its roster address is a
    // listener that never accepts.
    let hole = std::net::TcpListener::bind(c.hosts[2].http).unwrap();
    let real = std::net::SocketAddr::new(c.hosts[2].http.ip(), c.hosts[2].http.port() + 1);
    let config = std::fs::read_to_string(&c.hosts[2].config).unwrap();
    let moved = config.replace(&format!("listen = \"{}\"", c.hosts[2].http), &format!("listen = \"{real}\""));
    assert_ne!(moved, config, "host 3's listen line");
    std::fs::write(&c.hosts[2].config, moved).unwrap();
    c.hosts[2].http = real;
    for id in 1..=3 {
        c.start(id);
    }
    within(Duration::from_secs(20), || c.converged()).expect("3 agents converge");
    // Each of hosts 1 and 2 pulls records every half publish interval,
    // alternating between its two peers, so within a second it waits on
    // host 3 for the pull's 5 s timeout; a host stalled that long misses
    // probes (every 200 ms, 100 ms to answer) and would be suspected.
    let start = Instant::now();
    let mut polls = 0;
    let mut stalled = None;
    while start.elapsed() < Duration::from_secs(4) {
        for (observer, host) in [(1, 2), (2, 1), (1, 3), (2, 3), (3, 1), (3, 2)] {
            let (state, _) = c.seen(observer, host);
            if state != "alive" {
                stalled.get_or_insert((observer, host, state, start.elapsed()));
            }
        }
        polls += 1;
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(polls >= 10, "only {polls} polls in the window");
    assert_eq!(stalled, None, "a healthy host was not seen alive (observer, host, state, after)");
    for id in 1..=3 {
        assert!(!logged(c.agent(id), "member down"), "host {id} saw a member down");
    }
    // Nor does a hanging pull hold back this host's publications: a drive
    // fenced on host 1 (whose pulls from host 3 each wait out their 5 s,
    // most of the time) reaches host 2 within one join interval (200 ms)
    // and five probe periods of gossip: 1.2 s. (Measured 55-220 ms. With
    // the publication queued behind the pull it took 1.1-1.5 s, so this
    // check caught that about half the time: the delay is the pull's
    // phase.)
    let fence =
        request(c.hosts[0].http, "POST", "/v1/devices/0/fence", &[("authorization", &format!("Bearer {TOKEN}"))], b"");
    assert_eq!(fence.status, 200, "{}", fence.code());
    let fenced_at_2 = || {
        let v = c.view(2);
        let h1 = v["members"].as_array().unwrap().iter().find(|m| m["host"] == 1).cloned().unwrap();
        h1["records"].as_array().unwrap().iter().any(|r| r["kind"] == "device" && r["device"]["state"] == "fenced")
    };
    let bound = Duration::from_millis(200 + 5 * PROBE_PERIOD_MS);
    let t = within(bound, fenced_at_2).expect("the fence reaches host 2 while host 1's pulls hang");
    eprintln!("a fence spread in {t:?} while the host's pulls hung");
    drop(hole);
}

#[test]
fn a_newer_signed_roster_is_adopted_everywhere_and_a_forged_one_nowhere() {
    let mut c = TestCluster::plain(23, 3);
    for id in 1..=3 {
        c.start(id);
    }
    within(Duration::from_secs(20), || c.converged()).expect("converged");
    let text = std::fs::read_to_string(c.path("roster.signed")).unwrap();
    let doc: String =
        text.lines().filter(|l| !l.starts_with("# shardnode-roster-signature")).flat_map(|l| [l, "\n"]).collect();

    // A roster signed by another key: refused, epoch unchanged.
    let stranger = ed25519_dalek::SigningKey::from_bytes(&[99; 32]);
    let forged = SignedRoster::sign(&doc.replace("epoch = 1", "epoch = 5"), &stranger).unwrap();
    std::fs::write(c.path("roster.signed"), &forged.bytes).unwrap();
    c.agent(1).send(Signal::SIGHUP);
    within(Duration::from_secs(5), || logged(c.agent(1), "SIGHUP: roster refused"))
        .expect("the forged roster is refused");
    assert_eq!(c.view(1)["roster_epoch"], 1);

    // Epoch 2, signed by the operator, installed on host 1 only: hosts 2
    // and 3 learn of it from host 1's record and fetch it.
    let newer =
        c.sign_roster(&doc.replace("epoch = 1", "epoch = 2").replace("domain = \"rack-3\"", "domain = \"rack-9\""));
    std::fs::write(c.path("roster.signed"), newer).unwrap();
    c.agent(1).send(Signal::SIGHUP);
    let t = within(Duration::from_secs(15), || (1..=3).all(|h| c.view(h)["roster_epoch"] == 2))
        .expect("epoch 2 everywhere");
    eprintln!("roster epoch 2 reached every host in {t:?}");
    let v = c.view(2);
    assert_eq!(v["members"].as_array().unwrap().iter().find(|m| m["host"] == 3).unwrap()["domain"], "rack-9");
    assert!(c.converged(), "membership survives the new roster");
}

/// Forwards datagrams to one agent, damaging some: a bit flipped,
/// truncated, duplicated, or an earlier datagram replayed. Counts each.
struct Proxy {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<[u64; 5]>>,
}

impl Proxy {
    fn start(at: &str, to: String, seed: u64) -> Proxy {
        let socket = UdpSocket::bind(at).unwrap();
        socket.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            // [passed, flipped, truncated, duplicated, replayed]
            let mut n = [0u64; 5];
            let mut rng = seed | 1;
            let mut next = move || {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                rng
            };
            let mut seen: Vec<Vec<u8>> = Vec::new();
            let mut buf = vec![0u8; 65536];
            let deadline = Instant::now() + Duration::from_secs(120);
            while !flag.load(Ordering::Relaxed) && Instant::now() < deadline {
                let Ok(len) = socket.recv(&mut buf) else { continue };
                let d = buf[..len].to_vec();
                // Only datagrams delivered intact are replayed later: a
                // replay of one never delivered would be its first copy.
                let mut intact = true;
                match next() % 10 {
                    0 | 1 => {
                        intact = false;
                        let mut bad = d.clone();
                        let bit = (next() % (bad.len() as u64 * 8)) as usize;
                        bad[bit / 8] ^= 1 << (bit % 8);
                        socket.send_to(&bad, &to).unwrap();
                        n[1] += 1;
                    }
                    2 | 3 => {
                        intact = false;
                        let cut = (next() % d.len() as u64) as usize;
                        socket.send_to(&d[..cut], &to).unwrap();
                        n[2] += 1;
                    }
                    4 => {
                        socket.send_to(&d, &to).unwrap();
                        socket.send_to(&d, &to).unwrap();
                        n[0] += 1;
                        n[3] += 1;
                    }
                    5 if !seen.is_empty() => {
                        socket.send_to(&d, &to).unwrap();
                        let old = &seen[(next() % seen.len() as u64) as usize];
                        socket.send_to(old, &to).unwrap();
                        n[0] += 1;
                        n[4] += 1;
                    }
                    _ => {
                        socket.send_to(&d, &to).unwrap();
                        n[0] += 1;
                    }
                }
                if intact && seen.len() < 256 {
                    seen.push(d);
                }
            }
            n
        });
        Proxy { stop, thread: Some(thread) }
    }

    fn finish(mut self) -> [u64; 5] {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn rejected_total(view: &serde_json::Value) -> u64 {
    view["counters"]["rejected"].as_object().unwrap().values().map(|v| v.as_u64().unwrap()).sum()
}

#[test]
fn every_damaged_datagram_between_agents_is_rejected_and_counted() {
    // Host 2's roster address is the proxy's; host 2 listens behind it.
    let net = 22;
    let proxy_at = format!("{}:7946", ip(net, 100));
    let real = format!("{}:7946", ip(net, 2));
    let gossip_of = |id: u32| if id == 2 { proxy_at.clone() } else { format!("{}:7946", ip(net, id)) };
    let listen_of = |id: u32| (id == 2).then(|| real.clone());
    let mut c = TestCluster::new(net, 3, &gossip_of, &listen_of);
    // Host 2 first: the proxy counts only what host 2 can receive.
    c.start(2);
    let proxy = Proxy::start(&proxy_at, real.clone(), 0x5eed);
    c.start(1);
    c.start(3);
    within(Duration::from_secs(30), || c.converged()).expect("converged through a damaging network");
    // Let damage accumulate, with the view checked all along: with 40% of
    // host 2's datagrams damaged, a probe of it may fail and it may be
    // suspected for a moment (that is SWIM working), but nobody is ever
    // declared down and nobody changes life.
    let lives: Vec<u64> = (1..=3).map(|h| c.own_generation(h)).collect();
    let until = Instant::now() + Duration::from_secs(10);
    while Instant::now() < until {
        for o in 1..=3 {
            for h in (1..=3).filter(|&h| h != o) {
                let (state, generation) = c.seen(o, h);
                assert!(state == "alive" || state == "suspect", "host {o} sees host {h} {state}");
                assert_eq!(generation, Some(lives[(h - 1) as usize]), "host {o} sees host {h} in another life");
            }
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    within(Duration::from_secs(10), || c.converged()).expect("every host alive in every view");
    let [passed, flipped, truncated, duplicated, replayed] = proxy.finish();
    // Every datagram was sent once the proxy stopped; host 2 counts the
    // last of them as it takes them from its socket (waited for, not slept
    // for: a loaded machine may take longer), and then no more.
    let damaged = flipped + truncated + duplicated + replayed;
    within(Duration::from_secs(10), || rejected_total(&c.view(2)) >= damaged);
    std::thread::sleep(Duration::from_millis(300));
    let v = c.view(2);
    eprintln!(
        "proxy: {passed} passed, {flipped} bit flips, {truncated} truncated, {duplicated} duplicated, {replayed} replayed; host 2 rejected {} ({})",
        rejected_total(&v),
        v["counters"]["rejected"]
    );
    assert!(flipped >= 10 && truncated >= 10 && duplicated >= 10 && replayed >= 10, "enough of each fault");
    assert_eq!(rejected_total(&v), damaged, "every damaged or repeated datagram rejected, and nothing else");
    assert_eq!(v["counters"]["swim_refused"], 0, "nothing damaged reached foca");
    // Records host 2 holds from host 1 are exactly those host 1 published.
    let own = c.view(1);
    let mine = |v: &serde_json::Value, host: u32| {
        v["members"].as_array().unwrap().iter().find(|m| m["host"] == host).unwrap()["records"].clone()
    };
    let (held, published) = (mine(&v, 1), mine(&own, 1));
    for r in held.as_array().unwrap() {
        let p =
            published.as_array().unwrap().iter().find(|p| p["kind"] == r["kind"] && p["slot"] == r["slot"]).unwrap();
        if p["sequence"] == r["sequence"] {
            assert_eq!(p["device"], r["device"], "a relayed record is the published one");
        }
    }
}

#[test]
fn an_agent_without_a_cluster_table_runs_alone_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let (_agent, addr) = common::start_configured(dir.path(), 256 << 20, TOKEN, "default_device_count = 1\n");
    let r = request(addr, "GET", "/v1/cluster", &[], b"");
    assert_eq!((r.status, r.code()), (404, "NoCluster".to_owned()));
    let r = request(addr, "GET", "/v1/cluster/records", &[], b"");
    assert_eq!(r.status, 404);
    assert_eq!(request(addr, "GET", "/v1/status", &[], b"").status, 200);
}

#[test]
fn peer_and_shard_routes_answer_only_a_roster_host_holding_the_key_and_only_once() {
    let mut c = TestCluster::plain(24, 2);
    c.start(1);
    let addr = c.hosts[0].http;
    let path = "/v1/cluster/records";
    assert_eq!(request(addr, "GET", path, &[], b"").status, 401, "no MAC");
    let ring = Keyring::new(vec![GossipKey::new(1, [25; 32])]).unwrap();
    let h = shardnode_cluster::auth::HEADER;
    // Host 1 publishes its first records within a join interval of start.
    within(Duration::from_secs(5), || {
        let r = request(addr, "GET", path, &[(h, &signed(&ring, 2, "GET", path, None, now_ms()))], b"");
        assert_eq!(r.status, 200, "{}", r.code());
        !shardnode_cluster::records::split(&r.body).expect("whole records").is_empty()
    })
    .expect("host 1 serves its own records");
    let now = now_ms();
    let wrong_key = Keyring::new(vec![GossipKey::new(1, [7; 32])]).unwrap();
    for (who, header) in [
        ("another path's MAC", signed(&ring, 2, "GET", "/v1/cluster/roster", None, now)),
        ("a host not on the roster", signed(&ring, 7, "GET", path, None, now)),
        ("an old request", signed(&ring, 2, "GET", path, None, now - 3_600_000)),
        ("a wrong key", signed(&wrong_key, 2, "GET", path, None, now)),
    ] {
        let r = request(addr, "GET", path, &[(h, &header)], b"");
        assert_eq!(r.status, 401, "{who}: {}", r.code());
    }

    // The shard API of an agent in a cluster: peers only, each request once,
    // the MAC binding the body's CRC.
    let key = "/v1/shards/peer-test";
    let body = b"bytes a peer stores";
    let crc = format!("{:08x}", crc32c::crc32c(body));
    assert_eq!(common::put(addr, "peer-test", body).status, 401, "an unsigned put");
    let put = signed(&ring, 2, "PUT", key, Some(&crc), now_ms());
    let r = request(addr, "PUT", key, &[(h, &put), ("x-shard-crc32c", &crc)], body);
    assert_eq!(r.status, 201, "{}", r.code());
    let r = request(addr, "PUT", key, &[(h, &put), ("x-shard-crc32c", &crc)], b"replayed with other bytes");
    assert_eq!((r.status, r.code()), (401, "Unauthorized".to_owned()), "a replayed put");
    // The MAC covers the CRC: another body under the same MAC is refused,
    // and a body that does not match its signed CRC is not stored.
    let other = b"other bytes";
    let other_crc = format!("{:08x}", crc32c::crc32c(other));
    let fresh = signed(&ring, 2, "PUT", key, Some(&crc), now_ms());
    let r = request(addr, "PUT", key, &[(h, &fresh), ("x-shard-crc32c", &other_crc)], other);
    assert_eq!(r.status, 401, "a CRC the MAC does not cover");
    let fresh = signed(&ring, 2, "PUT", key, Some(&crc), now_ms());
    let r = request(addr, "PUT", key, &[(h, &fresh), ("x-shard-crc32c", &crc)], other);
    assert_eq!(r.code(), "BadDigest", "a body that is not the signed CRC's");
    let get = signed(&ring, 2, "GET", key, None, now_ms());
    let r = request(addr, "GET", key, &[(h, &get)], b"");
    assert_eq!((r.status, r.body.as_slice()), (200, &body[..]), "the first put's bytes, untouched");
    assert_eq!(request(addr, "GET", key, &[(h, &get)], b"").status, 401, "a replayed get");
    assert_eq!(request(addr, "GET", key, &[], b"").status, 401, "an unsigned get");
    let list = signed(&ring, 2, "GET", "/v1/shards?prefix=peer", None, now_ms());
    assert_eq!(request(addr, "GET", "/v1/shards?prefix=peer", &[(h, &list)], b"").status, 200);
    let bad_list = signed(&ring, 2, "GET", "/v1/shards?prefix=p", None, now_ms());
    assert_eq!(
        request(addr, "GET", "/v1/shards?prefix=peer", &[(h, &bad_list)], b"").status,
        401,
        "the query is signed"
    );
    let del = signed(&ring, 2, "DELETE", key, None, now_ms());
    assert_eq!(request(addr, "DELETE", key, &[(h, &del)], b"").status, 204);
}

#[test]
fn the_gossip_key_rotates_without_a_refused_datagram() {
    let net = 25;
    let mut c = TestCluster::plain(net, 3);
    for id in 1..=3 {
        c.start(id);
    }
    within(Duration::from_secs(20), || c.converged()).expect("converged");
    let old = GossipKey::new(1, [net + 1; 32]);
    let new = GossipKey::new(2, [0xab; 32]);
    // Add the new key, make it the first, drop the old: each step on every
    // host in turn, each agent told by SIGHUP.
    for (step, keys) in
        [vec![old.clone(), new.clone()], vec![new.clone(), old.clone()], vec![new.clone()]].into_iter().enumerate()
    {
        let primary = keys[0].id;
        std::fs::write(c.path("gossip.keys"), Keyring::new(keys).unwrap().to_text()).unwrap();
        for id in 1..=3 {
            c.agent(id).send(Signal::SIGHUP);
            // One more reload logged, naming the new first key.
            within(Duration::from_secs(5), || {
                let log = c.agent(id).drain_log();
                let reloads: Vec<&String> = log.iter().filter(|l| l.contains("gossip keyring reloaded")).collect();
                reloads.len() > step && reloads[step].contains(&format!("primary={primary}"))
            })
            .expect("the keyring is reloaded");
            std::thread::sleep(Duration::from_millis(300));
        }
        within(Duration::from_secs(5), || c.converged()).expect("still converged");
    }
    std::thread::sleep(Duration::from_secs(1));
    assert!(c.converged());
    for id in 1..=3 {
        let v = c.view(id);
        assert_eq!(rejected_total(&v), 0, "host {id} refused datagrams during the rotation: {}", v["counters"]);
    }
    // The old key is gone: a peer request signed with it is refused.
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    let stale = signed(&Keyring::new(vec![old]).unwrap(), 2, "GET", "/v1/cluster/roster", None, now);
    let r = request(c.hosts[0].http, "GET", "/v1/cluster/roster", &[(shardnode_cluster::auth::HEADER, &stale)], b"");
    assert_eq!(r.status, 401);
}
