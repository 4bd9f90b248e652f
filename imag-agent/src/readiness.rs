//! Deciding that a started container can take its held packets.
//!
//! `tcp:PORT` polls a TCP connect from the host to the container's address every millisecond (a
//! refused connect returns at once, so a poll costs microseconds), and checks every 50 ms that
//! the container is still running, so that a crashing service fails its wake at once instead of
//! at the ready timeout.

use std::{
    net::{Ipv4Addr, SocketAddr},
    time::Duration,
};

use tokio::{net::TcpStream, time::Instant};

use crate::{config::ReadyProbe, runtime::ContainerRuntime};

const POLL_INTERVAL: Duration = Duration::from_millis(1);
const LIVENESS_INTERVAL: Duration = Duration::from_millis(50);
/// One connect attempt may wait this long (for neighbour resolution) before it counts as failed.
const CONNECT_ATTEMPT_TIMEOUT: Duration = Duration::from_millis(200);

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReadyError {
    #[error(
        "not ready after {timeout:?} (probe {probe}); raise ready_timeout if the service starts slowly"
    )]
    Timeout {
        probe: ReadyProbe,
        timeout: Duration,
    },
    #[error("{0}")]
    Exited(String),
}

impl ReadyError {
    /// A short label for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            ReadyError::Timeout { .. } => "ready_timeout",
            ReadyError::Exited(_) => "exited",
        }
    }
}

/// Waits until `probe` passes for the container at `addr`, it exits, or `timeout` passes.
pub async fn wait_ready<R: ContainerRuntime>(
    runtime: &R,
    container_id: &str,
    probe: ReadyProbe,
    addr: Ipv4Addr,
    timeout: Duration,
) -> Result<(), ReadyError> {
    let deadline = Instant::now() + timeout;
    let mut next_liveness_check = Instant::now() + LIVENESS_INTERVAL;
    loop {
        let passed = match probe {
            ReadyProbe::Running => true,
            ReadyProbe::Tcp(port) => tcp_accepts(SocketAddr::from((addr, port))).await,
        };
        if passed {
            return Ok(());
        }
        let now = Instant::now();
        if now >= deadline {
            return Err(ReadyError::Timeout { probe, timeout });
        }
        if now >= next_liveness_check {
            runtime
                .check_running(container_id)
                .await
                .map_err(ReadyError::Exited)?;
            next_liveness_check = Instant::now() + LIVENESS_INTERVAL;
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

async fn tcp_accepts(addr: SocketAddr) -> bool {
    matches!(
        tokio::time::timeout(CONNECT_ATTEMPT_TIMEOUT, TcpStream::connect(addr)).await,
        Ok(Ok(_))
    )
}
