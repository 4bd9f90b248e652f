//! Every transition of `state::next`, one test per rule and race.
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
    // Drain first: a packet arriving while the container is frozen must be held, not lost, and
    // one already on its way must reach it and be seen.
    assert_eq!(actions, vec![Drain, StartSleep { to: Tier::Paused }]);
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
    assert_eq!(actions, vec![Drain, StartSleep { to: Tier::Stopped }]);
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
