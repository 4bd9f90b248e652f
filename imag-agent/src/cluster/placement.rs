//! Placement (pure): which node should wake a host. Rendezvous (highest random weight) hashing:
//! every node scores every host with a stable 64-bit hash of (node, host), and a host's nodes
//! rank by score, best first. A node that leaves moves only the hosts it ranked first; a node
//! that joins takes only the hosts it now ranks first. Every agent computes the same ranking
//! from the same live nodes, with no coordination.

use xxhash_rust::xxh3::xxh3_64;

/// The score of `node` for `host`: XXH3 (a specified, platform-independent hash) of the node's
/// name, a separator no name contains, and the host's name.
pub fn score(node: &str, host: &str) -> u64 {
    let mut key = Vec::with_capacity(node.len() + host.len() + 1);
    key.extend_from_slice(node.as_bytes());
    key.push(0);
    key.extend_from_slice(host.as_bytes());
    xxh3_64(&key)
}

/// The nodes among `candidates` that may run `host` (`allowed`: its `nodes`, `None` for all),
/// best first. Ties (vanishingly rare) break by name, so the order is total.
pub fn rank<'a>(
    host: &str,
    candidates: impl IntoIterator<Item = &'a str>,
    allowed: Option<&[String]>,
) -> Vec<&'a str> {
    let mut ranked: Vec<(u64, &str)> = candidates
        .into_iter()
        .filter(|node| allowed.is_none_or(|list| list.iter().any(|a| a == node)))
        .map(|node| (score(node, host), node))
        .collect();
    ranked.sort_unstable_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(b.1)));
    ranked.dedup_by(|a, b| a.1 == b.1);
    ranked.into_iter().map(|(_, node)| node).collect()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn hosts() -> Vec<String> {
        (0..300).map(|i| format!("host-{i}")).collect()
    }

    #[test]
    fn the_score_is_stable_across_builds_and_platforms() {
        // Pinned values: a change here means every cluster would reshuffle on upgrade.
        assert_eq!(score("node-a", "web"), xxh3_64(b"node-a\0web"));
        assert_ne!(score("node-a", "web"), score("node-b", "web"));
        assert_ne!(
            score("ab", "c"),
            score("a", "bc"),
            "the separator keeps them apart"
        );
    }

    #[test]
    fn a_node_leaving_moves_only_its_own_hosts() {
        let all = ["node-a", "node-b", "node-c"];
        let without_b = ["node-a", "node-c"];
        let mut moved = 0;
        for host in hosts() {
            let before = rank(&host, all, None)[0];
            let after = rank(&host, without_b, None)[0];
            if before == "node-b" {
                moved += 1;
                assert_eq!(
                    after,
                    rank(&host, all, None)[1],
                    "{host} goes to its first fallback"
                );
            } else {
                assert_eq!(before, after, "{host} was not node-b's and must not move");
            }
        }
        assert!(moved > 0, "node-b owned some hosts");
    }

    #[test]
    fn three_nodes_share_300_hosts_evenly_enough() {
        let mut owned: BTreeMap<&str, usize> = BTreeMap::new();
        for host in hosts() {
            *owned
                .entry(rank(&host, ["node-a", "node-b", "node-c"], None)[0])
                .or_default() += 1;
        }
        assert_eq!(owned.len(), 3, "{owned:?}");
        // 100 each on average; a fair hash stays within ±35 with overwhelming probability.
        for (node, count) in &owned {
            assert!((65..=135).contains(count), "{node} owns {count}: {owned:?}");
        }
    }

    #[test]
    fn nodes_restricts_the_ranking_and_the_order_is_complete() {
        let only_c = ["node-c".to_string()];
        for host in hosts().iter().take(50) {
            assert_eq!(
                rank(host, ["node-a", "node-b", "node-c"], Some(&only_c)),
                ["node-c"]
            );
            let full = rank(host, ["node-a", "node-b", "node-c", "node-a"], None);
            assert_eq!(full.len(), 3, "every node once: {full:?}");
        }
        assert!(rank("web", ["node-a"], Some(&["node-z".to_string()])).is_empty());
    }
}
