//! Where a test process's agents listen: 127.R.N.H, N the test's own net,
//! H the host, and R an octet this process holds for as long as it runs
//! (an exclusive lock on `$TMPDIR/shardnode-test-nets/R`, released by the
//! kernel however the process ends). Two test runs on one machine at once
//! (a developer's and CI's, or two checkouts) then never bind each other's
//! addresses, as they did when every run used 127.0.N.H.
//!
//! Shared by the agent's and the tools' tests (the latter include it by
//! path).

use std::sync::OnceLock;

/// This process's second octet (1..=254; 127.0.x.x is left to the README's
/// examples and `shardctl cluster local`'s default).
pub fn run_octet() -> u8 {
    static HELD: OnceLock<(u8, nix::fcntl::Flock<std::fs::File>)> = OnceLock::new();
    HELD.get_or_init(|| {
        let dir = std::env::temp_dir().join("shardnode-test-nets");
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
        for octet in 1..=254u8 {
            let path = dir.join(octet.to_string());
            let file = std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&path)
                .unwrap_or_else(|e| panic!("opening {}: {e}", path.display()));
            match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock) {
                Ok(lock) => return (octet, lock),
                Err((_, nix::errno::Errno::EWOULDBLOCK)) => {}
                Err((_, e)) => panic!("locking {}: {e}", path.display()),
            }
        }
        panic!("all 254 test nets in {} are held by other running tests", dir.display())
    })
    .0
}
