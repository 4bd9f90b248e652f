//! What a host's container may ask of the engine beyond image, command and environment: mounts,
//! user, working directory, entrypoint, resource limits, capabilities, tmpfs, labels and a
//! healthcheck. [`ContainerOptions`] is one field of [`super::ContainerSpec`], filled by every
//! front end (imag.toml's `[[host]]` in `config/container.rs`, a compose service) and read by the
//! engines (`docker/mod.rs` at create). Every field is left out of the spec's JSON while unset,
//! so that the fingerprint of a spec that uses none of them is what it was before they existed:
//! an upgrade does not recreate containers.
//!
//! [`Health`] is what an engine reports of a running container's healthcheck (`ready =
//! "healthy"`).

use std::{collections::BTreeMap, time::Duration};

use serde::Serialize;

/// Container options beyond image, command and environment (all optional; `Default` is none).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ContainerOptions {
    /// Named volumes and bind mounts. Named volumes outlive the container: no tier removes them.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub mounts: Vec<Mount>,
    /// `user[:group]`, by name or number, as the engine takes it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// An absolute path inside the container.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    /// Replaces the image's entrypoint when set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<Vec<String>>,
    /// Memory limit in bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory: Option<u64>,
    /// CPU limit in billionths of a CPU (`cpus = 0.5` is `500_000_000`), as Docker's `NanoCpus`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nano_cpus: Option<u64>,
    /// Most processes (and threads) the container may have.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pids_limit: Option<u32>,
    /// Capabilities added to / dropped from the engine's default set (`NET_ADMIN`, `ALL`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cap_add: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cap_drop: Vec<String>,
    /// tmpfs mounts: absolute container path → mount options (`"size=64m"`, or empty).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub tmpfs: BTreeMap<String, String>,
    /// The user's own labels; imag's `imag.*` labels are added on top and are never overridden.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Replaces the image's healthcheck when set (the image's own is used otherwise).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub healthcheck: Option<Healthcheck>,
}

/// One volume or bind mount.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Mount {
    pub source: MountSource,
    /// An absolute path inside the container.
    pub target: String,
    pub read_only: bool,
}

/// Where a mount's data lives.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MountSource {
    /// A named volume, created by the engine on first use and kept when the container goes.
    Volume(String),
    /// A directory or file of the host (an absolute path).
    Bind(String),
}

impl Mount {
    /// The mount in Docker's `-v` syntax: `source:target[:ro]`.
    pub fn to_bind(&self) -> String {
        let source = match &self.source {
            MountSource::Volume(name) => name,
            MountSource::Bind(path) => path,
        };
        let mode = if self.read_only { ":ro" } else { "" };
        format!("{source}:{}{mode}", self.target)
    }
}

/// A healthcheck: the command and its timing (unset timings are the engine's defaults).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Healthcheck {
    /// Docker's form: `["CMD", program, args…]`, `["CMD-SHELL", command]` or `["NONE"]`.
    pub test: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interval: Option<Duration>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retries: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start_period: Option<Duration>,
    /// How often to check during `start_period` (so that a fresh container is seen healthy
    /// soon after it is, not an `interval` later).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start_interval: Option<Duration>,
}

impl Healthcheck {
    /// Whether this healthcheck turns the image's off (`["NONE"]`): the container then never
    /// reports healthy.
    pub fn disables(&self) -> bool {
        self.test.first().is_some_and(|t| t == "NONE")
    }
}

/// A running container's health, as its engine reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Health {
    /// Not yet decided (within the start period, or before the first check).
    Starting,
    Healthy,
    /// Failing now; it may still turn healthy.
    Unhealthy,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binds_in_docker_syntax() {
        let volume = Mount {
            source: MountSource::Volume("data".into()),
            target: "/var/lib/data".into(),
            read_only: false,
        };
        assert_eq!(volume.to_bind(), "data:/var/lib/data");
        let bind = Mount {
            source: MountSource::Bind("/etc/app".into()),
            target: "/config".into(),
            read_only: true,
        };
        assert_eq!(bind.to_bind(), "/etc/app:/config:ro");
    }

    #[test]
    fn unset_options_serialize_to_nothing() {
        assert_eq!(
            serde_json::to_string(&ContainerOptions::default()).unwrap(),
            "{}"
        );
    }
}
