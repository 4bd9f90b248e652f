//! Who may reach a restricted host (`allow_from`): one lookup in the `ALLOW` trie, shared by the
//! holding programs (`hold.rs`: cold and warm hosts, on attach interfaces and the bridge) and
//! `imag_to_host` (`host_link.rs`: the last hop into a warm host's container, which traffic
//! between hosts on the bridge reaches without passing the bridge device's own hook).
//!
//! For a host that is not warm every packet counts: any of them would wake it. For a warm host
//! only packets that open something are checked (a TCP SYN without ACK, and everything that is
//! not TCP): the replies to the host's own connections with peers outside its list must still
//! come back, and a TCP segment that opens nothing only earns its sender a reset.

use aya_ebpf::maps::lpm_trie::Key;
use imag_common::{AllowKey, HOST_FLAG_RESTRICTED, HostEntry, stat};

use super::{ALLOW, count};

pub const IPPROTO_TCP: u8 = 6;
/// Offset of the flags byte in a TCP header.
pub const TCP_FLAGS_OFFSET: usize = 13;
const TCP_SYN: u8 = 0x02;
const TCP_ACK: u8 = 0x10;

/// Whether a TCP segment with these flags opens a connection.
#[inline(always)]
pub fn opens_connection(tcp_flags: u8) -> bool {
    tcp_flags & (TCP_SYN | TCP_ACK) == TCP_SYN
}

/// Whether `host` refuses a packet from `source`; counts the refusal. `checked` says whether the
/// packet is one the rule applies to (see the module's note); it is only asked for restricted
/// hosts, so that unrestricted ones cost one bit test.
#[inline(always)]
pub fn denied(host: &HostEntry, source: [u8; 4], checked: impl FnOnce() -> bool) -> bool {
    if host.flags & HOST_FLAG_RESTRICTED == 0 || !checked() {
        return false;
    }
    let key = Key::new(
        64,
        AllowKey {
            host_id_be: host.host_id.to_be_bytes(),
            source,
        },
    );
    if ALLOW.get(&key).is_some() {
        return false;
    }
    count(stat::DROPPED_DENIED);
    true
}
