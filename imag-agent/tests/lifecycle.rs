//! The lifecycle of a host, for real: sleep from datapath activity, the paused standby tier,
//! packets racing a sleep, readiness by event, and a datapath that outlives the agent.

mod common;

use std::{
    io::{BufRead, BufReader, Write},
    net::TcpStream,
    path::Path,
    process::Command,
    time::Duration,
};

use common::{Agent, IMAGE, Slot, container_status, docker_inspect, http_addr, netkit, wait_until};

const WAKE: Duration = Duration::from_secs(30);

/// A `[[host]]` running the example HTTP service, with lifecycle keys appended.
fn host(slot: &Slot, name: &str, i: u8, args: &[&str], extra: &str) -> String {
    slot.http_host(name, i, args) + extra
}

/// One HTTP request on a fresh connection from the client namespace, and the client's SYN
/// retransmissions so far.
fn request(client: &netkit::ClientNs, slot: &Slot, i: u8) -> (String, u64) {
    client
        .run(|| {
            let answer = netkit::http_get(http_addr(slot.host_addr(i)), WAKE);
            (
                answer,
                netkit::net_counter("TcpExt", "TCPSynRetrans").unwrap(),
            )
        })
        .map(|(answer, retrans)| (answer.expect("the request is answered").0, retrans))
        .unwrap()
}

#[test]
fn an_idle_host_sleeps_and_its_next_packet_wakes_it() {
    common::require_environment();
    let slot = Slot::new(20);
    let client = slot.client();
    let config = slot.network_toml()
        + &host(
            &slot,
            "web",
            10,
            &[],
            "idle_timeout = \"1s\"\nmin_warm = \"0s\"\nsleep = \"stop\"\n",
        );
    let mut agent = Agent::start(&slot, &config, &[&slot.host_if()]);
    let container = slot.container("web");

    assert_eq!(request(&client, &slot, 10), ("hello from web\n".into(), 0));
    wait_until("the idle host is stopped", Duration::from_secs(15), || {
        container_status(&container).as_deref() == Some("exited")
    });
    agent.wait_for_log("asleep host=web tier=\"stopped\"", Duration::from_secs(5));

    let (body, retransmits) = request(&client, &slot, 10);
    assert_eq!(body, "hello from web\n");
    assert_eq!(
        retransmits, 0,
        "the sleeping host was woken by the client's first SYN"
    );
    assert_eq!(container_status(&container).as_deref(), Some("running"));
    let wakes = agent.lines_with(" woke ");
    assert_eq!(wakes.len(), 2, "{}", agent.log_text());
    assert!(wakes[1].contains("from=\"stopped\""), "{}", wakes[1]);
}

#[test]
fn a_quiet_open_connection_keeps_its_host_awake() {
    common::require_environment();
    let slot = Slot::new(21);
    let client = slot.client();
    let config = slot.network_toml()
        + &host(
            &slot,
            "db",
            10,
            &[],
            "idle_timeout = \"1s\"\nmin_warm = \"0s\"\n",
        );
    let _agent = Agent::start(&slot, &config, &[&slot.host_if()]);
    let container = slot.container("db");
    let addr = http_addr(slot.host_addr(10));

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
    common::require_environment();
    let slot = Slot::new(22);
    let client = slot.client();
    // The service takes a second to stop: a wide window in which packets arrive mid-sleep.
    let config = slot.network_toml()
        + &host(
            &slot,
            "web",
            10,
            &["--stop-delay-ms", "1000"],
            "idle_timeout = \"1s\"\nmin_warm = \"0s\"\nsleep = \"stop\"\n",
        );
    let mut agent = Agent::start(&slot, &config, &[&slot.host_if()]);

    assert_eq!(request(&client, &slot, 10).0, "hello from web\n");
    agent.wait_for_log("going to sleep host=web", Duration::from_secs(15));
    // The container is still stopping: these are held, and the host wakes again right after.
    let answers = client
        .run(|| {
            (0..3)
                .map(|_| netkit::http_get(http_addr(slot.host_addr(10)), WAKE).map(|a| a.0))
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
    let wakes = agent.lines_with(" woke ");
    assert_eq!(
        wakes.len(),
        2,
        "woken again right after the sleep:\n{}",
        agent.log_text()
    );
    assert_eq!(
        common::containers_of(&slot).len(),
        1,
        "never two containers"
    );
}

#[test]
fn a_paused_host_wakes_in_milliseconds_and_the_engine_catches_up() {
    common::require_environment();
    let slot = Slot::new(23);
    let client = slot.client();
    let config = slot.network_toml()
        + &host(
            &slot,
            "web",
            10,
            &[],
            "idle_timeout = \"1s\"\nmin_warm = \"0s\"\nsleep = \"pause\"\n",
        );
    let mut agent = Agent::start(&slot, &config, &[&slot.host_if()]);
    let container = slot.container("web");

    assert_eq!(request(&client, &slot, 10).0, "hello from web\n");
    wait_until("the idle host is paused", Duration::from_secs(15), || {
        container_status(&container).as_deref() == Some("paused")
    });
    let started_at = docker_inspect(&container, "{{.State.StartedAt}}");

    let (body, retransmits) = request(&client, &slot, 10);
    assert_eq!(body, "hello from web\n");
    assert_eq!(retransmits, 0);
    let wake = agent.wait_for_log("from=\"paused\"", Duration::from_secs(5));
    assert!(wake.contains(" woke "), "{wake}");
    assert_eq!(
        docker_inspect(&container, "{{.State.StartedAt}}"),
        started_at,
        "unpaused, not restarted"
    );
    // The fast wake thawed the cgroup itself; once the host is quiet the engine is told.
    wait_until(
        "the engine reports the container running",
        Duration::from_secs(10),
        || {
            matches!(
                container_status(&container).as_deref(),
                Some("running") | Some("paused")
            ) && !agent.lines_with("the engine's view is settled").is_empty()
        },
    );
}

#[test]
fn readiness_is_released_by_the_listen_event() {
    common::require_environment();
    let slot = Slot::new(24);
    let client = slot.client();
    // The service binds after 300 ms; the fallback poll is 10 s, so only the event can release
    // the held SYN before the client would retransmit it.
    let config = slot.network_toml()
        + &host(
            &slot,
            "slow",
            10,
            &["--delay-ms", "300"],
            "ready_poll = \"10s\"\n",
        );
    let mut agent = Agent::start(&slot, &config, &[&slot.host_if()]);
    let (body, retransmits) = request(&client, &slot, 10);
    assert_eq!(body, "hello from slow\n");
    assert_eq!(retransmits, 0);
    let wake = agent.wait_for_log(" woke ", Duration::from_secs(5));
    assert!(wake.contains("ready_by=\"event\""), "{wake}");
}

#[test]
fn kill_9_leaves_warm_traffic_flowing_and_the_next_agent_adopts_it() {
    common::require_environment();
    let slot = Slot::new(25);
    let client = slot.client();
    let config = slot.network_toml() + &host(&slot, "web", 10, &[], "");
    let agent = Agent::start(&slot, &config, &[&slot.host_if()]);
    assert_eq!(request(&client, &slot, 10).0, "hello from web\n");
    let container = slot.container("web");
    let started_at = docker_inspect(&container, "{{.State.StartedAt}}");

    // One keep-alive connection, in the client namespace, streaming requests across the agent's
    // death and rebirth; this thread (in the host's namespace) kills and restarts the agent.
    let addr = http_addr(slot.host_addr(10));
    let (orders, inbox) = std::sync::mpsc::channel::<usize>();
    let (done, replies) = std::sync::mpsc::channel::<Result<(), String>>();
    let streamer = std::thread::spawn({
        let client_ns = client.name.clone();
        move || {
            netkit::enter_netns(&client_ns).unwrap();
            let mut conn = netkit::HttpConnection::open(addr, Duration::from_secs(5)).unwrap();
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
    let mut restarted = Agent::start_with(&slot, &config, &[&slot.host_if()], &[]);
    let attached = restarted.wait_for_log("imag is attached", Duration::from_secs(5));
    assert!(
        attached.contains("adopted=true") && attached.contains("warm=1"),
        "{attached}"
    );
    exchange(10, "after the restart");
    drop(orders);
    streamer.join().unwrap();
    assert_eq!(
        docker_inspect(&container, "{{.State.StartedAt}}"),
        started_at,
        "the container was never restarted"
    );
}

#[test]
fn detach_leaves_no_program_pin_rule_or_network_behind() {
    common::require_environment();
    let slot = Slot::new(26);
    let client = slot.client();
    let config = slot.network_toml() + &host(&slot, "web", 10, &[], "");
    slot.clean_docker();
    let mut agent = Agent::start_with(&slot, &config, &[&slot.host_if()], &["--on-exit", "keep"]);
    assert_eq!(request(&client, &slot, 10).0, "hello from web\n");
    agent.stop();

    let pins = format!("/sys/fs/bpf/imag/{}", slot.network());
    assert!(
        Path::new(&pins).exists(),
        "--on-exit keep leaves the datapath pinned"
    );
    let attached = common::holding_program_attached;
    assert!(attached(&slot.host_if()), "and attached");
    assert_eq!(
        request(&client, &slot, 10).0,
        "hello from web\n",
        "warm traffic keeps flowing"
    );

    let out = agent.detach_command();
    assert!(
        out.status.success(),
        "detach: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!Path::new(&pins).exists(), "no pins left");
    assert!(
        !attached(&slot.host_if()),
        "no XDP program on the attach interface"
    );
    assert!(
        !Path::new(&format!("/sys/class/net/{}", slot.network())).exists(),
        "no bridge"
    );
    let rules = Command::new("iptables")
        .args(["-S", "DOCKER-USER"])
        .output()
        .unwrap();
    assert!(
        !String::from_utf8_lossy(&rules.stdout).contains(&format!("imag:{}", slot.network())),
        "no forwarding rule"
    );
    let network = Command::new("docker")
        .args(["network", "inspect", &slot.network()])
        .output()
        .unwrap();
    assert!(!network.status.success(), "no Docker network");
    assert!(common::containers_of(&slot).is_empty(), "no containers");
    let _ = IMAGE;
}

#[test]
fn sigterm_delivers_or_refuses_every_held_packet() {
    common::require_environment();
    let slot = Slot::new(27);
    let client = slot.client();
    let config = slot.network_toml()
        + &host(&slot, "quick", 10, &["--delay-ms", "1500"], "")
        + &host(
            &slot,
            "never",
            11,
            &["--delay-ms", "60000"],
            "wake_timeout = \"120s\"\n",
        );
    let mut agent = Agent::start(&slot, &config, &[&slot.host_if()]);

    let (quick, never) = client
        .run(|| {
            std::thread::scope(|scope| {
                let quick = scope.spawn(|| netkit::http_get(http_addr(slot.host_addr(10)), WAKE));
                let never = scope
                    .spawn(|| TcpStream::connect_timeout(&http_addr(slot.host_addr(11)), WAKE));
                std::thread::sleep(Duration::from_millis(500));
                let status = agent.stop();
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
    common::require_environment();
    let slot = Slot::new(28);
    let client = slot.client();
    let checker = client.client_addr().to_string();
    let config = slot.network_toml()
        + &host(
            &slot,
            "web",
            10,
            &[],
            &format!("idle_timeout = \"1s\"\nmin_warm = \"0s\"\nidle_ignore = [\"{checker}\"]\n"),
        );
    let _agent = Agent::start(&slot, &config, &[&slot.host_if()]);
    let container = slot.container("web");
    // A health checker polling every 300 ms, from an ignored address.
    client
        .run(|| {
            let mut conn =
                netkit::HttpConnection::open(http_addr(slot.host_addr(10)), WAKE).unwrap();
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
    common::require_environment();
    let slot = Slot::new(29);
    let client = slot.client();
    let b = slot.host_addr(11).to_string() + ":8080";
    let config = slot.network_toml()
        + &host(&slot, "a", 10, &["--backend", &b], "")
        + &host(
            &slot,
            "b",
            11,
            &[],
            "idle_timeout = \"1s\"\nmin_warm = \"0s\"\n",
        );
    let _agent = Agent::start(&slot, &config, &[&slot.host_if()]);
    let a_arp = || {
        let pid = docker_inspect(&slot.container("a"), "{{.State.Pid}}").unwrap();
        let table = std::fs::read_to_string(format!("/proc/{pid}/net/arp")).unwrap();
        table
            .lines()
            .find(|l| l.starts_with(&format!("{} ", slot.host_addr(11))))
            .map(str::to_string)
            .unwrap_or_default()
    };
    let b_mac = || {
        docker_inspect(
            &slot.container("b"),
            &format!(
                "{{{{(index .NetworkSettings.Networks \"{}\").MacAddress}}}}",
                slot.network()
            ),
        )
        .unwrap()
    };
    let bridge_mac =
        std::fs::read_to_string(format!("/sys/class/net/{}/address", slot.network())).unwrap();

    assert_eq!(
        request(&client, &slot, 10).0,
        "a via backend: hello from b\n"
    );
    let warm_mac = b_mac();
    wait_until(
        "a uses b's own MAC while b is warm",
        Duration::from_secs(5),
        || a_arp().contains(&warm_mac),
    );
    wait_until("b sleeps", Duration::from_secs(15), || {
        container_status(&slot.container("b")).as_deref() == Some("exited")
    });
    wait_until(
        "a is pointed back at the bridge",
        Duration::from_secs(5),
        || a_arp().contains(bridge_mac.trim()),
    );
    assert_eq!(
        request(&client, &slot, 10).0,
        "a via backend: hello from b\n",
        "b wakes again through the bridge"
    );
}
