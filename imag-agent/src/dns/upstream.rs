//! Names outside the domain go to upstream resolvers: those of `[dns] upstream`, else the
//! host's /etc/resolv.conf. One resolver at a time, each with the configured timeout; the first
//! answer that matches the question wins. UDP clients are forwarded over UDP, TCP clients over
//! TCP, so that a truncated UDP answer upstream becomes a truncated answer to the client, which
//! asks again over TCP. [`super::server`] decides what the client gets.

use std::{
    net::{Ipv4Addr, Ipv6Addr, SocketAddr},
    path::Path,
    time::Duration,
};

use hickory_proto::op::Message;
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpStream, UdpSocket},
};
use tracing::debug;

use super::{answer::answers_query, metrics::Transport};

pub const RESOLV_CONF: &str = "/etc/resolv.conf";

/// The `nameserver` lines of a resolv.conf, as socket addresses on port 53 (lines that do not
/// parse, e.g. with an IPv6 zone, are skipped).
pub fn parse_resolv_conf(text: &str) -> Vec<SocketAddr> {
    text.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            (words.next()? == "nameserver").then_some(())?;
            let addr = words.next()?.parse().ok()?;
            Some(SocketAddr::new(addr, super::DnsConfig::PORT))
        })
        .collect()
}

/// The resolvers to forward to: `configured` when given, else those of `resolv_conf`; never one
/// of our own addresses (that would loop).
pub fn resolvers(
    configured: &[SocketAddr],
    resolv_conf: &Path,
    own: &[SocketAddr],
) -> Result<Vec<SocketAddr>, std::io::Error> {
    let candidates = if configured.is_empty() {
        parse_resolv_conf(&std::fs::read_to_string(resolv_conf)?)
    } else {
        configured.to_vec()
    };
    Ok(candidates
        .into_iter()
        .filter(|addr| !own.contains(addr))
        .collect())
}

/// Asks each resolver in turn, `timeout` each; `None` when none answered `query` (sent as the
/// client's own `bytes`).
pub async fn forward(
    resolvers: &[SocketAddr],
    timeout: Duration,
    bytes: &[u8],
    query: &Message,
    transport: Transport,
) -> Option<Vec<u8>> {
    for &resolver in resolvers {
        let attempt = async {
            match transport {
                Transport::Udp => over_udp(resolver, bytes, query).await,
                Transport::Tcp => over_tcp(resolver, bytes, query).await,
            }
        };
        match tokio::time::timeout(timeout, attempt).await {
            Ok(Ok(answer)) => return Some(answer),
            Ok(Err(err)) => debug!(%resolver, error = %err, "upstream resolver failed"),
            Err(_) => debug!(%resolver, ?timeout, "upstream resolver did not answer in time"),
        }
    }
    None
}

/// A fresh socket per query: a random source port, and `connect` drops datagrams from others.
async fn over_udp(resolver: SocketAddr, bytes: &[u8], query: &Message) -> std::io::Result<Vec<u8>> {
    let local: SocketAddr = match resolver {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let socket = UdpSocket::bind(local).await?;
    socket.connect(resolver).await?;
    socket.send(bytes).await?;
    let mut buf = vec![0u8; usize::from(u16::MAX)];
    loop {
        let len = socket.recv(&mut buf).await?;
        if answers_query(&buf[..len], query) {
            buf.truncate(len);
            return Ok(buf);
        }
        debug!(%resolver, "ignored a datagram that does not answer the question");
    }
}

async fn over_tcp(resolver: SocketAddr, bytes: &[u8], query: &Message) -> std::io::Result<Vec<u8>> {
    let mut stream = TcpStream::connect(resolver).await?;
    write_framed(&mut stream, bytes).await?;
    let answer = read_framed(&mut stream).await?;
    if answers_query(&answer, query) {
        Ok(answer)
    } else {
        Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "the answer does not match the question",
        ))
    }
}

/// One DNS message over TCP: its length as two bytes, then the message (RFC 1035 4.2.2).
pub async fn write_framed(
    stream: &mut (impl tokio::io::AsyncWrite + Unpin),
    message: &[u8],
) -> std::io::Result<()> {
    let len = u16::try_from(message.len()).map_err(|_| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "a DNS message over 64 KiB",
        )
    })?;
    let mut framed = Vec::with_capacity(message.len() + 2);
    framed.extend_from_slice(&len.to_be_bytes());
    framed.extend_from_slice(message);
    stream.write_all(&framed).await
}

pub async fn read_framed(
    stream: &mut (impl tokio::io::AsyncRead + Unpin),
) -> std::io::Result<Vec<u8>> {
    let mut len = [0u8; 2];
    stream.read_exact(&mut len).await?;
    let mut message = vec![0u8; usize::from(u16::from_be_bytes(len))];
    stream.read_exact(&mut message).await?;
    Ok(message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf_nameservers() {
        let text = "# generated\nsearch example.com\nnameserver 127.0.0.53\n\
                    nameserver  2001:db8::1\nnameserver fe80::1%eth0\noptions edns0\n";
        assert_eq!(
            parse_resolv_conf(text),
            ["127.0.0.53:53", "[2001:db8::1]:53"].map(|a| a.parse::<SocketAddr>().unwrap())
        );
    }

    #[test]
    fn never_forwards_to_itself() {
        let own: SocketAddr = "10.77.0.1:53".parse().unwrap();
        let other: SocketAddr = "1.1.1.1:53".parse().unwrap();
        let got = resolvers(&[own, other], Path::new("/nonexistent"), &[own]).unwrap();
        assert_eq!(got, vec![other]);
    }
}
