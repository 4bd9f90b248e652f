//! The holding programs on crafted frames through `BPF_PROG_TEST_RUN`, in the real kernel: a table
//! of cases (what the datapath was told, the frame → the verdict, the frame that leaves, the ring
//! buffer record, the counters), every one run by one loop for both holding programs, `imag_hold`
//! (XDP) and `imag_hold_tc` (TC), on a freshly loaded datapath.
//!
//! To add a case, add a row to `cases()`.

use std::net::Ipv4Addr;

use imag_agent::datapath::{
    Datapath, HostMode, TestHook,
    TestVerdict::{self, Bounce, Drop, Pass},
    ring::parse_record,
};
use imag_common::{
    HOST_FLAG_ANSWER_PING, HOST_FLAG_PROXY_ARP, HOST_FLAG_RESTRICTED, IFACE_FLAG_BRIDGE, stat,
};
use ipnet::Ipv4Net;

mod support;
use support::*;

/// One row: given a datapath that `given` prepared, `frame` arriving on `ifindex` gets `verdict`,
/// leaves as `reply` says, leaves `held` in the ring buffer, and the counters are `counters`.
struct Case {
    what: &'static str,
    /// What the agent told the datapath beyond `loaded()` (and any earlier frames it saw).
    given: fn(&mut Datapath, TestHook),
    frame: Vec<u8>,
    ifindex: u32,
    verdict: TestVerdict,
    reply: Reply,
    held: Held,
    /// Counters (index, value) after the frame, earlier frames of `given` included.
    counters: Vec<(u32, u64)>,
}

/// The frame as the program left it.
enum Reply {
    /// Not looked at (the frame passed or was dropped).
    Unchecked,
    /// An ARP reply from the interface saying "this address is at the interface's MAC".
    ArpFor(Ipv4Addr),
    /// An ICMP echo reply from this address to the client, checksums valid.
    EchoFrom(Ipv4Addr),
}

/// What the frame left in the held-frames ring buffer.
enum Held {
    Nothing,
    /// Exactly one record: the whole frame, for the cold host.
    Whole,
}

fn nothing(_: &mut Datapath, _: TestHook) {}

#[allow(
    clippy::too_many_lines,
    clippy::items_after_statements,
    reason = "the table of cases, in groups; each group's set-up functions sit beside its rows"
)]
fn cases() -> Vec<Case> {
    let syn = syn_to(COLD);
    let mut cases = vec![
        Case {
            what: "a packet for a cold host is held whole",
            given: nothing,
            frame: syn.clone(),
            ifindex: 0,
            verdict: Drop,
            reply: Reply::Unchecked,
            held: Held::Whole,
            counters: vec![(stat::HELD, 1)],
        },
        Case {
            what: "a packet for a warm host passes",
            given: nothing,
            frame: syn_to(WARM),
            ifindex: 0,
            verdict: Pass,
            reply: Reply::Unchecked,
            held: Held::Nothing,
            counters: vec![(stat::PASSED_WARM, 1), (stat::HELD, 0)],
        },
        Case {
            what: "a packet for another address passes",
            given: nothing,
            frame: syn_to(OTHER),
            ifindex: 0,
            verdict: Pass,
            reply: Reply::Unchecked,
            held: Held::Nothing,
            counters: vec![(stat::PASSED_OTHER, 1), (stat::HELD, 0)],
        },
        Case {
            what: "switching a host to pass takes effect at once",
            given: |datapath, hook| {
                let verdict = datapath.run_hold_program(hook, &syn_to(COLD), 0);
                assert!(matches!(verdict, Ok((Drop, _))), "held first: {verdict:?}");
                datapath.set_host(COLD, COLD_ID, HostMode::Pass, 0).unwrap();
            },
            frame: syn.clone(),
            ifindex: 0,
            verdict: Pass,
            reply: Reply::Unchecked,
            held: Held::Nothing,
            counters: vec![(stat::HELD, 1), (stat::PASSED_WARM, 1)],
        },
        // Hosts whose addresses share a `HOST_SLOTS` slot (4096 apart): the first keeps it, the
        // other is found in `HOSTS`; neither is taken for the other.
        Case {
            what: "a warm host whose slot a cold host holds passes",
            given: |datapath, _| datapath.set_host(SHADOW, 9, HostMode::Pass, 0).unwrap(),
            frame: syn_to(SHADOW),
            ifindex: 0,
            verdict: Pass,
            reply: Reply::Unchecked,
            held: Held::Nothing,
            counters: vec![(stat::PASSED_WARM, 1), (stat::HELD, 0)],
        },
        Case {
            what: "a cold host keeps its slot beside a warm host that shares it",
            given: |datapath, _| datapath.set_host(SHADOW, 9, HostMode::Pass, 0).unwrap(),
            frame: syn.clone(),
            ifindex: 0,
            verdict: Drop,
            reply: Reply::Unchecked,
            held: Held::Whole,
            counters: vec![(stat::HELD, 1), (stat::PASSED_WARM, 0)],
        },
        Case {
            what: "a host that shares its slot switches to pass at once",
            given: |datapath, _| {
                datapath.set_host(SHADOW, 9, HostMode::Hold, 0).unwrap();
                datapath.set_host(COLD, COLD_ID, HostMode::Pass, 0).unwrap();
                datapath.set_host(SHADOW, 9, HostMode::Pass, 0).unwrap();
            },
            frame: syn_to(SHADOW),
            ifindex: 0,
            verdict: Pass,
            reply: Reply::Unchecked,
            held: Held::Nothing,
            counters: vec![(stat::PASSED_WARM, 1), (stat::HELD, 0)],
        },
    ];
    // Malformed frames for a cold host pass untouched; options and fragments are counted.
    let mut with_options = syn.clone();
    with_options[14] = 0x46; // IHL 6: one word of options
    let mut fragment = syn.clone();
    fragment[14 + 6] = 0x20; // more fragments
    let mut later_fragment = syn.clone();
    later_fragment[14 + 7] = 0x10; // offset 16
    let mut ipv6 = syn.clone();
    ipv6[12..14].copy_from_slice(&0x86ddu16.to_be_bytes());
    let mut arp = syn.clone();
    arp[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
    for (what, frame, unparsed) in [
        (
            "a cold host's packet with IPv4 options passes",
            with_options,
            1,
        ),
        ("a cold host's first fragment passes", fragment, 1),
        ("a cold host's later fragment passes", later_fragment, 1),
        ("IPv6 passes", ipv6, 0),
        ("ARP-typed garbage (not a proxy-ARP host) passes", arp, 0),
        ("a truncated IPv4 header passes", syn[..14 + 10].to_vec(), 0),
        ("a bare Ethernet header passes", syn[..14].to_vec(), 0),
    ] {
        cases.push(Case {
            what,
            given: nothing,
            frame,
            ifindex: 0,
            verdict: Pass,
            reply: Reply::Unchecked,
            held: Held::Nothing,
            counters: vec![(stat::PASSED_UNPARSED, unparsed)],
        });
    }
    // ARP: the bridge answers for every non-warm host; attach interfaces only with proxy ARP.
    fn bridge(datapath: &mut Datapath, _: TestHook) {
        datapath
            .set_interface(LO, IFACE_MAC, IFACE_FLAG_BRIDGE)
            .unwrap();
    }
    fn attach_interface(datapath: &mut Datapath, _: TestHook) {
        datapath.set_interface(LO, IFACE_MAC, 0).unwrap();
    }
    fn proxy_arp(datapath: &mut Datapath, hook: TestHook) {
        attach_interface(datapath, hook);
        datapath
            .set_host(COLD, COLD_ID, HostMode::Hold, HOST_FLAG_PROXY_ARP)
            .unwrap();
    }
    let mut probe = arp_request(COLD);
    probe[28..32].copy_from_slice(&[0; 4]); // sender 0.0.0.0
    for (what, given, frame, verdict, answered) in [
        (
            "ARP for a cold host is answered on the bridge with its MAC",
            bridge as fn(&mut Datapath, TestHook),
            arp_request(COLD),
            Bounce,
            1,
        ),
        (
            "ARP for a warm host is left to the host on the bridge",
            bridge,
            arp_request(WARM),
            Pass,
            0,
        ),
        (
            "ARP for another address is left alone on the bridge",
            bridge,
            arp_request(OTHER),
            Pass,
            0,
        ),
        (
            "ARP for a cold host is not answered on an attach interface without proxy ARP",
            attach_interface,
            arp_request(COLD),
            Pass,
            0,
        ),
        (
            "ARP for a cold host is answered on an attach interface with proxy ARP",
            proxy_arp,
            arp_request(COLD),
            Bounce,
            1,
        ),
        (
            "an ARP probe (someone checking the address is free) is never answered",
            proxy_arp,
            probe,
            Pass,
            0,
        ),
    ] {
        cases.push(Case {
            what,
            given,
            frame,
            ifindex: LO,
            verdict,
            reply: if verdict == Bounce {
                Reply::ArpFor(COLD)
            } else {
                Reply::Unchecked
            },
            held: Held::Nothing,
            counters: vec![(stat::ARP_ANSWERED, answered)],
        });
    }
    cases.extend([
        Case {
            what: "a ping to a cold host that wants pings answered is answered without holding",
            given: |datapath, _| {
                datapath
                    .set_host(COLD, COLD_ID, HostMode::Hold, HOST_FLAG_ANSWER_PING)
                    .unwrap();
            },
            frame: echo_request_to(COLD),
            ifindex: 0,
            verdict: Bounce,
            reply: Reply::EchoFrom(COLD),
            held: Held::Nothing,
            counters: vec![(stat::PING_ANSWERED, 1), (stat::HELD, 0)],
        },
        Case {
            what: "without the flag, a ping is held like any packet, so that it wakes the host",
            given: nothing,
            frame: echo_request_to(COLD),
            ifindex: 0,
            verdict: Drop,
            reply: Reply::Unchecked,
            held: Held::Whole,
            counters: vec![(stat::HELD, 1), (stat::PING_ANSWERED, 0)],
        },
    ]);
    cases.extend(allow_cases());
    cases.extend(hygiene_cases());
    cases
}

/// Only what is meant wakes a host; tagged frames are never held; proxy ARP covers warm hosts.
fn hygiene_cases() -> Vec<Case> {
    fn answering_pings(datapath: &mut Datapath, _: TestHook) {
        datapath
            .set_host(COLD, COLD_ID, HostMode::Hold, HOST_FLAG_ANSWER_PING)
            .unwrap();
    }
    fn proxy_arp_for_both(datapath: &mut Datapath, _: TestHook) {
        datapath.set_interface(LO, IFACE_MAC, 0).unwrap();
        datapath
            .set_host(COLD, COLD_ID, HostMode::Hold, HOST_FLAG_PROXY_ARP)
            .unwrap();
        datapath
            .set_host(WARM, WARM_ID, HostMode::Pass, HOST_FLAG_PROXY_ARP)
            .unwrap();
    }
    let not_waking = |what, given, frame| Case {
        what,
        given,
        frame,
        ifindex: 0,
        verdict: Drop,
        reply: Reply::Unchecked,
        held: Held::Nothing,
        counters: vec![
            (stat::DROPPED_NOT_WAKING, 1),
            (stat::HELD, 0),
            (stat::PING_ANSWERED, 0),
        ],
    };
    let tagged_to = |dst| tagged(&syn_to(dst), 5);
    vec![
        not_waking(
            "an ICMP timestamp request does not wake a host that answers pings",
            answering_pings as fn(&mut Datapath, TestHook),
            icmp_to(COLD, 13),
        ),
        not_waking(
            "an ICMP timestamp request does not wake a host without answer_ping either",
            nothing,
            icmp_to(COLD, 13),
        ),
        not_waking(
            "an ICMP error for a cold host wakes nothing",
            nothing,
            icmp_to(COLD, 3),
        ),
        not_waking("a TCP reset wakes nothing", nothing, rst_to(COLD)),
        Case {
            what: "a VLAN-tagged frame for a cold host passes untouched, never held",
            given: nothing,
            frame: tagged_to(COLD),
            ifindex: 0,
            verdict: Pass,
            reply: Reply::Unchecked,
            held: Held::Nothing,
            counters: vec![(stat::HELD, 0), (stat::PASSED_OTHER, 1)],
        },
        Case {
            what: "a VLAN-tagged ARP request for a cold host is not answered on the bridge",
            given: |datapath, _| {
                datapath
                    .set_interface(LO, IFACE_MAC, IFACE_FLAG_BRIDGE)
                    .unwrap();
            },
            frame: tagged(&arp_request(COLD), 5),
            ifindex: LO,
            verdict: Pass,
            reply: Reply::Unchecked,
            held: Held::Nothing,
            counters: vec![(stat::ARP_ANSWERED, 0)],
        },
        Case {
            what: "proxy ARP answers for a warm host on an attach interface too",
            given: proxy_arp_for_both,
            frame: arp_request(WARM),
            ifindex: LO,
            verdict: Bounce,
            reply: Reply::ArpFor(WARM),
            held: Held::Nothing,
            counters: vec![(stat::ARP_ANSWERED, 1)],
        },
        Case {
            what: "proxy ARP still answers for a cold host",
            given: proxy_arp_for_both,
            frame: arp_request(COLD),
            ifindex: LO,
            verdict: Bounce,
            reply: Reply::ArpFor(COLD),
            held: Held::Nothing,
            counters: vec![(stat::ARP_ANSWERED, 1)],
        },
    ]
}

/// `allow_from`: `COLD` and `WARM` restricted to sources in `prefix` (and `ping` for `COLD`).
fn restrict(datapath: &mut Datapath, prefix: &str, ping: u8) {
    let prefix: Ipv4Net = prefix.parse().unwrap();
    datapath
        .set_allowed(&[(COLD_ID, prefix), (WARM_ID, prefix)])
        .unwrap();
    let flags = HOST_FLAG_RESTRICTED | ping;
    datapath
        .set_host(COLD, COLD_ID, HostMode::Hold, flags)
        .unwrap();
    datapath
        .set_host(WARM, WARM_ID, HostMode::Pass, flags)
        .unwrap();
}

fn allowing_the_client(datapath: &mut Datapath, _: TestHook) {
    restrict(datapath, "10.98.0.0/24", HOST_FLAG_ANSWER_PING);
}

fn denying_the_client(datapath: &mut Datapath, _: TestHook) {
    restrict(datapath, "10.50.0.0/16", HOST_FLAG_ANSWER_PING);
}

fn allow_cases() -> Vec<Case> {
    let denied = |what, frame, verdict, counters| Case {
        what,
        given: denying_the_client,
        frame,
        ifindex: 0,
        verdict,
        reply: Reply::Unchecked,
        held: Held::Nothing,
        counters,
    };
    vec![
        Case {
            what: "a restricted cold host's packet from an allowed source is held",
            given: allowing_the_client,
            frame: syn_to(COLD),
            ifindex: 0,
            verdict: Drop,
            reply: Reply::Unchecked,
            held: Held::Whole,
            counters: vec![(stat::HELD, 1), (stat::DROPPED_DENIED, 0)],
        },
        denied(
            "a restricted cold host's packet from a denied source is dropped, waking nothing",
            syn_to(COLD),
            Drop,
            vec![(stat::DROPPED_DENIED, 1), (stat::HELD, 0)],
        ),
        denied(
            "a restricted cold host does not answer a denied source's ping",
            echo_request_to(COLD),
            Drop,
            vec![(stat::DROPPED_DENIED, 1), (stat::PING_ANSWERED, 0)],
        ),
        denied(
            "a restricted warm host's connection from a denied source is dropped",
            syn_to(WARM),
            Drop,
            vec![(stat::DROPPED_DENIED, 1), (stat::PASSED_WARM, 0)],
        ),
        denied(
            "a reply to a restricted warm host's own connection passes (it opens nothing)",
            ack_to(WARM),
            Pass,
            vec![(stat::DROPPED_DENIED, 0), (stat::PASSED_WARM, 1)],
        ),
        Case {
            what: "a restricted warm host's connection from an allowed source passes",
            given: allowing_the_client,
            frame: syn_to(WARM),
            ifindex: 0,
            verdict: Pass,
            reply: Reply::Unchecked,
            held: Held::Nothing,
            counters: vec![(stat::PASSED_WARM, 1), (stat::DROPPED_DENIED, 0)],
        },
    ]
}

/// `imag_to_host`, the last hop into a container, which traffic between hosts on the bridge
/// meets instead of the holding program: the same rule for restricted hosts.
#[test]
#[allow(
    clippy::items_after_statements,
    reason = "the row type sits next to its table"
)]
fn the_host_link_refuses_denied_sources() {
    imag_testkit::require_environment();
    // (what, given, frame, ingress ifindex, verdict, dropped_denied)
    type Row = (
        &'static str,
        fn(&mut Datapath, TestHook),
        Vec<u8>,
        u32,
        TestVerdict,
        u64,
    );
    let rows: [Row; 6] = [
        (
            "a denied neighbour's SYN to a warm host",
            denying_the_client,
            syn_to(WARM),
            LO,
            Drop,
            1,
        ),
        (
            "an allowed neighbour's SYN to a warm host",
            allowing_the_client,
            syn_to(WARM),
            LO,
            Pass,
            0,
        ),
        (
            "a reply from a denied neighbour",
            denying_the_client,
            ack_to(WARM),
            LO,
            Pass,
            0,
        ),
        (
            "the machine's own packet (agent probe)",
            denying_the_client,
            syn_to(WARM),
            0,
            Pass,
            0,
        ),
        (
            "a denied neighbour's packet to a cold host",
            denying_the_client,
            ack_to(COLD),
            LO,
            Drop,
            1,
        ),
        ("an unrestricted host", nothing, syn_to(WARM), LO, Pass, 0),
    ];
    for (what, given, frame, ingress, verdict, denied) in rows {
        let mut datapath = loaded();
        let mut ring = datapath.take_held_frames().unwrap();
        given(&mut datapath, TestHook::ToHost);
        let result = datapath.run_hold_program(TestHook::ToHost, &frame, ingress);
        let Ok((got, _)) = result else {
            panic!("{what}: the test run failed: {result:?}");
        };
        assert_eq!(got, verdict, "{what}: verdict");
        let stats = datapath.stats();
        assert_eq!(
            stats[stat::DROPPED_DENIED as usize],
            denied,
            "{what}: dropped_denied"
        );
        if denied > 0 {
            assert!(ring.next().is_none(), "{what}: a denied packet is not held");
        }
    }
}

#[test]
fn every_case_for_both_holding_programs() {
    imag_testkit::require_environment();
    for hook in TestHook::ALL {
        for case in cases() {
            if hook == TestHook::Tc && case.frame.len() < 14 + 20 {
                // BPF_PROG_TEST_RUN refuses (EINVAL) to build an skb from an IPv4 frame shorter
                // than an IP header, before any program runs; the XDP runs cover these frames.
                continue;
            }
            run(hook, &case);
        }
    }
}

fn run(hook: TestHook, case: &Case) {
    let what = format!("{} ({hook:?})", case.what);
    let mut datapath = loaded();
    let mut ring = datapath.take_held_frames().unwrap();
    (case.given)(&mut datapath, hook);
    // Records of frames `given` ran are its own business.
    while ring.next().is_some() {}

    let result = datapath.run_hold_program(hook, &case.frame, case.ifindex);
    let Ok((verdict, out)) = result else {
        panic!("{what}: the test run failed: {result:?}");
    };
    assert_eq!(verdict, case.verdict, "{what}: verdict");
    match case.reply {
        Reply::Unchecked => {}
        Reply::ArpFor(addr) => check_arp_reply(&what, &out, addr),
        Reply::EchoFrom(addr) => check_echo_reply(&what, &out, addr),
    }
    match case.held {
        Held::Nothing => assert!(ring.next().is_none(), "{what}: nothing is held"),
        Held::Whole => {
            let record = ring
                .next()
                .unwrap_or_else(|| panic!("{what}: a ring buffer record for the held frame"));
            let held = parse_record(&record).expect("a well-formed record");
            assert_eq!(held.frame, case.frame, "{what}: the whole frame is copied");
            assert_eq!(held.header.host_id, COLD_ID, "{what}: host id");
            assert_eq!(
                held.header.host_addr,
                u32::from_ne_bytes(COLD.octets()),
                "{what}: host address"
            );
            assert!(held.header.held_at_ns > 0, "{what}: held_at_ns is set");
            drop(record);
            assert!(ring.next().is_none(), "{what}: exactly one record");
        }
    }
    let stats = datapath.stats();
    for &(counter, value) in &case.counters {
        assert_eq!(
            stats[counter as usize],
            value,
            "{what}: counter {}",
            stat::NAMES[counter as usize]
        );
    }
}

fn check_arp_reply(what: &str, reply: &[u8], addr: Ipv4Addr) {
    assert_eq!(&reply[0..6], &CLIENT_MAC, "{what}: to the requester");
    assert_eq!(&reply[6..12], &IFACE_MAC, "{what}: from the interface");
    assert_eq!(&reply[20..22], &[0, 2], "{what}: an ARP reply");
    assert_eq!(
        &reply[22..28],
        &IFACE_MAC,
        "{what}: sender MAC: the interface"
    );
    assert_eq!(
        &reply[28..32],
        &addr.octets(),
        "{what}: sender IP: the host"
    );
    assert_eq!(&reply[32..38], &CLIENT_MAC, "{what}: target MAC");
    assert_eq!(&reply[38..42], &CLIENT.octets(), "{what}: target IP");
}

fn check_echo_reply(what: &str, reply: &[u8], addr: Ipv4Addr) {
    let packet = etherparse::SlicedPacket::from_ethernet(reply)
        .unwrap_or_else(|e| panic!("{what}: a well-formed reply: {e}"));
    let Some(etherparse::NetSlice::Ipv4(ip)) = &packet.net else {
        panic!("{what}: IPv4")
    };
    assert_eq!(ip.header().source_addr(), addr, "{what}: from the host");
    assert_eq!(
        ip.header().destination_addr(),
        CLIENT,
        "{what}: to the client"
    );
    assert_eq!(ip.header().ttl(), 64, "{what}: TTL");
    assert_eq!(
        ip.header().header_checksum(),
        ip.header().to_header().calc_header_checksum(),
        "{what}: IP checksum valid"
    );
    let Some(etherparse::TransportSlice::Icmpv4(icmp)) = &packet.transport else {
        panic!("{what}: ICMP")
    };
    assert_eq!(icmp.type_u8(), 0, "{what}: an echo reply");
    assert_eq!(icmp.payload(), b"are you there", "{what}: payload kept");
    let mut recomputed = icmp.header();
    recomputed.update_checksum(icmp.payload());
    assert_eq!(
        icmp.checksum(),
        recomputed.checksum,
        "{what}: ICMP checksum valid"
    );
}
