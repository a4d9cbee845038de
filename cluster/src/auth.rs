//! Requests between agents over HTTP (a late joiner's record catch-up, a
//! roster fetch) carry a MAC under the gossip key, so only a host holding
//! the cluster's key, and naming itself as a roster host, is answered.
//!
//! The header is `x-shardnode-peer: <host> <unix ms> <key id> <mac hex>`,
//! the MAC (keyed BLAKE3, 128 bits) covering a domain tag, the method, the
//! path, the host and the time. A request more than the clock-skew bound
//! away from the receiver's clock is refused; within it a captured header
//! can be replayed only for the same read-only request.

use crate::keys::{decode_hex, encode_hex, macs_equal, Keyring};
use crate::records::CLOCK_SKEW_MS_MAX;

/// The request header that carries the MAC.
pub const HEADER: &str = "x-shardnode-peer";

const DOMAIN: &[u8] = b"shardnode peer request v1\0";

fn mac(keyring: &Keyring, key_id: u16, method: &str, path: &str, host: u32, at_ms: u64) -> Option<[u8; 16]> {
    let key = keyring.get(key_id)?;
    Some(key.mac(&[
        DOMAIN,
        method.as_bytes(),
        b"\0",
        path.as_bytes(),
        b"\0",
        &host.to_le_bytes(),
        &at_ms.to_le_bytes(),
    ]))
}

/// The header value for `host` asking `method path` at `now_ms`.
pub fn sign(keyring: &Keyring, host: u32, method: &str, path: &str, now_ms: u64) -> String {
    let key_id = keyring.primary().id;
    let m = mac(keyring, key_id, method, path, host, now_ms).expect("the primary key is on the ring");
    format!("{host} {now_ms} {key_id} {}", encode_hex(&m))
}

/// Checks a header value; the asking host if it holds. `on_roster` says
/// whether a host id is on the roster.
pub fn verify(
    keyring: &Keyring,
    value: &str,
    method: &str,
    path: &str,
    now_ms: u64,
    on_roster: impl Fn(u32) -> bool,
) -> Result<u32, &'static str> {
    let fields: Vec<&str> = value.split_ascii_whitespace().collect();
    let [host, at, key_id, tag] = fields[..] else { return Err("malformed") };
    let (Ok(host), Ok(at), Ok(key_id)) = (host.parse::<u32>(), at.parse::<u64>(), key_id.parse::<u16>()) else {
        return Err("malformed");
    };
    let tag = decode_hex::<16>(tag).map_err(|_| "malformed")?;
    let expected = mac(keyring, key_id, method, path, host, at).ok_or("unknown_key")?;
    if !macs_equal(&expected, &tag) {
        return Err("auth");
    }
    if at.abs_diff(now_ms) > CLOCK_SKEW_MS_MAX {
        return Err("stale");
    }
    if !on_roster(host) {
        return Err("unknown_sender");
    }
    Ok(host)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::GossipKey;

    #[test]
    fn requests_verify_only_as_signed() {
        let ring = Keyring::new(vec![GossipKey::new(3, [9; 32])]).unwrap();
        let now = 1_800_000_000_000;
        let h = sign(&ring, 4, "GET", "/v1/cluster/records", now);
        assert_eq!(verify(&ring, &h, "GET", "/v1/cluster/records", now + 1000, |_| true), Ok(4));
        assert_eq!(verify(&ring, &h, "GET", "/v1/cluster/roster", now, |_| true), Err("auth"));
        assert_eq!(verify(&ring, &h, "GET", "/v1/cluster/records", now, |h| h != 4), Err("unknown_sender"));
        assert_eq!(
            verify(&ring, &h, "GET", "/v1/cluster/records", now + CLOCK_SKEW_MS_MAX + 1, |_| true),
            Err("stale")
        );
        let forged = h.replacen("4 ", "5 ", 1);
        assert_eq!(verify(&ring, &forged, "GET", "/v1/cluster/records", now, |_| true), Err("auth"));
        let other = Keyring::new(vec![GossipKey::new(3, [8; 32])]).unwrap();
        assert_eq!(verify(&other, &h, "GET", "/v1/cluster/records", now, |_| true), Err("auth"));
        assert_eq!(verify(&ring, "4 x 3 00", "GET", "/", now, |_| true), Err("malformed"));
    }
}
