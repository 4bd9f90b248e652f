//! Loading the embedded eBPF object into the kernel — or reopening the maps an earlier agent
//! pinned, with everything in them — and handing out what other tasks own afterwards: the ring
//! buffers (to [`super::ring`]'s readers) and the eBPF logger.
//!
//! Neighbours: [`super::pins`] says where pinned maps live; [`super::attach`] attaches the
//! programs loaded here.

use std::{
    collections::{BTreeMap, HashMap as StdHashMap},
    path::PathBuf,
};

use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, HashMap, LpmTrie, MapData, PerCpuArray, RingBuf},
    programs::{ProgramError, SchedClassifier, TracePoint, Xdp},
};
use imag_common::{
    AllowKey, HostActivity, HostEntry, HostLink, HostSlot, IgnoreKey, InterfaceEntry, LinkSlot,
    globals, maps, programs,
};
use ipnet::Ipv4Net;
use tracing::{debug, info};

use super::{Datapath, DatapathError, pins::Pins};

/// The compiled eBPF object, built by build.rs from the `imag-ebpf` crate.
pub(super) static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/imag"));

/// A map that lives in the pin directory (so that it outlives the agent), with its key and value
/// sizes for the compatibility check (ring buffers have neither).
struct PinnedMap {
    name: &'static str,
    key: usize,
    value: usize,
    /// Sized for the configuration's hosts (so a pinned one must have room for them).
    per_host: bool,
}

const fn pinned(name: &'static str, key: usize, value: usize, per_host: bool) -> PinnedMap {
    PinnedMap {
        name,
        key,
        value,
        per_host,
    }
}

/// Every map but the eBPF-only `HOLD_SCRATCH`.
const PINNED_MAPS: [PinnedMap; 12] = [
    pinned(maps::HOSTS, 4, size_of::<HostEntry>(), true),
    pinned(maps::INTERFACES, 4, size_of::<InterfaceEntry>(), false),
    pinned(maps::STATS, 4, 8, false),
    pinned(maps::ACTIVITY, 4, size_of::<HostActivity>(), true),
    pinned(maps::IDLE_IGNORE, 4 + size_of::<IgnoreKey>(), 1, false),
    pinned(maps::ALLOW, 4 + size_of::<AllowKey>(), 1, false),
    pinned(maps::WAITING_PORTS, 4, 4, false),
    pinned(maps::HOST_LINKS, 4, size_of::<HostLink>(), true),
    pinned(maps::HOST_SLOTS, 4, size_of::<HostSlot>(), false),
    pinned(maps::LINK_OWNERS, 4, size_of::<LinkSlot>(), false),
    pinned(maps::HELD_FRAMES, 0, 0, false),
    pinned(maps::SOCK_EVENTS, 0, 0, false),
];

/// Reader of the eBPF programs' log records (aya-log), forwarding them to `log`/`tracing`.
pub type EbpfLogger = aya_log::EbpfLogger<&'static dyn log::Log>;

impl Datapath {
    /// Loads the embedded object into the kernel. With `pins`, the maps are pinned there — or
    /// reopened, with everything in them, if an earlier agent left them — and links attached
    /// later are pinned there too. Nothing is attached yet.
    pub fn load(pins: Option<Pins>) -> Result<Datapath, DatapathError> {
        Datapath::load_for(pins, 0, None)
    }

    /// Like [`Datapath::load`], with the per-host maps sized for `hosts` hosts (with room to
    /// grow: twice that, rounded up to a power of two, at least 1024).
    /// With `subnet`, the holding programs look only addresses inside it up in `HOSTS` (every
    /// host lies inside it).
    pub fn load_for(
        pins: Option<Pins>,
        hosts: usize,
        subnet: Option<Ipv4Net>,
    ) -> Result<Datapath, DatapathError> {
        // Saturates rather than wraps; the map sizes are capped at MAX_HOSTS just below anyway.
        let capacity = u32::try_from((hosts.max(512) * 2).next_power_of_two()).unwrap_or(u32::MAX);
        // eBPF-side logs are only for debugging: off unless the agent logs at debug level.
        let log_level: u8 = if tracing::enabled!(target: "imag_ebpf", tracing::Level::DEBUG) {
            4
        } else {
            0
        };
        let mut loader = EbpfLoader::new();
        loader.override_global(aya_log::LEVEL, &log_level, false);
        let (subnet_addr, subnet_mask) = subnet.map_or((0, 0), |net| {
            (
                super::addr_key(net.network()),
                super::addr_key(net.netmask()),
            )
        });
        loader.override_global(globals::SUBNET_ADDR, &subnet_addr, true);
        loader.override_global(globals::SUBNET_MASK, &subnet_mask, true);
        for map in PINNED_MAPS.iter().filter(|m| m.per_host) {
            loader.map_max_entries(map.name, capacity.min(imag_common::MAX_HOSTS));
        }
        let mut adopted = false;
        let map_paths: Vec<(&str, PathBuf)> = match &pins {
            Some(pins) => {
                pins.prepare()?;
                adopted = pins.exists();
                let names: Vec<&'static str> = PINNED_MAPS.iter().map(|m| m.name).collect();
                pins.check_complete(&names)?;
                for map in PINNED_MAPS.iter().filter(|m| m.key > 0) {
                    let needed = if map.per_host {
                        u32::try_from(hosts).unwrap_or(u32::MAX)
                    } else {
                        0
                    };
                    pins.check_map(map.name, map.key, map.value, needed)?;
                }
                PINNED_MAPS
                    .iter()
                    .map(|map| (map.name, pins.map(map.name)))
                    .collect()
            }
            None => Vec::new(),
        };
        for (name, path) in &map_paths {
            loader.map_pin_path(name, path.as_path());
        }
        let mut ebpf = loader.load(OBJECT).map_err(DatapathError::Load)?;
        load_programs(&mut ebpf)?;
        macro_rules! typed_map {
            ($ty:ident, $name:expr) => {
                $ty::try_from(take_map(&mut ebpf, $name)?)
                    .map_err(|source| DatapathError::Map { map: $name, source })?
            };
        }
        let hosts = typed_map!(HashMap, maps::HOSTS);
        let interfaces = typed_map!(HashMap, maps::INTERFACES);
        let stats = typed_map!(PerCpuArray, maps::STATS);
        let activity = typed_map!(PerCpuArray, maps::ACTIVITY);
        let idle_ignore = typed_map!(LpmTrie, maps::IDLE_IGNORE);
        let allow = typed_map!(LpmTrie, maps::ALLOW);
        let waiting_ports = typed_map!(HashMap, maps::WAITING_PORTS);
        let link_owners = typed_map!(HashMap, maps::HOST_LINKS);
        let host_slots = typed_map!(Array, maps::HOST_SLOTS);
        let link_slots = typed_map!(Array, maps::LINK_OWNERS);
        let host_links = super::host_links::HostLinks::start(&ebpf, pins.clone())?;
        if adopted {
            info!(dir = %pins.as_ref().expect("adopted implies pins").dir().display(),
                "adopting the datapath an earlier agent left");
        }
        let mut datapath = Datapath {
            ebpf,
            pins,
            adopted,
            hosts,
            interfaces,
            stats,
            activity,
            idle_ignore,
            allow,
            link_owners,
            host_slots,
            link_slots,
            waiting_ports: Some(waiting_ports),
            links: BTreeMap::new(),
            host_links,
            host_entries: StdHashMap::new(),
            owned_links: StdHashMap::new(),
            injector: super::deliver::Injector::default(),
        };
        if adopted {
            datapath.empty_link_slots();
        }
        Ok(datapath)
    }

    /// Whether the maps were left by an earlier agent (and so hold its state).
    pub fn adopted(&self) -> bool {
        self.adopted
    }

    /// Takes the ring buffer of socket events (once) for the readiness watcher.
    pub fn take_sock_events(&mut self) -> Result<RingBuf<MapData>, DatapathError> {
        self.take_ring(maps::SOCK_EVENTS)
    }

    /// Takes the ring buffer of held frames (once) for the reader task.
    pub fn take_held_frames(&mut self) -> Result<RingBuf<MapData>, DatapathError> {
        self.take_ring(maps::HELD_FRAMES)
    }

    fn take_ring(&mut self, map: &'static str) -> Result<RingBuf<MapData>, DatapathError> {
        RingBuf::try_from(take_map(&mut self.ebpf, map)?)
            .map_err(|source| DatapathError::Map { map, source })
    }

    /// Takes the eBPF logger (once) for a task that forwards its records to `tracing`.
    pub fn take_logger(&mut self) -> Option<EbpfLogger> {
        match aya_log::EbpfLogger::init(&mut self.ebpf) {
            Ok(logger) => Some(logger),
            Err(err) => {
                debug!(error = %err, "eBPF logging unavailable");
                None
            }
        }
    }
}

/// Loads every program of the object into the kernel (attaching comes later).
fn load_programs(ebpf: &mut Ebpf) -> Result<(), DatapathError> {
    for name in [programs::HOLD, programs::DELIVER] {
        let program: &mut Xdp = program_mut(ebpf, name)?;
        program
            .load()
            .map_err(|source| DatapathError::Program { name, source })?;
    }
    for name in [programs::HOLD_TC, programs::TO_HOST, programs::FROM_HOST] {
        let program: &mut SchedClassifier = program_mut(ebpf, name)?;
        program
            .load()
            .map_err(|source| DatapathError::Program { name, source })?;
    }
    let program: &mut TracePoint = program_mut(ebpf, programs::TCP_STATE)?;
    program.load().map_err(|source| DatapathError::Program {
        name: programs::TCP_STATE,
        source,
    })?;
    Ok(())
}

/// A loaded program of the object by name, as its type.
pub(super) fn program_mut<'a, T>(
    ebpf: &'a mut Ebpf,
    name: &'static str,
) -> Result<&'a mut T, DatapathError>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = ProgramError>,
{
    ebpf.program_mut(name)
        .ok_or(DatapathError::Missing {
            what: "program",
            name,
        })?
        .try_into()
        .map_err(|source| DatapathError::Program { name, source })
}

fn take_map(ebpf: &mut Ebpf, name: &'static str) -> Result<aya::maps::Map, DatapathError> {
    ebpf.take_map(name)
        .ok_or(DatapathError::Missing { what: "map", name })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The object, parsed without loading it (no privileges needed).
    fn object() -> aya_obj::Object {
        aya_obj::Object::parse(OBJECT).expect("the embedded eBPF object parses")
    }

    #[test]
    fn every_declared_map_is_in_the_object() {
        let object = object();
        for name in maps::ALL {
            assert!(
                object.maps.contains_key(name),
                "imag_common::maps declares {name}, but the eBPF object has no such map (its \
                 `#[map]` static must be named exactly so); it has {:?}",
                object.maps.keys().collect::<Vec<_>>()
            );
        }
    }

    #[test]
    fn the_counters_array_has_a_slot_per_counter() {
        let object = object();
        let stats = &object.maps[maps::STATS];
        assert_eq!(stats.max_entries(), imag_common::stat::COUNT);
    }

    #[test]
    fn every_map_in_the_object_is_declared() {
        for name in object().maps.keys() {
            // aya-log's own map and the sections the compiler emits for globals are not ours.
            if name.starts_with("AYA_") || name.starts_with('.') {
                continue;
            }
            assert!(
                maps::ALL.contains(&name.as_str()),
                "the eBPF object has a map {name} that imag_common::maps does not declare"
            );
        }
    }

    #[test]
    fn every_declared_program_is_in_the_object() {
        let object = object();
        for name in programs::ALL {
            assert!(
                object.programs.contains_key(name),
                "imag_common::programs declares {name}, but the eBPF object has no such \
                 program; it has {:?}",
                object.programs.keys().collect::<Vec<_>>()
            );
        }
        assert_eq!(
            object.programs.len(),
            programs::ALL.len(),
            "no undeclared program"
        );
    }

    #[test]
    fn every_map_but_the_scratch_space_is_pinned() {
        for name in maps::ALL {
            let is_pinned = PINNED_MAPS.iter().any(|m| m.name == name);
            assert_eq!(is_pinned, name != maps::HOLD_SCRATCH, "{name}");
        }
    }
}
