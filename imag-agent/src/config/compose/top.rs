//! The top level of a compose file: which keys imag reads, the imag network (from `networks:`
//! and `x-imag.network`), and imag's own sections under the top-level `x-imag` (`hold`, `wake`,
//! `agent`, and `hosts`: defaults for every service's `x-imag`). Services are `service.rs`'s.
//!
//! ```yaml
//! x-imag:
//!   network: { subnet: 10.77.0.0/24, name: imag, bridge: imag0, gateway: …, proxy_arp: …,
//!              answer_ping: …, idle_ignore: […], allow_from: […] }
//!   hosts: { idle_timeout: 5m, sleep: pause, … }
//!   hold: { max_packets_per_host: 64, … }
//!   wake: { backoff: 1s, … }
//!   agent: { metrics: "127.0.0.1:9477", engine: docker }
//!   dns: { enabled: true, domain: …, listen: […], upstream: […], timeout: 2s }
//!   limits: { max_warm: 20, memory_budget: 8GiB, wakes_per_source: 10/min, … }
//!   cluster: { node: node-a, store: [http://10.99.0.1:2379], … }   (see cluster.rs)
//! networks:
//!   imag:                      # the imag network: the one with `x-imag`, or the only one
//!     ipam: { config: [ { subnet: 10.77.0.0/24, gateway: 10.77.0.1 } ] }
//!     driver_opts: { com.docker.network.bridge.name: imag0 }
//! ```

use super::{Cx, service, spanned, yaml::Node};
use crate::config::{dns::DnsSection, raw};

/// Reads the whole file into the raw configuration; `None` when it has no usable network.
pub(super) fn config(doc: &Node, cx: &mut Cx<'_>) -> Option<raw::Config> {
    let entries = cx.mapping(doc, "a compose file")?;
    for (key, _) in entries {
        match key.name.as_str() {
            "services" | "networks" | "volumes" | "x-imag" | "version" | "name" => {}
            k if k.starts_with("x-") => {}
            k @ ("configs" | "secrets" | "include" | "models") => cx.problem(
                key.at,
                format!("top-level `{k}` is not supported by imag (yet): leave it out"),
            ),
            k => cx.problem(key.at, format!("unknown top-level key `{k}`")),
        }
    }
    if let Some(volumes) = doc.get("volumes") {
        declared_volumes(volumes, cx);
    }
    let x = doc.get("x-imag");
    let sections = match x {
        Some(x) => keys(
            cx,
            x,
            "x-imag",
            &[
                "network", "hosts", "hold", "wake", "agent", "dns", "limits", "cluster",
            ],
        ),
        None => Vec::new(),
    };
    let section = |name: &str| sections.iter().find(|(k, _)| *k == name).map(|(_, n)| *n);
    let (net_key, network) = network(doc, section("network"), cx)?;
    let hosts = service::hosts(doc, &net_key, &network, section("hosts"), cx);
    Some(raw::Config {
        network: spanned(doc.at, network),
        host: hosts,
        hold: section("hold").map(|n| hold(n, cx)),
        wake: section("wake").map(|n| wake(n, cx)),
        agent: section("agent").map(|n| agent(n, cx)),
        dns: section("dns").map(|n| dns(n, cx)),
        limits: section("limits").map(|n| limits(n, cx)),
        cluster: section("cluster").and_then(|n| super::cluster::cluster(n, cx)),
    })
}

/// The present keys of a mapping among `allowed`; an unknown key is a problem naming it.
pub(super) fn keys<'n>(
    cx: &mut Cx<'_>,
    node: &'n Node,
    what: &str,
    allowed: &[&'static str],
) -> Vec<(&'static str, &'n Node)> {
    let Some(entries) = cx.mapping(node, what) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (key, value) in entries {
        match allowed.iter().find(|a| **a == key.name) {
            Some(a) => out.push((*a, value)),
            None => cx.problem(
                key.at,
                format!(
                    "unknown key `{}` in {what} (known: {})",
                    key.name,
                    allowed.join(", ")
                ),
            ),
        }
    }
    out
}

/// The imag network: its compose key (what services name in `networks:`) and settings.
fn network(doc: &Node, x: Option<&Node>, cx: &mut Cx<'_>) -> Option<(String, raw::Network)> {
    let defined = doc.get("networks").and_then(|n| cx.mapping(n, "networks"));
    let defined = defined.unwrap_or_default();
    let marked: Vec<_> = defined
        .iter()
        .filter(|(_, def)| def.get("x-imag").is_some())
        .collect();
    let chosen = match (marked.as_slice(), defined) {
        ([one], _) => Some(*one),
        ([], [only]) => Some(only),
        ([], []) => None,
        ([], [first, ..]) => {
            cx.problem(
                first.0.at,
                "several networks are defined: mark imag's network with `x-imag: {}` (imag \
                 hosts join exactly one network)"
                    .into(),
            );
            return None;
        }
        ([_, second, ..], _) => {
            cx.problem(
                second.0.at,
                "only one network may carry `x-imag`: imag hosts join exactly one network".into(),
            );
            return None;
        }
    };
    let mut net = raw::Network {
        subnet: spanned(doc.at, String::new()),
        name: None,
        bridge: None,
        gateway: None,
        proxy_arp: None,
        answer_ping: None,
        idle_ignore: Vec::new(),
        allow_from: None,
    };
    let mut subnet_found = false;
    let key = match chosen {
        Some((key, def)) => {
            if !def.is_null() {
                subnet_found = definition(def, &mut net, cx);
            }
            if net.name.is_none() && key.name != "default" {
                net.name = Some(spanned(key.at, key.name.clone()));
            }
            key.name.clone()
        }
        None => "default".to_string(),
    };
    let sources = chosen
        .and_then(|(_, def)| def.get("x-imag"))
        .into_iter()
        .chain(x);
    for source in sources {
        subnet_found |= imag_network(source, &mut net, cx);
    }
    if !subnet_found {
        cx.problem(
            chosen.map_or(doc.at, |(k, _)| k.at),
            "no subnet for the imag network: give it in networks.<name>.ipam.config[0].subnet or \
             x-imag.network.subnet (like 10.77.0.0/24)"
                .into(),
        );
        return None;
    }
    Some((key, net))
}

/// A compose network definition; true if it set the subnet.
fn definition(def: &Node, net: &mut raw::Network, cx: &mut Cx<'_>) -> bool {
    let allowed = [
        "name",
        "driver",
        "driver_opts",
        "ipam",
        "x-imag",
        "labels",
        "external",
        "internal",
        "attachable",
        "enable_ipv6",
    ];
    let mut subnet = false;
    for (key, value) in keys(cx, def, "a network definition", &allowed) {
        match key {
            "name" => net.name = cx.string(value, "the network's name"),
            "driver" if value.text() != Some("bridge") => cx.problem(
                value.at,
                "imag's network is a bridge network: leave `driver` out or write bridge".into(),
            ),
            "driver_opts" => {
                for (k, v) in cx.mapping(value, "driver_opts").unwrap_or_default() {
                    if k.name == "com.docker.network.bridge.name" {
                        net.bridge = cx.string(v, "the bridge name");
                    } else {
                        cx.problem(
                            k.at,
                            format!("driver option `{}` is not supported by imag", k.name),
                        );
                    }
                }
            }
            "ipam" => {
                for (k, v) in keys(cx, value, "ipam", &["driver", "config"]) {
                    if k == "driver" && v.text() != Some("default") {
                        cx.problem(v.at, "only the default IPAM driver is supported".into());
                    }
                    let first = v.seq().and_then(|s| s.first());
                    if k == "config"
                        && let Some(first) = first
                    {
                        for (k, v) in keys(cx, first, "ipam.config", &["subnet", "gateway"]) {
                            if k == "subnet" {
                                net.subnet = cx.string(v, "subnet").unwrap_or(net.subnet.clone());
                                subnet = true;
                            } else {
                                net.gateway = cx.string(v, "gateway");
                            }
                        }
                    }
                }
            }
            "labels" | "attachable" => cx.warn(
                value.at,
                format!("network `{key}` is ignored: imag creates the network itself"),
            ),
            "external" | "internal" | "enable_ipv6" => cx.problem(
                value.at,
                format!("network `{key}` is not supported: imag creates its own IPv4 network"),
            ),
            _ => {}
        }
    }
    subnet
}

/// `x-imag.network` (or a network's own `x-imag`); true if it set the subnet.
fn imag_network(node: &Node, net: &mut raw::Network, cx: &mut Cx<'_>) -> bool {
    let allowed = [
        "subnet",
        "name",
        "bridge",
        "gateway",
        "proxy_arp",
        "answer_ping",
        "idle_ignore",
        "allow_from",
    ];
    let mut subnet = false;
    if node.is_null() {
        return false;
    }
    for (key, value) in keys(cx, node, "x-imag.network", &allowed) {
        match key {
            "subnet" => {
                if let Some(s) = cx.string(value, "subnet") {
                    net.subnet = s;
                    subnet = true;
                }
            }
            "name" => net.name = cx.string(value, "network name"),
            "bridge" => net.bridge = cx.string(value, "bridge name"),
            "gateway" => net.gateway = cx.string(value, "gateway"),
            "proxy_arp" => net.proxy_arp = cx.boolean(value, "proxy_arp"),
            "answer_ping" => net.answer_ping = cx.boolean(value, "answer_ping"),
            "allow_from" => net.allow_from = cx.strings(value, "allow_from", true),
            _ => net.idle_ignore = cx.strings(value, "idle_ignore", true).unwrap_or_default(),
        }
    }
    subnet
}

fn count(cx: &mut Cx<'_>, node: &Node, key: &str) -> Option<toml::Spanned<usize>> {
    let value = node.text().and_then(|t| t.parse().ok());
    if value.is_none() {
        cx.problem(node.at, format!("{key} must be a whole number"));
    }
    value.map(|v| spanned(node.at, v))
}

/// A whole number that may be negative (`priority`).
pub(super) fn integer(cx: &mut Cx<'_>, node: &Node, key: &str) -> Option<toml::Spanned<i64>> {
    let value = node.text().and_then(|t| t.parse().ok());
    if value.is_none() {
        cx.problem(node.at, format!("{key} must be a whole number"));
    }
    value.map(|v| spanned(node.at, v))
}

fn limits(node: &Node, cx: &mut Cx<'_>) -> raw::Limits {
    let allowed = [
        "max_warm",
        "memory_budget",
        "default_host_memory",
        "evict_busy",
        "wakes_per_source",
        "wakes_per_second",
        "max_concurrent_wakes",
        "max_engine_calls",
    ];
    let mut l = raw::Limits {
        max_warm: None,
        memory_budget: None,
        default_host_memory: None,
        evict_busy: None,
        wakes_per_source: None,
        wakes_per_second: None,
        max_concurrent_wakes: None,
        max_engine_calls: None,
    };
    for (key, value) in keys(cx, node, "x-imag.limits", &allowed) {
        match key {
            "max_warm" => l.max_warm = count(cx, value, key),
            "memory_budget" => l.memory_budget = cx.string(value, key),
            "default_host_memory" => l.default_host_memory = cx.string(value, key),
            "evict_busy" => l.evict_busy = cx.boolean(value, key),
            "wakes_per_source" => l.wakes_per_source = cx.string(value, key),
            "wakes_per_second" => l.wakes_per_second = count(cx, value, key),
            "max_concurrent_wakes" => l.max_concurrent_wakes = count(cx, value, key),
            _ => l.max_engine_calls = count(cx, value, key),
        }
    }
    l
}

fn hold(node: &Node, cx: &mut Cx<'_>) -> raw::Hold {
    let allowed = [
        "max_packets_per_host",
        "max_bytes_per_host",
        "max_packets",
        "max_bytes",
    ];
    let mut hold = raw::Hold {
        max_packets_per_host: None,
        max_bytes_per_host: None,
        max_packets: None,
        max_bytes: None,
    };
    for (key, value) in keys(cx, node, "x-imag.hold", &allowed) {
        let n = count(cx, value, key);
        match key {
            "max_packets_per_host" => hold.max_packets_per_host = n,
            "max_bytes_per_host" => hold.max_bytes_per_host = n,
            "max_packets" => hold.max_packets = n,
            _ => hold.max_bytes = n,
        }
    }
    hold
}

fn wake(node: &Node, cx: &mut Cx<'_>) -> raw::Wake {
    let allowed = [
        "backoff",
        "backoff_max",
        "ready_events",
        "fast_thaw",
        "prewake",
    ];
    let mut wake = raw::Wake {
        backoff: None,
        backoff_max: None,
        ready_events: None,
        fast_thaw: None,
        prewake: None,
    };
    for (key, value) in keys(cx, node, "x-imag.wake", &allowed) {
        match key {
            "backoff" => wake.backoff = cx.string(value, key),
            "backoff_max" => wake.backoff_max = cx.string(value, key),
            "ready_events" => wake.ready_events = cx.boolean(value, key),
            "prewake" => wake.prewake = cx.string(value, key),
            _ => wake.fast_thaw = cx.boolean(value, key),
        }
    }
    wake
}

fn agent(node: &Node, cx: &mut Cx<'_>) -> raw::Agent {
    let mut agent = raw::Agent {
        metrics: None,
        engine: None,
    };
    for (key, value) in keys(cx, node, "x-imag.agent", &["metrics", "engine"]) {
        match key {
            "metrics" => agent.metrics = cx.string(value, key),
            _ => agent.engine = cx.string(value, key),
        }
    }
    agent
}

fn dns(node: &Node, cx: &mut Cx<'_>) -> DnsSection {
    let allowed = ["enabled", "domain", "listen", "upstream", "timeout"];
    let mut dns = DnsSection::default();
    for (key, value) in keys(cx, node, "x-imag.dns", &allowed) {
        match key {
            "enabled" => dns.enabled = cx.boolean(value, key),
            "domain" => dns.domain = cx.string(value, key),
            "listen" => dns.listen = cx.strings(value, key, true).unwrap_or_default(),
            "upstream" => dns.upstream = cx.strings(value, key, true).unwrap_or_default(),
            _ => dns.timeout = cx.string(value, key),
        }
    }
    dns
}

/// The top-level `volumes:`: named volumes the services may use (`options.rs` reads `name`).
fn declared_volumes(node: &Node, cx: &mut Cx<'_>) {
    let allowed = ["name", "external", "driver", "driver_opts", "labels"];
    for (_, def) in cx.mapping(node, "volumes").unwrap_or_default() {
        if def.is_null() {
            continue;
        }
        for (key, value) in keys(cx, def, "a volume definition", &allowed) {
            match key {
                "driver" if value.text() != Some("local") => cx.problem(
                    value.at,
                    "only the local volume driver is supported: leave `driver` out".into(),
                ),
                "driver_opts" | "labels" => cx.warn(
                    value.at,
                    format!(
                        "volume `{key}` is ignored: the engine creates the volume on first use"
                    ),
                ),
                _ => {}
            }
        }
    }
}
