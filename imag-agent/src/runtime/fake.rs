//! An in-memory container engine for tests of the code above the runtime seam (the agent's
//! set-up, readiness, the orchestrator's shell): no daemon, no privileges, deterministic.
//!
//! [`FakeRuntime`] keeps containers and networks in a map, records every call ([`Call`]), and
//! answers `observe`, `observe_all` and `running_info` from the same map, so that what a test
//! scripted and what the code under test sees always agree. A test seeds containers
//! ([`FakeRuntime::put`]), scripts the next wakes and sleeps of a container (outcome and delay,
//! the delay on tokio's clock so that `start_paused` tests run instantly), and makes containers
//! exit ([`FakeRuntime::exit`]), which the [`ContainerRuntime::events`] stream reports. With fast
//! thaw on, wakes from pause leave the container unsettled until `settle`, as Docker's do.
//! Compiled for unit tests and behind the `test-helpers` feature.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use futures::{StreamExt as _, stream::BoxStream};
use tokio::sync::broadcast;

use super::{
    ContainerRuntime, ContainerSpec, ContainerStatus, EngineOptions, NotRunning, Observed,
    RunningInfo, RuntimeError, RuntimeEvent, Started, Tier,
};
use crate::{clock::monotonic_ns, config::NetworkConfig};

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
}

#[derive(Default)]
struct State {
    fast_thaw: bool,
    containers: HashMap<String, FakeContainer>,
    /// Network name → (managed by imag, its configuration when it was created).
    networks: HashMap<String, (bool, Option<NetworkConfig>)>,
    unsettled: HashSet<String>,
    wakes: HashMap<String, VecDeque<(Duration, WakeOutcome)>>,
    sleeps: HashMap<String, VecDeque<(Duration, Result<(), RuntimeError>)>>,
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
                host: spec.host.clone(),
                network: spec.network.clone(),
                image: spec.image.clone(),
                status,
                fingerprint,
                pid,
                mac: [0x02, 0x42, 0x0a, 0x00, a, b],
                exit_code: 0,
            },
        );
    }

    fn observe(&self, spec: &ContainerSpec) -> Observed {
        match self.containers.get(&spec.name) {
            None => Observed::Absent,
            Some(c) => Observed::Present {
                status: c.status,
                current: c.fingerprint == spec.fingerprint(),
            },
        }
    }

    /// Applies a wake that the script lets succeed; returns the tier it really came from.
    fn wake(&mut self, spec: &ContainerSpec, hint: Tier, exits: Option<i64>) -> Tier {
        let existing = self.containers.get(&spec.name).map(|c| c.status);
        let from = match existing {
            None => Tier::Absent,
            Some(ContainerStatus::Paused) => Tier::Paused,
            Some(ContainerStatus::Stopped | ContainerStatus::Transitional) => Tier::Stopped,
            // Already running: Docker answers an unpause or start with "nothing to do" (the
            // container counts as started), and a create by recreating it.
            Some(ContainerStatus::Running) if hint == Tier::Absent => Tier::Absent,
            Some(ContainerStatus::Running) => Tier::Stopped,
        };
        if from == Tier::Absent {
            self.insert(spec, ContainerStatus::Running, spec.fingerprint());
        }
        if from == Tier::Paused && self.fast_thaw {
            self.unsettled.insert(spec.name.clone());
        }
        let container = self.containers.get_mut(&spec.name).expect("exists now");
        container.status = ContainerStatus::Running;
        if let Some(code) = exits {
            container.status = ContainerStatus::Stopped;
            container.exit_code = code;
            self.unsettled.remove(&spec.name);
        }
        from
    }
}

impl ContainerRuntime for FakeRuntime {
    async fn connect(options: EngineOptions) -> Result<FakeRuntime, RuntimeError> {
        let fake = FakeRuntime::new();
        fake.set_fast_thaw(options.fast_thaw);
        Ok(fake)
    }

    async fn ensure_network(&self, net: &NetworkConfig) -> Result<(), RuntimeError> {
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
        match state.networks.get(name) {
            Some((false, _)) => Ok(false),
            _ => {
                state.networks.remove(name);
                Ok(true)
            }
        }
    }

    async fn observe_all(
        &self,
        network: &str,
        specs: &[ContainerSpec],
    ) -> Result<HashMap<String, Observed>, RuntimeError> {
        self.record(Call::ObserveAll(network.into()));
        let state = self.state();
        Ok(specs
            .iter()
            .filter(|s| {
                state
                    .containers
                    .get(&s.name)
                    .is_some_and(|c| c.network == network)
            })
            .map(|s| (s.name.clone(), state.observe(s)))
            .collect())
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
        let from = self.state().wake(spec, from, exits);
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
        let state = self.state();
        let Some(c) = state.containers.get(&spec.name) else {
            return Err(NotRunning::Gone(format!(
                "No such container: {}",
                spec.name
            )));
        };
        match c.status {
            // As Docker: a paused container still has its process and link.
            ContainerStatus::Running | ContainerStatus::Paused => Ok(RunningInfo {
                pid: c.pid,
                mac: Some(c.mac),
            }),
            ContainerStatus::Stopped | ContainerStatus::Transitional => Err(NotRunning::Exited {
                status: "exited".into(),
                code: c.exit_code,
                error: None,
            }),
        }
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
        match (to, state.containers.get_mut(&spec.name)) {
            (Tier::Absent, _) => {
                state.containers.remove(&spec.name);
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

    async fn settle(&self, spec: &ContainerSpec) -> Result<(), RuntimeError> {
        self.record(Call::Settle(spec.name.clone()));
        self.state().unsettled.remove(&spec.name);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;
    use crate::{
        config::ReadyProbe,
        readiness::{self, ReadyError},
    };

    fn spec(host: &str) -> ContainerSpec {
        ContainerSpec {
            name: format!("imag-{host}"),
            host: host.into(),
            network: "imag".into(),
            address: Ipv4Addr::new(10, 77, 0, 10),
            image: "imag-test/http".into(),
            command: None,
            env: Default::default(),
        }
    }

    fn network(subnet: &str) -> NetworkConfig {
        let text = format!("[network]\nsubnet = \"{subnet}\"\n");
        crate::config::Config::parse(&text, "test.toml")
            .unwrap()
            .network
    }

    #[tokio::test]
    async fn a_wake_creates_starts_or_unpauses_and_says_from_where() {
        let fake = FakeRuntime::new();
        let (web, db, cache) = (spec("web"), spec("db"), spec("cache"));
        fake.put(&db, ContainerStatus::Stopped);
        fake.put(&cache, ContainerStatus::Paused);
        // The hint is a belief: the engine's state decides.
        for (spec, hint, from) in [
            (&web, Tier::Paused, Tier::Absent),
            (&db, Tier::Absent, Tier::Stopped),
            (&cache, Tier::Stopped, Tier::Paused),
        ] {
            let started = fake.wake(spec, hint).await.unwrap();
            assert_eq!(started.from, from, "{}", spec.name);
            assert!(started.running_ns >= started.requested_ns);
            assert_eq!(fake.status(&spec.name), Some(ContainerStatus::Running));
            assert_eq!(
                fake.observe(spec).await.unwrap(),
                Observed::Present {
                    status: ContainerStatus::Running,
                    current: true
                }
            );
        }
        assert_eq!(
            fake.take_calls()[..2],
            [
                Call::Wake {
                    container: "imag-web".into(),
                    from: Tier::Paused
                },
                Call::Observe("imag-web".into())
            ]
        );
    }

    #[tokio::test]
    async fn sleeping_moves_the_container_between_tiers() {
        let fake = FakeRuntime::new();
        let web = spec("web");
        fake.wake(&web, Tier::Absent).await.unwrap();
        fake.sleep(&web, Tier::Paused).await.unwrap();
        assert_eq!(fake.status("imag-web"), Some(ContainerStatus::Paused));
        // A paused container still has its process (as Docker says).
        assert!(fake.running_info(&web).await.is_ok());
        fake.sleep(&web, Tier::Stopped).await.unwrap();
        assert_eq!(fake.status("imag-web"), Some(ContainerStatus::Stopped));
        fake.sleep(&web, Tier::Absent).await.unwrap();
        assert_eq!(fake.observe(&web).await.unwrap(), Observed::Absent);
        // Stopping or removing what is gone is fine; pausing it is not.
        fake.sleep(&web, Tier::Stopped).await.unwrap();
        assert!(matches!(
            fake.sleep(&web, Tier::Paused).await,
            Err(RuntimeError::Engine {
                action: "pause",
                ..
            })
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn scripted_wakes_take_their_time_on_tokio_s_clock_and_can_fail() {
        let fake = FakeRuntime::new();
        let web = spec("web");
        fake.script_wake(
            "imag-web",
            Duration::from_millis(300),
            WakeOutcome::ImageMissing,
        );
        fake.script_wake(
            "imag-web",
            Duration::ZERO,
            WakeOutcome::Fails(RuntimeError::Unreachable("gone".into())),
        );
        let before = tokio::time::Instant::now();
        assert_eq!(
            fake.wake(&web, Tier::Absent).await,
            Err(RuntimeError::ImageMissing {
                image: "imag-test/http".into()
            })
        );
        assert_eq!(before.elapsed(), Duration::from_millis(300));
        assert!(matches!(
            fake.wake(&web, Tier::Absent).await,
            Err(RuntimeError::Unreachable(_))
        ));
        assert_eq!(fake.status("imag-web"), None, "failed wakes change nothing");
        // The script is used up: the next wake runs.
        assert_eq!(
            fake.wake(&web, Tier::Absent).await.unwrap().from,
            Tier::Absent
        );

        fake.script_sleep(
            "imag-web",
            Duration::from_secs(2),
            Err(RuntimeError::Unreachable("x".into())),
        );
        assert!(fake.sleep(&web, Tier::Stopped).await.is_err());
        assert_eq!(before.elapsed(), Duration::from_millis(2300));
        assert_eq!(fake.status("imag-web"), Some(ContainerStatus::Running));
    }

    #[tokio::test]
    async fn exits_show_in_running_info_and_on_the_event_stream_of_their_network() {
        let fake = FakeRuntime::new();
        let (web, db) = (spec("web"), spec("db"));
        let mut other = spec("other");
        other.network = "elsewhere".into();
        let mut events = fake.events("imag");
        fake.script_wake("imag-web", Duration::ZERO, WakeOutcome::Exits { code: 3 });
        fake.wake(&web, Tier::Absent).await.unwrap();
        assert_eq!(
            fake.running_info(&web).await.unwrap_err().to_string(),
            "container exited before it was ready (status exited, exit code 3)"
        );
        fake.put(&other, ContainerStatus::Running);
        fake.exit("imag-other", 1);
        fake.put(&db, ContainerStatus::Running);
        assert_eq!(fake.running_info(&db).await.unwrap().pid, FIRST_PID + 2);
        fake.exit("imag-db", 137);
        assert_eq!(
            events.next().await,
            Some(RuntimeEvent::Exited { host: "web".into() })
        );
        assert_eq!(
            events.next().await,
            Some(RuntimeEvent::Exited { host: "db".into() }),
            "only this network's containers"
        );
        assert!(matches!(
            fake.running_info(&spec("nobody")).await,
            Err(NotRunning::Gone(_))
        ));
    }

    #[tokio::test]
    async fn observe_all_sees_this_network_s_containers_of_the_given_specs() {
        let fake = FakeRuntime::new();
        let (web, db, cache) = (spec("web"), spec("db"), spec("cache"));
        let mut other = spec("other");
        other.network = "elsewhere".into();
        fake.put(&web, ContainerStatus::Running);
        fake.put_stale(&db, ContainerStatus::Stopped);
        fake.put(&other, ContainerStatus::Running);
        let specs = [web.clone(), db.clone(), cache.clone(), other.clone()];
        let observed = fake.observe_all("imag", &specs).await.unwrap();
        assert_eq!(
            observed,
            HashMap::from([
                (
                    "imag-web".to_string(),
                    Observed::Present {
                        status: ContainerStatus::Running,
                        current: true
                    }
                ),
                (
                    "imag-db".to_string(),
                    Observed::Present {
                        status: ContainerStatus::Stopped,
                        current: false
                    }
                ),
            ])
        );
        assert_eq!(fake.calls(), [Call::ObserveAll("imag".into())]);
    }

    #[tokio::test]
    async fn networks_are_created_reused_checked_and_removed_only_if_ours() {
        let fake = FakeRuntime::new();
        fake.ensure_network(&network("10.77.0.0/24")).await.unwrap();
        fake.ensure_network(&network("10.77.0.0/24")).await.unwrap();
        assert!(matches!(
            fake.ensure_network(&network("10.88.0.0/24")).await,
            Err(RuntimeError::Engine {
                action: "reuse network",
                ..
            })
        ));
        assert!(fake.remove_network("imag").await.unwrap());
        assert!(!fake.has_network("imag"));
        assert!(fake.remove_network("imag").await.unwrap(), "already gone");
        fake.put_foreign_network("theirs");
        assert!(!fake.remove_network("theirs").await.unwrap());
        assert!(fake.has_network("theirs"));
    }

    #[tokio::test]
    async fn fast_thaw_leaves_a_wake_from_pause_unsettled_until_settled_or_paused_again() {
        let fake = FakeRuntime::connect(EngineOptions { fast_thaw: true })
            .await
            .unwrap();
        let web = spec("web");
        fake.put(&web, ContainerStatus::Paused);
        fake.wake(&web, Tier::Paused).await.unwrap();
        assert!(fake.unsettled(&web));
        fake.settle(&web).await.unwrap();
        assert!(!fake.unsettled(&web));
        fake.sleep(&web, Tier::Paused).await.unwrap();
        fake.wake(&web, Tier::Paused).await.unwrap();
        assert!(fake.unsettled(&web));
        fake.sleep(&web, Tier::Paused).await.unwrap();
        assert!(!fake.unsettled(&web));

        let slow = FakeRuntime::new();
        slow.put(&web, ContainerStatus::Paused);
        slow.wake(&web, Tier::Paused).await.unwrap();
        assert!(!slow.unsettled(&web), "no fast thaw, nothing to settle");
    }

    /// The fake drives the code above the seam: readiness fails fast on a container that exits.
    #[tokio::test(start_paused = true)]
    async fn readiness_sees_a_scripted_exit() {
        let fake = FakeRuntime::new();
        let web = spec("web");
        fake.script_wake("imag-web", Duration::ZERO, WakeOutcome::Exits { code: 1 });
        fake.wake(&web, Tier::Absent).await.unwrap();
        let timeout = Duration::from_secs(5);
        let deadline = tokio::time::Instant::now() + timeout;
        let ready = readiness::wait_ready(
            &fake,
            &web,
            ReadyProbe::Delay(Duration::from_millis(100)),
            deadline,
            timeout,
            Duration::from_millis(100),
            None,
        )
        .await;
        assert!(matches!(
            ready,
            Err(ReadyError::Exited(NotRunning::Exited { code: 1, .. }))
        ));
        // A UDP probe on a live container whose socket never shows up: the wake timeout.
        let db = spec("db");
        fake.wake(&db, Tier::Absent).await.unwrap();
        let ready = readiness::wait_ready(
            &fake,
            &db,
            ReadyProbe::Udp(53),
            deadline,
            timeout,
            Duration::from_millis(100),
            None,
        )
        .await;
        assert!(matches!(ready, Err(ReadyError::Timeout { .. })));
        assert_eq!(tokio::time::Instant::now(), deadline);
    }
}
