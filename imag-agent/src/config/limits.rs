//! The `[limits]` section: how much may be warm at once, and who may wake how often. The
//! orchestrator's `budget.rs` (eviction) and `admission.rs` (rate limits) enforce it; a host's own
//! weight (`memory`) and protection (`priority`, `min_warm`) are in its `[[host]]`.

use std::{str::FromStr, time::Duration};

use super::{
    field::{Report, field_or, optional},
    raw,
    values::{ByteSize, Limit},
};

/// Default weight of a host that has no `memory` limit and has not been measured yet.
pub const DEFAULT_HOST_MEMORY: u64 = 256 << 20;
/// Default bound on hosts whose own wake job runs at once (further wakes queue).
pub const DEFAULT_MAX_CONCURRENT_WAKES: usize = 64;
/// Default bound on container engine calls under way at once: the engine alone creating and
/// starting 100 containers served them no sooner with 32 or 100 calls at once than with 16 (the
/// storm section of `cargo xtask bench` measures it; more calls only queue inside the engine).
pub const DEFAULT_MAX_ENGINE_CALLS: usize = 16;

/// The budget and the wake rate limits (`[limits]`). `None` means unlimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LimitsConfig {
    /// Hosts that may be warm, waking or paused at once.
    pub max_warm: Option<usize>,
    /// Memory the warm, waking and paused hosts may weigh together, in bytes.
    pub memory_budget: Option<u64>,
    /// A host's weight until it has a `memory` limit or a measurement.
    pub default_host_memory: u64,
    /// Whether hosts with open connections may be evicted (last, after every idle one).
    pub evict_busy: bool,
    /// Wakes one source address may cause: a token bucket of `count` refilled over `per`.
    pub wakes_per_source: Option<WakeRate>,
    /// Wakes all sources together may cause per second (a bucket of that size).
    pub wakes_per_second: Option<usize>,
    /// Hosts whose own wake may run at once; further wakes wait (bounded by `wake_timeout`).
    pub max_concurrent_wakes: usize,
    /// Container engine calls under way at once.
    pub max_engine_calls: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_warm: None,
            memory_budget: None,
            default_host_memory: DEFAULT_HOST_MEMORY,
            evict_busy: false,
            wakes_per_source: None,
            wakes_per_second: None,
            max_concurrent_wakes: DEFAULT_MAX_CONCURRENT_WAKES,
            max_engine_calls: DEFAULT_MAX_ENGINE_CALLS,
        }
    }
}

/// `"10/min"`: `count` wakes, refilled evenly over `per` ("s", "min", "h", or a duration like
/// "10s").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WakeRate {
    pub count: u32,
    pub per: Duration,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "{0:?} is not a rate: write a count above zero, a slash and a period of at most 30 days, \
     like \"10/min\", \"5/s\" or \"100/10m\""
)]
pub struct BadRate(pub String);

impl FromStr for WakeRate {
    type Err = BadRate;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = || BadRate(text.to_string());
        let (count, per) = text.split_once('/').ok_or_else(bad)?;
        let count: u32 = count.trim().parse().map_err(|_| bad())?;
        let per = match per.trim() {
            "s" | "sec" | "second" => Duration::from_secs(1),
            "m" | "min" | "minute" => Duration::from_mins(1),
            "h" | "hour" => Duration::from_hours(1),
            other => humantime::parse_duration(other).map_err(|_| bad())?,
        };
        if count == 0 || per.is_zero() || per > super::values::MAX_DURATION {
            return Err(bad());
        }
        Ok(WakeRate { count, per })
    }
}

/// Checks `[limits]`; an absent section means the defaults.
pub(super) fn validate(raw: Option<&raw::Limits>, report: &mut Report<'_>) -> Option<LimitsConfig> {
    let defaults = LimitsConfig::default();
    let Some(raw) = raw else {
        return Some(defaults);
    };
    let max_warm: Option<Option<Limit>> = optional(raw.max_warm.as_ref(), "max_warm", report);
    let memory_budget: Option<Option<ByteSize>> =
        optional(raw.memory_budget.as_ref(), "memory_budget", report);
    let default_host_memory = field_or(
        raw.default_host_memory.as_ref(),
        "default_host_memory",
        ByteSize(defaults.default_host_memory),
        report,
    );
    let wakes_per_source: Option<Option<WakeRate>> =
        optional(raw.wakes_per_source.as_ref(), "wakes_per_source", report);
    let wakes_per_second: Option<Option<Limit>> =
        optional(raw.wakes_per_second.as_ref(), "wakes_per_second", report);
    let max_concurrent_wakes = field_or(
        raw.max_concurrent_wakes.as_ref(),
        "max_concurrent_wakes",
        Limit(defaults.max_concurrent_wakes),
        report,
    );
    let max_engine_calls = field_or(
        raw.max_engine_calls.as_ref(),
        "max_engine_calls",
        Limit(defaults.max_engine_calls),
        report,
    );
    Some(LimitsConfig {
        max_warm: max_warm?.map(|l| l.0),
        memory_budget: memory_budget?.map(|b| b.0),
        default_host_memory: default_host_memory?.0,
        evict_busy: raw.evict_busy.unwrap_or(defaults.evict_busy),
        wakes_per_source: wakes_per_source?,
        wakes_per_second: wakes_per_second?.map(|l| l.0),
        max_concurrent_wakes: max_concurrent_wakes?.0,
        max_engine_calls: max_engine_calls?.0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, tests::problems};

    #[test]
    fn rates_parse_with_named_and_written_periods() {
        let rate = |t: &str| t.parse::<WakeRate>();
        assert_eq!(
            rate("10/min"),
            Ok(WakeRate {
                count: 10,
                per: Duration::from_mins(1)
            })
        );
        assert_eq!(rate("5/s").unwrap().per, Duration::from_secs(1));
        assert_eq!(rate("100/10m").unwrap().per, Duration::from_mins(10));
        for bad in ["10", "0/min", "x/min", "5/0s", "5/fortnightly", "1/31days"] {
            assert!(rate(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_limits_section_parses_and_defaults_apply() {
        let text = "[network]\nsubnet = \"10.0.0.0/24\"\n[limits]\nmax_warm = 2\n\
                    memory_budget = \"8GiB\"\nwakes_per_source = \"5/min\"\nevict_busy = true\n";
        let limits = Config::parse(text, "t").unwrap().limits;
        assert_eq!(limits.max_warm, Some(2));
        assert_eq!(limits.memory_budget, Some(8 << 30));
        assert_eq!(limits.wakes_per_source.unwrap().count, 5);
        assert!(limits.evict_busy);
        assert_eq!(limits.default_host_memory, DEFAULT_HOST_MEMORY);
        assert_eq!(limits.wakes_per_second, None);
        let none = Config::parse("[network]\nsubnet = \"10.0.0.0/24\"\n", "t").unwrap();
        assert_eq!(none.limits, LimitsConfig::default());
    }

    #[test]
    fn bad_limits_are_placed() {
        let found = problems(
            "[network]\nsubnet = \"10.0.0.0/24\"\n[limits]\nmax_warm = 0\n\
             memory_budget = \"lots\"\nwakes_per_source = \"10 per minute\"\n\
             max_concurrent_wakes = 0\n",
        );
        let places: Vec<_> = found.iter().map(|p| (p.0, p.1)).collect();
        assert_eq!(
            places,
            vec![(4, 12), (5, 17), (6, 20), (7, 24)],
            "{found:?}"
        );
        assert_eq!(found[0].2, "max_warm must be at least 1");
        assert!(
            found[1]
                .2
                .starts_with("memory_budget \"lots\" is not a size")
        );
        assert!(
            found[2]
                .2
                .starts_with("wakes_per_source \"10 per minute\" is not a rate")
        );
    }
}
