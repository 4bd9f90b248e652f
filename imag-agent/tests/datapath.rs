//! `imag_hold` on crafted frames through BPF_PROG_TEST_RUN, in the real kernel: the verdicts and
//! the ring buffer records, for well-formed and malformed packets.

use std::net::Ipv4Addr;

use etherparse::PacketBuilder;
use imag_agent::datapath::{
    Datapath, TestHook,
    TestVerdict::{Bounce, Drop, Pass},
    ring::parse_record,
};
use imag_common::{HOST_FLAG_ANSWER_PING, HOST_FLAG_PROXY_ARP, IFACE_FLAG_BRIDGE, stat};

/// Both holding programs run the same logic; every test runs both.
const HOOKS: [TestHook; 2] = [TestHook::Xdp, TestHook::Tc];
/// The loopback device: test runs need a real ifindex; its entry in INTERFACES is made up.
const LO: u32 = 1;
const IFACE_MAC: [u8; 6] = [2, 0xaa, 0, 0, 0, 1];
const CLIENT_MAC: [u8; 6] = [2, 0, 0, 0, 0, 1];
const COLD: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 10);
const WARM: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 11);
const OTHER: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 12);

fn syn_to(dst: Ipv4Addr) -> Vec<u8> {
    let mut frame = Vec::new();
    PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
        .ipv4([10, 98, 0, 2], dst.octets(), 64)
        .tcp(40000, 8080, 1, 64240)
        .syn()
        .write(&mut frame, &[])
        .unwrap();
    frame
}

fn loaded() -> Datapath {
    imag_testkit::require_environment();
    let mut datapath = Datapath::load(None).expect("the datapath loads and passes the verifier");
    datapath.set_host(COLD, 7, true, 0).unwrap();
    datapath.set_host(WARM, 8, false, 0).unwrap();
    datapath
}

#[test]
fn a_packet_for_a_cold_host_is_held_whole() {
    for hook in HOOKS {
        a_packet_for_a_cold_host_is_held_whole_by(hook);
    }
}

fn a_packet_for_a_cold_host_is_held_whole_by(hook: TestHook) {
    let mut datapath = loaded();
    let mut ring = datapath.take_held_frames().unwrap();
    let frame = syn_to(COLD);
    assert_eq!(datapath.run_hold_program(hook, &frame, 0).unwrap().0, Drop);
    let record = ring
        .next()
        .expect("a ring buffer record for the held frame");
    let held = parse_record(&record).unwrap();
    assert_eq!(held.frame, frame, "the whole frame is copied");
    assert_eq!(held.header.host_id, 7);
    assert_eq!(held.header.host_addr, u32::from_ne_bytes(COLD.octets()));
    assert!(held.header.held_at_ns > 0);
    drop(record);
    assert!(ring.next().is_none(), "exactly one record");
    assert_eq!(datapath.stats()[stat::HELD as usize], 1);
}

#[test]
fn packets_for_warm_hosts_and_other_addresses_pass() {
    for hook in HOOKS {
        packets_for_warm_hosts_and_other_addresses_pass_by(hook);
    }
}

fn packets_for_warm_hosts_and_other_addresses_pass_by(hook: TestHook) {
    let mut datapath = loaded();
    let mut ring = datapath.take_held_frames().unwrap();
    assert_eq!(
        datapath.run_hold_program(hook, &syn_to(WARM), 0).unwrap().0,
        Pass
    );
    assert_eq!(
        datapath
            .run_hold_program(hook, &syn_to(OTHER), 0)
            .unwrap()
            .0,
        Pass
    );
    assert!(ring.next().is_none(), "nothing held");
    let stats = datapath.stats();
    assert_eq!(stats[stat::PASSED_WARM as usize], 1);
    assert_eq!(stats[stat::PASSED_OTHER as usize], 1);
    assert_eq!(stats[stat::HELD as usize], 0);
}

#[test]
fn switching_a_host_to_pass_takes_effect_at_once() {
    for hook in HOOKS {
        switching_a_host_to_pass_takes_effect_at_once_by(hook);
    }
}

fn switching_a_host_to_pass_takes_effect_at_once_by(hook: TestHook) {
    let mut datapath = loaded();
    let frame = syn_to(COLD);
    assert_eq!(datapath.run_hold_program(hook, &frame, 0).unwrap().0, Drop);
    datapath.set_host(COLD, 7, false, 0).unwrap();
    assert_eq!(datapath.run_hold_program(hook, &frame, 0).unwrap().0, Pass);
}

#[test]
fn malformed_frames_for_a_cold_host_pass_untouched() {
    for hook in HOOKS {
        malformed_frames_for_a_cold_host_pass_untouched_by(hook);
    }
}

fn malformed_frames_for_a_cold_host_pass_untouched_by(hook: TestHook) {
    let mut datapath = loaded();
    let mut ring = datapath.take_held_frames().unwrap();
    let good = syn_to(COLD);

    let mut with_options = good.clone();
    with_options[14] = 0x46; // IHL 6: one word of options
    let mut fragment = good.clone();
    fragment[14 + 6] = 0x20; // more fragments
    let mut later_fragment = good.clone();
    later_fragment[14 + 7] = 0x10; // offset 16
    let mut ipv6 = good.clone();
    ipv6[12..14].copy_from_slice(&0x86ddu16.to_be_bytes());
    let mut arp = good.clone();
    arp[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
    let truncated_ip = good[..14 + 10].to_vec();
    let runt = good[..14].to_vec();

    for (what, frame) in [
        ("IPv4 options", with_options),
        ("first fragment", fragment),
        ("later fragment", later_fragment),
        ("IPv6", ipv6),
        ("ARP (not a proxy-ARP host)", arp),
        ("truncated IPv4 header", truncated_ip),
        ("bare Ethernet header", runt),
    ] {
        if hook == TestHook::Tc && frame.len() < 14 + 20 {
            // BPF_PROG_TEST_RUN refuses (EINVAL) to build an skb from an IPv4 frame shorter
            // than an IP header, before any program runs; the XDP runs cover these frames.
            continue;
        }
        let verdict = datapath.run_hold_program(hook, &frame, 0);
        assert!(
            matches!(verdict, Ok((Pass, _))),
            "{what} ({hook:?}): {verdict:?}"
        );
    }
    assert!(ring.next().is_none(), "nothing malformed is held");
    assert_eq!(
        datapath.stats()[stat::PASSED_UNPARSED as usize],
        3,
        "options and fragments are counted"
    );
}

fn arp_request(target: Ipv4Addr) -> Vec<u8> {
    let mut frame = Vec::new();
    frame.extend_from_slice(&[0xff; 6]);
    frame.extend_from_slice(&CLIENT_MAC);
    frame.extend_from_slice(&[8, 6, 0, 1, 8, 0, 6, 4, 0, 1]);
    frame.extend_from_slice(&CLIENT_MAC);
    frame.extend_from_slice(&[10, 98, 0, 2]);
    frame.extend_from_slice(&[0; 6]);
    frame.extend_from_slice(&target.octets());
    frame
}

#[test]
fn arp_for_a_cold_host_is_answered_on_the_bridge_with_its_mac() {
    for hook in HOOKS {
        arp_for_a_cold_host_is_answered_on_the_bridge_by(hook);
    }
}

fn arp_for_a_cold_host_is_answered_on_the_bridge_by(hook: TestHook) {
    let mut datapath = loaded();
    datapath
        .set_interface(LO, IFACE_MAC, IFACE_FLAG_BRIDGE)
        .unwrap();
    let (verdict, reply) = datapath
        .run_hold_program(hook, &arp_request(COLD), LO)
        .unwrap();
    assert_eq!(verdict, Bounce, "answered from the datapath");
    assert_eq!(&reply[0..6], &CLIENT_MAC, "to the requester");
    assert_eq!(&reply[6..12], &IFACE_MAC, "from the interface");
    assert_eq!(&reply[20..22], &[0, 2], "an ARP reply");
    assert_eq!(&reply[22..28], &IFACE_MAC, "sender MAC: the interface");
    assert_eq!(&reply[28..32], &COLD.octets(), "sender IP: the cold host");
    assert_eq!(&reply[32..38], &CLIENT_MAC);
    assert_eq!(&reply[38..42], &[10, 98, 0, 2]);
    assert_eq!(datapath.stats()[stat::ARP_ANSWERED as usize], 1);

    // Warm hosts, and addresses imag does not know, answer for themselves.
    for target in [WARM, OTHER] {
        assert_eq!(
            datapath
                .run_hold_program(hook, &arp_request(target), LO)
                .unwrap()
                .0,
            Pass
        );
    }
}

#[test]
fn arp_on_an_attach_interface_is_answered_only_with_proxy_arp() {
    for hook in HOOKS {
        arp_on_an_attach_interface_is_answered_only_with_proxy_arp_by(hook);
    }
}

fn arp_on_an_attach_interface_is_answered_only_with_proxy_arp_by(hook: TestHook) {
    let mut datapath = loaded();
    datapath.set_interface(LO, IFACE_MAC, 0).unwrap();
    assert_eq!(
        datapath
            .run_hold_program(hook, &arp_request(COLD), LO)
            .unwrap()
            .0,
        Pass
    );
    datapath
        .set_host(COLD, 7, true, HOST_FLAG_PROXY_ARP)
        .unwrap();
    assert_eq!(
        datapath
            .run_hold_program(hook, &arp_request(COLD), LO)
            .unwrap()
            .0,
        Bounce
    );
    // A probe (sender 0.0.0.0) is never answered: it is someone checking the address is free.
    let mut probe = arp_request(COLD);
    probe[28..32].copy_from_slice(&[0; 4]);
    assert_eq!(datapath.run_hold_program(hook, &probe, LO).unwrap().0, Pass);
}

fn echo_request_to(dst: Ipv4Addr) -> Vec<u8> {
    let mut frame = Vec::new();
    PacketBuilder::ethernet2(CLIENT_MAC, IFACE_MAC)
        .ipv4([10, 98, 0, 2], dst.octets(), 61)
        .icmpv4_echo_request(7, 1)
        .write(&mut frame, b"are you there")
        .unwrap();
    frame
}

#[test]
fn pings_to_a_cold_host_are_answered_without_holding() {
    for hook in HOOKS {
        pings_to_a_cold_host_are_answered_without_holding_by(hook);
    }
}

fn pings_to_a_cold_host_are_answered_without_holding_by(hook: TestHook) {
    let mut datapath = loaded();
    let mut ring = datapath.take_held_frames().unwrap();
    datapath
        .set_host(COLD, 7, true, HOST_FLAG_ANSWER_PING)
        .unwrap();
    let (verdict, reply) = datapath
        .run_hold_program(hook, &echo_request_to(COLD), 0)
        .unwrap();
    assert_eq!(verdict, Bounce);
    assert!(
        ring.next().is_none(),
        "the ping is not held: it wakes nothing"
    );
    let packet = etherparse::SlicedPacket::from_ethernet(&reply).expect("a well-formed reply");
    let Some(etherparse::NetSlice::Ipv4(ip)) = &packet.net else {
        panic!("IPv4")
    };
    assert_eq!(ip.header().source_addr(), COLD);
    assert_eq!(ip.header().destination_addr(), Ipv4Addr::new(10, 98, 0, 2));
    assert_eq!(ip.header().ttl(), 64);
    assert_eq!(
        ip.header().header_checksum(),
        ip.header().to_header().calc_header_checksum(),
        "IP checksum valid"
    );
    let Some(etherparse::TransportSlice::Icmpv4(icmp)) = &packet.transport else {
        panic!("ICMP")
    };
    assert_eq!(icmp.type_u8(), 0, "an echo reply");
    assert_eq!(icmp.payload(), b"are you there");
    let mut recomputed = icmp.header();
    recomputed.update_checksum(icmp.payload());
    assert_eq!(icmp.checksum(), recomputed.checksum, "ICMP checksum valid");

    // Without the flag, a ping is a packet like any other: held, so that it wakes the host.
    datapath.set_host(COLD, 7, true, 0).unwrap();
    assert_eq!(
        datapath
            .run_hold_program(hook, &echo_request_to(COLD), 0)
            .unwrap()
            .0,
        Drop
    );
    assert!(ring.next().is_some());
}
