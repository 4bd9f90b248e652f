//! `imag-agent attach`: sets everything up, runs the orchestrator until SIGINT/SIGTERM, and
//! undoes what it set up.
//!
//! Set-up order matters for "nothing lost": everything that can fail on bad input (config,
//! interfaces, Docker, the kernel) is checked before anything is attached, and a failure half-way
//! undoes the steps already taken.

use std::path::PathBuf;

use anyhow::{Context as _, bail};
use imag_common::IFACE_FLAG_BRIDGE;
use tokio::sync::mpsc;
use tracing::{info, warn};

use crate::{
    config::Config,
    datapath::{Datapath, XdpModeChoice, ring},
    hostnet::{self, ForwardRule},
    interfaces::Interface,
    orchestrator::{
        Orchestrator,
        state::{HostState, Tier},
    },
    runtime::{ContainerRuntime, ContainerSpec, ContainerStatus, Observed, docker::Docker},
};

pub struct AttachOptions {
    pub interfaces: Vec<String>,
    pub config: PathBuf,
    pub xdp_mode: XdpModeChoice,
}

/// Fails unless running as root, naming the command that needs it.
pub fn ensure_root(command: &str) -> anyhow::Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!(
            "`imag-agent {command}` needs root (it loads eBPF programs and changes the network): \
             run it with sudo"
        );
    }
    Ok(())
}

/// What was set up so far, so that a failure or an exit can undo exactly that.
#[derive(Default)]
struct Undo {
    rules: Vec<ForwardRule>,
    forwarding_enabled: bool,
}

impl Undo {
    fn run(self) {
        for rule in self.rules {
            rule.remove();
        }
        if self.forwarding_enabled {
            hostnet::disable_ip_forwarding();
        }
    }
}

pub async fn attach(opts: AttachOptions) -> anyhow::Result<()> {
    ensure_root("attach")?;
    if opts.interfaces.is_empty() {
        bail!("name at least one interface to attach to, e.g. `imag-agent attach eth0`");
    }
    let config = Config::load(&opts.config)?;
    let interfaces = opts
        .interfaces
        .iter()
        .map(|name| Interface::lookup(name))
        .collect::<Result<Vec<_>, _>>()?;
    if let Some(bridge) = interfaces.iter().find(|i| i.name == config.network.bridge) {
        bail!(
            "{} is imag's own bridge: name the interfaces clients arrive on, not the bridge",
            bridge.name
        );
    }

    let docker = Docker::connect().await?;
    docker.ensure_network(&config.network).await?;
    let hosts = reconcile(&docker, &config).await?;
    let mut datapath = Datapath::load()?;
    let held_frames = datapath.take_held_frames()?;
    let logger = datapath.take_logger();
    let bridge = Interface::lookup(&config.network.bridge).with_context(|| {
        format!(
            "Docker network {} has no bridge named {}",
            config.network.name, config.network.bridge
        )
    })?;
    let mut orchestrator =
        Orchestrator::new(hosts, datapath, docker, &config, Some(bridge.clone()));
    orchestrator.publish_hosts()?;

    let mut undo = Undo::default();
    if let Err(err) = set_up_forwarding(&config, &interfaces, &mut undo) {
        undo.run();
        return Err(err);
    }
    // The bridge too: containers reach cold hosts through it (and ask it for their neighbours).
    let attachments = interfaces.iter().map(|i| (i, opts.xdp_mode, 0)).chain([(
        &bridge,
        XdpModeChoice::Generic,
        IFACE_FLAG_BRIDGE,
    )]);
    for (iface, mode, flags) in attachments {
        if let Err(err) = orchestrator.datapath_mut().attach(iface, mode, flags) {
            orchestrator.datapath_mut().detach_all();
            undo.run();
            return Err(err.into());
        }
    }

    let (held_tx, mut held_rx) = mpsc::channel(4096);
    let reader = tokio::spawn(ring::forward_held_frames(held_frames, held_tx));
    let log_task = logger.map(|logger| tokio::spawn(forward_ebpf_logs(logger)));
    let warm = orchestrator
        .hosts
        .iter()
        .filter(|h| matches!(h.state, HostState::Warm { .. }))
        .count();
    info!(
        interfaces = %opts.interfaces.join(","),
        hosts = orchestrator.hosts.len(),
        warm,
        network = %config.network.name,
        subnet = %config.network.subnet,
        "imag is attached and holding packets for cold hosts"
    );

    orchestrator.run(&mut held_rx, shutdown_signal()).await;

    info!("shutting down: detaching and stopping the containers this agent started");
    orchestrator.datapath_mut().detach_all();
    reader.abort();
    if let Some(task) = log_task {
        task.abort();
    }
    orchestrator.stop_started_containers().await;
    undo.run();
    let c = orchestrator.counters;
    info!(
        held = c.held,
        delivered = c.delivered,
        refused = c.refused,
        dropped = c.dropped(),
        "detached"
    );
    Ok(())
}

fn set_up_forwarding(
    config: &Config,
    interfaces: &[Interface],
    undo: &mut Undo,
) -> anyhow::Result<()> {
    undo.forwarding_enabled =
        hostnet::ensure_ip_forwarding().context("checking /proc/sys/net/ipv4/ip_forward")?;
    for iface in interfaces {
        let rule = ForwardRule {
            iface: iface.name.clone(),
            subnet: config.network.subnet,
        };
        if rule.install()? {
            undo.rules.push(rule);
        }
    }
    Ok(())
}

/// The initial state of every host, from what Docker says about its container.
async fn reconcile(
    docker: &Docker,
    config: &Config,
) -> anyhow::Result<Vec<crate::orchestrator::Host>> {
    let mut states = Vec::with_capacity(config.hosts.len());
    for host in &config.hosts {
        let spec = ContainerSpec::for_host(&config.network.name, host);
        let observed = docker.observe(&spec).await?;
        let state = match observed {
            Observed::Absent => HostState::Asleep { tier: Tier::Absent },
            Observed::Present {
                current: false,
                status,
                ..
            } => {
                if status == ContainerStatus::Running {
                    warn!(host = %host.name, "its running container was created from another configuration; \
                        it keeps serving and is recreated the next time it wakes");
                    HostState::Warm {
                        since: std::time::Instant::now(),
                    }
                } else {
                    info!(host = %host.name, "its container was created from another configuration; removing it");
                    docker.sleep(&spec, Tier::Absent).await?;
                    HostState::Asleep { tier: Tier::Absent }
                }
            }
            Observed::Present {
                status: ContainerStatus::Running,
                ..
            } => HostState::Warm {
                since: std::time::Instant::now(),
            },
            Observed::Present {
                status: ContainerStatus::Paused,
                ..
            } => HostState::Asleep { tier: Tier::Paused },
            Observed::Present { .. } => HostState::Asleep {
                tier: Tier::Stopped,
            },
        };
        states.push(state);
    }
    let mut states = states.into_iter();
    Ok(Orchestrator::<Docker>::hosts_from(config, |_| {
        states.next().expect("one state per host")
    }))
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("installing a SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("installing a SIGINT handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

async fn forward_ebpf_logs(logger: crate::datapath::EbpfLogger) {
    let Ok(mut logger) = crate::datapath::poll_readable(logger) else {
        return;
    };
    loop {
        let Ok(mut guard) = logger.readable_mut().await else {
            return;
        };
        guard.get_inner_mut().flush();
        guard.clear_ready();
    }
}
