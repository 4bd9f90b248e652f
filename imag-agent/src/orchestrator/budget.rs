//! The budget of warm hosts, as pure decisions: whether a wake fits `[limits] max_warm` and
//! `memory_budget`, and if not, which hosts to put to sleep first (least recently active, lowest
//! priority, idle before busy) — or that nothing can make room and the wake is refused.
//!
//! A host counts against the budget from the moment its wake is admitted until its sleep into a
//! tier that frees memory has completed (paused hosts keep their memory and count). The shell
//! (`governor.rs`) gathers the usage and the candidates, asks [`decide`], and performs the
//! evictions; hosts already going to sleep are `releasing` and are not evicted twice.

use std::ops::{Add, Sub};

use super::state::{HostState, Tier};

/// What the budget bounds; `None` means unlimited.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Budget {
    pub max_warm: Option<usize>,
    pub memory: Option<u64>,
    /// Hosts with open connections may be evicted (after every idle one).
    pub evict_busy: bool,
}

/// Hosts and bytes counted against the budget.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    pub hosts: usize,
    pub bytes: u64,
}

impl Usage {
    pub fn one(bytes: u64) -> Usage {
        Usage { hosts: 1, bytes }
    }
}

impl Add for Usage {
    type Output = Usage;
    fn add(self, o: Usage) -> Usage {
        Usage {
            hosts: self.hosts + o.hosts,
            bytes: self.bytes.saturating_add(o.bytes),
        }
    }
}

impl Sub for Usage {
    type Output = Usage;
    fn sub(self, o: Usage) -> Usage {
        Usage {
            hosts: self.hosts.saturating_sub(o.hosts),
            bytes: self.bytes.saturating_sub(o.bytes),
        }
    }
}

/// Which limit a wake ran into: the label of `imag_evictions_total{reason}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Limit {
    MaxWarm,
    Memory,
}

impl Limit {
    pub fn as_str(self) -> &'static str {
        match self {
            Limit::MaxWarm => "max_warm",
            Limit::Memory => "memory",
        }
    }
}

/// A warm or paused host that could be put to sleep to make room.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Candidate {
    pub id: usize,
    pub weight: u64,
    /// `CLOCK_MONOTONIC` ns of its last counted packet (or of becoming warm).
    pub last_active_ns: u64,
    pub priority: i64,
    /// It has open connections.
    pub busy: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// It fits now: wake it.
    Admit,
    /// It fits once these hosts (and those already releasing) have gone to sleep.
    Wait { evict: Vec<(usize, Limit)> },
    /// Nothing that may be evicted makes room.
    Refuse(Limit),
}

/// The limit `usage` exceeds, if any.
pub fn over(budget: &Budget, usage: Usage) -> Option<Limit> {
    if budget.max_warm.is_some_and(|max| usage.hosts > max) {
        Some(Limit::MaxWarm)
    } else if budget.memory.is_some_and(|max| usage.bytes > max) {
        Some(Limit::Memory)
    } else {
        None
    }
}

/// Whether a host of `weight` and `priority` may be woken with `used` counted (every host that
/// counts but this one, `releasing` included) and `releasing` about to be freed, evicting some
/// of `candidates` if needed. Candidates of a higher priority than the waking host's are never
/// evicted for it; busy ones only with `evict_busy`, and after every idle one.
pub fn decide(
    budget: &Budget,
    used: Usage,
    releasing: Usage,
    weight: u64,
    priority: i64,
    mut candidates: Vec<Candidate>,
) -> Decision {
    let need = Usage::one(weight);
    if over(budget, used + need).is_none() {
        return Decision::Admit;
    }
    candidates.retain(|c| c.priority <= priority && (budget.evict_busy || !c.busy));
    candidates.sort_by_key(|c| (c.busy, c.priority, c.last_active_ns, c.id));
    let mut after = used - releasing;
    let mut evict = Vec::new();
    for c in candidates {
        let Some(limit) = over(budget, after + need) else {
            break;
        };
        after = after - Usage::one(c.weight);
        evict.push((c.id, limit));
    }
    match over(budget, after + need) {
        None => Decision::Wait { evict },
        Some(limit) => Decision::Refuse(limit),
    }
}

/// A host's weight: its memory limit, else its measured usage, else the default.
pub fn weight(limit: Option<u64>, measured: Option<u64>, default: u64) -> u64 {
    limit.or(measured).unwrap_or(default)
}

/// Whether a host in `state` counts against the budget (its container holds memory, or will
/// soon). Waking hosts count once admitted; the shell leaves out those still queued.
pub fn counts(state: HostState) -> bool {
    match state {
        HostState::Warm { .. } | HostState::Waking { .. } | HostState::Sleeping { .. } => true,
        HostState::Asleep { tier }
        | HostState::Failed { tier, .. }
        | HostState::Elsewhere { tier } => tier == Tier::Paused,
    }
}

/// Whether a host in `state` is going to sleep into a tier that frees its memory.
pub fn releasing(state: HostState) -> bool {
    matches!(state, HostState::Sleeping { to, .. } if to != Tier::Paused)
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    const MIB: u64 = 1 << 20;

    fn c(id: usize, last_active_ns: u64) -> Candidate {
        Candidate {
            id,
            weight: 256 * MIB,
            last_active_ns,
            priority: 0,
            busy: false,
        }
    }

    fn warm(n: usize) -> Budget {
        Budget {
            max_warm: Some(n),
            ..Budget::default()
        }
    }

    #[test]
    fn a_wake_within_the_budget_is_admitted() {
        assert_eq!(
            decide(&warm(2), Usage::one(1), Usage::default(), 1, 0, vec![]),
            Decision::Admit
        );
        let unlimited = Budget::default();
        let lots = Usage {
            hosts: 10_000,
            bytes: u64::MAX,
        };
        assert_eq!(
            decide(&unlimited, lots, Usage::default(), 1, 0, vec![]),
            Decision::Admit
        );
    }

    #[test]
    fn the_least_recently_active_goes_first() {
        let used = Usage {
            hosts: 2,
            bytes: 512 * MIB,
        };
        let got = decide(
            &warm(2),
            used,
            Usage::default(),
            1,
            0,
            vec![c(0, 50), c(1, 10)],
        );
        assert_eq!(
            got,
            Decision::Wait {
                evict: vec![(1, Limit::MaxWarm)]
            }
        );
    }

    #[test]
    fn lower_priority_first_and_higher_than_the_waking_host_never() {
        let used = Usage { hosts: 2, bytes: 0 };
        let important = Candidate {
            priority: 5,
            ..c(0, 1)
        };
        let got = decide(
            &warm(2),
            used,
            Usage::default(),
            1,
            0,
            vec![important, c(1, 99)],
        );
        assert_eq!(
            got,
            Decision::Wait {
                evict: vec![(1, Limit::MaxWarm)]
            }
        );
        assert_eq!(
            decide(&warm(2), used, Usage::default(), 1, 0, vec![important]),
            Decision::Refuse(Limit::MaxWarm),
            "a priority-0 wake does not evict a priority-5 host"
        );
        assert_eq!(
            decide(&warm(2), used, Usage::default(), 1, 5, vec![important]),
            Decision::Wait {
                evict: vec![(0, Limit::MaxWarm)]
            }
        );
    }

    #[test]
    fn busy_hosts_only_with_evict_busy_and_last() {
        let used = Usage { hosts: 2, bytes: 0 };
        let busy = Candidate {
            busy: true,
            ..c(0, 1)
        };
        assert_eq!(
            decide(&warm(2), used, Usage::default(), 1, 0, vec![busy]),
            Decision::Refuse(Limit::MaxWarm)
        );
        let evict_busy = Budget {
            evict_busy: true,
            ..warm(2)
        };
        assert_eq!(
            decide(
                &evict_busy,
                used,
                Usage::default(),
                1,
                0,
                vec![busy, c(1, 99)]
            ),
            Decision::Wait {
                evict: vec![(1, Limit::MaxWarm)]
            },
            "the idle one, though more recently active"
        );
    }

    #[test]
    fn memory_evicts_until_the_new_host_fits() {
        let budget = Budget {
            memory: Some(1024 * MIB),
            ..Budget::default()
        };
        let used = Usage {
            hosts: 3,
            bytes: 768 * MIB,
        };
        let got = decide(
            &budget,
            used,
            Usage::default(),
            512 * MIB,
            0,
            vec![c(0, 1), c(1, 2), c(2, 3)],
        );
        assert_eq!(
            got,
            Decision::Wait {
                evict: vec![(0, Limit::Memory)]
            }
        );
        assert_eq!(
            decide(
                &budget,
                Usage::default(),
                Usage::default(),
                2048 * MIB,
                0,
                vec![]
            ),
            Decision::Refuse(Limit::Memory),
            "larger than the whole budget"
        );
    }

    #[test]
    fn hosts_already_releasing_are_waited_for_not_evicted_again() {
        let used = Usage { hosts: 2, bytes: 0 };
        let releasing = Usage::one(0);
        assert_eq!(
            decide(&warm(2), used, releasing, 1, 0, vec![c(1, 1)]),
            Decision::Wait { evict: vec![] }
        );
    }

    #[test]
    fn weight_and_what_counts() {
        assert_eq!(weight(Some(1), Some(2), 3), 1);
        assert_eq!(weight(None, Some(2), 3), 2);
        assert_eq!(weight(None, None, 3), 3);
        let now = Instant::now();
        assert!(counts(HostState::Warm { since: now }));
        assert!(counts(HostState::Asleep { tier: Tier::Paused }));
        assert!(!counts(HostState::Asleep {
            tier: Tier::Stopped
        }));
        let stopping = HostState::Sleeping {
            to: Tier::Stopped,
            wake_after: false,
        };
        assert!(counts(stopping) && releasing(stopping));
        assert!(!releasing(HostState::Sleeping {
            to: Tier::Paused,
            wake_after: false
        }));
    }
}
