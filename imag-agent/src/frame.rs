//! Held frames as packets: what they are (for logs and decisions) and the fix-ups they need before
//! re-delivery.
//!
//! Frames held from a veth (any container, any client namespace) usually carry only a partial
//! TCP/UDP checksum: the sender's stack left the rest to "hardware" that a veth never applies.
//! Re-delivered as they were, the receiver would drop them silently, so [`complete_checksum`]
//! recomputes the transport checksum of every frame before it goes back into the stack.

use std::{fmt, net::Ipv4Addr};

use etherparse::{
    Icmpv4Type, NetSlice, PacketBuilder, SlicedPacket, TransportSlice,
    icmpv4::DestUnreachableHeader,
};

const ETH_LEN: usize = 14;
/// TTL of the packets the agent sends on behalf of a host.
const REPLY_TTL: u8 = 64;
/// RFC 1812 4.3.2.3: an ICMP error carries as much of the offending packet as fits in 576 bytes.
const ICMP_ERROR_MAX: usize = 576 - 20 - 8;

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

/// The answer that tells a client at once that a host cannot be reached, built from the held
/// frame it answers: for TCP a RST (connection refused), for UDP an ICMP port unreachable, for
/// other protocols an ICMP protocol unreachable, for an echo request host unreachable. `None` for
/// packets that must not be answered (RSTs, ICMP errors, unparsable frames).
///
/// The answer comes from the host's address and goes back to the sender's MAC address, out of
/// the interface the held frame arrived on.
pub fn refusal(frame: &[u8]) -> Option<Vec<u8>> {
    let packet = SlicedPacket::from_ethernet(frame).ok()?;
    let Some(NetSlice::Ipv4(ip)) = &packet.net else {
        return None;
    };
    let link = packet.link.as_ref()?.to_header()?;
    let eth = link.ethernet2()?;
    let header = ip.header();
    let (client, host) = (header.source(), header.destination());
    let builder =
        PacketBuilder::ethernet2(eth.destination, eth.source).ipv4(host, client, REPLY_TTL);
    let mut out = Vec::new();
    match &packet.transport {
        Some(TransportSlice::Tcp(tcp)) => {
            if tcp.rst() {
                return None;
            }
            let builder = if tcp.ack() {
                // RFC 793: a segment with ACK gets a RST whose sequence number is that ACK.
                builder
                    .tcp(
                        tcp.destination_port(),
                        tcp.source_port(),
                        tcp.acknowledgment_number(),
                        0,
                    )
                    .rst()
            } else {
                let consumed =
                    tcp.payload().len() as u32 + u32::from(tcp.syn()) + u32::from(tcp.fin());
                builder
                    .tcp(tcp.destination_port(), tcp.source_port(), 0, 0)
                    .rst()
                    .ack(tcp.sequence_number().wrapping_add(consumed))
            };
            builder.write(&mut out, &[]).ok()?;
        }
        other => {
            let code = match other {
                Some(TransportSlice::Udp(_)) => DestUnreachableHeader::Port,
                Some(TransportSlice::Icmpv4(icmp)) if icmp.type_u8() == 8 => {
                    DestUnreachableHeader::Host
                }
                // Never answer an ICMP error (or any other ICMP) with an error.
                Some(TransportSlice::Icmpv4(_)) => return None,
                _ => DestUnreachableHeader::Protocol,
            };
            let ip_start = ETH_LEN;
            let ip_len = (header.total_len() as usize).min(frame.len() - ip_start);
            let quoted = &frame[ip_start..ip_start + ip_len.min(ICMP_ERROR_MAX)];
            builder
                .icmpv4(Icmpv4Type::DestinationUnreachable(code))
                .write(&mut out, quoted)
                .ok()?;
        }
    }
    Some(out)
}

/// A gratuitous ARP announcing that `ip` is at `mac`, broadcast from `mac`: neighbours that have
/// an entry for `ip` update it (Linux does so even with `arp_accept` off).
pub fn gratuitous_arp(ip: Ipv4Addr, mac: [u8; 6]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(42);
    frame.extend_from_slice(&[0xff; 6]);
    frame.extend_from_slice(&mac);
    frame.extend_from_slice(&0x0806u16.to_be_bytes());
    frame.extend_from_slice(&1u16.to_be_bytes()); // Ethernet
    frame.extend_from_slice(&0x0800u16.to_be_bytes()); // IPv4
    frame.extend_from_slice(&[6, 4]);
    frame.extend_from_slice(&1u16.to_be_bytes()); // request form: sender = target
    frame.extend_from_slice(&mac);
    frame.extend_from_slice(&ip.octets());
    frame.extend_from_slice(&[0; 6]);
    frame.extend_from_slice(&ip.octets());
    frame
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
    fn a_syn_is_refused_with_rst_ack() {
        let syn = tcp_syn([10, 78, 0, 2], [10, 77, 0, 10], 40000, 8080);
        let rst = refusal(&syn).expect("a SYN is answered");
        let packet = SlicedPacket::from_ethernet(&rst).unwrap();
        let eth = packet.link.unwrap().to_header().unwrap();
        let eth = eth.ethernet2().unwrap();
        assert_eq!(
            eth.destination,
            [2, 0, 0, 0, 0, 1],
            "back to the sender's MAC"
        );
        assert_eq!(eth.source, [2, 0, 0, 0, 0, 2]);
        let Some(NetSlice::Ipv4(ip)) = &packet.net else {
            panic!("IPv4")
        };
        assert_eq!(
            ip.header().source_addr(),
            Ipv4Addr::new(10, 77, 0, 10),
            "from the host"
        );
        assert_eq!(ip.header().destination_addr(), Ipv4Addr::new(10, 78, 0, 2));
        let Some(TransportSlice::Tcp(tcp)) = &packet.transport else {
            panic!("TCP")
        };
        assert!(tcp.rst() && tcp.ack() && !tcp.syn());
        assert_eq!((tcp.source_port(), tcp.destination_port()), (8080, 40000));
        assert_eq!(
            tcp.acknowledgment_number(),
            1001,
            "acknowledges the SYN (seq 1000)"
        );
        let sum = tcp
            .calc_checksum_ipv4(ip.header().source(), ip.header().destination())
            .unwrap();
        assert_eq!(tcp.checksum(), sum, "a valid checksum");
    }

    #[test]
    fn a_segment_with_ack_is_refused_with_its_ack_as_sequence() {
        let mut frame = Vec::new();
        PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
            .ipv4([10, 78, 0, 2], [10, 77, 0, 10], 64)
            .tcp(40000, 8080, 5000, 64240)
            .ack(777)
            .write(&mut frame, b"data")
            .unwrap();
        let rst = refusal(&frame).unwrap();
        let packet = SlicedPacket::from_ethernet(&rst).unwrap();
        let Some(TransportSlice::Tcp(tcp)) = &packet.transport else {
            panic!("TCP")
        };
        assert!(tcp.rst() && !tcp.ack());
        assert_eq!(tcp.sequence_number(), 777);
    }

    #[test]
    fn a_rst_is_never_answered() {
        let mut frame = Vec::new();
        PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
            .ipv4([10, 78, 0, 2], [10, 77, 0, 10], 64)
            .tcp(40000, 8080, 5000, 0)
            .rst()
            .write(&mut frame, &[])
            .unwrap();
        assert_eq!(refusal(&frame), None);
    }

    #[test]
    fn a_datagram_is_refused_with_port_unreachable_quoting_it() {
        let datagram = udp([10, 78, 0, 2], [10, 77, 0, 53], 5353, 53, b"query");
        let reply = refusal(&datagram).unwrap();
        let packet = SlicedPacket::from_ethernet(&reply).unwrap();
        let Some(NetSlice::Ipv4(ip)) = &packet.net else {
            panic!("IPv4")
        };
        assert_eq!(ip.header().source_addr(), Ipv4Addr::new(10, 77, 0, 53));
        let Some(TransportSlice::Icmpv4(icmp)) = &packet.transport else {
            panic!("ICMP")
        };
        assert_eq!(
            icmp.icmp_type(),
            Icmpv4Type::DestinationUnreachable(DestUnreachableHeader::Port)
        );
        assert_eq!(
            icmp.payload(),
            &datagram[ETH_LEN..],
            "quotes the whole small datagram"
        );
    }

    #[test]
    fn icmp_errors_are_never_answered_but_pings_get_host_unreachable() {
        let mut ping = Vec::new();
        PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
            .ipv4([10, 78, 0, 2], [10, 77, 0, 10], 64)
            .icmpv4_echo_request(1, 1)
            .write(&mut ping, b"ping")
            .unwrap();
        let reply = refusal(&ping).unwrap();
        let packet = SlicedPacket::from_ethernet(&reply).unwrap();
        let Some(TransportSlice::Icmpv4(icmp)) = &packet.transport else {
            panic!("ICMP")
        };
        assert_eq!(
            icmp.icmp_type(),
            Icmpv4Type::DestinationUnreachable(DestUnreachableHeader::Host)
        );
        assert_eq!(refusal(&reply), None, "an ICMP error is not answered");
    }

    #[test]
    fn gratuitous_arp_layout() {
        let frame = gratuitous_arp(Ipv4Addr::new(10, 77, 0, 10), [2, 0x42, 10, 77, 0, 10]);
        assert_eq!(frame.len(), 42);
        assert_eq!(&frame[..6], &[0xff; 6]);
        assert_eq!(&frame[12..14], &[8, 6]);
        assert_eq!(&frame[28..32], &[10, 77, 0, 10], "sender address");
        assert_eq!(
            &frame[38..42],
            &[10, 77, 0, 10],
            "target address = sender: gratuitous"
        );
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
