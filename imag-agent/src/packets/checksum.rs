//! The fix-up a held frame needs before it goes back into the stack.
//!
//! Frames held from a veth (any container, any client namespace) usually carry only a partial
//! TCP/UDP checksum: the sender's stack left the rest to "hardware" that a veth never applies.
//! Re-delivered as they were, the receiver would drop them silently, so [`complete_checksum`]
//! recomputes the transport checksum of every frame before the datapath re-delivers it.

use etherparse::{NetSlice, SlicedPacket, TransportSlice};

use super::{FrameError, offset_in};

/// Where the checksum field sits in a TCP header (RFC 9293 3.1) and a UDP header (RFC 768).
const TCP_CHECKSUM_AT: usize = 16;
const UDP_CHECKSUM_AT: usize = 6;

/// Recomputes the TCP or UDP checksum of an Ethernet/IPv4 frame in place (no-op for other
/// protocols, and for UDP datagrams sent without a checksum).
pub fn complete_checksum(frame: &mut [u8]) -> Result<(), FrameError> {
    let (offset, checksum) = {
        let packet = SlicedPacket::from_ethernet(frame)?;
        let Some(NetSlice::Ipv4(ip)) = &packet.net else {
            return Err(FrameError::NotIpv4);
        };
        let header = ip.header();
        let (src, dst) = (header.source(), header.destination());
        // Where the transport header really starts: after VLAN tags too, not at a fixed offset.
        match &packet.transport {
            Some(TransportSlice::Tcp(tcp)) => (
                offset_in(frame, tcp.slice()) + TCP_CHECKSUM_AT,
                tcp.calc_checksum_ipv4(src, dst)?,
            ),
            Some(TransportSlice::Udp(udp)) if udp.checksum() != 0 => {
                let sum = udp
                    .to_header()
                    .calc_checksum_ipv4_raw(src, dst, udp.payload())?;
                (offset_in(frame, udp.slice()) + UDP_CHECKSUM_AT, sum)
            }
            _ => return Ok(()),
        }
    };
    frame[offset..offset + 2].copy_from_slice(&checksum.to_be_bytes());
    Ok(())
}

#[cfg(test)]
mod tests {
    use etherparse::{PacketBuilder, VlanId};

    use super::*;
    use crate::packets::{
        ETH_LEN,
        tests::{tcp_syn, udp},
    };

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

    /// Found by fuzzing (`fuzz/corpus/held_frame/crash-vlan-checksum-offset`): the checksum was
    /// written 14 bytes past the Ethernet header whatever the frame said, so a tagged frame had
    /// two bytes of its TCP header overwritten and kept its wrong checksum.
    #[test]
    fn completes_the_checksum_of_vlan_tagged_frames_where_it_is() {
        for tags in [1, 2] {
            let eth = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]);
            let builder = if tags == 1 {
                eth.single_vlan(VlanId::try_new(7).unwrap())
            } else {
                eth.double_vlan(VlanId::try_new(7).unwrap(), VlanId::try_new(8).unwrap())
            }
            .ipv4([10, 78, 0, 2], [10, 77, 0, 10], 64)
            .tcp(40000, 8080, 1000, 64240)
            .syn();
            let mut good = Vec::new();
            builder.write(&mut good, b"data").unwrap();
            let at = ETH_LEN + 4 * tags + 20 + 16;
            let mut partial = good.clone();
            partial[at] ^= 0xff;
            complete_checksum(&mut partial).unwrap();
            assert_eq!(partial, good, "{tags} VLAN tag(s)");
        }
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
