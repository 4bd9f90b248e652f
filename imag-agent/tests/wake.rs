//! The walking skeleton, for real: a client's first TCP connection to a cold imaginary host wakes
//! a Docker container with exactly that address, and the client's own SYN completes the handshake.

#![allow(
    clippy::float_cmp,
    reason = "metrics are whole counts carried in f64: equality is exact"
)]

use std::{net::TcpListener, process::Command, time::Duration};

use imag_testkit::{TestNet, agent_binary, clients, docker, netns::holding_program_attached};

const COLD_WAKE_TIMEOUT: Duration = Duration::from_secs(30);

#[test]
fn first_connection_to_a_cold_host_wakes_it_with_its_own_syn() {
    first_connection_wakes(&[]);
}

/// The same through XDP (generic mode: the only XDP mode a veth can answer ARP in) instead of
/// the TC hook `auto` picks for virtual interfaces.
#[test]
fn first_connection_wakes_through_xdp_too() {
    first_connection_wakes(&["--hook", "xdp-generic"]);
}

fn first_connection_wakes(hook: &[&str]) {
    let net = TestNet::new(agent_binary!());
    let client = net.client();
    let config = net.network_toml() + &net.http_host("web", 10, &[]);
    let agent = net.start_agent(&config, hook);
    if !hook.is_empty() {
        let link = Command::new("ip")
            .args(["link", "show", &net.host_if()])
            .output()
            .unwrap();
        assert!(
            String::from_utf8_lossy(&link.stdout).contains("xdpgeneric"),
            "attached as XDP"
        );
    }
    assert!(
        net.containers().is_empty(),
        "the host must start cold (no container)"
    );

    let (body, retransmits) = client
        .run(|| {
            let answer = clients::http_get(net.http_addr(10), COLD_WAKE_TIMEOUT);
            (answer, clients::net_counter("TcpExt", "TCPSynRetrans"))
        })
        .unwrap();
    let (body, _) = body.expect("the first connection to the cold host should be answered");
    assert_eq!(body, "hello from web\n");
    assert_eq!(
        retransmits.unwrap(),
        0,
        "the client's first SYN must complete the handshake (no SYN retransmission)"
    );

    let container = net.container("web");
    assert_eq!(
        docker::inspect(&container, "{{.State.Running}}").as_deref(),
        Some("true")
    );
    assert_eq!(
        docker::container_address(&container, net.network()).as_deref(),
        Some(net.host_addr(10).to_string().as_str()),
        "the container must have exactly the host's imaginary address"
    );
    assert_eq!(
        docker::inspect(&container, "{{index .Config.Labels \"imag.host\"}}").as_deref(),
        Some("web"),
        "containers are labelled so that the agent finds them again"
    );
    let metrics = net.scrape();
    for phase in [
        "held_to_start",
        "start_to_running",
        "running_to_ready",
        "ready_to_delivered",
    ] {
        let labels = [("host", "web"), ("phase", phase)];
        assert_eq!(
            metrics.value("imag_wake_duration_seconds_count", &labels),
            1.0,
            "the wake must be timed by phase, {phase} too:\n{}",
            agent.log_text()
        );
    }
}

/// Successful wakes of `host` so far, as `/metrics` counts them.
fn wakes(net: &TestNet, host: &str) -> f64 {
    net.scrape()
        .sum("imag_wakes_total", &[("host", host), ("result", "ok")])
}

#[test]
fn second_connection_starts_nothing_new() {
    let net = TestNet::new(agent_binary!());
    let client = net.client();
    let config = net.network_toml() + &net.http_host("web", 10, &[]);
    let agent = net.start_agent(&config, &[]);
    let addr = net.http_addr(10);

    client
        .run(|| clients::http_get(addr, COLD_WAKE_TIMEOUT))
        .unwrap()
        .expect("first request");
    let first = net.containers();
    assert_eq!(first.len(), 1);
    let started_at = docker::inspect(&net.container("web"), "{{.State.StartedAt}}");

    let (body, _) = client
        .run(|| clients::http_get(addr, Duration::from_secs(5)))
        .unwrap()
        .expect("second request");
    assert_eq!(body, "hello from web\n");
    assert_eq!(net.containers(), first, "no second container");
    assert_eq!(
        docker::inspect(&net.container("web"), "{{.State.StartedAt}}"),
        started_at,
        "the container must not have been restarted"
    );
    assert_eq!(
        wakes(&net, "web"),
        1.0,
        "exactly one wake:\n{}",
        agent.log_text()
    );
}

#[test]
fn concurrent_first_packets_start_exactly_one_container() {
    let net = TestNet::new(agent_binary!());
    let client = net.client();
    let config = net.network_toml() + &net.http_host("web", 10, &[]);
    let agent = net.start_agent(&config, &[]);
    let addr = net.http_addr(10);

    let answers: Vec<_> = client
        .run(|| {
            std::thread::scope(|scope| {
                let workers: Vec<_> = (0..8)
                    .map(|_| {
                        scope.spawn(move || {
                            // Threads inherit the namespace of the thread that spawns them.
                            clients::http_get(addr, COLD_WAKE_TIMEOUT)
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
        net.containers().len(),
        1,
        "eight first packets, one container"
    );
    assert_eq!(wakes(&net, "web"), 1.0, "one wake:\n{}", agent.log_text());
}

#[test]
fn traffic_to_other_addresses_is_untouched() {
    let net = TestNet::new(agent_binary!());
    let client = net.client();
    let config = net.network_toml() + &net.http_host("web", 10, &[]);
    let agent = net.start_agent(&config, &[]);

    // A service on the host side of the attach interface: not an imaginary address.
    let listener = TcpListener::bind((net.host_side_addr(), 0)).unwrap();
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
            let mut conn = std::net::TcpStream::connect((net.host_side_addr(), port))?;
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
    let unconfigured = net.http_addr(99);
    let result = client
        .run(|| clients::http_get(unconfigured, Duration::from_millis(500)))
        .unwrap();
    assert!(result.is_err());

    assert!(net.containers().is_empty(), "nothing was woken");
    assert_eq!(
        agent.status().unwrap()["held_packets"],
        0,
        "no packet may have been held:\n{}",
        agent.log_text()
    );
}

#[test]
fn shutdown_detaches_and_stops_what_it_started() {
    let net = TestNet::new(agent_binary!());
    let client = net.client();
    let config = net.network_toml() + &net.http_host("web", 10, &[]);
    let mut agent = net.start_agent(&config, &[]);
    assert!(
        holding_program_attached(&net.host_if()),
        "attached while running"
    );

    client
        .run(|| clients::http_get(net.http_addr(10), COLD_WAKE_TIMEOUT))
        .unwrap()
        .unwrap();
    let status = agent.stop().unwrap();
    assert!(
        status.success(),
        "SIGTERM is a clean exit, got {status}:\n{}",
        agent.log_text()
    );

    let container = net.container("web");
    assert_eq!(
        docker::container_status(&container).as_deref(),
        Some("exited"),
        "the container it started is stopped, not removed"
    );
    assert!(
        !holding_program_attached(&net.host_if()),
        "detached on exit"
    );
    assert!(
        !holding_program_attached(net.network()),
        "detached from the bridge too"
    );
    let rules = Command::new("iptables")
        .args(["-S", "DOCKER-USER"])
        .output()
        .unwrap();
    assert!(
        !String::from_utf8_lossy(&rules.stdout).contains(&net.host_if()),
        "the forwarding rule is removed on exit"
    );
}

#[test]
fn an_unknown_interface_is_refused_with_the_fix_and_nothing_attached() {
    let net = TestNet::new(agent_binary!());
    let client = net.client();
    let config = net.network_toml() + &net.http_host("web", 10, &[]);
    let path = net.temp_file("-bad.toml");
    std::fs::write(&path, config).unwrap();
    let out = Command::new(agent_binary!())
        .args(["attach", &net.host_if(), "nosuchif0", "--config"])
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
        !holding_program_attached(&client.host_if),
        "nothing attached to the good interface either"
    );
    let _ = std::fs::remove_file(&path);
}

/// The host links' pinned TC links in the network's pin directory, as (prefix, ifindex).
fn host_link_pins(net: &TestNet) -> Vec<(String, u32)> {
    let dir = format!("/sys/fs/bpf/imag/{}", net.network());
    let mut pins: Vec<(String, u32)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|err| panic!("reading {dir}: {err}"))
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            let (prefix, index) = name.strip_prefix("link-")?.split_once('-')?;
            let index = index.parse().ok()?;
            ["to", "from"]
                .contains(&prefix)
                .then(|| (prefix.to_string(), index))
        })
        .collect();
    pins.sort();
    pins
}

/// The names of the programs attached by TCX to `ifindex` in `attach_type`'s direction.
fn tcx_programs(ifindex: u32, attach_type: aya::programs::tc::TcAttachType) -> Vec<String> {
    let name = imag_agent::interfaces::name_of_index(ifindex)
        .unwrap_or_else(|| panic!("interface {ifindex} exists"));
    let (_, programs) = aya::programs::SchedClassifier::query_tcx(&name, attach_type)
        .unwrap_or_else(|err| panic!("querying the TCX programs on {name}: {err}"));
    programs
        .iter()
        .filter_map(|p| p.name_as_str().map(str::to_string))
        .collect()
}

/// The host's own link gets its counting programs (attached off the orchestrator's task, pinned
/// beside the maps), and lets go of them when the host sleeps stopped; the next wake's new link
/// gets them again.
#[test]
fn a_woken_hosts_link_gets_its_programs_and_a_stopped_host_lets_go_of_them() {
    use aya::programs::tc::TcAttachType::{Egress, Ingress};
    let net = TestNet::new(agent_binary!());
    let client = net.client();
    let config = net.network_toml() + &net.http_host("web", 10, &[]);
    let agent = net.start_agent(&config, &[]);
    let mut links = Vec::new();
    for round in 0..2 {
        let (body, _) = client
            .run(|| clients::http_get(net.http_addr(10), COLD_WAKE_TIMEOUT))
            .unwrap()
            .expect("the host wakes and answers");
        assert_eq!(body, "hello from web\n");
        let mut pins = Vec::new();
        imag_testkit::wait_until(
            "both programs are pinned on the host's link",
            Duration::from_secs(10),
            || {
                pins = host_link_pins(&net);
                pins.len() == 2
            },
        );
        let index = pins[0].1;
        assert_eq!(
            pins,
            [("from".to_string(), index), ("to".to_string(), index)],
            "one link, both directions (round {round})"
        );
        assert!(
            tcx_programs(index, Egress).contains(&"imag_to_host".to_string()),
            "imag_to_host on the link's egress"
        );
        assert!(
            tcx_programs(index, Ingress).contains(&"imag_from_host".to_string()),
            "imag_from_host on the link's ingress"
        );
        links.push(index);

        agent.command(&["sleep", "web", "--tier", "stop"]).unwrap();
        imag_testkit::wait_until("web is asleep", Duration::from_secs(30), || {
            agent.host("web").is_ok_and(|web| web["state"] == "asleep")
        });
        imag_testkit::wait_until(
            "the stopped host's links are let go of",
            Duration::from_secs(10),
            || host_link_pins(&net).is_empty(),
        );
    }
    assert_ne!(links[0], links[1], "each start has a new link");
}
