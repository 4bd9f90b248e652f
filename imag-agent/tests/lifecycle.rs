//! The lifecycle of a host, for real: sleep from datapath activity, the paused standby tier,
//! packets racing a sleep, readiness by event, and a datapath that outlives the agent.

#![allow(
    clippy::float_cmp,
    reason = "metrics are whole counts carried in f64: equality is exact"
)]

use std::{
    io::{BufRead, BufReader, Write},
    net::TcpStream,
    path::Path,
    process::Command,
    time::Duration,
};

use imag_testkit::{
    ClientNs, TestNet, agent_binary, clients,
    docker::{self, container_status},
    netns::holding_program_attached,
    wait_until,
};

const WAKE: Duration = Duration::from_secs(30);

/// A `[[host]]` running the example HTTP service, with lifecycle keys appended.
fn host(net: &TestNet, name: &str, i: u8, args: &[&str], extra: &str) -> String {
    net.http_host(name, i, args) + extra
}

/// One HTTP request on a fresh connection from the client namespace, and the client's SYN
/// retransmissions so far.
fn request(client: &ClientNs, net: &TestNet, i: u8) -> (String, u64) {
    client
        .run(|| {
            let answer = clients::http_get(net.http_addr(i), WAKE);
            (
                answer,
                clients::net_counter("TcpExt", "TCPSynRetrans").unwrap(),
            )
        })
        .map(|(answer, retrans)| (answer.expect("the request is answered").0, retrans))
        .unwrap()
}

/// Successful wakes so far (of any host, with these labels), as `/metrics` counts them.
fn wakes(net: &TestNet, labels: &[(&str, &str)]) -> f64 {
    let mut labels = labels.to_vec();
    labels.push(("result", "ok"));
    net.scrape().sum("imag_wakes_total", &labels)
}

#[test]
fn an_idle_host_sleeps_and_its_next_packet_wakes_it() {
    let net = TestNet::new(agent_binary!());
    let client = net.client();
    let config = net.network_toml()
        + &host(
            &net,
            "web",
            10,
            &[],
            "idle_timeout = \"1s\"\nmin_warm = \"0s\"\nsleep = \"stop\"\n",
        );
    let agent = net.start_agent(&config, &[]);
    let container = net.container("web");

    assert_eq!(request(client, &net, 10), ("hello from web\n".into(), 0));
    wait_until("the idle host is stopped", Duration::from_secs(15), || {
        container_status(&container).as_deref() == Some("exited")
    });
    wait_until(
        "the agent reports web asleep, stopped",
        Duration::from_secs(5),
        || {
            let web = agent.host("web").unwrap();
            web["state"] == "asleep" && web["tier"] == "stopped"
        },
    );

    let (body, retransmits) = request(client, &net, 10);
    assert_eq!(body, "hello from web\n");
    assert_eq!(
        retransmits, 0,
        "the sleeping host was woken by the client's first SYN"
    );
    assert_eq!(container_status(&container).as_deref(), Some("running"));
    assert_eq!(wakes(&net, &[]), 2.0, "{}", agent.log_text());
    assert_eq!(
        wakes(&net, &[("from", "stopped")]),
        1.0,
        "{}",
        agent.log_text()
    );
    assert_eq!(agent.host("web").unwrap()["last_wake_from"], "stopped");
}

#[test]
fn a_quiet_open_connection_keeps_its_host_awake() {
    let net = TestNet::new(agent_binary!());
    let client = net.client();
    let config = net.network_toml()
        + &host(
            &net,
            "db",
            10,
            &[],
            "idle_timeout = \"1s\"\nmin_warm = \"0s\"\n",
        );
    let _agent = net.start_agent(&config, &[]);
    let container = net.container("db");
    let addr = net.http_addr(10);

    client
        .run(|| {
            // A keep-alive connection: one request, then silence for four idle timeouts.
            let mut conn = TcpStream::connect_timeout(&addr, WAKE).unwrap();
            write!(conn, "GET / HTTP/1.1\r\nHost: db\r\n\r\n").unwrap();
            let mut reader = BufReader::new(conn.try_clone().unwrap());
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            assert!(line.starts_with("HTTP/1.1 200"), "{line}");
            std::thread::sleep(Duration::from_secs(4));
            assert_eq!(
                container_status(&container).as_deref(),
                Some("running"),
                "an open connection keeps the host awake"
            );
            drop(reader);
            drop(conn);
        })
        .unwrap();
    wait_until(
        "the host sleeps once the connection is closed",
        Duration::from_secs(15),
        || container_status(&container).as_deref() == Some("exited"),
    );
}

#[test]
fn packets_sent_while_a_host_goes_to_sleep_are_all_answered() {
    let net = TestNet::new(agent_binary!());
    let client = net.client();
    // The service takes a second to stop: a wide window in which packets arrive mid-sleep.
    let config = net.network_toml()
        + &host(
            &net,
            "web",
            10,
            &["--stop-delay-ms", "1000"],
            "idle_timeout = \"1s\"\nmin_warm = \"0s\"\nsleep = \"stop\"\n",
        );
    let mut agent = net.start_agent(&config, &[]);

    assert_eq!(request(client, &net, 10).0, "hello from web\n");
    // A log line, not the status: the status says `sleeping` already while the agent makes sure
    // the host is still idle (a packet then cancels the sleep); this line marks the point
    // after which the engine is stopping the container.
    agent
        .wait_for_line("going to sleep host=web", Duration::from_secs(15))
        .unwrap();
    // The container is still stopping: these are held, and the host wakes again right after.
    let answers = client
        .run(|| {
            (0..3)
                .map(|_| clients::http_get(net.http_addr(10), WAKE).map(|a| a.0))
                .collect::<Vec<_>>()
        })
        .unwrap();
    // (The stop takes a second and the restart a quarter more, so the client's SYN timer may
    // fire meanwhile: a retransmitted SYN is held and delivered like the first.)
    for answer in answers {
        assert_eq!(
            answer.expect("answered, not reset or lost"),
            "hello from web\n"
        );
    }
    assert_eq!(
        wakes(&net, &[]),
        2.0,
        "woken again right after the sleep:\n{}",
        agent.log_text()
    );
    assert_eq!(net.containers().len(), 1, "never two containers");
}

#[test]
fn a_paused_host_wakes_in_milliseconds_and_the_engine_catches_up() {
    let net = TestNet::new(agent_binary!());
    let client = net.client();
    let config = net.network_toml()
        + &host(
            &net,
            "web",
            10,
            &[],
            // An idle timeout longer than the settle's second of quiet: a host idle sooner
            // sleeps again instead (its refreeze makes the engine's "paused" true at no cost).
            "idle_timeout = \"60s\"\nmin_warm = \"0s\"\nsleep = \"pause\"\n",
        );
    let agent = net.start_agent(&config, &[]);
    let container = net.container("web");

    assert_eq!(request(client, &net, 10).0, "hello from web\n");
    agent.command(&["sleep", "web", "--tier", "pause"]).unwrap();
    wait_until("the host is paused", Duration::from_secs(15), || {
        container_status(&container).as_deref() == Some("paused")
    });
    let started_at = docker::inspect(&container, "{{.State.StartedAt}}");

    let (body, retransmits) = request(client, &net, 10);
    assert_eq!(body, "hello from web\n");
    assert_eq!(retransmits, 0);
    assert_eq!(
        wakes(&net, &[("from", "paused")]),
        1.0,
        "woken from the paused tier:\n{}",
        agent.log_text()
    );
    assert_eq!(
        docker::inspect(&container, "{{.State.StartedAt}}"),
        started_at,
        "unpaused, not restarted"
    );
    // The fast wake thawed the cgroup itself, behind the engine's back (the engine still says
    // `paused`); once the host is quiet the agent settles the engine's view, and only that
    // makes the engine report the container running.
    wait_until(
        "the engine reports the container running",
        Duration::from_secs(10),
        || container_status(&container).as_deref() == Some("running"),
    );
}

#[test]
fn readiness_is_released_by_the_listen_event() {
    let net = TestNet::new(agent_binary!());
    let client = net.client();
    // The service binds after 300 ms; the fallback poll is 10 s, so only the event can release
    // the held SYN before the client would retransmit it.
    let config = net.network_toml()
        + &host(
            &net,
            "slow",
            10,
            &["--delay-ms", "300"],
            "ready_poll = \"10s\"\n",
        );
    let agent = net.start_agent(&config, &[]);
    let (body, retransmits) = request(client, &net, 10);
    assert_eq!(body, "hello from slow\n");
    assert_eq!(retransmits, 0);
    let slow = agent.host("slow").unwrap();
    assert_eq!(slow["last_ready_by"], "event", "{slow}");
}

#[test]
fn kill_9_leaves_warm_traffic_flowing_and_the_next_agent_adopts_it() {
    let net = TestNet::new(agent_binary!());
    let client = net.client();
    let config = net.network_toml() + &host(&net, "web", 10, &[], "");
    let agent = net.start_agent(&config, &[]);
    assert_eq!(request(client, &net, 10).0, "hello from web\n");
    let container = net.container("web");
    let started_at = docker::inspect(&container, "{{.State.StartedAt}}");

    // One keep-alive connection, in the client namespace, streaming requests across the agent's
    // death and rebirth; this thread (in the host's namespace) kills and restarts the agent.
    let addr = net.http_addr(10);
    let (orders, inbox) = std::sync::mpsc::channel::<usize>();
    let (done, replies) = std::sync::mpsc::channel::<Result<(), String>>();
    let streamer = std::thread::spawn({
        let client_ns = client.name.clone();
        move || {
            imag_testkit::netns::enter_netns(&client_ns).unwrap();
            let mut conn = clients::HttpConnection::open(addr, Duration::from_secs(5)).unwrap();
            for n in inbox {
                let result = (0..n).try_for_each(|_| {
                    let body = conn.get().map_err(|e| e.to_string())?;
                    std::thread::sleep(Duration::from_millis(50));
                    (body == "hello from web\n").then_some(()).ok_or(body)
                });
                done.send(result).unwrap();
            }
        }
    });
    let exchange = |n: usize, when: &str| {
        orders.send(n).unwrap();
        replies
            .recv()
            .unwrap()
            .unwrap_or_else(|e| panic!("the stream broke {when}: {e}"));
    };
    exchange(5, "before the kill");
    agent.kill9();
    exchange(10, "while no agent ran");
    let restarted = net.start_agent(&config, &[]);
    let status = restarted.status().unwrap();
    assert_eq!(status["adopted"], true, "{status}");
    assert_eq!(status["hosts"][0]["state"], "warm", "{status}");
    exchange(10, "after the restart");
    drop(orders);
    streamer.join().unwrap();
    assert_eq!(
        docker::inspect(&container, "{{.State.StartedAt}}"),
        started_at,
        "the container was never restarted"
    );
}

#[test]
fn detach_leaves_no_program_pin_rule_or_network_behind() {
    let net = TestNet::new(agent_binary!());
    let client = net.client();
    let config = net.network_toml() + &host(&net, "web", 10, &[], "");
    let mut agent = net.start_agent(&config, &["--on-exit", "keep"]);
    assert_eq!(request(client, &net, 10).0, "hello from web\n");
    agent.stop().unwrap();

    let pins = format!("/sys/fs/bpf/imag/{}", net.network());
    assert!(
        Path::new(&pins).exists(),
        "--on-exit keep leaves the datapath pinned"
    );
    let attached = holding_program_attached;
    assert!(attached(&net.host_if()), "and attached");
    assert_eq!(
        request(client, &net, 10).0,
        "hello from web\n",
        "warm traffic keeps flowing"
    );

    let out = agent.run(&["detach"]).unwrap();
    assert!(
        out.status.success(),
        "detach: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!Path::new(&pins).exists(), "no pins left");
    assert!(
        !attached(&net.host_if()),
        "no XDP program on the attach interface"
    );
    assert!(
        !Path::new(&format!("/sys/class/net/{}", net.network())).exists(),
        "no bridge"
    );
    let rules = Command::new("iptables")
        .args(["-S", "DOCKER-USER"])
        .output()
        .unwrap();
    assert!(
        !String::from_utf8_lossy(&rules.stdout).contains(&format!("imag:{}", net.network())),
        "no forwarding rule"
    );
    assert!(!docker::network_exists(net.network()), "no Docker network");
    assert!(net.containers().is_empty(), "no containers");
}

#[test]
fn sigterm_delivers_or_refuses_every_held_packet() {
    let net = TestNet::new(agent_binary!());
    let client = net.client();
    let config = net.network_toml()
        + &host(&net, "quick", 10, &["--delay-ms", "1500"], "")
        + &host(
            &net,
            "never",
            11,
            &["--delay-ms", "60000"],
            "wake_timeout = \"120s\"\n",
        );
    let mut agent = net.start_agent(&config, &[]);

    let (quick, never) = client
        .run(|| {
            std::thread::scope(|scope| {
                let quick = scope.spawn(|| clients::http_get(net.http_addr(10), WAKE));
                let never = scope.spawn(|| TcpStream::connect_timeout(&net.http_addr(11), WAKE));
                std::thread::sleep(Duration::from_millis(500));
                let status = agent.stop().unwrap();
                assert!(status.success());
                (quick.join().unwrap(), never.join().unwrap())
            })
        })
        .unwrap();
    assert_eq!(
        quick
            .expect("a wake under way at SIGTERM completes and its packet is delivered")
            .0,
        "hello from quick\n"
    );
    let err = never.expect_err("a wake that cannot finish in the grace time is refused");
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused, "{err}");
}

#[test]
fn health_checks_from_ignored_peers_do_not_keep_a_host_awake() {
    let net = TestNet::new(agent_binary!());
    let client = net.client();
    let checker = client.client_addr().to_string();
    let config = net.network_toml()
        + &host(
            &net,
            "web",
            10,
            &[],
            &format!("idle_timeout = \"1s\"\nmin_warm = \"0s\"\nidle_ignore = [\"{checker}\"]\n"),
        );
    let _agent = net.start_agent(&config, &[]);
    let container = net.container("web");
    // A health checker polling every 300 ms, from an ignored address.
    client
        .run(|| {
            let mut conn = clients::HttpConnection::open(net.http_addr(10), WAKE).unwrap();
            let deadline = std::time::Instant::now() + Duration::from_secs(15);
            while container_status(&container).as_deref() == Some("running") {
                assert!(
                    std::time::Instant::now() < deadline,
                    "the checked host never slept"
                );
                // The connection dies with the container; that is the point.
                if conn.get().is_err() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(300));
            }
        })
        .unwrap();
    wait_until(
        "the host sleeps despite its health checks",
        Duration::from_secs(15),
        || container_status(&container).as_deref() == Some("exited"),
    );
}

#[test]
fn a_sleeping_hosts_neighbours_are_pointed_back_at_the_bridge() {
    let net = TestNet::new(agent_binary!());
    let client = net.client();
    let b = net.host_addr(11).to_string() + ":8080";
    let config = net.network_toml()
        + &host(&net, "a", 10, &["--backend", &b], "")
        + &host(
            &net,
            "b",
            11,
            &[],
            "idle_timeout = \"1s\"\nmin_warm = \"0s\"\n",
        );
    let _agent = net.start_agent(&config, &[]);
    let a_arp = || {
        let pid = docker::inspect(&net.container("a"), "{{.State.Pid}}").unwrap();
        let table = std::fs::read_to_string(format!("/proc/{pid}/net/arp")).unwrap();
        table
            .lines()
            .find(|l| l.starts_with(&format!("{} ", net.host_addr(11))))
            .map(str::to_string)
            .unwrap_or_default()
    };
    let b_mac = || {
        docker::inspect(
            &net.container("b"),
            &format!(
                "{{{{(index .NetworkSettings.Networks \"{}\").MacAddress}}}}",
                net.network()
            ),
        )
        .unwrap()
    };
    let bridge_mac =
        std::fs::read_to_string(format!("/sys/class/net/{}/address", net.network())).unwrap();

    assert_eq!(request(client, &net, 10).0, "a via backend: hello from b\n");
    let warm_mac = b_mac();
    wait_until(
        "a uses b's own MAC while b is warm",
        Duration::from_secs(5),
        || a_arp().contains(&warm_mac),
    );
    wait_until("b sleeps", Duration::from_secs(15), || {
        container_status(&net.container("b")).as_deref() == Some("exited")
    });
    wait_until(
        "a is pointed back at the bridge",
        Duration::from_secs(5),
        || a_arp().contains(bridge_mac.trim()),
    );
    assert_eq!(
        request(client, &net, 10).0,
        "a via backend: hello from b\n",
        "b wakes again through the bridge"
    );
}

const MIB: u64 = 1 << 20;

/// Bytes charged to a container's memory cgroup.
fn cgroup_memory(container: &str) -> u64 {
    let id = docker::inspect(container, "{{.Id}}").expect("the container exists");
    docker::cgroup_memory_bytes(&id).expect("the container's memory cgroup")
}

/// Waits until the agent has paged a host out (`imag_page_outs_total{result="done"}`).
fn wait_paged_out(net: &TestNet) {
    wait_until(
        "the paused host is paged out",
        Duration::from_secs(30),
        || {
            net.scrape()
                .sum("imag_page_outs_total", &[("result", "done")])
                >= 1.0
        },
    );
}

/// A host whose memory is paged out to swap as soon as it is paused, 1 s after its last packet,
/// with these `env` entries (its ballast).
fn paged_host(net: &TestNet, i: u8, env: &str) -> String {
    host(
        net,
        "web",
        i,
        &[],
        &format!(
            "idle_timeout = \"1s\"\nmin_warm = \"0s\"\nsleep = \"pause\"\nswap_after = \"0s\"\n\
             env = {{ {env} }}\n"
        ),
    )
}

#[test]
fn a_paused_host_is_paged_out_to_swap_and_its_next_packet_wakes_it() {
    let net = TestNet::new(agent_binary!());
    let client = net.client();
    // 64 MiB that every request reads (BALLAST_TOUCH): paged out, they must come back.
    let config =
        net.network_toml() + &paged_host(&net, 12, "BALLAST_MB = \"64\", BALLAST_TOUCH = \"1\"");
    let agent = net.start_agent(&config, &[]);
    let container = net.container("web");

    assert_eq!(request(client, &net, 12).0, "hello from web\n");
    let resident = cgroup_memory(&container);
    assert!(
        resident > 64 * MIB,
        "the ballast is resident: {resident} bytes"
    );
    wait_paged_out(&net);
    assert_eq!(container_status(&container).as_deref(), Some("paused"));
    let paged = cgroup_memory(&container);
    assert!(
        paged < 16 * MIB,
        "paged out: {paged} bytes resident (was {resident})\n{}",
        agent.log_text()
    );
    let moved = agent.host("web").unwrap()["paged_out_bytes"]
        .as_u64()
        .unwrap_or(0);
    assert!(moved > 48 * MIB, "status says {moved} bytes paged out");
    assert!(net.scrape().sum("imag_paged_out_bytes_total", &[]) > (48 * MIB) as f64);

    // The next request thaws it (a wake from the paused tier) and reads its whole ballast back.
    let (body, retransmits) = request(client, &net, 12);
    assert_eq!(body, "hello from web\n");
    assert_eq!(retransmits, 0);
    assert_eq!(wakes(&net, &[("from", "paused")]), 1.0);
    let back = cgroup_memory(&container);
    assert!(
        back > 64 * MIB,
        "the ballast is back in memory: {back} bytes"
    );
    assert_eq!(
        agent.host("web").unwrap()["paged_out_bytes"].as_u64(),
        None,
        "warm again: nothing paged out"
    );
    assert_eq!(
        net.scrape()
            .sum("imag_page_outs_total", &[("result", "failed")]),
        0.0
    );
}

#[test]
fn a_wake_during_a_page_out_stops_it() {
    let net = TestNet::new(agent_binary!());
    let client = net.client();
    // 512 MiB take the kernel seconds to page out: the wake comes in the middle of it.
    let config = net.network_toml() + &paged_host(&net, 13, "BALLAST_MB = \"512\"");
    let agent = net.start_agent(&config, &[]);
    let container = net.container("web");

    let (body, retransmits_before) = request(client, &net, 13);
    assert_eq!(body, "hello from web\n");
    let before = cgroup_memory(&container);
    wait_until("the idle host is paused", Duration::from_secs(15), || {
        container_status(&container).as_deref() == Some("paused")
    });
    wait_until("its page-out is under way", Duration::from_secs(5), || {
        cgroup_memory(&container) + 32 * MIB < before
    });
    let (body, retransmits) = request(client, &net, 13);
    assert_eq!(body, "hello from web\n");
    assert_eq!(retransmits, retransmits_before, "the wake is a thaw");
    // Uninterrupted, the page-out would go on until the whole ballast is in swap. An open
    // connection keeps the host warm meanwhile (its idle timeout is 1 s).
    let resident = client
        .run(|| {
            let _open = TcpStream::connect_timeout(&net.http_addr(13), WAKE).expect("connects");
            std::thread::sleep(Duration::from_secs(3));
            cgroup_memory(&container)
        })
        .unwrap();
    assert!(
        resident > 256 * MIB,
        "the woken host keeps its memory: {resident} bytes resident\n{}",
        agent.log_text()
    );
    assert_eq!(
        net.scrape()
            .sum("imag_page_outs_total", &[("result", "done")]),
        0.0
    );
}

/// A paged-out host's memory is read back as it wakes (`swap_prefetch`, on by default), beside
/// the process rather than as the process touches it: these requests never touch the ballast,
/// and still it comes back. With `swap_prefetch = false` it stays in swap.
#[test]
fn a_paged_out_host_s_memory_is_read_back_as_it_wakes() {
    for prefetch in [true, false] {
        let net = TestNet::new(agent_binary!());
        let client = net.client();
        let extra = if prefetch {
            ""
        } else {
            "swap_prefetch = false\n"
        };
        let config = net.network_toml()
            + &host(
                &net,
                "web",
                12,
                &[],
                &format!(
                    "idle_timeout = \"1m\"\nmin_warm = \"0s\"\nsleep = \"pause\"\n\
                     swap_after = \"0s\"\nenv = {{ BALLAST_MB = \"64\" }}\n{extra}"
                ),
            );
        let agent = net.start_agent(&config, &[]);
        let container = net.container("web");
        assert_eq!(request(client, &net, 12).0, "hello from web\n");
        agent.command(&["sleep", "web"]).unwrap();
        wait_paged_out(&net);
        let paged = cgroup_memory(&container);
        assert!(paged < 16 * MIB, "paged out: {paged} bytes resident");
        assert_eq!(request(client, &net, 12).0, "hello from web\n");
        if prefetch {
            wait_until(
                "the ballast is read back though nothing touched it",
                Duration::from_secs(20),
                || cgroup_memory(&container) > 64 * MIB,
            );
        } else {
            std::thread::sleep(Duration::from_secs(2));
            let back = cgroup_memory(&container);
            assert!(
                back < 32 * MIB,
                "swap_prefetch = false: only what the request touched comes back, {back} bytes"
            );
        }
    }
}
