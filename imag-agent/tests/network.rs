//! A network of imaginary hosts, for real: hosts calling hosts over the bridge, neighbours asking
//! ARP for hosts that do not exist yet, UDP, pings answered while cold, and failures that refuse
//! at once instead of timing out.

#![allow(
    clippy::float_cmp,
    reason = "metrics are whole counts carried in f64: equality is exact"
)]

use std::{
    io::ErrorKind,
    net::{Ipv4Addr, SocketAddr, TcpStream, UdpSocket},
    process::Command,
    time::{Duration, Instant},
};

use imag_agent::{interfaces::parse_mac, packets::Wire};
use imag_testkit::{IMAGE, TestNet, agent_binary, clients, docker, wait_until};

const WAKE: Duration = Duration::from_secs(30);

fn container_syn_retransmits(container: &str) -> u64 {
    let pid: u32 = docker::inspect(container, "{{.State.Pid}}")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("{container} is not running"));
    clients::net_counter_of(pid, "TcpExt", "TCPSynRetrans").unwrap()
}

/// Wakes so far with `result` (`ok`, `failed`) and these labels, as `/metrics` counts them.
fn wakes(net: &TestNet, result: &str, labels: &[(&str, &str)]) -> f64 {
    let mut labels = labels.to_vec();
    labels.push(("result", result));
    net.scrape().sum("imag_wakes_total", &labels)
}

#[test]
fn a_chain_of_cold_hosts_answers_one_request() {
    let net = TestNet::new(agent_binary!());
    let client = net.client();
    let b = net.host_addr(11).to_string() + ":8080";
    let c = net.host_addr(12).to_string() + ":8080";
    let config = net.network_toml()
        + &net.http_host("a", 10, &["--backend", &b])
        + &net.http_host("b", 11, &["--backend", &c])
        + &net.http_host("c", 12, &[]);
    let agent = net.start_agent(&config, &[]);

    let (answer, retransmits) = client
        .run(|| {
            (
                clients::http_get(net.http_addr(10), WAKE),
                clients::net_counter("TcpExt", "TCPSynRetrans"),
            )
        })
        .unwrap();
    let (body, took) =
        answer.expect("one request to the cold frontend is answered by the whole chain");
    assert_eq!(body, "a via backend: b via backend: hello from c\n");
    assert_eq!(retransmits.unwrap(), 0, "the client sent its SYN once");
    for host in ["a", "b"] {
        assert_eq!(
            container_syn_retransmits(&net.container(host)),
            0,
            "host {host} reached its cold backend with its first SYN"
        );
    }
    assert_eq!(
        wakes(&net, "ok", &[]),
        3.0,
        "three wakes:\n{}",
        agent.log_text()
    );
    eprintln!("chain of three cold hosts answered in {took:?}");

    // Once b is warm, a is told b's own MAC address (gratuitous ARP), so that a talks to b
    // straight over the bridge rather than through the host.
    let b_mac = docker::container_mac(&net.container("b"), net.network()).unwrap();
    let a_pid = docker::inspect(&net.container("a"), "{{.State.Pid}}").unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let arp = std::fs::read_to_string(format!("/proc/{a_pid}/net/arp")).unwrap();
        let entry = arp
            .lines()
            .find(|l| l.starts_with(&format!("{} ", net.host_addr(11))));
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

/// A warm host that still knows a sleeping neighbour's own MAC address sends straight to it: a
/// stopped neighbour's port is gone (the frame would be flooded and lost), and once the engine
/// starts it again, a frame reaching it before its service listens is answered with a reset. The
/// sender's own link holds such a frame, which wakes the neighbour and reaches it once ready.
#[test]
fn a_host_that_knows_a_sleeping_neighbour_s_mac_still_wakes_it() {
    let net = TestNet::new(agent_binary!());
    let client = net.client();
    let b = net.host_addr(11);
    let config = net.network_toml()
        + &net.http_host("a", 10, &["--backend", &format!("{b}:8080")])
        // Slow to listen: a SYN reaching its container early would be reset.
        + &net.http_host("b", 11, &["--delay-ms", "300"]);
    let agent = net.start_agent(&config, &[]);
    let ask = || {
        client
            .run(|| clients::http_get(net.http_addr(10), WAKE))
            .unwrap()
    };
    let (body, _) = ask().expect("the first request wakes both");
    assert_eq!(body, "a via backend: hello from b\n");
    let b_mac = docker::container_mac(&net.container("b"), net.network()).unwrap();
    agent.command(&["sleep", "b", "--tier", "stop"]).unwrap();
    wait_until("b is asleep", Duration::from_secs(20), || {
        agent.host("b").unwrap()["state"] == "asleep"
    });
    // a keeps b's own MAC whatever it is told (as a neighbour cache that missed or refused the
    // datapath's gratuitous ARP would).
    let a_pid = docker::inspect(&net.container("a"), "{{.State.Pid}}").unwrap();
    let pinned = Command::new("nsenter")
        .args(["-t", &a_pid, "-n", "ip", "neigh", "replace", &b.to_string()])
        .args(["lladdr", b_mac.trim(), "dev", "eth0", "nud", "permanent"])
        .status()
        .unwrap();
    assert!(pinned.success(), "pinning a's neighbour entry for b");
    let before = container_syn_retransmits(&net.container("a"));

    let (body, _) =
        ask().unwrap_or_else(|e| panic!("a's request wakes b: {e}\n{}", agent.log_text()));
    assert_eq!(
        body,
        "a via backend: hello from b\n",
        "b was reached, not reset:\n{}",
        agent.log_text()
    );
    assert!(
        container_syn_retransmits(&net.container("a")) - before
            <= agent.syn_retransmissions_forced("b"),
        "a reached b with its first SYN (none sent again beyond what b's wake forces)"
    );
    // The datapath's counters reach /metrics on the agent's next tick.
    wait_until(
        "the frame held at a's link is counted",
        Duration::from_secs(5),
        || {
            net.scrape().value(
                "imag_datapath_packets_total",
                &[("verdict", "held_at_host_link")],
            ) >= 1.0
        },
    );
}

#[test]
fn a_neighbour_on_the_same_segment_resolves_a_cold_host_by_arp() {
    neighbour_resolves_cold_host(&[]);
}

#[test]
fn a_neighbour_resolves_a_cold_host_through_xdp_too() {
    neighbour_resolves_cold_host(&["--hook", "xdp-generic"]);
}

fn neighbour_resolves_cold_host(hook: &[&str]) {
    let net = TestNet::new(agent_binary!());
    // The client believes the imaginary subnet is on its own link: it asks ARP, not a router.
    let client = net.on_link_client();
    let config = net
        .network_toml()
        .replace("[network]\n", "[network]\nproxy_arp = true\n")
        + &net.http_host("web", 10, &[]);
    let _agent = net.start_agent(&config, hook);

    let (answer, retransmits) = client
        .run(|| {
            (
                clients::http_get(net.http_addr(10), WAKE),
                clients::net_counter("TcpExt", "TCPSynRetrans"),
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
            &net.host_addr(10).to_string(),
        ])
        .output()
        .unwrap();
    let mac = std::fs::read_to_string(format!("/sys/class/net/{}/address", net.host_if())).unwrap();
    assert!(
        String::from_utf8_lossy(&neigh.stdout).contains(mac.trim()),
        "the client learned the attach interface's MAC for the imaginary address: {}",
        String::from_utf8_lossy(&neigh.stdout)
    );
}

#[test]
fn an_on_link_client_finds_a_warm_host_again_after_forgetting_it() {
    let net = TestNet::new(agent_binary!());
    let client = net.on_link_client();
    let config = net
        .network_toml()
        .replace("[network]\n", "[network]\nproxy_arp = true\n")
        + &net.http_host("web", 10, &[]);
    let agent = net.start_agent(&config, &[]);
    client
        .run(|| clients::http_get(net.http_addr(10), WAKE))
        .unwrap()
        .expect("the on-link client wakes the host");
    assert_eq!(agent.host("web").unwrap()["state"], "warm");
    let answered = || {
        net.scrape().value(
            "imag_datapath_packets_total",
            &[("verdict", "arp_answered")],
        )
    };
    let answered_cold = answered();
    // Its neighbour entry expires (here: is flushed) while the host is warm.
    let flushed = Command::new("ip")
        .args(["-n", &client.name, "neigh", "flush", "all"])
        .status()
        .unwrap();
    assert!(flushed.success(), "flushing the client's neighbour table");
    let (body, _) = client
        .run(|| clients::http_get(net.http_addr(10), Duration::from_secs(10)))
        .unwrap()
        .unwrap_or_else(|e| {
            panic!(
                "the client asks ARP for the warm host again and is answered: {e}\n{}",
                agent.log_text()
            )
        });
    assert_eq!(body, "hello from web\n");
    // The datapath's counters reach /metrics on the agent's next tick.
    wait_until(
        "the datapath's answer for the warm host is counted",
        Duration::from_secs(5),
        || answered() > answered_cold,
    );
}

#[test]
fn a_vlan_tagged_packet_to_a_cold_host_passes_untouched_and_wakes_nothing() {
    let net = TestNet::new(agent_binary!());
    let client = net.client();
    let config = net.network_toml() + &net.http_host("web", 10, &[]);
    let agent = net.start_agent(&config, &[]);
    // A SYN to the cold host, tagged for VLAN 5, which the machine does not carry: the kernel
    // takes the tag out of the frame into the skb before the TC hook sees it (this kernel has no
    // VLAN devices, so the frame is built by hand and sent from the client's packet socket).
    let host_mac = parse_mac(
        std::fs::read_to_string(format!("/sys/class/net/{}/address", net.host_if()))
            .unwrap()
            .trim(),
    )
    .unwrap();
    let client_addr: Ipv4Addr = client.client_addr().parse().unwrap();
    let web = net.host_addr(10);
    client
        .run(|| {
            // SAFETY: a NUL-terminated name.
            let eth0 = unsafe { libc::if_nametoindex(c"eth0".as_ptr()) };
            let mut syn = Vec::new();
            etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 0x55], host_mac)
                .ipv4(client_addr.octets(), web.octets(), 64)
                .tcp(40000, 8080, 1, 64240)
                .syn()
                .write(&mut syn, &[])
                .unwrap();
            let mut tagged = syn[..12].to_vec();
            tagged.extend_from_slice(&[0x81, 0x00, 0x00, 0x05]);
            tagged.extend_from_slice(&syn[12..]);
            Wire::open().unwrap().send(eth0, &tagged).unwrap();
        })
        .unwrap();
    let verdict = |name: &str| {
        net.scrape()
            .value("imag_datapath_packets_total", &[("verdict", name)])
    };
    wait_until(
        "the tagged SYN is passed as not for imag to handle",
        Duration::from_secs(5),
        || verdict("passed_unparsed") >= 1.0,
    );
    assert_eq!(verdict("held"), 0.0, "the tagged SYN was not held");
    assert!(
        net.containers().is_empty(),
        "and woke nothing (held and re-delivered, it would have gone in untagged):\n{}",
        agent.log_text()
    );
    assert_eq!(agent.status().unwrap()["held_packets"], 0);
}

/// A connected UDP socket in the client's namespace sends `request` to `addr` and waits up to
/// `timeout`: an ICMP port unreachable shows as `ConnectionRefused`, silence as a timeout.
fn connected_udp(addr: SocketAddr, request: &[u8], timeout: Duration) -> std::io::Result<Vec<u8>> {
    let socket = UdpSocket::bind("0.0.0.0:0")?;
    socket.connect(addr)?;
    socket.set_read_timeout(Some(timeout))?;
    socket.send(request)?;
    let mut buf = [0u8; 512];
    let len = socket.recv(&mut buf)?;
    Ok(buf[..len].to_vec())
}

#[test]
fn only_declared_ports_reach_or_wake_a_host() {
    let net = TestNet::new(agent_binary!());
    let client = net.client();
    let config = net.network_toml()
        + &format!(
            "\n[[host]]\nname = \"dns\"\naddress = \"{}\"\nimage = \"{IMAGE}\"\ncommand = [\"/hello\", \"--udp\", \"5353\"]\nready = \"udp:5353\"\nports = [5353]\n",
            net.host_addr(53)
        );
    let agent = net.start_agent(&config, &[]);
    let declared = SocketAddr::from((net.host_addr(53), 5353));
    let undeclared = SocketAddr::from((net.host_addr(53), 5354));

    let cold = client
        .run(|| connected_udp(undeclared, b"q", WAKE))
        .unwrap();
    assert_eq!(
        cold.map_err(|e| e.kind()),
        Err(ErrorKind::ConnectionRefused),
        "a datagram to an undeclared port of a cold host is refused at once"
    );
    assert!(net.containers().is_empty(), "and wakes nothing");

    let answer = client
        .run(|| connected_udp(declared, b"example.org", WAKE))
        .unwrap()
        .expect("the declared port wakes the host and is answered");
    assert_eq!(
        String::from_utf8_lossy(&answer),
        "answer example.org from dns"
    );

    // Warm: the container itself would answer port unreachable, but the forwarding rule never
    // lets the datagram reach it.
    let warm = client
        .run(|| connected_udp(undeclared, b"q", Duration::from_secs(2)))
        .unwrap();
    assert!(
        matches!(
            warm.as_ref().map_err(std::io::Error::kind),
            Err(ErrorKind::WouldBlock | ErrorKind::TimedOut)
        ),
        "an undeclared port of a warm host is not forwarded: {warm:?}\n{}",
        agent.log_text()
    );
    let again = client
        .run(|| connected_udp(declared, b"again", WAKE))
        .unwrap()
        .expect("the declared port still is");
    assert_eq!(String::from_utf8_lossy(&again), "answer again from dns");
}

#[test]
fn the_first_udp_request_to_a_cold_host_gets_its_answer() {
    let net = TestNet::new(agent_binary!());
    let client = net.client();
    let config = net.network_toml()
        + &format!(
            "\n[[host]]\nname = \"dns\"\naddress = \"{}\"\nimage = \"{IMAGE}\"\ncommand = [\"/hello\", \"--udp\", \"5353\"]\nready = \"udp:5353\"\n",
            net.host_addr(53)
        );
    let agent = net.start_agent(&config, &[]);
    let addr = SocketAddr::from((net.host_addr(53), 5353));
    let (answer, took) = client
        .run(|| clients::udp_request(addr, b"example.org", WAKE))
        .unwrap()
        .expect("the single datagram is held, delivered and answered");
    assert_eq!(
        String::from_utf8_lossy(&answer),
        "answer example.org from dns"
    );
    assert_eq!(wakes(&net, "ok", &[]), 1.0, "{}", agent.log_text());
    eprintln!("first UDP request answered in {took:?}");
}

#[test]
fn pings_are_answered_while_the_host_stays_cold() {
    pings_answered(&[]);
}

#[test]
fn pings_are_answered_through_xdp_too() {
    pings_answered(&["--hook", "xdp-generic"]);
}

fn pings_answered(hook: &[&str]) {
    let net = TestNet::new(agent_binary!());
    let client = net.client();
    let config = net.network_toml()
        + &net.http_host("web", 10, &[])
        + &net
            .http_host("pinged", 11, &[])
            .replace("ports = [8080]\n", "ports = [8080]\nanswer_ping = false\n");
    let agent = net.start_agent(&config, hook);

    for _ in 0..3 {
        client
            .run(|| clients::ping(net.host_addr(10), Duration::from_secs(2)))
            .unwrap()
            .expect("an echo reply for the cold host");
    }
    assert!(net.containers().is_empty(), "pings do not wake the host");
    assert_eq!(
        agent.status().unwrap()["held_packets"],
        0,
        "no ping was held:\n{}",
        agent.log_text()
    );

    // With answer_ping = false a ping is a packet like any other: it wakes the host, which answers.
    client
        .run(|| clients::ping(net.host_addr(11), WAKE))
        .unwrap()
        .expect("the woken host answers the held ping itself");
    assert_eq!(
        docker::inspect(&net.container("pinged"), "{{.State.Running}}").as_deref(),
        Some("true")
    );
}

#[test]
fn a_missing_image_refuses_at_once_and_retries_after_backoff() {
    let net = TestNet::new(agent_binary!());
    let client = net.client();
    let late_image = format!("imag-example/late-{}", net.network());
    let late_image = late_image.as_str();
    let _ = Command::new("docker").args(["rmi", late_image]).output();
    let config = net.network_toml()
        + "\n[wake]\nbackoff = \"2s\"\n"
        + &net.http_host("late", 10, &[]).replace(IMAGE, late_image);
    let agent = net.start_agent(&config, &[]);
    let addr = net.http_addr(10);

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
    assert_eq!(
        wakes(&net, "failed", &[("reason", "image_missing")]),
        1.0,
        "{}",
        agent.log_text()
    );

    // Within the backoff: refused again at once, without another attempt.
    let (result, _) = connect();
    assert_eq!(result.unwrap_err().kind(), ErrorKind::ConnectionRefused);
    assert_eq!(
        wakes(&net, "failed", &[]),
        1.0,
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
    wait_until("the retried wake succeeds", Duration::from_secs(5), || {
        wakes(&net, "ok", &[]) == 1.0
    });
    drop(agent);
    let _ = Command::new("docker").args(["rmi", late_image]).output();
}

#[test]
fn a_container_that_exits_before_ready_refuses_tcp_and_udp() {
    let net = TestNet::new(agent_binary!());
    let client = net.client();
    let config = net.network_toml()
        + &net.http_host(
            "crash",
            10,
            &["--exit-after-ms", "100", "--delay-ms", "5000"],
        )
        + &format!(
            "\n[[host]]\nname = \"gone\"\naddress = \"{}\"\nimage = \"imag-example/missing-15\"\nready = \"udp:53\"\n",
            net.host_addr(11)
        );
    let agent = net.start_agent(&config, &[]);

    let addr = net.http_addr(10);
    let err = client
        .run(|| TcpStream::connect_timeout(&addr, WAKE))
        .unwrap()
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ConnectionRefused, "{err}");
    assert_eq!(
        wakes(&net, "failed", &[("host", "crash"), ("reason", "exited")]),
        1.0,
        "{}",
        agent.log_text()
    );

    let udp_addr = SocketAddr::from((net.host_addr(11), 53));
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
    let net = TestNet::new(agent_binary!());
    let client = net.client();
    let config = net.network_toml()
        + "\n[hold]\nmax_packets_per_host = 2\n"
        + &format!(
            "\n[[host]]\nname = \"slow\"\naddress = \"{}\"\nimage = \"{IMAGE}\"\ncommand = [\"/hello\", \"--udp\", \"5353\", \"--delay-ms\", \"300\"]\nready = \"udp:5353\"\n",
            net.host_addr(10)
        );
    let mut agent = net.start_agent(&config, &[]);
    let addr = SocketAddr::from((net.host_addr(10), 5353));
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
    let status = agent.status().unwrap();
    assert_eq!(
        status["dropped_packets"], 3,
        "three drops counted: {status}"
    );
    assert!(agent.stop().unwrap().success());
}
