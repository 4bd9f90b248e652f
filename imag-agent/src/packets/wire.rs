//! The socket through which the agent itself puts frames on a link (`AF_PACKET)`: refusals
//! ([`super::refusal`]) for held packets whose host could not be woken, and gratuitous ARP
//! announcements ([`super::gratuitous_arp`]). These go *out* of an interface, towards
//! the neighbour a held frame came from, so no routing or firewall decision is involved.

use std::{
    io,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
};

use etherparse::Ethernet2HeaderSlice;

pub struct Wire {
    socket: OwnedFd,
}

impl Wire {
    /// Opens a raw packet socket that only sends (protocol 0: it receives nothing).
    pub fn open() -> io::Result<Wire> {
        // SAFETY: plain socket(2) call; the fd is owned right away.
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is a fresh, valid descriptor nobody else owns.
        Ok(Wire {
            socket: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    /// Transmits a whole Ethernet frame out of `ifindex`.
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_possible_wrap,
        reason = "C field types: AF_PACKET is 17, a kernel ifindex is a positive int, sockaddr_ll is 20 bytes"
    )]
    pub fn send(&self, ifindex: u32, frame: &[u8]) -> io::Result<()> {
        let eth = Ethernet2HeaderSlice::from_slice(frame).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "frame shorter than an Ethernet header",
            )
        })?;
        // SAFETY: sockaddr_ll is plain data; zeroed is a valid starting point.
        let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        addr.sll_family = libc::AF_PACKET as u16;
        // In network byte order, as the kernel reads it.
        addr.sll_protocol = eth.ether_type().0.to_be();
        addr.sll_ifindex = ifindex as i32;
        addr.sll_halen = 6;
        addr.sll_addr[..6].copy_from_slice(&eth.destination());
        // SAFETY: valid socket, buffer and address of the stated sizes.
        let sent = unsafe {
            libc::sendto(
                self.socket.as_raw_fd(),
                frame.as_ptr().cast(),
                frame.len(),
                0,
                (&raw const addr).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        if sent < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}
