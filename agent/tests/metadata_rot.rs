//! Media rot in the metadata of real device files, with a real agent
//! killed by SIGKILL and restarted: nothing acknowledged is lost, nothing
//! deleted comes back, and the repair is reported.

mod common;

use std::io::{Seek, SeekFrom, Write};

use common::{get, put, request, start_configured};
use nix::sys::signal::Signal;

const DEVICE_BYTES: u64 = 256 << 20;

/// Media rot in the metadata of real device files under a killed agent:
/// the first copy of each device's metadata in force is zeroed and the
/// second has bits flipped elsewhere (never both copies of one block).
/// It used to answer 404 for a large share of acknowledged shards. After
/// a restart every acknowledged shard is served, every deleted one is
/// 404, and the repair is reported in the scrub findings.
#[test]
fn rotted_metadata_after_sigkill_loses_no_acknowledged_shard() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let (mut agent, addr) = start_configured(dir.path(), DEVICE_BYTES, "t", "");
    for i in 0..90 {
        assert_eq!(put(addr, &format!("r{i}"), format!("rot value {i}").repeat(i + 1).as_bytes()).status, 201);
    }
    for i in (0..90).step_by(7) {
        assert_eq!(request(addr, "DELETE", &format!("/v1/shards/r{i}"), &[], b"").status, 204);
    }
    assert!(!agent.signal(Signal::SIGKILL).success());

    for d in 0..3 {
        let path = dir.path().join("data").join(format!("dev{d}.img"));
        let sb = {
            let mut dev = shardstore::device::open(&path, &shardstore::device::OpenOptions::default()).unwrap();
            shardstore::superblock::open(&mut dev, false).unwrap().superblock
        };
        let copies = sb.layout.meta_copies();
        assert_eq!(copies.len(), 2, "new devices mirror their metadata");
        let half = u64::from(sb.store.half) * (sb.layout.meta_size_bytes / 2);
        let mut f = std::fs::OpenOptions::new().write(true).read(true).open(&path).unwrap();
        // Copy 0: the checkpoint and the first 14 log blocks zeroed.
        f.seek(SeekFrom::Start(copies[0] + half)).unwrap();
        f.write_all(&vec![0u8; (sb.store.checkpoint_len_bytes + 14 * 4096) as usize]).unwrap();
        // Copy 1: bits flipped in the log blocks after those.
        let log1 = copies[1] + half + sb.store.checkpoint_len_bytes + 14 * 4096;
        for k in 0..8u64 {
            let at = log1 + k * 4096 + 100 + k * 37;
            let mut byte = [0u8; 1];
            std::io::Read::read_exact(
                &mut {
                    f.seek(SeekFrom::Start(at)).unwrap();
                    &f
                },
                &mut byte,
            )
            .unwrap();
            f.seek(SeekFrom::Start(at)).unwrap();
            f.write_all(&[byte[0] ^ 0x10]).unwrap();
        }
        f.sync_all().unwrap();
    }

    let (_agent, addr) = start_configured(dir.path(), DEVICE_BYTES, "t", "");
    for i in 0..90 {
        let r = get(addr, &format!("r{i}"));
        if i % 7 == 0 {
            assert_eq!(r.status, 404, "deleted r{i} came back");
        } else {
            assert_eq!(r.status, 200, "acknowledged r{i}: {}", String::from_utf8_lossy(&r.body));
            assert_eq!(r.body, format!("rot value {i}").repeat(i + 1).as_bytes());
        }
    }
    let status = request(addr, "GET", "/v1/status", &[], b"").json();
    for d in 0..3 {
        let findings = &status["devices"][d]["scrub"]["findings"];
        let (checkpoint, log) = (findings["checkpoint"].as_u64().unwrap(), findings["log_block"].as_u64().unwrap());
        assert!(checkpoint >= 1 && log >= 8, "device {d}: the repaired metadata was not all reported: {findings}");
    }
}
