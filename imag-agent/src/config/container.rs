//! A `[[host]]`'s container options — volumes and mounts, user, working directory, entrypoint,
//! memory, cpus and pids limits, capabilities, tmpfs, labels, healthcheck — checked and turned
//! into the runtime's [`ContainerOptions`], the one spec every front end fills. The value types
//! here parse themselves (`FromStr`/`FromRaw`, as in `values.rs`) in the syntax Docker and
//! compose use, so that a compose front end can parse its strings with the same types; `host.rs`
//! calls [`validate`] and stores the result in `HostConfig::container`.

use std::{collections::BTreeMap, str::FromStr, time::Duration};

use toml::Spanned;

use super::{
    field::{FromRaw, Report, field, items, optional, parse_with, span},
    raw,
    values::{ByteSize, NonZeroDuration},
};
use crate::runtime::{ContainerOptions, Healthcheck, Mount, MountSource};

/// Why a volume or mount is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MountError {
    #[error(
        "volume {0:?} has no name: write \"NAME:{0}\" (an anonymous volume would lose its data \
         when the host sleeps with sleep = \"remove\")"
    )]
    Anonymous(String),
    #[error(
        "volume {0:?} is not \"NAME:/path\", \"/host/path:/path\" or either with \":ro\"/\":rw\""
    )]
    Syntax(String),
    #[error("mount {0:?}: the path inside the container must be absolute (start with '/')")]
    RelativeTarget(String),
    #[error(
        "mount {0:?}: a bind mount's source must be an absolute host path (a volume name is \
         letters, digits, '_', '.', '-')"
    )]
    BadSource(String),
    #[error("mount {0:?}: mode {1:?} is neither \"ro\" nor \"rw\"")]
    Mode(String, String),
    #[error("mount type {0:?} is neither \"volume\" nor \"bind\"")]
    Kind(String),
}

/// A volume in Docker's `-v` syntax: `NAME:/path`, `/host/dir:/path`, then optionally `:ro` or
/// `:rw`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Volume(pub Mount);

impl FromStr for Volume {
    type Err = MountError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let parts: Vec<&str> = text.split(':').collect();
        let (source, target, mode) = match parts[..] {
            [target] if target.starts_with('/') => {
                return Err(MountError::Anonymous(text.to_string()));
            }
            [source, target] => (source, target, None),
            [source, target, mode] => (source, target, Some(mode)),
            _ => return Err(MountError::Syntax(text.to_string())),
        };
        let read_only = match mode {
            None | Some("rw") => false,
            Some("ro") => true,
            Some(other) => return Err(MountError::Mode(text.to_string(), other.to_string())),
        };
        let kind = if source.starts_with('/') {
            "bind"
        } else {
            "volume"
        };
        mount(text, kind, source, target, read_only).map(Volume)
    }
}

/// Checks one mount of either syntax; `text` names it in messages.
fn mount(
    text: &str,
    kind: &str,
    source: &str,
    target: &str,
    read_only: bool,
) -> Result<Mount, MountError> {
    if !target.starts_with('/') {
        return Err(MountError::RelativeTarget(text.to_string()));
    }
    let source = match kind {
        "volume" if is_volume_name(source) => MountSource::Volume(source.to_string()),
        "bind" if source.starts_with('/') => MountSource::Bind(source.to_string()),
        "volume" | "bind" => return Err(MountError::BadSource(text.to_string())),
        other => return Err(MountError::Kind(other.to_string())),
    };
    Ok(Mount {
        source,
        target: target.to_string(),
        read_only,
    })
}

/// Docker's rule for volume names.
fn is_volume_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// A tmpfs mount: `/path` or `/path:OPTIONS` (`size=64m,mode=1777`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tmpfs {
    pub target: String,
    pub options: String,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("tmpfs {0:?} is not \"/path\" or \"/path:OPTIONS\" (like \"/tmp:size=64m\")")]
pub struct BadTmpfs(pub String);

impl FromStr for Tmpfs {
    type Err = BadTmpfs;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (target, options) = text.split_once(':').unwrap_or((text, ""));
        if !target.starts_with('/') || text.chars().any(char::is_whitespace) {
            return Err(BadTmpfs(text.to_string()));
        }
        Ok(Tmpfs {
            target: target.to_string(),
            options: options.to_string(),
        })
    }
}

/// A Linux capability, normalised as Docker does (`net_admin`, `CAP_NET_ADMIN` → `NET_ADMIN`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Capability(pub String);

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a capability name (like \"NET_ADMIN\" or \"ALL\")")]
pub struct BadCapability(pub String);

impl FromStr for Capability {
    type Err = BadCapability;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let upper = text.to_ascii_uppercase();
        let name = upper.strip_prefix("CAP_").unwrap_or(&upper);
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(BadCapability(text.to_string()));
        }
        Ok(Capability(name.to_string()))
    }
}

/// A CPU limit (`cpus = 0.5`), in billionths of a CPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cpus(pub u64);

#[derive(Clone, Copy, Debug, PartialEq, thiserror::Error)]
#[error("{0} is not a CPU count: give a number above zero, like 0.5 or 2")]
pub struct BadCpus(pub f64);

impl FromRaw<f64> for Cpus {
    type Err = BadCpus;

    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "`nanos` is checked finite, whole and within 1..=1e18 first, so it fits a u64 exactly"
    )]
    fn from_raw(raw: &f64) -> Result<Self, BadCpus> {
        let nanos = (raw * 1e9).round();
        if !raw.is_finite() || !(1.0..=1e18).contains(&nanos) {
            return Err(BadCpus(*raw));
        }
        Ok(Cpus(nanos as u64))
    }
}

/// A limit on the container's processes (`pids_limit = 100`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PidsLimit(pub u32);

#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0} is not a process limit: give a number from 1 to 4294967295 (or leave it out)")]
pub struct BadPidsLimit(pub i64);

impl FromRaw<i64> for PidsLimit {
    type Err = BadPidsLimit;

    fn from_raw(raw: &i64) -> Result<Self, BadPidsLimit> {
        match u32::try_from(*raw) {
            Ok(n) if n > 0 => Ok(PidsLimit(n)),
            _ => Err(BadPidsLimit(*raw)),
        }
    }
}

/// An absolute path inside the container (`working_dir`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerPath(pub String);

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not an absolute path inside the container")]
pub struct RelativePath(pub String);

impl FromStr for ContainerPath {
    type Err = RelativePath;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text.starts_with('/') {
            Ok(ContainerPath(text.to_string()))
        } else {
            Err(RelativePath(text.to_string()))
        }
    }
}

/// `user[:group]`, each a name or a number.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User(pub String);

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not \"USER\" or \"USER:GROUP\" (names or numbers, like \"1000:1000\")")]
pub struct BadUser(pub String);

impl FromStr for User {
    type Err = BadUser;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let ok = text
            .split(':')
            .all(|part| !part.is_empty() && !part.chars().any(char::is_whitespace))
            && text.matches(':').count() <= 1;
        if ok {
            Ok(User(text.to_string()))
        } else {
            Err(BadUser(text.to_string()))
        }
    }
}

/// A label key of the user's: anything but imag's own `imag.*` namespace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LabelKey(pub String);

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BadLabelKey {
    #[error("label {0:?}: keys starting with \"imag.\" are imag's own")]
    Reserved(String),
    #[error("a label key cannot be empty")]
    Empty,
}

impl FromStr for LabelKey {
    type Err = BadLabelKey;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text.is_empty() {
            Err(BadLabelKey::Empty)
        } else if text.to_ascii_lowercase().starts_with("imag.") {
            Err(BadLabelKey::Reserved(text.to_string()))
        } else {
            Ok(LabelKey(text.to_string()))
        }
    }
}

/// A healthcheck's test in Docker's form: a string runs through the shell (`CMD-SHELL`); a list
/// starts with `CMD`, `CMD-SHELL` or `NONE`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HealthTest(pub Vec<String>);

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "must be a shell command (\"curl -f http://localhost/\") or a list starting with \"CMD\", \
     \"CMD-SHELL\" or \"NONE\" (like [\"CMD\", \"/bin/check\"])"
)]
pub struct BadHealthTest;

impl FromRaw<raw::StringOrList> for HealthTest {
    type Err = BadHealthTest;

    fn from_raw(raw: &raw::StringOrList) -> Result<Self, BadHealthTest> {
        match raw {
            raw::StringOrList::String(s) if !s.trim().is_empty() => {
                Ok(HealthTest(vec!["CMD-SHELL".into(), s.clone()]))
            }
            raw::StringOrList::List(list) => match list.first().map(String::as_str) {
                Some("NONE") if list.len() == 1 => Ok(HealthTest(list.clone())),
                Some("CMD" | "CMD-SHELL") if list.len() >= 2 => Ok(HealthTest(list.clone())),
                _ => Err(BadHealthTest),
            },
            raw::StringOrList::String(_) => Err(BadHealthTest),
        }
    }
}

/// A healthcheck interval, timeout or start period: at least a millisecond (the engine's floor).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HealthDuration(pub Duration);

#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum BadHealthDuration {
    #[error(transparent)]
    Duration(#[from] super::values::DurationError),
    #[error("must be at least 1ms")]
    TooShort,
}

impl FromStr for HealthDuration {
    type Err = BadHealthDuration;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.parse::<NonZeroDuration>()?.0 {
            d if d < Duration::from_millis(1) => Err(BadHealthDuration::TooShort),
            d => Ok(HealthDuration(d)),
        }
    }
}

/// Checks a host's container options; `None` if any was reported.
pub(super) fn validate(host: &raw::Host, report: &mut Report<'_>) -> Option<ContainerOptions> {
    let mut ok = true;
    let volumes: Option<Vec<Volume>> = items(&host.volumes, report);
    let mut mounts: Option<Vec<Mount>> = volumes.map(|v| v.into_iter().map(|v| v.0).collect());
    for long in &host.mounts {
        let m = long.get_ref();
        let text = format!("{}:{}", m.source.get_ref(), m.target.get_ref());
        match mount(
            &text,
            m.kind.get_ref(),
            m.source.get_ref(),
            m.target.get_ref(),
            m.read_only,
        ) {
            Ok(m) => mounts.iter_mut().for_each(|list| list.push(m.clone())),
            Err(err) => {
                let at = match err {
                    MountError::Kind(_) => span(&m.kind),
                    MountError::RelativeTarget(_) => span(&m.target),
                    _ => span(&m.source),
                };
                report(at, err.to_string());
                ok = false;
            }
        }
    }
    if let Some(entrypoint) = &host.entrypoint
        && entrypoint.get_ref().is_empty()
    {
        report(
            span(entrypoint),
            "entrypoint is empty: remove the key to use the image's own".to_string(),
        );
        ok = false;
    }
    let user: Option<Option<User>> = optional(host.user.as_ref(), "user", report);
    let working_dir: Option<Option<ContainerPath>> =
        optional(host.working_dir.as_ref(), "working_dir", report);
    let memory: Option<Option<ByteSize>> = optional(host.memory.as_ref(), "memory", report);
    let cpus: Option<Option<Cpus>> = optional(host.cpus.as_ref(), "cpus", report);
    let pids: Option<Option<PidsLimit>> = optional(host.pids_limit.as_ref(), "pids_limit", report);
    let cap_add: Option<Vec<Capability>> = items(&host.cap_add, report);
    let cap_drop: Option<Vec<Capability>> = items(&host.cap_drop, report);
    let tmpfs: Option<Vec<Tmpfs>> = items(&host.tmpfs, report);
    let mut labels = BTreeMap::new();
    for (key, value) in &host.labels {
        match parse_with(key, report, |e: BadLabelKey| e.to_string()) {
            Some(LabelKey(key)) => {
                labels.insert(key, value.clone());
            }
            None => ok = false,
        }
    }
    let healthcheck = match &host.healthcheck {
        None => Some(None),
        Some(check) => healthcheck(check.get_ref(), report).map(Some),
    };
    let names = |caps: Vec<Capability>| caps.into_iter().map(|c| c.0).collect();
    let options = ContainerOptions {
        mounts: mounts?,
        user: user?.map(|u| u.0),
        working_dir: working_dir?.map(|p| p.0),
        entrypoint: host.entrypoint.as_ref().map(|e| e.get_ref().clone()),
        memory: memory?.map(|m| m.0),
        nano_cpus: cpus?.map(|c| c.0),
        pids_limit: pids?.map(|p| p.0),
        cap_add: names(cap_add?),
        cap_drop: names(cap_drop?),
        tmpfs: tmpfs?.into_iter().map(|t| (t.target, t.options)).collect(),
        labels,
        healthcheck: healthcheck?,
    };
    ok.then_some(options)
}

fn healthcheck(check: &raw::Healthcheck, report: &mut Report<'_>) -> Option<Healthcheck> {
    let test: Option<HealthTest> = field(&check.test, "healthcheck test", report);
    let duration = |value: &Option<Spanned<String>>, key, report: &mut Report<'_>| {
        optional::<_, HealthDuration>(value.as_ref(), key, report).map(|d| d.map(|d| d.0))
    };
    let interval = duration(&check.interval, "healthcheck interval", report);
    let timeout = duration(&check.timeout, "healthcheck timeout", report);
    let start_period = duration(&check.start_period, "healthcheck start_period", report);
    let start_interval = duration(&check.start_interval, "healthcheck start_interval", report);
    let retries = match &check.retries {
        Some(r) if *r.get_ref() == 0 => {
            report(
                span(r),
                "healthcheck retries must be at least 1".to_string(),
            );
            None
        }
        r => Some(r.as_ref().map(|r| *r.get_ref())),
    };
    Some(Healthcheck {
        test: test?.0,
        interval: interval?,
        timeout: timeout?,
        retries: retries?,
        start_period: start_period?,
        start_interval: start_interval?,
    })
}

#[cfg(test)]
#[path = "container_tests.rs"]
mod tests;
