//! The agent as systemd runs it: a first run creates and formats its
//! default devices; SIGTERM records a clean shutdown on each and exits 0;
//! SIGKILL loses nothing and the next start reports the unclean shutdown;
//! a configured device that is not formatted is refused by name while the
//! others are served.

mod common;

use std::path::Path;

use common::Agent;
use nix::sys::signal::Signal;
use shardstore::device::{self, OpenOptions};
use shardstore::superblock::{self, Superblock};

fn superblock_of(path: &Path) -> Superblock {
    let options = OpenOptions { read_only: true, exclusive: false, queue_depth: 4, ..OpenOptions::default() };
    let mut dev = device::open(path, &options).unwrap();
    superblock::open(&mut dev, false).unwrap().superblock
}

#[test]
fn first_run_sigterm_and_sigkill() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let data = dir.path().to_str().unwrap();
    let mut agent = Agent::start(&["--data-dir", data]);
    agent.wait_for("shard-agent ready");
    let devs: Vec<_> = (0..3).map(|i| dir.path().join(format!("dev{i}.img"))).collect();
    let uuids: Vec<[u8; 16]> = devs
        .iter()
        .map(|d| {
            let sb = superblock_of(d);
            assert!(!sb.clean_shutdown, "{}: an open device is marked in use", d.display());
            sb.device_uuid
        })
        .collect();
    assert!(uuids[0] != uuids[1] && uuids[1] != uuids[2], "each device has its own identity");
    let status = agent.signal(Signal::SIGTERM);
    assert!(status.success(), "SIGTERM must exit 0: {status}; log:\n{}", agent.log.join("\n"));
    for d in &devs {
        assert!(superblock_of(d).clean_shutdown, "{}: clean shutdown recorded", d.display());
    }
    assert!(!dir.path().join("dev0.img.tmp").exists());

    // Second start: the same devices, not re-formatted; then SIGKILL.
    let mut agent = Agent::start(&["--data-dir", data]);
    agent.wait_for("shard-agent ready");
    let status = agent.signal(Signal::SIGKILL);
    assert!(!status.success());
    for (d, uuid) in devs.iter().zip(&uuids) {
        let sb = superblock_of(d);
        assert_eq!(&sb.device_uuid, uuid, "a restart never re-formats");
        assert!(!sb.clean_shutdown);
    }
    let mut agent = Agent::start(&["--data-dir", data]);
    agent.wait_for("device was not shut down cleanly");
    agent.wait_for("shard-agent ready");
    assert!(agent.signal(Signal::SIGTERM).success());
}

#[test]
fn an_unformatted_configured_device_is_refused_and_the_others_serve() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let good = dir.path().join("good.img");
    let blank = dir.path().join("blank.img");
    std::fs::File::create(&good).unwrap().set_len(256 << 20).unwrap();
    std::fs::File::create(&blank).unwrap().set_len(256 << 20).unwrap();
    {
        let mut dev = device::open(&good, &OpenOptions::default()).unwrap();
        let options = shardstore::format::FormatOptions { extent_size_bytes: Some(8 << 20), ..Default::default() };
        shardstore::format::format(&mut dev, &options).unwrap();
    }
    let data = dir.path().join("data");
    let mut agent = Agent::start(&[
        "--data-dir",
        data.to_str().unwrap(),
        "--device",
        good.to_str().unwrap(),
        "--device",
        blank.to_str().unwrap(),
    ]);
    agent.wait_for("shard-agent ready");
    let log = agent.log.join("\n");
    assert!(log.contains("open=1") && log.contains("failed=1"), "{log}");
    assert!(log.contains("shardctl format") && log.contains("blank.img"), "{log}");
    assert!(std::fs::read(&blank).unwrap().iter().all(|&b| b == 0), "the agent never formats a configured device");
    assert!(agent.signal(Signal::SIGTERM).success());
    assert!(superblock_of(&good).clean_shutdown);
}

#[test]
fn systemd_hears_ready_watchdog_and_stopping() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let socket_path = dir.path().join("notify.sock");
    let socket = std::os::unix::net::UnixDatagram::bind(&socket_path).unwrap();
    socket.set_read_timeout(Some(std::time::Duration::from_secs(30))).unwrap();
    let data = dir.path().join("data");
    let mut agent = Agent::start_with_env(
        &["--data-dir", data.to_str().unwrap()],
        &[("NOTIFY_SOCKET", socket_path.to_str().unwrap()), ("WATCHDOG_USEC", "200000")],
    );
    let next = || {
        let mut buf = [0u8; 512];
        let n = socket.recv(&mut buf).expect("a notification in time");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    let first = next();
    assert!(first.starts_with("READY=1\n") && first.contains("STATUS=serving 3 of 3 devices"), "{first:?}");
    // Pings every 100 ms: a few arrive in well under a second.
    for _ in 0..3 {
        assert_eq!(next(), "WATCHDOG=1");
    }
    let status = agent.signal(Signal::SIGTERM);
    assert!(status.success(), "{status}");
    let rest: Vec<String> = std::iter::from_fn(|| {
        let mut buf = [0u8; 512];
        socket.set_read_timeout(Some(std::time::Duration::from_millis(200))).unwrap();
        socket.recv(&mut buf).ok().map(|n| String::from_utf8_lossy(&buf[..n]).into_owned())
    })
    .collect();
    assert!(rest.iter().any(|m| m.starts_with("STOPPING=1")), "no STOPPING=1 after SIGTERM: {rest:?}");
}

/// A second agent on a busy port stops at once, naming the address, and
/// creates nothing: no device file, no data directory content.
#[test]
fn a_busy_listen_address_stops_the_agent_before_it_creates_anything() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let (_first, addr) = common::Agent::serving(&["--data-dir", dir.path().join("first").to_str().unwrap()]);
    let second = dir.path().join("second");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_shard-agent"))
        .args(["--listen", &addr.to_string(), "--data-dir", second.to_str().unwrap()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{text}");
    assert!(text.contains(&format!("cannot listen on {addr}")), "{text}");
    let made: Vec<_> = std::fs::read_dir(&second).map(|d| d.flatten().map(|e| e.path()).collect()).unwrap_or_default();
    assert!(made.is_empty(), "the refused agent created {made:?}");
}
