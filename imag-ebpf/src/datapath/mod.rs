//! The programs and the maps they share with the agent.
//!
//! Names are the contract with the agent, declared once in `imag_common::maps` and
//! `imag_common::programs`: a `#[map]` static's identifier is its map name and an entry point's
//! function name is its program name, so renaming either here means renaming it there (the
//! agent's tests check that every declared name resolves in this object).

mod allow;
mod arp;
mod hold;
mod host_link;
mod packet;
mod ping;
mod sock_state;
mod spoof;
mod wakes;

use aya_ebpf::{
    bindings::{TC_ACT_OK, TC_ACT_SHOT, xdp_action},
    helpers::generated::bpf_redirect,
    macros::{classifier, map, tracepoint, xdp},
    maps::{Array, HashMap, LpmTrie, PerCpuArray, RingBuf},
    programs::{TcContext, TracePointContext, XdpContext},
};
use imag_common::{
    AllowKey, HELD_RING_BYTES, HOST_SLOTS_LEN, HeldFrameRecord, HostActivity, HostEntry, HostLink,
    HostSlot, IgnoreKey, InterfaceEntry, LINK_SLOTS_LEN, LinkSlot, MAX_ALLOW, MAX_HOSTS,
    MAX_IDLE_IGNORE, MAX_INTERFACES, SOCK_EVENTS_BYTES, host_slot, stat,
};

use self::packet::Verdict;

/// Imaginary hosts by address (network byte order); written by the agent.
#[map]
static HOSTS: HashMap<u32, HostEntry> = HashMap::with_max_entries(MAX_HOSTS, 0);

/// `HOSTS` again, direct-mapped by address (`imag_common::HostSlot`): most packets find their
/// host here with an array lookup (a few instructions, no hash); written by the agent.
#[map]
static HOST_SLOTS: Array<HostSlot> = Array::with_max_entries(HOST_SLOTS_LEN, 0);

/// The `HOSTS` entry of the host at `addr` (as it sits in the packet): from its slot in
/// `HOST_SLOTS` when it has one, else from `HOSTS` (a host whose slot another host took).
#[inline(always)]
fn host_entry(addr: u32) -> Option<HostEntry> {
    if let Some(slot) = HOST_SLOTS.get_ptr(host_slot(addr)) {
        // SAFETY: map values stay valid for the program's run; the value is eight bytes,
        // aligned, read with one load (how the agent orders its updates: `HostSlot`).
        let raw = unsafe { core::ptr::read_volatile(slot.cast::<u64>()) };
        // SAFETY: HostSlot is eight bytes of plain integers.
        let slot: HostSlot = unsafe { core::mem::transmute::<u64, HostSlot>(raw) };
        if slot.addr == addr && slot.mode != 0 {
            return Some(HostEntry {
                mode: slot.mode,
                flags: slot.flags,
                _reserved: [0; 2],
                host_id: u32::from(slot.host_id),
            });
        }
    }
    // SAFETY: map values stay valid for the program's run; a concurrent update by the agent
    // only changes which verdict this packet gets, never memory safety.
    HOSTS.get_ptr(addr).map(|host| unsafe { *host })
}

/// What the datapath knows about the interfaces it runs on, by ifindex; written by the agent.
#[map]
static INTERFACES: HashMap<u32, InterfaceEntry> = HashMap::with_max_entries(MAX_INTERFACES, 0);

/// Held frames on their way to the agent.
#[map]
static HELD_FRAMES: RingBuf = RingBuf::with_byte_size(HELD_RING_BYTES, 0);

/// Scratch space for assembling one ring buffer record (too big for the BPF stack).
#[map]
static HOLD_SCRATCH: PerCpuArray<HeldFrameRecord> = PerCpuArray::with_max_entries(1, 0);

/// Per-host activity (traffic on the host's own link, TCP connections), per CPU, indexed by
/// host id: an array, so that the warm path reaches a host's counters without a second hash
/// lookup (the host id comes with the `HOSTS` entry it has already looked up).
#[map]
static ACTIVITY: PerCpuArray<HostActivity> = PerCpuArray::with_max_entries(MAX_HOSTS, 0);

/// Peers (per host, by prefix) whose traffic does not keep a host awake.
#[map]
static IDLE_IGNORE: LpmTrie<IgnoreKey, u8> = LpmTrie::with_max_entries(MAX_IDLE_IGNORE, 1);

/// Sources (per host, by prefix) that may reach a restricted host (`allow_from`); written by the
/// agent. Sized for a few prefixes per host; entries take memory only when written.
#[map]
static ALLOW: LpmTrie<AllowKey, u8> = LpmTrie::with_max_entries(MAX_ALLOW, 1);

/// Who may speak on each host's own link (`spoof.rs`), by the ifindex of its host side; written
/// by the agent.
#[map]
static HOST_LINKS: HashMap<u32, HostLink> = HashMap::with_max_entries(MAX_HOSTS, 0);

/// `HOST_LINKS` again, direct-mapped by ifindex (`imag_common::LinkSlot`), naming each link's
/// host too: most frames find their link's owner, and the counters of what it sends, here with
/// one array lookup; written by the agent.
#[map]
static LINK_OWNERS: Array<LinkSlot> = Array::with_max_entries(LINK_SLOTS_LEN, 0);

/// Ports that wakes are waiting for a listening socket on; written by the agent.
#[map]
static WAITING_PORTS: HashMap<u32, u32> = HashMap::with_max_entries(1024, 0);

/// Socket events for the agent (`imag_common::SockEvent`).
#[map]
static SOCK_EVENTS: RingBuf = RingBuf::with_byte_size(SOCK_EVENTS_BYTES, 0);

/// Packet counters, indexed by `imag_common::stat::*`.
#[map]
static STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(stat::COUNT, 0);

/// The imaginary subnet, address and mask as they sit in a packet, set by the agent when it
/// loads the object (read-only data: the verifier sees constants). Every host lies inside it, so
/// a packet to any other address (most of them on the bridge: answers to clients) needs no
/// `HOSTS` lookup. The defaults (mask 0) let every address through to the lookup.
#[unsafe(no_mangle)]
static SUBNET_ADDR: u32 = 0;
#[unsafe(no_mangle)]
static SUBNET_MASK: u32 = 0;

/// Whether `addr` (as it sits in the packet) may be an imaginary host's.
#[inline(always)]
fn in_subnet(addr: u32) -> bool {
    // SAFETY: plain reads of read-only globals; volatile, so that the compiler does not fold
    // the defaults in (the agent sets them at load time).
    let (net, mask) = unsafe {
        (
            core::ptr::read_volatile(&raw const SUBNET_ADDR),
            core::ptr::read_volatile(&raw const SUBNET_MASK),
        )
    };
    addr & mask == net
}

#[inline(always)]
fn count(counter: u32) {
    if let Some(value) = STATS.get_ptr_mut(counter) {
        // SAFETY: per-CPU slot, no concurrent writer on this CPU.
        unsafe { *value += 1 };
    }
}

#[xdp]
pub fn imag_hold(ctx: XdpContext) -> u32 {
    match hold::try_hold(&ctx) {
        Verdict::Pass => xdp_action::XDP_PASS,
        Verdict::Drop => xdp_action::XDP_DROP,
        Verdict::Bounce => xdp_action::XDP_TX,
    }
}

/// `imag_hold` as a TC ingress classifier, for virtual interfaces: generic XDP there has to copy
/// every multi-segment skb into a linear buffer before the program runs (on a veth, every GSO
/// packet: a third of the throughput), while TC reads the headers where they are.
#[classifier]
pub fn imag_hold_tc(ctx: TcContext) -> i32 {
    // The headers the program reads (up to the ICMP header, or the TCP flags that `allow`
    // looks at) must be in the linear part.
    const HEADERS: usize = 14 + 20 + 20;
    let wanted = HEADERS.min(ctx.len() as usize);
    if ctx.data_end() - ctx.data() < wanted {
        let _ = ctx.pull_data(wanted as u32);
    }
    match hold::try_hold(&ctx) {
        Verdict::Pass => TC_ACT_OK,
        Verdict::Drop => TC_ACT_SHOT,
        Verdict::Bounce => {
            // Out of the interface it came in on, like XDP_TX.
            let ifindex = packet::Frame::ingress_ifindex(&ctx);
            // SAFETY: plain helper call.
            unsafe { bpf_redirect(ifindex, 0) as i32 }
        }
    }
}

#[xdp]
pub fn imag_deliver(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}

#[classifier]
pub fn imag_to_host(ctx: TcContext) -> i32 {
    host_link::to_host(&ctx)
}

#[classifier]
pub fn imag_from_host(ctx: TcContext) -> i32 {
    host_link::from_host(&ctx)
}

#[tracepoint]
pub fn imag_tcp_state(ctx: TracePointContext) -> u32 {
    sock_state::on_change(&ctx);
    0
}
