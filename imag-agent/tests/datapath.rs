//! `imag_hold` on crafted frames through BPF_PROG_TEST_RUN, in the real kernel: the verdicts and
//! the ring buffer records, for well-formed and malformed packets.

mod common;

use std::net::Ipv4Addr;

use etherparse::PacketBuilder;
use imag_agent::datapath::{Datapath, ring::parse_record};
use imag_common::stat;

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;
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
    common::require_environment();
    let mut datapath = Datapath::load().expect("the datapath loads and passes the verifier");
    datapath.set_host(COLD, 7, true, 0).unwrap();
    datapath.set_host(WARM, 8, false, 0).unwrap();
    datapath
}

#[test]
fn a_packet_for_a_cold_host_is_held_whole() {
    let mut datapath = loaded();
    let mut ring = datapath.take_held_frames().unwrap();
    let frame = syn_to(COLD);
    assert_eq!(datapath.run_hold_program(&frame, 0).unwrap(), XDP_DROP);
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
    let mut datapath = loaded();
    let mut ring = datapath.take_held_frames().unwrap();
    assert_eq!(
        datapath.run_hold_program(&syn_to(WARM), 0).unwrap(),
        XDP_PASS
    );
    assert_eq!(
        datapath.run_hold_program(&syn_to(OTHER), 0).unwrap(),
        XDP_PASS
    );
    assert!(ring.next().is_none(), "nothing held");
    let stats = datapath.stats();
    assert_eq!(stats[stat::PASSED_WARM as usize], 1);
    assert_eq!(stats[stat::PASSED_OTHER as usize], 1);
    assert_eq!(stats[stat::HELD as usize], 0);
}

#[test]
fn switching_a_host_to_pass_takes_effect_at_once() {
    let mut datapath = loaded();
    let frame = syn_to(COLD);
    assert_eq!(datapath.run_hold_program(&frame, 0).unwrap(), XDP_DROP);
    datapath.set_host(COLD, 7, false, 0).unwrap();
    assert_eq!(datapath.run_hold_program(&frame, 0).unwrap(), XDP_PASS);
}

#[test]
fn malformed_frames_for_a_cold_host_pass_untouched() {
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
        assert_eq!(
            datapath.run_hold_program(&frame, 0).unwrap(),
            XDP_PASS,
            "{what}"
        );
    }
    assert!(ring.next().is_none(), "nothing malformed is held");
    assert_eq!(
        datapath.stats()[stat::PASSED_UNPARSED as usize],
        3,
        "options and fragments are counted"
    );
}
