//! Scale-out in the orchestrator (docs/SCALE-OUT.md): where the cluster routes each host, the
//! claim before a wake, the release after a sleep, and fencing.
//!
//! The cluster adapter (`crate::cluster`) decides, from the store, which node each host's packets
//! go to, installs the route there and then says so (`Signal::Target`). Here that becomes an
//! event of the state machine: a host this node does not run goes `Elsewhere` (the datapath
//! forwards its packets, the kernel routes them) and comes back `Asleep` when it is routed here
//! again. A wake first takes the host in the store (`jobs::Claimer`); losing the claim sends the
//! held packets to the node that won. A host that stops running here (asleep, failed) is released
//! once its container holds nothing. A fenced node (it lost the store) pauses what it runs and
//! wakes nothing until the store is back.

use std::{future::Future, pin::Pin, sync::Arc};

use tracing::{info, warn};

use super::{
    Orchestrator,
    jobs::{Claimer, Outcome, WakeError},
    state::{Event, HostState, Tier},
};
use crate::{
    cluster::{Claim, ClusterHandle, Signal, Target},
    datapath::{HostMode, HostTable},
    report::{ClusterView, NodeView},
    runtime::ContainerRuntime,
};

type Pending<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Who may run a host: the cluster's store as the orchestrator uses it (a fake in its tests).
pub trait Claims: Send + Sync + 'static {
    /// Takes `host` for this node before a wake (see `cluster::ClusterHandle::claim`).
    fn claim<'a>(&'a self, host: &'a str) -> Pending<'a, Claim>;
    /// Gives `host` up once this node's container holds nothing.
    fn release<'a>(&'a self, host: &'a str) -> Pending<'a, ()>;
    /// The cluster as this node sees it, for `status`.
    fn view(&self) -> ClusterView;
}

impl Claims for ClusterHandle {
    fn claim<'a>(&'a self, host: &'a str) -> Pending<'a, Claim> {
        Box::pin(ClusterHandle::claim(self, host))
    }
    fn release<'a>(&'a self, host: &'a str) -> Pending<'a, ()> {
        Box::pin(ClusterHandle::release(self, host))
    }
    fn view(&self) -> ClusterView {
        let view = ClusterHandle::view(self);
        // One pass over the hosts (thousands), not one per node.
        let mut serving: std::collections::HashMap<&str, Vec<String>> =
            std::collections::HashMap::new();
        for h in &view.hosts {
            if let Some(node) = h.serving.as_deref() {
                serving.entry(node).or_default().push(h.name.clone());
            }
        }
        ClusterView {
            node: view.node.clone(),
            address: view.address.to_string(),
            healthy: !view.fenced,
            nodes: (view.nodes.iter())
                .map(|n| NodeView {
                    name: n.name.clone(),
                    address: n.address.to_string(),
                    serving: serving.remove(n.name.as_str()).unwrap_or_default(),
                })
                .collect(),
            claims_won: view.counters.claims_won,
            claims_lost: view.counters.claims_lost,
            fences: view.counters.fences,
        }
    }
}

/// The orchestrator's side of the cluster: absent without `[cluster]`.
pub(super) struct ClusterLink {
    handle: Arc<dyn Claims>,
    /// Per host: claims and releases run in order.
    order: Vec<Arc<tokio::sync::Mutex<()>>>,
    /// The node lost the store: it serves nothing and wakes nothing.
    fenced: bool,
}

impl<R: ContainerRuntime, D: HostTable> Orchestrator<R, D> {
    /// Joins the cluster: wakes claim their host first, sleeps release it, and `Signal`s (fed
    /// through [`super::Input::Cluster`]) route hosts to other nodes.
    ///
    /// Hosts already warm (adopted from an earlier agent) are claimed at once: one another node
    /// took meanwhile is put to sleep here.
    pub fn join_cluster(&mut self, handle: Arc<dyn Claims>) {
        self.cluster = Some(ClusterLink {
            handle,
            order: (0..self.hosts.len()).map(|_| Arc::default()).collect(),
            fenced: false,
        });
        for id in 0..self.hosts.len() {
            if !self.hosts[id].is_warm() {
                continue;
            }
            let Some(claimer) = self.claimer(id) else {
                continue;
            };
            let outcomes = self.jobs.outcomes.clone();
            tokio::spawn(async move {
                let result = claimer.claim().await;
                let _ = outcomes.send(Outcome::Claimed { host: id, result });
            });
        }
    }

    /// The claim of a host found warm: kept if won; another node's: this node's container
    /// goes to sleep; the store unreachable: kept (fencing decides if it stays so).
    pub(super) fn claimed_warm(&mut self, id: usize, result: &Result<(), WakeError>) {
        let host = &self.hosts[id];
        match result {
            Err(WakeError::ClaimLost { node, .. }) if host.is_warm() => {
                warn!(host = %host.config.name, node = %node,
                    "another node serves this host: stopping the container found running here");
                let to = Tier::Stopped;
                self.apply(id, Event::SleepRequested { to });
            }
            Err(err) => {
                warn!(host = %host.config.name, error = %err, "cannot claim a host found warm");
            }
            Ok(()) => {}
        }
    }

    /// What the datapath does with host `id`'s packets in its current state.
    pub(super) fn mode_of(&self, id: usize) -> HostMode {
        match self.hosts[id].state {
            HostState::Sleeping { .. } if self.hosts[id].draining_from_packets.is_some() => {
                HostMode::Drain
            }
            HostState::Warm { .. } => HostMode::Pass,
            HostState::Elsewhere { .. } => HostMode::Forward,
            _ => HostMode::Hold,
        }
    }

    pub(super) fn on_cluster(&mut self, signal: Signal) {
        match signal {
            Signal::Target { host, target } => {
                let Some(id) = self.host_id(&host) else {
                    return;
                };
                match target {
                    Target::Node { name, .. } => {
                        self.hosts[id].served_by = Some(name);
                        self.apply(id, Event::ServedElsewhere);
                        self.stop_if_paused_here(id);
                    }
                    Target::Here => {
                        self.hosts[id].served_by = None;
                        self.apply(id, Event::ServedHere);
                    }
                }
                self.touch(id);
            }
            Signal::Fence => {
                warn!(
                    "lost the cluster's store: pausing every host this node runs until it is back"
                );
                if let Some(link) = self.cluster.as_mut() {
                    link.fenced = true;
                }
                self.publish_cluster();
                self.pause_while_fenced();
            }
            Signal::Unfence => {
                info!("the cluster's store answers again: hosts wake here again");
                if let Some(link) = self.cluster.as_mut() {
                    link.fenced = false;
                }
                self.publish_cluster();
            }
        }
    }

    /// Publishes the cluster's view (on the tick).
    pub(super) fn publish_cluster(&mut self) {
        if let Some(link) = &self.cluster {
            let view = link.handle.view();
            self.snapshot.send_if_modified(|s| {
                let changed = s.cluster.as_ref() != Some(&view);
                s.cluster = Some(view);
                changed
            });
        }
    }

    /// A host another node serves keeps no memory here: a container of it paused on this node
    /// (fenced earlier, or paused before the other node took it) is stopped. (The engine's
    /// event then corrects the tier, `engine_sync.rs`.)
    fn stop_if_paused_here(&mut self, id: usize) {
        let host = &self.hosts[id];
        if host.state == (HostState::Elsewhere { tier: Tier::Paused }) {
            info!(host = %host.config.name, node = host.served_by.as_deref().unwrap_or("?"),
                "another node serves the host: stopping its container paused here");
            self.jobs.sleep(id, host.spec.clone(), Tier::Stopped);
        }
    }

    /// While fenced, a host warm here (or just woken) is paused: another node may take it as
    /// soon as this node's lease expires. Called on the fence and on every tick.
    pub(super) fn pause_while_fenced(&mut self) {
        if !self.cluster.as_ref().is_some_and(|c| c.fenced) {
            return;
        }
        for id in 0..self.hosts.len() {
            if self.hosts[id].is_warm() {
                self.apply(id, Event::SleepRequested { to: Tier::Paused });
            }
        }
    }

    /// An operator's wake of a host another node serves is that node's to make.
    pub(super) fn not_elsewhere(&self, host: &str) -> Result<(), String> {
        match self.host_id(host).map(|id| &self.hosts[id]) {
            Some(h) if matches!(h.state, HostState::Elsewhere { .. }) => Err(format!(
                "host {host:?} is served by node {:?}: wake it there",
                h.served_by.as_deref().unwrap_or("?")
            )),
            _ => Ok(()),
        }
    }

    /// The claim a wake of host `id` makes first (none without `[cluster]`).
    pub(super) fn claimer(&self, id: usize) -> Option<Claimer> {
        let link = self.cluster.as_ref()?;
        Some(Claimer {
            cluster: link.handle.clone(),
            host: self.hosts[id].config.name.clone(),
            order: link.order[id].clone(),
        })
    }

    /// A wake that ended without a container: another node took the host first, so its held
    /// packets go there (`Event::ClaimLost`). False for any other failure.
    pub(super) fn claim_lost(&mut self, id: usize, err: &WakeError) -> bool {
        let WakeError::ClaimLost { node, address } = err else {
            return false;
        };
        info!(host = %self.hosts[id].config.name, node = %node, %address,
            "another node serves the host; its packets go there");
        self.hosts[id].wake = None;
        self.hosts[id].served_by = Some(node.clone());
        self.apply(id, Event::ClaimLost);
        true
    }

    /// Releases host `id` in the store when it stopped running here (its container stopped,
    /// paused or never started): from then on another node may take it.
    pub(super) fn release_if_left(&mut self, id: usize, before: HostState, after: HostState) {
        let held_claim = matches!(
            before,
            HostState::Waking { .. } | HostState::Warm { .. } | HostState::Sleeping { .. }
        );
        let left = matches!(after, HostState::Asleep { .. } | HostState::Failed { .. });
        let Some(link) = self.cluster.as_ref() else {
            return;
        };
        if !(held_claim && left) {
            return;
        }
        let handle = link.handle.clone();
        let order = link.order[id].clone();
        let host = self.hosts[id].config.name.clone();
        // Taken now, in order: a wake that follows waits for this release to finish.
        let in_order = order.clone().try_lock_owned();
        tokio::spawn(async move {
            let _in_order = match in_order {
                Ok(guard) => guard,
                Err(_) => order.lock_owned().await,
            };
            handle.release(&host).await;
        });
    }
}
