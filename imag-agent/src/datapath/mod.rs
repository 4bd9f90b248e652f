//! The kernel side as the agent sees it, split by verb:
//!
//! - [`load`]: loading the embedded eBPF object (reusing a pinned datapath an earlier agent left)
//!   and handing out its ring buffers and logger; [`pins`] knows where it all lives on the BPF
//!   filesystem.
//! - [`attach`]: hooking the holding program into interfaces (XDP or TC, see [`HookChoice`]),
//!   the TC programs into warm hosts' links (through `host_links`, a thread of its own: those
//!   attaches wait on the kernel's RTNL lock) and `imag_tcp_state` into its tracepoint.
//! - [`maps`]: typed access to the maps (hosts, interfaces, activity, ignored peers, waited-for
//!   ports, counters); `link_owners`: who may speak on each warm host's own link, and the
//!   direct-mapped slots that name the link's host.
//! - [`deliver`]: re-injecting a held frame into the stack.
//! - [`HostTable`]: the part the orchestrator drives (hold/pass, activity, host links,
//!   re-delivery), as a trait its unit tests implement in memory.
//! - [`ring`]: turning ring buffer records into [`ring::HeldFrame`]s.
//! - `test_run` (feature `test-helpers`): running the holding programs on crafted frames.
//!
//! Every map and program is named once, in `imag_common::maps` and `imag_common::programs`.
//! Neighbours: `orchestrator` owns a [`Datapath`] and flips hosts between hold and pass; `agent`
//! loads and attaches it.

pub mod attach;
pub mod deliver;
mod error;
mod host_links;
mod host_table;
mod link_owners;
pub mod load;
pub mod maps;
pub mod pins;
pub mod ring;
#[cfg(feature = "test-helpers")]
pub mod test_run;

use std::{
    collections::{BTreeMap, HashMap as StdHashMap},
    net::Ipv4Addr,
};

use aya::{
    Ebpf,
    maps::{Array, HashMap, LpmTrie, MapData, PerCpuArray},
    programs::links::FdLink,
};
use imag_common::{
    AllowKey, HostActivity, HostEntry, HostLink, HostSlot, IgnoreKey, InterfaceEntry, LinkSlot,
};

use self::pins::Pins;
#[cfg(feature = "test-helpers")]
pub use self::test_run::{TestHook, TestVerdict};
pub use self::{
    attach::HookChoice,
    error::DatapathError,
    host_table::{HostMode, HostTable},
    load::EbpfLogger,
    maps::{WaitingPorts, addr_key},
};

/// The loaded programs and maps, and the links this agent holds.
pub struct Datapath {
    ebpf: Ebpf,
    pins: Option<Pins>,
    adopted: bool,
    hosts: HashMap<MapData, u32, HostEntry>,
    interfaces: HashMap<MapData, u32, InterfaceEntry>,
    stats: PerCpuArray<MapData, u64>,
    activity: PerCpuArray<MapData, HostActivity>,
    /// Each host's entry as [`Datapath::set_host`] was last told it (its id indexes `activity`;
    /// its id and flags go into its links' slots).
    host_entries: StdHashMap<Ipv4Addr, HostEntry>,
    idle_ignore: LpmTrie<MapData, IgnoreKey, u8>,
    allow: LpmTrie<MapData, AllowKey, u8>,
    /// `HOST_LINKS`: who may speak on each host's own link.
    link_owners: HashMap<MapData, u32, HostLink>,
    /// `HOST_SLOTS`: `hosts` again, direct-mapped by address, for the programs' lookups.
    host_slots: Array<MapData, HostSlot>,
    /// `LINK_OWNERS`: `link_owners` again, direct-mapped by ifindex, with each link's host, for
    /// `imag_from_host`.
    link_slots: Array<MapData, LinkSlot>,
    /// The links whose owner this agent wrote, by ifindex, with their host's address: the slots
    /// to rewrite when a host's id or flags change.
    owned_links: StdHashMap<u32, Ipv4Addr>,
    /// Taken by readiness ([`Datapath::take_waiting_ports`]).
    waiting_ports: Option<HashMap<MapData, u32, u32>>,
    /// Links by pin name (`xdp-<ifindex>`, `tc-<ifindex>`, `tcp-state`); the hosts' own links
    /// (`to-<ifindex>`, `from-<ifindex>`) are `host_links`'.
    links: BTreeMap<String, FdLink>,
    /// The TC programs on warm hosts' own links, attached and detached on a thread of their own.
    host_links: host_links::HostLinks,
    /// How held frames go back into the stack ([`deliver`]).
    injector: deliver::Injector,
}

/// Registers an object that owns a BPF map fd (ring buffer) with tokio for readability.
pub fn poll_readable<T: std::os::fd::AsRawFd>(
    inner: T,
) -> std::io::Result<tokio::io::unix::AsyncFd<T>> {
    // SAFETY: every caller passes an object that owns its fd (aya's RingBuf, EbpfLogger) for its
    // whole lifetime, and as_raw_fd always returns that same fd.
    unsafe {
        tokio::io::unix::AsyncFd::register_with_interest(inner, tokio::io::Interest::READABLE)
    }
    .map_err(std::convert::Into::into)
}
