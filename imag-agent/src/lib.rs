//! imag's agent as a library: the `imag-agent` binary is a thin CLI over it, and the integration
//! tests drive its datapath directly.
//!
//! A wake, module by module: [`datapath`] holds a packet and hands it over through its ring buffer;
//! [`orchestrator`] decides (its [`orchestrator::state`] machine) and asks [`runtime`] to run the
//! container, [`readiness`] to wait for it, and [`datapath`] to re-deliver the packet, after
//! [`packets`] fixed its checksum. [`config`] reads the operator's file; [`firewall`] and
//! [`interfaces`] deal with the host's own network; [`agent`] wires it all together.

pub mod agent;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod datapath;
pub mod dns;
pub mod firewall;
pub mod interfaces;
pub mod ops;
pub mod orchestrator;
pub mod packets;
pub mod procnet;
pub mod readiness;
pub mod report;
pub mod runtime;
