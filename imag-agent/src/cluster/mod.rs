//! The cluster adapter (docs/SCALE-OUT.md): several nodes serve one imaginary network. This
//! module is the orchestrator's view of the others: `claim` before a wake and `release` after a
//! sleep (etcd keys, `store.rs`), a [`Signal`] when a host's packets should go elsewhere, and
//! the routes that make it so (`routes.rs`). One task (`task.rs`) keeps the node registered,
//! watches nodes and hosts, applies the pure decisions of `decide.rs` (placement:
//! `placement.rs`) to the kernel, and fences the node when the store stops answering.
//!
//! It is an adapter like `runtime/` and `datapath/`: it imports `config` and the leaves, and
//! the orchestrator imports it.

mod decide;
pub mod placement;
pub mod routes;
mod store;
mod task;

use std::{
    net::Ipv4Addr,
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::sync::{mpsc, oneshot};

use self::store::{Store, Taken};
pub use self::{
    decide::{HostDecision, Placed, World, decide},
    routes::{PROTOCOL, RouteError},
    store::StoreError,
};
use crate::config::{ClusterConfig, Config};

/// Where this node should send packets for a host.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Target {
    Here,
    Node { name: String, address: Ipv4Addr },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Signal {
    /// `host`'s target changed (also sent once per host at start for every host whose target is
    /// not Here). Sent only after the main-table route for a Node target is installed (or
    /// removed for Here), so held packets may be re-delivered at once.
    Target { host: String, target: Target },
    /// The node lost the store for `lease - fence_margin`: stop serving (every announcement is
    /// withdrawn already); the orchestrator pauses its warm hosts.
    Fence,
    /// The store is reachable again and the node registered again.
    Unfence,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Claim {
    Won,
    Lost {
        node: String,
        address: Ipv4Addr,
    },
    /// Why, for the operator.
    Unavailable(String),
}

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error(
        "[cluster] has no address and the attach interface {0:?} has no IPv4 address: set \
         address = \"A.B.C.D\" (where the other nodes reach this one) in [cluster]"
    )]
    NoAddress(String),
    #[error("the bridge {0:?} does not exist: start the cluster after the imag network is created")]
    NoBridge(String),
    #[error(
        "the cluster store {endpoints} did not answer ({source}): start etcd or fix \
         [cluster] store"
    )]
    Store {
        endpoints: String,
        source: StoreError,
    },
    #[error("{0}")]
    Routes(#[from] RouteError),
    #[error("{0}")]
    Firewall(#[from] crate::firewall::FirewallError),
}

/// Counters for `status` and `/metrics`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Counters {
    pub claims_won: u64,
    pub claims_lost: u64,
    pub claims_unavailable: u64,
    pub fences: u64,
}

/// What the task publishes and the handle reads.
#[derive(Debug, Default)]
struct Shared {
    fenced: bool,
    lease: i64,
    world: World,
    decisions: std::collections::BTreeMap<String, HostDecision>,
    counters: Counters,
}

/// One live node in the view.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct NodeView {
    pub name: String,
    pub address: Ipv4Addr,
    /// Its lease is alive (for this node: acknowledged within `lease - fence_margin`).
    pub healthy: bool,
}

/// One host in the view.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct HostView {
    pub name: String,
    /// The node holding its key, if any.
    pub serving: Option<String>,
    /// The live nodes allowed for it, best first.
    pub ranking: Vec<String>,
    pub target: Target,
    /// This node's announcement metric, if it announces the host.
    pub metric: Option<u32>,
}

/// The cluster as this node sees it (`status`).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ClusterView {
    pub node: String,
    pub address: Ipv4Addr,
    pub fenced: bool,
    pub nodes: Vec<NodeView>,
    pub hosts: Vec<HostView>,
    pub counters: Counters,
}

/// The orchestrator's handle: claims, releases and the view. Cheap to clone.
#[derive(Clone)]
pub struct ClusterHandle {
    store: Store,
    shared: Arc<Mutex<Shared>>,
    address: Ipv4Addr,
    lease_ttl: Duration,
    /// Each host's `nodes` (absent: every node).
    allowed: Arc<std::collections::BTreeMap<String, Vec<String>>>,
}

impl ClusterHandle {
    fn shared(&self) -> std::sync::MutexGuard<'_, Shared> {
        self.shared.lock().expect("cluster state lock poisoned")
    }

    fn count(&self, claim: Claim) -> Claim {
        let counters = &mut self.shared().counters;
        match claim {
            Claim::Won => counters.claims_won += 1,
            Claim::Lost { .. } => counters.claims_lost += 1,
            Claim::Unavailable(_) => counters.claims_unavailable += 1,
        }
        claim
    }

    /// Before a wake: takes `host`'s key for this node (see docs/SCALE-OUT.md). `Won` also if
    /// it is ours already; `Lost` if another live node holds it; a holder that is not a live
    /// node is waited for (its lease runs out within the TTL) once.
    pub async fn claim(&self, host: &str) -> Claim {
        let claim = self.try_claim(host).await;
        match &claim {
            Claim::Won => tracing::info!(host, "claimed"),
            Claim::Lost { node, .. } => tracing::info!(host, node, "served by another node"),
            Claim::Unavailable(why) => tracing::warn!(host, why, "cannot claim"),
        }
        self.count(claim)
    }

    async fn try_claim(&self, host: &str) -> Claim {
        if let Some(nodes) = self.allowed.get(host)
            && !nodes.iter().any(|n| n == self.store.node())
        {
            return Claim::Unavailable(format!(
                "host {host:?} may only run on nodes {nodes:?} (its nodes), not on {:?}",
                self.store.node()
            ));
        }
        let live_address = |node: &str| self.shared().world.nodes.get(node).copied();
        for attempt in 0..2 {
            let (fenced, lease) = {
                let shared = self.shared();
                (shared.fenced, shared.lease)
            };
            if fenced {
                return Claim::Unavailable(
                    "this node is fenced: the cluster store has not answered its keep-alives"
                        .into(),
                );
            }
            match self.store.take(host, lease).await {
                Err(err) => return Claim::Unavailable(format!("the cluster store: {err}")),
                Ok(Taken::Ours) => return Claim::Won,
                Ok(Taken::Theirs { node, revision }) => {
                    if let Some(address) = live_address(&node) {
                        return Claim::Lost { node, address };
                    }
                    if attempt == 1 {
                        return Claim::Unavailable(format!(
                            "node {node:?} still holds {host:?} but is not live; its lease has \
                             not run out after {}s",
                            self.lease_ttl.as_secs()
                        ));
                    }
                    if !node.is_empty() {
                        self.store
                            .deleted_after(host, revision, self.lease_ttl)
                            .await;
                    }
                }
            }
        }
        unreachable!("the second attempt returns")
    }

    /// After the host's container stopped or paused (or its wake failed): gives its key back
    /// if this node holds it. Errors are logged.
    pub async fn release(&self, host: &str) {
        match self.store.give_back(host).await {
            Ok(true) => tracing::info!(host, "released"),
            Ok(false) => tracing::debug!(host, "not ours to release"),
            Err(err) => {
                tracing::warn!(host, error = %err, "releasing the host's key failed; it goes with the lease");
            }
        }
    }

    /// The cluster view for `status`.
    pub fn view(&self) -> ClusterView {
        let shared = self.shared();
        let this = self.store.node();
        ClusterView {
            node: this.to_string(),
            address: self.address,
            fenced: shared.fenced,
            nodes: (shared.world.nodes.iter())
                .map(|(name, address)| NodeView {
                    name: name.clone(),
                    address: *address,
                    healthy: name != this || !shared.fenced,
                })
                .collect(),
            hosts: (shared.decisions.iter())
                .map(|(name, d)| HostView {
                    name: name.clone(),
                    serving: shared.world.holders.get(name).cloned(),
                    ranking: d.ranking.clone(),
                    target: d.target.clone(),
                    metric: if shared.fenced { None } else { d.metric },
                })
                .collect(),
            counters: shared.counters,
        }
    }
}

/// The running cluster task: [`ClusterTask::shutdown`] leaves cleanly (announcements, routes and
/// the nat rule removed, the lease revoked); dropping it stops the task as a crash would.
pub struct ClusterTask {
    join: Option<tokio::task::JoinHandle<()>>,
    stop: Option<oneshot::Sender<()>>,
}

impl ClusterTask {
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(join) = self.join.take() {
            let _ = join.await;
        }
    }
}

impl Drop for ClusterTask {
    fn drop(&mut self) {
        if let Some(join) = self.join.take() {
            join.abort();
        }
    }
}

/// The address other nodes reach this one at: configured, or the first IPv4 address of the
/// first attach interface.
fn own_address(config: &ClusterConfig, attach: &[String]) -> Result<Ipv4Addr, ClusterError> {
    if let Some(address) = config.address {
        return Ok(address);
    }
    let first = attach.first().cloned().unwrap_or_default();
    let addresses = ipv4_addresses(&first);
    addresses
        .into_iter()
        .next()
        .ok_or(ClusterError::NoAddress(first))
}

/// The IPv4 addresses of interface `name` (getifaddrs).
fn ipv4_addresses(name: &str) -> Vec<Ipv4Addr> {
    let mut found = Vec::new();
    let mut list: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `list` with a linked list that freeifaddrs releases below; each
    // entry's name is a NUL-terminated string and `ifa_addr`, when not null, points at a
    // sockaddr whose family says its type.
    unsafe {
        if libc::getifaddrs(&raw mut list) != 0 {
            return found;
        }
        let mut entry = list;
        while !entry.is_null() {
            let ifa = &*entry;
            let this = std::ffi::CStr::from_ptr(ifa.ifa_name).to_string_lossy();
            if this == name
                && !ifa.ifa_addr.is_null()
                && i32::from((*ifa.ifa_addr).sa_family) == libc::AF_INET
            {
                let sin: libc::sockaddr_in = std::ptr::read_unaligned(ifa.ifa_addr.cast());
                found.push(Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)));
            }
            entry = ifa.ifa_next;
        }
        libc::freeifaddrs(list);
    }
    found
}

/// Connects to the store, registers this node under a lease kept alive, flushes stale routes
/// of ours, keeps the subnet's source addresses between nodes (nat), and starts the task that
/// watches nodes and hosts, keeps routes and announcements, and fences. `attach`: the attach
/// interfaces (the first one's address is the default node address).
pub async fn start(
    config: &ClusterConfig,
    network: &Config,
    bridge: &str,
    attach: &[String],
) -> Result<(ClusterHandle, mpsc::Receiver<Signal>, ClusterTask), ClusterError> {
    let address = own_address(config, attach)?;
    let bridge_index = std::ffi::CString::new(bridge)
        .ok()
        // SAFETY: a valid NUL-terminated name; if_nametoindex only reads it. (Not sysfs: it
        // asks the calling thread's network namespace.)
        .map(|name| unsafe { libc::if_nametoindex(name.as_ptr()) })
        .filter(|index| *index != 0)
        .ok_or_else(|| ClusterError::NoBridge(bridge.to_string()))?;
    let store_error = |source| ClusterError::Store {
        endpoints: config.store.join(", "),
        source,
    };
    let cluster_name = config.name.as_deref().unwrap_or(&network.network.name);
    let store = Store::connect(&config.store, cluster_name, &config.node)
        .await
        .map_err(store_error)?;
    let lease = store.grant(config.lease).await.map_err(store_error)?;
    store.register(lease, address).await.map_err(store_error)?;
    let (world, revision) = store.snapshot().await.map_err(store_error)?;
    let routes = routes::Routes::open(config.table, bridge_index)?;
    let flushed = routes.flush().await?;
    crate::firewall::keep_subnet_source(&network.network.name, network.network.subnet)?;
    tracing::info!(
        node = config.node,
        %address,
        lease,
        nodes = world.nodes.len(),
        flushed,
        "joined the cluster"
    );
    let shared = Arc::new(Mutex::new(Shared {
        lease,
        world,
        ..Shared::default()
    }));
    let allowed = (network.hosts.iter())
        .filter_map(|h| Some((h.name.clone(), h.nodes.clone()?)))
        .collect();
    let hosts = (network.hosts.iter())
        .map(|h| Placed {
            name: h.name.clone(),
            address: h.address,
            nodes: h.nodes.clone(),
        })
        .collect();
    let (signals, receiver) = mpsc::channel(1024);
    let (stop, stopped) = oneshot::channel();
    let task = task::Task {
        store: store.clone(),
        routes,
        shared: shared.clone(),
        signals,
        hosts,
        config: config.clone(),
        network: network.network.name.clone(),
        subnet: network.network.subnet,
        address,
        revision,
    };
    let join = tokio::spawn(task.run(stopped));
    let handle = ClusterHandle {
        store,
        shared,
        address,
        lease_ttl: config.lease,
        allowed: Arc::new(allowed),
    };
    Ok((
        handle,
        receiver,
        ClusterTask {
            join: Some(join),
            stop: Some(stop),
        },
    ))
}
