use std::{net::Ipv4Addr, path::Path, time::Duration};

use super::*;
use crate::config::{Config, tests::problems};

const NET: &str = "[network]\nsubnet = \"10.9.0.0/24\"\n";
const HOST: &str = "[[host]]\nname = \"web\"\naddress = \"10.9.0.10\"\nimage = \"i\"\n";

fn parse(text: &str) -> Config {
    Config::parse(text, "t.toml").expect("valid")
}

#[test]
fn without_a_cluster_section_nothing_changes() {
    let config = parse(&format!("{NET}{HOST}"));
    assert_eq!(config.cluster, None);
    assert_eq!(config.hosts[0].nodes, None);
}

#[test]
fn a_full_cluster_section_parses_and_defaults_apply() {
    let text = format!(
        "{NET}[cluster]\nnode = \"node-a\"\nstore = [\"http://10.99.0.1:2379\", \
         \"https://etcd.example:2379\"]\naddress = \"10.99.0.11\"\ntable = 4300\nlease = \"20s\"\n\
         fence_margin = \"5s\"\nmetric = {{ serving = 10, owner = 20, fallback = 30 }}\n\
         {HOST}nodes = [\"node-a\", \"node-b\"]\n"
    );
    let config = parse(&text);
    let cluster = config.cluster.unwrap();
    assert_eq!(cluster.node, "node-a");
    assert_eq!(cluster.store.len(), 2);
    assert_eq!(cluster.address, Some(Ipv4Addr::new(10, 99, 0, 11)));
    assert_eq!(cluster.table, 4300);
    assert_eq!(cluster.lease, Duration::from_secs(20));
    assert_eq!(cluster.fence_margin, Duration::from_secs(5));
    assert_eq!(
        cluster.metric,
        Metrics {
            serving: 10,
            owner: 20,
            fallback: 30
        }
    );
    assert_eq!(
        config.hosts[0].nodes.as_deref(),
        Some(&["node-a".to_string(), "node-b".to_string()][..])
    );
    let minimal = parse(&format!(
        "{NET}[cluster]\nnode = \"n1\"\nstore = [\"http://e:2379\"]\n"
    ))
    .cluster
    .unwrap();
    assert_eq!(minimal.table, DEFAULT_TABLE);
    assert_eq!(minimal.lease, DEFAULT_LEASE);
    assert_eq!(minimal.fence_margin, DEFAULT_FENCE_MARGIN);
    assert_eq!(minimal.metric, Metrics::default());
    assert_eq!(minimal.address, None);
}

#[test]
fn bad_cluster_values_are_placed_with_precise_messages() {
    let found = problems(&format!(
        "{NET}[cluster]\nnode = \"Node_A\"\nstore = [\"10.99.0.1:2379\"]\naddress = \"here\"\n\
         table = 254\nlease = \"1s\"\n"
    ));
    let places: Vec<_> = found.iter().map(|p| (p.0, p.1)).collect();
    assert_eq!(
        places,
        vec![(4, 8), (5, 10), (6, 11), (7, 9), (8, 9)],
        "{found:?}"
    );
    assert!(
        found[0].2.contains("\"Node_A\" is not a node name"),
        "{found:?}"
    );
    assert!(found[1].2.contains("is not an etcd endpoint"), "{found:?}");
    assert!(
        found[2]
            .2
            .starts_with("address \"here\" is not an IPv4 address"),
        "{found:?}"
    );
    assert!(found[3].2.contains("254 is not a table"), "{found:?}");
    assert!(found[4].2.contains("outside 2s..=5m"), "{found:?}");

    let found = problems(&format!("{NET}[cluster]\nnode = \"a\"\nstore = []\n"));
    assert_eq!((found[0].0, found[0].1), (5, 9), "{found:?}");
    assert!(found[0].2.starts_with("store lists no etcd endpoint"));

    let found = problems(&format!(
        "{NET}[cluster]\nnode = \"a\"\nstore = [\"http://e:1\"]\nlease = \"5s\"\n\
         fence_margin = \"5s\"\nmetric = {{ owner = 50 }}\nsurprise = 1\n"
    ));
    assert!(found[0].2.contains("unknown field `surprise`"), "{found:?}");
    let found = problems(&format!(
        "{NET}[cluster]\nnode = \"a\"\nstore = [\"http://e:1\"]\nlease = \"5s\"\n\
         fence_margin = \"5s\"\nmetric = {{ owner = 50 }}\n"
    ));
    assert_eq!(found.len(), 2, "{found:?}");
    assert!(
        found[0]
            .2
            .starts_with("fence_margin 5s must be shorter than lease 5s")
    );
    assert!(
        found[1].2.contains("serving < owner < fallback"),
        "{found:?}"
    );
}

#[test]
fn host_nodes_are_checked() {
    let cluster = "[cluster]\nnode = \"a\"\nstore = [\"http://e:1\"]\n";
    let found = problems(&format!(
        "{NET}{cluster}{HOST}nodes = [\"a\", \"b\", \"a\", \"-x\"]\n"
    ));
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(
        found[0].2.contains("\"-x\" is not a node name"),
        "{found:?}"
    );
    let found = problems(&format!(
        "{NET}{cluster}{HOST}nodes = [\"a\", \"b\", \"a\"]\n"
    ));
    assert_eq!((found[0].0, found[0].1), (10, 20), "{found:?}");
    assert_eq!(found[0].2, "host \"web\" names node \"a\" twice in nodes");
    let found = problems(&format!("{NET}{cluster}{HOST}nodes = []\n"));
    assert!(found[0].2.contains("empty nodes list"), "{found:?}");
    // Without [cluster] the key is valid but pointed out.
    let config = parse(&format!("{NET}{HOST}nodes = [\"a\"]\n"));
    assert!(
        config.warnings[0]
            .message
            .contains("no effect without a [cluster]"),
        "{:?}",
        config.warnings
    );
}

fn compose(text: &str) -> Result<Config, crate::config::ConfigError> {
    Config::parse_compose(text, "compose.yaml", [], None, Path::new("/"))
}

#[test]
fn compose_reads_x_imag_cluster_and_service_nodes() {
    let text = "x-imag:\n  network:\n    subnet: 10.3.0.0/24\n  cluster:\n    node: node-a\n    \
                store: [http://10.99.0.1:2379]\n    lease: 6s\n    metric:\n      fallback: 900\n\
                services:\n  web:\n    image: i\n    x-imag:\n      nodes: [node-a]\n";
    let config = compose(text).expect("valid");
    let cluster = config.cluster.unwrap();
    assert_eq!(cluster.node, "node-a");
    assert_eq!(cluster.store, vec!["http://10.99.0.1:2379".to_string()]);
    assert_eq!(cluster.lease, Duration::from_secs(6));
    assert_eq!(cluster.metric.fallback, 900);
    assert_eq!(config.hosts[0].nodes, Some(vec!["node-a".to_string()]));

    let bad = "x-imag:\n  network:\n    subnet: 10.3.0.0/24\n  cluster:\n    node: a\n    \
               tabel: 5\nservices:\n  web:\n    image: i\n    x-imag:\n      nodes: [a, a]\n";
    let err = compose(bad).expect_err("invalid");
    let messages: Vec<_> = err.problems.iter().map(|p| p.message.as_str()).collect();
    assert!(
        messages
            .iter()
            .any(|m| m.starts_with("unknown key `tabel` in x-imag.cluster")),
        "{messages:?}"
    );
    assert!(
        messages
            .iter()
            .any(|m| m.starts_with("x-imag.cluster needs store")),
        "{messages:?}"
    );
    assert!(
        messages
            .iter()
            .any(|m| m.contains("names node \"a\" twice")),
        "{messages:?}"
    );
}

#[test]
fn the_cluster_name_is_the_store_prefix_and_must_be_a_name() {
    let base = format!("{NET}[cluster]\nnode = \"n1\"\nstore = [\"http://e:2379\"]\n");
    assert_eq!(
        parse(&base).cluster.unwrap().name,
        None,
        "default: the network's"
    );
    let named = parse(&format!("{base}name = \"shop\"\n"));
    assert_eq!(named.cluster.unwrap().name.as_deref(), Some("shop"));
    let text = format!("{base}name = \"a/b\"\n");
    let found = problems(&text);
    assert!(
        found.iter().any(|p| p.2.contains("cluster name \"a/b\"")),
        "{found:?}"
    );
}
