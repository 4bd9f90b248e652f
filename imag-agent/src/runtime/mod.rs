//! The container runtime as the orchestrator needs it: make a host's container run, put it to
//! sleep, and say what state it is in. [`docker::Docker`] implements it with bollard; unit tests
//! of the orchestrator use a fake.

pub mod docker;
pub mod freezer;
mod tier;

pub use tier::{Tier, UnknownTier};

use std::{collections::BTreeMap, future::Future, net::Ipv4Addr};

use serde::Serialize;

use crate::config::HostConfig;

/// Labels on every container imag manages, so that a restarted agent finds its containers.
pub const LABEL_MANAGED: &str = "imag.managed";
pub const LABEL_NETWORK: &str = "imag.network";
pub const LABEL_HOST: &str = "imag.host";
/// The JSON of the [`ContainerSpec`] the container was created from: when the configuration
/// changes, the agent recreates the container instead of starting a stale one.
pub const LABEL_SPEC: &str = "imag.spec";

/// Everything needed to create one host's container.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ContainerSpec {
    /// Container name: `<network>-<host>`.
    pub name: String,
    pub host: String,
    pub network: String,
    pub address: Ipv4Addr,
    pub image: String,
    pub command: Option<Vec<String>>,
    pub env: BTreeMap<String, String>,
}

impl ContainerSpec {
    pub fn for_host(network: &str, host: &HostConfig) -> ContainerSpec {
        ContainerSpec {
            name: format!("{network}-{}", host.name),
            host: host.name.clone(),
            network: network.to_string(),
            address: host.address,
            image: host.image.clone(),
            command: host.command.clone(),
            env: host.env.clone(),
        }
    }

    /// The value of the spec label.
    pub fn fingerprint(&self) -> String {
        serde_json::to_string(self).expect("a spec always serializes")
    }
}

/// What the engine says about a host's container.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Observed {
    Absent,
    /// Exists; `current` is false when it was created from a different spec.
    Present {
        status: ContainerStatus,
        current: bool,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ContainerStatus {
    Running,
    Paused,
    /// Created, exited, or dead: not running.
    Stopped,
    /// Being restarted or removed by someone else.
    Transitional,
}

/// A container that the engine reports running, with the engine's share of the wake timed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Started {
    /// The tier the container actually came from (the hint may have been stale).
    pub from: Tier,
    /// CLOCK_MONOTONIC ns when the engine was asked to create, start or unpause.
    pub requested_ns: u64,
    /// CLOCK_MONOTONIC ns when the engine reported the container running.
    pub running_ns: u64,
}

/// What the engine says about a running container.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunningInfo {
    /// The PID (in the host's PID namespace) of the container's first process: its
    /// `/proc/<pid>/net` shows the container's network namespace.
    pub pid: u32,
    /// The MAC address of its interface on the imag network.
    pub mac: Option<[u8; 6]>,
}

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error(
        "image {image:?} is not on this host and no registry can provide it: build or load it \
         (docker build -t {image} … / docker load)"
    )]
    ImageMissing { image: String },
    #[error(
        "address {address} is already taken on Docker network {network:?} by a container imag \
         does not manage: remove that container or change the host's address"
    )]
    AddressInUse { address: Ipv4Addr, network: String },
    #[error("the container engine refused to {action} {container}: {message}")]
    Engine {
        action: &'static str,
        container: String,
        message: String,
    },
    #[error(
        "cannot reach the Docker engine ({0}): is dockerd running, and is /var/run/docker.sock \
         readable by this user?"
    )]
    Unreachable(String),
}

/// What the orchestrator asks of a container engine.
pub trait ContainerRuntime: Clone + Send + Sync + 'static {
    /// Makes the host's container run, starting from the tier it is believed to be in (and
    /// recovering if that belief is stale).
    fn wake(
        &self,
        spec: &ContainerSpec,
        from: Tier,
    ) -> impl Future<Output = Result<Started, RuntimeError>> + Send;

    /// The running container's process and link, or why it is not running (exit code, engine
    /// error). Used while waiting for readiness, to fail fast when the container exits.
    fn running_info(
        &self,
        spec: &ContainerSpec,
    ) -> impl Future<Output = Result<RunningInfo, String>> + Send;

    /// Puts a running container into `tier`.
    fn sleep(
        &self,
        spec: &ContainerSpec,
        to: Tier,
    ) -> impl Future<Output = Result<(), RuntimeError>> + Send;

    /// What the engine knows about the host's container.
    fn observe(
        &self,
        spec: &ContainerSpec,
    ) -> impl Future<Output = Result<Observed, RuntimeError>> + Send;

    /// Whether a fast wake left the engine's own view of the container stale (see
    /// [`freezer`]), to be repaired with [`ContainerRuntime::settle`] at a quiet moment.
    fn unsettled(&self, spec: &ContainerSpec) -> bool;

    /// Brings the engine's view of a container in line with reality after a fast wake.
    fn settle(&self, spec: &ContainerSpec)
    -> impl Future<Output = Result<(), RuntimeError>> + Send;
}
