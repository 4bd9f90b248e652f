//! Held frames as packets: what they are (for logs and decisions) and the fix-ups they need before
//! re-delivery.
//!
//! Frames held from a veth (any container, any client namespace) usually carry only a partial
//! TCP/UDP checksum: the sender's stack left the rest to "hardware" that a veth never applies.
//! Re-delivered as they were, the receiver would drop them silently, so [`complete_checksum`]
//! recomputes the transport checksum of every frame before it goes back into the stack.

use std::{fmt, net::Ipv4Addr};

use etherparse::{NetSlice, SlicedPacket, TransportSlice};

const ETH_LEN: usize = 14;

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
    Malformed(String),
    #[error("not an IPv4 packet")]
    NotIpv4,
}

/// Parses the Ethernet, IPv4 and transport headers of a frame.
pub fn summarize(frame: &[u8]) -> Result<PacketSummary, FrameError> {
    let packet =
        SlicedPacket::from_ethernet(frame).map_err(|e| FrameError::Malformed(e.to_string()))?;
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

/// Recomputes the TCP or UDP checksum of an Ethernet/IPv4 frame in place (no-op for other
/// protocols, and for UDP datagrams sent without a checksum).
pub fn complete_checksum(frame: &mut [u8]) -> Result<(), FrameError> {
    let (offset, checksum) = {
        let packet =
            SlicedPacket::from_ethernet(frame).map_err(|e| FrameError::Malformed(e.to_string()))?;
        let Some(NetSlice::Ipv4(ip)) = &packet.net else {
            return Err(FrameError::NotIpv4);
        };
        let header = ip.header();
        let (src, dst) = (header.source(), header.destination());
        let l4_offset = ETH_LEN + header.ihl() as usize * 4;
        match &packet.transport {
            Some(TransportSlice::Tcp(tcp)) => {
                let sum = tcp
                    .calc_checksum_ipv4(src, dst)
                    .map_err(|e| FrameError::Malformed(e.to_string()))?;
                (l4_offset + 16, sum)
            }
            Some(TransportSlice::Udp(udp)) if udp.checksum() != 0 => {
                let sum = udp
                    .to_header()
                    .calc_checksum_ipv4_raw(src, dst, udp.payload())
                    .map_err(|e| FrameError::Malformed(e.to_string()))?;
                (l4_offset + 6, sum)
            }
            _ => return Ok(()),
        }
    };
    frame[offset..offset + 2].copy_from_slice(&checksum.to_be_bytes());
    Ok(())
}

#[cfg(test)]
pub mod tests {
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

    #[test]
    fn completes_a_partial_tcp_checksum() {
        let good = tcp_syn([10, 78, 0, 2], [10, 77, 0, 10], 40000, 8080);
        let mut partial = good.clone();
        // What a veth sender leaves: some other value (the pseudo-header sum) in the field.
        partial[ETH_LEN + 20 + 16] = 0x12;
        partial[ETH_LEN + 20 + 17] = 0x34;
        complete_checksum(&mut partial).unwrap();
        assert_eq!(partial, good);
    }

    #[test]
    fn completes_a_partial_udp_checksum_but_keeps_zero() {
        let good = udp([10, 0, 0, 1], [10, 0, 0, 2], 5353, 53, b"query");
        let mut partial = good.clone();
        partial[ETH_LEN + 20 + 6] ^= 0xff;
        complete_checksum(&mut partial).unwrap();
        assert_eq!(partial, good);

        let mut unchecked = good.clone();
        unchecked[ETH_LEN + 20 + 6] = 0;
        unchecked[ETH_LEN + 20 + 7] = 0;
        let before = unchecked.clone();
        complete_checksum(&mut unchecked).unwrap();
        assert_eq!(unchecked, before, "a zero UDP checksum means none was sent");
    }

    #[test]
    fn ignores_ethernet_padding() {
        let good = tcp_syn([10, 78, 0, 2], [10, 77, 0, 10], 40000, 8080);
        let mut padded = good.clone();
        padded.extend_from_slice(&[0xaa; 6]);
        let mut partial = padded.clone();
        partial[ETH_LEN + 20 + 16] ^= 0xff;
        complete_checksum(&mut partial).unwrap();
        assert_eq!(partial, padded);
    }
}
