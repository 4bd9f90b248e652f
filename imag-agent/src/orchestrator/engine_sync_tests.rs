//! The orchestrator following the engine (`engine_sync.rs`) on the fake engine: an operator's
//! pause, unpause, rename and removal of a host's container, engine restarts with and without
//! live restore, and a container of someone else in a host's way.

use futures::{StreamExt as _, stream::BoxStream};

use super::*;
use crate::runtime::{ContainerRuntime as _, RuntimeError};

/// Hands the next engine event to the orchestrator and lets the observation it starts finish.
async fn follow(orch: &mut Orch, events: &mut BoxStream<'static, RuntimeEvent>) -> RuntimeEvent {
    let event = events.next().await.expect("an engine event");
    orch.on_input(Input::Engine(event.clone()));
    settle(orch, Duration::from_secs(1)).await;
    event
}

/// Wakes `addr` by a held packet and checks it is warm.
async fn warm(orch: &mut Orch, addr: Ipv4Addr, name: &str) {
    let frame = held(orch, addr);
    orch.on_held(frame);
    settle(orch, Duration::from_secs(1)).await;
    assert_eq!(state(orch, name), StateName::Warm);
}

#[tokio::test(start_paused = true)]
async fn an_operator_s_pause_unpause_rename_and_removal_are_followed() {
    let (mut orch, fake) = orchestrator(&host("web", 10, ""));
    let mut events = fake.events("t");
    warm(&mut orch, WEB, "web").await;

    fake.operator_pause("t--web");
    follow(&mut orch, &mut events).await;
    assert_eq!(
        orch.hosts[0].state,
        HostState::Asleep { tier: Tier::Paused },
        "a paused container is a paused host"
    );
    assert!(orch.datapath().hold[&WEB], "its packets are held again");

    fake.operator_unpause("t--web");
    follow(&mut orch, &mut events).await;
    assert_eq!(state(&orch, "web"), StateName::Warm, "unpaused: warm");
    assert!(!orch.datapath().hold[&WEB]);

    fake.operator_rename("t--web", "mine");
    follow(&mut orch, &mut events).await;
    assert_eq!(
        state(&orch, "web"),
        StateName::Warm,
        "a renamed container is still the host's (by its labels)"
    );

    fake.operator_remove("mine");
    follow(&mut orch, &mut events).await;
    assert_eq!(
        orch.hosts[0].state,
        HostState::Asleep { tier: Tier::Absent },
        "a removed container is a cold host"
    );
    assert!(orch.datapath().hold[&WEB]);

    // The next packet wakes it again, from scratch, into one container.
    fake.take_calls();
    warm(&mut orch, WEB, "web").await;
    assert!(fake.calls().contains(&Call::Wake {
        container: "t--web".into(),
        from: Tier::Absent
    }));
    assert_eq!(fake.status("t--web"), Some(ContainerStatus::Running));
    assert_eq!(fake.status("mine"), None);
}

#[tokio::test(start_paused = true)]
async fn a_late_event_about_an_earlier_state_changes_nothing() {
    let (mut orch, fake) = orchestrator(&host("web", 10, ""));
    let mut events = fake.events("t");
    warm(&mut orch, WEB, "web").await;
    // The engine reports a pause, and the container is running again before the agent looks:
    // the look decides, not the event.
    fake.operator_pause("t--web");
    fake.operator_unpause("t--web");
    follow(&mut orch, &mut events).await;
    follow(&mut orch, &mut events).await;
    assert_eq!(state(&orch, "web"), StateName::Warm);
    assert!(!orch.datapath().hold[&WEB]);
}

#[tokio::test(start_paused = true)]
async fn an_engine_restart_leaves_every_host_in_a_true_state() {
    let hosts = host("web", 10, "") + &host("db", 11, "");
    let (mut orch, fake) = orchestrator(&hosts);
    let mut events = fake.events("t");
    warm(&mut orch, WEB, "web").await;
    // db's wake is under way when the engine goes away: the engine call fails.
    fake.script_wake(
        "t--db",
        Duration::from_millis(500),
        WakeOutcome::Fails(RuntimeError::Unreachable("connection refused".into())),
    );
    for _ in 0..3 {
        let frame = held(&orch, DB);
        orch.on_held(frame);
    }
    fake.restart_engine(false);
    follow(&mut orch, &mut events).await;

    assert_eq!(
        orch.hosts[0].state,
        HostState::Asleep {
            tier: Tier::Stopped
        },
        "web's container was stopped by the restart"
    );
    assert!(
        orch.datapath().hold[&WEB],
        "web is held, not passed into nothing"
    );
    assert_eq!(state(&orch, "db"), StateName::Failed);
    assert_eq!(
        orch.counters.dropped_unanswerable, 3,
        "db's held packets were refused (no packet socket in the test), none lost silently"
    );
    assert_eq!(orch.held.len(1), 0);

    // The next packets wake both again, each into one container.
    warm(&mut orch, WEB, "web").await;
    // (db is in its backoff, on the real clock: the operator's wake skips it.)
    let (reply, answer) = oneshot::channel();
    orch.on_input(Input::Wake {
        host: "db".into(),
        reply,
    });
    assert_eq!(answer.await.unwrap(), Ok(()));
    settle(&mut orch, Duration::from_secs(1)).await;
    assert_eq!(state(&orch, "db"), StateName::Warm);
    let containers = fake
        .observe_all(
            "t",
            &[orch.hosts[0].spec.clone(), orch.hosts[1].spec.clone()],
        )
        .await
        .unwrap();
    assert_eq!(containers.len(), 2);
}

#[tokio::test(start_paused = true)]
async fn with_live_restore_warm_hosts_stay_warm_across_an_engine_restart() {
    let hosts = host("web", 10, "") + &host("db", 11, "sleep = \"pause\"");
    let (mut orch, fake) = orchestrator(&hosts);
    let mut events = fake.events("t");
    warm(&mut orch, WEB, "web").await;
    warm(&mut orch, DB, "db").await;
    let (reply, _) = oneshot::channel();
    orch.on_input(Input::Sleep {
        host: "db".into(),
        to: None,
        reply,
    });
    settle(&mut orch, Duration::from_secs(1)).await;
    assert_eq!(
        orch.hosts[1].state,
        HostState::Asleep { tier: Tier::Paused }
    );
    fake.take_calls();

    fake.restart_engine(true);
    assert_eq!(follow(&mut orch, &mut events).await, RuntimeEvent::Resumed);
    assert_eq!(
        fake.calls(),
        [Call::ObserveAll("t".into())],
        "one look at every host"
    );
    assert_eq!(state(&orch, "web"), StateName::Warm);
    assert!(!orch.datapath().hold[&WEB]);
    assert_eq!(
        orch.hosts[1].state,
        HostState::Asleep { tier: Tier::Paused }
    );
}

#[tokio::test(start_paused = true)]
async fn a_foreign_container_in_a_host_s_way_is_reported_and_left_alone() {
    let (mut orch, fake) = orchestrator(&host("web", 10, ""));
    fake.put_foreign("t--web");
    let frame = held(&orch, WEB);
    orch.on_held(frame);
    settle(&mut orch, Duration::from_secs(1)).await;
    assert_eq!(
        state(&orch, "web"),
        StateName::Failed,
        "failed, not crashed"
    );
    let (reason, message) = orch.hosts[0]
        .last_wake
        .as_ref()
        .and_then(|w| w.failure.clone())
        .expect("a failure record");
    assert_eq!(reason, "foreign_container");
    assert!(
        message.contains("\"t--web\"") && message.contains("no imag labels"),
        "{message}"
    );
    let foreign = fake.container("t--web").expect("still there");
    assert!(!foreign.labelled);
    assert_eq!(foreign.status, ContainerStatus::Running);
    // Detach's removal of the host's container does not touch it either.
    fake.sleep(&orch.hosts[0].spec, Tier::Absent).await.unwrap();
    assert!(fake.container("t--web").is_some());
}
