//! [`ContainerRuntime`] for the Docker engine, through bollard; and the Docker network that holds
//! the imaginary hosts.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
};

use bollard::{
    errors::Error as BollardError,
    models::{
        ContainerCreateBody, ContainerStateStatusEnum, EndpointIpamConfig, EndpointSettings,
        HostConfig, Ipam, IpamConfig, NetworkCreateRequest, NetworkingConfig,
    },
    query_parameters::{
        CreateContainerOptions, InspectContainerOptions, InspectNetworkOptions,
        RemoveContainerOptions, StartContainerOptions, StopContainerOptions,
    },
};
use tracing::{debug, info};

use super::{
    ContainerRuntime, ContainerSpec, ContainerStatus, LABEL_HOST, LABEL_MANAGED, LABEL_NETWORK,
    LABEL_SPEC, Observed, RunningInfo, RuntimeError, Started, freezer::Freezer,
};
use crate::{clock::monotonic_ns, config::NetworkConfig, interfaces::parse_mac, runtime::Tier};

/// Seconds a stopping container gets to exit on SIGTERM before SIGKILL.
const STOP_TIMEOUT_SECS: i32 = 10;

#[derive(Clone)]
pub struct Docker {
    client: bollard::Docker,
    /// Wake paused containers by thawing their freezer directly.
    fast_thaw: bool,
    /// Freezers of containers this agent paused, found when pausing (so that a wake needs no
    /// engine round trip to find them).
    freezers: Arc<Mutex<HashMap<String, Freezer>>>,
    /// Containers thawed directly: running, though the engine still says paused.
    unsettled: Arc<Mutex<HashSet<String>>>,
    /// DNS servers of the containers it creates (the agent's, for the names Docker's own lacks).
    pub dns: Vec<String>,
}

impl Docker {
    /// Connects to the local engine and negotiates the API version.
    pub async fn connect(fast_thaw: bool) -> Result<Docker, RuntimeError> {
        let client = bollard::Docker::connect_with_local_defaults()
            .map_err(|e| RuntimeError::Unreachable(e.to_string()))?
            .negotiate_version()
            .await
            .map_err(|e| RuntimeError::Unreachable(e.to_string()))?;
        Ok(Docker {
            client,
            fast_thaw,
            freezers: Arc::default(),
            unsettled: Arc::default(),
            dns: Vec::new(),
        })
    }

    /// Observes every container of `network` in one engine call (instead of one inspect per
    /// host): container name → what the engine says. Hosts without an entry have no container.
    pub async fn observe_network(
        &self,
        network: &str,
        specs: &[ContainerSpec],
    ) -> Result<HashMap<String, Observed>, RuntimeError> {
        use bollard::{
            models::ContainerSummaryStateEnum as State, query_parameters::ListContainersOptions,
        };
        let options = ListContainersOptions {
            all: true,
            filters: Some(HashMap::from([(
                "label".to_string(),
                vec![format!("{LABEL_NETWORK}={network}")],
            )])),
            ..Default::default()
        };
        let listed = self
            .client
            .list_containers(Some(options))
            .await
            .map_err(|e| classify(e, "list containers of network", network))?;
        let fingerprints: HashMap<&str, String> = specs
            .iter()
            .map(|s| (s.name.as_str(), s.fingerprint()))
            .collect();
        let mut observed = HashMap::new();
        for container in listed {
            let Some(name) = container
                .names
                .as_ref()
                .and_then(|n| n.first())
                .map(|n| n.trim_start_matches('/').to_string())
            else {
                continue;
            };
            let Some(fingerprint) = fingerprints.get(name.as_str()) else {
                continue;
            };
            let status = match container.state {
                Some(State::RUNNING) => ContainerStatus::Running,
                // Whether it is really frozen needs a closer look (a fast wake may have thawed it).
                Some(State::PAUSED) => {
                    let spec = specs.iter().find(|s| s.name == name).expect("found above");
                    observed.insert(name, self.observe(spec).await?);
                    continue;
                }
                Some(State::RESTARTING) | Some(State::REMOVING) => ContainerStatus::Transitional,
                _ => ContainerStatus::Stopped,
            };
            let current = container
                .labels
                .as_ref()
                .and_then(|l| l.get(LABEL_SPEC))
                .is_some_and(|f| f == fingerprint);
            observed.insert(name, Observed::Present { status, current });
        }
        Ok(observed)
    }

    /// The bollard client, for the engine's event stream.
    pub fn client(&self) -> &bollard::Docker {
        &self.client
    }

    /// The freezer of a container: cached from when it was paused, else found through its PID.
    async fn freezer(&self, name: &str) -> Option<Freezer> {
        if let Some(freezer) = self.freezers.lock().expect("not poisoned").get(name) {
            return Some(freezer.clone());
        }
        let inspected = self
            .client
            .inspect_container(name, None::<InspectContainerOptions>)
            .await
            .ok()?;
        let pid = inspected.state.and_then(|s| s.pid).filter(|p| *p > 0)?;
        let freezer = Freezer::of_process(pid as u32).ok()?;
        self.freezers
            .lock()
            .expect("not poisoned")
            .insert(name.to_string(), freezer.clone());
        Some(freezer)
    }

    fn is_unsettled(&self, name: &str) -> bool {
        self.unsettled.lock().expect("not poisoned").contains(name)
    }

    fn set_unsettled(&self, name: &str, unsettled: bool) {
        let mut set = self.unsettled.lock().expect("not poisoned");
        if unsettled {
            set.insert(name.to_string());
        } else {
            set.remove(name);
        }
    }

    /// Creates the network for the imaginary subnet, or reuses it if it exists with that subnet.
    pub async fn ensure_network(&self, net: &NetworkConfig) -> Result<(), RuntimeError> {
        match self
            .client
            .inspect_network(&net.name, None::<InspectNetworkOptions>)
            .await
        {
            Ok(existing) => {
                let subnets: Vec<String> = existing
                    .ipam
                    .and_then(|ipam| ipam.config)
                    .unwrap_or_default()
                    .into_iter()
                    .filter_map(|c| c.subnet)
                    .collect();
                if !subnets.contains(&net.subnet.to_string()) {
                    return Err(RuntimeError::Engine {
                        action: "reuse network",
                        container: net.name.clone(),
                        message: format!(
                            "it exists with subnet(s) {subnets:?}, but the configuration says {}: \
                             remove it (`docker network rm {}`) or set [network] name to another \
                             network",
                            net.subnet, net.name
                        ),
                    });
                }
                let bridge = existing
                    .options
                    .as_ref()
                    .and_then(|o| o.get("com.docker.network.bridge.name"))
                    .cloned()
                    .unwrap_or_default();
                if bridge != net.bridge {
                    return Err(RuntimeError::Engine {
                        action: "reuse network",
                        container: net.name.clone(),
                        message: format!(
                            "its bridge is {bridge:?} but the configuration says {:?}: remove \
                             the network (`docker network rm {}`) or set [network] bridge = {bridge:?}",
                            net.bridge, net.name
                        ),
                    });
                }
                info!(network = %net.name, subnet = %net.subnet, "reusing Docker network");
                Ok(())
            }
            Err(err) if status_of(&err) == Some(404) => {
                let request = NetworkCreateRequest {
                    name: net.name.clone(),
                    driver: Some("bridge".into()),
                    ipam: Some(Ipam {
                        driver: Some("default".into()),
                        config: Some(vec![IpamConfig {
                            subnet: Some(net.subnet.to_string()),
                            gateway: Some(net.gateway.to_string()),
                            ..Default::default()
                        }]),
                        options: None,
                    }),
                    options: Some(HashMap::from([(
                        "com.docker.network.bridge.name".to_string(),
                        net.bridge.clone(),
                    )])),
                    labels: Some(HashMap::from([(
                        LABEL_MANAGED.to_string(),
                        "true".to_string(),
                    )])),
                    ..Default::default()
                };
                self.client
                    .create_network(request)
                    .await
                    .map_err(|e| RuntimeError::Engine {
                        action: "create network",
                        container: net.name.clone(),
                        message: format!(
                            "{}; if the subnet {} overlaps another network, choose a free one",
                            message_of(&e),
                            net.subnet
                        ),
                    })?;
                info!(network = %net.name, subnet = %net.subnet, bridge = %net.bridge,
                    "created Docker network");
                Ok(())
            }
            Err(err) => Err(classify(err, "inspect network", &net.name)),
        }
    }

    /// Removes a network imag created (labelled `imag.managed`); returns false, leaving it, for
    /// a network someone else made (`detach` must not remove what it did not install).
    pub async fn remove_network(&self, name: &str) -> Result<bool, RuntimeError> {
        match self
            .client
            .inspect_network(name, None::<InspectNetworkOptions>)
            .await
        {
            Ok(network) => {
                let managed = network
                    .labels
                    .as_ref()
                    .is_some_and(|l| l.get(LABEL_MANAGED).map(String::as_str) == Some("true"));
                if !managed {
                    return Ok(false);
                }
            }
            Err(err) if status_of(&err) == Some(404) => return Ok(true),
            Err(err) => return Err(classify(err, "inspect network", name)),
        }
        match self.client.remove_network(name).await.map(|()| true) {
            Ok(removed) => Ok(removed),
            Err(err) if status_of(&err) == Some(404) => Ok(true),
            Err(err) => Err(classify(err, "remove network", name)),
        }
    }

    async fn create(&self, spec: &ContainerSpec) -> Result<String, RuntimeError> {
        let labels = HashMap::from([
            (LABEL_MANAGED.to_string(), "true".to_string()),
            (LABEL_NETWORK.to_string(), spec.network.clone()),
            (LABEL_HOST.to_string(), spec.host.clone()),
            (LABEL_SPEC.to_string(), spec.fingerprint()),
        ]);
        let endpoint = EndpointSettings {
            ipam_config: Some(EndpointIpamConfig {
                ipv4_address: Some(spec.address.to_string()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let body = ContainerCreateBody {
            image: Some(spec.image.clone()),
            cmd: spec.command.clone(),
            env: Some(spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
            hostname: Some(spec.host.clone()),
            labels: Some(labels),
            host_config: Some(HostConfig {
                network_mode: Some(spec.network.clone()),
                // A tiny init as PID 1 forwards SIGTERM, so that images without a signal handler
                // stop at once instead of after the stop timeout.
                init: Some(true),
                dns: (!self.dns.is_empty()).then(|| self.dns.clone()),
                ..Default::default()
            }),
            networking_config: Some(NetworkingConfig {
                endpoints_config: Some(HashMap::from([(spec.network.clone(), endpoint)])),
            }),
            ..Default::default()
        };
        let options = CreateContainerOptions {
            name: Some(spec.name.clone()),
            ..Default::default()
        };
        match self.client.create_container(Some(options), body).await {
            Ok(created) => {
                debug!(container = %spec.name, id = %created.id, "created container");
                Ok(created.id)
            }
            Err(err) if status_of(&err) == Some(404) => Err(RuntimeError::ImageMissing {
                image: spec.image.clone(),
            }),
            Err(err) => Err(classify(err, "create", &spec.name)),
        }
    }

    /// Starts an existing container; `Ok(false)` if there is no such container.
    async fn start_existing(&self, spec: &ContainerSpec, id: &str) -> Result<bool, RuntimeError> {
        match self
            .client
            .start_container(id, None::<StartContainerOptions>)
            .await
        {
            Ok(()) => Ok(true),
            // 304: already running.
            Err(err) if status_of(&err) == Some(304) => Ok(true),
            Err(err) if status_of(&err) == Some(404) => Ok(false),
            Err(err) if message_of(&err).contains("ddress already in use") => {
                Err(RuntimeError::AddressInUse {
                    address: spec.address,
                    network: spec.network.clone(),
                })
            }
            Err(err) => Err(classify(err, "start", &spec.name)),
        }
    }

    async fn remove(&self, name: &str) -> Result<(), RuntimeError> {
        let options = RemoveContainerOptions {
            force: true,
            ..Default::default()
        };
        match self.client.remove_container(name, Some(options)).await {
            Ok(()) => Ok(()),
            Err(err) if status_of(&err) == Some(404) => Ok(()),
            Err(err) => Err(classify(err, "remove", name)),
        }
    }

    /// Starts the host's container, creating it if it does not exist; returns the tier it
    /// really came from.
    async fn start_or_create(&self, spec: &ContainerSpec) -> Result<Tier, RuntimeError> {
        if self.start_existing(spec, &spec.name).await? {
            Ok(Tier::Stopped)
        } else {
            self.create_and_start(spec).await?;
            Ok(Tier::Absent)
        }
    }

    /// Creates (recreating a stale one) and starts.
    async fn create_and_start(&self, spec: &ContainerSpec) -> Result<(), RuntimeError> {
        let id = match self.create(spec).await {
            Err(RuntimeError::Engine { message, .. }) if message.contains("already in use") => {
                // A container by that name exists: it is ours (same name scheme) but the agent's
                // belief about it was stale; make it current.
                self.remove(&spec.name).await?;
                self.create(spec).await?
            }
            other => other?,
        };
        if !self.start_existing(spec, &id).await? {
            return Err(RuntimeError::Engine {
                action: "start",
                container: spec.name.clone(),
                message: "the container disappeared right after it was created".into(),
            });
        }
        Ok(())
    }
}

impl ContainerRuntime for Docker {
    async fn wake(&self, spec: &ContainerSpec, from: Tier) -> Result<Started, RuntimeError> {
        let requested_ns = monotonic_ns();
        if from == Tier::Paused && self.fast_thaw && !self.is_unsettled(&spec.name) {
            // The fast path: thaw the freezer ourselves (microseconds) and let the engine catch
            // up later (settle).
            if let Some(freezer) = self.freezer(&spec.name).await
                && freezer.is_frozen().unwrap_or(false)
                && freezer.thaw().is_ok()
            {
                self.set_unsettled(&spec.name, true);
                return Ok(Started {
                    from: Tier::Paused,
                    requested_ns,
                    running_ns: monotonic_ns(),
                });
            }
        }
        let from = match from {
            Tier::Paused => match self.client.unpause_container(&spec.name).await {
                Ok(()) => Tier::Paused,
                Err(err) if status_of(&err) == Some(404) => {
                    self.create_and_start(spec).await?;
                    Tier::Absent
                }
                // 409: not paused (stopped or already running).
                Err(err) if status_of(&err) == Some(409) => self.start_or_create(spec).await?,
                Err(err) => return Err(classify(err, "unpause", &spec.name)),
            },
            Tier::Stopped => self.start_or_create(spec).await?,
            Tier::Absent => {
                self.create_and_start(spec).await?;
                Tier::Absent
            }
        };
        Ok(Started {
            from,
            requested_ns,
            running_ns: monotonic_ns(),
        })
    }

    async fn running_info(&self, spec: &ContainerSpec) -> Result<RunningInfo, String> {
        let inspected = self
            .client
            .inspect_container(&spec.name, None::<InspectContainerOptions>)
            .await
            .map_err(|e| format!("container disappeared: {}", message_of(&e)))?;
        let mac = inspected
            .network_settings
            .as_ref()
            .and_then(|n| n.networks.as_ref())
            .and_then(|n| n.get(&spec.network))
            .and_then(|e| e.mac_address.as_deref())
            .and_then(parse_mac);
        let state = inspected.state.unwrap_or_default();
        match state.status {
            Some(ContainerStateStatusEnum::RUNNING) | Some(ContainerStateStatusEnum::PAUSED) => {
                Ok(RunningInfo {
                    pid: state.pid.unwrap_or_default() as u32,
                    mac,
                })
            }
            status => Err(format!(
                "container exited before it was ready (status {}, exit code {}{})",
                status.map_or("unknown".to_string(), |s| s.to_string()),
                state.exit_code.unwrap_or_default(),
                state
                    .error
                    .filter(|e| !e.is_empty())
                    .map_or(String::new(), |e| format!(", error: {e}"))
            )),
        }
    }

    async fn sleep(&self, spec: &ContainerSpec, to: Tier) -> Result<(), RuntimeError> {
        match to {
            Tier::Paused => {
                if self.is_unsettled(&spec.name) {
                    // The engine still says paused: freezing again makes that true.
                    let freezer = self.freezer(&spec.name).await;
                    if let Some(freezer) = freezer
                        && freezer.freeze().is_ok()
                    {
                        self.set_unsettled(&spec.name, false);
                        return Ok(());
                    }
                    self.settle(spec).await?;
                }
                // Remember the freezer now, while the container runs, for a fast wake.
                let _ = self.freezer(&spec.name).await;
                self.client
                    .pause_container(&spec.name)
                    .await
                    .map_err(|e| classify(e, "pause", &spec.name))
            }
            Tier::Stopped => {
                self.settle(spec).await?;
                // A paused container cannot be stopped gracefully: thaw it first.
                let _ = self.client.unpause_container(&spec.name).await;
                self.freezers
                    .lock()
                    .expect("not poisoned")
                    .remove(&spec.name);
                let options = StopContainerOptions {
                    t: Some(STOP_TIMEOUT_SECS),
                    signal: None,
                };
                match self.client.stop_container(&spec.name, Some(options)).await {
                    Ok(()) => Ok(()),
                    Err(err) if matches!(status_of(&err), Some(304) | Some(404)) => Ok(()),
                    Err(err) => Err(classify(err, "stop", &spec.name)),
                }
            }
            Tier::Absent => {
                self.settle(spec).await?;
                self.freezers
                    .lock()
                    .expect("not poisoned")
                    .remove(&spec.name);
                self.remove(&spec.name).await
            }
        }
    }

    fn unsettled(&self, spec: &ContainerSpec) -> bool {
        self.is_unsettled(&spec.name)
    }

    /// Repairs the engine's view of a container thawed directly: freeze it again (for the few
    /// milliseconds the engine needs), and let the engine unpause it; if that fails, thaw it
    /// ourselves again, so that the container is never left frozen.
    async fn settle(&self, spec: &ContainerSpec) -> Result<(), RuntimeError> {
        if !self.is_unsettled(&spec.name) {
            return Ok(());
        }
        let Some(freezer) = self.freezer(&spec.name).await else {
            self.set_unsettled(&spec.name, false);
            return Ok(());
        };
        freezer.freeze().map_err(|e| RuntimeError::Engine {
            action: "freeze (to settle)",
            container: spec.name.clone(),
            message: e.to_string(),
        })?;
        let unpaused = self.client.unpause_container(&spec.name).await;
        if unpaused.is_err() || freezer.is_frozen().unwrap_or(true) {
            let _ = freezer.thaw();
        }
        self.set_unsettled(&spec.name, false);
        unpaused.map_err(|e| classify(e, "unpause (to settle)", &spec.name))
    }

    async fn observe(&self, spec: &ContainerSpec) -> Result<Observed, RuntimeError> {
        let inspected = match self
            .client
            .inspect_container(&spec.name, None::<InspectContainerOptions>)
            .await
        {
            Ok(inspected) => inspected,
            Err(err) if status_of(&err) == Some(404) => return Ok(Observed::Absent),
            Err(err) => return Err(classify(err, "inspect", &spec.name)),
        };
        let labels = inspected
            .config
            .as_ref()
            .and_then(|c| c.labels.clone())
            .unwrap_or_default();
        let current = labels.get(LABEL_SPEC) == Some(&spec.fingerprint());
        let pid = inspected
            .state
            .as_ref()
            .and_then(|s| s.pid)
            .unwrap_or_default();
        let status = match inspected.state.and_then(|s| s.status) {
            Some(ContainerStateStatusEnum::RUNNING) => ContainerStatus::Running,
            Some(ContainerStateStatusEnum::PAUSED) => {
                // Paused for the engine, but thawed directly by an earlier agent: it runs, and
                // the engine's view needs settling.
                match Freezer::of_process(pid as u32).and_then(|f| f.is_frozen()) {
                    Ok(false) => {
                        self.set_unsettled(&spec.name, true);
                        ContainerStatus::Running
                    }
                    _ => ContainerStatus::Paused,
                }
            }
            Some(ContainerStateStatusEnum::RESTARTING)
            | Some(ContainerStateStatusEnum::REMOVING) => ContainerStatus::Transitional,
            _ => ContainerStatus::Stopped,
        };
        Ok(Observed::Present { status, current })
    }
}

fn status_of(err: &BollardError) -> Option<u16> {
    match err {
        BollardError::DockerResponseServerError { status_code, .. } => Some(*status_code),
        _ => None,
    }
}

fn message_of(err: &BollardError) -> String {
    match err {
        BollardError::DockerResponseServerError { message, .. } => message.clone(),
        other => other.to_string(),
    }
}

fn classify(err: BollardError, action: &'static str, container: &str) -> RuntimeError {
    match err {
        BollardError::DockerResponseServerError { message, .. } => RuntimeError::Engine {
            action,
            container: container.to_string(),
            message,
        },
        BollardError::IOError { .. } | BollardError::HyperResponseError { .. } => {
            RuntimeError::Unreachable(err.to_string())
        }
        other => RuntimeError::Engine {
            action,
            container: container.to_string(),
            message: other.to_string(),
        },
    }
}
