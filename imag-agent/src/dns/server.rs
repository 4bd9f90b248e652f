//! The sockets: one UDP and one TCP task per listen address. Each query is decoded
//! ([`answer::parse_query`]), decided ([`answer::decide`]) and either answered at once or
//! forwarded ([`upstream::forward`]). What keeps the server from being a tool against others:
//! malformed packets get no answer; a UDP answer never exceeds the client's buffer (at most
//! [`answer::UDP_MAX`], 512 bytes without EDNS) — larger ones are cut to the question with TC set,
//! forwarded ones included; forwards in flight and TCP connections are bounded; a TCP
//! connection that sends nothing for [`TCP_IDLE`] is closed.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use hickory_proto::op::{Message, ResponseCode};
use tokio::{
    net::{TcpListener, TcpStream, UdpSocket},
    sync::Semaphore,
    time::{Instant, timeout},
};
use tracing::debug;

use super::{
    answer::{self, NameTable, Outcome, Verdict},
    metrics::{DnsMetrics, Transport},
    upstream,
};

/// UDP queries being forwarded at once; beyond this, SERVFAIL at once (cheap, query-sized).
pub const MAX_FORWARDS: usize = 256;
/// Open TCP connections; beyond this, new ones are closed at once.
pub const MAX_TCP_CONNECTIONS: usize = 64;
/// How long a TCP client may take to send its next query (or to read an answer).
pub const TCP_IDLE: Duration = Duration::from_secs(5);
/// The largest UDP query read; larger datagrams are cut by the kernel and fail to decode.
const UDP_QUERY_MAX: usize = 4096;

/// What every socket task shares: read-only but for the metrics and the permits.
pub(super) struct Shared {
    pub table: NameTable,
    pub upstream: Vec<SocketAddr>,
    pub timeout: Duration,
    pub metrics: DnsMetrics,
    pub forwards: Arc<Semaphore>,
    pub connections: Arc<Semaphore>,
}

pub(super) async fn serve_udp(socket: Arc<UdpSocket>, shared: Arc<Shared>) {
    let mut buf = vec![0u8; UDP_QUERY_MAX];
    loop {
        let (len, peer) = match socket.recv_from(&mut buf).await {
            Ok(received) => received,
            Err(err) => {
                // E.g. an ICMP error from an earlier send; the socket itself is fine.
                debug!(error = %err, "DNS receive failed");
                continue;
            }
        };
        let start = Instant::now();
        let bytes = &buf[..len];
        let query = match answer::parse_query(bytes) {
            Ok(query) => query,
            Err(err) => {
                debug!(%peer, error = %err, "dropped a malformed DNS query");
                shared
                    .metrics
                    .record(Outcome::Malformed, Transport::Udp, None);
                continue;
            }
        };
        match answer::decide(&shared.table, &query) {
            Verdict::Reply(response, outcome) => {
                send_udp(&socket, peer, &query, &response, &shared.metrics).await;
                shared
                    .metrics
                    .record(outcome, Transport::Udp, Some(start.elapsed()));
            }
            Verdict::Forward => {
                if let Ok(permit) = shared.forwards.clone().try_acquire_owned() {
                    let (socket, shared, bytes) = (socket.clone(), shared.clone(), bytes.to_vec());
                    tokio::spawn(async move {
                        let outcome = forward_udp(&socket, peer, &bytes, &query, &shared).await;
                        shared
                            .metrics
                            .record(outcome, Transport::Udp, Some(start.elapsed()));
                        drop(permit);
                    });
                } else {
                    let response = answer::response_to(&query, ResponseCode::ServFail);
                    send_udp(&socket, peer, &query, &response, &shared.metrics).await;
                    shared
                        .metrics
                        .record(Outcome::ServFail, Transport::Udp, Some(start.elapsed()));
                }
            }
        }
    }
}

async fn forward_udp(
    socket: &UdpSocket,
    peer: SocketAddr,
    bytes: &[u8],
    query: &Message,
    shared: &Shared,
) -> Outcome {
    let forwarded = upstream::forward(
        &shared.upstream,
        shared.timeout,
        bytes,
        query,
        Transport::Udp,
    )
    .await;
    match forwarded {
        Some(answer) if answer.len() <= answer::udp_limit(query) => {
            let _ = socket.send_to(&answer, peer).await;
            Outcome::Forwarded
        }
        Some(_) => {
            // Too large for this client over UDP: the question with TC, whatever upstream said.
            let response = answer::response_to(query, ResponseCode::NoError);
            let _ = socket.send_to(&answer::truncated(&response), peer).await;
            shared.metrics.record_truncated();
            Outcome::Forwarded
        }
        None => {
            let response = answer::response_to(query, ResponseCode::ServFail);
            send_udp(socket, peer, query, &response, &shared.metrics).await;
            Outcome::ServFail
        }
    }
}

async fn send_udp(
    socket: &UdpSocket,
    peer: SocketAddr,
    query: &Message,
    response: &Message,
    metrics: &DnsMetrics,
) {
    let (bytes, truncated) = answer::encode_udp(response, answer::udp_limit(query));
    if truncated {
        metrics.record_truncated();
    }
    if let Err(err) = socket.send_to(&bytes, peer).await {
        debug!(%peer, error = %err, "DNS answer not sent");
    }
}

pub(super) async fn serve_tcp(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(err) => {
                // Out of file descriptors, say: wait instead of spinning.
                debug!(error = %err, "DNS accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = shared.connections.clone().try_acquire_owned() else {
            debug!(%peer, "too many DNS connections: closing this one");
            continue;
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            serve_connection(stream, &shared).await;
            drop(permit);
        });
    }
}

/// Queries one after another until the client closes, is idle too long, or sends garbage.
async fn serve_connection(mut stream: TcpStream, shared: &Shared) {
    loop {
        let Ok(Ok(bytes)) = timeout(TCP_IDLE, upstream::read_framed(&mut stream)).await else {
            return;
        };
        let start = Instant::now();
        let query = match answer::parse_query(&bytes) {
            Ok(query) => query,
            Err(err) => {
                debug!(error = %err, "dropped a malformed DNS query (TCP): closing");
                shared
                    .metrics
                    .record(Outcome::Malformed, Transport::Tcp, None);
                return;
            }
        };
        let (answer, outcome) = match answer::decide(&shared.table, &query) {
            Verdict::Reply(response, outcome) => (response.to_vec().ok(), outcome),
            Verdict::Forward => {
                match upstream::forward(
                    &shared.upstream,
                    shared.timeout,
                    &bytes,
                    &query,
                    Transport::Tcp,
                )
                .await
                {
                    Some(answer) => (Some(answer), Outcome::Forwarded),
                    None => (
                        answer::response_to(&query, ResponseCode::ServFail)
                            .to_vec()
                            .ok(),
                        Outcome::ServFail,
                    ),
                }
            }
        };
        let Some(answer) = answer else { return };
        match timeout(TCP_IDLE, upstream::write_framed(&mut stream, &answer)).await {
            Ok(Ok(())) => shared
                .metrics
                .record(outcome, Transport::Tcp, Some(start.elapsed())),
            _ => return,
        }
    }
}
