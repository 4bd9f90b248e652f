//! The fix-up a held frame needs before it goes back into the stack.
//!
//! Frames held from a veth (any container, any client namespace) usually carry only a partial
//! TCP/UDP checksum: the sender's stack left the rest to "hardware" that a veth never applies.
//! Re-delivered as they were, the receiver would drop them silently, so [`complete_checksum`]
//! recomputes the transport checksum of every frame before the datapath re-delivers it.

use etherparse::{NetSlice, TransportSlice};

use super::{FrameError, untagged_ipv4};

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
        // Where the transport header starts, from the parsed slice itself: IPv4 extension
        // headers (an IPsec authentication header, protocol 51) may sit between the IP header
        // and it.
        let at = |slice: &[u8]| slice.as_ptr() as usize - frame.as_ptr() as usize;
        match &packet.transport {
            Some(TransportSlice::Tcp(tcp)) => (
                at(tcp.slice()) + TCP_CHECKSUM_AT,
                tcp.calc_checksum_ipv4(src, dst)?,
            ),
            Some(TransportSlice::Udp(udp)) if udp.checksum() != 0 => {
                let sum = udp
                    .to_header()
                    .calc_checksum_ipv4_raw(src, dst, udp.payload())?;
                (at(udp.slice()) + UDP_CHECKSUM_AT, sum)
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

    /// An `IPsec` authentication header (RFC 4302) between the IP header and TCP: the checksum is
    /// the TCP header's, after it (found by the fuzzer: it was written inside the AH, and a
    /// second completion changed the frame again).
    #[test]
    fn completes_the_checksum_after_an_authentication_header() {
        let plain = tcp_syn([10, 78, 0, 2], [10, 77, 0, 10], 40000, 8080);
        let ip = ETH_LEN;
        // next header TCP (6), payload length 4 (6 words: 24 bytes), reserved, SPI, sequence,
        // 12 bytes of ICV.
        let mut ah = vec![6u8, 4, 0, 0, 0, 0, 0x10, 0x01, 0, 0, 0, 1];
        ah.extend_from_slice(&[0xa5; 12]);
        let mut frame = plain[..ip + 20].to_vec();
        frame.extend_from_slice(&ah);
        frame.extend_from_slice(&plain[ip + 20..]);
        frame[ip + 9] = 51;
        let total = u16::try_from(frame.len() - ip).unwrap();
        frame[ip + 2..ip + 4].copy_from_slice(&total.to_be_bytes());
        let tcp = ip + 20 + ah.len();
        frame[tcp + 16] ^= 0xff;
        let before_ah = frame[..tcp].to_vec();
        complete_checksum(&mut frame).unwrap();
        assert_eq!(
            frame[..tcp],
            before_ah[..],
            "the AH and IP header are left alone"
        );
        assert_eq!(
            frame[tcp + 16..tcp + 18],
            plain[ip + 20 + 16..ip + 20 + 18],
            "the TCP checksum is the plain segment's (AH is not in the pseudo-header)"
        );
        let once = frame.clone();
        complete_checksum(&mut frame).unwrap();
        assert_eq!(frame, once, "completion is idempotent");
    }

    #[test]
    fn a_tagged_frame_is_left_as_it_is() {
        let mut frame = tagged(&tcp_syn([10, 78, 0, 2], [10, 77, 0, 10], 40000, 8080), 7);
        let before = frame.clone();
        assert_eq!(complete_checksum(&mut frame), Err(FrameError::Tagged(7)));
        assert_eq!(frame, before);
    }
}
