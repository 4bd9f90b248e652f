//! The orchestrator in a cluster (`cluster.rs`) on the fake engine and a fake store: lost claims
//! forward held packets, route signals move hosts away and back, sleeps release, fencing pauses.

use std::sync::{Arc, Mutex};

use cluster::Claims;

use super::*;
use crate::cluster::{Claim, Signal, Target};

/// The cluster's store in memory: hosts another node has taken, whether it answers, and every
/// claim and release in order.
#[derive(Default)]
struct FakeClaims {
    taken: Mutex<HashMap<String, String>>,
    down: Mutex<bool>,
    log: Mutex<Vec<String>>,
}

impl Claims for FakeClaims {
    fn claim<'a>(
        &'a self,
        host: &'a str,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Claim> + Send + 'a>> {
        Box::pin(async move {
            self.log.lock().unwrap().push(format!("claim {host}"));
            if *self.down.lock().unwrap() {
                return Claim::Unavailable("the store does not answer".into());
            }
            match self.taken.lock().unwrap().get(host) {
                Some(node) => Claim::Lost {
                    node: node.clone(),
                    address: Ipv4Addr::new(10, 99, 0, 12),
                },
                None => Claim::Won,
            }
        })
    }
    fn release<'a>(
        &'a self,
        host: &'a str,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + 'a>> {
        Box::pin(async move { self.log.lock().unwrap().push(format!("release {host}")) })
    }
    fn view(&self) -> crate::report::ClusterView {
        crate::report::ClusterView {
            node: "node-a".into(),
            healthy: !*self.down.lock().unwrap(),
            ..Default::default()
        }
    }
}

fn clustered(hosts: &str) -> (Orch, FakeRuntime, Arc<FakeClaims>) {
    let (mut orch, fake) = orchestrator(hosts);
    let claims = Arc::new(FakeClaims::default());
    orch.join_cluster(claims.clone());
    (orch, fake, claims)
}

fn node_b() -> Target {
    Target::Node {
        name: "node-b".into(),
        address: Ipv4Addr::new(10, 99, 0, 12),
    }
}

#[tokio::test(start_paused = true)]
async fn a_lost_claim_sends_the_held_packets_to_the_node_that_won() {
    let (mut orch, fake, claims) = clustered(&host("web", 10, ""));
    claims
        .taken
        .lock()
        .unwrap()
        .insert("web".into(), "node-b".into());
    for _ in 0..3 {
        let frame = held(&orch, WEB);
        orch.on_held(frame);
    }
    settle(&mut orch, Duration::from_secs(1)).await;
    assert!(wakes(&fake).is_empty(), "the engine is never asked");
    assert_eq!(state(&orch, "web"), StateName::Elsewhere);
    assert_eq!(orch.datapath().mode[&WEB], HostMode::Forward);
    assert_eq!(
        orch.counters.delivered, 3,
        "re-delivered, for the kernel to route"
    );
    assert_eq!(
        orch.subscribe().borrow().hosts[0].node.as_deref(),
        Some("node-b")
    );
    assert_eq!(*claims.log.lock().unwrap(), vec!["claim web"]);
    // An operator's wake is refused with the node that serves it.
    let (reply, answer) = oneshot::channel();
    orch.on_input(Input::Wake {
        host: "web".into(),
        reply,
    });
    let err = answer.await.unwrap().unwrap_err();
    assert!(err.contains("node-b"), "{err}");
}

#[tokio::test(start_paused = true)]
async fn route_signals_move_a_host_away_and_back() {
    let (mut orch, fake, _claims) = clustered(&host("web", 10, ""));
    orch.on_input(Input::Cluster(Signal::Target {
        host: "web".into(),
        target: node_b(),
    }));
    orch.publish();
    assert_eq!(state(&orch, "web"), StateName::Elsewhere);
    assert_eq!(orch.datapath().mode[&WEB], HostMode::Forward);
    // A packet held just before the switch goes on its way, waking nothing.
    let frame = held(&orch, WEB);
    orch.on_held(frame);
    settle(&mut orch, Duration::from_secs(1)).await;
    assert_eq!(orch.counters.delivered, 1);
    assert!(wakes(&fake).is_empty());
    orch.on_input(Input::Cluster(Signal::Target {
        host: "web".into(),
        target: Target::Here,
    }));
    orch.publish();
    assert_eq!(state(&orch, "web"), StateName::Asleep);
    assert_eq!(orch.datapath().mode[&WEB], HostMode::Hold);
    assert_eq!(orch.subscribe().borrow().hosts[0].node, None);
    // Here again: the next packet wakes it here.
    fake.script_wake("t--web", Duration::from_millis(50), WakeOutcome::Runs);
    let frame = held(&orch, WEB);
    orch.on_held(frame);
    settle(&mut orch, Duration::from_secs(1)).await;
    assert_eq!(state(&orch, "web"), StateName::Warm);
    // A stale signal for a host warm here (this node holds its key) changes nothing.
    orch.on_input(Input::Cluster(Signal::Target {
        host: "web".into(),
        target: node_b(),
    }));
    orch.publish();
    assert_eq!(state(&orch, "web"), StateName::Warm);
}

#[tokio::test(start_paused = true)]
async fn a_host_is_released_only_once_it_stopped_running_here() {
    let (mut orch, fake, claims) = clustered(&host("web", 10, ""));
    fake.script_wake("t--web", Duration::from_millis(50), WakeOutcome::Runs);
    let frame = held(&orch, WEB);
    orch.on_held(frame);
    settle(&mut orch, Duration::from_secs(1)).await;
    assert_eq!(state(&orch, "web"), StateName::Warm);
    assert_eq!(*claims.log.lock().unwrap(), vec!["claim web"]);
    let (reply, answer) = oneshot::channel();
    orch.on_input(Input::Sleep {
        host: "web".into(),
        to: Some(Tier::Stopped),
        reply,
    });
    answer.await.unwrap().unwrap();
    assert_eq!(
        *claims.log.lock().unwrap(),
        vec!["claim web"],
        "not while its container still runs"
    );
    settle(&mut orch, Duration::from_secs(1)).await;
    assert_eq!(state(&orch, "web"), StateName::Asleep);
    tokio::task::yield_now().await;
    assert_eq!(
        *claims.log.lock().unwrap(),
        vec!["claim web", "release web"]
    );
}

#[tokio::test(start_paused = true)]
async fn a_fenced_node_pauses_what_it_runs_and_wakes_nothing() {
    let (mut orch, fake, claims) =
        clustered(&format!("{}{}", host("web", 10, ""), host("db", 11, "")));
    fake.script_wake("t--web", Duration::from_millis(50), WakeOutcome::Runs);
    let frame = held(&orch, WEB);
    orch.on_held(frame);
    settle(&mut orch, Duration::from_secs(1)).await;
    assert_eq!(state(&orch, "web"), StateName::Warm);
    *claims.down.lock().unwrap() = true;
    orch.on_input(Input::Cluster(Signal::Fence));
    settle(&mut orch, Duration::from_secs(1)).await;
    assert_eq!(state(&orch, "web"), StateName::Asleep);
    assert!(fake.calls().contains(&Call::Sleep {
        container: "t--web".into(),
        to: Tier::Paused
    }));
    // A cold host's packet: the claim cannot be made, the wake fails and says why.
    let frame = held(&orch, DB);
    orch.on_held(frame);
    settle(&mut orch, Duration::from_secs(1)).await;
    assert_eq!(state(&orch, "db"), StateName::Failed);
    orch.tick();
    let cluster = orch
        .subscribe()
        .borrow()
        .cluster
        .clone()
        .expect("the cluster's view");
    assert!(!cluster.healthy, "status says the node is fenced");
    assert!(!wakes(&fake).contains(&"t--db".to_string()));
    let snapshot = orch.subscribe().borrow().clone();
    let failure = snapshot.hosts[1]
        .last_wake
        .clone()
        .unwrap()
        .failure
        .unwrap();
    assert_eq!(failure.0, "store_unavailable");
}
