//! Requests between agents over HTTP (record catch-up, roster fetch, and
//! the shard API once a cluster is configured) carry a MAC under the
//! gossip key, so only a host holding the cluster's key, naming itself as
//! a roster host, is answered, and each request is answered once.
//!
//! The header is `x-shardnode-peer: <host> <unix ms> <nonce> <key id> <mac hex>`,
//! the MAC (keyed BLAKE3, 128 bits) covering a domain tag, the method, the
//! path with its query, the request's content digest (the
//! `x-shard-crc32c` a shard PUT carries, which the shard API checks the
//! body against; empty otherwise), the host, the time and the nonce. A
//! request more than the clock-skew bound from the receiver's clock is
//! refused; within it a `ReplayGuard` refuses a MAC seen before.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use crate::keys::{decode_hex, encode_hex, macs_equal, Keyring};
use crate::records::CLOCK_SKEW_MS_MAX;

/// The request header that carries the MAC.
pub const HEADER: &str = "x-shardnode-peer";

const DOMAIN: &[u8] = b"shardnode peer request v2\0";

/// What a MAC covers besides the sender, the time and the nonce.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub method: &'a str,
    /// Path and query, exactly as sent.
    pub target: &'a str,
    /// The content digest header's value (`x-shard-crc32c`), if any.
    pub content: Option<&'a str>,
}

impl<'a> Request<'a> {
    pub fn get(target: &'a str) -> Request<'a> {
        Request { method: "GET", target, content: None }
    }
}

fn mac(keyring: &Keyring, key_id: u16, req: &Request<'_>, host: u32, at_ms: u64, nonce: u64) -> Option<[u8; 16]> {
    let key = keyring.get(key_id)?;
    let content = req.content.unwrap_or("");
    Some(key.mac(&[
        DOMAIN,
        req.method.as_bytes(),
        b"\0",
        req.target.as_bytes(),
        b"\0",
        &(content.len() as u64).to_le_bytes(),
        content.as_bytes(),
        &host.to_le_bytes(),
        &at_ms.to_le_bytes(),
        &nonce.to_le_bytes(),
    ]))
}

/// A number never used twice by this process (seeded at random once, so
/// a restarted process does not repeat its predecessor's).
fn next_nonce() -> u64 {
    static NONCE: OnceLock<AtomicU64> = OnceLock::new();
    NONCE
        .get_or_init(|| {
            let seed = crate::keys::random_bytes::<8>().map_or_else(|_| crate::unix_seconds(), u64::from_le_bytes);
            AtomicU64::new(seed)
        })
        .fetch_add(1, Ordering::Relaxed)
}

/// The header value for `host` making `req` at `now_ms`.
pub fn sign(keyring: &Keyring, host: u32, req: &Request<'_>, now_ms: u64) -> String {
    let key_id = keyring.primary().id;
    let nonce = next_nonce();
    let m = mac(keyring, key_id, req, host, now_ms, nonce).expect("the primary key is on the ring");
    format!("{host} {now_ms} {nonce} {key_id} {}", encode_hex(&m))
}

/// A request whose MAC verified: who sent it, and the MAC (for the replay
/// guard) with its time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verified {
    pub host: u32,
    pub mac: [u8; 16],
    pub at_ms: u64,
}

/// Checks a header value. `on_roster` says whether a host id may ask.
pub fn verify(
    keyring: &Keyring,
    value: &str,
    req: &Request<'_>,
    now_ms: u64,
    on_roster: impl Fn(u32) -> bool,
) -> Result<Verified, &'static str> {
    let fields: Vec<&str> = value.split_ascii_whitespace().collect();
    let [host, at, nonce, key_id, tag] = fields[..] else { return Err("malformed") };
    let (Ok(host), Ok(at), Ok(nonce), Ok(key_id)) =
        (host.parse::<u32>(), at.parse::<u64>(), nonce.parse::<u64>(), key_id.parse::<u16>())
    else {
        return Err("malformed");
    };
    let tag = decode_hex::<16>(tag).map_err(|_| "malformed")?;
    let expected = mac(keyring, key_id, req, host, at, nonce).ok_or("unknown_key")?;
    if !macs_equal(&expected, &tag) {
        return Err("auth");
    }
    if at.abs_diff(now_ms) > CLOCK_SKEW_MS_MAX {
        return Err("stale");
    }
    if !on_roster(host) {
        return Err("unknown_sender");
    }
    Ok(Verified { host, mac: tag, at_ms: at })
}

/// Requests answered within the clock-skew window, by MAC: a request seen
/// again (captured and replayed) is refused. Bounded: when full of
/// unexpired entries, new requests are refused until some expire (fail
/// closed: a flood cannot make a replay pass).
#[derive(Debug)]
pub struct ReplayGuard {
    seen: HashMap<[u8; 16], u64>,
    capacity: usize,
}

impl ReplayGuard {
    pub fn new(capacity: usize) -> ReplayGuard {
        ReplayGuard { seen: HashMap::new(), capacity: capacity.max(1) }
    }

    /// Records a verified request; `Err` if it was seen before or the
    /// guard is full.
    pub fn admit(&mut self, v: &Verified, now_ms: u64) -> Result<(), &'static str> {
        if self.seen.contains_key(&v.mac) {
            return Err("replay");
        }
        if self.seen.len() >= self.capacity {
            self.seen.retain(|_, expires| *expires > now_ms);
            if self.seen.len() >= self.capacity {
                return Err("replay_guard_full");
            }
        }
        self.seen.insert(v.mac, v.at_ms + CLOCK_SKEW_MS_MAX + 1);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::GossipKey;

    #[test]
    fn requests_verify_only_as_signed_and_only_once() {
        let ring = Keyring::new(vec![GossipKey::new(3, [9; 32])]).unwrap();
        let now = 1_800_000_000_000;
        let put = Request { method: "PUT", target: "/v1/shards/a", content: Some("0badf00d") };
        let h = sign(&ring, 4, &put, now);
        let v = verify(&ring, &h, &put, now + 1000, |_| true).unwrap();
        assert_eq!(v.host, 4);
        let other_crc = Request { content: Some("00000000"), ..put };
        assert_eq!(verify(&ring, &h, &other_crc, now, |_| true), Err("auth"), "another body");
        let other_path = Request { target: "/v1/shards/b", ..put };
        assert_eq!(verify(&ring, &h, &other_path, now, |_| true), Err("auth"));
        let as_get = Request { method: "GET", ..put };
        assert_eq!(verify(&ring, &h, &as_get, now, |_| true), Err("auth"));
        assert_eq!(verify(&ring, &h, &put, now, |h| h != 4), Err("unknown_sender"));
        assert_eq!(verify(&ring, &h, &put, now + CLOCK_SKEW_MS_MAX + 1, |_| true), Err("stale"));
        let forged = h.replacen("4 ", "5 ", 1);
        assert_eq!(verify(&ring, &forged, &put, now, |_| true), Err("auth"));
        let other = Keyring::new(vec![GossipKey::new(3, [8; 32])]).unwrap();
        assert_eq!(verify(&other, &h, &put, now, |_| true), Err("auth"));
        assert_eq!(verify(&ring, "4 x 1 3 00", &put, now, |_| true), Err("malformed"));
        // Once only.
        let mut guard = ReplayGuard::new(2);
        assert_eq!(guard.admit(&v, now), Ok(()));
        assert_eq!(guard.admit(&v, now), Err("replay"));
        // Two signatures of the same request differ (nonce), both pass.
        let h2 = sign(&ring, 4, &put, now);
        assert_ne!(h, h2);
        let v2 = verify(&ring, &h2, &put, now, |_| true).unwrap();
        assert_eq!(guard.admit(&v2, now), Ok(()));
        // Full of live entries: refused; once they expire, room again.
        let v3 = verify(&ring, &sign(&ring, 4, &put, now), &put, now, |_| true).unwrap();
        assert_eq!(guard.admit(&v3, now), Err("replay_guard_full"));
        assert_eq!(guard.admit(&v3, now + CLOCK_SKEW_MS_MAX + 2), Ok(()));
    }
}
