//! The top-level `x-imag.cluster` of a compose file: the same keys as TOML's `[cluster]`
//! (`config/cluster.rs` validates both). A service's `x-imag.nodes` is `service.rs`'s.
//!
//! ```yaml
//! x-imag:
//!   cluster:
//!     node: node-a
//!     store: [http://10.99.0.1:2379]
//!     address: 10.99.0.11
//!     table: 4200
//!     lease: 10s
//!     fence_margin: 3s
//!     metric: { serving: 100, owner: 200, fallback: 300 }
//! ```

use super::{
    Cx, spanned,
    top::{integer, keys},
    yaml::Node,
};
use crate::config::raw;

const KEYS: [&str; 8] = [
    "node",
    "store",
    "name",
    "address",
    "table",
    "lease",
    "fence_margin",
    "metric",
];

/// `x-imag.cluster` as the raw section; `None` (with a problem) without a `store`.
pub(super) fn cluster(node: &Node, cx: &mut Cx<'_>) -> Option<toml::Spanned<raw::Cluster>> {
    let mut store = None;
    let mut c = raw::Cluster {
        name: None,
        node: None,
        store: spanned(node.at, Vec::new()),
        address: None,
        table: None,
        lease: None,
        fence_margin: None,
        metric: None,
    };
    for (key, value) in keys(cx, node, "x-imag.cluster", &KEYS) {
        match key {
            "node" => c.node = cx.string(value, key),
            "name" => c.name = cx.string(value, key),
            "store" => store = cx.strings(value, key, true).map(|s| spanned(value.at, s)),
            "address" => c.address = cx.string(value, key),
            "table" => c.table = integer(cx, value, key),
            "lease" => c.lease = cx.string(value, key),
            "fence_margin" => c.fence_margin = cx.string(value, key),
            _ => c.metric = Some(spanned(value.at, metric(value, cx))),
        }
    }
    let Some(store) = store else {
        cx.problem(
            node.at,
            "x-imag.cluster needs store: the etcd endpoints, like [http://10.99.0.1:2379]".into(),
        );
        return None;
    };
    c.store = store;
    Some(spanned(node.at, c))
}

fn metric(node: &Node, cx: &mut Cx<'_>) -> raw::ClusterMetric {
    let mut m = raw::ClusterMetric {
        serving: None,
        owner: None,
        fallback: None,
    };
    for (key, value) in keys(
        cx,
        node,
        "x-imag.cluster.metric",
        &["serving", "owner", "fallback"],
    ) {
        let number = value.text().and_then(|t| t.parse::<u32>().ok());
        if number.is_none() {
            cx.problem(
                value.at,
                format!("metric {key} must be a whole number from 0"),
            );
        }
        let number = number.map(|n| spanned(value.at, n));
        match key {
            "serving" => m.serving = number,
            "owner" => m.owner = number,
            _ => m.fallback = number,
        }
    }
    m
}
