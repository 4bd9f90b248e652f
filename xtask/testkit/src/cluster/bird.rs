//! The BGP daemons' configurations, rendered from the operators' examples in
//! `examples/scale-out/` (so that the tests run those very files): the values of their `define`
//! lines are replaced, and the router's example `protocol bgp nodeN` lines give way to one per
//! node of the cluster's.

use std::{fmt::Write as _, net::Ipv4Addr};

const NODE_TEMPLATE: &str = include_str!("../../../../examples/scale-out/bird-node.conf");
const ROUTER_TEMPLATE: &str = include_str!("../../../../examples/scale-out/bird-router.conf");

/// The private AS the tests' iBGP runs in.
const AS: &str = "64512";

/// Test timers: a killed node's routes go within the hold time (3 s).
const TIMERS: [(&str, &str); 3] = [("HOLD", "3"), ("KEEPALIVE", "1"), ("RETRY", "1")];

/// Replaces the value of `define NAME = …;` for each `(NAME, value)`; panics if a name is not
/// defined in `template` (the example and the harness disagree).
fn define(template: &str, values: &[(&str, &str)]) -> String {
    let mut text = String::with_capacity(template.len());
    let mut seen = Vec::new();
    for line in template.lines() {
        let name = line
            .strip_prefix("define ")
            .and_then(|rest| rest.split_once('='))
            .map(|(name, _)| name.trim());
        if let Some((name, value)) = name.and_then(|n| values.iter().find(|(v, _)| *v == n)) {
            let _ = writeln!(text, "define {name} = {value};");
            seen.push(*name);
        } else {
            text.push_str(line);
            text.push('\n');
        }
    }
    for (name, _) in values {
        assert!(
            seen.contains(name),
            "examples/scale-out: the template has no `define {name} = …;` line, which the test \
             harness sets (xtask/testkit/src/cluster/bird.rs)"
        );
    }
    text
}

/// BIRD's configuration for the node at `addr`, peering with the router at `router`.
pub fn node_config(addr: Ipv4Addr, router: Ipv4Addr, table: u32) -> String {
    let (addr, router, table) = (addr.to_string(), router.to_string(), table.to_string());
    let mut values = vec![
        ("IMAG_TABLE", table.as_str()),
        ("NODE_ID", addr.as_str()),
        ("ROUTER_ADDR", router.as_str()),
        ("LOCAL_AS", AS),
    ];
    values.extend(TIMERS);
    define(NODE_TEMPLATE, &values)
}

/// The BGP protocol name the router gives node `i` (`birdc show protocols node<i>`).
pub fn router_protocol(i: usize) -> String {
    format!("node{i}")
}

/// BIRD's configuration for the router at `addr`, with one session per node address.
pub fn router_config(addr: Ipv4Addr, nodes: &[Ipv4Addr]) -> String {
    let addr = addr.to_string();
    let mut values = vec![("ROUTER_ADDR", addr.as_str()), ("LOCAL_AS", AS)];
    values.extend(TIMERS);
    let mut text = String::new();
    for line in define(ROUTER_TEMPLATE, &values)
        .lines()
        .filter(|l| !l.starts_with("protocol bgp node"))
    {
        text.push_str(line);
        text.push('\n');
    }
    for (i, node) in nodes.iter().enumerate() {
        let _ = writeln!(
            text,
            "protocol bgp {} from imag_node {{ neighbor {node} as LOCAL_AS; }}",
            router_protocol(i + 1)
        );
    }
    text
}

/// Whether `birdc show protocols NAME` output says the session is up.
pub fn established(show_protocols: &str) -> bool {
    show_protocols
        .lines()
        .any(|l| l.split_whitespace().any(|w| w == "Established"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_node_config_keeps_the_example_and_sets_the_values() {
        let text = node_config(
            Ipv4Addr::new(10, 99, 3, 11),
            Ipv4Addr::new(10, 99, 3, 1),
            4200,
        );
        assert!(text.contains("define NODE_ID = 10.99.3.11;\n"), "{text}");
        assert!(text.contains("define ROUTER_ADDR = 10.99.3.1;\n"), "{text}");
        assert!(text.contains("define HOLD = 3;\n"), "{text}");
        assert!(
            text.contains("bgp_local_pref = 1000 - krt_metric;"),
            "{text}"
        );
    }

    #[test]
    fn the_router_config_has_one_session_per_node() {
        let nodes = [Ipv4Addr::new(10, 99, 3, 11), Ipv4Addr::new(10, 99, 3, 12)];
        let text = router_config(Ipv4Addr::new(10, 99, 3, 1), &nodes);
        assert_eq!(
            text.lines()
                .filter(|l| l.starts_with("protocol bgp node"))
                .count(),
            2,
            "{text}"
        );
        assert!(
            text.contains("protocol bgp node2 from imag_node { neighbor 10.99.3.12 as LOCAL_AS; }"),
            "{text}"
        );
    }

    #[test]
    fn established_reads_birdc() {
        let up = "BIRD 2.0.12 ready.\nName       Proto      Table      State  Since         Info\n\
                  node1      BGP        ---        up     16:01:29.076  Established   \n";
        let down = "node2      BGP        ---        start  16:01:25.267  Active        \n";
        assert!(established(up));
        assert!(!established(down));
    }
}
