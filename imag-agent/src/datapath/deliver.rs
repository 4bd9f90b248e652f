//! Re-delivery of a held frame: the kernel takes it into the stack again, now that its host is
//! warm, so the client's own packet reaches the woken host.
//!
//! Two ways, chosen by the kernel on the first delivery:
//! - **Live frames** (preferred): the `imag_deliver` program (which returns `XDP_PASS`) runs through
//!   `BPF_PROG_TEST_RUN` in live-frames mode; the kernel builds an skb from the frame and passes it
//!   up from the interface it was held on, so routing, netfilter and conntrack treat it exactly
//!   like the original packet. The XDP holding program on that interface does not see it again.
//! - **Raw IP socket** (fallback): some kernels refuse live frames (a hardened build answers
//!   `EPERM` even to root). The frame's IPv4 packet is then sent through an `IPPROTO_RAW` socket,
//!   header included: the host routes it to the woken container as a locally sent packet (OUTPUT
//!   instead of PREROUTING/FORWARD), with the client's addresses and ports untouched, so the
//!   container answers the client's own SYN or datagram and conntrack matches the replies.
//!
//! Neighbours: `orchestrator` decides when (after the host is warm and the frame's checksum is
//! fixed by `packets`); the frames come from [`super::ring`].

use std::{
    io,
    net::Ipv4Addr,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    sync::{
        OnceLock,
        atomic::{AtomicBool, Ordering},
    },
};

use aya::programs::{ProgramError, TestRun, TestRunAttrs, TestRunOptions, Xdp};
use etherparse::{EtherType, Ethernet2HeaderSlice, Ipv4HeaderSlice};
use imag_common::programs;
use tracing::warn;

use super::{Datapath, DatapathError};

/// How held frames go back into the stack; decided by the kernel's answer to the first one.
#[derive(Default)]
pub(super) struct Injector {
    /// Set once the kernel refused live frames: every later frame goes through `raw`.
    live_refused: AtomicBool,
    raw: OnceLock<Result<OwnedFd, i32>>,
}

impl Datapath {
    /// Takes `frame`, held on `ifindex`, into the stack again (see the module's documentation).
    pub fn deliver(&self, ifindex: u32, frame: &[u8]) -> Result<(), DatapathError> {
        if !self.injector.live_refused.load(Ordering::Relaxed) {
            match self.deliver_live(ifindex, frame) {
                Err(DatapathError::Deliver { source, .. }) if live_frames_refused(&source) => {
                    warn!(
                        error = %source,
                        "this kernel refuses BPF_PROG_TEST_RUN live frames; held packets are \
                         re-delivered through a raw IP socket instead (routed as locally sent)"
                    );
                    self.injector.live_refused.store(true, Ordering::Relaxed);
                }
                other => return other,
            }
        }
        self.injector
            .send_raw(frame)
            .map_err(|source| DatapathError::DeliverRaw { ifindex, source })
    }

    fn deliver_live(&self, ifindex: u32, frame: &[u8]) -> Result<(), DatapathError> {
        let program: &Xdp = self
            .ebpf
            .program(programs::DELIVER)
            .ok_or(DatapathError::Missing {
                what: "program",
                name: programs::DELIVER,
            })?
            .try_into()
            .map_err(|source| DatapathError::Program {
                name: programs::DELIVER,
                source,
            })?;
        let ctx = xdp_md_for(ifindex, frame.len());
        let opts = TestRunOptions {
            data_in: Some(frame),
            ctx_in: Some(&ctx),
            repeat: 1,
            attrs: TestRunAttrs::new().xdp_live_frames(1),
            ..TestRunOptions::new()
        };
        program
            .test_run(opts)
            .map(|_| ())
            .map_err(|source| DatapathError::Deliver { ifindex, source })
    }
}

/// Whether the kernel refused live frames as such (rather than this one frame).
fn live_frames_refused(err: &ProgramError) -> bool {
    /// The kernel's ENOTSUPP (not EOPNOTSUPP), which `BPF_PROG_TEST_RUN` uses.
    const ENOTSUPP: i32 = 524;
    let ProgramError::SyscallError(err) = err else {
        return false;
    };
    matches!(
        err.io_error.raw_os_error(),
        Some(libc::EPERM | libc::EACCES | libc::EOPNOTSUPP | ENOTSUPP)
    )
}

impl Injector {
    /// Sends the IPv4 packet of an Ethernet frame through the raw socket, to its destination.
    fn send_raw(&self, frame: &[u8]) -> io::Result<()> {
        let (packet, dst) = ipv4_packet(frame)?;
        let fd = match self.raw.get_or_init(open_raw) {
            Ok(fd) => fd,
            Err(errno) => return Err(io::Error::from_raw_os_error(*errno)),
        };
        // SAFETY: sockaddr_in is plain data; zeroed is a valid starting point.
        let mut addr: libc::sockaddr_in = unsafe { std::mem::zeroed() };
        addr.sin_family = libc::sa_family_t::try_from(libc::AF_INET).unwrap_or_default();
        addr.sin_addr.s_addr = u32::from_ne_bytes(dst.octets());
        // SAFETY: valid socket, buffer and address of the stated sizes.
        let sent = unsafe {
            libc::sendto(
                fd.as_raw_fd(),
                packet.as_ptr().cast(),
                packet.len(),
                0,
                (&raw const addr).cast(),
                libc::socklen_t::try_from(std::mem::size_of::<libc::sockaddr_in>())
                    .unwrap_or_default(),
            )
        };
        if sent < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

/// An `IPPROTO_RAW` socket: it sends whole IPv4 packets, header included, and receives nothing.
fn open_raw() -> Result<OwnedFd, i32> {
    // SAFETY: plain socket(2) call; the fd is owned right away.
    let fd = unsafe {
        libc::socket(
            libc::AF_INET,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::IPPROTO_RAW,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EIO));
    }
    // SAFETY: fd is a fresh, valid descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The IPv4 packet an Ethernet frame carries, cut to the IP header's total length (a short
/// frame's Ethernet padding is not part of it: the kernel would take it for payload), and its
/// destination.
fn ipv4_packet(frame: &[u8]) -> io::Result<(&[u8], Ipv4Addr)> {
    let invalid = |what: &str| io::Error::new(io::ErrorKind::InvalidInput, what.to_owned());
    let eth = Ethernet2HeaderSlice::from_slice(frame)
        .map_err(|_| invalid("frame shorter than an Ethernet header"))?;
    if eth.ether_type() != EtherType::IPV4 {
        return Err(invalid("not an IPv4 frame"));
    }
    let rest = &frame[eth.slice().len()..];
    let ip = Ipv4HeaderSlice::from_slice(rest).map_err(|_| invalid("truncated IPv4 header"))?;
    let total = usize::from(ip.total_len());
    if total < ip.slice().len() || total > rest.len() {
        return Err(invalid("IPv4 total length does not match the frame"));
    }
    Ok((&rest[..total], ip.destination_addr()))
}

/// A `struct xdp_md` for `BPF_PROG_TEST_RUN`: the frame starts at offset 0, has no metadata, and
/// arrived on `ifindex` (queue 0).
#[allow(
    clippy::cast_possible_truncation,
    reason = "a test frame is at most a page long; `struct xdp_md` holds offsets as u32"
)]
pub(super) fn xdp_md_for(ifindex: u32, len: usize) -> [u8; 24] {
    let fields: [u32; 6] = [0, len as u32, 0, ifindex, 0, 0];
    let mut ctx = [0u8; 24];
    for (chunk, field) in ctx.chunks_exact_mut(4).zip(fields) {
        chunk.copy_from_slice(&field.to_ne_bytes());
    }
    ctx
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packets::tests::tcp_syn;

    #[test]
    fn the_raw_path_sends_the_ip_packet_without_ethernet_padding() {
        let mut frame = tcp_syn([10, 78, 0, 2], [10, 77, 0, 10], 40000, 8080);
        let ip_len = frame.len() - 14;
        frame.resize(frame.len() + 6, 0);
        let (packet, dst) = ipv4_packet(&frame).unwrap();
        assert_eq!(packet.len(), ip_len);
        assert_eq!(packet[0] >> 4, 4);
        assert_eq!(dst, Ipv4Addr::new(10, 77, 0, 10));
    }

    #[test]
    fn the_raw_path_refuses_what_is_not_ipv4() {
        let mut frame = tcp_syn([10, 78, 0, 2], [10, 77, 0, 10], 40000, 8080);
        frame[12..14].copy_from_slice(&0x86ddu16.to_be_bytes());
        assert!(ipv4_packet(&frame).is_err());
        assert!(ipv4_packet(&frame[..20]).is_err());
        let mut short = tcp_syn([10, 78, 0, 2], [10, 77, 0, 10], 40000, 8080);
        short.truncate(30);
        assert!(ipv4_packet(&short).is_err());
    }
}
