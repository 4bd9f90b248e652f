//! The cluster task's decisions (pure): from what the store says (live nodes, who holds which
//! host) and the hosts' configuration, where this node sends each host's packets (its
//! [`Target`]) and which metric it announces each host with in its table. `task.rs` applies the
//! difference between two decisions; these functions are tested without etcd or a kernel.

use std::{collections::BTreeMap, net::Ipv4Addr};

use super::{Target, placement};
use crate::config::ClusterMetrics;

/// One host as placement sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Placed {
    pub name: String,
    pub address: Ipv4Addr,
    /// `nodes = [...]`; `None`: every node.
    pub nodes: Option<Vec<String>>,
}

/// What the store says.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct World {
    /// Live nodes and their addresses.
    pub nodes: BTreeMap<String, Ipv4Addr>,
    /// Host name → the node holding its key.
    pub holders: BTreeMap<String, String>,
}

/// Everything this node does about one host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostDecision {
    pub target: Target,
    /// The metric of this node's announcement in its table; `None`: no announcement.
    pub metric: Option<u32>,
    /// The live nodes allowed for the host, best first (this node included even before it sees
    /// its own registration).
    pub ranking: Vec<String>,
}

/// Decides every host; `hosts` in configuration order, the result keyed by host name.
pub fn decide(
    this: &str,
    world: &World,
    hosts: &[Placed],
    metrics: ClusterMetrics,
) -> BTreeMap<String, HostDecision> {
    hosts
        .iter()
        .map(|host| (host.name.clone(), decide_one(this, world, host, metrics)))
        .collect()
}

fn decide_one(this: &str, world: &World, host: &Placed, metrics: ClusterMetrics) -> HostDecision {
    let candidates = world
        .nodes
        .keys()
        .map(String::as_str)
        .chain(std::iter::once(this));
    let ranking = placement::rank(&host.name, candidates, host.nodes.as_deref());
    let holder = world.holders.get(&host.name).map(String::as_str);
    let node_target = |node: &str| match world.nodes.get(node) {
        _ if node == this => Some(Target::Here),
        Some(address) => Some(Target::Node {
            name: node.to_string(),
            address: *address,
        }),
        None => None,
    };
    // The serving node if it is known; else the best live node; else hold here (a host no live
    // node may run waits where its packet landed).
    let target = holder
        .and_then(node_target)
        .or_else(|| ranking.iter().find_map(|n| node_target(n)))
        .unwrap_or(Target::Here);
    let metric = if holder == Some(this) {
        Some(metrics.serving)
    } else {
        match ranking.iter().position(|n| *n == this) {
            Some(0) => Some(metrics.owner),
            Some(rank) => Some(
                metrics
                    .fallback
                    .saturating_add(u32::try_from(rank).unwrap_or(u32::MAX)),
            ),
            None => None,
        }
    };
    HostDecision {
        target,
        metric,
        ranking: ranking.into_iter().map(str::to_string).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 11);
    const B: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 12);

    fn host(name: &str, nodes: Option<&[&str]>) -> Placed {
        Placed {
            name: name.into(),
            address: Ipv4Addr::new(10, 77, 0, 10),
            nodes: nodes.map(|n| n.iter().map(ToString::to_string).collect()),
        }
    }

    fn world(holders: &[(&str, &str)]) -> World {
        World {
            nodes: [("node-a".to_string(), A), ("node-b".to_string(), B)].into(),
            holders: holders
                .iter()
                .map(|(h, n)| ((*h).to_string(), (*n).to_string()))
                .collect(),
        }
    }

    fn one(this: &str, world: &World, host: &Placed) -> HostDecision {
        decide(
            this,
            world,
            std::slice::from_ref(host),
            ClusterMetrics::default(),
        )
        .remove(&host.name)
        .unwrap()
    }

    #[test]
    fn the_holder_is_the_target_and_announces_serving() {
        let web = host("web", None);
        let held_by_b = world(&[("web", "node-b")]);
        let on_a = one("node-a", &held_by_b, &web);
        assert_eq!(
            on_a.target,
            Target::Node {
                name: "node-b".into(),
                address: B
            }
        );
        assert_ne!(on_a.metric, Some(100), "only the holder announces serving");
        let on_b = one("node-b", &held_by_b, &web);
        assert_eq!(on_b.target, Target::Here);
        assert_eq!(on_b.metric, Some(100));
    }

    #[test]
    fn without_a_holder_the_owner_is_the_target_and_the_rest_fall_back_by_rank() {
        let web = host("web", None);
        let free = world(&[]);
        let on_a = one("node-a", &free, &web);
        let on_b = one("node-b", &free, &web);
        assert_eq!(on_a.ranking, on_b.ranking, "both nodes rank alike");
        let owner = on_a.ranking[0].clone();
        let (owner_view, other_view) = if owner == "node-a" {
            (&on_a, &on_b)
        } else {
            (&on_b, &on_a)
        };
        assert_eq!(owner_view.target, Target::Here);
        assert_eq!(owner_view.metric, Some(200));
        assert_eq!(other_view.metric, Some(301), "fallback + rank 1");
        assert_eq!(
            other_view.target,
            Target::Node {
                name: owner.clone(),
                address: if owner == "node-a" { A } else { B }
            }
        );
    }

    #[test]
    fn nodes_excludes_this_node_from_announcing() {
        let pinned = host("db", Some(&["node-b"]));
        let on_a = one("node-a", &world(&[]), &pinned);
        assert_eq!(on_a.metric, None);
        assert_eq!(on_a.ranking, ["node-b"]);
        assert_eq!(
            on_a.target,
            Target::Node {
                name: "node-b".into(),
                address: B
            }
        );
        // With node-b gone, no live node may run it: packets stay held here.
        let alone = World {
            nodes: [("node-a".to_string(), A)].into(),
            holders: BTreeMap::new(),
        };
        let on_a = one("node-a", &alone, &pinned);
        assert_eq!((on_a.target, on_a.metric), (Target::Here, None));
    }

    #[test]
    fn a_holder_that_is_not_live_falls_back_to_placement() {
        let web = host("web", None);
        let stale = world(&[("web", "node-z")]);
        let on_a = one("node-a", &stale, &web);
        let expected_owner = on_a.ranking[0].clone();
        match on_a.target {
            Target::Here => assert_eq!(expected_owner, "node-a"),
            Target::Node { name, .. } => assert_eq!(name, expected_owner),
        }
    }

    #[test]
    fn this_node_ranks_before_it_sees_its_own_registration() {
        let web = host("web", None);
        let only_b = World {
            nodes: [("node-b".to_string(), B)].into(),
            holders: BTreeMap::new(),
        };
        let on_a = one("node-a", &only_b, &web);
        assert_eq!(on_a.ranking.len(), 2);
        assert!(on_a.metric.is_some());
    }
}
