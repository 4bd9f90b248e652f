//! Who owns each warm host's own link (the host side of its container's veth): `HOST_LINKS`, the
//! authority `imag_from_host` holds a container to (its address and MAC), and its copy in
//! `LINK_OWNERS`, direct-mapped by ifindex, which also names the link's host (its id and flags)
//! so that the program counts what a container sends without looking the sender up.
//!
//! Neighbours: [`super::attach`] writes a link's owner when it attaches the link's programs;
//! [`super::maps`]'s `set_host` calls [`Datapath::name_host_in_link_slots`] when a host's id or
//! flags change; [`super::load`] empties the slots of an adopted datapath.

use std::net::Ipv4Addr;

use imag_common::{
    HostLink, LINK_SLOT_OWNER, LINK_SLOT_OWNER_HOST, LINK_SLOTS_LEN, LinkSlot, link_slot,
    link_slot_tag, maps,
};
use tracing::debug;

use super::{Datapath, DatapathError, maps::addr_key};

impl Datapath {
    /// Holds whatever speaks on link `ifindex` (the host side of a host's container veth) to
    /// `addr` and, when known, `container_mac` (`HOST_LINKS`, then its `LINK_OWNERS` slot;
    /// `imag_from_host` drops the rest).
    pub fn set_link_owner(
        &mut self,
        ifindex: u32,
        addr: Ipv4Addr,
        container_mac: Option<[u8; 6]>,
    ) -> Result<(), DatapathError> {
        let owner = HostLink {
            addr: addr_key(addr),
            mac: container_mac.unwrap_or_default(),
            _reserved: [0; 2],
        };
        // A slot that says another owner (a MAC learnt since, say) is emptied before
        // `HOST_LINKS` changes, so that it never lets through what the new entry drops.
        if self
            .own_slot(ifindex)
            .is_some_and(|slot| (slot.addr, slot.mac) != (owner.addr, owner.mac))
        {
            self.empty_slot_of(ifindex);
        }
        self.link_owners
            .insert(ifindex, owner, 0)
            .map_err(|source| DatapathError::Map {
                map: maps::HOST_LINKS,
                source,
            })?;
        self.owned_links.insert(ifindex, addr);
        self.set_link_slot(ifindex, addr, owner)
    }

    /// Rewrites the slots of the links host `addr` owns, after its id or flags changed. A slot
    /// that cannot be rewritten is emptied (best effort), so that it does not go on naming the
    /// host by its old id: the link's frames are then judged by `HOST_LINKS` and counted by
    /// their source.
    pub(super) fn name_host_in_link_slots(&mut self, addr: Ipv4Addr) -> Result<(), DatapathError> {
        let links: Vec<u32> = (self.owned_links.iter())
            .filter(|&(_, &owner)| owner == addr)
            .map(|(&ifindex, _)| ifindex)
            .collect();
        let mut first_error = Ok(());
        for ifindex in links {
            let rewritten = self
                .link_owners
                .get(&ifindex, 0)
                .map_err(|source| DatapathError::Map {
                    map: maps::HOST_LINKS,
                    source,
                })
                .and_then(|owner| self.set_link_slot(ifindex, addr, owner));
            if let Err(err) = rewritten {
                self.empty_slot_of(ifindex);
                first_error = first_error.and(Err(err));
            }
        }
        first_error
    }

    /// Copies link `ifindex`'s `HOST_LINKS` entry, and the id and flags of the host at its
    /// address as `set_host` was last told them, into its `LINK_OWNERS` slot if the slot is free
    /// or already the link's (a slot another link took stays that link's: this one is then looked
    /// up in `HOST_LINKS`). Written after both, so that a slot never lets through what
    /// `HOST_LINKS` would drop, nor names a host `HOSTS` does not.
    fn set_link_slot(
        &mut self,
        ifindex: u32,
        addr: Ipv4Addr,
        owner: HostLink,
    ) -> Result<(), DatapathError> {
        let Some(tag) = link_slot_tag(ifindex) else {
            return Ok(());
        };
        let index = link_slot(ifindex);
        let current = self.link_slots.get(&index, 0).map_err(link_slots_error)?;
        if current.state != 0 && current.tag != tag {
            return Ok(());
        }
        // A host id too large for the slot leaves the host unnamed (it is looked up by address).
        let host = (self.host_entries.get(&addr))
            .and_then(|e| u16::try_from(e.host_id).ok().map(|id| (id, e.flags)));
        let slot = LinkSlot {
            addr: owner.addr,
            host_id: host.map_or(0, |(id, _)| id),
            tag,
            mac: owner.mac,
            state: if host.is_some() {
                LINK_SLOT_OWNER_HOST
            } else {
                LINK_SLOT_OWNER
            },
            host_flags: host.map_or(0, |(_, flags)| flags),
        };
        if slot == current {
            return Ok(());
        }
        // As in `set_host_slot`: the kernel copies a value without promising one store, and the
        // program reads a slot in two loads (the word with `state` first). Every change goes
        // through an unusable slot (`state` 0), and the last write changes only `state`: what a
        // program reads is then either unusable (`HOST_LINKS` is asked) or this link's.
        let emptied = LinkSlot {
            state: 0,
            ..current
        };
        let empty = LinkSlot { state: 0, ..slot };
        if current.state != 0 {
            self.set_slot_of_link(index, emptied)?;
        }
        if emptied != empty {
            self.set_slot_of_link(index, empty)?;
        }
        self.set_slot_of_link(index, slot)
    }

    fn set_slot_of_link(&mut self, index: u32, slot: LinkSlot) -> Result<(), DatapathError> {
        self.link_slots
            .set(index, slot, 0)
            .map_err(link_slots_error)
    }

    /// Forgets who owns link `ifindex` (its container is gone or going): its `LINK_OWNERS` slot
    /// is emptied first, so that the slot never says more than `HOST_LINKS`.
    pub fn remove_link_owner(&mut self, ifindex: u32) {
        self.empty_slot_of(ifindex);
        let _ = self.link_owners.remove(&ifindex);
        self.owned_links.remove(&ifindex);
    }

    /// Empties link `ifindex`'s slot if it is that link's (best effort: a slot that cannot be
    /// read or written is left as it is).
    fn empty_slot_of(&mut self, ifindex: u32) {
        if let Some(current) = self.own_slot(ifindex) {
            let emptied = LinkSlot {
                state: 0,
                ..current
            };
            let _ = self.set_slot_of_link(link_slot(ifindex), emptied);
        }
    }

    /// Link `ifindex`'s slot, if it is usable and that link's (as `imag_from_host` would take
    /// it); `None` too when it cannot be read.
    fn own_slot(&self, ifindex: u32) -> Option<LinkSlot> {
        let slot = self.link_slots.get(&link_slot(ifindex), 0).ok()?;
        (slot.state != 0 && link_slot_tag(ifindex) == Some(slot.tag)).then_some(slot)
    }

    /// Link owners whose link no longer exists (left by an earlier agent), by ifindex.
    pub(super) fn stale_link_owners(&self, exists: impl Fn(u32) -> bool) -> Vec<u32> {
        self.link_owners
            .keys()
            .filter_map(Result::ok)
            .filter(|&index| !exists(index))
            .collect()
    }

    /// Empties every `LINK_OWNERS` slot an earlier agent left: its host ids and flags need not
    /// be this agent's, and it may have stopped between two writes. A slot is a copy, never an
    /// owner of its own: until this agent writes a link's owner again, `HOST_LINKS` judges the
    /// link's frames and `HOSTS` names their sender.
    pub(super) fn empty_link_slots(&mut self) {
        let mut emptied = 0_u32;
        for index in 0..LINK_SLOTS_LEN {
            let Ok(slot) = self.link_slots.get(&index, 0) else {
                continue;
            };
            if slot.state != 0
                && self
                    .set_slot_of_link(index, LinkSlot { state: 0, ..slot })
                    .is_ok()
            {
                emptied += 1;
            }
        }
        if emptied > 0 {
            debug!(emptied, "emptied the link slots an earlier agent left");
        }
    }
}

fn link_slots_error(source: aya::maps::MapError) -> DatapathError {
    DatapathError::Map {
        map: maps::LINK_OWNERS,
        source,
    }
}
