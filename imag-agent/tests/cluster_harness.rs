//! The multi-node test topology itself (`imag_testkit::cluster`), before any agent runs in it:
//! BGP carries the routes a node puts in its imag table to the router, the best one by metric
//! wins, a dead node's routes go, a container on a node answers the client through the router,
//! etcd answers from every node (and not from one cut off from it), and dropping the cluster
//! leaves nothing behind. And the agent as the scale-out tests will run it: inside a node, against
//! that node's engine, woken by a client behind the router.

use std::{
    net::{Ipv4Addr, SocketAddr},
    time::{Duration, Instant},
};

use imag_testkit::{
    IMAGE, agent_binary, clients,
    cluster::{Cluster, ClusterSpec, FABRIC_IF, leftovers},
    require_environment, wait_until,
};

/// Route convergence: BIRD sees a kernel change at once; BGP hold time is 3 s.
const CONVERGE: Duration = Duration::from_secs(30);

/// `ip route add|del ADDR/32 dev DEV table 4200 metric METRIC proto 201`, as the agent does
/// through rtnetlink.
fn imag_route(cluster: &Cluster, node: usize, op: &str, addr: Ipv4Addr, dev: &str, metric: u32) {
    let (table, metric) = (cluster.table().to_string(), metric.to_string());
    cluster
        .node(node)
        .ip(&[
            "route",
            op,
            &format!("{addr}/32"),
            "dev",
            dev,
            "table",
            &table,
            "metric",
            &metric,
            "proto",
            "201",
        ])
        .unwrap_or_else(|e| panic!("{e}"));
}

fn wait_next_hop(cluster: &Cluster, addr: Ipv4Addr, want: Option<Ipv4Addr>, what: &str) {
    wait_until(what, CONVERGE, || {
        cluster.router_next_hop(addr).expect("ip route") == want
    });
}

fn etcd_healthy(cluster: &Cluster, node: usize) -> bool {
    cluster
        .node(node)
        .run(
            "etcdctl",
            &[
                "--endpoints",
                &cluster.etcd_endpoint(),
                "--command-timeout",
                "2s",
                "endpoint",
                "health",
            ],
        )
        .is_ok()
}

#[test]
fn three_nodes_route_by_metric_fail_over_and_serve_the_client() {
    require_environment();
    let began = Instant::now();
    let mut cluster = Cluster::start(&ClusterSpec::default()).unwrap_or_else(|e| panic!("{e}"));
    eprintln!("cluster of 3 nodes started in {:?}", cluster.started_in());
    let tag = cluster.tag().to_string();

    for i in 1..=3 {
        assert!(cluster.bgp_established(i), "node {i}'s BGP session is up");
        assert!(
            etcd_healthy(&cluster, i),
            "etcd answers `endpoint health` from node {i}"
        );
    }

    routes_follow_the_metric_and_the_living(&mut cluster);
    a_container_answers_the_client_through_the_router(&cluster);
    one_node_cut_off_from_etcd(&cluster);

    let dropped = Instant::now();
    drop(cluster);
    eprintln!(
        "cluster torn down in {:?} (whole test {:?})",
        dropped.elapsed(),
        began.elapsed()
    );
    let left = leftovers(&tag);
    assert!(left.is_empty(), "the cluster's teardown left: {left:#?}");
}

/// The owner (metric 200) beats a fallback (300); without it, the fallback carries the host; a
/// dead node's routes go.
fn routes_follow_the_metric_and_the_living(cluster: &mut Cluster) {
    let host = Ipv4Addr::new(10, 77, 0, 10);
    let (n1, n2) = (cluster.node(1).fabric_addr(), cluster.node(2).fabric_addr());
    imag_route(cluster, 1, "add", host, FABRIC_IF, 200);
    imag_route(cluster, 2, "add", host, FABRIC_IF, 300);
    wait_next_hop(
        cluster,
        host,
        Some(n1),
        "the router routes the host via node 1 (metric 200)",
    );
    imag_route(cluster, 1, "del", host, FABRIC_IF, 200);
    wait_next_hop(
        cluster,
        host,
        Some(n2),
        "the router routes the host via node 2 once node 1 withdrew it",
    );
    cluster.kill_node(2).unwrap_or_else(|e| panic!("{e}"));
    wait_next_hop(
        cluster,
        host,
        None,
        "node 2's route is gone once node 2 is dead",
    );
    assert!(!cluster.bgp_established(2));
}

/// A container on node 3's engine, at an address of the imaginary subnet, announced by node 3.
fn a_container_answers_the_client_through_the_router(cluster: &Cluster) {
    let n3 = cluster.node(3).fabric_addr();
    let node3 = cluster.node(3);
    node3
        .docker(&[
            "network",
            "create",
            "--subnet",
            "10.77.0.0/24",
            "-o",
            "com.docker.network.bridge.name=imag0",
            "imag",
        ])
        .unwrap_or_else(|e| panic!("{e}"));
    let served = Ipv4Addr::new(10, 77, 0, 20);
    node3
        .docker(&[
            "run",
            "-d",
            "--name",
            "web",
            "--network",
            "imag",
            "--ip",
            "10.77.0.20",
            IMAGE,
            "/hello",
            "--port",
            "8080",
        ])
        .unwrap_or_else(|e| panic!("{e}"));
    imag_route(cluster, 3, "add", served, "imag0", 100);
    wait_next_hop(
        cluster,
        served,
        Some(n3),
        "the router routes the container's address via node 3",
    );
    let answer = cluster
        .client()
        .run(|| {
            let deadline = Instant::now() + CONVERGE;
            loop {
                match clients::http_get(SocketAddr::from((served, 8080)), Duration::from_secs(3)) {
                    Ok((body, _)) => return Ok(body),
                    Err(e) if Instant::now() > deadline => return Err(e),
                    Err(_) => std::thread::sleep(Duration::from_millis(200)),
                }
            }
        })
        .expect("entering the client namespace");
    let body = answer.expect("the container on node 3 answers the client through the router");
    assert!(
        body.starts_with("hello"),
        "the example service answered: {body:?}"
    );
    let everywhere = cluster
        .containers_everywhere("web")
        .expect("listing containers");
    assert_eq!(
        everywhere,
        vec![(3, "web".to_string(), "running".to_string())],
        "one container, on node 3 (node 2 is dead and not listed)"
    );
}

/// Cut off from etcd, and only from etcd.
fn one_node_cut_off_from_etcd(cluster: &Cluster) {
    cluster
        .partition_from_store(3)
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(!etcd_healthy(cluster, 3), "node 3 cannot reach etcd");
    assert!(etcd_healthy(cluster, 1), "node 1 still reaches etcd");
    assert!(
        cluster.bgp_established(3),
        "node 3's BGP session is not affected"
    );
    cluster.heal_store(3).unwrap_or_else(|e| panic!("{e}"));
    assert!(etcd_healthy(cluster, 3), "node 3 reaches etcd again");
}

/// The agent runs inside a node (`Node::launch`: its namespace, its engine), holds the client's
/// first packet arriving from the router on the node's fabric link, and wakes the host in that
/// node's engine. The agent does not install its routes yet: the test announces the host.
#[test]
fn an_agent_in_a_node_wakes_a_host_for_the_client_behind_the_router() {
    require_environment();
    let mut cluster = Cluster::start(&ClusterSpec {
        nodes: 2,
        ..ClusterSpec::default()
    })
    .unwrap_or_else(|e| panic!("{e}"));
    let tag = cluster.tag().to_string();
    // Each node's agent needs a network name of its own (pins, state and control socket are
    // named after it and shared by all namespaces).
    let network = format!("{tag}n1");
    let node = cluster.node(1);
    let config = node.dir().join("imag.toml");
    std::fs::write(
        &config,
        format!(
            "[network]\nsubnet = \"10.77.0.0/24\"\nname = \"{network}\"\nbridge = \"imag0\"\n\n\
             [[host]]\nname = \"web\"\naddress = \"10.77.0.10\"\nimage = \"{IMAGE}\"\n\
             command = [\"/hello\", \"--port\", \"8080\"]\nports = [8080]\n"
        ),
    )
    .expect("writing the agent's config");
    let mut launch = node.launch(agent_binary!(), &config, &[FABRIC_IF]);
    launch.echo = true;
    launch.log_filter = "imag_agent=debug".into();
    cluster
        .node_mut(1)
        .start_agent(launch)
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        cluster
            .containers_everywhere("web")
            .expect("listing containers")
            .is_empty(),
        "the host starts cold"
    );

    let host = Ipv4Addr::new(10, 77, 0, 10);
    imag_route(&cluster, 1, "add", host, "imag0", 200);
    let n1 = cluster.node(1).fabric_addr();
    wait_next_hop(
        &cluster,
        host,
        Some(n1),
        "the router routes the host via node 1",
    );
    let answer = cluster
        .client()
        .run(|| clients::http_get(SocketAddr::from((host, 8080)), Duration::from_secs(30)))
        .expect("entering the client namespace");
    let (body, _) = answer.expect("the cold host on node 1 answers the client's first connection");
    assert!(
        body.starts_with("hello"),
        "the example service answered: {body:?}"
    );
    let everywhere = cluster
        .containers_everywhere("web")
        .expect("listing containers");
    assert_eq!(
        everywhere
            .iter()
            .map(|(node, _, state)| (*node, state.as_str()))
            .collect::<Vec<_>>(),
        vec![(1, "running")],
        "one container for the host, on node 1: {everywhere:?}"
    );

    drop(cluster);
    let left = leftovers(&tag);
    assert!(left.is_empty(), "the cluster's teardown left: {left:#?}");
}
