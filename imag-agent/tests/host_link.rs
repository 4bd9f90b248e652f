//! The programs on a host's own link (TC on the host side of its container's veth) on crafted
//! frames through `BPF_PROG_TEST_RUN`: `imag_from_host` holds the container to its own identity,
//! `imag_to_host` holds only what wakes. Each row runs on a freshly loaded datapath.

use std::net::Ipv4Addr;

use etherparse::PacketBuilder;
use imag_agent::datapath::{
    Datapath, HostMode, TestHook,
    TestVerdict::{self, Drop, Pass},
    pins::Pins,
    ring::{HeldFrame, parse_record},
};
use imag_common::{HOST_FLAG_IGNORES_PEERS, LINK_SLOTS_LEN, stat};
use ipnet::Ipv4Net;

mod support;
use support::*;

const CONTAINER_MAC: [u8; 6] = [2, 0x42, 0, 0, 0, 11];
const NEIGHBOUR_MAC: [u8; 6] = [2, 0x42, 0, 0, 0, 10];

/// `imag_from_host`, on a warm host's own link: the container speaks only as itself. The link
/// (the loopback device here) belongs to `WARM` with `CONTAINER_MAC`, unless the row says
/// otherwise. These checks live in a TC program on the container's link, so they run for TC only.
#[test]
#[allow(
    clippy::items_after_statements,
    clippy::too_many_lines,
    reason = "the row type sits next to its table"
)]
fn a_container_speaks_only_as_itself() {
    imag_testkit::require_environment();
    fn owned(datapath: &mut Datapath, _: TestHook) {
        datapath
            .set_link_owner(LO, WARM, Some(CONTAINER_MAC))
            .unwrap();
    }
    fn owned_mac_unknown(datapath: &mut Datapath, _: TestHook) {
        datapath.set_link_owner(LO, WARM, None).unwrap();
    }
    fn owner_forgotten(datapath: &mut Datapath, hook: TestHook) {
        owned(datapath, hook);
        datapath.remove_link_owner(LO);
    }
    // The link's `LINK_OWNERS` slot must follow its owner: had it kept the first one, a frame as
    // that one would pass.
    fn owner_replaced(datapath: &mut Datapath, hook: TestHook) {
        datapath
            .set_link_owner(LO, COLD, Some(NEIGHBOUR_MAC))
            .unwrap();
        owned(datapath, hook);
    }
    // A link whose slot another link took (ifindexes `LINK_SLOTS_LEN` apart) is judged by
    // `HOST_LINKS`, not by the other link's slot.
    fn slot_taken_by_another_link(datapath: &mut Datapath, _: TestHook) {
        datapath
            .set_link_owner(LO + LINK_SLOTS_LEN, WARM, Some(CONTAINER_MAC))
            .unwrap();
        datapath
            .set_link_owner(LO, COLD, Some(NEIGHBOUR_MAC))
            .unwrap();
    }
    // The other way round: the slot is this link's, another link shares it in `HOST_LINKS`.
    fn slot_shared_with_another_link(datapath: &mut Datapath, hook: TestHook) {
        owned(datapath, hook);
        datapath
            .set_link_owner(LO + LINK_SLOTS_LEN, COLD, Some(NEIGHBOUR_MAC))
            .unwrap();
    }
    let arp = |oper: u8, sender: Ipv4Addr, sha: [u8; 6]| {
        let mut frame = arp_request(CLIENT);
        frame[6..12].copy_from_slice(&sha);
        frame[21] = oper;
        frame[22..28].copy_from_slice(&sha);
        frame[28..32].copy_from_slice(&sender.octets());
        frame
    };
    let mut ipv6 = sent_by(WARM, CONTAINER_MAC);
    ipv6[12..14].copy_from_slice(&0x86ddu16.to_be_bytes());
    // A test run refuses (EINVAL) an IPv6 frame shorter than an IPv6 header.
    ipv6.resize(14 + 64, 0);
    // (what, given, frame, verdict, dropped_spoofed)
    type Row = (
        &'static str,
        fn(&mut Datapath, TestHook),
        Vec<u8>,
        TestVerdict,
        u64,
    );
    let rows: [Row; 19] = [
        (
            "its own address",
            owned,
            sent_by(WARM, CONTAINER_MAC),
            Pass,
            0,
        ),
        (
            "a neighbour's address as source",
            owned,
            sent_by(COLD, CONTAINER_MAC),
            Drop,
            1,
        ),
        (
            "an outside address as source",
            owned,
            sent_by(CLIENT, CONTAINER_MAC),
            Drop,
            1,
        ),
        (
            "its own address from a neighbour's MAC",
            owned,
            sent_by(WARM, NEIGHBOUR_MAC),
            Drop,
            1,
        ),
        (
            "an ARP reply as itself",
            owned,
            arp(2, WARM, CONTAINER_MAC),
            Pass,
            0,
        ),
        (
            "a gratuitous ARP claiming a neighbour's address",
            owned,
            arp(1, COLD, CONTAINER_MAC),
            Drop,
            1,
        ),
        (
            "an ARP reply claiming a neighbour's address",
            owned,
            arp(2, COLD, CONTAINER_MAC),
            Drop,
            1,
        ),
        (
            "an ARP with its own address and a neighbour's MAC",
            owned,
            arp(2, WARM, NEIGHBOUR_MAC),
            Drop,
            1,
        ),
        (
            "an ARP probe (sender 0.0.0.0)",
            owned,
            arp(1, Ipv4Addr::UNSPECIFIED, CONTAINER_MAC),
            Pass,
            0,
        ),
        ("IPv6 from its own MAC", owned, ipv6, Pass, 0),
        (
            "a neighbour's address, the container's MAC unknown",
            owned_mac_unknown,
            sent_by(COLD, NEIGHBOUR_MAC),
            Drop,
            1,
        ),
        (
            "its own address, the container's MAC unknown",
            owned_mac_unknown,
            sent_by(WARM, NEIGHBOUR_MAC),
            Pass,
            0,
        ),
        (
            "a link whose owner was forgotten is not checked",
            owner_forgotten,
            sent_by(COLD, NEIGHBOUR_MAC),
            Pass,
            0,
        ),
        (
            "its earlier owner's identity, after a new owner",
            owner_replaced,
            sent_by(COLD, NEIGHBOUR_MAC),
            Drop,
            1,
        ),
        (
            "its own identity, after a new owner",
            owner_replaced,
            sent_by(WARM, CONTAINER_MAC),
            Pass,
            0,
        ),
        (
            "the identity of the link that took its slot",
            slot_taken_by_another_link,
            sent_by(WARM, CONTAINER_MAC),
            Drop,
            1,
        ),
        (
            "its own identity, its slot taken by another link",
            slot_taken_by_another_link,
            sent_by(COLD, NEIGHBOUR_MAC),
            Pass,
            0,
        ),
        (
            "the identity of a link sharing its slot",
            slot_shared_with_another_link,
            sent_by(COLD, NEIGHBOUR_MAC),
            Drop,
            1,
        ),
        (
            "its own identity, its slot shared with another link",
            slot_shared_with_another_link,
            sent_by(WARM, CONTAINER_MAC),
            Pass,
            0,
        ),
    ];
    for (what, given, frame, verdict, spoofed) in rows {
        let mut datapath = loaded();
        given(&mut datapath, TestHook::FromHost);
        let result = datapath.run_hold_program(TestHook::FromHost, &frame, LO);
        let Ok((got, _)) = result else {
            panic!("{what}: the test run failed: {result:?}");
        };
        assert_eq!(got, verdict, "{what}: verdict");
        assert_eq!(
            datapath.stats()[stat::DROPPED_SPOOFED as usize],
            spoofed,
            "{what}: dropped_spoofed"
        );
    }
}

/// Runs `hook` on `frame` arriving on the loopback device; its verdict and the frame it held.
fn run_on_link(
    datapath: &mut Datapath,
    hook: TestHook,
    frame: &[u8],
    what: &str,
) -> (TestVerdict, Option<HeldFrame>) {
    let mut ring = datapath.take_held_frames().unwrap();
    let result = datapath.run_hold_program(hook, frame, LO);
    let Ok((got, _)) = result else {
        panic!("{what}: the test run failed: {result:?}");
    };
    let held = ring
        .next()
        .map(|record| parse_record(&record).expect("a well-formed record"));
    (got, held)
}

/// `imag_to_host` holds a neighbour's packet to a host that is not warm only if it wakes it.
#[test]
fn the_host_link_holds_only_what_wakes() {
    imag_testkit::require_environment();
    for (what, frame, verdict, held, not_waking) in [
        ("a neighbour's SYN", syn_to(COLD), Drop, true, 0),
        (
            "a neighbour's ICMP timestamp",
            icmp_to(COLD, 13),
            Drop,
            false,
            1,
        ),
        ("a neighbour's TCP reset", rst_to(COLD), Drop, false, 1),
    ] {
        let mut datapath = loaded();
        // A neighbour's bridge port: an ifindex the datapath does not run on.
        let (got, frame_held) = run_on_link(&mut datapath, TestHook::ToHost, &frame, what);
        assert_eq!(got, verdict, "{what}: verdict");
        assert_eq!(frame_held.is_some(), held, "{what}: held");
        assert_eq!(
            datapath.stats()[stat::DROPPED_NOT_WAKING as usize],
            not_waking,
            "{what}: dropped_not_waking"
        );
    }
}

/// `frame` as the warm host's container sends it, to the neighbour's own MAC.
fn from_warm(mut frame: Vec<u8>) -> Vec<u8> {
    frame[0..6].copy_from_slice(&NEIGHBOUR_MAC);
    frame[6..12].copy_from_slice(&CONTAINER_MAC);
    frame[26..30].copy_from_slice(&WARM.octets());
    let mut ip = etherparse::Ipv4HeaderSlice::from_slice(&frame[14..])
        .unwrap()
        .to_header();
    ip.header_checksum = ip.calc_header_checksum();
    frame[14..34].copy_from_slice(&ip.to_bytes());
    frame
}

/// `imag_from_host` holds what a warm container sends to a neighbour that is not warm, whatever
/// MAC it is addressed to (a container may still know a stopped neighbour's own MAC, whose port is
/// gone, or reach a neighbour being started before its link is guarded): only what wakes it.
#[test]
fn a_warm_container_s_packets_to_a_cold_neighbour_are_held_where_they_are_sent() {
    imag_testkit::require_environment();
    // (what, frame, verdict, held, dropped_not_waking)
    for (what, frame, verdict, held, not_waking) in [
        (
            "a SYN to a cold neighbour",
            from_warm(syn_to(COLD)),
            Drop,
            true,
            0,
        ),
        (
            "a ping to a cold neighbour",
            from_warm(echo_request_to(COLD)),
            Drop,
            true,
            0,
        ),
        (
            "a TCP reset to a cold neighbour",
            from_warm(rst_to(COLD)),
            Drop,
            false,
            1,
        ),
        (
            "a SYN to a warm neighbour",
            from_warm(syn_to(WARM)),
            Pass,
            false,
            0,
        ),
        (
            "a SYN to an address of no host",
            from_warm(syn_to(OTHER)),
            Pass,
            false,
            0,
        ),
    ] {
        let mut datapath = loaded();
        datapath
            .set_link_owner(LO, WARM, Some(CONTAINER_MAC))
            .unwrap();
        let (got, frame_held) = run_on_link(&mut datapath, TestHook::FromHost, &frame, what);
        assert_eq!(got, verdict, "{what}: verdict");
        assert_eq!(frame_held.is_some(), held, "{what}: held");
        if let Some(record) = frame_held {
            assert_eq!(
                record.header.host_id, COLD_ID,
                "{what}: held for the cold host"
            );
            assert_eq!(
                record.header.ifindex, LO,
                "{what}: held on the sender's port"
            );
            assert_eq!(record.frame, frame, "{what}: the whole frame");
        }
        let stats = datapath.stats();
        assert_eq!(
            stats[stat::HELD_AT_HOST_LINK as usize],
            u64::from(held),
            "{what}: held_at_host_link"
        );
        assert_eq!(
            stats[stat::DROPPED_NOT_WAKING as usize],
            not_waking,
            "{what}: dropped_not_waking"
        );
        assert_eq!(
            stats[stat::DROPPED_SPOOFED as usize],
            0,
            "{what}: not spoofed"
        );
    }
}

/// A host about to sleep drains (`HostMode::Drain`): what the kernel routed to it before the
/// switch reaches its link after it, and must reach the container and count as its traffic (the
/// agent's look before the sleep then calls the sleep off), not be dropped there as for a host
/// that sleeps; its new packets are held where they enter, as a sleeping host's.
#[test]
fn a_draining_host_gets_what_was_past_the_hold_point_and_holds_what_is_new() {
    imag_testkit::require_environment();
    for (mode, verdict, dropped, counted) in
        [(HostMode::Drain, Pass, 0, 1), (HostMode::Hold, Drop, 1, 0)]
    {
        let what = format!("{mode:?}");
        let mut datapath = loaded();
        datapath.set_host(COLD, COLD_ID, mode, 0).unwrap();
        datapath.ensure_activity(COLD).unwrap();
        // The loopback device as an interface the datapath runs on: the packet was routed.
        datapath.set_interface(LO, IFACE_MAC, 0).unwrap();
        let (got, held) = run_on_link(&mut datapath, TestHook::ToHost, &syn_to(COLD), &what);
        assert_eq!(got, verdict, "{what}: a routed SYN at the host's link");
        assert!(held.is_none(), "{what}: nothing is held at the link");
        assert_eq!(
            datapath.stats()[stat::DROPPED_AT_HOST_LINK as usize],
            dropped,
            "{what}: dropped_at_host_link"
        );
        let activity = datapath.activity(COLD).unwrap();
        assert_eq!(activity.packets_in, counted, "{what}: counted as traffic");
        assert_eq!(
            activity.last_packet_ns > 0,
            counted > 0,
            "{what}: its time stamped"
        );
    }
    // Where packets enter, a draining host's are held: from a client (both holding programs)...
    for hook in TestHook::ALL {
        let mut datapath = loaded();
        datapath
            .set_host(COLD, COLD_ID, HostMode::Drain, 0)
            .unwrap();
        let (got, held) = run_on_link(&mut datapath, hook, &syn_to(COLD), "a client's SYN");
        assert_eq!(got, Drop, "{hook:?}: a client's SYN to a draining host");
        assert!(held.is_some(), "{hook:?}: is held");
    }
    // ... and from a neighbour's container, on its own link.
    let mut datapath = loaded();
    datapath
        .set_host(COLD, COLD_ID, HostMode::Drain, 0)
        .unwrap();
    let frame = from_warm(syn_to(COLD));
    datapath
        .set_link_owner(LO, WARM, Some(CONTAINER_MAC))
        .unwrap();
    let (got, held) = run_on_link(
        &mut datapath,
        TestHook::FromHost,
        &frame,
        "a neighbour's SYN",
    );
    assert_eq!(got, Drop, "a neighbour's SYN to a draining host");
    assert!(held.is_some(), "is held where it was sent");
}

/// A UDP packet sent from the container's link as `src` from `mac`, to the client.
fn sent_by(src: Ipv4Addr, mac: [u8; 6]) -> Vec<u8> {
    let mut frame = Vec::new();
    PacketBuilder::ethernet2(mac, CLIENT_MAC)
        .ipv4(src.octets(), CLIENT.octets(), 64)
        .udp(5353, 53)
        .write(&mut frame, b"query")
        .unwrap();
    frame
}

/// A UDP packet the warm host's container sends to the client, as itself.
fn sent_by_warm() -> Vec<u8> {
    sent_by(WARM, CONTAINER_MAC)
}

/// What a container sends counts as its host's traffic (`imag_from_host`), whether its link's
/// slot names the host or the host is looked up by the packet's source; traffic with a peer in the
/// host's idle-ignore prefixes counts as ignored, and keeps it awake no longer. A slot names the
/// host as `set_host` last told it, whichever was written first.
#[test]
#[allow(
    clippy::items_after_statements,
    reason = "the row type sits next to its table"
)]
fn what_a_container_sends_counts_as_its_host_s_traffic() {
    imag_testkit::require_environment();
    const NEW_ID: u32 = 9;
    fn owned(datapath: &mut Datapath) {
        datapath
            .set_link_owner(LO, WARM, Some(CONTAINER_MAC))
            .unwrap();
    }
    fn ignoring_the_client(datapath: &mut Datapath, id: u32) {
        datapath
            .set_host(WARM, id, HostMode::Pass, HOST_FLAG_IGNORES_PEERS)
            .unwrap();
        datapath
            .ignore_peers(id, Ipv4Net::new(CLIENT, 32).unwrap())
            .unwrap();
    }
    fn slot_taken_by_another_link(datapath: &mut Datapath) {
        datapath
            .set_link_owner(LO + LINK_SLOTS_LEN, COLD, Some(NEIGHBOUR_MAC))
            .unwrap();
        owned(datapath);
    }
    fn ignoring_then_owned(datapath: &mut Datapath) {
        ignoring_the_client(datapath, WARM_ID);
        owned(datapath);
    }
    fn owned_then_ignoring(datapath: &mut Datapath) {
        owned(datapath);
        ignoring_the_client(datapath, WARM_ID);
    }
    fn owned_then_new_id(datapath: &mut Datapath) {
        owned(datapath);
        datapath.set_host(WARM, NEW_ID, HostMode::Pass, 0).unwrap();
    }
    fn owned_then_new_id_ignoring(datapath: &mut Datapath) {
        owned(datapath);
        ignoring_the_client(datapath, NEW_ID);
    }
    // (what, given, counted, ignored)
    type Row = (&'static str, fn(&mut Datapath), u64, u64);
    let rows: [Row; 6] = [
        ("named by its link's slot", owned, 1, 0),
        (
            "looked up by its source (its slot taken by another link)",
            slot_taken_by_another_link,
            1,
            0,
        ),
        (
            "an ignored peer, flags before the owner",
            ignoring_then_owned,
            1,
            1,
        ),
        (
            "an ignored peer, flags after the owner",
            owned_then_ignoring,
            1,
            1,
        ),
        ("a new host id after the owner", owned_then_new_id, 1, 0),
        (
            "a new host id and flags after the owner",
            owned_then_new_id_ignoring,
            1,
            1,
        ),
    ];
    for (what, given, counted, ignored) in rows {
        let mut datapath = loaded();
        given(&mut datapath);
        datapath.ensure_activity(WARM).unwrap();
        datapath.ensure_activity(COLD).unwrap();
        let result = datapath.run_hold_program(TestHook::FromHost, &sent_by_warm(), LO);
        let Ok((got, _)) = result else {
            panic!("{what}: the test run failed: {result:?}");
        };
        assert_eq!(got, Pass, "{what}: verdict");
        let activity = datapath.activity(WARM).unwrap();
        assert_eq!(activity.packets_out, counted, "{what}: packets_out");
        assert_eq!(
            activity.bytes_out,
            counted * sent_by_warm().len() as u64,
            "{what}: bytes_out"
        );
        assert_eq!(activity.ignored_packets, ignored, "{what}: ignored_packets");
        assert_eq!(
            activity.last_packet_ns > 0,
            ignored == 0,
            "{what}: stamped unless ignored"
        );
        let neighbour = datapath.activity(COLD).unwrap();
        assert_eq!(
            neighbour.packets_out, 0,
            "{what}: nothing for the neighbour"
        );
    }
}

/// An agent that adopts a pinned datapath does not trust the link slots an earlier agent left:
/// they name hosts by that agent's ids. Until it writes a link's owner again, the link is judged
/// by `HOST_LINKS` and its traffic counted for the host its source names.
#[test]
fn an_adopting_agent_empties_the_link_slots_it_finds() {
    const NEW_ID: u32 = 9;
    imag_testkit::require_environment();
    let pins = Pins::for_network("imag-test-link-slots");
    let _ = pins.remove_all();
    {
        let mut earlier = Datapath::load(Some(pins.clone())).unwrap();
        earlier.set_host(WARM, WARM_ID, HostMode::Pass, 0).unwrap();
        earlier.ensure_activity(WARM).unwrap();
        earlier
            .set_link_owner(LO, WARM, Some(CONTAINER_MAC))
            .unwrap();
    }
    let mut datapath = Datapath::load(Some(pins.clone())).unwrap();
    assert!(datapath.adopted(), "the pinned maps are adopted");
    // This agent's configuration gives the host another id.
    datapath.set_host(WARM, NEW_ID, HostMode::Pass, 0).unwrap();
    datapath.ensure_activity(WARM).unwrap();
    let counted = datapath.run_hold_program(TestHook::FromHost, &sent_by_warm(), LO);
    let as_neighbour = sent_by(WARM, NEIGHBOUR_MAC);
    let forged = datapath.run_hold_program(TestHook::FromHost, &as_neighbour, LO);
    let activity = datapath.activity(WARM);
    let stats = datapath.stats();
    drop(datapath);
    pins.remove_all().unwrap();
    assert_eq!(counted.unwrap().0, Pass, "its own packet passes");
    assert_eq!(
        activity.unwrap().packets_out,
        1,
        "counted under the host's new id"
    );
    assert_eq!(forged.unwrap().0, Drop, "the earlier owner still holds");
    assert_eq!(stats[stat::DROPPED_SPOOFED as usize], 1, "dropped_spoofed");
}
