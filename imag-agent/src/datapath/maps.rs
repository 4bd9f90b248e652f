//! Typed access to the maps the agent writes and reads: which hosts are held or passed, what the
//! datapath knows of its interfaces, each host's activity and ignored peers, the sources
//! restricted hosts allow, who owns each host's own link, the ports wakes wait on, and the
//! packet counters. Keys and values are `imag_common`'s types; the map names come
//! from `imag_common::maps`, which names each map's key and value types.
//!
//! Neighbours: the policy that decides what to write lives in `orchestrator`; [`super::load`]
//! opens these maps.

use std::{collections::HashSet, net::Ipv4Addr};

use aya::maps::{HashMap, MapData, PerCpuValues, lpm_trie::Key};
use imag_common::{
    AllowKey, HOST_MODE_DRAIN, HOST_MODE_FORWARD, HOST_MODE_HOLD, HOST_MODE_PASS, HostActivity,
    HostEntry, HostSlot, IgnoreKey, InterfaceEntry, host_slot, maps, stat,
};
use ipnet::Ipv4Net;
use tracing::debug;

use super::{Datapath, DatapathError, HostMode};

/// Map key of an address: its octets as they sit in the packet.
pub fn addr_key(addr: Ipv4Addr) -> u32 {
    u32::from_ne_bytes(addr.octets())
}

impl Datapath {
    /// Tells the datapath an interface's MAC address and `IFACE_FLAG_*` bits.
    pub fn set_interface(
        &mut self,
        ifindex: u32,
        mac: [u8; 6],
        flags: u32,
    ) -> Result<(), DatapathError> {
        let entry = InterfaceEntry {
            mac,
            _reserved: [0; 2],
            flags,
        };
        self.interfaces
            .insert(ifindex, entry, 0)
            .map_err(|source| DatapathError::Map {
                map: maps::INTERFACES,
                source,
            })
    }

    /// Registers or updates a host: what the datapath does with its packets is `mode`.
    pub fn set_host(
        &mut self,
        addr: Ipv4Addr,
        host_id: u32,
        mode: HostMode,
        flags: u8,
    ) -> Result<(), DatapathError> {
        let entry = HostEntry {
            mode: match mode {
                HostMode::Hold => HOST_MODE_HOLD,
                HostMode::Drain => HOST_MODE_DRAIN,
                HostMode::Pass => HOST_MODE_PASS,
                HostMode::Forward => HOST_MODE_FORWARD,
            },
            flags,
            _reserved: [0; 2],
            host_id,
        };
        self.hosts
            .insert(addr_key(addr), entry, 0)
            .map_err(|source| DatapathError::Map {
                map: maps::HOSTS,
                source,
            })?;
        let named = |e: &HostEntry| (e.host_id, e.flags);
        let renamed =
            self.host_entries.insert(addr, entry).as_ref().map(named) != Some(named(&entry));
        let slot = self.set_host_slot(addr, entry);
        // Its links' slots name the host by id and flags.
        let links = if renamed {
            self.name_host_in_link_slots(addr)
        } else {
            Ok(())
        };
        slot.and(links)
    }

    /// Copies the host's `HOSTS` entry into its `HOST_SLOTS` slot if the slot is free or already
    /// the host's (a slot another host took stays that host's: this one is then looked up in
    /// `HOSTS`). Written after `HOSTS`, so that the slot never says anything `HOSTS` does not.
    fn set_host_slot(&mut self, addr: Ipv4Addr, entry: HostEntry) -> Result<(), DatapathError> {
        let map_error = |source| DatapathError::Map {
            map: maps::HOST_SLOTS,
            source,
        };
        let key = addr_key(addr);
        let index = host_slot(key);
        let current = self.host_slots.get(&index, 0).map_err(map_error)?;
        if current.mode != 0 && current.addr != key {
            return Ok(());
        }
        // A host id too large for the slot empties it (the host is looked up in `HOSTS`).
        let slot = u16::try_from(entry.host_id).map_or(HostSlot::default(), |host_id| HostSlot {
            addr: key,
            mode: entry.mode,
            flags: entry.flags,
            host_id,
        });
        if slot == current {
            return Ok(());
        }
        // The kernel copies a slot without promising one store, so a program may read a mix of
        // old and new bytes. A slot is made unusable (mode 0) before its address or id change,
        // and usable again in a last write that changes only mode and flags: a mix is then
        // either unusable (`HOSTS` is asked) or this host's, with its old or new mode and flags.
        let mut set = |value| self.host_slots.set(index, value, 0).map_err(map_error);
        let same_host = (current.addr, current.host_id) == (slot.addr, slot.host_id);
        if !same_host {
            if current.mode != 0 {
                set(HostSlot { mode: 0, ..current })?;
            }
            set(HostSlot { mode: 0, ..slot })?;
        }
        if slot.mode != 0 {
            set(slot)?;
        }
        Ok(())
    }

    /// Makes sure the host has an activity entry (zero for a new one; one an earlier agent left
    /// for the same host keeps its counts, one left for another host under the same id does not).
    pub fn ensure_activity(&mut self, addr: Ipv4Addr) -> Result<(), DatapathError> {
        if self.activity(addr).is_some() {
            return Ok(());
        }
        self.write_activity(addr, HostActivity::default())
    }

    /// The host's activity summed over CPUs (the latest packet time over CPUs); `None` before
    /// [`Datapath::ensure_activity`] set its entry up.
    pub fn activity(&self, addr: Ipv4Addr) -> Option<HostActivity> {
        let id = self.host_entries.get(&addr)?.host_id;
        let values = self.activity.get(&id, 0).ok()?;
        if values.iter().next()?.host_addr != addr_key(addr) {
            return None;
        }
        Some(values.iter().fold(HostActivity::default(), |mut sum, v| {
            sum.last_packet_ns = sum.last_packet_ns.max(v.last_packet_ns);
            sum.packets_in += v.packets_in;
            sum.bytes_in += v.bytes_in;
            sum.packets_out += v.packets_out;
            sum.bytes_out += v.bytes_out;
            sum.tcp_opened += v.tcp_opened;
            sum.tcp_closed += v.tcp_closed;
            sum.ignored_packets += v.ignored_packets;
            sum.host_addr = v.host_addr;
            sum
        }))
    }

    /// Sets the host's open-connection count to `open` (from the container's own socket table),
    /// correcting drift from transitions the tracepoint missed (e.g. while no agent ran).
    pub fn reset_connections(&mut self, addr: Ipv4Addr, open: u64) -> Result<(), DatapathError> {
        let mut base = self.activity(addr).unwrap_or_default();
        base.tcp_opened = open;
        base.tcp_closed = 0;
        self.write_activity(addr, base)
    }

    /// Replaces the host's per-CPU activity with `first` on CPU 0 and zeros elsewhere (the sums
    /// the agent reads stay `first`).
    fn write_activity(&mut self, addr: Ipv4Addr, first: HostActivity) -> Result<(), DatapathError> {
        let cpus_error = |source| DatapathError::PossibleCpus {
            path: "/sys/devices/system/cpu/possible",
            source,
        };
        let cpus = aya::util::nr_cpus().map_err(|(_, source)| cpus_error(source))?;
        let owned = HostActivity {
            host_addr: addr_key(addr),
            ..HostActivity::default()
        };
        let mut values = vec![owned; cpus];
        values[0] = HostActivity {
            host_addr: owned.host_addr,
            ..first
        };
        let values = PerCpuValues::try_from(values).map_err(cpus_error)?;
        let Some(id) = self.host_entries.get(&addr).map(|e| e.host_id) else {
            return Err(DatapathError::UnknownHost { addr });
        };
        self.activity
            .set(id, values, 0)
            .map_err(|source| DatapathError::Map {
                map: maps::ACTIVITY,
                source,
            })
    }

    /// Makes traffic between host `host_id` and peers in `prefix` not count as activity.
    pub fn ignore_peers(&mut self, host_id: u32, prefix: Ipv4Net) -> Result<(), DatapathError> {
        let key = Key::new(
            32 + u32::from(prefix.prefix_len()),
            IgnoreKey {
                host_id_be: host_id.to_be_bytes(),
                peer: prefix.network().octets(),
            },
        );
        self.idle_ignore
            .insert(&key, 1, 0)
            .map_err(|source| DatapathError::Map {
                map: maps::IDLE_IGNORE,
                source,
            })
    }

    /// Replaces the sources restricted hosts allow (`ALLOW`) with `allowed`, (host id, source
    /// prefix) pairs: new entries are written before stale ones (an earlier agent's, or another
    /// configuration's) are removed, so that no allowed source is refused meanwhile.
    pub fn set_allowed(&mut self, allowed: &[(u32, Ipv4Net)]) -> Result<(), DatapathError> {
        let map_error = |source| DatapathError::Map {
            map: maps::ALLOW,
            source,
        };
        let wanted: HashSet<(u32, [u8; 4], [u8; 4])> = allowed
            .iter()
            .map(|(host_id, prefix)| {
                let prefix_len = 32 + u32::from(prefix.prefix_len());
                (prefix_len, host_id.to_be_bytes(), prefix.network().octets())
            })
            .collect();
        for &(prefix_len, host_id_be, source) in &wanted {
            let key = Key::new(prefix_len, AllowKey { host_id_be, source });
            self.allow.insert(&key, 1, 0).map_err(map_error)?;
        }
        let stale: Vec<Key<AllowKey>> = self
            .allow
            .keys()
            .filter_map(Result::ok)
            .filter(|key| {
                let data = key.data();
                !wanted.contains(&(key.prefix_len(), data.host_id_be, data.source))
            })
            .collect();
        for key in stale {
            self.allow.remove(&key).map_err(map_error)?;
        }
        Ok(())
    }

    /// The table of ports wakes wait on for a LISTEN event (`WAITING_PORTS`), for readiness,
    /// which owns it from then on.
    pub fn take_waiting_ports(&mut self) -> Option<WaitingPorts> {
        self.waiting_ports.take().map(WaitingPorts)
    }

    /// Packet counters summed over CPUs, indexed like `imag_common::stat`.
    pub fn stats(&self) -> [u64; stat::COUNT as usize] {
        let mut totals = [0u64; stat::COUNT as usize];
        for (i, total) in (0..stat::COUNT).zip(totals.iter_mut()) {
            if let Ok(values) = self.stats.get(&i, 0) {
                *total = values.iter().sum();
            }
        }
        totals
    }
}

/// The `WAITING_PORTS` map: a port with a value is one some wake waits on, and the tracepoint
/// reports sockets that start listening on it.
pub struct WaitingPorts(HashMap<MapData, u32, u32>);

impl WaitingPorts {
    /// Marks `port` as waited on by `waiters` wakes.
    pub fn insert(&mut self, port: u16, waiters: u32) {
        if let Err(err) = self.0.insert(u32::from(port), waiters, 0) {
            debug!(port, error = %err, "watching a port failed; readiness falls back to polling");
        }
    }

    pub fn remove(&mut self, port: u16) {
        let _ = self.0.remove(&u32::from(port));
    }
}
