//! The container engine, as everything else in the agent sees it: one trait,
//! [`ContainerRuntime`], covering all the agent asks of an engine — connect, the network that
//! holds the imaginary hosts (ensure, remove), what exists (one container, or all of a network in
//! one call), a stream of container exits, and per host wake, sleep and the running container's
//! process and link. Fast thaw (thawing a paused container's cgroup freezer directly, see
//! [`freezer`]) is an optional capability: the trait's `unsettled`/`settle` default to "nothing
//! to repair", and only an engine that thaws behind its own back overrides them.
//!
//! [`docker::Docker`] implements the trait with bollard; `fake::FakeRuntime` (unit tests and the
//! `test-helpers` feature) is an in-memory engine that records calls and plays scripted outcomes,
//! for unit tests of the code above the seam. [`Engine`] names the implementations: a second
//! engine is one file implementing the trait plus one [`Engine`] variant (`[agent] engine`).
//! [`Tier`] is the one vocabulary for where a sleeping host's container is.

pub mod docker;
mod engine;
#[cfg(any(test, feature = "test-helpers"))]
pub mod fake;
pub mod freezer;
pub mod memory;
mod options;
mod tier;

use std::{
    collections::{BTreeMap, HashMap},
    future::Future,
    net::Ipv4Addr,
};

pub use engine::{Engine, UnknownEngine};
use futures::stream::BoxStream;
use ipnet::Ipv4Net;
pub use memory::PagedOut;
pub use options::{ContainerOptions, Health, Healthcheck, Mount, MountSource};
use serde::Serialize;
pub use tier::{Tier, UnknownTier};

/// Labels on every container imag manages, so that a restarted agent finds its containers.
pub const LABEL_MANAGED: &str = "imag.managed";
pub const LABEL_NETWORK: &str = "imag.network";
pub const LABEL_HOST: &str = "imag.host";
/// The JSON of the [`ContainerSpec`] the container was created from: when the configuration
/// changes, the agent recreates the container instead of starting a stale one.
pub const LABEL_SPEC: &str = "imag.spec";

/// Between the network's and the host's name in a container's name. Neither name may contain
/// it and a network name may not end in '-' (config validation), so that `<network>--<host>`
/// splits one way only (with a single '-', network "a" + host "b-c" and network "a-b" + host
/// "c" were the same container).
pub const NAME_SEPARATOR: &str = "--";

/// The name of host `host`'s container on network `network`. Names are for people: imag
/// recognises its containers by their labels ([`LABEL_NETWORK`], [`LABEL_HOST`]).
pub fn container_name(network: &str, host: &str) -> String {
    format!("{network}{NAME_SEPARATOR}{host}")
}

/// The name the same container had before names were unambiguous (`<network>-<host>`): a
/// container found by its labels under this name is renamed (see `docker/identity.rs`).
pub fn legacy_container_name(network: &str, host: &str) -> String {
    format!("{network}-{host}")
}

/// Everything needed to create one host's container.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ContainerSpec {
    /// Container name: [`container_name`], `<network>--<host>`.
    pub name: String,
    pub host: String,
    pub network: String,
    pub address: Ipv4Addr,
    pub image: String,
    pub command: Option<Vec<String>>,
    pub env: BTreeMap<String, String>,
    /// `NAME:ADDRESS` lines for the container's /etc/hosts (compose's `extra_hosts`). Left out
    /// of the fingerprint when empty, so that containers created before it existed stay current.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub extra_hosts: Vec<String>,
    /// Everything else the container asks of the engine (flattened, and absent from the JSON
    /// while unset, so that the fingerprint of a spec without options never changes).
    #[serde(flatten)]
    pub options: ContainerOptions,
    /// Read a paged-out container's memory back as it wakes (`swap_prefetch`, with
    /// `swap_after`). How it sleeps, not what the container is: not in the fingerprint.
    #[serde(skip)]
    pub swap_prefetch: bool,
}

/// The network every host's container joins: a bridge network on the imaginary subnet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetworkSpec {
    /// The engine's name for the network.
    pub name: String,
    /// The Linux bridge interface behind it.
    pub bridge: String,
    pub subnet: Ipv4Net,
    /// The bridge's own address.
    pub gateway: Ipv4Addr,
}

impl ContainerSpec {
    /// The value of the spec label. The name is identity, not configuration (it follows from
    /// network and host): it stays in the JSON in its old `<network>-<host>` form, so that
    /// containers made before names became unambiguous are still current (and only renamed).
    pub fn fingerprint(&self) -> String {
        let mut legacy = self.clone();
        legacy.name = legacy_container_name(&self.network, &self.host);
        serde_json::to_string(&legacy).expect("a spec always serializes")
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
    /// `CLOCK_MONOTONIC` ns when the engine was asked to create, start or unpause.
    pub requested_ns: u64,
    /// `CLOCK_MONOTONIC` ns when the engine reported the container running.
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

/// Why a container is not running when it should be (a wake is waiting for readiness).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NotRunning {
    /// The engine no longer knows the container.
    #[error("container disappeared: {0}")]
    Gone(String),
    /// The container stopped: the engine's status, its exit code and the engine's error, if any.
    #[error(
        "container exited before it was ready (status {status}, exit code {code}{})",
        error.as_ref().map_or(String::new(), |e| format!(", error: {e}"))
    )]
    Exited {
        status: String,
        code: i64,
        error: Option<String>,
    },
}

/// What the engine reports on its own about the containers of a network (imag's own actions
/// included: an event is a reason to look again, not a verdict).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RuntimeEvent {
    /// The container of `host` stopped (its process exited or was killed).
    Exited { host: String },
    /// The container of `host` was paused (by anyone).
    Paused { host: String },
    /// The container of `host` was unpaused or started (by anyone).
    Unpaused { host: String },
    /// The container of `host` now has another name (it is still recognised by its labels).
    Renamed { host: String, name: String },
    /// The container of `host` was removed.
    Destroyed { host: String },
    /// The engine's stream broke (an engine restart) and was resumed: events may have been
    /// lost meanwhile, so everything must be observed again.
    Resumed,
}

impl RuntimeEvent {
    /// The host the event is about (`None`: all of them).
    pub fn host(&self) -> Option<&str> {
        match self {
            RuntimeEvent::Exited { host }
            | RuntimeEvent::Paused { host }
            | RuntimeEvent::Unpaused { host }
            | RuntimeEvent::Renamed { host, .. }
            | RuntimeEvent::Destroyed { host } => Some(host),
            RuntimeEvent::Resumed => None,
        }
    }
}

/// How to drive the engine, from the configuration.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EngineOptions {
    /// Use fast thaw where the engine supports it (`[wake] fast_thaw`).
    pub fast_thaw: bool,
    /// DNS servers of the containers it creates: the agent's own, which answers for every host
    /// (the engine's embedded resolver forwards the names it does not know there).
    pub dns: Vec<Ipv4Addr>,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
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
    #[error(
        "container {container:?} is in the way of host {host}'s container and imag does not own \
         it ({owner}); imag never removes it: remove or rename it yourself (docker rm / docker \
         rename {container}), or rename the host"
    )]
    Foreign {
        container: String,
        host: String,
        /// Who owns it, as its labels say.
        owner: String,
    },
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

/// Everything the agent asks of a container engine. Implementations are cheap to clone (a handle
/// on shared state): the orchestrator hands a clone to every task it spawns.
pub trait ContainerRuntime: Clone + Send + Sync + 'static {
    /// Connects to the engine (and checks that it answers).
    fn connect(options: EngineOptions) -> impl Future<Output = Result<Self, RuntimeError>> + Send;

    /// Creates the network for the imaginary subnet, or reuses one that exists with the
    /// configured subnet and bridge (and fails, saying how to fix it, if it does not match).
    fn ensure_network(
        &self,
        net: &NetworkSpec,
    ) -> impl Future<Output = Result<(), RuntimeError>> + Send;

    /// Removes a network imag created; returns false, leaving it, for a network someone else
    /// made (`detach` must not remove what it did not install). A missing network counts as
    /// removed.
    fn remove_network(&self, name: &str)
    -> impl Future<Output = Result<bool, RuntimeError>> + Send;

    /// What the engine knows about every container of `network` that belongs to one of `specs`,
    /// in as few engine calls as it can: container name (the spec's) → what the engine says. A
    /// spec without an entry has no container. Containers are recognised by imag's labels, not
    /// their names; one found under another name (the old `<network>-<host>` scheme, or renamed
    /// by hand) is renamed back to the spec's name where that name is free.
    fn observe_all(
        &self,
        network: &str,
        specs: &[ContainerSpec],
    ) -> impl Future<Output = Result<HashMap<String, Observed>, RuntimeError>> + Send;

    /// The engine's events about the containers of `network`, for as long as the stream is
    /// polled: the implementation reconnects by itself if the engine's own stream breaks,
    /// resuming from the last event it saw, and then yields [`RuntimeEvent::Resumed`].
    fn events(&self, network: &str) -> BoxStream<'static, RuntimeEvent>;

    /// Makes the host's container run, starting from the tier it is believed to be in (and
    /// recovering if that belief is stale).
    fn wake(
        &self,
        spec: &ContainerSpec,
        from: Tier,
    ) -> impl Future<Output = Result<Started, RuntimeError>> + Send;

    /// The running container's process and link, or why it is not running. Used while waiting
    /// for readiness, to fail fast when the container exits, and after a wake to find its link.
    fn running_info(
        &self,
        spec: &ContainerSpec,
    ) -> impl Future<Output = Result<RunningInfo, NotRunning>> + Send;

    /// The container's health as the engine reports it (`ready = "healthy"`): `None` when neither
    /// the host nor its image has a healthcheck, an error when the container is not running.
    fn health(
        &self,
        spec: &ContainerSpec,
    ) -> impl Future<Output = Result<Option<Health>, NotRunning>> + Send;

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

    /// Optional capability, fast thaw: whether a fast wake left the engine's own view of the
    /// container stale (see [`freezer`]), to be repaired with [`ContainerRuntime::settle`] at a
    /// quiet moment. Engines without fast thaw are never unsettled.
    fn unsettled(&self, _spec: &ContainerSpec) -> bool {
        false
    }

    /// Optional capability, page-out (`swap_after`): moves what a paused container holds in
    /// memory out to the machine's swap (see [`memory`]), saying what it held before and after.
    /// Engines without it refuse.
    fn page_out(
        &self,
        spec: &ContainerSpec,
    ) -> impl Future<Output = Result<PagedOut, RuntimeError>> + Send {
        let refused = RuntimeError::Engine {
            action: "page out",
            container: spec.name.clone(),
            message: "this engine cannot page a container's memory out".into(),
        };
        async { Err(refused) }
    }

    /// Optional capability, fast thaw: brings the engine's view of a container in line with
    /// reality after a fast wake. Nothing to do for engines without fast thaw.
    fn settle(
        &self,
        _spec: &ContainerSpec,
    ) -> impl Future<Output = Result<(), RuntimeError>> + Send {
        async { Ok(()) }
    }
}
