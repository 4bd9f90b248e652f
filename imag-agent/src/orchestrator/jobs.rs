//! The slow work the orchestrator hands off: each job runs in its own task, talks to the
//! container engine (or just waits), and reports back with one [`Outcome`] on the orchestrator's
//! channel. Jobs never touch host state; the orchestrator applies their outcomes in order.

use std::{net::Ipv4Addr, sync::Arc, time::Duration};

use tokio::sync::{Semaphore, mpsc};
use tracing::{debug, warn};

use super::hosts::SLEEP_SETTLE_TIME;
use crate::{
    clock::monotonic_ns,
    cluster::Claim,
    config::ReadyProbe,
    interfaces::{self, ContainerLink},
    packets::{self, Wire},
    readiness::{self, PortWatch, ReadyError},
    report::ReadyBy,
    runtime::{ContainerRuntime, ContainerSpec, RuntimeError, Started, Tier},
};

/// Messages from jobs to the orchestrator; `host` is the host's index.
pub enum Outcome {
    Woke {
        host: usize,
        result: Result<(Started, u64, ReadyBy), WakeError>,
    },
    /// The settle time after an idle host was switched to hold has passed: look again.
    SleepCheck {
        host: usize,
    },
    Slept {
        host: usize,
        result: Result<(), RuntimeError>,
    },
    Settled {
        host: usize,
    },
    /// A page-out (`swap_after`) started in the host's `epoch` ended.
    PagedOut {
        host: usize,
        epoch: u64,
        /// How long the page-out ran.
        took: Duration,
        result: Result<crate::runtime::PagedOut, RuntimeError>,
    },
    /// What the engine said about hosts' containers, each with the host's epoch when asked
    /// (`engine_sync.rs`).
    Observed {
        hosts: Vec<(usize, u64, crate::runtime::Observed)>,
    },
    /// A warm host that others wait on as `:healthy` turned healthy (or could not).
    Healthy {
        host: usize,
        result: Result<(), ReadyError>,
    },
    /// A warm host's container runs as process `pid` (for its memory usage).
    Running {
        host: usize,
        pid: u32,
    },
    /// Scale-out: the claim of a host found warm when the agent joined the cluster.
    Claimed {
        host: usize,
        result: Result<(), WakeError>,
    },
    /// The host side of a warm host's container link was found.
    HostLink {
        host: usize,
        link: ContainerLink,
        established: Option<u64>,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum WakeError {
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error(transparent)]
    Ready(#[from] ReadyError),
    #[error("its dependency {host:?} could not be woken (see that host's last failure)")]
    Dependency { host: String },
    #[error(
        "no room in the budget ([limits] {limit}) and no host may be evicted for it (all are \
         inside min_warm, busy, or of a higher priority)"
    )]
    Budget { limit: &'static str },
    #[error("waited {waited:?} for room in the budget ([limits]) or a wake slot")]
    Queued { waited: Duration },
    /// Scale-out: another node had taken the host first; its packets go there.
    #[error("node {node:?} serves this host (it took it first); packets go there")]
    ClaimLost { node: String, address: Ipv4Addr },
    /// Scale-out: this node could not take the host in the cluster's store.
    #[error("cannot take the host in the cluster's store: {0}")]
    Store(String),
}

impl WakeError {
    /// The label of `imag_wakes_total{reason}`.
    pub fn reason(&self) -> &'static str {
        match self {
            WakeError::Runtime(RuntimeError::ImageMissing { .. }) => "image_missing",
            WakeError::Runtime(RuntimeError::AddressInUse { .. }) => "address_in_use",
            WakeError::Runtime(RuntimeError::Unreachable(_)) => "engine_unreachable",
            WakeError::Runtime(RuntimeError::Engine { .. }) => "engine_error",
            WakeError::Runtime(RuntimeError::Foreign { .. }) => "foreign_container",
            WakeError::Ready(r) => r.reason(),
            WakeError::Dependency { .. } => "dependency_failed",
            WakeError::Budget { .. } | WakeError::Queued { .. } => "budget",
            WakeError::ClaimLost { .. } => "served_elsewhere",
            WakeError::Store(_) => "store_unavailable",
        }
    }
}

/// What a wake needs to know besides the container: how to tell it is ready, and how long it
/// may take.
pub struct WakeJob {
    pub from: Tier,
    pub probe: ReadyProbe,
    pub timeout: Duration,
    pub poll: Duration,
    /// The watch on the port the probe waits for (readiness by event), if on; dropped with the
    /// job.
    pub listen: Option<PortWatch>,
    /// Scale-out: take the host in the cluster's store before touching the engine.
    pub claim: Option<Claimer>,
}

/// A claim on a host in the cluster's store, made before its wake (`cluster::ClusterHandle`).
pub struct Claimer {
    pub cluster: Arc<dyn super::cluster::Claims>,
    pub host: String,
    /// Claims and releases of one host run in order (a release still under way when the host
    /// wakes again must not delete the new claim).
    pub order: Arc<tokio::sync::Mutex<()>>,
}

impl Claimer {
    pub async fn claim(&self) -> Result<(), WakeError> {
        let _in_order = self.order.lock().await;
        match self.cluster.claim(&self.host).await {
            Claim::Won => Ok(()),
            Claim::Lost { node, address } => Err(WakeError::ClaimLost { node, address }),
            Claim::Unavailable(why) => Err(WakeError::Store(why)),
        }
    }
}

/// The jobs' side of the orchestrator: the engine and the channel back.
#[derive(Clone)]
pub struct Jobs<R> {
    pub runtime: R,
    pub outcomes: mpsc::UnboundedSender<Outcome>,
    /// Bounds the engine calls under way at once (`[limits] max_engine_calls`).
    pub engine: Arc<Semaphore>,
}

impl<R: ContainerRuntime> Jobs<R> {
    /// Makes the host's container run and ready, within the job's timeout.
    pub fn wake(&self, host: usize, spec: ContainerSpec, job: WakeJob) {
        let this = self.clone();
        tokio::spawn(async move {
            let result = wake(&this.runtime, &this.engine, &spec, job).await;
            let _ = this.outcomes.send(Outcome::Woke { host, result });
        });
    }

    /// Reports back after [`SLEEP_SETTLE_TIME`], for the look at a draining host before its
    /// sleep is committed.
    pub fn sleep_check(&self, host: usize) {
        let outcomes = self.outcomes.clone();
        tokio::spawn(async move {
            tokio::time::sleep(SLEEP_SETTLE_TIME).await;
            let _ = outcomes.send(Outcome::SleepCheck { host });
        });
    }

    /// Waits (until `deadline`) for the engine to report the host's container healthy.
    pub fn healthy(
        &self,
        host: usize,
        spec: ContainerSpec,
        deadline: tokio::time::Instant,
        poll: Duration,
    ) {
        let this = self.clone();
        tokio::spawn(async move {
            let result = readiness::healthy_by(&this.runtime, &spec, deadline, poll).await;
            let _ = this.outcomes.send(Outcome::Healthy { host, result });
        });
    }

    /// Puts the host's container into `to`.
    pub fn sleep(&self, host: usize, spec: ContainerSpec, to: Tier) {
        let this = self.clone();
        tokio::spawn(async move {
            let permit = this.engine.acquire().await;
            let result = this.runtime.sleep(&spec, to).await;
            drop(permit);
            let _ = this.outcomes.send(Outcome::Slept { host, result });
        });
    }

    /// Pages the paused host's memory out to swap.
    pub fn page_out(&self, host: usize, epoch: u64, spec: ContainerSpec) {
        let this = self.clone();
        tokio::spawn(async move {
            let started = std::time::Instant::now();
            let result = this.runtime.page_out(&spec).await;
            let _ = this.outcomes.send(Outcome::PagedOut {
                host,
                epoch,
                took: started.elapsed(),
                result,
            });
        });
    }

    /// Repairs the engine's view of a fast-thawed container.
    pub fn settle(&self, host: usize, spec: ContainerSpec) {
        let this = self.clone();
        tokio::spawn(async move {
            let permit = this.engine.acquire().await;
            let settled = this.runtime.settle(&spec).await;
            drop(permit);
            match settled {
                Ok(()) => debug!(container = %spec.name, "the engine's view is settled"),
                Err(err) => {
                    warn!(container = %spec.name, error = %err, "settling the engine's view failed");
                }
            }
            let _ = this.outcomes.send(Outcome::Settled { host });
        });
    }

    /// One look at a warm host's container (a single engine call) for what follows a wake or an
    /// adoption: tell `neighbours` (a packet socket and the bridge's index) its MAC address;
    /// with `find_link`, find the host side of its link so that its traffic is counted (and,
    /// with `count_connections`, count its established connections).
    pub fn inspect_warm(
        &self,
        host: usize,
        spec: ContainerSpec,
        neighbours: Option<(Arc<Wire>, u32)>,
        find_link: bool,
        count_connections: bool,
    ) {
        let this = self.clone();
        tokio::spawn(async move {
            let permit = this.engine.acquire().await;
            let info = this.runtime.running_info(&spec).await;
            drop(permit);
            let Ok(info) = info else {
                return;
            };
            let _ = this.outcomes.send(Outcome::Running {
                host,
                pid: info.pid,
            });
            if let (Some((wire, bridge)), Some(mac)) = (neighbours, info.mac) {
                announce(&wire, bridge, spec.address, mac);
            }
            if !find_link {
                return;
            }
            let pid = info.pid;
            let address = spec.address;
            let found = tokio::task::spawn_blocking(move || {
                let link = interfaces::host_side_of_container(pid)?;
                let established = count_connections
                    .then(|| crate::procnet::established_connections(pid, address));
                std::io::Result::Ok((link, established))
            })
            .await;
            match found {
                Ok(Ok((link, established))) => {
                    let _ = this.outcomes.send(Outcome::HostLink {
                        host,
                        link,
                        established,
                    });
                }
                Ok(Err(err)) => {
                    warn!(container = %spec.name, error = %err, "cannot find the container's link");
                }
                Err(err) => {
                    warn!(container = %spec.name, error = %err, "looking for the container's link failed");
                }
            }
        });
    }
}

/// Broadcasts on the bridge that `ip` is at `mac`.
pub fn announce(wire: &Wire, bridge: u32, ip: Ipv4Addr, mac: [u8; 6]) {
    if let Err(err) = wire.send(bridge, &packets::gratuitous_arp(ip, mac)) {
        debug!(%ip, error = %err, "announcing a neighbour failed");
    }
}

async fn wake<R: ContainerRuntime>(
    runtime: &R,
    engine: &Semaphore,
    spec: &ContainerSpec,
    job: WakeJob,
) -> Result<(Started, u64, ReadyBy), WakeError> {
    let WakeJob {
        from,
        probe,
        timeout,
        poll,
        listen,
        claim,
    } = job;
    let deadline = crate::clock::deadline_in(timeout);
    if let Some(claimer) = claim {
        tokio::time::timeout_at(deadline, claimer.claim())
            .await
            .map_err(|_| ReadyError::Timeout { probe, timeout })??;
    }
    let started = tokio::time::timeout_at(deadline, async {
        let _permit = engine.acquire().await;
        runtime.wake(spec, from).await
    })
    .await
    .map_err(|_| ReadyError::Timeout { probe, timeout })??;
    let by = readiness::wait_ready(runtime, spec, probe, deadline, timeout, poll, listen).await?;
    Ok((started, monotonic_ns(), by))
}
