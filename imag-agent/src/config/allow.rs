//! `allow_from` across hosts: each restricted host's list of sources, from its own key or the
//! `[network]` default, with host names turned into those hosts' addresses (a name nobody
//! configured is reported where it is written). A cross-host pass like `depends.rs`: names can
//! refer to hosts later in the file.
//!
//! The network's gateway is added to every list: the agent's ready probes and its DNS answers
//! come from it, and a host that could not be probed would never finish waking.

use std::{collections::HashMap, net::Ipv4Addr};

use ipnet::Ipv4Net;
use toml::Spanned;

use super::{HostConfig, NetworkConfig, field::Report, raw, span, values::AllowSource};

/// Fills `allow_from` of every host in `hosts` (validated, so names are unique) from `raw`.
pub(super) fn resolve(
    raw: &raw::Config,
    network: Option<&NetworkConfig>,
    hosts: &mut [HostConfig],
    report: &mut Report<'_>,
) {
    let addresses: HashMap<String, Ipv4Addr> =
        hosts.iter().map(|h| (h.name.clone(), h.address)).collect();
    let all_names: Vec<&str> = raw
        .host
        .iter()
        .map(|h| h.get_ref().name.get_ref().as_str())
        .collect();
    let mut resolve_list = |list: &[Spanned<String>], whose: &str| -> Option<Vec<Ipv4Net>> {
        let mut ok = true;
        let mut out = Vec::with_capacity(list.len());
        for entry in list {
            let source = match entry.get_ref().parse::<AllowSource>() {
                Ok(source) => source,
                Err(err) => {
                    report(span(entry), err.to_string());
                    ok = false;
                    continue;
                }
            };
            match source {
                AllowSource::Prefix(net) => out.push(net),
                AllowSource::Host(name) => match addresses.get(&name) {
                    Some(addr) => out.push(Ipv4Net::from(*addr)),
                    // A host with problems of its own: those are reported already.
                    None if all_names.contains(&name.as_str()) => ok = false,
                    None => {
                        report(
                            span(entry),
                            format!(
                                "allow_from of {whose} names {name:?}, which is neither a \
                                 configured host nor an IPv4 prefix"
                            ),
                        );
                        ok = false;
                    }
                },
            }
        }
        ok.then_some(out)
    };
    let default = raw.network.get_ref().allow_from.as_ref();
    let default = default.map(|list| resolve_list(list, "[network]"));
    // By name, the first host of each (as a search would find it): one lookup per host, so that a
    // configuration with tens of thousands of hosts is checked in linear time.
    let mut by_name: HashMap<&str, &raw::Host> = HashMap::with_capacity(raw.host.len());
    for r in &raw.host {
        by_name
            .entry(r.get_ref().name.get_ref())
            .or_insert(r.get_ref());
    }
    let mut lists = Vec::with_capacity(hosts.len());
    for host in hosts.iter() {
        let own = by_name
            .get(host.name.as_str())
            .and_then(|r| r.allow_from.as_ref());
        lists.push(match own {
            Some(list) => Some(resolve_list(list, &format!("host {:?}", host.name))),
            None => default.clone(),
        });
    }
    let gateway = network.map(|n| Ipv4Net::from(n.gateway));
    for (host, list) in hosts.iter_mut().zip(lists) {
        // Problems were reported; the configuration is refused, so any value does.
        let Some(Some(mut list)) = list else { continue };
        if list.iter().any(|net| net.prefix_len() == 0) {
            continue; // everyone: no restriction, and no lookup per packet
        }
        list.extend(gateway);
        list.sort();
        list.dedup();
        host.allow_from = Some(list);
    }
}

#[cfg(test)]
mod tests {
    use std::fmt::Write as _;

    use crate::config::{Config, tests::problems};

    fn config(network: &str, hosts: &[(&str, &str)]) -> String {
        let mut text = format!("[network]\nsubnet = \"10.9.0.0/24\"\n{network}\n");
        for (i, (name, allow)) in hosts.iter().enumerate() {
            let _ = write!(
                text,
                "\n[[host]]\nname = \"{name}\"\naddress = \"10.9.0.{}\"\nimage = \"i\"\n{allow}\n",
                10 + i
            );
        }
        text
    }

    #[allow(clippy::unnecessary_wraps, reason = "compared with an Option field")]
    fn nets(list: &[&str]) -> Option<Vec<ipnet::Ipv4Net>> {
        Some(list.iter().map(|s| s.parse().unwrap()).collect())
    }

    #[test]
    fn prefixes_addresses_and_host_names_resolve_with_the_gateway_added() {
        let text = config(
            "allow_from = [\"10.1.0.0/16\"]",
            &[
                (
                    "web",
                    "allow_from = [\"frontend\", \"192.168.1.7\", \"10.8.0.0/24\"]",
                ),
                ("api", ""),
                ("frontend", "allow_from = [\"0.0.0.0/0\"]"),
            ],
        );
        let c = Config::parse(&text, "t").unwrap();
        let allow = |h: &str| c.host(h).unwrap().allow_from.clone();
        assert_eq!(
            allow("web"),
            nets(&[
                "10.8.0.0/24",
                "10.9.0.1/32",
                "10.9.0.12/32",
                "192.168.1.7/32"
            ]),
            "a name later in the file is that host's address"
        );
        assert_eq!(
            allow("api"),
            nets(&["10.1.0.0/16", "10.9.0.1/32"]),
            "the default"
        );
        assert_eq!(allow("frontend"), None, "0.0.0.0/0 restricts nothing");
        let open = Config::parse(&config("", &[("web", "")]), "t").unwrap();
        assert_eq!(
            open.hosts[0].allow_from, None,
            "without allow_from: everyone"
        );
        let closed = Config::parse(&config("", &[("web", "allow_from = []")]), "t").unwrap();
        assert_eq!(
            closed.hosts[0].allow_from,
            nets(&["10.9.0.1/32"]),
            "nobody but the agent"
        );
    }

    #[test]
    fn unknown_names_and_bad_values_are_reported_where_written() {
        let text = config(
            "allow_from = [\"nobody\"]",
            &[
                ("web", "allow_from = [\"api\", \"10.0.0.300\", \"ghost\"]"),
                ("api", ""),
            ],
        );
        let found = problems(&text);
        assert_eq!(found.len(), 3, "{found:?}");
        assert_eq!((found[0].0, found[0].1), (3, 15), "{found:?}");
        assert!(
            found[0]
                .2
                .contains("allow_from of [network] names \"nobody\"")
        );
        assert_eq!((found[1].0, found[1].1), (9, 22), "{found:?}");
        assert!(
            found[1]
                .2
                .contains("\"10.0.0.300\" is neither an IPv4 prefix")
        );
        assert_eq!((found[2].0, found[2].1), (9, 36), "{found:?}");
        assert!(found[2].2.contains("host \"web\" names \"ghost\""));
    }
}
