//! The `[agent]` section: the agent's own endpoints. `parse_metrics_address` also serves the
//! CLI's `--metrics`, so that both accept and refuse the same text.

use std::net::SocketAddr;

use super::{
    error::FieldError,
    field::{Report, field_or},
    raw,
    values::{BadMetricsAddress, MetricsAddress},
};
use crate::runtime::Engine;

/// Default address of the Prometheus endpoint: loopback only.
pub const DEFAULT_METRICS: &str = "127.0.0.1:9477";

/// The agent's own endpoints (`[agent]`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AgentConfig {
    /// Where `/metrics` is served; `None` when turned off (`metrics = "off"`).
    pub metrics: Option<SocketAddr>,
    /// The container engine that runs the hosts (`engine = "docker"`).
    pub engine: Engine,
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig {
            metrics: Some(DEFAULT_METRICS.parse().expect("a valid address")),
            engine: Engine::default(),
        }
    }
}

/// Parses where to serve metrics: an address with a port, or "off".
pub fn parse_metrics_address(
    text: &str,
) -> Result<Option<SocketAddr>, FieldError<BadMetricsAddress>> {
    text.parse::<MetricsAddress>()
        .map(|MetricsAddress(addr)| addr)
        .map_err(|source| FieldError {
            key: "metrics",
            source,
        })
}

/// Checks `[agent]`; an absent section or key means the defaults.
pub(super) fn validate(raw: Option<&raw::Agent>, report: &mut Report<'_>) -> Option<AgentConfig> {
    let metrics = raw.and_then(|a| a.metrics.as_ref());
    let default = MetricsAddress(AgentConfig::default().metrics);
    let metrics = field_or(metrics, "metrics", default, report);
    let engine = raw.and_then(|a| a.engine.as_ref());
    let engine = field_or(engine, "engine", Engine::default(), report);
    Some(AgentConfig {
        metrics: metrics?.0,
        engine: engine?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, tests::problems};

    #[test]
    fn metrics_address_or_off() {
        let with = |agent: &str| format!("[network]\nsubnet = \"10.0.0.0/24\"\n{agent}");
        let parse = |agent: &str| Config::parse(&with(agent), "t").map(|c| c.agent.metrics);
        assert_eq!(parse(""), Ok(AgentConfig::default().metrics));
        assert_eq!(parse("[agent]\n"), Ok(AgentConfig::default().metrics));
        assert_eq!(parse("[agent]\nmetrics = \"off\"\n"), Ok(None));
        assert_eq!(
            parse("[agent]\nmetrics = \"0.0.0.0:9000\"\n"),
            Ok(Some(SocketAddr::from(([0, 0, 0, 0], 9000))))
        );
        assert_eq!(
            problems(&with("[agent]\nmetrics = \"9000\"\n")),
            vec![(
                4,
                11,
                "metrics \"9000\" is not an address with a port (like \"127.0.0.1:9477\") or \
                 \"off\""
                    .to_string()
            )]
        );
    }

    #[test]
    fn the_cli_reads_the_same_text() {
        assert_eq!(parse_metrics_address("off"), Ok(None));
        assert_eq!(
            parse_metrics_address("127.0.0.1:1"),
            Ok(Some(SocketAddr::from(([127, 0, 0, 1], 1))))
        );
        assert_eq!(
            parse_metrics_address("nowhere").unwrap_err().to_string(),
            "metrics \"nowhere\" is not an address with a port (like \"127.0.0.1:9477\") or \
             \"off\""
        );
    }

    #[test]
    fn the_engine_is_docker_unless_named() {
        let with = |agent: &str| format!("[network]\nsubnet = \"10.0.0.0/24\"\n{agent}");
        let parse = |agent: &str| Config::parse(&with(agent), "t").map(|c| c.agent.engine);
        assert_eq!(parse(""), Ok(Engine::Docker));
        assert_eq!(parse("[agent]\nengine = \"docker\"\n"), Ok(Engine::Docker));
        let found = problems(&with("[agent]\nengine = \"podman\"\n"));
        assert_eq!(found.len(), 1);
        assert_eq!((found[0].0, found[0].1), (4, 10));
        assert!(
            found[0].2.contains("\"podman\" is not a container engine"),
            "{found:?}"
        );
    }
}
