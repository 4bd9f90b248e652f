//! Who a container may speak as on its own link: `imag_from_host` (TC ingress on the host side of
//! a host's container veth) drops every frame the container sends as someone else, before the
//! bridge forwards it or the host routes it. Without this a container could take over a warm
//! neighbour's address (a gratuitous ARP re-points the bridge's and the neighbours' entries to
//! it, and routed client traffic for the neighbour then goes to the spoofer) or send from any
//! source address.
//!
//! The rule, from the link's `HOST_LINKS` entry (written by the agent when it attaches the link's
//! programs): the Ethernet source is the container's MAC; an IPv4 packet's source is the host's
//! address; an ARP packet's sender is the host's address (or 0.0.0.0, a probe, which no
//! neighbour learns from) and the container's MAC. Other frames (IPv6, whose link-local traffic
//! Docker containers send anyway) are only held to the MAC. A link without an entry is not
//! checked.
//!
//! Cost: one hash lookup (by ifindex) and a few compares per packet the container sends; the
//! ARP fields are read only for ARP.

use aya_ebpf::{bindings::__sk_buff, programs::TcContext};
use imag_common::HostLink;
use network_types::eth::EthHdr;

use super::{HOST_LINKS, host_link::read};

/// Offsets of the ARP sender hardware and protocol addresses in an Ethernet frame.
const ARP_SHA_OFFSET: usize = EthHdr::LEN + 8;
const ARP_SPA_OFFSET: usize = EthHdr::LEN + 14;

/// What the container sent, as far as the check needs it.
pub enum Claim {
    /// An IPv4 packet from this source address.
    Ipv4 { source: [u8; 4] },
    /// An ARP packet (the sender fields are read only if the link has an entry).
    Arp,
    /// Anything else: only the Ethernet source is checked.
    Other,
}

/// Whether the frame, sent from `eth_source`, claims an identity that is not the link owner's.
#[inline(always)]
pub fn forged(ctx: &TcContext, eth_source: [u8; 6], claim: Claim) -> bool {
    let skb: *mut __sk_buff = ctx.skb.skb;
    // SAFETY: skb is the program's context. At TC ingress `ifindex` is the link the frame
    // arrived on: the host side of the container's veth.
    let ifindex = unsafe { (*skb).ifindex };
    let Some(link) = HOST_LINKS.get_ptr(ifindex) else {
        return false;
    };
    // SAFETY: map values stay valid for the program's run.
    let link: HostLink = unsafe { *link };
    let mac_known = link.mac != [0; 6];
    if mac_known && eth_source != link.mac {
        return true;
    }
    match claim {
        Claim::Ipv4 { source } => u32::from_ne_bytes(source) != link.addr,
        Claim::Arp => {
            // An unreadable sender is not a claim anyone learns from; a short frame passes.
            let Ok(sender) = read::<[u8; 4]>(ctx, ARP_SPA_OFFSET) else {
                return false;
            };
            if sender != [0; 4] && u32::from_ne_bytes(sender) != link.addr {
                return true;
            }
            mac_known && read::<[u8; 6]>(ctx, ARP_SHA_OFFSET).is_ok_and(|sha| sha != link.mac)
        }
        Claim::Other => false,
    }
}
