//! TCP state changes (tracepoint sock/inet_sock_set_state): connections of imaginary hosts
//! opening and closing (a quiet long-lived connection keeps its host awake), and sockets starting
//! to listen on a port a wake waits for (readiness by event instead of polling).
//!
//! The tracepoint's record layout is stable kernel ABI (offsets below, from its `format` file;
//! the agent checks them against the running kernel before attaching).

use aya_ebpf::{
    helpers::generated::bpf_ktime_get_ns, maps::lpm_trie::Key, programs::TracePointContext,
};
use imag_common::{HOST_FLAG_IGNORES_PEERS, HostActivity, IgnoreKey, SOCK_EVENT_LISTEN, SockEvent};

use super::{ACTIVITY, HOSTS, IDLE_IGNORE, SOCK_EVENTS, WAITING_PORTS};

pub const OFFSET_OLDSTATE: usize = 16;
pub const OFFSET_NEWSTATE: usize = 20;
pub const OFFSET_SPORT: usize = 24;
pub const OFFSET_PROTOCOL: usize = 30;
pub const OFFSET_SADDR: usize = 32;
pub const OFFSET_DADDR: usize = 36;

const IPPROTO_TCP: u16 = 6;
const TCP_ESTABLISHED: i32 = 1;
const TCP_SYN_SENT: i32 = 2;
const TCP_SYN_RECV: i32 = 3;
const TCP_LISTEN: i32 = 10;

pub fn on_change(ctx: &TracePointContext) {
    // SAFETY: the offsets lie within the tracepoint's record (checked by the agent at load).
    let (Ok(protocol), Ok(old), Ok(new)) = (
        unsafe { ctx.read_at::<u16>(OFFSET_PROTOCOL) },
        unsafe { ctx.read_at::<i32>(OFFSET_OLDSTATE) },
        unsafe { ctx.read_at::<i32>(OFFSET_NEWSTATE) },
    ) else {
        return;
    };
    if protocol != IPPROTO_TCP {
        return;
    }
    if new == TCP_LISTEN {
        // SAFETY: as above.
        let Ok(port) = (unsafe { ctx.read_at::<u16>(OFFSET_SPORT) }) else {
            return;
        };
        if WAITING_PORTS.get_ptr(u32::from(port)).is_some() {
            let event = SockEvent {
                // SAFETY: no preconditions.
                at_ns: unsafe { bpf_ktime_get_ns() },
                kind: SOCK_EVENT_LISTEN,
                port: u32::from(port),
            };
            let _ = SOCK_EVENTS.output::<SockEvent>(&event, 0);
        }
        return;
    }
    let opened = new == TCP_ESTABLISHED && (old == TCP_SYN_SENT || old == TCP_SYN_RECV);
    let closed = old == TCP_ESTABLISHED && new != TCP_ESTABLISHED;
    if !opened && !closed {
        return;
    }
    // SAFETY: as above. The IPv4 field is filled for IPv6 sockets too (v4-mapped peers).
    let Ok(saddr) = (unsafe { ctx.read_at::<[u8; 4]>(OFFSET_SADDR) }) else {
        return;
    };
    let host_addr = u32::from_ne_bytes(saddr);
    let Some(host) = HOSTS.get_ptr(host_addr) else {
        return;
    };
    // SAFETY: map values stay valid for the program's run.
    let Some(activity) = ACTIVITY.get_ptr_mut(unsafe { (*host).host_id }) else {
        return;
    };
    // Connections with ignored peers (health checkers) do not keep the host awake either.
    // SAFETY: as above; map values stay valid for the program's run.
    if unsafe { (*host).flags } & HOST_FLAG_IGNORES_PEERS != 0
        && let Ok(peer) = unsafe { ctx.read_at::<[u8; 4]>(OFFSET_DADDR) }
    {
        let key = Key::new(
            64,
            IgnoreKey {
                host_id_be: unsafe { (*host).host_id }.to_be_bytes(),
                peer,
            },
        );
        if IDLE_IGNORE.get(&key).is_some() {
            return;
        }
    }
    // SAFETY: per-CPU value: no other writer on this CPU.
    let activity: &mut HostActivity = unsafe { &mut *activity };
    if opened {
        activity.tcp_opened += 1;
    } else {
        activity.tcp_closed += 1;
    }
}
