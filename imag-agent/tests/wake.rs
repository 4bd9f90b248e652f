//! The walking skeleton, for real: a client's first TCP connection to a cold imaginary host wakes
//! a Docker container with exactly that address, and the client's own SYN completes the handshake.

mod common;

use std::{net::TcpListener, process::Command, time::Duration};

use common::{Agent, Slot, containers_of, docker_inspect, http_addr, netkit};

const COLD_WAKE_TIMEOUT: Duration = Duration::from_secs(30);

#[test]
fn first_connection_to_a_cold_host_wakes_it_with_its_own_syn() {
    first_connection_wakes(1, &[]);
}

/// The same through XDP (generic mode: the only XDP mode a veth can answer ARP in) instead of
/// the TC hook `auto` picks for virtual interfaces.
#[test]
fn first_connection_wakes_through_xdp_too() {
    first_connection_wakes(7, &["--hook", "xdp-generic"]);
}

fn first_connection_wakes(n: u8, hook: &[&str]) {
    common::require_environment();
    let slot = Slot::new(n);
    let client = slot.client();
    let config = slot.network_toml() + &slot.http_host("web", 10, &[]);
    slot.clean_docker();
    let mut agent = Agent::start_with(&slot, &config, &[&slot.host_if()], hook);
    if !hook.is_empty() {
        let link = Command::new("ip")
            .args(["link", "show", &slot.host_if()])
            .output()
            .unwrap();
        assert!(
            String::from_utf8_lossy(&link.stdout).contains("xdpgeneric"),
            "attached as XDP"
        );
    }
    assert!(
        containers_of(&slot).is_empty(),
        "the host must start cold (no container)"
    );

    let (body, retransmits) = client
        .run(|| {
            let answer = netkit::http_get(http_addr(slot.host_addr(10)), COLD_WAKE_TIMEOUT);
            (answer, netkit::net_counter("TcpExt", "TCPSynRetrans"))
        })
        .unwrap();
    let (body, _) = body.expect("the first connection to the cold host should be answered");
    assert_eq!(body, "hello from web\n");
    assert_eq!(
        retransmits.unwrap(),
        0,
        "the client's first SYN must complete the handshake (no SYN retransmission)"
    );

    let container = slot.container("web");
    assert_eq!(
        docker_inspect(&container, "{{.State.Running}}").as_deref(),
        Some("true")
    );
    assert_eq!(
        docker_inspect(
            &container,
            &format!(
                "{{{{(index .NetworkSettings.Networks \"{}\").IPAddress}}}}",
                slot.network()
            )
        )
        .as_deref(),
        Some(slot.host_addr(10).to_string().as_str()),
        "the container must have exactly the host's imaginary address"
    );
    assert_eq!(
        docker_inspect(&container, "{{index .Config.Labels \"imag.host\"}}").as_deref(),
        Some("web"),
        "containers are labelled so that the agent finds them again"
    );
    let woke = agent.wait_for_log("woke", Duration::from_secs(5));
    for phase in [
        "held_to_start_ms=",
        "start_to_running_ms=",
        "running_to_ready_ms=",
        "ready_to_delivered_ms=",
    ] {
        assert!(
            woke.contains(phase),
            "the wake log line must carry {phase}: {woke}"
        );
    }
}

#[test]
fn second_connection_starts_nothing_new() {
    common::require_environment();
    let slot = Slot::new(2);
    let client = slot.client();
    let config = slot.network_toml() + &slot.http_host("web", 10, &[]);
    let agent = Agent::start(&slot, &config, &[&slot.host_if()]);
    let addr = http_addr(slot.host_addr(10));

    client
        .run(|| netkit::http_get(addr, COLD_WAKE_TIMEOUT))
        .unwrap()
        .expect("first request");
    let first = containers_of(&slot);
    assert_eq!(first.len(), 1);
    let started_at = docker_inspect(&slot.container("web"), "{{.State.StartedAt}}");

    let (body, _) = client
        .run(|| netkit::http_get(addr, Duration::from_secs(5)))
        .unwrap()
        .expect("second request");
    assert_eq!(body, "hello from web\n");
    assert_eq!(containers_of(&slot), first, "no second container");
    assert_eq!(
        docker_inspect(&slot.container("web"), "{{.State.StartedAt}}"),
        started_at,
        "the container must not have been restarted"
    );
    assert_eq!(
        agent.lines_with(" woke ").len(),
        1,
        "exactly one wake:\n{}",
        agent.log_text()
    );
}

#[test]
fn concurrent_first_packets_start_exactly_one_container() {
    common::require_environment();
    let slot = Slot::new(3);
    let client = slot.client();
    let config = slot.network_toml() + &slot.http_host("web", 10, &[]);
    let agent = Agent::start(&slot, &config, &[&slot.host_if()]);
    let addr = http_addr(slot.host_addr(10));

    let answers: Vec<_> = client
        .run(|| {
            std::thread::scope(|scope| {
                let workers: Vec<_> = (0..8)
                    .map(|_| {
                        scope.spawn(move || {
                            // Threads inherit the namespace of the thread that spawns them.
                            netkit::http_get(addr, COLD_WAKE_TIMEOUT)
                        })
                    })
                    .collect();
                workers.into_iter().map(|w| w.join().unwrap()).collect()
            })
        })
        .unwrap();
    for answer in answers {
        assert_eq!(
            answer.expect("every concurrent connection is answered").0,
            "hello from web\n"
        );
    }
    assert_eq!(
        containers_of(&slot).len(),
        1,
        "eight first packets, one container"
    );
    let woke = agent.lines_with(" woke ");
    assert_eq!(woke.len(), 1, "one wake:\n{}", agent.log_text());
}

#[test]
fn traffic_to_other_addresses_is_untouched() {
    common::require_environment();
    let slot = Slot::new(4);
    let client = slot.client();
    let config = slot.network_toml() + &slot.http_host("web", 10, &[]);
    let agent = Agent::start(&slot, &config, &[&slot.host_if()]);

    // A service on the host side of the attach interface: not an imaginary address.
    let listener = TcpListener::bind((slot.host_side_addr(), 0)).unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        use std::io::{Read, Write};
        let (mut conn, _) = listener.accept().unwrap();
        let mut buf = [0u8; 5];
        conn.read_exact(&mut buf).unwrap();
        conn.write_all(&buf).unwrap();
    });
    let echoed = client
        .run(|| {
            use std::io::{Read, Write};
            let mut conn = std::net::TcpStream::connect((slot.host_side_addr(), port))?;
            conn.write_all(b"plain")?;
            let mut buf = [0u8; 5];
            conn.read_exact(&mut buf)?;
            std::io::Result::Ok(buf)
        })
        .unwrap()
        .expect("traffic to a non-imaginary address must flow as without imag");
    assert_eq!(&echoed, b"plain");
    server.join().unwrap();

    // An address inside the subnet that no host has: passed to the stack (which has no route
    // to a container), never held.
    let unconfigured = http_addr(slot.host_addr(99));
    let result = client
        .run(|| netkit::http_get(unconfigured, Duration::from_millis(500)))
        .unwrap();
    assert!(result.is_err());

    assert!(containers_of(&slot).is_empty(), "nothing was woken");
    assert!(
        agent.lines_with("first packet held").is_empty(),
        "no packet may have been held:\n{}",
        agent.log_text()
    );
}

#[test]
fn shutdown_detaches_and_stops_what_it_started() {
    common::require_environment();
    let slot = Slot::new(5);
    let client = slot.client();
    let config = slot.network_toml() + &slot.http_host("web", 10, &[]);
    let mut agent = Agent::start(&slot, &config, &[&slot.host_if()]);
    assert!(
        common::holding_program_attached(&slot.host_if()),
        "attached while running"
    );

    client
        .run(|| netkit::http_get(http_addr(slot.host_addr(10)), COLD_WAKE_TIMEOUT))
        .unwrap()
        .unwrap();
    let status = agent.stop();
    assert!(
        status.success(),
        "SIGTERM is a clean exit, got {status}:\n{}",
        agent.log_text()
    );

    let container = slot.container("web");
    assert_eq!(
        docker_inspect(&container, "{{.State.Status}}").as_deref(),
        Some("exited"),
        "the container it started is stopped, not removed"
    );
    assert!(
        !common::holding_program_attached(&slot.host_if()),
        "detached on exit"
    );
    assert!(
        !common::holding_program_attached(&slot.network()),
        "detached from the bridge too"
    );
    let rules = Command::new("iptables")
        .args(["-S", "DOCKER-USER"])
        .output()
        .unwrap();
    assert!(
        !String::from_utf8_lossy(&rules.stdout).contains(&slot.host_if()),
        "the forwarding rule is removed on exit"
    );
}

#[test]
fn an_unknown_interface_is_refused_with_the_fix_and_nothing_attached() {
    common::require_environment();
    let slot = Slot::new(6);
    let client = slot.client();
    let config = slot.network_toml() + &slot.http_host("web", 10, &[]);
    let path = std::env::temp_dir().join("imag-test-6-bad.toml");
    std::fs::write(&path, config).unwrap();
    let out = Command::new(common::agent_binary())
        .args(["attach", &slot.host_if(), "nosuchif0", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("interface \"nosuchif0\" does not exist") && stderr.contains("ip link"),
        "{stderr}"
    );
    assert!(
        !common::holding_program_attached(&client.host_if),
        "nothing attached to the good interface either"
    );
    slot.clean_docker();
}
