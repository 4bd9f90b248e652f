//! The holding programs' logic, the same for XDP and TC: ARP goes to `arp`, echo requests to
//! `ping` (when the host wants them answered), and every other IPv4 packet to an imaginary host
//! that is not warm is held if it wakes the host (`wakes`): it goes to the agent, not the stack.
//! Before any of that, a restricted host's packets from sources it does not allow are dropped
//! (`allow`). VLAN-tagged frames are never held or answered: they pass untouched (see
//! `Frame::vlan_tagged`).

use aya_ebpf::{check_bounds_signed, helpers::generated::bpf_ktime_get_ns};
use aya_log_ebpf::debug;
use imag_common::{
    HELD_FRAME_HEADER_LEN, HOST_FLAG_ANSWER_PING, HeldFrameRecord, MAX_FRAME_LEN, stat,
};
use network_types::{
    eth::{EthHdr, EtherType},
    ip::Ipv4Hdr,
};

use super::{
    HELD_FRAMES, HOLD_SCRATCH,
    allow::{self, IPPROTO_TCP, TCP_FLAGS_OFFSET},
    arp, count, host_entry, in_subnet,
    packet::{Frame, Verdict, ptr_at},
    ping,
    wakes::{IPPROTO_ICMP, wakes},
};

const ETHERTYPE_IPV4: u16 = EtherType::Ipv4 as u16;
const ETHERTYPE_ARP: u16 = EtherType::Arp as u16;

pub fn try_hold<F: Frame>(ctx: &F) -> Verdict {
    let Some(eth) = ptr_at::<EthHdr, F>(ctx, 0) else {
        count(stat::PASSED_OTHER);
        return Verdict::Pass;
    };
    // SAFETY: ptr_at checked the bounds.
    match unsafe { (*eth).ether_type } {
        ETHERTYPE_IPV4 => {}
        ETHERTYPE_ARP => return arp::try_answer(ctx, eth),
        _ => {
            count(stat::PASSED_OTHER);
            return Verdict::Pass;
        }
    }
    let Some(ip) = ptr_at::<Ipv4Hdr, F>(ctx, EthHdr::LEN) else {
        count(stat::PASSED_OTHER);
        return Verdict::Pass;
    };
    // SAFETY: ptr_at checked the bounds.
    let (dst, source, plain, proto) = unsafe {
        (
            u32::from_ne_bytes((*ip).dst_addr),
            (*ip).src_addr,
            is_plain_ipv4(&*ip),
            (*ip).proto,
        )
    };
    // Outside the subnet (answers to clients, on the bridge): no host there, no lookup.
    let Some(host) = in_subnet(dst).then(|| host_entry(dst)).flatten() else {
        count(stat::PASSED_OTHER);
        return Verdict::Pass;
    };
    // Warm here, or served by another node (the kernel routes it there).
    let warm = host.passes_where_packets_enter();
    if allow::denied(&host, source, || {
        !warm || proto != IPPROTO_TCP || !plain || tcp_opens(ctx)
    }) {
        return Verdict::Drop;
    }
    if warm {
        count(stat::PASSED_WARM);
        return Verdict::Pass;
    }
    // Only for hosts that are not warm (a warm host's packets never get here): a frame whose
    // VLAN tag the skb carries aside (TC) would be held and re-delivered untagged.
    if !plain || ctx.vlan_tagged() {
        count(stat::PASSED_UNPARSED);
        return Verdict::Pass;
    }
    if proto == IPPROTO_ICMP
        && host.flags & HOST_FLAG_ANSWER_PING != 0
        && ping::try_answer(ctx, eth, ip)
    {
        return Verdict::Bounce;
    }
    let l4 = EthHdr::LEN + Ipv4Hdr::LEN;
    // SAFETY: ptr_at checked the bounds.
    if !wakes(proto, |at| {
        ptr_at::<u8, F>(ctx, l4 + at).map(|b| unsafe { *b })
    }) {
        count(stat::DROPPED_NOT_WAKING);
        return Verdict::Drop;
    }
    hold(ctx, dst, host.host_id)
}

/// A version-4 header without options that is not a fragment: the only packets the agent
/// re-delivers and answers for.
#[inline(always)]
pub fn is_plain_ipv4(ip: &Ipv4Hdr) -> bool {
    const MORE_FRAGMENTS: u8 = 0x20;
    ip.vihl == 0x45 && ip.frags[0] & MORE_FRAGMENTS == 0 && ip.frag_offset() == 0
}

/// Whether a plain IPv4 packet's TCP segment opens a connection (unreadable: assume it does).
#[inline(always)]
fn tcp_opens<F: Frame>(ctx: &F) -> bool {
    match ptr_at::<u8, F>(ctx, EthHdr::LEN + Ipv4Hdr::LEN + TCP_FLAGS_OFFSET) {
        // SAFETY: ptr_at checked the bounds.
        Some(flags) => allow::opens_connection(unsafe { *flags }),
        None => true,
    }
}

fn hold<F: Frame>(ctx: &F, host_addr: u32, host_id: u32) -> Verdict {
    let emitted = emit_held(
        ctx.len(),
        ctx.ingress_ifindex(),
        host_addr,
        host_id,
        |dst, len| {
            // SAFETY: dst holds at least len bytes (emit_held checked it).
            unsafe { ctx.copy_out(dst, len) }
        },
    );
    match emitted {
        Ok(()) => {
            count(stat::HELD);
            // Cold path only; the agent turns eBPF logging off unless it runs at debug level.
            debug!(
                ctx,
                "held {} bytes for {:i}",
                ctx.len() as u32,
                u32::from_be(host_addr)
            );
        }
        Err(counter) => count(counter),
    }
    Verdict::Drop
}

/// Copies a frame of `frame_len` bytes (through `load`, the program type's copy helper) into the
/// per-CPU scratch record and out through the `HELD_FRAMES` ring buffer. On failure, returns the
/// counter that says why.
#[inline(always)]
pub fn emit_held(
    frame_len: usize,
    ifindex: u32,
    host_addr: u32,
    host_id: u32,
    load: impl FnOnce(*mut core::ffi::c_void, u32) -> i64,
) -> Result<(), u32> {
    // Index 0 of a one-entry array always exists; were it missing, nothing could be copied.
    let record = HOLD_SCRATCH
        .get_ptr_mut(0)
        .ok_or(stat::DROPPED_COPY_FAILED)?;
    // SAFETY: the per-CPU scratch slot is ours for the duration of this program run.
    let record = unsafe { &mut *record };
    // The verifier needs the copy length proven to lie within [1, MAX_FRAME_LEN] with a signed
    // comparison it can follow; a plain `min` gets rewritten by LLVM into a form it rejects.
    let len = frame_len as i64;
    if !check_bounds_signed(len, 1, MAX_FRAME_LEN as i64) {
        return Err(stat::DROPPED_OVERSIZE);
    }
    // The frame is dropped either way (the caller's verdict is Drop): count it as such.
    if load(record.frame.as_mut_ptr().cast(), len as u32) != 0 {
        return Err(stat::DROPPED_COPY_FAILED);
    }
    record.header.held_at_ns = unsafe { bpf_ktime_get_ns() };
    record.header.ifindex = ifindex;
    record.header.frame_len = len as u32;
    record.header.host_addr = host_addr;
    record.header.host_id = host_id;
    let record_len = HELD_FRAME_HEADER_LEN + len as usize;
    // SAFETY: record_len is at most the size of the record.
    let bytes = unsafe {
        core::slice::from_raw_parts((record as *const HeldFrameRecord).cast::<u8>(), record_len)
    };
    HELD_FRAMES
        .output::<[u8]>(bytes, 0)
        .map_err(|_| stat::DROPPED_RING_FULL)
}
