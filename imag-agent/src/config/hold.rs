//! The `[hold]` section: bounds on the packets held for hosts that are waking, per host and in
//! all (the orchestrator's `held.rs` enforces them).

use super::{
    field::{Report, field_or},
    raw,
    values::Limit,
};

/// Bounds on packets held for hosts that are waking (`[hold]`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HoldConfig {
    pub max_packets_per_host: usize,
    pub max_bytes_per_host: usize,
    pub max_packets: usize,
    pub max_bytes: usize,
}

impl Default for HoldConfig {
    fn default() -> Self {
        HoldConfig {
            max_packets_per_host: 1024,
            max_bytes_per_host: 4 << 20,
            max_packets: 16384,
            max_bytes: 64 << 20,
        }
    }
}

/// Checks `[hold]`; an absent section means the defaults.
pub(super) fn validate(raw: Option<&raw::Hold>, report: &mut Report<'_>) -> Option<HoldConfig> {
    let defaults = HoldConfig::default();
    let Some(raw) = raw else {
        return Some(defaults);
    };
    let mut limit = |value: &Option<toml::Spanned<usize>>, key: &'static str, default: usize| {
        field_or(value.as_ref(), key, Limit(default), report).map(|Limit(n)| n)
    };
    let max_packets_per_host = limit(
        &raw.max_packets_per_host,
        "max_packets_per_host",
        defaults.max_packets_per_host,
    );
    let max_bytes_per_host = limit(
        &raw.max_bytes_per_host,
        "max_bytes_per_host",
        defaults.max_bytes_per_host,
    );
    let max_packets = limit(&raw.max_packets, "max_packets", defaults.max_packets);
    let max_bytes = limit(&raw.max_bytes, "max_bytes", defaults.max_bytes);
    Some(HoldConfig {
        max_packets_per_host: max_packets_per_host?,
        max_bytes_per_host: max_bytes_per_host?,
        max_packets: max_packets?,
        max_bytes: max_bytes?,
    })
}

#[cfg(test)]
mod tests {
    use crate::config::tests::problems;

    #[test]
    fn every_zero_limit_is_reported() {
        let found = problems(
            "[network]\nsubnet = \"10.0.0.0/24\"\n[hold]\nmax_packets_per_host = 0\n\
             max_bytes_per_host = 0\nmax_packets = 0\nmax_bytes = 0\n",
        );
        let expected: Vec<_> = [
            (4, 24, "max_packets_per_host"),
            (5, 22, "max_bytes_per_host"),
            (6, 15, "max_packets"),
            (7, 13, "max_bytes"),
        ]
        .into_iter()
        .map(|(line, column, key)| (line, column, format!("{key} must be at least 1")))
        .collect();
        assert_eq!(found, expected);
    }
}
