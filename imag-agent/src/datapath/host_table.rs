//! What the orchestrator asks of the datapath, as one trait: flip a host between hold and pass,
//! read and reset its activity, count on its link, re-deliver its held frames. [`Datapath`]
//! implements it over the real maps and links; the orchestrator's unit tests implement it in
//! memory. Loading, attaching to interfaces and pinning stay on [`Datapath`] itself: the agent
//! does those, not the orchestrator.

use std::net::Ipv4Addr;

use imag_common::{HostActivity, stat};
use ipnet::Ipv4Net;

use super::{Datapath, DatapathError};
use crate::interfaces::Interface;

/// What the datapath does with a host's packets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HostMode {
    /// Queue them and hand them to the agent (the host is not warm here).
    Hold,
    /// About to sleep: hold new ones as [`HostMode::Hold`], but let those already past the hold
    /// point reach the container and count as its traffic (so that the look before the sleep
    /// sees them, instead of their being dropped at the host's link).
    Drain,
    /// Let them through the kernel to the host's container here (warm).
    Pass,
    /// Let them through the kernel, which routes them to the node that serves the host
    /// (scale-out); on the bridge, ARP for the host is answered with the bridge's MAC.
    Forward,
}

/// The datapath's per-host state, as the orchestrator drives it.
pub trait HostTable {
    /// What to do with the host's packets; `flags` are `HOST_FLAG_*`.
    fn set_host(
        &mut self,
        addr: Ipv4Addr,
        host_id: u32,
        mode: HostMode,
        flags: u8,
    ) -> Result<(), DatapathError>;
    /// Makes sure the host has an activity entry (counted from then on).
    fn ensure_activity(&mut self, addr: Ipv4Addr) -> Result<(), DatapathError>;
    /// Peers whose traffic does not count as the host's activity.
    fn ignore_peers(&mut self, host_id: u32, prefix: Ipv4Net) -> Result<(), DatapathError>;
    /// The sources restricted hosts allow, as (host id, prefix) pairs: replaces the whole table.
    fn set_allowed(&mut self, allowed: &[(u32, Ipv4Net)]) -> Result<(), DatapathError>;
    /// The host's activity, summed over CPUs.
    fn activity(&self, addr: Ipv4Addr) -> Option<HostActivity>;
    /// Sets the host's count of open connections (recounted from its socket table).
    fn reset_connections(&mut self, addr: Ipv4Addr, open: u64) -> Result<(), DatapathError>;
    /// The datapath's verdict counters, summed over CPUs.
    fn stats(&self) -> [u64; stat::COUNT as usize];
    /// Counts the host's traffic on its container link (the host side of its veth), and holds
    /// the container there to its own address and `container_mac` (when known). The owner is
    /// written at once; the programs may reach the link a little later (the real datapath
    /// attaches them on a thread of its own).
    fn attach_host_link(
        &mut self,
        addr: Ipv4Addr,
        veth: &Interface,
        container_mac: Option<[u8; 6]>,
    ) -> Result<(), DatapathError>;
    fn has_host_link(&self, addr: Ipv4Addr) -> bool;
    fn detach_host_link(&mut self, addr: Ipv4Addr);
    /// Re-injects a held frame on the interface it arrived on.
    fn deliver(&self, ifindex: u32, frame: &[u8]) -> Result<(), DatapathError>;
}

impl HostTable for Datapath {
    fn set_host(
        &mut self,
        addr: Ipv4Addr,
        host_id: u32,
        mode: HostMode,
        flags: u8,
    ) -> Result<(), DatapathError> {
        Datapath::set_host(self, addr, host_id, mode, flags)
    }

    fn ensure_activity(&mut self, addr: Ipv4Addr) -> Result<(), DatapathError> {
        Datapath::ensure_activity(self, addr)
    }

    fn ignore_peers(&mut self, host_id: u32, prefix: Ipv4Net) -> Result<(), DatapathError> {
        Datapath::ignore_peers(self, host_id, prefix)
    }

    fn set_allowed(&mut self, allowed: &[(u32, Ipv4Net)]) -> Result<(), DatapathError> {
        Datapath::set_allowed(self, allowed)
    }

    fn activity(&self, addr: Ipv4Addr) -> Option<HostActivity> {
        Datapath::activity(self, addr)
    }

    fn reset_connections(&mut self, addr: Ipv4Addr, open: u64) -> Result<(), DatapathError> {
        Datapath::reset_connections(self, addr, open)
    }

    fn stats(&self) -> [u64; stat::COUNT as usize] {
        Datapath::stats(self)
    }

    fn attach_host_link(
        &mut self,
        addr: Ipv4Addr,
        veth: &Interface,
        container_mac: Option<[u8; 6]>,
    ) -> Result<(), DatapathError> {
        Datapath::attach_host_link(self, addr, veth, container_mac)
    }

    fn has_host_link(&self, addr: Ipv4Addr) -> bool {
        Datapath::has_host_link(self, addr)
    }

    fn detach_host_link(&mut self, addr: Ipv4Addr) {
        Datapath::detach_host_link(self, addr);
    }

    fn deliver(&self, ifindex: u32, frame: &[u8]) -> Result<(), DatapathError> {
        Datapath::deliver(self, ifindex, frame)
    }
}
