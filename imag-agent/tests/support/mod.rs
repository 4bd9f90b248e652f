//! What the datapath tests share: the addresses and MACs of their made-up network, a freshly
//! loaded datapath, and the frames they feed it.
#![allow(
    dead_code,
    reason = "each test file uses its own subset of these helpers"
)]

use std::net::Ipv4Addr;

use etherparse::PacketBuilder;
use imag_agent::datapath::{Datapath, HostMode};

/// The loopback device: test runs need a real ifindex; its entry in INTERFACES is made up.
pub const LO: u32 = 1;
pub const IFACE_MAC: [u8; 6] = [2, 0xaa, 0, 0, 0, 1];
pub const CLIENT_MAC: [u8; 6] = [2, 0, 0, 0, 0, 1];
pub const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 98, 0, 2);
/// Held (host id 7) by `loaded()`.
pub const COLD: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 10);
pub const COLD_ID: u32 = 7;
/// Passed (host id 8) by `loaded()`.
pub const WARM: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 11);
/// Not an imaginary host.
pub const OTHER: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 12);
pub const WARM_ID: u32 = 8;
/// 4096 addresses above `COLD`: the same `HOST_SLOTS` slot.
pub const SHADOW: Ipv4Addr = Ipv4Addr::new(10, 99, 16, 10);

pub fn loaded() -> Datapath {
    let mut datapath = Datapath::load(None).expect("the datapath loads and passes the verifier");
    datapath.set_host(COLD, COLD_ID, HostMode::Hold, 0).unwrap();
    datapath.set_host(WARM, WARM_ID, HostMode::Pass, 0).unwrap();
    datapath
}

pub fn syn_to(dst: Ipv4Addr) -> Vec<u8> {
    let mut frame = Vec::new();
    PacketBuilder::ethernet2(CLIENT_MAC, [2, 0, 0, 0, 0, 2])
        .ipv4(CLIENT.octets(), dst.octets(), 64)
        .tcp(40000, 8080, 1, 64240)
        .syn()
        .write(&mut frame, &[])
        .unwrap();
    frame
}

/// A segment of an established connection (ACK only) from the client.
pub fn ack_to(dst: Ipv4Addr) -> Vec<u8> {
    let mut frame = Vec::new();
    PacketBuilder::ethernet2(CLIENT_MAC, [2, 0, 0, 0, 0, 2])
        .ipv4(CLIENT.octets(), dst.octets(), 64)
        .tcp(40000, 8080, 1, 64240)
        .ack(1)
        .write(&mut frame, &[])
        .unwrap();
    frame
}

pub fn arp_request(target: Ipv4Addr) -> Vec<u8> {
    let mut frame = Vec::new();
    frame.extend_from_slice(&[0xff; 6]);
    frame.extend_from_slice(&CLIENT_MAC);
    frame.extend_from_slice(&[8, 6, 0, 1, 8, 0, 6, 4, 0, 1]);
    frame.extend_from_slice(&CLIENT_MAC);
    frame.extend_from_slice(&CLIENT.octets());
    frame.extend_from_slice(&[0; 6]);
    frame.extend_from_slice(&target.octets());
    frame
}

/// A TCP reset from the client.
pub fn rst_to(dst: Ipv4Addr) -> Vec<u8> {
    let mut frame = Vec::new();
    PacketBuilder::ethernet2(CLIENT_MAC, [2, 0, 0, 0, 0, 2])
        .ipv4(CLIENT.octets(), dst.octets(), 64)
        .tcp(40000, 8080, 1, 0)
        .rst()
        .write(&mut frame, &[])
        .unwrap();
    frame
}

/// An ICMP message of type `kind` from the client (an echo request with its type changed: the
/// datapath reads the type, not the checksum).
pub fn icmp_to(dst: Ipv4Addr, kind: u8) -> Vec<u8> {
    let mut frame = echo_request_to(dst);
    frame[14 + 20] = kind;
    frame
}

/// `frame` with an 802.1Q tag (VLAN `vid`) after its Ethernet addresses.
pub fn tagged(frame: &[u8], vid: u16) -> Vec<u8> {
    let mut out = frame[..12].to_vec();
    out.extend_from_slice(&0x8100u16.to_be_bytes());
    out.extend_from_slice(&vid.to_be_bytes());
    out.extend_from_slice(&frame[12..]);
    out
}

pub fn echo_request_to(dst: Ipv4Addr) -> Vec<u8> {
    let mut frame = Vec::new();
    PacketBuilder::ethernet2(CLIENT_MAC, IFACE_MAC)
        .ipv4(CLIENT.octets(), dst.octets(), 61)
        .icmpv4_echo_request(7, 1)
        .write(&mut frame, b"are you there")
        .unwrap();
    frame
}
