//! One node of a test cluster: a network namespace on the fabric, its own Docker engine
//! (dockerd with its own data root, exec root, socket, cgroup parent and managed containerd),
//! its BGP daemon, and the agents a test starts in it.

use std::{
    net::Ipv4Addr,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use super::{
    ClusterError,
    process::{Daemon, in_netns, output},
    sweep,
};
use crate::agent::{AgentProcess, Launch};

/// The node's link to the fabric, inside its namespace.
pub const FABRIC_IF: &str = "fabric";

pub struct Node {
    pub(super) index: usize,
    pub(super) netns: String,
    pub(super) addr: Ipv4Addr,
    /// Data root, configs, logs (removed at teardown).
    pub(super) state: PathBuf,
    /// Exec root, socket, pid files.
    pub(super) run: PathBuf,
    pub(super) cgroup_parent: String,
    pub(super) dockerd: Option<Daemon>,
    pub(super) bird: Option<Daemon>,
    pub(super) agents: Vec<AgentProcess>,
    /// False once [`super::Cluster::kill_node`] took it down.
    pub(super) alive: bool,
}

impl Node {
    /// Its number, from 1.
    pub fn index(&self) -> usize {
        self.index
    }

    /// Its network namespace (`/run/netns/<name>`).
    pub fn netns(&self) -> &str {
        &self.netns
    }

    /// Its address on the fabric (the router and the other nodes reach it there).
    pub fn fabric_addr(&self) -> Ipv4Addr {
        self.addr
    }

    /// Whether it still runs (not taken down by `kill_node`).
    pub fn alive(&self) -> bool {
        self.alive
    }

    /// Its engine's socket, as `DOCKER_HOST` takes it (`unix:///…/docker.sock`).
    pub fn docker_host(&self) -> String {
        format!("unix://{}", self.run.join("docker.sock").display())
    }

    /// The engine's exec root (its containerd's state is under it).
    pub fn exec_root(&self) -> PathBuf {
        self.run.join("exec")
    }

    /// The engine's data root.
    pub fn data_root(&self) -> PathBuf {
        self.state.join("docker")
    }

    /// A directory of the node's for a test's files (configs), removed at teardown.
    pub fn dir(&self) -> &Path {
        &self.state
    }

    /// `program` run inside the node's namespace, with `DOCKER_HOST` set to the node's engine.
    pub fn command(&self, program: &str) -> Command {
        let mut command = in_netns(&self.netns, program);
        command.env("DOCKER_HOST", self.docker_host());
        command
    }

    /// Runs `program ARGS` inside the namespace; its stdout, or an error with its stderr.
    pub fn run(&self, program: &str, args: &[&str]) -> Result<String, ClusterError> {
        let mut command = self.command(program);
        command.args(args);
        output(command).map_err(|e| ClusterError::Command(format!("node {}: {e}", self.index)))
    }

    /// `ip ARGS` inside the namespace.
    pub fn ip(&self, args: &[&str]) -> Result<String, ClusterError> {
        self.run("ip", args)
    }

    /// `docker ARGS` against the node's engine.
    pub fn docker(&self, args: &[&str]) -> Result<String, ClusterError> {
        let mut command = Command::new("docker");
        command.arg("-H").arg(self.docker_host()).args(args);
        output(command).map_err(|e| ClusterError::Command(format!("node {}: {e}", self.index)))
    }

    /// An agent launch that runs inside this node (its network namespace, with a sysfs showing
    /// that namespace's interfaces: `crate::agent` `in_netns`) against its engine (`DOCKER_HOST`);
    /// adjust it, then [`Node::start_agent`]. Each node's agent needs a network name of its own
    /// (e.g. `<cluster tag>n<i>`): the agent names its pins (`/sys/fs/bpf/imag/<network>`), state
    /// (`/var/lib/imag/<network>`) and control socket (`/run/imag/<network>.sock`) after it, and
    /// those are shared by every namespace; names starting with the cluster's tag are removed
    /// with the cluster.
    pub fn launch(&self, binary: &Path, config: &Path, interfaces: &[&str]) -> Launch {
        let mut launch = Launch::new(binary, config, interfaces);
        launch.netns = Some(self.netns.clone());
        launch.env.push(("DOCKER_HOST".into(), self.docker_host()));
        launch.name = format!("node{}", self.index);
        launch
    }

    /// Starts an agent in this node (see [`Node::launch`]); the node owns it: it is killed with
    /// the node and stopped at teardown.
    pub fn start_agent(&mut self, launch: Launch) -> Result<&mut AgentProcess, ClusterError> {
        let agent = AgentProcess::start(launch).map_err(|e| ClusterError::Agent {
            node: self.index,
            error: e.to_string(),
        })?;
        self.agents.push(agent);
        Ok(self.agents.last_mut().expect("just pushed"))
    }

    /// The agents started in this node, oldest first.
    pub fn agents(&mut self) -> &mut [AgentProcess] {
        &mut self.agents
    }

    /// The first agent started in this node, if it still runs (status requests need no `mut`).
    pub fn agent(&self) -> Option<&AgentProcess> {
        self.agents.first()
    }

    /// Names and states (`running`, `exited`, …) of the engine's containers whose name
    /// contains `filter`.
    pub fn containers(&self, filter: &str) -> Result<Vec<(String, String)>, ClusterError> {
        let listed = self.docker(&[
            "ps",
            "-a",
            "--filter",
            &format!("name={filter}"),
            "--format",
            "{{.Names}}\t{{.State}}",
        ])?;
        Ok(listed
            .lines()
            .filter_map(|l| l.split_once('\t'))
            .map(|(name, state)| (name.to_string(), state.to_string()))
            .collect())
    }

    /// Stops what runs in the node, gently: agents (they clean up), containers, the engine,
    /// the BGP daemon.
    pub(super) fn stop(&mut self) {
        for mut agent in self.agents.drain(..) {
            let _ = agent.stop();
        }
        if let Some(ids) = self
            .alive
            .then(|| self.docker(&["ps", "-aq"]).ok())
            .flatten()
        {
            let ids: Vec<&str> = ids.split_whitespace().collect();
            if !ids.is_empty() {
                let _ = self.docker(&[&["rm", "-f"], ids.as_slice()].concat());
            }
        }
        if let Some(mut dockerd) = self.dockerd.take() {
            dockerd.stop(Duration::from_secs(20));
        }
        if let Some(mut bird) = self.bird.take() {
            bird.stop(Duration::from_secs(5));
        }
    }

    /// Kills everything of the node's at once, as a power cut would: agents, containers, the
    /// engine and its containerd and shims, the BGP daemon.
    pub(super) fn kill(&mut self, tag: &str) {
        for agent in self.agents.drain(..) {
            agent.kill9();
        }
        if let Some(mut bird) = self.bird.take() {
            bird.kill();
        }
        if let Some(mut dockerd) = self.dockerd.take() {
            dockerd.kill();
        }
        sweep::kill_node_processes(tag, self.index, &self.run.display().to_string());
        self.alive = false;
    }
}
