//! Which packets for a host that is not warm wake it: held and handed to the agent. Decided only
//! once a packet is known to be for such a host (never on a warm host's path), in both places
//! that hold (`hold.rs` on attach interfaces and the bridge, `host_link.rs` on the host's own
//! link).
//!
//! - TCP wakes, except a segment with RST (a reset closes something the host no longer has;
//!   waking it would only earn the sender another reset).
//! - ICMP wakes only as an echo request (and not when the host has `answer_ping`: the datapath
//!   answers it instead, see `ping.rs`). Every other ICMP message (timestamp, information,
//!   address mask requests, and errors about connections the sleeping host no longer has) is
//!   dropped: nothing a client means to reach a service with.
//! - UDP and every other IP protocol wake.
//!
//! Dropped packets are counted in `stat::DROPPED_NOT_WAKING`.

use super::allow::{IPPROTO_TCP, TCP_FLAGS_OFFSET};

pub const IPPROTO_ICMP: u8 = 1;
const ICMP_ECHO_REQUEST: u8 = 8;
const TCP_RST: u8 = 0x04;

/// Whether a packet of protocol `proto` wakes its host; `l4_byte(offset)` reads the transport
/// header (None: not in the frame). An unreadable TCP header wakes (as before this rule: the
/// agent decides), an unreadable ICMP header does not.
#[inline(always)]
pub fn wakes(proto: u8, l4_byte: impl Fn(usize) -> Option<u8>) -> bool {
    match proto {
        IPPROTO_ICMP => l4_byte(0) == Some(ICMP_ECHO_REQUEST),
        IPPROTO_TCP => l4_byte(TCP_FLAGS_OFFSET).is_none_or(|flags| flags & TCP_RST == 0),
        _ => true,
    }
}
