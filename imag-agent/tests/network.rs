//! A network of imaginary hosts, for real: hosts calling hosts over the bridge, neighbours asking
//! ARP for hosts that do not exist yet, UDP, pings answered while cold, and failures that refuse
//! at once instead of timing out.

mod common;

use std::{
    io::ErrorKind,
    net::{SocketAddr, TcpStream, UdpSocket},
    process::Command,
    time::{Duration, Instant},
};

use common::{Agent, IMAGE, Slot, containers_of, docker_inspect, http_addr, netkit};

const WAKE: Duration = Duration::from_secs(30);

fn container_syn_retransmits(container: &str) -> u64 {
    let pid: u32 = docker_inspect(container, "{{.State.Pid}}")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("{container} is not running"));
    netkit::net_counter_of(pid, "TcpExt", "TCPSynRetrans").unwrap()
}

#[test]
fn a_chain_of_cold_hosts_answers_one_request() {
    common::require_environment();
    let slot = Slot::new(10);
    let client = slot.client();
    let b = slot.host_addr(11).to_string() + ":8080";
    let c = slot.host_addr(12).to_string() + ":8080";
    let config = slot.network_toml()
        + &slot.http_host("a", 10, &["--backend", &b])
        + &slot.http_host("b", 11, &["--backend", &c])
        + &slot.http_host("c", 12, &[]);
    let agent = Agent::start(&slot, &config, &[&slot.host_if()]);

    let (answer, retransmits) = client
        .run(|| {
            (
                netkit::http_get(http_addr(slot.host_addr(10)), WAKE),
                netkit::net_counter("TcpExt", "TCPSynRetrans"),
            )
        })
        .unwrap();
    let (body, took) =
        answer.expect("one request to the cold frontend is answered by the whole chain");
    assert_eq!(body, "a via backend: b via backend: hello from c\n");
    assert_eq!(retransmits.unwrap(), 0, "the client sent its SYN once");
    for host in ["a", "b"] {
        assert_eq!(
            container_syn_retransmits(&slot.container(host)),
            0,
            "host {host} reached its cold backend with its first SYN"
        );
    }
    assert_eq!(
        agent.lines_with(" woke ").len(),
        3,
        "three wakes:\n{}",
        agent.log_text()
    );
    eprintln!("chain of three cold hosts answered in {took:?}");

    // Once b is warm, a is told b's own MAC address (gratuitous ARP), so that a talks to b
    // straight over the bridge rather than through the host.
    let b_mac = docker_inspect(
        &slot.container("b"),
        &format!(
            "{{{{(index .NetworkSettings.Networks \"{}\").MacAddress}}}}",
            slot.network()
        ),
    )
    .unwrap();
    let a_pid = docker_inspect(&slot.container("a"), "{{.State.Pid}}").unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let arp = std::fs::read_to_string(format!("/proc/{a_pid}/net/arp")).unwrap();
        let entry = arp
            .lines()
            .find(|l| l.starts_with(&format!("{} ", slot.host_addr(11))));
        if entry.is_some_and(|e| e.contains(&b_mac)) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "a's neighbour entry for b is not b's MAC {b_mac}:\n{arp}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_neighbour_on_the_same_segment_resolves_a_cold_host_by_arp() {
    neighbour_resolves_cold_host(11, &[]);
}

#[test]
fn a_neighbour_resolves_a_cold_host_through_xdp_too() {
    neighbour_resolves_cold_host(17, &["--hook", "xdp-generic"]);
}

fn neighbour_resolves_cold_host(n: u8, hook: &[&str]) {
    common::require_environment();
    let slot = Slot::new(n);
    // The client believes the imaginary subnet is on its own link: it asks ARP, not a router.
    let client = netkit::ClientNs::create(
        &format!("imagt{n}c"),
        &slot.host_if(),
        &format!("10.201.{n}.1/24"),
        &format!("10.201.{n}.2/24"),
        &[],
    )
    .unwrap();
    netkit::ip(&[
        "-n",
        &client.name,
        "route",
        "add",
        &slot.subnet(),
        "dev",
        "eth0",
    ])
    .unwrap();
    let config = slot
        .network_toml()
        .replace("[network]\n", "[network]\nproxy_arp = true\n")
        + &slot.http_host("web", 10, &[]);
    slot.clean_docker();
    let _agent = Agent::start_with(&slot, &config, &[&slot.host_if()], hook);

    let (answer, retransmits) = client
        .run(|| {
            (
                netkit::http_get(http_addr(slot.host_addr(10)), WAKE),
                netkit::net_counter("TcpExt", "TCPSynRetrans"),
            )
        })
        .unwrap();
    assert_eq!(
        answer.expect("the on-link client reaches the cold host").0,
        "hello from web\n"
    );
    assert_eq!(retransmits.unwrap(), 0);
    let neigh = Command::new("ip")
        .args([
            "-n",
            &client.name,
            "neigh",
            "show",
            &slot.host_addr(10).to_string(),
        ])
        .output()
        .unwrap();
    let mac =
        std::fs::read_to_string(format!("/sys/class/net/{}/address", slot.host_if())).unwrap();
    assert!(
        String::from_utf8_lossy(&neigh.stdout).contains(mac.trim()),
        "the client learned the attach interface's MAC for the imaginary address: {}",
        String::from_utf8_lossy(&neigh.stdout)
    );
}

#[test]
fn the_first_udp_request_to_a_cold_host_gets_its_answer() {
    common::require_environment();
    let slot = Slot::new(12);
    let client = slot.client();
    let config = slot.network_toml()
        + &format!(
            "\n[[host]]\nname = \"dns\"\naddress = \"{}\"\nimage = \"{IMAGE}\"\ncommand = [\"/hello\", \"--udp\", \"5353\"]\nready = \"udp:5353\"\n",
            slot.host_addr(53)
        );
    let agent = Agent::start(&slot, &config, &[&slot.host_if()]);
    let addr = SocketAddr::from((slot.host_addr(53), 5353));
    let (answer, took) = client
        .run(|| netkit::udp_request(addr, b"example.org", WAKE))
        .unwrap()
        .expect("the single datagram is held, delivered and answered");
    assert_eq!(
        String::from_utf8_lossy(&answer),
        "answer example.org from dns"
    );
    assert_eq!(agent.lines_with(" woke ").len(), 1);
    eprintln!("first UDP request answered in {took:?}");
}

#[test]
fn pings_are_answered_while_the_host_stays_cold() {
    pings_answered(13, &[]);
}

#[test]
fn pings_are_answered_through_xdp_too() {
    pings_answered(18, &["--hook", "xdp-generic"]);
}

fn pings_answered(n: u8, hook: &[&str]) {
    common::require_environment();
    let slot = Slot::new(n);
    let client = slot.client();
    let config = slot.network_toml()
        + &slot.http_host("web", 10, &[])
        + &slot
            .http_host("pinged", 11, &[])
            .replace("ports = [8080]\n", "ports = [8080]\nanswer_ping = false\n");
    slot.clean_docker();
    let agent = Agent::start_with(&slot, &config, &[&slot.host_if()], hook);

    for _ in 0..3 {
        client
            .run(|| netkit::ping(slot.host_addr(10), Duration::from_secs(2)))
            .unwrap()
            .expect("an echo reply for the cold host");
    }
    assert!(
        containers_of(&slot).is_empty(),
        "pings do not wake the host"
    );
    assert!(
        agent.lines_with("first packet held").is_empty(),
        "no ping was held:\n{}",
        agent.log_text()
    );

    // With answer_ping = false a ping is a packet like any other: it wakes the host, which answers.
    client
        .run(|| netkit::ping(slot.host_addr(11), WAKE))
        .unwrap()
        .expect("the woken host answers the held ping itself");
    assert_eq!(
        docker_inspect(&slot.container("pinged"), "{{.State.Running}}").as_deref(),
        Some("true")
    );
}

#[test]
fn a_missing_image_refuses_at_once_and_retries_after_backoff() {
    common::require_environment();
    let slot = Slot::new(14);
    let client = slot.client();
    let late_image = "imag-example/late-14";
    let _ = Command::new("docker").args(["rmi", late_image]).output();
    let config = slot.network_toml()
        + "\n[wake]\nbackoff = \"2s\"\n"
        + &slot.http_host("late", 10, &[]).replace(IMAGE, late_image);
    let mut agent = Agent::start(&slot, &config, &[&slot.host_if()]);
    let addr = http_addr(slot.host_addr(10));

    let connect = || {
        client
            .run(|| {
                let start = Instant::now();
                (TcpStream::connect_timeout(&addr, WAKE), start.elapsed())
            })
            .unwrap()
    };
    let (result, took) = connect();
    let err = result.expect_err("the image is missing: the wake fails");
    assert_eq!(
        err.kind(),
        ErrorKind::ConnectionRefused,
        "refused, not timed out: {err}"
    );
    eprintln!("refused after {took:?}");
    let failure = agent.wait_for_log("wake failed", Duration::from_secs(5));
    assert!(failure.contains("image_missing"), "{failure}");

    // Within the backoff: refused again at once, without another attempt.
    let (result, _) = connect();
    assert_eq!(result.unwrap_err().kind(), ErrorKind::ConnectionRefused);
    assert_eq!(
        agent.lines_with("wake failed").len(),
        1,
        "no retry inside the backoff"
    );

    // The image appears; after the backoff the next packet retries, and the wake succeeds.
    assert!(
        Command::new("docker")
            .args(["tag", IMAGE, late_image])
            .status()
            .unwrap()
            .success()
    );
    std::thread::sleep(Duration::from_millis(2100));
    let (result, _) = connect();
    result.expect("after the backoff a packet retries the wake");
    agent.wait_for_log(" woke ", Duration::from_secs(5));
    drop(agent);
    let _ = Command::new("docker").args(["rmi", late_image]).output();
}

#[test]
fn a_container_that_exits_before_ready_refuses_tcp_and_udp() {
    common::require_environment();
    let slot = Slot::new(15);
    let client = slot.client();
    let config = slot.network_toml()
        + &slot.http_host(
            "crash",
            10,
            &["--exit-after-ms", "100", "--delay-ms", "5000"],
        )
        + &format!(
            "\n[[host]]\nname = \"gone\"\naddress = \"{}\"\nimage = \"imag-example/missing-15\"\nready = \"udp:53\"\n",
            slot.host_addr(11)
        );
    let mut agent = Agent::start(&slot, &config, &[&slot.host_if()]);

    let addr = http_addr(slot.host_addr(10));
    let err = client
        .run(|| TcpStream::connect_timeout(&addr, WAKE))
        .unwrap()
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ConnectionRefused, "{err}");
    let failure = agent.wait_for_log("wake failed", Duration::from_secs(5));
    assert!(
        failure.contains("reason=\"exited\"") || failure.contains("reason=exited"),
        "{failure}"
    );

    let udp_addr = SocketAddr::from((slot.host_addr(11), 53));
    let err = client
        .run(|| {
            let socket = UdpSocket::bind("0.0.0.0:0")?;
            socket.set_read_timeout(Some(WAKE))?;
            socket.connect(udp_addr)?;
            socket.send(b"query")?;
            let mut buf = [0u8; 64];
            socket.recv(&mut buf).map(|_| ())
        })
        .unwrap()
        .unwrap_err();
    assert_eq!(
        err.kind(),
        ErrorKind::ConnectionRefused,
        "ICMP port unreachable, not a timeout: {err}"
    );
}

#[test]
fn the_hold_queue_is_bounded_per_host() {
    common::require_environment();
    let slot = Slot::new(16);
    let client = slot.client();
    let config = slot.network_toml()
        + "\n[hold]\nmax_packets_per_host = 2\n"
        + &format!(
            "\n[[host]]\nname = \"slow\"\naddress = \"{}\"\nimage = \"{IMAGE}\"\ncommand = [\"/hello\", \"--udp\", \"5353\", \"--delay-ms\", \"300\"]\nready = \"udp:5353\"\n",
            slot.host_addr(10)
        );
    let mut agent = Agent::start(&slot, &config, &[&slot.host_if()]);
    let addr = SocketAddr::from((slot.host_addr(10), 5353));
    let answers = client
        .run(|| {
            let socket = UdpSocket::bind("0.0.0.0:0").unwrap();
            socket
                .set_read_timeout(Some(Duration::from_secs(3)))
                .unwrap();
            for i in 0..5 {
                socket.send_to(format!("q{i}").as_bytes(), addr).unwrap();
            }
            let mut answers = Vec::new();
            let mut buf = [0u8; 256];
            while let Ok((len, _)) = socket.recv_from(&mut buf) {
                answers.push(String::from_utf8_lossy(&buf[..len]).to_string());
            }
            answers
        })
        .unwrap();
    assert_eq!(
        answers,
        vec!["answer q0 from slow", "answer q1 from slow"],
        "the first two datagrams are held and delivered in order; the rest are dropped"
    );
    agent.stop();
    let summary = agent.wait_for_log("dropped=", Duration::from_secs(1));
    assert!(
        summary.contains("dropped=3"),
        "three drops counted: {summary}"
    );
}
