//! Types shared by imag's eBPF programs (`imag-ebpf`) and its agent (`imag-agent`).
//!
//! Everything here crosses the kernel/user boundary through BPF maps or the ring buffer, so every
//! type is `#[repr(C)]`, fixed-width and free of padding, and there are no enums or `Option`s:
//! states are `u8`s with named constants. Addresses are IPv4 addresses in network byte order,
//! stored in a `u32` exactly as they sit in the packet (`u32::from_ne_bytes(addr.octets())`).
#![no_std]

/// Largest frame (Ethernet header included) the datapath can hold for a cold host: a 9000-byte
/// jumbo MTU plus headers, rounded up. Larger frames to a cold host are dropped and counted.
pub const MAX_FRAME_LEN: usize = 9216;

/// Size of the ring buffer that carries held frames to the agent (a power of two of pages).
pub const HELD_RING_BYTES: u32 = 4 << 20;

/// Maximum number of imaginary hosts the datapath can track.
pub const MAX_HOSTS: u32 = 65_536;

/// Entries of the `IDLE_IGNORE` trie: (host, peer prefix) pairs over all hosts together.
pub const MAX_IDLE_IGNORE: u32 = 4096;

/// Entries of the `ALLOW` trie: (host, source prefix) pairs over all restricted hosts together.
pub const MAX_ALLOW: u32 = MAX_HOSTS;

/// Maximum number of interfaces the datapath can be attached to.
pub const MAX_INTERFACES: u32 = 256;

/// The kernel contract's names, declared once: every map the eBPF object defines (its `#[map]`
/// static carries exactly this name) with its key and value types, and every program the agent
/// loads (the eBPF entry point's function name). The agent looks them up by these constants only,
/// and its tests check that each one resolves in the embedded object.
pub mod maps {
    /// `HashMap<u32, HostEntry>`: imaginary hosts by address (network byte order); written by
    /// the agent, sized for the configuration (at most `MAX_HOSTS`).
    pub const HOSTS: &str = "HOSTS";
    /// `HashMap<u32, InterfaceEntry>`: the interfaces the datapath runs on, by ifindex.
    pub const INTERFACES: &str = "INTERFACES";
    /// `RingBuf` of `HeldFrameHeader` + frame bytes: held frames on their way to the agent.
    pub const HELD_FRAMES: &str = "HELD_FRAMES";
    /// `PerCpuArray<HeldFrameRecord>` (one entry): eBPF-only scratch space for assembling a
    /// `HELD_FRAMES` record; the agent never touches it.
    pub const HOLD_SCRATCH: &str = "HOLD_SCRATCH";
    /// `PerCpuArray<HostActivity>`: per-host activity, indexed by `HostEntry::host_id` (an
    /// array: the warm path finds a host's counters without hashing), sized like `HOSTS`.
    pub const ACTIVITY: &str = "ACTIVITY";
    /// `LpmTrie<IgnoreKey, u8>`: peers (per host, by prefix) whose traffic does not keep a host
    /// awake.
    pub const IDLE_IGNORE: &str = "IDLE_IGNORE";
    /// `HashMap<u32, u32>`: ports (key) that wakes wait for a listening socket on, with how many
    /// wakes wait (value); written by the agent.
    pub const WAITING_PORTS: &str = "WAITING_PORTS";
    /// `RingBuf` of `SockEvent`s.
    pub const SOCK_EVENTS: &str = "SOCK_EVENTS";
    /// `PerCpuArray<u64>` of packet counters, indexed by `stat::*`.
    pub const STATS: &str = "STATS";
    /// `LpmTrie<AllowKey, u8>`: the sources (per host, by prefix) that may reach a host with
    /// `HOST_FLAG_RESTRICTED` (`allow_from`); written by the agent.
    pub const ALLOW: &str = "ALLOW";
    /// `HashMap<u32, HostLink>`: who may speak on a host's own link (the host side of its
    /// container's veth), by that link's ifindex; written by the agent when it attaches the
    /// link's programs.
    pub const HOST_LINKS: &str = "HOST_LINKS";
    /// `Array<HostSlot>` of `HOST_SLOTS_LEN`: a direct-mapped copy of `HOSTS` (slot
    /// `host_slot(addr)`), so that the programs find a host with an array lookup; written by the
    /// agent together with `HOSTS`.
    pub const HOST_SLOTS: &str = "HOST_SLOTS";
    /// `Array<LinkSlot>` of `LINK_SLOTS_LEN`: a direct-mapped copy of `HOST_LINKS` (slot
    /// `link_slot(ifindex)`) that also names each link's host, so that `imag_from_host` finds a
    /// link's owner and the counters of what it sends with one array lookup; written by the
    /// agent together with `HOST_LINKS` and `HOSTS`. (`LINK_SLOTS` before a slot named its host:
    /// a datapath pinned by such an agent is outdated and must be detached.)
    pub const LINK_OWNERS: &str = "LINK_OWNERS";

    /// Every map above.
    pub const ALL: [&str; 13] = [
        HOSTS,
        INTERFACES,
        HELD_FRAMES,
        HOLD_SCRATCH,
        ACTIVITY,
        IDLE_IGNORE,
        WAITING_PORTS,
        SOCK_EVENTS,
        STATS,
        ALLOW,
        HOST_LINKS,
        HOST_SLOTS,
        LINK_OWNERS,
    ];
}

/// Read-only globals of the eBPF object that the agent sets when it loads it.
pub mod globals {
    /// `u32`: the imaginary subnet's address, network byte order (as in a packet).
    pub const SUBNET_ADDR: &str = "SUBNET_ADDR";
    /// `u32`: the imaginary subnet's mask, network byte order; 0 (the default) matches all.
    pub const SUBNET_MASK: &str = "SUBNET_MASK";
}

/// The programs of the eBPF object, by name (see [`maps`]).
pub mod programs {
    /// XDP: holds packets for hosts that are not warm, answers ARP and pings for them.
    pub const HOLD: &str = "imag_hold";
    /// TC ingress classifier: `HOLD` for virtual interfaces.
    pub const HOLD_TC: &str = "imag_hold_tc";
    /// XDP, never attached: returns `XDP_PASS`, run in live-frames mode to re-deliver frames.
    pub const DELIVER: &str = "imag_deliver";
    /// TC egress on a host's own link (towards its container).
    pub const TO_HOST: &str = "imag_to_host";
    /// TC ingress on a host's own link (from its container).
    pub const FROM_HOST: &str = "imag_from_host";
    /// Tracepoint `sock/inet_sock_set_state`: counts TCP connections, reports LISTEN.
    pub const TCP_STATE: &str = "imag_tcp_state";

    /// Every program above.
    pub const ALL: [&str; 6] = [HOLD, HOLD_TC, DELIVER, TO_HOST, FROM_HOST, TCP_STATE];
}

/// What the datapath does with packets for a host: hold them for the agent.
pub const HOST_MODE_HOLD: u8 = 1;
/// What the datapath does with packets for a host: let them through the kernel untouched.
pub const HOST_MODE_PASS: u8 = 2;
/// What the datapath does with packets for a host another node serves (scale-out): let them through
/// the kernel, which routes them to that node; on the bridge, answer ARP for it with the bridge's MAC
/// (as for a host that is not warm), so that local containers send it to be routed.
pub const HOST_MODE_FORWARD: u8 = 3;
/// What the datapath does with packets for a host that is about to sleep: hold new ones where
/// they enter (as `HOST_MODE_HOLD`), but let those already past that point reach the container
/// and count as its traffic (as `HOST_MODE_PASS`, on the host's own link), so that the agent's
/// second look before the sleep sees them and calls the sleep off. A datapath older than this
/// mode treats it as hold everywhere.
pub const HOST_MODE_DRAIN: u8 = 4;

/// Host flag: answer ARP requests for this host's address on attach interfaces, warm or not, with
/// the interface's own MAC (the bridge answers for non-warm hosts anyway; warm hosts answer for
/// themselves there).
pub const HOST_FLAG_PROXY_ARP: u8 = 1 << 0;
/// Host flag: answer ICMP echo requests for this host from the datapath while it is not warm.
pub const HOST_FLAG_ANSWER_PING: u8 = 1 << 1;
/// Host flag: the host has idle-ignore prefixes (so the datapath looks peers up in
/// `IDLE_IGNORE`; without the flag it saves the trie lookup on every packet).
pub const HOST_FLAG_IGNORES_PEERS: u8 = 1 << 2;
/// Host flag: only sources in the host's `ALLOW` prefixes may reach it (`allow_from`); others
/// are dropped (`stat::DROPPED_DENIED`). Without the flag the datapath skips the trie lookup.
pub const HOST_FLAG_RESTRICTED: u8 = 1 << 3;

/// Value of the `HOSTS` map, keyed by the host's address.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[allow(
    clippy::pub_underscore_fields,
    reason = "explicit padding, public so that both sides can build the value; never read"
)]
pub struct HostEntry {
    /// `HOST_MODE_*`.
    pub mode: u8,
    /// `HOST_FLAG_*` bits.
    pub flags: u8,
    pub _reserved: [u8; 2],
    /// The agent's index for the host; echoed in held frames so the agent needs no second lookup.
    pub host_id: u32,
}

/// What each program makes of a host's mode (`HOST_MODE_*`), in one place.
impl HostEntry {
    /// Where packets enter (the holding programs): passed, to the container here (warm) or by
    /// the kernel to the node that serves it (forward); otherwise held.
    #[inline]
    pub fn passes_where_packets_enter(&self) -> bool {
        self.mode == HOST_MODE_PASS || self.mode == HOST_MODE_FORWARD
    }

    /// At its own link (`imag_to_host`): its IPv4 packets reach the container and count as its
    /// traffic (warm, or draining: what arrives there was past the hold point).
    #[inline]
    pub fn reaches_its_container(&self) -> bool {
        self.mode == HOST_MODE_PASS || self.mode == HOST_MODE_DRAIN
    }

    /// A warm neighbour's packets to it are held where they are sent (`imag_from_host`).
    #[inline]
    pub fn holds_neighbours_packets(&self) -> bool {
        self.mode == HOST_MODE_HOLD || self.mode == HOST_MODE_DRAIN
    }

    /// Only the datapath answers ARP for it (anything but warm).
    #[inline]
    pub fn answered_by_datapath(&self) -> bool {
        self.mode != HOST_MODE_PASS
    }
}

/// Slots in `HOST_SLOTS` (a power of two).
pub const HOST_SLOTS_LEN: u32 = 4096;

/// A host's slot in `HOST_SLOTS`: its address (network byte order, as a map key) modulo
/// `HOST_SLOTS_LEN`. Hosts lie in one subnet, so up to `HOST_SLOTS_LEN` consecutive addresses
/// get a slot each.
#[must_use]
pub const fn host_slot(addr_key: u32) -> u32 {
    u32::from_be(addr_key) & (HOST_SLOTS_LEN - 1)
}

/// Value of the `HOST_SLOTS` array: a copy of the `HOSTS` entry of the host at `addr`, which the
/// agent writes whenever it writes that entry. A slot is taken by the first host that maps to it
/// and keeps it; the others (and any host when `mode` is 0: an empty slot) are looked up in
/// `HOSTS`. Eight bytes, aligned: the programs read it with one load (the agent's
/// `set_host_slot` orders its writes so that a half-updated slot is never taken for another
/// host's).
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HostSlot {
    /// The host's address (network byte order): the slot is this host's only if it matches.
    pub addr: u32,
    /// `HostEntry::mode`; 0 for an empty slot.
    pub mode: u8,
    /// `HostEntry::flags`.
    pub flags: u8,
    /// `HostEntry::host_id` (hosts with an id above `u16::MAX` get no slot).
    pub host_id: u16,
}

/// Interface flag: this interface is the imag bridge (answers ARP for every non-warm host).
pub const IFACE_FLAG_BRIDGE: u32 = 1 << 0;

/// Value of the `INTERFACES` map, keyed by ifindex: what the datapath must know about the
/// interface it runs on to answer on it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[allow(
    clippy::pub_underscore_fields,
    reason = "explicit padding, public so that both sides can build the value; never read"
)]
pub struct InterfaceEntry {
    /// The interface's own MAC address: the hardware address ARP answers give out.
    pub mac: [u8; 6],
    pub _reserved: [u8; 2],
    /// `IFACE_FLAG_*` bits.
    pub flags: u32,
}

/// Value of the `HOST_LINKS` map, keyed by the ifindex of the host side of a host's container
/// veth: the only identity the container may use on that link (`imag_from_host` drops anything
/// else, `stat::DROPPED_SPOOFED`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[allow(
    clippy::pub_underscore_fields,
    reason = "explicit padding, public so that both sides can build the value; never read"
)]
pub struct HostLink {
    /// The host's address (network byte order): the only IPv4 source and ARP sender allowed.
    pub addr: u32,
    /// The container's MAC address: the only Ethernet source and ARP sender hardware address
    /// allowed; all zero when unknown (then not checked).
    pub mac: [u8; 6],
    pub _reserved: [u8; 2],
}

/// Slots in `LINK_OWNERS` (a power of two).
pub const LINK_SLOTS_LEN: u32 = 4096;

/// A link's slot in `LINK_OWNERS`: its ifindex modulo `LINK_SLOTS_LEN`. A network namespace
/// numbers its interfaces upwards, so links collide only `LINK_SLOTS_LEN` interfaces apart.
#[must_use]
pub const fn link_slot(ifindex: u32) -> u32 {
    ifindex & (LINK_SLOTS_LEN - 1)
}

/// `LinkSlot::tag` of link `ifindex`: the bits of its ifindex above its slot's index. `None` for
/// an ifindex too large for the tag (from 2^28 on), which gets no slot.
#[must_use]
pub const fn link_slot_tag(ifindex: u32) -> Option<u16> {
    let high = ifindex >> LINK_SLOTS_LEN.trailing_zeros();
    if high > u16::MAX as u32 {
        return None;
    }
    #[allow(
        clippy::cast_possible_truncation,
        reason = "at most u16::MAX: checked above"
    )]
    Some(high as u16)
}

/// `LinkSlot::state` of a slot that is its link's: who may speak on the link.
pub const LINK_SLOT_OWNER: u8 = 1;
/// `LinkSlot::state` of a slot that is its link's and names the host at its address too
/// (`host_id`, `host_flags`), so that a frame the slot lets pass is counted without looking its
/// sender up.
pub const LINK_SLOT_OWNER_HOST: u8 = 2;

/// Value of the `LINK_OWNERS` array: a copy of the `HOST_LINKS` entry of the link it is tagged
/// with, and of the `HOSTS` entry's id and flags of the host at that address, which the agent
/// writes whenever it writes either (after them) and empties before it removes the link's entry.
/// A slot is taken by the first link that maps to it and keeps it; the others are looked up in
/// `HOST_LINKS`. Two aligned eight-byte words: the programs read `mac`, `state` and
/// `host_flags` with one load, then `addr`, `host_id` and `tag` with another, and use a slot
/// only to let a frame pass (anything else is decided by `HOST_LINKS`); the agent's
/// `set_link_slot` orders its writes so that what a program reads is either unusable or this
/// link's (but for a refill between a program's two loads, which no program meets: see
/// docs/ARCHITECTURE.md, *Link owners by array*).
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LinkSlot {
    /// `HostLink::addr`.
    pub addr: u32,
    /// `HostEntry::host_id` of the host at `addr` (with `LINK_SLOT_OWNER_HOST`; hosts with an
    /// id above `u16::MAX` are named by `LINK_SLOT_OWNER` slots only).
    pub host_id: u16,
    /// `link_slot_tag` of the link's ifindex: the slot is this link's only if it matches.
    pub tag: u16,
    /// `HostLink::mac` (all zero when unknown).
    pub mac: [u8; 6],
    /// `LINK_SLOT_OWNER` or `LINK_SLOT_OWNER_HOST`; 0 for a slot that is empty or being
    /// written.
    pub state: u8,
    /// `HostEntry::flags` of the host at `addr` (with `LINK_SLOT_OWNER_HOST`).
    pub host_flags: u8,
}

// The programs read a slot as two eight-byte words.
const _: () = assert!(core::mem::size_of::<LinkSlot>() == 16);

/// Header of a ring buffer record; the held frame's bytes follow it directly.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HeldFrameHeader {
    /// `bpf_ktime_get_ns()` when the frame was held (`CLOCK_MONOTONIC`).
    pub held_at_ns: u64,
    /// The interface the frame arrived on; re-delivery injects it there again.
    pub ifindex: u32,
    /// Number of frame bytes following this header.
    pub frame_len: u32,
    /// Destination address (network byte order), the key into `HOSTS`.
    pub host_addr: u32,
    /// `HostEntry::host_id` of the destination.
    pub host_id: u32,
}

pub const HELD_FRAME_HEADER_LEN: usize = core::mem::size_of::<HeldFrameHeader>();

/// Per-CPU scratch space in which the datapath assembles a ring buffer record before copying it
/// out: the BPF stack (512 bytes) cannot hold a frame.
#[repr(C)]
pub struct HeldFrameRecord {
    pub header: HeldFrameHeader,
    pub frame: [u8; MAX_FRAME_LEN],
}

/// Value of the per-CPU `ACTIVITY` array, indexed by host id: what the datapath saw of a
/// host's own traffic (on its container's link) and of its TCP connections. The agent sums the
/// per-CPU copies (and takes the latest `last_packet_ns`) to judge idleness.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[allow(
    clippy::pub_underscore_fields,
    reason = "explicit padding, public so that both sides can build the value; never read"
)]
pub struct HostActivity {
    /// `bpf_ktime_get_coarse_ns()` (the time of the last tick, up to one tick behind
    /// `CLOCK_MONOTONIC`) of the latest packet to or from the host that counts for idleness
    /// (peers in the host's idle-ignore prefixes do not).
    pub last_packet_ns: u64,
    /// Packets and bytes delivered to the host's container.
    pub packets_in: u64,
    pub bytes_in: u64,
    /// Packets and bytes sent by the host's container.
    pub packets_out: u64,
    pub bytes_out: u64,
    /// TCP connections of the host that reached ESTABLISHED, and those that left it; open
    /// connections are the difference.
    pub tcp_opened: u64,
    pub tcp_closed: u64,
    /// Packets exchanged with ignored peers (health checkers), which do not keep a host awake.
    pub ignored_packets: u64,
    /// The address (network byte order) of the host the entry was set up for: written by the
    /// agent only, so that counts left by an earlier agent under the same host id are kept only
    /// for the same host.
    pub host_addr: u32,
    pub _reserved: u32,
}

/// Key data of the `IDLE_IGNORE` LPM trie: which peers do not count as activity for a host.
/// The prefix length of a key is 32 (the host id always matches in full) plus the peer prefix's.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IgnoreKey {
    /// `HostEntry::host_id`, big-endian so that the trie matches it as leading bits.
    pub host_id_be: [u8; 4],
    /// Peer address, network byte order.
    pub peer: [u8; 4],
}

/// Key data of the `ALLOW` LPM trie: which sources may reach a restricted host. Laid out like
/// [`IgnoreKey`]: the prefix length is 32 (the host id in full) plus the source prefix's.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AllowKey {
    /// `HostEntry::host_id`, big-endian so that the trie matches it as leading bits.
    pub host_id_be: [u8; 4],
    /// Source address, network byte order.
    pub source: [u8; 4],
}

/// A socket event for the agent, sent through the `SOCK_EVENTS` ring buffer.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SockEvent {
    /// `bpf_ktime_get_ns()` of the event.
    pub at_ns: u64,
    /// `SOCK_EVENT_*`.
    pub kind: u32,
    /// The local port of the socket.
    pub port: u32,
}

/// A TCP socket started listening on a port that a wake is waiting for (`WAITING_PORTS`).
pub const SOCK_EVENT_LISTEN: u32 = 1;

/// Size of the ring buffer for socket events.
pub const SOCK_EVENTS_BYTES: u32 = 64 << 10;

/// Indexes into the per-CPU `STATS` array. Each counts packets.
pub mod stat {
    /// Passed: destination is not an imaginary address (or not IPv4).
    pub const PASSED_OTHER: u32 = 0;
    /// Passed: destination is a warm imaginary host (here, or served by another node).
    pub const PASSED_WARM: u32 = 1;
    /// Passed: addressed to an imaginary host but could not be parsed (options, fragment,
    /// truncated).
    pub const PASSED_UNPARSED: u32 = 2;
    /// Held: copied to the ring buffer and dropped from the fast path.
    pub const HELD: u32 = 3;
    /// Dropped: a frame for a cold host that the ring buffer had no room for.
    pub const DROPPED_RING_FULL: u32 = 4;
    /// Dropped: a frame for a cold host larger than `MAX_FRAME_LEN`.
    pub const DROPPED_OVERSIZE: u32 = 5;
    /// Answered: ARP requests for non-warm imaginary hosts.
    pub const ARP_ANSWERED: u32 = 6;
    /// Answered: ICMP echo requests for non-warm imaginary hosts.
    pub const PING_ANSWERED: u32 = 7;
    /// Held at a host's own link: a neighbour on the bridge sent it straight to the container's
    /// MAC address while the host was not warm.
    pub const HELD_AT_HOST_LINK: u32 = 8;
    /// Dropped at a host's own link while it was not warm: ARP (only the datapath answers for
    /// a sleeping host) and routed packets that were already past the hold point.
    pub const DROPPED_AT_HOST_LINK: u32 = 9;
    /// Dropped: a frame for a cold host that could not be copied into the ring buffer record
    /// (the program type's copy helper failed), so it was neither held nor passed.
    pub const DROPPED_COPY_FAILED: u32 = 10;
    /// Dropped: a packet for a restricted host (`allow_from`) from a source it does not allow;
    /// it woke nothing.
    pub const DROPPED_DENIED: u32 = 11;
    /// Dropped at a host's own link: its container sent a frame as someone else (an IPv4 source
    /// other than its address, an ARP sender other than its address or MAC, an Ethernet source
    /// other than its MAC).
    pub const DROPPED_SPOOFED: u32 = 12;
    /// Dropped: a packet for a host that is not warm that does not wake it (ICMP other than an
    /// echo request, a TCP reset); it was not held.
    pub const DROPPED_NOT_WAKING: u32 = 13;
    /// Number of counters.
    pub const COUNT: u32 = 14;

    /// Prometheus-friendly names, indexed like the counters.
    pub const NAMES: [&str; COUNT as usize] = [
        "passed_other",
        "passed_warm",
        "passed_unparsed",
        "held",
        "dropped_ring_full",
        "dropped_oversize",
        "arp_answered",
        "ping_answered",
        "held_at_host_link",
        "dropped_at_host_link",
        "dropped_copy_failed",
        "dropped_denied",
        "dropped_spoofed",
        "dropped_not_waking",
    ];
}

#[cfg(test)]
mod tests {
    use super::{LINK_SLOTS_LEN, link_slot, link_slot_tag, stat};

    #[test]
    fn a_link_slot_and_its_tag_make_up_the_whole_ifindex() {
        for ifindex in [1, 4095, 4096, 4097, 123_456, (1 << 28) - 1] {
            let tag = link_slot_tag(ifindex).expect("a tag below 2^28");
            assert_eq!(
                u32::from(tag) * LINK_SLOTS_LEN + link_slot(ifindex),
                ifindex
            );
        }
        assert_eq!(link_slot_tag(1 << 28), None, "no slot from 2^28 on");
        assert_eq!(link_slot_tag(u32::MAX), None);
    }

    #[test]
    fn counter_names_line_up_with_their_indexes() {
        assert_eq!(stat::NAMES.len(), stat::COUNT as usize);
        assert_eq!(
            stat::NAMES[stat::PASSED_UNPARSED as usize],
            "passed_unparsed"
        );
        assert_eq!(
            stat::NAMES[stat::DROPPED_RING_FULL as usize],
            "dropped_ring_full"
        );
        assert_eq!(
            stat::NAMES[stat::DROPPED_COPY_FAILED as usize],
            "dropped_copy_failed"
        );
        assert_eq!(stat::NAMES[stat::DROPPED_DENIED as usize], "dropped_denied");
        assert_eq!(
            stat::NAMES[stat::DROPPED_SPOOFED as usize],
            "dropped_spoofed"
        );
        assert_eq!(
            stat::NAMES[stat::DROPPED_NOT_WAKING as usize],
            "dropped_not_waking"
        );
    }
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: plain `#[repr(C)]` data with no padding and no invalid bit patterns.
    unsafe impl aya::Pod for super::HostEntry {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::InterfaceEntry {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::HeldFrameHeader {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::HostActivity {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::IgnoreKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::AllowKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::SockEvent {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::HostLink {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::HostSlot {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::LinkSlot {}
}
