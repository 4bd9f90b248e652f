//! Every frame the agent parses or builds in userspace, in one place: what a held frame is (for
//! logs and decisions, here), the fix-up it needs before re-delivery ([`checksum`]), the answers
//! the agent sends on a host's behalf ([`refusal`] for a host that cannot be woken, [`arp`] for a
//! woken host's neighbour announcement) and the socket that puts those on a link ([`wire`]).
//!
//! Frames are read and written through etherparse's slices and builders rather than by offset,
//! so the layouts live in one well-tested crate. The datapath (`crate::datapath`) hands held
//! frames in; the orchestrator decides which of these to apply.

mod arp;
mod checksum;
mod refusal;
mod wire;

use std::{fmt, net::Ipv4Addr};

use etherparse::{NetSlice, SlicedPacket, TransportSlice};

pub use self::{arp::gratuitous_arp, checksum::complete_checksum, refusal::refusal, wire::Wire};

/// Length of an Ethernet II header without VLAN tags.
#[cfg(test)]
const ETH_LEN: usize = 14;

/// Where `part` (a slice etherparse cut from `frame`) starts in `frame`. Headers are found by
/// parsing, never at fixed offsets: a frame may carry VLAN tags before its IP header.
fn offset_in(frame: &[u8], part: &[u8]) -> usize {
    let offset = part.as_ptr().addr() - frame.as_ptr().addr();
    debug_assert!(offset + part.len() <= frame.len(), "part lies inside frame");
    offset
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    Tcp {
        src_port: u16,
        dst_port: u16,
        syn: bool,
        ack: bool,
        rst: bool,
    },
    Udp {
        src_port: u16,
        dst_port: u16,
    },
    Icmp {
        kind: u8,
    },
    Other {
        protocol: u8,
    },
}

/// The parts of a held packet the agent reasons about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PacketSummary {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub transport: Transport,
}

impl fmt::Display for PacketSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.transport {
            Transport::Tcp {
                src_port,
                dst_port,
                syn,
                ack,
                rst,
            } => {
                let flags = match (syn, ack, rst) {
                    (_, _, true) => " RST",
                    (true, false, _) => " SYN",
                    (true, true, _) => " SYN-ACK",
                    _ => "",
                };
                write!(
                    f,
                    "tcp {}:{src_port} → {}:{dst_port}{flags}",
                    self.src, self.dst
                )
            }
            Transport::Udp { src_port, dst_port } => {
                write!(f, "udp {}:{src_port} → {}:{dst_port}", self.src, self.dst)
            }
            Transport::Icmp { kind } => write!(f, "icmp type {kind} {} → {}", self.src, self.dst),
            Transport::Other { protocol } => {
                write!(f, "ip proto {protocol} {} → {}", self.src, self.dst)
            }
        }
    }
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("not a parsable Ethernet/IPv4 frame: {0}")]
    Malformed(#[from] etherparse::err::packet::SliceError),
    #[error("not an IPv4 packet")]
    NotIpv4,
    /// Cannot happen for a frame that parsed (an IPv4 payload is below 64 KiB), but the
    /// checksum functions say so in their types.
    #[error("transport segment too long for its checksum: {0}")]
    TooLong(#[from] etherparse::err::ValueTooBigError<usize>),
}

/// Parses the Ethernet, IPv4 and transport headers of a frame.
pub fn summarize(frame: &[u8]) -> Result<PacketSummary, FrameError> {
    let packet = SlicedPacket::from_ethernet(frame)?;
    let Some(NetSlice::Ipv4(ip)) = &packet.net else {
        return Err(FrameError::NotIpv4);
    };
    let header = ip.header();
    let transport = match &packet.transport {
        Some(TransportSlice::Tcp(tcp)) => Transport::Tcp {
            src_port: tcp.source_port(),
            dst_port: tcp.destination_port(),
            syn: tcp.syn(),
            ack: tcp.ack(),
            rst: tcp.rst(),
        },
        Some(TransportSlice::Udp(udp)) => Transport::Udp {
            src_port: udp.source_port(),
            dst_port: udp.destination_port(),
        },
        Some(TransportSlice::Icmpv4(icmp)) => Transport::Icmp {
            kind: icmp.type_u8(),
        },
        _ => Transport::Other {
            protocol: header.protocol().0,
        },
    };
    Ok(PacketSummary {
        src: header.source_addr(),
        dst: header.destination_addr(),
        transport,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use etherparse::PacketBuilder;

    use super::*;

    pub fn tcp_syn(src: [u8; 4], dst: [u8; 4], src_port: u16, dst_port: u16) -> Vec<u8> {
        let builder = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
            .ipv4(src, dst, 64)
            .tcp(src_port, dst_port, 1000, 64240)
            .syn();
        let mut frame = Vec::new();
        builder.write(&mut frame, &[]).unwrap();
        frame
    }

    pub fn udp(
        src: [u8; 4],
        dst: [u8; 4],
        src_port: u16,
        dst_port: u16,
        payload: &[u8],
    ) -> Vec<u8> {
        let builder = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
            .ipv4(src, dst, 64)
            .udp(src_port, dst_port);
        let mut frame = Vec::new();
        builder.write(&mut frame, payload).unwrap();
        frame
    }

    #[test]
    fn summarizes_a_syn() {
        let frame = tcp_syn([10, 78, 0, 2], [10, 77, 0, 10], 40000, 8080);
        let summary = summarize(&frame).unwrap();
        assert_eq!(summary.src, Ipv4Addr::new(10, 78, 0, 2));
        assert_eq!(summary.dst, Ipv4Addr::new(10, 77, 0, 10));
        assert_eq!(
            summary.transport,
            Transport::Tcp {
                src_port: 40000,
                dst_port: 8080,
                syn: true,
                ack: false,
                rst: false
            }
        );
        assert_eq!(
            summary.to_string(),
            "tcp 10.78.0.2:40000 → 10.77.0.10:8080 SYN"
        );
    }

    #[test]
    fn summarizes_udp() {
        let frame = udp([10, 0, 0, 1], [10, 0, 0, 2], 5353, 53, b"query");
        assert_eq!(
            summarize(&frame).unwrap().transport,
            Transport::Udp {
                src_port: 5353,
                dst_port: 53
            }
        );
    }

    #[test]
    fn rejects_garbage() {
        assert!(matches!(
            summarize(&[0u8; 10]),
            Err(FrameError::Malformed(_))
        ));
        let mut arp = tcp_syn([1, 1, 1, 1], [2, 2, 2, 2], 1, 2);
        arp[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
        assert!(summarize(&arp).is_err());
    }
}
