//! Where a host that is not running keeps its container: the one tier vocabulary shared by the
//! configuration (`sleep = "pause"`), the CLI (`sleep --tier stop`), the control protocol, the
//! state machine and the runtime.

use std::{fmt, str::FromStr};

use serde::{Deserialize, Serialize};

/// Where a host that is not running keeps its container.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    /// No container exists: a wake creates one (`sleep = "remove"`).
    #[serde(alias = "remove")]
    Absent,
    /// The container exists but is stopped: a wake starts it (`sleep = "stop"`); memory released,
    /// its file system kept.
    #[serde(alias = "stop")]
    Stopped,
    /// The container is paused (frozen in memory): a wake thaws it (`sleep = "pause"`).
    #[serde(alias = "pause")]
    Paused,
}

impl Tier {
    /// The state's name, as status and metrics show it.
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Absent => "absent",
            Tier::Stopped => "stopped",
            Tier::Paused => "paused",
        }
    }

    /// The verb an operator writes for it (`sleep = "pause"`, `--tier stop`).
    pub fn verb(self) -> &'static str {
        match self {
            Tier::Absent => "remove",
            Tier::Stopped => "stop",
            Tier::Paused => "pause",
        }
    }

    /// How much a tier releases: a deeper tier frees more and wakes slower.
    pub fn depth(self) -> u8 {
        match self {
            Tier::Paused => 0,
            Tier::Stopped => 1,
            Tier::Absent => 2,
        }
    }
}

impl fmt::Display for Tier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Unknown tier names; the message lists the accepted ones.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not one of \"pause\", \"stop\" or \"remove\"")]
pub struct UnknownTier(pub String);

impl FromStr for Tier {
    type Err = UnknownTier;

    /// Accepts the verbs (`pause`, `stop`, `remove`) and the state names (`paused`, `stopped`,
    /// `absent`).
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "pause" | "paused" => Ok(Tier::Paused),
            "stop" | "stopped" => Ok(Tier::Stopped),
            "remove" | "absent" => Ok(Tier::Absent),
            other => Err(UnknownTier(other.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_verbs_and_states() {
        for tier in [Tier::Absent, Tier::Stopped, Tier::Paused] {
            assert_eq!(tier.verb().parse::<Tier>(), Ok(tier));
            assert_eq!(tier.as_str().parse::<Tier>(), Ok(tier));
        }
        let err = "hibernate".parse::<Tier>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "\"hibernate\" is not one of \"pause\", \"stop\" or \"remove\""
        );
    }

    #[test]
    fn serializes_as_state_names() {
        assert_eq!(serde_json::to_string(&Tier::Paused).unwrap(), "\"paused\"");
        assert_eq!(
            serde_json::from_str::<Tier>("\"absent\"").unwrap(),
            Tier::Absent
        );
        assert_eq!(
            serde_json::from_str::<Tier>("\"pause\"").unwrap(),
            Tier::Paused
        );
    }
}
