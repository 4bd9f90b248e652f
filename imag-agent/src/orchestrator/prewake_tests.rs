//! Waking together on the fake engine (`tests.rs`'s harness): `wakes_with` starts a chain from
//! one packet, held packets between hosts teach an edge, and pre-wakes keep to `allow_from` and
//! the budget.

use std::{net::Ipv4Addr, time::Duration};

use super::{
    HostState, Tier,
    prewake::{Learner, Pair},
    state::Event,
    tests::{Orch, held, host, limited, orchestrator, settle, state, wakes},
};
use crate::{
    datapath::ring::HeldFrame, packets::tests::tcp_syn, report::StateName,
    runtime::fake::WakeOutcome,
};

const A: Ipv4Addr = Ipv4Addr::new(10, 9, 0, 10);
const B: Ipv4Addr = Ipv4Addr::new(10, 9, 0, 11);

/// A SYN from `src` held for `dst`.
fn syn(orch: &Orch, src: Ipv4Addr, dst: Ipv4Addr) -> HeldFrame {
    let mut frame = held(orch, dst);
    frame.frame = tcp_syn(src.octets(), dst.octets(), 40000, 8080);
    frame
}

fn learned(pairs: &[(&str, &str)]) -> Learner {
    Learner::from_pairs(
        pairs
            .iter()
            .map(|(from, to)| Pair {
                from: (*from).into(),
                to: (*to).into(),
                history: [true, true].into(),
            })
            .collect(),
    )
}

#[tokio::test(start_paused = true)]
async fn wakes_with_starts_a_chain_from_one_packet() {
    let (mut orch, fake) = orchestrator(
        &[
            host("a", 10, "wakes_with = [\"b\"]"),
            host("b", 11, "wakes_with = [\"c\"]"),
            host("c", 12, ""),
        ]
        .concat(),
    );
    for h in ["t--a", "t--b", "t--c"] {
        fake.script_wake(h, Duration::from_millis(200), WakeOutcome::Runs);
    }
    let frame = held(&orch, A);
    orch.on_held(frame);
    // One after another, the chain would take 600 ms; together, 200.
    tokio::time::sleep(Duration::from_millis(250)).await;
    while let Ok(outcome) = orch.outcomes.try_recv() {
        orch.on_outcome(outcome);
    }
    orch.publish();
    for h in ["a", "b", "c"] {
        assert_eq!(state(&orch, h), StateName::Warm, "{h} warm after 250 ms");
    }
    settle(&mut orch, Duration::from_secs(1)).await;
    assert_eq!(wakes(&fake).len(), 3);
    assert_eq!(orch.counters.delivered, 1);
    let view = orch.subscribe().borrow().prewake.clone();
    assert_eq!(view.recent.len(), 2, "{view:?}");
    assert!(view.recent.iter().all(|r| r.kind == "wakes_with"));
}

#[tokio::test(start_paused = true)]
async fn traffic_between_hosts_teaches_an_edge_that_then_fires() {
    let (mut orch, fake) = orchestrator(&[host("a", 10, ""), host("b", 11, "")].concat());
    for round in 1..=3 {
        let client = Ipv4Addr::new(10, 9, 0, 200);
        let frame = syn(&orch, client, A);
        orch.on_held(frame);
        tokio::time::sleep(Duration::from_millis(1)).await;
        if round == 3 {
            assert_eq!(
                wakes(&fake).iter().filter(|w| *w == "t--b").count(),
                3,
                "b woken with a, before a's traffic reached it"
            );
        }
        settle(&mut orch, Duration::from_secs(1)).await;
        if round < 3 {
            let frame = syn(&orch, A, B);
            orch.on_held(frame);
            settle(&mut orch, Duration::from_secs(1)).await;
        }
        let edges = orch.subscribe().borrow().prewake.edges.clone();
        assert_eq!(edges.len(), 1, "{edges:?}");
        assert_eq!(edges[0].learned, round >= 2, "round {round}: {edges:?}");
        for (id, _) in [(0, "a"), (1, "b")] {
            orch.apply(id, Event::SleepRequested { to: Tier::Stopped });
        }
        settle(&mut orch, Duration::from_secs(1)).await;
    }
    let recent = orch.subscribe().borrow().prewake.recent.clone();
    assert_eq!((recent.len(), recent[0].kind.as_str()), (1, "learned"));
}

#[tokio::test(start_paused = true)]
async fn a_pre_wake_keeps_to_allow_from_and_never_evicts() {
    let hosts = [
        host("a", 10, ""),
        host("b", 11, "allow_from = [\"10.9.0.99\"]"),
        host("c", 12, ""),
        host("d", 13, ""),
    ]
    .concat();
    let (mut orch, fake) = limited("max_warm = 2", &hosts);
    orch.prewake.learner = learned(&[("a", "b"), ("a", "c"), ("a", "d")]);
    let frame = held(&orch, A);
    orch.on_held(frame);
    settle(&mut orch, Duration::from_secs(1)).await;
    let mut started = wakes(&fake);
    started.sort();
    assert_eq!(
        started,
        ["t--a", "t--c"],
        "b refuses a's traffic; d does not fit in max_warm = 2 without evicting"
    );
    assert_eq!(
        orch.hosts[3].state,
        HostState::Asleep { tier: Tier::Absent }
    );
    assert_eq!(orch.subscribe().borrow().budget.evictions_max_warm, 0);
}

/// A pre-woken host's link counts packets only once it is found, a moment after the host became
/// warm; a connection its source opened to it meanwhile still makes the pre-wake a used one.
#[tokio::test(start_paused = true)]
async fn a_connection_before_the_link_counts_makes_a_pre_wake_used() {
    let (mut orch, _fake) = orchestrator(&[host("a", 10, ""), host("b", 11, "")].concat());
    orch.prewake.learner = learned(&[("a", "b")]);
    let frame = held(&orch, A);
    orch.on_held(frame);
    settle(&mut orch, Duration::from_secs(1)).await;
    assert_eq!(state(&orch, "b"), StateName::Warm);
    let result = |orch: &Orch| orch.subscribe().borrow().prewake.recent[0].result.clone();
    orch.tick();
    orch.publish();
    assert_eq!(result(&orch), "pending", "no traffic yet");
    // a connects to b: the connection is counted, no packet of b's link is.
    orch.datapath_mut()
        .activity
        .entry(B)
        .or_default()
        .tcp_opened += 1;
    // One tick reads the activity, the next judges it.
    orch.tick();
    orch.tick();
    orch.publish();
    assert_eq!(result(&orch), "used");
}

/// A pre-woken host whose source is slow to call it (a page-in, say) stays warm for that call
/// while its source is warm; once the source sleeps without calling, it may sleep too.
#[tokio::test(start_paused = true)]
async fn a_pre_woken_host_waits_for_its_source_while_the_source_is_warm() {
    let quick = "idle_timeout = \"1s\"\nmin_warm = \"0s\"";
    let (mut orch, _fake) = orchestrator(&[host("a", 10, quick), host("b", 11, quick)].concat());
    orch.prewake.learner = learned(&[("a", "b")]);
    orch.on_held(held(&orch, A));
    settle(&mut orch, Duration::from_secs(1)).await;
    assert_eq!(state(&orch, "b"), StateName::Warm);
    // Both quiet past their idle timeout; a has a connection open (it serves the request that
    // woke it, and has not called b yet).
    orch.datapath_mut()
        .activity
        .entry(A)
        .or_default()
        .tcp_opened += 1;
    for id in [0, 1] {
        orch.hosts[id].warm_since_ns = crate::clock::monotonic_ns() - 2_000_000_000;
    }
    orch.tick();
    settle(&mut orch, Duration::from_millis(100)).await;
    assert_eq!(state(&orch, "a"), StateName::Warm, "a serves");
    assert_eq!(state(&orch, "b"), StateName::Warm, "b waits for a's call");
    // a answered and went to sleep without calling b: b may sleep.
    orch.datapath_mut()
        .activity
        .entry(A)
        .or_default()
        .tcp_closed += 1;
    orch.tick();
    settle(&mut orch, Duration::from_millis(100)).await;
    orch.tick();
    settle(&mut orch, Duration::from_millis(100)).await;
    assert_eq!(state(&orch, "a"), StateName::Asleep);
    assert_eq!(state(&orch, "b"), StateName::Asleep);
}
