//! The cluster task: keeps this node's lease alive, follows the store's nodes and hosts (one
//! watch on the network's prefix, resumed after its last revision when it breaks), applies the
//! difference between the last and the new decision of `decide.rs` to the kernel (`routes.rs`)
//! and tells the orchestrator (a [`Signal`] after each route change), and fences the node when
//! no keep-alive was acknowledged for `lease - fence_margin`.

use std::{
    collections::BTreeMap,
    net::Ipv4Addr,
    sync::{Arc, Mutex},
    time::Duration,
};

use etcd_client::{LeaseKeepAliveStream, LeaseKeeper, WatchStream};
use ipnet::Ipv4Net;
use tokio::{
    sync::{mpsc, oneshot},
    time::{Instant, MissedTickBehavior},
};

use super::{Placed, Shared, Signal, Target, decide, routes::Routes, store::Store};
use crate::config::ClusterConfig;

pub(super) struct Task {
    pub store: Store,
    pub routes: Routes,
    pub shared: Arc<Mutex<Shared>>,
    pub signals: mpsc::Sender<Signal>,
    pub hosts: Vec<Placed>,
    pub config: ClusterConfig,
    pub network: String,
    pub subnet: Ipv4Net,
    pub address: Ipv4Addr,
    /// The revision the world in `shared` was read at.
    pub revision: i64,
}

/// What this node has applied for a host.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Applied {
    target: Target,
    metric: Option<u32>,
}

/// The next message of an optional stream; pending forever when there is none.
async fn next_ack(
    stream: &mut Option<(LeaseKeeper, LeaseKeepAliveStream)>,
) -> Result<Option<etcd_client::LeaseKeepAliveResponse>, etcd_client::Error> {
    match stream {
        Some((_, s)) => s.message().await,
        None => std::future::pending().await,
    }
}

async fn next_event(
    stream: &mut Option<WatchStream>,
) -> Result<Option<etcd_client::WatchResponse>, etcd_client::Error> {
    match stream {
        Some(s) => s.message().await,
        None => std::future::pending().await,
    }
}

impl Task {
    fn shared(&self) -> std::sync::MutexGuard<'_, Shared> {
        self.shared.lock().expect("cluster state lock poisoned")
    }

    fn lease(&self) -> i64 {
        self.shared().lease
    }

    /// Runs until `stop` fires (then leaves cleanly) or the task is aborted.
    pub async fn run(mut self, mut stop: oneshot::Receiver<()>) {
        let fence_after = self.config.lease.saturating_sub(self.config.fence_margin);
        let mut keep_alive = tokio::time::interval(self.config.lease / 3);
        keep_alive.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut check = tokio::time::interval(Duration::from_millis(200));
        check.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut keeper = self.store.keep_alive(self.lease()).await.ok();
        let mut watch = self.store.watch(self.revision + 1).await.ok();
        let mut last_ack = Instant::now();
        let mut lease_lost = false;
        let mut applied: BTreeMap<String, Applied> = BTreeMap::new();
        self.reconcile(&mut applied).await;
        loop {
            tokio::select! {
                _ = &mut stop => break,
                _ = keep_alive.tick() => {
                    // Fenced: a fresh keep-alive stream each tick. The old one may sit on a
                    // connection the partition killed, sending into it without an error and
                    // never acknowledged (seen in tests/cluster.rs: never unfenced after healing).
                    let fenced = self.shared().fenced;
                    if fenced && !lease_lost && last_ack.elapsed() >= self.config.lease {
                        // Nothing acknowledged for a whole lease: the store has let it go, and
                        // it refuses keep-alives for it ("lease not found"): take a new one.
                        lease_lost = true;
                    }
                    if lease_lost || keeper.is_none() || fenced {
                        let was_lost = lease_lost;
                        keeper = self.reopen_lease(&mut lease_lost).await;
                        if was_lost && !lease_lost {
                            // A new lease: a whole lease from now before it counts as lost.
                            last_ack = Instant::now();
                        }
                    }
                    // Bounded: the keeper's queue fills when its stream is stuck, and an
                    // unbounded send would stop this task for good.
                    if let Some((k, _)) = keeper.as_mut() {
                        match tokio::time::timeout(super::store::CALL_TIMEOUT, k.keep_alive()).await {
                            Ok(Ok(())) => {}
                            Ok(Err(err)) => {
                                tracing::warn!(error = %err, "sending a keep-alive failed");
                                keeper = None;
                            }
                            Err(_) => {
                                tracing::warn!("a keep-alive could not be sent in time; reconnecting");
                                keeper = None;
                            }
                        }
                    }
                    if watch.is_none() && !self.shared().fenced {
                        watch = self.rewatch(&mut applied).await;
                    }
                }
                ack = next_ack(&mut keeper) => match ack {
                    Ok(Some(ack)) if ack.ttl() > 0 => {
                        last_ack = Instant::now();
                        if self.shared().fenced {
                            watch = self.unfence(&mut applied).await;
                        }
                    }
                    Ok(Some(_)) => {
                        tracing::warn!(lease = self.lease(), "the store says this node's lease expired");
                        lease_lost = true;
                        keeper = None;
                    }
                    Ok(None) | Err(_) => keeper = None,
                },
                event = next_event(&mut watch) => match event {
                    Ok(Some(response)) if response.canceled() || response.compact_revision() > 0 => {
                        tracing::warn!(reason = response.cancel_reason(), "the store ended the watch; reading everything again");
                        watch = None;
                        self.resnapshot(&mut applied).await;
                    }
                    Ok(Some(response)) => {
                        self.apply_events(&response);
                        self.reconcile(&mut applied).await;
                    }
                    Ok(None) | Err(_) => watch = None,
                },
                _ = check.tick() => {
                    if !self.shared().fenced && last_ack.elapsed() >= fence_after {
                        self.fence(&mut applied).await;
                    }
                }
            }
        }
        self.leave().await;
    }

    fn apply_events(&mut self, response: &etcd_client::WatchResponse) {
        let mut shared = self.shared.lock().expect("cluster state lock poisoned");
        for event in response.events() {
            self.store.apply_event(&mut shared.world, event);
            if let Some(kv) = event.kv() {
                self.revision = self.revision.max(kv.mod_revision());
            }
        }
        if let Some(header) = response.header() {
            self.revision = self.revision.max(header.revision());
        }
    }

    /// A new keep-alive stream for the current lease, or (when the store says it expired) a new
    /// lease and registration.
    async fn reopen_lease(
        &mut self,
        lease_lost: &mut bool,
    ) -> Option<(LeaseKeeper, LeaseKeepAliveStream)> {
        if *lease_lost {
            let lease = self.store.grant(self.config.lease).await.ok()?;
            self.store.register(lease, self.address).await.ok()?;
            tracing::info!(lease, "registered again under a new lease");
            self.shared().lease = lease;
            *lease_lost = false;
        }
        self.store.keep_alive(self.lease()).await.ok()
    }

    async fn rewatch(&mut self, applied: &mut BTreeMap<String, Applied>) -> Option<WatchStream> {
        if let Ok(watch) = self.store.watch(self.revision + 1).await {
            return Some(watch);
        }
        // Perhaps compacted past our revision: start over from a fresh read.
        self.resnapshot(applied).await;
        self.store.watch(self.revision + 1).await.ok()
    }

    async fn resnapshot(&mut self, applied: &mut BTreeMap<String, Applied>) {
        match self.store.snapshot().await {
            Ok((world, revision)) => {
                self.shared().world = world;
                self.revision = revision;
                self.reconcile(applied).await;
            }
            Err(err) => tracing::warn!(error = %err, "reading the cluster store failed"),
        }
    }

    /// Fencing: no keep-alive acknowledged for `lease - fence_margin`. Every announcement goes
    /// first, then the orchestrator is told to stop serving.
    async fn fence(&mut self, applied: &mut BTreeMap<String, Applied>) {
        tracing::error!(
            node = self.store.node(),
            "the cluster store has not acknowledged a keep-alive for lease - fence_margin: \
             fencing (announcements withdrawn, hosts paused)"
        );
        if let Err(err) = self.routes.withdraw_all().await {
            tracing::error!(error = %err, "withdrawing the announcements failed");
        }
        for state in applied.values_mut() {
            state.metric = None;
        }
        {
            let mut shared = self.shared();
            shared.fenced = true;
            shared.counters.fences += 1;
        }
        let _ = self.signals.send(Signal::Fence).await;
    }

    /// The store answers again and the lease (old or new) is alive: read everything again,
    /// announce again, and tell the orchestrator.
    async fn unfence(&mut self, applied: &mut BTreeMap<String, Applied>) -> Option<WatchStream> {
        if let Err(err) = self.store.register(self.lease(), self.address).await {
            tracing::warn!(error = %err, "registering again failed; retrying");
            return None;
        }
        self.shared().fenced = false;
        self.resnapshot(applied).await;
        tracing::info!(
            node = self.store.node(),
            "the cluster store answers again: unfenced"
        );
        let _ = self.signals.send(Signal::Unfence).await;
        self.store.watch(self.revision + 1).await.ok()
    }

    /// Applies the new decision: main-table routes (then a Signal) for changed targets,
    /// announcements for changed metrics (none while fenced).
    async fn reconcile(&mut self, applied: &mut BTreeMap<String, Applied>) {
        let (world, fenced) = {
            let shared = self.shared();
            (shared.world.clone(), shared.fenced)
        };
        let decisions = decide(self.store.node(), &world, &self.hosts, self.config.metric);
        for host in &self.hosts {
            let Some(decision) = decisions.get(&host.name) else {
                continue;
            };
            let state = applied.entry(host.name.clone()).or_insert(Applied {
                target: Target::Here,
                metric: None,
            });
            if state.target != decision.target {
                let done = match &decision.target {
                    Target::Here => self.routes.unroute(host.address).await.map(|()| None),
                    Target::Node { name, address } => self
                        .routes
                        .route_to(host.address, name, *address)
                        .await
                        .map(Some),
                };
                match done {
                    Ok(hop) => {
                        tracing::info!(host = host.name, target = ?decision.target, ?hop, "target changed");
                        state.target = decision.target.clone();
                        let _ = (self.signals)
                            .send(Signal::Target {
                                host: host.name.clone(),
                                target: decision.target.clone(),
                            })
                            .await;
                    }
                    Err(err) => {
                        tracing::warn!(host = host.name, error = %err, "routing the host failed; retried on the next change");
                    }
                }
            }
            let metric = if fenced { None } else { decision.metric };
            if state.metric != metric {
                let done = match metric {
                    Some(metric) => self.routes.announce(host.address, metric).await,
                    None => self.routes.withdraw(host.address).await,
                };
                match done {
                    Ok(()) => state.metric = metric,
                    Err(err) => {
                        tracing::warn!(host = host.name, error = %err, "announcing the host failed");
                    }
                }
            }
        }
        self.shared().decisions = decisions;
    }

    /// A clean exit: announcements and main-table routes of ours removed, the nat rule removed,
    /// the lease revoked (this node's key and every host key it holds go at once).
    async fn leave(&mut self) {
        if let Err(err) = self.routes.flush().await {
            tracing::warn!(error = %err, "removing the cluster's routes failed");
        }
        crate::firewall::forget_subnet_source(&self.network, self.subnet);
        if let Err(err) = self.store.revoke(self.lease()).await {
            tracing::warn!(error = %err, "revoking the lease failed; its keys expire with it");
        }
        tracing::info!(node = self.store.node(), "left the cluster");
    }
}
