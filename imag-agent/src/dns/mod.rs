//! Names for every host, cold or warm: the agent answers DNS (UDP and TCP) on the imag bridge's
//! gateway and on `[dns] listen`. `<host>` and `<host>.<domain>` resolve to the host's address
//! from a table built once from the configuration ([`NameTable`]), so a lookup never wakes
//! anything and never asks the container engine; names outside the domain are forwarded to the
//! upstream resolvers. Containers reach it through Docker's embedded resolver, which forwards
//! the names it does not know (those of sleeping containers) to the container's DNS servers.
//!
//! [`answer`] decides (pure), [`server`] runs the sockets, [`upstream`] forwards, [`config`] is
//! the `[dns]` section, [`metrics`] the component's own series.

pub mod answer;
pub mod metrics;
pub mod server;
pub mod upstream;

use std::{net::SocketAddr, path::Path, sync::Arc};

pub use answer::{NameTable, Outcome};
pub use metrics::DnsMetrics;
use tokio::{
    net::{TcpListener, UdpSocket},
    sync::Semaphore,
    task::JoinHandle,
};
use tracing::{info, warn};

pub use crate::config::DnsConfig;

/// Why the DNS server could not start, with the fix.
#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    #[error(
        "cannot answer DNS on {addr} ({transport}): the port is in use. Is systemd-resolved or \
         dnsmasq listening on {addr}? Set [dns] listen to other addresses, or [dns] enabled = \
         false"
    )]
    InUse {
        addr: SocketAddr,
        transport: &'static str,
    },
    #[error(
        "cannot answer DNS on {addr}: no interface of this machine has that address. Is the \
         bridge up? Fix [dns] listen, or set [dns] enabled = false"
    )]
    NotLocal { addr: SocketAddr },
    #[error(
        "cannot answer DNS on {addr} ({transport}): {source}. Set [dns] listen to other \
         addresses, or [dns] enabled = false"
    )]
    Bind {
        addr: SocketAddr,
        transport: &'static str,
        source: std::io::Error,
    },
}

/// The running server; dropping it stops every task.
pub struct DnsServer {
    addrs: Vec<SocketAddr>,
    upstream: Vec<SocketAddr>,
    tasks: Vec<JoinHandle<()>>,
}

impl DnsServer {
    /// The addresses answered on (UDP and TCP alike), ports as bound.
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// The resolvers names outside the domain are forwarded to.
    pub fn upstream(&self) -> &[SocketAddr] {
        &self.upstream
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Starts answering on each of `listen` (UDP and TCP on the same port; a port 0 is chosen by
/// the kernel for UDP and reused for TCP). Upstream resolvers are `config.upstream`, else the
/// host's /etc/resolv.conf. A server that is not `enabled` listens nowhere.
pub async fn serve(
    config: &DnsConfig,
    names: NameTable,
    listen: Vec<SocketAddr>,
    metrics: DnsMetrics,
) -> Result<DnsServer, DnsError> {
    if !config.enabled {
        info!("DNS is off ([dns] enabled = false)");
        return Ok(DnsServer {
            addrs: Vec::new(),
            upstream: Vec::new(),
            tasks: Vec::new(),
        });
    }
    let mut sockets = Vec::with_capacity(listen.len());
    for addr in &listen {
        sockets.push(bind(*addr).await?);
    }
    let addrs: Vec<SocketAddr> = sockets.iter().map(|(_, _, addr)| *addr).collect();
    let resolv_conf = Path::new(upstream::RESOLV_CONF);
    let upstream =
        upstream::resolvers(&config.upstream, resolv_conf, &addrs).unwrap_or_else(|err| {
            warn!(path = %resolv_conf.display(), error = %err, "cannot read the host's resolvers");
            Vec::new()
        });
    if upstream.is_empty() {
        warn!(
            domain = %names.domain(),
            "no upstream DNS resolver: names outside the domain get SERVFAIL (set [dns] upstream)"
        );
    }
    info!(
        addrs = ?addrs,
        domain = %names.domain(),
        names = names.len(),
        upstream = ?upstream,
        "answering DNS for every host"
    );
    let shared = Arc::new(server::Shared {
        table: names,
        upstream: upstream.clone(),
        timeout: config.timeout,
        metrics,
        forwards: Arc::new(Semaphore::new(server::MAX_FORWARDS)),
        connections: Arc::new(Semaphore::new(server::MAX_TCP_CONNECTIONS)),
    });
    let mut tasks = Vec::with_capacity(2 * sockets.len());
    for (udp, tcp, _) in sockets {
        tasks.push(tokio::spawn(server::serve_udp(
            Arc::new(udp),
            shared.clone(),
        )));
        tasks.push(tokio::spawn(server::serve_tcp(tcp, shared.clone())));
    }
    Ok(DnsServer {
        addrs,
        upstream,
        tasks,
    })
}

/// The server for a configuration: its hosts' names, on the bridge gateway's port 53 and the
/// extra `listen` addresses.
pub async fn serve_config(
    config: &crate::config::Config,
    dns: &DnsConfig,
    metrics: DnsMetrics,
) -> Result<DnsServer, DnsError> {
    let names = NameTable::from_config(config, &dns.domain);
    serve(
        dns,
        names,
        dns.listen_addrs(config.network.gateway),
        metrics,
    )
    .await
}

/// A UDP socket and a TCP listener on the same address and port.
async fn bind(addr: SocketAddr) -> Result<(UdpSocket, TcpListener, SocketAddr), DnsError> {
    let error = |transport, source: std::io::Error| match source.kind() {
        std::io::ErrorKind::AddrInUse => DnsError::InUse { addr, transport },
        std::io::ErrorKind::AddrNotAvailable => DnsError::NotLocal { addr },
        _ => DnsError::Bind {
            addr,
            transport,
            source,
        },
    };
    // With port 0 the TCP port the kernel gave UDP may be taken: try a few.
    let attempts = if addr.port() == 0 { 8 } else { 1 };
    let mut last = None;
    for _ in 0..attempts {
        let udp = UdpSocket::bind(addr).await.map_err(|e| error("udp", e))?;
        let bound = udp.local_addr().map_err(|e| error("udp", e))?;
        match TcpListener::bind(bound).await {
            Ok(tcp) => return Ok((udp, tcp, bound)),
            Err(err) => last = Some(error("tcp", err)),
        }
    }
    Err(last.expect("at least one attempt"))
}
