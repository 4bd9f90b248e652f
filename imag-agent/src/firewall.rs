//! What the agent changes in the host's own network configuration, and undoes on exit: firewall
//! rules that let traffic from the attach interfaces be forwarded into the imag network.
//!
//! Docker's FORWARD policy is DROP, and Docker only accepts traffic into a bridge network that a
//! published port or an established connection explains. imag's hosts have no published ports:
//! their addresses are reached directly. So the agent keeps a chain of its own per network
//! (`IMAG-<network>`, [`chain_of`]) with one jump to it at the top of Docker's DOCKER-USER chain,
//! tagged with a comment (`imag:<network>`) so that `detach` and a restarted agent can find it;
//! in its chain, for each attach interface:
//!
//! - for each host that declares `ports`: `-d ADDR -p tcp -m multiport --dports PORTS -j
//!   ACCEPT` (and the same for UDP: a port number does not say its protocol), `-d ADDR -p icmp
//!   --icmp-type echo-request -j ACCEPT`, then `-d ADDR -j RETURN`: anything else new to the host
//!   falls through to Docker's own rules, which pass replies to the host's own connections
//!   (conntrack) and drop the rest;
//! - below those, `-i IFACE -d SUBNET -j ACCEPT` for hosts that declare no ports (and the
//!   gateway), as before.
//!
//! The chain is filled in one `iptables-restore --noflush` commit (declaring it flushes what an
//! earlier agent left there, in the same commit: forwarding never lapses) and removed in one
//! (jump, flush, chain): a thousand hosts cost one call each way. One chain rather than rules in
//! DOCKER-USER itself: deleting 40,000 rules one by one (10,000 hosts with ports) takes the
//! kernel minutes, flushing a chain does not. Rules of agents from before the chain (tagged, in
//! DOCKER-USER) are deleted in the install commit.
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
    /// Accept packets of connections conntrack already knows (what Docker's own rules accept
    /// too), so that only a connection's first packet walks the hosts' rules below.
    Established(Ipv4Net),
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

/// The longest chain name iptables takes.
const CHAIN_NAME_MAX: usize = 28;

/// imag's chain for `network`: `IMAG-<network>`, or, for a name too long for iptables, its first
/// characters and a hash of the whole (stable across builds: XXH3).
pub fn chain_of(network: &str) -> String {
    let name = format!("IMAG-{network}");
    if name.len() <= CHAIN_NAME_MAX {
        return name;
    }
    let hash = xxhash_rust::xxh3::xxh3_64(network.as_bytes());
    let head: String = network.chars().take(14).collect();
    #[allow(
        clippy::cast_possible_truncation,
        reason = "eight hex digits of the hash are enough to tell networks apart"
    )]
    let short = hash as u32;
    format!("IMAG-{head}-{short:08x}")
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
    // Every forwarded packet passes DOCKER-USER (before Docker's own "established" accept): with
    // rules per host, the chain would be walked in full by every packet of every connection.
    if rules.len() > 1 {
        rules.push(rule(Target::Established(subnet)));
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
            Target::Established(subnet) => {
                spec.extend(["-d".to_string(), subnet.to_string()]);
                spec.extend(
                    ["-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED"].map(String::from),
                );
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

/// Installs `rules` (of `network`, in [`rules_for`]'s order) in `network`'s own chain in one
/// `iptables-restore` commit: the chain is created, or emptied of what an earlier agent left
/// (kill -9, `--on-exit keep`), filled, and jumped to from DOCKER-USER, so forwarding never
/// lapses; what it replaced in DOCKER-USER (an earlier agent's jump, or rules from before the
/// chain) is logged.
pub fn install(rules: &[ForwardRule], network: &str) -> Result<(), FirewallError> {
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
        replaced,
        chain = chain_of(network),
        "forwarding into the imag network allowed"
    );
    Ok(())
}

/// The `iptables-restore` input that installs `rules` in `network`'s chain, given `listing`
/// (`iptables -S DOCKER-USER`); and how many DOCKER-USER rules it deletes.
fn install_batch(listing: &str, rules: &[ForwardRule], network: &str) -> (String, usize) {
    let chain = chain_of(network);
    // Declaring a user chain creates it, or (with --noflush) empties it.
    let mut batch = format!("*filter\n:{chain} - [0:0]\n");
    let mut replaced = 0;
    for line in listing.lines() {
        if let Some(rest) = ours(line, network) {
            let _ = writeln!(batch, "-D {rest}");
            replaced += 1;
        }
    }
    for rule in rules {
        let _ = writeln!(batch, "-I {chain} {}", rule.spec().join(" "));
    }
    let _ = writeln!(
        batch,
        "-I {CHAIN} -m comment --comment {} -j {chain}\nCOMMIT",
        comment(network)
    );
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
    let unrunnable =
        |e: std::io::Error| FirewallError::NoIptables(format!("iptables-restore: {e}"));
    let mut child = Command::new("iptables-restore")
        .args(["-w", "--noflush"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(unrunnable)?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(batch.as_bytes()).map_err(unrunnable)?;
    }
    let output = child.wait_with_output().map_err(unrunnable)?;
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

/// Removes what [`install`] and [`keep_subnet_source`] set up for `network` (what `detach`, a
/// clean exit and a failed start do): the jump from DOCKER-USER (and any rule tagged for the
/// network there, from agents before the chain), the chain itself, and the cluster's nat rule; one
/// `iptables-restore` commit per table (command by command if that fails). Returns how many rules
/// and chains it removed.
pub fn remove_rules_of(network: &str) -> usize {
    let chain = chain_of(network);
    let mut removed = 0;
    for (table, parent) in [("filter", CHAIN), ("nat", "POSTROUTING")] {
        let Ok(listing) = iptables(&["-w", "-t", table, "-S", parent]) else {
            continue;
        };
        let mut commands: Vec<String> = listing
            .lines()
            .filter_map(|line| ours(line, network))
            .map(|rest| format!("-D {rest}"))
            .collect();
        if table == "filter" && iptables(&["-w", "-S", &chain]).is_ok() {
            commands.push(format!("-F {chain}"));
            commands.push(format!("-X {chain}"));
        }
        if commands.is_empty() {
            continue;
        }
        let batch = format!("*{table}\n{}\nCOMMIT\n", commands.join("\n"));
        if let Err(err) = restore(&batch) {
            warn!(error = %err, table, "removing the forwarding rules at once failed; one by one");
            for command in &commands {
                let mut args = vec!["-w".to_string(), "-t".into(), table.to_string()];
                // Quoted comments as listed: the words without their quotes.
                args.extend(
                    command
                        .split_whitespace()
                        .map(|w| w.trim_matches('"').to_string()),
                );
                if let Err(err) = iptables(&args) {
                    warn!(error = %err, "removing a forwarding rule failed");
                }
            }
        }
        removed += commands.len();
    }
    removed
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
            ours(line, "imagt26"),
            Some(
                r#"DOCKER-USER -d 10.200.26.0/24 -i imagt26h -m comment --comment "imag:imagt26" -j ACCEPT"#
            )
        );
        let jump = "-A DOCKER-USER -m comment --comment imag:imagt26 -j IMAG-imagt26";
        assert!(ours(jump, "imagt26").is_some());
        assert_eq!(ours(line, "imagt2"), None, "another network's rule");
        assert_eq!(ours("-A DOCKER-USER -j RETURN", "imagt26"), None);
        assert_eq!(ours("-N DOCKER-USER", "imagt26"), None);
    }

    #[test]
    fn chains_are_named_for_their_network_within_iptables_limit() {
        assert_eq!(chain_of("imagbench"), "IMAG-imagbench");
        let long = "a-network-name-far-longer-than-iptables-allows";
        let chain = chain_of(long);
        assert_eq!(chain.len(), CHAIN_NAME_MAX, "{chain}");
        assert!(chain.starts_with("IMAG-a-network-name"), "{chain}");
        assert_ne!(
            chain,
            chain_of("a-network-name-far-longer-than-iptables-allowz")
        );
        assert_eq!(chain, chain_of(long), "stable");
    }

    #[test]
    fn one_commit_fills_the_chain_replaces_what_was_left_and_jumps_to_it() {
        let listing = "-N DOCKER-USER\n\
             -A DOCKER-USER -m comment --comment imag:imag -j IMAG-imag\n\
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
        assert_eq!(
            replaced, 2,
            "the old jump and a rule from before the chain: {batch}"
        );
        let lines: Vec<&str> = batch.lines().collect();
        assert_eq!(
            lines[..2],
            ["*filter", ":IMAG-imag - [0:0]"],
            "declared: created or emptied"
        );
        assert_eq!(
            lines[2..4],
            [
                "-D DOCKER-USER -m comment --comment imag:imag -j IMAG-imag",
                "-D DOCKER-USER -d 10.77.0.10/32 -i eth0 -m comment --comment \"imag:imag\" -j RETURN",
            ]
        );
        assert_eq!(
            lines[4],
            "-I IMAG-imag -i eth0 -d 10.77.0.0/24 -m comment --comment imag:imag -j ACCEPT",
            "inserted in rules_for's order, each at the top: the subnet's ends up last"
        );
        assert_eq!(
            lines[lines.len() - 2..],
            [
                "-I DOCKER-USER -m comment --comment imag:imag -j IMAG-imag",
                "COMMIT"
            ]
        );
        assert_eq!(lines.len(), 4 + rules.len() + 2);
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
        assert_eq!(
            specs.last().unwrap(),
            "-i eth0 -d 10.77.0.0/24 -m conntrack --ctstate RELATED,ESTABLISHED -m comment \
             --comment imag:imag -j ACCEPT",
            "inserted last, so matched first: a known connection's packets walk nothing else"
        );
        let open_only = rules_for("eth0", "imag", subnet, &[(open, vec![])]);
        assert_eq!(
            open_only.len(),
            1,
            "without hosts' rules the subnet rule alone is as cheap: {open_only:?}"
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
