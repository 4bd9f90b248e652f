//! The client side of the measurements: time to first byte of a request on a fresh connection,
//! request/response latency on one connection, and bulk TCP throughput.

use std::{
    io::{self, Read, Write},
    net::{SocketAddr, TcpStream, UdpSocket},
    time::{Duration, Instant},
};

use imag_testkit::clients::HttpConnection;

/// Connect, send `GET /`, and return the time from the start of the connect to the first byte of
/// the answer (the whole answer is read before returning).
pub fn time_to_first_byte(addr: SocketAddr, timeout: Duration) -> io::Result<Duration> {
    let start = Instant::now();
    let mut stream = TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.write_all(b"GET / HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")?;
    let mut first = [0u8; 1];
    stream.read_exact(&mut first)?;
    let took = start.elapsed();
    let mut rest = Vec::new();
    stream.read_to_end(&mut rest)?;
    if first[0] != b'H' {
        return Err(io::Error::other("not an HTTP answer"));
    }
    Ok(took)
}

/// Polls `time_to_first_byte` until the service answers; returns when it first did (measured
/// from `since`).
pub fn until_serving(addr: SocketAddr, since: Instant, timeout: Duration) -> io::Result<Duration> {
    loop {
        match time_to_first_byte(addr, Duration::from_millis(200)) {
            Ok(_) => return Ok(since.elapsed()),
            Err(err) if since.elapsed() > timeout => return Err(err),
            Err(_) => std::thread::sleep(Duration::from_micros(200)),
        }
    }
}

/// `count` requests on one keep-alive connection; the latency of each, in microseconds.
pub fn request_latencies(addr: SocketAddr, count: usize) -> io::Result<Vec<f64>> {
    let mut conn = HttpConnection::open(addr, Duration::from_secs(10))?;
    // Warm up the connection and the caches.
    for _ in 0..100 {
        conn.get()?;
    }
    let mut latencies = Vec::with_capacity(count);
    for _ in 0..count {
        let start = Instant::now();
        conn.get()?;
        latencies.push(start.elapsed().as_secs_f64() * 1e6);
    }
    Ok(latencies)
}

/// Sends `bytes` over one connection to a sink that answers with the count it received; returns
/// the goodput in Gbit/s.
pub fn bulk_throughput(addr: SocketAddr, bytes: u64) -> io::Result<f64> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(10))?;
    stream.set_read_timeout(Some(Duration::from_mins(2)))?;
    let chunk = vec![0x5au8; 1 << 20];
    let start = Instant::now();
    let mut sent = 0u64;
    while sent < bytes {
        let n = chunk
            .len()
            .min(usize::try_from(bytes - sent).unwrap_or(usize::MAX));
        stream.write_all(&chunk[..n])?;
        sent += n as u64;
    }
    stream.shutdown(std::net::Shutdown::Write)?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    let took = start.elapsed();
    let received: u64 = answer.trim().parse().map_err(io::Error::other)?;
    if received != bytes {
        return Err(io::Error::other(format!(
            "the sink received {received} of {bytes} bytes"
        )));
    }
    Ok(bytes as f64 * 8.0 / took.as_secs_f64() / 1e9)
}

/// A UDP request of `SMALL_PAYLOAD` bytes: with the UDP and IP headers it makes a small frame.
pub const SMALL_PAYLOAD: usize = 64;

fn udp_socket(addr: SocketAddr) -> io::Result<UdpSocket> {
    let socket = UdpSocket::bind("0.0.0.0:0")?;
    socket.connect(addr)?;
    socket.set_read_timeout(Some(Duration::from_millis(200)))?;
    Ok(socket)
}

/// `count` 64-byte UDP requests, one after another, to a service that answers each (`hello
/// --udp`); the round trip of each, in microseconds. A request lost (no answer within 200 ms)
/// fails the run: on a local link there is no reason to lose one.
pub fn udp_round_trips(addr: SocketAddr, count: usize) -> io::Result<Vec<f64>> {
    let socket = udp_socket(addr)?;
    let request = [b'q'; SMALL_PAYLOAD];
    let mut answer = [0u8; 2048];
    for _ in 0..100 {
        socket.send(&request)?;
        socket.recv(&mut answer)?;
    }
    let mut latencies = Vec::with_capacity(count);
    for _ in 0..count {
        let start = Instant::now();
        socket.send(&request)?;
        socket.recv(&mut answer)?;
        latencies.push(start.elapsed().as_secs_f64() * 1e6);
    }
    Ok(latencies)
}

/// A high packet rate: 64-byte UDP requests kept `window` in flight (a new one for each answer,
/// or for each 200 ms without one) for `duration`; the answers per second.
pub fn udp_rate(addr: SocketAddr, window: usize, duration: Duration) -> io::Result<f64> {
    let socket = udp_socket(addr)?;
    let request = [b'r'; SMALL_PAYLOAD];
    let mut answer = [0u8; 2048];
    for _ in 0..window {
        socket.send(&request)?;
    }
    let start = Instant::now();
    let mut answered = 0u64;
    while start.elapsed() < duration {
        match socket.recv(&mut answer) {
            Ok(_) => answered += 1,
            Err(err)
                if matches!(
                    err.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(err) => return Err(err),
        }
        socket.send(&request)?;
    }
    Ok(answered as f64 / start.elapsed().as_secs_f64())
}
