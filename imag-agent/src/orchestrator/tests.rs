//! The orchestrator's shell on a fake engine and an in-memory datapath: held packets in, engine
//! calls, datapath switches, deliveries, refusals and published snapshots out. Time is tokio's
//! paused clock, so scripted engine delays cost nothing.

use std::{
    collections::{HashMap, HashSet},
    net::Ipv4Addr,
    time::Duration,
};

use imag_common::{HeldFrameHeader, HostActivity, stat};
use ipnet::Ipv4Net;
use tokio::sync::oneshot;

use super::*;
use crate::{
    datapath::{DatapathError, HostMode},
    readiness::ListenWatch,
    report::StateName,
    runtime::{
        ContainerStatus, Health,
        fake::{Call, FakeRuntime, WakeOutcome},
    },
};

/// The datapath's per-host state, in memory.
#[derive(Default)]
pub(super) struct FakeTable {
    /// Hold (true) or pass, by address.
    hold: HashMap<Ipv4Addr, bool>,
    mode: HashMap<Ipv4Addr, HostMode>,
    pub(super) activity: HashMap<Ipv4Addr, HostActivity>,
    links: HashSet<Ipv4Addr>,
    /// Sources restricted hosts allow: (host id, prefix).
    allowed: Vec<(u32, Ipv4Net)>,
    /// Frames re-delivered, in order: (ifindex, frame length).
    delivered: std::sync::Mutex<Vec<(u32, usize)>>,
}

impl HostTable for FakeTable {
    fn set_host(
        &mut self,
        addr: Ipv4Addr,
        _: u32,
        mode: HostMode,
        _: u8,
    ) -> Result<(), DatapathError> {
        self.hold
            .insert(addr, matches!(mode, HostMode::Hold | HostMode::Drain));
        self.mode.insert(addr, mode);
        Ok(())
    }
    fn ensure_activity(&mut self, addr: Ipv4Addr) -> Result<(), DatapathError> {
        self.activity.entry(addr).or_default();
        Ok(())
    }
    fn ignore_peers(&mut self, _: u32, _: Ipv4Net) -> Result<(), DatapathError> {
        Ok(())
    }
    fn set_allowed(&mut self, allowed: &[(u32, Ipv4Net)]) -> Result<(), DatapathError> {
        self.allowed = allowed.to_vec();
        Ok(())
    }
    fn activity(&self, addr: Ipv4Addr) -> Option<HostActivity> {
        self.activity.get(&addr).copied()
    }
    fn reset_connections(&mut self, addr: Ipv4Addr, open: u64) -> Result<(), DatapathError> {
        let a = self.activity.entry(addr).or_default();
        a.tcp_opened = open;
        a.tcp_closed = 0;
        Ok(())
    }
    fn stats(&self) -> [u64; stat::COUNT as usize] {
        [0; stat::COUNT as usize]
    }
    fn attach_host_link(
        &mut self,
        addr: Ipv4Addr,
        _: &Interface,
        _: Option<[u8; 6]>,
    ) -> Result<(), DatapathError> {
        self.links.insert(addr);
        Ok(())
    }
    fn has_host_link(&self, addr: Ipv4Addr) -> bool {
        self.links.contains(&addr)
    }
    fn detach_host_link(&mut self, addr: Ipv4Addr) {
        self.links.remove(&addr);
    }
    fn deliver(&self, ifindex: u32, frame: &[u8]) -> Result<(), DatapathError> {
        self.delivered.lock().unwrap().push((ifindex, frame.len()));
        Ok(())
    }
}

pub(super) type Orch = Orchestrator<FakeRuntime, FakeTable>;

/// The engine's side: operators, restarts, foreign containers (`engine_sync.rs`).
#[path = "engine_sync_tests.rs"]
mod engine_sync_tests;

/// Scale-out: claims, route signals, releases, fencing (`cluster.rs`).
#[path = "cluster_tests.rs"]
mod cluster_tests;

/// The governor: `max_warm` and `memory_budget` evictions, refusals, wake rates, the wake queue
/// (`governor.rs`, `budget.rs`, `rate.rs`).
#[path = "governor_tests.rs"]
mod governor_tests;

/// A network 10.9.0.0/24 with `hosts` (TOML of `[[host]]` sections).
pub(super) fn orchestrator(hosts: &str) -> (Orch, FakeRuntime) {
    let text = format!("[network]\nname = \"t\"\nsubnet = \"10.9.0.0/24\"\n\n{hosts}");
    let config = Config::parse(&text, "test.toml").expect("a valid test config");
    let fake = FakeRuntime::new();
    let hosts = Orch::hosts_from(&config, |_| HostState::Asleep { tier: Tier::Absent });
    let mut orch = Orchestrator::new(
        hosts,
        FakeTable::default(),
        fake.clone(),
        &config,
        None,
        ListenWatch::new(None),
    )
    .without_wire();
    orch.publish_hosts().unwrap();
    (orch, fake)
}

pub(super) fn host(name: &str, last_octet: u8, extra: &str) -> String {
    format!(
        "[[host]]\nname = \"{name}\"\naddress = \"10.9.0.{last_octet}\"\nimage = \"img\"\n{extra}\n"
    )
}

/// A held SYN-sized frame for `addr`, as the ring buffer reader hands it over.
pub(super) fn held(orch: &Orch, addr: Ipv4Addr) -> HeldFrame {
    let id = orch
        .hosts
        .iter()
        .position(|h| h.config.address == addr)
        .unwrap();
    HeldFrame {
        header: HeldFrameHeader {
            held_at_ns: monotonic_ns(),
            ifindex: 3,
            frame_len: 60,
            host_addr: addr_key(addr),
            host_id: u32::try_from(id).unwrap(),
        },
        frame: vec![0; 60],
    }
}

/// Handles the jobs' outcomes until none comes within `quiet` (paused time: instant).
pub(super) async fn settle(orch: &mut Orch, quiet: Duration) {
    while let Ok(Some(outcome)) = tokio::time::timeout(quiet, orch.outcomes.recv()).await {
        orch.on_outcome(outcome);
        orch.publish();
    }
}

pub(super) fn wakes(fake: &FakeRuntime) -> Vec<String> {
    fake.calls()
        .into_iter()
        .filter_map(|c| match c {
            Call::Wake { container, .. } => Some(container),
            _ => None,
        })
        .collect()
}

pub(super) fn state(orch: &Orch, name: &str) -> StateName {
    let snapshot = orch.subscribe();
    let snapshot = snapshot.borrow();
    snapshot
        .hosts
        .iter()
        .find(|h| h.name == name)
        .unwrap()
        .state
}

const WEB: Ipv4Addr = Ipv4Addr::new(10, 9, 0, 10);
const DB: Ipv4Addr = Ipv4Addr::new(10, 9, 0, 11);

#[tokio::test(start_paused = true)]
async fn held_packets_wake_a_cold_host_once_and_are_delivered() {
    let (mut orch, fake) = orchestrator(&host("web", 10, ""));
    assert!(orch.datapath().hold[&WEB], "cold hosts are held");
    fake.script_wake("t--web", Duration::from_millis(200), WakeOutcome::Runs);
    for _ in 0..5 {
        let frame = held(&orch, WEB);
        orch.on_held(frame);
    }
    orch.publish();
    assert_eq!(state(&orch, "web"), StateName::Waking);
    assert_eq!(orch.subscribe().borrow().hosts[0].held_packets, 5);
    settle(&mut orch, Duration::from_secs(1)).await;
    assert_eq!(wakes(&fake), vec!["t--web"], "one wake for five packets");
    assert_eq!(state(&orch, "web"), StateName::Warm);
    assert!(!orch.datapath().hold[&WEB], "warm hosts pass");
    assert_eq!(orch.counters.delivered, 5);
    let snapshot = orch.subscribe().borrow().clone();
    let last = snapshot.hosts[0].last_wake.clone().expect("a wake record");
    assert!(last.failure.is_none());
    assert_eq!(last.from, Tier::Absent);
    // Phases are stamped on CLOCK_MONOTONIC (the kernel's clock), not tokio's paused one.
    assert!(
        last.timings.running_ns >= last.timings.requested_ns,
        "{last:?}"
    );
    assert_eq!(
        *orch.datapath().delivered.lock().unwrap(),
        vec![(3, 60); 5],
        "every held frame, where it arrived"
    );
    assert_eq!(snapshot.counters.held, 5);
}

#[tokio::test(start_paused = true)]
async fn a_failed_wake_refuses_what_was_held_and_backs_off() {
    let (mut orch, fake) = orchestrator(&host("web", 10, ""));
    fake.script_wake("t--web", Duration::ZERO, WakeOutcome::ImageMissing);
    let frame = held(&orch, WEB);
    orch.on_held(frame);
    settle(&mut orch, Duration::from_secs(1)).await;
    assert_eq!(state(&orch, "web"), StateName::Failed);
    // No packet socket in the test: the refusal cannot be sent and is counted as such.
    assert_eq!(orch.counters.dropped_unanswerable, 1);
    let failure = orch.hosts[0].last_wake.as_ref().unwrap().failure.clone();
    assert_eq!(failure.unwrap().0, "image_missing");
    // Within the backoff, the next packet is refused without another engine call.
    let frame = held(&orch, WEB);
    orch.on_held(frame);
    settle(&mut orch, Duration::from_millis(100)).await;
    assert_eq!(wakes(&fake).len(), 1);
    assert_eq!(orch.counters.dropped_unanswerable, 2);
}

/// Host "web" (idle after 10 s, no `min_warm`, and `extra` keys), woken by a held packet.
async fn woken_web(extra: &str) -> (Orch, FakeRuntime) {
    let (mut orch, fake) = orchestrator(&host(
        "web",
        10,
        &format!("idle_timeout = \"10s\"\nmin_warm = \"0s\"\n{extra}"),
    ));
    orch.on_held(held(&orch, WEB));
    settle(&mut orch, Duration::from_secs(1)).await;
    (orch, fake)
}

/// Host 0 quiet for longer than its 10 s idle timeout, and the tick that decides it.
fn quiet_past_idle(orch: &mut Orch) {
    orch.hosts[0].warm_since_ns = monotonic_ns() - 11_000_000_000;
    orch.tick();
}

#[tokio::test(start_paused = true)]
async fn an_idle_host_sleeps_in_its_tier_and_the_next_packet_wakes_it() {
    let (mut orch, fake) = woken_web("sleep = \"pause\"").await;
    assert_eq!(state(&orch, "web"), StateName::Warm);
    // Quiet since becoming warm: the tick after 10 s decides, the 2 ms look confirms.
    quiet_past_idle(&mut orch);
    assert_eq!(
        orch.datapath().mode[&WEB],
        HostMode::Drain,
        "new packets held, those on their way let through, before the engine is asked"
    );
    settle(&mut orch, Duration::from_secs(1)).await;
    assert_eq!(
        orch.datapath().mode[&WEB],
        HostMode::Hold,
        "held once committed"
    );
    assert!(fake.calls().contains(&Call::Sleep {
        container: "t--web".into(),
        to: Tier::Paused
    }));
    assert_eq!(
        orch.hosts[0].state,
        HostState::Asleep { tier: Tier::Paused }
    );
    let frame = held(&orch, WEB);
    orch.on_held(frame);
    settle(&mut orch, Duration::from_secs(1)).await;
    assert_eq!(state(&orch, "web"), StateName::Warm);
    assert_eq!(fake.status("t--web"), Some(ContainerStatus::Running));
}

#[tokio::test]
async fn the_orchestrator_looks_at_its_hosts_often_enough_for_the_shortest_idle_timeout() {
    let interval = |hosts: &str| tick_interval(&orchestrator(hosts).0.hosts);
    let two = |a: &str, b: &str| {
        format!(
            "{}{}",
            host(
                "a",
                10,
                &format!("idle_timeout = \"{a}\"\nmin_warm = \"0s\"")
            ),
            host(
                "b",
                11,
                &format!("idle_timeout = \"{b}\"\nmin_warm = \"0s\"")
            )
        )
    };
    assert_eq!(interval(&two("5m", "never")), TICK_INTERVAL);
    assert_eq!(interval(&two("never", "never")), TICK_INTERVAL);
    assert_eq!(interval(&two("5m", "400ms")), Duration::from_millis(100));
    assert_eq!(interval(&two("50ms", "1s")), MIN_TICK_INTERVAL);
}

#[tokio::test(start_paused = true)]
async fn a_paused_host_is_paged_out_once_after_swap_after() {
    let (mut orch, fake) = woken_web("sleep = \"pause\"\nswap_after = \"5s\"").await;
    quiet_past_idle(&mut orch);
    settle(&mut orch, Duration::from_secs(1)).await;
    assert_eq!(state(&orch, "web"), StateName::Asleep);
    let page_outs = |fake: &FakeRuntime| {
        (fake.calls().iter())
            .filter(|c| matches!(c, Call::PageOut(_)))
            .count()
    };
    orch.tick();
    assert_eq!(page_outs(&fake), 0, "not paused for 5 s yet");
    orch.hosts[0].asleep_since_ns = monotonic_ns() - 6_000_000_000;
    orch.tick();
    settle(&mut orch, Duration::from_secs(1)).await;
    orch.tick();
    settle(&mut orch, Duration::from_secs(1)).await;
    assert_eq!(page_outs(&fake), 1, "once per sleep");
    let snapshot = orch.subscribe().borrow().clone();
    assert_eq!((snapshot.page_outs.done, snapshot.page_outs.failed), (1, 0));
    assert_eq!(snapshot.page_outs.bytes, 99 << 20);
    assert_eq!(snapshot.hosts[0].paged_out_bytes, 99 << 20);
    // Still paused: the next packet wakes it as from any pause.
    assert_eq!(fake.status("t--web"), Some(ContainerStatus::Paused));
    orch.on_held(held(&orch, WEB));
    settle(&mut orch, Duration::from_secs(1)).await;
    assert_eq!(state(&orch, "web"), StateName::Warm);
    assert_eq!(orch.subscribe().borrow().hosts[0].paged_out_bytes, 0);
    // The sleep (6 s and a little more) is learned for its next page-out's place in the queue.
    let learned = orch.hosts[0].sleep_estimate_ns.expect("learned as it woke");
    assert!(
        (6_000_000_000..7_000_000_000).contains(&learned),
        "{learned}"
    );
}

#[tokio::test(start_paused = true)]
async fn traffic_after_the_idle_decision_calls_the_sleep_off() {
    let (mut orch, fake) = woken_web("").await;
    quiet_past_idle(&mut orch);
    // A packet slipped past the switch to hold, after the decision.
    orch.datapath_mut()
        .activity
        .get_mut(&WEB)
        .unwrap()
        .last_packet_ns = monotonic_ns() + 1;
    settle(&mut orch, Duration::from_secs(1)).await;
    assert_eq!(state(&orch, "web"), StateName::Warm);
    assert!(
        !fake.calls().iter().any(|c| matches!(c, Call::Sleep { .. })),
        "the engine was never asked"
    );
    assert!(!orch.datapath().hold[&WEB]);
}

#[tokio::test(start_paused = true)]
async fn a_packet_held_while_an_idle_host_drains_calls_the_sleep_off() {
    let (mut orch, fake) = woken_web("").await;
    let delivered = orch.datapath().delivered.lock().unwrap().len();
    quiet_past_idle(&mut orch);
    // A new request, held where it entered while the host drains.
    orch.on_held(held(&orch, WEB));
    settle(&mut orch, Duration::from_secs(1)).await;
    assert_eq!(state(&orch, "web"), StateName::Warm);
    assert!(
        !fake.calls().iter().any(|c| matches!(c, Call::Sleep { .. })),
        "the engine was never asked"
    );
    assert_eq!(orch.datapath().mode[&WEB], HostMode::Pass);
    assert_eq!(
        orch.datapath().delivered.lock().unwrap().len(),
        delivered + 1,
        "the held packet is delivered"
    );
}

/// A requested sleep drains too, and commits whatever arrives; what reached the container
/// meanwhile (it waits there, frozen) or was held wakes it right after.
#[tokio::test(start_paused = true)]
async fn a_requested_sleep_drains_then_commits_and_wakes_for_what_arrived() {
    for packet_reached_it in [false, true] {
        let (mut orch, fake) = orchestrator(&host("web", 10, ""));
        orch.on_held(held(&orch, WEB));
        settle(&mut orch, Duration::from_secs(1)).await;
        orch.hosts[0].sleep_cause = Some(SleepCause::Requested);
        orch.apply(0, Event::SleepRequested { to: Tier::Paused });
        assert_eq!(orch.datapath().mode[&WEB], HostMode::Drain);
        if packet_reached_it {
            orch.datapath_mut()
                .activity
                .entry(WEB)
                .or_default()
                .packets_in += 1;
        }
        settle(&mut orch, Duration::from_secs(1)).await;
        assert!(fake.calls().iter().any(|c| matches!(c, Call::Sleep { .. })));
        let (expected, woken) = if packet_reached_it {
            (StateName::Warm, 2)
        } else {
            (StateName::Asleep, 1)
        };
        assert_eq!(
            state(&orch, "web"),
            expected,
            "reached it: {packet_reached_it}"
        );
        assert_eq!(wakes(&fake).len(), woken, "reached it: {packet_reached_it}");
    }
}

#[tokio::test(start_paused = true)]
async fn dependencies_wake_first_and_a_failed_one_fails_the_dependent() {
    let (mut orch, fake) =
        orchestrator(&(host("web", 10, "depends_on = [\"db\"]") + &host("db", 11, "")));
    fake.script_wake("t--db", Duration::from_millis(300), WakeOutcome::Runs);
    let frame = held(&orch, WEB);
    orch.on_held(frame);
    orch.publish();
    assert_eq!(
        wakes(&fake),
        Vec::<String>::new(),
        "nothing asked before db's job runs"
    );
    assert_eq!(state(&orch, "db"), StateName::Waking);
    assert_eq!(state(&orch, "web"), StateName::Waking);
    settle(&mut orch, Duration::from_secs(1)).await;
    assert_eq!(wakes(&fake), vec!["t--db", "t--web"], "db first, then web");
    assert_eq!(state(&orch, "web"), StateName::Warm);
    assert!(!orch.datapath().hold[&DB]);

    let (mut orch, fake) =
        orchestrator(&(host("web", 10, "depends_on = [\"db\"]") + &host("db", 11, "")));
    fake.script_wake("t--db", Duration::ZERO, WakeOutcome::ImageMissing);
    let frame = held(&orch, WEB);
    orch.on_held(frame);
    settle(&mut orch, Duration::from_secs(1)).await;
    assert_eq!(
        wakes(&fake),
        vec!["t--db"],
        "web's own container is never started"
    );
    assert_eq!(state(&orch, "web"), StateName::Failed);
    let failure = orch.hosts[0]
        .last_wake
        .as_ref()
        .unwrap()
        .failure
        .clone()
        .unwrap();
    assert_eq!(failure.0, "dependency_failed");
    assert_eq!(
        orch.counters.dropped_unanswerable, 1,
        "web's packet refused"
    );
}

#[tokio::test(start_paused = true)]
async fn operator_commands_and_engine_exits() {
    let (mut orch, fake) = orchestrator(&host("web", 10, ""));
    let (reply, answer) = oneshot::channel();
    orch.on_input(Input::Wake {
        host: "web".into(),
        reply,
    });
    assert_eq!(answer.await.unwrap(), Ok(()));
    settle(&mut orch, Duration::from_secs(1)).await;
    assert_eq!(state(&orch, "web"), StateName::Warm);
    let last = orch.hosts[0].last_wake.clone().unwrap();
    assert!(!last.timings.from_packet(), "an operator's wake");

    let (reply, answer) = oneshot::channel();
    orch.on_input(Input::Sleep {
        host: "nope".into(),
        to: None,
        reply,
    });
    assert_eq!(answer.await.unwrap(), Err("no host named \"nope\"".into()));

    fake.exit("t--web", 1);
    orch.on_input(Input::Engine(RuntimeEvent::Exited { host: "web".into() }));
    settle(&mut orch, Duration::from_secs(1)).await;
    assert_eq!(state(&orch, "web"), StateName::Asleep);
    assert!(orch.datapath().hold[&WEB], "held again");
}

#[tokio::test(start_paused = true)]
async fn restricted_hosts_publish_their_allowed_sources() {
    let hosts = host("web", 10, "allow_from = [\"10.8.0.0/16\"]") + &host("db", 11, "");
    let (orch, _) = orchestrator(&hosts);
    let net = |s: &str| s.parse::<Ipv4Net>().unwrap();
    assert_eq!(
        orch.datapath().allowed,
        vec![(0, net("10.8.0.0/16")), (0, net("10.9.0.1/32"))],
        "web's list and the gateway; db is not restricted"
    );
    assert_ne!(orch.hosts[0].flags & imag_common::HOST_FLAG_RESTRICTED, 0);
    assert_eq!(orch.hosts[1].flags & imag_common::HOST_FLAG_RESTRICTED, 0);
}

/// A network with `[limits]` `limits` and `hosts`.
pub(super) fn limited(limits: &str, hosts: &str) -> (Orch, FakeRuntime) {
    orchestrator(&format!("{hosts}\n[limits]\n{limits}\n"))
}

pub(super) fn position(fake: &FakeRuntime, call: &Call) -> usize {
    fake.calls()
        .iter()
        .position(|c| c == call)
        .unwrap_or_else(|| panic!("{call:?} never happened: {:?}", fake.calls()))
}

#[tokio::test(start_paused = true)]
async fn a_healthy_dependency_is_waited_for_until_the_engine_says_healthy() {
    let db =
        "ready = \"running\"\nhealthcheck = { test = [\"CMD\", \"/check\"], interval = \"1s\" }";
    let (mut orch, fake) =
        orchestrator(&(host("web", 10, "depends_on = [\"db:healthy\"]") + &host("db", 11, db)));
    let frame = held(&orch, WEB);
    orch.on_held(frame);
    settle(&mut orch, Duration::from_secs(1)).await;
    assert_eq!(state(&orch, "db"), StateName::Warm);
    assert_eq!(
        wakes(&fake),
        vec!["t--db"],
        "web waits while db is only starting"
    );
    assert_eq!(state(&orch, "web"), StateName::Waking);
    fake.set_health("t--db", Some(Health::Healthy));
    settle(&mut orch, Duration::from_secs(1)).await;
    assert_eq!(
        wakes(&fake),
        vec!["t--db", "t--web"],
        "web starts once db is healthy"
    );
    assert_eq!(state(&orch, "web"), StateName::Warm);
}

#[tokio::test(start_paused = true)]
async fn a_dependency_ready_by_its_healthcheck_is_healthy_when_warm() {
    let db = "ready = \"healthy\"\nhealthcheck = { test = [\"CMD\", \"/check\"] }";
    let (mut orch, fake) =
        orchestrator(&(host("web", 10, "depends_on = [\"db:healthy\"]") + &host("db", 11, db)));
    let frame = held(&orch, WEB);
    orch.on_held(frame);
    settle(&mut orch, Duration::from_millis(100)).await;
    fake.set_health("t--db", Some(Health::Healthy));
    settle(&mut orch, Duration::from_secs(1)).await;
    assert_eq!(wakes(&fake), vec!["t--db", "t--web"]);
    assert_eq!(state(&orch, "web"), StateName::Warm);
}

#[tokio::test(start_paused = true)]
async fn a_healthy_dependency_without_a_healthcheck_fails_the_dependent() {
    let (mut orch, fake) =
        orchestrator(&(host("web", 10, "depends_on = [\"db:healthy\"]") + &host("db", 11, "")));
    let frame = held(&orch, WEB);
    orch.on_held(frame);
    settle(&mut orch, Duration::from_secs(1)).await;
    assert_eq!(wakes(&fake), vec!["t--db"]);
    assert_eq!(state(&orch, "web"), StateName::Failed);
    let failure = orch.hosts[0]
        .last_wake
        .as_ref()
        .unwrap()
        .failure
        .clone()
        .unwrap();
    assert_eq!(failure.0, "dependency_failed");
}

#[tokio::test(start_paused = true)]
async fn a_packet_to_a_port_the_host_does_not_declare_wakes_nothing() {
    let (mut orch, fake) = orchestrator(&host("web", 10, "ports = [8080]"));
    fake.script_wake("t--web", Duration::from_millis(200), WakeOutcome::Runs);
    let to_port = |orch: &Orch, port| {
        let mut frame = held(orch, WEB);
        frame.frame = crate::packets::tests::tcp_syn([10, 78, 0, 2], WEB.octets(), 40000, port);
        frame
    };
    let ssh = to_port(&orch, 22);
    orch.on_held(ssh);
    settle(&mut orch, Duration::from_secs(1)).await;
    assert!(wakes(&fake).is_empty(), "port 22 is not declared");
    assert_eq!(state(&orch, "web"), StateName::Asleep);
    assert_eq!(
        orch.counters.dropped_unanswerable, 1,
        "refused (no wire in tests: counted unanswerable)"
    );
    let web = to_port(&orch, 8080);
    orch.on_held(web);
    settle(&mut orch, Duration::from_secs(1)).await;
    assert_eq!(
        wakes(&fake),
        vec!["t--web"],
        "a declared port wakes the host"
    );
}
