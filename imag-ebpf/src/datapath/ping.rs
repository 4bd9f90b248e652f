//! Echo replies for imaginary hosts that are not warm, so that monitoring sees every configured
//! host up and cannot keep hosts awake.

use imag_common::stat;
use network_types::{eth::EthHdr, icmp::Icmpv4Hdr, ip::Ipv4Hdr};

use super::{
    count,
    packet::{Frame, checksum_replace, ptr_at},
};

const ECHO_REQUEST: u8 = 8;
const ECHO_REPLY: u8 = 0;
const REPLY_TTL: u8 = 64;

/// Turns an ICMP echo request into its reply in place. Returns false (frame untouched) for any
/// other ICMP message.
pub fn try_answer<F: Frame>(ctx: &F, eth: *mut EthHdr, ip: *mut Ipv4Hdr) -> bool {
    let Some(icmp) = ptr_at::<Icmpv4Hdr, F>(ctx, EthHdr::LEN + Ipv4Hdr::LEN) else {
        return false;
    };
    // SAFETY: ptr_at checked the bounds of all three headers.
    let (eth, ip, icmp) = unsafe { (&mut *eth, &mut *ip, &mut *icmp) };
    if icmp.type_ != ECHO_REQUEST || icmp.code != 0 {
        return false;
    }
    core::mem::swap(&mut eth.src_addr, &mut eth.dst_addr);
    // Swapping the addresses leaves the IP checksum as it is; the new TTL does not.
    core::mem::swap(&mut ip.src_addr, &mut ip.dst_addr);
    let old = u16::from_be_bytes([ip.ttl, ip.proto]);
    ip.ttl = REPLY_TTL;
    checksum_replace(&mut ip.check, old, u16::from_be_bytes([ip.ttl, ip.proto]));
    let old = u16::from_be_bytes([icmp.type_, icmp.code]);
    icmp.type_ = ECHO_REPLY;
    checksum_replace(
        &mut icmp.check,
        old,
        u16::from_be_bytes([icmp.type_, icmp.code]),
    );
    count(stat::PING_ANSWERED);
    true
}
