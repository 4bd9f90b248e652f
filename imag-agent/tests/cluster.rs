//! Scale-out end to end (docs/SCALE-OUT.md): three nodes, each a network namespace with its own
//! Docker engine, BIRD and imag agent, one router speaking BGP to them, a client behind it and a
//! real etcd (`imag_testkit::cluster`). Every node runs the same hosts.
//!
//! - a cold host's first packet reaches the node placement chose (the router prefers its
//!   announcement) and its one container starts there; a host calls another on another node by
//!   name;
//! - a node killed mid-traffic: its hosts wake on a surviving node at their next packet, never two
//!   containers for one host (checked across every engine throughout);
//! - a node cut off from the store stops serving (pauses its hosts) and another node takes them
//!   once its lease is gone; when it comes back it takes nothing over.

use std::{
    net::Ipv4Addr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use imag_testkit::{
    agent_binary, clients,
    cluster::{CONVERGE, Cluster, ClusterHost, ClusterSpec},
    require_environment, wait_until,
};

fn host(name: &str, last: u8, extra: &str) -> ClusterHost {
    ClusterHost::new(name, last, extra)
}

/// Starts the cluster and one agent per node (the same hosts on each), and waits until every
/// agent sees every node.
fn start(nodes: usize, hosts: &[ClusterHost]) -> Cluster {
    let mut cluster = Cluster::start(&ClusterSpec {
        nodes,
        ..ClusterSpec::default()
    })
    .unwrap_or_else(|e| panic!("{e}"));
    cluster
        .start_agents(agent_binary!(), hosts, "imag_agent=debug")
        .unwrap_or_else(|e| panic!("{e}"));
    cluster
}

fn status(cluster: &Cluster, node: usize) -> serde_json::Value {
    cluster
        .agent_status(node)
        .unwrap_or_else(|e| panic!("node {node}: {e}"))
}

/// The host's state on `node` (`asleep`, `elsewhere`, `warm`, …).
fn state_on(cluster: &Cluster, node: usize, host: &str) -> String {
    cluster.host_state(node, host)
}

/// The one node that would serve `host` (every other node routes it there).
fn placed(cluster: &Cluster, host: &str) -> usize {
    cluster.placed(host).unwrap_or_else(|e| panic!("{e}"))
}

/// Where the host's containers are, across every engine: (node, state).
fn containers(cluster: &Cluster, host: &str) -> Vec<(usize, String)> {
    cluster.host_containers(host).expect("listing containers")
}

fn get(cluster: &Cluster, addr: Ipv4Addr, timeout: Duration) -> Result<String, String> {
    cluster.get(addr, timeout)
}

/// The client's SYN retransmissions so far.
fn syn_retransmissions(cluster: &Cluster) -> u64 {
    cluster
        .client()
        .run(|| clients::net_counter("TcpExt", "TCPSynRetrans"))
        .expect("entering the client namespace")
        .expect("reading the client's TCP counters")
}

#[test]
fn hosts_wake_on_their_placed_node_and_call_each_other_across_nodes() {
    require_environment();
    let hosts = [
        host("alpha", 11, ""),
        host("bravo", 12, ""),
        host("charlie", 13, ""),
        host("back", 20, "nodes = [\"n2\"]"),
        host(
            "front",
            21,
            "nodes = [\"n1\"]\ncommand = [\"/hello\", \"--port\", \"8080\", \"--backend\", \"back:8080\"]",
        ),
        host(
            "side",
            22,
            "nodes = [\"n3\"]\ncommand = [\"/hello\", \"--port\", \"8080\", \"--backend\", \"10.77.0.20:8080\"]",
        ),
    ];
    let cluster = start(3, &hosts);
    for h in &hosts[..3] {
        let owner = placed(&cluster, &h.name);
        let node = cluster.node(owner).fabric_addr();
        wait_until(
            "the router prefers the owner's announcement",
            CONVERGE,
            || cluster.router_next_hop(h.address).expect("ip route") == Some(node),
        );
        let before = syn_retransmissions(&cluster);
        let body = get(&cluster, h.address, Duration::from_secs(30))
            .unwrap_or_else(|e| panic!("{} does not answer: {e}", h.name));
        assert!(body.starts_with("hello"), "{body:?}");
        assert_eq!(
            syn_retransmissions(&cluster),
            before,
            "the client's own first SYN was answered, through the router, by the woken host"
        );
        assert_eq!(
            containers(&cluster, &h.name),
            vec![(owner, "running".to_string())],
            "one container for {}, on the node placement chose",
            h.name
        );
        assert_eq!(state_on(&cluster, owner, &h.name), "warm");
    }
    // `nodes` pins front to n1 and back to n2: front calls back by name, across nodes, and
    // back wakes on n2 from front's packet, routed there by n1.
    assert_eq!(placed(&cluster, "front"), 1);
    assert_eq!(placed(&cluster, "back"), 2);
    let body = get(&cluster, hosts[4].address, Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("front does not answer: {e}"));
    assert!(
        body.contains("hello"),
        "front wraps back's answer: {body:?}"
    );
    assert_eq!(
        containers(&cluster, "front"),
        vec![(1, "running".to_string())]
    );
    assert_eq!(
        containers(&cluster, "back"),
        vec![(2, "running".to_string())]
    );
    // Warm: the answer comes straight back.
    let again = get(&cluster, hosts[4].address, Duration::from_secs(5)).expect("warm front");
    assert_eq!(again, body);
    // By address, from a third node, to back (warm on n2).
    let side = get(&cluster, hosts[5].address, Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("side does not answer: {e}"));
    assert!(side.contains("hello"), "side wraps back's answer: {side:?}");
    assert_eq!(
        containers(&cluster, "side"),
        vec![(3, "running".to_string())]
    );
    assert_eq!(
        containers(&cluster, "back"),
        vec![(2, "running".to_string())]
    );
    // Every node answers every name.
    let status = status(&cluster, 3);
    assert_eq!(status["cluster"]["node"], "n3");
}

/// Samples every engine until finished (or dropped, as when the test fails): the most
/// containers running at once for any of `hosts`.
struct Watcher {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<usize>>,
}

impl Watcher {
    fn start(cluster: &Arc<Mutex<Cluster>>, hosts: &'static [&'static str]) -> Watcher {
        let stop = Arc::new(AtomicBool::new(false));
        let (cluster, stopped) = (cluster.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut most = 0;
            while !stopped.load(Ordering::Relaxed) {
                for host in hosts {
                    let running = containers(&cluster.lock().unwrap(), host)
                        .iter()
                        .filter(|(_, state)| state == "running")
                        .count();
                    most = most.max(running);
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            most
        });
        Watcher {
            stop,
            thread: Some(thread),
        }
    }

    fn finish(mut self) -> usize {
        self.stop.store(true, Ordering::Relaxed);
        let thread = self.thread.take().expect("finished once");
        thread.join().expect("the watcher")
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        // Before the cluster: its last handle then drops on the test's thread (teardown, logs).
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[test]
fn a_killed_node_s_hosts_wake_elsewhere_and_a_cut_off_node_stops_serving() {
    require_environment();
    let hosts = [host("victim", 31, ""), host("island", 32, "")];
    let cluster = Arc::new(Mutex::new(start(3, &hosts)));
    let c = || cluster.lock().unwrap();
    // Never two running containers for one host, across every engine, for the whole test.
    let watcher = Watcher::start(&cluster, &["victim", "island"]);

    let victim = Ipv4Addr::new(10, 77, 0, 31);
    let owner = placed(&c(), "victim");
    get(&c(), victim, Duration::from_secs(30)).expect("the victim wakes on its node");
    assert_eq!(
        containers(&c(), "victim"),
        vec![(owner, "running".to_string())]
    );

    // Killed: agent, engine, link. The next requests wake it on a surviving node.
    c().kill_node(owner).unwrap_or_else(|e| panic!("{e}"));
    wait_until("the victim answers from a surviving node", CONVERGE, || {
        get(&c(), victim, Duration::from_secs(3)).is_ok()
    });
    let now = containers(&c(), "victim");
    assert_eq!(now.len(), 1, "one container for the victim: {now:?}");
    assert_ne!(now[0].0, owner, "on a surviving node");
    assert_eq!(now[0].1, "running");

    // The island, on a surviving node, cut off from the store (not from the network).
    let survivors: Vec<usize> = (1..=3).filter(|&i| i != owner).collect();
    let island = Ipv4Addr::new(10, 77, 0, 32);
    let mut placed_on = 0;
    wait_until("one surviving node keeps the island", CONVERGE, || {
        let here: Vec<usize> = (survivors.iter().copied())
            .filter(|&i| state_on(&c(), i, "island") != "elsewhere")
            .collect();
        placed_on = here.first().copied().unwrap_or(0);
        here.len() == 1
    });
    get(&c(), island, Duration::from_secs(30)).expect("the island wakes");
    assert_eq!(
        containers(&c(), "island"),
        vec![(placed_on, "running".to_string())]
    );
    let other = (survivors.iter().copied())
        .find(|&i| i != placed_on)
        .expect("two survivors");
    c().partition_from_store(placed_on)
        .unwrap_or_else(|e| panic!("{e}"));
    wait_until("the cut-off node pauses the island", CONVERGE, || {
        containers(&c(), "island").contains(&(placed_on, "paused".to_string()))
    });
    wait_until("status says the cut-off node is fenced", CONVERGE, || {
        status(&c(), placed_on)["cluster"]["healthy"] == false
    });
    wait_until("the island answers from the other node", CONVERGE, || {
        get(&c(), island, Duration::from_secs(3)).is_ok()
    });
    assert!(
        containers(&c(), "island").contains(&(other, "running".to_string())),
        "{:?}",
        containers(&c(), "island")
    );
    assert_eq!(
        watcher.finish(),
        1,
        "never two running containers for one host, through the kill and the partition"
    );
    // The cut-off node comes back: it takes nothing over (the island stays where it runs), and
    // its paused copy goes (stopping a paused container unpauses it for a moment, so the copy
    // is waited for before counting running containers again).
    c().heal_store(placed_on).unwrap_or_else(|e| panic!("{e}"));
    wait_until(
        "the node that was cut off is healthy again",
        CONVERGE,
        || status(&c(), placed_on)["cluster"]["healthy"] == true,
    );
    wait_until("the returned node stops its paused copy", CONVERGE, || {
        !containers(&c(), "island")
            .iter()
            .any(|(node, state)| *node == placed_on && (state == "paused" || state == "running"))
    });
    for _ in 0..5 {
        get(&c(), island, Duration::from_secs(5)).expect("the island still answers");
    }
    let running: Vec<usize> = (containers(&c(), "island").into_iter())
        .filter(|(_, state)| state == "running")
        .map(|(node, _)| node)
        .collect();
    assert_eq!(
        running,
        vec![other],
        "no flapping back to the node that returned"
    );
    assert_eq!(state_on(&c(), placed_on, "island"), "elsewhere");
}
