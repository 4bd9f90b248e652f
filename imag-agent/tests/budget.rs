//! The budget of warm hosts (`[limits]`), for real: least-recently-used eviction before a wake
//! (by `max_warm` and by `memory_budget` with hosts' `memory` limits, sparing a host with an open
//! connection), a wake refused at once when nothing may be evicted, a sweep held to the wake rate
//! of its source, and `validate` placing bad limits.

#![allow(
    clippy::float_cmp,
    reason = "metrics are whole counts carried in f64: equality is exact"
)]

use std::{
    io::ErrorKind,
    net::TcpStream,
    os::unix::process::CommandExt,
    process::Command,
    time::{Duration, Instant},
};

use imag_testkit::{
    AgentProcess, ClientNs, TestNet, agent_binary, clients, docker::container_status, wait_until,
};

const WAKE: Duration = Duration::from_secs(30);
const MIB: u64 = 1 << 20;

/// Waits until the agent's status shows `open` open connections for `host` (the agent reads the
/// datapath's connection counters on its tick).
fn wait_for_connections(agent: &AgentProcess, host: &str, open: u64) {
    wait_until(
        &format!("{host} has {open} open connection(s)"),
        Duration::from_secs(10),
        || agent.host(host).unwrap()["open_connections"] == open,
    );
}

/// One HTTP request on a fresh connection from the client namespace, and the client's SYN
/// retransmissions it took.
fn request(client: &ClientNs, net: &TestNet, i: u8) -> (String, u64) {
    client
        .run(|| {
            let before = clients::net_counter("TcpExt", "TCPSynRetrans").unwrap();
            let answer = clients::http_get(net.http_addr(i), WAKE);
            let after = clients::net_counter("TcpExt", "TCPSynRetrans").unwrap();
            (answer, after - before)
        })
        .map(|(answer, retrans)| (answer.expect("the request is answered").0, retrans))
        .unwrap()
}

#[test]
fn max_warm_two_stops_the_least_recently_used_before_the_third_answers() {
    let net = TestNet::new(agent_binary!());
    let client = net.client();
    let mut config = net.network_toml() + "\n[limits]\nmax_warm = 2\n";
    for (name, i) in [("a", 10), ("b", 11), ("c", 12)] {
        config += &(net.http_host(name, i, &[]) + "min_warm = \"0s\"\n");
    }
    let agent = net.start_agent(&config, &[]);

    assert_eq!(request(client, &net, 10).0, "hello from a\n");
    assert_eq!(request(client, &net, 11).0, "hello from b\n");
    let (body, retransmits) = request(client, &net, 12);
    assert_eq!(body, "hello from c\n");
    // c woke from its first SYN after the eviction: none beyond what the wait forces (a wake
    // over 1 s, the eviction then the engine's create and start, on a loaded machine).
    let forced = agent.syn_retransmissions_forced("c");
    assert!(
        retransmits <= forced,
        "{retransmits} SYN retransmissions, {forced} forced by c's wake: {}",
        agent.log_text()
    );
    assert_eq!(
        container_status(&net.container("a")).as_deref(),
        Some("exited"),
        "a, the least recently used, was stopped"
    );
    assert_eq!(
        container_status(&net.container("b")).as_deref(),
        Some("running")
    );
    let status = agent.status().unwrap();
    assert_eq!(status["budget"]["warm"], 2, "{status}");
    assert_eq!(
        net.scrape()
            .sum("imag_evictions_total", &[("reason", "max_warm")]),
        1.0
    );
}

#[test]
fn nothing_evictable_refuses_the_connection_within_milliseconds() {
    let net = TestNet::new(agent_binary!());
    let client = net.client();
    // a stays inside its min_warm (30 s by default): nothing may make room for b.
    let config = net.network_toml()
        + "\n[limits]\nmax_warm = 1\n"
        + &net.http_host("a", 10, &[])
        + &net.http_host("b", 11, &[]);
    let agent = net.start_agent(&config, &[]);
    assert_eq!(request(client, &net, 10).0, "hello from a\n");

    let addr = net.http_addr(11);
    let (result, took) = client
        .run(|| {
            let start = Instant::now();
            let result = TcpStream::connect_timeout(&addr, Duration::from_secs(5));
            (result.map(|_| ()).map_err(|e| e.kind()), start.elapsed())
        })
        .unwrap();
    assert_eq!(
        result,
        Err(ErrorKind::ConnectionRefused),
        "{}",
        agent.log_text()
    );
    assert!(
        took < Duration::from_millis(200),
        "refused after {took:?}, expected a few ms"
    );
    assert_eq!(
        container_status(&net.container("b")),
        None,
        "b never created"
    );
    assert_eq!(
        net.scrape()
            .sum("imag_wakes_refused_total", &[("reason", "budget")]),
        1.0
    );
    wait_until(
        "the failure is in the status",
        Duration::from_secs(5),
        || {
            agent.host("b").unwrap()["last_failure"]
                .as_str()
                .is_some_and(|f| f.starts_with("budget"))
        },
    );
}

#[test]
fn a_host_with_an_open_connection_survives_eviction_while_an_idle_one_goes() {
    let net = TestNet::new(agent_binary!());
    let client = net.client();
    let mut config = net.network_toml() + "\n[limits]\nmax_warm = 2\n";
    for (name, i) in [("a", 10), ("b", 11), ("c", 12)] {
        config += &(net.http_host(name, i, &[]) + "min_warm = \"0s\"\n");
    }
    let agent = net.start_agent(&config, &[]);

    // a is woken first and stays the least recently active, but keeps a connection open.
    let mut conn = client
        .run(|| clients::HttpConnection::open(net.http_addr(10), WAKE))
        .unwrap()
        .expect("a answers the connection");
    assert_eq!(conn.get().unwrap(), "hello from a\n");
    wait_for_connections(&agent, "a", 1);
    assert_eq!(request(client, &net, 11).0, "hello from b\n");
    wait_for_connections(&agent, "b", 0);

    let (body, retransmits) = request(client, &net, 12);
    assert_eq!(body, "hello from c\n");
    // None beyond what the wait forces (eviction, then the engine's create and start).
    let forced = agent.syn_retransmissions_forced("c");
    assert!(
        retransmits <= forced,
        "{retransmits} SYN retransmissions, {forced} forced by c's wake: {}",
        agent.log_text()
    );
    assert_eq!(
        container_status(&net.container("b")).as_deref(),
        Some("exited"),
        "b, idle, was evicted: {}",
        agent.log_text()
    );
    assert_eq!(
        container_status(&net.container("a")).as_deref(),
        Some("running"),
        "a, busy, was spared"
    );
    assert_eq!(
        conn.get().expect("a's open connection still works"),
        "hello from a\n"
    );
    assert_eq!(agent.host("a").unwrap()["state"], "warm");
    assert_eq!(agent.host("b").unwrap()["state"], "asleep");
    let metrics = net.scrape();
    assert_eq!(
        metrics.sum("imag_evictions_total", &[("reason", "max_warm")]),
        1.0
    );
    assert_eq!(metrics.sum("imag_wakes_refused_total", &[]), 0.0);
}

#[test]
fn memory_budget_counts_hosts_memory_limits_and_evicts_the_least_recently_used() {
    let net = TestNet::new(agent_binary!());
    let client = net.client();
    let mut config = net.network_toml() + "\n[limits]\nmemory_budget = \"100MiB\"\n";
    for (name, i) in [("a", 10), ("b", 11), ("c", 12)] {
        config += &(net.http_host(name, i, &[]) + "min_warm = \"0s\"\nmemory = \"40MiB\"\n");
    }
    let agent = net.start_agent(&config, &[]);

    assert_eq!(request(client, &net, 10).0, "hello from a\n");
    assert_eq!(request(client, &net, 11).0, "hello from b\n");
    let status = agent.status().unwrap();
    assert_eq!(status["budget"]["memory_bytes"], 80 * MIB, "{status}");
    assert_eq!(status["budget"]["memory_limit"], 100 * MIB, "{status}");
    assert_eq!(
        docker_memory_limit(&net.container("a")),
        Some(40 * MIB),
        "the limit reached the engine"
    );

    // 80 MiB + 40 MiB > 100 MiB: a, the least recently used, makes room.
    let (body, retransmits) = request(client, &net, 12);
    assert_eq!(body, "hello from c\n");
    // None beyond what the wait forces (eviction, then the engine's create and start).
    let forced = agent.syn_retransmissions_forced("c");
    assert!(
        retransmits <= forced,
        "{retransmits} SYN retransmissions, {forced} forced by c's wake: {}",
        agent.log_text()
    );
    assert_eq!(
        container_status(&net.container("a")).as_deref(),
        Some("exited"),
        "a was evicted: {}",
        agent.log_text()
    );
    assert_eq!(
        container_status(&net.container("b")).as_deref(),
        Some("running")
    );
    let status = agent.status().unwrap();
    let used = status["budget"]["memory_bytes"].as_u64().unwrap();
    assert!(used <= 100 * MIB, "{used} bytes over the budget: {status}");
    assert_eq!(used, 80 * MIB, "b and c: {status}");
    assert_eq!(agent.host("c").unwrap()["weight_bytes"], 40 * MIB);
    assert_eq!(
        net.scrape()
            .sum("imag_evictions_total", &[("reason", "memory")]),
        1.0
    );
}

/// The container's memory limit as the engine has it (`HostConfig.Memory`).
fn docker_memory_limit(container: &str) -> Option<u64> {
    imag_testkit::docker::inspect(container, "{{.HostConfig.Memory}}")?
        .parse()
        .ok()
}

#[test]
fn a_sweep_of_fifty_cold_addresses_from_one_client_starts_exactly_its_wake_rate() {
    const HOSTS: u8 = 50;
    const BURST: u8 = 5;
    let net = TestNet::new(agent_binary!());
    let client = net.client();
    let mut config = net.network_toml() + "\n[limits]\nwakes_per_source = \"5/min\"\n";
    for i in 0..HOSTS {
        config += &net.http_host(&format!("h{i}"), 10 + i, &[]);
    }
    let agent = net.start_agent(&config, &[]);

    // Every address at once, as a scanner would: one connection attempt each, on its own
    // thread (spawned inside the client namespace, so they are in it too).
    let results = client
        .run(|| {
            std::thread::scope(|scope| {
                let attempts: Vec<_> = (0..HOSTS)
                    .map(|i| {
                        let addr = net.http_addr(10 + i);
                        scope.spawn(move || {
                            let start = Instant::now();
                            let result = TcpStream::connect_timeout(&addr, WAKE);
                            (result.map(drop).map_err(|e| e.kind()), start.elapsed())
                        })
                    })
                    .collect();
                attempts
                    .into_iter()
                    .map(|a| a.join().unwrap())
                    .collect::<Vec<_>>()
            })
        })
        .unwrap();

    let answered = results.iter().filter(|(r, _)| r.is_ok()).count();
    let refused: Vec<Duration> = results
        .iter()
        .filter(|(r, _)| *r == Err(ErrorKind::ConnectionRefused))
        .map(|(_, took)| *took)
        .collect();
    assert_eq!(
        (answered, refused.len()),
        (usize::from(BURST), usize::from(HOSTS - BURST)),
        "{results:?}\n{}",
        agent.log_text()
    );
    let slowest = refused.iter().max().unwrap();
    assert!(
        *slowest < Duration::from_millis(500),
        "refused within {slowest:?}, expected fast (before any SYN retransmission)"
    );
    assert_eq!(
        net.containers().len(),
        usize::from(BURST),
        "one container per admitted wake"
    );
    let metrics = net.scrape();
    // One SYN per refused address: each is refused once, and a refused client does not retry.
    assert_eq!(
        metrics.sum("imag_wakes_refused_total", &[("reason", "rate")]),
        f64::from(HOSTS - BURST)
    );
    assert_eq!(
        metrics.sum("imag_wakes_total", &[("result", "ok")]),
        f64::from(BURST),
        "{}",
        agent.log_text()
    );
}

#[test]
fn validate_places_bad_limits() {
    let file = std::env::temp_dir().join(format!("imag-budget-{}.toml", std::process::id()));
    std::fs::write(
        &file,
        "[network]\nsubnet = \"10.77.0.0/24\"\n\n[limits]\nmax_warm = 0\n\
         memory_budget = \"8 gigs\"\nwakes_per_source = \"10 a minute\"\n",
    )
    .unwrap();
    let mut perms = std::fs::metadata(&file).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o644);
    std::fs::set_permissions(&file, perms).unwrap();
    let out = Command::new(agent_binary!())
        .args(["validate", "--config"])
        .arg(&file)
        .uid(65534)
        .gid(65534)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    let _ = std::fs::remove_file(&file);
    assert!(!out.status.success());
    let path = file.display();
    for expected in [
        format!("{path}:5:12: max_warm must be at least 1"),
        format!("{path}:6:17: memory_budget \"8 gigs\" is not a size"),
        format!("{path}:7:20: wakes_per_source \"10 a minute\" is not a rate"),
    ] {
        assert!(err.contains(&expected), "expected {expected:?} in:\n{err}");
    }
}
