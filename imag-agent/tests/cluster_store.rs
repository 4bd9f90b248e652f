//! The cluster adapter against a real etcd and real kernel routes: two nodes (`cluster::start`
//! in two network namespaces, each with an empty bridge standing in for Docker's) share one
//! network through an etcd started for the test. Root, `etcd` (Debian: etcd-server), iproute2
//! and iptables. Run under `flock /tmp/imag-e2e.lock`.
//!
//! Topology (lease index i): the root namespace is the router and runs etcd; node A's `eth0`
//! is 10.201.i.2/26 (root side .1), node B's is 10.201.i.66/26 (root side .65); each reaches
//! the other through the root (so the next hop to the other node is a gateway). The imaginary
//! subnet is 10.200.i.0/24 on both.

use std::{
    net::{Ipv4Addr, TcpListener},
    os::unix::process::CommandExt as _,
    process::{Child, Command, Stdio},
    time::Duration,
};

use imag_agent::{
    cluster::{self, Claim, ClusterHandle, ClusterTask, Signal, Target},
    config::Config,
};
use imag_testkit::{lease::Lease, netns::ip};
use tokio::{runtime::Runtime, sync::mpsc::Receiver};

const LEASE_SECONDS: u64 = 4;
/// Generous bound for waits (never a timing assertion: only how long a broken test hangs).
const PATIENCE: Duration = Duration::from_mins(1);

/// etcd on the root side of both links; killed (and its data removed) on drop.
struct Etcd {
    child: Child,
    dir: std::path::PathBuf,
    port: u16,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Etcd {
    fn start(lease: &Lease, listen: &[Ipv4Addr]) -> Etcd {
        let (port, peer) = (free_port(), free_port());
        let dir = lease.temp_file("etcd");
        let _ = std::fs::remove_dir_all(&dir);
        let clients: Vec<String> = listen
            .iter()
            .map(|a| format!("http://{a}:{port}"))
            .collect();
        let peer_url = format!("http://127.0.0.1:{peer}");
        let mut command = Command::new("etcd");
        command
            .args(["--name", "test", "--data-dir"])
            .arg(&dir)
            .args(["--listen-client-urls", &clients.join(",")])
            .args(["--advertise-client-urls", &clients[0]])
            .args(["--listen-peer-urls", &peer_url])
            .args(["--initial-advertise-peer-urls", &peer_url])
            .args(["--initial-cluster", &format!("test={peer_url}")])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // None of the test's descriptors (the e2e lock's above all): close-on-exec from 3 up.
        // SAFETY: close_range is an async-signal-safe system call.
        unsafe {
            command.pre_exec(imag_testkit::close_inherited_fds);
        }
        let child = command
            .spawn()
            .expect("etcd starts (apt-get install etcd-server)");
        Etcd { child, dir, port }
    }

    fn signal(&self, signal: libc::c_int) {
        let pid = libc::pid_t::try_from(self.child.id()).unwrap();
        // SAFETY: a signal to our own child.
        assert_eq!(unsafe { libc::kill(pid, signal) }, 0);
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.signal(libc::SIGCONT);
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The two namespaces and their links; deleted on drop.
struct Topology {
    names: [String; 2],
}

impl Drop for Topology {
    fn drop(&mut self) {
        for name in &self.names {
            let _ = ip(&["netns", "del", name]);
        }
    }
}

fn topology(lease: &Lease) -> Topology {
    let i = lease.index();
    let tag = lease.tag();
    let topology = Topology {
        names: [format!("{tag}a"), format!("{tag}b")],
    };
    for (n, name) in topology.names.iter().enumerate() {
        let base = 64 * u8::try_from(n).unwrap();
        let (root, node) = (
            format!("10.201.{i}.{}/26", base + 1),
            format!("10.201.{i}.{}/26", base + 2),
        );
        let _ = ip(&["netns", "del", name]);
        let _ = ip(&["link", "del", name]);
        ip(&["netns", "add", name]).unwrap();
        ip(&[
            "link", "add", name, "type", "veth", "peer", "name", "eth0", "netns", name,
        ])
        .unwrap();
        ip(&["addr", "add", &root, "dev", name]).unwrap();
        ip(&["link", "set", name, "up"]).unwrap();
        ip(&["-n", name, "addr", "add", &node, "dev", "eth0"]).unwrap();
        for link in ["eth0", "lo"] {
            ip(&["-n", name, "link", "set", link, "up"]).unwrap();
        }
        let gateway = root.split('/').next().unwrap();
        ip(&["-n", name, "route", "add", "default", "via", gateway]).unwrap();
        ip(&["-n", name, "link", "add", "imagc0", "type", "bridge"]).unwrap();
        ip(&["-n", name, "link", "set", "imagc0", "up"]).unwrap();
        ip(&[
            "-n",
            name,
            "addr",
            "add",
            &format!("10.200.{i}.1/24"),
            "dev",
            "imagc0",
        ])
        .unwrap();
    }
    topology
}

/// One node: a runtime whose threads all live in the node's namespace.
struct Node {
    rt: Runtime,
    handle: ClusterHandle,
    signals: Receiver<Signal>,
    task: Option<ClusterTask>,
    ns: String,
}

impl Node {
    fn start(ns: &str, config: Config) -> Node {
        let netns = ns.to_string();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .on_thread_start(move || imag_testkit::netns::enter_netns(&netns).unwrap())
            .build()
            .unwrap();
        let cluster = config.cluster.clone().unwrap();
        let started = rt.block_on(async move {
            // Spawned: the task runs on the runtime's own threads, inside the namespace.
            tokio::spawn(async move { cluster::start(&cluster, &config, "imagc0", &[]).await })
                .await
                .unwrap()
        });
        let (handle, signals, task) = started.expect("the node joins the cluster");
        Node {
            rt,
            handle,
            signals,
            task: Some(task),
            ns: ns.to_string(),
        }
    }

    fn claim(&self, host: &str) -> Claim {
        let handle = self.handle.clone();
        let host = host.to_string();
        self.rt
            .block_on(async move { tokio::spawn(async move { handle.claim(&host).await }).await })
            .unwrap()
    }

    fn release(&self, host: &str) {
        let handle = self.handle.clone();
        let host = host.to_string();
        self.rt
            .block_on(async move { tokio::spawn(async move { handle.release(&host).await }).await })
            .unwrap();
    }

    fn next_signal(&mut self) -> Signal {
        let signals = &mut self.signals;
        self.rt
            .block_on(async { tokio::time::timeout(PATIENCE, signals.recv()).await })
            .expect("a signal within the patience")
            .expect("the signal channel is open")
    }

    /// Waits until `done` holds for the view (polled; `what` names it when it never does).
    fn wait_for(&self, what: &str, done: impl Fn(&cluster::ClusterView) -> bool) {
        let start = std::time::Instant::now();
        while !done(&self.handle.view()) {
            assert!(
                start.elapsed() < PATIENCE,
                "{what}: {:#?}",
                self.handle.view()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `table`'s routes of protocol 201: destination → (metric, gateway, device).
    fn routes(&self, table: &str) -> Vec<(String, u64, Option<String>, String)> {
        let out = Command::new("ip")
            .args([
                "-n", &self.ns, "-j", "route", "show", "table", table, "proto", "201",
            ])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let list: Vec<serde_json::Value> =
            serde_json::from_str(if text.trim().is_empty() { "[]" } else { &text }).unwrap();
        list.iter()
            .map(|r| {
                (
                    r["dst"].as_str().unwrap_or_default().to_string(),
                    r["metric"].as_u64().unwrap_or(0),
                    r["gateway"].as_str().map(str::to_string),
                    r["dev"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect()
    }

    fn metric_of(&self, addr: Ipv4Addr) -> Option<u64> {
        let routes = self.routes("4200");
        let found: Vec<_> = routes.iter().filter(|r| r.0 == addr.to_string()).collect();
        assert!(found.len() <= 1, "one announcement per host: {routes:?}");
        found.first().map(|r| r.1)
    }

    fn wait_metric(&self, addr: Ipv4Addr, metric: Option<u64>) {
        let start = std::time::Instant::now();
        while self.metric_of(addr) != metric {
            assert!(
                start.elapsed() < PATIENCE,
                "{addr}: expected metric {metric:?} in table 4200, have {:?}",
                self.routes("4200")
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

fn config(i: u8, tag: &str, node: &str, store: &str, address: &str) -> Config {
    use std::fmt::Write as _;
    let mut text = format!(
        "[network]\nsubnet = \"10.200.{i}.0/24\"\nname = \"{tag}\"\nbridge = \"imagc0\"\n\
         [cluster]\nnode = \"{node}\"\nstore = [\"{store}\"]\naddress = \"{address}\"\n\
         lease = \"{LEASE_SECONDS}s\"\nfence_margin = \"1s\"\n"
    );
    for h in 0..8 {
        write!(
            text,
            "[[host]]\nname = \"h{h}\"\naddress = \"10.200.{i}.{}\"\nimage = \"i\"\n",
            10 + h
        )
        .unwrap();
    }
    text.push_str("[[host]]\nname = \"pinned\"\naddress = \"10.200.");
    write!(text, "{i}.30\"\nimage = \"i\"\nnodes = [\"node-b\"]\n").unwrap();
    Config::parse(&text, "cluster.toml").unwrap()
}

#[test]
#[allow(clippy::too_many_lines, reason = "one scenario, step by step")]
fn two_nodes_share_hosts_through_etcd_and_routes() {
    let lease = Lease::take().unwrap();
    let i = lease.index();
    let topo = topology(&lease);
    let root_a = Ipv4Addr::new(10, 201, i, 1);
    let root_b = Ipv4Addr::new(10, 201, i, 65);
    let (addr_a, addr_b) = (Ipv4Addr::new(10, 201, i, 2), Ipv4Addr::new(10, 201, i, 66));
    let etcd = Etcd::start(&lease, &[root_a, root_b]);
    let store_a = format!("http://{root_a}:{}", etcd.port);
    let store_b = format!("http://{root_b}:{}", etcd.port);
    wait_for_etcd(&store_a);

    let tag = lease.tag().to_string();
    let config_a = config(i, &tag, "node-a", &store_a, &addr_a.to_string());
    let config_b = config(i, &tag, "node-b", &store_b, &addr_b.to_string());
    let host_addr = |name: &str| config_a.host(name).unwrap().address;
    let mut a = Node::start(&topo.names[0], config_a.clone());
    let mut b = Node::start(&topo.names[1], config_b);
    for node in [&a, &b] {
        node.wait_for("both nodes are live", |v| v.nodes.len() == 2);
    }
    let nat = nat_postrouting(&topo.names[0]);
    let subnet = format!("10.200.{i}.0/24");
    assert!(
        nat.lines()
            .any(|l| l.contains(&format!("-s {subnet} -d {subnet}"))
                && l.contains(&format!("imag:{tag}"))
                && l.ends_with("-j RETURN")),
        "the nat exemption is installed: {nat}"
    );

    // Announcements: owner 200, fallback 301, none where `nodes` excludes the node.
    let owner = |name: &str| {
        a.handle
            .view()
            .hosts
            .iter()
            .find(|h| h.name == name)
            .unwrap()
            .ranking[0]
            .clone()
    };
    wait_both_ranked(&a, &b);
    for h in (0..8).map(|h| format!("h{h}")) {
        let (on_a, on_b) = if owner(&h) == "node-a" {
            (200, 301)
        } else {
            (301, 200)
        };
        a.wait_metric(host_addr(&h), Some(on_a));
        b.wait_metric(host_addr(&h), Some(on_b));
    }
    a.wait_metric(host_addr("pinned"), None);
    b.wait_metric(host_addr("pinned"), Some(200));

    // At start, A got one Target signal per host owned by B, each after its main route.
    let owned_by_b: Vec<String> = (0..8)
        .map(|h| format!("h{h}"))
        .chain(["pinned".to_string()])
        .filter(|h| owner(h) == "node-b")
        .collect();
    assert!(
        owned_by_b.len() > 1,
        "placement gives B some hosts: {owned_by_b:?}"
    );
    let mut signalled = Vec::new();
    while signalled.len() < owned_by_b.len() {
        match a.next_signal() {
            Signal::Target { host, target } => {
                assert_eq!(
                    target,
                    Target::Node {
                        name: "node-b".into(),
                        address: addr_b
                    }
                );
                let main = a.routes("main");
                let dst = host_addr(&host).to_string();
                assert!(
                    main.iter().any(|r| r.0 == dst
                        && r.2.as_deref() == Some(&root_a.to_string())
                        && r.3 == "eth0"),
                    "the route via the gateway to node-b is in before the signal: {main:?}"
                );
                signalled.push(host);
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    signalled.sort();
    let mut expected = owned_by_b.clone();
    expected.sort();
    assert_eq!(signalled, expected);

    // Claims are exclusive: A takes a host B owns; B loses it naming A, and B's target moves.
    let h = owned_by_b.iter().find(|h| *h != "pinned").unwrap().clone();
    while let Ok(Some(_)) = b
        .rt
        .block_on(async { tokio::time::timeout(Duration::from_millis(10), b.signals.recv()).await })
    {
    }
    assert_eq!(a.claim(&h), Claim::Won);
    assert_eq!(a.claim(&h), Claim::Won, "already ours");
    assert_eq!(
        b.claim(&h),
        Claim::Lost {
            node: "node-a".into(),
            address: addr_a
        }
    );
    a.wait_metric(host_addr(&h), Some(100));
    match b.next_signal() {
        Signal::Target { host, target } => {
            assert_eq!(host, h);
            assert_eq!(
                target,
                Target::Node {
                    name: "node-a".into(),
                    address: addr_a
                }
            );
            let main = b.routes("main");
            assert!(
                main.iter().any(|r| r.0 == host_addr(&h).to_string()
                    && r.2.as_deref() == Some(&root_b.to_string())),
                "B routes {h} to A before the signal: {main:?}"
            );
        }
        other => panic!("unexpected {other:?}"),
    }

    // `nodes` is honoured: A may not take a host pinned to B.
    assert!(
        matches!(a.claim("pinned"), Claim::Unavailable(why) if why.contains("may only run on")),
        "a node outside a host's nodes cannot claim it"
    );

    // Release frees the key: B may take it then.
    a.release(&h);
    assert_eq!(b.claim(&h), Claim::Won);
    b.release(&h);

    // A killed node (task dropped, no revoke): its key lives until the lease runs out, then B
    // may claim.
    let h2 = format!("h{}", (0..8).find(|n| format!("h{n}") != h).unwrap());
    assert_eq!(a.claim(&h2), Claim::Won);
    drop(a.task.take());
    assert!(matches!(b.claim(&h2), Claim::Lost { node, .. } if node == "node-a"));
    b.wait_for("node-a's lease expires", |v| v.nodes.len() == 1);
    assert_eq!(b.claim(&h2), Claim::Won);
    b.release(&h2);
    b.wait_metric(host_addr(&h2), Some(200));

    // Fencing: etcd stops answering; B withdraws every announcement, then says Fence.
    while let Ok(Some(_)) = b
        .rt
        .block_on(async { tokio::time::timeout(Duration::from_millis(10), b.signals.recv()).await })
    {
    }
    etcd.signal(libc::SIGSTOP);
    loop {
        match b.next_signal() {
            Signal::Fence => break,
            Signal::Target { .. } => {}
            Signal::Unfence => panic!("unfenced while etcd is stopped"),
        }
    }
    assert!(b.routes("4200").is_empty(), "fenced: nothing announced");
    assert!(b.handle.view().fenced);
    assert!(matches!(b.claim(&h2), Claim::Unavailable(_)));
    etcd.signal(libc::SIGCONT);
    loop {
        if b.next_signal() == Signal::Unfence {
            break;
        }
    }
    b.wait_metric(host_addr(&h2), Some(200));
    assert_eq!(b.handle.view().counters.fences, 1);

    // A clean exit removes every route of ours, the nat rule and the node's key.
    let task = b.task.take().unwrap();
    b.rt.block_on(task.shutdown());
    assert!(b.routes("4200").is_empty() && b.routes("main").is_empty());
    let nat = nat_postrouting(&topo.names[1]);
    assert!(!nat.contains(&format!("imag:{tag}")));
    let keys = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args([
            "--endpoints",
            &store_a,
            "get",
            "--prefix",
            "/imag/",
            "--keys-only",
        ])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&keys.stdout).trim(),
        "",
        "no keys left"
    );
    drop((a, b));
}

/// The nat POSTROUTING rules of namespace `netns` (`iptables -S`).
fn nat_postrouting(netns: &str) -> String {
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            netns,
            "iptables",
            "-t",
            "nat",
            "-S",
            "POSTROUTING",
        ])
        .output()
        .expect("running iptables in the namespace");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn wait_for_etcd(endpoint: &str) {
    let start = std::time::Instant::now();
    loop {
        let health = Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .args(["--endpoints", endpoint, "endpoint", "health"])
            .output()
            .unwrap();
        if health.status.success() {
            return;
        }
        assert!(
            start.elapsed() < PATIENCE,
            "etcd never answered at {endpoint}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn wait_both_ranked(a: &Node, b: &Node) {
    for node in [a, b] {
        node.wait_for("every host ranks both nodes", |v| {
            v.hosts
                .iter()
                .filter(|h| h.name != "pinned")
                .all(|h| h.ranking.len() == 2)
        });
    }
}

#[test]
fn a_store_that_does_not_answer_is_an_error_naming_it_and_the_fix() {
    // Nothing listens on a port just released; "lo" stands in for the bridge (the store is
    // asked before any route or rule is touched).
    let endpoint = format!("http://127.0.0.1:{}", free_port());
    let text = format!(
        "[network]\nsubnet = \"10.200.250.0/24\"\n[cluster]\nnode = \"lonely\"\n\
         store = [\"{endpoint}\"]\naddress = \"127.0.0.1\"\n"
    );
    let config = Config::parse(&text, "t.toml").unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let cluster = config.cluster.clone().unwrap();
    let Err(err) = rt.block_on(cluster::start(&cluster, &config, "lo", &[])) else {
        panic!("joining a cluster whose store does not answer must fail");
    };
    let message = err.to_string();
    assert!(
        message.contains(&endpoint) && message.contains("start etcd or fix [cluster] store"),
        "{message}"
    );
}
