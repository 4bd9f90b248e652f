//! Programs on a warm host's own link (TC on the host side of its container's veth): they count
//! the host's traffic for idleness, and make sure nothing reaches a container that is not warm.
//!
//! - `to_host` (egress towards the container) counts packets in. While the host drains (about to
//!   sleep: `HOST_MODE_DRAIN`), it passes and counts IPv4 packets as for a warm host: they were
//!   past the hold point before the switch, and counting them calls the sleep off. While the host
//!   is not warm, it drops ARP (only the datapath answers for a sleeping host: a paused container's kernel would
//!   still answer, and neighbours would then send to a frozen container), and holds IPv4 packets
//!   that a neighbour on the bridge sent straight to the container's MAC address (they are
//!   re-delivered on that neighbour's port once the host is warm again).
//!   For a restricted host (`allow_from`) it drops what a source outside the list sends
//!   (`allow`): traffic between hosts on the bridge only meets this hook.
//!   A VLAN-tagged frame is never held there (it would be re-delivered untagged): it passes
//!   untouched; a packet that would not wake the host (`wakes`) is dropped.
//! - `from_host` (ingress from the container) drops what the container sends as someone else
//!   (`spoof`), counts packets out, and holds what it sends to a neighbour that is not warm
//!   (whatever MAC it was sent to: see `hold_for_neighbour`).

use aya_ebpf::{
    bindings::{__sk_buff, TC_ACT_OK, TC_ACT_SHOT},
    helpers::generated::{bpf_ktime_get_coarse_ns, bpf_skb_load_bytes},
    maps::lpm_trie::Key,
    programs::TcContext,
};
use imag_common::{
    HOST_FLAG_ANSWER_PING, HOST_FLAG_IGNORES_PEERS, HostActivity, HostEntry, IgnoreKey, stat,
};
use network_types::{
    eth::{EthHdr, EtherType},
    ip::Ipv4Hdr,
};

use super::{
    ACTIVITY, IDLE_IGNORE, INTERFACES,
    allow::{self, IPPROTO_TCP, TCP_FLAGS_OFFSET},
    count,
    hold::{emit_held, is_plain_ipv4},
    host_entry, in_subnet,
    packet::{Frame, ptr_at},
    spoof::{self, Claim, Judged, LinkHost},
    wakes::{IPPROTO_ICMP, wakes},
};

const ETHERTYPE_IPV4: u16 = EtherType::Ipv4 as u16;
const ETHERTYPE_ARP: u16 = EtherType::Arp as u16;
/// Offset of the ARP target protocol address in an Ethernet frame.
const ARP_TPA_OFFSET: usize = EthHdr::LEN + 24;

pub fn to_host(ctx: &TcContext) -> i32 {
    let Ok(ether_type) = read::<u16>(ctx, 12) else {
        return TC_ACT_OK;
    };
    let skb: *mut __sk_buff = ctx.skb.skb;
    // SAFETY: skb is the program's context.
    let ingress = unsafe { (*skb).ingress_ifindex };
    // Packets the host itself sends (ingress 0) always pass: the agent's ready probes (and the
    // ARP they need) must reach a container that is not warm yet.
    let from_this_host = ingress == 0;
    if ether_type == ETHERTYPE_ARP {
        if from_this_host {
            return TC_ACT_OK;
        }
        let Ok(target) = read::<[u8; 4]>(ctx, ARP_TPA_OFFSET) else {
            return TC_ACT_OK;
        };
        return match host_entry(u32::from_ne_bytes(target)) {
            Some(host) if host.answered_by_datapath() => {
                count(stat::DROPPED_AT_HOST_LINK);
                TC_ACT_SHOT
            }
            _ => TC_ACT_OK,
        };
    }
    if ether_type != ETHERTYPE_IPV4 {
        return TC_ACT_OK;
    }
    let Ok(ip) = read::<Ipv4Hdr>(ctx, EthHdr::LEN) else {
        return TC_ACT_OK;
    };
    let host_addr = u32::from_ne_bytes(ip.dst_addr);
    let Some(host) = host_entry(host_addr) else {
        return TC_ACT_OK;
    };
    // A draining host's packets here were past the hold point when it switched: they pass and
    // count (its sleep is then called off), as a warm host's.
    let warm = host.reaches_its_container();
    // The machine's own packets (the agent's probes and DNS answers) are not checked.
    if !from_this_host
        && allow::denied(&host, ip.src_addr, || {
            !warm || ip.proto != IPPROTO_TCP || tcp_opens(ctx, &ip)
        })
    {
        return TC_ACT_SHOT;
    }
    if warm {
        record(LinkHost::of(&host), ip.src_addr, ctx.len(), Direction::In);
        return TC_ACT_OK;
    }
    if from_this_host {
        return TC_ACT_OK;
    }
    // Not warm. A frame bridged from a neighbour's port (an ifindex the datapath does not run
    // on) can be re-delivered on that port later: hold it. Anything else got here by routing
    // after the switch to hold. Every sleep from warm drains first (the agent's second look),
    // so that is a packet that took longer from the hold point to here than that look waits:
    // it is dropped (its sender retransmits).
    if INTERFACES.get_ptr(ingress).is_some() {
        count(stat::DROPPED_AT_HOST_LINK);
        return TC_ACT_SHOT;
    }
    if ctx.vlan_tagged() {
        count(stat::PASSED_UNPARSED);
        return TC_ACT_OK;
    }
    hold_at_link(ctx, &ip, ingress, host_addr, host.host_id)
}

/// Holds a frame at a host's link for `host_addr` (`HELD_AT_HOST_LINK`), naming `port`, the
/// bridge port it entered on, for its re-delivery; or drops it if it would not wake the host.
/// With IP options the transport header's offset varies: such packets wake, as before.
#[inline(always)]
fn hold_at_link(ctx: &TcContext, ip: &Ipv4Hdr, port: u32, host_addr: u32, host_id: u32) -> i32 {
    let l4 = EthHdr::LEN + Ipv4Hdr::LEN;
    if ip.vihl == 0x45 && !wakes(ip.proto, |at| read::<u8>(ctx, l4 + at).ok()) {
        count(stat::DROPPED_NOT_WAKING);
        return TC_ACT_SHOT;
    }
    let skb: *mut __sk_buff = ctx.skb.skb;
    let emitted = emit_held(ctx.len() as usize, port, host_addr, host_id, |to, len| {
        // SAFETY: `to` holds at least len bytes (emit_held checked it).
        unsafe { bpf_skb_load_bytes(skb.cast(), 0, to, len) }
    });
    count(match emitted {
        Ok(()) => stat::HELD_AT_HOST_LINK,
        Err(counter) => counter,
    });
    TC_ACT_SHOT
}

pub fn from_host(ctx: &TcContext) -> i32 {
    let Ok(eth) = read::<EthHdr>(ctx, 0) else {
        return TC_ACT_OK;
    };
    let ether_type = eth.ether_type;
    let ip = if ether_type == ETHERTYPE_IPV4 {
        read::<Ipv4Hdr>(ctx, EthHdr::LEN).ok()
    } else {
        None
    };
    let claim = match (&ip, ether_type) {
        (Some(ip), _) => Claim::Ipv4 {
            source: ip.src_addr,
        },
        (None, ETHERTYPE_ARP) => Claim::Arp,
        _ => Claim::Other,
    };
    let sender = match spoof::judge(ctx, eth.src_addr, claim) {
        Judged::Forged => {
            count(stat::DROPPED_SPOOFED);
            return TC_ACT_SHOT;
        }
        Judged::Passed(sender) => sender,
    };
    let Some(ip) = ip else {
        return TC_ACT_OK;
    };
    // The link's slot names the sender (its source is the slot's address: the check let it
    // pass); else it is looked up by its source.
    let sender =
        sender.or_else(|| host_entry(u32::from_ne_bytes(ip.src_addr)).map(|h| LinkHost::of(&h)));
    if let Some(sender) = sender {
        record(sender, ip.dst_addr, ctx.len(), Direction::Out);
    }
    // Outside the subnet (answers to clients): no host there, no lookup.
    let dst = u32::from_ne_bytes(ip.dst_addr);
    if !in_subnet(dst) {
        return TC_ACT_OK;
    }
    match host_entry(dst) {
        // A draining neighbour's new packets are held as a sleeping one's: this is where they
        // enter.
        Some(target) if target.holds_neighbours_packets() => {
            hold_for_neighbour(ctx, &ip, dst, &target)
        }
        _ => TC_ACT_OK,
    }
}

/// A packet this container sends to a neighbour that is not warm is held here, at the sender,
/// whatever MAC address it is sent to. Sent to the bridge it would be held there anyway; but a
/// container may still know the neighbour's own MAC (a stopped container's port is gone, and the
/// frame would be flooded and lost), and a neighbour being started has a new link that is
/// guarded only once it is warm, so the frame would reach a container whose service does not
/// listen yet (a reset: "connection refused"). The held frame names this link, the port it
/// entered the bridge on, like those `to_host` holds.
#[inline(always)]
fn hold_for_neighbour(ctx: &TcContext, ip: &Ipv4Hdr, dst: u32, target: &HostEntry) -> i32 {
    // Left to the bridge: fragments and packets with options (passed there), VLAN-tagged
    // frames, and pings the datapath answers for the host.
    if !is_plain_ipv4(ip)
        || ctx.vlan_tagged()
        || (ip.proto == IPPROTO_ICMP && target.flags & HOST_FLAG_ANSWER_PING != 0)
    {
        return TC_ACT_OK;
    }
    if allow::denied(target, ip.src_addr, || true) {
        return TC_ACT_SHOT;
    }
    hold_at_link(ctx, ip, ctx.ingress_ifindex(), dst, target.host_id)
}

/// Whether the packet's TCP segment opens a connection (unreadable: assume it does).
#[inline(always)]
fn tcp_opens(ctx: &TcContext, ip: &Ipv4Hdr) -> bool {
    let flags = if ip.vihl == 0x45 {
        read::<u8>(ctx, EthHdr::LEN + Ipv4Hdr::LEN + TCP_FLAGS_OFFSET)
    } else {
        // With options the offset varies, and the verifier refuses a direct read at a variable
        // offset ("R1 offset is outside of the packet"): the helper copy takes any offset.
        let header_len = usize::from(ip.vihl & 0x0f) * 4;
        ctx.load::<u8>(EthHdr::LEN + header_len + TCP_FLAGS_OFFSET)
    };
    flags.map_or(true, allow::opens_connection)
}

/// Reads a header: straight from the packet when it is in the linear part (no helper call: this
/// runs for every packet of a warm host), else through `bpf_skb_load_bytes`.
#[inline(always)]
pub fn read<T: Copy>(ctx: &TcContext, offset: usize) -> Result<T, i64> {
    match ptr_at::<T, TcContext>(ctx, offset) {
        // SAFETY: ptr_at checked the bounds; headers are read unaligned.
        Some(p) => Ok(unsafe { core::ptr::read_unaligned(p) }),
        None => ctx.load::<T>(offset),
    }
}

enum Direction {
    In,
    Out,
}

/// Adds a packet to the activity of `host` (its id and flags); it counts for idleness unless its
/// peer is ignored.
///
/// This runs for every packet of a warm host, so it does the least it can: one per-CPU array lookup by the host id,
/// plain adds on this CPU's copy, the idle-ignore trie only for hosts that have ignored peers
/// (`HOST_FLAG_IGNORES_PEERS`), and the coarse clock (the time of the last tick: no clock-source
/// read), stored only when it moved. Idleness is judged in seconds; the agent allows for the
/// coarse clock's lag where it compares with a precise stamp (`hosts::sleep_called_off`).
#[inline(always)]
fn record(host: LinkHost, peer: [u8; 4], len: u32, direction: Direction) {
    let Some(activity) = ACTIVITY.get_ptr_mut(host.host_id) else {
        return;
    };
    // SAFETY: per-CPU value: no other writer on this CPU.
    let activity: &mut HostActivity = unsafe { &mut *activity };
    match direction {
        Direction::In => {
            activity.packets_in += 1;
            activity.bytes_in += u64::from(len);
        }
        Direction::Out => {
            activity.packets_out += 1;
            activity.bytes_out += u64::from(len);
        }
    }
    if host.flags & HOST_FLAG_IGNORES_PEERS != 0 && ignored(host.host_id, peer) {
        activity.ignored_packets += 1;
        return;
    }
    // SAFETY: no preconditions.
    let now = unsafe { bpf_ktime_get_coarse_ns() };
    if activity.last_packet_ns != now {
        activity.last_packet_ns = now;
    }
}

/// Whether `peer` is in the host's idle-ignore prefixes.
#[inline(always)]
fn ignored(host_id: u32, peer: [u8; 4]) -> bool {
    let key = Key::new(
        64,
        IgnoreKey {
            host_id_be: host_id.to_be_bytes(),
            peer,
        },
    );
    IDLE_IGNORE.get(&key).is_some()
}
