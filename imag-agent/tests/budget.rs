//! The budget of warm hosts (`[limits]`), for real: least-recently-used eviction before a wake,
//! a wake refused at once when nothing may be evicted, and `validate` placing bad limits.

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
    ClientNs, TestNet, agent_binary, clients, docker::container_status, wait_until,
};

const WAKE: Duration = Duration::from_secs(30);

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
    assert_eq!(
        retransmits,
        0,
        "c woke from its first SYN after the eviction: {}",
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
