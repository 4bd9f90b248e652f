//! `imag-agent attach` and `imag-agent detach`: set everything up (adopting a datapath an earlier
//! agent left pinned), run the orchestrator until SIGINT/SIGTERM, and undo what was set up.
//!
//! Set-up order matters for "nothing lost": everything that can fail on bad input (config,
//! interfaces, Docker, the kernel) is checked before anything is attached, and a failure half-way
//! undoes the steps already taken (unless they were adopted from an earlier agent, whose warm
//! traffic must keep flowing).

use std::{path::PathBuf, sync::Arc, time::Duration};

use anyhow::{Context as _, bail};
use futures::StreamExt as _;
use imag_common::IFACE_FLAG_BRIDGE;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use crate::{
    config::Config,
    datapath::{Datapath, HookChoice, pins::Pins, ring},
    dns,
    firewall::{self, ForwardRule},
    interfaces::Interface,
    ops::{
        control,
        metrics::{self, Metrics},
    },
    orchestrator::{
        Input, Orchestrator,
        state::{HostState, Tier},
    },
    readiness::ListenWatch,
    runtime::{
        ContainerRuntime, ContainerSpec, ContainerStatus, Engine, EngineOptions, Observed,
        docker::Docker,
    },
};

/// What a clean exit (SIGINT/SIGTERM) leaves behind.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum OnExit {
    /// Detach the programs, remove the pinned datapath and the firewall rules, stop the
    /// containers this agent started.
    Detach,
    /// Leave the datapath pinned and attached, the rules and the containers as they are: warm
    /// hosts keep serving, cold hosts' packets keep being held (in the pinned ring buffer) for
    /// the next agent, which adopts it all. For restarts and upgrades.
    Keep,
}

pub struct AttachOptions {
    pub interfaces: Vec<String>,
    pub config: PathBuf,
    /// How `config` is written (`--config` or `--compose`).
    pub format: crate::config::Format,
    pub hook: HookChoice,
    pub on_exit: OnExit,
    /// Overrides `[agent] metrics` (Some(None) turns metrics off).
    pub metrics: Option<Option<std::net::SocketAddr>>,
}

/// How long a clean exit waits for wakes under way before refusing their packets.
/// Where the agent keeps what it learned across restarts (`<dir>/<network>/`).
pub const STATE_DIR: &str = "/var/lib/imag";

const EXIT_GRACE: Duration = Duration::from_secs(5);

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
    /// The network whose forwarding rules this agent installed.
    rules_of: Option<String>,
    forwarding_enabled: bool,
}

impl Undo {
    fn run(self) {
        if let Some(network) = self.rules_of {
            let removed = firewall::remove_rules_of(&network);
            info!(rules = removed, "forwarding rules removed");
        }
        if self.forwarding_enabled {
            firewall::disable_ip_forwarding();
        }
    }
}

pub async fn attach(opts: AttachOptions) -> anyhow::Result<()> {
    ensure_root("attach")?;
    if opts.interfaces.is_empty() {
        bail!("name at least one interface to attach to, e.g. `imag-agent attach eth0`");
    }
    let config = Config::load_as(&opts.config, opts.format)?;
    for w in &config.warnings {
        warn!(file = %opts.config.display(), line = w.line, column = w.column, "{}", w.message);
    }
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
    if let Some(kind) = crate::interfaces::non_bridge(&config.network.bridge) {
        bail!(
            "the bridge name {:?} of [network] in {} is taken by an existing interface that is \
             not a bridge ({kind}): imag's Docker network needs a bridge of its own; set \
             `bridge` in [network] to an unused name",
            config.network.bridge,
            opts.config.display()
        );
    }
    let paging: Vec<&str> = (config.hosts.iter())
        .filter(|h| h.swap_after.is_some())
        .map(|h| h.name.as_str())
        .collect();
    crate::runtime::memory::require_swap(&paging)
        .with_context(|| format!("checking {} against this machine", opts.config.display()))?;

    match engine(&config) {
        Engine::Docker => Box::pin(attach_on::<Docker>(opts, config, interfaces)).await,
    }
}

/// The engine the configuration names.
fn engine(config: &Config) -> Engine {
    config.agent.engine
}

/// [`attach`] once the engine is chosen: from here on, only the [`ContainerRuntime`] trait.
#[allow(
    clippy::too_many_lines,
    reason = "the start-up sequence, read top to bottom in the order it runs"
)]
async fn attach_on<R: ContainerRuntime>(
    opts: AttachOptions,
    config: Config,
    interfaces: Vec<Interface>,
) -> anyhow::Result<()> {
    let dns_config = config.dns.clone();
    let runtime = R::connect(EngineOptions {
        fast_thaw: config.wake.fast_thaw,
        dns: if dns_config.enabled {
            vec![config.network.gateway]
        } else {
            Vec::new()
        },
    })
    .await?;
    runtime.ensure_network(&config.network.spec()).await?;
    let bridge = Interface::lookup(&config.network.bridge).with_context(|| {
        format!(
            "Docker network {} has no bridge named {}",
            config.network.name, config.network.bridge
        )
    })?;
    let hosts = reconcile(&runtime, &config).await?;
    let pins = Pins::for_network(&config.network.name);
    let mut datapath = Datapath::load_for(
        Some(pins.clone()),
        config.hosts.len(),
        Some(config.network.subnet),
    )?;
    let adopted = datapath.adopted();
    let held_frames = datapath.take_held_frames()?;
    let sock_events = datapath.take_sock_events()?;
    let logger = datapath.take_logger();
    let listen = ListenWatch::new(datapath.take_waiting_ports());
    let mut orchestrator = Orchestrator::new(
        hosts,
        datapath,
        runtime.clone(),
        &config,
        Some(bridge.clone()),
        listen.clone(),
    );
    orchestrator.set_origin(adopted, &opts.config);
    orchestrator.keep_learned_edges(&std::path::Path::new(STATE_DIR).join(&config.network.name));

    let mut undo = Undo::default();
    let set_up = async {
        set_up_forwarding(&config, &interfaces, &mut undo)?;
        orchestrator.publish_hosts()?;
        // The bridge too: containers reach cold hosts through it (and ask it for neighbours).
        // (Native XDP cannot run on a bridge; other choices apply to it as well.)
        let bridge_hook = match opts.hook {
            HookChoice::XdpNative => HookChoice::Auto,
            other => other,
        };
        let attachments = interfaces.iter().map(|i| (i, opts.hook, 0)).chain([(
            &bridge,
            bridge_hook,
            IFACE_FLAG_BRIDGE,
        )]);
        for (iface, mode, flags) in attachments {
            orchestrator.datapath_mut().attach(iface, mode, flags)?;
        }
        if let Err(err) = orchestrator.datapath_mut().attach_tcp_state() {
            warn!(error = %format!("{err:#}"), "TCP connections cannot be counted: quiet \
                long-lived connections will not keep hosts awake, and readiness falls back to polling");
        }
        anyhow::Ok(())
    };
    if let Err(err) = set_up.await {
        return Err(abandon(&mut orchestrator, adopted, undo, err));
    }

    let (held_tx, mut held_rx) = mpsc::channel(4096);
    let (inputs_tx, mut inputs_rx) = mpsc::channel(256);
    let (detach_tx, mut detach_rx) = mpsc::channel(1);
    let cluster = match join_cluster(&config, &opts.interfaces, &mut orchestrator, &inputs_tx).await
    {
        Ok(cluster) => cluster,
        Err(err) => return Err(abandon(&mut orchestrator, adopted, undo, err)),
    };
    let socket = control::socket_path(&config.network.name);
    let dns_metrics = dns::DnsMetrics::new();
    let endpoints = async {
        let dns = dns::serve_config(&config, &dns_config, dns_metrics.clone()).await?;
        if let Some(Some(addr)) = opts.metrics
            && addr.ip().is_unspecified()
        {
            // The file's own setting was warned about with the other warnings.
            warn!(
                %addr,
                "--metrics serves /metrics on every interface: whoever reaches this machine reads \
                 the hosts' names, addresses and activity; bind it to 127.0.0.1 or a management \
                 address unless that is meant"
            );
        }
        if let Some(addr) = opts.metrics.unwrap_or(config.agent.metrics) {
            let mut metrics = Metrics::new(orchestrator.wake_metrics(), orchestrator.subscribe());
            metrics.register(dns_metrics.collectors());
            metrics::serve(Arc::new(metrics), addr).await?;
        }
        let handles = control::Handles {
            inputs: inputs_tx.clone(),
            snapshot: orchestrator.subscribe(),
            detach: detach_tx,
        };
        control::serve(socket.clone(), handles).await?;
        anyhow::Ok(dns)
    };
    // Answers names until the agent returns (dropping it stops the server).
    let _dns = match endpoints.await {
        Ok(dns) => dns,
        Err(err) => return Err(abandon(&mut orchestrator, adopted, undo, err)),
    };
    let tasks = vec![
        tokio::spawn(ring::forward_held_frames(held_frames, held_tx)),
        tokio::spawn(ring::forward_listen_events(sock_events, listen.events())),
        tokio::spawn(watch_container_exits(
            runtime.clone(),
            config.network.name.clone(),
            inputs_tx.clone(),
        )),
    ]
    .into_iter()
    .chain(logger.map(|logger| tokio::spawn(forward_ebpf_logs(logger))))
    .collect::<Vec<_>>();
    let warm = orchestrator
        .hosts
        .iter()
        .filter(|h| matches!(h.state, HostState::Warm { .. }))
        .count();
    info!(
        interfaces = %opts.interfaces.join(","),
        hosts = orchestrator.hosts.len(),
        warm,
        adopted,
        network = %config.network.name,
        subnet = %config.network.subnet,
        "imag is attached and holding packets for cold hosts"
    );
    orchestrator.datapath_mut().prune_stale_links();

    let mut on_exit = opts.on_exit;
    let stop = async {
        tokio::select! {
            () = shutdown_signal() => {}
            _ = detach_rx.recv() => {
                info!("detach requested on the control socket");
                on_exit = OnExit::Detach;
            }
        }
    };
    orchestrator.run(&mut held_rx, &mut inputs_rx, stop).await;

    info!(?on_exit, "shutting down");
    orchestrator.finish(&mut held_rx, EXIT_GRACE).await;
    for task in tasks {
        task.abort();
    }
    let cluster = cluster.map(|(task, signals)| {
        signals.abort();
        task
    });
    match on_exit {
        OnExit::Detach => {
            orchestrator.datapath_mut().detach_all();
            orchestrator.stop_started_containers().await;
            if let Some(cluster) = cluster {
                // Withdraws this node's routes and gives up its hosts (their containers are
                // stopped): other nodes take them from their next packet.
                cluster.shutdown().await;
            }
            undo.run();
        }
        OnExit::Keep => info!(
            pins = %pins.dir().display(),
            "leaving the datapath attached for the next agent (`imag-agent detach` removes it)"
        ),
    }
    // The socket goes last: `imag-agent detach` waits for it to vanish before it cleans up what
    // is left, so it must not vanish while this agent is still detaching.
    let _ = std::fs::remove_file(&socket);
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
        firewall::ensure_ip_forwarding().context("checking /proc/sys/net/ipv4/ip_forward")?;
    let hosts: Vec<(std::net::Ipv4Addr, Vec<u16>)> = config
        .hosts
        .iter()
        .map(|h| (h.address, h.ports.clone()))
        .collect();
    let rules: Vec<ForwardRule> = interfaces
        .iter()
        .flat_map(|iface| {
            firewall::rules_for(
                &iface.name,
                &config.network.name,
                config.network.subnet,
                &hosts,
            )
        })
        .collect();
    // Also the rules an earlier agent left (kill -9, --on-exit keep) are ours to replace now, and
    // to remove on exit.
    firewall::install(&rules, &config.network.name)?;
    undo.rules_of = Some(config.network.name.clone());
    Ok(())
}

/// The initial state of every host, from what the engine says about its container.
async fn reconcile<R: ContainerRuntime>(
    runtime: &R,
    config: &Config,
) -> anyhow::Result<Vec<crate::orchestrator::Host>> {
    let specs: Vec<ContainerSpec> = config
        .hosts
        .iter()
        .map(|h| h.container_spec(&config.network.name))
        .collect();
    let mut observed = runtime.observe_all(&config.network.name, &specs).await?;
    let mut states = Vec::with_capacity(config.hosts.len());
    for (host, spec) in config.hosts.iter().zip(&specs) {
        let state = match observed.remove(&spec.name).unwrap_or(Observed::Absent) {
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
                    runtime.sleep(spec, Tier::Absent).await?;
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
        debug!(host = %host.name, state = state.name(), "reconciled with the engine");
        states.push(state);
    }
    let mut states = states.into_iter();
    Ok(Orchestrator::<R>::hosts_from(config, |_| {
        states.next().expect("one state per host")
    }))
}

/// Forwards the engine's events about this network's containers to the orchestrator.
async fn watch_container_exits<R: ContainerRuntime>(
    runtime: R,
    network: String,
    inputs: mpsc::Sender<Input>,
) {
    let mut events = runtime.events(&network);
    while let Some(event) = events.next().await {
        if inputs.send(Input::Engine(event)).await.is_err() {
            return;
        }
    }
}

/// A start that failed half-way: detaches what this agent attached (an adopted datapath stays
/// for its hosts), removes the forwarding rules it added, and returns `err`.
fn abandon<R: ContainerRuntime>(
    orchestrator: &mut Orchestrator<R>,
    adopted: bool,
    undo: Undo,
    err: anyhow::Error,
) -> anyhow::Error {
    if !adopted {
        orchestrator.datapath_mut().detach_all();
    }
    undo.run();
    err
}

/// Scale-out: joins the cluster of `[cluster]` (none without it): the orchestrator claims
/// before wakes and gets the cluster's signals as inputs. Returns the cluster's task and the
/// signal forwarder. (When the agent exits keeping the datapath, the task is dropped without
/// giving the hosts up: a next agent within the lease takes them over.)
async fn join_cluster<R: ContainerRuntime>(
    config: &Config,
    interfaces: &[String],
    orchestrator: &mut Orchestrator<R>,
    inputs: &mpsc::Sender<Input>,
) -> anyhow::Result<Option<(crate::cluster::ClusterTask, tokio::task::JoinHandle<()>)>> {
    let Some(cluster) = &config.cluster else {
        return Ok(None);
    };
    let (handle, mut signals, task) =
        crate::cluster::start(cluster, config, &config.network.bridge, interfaces).await?;
    orchestrator.join_cluster(Arc::new(handle));
    let inputs = inputs.clone();
    let forward = tokio::spawn(async move {
        while let Some(signal) = signals.recv().await {
            if inputs.send(Input::Cluster(signal)).await.is_err() {
                return;
            }
        }
    });
    Ok(Some((task, forward)))
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

/// `imag-agent detach` with no agent running: removes the pinned datapath (which detaches every
/// program), the forwarding rules, the containers and the Docker network of this configuration.
pub async fn detach(config: &Config, keep_containers: bool) -> anyhow::Result<()> {
    ensure_root("detach")?;
    let pins = Pins::for_network(&config.network.name);
    pins.remove_all()
        .with_context(|| format!("removing the pinned datapath {}", pins.dir().display()))?;
    info!(dir = %pins.dir().display(), "removed the pinned datapath");
    let removed = firewall::remove_rules_of(&config.network.name);
    info!(rules = removed, "removed forwarding rules");
    match engine(config) {
        Engine::Docker => remove_containers::<Docker>(config, keep_containers).await,
    }
}

/// The engine's part of [`detach`]: stop or remove the containers, and remove the network
/// (unless the containers stay).
async fn remove_containers<R: ContainerRuntime>(
    config: &Config,
    keep_containers: bool,
) -> anyhow::Result<()> {
    let runtime = R::connect(EngineOptions::default()).await?;
    for host in &config.hosts {
        let spec = host.container_spec(&config.network.name);
        let tier = if keep_containers {
            Tier::Stopped
        } else {
            Tier::Absent
        };
        runtime
            .sleep(&spec, tier)
            .await
            .with_context(|| format!("removing the container of host {}", host.name))?;
    }
    if !keep_containers {
        if runtime.remove_network(&config.network.name).await? {
            info!(network = %config.network.name, "removed the Docker network");
        } else {
            info!(network = %config.network.name, "left the Docker network: imag did not create it");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::{
        RuntimeEvent,
        fake::{Call, FakeRuntime},
    };

    const CONFIG: &str = r#"
[network]
subnet = "10.77.0.0/24"

[[host]]
name = "absent"
address = "10.77.0.10"
image = "imag-test/http"

[[host]]
name = "running"
address = "10.77.0.11"
image = "imag-test/http"

[[host]]
name = "paused"
address = "10.77.0.12"
image = "imag-test/http"

[[host]]
name = "stopped"
address = "10.77.0.13"
image = "imag-test/http"

[[host]]
name = "stale-stopped"
address = "10.77.0.14"
image = "imag-test/http"

[[host]]
name = "stale-running"
address = "10.77.0.15"
image = "imag-test/http"
"#;

    fn spec(config: &Config, host: &str) -> ContainerSpec {
        let host = config.hosts.iter().find(|h| h.name == host).unwrap();
        host.container_spec(&config.network.name)
    }

    #[tokio::test]
    async fn reconcile_takes_each_host_s_state_from_the_engine_in_one_look() {
        let config = Config::parse(CONFIG, "test.toml").unwrap();
        let fake = FakeRuntime::new();
        fake.put(&spec(&config, "running"), ContainerStatus::Running);
        fake.put(&spec(&config, "paused"), ContainerStatus::Paused);
        fake.put(&spec(&config, "stopped"), ContainerStatus::Stopped);
        fake.put_stale(&spec(&config, "stale-stopped"), ContainerStatus::Stopped);
        fake.put_stale(&spec(&config, "stale-running"), ContainerStatus::Running);

        let hosts = reconcile(&fake, &config).await.unwrap();
        let states: Vec<_> = hosts
            .iter()
            .map(|h| (h.config.name.as_str(), h.state.name()))
            .collect();
        assert_eq!(
            states,
            [
                ("absent", "asleep"),
                ("running", "warm"),
                ("paused", "asleep"),
                ("stopped", "asleep"),
                ("stale-stopped", "asleep"),
                ("stale-running", "warm"),
            ]
        );
        let tiers: Vec<_> = hosts
            .iter()
            .filter_map(|h| match h.state {
                HostState::Asleep { tier } => Some(tier),
                _ => None,
            })
            .collect();
        assert_eq!(
            tiers,
            [Tier::Absent, Tier::Paused, Tier::Stopped, Tier::Absent]
        );
        // One look at the whole network; the stale stopped container is removed, the stale
        // running one keeps serving.
        assert_eq!(
            fake.calls(),
            [
                Call::ObserveAll("imag".into()),
                Call::Sleep {
                    container: "imag--stale-stopped".into(),
                    to: Tier::Absent
                },
            ]
        );
        assert_eq!(fake.status("imag--stale-stopped"), None);
        assert_eq!(
            fake.status("imag--stale-running"),
            Some(ContainerStatus::Running)
        );
    }

    #[tokio::test]
    async fn container_exits_reach_the_orchestrator_as_inputs() {
        let config = Config::parse(CONFIG, "test.toml").unwrap();
        let fake = FakeRuntime::new();
        fake.put(&spec(&config, "running"), ContainerStatus::Running);
        let (inputs_tx, mut inputs_rx) = mpsc::channel(4);
        let watcher = tokio::spawn(watch_container_exits(
            fake.clone(),
            "imag".into(),
            inputs_tx,
        ));
        // Exits before the watcher subscribed are not reported (as with a real engine).
        while !fake.calls().contains(&Call::Events("imag".into())) {
            tokio::task::yield_now().await;
        }
        fake.exit("imag--running", 137);
        match inputs_rx.recv().await {
            Some(Input::Engine(RuntimeEvent::Exited { host })) => assert_eq!(host, "running"),
            _ => panic!("expected the exit of host running as an input"),
        }
        // The orchestrator gone, the watcher ends at the next event.
        drop(inputs_rx);
        fake.exit("imag--running", 137);
        watcher.await.unwrap();
    }
}
