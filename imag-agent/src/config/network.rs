//! The `[network]` section: the imaginary address space, the Docker network and bridge behind it,
//! and the defaults that hosts inherit (`host.rs` reads them).

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use toml::Spanned;

use super::{
    field::{Report, field, field_or, items, parse_with, span},
    raw,
    values::{BridgeName, NetworkName, Prefix, Subnet},
};
use crate::runtime::NetworkSpec;

/// Default Docker network name.
pub const DEFAULT_NETWORK_NAME: &str = "imag";
/// Default name of the Linux bridge behind the Docker network.
pub const DEFAULT_BRIDGE_NAME: &str = "imag0";

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

impl NetworkConfig {
    /// What the container engine needs to know of the network.
    pub fn spec(&self) -> NetworkSpec {
        NetworkSpec {
            name: self.name.clone(),
            bridge: self.bridge.clone(),
            subnet: self.subnet,
            gateway: self.gateway,
        }
    }
}

/// Checks `[network]`. A bad name or bridge is reported but still yields a network, so that hosts
/// are checked against the subnet too; without a usable subnet or gateway there is none (and the
/// section's later keys are not checked).
pub(super) fn validate(
    raw: &Spanned<raw::Network>,
    report: &mut Report<'_>,
) -> Option<NetworkConfig> {
    let net = raw.get_ref();
    let subnet = field(&net.subnet, "subnet", report).map(|Subnet(s)| s);
    let name = field_or(
        net.name.as_ref(),
        "network name",
        NetworkName(DEFAULT_NETWORK_NAME.to_string()),
        report,
    );
    let bridge = field_or(
        net.bridge.as_ref(),
        "bridge name",
        BridgeName(DEFAULT_BRIDGE_NAME.to_string()),
        report,
    );
    let subnet = subnet?;
    let gateway = match &net.gateway {
        None => subnet.hosts().next()?,
        Some(gw) => {
            let addr: Ipv4Addr = parse_with(gw, report, |_| {
                format!("gateway {:?} is not an IPv4 address", gw.get_ref())
            })?;
            let why = if !subnet.contains(&addr) {
                Some("lies outside the subnet")
            } else if addr == subnet.network() {
                Some("is the network address of the subnet")
            } else if addr == subnet.broadcast() {
                Some("is the broadcast address of the subnet")
            } else {
                None
            };
            if let Some(why) = why {
                report(
                    span(gw),
                    format!("gateway {addr} {why} {subnet}: pick an address inside it"),
                );
                return None;
            }
            addr
        }
    };
    let idle_ignore: Vec<Prefix> = items(&net.idle_ignore, report)?;
    Some(NetworkConfig {
        // Reported above when bad; the whole configuration is refused then, so any name does.
        name: name.map(|n| n.0).unwrap_or_default(),
        bridge: bridge.map(|b| b.0).unwrap_or_default(),
        subnet,
        gateway,
        proxy_arp: net.proxy_arp.unwrap_or(false),
        answer_ping: net.answer_ping.unwrap_or(true),
        idle_ignore: idle_ignore.into_iter().map(|p| p.0).collect(),
    })
}

#[cfg(test)]
mod tests {
    use crate::config::{Config, tests::problems};

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
    fn special_subnets_and_names_are_placed() {
        for (subnet, what) in [
            ("0.0.0.0/0", "\"this network\""),
            ("127.0.0.0/8", "loopback"),
            ("224.0.0.0/4", "multicast"),
            ("0.0.0.0/8", "\"this network\""),
            ("255.255.255.0/24", "reserved"),
        ] {
            let found = problems(&format!("[network]\nsubnet = \"{subnet}\"\n"));
            assert_eq!(found.len(), 1, "{found:?}");
            assert_eq!((found[0].0, found[0].1), (2, 10), "{found:?}");
            assert!(found[0].2.contains(what), "{subnet}: {found:?}");
        }
        for bridge in [".", ".."] {
            let found = problems(&format!(
                "[network]\nsubnet = \"10.0.0.0/24\"\nbridge = \"{bridge}\"\n"
            ));
            assert_eq!((found[0].0, found[0].1), (3, 10), "{found:?}");
            assert!(found[0].2.contains("not a valid interface name"));
        }
        let long = "n".repeat(93);
        let found = problems(&format!(
            "[network]\nsubnet = \"10.0.0.0/24\"\nname = \"{long}\"\n"
        ));
        assert_eq!((found[0].0, found[0].1), (3, 8), "{found:?}");
        assert!(found[0].2.contains("control socket"), "{found:?}");
    }

    #[test]
    fn names_gateway_and_defaults() {
        let config = Config::parse(
            "[network]\nsubnet = \"10.0.0.0/24\"\nname = \"lab\"\nbridge = \"lab0\"\ngateway = \
             \"10.0.0.254\"\nidle_ignore = [\"10.9.0.1\"]\n",
            "t",
        )
        .unwrap();
        let net = &config.network;
        assert_eq!((net.name.as_str(), net.bridge.as_str()), ("lab", "lab0"));
        assert_eq!(
            net.gateway,
            "10.0.0.254".parse::<std::net::Ipv4Addr>().unwrap()
        );
        assert_eq!(net.idle_ignore, vec!["10.9.0.1/32".parse().unwrap()]);
        assert!(!net.proxy_arp && net.answer_ping);
    }

    #[test]
    fn bad_names_and_gateways_are_placed() {
        let found = problems(
            "[network]\nsubnet = \"10.0.0.0/24\"\nname = \"-x\"\nbridge = \"a very long bridge\"\n",
        );
        assert_eq!(
            found,
            vec![
                (
                    3,
                    8,
                    "network name \"-x\" is not a valid network name (letters, digits, '_', \
                     '.', '-'; no \"--\" and no '-' at the end: container names are \
                     <network>--<host>)"
                        .to_string()
                ),
                (
                    4,
                    10,
                    "bridge name \"a very long bridge\" is not a valid interface name (1-15 \
                     bytes, not \".\" or \"..\", no '/', ':' or spaces)"
                        .to_string()
                ),
            ]
        );
        for (gateway, message) in [
            (
                "10.0.1.1",
                "gateway 10.0.1.1 lies outside the subnet 10.0.0.0/24: pick an address inside it",
            ),
            (
                "10.0.0.0",
                "gateway 10.0.0.0 is the network address of the subnet 10.0.0.0/24: pick an \
                 address inside it",
            ),
            (
                "10.0.0.255",
                "gateway 10.0.0.255 is the broadcast address of the subnet 10.0.0.0/24: pick an \
                 address inside it",
            ),
            ("router", "gateway \"router\" is not an IPv4 address"),
        ] {
            let found = problems(&format!(
                "[network]\nsubnet = \"10.0.0.0/24\"\ngateway = \"{gateway}\"\n"
            ));
            assert_eq!(found, vec![(3, 11, message.to_string())]);
        }
    }
}
