//! Building a [`Cluster`]: namespaces and links, then the daemons (etcd and BIRD in the router,
//! dockerd and BIRD in every node), the images loaded into every node's engine, and the wait
//! until all of it answers.

use std::{
    net::Ipv4Addr,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use super::{
    Cluster, ClusterError, ClusterSpec, ETCD_PORT, FABRIC_IF, Node, bird,
    process::{Daemon, in_netns, output},
    sweep,
};
use crate::netns::{ClientNs, ip};

/// How long the daemons may take to come up.
const READY_TIMEOUT: Duration = Duration::from_mins(1);

impl Cluster {
    /// Namespaces, links, addresses; directories and configs.
    pub(super) fn build(&mut self, spec: &ClusterSpec) -> Result<(), ClusterError> {
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
    pub(super) fn start_daemons(&mut self) -> Result<(), ClusterError> {
        let tag = self.tag().to_string();
        let (state, run) = (sweep::state_dir(&tag), sweep::run_dir(&tag));
        let (router, table) = (self.router_addr(), self.table);
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
            write(&conf, &bird::node_config(node.addr, router, table))?;
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
    pub(super) fn load_images(&mut self, images: &[String]) -> Result<(), ClusterError> {
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
    pub(super) fn wait_ready(&mut self) -> Result<(), ClusterError> {
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

fn spawn_bird(
    what: &str,
    netns: &str,
    conf: &Path,
    socket: &Path,
    pid: &Path,
    log: &Path,
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
pub(super) fn require_tools() -> Result<(), ClusterError> {
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
