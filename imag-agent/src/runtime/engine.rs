//! Which container engine runs the hosts: the value of the `[agent] engine` key. Each variant
//! names one implementation of [`super::ContainerRuntime`]; `agent.rs` picks it by this value and
//! from then on sees only the trait.

use std::{fmt, str::FromStr};

use serde::{Deserialize, Serialize};

/// A container engine imag can drive.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    /// The Docker engine, through its API socket ([`super::docker::Docker`]).
    #[default]
    Docker,
}

impl Engine {
    /// The name an operator writes (`engine = "docker"`).
    pub fn as_str(self) -> &'static str {
        match self {
            Engine::Docker => "docker",
        }
    }
}

impl fmt::Display for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An engine name imag does not know; the message lists the ones it does.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a container engine imag can drive (known: \"docker\")")]
pub struct UnknownEngine(pub String);

impl FromStr for Engine {
    type Err = UnknownEngine;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "docker" => Ok(Engine::Docker),
            other => Err(UnknownEngine(other.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_its_own_names() {
        assert_eq!("docker".parse::<Engine>(), Ok(Engine::Docker));
        assert_eq!(Engine::default(), Engine::Docker);
        assert_eq!(
            "containerd".parse::<Engine>().unwrap_err().to_string(),
            "\"containerd\" is not a container engine imag can drive (known: \"docker\")"
        );
        assert_eq!(
            serde_json::from_str::<Engine>("\"docker\"").unwrap(),
            Engine::Docker
        );
    }
}
