//! `depends_on`: a host's dependencies are woken with it, before its own container starts — in
//! dependency order, and in parallel where the graph allows (each dependency is woken as a packet
//! would wake it, and its own dependencies before it, recursively). The dependent stays `Waking`
//! (its packets held) until every dependency is warm, that is ready by its own probe, and, for a
//! `:healthy` dependency (compose's `service_healthy`), until the engine also reports it healthy
//! (a job asks, once it is warm; without any healthcheck that fails). A dependency that fails
//! fails the dependent's wake, whose held packets are refused like those of any failed wake.

use tracing::{debug, warn};

use super::{Host, Orchestrator, jobs::WakeError, state::Event};
use crate::{
    datapath::HostTable,
    readiness::ReadyError,
    runtime::{ContainerRuntime, Tier},
};

/// Resolves `depends_on` names to host indices, both ways. Unknown names cannot occur: the
/// configuration refuses them.
pub(super) fn link(hosts: &mut [Host]) {
    let index: std::collections::HashMap<String, usize> = hosts
        .iter()
        .enumerate()
        .map(|(i, h)| (h.config.name.clone(), i))
        .collect();
    for id in 0..hosts.len() {
        let deps: Vec<(usize, bool)> = hosts[id]
            .config
            .depends_on
            .iter()
            .filter_map(|d| index.get(&d.host).map(|&i| (i, d.healthy)))
            .collect();
        for &(dep, _) in &deps {
            hosts[dep].dependents.push(id);
        }
        hosts[id].deps = deps;
    }
}

/// Where a host's dependencies stand.
enum Deps {
    /// All warm: its own wake may start.
    Warm,
    /// Some are waking.
    Waiting,
    /// This one could not be woken (it failed, and its backoff has not passed).
    Failed(usize),
}

impl<R: ContainerRuntime, D: HostTable> Orchestrator<R, D> {
    /// Before host `id` wakes from `from`: wakes every dependency that is not warm, and says
    /// whether its own wake may start now. When it must wait, the wake starts (or fails) once
    /// the dependencies have settled ([`Self::dependency_changed`]).
    pub(super) fn dependencies_ready(&mut self, id: usize, from: Tier) -> bool {
        if self.hosts[id].deps.is_empty() {
            return true;
        }
        for (dep, _) in self.hosts[id].deps.clone() {
            if !self.hosts[dep].is_warm() {
                debug!(host = %self.hosts[id].config.name, dependency = %self.hosts[dep].config.name, "waking a dependency first");
                self.apply(dep, Event::PacketHeld);
            }
        }
        match self.deps_state(id) {
            Deps::Warm => true,
            Deps::Waiting => {
                self.hosts[id].awaiting_deps = Some(from);
                false
            }
            Deps::Failed(dep) => {
                self.fail_for_dependency(id, dep);
                false
            }
        }
    }

    /// A host that others depend on changed state: starts the wakes that waited for it, or
    /// fails them if it failed.
    pub(super) fn dependency_changed(&mut self, dep: usize) {
        for id in self.hosts[dep].dependents.clone() {
            let Some(from) = self.hosts[id].awaiting_deps else {
                continue;
            };
            match self.deps_state(id) {
                Deps::Waiting => {}
                Deps::Warm => {
                    self.hosts[id].awaiting_deps = None;
                    self.spawn_wake(id, from);
                }
                Deps::Failed(dep) => {
                    self.hosts[id].awaiting_deps = None;
                    self.fail_for_dependency(id, dep);
                }
            }
        }
    }

    fn deps_state(&mut self, id: usize) -> Deps {
        let mut waiting = false;
        for (dep, healthy) in self.hosts[id].deps.clone() {
            let host = &self.hosts[dep];
            if host.is_warm() {
                if healthy && !self.known_healthy(dep, id) {
                    waiting = true;
                }
                continue;
            }
            if host.state.label() == crate::report::StateName::Failed {
                return Deps::Failed(dep);
            }
            waiting = true;
        }
        if waiting { Deps::Waiting } else { Deps::Warm }
    }

    /// Whether warm host `dep` is known healthy: its own ready probe was its healthcheck, or a
    /// look said so. Otherwise starts one look, unless one is under way; `for_host` bounds the
    /// wait by its wake timeout.
    fn known_healthy(&mut self, dep: usize, for_host: usize) -> bool {
        let host = &mut self.hosts[dep];
        if host.config.ready == crate::config::ReadyProbe::Healthy {
            host.healthy = Some(true);
        }
        if let Some(healthy) = host.healthy {
            return healthy;
        }
        host.healthy = Some(false);
        let deadline = crate::clock::deadline_in(self.hosts[for_host].config.wake_timeout);
        let host = &self.hosts[dep];
        self.jobs
            .healthy(dep, host.spec.clone(), deadline, host.config.ready_poll);
        false
    }

    /// The look at a dependency's health ended.
    pub(super) fn dependency_healthy(&mut self, dep: usize, result: Result<(), ReadyError>) {
        let host = &mut self.hosts[dep];
        if !host.is_warm() {
            host.healthy = None;
            return;
        }
        match result {
            Ok(()) => {
                host.healthy = Some(true);
                self.dependency_changed(dep);
            }
            Err(err) => {
                host.healthy = None;
                warn!(host = %host.config.name, error = %err, "a dependency that others wait on did not turn healthy");
                for id in self.hosts[dep].dependents.clone() {
                    if self.hosts[id].awaiting_deps.take().is_some() {
                        self.fail_for_dependency(id, dep);
                    }
                }
            }
        }
    }

    fn fail_for_dependency(&mut self, id: usize, dep: usize) {
        let name = self.hosts[dep].config.name.clone();
        warn!(host = %self.hosts[id].config.name, dependency = %name, "a dependency could not be woken");
        self.record_failed_wake(id, &WakeError::Dependency { host: name });
        self.apply(id, Event::WakeFailed);
    }
}
