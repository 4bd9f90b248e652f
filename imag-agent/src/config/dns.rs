//! The `[dns]` section: its shape as written ([`DnsSection`], deserialized from TOML with spans)
//! and its validated form ([`DnsConfig`]) with defaults, plus one parser per kind of value. The
//! configuration (`config/mod.rs`) deserializes the section and calls
//! [`DnsSection::resolve`] with its own problem reporter; the server (`crate::dns`) reads only
//! [`DnsConfig`].
//!
//! ```toml
//! [dns]
//! enabled = true                      # default
//! domain = "imag.internal"            # default: "<network name>.internal"
//! listen = ["192.168.1.5:53"]         # besides the bridge gateway's port 53
//! upstream = ["1.1.1.1", "[2606:4700:4700::1111]:53"]   # default: /etc/resolv.conf
//! timeout = "2s"                      # per upstream resolver
//! ```

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    ops::Range,
    time::Duration,
};

use hickory_proto::rr::Name;
use serde::Deserialize;
use toml::Spanned;

/// The DNS server's validated settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DnsConfig {
    pub enabled: bool,
    /// Lower case, without trailing dot, e.g. `imag.internal`.
    pub domain: String,
    /// Addresses to answer on besides the bridge gateway's port 53 (clients outside the bridge).
    pub listen: Vec<SocketAddr>,
    /// Resolvers for names outside the domain; empty means those of /etc/resolv.conf.
    pub upstream: Vec<SocketAddr>,
    /// How long one upstream resolver may take before the next is asked.
    pub timeout: Duration,
}

impl DnsConfig {
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);
    pub const PORT: u16 = 53;

    /// The defaults for the network named `network`: on, domain `<network>.internal`, the host's
    /// resolvers upstream.
    pub fn default_for(network: &str) -> DnsConfig {
        DnsConfig {
            enabled: true,
            domain: default_domain(network),
            listen: Vec::new(),
            upstream: Vec::new(),
            timeout: Self::DEFAULT_TIMEOUT,
        }
    }

    /// Where the server answers: the bridge gateway's port 53, then the extra `listen` addresses
    /// (without duplicates).
    pub fn listen_addrs(&self, gateway: Ipv4Addr) -> Vec<SocketAddr> {
        let mut addrs = vec![SocketAddr::from((gateway, Self::PORT))];
        for addr in &self.listen {
            if !addrs.contains(addr) {
                addrs.push(*addr);
            }
        }
        addrs
    }
}

/// `<network>.internal`, lower case (`.internal` is reserved for private use, ICANN 2024).
pub fn default_domain(network: &str) -> String {
    format!("{}.internal", network.to_ascii_lowercase())
}

/// A value of the `[dns]` section that does not parse, said so that the fix is obvious.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DnsConfigError {
    #[error("[dns] domain {0:?} is not a DNS name: write it like \"imag.internal\"")]
    Domain(String),
    #[error(
        "[dns] listen {0:?} is not an address with a port: write it like \"192.168.1.5:53\" or \
         \"[fd00::1]:53\""
    )]
    Listen(String),
    #[error(
        "[dns] upstream {0:?} is not a resolver address: write it like \"1.1.1.1\", \
         \"10.0.0.2:5353\" or \"[2606:4700:4700::1111]:53\""
    )]
    Upstream(String),
    #[error("[dns] timeout {0:?} is not a duration: write it like \"2s\" or \"500ms\"")]
    Timeout(String),
    #[error("[dns] timeout must be between 10ms and 30s, not {0:?}")]
    TimeoutRange(String),
}

/// A domain: a valid DNS name, stored lower case without its trailing dot.
pub fn parse_domain(text: &str) -> Result<String, DnsConfigError> {
    let trimmed = text.trim_end_matches('.');
    match Name::from_ascii(trimmed) {
        Ok(name) if !trimmed.is_empty() && !trimmed.contains("..") && name.num_labels() > 0 => {
            Ok(trimmed.to_ascii_lowercase())
        }
        _ => Err(DnsConfigError::Domain(text.to_string())),
    }
}

/// A listen address: `ADDR:PORT` (IPv6 in brackets).
pub fn parse_listen(text: &str) -> Result<SocketAddr, DnsConfigError> {
    text.parse()
        .map_err(|_| DnsConfigError::Listen(text.to_string()))
}

/// An upstream resolver: `ADDR` (port 53) or `ADDR:PORT` (IPv6 in brackets when with a port).
pub fn parse_upstream(text: &str) -> Result<SocketAddr, DnsConfigError> {
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(addr);
    }
    text.trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
        .map(|ip| SocketAddr::new(ip, DnsConfig::PORT))
        .map_err(|_| DnsConfigError::Upstream(text.to_string()))
}

/// A per-upstream timeout: a humantime duration from 10 ms to 30 s.
pub fn parse_timeout(text: &str) -> Result<Duration, DnsConfigError> {
    let timeout =
        humantime::parse_duration(text).map_err(|_| DnsConfigError::Timeout(text.to_string()))?;
    if timeout < Duration::from_millis(10) || timeout > Duration::from_secs(30) {
        return Err(DnsConfigError::TimeoutRange(text.to_string()));
    }
    Ok(timeout)
}

/// The `[dns]` section as written, every key optional.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DnsSection {
    pub enabled: Option<bool>,
    pub domain: Option<Spanned<String>>,
    #[serde(default)]
    pub listen: Vec<Spanned<String>>,
    #[serde(default)]
    pub upstream: Vec<Spanned<String>>,
    pub timeout: Option<Spanned<String>>,
}

impl DnsSection {
    /// The validated settings for the network named `network`, reporting each value that does
    /// not parse (with its span in the file) to `report`; `None` if any did not.
    pub fn resolve(
        &self,
        network: &str,
        report: &mut dyn FnMut(Option<Range<usize>>, String),
    ) -> Option<DnsConfig> {
        let mut config = DnsConfig::default_for(network);
        let mut ok = true;
        let mut check =
            |value: &Spanned<String>, parse: &dyn Fn(&str) -> Result<(), DnsConfigError>| {
                if let Err(err) = parse(value.get_ref()) {
                    report(Some(value.span()), err.to_string());
                    ok = false;
                }
            };
        if let Some(domain) = &self.domain {
            check(domain, &|t| parse_domain(t).map(drop));
        }
        for value in &self.listen {
            check(value, &|t| parse_listen(t).map(drop));
        }
        for value in &self.upstream {
            check(value, &|t| parse_upstream(t).map(drop));
        }
        if let Some(timeout) = &self.timeout {
            check(timeout, &|t| parse_timeout(t).map(drop));
        }
        if !ok {
            return None;
        }
        // Every value parsed above: the conversions below cannot fail.
        config.enabled = self.enabled.unwrap_or(true);
        if let Some(domain) = &self.domain {
            config.domain = parse_domain(domain.get_ref()).ok()?;
        }
        config.listen = self
            .listen
            .iter()
            .filter_map(|v| parse_listen(v.get_ref()).ok())
            .collect();
        config.upstream = self
            .upstream
            .iter()
            .filter_map(|v| parse_upstream(v.get_ref()).ok())
            .collect();
        if let Some(timeout) = &self.timeout {
            config.timeout = parse_timeout(timeout.get_ref()).ok()?;
        }
        Some(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve(toml_text: &str) -> Result<DnsConfig, Vec<String>> {
        let section: DnsSection = toml::from_str(toml_text).map_err(|e| vec![e.to_string()])?;
        let mut problems = Vec::new();
        let config = section.resolve("Imag", &mut |span, message| {
            assert!(span.is_some(), "every problem points at its value");
            problems.push(message);
        });
        config.ok_or(problems)
    }

    #[test]
    fn defaults_follow_the_network_name() {
        let config = resolve("").unwrap();
        assert_eq!(config, DnsConfig::default_for("imag"));
        assert!(config.enabled);
        assert_eq!(config.domain, "imag.internal");
        assert_eq!(config.timeout, Duration::from_secs(2));
        assert_eq!(
            config.listen_addrs(Ipv4Addr::new(10, 77, 0, 1)),
            vec!["10.77.0.1:53".parse().unwrap()]
        );
    }

    #[test]
    fn every_key_parses() {
        let config = resolve(
            r#"
            enabled = false
            domain = "Apps.Example."
            listen = ["127.0.0.1:5353", "[::1]:53", "10.77.0.1:53"]
            upstream = ["1.1.1.1", "10.0.0.2:5353", "::1", "[fd00::1]:53"]
            timeout = "500ms"
            "#,
        )
        .unwrap();
        assert!(!config.enabled);
        assert_eq!(config.domain, "apps.example");
        assert_eq!(
            config.upstream,
            ["1.1.1.1:53", "10.0.0.2:5353", "[::1]:53", "[fd00::1]:53"]
                .map(|a| a.parse::<SocketAddr>().unwrap())
        );
        assert_eq!(config.timeout, Duration::from_millis(500));
        // The gateway is not listed twice.
        assert_eq!(config.listen_addrs(Ipv4Addr::new(10, 77, 0, 1)).len(), 3);
    }

    #[test]
    fn bad_values_are_each_reported() {
        let problems = resolve(
            r#"
            domain = "a..b"
            listen = ["127.0.0.1"]
            upstream = ["resolver"]
            timeout = "forever"
            "#,
        )
        .unwrap_err();
        assert_eq!(problems.len(), 4, "{problems:?}");
        assert!(problems[1].contains("192.168.1.5:53"), "{}", problems[1]);
        assert_eq!(
            parse_timeout("1min"),
            Err(DnsConfigError::TimeoutRange("1min".into()))
        );
        assert!(resolve("port = 53").is_err(), "unknown keys are refused");
    }

    #[test]
    fn the_section_is_part_of_the_configuration() {
        use crate::config::{Config, tests::problems};
        let base = "[network]\nname = \"shop\"\nsubnet = \"10.9.0.0/24\"\n";
        let config = Config::parse(base, "t").unwrap();
        assert!(config.dns.enabled);
        assert_eq!(config.dns.domain, "shop.internal");
        let off = Config::parse(&format!("{base}[dns]\nenabled = false\n"), "t").unwrap();
        assert!(!off.dns.enabled);
        let found = problems(&format!(
            "{base}[dns]\nlisten = [\"10.9.0.1:53\", \"nowhere\"]\n"
        ));
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!((found[0].0, found[0].1), (5, 26));
    }
}
