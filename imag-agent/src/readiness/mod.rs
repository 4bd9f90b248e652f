//! Deciding that a started container can take its held packets.
//!
//! - `tcp:PORT` tries a TCP connect from the host to the container's address; with readiness
//!   events it tries again the moment a socket starts listening on that port (the datapath's
//!   tracepoint reports it), else every poll interval (a refused connect returns at once, so a
//!   try costs microseconds);
//! - `udp:PORT` polls the container's own socket table (`/proc/<pid>/net/udp{,6}`, which shows
//!   the container's network namespace) for a socket bound to the port ("started and bound")
//!   every poll interval;
//! - `delay:D` waits D after the engine reports the container running;
//! - `running` is ready at once;
//! - `healthy` polls the engine's health status of the container every poll interval until it
//!   says healthy (an unhealthy container may still turn healthy within its retries: only an exit
//!   or the wake timeout fail the wake; a container without any healthcheck fails at once).
//!
//! Every 50 ms the container is checked to be still running, so that a crashing service fails its
//! wake at once instead of at the wake timeout.

mod listen;

use std::{net::SocketAddr, time::Duration};

use tokio::{net::TcpStream, time::Instant};

pub use self::listen::{ListenWatch, PortWatch};
pub use crate::report::ReadyBy;
use crate::{
    config::ReadyProbe,
    procnet,
    runtime::{ContainerRuntime, ContainerSpec, Health, NotRunning},
};

const LIVENESS_INTERVAL: Duration = Duration::from_millis(50);
/// One connect attempt may wait this long (for neighbour resolution) before it counts as failed.
const CONNECT_ATTEMPT_TIMEOUT: Duration = Duration::from_millis(200);

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReadyError {
    #[error(
        "not ready within the wake timeout of {} (probe {probe}); raise wake_timeout if the \
         service starts slowly",
        humantime::format_duration(*timeout)
    )]
    Timeout {
        probe: ReadyProbe,
        timeout: Duration,
    },
    #[error("{0}")]
    Exited(NotRunning),
    #[error(
        "ready = \"healthy\" but the container has no healthcheck: add one to the host or its \
         image, or use ready = \"tcp:PORT\""
    )]
    NoHealthcheck,
}

impl ReadyError {
    /// A short label for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            ReadyError::Timeout { .. } => "wake_timeout",
            ReadyError::Exited(_) => "exited",
            ReadyError::NoHealthcheck => "no_healthcheck",
        }
    }
}

/// Waits until `probe` passes for the host's container, it exits, or `deadline` passes. With
/// `listen`, a LISTEN event on the probe's port triggers the next try at once; otherwise tries
/// come every `poll`.
pub async fn wait_ready<R: ContainerRuntime>(
    runtime: &R,
    spec: &ContainerSpec,
    probe: ReadyProbe,
    deadline: Instant,
    timeout: Duration,
    poll: Duration,
    mut listen: Option<PortWatch>,
) -> Result<ReadyBy, ReadyError> {
    let timed_out = || ReadyError::Timeout { probe, timeout };
    let check = match probe {
        ReadyProbe::Running => return Ok(ReadyBy::FirstTry),
        ReadyProbe::Delay(delay) => {
            if crate::clock::deadline_in(delay) > deadline {
                return Err(timed_out());
            }
            tokio::time::sleep(delay).await;
            return runtime
                .running_info(spec)
                .await
                .map(|_| ReadyBy::FirstTry)
                .map_err(ReadyError::Exited);
        }
        ReadyProbe::Healthy => return wait_healthy(runtime, spec, deadline, poll, timed_out).await,
        ReadyProbe::Tcp(port) => Check::Tcp(SocketAddr::from((spec.address, port))),
        ReadyProbe::Udp(port) => {
            let info = runtime
                .running_info(spec)
                .await
                .map_err(ReadyError::Exited)?;
            Check::UdpBound {
                pid: info.pid,
                port,
            }
        }
    };
    if !matches!((&check, &listen), (Check::Tcp(addr), Some(watch)) if watch.port() == addr.port())
    {
        listen = None;
    }
    let mut by = ReadyBy::FirstTry;
    let mut next_poll = crate::clock::deadline_in(poll);
    let mut next_liveness_check = crate::clock::deadline_in(LIVENESS_INTERVAL);
    loop {
        if check.passes().await {
            return Ok(by);
        }
        loop {
            let listen_event = async {
                match &mut listen {
                    Some(watch) => watch.listening().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = listen_event => {
                    by = ReadyBy::Event;
                    break;
                }
                () = tokio::time::sleep_until(next_poll) => {
                    by = ReadyBy::Poll;
                    next_poll = tokio::time::Instant::from_std(crate::clock::later(next_poll.into_std(), poll));
                    break;
                }
                () = tokio::time::sleep_until(next_liveness_check) => {
                    runtime.running_info(spec).await.map_err(ReadyError::Exited)?;
                    next_liveness_check = crate::clock::deadline_in(LIVENESS_INTERVAL);
                }
                () = tokio::time::sleep_until(deadline) => return Err(timed_out()),
            }
        }
    }
}

/// Waits until the engine reports the container healthy, it exits, or `deadline` passes (for a
/// dependency that others wait on as `service_healthy`).
pub async fn healthy_by<R: ContainerRuntime>(
    runtime: &R,
    spec: &ContainerSpec,
    deadline: Instant,
    poll: Duration,
) -> Result<(), ReadyError> {
    let timeout = deadline.saturating_duration_since(Instant::now());
    wait_healthy(runtime, spec, deadline, poll, || ReadyError::Timeout {
        probe: ReadyProbe::Healthy,
        timeout,
    })
    .await
    .map(drop)
}

/// `ready = "healthy"`: asks the engine for the container's health every `poll` (each answer also
/// says whether it still runs).
async fn wait_healthy<R: ContainerRuntime>(
    runtime: &R,
    spec: &ContainerSpec,
    deadline: Instant,
    poll: Duration,
    timed_out: impl Fn() -> ReadyError,
) -> Result<ReadyBy, ReadyError> {
    let mut by = ReadyBy::FirstTry;
    loop {
        match runtime.health(spec).await.map_err(ReadyError::Exited)? {
            Some(Health::Healthy) => return Ok(by),
            Some(Health::Starting | Health::Unhealthy) => {}
            None => return Err(ReadyError::NoHealthcheck),
        }
        let next = crate::clock::deadline_in(poll);
        if next > deadline {
            tokio::time::sleep_until(deadline).await;
            return Err(timed_out());
        }
        tokio::time::sleep_until(next).await;
        by = ReadyBy::Poll;
    }
}

enum Check {
    Tcp(SocketAddr),
    UdpBound { pid: u32, port: u16 },
}

impl Check {
    async fn passes(&self) -> bool {
        match *self {
            Check::Tcp(addr) => {
                let connected =
                    tokio::time::timeout(CONNECT_ATTEMPT_TIMEOUT, TcpStream::connect(addr)).await;
                let Ok(Ok(stream)) = connected else {
                    return false;
                };
                // Closed with a reset, sent before the host is declared ready: a FIN exchange
                // would go on after the switch to warm, and its packets would count as the
                // host's first traffic (taken for the use of a pre-wake).
                #[allow(deprecated, reason = "a zero linger resets at once, never blocks")]
                let _ = stream.set_linger(Some(Duration::ZERO));
                true
            }
            Check::UdpBound { pid, port } => procnet::udp_port_bound(pid, port),
        }
    }
}
