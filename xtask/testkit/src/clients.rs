//! Real clients, run from inside a client namespace (see [`crate::netns::ClientNs::run`]): HTTP
//! requests, a keep-alive connection, UDP, ICMP echo, and the kernel's TCP counters that prove a
//! first SYN was not retransmitted. Depends on `std` and `libc` only.

use std::{
    io::{self, Read, Write},
    net::{Ipv4Addr, SocketAddr, TcpStream, UdpSocket},
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    time::{Duration, Instant},
};

/// An HTTP GET of `/` on a fresh connection: the body, and the time from connect to the last
/// byte.
pub fn http_get(addr: SocketAddr, timeout: Duration) -> io::Result<(String, Duration)> {
    http_get_path(addr, "/", timeout)
}

/// Like [`http_get`], for another path.
pub fn http_get_path(
    addr: SocketAddr,
    path: &str,
    timeout: Duration,
) -> io::Result<(String, Duration)> {
    let start = Instant::now();
    let mut stream = TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let elapsed = start.elapsed();
    let body = match response.split_once("\r\n\r\n") {
        Some((head, body)) if head.starts_with("HTTP/1.1 200") => body.to_string(),
        _ => {
            return Err(io::Error::other(format!(
                "unexpected HTTP response: {response:?}"
            )));
        }
    };
    Ok((body, elapsed))
}

/// A keep-alive HTTP/1.1 connection: requests `/` again and again on one TCP connection.
pub struct HttpConnection {
    reader: io::BufReader<TcpStream>,
    writer: TcpStream,
}

impl HttpConnection {
    pub fn open(addr: SocketAddr, timeout: Duration) -> io::Result<HttpConnection> {
        let stream = TcpStream::connect_timeout(&addr, timeout)?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_nodelay(true)?;
        Ok(HttpConnection {
            reader: io::BufReader::new(stream.try_clone()?),
            writer: stream,
        })
    }

    /// One request; returns the response body.
    pub fn get(&mut self) -> io::Result<String> {
        use io::BufRead;
        self.writer
            .write_all(b"GET / HTTP/1.1\r\nHost: imag\r\n\r\n")?;
        let mut line = String::new();
        self.reader.read_line(&mut line)?;
        if !line.starts_with("HTTP/1.1 200") {
            return Err(io::Error::other(format!("unexpected status line {line:?}")));
        }
        let mut length = 0;
        loop {
            line.clear();
            if self.reader.read_line(&mut line)? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "connection closed",
                ));
            }
            if line == "\r\n" {
                break;
            }
            if let Some(value) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                length = value.trim().parse().map_err(io::Error::other)?;
            }
        }
        let mut body = vec![0; length];
        self.reader.read_exact(&mut body)?;
        String::from_utf8(body).map_err(io::Error::other)
    }
}

/// One UDP request and its answer, and the time it took.
pub fn udp_request(
    addr: SocketAddr,
    request: &[u8],
    timeout: Duration,
) -> io::Result<(Vec<u8>, Duration)> {
    let socket = UdpSocket::bind("0.0.0.0:0")?;
    socket.set_read_timeout(Some(timeout))?;
    let start = Instant::now();
    socket.send_to(request, addr)?;
    let mut buf = [0u8; 2048];
    let (len, _) = socket.recv_from(&mut buf)?;
    Ok((buf[..len].to_vec(), start.elapsed()))
}

/// A counter from the calling thread's namespace's /proc/net/netstat or /proc/net/snmp, e.g.
/// `("TcpExt", "TCPSynRetrans")`.
pub fn net_counter(group: &str, name: &str) -> io::Result<u64> {
    net_counter_in("/proc/thread-self/net", group, name)
}

/// Like [`net_counter`], in the network namespace of process `pid` (e.g. a container's).
pub fn net_counter_of(pid: u32, group: &str, name: &str) -> io::Result<u64> {
    net_counter_in(&format!("/proc/{pid}/net"), group, name)
}

fn net_counter_in(dir: &str, group: &str, name: &str) -> io::Result<u64> {
    for file in ["netstat", "snmp"] {
        let text = std::fs::read_to_string(format!("{dir}/{file}"))?;
        let mut lines = text.lines();
        while let (Some(header), Some(values)) = (lines.next(), lines.next()) {
            let (Some(h), Some(v)) = (header.strip_prefix(group), values.strip_prefix(group))
            else {
                continue;
            };
            if !h.starts_with(':') {
                continue;
            }
            let names = h[1..].split_whitespace();
            let nums = v[1..].split_whitespace();
            if let Some((_, value)) = names.zip(nums).find(|(n, _)| *n == name) {
                return value.parse().map_err(io::Error::other);
            }
        }
    }
    Err(io::Error::other(format!("no counter {group}:{name}")))
}

/// Sends one ICMP echo request to `addr` (raw socket; needs root) and waits for its reply.
#[allow(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    reason = "C socket API: AF_INET and struct sizes into their C types, the ICMP id masked to 16 \
              bits, and a recv length already checked non-negative"
)]
pub fn ping(addr: Ipv4Addr, timeout: Duration) -> io::Result<Duration> {
    // SAFETY: plain socket(2); the fd is owned right away.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_ICMP) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor nobody else owns.
    let socket = unsafe { OwnedFd::from_raw_fd(fd) };
    let tv = libc::timeval {
        tv_sec: libc::time_t::try_from(timeout.as_secs()).unwrap_or(libc::time_t::MAX),
        tv_usec: libc::suseconds_t::from(timeout.subsec_micros()),
    };
    // SAFETY: valid fd and option value of the stated size.
    unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&raw const tv).cast(),
            std::mem::size_of::<libc::timeval>() as u32,
        )
    };
    let id = (std::process::id() & 0xffff) as u16;
    let mut request = vec![8u8, 0, 0, 0];
    request.extend_from_slice(&id.to_be_bytes());
    request.extend_from_slice(&1u16.to_be_bytes());
    request.extend_from_slice(b"imag ping");
    let sum = internet_checksum(&request);
    request[2..4].copy_from_slice(&sum.to_be_bytes());
    // SAFETY: sockaddr_in is plain data.
    let mut to: libc::sockaddr_in = unsafe { std::mem::zeroed() };
    to.sin_family = libc::AF_INET as u16;
    to.sin_addr.s_addr = u32::from_ne_bytes(addr.octets());
    let start = Instant::now();
    // SAFETY: valid fd, buffer and address.
    let sent = unsafe {
        libc::sendto(
            socket.as_raw_fd(),
            request.as_ptr().cast(),
            request.len(),
            0,
            (&raw const to).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as u32,
        )
    };
    if sent < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut buf = [0u8; 1500];
    loop {
        // SAFETY: valid fd and buffer.
        let len = unsafe { libc::recv(socket.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if len < 0 {
            return Err(io::Error::last_os_error());
        }
        let packet = &buf[..len as usize];
        let ihl = usize::from(packet[0] & 0x0f) * 4;
        let Some(icmp) = packet.get(ihl..ihl + 8) else {
            continue;
        };
        if packet[12..16] == addr.octets() && icmp[0] == 0 && icmp[4..6] == id.to_be_bytes() {
            return Ok(start.elapsed());
        }
        if start.elapsed() > timeout {
            return Err(io::Error::new(io::ErrorKind::TimedOut, "no echo reply"));
        }
    }
}

fn internet_checksum(bytes: &[u8]) -> u16 {
    let mut sum: u32 = bytes
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    // Folded above: the sum fits 16 bits.
    !u16::try_from(sum).expect("folded to 16 bits")
}

/// The SYN retransmissions a client forces by itself while a wake of `wake_ms` holds its first
/// SYN: Linux sends a SYN again 1 s after the first, then 2 s, 4 s, … after the one before.
/// A test asserts no retransmission beyond these (a slow engine start is not imag's doing).
pub fn syn_retransmissions_forced(wake_ms: f64) -> u64 {
    let mut forced = 0;
    let mut at_ms = 1000.0;
    let mut gap_ms = 1000.0;
    while at_ms < wake_ms {
        forced += 1;
        gap_ms *= 2.0;
        at_ms += gap_ms;
    }
    forced
}

#[cfg(test)]
mod tests {
    use super::syn_retransmissions_forced;

    #[test]
    fn a_wait_forces_a_syn_retransmission_at_1_3_and_7_seconds() {
        for (wake_ms, forced) in [
            (0.0, 0),
            (999.0, 0),
            (1_001.0, 1),
            (2_999.0, 1),
            (3_001.0, 2),
            (7_001.0, 3),
        ] {
            assert_eq!(syn_retransmissions_forced(wake_ms), forced, "{wake_ms} ms");
        }
    }
}
