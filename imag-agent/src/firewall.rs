//! What the agent changes in the host's own network configuration, and undoes on exit: firewall
//! rules that let traffic from the attach interfaces be forwarded into the imag network.
//!
//! Docker's FORWARD policy is DROP, and Docker only accepts traffic into a bridge network that a
//! published port or an established connection explains. imag's hosts have no published ports:
//! their addresses are reached directly. So for each attach interface the agent inserts one rule
//! into Docker's DOCKER-USER chain: `-i IFACE -d SUBNET -j ACCEPT`, tagged with a comment so that
//! `detach` and a restarted agent can find it. Replies pass through Docker's own rules.

use std::process::Command;

use ipnet::Ipv4Net;
use tracing::{info, warn};

const CHAIN: &str = "DOCKER-USER";

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

/// One accept rule for traffic from `iface` into `subnet`, tagged `imag:<network>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ForwardRule {
    pub iface: String,
    pub subnet: Ipv4Net,
    pub network: String,
}

fn comment(network: &str) -> String {
    format!("imag:{network}")
}

impl ForwardRule {
    fn spec(&self) -> Vec<String> {
        [
            "-i",
            &self.iface,
            "-d",
            &self.subnet.to_string(),
            "-m",
            "comment",
            "--comment",
            &comment(&self.network),
            "-j",
            "ACCEPT",
        ]
        .iter()
        .map(std::string::ToString::to_string)
        .collect()
    }

    /// Inserts the rule unless it is already there. Returns whether it was inserted.
    pub fn install(&self) -> Result<bool, FirewallError> {
        if let Err(err) = iptables(&["-w", "-n", "-L", CHAIN]) {
            return Err(match err {
                FirewallError::Failed { .. } => FirewallError::NoDockerChain,
                other => other,
            });
        }
        if self.exists()? {
            return Ok(false);
        }
        let mut args = vec!["-w".to_string(), "-I".into(), CHAIN.into()];
        args.extend(self.spec());
        iptables(&args)?;
        info!(iface = %self.iface, subnet = %self.subnet, "forwarding into the imag network allowed");
        Ok(true)
    }

    pub fn exists(&self) -> Result<bool, FirewallError> {
        let mut args = vec!["-w".to_string(), "-C".into(), CHAIN.into()];
        args.extend(self.spec());
        match iptables(&args) {
            Ok(_) => Ok(true),
            Err(FirewallError::Failed { .. }) => Ok(false),
            Err(other) => Err(other),
        }
    }

    /// Removes the rule (every copy of it).
    pub fn remove(&self) {
        let mut args = vec!["-w".to_string(), "-D".into(), CHAIN.into()];
        args.extend(self.spec());
        let mut removed = false;
        while iptables(&args).is_ok() {
            removed = true;
        }
        if removed {
            info!(iface = %self.iface, subnet = %self.subnet, "forwarding rule removed");
        } else {
            warn!(iface = %self.iface, subnet = %self.subnet, "forwarding rule was already gone");
        }
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

/// Removes every rule tagged for `network` (what `detach` does when no agent runs); returns how
/// many.
pub fn remove_rules_of(network: &str) -> usize {
    let Ok(listing) = iptables(&["-w", "-S", CHAIN]) else {
        return 0;
    };
    let rules: Vec<ForwardRule> = listing
        .lines()
        .filter_map(|line| parse_rule(line, network))
        .collect();
    for rule in &rules {
        rule.remove();
    }
    rules.len()
}

/// The rule an `iptables -S` line describes, if it is one of ours for `network`.
fn parse_rule(line: &str, network: &str) -> Option<ForwardRule> {
    let words: Vec<&str> = line.split_whitespace().collect();
    let value = |flag: &str| {
        words
            .iter()
            .position(|w| *w == flag)
            .and_then(|i| words.get(i + 1))
            .map(|w| w.trim_matches('"'))
    };
    (value("--comment")? == comment(network)).then_some(())?;
    Some(ForwardRule {
        iface: value("-i")?.to_string(),
        subnet: value("-d")?.parse().ok()?,
        network: network.to_string(),
    })
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
    fn parses_our_rules_from_iptables_listing() {
        let line = r#"-A DOCKER-USER -d 10.200.26.0/24 -i imagt26h -m comment --comment "imag:imagt26" -j ACCEPT"#;
        assert_eq!(
            parse_rule(line, "imagt26"),
            Some(ForwardRule {
                iface: "imagt26h".into(),
                subnet: "10.200.26.0/24".parse().unwrap(),
                network: "imagt26".into(),
            })
        );
        assert_eq!(parse_rule(line, "imagt2"), None, "another network's rule");
        assert_eq!(parse_rule("-A DOCKER-USER -j RETURN", "imagt26"), None);
    }
}
