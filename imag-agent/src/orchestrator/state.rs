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
    use Action::{DeliverHeld, Forward, Hold, Pass, RefuseHeld, StartSleep, StartWake};
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
            let tier = if from == Tier::Paused {
                Tier::Paused
            } else {
                Tier::Stopped
            };
            (
                Failed {
                    tier,
                    failures,
                    retry_at: crate::clock::later(now, policy.backoff(failures)),
                },
                vec![RefuseHeld],
            )
        }

        // A packet held just before the datapath switched to pass: deliver it now.
        (Warm { .. }, Event::PacketHeld) => (state, vec![DeliverHeld]),
        (Warm { since }, Event::Idle { to }) if now.duration_since(since) >= policy.min_warm => (
            Sleeping {
                to,
                wake_after: false,
            },
            vec![Hold, StartSleep { to }],
        ),
        (Warm { .. }, Event::SleepRequested { to }) => (
            Sleeping {
                to,
                wake_after: false,
            },
            vec![Hold, StartSleep { to }],
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

/// Whether `to` releases more than `from` (paused → stopped → absent).
fn deeper(to: Tier, from: Tier) -> bool {
    to.depth() > from.depth()
}

#[cfg(test)]
mod tests {
    use super::{Action::*, Event::*, HostState::*, *};

    fn policy() -> Policy {
        Policy {
            min_warm: Duration::from_secs(10),
            backoff_base: Duration::from_secs(1),
            backoff_max: Duration::from_secs(8),
        }
    }

    #[test]
    fn first_packet_wakes_an_asleep_host_once() {
        let now = Instant::now();
        for tier in [Tier::Absent, Tier::Stopped, Tier::Paused] {
            let (state, actions) = next(Asleep { tier }, PacketHeld, now, &policy());
            assert_eq!(
                state,
                Waking {
                    from: tier,
                    failures: 0
                }
            );
            assert_eq!(actions, vec![StartWake { from: tier }]);
            // Further packets during the wake start nothing new.
            let (again, actions) = next(state, PacketHeld, now, &policy());
            assert_eq!(again, state);
            assert!(actions.is_empty());
        }
    }

    #[test]
    fn ready_passes_then_delivers() {
        let now = Instant::now();
        let waking = Waking {
            from: Tier::Stopped,
            failures: 2,
        };
        let (state, actions) = next(waking, WakeSucceeded, now, &policy());
        assert_eq!(state, Warm { since: now });
        // Order matters: the datapath must pass before held packets are re-injected, or they
        // would be held a second time.
        assert_eq!(actions, vec![Pass, DeliverHeld]);
    }

    #[test]
    fn packet_that_raced_the_switch_to_pass_is_delivered() {
        let now = Instant::now();
        let (state, actions) = next(Warm { since: now }, PacketHeld, now, &policy());
        assert_eq!(state, Warm { since: now });
        assert_eq!(actions, vec![DeliverHeld]);
    }

    #[test]
    fn failed_wake_refuses_and_backs_off_exponentially() {
        let now = Instant::now();
        let p = policy();
        let (state, actions) = next(
            Waking {
                from: Tier::Absent,
                failures: 0,
            },
            WakeFailed,
            now,
            &p,
        );
        assert_eq!(
            state,
            Failed {
                tier: Tier::Stopped,
                failures: 1,
                retry_at: now + Duration::from_secs(1)
            }
        );
        assert_eq!(actions, vec![RefuseHeld]);

        // Before the backoff expires, packets are refused without a wake.
        let soon = now + Duration::from_millis(500);
        let (still, actions) = next(state, PacketHeld, soon, &p);
        assert_eq!(still, state);
        assert_eq!(actions, vec![RefuseHeld]);

        // After it, the next packet retries, and a second failure doubles the wait.
        let later = now + Duration::from_secs(1);
        let (retry, actions) = next(state, PacketHeld, later, &p);
        assert_eq!(
            retry,
            Waking {
                from: Tier::Stopped,
                failures: 1
            }
        );
        assert_eq!(
            actions,
            vec![StartWake {
                from: Tier::Stopped
            }]
        );
        let (failed, _) = next(retry, WakeFailed, later, &p);
        assert_eq!(
            failed,
            Failed {
                tier: Tier::Stopped,
                failures: 2,
                retry_at: later + Duration::from_secs(2)
            }
        );
    }

    #[test]
    fn backoff_doubles_up_to_its_maximum() {
        let p = policy();
        let waits: Vec<u64> = (1..=6).map(|f| p.backoff(f).as_secs()).collect();
        assert_eq!(waits, vec![1, 2, 4, 8, 8, 8]);
        assert_eq!(p.backoff(u32::MAX), Duration::from_secs(8));
    }

    #[test]
    fn success_after_failures_resets_the_count() {
        let now = Instant::now();
        let (warm, _) = next(
            Waking {
                from: Tier::Stopped,
                failures: 3,
            },
            WakeSucceeded,
            now,
            &policy(),
        );
        let (sleeping, _) = next(warm, SleepRequested { to: Tier::Stopped }, now, &policy());
        let (asleep, _) = next(sleeping, SleepSucceeded, now, &policy());
        let (waking, _) = next(asleep, PacketHeld, now, &policy());
        assert_eq!(
            waking,
            Waking {
                from: Tier::Stopped,
                failures: 0
            }
        );
    }

    #[test]
    fn operator_wake_overrides_backoff() {
        let now = Instant::now();
        let failed = Failed {
            tier: Tier::Stopped,
            failures: 4,
            retry_at: now + Duration::from_mins(1),
        };
        let (state, actions) = next(failed, WakeRequested, now, &policy());
        assert_eq!(
            state,
            Waking {
                from: Tier::Stopped,
                failures: 4
            }
        );
        assert_eq!(
            actions,
            vec![StartWake {
                from: Tier::Stopped
            }]
        );
    }

    #[test]
    fn idle_sleep_respects_min_warm() {
        let since = Instant::now();
        let p = policy();
        let early = since + Duration::from_secs(5);
        let (state, actions) = next(Warm { since }, Idle { to: Tier::Paused }, early, &p);
        assert_eq!(state, Warm { since });
        assert!(actions.is_empty());

        let late = since + Duration::from_secs(10);
        let (state, actions) = next(Warm { since }, Idle { to: Tier::Paused }, late, &p);
        assert_eq!(
            state,
            Sleeping {
                to: Tier::Paused,
                wake_after: false
            }
        );
        // Hold first: a packet arriving while the container is frozen must be held, not lost.
        assert_eq!(actions, vec![Hold, StartSleep { to: Tier::Paused }]);
    }

    #[test]
    fn operator_sleep_ignores_min_warm() {
        let since = Instant::now();
        let (state, actions) = next(
            Warm { since },
            SleepRequested { to: Tier::Stopped },
            since,
            &policy(),
        );
        assert_eq!(
            state,
            Sleeping {
                to: Tier::Stopped,
                wake_after: false
            }
        );
        assert_eq!(actions, vec![Hold, StartSleep { to: Tier::Stopped }]);
    }

    #[test]
    fn packet_during_sleep_wakes_right_after() {
        let now = Instant::now();
        let sleeping = Sleeping {
            to: Tier::Stopped,
            wake_after: false,
        };
        let (state, actions) = next(sleeping, PacketHeld, now, &policy());
        assert_eq!(
            state,
            Sleeping {
                to: Tier::Stopped,
                wake_after: true
            }
        );
        assert!(
            actions.is_empty(),
            "no second container operation while one is under way"
        );
        let (state, actions) = next(state, SleepSucceeded, now, &policy());
        assert_eq!(
            state,
            Waking {
                from: Tier::Stopped,
                failures: 0
            }
        );
        assert_eq!(
            actions,
            vec![StartWake {
                from: Tier::Stopped
            }]
        );
    }

    #[test]
    fn quiet_sleep_ends_asleep() {
        let now = Instant::now();
        let (state, actions) = next(
            Sleeping {
                to: Tier::Paused,
                wake_after: false,
            },
            SleepSucceeded,
            now,
            &policy(),
        );
        assert_eq!(state, Asleep { tier: Tier::Paused });
        assert!(actions.is_empty());
    }

    #[test]
    fn failed_sleep_returns_to_warm_and_delivers() {
        let now = Instant::now();
        let (state, actions) = next(
            Sleeping {
                to: Tier::Paused,
                wake_after: true,
            },
            SleepFailed,
            now,
            &policy(),
        );
        assert_eq!(state, Warm { since: now });
        assert_eq!(actions, vec![Pass, DeliverHeld]);
    }

    #[test]
    fn asleep_host_escalates_only_to_deeper_tiers() {
        let now = Instant::now();
        let paused = Asleep { tier: Tier::Paused };
        let (state, actions) = next(paused, Idle { to: Tier::Stopped }, now, &policy());
        assert_eq!(
            state,
            Sleeping {
                to: Tier::Stopped,
                wake_after: false
            }
        );
        assert_eq!(
            actions,
            vec![StartSleep { to: Tier::Stopped }],
            "already holding"
        );

        let stopped = Asleep {
            tier: Tier::Stopped,
        };
        let (state, actions) = next(stopped, Idle { to: Tier::Paused }, now, &policy());
        assert_eq!(state, stopped);
        assert!(actions.is_empty());
    }

    #[test]
    fn exited_container_makes_the_host_asleep_and_held() {
        let now = Instant::now();
        let (state, actions) = next(Warm { since: now }, ContainerExited, now, &policy());
        assert_eq!(
            state,
            Asleep {
                tier: Tier::Stopped
            }
        );
        assert_eq!(actions, vec![Hold]);
    }

    #[test]
    fn nonsensical_events_change_nothing() {
        let now = Instant::now();
        let states = [
            Asleep {
                tier: Tier::Stopped,
            },
            Waking {
                from: Tier::Absent,
                failures: 0,
            },
            Warm { since: now },
            Sleeping {
                to: Tier::Paused,
                wake_after: false,
            },
            Failed {
                tier: Tier::Stopped,
                failures: 1,
                retry_at: now,
            },
        ];
        for state in states {
            for event in [
                WakeSucceeded,
                WakeFailed,
                SleepSucceeded,
                SleepFailed,
                ContainerExited,
            ] {
                let (after, actions) = next(state, event, now, &policy());
                let expected_change = matches!(
                    (state, event),
                    (Waking { .. }, WakeSucceeded | WakeFailed)
                        | (Sleeping { .. }, SleepSucceeded | SleepFailed)
                        | (Warm { .. }, ContainerExited)
                );
                if !expected_change {
                    assert_eq!(after, state, "{event:?} in {state:?}");
                    assert!(actions.is_empty(), "{event:?} in {state:?}");
                }
            }
        }
    }

    #[test]
    fn a_host_served_by_another_node_forwards_and_comes_back_asleep() {
        let now = Instant::now();
        let failed = Failed {
            tier: Tier::Stopped,
            failures: 1,
            retry_at: now,
        };
        for (before, tier) in [
            (Asleep { tier: Tier::Paused }, Tier::Paused),
            (failed, Tier::Stopped),
            (
                Waking {
                    from: Tier::Absent,
                    failures: 0,
                },
                Tier::Absent,
            ),
        ] {
            let event = if matches!(before, Waking { .. }) {
                ClaimLost
            } else {
                ServedElsewhere
            };
            let (state, actions) = next(before, event, now, &policy());
            assert_eq!(state, Elsewhere { tier });
            // Forward first: re-delivered packets must not be held again.
            assert_eq!(actions, vec![Forward, DeliverHeld]);
            let (state, actions) = next(state, PacketHeld, now, &policy());
            assert_eq!((state, actions), (Elsewhere { tier }, vec![DeliverHeld]));
            let (state, actions) = next(state, ServedHere, now, &policy());
            assert_eq!((state, actions), (Asleep { tier }, vec![Hold]));
        }
        // Warm and sleeping hosts are this node's (it holds their key): a route signal for
        // them is stale; a waking one learns from its own claim.
        for state in [
            Warm { since: now },
            Sleeping {
                to: Tier::Paused,
                wake_after: false,
            },
            Waking {
                from: Tier::Absent,
                failures: 0,
            },
        ] {
            assert_eq!(
                next(state, ServedElsewhere, now, &policy()),
                (state, vec![])
            );
        }
        // An operator's wake does not start one here.
        let elsewhere = Elsewhere { tier: Tier::Absent };
        assert_eq!(
            next(elsewhere, WakeRequested, now, &policy()),
            (elsewhere, vec![])
        );
    }
}
