//! What the agent changes in the host's own network configuration, and undoes on exit: firewall
//! rules that let traffic from the attach interfaces be forwarded into the imag network.
//!
//! Docker's FORWARD policy is DROP, and Docker only accepts traffic into a bridge network that a
//! published port or an established connection explains. imag's hosts have no published ports:
//! their addresses are reached directly. So for each attach interface the agent inserts rules
//! into Docker's DOCKER-USER chain, each tagged with a comment (`imag:<network>`) so that
//! `detach` and a restarted agent can find them:
//!
//! - for each host that declares `ports`: `-d ADDR -p tcp -m multiport --dports PORTS -j
//!   ACCEPT` (and the same for UDP: a port number does not say its protocol), `-d ADDR -p icmp
//!   --icmp-type echo-request -j ACCEPT`, then `-d ADDR -j RETURN`: anything else new to the host
//!   falls through to Docker's own rules, which pass replies to the host's own connections
//!   (conntrack) and drop the rest;
//! - below those, `-i IFACE -d SUBNET -j ACCEPT` for hosts that declare no ports (and the
//!   gateway), as before.
//!
//! With `[cluster]`, one more rule, in the nat table: Docker masquerades traffic that leaves a
//! bridge network for another interface, but a host calling a host served by another node must
//! keep its source address, so `-t nat -I POSTROUTING -s SUBNET -d SUBNET -j RETURN` (same
//! comment) goes above Docker's masquerading ([`keep_subnet_source`]).

use std::{fmt::Write as _, net::Ipv4Addr, process::Command};

use ipnet::Ipv4Net;
use tracing::{debug, info, warn};

const CHAIN: &str = "DOCKER-USER";
/// Most ports one `multiport` match takes.
const MULTIPORT_MAX: usize = 15;

#[derive(Debug, thiserror::Error)]
pub enum FirewallError {
    #[error("cannot run iptables ({0}): install iptables, which Docker also needs")]
    NoIptables(String),
    #[error(
        "Docker's {CHAIN} chain does not exist: is the Docker engine running and managing \
         iptables (\"iptables\": true in /etc/docker/daemon.json)?"
    )]
    NoDockerChain,
    #[error("iptables {args} failed: {stderr}")]
    Failed { args: String, stderr: String },
}

/// What one rule matches (beyond its interface) and does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// Accept everything into the subnet.
    Subnet(Ipv4Net),
    /// Accept new TCP or UDP traffic to these ports of a host (at most [`MULTIPORT_MAX`]).
    Ports {
        host: Ipv4Addr,
        protocol: &'static str,
        ports: Vec<u16>,
    },
    /// Accept echo requests to a host.
    Echo(Ipv4Addr),
    /// Leave the rest of a host's traffic to Docker's rules (replies pass, new traffic is
    /// dropped).
    Rest(Ipv4Addr),
}

/// One rule for traffic from `iface`, tagged `imag:<network>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ForwardRule {
    pub iface: String,
    pub network: String,
    pub target: Target,
}

fn comment(network: &str) -> String {
    format!("imag:{network}")
}

/// The rules for one attach interface, in the order to insert them (each goes to the top of the
/// chain, so the last inserted is matched first): the subnet's accept, then for each host that
/// declares ports (`hosts`: address and ports) its fall-through and, above it, its accepts.
pub fn rules_for(
    iface: &str,
    network: &str,
    subnet: Ipv4Net,
    hosts: &[(Ipv4Addr, Vec<u16>)],
) -> Vec<ForwardRule> {
    let rule = |target| ForwardRule {
        iface: iface.to_string(),
        network: network.to_string(),
        target,
    };
    let mut rules = vec![rule(Target::Subnet(subnet))];
    for (host, ports) in hosts.iter().filter(|(_, ports)| !ports.is_empty()) {
        let mut ports = ports.clone();
        ports.sort_unstable();
        ports.dedup();
        rules.push(rule(Target::Rest(*host)));
        rules.push(rule(Target::Echo(*host)));
        for protocol in ["udp", "tcp"] {
            for chunk in ports.chunks(MULTIPORT_MAX) {
                rules.push(rule(Target::Ports {
                    host: *host,
                    protocol,
                    ports: chunk.to_vec(),
                }));
            }
        }
    }
    rules
}

impl ForwardRule {
    fn spec(&self) -> Vec<String> {
        let mut spec: Vec<String> = vec!["-i".into(), self.iface.clone()];
        let host = |addr: &Ipv4Addr| ["-d".to_string(), format!("{addr}/32")];
        let verdict = match &self.target {
            Target::Subnet(subnet) => {
                spec.extend(["-d".to_string(), subnet.to_string()]);
                "ACCEPT"
            }
            Target::Ports {
                host: addr,
                protocol,
                ports,
            } => {
                let list: Vec<String> = ports.iter().map(u16::to_string).collect();
                spec.extend(host(addr));
                spec.extend(["-p", protocol, "-m", "multiport", "--dports"].map(String::from));
                spec.push(list.join(","));
                "ACCEPT"
            }
            Target::Echo(addr) => {
                spec.extend(host(addr));
                spec.extend(["-p", "icmp", "--icmp-type", "echo-request"].map(String::from));
                "ACCEPT"
            }
            Target::Rest(addr) => {
                spec.extend(host(addr));
                "RETURN"
            }
        };
        spec.extend(["-m", "comment", "--comment"].map(String::from));
        spec.push(comment(&self.network));
        spec.extend(["-j".to_string(), verdict.to_string()]);
        spec
    }
}

/// Installs `rules` (of `network`, in [`rules_for`]'s order) in one `iptables-restore` commit,
/// replacing in the same commit every rule of `network` an earlier agent left (kill -9,
/// `--on-exit keep`): forwarding never lapses, and a thousand hosts cost one call, not three
/// per rule (at ~20 ms a call, 1,000 hosts with ports took four minutes to attach). Returns how
/// many rules were replaced.
pub fn install(rules: &[ForwardRule], network: &str) -> Result<usize, FirewallError> {
    let listing = match iptables(&["-w", "-S", CHAIN]) {
        Ok(listing) => listing,
        Err(FirewallError::Failed { .. }) => return Err(FirewallError::NoDockerChain),
        Err(other) => return Err(other),
    };
    let (batch, replaced) = install_batch(&listing, rules, network);
    restore(&batch)?;
    for rule in rules {
        debug!(iface = %rule.iface, target = ?rule.target, "forwarding into the imag network allowed");
    }
    info!(
        rules = rules.len(),
        replaced, "forwarding into the imag network allowed"
    );
    Ok(replaced)
}

/// The `iptables-restore` input that deletes `network`'s rules in `listing` (`iptables -S` of the
/// chain) and inserts `rules`; and how many it deletes.
fn install_batch(listing: &str, rules: &[ForwardRule], network: &str) -> (String, usize) {
    let mut batch = String::from("*filter\n");
    let mut replaced = 0;
    for line in listing.lines() {
        if let Some(rest) = ours(line, network) {
            batch.push_str("-D ");
            batch.push_str(rest);
            batch.push('\n');
            replaced += 1;
        }
    }
    for rule in rules {
        let _ = writeln!(batch, "-I {CHAIN} {}", rule.spec().join(" "));
    }
    batch.push_str("COMMIT\n");
    (batch, replaced)
}

/// The rule of an `iptables -S` line after its `-A` (chain and match, quoting as listed), if it
/// is tagged for `network`.
fn ours<'a>(line: &'a str, network: &str) -> Option<&'a str> {
    let rest = line.strip_prefix("-A ")?;
    let words: Vec<&str> = rest.split_whitespace().collect();
    let tag = words.iter().position(|w| *w == "--comment")?;
    (words.get(tag + 1)?.trim_matches('"') == comment(network)).then_some(rest)
}

/// Feeds `batch` to `iptables-restore --noflush`: one atomic commit per table.
fn restore(batch: &str) -> Result<(), FirewallError> {
    use std::io::Write as _;
    let mut child = Command::new("iptables-restore")
        .args(["-w", "--noflush"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| FirewallError::NoIptables(format!("iptables-restore: {e}")))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(batch.as_bytes())
            .map_err(|e| FirewallError::NoIptables(format!("iptables-restore: {e}")))?;
    }
    let output = child
        .wait_with_output()
        .map_err(|e| FirewallError::NoIptables(format!("iptables-restore: {e}")))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(FirewallError::Failed {
            args: "-restore -w --noflush".into(),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
        })
    }
}

fn iptables<S: AsRef<str>>(args: &[S]) -> Result<String, FirewallError> {
    let args: Vec<&str> = args.iter().map(AsRef::as_ref).collect();
    let output = Command::new("iptables")
        .args(&args)
        .output()
        .map_err(|e| FirewallError::NoIptables(e.to_string()))?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(FirewallError::Failed {
            args: args.join(" "),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
        })
    }
}

/// The cluster's nat rule for `subnet`: traffic between the subnet's hosts keeps its source.
fn subnet_source_spec(network: &str, subnet: Ipv4Net) -> Vec<String> {
    let mut spec: Vec<String> = ["-t", "nat"].map(String::from).to_vec();
    spec.push("{verb}".into());
    spec.push("POSTROUTING".into());
    spec.extend([
        "-s".to_string(),
        subnet.to_string(),
        "-d".into(),
        subnet.to_string(),
    ]);
    spec.extend(["-m", "comment", "--comment"].map(String::from));
    spec.push(comment(network));
    spec.extend(["-j".to_string(), "RETURN".into()]);
    spec
}

fn with_verb(spec: &[String], verb: &str) -> Vec<String> {
    let mut args = vec!["-w".to_string()];
    args.extend(spec.iter().map(|w| {
        if w == "{verb}" {
            verb.to_string()
        } else {
            w.clone()
        }
    }));
    args
}

/// Inserts `-t nat -I POSTROUTING -s SUBNET -d SUBNET -j RETURN` (tagged `imag:<network>`)
/// unless it is there; returns whether it was inserted.
pub fn keep_subnet_source(network: &str, subnet: Ipv4Net) -> Result<bool, FirewallError> {
    let spec = subnet_source_spec(network, subnet);
    if iptables(&with_verb(&spec, "-C")).is_ok() {
        return Ok(false);
    }
    iptables(&with_verb(&spec, "-I"))?;
    info!(%subnet, "traffic between the subnet's hosts on different nodes keeps its source");
    Ok(true)
}

/// Removes the rule of [`keep_subnet_source`] (every copy).
pub fn forget_subnet_source(network: &str, subnet: Ipv4Net) {
    let args = with_verb(&subnet_source_spec(network, subnet), "-D");
    while iptables(&args).is_ok() {}
}

/// Removes every rule tagged for `network` (what `detach`, a clean exit and a failed start do):
/// Docker's DOCKER-USER chain and the cluster's nat rule, one `iptables-restore` commit per table
/// (rule by rule if that fails, e.g. a rule that went meanwhile); returns how many.
pub fn remove_rules_of(network: &str) -> usize {
    let mut removed = 0;
    for (table, chain) in [("filter", CHAIN), ("nat", "POSTROUTING")] {
        let Ok(listing) = iptables(&["-w", "-t", table, "-S", chain]) else {
            continue;
        };
        let lines: Vec<&str> = listing
            .lines()
            .filter_map(|line| ours(line, network))
            .collect();
        if lines.is_empty() {
            continue;
        }
        let mut batch = format!("*{table}\n");
        for rest in &lines {
            batch.push_str("-D ");
            batch.push_str(rest);
            batch.push('\n');
        }
        batch.push_str("COMMIT\n");
        if let Err(err) = restore(&batch) {
            warn!(error = %err, table, "removing the forwarding rules at once failed; one by one");
            for line in listing.lines() {
                let Some(mut args) = deletion_of(line, network) else {
                    continue;
                };
                args.splice(1..1, ["-t".to_string(), table.to_string()]);
                if let Err(err) = iptables(&args) {
                    warn!(error = %err, "removing a forwarding rule failed");
                }
            }
        }
        removed += lines.len();
    }
    removed
}

/// The arguments that delete the rule an `iptables -S` line describes, if it is one of ours for
/// `network` (whatever its shape: the comment says whose it is).
fn deletion_of(line: &str, network: &str) -> Option<Vec<String>> {
    let words: Vec<&str> = line.split_whitespace().collect();
    let tag = words.iter().position(|w| *w == "--comment")?;
    (words.get(tag + 1)?.trim_matches('"') == comment(network)).then_some(())?;
    let (&"-A", rest) = words.split_first()? else {
        return None;
    };
    let mut args = vec!["-w".to_string(), "-D".to_string()];
    args.extend(rest.iter().map(|w| w.trim_matches('"').to_string()));
    Some(args)
}

/// Makes sure the kernel forwards IPv4 (Docker normally turns this on). Returns whether it had
/// to be turned on, so that the caller can turn it off again.
pub fn ensure_ip_forwarding() -> std::io::Result<bool> {
    const PATH: &str = "/proc/sys/net/ipv4/ip_forward";
    if std::fs::read_to_string(PATH)?.trim() == "1" {
        return Ok(false);
    }
    std::fs::write(PATH, "1")?;
    warn!("IPv4 forwarding was off; turned it on (it is turned off again on exit)");
    Ok(true)
}

pub fn disable_ip_forwarding() {
    if let Err(err) = std::fs::write("/proc/sys/net/ipv4/ip_forward", "0") {
        warn!(error = %err, "could not turn IPv4 forwarding off again");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_our_rules_in_an_iptables_listing_whatever_their_shape() {
        let line = r#"-A DOCKER-USER -d 10.200.26.0/24 -i imagt26h -m comment --comment "imag:imagt26" -j ACCEPT"#;
        assert_eq!(
            deletion_of(line, "imagt26").unwrap().join(" "),
            "-w -D DOCKER-USER -d 10.200.26.0/24 -i imagt26h -m comment --comment imag:imagt26 -j ACCEPT"
        );
        let ports = r#"-A DOCKER-USER -d 10.200.26.10/32 -i imagt26h -p tcp -m multiport --dports 80,8080 -m comment --comment "imag:imagt26" -j ACCEPT"#;
        assert!(deletion_of(ports, "imagt26").is_some());
        assert_eq!(deletion_of(line, "imagt2"), None, "another network's rule");
        assert_eq!(deletion_of("-A DOCKER-USER -j RETURN", "imagt26"), None);
    }

    #[test]
    fn one_commit_replaces_what_an_earlier_agent_left_and_inserts_in_order() {
        let listing = "-N DOCKER-USER\n\
             -A DOCKER-USER -d 10.77.0.10/32 -i eth0 -m comment --comment \"imag:imag\" -j RETURN\n\
             -A DOCKER-USER -d 10.78.0.0/24 -i eth0 -m comment --comment \"imag:other\" -j ACCEPT\n\
             -A DOCKER-USER -j RETURN\n";
        let subnet: Ipv4Net = "10.77.0.0/24".parse().unwrap();
        let rules = rules_for(
            "eth0",
            "imag",
            subnet,
            &[(Ipv4Addr::new(10, 77, 0, 10), vec![80])],
        );
        let (batch, replaced) = install_batch(listing, &rules, "imag");
        assert_eq!(replaced, 1, "only this network's rule: {batch}");
        let lines: Vec<&str> = batch.lines().collect();
        assert_eq!(lines[0], "*filter");
        assert_eq!(
            lines[1],
            "-D DOCKER-USER -d 10.77.0.10/32 -i eth0 -m comment --comment \"imag:imag\" -j RETURN"
        );
        assert_eq!(
            lines[2],
            "-I DOCKER-USER -i eth0 -d 10.77.0.0/24 -m comment --comment imag:imag -j ACCEPT",
            "inserted in rules_for's order, each at the top: the subnet's ends up last"
        );
        assert_eq!(lines.len(), 2 + rules.len() + 1);
        assert_eq!(lines.last(), Some(&"COMMIT"));
        assert!(!batch.contains("imag:other") && !batch.contains("-D DOCKER-USER -j RETURN"));
    }

    #[test]
    fn hosts_with_ports_get_only_those_ports_above_the_subnet_rule() {
        let subnet: Ipv4Net = "10.77.0.0/24".parse().unwrap();
        let web = Ipv4Addr::new(10, 77, 0, 10);
        let open = Ipv4Addr::new(10, 77, 0, 11);
        let many: Vec<u16> = (1..=20).collect();
        let rules = rules_for(
            "eth0",
            "imag",
            subnet,
            &[(web, vec![8080, 80, 8080]), (open, vec![]), (web, many)],
        );
        let specs: Vec<String> = rules.iter().map(|r| r.spec().join(" ")).collect();
        assert_eq!(
            specs[0], "-i eth0 -d 10.77.0.0/24 -m comment --comment imag:imag -j ACCEPT",
            "the subnet rule is inserted first, so it ends up below every host's"
        );
        assert_eq!(
            specs[1..5],
            [
                "-i eth0 -d 10.77.0.10/32 -m comment --comment imag:imag -j RETURN",
                "-i eth0 -d 10.77.0.10/32 -p icmp --icmp-type echo-request -m comment --comment imag:imag -j ACCEPT",
                "-i eth0 -d 10.77.0.10/32 -p udp -m multiport --dports 80,8080 -m comment --comment imag:imag -j ACCEPT",
                "-i eth0 -d 10.77.0.10/32 -p tcp -m multiport --dports 80,8080 -m comment --comment imag:imag -j ACCEPT",
            ]
        );
        assert!(
            !specs.iter().any(|s| s.contains("10.77.0.11")),
            "a host without ports is covered by the subnet rule"
        );
        let chunks = specs
            .iter()
            .filter(|s| s.contains("-p tcp") && s.contains("1,2,3"))
            .count();
        assert_eq!(chunks, 1, "20 ports take two multiport rules per protocol");
        assert!(
            specs
                .iter()
                .any(|s| s.contains("-p tcp") && s.contains("16,17,18,19,20"))
        );
    }
}
