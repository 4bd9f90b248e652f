//! One `[[host]]`: an imaginary host, its container, how it wakes and when it sleeps. Checks that
//! need the network (address inside the subnet, inherited defaults) take the validated
//! `[network]` from `network.rs`; checks across hosts (unique names and addresses) are in
//! `mod.rs`, `depends.rs` and `allow.rs`.

use std::{collections::BTreeMap, net::Ipv4Addr, str::FromStr, time::Duration};

use ipnet::Ipv4Net;
use toml::Spanned;

use super::{
    NetworkConfig, ReadyProbe, Tier, container,
    field::{Report, at_most, field, field_or, items, optional, parse_with, span},
    raw,
    values::{AnyDuration, ExtraHost, HostName, IdleTimeout, NonZeroDuration, Port, Prefix},
};
use crate::runtime::{ContainerOptions, ContainerSpec};

/// Default time a wake may take from the start request to ready before it counts as failed.
pub const DEFAULT_WAKE_TIMEOUT: Duration = Duration::from_secs(30);
/// Default poll interval of ready probes (the fallback when readiness events are on).
pub const DEFAULT_READY_POLL: Duration = Duration::from_millis(10);
/// Default time without traffic after which a warm host sleeps (`idle_timeout = "never"` opts
/// out): a woken host releases what it holds unless told otherwise.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_mins(10);
/// Default shortest time a woken host stays warm before idleness may put it to sleep.
pub const DEFAULT_MIN_WARM: Duration = Duration::from_secs(30);
/// Longest `wake_timeout`: a wake that takes an hour has failed, and held packets wait that long.
pub const MAX_WAKE_TIMEOUT: Duration = Duration::from_hours(1);
/// Longest `ready_poll`: a probe tried less often than every minute is not a probe.
pub const MAX_READY_POLL: Duration = Duration::from_mins(1);
/// Longest `ready = "delay:D"` (it must also be shorter than `wake_timeout` to ever succeed).
pub const MAX_READY_DELAY: Duration = Duration::from_hours(1);

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
    /// Time without packets and without open TCP connections after which the host sleeps
    /// (`None`: "never").
    pub idle_timeout: Option<Duration>,
    /// Where it sleeps.
    pub sleep: Tier,
    /// With `sleep = "pause"`: stop the paused container after this long.
    pub stop_after: Option<Duration>,
    /// With `sleep = "pause"`: page the paused container's memory out to swap after this long
    /// (zero: as soon as it is paused). A wake thaws it as from any pause; its pages come back as
    /// it touches them.
    pub swap_after: Option<Duration>,
    /// With `swap_after`: read the paged-out memory back as the host wakes, all of it at once
    /// beside the process (default), instead of as the process touches it. Without `swap_after`
    /// it means nothing and is ignored (so that compose's `x-imag.hosts` defaults can set it).
    pub swap_prefetch: bool,
    /// Shortest time a woken host stays warm before idleness may put it to sleep.
    pub min_warm: Duration,
    /// Under the budget, lower priorities are evicted first (`priority = N`, default 0).
    pub priority: i64,
    /// Peers (health checkers) whose traffic does not keep the host awake.
    pub idle_ignore: Vec<Ipv4Net>,
    /// The only sources that may reach the host (`allow_from`, names resolved, the gateway
    /// added); `None`: everyone.
    pub allow_from: Option<Vec<Ipv4Net>>,
    /// Poll interval of the ready probe.
    pub ready_poll: Duration,
    /// Answer ARP for this host on attach interfaces while it is not warm (the bridge always
    /// answers).
    pub proxy_arp: bool,
    /// Answer pings from the datapath while not warm, without waking the host.
    pub answer_ping: bool,
    /// Hosts woken with this one, before its own container starts (`depends_on`).
    pub depends_on: Vec<Dependency>,
    /// Hosts started together with this one, in parallel, without waiting for them
    /// (`wakes_with`; unlike `depends_on`, which starts them first and waits).
    pub wakes_with: Vec<String>,
    /// Extra `NAME:ADDRESS` entries of the container's /etc/hosts (compose's `extra_hosts`).
    pub extra_hosts: Vec<String>,
    /// The cluster nodes this host may run on (`nodes`, with `[cluster]`); `None`: every node.
    pub nodes: Option<Vec<String>>,
    /// Volumes, user, limits, capabilities, labels, healthcheck… (`container.rs`): copied into
    /// the container spec as they are.
    pub container: ContainerOptions,
}

/// A host another host needs running before it starts (compose's `depends_on`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dependency {
    pub host: String,
    /// Wait until it is healthy (compose's `condition: service_healthy`), not only started.
    /// imag waits for a dependency's own ready probe either way; with `healthy` that probe is
    /// its healthcheck.
    pub healthy: bool,
}

impl FromStr for Dependency {
    type Err = BadDependency;

    /// `NAME` or `NAME:healthy`.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (host, healthy) = match text.split_once(':') {
            None => (text, false),
            Some((host, "healthy")) => (host, true),
            Some((host, "started")) => (host, false),
            Some(_) => return Err(BadDependency(text.to_string())),
        };
        if host.is_empty() {
            return Err(BadDependency(text.to_string()));
        }
        Ok(Dependency {
            host: host.to_string(),
            healthy,
        })
    }
}

/// A `depends_on` entry that is not `NAME`, `NAME:started` or `NAME:healthy`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a host name, optionally with \":healthy\" or \":started\"")]
pub struct BadDependency(pub String);

impl HostConfig {
    /// The container that runs this host on network `network`.
    pub fn container_spec(&self, network: &str) -> ContainerSpec {
        ContainerSpec {
            name: crate::runtime::container_name(network, &self.name),
            host: self.name.clone(),
            network: network.to_string(),
            address: self.address,
            image: self.image.clone(),
            command: self.command.clone(),
            env: self.env.clone(),
            extra_hosts: self.extra_hosts.clone(),
            options: self.container.clone(),
            swap_prefetch: self.swap_after.is_some() && self.swap_prefetch,
        }
    }
}

/// Checks one host; `network` is `None` when `[network]` itself was unusable (then the address is
/// only checked for syntax).
#[allow(
    clippy::too_many_lines,
    reason = "one host's checks in the order of its keys, each a few lines"
)]
pub(super) fn validate(
    raw: &Spanned<raw::Host>,
    network: Option<&NetworkConfig>,
    report: &mut Report<'_>,
) -> Option<HostConfig> {
    let host = raw.get_ref();
    let name = host.name.get_ref().clone();
    let mut ok = field::<_, HostName>(&host.name, "host name", report).is_some();
    let address = parse_with(&host.address, report, |_| {
        format!(
            "address {:?} of host {name:?} is not an IPv4 address",
            host.address.get_ref()
        )
    });
    if let (Some(addr), Some(net)) = (address, network)
        && let Some(why) = reserved(addr, net)
    {
        report(
            span(&host.address),
            format!("address {addr} of host {name:?} {why}"),
        );
        ok = false;
    }
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
    for (key, value) in &host.env {
        let why = if key.get_ref().is_empty() {
            Some("is empty")
        } else if key.get_ref().contains('=') {
            Some("contains '=' (the engine would split the variable there)")
        } else if key.get_ref().contains('\0') || value.contains('\0') {
            Some("contains a NUL byte, which no process environment can carry")
        } else {
            None
        };
        if let Some(why) = why {
            report(
                span(key),
                format!(
                    "environment variable name {:?} of host {name:?} {why}",
                    key.get_ref()
                ),
            );
            ok = false;
        }
    }
    let ports: Option<Vec<Port>> = items(&host.ports, report);
    let ports: Option<Vec<u16>> = ports.map(|ports| ports.into_iter().map(|p| p.0).collect());
    let ready = match &host.ready {
        Some(probe) => field(probe, "ready probe", report),
        None => ports.as_ref().map(|ports| match ports.first() {
            Some(port) => ReadyProbe::Tcp(*port),
            None => ReadyProbe::Running,
        }),
    };
    if let (Some(ReadyProbe::Delay(delay)), Some(written)) = (ready, &host.ready)
        && delay > MAX_READY_DELAY
    {
        report(
            span(written),
            format!(
                "ready = \"delay:{}\" is longer than its maximum {} (host {name:?})",
                humantime::format_duration(delay),
                humantime::format_duration(MAX_READY_DELAY)
            ),
        );
        ok = false;
    }
    let wake_timeout = field_or(
        host.wake_timeout.as_ref(),
        "wake_timeout",
        NonZeroDuration(DEFAULT_WAKE_TIMEOUT),
        report,
    );
    let wake_timeout = at_most(
        wake_timeout.map(|d| d.0),
        host.wake_timeout.as_ref(),
        "wake_timeout",
        MAX_WAKE_TIMEOUT,
        report,
    );
    let idle_timeout = field_or(
        host.idle_timeout.as_ref(),
        "idle_timeout",
        IdleTimeout(Some(DEFAULT_IDLE_TIMEOUT)),
        report,
    );
    let sleep = field_or(host.sleep.as_ref(), "sleep", Tier::Stopped, report);
    // What happens to a paused host later: meaningless for any other tier.
    for (key, value) in [
        ("stop_after", &host.stop_after),
        ("swap_after", &host.swap_after),
    ] {
        if let Some(text) = value
            && sleep.is_some_and(|s| s != Tier::Paused)
        {
            report(
                span(text),
                format!("{key} only applies to hosts with sleep = \"pause\" (host {name:?})"),
            );
            ok = false;
        }
    }
    let stop_after: Option<Option<NonZeroDuration>> =
        optional(host.stop_after.as_ref(), "stop_after", report);
    let swap_after: Option<Option<AnyDuration>> =
        optional(host.swap_after.as_ref(), "swap_after", report);
    let min_warm = field_or(
        host.min_warm.as_ref(),
        "min_warm",
        AnyDuration(DEFAULT_MIN_WARM),
        report,
    );
    let ready_poll = field_or(
        host.ready_poll.as_ref(),
        "ready_poll",
        NonZeroDuration(DEFAULT_READY_POLL),
        report,
    );
    let ready_poll = at_most(
        ready_poll.map(|d| d.0),
        host.ready_poll.as_ref(),
        "ready_poll",
        MAX_READY_POLL,
        report,
    );
    let idle_ignore = match &host.idle_ignore {
        None => Some(network.map(|n| n.idle_ignore.clone()).unwrap_or_default()),
        Some(list) => {
            items(list, report).map(|list: Vec<Prefix>| list.into_iter().map(|p| p.0).collect())
        }
    };
    let depends_on: Option<Vec<Dependency>> = match &host.depends_on {
        None => Some(Vec::new()),
        Some(list) => items(list, report),
    };
    let wakes_with: Option<Vec<HostName>> = match &host.wakes_with {
        None => Some(Vec::new()),
        Some(list) => items(list, report),
    };
    let extra_hosts: Option<Vec<ExtraHost>> = match &host.extra_hosts {
        None => Some(Vec::new()),
        Some(list) => items(list, report),
    };
    let nodes = super::cluster::host_nodes(&name, host.nodes.as_ref(), span(&host.name), report);
    let container = container::validate(host, report);
    if let (Some(ReadyProbe::Healthy), Some(check)) = (ready, &container)
        && check
            .healthcheck
            .as_ref()
            .is_some_and(crate::runtime::Healthcheck::disables)
    {
        report(
            host.ready.as_ref().and_then(span),
            format!(
                "host {name:?} waits for ready = \"healthy\" but its healthcheck is \"NONE\": \
                 remove the healthcheck or use ready = \"tcp:PORT\""
            ),
        );
        ok = false;
    }
    if !ok {
        return None;
    }
    Some(HostConfig {
        name,
        address: address?,
        image: host.image.get_ref().trim().to_string(),
        command: host.command.clone(),
        env: (host.env.iter())
            .map(|(k, v)| (k.get_ref().clone(), v.clone()))
            .collect(),
        ports: ports?,
        ready: ready?,
        wake_timeout: wake_timeout?,
        idle_timeout: idle_timeout?.0,
        sleep: sleep?,
        stop_after: stop_after?.map(|d| d.0),
        swap_after: swap_after?.map(|d| d.0),
        swap_prefetch: host.swap_prefetch.unwrap_or(true),
        min_warm: min_warm?.0,
        priority: host.priority.as_ref().map_or(0, |p| *p.get_ref()),
        idle_ignore: idle_ignore?,
        // Names need every host: `allow.rs` fills it in the cross-host pass.
        allow_from: None,
        ready_poll: ready_poll?,
        proxy_arp: host
            .proxy_arp
            .unwrap_or(network.is_some_and(|n| n.proxy_arp)),
        answer_ping: host
            .answer_ping
            .unwrap_or(network.is_none_or(|n| n.answer_ping)),
        depends_on: depends_on?,
        wakes_with: wakes_with?.into_iter().map(|n| n.0).collect(),
        extra_hosts: extra_hosts?.into_iter().map(|e| e.0).collect(),
        nodes: nodes?,
        container: container?,
    })
}

/// Why a host may not have this address in this network, if it may not.
fn reserved(addr: Ipv4Addr, net: &NetworkConfig) -> Option<String> {
    if !net.subnet.contains(&addr) {
        Some(format!("lies outside the subnet {}", net.subnet))
    } else if addr == net.subnet.network() || addr == net.subnet.broadcast() {
        Some("is the subnet's network or broadcast address".to_string())
    } else if addr == net.gateway {
        Some("is the network's gateway (the bridge's own address)".to_string())
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use ipnet::Ipv4Net;

    use super::*;
    use crate::config::{Config, tests::problems};

    #[test]
    fn host_without_ports_is_ready_when_running() {
        let text = "[network]\nsubnet = \"10.0.0.0/24\"\n[[host]]\nname = \"a\"\naddress = \
                    \"10.0.0.5\"\nimage = \"x\"\n";
        let config = Config::parse(text, "t").unwrap();
        assert_eq!(config.hosts[0].ready, ReadyProbe::Running);
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
    fn durations_beyond_their_maximum_are_placed() {
        let host = |extra: &str| {
            format!(
                "[network]\nsubnet = \"10.0.0.0/24\"\n[[host]]\nname = \"a\"\naddress = \
                 \"10.0.0.5\"\nimage = \"x\"\n{extra}\n"
            )
        };
        for (extra, column, message) in [
            (
                "wake_timeout = \"2h\"",
                16,
                "wake_timeout 2h is longer than its maximum 1h",
            ),
            (
                "ready_poll = \"90s\"",
                14,
                "ready_poll 1m 30s is longer than its maximum 1m",
            ),
            (
                "ready = \"delay:3h\"",
                9,
                "ready = \"delay:3h\" is longer than its maximum 1h (host \"a\")",
            ),
            (
                "idle_timeout = \"31days\"",
                16,
                "idle_timeout \"31days\" is longer than 30days, the longest duration imag accepts",
            ),
            (
                "min_warm = \"300000000000h\"",
                12,
                "min_warm \"300000000000h\" is longer than 30days, the longest duration imag \
                 accepts",
            ),
            (
                "sleep = \"pause\"\nstop_after = \"1000y\"",
                14,
                "stop_after \"1000y\" is longer than 30days, the longest duration imag accepts",
            ),
        ] {
            let found = problems(&host(extra));
            let line = 7 + extra.matches('\n').count();
            assert_eq!(found, vec![(line, column, message.to_string())], "{extra}");
        }
        let config = Config::parse(
            &host("wake_timeout = \"1h\"\nready_poll = \"1m\"\nidle_timeout = \"30days\""),
            "t",
        )
        .unwrap();
        assert_eq!(config.hosts[0].wake_timeout, MAX_WAKE_TIMEOUT);
        assert_eq!(config.hosts[0].ready_poll, MAX_READY_POLL);
    }

    #[test]
    fn bad_environment_names_are_placed() {
        let text = "[network]\nsubnet = \"10.0.0.0/24\"\n[[host]]\nname = \"a\"\naddress = \
                    \"10.0.0.5\"\nimage = \"x\"\nenv = { \"\" = \"1\", \"A=B\" = \"2\", OK = \"3\" }\n";
        let found = problems(text);
        assert_eq!(
            found,
            vec![
                (
                    7,
                    9,
                    "environment variable name \"\" of host \"a\" is empty".to_string()
                ),
                (
                    7,
                    19,
                    "environment variable name \"A=B\" of host \"a\" contains '=' (the engine \
                     would split the variable there)"
                        .to_string()
                ),
            ]
        );
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
swap_after = "0s"
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
        assert_eq!(a.stop_after, Some(Duration::from_hours(1)));
        assert_eq!(a.swap_after, Some(Duration::ZERO));
        assert!(a.swap_prefetch, "read back on a wake by default");
        assert!(a.container_spec("n").swap_prefetch);
        assert_eq!(config.hosts[1].swap_after, None);
        assert!(
            !config.hosts[1].container_spec("n").swap_prefetch,
            "nothing paged out"
        );
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
swap_after = "1m"
idle_ignore = ["nowhere"]
[[host]]
name = "c"
address = "10.0.0.7"
image = "x"
sleep = "pause"
swap_prefetch = false
"#;
        let found = problems(bad);
        assert_eq!(found.len(), 4, "{found:?}");
        assert!(found[0].2.contains("sleep \"hibernate\""));
        assert!(found[1].2.contains("stop_after only applies"));
        assert!(found[2].2.contains("swap_after only applies"));
        assert!(found[3].2.contains("\"nowhere\" is not an IPv4 prefix"));
        // Host c's swap_prefetch without swap_after is ignored, not refused (compose defaults).
        let off = Config::parse(
            "[network]\nsubnet = \"10.0.0.0/24\"\n[[host]]\nname = \"a\"\naddress = \"10.0.0.5\"\n\
             image = \"x\"\nsleep = \"pause\"\nswap_after = \"0s\"\nswap_prefetch = false\n",
            "t",
        )
        .unwrap();
        assert!(!off.hosts[0].container_spec("n").swap_prefetch);
    }
}
