//! Keeping every host's state true to the engine when someone else changes its container, or
//! the engine restarts.
//!
//! The engine's events ([`RuntimeEvent`]: exits, pauses, unpauses, renames, removals, and
//! `Resumed` after the stream broke) are reasons to look again, never verdicts: imag's own
//! actions produce the same events, late. So an event about a host starts one observation of its
//! container (all of them after `Resumed`), and the observation is applied only if the host has
//! not changed state since it was asked for (its `epoch`), by the pure [`after_observation`]:
//!
//! | believed            | the engine says     | becomes                                  |
//! |---------------------|---------------------|------------------------------------------|
//! | warm                | paused              | asleep (paused), datapath holds          |
//! | warm                | stopped             | asleep (stopped), datapath holds         |
//! | warm                | no container        | asleep (absent), datapath holds          |
//! | asleep              | running             | warm (an operator unpaused or started it) |
//! | asleep / failed     | another tier        | the same state in the true tier          |
//! | waking / sleeping   | anything            | unchanged: the job under way decides     |
//!
//! A container renamed by an operator is still the host's (recognised by its labels, driven by
//! its ID), so a rename changes nothing; the next agent renames it back to `<network>--<host>`.

use std::time::Instant;

use tracing::{info, warn};

use super::{
    Orchestrator,
    jobs::Outcome,
    state::{Action, HostState, Tier},
};
use crate::{
    datapath::HostTable,
    runtime::{ContainerRuntime, ContainerStatus, Observed, RuntimeEvent},
};

/// The state a host is in once the engine was seen to say `seen`, with the actions that make
/// it so; `None` when the belief is already true or a job under way decides.
pub fn after_observation(
    state: HostState,
    seen: &Observed,
    now: Instant,
) -> Option<(HostState, Vec<Action>)> {
    // Where the container really is: `None` when it runs.
    let tier = match seen {
        Observed::Absent => Some(Tier::Absent),
        Observed::Present { status, .. } => match status {
            ContainerStatus::Running => None,
            ContainerStatus::Paused => Some(Tier::Paused),
            ContainerStatus::Stopped => Some(Tier::Stopped),
            // Someone is restarting or removing it: look again at its next event.
            ContainerStatus::Transitional => return None,
        },
    };
    match (state, tier) {
        (HostState::Warm { .. }, Some(tier)) => {
            Some((HostState::Asleep { tier }, vec![Action::Hold]))
        }
        (HostState::Asleep { .. }, None) => Some((
            HostState::Warm { since: now },
            vec![Action::Pass, Action::DeliverHeld],
        )),
        (HostState::Asleep { tier: was }, Some(tier)) if was != tier => {
            Some((HostState::Asleep { tier }, vec![]))
        }
        (HostState::Elsewhere { tier: was }, Some(tier)) if was != tier => {
            Some((HostState::Elsewhere { tier }, vec![]))
        }
        (
            HostState::Failed {
                tier: was,
                failures,
                retry_at,
            },
            Some(tier),
        ) if was != tier => Some((
            HostState::Failed {
                tier,
                failures,
                retry_at,
            },
            vec![],
        )),
        _ => None,
    }
}

impl<R: ContainerRuntime, D: HostTable> Orchestrator<R, D> {
    /// An event from the engine: look again at the host it concerns (every host after the
    /// stream was resumed).
    pub(super) fn on_engine_event(&mut self, event: &RuntimeEvent) {
        let ids: Vec<usize> = match event.host() {
            None => (0..self.hosts.len()).collect(),
            Some(host) => self.host_id(host).into_iter().collect(),
        };
        if let RuntimeEvent::Renamed { host, name } = event {
            info!(host = %host, name = %name,
                "the host's container was renamed; it is still recognised by its labels");
        }
        self.observe_hosts(&ids);
    }

    /// Starts one observation of the containers of hosts `ids` (one engine call for several).
    pub(super) fn observe_hosts(&mut self, ids: &[usize]) {
        if ids.is_empty() {
            return;
        }
        let asked: Vec<(usize, u64)> = ids.iter().map(|&id| (id, self.hosts[id].epoch)).collect();
        let specs: Vec<_> = ids.iter().map(|&id| self.hosts[id].spec.clone()).collect();
        let jobs = self.jobs.clone();
        tokio::spawn(async move {
            let permit = jobs.engine.acquire().await;
            let seen = if let [spec] = specs.as_slice() {
                jobs.runtime.observe(spec).await.map(|seen| vec![seen])
            } else {
                let network = specs[0].network.clone();
                jobs.runtime
                    .observe_all(&network, &specs)
                    .await
                    .map(|mut all| {
                        specs
                            .iter()
                            .map(|s| all.remove(&s.name).unwrap_or(Observed::Absent))
                            .collect()
                    })
            };
            drop(permit);
            match seen {
                Ok(seen) => {
                    let hosts = asked
                        .into_iter()
                        .zip(seen)
                        .map(|((id, epoch), seen)| (id, epoch, seen))
                        .collect();
                    let _ = jobs.outcomes.send(Outcome::Observed { hosts });
                }
                // The engine is away (restarting): its stream says `Resumed` when it is back,
                // and everything is observed again then.
                Err(err) => warn!(error = %err, "observing containers failed"),
            }
        });
    }

    /// What an observation found, applied to hosts that did not change state meanwhile.
    pub(super) fn on_observed(&mut self, hosts: Vec<(usize, u64, Observed)>) {
        for (id, epoch, seen) in hosts {
            let host = &self.hosts[id];
            if host.epoch != epoch {
                continue;
            }
            if let Some((after, actions)) = after_observation(host.state, &seen, Instant::now()) {
                info!(host = %host.config.name, from = host.state.name(), to = after.name(),
                    seen = ?seen, "following what the engine says about the host's container");
                self.transition(id, after, actions, &seen);
            }
        }
    }

    /// Off the critical path, one look at a warm host's container (see [`Jobs::inspect_warm`]).
    pub(super) fn inspect_warm_container(
        &mut self,
        id: usize,
        announce: bool,
        find_link: bool,
        count_connections: bool,
    ) {
        let neighbours = self
            .wire
            .clone()
            .zip(self.bridge.as_ref().map(|b| b.index))
            .filter(|_| announce);
        self.jobs.inspect_warm(
            id,
            self.hosts[id].spec.clone(),
            neighbours,
            find_link,
            count_connections,
        );
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn present(status: ContainerStatus) -> Observed {
        Observed::Present {
            status,
            current: true,
        }
    }

    #[test]
    fn a_warm_host_whose_container_is_gone_paused_or_stopped_holds_again() {
        let now = Instant::now();
        let warm = HostState::Warm { since: now };
        for (seen, tier) in [
            (Observed::Absent, Tier::Absent),
            (present(ContainerStatus::Paused), Tier::Paused),
            (present(ContainerStatus::Stopped), Tier::Stopped),
        ] {
            assert_eq!(
                after_observation(warm, &seen, now),
                Some((HostState::Asleep { tier }, vec![Action::Hold])),
                "{seen:?}"
            );
        }
        assert_eq!(
            after_observation(warm, &present(ContainerStatus::Running), now),
            None
        );
    }

    #[test]
    fn an_asleep_host_whose_container_runs_is_warm() {
        let now = Instant::now();
        let paused = HostState::Asleep { tier: Tier::Paused };
        assert_eq!(
            after_observation(paused, &present(ContainerStatus::Running), now),
            Some((
                HostState::Warm { since: now },
                vec![Action::Pass, Action::DeliverHeld]
            ))
        );
    }

    #[test]
    fn asleep_and_failed_hosts_take_the_true_tier() {
        let now = Instant::now();
        let paused = HostState::Asleep { tier: Tier::Paused };
        assert_eq!(
            after_observation(paused, &Observed::Absent, now),
            Some((HostState::Asleep { tier: Tier::Absent }, vec![]))
        );
        assert_eq!(
            after_observation(paused, &present(ContainerStatus::Paused), now),
            None
        );
        let failed = HostState::Failed {
            tier: Tier::Paused,
            failures: 2,
            retry_at: now + Duration::from_secs(1),
        };
        assert_eq!(
            after_observation(failed, &present(ContainerStatus::Stopped), now),
            Some((
                HostState::Failed {
                    tier: Tier::Stopped,
                    failures: 2,
                    retry_at: now + Duration::from_secs(1)
                },
                vec![]
            ))
        );
        // A failed host stays failed while its container runs: its next wake finds it running.
        assert_eq!(
            after_observation(failed, &present(ContainerStatus::Running), now),
            None
        );
    }

    #[test]
    fn jobs_under_way_decide_for_waking_and_sleeping_hosts() {
        let now = Instant::now();
        for state in [
            HostState::Waking {
                from: Tier::Absent,
                failures: 0,
            },
            HostState::Sleeping {
                to: Tier::Paused,
                wake_after: true,
            },
        ] {
            for seen in [Observed::Absent, present(ContainerStatus::Running)] {
                assert_eq!(after_observation(state, &seen, now), None);
            }
        }
        // Someone is restarting the container: wait for its next event.
        assert_eq!(
            after_observation(
                HostState::Warm { since: now },
                &present(ContainerStatus::Transitional),
                now
            ),
            None
        );
    }
}
