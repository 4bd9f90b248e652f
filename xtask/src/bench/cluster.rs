//! Scale-out (docs/SCALE-OUT.md) in numbers, on the multi-node topology of
//! `imag_testkit::cluster` (a router with BIRD and etcd, a client behind it, nodes each with its
//! own Docker engine, BIRD and imag agent):
//!
//! 1. Warm latency of a host calling another on another node by name, against one calling a
//!    host on its own node, in one run, interleaved; and the client's own latency to a host on
//!    each of the two nodes.
//! 2. Failover: a warm host's node is killed (as in a power cut); from the client, requests
//!    (200 ms timeout, retried at once) until the first is answered from a surviving node; on
//!    the way, when the router's route moved to a survivor and when a survivor saw the dead
//!    node's lease run out. A killed node cannot come back, so each cluster gives one round per
//!    node but the last; fresh clusters follow while the time allows.
//!
//! Written to `bench/cluster.{md,json}` (`--cluster-only` alone, or as part of the full run,
//! whose `results.md` gets the same section).

use std::{
    fmt::Write as _,
    net::{Ipv4Addr, SocketAddr},
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use imag_testkit::{
    clients::HttpConnection,
    cluster::{CONVERGE, Cluster, ClusterHost, ClusterSpec, FENCE_MARGIN, LEASE, wait_for},
};
use serde::Serialize;

use super::{
    Machine, client,
    report::{MIN_P99_SAMPLES, p99_cell},
    stats::summarize,
};

/// Nodes per cluster: the first cluster's n1 and n2 carry the latency hosts; each cluster
/// gives `NODES - 1` failover rounds.
const NODES: usize = 4;
/// Time for the failover rounds (fresh clusters are started while one more fits).
const FAILOVER_BUDGET: Duration = Duration::from_secs(210);
/// The client's request timeout while it waits for a failover (connect and answer).
const ATTEMPT_TIMEOUT: Duration = Duration::from_millis(200);
/// A failover not answered within this fails the run.
const GIVE_UP: Duration = Duration::from_secs(40);
/// Unpinned hosts, one per failover round of a cluster (more than enough).
const VICTIMS: u8 = 12;

/// The whole section.
#[derive(Debug, Serialize)]
pub struct ClusterRun {
    pub machine: Machine,
    pub nodes: usize,
    pub lease: &'static str,
    pub fence_margin: &'static str,
    pub attempt_timeout_ms: f64,
    /// Seconds each cluster took to build (engines, BIRD, etcd), before its agents started.
    pub cluster_start_s: Vec<f64>,
    pub latency: Latency,
    pub failovers: Vec<Failover>,
}

/// Request/response latency (µs) on one keep-alive connection per path, interleaved.
#[derive(Debug, Default, Serialize)]
pub struct Latency {
    pub requests: usize,
    /// client → front-a (n1) → back-a (n2) by name.
    pub cross_node_us: Vec<f64>,
    /// client → front-b (n1) → back-b (n1) by name.
    pub same_node_us: Vec<f64>,
    /// client → back-b (n1) and → back-a (n2), through the router.
    pub direct_n1_us: Vec<f64>,
    pub direct_n2_us: Vec<f64>,
}

/// One killed node, all times from the start of the kill (ms).
#[derive(Debug, Serialize)]
pub struct Failover {
    pub cluster: usize,
    pub host: String,
    pub killed_node: usize,
    /// The node whose container answered afterwards.
    pub answered_by: Option<usize>,
    /// The kill itself (agent, engine, BIRD killed, link deleted).
    pub kill_ms: f64,
    /// The router's route for the host first pointed at a surviving node.
    pub route_moved_ms: Option<f64>,
    /// A surviving agent's view of the live nodes first lacked the killed one.
    pub lease_expired_ms: Option<f64>,
    /// The client's first answered request.
    pub answered_ms: f64,
    pub attempts: usize,
    /// Afterwards, exactly one container of the host, running, on a surviving node.
    pub one_container: bool,
}

fn victim(i: u8) -> ClusterHost {
    ClusterHost::new(&format!("v{i}"), 100 + i, "")
}

fn hosts() -> Vec<ClusterHost> {
    let hello = |backend: &str| {
        format!(
            "nodes = [\"n1\"]\ncommand = [\"/hello\", \"--port\", \"8080\", \"--backend\", \
             \"{backend}:8080\"]"
        )
    };
    let mut hosts = vec![
        ClusterHost::new("back-a", 20, "nodes = [\"n2\"]"),
        ClusterHost::new("front-a", 21, &hello("back-a")),
        ClusterHost::new("back-b", 22, "nodes = [\"n1\"]"),
        ClusterHost::new("front-b", 23, &hello("back-b")),
    ];
    hosts.extend((0..VICTIMS).map(victim));
    hosts
}

fn start(binary: &Path, starts: &mut Vec<f64>) -> anyhow::Result<Cluster> {
    let mut cluster = Cluster::start(&ClusterSpec {
        nodes: NODES,
        ..ClusterSpec::default()
    })?;
    starts.push(cluster.started_in().as_secs_f64());
    cluster.start_agents(binary, &hosts(), "imag_agent=info")?;
    Ok(cluster)
}

/// Measures the section: `requests` per latency path, failover rounds for about 3.5 minutes.
pub fn measure(binary: &Path, requests: usize, machine: Machine) -> anyhow::Result<ClusterRun> {
    let mut run = ClusterRun {
        machine,
        nodes: NODES,
        lease: LEASE,
        fence_margin: FENCE_MARGIN,
        attempt_timeout_ms: ATTEMPT_TIMEOUT.as_secs_f64() * 1000.0,
        cluster_start_s: Vec::new(),
        latency: Latency::default(),
        failovers: Vec::new(),
    };
    eprintln!(
        "bench: scale-out, {NODES}-node clusters (lease {LEASE}, fence margin {FENCE_MARGIN})"
    );
    let mut cluster = start(binary, &mut run.cluster_start_s)?;
    run.latency = latency(&cluster, requests)?;
    let began = Instant::now();
    let mut number = 1;
    loop {
        let opened = Instant::now();
        failovers(&mut cluster, number, &mut run.failovers)?;
        drop(cluster);
        // Another cluster only if one as long as the last still fits.
        if began.elapsed() + opened.elapsed() > FAILOVER_BUDGET {
            break;
        }
        number += 1;
        cluster = start(binary, &mut run.cluster_start_s)?;
    }
    Ok(run)
}

/// Warms both chains, then times `requests` requests per path, interleaved.
fn latency(cluster: &Cluster, requests: usize) -> anyhow::Result<Latency> {
    let addr = |last: u8| SocketAddr::from((Ipv4Addr::new(10, 77, 0, last), 8080));
    let (front_a, front_b, back_b, back_a) = (addr(21), addr(23), addr(22), addr(20));
    for (last, name) in [(21, "front-a"), (23, "front-b")] {
        let body = cluster
            .get(Ipv4Addr::new(10, 77, 0, last), Duration::from_mins(1))
            .map_err(|e| anyhow::anyhow!("{name} did not answer: {e}"))?;
        if !body.contains("hello") {
            bail!("{name} answered {body:?}, not its backend's hello");
        }
    }
    for (host, node) in [("front-a", 1), ("back-a", 2), ("front-b", 1), ("back-b", 1)] {
        let now = cluster.host_containers(host)?;
        if now != [(node, "running".to_string())] {
            bail!("{host} should run on n{node} alone (its `nodes`), found {now:?}");
        }
    }
    eprintln!("  warm latency: {requests} requests per path, interleaved");
    let paths = [front_a, front_b, back_b, back_a];
    let samples = cluster
        .client()
        .run(|| -> std::io::Result<Vec<Vec<f64>>> {
            let mut conns = paths
                .iter()
                .map(|&a| HttpConnection::open(a, Duration::from_secs(10)))
                .collect::<std::io::Result<Vec<_>>>()?;
            for conn in &mut conns {
                for _ in 0..50 {
                    conn.get()?;
                }
            }
            let mut samples = vec![Vec::with_capacity(requests); conns.len()];
            for _ in 0..requests {
                for (conn, out) in conns.iter_mut().zip(&mut samples) {
                    let started = Instant::now();
                    conn.get()?;
                    out.push(started.elapsed().as_secs_f64() * 1e6);
                }
            }
            Ok(samples)
        })??;
    let mut samples = samples.into_iter();
    let mut next = || samples.next().unwrap_or_default();
    Ok(Latency {
        requests,
        cross_node_us: next(),
        same_node_us: next(),
        direct_n1_us: next(),
        direct_n2_us: next(),
    })
}

fn alive(cluster: &Cluster) -> Vec<usize> {
    (1..=cluster.len())
        .filter(|&i| cluster.node(i).alive())
        .collect()
}

/// One round per node but the last: warm a host, kill its node, wait for the answer.
fn failovers(cluster: &mut Cluster, number: usize, out: &mut Vec<Failover>) -> anyhow::Result<()> {
    for i in 0..VICTIMS {
        if alive(cluster).len() < 2 {
            break;
        }
        let host = victim(i);
        let owner = cluster.placed(&host.name)?;
        cluster
            .get(host.address, Duration::from_mins(1))
            .map_err(|e| anyhow::anyhow!("{} did not wake on n{owner}: {e}", host.name))?;
        let owner_addr = cluster.node(owner).fabric_addr();
        wait_for("the router prefers the owner's route", CONVERGE, || {
            cluster.router_next_hop(host.address).ok().flatten() == Some(owner_addr)
        })?;
        let round = kill_and_wait(cluster, number, &host, owner)?;
        eprintln!(
            "  cluster {number}, {} off n{owner}: route moved {}, lease gone {}, answered {:.0} ms \
             by {:?} ({} attempts)",
            host.name,
            ms(round.route_moved_ms),
            ms(round.lease_expired_ms),
            round.answered_ms,
            round.answered_by,
            round.attempts
        );
        out.push(round);
        // The survivors agree on who lives before the next round.
        let live = alive(cluster);
        for &n in &live {
            wait_for("every surviving agent sees the others", CONVERGE, || {
                cluster.live_nodes(n) == live.len()
            })?;
        }
    }
    Ok(())
}

fn ms(value: Option<f64>) -> String {
    value.map_or_else(|| "—".into(), |v| format!("{v:.0} ms"))
}

fn kill_and_wait(
    cluster: &mut Cluster,
    number: usize,
    host: &ClusterHost,
    owner: usize,
) -> anyhow::Result<Failover> {
    let survivors: Vec<usize> = alive(cluster).into_iter().filter(|&n| n != owner).collect();
    let (watcher, dead_addr, dead_name) = (
        survivors[0],
        cluster.node(owner).fabric_addr(),
        format!("n{owner}"),
    );
    let since = Instant::now();
    cluster.kill_node(owner)?;
    let kill_ms = millis(since.elapsed());
    let cluster = &*cluster;
    let target = SocketAddr::from((host.address, 8080));
    let (answer, route_moved_ms, lease_expired_ms) = std::thread::scope(|scope| {
        let requests = scope.spawn(|| cluster.client().run(|| first_answer(target, since)));
        let (mut route, mut lease) = (None, None);
        loop {
            let done = requests.is_finished();
            if route.is_none()
                && let Ok(Some(hop)) = cluster.router_next_hop(host.address)
                && hop != dead_addr
            {
                route = Some(millis(since.elapsed()));
            }
            if lease.is_none() {
                let names = cluster.live_node_names(watcher);
                if !names.is_empty() && !names.contains(&dead_name) {
                    lease = Some(millis(since.elapsed()));
                }
            }
            let settled = route.is_some() && lease.is_some();
            if done && (settled || since.elapsed() > GIVE_UP) {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let answer = requests
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        (answer, route, lease)
    });
    let (answered, attempts) = answer.context("entering the client namespace")?;
    let Some(answered) = answered else {
        bail!(
            "{} was not answered within {GIVE_UP:?} of n{owner}'s kill ({attempts} attempts)",
            host.name
        );
    };
    let now = cluster.host_containers(&host.name)?;
    let one_container = now.len() == 1 && now[0].0 != owner && now[0].1 == "running";
    Ok(Failover {
        cluster: number,
        host: host.name.clone(),
        killed_node: owner,
        answered_by: one_container.then(|| now[0].0),
        kill_ms,
        route_moved_ms,
        lease_expired_ms,
        answered_ms: millis(answered),
        attempts,
        one_container,
    })
}

/// Requests until one is answered (each with [`ATTEMPT_TIMEOUT`], the next at once): when the
/// answer's first byte came, from `since`, and the number of attempts.
fn first_answer(target: SocketAddr, since: Instant) -> (Option<Duration>, usize) {
    let mut attempts = 0;
    while since.elapsed() < GIVE_UP {
        attempts += 1;
        let tried = Instant::now();
        if client::time_to_first_byte(target, ATTEMPT_TIMEOUT).is_ok() {
            return (Some(since.elapsed()), attempts);
        }
        // An attempt refused at once (no route yet) is not retried in a busy loop.
        if tried.elapsed() < Duration::from_millis(5) {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    (None, attempts)
}

fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The section as Markdown (the same in `bench/cluster.md` and `bench/results.md`).
pub fn markdown(run: &ClusterRun) -> String {
    let mut md = String::new();
    let starts = summarize(&run.cluster_start_s);
    let _ = writeln!(
        md,
        "## Scale-out: cross-node calls and failover\n\n\
         {}-node clusters on this one machine (`imag_testkit::cluster`): each node a network \
         namespace with its own Docker engine, BIRD and imag agent; a router namespace with BIRD \
         (BGP hold time 3 s) and etcd; the client behind the router. `[cluster] lease = \"{}\"`, \
         `fence_margin = \"{}\"`. {} clusters built, {:.0} s each (p50) before the agents \
         started.\n",
        run.nodes, run.lease, run.fence_margin, starts.n, starts.p50
    );
    let l = &run.latency;
    let _ = writeln!(
        md,
        "### Warm latency, cross-node against same-node\n\n\
         {} requests per path, interleaved, each path on one keep-alive connection from the \
         client. A front (hello `--backend NAME:8080`) looks its back up by name and opens a new \
         connection to it at every request.\n\n\
         | path | n | p50 µs | p95 µs | p99 µs | max µs |\n|---|---|---|---|---|---|",
        l.requests
    );
    for (path, samples) in [
        (
            "front-a on n1 → back-a on n2 (cross-node)",
            &l.cross_node_us,
        ),
        ("front-b on n1 → back-b on n1 (same node)", &l.same_node_us),
        ("client → back-b on n1 (direct)", &l.direct_n1_us),
        ("client → back-a on n2 (direct)", &l.direct_n2_us),
    ] {
        let s = summarize(samples);
        let _ = writeln!(
            md,
            "| {path} | {} | {:.0} | {:.0} | {} | {:.0} |",
            s.n,
            s.p50,
            s.p95,
            p99_cell(&s),
            s.max
        );
    }
    let (cross, same) = (summarize(&l.cross_node_us), summarize(&l.same_node_us));
    let _ = writeln!(
        md,
        "\nCross-node ÷ same-node: p50 {:.2}×, p99 {:.2}× (+{:.0} µs at p50).\n",
        cross.p50 / same.p50,
        cross.p99 / same.p99,
        cross.p50 - same.p50
    );
    failover_markdown(run, &mut md);
    md
}

fn failover_markdown(run: &ClusterRun, md: &mut String) {
    let f = &run.failovers;
    let _ = writeln!(
        md,
        "### Failover\n\n\
         {} rounds: a warm host's node killed (agent, engine, BIRD SIGKILLed, its link deleted); \
         from the client, requests with a {:.0} ms timeout, retried at once, until one is \
         answered. Times from the start of the kill. Expected: about max(BGP hold 3 s, lease \
         {}) + one cold wake. The kill closes the node's BGP session at once (BIRD's socket \
         dies with it), so the router's route moves within the kill; after a real power cut it \
         would move after the hold time, still within the lease, which bounds failover.\n\n\
         | from the kill until | n | p50 ms | {} | \n|---|---|---|---|",
        f.len(),
        run.attempt_timeout_ms,
        run.lease,
        if f.len() >= MIN_P99_SAMPLES {
            "p99 ms"
        } else {
            "max ms (n < 100: no p99)"
        }
    );
    let column = |pick: &dyn Fn(&Failover) -> Option<f64>| -> Vec<f64> {
        f.iter().filter_map(pick).collect()
    };
    for (what, samples) in [
        ("the kill was done", column(&|r: &Failover| Some(r.kill_ms))),
        (
            "the router's route pointed at a survivor",
            column(&|r: &Failover| r.route_moved_ms),
        ),
        (
            "a survivor saw the node's lease expire",
            column(&|r: &Failover| r.lease_expired_ms),
        ),
        (
            "**the first answered request**",
            column(&|r: &Failover| Some(r.answered_ms)),
        ),
    ] {
        let s = summarize(&samples);
        let tail = if s.n >= MIN_P99_SAMPLES { s.p99 } else { s.max };
        let _ = writeln!(md, "| {what} | {} | {:.0} | {tail:.0} |", s.n, s.p50);
    }
    let one = f.iter().filter(|r| r.one_container).count();
    let _ = writeln!(
        md,
        "\nAfterwards the host ran in exactly one container, on a surviving node, in {one} of {} \
         rounds.\n\n| cluster | host | killed | answered by | route moved ms | lease gone ms | \
         answered ms | attempts |\n|---|---|---|---|---|---|---|---|",
        f.len()
    );
    for r in f {
        let cell = |v: Option<f64>| v.map_or_else(|| "—".into(), |v| format!("{v:.0}"));
        let _ = writeln!(
            md,
            "| {} | {} | n{} | {} | {} | {} | {:.0} | {} |",
            r.cluster,
            r.host,
            r.killed_node,
            r.answered_by
                .map_or_else(|| "?".into(), |n| format!("n{n}")),
            cell(r.route_moved_ms),
            cell(r.lease_expired_ms),
            r.answered_ms,
            r.attempts
        );
    }
}

/// Writes `bench/cluster.{md,json}` (with the machine line on top).
pub fn write(run: &ClusterRun, command: &str) -> anyhow::Result<()> {
    let out = crate::workspace_root().join("bench");
    std::fs::create_dir_all(&out)?;
    std::fs::write(out.join("cluster.json"), serde_json::to_string_pretty(run)?)?;
    let m = &run.machine;
    let markdown = format!(
        "# imag scale-out benchmark\n\nMeasured by `{command}` (as root) on {} CPUs ({}), Linux {}, Docker {}; imag {} on {}.\n\n{}",
        m.cpus,
        m.cpu_model,
        m.kernel,
        m.docker,
        m.revision,
        m.date,
        markdown(run)
    );
    std::fs::write(out.join("cluster.md"), &markdown)?;
    println!("{markdown}");
    println!("written: bench/cluster.md, bench/cluster.json");
    Ok(())
}
