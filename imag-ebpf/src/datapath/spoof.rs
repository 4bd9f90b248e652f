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
//! Cost: a few compares per packet the container sends; the ARP fields are read only for ARP.
//! The lookup (by ifindex) is `imag_from_host`'s only one for a packet of the link's owner: the
//! entry also carries the host's `HOSTS` entry (`host_link.rs`).

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

/// The link's `HOST_LINKS` entry: at TC (ingress and egress alike) `ifindex` is the device the
/// program runs on, the host side of the container's veth.
#[inline(always)]
pub fn link_of(ctx: &TcContext) -> Option<HostLink> {
    let skb: *mut __sk_buff = ctx.skb.skb;
    // SAFETY: skb is the program's context.
    let ifindex = unsafe { (*skb).ifindex };
    // SAFETY: map values stay valid for the program's run.
    HOST_LINKS.get_ptr(ifindex).map(|link| unsafe { *link })
}

/// Whether the frame, sent from `eth_source` on a link owned by `link`, claims an identity that
/// is not the link owner's.
#[inline(always)]
pub fn forged(ctx: &TcContext, link: &HostLink, eth_source: [u8; 6], claim: Claim) -> bool {
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
