//! The orchestrator: one task that owns every host's state, its held packets and the datapath's
//! view of it, and performs the actions that [`state::next`] decides.
//!
//! Inputs arrive on channels — held frames from the ring buffer reader, outcomes of the jobs it
//! spawned ([`jobs`]), container events from the engine, operator commands — and are handled one
//! at a time, so no two decisions about a host ever interleave. The decisions themselves are pure:
//! [`state::next`] for events, [`hosts::tick`] for timers (idleness, escalation, settling). This
//! file is the shell that feeds them and performs what they return; after every input it
//! publishes a [`Snapshot`] for its observers (`/metrics`, `status`), which never reach in.

pub mod budget;
pub mod cluster;
mod depends;
mod engine_sync;
mod governor;
pub mod held;
pub mod hosts;
mod jobs;
mod outcomes;
mod page_out;
mod prewake;
#[cfg(test)]
mod prewake_tests;
pub mod rate;
mod release;
pub mod state;
#[cfg(test)]
mod tests;
mod wake_metrics;
mod wake_together;

use std::{sync::Arc, time::Duration};

use tokio::sync::{mpsc, oneshot, watch};
use tracing::{debug, info, warn};

use self::{
    governor::Governor,
    held::{Admission, HeldPackets},
    hosts::{SleepCause, Tick},
    jobs::{Jobs, Outcome, WakeJob},
    state::{Action, Event, HostState, Policy, Tier},
};
pub use self::{hosts::Host, wake_metrics::WakeMetrics};
use crate::{
    clock::monotonic_ns,
    config::{Config, HostConfig, ReadyProbe},
    datapath::{Datapath, HostMode, HostTable, addr_key, ring::HeldFrame},
    interfaces::Interface,
    packets::{self, Wire},
    readiness::ListenWatch,
    report::{HoldCounters, Snapshot, WakeTimings},
    runtime::{ContainerRuntime, RuntimeEvent},
};

/// How often held packets are checked against their host's wake timeout.
const EXPIRY_INTERVAL: Duration = Duration::from_secs(1);
/// How often warm hosts are checked for idleness (and paused ones for escalation), at least.
const TICK_INTERVAL: Duration = Duration::from_millis(250);
/// How often at most: the lag the agent allows the datapath's activity stamps behind its own
/// clock (the kernel's coarse clock, `hosts::sleep_called_off`); looking more often would not
/// judge idleness better.
const MIN_TICK_INTERVAL: Duration = Duration::from_nanos(crate::clock::COARSE_CLOCK_LAG_NS);

/// How often the orchestrator looks at its hosts: a quarter of the shortest idle timeout (so a
/// host sleeps within a quarter of its timeout past it), within [`MIN_TICK_INTERVAL`] and
/// [`TICK_INTERVAL`]. With the usual timeouts (seconds and more) that is every 250 ms. Only
/// `idle_timeout` counts: `stop_after` and `swap_after` are looked at as often, no more.
fn tick_interval(hosts: &[Host]) -> Duration {
    hosts
        .iter()
        .filter_map(|h| h.config.idle_timeout)
        .min()
        .map_or(TICK_INTERVAL, |shortest| {
            (shortest / 4).clamp(MIN_TICK_INTERVAL, TICK_INTERVAL)
        })
}

/// Inputs from outside the orchestrator: the engine and the operator.
pub enum Input {
    /// The engine reports something about the containers of this network (`engine_sync.rs`).
    Engine(RuntimeEvent),
    /// Wake a host now (as a packet would).
    Wake {
        host: String,
        reply: oneshot::Sender<Result<(), String>>,
    },
    /// Put a host to sleep now, in its configured tier (or `to`).
    Sleep {
        host: String,
        to: Option<Tier>,
        reply: oneshot::Sender<Result<(), String>>,
    },
    /// Scale-out: the cluster routed a host, or this node lost or regained the store.
    Cluster(crate::cluster::Signal),
}

pub struct Orchestrator<R: ContainerRuntime, D: HostTable = Datapath> {
    pub hosts: Vec<Host>,
    datapath: D,
    jobs: Jobs<R>,
    /// For refusals and neighbour announcements; `None` if it could not be opened.
    wire: Option<Arc<Wire>>,
    /// The imag bridge, where neighbours are told which MAC serves a host.
    bridge: Option<Interface>,
    policy: Policy,
    ready_events: bool,
    /// Readiness by event: wakes waiting for `tcp:PORT` watch their port through it.
    listen: ListenWatch,
    pub held: HeldPackets,
    outcomes: mpsc::UnboundedReceiver<Outcome>,
    pub counters: HoldCounters,
    wake_metrics: WakeMetrics,
    snapshot: watch::Sender<Snapshot>,
    /// Hosts whose view changed since the last publication.
    changed: Vec<usize>,
    /// The budget and the wake rate limits (`governor.rs`).
    governor: Governor,
    /// `wakes_with` and learned pre-wakes (`wake_together.rs`).
    prewake: wake_together::Prewake,
    /// Scale-out: the cluster this node belongs to (`cluster.rs`), without `[cluster]` none.
    cluster: Option<cluster::ClusterLink>,
    /// When the tick last did what needs no more than every [`TICK_INTERVAL`] (the governor,
    /// the cluster, the datapath's counters), however often it looks at idleness. Tokio's clock,
    /// so that tests on its paused clock see housekeeping when they let time pass.
    housekept: Option<tokio::time::Instant>,
    /// Page-outs waiting and under way (`page_out.rs`).
    page_outs: page_out::Queue,
}

impl<R: ContainerRuntime, D: HostTable> Orchestrator<R, D> {
    /// `hosts` are in config order; a host's index is its `host_id` in the datapath.
    /// `listen` is readiness by event (the datapath's waited-for ports and LISTEN events).
    pub fn new(
        mut hosts: Vec<Host>,
        datapath: D,
        runtime: R,
        config: &Config,
        bridge: Option<Interface>,
        listen: ListenWatch,
    ) -> Orchestrator<R, D> {
        depends::link(&mut hosts);
        let (outcomes_tx, outcomes) = mpsc::unbounded_channel();
        let wire = match Wire::open() {
            Ok(wire) => Some(Arc::new(wire)),
            Err(err) => {
                warn!(error = %err, "cannot open a packet socket: failed wakes will time out \
                    instead of being refused, and neighbours will not be told about wakes");
                None
            }
        };
        let snapshot = Snapshot {
            network: config.network.name.clone(),
            subnet: config.network.subnet.to_string(),
            hosts: hosts
                .iter()
                .map(|h| h.view(0, config.limits.default_host_memory))
                .collect(),
            ..Snapshot::default()
        };
        Orchestrator {
            held: HeldPackets::new(hosts.len(), config.hold),
            hosts,
            datapath,
            jobs: Jobs {
                runtime,
                outcomes: outcomes_tx,
                engine: Arc::new(tokio::sync::Semaphore::new(config.limits.max_engine_calls)),
            },
            wire,
            bridge,
            policy: Policy {
                backoff_base: config.wake.backoff,
                backoff_max: config.wake.backoff_max,
                ..Policy::default()
            },
            ready_events: config.wake.ready_events,
            listen,
            outcomes,
            counters: HoldCounters::default(),
            wake_metrics: WakeMetrics::new(),
            snapshot: watch::Sender::new(snapshot),
            changed: Vec::new(),
            governor: Governor::new(&config.limits),
            prewake: wake_together::Prewake::new(config.wake.prewake),
            cluster: None,
            housekept: None,
            page_outs: page_out::Queue::default(),
        }
    }

    /// Builds the hosts of `config`, each in `initial(host)`.
    pub fn hosts_from(
        config: &Config,
        mut initial: impl FnMut(&HostConfig) -> HostState,
    ) -> Vec<Host> {
        let now_ns = monotonic_ns();
        config
            .hosts
            .iter()
            .map(|h| Host::new(&config.network.name, h.clone(), initial(h), now_ns))
            .collect()
    }

    pub fn datapath(&self) -> &D {
        &self.datapath
    }

    pub fn datapath_mut(&mut self) -> &mut D {
        &mut self.datapath
    }

    /// Drops the packet socket: refusals and neighbour announcements are not sent (for tests).
    #[cfg(test)]
    fn without_wire(mut self) -> Self {
        self.wire = None;
        self
    }

    /// The orchestrator's wake metrics, for the registry behind `/metrics`.
    pub fn wake_metrics(&self) -> &WakeMetrics {
        &self.wake_metrics
    }

    /// What observers read: every host's view, the counters, the datapath's verdicts.
    pub fn subscribe(&self) -> watch::Receiver<Snapshot> {
        self.snapshot.subscribe()
    }

    /// Says where this agent came from: whether it adopted an earlier agent's datapath, and the
    /// configuration file it was started with.
    pub fn set_origin(&self, adopted: bool, config: &std::path::Path) {
        let config = std::fs::canonicalize(config).unwrap_or_else(|_| config.to_path_buf());
        self.snapshot.send_modify(|s| {
            s.adopted = adopted;
            s.config = Some(config.display().to_string());
        });
    }

    /// Writes every host into the datapath according to its state (entry, activity, ignored
    /// peers, allowed sources), and starts activity counting on the links of warm hosts.
    pub fn publish_hosts(&mut self) -> Result<(), crate::datapath::DatapathError> {
        // Before the entries: a host flagged restricted must find its sources already there.
        let allowed: Vec<(u32, ipnet::Ipv4Net)> = (self.hosts.iter().enumerate())
            .flat_map(|(id, h)| {
                h.config
                    .allow_from
                    .iter()
                    .flatten()
                    .map(move |p| (host_id(id), *p))
            })
            .collect();
        self.datapath.set_allowed(&allowed)?;
        for id in 0..self.hosts.len() {
            let mode = self.mode_of(id);
            let host = &self.hosts[id];
            self.datapath
                .set_host(host.config.address, host_id(id), mode, host.flags)?;
            self.datapath.ensure_activity(host.config.address)?;
            for prefix in &host.config.idle_ignore {
                self.datapath.ignore_peers(host_id(id), *prefix)?;
            }
        }
        for id in 0..self.hosts.len() {
            if self.hosts[id].is_warm() {
                // Adopted warm hosts: their connections may have changed while no agent ran.
                self.inspect_warm_container(id, false, true, true);
            }
        }
        self.refresh();
        Ok(())
    }

    /// Handles inputs until `shutdown` resolves.
    pub async fn run(
        &mut self,
        held: &mut mpsc::Receiver<HeldFrame>,
        inputs: &mut mpsc::Receiver<Input>,
        shutdown: impl std::future::Future<Output = ()>,
    ) {
        tokio::pin!(shutdown);
        let mut expiry = tokio::time::interval(EXPIRY_INTERVAL);
        let mut tick = tokio::time::interval(tick_interval(&self.hosts));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                Some(frame) = held.recv() => self.on_held(frame),
                Some(outcome) = self.outcomes.recv() => self.on_outcome(outcome),
                Some(input) = inputs.recv() => self.on_input(input),
                _ = expiry.tick() => self.expire_held(),
                _ = tick.tick() => self.tick(),
                () = &mut shutdown => return,
            }
            self.publish();
        }
    }

    /// Publishes what changed since the last publication: one notification per input.
    fn publish(&mut self) {
        if self.changed.is_empty() {
            return;
        }
        let mut changed = std::mem::take(&mut self.changed);
        changed.sort_unstable();
        changed.dedup();
        let counters = self.counters;
        let budget = self.budget_view();
        self.snapshot.send_modify(|s| {
            s.counters = counters;
            s.budget = budget;
            for &id in &changed {
                s.hosts[id] = self.hosts[id].view(self.held.len(id), self.weight_of(id));
            }
        });
        self.changed = changed;
        self.changed.clear();
    }

    /// Marks host `id` as changed for the next publication.
    fn touch(&mut self, id: usize) {
        self.changed.push(id);
    }

    /// Re-reads every host's activity and the datapath's counters, and publishes them.
    fn refresh(&mut self) {
        for id in 0..self.hosts.len() {
            let addr = self.hosts[id].config.address;
            self.hosts[id].activity = self.datapath.activity(addr).unwrap_or_default();
            self.touch(id);
        }
        self.snapshot
            .send_modify(|s| s.datapath = self.datapath.stats().to_vec());
        self.publish();
    }

    fn on_held(&mut self, frame: HeldFrame) {
        let mut id = frame.header.host_id as usize;
        let matches = |hosts: &[Host], id: usize| {
            hosts
                .get(id)
                .is_some_and(|h| addr_key(h.config.address) == frame.header.host_addr)
        };
        if !matches(&self.hosts, id) {
            // Held by a datapath that an earlier agent (with another configuration) set up.
            if let Some(found) = self
                .hosts
                .iter()
                .position(|h| addr_key(h.config.address) == frame.header.host_addr)
            {
                id = found;
            } else {
                self.counters.dropped_unknown_host += 1;
                return;
            }
        }
        self.counters.held += 1;
        if !packets::to_declared_port(&frame.frame, &self.hosts[id].config.ports) {
            // Not a port the host serves: the forwarding rule would drop the rest of this
            // traffic, so it wakes nothing and its sender learns at once.
            debug!(host = %self.hosts[id].config.name, packet = %summary(&frame.frame),
                "refused: not one of the host's ports");
            self.refuse_frame(&frame);
            return;
        }
        self.touch(id);
        if self.rate_limited(id, &frame) {
            return;
        }
        self.note_held(id, &frame);
        let host = &self.hosts[id];
        if host.wake.is_none() && self.held.is_empty(id) {
            debug!(host = %host.config.name, packet = %summary(&frame.frame), "first packet held");
        }
        match self.held.push(id, frame) {
            Admission::Held => {}
            Admission::DroppedHostLimit => {
                self.counters.dropped_host_limit += 1;
                debug!(host = %host.config.name, "hold queue of the host full; packet dropped");
            }
            Admission::DroppedGlobalLimit => {
                self.counters.dropped_global_limit += 1;
                debug!(host = %host.config.name, "global hold limit reached; packet dropped");
            }
        }
        self.apply(id, Event::PacketHeld);
    }

    fn on_input(&mut self, input: Input) {
        match input {
            Input::Engine(event) => self.on_engine_event(&event),
            Input::Wake { host, reply } => {
                let result = self.with_host(&host, |this, id| this.apply(id, Event::WakeRequested));
                let result = result.and_then(|()| self.not_elsewhere(&host));
                let _ = reply.send(result);
            }
            Input::Cluster(signal) => self.on_cluster(signal),
            Input::Sleep { host, to, reply } => {
                let result = self.with_host(&host, |this, id| {
                    let to = to.unwrap_or(this.hosts[id].config.sleep);
                    this.hosts[id].sleep_cause = Some(SleepCause::Requested);
                    this.apply(id, Event::SleepRequested { to });
                });
                let _ = reply.send(result);
            }
        }
    }

    fn with_host(&mut self, name: &str, f: impl FnOnce(&mut Self, usize)) -> Result<(), String> {
        let id = self
            .host_id(name)
            .ok_or_else(|| format!("no host named {name:?}"))?;
        f(self, id);
        Ok(())
    }

    fn host_id(&self, name: &str) -> Option<usize> {
        self.hosts.iter().position(|h| h.config.name == name)
    }

    /// Discards held packets older than their host's wake timeout.
    fn expire_held(&mut self) {
        let now = monotonic_ns();
        for id in 0..self.hosts.len() {
            let cutoff = hosts::expiry_cutoff(&self.hosts[id], now);
            let expired = self.held.expire(id, cutoff) as u64;
            if expired > 0 {
                self.counters.dropped_expired += expired;
                self.touch(id);
            }
        }
    }

    /// The periodic look at every host: reads the activity of each host that can have traffic
    /// (once, for both idleness and the observers; sleeping hosts' counters do not move and are
    /// not read: with thousands of configured hosts that would be thousands of syscalls a tick)
    /// and acts on the timers that fired.
    fn tick(&mut self) {
        let now_ns = monotonic_ns();
        let now = tokio::time::Instant::now();
        // Looks come with some jitter: allowing one shortest interval keeps housekeeping at
        // every look when looks come every 250 ms, and at about every 250 ms when more often.
        if (self.housekept).is_none_or(|at| now - at + MIN_TICK_INTERVAL >= TICK_INTERVAL) {
            self.housekept = Some(now);
            let stats = self.datapath.stats().to_vec();
            self.snapshot.send_if_modified(|s| {
                let changed = s.datapath != stats;
                s.datapath = stats;
                changed
            });
            self.govern(now_ns);
            self.pause_while_fenced();
            self.publish_cluster();
        }
        self.prewake_tick(now_ns);
        for id in 0..self.hosts.len() {
            let host = &self.hosts[id];
            if host.has_traffic() {
                let activity = self
                    .datapath
                    .activity(host.config.address)
                    .unwrap_or_default();
                if activity != self.hosts[id].activity {
                    self.hosts[id].activity = activity;
                    self.touch(id);
                }
            }
            let host = &self.hosts[id];
            let unsettled = host.is_warm() && self.jobs.runtime.unsettled(&host.spec);
            match hosts::tick(host, &host.activity, unsettled, now_ns) {
                None => {}
                Some(Tick::Settle) => self.start_settle(id),
                Some(Tick::PageOut) => self.start_page_out(id),
                Some(Tick::Escalate) => {
                    self.hosts[id].sleep_cause = Some(SleepCause::Requested);
                    self.apply(id, Event::Idle { to: Tier::Stopped });
                }
                // Pre-woken, and its source may still call it.
                Some(Tick::Idle { .. }) if self.prewake_awaited(id) => {}
                Some(Tick::Idle { to }) => {
                    self.hosts[id].sleep_cause = Some(SleepCause::Idle { decided_ns: now_ns });
                    self.apply(id, Event::Idle { to });
                }
            }
        }
    }

    /// Feeds `event` to the state machine and performs the resulting actions.
    pub fn apply(&mut self, id: usize, event: Event) {
        let host = &self.hosts[id];
        let policy = Policy {
            min_warm: host.config.min_warm,
            ..self.policy
        };
        let (after, actions) = state::next(host.state, event, std::time::Instant::now(), &policy);
        self.transition(id, after, actions, &event);
    }

    /// Moves host `id` into `after` (for the reason `why`) and performs `actions`.
    fn transition(
        &mut self,
        id: usize,
        after: HostState,
        actions: Vec<Action>,
        why: &dyn std::fmt::Debug,
    ) {
        self.touch(id);
        let host = &mut self.hosts[id];
        let before = host.state;
        host.state = after;
        if before != after {
            // Observations asked for before this are stale (`engine_sync.rs`).
            host.epoch += 1;
        }
        if before.name() != after.name() {
            debug!(host = %host.config.name, from = before.name(), to = after.name(), ?why, "state");
            if !self.hosts[id].dependents.is_empty() {
                self.dependency_changed(id);
            }
            self.prewake_state_changed(id, after);
            self.learn_sleep_if_woken(id, before, after);
            let host = &mut self.hosts[id];
            match after {
                HostState::Warm { .. } => {
                    host.warm_since_ns = monotonic_ns();
                    host.healthy = None;
                }
                HostState::Asleep { tier } => {
                    host.asleep_since_ns = monotonic_ns();
                    host.sleep_cause = None;
                    info!(host = %host.config.name, tier = tier.as_str(), "asleep");
                    if tier != Tier::Paused {
                        // Its link is gone with the container, and so are its connections.
                        let addr = host.config.address;
                        self.datapath.detach_host_link(addr);
                        let _ = self.datapath.reset_connections(addr, 0);
                        self.hosts[id].activity.tcp_opened = 0;
                        self.hosts[id].activity.tcp_closed = 0;
                        self.hosts[id].pid = None;
                    }
                }
                _ => {}
            }
        }
        self.release_if_left(id, before, after);
        for action in actions {
            self.perform(id, action);
        }
        if before.name() != after.name() {
            // Room may have been freed, or a wake slot.
            self.pump_wakes();
        }
    }

    fn perform(&mut self, id: usize, action: Action) {
        match action {
            Action::Hold | Action::Drain | Action::Pass | Action::Forward => {
                let mode = match action {
                    Action::Hold => HostMode::Hold,
                    Action::Drain => HostMode::Drain,
                    Action::Pass => HostMode::Pass,
                    _ => HostMode::Forward,
                };
                self.set_mode(id, mode);
                if matches!(mode, HostMode::Hold | HostMode::Drain) {
                    // Leaving warm: neighbours on the bridge must stop using the container's MAC
                    // address and send to the bridge, where the datapath holds and answers.
                    let host = &self.hosts[id];
                    if let (Some(wire), Some(bridge)) = (&self.wire, &self.bridge) {
                        jobs::announce(wire, bridge.index, host.config.address, bridge.mac);
                    }
                }
            }
            Action::StartWake { from } => self.start_wake(id, from),
            Action::DeliverHeld => self.deliver_held(id),
            Action::RefuseHeld => self.refuse_held(id),
            Action::StartSleep { to } => self.start_sleep(id, to),
        }
    }

    fn start_wake(&mut self, id: usize, from: Tier) {
        let held_ns = self.held.oldest_ns(id).unwrap_or(0);
        let host = &mut self.hosts[id];
        host.wake = Some((
            from,
            WakeTimings {
                held_ns,
                requested_ns: monotonic_ns(),
                ..WakeTimings::default()
            },
        ));
        self.queue_wake(id, from);
    }

    /// A wake the budget admitted: its `wakes_with` and learned companions with it, its
    /// dependencies first, then its own container.
    fn wake_admitted(&mut self, id: usize, from: Tier) {
        self.wake_companions(id);
        if !self.dependencies_ready(id, from) {
            return;
        }
        self.spawn_wake(id, from);
    }

    /// Starts host `id`'s own wake job (its dependencies, if any, are warm).
    fn spawn_wake(&mut self, id: usize, from: Tier) {
        let claim = self.claimer(id);
        let host = &mut self.hosts[id];
        if let Some((_, timings)) = host.wake.as_mut() {
            timings.requested_ns = monotonic_ns();
        }
        let probe = host.config.ready;
        let listen = match probe {
            ReadyProbe::Tcp(port) if self.ready_events => Some(self.listen.watch(port)),
            _ => None,
        };
        let job = WakeJob {
            from,
            probe,
            timeout: host.config.wake_timeout,
            poll: host.config.ready_poll,
            listen,
            claim,
        };
        self.jobs.wake(id, host.spec.clone(), job);
    }

    /// What the datapath does with host `id`'s packets from now on.
    fn set_mode(&mut self, id: usize, mode: HostMode) {
        let host = &mut self.hosts[id];
        host.draining_from_packets = (mode == HostMode::Drain).then(|| {
            let activity = self.datapath.activity(host.config.address);
            activity.unwrap_or_default().packets_in
        });
        if let Err(err) = self
            .datapath
            .set_host(host.config.address, host_id(id), mode, host.flags)
        {
            warn!(host = %host.config.name, error = %err, "updating the datapath failed");
        }
    }

    fn start_sleep(&mut self, id: usize, to: Tier) {
        if self.hosts[id].draining_from_packets.is_some() {
            // A warm host: the datapath holds its new packets from now on, and lets those
            // already past the hold point reach it; give them a moment to show up in its
            // activity before committing (Outcome::SleepCheck).
            self.jobs.sleep_check(id);
        } else {
            self.spawn_sleep(id, to);
        }
    }

    fn spawn_sleep(&mut self, id: usize, to: Tier) {
        let host = &self.hosts[id];
        info!(host = %host.config.name, to = to.as_str(), "going to sleep");
        self.jobs.sleep(id, host.spec.clone(), to);
    }

    fn start_settle(&mut self, id: usize) {
        self.hosts[id].settling = true;
        self.jobs.settle(id, self.hosts[id].spec.clone());
    }
}

fn summary(frame: &[u8]) -> String {
    packets::summarize(frame).map_or_else(|e| e.to_string(), |s| s.to_string())
}

/// A host's index in the table as the datapath's host id.
#[allow(
    clippy::cast_possible_truncation,
    reason = "the datapath's maps hold at most MAX_HOSTS (a u32) hosts: an index never nears u32::MAX"
)]
fn host_id(index: usize) -> u32 {
    index as u32
}
