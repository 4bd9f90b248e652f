//! The `[cluster]` section and each host's `nodes`: several nodes sharing one imaginary network
//! (docs/SCALE-OUT.md). Without `[cluster]` nothing of this applies and the agent runs alone.
//! `crate::cluster` turns a [`ClusterConfig`] into membership, placement, claims and routes.

use std::{collections::HashSet, net::Ipv4Addr, str::FromStr, time::Duration};

use toml::Spanned;

use super::{
    field::{Report, field, field_or, items, parse_with, span},
    raw,
    values::NonZeroDuration,
};

/// Default routing table of the announcements the operator's BGP daemon exports.
pub const DEFAULT_TABLE: u32 = 4200;
/// Default TTL of the node's lease: how long a dead node's hosts stay taken.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(10);
/// Default time before the lease's end at which a node cut off from the store stops serving.
pub const DEFAULT_FENCE_MARGIN: Duration = Duration::from_secs(3);
/// Shortest and longest lease: below 2 s a keep-alive every third of it is a storm; above five
/// minutes a dead node's hosts stay unreachable too long.
pub const MIN_LEASE: Duration = Duration::from_secs(2);
pub const MAX_LEASE: Duration = Duration::from_mins(5);

/// The kernel metrics of the announcements in `table` (lower wins; the daemon maps them to BGP
/// local preference).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Metrics {
    /// This node serves the host (it holds the host's key).
    pub serving: u32,
    /// This node is the host's placement owner and nobody serves it.
    pub owner: u32,
    /// This node is the host's fallback of rank N: `fallback + N`.
    pub fallback: u32,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            serving: 100,
            owner: 200,
            fallback: 300,
        }
    }
}

/// Validated `[cluster]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterConfig {
    /// The cluster's name: its keys in the store are under `/imag/<name>/` (default: the
    /// network's name). Nodes of one cluster share it.
    pub name: Option<String>,
    /// This node's name (default: the machine's host name, up to its first dot).
    pub node: String,
    /// etcd endpoints, `http(s)://host:port`.
    pub store: Vec<String>,
    /// Where the other nodes reach this one; `None`: the first IPv4 address of the first attach
    /// interface, resolved when the agent starts.
    pub address: Option<Ipv4Addr>,
    /// The routing table of the announcements.
    pub table: u32,
    pub lease: Duration,
    pub fence_margin: Duration,
    pub metric: Metrics,
}

/// A node's name: a DNS label (letters, digits and '-', not at either end, at most 63).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeName(pub String);

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "{0:?} is not a node name: use letters, digits and '-' (not first or last), at most 63 \
     characters, like \"node-a\""
)]
pub struct BadNodeName(pub String);

impl FromStr for NodeName {
    type Err = BadNodeName;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let ok = !text.is_empty()
            && text.len() <= 63
            && text.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !text.starts_with('-')
            && !text.ends_with('-');
        if ok {
            Ok(NodeName(text.to_string()))
        } else {
            Err(BadNodeName(text.to_string()))
        }
    }
}

/// An etcd endpoint: `http://HOST:PORT` or `https://HOST:PORT`.
struct Endpoint(String);

#[derive(Debug, thiserror::Error)]
#[error(
    "{0:?} is not an etcd endpoint: write http://HOST:PORT or https://HOST:PORT, like \
     \"http://10.99.0.1:2379\""
)]
struct BadEndpoint(String);

impl FromStr for Endpoint {
    type Err = BadEndpoint;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = || BadEndpoint(text.to_string());
        let rest = (text.strip_prefix("http://"))
            .or_else(|| text.strip_prefix("https://"))
            .ok_or_else(bad)?;
        let (host, port) = rest.rsplit_once(':').ok_or_else(bad)?;
        let host_ok = !host.is_empty()
            && !host.contains(['/', '@', '?', '#'])
            && !host.chars().any(char::is_whitespace);
        match port.parse::<u16>() {
            Ok(p) if p > 0 && host_ok => Ok(Endpoint(text.to_string())),
            _ => Err(bad()),
        }
    }
}

/// A routing table other than 0 and the kernel's own (253 default, 254 main, 255 local).
struct Table(u32);

#[derive(Debug, thiserror::Error)]
#[error(
    "{0} is not a table imag may use: pick 1..=4294967295 other than 253, 254 and 255 (the \
     kernel's default, main and local tables), like 4200"
)]
struct BadTable(i64);

impl super::field::FromRaw<i64> for Table {
    type Err = BadTable;

    fn from_raw(raw: &i64) -> Result<Self, BadTable> {
        match u32::try_from(*raw) {
            Ok(t) if t != 0 && !(253..=255).contains(&t) => Ok(Table(t)),
            _ => Err(BadTable(*raw)),
        }
    }
}

/// The machine's host name up to its first dot, the default node name.
fn hostname() -> Option<String> {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
    let label = name.trim().split('.').next()?.to_string();
    (!label.is_empty()).then_some(label)
}

/// Checks `[cluster]`; `Some(None)` when there is none (the agent runs alone).
#[allow(
    clippy::option_option,
    reason = "absent is fine (no cluster), a bad section is a reported problem"
)]
pub(super) fn validate(
    raw: Option<&Spanned<raw::Cluster>>,
    report: &mut Report<'_>,
) -> Option<Option<ClusterConfig>> {
    let Some(section) = raw else {
        return Some(None);
    };
    let at = span(section);
    let raw = section.get_ref();
    let node = node_name(raw.node.as_ref(), at.clone(), report);
    let store = if raw.store.get_ref().is_empty() {
        report(
            span(&raw.store),
            "store lists no etcd endpoint: name at least one, like [\"http://10.99.0.1:2379\"]"
                .into(),
        );
        None
    } else {
        items::<_, Endpoint>(raw.store.get_ref(), report)
            .map(|list| list.into_iter().map(|e| e.0).collect::<Vec<_>>())
    };
    let address = match &raw.address {
        None => Some(None),
        Some(text) => parse_with(text, report, |_| {
            format!(
                "address {:?} is not an IPv4 address: write where the other nodes reach this one, like \"10.99.0.11\"",
                text.get_ref()
            )
        })
        .map(Some),
    };
    let table = field_or(raw.table.as_ref(), "table", Table(DEFAULT_TABLE), report);
    let lease = field_or(
        raw.lease.as_ref(),
        "lease",
        NonZeroDuration(DEFAULT_LEASE),
        report,
    )
    .map(|d| d.0);
    let lease = lease.filter(|lease| {
        let ok = (MIN_LEASE..=MAX_LEASE).contains(lease);
        if !ok {
            report(
                raw.lease.as_ref().and_then(span),
                format!(
                    "lease {} is outside 2s..=5m: keep-alives go every third of it, and a dead \
                     node's hosts wait that long",
                    humantime::format_duration(*lease)
                ),
            );
        }
        ok
    });
    let margin = field_or(
        raw.fence_margin.as_ref(),
        "fence_margin",
        NonZeroDuration(DEFAULT_FENCE_MARGIN),
        report,
    )
    .map(|d| d.0);
    let margin = match (margin, lease) {
        (Some(margin), Some(lease)) if margin >= lease => {
            report(
                raw.fence_margin.as_ref().and_then(span).or(at.clone()),
                format!(
                    "fence_margin {} must be shorter than lease {}: the node stops serving \
                     lease - fence_margin after the store last answered",
                    humantime::format_duration(margin),
                    humantime::format_duration(lease)
                ),
            );
            None
        }
        (margin, _) => margin,
    };
    let metric = metrics(raw.metric.as_ref(), report);
    let name = cluster_name(raw.name.as_ref(), report);
    Some(Some(ClusterConfig {
        name: name?,
        node: node?,
        store: store?,
        address: address?,
        table: table?.0,
        lease: lease?,
        fence_margin: margin?,
        metric: metric?,
    }))
}

/// `node`, or the machine's host name up to its first dot.
fn node_name(
    raw: Option<&Spanned<String>>,
    at: Option<std::ops::Range<usize>>,
    report: &mut Report<'_>,
) -> Option<String> {
    match raw {
        Some(node) => field::<_, NodeName>(node, "node", report).map(|n| n.0),
        None => match hostname().map(|h| h.parse::<NodeName>()) {
            Some(Ok(NodeName(name))) => Some(name),
            found => {
                let why = match found {
                    Some(Err(BadNodeName(name))) => format!("the host name {name:?} is not one"),
                    _ => "the host name could not be read".to_string(),
                };
                report(
                    at,
                    format!("[cluster] needs a node name and {why}: set node = \"NAME\""),
                );
                None
            }
        },
    }
}

/// `name`, the cluster's key prefix in the store (default: the network's name).
#[allow(
    clippy::option_option,
    reason = "absent is fine (the network's name), a bad name is a reported problem"
)]
fn cluster_name(raw: Option<&Spanned<String>>, report: &mut Report<'_>) -> Option<Option<String>> {
    match raw {
        None => Some(None),
        Some(name) => match name.get_ref().parse::<NodeName>() {
            Ok(NodeName(name)) => Some(Some(name)),
            Err(BadNodeName(bad)) => {
                report(
                    span(name),
                    format!(
                        "cluster name {bad:?} is not a name: use letters, digits and '-' (not \
                     first or last), at most 63 characters, the same on every node"
                    ),
                );
                None
            }
        },
    }
}

fn metrics(raw: Option<&Spanned<raw::ClusterMetric>>, report: &mut Report<'_>) -> Option<Metrics> {
    let defaults = Metrics::default();
    let Some(section) = raw else {
        return Some(defaults);
    };
    let m = section.get_ref();
    let value = |v: Option<&Spanned<u32>>, d: u32| v.map_or(d, |v| *v.get_ref());
    let metric = Metrics {
        serving: value(m.serving.as_ref(), defaults.serving),
        owner: value(m.owner.as_ref(), defaults.owner),
        fallback: value(m.fallback.as_ref(), defaults.fallback),
    };
    if metric.serving < metric.owner && metric.owner < metric.fallback {
        Some(metric)
    } else {
        report(
            span(section),
            format!(
                "metric needs serving < owner < fallback (lower wins), not {} / {} / {}",
                metric.serving, metric.owner, metric.fallback
            ),
        );
        None
    }
}

/// Checks a host's `nodes`: valid names, none twice, not empty. `Some(None)` when absent.
#[allow(clippy::option_option, reason = "as for `validate`")]
pub(super) fn host_nodes(
    host: &str,
    list: Option<&Vec<Spanned<String>>>,
    at: Option<std::ops::Range<usize>>,
    report: &mut Report<'_>,
) -> Option<Option<Vec<String>>> {
    let Some(list) = list else {
        return Some(None);
    };
    if list.is_empty() {
        report(
            at,
            format!(
                "host {host:?} has an empty nodes list: it could run nowhere; remove the key to \
                 let it run on every node"
            ),
        );
        return None;
    }
    let names: Vec<NodeName> = items(list, report)?;
    let mut seen = HashSet::new();
    let mut ok = true;
    for (name, item) in names.iter().zip(list) {
        if !seen.insert(&name.0) {
            report(
                span(item),
                format!("host {host:?} names node {:?} twice in nodes", name.0),
            );
            ok = false;
        }
    }
    ok.then(|| Some(names.into_iter().map(|n| n.0).collect()))
}

#[cfg(test)]
#[path = "cluster_tests.rs"]
mod tests;
