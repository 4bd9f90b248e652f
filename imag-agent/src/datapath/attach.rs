//! Hooking the loaded programs into the kernel, and letting go of them: the holding program into
//! the interfaces clients' packets arrive on (XDP or TC, see [`HookChoice`]), the TC programs into
//! each warm host's own link, `imag_tcp_state` into its tracepoint. With pins, every link is
//! pinned so that it outlives the agent, and a restarted agent adopts what it finds.
//!
//! Neighbours: [`super::load`] loads the programs; [`super::pins`] names the link pins.

use std::net::Ipv4Addr;

use aya::programs::{
    ProgramError, SchedClassifier, TracePoint, Xdp, links::FdLink, tc::TcAttachType, xdp::XdpMode,
};
use imag_common::programs;
use tracing::{debug, info, warn};

use super::{Datapath, DatapathError, load::program_mut, pins};
use crate::interfaces::Interface;

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

impl Datapath {
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
        let program: &mut Xdp = program_mut(&mut self.ebpf, programs::HOLD)?;
        let mut last_error = None;
        for &mode in modes {
            match program.attach_to_if_index(iface.index, mode) {
                Ok(link_id) => {
                    info!(iface = %iface.name, hook = mode_name(mode), "attached the holding program");
                    let link = fd_link(programs::HOLD, program.take_link(link_id))?;
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
        let program: &mut SchedClassifier = program_mut(&mut self.ebpf, programs::HOLD_TC)?;
        let link_id = program
            .attach(&iface.name, TcAttachType::Ingress)
            .map_err(|source| DatapathError::Attach {
                iface: iface.name.clone(),
                source,
            })?;
        info!(iface = %iface.name, hook = "tc", "attached the holding program");
        let link = fd_link(programs::HOLD_TC, program.take_link(link_id))?;
        self.keep_link(format!("tc-{}", iface.index), link)
    }

    /// Attaches `imag_tcp_state` to the TCP state tracepoint (adopting a pinned one).
    pub fn attach_tcp_state(&mut self) -> Result<(), DatapathError> {
        const LINK: &str = "tcp-state";
        if self.adopt_link(LINK) {
            return Ok(());
        }
        check_tracepoint_layout()?;
        pins::ensure_tracefs()?;
        let attach_error = |source| DatapathError::AttachOther {
            program: programs::TCP_STATE,
            target: "sock/inet_sock_set_state".into(),
            source,
        };
        let program: &mut TracePoint = program_mut(&mut self.ebpf, programs::TCP_STATE)?;
        let link_id = program
            .attach("sock", "inet_sock_set_state")
            .map_err(attach_error)?;
        let link = fd_link(programs::TCP_STATE, program.take_link(link_id))?;
        self.keep_link(LINK.into(), link)
    }

    /// Attaches the TC programs to a warm host's own link (the host side of its container's
    /// veth), adopting pinned ones; replaces the links of an earlier container of the host. The
    /// link's owner (`HOST_LINKS`: the host's address, the container's MAC when known) is
    /// written here, so that `imag_from_host` holds the container to it from its first packet;
    /// the attach itself is queued to the host-link thread ([`super::host_links`]), since it
    /// waits on the kernel's RTNL lock.
    pub fn attach_host_link(
        &mut self,
        addr: Ipv4Addr,
        veth: &Interface,
        container_mac: Option<[u8; 6]>,
    ) -> Result<(), DatapathError> {
        if self.host_links.placed(addr) == Some(veth.index) {
            return self.set_link_owner(veth.index, addr, container_mac);
        }
        self.detach_host_link(addr);
        self.set_link_owner(veth.index, addr, container_mac)?;
        self.host_links.queue_attach(addr, veth);
        Ok(())
    }

    /// Whether a host's TC programs are attached to its link (or on their way there).
    pub fn has_host_link(&self, addr: Ipv4Addr) -> bool {
        self.host_links.placed(addr).is_some()
    }

    /// Forgets the link's owner of a host whose container's link is gone or going, and queues
    /// letting go of (and unpinning) its TC links.
    pub fn detach_host_link(&mut self, addr: Ipv4Addr) {
        if let Some(index) = self.host_links.queue_detach(addr) {
            self.remove_link_owner(index);
        }
    }

    /// Removes pinned links that are leftovers: links of host links whose interface no longer
    /// exists (the container is gone), and interface or tracepoint links that this agent neither
    /// adopted nor attached (an interface no longer named on the command line).
    pub fn prune_stale_links(&mut self) {
        for index in self.stale_link_owners(interface_exists) {
            self.remove_link_owner(index);
        }
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

    /// Detaches every program and removes the pinned datapath: what `detach` and a clean exit
    /// do. Without pins, dropping the links detaches them.
    pub fn detach_all(&mut self) {
        let count = self.links.len() + self.host_links.clear();
        self.links.clear();
        if let Some(pins) = &self.pins
            && let Err(err) = pins.remove_all()
        {
            warn!(dir = %pins.dir().display(), error = %err, "removing the pinned datapath failed");
        }
        info!(links = count, "detached the datapath");
    }

    fn adopt_link(&mut self, name: &str) -> bool {
        let Some(link) = self.pins.as_ref().and_then(|p| p.open_link(name)) else {
            return false;
        };
        self.links.insert(name.to_string(), link);
        true
    }

    fn keep_link(&mut self, name: String, link: FdLink) -> Result<(), DatapathError> {
        let link = pins::pin_if_pinning(self.pins.as_ref(), &name, link)?;
        self.links.insert(name, link);
        Ok(())
    }
}

pub(super) fn interface_exists(index: u32) -> bool {
    crate::interfaces::name_of_index(index).is_some()
}

/// Turns a program's link into a plain fd link (which can be pinned).
pub(super) fn fd_link<L>(
    program: &'static str,
    link: Result<L, ProgramError>,
) -> Result<FdLink, DatapathError>
where
    FdLink: TryFrom<L, Error = aya::programs::links::LinkError>,
{
    let link = link.map_err(|source| DatapathError::Program {
        name: program,
        source,
    })?;
    FdLink::try_from(link).map_err(|source| DatapathError::NotBpfLink { program, source })
}

/// Checks that the running kernel's `inet_sock_set_state` record has the layout `imag_tcp_state`
/// reads (it is stable ABI, but a wrong offset would silently miscount).
fn check_tracepoint_layout() -> Result<(), DatapathError> {
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
        if !format.contains(&format!("{field}\toffset:{offset};")) {
            return Err(DatapathError::TracepointLayout { field, offset });
        }
    }
    Ok(())
}

fn mode_name(mode: XdpMode) -> &'static str {
    match mode {
        XdpMode::Driver => "xdp-native",
        XdpMode::Skb => "xdp-generic",
        XdpMode::Hardware => "hardware",
        XdpMode::Default => "default",
    }
}
