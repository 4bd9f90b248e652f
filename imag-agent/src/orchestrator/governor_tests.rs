//! The governor on the fake engine: `max_warm` and `memory_budget` evictions (least recently
//! used, open connections last), refusals when nothing may be evicted, wake rates per source, and
//! wakes queued beyond `max_concurrent_wakes`.

use super::*;

/// Wakes host `name` as its first held packet would, and lets every job finish.
async fn wake_by_packet(orch: &mut Orch, addr: Ipv4Addr) {
    let frame = held(orch, addr);
    orch.on_held(frame);
    orch.publish();
    settle(orch, Duration::from_secs(1)).await;
}

const C: Ipv4Addr = Ipv4Addr::new(10, 9, 0, 12);

fn three(extra: &str) -> String {
    [("a", 10), ("b", 11), ("c", 12)]
        .map(|(n, o)| host(n, o, extra))
        .concat()
}

#[tokio::test(start_paused = true)]
async fn max_warm_evicts_the_least_recently_used_before_waking_the_third() {
    let (mut orch, fake) = limited("max_warm = 2", &three("min_warm = \"0s\""));
    wake_by_packet(&mut orch, WEB).await;
    wake_by_packet(&mut orch, DB).await;
    // b had traffic since: a is the least recently active.
    orch.hosts[1].activity.last_packet_ns = monotonic_ns() + 1;
    wake_by_packet(&mut orch, C).await;
    assert_eq!(wakes(&fake), vec!["t--a", "t--b", "t--c"]);
    let stop_a = Call::Sleep {
        container: "t--a".into(),
        to: Tier::Stopped,
    };
    let wake_c = fake
        .calls()
        .iter()
        .position(|c| matches!(c, Call::Wake { container, .. } if container == "t--c"))
        .unwrap();
    assert!(
        position(&fake, &stop_a) < wake_c,
        "room first, then the wake"
    );
    assert_eq!(state(&orch, "a"), StateName::Asleep);
    assert_eq!(state(&orch, "b"), StateName::Warm);
    assert_eq!(state(&orch, "c"), StateName::Warm);
    assert_eq!(
        orch.counters.delivered, 3,
        "c's held packet waited and went through"
    );
    let budget = orch.subscribe().borrow().budget;
    assert_eq!((budget.warm, budget.warm_limit), (2, Some(2)));
    assert_eq!(budget.evictions_max_warm, 1);
}

#[tokio::test(start_paused = true)]
async fn a_host_with_an_open_connection_survives_while_an_idle_one_goes() {
    let (mut orch, fake) = limited("max_warm = 2", &three("min_warm = \"0s\""));
    wake_by_packet(&mut orch, WEB).await;
    wake_by_packet(&mut orch, DB).await;
    // a is the least recently active, but has a connection open.
    orch.hosts[0].activity.tcp_opened = 1;
    orch.hosts[1].activity.last_packet_ns = monotonic_ns() + 1;
    wake_by_packet(&mut orch, C).await;
    assert_eq!(state(&orch, "a"), StateName::Warm);
    assert_eq!(state(&orch, "b"), StateName::Asleep);
    assert_eq!(state(&orch, "c"), StateName::Warm);
    assert!(fake.calls().contains(&Call::Sleep {
        container: "t--b".into(),
        to: Tier::Stopped
    }));
}

#[tokio::test(start_paused = true)]
async fn memory_budget_counts_the_hosts_memory_limits() {
    let (mut orch, fake) = limited(
        "memory_budget = \"1GiB\"",
        &three("min_warm = \"0s\"\nmemory = \"512MiB\"\nsleep = \"remove\""),
    );
    wake_by_packet(&mut orch, WEB).await;
    wake_by_packet(&mut orch, DB).await;
    assert_eq!(orch.subscribe().borrow().budget.memory_bytes, 1 << 30);
    orch.hosts[1].activity.last_packet_ns = monotonic_ns() + 1;
    wake_by_packet(&mut orch, C).await;
    assert!(
        fake.calls().contains(&Call::Sleep {
            container: "t--a".into(),
            to: Tier::Absent
        }),
        "removed, as its sleep says: {:?}",
        fake.calls()
    );
    assert_eq!(state(&orch, "c"), StateName::Warm);
    assert_eq!(orch.subscribe().borrow().budget.evictions_memory, 1);
}

#[tokio::test(start_paused = true)]
async fn nothing_evictable_refuses_the_wake_at_once() {
    // a stays inside its min_warm (30 s by default).
    let (mut orch, fake) = limited("max_warm = 1", &three(""));
    wake_by_packet(&mut orch, WEB).await;
    let frame = held(&orch, DB);
    orch.on_held(frame);
    orch.publish();
    assert_eq!(
        state(&orch, "b"),
        StateName::Failed,
        "decided without waiting"
    );
    assert_eq!(orch.counters.dropped_unanswerable, 1, "its packet refused");
    let failure = orch.hosts[1].last_wake.clone().unwrap().failure.unwrap();
    assert_eq!(failure.0, "budget");
    assert_eq!(wakes(&fake), vec!["t--a"]);
    assert_eq!(orch.subscribe().borrow().budget.refused_budget, 1);
}

/// A refusal is no failure of the host: no backoff, so the first packet after room came back
/// wakes it (an engine failure's backoff would refuse packets for a second and more).
#[tokio::test(start_paused = true)]
async fn a_refused_host_wakes_with_the_next_packet_once_there_is_room() {
    let (mut orch, fake) = limited("max_warm = 1", &three(""));
    wake_by_packet(&mut orch, WEB).await;
    wake_by_packet(&mut orch, DB).await;
    assert_eq!(
        state(&orch, "b"),
        StateName::Failed,
        "refused: a is inside min_warm"
    );
    let (reply, answer) = oneshot::channel();
    orch.on_input(Input::Sleep {
        host: "a".into(),
        to: None,
        reply,
    });
    assert_eq!(answer.await.unwrap(), Ok(()));
    settle(&mut orch, Duration::from_millis(100)).await;
    assert_eq!(state(&orch, "a"), StateName::Asleep);
    wake_by_packet(&mut orch, DB).await;
    assert_eq!(state(&orch, "b"), StateName::Warm);
    assert_eq!(wakes(&fake), vec!["t--a", "t--b"]);
    assert_eq!(
        orch.counters.dropped_unanswerable, 1,
        "only the refused packet"
    );
}

#[tokio::test(start_paused = true)]
async fn a_sweep_from_one_source_over_its_rate_starts_only_the_bucket() {
    let hosts: String = (0..50u8)
        .map(|i| host(&format!("h{i}"), 10 + i, ""))
        .collect();
    let (mut orch, fake) = limited("wakes_per_source = \"5/min\"", &hosts);
    for i in 0..50u8 {
        let dst = Ipv4Addr::new(10, 9, 0, 10 + i);
        let mut frame = held(&orch, dst);
        frame.frame = crate::packets::tests::tcp_syn([10, 1, 0, 7], dst.octets(), 40000, 80);
        orch.on_held(frame);
    }
    orch.publish();
    settle(&mut orch, Duration::from_secs(1)).await;
    assert_eq!(wakes(&fake).len(), 5, "{:?}", wakes(&fake));
    assert_eq!(orch.subscribe().borrow().budget.refused_rate, 45);
    assert_eq!(
        orch.counters.dropped_unanswerable, 45,
        "refused (no wire here)"
    );
    let asleep = orch
        .hosts
        .iter()
        .filter(|h| h.state.name() == "asleep")
        .count();
    assert_eq!(asleep, 45, "refused hosts stay asleep, without a failure");
}

#[tokio::test(start_paused = true)]
async fn wakes_beyond_max_concurrent_wakes_queue() {
    let (mut orch, fake) = limited("max_concurrent_wakes = 1", &three(""));
    for (name, _) in [("t--a", 0), ("t--b", 1)] {
        fake.script_wake(name, Duration::from_millis(100), WakeOutcome::Runs);
    }
    for addr in [WEB, DB] {
        let frame = held(&orch, addr);
        orch.on_held(frame);
    }
    orch.publish();
    assert_eq!(orch.subscribe().borrow().budget.queued, 1);
    settle(&mut orch, Duration::from_secs(1)).await;
    assert_eq!(wakes(&fake), vec!["t--a", "t--b"]);
    assert_eq!(state(&orch, "b"), StateName::Warm);
}
