//! The `[hold]` section: bounds on the packets held for hosts that are waking, per host and in
//! all (the orchestrator's `held.rs` enforces them).

use super::{
    field::{Report, field_or, span},
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
    let config = HoldConfig {
        max_packets_per_host: max_packets_per_host?,
        max_bytes_per_host: max_bytes_per_host?,
        max_packets: max_packets?,
        max_bytes: max_bytes?,
    };
    let mut ok = true;
    for (per_host, per_host_key, global, global_key) in [
        (
            (config.max_packets_per_host, &raw.max_packets_per_host),
            "max_packets_per_host",
            (config.max_packets, &raw.max_packets),
            "max_packets",
        ),
        (
            (config.max_bytes_per_host, &raw.max_bytes_per_host),
            "max_bytes_per_host",
            (config.max_bytes, &raw.max_bytes),
            "max_bytes",
        ),
    ] {
        if per_host.0 > global.0 {
            // At the per-host value when written; else at the global one that undercuts it.
            let place = per_host.1.as_ref().or(global.1.as_ref()).and_then(span);
            report(
                place,
                format!(
                    "{per_host_key} ({}) is above {global_key} ({}): one host could never hold \
                     that much; lower {per_host_key} or raise {global_key}",
                    per_host.0, global.0
                ),
            );
            ok = false;
        }
    }
    ok.then_some(config)
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

    #[test]
    fn a_per_host_limit_above_the_global_one_is_placed() {
        let found = problems(
            "[network]\nsubnet = \"10.0.0.0/24\"\n[hold]\nmax_packets_per_host = 100\n\
             max_packets = 10\n",
        );
        assert_eq!(
            found,
            vec![(
                4,
                24,
                "max_packets_per_host (100) is above max_packets (10): one host could never hold \
                 that much; lower max_packets_per_host or raise max_packets"
                    .to_string()
            )]
        );
        // The per-host default (4 MiB) above a written global bound: placed on the global one.
        let found = problems("[network]\nsubnet = \"10.0.0.0/24\"\n[hold]\nmax_bytes = 1000\n");
        assert_eq!((found[0].0, found[0].1), (4, 13), "{found:?}");
        assert!(
            found[0]
                .2
                .starts_with("max_bytes_per_host (4194304) is above max_bytes (1000)")
        );
    }
}
