//! A container on the imag bridge speaks only as itself: one that forges a warm neighbour's
//! address (IPv4 source, ARP) gets nowhere, end to end with real containers. The forged frames are
//! sent from inside the spoofer container's network namespace through a packet socket on its
//! `eth0`, as a program in the container with Docker's default `CAP_NET_RAW` could.

#![allow(
    clippy::float_cmp,
    reason = "metrics are whole counts carried in f64: equality is exact"
)]

use std::{
    fs::File,
    net::{Ipv4Addr, UdpSocket},
    os::fd::AsRawFd,
    process::Command,
    time::Duration,
};

use imag_agent::{interfaces::parse_mac, packets::Wire};
use imag_testkit::{TestNet, agent_binary, clients, docker, wait_until};

const WAKE: Duration = Duration::from_secs(30);

fn mac_of(net: &TestNet, host: &str) -> [u8; 6] {
    let text = docker::container_mac(&net.container(host), net.network())
        .unwrap_or_else(|| panic!("{host}'s container has a MAC address on the network"));
    parse_mac(text.trim()).unwrap_or_else(|| panic!("a MAC address: {text:?}"))
}

/// Sends `frames` out of `eth0` inside the network namespace of `container`'s process.
fn send_from_inside(container: &str, frames: &[Vec<u8>]) {
    let pid: u32 = docker::inspect(container, "{{.State.Pid}}")
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or_else(|| panic!("{container} is not running"));
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                let netns = File::open(format!("/proc/{pid}/ns/net")).unwrap();
                // SAFETY: a valid namespace fd; setns affects only this thread.
                let entered = unsafe { libc::setns(netns.as_raw_fd(), libc::CLONE_NEWNET) };
                assert_eq!(entered, 0, "entering {container}'s network namespace");
                // SAFETY: a NUL-terminated name.
                let eth0 = unsafe { libc::if_nametoindex(c"eth0".as_ptr()) };
                assert_ne!(eth0, 0, "{container} has an eth0");
                let wire = Wire::open().expect("a packet socket inside the container");
                for frame in frames {
                    wire.send(eth0, frame).expect("the frame is sent");
                }
            })
            .join()
            .unwrap();
    });
}

/// An ARP packet (`oper` 1 request, 2 reply) from `sha`/`spa` to `tha`/`tpa`, sent to `dst`.
fn arp(
    oper: u8,
    dst: [u8; 6],
    sha: [u8; 6],
    spa: Ipv4Addr,
    tha: [u8; 6],
    tpa: Ipv4Addr,
) -> Vec<u8> {
    let mut frame = Vec::new();
    frame.extend_from_slice(&dst);
    frame.extend_from_slice(&sha);
    frame.extend_from_slice(&[8, 6, 0, 1, 8, 0, 6, 4, 0, oper]);
    frame.extend_from_slice(&sha);
    frame.extend_from_slice(&spa.octets());
    frame.extend_from_slice(&tha);
    frame.extend_from_slice(&tpa.octets());
    frame
}

fn udp(dst_mac: [u8; 6], src_mac: [u8; 6], src: Ipv4Addr, dst: Ipv4Addr, port: u16) -> Vec<u8> {
    let mut frame = Vec::new();
    etherparse::PacketBuilder::ethernet2(src_mac, dst_mac)
        .ipv4(src.octets(), dst.octets(), 64)
        .udp(40000, port)
        .write(&mut frame, format!("from {src}").as_bytes())
        .unwrap();
    frame
}

/// The MAC address the machine's neighbour table holds for `addr` on `dev`, if any.
fn neighbour_mac(addr: Ipv4Addr, dev: &str) -> Option<[u8; 6]> {
    let out = Command::new("ip")
        .args(["neigh", "show", &addr.to_string(), "dev", dev])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let words: Vec<&str> = text.split_whitespace().collect();
    let at = words.iter().position(|w| *w == "lladdr")?;
    parse_mac(words.get(at + 1)?)
}

#[test]
fn a_container_spoofing_a_neighbours_address_and_arp_gets_nowhere() {
    let net = TestNet::new(agent_binary!());
    let client = net.client();
    let config =
        net.network_toml() + &net.http_host("victim", 10, &[]) + &net.http_host("spoofer", 11, &[]);
    let agent = net.start_agent(&config, &[]);
    let (victim, spoofer) = (net.host_addr(10), net.host_addr(11));
    for host in [10, 11] {
        client
            .run(|| clients::http_get(net.http_addr(host), WAKE))
            .unwrap()
            .expect("the host wakes and answers");
    }
    // The spoofer's link is held to its identity once the agent found it (off the critical
    // path after the wake): its own traffic is then counted there.
    wait_until(
        "the spoofer's own link is found and counted",
        Duration::from_secs(10),
        || {
            let _ = client.run(|| clients::http_get(net.http_addr(11), WAKE));
            net.scrape().value(
                "imag_host_packets_total",
                &[("host", "spoofer"), ("direction", "out")],
            ) > 0.0
        },
    );
    let victim_mac = mac_of(&net, "victim");
    let spoofer_mac = mac_of(&net, "spoofer");
    let bridge = net.network();
    let bridge_mac = parse_mac(
        std::fs::read_to_string(format!("/sys/class/net/{bridge}/address"))
            .unwrap()
            .trim(),
    )
    .unwrap();
    let gateway = net.host_addr(1);
    assert_eq!(
        neighbour_mac(victim, bridge),
        Some(victim_mac),
        "before: the machine reaches the victim at its own MAC"
    );
    // Let the neighbour entry's locktime (1 s) pass, so that a forged answer would be taken.
    std::thread::sleep(Duration::from_millis(1500));

    let client_addr: Ipv4Addr = client.client_addr().parse().unwrap();
    let listener = client
        .run(|| UdpSocket::bind((client_addr, 0)))
        .unwrap()
        .expect("a UDP socket in the client's namespace");
    listener
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let port = listener.local_addr().unwrap().port();
    let spoofed_before = net.scrape().value(
        "imag_datapath_packets_total",
        &[("verdict", "dropped_spoofed")],
    );
    send_from_inside(
        &net.container("spoofer"),
        &[
            // "The victim's address is at my MAC": broadcast, and straight to the machine.
            arp(1, [0xff; 6], spoofer_mac, victim, [0; 6], victim),
            arp(2, bridge_mac, spoofer_mac, victim, bridge_mac, gateway),
            // The victim's address as source, towards the client, through the machine.
            udp(bridge_mac, spoofer_mac, victim, client_addr, port),
            // The spoofer's own address: this one must arrive (the path works).
            udp(bridge_mac, spoofer_mac, spoofer, client_addr, port),
        ],
    );

    let mut buf = [0u8; 64];
    // Docker masquerades what leaves its network: the payload says who sent it.
    let (len, _) = listener
        .recv_from(&mut buf)
        .expect("the spoofer's honest datagram reaches the client");
    // (The forged ARP was sent before it, so it has been dealt with by now.)
    assert_eq!(
        neighbour_mac(victim, bridge),
        Some(victim_mac),
        "the forged ARP did not re-point the machine's entry for the victim"
    );
    assert_eq!(
        String::from_utf8_lossy(&buf[..len]),
        format!("from {spoofer}"),
        "the first datagram to arrive is the honest one: the forged one was dropped"
    );
    let (body, _) = client
        .run(|| clients::http_get(net.http_addr(10), WAKE))
        .unwrap()
        .expect("the client still reaches the victim");
    assert_eq!(
        body, "hello from victim\n",
        "and the victim answers, not the spoofer"
    );
    wait_until(
        "the forged frames are counted",
        Duration::from_secs(5),
        || {
            net.scrape().value(
                "imag_datapath_packets_total",
                &[("verdict", "dropped_spoofed")],
            ) - spoofed_before
                >= 3.0
        },
    );
    drop(agent);
}
