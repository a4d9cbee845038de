//! SIGKILL at random moments while clients write: after every restart each
//! acknowledged shard reads back identical, and a shard whose put was not
//! acknowledged reads back as the previous version or the new one, whole,
//! never a part or a mix.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{get, try_put, Agent};
use nix::sys::signal::Signal;
use shardstore::rng::Rng;

const WRITERS: u64 = 6;
const KEYS_PER_WRITER: u64 = 20;
const ROUNDS: u64 = 4;

/// The bytes of version `v` of `key`: size and content follow from both.
fn data(key: &str, v: u64) -> Vec<u8> {
    let mut rng = Rng::new(crc32c::crc32c(key.as_bytes()) as u64 ^ v.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let len = match rng.below(4) {
        0 => rng.below(64) as usize,
        1 => 4096,
        _ => rng.below(300_000) as usize,
    };
    (0..len).map(|_| rng.next_u64() as u8).collect()
}

/// What a key may read back as: the last acknowledged version (or none),
/// and versions whose puts were cut off before an answer.
#[derive(Debug, Clone, Default)]
struct Expect {
    acked: Option<u64>,
    maybe: Vec<u64>,
}

fn writer(addr: SocketAddr, w: u64, round: u64, stop: &AtomicBool, model: &Mutex<HashMap<String, Expect>>) {
    let mut rng = Rng::new(w * 1000 + round);
    let mut version = round << 32;
    while !stop.load(Ordering::Relaxed) {
        let key = format!("w{w}-{}", rng.below(KEYS_PER_WRITER));
        version += 1;
        let body = data(&key, version);
        model.lock().unwrap().entry(key.clone()).or_default().maybe.push(version);
        match try_put(addr, &key, &body) {
            Ok(201) => {
                let mut m = model.lock().unwrap();
                let e = m.get_mut(&key).unwrap();
                *e = Expect { acked: Some(version), maybe: Vec::new() };
            }
            Ok(status) => panic!("put {key} answered {status}"),
            // The agent was killed: this put may or may not have landed.
            Err(_) => return,
        }
    }
}

#[test]
fn sigkill_while_writing_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let config = dir.path().join("agent.toml");
    std::fs::write(
        &config,
        format!("data_dir = \"{}\"\ndefault_device_size_bytes = {}\n", dir.path().display(), 512u64 << 20),
    )
    .unwrap();
    let model: Arc<Mutex<HashMap<String, Expect>>> = Arc::default();
    let mut rng = Rng::new(42);
    let mut checked = 0;
    for round in 0..ROUNDS {
        let (mut agent, addr) = Agent::serving(&["--config", config.to_str().unwrap()]);
        verify(addr, &model, &mut checked);
        let stop = Arc::new(AtomicBool::new(false));
        let writers: Vec<_> = (0..WRITERS)
            .map(|w| {
                let (stop, model) = (Arc::clone(&stop), Arc::clone(&model));
                std::thread::spawn(move || writer(addr, w, round, &stop, &model))
            })
            .collect();
        std::thread::sleep(Duration::from_millis(300 + rng.below(700)));
        agent.signal(Signal::SIGKILL);
        stop.store(true, Ordering::Relaxed);
        for w in writers {
            w.join().unwrap();
        }
    }
    let (mut agent, addr) = Agent::serving(&["--config", config.to_str().unwrap()]);
    verify(addr, &model, &mut checked);
    assert!(agent.signal(Signal::SIGTERM).success());
    let acked = model.lock().unwrap().values().filter(|e| e.acked.is_some()).count();
    assert!(acked > 20, "only {acked} keys were acknowledged: the test did not exercise much");
    eprintln!("{checked} reads verified over {ROUNDS} kills; {acked} keys acknowledged");
}

/// Reads every key the writers touched and settles the model on what it
/// found, which must be allowed.
fn verify(addr: SocketAddr, model: &Mutex<HashMap<String, Expect>>, checked: &mut u64) {
    let mut m = model.lock().unwrap();
    for (key, e) in m.iter_mut() {
        let r = get(addr, key);
        let found = match r.status {
            404 => None,
            200 => {
                let allowed = e.acked.iter().chain(&e.maybe).copied().find(|&v| data(key, v) == r.body);
                let v = allowed.unwrap_or_else(|| {
                    panic!(
                        "{key}: {} bytes that are no version put (acked {:?}, in doubt {:?})",
                        r.body.len(),
                        e.acked,
                        e.maybe
                    )
                });
                Some(v)
            }
            s => panic!("{key}: GET answered {s}: {}", String::from_utf8_lossy(&r.body)),
        };
        if found.is_none() {
            assert!(e.acked.is_none(), "{key}: acknowledged version {:?} lost", e.acked);
        }
        if let (Some(a), Some(f)) = (e.acked, found) {
            assert!(f == a || e.maybe.contains(&f), "{key}: read version {f}, acknowledged {a}");
        }
        // An in-doubt version that is visible now is the truth from here on.
        *e = Expect { acked: found, maybe: Vec::new() };
        *checked += 1;
    }
}
