//! Unit tests of the fake engine itself, and of readiness driven through it.

use std::{collections::BTreeMap, net::Ipv4Addr};

use super::*;
use crate::{
    config::ReadyProbe,
    readiness::{self, ReadyError},
};

fn spec(host: &str) -> ContainerSpec {
    ContainerSpec {
        name: format!("imag--{host}"),
        host: host.into(),
        network: "imag".into(),
        address: Ipv4Addr::new(10, 77, 0, 10),
        image: "imag-test/http".into(),
        command: None,
        env: BTreeMap::new(),
        extra_hosts: Vec::new(),
        options: crate::runtime::ContainerOptions::default(),
        swap_prefetch: false,
    }
}

fn network(subnet: &str) -> NetworkSpec {
    let text = format!("[network]\nsubnet = \"{subnet}\"\n");
    crate::config::Config::parse(&text, "test.toml")
        .unwrap()
        .network
        .spec()
}

#[tokio::test]
async fn a_wake_creates_starts_or_unpauses_and_says_from_where() {
    let fake = FakeRuntime::new();
    let (web, db, cache) = (spec("web"), spec("db"), spec("cache"));
    fake.put(&db, ContainerStatus::Stopped);
    fake.put(&cache, ContainerStatus::Paused);
    // The hint is a belief: the engine's state decides.
    for (spec, hint, from) in [
        (&web, Tier::Paused, Tier::Absent),
        (&db, Tier::Absent, Tier::Stopped),
        (&cache, Tier::Stopped, Tier::Paused),
    ] {
        let started = fake.wake(spec, hint).await.unwrap();
        assert_eq!(started.from, from, "{}", spec.name);
        assert!(started.running_ns >= started.requested_ns);
        assert_eq!(fake.status(&spec.name), Some(ContainerStatus::Running));
        assert_eq!(
            fake.observe(spec).await.unwrap(),
            Observed::Present {
                status: ContainerStatus::Running,
                current: true
            }
        );
    }
    assert_eq!(
        fake.take_calls()[..2],
        [
            Call::Wake {
                container: "imag--web".into(),
                from: Tier::Paused
            },
            Call::Observe("imag--web".into())
        ]
    );
}

#[tokio::test]
async fn sleeping_moves_the_container_between_tiers() {
    let fake = FakeRuntime::new();
    let web = spec("web");
    fake.wake(&web, Tier::Absent).await.unwrap();
    fake.sleep(&web, Tier::Paused).await.unwrap();
    assert_eq!(fake.status("imag--web"), Some(ContainerStatus::Paused));
    // A paused container still has its process (as Docker says).
    assert!(fake.running_info(&web).await.is_ok());
    fake.sleep(&web, Tier::Stopped).await.unwrap();
    assert_eq!(fake.status("imag--web"), Some(ContainerStatus::Stopped));
    fake.sleep(&web, Tier::Absent).await.unwrap();
    assert_eq!(fake.observe(&web).await.unwrap(), Observed::Absent);
    // Stopping or removing what is gone is fine; pausing it is not.
    fake.sleep(&web, Tier::Stopped).await.unwrap();
    assert!(matches!(
        fake.sleep(&web, Tier::Paused).await,
        Err(RuntimeError::Engine {
            action: "pause",
            ..
        })
    ));
}

#[tokio::test(start_paused = true)]
async fn scripted_wakes_take_their_time_on_tokio_s_clock_and_can_fail() {
    let fake = FakeRuntime::new();
    let web = spec("web");
    fake.script_wake(
        "imag--web",
        Duration::from_millis(300),
        WakeOutcome::ImageMissing,
    );
    fake.script_wake(
        "imag--web",
        Duration::ZERO,
        WakeOutcome::Fails(RuntimeError::Unreachable("gone".into())),
    );
    let before = tokio::time::Instant::now();
    assert_eq!(
        fake.wake(&web, Tier::Absent).await,
        Err(RuntimeError::ImageMissing {
            image: "imag-test/http".into()
        })
    );
    assert_eq!(before.elapsed(), Duration::from_millis(300));
    assert!(matches!(
        fake.wake(&web, Tier::Absent).await,
        Err(RuntimeError::Unreachable(_))
    ));
    assert_eq!(
        fake.status("imag--web"),
        None,
        "failed wakes change nothing"
    );
    // The script is used up: the next wake runs.
    assert_eq!(
        fake.wake(&web, Tier::Absent).await.unwrap().from,
        Tier::Absent
    );

    fake.script_sleep(
        "imag--web",
        Duration::from_secs(2),
        Err(RuntimeError::Unreachable("x".into())),
    );
    assert!(fake.sleep(&web, Tier::Stopped).await.is_err());
    assert_eq!(before.elapsed(), Duration::from_millis(2300));
    assert_eq!(fake.status("imag--web"), Some(ContainerStatus::Running));
}

#[tokio::test]
async fn exits_show_in_running_info_and_on_the_event_stream_of_their_network() {
    let fake = FakeRuntime::new();
    let (web, db) = (spec("web"), spec("db"));
    let mut other = spec("other");
    other.network = "elsewhere".into();
    let mut events = fake.events("imag");
    fake.script_wake("imag--web", Duration::ZERO, WakeOutcome::Exits { code: 3 });
    fake.wake(&web, Tier::Absent).await.unwrap();
    assert_eq!(
        fake.running_info(&web).await.unwrap_err().to_string(),
        "container exited before it was ready (status exited, exit code 3)"
    );
    fake.put(&other, ContainerStatus::Running);
    fake.exit("imag--other", 1);
    fake.put(&db, ContainerStatus::Running);
    assert_eq!(fake.running_info(&db).await.unwrap().pid, FIRST_PID + 2);
    fake.exit("imag--db", 137);
    assert_eq!(
        events.next().await,
        Some(RuntimeEvent::Exited { host: "web".into() })
    );
    assert_eq!(
        events.next().await,
        Some(RuntimeEvent::Exited { host: "db".into() }),
        "only this network's containers"
    );
    assert!(matches!(
        fake.running_info(&spec("nobody")).await,
        Err(NotRunning::Gone(_))
    ));
}

#[tokio::test]
async fn observe_all_sees_this_network_s_containers_of_the_given_specs() {
    let fake = FakeRuntime::new();
    let (web, db, cache) = (spec("web"), spec("db"), spec("cache"));
    let mut other = spec("other");
    other.network = "elsewhere".into();
    fake.put(&web, ContainerStatus::Running);
    fake.put_stale(&db, ContainerStatus::Stopped);
    fake.put(&other, ContainerStatus::Running);
    let specs = [web.clone(), db.clone(), cache.clone(), other.clone()];
    let observed = fake.observe_all("imag", &specs).await.unwrap();
    assert_eq!(
        observed,
        HashMap::from([
            (
                "imag--web".to_string(),
                Observed::Present {
                    status: ContainerStatus::Running,
                    current: true
                }
            ),
            (
                "imag--db".to_string(),
                Observed::Present {
                    status: ContainerStatus::Stopped,
                    current: false
                }
            ),
        ])
    );
    assert_eq!(fake.calls(), [Call::ObserveAll("imag".into())]);
}

#[tokio::test]
async fn networks_are_created_reused_checked_and_removed_only_if_ours() {
    let fake = FakeRuntime::new();
    fake.ensure_network(&network("10.77.0.0/24")).await.unwrap();
    fake.ensure_network(&network("10.77.0.0/24")).await.unwrap();
    assert!(matches!(
        fake.ensure_network(&network("10.88.0.0/24")).await,
        Err(RuntimeError::Engine {
            action: "reuse network",
            ..
        })
    ));
    assert!(fake.remove_network("imag").await.unwrap());
    assert!(!fake.has_network("imag"));
    assert!(fake.remove_network("imag").await.unwrap(), "already gone");
    fake.put_foreign_network("theirs");
    assert!(!fake.remove_network("theirs").await.unwrap());
    assert!(fake.has_network("theirs"));
}

#[tokio::test]
async fn fast_thaw_leaves_a_wake_from_pause_unsettled_until_settled_or_paused_again() {
    let fake = FakeRuntime::connect(EngineOptions {
        fast_thaw: true,
        ..EngineOptions::default()
    })
    .await
    .unwrap();
    let web = spec("web");
    fake.put(&web, ContainerStatus::Paused);
    fake.wake(&web, Tier::Paused).await.unwrap();
    assert!(fake.unsettled(&web));
    fake.settle(&web).await.unwrap();
    assert!(!fake.unsettled(&web));
    fake.sleep(&web, Tier::Paused).await.unwrap();
    fake.wake(&web, Tier::Paused).await.unwrap();
    assert!(fake.unsettled(&web));
    fake.sleep(&web, Tier::Paused).await.unwrap();
    assert!(!fake.unsettled(&web));

    let slow = FakeRuntime::new();
    slow.put(&web, ContainerStatus::Paused);
    slow.wake(&web, Tier::Paused).await.unwrap();
    assert!(!slow.unsettled(&web), "no fast thaw, nothing to settle");
}

/// The fake drives the code above the seam: readiness fails fast on a container that exits.
#[tokio::test(start_paused = true)]
async fn readiness_sees_a_scripted_exit() {
    let fake = FakeRuntime::new();
    let web = spec("web");
    fake.script_wake("imag--web", Duration::ZERO, WakeOutcome::Exits { code: 1 });
    fake.wake(&web, Tier::Absent).await.unwrap();
    let timeout = Duration::from_secs(5);
    let deadline = tokio::time::Instant::now() + timeout;
    let ready = readiness::wait_ready(
        &fake,
        &web,
        ReadyProbe::Delay(Duration::from_millis(100)),
        deadline,
        timeout,
        Duration::from_millis(100),
        None,
    )
    .await;
    assert!(matches!(
        ready,
        Err(ReadyError::Exited(NotRunning::Exited { code: 1, .. }))
    ));
    // A UDP probe on a live container whose socket never shows up: the wake timeout.
    let db = spec("db");
    fake.wake(&db, Tier::Absent).await.unwrap();
    let ready = readiness::wait_ready(
        &fake,
        &db,
        ReadyProbe::Udp(53),
        deadline,
        timeout,
        Duration::from_millis(100),
        None,
    )
    .await;
    assert!(matches!(ready, Err(ReadyError::Timeout { .. })));
    assert_eq!(tokio::time::Instant::now(), deadline);
}

/// `ready = "healthy"`: released when the engine says healthy (not before, and not failed by an
/// unhealthy spell); an exit fails at once, no healthcheck at all fails with the fix.
#[tokio::test(start_paused = true)]
#[allow(
    clippy::too_many_lines,
    reason = "one scenario on a paused clock, step by step"
)]
async fn readiness_waits_for_the_engines_health() {
    let fake = FakeRuntime::new();
    let mut web = spec("web");
    web.options.healthcheck = Some(crate::runtime::Healthcheck {
        test: vec!["CMD".into(), "/check".into()],
        interval: None,
        timeout: None,
        retries: None,
        start_period: None,
        start_interval: None,
    });
    fake.wake(&web, Tier::Absent).await.unwrap();
    assert_eq!(
        fake.container("imag--web").unwrap().health,
        Some(Health::Starting)
    );
    let timeout = Duration::from_secs(5);
    let start = tokio::time::Instant::now();
    let deadline = start + timeout;
    let script = fake.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(250)).await;
        script.set_health("imag--web", Some(Health::Unhealthy));
        tokio::time::sleep(Duration::from_millis(300)).await;
        script.set_health("imag--web", Some(Health::Healthy));
    });
    let poll = Duration::from_millis(100);
    let ready = readiness::wait_ready(
        &fake,
        &web,
        ReadyProbe::Healthy,
        deadline,
        timeout,
        poll,
        None,
    )
    .await;
    assert_eq!(ready, Ok(readiness::ReadyBy::Poll));
    assert_eq!(
        tokio::time::Instant::now() - start,
        Duration::from_millis(600),
        "released at the first poll after healthy"
    );
    assert!(fake.calls().contains(&Call::Health("imag--web".into())));

    // Restarted: its healthcheck starts over; it exits before turning healthy.
    fake.sleep(&web, Tier::Stopped).await.unwrap();
    fake.wake(&web, Tier::Stopped).await.unwrap();
    assert_eq!(
        fake.container("imag--web").unwrap().health,
        Some(Health::Starting)
    );
    let script = fake.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(250)).await;
        script.exit("imag--web", 137);
    });
    let deadline = tokio::time::Instant::now() + timeout;
    let ready = readiness::wait_ready(
        &fake,
        &web,
        ReadyProbe::Healthy,
        deadline,
        timeout,
        poll,
        None,
    )
    .await;
    assert!(matches!(
        ready,
        Err(ReadyError::Exited(NotRunning::Exited { code: 137, .. }))
    ));

    // Never healthy: the wake timeout.
    fake.wake(&web, Tier::Stopped).await.unwrap();
    let deadline = tokio::time::Instant::now() + timeout;
    let ready = readiness::wait_ready(
        &fake,
        &web,
        ReadyProbe::Healthy,
        deadline,
        timeout,
        poll,
        None,
    )
    .await;
    assert!(matches!(ready, Err(ReadyError::Timeout { .. })));
    assert_eq!(tokio::time::Instant::now(), deadline);

    // Neither the host nor (as the engine reports) its image has a healthcheck.
    let plain = spec("plain");
    fake.wake(&plain, Tier::Absent).await.unwrap();
    let deadline = tokio::time::Instant::now() + timeout;
    let ready = readiness::wait_ready(
        &fake,
        &plain,
        ReadyProbe::Healthy,
        deadline,
        timeout,
        poll,
        None,
    )
    .await;
    assert_eq!(ready, Err(ReadyError::NoHealthcheck));
    assert!(
        ReadyError::NoHealthcheck
            .to_string()
            .contains("add one to the host or its image")
    );
    // The image's own healthcheck, as the engine would report it.
    fake.set_health("imag--plain", Some(Health::Healthy));
    let ready = readiness::wait_ready(
        &fake,
        &plain,
        ReadyProbe::Healthy,
        deadline,
        timeout,
        poll,
        None,
    )
    .await;
    assert_eq!(ready, Ok(readiness::ReadyBy::FirstTry));
}
