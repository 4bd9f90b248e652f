//! The kernel side as the agent sees it: loading the embedded eBPF object (reusing a pinned
//! datapath left by an earlier agent), attaching its programs — `imag_hold` (XDP) to interfaces,
//! `imag_to_host`/`imag_from_host` (TC) to warm hosts' links, `imag_tcp_state` to the TCP state
//! tracepoint — typed access to its maps, and re-delivery of held frames.
//!
//! Neighbours: `orchestrator` owns a [`Datapath`] and flips hosts between hold and pass;
//! [`ring`] turns ring buffer records into [`ring::HeldFrame`]s for it; [`pins`] knows where it
//! all lives on the BPF filesystem.

pub mod pins;
pub mod ring;

use std::{
    collections::{BTreeMap, HashMap as StdHashMap},
    net::Ipv4Addr,
};

use aya::{
    Ebpf, EbpfLoader,
    maps::{
        HashMap, LpmTrie, MapData, PerCpuArray, PerCpuHashMap, PerCpuValues, RingBuf, lpm_trie::Key,
    },
    programs::{
        ProgramError, SchedClassifier, TestRun, TestRunAttrs, TestRunOptions, TracePoint, Xdp,
        links::FdLink, tc::TcAttachType, xdp::XdpMode,
    },
};
use imag_common::{
    HOST_MODE_HOLD, HOST_MODE_PASS, HostActivity, HostEntry, IgnoreKey, InterfaceEntry, stat,
};
use ipnet::Ipv4Net;
use tracing::{debug, info, warn};

use self::pins::Pins;
use crate::interfaces::Interface;

/// The compiled eBPF object, built by build.rs from the `imag-ebpf` crate.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/imag"));

const HOLD_PROGRAM: &str = "imag_hold";
const HOLD_TC_PROGRAM: &str = "imag_hold_tc";
const DELIVER_PROGRAM: &str = "imag_deliver";
const TO_HOST_PROGRAM: &str = "imag_to_host";
const FROM_HOST_PROGRAM: &str = "imag_from_host";
const TCP_STATE_PROGRAM: &str = "imag_tcp_state";
/// Maps that live in the pin directory (so that they outlive the agent), with their key and
/// value sizes for the compatibility check. Ring buffers have neither.
const PINNED_MAPS: [(&str, usize, usize); 8] = [
    ("HOSTS", 4, size_of::<HostEntry>()),
    ("INTERFACES", 4, size_of::<InterfaceEntry>()),
    ("STATS", 4, 8),
    ("ACTIVITY", 4, size_of::<HostActivity>()),
    ("IDLE_IGNORE", 4 + size_of::<IgnoreKey>(), 1),
    ("WAITING_PORTS", 4, 4),
    ("HELD_FRAMES", 0, 0),
    ("SOCK_EVENTS", 0, 0),
];

#[derive(Debug, thiserror::Error)]
pub enum DatapathError {
    #[error(
        "loading the eBPF programs into the kernel failed (imag needs root, i.e. CAP_BPF and \
         CAP_NET_ADMIN, and a kernel with BPF, BTF and XDP support: Linux 5.18 or newer)"
    )]
    Load(#[source] aya::EbpfError),
    #[error("the eBPF object has no {what} named {name}: the agent binary is broken, rebuild it")]
    Missing {
        what: &'static str,
        name: &'static str,
    },
    #[error("eBPF program {name}: {source}")]
    Program {
        name: &'static str,
        #[source]
        source: ProgramError,
    },
    #[error(
        "attaching the holding program to {iface} failed; is another XDP or TC program attached \
         there? (see `ip link show {iface}` and `bpftool net`)"
    )]
    Attach {
        iface: String,
        #[source]
        source: ProgramError,
    },
    #[error("eBPF map {map}: {source}")]
    Map {
        map: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
    #[error("re-delivering a held frame on ifindex {ifindex} failed")]
    Deliver {
        ifindex: u32,
        #[source]
        source: ProgramError,
    },
    #[error("{0}")]
    Pins(String),
    #[error("attaching {program} to {target} failed")]
    AttachOther {
        program: &'static str,
        target: String,
        #[source]
        source: ProgramError,
    },
}

/// How the holding program is hooked into an interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum HookChoice {
    /// XDP in native (driver) mode on physical NICs, falling back to generic mode; a TC ingress
    /// classifier on virtual interfaces (veth, bridges), where XDP could only run in generic
    /// mode, which copies every multi-segment packet (measured: a third of a veth's throughput).
    Auto,
    /// XDP in native (driver) mode only.
    XdpNative,
    /// XDP in generic (skb) mode only.
    XdpGeneric,
    /// A TC ingress classifier (TCX).
    Tc,
}

/// The loaded programs and maps, and the links this agent holds.
pub struct Datapath {
    ebpf: Ebpf,
    pins: Option<Pins>,
    adopted: bool,
    hosts: HashMap<MapData, u32, HostEntry>,
    interfaces: HashMap<MapData, u32, InterfaceEntry>,
    stats: PerCpuArray<MapData, u64>,
    activity: PerCpuHashMap<MapData, u32, HostActivity>,
    idle_ignore: LpmTrie<MapData, IgnoreKey, u8>,
    waiting_ports: HashMap<MapData, u32, u32>,
    /// Links by pin name (`xdp-<ifindex>`, `tcp-state`, `to-<ifindex>`, `from-<ifindex>`).
    links: BTreeMap<String, FdLink>,
    /// The link (host-side veth ifindex) each warm host's TC programs are attached to.
    host_links: StdHashMap<Ipv4Addr, u32>,
    /// How many wakes wait for a listening socket on each port.
    waiters: StdHashMap<u16, u32>,
}

/// Reader of the eBPF programs' log records (aya-log), forwarding them to `log`/`tracing`.
pub type EbpfLogger = aya_log::EbpfLogger<&'static dyn log::Log>;

/// Registers an object that owns a BPF map fd (ring buffer) with tokio for readability.
pub fn poll_readable<T: std::os::fd::AsRawFd>(
    inner: T,
) -> std::io::Result<tokio::io::unix::AsyncFd<T>> {
    // SAFETY: every caller passes an object that owns its fd (aya's RingBuf, EbpfLogger) for its
    // whole lifetime, and as_raw_fd always returns that same fd.
    unsafe {
        tokio::io::unix::AsyncFd::register_with_interest(inner, tokio::io::Interest::READABLE)
    }
    .map_err(|e| e.into())
}

/// Map key of an address: its octets as they sit in the packet.
pub fn addr_key(addr: Ipv4Addr) -> u32 {
    u32::from_ne_bytes(addr.octets())
}

impl Datapath {
    /// Loads the embedded object into the kernel. With `pins`, the maps are pinned there — or
    /// reopened, with everything in them, if an earlier agent left them — and links attached
    /// later are pinned there too. Nothing is attached yet.
    pub fn load(pins: Option<Pins>) -> Result<Datapath, DatapathError> {
        Datapath::load_for(pins, 0)
    }

    /// Like [`Datapath::load`], with the per-host maps sized for `hosts` hosts (with room to
    /// grow: twice that, rounded up to a power of two, at least 1024).
    pub fn load_for(pins: Option<Pins>, hosts: usize) -> Result<Datapath, DatapathError> {
        let capacity = (hosts.max(512) * 2).next_power_of_two() as u32;
        // eBPF-side logs are only for debugging: off unless the agent logs at debug level.
        let log_level: u8 = if tracing::enabled!(target: "imag_ebpf", tracing::Level::DEBUG) {
            4
        } else {
            0
        };
        let mut loader = EbpfLoader::new();
        loader.override_global(aya_log::LEVEL, &log_level, false);
        for map in ["HOSTS", "ACTIVITY"] {
            loader.map_max_entries(map, capacity.min(imag_common::MAX_HOSTS));
        }
        let mut adopted = false;
        let map_paths: Vec<(&str, std::path::PathBuf)> = match &pins {
            Some(pins) => {
                pins.prepare().map_err(|e| {
                    DatapathError::Pins(format!("preparing {}: {e}", pins.dir().display()))
                })?;
                adopted = pins.exists();
                for (name, key, value) in PINNED_MAPS {
                    if key > 0 {
                        let needed = if matches!(name, "HOSTS" | "ACTIVITY") {
                            hosts as u32
                        } else {
                            0
                        };
                        pins.check_map(name, key, value, needed)
                            .map_err(DatapathError::Pins)?;
                    }
                }
                PINNED_MAPS
                    .iter()
                    .map(|(name, _, _)| (*name, pins.map(name)))
                    .collect()
            }
            None => Vec::new(),
        };
        for (name, path) in &map_paths {
            loader.map_pin_path(name, path.as_path());
        }
        let mut ebpf = loader.load(OBJECT).map_err(DatapathError::Load)?;
        for name in [HOLD_PROGRAM, DELIVER_PROGRAM] {
            let program: &mut Xdp = program_mut(&mut ebpf, name)?;
            program
                .load()
                .map_err(|source| DatapathError::Program { name, source })?;
        }
        for name in [HOLD_TC_PROGRAM, TO_HOST_PROGRAM, FROM_HOST_PROGRAM] {
            let program: &mut SchedClassifier = program_mut(&mut ebpf, name)?;
            program
                .load()
                .map_err(|source| DatapathError::Program { name, source })?;
        }
        let program: &mut TracePoint = program_mut(&mut ebpf, TCP_STATE_PROGRAM)?;
        program.load().map_err(|source| DatapathError::Program {
            name: TCP_STATE_PROGRAM,
            source,
        })?;
        macro_rules! typed_map {
            ($ty:ident, $name:literal) => {
                $ty::try_from(take_map(&mut ebpf, $name)?)
                    .map_err(|source| DatapathError::Map { map: $name, source })?
            };
        }
        let hosts = typed_map!(HashMap, "HOSTS");
        let interfaces = typed_map!(HashMap, "INTERFACES");
        let stats = typed_map!(PerCpuArray, "STATS");
        let activity = typed_map!(PerCpuHashMap, "ACTIVITY");
        let idle_ignore = typed_map!(LpmTrie, "IDLE_IGNORE");
        let waiting_ports = typed_map!(HashMap, "WAITING_PORTS");
        if adopted {
            info!(dir = %pins.as_ref().expect("adopted implies pins").dir().display(),
                "adopting the datapath an earlier agent left");
        }
        Ok(Datapath {
            ebpf,
            pins,
            adopted,
            hosts,
            interfaces,
            stats,
            activity,
            idle_ignore,
            waiting_ports,
            links: BTreeMap::new(),
            host_links: StdHashMap::new(),
            waiters: StdHashMap::new(),
        })
    }

    /// Whether the maps were left by an earlier agent (and so hold its state).
    pub fn adopted(&self) -> bool {
        self.adopted
    }

    /// Takes the ring buffer of socket events (once) for the readiness watcher.
    pub fn take_sock_events(&mut self) -> Result<RingBuf<MapData>, DatapathError> {
        RingBuf::try_from(take_map(&mut self.ebpf, "SOCK_EVENTS")?).map_err(|source| {
            DatapathError::Map {
                map: "SOCK_EVENTS",
                source,
            }
        })
    }

    /// Takes the ring buffer of held frames (once) for the reader task.
    pub fn take_held_frames(&mut self) -> Result<RingBuf<MapData>, DatapathError> {
        RingBuf::try_from(take_map(&mut self.ebpf, "HELD_FRAMES")?).map_err(|source| {
            DatapathError::Map {
                map: "HELD_FRAMES",
                source,
            }
        })
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

    /// Attaches the holding program to `iface` (XDP or TC, see [`HookChoice`]) and tells the
    /// datapath the interface's MAC address. A link an earlier agent pinned for this very
    /// interface is adopted as it is.
    pub fn attach(
        &mut self,
        iface: &Interface,
        choice: HookChoice,
        flags: u32,
    ) -> Result<(), DatapathError> {
        self.set_interface(iface.index, iface.mac, flags)?;
        for existing in [
            format!("xdp-{}", iface.index),
            format!("tc-{}", iface.index),
        ] {
            if self.adopt_link(&existing) {
                info!(iface = %iface.name, "adopted the holding program an earlier agent attached");
                return Ok(());
            }
        }
        let modes: &[XdpMode] = match choice {
            HookChoice::Tc => return self.attach_tc_hold(iface),
            HookChoice::Auto if iface.is_virtual => return self.attach_tc_hold(iface),
            HookChoice::XdpNative => &[XdpMode::Driver],
            HookChoice::XdpGeneric => &[XdpMode::Skb],
            HookChoice::Auto => &[XdpMode::Driver, XdpMode::Skb],
        };
        let program: &mut Xdp = program_mut(&mut self.ebpf, HOLD_PROGRAM)?;
        let mut last_error = None;
        for &mode in modes {
            match program.attach_to_if_index(iface.index, mode) {
                Ok(link_id) => {
                    info!(iface = %iface.name, hook = mode_name(mode), "attached the holding program");
                    let link = fd_link(HOLD_PROGRAM, program.take_link(link_id))?;
                    return self.keep_link(format!("xdp-{}", iface.index), link);
                }
                Err(err) => {
                    if modes.len() > 1 {
                        warn!(iface = %iface.name, mode = mode_name(mode), error = %err,
                            "attaching XDP failed; trying the next mode");
                    }
                    last_error = Some(err);
                }
            }
        }
        Err(DatapathError::Attach {
            iface: iface.name.clone(),
            source: last_error.expect("at least one mode was tried"),
        })
    }

    fn attach_tc_hold(&mut self, iface: &Interface) -> Result<(), DatapathError> {
        let program: &mut SchedClassifier = program_mut(&mut self.ebpf, HOLD_TC_PROGRAM)?;
        let link_id = program
            .attach(&iface.name, TcAttachType::Ingress)
            .map_err(|source| DatapathError::Attach {
                iface: iface.name.clone(),
                source,
            })?;
        info!(iface = %iface.name, hook = "tc", "attached the holding program");
        let link = fd_link(HOLD_TC_PROGRAM, program.take_link(link_id))?;
        self.keep_link(format!("tc-{}", iface.index), link)
    }

    /// Attaches `imag_tcp_state` to the TCP state tracepoint (adopting a pinned one).
    pub fn attach_tcp_state(&mut self) -> Result<(), DatapathError> {
        const LINK: &str = "tcp-state";
        if self.adopt_link(LINK) {
            return Ok(());
        }
        check_tracepoint_layout().map_err(DatapathError::Pins)?;
        pins::ensure_tracefs().map_err(|e| DatapathError::Pins(e.to_string()))?;
        let attach_error = |source| DatapathError::AttachOther {
            program: TCP_STATE_PROGRAM,
            target: "sock/inet_sock_set_state".into(),
            source,
        };
        let program: &mut TracePoint = program_mut(&mut self.ebpf, TCP_STATE_PROGRAM)?;
        let link_id = program
            .attach("sock", "inet_sock_set_state")
            .map_err(attach_error)?;
        let link = fd_link(TCP_STATE_PROGRAM, program.take_link(link_id))?;
        self.keep_link(LINK.into(), link)
    }

    /// Attaches the TC programs to a warm host's own link (the host side of its container's
    /// veth), adopting pinned ones; replaces the links of an earlier container of the host.
    pub fn attach_host_link(
        &mut self,
        addr: Ipv4Addr,
        veth: &Interface,
    ) -> Result<(), DatapathError> {
        if self.host_links.get(&addr) == Some(&veth.index) {
            return Ok(());
        }
        self.detach_host_link(addr);
        for (program_name, attach_type, prefix) in [
            (TO_HOST_PROGRAM, TcAttachType::Egress, "to"),
            (FROM_HOST_PROGRAM, TcAttachType::Ingress, "from"),
        ] {
            let link_name = format!("{prefix}-{}", veth.index);
            if self.adopt_link(&link_name) {
                continue;
            }
            let attach_error = |source| DatapathError::AttachOther {
                program: program_name,
                target: veth.name.clone(),
                source,
            };
            let program: &mut SchedClassifier = program_mut(&mut self.ebpf, program_name)?;
            let link_id = program
                .attach(&veth.name, attach_type)
                .map_err(attach_error)?;
            let link = fd_link(program_name, program.take_link(link_id))?;
            self.keep_link(link_name, link)?;
        }
        self.host_links.insert(addr, veth.index);
        debug!(%addr, veth = %veth.name, "activity counting attached to the host's link");
        Ok(())
    }

    /// Whether a host's TC programs are attached to its link.
    pub fn has_host_link(&self, addr: Ipv4Addr) -> bool {
        self.host_links.contains_key(&addr)
    }

    /// Forgets (and unpins) the TC links of a host whose container's link is gone or going.
    pub fn detach_host_link(&mut self, addr: Ipv4Addr) {
        if let Some(index) = self.host_links.remove(&addr) {
            for prefix in ["to", "from"] {
                let name = format!("{prefix}-{index}");
                self.links.remove(&name);
                if let Some(pins) = &self.pins {
                    pins.remove_link(&name);
                }
            }
        }
    }

    /// Removes pinned links that are leftovers: links of host links whose interface no longer
    /// exists (the container is gone), and interface or tracepoint links that this agent neither
    /// adopted nor attached (an interface no longer named on the command line).
    pub fn prune_stale_links(&self) {
        let Some(pins) = &self.pins else { return };
        let Ok(entries) = std::fs::read_dir(pins.dir()) else {
            return;
        };
        for entry in entries.flatten() {
            let file = entry.file_name().to_string_lossy().into_owned();
            let Some(name) = file.strip_prefix("link-") else {
                continue;
            };
            let host_link_index = name
                .strip_prefix("to-")
                .or_else(|| name.strip_prefix("from-"))
                .and_then(|i| i.parse::<u32>().ok());
            let stale = match host_link_index {
                Some(index) => !interface_exists(index),
                None => !self.links.contains_key(name),
            };
            if stale {
                debug!(link = name, "removing a stale pinned link");
                pins.remove_link(name);
            }
        }
    }

    fn adopt_link(&mut self, name: &str) -> bool {
        let Some(link) = self.pins.as_ref().and_then(|p| p.open_link(name)) else {
            return false;
        };
        self.links.insert(name.to_string(), link);
        true
    }

    fn keep_link(&mut self, name: String, link: FdLink) -> Result<(), DatapathError> {
        let link = match &self.pins {
            Some(pins) => FdLink::from(
                link.pin(pins.link(&name))
                    .map_err(|e| DatapathError::Pins(format!("pinning link {name}: {e}")))?,
            ),
            None => link,
        };
        self.links.insert(name, link);
        Ok(())
    }

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
                map: "INTERFACES",
                source,
            })
    }

    /// Detaches every program and removes the pinned datapath: what `detach` and a clean exit
    /// do. Without pins, dropping the links detaches them.
    pub fn detach_all(&mut self) {
        let count = self.links.len();
        self.links.clear();
        self.host_links.clear();
        if let Some(pins) = &self.pins
            && let Err(err) = pins.remove_all()
        {
            warn!(dir = %pins.dir().display(), error = %err, "removing the pinned datapath failed");
        }
        info!(links = count, "detached the datapath");
    }

    /// Registers or updates a host: `hold` makes the datapath hold its packets, otherwise pass.
    pub fn set_host(
        &mut self,
        addr: Ipv4Addr,
        host_id: u32,
        hold: bool,
        flags: u8,
    ) -> Result<(), DatapathError> {
        let entry = HostEntry {
            mode: if hold { HOST_MODE_HOLD } else { HOST_MODE_PASS },
            flags,
            _reserved: [0; 2],
            host_id,
        };
        self.hosts
            .insert(addr_key(addr), entry, 0)
            .map_err(|source| DatapathError::Map {
                map: "HOSTS",
                source,
            })
    }

    /// Makes sure the host has an activity entry (zero for a new one; an adopted one keeps its
    /// counts).
    pub fn ensure_activity(&mut self, addr: Ipv4Addr) -> Result<(), DatapathError> {
        if self.activity.get(&addr_key(addr), 0).is_ok() {
            return Ok(());
        }
        self.write_activity(addr, HostActivity::default(), 0)
    }

    /// The host's activity summed over CPUs (the latest packet time over CPUs).
    pub fn activity(&self, addr: Ipv4Addr) -> Option<HostActivity> {
        let values = self.activity.get(&addr_key(addr), 0).ok()?;
        Some(values.iter().fold(HostActivity::default(), |mut sum, v| {
            sum.last_packet_ns = sum.last_packet_ns.max(v.last_packet_ns);
            sum.packets_in += v.packets_in;
            sum.bytes_in += v.bytes_in;
            sum.packets_out += v.packets_out;
            sum.bytes_out += v.bytes_out;
            sum.tcp_opened += v.tcp_opened;
            sum.tcp_closed += v.tcp_closed;
            sum.ignored_packets += v.ignored_packets;
            sum
        }))
    }

    /// Sets the host's open-connection count to `open` (from the container's own socket table),
    /// correcting drift from transitions the tracepoint missed (e.g. while no agent ran).
    pub fn reset_connections(&mut self, addr: Ipv4Addr, open: u64) -> Result<(), DatapathError> {
        let mut base = self.activity(addr).unwrap_or_default();
        base.tcp_opened = open;
        base.tcp_closed = 0;
        self.write_activity(addr, base, 0)
    }

    fn write_activity(
        &mut self,
        addr: Ipv4Addr,
        first: HostActivity,
        _flags: u64,
    ) -> Result<(), DatapathError> {
        let cpus = aya::util::nr_cpus()
            .map_err(|(what, e)| DatapathError::Pins(format!("{what}: {e}")))?;
        let mut values = vec![HostActivity::default(); cpus];
        values[0] = first;
        let values =
            PerCpuValues::try_from(values).map_err(|e| DatapathError::Pins(e.to_string()))?;
        self.activity
            .insert(addr_key(addr), values, 0)
            .map_err(|source| DatapathError::Map {
                map: "ACTIVITY",
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
                map: "IDLE_IGNORE",
                source,
            })
    }

    /// Asks for LISTEN events on `port` (counted: several wakes may wait on one port).
    pub fn watch_port(&mut self, port: u16) {
        let count = self.waiters.entry(port).or_default();
        *count += 1;
        if let Err(err) = self.waiting_ports.insert(u32::from(port), *count, 0) {
            debug!(port, error = %err, "watching a port failed; readiness falls back to polling");
        }
    }

    pub fn unwatch_port(&mut self, port: u16) {
        let Some(count) = self.waiters.get_mut(&port) else {
            return;
        };
        *count -= 1;
        if *count == 0 {
            self.waiters.remove(&port);
            let _ = self.waiting_ports.remove(&u32::from(port));
        }
    }

    /// Packet counters summed over CPUs, indexed like `imag_common::stat`.
    pub fn stats(&self) -> [u64; stat::COUNT as usize] {
        let mut totals = [0u64; stat::COUNT as usize];
        for (i, total) in totals.iter_mut().enumerate() {
            if let Ok(values) = self.stats.get(&(i as u32), 0) {
                *total = values.iter().sum();
            }
        }
        totals
    }

    /// Runs the holding program — `imag_hold` (XDP) or `imag_hold_tc` (TC) — once on a crafted
    /// frame (BPF_PROG_TEST_RUN) as if it arrived on `ifindex`, with all its map and ring buffer
    /// effects. Returns what the program decided and the frame as it left it. For testing the
    /// datapath without traffic.
    pub fn run_hold_program(
        &mut self,
        hook: TestHook,
        frame: &[u8],
        ifindex: u32,
    ) -> Result<(TestVerdict, Vec<u8>), DatapathError> {
        let mut out = vec![0u8; frame.len() + 256];
        let (name, ctx): (&'static str, Vec<u8>) = match hook {
            TestHook::Xdp => (HOLD_PROGRAM, xdp_md_for(ifindex, frame.len()).to_vec()),
            TestHook::Tc => (HOLD_TC_PROGRAM, sk_buff_for(ifindex).to_vec()),
        };
        let opts = TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut out),
            ctx_in: Some(&ctx),
            repeat: 1,
            ..TestRunOptions::new()
        };
        let run_error = |source| DatapathError::Program { name, source };
        let result = match hook {
            TestHook::Xdp => program_mut::<Xdp>(&mut self.ebpf, name)?.test_run(opts),
            TestHook::Tc => program_mut::<SchedClassifier>(&mut self.ebpf, name)?.test_run(opts),
        }
        .map_err(run_error)?;
        out.truncate(result.data_size_out as usize);
        let verdict = match (hook, result.return_value) {
            (TestHook::Xdp, 1) | (TestHook::Tc, 2) => TestVerdict::Drop,
            (TestHook::Xdp, 2) | (TestHook::Tc, 0) => TestVerdict::Pass,
            (TestHook::Xdp, 3) | (TestHook::Tc, 7) => TestVerdict::Bounce,
            (_, other) => TestVerdict::Other(other),
        };
        Ok((verdict, out))
    }

    /// Injects `frame` into the stack as if it had just arrived on `ifindex`.
    ///
    /// This runs the `imag_deliver` program (which returns `XDP_PASS`) through
    /// `BPF_PROG_TEST_RUN` in live-frames mode: the kernel builds an skb from the frame and
    /// passes it up from that interface, so routing, netfilter and conntrack treat it exactly like
    /// the original packet. `imag_hold` on that interface does not see it again.
    pub fn deliver(&self, ifindex: u32, frame: &[u8]) -> Result<(), DatapathError> {
        let program: &Xdp = self
            .ebpf
            .program(DELIVER_PROGRAM)
            .ok_or(DatapathError::Missing {
                what: "program",
                name: DELIVER_PROGRAM,
            })?
            .try_into()
            .map_err(|source| DatapathError::Program {
                name: DELIVER_PROGRAM,
                source,
            })?;
        let ctx = xdp_md_for(ifindex, frame.len());
        let opts = TestRunOptions {
            data_in: Some(frame),
            ctx_in: Some(&ctx),
            repeat: 1,
            attrs: TestRunAttrs::new().xdp_live_frames(1),
            ..TestRunOptions::new()
        };
        program
            .test_run(opts)
            .map(|_| ())
            .map_err(|source| DatapathError::Deliver { ifindex, source })
    }
}

fn interface_exists(index: u32) -> bool {
    let mut name = [0 as libc::c_char; libc::IF_NAMESIZE];
    // SAFETY: name has room for IF_NAMESIZE bytes.
    !unsafe { libc::if_indextoname(index, name.as_mut_ptr()) }.is_null()
}

/// Turns a program's link into a plain fd link (which can be pinned).
fn fd_link<L>(program: &'static str, link: Result<L, ProgramError>) -> Result<FdLink, DatapathError>
where
    FdLink: TryFrom<L, Error = aya::programs::links::LinkError>,
{
    let link = link.map_err(|source| DatapathError::Program {
        name: program,
        source,
    })?;
    FdLink::try_from(link)
        .map_err(|e| DatapathError::Pins(format!("{program}: link is not a bpf_link ({e})")))
}

fn program_mut<'a, T>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut T, DatapathError>
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

/// Checks that the running kernel's inet_sock_set_state record has the layout `imag_tcp_state`
/// reads (it is stable ABI, but a wrong offset would silently miscount).
fn check_tracepoint_layout() -> Result<(), String> {
    let format = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"]
        .iter()
        .find_map(|dir| {
            std::fs::read_to_string(format!("{dir}/events/sock/inet_sock_set_state/format")).ok()
        });
    let Some(format) = format else {
        // tracefs not mounted yet: ensure_tracefs mounts it and aya's attach reads it.
        return Ok(());
    };
    for (field, offset) in [
        ("int oldstate;", 16),
        ("int newstate;", 20),
        ("__u16 sport;", 24),
        ("__u16 protocol;", 30),
        ("__u8 saddr[4];", 32),
        ("__u8 daddr[4];", 36),
    ] {
        let expected = format!("{field}\toffset:{offset};");
        if !format.contains(&expected) {
            return Err(format!(
                "this kernel's sock/inet_sock_set_state tracepoint has another layout (field \
                 {field} not at offset {offset}); imag cannot count TCP connections on it"
            ));
        }
    }
    Ok(())
}

fn take_map(ebpf: &mut Ebpf, name: &'static str) -> Result<aya::maps::Map, DatapathError> {
    ebpf.take_map(name)
        .ok_or(DatapathError::Missing { what: "map", name })
}

fn mode_name(mode: XdpMode) -> &'static str {
    match mode {
        XdpMode::Driver => "xdp-native",
        XdpMode::Skb => "xdp-generic",
        XdpMode::Hardware => "hardware",
        XdpMode::Default => "default",
    }
}

/// Which holding program [`Datapath::run_hold_program`] runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TestHook {
    Xdp,
    Tc,
}

/// What a holding program decided, the same for XDP and TC.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TestVerdict {
    /// XDP_PASS / TC_ACT_OK.
    Pass,
    /// XDP_DROP / TC_ACT_SHOT.
    Drop,
    /// XDP_TX / TC_ACT_REDIRECT back out of the interface.
    Bounce,
    Other(u32),
}

/// A `struct __sk_buff` for BPF_PROG_TEST_RUN of a TC program: everything zero but
/// `ingress_ifindex` (offset 36), which becomes the skb's `skb_iif`.
fn sk_buff_for(ingress_ifindex: u32) -> [u8; 192] {
    let mut ctx = [0u8; 192];
    ctx[36..40].copy_from_slice(&ingress_ifindex.to_ne_bytes());
    ctx
}

/// A `struct xdp_md` for BPF_PROG_TEST_RUN: the frame starts at offset 0, has no metadata, and
/// arrived on `ifindex` (queue 0).
fn xdp_md_for(ifindex: u32, len: usize) -> [u8; 24] {
    let fields: [u32; 6] = [0, len as u32, 0, ifindex, 0, 0];
    let mut ctx = [0u8; 24];
    for (chunk, field) in ctx.chunks_exact_mut(4).zip(fields) {
        chunk.copy_from_slice(&field.to_ne_bytes());
    }
    ctx
}
