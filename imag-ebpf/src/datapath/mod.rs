//! The programs and the maps they share with the agent.

mod arp;
mod hold;
mod packet;
mod ping;

use aya_ebpf::{
    bindings::xdp_action,
    macros::{map, xdp},
    maps::{HashMap, PerCpuArray, RingBuf},
    programs::XdpContext,
};
use imag_common::{
    HELD_RING_BYTES, HeldFrameRecord, HostEntry, InterfaceEntry, MAX_HOSTS, MAX_INTERFACES, stat,
};

/// Imaginary hosts by address (network byte order); written by the agent.
#[map(name = "HOSTS")]
static HOSTS: HashMap<u32, HostEntry> = HashMap::with_max_entries(MAX_HOSTS, 0);

/// What the datapath knows about the interfaces it runs on, by ifindex; written by the agent.
#[map(name = "INTERFACES")]
static INTERFACES: HashMap<u32, InterfaceEntry> = HashMap::with_max_entries(MAX_INTERFACES, 0);

/// Held frames on their way to the agent.
#[map(name = "HELD_FRAMES")]
static HELD_FRAMES: RingBuf = RingBuf::with_byte_size(HELD_RING_BYTES, 0);

/// Scratch space for assembling one ring buffer record (too big for the BPF stack).
#[map(name = "HOLD_SCRATCH")]
static HOLD_SCRATCH: PerCpuArray<HeldFrameRecord> = PerCpuArray::with_max_entries(1, 0);

/// Packet counters, indexed by `imag_common::stat::*`.
#[map(name = "STATS")]
static STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(stat::COUNT, 0);

#[inline(always)]
fn count(counter: u32) {
    if let Some(value) = STATS.get_ptr_mut(counter) {
        // SAFETY: per-CPU slot, no concurrent writer on this CPU.
        unsafe { *value += 1 };
    }
}

#[xdp]
pub fn imag_hold(ctx: XdpContext) -> u32 {
    hold::try_hold(&ctx)
}

#[xdp]
pub fn imag_deliver(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}
