//! [`ContainerRuntime`] for the Docker engine, through bollard. This file drives one host's
//! container (create, start, pause, stop, remove, inspect), by the ID `identity` found from its
//! labels (never by name); `network` holds what concerns the whole network (the Docker network
//! itself, listing its containers), `events` the engine's event stream, and `thaw` the optional
//! fast-thaw capability (the cgroup freezer, behind the engine's back), `page_out` the optional
//! page-out capability (the memory cgroup, reclaimed to swap).

mod by_name;
mod events;
mod identity;
mod network;
mod page_out;
mod thaw;

use std::collections::HashMap;

use bollard::{
    errors::Error as BollardError,
    models::{
        ContainerCreateBody, ContainerInspectResponse, ContainerStateStatusEnum,
        EndpointIpamConfig, EndpointSettings, HealthConfig, HealthStatusEnum, HostConfig,
        NetworkingConfig, RestartPolicy, RestartPolicyNameEnum,
    },
    query_parameters::{
        CreateContainerOptions, InspectContainerOptions, StartContainerOptions,
        StopContainerOptions,
    },
};
use futures::stream::BoxStream;
use tracing::debug;

use self::{
    identity::{Holder, Identities},
    thaw::FastThaw,
};
use super::{
    ContainerRuntime, ContainerSpec, ContainerStatus, EngineOptions, Health, Healthcheck,
    LABEL_HOST, LABEL_MANAGED, LABEL_NETWORK, LABEL_SPEC, NotRunning, Observed, RunningInfo,
    RuntimeError, RuntimeEvent, Started,
};
use crate::{
    clock::monotonic_ns,
    interfaces::parse_mac,
    runtime::{NetworkSpec, Tier},
};

/// Seconds a stopping container gets to exit on SIGTERM before SIGKILL.
const STOP_TIMEOUT_SECS: i32 = 10;

/// A handle on the local Docker engine (cheap to clone: clones share the fast-thaw state).
#[derive(Clone)]
pub struct Docker {
    client: bollard::Docker,
    thaw: FastThaw,
    /// Each host's container ID, found by its labels.
    ids: Identities,
    /// DNS servers of the containers it creates ([`EngineOptions::dns`]).
    dns: Vec<String>,
    /// The memory cgroups of containers paged out since their last wake, by name: read back
    /// ahead of the process on the next wake (`page_out.rs`).
    paged_out: page_out::PagedOutGroups,
}

impl Docker {
    async fn create(&self, spec: &ContainerSpec) -> Result<String, RuntimeError> {
        let o = &spec.options;
        // The user's labels first, imag's on top: config validation refuses `imag.*` keys, and
        // this order keeps imag's even if a front end did not.
        let mut labels: HashMap<String, String> = o.labels.clone().into_iter().collect();
        labels.extend([
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
        let non_empty = |list: &Vec<String>| (!list.is_empty()).then(|| list.clone());
        let body = ContainerCreateBody {
            image: Some(spec.image.clone()),
            cmd: spec.command.clone(),
            entrypoint: o.entrypoint.clone(),
            env: Some(spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
            hostname: Some(spec.host.clone()),
            user: o.user.clone(),
            working_dir: o.working_dir.clone(),
            labels: Some(labels),
            healthcheck: o.healthcheck.as_ref().map(health_config),
            host_config: Some(HostConfig {
                network_mode: Some(spec.network.clone()),
                // A tiny init as PID 1 forwards SIGTERM, so that images without a signal handler
                // stop at once instead of after the stop timeout.
                init: Some(true),
                dns: (!self.dns.is_empty()).then(|| self.dns.clone()),
                extra_hosts: (!spec.extra_hosts.is_empty()).then(|| spec.extra_hosts.clone()),
                // imag owns the lifecycle: the engine must never restart what imag put to sleep.
                restart_policy: Some(RestartPolicy {
                    name: Some(RestartPolicyNameEnum::NO),
                    maximum_retry_count: None,
                }),
                // `-v` syntax: the engine creates a named volume on first use.
                binds: (!o.mounts.is_empty()).then(|| {
                    o.mounts
                        .iter()
                        .map(super::options::Mount::to_bind)
                        .collect()
                }),
                tmpfs: (!o.tmpfs.is_empty()).then(|| o.tmpfs.clone().into_iter().collect()),
                memory: o.memory.map(saturating_i64),
                nano_cpus: o.nano_cpus.map(saturating_i64),
                pids_limit: o.pids_limit.map(i64::from),
                cap_add: non_empty(&o.cap_add),
                cap_drop: non_empty(&o.cap_drop),
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
                self.ids.set(&spec.host, Some(created.id.clone()));
                Ok(created.id)
            }
            Err(err) if status_of(&err) == Some(404) => Err(RuntimeError::ImageMissing {
                image: spec.image.clone(),
            }),
            Err(err) => Err(classify(err, "create", &spec.name)),
        }
    }

    /// Inspects a container that should be running (or paused: it still has its process and
    /// link); why not, if it is not.
    async fn inspect_running(
        &self,
        spec: &ContainerSpec,
    ) -> Result<ContainerInspectResponse, NotRunning> {
        let id = self
            .container_id(spec)
            .await
            .map_err(|e| NotRunning::Gone(e.to_string()))?
            .ok_or_else(|| {
                NotRunning::Gone(format!("no container carries host {}'s labels", spec.host))
            })?;
        let inspected = self
            .client
            .inspect_container(&id, None::<InspectContainerOptions>)
            .await
            .map_err(|e| {
                if status_of(&e) == Some(404) {
                    self.ids.forget(&spec.host);
                }
                NotRunning::Gone(message_of(&e))
            })?;
        let state = inspected.state.clone().unwrap_or_default();
        match state.status {
            Some(ContainerStateStatusEnum::RUNNING | ContainerStateStatusEnum::PAUSED) => {
                Ok(inspected)
            }
            status => Err(NotRunning::Exited {
                status: status.map_or("unknown".to_string(), |s| s.to_string()),
                code: state.exit_code.unwrap_or_default(),
                error: state.error.filter(|e| !e.is_empty()),
            }),
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
            Err(err) if status_of(&err) == Some(404) => {
                self.ids.forget(&spec.host);
                Ok(false)
            }
            Err(err) if message_of(&err).contains("ddress already in use") => {
                Err(RuntimeError::AddressInUse {
                    address: spec.address,
                    network: spec.network.clone(),
                })
            }
            Err(err) => Err(classify(err, "start", &spec.name)),
        }
    }

    /// The host's container's ID, or an error saying there is none (for `action`).
    async fn own_id(
        &self,
        spec: &ContainerSpec,
        action: &'static str,
    ) -> Result<String, RuntimeError> {
        self.container_id(spec)
            .await?
            .ok_or_else(|| RuntimeError::Engine {
                action,
                container: spec.name.clone(),
                message: format!("no container carries host {}'s labels", spec.host),
            })
    }

    /// Wakes a paused container `id`, falling back to a start or a create if it is not paused
    /// (any more).
    async fn unpause_or_start(&self, spec: &ContainerSpec, id: &str) -> Result<Tier, RuntimeError> {
        match self.client.unpause_container(id).await {
            Ok(()) => Ok(Tier::Paused),
            Err(err) if status_of(&err) == Some(404) => {
                self.ids.forget(&spec.host);
                self.create_and_start(spec).await?;
                Ok(Tier::Absent)
            }
            // Not paused (stopped, or running already): 409 from newer engines, a 500 saying so
            // from Docker 20.10. A running container is started by nothing (304): the wake is done.
            Err(err)
                if status_of(&err) == Some(409) || message_of(&err).contains("is not paused") =>
            {
                self.start_or_create(spec).await
            }
            Err(err) => Err(classify(err, "unpause", &spec.name)),
        }
    }

    /// Removes the host's own container (found by its labels), if it has one.
    async fn remove_own(&self, spec: &ContainerSpec) -> Result<(), RuntimeError> {
        if let Some(id) = self.container_id(spec).await? {
            self.remove_id(&id, &spec.name).await?;
        }
        self.ids.set(&spec.host, None);
        Ok(())
    }

    /// Starts the host's container, creating it if it does not exist; returns the tier it
    /// really came from.
    async fn start_or_create(&self, spec: &ContainerSpec) -> Result<Tier, RuntimeError> {
        if let Some(id) = self.container_id(spec).await? {
            match self.start_existing(spec, &id).await {
                Ok(true) => return Ok(Tier::Stopped),
                Ok(false) => {}
                // The engine restarted while it was starting this container, and its runtime
                // kept a task for it ("task …: already exists"): it will never start again. It
                // is ours (found by its labels): replace it.
                Err(RuntimeError::Engine { message, .. }) if message.contains("already exists") => {
                    tracing::warn!(container = %spec.name, error = %message,
                        "the engine cannot start the host's container again (a task left from \
                         an engine restart): replacing it");
                }
                Err(err) => return Err(err),
            }
        }
        self.create_and_start(spec).await?;
        Ok(Tier::Absent)
    }

    /// Creates (replacing the host's own container, whatever its name, so that a host never
    /// has two) and starts. A container of someone else holding the name is left alone and
    /// reported ([`RuntimeError::Foreign`]).
    async fn create_and_start(&self, spec: &ContainerSpec) -> Result<(), RuntimeError> {
        self.remove_own(spec).await?;
        let id = match self.create(spec).await {
            Err(RuntimeError::Engine { message, .. }) if message.contains("already in use") => {
                match self.holder_of_name(spec).await? {
                    // Ours after all (created meanwhile, e.g. by another agent): make it current.
                    Holder::Ours(id) => self.remove_id(&id, &spec.name).await?,
                    Holder::Foreign(owner) => {
                        return Err(RuntimeError::Foreign {
                            container: spec.name.clone(),
                            host: spec.host.clone(),
                            owner,
                        });
                    }
                    Holder::Nobody => {}
                }
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
    /// Connects to the local engine and negotiates the API version.
    async fn connect(options: EngineOptions) -> Result<Docker, RuntimeError> {
        let client = bollard::Docker::connect_with_local_defaults()
            .map_err(|e| RuntimeError::Unreachable(e.to_string()))?
            .negotiate_version()
            .await
            .map_err(|e| RuntimeError::Unreachable(e.to_string()))?;
        Ok(Docker {
            client,
            thaw: FastThaw::new(options.fast_thaw),
            ids: Identities::default(),
            dns: options.dns.iter().map(ToString::to_string).collect(),
            paged_out: page_out::PagedOutGroups::default(),
        })
    }

    async fn ensure_network(&self, net: &NetworkSpec) -> Result<(), RuntimeError> {
        self.ensure_docker_network(net).await
    }

    async fn remove_network(&self, name: &str) -> Result<bool, RuntimeError> {
        self.remove_docker_network(name).await
    }

    async fn observe_all(
        &self,
        network: &str,
        specs: &[ContainerSpec],
    ) -> Result<HashMap<String, Observed>, RuntimeError> {
        self.list_network(network, specs).await
    }

    fn events(&self, network: &str) -> BoxStream<'static, RuntimeEvent> {
        self.container_events(network)
    }

    async fn wake(&self, spec: &ContainerSpec, from: Tier) -> Result<Started, RuntimeError> {
        let requested_ns = monotonic_ns();
        if from == Tier::Paused {
            // Started before the thaw, and not waited for: the reads go on beside the process.
            self.paged_out.prefetch(&spec.name);
        } else {
            // Started anew: nothing of the paged-out process is left to read back.
            self.paged_out.forget(&spec.name);
        }
        if from == Tier::Paused && self.thaw_directly(spec).await {
            return Ok(Started {
                from: Tier::Paused,
                requested_ns,
                running_ns: monotonic_ns(),
            });
        }
        let from = match from {
            Tier::Paused => match self.container_id(spec).await? {
                None => {
                    self.create_and_start(spec).await?;
                    Tier::Absent
                }
                Some(id) => self.unpause_or_start(spec, &id).await?,
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

    async fn running_info(&self, spec: &ContainerSpec) -> Result<RunningInfo, NotRunning> {
        let inspected = self.inspect_running(spec).await?;
        let mac = inspected
            .network_settings
            .as_ref()
            .and_then(|n| n.networks.as_ref())
            .and_then(|n| n.get(&spec.network))
            .and_then(|e| e.mac_address.as_deref())
            .and_then(parse_mac);
        // Docker reports the pid as i64; anything not a pid reads as 0, "none", like a missing one.
        let pid = inspected.state.and_then(|s| s.pid).unwrap_or_default();
        Ok(RunningInfo {
            pid: u32::try_from(pid).unwrap_or_default(),
            mac,
        })
    }

    async fn health(&self, spec: &ContainerSpec) -> Result<Option<Health>, NotRunning> {
        let inspected = self.inspect_running(spec).await?;
        let status = inspected
            .state
            .and_then(|s| s.health)
            .and_then(|h| h.status);
        Ok(match status {
            Some(HealthStatusEnum::STARTING) => Some(Health::Starting),
            Some(HealthStatusEnum::HEALTHY) => Some(Health::Healthy),
            Some(HealthStatusEnum::UNHEALTHY) => Some(Health::Unhealthy),
            // No healthcheck on the container nor its image (or one set to NONE).
            Some(HealthStatusEnum::NONE | HealthStatusEnum::EMPTY) | None => None,
        })
    }

    async fn sleep(&self, spec: &ContainerSpec, to: Tier) -> Result<(), RuntimeError> {
        // After a settle of this container under way, never beside it.
        let _turn = self.thaw.one_at_a_time(&spec.name).await;
        match to {
            Tier::Paused => {
                if self.thaw.is_unsettled(&spec.name) {
                    // The engine still says paused: freezing again makes that true.
                    if self.refreeze(spec).await {
                        return Ok(());
                    }
                    self.settle_view(spec).await?;
                }
                let id = self.own_id(spec, "pause").await?;
                // Remember the freezer now, while the container runs, for a fast wake.
                let _ = self.freezer(spec).await;
                self.client
                    .pause_container(&id)
                    .await
                    .map_err(|e| classify(e, "pause", &spec.name))
            }
            Tier::Stopped => {
                self.settle_view(spec).await?;
                self.thaw.forget(&spec.name);
                let Some(id) = self.container_id(spec).await? else {
                    return Ok(());
                };
                // A paused container cannot be stopped gracefully: thaw it first.
                let _ = self.client.unpause_container(&id).await;
                let options = StopContainerOptions {
                    t: Some(STOP_TIMEOUT_SECS),
                    signal: None,
                };
                match self.client.stop_container(&id, Some(options)).await {
                    Ok(()) => Ok(()),
                    Err(err) if matches!(status_of(&err), Some(304 | 404)) => Ok(()),
                    Err(err) => Err(classify(err, "stop", &spec.name)),
                }
            }
            Tier::Absent => {
                self.settle_view(spec).await?;
                self.thaw.forget(&spec.name);
                self.remove_own(spec).await
            }
        }
    }

    fn unsettled(&self, spec: &ContainerSpec) -> bool {
        self.thaw.is_unsettled(&spec.name)
    }

    async fn settle(&self, spec: &ContainerSpec) -> Result<(), RuntimeError> {
        let _turn = self.thaw.one_at_a_time(&spec.name).await;
        self.settle_view(spec).await
    }

    async fn page_out(&self, spec: &ContainerSpec) -> Result<super::PagedOut, RuntimeError> {
        self.page_out_paused(spec).await
    }

    async fn observe(&self, spec: &ContainerSpec) -> Result<Observed, RuntimeError> {
        let Some(id) = self.container_id(spec).await? else {
            return Ok(Observed::Absent);
        };
        let inspected = match self
            .client
            .inspect_container(&id, None::<InspectContainerOptions>)
            .await
        {
            Ok(inspected) => inspected,
            Err(err) if status_of(&err) == Some(404) => {
                self.ids.set(&spec.host, None);
                return Ok(Observed::Absent);
            }
            Err(err) => return Err(classify(err, "inspect", &spec.name)),
        };
        let labels = inspected
            .config
            .as_ref()
            .and_then(|c| c.labels.clone())
            .unwrap_or_default();
        let current = labels.get(LABEL_SPEC) == Some(&spec.fingerprint());
        let freezer = thaw::freezer_of(&inspected);
        let status = match inspected.state.and_then(|s| s.status) {
            Some(ContainerStateStatusEnum::RUNNING) => ContainerStatus::Running,
            Some(ContainerStateStatusEnum::PAUSED) => {
                // Paused for the engine, but thawed directly by an earlier agent: it runs, and
                // the engine's view needs settling.
                match freezer.map(|f| f.is_frozen()) {
                    Some(Ok(false)) => {
                        self.thaw.set_unsettled(&spec.name, true);
                        ContainerStatus::Running
                    }
                    _ => ContainerStatus::Paused,
                }
            }
            Some(ContainerStateStatusEnum::RESTARTING | ContainerStateStatusEnum::REMOVING) => {
                ContainerStatus::Transitional
            }
            _ => ContainerStatus::Stopped,
        };
        Ok(Observed::Present { status, current })
    }
}

/// The healthcheck as the engine's API takes it (durations in nanoseconds).
fn health_config(check: &Healthcheck) -> HealthConfig {
    let nanos = |d: Option<std::time::Duration>| d.map(|d| saturating_i64(d.as_nanos()));
    HealthConfig {
        test: Some(check.test.clone()),
        interval: nanos(check.interval),
        timeout: nanos(check.timeout),
        retries: check.retries.map(i64::from),
        start_period: nanos(check.start_period),
        start_interval: nanos(check.start_interval),
    }
}

fn saturating_i64(n: impl TryInto<i64>) -> i64 {
    n.try_into().unwrap_or(i64::MAX)
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
        BollardError::IOError { .. }
        | BollardError::HyperResponseError { .. }
        | BollardError::HyperLegacyError { .. } => RuntimeError::Unreachable(err.to_string()),
        other => RuntimeError::Engine {
            action,
            container: container.to_string(),
            message: other.to_string(),
        },
    }
}
