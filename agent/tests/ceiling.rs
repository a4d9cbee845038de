//! `shard-agent --http-ceiling`, the benchmarks' HTTP ceiling: the
//! agent's HTTP stack (connections on store threads) answering the shard
//! API from memory, on scratch devices it removes when it stops.

mod common;

use common::{get, put, Agent};
use nix::sys::signal::Signal;

/// A put is kept in memory and a plain GET of it answered with its bytes
/// and CRC on a store thread; a key never put is 404; the store threads
/// are as many as the config's devices, on scratch devices under the
/// temporary directory that a stop removes.
#[test]
fn the_ceiling_answers_from_memory_and_leaves_nothing_behind() {
    let tmp = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let config = tmp.path().join("ceiling.toml");
    std::fs::write(&config, "default_device_count = 2\n").unwrap();
    let tmpdir = tmp.path().to_str().unwrap();
    let mut agent =
        Agent::start_with_env(&["--http-ceiling", "--config", config.to_str().unwrap()], &[("TMPDIR", tmpdir)]);
    agent.wait_for("HTTP ceiling ready");
    let line = agent.log.last().unwrap().clone();
    assert!(line.contains("store_threads=2"), "{line}");
    let addr: std::net::SocketAddr =
        line.split_whitespace().find_map(|w| w.strip_prefix("listen=")).unwrap().parse().unwrap();
    let scratch: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("shardnode-ceiling-"))
        .collect();
    assert_eq!(scratch.len(), 1, "{scratch:?}");
    assert_eq!(std::fs::read_dir(&scratch[0]).unwrap().count(), 2, "one scratch device per store thread");
    let data: Vec<u8> = (0..5000u32).map(|i| (i % 251) as u8).collect();
    assert_eq!(put(addr, "c%2F1", &data).status, 201);
    let r = get(addr, "c%2F1");
    assert_eq!(r.status, 200);
    assert!(r.body == data);
    assert_eq!(r.header("x-shard-crc32c"), Some(format!("{:08x}", crc32c::crc32c(&data)).as_str()));
    assert_eq!(get(addr, "never").status, 404);
    assert!(agent.signal(Signal::SIGTERM).success());
    assert!(!scratch[0].exists(), "the scratch devices were left behind");
}
