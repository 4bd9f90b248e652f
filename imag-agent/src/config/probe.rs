//! The ready probe (`ready = "tcp:8080"`): how the agent decides that a started container can take
//! its held packets. It parses itself and prints itself back in the same syntax; `readiness.rs`
//! runs it and `host.rs` picks its default.

use std::{fmt, str::FromStr, time::Duration};

/// How the agent decides that a started container can take its held packets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadyProbe {
    /// A TCP connection to the host's address and this port succeeds.
    Tcp(u16),
    /// A UDP socket is bound to this port inside the container (for services that never listen
    /// on TCP).
    Udp(u16),
    /// This long after the engine reports the container running.
    Delay(Duration),
    /// The engine reports the container running.
    Running,
    /// The engine reports the container healthy (the host's healthcheck, else its image's).
    Healthy,
}

impl fmt::Display for ReadyProbe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReadyProbe::Tcp(port) => write!(f, "tcp:{port}"),
            ReadyProbe::Udp(port) => write!(f, "udp:{port}"),
            ReadyProbe::Delay(d) => write!(f, "delay:{}", humantime::format_duration(*d)),
            ReadyProbe::Running => write!(f, "running"),
            ReadyProbe::Healthy => write!(f, "healthy"),
        }
    }
}

/// Text that is no ready probe; the message lists the accepted forms.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "{0:?} is not one of \"tcp:PORT\", \"udp:PORT\", \"delay:DURATION\", \"running\" or \
     \"healthy\" (e.g. \"tcp:8080\", \"udp:53\", \"delay:200ms\")"
)]
pub struct BadProbe(pub String);

impl FromStr for ReadyProbe {
    type Err = BadProbe;

    /// Parses `tcp:PORT`, `udp:PORT`, `delay:DURATION` (zero allowed), `running` or `healthy`.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = || BadProbe(text.to_string());
        let port = |p: &str| p.parse::<u16>().ok().filter(|p| *p != 0).ok_or_else(bad);
        match text.split_once(':') {
            None if text == "running" => Ok(ReadyProbe::Running),
            None if text == "healthy" => Ok(ReadyProbe::Healthy),
            Some(("tcp", p)) => Ok(ReadyProbe::Tcp(port(p)?)),
            Some(("udp", p)) => Ok(ReadyProbe::Udp(port(p)?)),
            Some(("delay", d)) => humantime::parse_duration(d)
                .map(ReadyProbe::Delay)
                .map_err(|_| bad()),
            _ => Err(bad()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_probe(text: &str) -> Result<ReadyProbe, BadProbe> {
        text.parse()
    }

    #[test]
    fn probe_syntax() {
        assert_eq!(parse_probe("tcp:80"), Ok(ReadyProbe::Tcp(80)));
        assert_eq!(parse_probe("udp:53"), Ok(ReadyProbe::Udp(53)));
        assert_eq!(
            parse_probe("delay:250ms"),
            Ok(ReadyProbe::Delay(Duration::from_millis(250)))
        );
        assert!(parse_probe("delay:soon").is_err());
        assert!(parse_probe("udp:0").is_err());
        assert_eq!(parse_probe("running"), Ok(ReadyProbe::Running));
        assert_eq!(parse_probe("healthy"), Ok(ReadyProbe::Healthy));
        assert!(parse_probe("tcp:0").is_err());
        assert!(parse_probe("tcp:http").is_err());
        assert!(parse_probe("").is_err());
    }

    #[test]
    fn more_bad_probes_and_the_message() {
        for bad in [
            "http:80",
            "tcp:",
            "tcp:65536",
            "running:1",
            "Running",
            "delay:",
        ] {
            assert_eq!(parse_probe(bad), Err(BadProbe(bad.into())), "{bad:?}");
        }
        assert_eq!(
            BadProbe("http:80".into()).to_string(),
            "\"http:80\" is not one of \"tcp:PORT\", \"udp:PORT\", \"delay:DURATION\", \
             \"running\" or \"healthy\" (e.g. \"tcp:8080\", \"udp:53\", \"delay:200ms\")"
        );
    }

    #[test]
    fn display_round_trips() {
        for probe in [
            ReadyProbe::Tcp(8080),
            ReadyProbe::Udp(53),
            ReadyProbe::Delay(Duration::from_millis(1500)),
            ReadyProbe::Delay(Duration::ZERO),
            ReadyProbe::Running,
            ReadyProbe::Healthy,
        ] {
            assert_eq!(parse_probe(&probe.to_string()), Ok(probe), "{probe}");
        }
    }
}
