//! The states of one imaginary host and every transition between them, as plain data.
//!
//! `next(state, event, now, policy)` is pure: it returns the new state and the actions the
//! orchestrator must perform, in order. All decisions that could race (a packet arriving while a
//! host falls asleep, a second packet during a wake, a wake failing) are made here and only here,
//! so the tests below cover them transition by transition.
//!
//! ```text
//!            packet / wake                       ready
//!   Asleep ─────────────────▶ Waking ─────────────────────▶ Warm
//!     ▲  ▲                      │  ▲                          │
//!     │  │ retry (after backoff)│  │ packet after sleep       │ idle / sleep
//!     │  └──── Failed ◀─────────┘  │                          ▼
//!     │         failed             └──────────────────── Sleeping
//!     └───────────────────────────────────────────────────────┘
//!                              slept (no packet meanwhile)
//!
//!   Asleep / Failed ── served elsewhere ──▶ Elsewhere ── served here ──▶ Asleep
//!   Waking ─────────── claim lost ────────▶ Elsewhere
//! ```
//!
//! The datapath holds packets in every state but `Warm` (passes) and `Elsewhere` (forwards: the
//! kernel routes them to the node that serves the host, see docs/SCALE-OUT.md).

use std::time::{Duration, Instant};

use crate::report::StateName;
pub use crate::runtime::Tier;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HostState {
    /// Not running; packets are held and the first one wakes the host.
    Asleep { tier: Tier },
    /// A wake is under way from `from`; packets are held.
    Waking { from: Tier, failures: u32 },
    /// Running and ready; the datapath passes packets straight through.
    Warm { since: Instant },
    /// Going to sleep into `to`; packets are held, and if one arrives the host is woken again
    /// as soon as it has settled (`wake_after`).
    Sleeping { to: Tier, wake_after: bool },
    /// The last wake failed; held packets are refused until `retry_at`.
    Failed {
        tier: Tier,
        failures: u32,
        retry_at: Instant,
    },
    /// Served by another node of the cluster (or placed there): the datapath forwards its
    /// packets and the kernel routes them to that node. `tier` is where this node's own
    /// container, if any, is.
    Elsewhere { tier: Tier },
}

impl HostState {
    pub fn name(&self) -> &'static str {
        self.label().as_str()
    }

    /// The state's name in the shared vocabulary (status, metrics).
    pub fn label(&self) -> StateName {
        match self {
            HostState::Asleep { .. } => StateName::Asleep,
            HostState::Waking { .. } => StateName::Waking,
            HostState::Warm { .. } => StateName::Warm,
            HostState::Sleeping { .. } => StateName::Sleeping,
            HostState::Failed { .. } => StateName::Failed,
            HostState::Elsewhere { .. } => StateName::Elsewhere,
        }
    }

    /// Where the container is while the host is not running (asleep or failed).
    pub fn tier(&self) -> Option<Tier> {
        match *self {
            HostState::Asleep { tier }
            | HostState::Failed { tier, .. }
            | HostState::Elsewhere { tier } => Some(tier),
            _ => None,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// The datapath held a packet for this host (the orchestrator has queued it).
    PacketHeld,
    /// The operator asked for a wake.
    WakeRequested,
    /// The container runs and passed its ready probe.
    WakeSucceeded,
    /// The wake failed (the orchestrator logs and counts why).
    WakeFailed,
    /// The governor refused the wake (no room under the budget, or queued past its
    /// `wake_timeout`): failed too, but with no backoff, since room may come with the next
    /// eviction; the next packet asks again.
    WakeRefused,
    /// The host has been idle for its idle timeout; `to` is the tier its policy chose.
    Idle { to: Tier },
    /// The operator asked for sleep into `to`.
    SleepRequested { to: Tier },
    /// The container reached the tier it was sent to.
    SleepSucceeded,
    /// Putting the container to sleep failed; it is still running.
    SleepFailed,
    /// The engine reports the warm host's container gone or stopped.
    ContainerExited,
    /// The cluster routes the host to another node (it serves it, or placement chose it).
    ServedElsewhere,
    /// The cluster routes the host to this node again.
    ServedHere,
    /// Another node took the host first: the wake stopped before touching the engine.
    ClaimLost,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Make the datapath hold this host's packets.
    Hold,
    /// Make the datapath hold this host's new packets but let those already past the hold point
    /// reach it (`HostMode::Drain`): the start of every sleep from warm, before the look that
    /// commits it.
    Drain,
    /// Make the datapath pass this host's packets.
    Pass,
    /// Start a wake from `from` (create, start or unpause, then probe).
    StartWake { from: Tier },
    /// Re-deliver the held packets, in arrival order.
    DeliverHeld,
    /// Answer the held packets with refusals (TCP RST, ICMP unreachable) and drop them.
    RefuseHeld,
    /// Put the container into `to`.
    StartSleep { to: Tier },
    /// Make the datapath forward this host's packets (the kernel routes them to its node).
    Forward,
}

/// Timing rules for transitions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Policy {
    /// A warm host is not put to sleep for idleness before it has been warm this long.
    pub min_warm: Duration,
    /// Wait after the first failed wake before another packet may retry; doubles per failure.
    pub backoff_base: Duration,
    /// Upper bound of the backoff.
    pub backoff_max: Duration,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            min_warm: Duration::from_secs(30),
            backoff_base: Duration::from_secs(1),
            backoff_max: Duration::from_mins(5),
        }
    }
}

impl Policy {
    /// The wait after `failures` consecutive failed wakes: base, 2·base, 4·base, … up to max.
    pub fn backoff(&self, failures: u32) -> Duration {
        let doublings = failures.saturating_sub(1).min(31);
        self.backoff_base
            .saturating_mul(1u32 << doublings)
            .min(self.backoff_max)
    }
}

/// The transition function. Events that make no sense in a state leave it unchanged with no
/// actions (the orchestrator logs them at debug level).
#[allow(
    clippy::too_many_lines,
    clippy::match_same_arms,
    reason = "the whole transition table in one match, one arm per (state, event) that matters; \
              an explicit no-op arm records that a case was considered"
)]
pub fn next(
    state: HostState,
    event: Event,
    now: Instant,
    policy: &Policy,
) -> (HostState, Vec<Action>) {
    use Action::{DeliverHeld, Drain, Forward, Hold, Pass, RefuseHeld, StartSleep, StartWake};
    use HostState::{Asleep, Elsewhere, Failed, Sleeping, Waking, Warm};
    match (state, event) {
        (Asleep { tier }, Event::PacketHeld | Event::WakeRequested) => (
            Waking {
                from: tier,
                failures: 0,
            },
            vec![StartWake { from: tier }],
        ),
        (Asleep { tier }, Event::SleepRequested { to } | Event::Idle { to })
            if deeper(to, tier) =>
        {
            (
                Sleeping {
                    to,
                    wake_after: false,
                },
                vec![StartSleep { to }],
            )
        }

        (Waking { .. }, Event::PacketHeld | Event::WakeRequested) => (state, vec![]),
        (Waking { .. }, Event::WakeSucceeded) => (Warm { since: now }, vec![Pass, DeliverHeld]),
        (Waking { from, failures }, Event::WakeFailed) => {
            let failures = failures + 1;
            (
                Failed {
                    tier: failed_tier(from),
                    failures,
                    retry_at: crate::clock::later(now, policy.backoff(failures)),
                },
                vec![RefuseHeld],
            )
        }
        (Waking { from, failures }, Event::WakeRefused) => (
            Failed {
                tier: failed_tier(from),
                failures,
                retry_at: now,
            },
            vec![RefuseHeld],
        ),

        // A packet held just before the datapath switched to pass: deliver it now.
        (Warm { .. }, Event::PacketHeld) => (state, vec![DeliverHeld]),
        (Warm { since }, Event::Idle { to }) if now.duration_since(since) >= policy.min_warm => (
            Sleeping {
                to,
                wake_after: false,
            },
            vec![Drain, StartSleep { to }],
        ),
        (Warm { .. }, Event::SleepRequested { to }) => (
            Sleeping {
                to,
                wake_after: false,
            },
            vec![Drain, StartSleep { to }],
        ),
        (Warm { .. }, Event::ContainerExited) => (
            Asleep {
                tier: Tier::Stopped,
            },
            vec![Hold],
        ),

        (Sleeping { to, .. }, Event::PacketHeld | Event::WakeRequested) => (
            Sleeping {
                to,
                wake_after: true,
            },
            vec![],
        ),
        (Sleeping { to, wake_after }, Event::SleepSucceeded) => {
            if wake_after {
                (
                    Waking {
                        from: to,
                        failures: 0,
                    },
                    vec![StartWake { from: to }],
                )
            } else {
                (Asleep { tier: to }, vec![])
            }
        }
        (Sleeping { .. }, Event::SleepFailed) => (Warm { since: now }, vec![Pass, DeliverHeld]),

        (
            Failed {
                tier,
                failures,
                retry_at,
            },
            Event::PacketHeld,
        ) => {
            if now >= retry_at {
                (
                    Waking {
                        from: tier,
                        failures,
                    },
                    vec![StartWake { from: tier }],
                )
            } else {
                (state, vec![RefuseHeld])
            }
        }
        (Failed { tier, failures, .. }, Event::WakeRequested) => (
            Waking {
                from: tier,
                failures,
            },
            vec![StartWake { from: tier }],
        ),
        (Failed { tier, .. }, Event::SleepRequested { to }) if deeper(to, tier) => (
            Sleeping {
                to,
                wake_after: false,
            },
            vec![StartSleep { to }],
        ),

        // Scale-out. A host this node does not run goes elsewhere with what it held; a warm or
        // sleeping one is this node's (it holds the host's key), so a stale route signal is
        // ignored; a waking one learns from its own claim (`ClaimLost`).
        (Asleep { tier } | Failed { tier, .. }, Event::ServedElsewhere)
        | (Waking { from: tier, .. }, Event::ClaimLost) => {
            (Elsewhere { tier }, vec![Forward, DeliverHeld])
        }
        (Elsewhere { tier }, Event::ServedHere) => (Asleep { tier }, vec![Hold]),
        // A packet held just before the datapath switched to forward: it goes on its way now.
        (Elsewhere { .. }, Event::PacketHeld) => (state, vec![DeliverHeld]),

        _ => (state, vec![]),
    }
}

/// Where a host whose wake from `from` failed sleeps: still paused, else (stopped or absent,
/// perhaps created meanwhile) stopped.
fn failed_tier(from: Tier) -> Tier {
    if from == Tier::Paused {
        Tier::Paused
    } else {
        Tier::Stopped
    }
}

/// Whether `to` releases more than `from` (paused → stopped → absent).
fn deeper(to: Tier, from: Tier) -> bool {
    to.depth() > from.depth()
}

#[cfg(test)]
#[path = "state_tests.rs"]
mod tests;
