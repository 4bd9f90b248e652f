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
}

impl Default for WakeConfig {
    fn default() -> Self {
        WakeConfig {
            backoff: Duration::from_secs(1),
            backoff_max: Duration::from_mins(5),
            ready_events: true,
            fast_thaw: true,
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
}
