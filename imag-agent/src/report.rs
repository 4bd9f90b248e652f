//! The agent's shared vocabulary for what it observed: the phases and timings of a wake, what
//! became of held packets, and the snapshot of every host that the orchestrator publishes for
//! its observers (`/metrics`, `imag-agent status`).
//!
//! This module sits at the bottom: the orchestrator writes these types, the operator surface
//! (`ops/`) reads them, and neither has to import the other's internals. Enums here serialize
//! themselves, so the control protocol and the metrics labels use the same words.

use std::{fmt, net::Ipv4Addr};

use serde::{Deserialize, Serialize};

use crate::{
    clock::{monotonic_ns, ms_between},
    runtime::Tier,
};

/// One phase of a wake, as labelled in `imag_wake_duration_seconds{phase}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// The datapath held the first packet → the agent asked the engine.
    HeldToStart,
    /// The engine was asked → it reported the container running.
    StartToRunning,
    /// Running → the ready probe passed.
    RunningToReady,
    /// Ready → the held packets had been re-delivered.
    ReadyToDelivered,
    /// First held packet (or the operator's request) → delivered.
    Total,
}

impl Phase {
    pub const ALL: [Phase; 5] = [
        Phase::HeldToStart,
        Phase::StartToRunning,
        Phase::RunningToReady,
        Phase::ReadyToDelivered,
        Phase::Total,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Phase::HeldToStart => "held_to_start",
            Phase::StartToRunning => "start_to_running",
            Phase::RunningToReady => "running_to_ready",
            Phase::ReadyToDelivered => "ready_to_delivered",
            Phase::Total => "total",
        }
    }
}

/// The timings of one wake, as `CLOCK_MONOTONIC` nanoseconds (the clock `bpf_ktime_get_ns()`
/// reads, so the kernel's hold stamp and the agent's stamps compare).
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
    /// Whether a packet started this wake (an operator's wake has no held-to-start phase).
    pub fn from_packet(&self) -> bool {
        self.held_ns != 0
    }

    /// The duration of `phase` in milliseconds.
    pub fn ms(&self, phase: Phase) -> f64 {
        match phase {
            Phase::HeldToStart if self.from_packet() => ms_between(self.held_ns, self.requested_ns),
            Phase::HeldToStart => 0.0,
            Phase::StartToRunning => ms_between(self.requested_ns, self.running_ns),
            Phase::RunningToReady => ms_between(self.running_ns, self.ready_ns),
            Phase::ReadyToDelivered => ms_between(self.ready_ns, self.delivered_ns),
            Phase::Total => {
                let start = if self.from_packet() {
                    self.held_ns
                } else {
                    self.requested_ns
                };
                ms_between(start, self.delivered_ns)
            }
        }
    }

    /// The phases that this wake went through, with their durations in milliseconds.
    pub fn phases(&self) -> impl Iterator<Item = (Phase, f64)> + '_ {
        Phase::ALL
            .into_iter()
            .filter(|p| *p != Phase::HeldToStart || self.from_packet())
            .map(|p| (p, self.ms(p)))
    }
}

/// What made a woken host count as ready.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReadyBy {
    /// The probe passed at its first try (or needs no probing).
    #[default]
    FirstTry,
    /// The datapath reported the service's socket listening, and the probe passed right after.
    Event,
    /// A later periodic try passed.
    Poll,
}

impl ReadyBy {
    pub fn as_str(self) -> &'static str {
        match self {
            ReadyBy::FirstTry => "first_try",
            ReadyBy::Event => "event",
            ReadyBy::Poll => "poll",
        }
    }
}

/// The latest wake of a host.
#[derive(Clone, Debug, PartialEq)]
pub struct WakeRecord {
    pub from: Tier,
    pub timings: WakeTimings,
    /// `None` on success, else the reason label and the message.
    pub failure: Option<(&'static str, String)>,
    /// Packets re-delivered (or refused, on failure).
    pub packets: usize,
    /// What made it ready (successful wakes).
    pub ready_by: ReadyBy,
}

/// Page-outs of paused hosts' memory to swap (`swap_after`), for status and metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PageOutCounters {
    pub done: u64,
    pub failed: u64,
    /// Bytes the done ones moved out of memory.
    pub bytes: u64,
    /// Nanoseconds page-outs ran (done or not): over time, how busy they kept the swap device.
    #[serde(default)]
    pub busy_ns: u64,
    /// Nanoseconds started page-outs waited in the queue (`orchestrator::page_out`).
    #[serde(default)]
    pub wait_ns: u64,
}

/// Counts of what happened to held packets, for logs, status and metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
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

    /// Every counter with its label in `imag_held_packets_total{outcome}`.
    pub fn by_outcome(&self) -> [(&'static str, u64); 9] {
        [
            ("held", self.held),
            ("delivered", self.delivered),
            ("refused", self.refused),
            ("dropped_unanswerable", self.dropped_unanswerable),
            ("dropped_host_limit", self.dropped_host_limit),
            ("dropped_global_limit", self.dropped_global_limit),
            ("dropped_expired", self.dropped_expired),
            ("dropped_unknown_host", self.dropped_unknown_host),
            ("deliver_errors", self.deliver_errors),
        ]
    }
}

/// The budget of warm hosts (`[limits]`) as used now, and what it evicted and refused.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BudgetView {
    /// Hosts counted against `max_warm` (warm, admitted waking, paused, going to sleep).
    pub warm: u64,
    pub warm_limit: Option<u64>,
    /// Their weight together, in bytes.
    pub memory_bytes: u64,
    pub memory_limit: Option<u64>,
    /// Wakes waiting for room (or for a wake slot).
    pub queued: u64,
    pub evictions_max_warm: u64,
    pub evictions_memory: u64,
    /// Wakes refused: no room and nothing evictable, or waited past their wake timeout.
    pub refused_budget: u64,
    /// Packets to cold hosts refused by the wake rate limits.
    pub refused_rate: u64,
}

impl BudgetView {
    /// `imag_evictions_total{reason}`.
    pub fn evictions(&self) -> [(&'static str, u64); 2] {
        [
            ("max_warm", self.evictions_max_warm),
            ("memory", self.evictions_memory),
        ]
    }

    /// `imag_wakes_refused_total{reason}`.
    pub fn refused(&self) -> [(&'static str, u64); 2] {
        [("budget", self.refused_budget), ("rate", self.refused_rate)]
    }
}

/// The name of a host's state, as status and `imag_hosts{state}` show it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StateName {
    #[default]
    Asleep,
    Waking,
    Warm,
    Sleeping,
    Failed,
    /// Served by another node of the cluster (scale-out).
    Elsewhere,
}

impl StateName {
    pub const ALL: [StateName; 6] = [
        StateName::Asleep,
        StateName::Waking,
        StateName::Warm,
        StateName::Sleeping,
        StateName::Failed,
        StateName::Elsewhere,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            StateName::Asleep => "asleep",
            StateName::Waking => "waking",
            StateName::Warm => "warm",
            StateName::Sleeping => "sleeping",
            StateName::Failed => "failed",
            StateName::Elsewhere => "elsewhere",
        }
    }
}

impl fmt::Display for StateName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the datapath counted on a host's own link (warm hosts; zero until its link is found).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Traffic {
    pub packets_in: u64,
    pub packets_out: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub open_connections: u64,
}

/// One host as its observers see it.
#[derive(Clone, Debug, PartialEq)]
pub struct HostView {
    pub name: String,
    pub address: Ipv4Addr,
    pub container: String,
    pub state: StateName,
    /// Where a sleeping (or failed) host's container is.
    pub tier: Option<Tier>,
    pub last_wake: Option<WakeRecord>,
    pub held_packets: usize,
    pub traffic: Traffic,
    /// `CLOCK_MONOTONIC` ns of the last packet that counts for idleness (warm hosts).
    pub last_active_ns: Option<u64>,
    /// Bytes paged out to swap while it sleeps paused (`swap_after`; 0: none).
    pub paged_out_bytes: u64,
    /// What it weighs in the memory budget, in bytes (limit, measured, or the default).
    pub weight: u64,
    /// Scale-out: the node its packets go to, when that is another node.
    pub node: Option<String>,
}

/// Everything the orchestrator publishes for its observers: updated as hosts change state and
/// on the orchestrator's tick (traffic, datapath counters).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Snapshot {
    pub network: String,
    pub subnet: String,
    pub hosts: Vec<HostView>,
    pub counters: HoldCounters,
    /// The budget of warm hosts and the wake rate limits.
    pub budget: BudgetView,
    /// The datapath's verdict counters (summed over CPUs), indexed by `imag_common::stat`.
    pub datapath: Vec<u64>,
    /// Whether this agent process adopted a running datapath and warm hosts from an earlier one.
    pub adopted: bool,
    /// The configuration file the agent was started with.
    pub config: Option<String>,
    /// Learned edges and pre-wakes.
    pub prewake: PrewakeView,
    /// Page-outs of paused hosts (`swap_after`).
    pub page_outs: PageOutCounters,
    /// Scale-out: this node and the cluster as it sees it (`None` without `[cluster]`).
    pub cluster: Option<ClusterView>,
}

/// The cluster as one node sees it (`status`, `/metrics`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterView {
    /// This node's name and the address other nodes reach it at.
    pub node: String,
    pub address: String,
    /// Whether this node's lease is being kept alive (false: fenced, it serves nothing).
    pub healthy: bool,
    /// The live nodes (this one included), by name.
    pub nodes: Vec<NodeView>,
    /// Hosts this node's claims took, and claims another node had taken first.
    pub claims_won: u64,
    pub claims_lost: u64,
    /// Times this node lost the store long enough to stop serving.
    pub fences: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeView {
    pub name: String,
    pub address: String,
    /// Hosts this node serves (holds the key of).
    pub serving: Vec<String>,
}

/// Pre-wakes (`wakes_with` and learned edges) as `status` and `/metrics` show them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrewakeView {
    /// `[wake] prewake`: `on`, `learn` or `off`.
    pub mode: String,
    /// Pre-wakes whose target the source's traffic reached in time, and those it did not
    /// (`imag_prewakes_total{result}`).
    pub used: u64,
    pub unused: u64,
    /// Every pair seen: `from`'s traffic reached `to` while it was cold.
    pub edges: Vec<EdgeView>,
    /// The latest pre-wakes, oldest first.
    pub recent: Vec<PrewakeRecord>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EdgeView {
    pub from: String,
    pub to: String,
    /// Sightings among the last `of` wakes of `from` (where `to` was cold).
    pub seen: u32,
    pub of: u32,
    /// Seen often enough that a wake of `from` wakes `to` too.
    pub learned: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrewakeRecord {
    pub from: String,
    pub to: String,
    /// `learned` or `wakes_with`.
    pub kind: String,
    /// When it was decided, Unix time in milliseconds.
    pub at_unix_ms: u64,
    /// `pending`, `used`, `unused`, or `dropped` (the source's wake failed).
    pub result: String,
    /// When the source's first packet to the target was held (the target was not warm yet),
    /// Unix time in microseconds; absent if it never was: the target was up before the
    /// source's traffic reached it.
    pub first_packet_unix_us: Option<u64>,
}

impl Snapshot {
    /// The status report that `imag-agent status` shows, as of now.
    pub fn status(&self) -> StatusReport {
        let now_ns = monotonic_ns();
        StatusReport {
            network: self.network.clone(),
            subnet: self.subnet.clone(),
            adopted: self.adopted,
            config: self.config.clone(),
            hosts: self.hosts.iter().map(|h| h.status(now_ns)).collect(),
            held_packets: self.counters.held,
            delivered_packets: self.counters.delivered,
            refused_packets: self.counters.refused,
            dropped_packets: self.counters.dropped(),
            budget: self.budget,
            prewake: self.prewake.clone(),
            page_outs: self.page_outs,
            cluster: self.cluster.clone(),
        }
    }
}

impl HostView {
    fn status(&self, now_ns: u64) -> HostStatus {
        let last_ok = self.last_wake.as_ref().filter(|w| w.failure.is_none());
        HostStatus {
            name: self.name.clone(),
            address: self.address.to_string(),
            state: self.state,
            tier: self.tier,
            container: self.container.clone(),
            last_wake_ms: last_ok.map(|w| w.timings.ms(Phase::Total)),
            last_wake_from: last_ok.map(|w| w.from),
            last_ready_by: last_ok.map(|w| w.ready_by),
            last_failure: self
                .last_wake
                .as_ref()
                .and_then(|w| w.failure.as_ref())
                .map(|(reason, message)| format!("{reason}: {message}")),
            idle_for_s: self
                .last_active_ns
                .map(|at| now_ns.saturating_sub(at) as f64 / 1e9),
            open_connections: self.traffic.open_connections,
            held_packets: self.held_packets,
            weight_bytes: self.weight,
            paged_out_bytes: self.paged_out_bytes,
            node: self.node.clone(),
        }
    }
}

/// `imag-agent status`: every host of a network.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StatusReport {
    pub network: String,
    pub subnet: String,
    /// Whether the agent adopted a datapath (and warm hosts) left running by an earlier one.
    #[serde(default)]
    pub adopted: bool,
    /// The configuration file the agent was started with.
    #[serde(default)]
    pub config: Option<String>,
    pub hosts: Vec<HostStatus>,
    pub held_packets: u64,
    pub delivered_packets: u64,
    pub refused_packets: u64,
    pub dropped_packets: u64,
    #[serde(default)]
    pub budget: BudgetView,
    #[serde(default)]
    pub prewake: PrewakeView,
    #[serde(default)]
    pub page_outs: PageOutCounters,
    /// Scale-out (`[cluster]`): this node, the live nodes and what each serves.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<ClusterView>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct HostStatus {
    pub name: String,
    pub address: String,
    pub state: StateName,
    /// The tier a sleeping host is in (`absent`, `stopped`, `paused`).
    pub tier: Option<Tier>,
    pub container: String,
    /// End-to-end latency of the latest successful wake, in milliseconds.
    pub last_wake_ms: Option<f64>,
    pub last_wake_from: Option<Tier>,
    /// What made the latest successful wake ready.
    #[serde(default)]
    pub last_ready_by: Option<ReadyBy>,
    pub last_failure: Option<String>,
    /// Seconds since the last packet that counts for idleness (warm hosts).
    pub idle_for_s: Option<f64>,
    pub open_connections: u64,
    pub held_packets: usize,
    /// What the host weighs in the memory budget.
    #[serde(default)]
    pub weight_bytes: u64,
    /// Bytes of a paused host paged out to swap (`swap_after`); absent when none.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub paged_out_bytes: u64,
    /// Scale-out: the node serving the host (or placed to), when it is another node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}

#[allow(
    clippy::trivially_copy_pass_by_ref,
    reason = "serde's skip_serializing_if signature"
)]
fn is_zero(value: &u64) -> bool {
    *value == 0
}

#[cfg(test)]
#[allow(
    clippy::float_cmp,
    reason = "the values compared are whole counts (or exact binary fractions) carried in f64, so equality is exact"
)]
mod tests {
    use super::*;

    #[test]
    fn phases_of_a_packet_wake_and_of_an_operator_wake() {
        let timings = WakeTimings {
            held_ns: 1_000_000,
            requested_ns: 2_000_000,
            running_ns: 5_000_000,
            ready_ns: 6_000_000,
            delivered_ns: 6_500_000,
        };
        let phases: Vec<_> = timings.phases().collect();
        assert_eq!(
            phases,
            vec![
                (Phase::HeldToStart, 1.0),
                (Phase::StartToRunning, 3.0),
                (Phase::RunningToReady, 1.0),
                (Phase::ReadyToDelivered, 0.5),
                (Phase::Total, 5.5),
            ]
        );
        let operator = WakeTimings {
            held_ns: 0,
            ..timings
        };
        assert_eq!(operator.phases().count(), 4, "no held_to_start phase");
        assert_eq!(operator.ms(Phase::Total), 4.5, "measured from the request");
    }

    #[test]
    fn names_serialize_as_their_labels() {
        for state in StateName::ALL {
            assert_eq!(
                serde_json::to_string(&state).unwrap(),
                format!("\"{}\"", state.as_str())
            );
        }
        for phase in Phase::ALL {
            assert_eq!(
                serde_json::to_string(&phase).unwrap(),
                format!("\"{}\"", phase.as_str())
            );
        }
        assert_eq!(
            serde_json::to_string(&ReadyBy::FirstTry).unwrap(),
            "\"first_try\""
        );
    }

    #[test]
    fn dropped_sums_every_drop_reason() {
        let c = HoldCounters {
            held: 10,
            delivered: 3,
            refused: 2,
            dropped_unanswerable: 1,
            dropped_host_limit: 1,
            dropped_global_limit: 1,
            dropped_expired: 1,
            dropped_unknown_host: 1,
            deliver_errors: 4,
        };
        assert_eq!(c.dropped(), 5);
        assert_eq!(c.by_outcome().len(), 9);
    }
}
