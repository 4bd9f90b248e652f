//! An in-memory container engine for tests of the code above the runtime seam (the agent's
//! set-up, readiness, the orchestrator's shell): no daemon, no privileges, deterministic.
//!
//! [`FakeRuntime`] keeps containers and networks in a map, records every call ([`Call`]), and
//! answers `observe`, `observe_all` and `running_info` from the same map, so that what a test
//! scripted and what the code under test sees always agree. A test seeds containers
//! ([`FakeRuntime::put`]), scripts the next wakes and sleeps of a container (outcome and delay,
//! the delay on tokio's clock so that `start_paused` tests run instantly), and makes containers
//! exit ([`FakeRuntime::exit`]), which the [`ContainerRuntime::events`] stream reports, or change
//! health ([`FakeRuntime::set_health`]; a container created from a spec with a healthcheck starts
//! out `Starting`, one without has no health, as if its image had none). With fast
//! thaw on, wakes from pause leave the container unsettled until `settle`, as Docker's do.
//! Like the Docker runtime, it recognises a host's container by its labels, not its name: a test
//! can seed a container of someone else ([`FakeRuntime::put_foreign`]), act as an operator on a
//! container (pause, unpause, rename, remove: `operator_*`, each reported as an event) and
//! restart the engine ([`FakeRuntime::restart_engine`], with or without live restore).
//! Compiled for unit tests and behind the `test-helpers` feature.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use futures::{StreamExt as _, stream::BoxStream};
use tokio::sync::broadcast;

use super::{
    ContainerRuntime, ContainerSpec, ContainerStatus, EngineOptions, Health, NetworkSpec,
    NotRunning, Observed, RunningInfo, RuntimeError, RuntimeEvent, Started, Tier,
};
use crate::clock::monotonic_ns;

/// The first PID the fake hands out: above the kernel's largest `pid_max` (2^22), so that it is
/// never a real process (code that reads `/proc/<pid>` finds nothing, as after an exit).
pub const FIRST_PID: u32 = 1 << 22;

/// One call into the engine, as recorded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Call {
    EnsureNetwork(String),
    RemoveNetwork(String),
    ObserveAll(String),
    Events(String),
    Wake { container: String, from: Tier },
    RunningInfo(String),
    Sleep { container: String, to: Tier },
    Observe(String),
    Settle(String),
    Health(String),
    PageOut(String),
}

/// How a scripted wake ends (after its delay).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WakeOutcome {
    /// The container runs.
    Runs,
    /// The engine cannot create the container: its image is missing. Nothing changes.
    ImageMissing,
    /// The engine starts the container, but its process exits at once with `code`: the wake
    /// succeeds, `running_info` then says exited, and an exit event follows.
    Exits { code: i64 },
    /// The engine refuses with this error. Nothing changes.
    Fails(RuntimeError),
}

/// A container as the fake engine holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FakeContainer {
    /// Whether it carries imag's labels (for `host` on `network`); a foreign container does not.
    pub labelled: bool,
    pub host: String,
    pub network: String,
    pub image: String,
    /// The reality (after a fast thaw: running, though the engine's view says paused).
    pub status: ContainerStatus,
    /// The fingerprint of the spec it was created from (see [`ContainerSpec::fingerprint`]).
    pub fingerprint: String,
    pub pid: u32,
    pub mac: [u8; 6],
    /// The exit code of its last run, once it stopped.
    pub exit_code: i64,
    /// Its healthcheck's verdict (`None`: it has no healthcheck).
    pub health: Option<Health>,
}

/// Queued outcomes of a container's next calls, each after its delay.
type Script<T> = VecDeque<(Duration, T)>;

#[derive(Default)]
struct State {
    fast_thaw: bool,
    containers: HashMap<String, FakeContainer>,
    /// Network name → (managed by imag, its configuration when it was created).
    networks: HashMap<String, (bool, Option<NetworkSpec>)>,
    unsettled: HashSet<String>,
    wakes: HashMap<String, Script<WakeOutcome>>,
    sleeps: HashMap<String, Script<Result<(), RuntimeError>>>,
    calls: Vec<Call>,
    next_pid: u32,
}

/// The fake engine: a handle on shared state (clones see the same engine).
#[derive(Clone)]
pub struct FakeRuntime {
    state: Arc<Mutex<State>>,
    /// (network, event) to every open [`ContainerRuntime::events`] stream.
    events: broadcast::Sender<(String, RuntimeEvent)>,
}

impl Default for FakeRuntime {
    fn default() -> Self {
        FakeRuntime::new()
    }
}

impl FakeRuntime {
    /// An engine with no containers and no networks, fast thaw off.
    pub fn new() -> FakeRuntime {
        FakeRuntime {
            state: Arc::new(Mutex::new(State {
                next_pid: FIRST_PID,
                ..State::default()
            })),
            events: broadcast::channel(64).0,
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().expect("not poisoned")
    }

    /// Turns fast thaw on or off (what `[wake] fast_thaw` asks of a real engine).
    pub fn set_fast_thaw(&self, on: bool) {
        self.state().fast_thaw = on;
    }

    /// Seeds a container created from `spec`, in `status`.
    pub fn put(&self, spec: &ContainerSpec, status: ContainerStatus) {
        self.state().insert(spec, status, spec.fingerprint());
    }

    /// Seeds a container created from another configuration than `spec` (stale).
    pub fn put_stale(&self, spec: &ContainerSpec, status: ContainerStatus) {
        self.state().insert(spec, status, "stale".into());
    }

    /// Seeds a network someone else created: imag may use it but must not remove it.
    pub fn put_foreign_network(&self, name: &str) {
        self.state().networks.insert(name.into(), (false, None));
    }

    /// Queues how the next unscripted wake of `container` goes: `outcome` after `delay`. Wakes
    /// with nothing queued run at once.
    pub fn script_wake(&self, container: &str, delay: Duration, outcome: WakeOutcome) {
        let mut state = self.state();
        let queue = state.wakes.entry(container.into()).or_default();
        queue.push_back((delay, outcome));
    }

    /// Queues how the next sleep of `container` goes: `result` after `delay` (an error leaves
    /// the container as it was). Sleeps with nothing queued succeed at once.
    pub fn script_sleep(&self, container: &str, delay: Duration, result: Result<(), RuntimeError>) {
        let mut state = self.state();
        let queue = state.sleeps.entry(container.into()).or_default();
        queue.push_back((delay, result));
    }

    /// The container's process exits with `code`: it stops, and open event streams of its
    /// network report it.
    pub fn exit(&self, container: &str, code: i64) {
        let exited = {
            let mut state = self.state();
            state.unsettled.remove(container);
            state.containers.get_mut(container).map(|c| {
                c.status = ContainerStatus::Stopped;
                c.exit_code = code;
                (c.network.clone(), c.host.clone())
            })
        };
        if let Some((network, host)) = exited {
            // No receiver is fine: nobody is watching, as with a real engine.
            let _ = self.events.send((network, RuntimeEvent::Exited { host }));
        }
    }

    /// The healthcheck of container `name` now reports `health` (`None`: it has none).
    pub fn set_health(&self, name: &str, health: Option<Health>) {
        if let Some(c) = self.state().containers.get_mut(name) {
            c.health = health;
        }
    }

    /// Seeds a container of someone else (no imag labels) named `name`.
    pub fn put_foreign(&self, name: &str) {
        let spec = ContainerSpec {
            name: name.into(),
            host: String::new(),
            network: String::new(),
            address: std::net::Ipv4Addr::UNSPECIFIED,
            image: "someone-else".into(),
            command: None,
            env: std::collections::BTreeMap::new(),
            extra_hosts: Vec::new(),
            options: super::ContainerOptions::default(),
            swap_prefetch: false,
        };
        let mut state = self.state();
        state.insert(&spec, ContainerStatus::Running, String::new());
        state.containers.get_mut(name).expect("inserted").labelled = false;
    }

    /// An operator acts on container `name` (`docker pause/unpause/rename/rm -f`); the
    /// engine reports it on open event streams, as Docker does.
    fn operator(&self, name: &str, act: impl FnOnce(&mut State) -> Option<RuntimeEvent>) {
        let (network, event) = {
            let mut state = self.state();
            let Some(network) = state.containers.get(name).map(|c| c.network.clone()) else {
                return;
            };
            (network, act(&mut state))
        };
        if let Some(event) = event {
            let _ = self.events.send((network, event));
        }
    }

    /// `docker pause NAME`.
    pub fn operator_pause(&self, name: &str) {
        self.operator(name, |state| {
            let c = state.containers.get_mut(name)?;
            c.status = ContainerStatus::Paused;
            Some(RuntimeEvent::Paused {
                host: c.host.clone(),
            })
        });
    }

    /// `docker unpause NAME`.
    pub fn operator_unpause(&self, name: &str) {
        self.operator(name, |state| {
            let c = state.containers.get_mut(name)?;
            c.status = ContainerStatus::Running;
            Some(RuntimeEvent::Unpaused {
                host: c.host.clone(),
            })
        });
    }

    /// `docker rename FROM TO`.
    pub fn operator_rename(&self, from: &str, to: &str) {
        self.operator(from, |state| {
            let c = state.containers.remove(from)?;
            let host = c.host.clone();
            state.containers.insert(to.into(), c);
            Some(RuntimeEvent::Renamed {
                host,
                name: to.into(),
            })
        });
    }

    /// `docker rm -f NAME`.
    pub fn operator_remove(&self, name: &str) {
        self.operator(name, |state| {
            let c = state.containers.remove(name)?;
            Some(RuntimeEvent::Destroyed { host: c.host })
        });
    }

    /// The engine restarts: its events meanwhile are lost; without live restore every running
    /// or paused container is stopped (restart policy "no"), with it they keep running. Open
    /// event streams then report [`RuntimeEvent::Resumed`].
    pub fn restart_engine(&self, live_restore: bool) {
        let networks: HashSet<String> = {
            let mut state = self.state();
            state.unsettled.clear();
            for c in state.containers.values_mut() {
                if !live_restore && c.status != ContainerStatus::Stopped {
                    c.status = ContainerStatus::Stopped;
                    c.exit_code = 143;
                }
            }
            state
                .containers
                .values()
                .map(|c| c.network.clone())
                .collect()
        };
        for network in networks {
            let _ = self.events.send((network, RuntimeEvent::Resumed));
        }
    }

    /// The container named `name`, as the engine holds it.
    pub fn container(&self, name: &str) -> Option<FakeContainer> {
        self.state().containers.get(name).cloned()
    }

    /// The status of container `name` (None: it does not exist).
    pub fn status(&self, name: &str) -> Option<ContainerStatus> {
        self.container(name).map(|c| c.status)
    }

    /// Whether a network of that name exists.
    pub fn has_network(&self, name: &str) -> bool {
        self.state().networks.contains_key(name)
    }

    /// Every call so far, in order.
    pub fn calls(&self) -> Vec<Call> {
        self.state().calls.clone()
    }

    /// Every call so far, forgetting them (to assert on what follows).
    pub fn take_calls(&self) -> Vec<Call> {
        std::mem::take(&mut self.state().calls)
    }

    fn record(&self, call: Call) {
        self.state().calls.push(call);
    }
}

impl State {
    fn insert(&mut self, spec: &ContainerSpec, status: ContainerStatus, fingerprint: String) {
        let pid = self.next_pid;
        self.next_pid += 1;
        let [.., a, b] = pid.to_be_bytes();
        self.containers.insert(
            spec.name.clone(),
            FakeContainer {
                labelled: true,
                host: spec.host.clone(),
                network: spec.network.clone(),
                image: spec.image.clone(),
                status,
                fingerprint,
                pid,
                mac: [0x02, 0x42, 0x0a, 0x00, a, b],
                exit_code: 0,
                health: spec.options.healthcheck.as_ref().map(|_| Health::Starting),
            },
        );
    }

    /// The name of host `spec`'s own container (found by its labels, whatever its name).
    fn own(&self, spec: &ContainerSpec) -> Option<String> {
        self.containers
            .iter()
            .find(|(_, c)| c.labelled && c.host == spec.host && c.network == spec.network)
            .map(|(name, _)| name.clone())
    }

    fn own_container(&self, spec: &ContainerSpec) -> Option<&FakeContainer> {
        self.own(spec).and_then(|name| self.containers.get(&name))
    }

    fn observe(&self, spec: &ContainerSpec) -> Observed {
        match self.own_container(spec) {
            None => Observed::Absent,
            Some(c) => Observed::Present {
                status: c.status,
                current: c.fingerprint == spec.fingerprint(),
            },
        }
    }

    /// The container, if it is running (as Docker: a paused container still has its process and
    /// link), else why not.
    fn running(&self, spec: &ContainerSpec) -> Result<&FakeContainer, NotRunning> {
        let Some(c) = self.own_container(spec) else {
            return Err(NotRunning::Gone(format!(
                "No such container: {}",
                spec.name
            )));
        };
        match c.status {
            ContainerStatus::Running | ContainerStatus::Paused => Ok(c),
            ContainerStatus::Stopped | ContainerStatus::Transitional => Err(NotRunning::Exited {
                status: "exited".into(),
                code: c.exit_code,
                error: None,
            }),
        }
    }

    /// Applies a wake that the script lets succeed; returns the tier it really came from. A
    /// container of someone else holding the name it must create is left alone and reported.
    fn wake(
        &mut self,
        spec: &ContainerSpec,
        hint: Tier,
        exits: Option<i64>,
    ) -> Result<Tier, RuntimeError> {
        let own = self.own(spec);
        let existing = own
            .as_ref()
            .and_then(|n| self.containers.get(n))
            .map(|c| c.status);
        let from = match existing {
            None => Tier::Absent,
            Some(ContainerStatus::Paused) => Tier::Paused,
            // Already running: Docker answers an unpause or start with "nothing to do" (the
            // container counts as started), and a create by recreating it.
            Some(ContainerStatus::Running) if hint == Tier::Absent => Tier::Absent,
            Some(
                ContainerStatus::Stopped | ContainerStatus::Transitional | ContainerStatus::Running,
            ) => Tier::Stopped,
        };
        let name = if from == Tier::Absent {
            if let Some(c) = self.containers.get(&spec.name)
                && !(c.labelled && c.host == spec.host && c.network == spec.network)
            {
                return Err(RuntimeError::Foreign {
                    container: spec.name.clone(),
                    host: spec.host.clone(),
                    owner: "it has no imag labels: created by hand or by another tool".into(),
                });
            }
            // Never two containers for a host: its own one goes, whatever its name.
            if let Some(own) = &own {
                self.containers.remove(own);
            }
            self.insert(spec, ContainerStatus::Running, spec.fingerprint());
            spec.name.clone()
        } else {
            own.expect("exists")
        };
        if from == Tier::Paused && self.fast_thaw {
            self.unsettled.insert(spec.name.clone());
        }
        let container = self.containers.get_mut(&name).expect("exists now");
        container.status = ContainerStatus::Running;
        if from == Tier::Stopped {
            // A (re)started container's healthcheck starts over, as Docker's does.
            container.health = container.health.map(|_| Health::Starting);
        }
        if let Some(code) = exits {
            container.status = ContainerStatus::Stopped;
            container.exit_code = code;
            self.unsettled.remove(&spec.name);
        }
        Ok(from)
    }
}

impl ContainerRuntime for FakeRuntime {
    async fn connect(options: EngineOptions) -> Result<FakeRuntime, RuntimeError> {
        let fake = FakeRuntime::new();
        fake.set_fast_thaw(options.fast_thaw);
        Ok(fake)
    }

    async fn ensure_network(&self, net: &NetworkSpec) -> Result<(), RuntimeError> {
        self.record(Call::EnsureNetwork(net.name.clone()));
        let mut state = self.state();
        match state.networks.get(&net.name) {
            Some((_, Some(existing)))
                if existing.subnet != net.subnet || existing.bridge != net.bridge =>
            {
                Err(RuntimeError::Engine {
                    action: "reuse network",
                    container: net.name.clone(),
                    message: format!(
                        "it exists with subnet {} and bridge {:?}",
                        existing.subnet, existing.bridge
                    ),
                })
            }
            Some(_) => Ok(()),
            None => {
                state
                    .networks
                    .insert(net.name.clone(), (true, Some(net.clone())));
                Ok(())
            }
        }
    }

    async fn remove_network(&self, name: &str) -> Result<bool, RuntimeError> {
        self.record(Call::RemoveNetwork(name.into()));
        let mut state = self.state();
        if let Some((false, _)) = state.networks.get(name) {
            Ok(false)
        } else {
            state.networks.remove(name);
            Ok(true)
        }
    }

    async fn observe_all(
        &self,
        network: &str,
        specs: &[ContainerSpec],
    ) -> Result<HashMap<String, Observed>, RuntimeError> {
        self.record(Call::ObserveAll(network.into()));
        let mut state = self.state();
        let mut seen = HashMap::new();
        for spec in specs.iter().filter(|s| s.network == network) {
            let Some(name) = state.own(spec) else {
                continue;
            };
            // Found by its labels under another name: renamed back if the name is free.
            if name != spec.name && !state.containers.contains_key(&spec.name) {
                let c = state.containers.remove(&name).expect("found");
                state.containers.insert(spec.name.clone(), c);
            }
            seen.insert(spec.name.clone(), state.observe(spec));
        }
        Ok(seen)
    }

    fn events(&self, network: &str) -> BoxStream<'static, RuntimeEvent> {
        self.record(Call::Events(network.into()));
        let network = network.to_string();
        futures::stream::unfold(self.events.subscribe(), move |mut rx| {
            let network = network.clone();
            async move {
                loop {
                    match rx.recv().await {
                        Ok((n, event)) if n == network => return Some((event, rx)),
                        Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                        Err(broadcast::error::RecvError::Closed) => return None,
                    }
                }
            }
        })
        .boxed()
    }

    async fn wake(&self, spec: &ContainerSpec, from: Tier) -> Result<Started, RuntimeError> {
        let requested_ns = monotonic_ns();
        self.record(Call::Wake {
            container: spec.name.clone(),
            from,
        });
        let script = {
            let mut state = self.state();
            state
                .wakes
                .get_mut(&spec.name)
                .and_then(VecDeque::pop_front)
        };
        let (delay, outcome) = script.unwrap_or((Duration::ZERO, WakeOutcome::Runs));
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let exits = match outcome {
            WakeOutcome::Runs => None,
            WakeOutcome::Exits { code } => Some(code),
            WakeOutcome::ImageMissing => {
                return Err(RuntimeError::ImageMissing {
                    image: spec.image.clone(),
                });
            }
            WakeOutcome::Fails(err) => return Err(err),
        };
        let from = self.state().wake(spec, from, exits)?;
        if exits.is_some() {
            let event = RuntimeEvent::Exited {
                host: spec.host.clone(),
            };
            let _ = self.events.send((spec.network.clone(), event));
        }
        Ok(Started {
            from,
            requested_ns,
            running_ns: monotonic_ns(),
        })
    }

    async fn running_info(&self, spec: &ContainerSpec) -> Result<RunningInfo, NotRunning> {
        self.record(Call::RunningInfo(spec.name.clone()));
        self.state().running(spec).map(|c| RunningInfo {
            pid: c.pid,
            mac: Some(c.mac),
        })
    }

    async fn health(&self, spec: &ContainerSpec) -> Result<Option<Health>, NotRunning> {
        self.record(Call::Health(spec.name.clone()));
        self.state().running(spec).map(|c| c.health)
    }

    async fn sleep(&self, spec: &ContainerSpec, to: Tier) -> Result<(), RuntimeError> {
        self.record(Call::Sleep {
            container: spec.name.clone(),
            to,
        });
        let script = {
            let mut state = self.state();
            state
                .sleeps
                .get_mut(&spec.name)
                .and_then(VecDeque::pop_front)
        };
        let (delay, result) = script.unwrap_or((Duration::ZERO, Ok(())));
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        result?;
        let mut state = self.state();
        state.unsettled.remove(&spec.name);
        let own = state.own(spec).unwrap_or_default();
        match (to, state.containers.get_mut(&own)) {
            (Tier::Absent, _) => {
                state.containers.remove(&own);
                Ok(())
            }
            (Tier::Stopped, None) => Ok(()),
            (Tier::Stopped, Some(c)) => {
                c.status = ContainerStatus::Stopped;
                Ok(())
            }
            (Tier::Paused, Some(c)) => {
                c.status = ContainerStatus::Paused;
                Ok(())
            }
            (Tier::Paused, None) => Err(RuntimeError::Engine {
                action: "pause",
                container: spec.name.clone(),
                message: format!("No such container: {}", spec.name),
            }),
        }
    }

    async fn observe(&self, spec: &ContainerSpec) -> Result<Observed, RuntimeError> {
        self.record(Call::Observe(spec.name.clone()));
        Ok(self.state().observe(spec))
    }

    fn unsettled(&self, spec: &ContainerSpec) -> bool {
        self.state().unsettled.contains(&spec.name)
    }

    /// A paused container "holds" 100 MiB and keeps 1 MiB after a page-out; any other refuses.
    async fn page_out(&self, spec: &ContainerSpec) -> Result<super::PagedOut, RuntimeError> {
        self.record(Call::PageOut(spec.name.clone()));
        let state = self.state();
        let own = state.own(spec).unwrap_or_default();
        match state.containers.get(&own) {
            Some(c) if c.status == ContainerStatus::Paused => Ok(super::PagedOut {
                before: 100 << 20,
                after: 1 << 20,
            }),
            _ => Err(RuntimeError::Engine {
                action: "page out",
                container: spec.name.clone(),
                message: "it is not paused".into(),
            }),
        }
    }

    async fn settle(&self, spec: &ContainerSpec) -> Result<(), RuntimeError> {
        self.record(Call::Settle(spec.name.clone()));
        self.state().unsettled.remove(&spec.name);
        Ok(())
    }
}

#[cfg(test)]
mod tests;
