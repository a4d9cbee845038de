//! A member's identity as SWIM (foca) knows it, and the binary codec of
//! foca's messages.
//!
//! A member is a host of the roster in one life: `(host, generation)` and
//! the address it gossips from. A restarted agent comes back with a higher
//! generation (`max(stored + 1, unix seconds)`, persisted), so foca sees a
//! new identity for the same host and drops the old one (`Rename`); an
//! identity declared down renews itself the same way and rejoins.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, RwLock};

use bytes::{Buf, BufMut};
use foca::{Header, Identity, Member, Message, State};

/// One life of one host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId {
    pub host: u32,
    pub generation: u64,
    pub addr: SocketAddr,
}

impl Identity for NodeId {
    /// Two identities of one host are two lives of it: the newer wins.
    type Addr = u32;

    /// A life declared down renews as the next generation (the agent
    /// persists it, so a restart still moves past it). No clock: the
    /// simulator's lives must not depend on the wall clock.
    fn renew(&self) -> Option<Self> {
        Some(NodeId { generation: self.generation + 1, ..*self })
    }

    fn addr(&self) -> u32 {
        self.host
    }

    fn win_addr_conflict(&self, adversary: &Self) -> bool {
        self.generation > adversary.generation
    }
}

/// The generation of a host's next life: above the last one, and at
/// least the wall clock in seconds (so a lost state file still moves on).
pub fn next_generation(last: u64, now_seconds: u64) -> u64 {
    (last + 1).max(now_seconds)
}

/// Why a foca message could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed SWIM message: {0}")]
pub struct CodecError(pub &'static str);

/// foca's messages in a fixed little-endian layout (docs/cluster.md,
/// "SWIM payload"). With a roster, every identity decoded must be a roster
/// host at its roster address: a member list cannot bring in a stranger
/// or point a host's traffic elsewhere.
#[derive(Debug, Default, Clone)]
pub struct WireCodec {
    roster: Option<Addresses>,
}

/// The roster hosts' gossip addresses, shared by a host's codec and its
/// envelope checks, replaced when a newer roster is adopted.
pub type Addresses = Arc<RwLock<HashMap<u32, SocketAddr>>>;

/// The gossip addresses of `roster`, to share.
pub fn addresses_of(roster: &crate::roster::Roster) -> HashMap<u32, SocketAddr> {
    roster.hosts.iter().map(|h| (h.id, h.gossip)).collect()
}

impl WireCodec {
    pub fn with_roster(addresses: Addresses) -> WireCodec {
        WireCodec { roster: Some(addresses) }
    }

    /// Decodes only the header of a message (the envelope's check that the
    /// message is from the life the envelope names).
    pub fn peek_header(&self, payload: &[u8]) -> Result<Header<NodeId>, CodecError> {
        foca::Codec::decode_header(&mut self.clone(), payload)
    }

    fn check(&self, id: NodeId) -> Result<NodeId, CodecError> {
        match &self.roster {
            None => Ok(id),
            Some(r) => match r.read().expect("the address map is never poisoned").get(&id.host) {
                Some(addr) if *addr == id.addr => Ok(id),
                Some(_) => Err(CodecError("a host at an address the roster does not give it")),
                None => Err(CodecError("a host not on the roster")),
            },
        }
    }
}

const ADDR_V4: u8 = 4;
const ADDR_V6: u8 = 6;

fn need(buf: &impl Buf, n: usize) -> Result<(), CodecError> {
    if buf.remaining() < n {
        return Err(CodecError("truncated"));
    }
    Ok(())
}

pub(crate) fn put_id(buf: &mut impl BufMut, id: &NodeId) {
    buf.put_u32_le(id.host);
    buf.put_u64_le(id.generation);
    match id.addr.ip() {
        IpAddr::V4(ip) => {
            buf.put_u8(ADDR_V4);
            buf.put_slice(&ip.octets());
        }
        IpAddr::V6(ip) => {
            buf.put_u8(ADDR_V6);
            buf.put_slice(&ip.octets());
        }
    }
    buf.put_u16_le(id.addr.port());
}

fn id_len(id: &NodeId) -> usize {
    4 + 8 + 1 + if id.addr.is_ipv4() { 4 } else { 16 } + 2
}

pub(crate) fn get_id(buf: &mut impl Buf) -> Result<NodeId, CodecError> {
    need(buf, 13)?;
    let host = buf.get_u32_le();
    let generation = buf.get_u64_le();
    let ip = match buf.get_u8() {
        ADDR_V4 => {
            need(buf, 4)?;
            let mut o = [0u8; 4];
            buf.copy_to_slice(&mut o);
            IpAddr::V4(Ipv4Addr::from(o))
        }
        ADDR_V6 => {
            need(buf, 16)?;
            let mut o = [0u8; 16];
            buf.copy_to_slice(&mut o);
            IpAddr::V6(Ipv6Addr::from(o))
        }
        _ => return Err(CodecError("unknown address family")),
    };
    need(buf, 2)?;
    let port = buf.get_u16_le();
    Ok(NodeId { host, generation, addr: SocketAddr::new(ip, port) })
}

impl foca::Codec<NodeId> for WireCodec {
    type Error = CodecError;

    fn encode_header(&mut self, header: &Header<NodeId>, mut buf: impl BufMut) -> Result<(), CodecError> {
        put_id(&mut buf, &header.src);
        buf.put_u16_le(header.src_incarnation);
        put_id(&mut buf, &header.dst);
        match &header.message {
            Message::Ping(n) => {
                buf.put_u8(1);
                buf.put_u8(*n);
            }
            Message::Ack(n) => {
                buf.put_u8(2);
                buf.put_u8(*n);
            }
            Message::PingReq { target, probe_number } => {
                buf.put_u8(3);
                put_id(&mut buf, target);
                buf.put_u8(*probe_number);
            }
            Message::IndirectPing { origin, probe_number } => {
                buf.put_u8(4);
                put_id(&mut buf, origin);
                buf.put_u8(*probe_number);
            }
            Message::IndirectAck { target, probe_number } => {
                buf.put_u8(5);
                put_id(&mut buf, target);
                buf.put_u8(*probe_number);
            }
            Message::ForwardedAck { origin, probe_number } => {
                buf.put_u8(6);
                put_id(&mut buf, origin);
                buf.put_u8(*probe_number);
            }
            Message::Announce => buf.put_u8(7),
            Message::Feed => buf.put_u8(8),
            Message::Gossip => buf.put_u8(9),
            Message::Broadcast => buf.put_u8(10),
            Message::TurnUndead => buf.put_u8(11),
        }
        Ok(())
    }

    fn decode_header(&mut self, mut buf: impl Buf) -> Result<Header<NodeId>, CodecError> {
        let src = self.check(get_id(&mut buf)?)?;
        need(&buf, 2)?;
        let src_incarnation = buf.get_u16_le();
        let dst = get_id(&mut buf)?;
        // An announce names only the host it asks (generation 0).
        if self.roster.as_ref().is_some_and(|r| !r.read().expect("never poisoned").contains_key(&dst.host)) {
            return Err(CodecError("addressed to a host not on the roster"));
        }
        need(&buf, 1)?;
        let tag = buf.get_u8();
        let number = |buf: &mut dyn Buf| -> Result<u8, CodecError> {
            if buf.remaining() < 1 {
                return Err(CodecError("truncated"));
            }
            Ok(buf.get_u8())
        };
        let message = match tag {
            1 => Message::Ping(number(&mut buf)?),
            2 => Message::Ack(number(&mut buf)?),
            3..=6 => {
                let id = self.check(get_id(&mut buf)?)?;
                let probe_number = number(&mut buf)?;
                match tag {
                    3 => Message::PingReq { target: id, probe_number },
                    4 => Message::IndirectPing { origin: id, probe_number },
                    5 => Message::IndirectAck { target: id, probe_number },
                    _ => Message::ForwardedAck { origin: id, probe_number },
                }
            }
            7 => Message::Announce,
            8 => Message::Feed,
            9 => Message::Gossip,
            10 => Message::Broadcast,
            11 => Message::TurnUndead,
            _ => return Err(CodecError("unknown message kind")),
        };
        Ok(Header { src, src_incarnation, dst, message })
    }

    fn encode_member(&mut self, member: &Member<NodeId>, mut buf: impl BufMut) -> Result<(), CodecError> {
        // foca asks that a member that does not fit leaves the buffer as
        // it was.
        if buf.remaining_mut() < id_len(member.id()) + 3 {
            return Err(CodecError("no room for a member"));
        }
        put_id(&mut buf, member.id());
        buf.put_u16_le(member.incarnation());
        buf.put_u8(match member.state() {
            State::Alive => 0,
            State::Suspect => 1,
            State::Down => 2,
        });
        Ok(())
    }

    fn decode_member(&mut self, mut buf: impl Buf) -> Result<Member<NodeId>, CodecError> {
        let id = self.check(get_id(&mut buf)?)?;
        need(&buf, 3)?;
        let incarnation = buf.get_u16_le();
        let state = match buf.get_u8() {
            0 => State::Alive,
            1 => State::Suspect,
            2 => State::Down,
            _ => return Err(CodecError("unknown member state")),
        };
        Ok(Member::new(id, incarnation, state))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use foca::Codec;

    fn id(host: u32) -> NodeId {
        NodeId {
            host,
            generation: 1_700_000_000 + u64::from(host),
            addr: format!("127.0.0.{host}:7946").parse().unwrap(),
        }
    }

    #[test]
    fn headers_and_members_round_trip() {
        let mut c = WireCodec::default();
        let messages = [
            Message::Ping(3),
            Message::Ack(4),
            Message::PingReq { target: id(9), probe_number: 1 },
            Message::IndirectPing { origin: id(8), probe_number: 2 },
            Message::IndirectAck { target: id(7), probe_number: 3 },
            Message::ForwardedAck { origin: id(6), probe_number: 4 },
            Message::Announce,
            Message::Feed,
            Message::Gossip,
            Message::Broadcast,
            Message::TurnUndead,
        ];
        for message in messages {
            let h = Header { src: id(1), src_incarnation: 7, dst: id(2), message };
            let mut buf = Vec::new();
            c.encode_header(&h, &mut buf).unwrap();
            assert_eq!(c.decode_header(&buf[..]).unwrap(), h);
            for cut in 0..buf.len() {
                assert!(c.decode_header(&buf[..cut]).is_err(), "a header cut to {cut} bytes decoded");
            }
        }
        let v6 = NodeId { addr: "[::1]:7000".parse().unwrap(), ..id(3) };
        for m in [Member::new(id(5), 9, State::Suspect), Member::new(v6, 0, State::Down)] {
            let mut buf = Vec::new();
            c.encode_member(&m, &mut buf).unwrap();
            assert_eq!(c.decode_member(&buf[..]).unwrap(), m);
        }
    }

    #[test]
    fn a_renewed_identity_wins_over_the_old_one() {
        let old = id(1);
        let new = old.renew().unwrap();
        assert!(new.generation > old.generation);
        assert!(new.win_addr_conflict(&old) && !old.win_addr_conflict(&new));
        assert_eq!(next_generation(10, 5), 11);
        assert_eq!(next_generation(10, 500), 500);
    }
}
