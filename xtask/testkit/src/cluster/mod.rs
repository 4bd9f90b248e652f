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

mod bird;
mod node;
mod process;
mod sweep;

use std::{
    net::Ipv4Addr,
    path::PathBuf,
    process::Command,
    time::{Duration, Instant},
};

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

/// The agent's routing table (`[cluster] table`) the nodes' BGP daemons export.
pub const IMAG_TABLE: u32 = 4200;
/// etcd's client port on the router's fabric address.
pub const ETCD_PORT: u16 = 2379;
/// How long the daemons may take to come up.
const READY_TIMEOUT: Duration = Duration::from_mins(1);

/// What to build.
#[derive(Clone, Debug)]
pub struct ClusterSpec {
    /// Number of nodes (1 to 200).
    pub nodes: usize,
    /// Images (of the main engine) loaded into every node's engine.
    pub images: Vec<String>,
}

impl Default for ClusterSpec {
    fn default() -> ClusterSpec {
        ClusterSpec {
            nodes: 3,
            images: vec![IMAGE.to_string()],
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
}

impl Cluster {
    /// Builds the topology, starts every daemon and waits until each engine answers with the
    /// images loaded, etcd is healthy and every node's BGP session is established.
    pub fn start(spec: &ClusterSpec) -> Result<Cluster, ClusterError> {
        let started = Instant::now();
        require_tools()?;
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

    /// Namespaces, links, addresses; directories and configs.
    fn build(&mut self, spec: &ClusterSpec) -> Result<(), ClusterError> {
        let setup = |e: std::io::Error| ClusterError::Setup(e.to_string());
        let (tag, k) = (self.tag().to_string(), self.subnet_byte());
        let r = self.router.clone();
        for dir in [sweep::state_dir(&tag), sweep::run_dir(&tag)] {
            std::fs::create_dir_all(&dir)
                .map_err(|e| ClusterError::Setup(format!("creating {}: {e}", dir.display())))?;
        }
        ip(&["netns", "add", &r]).map_err(setup)?;
        ip(&["-n", &r, "link", "set", "lo", "up"]).map_err(setup)?;
        self.router_run("sysctl", &["-qw", "net.ipv4.ip_forward=1"])?;
        ip(&["-n", &r, "link", "add", "fabric", "type", "bridge"]).map_err(setup)?;
        ip(&[
            "-n",
            &r,
            "addr",
            "add",
            &format!("10.99.{k}.1/24"),
            "dev",
            "fabric",
        ])
        .map_err(setup)?;
        ip(&["-n", &r, "link", "set", "fabric", "up"]).map_err(setup)?;

        // The client: a veth from the root namespace, whose host side then moves to the router.
        let host_if = format!("{tag}h");
        let gateway = format!("10.98.{k}.1/24");
        let client = ClientNs::create(
            &format!("{tag}c"),
            &host_if,
            &gateway,
            &format!("10.98.{k}.2/24"),
            &["default"],
        )
        .map_err(setup)?;
        self.client = Some(client);
        ip(&["link", "set", &host_if, "netns", &r]).map_err(setup)?;
        ip(&["-n", &r, "addr", "add", &gateway, "dev", &host_if]).map_err(setup)?;
        ip(&["-n", &r, "link", "set", &host_if, "up"]).map_err(setup)?;

        for i in 1..=spec.nodes {
            let netns = format!("{tag}n{i}");
            let offset = u8::try_from(10 + i).expect("at most 200 nodes");
            let addr = Ipv4Addr::new(10, 99, k, offset);
            let node = Node {
                index: i,
                netns: netns.clone(),
                addr,
                state: sweep::state_dir(&tag).join(format!("n{i}")),
                run: sweep::run_dir(&tag).join(format!("n{i}")),
                cgroup_parent: sweep::cgroup_parent(&tag, i),
                dockerd: None,
                bird: None,
                agents: Vec::new(),
                alive: true,
            };
            for dir in [&node.state, &node.run] {
                std::fs::create_dir_all(dir)
                    .map_err(|e| ClusterError::Setup(format!("creating {}: {e}", dir.display())))?;
            }
            ip(&["netns", "add", &netns]).map_err(setup)?;
            self.nodes.push(node);
            let port = format!("n{i}");
            ip(&[
                "-n", &r, "link", "add", &port, "type", "veth", "peer", "name", FABRIC_IF, "netns",
                &netns,
            ])
            .map_err(setup)?;
            ip(&["-n", &r, "link", "set", &port, "master", "fabric"]).map_err(setup)?;
            ip(&["-n", &r, "link", "set", &port, "up"]).map_err(setup)?;
            for args in [
                vec!["link", "set", "lo", "up"],
                vec!["addr", "add", &format!("{addr}/24"), "dev", FABRIC_IF],
                vec!["link", "set", FABRIC_IF, "up"],
                vec!["route", "add", "default", "via", &format!("10.99.{k}.1")],
            ] {
                ip(&[&["-n", netns.as_str()], args.as_slice()].concat()).map_err(setup)?;
            }
            self.node(i)
                .run("sysctl", &["-qw", "net.ipv4.ip_forward=1"])?;
        }
        Ok(())
    }

    /// etcd and BIRD in the router, dockerd and BIRD in every node.
    fn start_daemons(&mut self) -> Result<(), ClusterError> {
        let tag = self.tag().to_string();
        let (state, run) = (sweep::state_dir(&tag), sweep::run_dir(&tag));
        let router = self.router_addr();
        let write = |path: &PathBuf, text: &str| {
            std::fs::write(path, text)
                .map_err(|e| ClusterError::Setup(format!("writing {}: {e}", path.display())))
        };

        let mut etcd = in_netns(&self.router, "etcd");
        etcd.args(["--name", "imag", "--data-dir"])
            .arg(state.join("etcd"))
            .args([
                "--listen-client-urls",
                &format!("{},http://127.0.0.1:{ETCD_PORT}", self.etcd_endpoint()),
                "--advertise-client-urls",
                &self.etcd_endpoint(),
                "--listen-peer-urls",
                "http://127.0.0.1:2380",
                "--initial-advertise-peer-urls",
                "http://127.0.0.1:2380",
                "--initial-cluster",
                "imag=http://127.0.0.1:2380",
                "--log-level",
                "warn",
                "--logger",
                "zap",
            ]);
        self.etcd = Some(
            Daemon::spawn("etcd", etcd, &state.join("etcd.log")).map_err(ClusterError::Setup)?,
        );

        let addrs: Vec<Ipv4Addr> = self.nodes.iter().map(|n| n.addr).collect();
        let conf = state.join("router.bird.conf");
        write(&conf, &bird::router_config(router, &addrs))?;
        self.router_bird = Some(spawn_bird(
            "the router's BIRD",
            &self.router,
            &conf,
            &self.router_socket(),
            &run.join("router.bird.pid"),
            &state.join("router.bird.log"),
        )?);

        for node in &mut self.nodes {
            let conf = node.state.join("bird.conf");
            write(&conf, &bird::node_config(node.addr, router, IMAG_TABLE))?;
            node.bird = Some(spawn_bird(
                &format!("node {}'s BIRD", node.index),
                &node.netns,
                &conf,
                &node.run.join("bird.ctl"),
                &node.run.join("bird.pid"),
                &node.state.join("bird.log"),
            )?);

            // Its own daemon.json: the main engine's (/etc/docker/daemon.json) names a storage
            // driver and a data root of its own.
            let daemon_json = node.state.join("daemon.json");
            write(&daemon_json, "{}\n")?;
            let mut dockerd = in_netns(&node.netns, "dockerd");
            dockerd
                .arg("--config-file")
                .arg(&daemon_json)
                .arg("--data-root")
                .arg(node.data_root())
                .arg("--exec-root")
                .arg(node.exec_root())
                .arg("--pidfile")
                .arg(node.run.join("docker.pid"))
                .arg("-H")
                .arg(node.docker_host())
                .args([
                    "--cgroup-parent",
                    &node.cgroup_parent,
                    "--storage-driver",
                    "vfs",
                    "--bridge",
                    "none",
                    "--userland-proxy=false",
                ]);
            node.dockerd = Some(
                Daemon::spawn(
                    &format!("node {}'s dockerd", node.index),
                    dockerd,
                    &node.state.join("dockerd.log"),
                )
                .map_err(ClusterError::Setup)?,
            );
        }
        Ok(())
    }

    /// `docker save` once from the main engine, `docker load` into every node's (in parallel).
    fn load_images(&mut self, images: &[String]) -> Result<(), ClusterError> {
        if images.is_empty() {
            return Ok(());
        }
        let tar = sweep::state_dir(self.tag()).join("images.tar");
        let mut save = Command::new("docker");
        save.arg("save").arg("-o").arg(&tar).args(images);
        output(save).map_err(|e| {
            ClusterError::Setup(format!(
                "saving {images:?} from the main engine (`cargo xtask image` builds the example \
                 image): {e}"
            ))
        })?;
        self.wait("every node's engine", |cluster| {
            for node in &mut cluster.nodes {
                if let Some(dockerd) = node.dockerd.as_mut() {
                    dockerd.check_running().map_err(Err)?;
                }
                node.docker(&["version", "--format", "{{.Server.Version}}"])
                    .map_err(|e| Ok(e.to_string()))?;
            }
            Ok(())
        })?;
        let tar = tar.display().to_string();
        std::thread::scope(|scope| {
            let loads: Vec<_> = self
                .nodes
                .iter()
                .map(|node| scope.spawn(|| node.docker(&["load", "-q", "-i", &tar])))
                .collect();
            loads
                .into_iter()
                .try_for_each(|l| l.join().expect("docker load thread").map(drop))
        })?;
        let _ = std::fs::remove_file(&tar);
        Ok(())
    }

    /// Until etcd answers from every node and every BGP session is established.
    fn wait_ready(&mut self) -> Result<(), ClusterError> {
        let endpoint = self.etcd_endpoint();
        self.wait("etcd", |cluster| {
            if let Some(etcd) = cluster.etcd.as_mut() {
                etcd.check_running().map_err(Err)?;
            }
            cluster.nodes[0]
                .run("etcdctl", &["--endpoints", &endpoint, "endpoint", "health"])
                .map(drop)
                .map_err(|e| Ok(e.to_string()))
        })?;
        self.wait("every BGP session", |cluster| {
            if let Some(bird) = cluster.router_bird.as_mut() {
                bird.check_running().map_err(Err)?;
            }
            for i in 1..=cluster.nodes.len() {
                if let Some(bird) = cluster.nodes[i - 1].bird.as_mut() {
                    bird.check_running().map_err(Err)?;
                }
                if !cluster.bgp_established(i) {
                    return Err(Ok(format!("node {i}'s session is not established")));
                }
            }
            Ok(())
        })
    }

    /// Polls `ready` every 100 ms: `Err(Ok(why))` means not yet, `Err(Err(why))` failed for good.
    fn wait(
        &mut self,
        what: &str,
        mut ready: impl FnMut(&mut Cluster) -> Result<(), Result<String, String>>,
    ) -> Result<(), ClusterError> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            match ready(self) {
                Ok(()) => return Ok(()),
                Err(Err(failed)) => return Err(ClusterError::Setup(failed)),
                Err(Ok(why)) if Instant::now() > deadline => {
                    return Err(ClusterError::NotReady {
                        what: what.into(),
                        timeout: READY_TIMEOUT,
                        detail: why,
                    });
                }
                Err(Ok(_)) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
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

fn spawn_bird(
    what: &str,
    netns: &str,
    conf: &std::path::Path,
    socket: &std::path::Path,
    pid: &std::path::Path,
    log: &std::path::Path,
) -> Result<Daemon, ClusterError> {
    let mut bird = in_netns(netns, "bird");
    bird.arg("-f")
        .arg("-c")
        .arg(conf)
        .arg("-s")
        .arg(socket)
        .arg("-P")
        .arg(pid);
    Daemon::spawn(what, bird, log).map_err(ClusterError::Setup)
}

/// Fails naming the package of the first missing program.
fn require_tools() -> Result<(), ClusterError> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err(ClusterError::NotRoot);
    }
    for (program, package) in [
        ("bird", "bird2"),
        ("birdc", "bird2"),
        ("etcd", "etcd-server"),
        ("etcdctl", "etcd-client"),
        ("dockerd", "docker.io"),
        ("docker", "docker.io"),
        ("nsenter", "util-linux"),
        ("iptables", "iptables"),
    ] {
        let found = std::env::var_os("PATH").is_some_and(|path| {
            std::env::split_paths(&path).any(|dir| dir.join(program).is_file())
        });
        if !found {
            return Err(ClusterError::Missing { program, package });
        }
    }
    Ok(())
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
