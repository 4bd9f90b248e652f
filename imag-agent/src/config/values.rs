//! The configuration's value types, each parsing itself (`FromStr`, or `FromRaw` for integers)
//! with an error that names the value but not the key: `field.rs` puts the key in front, so
//! "`wake_timeout`" and "backoff" share one duration type. The sections unwrap these into the plain
//! types of the public config structs. The ready probe, a public type, is in `probe.rs`; the
//! sleep tier is `crate::runtime::Tier`.

use std::{net::SocketAddr, str::FromStr, time::Duration};

use ipnet::Ipv4Net;

use super::field::FromRaw;

/// The longest duration any key accepts: 30 days. Every deadline the agent derives from a
/// configured duration then stays far inside `Instant`'s range (adding to it can never overflow),
/// and a mistyped "30000000h" is caught here instead of panicking a task later. Keys whose meaning
/// has a tighter bound (`wake_timeout`, `ready_poll`, `backoff`, …) check theirs with
/// `field::at_most`.
pub const MAX_DURATION: Duration = Duration::from_hours(30 * 24);

/// A duration longer than zero (timeouts, intervals): "30s", "5m", "500ms".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NonZeroDuration(pub Duration);

/// A duration that may be zero (e.g. `min_warm = "0s"`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AnyDuration(pub Duration);

#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum DurationError {
    /// `example` is the third example of the hint: one that the key accepts.
    #[error(
        "{text:?} is not a duration ({reason}); write it like \"30s\", \"5m\" or \"{example}\""
    )]
    Syntax {
        text: String,
        reason: humantime::DurationError,
        example: &'static str,
    },
    #[error("must be longer than zero")]
    Zero,
    #[error("{text:?} is longer than {max}, the longest duration imag accepts", max = humantime::format_duration(MAX_DURATION))]
    TooLong { text: String },
}

fn duration(text: &str, example: &'static str) -> Result<Duration, DurationError> {
    let parsed = humantime::parse_duration(text).map_err(|reason| DurationError::Syntax {
        text: text.to_string(),
        reason,
        example,
    })?;
    if parsed > MAX_DURATION {
        return Err(DurationError::TooLong {
            text: text.to_string(),
        });
    }
    Ok(parsed)
}

impl FromStr for NonZeroDuration {
    type Err = DurationError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match duration(text, "500ms")? {
            d if d.is_zero() => Err(DurationError::Zero),
            d => Ok(NonZeroDuration(d)),
        }
    }
}

impl FromStr for AnyDuration {
    type Err = DurationError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        duration(text, "0s").map(AnyDuration)
    }
}

/// `idle_timeout`: a duration longer than zero, or "never" (the host sleeps only when told to
/// or evicted).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IdleTimeout(pub Option<Duration>);

impl FromStr for IdleTimeout {
    type Err = DurationError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.trim() {
            "never" => Ok(IdleTimeout(None)),
            _ => text.parse().map(|NonZeroDuration(d)| IdleTimeout(Some(d))),
        }
    }
}

/// A bound on held packets or bytes (`[hold]`), written as an integer; zero would hold nothing
/// and is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limit(pub usize);

#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("must be at least 1")]
pub struct ZeroLimit;

impl FromRaw<usize> for Limit {
    type Err = ZeroLimit;

    fn from_raw(raw: &usize) -> Result<Self, ZeroLimit> {
        match *raw {
            0 => Err(ZeroLimit),
            n => Ok(Limit(n)),
        }
    }
}

/// A service port of a host (`ports = [8080]`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Port(pub u16);

#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("port 0 is not a port")]
pub struct ZeroPort;

impl FromRaw<u16> for Port {
    type Err = ZeroPort;

    fn from_raw(raw: &u16) -> Result<Self, ZeroPort> {
        match *raw {
            0 => Err(ZeroPort),
            n => Ok(Port(n)),
        }
    }
}

/// A peer prefix (`idle_ignore`): CIDR, or a bare address for a /32; host bits are dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Prefix(pub Ipv4Net);

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not an IPv4 prefix (like \"10.0.9.0/24\") or address")]
pub struct BadPrefix(pub String);

impl FromStr for Prefix {
    type Err = BadPrefix;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        text.parse::<Ipv4Net>()
            .or_else(|_| text.parse::<std::net::Ipv4Addr>().map(Ipv4Net::from))
            .map(|net| Prefix(net.trunc()))
            .map_err(|_| BadPrefix(text.to_string()))
    }
}

/// An `allow_from` entry: a source prefix (CIDR, or an address for a /32) or the name of a
/// configured host (meaning its address; `allow.rs` resolves it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AllowSource {
    Prefix(Ipv4Net),
    Host(String),
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is neither an IPv4 prefix (like \"10.0.0.0/8\"), an address nor a host name")]
pub struct BadAllowSource(pub String);

impl FromStr for AllowSource {
    type Err = BadAllowSource;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if let Ok(Prefix(net)) = text.parse() {
            return Ok(AllowSource::Prefix(net));
        }
        // "10.0.0.300" is a mistyped address, not a host name.
        let numeric = text
            .chars()
            .all(|c| c.is_ascii_digit() || matches!(c, '.' | '/'));
        if is_docker_name(text) && !numeric {
            Ok(AllowSource::Host(text.to_string()))
        } else {
            Err(BadAllowSource(text.to_string()))
        }
    }
}

/// An amount of memory (`memory = "256MiB"`): a number (fractions allowed) and a unit. Units are
/// binary and case-insensitive, as Docker and compose read them (`b`, `k`/`kb`/`kib`, `m`/`mb`/
/// `mib`, `g`/`gb`/`gib`, `t`/`tb`/`tib`), so that "256m" means the same in both front ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ByteSize(pub u64);

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ByteSizeError {
    #[error("{0:?} is not a size: write a number and a unit, like \"256MiB\", \"512m\" or \"1g\"")]
    Syntax(String),
    #[error(
        "{0:?} is not a size: unknown unit (use b, k, m, g or t, optionally with \"b\" or \"ib\")"
    )]
    Unit(String),
    #[error("must be more than zero bytes")]
    Zero,
}

impl FromStr for ByteSize {
    type Err = ByteSizeError;

    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "`bytes` is checked finite and below 2^64, and is never negative (no sign is accepted)"
    )]
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let syntax = || ByteSizeError::Syntax(text.to_string());
        let split = text
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(text.len());
        let (number, unit) = text.split_at(split);
        let number: f64 = number.parse().map_err(|_| syntax())?;
        let shift = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 0,
            "k" | "kb" | "kib" => 10,
            "m" | "mb" | "mib" => 20,
            "g" | "gb" | "gib" => 30,
            "t" | "tb" | "tib" => 40,
            _ => return Err(ByteSizeError::Unit(text.to_string())),
        };
        let bytes = (number * (1u64 << shift) as f64).round();
        if !bytes.is_finite() || bytes >= u64::MAX as f64 {
            return Err(syntax());
        }
        match bytes as u64 {
            0 => Err(ByteSizeError::Zero),
            n => Ok(ByteSize(n)),
        }
    }
}

/// The imaginary address space: a network in CIDR form with room for a gateway and hosts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Subnet(pub Ipv4Net);

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SubnetError {
    #[error("{0} is too small: it needs room for a gateway and hosts (use /30 or larger)")]
    TooSmall(Ipv4Net),
    #[error("{0} has host bits set: did you mean {trunc}?", trunc = .0.trunc())]
    HostBits(Ipv4Net),
    #[error("{0:?} is not an IPv4 network in CIDR form (like \"10.77.0.0/24\")")]
    NotCidr(String),
    #[error(
        "{0} is too large: imaginary hosts need a private range of /8 or smaller (like \"10.77.0.0/24\")"
    )]
    TooLarge(Ipv4Net),
    #[error("{net} overlaps {range}, {what}: use a private range (like \"10.77.0.0/24\")")]
    Special {
        net: Ipv4Net,
        range: Ipv4Net,
        what: &'static str,
    },
}

/// Ranges no imaginary host can live in: hosts there would be unreachable or reach something else.
const SPECIAL_RANGES: [([u8; 4], u8, &str); 4] = [
    (
        [0, 0, 0, 0],
        8,
        "which means \"this network\" and is never routed",
    ),
    ([127, 0, 0, 0], 8, "the loopback range"),
    ([224, 0, 0, 0], 4, "the multicast range"),
    (
        [240, 0, 0, 0],
        4,
        "the reserved range (with the broadcast address 255.255.255.255)",
    ),
];

impl FromStr for Subnet {
    type Err = SubnetError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.parse::<Ipv4Net>() {
            Ok(subnet) if subnet.prefix_len() > 30 => Err(SubnetError::TooSmall(subnet)),
            Ok(subnet) if subnet.network() != subnet.addr() => Err(SubnetError::HostBits(subnet)),
            Ok(subnet) => {
                for (addr, len, what) in SPECIAL_RANGES {
                    let range = Ipv4Net::new(addr.into(), len).expect("a valid prefix length");
                    if range.contains(&subnet.network()) || subnet.contains(&range.network()) {
                        return Err(SubnetError::Special {
                            net: subnet,
                            range,
                            what,
                        });
                    }
                }
                if subnet.prefix_len() < 8 {
                    return Err(SubnetError::TooLarge(subnet));
                }
                Ok(Subnet(subnet))
            }
            Err(_) => Err(SubnetError::NotCidr(text.to_string())),
        }
    }
}

/// Docker's rule for container and network names.
fn is_docker_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// Longest network name: the agent's control socket is `/run/imag/<network>.sock`, and a Unix
/// socket's path must fit `sun_path` (108 bytes with its terminating NUL). `ops/control.rs` tests
/// that a name this long binds.
pub const MAX_NETWORK_NAME: usize = 108 - 1 - "/run/imag/".len() - ".sock".len();

/// The Docker network's name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetworkName(pub String);

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BadNetworkName {
    #[error(
        "{0:?} is not a valid network name (letters, digits, '_', '.', '-'; no \"--\" and no '-' \
         at the end: container names are <network>--<host>)"
    )]
    Syntax(String),
    #[error(
        "{0:?} is {len} bytes long: at most {MAX_NETWORK_NAME} fit the control socket's path \
         (/run/imag/NAME.sock)",
        len = .0.len()
    )]
    TooLong(String),
}

impl FromStr for NetworkName {
    type Err = BadNetworkName;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if !is_docker_name(text)
            || text.contains(crate::runtime::NAME_SEPARATOR)
            || text.ends_with('-')
        {
            Err(BadNetworkName::Syntax(text.to_string()))
        } else if text.len() > MAX_NETWORK_NAME {
            Err(BadNetworkName::TooLong(text.to_string()))
        } else {
            Ok(NetworkName(text.to_string()))
        }
    }
}

/// A host's name, which also names its container.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostName(pub String);

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "{0:?} must be letters, digits, '_', '.' or '-', without \"--\" (it names the container \
     <network>--<host>)"
)]
pub struct BadHostName(pub String);

impl FromStr for HostName {
    type Err = BadHostName;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if is_docker_name(text) && !text.contains(crate::runtime::NAME_SEPARATOR) {
            Ok(HostName(text.to_string()))
        } else {
            Err(BadHostName(text.to_string()))
        }
    }
}

/// The Linux bridge's interface name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BridgeName(pub String);

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "{0:?} is not a valid interface name (1-15 bytes, not \".\" or \"..\", no '/', ':' or \
     spaces)"
)]
pub struct BadBridgeName(pub String);

impl FromStr for BridgeName {
    type Err = BadBridgeName;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        // The kernel's dev_valid_name(): IFNAMSIZ is 16 bytes with the terminating NUL, "." and
        // ".." would be directories in /sys/class/net.
        if text.is_empty()
            || text == "."
            || text == ".."
            || text.len() > 15
            || text.contains(['/', ' ', ':'])
            || text.chars().any(char::is_whitespace)
        {
            Err(BadBridgeName(text.to_string()))
        } else {
            Ok(BridgeName(text.to_string()))
        }
    }
}

/// An extra /etc/hosts entry: `NAME:ADDRESS` (or compose's `NAME=ADDRESS`), kept as
/// `NAME:ADDRESS` for the engine; the address may be Docker's `host-gateway`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExtraHost(pub String);

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("extra host {0:?} is not NAME:ADDRESS (like \"db.local:10.0.0.5\")")]
pub struct BadExtraHost(pub String);

impl FromStr for ExtraHost {
    type Err = BadExtraHost;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        // `=` first: an IPv6 address has colons of its own.
        let (name, addr) = text
            .split_once('=')
            .or_else(|| text.split_once(':'))
            .ok_or_else(|| BadExtraHost(text.to_string()))?;
        let addr = addr.trim_start_matches('[').trim_end_matches(']');
        if name.is_empty()
            || name.contains(char::is_whitespace)
            || (addr != "host-gateway" && addr.parse::<std::net::IpAddr>().is_err())
        {
            return Err(BadExtraHost(text.to_string()));
        }
        Ok(ExtraHost(format!("{name}:{addr}")))
    }
}

/// Where `/metrics` is served: an address with a port, or "off" (`None`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MetricsAddress(pub Option<SocketAddr>);

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not an address with a port (like \"127.0.0.1:9477\") or \"off\"")]
pub struct BadMetricsAddress(pub String);

impl FromStr for MetricsAddress {
    type Err = BadMetricsAddress;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text == "off" {
            return Ok(MetricsAddress(None));
        }
        text.parse()
            .map(|addr| MetricsAddress(Some(addr)))
            .map_err(|_| BadMetricsAddress(text.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err<T: FromStr<Err: std::fmt::Display> + std::fmt::Debug>(text: &str) -> String {
        text.parse::<T>().unwrap_err().to_string()
    }

    #[test]
    fn durations() {
        assert_eq!(
            "500ms".parse(),
            Ok(NonZeroDuration(Duration::from_millis(500)))
        );
        assert_eq!(
            "1h 30m".parse(),
            Ok(NonZeroDuration(Duration::from_mins(90)))
        );
        assert_eq!("0s".parse::<NonZeroDuration>(), Err(DurationError::Zero));
        assert_eq!(err::<NonZeroDuration>("0ms"), "must be longer than zero");
        assert_eq!(
            err::<NonZeroDuration>("soon"),
            "\"soon\" is not a duration (expected number at 0); write it like \"30s\", \"5m\" or \
             \"500ms\""
        );
        assert_eq!("0s".parse(), Ok(AnyDuration(Duration::ZERO)));
        assert_eq!("2m".parse(), Ok(AnyDuration(Duration::from_mins(2))));
        assert!(err::<AnyDuration>("5").ends_with("write it like \"30s\", \"5m\" or \"0s\""));
        assert!(err::<AnyDuration>("").starts_with("\"\" is not a duration"));
    }

    #[test]
    fn limits_and_ports() {
        assert_eq!(Limit::from_raw(&1), Ok(Limit(1)));
        assert_eq!(Limit::from_raw(&0), Err(ZeroLimit));
        assert_eq!(ZeroLimit.to_string(), "must be at least 1");
        assert_eq!(Port::from_raw(&8080), Ok(Port(8080)));
        assert_eq!(Port::from_raw(&0), Err(ZeroPort));
        assert_eq!(ZeroPort.to_string(), "port 0 is not a port");
    }

    #[test]
    fn byte_sizes() {
        assert_eq!("256MiB".parse(), Ok(ByteSize(256 << 20)));
        assert_eq!("512m".parse(), Ok(ByteSize(512 << 20)));
        assert_eq!("1g".parse(), Ok(ByteSize(1 << 30)));
        assert_eq!("1.5G".parse(), Ok(ByteSize(3 << 29)));
        assert_eq!("64 kB".parse(), Ok(ByteSize(64 << 10)), "binary, as Docker");
        assert_eq!("4096".parse(), Ok(ByteSize(4096)));
        assert_eq!("2tib".parse(), Ok(ByteSize(2 << 40)));
        assert_eq!("0m".parse::<ByteSize>(), Err(ByteSizeError::Zero));
        assert_eq!(
            err::<ByteSize>("lots"),
            "\"lots\" is not a size: write a number and a unit, like \"256MiB\", \"512m\" or \"1g\""
        );
        assert_eq!(
            err::<ByteSize>("3 parsecs"),
            "\"3 parsecs\" is not a size: unknown unit (use b, k, m, g or t, optionally with \"b\" \
             or \"ib\")"
        );
        assert!("".parse::<ByteSize>().is_err());
        assert!("1.2.3m".parse::<ByteSize>().is_err());
        assert!("99999999999t".parse::<ByteSize>().is_err(), "overflow");
    }

    #[test]
    fn prefixes() {
        let net = |s: &str| s.parse::<Ipv4Net>().unwrap();
        assert_eq!("10.0.9.0/24".parse(), Ok(Prefix(net("10.0.9.0/24"))));
        assert_eq!(
            "10.0.9.7/24".parse(),
            Ok(Prefix(net("10.0.9.0/24"))),
            "host bits dropped"
        );
        assert_eq!("10.1.2.3".parse(), Ok(Prefix(net("10.1.2.3/32"))));
        assert_eq!(
            err::<Prefix>("nowhere"),
            "\"nowhere\" is not an IPv4 prefix (like \"10.0.9.0/24\") or address"
        );
        assert!("10.0.0.0/33".parse::<Prefix>().is_err());
        assert!("::1".parse::<Prefix>().is_err());
    }

    #[test]
    fn subnets() {
        let net = |s: &str| s.parse::<Ipv4Net>().unwrap();
        assert_eq!("10.77.0.0/24".parse(), Ok(Subnet(net("10.77.0.0/24"))));
        assert_eq!("10.77.0.4/30".parse(), Ok(Subnet(net("10.77.0.4/30"))));
        assert_eq!(
            err::<Subnet>("10.0.0.0/31"),
            "10.0.0.0/31 is too small: it needs room for a gateway and hosts (use /30 or larger)"
        );
        assert_eq!(
            err::<Subnet>("10.77.0.5/24"),
            "10.77.0.5/24 has host bits set: did you mean 10.77.0.0/24?"
        );
        assert_eq!(
            err::<Subnet>("banana"),
            "\"banana\" is not an IPv4 network in CIDR form (like \"10.77.0.0/24\")"
        );
        assert!("10.77.0.0".parse::<Subnet>().is_err(), "a prefix is needed");
        for (special, what) in [
            ("0.0.0.0/0", "\"this network\""),
            ("0.0.0.0/8", "\"this network\""),
            ("127.0.0.0/8", "loopback"),
            ("127.5.0.0/24", "loopback"),
            ("224.0.0.0/4", "multicast"),
            ("239.1.0.0/16", "multicast"),
            ("255.255.255.0/24", "reserved"),
            ("240.0.0.0/4", "reserved"),
            ("64.0.0.0/2", "loopback"),
        ] {
            let message = err::<Subnet>(special);
            assert!(message.contains(what), "{special}: {message}");
        }
        assert_eq!(
            err::<Subnet>("10.0.0.0/7"),
            "10.0.0.0/7 is too large: imaginary hosts need a private range of /8 or smaller (like \
             \"10.77.0.0/24\")"
        );
        assert!("10.0.0.0/8".parse::<Subnet>().is_ok());
        assert!("192.168.0.0/16".parse::<Subnet>().is_ok());
    }

    #[test]
    fn names() {
        for good in ["imag", "a", "web-1", "a.b_c", "9lives"] {
            assert_eq!(good.parse(), Ok(NetworkName(good.into())));
            assert_eq!(good.parse(), Ok(HostName(good.into())));
        }
        for bad in ["", "-web", "_x", "a b", "a/b", "wéb", "a--b", "web--"] {
            assert!(bad.parse::<NetworkName>().is_err(), "{bad:?}");
            assert!(bad.parse::<HostName>().is_err(), "{bad:?}");
        }
        // A network name ending in '-' would make "a-" + "b" read as "a" + "-b".
        assert!("a-".parse::<NetworkName>().is_err());
        assert_eq!("b-".parse(), Ok(HostName("b-".into())));
        assert_eq!(
            err::<NetworkName>("a b"),
            "\"a b\" is not a valid network name (letters, digits, '_', '.', '-'; no \"--\" and \
             no '-' at the end: container names are <network>--<host>)"
        );
        assert_eq!(
            err::<HostName>("a b"),
            "\"a b\" must be letters, digits, '_', '.' or '-', without \"--\" (it names the \
             container <network>--<host>)"
        );
        let longest = "n".repeat(MAX_NETWORK_NAME);
        assert_eq!(longest.parse(), Ok(NetworkName(longest.clone())));
        assert_eq!(
            err::<NetworkName>(&format!("{longest}x")),
            format!(
                "\"{longest}x\" is 93 bytes long: at most 92 fit the control socket's path \
                 (/run/imag/NAME.sock)"
            )
        );
        assert_eq!(
            super::super::DEFAULT_NETWORK_NAME.parse::<NetworkName>(),
            Ok(NetworkName("imag".into()))
        );
    }

    #[test]
    fn bridge_names() {
        for good in ["imag0", "br-0.1", "a", "fifteen-chars-x"] {
            assert_eq!(good.parse(), Ok(BridgeName(good.into())));
        }
        for bad in [
            "",
            "sixteen-chars-xx",
            "a/b",
            "a b",
            "a:b",
            "a\tb",
            ".",
            "..",
            "a\nb",
            "ééééééééé",
        ] {
            assert!(bad.parse::<BridgeName>().is_err(), "{bad:?}");
        }
        assert_eq!(
            err::<BridgeName>("a/b"),
            "\"a/b\" is not a valid interface name (1-15 bytes, not \".\" or \"..\", no '/', ':' \
             or spaces)"
        );
        assert!(
            super::super::DEFAULT_BRIDGE_NAME
                .parse::<BridgeName>()
                .is_ok()
        );
    }

    #[test]
    fn extra_hosts() {
        assert_eq!("db:10.0.0.5".parse(), Ok(ExtraHost("db:10.0.0.5".into())));
        assert_eq!("db=10.0.0.5".parse(), Ok(ExtraHost("db:10.0.0.5".into())));
        assert_eq!("v6=[::1]".parse(), Ok(ExtraHost("v6:::1".into())));
        assert_eq!(
            "gw:host-gateway".parse(),
            Ok(ExtraHost("gw:host-gateway".into()))
        );
        for bad in ["db", "db:", ":10.0.0.1", "db:nowhere", "a b:10.0.0.1"] {
            assert!(bad.parse::<ExtraHost>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn metrics_addresses() {
        assert_eq!("off".parse(), Ok(MetricsAddress(None)));
        assert_eq!(
            "127.0.0.1:9477".parse(),
            Ok(MetricsAddress(Some(SocketAddr::from((
                [127, 0, 0, 1],
                9477
            )))))
        );
        assert_eq!(
            "[::1]:80"
                .parse::<MetricsAddress>()
                .map(|m| m.0.map(|a| a.port())),
            Ok(Some(80))
        );
        assert_eq!(
            err::<MetricsAddress>("127.0.0.1"),
            "\"127.0.0.1\" is not an address with a port (like \"127.0.0.1:9477\") or \"off\""
        );
        assert!("OFF".parse::<MetricsAddress>().is_err());
    }
}
