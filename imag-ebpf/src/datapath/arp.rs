//! ARP answers for imaginary hosts: a neighbour on the bridge asking "who has 10.77.0.10?" for a
//! host that is not warm is told "this interface", so that it sends the packet the datapath then
//! holds; warm hosts answer for themselves there. On an attach interface, a host with proxy ARP
//! is answered for whether it is warm or not (the machine routes to the bridge either way): an
//! on-link client whose neighbour entry expired while the host was warm must still find it.
//! A request whose VLAN tag the skb carries aside is not answered (the answer would go out
//! untagged).

use imag_common::{HOST_FLAG_PROXY_ARP, IFACE_FLAG_BRIDGE, stat};
use network_types::{arp::ArpHdr, eth::EthHdr};

use super::{
    HOSTS, INTERFACES, count,
    packet::{Frame, Verdict, ptr_at},
};

const ARP_REQUEST: [u8; 2] = 1u16.to_be_bytes();
const ARP_REPLY: [u8; 2] = 2u16.to_be_bytes();

pub fn try_answer<F: Frame>(ctx: &F, eth: *mut EthHdr) -> Verdict {
    let Some(arp) = ptr_at::<ArpHdr, F>(ctx, EthHdr::LEN) else {
        return Verdict::Pass;
    };
    // SAFETY: ptr_at checked the bounds of both headers.
    let (eth, arp) = unsafe { (&mut *eth, &mut *arp) };
    let ethernet_ipv4 = arp.htype == 1u16.to_be_bytes()
        && arp.ptype == 0x0800u16.to_be_bytes()
        && arp.hlen == 6
        && arp.plen == 4;
    // Probes (sender 0.0.0.0) and announcements (sender = target) are not questions to answer.
    if !ethernet_ipv4 || arp.oper != ARP_REQUEST || arp.spa == [0; 4] || arp.spa == arp.tpa {
        return Verdict::Pass;
    }
    let target = arp.tpa;
    let Some(host) = HOSTS.get_ptr(u32::from_ne_bytes(target)) else {
        return Verdict::Pass;
    };
    // SAFETY: map values stay valid for the program's run.
    let host = unsafe { *host };
    let Some(iface) = INTERFACES.get_ptr(ctx.ingress_ifindex()) else {
        return Verdict::Pass;
    };
    // SAFETY: as above.
    let iface = unsafe { *iface };
    let answer = if iface.flags & IFACE_FLAG_BRIDGE != 0 {
        host.answered_by_datapath()
    } else {
        host.flags & HOST_FLAG_PROXY_ARP != 0
    };
    if !answer || ctx.vlan_tagged() {
        return Verdict::Pass;
    }
    // Turn the request into the reply, in place.
    let requester_mac = arp.sha;
    let requester_ip = arp.spa;
    arp.oper = ARP_REPLY;
    arp.tha = requester_mac;
    arp.tpa = requester_ip;
    arp.sha = iface.mac;
    arp.spa = target;
    eth.dst_addr = requester_mac;
    eth.src_addr = iface.mac;
    count(stat::ARP_ANSWERED);
    Verdict::Bounce
}
