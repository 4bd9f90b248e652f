//! The `[wake]` section: how wakes run and how failed wakes are retried.

use std::time::Duration;

use super::{
    field::{Report, at_most, field_or, span},
    raw,
    values::NonZeroDuration,
};

/// Longest `backoff` and `backoff_max`: a failed host is retried at least once a day.
pub const MAX_BACKOFF: Duration = Duration::from_hours(24);

/// How wakes run and how failed wakes are retried (`[wake]`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WakeConfig {
    /// Wait after a failed wake before a packet may retry; doubles with each further failure.
    pub backoff: Duration,
    pub backoff_max: Duration,
    /// Release held packets the moment the service's socket starts listening (TCP probes),
    /// instead of waiting for the next poll.
    pub ready_events: bool,
    /// Wake paused hosts by thawing their cgroup directly (then telling the engine), instead of
    /// waiting for the engine's unpause.
    pub fast_thaw: bool,
    /// Learned pre-wakes (`prewake`): whether the agent learns which host's traffic wakes which,
    /// and wakes those in parallel with the host that needs them.
    pub prewake: PrewakeMode,
}

/// `[wake] prewake`: `on` (learn and pre-wake, the default), `learn` (learn only: edges show in
/// the status but wake nothing) or `off` (neither). Explicit `wakes_with` is honoured in every
/// mode.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PrewakeMode {
    #[default]
    On,
    Learn,
    Off,
}

impl PrewakeMode {
    pub fn learns(self) -> bool {
        self != PrewakeMode::Off
    }

    pub fn wakes(self) -> bool {
        self == PrewakeMode::On
    }

    pub fn as_str(self) -> &'static str {
        match self {
            PrewakeMode::On => "on",
            PrewakeMode::Learn => "learn",
            PrewakeMode::Off => "off",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "{0:?} is not a pre-wake mode: use \"on\" (learn and pre-wake), \"learn\" (learn only) or \"off\""
)]
pub struct BadPrewakeMode(String);

impl std::str::FromStr for PrewakeMode {
    type Err = BadPrewakeMode;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "on" => Ok(PrewakeMode::On),
            "learn" => Ok(PrewakeMode::Learn),
            "off" => Ok(PrewakeMode::Off),
            _ => Err(BadPrewakeMode(text.to_string())),
        }
    }
}

impl Default for WakeConfig {
    fn default() -> Self {
        WakeConfig {
            backoff: Duration::from_secs(1),
            backoff_max: Duration::from_mins(5),
            ready_events: true,
            fast_thaw: true,
            prewake: PrewakeMode::On,
        }
    }
}

/// Checks `[wake]`; an absent section means the defaults.
pub(super) fn validate(raw: Option<&raw::Wake>, report: &mut Report<'_>) -> Option<WakeConfig> {
    let defaults = WakeConfig::default();
    let Some(raw) = raw else {
        return Some(defaults);
    };
    let backoff = field_or(
        raw.backoff.as_ref(),
        "backoff",
        NonZeroDuration(defaults.backoff),
        report,
    );
    let backoff_max = field_or(
        raw.backoff_max.as_ref(),
        "backoff_max",
        NonZeroDuration(defaults.backoff_max),
        report,
    );
    let prewake = field_or(raw.prewake.as_ref(), "prewake", defaults.prewake, report);
    let backoff = at_most(
        backoff.map(|d| d.0),
        raw.backoff.as_ref(),
        "backoff",
        MAX_BACKOFF,
        report,
    );
    let backoff_max = at_most(
        backoff_max.map(|d| d.0),
        raw.backoff_max.as_ref(),
        "backoff_max",
        MAX_BACKOFF,
        report,
    );
    let (backoff, backoff_max) = (backoff?, backoff_max?);
    if backoff > backoff_max {
        // Placed on `backoff` when written; a default backoff has no place but the file.
        report(
            raw.backoff.as_ref().and_then(span),
            format!(
                "backoff ({}) is longer than backoff_max ({})",
                humantime::format_duration(backoff),
                humantime::format_duration(backoff_max)
            ),
        );
        return None;
    }
    Some(WakeConfig {
        backoff,
        backoff_max,
        ready_events: raw.ready_events.unwrap_or(defaults.ready_events),
        fast_thaw: raw.fast_thaw.unwrap_or(defaults.fast_thaw),
        prewake: prewake?,
    })
}

#[cfg(test)]
mod tests {
    use crate::config::tests::problems;

    #[test]
    fn backoff_problems_are_placed() {
        let found = problems(
            "[network]\nsubnet = \"10.0.0.0/24\"\n[wake]\nbackoff = \"0s\"\nbackoff_max = \"x\"\n",
        );
        assert_eq!(found.len(), 2, "{found:?}");
        assert_eq!(
            (found[0].0, found[0].1, found[0].2.as_str()),
            (4, 11, "backoff must be longer than zero")
        );
        assert_eq!((found[1].0, found[1].1), (5, 15));
        assert!(
            found[1]
                .2
                .starts_with("backoff_max \"x\" is not a duration")
        );

        let found =
            problems("[network]\nsubnet = \"10.0.0.0/24\"\n[wake]\nbackoff_max = \"500ms\"\n");
        assert_eq!(
            found,
            vec![(
                0,
                0,
                "backoff (1s) is longer than backoff_max (500ms)".to_string()
            )],
            "a default backoff has no place in the file"
        );

        let found = problems(
            "[network]\nsubnet = \"10.0.0.0/24\"\n[wake]\nbackoff = \"2days\"\n\
             backoff_max = \"29days\"\n",
        );
        assert_eq!(
            found,
            vec![
                (
                    4,
                    11,
                    "backoff 2days is longer than its maximum 1day".to_string()
                ),
                (
                    5,
                    15,
                    "backoff_max 29days is longer than its maximum 1day".to_string()
                ),
            ]
        );
        let found =
            problems("[network]\nsubnet = \"10.0.0.0/24\"\n[wake]\nbackoff = \"9999999999999h\"\n");
        assert_eq!((found[0].0, found[0].1), (4, 11), "{found:?}");
        assert!(
            found[0].2.contains("longest duration imag accepts"),
            "{found:?}"
        );
    }

    #[test]
    fn prewake_modes_parse_and_a_bad_one_is_placed() {
        use crate::config::{Config, PrewakeMode};
        let net = "[network]\nsubnet = \"10.0.0.0/24\"\n";
        assert_eq!(
            Config::parse(net, "t").unwrap().wake.prewake,
            PrewakeMode::On
        );
        for (text, mode) in [("off", PrewakeMode::Off), ("learn", PrewakeMode::Learn)] {
            let c = Config::parse(&format!("{net}[wake]\nprewake = \"{text}\"\n"), "t").unwrap();
            assert_eq!(c.wake.prewake, mode);
        }
        let found = problems(&format!("{net}[wake]\nprewake = \"sometimes\"\n"));
        assert_eq!((found[0].0, found[0].1), (4, 11), "{found:?}");
        assert!(
            found[0].2.contains("\"sometimes\" is not a pre-wake mode"),
            "{found:?}"
        );
    }
}
