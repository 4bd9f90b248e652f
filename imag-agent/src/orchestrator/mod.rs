//! The orchestrator: one task that owns every host's state, its held packets and the datapath's
//! view of it, and performs the actions that [`state::next`] decides.
//!
//! Inputs arrive on channels — held frames from the ring buffer reader, outcomes of wakes and
//! sleeps from the tasks it spawned, container events from the engine, operator commands — and
//! are handled one at a time, so no two decisions about a host ever interleave. Slow work (talking
//! to the container engine, probing readiness) runs in spawned tasks that report back with a
//! message; the orchestrator itself never waits on it. A timer drives idleness: warm hosts whose
//! datapath activity shows neither packets nor open connections for their idle timeout go to
//! sleep.

pub mod held;
pub mod state;

use std::{
    net::Ipv4Addr,
    sync::Arc,
    time::{Duration, Instant},
};

use imag_common::{
    HOST_FLAG_ANSWER_PING, HOST_FLAG_IGNORES_PEERS, HOST_FLAG_PROXY_ARP, HostActivity,
};
use tokio::sync::{broadcast, mpsc, oneshot};
use tracing::{debug, info, warn};

use self::{
    held::{Admission, HeldPackets},
    state::{Action, Event, HostState, Policy, Tier},
};
use crate::{
    clock::{monotonic_ns, ms_between},
    config::{Config, HostConfig, ReadyProbe},
    control::{HostStatus, StatusReport},
    datapath::{Datapath, addr_key, ring::HeldFrame},
    interfaces::{self, Interface},
    metrics::Metrics,
    packets::{self, Wire},
    procnet,
    readiness::{self, ReadyBy, ReadyError},
    runtime::{ContainerRuntime, ContainerSpec, RuntimeError, Started},
};

/// How often held packets are checked against their host's wake timeout.
const EXPIRY_INTERVAL: Duration = Duration::from_secs(1);
/// How often warm hosts are checked for idleness (and paused ones for escalation).
const IDLE_CHECK_INTERVAL: Duration = Duration::from_millis(250);
/// After the datapath switched an idle host to hold, how long to wait for packets already past
/// the hold point to reach the container (and show up in its activity) before deciding.
const SLEEP_SETTLE_TIME: Duration = Duration::from_millis(2);
/// How long a fast-woken host must have been quiet before the engine's view of it is repaired
/// (which freezes it for the engine's unpause, a few tens of milliseconds).
const SETTLE_QUIET: Duration = Duration::from_secs(1);

/// The timings of one wake, as CLOCK_MONOTONIC nanoseconds.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct WakeTimings {
    /// When the datapath held the first packet (0 for an operator's wake).
    pub held_ns: u64,
    /// When the agent asked the engine to create/start/unpause.
    pub requested_ns: u64,
    /// When the engine reported the container running.
    pub running_ns: u64,
    /// When the ready probe passed.
    pub ready_ns: u64,
    /// When the held packets had been re-delivered.
    pub delivered_ns: u64,
}

impl WakeTimings {
    /// Milliseconds: held → requested, requested → running, running → ready, ready → delivered,
    /// and held (or requested) → delivered.
    pub fn phases_ms(&self) -> [f64; 5] {
        let start = if self.held_ns != 0 {
            self.held_ns
        } else {
            self.requested_ns
        };
        [
            if self.held_ns != 0 {
                ms_between(self.held_ns, self.requested_ns)
            } else {
                0.0
            },
            ms_between(self.requested_ns, self.running_ns),
            ms_between(self.running_ns, self.ready_ns),
            ms_between(self.ready_ns, self.delivered_ns),
            ms_between(start, self.delivered_ns),
        ]
    }
}

/// The outcome of the latest wake of a host.
#[derive(Clone, Debug, PartialEq)]
pub struct WakeRecord {
    pub from: Tier,
    pub timings: WakeTimings,
    /// `None` on success, else the reason label and the message.
    pub failure: Option<(&'static str, String)>,
    /// Packets re-delivered (or refused, on failure).
    pub packets: usize,
}

/// Why a host is going to sleep.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SleepCause {
    /// Idleness decided at this CLOCK_MONOTONIC time: called off if traffic shows up after it.
    Idle { decided_ns: u64 },
    /// The operator (or an escalation): no second look.
    Requested,
}

/// One configured host and everything the orchestrator tracks about it.
pub struct Host {
    pub config: HostConfig,
    pub spec: ContainerSpec,
    pub state: HostState,
    /// `HOST_FLAG_*` bits for the datapath.
    pub flags: u8,
    /// The wake under way: where it started from and its timings so far.
    wake: Option<(Tier, WakeTimings)>,
    pub last_wake: Option<WakeRecord>,
    /// Whether this agent process woke the container (and so stops it on exit).
    pub started_here: bool,
    /// CLOCK_MONOTONIC ns when the host last became warm.
    pub warm_since_ns: u64,
    /// When the host last fell asleep.
    pub asleep_since: Instant,
    sleep_cause: Option<SleepCause>,
    /// The port a wake asked the datapath to report LISTEN events for.
    watched_port: Option<u16>,
    /// A settle (engine view repair) is under way.
    settling: bool,
    /// What made the latest wake ready.
    pub ready_by: ReadyBy,
}

impl Host {
    pub fn new(network: &str, config: HostConfig, state: HostState) -> Host {
        let flags = if config.proxy_arp {
            HOST_FLAG_PROXY_ARP
        } else {
            0
        } | if config.answer_ping {
            HOST_FLAG_ANSWER_PING
        } else {
            0
        } | if config.idle_ignore.is_empty() {
            0
        } else {
            HOST_FLAG_IGNORES_PEERS
        };
        Host {
            spec: ContainerSpec::for_host(network, &config),
            config,
            state,
            flags,
            wake: None,
            last_wake: None,
            started_here: false,
            warm_since_ns: monotonic_ns(),
            asleep_since: Instant::now(),
            sleep_cause: None,
            watched_port: None,
            settling: false,
            ready_by: ReadyBy::FirstTry,
        }
    }

    /// When the host last did something that counts against idleness: its latest counted
    /// packet, or becoming warm.
    fn last_active_ns(&self, activity: &HostActivity) -> u64 {
        activity.last_packet_ns.max(self.warm_since_ns)
    }

    fn sleep_tier(&self) -> Tier {
        self.config.sleep
    }
}

/// Counts of what happened to held packets, for logs and metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HoldCounters {
    pub held: u64,
    pub delivered: u64,
    /// Answered with a RST or an ICMP error after a failed wake.
    pub refused: u64,
    /// Dropped after a failed wake without an answer (nothing to answer, or sending failed).
    pub dropped_unanswerable: u64,
    pub dropped_host_limit: u64,
    pub dropped_global_limit: u64,
    pub dropped_expired: u64,
    pub dropped_unknown_host: u64,
    pub deliver_errors: u64,
}

impl HoldCounters {
    pub fn dropped(&self) -> u64 {
        self.dropped_unanswerable
            + self.dropped_host_limit
            + self.dropped_global_limit
            + self.dropped_expired
            + self.dropped_unknown_host
    }
}

/// Inputs from outside the orchestrator: the engine and the operator.
pub enum Input {
    /// The engine reports that a container of this network stopped.
    ContainerExited { host: String },
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
    /// Report every host's state.
    Status {
        reply: oneshot::Sender<StatusReport>,
    },
}

/// Messages from the tasks the orchestrator spawned.
enum Outcome {
    Woke {
        host: usize,
        result: Result<(Started, u64, ReadyBy), WakeError>,
    },
    SleepCheck {
        host: usize,
    },
    Slept {
        host: usize,
        result: Result<(), RuntimeError>,
    },
    Settled {
        host: usize,
    },
    /// The host side of a warm host's container link was found.
    HostLink {
        host: usize,
        veth: Interface,
        established: Option<u64>,
    },
}

#[derive(Debug, thiserror::Error)]
enum WakeError {
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error(transparent)]
    Ready(#[from] ReadyError),
}

impl WakeError {
    fn reason(&self) -> &'static str {
        match self {
            WakeError::Runtime(RuntimeError::ImageMissing { .. }) => "image_missing",
            WakeError::Runtime(RuntimeError::AddressInUse { .. }) => "address_in_use",
            WakeError::Runtime(RuntimeError::Unreachable(_)) => "engine_unreachable",
            WakeError::Runtime(RuntimeError::Engine { .. }) => "engine_error",
            WakeError::Ready(r) => r.reason(),
        }
    }
}

pub struct Orchestrator<R: ContainerRuntime> {
    pub hosts: Vec<Host>,
    datapath: Datapath,
    runtime: R,
    /// For refusals and neighbour announcements; `None` if it could not be opened.
    wire: Option<Arc<Wire>>,
    /// The imag bridge, where neighbours are told which MAC serves a host.
    bridge: Option<Interface>,
    policy: Policy,
    ready_events: bool,
    listen_events: broadcast::Sender<u16>,
    pub held: HeldPackets,
    outcomes_tx: mpsc::UnboundedSender<Outcome>,
    outcomes_rx: mpsc::UnboundedReceiver<Outcome>,
    pub counters: HoldCounters,
    metrics: Arc<Metrics>,
    network: (String, String),
}

impl<R: ContainerRuntime> Orchestrator<R> {
    /// `hosts` are in config order; a host's index is its `host_id` in the datapath.
    /// `listen_events` carries the ports of sockets that started listening (readiness events).
    pub fn new(
        hosts: Vec<Host>,
        datapath: Datapath,
        runtime: R,
        config: &Config,
        bridge: Option<Interface>,
        listen_events: broadcast::Sender<u16>,
        metrics: Arc<Metrics>,
    ) -> Orchestrator<R> {
        let (outcomes_tx, outcomes_rx) = mpsc::unbounded_channel();
        let wire = match Wire::open() {
            Ok(wire) => Some(Arc::new(wire)),
            Err(err) => {
                warn!(error = %err, "cannot open a packet socket: failed wakes will time out \
                    instead of being refused, and neighbours will not be told about wakes");
                None
            }
        };
        Orchestrator {
            held: HeldPackets::new(hosts.len(), config.hold),
            hosts,
            datapath,
            runtime,
            wire,
            bridge,
            policy: Policy {
                backoff_base: config.wake.backoff,
                backoff_max: config.wake.backoff_max,
                ..Policy::default()
            },
            ready_events: config.wake.ready_events,
            listen_events,
            outcomes_tx,
            outcomes_rx,
            counters: HoldCounters::default(),
            metrics,
            network: (
                config.network.name.clone(),
                config.network.subnet.to_string(),
            ),
        }
    }

    /// Builds the hosts of `config`, each in `initial(host)`.
    pub fn hosts_from(
        config: &Config,
        mut initial: impl FnMut(&HostConfig) -> HostState,
    ) -> Vec<Host> {
        config
            .hosts
            .iter()
            .map(|h| Host::new(&config.network.name, h.clone(), initial(h)))
            .collect()
    }

    pub fn datapath(&self) -> &Datapath {
        &self.datapath
    }

    pub fn datapath_mut(&mut self) -> &mut Datapath {
        &mut self.datapath
    }

    /// Writes every host into the datapath according to its state (entry, activity, ignored
    /// peers), and starts activity counting on the links of warm hosts.
    pub fn publish_hosts(&mut self) -> Result<(), crate::datapath::DatapathError> {
        for (id, host) in self.hosts.iter().enumerate() {
            let hold = !matches!(host.state, HostState::Warm { .. });
            self.datapath
                .set_host(host.config.address, id as u32, hold, host.flags)?;
            self.datapath.ensure_activity(host.config.address)?;
            for prefix in &host.config.idle_ignore {
                self.datapath.ignore_peers(id as u32, *prefix)?;
            }
        }
        for id in 0..self.hosts.len() {
            if matches!(self.hosts[id].state, HostState::Warm { .. }) {
                // Adopted warm hosts: their connections may have changed while no agent ran.
                self.inspect_warm_container(id, false, true, true);
            }
        }
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
        let mut idle = tokio::time::interval(IDLE_CHECK_INTERVAL);
        idle.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                Some(frame) = held.recv() => self.on_held(frame),
                Some(outcome) = self.outcomes_rx.recv() => self.on_outcome(outcome),
                Some(input) = inputs.recv() => self.on_input(input),
                _ = expiry.tick() => self.expire_held(),
                _ = idle.tick() => self.check_idle(),
                () = &mut shutdown => return,
            }
        }
    }

    /// On the way out: takes the frames still queued, lets wakes under way finish (up to
    /// `grace`), and refuses whatever is still held, so that no held packet is silently lost.
    pub async fn finish(&mut self, held: &mut mpsc::Receiver<HeldFrame>, grace: Duration) {
        while let Ok(frame) = held.try_recv() {
            self.on_held(frame);
        }
        let deadline = tokio::time::Instant::now() + grace;
        while self.hosts.iter().any(|h| {
            matches!(
                h.state,
                HostState::Waking { .. } | HostState::Sleeping { .. }
            )
        }) {
            match tokio::time::timeout_at(deadline, self.outcomes_rx.recv()).await {
                Ok(Some(outcome)) => self.on_outcome(outcome),
                _ => break,
            }
            while let Ok(frame) = held.try_recv() {
                self.on_held(frame);
            }
        }
        for id in 0..self.hosts.len() {
            if !self.held.is_empty(id) {
                self.refuse_held(id);
            }
        }
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
            match self
                .hosts
                .iter()
                .position(|h| addr_key(h.config.address) == frame.header.host_addr)
            {
                Some(found) => id = found,
                None => {
                    self.counters.dropped_unknown_host += 1;
                    return;
                }
            }
        }
        self.counters.held += 1;
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
            Input::ContainerExited { host } => {
                if let Some(id) = self.host_id(&host)
                    && matches!(self.hosts[id].state, HostState::Warm { .. })
                {
                    warn!(host = %host, "its container stopped while warm; the next packet wakes it again");
                    self.apply(id, Event::ContainerExited);
                }
            }
            Input::Wake { host, reply } => {
                let result = match self.host_id(&host) {
                    Some(id) => {
                        self.apply(id, Event::WakeRequested);
                        Ok(())
                    }
                    None => Err(format!("no host named {host:?}")),
                };
                let _ = reply.send(result);
            }
            Input::Sleep { host, to, reply } => {
                let result = match self.host_id(&host) {
                    Some(id) => {
                        let to = to.unwrap_or_else(|| self.hosts[id].sleep_tier());
                        self.hosts[id].sleep_cause = Some(SleepCause::Requested);
                        self.apply(id, Event::SleepRequested { to });
                        Ok(())
                    }
                    None => Err(format!("no host named {host:?}")),
                };
                let _ = reply.send(result);
            }
            Input::Status { reply } => {
                let _ = reply.send(self.status());
            }
        }
    }

    /// Every host's state, as `imag-agent status` shows it.
    pub fn status(&self) -> StatusReport {
        let now_ns = monotonic_ns();
        let hosts = self
            .hosts
            .iter()
            .enumerate()
            .map(|(id, h)| {
                let activity = self.datapath.activity(h.config.address).unwrap_or_default();
                let warm = matches!(h.state, HostState::Warm { .. });
                let last_ok = h.last_wake.as_ref().filter(|w| w.failure.is_none());
                HostStatus {
                    name: h.config.name.clone(),
                    address: h.config.address.to_string(),
                    state: h.state.name().to_string(),
                    tier: match h.state {
                        HostState::Asleep { tier } | HostState::Failed { tier, .. } => Some(tier),
                        _ => None,
                    },
                    container: h.spec.name.clone(),
                    last_wake_ms: last_ok.map(|w| w.timings.phases_ms()[4]),
                    last_wake_from: last_ok.map(|w| w.from.as_str().to_string()),
                    last_failure: h
                        .last_wake
                        .as_ref()
                        .and_then(|w| w.failure.as_ref())
                        .map(|(reason, message)| format!("{reason}: {message}")),
                    idle_for_s: warm
                        .then(|| now_ns.saturating_sub(h.last_active_ns(&activity)) as f64 / 1e9),
                    open_connections: open_connections(&activity),
                    held_packets: self.held.len(id),
                }
            })
            .collect();
        let c = self.counters;
        StatusReport {
            network: self.network.0.clone(),
            subnet: self.network.1.clone(),
            hosts,
            held_packets: c.held,
            delivered_packets: c.delivered,
            refused_packets: c.refused,
            dropped_packets: c.dropped(),
        }
    }

    fn host_id(&self, name: &str) -> Option<usize> {
        self.hosts.iter().position(|h| h.config.name == name)
    }

    /// Discards held packets older than their host's wake timeout.
    fn expire_held(&mut self) {
        let now = monotonic_ns();
        for (id, host) in self.hosts.iter().enumerate() {
            let cutoff = now.saturating_sub(host.config.wake_timeout.as_nanos() as u64);
            self.counters.dropped_expired += self.held.expire(id, cutoff) as u64;
        }
    }

    /// The periodic look at every host: puts idle warm hosts to sleep, escalates paused ones,
    /// settles fast-woken ones, and refreshes the metrics. The activity of each host that can
    /// have traffic is read once, for both; sleeping hosts' counters do not move and are not
    /// read (with thousands of configured hosts that would be thousands of syscalls a tick).
    fn check_idle(&mut self) {
        self.metrics
            .set_hosts_by_state(self.hosts.iter().map(|h| &h.state));
        self.metrics.set_hold_counters(&self.counters);
        self.metrics.set_datapath_counters(&self.datapath.stats());
        let now_ns = monotonic_ns();
        for id in 0..self.hosts.len() {
            let host = &self.hosts[id];
            match host.state {
                HostState::Warm { .. } | HostState::Sleeping { .. } => {}
                HostState::Asleep { tier: Tier::Paused }
                    if host
                        .config
                        .stop_after
                        .is_some_and(|after| host.asleep_since.elapsed() >= after) =>
                {
                    self.metrics.clear_idle(&host.config.name);
                    self.hosts[id].sleep_cause = Some(SleepCause::Requested);
                    self.apply(id, Event::Idle { to: Tier::Stopped });
                    continue;
                }
                _ => {
                    self.metrics.clear_idle(&host.config.name);
                    continue;
                }
            }
            let activity = self
                .datapath
                .activity(host.config.address)
                .unwrap_or_default();
            let quiet = Duration::from_nanos(now_ns.saturating_sub(host.last_active_ns(&activity)));
            let warm = matches!(host.state, HostState::Warm { .. });
            self.metrics.set_host_activity(
                &host.config.name,
                &activity,
                warm.then_some(quiet.as_secs_f64()),
            );
            if !warm {
                continue;
            }
            if self.runtime.unsettled(&host.spec) && !host.settling && quiet >= SETTLE_QUIET {
                self.start_settle(id);
                continue;
            }
            if host
                .config
                .idle_timeout
                .is_some_and(|timeout| open_connections(&activity) == 0 && quiet >= timeout)
            {
                let to = host.sleep_tier();
                self.hosts[id].sleep_cause = Some(SleepCause::Idle { decided_ns: now_ns });
                self.apply(id, Event::Idle { to });
            }
        }
    }

    fn on_outcome(&mut self, outcome: Outcome) {
        match outcome {
            Outcome::Woke { host, result } => {
                if let Some(port) = self.hosts[host].watched_port.take() {
                    self.datapath.unwatch_port(port);
                }
                match result {
                    Ok((started, ready_ns, ready_by)) => {
                        let h = &mut self.hosts[host];
                        h.started_here = true;
                        h.ready_by = ready_by;
                        if let Some((from, timings)) = h.wake.as_mut() {
                            *from = started.from;
                            timings.requested_ns = started.requested_ns;
                            timings.running_ns = started.running_ns;
                            timings.ready_ns = ready_ns;
                        }
                        self.apply(host, Event::WakeSucceeded);
                    }
                    Err(err) => {
                        let packets = self.held.len(host);
                        let h = &mut self.hosts[host];
                        let (from, timings) = h
                            .wake
                            .take()
                            .unwrap_or((Tier::Absent, WakeTimings::default()));
                        let held_to_start = if timings.held_ns != 0 {
                            ms_between(timings.held_ns, timings.requested_ns)
                        } else {
                            0.0
                        };
                        warn!(
                            host = %h.config.name,
                            addr = %h.config.address,
                            from = from.as_str(),
                            outcome = "failed",
                            reason = err.reason(),
                            packets,
                            held_to_start_ms = format_args!("{held_to_start:.2}"),
                            start_to_failure_ms = format_args!("{:.2}", ms_between(timings.requested_ns, monotonic_ns())),
                            error = %err,
                            "wake failed"
                        );
                        self.metrics.record_wake_failed(
                            &h.config.name,
                            from.as_str(),
                            err.reason(),
                        );
                        h.last_wake = Some(WakeRecord {
                            from,
                            timings,
                            failure: Some((err.reason(), err.to_string())),
                            packets,
                        });
                        self.apply(host, Event::WakeFailed);
                    }
                }
            }
            Outcome::SleepCheck { host } => {
                let h = &self.hosts[host];
                let (HostState::Sleeping { to, .. }, Some(SleepCause::Idle { decided_ns })) =
                    (h.state, h.sleep_cause)
                else {
                    return;
                };
                let activity = self.datapath.activity(h.config.address).unwrap_or_default();
                if activity.last_packet_ns > decided_ns || open_connections(&activity) > 0 {
                    info!(host = %h.config.name, "sleep called off: traffic arrived meanwhile");
                    self.apply(host, Event::SleepFailed);
                } else {
                    self.spawn_sleep(host, to);
                }
            }
            Outcome::Slept { host, result } => {
                let event = match result {
                    Ok(()) => Event::SleepSucceeded,
                    Err(err) => {
                        warn!(host = %self.hosts[host].config.name, error = %err, "sleep failed");
                        Event::SleepFailed
                    }
                };
                self.apply(host, event);
            }
            Outcome::Settled { host } => self.hosts[host].settling = false,
            Outcome::HostLink {
                host,
                veth,
                established,
            } => {
                let h = &self.hosts[host];
                if !matches!(h.state, HostState::Warm { .. }) {
                    return;
                }
                let addr = h.config.address;
                if let Err(err) = self.datapath.attach_host_link(addr, &veth) {
                    warn!(host = %h.config.name, error = %err,
                        "cannot count the host's traffic on its link; idleness sees only its TCP connections");
                }
                if let Some(open) = established
                    && let Err(err) = self.datapath.reset_connections(addr, open)
                {
                    debug!(host = %h.config.name, error = %err, "resetting the connection count failed");
                }
            }
        }
    }

    /// Feeds `event` to the state machine and performs the resulting actions.
    pub fn apply(&mut self, id: usize, event: Event) {
        let host = &mut self.hosts[id];
        let before = host.state;
        let policy = Policy {
            min_warm: host.config.min_warm,
            ..self.policy
        };
        let (after, actions) = state::next(before, event, Instant::now(), &policy);
        host.state = after;
        if before.name() != after.name() {
            debug!(host = %host.config.name, from = before.name(), to = after.name(), ?event, "state");
            match after {
                HostState::Warm { .. } => host.warm_since_ns = monotonic_ns(),
                HostState::Asleep { tier } => {
                    host.asleep_since = Instant::now();
                    host.sleep_cause = None;
                    info!(host = %host.config.name, tier = tier.as_str(), "asleep");
                    if tier != Tier::Paused {
                        // Its link is gone with the container, and so are its connections.
                        let addr = host.config.address;
                        self.datapath.detach_host_link(addr);
                        let _ = self.datapath.reset_connections(addr, 0);
                    }
                }
                _ => {}
            }
        }
        for action in actions {
            self.perform(id, action);
        }
    }

    fn perform(&mut self, id: usize, action: Action) {
        match action {
            Action::Hold | Action::Pass => {
                let host = &self.hosts[id];
                let hold = action == Action::Hold;
                if let Err(err) =
                    self.datapath
                        .set_host(host.config.address, id as u32, hold, host.flags)
                {
                    warn!(host = %host.config.name, error = %err, "updating the datapath failed");
                }
                if hold {
                    // Leaving warm: neighbours on the bridge must stop using the container's MAC
                    // address and send to the bridge, where the datapath holds and answers.
                    if let (Some(wire), Some(bridge)) = (&self.wire, &self.bridge) {
                        announce(wire, bridge.index, host.config.address, bridge.mac);
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
        let probe = host.config.ready;
        let listen = match probe {
            ReadyProbe::Tcp(port) if self.ready_events => {
                host.watched_port = Some(port);
                Some(self.listen_events.subscribe())
            }
            _ => None,
        };
        if let Some(port) = host.watched_port {
            self.datapath.watch_port(port);
        }
        let runtime = self.runtime.clone();
        let spec = host.spec.clone();
        let timeout = host.config.wake_timeout;
        let poll = host.config.ready_poll;
        let outcomes = self.outcomes_tx.clone();
        tokio::spawn(async move {
            let result = wake(&runtime, &spec, from, probe, timeout, poll, listen).await;
            let _ = outcomes.send(Outcome::Woke { host: id, result });
        });
    }

    fn start_sleep(&mut self, id: usize, to: Tier) {
        if matches!(self.hosts[id].sleep_cause, Some(SleepCause::Idle { .. })) {
            // The datapath holds from now on; give packets already past it a moment to show up
            // in the host's activity before committing (Outcome::SleepCheck).
            let outcomes = self.outcomes_tx.clone();
            tokio::spawn(async move {
                tokio::time::sleep(SLEEP_SETTLE_TIME).await;
                let _ = outcomes.send(Outcome::SleepCheck { host: id });
            });
        } else {
            self.spawn_sleep(id, to);
        }
    }

    fn spawn_sleep(&mut self, id: usize, to: Tier) {
        let host = &self.hosts[id];
        info!(host = %host.config.name, to = to.as_str(), "going to sleep");
        let runtime = self.runtime.clone();
        let spec = host.spec.clone();
        let outcomes = self.outcomes_tx.clone();
        tokio::spawn(async move {
            let result = runtime.sleep(&spec, to).await;
            let _ = outcomes.send(Outcome::Slept { host: id, result });
        });
    }

    fn start_settle(&mut self, id: usize) {
        self.hosts[id].settling = true;
        let runtime = self.runtime.clone();
        let spec = self.hosts[id].spec.clone();
        let outcomes = self.outcomes_tx.clone();
        tokio::spawn(async move {
            match runtime.settle(&spec).await {
                Ok(()) => debug!(container = %spec.name, "the engine's view is settled"),
                Err(err) => {
                    warn!(container = %spec.name, error = %err, "settling the engine's view failed")
                }
            }
            let _ = outcomes.send(Outcome::Settled { host: id });
        });
    }

    /// Off the critical path, one look at a warm host's container (a single engine call) for
    /// what follows a wake or an adoption: with `announce`, tell neighbours on the bridge its MAC
    /// address; with `find_link`, find the host side of its link so that its traffic is counted
    /// (and, with `count_connections`, count its established connections).
    fn inspect_warm_container(
        &mut self,
        id: usize,
        announce: bool,
        find_link: bool,
        count_connections: bool,
    ) {
        let runtime = self.runtime.clone();
        let spec = self.hosts[id].spec.clone();
        let outcomes = self.outcomes_tx.clone();
        let neighbours = self
            .wire
            .clone()
            .zip(self.bridge.as_ref().map(|b| b.index))
            .filter(|_| announce);
        tokio::spawn(async move {
            let Ok(info) = runtime.running_info(&spec).await else {
                return;
            };
            if let (Some((wire, bridge)), Some(mac)) = (neighbours, info.mac) {
                self::announce(&wire, bridge, spec.address, mac);
            }
            if !find_link {
                return;
            }
            let pid = info.pid;
            let address = spec.address;
            let found = tokio::task::spawn_blocking(move || {
                let veth = interfaces::host_side_of_container(pid)?;
                let established =
                    count_connections.then(|| procnet::established_connections(pid, address));
                std::io::Result::Ok((veth, established))
            })
            .await;
            match found {
                Ok(Ok((veth, established))) => {
                    let _ = outcomes.send(Outcome::HostLink {
                        host: id,
                        veth,
                        established,
                    });
                }
                Ok(Err(err)) => {
                    warn!(container = %spec.name, error = %err, "cannot find the container's link")
                }
                Err(err) => {
                    warn!(container = %spec.name, error = %err, "looking for the container's link failed")
                }
            }
        });
    }

    /// Re-injects every held packet, in arrival order, where it arrived.
    fn deliver_held(&mut self, id: usize) {
        let frames = self.held.take(id);
        let count = frames.len();
        let host = &mut self.hosts[id];
        for mut held in frames {
            if let Err(err) = packets::complete_checksum(&mut held.frame) {
                // The datapath only holds plain IPv4 packets; anything else is a bug or a
                // truncated copy. Deliver it as it is rather than lose it.
                debug!(host = %host.config.name, error = %err, "delivering a frame without checksum fix-up");
            }
            match self.datapath.deliver(held.header.ifindex, &held.frame) {
                Ok(()) => self.counters.delivered += 1,
                Err(err) => {
                    self.counters.deliver_errors += 1;
                    warn!(host = %host.config.name, error = %err, "re-delivering a held packet failed");
                }
            }
        }
        let Some((from, mut timings)) = host.wake.take() else {
            if count > 0 {
                debug!(host = %host.config.name, packets = count, "delivered packets that raced the switch to pass");
            }
            return;
        };
        timings.delivered_ns = monotonic_ns();
        let [held, running, ready, delivered, total] = timings.phases_ms();
        info!(
            host = %host.config.name,
            addr = %host.config.address,
            from = from.as_str(),
            outcome = "ok",
            packets = count,
            ready_by = host.ready_by.as_str(),
            held_to_start_ms = format_args!("{held:.2}"),
            start_to_running_ms = format_args!("{running:.2}"),
            running_to_ready_ms = format_args!("{ready:.2}"),
            ready_to_delivered_ms = format_args!("{delivered:.2}"),
            total_ms = format_args!("{total:.2}"),
            "woke"
        );
        self.metrics
            .record_wake_ok(&host.config.name, from.as_str(), &timings);
        host.last_wake = Some(WakeRecord {
            from,
            timings,
            failure: None,
            packets: count,
        });
        // Off the critical path: tell neighbours on the bridge the container's own MAC address, so
        // that host-to-host traffic goes straight over the bridge instead of through the host,
        // and start counting its traffic (a paused host's link still has its programs).
        let find_link =
            from != Tier::Paused || !self.datapath.has_host_link(self.hosts[id].config.address);
        self.inspect_warm_container(id, true, find_link, false);
    }

    /// Answers every held packet of a host whose wake failed with a refusal (TCP RST, ICMP
    /// unreachable), so that clients fail at once instead of timing out.
    fn refuse_held(&mut self, id: usize) {
        let frames = self.held.take(id);
        self.hosts[id].wake = None;
        for held in frames {
            let sent = match (&self.wire, packets::refusal(&held.frame)) {
                (Some(wire), Some(reply)) => {
                    wire.send(held.header.ifindex, &reply).map_err(|err| {
                        debug!(error = %err, "sending a refusal failed");
                    })
                }
                _ => Err(()),
            };
            match sent {
                Ok(()) => self.counters.refused += 1,
                Err(()) => self.counters.dropped_unanswerable += 1,
            }
        }
    }

    /// Stops the containers this agent started, in parallel; used on exit.
    pub async fn stop_started_containers(&mut self) {
        let mut stops = Vec::new();
        for host in &self.hosts {
            if host.started_here {
                let runtime = self.runtime.clone();
                let spec = host.spec.clone();
                stops.push(async move {
                    let result = runtime.sleep(&spec, Tier::Stopped).await;
                    (spec.name, result)
                });
            }
        }
        for (name, result) in futures::future::join_all(stops).await {
            match result {
                Ok(()) => info!(container = %name, "stopped"),
                Err(err) => warn!(container = %name, error = %err, "stopping failed"),
            }
        }
    }
}

fn open_connections(activity: &HostActivity) -> u64 {
    activity.tcp_opened.saturating_sub(activity.tcp_closed)
}

/// Broadcasts on the bridge that `ip` is at `mac`.
fn announce(wire: &Wire, bridge: u32, ip: Ipv4Addr, mac: [u8; 6]) {
    if let Err(err) = wire.send(bridge, &packets::gratuitous_arp(ip, mac)) {
        debug!(%ip, error = %err, "announcing a neighbour failed");
    }
}

async fn wake<R: ContainerRuntime>(
    runtime: &R,
    spec: &ContainerSpec,
    from: Tier,
    probe: ReadyProbe,
    timeout: Duration,
    poll: Duration,
    listen: Option<broadcast::Receiver<u16>>,
) -> Result<(Started, u64, ReadyBy), WakeError> {
    let deadline = tokio::time::Instant::now() + timeout;
    let started = tokio::time::timeout_at(deadline, runtime.wake(spec, from))
        .await
        .map_err(|_| ReadyError::Timeout { probe, timeout })??;
    let by = readiness::wait_ready(runtime, spec, probe, deadline, timeout, poll, listen).await?;
    Ok((started, monotonic_ns(), by))
}

fn summary(frame: &[u8]) -> String {
    packets::summarize(frame).map_or_else(|e| e.to_string(), |s| s.to_string())
}
