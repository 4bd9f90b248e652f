//! A real multi-node topology for the scale-out tests (docs/SCALE-OUT.md): several nodes sharing
//! one imaginary network, a router in front of them speaking BGP with each, an etcd every node
//! reaches, and a client behind the router. Everything runs on this machine, in network
//! namespaces named after a [`Lease`] (so runs cannot collide), and everything is removed when the
//! [`Cluster`] is dropped, also after a panic; what a crashed run left is removed by the next
//! holder of its lease index.
//!
//! ```text
//!  client <tag>c ── 10.98.K.0/24 ── router <tag>r ── bridge "fabric" 10.99.K.0/24 ──┬── node <tag>n1 (.11)
//!  (default via .1)                 (.1: BIRD, etcd,                                ├── node <tag>n2 (.12)
//!                                    forwarding)                                    └── …
//! ```
//!
//! Each node: its own dockerd (data root under `/var/lib/imag-testkit/<tag>/n<i>`, exec root,
//! socket and pid file under `/run/imag-testkit/<tag>.cluster/n<i>`, cgroup parent
//! `imag-<tag>-n<i>`, its own managed containerd, its iptables rules in the node's namespace,
//! storage driver `vfs`), the test images loaded into it, and BIRD exporting kernel table 4200
//! to the router ([`bird`], rendered from `examples/scale-out/`). The router installs each /32's
//! best route into its main table and forwards between the client and the fabric. Nodes reach
//! each other directly on the fabric.

mod agents;
mod bird;
mod node;
mod process;
mod start;
mod sweep;

use std::{
    net::Ipv4Addr,
    path::PathBuf,
    process::Command,
    time::{Duration, Instant},
};

pub use agents::{CONVERGE, ClusterHost, FENCE_MARGIN, LEASE, SUBNET, wait_for};
pub use node::{FABRIC_IF, Node};
pub use sweep::leftovers;

/// Removes what a crashed cluster named `tag` left (for the next holder of its lease index).
pub(crate) fn sweep_stale(tag: &str) {
    sweep::sweep(tag);
}

use self::process::{Daemon, in_netns, output};
use crate::{
    IMAGE,
    lease::{Lease, LeaseError},
    netns::{ClientNs, ip},
};

/// The agent's default routing table (`[cluster] table`), which the nodes' BGP daemons export
/// unless [`ClusterSpec::table`] says otherwise.
pub const IMAG_TABLE: u32 = 4200;
/// etcd's client port on the router's fabric address.
pub const ETCD_PORT: u16 = 2379;

/// What to build.
#[derive(Clone, Debug)]
pub struct ClusterSpec {
    /// Number of nodes (1 to 200).
    pub nodes: usize,
    /// Images (of the main engine) loaded into every node's engine.
    pub images: Vec<String>,
    /// The kernel routing table the nodes' BIRD exports (the agents' `[cluster] table`).
    pub table: u32,
}

impl Default for ClusterSpec {
    fn default() -> ClusterSpec {
        ClusterSpec {
            nodes: 3,
            images: vec![IMAGE.to_string()],
            table: IMAG_TABLE,
        }
    }
}

/// Why a cluster could not be built or driven. Debug shows the message.
#[derive(thiserror::Error)]
pub enum ClusterError {
    #[error("the cluster tests need root (namespaces, dockerd, BGP): run them as root")]
    NotRoot,
    #[error("{program} is missing: install the Debian package {package} (`.ci/run` installs it)")]
    Missing {
        program: &'static str,
        package: &'static str,
    },
    #[error("taking a lease index for the cluster: {0}")]
    Lease(#[from] LeaseError),
    #[error("building the cluster: {0}")]
    Setup(String),
    #[error("{0}")]
    Command(String),
    #[error("{what} was not ready within {timeout:?}: {detail}")]
    NotReady {
        what: String,
        timeout: Duration,
        detail: String,
    },
    #[error("starting the agent in node {node}: {error}")]
    Agent { node: usize, error: String },
}

impl std::fmt::Debug for ClusterError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

/// A route of the router's main table, as `ip -j route` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    /// `10.77.0.10` for a /32, else `a.b.c.d/len`.
    pub dst: String,
    pub gateway: Option<Ipv4Addr>,
    pub dev: Option<String>,
    pub protocol: Option<String>,
}

/// A running test cluster; dropping it removes everything.
pub struct Cluster {
    lease: Lease,
    router: String,
    client: Option<ClientNs>,
    router_bird: Option<Daemon>,
    etcd: Option<Daemon>,
    nodes: Vec<Node>,
    started_in: Duration,
    table: u32,
}

impl Cluster {
    /// Builds the topology, starts every daemon and waits until each engine answers with the
    /// images loaded, etcd is healthy and every node's BGP session is established.
    pub fn start(spec: &ClusterSpec) -> Result<Cluster, ClusterError> {
        let started = Instant::now();
        start::require_tools()?;
        assert!(
            (1..=200).contains(&spec.nodes),
            "a cluster has 1 to 200 nodes"
        );
        let lease = Lease::take()?;
        if let Some(stale) = lease.stale() {
            sweep::sweep(stale);
            crate::testnet::sweep(stale, None);
        }
        let tag = lease.tag().to_string();
        let mut cluster = Cluster {
            router: format!("{tag}r"),
            lease,
            client: None,
            router_bird: None,
            etcd: None,
            nodes: Vec::new(),
            started_in: Duration::ZERO,
            table: spec.table,
        };
        // From here on, an error drops `cluster`, which removes what was built.
        cluster.build(spec)?;
        cluster.start_daemons()?;
        cluster.load_images(&spec.images)?;
        cluster.wait_ready()?;
        cluster.started_in = started.elapsed();
        Ok(cluster)
    }

    /// How long [`Cluster::start`] took.
    pub fn started_in(&self) -> Duration {
        self.started_in
    }

    /// The kernel routing table the nodes' BGP daemons export.
    pub fn table(&self) -> u32 {
        self.table
    }

    /// The name stem of everything the cluster made (for [`leftovers`]).
    pub fn tag(&self) -> &str {
        self.lease.tag()
    }

    fn subnet_byte(&self) -> u8 {
        self.lease.index()
    }

    /// The router's address on the fabric (BGP peer of every node, etcd's address).
    pub fn router_addr(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 99, self.subnet_byte(), 1)
    }

    /// The router's namespace.
    pub fn router_netns(&self) -> &str {
        &self.router
    }

    /// etcd's client URL, reachable from every node.
    pub fn etcd_endpoint(&self) -> String {
        format!("http://{}:{ETCD_PORT}", self.router_addr())
    }

    /// The number of nodes.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Always false: a cluster has at least one node.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Node `i` (from 1).
    pub fn node(&self, i: usize) -> &Node {
        let count = self.nodes.len();
        self.nodes
            .get(i.wrapping_sub(1))
            .unwrap_or_else(|| panic!("the cluster has nodes 1 to {count}, not {i}"))
    }

    /// Node `i` (from 1), to start agents in it.
    pub fn node_mut(&mut self, i: usize) -> &mut Node {
        let count = self.nodes.len();
        self.nodes
            .get_mut(i.wrapping_sub(1))
            .unwrap_or_else(|| panic!("the cluster has nodes 1 to {count}, not {i}"))
    }

    /// The client namespace behind the router (default route via the router); run clients in
    /// it with [`ClientNs::run`].
    pub fn client(&self) -> &ClientNs {
        self.client.as_ref().expect("built in start")
    }

    /// `program ARGS` run in the router's namespace; its stdout.
    pub fn router_run(&self, program: &str, args: &[&str]) -> Result<String, ClusterError> {
        let mut command = in_netns(&self.router, program);
        command.args(args);
        output(command).map_err(ClusterError::Command)
    }

    /// The router's main-table routes inside `prefix` (`ip route show root PREFIX`).
    pub fn router_routes(&self, prefix: &str) -> Result<Vec<Route>, ClusterError> {
        let text = output({
            let mut command = Command::new("ip");
            command.args(["-j", "-n", &self.router, "route", "show", "root", prefix]);
            command
        })
        .map_err(ClusterError::Command)?;
        Ok(parse_routes(&text))
    }

    /// Where the router sends `addr`: the gateway of its /32 route, if it has one.
    pub fn router_next_hop(&self, addr: Ipv4Addr) -> Result<Option<Ipv4Addr>, ClusterError> {
        Ok(self
            .router_routes(&format!("{addr}/32"))?
            .into_iter()
            .find(|r| r.dst == addr.to_string())
            .and_then(|r| r.gateway))
    }

    /// Whether the router's BGP session with node `i` is established.
    pub fn bgp_established(&self, i: usize) -> bool {
        let mut command = Command::new("birdc");
        command.arg("-s").arg(self.router_socket()).args([
            "show",
            "protocols",
            &bird::router_protocol(i),
        ]);
        output(command).is_ok_and(|text| bird::established(&text))
    }

    /// Node `i` dies as in a power cut: its agents, containers, engine (dockerd, containerd,
    /// shims) and BGP daemon are killed with SIGKILL and its fabric link is deleted. Its data
    /// stays until the cluster is dropped.
    pub fn kill_node(&mut self, i: usize) -> Result<(), ClusterError> {
        let tag = self.tag().to_string();
        self.node_mut(i).kill(&tag);
        ip(&["-n", &self.router, "link", "del", &format!("n{i}")])
            .map_err(|e| ClusterError::Command(e.to_string()))
    }

    /// Cuts node `i` off from etcd (and only from etcd): its namespace drops packets to and
    /// from etcd's client port.
    pub fn partition_from_store(&self, i: usize) -> Result<(), ClusterError> {
        self.store_rules(i, "-I")
    }

    /// Undoes [`Cluster::partition_from_store`].
    pub fn heal_store(&self, i: usize) -> Result<(), ClusterError> {
        self.store_rules(i, "-D")
    }

    fn store_rules(&self, i: usize, op: &str) -> Result<(), ClusterError> {
        let (etcd, port) = (self.router_addr().to_string(), ETCD_PORT.to_string());
        let node = self.node(i);
        node.run(
            "iptables",
            &[
                op, "OUTPUT", "-d", &etcd, "-p", "tcp", "--dport", &port, "-j", "DROP",
            ],
        )?;
        node.run(
            "iptables",
            &[
                op, "INPUT", "-s", &etcd, "-p", "tcp", "--sport", &port, "-j", "DROP",
            ],
        )?;
        Ok(())
    }

    /// Containers whose name contains `filter` on every live node's engine, as
    /// `(node, name, state)`: a test checks "never two containers for one host" with it.
    pub fn containers_everywhere(
        &self,
        filter: &str,
    ) -> Result<Vec<(usize, String, String)>, ClusterError> {
        let mut all = Vec::new();
        for node in self.nodes.iter().filter(|n| n.alive) {
            for (name, state) in node.containers(filter)? {
                all.push((node.index, name, state));
            }
        }
        Ok(all)
    }

    fn router_socket(&self) -> PathBuf {
        sweep::run_dir(self.tag()).join("router.bird.ctl")
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            node.stop();
        }
        if let Some(mut bird) = self.router_bird.take() {
            bird.stop(Duration::from_secs(5));
        }
        if let Some(mut etcd) = self.etcd.take() {
            etcd.stop(Duration::from_secs(5));
        }
        drop(self.client.take());
        sweep::sweep(self.lease.tag());
        self.lease.release();
    }
}

/// `ip -j route` output as routes.
fn parse_routes(json: &str) -> Vec<Route> {
    let Ok(serde_json::Value::Array(routes)) = serde_json::from_str(json) else {
        return Vec::new();
    };
    routes
        .iter()
        .filter_map(|r| {
            Some(Route {
                dst: r["dst"].as_str()?.to_string(),
                gateway: r["gateway"].as_str().and_then(|g| g.parse().ok()),
                dev: r["dev"].as_str().map(String::from),
                protocol: r["protocol"].as_str().map(String::from),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_parse_from_ip_json() {
        let json = r#"[{"dst":"10.77.0.10","gateway":"10.99.4.11","dev":"fabric","protocol":"bird","metric":32,"flags":[]},{"dst":"10.77.0.0/24","dev":"imag0","protocol":"kernel","scope":"link","prefsrc":"10.77.0.1","flags":[]}]"#;
        let routes = parse_routes(json);
        assert_eq!(routes.len(), 2);
        assert_eq!(routes[0].gateway, Some(Ipv4Addr::new(10, 99, 4, 11)));
        assert_eq!(routes[0].protocol.as_deref(), Some("bird"));
        assert_eq!(routes[1].gateway, None);
        assert!(parse_routes("not json").is_empty());
    }
}
