//! The kernel side as the agent sees it: loading the embedded eBPF object, attaching `imag_hold`
//! to interfaces, typed access to its maps, and re-delivery of held frames.
//!
//! Neighbours: `orchestrator` owns a [`Datapath`] and flips hosts between hold and pass;
//! [`ring`] turns ring buffer records into [`ring::HeldFrame`]s for it.

pub mod ring;

use std::{collections::BTreeMap, net::Ipv4Addr};

use aya::{
    Ebpf, EbpfLoader,
    maps::{HashMap, MapData, PerCpuArray, RingBuf},
    programs::{
        ProgramError, TestRun, TestRunAttrs, TestRunOptions, Xdp,
        xdp::{XdpLinkId, XdpMode},
    },
};
use imag_common::{HOST_MODE_HOLD, HOST_MODE_PASS, HostEntry, InterfaceEntry, stat};
use tracing::{debug, info, warn};

use crate::interfaces::Interface;

/// The compiled eBPF object, built by build.rs from the `imag-ebpf` crate.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/imag"));

const HOLD_PROGRAM: &str = "imag_hold";
const DELIVER_PROGRAM: &str = "imag_deliver";

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
        "attaching XDP to {iface} failed in every mode; is another XDP program attached? (see \
         `ip link show {iface}`)"
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
}

/// How to attach XDP to an interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum XdpModeChoice {
    /// Native (driver) mode on physical NICs, falling back to generic mode; generic mode on
    /// virtual interfaces (veth, bridges), where native mode cannot answer ARP or ping.
    Auto,
    /// Native mode only.
    Driver,
    /// Generic (skb) mode only.
    Generic,
}

/// The loaded programs and maps.
pub struct Datapath {
    ebpf: Ebpf,
    hosts: HashMap<MapData, u32, HostEntry>,
    interfaces: HashMap<MapData, u32, InterfaceEntry>,
    stats: PerCpuArray<MapData, u64>,
    attached: BTreeMap<String, XdpLinkId>,
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
    /// Loads the embedded object into the kernel. Nothing is attached yet.
    pub fn load() -> Result<Datapath, DatapathError> {
        // eBPF-side logs are only for debugging: off unless the agent logs at debug level.
        let log_level: u8 = if tracing::enabled!(target: "imag_ebpf", tracing::Level::DEBUG) {
            4
        } else {
            0
        };
        let mut ebpf = EbpfLoader::new()
            .override_global(aya_log::LEVEL, &log_level, false)
            .load(OBJECT)
            .map_err(DatapathError::Load)?;
        for name in [HOLD_PROGRAM, DELIVER_PROGRAM] {
            let program: &mut Xdp = ebpf
                .program_mut(name)
                .ok_or(DatapathError::Missing {
                    what: "program",
                    name,
                })?
                .try_into()
                .map_err(|source| DatapathError::Program { name, source })?;
            program
                .load()
                .map_err(|source| DatapathError::Program { name, source })?;
        }
        let hosts = HashMap::try_from(take_map(&mut ebpf, "HOSTS")?).map_err(|source| {
            DatapathError::Map {
                map: "HOSTS",
                source,
            }
        })?;
        let interfaces =
            HashMap::try_from(take_map(&mut ebpf, "INTERFACES")?).map_err(|source| {
                DatapathError::Map {
                    map: "INTERFACES",
                    source,
                }
            })?;
        let stats = PerCpuArray::try_from(take_map(&mut ebpf, "STATS")?).map_err(|source| {
            DatapathError::Map {
                map: "STATS",
                source,
            }
        })?;
        Ok(Datapath {
            ebpf,
            hosts,
            interfaces,
            stats,
            attached: BTreeMap::new(),
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

    /// Attaches `imag_hold` to `iface` and tells the datapath the interface's MAC address.
    pub fn attach(
        &mut self,
        iface: &Interface,
        choice: XdpModeChoice,
        flags: u32,
    ) -> Result<(), DatapathError> {
        self.set_interface(iface.index, iface.mac, flags)?;
        let program = self.hold_program()?;
        let modes: &[XdpMode] = match choice {
            XdpModeChoice::Driver => &[XdpMode::Driver],
            XdpModeChoice::Generic => &[XdpMode::Skb],
            XdpModeChoice::Auto if iface.is_virtual => &[XdpMode::Skb],
            XdpModeChoice::Auto => &[XdpMode::Driver, XdpMode::Skb],
        };
        let mut last_error = None;
        for &mode in modes {
            match program.attach_to_if_index(iface.index, mode) {
                Ok(link) => {
                    info!(iface = %iface.name, mode = mode_name(mode), "attached XDP program");
                    self.attached.insert(iface.name.clone(), link);
                    return Ok(());
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

    /// Detaches `imag_hold` from every interface it was attached to.
    pub fn detach_all(&mut self) {
        let attached = std::mem::take(&mut self.attached);
        let Ok(program) = self.hold_program() else {
            return;
        };
        for (iface, link) in attached {
            match program.detach(link) {
                Ok(()) => info!(%iface, "detached XDP program"),
                Err(err) => warn!(%iface, error = %err, "detaching XDP program failed"),
            }
        }
    }

    fn hold_program(&mut self) -> Result<&mut Xdp, DatapathError> {
        self.ebpf
            .program_mut(HOLD_PROGRAM)
            .ok_or(DatapathError::Missing {
                what: "program",
                name: HOLD_PROGRAM,
            })?
            .try_into()
            .map_err(|source| DatapathError::Program {
                name: HOLD_PROGRAM,
                source,
            })
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

    /// The datapath's entry for `addr`, if any.
    pub fn host(&self, addr: Ipv4Addr) -> Option<HostEntry> {
        self.hosts.get(&addr_key(addr), 0).ok()
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

    /// Runs `imag_hold` once on a crafted frame (BPF_PROG_TEST_RUN) as if it arrived on
    /// `ifindex`, with all its map and ring buffer effects. Returns the verdict (`XDP_DROP` = 1,
    /// `XDP_PASS` = 2, `XDP_TX` = 3) and the frame as the program left it. For testing the
    /// datapath without traffic.
    pub fn run_hold_program(
        &mut self,
        frame: &[u8],
        ifindex: u32,
    ) -> Result<(u32, Vec<u8>), DatapathError> {
        let program = self.hold_program()?;
        let ctx = xdp_md_for(ifindex, frame.len());
        let mut out = vec![0u8; frame.len() + 256];
        let opts = TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut out),
            ctx_in: Some(&ctx),
            repeat: 1,
            ..TestRunOptions::new()
        };
        let result = program
            .test_run(opts)
            .map_err(|source| DatapathError::Program {
                name: HOLD_PROGRAM,
                source,
            })?;
        out.truncate(result.data_size_out as usize);
        Ok((result.return_value, out))
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

fn take_map(ebpf: &mut Ebpf, name: &'static str) -> Result<aya::maps::Map, DatapathError> {
    ebpf.take_map(name)
        .ok_or(DatapathError::Missing { what: "map", name })
}

fn mode_name(mode: XdpMode) -> &'static str {
    match mode {
        XdpMode::Driver => "driver",
        XdpMode::Skb => "generic",
        XdpMode::Hardware => "hardware",
        XdpMode::Default => "default",
    }
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
