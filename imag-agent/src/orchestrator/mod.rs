//! The orchestrator: one task that owns every host's state, its held packets and the datapath's
//! view of it, and performs the actions that [`state::next`] decides.
//!
//! Inputs arrive on channels — held frames from the ring buffer reader, outcomes of wakes and
//! sleeps from the tasks it spawned — and are handled one at a time, so no two decisions about a
//! host ever interleave. Slow work (talking to the container engine, probing readiness) runs in
//! spawned tasks that report back with a message; the orchestrator itself never waits on it.

pub mod held;
pub mod state;

use std::{
    collections::BTreeMap,
    net::Ipv4Addr,
    sync::Arc,
    time::{Duration, Instant},
};

use imag_common::{HOST_FLAG_ANSWER_PING, HOST_FLAG_PROXY_ARP};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use self::{
    held::{Admission, HeldPackets},
    state::{Action, Event, HostState, Policy, Tier},
};
use crate::{
    clock::{monotonic_ns, ms_between},
    config::{Config, HostConfig},
    datapath::{Datapath, addr_key, ring::HeldFrame},
    frame,
    interfaces::Interface,
    readiness::{self, ReadyError},
    runtime::{ContainerRuntime, ContainerSpec, RuntimeError, Started},
    wire::Wire,
};

/// How often held packets are checked against their host's wake timeout.
const EXPIRY_INTERVAL: Duration = Duration::from_secs(1);

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
    /// `None` on success, else the reason.
    pub failure: Option<String>,
    /// Packets re-delivered (or refused, on failure).
    pub packets: usize,
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
    pub container_id: Option<String>,
    /// Whether this agent process woke the container (and so stops it on exit).
    pub started_here: bool,
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
        };
        Host {
            spec: ContainerSpec::for_host(network, &config),
            config,
            state,
            flags,
            wake: None,
            last_wake: None,
            container_id: None,
            started_here: false,
        }
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

/// Messages from the tasks the orchestrator spawned.
enum Outcome {
    Woke {
        host: usize,
        result: Result<(Started, u64), WakeError>,
    },
    Slept {
        host: usize,
        result: Result<(), RuntimeError>,
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
    pub held: HeldPackets,
    outcomes_tx: mpsc::UnboundedSender<Outcome>,
    outcomes_rx: mpsc::UnboundedReceiver<Outcome>,
    pub counters: HoldCounters,
    /// Failed wakes by reason.
    pub wake_failures: BTreeMap<&'static str, u64>,
}

impl<R: ContainerRuntime> Orchestrator<R> {
    /// `hosts` are in config order; a host's index is its `host_id` in the datapath.
    pub fn new(
        hosts: Vec<Host>,
        datapath: Datapath,
        runtime: R,
        config: &Config,
        bridge: Option<Interface>,
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
            outcomes_tx,
            outcomes_rx,
            counters: HoldCounters::default(),
            wake_failures: BTreeMap::new(),
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

    /// Writes every host's entry into the datapath according to its state.
    pub fn publish_hosts(&mut self) -> Result<(), crate::datapath::DatapathError> {
        for (id, host) in self.hosts.iter().enumerate() {
            let hold = !matches!(host.state, HostState::Warm { .. });
            self.datapath
                .set_host(host.config.address, id as u32, hold, host.flags)?;
        }
        Ok(())
    }

    /// Handles inputs until `shutdown` resolves.
    pub async fn run(
        &mut self,
        held: &mut mpsc::Receiver<HeldFrame>,
        shutdown: impl std::future::Future<Output = ()>,
    ) {
        tokio::pin!(shutdown);
        let mut expiry = tokio::time::interval(EXPIRY_INTERVAL);
        loop {
            tokio::select! {
                Some(frame) = held.recv() => self.on_held(frame),
                Some(outcome) = self.outcomes_rx.recv() => self.on_outcome(outcome),
                _ = expiry.tick() => self.expire_held(),
                () = &mut shutdown => return,
            }
        }
    }

    fn on_held(&mut self, frame: HeldFrame) {
        let id = frame.header.host_id as usize;
        let Some(host) = self.hosts.get(id) else {
            self.counters.dropped_unknown_host += 1;
            return;
        };
        if addr_key(host.config.address) != frame.header.host_addr {
            self.counters.dropped_unknown_host += 1;
            return;
        }
        self.counters.held += 1;
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

    /// Discards held packets older than their host's wake timeout.
    fn expire_held(&mut self) {
        let now = monotonic_ns();
        for (id, host) in self.hosts.iter().enumerate() {
            let cutoff = now.saturating_sub(host.config.wake_timeout.as_nanos() as u64);
            self.counters.dropped_expired += self.held.expire(id, cutoff) as u64;
        }
    }

    fn on_outcome(&mut self, outcome: Outcome) {
        match outcome {
            Outcome::Woke { host, result } => match result {
                Ok((started, ready_ns)) => {
                    let h = &mut self.hosts[host];
                    h.container_id = Some(started.container_id.clone());
                    h.started_here = true;
                    if let Some((from, timings)) = h.wake.as_mut() {
                        *from = started.from;
                        timings.requested_ns = started.requested_ns;
                        timings.running_ns = started.running_ns;
                        timings.ready_ns = ready_ns;
                    }
                    self.apply(host, Event::WakeSucceeded);
                }
                Err(err) => {
                    *self.wake_failures.entry(err.reason()).or_default() += 1;
                    let packets = self.held.len(host);
                    let h = &mut self.hosts[host];
                    warn!(host = %h.config.name, reason = err.reason(), error = %err, "wake failed");
                    let (from, timings) = h
                        .wake
                        .take()
                        .unwrap_or((Tier::Absent, WakeTimings::default()));
                    h.last_wake = Some(WakeRecord {
                        from,
                        timings,
                        failure: Some(format!("{}: {err}", err.reason())),
                        packets,
                    });
                    self.apply(host, Event::WakeFailed);
                }
            },
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
        }
    }

    /// Feeds `event` to the state machine and performs the resulting actions.
    pub fn apply(&mut self, id: usize, event: Event) {
        let host = &mut self.hosts[id];
        let before = host.state;
        let (after, actions) = state::next(before, event, Instant::now(), &self.policy);
        host.state = after;
        if before.name() != after.name() {
            debug!(host = %host.config.name, from = before.name(), to = after.name(), ?event, "state");
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
                if let Err(err) = self
                    .datapath
                    .set_host(host.config.address, id as u32, hold, 0)
                {
                    warn!(host = %host.config.name, error = %err, "updating the datapath failed");
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
        let runtime = self.runtime.clone();
        let spec = host.spec.clone();
        let probe = host.config.ready;
        let timeout = host.config.wake_timeout;
        let outcomes = self.outcomes_tx.clone();
        tokio::spawn(async move {
            let result = wake(&runtime, &spec, from, probe, timeout).await;
            let _ = outcomes.send(Outcome::Woke { host: id, result });
        });
    }

    fn start_sleep(&mut self, id: usize, to: Tier) {
        let runtime = self.runtime.clone();
        let spec = self.hosts[id].spec.clone();
        let outcomes = self.outcomes_tx.clone();
        tokio::spawn(async move {
            let result = runtime.sleep(&spec, to).await;
            let _ = outcomes.send(Outcome::Slept { host: id, result });
        });
    }

    /// Re-injects every held packet, in arrival order, where it arrived.
    fn deliver_held(&mut self, id: usize) {
        let frames = self.held.take(id);
        let count = frames.len();
        let host = &mut self.hosts[id];
        for mut held in frames {
            if let Err(err) = frame::complete_checksum(&mut held.frame) {
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
            held_to_start_ms = format_args!("{held:.2}"),
            start_to_running_ms = format_args!("{running:.2}"),
            running_to_ready_ms = format_args!("{ready:.2}"),
            ready_to_delivered_ms = format_args!("{delivered:.2}"),
            total_ms = format_args!("{total:.2}"),
            "woke"
        );
        host.last_wake = Some(WakeRecord {
            from,
            timings,
            failure: None,
            packets: count,
        });
        // Off the critical path: tell neighbours on the bridge the container's own MAC address, so
        // that host-to-host traffic goes straight over the bridge instead of through the host.
        if let (Some(wire), Some(bridge)) = (self.wire.clone(), self.bridge.as_ref()) {
            let runtime = self.runtime.clone();
            let spec = host.spec.clone();
            let bridge = bridge.index;
            tokio::spawn(async move {
                if let Ok(info) = runtime.running_info(&spec).await
                    && let Some(mac) = info.mac
                {
                    announce(&wire, bridge, spec.address, mac);
                }
            });
        }
    }

    /// Answers every held packet of a host whose wake failed with a refusal (TCP RST, ICMP
    /// unreachable), so that clients fail at once instead of timing out.
    fn refuse_held(&mut self, id: usize) {
        let frames = self.held.take(id);
        self.hosts[id].wake = None;
        for held in frames {
            let sent = match (&self.wire, frame::refusal(&held.frame)) {
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

    pub fn host_by_address(&self, addr: Ipv4Addr) -> Option<&Host> {
        self.hosts.iter().find(|h| h.config.address == addr)
    }
}

/// Broadcasts on the bridge that `ip` is at `mac`.
fn announce(wire: &Wire, bridge: u32, ip: Ipv4Addr, mac: [u8; 6]) {
    if let Err(err) = wire.send(bridge, &frame::gratuitous_arp(ip, mac)) {
        debug!(%ip, error = %err, "announcing a neighbour failed");
    }
}

async fn wake<R: ContainerRuntime>(
    runtime: &R,
    spec: &ContainerSpec,
    from: Tier,
    probe: crate::config::ReadyProbe,
    timeout: Duration,
) -> Result<(Started, u64), WakeError> {
    let deadline = tokio::time::Instant::now() + timeout;
    let started = tokio::time::timeout_at(deadline, runtime.wake(spec, from))
        .await
        .map_err(|_| ReadyError::Timeout { probe, timeout })??;
    readiness::wait_ready(runtime, spec, probe, deadline, timeout).await?;
    Ok((started, monotonic_ns()))
}

fn summary(frame: &[u8]) -> String {
    frame::summarize(frame).map_or_else(|e| e.to_string(), |s| s.to_string())
}
