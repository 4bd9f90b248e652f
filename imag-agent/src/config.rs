//! The operator's configuration: the TOML schema, its defaults, and validation.
//!
//! Parsing happens in two passes. `serde` reads the file into `raw` structs whose fields keep their
//! byte spans (`toml::Spanned`), rejecting syntax errors and unknown keys; then `validate` checks
//! what serde cannot (addresses inside the subnet, unique names and addresses, probe syntax,
//! durations) and reports *every* problem it finds, each with its line and column, so that an
//! operator fixes a file in one round. Nothing else in the agent sees the raw structs.

use std::{
    collections::{BTreeMap, HashMap},
    fmt,
    net::Ipv4Addr,
    ops::Range,
    path::Path,
    time::Duration,
};

use ipnet::Ipv4Net;
use toml::Spanned;

pub use crate::runtime::Tier;

/// Default Docker network name.
pub const DEFAULT_NETWORK_NAME: &str = "imag";
/// Default name of the Linux bridge behind the Docker network.
pub const DEFAULT_BRIDGE_NAME: &str = "imag0";
/// Default time a wake may take from the start request to ready before it counts as failed.
pub const DEFAULT_WAKE_TIMEOUT: Duration = Duration::from_secs(30);

/// A validated configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    pub network: NetworkConfig,
    pub hosts: Vec<HostConfig>,
    pub hold: HoldConfig,
    pub wake: WakeConfig,
    pub agent: AgentConfig,
}

/// Default address of the Prometheus endpoint: loopback only.
pub const DEFAULT_METRICS: &str = "127.0.0.1:9477";

/// The agent's own endpoints (`[agent]`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AgentConfig {
    /// Where `/metrics` is served; `None` when turned off (`metrics = "off"`).
    pub metrics: Option<std::net::SocketAddr>,
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig {
            metrics: Some(DEFAULT_METRICS.parse().expect("a valid address")),
        }
    }
}

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
            backoff_max: Duration::from_secs(300),
            ready_events: true,
            fast_thaw: true,
        }
    }
}

/// Default poll interval of ready probes (the fallback when readiness events are on).
pub const DEFAULT_READY_POLL: Duration = Duration::from_millis(10);
/// Default shortest time a woken host stays warm before idleness may put it to sleep.
pub const DEFAULT_MIN_WARM: Duration = Duration::from_secs(30);

#[derive(Clone, Debug, PartialEq)]
pub struct NetworkConfig {
    /// Name of the Docker network the agent creates or reuses.
    pub name: String,
    /// Name of the Linux bridge interface behind that network.
    pub bridge: String,
    /// The imaginary address space.
    pub subnet: Ipv4Net,
    /// The bridge's own address (the first address of the subnet unless configured).
    pub gateway: Ipv4Addr,
    /// Default for hosts: answer ARP for them on attach interfaces while they are not warm.
    pub proxy_arp: bool,
    /// Default for hosts: answer pings for them while they are not warm.
    pub answer_ping: bool,
    /// Default for hosts: peers whose traffic does not keep a host awake.
    pub idle_ignore: Vec<Ipv4Net>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct HostConfig {
    pub name: String,
    pub address: Ipv4Addr,
    pub image: String,
    /// Replaces the image's command when set.
    pub command: Option<Vec<String>>,
    pub env: BTreeMap<String, String>,
    pub ports: Vec<u16>,
    pub ready: ReadyProbe,
    /// How long a wake may take from the start request to ready; also how long a held packet
    /// may wait before it is discarded.
    pub wake_timeout: Duration,
    /// Time without packets and without open TCP connections after which the host sleeps.
    pub idle_timeout: Option<Duration>,
    /// Where it sleeps.
    pub sleep: Tier,
    /// With `sleep = "pause"`: stop the paused container after this long.
    pub stop_after: Option<Duration>,
    /// Shortest time a woken host stays warm before idleness may put it to sleep.
    pub min_warm: Duration,
    /// Peers (health checkers) whose traffic does not keep the host awake.
    pub idle_ignore: Vec<Ipv4Net>,
    /// Poll interval of the ready probe.
    pub ready_poll: Duration,
    /// Answer ARP for this host on attach interfaces while it is not warm (the bridge always
    /// answers).
    pub proxy_arp: bool,
    /// Answer pings from the datapath while not warm, without waking the host.
    pub answer_ping: bool,
}

/// How the agent decides that a started container can take its held packets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadyProbe {
    /// A TCP connection to the host's address and this port succeeds.
    Tcp(u16),
    /// A UDP socket is bound to this port inside the container (for services that never listen
    /// on TCP).
    Udp(u16),
    /// This long after the engine reports the container running.
    Delay(Duration),
    /// The engine reports the container running.
    Running,
}

impl fmt::Display for ReadyProbe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReadyProbe::Tcp(port) => write!(f, "tcp:{port}"),
            ReadyProbe::Udp(port) => write!(f, "udp:{port}"),
            ReadyProbe::Delay(d) => write!(f, "delay:{}", humantime::format_duration(*d)),
            ReadyProbe::Running => write!(f, "running"),
        }
    }
}

/// One problem in a configuration file, with where it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// 1-based line, or 0 when the problem has no single place.
    pub line: usize,
    /// 1-based column (in characters).
    pub column: usize,
    pub message: String,
}

/// Every problem found in a configuration file.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    /// The file the problems are in, for messages ("<inline>" for text without a file).
    pub origin: String,
    pub problems: Vec<Problem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let count = self.problems.len();
        writeln!(
            f,
            "{} has {count} problem{}:",
            self.origin,
            if count == 1 { "" } else { "s" }
        )?;
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            if p.line == 0 {
                write!(f, "  {}: {}", self.origin, p.message)?;
            } else {
                write!(
                    f,
                    "  {}:{}:{}: {}",
                    self.origin, p.line, p.column, p.message
                )?;
            }
        }
        Ok(())
    }
}

/// Errors loading a configuration file.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read the configuration file {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Invalid(#[from] ConfigError),
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
        let mut problems = Vec::new();
        let config = validate(raw, &mut |span, message| {
            problems.push(locate(span, message))
        });
        match config {
            Some(config) if problems.is_empty() => Ok(config),
            _ => {
                problems.sort_by_key(|p| (p.line, p.column));
                Err(ConfigError {
                    origin: origin.to_string(),
                    problems,
                })
            }
        }
    }

    pub fn host(&self, name: &str) -> Option<&HostConfig> {
        self.hosts.iter().find(|h| h.name == name)
    }
}

/// 1-based line and column (in characters) of a byte offset.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[line_start..].chars().count() + 1)
}

/// The file as written, before validation.
mod raw {
    use std::collections::BTreeMap;

    use serde::Deserialize;
    use toml::Spanned;

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Config {
        pub network: Spanned<Network>,
        #[serde(default)]
        pub host: Vec<Spanned<Host>>,
        pub hold: Option<Hold>,
        pub wake: Option<Wake>,
        pub agent: Option<Agent>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Agent {
        pub metrics: Option<Spanned<String>>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Hold {
        pub max_packets_per_host: Option<Spanned<usize>>,
        pub max_bytes_per_host: Option<Spanned<usize>>,
        pub max_packets: Option<Spanned<usize>>,
        pub max_bytes: Option<Spanned<usize>>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Wake {
        pub backoff: Option<Spanned<String>>,
        pub backoff_max: Option<Spanned<String>>,
        pub ready_events: Option<bool>,
        pub fast_thaw: Option<bool>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Network {
        pub subnet: Spanned<String>,
        pub name: Option<Spanned<String>>,
        pub bridge: Option<Spanned<String>>,
        pub gateway: Option<Spanned<String>>,
        pub proxy_arp: Option<bool>,
        pub answer_ping: Option<bool>,
        #[serde(default)]
        pub idle_ignore: Vec<Spanned<String>>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Host {
        pub name: Spanned<String>,
        pub address: Spanned<String>,
        pub image: Spanned<String>,
        pub command: Option<Vec<String>>,
        #[serde(default)]
        pub env: BTreeMap<String, String>,
        #[serde(default)]
        pub ports: Vec<Spanned<u16>>,
        pub ready: Option<Spanned<String>>,
        pub wake_timeout: Option<Spanned<String>>,
        pub idle_timeout: Option<Spanned<String>>,
        pub sleep: Option<Spanned<String>>,
        pub stop_after: Option<Spanned<String>>,
        pub min_warm: Option<Spanned<String>>,
        pub idle_ignore: Option<Vec<Spanned<String>>>,
        pub ready_poll: Option<Spanned<String>>,
        pub proxy_arp: Option<bool>,
        pub answer_ping: Option<bool>,
    }
}

type Report<'a> = dyn FnMut(Option<Range<usize>>, String) + 'a;

fn span<T>(value: &Spanned<T>) -> Option<Range<usize>> {
    Some(value.span())
}

/// Checks everything serde cannot; reports each problem and returns the config if it could be
/// built at all (the caller discards it when anything was reported).
fn validate(raw: raw::Config, report: &mut Report<'_>) -> Option<Config> {
    let network = validate_network(&raw.network, report);
    let mut hosts = Vec::with_capacity(raw.host.len());
    let mut names: HashMap<&str, ()> = HashMap::new();
    let mut addresses: HashMap<Ipv4Addr, &str> = HashMap::new();
    for host in &raw.host {
        let h = host.get_ref();
        let name = h.name.get_ref().as_str();
        if names.insert(name, ()).is_some() {
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
        if let Some(host) = validate_host(host, network.as_ref(), report) {
            hosts.push(host);
        }
    }
    let hold = validate_hold(raw.hold.as_ref(), report);
    let wake = validate_wake(raw.wake.as_ref(), report);
    let agent = match raw.agent.as_ref().and_then(|a| a.metrics.as_ref()) {
        None => Some(AgentConfig::default()),
        Some(text) => parse_metrics_address(text.get_ref())
            .map(|metrics| AgentConfig { metrics })
            .map_err(|message| report(span(text), message))
            .ok(),
    };
    Some(Config {
        network: network?,
        hosts,
        hold: hold?,
        wake: wake?,
        agent: agent?,
    })
}

fn validate_network(raw: &Spanned<raw::Network>, report: &mut Report<'_>) -> Option<NetworkConfig> {
    let net = raw.get_ref();
    let subnet = match net.subnet.get_ref().parse::<Ipv4Net>() {
        Ok(subnet) if subnet.prefix_len() > 30 => {
            report(
                span(&net.subnet),
                format!(
                    "subnet {} is too small: it needs room for a gateway and hosts (use /30 or \
                     larger)",
                    subnet
                ),
            );
            None
        }
        Ok(subnet) if subnet.network() != subnet.addr() => {
            report(
                span(&net.subnet),
                format!(
                    "subnet {} has host bits set: did you mean {}?",
                    subnet,
                    subnet.trunc()
                ),
            );
            None
        }
        Ok(subnet) => Some(subnet),
        Err(_) => {
            report(
                span(&net.subnet),
                format!(
                    "subnet {:?} is not an IPv4 network in CIDR form (like \"10.77.0.0/24\")",
                    net.subnet.get_ref()
                ),
            );
            None
        }
    };
    let name = net
        .name
        .as_ref()
        .map_or(DEFAULT_NETWORK_NAME.to_string(), |n| n.get_ref().clone());
    if !is_docker_name(&name) {
        report(
            net.name.as_ref().and_then(span),
            format!(
                "network name {name:?} is not a valid Docker network name (letters, digits, '_', \
                 '.', '-')"
            ),
        );
    }
    let bridge = net
        .bridge
        .as_ref()
        .map_or(DEFAULT_BRIDGE_NAME.to_string(), |b| b.get_ref().clone());
    if bridge.is_empty()
        || bridge.len() > 15
        || bridge.contains(['/', ' ', ':'])
        || bridge.chars().any(char::is_whitespace)
    {
        report(
            net.bridge.as_ref().and_then(span),
            format!(
                "bridge name {bridge:?} is not a valid interface name (1-15 characters, no '/', \
                 ':' or spaces)"
            ),
        );
    }
    let subnet = subnet?;
    let gateway = match &net.gateway {
        None => subnet.hosts().next()?,
        Some(gw) => match gw.get_ref().parse::<Ipv4Addr>() {
            Ok(addr) if subnet.contains(&addr) && addr != subnet.network() => addr,
            Ok(addr) => {
                report(
                    span(gw),
                    format!("gateway {addr} lies outside the subnet {subnet}"),
                );
                return None;
            }
            Err(_) => {
                report(
                    span(gw),
                    format!("gateway {:?} is not an IPv4 address", gw.get_ref()),
                );
                return None;
            }
        },
    };
    Some(NetworkConfig {
        name,
        bridge,
        subnet,
        gateway,
        proxy_arp: net.proxy_arp.unwrap_or(false),
        answer_ping: net.answer_ping.unwrap_or(true),
        idle_ignore: prefixes(&net.idle_ignore, report)?,
    })
}

fn validate_host(
    raw: &Spanned<raw::Host>,
    network: Option<&NetworkConfig>,
    report: &mut Report<'_>,
) -> Option<HostConfig> {
    let host = raw.get_ref();
    let name = host.name.get_ref().clone();
    let mut ok = true;
    if !is_docker_name(&name) {
        report(
            span(&host.name),
            format!(
                "host name {name:?} must be letters, digits, '_', '.' or '-' (it names the \
                 container)"
            ),
        );
        ok = false;
    }
    let address = match host.address.get_ref().parse::<Ipv4Addr>() {
        Ok(addr) => {
            if let Some(net) = network {
                if !net.subnet.contains(&addr) {
                    report(
                        span(&host.address),
                        format!(
                            "address {addr} of host {name:?} lies outside the subnet {}",
                            net.subnet
                        ),
                    );
                    ok = false;
                } else if addr == net.subnet.network() || addr == net.subnet.broadcast() {
                    report(
                        span(&host.address),
                        format!(
                            "address {addr} of host {name:?} is the subnet's network or broadcast \
                             address"
                        ),
                    );
                    ok = false;
                } else if addr == net.gateway {
                    report(
                        span(&host.address),
                        format!(
                            "address {addr} of host {name:?} is the network's gateway (the \
                             bridge's own address)"
                        ),
                    );
                    ok = false;
                }
            }
            Some(addr)
        }
        Err(_) => {
            report(
                span(&host.address),
                format!(
                    "address {:?} of host {name:?} is not an IPv4 address",
                    host.address.get_ref()
                ),
            );
            None
        }
    };
    if host.image.get_ref().trim().is_empty() {
        report(
            span(&host.image),
            format!("host {name:?} has an empty image"),
        );
        ok = false;
    }
    if let Some(command) = &host.command
        && command.is_empty()
    {
        report(
            span(&host.name),
            format!("host {name:?} has an empty command: remove the key to use the image's own"),
        );
        ok = false;
    }
    for port in &host.ports {
        if *port.get_ref() == 0 {
            report(span(port), "port 0 is not a port".to_string());
            ok = false;
        }
    }
    let ports: Vec<u16> = host.ports.iter().map(|p| *p.get_ref()).collect();
    let ready = match &host.ready {
        Some(probe) => match parse_probe(probe.get_ref()) {
            Ok(probe) => Some(probe),
            Err(message) => {
                report(span(probe), message);
                None
            }
        },
        None => Some(match ports.first() {
            Some(port) => ReadyProbe::Tcp(*port),
            None => ReadyProbe::Running,
        }),
    };
    let wake_timeout = match &host.wake_timeout {
        None => Some(DEFAULT_WAKE_TIMEOUT),
        Some(text) => duration(text, "wake_timeout", report),
    };
    let idle_timeout = match &host.idle_timeout {
        None => Some(None),
        Some(text) => duration(text, "idle_timeout", report).map(Some),
    };
    let sleep = match &host.sleep {
        None => Some(Tier::Stopped),
        Some(text) => match text.get_ref().parse::<Tier>() {
            Ok(tier) => Some(tier),
            Err(err) => {
                report(span(text), format!("sleep {err}"));
                None
            }
        },
    };
    let stop_after = match &host.stop_after {
        None => Some(None),
        Some(text) => {
            if sleep.is_some_and(|s| s != Tier::Paused) {
                report(
                    span(text),
                    format!(
                        "stop_after only applies to hosts with sleep = \"pause\" (host {name:?})"
                    ),
                );
                ok = false;
            }
            duration(text, "stop_after", report).map(Some)
        }
    };
    let min_warm = match &host.min_warm {
        None => Some(DEFAULT_MIN_WARM),
        Some(text) => duration_or_zero(text, "min_warm", report),
    };
    let ready_poll = match &host.ready_poll {
        None => Some(DEFAULT_READY_POLL),
        Some(text) => duration(text, "ready_poll", report),
    };
    let idle_ignore = match &host.idle_ignore {
        None => Some(network.map(|n| n.idle_ignore.clone()).unwrap_or_default()),
        Some(list) => prefixes(list, report),
    };
    if !ok {
        return None;
    }
    Some(HostConfig {
        name,
        address: address?,
        image: host.image.get_ref().trim().to_string(),
        command: host.command.clone(),
        env: host.env.clone(),
        ports,
        ready: ready?,
        wake_timeout: wake_timeout?,
        idle_timeout: idle_timeout?,
        sleep: sleep?,
        stop_after: stop_after?,
        min_warm: min_warm?,
        idle_ignore: idle_ignore?,
        ready_poll: ready_poll?,
        proxy_arp: host
            .proxy_arp
            .unwrap_or(network.is_some_and(|n| n.proxy_arp)),
        answer_ping: host
            .answer_ping
            .unwrap_or(network.is_none_or(|n| n.answer_ping)),
    })
}

/// Parses a list of IPv4 prefixes (`"10.0.9.0/24"`, or a bare address for a /32).
fn prefixes(list: &[Spanned<String>], report: &mut Report<'_>) -> Option<Vec<Ipv4Net>> {
    let mut ok = true;
    let mut out = Vec::with_capacity(list.len());
    for item in list {
        let text = item.get_ref();
        let parsed = text
            .parse::<Ipv4Net>()
            .or_else(|_| text.parse::<Ipv4Addr>().map(Ipv4Net::from));
        match parsed {
            Ok(net) => out.push(net.trunc()),
            Err(_) => {
                report(
                    span(item),
                    format!("{text:?} is not an IPv4 prefix (like \"10.0.9.0/24\") or address"),
                );
                ok = false;
            }
        }
    }
    ok.then_some(out)
}

/// A duration that may be zero (e.g. `min_warm = "0s"`).
fn duration_or_zero(
    text: &Spanned<String>,
    key: &str,
    report: &mut Report<'_>,
) -> Option<Duration> {
    match humantime::parse_duration(text.get_ref()) {
        Ok(d) => Some(d),
        Err(err) => {
            report(
                span(text),
                format!(
                    "{key} {:?} is not a duration ({err}); write it like \"30s\", \"5m\" or \
                     \"0s\"",
                    text.get_ref()
                ),
            );
            None
        }
    }
}

fn duration(text: &Spanned<String>, key: &str, report: &mut Report<'_>) -> Option<Duration> {
    match humantime::parse_duration(text.get_ref()) {
        Ok(d) if d.is_zero() => {
            report(span(text), format!("{key} must be longer than zero"));
            None
        }
        Ok(d) => Some(d),
        Err(err) => {
            report(
                span(text),
                format!(
                    "{key} {:?} is not a duration ({err}); write it like \"30s\", \"5m\" or \
                     \"500ms\"",
                    text.get_ref()
                ),
            );
            None
        }
    }
}

/// Parses a ready probe: `tcp:PORT`, `udp:PORT`, `delay:DURATION` or `running`.
pub fn parse_probe(text: &str) -> Result<ReadyProbe, String> {
    let bad = || {
        format!(
            "ready probe {text:?} is not one of \"tcp:PORT\", \"udp:PORT\", \"delay:DURATION\" or \
             \"running\" (e.g. \"tcp:8080\", \"udp:53\", \"delay:200ms\")"
        )
    };
    let port = |p: &str| p.parse::<u16>().ok().filter(|p| *p != 0).ok_or_else(bad);
    match text.split_once(':') {
        None if text == "running" => Ok(ReadyProbe::Running),
        Some(("tcp", p)) => Ok(ReadyProbe::Tcp(port(p)?)),
        Some(("udp", p)) => Ok(ReadyProbe::Udp(port(p)?)),
        Some(("delay", d)) => humantime::parse_duration(d)
            .map(ReadyProbe::Delay)
            .map_err(|_| bad()),
        _ => Err(bad()),
    }
}

fn validate_hold(raw: Option<&raw::Hold>, report: &mut Report<'_>) -> Option<HoldConfig> {
    let defaults = HoldConfig::default();
    let Some(raw) = raw else {
        return Some(defaults);
    };
    let mut ok = true;
    let mut limit = |value: &Option<Spanned<usize>>, default: usize, key: &str| match value {
        Some(v) if *v.get_ref() == 0 => {
            report(span(v), format!("{key} must be at least 1"));
            ok = false;
            default
        }
        Some(v) => *v.get_ref(),
        None => default,
    };
    let hold = HoldConfig {
        max_packets_per_host: limit(
            &raw.max_packets_per_host,
            defaults.max_packets_per_host,
            "max_packets_per_host",
        ),
        max_bytes_per_host: limit(
            &raw.max_bytes_per_host,
            defaults.max_bytes_per_host,
            "max_bytes_per_host",
        ),
        max_packets: limit(&raw.max_packets, defaults.max_packets, "max_packets"),
        max_bytes: limit(&raw.max_bytes, defaults.max_bytes, "max_bytes"),
    };
    ok.then_some(hold)
}

fn validate_wake(raw: Option<&raw::Wake>, report: &mut Report<'_>) -> Option<WakeConfig> {
    let defaults = WakeConfig::default();
    let Some(raw) = raw else {
        return Some(defaults);
    };
    let backoff = match &raw.backoff {
        Some(text) => duration(text, "backoff", report),
        None => Some(defaults.backoff),
    };
    let backoff_max = match &raw.backoff_max {
        Some(text) => duration(text, "backoff_max", report),
        None => Some(defaults.backoff_max),
    };
    let (backoff, backoff_max) = (backoff?, backoff_max?);
    if backoff > backoff_max {
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

/// Parses where to serve metrics: an address with a port, or "off".
pub fn parse_metrics_address(text: &str) -> Result<Option<std::net::SocketAddr>, String> {
    if text == "off" {
        return Ok(None);
    }
    text.parse().map(Some).map_err(|_| {
        format!(
            "metrics {text:?} is not an address with a port (like \"127.0.0.1:9477\") or \"off\""
        )
    })
}

/// Docker's rule for container and network names.
fn is_docker_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

#[cfg(test)]
mod tests {
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

    fn problems(text: &str) -> Vec<(usize, usize, String)> {
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
        assert_eq!(web.idle_timeout, Some(Duration::from_secs(300)));
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
    fn host_without_ports_is_ready_when_running() {
        let text = "[network]\nsubnet = \"10.0.0.0/24\"\n[[host]]\nname = \"a\"\naddress = \
                    \"10.0.0.5\"\nimage = \"x\"\n";
        let config = Config::parse(text, "t").unwrap();
        assert_eq!(config.hosts[0].ready, ReadyProbe::Running);
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
    fn addresses_reserved_by_the_network_are_rejected() {
        for (addr, why) in [
            ("10.77.0.0", "network or broadcast"),
            ("10.77.0.255", "network or broadcast"),
            ("10.77.0.1", "gateway"),
        ] {
            let text = format!(
                "[network]\nsubnet = \"10.77.0.0/24\"\n[[host]]\nname = \"a\"\naddress = \
                 \"{addr}\"\nimage = \"x\"\n"
            );
            let found = problems(&text);
            assert!(found[0].2.contains(why), "{addr}: {found:?}");
        }
    }

    #[test]
    fn bad_subnets_are_explained() {
        assert!(
            problems("[network]\nsubnet = \"10.77.0.5/24\"\n")[0]
                .2
                .contains("10.77.0.0/24")
        );
        assert!(
            problems("[network]\nsubnet = \"banana\"\n")[0]
                .2
                .contains("CIDR")
        );
        assert!(
            problems("[network]\nsubnet = \"10.0.0.0/31\"\n")[0]
                .2
                .contains("too small")
        );
    }

    #[test]
    fn missing_network_section_is_reported() {
        let found = problems("[[host]]\nname = \"a\"\naddress = \"10.0.0.2\"\nimage = \"x\"\n");
        assert!(found[0].2.contains("missing field `network`"), "{found:?}");
    }

    #[test]
    fn network_defaults_apply_to_hosts_unless_overridden() {
        let text = r#"[network]
subnet = "10.0.0.0/24"
proxy_arp = true
answer_ping = false
[[host]]
name = "a"
address = "10.0.0.5"
image = "x"
[[host]]
name = "b"
address = "10.0.0.6"
image = "x"
proxy_arp = false
answer_ping = true
"#;
        let config = Config::parse(text, "t").unwrap();
        assert!(config.hosts[0].proxy_arp && !config.hosts[0].answer_ping);
        assert!(!config.hosts[1].proxy_arp && config.hosts[1].answer_ping);
    }

    #[test]
    fn lifecycle_keys() {
        let text = r#"[network]
subnet = "10.0.0.0/24"
idle_ignore = ["10.9.0.0/16"]
[[host]]
name = "a"
address = "10.0.0.5"
image = "x"
idle_timeout = "2m"
sleep = "pause"
stop_after = "1h"
min_warm = "0s"
ready_poll = "5ms"
[[host]]
name = "b"
address = "10.0.0.6"
image = "x"
idle_ignore = ["10.1.2.3", "10.8.0.0/24"]
"#;
        let config = Config::parse(text, "t").unwrap();
        let a = &config.hosts[0];
        assert_eq!(a.sleep, Tier::Paused);
        assert_eq!(a.stop_after, Some(Duration::from_secs(3600)));
        assert_eq!(a.min_warm, Duration::ZERO);
        assert_eq!(a.ready_poll, Duration::from_millis(5));
        assert_eq!(
            a.idle_ignore,
            vec!["10.9.0.0/16".parse::<Ipv4Net>().unwrap()],
            "network default"
        );
        let b = &config.hosts[1];
        assert_eq!(b.sleep, Tier::Stopped, "stop by default");
        assert_eq!(b.min_warm, DEFAULT_MIN_WARM);
        assert_eq!(b.ready_poll, DEFAULT_READY_POLL);
        assert_eq!(
            b.idle_ignore,
            vec![
                "10.1.2.3/32".parse::<Ipv4Net>().unwrap(),
                "10.8.0.0/24".parse().unwrap()
            ]
        );
        assert!(config.wake.ready_events && config.wake.fast_thaw);

        let bad = r#"[network]
subnet = "10.0.0.0/24"
[[host]]
name = "a"
address = "10.0.0.5"
image = "x"
sleep = "hibernate"
[[host]]
name = "b"
address = "10.0.0.6"
image = "x"
stop_after = "1h"
idle_ignore = ["nowhere"]
"#;
        let found = problems(bad);
        assert_eq!(found.len(), 3, "{found:?}");
        assert!(found[0].2.contains("sleep \"hibernate\""));
        assert!(found[1].2.contains("stop_after only applies"));
        assert!(found[2].2.contains("\"nowhere\" is not an IPv4 prefix"));
    }

    #[test]
    fn hold_and_wake_sections() {
        let text = r#"[network]
subnet = "10.0.0.0/24"
[hold]
max_packets_per_host = 8
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
    fn probe_syntax() {
        assert_eq!(parse_probe("tcp:80"), Ok(ReadyProbe::Tcp(80)));
        assert_eq!(parse_probe("udp:53"), Ok(ReadyProbe::Udp(53)));
        assert_eq!(
            parse_probe("delay:250ms"),
            Ok(ReadyProbe::Delay(Duration::from_millis(250)))
        );
        assert!(parse_probe("delay:soon").is_err());
        assert!(parse_probe("udp:0").is_err());
        assert_eq!(parse_probe("running"), Ok(ReadyProbe::Running));
        assert!(parse_probe("tcp:0").is_err());
        assert!(parse_probe("tcp:http").is_err());
        assert!(parse_probe("").is_err());
    }

    #[test]
    fn error_display_names_file_line_and_column() {
        let err = Config::parse("[network]\nsubnet = \"x\"\n", "imag.toml").unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with("imag.toml has 1 problem:"), "{text}");
        assert!(text.contains("imag.toml:2:10: subnet \"x\""), "{text}");
    }
}
