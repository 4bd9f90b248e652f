//! The operator's configuration: the TOML schema, its defaults, and validation.
//!
//! Parsing happens in two passes. `serde` reads the file into the `raw` structs, whose fields keep
//! their byte spans (`toml::Spanned`), rejecting syntax errors and unknown keys; then each section
//! (`network`, `host`, `hold`, `wake`, `agent`) checks what serde cannot (addresses inside the
//! subnet, probe syntax, durations) and this file checks across hosts (unique names and
//! addresses). Every problem is reported, each with its line and column, so that an operator fixes
//! a file in one round. Values parse themselves (`values`, `probe`, `crate::runtime::Tier`) and
//! reach the sections through the spanned-field helpers of `field`; `error` holds what a failure
//! looks like. Nothing else in the agent sees the raw structs.

mod agent;
mod allow;
mod cluster;
mod compose;
pub(crate) mod container;
mod depends;
mod dns;
mod error;
mod field;
mod hold;
mod host;
mod limits;
mod network;
mod probe;
mod raw;
mod values;
mod wake;
mod warnings;

use std::{
    collections::{HashMap, HashSet},
    net::Ipv4Addr,
    ops::Range,
    path::Path,
};

pub use self::{
    agent::{AgentConfig, DEFAULT_METRICS, parse_metrics_address},
    cluster::{ClusterConfig, Metrics as ClusterMetrics, NodeName},
    dns::{DnsConfig, DnsConfigError},
    error::{ConfigError, FieldError, LoadError, Problem},
    hold::HoldConfig,
    host::{
        BadDependency, DEFAULT_IDLE_TIMEOUT, DEFAULT_MIN_WARM, DEFAULT_READY_POLL,
        DEFAULT_WAKE_TIMEOUT, Dependency, HostConfig,
    },
    limits::{LimitsConfig, WakeRate},
    network::{DEFAULT_BRIDGE_NAME, DEFAULT_NETWORK_NAME, NetworkConfig},
    probe::{BadProbe, ReadyProbe},
    values::{BadMetricsAddress, MAX_DURATION, MAX_NETWORK_NAME},
    wake::{PrewakeMode, WakeConfig},
};
use self::{
    error::line_column,
    field::{Report, span},
};
pub use crate::runtime::Tier;

/// Which front end reads a configuration file: imag's TOML or a compose file.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Format {
    #[default]
    Toml,
    Compose,
}

impl Format {
    /// Guessed from the file's name (`.yml`, `.yaml`: compose), for files named without saying
    /// which they are (`--config`, the running agent's own file).
    pub fn of(path: &Path) -> Format {
        match path.extension().and_then(|e| e.to_str()) {
            Some("yml" | "yaml") => Format::Compose,
            _ => Format::Toml,
        }
    }
}

/// A validated configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    pub network: NetworkConfig,
    pub hosts: Vec<HostConfig>,
    pub hold: HoldConfig,
    pub wake: WakeConfig,
    pub agent: AgentConfig,
    /// The agent's DNS server for the hosts' names (`[dns]`).
    pub dns: DnsConfig,
    /// The budget of warm hosts and the wake rate limits (`[limits]`).
    pub limits: LimitsConfig,
    /// Several nodes sharing the network (`[cluster]`); `None`: this agent runs alone.
    pub cluster: Option<ClusterConfig>,
    /// Settings that are valid but do not do what they seem to (see `warnings.rs`).
    pub warnings: Vec<Problem>,
}

impl Config {
    /// Reads and validates a configuration file.
    pub fn load(path: &Path) -> Result<Config, LoadError> {
        let text = std::fs::read_to_string(path).map_err(|source| LoadError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Ok(Config::parse(&text, &path.display().to_string())?)
    }

    /// Parses and validates configuration text; `origin` names it in error messages.
    pub fn parse(text: &str, origin: &str) -> Result<Config, ConfigError> {
        let locate = |span: Option<Range<usize>>, message: String| {
            let (line, column) = span.map_or((0, 0), |s| line_column(text, s.start));
            Problem {
                line,
                column,
                message,
            }
        };
        let raw: raw::Config = toml::from_str(text).map_err(|err| ConfigError {
            origin: origin.to_string(),
            problems: vec![locate(err.span(), err.message().trim_end().to_string())],
        })?;
        from_raw(&raw, text, origin, Vec::new(), Vec::new())
    }

    /// Reads and validates a configuration file written in `format`.
    pub fn load_as(path: &Path, format: Format) -> Result<Config, LoadError> {
        match format {
            Format::Toml => Config::load(path),
            Format::Compose => Config::load_compose(path),
        }
    }

    /// Reads and validates a compose file as the configuration (see `compose/mod.rs`): the
    /// variables of the agent's environment and of a `.env` file next to it are interpolated.
    pub fn load_compose(path: &Path) -> Result<Config, LoadError> {
        compose::load(path)
    }

    /// [`Config::load_compose`] without the file system: compose `text` with the variables of
    /// `env` (in place of the agent's environment) and of `dotenv`, the text of a `.env` file
    /// and the path that names it in messages. Relative `env_file` paths start at `dir`.
    pub fn parse_compose(
        text: &str,
        origin: &str,
        env: impl IntoIterator<Item = (String, String)>,
        dotenv: Option<(&Path, &str)>,
        dir: &Path,
    ) -> Result<Config, ConfigError> {
        compose::parse_with_env(text, origin, env, dotenv, dir)
    }

    pub fn host(&self, name: &str) -> Option<&HostConfig> {
        self.hosts.iter().find(|h| h.name == name)
    }
}

/// The second pass of every front end: validates `raw` (whose spans are byte offsets into
/// `text`), adding the front end's own `problems` and `warnings`.
fn from_raw(
    raw: &raw::Config,
    text: &str,
    origin: &str,
    mut problems: Vec<Problem>,
    mut extra_warnings: Vec<Problem>,
) -> Result<Config, ConfigError> {
    let locate = |span: Option<Range<usize>>, message: String| {
        let (line, column) = span.map_or((0, 0), |s| line_column(text, s.start));
        Problem {
            line,
            column,
            message,
        }
    };
    let config = validate(raw, &mut |span, message| {
        problems.push(locate(span, message));
    });
    match config {
        Some(mut config) if problems.is_empty() => {
            config.warnings = warnings::warnings(raw, &config, &locate);
            config.warnings.append(&mut extra_warnings);
            Ok(config)
        }
        _ => {
            // Stable: problems at one place keep the order in which they were found.
            problems.sort_by_key(|p| (p.line, p.column));
            Err(ConfigError {
                origin: origin.to_string(),
                problems,
            })
        }
    }
}

/// Checks everything serde cannot; reports each problem and returns the config if it could be
/// built at all (the caller discards it when anything was reported).
fn validate(raw: &raw::Config, report: &mut Report<'_>) -> Option<Config> {
    let network = network::validate(&raw.network, report);
    let mut hosts = Vec::with_capacity(raw.host.len());
    let mut names: HashSet<&str> = HashSet::new();
    let mut addresses: HashMap<Ipv4Addr, &str> = HashMap::new();
    for host in &raw.host {
        let h = host.get_ref();
        let name = h.name.get_ref().as_str();
        if !names.insert(name) {
            report(
                span(&h.name),
                format!("duplicate host name {name:?}: every host needs its own name"),
            );
        }
        if let Ok(addr) = h.address.get_ref().parse::<Ipv4Addr>()
            && let Some(other) = addresses.insert(addr, name)
        {
            report(
                span(&h.address),
                format!(
                    "hosts {other:?} and {name:?} share the address {addr}: give each host its \
                     own address"
                ),
            );
        }
        if let Some(host) = host::validate(host, network.as_ref(), report) {
            hosts.push(host);
        }
    }
    depends::check(raw, &hosts, report);
    allow::resolve(raw, network.as_ref(), &mut hosts, report);
    depends::check_wakes_with(raw, &hosts, report);
    capacity(raw, &hosts, report);
    let hold = hold::validate(raw.hold.as_ref(), report);
    let wake = wake::validate(raw.wake.as_ref(), report);
    let agent = agent::validate(raw.agent.as_ref(), report);
    let limits = limits::validate(raw.limits.as_ref(), report);
    let cluster = cluster::validate(raw.cluster.as_ref(), report);
    let dns = network
        .as_ref()
        .and_then(|n| raw.dns.clone().unwrap_or_default().resolve(&n.name, report));
    Some(Config {
        network: network?,
        hosts,
        hold: hold?,
        wake: wake?,
        agent: agent?,
        dns: dns?,
        limits: limits?,
        cluster: cluster?,
        warnings: Vec::new(),
    })
}

/// Checks that the datapath's maps hold what the configuration asks of them: every host in
/// `HOSTS`, every (host, ignored peer) pair in the `IDLE_IGNORE` trie, every (host, allowed
/// source) pair in `ALLOW`. Each overflow is placed where the count first exceeds the map.
fn capacity(raw: &raw::Config, hosts: &[HostConfig], report: &mut Report<'_>) {
    let max_hosts = imag_common::MAX_HOSTS as usize;
    if let Some(first_extra) = raw.host.get(max_hosts) {
        report(
            span(&first_extra.get_ref().name),
            format!(
                "{} hosts are configured, but the datapath holds at most {max_hosts}: split them \
                 over several networks (one agent each)",
                raw.host.len()
            ),
        );
    }
    let tries = [
        (
            "idle_ignore",
            imag_common::MAX_IDLE_IGNORE as usize,
            "ignored peers",
        ),
        (
            "allow_from",
            imag_common::MAX_ALLOW as usize,
            "allowed sources",
        ),
    ];
    for (key, max, what) in tries {
        let mut total = 0usize;
        for host in hosts {
            let entries: HashSet<&ipnet::Ipv4Net> = if key == "idle_ignore" {
                host.idle_ignore.iter().collect()
            } else {
                host.allow_from.iter().flatten().collect()
            };
            total += entries.len();
            if total > max {
                let raw_host = raw.host.iter().map(toml::Spanned::get_ref);
                let place = raw_host
                    .filter(|h| h.name.get_ref() == &host.name)
                    .map(|h| {
                        let list = if key == "idle_ignore" {
                            &h.idle_ignore
                        } else {
                            &h.allow_from
                        };
                        list.as_ref()
                            .and_then(|l| l.first())
                            .map_or_else(|| span(&h.name), span)
                    })
                    .next()
                    .flatten();
                report(
                    place,
                    format!(
                        "{key} entries add up to more than the datapath's {max} {what} (over all \
                         hosts) at host {:?}: use fewer, wider prefixes",
                        host.name
                    ),
                );
                break;
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::time::Duration;

    use super::*;

    const GOOD: &str = r#"
[network]
subnet = "10.77.0.0/24"

[[host]]
name = "web"
address = "10.77.0.10"
image = "imag-example/hello"
command = ["/hello", "--port", "8080"]
env = { GREETING = "hi" }
ports = [8080]
idle_timeout = "5m"
"#;

    /// Every problem `text` has, as (line, column, message); panics when it has none.
    pub(crate) fn problems(text: &str) -> Vec<(usize, usize, String)> {
        Config::parse(text, "test.toml")
            .expect_err("config should be rejected")
            .problems
            .into_iter()
            .map(|p| (p.line, p.column, p.message))
            .collect()
    }

    #[test]
    fn parses_the_documented_example() {
        let config = Config::parse(GOOD, "test.toml").unwrap();
        assert_eq!(config.network.name, "imag");
        assert_eq!(config.network.bridge, "imag0");
        assert_eq!(config.network.gateway, Ipv4Addr::new(10, 77, 0, 1));
        let web = config.host("web").unwrap();
        assert_eq!(web.address, Ipv4Addr::new(10, 77, 0, 10));
        assert_eq!(
            web.ready,
            ReadyProbe::Tcp(8080),
            "ready defaults to tcp on the first port"
        );
        assert_eq!(web.idle_timeout, Some(Duration::from_mins(5)));
        assert_eq!(web.wake_timeout, DEFAULT_WAKE_TIMEOUT);
        assert!(!web.proxy_arp, "proxy ARP is opt-in");
        assert!(web.answer_ping, "pings are answered by default");
        assert_eq!(config.hold, HoldConfig::default());
        assert_eq!(config.wake, WakeConfig::default());
        assert_eq!(web.env.get("GREETING").map(String::as_str), Some("hi"));
        assert_eq!(
            web.command.as_deref(),
            Some(&["/hello".to_string(), "--port".into(), "8080".into()][..])
        );
    }

    #[test]
    fn unknown_key_is_reported_with_its_position() {
        let text = "[network]\nsubnet = \"10.0.0.0/24\"\n[[host]]\nname = \"a\"\naddress = \
                    \"10.0.0.5\"\nimage = \"x\"\nimgae = \"y\"\n";
        let found = problems(text);
        assert_eq!(found.len(), 1);
        assert_eq!((found[0].0, found[0].1), (7, 1));
        assert!(found[0].2.contains("unknown field `imgae`"), "{found:?}");
    }

    #[test]
    fn syntax_error_is_reported_with_its_position() {
        let found = problems("[network]\nsubnet = \"10.0.0.0/24\n");
        assert_eq!(found[0].0, 2, "{found:?}");
    }

    #[test]
    fn every_semantic_problem_is_reported_at_once() {
        let text = r#"[network]
subnet = "10.77.0.0/24"

[[host]]
name = "a"
address = "10.78.0.5"
image = "x"
wake_timeout = "soon"

[[host]]
name = "b"
address = "10.77.0.9"
image = "x"
ready = "http:80"

[[host]]
name = "b"
address = "10.77.0.9"
image = "x"
idle_timeout = "5 parsecs"
"#;
        let found = problems(text);
        let summary: Vec<(usize, usize)> = found.iter().map(|p| (p.0, p.1)).collect();
        assert_eq!(
            summary,
            vec![(6, 11), (8, 16), (14, 9), (17, 8), (18, 11), (20, 16)],
            "{found:#?}"
        );
        assert!(found[0].2.contains("outside the subnet 10.77.0.0/24"));
        assert!(
            found[1]
                .2
                .contains("wake_timeout \"soon\" is not a duration")
        );
        assert!(found[2].2.contains("ready probe \"http:80\""));
        assert!(
            found
                .iter()
                .any(|p| p.2.contains("duplicate host name \"b\""))
        );
        assert!(
            found
                .iter()
                .any(|p| p.2.contains("share the address 10.77.0.9"))
        );
        assert!(found[5].2.contains("idle_timeout \"5 parsecs\""));
    }

    #[test]
    fn missing_network_section_is_reported() {
        let found = problems("[[host]]\nname = \"a\"\naddress = \"10.0.0.2\"\nimage = \"x\"\n");
        assert!(found[0].2.contains("missing field `network`"), "{found:?}");
    }

    #[test]
    fn hold_and_wake_sections() {
        let text = r#"[network]
subnet = "10.0.0.0/24"
[hold]
max_packets_per_host = 8
max_bytes_per_host = 50000
max_bytes = 100000
[wake]
backoff = "200ms"
backoff_max = "2s"
"#;
        let config = Config::parse(text, "t").unwrap();
        assert_eq!(config.hold.max_packets_per_host, 8);
        assert_eq!(config.hold.max_bytes, 100_000);
        assert_eq!(config.hold.max_packets, HoldConfig::default().max_packets);
        assert_eq!(config.wake.backoff, Duration::from_millis(200));
        assert_eq!(config.wake.backoff_max, Duration::from_secs(2));

        let bad = "[network]\nsubnet = \"10.0.0.0/24\"\n[hold]\nmax_packets = 0\n[wake]\nbackoff = \"1m\"\nbackoff_max = \"1s\"\n";
        let found = problems(bad);
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(found[0].2.contains("max_packets must be at least 1"));
        assert!(found[1].2.contains("longer than backoff_max"));
    }

    #[test]
    fn more_hosts_than_the_datapath_holds_are_refused() {
        use std::fmt::Write as _;
        let mut text = String::from("[network]\nsubnet = \"10.0.0.0/8\"\n");
        let count = imag_common::MAX_HOSTS as usize + 1;
        for i in 0..count {
            let [_, a, b, c] = (0x0a00_0002 + u32::try_from(i).unwrap()).to_be_bytes();
            write!(
                text,
                "[[host]]\nname = \"h{i}\"\naddress = \"10.{a}.{b}.{c}\"\nimage = \"x\"\n"
            )
            .unwrap();
        }
        let found = problems(&text);
        assert_eq!(found.len(), 1, "{:?}", &found[..found.len().min(3)]);
        // The first host beyond the maps: 2 header lines, 4 lines per host.
        assert_eq!((found[0].0, found[0].1), (2 + 4 * 65_536 + 2, 8));
        assert!(
            found[0]
                .2
                .starts_with("65537 hosts are configured, but the datapath holds at most 65536"),
            "{}",
            found[0].2
        );
    }

    #[test]
    fn more_ignored_peers_than_the_trie_holds_are_refused() {
        use std::fmt::Write as _;
        // 1000 prefixes per host (network default) and 5 hosts: 5000 > 4096 at the fifth host.
        let peers: Vec<String> = (0..1000)
            .map(|i| format!("\"10.9.{}.{}\"", i / 250, i % 250))
            .collect();
        let mut text = format!(
            "[network]\nsubnet = \"10.0.0.0/24\"\nidle_ignore = [{}]\n",
            peers.join(", ")
        );
        for i in 0..5 {
            write!(
                text,
                "[[host]]\nname = \"h{i}\"\naddress = \"10.0.0.{}\"\nimage = \"x\"\n",
                10 + i
            )
            .unwrap();
        }
        let found = problems(&text);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!((found[0].0, found[0].1), (3 + 4 * 4 + 2, 8), "{found:?}");
        assert!(
            found[0]
                .2
                .starts_with("idle_ignore entries add up to more than the datapath's 4096")
        );
        // Written on the host: placed at its list.
        let text = text.replacen(
            "name = \"h4\"\n",
            &format!("name = \"h4\"\nidle_ignore = [{}]\n", peers.join(", ")),
            1,
        );
        let found = problems(&text);
        assert_eq!((found[0].0, found[0].1), (3 + 4 * 4 + 3, 16), "{found:?}");
    }

    #[test]
    fn error_display_names_file_line_and_column() {
        let err = Config::parse("[network]\nsubnet = \"x\"\n", "imag.toml").unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with("imag.toml has 1 problem:"), "{text}");
        assert!(text.contains("imag.toml:2:10: subnet \"x\""), "{text}");
    }
}
