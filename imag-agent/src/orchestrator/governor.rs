//! The shell around the budget and the wake rate limits (`[limits]`): every wake the state
//! machine starts goes through a queue here, and leaves it when the budget has room (after
//! least-recently-used evictions that [`budget::decide`] picks) and fewer than
//! `max_concurrent_wakes` wakes run; or it is refused ("budget"), at once when nothing may be
//! evicted, or when it waited longer than its `wake_timeout`. Held packets to cold hosts from a
//! source over its rate ([`rate`]) are refused without a wake ("rate").
//!
//! Race-free by construction: the orchestrator is one task, a host counts from its admission
//! until its sleep completed (`budget::counts`), and hosts already releasing are never picked
//! twice. The queue is re-examined after every state change (`pump_wakes`).

use std::time::Duration;

use tracing::{info, warn};

use super::{
    Orchestrator,
    budget::{self, Budget, Candidate, Decision, Limit, Usage},
    hosts::{SleepCause, open_connections},
    jobs::WakeError,
    rate::{RateLimits, Refused},
    state::{Event, HostState, Tier},
};
use crate::{
    clock::monotonic_ns,
    config::LimitsConfig,
    datapath::{HostTable, ring::HeldFrame},
    packets,
    report::BudgetView,
    runtime::ContainerRuntime,
};

/// A wake waiting for room.
#[derive(Clone, Copy, Debug)]
struct Queued {
    id: usize,
    from: Tier,
    since_ns: u64,
}

/// The budget's and the rate limits' state.
pub(super) struct Governor {
    budget: Budget,
    default_memory: u64,
    max_concurrent: usize,
    queue: Vec<Queued>,
    rates: RateLimits,
    pumping: bool,
    /// Evictions and refusals so far (the counters of the published view).
    pub counts: BudgetView,
}

impl Governor {
    pub(super) fn new(limits: &LimitsConfig) -> Governor {
        Governor {
            budget: Budget {
                max_warm: limits.max_warm,
                memory: limits.memory_budget,
                evict_busy: limits.evict_busy,
            },
            default_memory: limits.default_host_memory,
            max_concurrent: limits.max_concurrent_wakes,
            queue: Vec::new(),
            rates: RateLimits::new(limits.wakes_per_source, limits.wakes_per_second),
            pumping: false,
            counts: BudgetView::default(),
        }
    }

    fn queued(&self, id: usize) -> bool {
        self.queue.iter().any(|q| q.id == id)
    }
}

impl<R: ContainerRuntime, D: HostTable> Orchestrator<R, D> {
    /// A wake the state machine started: queued, and started as soon as it is admitted.
    pub(super) fn queue_wake(&mut self, id: usize, from: Tier) {
        self.governor.queue.retain(|q| q.id != id);
        self.governor.queue.push(Queued {
            id,
            from,
            since_ns: monotonic_ns(),
        });
        self.pump_wakes();
    }

    /// Admits, in order, the queued wakes that fit (evicting for them), and refuses those that
    /// cannot.
    pub(super) fn pump_wakes(&mut self) {
        if self.governor.pumping || self.governor.queue.is_empty() {
            return;
        }
        self.governor.pumping = true;
        let mut ahead = Usage::default();
        let mut i = 0;
        while i < self.governor.queue.len() {
            let q = self.governor.queue[i];
            if !matches!(self.hosts[q.id].state, HostState::Waking { .. }) {
                self.governor.queue.remove(i);
                continue;
            }
            let (used, releasing) = self.usage();
            let weight = self.weight(q.id);
            let candidates = self.candidates(q.id);
            let priority = self.hosts[q.id].config.priority;
            let budget = self.governor.budget;
            match budget::decide(
                &budget,
                used + ahead,
                releasing,
                weight,
                priority,
                candidates,
            ) {
                Decision::Admit if self.wakes_running() < self.governor.max_concurrent => {
                    self.governor.queue.remove(i);
                    self.wake_admitted(q.id, q.from);
                }
                Decision::Admit => {
                    ahead = ahead + Usage::one(weight);
                    i += 1;
                }
                Decision::Wait { evict } => {
                    for (victim, limit) in evict {
                        self.evict(victim, limit, q.id);
                    }
                    ahead = ahead + Usage::one(weight);
                    i += 1;
                }
                Decision::Refuse(limit) => {
                    self.governor.queue.remove(i);
                    self.refuse_wake(
                        q.id,
                        &WakeError::Budget {
                            limit: limit.as_str(),
                        },
                    );
                }
            }
        }
        self.governor.pumping = false;
    }

    /// Hosts counted against the budget (admitted ones; queued wakes are not), and those of them
    /// going to sleep into a tier that frees memory.
    fn usage(&self) -> (Usage, Usage) {
        let mut used = Usage::default();
        let mut releasing = Usage::default();
        for (id, host) in self.hosts.iter().enumerate() {
            if !budget::counts(host.state) || self.governor.queued(id) {
                continue;
            }
            let one = Usage::one(self.weight(id));
            used = used + one;
            if budget::releasing(host.state) {
                releasing = releasing + one;
            }
        }
        (used, releasing)
    }

    /// Hosts whose own wake job runs now.
    fn wakes_running(&self) -> usize {
        (0..self.hosts.len())
            .filter(|&id| {
                let h = &self.hosts[id];
                matches!(h.state, HostState::Waking { .. })
                    && h.awaiting_deps.is_none()
                    && !self.governor.queued(id)
            })
            .count()
    }

    fn weight(&self, id: usize) -> u64 {
        let h = &self.hosts[id];
        budget::weight(
            h.config.container.memory,
            h.measured_memory,
            self.governor.default_memory,
        )
    }

    /// Warm hosts past their `min_warm` and paused ones, except the waking host's dependencies.
    fn candidates(&self, for_id: usize) -> Vec<Candidate> {
        let now_ns = monotonic_ns();
        let deps = &self.hosts[for_id].deps;
        self.hosts
            .iter()
            .enumerate()
            .filter(|(id, _)| *id != for_id && !deps.iter().any(|(dep, _)| dep == id))
            .filter(|(_, h)| match h.state {
                HostState::Warm { .. } => {
                    Duration::from_nanos(now_ns.saturating_sub(h.warm_since_ns))
                        >= h.config.min_warm
                }
                HostState::Asleep { tier } => tier == Tier::Paused,
                _ => false,
            })
            .map(|(id, h)| Candidate {
                id,
                weight: self.weight(id),
                last_active_ns: h.last_active_ns(&h.activity),
                priority: h.config.priority,
                busy: h.is_warm() && open_connections(&h.activity) > 0,
            })
            .collect()
    }

    /// Puts `id` to sleep in a tier that frees its memory, to make room for `for_id`.
    fn evict(&mut self, id: usize, limit: Limit, for_id: usize) {
        let host = &self.hosts[id];
        let to = if host.config.sleep == Tier::Absent {
            Tier::Absent
        } else {
            Tier::Stopped
        };
        info!(host = %host.config.name, to = to.as_str(), reason = limit.as_str(),
            for_host = %self.hosts[for_id].config.name, "evicting to make room");
        match limit {
            Limit::MaxWarm => self.governor.counts.evictions_max_warm += 1,
            Limit::Memory => self.governor.counts.evictions_memory += 1,
        }
        self.hosts[id].sleep_cause = Some(SleepCause::Requested);
        self.apply(id, Event::SleepRequested { to });
    }

    /// Fails a wake that the budget has no room for: its held packets are refused, and the
    /// next packet asks again (no backoff: a refusal says nothing about the host, and room comes
    /// back as soon as another host sleeps).
    fn refuse_wake(&mut self, id: usize, err: &WakeError) {
        self.governor.counts.refused_budget += 1;
        self.record_failed_wake(id, err);
        self.apply(id, Event::WakeRefused);
    }

    /// On the tick: refuses queued wakes that waited longer than their `wake_timeout`, forgets
    /// refilled rate buckets, and measures the memory of hosts that count.
    pub(super) fn govern(&mut self, now_ns: u64) {
        let expired: Vec<Queued> = self
            .governor
            .queue
            .iter()
            .filter(|q| {
                let waited = Duration::from_nanos(now_ns.saturating_sub(q.since_ns));
                waited >= self.hosts[q.id].config.wake_timeout
            })
            .copied()
            .collect();
        for q in expired {
            self.governor.queue.retain(|o| o.id != q.id);
            let waited = Duration::from_nanos(now_ns.saturating_sub(q.since_ns));
            self.refuse_wake(q.id, &WakeError::Queued { waited });
        }
        self.governor.rates.prune(now_ns);
        for host in &mut self.hosts {
            if let (true, Some(pid)) = (budget::counts(host.state), host.pid)
                && host.config.container.memory.is_none()
                && let Some(bytes) = crate::procnet::memory_usage(pid)
            {
                host.measured_memory = Some(bytes);
            }
        }
    }

    /// Whether host `id` may be pre-woken now for `source` (`wake_together.rs`): a pre-wake is a
    /// guess, so it only starts when it fits as it is — the budget has room without evicting
    /// anything (queued wakes counted as if admitted), a wake slot is free, and `source` is
    /// within the wake rate limits (a pre-wake takes its token, as its packet would have).
    pub(super) fn prewake_fits(&mut self, id: usize, source: std::net::Ipv4Addr) -> bool {
        let (used, releasing) = self.usage();
        let queued = (self.governor.queue.iter())
            .fold(Usage::default(), |u, q| u + Usage::one(self.weight(q.id)));
        let admit = matches!(
            budget::decide(
                &self.governor.budget,
                used + queued,
                releasing,
                self.weight(id),
                self.hosts[id].config.priority,
                Vec::new(),
            ),
            Decision::Admit
        );
        admit
            && self.wakes_running() + self.governor.queue.len() < self.governor.max_concurrent
            && (!self.governor.rates.enabled()
                || self.governor.rates.admit(source, monotonic_ns()).is_ok())
    }

    /// The budget's use and limits with the counters, for the snapshot.
    pub(super) fn budget_view(&self) -> BudgetView {
        let (used, _) = self.usage();
        let budget = self.governor.budget;
        BudgetView {
            warm: used.hosts as u64,
            warm_limit: budget.max_warm.map(|m| m as u64),
            memory_bytes: used.bytes,
            memory_limit: budget.memory,
            queued: self.governor.queue.len() as u64,
            ..self.governor.counts
        }
    }

    /// The host's weight, for its view.
    pub(super) fn weight_of(&self, id: usize) -> u64 {
        self.weight(id)
    }

    /// Whether a held packet for host `id` is refused by the wake rate limits: only packets
    /// that would wake a cold host take a token; a refused one is answered (RST / ICMP) here.
    pub(super) fn rate_limited(&mut self, id: usize, frame: &HeldFrame) -> bool {
        if !self.governor.rates.enabled() {
            return false;
        }
        let would_wake = match self.hosts[id].state {
            HostState::Asleep { .. } => true,
            HostState::Sleeping { wake_after, .. } => !wake_after,
            HostState::Failed { retry_at, .. } => std::time::Instant::now() >= retry_at,
            HostState::Waking { .. } | HostState::Warm { .. } | HostState::Elsewhere { .. } => {
                false
            }
        };
        let Some(src) = would_wake
            .then(|| packets::summarize(&frame.frame).ok())
            .flatten()
            .map(|s| s.src)
        else {
            return false;
        };
        let now_ns = monotonic_ns();
        let Err(refused) = self.governor.rates.admit(src, now_ns) else {
            return false;
        };
        self.governor.counts.refused_rate += 1;
        if self.governor.rates.should_log(src, now_ns) {
            let limit = match refused {
                Refused::Source => "wakes_per_source",
                Refused::Global => "wakes_per_second",
            };
            warn!(source = %src, host = %self.hosts[id].config.name, limit,
                "wake refused: the source is over its wake rate (logged once per source per 10 s)");
        }
        self.refuse_frame(frame);
        true
    }
}
