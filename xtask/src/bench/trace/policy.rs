//! The policies a trace is replayed under, as configuration. Every policy runs the same agent on
//! the same hosts (same image, ballast, memory limit, calls); only the keys below differ. Timeouts
//! are stated in trace time and scaled like the rest of time, never below [`MIN_TIMEOUT_S`] of
//! real time (the agent looks at idleness every quarter of the shortest idle timeout, every
//! 20 ms at most).
//!
//! To add a policy (e.g. imag with `wakes_with`): a variant of [`Kind`], its row in [`ALL`], its
//! keys in [`Policy::host_keys`] (it sees the whole trace and the host's index, so the name of the
//! host it calls is at hand: `trace.hosts[trace.hosts[index].calls?].name`) and, if it needs one,
//! a section in [`Policy::sections`]. `--trace-policies` then selects it by name.

use std::fmt::Write as _;

use super::workload::{HostPlan, Trace, TraceParams};

/// imag's idle timeout in trace time: its wakes are cheap, so it may let go soon.
pub const IMAG_IDLE_S: f64 = 60.0;
/// The short idle timeout (trace time) that wakes at thaw speed afford (at 30×, 333 ms real).
pub const SHORT_IDLE_S: u32 = 10;
/// The shortest idle timeout (trace time) tried: a sleep after almost every request (at 30×,
/// 33 ms real, floored to [`MIN_TIMEOUT_S`]).
pub const SHORTEST_IDLE_S: u32 = 1;
/// The common serverless keep-alive (trace time), also `stop_after` for pause → stop.
pub const KEEP_ALIVE_S: f64 = 600.0;
/// Trace time replayed before the measured span: longer than any policy's timeouts (pause → stop
/// lets go of a host after 1 + 10 minutes), so each is measured from its steady state.
pub const WARMUP_S: f64 = 900.0;
/// The shortest timeout given to the agent, in real seconds: the shortest idle timeout that can
/// put a host to sleep (twice the 20 ms the agent allows the datapath's activity stamps to lag;
/// `imag-agent validate` warns below it).
pub const MIN_TIMEOUT_S: f64 = 0.04;
/// A host's memory limit is its ballast plus this (the binary, stacks, page cache).
pub const HEADROOM_MB: u32 = 8;
/// The memory budget's share of all hosts' limits together. (At 0.4 with `min_warm` = the idle
/// timeout, the compressed run refused 1,959 of 6,999 requests: every host inside `min_warm`, so
/// nothing evictable; the budget policy now lets any idle host be evicted.)
pub const BUDGET_SHARE: f64 = 0.5;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Every host woken before the replay and never put to sleep.
    AlwaysOn,
    /// imag, idle after [`IMAG_IDLE_S`], into `sleep = "stop"`.
    Stop,
    /// imag, idle after [`IMAG_IDLE_S`], into `sleep = "pause"`.
    Pause,
    /// imag, paused after [`IMAG_IDLE_S`], stopped after [`KEEP_ALIVE_S`] paused.
    PauseThenStop,
    /// imag, paused after `idle_s` (trace seconds) and paged out to swap at once
    /// (`swap_after = "0s"`).
    PauseSwap { idle_s: u32 },
    /// imag, paused after [`IMAG_IDLE_S`], under `[limits] memory_budget` ([`BUDGET_SHARE`] of
    /// every host's limit): waking beyond it stops the least recently used.
    PauseBudget,
    /// A fixed keep-alive of [`KEEP_ALIVE_S`], then stopped (the serverless default).
    KeepAlive,
}

#[derive(Clone, Copy, Debug)]
pub struct Policy {
    /// Its name in flags, tables and the plot.
    pub name: &'static str,
    pub kind: Kind,
    /// One line for the report.
    pub what: &'static str,
}

/// Also the configuration every policy's hosts are set up with.
pub const ALWAYS_ON: Policy = Policy {
    name: "always-on",
    kind: Kind::AlwaysOn,
    what: "every host warm for the whole replay (imag with idle_timeout = never, all woken first)",
};

pub const ALL: [Policy; 9] = [
    ALWAYS_ON,
    Policy {
        name: "keep-alive-10m",
        kind: Kind::KeepAlive,
        what: "fixed 10-minute keep-alive, then stopped (the serverless default)",
    },
    Policy {
        name: "imag-stop",
        kind: Kind::Stop,
        what: "imag: stopped after 1 minute idle",
    },
    Policy {
        name: "imag-pause",
        kind: Kind::Pause,
        what: "imag: paused after 1 minute idle (a paused container keeps its memory)",
    },
    Policy {
        name: "imag-pause-stop",
        kind: Kind::PauseThenStop,
        what: "imag: paused after 1 minute idle, stopped after 10 minutes paused (stop_after)",
    },
    Policy {
        name: "imag-pause-swap",
        kind: Kind::PauseSwap { idle_s: 60 },
        what: "imag: paused after 1 minute idle and paged out to swap at once (swap_after = 0s)",
    },
    Policy {
        name: "imag-swap-10s",
        kind: Kind::PauseSwap {
            idle_s: SHORT_IDLE_S,
        },
        what: "imag: paused after 10 s idle and paged out to swap at once (a wake is a thaw, so a \
               short idle timeout is affordable)",
    },
    Policy {
        name: "imag-swap-1s",
        kind: Kind::PauseSwap {
            idle_s: SHORTEST_IDLE_S,
        },
        what: "imag: paused after 1 s idle and paged out to swap at once (a sleep, a page-out and \
               a wake around almost every request)",
    },
    Policy {
        name: "imag-budget",
        kind: Kind::PauseBudget,
        what: "imag: paused after 1 minute idle, memory_budget = 50 % of all hosts' limits (LRU stopped)",
    },
];

/// The policies named in `list` (comma-separated), in the order of [`ALL`]; all of them for an
/// empty list.
pub fn select(list: &str) -> Result<Vec<Policy>, String> {
    let names: Vec<&str> = list
        .split(',')
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .collect();
    if let Some(unknown) = names.iter().find(|n| !ALL.iter().any(|p| p.name == **n)) {
        return Err(format!(
            "unknown trace policy {unknown:?}; known: {}",
            ALL.map(|p| p.name).join(", ")
        ));
    }
    Ok(ALL
        .into_iter()
        .filter(|p| names.is_empty() || names.contains(&p.name))
        .collect())
}

/// A trace duration as an agent duration ("250ms"), scaled and floored.
pub fn timeout(params: &TraceParams, trace_s: f64) -> String {
    let real_s = params.scaled(trace_s).max(MIN_TIMEOUT_S);
    format!("{:.0}ms", real_s * 1000.0)
}

/// A host's memory limit (MiB): its ballast and headroom.
pub fn limit_mb(host: &HostPlan) -> u32 {
    host.memory_mb + HEADROOM_MB
}

impl Policy {
    /// The tier a host that has not been called for a long time is in under this policy (its
    /// steady state), which the replay starts every host from: `None` for warm. Pause policies
    /// that never stop a host keep it paused (and `swap_after` pages it out once this policy's
    /// agent has adopted it); the others let it go to stopped in the end — pause → stop after
    /// `stop_after`, the budget when it needs the room (a paused host holds its memory, so the
    /// budget's steady state is mostly stopped hosts).
    pub fn steady_tier(&self) -> Option<&'static str> {
        match self.kind {
            Kind::AlwaysOn => None,
            Kind::Pause | Kind::PauseSwap { .. } => Some("pause"),
            Kind::Stop | Kind::PauseThenStop | Kind::PauseBudget | Kind::KeepAlive => Some("stop"),
        }
    }

    /// The `[[host]]` keys this policy sets on host `index` of `trace` (besides name, address,
    /// image, command, ballast and memory limit).
    pub fn host_keys(&self, trace: &Trace, index: usize) -> String {
        let params = &trace.params;
        debug_assert!(index < trace.hosts.len());
        let idle = timeout(params, IMAG_IDLE_S);
        let keep = timeout(params, KEEP_ALIVE_S);
        match self.kind {
            Kind::AlwaysOn => "idle_timeout = \"never\"\n".to_string(),
            Kind::Stop => {
                format!("idle_timeout = \"{idle}\"\nmin_warm = \"{idle}\"\nsleep = \"stop\"\n")
            }
            Kind::Pause => {
                format!("idle_timeout = \"{idle}\"\nmin_warm = \"{idle}\"\nsleep = \"pause\"\n")
            }
            // Under a budget any idle host may make room (min_warm would refuse wakes instead).
            Kind::PauseBudget => {
                format!("idle_timeout = \"{idle}\"\nmin_warm = \"0s\"\nsleep = \"pause\"\n")
            }
            Kind::PauseSwap { idle_s } => {
                let idle = timeout(params, f64::from(idle_s));
                format!(
                    "idle_timeout = \"{idle}\"\nmin_warm = \"{idle}\"\nsleep = \"pause\"\n\
                     swap_after = \"0s\"\n"
                )
            }
            Kind::PauseThenStop => format!(
                "idle_timeout = \"{idle}\"\nmin_warm = \"{idle}\"\nsleep = \"pause\"\n\
                 stop_after = \"{keep}\"\n"
            ),
            Kind::KeepAlive => {
                format!("idle_timeout = \"{keep}\"\nmin_warm = \"{keep}\"\nsleep = \"stop\"\n")
            }
        }
    }

    /// Sections this policy adds to the configuration.
    pub fn sections(&self, trace: &Trace) -> String {
        let mut text = String::new();
        if self.kind == Kind::PauseBudget {
            let total: u32 = trace.hosts.iter().map(limit_mb).sum();
            let max_single = trace.hosts.iter().map(limit_mb).max().unwrap_or(0);
            #[allow(
                clippy::cast_possible_truncation,
                clippy::cast_sign_loss,
                reason = "a positive share of a sum of u32 MiB"
            )]
            let budget = ((f64::from(total) * BUDGET_SHARE) as u32).max(max_single);
            let _ = write!(text, "\n[limits]\nmemory_budget = \"{budget}MiB\"\n");
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> TraceParams {
        TraceParams {
            seed: 1,
            hosts: 4,
            span_s: 86_400.0,
            warmup_s: WARMUP_S,
            replay_s: 240.0,
            max_rps: 20.0,
            memory_scale: 0.1,
        }
    }

    #[test]
    fn timeouts_are_scaled_and_floored() {
        // 10 minutes at 360×: 1.67 s; 1 minute: 167 ms; 1 s: 3 ms, floored to 40 ms.
        assert_eq!(timeout(&params(), KEEP_ALIVE_S), "1667ms");
        assert_eq!(timeout(&params(), IMAG_IDLE_S), "167ms");
        assert_eq!(timeout(&params(), f64::from(SHORTEST_IDLE_S)), "40ms");
    }

    #[test]
    fn policies_are_selected_by_name_and_unknown_ones_named() {
        assert_eq!(select("").unwrap().len(), ALL.len());
        let two = select("imag-stop, always-on").unwrap();
        assert_eq!(
            two.iter().map(|p| p.name).collect::<Vec<_>>(),
            ["always-on", "imag-stop"]
        );
        let err = select("imag-stpo").unwrap_err();
        assert!(
            err.contains("\"imag-stpo\"") && err.contains("imag-stop"),
            "{err}"
        );
    }

    #[test]
    fn a_policy_starts_from_the_tier_its_configuration_leaves_idle_hosts_in() {
        let trace = super::super::workload::generate(&params()).expect("valid parameters");
        for policy in ALL {
            let keys = policy.host_keys(&trace, 0);
            let never_stops = keys.contains("sleep = \"pause\"")
                && !keys.contains("stop_after")
                && policy.sections(&trace).is_empty();
            let expected = if policy.kind == Kind::AlwaysOn {
                None
            } else if never_stops {
                Some("pause")
            } else {
                Some("stop")
            };
            assert_eq!(policy.steady_tier(), expected, "{}", policy.name);
        }
    }
}
