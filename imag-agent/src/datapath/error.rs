//! What can go wrong between the agent and the kernel, each variant naming the map, program,
//! interface or path involved and, where there is one, the fix. Pin-directory problems come from
//! [`super::pins::PinsError`].

use aya::programs::{ProgramError, links::LinkError};

use super::pins::PinsError;

#[derive(Debug, thiserror::Error)]
pub enum DatapathError {
    #[error(
        "loading the eBPF programs into the kernel failed (imag needs root, i.e. CAP_BPF and \
         CAP_NET_ADMIN, and a kernel with BPF, BTF, XDP and TCX support: Linux 6.6 or newer)"
    )]
    Load(#[source] aya::EbpfError),
    #[error("the eBPF object has no {what} named {name}: the agent binary is broken, rebuild it")]
    Missing {
        what: &'static str,
        name: &'static str,
    },
    #[error(
        "the datapath has no entry for host {addr}: its activity was asked for before the host \
         was set (a bug in the agent)"
    )]
    UnknownHost { addr: std::net::Ipv4Addr },
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
    #[error("attaching {program} to {target} failed")]
    AttachOther {
        program: &'static str,
        target: String,
        #[source]
        source: ProgramError,
    },
    #[error(
        "the kernel attached {program} through a link that is not a bpf_link, so it cannot be \
         pinned: imag needs Linux 6.6 or newer"
    )]
    NotBpfLink {
        program: &'static str,
        #[source]
        source: LinkError,
    },
    #[error(
        "this kernel's sock/inet_sock_set_state tracepoint has another layout (field `{field}` \
         not at offset {offset}); imag cannot count TCP connections on it"
    )]
    TracepointLayout { field: &'static str, offset: usize },
    #[error("eBPF map {map}: {source}")]
    Map {
        map: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
    #[error(
        "reading the possible CPUs from {path} failed (per-CPU map values need their number): is \
         /sys mounted?"
    )]
    PossibleCpus {
        path: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "re-delivering a held frame (held on ifindex {ifindex}) through live frames failed: {source}"
    )]
    Deliver {
        ifindex: u32,
        #[source]
        source: ProgramError,
    },
    #[error(
        "re-delivering a held frame (held on ifindex {ifindex}) through the raw IP socket failed: {source}"
    )]
    DeliverRaw {
        ifindex: u32,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "starting the thread that attaches the TC programs to hosts' links failed (is the \
         agent out of threads or memory?)"
    )]
    HostLinkThread(#[source] std::io::Error),
    #[error(transparent)]
    Pins(#[from] PinsError),
}
