//! One imag agent per node of a [`Cluster`], each with a generated `[cluster]` configuration,
//! and what the scale-out tests and the cluster bench ask of them: each agent's status, where a
//! host is placed, where its containers run, a request from the client.

use std::{
    fmt::Write as _,
    net::{Ipv4Addr, SocketAddr},
    path::Path,
    time::{Duration, Instant},
};

use super::{Cluster, ClusterError, FABRIC_IF};
use crate::{IMAGE, clients};

/// `[cluster] lease` of every agent: a dead node's hosts move once it has run out.
pub const LEASE: &str = "4s";
/// `[cluster] fence_margin` of every agent.
pub const FENCE_MARGIN: &str = "1s";
/// The imaginary network every node shares.
pub const SUBNET: &str = "10.77.0.0/24";
const BRIDGE: &str = "imag0";
/// BGP hold time 3 s, lease below: a failover or a node joining completes well within this.
pub const CONVERGE: Duration = Duration::from_secs(40);

/// A host of every node's configuration (hello on port 8080).
#[derive(Clone, Debug)]
pub struct ClusterHost {
    pub name: String,
    pub address: Ipv4Addr,
    /// More lines of its `[[host]]` table (`nodes = [...]`, `command = [...]`).
    pub extra: String,
}

impl ClusterHost {
    /// `name` at `10.77.0.<last>`.
    pub fn new(name: &str, last: u8, extra: &str) -> ClusterHost {
        ClusterHost {
            name: name.to_string(),
            address: Ipv4Addr::new(10, 77, 0, last),
            extra: extra.to_string(),
        }
    }
}

/// Polls `condition` every 50 ms until it holds; an error naming `what` after `timeout`.
pub fn wait_for(
    what: &str,
    timeout: Duration,
    mut condition: impl FnMut() -> bool,
) -> Result<(), ClusterError> {
    let deadline = Instant::now() + timeout;
    while !condition() {
        if Instant::now() > deadline {
            return Err(ClusterError::NotReady {
                what: what.to_string(),
                timeout,
                detail: "see the agents' logs above".into(),
            });
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

impl Cluster {
    /// Node `node`'s agent configuration: the same hosts on every node; node names are fixed
    /// (`n1`…), so placement is the same in every run; the cluster's name is the run's own
    /// (`[cluster] name`), so runs never meet in the store.
    pub fn agent_config(&self, node: usize, hosts: &[ClusterHost]) -> String {
        let tag = self.tag();
        let mut text = format!(
            "[network]\nname = \"{tag}n{node}\"\nsubnet = \"{SUBNET}\"\nbridge = \"{BRIDGE}\"\n\n\
             [cluster]\nname = \"{tag}\"\nnode = \"n{node}\"\nstore = [\"{}\"]\naddress = \"{}\"\n\
             table = {}\nlease = \"{LEASE}\"\nfence_margin = \"{FENCE_MARGIN}\"\n\n",
            self.etcd_endpoint(),
            self.node(node).fabric_addr(),
            self.table(),
        );
        for h in hosts {
            let _ = write!(
                text,
                "[[host]]\nname = \"{}\"\naddress = \"{}\"\nimage = \"{IMAGE}\"\nports = [8080]\n\
                 idle_timeout = \"never\"\n{}\n",
                h.name, h.address, h.extra
            );
        }
        text
    }

    /// Starts one agent (`binary`) per node with [`Cluster::agent_config`] and waits until
    /// every agent sees every node.
    pub fn start_agents(
        &mut self,
        binary: &Path,
        hosts: &[ClusterHost],
        log_filter: &str,
    ) -> Result<(), ClusterError> {
        let nodes = self.len();
        for i in 1..=nodes {
            let path = self.node(i).dir().join("imag.toml");
            std::fs::write(&path, self.agent_config(i, hosts))
                .map_err(|e| ClusterError::Setup(format!("writing {}: {e}", path.display())))?;
            let mut launch = self.node(i).launch(binary, &path, &[FABRIC_IF]);
            log_filter.clone_into(&mut launch.log_filter);
            self.node_mut(i).start_agent(launch)?;
        }
        for i in 1..=nodes {
            wait_for("every agent sees every node", CONVERGE, || {
                self.live_nodes(i) == nodes
            })?;
        }
        Ok(())
    }

    /// Node `node`'s agent's `status --json`.
    pub fn agent_status(&self, node: usize) -> Result<serde_json::Value, ClusterError> {
        let agent = self.node(node).agent().ok_or_else(|| ClusterError::Agent {
            node,
            error: "no agent runs there".into(),
        })?;
        agent.status().map_err(|e| ClusterError::Agent {
            node,
            error: e.to_string(),
        })
    }

    /// The nodes node `node`'s agent sees alive, by name (none if it does not answer).
    pub fn live_node_names(&self, node: usize) -> Vec<String> {
        self.agent_status(node).ok().map_or_else(Vec::new, |s| {
            s["cluster"]["nodes"]
                .as_array()
                .map_or_else(Vec::new, |nodes| {
                    nodes
                        .iter()
                        .filter_map(|n| n["name"].as_str().map(String::from))
                        .collect()
                })
        })
    }

    /// How many nodes node `node`'s agent sees alive.
    pub fn live_nodes(&self, node: usize) -> usize {
        self.live_node_names(node).len()
    }

    /// The host's state on node `node` (`asleep`, `elsewhere`, `warm`, …; empty if unknown).
    pub fn host_state(&self, node: usize, host: &str) -> String {
        let Ok(status) = self.agent_status(node) else {
            return String::new();
        };
        status["hosts"]
            .as_array()
            .and_then(|hosts| hosts.iter().find(|h| h["name"] == host))
            .and_then(|h| h["state"].as_str())
            .unwrap_or_default()
            .to_string()
    }

    /// The one live node that would serve `host` (every other live node routes it there),
    /// once the live nodes agree.
    pub fn placed(&self, host: &str) -> Result<usize, ClusterError> {
        let mut here = Vec::new();
        wait_for(
            &format!("one node keeps {host}, the others route it there"),
            CONVERGE,
            || {
                here = (1..=self.len())
                    .filter(|&i| self.node(i).alive() && self.host_state(i, host) != "elsewhere")
                    .collect();
                here.len() == 1
            },
        )?;
        Ok(here[0])
    }

    /// Where the host's containers are, across every live engine: (node, state).
    pub fn host_containers(&self, host: &str) -> Result<Vec<(usize, String)>, ClusterError> {
        Ok(self
            .containers_everywhere(&format!("--{host}"))?
            .into_iter()
            .map(|(node, _, state)| (node, state))
            .collect())
    }

    /// `GET /` on `addr:8080` from the client namespace: the body, or why not.
    pub fn get(&self, addr: Ipv4Addr, timeout: Duration) -> Result<String, String> {
        self.client()
            .run(|| clients::http_get(SocketAddr::from((addr, 8080)), timeout))
            .map_err(|e| format!("entering the client namespace: {e}"))?
            .map(|(body, _)| body)
            .map_err(|e| e.to_string())
    }
}
