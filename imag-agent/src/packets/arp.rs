//! The neighbour announcement of a woken host: after a wake, clients that resolved the host's
//! address to the agent's answering MAC (proxy ARP while it slept) learn the container's own.

use std::net::Ipv4Addr;

use etherparse::{ArpEthIpv4Packet, ArpOperation, PacketBuilder};

const BROADCAST: [u8; 6] = [0xff; 6];

/// A gratuitous ARP announcing that `ip` is at `mac`, broadcast from `mac`: neighbours that have
/// an entry for `ip` update it (Linux does so even with `arp_accept` off).
pub fn gratuitous_arp(ip: Ipv4Addr, mac: [u8; 6]) -> Vec<u8> {
    // The request form (sender = target, target MAC unknown) rather than a reply: every
    // neighbour accepts it as an update, whatever it asked for before.
    let announcement = ArpEthIpv4Packet {
        operation: ArpOperation::REQUEST,
        sender_mac: mac,
        sender_ipv4: ip.octets(),
        target_mac: [0; 6],
        target_ipv4: ip.octets(),
    };
    let builder = PacketBuilder::ethernet2(mac, BROADCAST).arp(announcement.into());
    let mut frame = Vec::with_capacity(builder.size());
    builder
        .write(&mut frame)
        .expect("writing to a Vec cannot fail");
    frame
}

#[cfg(test)]
mod tests {
    use etherparse::{EtherType, LinkSlice, NetSlice, SlicedPacket};

    use super::*;

    /// The announcement as the agent wrote it by hand before etherparse built it: the bytes on
    /// the wire must not change.
    fn by_hand(ip: Ipv4Addr, mac: [u8; 6]) -> Vec<u8> {
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
    fn gratuitous_arp_bytes_are_unchanged() {
        let (ip, mac) = (Ipv4Addr::new(10, 77, 0, 10), [2, 0x42, 10, 77, 0, 10]);
        assert_eq!(gratuitous_arp(ip, mac), by_hand(ip, mac));
    }

    #[test]
    fn gratuitous_arp_parses_as_an_announcement() {
        let (ip, mac) = (Ipv4Addr::new(10, 77, 0, 10), [2, 0x42, 10, 77, 0, 10]);
        let frame = gratuitous_arp(ip, mac);
        let packet = SlicedPacket::from_ethernet(&frame).unwrap();
        let Some(LinkSlice::Ethernet2(eth)) = &packet.link else {
            panic!("Ethernet II")
        };
        assert_eq!(eth.destination(), BROADCAST);
        assert_eq!(eth.source(), mac);
        assert_eq!(eth.ether_type(), EtherType::ARP);
        let Some(NetSlice::Arp(arp)) = &packet.net else {
            panic!("ARP")
        };
        let arp = arp.to_packet().try_eth_ipv4().unwrap();
        assert_eq!(arp.operation, ArpOperation::REQUEST);
        assert_eq!((arp.sender_mac, arp.sender_ipv4_addr()), (mac, ip));
        assert_eq!(arp.target_ipv4_addr(), ip, "target = sender: gratuitous");
    }
}
