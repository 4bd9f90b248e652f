//! The fix-up a held frame needs before it goes back into the stack.
//!
//! Frames held from a veth (any container, any client namespace) usually carry only a partial
//! TCP/UDP checksum: the sender's stack left the rest to "hardware" that a veth never applies.
//! Re-delivered as they were, the receiver would drop them silently, so [`complete_checksum`]
//! recomputes the transport checksum of every frame before the datapath re-delivers it.

use etherparse::{NetSlice, TransportSlice};

use super::{FrameError, ip_offset, untagged_ipv4};

/// Where the checksum field sits in a TCP header (RFC 9293 3.1) and a UDP header (RFC 768).
const TCP_CHECKSUM_AT: usize = 16;
const UDP_CHECKSUM_AT: usize = 6;

/// Recomputes the TCP or UDP checksum of an Ethernet/IPv4 frame in place (no-op for other
/// protocols, and for UDP datagrams sent without a checksum). A VLAN-tagged frame is refused
/// (`FrameError::Tagged`): the datapath never holds one.
pub fn complete_checksum(frame: &mut [u8]) -> Result<(), FrameError> {
    let (offset, checksum) = {
        let packet = untagged_ipv4(frame)?;
        let Some(NetSlice::Ipv4(ip)) = &packet.net else {
            return Err(FrameError::NotIpv4);
        };
        let header = ip.header();
        let (src, dst) = (header.source(), header.destination());
        let l4_offset = ip_offset(frame, ip) + header.ihl() as usize * 4;
        match &packet.transport {
            Some(TransportSlice::Tcp(tcp)) => (
                l4_offset + TCP_CHECKSUM_AT,
                tcp.calc_checksum_ipv4(src, dst)?,
            ),
            Some(TransportSlice::Udp(udp)) if udp.checksum() != 0 => {
                let sum = udp
                    .to_header()
                    .calc_checksum_ipv4_raw(src, dst, udp.payload())?;
                (l4_offset + UDP_CHECKSUM_AT, sum)
            }
            _ => return Ok(()),
        }
    };
    frame[offset..offset + 2].copy_from_slice(&checksum.to_be_bytes());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packets::{
        ETH_LEN,
        tests::{tagged, tcp_syn, udp},
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

    #[test]
    fn a_tagged_frame_is_left_as_it_is() {
        let mut frame = tagged(&tcp_syn([10, 78, 0, 2], [10, 77, 0, 10], 40000, 8080), 7);
        let before = frame.clone();
        assert_eq!(complete_checksum(&mut frame), Err(FrameError::Tagged(7)));
        assert_eq!(frame, before);
    }
}
