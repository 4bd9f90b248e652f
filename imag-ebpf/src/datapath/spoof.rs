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
//! Cost: the link's owner comes from its `LINK_OWNERS` slot (an array lookup, two loads) when the
//! link has one, and a few compares per packet the container sends; the ARP fields are read only
//! for ARP. The slot names the owner's host too (its id and flags), so that a frame it lets pass
//! is counted without looking the sender up (`Judged::Passed`). A slot only lets frames pass: a
//! frame it does not let through, and every frame on a link without a slot (another link took
//! it), is judged by `HOST_LINKS` (a hash lookup), the authority, so a stale or half-written slot
//! can never drop a frame, only ask the hash.

use aya_ebpf::{bindings::__sk_buff, programs::TcContext};
use imag_common::{HostEntry, LINK_SLOT_OWNER_HOST, LinkSlot, link_slot, link_slot_tag};
use network_types::eth::EthHdr;

use super::{HOST_LINKS, LINK_OWNERS, host_link::read};

/// Offsets of the ARP sender hardware and protocol addresses in an Ethernet frame.
const ARP_SHA_OFFSET: usize = EthHdr::LEN + 8;
const ARP_SPA_OFFSET: usize = EthHdr::LEN + 14;

/// What the container sent, as far as the check needs it.
#[derive(Clone, Copy)]
pub enum Claim {
    /// An IPv4 packet from this source address.
    Ipv4 { source: [u8; 4] },
    /// An ARP packet (the sender fields are read only if the link has an owner).
    Arp,
    /// Anything else: only the Ethernet source is checked.
    Other,
}

/// The host whose link it is (its id and flags): where the link's packets are counted.
#[derive(Clone, Copy)]
pub struct LinkHost {
    pub host_id: u32,
    pub flags: u8,
}

impl LinkHost {
    /// The host of `entry`.
    #[inline(always)]
    pub fn of(entry: &HostEntry) -> LinkHost {
        LinkHost {
            host_id: entry.host_id,
            flags: entry.flags,
        }
    }
}

/// What the check made of a frame.
pub enum Judged {
    /// Sent as someone else: drop it.
    Forged,
    /// Sent as the link's owner (or on a link without one). With the sender's host when the
    /// link's slot let the frame pass and names its host: an IPv4 packet's source is then that
    /// host's address, and the host its sender.
    Passed(Option<LinkHost>),
}

/// The identity a link's container must use: the host's address (as in a packet) and the
/// container's MAC (all zero when unknown).
struct Owner {
    addr: u32,
    mac: [u8; 6],
}

/// Whether the frame, sent from `eth_source`, claims an identity that is not the link owner's;
/// if not, the link's host as its slot names it.
#[inline(always)]
pub fn judge(ctx: &TcContext, eth_source: [u8; 6], claim: Claim) -> Judged {
    let skb: *mut __sk_buff = ctx.skb.skb;
    // SAFETY: skb is the program's context. At TC ingress `ifindex` is the link the frame
    // arrived on: the host side of the container's veth.
    let ifindex = unsafe { (*skb).ifindex };
    if let Some(slot) = slot_of(ifindex) {
        let owner = Owner {
            addr: slot.addr,
            mac: slot.mac,
        };
        if !claims_other(ctx, eth_source, claim, &owner) {
            let sender = (slot.state == LINK_SLOT_OWNER_HOST).then_some(LinkHost {
                host_id: u32::from(slot.host_id),
                flags: slot.host_flags,
            });
            return Judged::Passed(sender);
        }
    }
    let Some(link) = HOST_LINKS.get_ptr(ifindex) else {
        return Judged::Passed(None);
    };
    // SAFETY: map values stay valid for the program's run.
    let link = unsafe { *link };
    let owner = Owner {
        addr: link.addr,
        mac: link.mac,
    };
    if claims_other(ctx, eth_source, claim, &owner) {
        Judged::Forged
    } else {
        Judged::Passed(None)
    }
}

/// Link `ifindex`'s `LINK_OWNERS` slot, if the slot is that link's.
#[inline(always)]
fn slot_of(ifindex: u32) -> Option<LinkSlot> {
    let slot = LINK_OWNERS.get_ptr(link_slot(ifindex))?;
    let words = slot.cast::<u64>();
    // SAFETY: map values stay valid for the program's run; the value is two aligned eight-byte
    // words. The word with `state` is read first, and each word with one load (volatile, so that
    // the compiler neither splits nor reorders them): the agent changes a slot's words only
    // while `state` says empty, so a valid `state` read first pairs this link's MAC and host
    // flags with its own address and host id, or (if the agent emptied and refilled the slot
    // for another link between the two loads) with another link's tag, which does not match.
    // Refilled for this link, the first word may be the slot's previous content; why no program
    // meets that: docs/ARCHITECTURE.md, *Link owners by array*.
    let (state_word, owner_word) = unsafe {
        let state_word = core::ptr::read_volatile(words.add(1));
        (state_word, core::ptr::read_volatile(words))
    };
    // SAFETY: LinkSlot is sixteen bytes of plain integers, laid out as these two words.
    let slot: LinkSlot =
        unsafe { core::mem::transmute::<[u64; 2], LinkSlot>([owner_word, state_word]) };
    // An ifindex too large for a tag has no slot.
    (slot.state != 0 && link_slot_tag(ifindex) == Some(slot.tag)).then_some(slot)
}

/// Whether the frame claims an identity other than `owner`'s.
#[inline(always)]
fn claims_other(ctx: &TcContext, eth_source: [u8; 6], claim: Claim, owner: &Owner) -> bool {
    let mac_known = owner.mac != [0; 6];
    if mac_known && eth_source != owner.mac {
        return true;
    }
    match claim {
        Claim::Ipv4 { source } => u32::from_ne_bytes(source) != owner.addr,
        Claim::Arp => {
            // An unreadable sender is not a claim anyone learns from; a short frame passes.
            let Ok(sender) = read::<[u8; 4]>(ctx, ARP_SPA_OFFSET) else {
                return false;
            };
            if sender != [0; 4] && u32::from_ne_bytes(sender) != owner.addr {
                return true;
            }
            mac_known && read::<[u8; 6]>(ctx, ARP_SHA_OFFSET).is_ok_and(|sha| sha != owner.mac)
        }
        Claim::Other => false,
    }
}
