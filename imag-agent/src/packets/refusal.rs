//! Answers for held packets whose host cannot be woken: the client learns at once instead of
//! retrying until its own timeout. Sent by the orchestrator through [`super::Wire`].

use etherparse::{
    Icmpv4Type, NetSlice, PacketBuilder, SlicedPacket, TransportSlice,
    icmpv4::DestUnreachableHeader,
};

use super::offset_in;

/// TTL of the packets the agent sends on behalf of a host.
const REPLY_TTL: u8 = 64;
/// RFC 1812 4.3.2.3: an ICMP error carries as much of the offending packet as fits in 576 bytes.
const ICMP_ERROR_MAX: usize = 576 - 20 - 8;

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
                #[allow(
                    clippy::cast_possible_truncation,
                    reason = "sequence numbers count modulo 2^32; a frame's payload is far below it"
                )]
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
            let ip_start = offset_in(frame, ip.header().slice());
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

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;
    use crate::packets::{
        ETH_LEN,
        tests::{tcp_syn, udp},
    };

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
    fn a_tagged_datagram_is_quoted_from_its_ip_header() {
        let builder = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
            .single_vlan(etherparse::VlanId::try_new(7).unwrap())
            .ipv4([10, 78, 0, 2], [10, 77, 0, 10], 64)
            .udp(5353, 53);
        let mut datagram = Vec::new();
        builder.write(&mut datagram, b"query").unwrap();
        let unreachable = refusal(&datagram).expect("UDP is answered");
        let packet = SlicedPacket::from_ethernet(&unreachable).unwrap();
        let Some(TransportSlice::Icmpv4(icmp)) = &packet.transport else {
            panic!("ICMP")
        };
        assert_eq!(
            icmp.payload(),
            &datagram[ETH_LEN + 4..],
            "the IP datagram, not the tag"
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
}
